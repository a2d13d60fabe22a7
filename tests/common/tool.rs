//! Running an installed tool or script from the repository root, failing
//! with everything it printed unless it succeeded. Shared by
//! `tests/monitoring.rs` (through `common`) and `tests/packaging.rs` (by path:
//! it does not need the rest of the harness).

use std::path::Path;
use std::process::Command;

/// Runs `command` in the repository root; its stdout then stderr, after
/// asserting that it exited with success.
pub fn run_tool(command: &mut Command) -> String {
    let output = command
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{report}",
        output.status
    );
    report
}
