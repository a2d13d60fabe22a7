//! The ECS client over real HTTP: against the in-process ECS simulator (which
//! verifies signatures like the service), a capturing server (what goes on
//! the wire), and a TLS server with a self-signed certificate (refused).

mod common;

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::ecs::{
    IMAGE, REGION, STS_SECRET, TOKEN, assert_nonce_reuse_and_clock_skew_refused,
    assert_sts_key_cancels, key, service_error, simulator, sts_cancel_on_the_wire, sts_key,
    wrong_secret_outcome,
};
use copyimage_canceller::ecs::client::{EcsClient, EcsClientConfig};
use copyimage_canceller::ecs::{CancelOutcome, RetryClass, TransportError, TransportKind};
use copyimage_stand_ins::ecs_simulator::{ConnectionFate, FaultSpec, ImageState};

/// A client with room for a loaded machine.
fn client_for(endpoint: &str) -> EcsClient {
    client_with_timeout(endpoint, Duration::from_secs(30))
}

/// A client whose short request timeout is what a test exercises.
fn client_with_timeout(endpoint: &str, request_timeout: Duration) -> EcsClient {
    EcsClient::new(EcsClientConfig {
        endpoint: endpoint.to_owned(),
        request_timeout,
        ..EcsClientConfig::default()
    })
    .expect("client")
}

fn fault(spec: &str) -> FaultSpec {
    spec.parse().expect("fault spec")
}

/// [`IMAGE`] cancelled with the plain key after `fault` was scripted for it.
async fn cancel_after_fault(fault_kind: &str) -> CancelOutcome {
    let sim = simulator().await;
    sim.add_fault(fault(&format!("{IMAGE}={fault_kind}")));
    client_for(&sim.endpoint())
        .cancel_copy_image(&key(), REGION, IMAGE)
        .await
}

fn transport_error(outcome: &CancelOutcome) -> &TransportError {
    match outcome {
        CancelOutcome::Transport(err) => err,
        other => panic!("expected a transport error, got {other:?}"),
    }
}

#[tokio::test]
async fn cancels_a_copy_in_progress_with_plain_and_sts_keys() {
    let sim = simulator().await;
    let client = client_for(&sim.endpoint());
    let outcome = client.cancel_copy_image(&key(), REGION, IMAGE).await;
    let CancelOutcome::Cancelled { request_id } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(outcome.retry_class(), RetryClass::Success);
    let log = sim.requests();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].request_id.as_deref(), Some(request_id.as_str()));
    assert_eq!(log[0].signature_valid, Some(true));
    assert_eq!(log[0].method, "POST");
    assert_eq!(sim.image(IMAGE), None, "a cancelled copy is gone");

    assert_sts_key_cancels(&client, &sim, "m-sts0001").await;
}

#[tokio::test]
async fn internal_errors_are_retryable_and_each_attempt_has_a_fresh_nonce() {
    let sim = simulator().await;
    sim.add_fault(fault(&format!("{IMAGE}=internal-error*2")));
    let client = client_for(&sim.endpoint());
    let mut classes = Vec::new();
    for _ in 0..3 {
        classes.push(
            client
                .cancel_copy_image(&key(), REGION, IMAGE)
                .await
                .retry_class(),
        );
    }
    assert_eq!(
        classes,
        [
            RetryClass::Retryable,
            RetryClass::Retryable,
            RetryClass::Success
        ]
    );
    let nonces: std::collections::BTreeSet<_> = sim
        .requests()
        .into_iter()
        .map(|r| r.signature_nonce.unwrap())
        .collect();
    assert_eq!(nonces.len(), 3, "three requests, three nonces");
}

