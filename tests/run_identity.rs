//! The real `run` binary with operator credentials from RRSA: the STS
//! stand-in mints a key (fed to the ECS simulator), and a resource without a
//! Secret is cancelled with it; a partial RRSA triple stops `run` at start-up.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{FollowedRun, cic, cic_with_secret, within};
use copyimage_canceller::identity::chain::{
    ENV_OIDC_PROVIDER_ARN, ENV_OIDC_TOKEN_FILE, ENV_ROLE_ARN, ENV_STS_ENDPOINT,
};
use copyimage_canceller::resource::{CopyImageCancellation, CopyImageCancellationStatus, Phase};
use copyimage_stand_ins::ecs_simulator::{EcsSimulator, ImageState, SimulatorConfig};
use copyimage_stand_ins::kube_api::{KubeApi, KubeApiHandle};
use copyimage_stand_ins::sts_simulator::{KeySink, StsFault, StsSimulator, StsSimulatorConfig};
use k8s_openapi::api::events::v1::Event;
use kube::CustomResourceExt;
use kube::api::{Api, PostParams};

const NS: &str = "images";
const IMAGE: &str = "m-bp1rrsarun00001";
const ROLE: &str = "acs:ram::1234567890123456:role/canceller";
const PROVIDER: &str = "acs:ram::1234567890123456:oidc-provider/ack-rrsa-c1";
const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.run-test-oidc-token.sig";
const POD: &str = "copyimage-canceller-5d8f7c-x2x9q";
const POD_UID: &str = "6f1c8a0e-3c55-4d0b-9a57-0c2f4f1d2e11";

/// `run` with only `vars` of the ALIBABA_CLOUD_* family set.
fn run_command(
    kubeconfig: &std::path::Path,
    args: &[&str],
    vars: &[(&str, String)],
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_copyimage-canceller"));
    command.arg("run").args(args).env("KUBECONFIG", kubeconfig);
    for (name, _) in std::env::vars() {
        if name.starts_with("ALIBABA_CLOUD_") {
            command.env_remove(name);
        }
    }
    command.envs(vars.iter().map(|(k, v)| (*k, v.as_str())));
    command.kill_on_drop(true);
    command
}

/// `run` with operator credentials from RRSA (the STS stand-in at
/// `sts_endpoint`) and JSON logs, followed until its admin server is up; the
/// directory holds its kubeconfig and token file.
async fn start_rrsa_run(
    api: &KubeApiHandle,
    ecs_endpoint: &str,
    sts_endpoint: String,
    extra: &[&str],
) -> (FollowedRun, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let vars = [
        (ENV_ROLE_ARN, ROLE.to_owned()),
        (ENV_OIDC_PROVIDER_ARN, PROVIDER.to_owned()),
        (ENV_OIDC_TOKEN_FILE, token_file.display().to_string()),
        (ENV_STS_ENDPOINT, sts_endpoint),
        // As the chart sets them (downward API): Events about the Pod.
        ("POD_NAME", POD.to_owned()),
        ("POD_NAMESPACE", NS.to_owned()),
        ("POD_UID", POD_UID.to_owned()),
    ];
    let mut args = vec![
        "--ecs-endpoint",
        ecs_endpoint,
        "--admin-addr",
        "127.0.0.1:0",
        "--log-format",
        "json",
    ];
    args.extend_from_slice(extra);
    let run = FollowedRun::spawn(run_command(&kubeconfig, &args, &vars)).await;
    (run, dir)
}

/// Resource `name` in [`NS`] cancelling `image`, with the keys in Secret `secret`
/// when given (the operator's otherwise).
fn resource(name: &str, image: &str, secret: Option<&str>) -> CopyImageCancellation {
    let mut cic = match secret {
        Some(secret) => cic_with_secret(name, image, secret),
        None => cic(name, image),
    };
    cic.metadata.namespace = Some(NS.into());
    cic
}

/// The Events in [`NS`] for which `keep` holds.
async fn events_where(api: &KubeApiHandle, keep: impl Fn(&Event) -> bool) -> Vec<Event> {
    Api::<Event>::namespaced(api.client().unwrap(), NS)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| keep(e))
        .collect()
}

/// The Events in [`NS`] about the object named `name`.
async fn events_about(api: &KubeApiHandle, name: &str) -> Vec<Event> {
    events_where(api, |e| {
        e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
    })
    .await
}

/// Asserts that an Event's `note` says each of `needles`.
#[track_caller]
fn assert_note_says(note: &str, needles: &[&str]) {
    for needle in needles {
        assert!(note.contains(needle), "{needle} not in the note: {note}");
    }
}

