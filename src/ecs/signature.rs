//! The Alibaba Cloud RPC signature (`SignatureMethod=HMAC-SHA1`,
//! `SignatureVersion=1.0`): canonical query, string to sign, HMAC. Pure code,
//! no I/O and no clock: the nonce and the timestamp are arguments.
//!
//! The rules, with sources, are in `reference/alibaba-api.md` §1; the
//! official SDKs' known answers are in `testdata/signature-v1.json`.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use sha1::Sha1;

use crate::credentials::AccessKey;
use crate::ecs::{ACTION, API_VERSION};

/// Bytes that percentEncode writes as `%XX`: everything except the
/// unreserved `A-Z a-z 0-9 - _ . ~`.
///
/// NB: `percent_encoding::NON_ALPHANUMERIC` alone would also escape `-_.~`,
/// and `form_urlencoded` writes a space as `+`; both break the signature.
pub const RPC_ENCODE_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `SignatureMethod` sent with every request.
pub const SIGNATURE_METHOD: &str = "HMAC-SHA1";
/// `SignatureVersion` sent with every request.
pub const SIGNATURE_VERSION: &str = "1.0";
/// `Format` sent with every request (without it, errors come back as XML).
pub const FORMAT: &str = "JSON";
/// The `Timestamp` format: UTC, no fractional seconds, no offset.
pub const TIMESTAMP_FORMAT: &str = "%Y-%m-%dT%H:%M:%SZ";

/// The HTTP method a request is signed for (it is the prefix of the string
/// to sign, so signing for one and sending the other fails).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `GET`: parameters in the query string.
    Get,
    /// `POST`: parameters in the query string and/or a form body.
    Post,
}

impl Method {
    /// The method as written on the wire and in the string to sign.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

impl std::str::FromStr for Method {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "GET" => Ok(Method::Get),
            "POST" => Ok(Method::Post),
            other => Err(format!(
                "unsupported HTTP method {other:?} for an RPC signature: use GET or POST"
            )),
        }
    }
}

/// Appends percentEncode(`s`) to `out`: UTF-8 bytes, unreserved bytes kept,
/// every other byte as upper-case `%XX`.
pub fn percent_encode_into(out: &mut String, s: &str) {
    for chunk in percent_encoding::utf8_percent_encode(s, RPC_ENCODE_SET) {
        out.push_str(chunk);
    }
}

/// The bytes percentEncode leaves as they are (`A-Z a-z 0-9 - _ . ~`), as a
/// lookup table for the string-to-sign hot path. It is the complement of
/// [`RPC_ENCODE_SET`]; a property test holds the two together.
const UNRESERVED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] =
            matches!(b as u8, b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~');
        b += 1;
    }
    table
};

/// Appends percentEncode(percentEncode(`s`)) to `out`: the form every name
/// and value takes inside the string to sign. One pass: a byte escaped as
/// `%XX` by the first encoding becomes `%25XX` by the second, and runs of
/// unreserved bytes are copied whole.
///
/// NB: hand-rolled because it dominates signing: the crate's chunk iterator
/// costs about as much as the HMAC itself here.
fn double_percent_encode_into(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    let mut run_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if UNRESERVED[usize::from(b)] {
            continue;
        }
        // A run is non-empty only if it starts with an ASCII byte, and the
        // byte after an ASCII byte is never a UTF-8 continuation byte, so
        // both ends are character boundaries.
        if run_start < i {
            out.push_str(&s[run_start..i]);
        }
        out.push_str("%25");
        out.push_str(&percent_encoding::percent_encode_byte(b)[1..]);
        run_start = i + 1;
    }
    if run_start < bytes.len() {
        out.push_str(&s[run_start..]);
    }
}

/// percentEncode(`s`) as a new string.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 2);
    percent_encode_into(&mut out, s);
    out
}

/// The CanonicalizedQueryString: `percentEncode(k)=percentEncode(v)` pairs,
/// sorted by name in byte order, joined by `&`. Pass every parameter except
/// `Signature`; empty values are kept (signed as `Key=`).
pub fn canonicalized_query<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> String {
    let sorted = sorted_pairs(params);
    let mut out = String::with_capacity(encoded_capacity(&sorted));
    encode_pairs_into(&mut out, sorted);
    out
}

/// Appends `k=v&k=v…`, each key and value percent-encoded, in the given order.
fn encode_pairs_into<'a>(out: &mut String, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) {
    for (i, (k, v)) in pairs.into_iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        percent_encode_into(out, k);
        out.push('=');
        percent_encode_into(out, v);
    }
}

