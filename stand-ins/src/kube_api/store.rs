//! The object store: hosted resource types, objects, the global resourceVersion counter,
//! the bounded change history that feeds watches, and the write pipeline (strategy,
//! admission, generation, managedFields, preconditions).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use rand::Rng;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use super::convert;
use super::error::{ApiError, FieldError, FieldErrorKind};
use super::fields::{self, ManagedEntry, Scope, Writer};
use super::resource_types::{Builtin, PrinterColumn, ResourceType, builtin_types};
use super::selector::{FieldSelector, LabelSelector};
use super::validation;

/// Resource types for every served version of a CRD.
pub(crate) fn crd_types(crd: &CustomResourceDefinition) -> Vec<ResourceType> {
    let spec = &crd.spec;
    spec.versions
        .iter()
        .filter(|v| v.served)
        .map(|v| {
            let schema = v
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .and_then(|s| serde_json::to_value(s).ok());
            ResourceType {
                group: spec.group.clone(),
                version: v.name.clone(),
                plural: spec.names.plural.clone(),
                singular: spec
                    .names
                    .singular
                    .clone()
                    .unwrap_or_else(|| spec.names.kind.to_lowercase()),
                kind: spec.names.kind.clone(),
                namespaced: spec.scope == "Namespaced",
                status_subresource: v.subresources.as_ref().is_some_and(|s| s.status.is_some()),
                short_names: spec.names.short_names.clone().unwrap_or_default(),
                categories: spec.names.categories.clone().unwrap_or_default(),
                rules: schema.as_ref().map(validation::compile_rules),
                schema,
                selectable_fields: v
                    .selectable_fields
                    .iter()
                    .flatten()
                    .map(|f| f.json_path.trim_start_matches('.').to_string())
                    .collect(),
                printer_columns: v
                    .additional_printer_columns
                    .iter()
                    .flatten()
                    .map(|c| PrinterColumn {
                        name: c.name.clone(),
                        type_: c.type_.clone(),
                        format: c.format.clone().unwrap_or_default(),
                        description: c.description.clone().unwrap_or_default(),
                        priority: c.priority.unwrap_or(0),
                        json_path: c.json_path.clone(),
                    })
                    .collect(),
                view_of: None,
                builtin: Builtin::Custom,
            }
        })
        .collect()
}

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One committed write, as watches see it.
#[derive(Debug)]
pub(crate) struct Change {
    pub rv: u64,
    pub ty: usize,
    pub kind: ChangeKind,
    pub object: Stored,
    /// The object before the write (for selector transitions).
    pub old: Option<Stored>,
    /// The watch lines for `object` as its own type presents it, by event type (ADDED,
    /// MODIFIED, DELETED), each serialized once by the first watch that sends it: every
    /// watch of the type would otherwise serialize the same object again.
    pub lines: [std::sync::OnceLock<bytes::Bytes>; 3],
    /// When the write was committed (a lagging watch delivers it a set time later).
    pub at: tokio::time::Instant,
}

/// Who writes and when.
pub(crate) struct WriteCtx {
    pub manager: String,
    pub now: String,
    pub field_validation: FieldValidation,
    /// `Warning` headers to send back (unknown fields under `fieldValidation=Warn`).
    pub warnings: std::sync::Mutex<Vec<String>>,
}

/// The `fieldValidation` query parameter: what to do about fields the schema does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and warn (the API server's default).
    Warn,
    /// Refuse the request with 400.
    Strict,
}

impl WriteCtx {
    /// Applies the `fieldValidation` policy to the fields pruning removed.
    fn unknown_fields(&self, removed: Vec<String>) -> Result<(), ApiError> {
        if removed.is_empty() {
            return Ok(());
        }
        let described: Vec<String> = removed
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect();
        match self.field_validation {
            FieldValidation::Ignore => Ok(()),
            FieldValidation::Warn => {
                self.warnings
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(described);
                Ok(())
            }
            FieldValidation::Strict => Err(ApiError::bad_request(format!(
                "strict decoding error: {}",
                described.join(", ")
            ))),
        }
    }
}

/// A patch body, by content type.
pub(crate) enum PatchBody {
    Merge(Value),
    Json(json_patch::Patch),
    /// Strategic merge, for built-ins only; handled as a merge patch (maps merge the same way;
    /// list merge keys are not emulated).
    Strategic(Value),
    Apply {
        config: Value,
        force: bool,
    },
}

