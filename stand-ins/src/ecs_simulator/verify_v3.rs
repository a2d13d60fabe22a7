//! Pure checks the ECS simulator applies to a CancelCopyImage request signed
//! with V3 (`Authorization: ACS3-HMAC-SHA256 ...`): action and version
//! headers, date skew, access key, STS token (`x-acs-security-token`), that
//! `host`, `content-type` and every `x-acs-*` header are signed, the
//! signature, then the API's own parameters. No I/O and no clock.
//!
//! NB: deliberately an independent implementation of the V3 signature (it
//! does not call `crate::ecs::signature_v3`), so a bug in the client signer
//! cannot be mirrored here and go unnoticed. The official Python SDK is the
//! judge of both (see `tests/python_peer.rs`).

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use http::HeaderMap;
use jiff::Timestamp;
use sha2::{Digest, Sha256};

use super::verify::{
    ApiError, Authenticated, Checks, authenticated, check_security_token, check_timestamp,
    check_version_and_action, merge_params, percent_encode,
};

/// The scheme word that starts a V3 `Authorization` header.
pub const ALGORITHM: &str = "ACS3-HMAC-SHA256";

/// One request as it arrived, before any decoding.
#[derive(Clone, Copy, Debug)]
pub struct RawRequest<'a> {
    /// HTTP method (`POST`).
    pub method: &'a str,
    /// Path (`/`).
    pub path: &'a str,
    /// Raw query string, without `?` (may be empty).
    pub query: &'a str,
    /// Every header sent.
    pub headers: &'a HeaderMap,
    /// The body as sent.
    pub body: &'a [u8],
}

/// Whether the request carries a V3 `Authorization` header.
pub fn is_v3(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(&format!("{ALGORITHM} ")))
}

/// The parts of a V3 `Authorization` header.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Authorization<'a> {
    credential: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn incomplete(what: &str) -> ApiError {
    ApiError::new(
        400,
        "IncompleteSignature",
        format!("The request signature does not conform to Aliyun standards: {what}."),
    )
}

fn parse_authorization(value: &str) -> Result<Authorization<'_>, ApiError> {
    let rest = value
        .strip_prefix(ALGORITHM)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or_else(|| incomplete("the Authorization header is not ACS3-HMAC-SHA256"))?;
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or_else(|| incomplete("an Authorization part has no '='"))?;
        let slot = match k {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            _ => return Err(incomplete("the Authorization header has an unknown part")),
        };
        if slot.replace(v).is_some() {
            return Err(incomplete("an Authorization part is given twice"));
        }
    }
    match (credential, signed, signature) {
        (Some(c), Some(s), Some(sig)) if !c.is_empty() && !s.is_empty() && !sig.is_empty() => {
            Ok(Authorization {
                credential: c,
                signed_headers: s.split(';').collect(),
                signature: sig,
            })
        }
        _ => Err(incomplete(
            "Authorization needs Credential, SignedHeaders and Signature",
        )),
    }
}

/// The header's value as text (several values joined by `,`, sorted),
/// trimmed; `None` when absent.
fn header_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut values: Vec<String> = headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned())
        .collect();
    if values.is_empty() {
        return None;
    }
    values.sort();
    Some(values.join(","))
}

fn required_header(headers: &HeaderMap, name: &str) -> Result<String, ApiError> {
    header_value(headers, name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                400,
                "MissingParameter",
                format!("The input parameter \"{name}\" that is mandatory for processing this request is not supplied."),
            )
        })
}

fn is_form(headers: &HeaderMap) -> bool {
    header_value(headers, "content-type").is_some_and(|v| {
        v.to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    })
}

/// The parameters a V3 request carries (query and form body) plus, for the
/// request log, `Action`, `AccessKeyId`, `SignatureNonce`,
/// `SignatureMethod=ACS3-HMAC-SHA256` and `Format=JSON` taken from its
/// headers (a V3 answer is always JSON).
pub fn params_of(req: &RawRequest<'_>) -> Result<BTreeMap<String, String>, ApiError> {
    let mut params = merge_params(req.query, is_form(req.headers).then_some(req.body))?;
    let headers = req.headers;
    if let Some(action) = header_value(headers, "x-acs-action") {
        params.insert("Action".into(), action);
    }
    if let Some(nonce) = header_value(headers, "x-acs-signature-nonce") {
        params.insert("SignatureNonce".into(), nonce);
    }
    if let Some(auth) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_authorization(v).ok())
    {
        params.insert("AccessKeyId".into(), auth.credential.to_owned());
    }
    params.insert("SignatureMethod".into(), ALGORITHM.into());
    params.insert("Format".into(), "JSON".into());
    Ok(params)
}

/// Sorted `k=percentEncode(v)` of the query-string parameters (form-decoded
/// first), joined by `&`.
#[doc(hidden)] // pub for the fuzz targets (`fuzz/support`)
pub fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The canonical request the server computes from what it received: the
/// payload hash is that of the body itself, so a wrong
/// `x-acs-content-sha256` makes the signature fail.
#[doc(hidden)] // pub for the fuzz targets (`fuzz/support`)
pub fn server_canonical_request(req: &RawRequest<'_>, signed_headers: &[&str]) -> String {
    let mut out = format!(
        "{}\n{}\n{}\n",
        req.method,
        req.path,
        canonical_query(req.query)
    );
    for name in signed_headers {
        let value = header_value(req.headers, name).unwrap_or_default();
        out.push_str(&format!("{name}:{value}\n"));
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(&sha256_hex(req.body));
    out
}

fn mac_for(secret: &str, string_to_sign: &str) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(string_to_sign.as_bytes());
    mac
}

