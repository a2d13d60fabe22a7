//! Helpers for the ECS client's tests over real HTTP (`tests/ecs_client.rs`,
//! `tests/ecs_client_v3.rs`): a server that captures one request, what an
//! outcome carries, and the replay and clock-skew checks both signature
//! versions must pass.

use copyimage_canceller::credentials::AccessKey;
use copyimage_canceller::ecs::client::EcsClient;
use copyimage_canceller::ecs::{CancelOutcome, RetryClass, ServiceError};
use copyimage_stand_ins::ecs_simulator::{
    EcsSimulator, ImageState, SimulatorConfig, SimulatorHandle,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

// The keys both signature versions' tests sign with and the simulator
// knows, and the image it is copying.
pub const KEY_ID: &str = "LTAI5tClientTest0001";
pub const SECRET: &str = "client-test-secret/+&=0001";
pub const STS_KEY_ID: &str = "STS.ClientTest0001";
pub const STS_SECRET: &str = "client-sts-secret-0001";
pub const TOKEN: &str = "CAIS8AF1q6Ft5B2yfSjIr5bkKtL+ha1C1aiMOVPciFkbXdZ5/clienttest/token==";
pub const REGION: &str = "cn-hangzhou";
pub const IMAGE: &str = "m-bp1clienttest0001";

/// The plain key, as the client signs with it.
pub fn key() -> AccessKey {
    AccessKey::new(KEY_ID, SECRET, None)
}

/// The STS key (with its token), as the client signs with it.
pub fn sts_key() -> AccessKey {
    AccessKey::new(STS_KEY_ID, STS_SECRET, Some(TOKEN.to_owned()))
}

/// A simulator that knows both keys and has [`IMAGE`] copying.
pub async fn simulator() -> SimulatorHandle {
    let config = SimulatorConfig::new([
        copyimage_stand_ins::AccessKey::new(KEY_ID, SECRET, None),
        copyimage_stand_ins::AccessKey::new(STS_KEY_ID, STS_SECRET, Some(TOKEN.to_owned())),
    ])
    .with_image(IMAGE, ImageState::Copying);
    EcsSimulator::start(config).await.expect("simulator starts")
}

/// The service error in `outcome`; panics on any other outcome.
pub fn service_error(outcome: &CancelOutcome) -> &ServiceError {
    match outcome {
        CancelOutcome::Service(err) => err,
        other => panic!("expected a service error, got {other:?}"),
    }
}

/// Through `client`, `sim` accepts the STS key (token included): `image`,
/// copying, is cancelled.
pub async fn assert_sts_key_cancels(client: &EcsClient, sim: &SimulatorHandle, image: &str) {
    sim.set_image(image, ImageState::Copying);
    let outcome = client.cancel_copy_image(&sts_key(), REGION, image).await;
    assert!(
        matches!(outcome, CancelOutcome::Cancelled { .. }),
        "{outcome:?}"
    );
}

/// Through `client`, [`IMAGE`] cancelled with the STS key ID and token but a
/// wrong secret: a terminal 400 SignatureDoesNotMatch, returned for the
/// caller's checks of the message and of what leaks.
pub async fn wrong_secret_outcome(client: &EcsClient) -> CancelOutcome {
    let wrong = AccessKey::new(STS_KEY_ID, "not-the-secret", Some(TOKEN.to_owned()));
    let outcome = client.cancel_copy_image(&wrong, REGION, IMAGE).await;
    let err = service_error(&outcome);
    assert_eq!(
        (err.http_status, err.code.as_str()),
        (400, "SignatureDoesNotMatch")
    );
    assert_eq!(outcome.retry_class(), RetryClass::Terminal);
    outcome
}

/// The request head and body `client` (built for an endpoint) sends to
/// cancel [`IMAGE`] with the STS key, read by a server that answers 200.
pub async fn sts_cancel_on_the_wire(client: impl FnOnce(&str) -> EcsClient) -> (String, String) {
    let (endpoint, server) = capture_one_request("CAPTURED-0001").await;
    let outcome = client(&endpoint)
        .cancel_copy_image(&sts_key(), REGION, IMAGE)
        .await;
    assert_eq!(
        outcome,
        CancelOutcome::Cancelled {
            request_id: "CAPTURED-0001".into()
        }
    );
    server.await.unwrap()
}

/// A loopback server that accepts one connection, reads one request (the head,
/// then exactly Content-Length bytes of body) and answers 200 with
/// `{"RequestId": request_id}`: its endpoint, and the task that yields the
/// request's head and body.
async fn capture_one_request(
    request_id: &str,
) -> (String, tokio::task::JoinHandle<(String, String)>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let answer = serde_json::json!({ "RequestId": request_id }).to_string();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        let (head, body) = loop {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "client closed early");
            raw.extend_from_slice(&buf[..n]);
            let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8(raw[..end].to_vec()).unwrap();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("content-length");
            while raw.len() < end + 4 + length {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "client closed before the whole body");
                raw.extend_from_slice(&buf[..n]);
            }
            break (
                head,
                String::from_utf8(raw[end + 4..end + 4 + length].to_vec()).unwrap(),
            );
        };
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
            answer.len()
        );
        socket.write_all(response.as_bytes()).await.unwrap();
        (head, body)
    });
    (endpoint, server)
}

/// Through `client` and the simulator `sim` (where `key` is known and `image` is
/// copying): a nonce sent twice is refused as SignatureNonceUsed, a timestamp 20
/// minutes old as InvalidTimeStamp.Expired, and neither cancels anything.
/// `nonce_prefix` keeps each caller's nonces apart.
pub async fn assert_nonce_reuse_and_clock_skew_refused(
    client: &EcsClient,
    sim: &SimulatorHandle,
    key: &AccessKey,
    region: &str,
    image: &str,
    nonce_prefix: &str,
) {
    let now = jiff::Timestamp::now();
    let reused = format!("{nonce_prefix}-1");
    let first = client
        .cancel_copy_image_at(key, region, "m-absent0001", &reused, now)
        .await;
    assert_eq!(service_error(&first).code, "InvalidImageId.NotFound");
    let again = client
        .cancel_copy_image_at(key, region, "m-absent0001", &reused, now)
        .await;
    assert_eq!(service_error(&again).code, "SignatureNonceUsed");
    let stale = now - jiff::SignedDuration::from_mins(20);
    let old = client
        .cancel_copy_image_at(key, region, image, &format!("{nonce_prefix}-2"), stale)
        .await;
    assert_eq!(service_error(&old).code, "InvalidTimeStamp.Expired");
    assert_eq!(sim.image(image), Some(ImageState::Copying));
}
