//! The checks behind the `cargo fuzz` targets in `fuzz/`, in a crate of the
//! main workspace so the fuzz targets and the corpus replay test (`cargo
//! test`) run the very same code. Each `check_*` takes the raw fuzz input, decodes it, runs one parser
//! of outside input and panics when an invariant breaks.
//!
//! Inputs are a small text framing rather than opaque bytes, so the seed
//! corpora in `fuzz/corpus/<target>/` are real answers a person can read
//! and write, and libFuzzer's mutations keep their structure:
//!
//! ```text
//! 400                                  <- first line: a status, a mode, ...
//! content-type: application/json       <- "name: value" lines
//!                                      <- an empty line
//! {"Code":"X","Message":"{TOKEN%}"}    <- the body: every byte after it
//! ```
//!
//! In bodies and header values, `{SECRET}`, `{TOKEN}`, `{SIG}` and `{OIDC}`
//! expand to fixed marker secrets, `{TOKEN%}` to the marker percent-encoded
//! once and `{TOKEN%%}` twice: that is how a fuzzer puts a secret where a
//! service could echo it, and how the checks know which text must never
//! come out.
//!
//! NB: not part of the operator; it only calls the operator's parsers and
//! signers (and the ECS simulator's verifiers) from outside.

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use copyimage_canceller::credentials::AccessKey;
use copyimage_canceller::ecs::client::{MAX_MESSAGE_CHARS, RETRY_AFTER_HEADER, parse_response};
use copyimage_canceller::ecs::signature::percent_encode;
use copyimage_canceller::ecs::{CancelOutcome, ServiceError, TransportError};

/// The marker AccessKey secret (30 alphanumerics, like a real one).
pub const SECRET_MARKER: &str = "Fz9AccessKeySecretMarker00000Q";
/// The marker STS security token (Base64 alphabet, `+`, `/`, `=` included).
pub const TOKEN_MARKER: &str = "CAISFz9+Token/Marker0000==";
/// The marker signature (Base64 of 20 bytes, like HMAC-SHA1's).
pub const SIGNATURE_MARKER: &str = "Fz9Sig+Marker/000000000000=";
/// The marker OIDC token (a JWT's three dotted parts).
pub const OIDC_MARKER: &str = "eyJhbGciOiJSUzI1NiJ9.Fz9OidcMarker.c2lnbmF0dXJl";

/// The placeholders and the markers they expand to.
const PLACEHOLDERS: [(&str, &str); 4] = [
    ("SECRET", SECRET_MARKER),
    ("TOKEN", TOKEN_MARKER),
    ("SIG", SIGNATURE_MARKER),
    ("OIDC", OIDC_MARKER),
];

/// A fuzz target's check: panics when an invariant breaks.
pub type Check = fn(&[u8]);

/// Every fuzz target (its name in `fuzz/`) and its check.
pub const TARGETS: [(&str, Check); 4] = [
    ("ecs_response", check_ecs_response),
    ("credentials", check_credentials),
    ("signer", check_signer),
    ("simulator_request", check_simulator_request),
];

/// The most characters kept of short ECS fields (code, request ID, host ID).
const MAX_FIELD_CHARS: usize = 128;

/// Every form a marker takes in a service echo: as is, percent-encoded
/// once, and twice (the string to sign holds values encoded twice).
pub fn marker_forms(marker: &str) -> [String; 3] {
    let once = percent_encode(marker);
    let twice = percent_encode(&once);
    [marker.to_owned(), once, twice]
}

/// `data` with every placeholder expanded.
pub fn expand_placeholders(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    for (name, marker) in PLACEHOLDERS {
        let [plain, once, twice] = marker_forms(marker);
        // Longest placeholder first, so `{X%%}` is not read as `{X%}` + `%}`.
        out = replace_bytes(&out, format!("{{{name}%%}}").as_bytes(), twice.as_bytes());
        out = replace_bytes(&out, format!("{{{name}%}}").as_bytes(), once.as_bytes());
        out = replace_bytes(&out, format!("{{{name}}}").as_bytes(), plain.as_bytes());
    }
    out
}

fn replace_bytes(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while let Some(at) = find_bytes(rest, from) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(to);
        rest = &rest[at + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}

fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A framed input: the first line, the `name: value` lines up to the first
/// empty line, and the body after it (placeholders expanded everywhere but
/// in the first line and the names).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Framed {
    /// The first line, without its line end.
    pub first_line: String,
    /// `(name, value)` of every head line with a `:` (value trimmed of spaces).
    pub fields: Vec<(String, Vec<u8>)>,
    /// Every byte after the empty line.
    pub body: Vec<u8>,
}

impl Framed {
    /// Decodes `data`; never fails (a missing part is empty).
    pub fn decode(data: &[u8]) -> Self {
        let mut framed = Self::default();
        let mut rest = data;
        let mut first = true;
        loop {
            let (line, after) = match rest.iter().position(|&b| b == b'\n') {
                Some(at) => (&rest[..at], Some(&rest[at + 1..])),
                None => (rest, None),
            };
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if first {
                framed.first_line = String::from_utf8_lossy(line).trim().to_owned();
                first = false;
            } else if line.is_empty() {
                framed.body = expand_placeholders(after.unwrap_or_default());
                return framed;
            } else if let Some(colon) = line.iter().position(|&b| b == b':') {
                let name = String::from_utf8_lossy(&line[..colon]).trim().to_owned();
                let value = line[colon + 1..].trim_ascii();
                framed.fields.push((name, expand_placeholders(value)));
            }
            match after {
                Some(after) => rest = after,
                None => return framed,
            }
        }
    }