/// Filters of a list or watch.
#[derive(Clone, Debug, Default)]
pub(crate) struct Filter {
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub(crate) fn matches(&self, object: &Value) -> bool {
        if let Some(ns) = &self.namespace
            && object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                != Some(ns.as_str())
        {
            return false;
        }
        self.labels.matches(object) && self.fields.matches(object)
    }
}

/// Parses a field selector for a type.
pub(crate) fn parse_field_selector(ty: &ResourceType, s: &str) -> Result<FieldSelector, ApiError> {
    FieldSelector::parse(s, |p| ty.field_selectable(p))
}

type Key = (String, String);

/// A stored object, shared by the store, the change history and the answer to the write
/// that made it: writes and watches pass it on instead of copying it.
pub(crate) type Stored = Arc<Value>;

/// All state behind the API.
pub(crate) struct Store {
    pub types: Vec<Arc<ResourceType>>,
    /// Where each type's objects live (itself, or the type it is a view of).
    storage: Vec<usize>,
    objects: Vec<BTreeMap<Key, Stored>>,
    /// The last resourceVersion handed out.
    pub rv: u64,
    history: VecDeque<Arc<Change>>,
    /// Watches from a resourceVersion below this get 410 Gone.
    pub floor: u64,
    history_window: usize,
    pub tx: broadcast::Sender<Arc<Change>>,
}

fn meta<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object
        .get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
}

fn meta_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    object["metadata"]
        .as_object_mut()
        .expect("metadata was just made an object")
}

fn parse_rv(s: &str) -> Option<u64> {
    s.parse().ok()
}

/// Whether the content outside `metadata` differs: a change there bumps `generation`.
/// (Compared in place: copying both objects without `metadata` cost two deep copies a write.)
fn differs_outside_metadata(a: &Value, b: &Value) -> bool {
    match (a.as_object(), b.as_object()) {
        (Some(a), Some(b)) => {
            let outside = |m: &'_ Map<String, Value>| m.keys().filter(|k| *k != "metadata").count();
            outside(a) != outside(b)
                || a.iter()
                    .filter(|(k, _)| *k != "metadata")
                    .any(|(k, v)| b.get(k) != Some(v))
        }
        _ => a != b,
    }
}

const NAME_RE: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

fn name_errors(name: &str) -> Vec<FieldError> {
    static RE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(NAME_RE).expect("static name pattern compiles")
    });
    let re = &*RE;
    let mut errors = Vec::new();
    if name.len() > 253 {
        errors.push(FieldError::invalid(
            "metadata.name",
            json!(name),
            "must be no more than 253 characters",
        ));
    }
    if !re.is_match(name) {
        errors.push(FieldError::invalid(
            "metadata.name",
            json!(name),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        ));
    }
    errors
}

fn generated_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// How managedFields change in a write.
enum Ownership {
    /// A non-apply write by this manager.
    Update(String),
    /// Entries already computed by server-side apply.
    Applied(Vec<ManagedEntry>),
}

impl Store {
    pub(crate) fn new(crds: &[CustomResourceDefinition], history_window: usize) -> Self {
        let mut types = builtin_types();
        for crd in crds {
            types.extend(crd_types(crd));
        }
        let (tx, _) = broadcast::channel(4096);
        let storage = types
            .iter()
            .enumerate()
            .map(|(i, t)| {
                t.view_of
                    .and_then(|(g, p)| {
                        types
                            .iter()
                            .position(|o| o.group == g && o.plural == p && o.version == "v1")
                    })
                    .unwrap_or(i)
            })
            .collect();
        Self {
            storage,
            objects: types.iter().map(|_| BTreeMap::new()).collect(),
            types: types.into_iter().map(Arc::new).collect(),
            rv: 1,
            history: VecDeque::new(),
            floor: 1,
            history_window: history_window.max(1),
            tx,
        }
    }

    /// The types served under one group and version, in registration order.
    pub(crate) fn types_in(&self, group: &str, version: &str) -> Vec<&Arc<ResourceType>> {
        self.types
            .iter()
            .filter(|t| t.group == group && t.version == version)
            .collect()
    }

    /// The type whose store holds `ty`'s objects.
    /// NB: views share their storage type's change stream.
    pub(crate) fn storage_of(&self, ty: usize) -> usize {
        self.storage[ty]
    }

    /// An object as type `ty` presents it.
    pub(crate) fn present(&self, ty: usize, stored: Value) -> Value {
        present(&self.types[ty], stored)
    }