#[tokio::test]
async fn incorrect_image_status_is_terminal_with_message_and_request_id() {
    let sim = simulator().await;
    sim.set_image("m-copied0001", ImageState::Copied);
    let outcome = client_for(&sim.endpoint())
        .cancel_copy_image(&key(), REGION, "m-copied0001")
        .await;
    let err = service_error(&outcome);
    assert_eq!(
        (err.http_status, err.code.as_str(), err.message.as_str()),
        (400, "IncorrectImageStatus", "The image is copied finished.")
    );
    assert_eq!(err.request_id, sim.requests()[0].request_id);
    assert!(
        err.recommend
            .as_deref()
            .unwrap_or_default()
            .contains("IncorrectImageStatus")
    );
    assert_eq!(outcome.retry_class(), RetryClass::Terminal);

    let outcome = client_for(&sim.endpoint())
        .cancel_copy_image(&key(), REGION, "m-absent0001")
        .await;
    assert_eq!(service_error(&outcome).code, "InvalidImageId.NotFound");
    assert_eq!(outcome.retry_class(), RetryClass::Terminal);
}

#[tokio::test]
async fn throttling_is_throttled_and_carries_retry_after() {
    let outcome = cancel_after_fault("throttling:1500ms").await;
    let err = service_error(&outcome);
    assert!(err.code.starts_with("Throttling"), "{err:?}");
    assert_eq!(err.retry_after, Some(Duration::from_millis(1500)));
    assert_eq!(outcome.retry_class(), RetryClass::Throttled);
}

#[tokio::test]
async fn unusable_answers_are_retryable_transport_errors() {
    let sim = simulator().await;
    // Only hang and stall need the timeout; it is short so the test is quick.
    let client = client_with_timeout(&sim.endpoint(), Duration::from_secs(1));
    // (fault, what the message must say, HTTP status carried, kind)
    let rows: [(&str, &str, Option<u16>, TransportKind); 5] = [
        (
            "drop",
            "request to 127.0.0.1 failed",
            None,
            TransportKind::Interrupted,
        ),
        (
            "bad-gateway",
            "HTTP 502 Bad Gateway: the response is not an ECS API answer (text/html",
            Some(502),
            TransportKind::InvalidResponse,
        ),
        (
            "hang",
            "request to 127.0.0.1 timed out (limit 1s)",
            None,
            TransportKind::Timeout,
        ),
        (
            "stall",
            "HTTP 200: reading the response body failed",
            Some(200),
            TransportKind::Timeout,
        ),
        (
            "oversized:1m",
            "HTTP 200: response body is larger than 65536 bytes",
            Some(200),
            TransportKind::InvalidResponse,
        ),
    ];
    for (kind, needle, status, transport_kind) in rows {
        sim.add_fault(fault(&format!("{IMAGE}={kind}")));
        let outcome = client.cancel_copy_image(&key(), REGION, IMAGE).await;
        assert_eq!(
            outcome.retry_class(),
            RetryClass::Outage,
            "{kind}: {outcome:?}"
        );
        let err = transport_error(&outcome);
        assert!(err.message.contains(needle), "{kind}: {}", err.message);
        assert_eq!(err.kind, transport_kind, "{kind}: {}", err.message);
        assert_eq!(err.http_status, status, "{kind}: {}", err.message);
    }
    let fates: Vec<ConnectionFate> = sim.requests().into_iter().map(|r| r.connection).collect();
    assert!(fates.contains(&ConnectionFate::Dropped) && fates.contains(&ConnectionFate::Held));
    // The image is still being copied: nothing above cancelled it.
    assert_eq!(sim.image(IMAGE), Some(ImageState::Copying));
}

#[tokio::test]
async fn service_unavailable_is_the_endpoints_outage_on_its_code() {
    let outcome = cancel_after_fault("service-unavailable").await;
    let err = service_error(&outcome);
    assert_eq!(
        (err.http_status, err.code.as_str()),
        (503, "ServiceUnavailable")
    );
    assert_eq!(outcome.retry_class(), RetryClass::Outage);
}