    /// The fields that make a valid HTTP header, in order (others dropped,
    /// as an HTTP client would never hand them over).
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in &self.fields {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value),
            ) {
                headers.append(name, value);
            }
        }
        headers
    }
}

// ---------------------------------------------------------------- ECS answers

/// `fuzz_targets/ecs_response.rs`: an ECS answer (status line, headers,
/// body) through [`parse_response`], with the client's sensitive values
/// (secret, token, signature).
///
/// Invariants: it never panics; no marker comes out in any form (plain,
/// encoded once or twice) in the outcome's `Debug` output; every kept text
/// is bounded and free of control characters; the outcome is the one the
/// contract names (a JSON object with a `Code` is a service error with
/// that status, a 2xx JSON object with a `RequestId` and no `Code` is
/// success, anything else a transport error carrying the status), with
/// plain codes and request IDs kept exactly and `x-acs-retry-after` read
/// as milliseconds.
pub fn check_ecs_response(data: &[u8]) {
    let framed = Framed::decode(data);
    let status = framed.first_line.parse::<u16>().unwrap_or(200);
    let headers = framed.headers();
    let body = &framed.body;
    let sensitive = [SECRET_MARKER, TOKEN_MARKER, SIGNATURE_MARKER];
    let outcome = parse_response(status, &headers, body, &sensitive);

    let debug = format!("{outcome:?} {outcome:#?}");
    for marker in sensitive {
        for form in marker_forms(marker) {
            assert!(!debug.contains(&form), "{form:?} leaked: {debug}");
        }
    }

    match (&outcome, expected_ecs_kind(status, body)) {
        (CancelOutcome::Cancelled { request_id }, EcsKind::Cancelled { request_id: raw }) => {
            assert_kept(request_id, MAX_FIELD_CHARS);
            if is_plain(&raw) {
                assert_eq!(request_id, &raw, "a plain RequestId is kept exactly");
            }
        }
        (CancelOutcome::Service(err), EcsKind::Service { code: raw }) => {
            check_service_error(err, status, &headers);
            if is_plain(&raw) {
                assert_eq!(err.code, raw, "a plain Code is kept exactly");
            }
        }
        (CancelOutcome::Transport(err), EcsKind::Transport) => check_transport(err, status),
        (got, want) => panic!("expected {want:?}, got {got:?}"),
    }
}

/// What the contract says an answer is.
#[derive(Debug)]
enum EcsKind {
    Cancelled { request_id: String },
    Service { code: String },
    Transport,
}

/// The contract's classification, written from the contract: the first of
/// the two spellings that is a non-empty string or a number counts.
fn expected_ecs_kind(status: u16, body: &[u8]) -> EcsKind {
    let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(body) else {
        return EcsKind::Transport;
    };
    let field = |names: [&str; 2]| {
        names.iter().find_map(|name| match object.get(*name) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        })
    };
    match (field(["Code", "code"]), field(["RequestId", "requestId"])) {
        (Some(code), _) => EcsKind::Service { code },
        (None, Some(request_id)) if (200..300).contains(&status) => {
            EcsKind::Cancelled { request_id }
        }
        _ => EcsKind::Transport,
    }
}

/// Short, printable, and no marker or echo keyword in it: such text is
/// kept exactly.
fn is_plain(text: &str) -> bool {
    text.chars().count() <= MAX_FIELD_CHARS
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        && !PLACEHOLDERS.iter().any(|(_, m)| text.contains(m))
}

/// At most `max_chars` characters and no control character.
fn assert_kept(text: &str, max_chars: usize) {
    assert!(
        text.chars().count() <= max_chars,
        "{} characters kept, at most {max_chars}: {text:?}",
        text.chars().count()
    );
    assert!(
        !text.chars().any(char::is_control),
        "control character kept: {text:?}"
    );
}

