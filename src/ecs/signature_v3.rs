//! The Alibaba Cloud V3 signature (`ACS3-HMAC-SHA256`): hashed payload,
//! canonical query, canonical headers, canonical request, string to sign,
//! HMAC and the `Authorization` header. Pure code, no I/O and no clock: the
//! nonce and the date are arguments.
//!
//! The rules, with sources, are in `reference/alibaba-api.md` §3; the
//! official SDK's known answers are in `testdata/signature-v3.json`.

use std::fmt;

use hmac::{Hmac, Mac};
use jiff::Timestamp;
use sha2::{Digest, Sha256};

use super::signature::{debug_redacted, format_timestamp, percent_encode, percent_encode_into};
use crate::credentials::AccessKey;
use crate::ecs::{ACTION, API_VERSION};

/// The algorithm name: the prefix of the string to sign and of `Authorization`.
pub const ALGORITHM: &str = "ACS3-HMAC-SHA256";
/// The content type of the form body that carries the parameters.
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// `hex(SHA-256(body))`: the `x-acs-content-sha256` header and the last line
/// of the canonical request.
pub fn hashed_payload(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// The CanonicalQueryString: `k=percentEncode(v)` pairs sorted by name in
/// byte order, joined by `&`; empty values are kept (`Key=`).
///
/// NB: names are written as they are, like the official SDK's
/// `get_canonical_query_string`; ECS parameter names are alphanumeric, so
/// encoding them would change nothing.
pub fn canonical_query<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> String {
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect();
    sorted.sort_unstable();
    let mut out = String::new();
    for (i, (k, v)) in sorted.into_iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        percent_encode_into(&mut out, v);
    }
    out
}

/// The CanonicalHeaders and SignedHeaders of the headers given: names
/// lower-cased, values trimmed, sorted by name, one `name:value\n` each
/// (a name given twice gets its sorted values joined by `,`), and the names
/// joined by `;`. Every header passed is signed: pass `host`, every
/// `x-acs-*` header and `content-type` (when there is a body).
pub fn canonical_headers<K: AsRef<str>, V: AsRef<str>>(headers: &[(K, V)]) -> (String, String) {
    let mut lowered: Vec<(String, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_ref().to_ascii_lowercase(), v.as_ref().trim()))
        .collect();
    lowered.sort_unstable();
    let mut canonical = String::new();
    let mut signed = String::new();
    let mut previous: Option<&str> = None;
    for (name, value) in &lowered {
        if previous == Some(name.as_str()) {
            // Same name again: its value joins the line just written.
            canonical.pop();
            canonical.push(',');
        } else {
            if previous.is_some() {
                signed.push(';');
            }
            signed.push_str(name);
            canonical.push_str(name);
            canonical.push(':');
        }
        canonical.push_str(value);
        canonical.push('\n');
        previous = Some(name.as_str());
    }
    (canonical, signed)
}

/// The CanonicalRequest:
/// `METHOD\nURI\nCanonicalQuery\nCanonicalHeaders\nSignedHeaders\nHashedPayload`
/// (CanonicalHeaders already ends with `\n`, so a blank line follows it).
pub fn canonical_request(
    method: &str,
    canonical_uri: &str,
    canonical_query: &str,
    canonical_headers: &str,
    signed_headers: &str,
    hashed_payload: &str,
) -> String {
    format!(
        "{method}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{hashed_payload}"
    )
}

/// `hex(SHA-256(canonical_request))`.
pub fn hashed_canonical_request(canonical_request: &str) -> String {
    hex::encode(Sha256::digest(canonical_request.as_bytes()))
}

/// The StringToSign: `ACS3-HMAC-SHA256\n` + `hex(SHA-256(canonical_request))`.
pub fn string_to_sign(canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{}",
        hashed_canonical_request(canonical_request)
    )
}

