//! The cluster-scoped `RamRoleSelector` resource, which maps one RAM role to
//! the namespaces it selects, and the pure rules built on it: which identity
//! signs a resource, the `RoleSessionName` of a session, and the session
//! policy every session is narrowed to.
//!
//! ```text
//! resource ──credentialsSecretRef?──▶ Identity::Secret
//!     │ no
//!     ▼
//! namespace (name, labels) ──matching selectors──┬─ one  ──▶ Identity::Role(selector)
//!                                                ├─ two+ ──▶ Identity::Ambiguous (AmbiguousRole)
//!                                                └─ none ──▶ Identity::Operator, or
//!                                                            Identity::NoRole (--require-namespace-role)
//! ```
//!
//! Like [`crate::resource`], this knows nothing of HTTP or keys.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt, KubeSchema, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Kind of the resource.
pub const KIND: &str = "RamRoleSelector";
/// Least `sessionDurationSeconds` (STS's minimum).
pub const MIN_SESSION_DURATION_SECONDS: i32 = 900;
/// Most `sessionDurationSeconds` (STS's maximum; the role's MaxSessionDuration may be lower).
pub const MAX_SESSION_DURATION_SECONDS: i32 = 43_200;
/// `sessionDurationSeconds` when the selector does not say.
pub const DEFAULT_SESSION_DURATION_SECONDS: i32 = 3600;
/// The pattern a role ARN must match (checked at admission).
pub const ROLE_ARN_PATTERN: &str = r"^acs:ram::[0-9]{1,32}:role/[A-Za-z0-9.@_-]{1,64}$";
/// The pattern an `ExternalId` must match, `[\w+=,.@:/-]` (STS AssumeRole),
/// checked at admission with its length, 2 to 1224.
// NB: not `{2,1224}`: Go's regexp (the API server's) refuses repeat counts above 1000.
pub const EXTERNAL_ID_PATTERN: &str = r"^[A-Za-z0-9_+=,.@:/-]+$";
/// Message of the admission rule that wants a namespace selector that says something.
pub const EMPTY_SELECTOR_MESSAGE: &str = "namespaceSelector must list names or give a labelSelector \
     (an empty labelSelector {} selects every namespace)";

/// The session policy of every assumed role: the session may call
/// `ecs:CancelCopyImage` and nothing else, whatever the role itself allows.
/// STS grants the intersection of this and the role's own policies.
pub const SESSION_POLICY: &str = r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":["ecs:CancelCopyImage"],"Resource":["*"]}]}"#;

/// Maps a RAM role to namespaces: resources in a selected namespace without
/// their own `credentialsSecretRef` are signed with this role, assumed from
/// the operator's identity with STS AssumeRole under a session policy that
/// allows only `ecs:CancelCopyImage`.
// NB: clippy reads the repeated `printcolumn(type_ = ...)` keys as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ecs.alibabacloud.com",
    version = "v1alpha1",
    kind = "RamRoleSelector",
    plural = "ramroleselectors",
    shortname = "rrs",
    category = "alibabacloud",
    category = "ecs",
    status = "RamRoleSelectorStatus",
    derive = "PartialEq",
    cel,
    doc = "Maps an Alibaba Cloud RAM role to namespaces. CopyImageCancellations in a selected \
           namespace that name no credentialsSecretRef are signed with a session of this role, \
           assumed with STS AssumeRole from the operator's own identity and narrowed by a session \
           policy to ecs:CancelCopyImage. Cluster-scoped: only cluster administrators write it. \
           Two selectors matching one namespace are a configuration error (its resources wait, \
           reason AmbiguousRole).",
    printcolumn(
        name = "Role",
        type_ = "string",
        json_path = ".spec.roleArn",
        description = "The RAM role assumed for the selected namespaces"
    ),
    printcolumn(
        name = "Namespaces",
        type_ = "integer",
        json_path = ".status.matchedNamespaces",
        description = "How many existing namespaces the selector matches"
    ),
    printcolumn(
        name = "Assumable",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "True when the operator could assume the role"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "RoleAssumed, or why the role could not be assumed (the STS code)"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RamRoleSelectorSpec {
    /// ARN of the RAM role to assume, `acs:ram::<account ID>:role/<role name>`
    /// (for example `acs:ram::1234567890123456:role/images-team-canceller`).
    /// Its trust policy must let the operator's identity (its RRSA role, say)
    /// assume it; sessions are narrowed to ecs:CancelCopyImage.
    #[schemars(regex(pattern = r"^acs:ram::[0-9]{1,32}:role/[A-Za-z0-9.@_-]{1,64}$"))]
    #[schemars(length(max = 128))]
    pub role_arn: String,

    /// Which namespaces use the role: by name, by labels, or both (a
    /// namespace must then satisfy both).
    pub namespace_selector: NamespaceSelector,

    /// ExternalId sent with AssumeRole, when the role's trust policy requires
    /// one (`sts:ExternalId` condition; it guards against the confused-deputy
    /// problem). 2 to 1224 characters: letters, digits and `_+=,.@:/-`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^[A-Za-z0-9_+=,.@:/-]+$"),
        length(min = 2, max = 1224)
    )]
    pub external_id: Option<String>,

    /// Lifetime of each session in seconds, 900 to 43200 (at most the role's
    /// MaxSessionDuration). Default 3600. Sessions are refreshed before they
    /// expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 900, max = 43200))]
    pub session_duration_seconds: Option<i32>,
}

