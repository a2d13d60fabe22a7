//! The ECS client with `SignatureVersion::V3` over real HTTP against the
//! in-process simulator, whose V3 check is an independent implementation
//! (`copyimage_stand_ins::ecs_simulator::verify_v3`): success with plain and STS keys,
//! wrong secret (redacted echo), nonce reuse, clock skew, and what goes on
//! the wire.

mod common;

use std::time::Duration;

use common::ecs::{
    IMAGE, KEY_ID, REGION, STS_KEY_ID, STS_SECRET, TOKEN,
    assert_nonce_reuse_and_clock_skew_refused, assert_sts_key_cancels, key, service_error,
    simulator, sts_cancel_on_the_wire, wrong_secret_outcome,
};
use copyimage_canceller::credentials::AccessKey;
use copyimage_canceller::ecs::RetryClass;
use copyimage_canceller::ecs::client::{EcsClient, EcsClientConfig, SignatureVersion};
use copyimage_stand_ins::ecs_simulator::ImageState;

fn v3_client(endpoint: &str) -> EcsClient {
    EcsClient::new(EcsClientConfig {
        endpoint: endpoint.to_owned(),
        request_timeout: Duration::from_secs(30),
        signature_version: SignatureVersion::V3,
        ..EcsClientConfig::default()
    })
    .expect("client")
}

#[test]
fn v1_stays_the_default() {
    assert_eq!(
        EcsClientConfig::default().signature_version,
        SignatureVersion::V1
    );
}

#[tokio::test]
async fn v3_cancels_with_plain_and_sts_keys() {
    let sim = simulator().await;
    let client = v3_client(&sim.endpoint());
    let outcome = client.cancel_copy_image(&key(), REGION, IMAGE).await;
    assert_eq!(outcome.retry_class(), RetryClass::Success, "{outcome:?}");
    let log = sim.requests();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].signature_valid, Some(true));
    assert_eq!(log[0].action.as_deref(), Some("CancelCopyImage"));
    assert_eq!(log[0].access_key_id.as_deref(), Some(KEY_ID));
    assert_eq!(log[0].signature_method.as_deref(), Some("ACS3-HMAC-SHA256"));
    assert_eq!(log[0].image_id.as_deref(), Some(IMAGE));
    assert_eq!(sim.image(IMAGE), None, "a cancelled copy is gone");

    assert_sts_key_cancels(&client, &sim, "m-v3sts0001").await;
    // The token is checked, not just signed: a V3 request with the STS key
    // id but no token is refused.
    let no_token = AccessKey::new(STS_KEY_ID, STS_SECRET, None);
    let outcome = client
        .cancel_copy_image(&no_token, REGION, "m-v3sts0001")
        .await;
    assert_eq!(service_error(&outcome).code, "MissingSecurityToken");
}

#[tokio::test]
async fn v3_wrong_secret_is_terminal_and_the_echo_is_redacted() {
    let sim = simulator().await;
    let outcome = wrong_secret_outcome(&v3_client(&sim.endpoint())).await;
    assert_eq!(
        service_error(&outcome).message,
        "Specified signature does not match our calculation. (server string to sign redacted)"
    );
    assert_eq!(sim.requests()[0].signature_valid, Some(false));
    let debug = format!("{outcome:?}");
    for leak in [TOKEN, "not-the-secret", "ACS3-HMAC-SHA256", "x-acs-"] {
        assert!(!debug.contains(leak), "{leak:?} leaked: {debug}");
    }
    assert_eq!(sim.image(IMAGE), Some(ImageState::Copying));
}

#[tokio::test]
async fn v3_nonce_reuse_and_clock_skew_are_refused() {
    let sim = simulator().await;
    let client = v3_client(&sim.endpoint());
    assert_nonce_reuse_and_clock_skew_refused(&client, &sim, &key(), REGION, IMAGE, "nonce-v3")
        .await;
}

#[tokio::test]
async fn v3_request_shape_on_the_wire() {
    let (head, body) = sts_cancel_on_the_wire(v3_client).await;
    let request_line = head.lines().next().unwrap();
    assert_eq!(request_line, "POST / HTTP/1.1", "nothing in the URL");
    assert_eq!(body, format!("ImageId={IMAGE}&RegionId={REGION}"));
    let lower = head.to_ascii_lowercase();
    common::text::assert_contains(
        &lower,
        &[
            "x-acs-action: cancelcopyimage",
            "x-acs-version: 2014-05-26",
            "x-acs-date: ",
            "x-acs-signature-nonce: ",
            "x-acs-content-sha256: ",
            "content-type: application/x-www-form-urlencoded",
            "authorization: acs3-hmac-sha256 credential=sts.clienttest0001,signedheaders=content-type;host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-security-token;x-acs-signature-nonce;x-acs-version,signature=",
        ],
    );
    assert!(
        head.contains(&format!("x-acs-security-token: {TOKEN}")),
        "{head}"
    );
    assert!(
        !lower.contains("signaturemethod"),
        "no V1 parameters: {head}"
    );
}