/// The pairs in byte order of the names. Names are unique in practice;
/// sorting the value second keeps the result a function of the set even if
/// they are not.
fn sorted_pairs<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> Vec<(&str, &str)> {
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect();
    sorted.sort_unstable();
    sorted
}

/// A capacity that holds the encoded pairs without regrowing in the usual case.
fn encoded_capacity(pairs: &[(&str, &str)]) -> usize {
    let raw: usize = pairs.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    raw + raw / 2
}

/// The StringToSign: `METHOD&%2F&percentEncode(canonicalized_query)`.
pub fn string_to_sign(method: Method, canonicalized_query: &str) -> String {
    let method = method.as_str();
    let mut out = String::with_capacity(method.len() + 4 + canonicalized_query.len() * 5 / 4);
    out.push_str(method);
    out.push_str("&%2F&");
    percent_encode_into(&mut out, canonicalized_query);
    out
}

/// The HMAC key: the AccessKey secret followed by `&`, not escaped.
pub fn hmac_key(secret: &str) -> String {
    let mut key = String::with_capacity(secret.len() + 1);
    key.push_str(secret);
    key.push('&');
    key
}

/// The signature: `Base64(HMAC-SHA1(secret + "&", string_to_sign))`.
pub fn sign(secret: &str, string_to_sign: &str) -> String {
    // The key is built on the stack when it fits one SHA-1 block (every real
    // secret does); NB: like the heap copy it replaces, it is not zeroed.
    let mut block = [0u8; 64];
    let n = secret.len();
    let mac = if n < block.len() {
        block[..n].copy_from_slice(secret.as_bytes());
        block[n] = b'&';
        Hmac::<Sha1>::new_from_slice(&block[..=n])
    } else {
        Hmac::<Sha1>::new_from_slice(hmac_key(secret).as_bytes())
    };
    let mut mac = mac.expect("HMAC accepts keys of any length");
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The StringToSign of a parameter set (every parameter except
/// `Signature`), in one pass: equal to
/// `string_to_sign(method, &canonicalized_query(params))` without building
/// the canonical query first.
pub fn string_to_sign_of<K: AsRef<str>, V: AsRef<str>>(
    method: Method,
    params: &[(K, V)],
) -> String {
    let pairs = params.iter().map(|(k, v)| (k.as_ref(), v.as_ref()));
    let raw: usize = params
        .iter()
        .map(|(k, v)| k.as_ref().len() + v.as_ref().len() + 2)
        .sum();
    let mut out = String::with_capacity(method.as_str().len() + 5 + 3 * raw);
    out.push_str(method.as_str());
    out.push_str("&%2F&");
    // The operator's own parameter sets come sorted: skip the copy then.
    if pairs.clone().is_sorted() {
        push_double_encoded_pairs(&mut out, pairs);
    } else {
        push_double_encoded_pairs(&mut out, sorted_pairs(params).into_iter());
    }
    out
}

/// Appends `k%3Dv` pairs joined by `%26`, names and values double-encoded.
fn push_double_encoded_pairs<'a>(
    out: &mut String,
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
) {
    for (i, (k, v)) in pairs.enumerate() {
        if i > 0 {
            out.push_str("%26");
        }
        double_percent_encode_into(out, k);
        out.push_str("%3D");
        double_percent_encode_into(out, v);
    }
}

/// The signature of a parameter set (every parameter except `Signature`).
pub fn signature_for<K: AsRef<str>, V: AsRef<str>>(
    method: Method,
    secret: &str,
    params: &[(K, V)],
) -> String {
    sign(secret, &string_to_sign_of(method, params))
}

/// Formats a `Timestamp` parameter (`YYYY-MM-DDThh:mm:ssZ`, UTC).
pub fn format_timestamp(timestamp: Timestamp) -> String {
    let dt = jiff::tz::Offset::UTC.to_datetime(timestamp);
    let Ok(year) = u32::try_from(dt.year()) else {
        return timestamp.strftime(TIMESTAMP_FORMAT).to_string();
    };
    // Hand-rolled because it runs on every signature and strftime's format
    // parsing costs more than the rest of the parameter set.
    let mut out = String::with_capacity(20);
    push_digits(&mut out, year, 4);
    out.push('-');
    push_digits(&mut out, dt.month().unsigned_abs().into(), 2);
    out.push('-');
    push_digits(&mut out, dt.day().unsigned_abs().into(), 2);
    out.push('T');
    push_digits(&mut out, dt.hour().unsigned_abs().into(), 2);
    out.push(':');
    push_digits(&mut out, dt.minute().unsigned_abs().into(), 2);
    out.push(':');
    push_digits(&mut out, dt.second().unsigned_abs().into(), 2);
    out.push('Z');
    out
}

/// Appends `value` as exactly `width` decimal digits (zero-padded; jiff
/// years never exceed four digits).
fn push_digits(out: &mut String, value: u32, width: u32) {
    for place in (0..width).rev() {
        let digit = (value / 10u32.pow(place)) % 10;
        out.push(char::from(b'0' + digit as u8));
    }
}

/// A complete, signed parameter set, `Signature` included, in byte order of
/// the names.
///
/// NB: it holds the security token and the signature, so its `Debug` output
/// redacts both; there is deliberately no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedParams<'a> {
    params: Vec<(&'static str, Cow<'a, str>)>,
}

