//! Pure checks the ECS simulator applies to a CancelCopyImage request, in the
//! order the real gateway applies them: parameters, version and action,
//! signature method, timestamp, access key, STS token, signature, then the
//! API's own parameters. No I/O and no clock: time is an argument.
//!
//! NB: this is deliberately an independent implementation of the RPC V1
//! signature (it does not call `crate::ecs::signature`), so a bug in the
//! client signer cannot be mirrored here and go unnoticed. The official
//! Python SDK is the judge of both (see `tests/python_peer.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use sha1::Sha1;

use crate::access_key::AccessKey;

/// The API version the simulator serves.
pub const API_VERSION: &str = "2014-05-26";
/// The one action the simulator serves.
pub const ACTION: &str = "CancelCopyImage";
/// How far a request's `Timestamp` may be from the server's clock, like the real service.
pub const DEFAULT_MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// An error answer, before it is rendered as JSON or XML.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status of the answer.
    pub http_status: u16,
    /// The ECS error code (`InvalidImageId.NotFound`).
    pub code: String,
    /// The message, worded like the real service's.
    pub message: String,
}

impl ApiError {
    /// An error with its status, code and message.
    pub fn new(http_status: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            http_status,
            code: code.into(),
            message: message.into(),
        }
    }

    /// `Missing{Param}`: a required parameter is absent or empty.
    pub fn missing(param: &str) -> Self {
        Self::new(
            400,
            format!("Missing{param}"),
            format!("{param} is mandatory for this action."),
        )
    }
}

/// The answer format a request asked for (`Format`; XML when omitted, like the real service).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseFormat {
    /// `Format=JSON` (any case).
    Json,
    /// `Format=XML`, omitted, or anything else.
    Xml,
}

impl ResponseFormat {
    /// The format the parameters ask for.
    pub fn of(params: &BTreeMap<String, String>) -> Self {
        match params.get("Format") {
            Some(f) if f.eq_ignore_ascii_case("json") => Self::Json,
            _ => Self::Xml,
        }
    }
}

/// The access keys the simulator knows, by AccessKeyId.
#[derive(Clone, Debug, Default)]
pub struct KeyRing {
    keys: HashMap<String, AccessKey>,
}

impl KeyRing {
    /// A ring holding these keys (a later key with the same ID replaces an earlier one).
    pub fn new(keys: impl IntoIterator<Item = AccessKey>) -> Self {
        let mut ring = Self::default();
        for key in keys {
            ring.insert(key);
        }
        ring
    }

    /// Adds or replaces a key.
    pub fn insert(&mut self, key: AccessKey) {
        self.keys.insert(key.id.clone(), key);
    }

    /// Removes a key (a rotated-out AccessKey), returning it.
    pub fn remove(&mut self, id: &str) -> Option<AccessKey> {
        self.keys.remove(id)
    }

    /// The key with this ID.
    pub fn get(&self, id: &str) -> Option<&AccessKey> {
        self.keys.get(id)
    }
}

/// What a request that passed the checks carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authenticated {
    /// The AccessKeyId that signed it.
    pub access_key_id: String,
    /// Its `SignatureNonce`.
    pub nonce: String,
    /// Its `Timestamp`.
    pub timestamp: Timestamp,
    /// `RegionId`.
    pub region_id: String,
    /// `ImageId`.
    pub image_id: String,
}

/// The parameters, limits and keys a request is checked against.
#[derive(Clone, Copy, Debug)]
pub struct Checks<'a> {
    /// Known access keys.
    pub keys: &'a KeyRing,
    /// Known region IDs.
    pub regions: &'a BTreeSet<String>,
    /// Largest accepted distance between `Timestamp` and the server clock.
    pub max_skew: Duration,
}

impl<'a> Checks<'a> {
    /// The known key with this AccessKeyId; `InvalidAccessKeyId.NotFound` otherwise.
    pub fn key(&self, access_key_id: &str) -> Result<&'a AccessKey, ApiError> {
        self.keys.get(access_key_id).ok_or_else(|| {
            ApiError::new(
                404,
                "InvalidAccessKeyId.NotFound",
                "Specified access key is not found.",
            )
        })
    }
}

