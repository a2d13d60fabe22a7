//! Tenant roles end to end through the real `run` binary: RamRoleSelectors in
//! the in-process API map namespaces to RAM roles, the STS stand-in checks
//! each signed AssumeRole against its trust table and records the session
//! (policy included), and the ECS simulator's log shows which session signed
//! each CancelCopyImage.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{FollowedRun, OPERATOR_KEY_ID, OPERATOR_KEY_SECRET, OPERATOR_TOKEN, cic, within};
use copyimage_canceller::resource::{CopyImageCancellation, Phase};
use copyimage_canceller::role_selector::{
    LabelSelector, NamespaceSelector, RamRoleSelector, RamRoleSelectorSpec, SESSION_POLICY,
};
use copyimage_stand_ins::ecs_simulator::{
    EcsSimulator, ImageState, SimulatorConfig, SimulatorHandle,
};
use copyimage_stand_ins::kube_api::{KubeApi, KubeApiHandle};
use copyimage_stand_ins::sts_simulator::{
    KeySink, StsSimulator, StsSimulatorConfig, StsSimulatorHandle, Trust,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::CustomResourceExt;
use kube::api::{Api, PostParams};

const ACCOUNT: &str = "1234567890123456";
/// The operator's own identity, as the trust table names it.
const OPERATOR: &str = "acs:ram::1234567890123456:user/canceller-operator";
const EXTERNAL_ID: &str = "team-b-7f3a";

fn role(name: &str) -> String {
    format!("acs:ram::{ACCOUNT}:role/{name}")
}

fn trust(role_name: &str, external_id: Option<&str>) -> Trust {
    Trust {
        principal: OPERATOR.into(),
        role_arn: role(role_name),
        external_id: external_id.map(Into::into),
    }
}

/// The world of one scenario.
struct World {
    api: KubeApiHandle,
    ecs: Arc<SimulatorHandle>,
    sts: StsSimulatorHandle,
    dir: tempfile::TempDir,
}

impl World {
    async fn start(trust: Vec<Trust>, images: &[&str]) -> Self {
        let api = KubeApi::start(vec![CopyImageCancellation::crd(), RamRoleSelector::crd()])
            .await
            .unwrap();
        let mut config = SimulatorConfig::new([common::operator_key()]);
        for image in images {
            config = config.with_image(*image, ImageState::Copying);
        }
        let ecs = Arc::new(EcsSimulator::start(config).await.unwrap());
        let sts = StsSimulator::start(StsSimulatorConfig {
            sink: Some(KeySink::ecs(ecs.clone())),
            callers: vec![(common::operator_key(), OPERATOR.into())],
            trust,
            ..StsSimulatorConfig::default()
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        api.write_kubeconfig(&dir.path().join("kubeconfig"))
            .unwrap();
        Self { api, ecs, sts, dir }
    }

    /// `run` with the operator's static keys and `extra` flags.
    async fn run(&self, extra: &[&str]) -> FollowedRun {
        self.run_as(
            extra,
            &[
                ("ALIBABA_CLOUD_ACCESS_KEY_ID", OPERATOR_KEY_ID.to_owned()),
                (
                    "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
                    OPERATOR_KEY_SECRET.to_owned(),
                ),
                ("ALIBABA_CLOUD_SECURITY_TOKEN", OPERATOR_TOKEN.to_owned()),
            ],
        )
        .await
    }

    /// `run` with `extra` flags and the operator's identity from `vars`.
    async fn run_as(&self, extra: &[&str], vars: &[(&str, String)]) -> FollowedRun {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_copyimage-canceller"));
        command
            .arg("run")
            .args([
                "--ecs-endpoint",
                &self.ecs.endpoint(),
                "--admin-addr",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--retry-base-delay",
                "10ms",
                "--retry-max-delay",
                "50ms",
            ])
            .args(extra)
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"));
        for (name, _) in std::env::vars() {
            if name.starts_with("ALIBABA_CLOUD_") {
                command.env_remove(name);
            }
        }
        command
            .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
            .env("ALIBABA_CLOUD_STS_ENDPOINT", self.sts.endpoint());
        FollowedRun::spawn(command).await
    }

    fn client(&self) -> kube::Client {
        self.api.client().unwrap()
    }

    async fn namespace(&self, name: &str, labels: &[(&str, &str)]) {
        let mut ns = Namespace::default();
        ns.metadata.name = Some(name.into());
        ns.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        Api::<Namespace>::all(self.client())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
    }

    async fn selector(
        &self,
        name: &str,
        role_name: &str,
        names: &[&str],
        labels: Option<(&str, &str)>,
        external_id: Option<&str>,
    ) {
        let selector = RamRoleSelector::new(
            name,
            RamRoleSelectorSpec {
                role_arn: role(role_name),
                namespace_selector: NamespaceSelector {
                    names: names.iter().map(|n| n.to_string()).collect(),
                    label_selector: labels.map(|(k, v)| LabelSelector {
                        match_labels: BTreeMap::from([(k.to_string(), v.to_string())]),
                        ..LabelSelector::default()
                    }),
                },
                external_id: external_id.map(Into::into),
                session_duration_seconds: None,
            },
        );
        Api::<RamRoleSelector>::all(self.client())
            .create(&PostParams::default(), &selector)
            .await
            .unwrap();
    }

    fn cics(&self, ns: &str) -> Api<CopyImageCancellation> {
        Api::namespaced(self.client(), ns)
    }

    async fn create(&self, ns: &str, name: &str, image: &str) {
        let mut resource = cic(name, image);
        resource.metadata.namespace = Some(ns.into());
        self.cics(ns)
            .create(&PostParams::default(), &resource)
            .await
            .unwrap();
    }

    /// Waits until resource `ns/name` satisfies `done`; returns it.
    async fn wait(
        &self,
        ns: &str,
        name: &str,
        what: &str,
        done: impl Fn(&CopyImageCancellation) -> bool,
    ) -> CopyImageCancellation {
        let cics = self.cics(ns);
        let mut last = None;
        let found = tokio::time::timeout(common::PATIENCE, async {
            loop {
                let got = cics.get(name).await.unwrap();
                if done(&got) {
                    break got;
                }
                last = Some(got);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("{ns}/{name} never {what}: {last:#?}"))
    }

    async fn wait_succeeded(&self, ns: &str, name: &str) -> CopyImageCancellation {
        self.wait(ns, name, "succeeded", |c| {
            c.status
                .as_ref()
                .is_some_and(|s| s.phase == Some(Phase::Succeeded))
        })
        .await
    }

    /// Waits until `ns/name` is Reconciling with `reason`; returns it.
    async fn wait_reason(&self, ns: &str, name: &str, reason: &str) -> CopyImageCancellation {
        self.wait(ns, name, reason, |c| {
            common::cond(c, "Reconciling")
                .is_some_and(|(status, r)| status == "True" && r == reason)
        })
        .await
    }

    /// Waits until selector `name` shows Ready with `status` and `reason`; returns it.
    async fn wait_selector(&self, name: &str, status: &str, reason: &str) -> RamRoleSelector {
        let api = Api::<RamRoleSelector>::all(self.client());
        let mut last = None;
        tokio::time::timeout(common::PATIENCE, async {
            loop {
                let got = api.get(name).await.unwrap();
                let ready = got.status.as_ref().and_then(|s| {
                    s.conditions
                        .iter()
                        .find(|c| c.type_ == "Ready")
                        .map(|c| (c.status.clone(), c.reason.clone()))
                });
                if ready == Some((status.to_string(), reason.to_string())) {
                    break got;
                }
                last = Some(got);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("selector {name} never Ready={status} {reason}: {last:#?}"))
    }

    /// The CancelCopyImage requests for `image`.
    fn requests_for(&self, image: &str) -> Vec<copyimage_stand_ins::ecs_simulator::RequestRecord> {
        common::cancel_requests(self.ecs.requests())
            .into_iter()
            .filter(|r| r.image_id.as_deref() == Some(image))
            .collect()
    }

    /// Every secret STS minted: none may appear anywhere the operator writes.
    fn minted_secrets(&self) -> Vec<String> {
        self.sts
            .minted()
            .iter()
            .flat_map(|k| {
                [
                    k.secret().to_owned(),
                    k.security_token().unwrap_or_default().to_owned(),
                ]
            })
            .chain([OPERATOR_KEY_SECRET.to_owned(), OPERATOR_TOKEN.to_owned()])
            .collect()
    }

    /// Every place the operator writes to, as text: its log, metrics, the
    /// resources and selectors (status) and the Events.
    async fn everything_written(&self, run: &mut FollowedRun) -> String {
        use k8s_openapi::api::events::v1::Event;
        let metrics = within(common::http_get(&run.admin, "/metrics"))
            .await
            .map(|(_, body)| body)
            .unwrap_or_default();
        let cics = Api::<CopyImageCancellation>::all(self.client())
            .list(&Default::default())
            .await
            .unwrap();
        let selectors = Api::<RamRoleSelector>::all(self.client())
            .list(&Default::default())
            .await
            .unwrap();
        let events = Api::<Event>::all(self.client())
            .list(&Default::default())
            .await
            .unwrap();
        format!(
            "{}\n{metrics}\n{}\n{}\n{}",
            run.log(),
            serde_json::to_string(&cics.items).unwrap(),
            serde_json::to_string(&selectors.items).unwrap(),
            serde_json::to_string(&events.items).unwrap()
        )
    }
}

/// Two tenant namespaces mapped to two roles (one by name, one by label with
/// an ExternalId), and a third namespace with no role: each CancelCopyImage
/// is signed by its own namespace's session (under the session policy), the
/// operator's key never reaches ECS for the tenants, and the third uses the
/// operator's identity. Short sessions are refreshed before they expire,
/// during the run, with no failed request; no session secret leaks.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_namespace_is_signed_by_its_own_role_session() {
    let images = [
        "m-tenanta0000001",
        "m-tenantb0000001",
        "m-operator000001",
        "m-tenanta0000002",
        "m-tenanta0000003",
        "m-tenanta0000004",
    ];
    let world = World::start(
        vec![trust("team-a", None), trust("team-b", Some(EXTERNAL_ID))],
        &images,
    )
    .await;
    // Sessions far shorter than STS allows, so the refresh happens during the run.
    world.sts.set_lifetime(Duration::from_secs(3));
    world.namespace("team-a", &[]).await;
    world.namespace("team-b", &[("tenant", "b")]).await;
    world.namespace("shared", &[]).await;
    world
        .selector("team-a", "team-a", &["team-a"], None, None)
        .await;
    world
        .selector(
            "team-b",
            "team-b",
            &[],
            Some(("tenant", "b")),
            Some(EXTERNAL_ID),
        )
        .await;
    let mut run = world.run(&[]).await;

    world.create("team-a", "a1", images[0]).await;
    world.create("team-b", "b1", images[1]).await;
    world.create("shared", "op1", images[2]).await;
    for (ns, name) in [("team-a", "a1"), ("team-b", "b1"), ("shared", "op1")] {
        let got = world.wait_succeeded(ns, name).await;
        assert_eq!(got.status.unwrap().attempts, 1, "{ns}/{name}");
    }

    // Which session signed each request: the ECS log's key, looked up in STS's.
    let signer = |image: &str| {
        let requests = world.requests_for(image);
        assert_eq!(requests.len(), 1, "{image}: {requests:?}");
        assert_eq!(requests[0].code, "Success");
        requests[0].access_key_id.clone().unwrap()
    };
    let a = world
        .sts
        .session_of(&signer(images[0]))
        .expect("a role session");
    assert_eq!(a.role_arn, role("team-a"));
    assert_eq!(a.session_name, "cic.team-a");
    assert_eq!(a.principal, OPERATOR);
    assert_eq!(a.policy.as_deref(), Some(SESSION_POLICY));
    let b = world
        .sts
        .session_of(&signer(images[1]))
        .expect("a role session");
    assert_eq!(b.role_arn, role("team-b"));
    // Selected by label: the session names the selector (the tenant).
    assert_eq!(b.session_name, "cic.team-b");
    assert_eq!(b.policy.as_deref(), Some(SESSION_POLICY));
    let calls = world.sts.calls();
    assert!(
        calls
            .iter()
            .filter(|c| c.role_arn.as_deref() == Some(role("team-b").as_str()))
            .all(|c| c.external_id.as_deref() == Some(EXTERNAL_ID)),
        "the ExternalId goes with every AssumeRole of team-b: {calls:?}"
    );
    assert!(
        calls
            .iter()
            .filter(|c| c.role_arn.as_deref() == Some(role("team-a").as_str()))
            .all(|c| c.external_id.is_none())
    );
    // The third namespace: the operator's own key.
    assert_eq!(signer(images[2]), OPERATOR_KEY_ID);
    // The operator's key never reached ECS for a tenant.
    for image in [images[0], images[1]] {
        assert!(
            world
                .requests_for(image)
                .iter()
                .all(|r| r.access_key_id.as_deref() != Some(OPERATOR_KEY_ID))
        );
    }
    // `kubectl get ramroleselectors` says the roles can be assumed.
    let selector = world.wait_selector("team-a", "True", "RoleAssumed").await;
    assert_eq!(selector.status.unwrap().matched_namespaces, 1);
    world.wait_selector("team-b", "True", "RoleAssumed").await;
    let request = http::Request::get("/apis/ecs.alibabacloud.com/v1alpha1/ramroleselectors")
        .header(
            "Accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .body(Vec::new())
        .unwrap();
    let table: serde_json::Value = world.client().request(request).await.unwrap();
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns.join(" | "),
        "Name | Role | Namespaces | Assumable | Reason | Age"
    );
    let row = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["cells"][0] == "team-a")
        .expect("a row for team-a");
    assert_eq!(row["cells"][1], role("team-a").as_str());
    assert_eq!(row["cells"][2], 1);
    assert_eq!(row["cells"][3], "True");
    assert_eq!(row["cells"][4], "RoleAssumed");

    // Refresh before expiry: more resources while the 3-second sessions are
    // renewed; each is signed by a then-current session, none fails.
    let sessions_before = world
        .sts
        .sessions()
        .iter()
        .filter(|s| s.role_arn == role("team-a"))
        .count();
    for (i, image) in images[3..].iter().enumerate() {
        let name = format!("a-later-{i}");
        world.create("team-a", &name, image).await;
        world.wait_succeeded("team-a", &name).await;
        // Wait for the next refresh before the next resource.
        let target = sessions_before + i + 1;
        within(async {
            while world
                .sts
                .sessions()
                .iter()
                .filter(|s| s.role_arn == role("team-a"))
                .count()
                < target
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    }
    let all = common::cancel_requests(world.ecs.requests());
    assert!(
        all.iter().all(|r| r.code == "Success"),
        "no request failed across refreshes: {all:?}"
    );
    let later_signers: std::collections::BTreeSet<String> =
        images[3..].iter().map(|image| signer(image)).collect();
    assert!(
        later_signers.len() >= 2,
        "requests after a refresh are signed with the new session's key: {later_signers:?}"
    );
    for key in &later_signers {
        let session = world.sts.session_of(key).unwrap();
        assert_eq!(session.session_name, "cic.team-a");
    }
    // Every session key was used only before its session expired.
    for request in &all {
        if let Some(session) = world
            .sts
            .session_of(request.access_key_id.as_deref().unwrap_or_default())
        {
            assert!(
                request.time < session.expiration,
                "{} signed at {} with a session that expired at {}",
                request.image_id.as_deref().unwrap_or_default(),
                request.time,
                session.expiration
            );
        }
    }

    let written = world.everything_written(&mut run).await;
    for secret in world.minted_secrets() {
        assert!(
            !written.contains(&secret),
            "a session secret or token reached a log, metric, status or Event"
        );
    }
    run.kill().await;
}

/// With `--require-namespace-role`: a namespace without a role waits saying
/// what to create; two overlapping selectors make a resource wait
/// (AmbiguousRole, naming both); a trust policy that refuses makes it wait
/// with the STS code and the role, no attempt counted, and it goes on by
/// itself once the trust table is fixed.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_usable_role_nothing_is_sent_and_the_resource_says_why() {
    let images = ["m-norole00000001", "m-overlap0000001", "m-refused0000001"];
    // Role team-d exists, but its trust policy names someone else.
    let other = Trust {
        principal: "acs:ram::1234567890123456:user/someone-else".into(),
        role_arn: role("team-d"),
        external_id: None,
    };
    let world = World::start(vec![other.clone(), trust("team-c", None)], &images).await;
    world.namespace("shared", &[]).await;
    world.namespace("team-c", &[("tenant", "c")]).await;
    world.namespace("team-d", &[]).await;
    world
        .selector("overlap-by-name", "team-c", &["team-c"], None, None)
        .await;
    world
        .selector(
            "overlap-by-label",
            "team-c2",
            &[],
            Some(("tenant", "c")),
            None,
        )
        .await;
    world
        .selector("team-d", "team-d", &["team-d"], None, None)
        .await;
    let mut run = world.run(&["--require-namespace-role"]).await;

    world.create("shared", "no-role", images[0]).await;
    world.create("team-c", "overlap", images[1]).await;
    world.create("team-d", "refused", images[2]).await;

    let no_role = world
        .wait_reason("shared", "no-role", "AwaitingCredentials")
        .await;
    let (_, message) = (
        (),
        common::condition(&no_role, "Reconciling")
            .unwrap()
            .message
            .clone(),
    );
    for needle in [
        "no RamRoleSelector selects namespace shared",
        "must create a RamRoleSelector",
    ] {
        assert!(message.contains(needle), "{needle} not in: {message}");
    }

    let overlap = world
        .wait_reason("team-c", "overlap", "AmbiguousRole")
        .await;
    let message = &common::condition(&overlap, "Reconciling").unwrap().message;
    for needle in ["overlap-by-label", "overlap-by-name", "team-c"] {
        assert!(message.contains(needle), "{needle} not in: {message}");
    }

    let refused = world
        .wait(
            "team-d",
            "refused",
            "awaiting credentials with the STS code",
            |c| {
                common::condition(c, "Reconciling").is_some_and(|r| {
                    r.reason == "AwaitingCredentials" && r.message.contains("NoPermission")
                })
            },
        )
        .await;
    let message = &common::condition(&refused, "Reconciling").unwrap().message;
    assert!(
        message.contains(&role("team-d")),
        "the role is named: {message}"
    );
    assert_eq!(
        refused.status.as_ref().unwrap().attempts,
        0,
        "no attempt counted"
    );
    let selector = world.wait_selector("team-d", "False", "NoPermission").await;
    assert_eq!(
        selector.status.unwrap().error_code.as_deref(),
        Some("NoPermission")
    );

    // Nothing reached ECS for any of them.
    for image in images {
        assert!(world.requests_for(image).is_empty(), "{image} was sent");
    }

    // The administrator fixes the trust policy: the resource goes on by itself.
    world.sts.set_trust(vec![
        other.clone(),
        trust("team-c", None),
        trust("team-d", None),
    ]);
    let done = world.wait_succeeded("team-d", "refused").await;
    assert_eq!(done.status.unwrap().attempts, 1);
    world.wait_selector("team-d", "True", "RoleAssumed").await;
    let requests = world.requests_for(images[2]);
    let session = world
        .sts
        .session_of(requests[0].access_key_id.as_deref().unwrap())
        .unwrap();
    assert_eq!(session.session_name, "cic.team-d");

    // The administrator removes the overlap: the selector's deletion wakes
    // the resource, which goes on with the one role left.
    Api::<RamRoleSelector>::all(world.client())
        .delete("overlap-by-label", &Default::default())
        .await
        .unwrap();
    let done = world.wait_succeeded("team-c", "overlap").await;
    assert_eq!(done.status.unwrap().attempts, 1);
    let signer = world.requests_for(images[1])[0]
        .access_key_id
        .clone()
        .unwrap();
    assert_eq!(
        world.sts.session_of(&signer).unwrap().role_arn,
        role("team-c")
    );

    // The other still waits, and the operator's key was never used.
    for (ns, name, reason) in [("shared", "no-role", "AwaitingCredentials")] {
        let got = world.cics(ns).get(name).await.unwrap();
        assert_eq!(
            common::cond(&got, "Reconciling"),
            Some(("True".into(), reason.into()))
        );
    }
    assert!(
        common::cancel_requests(world.ecs.requests())
            .iter()
            .all(|r| r.access_key_id.as_deref() != Some(OPERATOR_KEY_ID)),
        "--require-namespace-role: the operator's key is never used"
    );

    let written = world.everything_written(&mut run).await;
    for secret in world.minted_secrets() {
        assert!(!written.contains(&secret), "a secret was written somewhere");
    }
    run.kill().await;
}

/// Admission (the CRD schema, in the API server): a bad role ARN, ExternalId
/// or duration, and a selector that selects nothing, are refused with a
/// message naming the field; the sample in deploy/samples is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_selectors_are_refused_at_admission() {
    let api = KubeApi::start(vec![CopyImageCancellation::crd(), RamRoleSelector::crd()])
        .await
        .unwrap();
    let selectors = Api::<RamRoleSelector>::all(api.client().unwrap());
    let good = || {
        RamRoleSelector::new(
            "s",
            RamRoleSelectorSpec {
                role_arn: role("team-a"),
                namespace_selector: NamespaceSelector {
                    names: vec!["team-a".into()],
                    label_selector: None,
                },
                external_id: None,
                session_duration_seconds: None,
            },
        )
    };
    type Bend = fn(&mut RamRoleSelectorSpec);
    let rows: [(&str, Bend, &str); 5] = [
        (
            "role ARN",
            |s| s.role_arn = "arn:aws:iam::1:role/x".into(),
            "spec.roleArn",
        ),
        (
            "ExternalId",
            |s| s.external_id = Some("a b".into()),
            "spec.externalId",
        ),
        (
            "short ExternalId",
            |s| s.external_id = Some("a".into()),
            "spec.externalId",
        ),
        (
            "duration",
            |s| s.session_duration_seconds = Some(60),
            "spec.sessionDurationSeconds",
        ),
        (
            "empty selector",
            |s| s.namespace_selector.names.clear(),
            "namespaceSelector must list names or give a labelSelector",
        ),
    ];
    for (what, bend, needle) in rows {
        let mut bad = good();
        bend(&mut bad.spec);
        let err = selectors
            .create(&PostParams::default(), &bad)
            .await
            .expect_err(what);
        let kube::Error::Api(status) = err else {
            panic!("{what}: {err}")
        };
        assert_eq!(status.code, 422, "{what}: {status:?}");
        assert!(
            status.message.contains(needle),
            "{what}: {}",
            status.message
        );
    }
    selectors
        .create(&PostParams::default(), &good())
        .await
        .unwrap();
    let sample: RamRoleSelector =
        serde_yaml_ng::from_str(include_str!("../deploy/samples/ramroleselector.yaml")).unwrap();
    selectors
        .create(&PostParams::default(), &sample)
        .await
        .unwrap();
}

/// The set-up the docs walk through: the operator's identity is its RRSA
/// role (AssumeRoleWithOIDC), and the tenant role's trust policy names that
/// role. The tenant session is assumed with the RRSA session's key (and its
/// security token), and the operator's RRSA key never reaches ECS for the tenant.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_role_trusting_the_operators_rrsa_role() {
    const OPERATOR_ROLE: &str = "acs:ram::1234567890123456:role/copyimage-canceller";
    const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.tenant-roles-oidc.sig";
    let images = ["m-viarrsa0000001", "m-viarrsa0000002"];
    let world = World::start(
        vec![Trust {
            principal: OPERATOR_ROLE.into(),
            role_arn: role("team-a"),
            external_id: Some(EXTERNAL_ID.into()),
        }],
        &images,
    )
    .await;
    world.namespace("team-a", &[]).await;
    world.namespace("platform", &[]).await;
    world
        .selector("team-a", "team-a", &["team-a"], None, Some(EXTERNAL_ID))
        .await;
    let token_file = world.dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let run = world
        .run_as(
            &[],
            &[
                ("ALIBABA_CLOUD_ROLE_ARN", OPERATOR_ROLE.to_owned()),
                (
                    "ALIBABA_CLOUD_OIDC_PROVIDER_ARN",
                    "acs:ram::1234567890123456:oidc-provider/ack-rrsa-c1".to_owned(),
                ),
                (
                    "ALIBABA_CLOUD_OIDC_TOKEN_FILE",
                    token_file.display().to_string(),
                ),
            ],
        )
        .await;
    world.create("team-a", "tenant", images[0]).await;
    world.create("platform", "own", images[1]).await;
    world.wait_succeeded("team-a", "tenant").await;
    world.wait_succeeded("platform", "own").await;

    let calls = world.sts.calls();
    let rrsa_key = calls
        .iter()
        .find(|c| c.action.as_deref() == Some("AssumeRoleWithOIDC") && c.code == "Success")
        .and_then(|c| c.access_key_id.clone())
        .expect("the operator's RRSA session");
    let tenant_call = calls
        .iter()
        .find(|c| c.action.as_deref() == Some("AssumeRole") && c.code == "Success")
        .expect("the tenant's AssumeRole");
    assert_eq!(
        tenant_call.caller_access_key_id.as_deref(),
        Some(rrsa_key.as_str())
    );
    assert_eq!(tenant_call.external_id.as_deref(), Some(EXTERNAL_ID));
    let tenant_signer = world.requests_for(images[0])[0]
        .access_key_id
        .clone()
        .unwrap();
    let session = world
        .sts
        .session_of(&tenant_signer)
        .expect("a tenant session");
    assert_eq!(session.principal, OPERATOR_ROLE);
    assert_eq!(session.session_name, "cic.team-a");
    assert_ne!(
        tenant_signer, rrsa_key,
        "the operator's key never signs for the tenant"
    );
    // The namespace without a selector: the operator's own RRSA session.
    assert_eq!(
        world.requests_for(images[1])[0].access_key_id.as_deref(),
        Some(rrsa_key.as_str())
    );
    run.kill().await;
}

/// A tenant session holding real STS credentials: its `Debug` (and that of
/// everything it holds) shows the key ID, never the secret or the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_sessions_debug_shows_no_secret() {
    use copyimage_canceller::identity::OperatorCredentials;
    use copyimage_canceller::identity::assume_role::AssumeRoleRequest;
    use copyimage_canceller::identity::tenant::TenantRoles;

    let world = World::start(vec![trust("team-a", None)], &[]).await;
    let roles = TenantRoles::new(
        OperatorCredentials::fixed(common::operator_side(&common::operator_key())),
        world.sts.endpoint().parse().unwrap(),
        Default::default(),
        Duration::from_secs(5),
        Duration::from_secs(5),
    );
    let session = roles
        .session(&AssumeRoleRequest {
            role_arn: role("team-a"),
            external_id: None,
            session_name: "cic.team-a".into(),
            policy: SESSION_POLICY.into(),
            duration: Duration::from_secs(900),
        })
        .unwrap();
    let key = within(async {
        loop {
            if let Ok(key) = session.try_current() {
                break key;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let minted = world.sts.minted().pop().unwrap();
    assert_eq!(key.id, minted.id);
    let debug = format!(
        "{session:?} {session:#?} {roles:?} {key:?} {:?}",
        session.status()
    );
    assert!(debug.contains(&minted.id));
    for secret in world.minted_secrets() {
        assert!(
            !debug.contains(&secret),
            "a secret in Debug output: {debug}"
        );
    }
}
