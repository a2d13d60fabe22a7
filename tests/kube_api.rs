//! The in-process Kubernetes API, exercised with the same kube-rs calls the controller makes.

use std::time::Duration;

use copyimage_stand_ins::kube_api::{
    Fault, FaultKind, KubeApi, KubeApiConfig, KubeApiHandle, Verb,
};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{CustomResource, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Generous: only a bound on a hung test, never a performance assertion.
const PATIENCE: Duration = Duration::from_secs(30);

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "test.example.com",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus"
)]
struct WidgetSpec {
    region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    color: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
struct WidgetStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    attempts: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    conditions: Vec<Value>,
}

/// The server side of the test kind, written out so every schema feature under test is visible.
fn widget_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.test.example.com"},
        "spec": {
            "group": "test.example.com",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "shortNames": ["wd"], "listKind": "WidgetList"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["region"],
                            "x-kubernetes-validations": [
                                {"rule": "self.region == oldSelf.region", "message": "region is immutable; create a new Widget"}
                            ],
                            "properties": {
                                "region": {"type": "string", "pattern": "^[a-z]{2,}(-[a-z0-9]+)+$", "maxLength": 64},
                                "size": {"type": "integer", "minimum": 0, "maximum": 20, "default": 6},
                                "color": {"type": "string"}
                            }
                        },
                        "status": {
                            "type": "object",
                            "properties": {
                                "phase": {"type": "string", "enum": ["Pending", "Running", "Done"]},
                                "attempts": {"type": "integer", "minimum": 0},
                                "conditions": {
                                    "type": "array",
                                    "x-kubernetes-list-type": "map",
                                    "x-kubernetes-list-map-keys": ["type"],
                                    "items": {"type": "object", "required": ["type", "status"], "properties": {
                                        "type": {"type": "string"}, "status": {"type": "string"}, "reason": {"type": "string"}
                                    }}
                                }
                            }
                        }
                    }
                }}
            }]
        }
    }))
    .expect("test CRD is well-formed")
}

/// A cluster-scoped kind without a status subresource.
fn gadget_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.test.example.com"},
        "spec": {
            "group": "test.example.com",
            "names": {"kind": "Gadget", "plural": "gadgets", "singular": "gadget"},
            "scope": "Cluster",
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "status": {"type": "object", "properties": {"phase": {"type": "string"}}}
                }
            }}}]
        }
    }))
    .expect("test CRD is well-formed")
}

async fn start() -> KubeApiHandle {
    let config = KubeApiConfig {
        bookmark_interval: Duration::from_millis(200),
        ..KubeApiConfig::default()
    };
    KubeApi::start_with(vec![widget_crd(), gadget_crd()], config)
        .await
        .expect("sandbox API starts")
}

fn widgets(api: &KubeApiHandle) -> Api<Widget> {
    Api::namespaced(api.client().expect("client"), "images")
}

fn widget(name: &str, region: &str) -> Widget {
    Widget::new(
        name,
        WidgetSpec {
            region: region.into(),
            ..WidgetSpec::default()
        },
    )
}

fn api_error(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn status_value(err: kube::Error) -> Value {
    serde_json::to_value(api_error(err)).expect("status serializes")
}

fn rv(object: &impl Resource) -> u64 {
    object
        .meta()
        .resource_version
        .as_deref()
        .expect("resourceVersion")
        .parse()
        .expect("numeric resourceVersion")
}

#[tokio::test]
async fn create_get_list_and_delete_fill_server_metadata() {
    let api = start().await;
    let widgets = widgets(&api);
    let mut w = widget("a", "cn-hangzhou");
    w.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
    let created = widgets.create(&PostParams::default(), &w).await.unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(created.metadata.namespace.as_deref(), Some("images"));
    assert_eq!(created.spec.size, Some(6), "schema default applied");
    assert!(!created.managed_fields().is_empty());

    let mut generated = widget("", "cn-beijing");
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("gen-".into());
    let generated = widgets
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    assert!(
        generated.name_any().starts_with("gen-") && generated.name_any().len() == 9,
        "{}",
        generated.name_any()
    );
    assert!(
        rv(&generated) > rv(&created),
        "every write bumps the global resourceVersion"
    );

    let exists = api_error(
        widgets
            .create(&PostParams::default(), &w)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (exists.code, exists.reason.as_str()),
        (409, "AlreadyExists")
    );
    assert_eq!(
        exists.message,
        "widgets.test.example.com \"a\" already exists"
    );

    assert_eq!(widgets.get("a").await.unwrap().spec.region, "cn-hangzhou");
    let labelled = widgets
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(
        labelled
            .items
            .iter()
            .map(|w| w.name_any())
            .collect::<Vec<_>>(),
        vec!["a"]
    );
    let set_based = widgets
        .list(&ListParams::default().labels("app in (db,web),!missing"))
        .await
        .unwrap();
    assert_eq!(set_based.items.len(), 1);
    let by_name = widgets
        .list(&ListParams::default().fields(&format!("metadata.name={}", generated.name_any())))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    let all: Api<Widget> = Api::all(api.client().unwrap());
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );
    let paged = widgets.list(&ListParams::default().limit(1)).await.unwrap();
    assert_eq!(paged.items.len(), 1);
    let token = paged
        .metadata
        .continue_
        .clone()
        .expect("a continue token when more items remain");
    let rest = widgets
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_ne!(rest.items[0].name_any(), paged.items[0].name_any());

    widgets.delete("a", &DeleteParams::default()).await.unwrap();
    let missing = api_error(widgets.get("a").await.unwrap_err());
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(missing.message, "widgets.test.example.com \"a\" not found");
}

