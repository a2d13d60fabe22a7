//! Operator-level identity through the public API, against the loopback
//! stand-ins for STS and the ECS metadata service: the RRSA flow with expiry
//! and refresh, a rotated token file, STS errors, the IMDSv2 flow and its
//! fallbacks, the chain's order and start-up errors, no secrets in output,
//! and RRSA → STS → ECS CancelCopyImage end to end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use copyimage_canceller::credentials::AccessKey;
use copyimage_canceller::ecs::CancelOutcome;
use copyimage_canceller::ecs::client::{EcsClient, EcsClientConfig};
use copyimage_canceller::identity::chain::{
    ENV_ECS_METADATA, ENV_IMDSV1_DISABLED, ENV_OIDC_PROVIDER_ARN, ENV_OIDC_TOKEN_FILE,
    ENV_ROLE_ARN, ENV_ROLE_SESSION_NAME, ENV_STS_ENDPOINT,
};
use copyimage_canceller::identity::{
    ChainError, ChainOptions, CredentialError, CredentialState, OperatorCredentials, RefreshPolicy,
    SourceKind,
};
use copyimage_canceller::retry::Backoff;
use copyimage_stand_ins::ecs_simulator::{EcsSimulator, ImageState, SimulatorConfig};
use copyimage_stand_ins::metadata_simulator::{
    MetadataMode, MetadataSimulator, MetadataSimulatorConfig,
};
use copyimage_stand_ins::sts_simulator::{
    KeySink, StsFault, StsSimulator, StsSimulatorConfig, StsSimulatorHandle, token_sha256,
};

const ROLE: &str = "acs:ram::1234567890123456:role/copyimage-canceller";
const PROVIDER: &str = "acs:ram::1234567890123456:oidc-provider/ack-rrsa-c0ffee";
const TOKEN_1: &str = "eyJhbGciOiJSUzI1NiJ9.first-projected-token.sig1";
const TOKEN_2: &str = "eyJhbGciOiJSUzI1NiJ9.rotated-projected-token.sig2";
/// Generous: only there so that a broken flow fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(30);

/// Short delays so that refreshes and retries happen within a test.
fn options(refresh_percent: u32) -> ChainOptions {
    ChainOptions {
        refresh: RefreshPolicy {
            short_lifetime_percent: refresh_percent,
            backoff: Backoff::new(Duration::from_millis(50), Duration::from_millis(300)).unwrap(),
            ..RefreshPolicy::default()
        },
        ..ChainOptions::default()
    }
}

fn lookup(vars: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<&'static str, String> = vars.into_iter().collect();
    move |name| map.get(name).cloned()
}

struct Rrsa {
    sts: StsSimulatorHandle,
    _dir: tempfile::TempDir,
    token_file: std::path::PathBuf,
}

impl Rrsa {
    async fn start(config: StsSimulatorConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{TOKEN_1}\n")).unwrap();
        let sts = StsSimulator::start(StsSimulatorConfig {
            expected_token: Some(TOKEN_1.to_owned()),
            role_arn: Some(ROLE.to_owned()),
            oidc_provider_arn: Some(PROVIDER.to_owned()),
            ..config
        })
        .await
        .unwrap();
        Self {
            sts,
            _dir: dir,
            token_file,
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            (ENV_ROLE_ARN, ROLE.to_owned()),
            (ENV_OIDC_PROVIDER_ARN, PROVIDER.to_owned()),
            (ENV_OIDC_TOKEN_FILE, self.token_file.display().to_string()),
            (ENV_ROLE_SESSION_NAME, "canceller-test".to_owned()),
            (ENV_STS_ENDPOINT, self.sts.endpoint()),
        ]
    }

    fn credentials(&self, options: &ChainOptions) -> OperatorCredentials {
        OperatorCredentials::from_lookup(lookup(self.env()), options).unwrap()
    }
}

fn lifetime(secs: u64) -> StsSimulatorConfig {
    StsSimulatorConfig {
        lifetime: Some(Duration::from_secs(secs)),
        ..StsSimulatorConfig::default()
    }
}