/// Alibaba's percentEncode: UTF-8 bytes, `A-Z a-z 0-9 - _ . ~` kept, every other
/// byte `%XX` with upper-case hex (so space is `%20`, `*` is `%2A`, `~` stays).
pub fn percent_encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len() * 3);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0x0f)] as char);
        }
    }
    out
}

/// `percentEncode(k)=percentEncode(v)` for every parameter except `Signature`,
/// sorted by name in byte order, joined by `&`.
pub fn canonicalized_query_string(params: &BTreeMap<String, String>) -> String {
    // NB: a BTreeMap<String, _> iterates in byte order of the UTF-8 names,
    // which is the order the signature needs.
    params
        .iter()
        .filter(|(k, _)| k.as_str() != "Signature")
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `METHOD&%2F&percentEncode(CanonicalizedQueryString)`.
pub fn string_to_sign(method: &str, params: &BTreeMap<String, String>) -> String {
    format!(
        "{method}&{}&{}",
        percent_encode("/"),
        percent_encode(&canonicalized_query_string(params))
    )
}

fn mac_for(secret: &str, string_to_sign: &str) -> Hmac<Sha1> {
    let mut mac = Hmac::<Sha1>::new_from_slice(format!("{secret}&").as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(string_to_sign.as_bytes());
    mac
}

/// `Base64(HMAC-SHA1(secret + "&", string_to_sign))`.
pub fn signature(secret: &str, string_to_sign: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(mac_for(secret, string_to_sign).finalize().into_bytes())
}

/// Whether `provided` (Base64) is the signature of `string_to_sign`; compared in constant time.
pub fn signature_matches(secret: &str, string_to_sign: &str, provided: &str) -> bool {
    match base64::engine::general_purpose::STANDARD.decode(provided) {
        Ok(bytes) => mac_for(secret, string_to_sign).verify_slice(&bytes).is_ok(),
        Err(_) => false,
    }
}

/// Merges query-string and form-body parameters (both form-decoded, so `+`
/// is a space). A body parameter overrides a query parameter of the same
/// name, as aliyunsdkcore signs them (it sends `RegionId` in both for a POST).
/// A name given twice in the same part is refused: the signature could not
/// say which value was meant.
pub fn merge_params(
    query: &str,
    form_body: Option<&[u8]>,
) -> Result<BTreeMap<String, String>, ApiError> {
    fn decode(source: &[u8]) -> Result<BTreeMap<String, String>, ApiError> {
        let mut params = BTreeMap::new();
        for (k, v) in form_urlencoded::parse(source) {
            if params.insert(k.to_string(), v.into_owned()).is_some() {
                return Err(ApiError::new(
                    400,
                    "InvalidParameter",
                    format!("The parameter {k} is given more than once."),
                ));
            }
        }
        Ok(params)
    }
    let mut params = decode(query.as_bytes())?;
    if let Some(body) = form_body {
        params.extend(decode(body)?);
    }
    Ok(params)
}

/// Parses `YYYY-MM-DDThh:mm:ssZ` (UTC, no fraction, no offset), the only form the API documents.
pub fn parse_timestamp(value: &str) -> Option<Timestamp> {
    let b = value.as_bytes();
    let shape_ok = b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        });
    if !shape_ok {
        return None;
    }
    value.parse().ok()
}

/// STS tokens are Base64: anything else cannot be a token at all.
fn security_token_well_formed(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
}

fn required<'p>(params: &'p BTreeMap<String, String>, name: &str) -> Result<&'p str, ApiError> {
    match params.get(name) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(ApiError::missing(name)),
    }
}