/// Parameters whose values never appear in `Debug` output.
const SENSITIVE_PARAMS: [&str; 2] = ["SecurityToken", "Signature"];

impl SignedParams<'_> {
    /// The value of one parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_ref())
    }

    /// All parameters, `Signature` included, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.params.iter().map(|(k, v)| (*k, v.as_ref()))
    }

    /// The `application/x-www-form-urlencoded` body carrying every parameter.
    /// Values are percent-encoded (space as `%20`), which any form decoder reads.
    pub fn form_body(&self) -> String {
        let mut out = String::with_capacity(512);
        encode_pairs_into(&mut out, self.params.iter().map(|(k, v)| (*k, v.as_ref())));
        out
    }

    /// Values that must be scrubbed from anything derived from the response:
    /// the security token and the signature (and nothing empty).
    pub fn sensitive_values(&self) -> impl Iterator<Item = &str> {
        self.params
            .iter()
            .filter(|(k, v)| SENSITIVE_PARAMS.contains(k) && !v.is_empty())
            .map(|(_, v)| v.as_ref())
    }
}

/// Debug entries for `pairs`, the values of the `sensitive` keys redacted.
pub(crate) fn debug_redacted<V: fmt::Debug>(
    map: &mut fmt::DebugMap<'_, '_>,
    pairs: &[(&'static str, V)],
    sensitive: &[&str],
) {
    for (k, v) in pairs {
        if sensitive.contains(k) {
            map.entry(k, &"[REDACTED]");
        } else {
            map.entry(k, v);
        }
    }
}

impl fmt::Debug for SignedParams<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        debug_redacted(&mut map, &self.params, &SENSITIVE_PARAMS);
        map.finish()
    }
}

/// Builds the full signed parameter set of one CancelCopyImage request:
/// the common parameters (`Format=JSON`, `SignatureMethod=HMAC-SHA1`,
/// `SignatureVersion=1.0`, `Version=2014-05-26`, `Action=CancelCopyImage`,
/// `SecurityToken` when the key has one), `RegionId`, `ImageId`, and the
/// `Signature` over all of them.
///
/// `nonce` must be fresh for every request, retries included (the service
/// refuses a reused nonce with `SignatureNonceUsed`).
pub fn sign_cancel_copy_image<'a>(
    method: Method,
    key: &'a AccessKey,
    region_id: &'a str,
    image_id: &'a str,
    nonce: &'a str,
    timestamp: Timestamp,
) -> SignedParams<'a> {
    // Kept in byte order of the names, so the canonical sort is skipped and
    // the form body comes out sorted too. Values are borrowed: this runs for
    // every attempt.
    let mut params: Vec<(&'static str, Cow<'a, str>)> = Vec::with_capacity(12);
    params.push(("AccessKeyId", Cow::Borrowed(&key.id)));
    params.push(("Action", Cow::Borrowed(ACTION)));
    params.push(("Format", Cow::Borrowed(FORMAT)));
    params.push(("ImageId", Cow::Borrowed(image_id)));
    params.push(("RegionId", Cow::Borrowed(region_id)));
    if let Some(token) = key.security_token() {
        params.push(("SecurityToken", Cow::Borrowed(token)));
    }
    params.push(("SignatureMethod", Cow::Borrowed(SIGNATURE_METHOD)));
    params.push(("SignatureNonce", Cow::Borrowed(nonce)));
    params.push(("SignatureVersion", Cow::Borrowed(SIGNATURE_VERSION)));
    params.push(("Timestamp", Cow::Owned(format_timestamp(timestamp))));
    params.push(("Version", Cow::Borrowed(API_VERSION)));

    let signature = signature_for(method, key.secret(), &params);
    let at = params.partition_point(|(k, _)| *k < "Signature");
    params.insert(at, ("Signature", Cow::Owned(signature)));
    SignedParams { params }
}