#[tokio::test]
async fn wrong_secret_is_terminal_and_the_echo_is_redacted() {
    let sim = simulator().await;
    let outcome = wrong_secret_outcome(&client_for(&sim.endpoint())).await;
    let err = service_error(&outcome);
    assert!(
        err.message.ends_with("(server string to sign redacted)"),
        "{}",
        err.message
    );
    assert!(err.request_id.is_some());
    let debug = format!("{outcome:?}");
    let encoded_token = TOKEN
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    for leak in [
        TOKEN,
        encoded_token.as_str(),
        "SecurityToken",
        "not-the-secret",
        "POST&",
    ] {
        assert!(!debug.contains(leak), "{leak:?} leaked: {debug}");
    }
}

#[tokio::test]
async fn nonce_reuse_and_clock_skew_are_refused_by_the_service() {
    let sim = simulator().await;
    let client = client_for(&sim.endpoint());
    assert_nonce_reuse_and_clock_skew_refused(&client, &sim, &key(), REGION, IMAGE, "nonce").await;
}

#[tokio::test]
async fn connection_refused_is_a_transport_error() {
    // Bind then drop to find a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let outcome = client_for(&format!("http://127.0.0.1:{port}"))
        .cancel_copy_image(&key(), REGION, IMAGE)
        .await;
    let err = transport_error(&outcome);
    assert!(
        err.message.contains("could not connect to 127.0.0.1"),
        "{}",
        err.message
    );
    assert_eq!(err.http_status, None);
    assert_eq!(err.kind, TransportKind::Connect);
}

/// What went on the wire: one POST to `/`, every parameter (token and
/// signature included) in a form body, nothing in the URL.
#[tokio::test]
async fn parameters_travel_in_a_form_body_never_in_the_url() {
    let (head, body) = sts_cancel_on_the_wire(client_for).await;

    let request_line = head.lines().next().unwrap();
    assert_eq!(request_line, "POST / HTTP/1.1");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/x-www-form-urlencoded"),
        "{head}"
    );
    let params: std::collections::BTreeMap<String, String> =
        form_urlencoded::parse(body.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let names: Vec<&str> = params.keys().map(String::as_str).collect();
    assert_eq!(
        names.join(" "),
        "AccessKeyId Action Format ImageId RegionId SecurityToken Signature SignatureMethod \
         SignatureNonce SignatureVersion Timestamp Version"
    );
    assert_eq!(params["SecurityToken"], TOKEN);
    assert_eq!(params["Format"], "JSON");
    assert_eq!(params["Action"], "CancelCopyImage");
    assert!(uuid::Uuid::parse_str(&params["SignatureNonce"]).is_ok());
    let unsigned: Vec<(&str, &str)> = params
        .iter()
        .filter(|(k, _)| *k != "Signature")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let expected = copyimage_canceller::ecs::signature::signature_for(
        copyimage_canceller::ecs::signature::Method::Post,
        STS_SECRET,
        &unsigned,
    );
    assert_eq!(params["Signature"], expected);
}

/// A server presenting a certificate no trusted root signed is refused:
/// the client verifies TLS certificates.
#[tokio::test]
async fn self_signed_tls_certificate_is_refused() {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/tls");
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(format!("{dir}/self-signed-cert.pem"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_file(format!("{dir}/self-signed-key.pem")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
        // The handshake fails when the client rejects the certificate; whatever
        // it received of a request would show up here.
        let mut tls = rustls::Stream::new(&mut conn, &mut socket);
        let mut request = Vec::new();
        let _ = tls.read_to_end(&mut request);
        let _ = tls.flush();
        request
    });
    let outcome = client_for(&format!("https://{addr}"))
        .cancel_copy_image(&sts_key(), REGION, IMAGE)
        .await;
    let err = transport_error(&outcome);
    assert!(
        err.message.to_ascii_lowercase().contains("certificate"),
        "{}",
        err.message
    );
    // A TLS failure is the endpoint's (an outage), never the resource's.
    assert_eq!(outcome.retry_class(), RetryClass::Outage);
    let received = server.join().unwrap();
    assert!(
        received.is_empty(),
        "no request may be sent over an unverified connection"
    );
}