    /// [`Self::present`] for a shared object: copied only when a view converts it.
    fn present_shared(&self, ty: usize, stored: Stored) -> Stored {
        if self.types[ty].view_of.is_some() {
            Arc::new(self.present(ty, Arc::unwrap_or_clone(stored)))
        } else {
            stored
        }
    }

    fn to_storage(&self, ty: usize, object: Value) -> Value {
        if self.storage[ty] == ty {
            object
        } else {
            convert::event_from_core(object)
        }
    }

    fn not_found_as(&self, ty: usize, name: &str, err: ApiError) -> ApiError {
        if err.code == 404 {
            ApiError::not_found(&self.types[ty], name)
        } else {
            err
        }
    }

    pub(crate) fn get(&self, ty: usize, namespace: &str, name: &str) -> Result<Value, ApiError> {
        let s = self.storage[ty];
        let stored = self
            .get_stored(s, namespace, name)
            .map_err(|e| self.not_found_as(ty, name, e))?;
        Ok(self.present(ty, Arc::unwrap_or_clone(stored)))
    }

    /// Whether the object exists (without copying it, unlike [`Self::get`]).
    pub(crate) fn contains(&self, ty: usize, namespace: &str, name: &str) -> bool {
        let s = self.storage[ty];
        self.objects[s].contains_key(&self.key(s, namespace, name))
    }

    /// Objects matching the filter (applied to the presented form), in (namespace, name) order,
    /// starting after `after`.
    pub(crate) fn list(
        &self,
        ty: usize,
        filter: &Filter,
        after: Option<&(String, String)>,
    ) -> Vec<Value> {
        self.list_page(ty, filter, after, None).0
    }

    /// Like [`Self::list`], but only the first `limit` matches are copied out; the second
    /// value counts the matches after them (`remainingItemCount`).
    pub(crate) fn list_page(
        &self,
        ty: usize,
        filter: &Filter,
        after: Option<&(String, String)>,
        limit: Option<usize>,
    ) -> (Vec<Value>, usize) {
        let s = self.storage[ty];
        let limit = limit.unwrap_or(usize::MAX);
        let mut items = Vec::new();
        let mut remaining = 0;
        let candidates = self.objects[s]
            .iter()
            .filter(|(k, _)| after.is_none_or(|a| *k > a))
            .map(|(_, v)| v);
        for stored in candidates {
            // A type serving its own storage matches on the stored object, copied only when
            // it is returned; a view (core/v1 Event) must convert first.
            if s == ty {
                if !filter.matches(stored) {
                    continue;
                }
                if items.len() < limit {
                    items.push(Value::clone(stored));
                } else {
                    remaining += 1;
                }
            } else {
                let presented = self.present(ty, Value::clone(stored));
                if !filter.matches(&presented) {
                    continue;
                }
                if items.len() < limit {
                    items.push(presented);
                } else {
                    remaining += 1;
                }
            }
        }
        (items, remaining)
    }

    /// POST: create a new object.
    pub(crate) fn create(
        &mut self,
        ty: usize,
        namespace: &str,
        body: Value,
        ctx: &WriteCtx,
    ) -> Result<Stored, ApiError> {
        let body = self.to_storage(ty, body);
        let created = self.create_stored(self.storage[ty], namespace, body, ctx)?;
        Ok(self.present_shared(ty, created))
    }

    /// PUT on the main resource or `/status`.
    pub(crate) fn update(
        &mut self,
        ty: usize,
        namespace: &str,
        name: &str,
        body: Value,
        status: bool,
        ctx: &WriteCtx,
    ) -> Result<Stored, ApiError> {
        let body = self.to_storage(ty, body);
        let updated = self
            .update_stored(self.storage[ty], namespace, name, body, status, ctx)
            .map_err(|e| self.not_found_as(ty, name, e))?;
        Ok(self.present_shared(ty, updated))
    }

