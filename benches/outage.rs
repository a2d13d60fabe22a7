//! ECS outage benchmark: the real controller (`copyimage-canceller run`, a
//! child process, default retry flags) against the in-process Kubernetes API
//! and the ECS simulator, a backlog of N resources created at once and, in
//! the middle of it, a whole-endpoint outage of each kind (refuse, blackhole,
//! unavailable). Each figure is measured in this run, against a baseline (the
//! same backlog with no outage) measured in the same run.
//!
//! ```text
//! cargo bench --bench outage -- [--n 2000] [--outage 60s] [--latency 20ms]
//!                               [--json target/bench-outage.json] [--check]
//! ```
//!
//! Targets, for each kind:
//! - requests sent during the outage (the controller's own count,
//!   `copyimage_canceller_ecs_requests_total`, read at its start and end):
//!   at most 2 per second (no retry storm);
//! - after the endpoint returns, the backlog drains within 1.2 × the no-outage
//!   drain time of the whole backlog + 15 s;
//! - zero resources `Failed`, and exactly one accepted request each (the
//!   simulator's log).
//!
//! Under `cargo test --all-targets` (no `--bench` flag) it only says how to run it.

#[path = "e2e/harness.rs"]
mod harness;

/// The bench process hosts the API server and the simulator (see the e2e bench).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use copyimage_canceller::resource::{CopyImageCancellation, Phase};
use copyimage_stand_ins::ecs_simulator::OutageMode;
use harness::{NAMESPACE, Settings, World, not_exactly_one_accepted};
use kube::Api;
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

#[derive(Parser, Debug)]
#[command(
    name = "outage",
    about = "ECS outage benchmark of copyimage-canceller run"
)]
struct Args {
    /// Resources in each backlog.
    #[arg(long, default_value_t = 2000)]
    n: usize,
    /// How long each outage lasts.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    outage: Duration,
    /// The simulator's delay before every answer.
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    latency: Duration,
    /// The controller's --max-concurrent-reconciles (the product default).
    #[arg(long, default_value_t = 16)]
    concurrency: u16,
    /// Only these kinds (refuse, blackhole, unavailable); default all three.
    #[arg(long = "kind", value_parser = parse_mode)]
    kinds: Vec<OutageMode>,
    /// Where to write the figures as JSON.
    #[arg(long, default_value = "target/bench-outage.json")]
    json: PathBuf,
    /// Exit 1 when a target is missed.
    #[arg(long)]
    check: bool,
    /// Set by `cargo bench`; without it (`cargo test`) nothing is measured.
    #[arg(long, hide = true)]
    bench: bool,
}

fn parse_mode(s: &str) -> Result<OutageMode, String> {
    s.parse()
}

/// What one backlog came to.
#[derive(Debug, Serialize)]
struct Run {
    kind: String,
    n: usize,
    /// First create to last final status.
    total_s: f64,
    /// When the outage began, after the first create.
    outage_began_s: Option<f64>,
    /// How long it lasted.
    outage_s: Option<f64>,
    /// From the end of the outage to the last final status.
    drain_after_s: Option<f64>,
    /// CancelCopyImage requests the controller sent during the outage.
    sent_during: Option<f64>,
    sent_per_s_during: Option<f64>,
    failed: usize,
    /// Resources whose image got other than exactly one accepted request.
    not_exactly_one_accepted: usize,
    /// Resources with failedAttempts > 0.
    counted: usize,
}

fn settings(args: &Args) -> Settings {
    Settings {
        controller_bin: PathBuf::from(env!("CARGO_BIN_EXE_copyimage-canceller")),
        ecs_latency: args.latency,
        concurrency: args.concurrency,
        // The product's defaults: retry flags untouched.
        extra_args: Vec::new(),
        extra_env: Vec::new(),
        timeout: Duration::from_secs(900),
    }
}