/// `hex(HMAC-SHA256(secret, string_to_sign))`, the bare secret as key.
pub fn signature(secret: &str, string_to_sign: &str) -> String {
    hex::encode(mac_for(secret, string_to_sign).finalize().into_bytes())
}

/// Runs every V3 check except nonce reuse (see
/// [`super::verify::NonceCache`]) at server time `now`.
pub fn check(
    req: &RawRequest<'_>,
    params: &BTreeMap<String, String>,
    checks: Checks<'_>,
    now: Timestamp,
) -> Result<Authenticated, ApiError> {
    let headers = req.headers;
    let auth_value = required_header(headers, "authorization")?;
    let auth = parse_authorization(&auth_value)?;
    let action = required_header(headers, "x-acs-action")?;
    let version = required_header(headers, "x-acs-version")?;
    check_version_and_action(&version, &action)?;
    let nonce = required_header(headers, "x-acs-signature-nonce")?;
    let date = required_header(headers, "x-acs-date")?;
    let timestamp = check_timestamp(&date, now, checks.max_skew)?;
    let key = checks.key(auth.credential)?;
    let token = header_value(headers, "x-acs-security-token");
    check_security_token(key, token.as_deref())?;

    // The signed list must be lower-case, sorted, without repeats, and
    // cover host, content-type and every x-acs-* header that was sent.
    let listed = &auth.signed_headers;
    if listed.windows(2).any(|w| w[0] >= w[1])
        || listed
            .iter()
            .any(|h| h.is_empty() || *h != h.to_ascii_lowercase())
    {
        return Err(incomplete(
            "SignedHeaders must be lower-case, sorted and unique",
        ));
    }
    for name in headers.keys().map(http::HeaderName::as_str) {
        let must_sign = name == "host" || name == "content-type" || name.starts_with("x-acs-");
        if must_sign && !listed.contains(&name) {
            return Err(incomplete(&format!("the header {name} is not signed")));
        }
    }
    let canonical = server_canonical_request(req, listed);
    let to_sign = format!("{ALGORITHM}\n{}", sha256_hex(canonical.as_bytes()));
    let matches = hex::decode(auth.signature)
        .is_ok_and(|bytes| mac_for(key.secret(), &to_sign).verify_slice(&bytes).is_ok());
    if !matches {
        // NB: the real service echoes both; clients must redact them.
        return Err(ApiError::new(
            400,
            "SignatureDoesNotMatch",
            format!(
                "Specified signature does not match our calculation. server StringToSign is [{to_sign}], server CanonicalRequest is [{canonical}]"
            ),
        ));
    }
    authenticated(params, checks, auth.credential, &nonce, timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The official SDK's known answers: the server side must compute the
    /// same canonical request and accept the SDK's signature.
    #[test]
    fn official_sdk_vectors_verify() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/signature-v3.json"
        ))
        .expect("testdata/signature-v3.json");
        let vectors: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(vectors.len(), 17);
        for v in vectors {
            let name = v["name"].as_str().unwrap();
            let inputs = &v["inputs"];
            let expected = &v["expected"];
            let mut headers = HeaderMap::new();
            for (k, val) in inputs["headers"].as_object().unwrap() {
                headers.insert(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    val.as_str().unwrap().parse().unwrap(),
                );
            }
            let target = v["http_request_target"].as_str().unwrap();
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            let req = RawRequest {
                method: inputs["method"].as_str().unwrap(),
                path,
                query,
                headers: &headers,
                body: inputs["body"].as_str().unwrap().as_bytes(),
            };
            let signed: Vec<&str> = expected["signed_headers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h.as_str().unwrap())
                .collect();
            let canonical = server_canonical_request(&req, &signed);
            assert_eq!(
                canonical,
                expected["canonical_request"].as_str().unwrap(),
                "{name}"
            );
            let to_sign = format!("{ALGORITHM}\n{}", sha256_hex(canonical.as_bytes()));
            assert_eq!(
                signature(inputs["access_key_secret"].as_str().unwrap(), &to_sign),
                expected["signature"].as_str().unwrap(),
                "{name}"
            );
            let auth = parse_authorization(expected["authorization"].as_str().unwrap()).unwrap();
            assert_eq!(auth.signed_headers, signed, "{name}");
        }
    }

    #[test]
    fn malformed_authorization_is_incomplete_signature() {
        for bad in [
            "ACS3-HMAC-SHA256 Credential=a,SignedHeaders=host",
            "ACS3-HMAC-SHA256 Credential=a,SignedHeaders=host,Signature=x,Signature=y",
            "ACS3-HMAC-SHA256 Credential=a;SignedHeaders=host;Signature=x",
            "HMAC-SHA1 Credential=a,SignedHeaders=host,Signature=x",
        ] {
            let err = parse_authorization(bad).unwrap_err();
            assert_eq!(err.code, "IncompleteSignature", "{bad}");
        }
    }
}