    /// PATCH (merge, JSON, strategic or apply) on the main resource or `/status`.
    pub(crate) fn patch(
        &mut self,
        ty: usize,
        namespace: &str,
        name: &str,
        patch: PatchBody,
        status: bool,
        ctx: &WriteCtx,
    ) -> Result<Stored, ApiError> {
        let s = self.storage[ty];
        if s == ty {
            return self.patch_stored(ty, namespace, name, patch, status, ctx);
        }
        // A view: patch the presented form, then store the converted result.
        let patched = match patch {
            PatchBody::Apply { config, force } => {
                let config = self.to_storage(ty, config);
                self.patch_stored(
                    s,
                    namespace,
                    name,
                    PatchBody::Apply { config, force },
                    status,
                    ctx,
                )
            }
            PatchBody::Merge(p) | PatchBody::Strategic(p) => {
                let mut object = self.get(ty, namespace, name)?;
                json_patch::merge(&mut object, &p);
                self.update_stored(s, namespace, name, self.to_storage(ty, object), status, ctx)
            }
            PatchBody::Json(p) => {
                let mut object = self.get(ty, namespace, name)?;
                json_patch::patch(&mut object, &p).map_err(|e| {
                    ApiError::invalid(
                        &self.types[ty],
                        name,
                        &[FieldError::invalid("", json!(""), e.to_string())],
                    )
                })?;
                self.update_stored(s, namespace, name, self.to_storage(ty, object), status, ctx)
            }
        }
        .map_err(|e| self.not_found_as(ty, name, e))?;
        Ok(self.present_shared(ty, patched))
    }

    /// DELETE, see [`Self::delete_stored`].
    pub(crate) fn delete(
        &mut self,
        ty: usize,
        namespace: &str,
        name: &str,
        preconditions: (Option<String>, Option<String>),
        now: &str,
    ) -> Result<Stored, ApiError> {
        let deleted = self
            .delete_stored(self.storage[ty], namespace, name, preconditions, now)
            .map_err(|e| self.not_found_as(ty, name, e))?;
        Ok(self.present_shared(ty, deleted))
    }

    /// Finds a hosted type by group, version and plural.
    pub(crate) fn find_type(&self, group: &str, version: &str, plural: &str) -> Option<usize> {
        self.types
            .iter()
            .position(|t| t.group == group && t.version == version && t.plural == plural)
    }

    fn key(&self, ty: usize, namespace: &str, name: &str) -> Key {
        let ns = if self.types[ty].namespaced {
            namespace.to_string()
        } else {
            String::new()
        };
        (ns, name.to_string())
    }

    fn record(&mut self, ty: usize, kind: ChangeKind, object: Stored, old: Option<Stored>) {
        let change = Arc::new(Change {
            rv: self.rv,
            ty,
            kind,
            object,
            old,
            lines: Default::default(),
            at: tokio::time::Instant::now(),
        });
        self.history.push_back(change.clone());
        while self.history.len() > self.history_window {
            if let Some(dropped) = self.history.pop_front() {
                self.floor = dropped.rv;
            }
        }
        let _ = self.tx.send(change);
    }

    /// Forgets the change history, as an etcd compaction would: any watch resuming from a
    /// resourceVersion issued so far gets 410 Gone and must re-list.
    pub(crate) fn expire_history(&mut self) {
        self.rv += 1;
        self.floor = self.rv;
        self.history.clear();
    }

    /// Changes after `from` (for resuming a watch), or 410 if the window no longer reaches back.
    pub(crate) fn changes_since(&self, from: u64) -> Result<Vec<Arc<Change>>, ApiError> {
        if from < self.floor {
            return Err(ApiError::expired(format!(
                "too old resource version: {from} ({})",
                self.floor
            )));
        }
        Ok(self
            .history
            .iter()
            .filter(|c| c.rv > from)
            .cloned()
            .collect())
    }

