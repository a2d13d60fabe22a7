//! The complete stderr of a `run` process at `--log-level trace` (every
//! crate: kube, hyper, reqwest, rustls, tower ...), in text and in JSON, over
//! a run with success, a retry, a terminal failure, RRSA credentials rotated
//! by STS every couple of seconds, a per-resource Secret with an STS token and
//! a rotated Secret: no AccessKey secret, security token, request signature or
//! OIDC token appears in it, raw or encoded.
//!
//! The signatures are the ones that really went to ECS: a recording proxy in
//! front of the simulator keeps every byte the controller sent.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use common::{PATIENCE, cic, cic_with_secret};
use copyimage_canceller::identity::chain::{
    ENV_OIDC_PROVIDER_ARN, ENV_OIDC_TOKEN_FILE, ENV_ROLE_ARN, ENV_STS_ENDPOINT,
};
use copyimage_canceller::resource::{CopyImageCancellation, Phase};
use copyimage_stand_ins::AccessKey;
use copyimage_stand_ins::ecs_simulator::{
    EcsSimulator, FaultCount, FaultKind, FaultSpec, FaultTarget, ImageState, SimulatorConfig,
};
use copyimage_stand_ins::kube_api::KubeApi;
use copyimage_stand_ins::sts_simulator::{KeySink, StsSimulator, StsSimulatorConfig};
use k8s_openapi::api::core::v1::Secret;
use kube::CustomResourceExt;
use kube::api::{Api, PostParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NS: &str = "images";
const ROLE: &str = "acs:ram::1234567890123456:role/canceller";
const PROVIDER: &str = "acs:ram::1234567890123456:oidc-provider/ack-rrsa-c1";
const OIDC_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.leak-test-oidc-token-payload.c2lnbmF0dXJl";

/// A TCP proxy to `upstream` that keeps every byte clients send through it.
async fn recording_proxy(upstream: String) -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let record = sent.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let record = record.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = server.into_split();
                let up = async {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = from_client.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        record.lock().unwrap().extend_from_slice(&buf[..n]);
                        if to_server.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = to_server.shutdown().await;
                };
                let down = tokio::io::copy(&mut from_server, &mut to_client);
                let _ = tokio::join!(up, down);
            });
        }
    });
    (format!("http://{addr}"), sent)
}

/// Form-decodes `value` (`+` is a space, `%XX` a byte).
fn form_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The values of header `name` (lower case) in everything sent through the proxy.
fn sent_headers(sent: &[u8], name: &str) -> Vec<String> {
    String::from_utf8_lossy(sent)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_owned())
        .collect()
}