/// Runs every check except nonce reuse (which needs memory, see
/// [`NonceCache`]) on a request sent with HTTP `method` and these merged
/// parameters, at server time `now`.
pub fn check(
    method: &str,
    params: &BTreeMap<String, String>,
    checks: Checks<'_>,
    now: Timestamp,
) -> Result<Authenticated, ApiError> {
    let action = required(params, "Action")?;
    let version = required(params, "Version")?;
    check_version_and_action(version, action)?;
    let access_key_id = required(params, "AccessKeyId")?;
    let provided_signature = required(params, "Signature")?;
    let signature_method = required(params, "SignatureMethod")?;
    let signature_version = required(params, "SignatureVersion")?;
    let nonce = required(params, "SignatureNonce")?;
    let timestamp = required(params, "Timestamp")?;
    if signature_method != "HMAC-SHA1" {
        return Err(ApiError::new(
            400,
            "InvalidSignatureMethod",
            "Specified signature method is not supported.",
        ));
    }
    if signature_version != "1.0" {
        return Err(ApiError::new(
            400,
            "InvalidSignatureVersion",
            "Specified signature version is not supported.",
        ));
    }
    let timestamp = check_timestamp(timestamp, now, checks.max_skew)?;
    let key = checks.key(access_key_id)?;
    check_security_token(key, params.get("SecurityToken").map(String::as_str))?;
    let to_sign = string_to_sign(method, params);
    if !signature_matches(key.secret(), &to_sign, provided_signature) {
        // NB: the real service echoes its string to sign, SecurityToken
        // included; clients must redact it before showing it anywhere.
        return Err(ApiError::new(
            400,
            "SignatureDoesNotMatch",
            format!(
                "Specified signature is not matched with our calculation. server string to sign is:{to_sign}"
            ),
        ));
    }
    authenticated(params, checks, access_key_id, nonce, timestamp)
}

/// `Version` is the one served, then `Action` the one served (the gateway's order).
pub(super) fn check_version_and_action(version: &str, action: &str) -> Result<(), ApiError> {
    if version != API_VERSION {
        return Err(ApiError::new(
            400,
            "InvalidVersion",
            "Specified parameter Version is not valid.",
        ));
    }
    if action != ACTION {
        return Err(ApiError::new(
            404,
            "InvalidAction.NotFound",
            "Specified api is not found, please check your url and method.",
        ));
    }
    Ok(())
}

/// The request time (`Timestamp` or `x-acs-date`), refused when it is not
/// `YYYY-MM-DDThh:mm:ssZ` or is further than `max_skew` from `now`.
pub(super) fn check_timestamp(
    value: &str,
    now: Timestamp,
    max_skew: Duration,
) -> Result<Timestamp, ApiError> {
    let timestamp = parse_timestamp(value).ok_or_else(|| {
        ApiError::new(
            400,
            "InvalidTimeStamp.Format",
            "Specified time stamp or date value is not well formatted.",
        )
    })?;
    if now.duration_since(timestamp).unsigned_abs() > max_skew {
        return Err(ApiError::new(
            400,
            "InvalidTimeStamp.Expired",
            "Specified time stamp or date value is expired.",
        ));
    }
    Ok(timestamp)
}

/// The last step of either signature version, once the signature passed: the
/// API's own parameters (`RegionId` and `ImageId` given, the region known).
pub(super) fn authenticated(
    params: &BTreeMap<String, String>,
    checks: Checks<'_>,
    access_key_id: &str,
    nonce: &str,
    timestamp: Timestamp,
) -> Result<Authenticated, ApiError> {
    let region_id = required(params, "RegionId")?;
    let image_id = required(params, "ImageId")?;
    if !checks.regions.contains(region_id) {
        return Err(ApiError::new(
            404,
            "InvalidRegionId.NotFound",
            "The specified RegionId does not exist.",
        ));
    }
    Ok(Authenticated {
        access_key_id: access_key_id.to_owned(),
        nonce: nonce.to_owned(),
        timestamp,
        region_id: region_id.to_owned(),
        image_id: image_id.to_owned(),
    })
}