/// Waits until `name` has succeeded; its status.
async fn wait_succeeded(
    cics: &Api<CopyImageCancellation>,
    name: &str,
) -> CopyImageCancellationStatus {
    within(async {
        loop {
            if let Some(s) = cics.get(name).await.unwrap().status
                && s.phase == Some(Phase::Succeeded)
            {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_rrsa_cancels_a_resource_without_a_secret_using_the_sts_key() {
    let api = KubeApi::start(vec![CopyImageCancellation::crd()])
        .await
        .unwrap();
    let ecs = Arc::new(
        EcsSimulator::start(SimulatorConfig::new([]).with_image(IMAGE, ImageState::Copying))
            .await
            .unwrap(),
    );
    let sts = StsSimulator::start(StsSimulatorConfig {
        expected_token: Some(TOKEN.to_owned()),
        role_arn: Some(ROLE.to_owned()),
        oidc_provider_arn: Some(PROVIDER.to_owned()),
        sink: Some(KeySink::ecs(ecs.clone())),
        ..StsSimulatorConfig::default()
    })
    .await
    .unwrap();
    let (run, _dir) = start_rrsa_run(
        &api,
        &ecs.endpoint(),
        sts.endpoint(),
        &["--retry-base-delay", "10ms", "--retry-max-delay", "50ms"],
    )
    .await;

    let client = api.client().unwrap();
    let cics: Api<CopyImageCancellation> = Api::namespaced(client, NS);
    cics.create(&PostParams::default(), &resource("via-rrsa", IMAGE, None))
        .await
        .unwrap();
    let status = wait_succeeded(&cics, "via-rrsa").await;
    assert_eq!(status.attempts, 1);
    assert_eq!(ecs.image(IMAGE), None, "the copy was cancelled");

    // Signed with the STS key; the simulator refuses an STS key without its
    // token (MissingSecurityToken), so a success also proves the token went along.
    let minted = sts.minted();
    assert_eq!(minted.len(), 1, "one AssumeRoleWithOIDC");
    let requests = common::cancel_requests(ecs.requests());
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(
        requests[0].access_key_id.as_deref(),
        Some(minted[0].id.as_str())
    );
    assert_eq!(requests[0].signature_valid, Some(true));
    assert_eq!(requests[0].code, "Success");

    let metrics = within(common::http_get(&run.admin, "/metrics"))
        .await
        .unwrap()
        .1;
    common::text::assert_lines(
        &metrics,
        &[
            "copyimage_canceller_credential_refreshes_total 1",
            "copyimage_canceller_credential_refresh_failures_total 0",
            "copyimage_canceller_credential_state{state=\"Valid\",source=\"rrsa\"} 1",
            "copyimage_canceller_credential_state{state=\"Pending\",source=\"rrsa\"} 0",
            // Without --leader-elect the process runs its controllers: it leads.
            "copyimage_canceller_leader 1",
            "copyimage_canceller_ecs_requests_total{code=\"Success\",outcome=\"success\"} 1",
        ],
    );

    let log = run.kill().await;
    assert!(
        log.contains("\"source\":\"rrsa\""),
        "the chosen source is logged: {log}"
    );
    for secret in [
        minted[0].secret(),
        minted[0].security_token().unwrap(),
        TOKEN,
    ] {
        assert!(!log.contains(secret), "a secret reached the log");
        assert!(!metrics.contains(secret), "a secret reached the metrics");
    }
}

/// STS failing: a resource with its own Secret is still cancelled; one
/// without waits (AwaitingCredentials, saying why, no secret), a Warning is
/// logged and the failures are counted.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sts_blocks_only_resources_without_a_secret() {
    use copyimage_stand_ins::AccessKey;
    use k8s_openapi::api::core::v1::Secret;

    const OWN_IMAGE: &str = "m-bp1ownsecret001";
    const TEAM_ID: &str = "LTAI5tTeamKeyId";
    const TEAM_SECRET: &str = "team-secret-never-shown";
    let team = AccessKey::new(TEAM_ID, TEAM_SECRET, None);
    let api = KubeApi::start(vec![CopyImageCancellation::crd()])
        .await
        .unwrap();
    let ecs = Arc::new(
        EcsSimulator::start(
            SimulatorConfig::new([team.clone()])
                .with_image(IMAGE, ImageState::Copying)
                .with_image(OWN_IMAGE, ImageState::Copying),
        )
        .await
        .unwrap(),
    );
    let sts = StsSimulator::start(StsSimulatorConfig {
        sink: Some(KeySink::ecs(ecs.clone())),
        ..StsSimulatorConfig::default()
    })
    .await
    .unwrap();
    sts.set_persistent_fault(Some(StsFault::internal_error()));
    let (run, _dir) = start_rrsa_run(&api, &ecs.endpoint(), sts.endpoint(), &[]).await;

    let client = api.client().unwrap();
    let secret = common::key_secret("team-keys", NS, &team);
    Api::<Secret>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let cics: Api<CopyImageCancellation> = Api::namespaced(client, NS);
    for (name, image, secret) in [
        ("own-secret", OWN_IMAGE, Some("team-keys")),
        ("no-secret", IMAGE, None),
    ] {
        cics.create(&PostParams::default(), &resource(name, image, secret))
            .await
            .unwrap();
    }
    wait_succeeded(&cics, "own-secret").await;
    let waiting =
        within(async {
            loop {
                let status = cics.get("no-secret").await.unwrap().status;
                if let Some(condition) = status.iter().flat_map(|s| s.conditions.iter()).find(|c| {
                    c.reason == "AwaitingCredentials" && c.message.contains("InternalError")
                }) {
                    break condition.message.clone();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    assert!(waiting.contains("rrsa"), "{waiting}");

    // One Warning Event when the wait began, not one per recheck: wait until a
    // recheck has rewritten the message (each STS failure has its own request ID).
    within(async {
        loop {
            let status = cics.get("no-secret").await.unwrap().status;
            if status.iter().flat_map(|s| s.conditions.iter()).any(|c| {
                c.reason == "AwaitingCredentials"
                    && c.message.contains("InternalError")
                    && c.message != waiting
            }) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let events = events_about(&api, "no-secret").await;
    let warnings: Vec<&Event> = events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("AwaitingCredentials"))
        .collect();
    assert_eq!(warnings.len(), 1, "one Event per wait: {events:#?}");
    let warning = warnings[0];
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert_eq!(
        warning.regarding.as_ref().and_then(|r| r.kind.as_deref()),
        Some("CopyImageCancellation")
    );
    assert!(warning.series.is_none(), "not repeated: {warning:#?}");
    let note = warning.note.as_deref().unwrap_or_default();
    assert_note_says(
        note,
        &[
            "Nothing is sent until credentials are available",
            "rrsa",
            "InternalError",
        ],
    );
    for secret in [TEAM_SECRET, TOKEN] {
        assert!(!note.contains(secret), "a secret reached the Event: {note}");
    }
    // The resource with its own Secret never waited.
    let own = events_about(&api, "own-secret").await;
    assert!(
        own.iter()
            .all(|e| e.reason.as_deref() != Some("AwaitingCredentials")),
        "{own:#?}"
    );
    assert_eq!(
        ecs.image(IMAGE),
        Some(ImageState::Copying),
        "nothing sent without a key"
    );
    assert_eq!(ecs.image(OWN_IMAGE), None, "the Secret's key was used");

    // The operator's own Pod: a Warning when the credentials could not be obtained...
    let pod_event = |reason: &'static str| {
        let api = &api;
        async move {
            within(async {
                loop {
                    let found = events_where(api, |e| {
                        e.reason.as_deref() == Some(reason)
                            && e.regarding.as_ref().is_some_and(|r| {
                                r.kind.as_deref() == Some("Pod")
                                    && r.name.as_deref() == Some(POD)
                                    && r.uid.as_deref() == Some(POD_UID)
                            })
                    })
                    .await;
                    if let Some(found) = found.into_iter().next() {
                        break found;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
            .await
        }
    };
    let failed = pod_event("CredentialRefreshFailed").await;
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    let note = failed.note.clone().unwrap_or_default();
    assert_note_says(
        &note,
        &[
            "No rrsa credentials could be obtained for the operator",
            "InternalError",
            "resources without a credentialsSecretRef wait",
        ],
    );
    assert!(
        !note.contains(TOKEN) && !note.contains(TEAM_SECRET),
        "{note}"
    );

    let metrics = within(common::http_get(&run.admin, "/metrics"))
        .await
        .unwrap()
        .1;
    assert!(
        metrics.lines().any(|l| l
            == "copyimage_canceller_credential_state{state=\"Unavailable\",source=\"rrsa\"} 1"),
        "{metrics}"
    );
    assert!(
        !metrics
            .lines()
            .any(|l| l == "copyimage_canceller_credential_refresh_failures_total 0"),
        "{metrics}"
    );

    // ...and a Normal one once STS answers again; the waiting resource proceeds.
    sts.set_persistent_fault(None);
    let recovered = pod_event("CredentialsRecovered").await;
    assert_eq!(recovered.type_.as_deref(), Some("Normal"));
    wait_succeeded(&cics, "no-secret").await;
    assert_eq!(ecs.image(IMAGE), None, "cancelled with the STS key");
    let failures = events_where(&api, |e| {
        e.reason.as_deref() == Some("CredentialRefreshFailed")
    })
    .await;
    assert_eq!(
        failures.len(),
        1,
        "one Warning per transition: {failures:#?}"
    );

    let log = run.kill().await;
    assert!(
        log.lines()
            .any(|l| l.contains("\"level\":\"WARN\"") && l.contains("could not be refreshed")),
        "{log}"
    );
    assert!(
        !log.contains(TEAM_SECRET) && !log.contains(TOKEN),
        "a secret reached the log"
    );
}

#[tokio::test]
async fn run_with_a_partial_rrsa_triple_exits_non_zero_naming_the_missing_variable() {
    let dir = tempfile::tempdir().unwrap();
    // NB: never read: the configuration is refused before Kubernetes is contacted.
    let kubeconfig = dir.path().join("kubeconfig");
    let vars = [
        (ENV_ROLE_ARN, ROLE.to_owned()),
        (ENV_OIDC_PROVIDER_ARN, PROVIDER.to_owned()),
    ];
    let output = within(run_command(&kubeconfig, &[], &vars).output())
        .await
        .unwrap();
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(ENV_OIDC_TOKEN_FILE), "{stderr}");
    assert!(stderr.contains("operator credentials"), "{stderr}");
    assert!(
        !stderr.contains("kubeconfig"),
        "refused before Kubernetes: {stderr}"
    );
}
