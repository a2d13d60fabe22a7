//! `copyimage-canceller cancel`: one signed CancelCopyImage from the shell,
//! retried with the controller's policy, the outcome on stdout/stderr and in
//! the exit code.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::credentials::AccessKey;
use crate::ecs::client::{
    DEFAULT_ENDPOINT_TEMPLATE, DEFAULT_MAX_BODY_BYTES, EcsClient, EcsClientConfig,
    SignatureVersion, is_valid_region_id,
};
use crate::ecs::{CancelOutcome, RetryClass};
use crate::retry::{Backoff, NextStep, RetryPolicy, RetryState};

/// Exit codes of `cancel` (documented in its `--help`).
pub mod exit_codes {
    /// The copy was cancelled; the response JSON is on stdout.
    pub const CANCELLED: u8 = 0;
    /// ECS refused the cancellation with a terminal error (sent once, not retried).
    pub const TERMINAL_ERROR: u8 = 1;
    /// Bad command line or configuration (clap uses 2 for usage errors too).
    pub const USAGE: u8 = 2;
    /// Transient failures went on past `--backoff-limit` retries.
    pub const RETRIES_EXHAUSTED: u8 = 3;
    /// Credentials are missing from the environment; nothing was sent.
    pub const CREDENTIALS_MISSING: u8 = 4;
    /// `--deadline` passed before an answer was final.
    pub const DEADLINE_EXCEEDED: u8 = 5;
    /// The final answer says the image is gone or no longer copying, after an
    /// earlier attempt got no usable answer: that attempt may well have
    /// cancelled the copy.
    pub const PREVIOUS_ATTEMPT_MAY_HAVE_SUCCEEDED: u8 = 6;
}

const AFTER_HELP: &str = "\
Credentials come from ALIBABA_CLOUD_ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET and the
optional ALIBABA_CLOUD_SECURITY_TOKEN (STS). Every parameter, the token included, is sent in a
signed form body over HTTPS, never in the URL.

Retries: InternalError, ServiceUnavailable, HTTP 5xx and transport failures (connect, timeout,
reset, unusable body) are retried with exponential backoff and full jitter, and count against
--backoff-limit. Throttling* codes are retried without counting, bounded by --deadline. Every other
error code is final after one attempt. Each retry is logged on stderr.

Exit codes:
  0  cancelled: the response JSON ({\"RequestId\":\"...\"}) is on stdout
  1  ECS refused the cancellation (terminal error code; stderr names code, message, request ID)
  2  usage or configuration error (bad flag, endpoint or duration)
  3  retries exhausted: transient failures outlasted --backoff-limit retries; stderr names the last error
  4  credentials missing from the environment; nothing was sent
  5  --deadline passed before a final answer
  6  the image is gone or no longer copying (InvalidImageId.NotFound, IncorrectImageStatus) after
     an attempt that got no usable answer: that attempt may well have cancelled the copy";

/// Arguments of `cancel`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = AFTER_HELP, args_override_self = true)]
pub struct CancelArgs {
    /// Region of the DESTINATION image (the copy), e.g. cn-hangzhou.
    #[arg(long, value_parser = parse_region_id)]
    pub region_id: String,
    /// ID of the image being copied (the new image in the destination region), e.g. m-bp1caf3yicx5jlfl.
    #[arg(long)]
    pub image_id: String,
    /// ECS endpoint; `{regionId}` is replaced by --region-id.
    #[arg(long, default_value = DEFAULT_ENDPOINT_TEMPLATE)]
    pub endpoint: String,
    /// Accept an http:// endpoint on a non-loopback host (requests then cross the network unencrypted).
    #[arg(long)]
    pub allow_insecure_endpoint: bool,
    /// How requests are signed: v1 (HMAC-SHA1 RPC signature) or v3 (ACS3-HMAC-SHA256, signed headers).
    #[arg(long, value_enum, default_value_t = SignatureVersion::V1)]
    pub signature_version: SignatureVersion,
    /// First backoff ceiling; each retry doubles it.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub retry_base_delay: Duration,
    /// Largest backoff ceiling (and largest honoured x-acs-retry-after).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub retry_max_delay: Duration,
    /// Counted retries allowed after the first attempt (0..=20).
    #[arg(long, default_value_t = crate::retry::DEFAULT_BACKOFF_LIMIT,
          value_parser = clap::value_parser!(u32).range(0..=20))]
    pub backoff_limit: u32,
    /// Limit for one attempt, response body included.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Limit for establishing a connection (TCP and TLS).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Give up (exit 5) when a retry would start later than this after the start; bounds throttling.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub deadline: Option<Duration>,
}

fn parse_region_id(value: &str) -> Result<String, String> {
    if is_valid_region_id(value) {
        Ok(value.to_owned())
    } else {
        Err("expected a region ID such as cn-hangzhou or ap-southeast-1 (lower-case letters, digits and '-')".to_owned())
    }
}