    fn get_stored(&self, ty: usize, namespace: &str, name: &str) -> Result<Stored, ApiError> {
        self.objects[ty]
            .get(&self.key(ty, namespace, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(&self.types[ty], name))
    }

    fn check_identity(
        &self,
        ty: usize,
        namespace: &str,
        object: &mut Value,
    ) -> Result<(), ApiError> {
        let t = &self.types[ty];
        if let Some(kind) = object.get("kind").and_then(Value::as_str)
            && kind != t.kind
        {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({}) does not match the expected API version ({})",
                object
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                t.api_version()
            )));
        }
        object["apiVersion"] = json!(t.api_version());
        object["kind"] = json!(t.kind);
        let m = meta_mut(object);
        if t.namespaced {
            match m.get("namespace").and_then(Value::as_str) {
                Some(ns) if !ns.is_empty() && ns != namespace => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {
                    m.insert("namespace".into(), json!(namespace));
                }
            }
        } else {
            m.remove("namespace");
        }
        Ok(())
    }

    /// Kind-specific normalisation, pruning, defaulting and validation.
    fn admit(
        &self,
        ty: usize,
        object: &mut Value,
        old: Option<&Value>,
        ctx: &WriteCtx,
    ) -> Result<(), ApiError> {
        let t = &self.types[ty];
        let name = meta(object, "name").unwrap_or_default().to_string();
        let mut errors = Vec::new();
        if old.is_none() {
            errors.extend(name_errors(&name));
        }
        match t.builtin {
            Builtin::Secret => errors.extend(normalise_secret(object)),
            Builtin::Plain => {}
            Builtin::Custom => {
                if let (Some(schema), Some(rules)) = (&t.schema, &t.rules) {
                    ctx.unknown_fields(validation::prune_object(object, schema))?;
                    validation::apply_defaults(object, schema);
                    let root = kube::core::cel::RootContext {
                        api_version: t.api_version(),
                        api_group: t.group.clone(),
                        kind: t.kind.clone(),
                    };
                    errors.extend(validation::validate(object, old, schema, rules, &root));
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(t, &name, &errors))
        }
    }

    fn writer<'a>(
        &self,
        ty: usize,
        ctx: &'a WriteCtx,
        manager: &'a str,
        scope: Scope,
        api_version: &'a str,
    ) -> Writer<'a> {
        let _ = ty;
        Writer {
            manager,
            scope,
            api_version,
            now: &ctx.now,
        }
    }

    fn main_scope(&self, ty: usize) -> Scope {
        Scope::Main {
            status_subresource: self.types[ty].status_subresource,
        }
    }

    /// POST: create a new object.
    fn create_stored(
        &mut self,
        ty: usize,
        namespace: &str,
        body: Value,
        ctx: &WriteCtx,
    ) -> Result<Stored, ApiError> {
        self.create_owned(
            ty,
            namespace,
            body,
            ctx,
            Ownership::Update(ctx.manager.clone()),
        )
    }

    fn create_owned(
        &mut self,
        ty: usize,
        namespace: &str,
        mut object: Value,
        ctx: &WriteCtx,
        ownership: Ownership,
    ) -> Result<Stored, ApiError> {
        if !object.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request is not a JSON object",
            ));
        }
        self.check_identity(ty, namespace, &mut object)?;
        let t = self.types[ty].clone();
        let m = meta_mut(&mut object);
        if m.get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|rv| !rv.is_empty())
        {
            return Err(ApiError::internal(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let name = match (
            m.get("name").and_then(Value::as_str),
            m.get("generateName").and_then(Value::as_str),
        ) {
            (Some(name), _) if !name.is_empty() => name.to_string(),
            (_, Some(prefix)) if !prefix.is_empty() => format!("{prefix}{}", generated_suffix()),
            _ => {
                return Err(ApiError::invalid(
                    &t,
                    "",
                    &[FieldError {
                        field: "metadata.name".into(),
                        kind: FieldErrorKind::Required {
                            detail: "name or generateName is required".into(),
                        },
                    }],
                ));
            }
        };
        m.insert("name".into(), json!(name));
        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("creationTimestamp".into(), json!(ctx.now));
        for server_owned in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
        ] {
            m.remove(server_owned);
        }
        if t.is_custom() {
            m.insert("generation".into(), json!(1));
        } else {
            m.remove("generation");
        }
        if t.status_subresource
            && let Some(map) = object.as_object_mut()
        {
            map.remove("status");
        }
        self.admit(ty, &mut object, None, ctx)?;
        let key = self.key(ty, namespace, &name);
        if self.objects[ty].contains_key(&key) {
            return Err(ApiError::already_exists(&t, &name));
        }
        let api_version = t.api_version();
        let entries = match ownership {
            Ownership::Update(manager) => {
                let scope = self.main_scope(ty);
                let mut entries = Vec::new();
                let writer = self.writer(ty, ctx, &manager, scope, &api_version);
                fields::record_update(
                    &mut entries,
                    &writer,
                    &BTreeMap::new(),
                    &fields::leaves(&object, t.schema.as_ref(), scope),
                );
                entries
            }
            Ownership::Applied(entries) => entries,
        };
        fields::write_managed(&mut object, &entries);
        self.rv += 1;
        meta_mut(&mut object).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let object = Arc::new(object);
        self.objects[ty].insert(key, object.clone());
        self.record(ty, ChangeKind::Added, object.clone(), None);
        Ok(object)
    }

    fn check_precondition(
        &self,
        ty: usize,
        name: &str,
        old: &Value,
        new: &Value,
    ) -> Result<(), ApiError> {
        match meta(new, "resourceVersion") {
            Some(rv) if !rv.is_empty() => {
                if parse_rv(rv).is_none() {
                    return Err(ApiError::bad_request(format!(
                        "invalid resource version: {rv:?}"
                    )));
                }
                if Some(rv) != meta(old, "resourceVersion") {
                    return Err(ApiError::conflict_modified(&self.types[ty], name));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// PUT on the main resource or `/status`.
    fn update_stored(
        &mut self,
        ty: usize,
        namespace: &str,
        name: &str,
        mut body: Value,
        status: bool,
        ctx: &WriteCtx,
    ) -> Result<Stored, ApiError> {
        let t = self.types[ty].clone();
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request is not a JSON object",
            ));
        }
        self.check_identity(ty, namespace, &mut body)?;
        if let Some(body_name) = meta(&body, "name")
            && body_name != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let old = self.get_stored(ty, namespace, name)?;
        if meta(&body, "resourceVersion").is_none_or(str::is_empty) && t.is_custom() {
            // CRDs do not allow unconditional updates.
            return Err(ApiError::invalid(
                &t,
                name,
                &[FieldError::invalid(
                    "metadata.resourceVersion",
                    json!("0x0"),
                    "must be specified for an update",
                )],
            ));
        }
        self.check_precondition(ty, name, &old, &body)?;
        let scope = if status {
            Scope::Status
        } else {
            self.main_scope(ty)
        };
        self.commit_update(
            ty,
            namespace,
            name,
            old,
            body,
            scope,
            ctx,
            Ownership::Update(ctx.manager.clone()),
        )
    }

    /// PATCH (merge, JSON, strategic or apply) on the main resource or `/status`.
    #[allow(clippy::too_many_arguments)]
    fn patch_stored(
        &mut self,
        ty: usize,
        namespace: &str,
        name: &str,
        patch: PatchBody,
        status: bool,
        ctx: &WriteCtx,
    ) -> Result<Stored, ApiError> {
        let t = self.types[ty].clone();
        let scope = if status {
            Scope::Status
        } else {
            self.main_scope(ty)
        };
        let existing = self.get_stored(ty, namespace, name);
        match patch {
            PatchBody::Apply { mut config, force } => {
                if !config.is_object() {
                    return Err(ApiError::bad_request(
                        "the apply configuration is not an object",
                    ));
                }
                if let Some(config_name) = meta(&config, "name")
                    && config_name != name
                {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({config_name}) does not match the name on the URL ({name})"
                    )));
                }
                if config.get("apiVersion").and_then(Value::as_str)
                    != Some(t.api_version().as_str())
                    || config.get("kind").and_then(Value::as_str) != Some(t.kind.as_str())
                {
                    return Err(ApiError::bad_request(format!(
                        "apply configurations need apiVersion {:?} and kind {:?}",
                        t.api_version(),
                        t.kind
                    )));
                }
                if let Some(schema) = &t.schema {
                    ctx.unknown_fields(validation::prune_object(&mut config, schema))?;
                }
                // The applied metadata.resourceVersion is a precondition, not a value to own.
                let precondition = meta(&config, "resourceVersion").map(String::from);
                if let Some(m) = config.get_mut("metadata").and_then(Value::as_object_mut) {
                    // A uid stays in as a precondition for the main resource (an immutable
                    // field); on /status the strategy copies the old object over it.
                    for server_owned in [
                        "resourceVersion",
                        "creationTimestamp",
                        "generation",
                        "managedFields",
                    ] {
                        m.remove(server_owned);
                    }
                    if status {
                        m.remove("uid");
                    }
                }
                let api_version = t.api_version();
                let writer = self.writer(ty, ctx, &ctx.manager, scope, &api_version);
                match existing {
                    Err(not_found) => {
                        // Subresources never create. NB: like the real server, an apply with
                        // a resourceVersion to a missing object creates it.
                        if status {
                            return Err(not_found);
                        }
                        if let Some(m) = config.get_mut("metadata").and_then(Value::as_object_mut) {
                            m.remove("uid");
                        }
                        let mut entries = Vec::new();
                        let merged = fields::apply(
                            &json!({}),
                            &config,
                            t.schema.as_ref(),
                            &mut entries,
                            &writer,
                            force,
                        )
                        .map_err(|c| ApiError::apply_conflicts(&t, name, &c))?;
                        let mut object = merged;
                        meta_mut(&mut object).insert("name".into(), json!(name));
                        self.create_owned(ty, namespace, object, ctx, Ownership::Applied(entries))
                    }
                    Ok(old) => {
                        if let Some(rv) = &precondition
                            && Some(rv.as_str()) != meta(&old, "resourceVersion")
                        {
                            return Err(ApiError::conflict_modified(&t, name));
                        }
                        let mut entries = fields::read_managed(&old);
                        let merged = fields::apply(
                            &old,
                            &config,
                            t.schema.as_ref(),
                            &mut entries,
                            &writer,
                            force,
                        )
                        .map_err(|c| ApiError::apply_conflicts(&t, name, &c))?;
                        self.commit_update(
                            ty,
                            namespace,
                            name,
                            old,
                            merged,
                            scope,
                            ctx,
                            Ownership::Applied(entries),
                        )
                    }
                }
            }
            PatchBody::Merge(p) | PatchBody::Strategic(p) => {
                let old = existing?;
                let mut new = Value::clone(&old);
                json_patch::merge(&mut new, &p);
                self.check_precondition(ty, name, &old, &new)?;
                self.commit_update(
                    ty,
                    namespace,
                    name,
                    old,
                    new,
                    scope,
                    ctx,
                    Ownership::Update(ctx.manager.clone()),
                )
            }
            PatchBody::Json(p) => {
                let old = existing?;
                let mut new = Value::clone(&old);
                json_patch::patch(&mut new, &p).map_err(|e| {
                    ApiError::invalid(
                        &t,
                        name,
                        &[FieldError::invalid("", json!(""), e.to_string())],
                    )
                })?;
                self.check_precondition(ty, name, &old, &new)?;
                self.commit_update(
                    ty,
                    namespace,
                    name,
                    old,
                    new,
                    scope,
                    ctx,
                    Ownership::Update(ctx.manager.clone()),
                )
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn commit_update(
        &mut self,
        ty: usize,
        namespace: &str,
        name: &str,
        old: Stored,
        mut new: Value,
        scope: Scope,
        ctx: &WriteCtx,
        ownership: Ownership,
    ) -> Result<Stored, ApiError> {
        let t = self.types[ty].clone();
        // Strategy: which parts of the submitted object survive.
        match scope {
            Scope::Status => {
                // Everything but `status` as stored. The submitted object is usually the
                // stored one with a new status: its equal parts are kept rather than
                // replaced by a deep copy of the old object.
                let status = new.as_object_mut().and_then(|m| m.remove("status"));
                match (new.as_object_mut(), old.as_object()) {
                    (Some(submitted), Some(stored)) => {
                        submitted.retain(|k, _| stored.contains_key(k));
                        for (k, v) in stored {
                            if k != "status" && submitted.get(k) != Some(v) {
                                submitted.insert(k.clone(), v.clone());
                            }
                        }
                    }
                    _ => {
                        new = Value::clone(&old);
                        if let Some(map) = new.as_object_mut() {
                            map.remove("status");
                        }
                    }
                }
                if let Some(s) = status {
                    new["status"] = s;
                }
            }
            Scope::Main {
                status_subresource: true,
            } => match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(map) = new.as_object_mut() {
                        map.remove("status");
                    }
                }
            },
            Scope::Main {
                status_subresource: false,
            } => {}
        }
        self.check_identity(ty, namespace, &mut new)?;
        {
            let old_meta = old.get("metadata").and_then(Value::as_object);
            if scope != Scope::Status
                && let Some(uid) = meta(&new, "uid").filter(|u| !u.is_empty())
                && Some(uid) != meta(&old, "uid")
            {
                return Err(ApiError::invalid(
                    &t,
                    name,
                    &[FieldError::invalid(
                        "metadata.uid",
                        json!(uid),
                        "field is immutable",
                    )],
                ));
            }
            let m = meta_mut(&mut new);
            for server_owned in [
                "name",
                "uid",
                "creationTimestamp",
                "generation",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "resourceVersion",
            ] {
                match old_meta.and_then(|m| m.get(server_owned)) {
                    Some(v) => m.insert(server_owned.into(), v.clone()),
                    None => m.remove(server_owned),
                };
            }
            m.remove("selfLink");
        }
        self.admit(ty, &mut new, Some(&old), ctx)?;
        if t.is_custom() && scope != Scope::Status && differs_outside_metadata(&new, &old) {
            let generation = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            meta_mut(&mut new).insert("generation".into(), json!(generation + 1));
        }
        let entries = match ownership {
            Ownership::Update(manager) => {
                let mut entries = fields::read_managed(&old);
                let api_version = t.api_version();
                let writer = self.writer(ty, ctx, &manager, scope, &api_version);
                let before = fields::leaves(&old, t.schema.as_ref(), scope);
                let after = fields::leaves(&new, t.schema.as_ref(), scope);
                fields::record_update(&mut entries, &writer, &before, &after);
                entries
            }
            Ownership::Applied(entries) => entries,
        };
        fields::write_managed(&mut new, &entries);
        if new == *old {
            // A no-op write is not persisted: no new resourceVersion, no watch event.
            return Ok(old);
        }
        let key = self.key(ty, namespace, name);
        self.rv += 1;
        meta_mut(&mut new).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let finalized = new.pointer("/metadata/deletionTimestamp").is_some()
            && new
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
        let new = Arc::new(new);
        if finalized {
            self.objects[ty].remove(&key);
            self.record(ty, ChangeKind::Deleted, new.clone(), Some(old));
        } else {
            self.objects[ty].insert(key, new.clone());
            self.record(ty, ChangeKind::Modified, new.clone(), Some(old));
        }
        Ok(new)
    }

    /// DELETE: immediate unless finalizers are present, in which case `deletionTimestamp` is set
    /// and the object goes once the last finalizer is removed.
    fn delete_stored(
        &mut self,
        ty: usize,
        namespace: &str,
        name: &str,
        preconditions: (Option<String>, Option<String>),
        now: &str,
    ) -> Result<Stored, ApiError> {
        let t = self.types[ty].clone();
        let old = self.get_stored(ty, namespace, name)?;
        let (rv, uid) = preconditions;
        if let Some(rv) = rv
            && Some(rv.as_str()) != meta(&old, "resourceVersion")
        {
            return Err(ApiError::conflict_modified(&t, name));
        }
        if let Some(uid) = uid
            && Some(uid.as_str()) != meta(&old, "uid")
        {
            return Err(ApiError::conflict_modified(&t, name));
        }
        let key = self.key(ty, namespace, name);
        let has_finalizers = old
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        self.rv += 1;
        let mut object = Value::clone(&old);
        let m = meta_mut(&mut object);
        m.insert("resourceVersion".into(), json!(self.rv.to_string()));
        if has_finalizers {
            if old.pointer("/metadata/deletionTimestamp").is_some() {
                self.rv -= 1;
                return Ok(old);
            }
            m.insert("deletionTimestamp".into(), json!(now));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            if t.is_custom() {
                let generation = old
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(1);
                m.insert("generation".into(), json!(generation + 1));
            }
            let object = Arc::new(object);
            self.objects[ty].insert(key, object.clone());
            self.record(ty, ChangeKind::Modified, object.clone(), Some(old));
            Ok(object)
        } else {
            let object = Arc::new(object);
            self.objects[ty].remove(&key);
            self.record(ty, ChangeKind::Deleted, object.clone(), Some(old));
            Ok(object)
        }
    }
}

