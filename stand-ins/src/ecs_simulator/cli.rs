//! `copyimage-canceller ecs-simulator`: runs the simulator from the shell,
//! prints its endpoint on stdout once listening, one log line per request on stderr.

use std::io::{IsTerminal as _, Write as _};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;

use super::faults::{FaultSpec, SYNTAX_HELP};
use super::outage::OutagePlan;
use super::state::{ImageState, parse_image_arg};
use super::{BUILTIN_REGIONS, EcsSimulator, SimulatorConfig};
use crate::access_key::{AccessKey, ENV_ACCESS_KEY_ID, ENV_ACCESS_KEY_SECRET, ENV_SECURITY_TOKEN};

/// Text after the options in `ecs-simulator --help`.
const AFTER_HELP: &str = concat!(
    "KEYS: the simulator accepts the key pair in ALIBABA_CLOUD_ACCESS_KEY_ID and\n",
    "  ALIBABA_CLOUD_ACCESS_KEY_SECRET; with ALIBABA_CLOUD_SECURITY_TOKEN set, requests must carry\n",
    "  that SecurityToken (STS).\n\n",
    "IMAGES (--image ID=STATE, repeatable; also PUT /_simulator/images/{id} {\"state\":\"copying\"}):\n",
    "  copying        CancelCopyImage succeeds, then the image is gone (InvalidImageId.NotFound)\n",
    "  copied         400 IncorrectImageStatus \"The image is copied finished.\"\n",
    "  not-from-copy  400 ImageCreatedNotFromCopy\n",
    "  any other ID   404 InvalidImageId.NotFound\n\n",
);

/// Text after the fault syntax in `ecs-simulator --help`.
const AFTER_HELP_TAIL: &str = concat!(
    "\n\nCHECKS, like ECS: Action/Version, SignatureMethod HMAC-SHA1 and SignatureVersion 1.0, Timestamp\n",
    "  format and skew (--max-skew), AccessKeyId, SecurityToken, signature (GET or POST, query and form\n",
    "  body), SignatureNonce reuse, RegionId (--region), ImageId. Format=JSON answers JSON, otherwise XML.\n\n",
    "CONTROL (no authentication: keep the listener on loopback):\n",
    "  GET|DELETE /_simulator/requests   the request log (JSON; no secrets, no signatures)\n",
    "  GET /_simulator/images, PUT|DELETE /_simulator/images/{id}\n",
    "  GET|DELETE /_simulator/faults, POST /_simulator/faults {\"fault\":\"m-abc=drop*2\"}\n",
    "  GET|PUT /_simulator/quota {\"perSecond\":50,\"perMinute\":null}\n",
    "  GET|PUT /_simulator/outage {\"mode\":\"refuse\",\"forMs\":60000} (refuse, blackhole, unavailable, none)\n\n",
    "OUTAGES (--outage MODE[:FOR][@AFTER]): the whole endpoint fails, for every request:\n",
    "  refuse       no listener on the port (connections refused); the same port is bound again after FOR\n",
    "  blackhole    connections accepted, requests read, never answered\n",
    "  unavailable  HTTP 503 ServiceUnavailable with ECS's body\n",
    "  refuse closes open connections; the end of blackhole cuts the requests it held.\n",
    "  refuse needs FOR (the control route goes with the listener).\n\n",
    "QUOTA MODE (--quota-per-second, --quota-per-minute): like ECS flow control, calls are counted\n",
    "  per access key and region in windows aligned to the clock; past a limit a call gets HTTP 400\n",
    "  Throttling.User and does not count. A minute's quota clears at the next minute.",
);

fn after_help() -> String {
    format!("{AFTER_HELP}{SYNTAX_HELP}{AFTER_HELP_TAIL}")
}

/// Options of `ecs-simulator`.
#[derive(clap::Args, Debug)]
#[command(after_help = after_help())]
pub struct SimulatorArgs {
    /// Address to listen on; port 0 picks a free port. The endpoint (http://ADDR) is printed on stdout.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// An image and its state (copying, copied, not-from-copy). Repeatable.
    #[arg(long = "image", value_name = "ID=STATE", value_parser = parse_image_arg)]
    pub images: Vec<(String, ImageState)>,
    /// A scripted fault, TARGET=KIND[:ARG][*COUNT] (see below). Repeatable; met in the order given.
    #[arg(long = "fault", value_name = "TARGET=KIND[:ARG][*COUNT]")]
    pub faults: Vec<FaultSpec>,
    /// Delay before every API answer, e.g. 200ms.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub latency: Duration,
    /// A region ID to accept besides the built-in list of Alibaba Cloud regions. Repeatable.
    #[arg(long = "region", value_name = "REGION_ID")]
    pub regions: Vec<String>,
    /// Accept only the --region values, not the built-in region list.
    #[arg(long, requires = "regions")]
    pub only_listed_regions: bool,
    /// Largest accepted distance between a request's Timestamp and the clock.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    pub max_skew: Duration,
    /// Quota mode: calls accepted per second for each access key and region (see below).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub quota_per_second: Option<u32>,
    /// Quota mode: calls accepted per minute for each access key and region.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub quota_per_minute: Option<u32>,
    /// A whole-endpoint outage, MODE[:FOR][@AFTER] (refuse, blackhole, unavailable), e.g.
    /// refuse:60s@30s. Repeatable. Also PUT /_simulator/outage {"mode":"blackhole"}.
    #[arg(long = "outage", value_name = "MODE[:FOR][@AFTER]")]
    pub outages: Vec<OutagePlan>,
}

