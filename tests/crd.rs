//! The CRD: the committed YAML is exactly what `copyimage-canceller crd`
//! prints, and admission validation (patterns, bounds, the immutable spec)
//! is in the schema, where the API server enforces it.

use std::process::Command;

use copyimage_canceller::resource::{
    CopyImageCancellation, CopyImageCancellationSpec, CredentialsSecretRef, SPEC_IMMUTABLE_MESSAGE,
};
use kube::CustomResourceExt;
use serde_json::Value;

const COMMITTED: &str = include_str!("../crds/copyimagecancellations.yaml");
const COMMITTED_SELECTORS: &str = include_str!("../crds/ramroleselectors.yaml");

fn crd_output(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_copyimage-canceller"))
        .arg("crd")
        .args(args)
        .output()
        .expect("run copyimage-canceller crd");
    assert!(
        out.status.success(),
        "crd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn committed_crd_is_the_output_of_the_crd_subcommand() {
    for (plural, committed) in [
        ("copyimagecancellations", COMMITTED),
        ("ramroleselectors", COMMITTED_SELECTORS),
    ] {
        assert!(
            crd_output(&["--name", plural]) == committed,
            "crds/{plural}.yaml is stale: regenerate it with \
             `cargo run -- crd --name {plural} > crds/{plural}.yaml` (and copy it to \
             charts/copyimage-canceller/crds/ and deploy/crds/)"
        );
    }
    // Without --name: both, one YAML stream, ready for `kubectl apply -f -`.
    assert_eq!(
        crd_output(&[]),
        format!("{COMMITTED}---\n{COMMITTED_SELECTORS}")
    );
}

fn schema() -> Value {
    let crd = CopyImageCancellation::crd();
    let version = &crd.spec.versions[0];
    serde_json::to_value(
        version
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn spec_fields_carry_their_admission_rules() {
    let s = schema();
    let spec = &s["properties"]["spec"];
    let props = &spec["properties"];
    assert_eq!(props["regionId"]["pattern"], "^[a-z]{2,}(-[a-z0-9]+)+$");
    assert_eq!(props["regionId"]["maxLength"], 64);
    assert_eq!(props["imageId"]["pattern"], "^m-[a-z0-9]+$");
    assert_eq!(props["imageId"]["maxLength"], 64);
    assert_eq!(props["backoffLimit"]["minimum"], 0.0);
    assert_eq!(props["backoffLimit"]["maximum"], 20.0);
    assert_eq!(props["backoffLimit"]["default"], 6);
    assert_eq!(props["activeDeadlineSeconds"]["minimum"], 1.0);
    assert!(props["activeDeadlineSeconds"]["maximum"].as_f64().unwrap() >= 86_400.0);
    assert_eq!(
        props["credentialsSecretRef"]["required"],
        serde_json::json!(["name"])
    );
    assert_eq!(spec["required"], serde_json::json!(["imageId", "regionId"]));
    assert_eq!(
        spec["x-kubernetes-validations"][0]["rule"],
        "self == oldSelf"
    );
    assert_eq!(
        spec["x-kubernetes-validations"][0]["message"],
        SPEC_IMMUTABLE_MESSAGE
    );
}

/// Every property, at every depth, has a description (for `kubectl explain`),
/// and nothing keeps unknown fields (the schema is structural; unknown fields are pruned).
#[test]
fn every_field_is_described_and_nothing_preserves_unknown_fields() {
    fn walk(path: &str, node: &Value, missing: &mut Vec<String>) {
        assert!(
            node.get("x-kubernetes-preserve-unknown-fields").is_none(),
            "{path} preserves unknown fields"
        );
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            for (name, child) in props {
                let child_path = format!("{path}.{name}");
                if child
                    .get("description")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    missing.push(child_path.clone());
                }
                walk(&child_path, child, missing);
            }
        }
        if let Some(items) = node.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    let s = schema();
    let mut missing = Vec::new();
    walk("", &s["properties"]["spec"], &mut missing);
    walk(".status", &s["properties"]["status"], &mut missing);
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:?}"
    );
}

