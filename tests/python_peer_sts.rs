//! Alibaba Cloud's official generated STS client (`alibabacloud-sts20150401`,
//! RPC V1 signature) as a real client of the STS simulator's `AssumeRole`: the
//! simulator's own signature check agrees with the SDK's, its trust table and
//! ExternalId decide, the session policy is recorded, and the key it mints is
//! one the ECS simulator accepts (within the policy) and refuses outside it
//! with `Forbidden.RAM`.
//!
//! Needs `.venv` from `scripts/install-python-sdk.sh`; without it these FAIL
//! (never skip) and say so.

#[path = "peer/python.rs"]
mod peer;

use std::process::Command;
use std::sync::Arc;

use copyimage_canceller::ecs::CancelOutcome;
use copyimage_canceller::ecs::client::{EcsClient, EcsClientConfig};
use copyimage_stand_ins::AccessKey;
use copyimage_stand_ins::ecs_simulator::{EcsSimulator, ImageState, SimulatorConfig};
use copyimage_stand_ins::sts_simulator::{
    KeySink, StsSimulator, StsSimulatorConfig, StsSimulatorHandle, Trust,
};
use peer::{python, root};
use serde_json::Value;

const CALLER_ID: &str = "LTAI5tStsPeerCaller1";
const CALLER_SECRET: &str = "sts-peer-caller-secret/+&=";
const CALLER: &str = "acs:ram::1234567890123456:user/canceller-operator";
const ROLE: &str = "acs:ram::1234567890123456:role/team-images";
const GUARDED: &str = "acs:ram::1234567890123456:role/team-guarded";
const THEIRS: &str = "acs:ram::1234567890123456:role/someone-elses";
const ONLY_CANCEL: &str = r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":["ecs:CancelCopyImage"],"Resource":["*"]}]}"#;
const ONLY_DESCRIBE: &str =
    r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"ecs:Describe*","Resource":"*"}]}"#;

fn caller() -> AccessKey {
    AccessKey::new(CALLER_ID, CALLER_SECRET, None)
}

/// Runs tests/peer/tea_sts_client.py signed with `secret`; its JSON line.
async fn assume_role(
    sts: &StsSimulatorHandle,
    secret: &str,
    role: &str,
    external_id: Option<&str>,
    policy: &str,
) -> Value {
    let mut cmd = Command::new(python());
    cmd.arg(root().join("tests/peer/tea_sts_client.py"))
        .args([
            "--endpoint",
            &sts.endpoint(),
            "--role-arn",
            role,
            "--session-name",
            "cic.images",
            "--policy",
            policy,
        ])
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", CALLER_ID)
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", secret)
        .env_remove("ALIBABA_CLOUD_SECURITY_TOKEN")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost");
    if let Some(id) = external_id {
        cmd.args(["--external-id", id]);
    }
    let out = peer::output(cmd).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "peer failed: {stdout}\n{stderr}");
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("no JSON result ({e}): {stdout}\n{stderr}"))
}

fn code(result: &Value) -> &str {
    if result["ok"] == true {
        "Success"
    } else {
        result["code"].as_str().unwrap_or("<no code>")
    }
}

