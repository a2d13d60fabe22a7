//! The operator as users install it: `deploy/samples/` applied to a REAL
//! cluster where the Helm chart runs the operator's image as a Deployment, and
//! the ECS simulator runs in the cluster from the same image (`deploy/e2e/`,
//! which `scripts/e2e install` sets up). Nothing runs locally but this test:
//! it reaches the simulator's control routes through the API server's service
//! proxy, and checks that the Events come from the installed Deployment's pod.
//!
//! Opt in with `KUBECONFIG`, `COPYIMAGE_CANCELLER_REAL_CLUSTER=1` and
//! `COPYIMAGE_CANCELLER_INSTALLED_NAMESPACE=<the release namespace>`:
//!
//! ```text
//! scripts/e2e install && scripts/e2e test     # sets all three
//! ```
//!
//! NB: without them the cluster test returns at once after printing "skipped:
//! set COPYIMAGE_CANCELLER_...": a pass then proves nothing (`scripts/e2e test`
//! fails on that line). What it applies is checked without a cluster: the
//! samples here (`the_samples_it_applies_fit_together`), deploy/e2e by
//! tests/packaging (it renders, its flags are ones the binary takes).

mod common;

use std::time::Duration;

use common::*;
use copyimage_canceller::resource::CopyImageCancellation;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};

/// The sample signed with the operator's own keys (the chart's operatorSecret).
const OPERATOR_KEYS_SAMPLE: &str =
    include_str!("../deploy/samples/copyimagecancellation-operator-credentials.yaml");
/// The sample signed with the keys of Secret `alibaba-credentials` in its namespace.
const SECRET_SAMPLE: &str = include_str!("../deploy/samples/copyimagecancellation.yaml");
/// That Secret, as the samples ship it (its placeholder keys replaced by the simulator's).
const SECRET: &str = include_str!("../deploy/samples/alibaba-credentials-secret.yaml");
/// The simulator's Service and its key Secret, both in the release namespace (deploy/e2e).
const SIMULATOR_SERVICE: &str = "http:ecs-simulator:http";
const SIMULATOR_KEYS: &str = "ecs-simulator-keys";
/// Longer than [`PATIENCE`]: a pod on a busy CI node, real API round trips.
const CLUSTER_PATIENCE: Duration = Duration::from_secs(180);

/// The installed operator's namespace and a client, when opted in.
async fn installed(test: &str) -> Option<(kube::Client, String)> {
    let opted_in = std::env::var("COPYIMAGE_CANCELLER_REAL_CLUSTER").as_deref() == Ok("1");
    let kubeconfig = std::env::var("KUBECONFIG").ok().filter(|k| !k.is_empty());
    let namespace = std::env::var("COPYIMAGE_CANCELLER_INSTALLED_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty());
    match (opted_in, kubeconfig, namespace) {
        (true, Some(_), Some(namespace)) => {
            let client = kube::Client::try_default()
                .await
                .expect("a kube client from KUBECONFIG");
            Some((client, namespace))
        }
        _ => {
            println!(
                "{test}: skipped: set COPYIMAGE_CANCELLER_REAL_CLUSTER=1, KUBECONFIG and \
                 COPYIMAGE_CANCELLER_INSTALLED_NAMESPACE (scripts/e2e test does) to run it \
                 against an installed operator"
            );
            None
        }
    }
}

/// One call to the in-cluster simulator's control routes, through the API server's service proxy.
async fn simulator(
    client: &kube::Client,
    namespace: &str,
    method: http::Method,
    route: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let uri = format!(
        "/api/v1/namespaces/{namespace}/services/{SIMULATOR_SERVICE}/proxy/_simulator/{route}"
    );
    let request = http::Request::builder()
        .method(method.clone())
        .uri(&uri)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body.map(|b| b.to_string().into_bytes()).unwrap_or_default())
        .expect("a proxy request");
    let text = client
        .request_text(request)
        .await
        .unwrap_or_else(|e| panic!("{method} {uri}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {uri}: {e}: {text}"))
}

