//! `copyimage-canceller demo` as a user runs it: the binary, its exit status
//! and what it prints.

#[path = "common/text.rs"]
mod text;

use std::process::Command;

fn demo(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_copyimage-canceller"))
        .arg("demo")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run copyimage-canceller demo");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The last `kubectl get cic -A` table the demo printed, row by row, split in columns.
fn last_table(stdout: &str) -> Vec<Vec<String>> {
    let start = stdout
        .rfind("kubectl get cic -A\n")
        .expect("the demo prints a table");
    stdout[start..]
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn demo_applies_the_samples_and_every_one_ends_as_expected() {
    let (ok, stdout, stderr) = demo(&[]);
    assert!(ok, "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("demo: all 4 resources ended as expected"),
        "{stdout}"
    );
    for sample in [
        "deploy/samples/copyimagecancellation-operator-credentials.yaml",
        "deploy/samples/copyimagecancellation-retried.yaml",
        "deploy/samples/copyimagecancellation-copy-finished.yaml",
        "deploy/samples/copyimagecancellation.yaml",
    ] {
        assert!(stdout.contains(&format!("applied {sample}")), "{stdout}");
    }
    assert!(
        stdout.contains("created Secret images/alibaba-credentials"),
        "{stdout}"
    );

    let table = last_table(&stdout);
    assert_eq!(
        table[0].join(" "),
        "NAMESPACE NAME REGION IMAGE PHASE REQUEST-ID ERROR ATTEMPTS AGE"
    );
    let row = |name: &str| {
        table
            .iter()
            .find(|r| r[1] == name)
            .unwrap_or_else(|| panic!("{name} in the last table:\n{stdout}"))
            .clone()
    };
    // NAMESPACE NAME REGION IMAGE PHASE REQUEST-ID [ERROR] ATTEMPTS AGE
    let singapore = row("stop-copy-to-singapore");
    assert_eq!(singapore[4], "Succeeded");
    assert_eq!(singapore[6], "1");
    let frankfurt = row("stop-copy-to-frankfurt");
    assert_eq!(frankfurt[4], "Succeeded");
    assert_eq!(frankfurt[6], "3", "two InternalErrors, then success");
    let tokyo = row("stop-copy-to-tokyo");
    assert_eq!(tokyo[4], "Failed");
    assert_eq!(tokyo[6], "IncorrectImageStatus");
    assert_eq!(tokyo[7], "1");
    let hangzhou = row("stop-copy-to-hangzhou");
    assert_eq!(hangzhou[4], "Succeeded");
    assert_eq!(hangzhou[6], "1");
    // Before its Secret existed, the waiting sample was Pending with nothing sent.
    assert!(
        stdout.lines().any(|l| l.contains("stop-copy-to-hangzhou")
            && l.contains("Pending")
            && l.split_whitespace().nth(5) == Some("0")),
        "{stdout}"
    );

    // Each change is explained in the words of the conditions.
    text::assert_contains(
        &stdout,
        &[
            "stop-copy-to-hangzhou: Reconciling/AwaitingCredentials: Nothing is sent until credentials are available: Secret images/alibaba-credentials not found",
            "stop-copy-to-frankfurt: Reconciling/RetryScheduled: Attempt 1 failed: InternalError",
            "stop-copy-to-tokyo: Stalled/IncorrectImageStatus: IncorrectImageStatus",
            "stop-copy-to-singapore: Ready/Cancelled: Cancelled the copy",
        ],
    );
    assert!(
        stdout.contains("kubectl -n images get cic stop-copy-to-frankfurt -o yaml"),
        "{stdout}"
    );
    assert!(stdout.contains("outcome: InternalError"), "{stdout}");
    assert!(stdout.contains("reason: Cancelled"), "{stdout}");
    assert!(!stdout.contains("managedFields"), "{stdout}");
    assert!(stdout.contains("RetryScheduled"), "{stdout}");
}

#[test]
fn demo_fails_with_a_clear_message_when_resources_do_not_finish_in_time() {
    // The Secret comes only after the timeout, so one resource is still waiting.
    let (ok, stdout, stderr) = demo(&["--secret-delay", "10m", "--timeout", "5s"]);
    assert!(!ok, "demo must fail\nstdout:\n{stdout}");
    assert!(
        stderr.contains("not every resource finished within 5s")
            && stderr.contains("stop-copy-to-hangzhou"),
        "stderr:\n{stderr}"
    );
}