#[tokio::test]
async fn stale_update_and_stale_apply_get_409_conflict() {
    let api = start().await;
    let widgets = widgets(&api);
    let created = widgets
        .create(&PostParams::default(), &widget("a", "cn-hangzhou"))
        .await
        .unwrap();
    let mut fresh = created.clone();
    fresh.spec.color = Some("red".into());
    widgets
        .replace("a", &PostParams::default(), &fresh)
        .await
        .unwrap();

    let mut stale = created.clone();
    stale.spec.color = Some("blue".into());
    let conflict = status_value(
        widgets
            .replace("a", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!(conflict["code"], 409);
    assert_eq!(conflict["reason"], "Conflict");
    assert_eq!(
        conflict["message"],
        "Operation cannot be fulfilled on widgets.test.example.com \"a\": the object has been modified; please apply your changes to the latest version and try again"
    );

    let stale_apply = json!({"apiVersion": "test.example.com/v1", "kind": "Widget",
        "metadata": {"name": "a", "resourceVersion": created.resource_version()}, "spec": {"region": "cn-hangzhou", "color": "green"}});
    let err = api_error(
        widgets
            .patch(
                "a",
                &PatchParams::apply("tester"),
                &Patch::Apply(&stale_apply),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));

    let stale_merge = json!({"metadata": {"resourceVersion": created.resource_version()}, "spec": {"color": "green"}});
    let err = api_error(
        widgets
            .patch("a", &PatchParams::default(), &Patch::Merge(&stale_merge))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 409);

    let mut unconditional = widgets.get("a").await.unwrap();
    unconditional.metadata.resource_version = None;
    let err = api_error(
        widgets
            .replace("a", &PostParams::default(), &unconditional)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        err.code, 422,
        "custom resources refuse updates without resourceVersion: {}",
        err.message
    );
}

#[tokio::test]
async fn uid_preconditions_follow_the_real_strategies() {
    let api = start().await;
    let widgets = widgets(&api);
    let first = widgets
        .create(&PostParams::default(), &widget("a", "cn-hangzhou"))
        .await
        .unwrap();
    widgets.delete("a", &DeleteParams::default()).await.unwrap();
    let second = widgets
        .create(&PostParams::default(), &widget("a", "cn-hangzhou"))
        .await
        .unwrap();
    assert_ne!(first.uid(), second.uid());

    // Main resource: metadata.uid is immutable, so a stale uid is refused.
    let stale_uid = json!({"metadata": {"uid": first.uid()}, "spec": {"color": "red"}});
    let status = status_value(
        widgets
            .patch("a", &PatchParams::default(), &Patch::Merge(&stale_uid))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        status["message"],
        format!(
            "Widget.test.example.com \"a\" is invalid: metadata.uid: Invalid value: \"{}\": field is immutable",
            first.uid().unwrap()
        )
    );

    // /status: the status strategy copies the stored object over everything but .status, so
    // a uid is ignored there; only a resourceVersion protects a re-created object.
    let by_uid = json!({"apiVersion": "test.example.com/v1", "kind": "Widget",
        "metadata": {"name": "a", "uid": first.uid()}, "status": {"phase": "Running"}});
    widgets
        .patch_status("a", &PatchParams::apply("ctl"), &Patch::Apply(&by_uid))
        .await
        .expect("uid is not checked on /status");
    let by_rv = json!({"apiVersion": "test.example.com/v1", "kind": "Widget",
        "metadata": {"name": "a", "resourceVersion": first.resource_version()}, "status": {"phase": "Done"}});
    let err = api_error(
        widgets
            .patch_status("a", &PatchParams::apply("ctl"), &Patch::Apply(&by_rv))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    widgets.delete("a", &DeleteParams::default()).await.unwrap();
    let err = api_error(
        widgets
            .patch_status("a", &PatchParams::apply("ctl"), &Patch::Apply(&by_uid))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 404, "subresources never create");
}

#[tokio::test]
async fn generation_and_status_subresource_rules() {
    let api = start().await;
    let widgets = widgets(&api);
    let created = widgets
        .create(&PostParams::default(), &widget("a", "cn-hangzhou"))
        .await
        .unwrap();

    // Status sent on create or to the main resource is ignored when the subresource is on.
    let mut with_status = widget("b", "cn-hangzhou");
    with_status.status = Some(WidgetStatus {
        phase: Some("Done".into()),
        ..Default::default()
    });
    assert_eq!(
        widgets
            .create(&PostParams::default(), &with_status)
            .await
            .unwrap()
            .status,
        None
    );

    let labels = json!({"metadata": {"labels": {"x": "1"}}});
    let labelled = widgets
        .patch("a", &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .unwrap();
    assert_eq!(
        labelled.metadata.generation,
        Some(1),
        "metadata changes keep the generation"
    );
    assert!(rv(&labelled) > rv(&created));

    let status =
        json!({"status": {"phase": "Running", "attempts": 1}, "spec": {"color": "ignored"}});
    let after_status = widgets
        .patch_status("a", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    assert_eq!(
        after_status.metadata.generation,
        Some(1),
        "status writes never bump generation"
    );
    assert_eq!(
        after_status.status.as_ref().unwrap().phase.as_deref(),
        Some("Running")
    );
    assert_eq!(
        after_status.spec.color, None,
        "a status write changes only .status"
    );

    let main = json!({"spec": {"color": "red"}, "status": {"phase": "Done"}});
    let after_main = widgets
        .patch("a", &PatchParams::default(), &Patch::Merge(&main))
        .await
        .unwrap();
    assert_eq!(
        after_main.metadata.generation,
        Some(2),
        "spec changes bump generation"
    );
    assert_eq!(
        after_main.status.as_ref().unwrap().phase.as_deref(),
        Some("Running"),
        "main writes keep the old status"
    );

    // A write that changes nothing is not persisted: same resourceVersion, no event.
    let same = widgets
        .patch("a", &PatchParams::default(), &Patch::Merge(&main))
        .await
        .unwrap();
    assert_eq!(rv(&same), rv(&after_main));

    // PUT to /status with a stale resourceVersion conflicts too.
    let mut stale = after_status.clone();
    stale.status = Some(WidgetStatus {
        phase: Some("Done".into()),
        ..Default::default()
    });
    let err = api_error(
        widgets
            .replace_status("a", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 409);

    // Without a status subresource, status is ordinary content and bumps generation.
    let gadgets: Api<kube::api::DynamicObject> = Api::all_with(
        api.client().unwrap(),
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("test.example.com", "v1", "Gadget"),
            "gadgets",
        ),
    );
    let g: kube::api::DynamicObject = serde_json::from_value(
        json!({"apiVersion": "test.example.com/v1", "kind": "Gadget",
        "metadata": {"name": "g"}, "spec": {"anything": {"goes": 1}}, "status": {"phase": "Kept"}}),
    )
    .unwrap();
    let g = gadgets.create(&PostParams::default(), &g).await.unwrap();
    assert_eq!(g.data["status"]["phase"], "Kept");
    assert_eq!(
        g.data["spec"]["anything"]["goes"], 1,
        "preserve-unknown-fields keeps arbitrary content"
    );
    let g = gadgets
        .patch(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Changed"}})),
        )
        .await
        .unwrap();
    assert_eq!(g.metadata.generation, Some(2));
    let err = api_error(
        gadgets
            .patch_status("g", &PatchParams::default(), &Patch::Merge(json!({})))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 404, "no /status without the subresource");
}

#[tokio::test]
async fn merge_patch_merges_maps_and_null_deletes() {
    let api = start().await;
    let widgets = widgets(&api);
    let mut w = widget("a", "cn-hangzhou");
    w.spec.color = Some("red".into());
    w.metadata.labels = Some(
        [
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string()),
        ]
        .into(),
    );
    widgets.create(&PostParams::default(), &w).await.unwrap();
    let patch =
        json!({"metadata": {"labels": {"b": null, "c": "3"}}, "spec": {"color": null, "size": 3}});
    let patched = widgets
        .patch("a", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(patched.labels().get("a").map(String::as_str), Some("1"));
    assert_eq!(patched.labels().get("b"), None);
    assert_eq!(patched.labels().get("c").map(String::as_str), Some("3"));
    assert_eq!(patched.spec.color, None);
    assert_eq!(patched.spec.size, Some(3));

    let json_patch: json_patch::Patch =
        serde_json::from_value(json!([{"op": "replace", "path": "/spec/size", "value": 4}]))
            .unwrap();
    let patched = widgets
        .patch("a", &PatchParams::default(), &Patch::<()>::Json(json_patch))
        .await
        .unwrap();
    assert_eq!(patched.spec.size, Some(4));
}

fn manager_fields(object: &impl Resource, manager: &str, subresource: Option<&str>) -> Value {
    let entry = object
        .meta()
        .managed_fields
        .iter()
        .flatten()
        .find(|e| e.manager.as_deref() == Some(manager) && e.subresource.as_deref() == subresource)
        .unwrap_or_else(|| panic!("no managedFields entry for {manager}"));
    serde_json::to_value(&entry.fields_v1).unwrap()
}

#[tokio::test]
async fn server_side_apply_tracks_owners_removes_dropped_fields_and_detects_conflicts() {
    let api = start().await;
    let widgets = widgets(&api);
    let first = json!({"apiVersion": "test.example.com/v1", "kind": "Widget",
        "metadata": {"name": "a", "labels": {"owned": "yes"}}, "spec": {"region": "cn-hangzhou", "color": "red"}});
    let created = widgets
        .patch("a", &PatchParams::apply("alice"), &Patch::Apply(&first))
        .await
        .unwrap();
    assert_eq!(created.spec.color.as_deref(), Some("red"));
    assert_eq!(
        manager_fields(&created, "alice", None),
        json!({"f:metadata": {"f:labels": {"f:owned": {}}}, "f:spec": {"f:color": {}, "f:region": {}}})
    );

    // Alice stops applying the label and the colour: both go.
    let second = json!({"apiVersion": "test.example.com/v1", "kind": "Widget", "metadata": {"name": "a"}, "spec": {"region": "cn-hangzhou"}});
    let applied = widgets
        .patch("a", &PatchParams::apply("alice"), &Patch::Apply(&second))
        .await
        .unwrap();
    assert_eq!(applied.spec.color, None);
    assert!(applied.labels().is_empty());

    // Bob sets a field Alice does not own: fine. Then he tries to change Alice's region: conflict.
    let bob = json!({"apiVersion": "test.example.com/v1", "kind": "Widget", "metadata": {"name": "a"}, "spec": {"color": "blue"}});
    widgets
        .patch("a", &PatchParams::apply("bob"), &Patch::Apply(&bob))
        .await
        .unwrap();
    let bob_region = json!({"apiVersion": "test.example.com/v1", "kind": "Widget", "metadata": {"name": "a"}, "spec": {"region": "cn-beijing", "color": "blue"}});
    let conflict = status_value(
        widgets
            .patch("a", &PatchParams::apply("bob"), &Patch::Apply(&bob_region))
            .await
            .unwrap_err(),
    );
    assert_eq!(conflict["code"], 409);
    assert_eq!(
        conflict["message"],
        "Apply failed with 1 conflict: conflict with \"alice\": .spec.region"
    );
    assert_eq!(
        conflict["details"]["causes"][0]["reason"],
        "FieldManagerConflict"
    );

    // Alice removing the colour does not remove Bob's field.
    let alice_again = widgets
        .patch("a", &PatchParams::apply("alice"), &Patch::Apply(&second))
        .await
        .unwrap();
    assert_eq!(alice_again.spec.color.as_deref(), Some("blue"));

    // Forced: ownership moves to Bob; Alice's later apply without region does not delete it.
    let bob_size = json!({"apiVersion": "test.example.com/v1", "kind": "Widget", "metadata": {"name": "a"}, "spec": {"size": 9, "color": "blue"}});
    widgets
        .patch("a", &PatchParams::apply("bob"), &Patch::Apply(&bob_size))
        .await
        .unwrap();
    let alice_size = json!({"apiVersion": "test.example.com/v1", "kind": "Widget", "metadata": {"name": "a"}, "spec": {"region": "cn-hangzhou", "size": 1}});
    assert_eq!(
        api_error(
            widgets
                .patch(
                    "a",
                    &PatchParams::apply("alice"),
                    &Patch::Apply(&alice_size)
                )
                .await
                .unwrap_err()
        )
        .code,
        409
    );
    let forced = widgets
        .patch(
            "a",
            &PatchParams::apply("alice").force(),
            &Patch::Apply(&alice_size),
        )
        .await
        .unwrap();
    assert_eq!(forced.spec.size, Some(1));
    assert_eq!(
        manager_fields(&forced, "bob", None),
        json!({"f:spec": {"f:color": {}}})
    );

    let err = api_error(
        widgets
            .patch("a", &PatchParams::default(), &Patch::Apply(&second))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        err.code, 400,
        "apply needs a field manager: {}",
        err.message
    );
}

#[tokio::test]
async fn status_apply_merges_conditions_by_type_across_managers() {
    let api = start().await;
    let widgets = widgets(&api);
    widgets
        .create(&PostParams::default(), &widget("a", "cn-hangzhou"))
        .await
        .unwrap();
    let ctl = json!({"apiVersion": "test.example.com/v1", "kind": "Widget", "metadata": {"name": "a"},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}, {"type": "Reconciling", "status": "True"}]}});
    let a = widgets
        .patch_status("a", &PatchParams::apply("controller"), &Patch::Apply(&ctl))
        .await
        .unwrap();
    assert_eq!(a.metadata.generation, Some(1));
    let other = json!({"apiVersion": "test.example.com/v1", "kind": "Widget", "metadata": {"name": "a"},
        "status": {"conditions": [{"type": "Audited", "status": "True"}]}});
    widgets
        .patch_status("a", &PatchParams::apply("auditor"), &Patch::Apply(&other))
        .await
        .unwrap();
    // The controller drops Reconciling and flips Ready; the auditor's item survives.
    let done = json!({"apiVersion": "test.example.com/v1", "kind": "Widget", "metadata": {"name": "a"},
        "status": {"phase": "Done", "conditions": [{"type": "Ready", "status": "True"}]}});
    let b = widgets
        .patch_status("a", &PatchParams::apply("controller"), &Patch::Apply(&done))
        .await
        .unwrap();
    let types: Vec<(String, String)> = b
        .status
        .clone()
        .unwrap()
        .conditions
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap().into(),
                c["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        types,
        vec![
            ("Ready".into(), "True".into()),
            ("Audited".into(), "True".into())
        ]
    );
    assert_eq!(
        manager_fields(&b, "controller", Some("status")),
        json!({"f:status": {"f:phase": {}, "f:conditions": {"k:{\"type\":\"Ready\"}": {".": {}, "f:type": {}, "f:status": {}}}}})
    );
    // Applying exactly the same status again is a no-op.
    let c = widgets
        .patch_status("a", &PatchParams::apply("controller"), &Patch::Apply(&done))
        .await
        .unwrap();
    assert_eq!(rv(&c), rv(&b));
}

/// (reason, field, message) of one `details.causes` entry.
type Cause = (&'static str, &'static str, &'static str);

#[tokio::test]
async fn admission_validates_against_the_schema_and_cel_rules() {
    let api = start().await;
    let widgets = widgets(&api);
    let cases: Vec<(Value, Vec<Cause>, &str)> = vec![
        (
            json!({"region": "BAD"}),
            vec![(
                "FieldValueInvalid",
                "spec.region",
                "Invalid value: \"BAD\": spec.region in body should match '^[a-z]{2,}(-[a-z0-9]+)+$'",
            )],
            "Widget.test.example.com \"v\" is invalid: spec.region: Invalid value: \"BAD\": spec.region in body should match '^[a-z]{2,}(-[a-z0-9]+)+$'",
        ),
        (
            json!({"region": format!("cn-{}", "a".repeat(70))}),
            vec![(
                "FieldValueTooLong",
                "spec.region",
                "Too long: may not be more than 64 bytes",
            )],
            "Widget.test.example.com \"v\" is invalid: spec.region: Too long: may not be more than 64 bytes",
        ),
        (
            json!({"region": "cn-hangzhou", "size": 21}),
            vec![(
                "FieldValueInvalid",
                "spec.size",
                "Invalid value: 21: spec.size in body should be less than or equal to 20",
            )],
            "Widget.test.example.com \"v\" is invalid: spec.size: Invalid value: 21: spec.size in body should be less than or equal to 20",
        ),
        (
            json!({"size": -1}),
            vec![
                ("FieldValueRequired", "spec.region", "Required value"),
                (
                    "FieldValueInvalid",
                    "spec.size",
                    "Invalid value: -1: spec.size in body should be greater than or equal to 0",
                ),
            ],
            "Widget.test.example.com \"v\" is invalid: [spec.region: Required value, spec.size: Invalid value: -1: spec.size in body should be greater than or equal to 0]",
        ),
    ];
    for (spec, causes, message) in cases {
        // Sent raw: some cases would not even deserialize into the typed spec.
        let raw = json!({"apiVersion": "test.example.com/v1", "kind": "Widget", "metadata": {"name": "v"}, "spec": spec});
        let status = status_value(
            widgets
                .patch("v", &PatchParams::apply("tester"), &Patch::Apply(&raw))
                .await
                .unwrap_err(),
        );
        assert_eq!(status["code"], 422, "{status}");
        assert_eq!(status["reason"], "Invalid");
        assert_eq!(status["message"], message);
        let got: Vec<(String, String, String)> = status["details"]["causes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["reason"].as_str().unwrap().into(),
                    c["field"].as_str().unwrap().into(),
                    c["message"].as_str().unwrap().into(),
                )
            })
            .collect();
        let want: Vec<(String, String, String)> = causes
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    // Unknown fields are pruned, not refused.
    let raw = json!({"apiVersion": "test.example.com/v1", "kind": "Widget", "metadata": {"name": "p"},
        "spec": {"region": "cn-hangzhou", "unknown": 1}, "extra": true});
    let created: Value = serde_json::to_value(
        widgets
            .patch("p", &PatchParams::apply("tester"), &Patch::Apply(&raw))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(created["spec"], json!({"region": "cn-hangzhou", "size": 6}));
    assert!(created.get("extra").is_none());

    // CEL transition rule with oldSelf.
    let change_region = json!({"spec": {"region": "cn-beijing"}});
    let status = status_value(
        widgets
            .patch("p", &PatchParams::default(), &Patch::Merge(&change_region))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        status["message"],
        "Widget.test.example.com \"p\" is invalid: spec: Invalid value: \"object\": region is immutable; create a new Widget"
    );
    assert_eq!(
        status["details"]["causes"][0],
        json!({"reason": "FieldValueInvalid", "field": "spec", "message": "Invalid value: \"object\": region is immutable; create a new Widget"})
    );

    // Status writes are validated against the status schema.
    let bad_status = json!({"status": {"phase": "Exploded"}});
    let status = status_value(
        widgets
            .patch_status("p", &PatchParams::default(), &Patch::Merge(&bad_status))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        status["details"]["causes"][0]["reason"],
        "FieldValueNotSupported"
    );
    assert_eq!(
        status["details"]["causes"][0]["message"],
        "Unsupported value: \"Exploded\": supported values: \"Pending\", \"Running\", \"Done\""
    );

    // Object names are validated too.
    let err = api_error(
        widgets
            .create(&PostParams::default(), &widget("Bad_Name", "cn-hangzhou"))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert!(err.message.starts_with("Widget.test.example.com \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"), "{}", err.message);
}

async fn next_event<S>(events: &mut S) -> watcher::Event<Widget>
where
    S: futures::Stream<Item = Result<watcher::Event<Widget>, watcher::Error>> + Unpin,
{
    tokio::time::timeout(PATIENCE, events.next())
        .await
        .expect("watch event in time")
        .expect("stream open")
        .expect("no watch error")
}

/// Skips events until one satisfies `pred`.
async fn wait_for<S>(
    events: &mut S,
    pred: impl Fn(&watcher::Event<Widget>) -> bool,
) -> watcher::Event<Widget>
where
    S: futures::Stream<Item = Result<watcher::Event<Widget>, watcher::Error>> + Unpin,
{
    tokio::time::timeout(PATIENCE, async {
        loop {
            match events.next().await {
                Some(Ok(event)) if pred(&event) => return event,
                Some(_) => continue,
                None => panic!("watch stream ended"),
            }
        }
    })
    .await
    .expect("expected watch event in time")
}

fn applied(name: &str) -> impl Fn(&watcher::Event<Widget>) -> bool + '_ {
    move |e| matches!(e, watcher::Event::Apply(w) if w.name_any() == name)
}

#[tokio::test]
async fn kube_runtime_watcher_sees_changes_and_recovers_from_drops_and_410() {
    let api = start().await;
    let widgets = widgets(&api);
    widgets
        .create(&PostParams::default(), &widget("before", "cn-hangzhou"))
        .await
        .unwrap();
    let mut events = watcher(widgets.clone(), watcher::Config::default()).boxed();
    assert!(matches!(
        next_event(&mut events).await,
        watcher::Event::Init
    ));
    assert!(
        matches!(next_event(&mut events).await, watcher::Event::InitApply(w) if w.name_any() == "before")
    );
    assert!(matches!(
        next_event(&mut events).await,
        watcher::Event::InitDone
    ));

    widgets
        .create(&PostParams::default(), &widget("a", "cn-hangzhou"))
        .await
        .unwrap();
    wait_for(&mut events, applied("a")).await;
    widgets
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"color": "red"}})),
        )
        .await
        .unwrap();
    wait_for(
        &mut events,
        |e| matches!(e, watcher::Event::Apply(w) if w.spec.color.as_deref() == Some("red")),
    )
    .await;
    widgets.delete("a", &DeleteParams::default()).await.unwrap();
    wait_for(
        &mut events,
        |e| matches!(e, watcher::Event::Delete(w) if w.name_any() == "a"),
    )
    .await;

    // Dropped watch: the watcher re-watches from its resourceVersion, no re-list needed.
    let lists = api.count(Verb::List, "widgets", "");
    let watches = api.count(Verb::Watch, "widgets", "");
    api.drop_watches();
    widgets
        .create(&PostParams::default(), &widget("b", "cn-hangzhou"))
        .await
        .unwrap();
    wait_for(&mut events, applied("b")).await;
    assert!(api.count(Verb::Watch, "widgets", "") > watches);
    assert_eq!(
        api.count(Verb::List, "widgets", ""),
        lists,
        "a resumable watch does not re-list"
    );

    // Compacted history: the resumed watch gets 410 and the watcher re-lists.
    api.expire_history();
    api.drop_watches();
    widgets
        .create(&PostParams::default(), &widget("c", "cn-hangzhou"))
        .await
        .unwrap();
    wait_for(
        &mut events,
        |e| matches!(e, watcher::Event::InitApply(w) if w.name_any() == "c"),
    )
    .await;
    assert!(
        api.count(Verb::List, "widgets", "") > lists,
        "410 Gone forces a re-list"
    );
    widgets
        .create(&PostParams::default(), &widget("d", "cn-hangzhou"))
        .await
        .unwrap();
    wait_for(&mut events, applied("d")).await;
}

