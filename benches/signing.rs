//! Signing cost: a whole CancelCopyImage parameter set signed (STS token
//! included) against a bare HMAC-SHA1 over the same string to sign.
//! `scripts/bench-signing` runs this beside the official Python SDK signers.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use sha1::Sha1;

use copyimage_canceller::credentials::AccessKey;
use copyimage_canceller::ecs::signature::{
    Method, canonicalized_query, hmac_key, sign_cancel_copy_image, string_to_sign,
};

// The `sts-security-token-post` vector of testdata/signature-v1.json: the
// Python side signs the very same request and checks the same answer.
const ACCESS_KEY_ID: &str = "STS.NUgYrLnoExample001";
const SECRET: &str = "StsTmpSecretExample00000000000001";
const TOKEN: &str = "CAIS8AF1q6Ft5B2yfSjIr5bkKtL+ha1C1aiMOVPciFkbXdZ5gfGd1zz2IHhMe3VrBOkXs/8/mW9T6/wdlqF+Tp5OSEPCbNF8tCe5NVqpZIjr5ZlsA4rmzYCNH0T3OYWe1i+s=";
const REGION: &str = "cn-hangzhou";
const IMAGE: &str = "m-bp1caf3yicx5jlfl0001";
const NONCE: &str = "6b5e0f3a-9d1c-4c2e-8f57-0e4b1a2c3d4e";
const TIMESTAMP: &str = "2024-05-01T12:34:56Z";
const EXPECTED_SIGNATURE: &str = "zSCxNIPWvjOEvwrPcu8oKW1qNQ4=";

fn signing(c: &mut Criterion) {
    let key = AccessKey::new(ACCESS_KEY_ID, SECRET, Some(TOKEN.to_owned()));
    let timestamp = TIMESTAMP.parse().expect("timestamp");

    let signed = sign_cancel_copy_image(Method::Post, &key, REGION, IMAGE, NONCE, timestamp);
    // Measure the right thing: the request signed here is the vector's.
    assert_eq!(signed.get("Signature"), Some(EXPECTED_SIGNATURE));
    let unsigned: Vec<(&str, &str)> = signed.iter().filter(|(k, _)| *k != "Signature").collect();
    let to_sign = string_to_sign(Method::Post, &canonicalized_query(&unsigned));
    let mac_key = hmac_key(SECRET);

    c.bench_function("sign_cancel_copy_image", |b| {
        b.iter(|| {
            sign_cancel_copy_image(
                Method::Post,
                black_box(&key),
                black_box(REGION),
                black_box(IMAGE),
                black_box(NONCE),
                black_box(timestamp),
            )
        })
    });
    c.bench_function("bare_hmac_sha1", |b| {
        b.iter(|| {
            let mut mac = Hmac::<Sha1>::new_from_slice(black_box(mac_key.as_bytes()))
                .expect("any key length");
            mac.update(black_box(to_sign.as_bytes()));
            mac.finalize().into_bytes()
        })
    });
}

criterion_group!(benches, signing);
criterion_main!(benches);