fn sample(yaml: &str) -> CopyImageCancellation {
    serde_yaml_ng::from_str(yaml).expect("a sample CopyImageCancellation")
}

/// What the cluster test applies, as it reads it: runs everywhere, so a sample
/// changed in a way the cluster test cannot use fails here, not only on a cluster.
#[test]
fn the_samples_it_applies_fit_together() {
    let own_keys = sample(OPERATOR_KEYS_SAMPLE);
    let team_keys = sample(SECRET_SAMPLE);
    let secret: Secret = serde_yaml_ng::from_str(SECRET).expect("the sample Secret");
    assert!(own_keys.spec.credentials_secret_ref.is_none());
    assert_eq!(
        team_keys
            .spec
            .credentials_secret_ref
            .as_ref()
            .map(|r| r.name.clone()),
        Some(secret.name_any())
    );
    let namespace = own_keys.namespace();
    assert!(namespace.is_some());
    assert_eq!(team_keys.namespace(), namespace);
    assert_eq!(secret.namespace(), namespace);
    assert_ne!(own_keys.spec.image_id, team_keys.spec.image_id);
    assert_ne!(own_keys.name_any(), team_keys.name_any());
    // The sample Secret's keys are what the test replaces with the simulator's.
    let keys: Vec<_> = secret.string_data.unwrap_or_default().into_keys().collect();
    assert_eq!(keys, ["accessKeyId", "accessKeySecret"]);
}

/// Deletes `name` if it exists and waits until it is gone (a previous run's leftover).
async fn delete_and_wait(api: &Api<CopyImageCancellation>, name: &str) {
    let _ = api.delete(name, &DeleteParams::default()).await;
    let deadline = tokio::time::Instant::now() + CLUSTER_PATIENCE;
    while api.get_opt(name).await.expect("get").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} still exists"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `name` until its phase is final.