/// A lagging watch (`set_watch_lag`) delivers each event no sooner than the lag after
/// its write, in order, on a watch that was already open.
#[tokio::test]
async fn a_lagging_watch_delivers_late_and_in_order() {
    let api = start().await;
    let widgets = widgets(&api);
    let mut events = watcher(widgets.clone(), watcher::Config::default()).boxed();
    wait_for(&mut events, |e| matches!(e, watcher::Event::InitDone)).await;
    let lag = Duration::from_millis(700);
    api.set_watch_lag(Some(lag));
    let before = tokio::time::Instant::now();
    for name in ["first", "second"] {
        widgets
            .create(&PostParams::default(), &widget(name, "cn-hangzhou"))
            .await
            .unwrap();
    }
    let created = |e: &watcher::Event<Widget>| matches!(e, watcher::Event::Apply(_));
    let first = wait_for(&mut events, created).await;
    assert!(
        before.elapsed() >= lag,
        "delivered after {:?}",
        before.elapsed()
    );
    let second = wait_for(&mut events, created).await;
    let names: Vec<String> = [first, second]
        .iter()
        .map(|e| match e {
            watcher::Event::Apply(w) => w.name_any(),
            _ => unreachable!("only Apply events are waited for"),
        })
        .collect();
    assert_eq!(names, ["first", "second"]);
}