/// STS rules: a key issued with a token must be used with exactly that token,
/// and a permanent key with none. A missing token is a client error (400), a
/// wrong one an authentication failure (403).
pub(super) fn check_security_token(key: &AccessKey, sent: Option<&str>) -> Result<(), ApiError> {
    let mismatch = || {
        ApiError::new(
            403,
            "InvalidSecurityToken.MismatchWithAccessKey",
            "Specified SecurityToken mismatch with the AccessKey.",
        )
    };
    match (key.security_token(), sent) {
        (None, None) => Ok(()),
        (Some(_), None) | (Some(_), Some("")) => Err(ApiError::missing("SecurityToken")),
        (_, Some(token)) if !security_token_well_formed(token) => Err(ApiError::new(
            400,
            "InvalidSecurityToken.Malformed",
            "Specified SecurityToken is malformed.",
        )),
        (None, Some(_)) => Err(mismatch()),
        (Some(expected), Some(token)) if expected == token => Ok(()),
        (Some(_), Some(_)) => Err(mismatch()),
    }
}

/// Remembers `SignatureNonce`s of accepted requests so a replay is refused.
///
/// A nonce is kept until its request's `Timestamp` leaves the skew window:
/// after that a replay fails the timestamp check anyway. Memory is bounded by
/// `capacity`; when full of live nonces, new requests are refused (fail
/// closed) rather than forgetting a nonce that could then be replayed.
#[derive(Debug)]
pub struct NonceCache {
    capacity: usize,
    window: Duration,
    expiry_by_key: HashMap<(String, String), Timestamp>,
    by_expiry: BTreeSet<(Timestamp, String, String)>,
}

impl NonceCache {
    /// An empty cache holding at most `capacity` nonces, each for `window` past its request's `Timestamp`.
    pub fn new(capacity: usize, window: Duration) -> Self {
        Self {
            capacity,
            window,
            expiry_by_key: HashMap::new(),
            by_expiry: BTreeSet::new(),
        }
    }

    /// Nonces currently remembered.
    pub fn len(&self) -> usize {
        self.expiry_by_key.len()
    }