fn check_service_error(err: &ServiceError, status: u16, headers: &HeaderMap) {
    assert_eq!(err.http_status, status);
    assert!(!err.code.is_empty(), "a service error has a code");
    assert_kept(&err.code, MAX_FIELD_CHARS);
    assert_kept(&err.message, MAX_MESSAGE_CHARS);
    for short in [&err.request_id, &err.host_id].into_iter().flatten() {
        assert_kept(short, MAX_FIELD_CHARS);
    }
    if let Some(recommend) = &err.recommend {
        assert_kept(recommend, MAX_MESSAGE_CHARS);
    }
    let want = headers
        .get(RETRY_AFTER_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(std::time::Duration::from_millis);
    assert_eq!(err.retry_after, want, "x-acs-retry-after in milliseconds");
}

fn check_transport(err: &TransportError, status: u16) {
    assert_eq!(err.http_status, Some(status));
    assert_kept(&err.message, MAX_MESSAGE_CHARS);
    assert!(
        err.message.starts_with(&format!("HTTP {status}")),
        "the message names the status: {}",
        err.message
    );
}

// ------------------------------------------------- Secrets and credentials

/// `fuzz_targets/credentials.rs`: every parser of key material. The first
/// line picks one:
///
/// - `secret`: `name: value` lines are a Kubernetes Secret's `data`
///   (`string.name: value` goes to `stringData`), values percent-decoded
///   (so any byte can be written), through
///   [`copyimage_canceller::controller::secrets::access_key_from_secret`];
/// - `env`: `VARIABLE: value` lines are the environment, through
///   [`AccessKey::from_lookup`];
/// - `imds`: the body is the metadata service's credentials answer,
///   through [`copyimage_canceller::identity::imds::parse_credentials`];
/// - `sts <status>`: the body is an STS AssumeRoleWithOIDC answer, through
///   [`copyimage_canceller::identity::rrsa::parse_response`] with the marker OIDC token
///   as the value to scrub.
///
/// Invariants: never a panic; the Secret and environment parsers give
/// exactly the key or the error their documentation describes (errors
/// name the Secret and the key, never a value); a key's `Debug` output is
/// the same whatever its secret and token; a marker secret sent as an
/// answer's AccessKeySecret or SecurityToken never comes out in an error's
/// `Display` or `Debug` (unless the answer has it elsewhere too); the OIDC
/// token never comes out of an STS error, wherever the answer puts it; a
/// parsed answer holds exactly the values sent.
pub fn check_credentials(data: &[u8]) {
    let framed = Framed::decode(data);
    let mut words = framed.first_line.split_whitespace();
    match words.next().unwrap_or_default() {
        "secret" => check_secret(&framed),
        "env" => check_env(&framed),
        "imds" => {
            let got = copyimage_canceller::identity::imds::parse_credentials(&framed.body);
            check_identity_answer(&framed.body, None, got);
        }
        "sts" => {
            let status = words.next().and_then(|s| s.parse().ok()).unwrap_or(200);
            let got = copyimage_canceller::identity::rrsa::parse_response(
                status,
                &framed.body,
                &[OIDC_MARKER],
            );
            if got.is_ok() {
                assert!(
                    (200..300).contains(&status),
                    "HTTP {status} gave credentials"
                );
            }
            if let Err(err) = &got {
                let text = format!("{err} {err:?}");
                assert!(!text.contains(OIDC_MARKER), "OIDC token leaked: {text}");
                if !(200..300).contains(&status) {
                    check_sts_error_body(status, &framed.body, err);
                }
            }
            check_identity_answer(&framed.body, Some("Credentials"), got);
        }
        _ => {}
    }
}

/// A value written in the framing: percent-decoded, so `%0A` or `%FF` can
/// be written too.
fn decoded(value: &[u8]) -> Vec<u8> {
    percent_encoding::percent_decode(value).collect()
}

/// The `Debug` output of a key with this ID and placeholders for the rest:
/// what every key with this ID must print.
fn key_debug_baseline(key: &AccessKey) -> String {
    let blank = AccessKey::new(
        key.id.clone(),
        "x",
        key.security_token().map(|_| "x".to_owned()),
    );
    format!("{blank:?} {blank:#?}")
}

/// `got` is the key `want` names (ID, secret, token), or the same error.
fn check_key_outcome<E: std::fmt::Debug + PartialEq>(
    got: &Result<AccessKey, E>,
    want: &Result<(String, String, Option<String>), E>,
) {
    match (got, want) {
        (Ok(key), Ok((id, secret, token))) => {
            assert_eq!(
                (key.id.as_str(), key.secret(), key.security_token()),
                (id.as_str(), secret.as_str(), token.as_deref())
            );
            check_key_debug(key);
        }
        (Err(got), Err(want)) => assert_eq!(got, want),
        _ => panic!("expected {want:?}, got {got:?}"),
    }
}

fn check_key_debug(key: &AccessKey) {
    assert_eq!(
        format!("{key:?} {key:#?}"),
        key_debug_baseline(key),
        "Debug depends on the secret or token"
    );
}

fn check_secret(framed: &Framed) {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;

    use copyimage_canceller::controller::secrets::{
        KEY_ACCESS_KEY_ID, KEY_ACCESS_KEY_SECRET, KEY_SECURITY_TOKEN, access_key_from_secret,
    };

    let mut data = BTreeMap::new();
    let mut string_data = BTreeMap::new();
    for (name, value) in &framed.fields {
        let value = decoded(value);
        match name.strip_prefix("string.") {
            Some(name) => {
                string_data.insert(
                    name.to_owned(),
                    String::from_utf8_lossy(&value).into_owned(),
                );
            }
            None => {
                data.insert(name.clone(), ByteString(value));
            }
        }
    }
    let secret = Secret {
        data: (!data.is_empty()).then(|| data.clone()),
        string_data: (!string_data.is_empty()).then(|| string_data.clone()),
        ..Secret::default()
    };
    let got = access_key_from_secret(Some(&secret), "images", "creds");

    // The documented reading: `data` before `stringData`, UTF-8, trimmed,
    // empty counts as absent; ID, then secret, then the optional token.
    let read = |key: &str| -> Result<Option<String>, String> {
        let bytes = match data.get(key) {
            Some(b) => b.0.clone(),
            None => match string_data.get(key) {
                Some(s) => s.clone().into_bytes(),
                None => return Ok(None),
            },
        };
        let text = String::from_utf8(bytes)
            .map_err(|_| format!("key {key} in Secret images/creds is not valid UTF-8"))?;
        Ok(Some(text.trim().to_owned()).filter(|t| !t.is_empty()))
    };
    let required = |key: &str| {
        read(key)?.ok_or_else(|| format!("Secret images/creds has no key {key} (or it is empty)"))
    };
    let want = required(KEY_ACCESS_KEY_ID).and_then(|id| {
        let secret = required(KEY_ACCESS_KEY_SECRET)?;
        Ok((id, secret, read(KEY_SECURITY_TOKEN)?))
    });
    check_key_outcome(&got, &want);
    assert_eq!(
        access_key_from_secret(None, "images", "creds").unwrap_err(),
        "Secret images/creds not found"
    );
}

fn check_env(framed: &Framed) {
    use copyimage_canceller::credentials::{
        CredentialsError, ENV_ACCESS_KEY_ID, ENV_ACCESS_KEY_SECRET, ENV_SECURITY_TOKEN,
    };

    let vars: std::collections::HashMap<String, String> = framed
        .fields
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&decoded(v)).into_owned()))
        .collect();
    let got = AccessKey::from_lookup(|name| vars.get(name).cloned());
    let get = |name: &str| vars.get(name).filter(|v| !v.is_empty()).cloned();
    let want = match (get(ENV_ACCESS_KEY_ID), get(ENV_ACCESS_KEY_SECRET)) {
        (None, _) => Err(CredentialsError::MissingVariable {
            variable: ENV_ACCESS_KEY_ID,
            what: "ID",
        }),
        (Some(_), None) => Err(CredentialsError::MissingVariable {
            variable: ENV_ACCESS_KEY_SECRET,
            what: "secret",
        }),
        (Some(id), Some(secret)) => Ok((id, secret, get(ENV_SECURITY_TOKEN))),
    };
    check_key_outcome(&got, &want);
}