/// Which namespaces a selector applies to.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = kube::core::Rule::new("(has(self.names) && size(self.names) > 0) || has(self.labelSelector)").message(EMPTY_SELECTOR_MESSAGE))]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSelector {
    /// Namespaces selected by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub names: Vec<String>,

    /// Namespaces selected by their labels (matchLabels and matchExpressions,
    /// as in any Kubernetes label selector). An empty selector `{}` selects
    /// every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
}

/// A Kubernetes label selector: every term must hold.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels a namespace must carry with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,

    /// Further requirements on the namespace's labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One requirement on a label.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    /// The label's key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: SelectorOperator,
    /// The values for `In` and `NotIn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// How a requirement compares a label.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectorOperator {
    /// The label is set to one of the values.
    In,
    /// The label is unset or set to none of the values.
    NotIn,
    /// The label is set.
    Exists,
    /// The label is unset.
    DoesNotExist,
}

/// Whether the operator could assume the role. Written only by the operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RamRoleSelectorStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// How many existing namespaces the selector matches.
    #[serde(default)]
    pub matched_namespaces: i32,

    /// The STS error code of the last failed AssumeRole (for example
    /// `NoPermission` when the role's trust policy does not name the
    /// operator); cleared once the role is assumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,

    /// When the current session expires (RFC 3339); it is refreshed before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_expiration: Option<String>,

    /// `Ready`: `True` (reason `RoleAssumed`) once the operator assumed the
    /// role; `False` with the STS code as reason when it could not (the
    /// message says what to fix), or `Pending` before the first try.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The CRD as YAML: what `copyimage-canceller crd --name ramroleselectors`
/// prints and `crds/ramroleselectors.yaml` holds.
pub fn crd_yaml() -> Result<String, serde_yaml_ng::Error> {
    serde_yaml_ng::to_string(&RamRoleSelector::crd())
}

impl LabelSelector {
    /// Whether `labels` satisfy every term. Pure.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let value = labels.get(&e.key);
                match e.operator {
                    SelectorOperator::In => value.is_some_and(|v| e.values.contains(v)),
                    SelectorOperator::NotIn => !value.is_some_and(|v| e.values.contains(v)),
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }
}

impl NamespaceSelector {
    /// Whether the namespace `name` with `labels` is selected: listed by
    /// name (when names are given) and matching the label selector (when one
    /// is given). A selector with neither selects nothing. Pure.
    pub fn matches(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        if self.names.is_empty() && self.label_selector.is_none() {
            return false;
        }
        (self.names.is_empty() || self.names.iter().any(|n| n == name))
            && self
                .label_selector
                .as_ref()
                .is_none_or(|s| s.matches(labels))
    }
}

/// Which identity signs a resource.
#[derive(Clone, Debug, PartialEq)]
pub enum Identity<'a> {
    /// The resource's own `credentialsSecretRef`.
    Secret,
    /// The one selector matching its namespace.
    Role(&'a RamRoleSelector),
    /// The operator's own identity.
    Operator,
    /// Two (or more) selectors match the namespace: these two, by name.
    Ambiguous(String, String),
    /// No selector matches, and the operator's own identity is turned off
    /// (`--require-namespace-role`).
    NoRole,
}

