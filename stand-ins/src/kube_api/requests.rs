//! What the API records of each request it answers (the handle's request
//! log), including the injected fault that answered instead, if one did.

/// Request verbs, named as in API server audit logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verb {
    /// GET of one object.
    Get,
    /// GET of a collection.
    List,
    /// GET of a collection with `watch=true`.
    Watch,
    /// POST.
    Create,
    /// PUT.
    Update,
    /// PATCH (any patch type, including server-side apply).
    Patch,
    /// DELETE of one object.
    Delete,
    /// DELETE of a collection.
    DeleteCollection,
}

impl Verb {
    /// Whether the verb writes.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Verb::Create | Verb::Update | Verb::Patch | Verb::Delete | Verb::DeleteCollection
        )
    }
}

/// One request the API answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// What was asked.
    pub verb: Verb,
    /// API group (`""` for core).
    pub group: String,
    /// Resource plural, e.g. `copyimagecancellations`.
    pub resource: String,
    /// `"status"` for the status subresource, else `""`.
    pub subresource: String,
    /// Namespace from the URL, if any.
    pub namespace: Option<String>,
    /// Object name from the URL, if any.
    pub name: Option<String>,
    /// The PATCH content type, if a patch.
    pub patch_type: Option<String>,
    /// The `fieldManager` query parameter, if given.
    pub field_manager: Option<String>,
    /// HTTP status code of the answer.
    pub code: u16,
    /// The `User-Agent` header, if sent (tells a test's own requests from the controller's).
    pub user_agent: Option<String>,
    /// When the request arrived.
    pub received: std::time::Instant,
    /// When the answer was ready (for a watch: when the stream started).
    pub time: jiff::Timestamp,
    /// `metadata.resourceVersion` of the object a successful create, update, patch or
    /// delete wrote, so a test can tell which request produced what it reads later.
    pub resource_version: Option<String>,
    /// The injected fault that answered instead of the API, if one did.
    pub injected: Option<FaultKind>,
}

/// How an injected fault answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// 409 Conflict, "the object has been modified".
    Conflict,
    /// 500 InternalError.
    InternalError,
    /// 429 TooManyRequests with a `Retry-After` header and `details.retryAfterSeconds`, as the
    /// API server answers when API Priority and Fairness rejects a request.
    TooManyRequests {
        /// Seconds the client is asked to wait.
        retry_after_seconds: u32,
    },
}