/// An STS error answer (`Code`, `Message`, `RequestId`, each in either
/// spelling, at most once, a string or null; `Code` a string) is a service
/// error with its status.
///
/// NB: JSON with a name given twice is judged by its canonical form (the
/// last value of each name), since the parser refuses such a body.
fn check_sts_error_body(status: u16, body: &[u8], err: &copyimage_canceller::identity::FetchError) {
    use copyimage_canceller::identity::FetchError;

    let Ok(value @ Value::Object(_)) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let mut has_code = false;
    for (name, alias) in [
        ("Code", "code"),
        ("Message", "message"),
        ("RequestId", "requestId"),
    ] {
        let field = match (value.get(name), value.get(alias)) {
            (Some(_), Some(_)) => return,
            (Some(v), None) | (None, Some(v)) => v,
            (None, None) => continue,
        };
        match field {
            Value::String(_) => has_code |= name == "Code",
            Value::Null => {}
            _ => return,
        }
    }
    if !has_code {
        return;
    }
    let is_service = |err: &FetchError| matches!(err, FetchError::Service { http_status, .. } if *http_status == status);
    if !is_service(err) {
        let canonical = serde_json::to_vec(&value).expect("a Value serializes");
        let again =
            copyimage_canceller::identity::rrsa::parse_response(status, &canonical, &[OIDC_MARKER]);
        assert!(
            again.as_ref().is_err_and(is_service),
            "an error body with a Code is a service error: {again:?}"
        );
    }
}

/// Every string (names and values) in `value`, except the values at the
/// `skip` fields of the object `within`.
fn strings_outside(value: &Value, skip: &[&str], within: Option<&Value>, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items
            .iter()
            .for_each(|v| strings_outside(v, skip, within, out)),
        Value::Object(map) => {
            let is_within = within.is_some_and(|w| std::ptr::eq(w, value));
            for (k, v) in map {
                out.push(k.clone());
                if !(is_within && skip.contains(&k.as_str())) {
                    strings_outside(v, skip, within, out);
                }
            }
        }
        _ => {}
    }
}

/// Checks an identity answer's outcome against what the body holds: the
/// credentials object is the body itself (`within = None`) or its field.
fn check_identity_answer(
    body: &[u8],
    within: Option<&str>,
    got: Result<
        copyimage_canceller::identity::TemporaryCredentials,
        copyimage_canceller::identity::FetchError,
    >,
) {
    const SECRET_FIELDS: [&str; 2] = ["AccessKeySecret", "SecurityToken"];
    let parsed = serde_json::from_slice::<Value>(body).ok();
    let creds = parsed.as_ref().and_then(|v| match within {
        None => Some(v),
        Some(field) => v.get(field),
    });
    let text_of = |field: &str| creds.and_then(|c| c.get(field)).and_then(Value::as_str);
    match &got {
        Ok(temporary) => {
            check_key_debug(&temporary.key);
            if parsed.is_none() {
                // NB: serde skips unknown fields without checking every
                // escape in them, so a body `Value` refuses may parse.
                return;
            }
            // Parsed only from an object with all four values present.
            let (Some(id), Some(secret), Some(token), Some(expiration)) = (
                text_of("AccessKeyId"),
                text_of("AccessKeySecret"),
                text_of("SecurityToken"),
                text_of("Expiration"),
            ) else {
                panic!("credentials from an answer without them: {temporary:?}")
            };
            let key = &temporary.key;
            assert_eq!(
                (key.id.as_str(), key.secret(), key.security_token()),
                (id, secret, Some(token))
            );
            assert!(!id.is_empty() && !secret.is_empty() && !token.is_empty());
            assert_eq!(Some(temporary.expiration), expiration.parse().ok());
            let blank = copyimage_canceller::identity::TemporaryCredentials {
                key: AccessKey::new(id, "x", Some("x".to_owned())),
                expiration: temporary.expiration,
            };
            assert_eq!(format!("{temporary:?}"), format!("{blank:?}"));
        }
        Err(err) => {
            let (Some(parsed), Some(creds)) = (&parsed, creds) else {
                return;
            };
            let mut elsewhere = Vec::new();
            strings_outside(parsed, &SECRET_FIELDS, Some(creds), &mut elsewhere);
            let text = format!("{err} {err:?}");
            // NB: judged on the marker secrets, which no fixed wording
            // contains (a value such as "answer" would be in every message).
            for marker in [SECRET_MARKER, TOKEN_MARKER] {
                let in_secret_field = SECRET_FIELDS
                    .iter()
                    .any(|f| text_of(f).is_some_and(|v| v.contains(marker)));
                let elsewhere = elsewhere.iter().any(|s| s.contains(marker));
                if in_secret_field && !elsewhere {
                    assert!(!text.contains(marker), "{marker} leaked: {text}");
                }
            }
        }
    }
}