async fn wait_finished(api: &Api<CopyImageCancellation>, name: &str) -> CopyImageCancellation {
    let deadline = tokio::time::Instant::now() + CLUSTER_PATIENCE;
    loop {
        let cic = api.get(name).await.expect("get the sample");
        if matches!(phase(&cic).as_deref(), Some("Succeeded" | "Failed")) {
            return cic;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} not finished after {CLUSTER_PATIENCE:?}:\n{}",
            yaml(&cic)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The Event with `reason` about the object `uid` (not an earlier run's one of the same name), waited for.
async fn event(client: &kube::Client, namespace: &str, uid: &str, reason: &str) -> Event {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let deadline = tokio::time::Instant::now() + CLUSTER_PATIENCE;
    loop {
        let found = events
            .list(&ListParams::default())
            .await
            .expect("list Events")
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().and_then(|r| r.uid.as_deref()) == Some(uid)
            });
        if let Some(event) = found {
            return event;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {reason} Event about {uid} after {CLUSTER_PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installed_operator_cancels_the_samples_through_the_in_cluster_simulator() {
    let Some((client, namespace)) =
        installed("installed_operator_cancels_the_samples_through_the_in_cluster_simulator").await
    else {
        return;
    };
    let own_keys = sample(OPERATOR_KEYS_SAMPLE);
    let team_keys = sample(SECRET_SAMPLE);
    let samples_namespace = own_keys
        .namespace()
        .expect("the samples name their namespace");
    assert_eq!(team_keys.namespace(), Some(samples_namespace.clone()));
    let cics: Api<CopyImageCancellation> = Api::namespaced(client.clone(), &samples_namespace);
    for cic in [&own_keys, &team_keys] {
        delete_and_wait(&cics, &cic.name_any()).await;
    }

    // Both images are being copied; the Secret-signed one meets one InternalError first.
    let get = http::Method::GET;
    simulator(&client, &namespace, http::Method::DELETE, "requests", None).await;
    simulator(&client, &namespace, http::Method::DELETE, "faults", None).await;
    for cic in [&own_keys, &team_keys] {
        let route = format!("images/{}", cic.spec.image_id);
        let state = serde_json::json!({"state": "copying"});
        simulator(&client, &namespace, http::Method::PUT, &route, Some(state)).await;
    }
    let fault =
        serde_json::json!({"fault": format!("{}=internal-error*1", team_keys.spec.image_id)});
    simulator(
        &client,
        &namespace,
        http::Method::POST,
        "faults",
        Some(fault),
    )
    .await;

    // The sample Secret, holding the simulator's key instead of its placeholders.
    let keys: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let simulator_keys = keys
        .get(SIMULATOR_KEYS)
        .await
        .expect("the simulator's key Secret");
    let mut secret: Secret = serde_yaml_ng::from_str(SECRET).expect("the sample Secret");
    secret.string_data = None;
    secret.data = simulator_keys.data.clone();
    let key_id = String::from_utf8(
        simulator_keys.data.as_ref().expect("data")["accessKeyId"]
            .0
            .clone(),
    )
    .expect("a UTF-8 key id");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &samples_namespace);
    secrets
        .patch(
            &secret.name_any(),
            &PatchParams::apply("copyimage-canceller-e2e").force(),
            &Patch::Apply(&secret),
        )
        .await
        .expect("apply the sample Secret");

    for cic in [&own_keys, &team_keys] {
        cics.create(&PostParams::default(), cic)
            .await
            .unwrap_or_else(|e| panic!("create sample {}: {e}", cic.name_any()));
    }

    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let operator_pods: Vec<String> = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=copyimage-canceller"))
        .await
        .expect("list the operator's pods")
        .items
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert!(!operator_pods.is_empty(), "no operator pod in {namespace}");

    let requests = |log: &serde_json::Value, image: &str| -> Vec<serde_json::Value> {
        log.as_array()
            .expect("the request log is a list")
            .iter()
            .filter(|r| r["imageId"] == image)
            .cloned()
            .collect()
    };
    for (cic, outcomes_wanted) in [
        (&own_keys, vec!["Succeeded"]),
        (&team_keys, vec!["InternalError", "Succeeded"]),
    ] {
        let name = cic.name_any();
        let done = wait_finished(&cics, &name).await;
        assert_phase(&done, "Succeeded");
        assert_eq!(outcomes(&done), outcomes_wanted, "{}", yaml(&done));
        assert_eq!(
            cond(&done, "Ready"),
            Some(("True".into(), "Cancelled".into()))
        );
        assert_final_conditions(&done);

        // The requests reached the simulator in the cluster, signed with the key it holds.
        let log = simulator(&client, &namespace, get.clone(), "requests", None).await;
        let sent = requests(&log, &cic.spec.image_id);
        assert_eq!(sent.len(), outcomes_wanted.len(), "{sent:#?}");
        let last = sent.last().expect("a request");
        assert_eq!(last["code"], "Success", "{last:#?}");
        assert_eq!(last["accessKeyId"], key_id.as_str());
        assert_eq!(last["signatureValid"], true);
        assert_eq!(
            done.status.as_ref().and_then(|s| s.request_id.as_deref()),
            last["requestId"].as_str()
        );

        // And the installed Deployment's pod is who did it.
        let uid = done.uid().expect("a uid");
        let cancelled = event(&client, &samples_namespace, &uid, "Cancelled").await;
        let reporter = cancelled.reporting_instance.clone().unwrap_or_default();
        assert!(
            operator_pods.contains(&reporter),
            "the Cancelled Event came from '{reporter}', not from the operator's pods {operator_pods:?}"
        );
    }

    for cic in [&own_keys, &team_keys] {
        delete_and_wait(&cics, &cic.name_any()).await;
    }
    let _ = secrets
        .delete(&secret.name_any(), &DeleteParams::default())
        .await;
}
