//! `copyimage-canceller cancel`, the real binary, against the in-process ECS
//! simulator: what a user sees on stdout, stderr and in the exit code.

#[path = "common/text.rs"]
mod text;

use std::collections::BTreeSet;
use std::process::Output;
use std::time::Duration;

use copyimage_canceller::credentials::{
    ENV_ACCESS_KEY_ID, ENV_ACCESS_KEY_SECRET, ENV_SECURITY_TOKEN,
};
use copyimage_stand_ins::AccessKey;
use copyimage_stand_ins::ecs_simulator::{
    EcsSimulator, ImageState, RequestRecord, SimulatorConfig, SimulatorHandle,
};

const KEY_ID: &str = "STS.CancelCliTest0001";
const SECRET: &str = "cancel-cli-secret/+=0001";
const TOKEN: &str = "CAIS8AF1q6Ft5B2yfSjIr5bkKtL+ha1C1aiMOVPciFkbXdZ5/cancelcli/token==";
const REGION: &str = "cn-hangzhou";
const IMAGE: &str = "m-bp1cancelcli0001";
/// Generous: only there so that a broken binary fails the test instead of hanging it.
const TEST_LIMIT: Duration = Duration::from_secs(90);

async fn simulator() -> SimulatorHandle {
    let key = AccessKey::new(KEY_ID, SECRET, Some(TOKEN.to_owned()));
    let config = SimulatorConfig::new([key]).with_image(IMAGE, ImageState::Copying);
    EcsSimulator::start(config).await.expect("simulator starts")
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `cancel` with the test key in the environment and short retry
/// delays, plus `extra` arguments.
async fn cancel(endpoint: &str, secret: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "cancel",
        "--region-id",
        REGION,
        "--image-id",
        IMAGE,
        "--endpoint",
        endpoint,
        "--retry-base-delay",
        "20ms",
        "--retry-max-delay",
        "100ms",
    ];
    args.extend_from_slice(extra);
    let command = tokio::process::Command::new(env!("CARGO_BIN_EXE_copyimage-canceller"))
        .args(&args)
        .env(ENV_ACCESS_KEY_ID, KEY_ID)
        .env(ENV_ACCESS_KEY_SECRET, secret)
        .env(ENV_SECURITY_TOKEN, TOKEN)
        .kill_on_drop(true)
        .output();
    let Output {
        status,
        stdout,
        stderr,
    } = tokio::time::timeout(TEST_LIMIT, command)
        .await
        .expect("cancel finished in time")
        .expect("cancel ran");
    let run = Run {
        code: status.code().expect("exit code"),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    };
    // Whatever happened, no secret reaches the terminal.
    let encoded_token = TOKEN
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    for leak in [SECRET, secret, TOKEN, encoded_token.as_str()] {
        assert!(
            !run.stdout.contains(leak) && !run.stderr.contains(leak),
            "{leak:?} leaked:\n{}\n{}",
            run.stdout,
            run.stderr
        );
    }
    run
}

fn add_faults(sim: &SimulatorHandle, specs: &[&str]) {
    for spec in specs {
        sim.add_fault(spec.parse().expect("fault spec"));
    }
}

fn nonces(log: &[RequestRecord]) -> BTreeSet<String> {
    log.iter()
        .filter_map(|r| r.signature_nonce.clone())
        .collect()
}

