//! The ECS simulator over real HTTP: requests captured from the official SDKs
//! replayed byte for byte, every check, nonce reuse, clock skew, XML, each
//! fault kind, the control routes, and the `ecs-simulator` command.

#[path = "common/text.rs"]
mod text;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use copyimage_stand_ins::AccessKey;
use copyimage_stand_ins::ecs_simulator::verify::{percent_encode, signature, string_to_sign};
use copyimage_stand_ins::ecs_simulator::{
    ConnectionFate, EcsSimulator, ImageState, ManualClock, SimulatorConfig, SimulatorHandle,
};
use jiff::Timestamp;
use serde_json::Value;

const KEY_ID: &str = "LTAI5tSimulatorTest01";
const SECRET: &str = "simulator-test-secret/+&=";
const STS_KEY_ID: &str = "STS.SimulatorTest01";
const STS_SECRET: &str = "sts-simulator-secret";
const TOKEN: &str =
    "CAIS8AF1q6Ft5B2yfSjIr5bkKtL+ha1C1aiMOVPciFkbXdZ5gfGd1zz2IHhMe3VrBOkXs/8/mW9T6==";
const IMAGE: &str = "m-bp1caf3yicx5jlfl0001";
/// Generous: only there so that a broken simulator fails the test instead of hanging it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(CLIENT_TIMEOUT)
        .build()
        .expect("reqwest client")
}

fn vectors() -> Vec<Value> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/signature-v1.json"
    ))
    .expect("testdata/signature-v1.json");
    serde_json::from_str(&text).expect("vectors parse")
}

fn vector_time() -> Timestamp {
    "2024-05-01T12:34:56Z".parse().unwrap()
}

async fn start(config: SimulatorConfig) -> SimulatorHandle {
    EcsSimulator::start(config).await.expect("simulator starts")
}

fn keys() -> Vec<AccessKey> {
    vec![
        AccessKey::new(KEY_ID, SECRET, None),
        AccessKey::new(STS_KEY_ID, STS_SECRET, Some(TOKEN.to_owned())),
    ]
}