/// The key the signature tests (RPC and V3) sign with.
#[cfg(test)]
pub(crate) fn sample_key(token: Option<&str>) -> AccessKey {
    AccessKey::new(
        "LTAI5tExampleKeyId001",
        "ExampleSecretForVectors000000001",
        token.map(str::to_owned),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The documented rule, written independently of the signer: every
    /// UTF-8 byte outside `A-Z a-z 0-9 - _ . ~` becomes `%XX`, upper-case hex.
    fn reference_percent_encode(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    char::from(b).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    fn reference_percent_decode(s: &str) -> String {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .expect("encoded from UTF-8")
            .into_owned()
    }

    #[test]
    fn percent_encode_table() {
        let table = [
            ("", ""),
            ("AZaz09-_.~", "AZaz09-_.~"),
            (" ", "%20"),
            ("*", "%2A"),
            ("~", "~"),
            ("/", "%2F"),
            ("+", "%2B"),
            ("=", "%3D"),
            ("&", "%26"),
            ("%", "%25"),
            (":", "%3A"),
            ("@", "%40"),
            ("测", "%E6%B5%8B"),
            ("2024-05-01T12:34:56Z", "2024-05-01T12%3A34%3A56Z"),
        ];
        for (input, want) in table {
            assert_eq!(percent_encode(input), want, "percentEncode({input:?})");
        }
    }

    #[test]
    fn method_round_trips_and_rejects_others() {
        for m in [Method::Get, Method::Post] {
            assert_eq!(m.as_str().parse::<Method>(), Ok(m));
        }
        let err = "PUT".parse::<Method>().unwrap_err();
        assert!(err.contains("GET or POST"), "{err}");
    }

    #[test]
    fn timestamp_has_no_fraction_and_no_offset() {
        let rows = [
            ("2024-05-01T12:34:56.789+00:00", "2024-05-01T12:34:56Z"),
            ("2024-05-01T14:34:56+02:00", "2024-05-01T12:34:56Z"),
            ("1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z"),
            ("0001-02-03T04:05:06Z", "0001-02-03T04:05:06Z"),
            ("9999-12-30T21:59:59Z", "9999-12-30T21:59:59Z"),
        ];
        for (input, want) in rows {
            let ts: Timestamp = input.parse().unwrap();
            assert_eq!(format_timestamp(ts), want, "{input}");
        }
    }

    #[test]
    fn signed_params_are_sorted_complete_and_verifiable() {
        let key = sample_key(Some("CAIS+token/with=chars"));
        let ts: Timestamp = "2024-05-01T12:34:56Z".parse().unwrap();
        let signed = sign_cancel_copy_image(Method::Post, &key, "cn-hangzhou", "m-bp1", "n-1", ts);
        let names: Vec<&str> = signed.iter().map(|(k, _)| k).collect();
        assert_eq!(
            names.join(" "),
            "AccessKeyId Action Format ImageId RegionId SecurityToken Signature SignatureMethod \
             SignatureNonce SignatureVersion Timestamp Version"
        );
        assert_eq!(signed.get("Format"), Some("JSON"));
        assert_eq!(signed.get("Action"), Some("CancelCopyImage"));
        assert_eq!(signed.get("Version"), Some("2014-05-26"));
        assert_eq!(signed.get("Timestamp"), Some("2024-05-01T12:34:56Z"));
        // The signature verifies over everything else, as a server checks it.
        let unsigned: Vec<(&str, &str)> =
            signed.iter().filter(|(k, _)| *k != "Signature").collect();
        assert_eq!(
            signed.get("Signature"),
            Some(signature_for(Method::Post, key.secret(), &unsigned).as_str())
        );
        // The form body decodes back to the same parameters.
        let decoded: Vec<(String, String)> = form_urlencoded::parse(signed.form_body().as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let original: Vec<(String, String)> = signed
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(decoded, original);
    }

    #[test]
    fn no_security_token_without_sts() {
        let key = sample_key(None);
        let ts: Timestamp = "2024-05-01T12:34:56Z".parse().unwrap();
        let signed = sign_cancel_copy_image(Method::Post, &key, "cn-hangzhou", "m-bp1", "n-1", ts);
        assert_eq!(signed.get("SecurityToken"), None);
        assert_eq!(signed.sensitive_values().count(), 1, "only the signature");
    }

    #[test]
    fn debug_redacts_token_and_signature() {
        let token = "CAISsecret-token-value-0001";
        let key = sample_key(Some(token));
        let ts: Timestamp = "2024-05-01T12:34:56Z".parse().unwrap();
        let signed = sign_cancel_copy_image(Method::Post, &key, "cn-hangzhou", "m-bp1", "n-1", ts);
        let signature = signed.get("Signature").unwrap().to_owned();
        let debug = format!("{signed:?} {signed:#?} {key:?}");
        assert!(!debug.contains(token), "{debug}");
        assert!(!debug.contains(&signature), "{debug}");
        assert!(!debug.contains(key.secret()), "{debug}");
        assert!(
            debug.contains("cn-hangzhou"),
            "the rest stays readable: {debug}"
        );
        let sensitive: Vec<&str> = signed.sensitive_values().collect();
        assert_eq!(sensitive, [token, signature.as_str()]);
    }

    #[test]
    fn unreserved_table_is_the_complement_of_the_encode_set() {
        for b in 0..=255u8 {
            let encoded = percent_encoding::percent_encode(&[b], RPC_ENCODE_SET).to_string();
            assert_eq!(
                UNRESERVED[usize::from(b)],
                encoded.len() == 1,
                "byte {b:#04x}"
            );
        }
    }

    proptest! {
        #[test]
        fn percent_encode_matches_reference_model(s in any::<String>()) {
            prop_assert_eq!(percent_encode(&s), reference_percent_encode(&s));
        }

        #[test]
        fn percent_encode_round_trips(s in any::<String>()) {
            prop_assert_eq!(reference_percent_decode(&percent_encode(&s)), s);
        }

        #[test]
        fn canonical_query_is_sorted_encoded_and_order_independent(
            params in proptest::collection::btree_map(any::<String>(), any::<String>(), 0..12),
            seed in any::<u64>(),
        ) {
            let mut shuffled: Vec<(String, String)> = params.clone().into_iter().collect();
            // A cheap deterministic shuffle driven by the generated seed.
            let n = shuffled.len();
            for i in 0..n {
                let j = (seed.rotate_left(i as u32) as usize) % n;
                shuffled.swap(i, j);
            }
            let query = canonicalized_query(&shuffled);

            // Only unreserved bytes, escapes and the two separators appear.
            prop_assert!(query.bytes().all(|b| b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'_' | b'.' | b'~' | b'%' | b'=' | b'&')));
            // Splitting on the raw separators gives exactly the pairs back,
            // in byte order of the names (BTreeMap<String> iterates in byte order).
            let pairs: Vec<(String, String)> = if query.is_empty() {
                Vec::new()
            } else {
                query.split('&').map(|pair| {
                    let (k, v) = pair.split_once('=').expect("every pair has '='");
                    (reference_percent_decode(k), reference_percent_decode(v))
                }).collect()
            };
            let expected: Vec<(String, String)> = params.into_iter().collect();
            prop_assert_eq!(pairs, expected);
        }

                #[test]
        fn one_pass_string_to_sign_equals_the_two_step_one(
            params in proptest::collection::vec((any::<String>(), any::<String>()), 0..10),
            post in any::<bool>(),
        ) {
            let method = if post { Method::Post } else { Method::Get };
            prop_assert_eq!(
                string_to_sign_of(method, &params),
                string_to_sign(method, &canonicalized_query(&params))
            );
            // Both paths: as generated (rarely sorted) and sorted.
            let mut sorted = params.clone();
            sorted.sort();
            prop_assert_eq!(
                string_to_sign_of(method, &sorted),
                string_to_sign(method, &canonicalized_query(&params))
            );
        }

        #[test]
        fn format_timestamp_matches_strftime(
            secs in -377_705_023_201i64..=253_402_207_200,
            nanos in 0i32..1_000_000_000,
        ) {
            let ts = Timestamp::new(secs, nanos).unwrap();
            prop_assert_eq!(format_timestamp(ts), ts.strftime(TIMESTAMP_FORMAT).to_string());
        }

        #[test]
        fn string_to_sign_is_method_slash_and_encoded_query(
            params in proptest::collection::btree_map("[A-Za-z]{1,12}", any::<String>(), 0..8),
            post in any::<bool>(),
        ) {
            let method = if post { Method::Post } else { Method::Get };
            let params: Vec<(String, String)> = params.into_iter().collect();
            let query = canonicalized_query(&params);
            let sts = string_to_sign(method, &query);
            let want = format!("{}&%2F&{}", method.as_str(), reference_percent_encode(&query));
            prop_assert_eq!(sts, want);
        }
    }
}