#[tokio::test]
async fn raw_watch_delivers_bookmarks_410_and_selector_transitions() {
    let api = start().await;
    let widgets = widgets(&api);
    let a = widgets
        .create(&PostParams::default(), &widget("a", "cn-hangzhou"))
        .await
        .unwrap();

    let params = WatchParams::default().labels("team=x");
    let mut stream = widgets
        .watch(&params, &a.resource_version().unwrap())
        .await
        .unwrap()
        .boxed();
    let mut labelled = json!({"metadata": {"labels": {"team": "x"}}});
    widgets
        .patch("a", &PatchParams::default(), &Patch::Merge(&labelled))
        .await
        .unwrap();
    labelled["metadata"]["labels"]["team"] = json!("y");
    widgets
        .patch("a", &PatchParams::default(), &Patch::Merge(&labelled))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut bookmark_rv = None;
    tokio::time::timeout(PATIENCE, async {
        while let Some(event) = stream.try_next().await.unwrap() {
            match event {
                WatchEvent::Added(w) => seen.push(format!("ADDED {}", w.name_any())),
                WatchEvent::Modified(w) => seen.push(format!("MODIFIED {}", w.name_any())),
                WatchEvent::Deleted(w) => seen.push(format!("DELETED {}", w.name_any())),
                WatchEvent::Bookmark(b) => {
                    bookmark_rv = Some(b.metadata.resource_version.clone());
                    if seen.len() >= 2 {
                        break;
                    }
                }
                WatchEvent::Error(e) => panic!("unexpected watch error {e:?}"),
            }
        }
    })
    .await
    .expect("events and a bookmark in time");
    assert_eq!(
        seen,
        vec!["ADDED a", "DELETED a"],
        "label selector transitions appear as ADDED / DELETED"
    );
    assert_eq!(bookmark_rv, Some(api.resource_version().to_string()));

    api.expire_history();
    let mut gone = widgets
        .watch(&WatchParams::default(), &a.resource_version().unwrap())
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(PATIENCE, gone.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        Some(WatchEvent::Error(e)) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410 Gone, got {other:?}"),
    }

    // Streaming list: initial events end with the annotated bookmark.
    let mut initial = widgets
        .watch(&WatchParams::default().initial_events(), "")
        .await
        .unwrap()
        .boxed();
    let first = tokio::time::timeout(PATIENCE, initial.try_next())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(first, Some(WatchEvent::Added(w)) if w.name_any() == "a"));
    match tokio::time::timeout(PATIENCE, initial.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        Some(WatchEvent::Bookmark(b)) => {
            assert_eq!(
                b.metadata
                    .annotations
                    .get("k8s.io/initial-events-end")
                    .map(String::as_str),
                Some("true")
            )
        }
        other => panic!("expected the initial-events-end bookmark, got {other:?}"),
    }
    // The streaming-list strategy of kube-runtime works end to end as well.
    let mut streaming = watcher(
        widgets.clone(),
        watcher::Config::default().streaming_lists(),
    )
    .boxed();
    wait_for(&mut streaming, |e| matches!(e, watcher::Event::InitDone)).await;
}