#[tokio::test]
async fn two_internal_errors_then_success() {
    let sim = simulator().await;
    add_faults(&sim, &[&format!("{IMAGE}=internal-error*2")]);
    let run = cancel(&sim.endpoint(), SECRET, &["--backoff-limit", "2"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let log = sim.requests();
    assert_eq!(log.len(), 3);
    assert_eq!(nonces(&log).len(), 3, "a fresh nonce per attempt");
    let request_id = log[2].request_id.clone().unwrap();
    assert_eq!(run.stdout, format!("{{\"RequestId\":\"{request_id}\"}}\n"));
    let retries: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(retries.len(), 2, "{}", run.stderr);
    for (i, line) in retries.iter().enumerate() {
        assert!(
            line.starts_with(&format!(
                "attempt {} failed: InternalError (HTTP 500)",
                i + 1
            )),
            "{line}"
        );
        assert!(
            line.contains(log[i].request_id.as_deref().unwrap()),
            "{line}"
        );
        assert!(
            line.contains("retrying in") && line.contains(&format!("retry {} of 2", i + 1)),
            "{line}"
        );
    }
    assert_eq!(sim.image(IMAGE), None);
}

#[tokio::test]
async fn terminal_error_is_sent_once_and_named_on_stderr() {
    let sim = simulator().await;
    sim.set_image(IMAGE, ImageState::Copied);
    let run = cancel(&sim.endpoint(), SECRET, &[]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    let log = sim.requests();
    assert_eq!(log.len(), 1, "terminal: exactly one request");
    assert!(run.stdout.is_empty());
    let request_id = log[0].request_id.as_deref().unwrap();
    assert_eq!(
        run.stderr,
        format!(
            "error: CancelCopyImage failed on attempt 1: IncorrectImageStatus (HTTP 400): The image is copied finished. [request ID {request_id}]\n"
        )
    );
}

#[tokio::test]
async fn throttling_is_not_counted_against_the_backoff_limit() {
    let sim = simulator().await;
    add_faults(&sim, &[&format!("{IMAGE}=throttling*2")]);
    let run = cancel(
        &sim.endpoint(),
        SECRET,
        &["--backoff-limit", "0", "--deadline", "60s"],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(sim.requests().len(), 3);
    assert_eq!(
        run.stderr
            .matches("not counted against --backoff-limit")
            .count(),
        2,
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn throttling_is_bounded_by_the_deadline() {
    let sim = simulator().await;
    // The service asks for 2 s between attempts; the deadline is 1 s.
    add_faults(&sim, &[&format!("{IMAGE}=throttling:2s*always")]);
    let run = cancel(
        &sim.endpoint(),
        SECRET,
        &["--retry-max-delay", "5s", "--deadline", "1s"],
    )
    .await;
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert_eq!(sim.requests().len(), 1);
    assert!(
        run.stderr.contains("--deadline 1s") && run.stderr.contains("Throttling"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn retries_exhausted_names_the_last_error() {
    let sim = simulator().await;
    add_faults(&sim, &[&format!("{IMAGE}=service-unavailable*always")]);
    let run = cancel(&sim.endpoint(), SECRET, &["--backoff-limit", "2"]).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    let log = sim.requests();
    assert_eq!(log.len(), 3, "the first attempt and two counted retries");
    let last = run.stderr.lines().last().unwrap();
    assert!(
        last.starts_with("error: CancelCopyImage failed: retries exhausted after 3 attempts (--backoff-limit 2); last error: ServiceUnavailable (HTTP 503)"),
        "{last}"
    );
    assert!(
        last.contains(log[2].request_id.as_deref().unwrap()),
        "{last}"
    );
}

#[tokio::test]
async fn dropped_connection_and_html_502_are_retried() {
    let sim = simulator().await;
    add_faults(
        &sim,
        &[&format!("{IMAGE}=drop"), &format!("{IMAGE}=bad-gateway")],
    );
    let run = cancel(&sim.endpoint(), SECRET, &["--backoff-limit", "2"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(sim.requests().len(), 3);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stderr);
    assert!(
        lines[0].starts_with("attempt 1 failed: TransportError: request to 127.0.0.1 failed"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("attempt 2 failed: TransportError: HTTP 502 Bad Gateway: the response is not an ECS API answer (text/html"),
        "{}",
        lines[1]
    );
}

#[tokio::test]
async fn oversized_body_is_a_transport_error() {
    let sim = simulator().await;
    add_faults(&sim, &[&format!("{IMAGE}=oversized:1m")]);
    let run = cancel(&sim.endpoint(), SECRET, &["--backoff-limit", "0"]).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("response body is larger than 65536 bytes"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn a_response_slower_than_the_timeout_is_retried_and_may_have_succeeded() {
    let sim = simulator().await;
    // The simulator acts on the request, then answers after 5 s; the client
    // gives up after 300 ms. The retry finds the image gone.
    add_faults(&sim, &[&format!("{IMAGE}=latency:5s")]);
    let run = cancel(
        &sim.endpoint(),
        SECRET,
        &["--timeout", "300ms", "--backoff-limit", "1"],
    )
    .await;
    assert_eq!(run.code, 6, "{}", run.stderr);
    assert_eq!(sim.requests().len(), 2);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert!(
        lines[0].starts_with(
            "attempt 1 failed: TransportError: request to 127.0.0.1 timed out (limit 300ms)"
        ),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("InvalidImageId.NotFound")
            && lines[1]
                .contains("attempt(s) 1 got no usable answer and may well have cancelled the copy"),
        "{}",
        lines[1]
    );
}

#[tokio::test]
async fn timeout_without_retries_exhausts_them() {
    let sim = simulator().await;
    add_faults(&sim, &[&format!("{IMAGE}=hang")]);
    let run = cancel(
        &sim.endpoint(),
        SECRET,
        &["--timeout", "300ms", "--backoff-limit", "0"],
    )
    .await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains("timed out (limit 300ms)"),
        "{}",
        run.stderr
    );
    assert_eq!(sim.image(IMAGE), Some(ImageState::Copying));
}

#[tokio::test]
async fn wrong_secret_is_terminal_and_redacted() {
    let sim = simulator().await;
    let run = cancel(&sim.endpoint(), "not-the-right-secret", &[]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(sim.requests().len(), 1);
    text::assert_contains(
        &run.stderr,
        &[
            "SignatureDoesNotMatch (HTTP 400)",
            "(server string to sign redacted)",
        ],
    );
    assert!(
        !run.stderr.contains("SecurityToken") && !run.stderr.contains("POST&"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn insecure_endpoint_is_refused_without_the_flag() {
    // Nothing is sent, so nothing needs to listen there.
    let run = cancel("http://ecs.example.com", SECRET, &[]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("--allow-insecure-endpoint"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn missing_credentials_exit_4_and_name_the_variable() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_copyimage-canceller"))
        .args(["cancel", "--region-id", REGION, "--image-id", IMAGE])
        .env(ENV_ACCESS_KEY_ID, KEY_ID)
        .env(ENV_ACCESS_KEY_SECRET, "")
        .env_remove(ENV_SECURITY_TOKEN)
        .output();
    let output = tokio::time::timeout(TEST_LIMIT, output)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(output.status.code(), Some(4));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("ALIBABA_CLOUD_ACCESS_KEY_SECRET"),
        "{stderr}"
    );
}

#[tokio::test]
async fn signature_version_v3_cancels_through_the_simulator() {
    let sim = simulator().await;
    add_faults(&sim, &[&format!("{IMAGE}=internal-error*1")]);
    let run = cancel(
        &sim.endpoint(),
        SECRET,
        &["--signature-version", "v3", "--backoff-limit", "1"],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let log = sim.requests();
    assert_eq!(log.len(), 2);
    assert!(log.iter().all(|r| r.signature_valid == Some(true)));
    assert!(
        log.iter()
            .all(|r| r.signature_method.as_deref() == Some("ACS3-HMAC-SHA256")),
        "{log:?}"
    );
    assert_eq!(nonces(&log).len(), 2, "a fresh nonce per V3 attempt");
    let request_id = log[1].request_id.clone().unwrap();
    assert_eq!(run.stdout, format!("{{\"RequestId\":\"{request_id}\"}}\n"));
    assert_eq!(sim.image(IMAGE), None);
}

#[tokio::test]
async fn signature_version_v3_wrong_secret_is_terminal_and_redacted() {
    let sim = simulator().await;
    let run = cancel(
        &sim.endpoint(),
        "not-the-right-secret",
        &["--signature-version", "v3"],
    )
    .await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(sim.requests().len(), 1);
    assert_eq!(sim.requests()[0].signature_valid, Some(false));
    assert!(
        run.stderr.contains("SignatureDoesNotMatch (HTTP 400)")
            && run.stderr.contains("(server string to sign redacted)"),
        "{}",
        run.stderr
    );
    for echo in [
        "StringToSign is",
        "CanonicalRequest",
        "x-acs-",
        "ACS3-HMAC-SHA256",
    ] {
        assert!(!run.stderr.contains(echo), "{echo}: {}", run.stderr);
    }
}

#[tokio::test]
async fn signature_version_names_the_choices_when_wrong() {
    let sim = simulator().await;
    let run = cancel(&sim.endpoint(), SECRET, &["--signature-version", "v2"]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("--signature-version") && run.stderr.contains("v1, v3"),
        "{}",
        run.stderr
    );
    assert!(sim.requests().is_empty());
}