/// A fresh, valid, unsigned parameter set for `key_id` at `now`.
fn params(key_id: &str, image: &str, now: Timestamp) -> BTreeMap<String, String> {
    let mut p: BTreeMap<String, String> = [
        ("Action", "CancelCopyImage"),
        ("Version", "2014-05-26"),
        ("Format", "JSON"),
        ("AccessKeyId", key_id),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("RegionId", "cn-hangzhou"),
        ("ImageId", image),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    p.insert("SignatureNonce".into(), uuid::Uuid::new_v4().to_string());
    p.insert(
        "Timestamp".into(),
        now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    );
    if key_id == STS_KEY_ID {
        p.insert("SecurityToken".into(), TOKEN.into());
    }
    p
}

fn sign(method: &str, mut p: BTreeMap<String, String>, secret: &str) -> BTreeMap<String, String> {
    p.remove("Signature");
    let sig = signature(secret, &string_to_sign(method, &p));
    p.insert("Signature".into(), sig);
    p
}

fn query_of(p: &BTreeMap<String, String>) -> String {
    p.iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    fn code(&self) -> String {
        self.json()["Code"].as_str().unwrap_or("Success").to_owned()
    }
}

async fn send_raw(method: &str, url: String, body: Option<String>) -> Reply {
    let mut req = client().request(method.parse().unwrap(), url);
    if let Some(body) = body {
        req = req
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
    }
    let resp = req.send().await.expect("simulator answers");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.text().await.expect("body");
    Reply {
        status,
        headers,
        body,
    }
}

/// Sends signed params, all in the query string.
async fn send(sim: &SimulatorHandle, method: &str, p: &BTreeMap<String, String>) -> Reply {
    send_raw(method, format!("{}/?{}", sim.endpoint(), query_of(p)), None).await
}

#[tokio::test]
async fn official_sdk_requests_replayed_byte_for_byte_are_accepted() {
    let mut replayed = 0;
    for v in vectors() {
        let expected = &v["expected"];
        let inputs = &v["inputs"];
        if inputs["params"]["Action"] != "CancelCopyImage" {
            continue;
        }
        let method = inputs["method"].as_str().unwrap();
        let key = AccessKey::new(
            inputs["access_key_id"].as_str().unwrap(),
            inputs["access_key_secret"].as_str().unwrap(),
            inputs["params"]["SecurityToken"]
                .as_str()
                .map(str::to_owned),
        );
        let image = inputs["params"]["ImageId"].as_str().unwrap();
        let region = inputs["params"]["RegionId"].as_str().unwrap();
        let mut config = SimulatorConfig::new([key])
            .with_clock(Arc::new(ManualClock::new(vector_time())))
            .with_image(image, ImageState::Copying);
        config.regions.insert(region.to_owned());
        let sim = start(config).await;
        let reply = if let Some(url) = expected["sdk_url"].as_str() {
            // The generated ECS client: POST, everything in the query string.
            let path_and_query = &url[url.find("/?").unwrap()..];
            send_raw(method, format!("{}{path_and_query}", sim.endpoint()), None).await
        } else if let Some(pq) = expected["sdk_url_path_and_query"].as_str() {
            send_raw(method, format!("{}{pq}", sim.endpoint()), None).await
        } else if let Some(body) = expected["post_form_body"].as_str() {
            let sig = percent_encode(expected["signature"].as_str().unwrap());
            let query = expected["post_query_without_signature"].as_str().unwrap();
            send_raw(
                method,
                format!("{}/?{query}&Signature={sig}", sim.endpoint()),
                Some(body.to_owned()),
            )
            .await
        } else {
            let query = expected["request_query_string_sorted"].as_str().unwrap();
            send_raw(method, format!("{}/?{query}", sim.endpoint()), None).await
        };
        let name = v["name"].as_str().unwrap();
        assert_eq!(reply.status, 200, "{name}: {}", reply.body);
        assert_eq!(sim.image(image), None, "{name}: the copy is cancelled");
        replayed += 1;
        sim.shutdown().await;
    }
    assert!(replayed >= 15, "only {replayed} vectors replayed");
}

#[tokio::test]
async fn cancel_then_second_cancel_and_other_states() {
    let sim = start(
        SimulatorConfig::new(keys())
            .with_image("m-copying", ImageState::Copying)
            .with_image("m-copied", ImageState::Copied)
            .with_image("m-native", ImageState::NotFromCopy),
    )
    .await;
    let now = Timestamp::now();
    let table = [
        ("m-copying", 200, "Success"),
        ("m-copying", 404, "InvalidImageId.NotFound"),
        ("m-copied", 400, "IncorrectImageStatus"),
        ("m-native", 400, "ImageCreatedNotFromCopy"),
        ("m-never", 404, "InvalidImageId.NotFound"),
    ];
    for (image, status, code) in table {
        for (method, key_id, secret) in [("GET", KEY_ID, SECRET), ("POST", STS_KEY_ID, STS_SECRET)]
        {
            if code == "Success" && method == "POST" {
                sim.set_image(image, ImageState::Copying);
            }
            let reply = send(
                &sim,
                method,
                &sign(method, params(key_id, image, now), secret),
            )
            .await;
            assert_eq!(
                (reply.status, reply.code()),
                (status, code.to_owned()),
                "{image} {method}: {}",
                reply.body
            );
            assert_eq!(
                reply.headers["content-type"], "application/json;charset=utf-8",
                "{image} {method}"
            );
            let body = reply.json();
            assert!(
                body["RequestId"].as_str().is_some_and(|r| r.len() == 36),
                "{}",
                reply.body
            );
            if code != "Success" {
                for field in ["HostId", "Message", "Recommend"] {
                    assert!(body[field].is_string(), "{field} in {}", reply.body);
                }
            }
        }
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn every_check_answers_with_the_real_code_and_status() {
    let clock = ManualClock::new(vector_time());
    let sim = start(
        SimulatorConfig::new(keys())
            .with_clock(Arc::new(clock.clone()))
            .with_image(IMAGE, ImageState::Copied),
    )
    .await;
    let now = vector_time();
    type Edit = fn(&mut BTreeMap<String, String>);
    let nothing: Edit = |_| {};
    // (name, key, secret, edit before signing, edit after signing, status, code)
    let table: Vec<(&str, &str, &str, Edit, Edit, u16, &str)> = vec![
        (
            "valid",
            KEY_ID,
            SECRET,
            nothing,
            nothing,
            400,
            "IncorrectImageStatus",
        ),
        (
            "missing image",
            KEY_ID,
            SECRET,
            |p| drop(p.remove("ImageId")),
            nothing,
            400,
            "MissingImageId",
        ),
        (
            "missing region",
            KEY_ID,
            SECRET,
            |p| drop(p.remove("RegionId")),
            nothing,
            400,
            "MissingRegionId",
        ),
        (
            "unknown action",
            KEY_ID,
            SECRET,
            |p| drop(p.insert("Action".into(), "CopyImage".into())),
            nothing,
            404,
            "InvalidAction.NotFound",
        ),
        (
            "wrong version",
            KEY_ID,
            SECRET,
            |p| drop(p.insert("Version".into(), "2016-03-14".into())),
            nothing,
            400,
            "InvalidVersion",
        ),
        (
            "sha256",
            KEY_ID,
            SECRET,
            |p| drop(p.insert("SignatureMethod".into(), "HMAC-SHA256".into())),
            nothing,
            400,
            "InvalidSignatureMethod",
        ),
        (
            "unknown key",
            "LTAI5tNobody",
            SECRET,
            nothing,
            nothing,
            404,
            "InvalidAccessKeyId.NotFound",
        ),
        (
            "wrong secret",
            KEY_ID,
            "not-the-secret",
            nothing,
            nothing,
            400,
            "SignatureDoesNotMatch",
        ),
        (
            "tampered after signing",
            KEY_ID,
            SECRET,
            nothing,
            |p| drop(p.insert("ImageId".into(), "m-other".into())),
            400,
            "SignatureDoesNotMatch",
        ),
        (
            "bad timestamp",
            KEY_ID,
            SECRET,
            |p| drop(p.insert("Timestamp".into(), "2024-05-01T12:34:56.000Z".into())),
            nothing,
            400,
            "InvalidTimeStamp.Format",
        ),
        (
            "old timestamp",
            KEY_ID,
            SECRET,
            |p| drop(p.insert("Timestamp".into(), "2024-05-01T12:19:55Z".into())),
            nothing,
            400,
            "InvalidTimeStamp.Expired",
        ),
        (
            "sts without token",
            STS_KEY_ID,
            STS_SECRET,
            |p| drop(p.remove("SecurityToken")),
            nothing,
            400,
            "MissingSecurityToken",
        ),
        (
            "sts other token",
            STS_KEY_ID,
            STS_SECRET,
            |p| drop(p.insert("SecurityToken".into(), "b3RoZXI=".into())),
            nothing,
            403,
            "InvalidSecurityToken.MismatchWithAccessKey",
        ),
        (
            "sts malformed token",
            STS_KEY_ID,
            STS_SECRET,
            |p| drop(p.insert("SecurityToken".into(), "not a token".into())),
            nothing,
            400,
            "InvalidSecurityToken.Malformed",
        ),
        (
            "unknown region",
            KEY_ID,
            SECRET,
            |p| drop(p.insert("RegionId".into(), "mars-north-1".into())),
            nothing,
            404,
            "InvalidRegionId.NotFound",
        ),
    ];
    for (name, key_id, secret, before, after, status, code) in table {
        let mut p = params(key_id, IMAGE, now);
        before(&mut p);
        let mut p = sign("GET", p, secret);
        after(&mut p);
        let reply = send(&sim, "GET", &p).await;
        assert_eq!(
            (reply.status, reply.code()),
            (status, code.to_owned()),
            "{name}: {}",
            reply.body
        );
    }
    // Unknown path or method: the gateway's unknown-API answer.
    let reply = send_raw(
        "GET",
        format!("{}/v1/images?Format=JSON", sim.endpoint()),
        None,
    )
    .await;
    assert_eq!(
        (reply.status, reply.code()),
        (404, "InvalidApi.NotFound".to_owned())
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn signature_mismatch_echoes_the_servers_string_to_sign() {
    let sim = start(SimulatorConfig::new(keys())).await;
    let p = sign("POST", params(KEY_ID, IMAGE, Timestamp::now()), SECRET);
    // Signed for POST, sent as GET.
    let reply = send(&sim, "GET", &p).await;
    assert_eq!(reply.code(), "SignatureDoesNotMatch");
    let message = reply.json()["Message"].as_str().unwrap().to_owned();
    let expected = format!(
        "Specified signature is not matched with our calculation. server string to sign is:{}",
        string_to_sign("GET", &p)
    );
    assert_eq!(message, expected);
    let record = sim.requests().pop().unwrap();
    assert_eq!(record.signature_valid, Some(false));
    sim.shutdown().await;
}

#[tokio::test]
async fn form_body_and_plus_encoded_query_are_both_decoded() {
    let sim = start(SimulatorConfig::new(keys()).with_image(IMAGE, ImageState::Copying)).await;
    let mut p = params(KEY_ID, IMAGE, Timestamp::now());
    // A value with a space, '*' and '~' exercises every encoding difference.
    p.insert("OwnerAccount".into(), "ops team*~".into());
    let p = sign("POST", p, SECRET);
    // aliyunsdkcore style: API params in a form body, the rest in the query.
    let body_keys = ["ImageId", "RegionId", "OwnerAccount"];
    let (body, query): (BTreeMap<_, _>, BTreeMap<_, _>) = p
        .clone()
        .into_iter()
        .partition(|(k, _)| body_keys.contains(&k.as_str()));
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&body)
        .finish();
    assert!(body.contains("ops+team"), "form encoding uses '+': {body}");
    let reply = send_raw(
        "POST",
        format!("{}/?{}", sim.endpoint(), query_of(&query)),
        Some(body),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);

    // tea style: everything in a Python-urlencoded query ('+' for spaces).
    sim.set_image(IMAGE, ImageState::Copying);
    let mut p = params(KEY_ID, IMAGE, Timestamp::now());
    p.insert("OwnerAccount".into(), "ops team*~".into());
    let p = sign("POST", p, SECRET);
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&p)
        .finish();
    assert!(query.contains("ops+team"));
    let reply = send_raw("POST", format!("{}/?{query}", sim.endpoint()), None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    sim.shutdown().await;
}

#[tokio::test]
async fn reused_nonce_is_refused() {
    let sim = start(SimulatorConfig::new(keys()).with_image(IMAGE, ImageState::Copied)).await;
    let p = sign("GET", params(KEY_ID, IMAGE, Timestamp::now()), SECRET);
    assert_eq!(send(&sim, "GET", &p).await.code(), "IncorrectImageStatus");
    let replay = send(&sim, "GET", &p).await;
    assert_eq!(
        (replay.status, replay.code()),
        (400, "SignatureNonceUsed".to_owned())
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn clock_skew_beyond_fifteen_minutes_is_refused() {
    let clock = ManualClock::new(vector_time());
    let sim = start(
        SimulatorConfig::new(keys())
            .with_clock(Arc::new(clock.clone()))
            .with_image(IMAGE, ImageState::Copied),
    )
    .await;
    let table = [
        (Duration::from_secs(14 * 60), "IncorrectImageStatus"),
        (Duration::from_secs(16 * 60), "InvalidTimeStamp.Expired"),
    ];
    for (skew, code) in table {
        // Server ahead of the client, then behind it.
        for server_time in [vector_time() + skew, vector_time() - skew] {
            clock.set(server_time);
            let p = sign("GET", params(KEY_ID, IMAGE, vector_time()), SECRET);
            assert_eq!(send(&sim, "GET", &p).await.code(), code, "skew {skew:?}");
        }
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn xml_is_the_default_format() {
    let sim = start(SimulatorConfig::new(keys()).with_image(IMAGE, ImageState::Copying)).await;
    for format in [None, Some("XML")] {
        let mut p = params(KEY_ID, "m-absent", Timestamp::now());
        match format {
            Some(f) => p.insert("Format".into(), f.into()),
            None => p.remove("Format"),
        };
        let reply = send(&sim, "GET", &sign("GET", p, SECRET)).await;
        assert_eq!(reply.status, 404);
        assert_eq!(reply.headers["content-type"], "text/xml;charset=utf-8");
        text::assert_contains(
            &reply.body,
            &[
                "<Error><RequestId>",
                "<Code>InvalidImageId.NotFound</Code>",
                "<HostId>ecs.aliyuncs.com</HostId>",
            ],
        );
    }
    let mut p = params(KEY_ID, IMAGE, Timestamp::now());
    p.remove("Format");
    let reply = send(&sim, "GET", &sign("GET", p, SECRET)).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.body.contains("<CancelCopyImageResponse><RequestId>"),
        "{}",
        reply.body
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn request_log_records_without_secrets() {
    let sim = start(SimulatorConfig::new(keys()).with_image(IMAGE, ImageState::Copying)).await;
    let p = sign(
        "POST",
        params(STS_KEY_ID, IMAGE, Timestamp::now()),
        STS_SECRET,
    );
    let reply = send(&sim, "POST", &p).await;
    assert_eq!(reply.status, 200);
    let records = sim.requests();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.action.as_deref(), Some("CancelCopyImage"));
    assert_eq!(r.region_id.as_deref(), Some("cn-hangzhou"));
    assert_eq!(r.image_id.as_deref(), Some(IMAGE));
    assert_eq!(r.access_key_id.as_deref(), Some(STS_KEY_ID));
    assert_eq!(
        r.signature_nonce.as_deref(),
        Some(p["SignatureNonce"].as_str())
    );
    assert_eq!(r.signature_valid, Some(true));
    assert_eq!(r.code, "Success");
    assert_eq!(r.http_status, Some(200));
    assert_eq!(r.request_id.as_deref(), reply.json()["RequestId"].as_str());
    assert_eq!(r.connection, ConnectionFate::Answered);

    let over_http = send_raw(
        "GET",
        format!("{}/_simulator/requests", sim.endpoint()),
        None,
    )
    .await;
    assert_eq!(over_http.status, 200);
    let log: Value = over_http.json();
    assert_eq!(log[0]["accessKeyId"], STS_KEY_ID);
    assert_eq!(log[0]["code"], "Success");
    for secret in [STS_SECRET, TOKEN, p["Signature"].as_str()] {
        assert!(!over_http.body.contains(secret), "log leaks {secret}");
        assert!(
            !format!("{records:?}").contains(secret),
            "Debug leaks {secret}"
        );
    }
    sim.shutdown().await;
}

/// Kills the child when the test ends, even on panic.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_command_prints_its_endpoint_and_serves() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_copyimage-canceller"))
        .args([
            "ecs-simulator",
            "--listen",
            "127.0.0.1:0",
            "--image",
            "m-cli=copying",
        ])
        .args(["--fault", "m-cli=internal-error*1"])
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", KEY_ID)
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", SECRET)
        .env_remove("ALIBABA_CLOUD_SECURITY_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let _running = Running(child);
    let endpoint = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("endpoint line");
        line.trim().to_owned()
    })
    .await
    .unwrap();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint:?}");
    assert!(!endpoint.ends_with(":0"), "{endpoint:?}");

    let url = |p: &BTreeMap<String, String>| format!("{endpoint}/?{}", query_of(p));
    let first = send_raw(
        "GET",
        url(&sign(
            "GET",
            params(KEY_ID, "m-cli", Timestamp::now()),
            SECRET,
        )),
        None,
    )
    .await;
    assert_eq!(
        (first.status, first.code()),
        (500, "InternalError".to_owned()),
        "{}",
        first.body
    );
    let second = send_raw(
        "GET",
        url(&sign(
            "GET",
            params(KEY_ID, "m-cli", Timestamp::now()),
            SECRET,
        )),
        None,
    )
    .await;
    assert_eq!(second.status, 200, "{}", second.body);

    // One log line per request on stderr, without the secret.
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    while seen
        .iter()
        .filter(|l: &&String| l.contains("ecs-simulator request"))
        .count()
        < 2
    {
        let line = lines.next().expect("stderr open").expect("stderr line");
        assert!(!line.contains(SECRET), "stderr leaks the secret: {line}");
        seen.push(line);
    }
    assert!(seen.iter().any(|l| l.contains("InternalError")), "{seen:?}");
    assert!(seen.iter().any(|l| l.contains("Success")), "{seen:?}");
}

#[test]
fn the_command_refuses_to_start_without_keys() {
    let out = Command::new(env!("CARGO_BIN_EXE_copyimage-canceller"))
        .args(["ecs-simulator", "--listen", "127.0.0.1:0"])
        .env_remove("ALIBABA_CLOUD_ACCESS_KEY_ID")
        .env_remove("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
        .output()
        .expect("binary runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ALIBABA_CLOUD_ACCESS_KEY_ID"), "{stderr}");
}

#[test]
fn help_documents_the_fault_syntax() {
    let out = Command::new(env!("CARGO_BIN_EXE_copyimage-canceller"))
        .args(["ecs-simulator", "--help"])
        .output()
        .expect("binary runs");
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "TARGET=KIND[:ARG][*COUNT]",
        "internal-error",
        "throttling[:AFTER]",
        "x-acs-retry-after",
        "latency:DURATION",
        "hang",
        "oversized",
        "not-from-copy",
        "/_simulator/faults",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}

fn fault(spec: &str) -> copyimage_stand_ins::ecs_simulator::FaultSpec {
    spec.parse().unwrap_or_else(|e| panic!("{spec}: {e}"))
}

async fn signed_url(sim: &SimulatorHandle, image: &str) -> String {
    let p = sign("GET", params(KEY_ID, image, Timestamp::now()), SECRET);
    format!("{}/?{}", sim.endpoint(), query_of(&p))
}

#[tokio::test]
async fn service_faults_answer_with_ecs_errors_then_the_image_state() {
    let sim = start(SimulatorConfig::new(keys()).with_image(IMAGE, ImageState::Copying)).await;
    sim.add_fault(fault(&format!("{IMAGE}=internal-error*2")));
    sim.add_fault(fault("*=throttling:1500ms"));
    sim.add_fault(fault(&format!("{IMAGE}=service-unavailable")));
    sim.add_fault(fault("m-other=bad-gateway*always"));
    let table = [
        (500, "InternalError"),
        (500, "InternalError"),
        (400, "Throttling.User"),
        (503, "ServiceUnavailable"),
        (200, "Success"),
        (404, "InvalidImageId.NotFound"),
    ];
    for (i, (status, code)) in table.into_iter().enumerate() {
        let reply = send_raw("GET", signed_url(&sim, IMAGE).await, None).await;
        assert_eq!(
            (reply.status, reply.code()),
            (status, code.to_owned()),
            "step {i}: {}",
            reply.body
        );
        let retry_after = reply
            .headers
            .get("x-acs-retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let want = (code == "Throttling.User").then(|| "1500".to_owned());
        assert_eq!(retry_after, want, "step {i}");
    }
    let faults: Vec<_> = sim.requests().into_iter().map(|r| r.fault).collect();
    assert_eq!(
        faults,
        [
            Some("internal-error".to_owned()),
            Some("internal-error".to_owned()),
            Some("throttling:1500ms".to_owned()),
            Some("service-unavailable".to_owned()),
            None,
            None
        ]
    );
    // The fault for another image is untouched.
    assert_eq!(sim.pending_faults().len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn bad_gateway_is_an_html_page() {
    let sim = start(SimulatorConfig::new(keys()).with_fault(fault("*=bad-gateway"))).await;
    let reply = send_raw("GET", signed_url(&sim, IMAGE).await, None).await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.headers["content-type"], "text/html");
    assert!(
        reply.body.contains("<h1>502 Bad Gateway</h1>"),
        "{}",
        reply.body
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn latency_is_added_and_recorded() {
    let mut config = SimulatorConfig::new(keys()).with_image(IMAGE, ImageState::Copying);
    config.latency = Duration::from_millis(20);
    let sim = start(config).await;
    sim.add_fault(fault(&format!("{IMAGE}=latency:150ms")));
    let reply = send_raw("GET", signed_url(&sim, IMAGE).await, None).await;
    assert_eq!(
        reply.status, 200,
        "latency delays, it does not change the answer"
    );
    let reply = send_raw("GET", signed_url(&sim, IMAGE).await, None).await;
    assert_eq!(reply.status, 404);
    let delays: Vec<u64> = sim.requests().iter().map(|r| r.delay_ms).collect();
    assert_eq!(delays, [170, 20]);
    sim.shutdown().await;
}

#[tokio::test]
async fn dropped_connection_gives_no_response() {
    let sim = start(
        SimulatorConfig::new(keys())
            .with_image(IMAGE, ImageState::Copying)
            .with_fault(fault(&format!("{IMAGE}=drop"))),
    )
    .await;
    let err = client()
        .get(signed_url(&sim, IMAGE).await)
        .send()
        .await
        .expect_err("no response");
    assert!(!err.is_timeout(), "closed, not timed out: {err:?}");
    let record = sim.requests().pop().unwrap();
    assert_eq!(record.connection, ConnectionFate::Dropped);
    assert_eq!(record.http_status, None);
    // The image was not cancelled: a retry succeeds.
    let reply = send_raw("GET", signed_url(&sim, IMAGE).await, None).await;
    assert_eq!(reply.status, 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn stalled_response_sends_headers_then_nothing() {
    let sim = start(SimulatorConfig::new(keys()).with_fault(fault("*=stall"))).await;
    let mut resp = client()
        .get(signed_url(&sim, IMAGE).await)
        .send()
        .await
        .expect("headers arrive");
    assert_eq!(resp.status(), 200);
    let first = resp
        .chunk()
        .await
        .expect("first chunk")
        .expect("some bytes");
    assert!(first.starts_with(b"{\"RequestId\":"), "{first:?}");
    // Nothing more comes; waiting longer on a slow machine only makes this truer.
    let more = tokio::time::timeout(Duration::from_millis(500), resp.chunk()).await;
    assert!(more.is_err(), "the body must stall: {more:?}");
    assert_eq!(
        sim.requests().pop().unwrap().connection,
        ConnectionFate::Stalled
    );
    // Shutdown ends the stalled body with an error, not a clean end.
    sim.shutdown().await;
    let end = tokio::time::timeout(CLIENT_TIMEOUT, resp.chunk())
        .await
        .expect("ends on shutdown");
    assert!(end.is_err(), "{end:?}");
}

#[tokio::test]
async fn held_request_never_answers_until_shutdown() {
    let sim = start(SimulatorConfig::new(keys()).with_fault(fault("*=hang*2"))).await;
    let short = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let err = short
        .get(signed_url(&sim, IMAGE).await)
        .send()
        .await
        .expect_err("no answer");
    assert!(err.is_timeout(), "{err:?}");
    let record = sim.requests().pop().unwrap();
    assert_eq!(record.connection, ConnectionFate::Held);
    assert_eq!(record.request_id, None);

    // A held request is released (closed) by shutdown.
    let pending = tokio::spawn(client().get(signed_url(&sim, IMAGE).await).send());
    tokio::time::timeout(CLIENT_TIMEOUT, async {
        while sim.requests().len() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the second request arrives");
    sim.shutdown().await;
    let outcome = tokio::time::timeout(CLIENT_TIMEOUT, pending)
        .await
        .expect("released")
        .unwrap();
    let err = outcome.expect_err("closed without answer");
    assert!(!err.is_timeout(), "{err:?}");
}

#[tokio::test]
async fn oversized_body_is_sent_in_full() {
    let sim = start(SimulatorConfig::new(keys()).with_fault(fault("*=oversized:300k"))).await;
    let reply = send_raw("GET", signed_url(&sim, IMAGE).await, None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), 300 * 1024);
    assert!(reply.json()["RequestId"].is_string());
    sim.shutdown().await;
}

#[tokio::test]
async fn control_routes_change_images_and_faults_at_run_time() {
    let sim = start(SimulatorConfig::new(keys())).await;
    let http = client();
    let ctl = |path: &str| format!("{}/_simulator/{path}", sim.endpoint());

    let put = http
        .put(ctl("images/m-live"))
        .body(r#"{"state":"copying"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    assert_eq!(sim.image("m-live"), Some(ImageState::Copying));
    let bad = http
        .put(ctl("images/m-live"))
        .body(r#"{"state":"gone"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("not-from-copy"));
    let images: Value = http
        .get(ctl("images"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    assert_eq!(images["m-live"], "copying");

    let posted = http
        .post(ctl("faults"))
        .body(r#"{"fault":"m-live=internal-error*1"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 201);
    let bad = http
        .post(ctl("faults"))
        .body(r#"{"fault":"m-live=explode"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("TARGET=KIND"));
    let faults: Value = http
        .get(ctl("faults"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    assert_eq!(faults[0]["target"], "m-live");
    assert_eq!(faults[0]["kind"], "internal-error");
    assert_eq!(faults[0]["remaining"], 1);

    assert_eq!(
        send_raw("GET", signed_url(&sim, "m-live").await, None)
            .await
            .status,
        500
    );
    assert_eq!(
        send_raw("GET", signed_url(&sim, "m-live").await, None)
            .await
            .status,
        200
    );

    http.post(ctl("faults"))
        .body(r#"{"fault":"*=drop*always"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        http.delete(ctl("faults")).send().await.unwrap().status(),
        200
    );
    assert!(sim.pending_faults().is_empty());

    sim.set_image("m-gone", ImageState::Copied);
    assert_eq!(
        http.delete(ctl("images/m-gone"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(sim.image("m-gone"), None);
    assert_eq!(
        http.delete(ctl("images/m-gone"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    assert_eq!(
        http.delete(ctl("requests")).send().await.unwrap().status(),
        200
    );
    assert!(sim.requests().is_empty());
    assert_eq!(http.get(ctl("nothing")).send().await.unwrap().status(), 404);
    assert_eq!(
        http.patch(ctl("faults")).send().await.unwrap().status(),
        405
    );
    sim.shutdown().await;
}