/// The values of form parameter `name` in everything sent through the proxy.
fn sent_values(sent: &[u8], name: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(sent);
    let needle = format!("{name}=");
    text.match_indices(&needle)
        // After `&` or a line start (V1 form body), `,` or a space (V3 Authorization header).
        .filter(|(at, _)| {
            *at == 0 || matches!(text.as_bytes()[at - 1], b'&' | b'\n' | b'?' | b',' | b' ')
        })
        .map(|(at, _)| {
            text[at + needle.len()..]
                .split(['&', '\r', '\n', ' '])
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .filter(|v| !v.is_empty())
        .collect()
}

async fn put_secret(client: &kube::Client, name: &str, key: &AccessKey) {
    let mut data = std::collections::BTreeMap::from([
        (
            "accessKeyId".to_string(),
            k8s_openapi::ByteString(key.id.as_bytes().to_vec()),
        ),
        (
            "accessKeySecret".to_string(),
            k8s_openapi::ByteString(key.secret().as_bytes().to_vec()),
        ),
    ]);
    if let Some(token) = key.security_token() {
        data.insert(
            "securityToken".to_string(),
            k8s_openapi::ByteString(token.as_bytes().to_vec()),
        );
    }
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    match secrets.get_opt(name).await.unwrap() {
        Some(existing) => {
            let mut secret = secret;
            secret.metadata.resource_version = existing.metadata.resource_version;
            secrets
                .replace(name, &PostParams::default(), &secret)
                .await
                .unwrap();
        }
        None => {
            secrets
                .create(&PostParams::default(), &secret)
                .await
                .unwrap();
        }
    }
}

async fn wait_phase(cics: &Api<CopyImageCancellation>, name: &str, want: Phase) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let phase = cics
            .get_opt(name)
            .await
            .unwrap()
            .and_then(|c| c.status)
            .and_then(|s| s.phase);
        if phase == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: {phase:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn full_run_leaks_nothing(format: &str, signature_version: &str) {
    let api = KubeApi::start(vec![CopyImageCancellation::crd()])
        .await
        .unwrap();
    let team = AccessKey::new(
        "LTAI5tLeakTeamKey1",
        "leakTeamSecretOne0000000000001",
        Some("bGVha1RlYW1Ub2tlbk9uZQ==".into()),
    );
    let rotated = AccessKey::new("LTAI5tLeakTeamKey2", "leakTeamSecretTwo0000000000002", None);
    let ecs = Arc::new(
        EcsSimulator::start(SimulatorConfig::new([team.clone(), rotated.clone()]))
            .await
            .unwrap(),
    );
    for image in [
        "m-leakok",
        "m-leakflaky",
        "m-leakteam",
        "m-leakrotated",
        "m-leaklater",
    ] {
        ecs.set_image(image, ImageState::Copying);
    }
    ecs.add_fault(FaultSpec::new(
        FaultTarget::Image("m-leakflaky".into()),
        FaultKind::InternalError,
        FaultCount::Times(1),
    ));
    // Credentials that live 2 s: RRSA refreshes them every 1.6 s.
    let sts = StsSimulator::start(StsSimulatorConfig {
        expected_token: Some(OIDC_TOKEN.to_owned()),
        lifetime: Some(Duration::from_secs(2)),
        sink: Some(KeySink::ecs(ecs.clone())),
        ..StsSimulatorConfig::default()
    })
    .await
    .unwrap();
    let upstream = ecs.endpoint().trim_start_matches("http://").to_owned();
    let (endpoint, sent) = recording_proxy(upstream).await;

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{OIDC_TOKEN}\n")).unwrap();
    let log_path = dir.path().join("run.log");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_copyimage-canceller"));
    for (name, _) in std::env::vars() {
        if name.starts_with("ALIBABA_CLOUD_") {
            command.env_remove(name);
        }
    }
    command
        .args(["run", "--ecs-endpoint", &endpoint])
        .args(["--retry-base-delay", "50ms", "--retry-max-delay", "200ms"])
        .args(["--log-level", "trace", "--log-format", format])
        .args(["--signature-version", signature_version])
        .env("KUBECONFIG", &kubeconfig)
        .env(ENV_ROLE_ARN, ROLE)
        .env(ENV_OIDC_PROVIDER_ARN, PROVIDER)
        .env(ENV_OIDC_TOKEN_FILE, &token_file)
        .env(ENV_STS_ENDPOINT, sts.endpoint())
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .kill_on_drop(true);
    let mut child = command.spawn().unwrap();

    let client = api.client().unwrap();
    let cics: Api<CopyImageCancellation> = Api::namespaced(client.clone(), NS);
    put_secret(&client, "team-keys", &team).await;
    put_secret(&client, "rotating-keys", &team).await;
    for resource in [
        cic("operator-ok", "m-leakok"),
        cic("operator-flaky", "m-leakflaky"),
        // Any other image is absent: InvalidImageId.NotFound, terminal.
        cic("operator-gone", "m-leakgone"),
        cic_with_secret("team", "m-leakteam", "team-keys"),
        cic_with_secret("rotated", "m-leakrotated", "rotating-keys"),
    ] {
        let mut resource = resource;
        resource.metadata.namespace = Some(NS.into());
        cics.create(&PostParams::default(), &resource)
            .await
            .unwrap();
    }
    for (name, phase) in [
        ("operator-ok", Phase::Succeeded),
        ("operator-flaky", Phase::Succeeded),
        ("operator-gone", Phase::Failed),
        ("team", Phase::Succeeded),
        ("rotated", Phase::Succeeded),
    ] {
        wait_phase(&cics, name, phase).await;
    }
    // Rotate the Secret, then a resource signs with the new key.
    put_secret(&client, "rotating-keys", &rotated).await;
    let mut later = cic_with_secret("after-rotation", "m-leaklater", "rotating-keys");
    later.metadata.namespace = Some(NS.into());
    cics.create(&PostParams::default(), &later).await.unwrap();
    wait_phase(&cics, "after-rotation", Phase::Succeeded).await;
    // The operator credentials were rotated by STS at least twice.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while sts.minted().len() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "STS refreshes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let requests = common::cancel_requests(ecs.requests());
    assert_eq!(requests.len(), 7, "{requests:#?}");
    let later_request = requests
        .iter()
        .find(|r| r.image_id.as_deref() == Some("m-leaklater"))
        .unwrap();
    assert_eq!(
        later_request.access_key_id.as_deref(),
        Some(rotated.id.as_str()),
        "the rotated Secret's key was used"
    );

    // SIGTERM, so the log is complete.
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("run stops on SIGTERM")
        .unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();

    // Proof that this was trace level across the stack.
    for needle in [
        "TRACE",
        "hyper",
        "kube",
        "reqwest",
        "CancelCopyImage answered",
    ] {
        assert!(log.contains(needle), "{needle} not in the log");
    }

    // The credential lines are in this log: the key IDs (not secret) are.
    let minted = sts.minted();
    assert!(
        minted.iter().any(|k| log.contains(&k.id)),
        "the operator key ID is logged"
    );

    let sent = sent.lock().unwrap().clone();
    let signatures = sent_values(&sent, "Signature");
    assert_eq!(
        signatures.len(),
        requests.len(),
        "one signature per request"
    );
    let mut sent_tokens = sent_values(&sent, "SecurityToken");
    sent_tokens.extend(sent_headers(&sent, "x-acs-security-token"));
    assert!(!sent_tokens.is_empty(), "STS tokens went to ECS");

    let mut secrets: Vec<String> = vec![OIDC_TOKEN.to_owned()];
    for key in minted.iter().chain([&team, &rotated]) {
        secrets.push(key.secret().to_owned());
        secrets.extend(key.security_token().map(str::to_owned));
    }
    for value in signatures.iter().chain(&sent_tokens) {
        secrets.push(value.clone());
        secrets.push(form_decode(value));
    }
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    for secret in &secrets {
        for form in [secret.clone(), b64(secret)] {
            if let Some(at) = log.find(&form) {
                let start = log[..at].rfind('\n').map_or(0, |n| n + 1);
                let end = log[at..].find('\n').map_or(log.len(), |n| at + n);
                panic!(
                    "a secret ({} chars) is in the {format} log ({signature_version}):\n{}",
                    form.len(),
                    &log[start..end].replace(&form, "<THE SECRET>")
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_run_at_trace_level_leaks_no_secret_in_text() {
    full_run_leaks_nothing("text", "v1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_run_at_trace_level_leaks_no_secret_in_json() {
    full_run_leaks_nothing("json", "v1").await;
}

/// V3 signs into an `Authorization` header and sends the token as
/// `x-acs-security-token`: headers are where HTTP client traces look.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_run_at_trace_level_leaks_no_secret_with_v3_signing() {
    full_run_leaks_nothing("text", "v3").await;
}
