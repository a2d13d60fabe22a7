//! The resource types the API hosts (group, version, plural, kind, schema,
//! printer columns) and the built-in kinds: what the store, the errors, the
//! Table output and discovery all describe, importing nothing of theirs.

use std::sync::Arc;

use serde_json::Value;

/// Built-in behaviour beyond "store the JSON".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Builtin {
    /// A custom resource from a CRD.
    Custom,
    /// core/v1 Secret: `stringData` is folded into `data`, `type` defaults to `Opaque`.
    Secret,
    /// Any other built-in kind, stored as sent.
    Plain,
}

/// One hosted resource (group, version, plural) and how it behaves.
#[derive(Clone, Debug)]
pub(crate) struct ResourceType {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub status_subresource: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// The version's `openAPIV3Schema` (custom resources only).
    pub schema: Option<Value>,
    /// Its CEL rules, compiled once (custom resources only).
    pub rules: Option<Arc<kube::core::cel::CompiledSchema>>,
    /// CRD `selectableFields`, as dotted paths.
    pub selectable_fields: Vec<String>,
    /// CRD `additionalPrinterColumns`, for Table output.
    pub printer_columns: Vec<PrinterColumn>,
    /// Served as a conversion of another type's objects (core/v1 Event of events.k8s.io/v1).
    pub view_of: Option<(&'static str, &'static str)>,
    pub builtin: Builtin,
}

impl ResourceType {
    pub(crate) fn plain(
        group: &str,
        version: &str,
        plural: &str,
        kind: &str,
        namespaced: bool,
        builtin: Builtin,
    ) -> Self {
        Self {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            kind: kind.into(),
            namespaced,
            status_subresource: false,
            short_names: Vec::new(),
            categories: Vec::new(),
            schema: None,
            rules: None,
            selectable_fields: Vec::new(),
            printer_columns: Vec::new(),
            view_of: None,
            builtin,
        }
    }

    /// `group/version`, or `v1` for the core group.
    pub(crate) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group` as used in NotFound / Conflict messages.
    pub(crate) fn group_resource(&self) -> String {
        self.dot_group(&self.plural)
    }

    /// `Kind.group` as used in Invalid messages.
    pub(crate) fn group_kind(&self) -> String {
        self.dot_group(&self.kind)
    }

    /// `name.group`, or `name` alone for the core group.
    fn dot_group(&self, name: &str) -> String {
        if self.group.is_empty() {
            name.to_owned()
        } else {
            format!("{name}.{}", self.group)
        }
    }

    pub(crate) fn is_custom(&self) -> bool {
        self.builtin == Builtin::Custom
    }

    pub(crate) fn field_selectable(&self, path: &str) -> bool {
        path == "metadata.name"
            || path == "metadata.namespace"
            || self.selectable_fields.iter().any(|f| f == path)
            // Built-ins support kind-specific fields (Event involvedObject.*, Secret type, ...):
            // accept any path rather than keep per-kind tables.
            || !self.is_custom()
    }
}

/// The built-in kinds every sandbox hosts.
pub(crate) fn builtin_types() -> Vec<ResourceType> {
    use Builtin::{Plain, Secret};
    // (group, plural, kind, namespaced, behaviour, short name)
    let table = [
        ("", "namespaces", "Namespace", false, Plain, Some("ns")),
        ("", "secrets", "Secret", true, Secret, None),
        ("", "configmaps", "ConfigMap", true, Plain, Some("cm")),
        ("", "events", "Event", true, Plain, Some("ev")),
        ("events.k8s.io", "events", "Event", true, Plain, Some("ev")),
        ("coordination.k8s.io", "leases", "Lease", true, Plain, None),
    ];
    table
        .into_iter()
        .map(|(group, plural, kind, namespaced, builtin, short)| {
            let mut t = ResourceType::plain(group, "v1", plural, kind, namespaced, builtin);
            t.short_names = short.into_iter().map(String::from).collect();
            if group.is_empty() && plural == "events" {
                t.view_of = Some(("events.k8s.io", "events"));
                t.printer_columns = core_event_columns();
            }
            t
        })
        .collect()
}

/// Columns close to what `kubectl get events` shows.
fn core_event_columns() -> Vec<PrinterColumn> {
    let column = |name: &str, type_: &str, path: &str| PrinterColumn {
        name: name.into(),
        type_: type_.into(),
        format: String::new(),
        description: String::new(),
        priority: 0,
        json_path: path.into(),
    };
    vec![
        column("Type", "string", ".type"),
        column("Reason", "string", ".reason"),
        column("Object", "string", ".involvedObject.name"),
        column("Message", "string", ".message"),
        column("Age", "date", ".metadata.creationTimestamp"),
    ]
}

/// One `additionalPrinterColumns` entry.
#[derive(Clone, Debug)]
pub(crate) struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i32,
    pub json_path: String,
}