/// An object as a type presents it: views convert from their storage form.
pub(crate) fn present(t: &ResourceType, stored: Value) -> Value {
    if t.view_of.is_some() {
        convert::event_to_core(stored)
    } else {
        stored
    }
}

/// Secret normalisation: `stringData` merged into base64 `data`, `type` defaulted, `data` checked.
fn normalise_secret(object: &mut Value) -> Vec<FieldError> {
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    let mut errors = Vec::new();
    let Some(map) = object.as_object_mut() else {
        return errors;
    };
    if let Some(Value::Object(string_data)) = map.remove("stringData") {
        let data = map.entry("data").or_insert_with(|| json!({}));
        if let Some(data) = data.as_object_mut() {
            for (k, v) in string_data {
                data.insert(k, json!(engine.encode(v.as_str().unwrap_or_default())));
            }
        }
    }
    if !map.contains_key("type") {
        map.insert("type".into(), json!("Opaque"));
    }
    if let Some(data) = map.get("data").and_then(Value::as_object) {
        for (k, v) in data {
            if v.as_str().is_none_or(|s| engine.decode(s).is_err()) {
                errors.push(FieldError::invalid(
                    &format!("data[{k}]"),
                    json!("<secret>"),
                    "must be base64-encoded bytes",
                ));
            }
        }
    }
    errors
}