/// `GET /metrics` on the controller's admin server: the sum of
/// `copyimage_canceller_ecs_requests_total` over its labels.
async fn requests_sent(port: u16) -> anyhow::Result<f64> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    Ok(body
        .lines()
        .filter(|l| l.starts_with("copyimage_canceller_ecs_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// One fresh world, N resources drained; with `outage`, one of that kind
/// starts `at` after the first create and lasts `args.outage`.
async fn backlog(
    args: &Args,
    kind: &str,
    outage: Option<(OutageMode, Duration)>,
) -> anyhow::Result<Run> {
    let world = World::start(&settings(args)).await?;
    world.sim.clear_requests();
    let names: Vec<String> = (0..args.n).map(|i| format!("{kind}-{i:05}")).collect();
    let started = Instant::now();
    let port = world.admin_port();
    let during = async {
        let Some((mode, at)) = outage else {
            return anyhow::Ok(None);
        };
        tokio::time::sleep(at).await;
        world.sim.set_outage(Some(mode), None).await;
        let began = Instant::now();
        let before = requests_sent(port).await?;
        tokio::time::sleep_until(began + args.outage).await;
        let after = requests_sent(port).await?;
        world.sim.set_outage(None, None).await;
        let ended = Instant::now();
        anyhow::Ok(Some((began, ended, after - before)))
    };
    let (took, during) = tokio::join!(world.drain(&names), during);
    let took = took?;
    let during = during?;
    let last = started + took;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = world.sim.requests();
    let list = Api::<CopyImageCancellation>::namespaced(world.client.clone(), NAMESPACE)
        .list(&Default::default())
        .await
        .context("listing the resources")?;
    world.stop().await;
    let statuses: Vec<_> = list
        .items
        .iter()
        .filter_map(|c| c.status.as_ref())
        .collect();
    Ok(Run {
        kind: kind.to_string(),
        n: names.len(),
        total_s: took.as_secs_f64(),
        outage_began_s: during.map(|(b, _, _)| b.duration_since(started).as_secs_f64()),
        outage_s: during.map(|(b, e, _)| e.duration_since(b).as_secs_f64()),
        drain_after_s: during.map(|(_, e, _)| last.saturating_duration_since(e).as_secs_f64()),
        sent_during: during.map(|(_, _, n)| n),
        sent_per_s_during: during.map(|(b, e, n)| n / e.duration_since(b).as_secs_f64()),
        failed: statuses
            .iter()
            .filter(|s| s.phase == Some(Phase::Failed))
            .count(),
        not_exactly_one_accepted: not_exactly_one_accepted(&names, &log),
        counted: statuses.iter().filter(|s| s.failed_attempts > 0).count(),
    })
}

#[derive(Debug, Serialize)]
struct Target {
    name: String,
    value: f64,
    limit: String,
    met: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    command: String,
    runs: Vec<Run>,
    targets: Vec<Target>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.bench {
        println!(
            "outage bench: not run under cargo test; run `cargo bench --bench outage -- --help`"
        );
        return Ok(());
    }
    let kinds = if args.kinds.is_empty() {
        OutageMode::ALL.to_vec()
    } else {
        args.kinds.clone()
    };
    let command = format!(
        "cargo bench --bench outage -- --n {} --outage {} --latency {} --concurrency {}",
        args.n,
        humantime::format_duration(args.outage),
        humantime::format_duration(args.latency),
        args.concurrency,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        let mut runs = Vec::new();
        let mut targets = Vec::new();
        let baseline = backlog(&args, "baseline", None).await?;
        eprintln!("baseline: {baseline:?}");
        // NB: the middle of the backlog: half the no-outage drain time.
        let middle = Duration::from_secs_f64(baseline.total_s / 2.0);
        let allowed = 1.2 * baseline.total_s + 15.0;
        for mode in kinds {
            let run = backlog(&args, &mode.to_string(), Some((mode, middle))).await?;
            eprintln!("{mode}: {run:?}");
            let rate = run.sent_per_s_during.unwrap_or(f64::INFINITY);
            targets.push(Target {
                name: format!("{mode}: requests/s sent during the outage"),
                value: rate,
                limit: "<= 2".into(),
                met: rate <= 2.0,
            });
            let after = run.drain_after_s.unwrap_or(f64::INFINITY);
            targets.push(Target {
                name: format!("{mode}: drain after the endpoint returns, s"),
                value: after,
                limit: format!("<= 1.2 x {:.1} + 15 = {allowed:.1}", baseline.total_s),
                met: after <= allowed,
            });
            targets.push(Target {
                name: format!("{mode}: resources Failed"),
                value: run.failed as f64,
                limit: "= 0".into(),
                met: run.failed == 0,
            });
            targets.push(Target {
                name: format!("{mode}: resources without exactly one accepted request"),
                value: run.not_exactly_one_accepted as f64,
                limit: "= 0".into(),
                met: run.not_exactly_one_accepted == 0,
            });
            runs.push(run);
        }
        runs.insert(0, baseline);
        anyhow::Ok(Report {
            command,
            runs,
            targets,
        })
    })?;
    println!("{}", report.command);
    println!(
        "{:<10} {:>6} {:>9} {:>9} {:>9} {:>11} {:>9} {:>7} {:>8} {:>8}",
        "kind",
        "n",
        "total s",
        "began s",
        "outage s",
        "drain after",
        "sent",
        "req/s",
        "failed",
        "!=1 acc"
    );
    for r in &report.runs {
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        println!(
            "{:<10} {:>6} {:>9.1} {:>9} {:>9} {:>11} {:>9} {:>7} {:>8} {:>8}",
            r.kind,
            r.n,
            r.total_s,
            f(r.outage_began_s),
            f(r.outage_s),
            f(r.drain_after_s),
            f(r.sent_during),
            r.sent_per_s_during
                .map_or("-".to_string(), |v| format!("{v:.2}")),
            r.failed,
            r.not_exactly_one_accepted,
        );
    }
    println!();
    for t in &report.targets {
        println!(
            "{} {:<60} {:>10.2} {}",
            if t.met { "PASS" } else { "MISS" },
            t.name,
            t.value,
            t.limit
        );
    }
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.json, serde_json::to_vec_pretty(&report)?)?;
    if args.check && report.targets.iter().any(|t| !t.met) {
        std::process::exit(1);
    }
    Ok(())
}