#[test]
fn conditions_are_a_map_keyed_by_type() {
    let s = schema();
    let conditions = &s["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(
        conditions["x-kubernetes-list-map-keys"],
        serde_json::json!(["type"])
    );
    assert_eq!(
        s["properties"]["status"]["properties"]["attemptHistory"]["maxItems"],
        10
    );
}

#[test]
fn printer_columns_and_names() {
    let crd = CopyImageCancellation::crd();
    let version = &crd.spec.versions[0];
    let columns: Vec<&str> = version
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns.join(" | "),
        "Region | Image | Phase | Request ID | Error | Attempts | Age"
    );
    assert!(version.subresources.as_ref().unwrap().status.is_some());
    assert_eq!(crd.spec.names.plural, "copyimagecancellations");
}

fn resource(region: &str, image: &str) -> CopyImageCancellation {
    CopyImageCancellation::new(
        "stop-copy-to-hangzhou",
        CopyImageCancellationSpec {
            region_id: region.into(),
            image_id: image.into(),
            credentials_secret_ref: Some(CredentialsSecretRef {
                name: "alibaba-credentials".into(),
            }),
            backoff_limit: 6,
            active_deadline_seconds: Some(3600),
        },
    )
}

/// One way of editing a spec.
type SpecEdit = fn(&mut CopyImageCancellationSpec);

#[test]
fn cel_rejects_any_spec_change_with_the_message() {
    let old = resource("cn-hangzhou", "m-bp1caf3yicx5jlfl");

    let same = old.clone();
    same.validate_cel_update(&old)
        .expect("an unchanged spec is accepted");

    let changes: [(&str, SpecEdit); 5] = [
        ("imageId", |s| s.image_id = "m-other".into()),
        ("regionId", |s| s.region_id = "cn-beijing".into()),
        ("backoffLimit", |s| s.backoff_limit = 2),
        ("activeDeadlineSeconds", |s| {
            s.active_deadline_seconds = None
        }),
        ("credentialsSecretRef", |s| s.credentials_secret_ref = None),
    ];
    for (field, change) in changes {
        let mut new = old.clone();
        change(&mut new.spec);
        let err = new
            .validate_cel_update(&old)
            .expect_err(&format!("changing {field} must be rejected"));
        let text = err.to_string();
        assert!(
            text.contains(SPEC_IMMUTABLE_MESSAGE),
            "changing {field}: error does not tell the user what to do: {text}"
        );
    }
}

#[test]
fn status_changes_are_not_blocked_by_the_spec_rule() {
    let old = resource("cn-hangzhou", "m-bp1caf3yicx5jlfl");
    let mut new = old.clone();
    new.status = Some(Default::default());
    new.validate_cel_update(&old)
        .expect("status is free to change");
}

/// The samples are valid resources: every field is known (nothing would be
/// pruned) and the CEL rules accept them.
#[test]
fn samples_are_valid_resources() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/samples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let raw: Value = serde_yaml_ng::from_str(&text).unwrap();
        if raw["kind"] != "CopyImageCancellation" {
            continue;
        }
        let parsed: CopyImageCancellation = serde_yaml_ng::from_str(&text).unwrap();
        let mut round_trip = serde_json::to_value(&parsed.spec).unwrap();
        // Defaults the API server would add are not required in a sample.
        let written = raw["spec"].as_object().unwrap();
        round_trip
            .as_object_mut()
            .unwrap()
            .retain(|k, _| written.contains_key(k));
        assert_eq!(
            round_trip,
            raw["spec"],
            "{}: unknown or misspelled spec fields",
            path.display()
        );
        assert_eq!(raw["apiVersion"], "ecs.alibabacloud.com/v1alpha1");
        parsed.validate_cel().unwrap();
        seen += 1;
    }
    assert!(seen >= 1, "no samples found in {}", dir.display());
}