/// The signature: `hex(HMAC-SHA256(secret, string_to_sign))`; the key is
/// the bare secret (no `&`, unlike V1).
pub fn sign(secret: &str, string_to_sign: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(string_to_sign.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The `Authorization` header value:
/// `ACS3-HMAC-SHA256 Credential=<id>,SignedHeaders=<a;b>,Signature=<hex>`.
pub fn authorization(access_key_id: &str, signed_headers: &str, signature: &str) -> String {
    format!(
        "{ALGORITHM} Credential={access_key_id},SignedHeaders={signed_headers},Signature={signature}"
    )
}

/// Every intermediate of one V3 signature, for callers that sign and for
/// tests that compare each step.
#[derive(Clone, PartialEq, Eq)]
pub struct V3Signature {
    /// `hex(SHA-256(body))`.
    pub hashed_payload: String,
    /// The canonical query string.
    pub canonical_query: String,
    /// The canonical headers, each line ending with `\n`.
    pub canonical_headers: String,
    /// The signed header names joined by `;`.
    pub signed_headers: String,
    /// The canonical request.
    pub canonical_request: String,
    /// The string to sign.
    pub string_to_sign: String,
    /// The hex signature.
    pub signature: String,
    /// The `Authorization` header value.
    pub authorization: String,
}

impl fmt::Debug for V3Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // NB: the signed headers may hold the security token, and the
        // signature and Authorization are credentials in their own right.
        f.debug_struct("V3Signature")
            .field("signed_headers", &self.signed_headers)
            .field("signature", &"[REDACTED]")
            .finish_non_exhaustive()
    }
}

/// Signs one request. `headers` are every header to sign (`host`, all
/// `x-acs-*` including `x-acs-content-sha256`, `content-type`); `body` is
/// the payload as sent.
#[allow(clippy::too_many_arguments)]
pub fn sign_request<QK, QV, HK, HV>(
    method: &str,
    canonical_uri: &str,
    query: &[(QK, QV)],
    headers: &[(HK, HV)],
    body: &[u8],
    access_key_id: &str,
    secret: &str,
) -> V3Signature
where
    QK: AsRef<str>,
    QV: AsRef<str>,
    HK: AsRef<str>,
    HV: AsRef<str>,
{
    let hashed_payload = hashed_payload(body);
    let canonical_query = canonical_query(query);
    let (canonical_headers, signed_headers) = canonical_headers(headers);
    let canonical_request = canonical_request(
        method,
        canonical_uri,
        &canonical_query,
        &canonical_headers,
        &signed_headers,
        &hashed_payload,
    );
    let string_to_sign = string_to_sign(&canonical_request);
    let signature = sign(secret, &string_to_sign);
    let authorization = authorization(access_key_id, &signed_headers, &signature);
    V3Signature {
        hashed_payload,
        canonical_query,
        canonical_headers,
        signed_headers,
        canonical_request,
        string_to_sign,
        signature,
        authorization,
    }
}

/// A CancelCopyImage request signed with V3: `POST /`, no query string, the
/// parameters in a form body, and the headers to send (every one signed,
/// `Authorization` last).
///
/// NB: it holds the security token and the signature, so its `Debug`
/// output redacts both; there is deliberately no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedV3Request {
    headers: Vec<(&'static str, String)>,
    body: String,
    signature: String,
}

/// Headers whose values never appear in `Debug` output.
const SENSITIVE_HEADERS: [&str; 2] = ["x-acs-security-token", "authorization"];

impl SignedV3Request {
    /// Every header to send (lower-case names), `Authorization` included.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.headers.iter().map(|(k, v)| (*k, v.as_str()))
    }

    /// The value of one header (lower-case name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The form body: `ImageId=...&RegionId=...`, values percent-encoded.
    pub fn body(&self) -> &str {
        &self.body
    }

    /// Values that must be scrubbed from anything derived from the
    /// response: the security token and the signature (nothing empty).
    pub fn sensitive_values(&self) -> impl Iterator<Item = &str> {
        self.header("x-acs-security-token")
            .into_iter()
            .chain(std::iter::once(self.signature.as_str()))
            .filter(|v| !v.is_empty())
    }
}

impl fmt::Debug for SignedV3Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        debug_redacted(&mut map, &self.headers, &SENSITIVE_HEADERS);
        map.entry(&"body", &self.body);
        map.finish()
    }
}