/// The key pair from the environment, or an error naming the variables to set.
pub fn key_from_env() -> anyhow::Result<AccessKey> {
    let read = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (read(ENV_ACCESS_KEY_ID), read(ENV_ACCESS_KEY_SECRET)) {
        (Some(id), Some(secret)) => Ok(AccessKey::new(id, secret, read(ENV_SECURITY_TOKEN))),
        _ => anyhow::bail!(
            "ecs-simulator needs the key pair it accepts: set {ENV_ACCESS_KEY_ID} and {ENV_ACCESS_KEY_SECRET} \
             (and {ENV_SECURITY_TOKEN} for an STS key)"
        ),
    }
}

impl SimulatorArgs {
    /// The simulator config these options describe, accepting `key`.
    pub fn config(&self, key: AccessKey) -> SimulatorConfig {
        let mut config = SimulatorConfig::new([key]).with_listen(self.listen);
        config.images = self.images.clone();
        config.faults = self.faults.clone();
        config.latency = self.latency;
        config.max_skew = self.max_skew;
        config.quota = super::QuotaLimits {
            per_second: self.quota_per_second,
            per_minute: self.quota_per_minute,
        };
        if self.only_listed_regions {
            config.regions.clear();
        }
        config.regions.extend(self.regions.iter().cloned());
        config.outages = self.outages.clone();
        config
    }

    /// Runs until SIGINT or SIGTERM.
    pub async fn run(self) -> anyhow::Result<()> {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .try_init();
        let key = key_from_env()?;
        let config = self.config(key);
        let regions = config.regions.len();
        let handle = EcsSimulator::start(config).await?;
        // Scripts wait for this line: it means the listener is ready.
        let mut stdout = std::io::stdout();
        writeln!(stdout, "{}", handle.endpoint()).context("writing the endpoint to stdout")?;
        stdout.flush().context("flushing stdout")?;
        tracing::info!(
            endpoint = %handle.endpoint(),
            regions,
            builtin_regions = BUILTIN_REGIONS.len(),
            "ecs-simulator listening"
        );
        wait_for_signal().await?;
        tracing::info!("ecs-simulator shutting down");
        handle.shutdown().await;
        Ok(())
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: SimulatorArgs,
    }

    #[test]
    fn parses_a_full_command_line() {
        let w = Wrapper::try_parse_from([
            "x",
            "--listen",
            "127.0.0.1:0",
            "--image",
            "m-a=copying",
            "--image",
            "m-b=copied",
            "--fault",
            "m-a=internal-error*2",
            "--fault",
            "*=throttling:1s",
            "--latency",
            "20ms",
            "--region",
            "xx-test-1",
            "--quota-per-second",
            "50",
            "--quota-per-minute",
            "2000",
        ])
        .unwrap();
        let config = w.args.config(AccessKey::new("id", "secret", None));
        assert_eq!(config.images.len(), 2);
        assert_eq!(config.faults.len(), 2);
        assert_eq!(config.latency, Duration::from_millis(20));
        assert!(config.regions.contains("xx-test-1"));
        assert!(config.regions.contains("cn-hangzhou"));
        assert_eq!(
            config.quota,
            super::super::QuotaLimits {
                per_second: Some(50),
                per_minute: Some(2000),
            }
        );
    }

    #[test]
    fn only_listed_regions_drops_the_builtin_list() {
        let w = Wrapper::try_parse_from(["x", "--region", "xx-test-1", "--only-listed-regions"])
            .unwrap();
        let config = w.args.config(AccessKey::new("id", "secret", None));
        assert_eq!(
            config.regions.into_iter().collect::<Vec<_>>(),
            ["xx-test-1"]
        );
    }

    #[test]
    fn bad_fault_and_image_are_refused_with_the_syntax() {
        let err = Wrapper::try_parse_from(["x", "--fault", "m-a=explode"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("TARGET=KIND"), "{err}");
        let err = Wrapper::try_parse_from(["x", "--image", "m-a=gone"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("copying, copied or not-from-copy"), "{err}");
    }
}