#[tokio::test]
async fn the_official_sts_client_assumes_a_role_at_the_simulator() {
    let ecs = Arc::new(
        EcsSimulator::start(
            SimulatorConfig::new([])
                .with_image("m-peersts00001", ImageState::Copying)
                .with_image("m-peersts00002", ImageState::Copying),
        )
        .await
        .unwrap(),
    );
    let trust = |principal: &str, role: &str, external_id: Option<&str>| Trust {
        principal: principal.into(),
        role_arn: role.into(),
        external_id: external_id.map(Into::into),
    };
    let sts = StsSimulator::start(StsSimulatorConfig {
        sink: Some(KeySink::ecs(ecs.clone())),
        callers: vec![(caller(), CALLER.into())],
        trust: vec![
            trust(CALLER, ROLE, None),
            trust(CALLER, GUARDED, Some("ext-42")),
            trust("acs:ram::1234567890123456:user/other", THEIRS, None),
        ],
        ..StsSimulatorConfig::default()
    })
    .await
    .unwrap();

    // Refusals, as STS answers them, read by the SDK.
    let rows = [
        (CALLER_SECRET, THEIRS, None, "NoPermission", 403),
        (CALLER_SECRET, GUARDED, None, "NoPermission", 403),
        (CALLER_SECRET, GUARDED, Some("ext-41"), "NoPermission", 403),
        (
            CALLER_SECRET,
            "acs:ram::1234567890123456:role/none",
            None,
            "EntityNotExist.Role",
            404,
        ),
        ("not-the-secret", ROLE, None, "SignatureDoesNotMatch", 400),
    ];
    for (secret, role, external_id, want, status) in rows {
        let result = assume_role(&sts, secret, role, external_id, ONLY_CANCEL).await;
        assert_eq!(code(&result), want, "{role} {external_id:?}: {result}");
        assert_eq!(result["httpStatus"], status, "{result}");
    }
    assert!(sts.sessions().is_empty(), "nothing minted for a refusal");

    // Trusted, with the right ExternalId: the SDK signed what the simulator checks.
    let ok = assume_role(&sts, CALLER_SECRET, GUARDED, Some("ext-42"), ONLY_CANCEL).await;
    assert_eq!(code(&ok), "Success", "{ok}");
    assert_eq!(ok["hasSecret"], true);
    assert_eq!(ok["hasToken"], true);
    assert_eq!(
        ok["assumedRoleArn"],
        "acs:ram::1234567890123456:assumed-role/team-guarded/cic.images"
    );
    let key_id = ok["accessKeyId"].as_str().unwrap();
    let session = sts.session_of(key_id).expect("the session is recorded");
    assert_eq!(session.role_arn, GUARDED);
    assert_eq!(session.session_name, "cic.images");
    assert_eq!(session.principal, CALLER);
    assert_eq!(session.policy.as_deref(), Some(ONLY_CANCEL));
    let call = sts.calls().pop().unwrap();
    assert_eq!(call.caller_access_key_id.as_deref(), Some(CALLER_ID));
    assert_eq!(call.external_id.as_deref(), Some("ext-42"));

    // The minted key works at ECS within its policy...
    let minted = sts.minted().pop().unwrap();
    let operator_side = copyimage_canceller::credentials::AccessKey::new(
        minted.id.clone(),
        minted.secret(),
        minted.security_token().map(str::to_owned),
    );
    let client = EcsClient::new(EcsClientConfig {
        endpoint: ecs.endpoint(),
        ..EcsClientConfig::default()
    })
    .unwrap();
    let outcome = client
        .cancel_copy_image(&operator_side, "cn-hangzhou", "m-peersts00001")
        .await;
    assert!(
        matches!(outcome, CancelOutcome::Cancelled { .. }),
        "{outcome:?}"
    );

    // ...and a session whose policy does not allow the cancel gets Forbidden.RAM.
    let narrow = assume_role(&sts, CALLER_SECRET, ROLE, None, ONLY_DESCRIBE).await;
    assert_eq!(code(&narrow), "Success", "{narrow}");
    let minted = sts.minted().pop().unwrap();
    let narrow_key = copyimage_canceller::credentials::AccessKey::new(
        minted.id.clone(),
        minted.secret(),
        minted.security_token().map(str::to_owned),
    );
    let outcome = client
        .cancel_copy_image(&narrow_key, "cn-hangzhou", "m-peersts00002")
        .await;
    match outcome {
        CancelOutcome::Service(e) => {
            assert_eq!(e.code, "Forbidden.RAM");
            assert_eq!(e.http_status, 403);
        }
        other => panic!("expected Forbidden.RAM: {other:?}"),
    }
    assert_eq!(ecs.image("m-peersts00002"), Some(ImageState::Copying));
}