/// Builds and signs one CancelCopyImage V3 request for `host` (the
/// `Host` header as sent: host, plus `:port` when the URL has one).
///
/// `nonce` must be fresh for every attempt, retries included.
pub fn sign_cancel_copy_image_v3(
    key: &AccessKey,
    host: &str,
    region_id: &str,
    image_id: &str,
    nonce: &str,
    timestamp: Timestamp,
) -> SignedV3Request {
    let body = format!(
        "ImageId={}&RegionId={}",
        percent_encode(image_id),
        percent_encode(region_id)
    );
    let mut headers: Vec<(&'static str, String)> = vec![
        ("content-type", FORM_CONTENT_TYPE.to_owned()),
        ("host", host.to_owned()),
        ("x-acs-action", ACTION.to_owned()),
        ("x-acs-content-sha256", hashed_payload(body.as_bytes())),
        ("x-acs-date", format_timestamp(timestamp)),
    ];
    if let Some(token) = key.security_token() {
        headers.push(("x-acs-security-token", token.to_owned()));
    }
    headers.push(("x-acs-signature-nonce", nonce.to_owned()));
    headers.push(("x-acs-version", API_VERSION.to_owned()));
    let empty: [(&str, &str); 0] = [];
    let signed = sign_request(
        "POST",
        "/",
        &empty,
        &headers,
        body.as_bytes(),
        &key.id,
        key.secret(),
    );
    headers.push(("authorization", signed.authorization));
    SignedV3Request {
        headers,
        body,
        signature: signed.signature,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::ecs::signature::sample_key as key;

    #[test]
    fn canonical_headers_lowercase_trim_sort_and_join_repeats() {
        let (canonical, signed) = canonical_headers(&[
            ("X-Acs-Date", " 2024 "),
            ("Host", "h"),
            ("x-acs-b", "2"),
            ("x-acs-b", "1"),
        ]);
        assert_eq!(canonical, "host:h\nx-acs-b:1,2\nx-acs-date:2024\n");
        assert_eq!(signed, "host;x-acs-b;x-acs-date");
    }

    #[test]
    fn cancel_request_signs_every_header_it_sends() {
        let ts: Timestamp = "2024-05-01T12:34:56Z".parse().unwrap();
        let k = key(Some("CAIS+tok/en="));
        let req =
            sign_cancel_copy_image_v3(&k, "127.0.0.1:8080", "cn-hangzhou", "m-a b", "n-1", ts);
        assert_eq!(req.body(), "ImageId=m-a%20b&RegionId=cn-hangzhou");
        assert_eq!(
            req.header("x-acs-content-sha256"),
            Some(hashed_payload(req.body().as_bytes()).as_str())
        );
        // Recompute from the headers actually sent, as a server would.
        let sent: Vec<(&str, &str)> = req
            .headers()
            .filter(|(k, _)| *k != "authorization")
            .collect();
        let again = sign_request(
            "POST",
            "/",
            &[] as &[(&str, &str)],
            &sent,
            req.body().as_bytes(),
            &k.id,
            k.secret(),
        );
        assert_eq!(
            req.header("authorization"),
            Some(again.authorization.as_str())
        );
        assert!(
            again.signed_headers.contains("content-type;host;"),
            "{}",
            again.signed_headers
        );
        assert!(again.signed_headers.contains("x-acs-security-token"));
        let debug = format!("{req:?} {again:?}");
        assert!(!debug.contains("CAIS+tok/en="), "{debug}");
        assert!(!debug.contains(&again.signature), "{debug}");
        let sensitive: Vec<&str> = req.sensitive_values().collect();
        assert_eq!(sensitive, ["CAIS+tok/en=", again.signature.as_str()]);
    }

    #[test]
    fn no_security_token_header_without_sts() {
        let ts: Timestamp = "2024-05-01T12:34:56Z".parse().unwrap();
        let req = sign_cancel_copy_image_v3(&key(None), "h", "cn-hangzhou", "m-1", "n", ts);
        assert_eq!(req.header("x-acs-security-token"), None);
        assert_eq!(req.sensitive_values().count(), 1);
    }
}