    /// Whether no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.expiry_by_key.is_empty()
    }

    /// Records `nonce` for `access_key_id`, or refuses it when it was used already.
    pub fn claim(
        &mut self,
        access_key_id: &str,
        nonce: &str,
        request_time: Timestamp,
        now: Timestamp,
    ) -> Result<(), ApiError> {
        self.forget_expired(now);
        let key = (access_key_id.to_owned(), nonce.to_owned());
        if self.expiry_by_key.contains_key(&key) {
            return Err(ApiError::new(
                400,
                "SignatureNonceUsed",
                "Specified signature nonce was used already.",
            ));
        }
        if self.expiry_by_key.len() >= self.capacity {
            return Err(ApiError::new(
                503,
                "ServiceUnavailable",
                "The request has failed due to a temporary failure of the server.",
            ));
        }
        // NB: saturating, so a clock at the end of jiff's range (year 9999)
        // keeps the nonce for good instead of panicking.
        let expiry = request_time
            .max(now)
            .checked_add(self.window)
            .unwrap_or(Timestamp::MAX);
        self.by_expiry
            .insert((expiry, key.0.clone(), key.1.clone()));
        self.expiry_by_key.insert(key, expiry);
        Ok(())
    }

    fn forget_expired(&mut self, now: Timestamp) {
        while let Some(first) = self.by_expiry.first() {
            // NB: kept at its expiry itself: a request exactly `window` old
            // still passes the timestamp check (only a larger skew fails).
            if first.0 >= now {
                break;
            }
            let (_, id, nonce) = self.by_expiry.pop_first().expect("first exists");
            self.expiry_by_key.remove(&(id, nonce));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors() -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/signature-v1.json"
        ))
        .expect("testdata/signature-v1.json");
        serde_json::from_str(&text).expect("vectors parse")
    }

    fn params_of(v: &serde_json::Value) -> BTreeMap<String, String> {
        v["inputs"]["params"]
            .as_object()
            .expect("params")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("string").to_owned()))
            .collect()
    }

    #[test]
    fn percent_encode_follows_documented_rules() {
        let table = [
            ("abcXYZ019-_.~", "abcXYZ019-_.~"),
            (" ", "%20"),
            ("*", "%2A"),
            ("/", "%2F"),
            ("+", "%2B"),
            ("=", "%3D"),
            ("&", "%26"),
            ("%", "%25"),
            (":", "%3A"),
            ("测", "%E6%B5%8B"),
        ];
        for (input, want) in table {
            assert_eq!(percent_encode(input), want, "input {input:?}");
        }
    }

    #[test]
    fn official_sdk_vectors_reproduce() {
        let all = vectors();
        assert!(all.len() >= 20, "expected the full vector file");
        for v in all {
            let name = v["name"].as_str().unwrap();
            let params = params_of(&v);
            let method = v["inputs"]["method"].as_str().unwrap();
            let secret = v["inputs"]["access_key_secret"].as_str().unwrap();
            let expected = &v["expected"];
            assert_eq!(
                canonicalized_query_string(&params),
                expected["canonicalized_query_string"].as_str().unwrap(),
                "{name}"
            );
            let sts = string_to_sign(method, &params);
            assert_eq!(sts, expected["string_to_sign"].as_str().unwrap(), "{name}");
            let sig = expected["signature"].as_str().unwrap();
            assert_eq!(signature(secret, &sts), sig, "{name}");
            assert!(signature_matches(secret, &sts, sig), "{name}");
            assert!(!signature_matches("wrong", &sts, sig), "{name}");
        }
    }

    #[test]
    fn captured_sdk_url_verifies_after_form_decoding() {
        // The generated ECS client sends everything in the query string,
        // Python-urlencoded; decoding and re-encoding must give its signature.
        for v in vectors()
            .iter()
            .filter(|v| v["expected"]["sdk_url"].is_string())
        {
            let url = v["expected"]["sdk_url"].as_str().unwrap();
            let query = url.split_once('?').unwrap().1;
            let params = merge_params(query, None).unwrap();
            let sts = string_to_sign("POST", &params);
            let secret = v["inputs"]["access_key_secret"].as_str().unwrap();
            assert!(
                signature_matches(secret, &sts, &params["Signature"]),
                "{}",
                v["name"]
            );
        }
    }

    #[test]
    fn merge_params_decodes_plus_as_space_and_joins_body() {
        let p = merge_params("A=x+y&B=%2B&D=query", Some(b"C=1+2&D=body")).unwrap();
        assert_eq!(p["A"], "x y");
        assert_eq!(p["B"], "+");
        assert_eq!(p["C"], "1 2");
        assert_eq!(p["D"], "body", "the body wins, as aliyunsdkcore signs it");
        for (query, body) in [("A=1&A=2", None), ("", Some(&b"A=1&A=2"[..]))] {
            let dup = merge_params(query, body).unwrap_err();
            assert_eq!(dup.code, "InvalidParameter");
            assert!(dup.message.contains("parameter A"), "{}", dup.message);
        }
    }

    #[test]
    fn timestamp_shape_is_strict() {
        let table = [
            ("2024-05-01T12:34:56Z", true),
            ("2024-05-01T12:34:56.123Z", false),
            ("2024-05-01T12:34:56+00:00", false),
            ("2024-05-01 12:34:56Z", false),
            ("2024-13-01T12:34:56Z", false),
            ("", false),
        ];
        for (input, ok) in table {
            assert_eq!(parse_timestamp(input).is_some(), ok, "{input:?}");
        }
    }

    const ID: &str = "LTAI5tSimTestKey";
    const SECRET: &str = "sim-secret/+&";
    const STS_ID: &str = "STS.SimTestKey";
    const TOKEN: &str = "CAIS8AF1q6Ft5B2yfSjIr5bk/+=";

    fn ring() -> KeyRing {
        KeyRing::new([
            AccessKey::new(ID, SECRET, None),
            AccessKey::new(STS_ID, SECRET, Some(TOKEN.into())),
        ])
    }

    /// What the checks consult: `ring()` and the one region, cn-hangzhou.
    struct Simulated {
        keys: KeyRing,
        regions: BTreeSet<String>,
    }

    impl Simulated {
        fn new() -> Self {
            Simulated {
                keys: ring(),
                regions: ["cn-hangzhou".to_owned()].into(),
            }
        }

        fn checks(&self) -> Checks<'_> {
            Checks {
                keys: &self.keys,
                regions: &self.regions,
                max_skew: DEFAULT_MAX_SKEW,
            }
        }
    }

    fn now() -> Timestamp {
        "2024-05-01T12:34:56Z".parse().unwrap()
    }

    fn base(id: &str) -> BTreeMap<String, String> {
        [
            ("Action", ACTION),
            ("Version", API_VERSION),
            ("Format", "JSON"),
            ("AccessKeyId", id),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
            ("SignatureNonce", "nonce-1"),
            ("Timestamp", "2024-05-01T12:34:56Z"),
            ("RegionId", "cn-hangzhou"),
            ("ImageId", "m-abc"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    fn signed(
        method: &str,
        mut p: BTreeMap<String, String>,
        secret: &str,
    ) -> BTreeMap<String, String> {
        p.remove("Signature");
        let sig = signature(secret, &string_to_sign(method, &p));
        p.insert("Signature".into(), sig);
        p
    }

    /// A change to the parameters, made before or after signing.
    #[derive(Clone, Copy)]
    enum Edit {
        Keep,
        Set(&'static str, &'static str),
        Remove(&'static str),
    }
    use Edit::{Keep, Remove, Set};

    impl Edit {
        fn apply(self, p: &mut BTreeMap<String, String>) {
            match self {
                Keep => {}
                Set(k, v) => {
                    p.insert(k.into(), v.into());
                }
                Remove(k) => {
                    p.remove(k);
                }
            }
        }
    }

    /// (name, key id, edit before signing, edit after signing, expected status and code; `None` = accepted)
    type Row = (
        &'static str,
        &'static str,
        Edit,
        Edit,
        Option<(u16, &'static str)>,
    );

    /// The cases `checks_table` runs.
    #[rustfmt::skip]
    const TABLE: &[Row] = &[
        ("valid",                  ID,           Keep,                                     Keep,                      None),
        ("valid sts",              STS_ID,       Set("SecurityToken", TOKEN),              Keep,                      None),
        ("missing action",         ID,           Remove("Action"),                         Keep,                      Some((400, "MissingAction"))),
        ("wrong version",          ID,           Set("Version", "2016-03-14"),             Keep,                      Some((400, "InvalidVersion"))),
        ("unknown action",         ID,           Set("Action", "DescribeImages"),          Keep,                      Some((404, "InvalidAction.NotFound"))),
        ("missing signature",      ID,           Keep,                                     Remove("Signature"),       Some((400, "MissingSignature"))),
        ("missing nonce",          ID,           Remove("SignatureNonce"),                 Keep,                      Some((400, "MissingSignatureNonce"))),
        ("sha256 method",          ID,           Set("SignatureMethod", "HMAC-SHA256"),    Keep,                      Some((400, "InvalidSignatureMethod"))),
        ("bad timestamp",          ID,           Set("Timestamp", "2024-05-01 12:34:56"),  Keep,                      Some((400, "InvalidTimeStamp.Format"))),
        ("16 min old",             ID,           Set("Timestamp", "2024-05-01T12:18:55Z"), Keep,                      Some((400, "InvalidTimeStamp.Expired"))),
        ("15 min old ok",          ID,           Set("Timestamp", "2024-05-01T12:19:56Z"), Keep,                      None),
        ("16 min ahead",           ID,           Set("Timestamp", "2024-05-01T12:50:57Z"), Keep,                      Some((400, "InvalidTimeStamp.Expired"))),
        ("unknown key",            "LTAInobody", Keep,                                     Keep,                      Some((404, "InvalidAccessKeyId.NotFound"))),
        ("tampered",               ID,           Keep,                                     Set("ImageId", "m-other"), Some((400, "SignatureDoesNotMatch"))),
        ("sts missing token",      STS_ID,       Keep,                                     Keep,                      Some((400, "MissingSecurityToken"))),
        ("sts wrong token",        STS_ID,       Set("SecurityToken", "QUJD"),             Keep,                      Some((403, "InvalidSecurityToken.MismatchWithAccessKey"))),
        ("sts malformed token",    STS_ID,       Set("SecurityToken", "not a token!"),     Keep,                      Some((400, "InvalidSecurityToken.Malformed"))),
        ("token on permanent key", ID,           Set("SecurityToken", TOKEN),              Keep,                      Some((403, "InvalidSecurityToken.MismatchWithAccessKey"))),
        ("missing region",         ID,           Remove("RegionId"),                       Keep,                      Some((400, "MissingRegionId"))),
        ("missing image",          ID,           Remove("ImageId"),                        Keep,                      Some((400, "MissingImageId"))),
        ("empty image",            ID,           Set("ImageId", ""),                       Keep,                      Some((400, "MissingImageId"))),
        ("unknown region",         ID,           Set("RegionId", "mars-north-1"),          Keep,                      Some((404, "InvalidRegionId.NotFound"))),
    ];

    #[test]
    fn checks_table() {
        let sim = Simulated::new();
        let checks = sim.checks();
        for &(name, id, before, after, want) in TABLE {
            let mut p = base(id);
            before.apply(&mut p);
            let mut p = signed("POST", p, SECRET);
            after.apply(&mut p);
            let got = check("POST", &p, checks, now());
            match want {
                None => assert!(got.is_ok(), "{name}: {got:?}"),
                Some((status, code)) => {
                    let err = got.expect_err(name);
                    assert_eq!(
                        (err.http_status, err.code.as_str()),
                        (status, code),
                        "{name}"
                    );
                }
            }
        }
    }

    #[test]
    fn method_is_part_of_the_signature() {
        let sim = Simulated::new();
        let checks = sim.checks();
        let p = signed("POST", base(ID), SECRET);
        assert!(check("POST", &p, checks, now()).is_ok());
        let err = check("GET", &p, checks, now()).unwrap_err();
        assert_eq!(err.code, "SignatureDoesNotMatch");
        assert!(
            err.message
                .starts_with("Specified signature is not matched with our calculation. server string to sign is:GET&%2F&AccessKeyId%3D"),
            "{}",
            err.message
        );
    }

    #[test]
    fn nonce_cache_refuses_reuse_and_forgets_after_window() {
        let window = DEFAULT_MAX_SKEW;
        let mut cache = NonceCache::new(2, window);
        let t0 = now();
        cache.claim(ID, "n1", t0, t0).unwrap();
        assert_eq!(
            cache.claim(ID, "n1", t0, t0).unwrap_err().code,
            "SignatureNonceUsed"
        );
        // Another key may use the same nonce.
        cache.claim(STS_ID, "n1", t0, t0).unwrap();
        // Full of live nonces: fail closed.
        assert_eq!(cache.claim(ID, "n2", t0, t0).unwrap_err().http_status, 503);
        // Still remembered just inside the window, forgotten after it.
        let inside = t0 + Duration::from_secs(15 * 60 - 1);
        assert_eq!(
            cache.claim(ID, "n1", t0, inside).unwrap_err().code,
            "SignatureNonceUsed"
        );
        let after = t0 + window + Duration::from_secs(1);
        cache.claim(ID, "n1", after, after).unwrap();
        assert_eq!(cache.len(), 1);
    }

    /// Regression (found by `cargo fuzz`, target `simulator_request`): a
    /// request time at the end of jiff's range overflowed the expiry. Its
    /// first fix then forgot the nonce at once (expiry == now), which
    /// showed that a nonce was forgotten exactly at its expiry, while a
    /// replay that old still passes the timestamp check.
    #[test]
    fn nonce_is_remembered_as_long_as_its_timestamp_passes() {
        let t0 = now();
        let mut cache = NonceCache::new(2, DEFAULT_MAX_SKEW);
        cache.claim(ID, "n1", t0, t0).unwrap();
        let edge = t0 + DEFAULT_MAX_SKEW;
        assert_eq!(
            cache.claim(ID, "n1", t0, edge).unwrap_err().code,
            "SignatureNonceUsed"
        );
    }

    #[test]
    fn nonce_cache_at_the_end_of_time_does_not_panic() {
        let mut cache = NonceCache::new(2, DEFAULT_MAX_SKEW);
        let last = Timestamp::MAX;
        cache.claim(ID, "n1", last, last).unwrap();
        assert_eq!(
            cache.claim(ID, "n1", last, last).unwrap_err().code,
            "SignatureNonceUsed"
        );
    }
}
