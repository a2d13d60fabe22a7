//! The V3 signature (ACS3-HMAC-SHA256) against the 17 known answers computed
//! by the official SDK's own functions (`testdata/signature-v3.json`), every
//! intermediate byte for byte.

use copyimage_canceller::ecs::signature_v3::{
    authorization, canonical_headers, canonical_query, canonical_request, hashed_canonical_request,
    hashed_payload, sign, sign_request, string_to_sign,
};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize)]
struct Vector {
    name: String,
    inputs: Inputs,
    expected: Expected,
    sdk_authorizations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Inputs {
    signature_algorithm: String,
    method: String,
    pathname: String,
    query: BTreeMap<String, String>,
    headers: BTreeMap<String, String>,
    body: String,
    access_key_id: String,
    access_key_secret: String,
}

#[derive(Deserialize)]
struct Expected {
    hashed_request_payload: String,
    canonical_uri: String,
    canonical_query_string: String,
    canonical_headers: String,
    signed_headers: Vec<String>,
    signed_headers_string: String,
    canonical_request: String,
    hashed_canonical_request: String,
    string_to_sign: String,
    signature: String,
    authorization: String,
}

fn vectors() -> Vec<Vector> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/signature-v3.json");
    let text = std::fs::read_to_string(path).expect("testdata/signature-v3.json");
    serde_json::from_str(&text).expect("vectors parse")
}

fn pairs(map: &BTreeMap<String, String>) -> Vec<(&str, &str)> {
    map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[test]
fn all_seventeen_vectors_are_present() {
    let v = vectors();
    assert_eq!(v.len(), 17);
    assert!(
        v.iter()
            .all(|v| v.inputs.signature_algorithm == "ACS3-HMAC-SHA256")
    );
}

#[test]
fn every_intermediate_matches_the_official_sdk() {
    for v in vectors() {
        let (i, e, name) = (&v.inputs, &v.expected, &v.name);
        let payload = hashed_payload(i.body.as_bytes());
        assert_eq!(payload, e.hashed_request_payload, "{name}: hashed payload");
        assert_eq!(i.pathname, e.canonical_uri, "{name}: canonical URI");
        let query = canonical_query(&pairs(&i.query));
        assert_eq!(query, e.canonical_query_string, "{name}: canonical query");
        let (headers, signed) = canonical_headers(&pairs(&i.headers));
        assert_eq!(headers, e.canonical_headers, "{name}: canonical headers");
        assert_eq!(signed, e.signed_headers_string, "{name}: signed headers");
        assert_eq!(
            signed.split(';').collect::<Vec<_>>(),
            e.signed_headers,
            "{name}"
        );
        let request =
            canonical_request(&i.method, &i.pathname, &query, &headers, &signed, &payload);
        assert_eq!(request, e.canonical_request, "{name}: canonical request");
        assert_eq!(
            hashed_canonical_request(&request),
            e.hashed_canonical_request,
            "{name}"
        );
        let sts = string_to_sign(&request);
        assert_eq!(sts, e.string_to_sign, "{name}: string to sign");
        let signature = sign(&i.access_key_secret, &sts);
        assert_eq!(signature, e.signature, "{name}: signature");
        let auth = authorization(&i.access_key_id, &signed, &signature);
        assert_eq!(auth, e.authorization, "{name}: authorization");
        for (sdk, want) in &v.sdk_authorizations {
            assert_eq!(&auth, want, "{name}: {sdk}");
        }
    }
}

#[test]
fn one_call_signing_equals_the_steps_and_a_wrong_secret_differs() {
    for v in vectors() {
        let i = &v.inputs;
        let signed = sign_request(
            &i.method,
            &i.pathname,
            &pairs(&i.query),
            &pairs(&i.headers),
            i.body.as_bytes(),
            &i.access_key_id,
            &i.access_key_secret,
        );
        assert_eq!(
            signed.canonical_request, v.expected.canonical_request,
            "{}",
            v.name
        );
        assert_eq!(signed.authorization, v.expected.authorization, "{}", v.name);
        let wrong = sign(&format!("{}x", i.access_key_secret), &signed.string_to_sign);
        assert_ne!(wrong, v.expected.signature, "{}", v.name);
        // V3's key is the bare secret: V1's `secret&` key gives another answer.
        let v1_key = sign(&format!("{}&", i.access_key_secret), &signed.string_to_sign);
        assert_ne!(v1_key, v.expected.signature, "{}", v.name);
    }
}