#[tokio::test]
async fn injected_faults_hit_only_matching_requests_and_are_counted() {
    let api = start().await;
    let widgets = widgets(&api);
    widgets
        .create(&PostParams::default(), &widget("a", "cn-hangzhou"))
        .await
        .unwrap();

    api.inject_fault(
        Fault::conflict(1)
            .verb(Verb::Patch)
            .resource("widgets")
            .subresource("status"),
    );
    let status = json!({"status": {"phase": "Running"}});
    let main = json!({"spec": {"color": "red"}});
    widgets
        .patch("a", &PatchParams::default(), &Patch::Merge(&main))
        .await
        .expect("main resource unaffected");
    let err = api_error(
        widgets
            .patch_status("a", &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    widgets
        .patch_status("a", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("fault used up");

    api.inject_fault(Fault::internal_error(2));
    for _ in 0..2 {
        let err = api_error(
            widgets
                .create(&PostParams::default(), &widget("b", "cn-hangzhou"))
                .await
                .unwrap_err(),
        );
        assert_eq!((err.code, err.reason.as_str()), (500, "InternalError"));
    }
    widgets
        .get("a")
        .await
        .expect("reads are not affected by write faults");
    widgets
        .create(&PostParams::default(), &widget("b", "cn-hangzhou"))
        .await
        .unwrap();

    api.inject_fault(Fault::internal_error(1).verb(Verb::List));
    assert_eq!(
        api_error(widgets.list(&ListParams::default()).await.unwrap_err()).code,
        500
    );
    api.inject_fault(Fault::conflict(5));
    api.clear_faults();
    widgets.delete("b", &DeleteParams::default()).await.unwrap();

    assert_eq!(api.count(Verb::Patch, "widgets", "status"), 2);
    assert_eq!(api.count(Verb::Patch, "widgets", ""), 1);
    assert_eq!(api.count(Verb::Create, "widgets", ""), 4);
    assert_eq!(api.count(Verb::Get, "widgets", ""), 1);
    assert_eq!(
        api.counters()[&(Verb::Delete, "widgets".to_string(), String::new())],
        1
    );
    let failed: Vec<u16> = api
        .requests()
        .iter()
        .filter(|r| r.code >= 400)
        .map(|r| r.code)
        .collect();
    assert_eq!(failed, vec![409, 500, 500, 500]);

    api.set_latency(Some(Duration::from_millis(20)));
    widgets.get("a").await.expect("slow but fine");
}

#[tokio::test]
async fn interval_faults_are_logged_as_injected_and_writes_name_their_resource_version() {
    let api = start().await;
    let widgets = widgets(&api);
    let created = widgets
        .create(&PostParams::default(), &widget("a", "cn-hangzhou"))
        .await
        .unwrap();
    api.inject_fault(
        Fault::conflict(u32::MAX)
            .every(3)
            .verb(Verb::Patch)
            .subresource("status"),
    );
    let mut codes = Vec::new();
    let mut versions = Vec::new();
    for attempts in 1..=6 {
        let status = json!({"status": {"attempts": attempts}});
        match widgets
            .patch_status("a", &PatchParams::default(), &Patch::Merge(&status))
            .await
        {
            Ok(w) => {
                codes.push(200);
                versions.push(w.resource_version());
            }
            Err(e) => codes.push(api_error(e).code),
        }
    }
    assert_eq!(codes, [200, 200, 409, 200, 200, 409]);

    let patches: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.verb == Verb::Patch)
        .collect();
    let injected: Vec<_> = patches.iter().map(|r| r.injected).collect();
    let c = Some(FaultKind::Conflict);
    assert_eq!(injected, [None, None, c, None, None, c]);
    let logged: Vec<_> = patches
        .iter()
        .filter(|r| r.code == 200)
        .map(|r| r.resource_version.clone())
        .collect();
    assert_eq!(logged, versions, "each write names the version it produced");
    assert!(
        patches
            .iter()
            .filter(|r| r.code == 409)
            .all(|r| r.resource_version.is_none())
    );
    let create = api
        .requests()
        .into_iter()
        .find(|r| r.verb == Verb::Create)
        .expect("the create is logged");
    assert_eq!(create.resource_version, created.resource_version());
    assert!(
        patches.windows(2).all(|w| w[0].time <= w[1].time),
        "log times follow the order of answers"
    );
}

#[tokio::test]
async fn secrets_fold_string_data_and_leases_round_trip() {
    let api = start().await;
    let client = api.client().unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "images");
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "creds"},
        "stringData": {"accessKeyId": "id", "accessKeySecret": "s3cret"}}))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let got = secrets.get("creds").await.unwrap();
    assert_eq!(got.type_.as_deref(), Some("Opaque"));
    assert_eq!(got.data.as_ref().unwrap()["accessKeySecret"].0, b"s3cret");
    assert!(got.string_data.is_none());
    let patched = secrets
        .patch(
            "creds",
            &PatchParams::default(),
            &Patch::Strategic(json!({"stringData": {"securityToken": "t"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data.as_ref().unwrap().len(), 3);

    let leases: Api<Lease> = Api::namespaced(client, "images");
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "copyimage-canceller"},
        "spec": {"holderIdentity": "pod-a", "leaseDurationSeconds": 15}}))
    .unwrap();
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    let mut taken = created.clone();
    taken.spec.as_mut().unwrap().holder_identity = Some("pod-b".into());
    leases
        .replace("copyimage-canceller", &PostParams::default(), &taken)
        .await
        .unwrap();
    let err = api_error(
        leases
            .replace("copyimage-canceller", &PostParams::default(), &taken)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        err.code, 409,
        "lease takeover races are decided by resourceVersion"
    );
}