// ------------------------------------------------------------ The signers

/// The documented percentEncode, written independently of the operator (the
/// reference model the signer target compares against): every UTF-8 byte
/// outside `A-Z a-z 0-9 - _ . ~` becomes `%XX` with upper-case hex.
fn reference_percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~');
        if unreserved {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Lines of `data`, each percent-decoded (any byte can be written as
/// `%XX`) and read as UTF-8 (invalid sequences replaced).
fn decoded_lines(data: &[u8]) -> Vec<String> {
    data.split(|&b| b == b'\n')
        .map(|line| String::from_utf8_lossy(&decoded(line)).into_owned())
        .collect()
}

/// `fuzz_targets/signer.rs`: the signers' encoding against the reference
/// model and against the simulator's independent implementations. The
/// input's lines (percent-decoded) are strings to encode; every line with
/// a raw `=` is also a parameter `name=value` (both sides decoded).
///
/// Invariants: percentEncode equals [`reference_percent_encode`] and the
/// simulator's, and decodes back to its input; the V1 canonical query is
/// the sorted, encoded pairs, and the one-pass string to sign equals the
/// two-step one and the simulator's; the V3 canonical query equals the
/// model and what the simulator computes from the query string sent, and
/// the V3 canonical request of the parameters and of the lines as headers
/// equals the simulator's.
pub fn check_signer(data: &[u8]) {
    use copyimage_canceller::ecs::{signature, signature_v3};
    use copyimage_stand_ins::ecs_simulator::{verify, verify_v3};

    let lines = decoded_lines(data);
    let whole = String::from_utf8_lossy(data).into_owned();
    for s in lines.iter().chain([&whole]) {
        let encoded = percent_encode(s);
        assert_eq!(encoded, reference_percent_encode(s), "percentEncode({s:?})");
        assert_eq!(
            encoded,
            verify::percent_encode(s),
            "simulator percentEncode({s:?})"
        );
        let back = percent_encoding::percent_decode_str(&encoded).decode_utf8();
        assert_eq!(
            back.as_deref().ok(),
            Some(s.as_str()),
            "decode(encode({s:?}))"
        );
    }

    let params: Vec<(String, String)> = data
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let at = line.iter().position(|&b| b == b'=')?;
            let side = |b: &[u8]| String::from_utf8_lossy(&decoded(b)).into_owned();
            Some((side(&line[..at]), side(&line[at + 1..])))
        })
        .collect();
    let mut sorted = params.clone();
    sorted.sort();

    // V1: canonical query and string to sign.
    let query = signature::canonicalized_query(&params);
    let model = sorted
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                reference_percent_encode(k),
                reference_percent_encode(v)
            )
        })
        .collect::<Vec<_>>()
        .join("&");
    assert_eq!(query, model, "canonicalized query");
    let unique: std::collections::BTreeMap<String, String> = params.iter().cloned().collect();
    let simulator_can_sign = unique.len() == params.len() && !unique.contains_key("Signature");
    for method in [signature::Method::Get, signature::Method::Post] {
        let one_pass = signature::string_to_sign_of(method, &params);
        assert_eq!(one_pass, signature::string_to_sign(method, &query));
        assert_eq!(
            one_pass,
            format!(
                "{}&%2F&{}",
                method.as_str(),
                reference_percent_encode(&query)
            )
        );
        assert_eq!(one_pass, signature::string_to_sign_of(method, &sorted));
        if simulator_can_sign {
            assert_eq!(one_pass, verify::string_to_sign(method.as_str(), &unique));
        }
    }

    // V3: canonical query, as signed and as the simulator reads it back
    // from the query string sent.
    let v3_query = signature_v3::canonical_query(&params);
    let v3_model = sorted
        .iter()
        .map(|(k, v)| format!("{k}={}", reference_percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    assert_eq!(v3_query, v3_model, "V3 canonical query");
    // NB: the V1 model above is also the query string a client sends.
    assert_eq!(v3_query, verify_v3::canonical_query(&model));

    // V3: canonical headers and request against the simulator's, for the
    // parameters that make valid headers (an HTTP client sends no others).
    let headers: Vec<(String, String)> = params
        .iter()
        .filter(|(k, v)| {
            HeaderName::from_bytes(k.as_bytes()).is_ok() && HeaderValue::from_str(v).is_ok()
        })
        .cloned()
        .collect();
    if headers.is_empty() {
        return;
    }
    let mut map = HeaderMap::new();
    for (k, v) in &headers {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).expect("checked"),
            HeaderValue::from_str(v).expect("checked"),
        );
    }
    let body = whole.as_bytes();
    let signed = signature_v3::sign_request(
        "POST",
        "/",
        &params,
        &headers,
        body,
        "LTAI5tFuzz",
        SECRET_MARKER,
    );
    let listed: Vec<&str> = signed.signed_headers.split(';').collect();
    let raw = verify_v3::RawRequest {
        method: "POST",
        path: "/",
        query: &model,
        headers: &map,
        body,
    };
    assert_eq!(
        signed.canonical_request,
        verify_v3::server_canonical_request(&raw, &listed),
        "V3 canonical request, client and simulator"
    );
}