/// Runs `cancel` with credentials from the environment, writing to the
/// process's stdout and stderr.
pub async fn run(args: CancelArgs) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr();
    let code = match AccessKey::from_env() {
        Ok(key) => run_with_key(&args, &key, &mut stdout, &mut stderr).await,
        Err(err) => {
            let _ = writeln!(stderr, "error: {err}; nothing was sent");
            exit_codes::CREDENTIALS_MISSING
        }
    };
    ExitCode::from(code)
}

/// Runs `cancel` with `key`; returns the exit code (see [`exit_codes`]).
pub async fn run_with_key(
    args: &CancelArgs,
    key: &AccessKey,
    stdout: &mut impl Write,
    stderr: &mut impl Write,
) -> u8 {
    let policy = match Backoff::new(args.retry_base_delay, args.retry_max_delay) {
        Ok(backoff) => RetryPolicy {
            backoff,
            backoff_limit: args.backoff_limit,
        },
        Err(err) => {
            let _ = writeln!(stderr, "error: {err}");
            return exit_codes::USAGE;
        }
    };
    let config = EcsClientConfig {
        endpoint: args.endpoint.clone(),
        allow_insecure_endpoint: args.allow_insecure_endpoint,
        connect_timeout: args.connect_timeout,
        request_timeout: args.timeout,
        max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        signature_version: args.signature_version,
    };
    let client = match EcsClient::new(config) {
        Ok(client) => client,
        Err(err) => {
            let _ = writeln!(stderr, "error: {err}");
            return exit_codes::USAGE;
        }
    };

    let start = tokio::time::Instant::now();
    let mut rng = StdRng::from_os_rng();
    let mut state = RetryState::default();
    let mut attempt = 1u32;
    // Attempts that got no usable answer: the service may have acted on them.
    let mut unanswered: Vec<u32> = Vec::new();
    loop {
        let outcome = client
            .cancel_copy_image(key, &args.region_id, &args.image_id)
            .await;
        let class = outcome.retry_class();
        let time_left = args.deadline.map(|d| d.saturating_sub(start.elapsed()));
        let step = policy.next_step(class, state, outcome.retry_after(), time_left, &mut rng);
        let last = describe(&outcome);
        // The arms that end the command give the exit code and the error line.
        let (code, error) = match step {
            NextStep::Done if class == RetryClass::Success => {
                let request_id = outcome.request_id().unwrap_or_default();
                let _ = writeln!(stdout, "{}", serde_json::json!({ "RequestId": request_id }));
                return exit_codes::CANCELLED;
            }
            NextStep::Done if !unanswered.is_empty() && outcome.may_follow_a_success() => (
                exit_codes::PREVIOUS_ATTEMPT_MAY_HAVE_SUCCEEDED,
                format!(
                    "CancelCopyImage answered {last} on attempt {attempt}, but attempt(s) {} got no usable answer and may well have cancelled the copy already: check the image in {}",
                    unanswered
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    args.region_id,
                ),
            ),
            NextStep::Done => (
                exit_codes::TERMINAL_ERROR,
                format!("CancelCopyImage failed on attempt {attempt}: {last}"),
            ),
            NextStep::RetriesExhausted => (
                exit_codes::RETRIES_EXHAUSTED,
                format!(
                    "CancelCopyImage failed: retries exhausted after {attempt} attempts (--backoff-limit {}); last error: {last}",
                    args.backoff_limit
                ),
            ),
            NextStep::DeadlineExceeded => (
                exit_codes::DEADLINE_EXCEEDED,
                format!(
                    "CancelCopyImage failed: --deadline {} would pass before the next retry (after {attempt} attempts); last error: {last}",
                    humantime::format_duration(args.deadline.unwrap_or_default())
                ),
            ),
            NextStep::Retry {
                delay,
                counted,
                state: next,
            } => {
                let budget = if counted {
                    format!("retry {} of {}", next.counted, policy.backoff_limit)
                } else {
                    "throttled: not counted against --backoff-limit".to_owned()
                };
                let _ = writeln!(
                    stderr,
                    "attempt {attempt} failed: {last}; retrying in {} ({budget})",
                    humantime::format_duration(Duration::from_millis(delay.as_millis() as u64)),
                );
                if matches!(outcome, CancelOutcome::Transport(_)) {
                    unanswered.push(attempt);
                }
                tokio::time::sleep(delay).await;
                state = next;
                attempt += 1;
                continue;
            }
        };
        let _ = writeln!(stderr, "error: {error}");
        return code;
    }
}