/// Which identity signs a resource in `namespace` (with `labels`), in order:
/// its own Secret, the one matching selector, the operator's identity
/// unless `require_role`. Pure: ties are never broken by guessing.
pub fn choose<'a>(
    has_secret_ref: bool,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    selectors: impl IntoIterator<Item = &'a RamRoleSelector>,
    require_role: bool,
) -> Identity<'a> {
    if has_secret_ref {
        return Identity::Secret;
    }
    let mut matching: Vec<&RamRoleSelector> = selectors
        .into_iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .filter(|s| s.spec.namespace_selector.matches(namespace, labels))
        .collect();
    // NB: sorted so that the message names the same two every time.
    matching.sort_by_key(|s| s.name_any());
    match matching.as_slice() {
        [] if require_role => Identity::NoRole,
        [] => Identity::Operator,
        [one] => Identity::Role(one),
        [a, b, ..] => Identity::Ambiguous(a.name_any(), b.name_any()),
    }
}

/// The `RoleSessionName` of sessions for `selector`, shown in ActionTrail:
/// `cic.<namespace>` when the selector names exactly one namespace (and
/// nothing else), else `cic.<selector name>` (the sessions are shared by the
/// namespaces it selects). Always 2 to 64 of `[A-Za-z0-9.@_-]`. Pure.
pub fn session_name(selector: &RamRoleSelector) -> String {
    let ns = &selector.spec.namespace_selector;
    let subject = match (ns.names.as_slice(), &ns.label_selector) {
        ([only], None) => only.clone(),
        _ => selector.name_any(),
    };
    let cleaned: String = subject
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '@' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = format!("cic.{cleaned}");
    if name.len() <= 64 {
        return name;
    }
    // Long names keep a readable prefix and a hash that tells them apart.
    let hash = fnv1a(subject.as_bytes());
    format!("{}.{hash:08x}", &name[..55])
}

/// A small stable hash for shortened session names (FNV-1a, 32 bits).
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