#[tokio::test]
async fn recorder_publishes_and_aggregates_events() {
    let api = start().await;
    let client = api.client().unwrap();
    let widgets = widgets(&api);
    let w = widgets
        .create(&PostParams::default(), &widget("a", "cn-hangzhou"))
        .await
        .unwrap();
    let reference: ObjectReference = w.object_ref(&());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "copyimage-canceller".into(),
            instance: None,
        },
    );
    let event = Event {
        type_: EventType::Normal,
        reason: "Cancelled".into(),
        note: Some("request ID 1".into()),
        action: "CancelCopyImage".into(),
        secondary: None,
    };
    recorder.publish(&event, &reference).await.unwrap();
    recorder.publish(&event, &reference).await.unwrap();
    let events: Api<K8sEvent> = Api::namespaced(client, "images");
    let listed = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        listed.items.len(),
        1,
        "the repeat is aggregated into the same Event"
    );
    let e = &listed.items[0];
    assert_eq!(e.reason.as_deref(), Some("Cancelled"));
    assert_eq!(e.regarding.as_ref().unwrap().name.as_deref(), Some("a"));
    assert_eq!(e.series.as_ref().unwrap().count, 2);
    assert_eq!(api.count(Verb::Create, "events", ""), 1);
    assert_eq!(api.count(Verb::Patch, "events", ""), 1);

    // The same Event through core/v1, as `kubectl get events` and `kubectl describe` read it.
    let core: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(api.client().unwrap(), "images");
    let selector = format!(
        "involvedObject.name=a,involvedObject.uid={}",
        w.uid().unwrap()
    );
    let listed = core
        .list(&ListParams::default().fields(&selector))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].message.as_deref(), Some("request ID 1"));
    assert_eq!(
        listed.items[0].reporting_component.as_deref(),
        Some("copyimage-canceller")
    );
    assert_eq!(listed.items[0].involved_object.name.as_deref(), Some("a"));
    assert!(
        core.list(&ListParams::default().fields("involvedObject.name=other"))
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn kubeconfig_and_discovery_work_for_kube_clients() {
    let api = start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    api.write_kubeconfig(&path).unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(config.default_namespace, "default");
    let client = kube::Client::try_from(config).unwrap();
    let defaults: Api<Widget> = Api::default_namespaced(client.clone());
    defaults
        .create(&PostParams::default(), &widget("a", "cn-hangzhou"))
        .await
        .unwrap();
    assert_eq!(
        defaults
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    let version = client.apiserver_version().await.unwrap();
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "33")
    );
    let discovery = kube::Discovery::new(client).run().await.unwrap();
    let (resource, caps) = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .find(|(r, _)| r.kind == "Widget")
        .expect("the CRD is discoverable");
    assert_eq!(
        (resource.group.as_str(), resource.plural.as_str()),
        ("test.example.com", "widgets")
    );
    assert!(caps.subresources.iter().any(|(s, _)| s.plural == "status"));
    assert!(
        discovery
            .groups()
            .any(|g| g.name() == "coordination.k8s.io")
    );
    assert!(discovery.groups().any(|g| g.name() == "events.k8s.io"));
}

