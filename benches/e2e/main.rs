//! End-to-end benchmark: the real controller (`copyimage-canceller run`, a
//! child process) against the in-process Kubernetes API and the ECS
//! simulator with a set latency; N resources created at once; time until
//! all are final, throughput against the ideal (concurrency / latency),
//! creation → final latency, the controller's RSS, and requests per
//! resource. Prints a table and writes the figures and the issue's targets
//! as JSON.
//!
//! ```text
//! cargo bench --bench e2e -- [--n 1000,10000] [--latency 20ms] [--concurrency 16]
//!                            [--idle-samples 50] [--json target/bench-e2e.json] [--check]
//! ```
//!
//! Under `cargo test --all-targets` (no `--bench` flag) it only says how to
//! run it: `tests/bench_smoke.rs` runs its core at N = 20 in the test suite.

mod harness;

/// The bench process hosts the in-process API server and the ECS simulator:
/// glibc's malloc (and its `malloc_consolidate`) was about a fifth of this
/// process's CPU in `perf`, time the stand-in spent, not the controller (the
/// controller child keeps the allocator it ships with).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// The bench's flags (after `cargo bench --bench e2e --`).
#[derive(Parser, Debug)]
#[command(
    name = "e2e",
    about = "End-to-end benchmark of copyimage-canceller run"
)]
struct Args {
    /// Resource counts, one fresh world (API, simulator, controller) each.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    n: Vec<usize>,
    /// The simulator's delay before every answer.
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    latency: Duration,
    /// The controller's --max-concurrent-reconciles (the product default).
    #[arg(long, default_value_t = 16)]
    concurrency: u16,
    /// Resources created one at a time on an idle controller for the
    /// time-to-status percentiles (0: skip).
    #[arg(long, default_value_t = 50)]
    idle_samples: usize,
    /// Where to write the figures as JSON.
    #[arg(long, default_value = "target/bench-e2e.json")]
    json: PathBuf,
    /// Longest one load may take.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Exit 1 when a target is missed.
    #[arg(long)]
    check: bool,
    /// An environment variable for the controller, NAME=VALUE (repeatable).
    #[arg(long = "controller-env", value_name = "NAME=VALUE")]
    controller_env: Vec<String>,
    /// Set by `cargo bench`; without it (`cargo test`) nothing is measured.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.bench {
        println!(
            "e2e bench: not run under cargo test; run `cargo bench --bench e2e -- --help` (tests/bench_smoke.rs checks its counting)"
        );
        return Ok(());
    }
    let mut extra_env = Vec::new();
    for pair in &args.controller_env {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--controller-env {pair:?}: expected NAME=VALUE"))?;
        extra_env.push((name.to_string(), value.to_string()));
    }
    anyhow::ensure!(
        !args.latency.is_zero(),
        "--latency must be above zero (the ideal is concurrency / latency)"
    );
    let settings = harness::Settings {
        controller_bin: PathBuf::from(env!("CARGO_BIN_EXE_copyimage-canceller")),
        ecs_latency: args.latency,
        concurrency: args.concurrency,
        extra_args: Vec::new(),
        extra_env,
        timeout: args.timeout,
    };
    let command = format!(
        "cargo bench --bench e2e -- {}",
        std::env::args()
            .skip(1)
            .filter(|a| a != "--bench")
            .collect::<Vec<_>>()
            .join(" ")
    );
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(harness::run(&settings, &args.n, args.idle_samples, command))?;
    print!("{}", report.table());
    report.write_json(&args.json)?;
    println!("figures written to {}", args.json.display());
    if args.check && !report.all_met {
        std::process::exit(1);
    }
    Ok(())
}