/// One line naming what came back: code, HTTP status, message, request ID.
/// Everything in it was redacted by the client already.
pub fn describe(outcome: &CancelOutcome) -> String {
    match outcome {
        CancelOutcome::Cancelled { request_id } => format!("cancelled (request ID {request_id})"),
        CancelOutcome::Service(err) => {
            let mut line = format!("{} (HTTP {})", err.code, err.http_status);
            if !err.message.is_empty() {
                line.push_str(": ");
                line.push_str(&err.message);
            }
            match &err.request_id {
                Some(id) => line.push_str(&format!(" [request ID {id}]")),
                None => line.push_str(" [no request ID]"),
            }
            line
        }
        CancelOutcome::Transport(err) => format!("TransportError: {}", err.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecs::{ServiceError, TransportError};
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CancelArgs,
    }

    fn parse(argv: &[&str]) -> Result<CancelArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("cancel").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn defaults_match_the_contract() {
        let args = parse(&["--region-id", "cn-hangzhou", "--image-id", "m-bp1"]).unwrap();
        assert_eq!(args.endpoint, "https://ecs.{regionId}.aliyuncs.com");
        assert_eq!(args.retry_base_delay, Duration::from_secs(1));
        assert_eq!(args.retry_max_delay, Duration::from_secs(300));
        assert_eq!(args.backoff_limit, 6);
        assert_eq!(args.timeout, Duration::from_secs(30));
        assert_eq!(args.connect_timeout, Duration::from_secs(5));
        assert_eq!(args.deadline, None);
        assert!(!args.allow_insecure_endpoint);
    }

    #[test]
    fn durations_are_humantime() {
        let args = parse(&[
            "--region-id=cn-hangzhou",
            "--image-id=m-1",
            "--retry-base-delay=250ms",
            "--retry-max-delay=5m",
            "--timeout=2s",
            "--deadline=1h",
            "--backoff-limit=0",
        ])
        .unwrap();
        assert_eq!(args.retry_base_delay, Duration::from_millis(250));
        assert_eq!(args.retry_max_delay, Duration::from_secs(300));
        assert_eq!(args.timeout, Duration::from_secs(2));
        assert_eq!(args.deadline, Some(Duration::from_secs(3600)));
        assert_eq!(args.backoff_limit, 0);
    }

    #[test]
    fn bad_arguments_are_usage_errors_naming_the_flag() {
        let rows: [(&[&str], &str); 4] = [
            (
                &["--region-id", "cn-hangzhou.evil.com", "--image-id", "m-1"],
                "--region-id",
            ),
            (
                &[
                    "--region-id",
                    "cn-hangzhou",
                    "--image-id",
                    "m-1",
                    "--backoff-limit",
                    "21",
                ],
                "--backoff-limit",
            ),
            (
                &[
                    "--region-id",
                    "cn-hangzhou",
                    "--image-id",
                    "m-1",
                    "--timeout",
                    "soon",
                ],
                "--timeout",
            ),
            (&["--region-id", "cn-hangzhou"], "--image-id"),
        ];
        for (argv, flag) in rows {
            let err = parse(argv)
                .err()
                .unwrap_or_else(|| panic!("{argv:?} parsed"));
            assert_eq!(err.exit_code(), i32::from(exit_codes::USAGE), "{argv:?}");
            assert!(err.to_string().contains(flag), "{argv:?}: {err}");
        }
    }

    #[tokio::test]
    async fn configuration_errors_exit_2_before_sending() {
        let key = AccessKey::new("id", "secret", None);
        let rows: [(&[&str], &str); 2] = [
            (
                &["--endpoint", "http://ecs.example.com"],
                "--allow-insecure-endpoint",
            ),
            (
                &["--retry-base-delay", "10s", "--retry-max-delay", "1s"],
                "--retry-max-delay",
            ),
        ];
        for (extra, needle) in rows {
            let mut argv = vec!["--region-id", "cn-hangzhou", "--image-id", "m-1"];
            argv.extend_from_slice(extra);
            let args = parse(&argv).unwrap();
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let code = run_with_key(&args, &key, &mut out, &mut err).await;
            let err = String::from_utf8(err).unwrap();
            assert_eq!(code, exit_codes::USAGE, "{extra:?}: {err}");
            assert!(err.contains(needle), "{extra:?}: {err}");
            assert!(out.is_empty());
        }
    }

    #[test]
    fn help_documents_every_exit_code() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        for code in [
            exit_codes::CANCELLED,
            exit_codes::TERMINAL_ERROR,
            exit_codes::USAGE,
            exit_codes::RETRIES_EXHAUSTED,
            exit_codes::CREDENTIALS_MISSING,
            exit_codes::DEADLINE_EXCEEDED,
            exit_codes::PREVIOUS_ATTEMPT_MAY_HAVE_SUCCEEDED,
        ] {
            assert!(
                help.contains(&format!("\n  {code}  ")),
                "exit code {code} missing:\n{help}"
            );
        }
    }

    #[test]
    fn describe_names_code_status_message_and_request_id() {
        let outcome = CancelOutcome::Service(ServiceError {
            http_status: 400,
            code: "IncorrectImageStatus".into(),
            message: "The image is copied finished.".into(),
            request_id: Some("R-1".into()),
            host_id: None,
            recommend: None,
            retry_after: None,
        });
        assert_eq!(
            describe(&outcome),
            "IncorrectImageStatus (HTTP 400): The image is copied finished. [request ID R-1]"
        );
        let outcome = CancelOutcome::Transport(TransportError {
            kind: crate::ecs::TransportKind::Connect,
            message: "could not connect to 127.0.0.1".into(),
            http_status: None,
        });
        assert_eq!(
            describe(&outcome),
            "TransportError: could not connect to 127.0.0.1"
        );
    }
}