#[tokio::test]
async fn finalizers_delay_deletion_until_removed() {
    let api = start().await;
    let widgets = widgets(&api);
    let mut w = widget("a", "cn-hangzhou");
    w.metadata.finalizers = Some(vec!["test/hold".into()]);
    widgets.create(&PostParams::default(), &w).await.unwrap();
    widgets.delete("a", &DeleteParams::default()).await.unwrap();
    let pending = widgets.get("a").await.unwrap();
    assert!(pending.metadata.deletion_timestamp.is_some());
    widgets
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    assert_eq!(api_error(widgets.get("a").await.unwrap_err()).code, 404);
}

mod project_crd {
    //! The sandbox hosting the product's own CRD, as the controller and the demo use it.

    use super::*;
    use copyimage_canceller::resource::{
        CopyImageCancellation, CopyImageCancellationSpec, SPEC_IMMUTABLE_MESSAGE,
    };
    use kube::CustomResourceExt;

    async fn start_project() -> KubeApiHandle {
        let config = KubeApiConfig {
            namespace: "images".into(),
            ..KubeApiConfig::default()
        };
        KubeApi::start_with(vec![CopyImageCancellation::crd()], config)
            .await
            .expect("sandbox API starts")
    }

    fn cic(name: &str, region: &str) -> CopyImageCancellation {
        CopyImageCancellation::new(
            name,
            CopyImageCancellationSpec {
                region_id: region.into(),
                image_id: "m-bp1caf3yicx5jlfl".into(),
                credentials_secret_ref: None,
                backoff_limit: 6,
                active_deadline_seconds: None,
            },
        )
    }

    #[tokio::test]
    async fn admission_messages_match_the_real_api_server() {
        let api = start_project().await;
        let cics: Api<CopyImageCancellation> = Api::default_namespaced(api.client().unwrap());
        let status = status_value(
            cics.create(&PostParams::default(), &cic("x", "BAD"))
                .await
                .unwrap_err(),
        );
        assert_eq!(
            status["message"],
            "CopyImageCancellation.ecs.alibabacloud.com \"x\" is invalid: spec.regionId: Invalid value: \"BAD\": spec.regionId in body should match '^[a-z]{2,}(-[a-z0-9]+)+$'"
        );
        assert_eq!(
            status["details"]["causes"],
            json!([{"reason": "FieldValueInvalid", "field": "spec.regionId",
                "message": "Invalid value: \"BAD\": spec.regionId in body should match '^[a-z]{2,}(-[a-z0-9]+)+$'"}])
        );
        let mut too_many = cic("x", "cn-hangzhou");
        too_many.spec.backoff_limit = 21;
        let status = status_value(
            cics.create(&PostParams::default(), &too_many)
                .await
                .unwrap_err(),
        );
        assert_eq!(status["details"]["causes"][0]["field"], "spec.backoffLimit");

        cics.create(&PostParams::default(), &cic("x", "cn-hangzhou"))
            .await
            .unwrap();
        let change = json!({"spec": {"imageId": "m-other"}});
        let status = status_value(
            cics.patch("x", &PatchParams::default(), &Patch::Merge(&change))
                .await
                .unwrap_err(),
        );
        assert_eq!(
            status["message"],
            format!(
                "CopyImageCancellation.ecs.alibabacloud.com \"x\" is invalid: spec: Invalid value: \"object\": {SPEC_IMMUTABLE_MESSAGE}"
            )
        );

        // A kstatus-style status passes the status schema (conditions, date-times, enums).
        let applied = json!({"apiVersion": "ecs.alibabacloud.com/v1alpha1", "kind": "CopyImageCancellation", "metadata": {"name": "x"},
        "status": {"phase": "Running", "attempts": 0, "observedGeneration": 1, "startTime": "2026-01-01T00:00:00Z",
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "AwaitingCredentials", "message": "waiting", "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1},
                {"type": "Reconciling", "status": "True", "reason": "AwaitingCredentials", "message": "waiting", "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}
            ]}});
        let written = cics
            .patch_status(
                "x",
                &PatchParams::apply("copyimage-canceller").force(),
                &Patch::Apply(&applied),
            )
            .await
            .unwrap();
        assert_eq!(written.status.unwrap().conditions.len(), 2);
        let mut bad = applied.clone();
        bad["status"]["conditions"][0]
            .as_object_mut()
            .unwrap()
            .remove("lastTransitionTime");
        bad["status"]["startTime"] = json!("yesterday");
        let status = status_value(
            cics.patch_status(
                "x",
                &PatchParams::apply("copyimage-canceller").force(),
                &Patch::Apply(&bad),
            )
            .await
            .unwrap_err(),
        );
        let fields: Vec<&str> = status["details"]["causes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["field"].as_str().unwrap())
            .collect();
        assert_eq!(
            fields,
            vec![
                "status.conditions[0].lastTransitionTime",
                "status.startTime"
            ],
            "{status}"
        );
    }

    #[tokio::test]
    async fn field_validation_strict_refuses_unknown_fields_and_warn_prunes() {
        let api = start_project().await;
        let cics: Api<CopyImageCancellation> = Api::default_namespaced(api.client().unwrap());
        cics.create(&PostParams::default(), &cic("x", "cn-hangzhou"))
            .await
            .unwrap();
        let unknown = json!({"metadata": {"labels": {"a": "b"}}, "status": {"colour": "red"}});
        let err = api_error(
            cics.patch_status(
                "x",
                &PatchParams::default().validation_strict(),
                &Patch::Merge(&unknown),
            )
            .await
            .unwrap_err(),
        );
        assert_eq!(
            (err.code, err.message.as_str()),
            (
                400,
                "strict decoding error: unknown field \"status.colour\""
            )
        );
        let pruned = cics
            .patch_status("x", &PatchParams::default(), &Patch::Merge(&unknown))
            .await
            .unwrap();
        assert_eq!(
            serde_json::to_value(&pruned.status).unwrap(),
            json!({"attempts": 0}),
            "the unknown field is pruned under the default Warn (attempts is a schema default)"
        );
        let request = http::Request::patch(
            "/apis/ecs.alibabacloud.com/v1alpha1/namespaces/images/copyimagecancellations/x/status",
        )
        .header("Content-Type", "application/merge-patch+json")
        .body(serde_json::to_vec(&unknown).unwrap())
        .unwrap();
        let response = api
            .client()
            .unwrap()
            .send(request.map(kube::client::Body::from))
            .await
            .unwrap();
        let warnings: Vec<&str> = response
            .headers()
            .get_all("warning")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            warnings,
            vec!["299 - \"unknown field \\\"status.colour\\\"\""]
        );
    }

