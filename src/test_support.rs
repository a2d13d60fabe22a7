//! Helpers shared by the operator's unit tests.

/// Asserts that each of `lines` is a whole line of `text` (a metrics
/// exposition, a log), naming the one missing and showing `text`.
#[track_caller]
pub(crate) fn assert_lines<L: AsRef<str>>(text: &str, lines: impl IntoIterator<Item = L>) {
    for line in lines {
        let line = line.as_ref();
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}