// ------------------------------------------------- The simulator's requests

/// The server clock of the simulator target.
const SIMULATOR_NOW: &str = "2024-05-01T12:34:56Z";
/// A permanent key the simulator target's server knows.
pub const FUZZ_KEY_ID: &str = "LTAI5tFuzzKey";
/// A temporary key (with [`TOKEN_MARKER`]) the simulator target's server knows.
pub const FUZZ_STS_KEY_ID: &str = "STS.FuzzKey";
/// The one region the simulator target's server knows.
const FUZZ_REGION: &str = "cn-hangzhou";

/// Signing times the simulator can parse back: years 0001 to 9999.
const MIN_SIGNING_SECS: i64 = -62_135_596_800;
const MAX_SIGNING_SECS: i64 = 253_402_207_200;

/// `fuzz_targets/simulator_request.rs`: the ECS simulator's reading of a
/// request. The first line picks the mode:
///
/// - `request METHOD /path?query`: the head and body are a request as it
///   arrived, read as the server does (V3 when `Authorization` says so,
///   else query and form body) and checked against a server that knows
///   [`FUZZ_KEY_ID`] and [`FUZZ_STS_KEY_ID`] (secret [`SECRET_MARKER`]) at
///   2024-05-01T12:34:56Z;
/// - `sign-v1 GET|POST` and `sign-v3`: `id`, `secret`, `token`, `region`,
///   `image`, `nonce`, `host` and `time` (Unix seconds) lines, values
///   percent-decoded, are signed by the operator's signer, sent as the
///   client sends them, and read back and checked by the simulator.
///
/// Invariants: reading and checking never panic and an error is a 4xx or
/// 5xx with a code; an accepted request is exactly what was sent; a
/// request our signer signed always verifies (or fails with the one
/// documented error for an empty or malformed value), and its nonce is
/// then refused a second time.
pub fn check_simulator_request(data: &[u8]) {
    let framed = Framed::decode(data);
    let mut words = framed.first_line.split_whitespace();
    match words.next().unwrap_or_default() {
        "request" => {
            let method = words.next().unwrap_or("POST").to_owned();
            let target = words.next().unwrap_or("/").to_owned();
            check_raw_request(&framed, &method, &target);
        }
        "sign-v1" => {
            let method = match words.next() {
                Some("GET") => copyimage_canceller::ecs::signature::Method::Get,
                _ => copyimage_canceller::ecs::signature::Method::Post,
            };
            round_trip_v1(&SigningInput::of(&framed), method);
        }
        "sign-v3" => round_trip_v3(&SigningInput::of(&framed)),
        _ => {}
    }
}

fn simulator_keys() -> copyimage_stand_ins::ecs_simulator::verify::KeyRing {
    copyimage_stand_ins::ecs_simulator::verify::KeyRing::new([
        copyimage_stand_ins::AccessKey::new(FUZZ_KEY_ID, SECRET_MARKER, None),
        copyimage_stand_ins::AccessKey::new(
            FUZZ_STS_KEY_ID,
            SECRET_MARKER,
            Some(TOKEN_MARKER.to_owned()),
        ),
    ])
}

type Checked = Result<
    (
        copyimage_stand_ins::ecs_simulator::verify::Authenticated,
        std::collections::BTreeMap<String, String>,
    ),
    copyimage_stand_ins::ecs_simulator::verify::ApiError,
>;

fn check_raw_request(framed: &Framed, method: &str, target: &str) {
    match read_and_check(framed, method, target) {
        Ok((auth, params)) => {
            assert_eq!(Some(&auth.region_id), params.get("RegionId"));
            assert_eq!(Some(&auth.image_id), params.get("ImageId"));
            assert_eq!(Some(&auth.access_key_id), params.get("AccessKeyId"));
            assert_eq!(auth.region_id, FUZZ_REGION);
            assert!(simulator_keys().get(&auth.access_key_id).is_some());
            assert!(!auth.nonce.is_empty() && !auth.image_id.is_empty());
        }
        Err(err) => {
            assert!((400..600).contains(&err.http_status), "{err:?}");
            assert!(!err.code.is_empty(), "{err:?}");
        }
    }
}

/// Reads and checks a request as the simulator's server does.
fn read_and_check(framed: &Framed, method: &str, target: &str) -> Checked {
    use copyimage_stand_ins::ecs_simulator::{verify, verify_v3};

    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers = framed.headers();
    let keys = simulator_keys();
    let regions = [FUZZ_REGION.to_owned()].into_iter().collect();
    let checks = verify::Checks {
        keys: &keys,
        regions: &regions,
        max_skew: verify::DEFAULT_MAX_SKEW,
    };
    let now: jiff::Timestamp = SIMULATOR_NOW.parse().expect("valid time");
    let raw = verify_v3::RawRequest {
        method,
        path,
        query,
        headers: &headers,
        body: &framed.body,
    };
    // As the server reads a request (`server::read_params`).
    if verify_v3::is_v3(&headers) {
        verify_v3::params_of(&raw)
            .and_then(|params| verify_v3::check(&raw, &params, checks, now).map(|a| (a, params)))
    } else {
        let is_form = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.to_ascii_lowercase()
                    .starts_with("application/x-www-form-urlencoded")
            });
        verify::merge_params(query, is_form.then_some(&framed.body[..]))
            .and_then(|params| verify::check(method, &params, checks, now).map(|a| (a, params)))
    }
}