    #[tokio::test]
    async fn kubectl_get_shows_printer_columns() {
        let api = start_project().await;
        let client = api.client().unwrap();
        let cics: Api<CopyImageCancellation> = Api::default_namespaced(client.clone());
        cics.create(&PostParams::default(), &cic("x", "cn-hangzhou"))
            .await
            .unwrap();
        let request = http::Request::get(
            "/apis/ecs.alibabacloud.com/v1alpha1/namespaces/images/copyimagecancellations",
        )
        .header(
            "Accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .body(Vec::new())
        .unwrap();
        let table: Value = client.request(request).await.unwrap();
        assert_eq!(table["kind"], "Table");
        let columns: Vec<&str> = table["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            columns.join(" | "),
            "Name | Region | Image | Phase | Request ID | Error | Attempts | Age"
        );
        let cells = &table["rows"][0]["cells"];
        assert_eq!(
            (cells[0].as_str(), cells[1].as_str(), cells[2].as_str()),
            (Some("x"), Some("cn-hangzhou"), Some("m-bp1caf3yicx5jlfl"))
        );
        assert!(
            cells[7].as_str().unwrap().ends_with('s'),
            "age is human readable: {}",
            cells[7]
        );
    }

    /// kubectl as users run it against the sandbox (skipped only where kubectl is not installed).
    #[tokio::test]
    async fn kubectl_apply_get_wait_and_explain() {
        if std::process::Command::new("kubectl")
            .arg("version")
            .arg("--client")
            .output()
            .is_err()
        {
            eprintln!("kubectl is not installed: skipping the kubectl round trip");
            return;
        }
        let api = start_project().await;
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        api.write_kubeconfig(&kubeconfig).unwrap();
        let manifest = dir.path().join("cic.yaml");
        std::fs::write(
            &manifest,
            "apiVersion: ecs.alibabacloud.com/v1alpha1\nkind: CopyImageCancellation\nmetadata: {name: stop-copy}\nspec: {regionId: cn-hangzhou, imageId: m-bp1caf3yicx5jlfl}\n",
        )
        .unwrap();
        let kubectl = |args: &[&str]| {
            let mut command = tokio::process::Command::new("kubectl");
            command
                .args(args)
                .env("KUBECONFIG", &kubeconfig)
                .env("HOME", dir.path());
            async move {
                let out = tokio::time::timeout(PATIENCE, command.output())
                    .await
                    .expect("kubectl in time")
                    .expect("kubectl runs");
                (
                    out.status.success(),
                    String::from_utf8_lossy(&out.stdout).into_owned()
                        + &String::from_utf8_lossy(&out.stderr),
                )
            }
        };
        let manifest_arg = manifest.to_str().unwrap();
        let (ok, out) = kubectl(&["apply", "-f", manifest_arg]).await;
        assert!(ok && out.contains("stop-copy created"), "{out}");
        let (ok, out) = kubectl(&["apply", "-f", manifest_arg]).await;
        assert!(ok && out.contains("stop-copy unchanged"), "{out}");
        let (ok, out) = kubectl(&[
            "get",
            "cic",
            "stop-copy",
            "-o",
            "jsonpath={.spec.backoffLimit}",
        ])
        .await;
        assert_eq!((ok, out.as_str()), (true, "6"));

        let cics: Api<CopyImageCancellation> = Api::default_namespaced(api.client().unwrap());
        let ready = json!({"apiVersion": "ecs.alibabacloud.com/v1alpha1", "kind": "CopyImageCancellation", "metadata": {"name": "stop-copy"},
            "status": {"phase": "Succeeded", "requestId": "R-1", "attempts": 1, "conditions": [{"type": "Ready", "status": "True",
                "reason": "Cancelled", "message": "done", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
        cics.patch_status(
            "stop-copy",
            &PatchParams::apply("test"),
            &Patch::Apply(&ready),
        )
        .await
        .unwrap();
        let (ok, out) = kubectl(&[
            "wait",
            "--for=condition=Ready",
            "cic/stop-copy",
            "--timeout=20s",
        ])
        .await;
        assert!(ok && out.contains("condition met"), "{out}");
        let (ok, out) = kubectl(&["get", "cic"]).await;
        assert!(ok, "{out}");
        let header: Vec<&str> = out
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(
            header,
            vec![
                "NAME", "REGION", "IMAGE", "PHASE", "REQUEST", "ID", "ERROR", "ATTEMPTS", "AGE"
            ]
        );
        assert!(out.contains("Succeeded") && out.contains("R-1"), "{out}");
        let recorder = Recorder::new(
            api.client().unwrap(),
            Reporter {
                controller: "copyimage-canceller".into(),
                instance: None,
            },
        );
        let current = cics.get("stop-copy").await.unwrap();
        let note = Event {
            type_: EventType::Normal,
            reason: "Cancelled".into(),
            note: Some("CancelCopyImage succeeded, request ID R-1".into()),
            action: "CancelCopyImage".into(),
            secondary: None,
        };
        recorder
            .publish(&note, &current.object_ref(&()))
            .await
            .unwrap();
        let (ok, out) = kubectl(&["describe", "cic", "stop-copy"]).await;
        assert!(
            ok && out.contains("Cancelled") && out.contains("request ID R-1"),
            "{out}"
        );
        let (ok, out) = kubectl(&["get", "events"]).await;
        assert!(ok && out.contains("Cancelled"), "{out}");
        let (ok, out) = kubectl(&["delete", "cic", "stop-copy", "--timeout=20s"]).await;
        assert!(ok && out.contains("deleted"), "{out}");
        assert_eq!(
            api_error(cics.get("stop-copy").await.unwrap_err()).code,
            404
        );
        let (ok, out) = kubectl(&["explain", "cic.spec.regionId"]).await;
        assert!(ok && out.contains("DESTINATION"), "{out}");
        std::fs::write(&manifest, "apiVersion: ecs.alibabacloud.com/v1alpha1\nkind: CopyImageCancellation\nmetadata: {name: typo}\nspec: {regionId: cn-hangzhou, imageId: m-abc, colour: red}\n").unwrap();
        let (ok, out) = kubectl(&["apply", "-f", manifest_arg]).await;
        assert!(
            !ok && out.contains("unknown field \"spec.colour\""),
            "{out}"
        );
    }
}
