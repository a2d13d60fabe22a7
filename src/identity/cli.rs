//! Command-line flags for operator identity (for `run` to flatten), and the
//! `credentials` subcommand: which source the chain selects, fetched once,
//! printed without secrets, so an operator can check RRSA or the instance
//! role from inside the pod (`kubectl exec ... copyimage-canceller credentials`).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use super::imds::DEFAULT_METADATA_ENDPOINT;
use super::{ChainOptions, CredentialStatus, OperatorCredentials};

/// Exit codes of `credentials`.
pub mod exit_codes {
    /// Credentials were obtained.
    pub const OBTAINED: u8 = 0;
    /// The selected source failed (STS error, metadata service down, ...).
    pub const SOURCE_FAILED: u8 = 1;
    /// The configuration is refused (a partial RRSA triple, a bad value).
    pub const CONFIGURATION: u8 = 2;
    /// No source is configured.
    pub const NOT_CONFIGURED: u8 = 4;
}

const AFTER_HELP: &str = "\
Sources, first configured wins (the official SDKs' order):
  1. ALIBABA_CLOUD_ACCESS_KEY_ID + ALIBABA_CLOUD_ACCESS_KEY_SECRET (+ ALIBABA_CLOUD_SECURITY_TOKEN)
  2. RRSA: ALIBABA_CLOUD_ROLE_ARN + ALIBABA_CLOUD_OIDC_PROVIDER_ARN + ALIBABA_CLOUD_OIDC_TOKEN_FILE
     (ALIBABA_CLOUD_ROLE_SESSION_NAME, ALIBABA_CLOUD_STS_REGION, ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED,
     ALIBABA_CLOUD_STS_ENDPOINT optional)
  3. ECS instance RAM role: ALIBABA_CLOUD_ECS_METADATA=<role> or --ecs-ram-role
     (ALIBABA_CLOUD_IMDSV1_DISABLED=true forbids the tokenless call,
     ALIBABA_CLOUD_ECS_METADATA_DISABLED=true turns the source off)

Exit codes:
  0  credentials obtained; stdout holds the source, key ID and expiry as JSON (never the secret)
  1  the selected source failed; stderr says why
  2  the configuration is refused (for example a partial RRSA triple)
  4  no source is configured";

/// Identity flags, shared by `run` and `credentials`.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct IdentityArgs {
    /// Use the ECS instance RAM role when no other source is configured, reading the role name from
    /// the metadata service (ALIBABA_CLOUD_ECS_METADATA=<role> does the same with a fixed name).
    /// Off by default: probing 100.100.100.200 off ECS only costs a timeout.
    #[arg(long)]
    pub ecs_ram_role: bool,
    /// Base URL of the ECS instance metadata service.
    #[arg(long, default_value = DEFAULT_METADATA_ENDPOINT)]
    pub metadata_endpoint: String,
    /// DurationSeconds asked of STS for RRSA credentials (at least 15m; the role's maximum session applies).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub sts_duration: Duration,
}

impl IdentityArgs {
    /// The chain options these flags select (refresh policy at its defaults).
    pub fn chain_options(&self) -> ChainOptions {
        ChainOptions {
            ecs_ram_role: self.ecs_ram_role,
            metadata_endpoint: self.metadata_endpoint.clone(),
            sts_duration: self.sts_duration,
            ..ChainOptions::default()
        }
    }
}

/// Arguments of `credentials`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = AFTER_HELP)]
pub struct CredentialsArgs {
    /// Identity flags.
    #[command(flatten)]
    pub identity: IdentityArgs,
}

/// Runs `credentials` against the process environment.
pub async fn run(args: CredentialsArgs) -> ExitCode {
    let code = run_with(
        |name| std::env::var(name).ok(),
        &args,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr(),
    )
    .await;
    ExitCode::from(code)
}

/// Runs `credentials` with `lookup` standing in for the environment; returns the exit code.
pub async fn run_with(
    lookup: impl Fn(&str) -> Option<String>,
    args: &CredentialsArgs,
    stdout: &mut impl Write,
    stderr: &mut impl Write,
) -> u8 {
    let credentials = match OperatorCredentials::from_lookup(lookup, &args.identity.chain_options())
    {
        Ok(credentials) => credentials,
        Err(err) => {
            let _ = writeln!(stderr, "error: {err}");
            return exit_codes::CONFIGURATION;
        }
    };
    let result = credentials.current().await;
    let status = credentials.status();
    let _ = writeln!(stdout, "{}", status_json(&status));
    match result {
        Ok(_) => exit_codes::OBTAINED,
        Err(super::CredentialError::NotConfigured) => {
            let _ = writeln!(stderr, "error: {}", super::CredentialError::NotConfigured);
            exit_codes::NOT_CONFIGURED
        }
        Err(err) => {
            let _ = writeln!(stderr, "error: {err}");
            exit_codes::SOURCE_FAILED
        }
    }
}

/// The status as JSON (no secret is in it to begin with).
pub fn status_json(status: &CredentialStatus) -> serde_json::Value {
    serde_json::json!({
        "source": status.source.map(|s| s.as_str()),
        "state": status.state.as_str(),
        "accessKeyId": status.access_key_id,
        "expiration": status.expiration.map(|t| t.to_string()),
        "nextRefresh": status.next_refresh.map(|t| t.to_string()),
        "lastError": status.last_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CredentialsArgs,
    }

    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(cli.args.identity.chain_options(), ChainOptions::default());
        let cli = Cli::try_parse_from([
            "x",
            "--ecs-ram-role",
            "--metadata-endpoint",
            "http://127.0.0.1:9",
            "--sts-duration",
            "2h",
        ])
        .unwrap();
        let options = cli.args.identity.chain_options();
        assert!(options.ecs_ram_role);
        assert_eq!(options.metadata_endpoint, "http://127.0.0.1:9");
        assert_eq!(options.sts_duration, Duration::from_secs(7200));
    }

    #[tokio::test]
    async fn exit_codes_for_configuration_and_nothing_configured() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run_with(
            |n| (n == "ALIBABA_CLOUD_ROLE_ARN").then(|| "acs:ram::1:role/r".to_owned()),
            &cli.args,
            &mut out,
            &mut err,
        )
        .await;
        assert_eq!(code, exit_codes::CONFIGURATION);
        assert!(String::from_utf8_lossy(&err).contains("ALIBABA_CLOUD_OIDC_TOKEN_FILE"));

        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run_with(|_| None, &cli.args, &mut out, &mut err).await;
        assert_eq!(code, exit_codes::NOT_CONFIGURED);
        assert!(String::from_utf8_lossy(&out).contains("\"NotConfigured\""));
    }
}