/// What the round-trip modes sign.
#[derive(Debug)]
struct SigningInput {
    key: AccessKey,
    region: String,
    image: String,
    nonce: String,
    host: String,
    time: jiff::Timestamp,
}

impl SigningInput {
    fn of(framed: &Framed) -> Self {
        let field = |name: &str| {
            framed
                .fields
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8_lossy(&decoded(v)).into_owned())
        };
        let secs = field("time")
            .and_then(|t| t.trim().parse::<i64>().ok())
            .unwrap_or(1_714_566_896);
        let secs = if (MIN_SIGNING_SECS..=MAX_SIGNING_SECS).contains(&secs) {
            secs
        } else {
            MIN_SIGNING_SECS + secs.rem_euclid(MAX_SIGNING_SECS - MIN_SIGNING_SECS)
        };
        Self {
            // NB: an empty token is no token, as every credential parser reads it.
            key: AccessKey::new(
                field("id").unwrap_or_else(|| FUZZ_KEY_ID.to_owned()),
                field("secret").unwrap_or_else(|| SECRET_MARKER.to_owned()),
                field("token").filter(|t| !t.is_empty()),
            ),
            region: field("region").unwrap_or_else(|| FUZZ_REGION.to_owned()),
            image: field("image").unwrap_or_else(|| "m-bp1fuzz".to_owned()),
            nonce: field("nonce").unwrap_or_else(|| "3f1e2d".to_owned()),
            host: field("host").unwrap_or_else(|| "ecs.cn-hangzhou.aliyuncs.com".to_owned()),
            time: jiff::Timestamp::from_second(secs).expect("clamped into range"),
        }
    }

    /// The one error a server must give for an empty or malformed value, in
    /// the order the checks run (`None`: it must verify).
    fn expected_error(
        &self,
        nonce: &str,
        empty_id_code: &str,
        empty_nonce_code: &str,
    ) -> Option<String> {
        let token_well_formed = |t: &str| {
            t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        };
        if self.key.id.is_empty() {
            Some(empty_id_code.to_owned())
        } else if nonce.is_empty() {
            Some(empty_nonce_code.to_owned())
        } else if self
            .key
            .security_token()
            .is_some_and(|t| !token_well_formed(t))
        {
            Some("InvalidSecurityToken.Malformed".to_owned())
        } else if self.region.is_empty() {
            Some("MissingRegionId".to_owned())
        } else if self.image.is_empty() {
            Some("MissingImageId".to_owned())
        } else {
            None
        }
    }

    fn checks_and_verify(
        &self,
        nonce: &str,
        expected: Option<String>,
        check: impl FnOnce(
            copyimage_stand_ins::ecs_simulator::verify::Checks<'_>,
        ) -> Result<
            copyimage_stand_ins::ecs_simulator::verify::Authenticated,
            copyimage_stand_ins::ecs_simulator::verify::ApiError,
        >,
    ) {
        use copyimage_stand_ins::ecs_simulator::verify;

        let keys = verify::KeyRing::new([copyimage_stand_ins::AccessKey::new(
            self.key.id.clone(),
            self.key.secret(),
            self.key.security_token().map(str::to_owned),
        )]);
        let regions = [self.region.clone()].into_iter().collect();
        let checks = verify::Checks {
            keys: &keys,
            regions: &regions,
            max_skew: verify::DEFAULT_MAX_SKEW,
        };
        match (check(checks), expected) {
            (Ok(auth), None) => {
                assert_eq!(auth.access_key_id, self.key.id);
                assert_eq!(auth.region_id, self.region);
                assert_eq!(auth.image_id, self.image);
                assert_eq!(auth.nonce, nonce);
                assert_eq!(auth.timestamp, self.time);
                let mut nonces = verify::NonceCache::new(4, verify::DEFAULT_MAX_SKEW);
                assert_eq!(
                    nonces.claim(&auth.access_key_id, &auth.nonce, auth.timestamp, self.time),
                    Ok(())
                );
                let replay = nonces
                    .claim(&auth.access_key_id, &auth.nonce, auth.timestamp, self.time)
                    .unwrap_err();
                assert_eq!(replay.code, "SignatureNonceUsed");
            }
            (Err(err), Some(code)) => assert_eq!(err.code, code, "{err:?}"),
            (got, want) => panic!("{self:?}: expected {want:?}, got {got:?}"),
        }
    }
}

fn round_trip_v1(input: &SigningInput, method: copyimage_canceller::ecs::signature::Method) {
    use copyimage_canceller::ecs::signature::{Method, sign_cancel_copy_image};
    use copyimage_stand_ins::ecs_simulator::verify;

    let signed = sign_cancel_copy_image(
        method,
        &input.key,
        &input.region,
        &input.image,
        &input.nonce,
        input.time,
    );
    // As the client sends it: a form body for POST, the query for GET.
    let encoded = signed.form_body();
    let params = match method {
        Method::Post => verify::merge_params("", Some(encoded.as_bytes())),
        Method::Get => verify::merge_params(&encoded, None),
    }
    .expect("the signer's own form decodes");
    let sent: std::collections::BTreeMap<String, String> = signed
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(params, sent, "the form body decodes to what was signed");
    let expected =
        input.expected_error(&input.nonce, "MissingAccessKeyId", "MissingSignatureNonce");
    input.checks_and_verify(&input.nonce, expected, |checks| {
        verify::check(method.as_str(), &params, checks, input.time)
    });
}

