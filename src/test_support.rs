//! Helpers shared by the operator's unit tests.

use crate::resource::{CopyImageCancellation, CopyImageCancellationSpec};

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

/// `namespace/name`, cancelling the copy to `image_id` in cn-hangzhou with
/// the defaults (no Secret, backoffLimit 6, no deadline); no status.
pub(crate) fn cancellation(namespace: &str, name: &str, image_id: &str) -> CopyImageCancellation {
    let spec = CopyImageCancellationSpec::new("cn-hangzhou", image_id);
    let mut resource = CopyImageCancellation::new(name, spec);
    resource.metadata.namespace = Some(namespace.into());
    resource
}