/// Polls until `pred` holds for the status.
async fn wait_until(
    credentials: &OperatorCredentials,
    what: &str,
    pred: impl Fn(&copyimage_canceller::identity::CredentialStatus) -> bool,
) {
    tokio::time::timeout(PATIENCE, async {
        while !pred(&credentials.status()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: last status {:?}", credentials.status()));
}

#[tokio::test]
async fn rrsa_flow_obtains_and_refreshes_before_expiry() {
    // 6 s credentials refreshed at half their life: seconds of margin before expiry.
    let rrsa = Rrsa::start(lifetime(6)).await;
    let credentials = rrsa.credentials(&options(50));
    assert_eq!(credentials.source(), Some(SourceKind::Rrsa));

    let first = credentials.current().await.unwrap();
    assert!(first.id.starts_with("STS."), "{first:?}");
    let minted = rrsa.sts.minted();
    assert_eq!(minted.len(), 1);
    assert_eq!(first.secret(), minted[0].secret());
    assert_eq!(first.security_token(), minted[0].security_token());
    let status = credentials.status();
    assert_eq!(status.state, CredentialState::Valid);
    assert_eq!(status.access_key_id.as_deref(), Some(first.id.as_str()));
    assert!(status.expiration.is_some() && status.next_refresh < status.expiration);

    // The refresh comes by itself, before the first credentials expire.
    wait_until(&credentials, "second fetch", |s| s.refreshes_total >= 2).await;
    let second = credentials.current().await.unwrap();
    assert_ne!(second.id, first.id);
    let calls = rrsa.sts.calls();
    assert!(calls.len() >= 2);
    let first_expiry = calls[0].time + Duration::from_secs(6);
    assert!(
        calls[1].time < first_expiry,
        "refreshed at {} after expiry",
        calls[1].time
    );
    for call in &calls {
        assert_eq!(call.code, "Success");
        assert_eq!(call.action.as_deref(), Some("AssumeRoleWithOIDC"));
        assert_eq!(call.role_arn.as_deref(), Some(ROLE));
        assert_eq!(call.oidc_provider_arn.as_deref(), Some(PROVIDER));
        assert_eq!(call.session_name.as_deref(), Some("canceller-test"));
        assert_eq!(call.duration_seconds.as_deref(), Some("3600"));
        assert_eq!(call.token_sha256, Some(token_sha256(TOKEN_1)));
        assert!(!call.signed, "AssumeRoleWithOIDC is unsigned");
        assert!(!call.token_in_query, "the token travels in the body");
    }
}

#[tokio::test]
async fn try_current_never_waits() {
    let rrsa = Rrsa::start(lifetime(3600)).await;
    let credentials = rrsa.credentials(&options(80));
    // On this single-threaded runtime the refresh task has not run yet.
    assert_eq!(
        credentials.try_current().unwrap_err(),
        CredentialError::Pending {
            provider: SourceKind::Rrsa
        }
    );
    let key = credentials.current().await.unwrap();
    assert_eq!(credentials.try_current().unwrap().id, key.id);
}

#[tokio::test]
async fn rotated_token_file_is_sent_on_the_next_refresh() {
    let rrsa = Rrsa::start(lifetime(3)).await;
    let credentials = rrsa.credentials(&options(80));
    credentials.current().await.unwrap();

    // The kubelet rotates the projected token; the old one stops working.
    std::fs::write(&rrsa.token_file, TOKEN_2).unwrap();
    rrsa.sts.set_expected_token(TOKEN_2);
    wait_until(&credentials, "refresh with the new token", |s| {
        s.refreshes_total >= 2
    })
    .await;

    let calls = rrsa.sts.calls();
    assert_eq!(calls[0].token_sha256, Some(token_sha256(TOKEN_1)));
    assert_eq!(calls[1].token_sha256, Some(token_sha256(TOKEN_2)));
    assert_eq!(calls[1].code, "Success");
    assert_eq!(credentials.status().state, CredentialState::Valid);
}

#[tokio::test]
async fn failing_refresh_keeps_old_credentials_and_is_reported() {
    // 30 s credentials refreshed after 20% of their life: a failing refresh
    // has 24 s of valid credentials to show it keeps them.
    let rrsa = Rrsa::start(lifetime(30)).await;
    let credentials = rrsa.credentials(&options(20));
    let first = credentials.current().await.unwrap();
    let mut changes = credentials.changes().expect("temporary credentials change");

    rrsa.sts
        .set_persistent_fault(Some(StsFault::oidc_token_expired()));
    let status = tokio::time::timeout(PATIENCE, async {
        loop {
            let status = changes.next().await.expect("refresh task runs");
            if status.consecutive_failures > 0 {
                return status;
            }
        }
    })
    .await
    .expect("a refresh fails");
    assert_eq!(status.state, CredentialState::RefreshFailing);
    let error = status.last_error.clone().unwrap();
    assert!(
        error.contains("AuthenticationFail.OIDCToken.Expired") && error.contains("request ID"),
        "{error}"
    );
    assert!(status.failures_total >= 1);
    assert_eq!(status.access_key_id.as_deref(), Some(first.id.as_str()));
    // Callers keep signing with the old key.
    assert_eq!(credentials.current().await.unwrap().id, first.id);

    // Retries continue with backoff, and the next success clears the failure.
    wait_until(&credentials, "more retries", |s| {
        s.consecutive_failures >= 2
    })
    .await;
    rrsa.sts.set_persistent_fault(None);
    wait_until(&credentials, "recovery", |s| {
        s.state == CredentialState::Valid
    })
    .await;
    let status = credentials.status();
    assert_eq!(status.last_error, None);
    assert_ne!(credentials.current().await.unwrap().id, first.id);
}

#[tokio::test]
async fn credentials_expire_when_refresh_keeps_failing() {
    let token_echo = StsFault::new(
        400,
        "InvalidParameter.OIDCToken",
        format!("The specified OIDCToken {TOKEN_1} is invalid."),
    );
    let rrsa = Rrsa::start(lifetime(3)).await;
    let credentials = rrsa.credentials(&options(50));
    let first = credentials.current().await.unwrap();
    rrsa.sts.set_persistent_fault(Some(token_echo));

    wait_until(&credentials, "expiry", |s| {
        s.state == CredentialState::Expired
    })
    .await;
    let err = credentials.current().await.unwrap_err();
    assert!(
        matches!(
            err,
            CredentialError::Expired {
                provider: SourceKind::Rrsa,
                ..
            }
        ),
        "{err:?}"
    );
    let text = format!("{err} {err:?} {:?}", credentials.status());
    assert!(text.contains("InvalidParameter.OIDCToken"), "{text}");
    // The service echoed the token: it is scrubbed, and no key material shows.
    assert!(!text.contains(TOKEN_1), "{text}");
    assert!(!text.contains(first.secret()), "{text}");
    assert!(!text.contains(first.security_token().unwrap()), "{text}");
}

#[tokio::test]
async fn first_fetch_failure_is_an_error_not_a_hang() {
    let rrsa = Rrsa::start(lifetime(3600)).await;
    rrsa.sts
        .set_persistent_fault(Some(StsFault::invalid_oidc_token()));
    let credentials = rrsa.credentials(&options(80));
    let err = credentials.current().await.unwrap_err();
    assert!(
        matches!(
            err,
            CredentialError::Unavailable {
                provider: SourceKind::Rrsa,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("InvalidParameter.OIDCToken"),
        "{err}"
    );
    assert_eq!(credentials.status().state, CredentialState::Unavailable);

    // Retries go on in the background and succeed once STS does.
    rrsa.sts.set_persistent_fault(None);
    wait_until(&credentials, "recovery", |s| {
        s.state == CredentialState::Valid
    })
    .await;
    assert!(credentials.current().await.is_ok());
}

#[tokio::test]
async fn unreadable_token_file_names_the_file() {
    let rrsa = Rrsa::start(lifetime(3600)).await;
    std::fs::remove_file(&rrsa.token_file).unwrap();
    let credentials = rrsa.credentials(&options(80));
    let err = credentials.current().await.unwrap_err().to_string();
    assert!(
        err.contains("cannot read the OIDC token file")
            && err.contains(&rrsa.token_file.display().to_string()),
        "{err}"
    );
    assert_eq!(rrsa.sts.call_count(), 0, "nothing is sent without a token");
}

#[tokio::test]
async fn unreachable_sts_is_a_transport_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let rrsa = Rrsa::start(lifetime(3600)).await;
    let mut env = rrsa.env();
    env.retain(|(k, _)| *k != ENV_STS_ENDPOINT);
    env.push((ENV_STS_ENDPOINT, endpoint));
    let credentials = OperatorCredentials::from_lookup(lookup(env), &options(80)).unwrap();
    let err = credentials.current().await.unwrap_err().to_string();
    assert!(err.contains("STS could not be reached"), "{err}");
    assert!(!err.contains(TOKEN_1), "{err}");
}

#[tokio::test]
async fn partial_rrsa_triple_is_a_start_up_error() {
    let rrsa = Rrsa::start(lifetime(3600)).await;
    let mut env = rrsa.env();
    env.retain(|(k, _)| *k != ENV_OIDC_PROVIDER_ARN && *k != ENV_OIDC_TOKEN_FILE);
    let err = OperatorCredentials::from_lookup(lookup(env), &options(80)).unwrap_err();
    assert_eq!(
        err,
        ChainError::PartialRrsa {
            set: vec![ENV_ROLE_ARN],
            missing: vec![ENV_OIDC_PROVIDER_ARN, ENV_OIDC_TOKEN_FILE],
        }
    );
    let text = err.to_string();
    assert!(
        text.contains("ALIBABA_CLOUD_OIDC_PROVIDER_ARN, ALIBABA_CLOUD_OIDC_TOKEN_FILE not set"),
        "{text}"
    );
    assert_eq!(rrsa.sts.call_count(), 0);
}

#[tokio::test]
async fn environment_keys_win_over_rrsa() {
    let rrsa = Rrsa::start(lifetime(3600)).await;
    let mut env = rrsa.env();
    env.push(("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAI5tEnvKey".to_owned()));
    env.push((
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
        "env-secret-value".to_owned(),
    ));
    let credentials = OperatorCredentials::from_lookup(lookup(env), &options(80)).unwrap();
    assert_eq!(credentials.source(), Some(SourceKind::Environment));
    let key = credentials.current().await.unwrap();
    assert_eq!(
        (key.id.as_str(), key.secret()),
        ("LTAI5tEnvKey", "env-secret-value")
    );
    assert_eq!(credentials.status().state, CredentialState::Static);
    assert!(credentials.changes().is_none());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        rrsa.sts.call_count(),
        0,
        "RRSA is not used when env keys are set"
    );
}

#[tokio::test]
async fn nothing_configured_probes_nothing() {
    let credentials =
        OperatorCredentials::from_lookup(lookup(vec![]), &ChainOptions::default()).unwrap();
    assert_eq!(credentials.source(), None);
    assert_eq!(credentials.status().state, CredentialState::NotConfigured);
    let err = credentials.current().await.unwrap_err();
    assert_eq!(err, CredentialError::NotConfigured);
    assert!(err.to_string().contains("credentialsSecretRef"), "{err}");
}

fn imds_options(endpoint: String) -> ChainOptions {
    ChainOptions {
        ecs_ram_role: true,
        metadata_endpoint: endpoint,
        ..options(80)
    }
}

#[tokio::test]
async fn imdsv2_flow_with_role_discovery() {
    let imds = MetadataSimulator::start(MetadataSimulatorConfig {
        mode: MetadataMode::TokenRequired,
        ..MetadataSimulatorConfig::default()
    })
    .await
    .unwrap();
    let env = vec![(ENV_IMDSV1_DISABLED, "true".to_owned())];
    let credentials =
        OperatorCredentials::from_lookup(lookup(env), &imds_options(imds.endpoint())).unwrap();
    assert_eq!(credentials.source(), Some(SourceKind::EcsRamRole));
    let key = credentials.current().await.unwrap();
    let minted = imds.minted();
    assert_eq!(minted.len(), 1);
    assert_eq!(
        (key.id.as_str(), key.secret(), key.security_token()),
        (
            minted[0].id.as_str(),
            minted[0].secret(),
            minted[0].security_token()
        )
    );
    let calls: Vec<(String, String, bool, u16)> = imds
        .calls()
        .into_iter()
        .map(|c| (c.method, c.path, c.with_token, c.status))
        .collect();
    assert_eq!(
        calls,
        vec![
            ("PUT".into(), "/latest/api/token".into(), false, 200),
            (
                "GET".into(),
                "/latest/meta-data/ram/security-credentials/".into(),
                true,
                200
            ),
            (
                "GET".into(),
                "/latest/meta-data/ram/security-credentials/EcsRamRoleCanceller".into(),
                true,
                200
            ),
        ]
    );
    let status = credentials.status();
    assert_eq!(status.state, CredentialState::Valid);
    let debug = format!("{credentials:?} {status:?}");
    assert!(
        !debug.contains(key.secret()) && !debug.contains(key.security_token().unwrap()),
        "{debug}"
    );
}

#[tokio::test]
async fn configured_role_name_skips_the_listing_and_turns_the_source_on() {
    let imds = MetadataSimulator::start(MetadataSimulatorConfig::default())
        .await
        .unwrap();
    let env = vec![(ENV_ECS_METADATA, "EcsRamRoleCanceller".to_owned())];
    let options = ChainOptions {
        metadata_endpoint: imds.endpoint(),
        ..options(80)
    };
    let credentials = OperatorCredentials::from_lookup(lookup(env), &options).unwrap();
    credentials.current().await.unwrap();
    let paths: Vec<String> = imds.calls().into_iter().map(|c| c.path).collect();
    assert_eq!(
        paths,
        vec![
            "/latest/api/token",
            "/latest/meta-data/ram/security-credentials/EcsRamRoleCanceller"
        ]
    );
}

#[tokio::test]
async fn tokenless_fallback_when_allowed() {
    let imds = MetadataSimulator::start(MetadataSimulatorConfig {
        mode: MetadataMode::TokenUnsupported,
        ..MetadataSimulatorConfig::default()
    })
    .await
    .unwrap();
    let credentials =
        OperatorCredentials::from_lookup(lookup(vec![]), &imds_options(imds.endpoint())).unwrap();
    let key = credentials.current().await.unwrap();
    assert_eq!(key.id, imds.minted()[0].id);
    let calls: Vec<(String, bool, u16)> = imds
        .calls()
        .into_iter()
        .map(|c| (c.method, c.with_token, c.status))
        .collect();
    assert_eq!(
        calls,
        vec![
            ("PUT".into(), false, 404),
            ("GET".into(), false, 200),
            ("GET".into(), false, 200),
        ]
    );
}

#[tokio::test]
async fn tokenless_fallback_refused_when_imdsv1_disabled() {
    let imds = MetadataSimulator::start(MetadataSimulatorConfig {
        mode: MetadataMode::TokenUnsupported,
        ..MetadataSimulatorConfig::default()
    })
    .await
    .unwrap();
    let env = vec![(ENV_IMDSV1_DISABLED, "true".to_owned())];
    let credentials =
        OperatorCredentials::from_lookup(lookup(env), &imds_options(imds.endpoint())).unwrap();
    let err = credentials.current().await.unwrap_err().to_string();
    assert!(
        err.contains("HTTP 404") && err.contains("ALIBABA_CLOUD_IMDSV1_DISABLED=true"),
        "{err}"
    );
    assert!(
        imds.calls().iter().all(|c| c.method == "PUT"),
        "no tokenless call: {:?}",
        imds.calls()
    );
}

#[tokio::test]
async fn hardened_instance_refuses_tokenless_calls() {
    let imds = MetadataSimulator::start(MetadataSimulatorConfig {
        mode: MetadataMode::TokenRequired,
        ..MetadataSimulatorConfig::default()
    })
    .await
    .unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let url = format!(
        "{}/latest/meta-data/ram/security-credentials/",
        imds.endpoint()
    );
    let status = client.get(&url).send().await.unwrap().status();
    assert_eq!(status, 403);
    let status = client
        .get(&url)
        .header("X-aliyun-ecs-metadata-token", "made-up")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
}

#[tokio::test]
async fn metadata_unavailable_is_reported() {
    let imds = MetadataSimulator::start(MetadataSimulatorConfig {
        mode: MetadataMode::Unavailable,
        ..MetadataSimulatorConfig::default()
    })
    .await
    .unwrap();
    let credentials =
        OperatorCredentials::from_lookup(lookup(vec![]), &imds_options(imds.endpoint())).unwrap();
    let err = credentials.current().await.unwrap_err();
    assert!(
        matches!(
            err,
            CredentialError::Unavailable {
                provider: SourceKind::EcsRamRole,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("HTTP 503"), "{err}");

    // And recovers when the service comes back.
    imds.set_mode(MetadataMode::TokenOptional);
    wait_until(&credentials, "recovery", |s| {
        s.state == CredentialState::Valid
    })
    .await;

    // Nothing listening at all (not an ECS instance).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let credentials =
        OperatorCredentials::from_lookup(lookup(vec![]), &imds_options(endpoint)).unwrap();
    let err = credentials.current().await.unwrap_err().to_string();
    assert!(
        err.contains("could not connect") && err.contains("is this an ECS instance?"),
        "{err}"
    );
}

#[tokio::test]
async fn no_role_attached_says_so() {
    let imds = MetadataSimulator::start(MetadataSimulatorConfig {
        role_name: None,
        ..MetadataSimulatorConfig::default()
    })
    .await
    .unwrap();
    let credentials =
        OperatorCredentials::from_lookup(lookup(vec![]), &imds_options(imds.endpoint())).unwrap();
    let err = credentials.current().await.unwrap_err().to_string();
    assert!(
        err.contains("HTTP 404") && err.contains("RAM role"),
        "{err}"
    );
}

#[tokio::test]
async fn rrsa_to_sts_to_ecs_cancel_succeeds_with_the_sts_token() {
    const IMAGE: &str = "m-bp1rrsaflow0001";
    let ecs = Arc::new(
        EcsSimulator::start(SimulatorConfig::new([]).with_image(IMAGE, ImageState::Copying))
            .await
            .unwrap(),
    );
    let rrsa = Rrsa::start(StsSimulatorConfig {
        sink: Some(KeySink::ecs(ecs.clone())),
        ..lifetime(3600)
    })
    .await;
    let credentials = rrsa.credentials(&options(80));
    let key = credentials.current().await.unwrap();

    let client = EcsClient::new(EcsClientConfig {
        endpoint: ecs.endpoint(),
        ..EcsClientConfig::default()
    })
    .unwrap();
    let outcome = client.cancel_copy_image(&key, "cn-hangzhou", IMAGE).await;
    assert!(
        matches!(outcome, CancelOutcome::Cancelled { .. }),
        "{outcome:?}"
    );
    assert_eq!(ecs.image(IMAGE), None, "the copy was cancelled");
    let requests = ecs.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].access_key_id.as_deref(), Some(key.id.as_str()));

    // The STS key only works with its token: the simulator checks it.
    let without_token = AccessKey::new(key.id.clone(), key.secret().to_owned(), None);
    ecs.set_image(IMAGE, ImageState::Copying);
    let outcome = client
        .cancel_copy_image(&without_token, "cn-hangzhou", IMAGE)
        .await;
    match outcome {
        CancelOutcome::Service(e) => assert_eq!(e.code, "MissingSecurityToken"),
        other => panic!("{other:?}"),
    }
}

/// The `credentials` subcommand with only `vars` of the ALIBABA_CLOUD_* family set.
async fn credentials_command(
    vars: Vec<(&'static str, String)>,
    args: &[&str],
) -> (Option<i32>, String, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_copyimage-canceller"));
    command.arg("credentials").args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("ALIBABA_CLOUD_") {
            command.env_remove(name);
        }
    }
    command.envs(vars);
    let output = tokio::time::timeout(PATIENCE, command.output())
        .await
        .expect("credentials finishes")
        .expect("binary runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_subcommand_through_the_binary() {
    // RRSA against the STS stand-in.
    let rrsa = Rrsa::start(lifetime(3600)).await;
    let (code, stdout, stderr) = credentials_command(rrsa.env(), &[]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let minted = rrsa.sts.minted();
    assert_eq!(minted.len(), 1);
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(json["source"], "rrsa");
    assert_eq!(json["state"], "Valid");
    assert_eq!(json["accessKeyId"], minted[0].id.as_str());
    for secret in [
        minted[0].secret(),
        minted[0].security_token().unwrap(),
        TOKEN_1,
    ] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret}"
        );
    }

    // STS refusing: exit 1 with the code on stderr.
    rrsa.sts
        .set_persistent_fault(Some(StsFault::oidc_token_expired()));
    let (code, _, stderr) = credentials_command(rrsa.env(), &[]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("AuthenticationFail.OIDCToken.Expired"),
        "{stderr}"
    );

    // A partial triple: exit 2 naming what is missing, nothing sent.
    let calls = rrsa.sts.call_count();
    let partial = vec![(ENV_ROLE_ARN, ROLE.to_owned())];
    let (code, _, stderr) = credentials_command(partial, &[]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("ALIBABA_CLOUD_OIDC_PROVIDER_ARN, ALIBABA_CLOUD_OIDC_TOKEN_FILE not set"),
        "{stderr}"
    );
    assert_eq!(rrsa.sts.call_count(), calls);

    // The instance role, only with --ecs-ram-role, through IMDSv2.
    let imds = MetadataSimulator::start(MetadataSimulatorConfig {
        mode: MetadataMode::TokenRequired,
        ..MetadataSimulatorConfig::default()
    })
    .await
    .unwrap();
    let endpoint = imds.endpoint();
    let (code, stdout, _) = credentials_command(vec![], &["--metadata-endpoint", &endpoint]).await;
    assert_eq!(code, Some(4), "not probed unless asked: {stdout}");
    assert!(imds.calls().is_empty());
    let (code, stdout, stderr) = credentials_command(
        vec![],
        &["--ecs-ram-role", "--metadata-endpoint", &endpoint],
    )
    .await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(json["source"], "ecs-ram-role");
    assert_eq!(json["accessKeyId"], imds.minted()[0].id.as_str());
}

/// Collects what the log subscriber writes.
#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_never_show_secrets_or_tokens() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // NB: a current-thread runtime: the refresh task logs on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);

    let echo = StsFault::new(
        400,
        "InvalidParameter.OIDCToken",
        format!("The specified OIDCToken {TOKEN_1} is invalid."),
    );
    let rrsa = Rrsa::start(lifetime(3)).await;
    let credentials = rrsa.credentials(&options(50));
    let first = credentials.current().await.unwrap();
    rrsa.sts.set_persistent_fault(Some(echo));
    wait_until(&credentials, "a failed refresh", |s| {
        s.consecutive_failures >= 1
    })
    .await;
    rrsa.sts.set_persistent_fault(None);
    wait_until(&credentials, "recovery", |s| {
        s.state == CredentialState::Valid
    })
    .await;
    let second = credentials.current().await.unwrap();

    let imds = MetadataSimulator::start(MetadataSimulatorConfig {
        mode: MetadataMode::TokenUnsupported,
        ..MetadataSimulatorConfig::default()
    })
    .await
    .unwrap();
    let instance =
        OperatorCredentials::from_lookup(lookup(vec![]), &imds_options(imds.endpoint())).unwrap();
    let third = instance.current().await.unwrap();

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("credential refresh failed"), "{text}");
    assert!(text.contains("credentials refreshed"), "{text}");
    for key in [&first, &second, &third] {
        for secret in [key.secret(), key.security_token().unwrap()] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
    assert!(!text.contains(TOKEN_1), "{text}");
}

#[tokio::test]
async fn debug_output_never_shows_secrets_or_tokens() {
    let rrsa = Rrsa::start(lifetime(3600)).await;
    let credentials = rrsa.credentials(&options(80));
    let key = credentials.current().await.unwrap();
    let changes = credentials.changes().unwrap();
    let text = format!(
        "{credentials:?} {credentials:#?} {:?} {key:?} {changes:?} {:?}",
        credentials.status(),
        rrsa.sts.calls()
    );
    for secret in [key.secret(), key.security_token().unwrap(), TOKEN_1] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert!(
        text.contains(&key.id),
        "the key ID is not secret and helps debugging"
    );
}
