//! Assertions on text (a `/metrics` scrape, a log, stderr, a reply body), for
//! the harness and for the test crates that include only this file
//! (`#[path = "common/text.rs"] mod text;`).
#![allow(dead_code)] // NB: each test crate uses a different part.

/// Asserts that each of `want` is a whole line of `text`.
#[track_caller]
pub fn assert_lines(text: &str, want: &[&str]) {
    for line in want {
        assert!(
            text.lines().any(|l| l == *line),
            "missing {line:?} in\n{text}"
        );
    }
}

/// Asserts that `text` contains each of `want`.
#[track_caller]
pub fn assert_contains(text: &str, want: &[&str]) {
    for part in want {
        assert!(text.contains(part), "missing {part:?} in\n{text}");
    }
}
