//! Alibaba Cloud's official Python SDKs as real clients of the ECS simulator:
//! the generated ECS client (tea-openapi, `signature_algorithm='v2'`, POST with
//! everything in the query string; and with its default V3 signature,
//! ACS3-HMAC-SHA256) and the classic `aliyunsdkcore`
//! (`AcsClient` + `CommonRequest`, GET and POST with a form body), each with a
//! permanent key and an STS key. If the simulator's independent signature
//! check disagreed with the SDKs by one byte, these tests would fail.
//!
//! Needs `.venv` from `scripts/install-python-sdk.sh`; without it they FAIL
//! (never skip) and say so.

#[path = "peer/python.rs"]
mod peer;

use std::path::PathBuf;
use std::process::Command;

use copyimage_stand_ins::AccessKey;
use copyimage_stand_ins::ecs_simulator::{
    EcsSimulator, ImageState, SimulatorConfig, SimulatorHandle,
};
use peer::{python, root};
use serde_json::Value;

const KEY_ID: &str = "LTAI5tPeerTest0001";
const SECRET: &str = "peer-test-secret/+&=";
const STS_KEY_ID: &str = "STS.NUgYrLnoPeerTest01";
const STS_SECRET: &str = "StsPeerSecret000000000000000001";
const TOKEN: &str = "CAIS8AF1q6Ft5B2yfSjIr5bkKtL+ha1C1aiMOVPciFkbXdZ5gfGd1zz2IHhMe3VrBOkXs/8/mW9T6/wdlqF+Tp5OSEPCbNF8tCe5NVqpZIjr5ZlsA4rmzYCNH0T3OYWe1i+s=";
const REGION: &str = "cn-hangzhou";

#[derive(Clone, Copy, Debug)]
enum Peer {
    /// alibabacloud-ecs20140526 `Client`, RPC V1 signature.
    TeaEcsClient,
    /// alibabacloud-ecs20140526 `Client` with its default V3 signature
    /// (ACS3-HMAC-SHA256).
    TeaEcsClientV3,
    /// aliyunsdkcore `AcsClient` + `CommonRequest`, this HTTP method.
    CoreAcsClient(&'static str),
}

#[derive(Clone, Copy, Debug)]
enum Key {
    Permanent,
    Sts,
}

impl Key {
    fn access_key(self) -> AccessKey {
        match self {
            Key::Permanent => AccessKey::new(KEY_ID, SECRET, None),
            Key::Sts => AccessKey::new(STS_KEY_ID, STS_SECRET, Some(TOKEN.to_owned())),
        }
    }
}

/// Runs one peer script and returns the JSON line it printed.
async fn run_peer(
    python: PathBuf,
    peer: Peer,
    key: &AccessKey,
    endpoint: String,
    image: &str,
    secret: Option<&str>,
) -> Value {
    let mut cmd = Command::new(python);
    match peer {
        Peer::TeaEcsClient => {
            cmd.arg(root().join("tests/peer/tea_ecs_client.py"))
                .args(["--signature", "v1"]);
        }
        Peer::TeaEcsClientV3 => {
            cmd.arg(root().join("tests/peer/tea_ecs_client.py"))
                .args(["--signature", "v3"]);
        }
        Peer::CoreAcsClient(method) => {
            cmd.arg(root().join("tests/peer/core_acs_client.py"))
                .args(["--method", method]);
        }
    }
    cmd.args([
        "--endpoint",
        &endpoint,
        "--region-id",
        REGION,
        "--image-id",
        image,
    ])
    .env("ALIBABA_CLOUD_ACCESS_KEY_ID", &key.id)
    .env(
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
        secret.unwrap_or(key.secret()),
    )
    .env_remove("ALIBABA_CLOUD_SECURITY_TOKEN")
    // NB: the SDKs honour proxy variables; the simulator is on loopback.
    .env("NO_PROXY", "127.0.0.1,localhost")
    .env("no_proxy", "127.0.0.1,localhost");
    if let Some(token) = key.security_token() {
        cmd.env("ALIBABA_CLOUD_SECURITY_TOKEN", token);
    }
    let out = peer::output(cmd).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{peer:?} failed: {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("{peer:?} printed no JSON result ({e}): {stdout}\nstderr: {stderr}")
    })
}

async fn simulator() -> SimulatorHandle {
    let config = SimulatorConfig::new([Key::Permanent.access_key(), Key::Sts.access_key()]);
    EcsSimulator::start(config).await.expect("simulator starts")
}

fn code(result: &Value) -> &str {
    if result["ok"] == true {
        "Success"
    } else {
        result["code"].as_str().unwrap_or("<no code>")
    }
}

