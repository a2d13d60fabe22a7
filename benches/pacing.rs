//! Adaptive pacing benchmark: the real controller (`copyimage-canceller run`,
//! a child process) against the in-process Kubernetes API and the ECS
//! simulator's quota mode, a backlog of N resources created at once. Each
//! figure is measured in this run, against a baseline measured in the same
//! run.
//!
//! ```text
//! cargo bench --bench pacing -- [--n 2000] [--latency 20ms] [--repeat 4]
//!                               [--json target/bench-pacing.json] [--check]
//! ```
//!
//! - (a) no quota: drain time with pacing on (`--ecs-pacing adaptive`, the
//!   default) against the limiter disabled (`--ecs-pacing off`: no scope is
//!   kept, every request goes at once), runs interleaved, medians compared;
//!   target: throughput ratio >= 0.95.
//! - (b) quota Q = 50/s and 200/s: drain time <= 1.25 * N / Q, throttled
//!   answers <= 5 % of requests, every resource final with exactly one
//!   accepted request.
//! - (c) quota 200/s halved to 100/s 5 s into the drain: the throttled share
//!   of every second from some point on stays under 5 %; target: that point
//!   <= 10 s after the change.
//!
//! Under `cargo test --all-targets` (no `--bench` flag) it only says how to run it.

#[path = "e2e/harness.rs"]
mod harness;

/// The bench process hosts the API server and the simulator (see the e2e bench).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use copyimage_stand_ins::ecs_simulator::{QuotaLimits, RequestRecord};
use harness::{Settings, World, not_exactly_one_accepted};
use serde::Serialize;

/// When the quota is halved in (c), after the first create.
const HALVED_AFTER: Duration = Duration::from_secs(5);

#[derive(Parser, Debug)]
#[command(
    name = "pacing",
    about = "Adaptive pacing benchmark of copyimage-canceller run"
)]
struct Args {
    /// Resources in each backlog.
    #[arg(long, default_value_t = 2000)]
    n: usize,
    /// The simulator's delay before every answer.
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    latency: Duration,
    /// The controller's --max-concurrent-reconciles (the product default).
    #[arg(long, default_value_t = 16)]
    concurrency: u16,
    /// Runs of each mode in (a), interleaved; their medians are compared.
    #[arg(long, default_value_t = 4)]
    repeat: usize,
    /// Where to write the figures as JSON.
    #[arg(long, default_value = "target/bench-pacing.json")]
    json: PathBuf,
    /// Exit 1 when a target is missed.
    #[arg(long)]
    check: bool,
    /// Set by `cargo bench`; without it (`cargo test`) nothing is measured.
    #[arg(long, hide = true)]
    bench: bool,
}

/// What one drain came to, counted from the simulator's request log.
#[derive(Debug, Serialize)]
struct Drain {
    scenario: String,
    n: usize,
    seconds: f64,
    requests: usize,
    throttled: usize,
    throttled_share: f64,
    /// Resources whose image got other than exactly one accepted request.
    not_exactly_one_accepted: usize,
    /// Requests per second of the log: (second from the first request, sent, throttled).
    per_second: Vec<(u64, usize, usize)>,
}

fn settings(args: &Args, extra: &[&str]) -> Settings {
    Settings {
        controller_bin: PathBuf::from(env!("CARGO_BIN_EXE_copyimage-canceller")),
        ecs_latency: args.latency,
        concurrency: args.concurrency,
        extra_args: extra.iter().map(|s| s.to_string()).collect(),
        extra_env: Vec::new(),
        timeout: Duration::from_secs(600),
    }
}

/// One fresh world, `quota` set, N resources drained; `change` (after a
/// delay) applied to the quota while it drains.
async fn drain(
    args: &Args,
    n: usize,
    scenario: &str,
    extra: &[&str],
    quota: QuotaLimits,
    change: Option<(Duration, QuotaLimits)>,
) -> anyhow::Result<Drain> {
    let world = World::start(&settings(args, extra)).await?;
    world.sim.set_quota(quota);
    world.sim.clear_requests();
    let names: Vec<String> = (0..n).map(|i| format!("{scenario}-{i:05}")).collect();
    let change_quota = async {
        if let Some((after, limits)) = change {
            tokio::time::sleep(after).await;
            world.sim.set_quota(limits);
        }
    };
    let (took, ()) = tokio::join!(world.drain(&names), change_quota);
    let took = took?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = world.sim.requests();
    world.stop().await;
    Ok(count(scenario, &names, took, &log))
}

fn count(scenario: &str, names: &[String], took: Duration, log: &[RequestRecord]) -> Drain {
    let log: Vec<&RequestRecord> = log
        .iter()
        .filter(|r| r.action.as_deref() == Some("CancelCopyImage"))
        .collect();
    let throttled = log
        .iter()
        .filter(|r| r.code.starts_with("Throttling"))
        .count();
    let start = log.first().map(|r| r.time);
    let mut per_second: Vec<(u64, usize, usize)> = Vec::new();
    for r in &log {
        let second = start.map_or(0, |s| {
            u64::try_from(r.time.duration_since(s).as_secs()).unwrap_or(0)
        });
        while per_second.len() as u64 <= second {
            per_second.push((per_second.len() as u64, 0, 0));
        }
        let slot = &mut per_second[second as usize];
        slot.1 += 1;
        if r.code.starts_with("Throttling") {
            slot.2 += 1;
        }
    }
    Drain {
        scenario: scenario.to_string(),
        n: names.len(),
        seconds: took.as_secs_f64(),
        requests: log.len(),
        throttled,
        throttled_share: throttled as f64 / log.len().max(1) as f64,
        not_exactly_one_accepted: not_exactly_one_accepted(names, log.iter().copied()),
        per_second,
    }
}