fn round_trip_v3(input: &SigningInput) {
    use copyimage_canceller::ecs::signature_v3::sign_cancel_copy_image_v3;
    use copyimage_stand_ins::ecs_simulator::verify_v3;

    // NB: the Authorization header cannot carry an AccessKey ID with a
    // comma, and header values arrive trimmed, so an ID or token with
    // surrounding blanks cannot match (real ones are alphanumeric and
    // Base64).
    let id = &input.key.id;
    let token = input.key.security_token().unwrap_or_default();
    if id.contains(',') || id.trim() != id || token.trim() != token {
        return;
    }
    let signed = sign_cancel_copy_image_v3(
        &input.key,
        &input.host,
        &input.region,
        &input.image,
        &input.nonce,
        input.time,
    );
    let mut headers = HeaderMap::new();
    for (name, value) in signed.headers() {
        // A value no HTTP client can send never reaches a server.
        let Ok(value) = HeaderValue::from_str(value) else {
            return;
        };
        headers.append(name, value);
    }
    let raw = verify_v3::RawRequest {
        method: "POST",
        path: "/",
        query: "",
        headers: &headers,
        body: signed.body().as_bytes(),
    };
    let params = verify_v3::params_of(&raw).expect("the signer's own form decodes");
    assert_eq!(params.get("RegionId"), Some(&input.region));
    assert_eq!(params.get("ImageId"), Some(&input.image));
    // Header values arrive trimmed, and the signature covers them trimmed.
    let nonce = input.nonce.trim();
    let expected = input.expected_error(nonce, "IncompleteSignature", "MissingParameter");
    input.checks_and_verify(nonce, expected, |checks| {
        verify_v3::check(&raw, &params, checks, input.time)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_splits_first_line_fields_and_body() {
        let framed = Framed::decode(
            b"400\r\ncontent-type: application/json\nx-bad\nx-acs-retry-after:  {TOKEN} \n\n{\"a\":\n\"{SIG%%}\"}",
        );
        assert_eq!(framed.first_line, "400");
        assert_eq!(
            framed.fields,
            vec![
                ("content-type".to_owned(), b"application/json".to_vec()),
                (
                    "x-acs-retry-after".to_owned(),
                    TOKEN_MARKER.as_bytes().to_vec()
                ),
            ]
        );
        let twice = percent_encode(&percent_encode(SIGNATURE_MARKER));
        assert_eq!(framed.body, format!("{{\"a\":\n\"{twice}\"}}").into_bytes());
        assert_eq!(Framed::decode(b""), Framed::default());
        assert_eq!(Framed::decode(b"200").first_line, "200");
    }

    #[test]
    fn placeholders_expand_longest_first() {
        let got = expand_placeholders(b"{SECRET}{TOKEN%}{TOKEN%%}{OIDC}{NOPE}");
        let [_, once, twice] = marker_forms(TOKEN_MARKER);
        assert_eq!(
            String::from_utf8(got).unwrap(),
            format!("{SECRET_MARKER}{once}{twice}{OIDC_MARKER}{{NOPE}}")
        );
    }

    fn corpus(target: &str) -> Vec<std::path::PathBuf> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../corpus")
            .join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("directory entry").path())
            .collect();
        files.sort();
        files
    }

    /// `cargo test` replays the committed corpora (the seeds and every
    /// input a fuzzer found worth keeping) through the targets' checks, so
    /// they hold without cargo-fuzz too.
    #[test]
    fn every_committed_corpus_file_passes_its_check() {
        let mut failed = Vec::new();
        for (target, check) in TARGETS {
            let files = corpus(target);
            assert!(files.len() >= 4, "{target}: only {} seeds", files.len());
            for file in files {
                let data = std::fs::read(&file).expect("read corpus file");
                if std::panic::catch_unwind(|| check(&data)).is_err() {
                    failed.push(file.display().to_string());
                }
            }
        }
        assert!(failed.is_empty(), "failing corpus files: {failed:#?}");
    }

    /// The signed seeds reach the end of the simulator's checks, so the
    /// fuzzer starts from requests that pass them.
    #[test]
    fn signed_simulator_seeds_authenticate() {
        let rows = [
            ("signed-v1-post.http", None),
            ("signed-v1-get-sts.http", None),
            ("signed-v3.http", None),
            ("signed-v3-sts.http", None),
            (
                "signed-v1-unknown-region.http",
                Some("InvalidRegionId.NotFound"),
            ),
            (
                "v3-incomplete-authorization.http",
                Some("IncompleteSignature"),
            ),
            ("duplicate-parameter.http", Some("InvalidParameter")),
            ("unsigned-xml.http", Some("MissingAccessKeyId")),
        ];
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus/simulator_request");
        for (name, want) in rows {
            let framed = Framed::decode(&std::fs::read(dir.join(name)).expect("seed"));
            let mut words = framed.first_line.split_whitespace().skip(1);
            let (method, target) = (words.next().unwrap(), words.next().unwrap());
            let got = read_and_check(&framed, method, target);
            assert_eq!(
                got.as_ref().err().map(|e| e.code.as_str()),
                want,
                "{name}: {got:?}"
            );
        }
    }
}