/// Cancel, cancel again, wrong secret; with both keys.
async fn cancel_scenario(peer: Peer) {
    let python = python();
    let sim = simulator().await;
    for key in [Key::Permanent, Key::Sts] {
        let access_key = key.access_key();
        let image = format!("m-peer{}", sim.requests().len());
        sim.set_image(&image, ImageState::Copying);
        // `peer` cancelling `image` with `access_key` (signed with `secret` when given).
        let cancel = |secret: Option<&'static str>| {
            run_peer(
                python.clone(),
                peer,
                &access_key,
                sim.endpoint(),
                &image,
                secret,
            )
        };

        let first = cancel(None).await;
        assert_eq!(code(&first), "Success", "{peer:?} {key:?}: {first}");
        let request_id = first["requestId"].as_str().expect("requestId");
        assert_eq!(
            sim.image(&image),
            None,
            "{peer:?} {key:?}: the copy is cancelled"
        );
        let record = sim.requests().pop().unwrap();
        assert_eq!(record.request_id.as_deref(), Some(request_id));
        assert_eq!(
            record.access_key_id.as_deref(),
            Some(access_key.id.as_str())
        );
        assert_eq!(record.signature_valid, Some(true));
        // The signature version the peer was asked for (one script serves both tea variants).
        let method = if matches!(peer, Peer::TeaEcsClientV3) {
            "ACS3-HMAC-SHA256"
        } else {
            "HMAC-SHA1"
        };
        assert_eq!(
            record.signature_method.as_deref(),
            Some(method),
            "{peer:?} {key:?}"
        );

        let second = cancel(None).await;
        assert_eq!(
            code(&second),
            "InvalidImageId.NotFound",
            "{peer:?} {key:?}: {second}"
        );
        assert_eq!(second["httpStatus"], 404, "{second}");

        sim.set_image(&image, ImageState::Copying);
        let wrong = cancel(Some("not-the-secret")).await;
        assert_eq!(
            code(&wrong),
            "SignatureDoesNotMatch",
            "{peer:?} {key:?}: {wrong}"
        );
        assert_eq!(wrong["httpStatus"], 400, "{wrong}");
        assert_eq!(
            sim.image(&image),
            Some(ImageState::Copying),
            "a refused request changes nothing"
        );
        if let Some(sdk_string) = wrong["sdkStringToSign"].as_str() {
            // The server's string to sign is byte for byte the one the SDK signed.
            let message = wrong["message"].as_str().unwrap();
            let server_string = message
                .split_once("server string to sign is:")
                .expect("echo")
                .1;
            assert_eq!(server_string, sdk_string, "{peer:?} {key:?}");
        }
        if matches!(peer, Peer::TeaEcsClientV3) {
            // The V3 check answered, not the V1 one (tea prefixes `code: 400, `).
            let message = wrong["message"].as_str().unwrap();
            assert!(
                message.contains("Specified signature does not match our calculation. server StringToSign is [ACS3-HMAC-SHA256\n")
                    && message.contains("server CanonicalRequest is [POST\n/\n"),
                "{peer:?} {key:?}: {message}"
            );
        }
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn generated_ecs_client_with_rpc_v1_signature() {
    cancel_scenario(Peer::TeaEcsClient).await;
}

#[tokio::test]
async fn generated_ecs_client_with_default_v3_signature() {
    cancel_scenario(Peer::TeaEcsClientV3).await;
}

#[tokio::test]
async fn classic_core_client_get() {
    cancel_scenario(Peer::CoreAcsClient("GET")).await;
}

#[tokio::test]
async fn classic_core_client_post_form_body() {
    cancel_scenario(Peer::CoreAcsClient("POST")).await;
}

#[tokio::test]
async fn sdks_read_the_simulators_error_answers() {
    let python = python();
    let sim = simulator().await;
    let key = Key::Sts.access_key();
    sim.set_image("m-copied", ImageState::Copied);
    sim.set_image("m-native", ImageState::NotFromCopy);
    sim.set_image("m-throttled", ImageState::Copying);
    sim.add_fault("m-throttled=throttling:2s".parse().unwrap());
    sim.add_fault("m-throttled=internal-error".parse().unwrap());
    let table = [
        (Peer::TeaEcsClient, "m-copied", "IncorrectImageStatus", 400),
        (
            Peer::CoreAcsClient("GET"),
            "m-native",
            "ImageCreatedNotFromCopy",
            400,
        ),
        (Peer::TeaEcsClient, "m-throttled", "Throttling.User", 400),
        (
            Peer::CoreAcsClient("POST"),
            "m-throttled",
            "InternalError",
            500,
        ),
        (Peer::TeaEcsClient, "m-throttled", "Success", 200),
    ];
    for (peer, image, want, status) in table {
        let result = run_peer(python.clone(), peer, &key, sim.endpoint(), image, None).await;
        assert_eq!(code(&result), want, "{peer:?} {image}: {result}");
        if want != "Success" {
            assert_eq!(result["httpStatus"], status, "{result}");
        }
        if want == "Throttling.User" {
            // tea reads x-acs-retry-after (milliseconds) into ThrottlingException.retry_after.
            assert_eq!(result["retryAfterMs"], 2000, "{result}");
        }
    }
    sim.shutdown().await;
}