/// Seconds after the quota change until every later full second's throttled
/// share is under 5 % (`None`: never).
fn recovery_after_change(d: &Drain) -> Option<f64> {
    let change = HALVED_AFTER.as_secs();
    // NB: the last second is partial (the tail of the backlog).
    let full = &d.per_second[..d.per_second.len().saturating_sub(1)];
    let mut recovered_at = None;
    for &(second, sent, throttled) in full.iter().filter(|s| s.0 >= change) {
        let bad = sent > 0 && throttled as f64 / sent as f64 >= 0.05;
        if bad {
            recovered_at = None;
        } else if recovered_at.is_none() {
            recovered_at = Some(second);
        }
    }
    recovered_at.map(|s| (s - change) as f64)
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
    drains: Vec<Drain>,
    targets: Vec<Target>,
}

fn target(name: String, value: f64, limit: &str, met: bool) -> Target {
    Target {
        name,
        value,
        limit: limit.to_string(),
        met,
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.bench {
        println!(
            "pacing bench: not run under cargo test; run `cargo bench --bench pacing -- --help`"
        );
        return Ok(());
    }
    let command = format!(
        "cargo bench --bench pacing -- --n {} --latency {} --concurrency {} --repeat {}",
        args.n,
        humantime::format_duration(args.latency),
        args.concurrency,
        args.repeat
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        let none = QuotaLimits::default();
        let per_second = |q| QuotaLimits {
            per_second: Some(q),
            per_minute: None,
        };
        let mut drains = Vec::new();
        let mut targets = Vec::new();
        // (a) interleaved, so that a busier moment of the machine hits both.
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for _ in 0..args.repeat {
            off.push(drain(&args, args.n, "a-off", &["--ecs-pacing", "off"], none, None).await?);
            on.push(drain(&args, args.n, "a-adaptive", &[], none, None).await?);
        }
        // NB: medians, so that one run disturbed by the shared machine does
        // not decide; every run is printed.
        let median = |ds: &[Drain]| {
            let mut s: Vec<f64> = ds.iter().map(|d| d.seconds).collect();
            s.sort_by(f64::total_cmp);
            let mid = s.len() / 2;
            if s.len().is_multiple_of(2) {
                (s[mid - 1] + s[mid]) / 2.0
            } else {
                s[mid]
            }
        };
        let ratio = median(&off) / median(&on);
        targets.push(target(
            format!("(a) no quota, {}: throughput adaptive / off", args.n),
            ratio,
            ">= 0.95",
            ratio >= 0.95,
        ));
        drains.extend(off);
        drains.extend(on);
        // (b)
        for q in [50u32, 200] {
            let d = drain(&args, args.n, &format!("b-{q}"), &[], per_second(q), None).await?;
            let ideal = args.n as f64 / f64::from(q);
            targets.push(target(
                format!("(b) quota {q}/s, {}: drain / (N/Q)", args.n),
                d.seconds / ideal,
                "<= 1.25",
                d.seconds <= 1.25 * ideal,
            ));
            targets.push(target(
                format!("(b) quota {q}/s: throttled share of requests"),
                d.throttled_share,
                "<= 0.05",
                d.throttled_share <= 0.05,
            ));
            targets.push(target(
                format!("(b) quota {q}/s: resources without exactly one accepted request"),
                d.not_exactly_one_accepted as f64,
                "== 0",
                d.not_exactly_one_accepted == 0,
            ));
            drains.push(d);
        }
        // (c) a backlog long enough to run well past the change.
        let d = drain(
            &args,
            args.n.max(3000),
            "c-halved",
            &[],
            per_second(200),
            Some((HALVED_AFTER, per_second(100))),
        )
        .await?;
        let recovery = recovery_after_change(&d);
        targets.push(target(
            "(c) quota 200/s halved to 100/s: seconds until every later second throttles < 5 %"
                .to_string(),
            recovery.unwrap_or(f64::INFINITY),
            "<= 10",
            recovery.is_some_and(|s| s <= 10.0),
        ));
        targets.push(target(
            "(c) resources without exactly one accepted request".to_string(),
            d.not_exactly_one_accepted as f64,
            "== 0",
            d.not_exactly_one_accepted == 0,
        ));
        drains.push(d);
        anyhow::Ok(Report {
            command,
            drains,
            targets,
        })
    })?;

    println!("{}", report.command);
    println!(
        "{:<14} {:>6} {:>9} {:>9} {:>10} {:>8}",
        "drain", "N", "seconds", "requests", "throttled", "share"
    );
    for d in &report.drains {
        println!(
            "{:<14} {:>6} {:>9.2} {:>9} {:>10} {:>7.2}%",
            d.scenario,
            d.n,
            d.seconds,
            d.requests,
            d.throttled,
            100.0 * d.throttled_share
        );
    }
    if let Some(c) = report.drains.iter().find(|d| d.scenario == "c-halved") {
        let seconds: Vec<String> = c
            .per_second
            .iter()
            .map(|(s, sent, thr)| format!("{s}:{sent}/{thr}"))
            .collect();
        println!(
            "c-halved per second (second:sent/throttled): {}",
            seconds.join(" ")
        );
    }
    println!();
    let mut missed = 0;
    for t in &report.targets {
        println!(
            "{} {:<80} {:>10.3} (target {})",
            if t.met { "met   " } else { "MISSED" },
            t.name,
            t.value,
            t.limit
        );
        missed += usize::from(!t.met);
    }
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)?;
    println!("figures: {}", args.json.display());
    if args.check && missed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
