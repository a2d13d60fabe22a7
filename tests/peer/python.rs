//! The official-SDK peer tests' shared set-up (`tests/python_peer.rs`,
//! `tests/python_peer_sts.rs`): the pinned `.venv`, checked to be current,
//! and one run of a peer script under a generous bound.
#![allow(dead_code)] // NB: each peer test crate uses a different part.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `.venv/bin/python`, checked to be installed from the current requirements.
pub fn python() -> PathBuf {
    let python = root().join(".venv/bin/python");
    let fix = "run scripts/install-python-sdk.sh (creates .venv with Alibaba's official Python SDKs, pinned and hash-checked)";
    assert!(
        python.exists(),
        "{} is missing: the official-SDK peer tests need it; {fix}",
        python.display()
    );
    let requirements = std::fs::read(root().join("scripts/python-requirements.txt"))
        .expect("scripts/python-requirements.txt");
    let want = hex::encode(Sha256::digest(&requirements));
    let stamp = std::fs::read_to_string(root().join(".venv/.python-requirements.sha256"))
        .unwrap_or_default();
    assert_eq!(
        stamp.trim(),
        want,
        ".venv was not installed from the current scripts/python-requirements.txt; {fix}"
    );
    python
}

/// Runs a peer script to its end (off the runtime's threads) and returns
/// what it printed; the caller judges its exit status.
pub async fn output(mut cmd: Command) -> Output {
    tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || cmd.output()),
    )
    .await
    .expect("the peer script finishes")
    .expect("join")
    .expect("python runs")
}