impl RamRoleSelectorSpec {
    /// The session duration asked of STS, in seconds.
    pub fn duration_seconds(&self) -> u64 {
        let d = self
            .session_duration_seconds
            .unwrap_or(DEFAULT_SESSION_DURATION_SECONDS)
            .clamp(MIN_SESSION_DURATION_SECONDS, MAX_SESSION_DURATION_SECONDS);
        u64::try_from(d).unwrap_or(3600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(name: &str, names: &[&str], labels: Option<LabelSelector>) -> RamRoleSelector {
        let mut s = RamRoleSelector::new(
            name,
            RamRoleSelectorSpec {
                role_arn: format!("acs:ram::1234567890123456:role/{name}"),
                namespace_selector: NamespaceSelector {
                    names: names.iter().map(|n| n.to_string()).collect(),
                    label_selector: labels,
                },
                external_id: None,
                session_duration_seconds: None,
            },
        );
        s.metadata.name = Some(name.into());
        s
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn team(value: &str) -> Option<LabelSelector> {
        Some(LabelSelector {
            match_labels: labels(&[("team", value)]),
            ..LabelSelector::default()
        })
    }

    #[test]
    fn label_selector_table() {
        let req = |key: &str, operator, values: &[&str]| LabelSelector {
            match_expressions: vec![LabelSelectorRequirement {
                key: key.into(),
                operator,
                values: values.iter().map(|v| v.to_string()).collect(),
            }],
            ..LabelSelector::default()
        };
        let l = labels(&[("team", "images"), ("env", "prod")]);
        let rows = [
            (LabelSelector::default(), true),
            (team("images").unwrap(), true),
            (team("video").unwrap(), false),
            (req("env", SelectorOperator::In, &["prod", "stage"]), true),
            (req("env", SelectorOperator::In, &["dev"]), false),
            (req("env", SelectorOperator::NotIn, &["dev"]), true),
            (req("env", SelectorOperator::NotIn, &["prod"]), false),
            (req("tier", SelectorOperator::NotIn, &["x"]), true),
            (req("team", SelectorOperator::Exists, &[]), true),
            (req("tier", SelectorOperator::Exists, &[]), false),
            (req("tier", SelectorOperator::DoesNotExist, &[]), true),
            (req("team", SelectorOperator::DoesNotExist, &[]), false),
        ];
        for (i, (sel, want)) in rows.into_iter().enumerate() {
            assert_eq!(sel.matches(&l), want, "row {i}: {sel:?}");
        }
    }

    #[test]
    fn namespace_selector_table() {
        let l = labels(&[("team", "images")]);
        let rows = [
            (selector("a", &["images"], None), "images", true),
            (selector("a", &["video"], None), "images", false),
            (selector("a", &[], team("images")), "images", true),
            (selector("a", &[], team("video")), "images", false),
            // Both given: both must hold.
            (selector("a", &["images"], team("images")), "images", true),
            (selector("a", &["images"], team("video")), "images", false),
            (selector("a", &["other"], team("images")), "images", false),
            // Neither: nothing (admission refuses it anyway).
            (selector("a", &[], None), "images", false),
            // `{}`: everything.
            (
                selector("a", &[], Some(LabelSelector::default())),
                "images",
                true,
            ),
        ];
        for (i, (sel, ns, want)) in rows.into_iter().enumerate() {
            assert_eq!(sel.spec.namespace_selector.matches(ns, &l), want, "row {i}");
        }
    }

    #[test]
    fn identity_order_table() {
        let images = selector("images-role", &["images"], None);
        let by_team = selector("team-images", &[], team("images"));
        let video = selector("video-role", &["video"], None);
        let l = labels(&[("team", "images")]);
        let none: [RamRoleSelector; 0] = [];
        let one = [images.clone(), video.clone()];
        let two = [by_team.clone(), images.clone(), video.clone()];
        let name = |i: Identity<'_>| match i {
            Identity::Role(s) => format!("role {}", s.name_any()),
            other => format!("{other:?}"),
        };
        // (secret ref, namespace, selectors, require role, expected)
        let rows: Vec<(bool, &str, &[RamRoleSelector], bool, &str)> = vec![
            (true, "images", &two, false, "Secret"),
            (true, "other", &none, true, "Secret"),
            (false, "images", &one, false, "role images-role"),
            (false, "images", &one, true, "role images-role"),
            (false, "other", &one, false, "Operator"),
            (false, "other", &one, true, "NoRole"),
            (false, "other", &none, false, "Operator"),
            (
                false,
                "images",
                &two,
                false,
                "Ambiguous(\"images-role\", \"team-images\")",
            ),
            (false, "video", &two, true, "role video-role"),
        ];
        for (i, (secret, ns, selectors, require, want)) in rows.into_iter().enumerate() {
            let labels = if ns == "images" {
                l.clone()
            } else {
                BTreeMap::new()
            };
            let got = name(choose(secret, ns, &labels, selectors.iter(), require));
            assert_eq!(got, want, "row {i}");
        }
    }

    #[test]
    fn session_names_are_what_sts_accepts_and_name_the_tenant() {
        let long_ns = "n".repeat(63);
        let rows = [
            (selector("s", &["images"], None), "cic.images".to_string()),
            (selector("team-a", &["a", "b"], None), "cic.team-a".into()),
            (selector("team-b", &[], team("b")), "cic.team-b".into()),
        ];
        for (sel, want) in rows {
            assert_eq!(session_name(&sel), want);
        }
        let long = session_name(&selector("s", &[long_ns.as_str()], None));
        let other = session_name(&selector("s", &[&format!("{}m", "n".repeat(62))], None));
        for name in [&long, &other] {
            assert!((2..=64).contains(&name.len()), "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".@_-".contains(&b))
            );
            assert!(name.starts_with("cic.nnnn"), "{name}");
        }
        assert_ne!(long, other);
    }

    #[test]
    fn crd_is_cluster_scoped_with_admission_rules() {
        let crd = RamRoleSelector::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("ramroleselectors.ecs.alibabacloud.com")
        );
        assert_eq!(crd.spec.scope, "Cluster");
        let schema = serde_json::to_value(
            crd.spec.versions[0]
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap(),
        )
        .unwrap();
        let spec = &schema["properties"]["spec"];
        assert_eq!(spec["properties"]["roleArn"]["pattern"], ROLE_ARN_PATTERN);
        assert_eq!(
            spec["properties"]["externalId"]["pattern"],
            EXTERNAL_ID_PATTERN
        );
        assert_eq!(spec["properties"]["externalId"]["minLength"], 2);
        assert_eq!(spec["properties"]["externalId"]["maxLength"], 1224);
        assert_eq!(
            spec["properties"]["sessionDurationSeconds"]["minimum"],
            900.0
        );
        assert_eq!(
            spec["properties"]["sessionDurationSeconds"]["maximum"],
            43200.0
        );
        assert_eq!(
            spec["properties"]["namespaceSelector"]["x-kubernetes-validations"][0]["message"],
            EMPTY_SELECTOR_MESSAGE
        );
    }

    #[test]
    fn durations_default_and_stay_in_bounds() {
        let mut s = selector("s", &["a"], None);
        assert_eq!(s.spec.duration_seconds(), 3600);
        s.spec.session_duration_seconds = Some(900);
        assert_eq!(s.spec.duration_seconds(), 900);
    }
}
