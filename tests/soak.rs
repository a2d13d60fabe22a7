//! Chaos soak: hundreds of resources through the real `run` binary while
//! everything around it fails, then every status is held against what the
//! ECS simulator and the Kubernetes API logged.
//!
//! - ECS (simulator): latency on every request; per image scripted
//!   `InternalError`s, throttling and dropped connections, or a terminal state
//!   (`copied`, `not-from-copy`, absent) or `InternalError` forever; plus
//!   global bursts of `InternalError`, `ServiceUnavailable`, throttling and
//!   drops at random moments.
//! - Kubernetes (in-process API): a seeded rate of 409 Conflict, 500 and 429
//!   on status writes and 500 on Event writes, failing relists, dropped
//!   watches, and compacted history (resumed watches get 410 Gone).
//! - The controller: SIGKILLed at random moments (while work is in flight)
//!   and restarted, several times; once more after everything is final.
//!
//! The seed is printed; `COPYIMAGE_CANCELLER_SOAK_SEED=N` replays a run's
//! choices (the interleaving still varies), `COPYIMAGE_CANCELLER_SOAK_RESOURCES`
//! and `COPYIMAGE_CANCELLER_SOAK_KILLS` make it bigger or harsher.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Env, HARNESS_USER_AGENT, SandboxOptions, operator_key, phase, yaml};
use copyimage_canceller::controller::decide::{OUTCOME_TRANSPORT_ERROR, OUTCOME_UNKNOWN};
use copyimage_canceller::resource::{CopyImageCancellation, CopyImageCancellationStatus, Phase};
use copyimage_stand_ins::ecs_simulator::{
    ConnectionFate, FaultCount, FaultKind, FaultSpec, FaultTarget, ImageState, RequestRecord,
    SimulatorConfig,
};
use copyimage_stand_ins::kube_api::{Fault, KubeApiConfig, RequestRecord as ApiRecord, Verb};
use futures::StreamExt;
use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt, watcher};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CICS: &str = "copyimagecancellations";
/// A bound on a hung run, not a performance target: a healthy run on a
/// loaded 2-core machine takes well under a minute.
const DEADLINE: Duration = Duration::from_secs(240);
/// Latency the simulator adds to every answer: the window in which a
/// SIGKILL finds requests in flight.
const ECS_LATENCY: Duration = Duration::from_millis(25);
/// How late the simulator may log a request a killed controller had already
/// written to the socket (it reads requests on a busy runtime).
const LOG_SLACK: jiff::SignedDuration = jiff::SignedDuration::from_millis(150);
/// Pause between a SIGKILL and the restart, at least: longer than
/// [`LOG_SLACK`], so every request is attributed to the right process.
const MIN_RESTART_PAUSE_MS: u64 = 200;
/// Faults per history check: `attemptHistory` keeps the last 10 attempts.
const HISTORY_LIMIT: i32 = 10;

/// What a resource's image does, and so how the resource must end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Plan {
    /// A copy in progress: one request, cancelled.
    Copying,
    /// `InternalError` this many times first.
    InternalErrors(u32),
    /// `Throttling.User` this many times first.
    Throttled(u32),
    /// The first connection dropped without an answer.
    Dropped,
    /// A finished copy: `IncorrectImageStatus`.
    Copied,
    /// Not made by a copy: `ImageCreatedNotFromCopy`.
    NotFromCopy,
    /// No such image: `InvalidImageId.NotFound`.
    Absent,
    /// `InternalError` forever, backoffLimit 2: `RetriesExhausted`.
    Exhausted,
}

impl Plan {
    fn draw(rng: &mut StdRng) -> Plan {
        match rng.random_range(0..100) {
            0..55 => Plan::Copying,
            55..68 => Plan::InternalErrors(rng.random_range(1..=3)),
            68..75 => Plan::Throttled(rng.random_range(1..=2)),
            75..80 => Plan::Dropped,
            80..87 => Plan::Copied,
            87..91 => Plan::NotFromCopy,
            91..97 => Plan::Absent,
            _ => Plan::Exhausted,
        }
    }

    /// Whether the image is a copy in progress (the resource should succeed).
    fn cancellable(self) -> bool {
        matches!(
            self,
            Plan::Copying | Plan::InternalErrors(_) | Plan::Throttled(_) | Plan::Dropped
        )
    }

    fn label(self) -> &'static str {
        match self {
            Plan::Copying => "copying",
            Plan::InternalErrors(_) => "internal-errors-then-success",
            Plan::Throttled(_) => "throttled-then-success",
            Plan::Dropped => "dropped-then-success",
            Plan::Copied => "copied",
            Plan::NotFromCopy => "not-from-copy",
            Plan::Absent => "absent",
            Plan::Exhausted => "internal-error-forever",
        }
    }
}

/// One resource of the soak.
struct Item {
    name: String,
    image: String,
    plan: Plan,
    backoff_limit: i32,
}

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a whole number")),
    )
}

fn sim_fault(target: FaultTarget, kind: FaultKind, times: u32) -> FaultSpec {
    FaultSpec::new(target, kind, FaultCount::Times(times))
}

/// Tallies of what the chaos did, for the summary.
#[derive(Default)]
struct Chaos {
    kills: Vec<Timestamp>,
    starts: Vec<Timestamp>,
    watch_drops: usize,
    history_expiries: usize,
    ecs_bursts: BTreeMap<String, u32>,
    relist_faults: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak_loses_no_outcome_and_sends_nothing_after_the_end() {
    let seed = env_number("COPYIMAGE_CANCELLER_SOAK_SEED").unwrap_or_else(rand::random);
    let count = env_number("COPYIMAGE_CANCELLER_SOAK_RESOURCES").unwrap_or(500) as usize;
    let kills = env_number("COPYIMAGE_CANCELLER_SOAK_KILLS").unwrap_or(5) as usize;
    println!(
        "soak: seed {seed} ({count} resources, {kills} kills); replay with COPYIMAGE_CANCELLER_SOAK_SEED={seed}"
    );
    let mut rng = StdRng::seed_from_u64(seed);

    let mut simulator = SimulatorConfig::new([operator_key()]);
    simulator.request_log_capacity = 1_000_000;
    // First in the fault list, so every request meets it before any answer-changing fault.
    simulator.faults.push(FaultSpec::new(
        FaultTarget::AnyImage,
        FaultKind::Latency { delay: ECS_LATENCY },
        FaultCount::Always,
    ));
    let controller_args = [
        "--retry-base-delay",
        "50ms",
        "--retry-max-delay",
        "200ms",
        "--log-level",
        "info",
        "--max-concurrent-reconciles",
        "32",
    ];
    let mut env = Env::sandbox_with(SandboxOptions {
        api: KubeApiConfig {
            // Frequent bookmarks keep resumed watches close to the head, so
            // most 410s below come from the injected compactions.
            bookmark_interval: Duration::from_secs(1),
            ..KubeApiConfig::default()
        },
        simulator,
        controller_args: controller_args.iter().map(|s| s.to_string()).collect(),
    })
    .await;

    let items: Vec<Item> = (0..count)
        .map(|i| {
            let plan = Plan::draw(&mut rng);
            Item {
                name: format!("soak-{i:04}"),
                image: format!("m-soak{i:04}"),
                plan,
                backoff_limit: if plan == Plan::Exhausted { 2 } else { 6 },
            }
        })
        .collect();
    for item in &items {
        let image = FaultTarget::Image(item.image.clone());
        match item.plan {
            Plan::Copied => env.sim.set_image(&item.image, ImageState::Copied),
            Plan::NotFromCopy => env.sim.set_image(&item.image, ImageState::NotFromCopy),
            Plan::Absent => {}
            _ => env.copying(&item.image),
        }
        match item.plan {
            Plan::InternalErrors(n) => {
                env.sim
                    .add_fault(sim_fault(image, FaultKind::InternalError, n));
            }
            Plan::Throttled(n) => env.sim.add_fault(sim_fault(
                image,
                FaultKind::Throttling {
                    retry_after: Some(Duration::from_millis(100)),
                },
                n,
            )),
            Plan::Dropped => env.sim.add_fault(sim_fault(image, FaultKind::Drop, 1)),
            Plan::Exhausted => env.sim.add_fault(FaultSpec::new(
                image,
                FaultKind::InternalError,
                FaultCount::Always,
            )),
            _ => {}
        }
    }

    let api = env.sandbox_api();
    api.inject_fault(
        Fault::conflict(u32::MAX)
            .rate(0.05, seed ^ 0x409)
            .verb(Verb::Patch)
            .resource(CICS)
            .subresource("status"),
    );
    api.inject_fault(
        Fault::internal_error(u32::MAX)
            .rate(0.03, seed ^ 0x500)
            .verb(Verb::Patch)
            .resource(CICS)
            .subresource("status"),
    );
    api.inject_fault(
        Fault::too_many_requests(u32::MAX, 1)
            .rate(0.01, seed ^ 0x429)
            .verb(Verb::Patch)
            .resource(CICS)
            .subresource("status"),
    );
    api.inject_fault(
        Fault::internal_error(u32::MAX)
            .rate(0.05, seed ^ 0xe5)
            .verb(Verb::Create)
            .resource("events"),
    );

    for item in &items {
        let mut cic = common::cic(&item.name, &item.image);
        cic.spec.backoff_limit = item.backoff_limit;
        env.create(&cic).await;
    }

    // Kills land when this many resources are final (plus a random delay), so
    // they find work in flight however fast the machine is; the first lands
    // early, while the first statuses and requests are being written.
    let mut kill_at: Vec<(usize, u64)> = (0..kills)
        .map(|k| {
            let fraction = if k == 0 {
                0.0
            } else {
                rng.random_range(0.05..0.85)
            };
            let threshold = (fraction * count as f64) as usize;
            (threshold, rng.random_range(100..600))
        })
        .collect();
    kill_at.sort();
    let mut kill_at = kill_at.into_iter().peekable();

    let mut chaos = Chaos::default();
    let started = tokio::time::Instant::now();
    chaos.starts.push(Timestamp::now());
    env.start_controller();
    let mut next_chaos = started + Duration::from_millis(rng.random_range(300..1500));
    let progress = Progress::follow(&env);
    let mut threshold_crossed: Option<tokio::time::Instant> = None;
    let mut next_progress = started + Duration::from_secs(5);
    let mut exits = Vec::new();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = tokio::time::Instant::now();
        let finals = progress.finals();
        if finals == count {
            break;
        }
        if let Some(exit) = env.take_exited() {
            // A crash is a finding; restart it as the kubelet would, and report.
            exits.push(format!(
                "the controller exited on its own ({exit}) at {finals}/{count} final"
            ));
            chaos.kills.push(Timestamp::now());
            chaos.starts.push(Timestamp::now());
            env.start_controller();
            continue;
        }
        if now >= next_progress {
            next_progress = now + Duration::from_secs(5);
            println!(
                "soak: {:.0?}: {finals}/{count} final, {} ECS requests",
                now - started,
                env.sim.requests().len()
            );
        }
        if now - started > DEADLINE {
            let stuck: Vec<String> = list(&env)
                .await
                .into_iter()
                .filter(|c| !is_final(c))
                .take(3)
                .map(|c| yaml(&c))
                .collect();
            let kept = keep_logs(&env, seed);
            panic!(
                "soak seed {seed}: only {finals} of {count} resources final after {DEADLINE:?}; \
                 {} kills, controller exits: {exits:?}; logs kept in {}; some of the others:\n{}",
                chaos.kills.len(),
                kept.display(),
                stuck.join("\n---\n")
            );
        }
        if let Some(&(threshold, delay_ms)) = kill_at.peek()
            && finals >= threshold
        {
            let crossed = *threshold_crossed.get_or_insert(now);
            if now >= crossed + Duration::from_millis(delay_ms) {
                kill_at.next();
                threshold_crossed = None;
                env.kill_controller().await;
                chaos.kills.push(Timestamp::now());
                let pause = rng.random_range(MIN_RESTART_PAUSE_MS..MIN_RESTART_PAUSE_MS + 500);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                chaos.starts.push(Timestamp::now());
                env.start_controller();
                println!(
                    "soak: SIGKILL {} at {finals}/{count} final, restarted after {pause}ms",
                    chaos.kills.len()
                );
                continue;
            }
        }
        if now >= next_chaos {
            next_chaos = now + Duration::from_millis(rng.random_range(400..2000));
            // NB: near the end, a global ECS burst would all land on the few
            // resources still retrying and exhaust their backoffLimit.
            let ecs_bursts = finals * 10 < count * 9;
            disturb(&env, &mut rng, &mut chaos, ecs_bursts);
        }
    }
    let elapsed = started.elapsed();
    println!("soak: all {count} resources final after {elapsed:.1?}");

    // Everything is final: a resync through 410 Gone, then a restart, must send nothing.
    let api = env.sandbox_api();
    api.clear_faults();
    api.expire_history();
    api.drop_watches();
    chaos.history_expiries += 1;
    chaos.watch_drops += 1;
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.kill_controller().await;
    let restart = Timestamp::now();
    env.start_controller();
    env.eventually("the restarted controller listed the resources", |env| {
        env.sandbox_api().requests().iter().any(|r| {
            from_controller(r) && r.resource == CICS && r.verb == Verb::List && r.time > restart
        })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let resources = list(&env).await;
    let ecs = env.sim.requests();
    let api_log = env.sandbox_api().requests();
    let mut report = check(&items, &resources, &ecs, &api_log, &chaos);
    report.problems.extend(exits);
    summarize(&items, &resources, &ecs, &api_log, &chaos, &report, elapsed);
    if !report.problems.is_empty() {
        let kept = keep_logs(&env, seed);
        panic!(
            "soak seed {seed}: {} problem(s), replay with COPYIMAGE_CANCELLER_SOAK_SEED={seed}; logs kept in {}:\n{}",
            report.problems.len(),
            kept.display(),
            report
                .problems
                .iter()
                .take(25)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    env.cleanup().await;
}

/// Copies the controller logs and the simulator's and API's request logs
/// where they outlive the test, and says where.
fn keep_logs(env: &Env, seed: u64) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("soak-{seed}"));
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("controller.log"), env.controller_log());
    let ecs: Vec<String> = env
        .sim
        .requests()
        .iter()
        .map(|r| format!("{r:?}"))
        .collect();
    let _ = std::fs::write(dir.join("ecs-requests.log"), ecs.join("\n"));
    let api: Vec<String> = env
        .sandbox_api()
        .requests()
        .iter()
        .map(|r| format!("{r:?}"))
        .collect();
    let _ = std::fs::write(dir.join("api-requests.log"), api.join("\n"));
    dir
}

/// One random disturbance of the API or the simulator.
fn disturb(env: &Env, rng: &mut StdRng, chaos: &mut Chaos, ecs_bursts: bool) {
    let api = env.sandbox_api();
    match rng.random_range(0..if ecs_bursts { 10 } else { 6 }) {
        0..3 => {
            api.drop_watches();
            chaos.watch_drops += 1;
        }
        3..5 => {
            api.expire_history();
            api.drop_watches();
            chaos.history_expiries += 1;
            chaos.watch_drops += 1;
        }
        // The relist after 410 Gone fails a few times too, then recovers.
        5 if relist_recovered(&api.requests(), chaos.relist_faults) => {
            let n = rng.random_range(1..=3);
            api.inject_fault(
                Fault::internal_error(n)
                    .verb(Verb::List)
                    .resource(CICS)
                    .sparing_user_agent(HARNESS_USER_AGENT),
            );
            api.expire_history();
            api.drop_watches();
            chaos.relist_faults += n;
            chaos.history_expiries += 1;
            chaos.watch_drops += 1;
        }
        5 => {
            api.expire_history();
            api.drop_watches();
            chaos.history_expiries += 1;
            chaos.watch_drops += 1;
        }
        _ => {
            let (kind, n) = match rng.random_range(0..4) {
                0 => (FaultKind::InternalError, rng.random_range(1..=4)),
                1 => (FaultKind::ServiceUnavailable, rng.random_range(1..=3)),
                2 => (
                    FaultKind::Throttling { retry_after: None },
                    rng.random_range(1..=4),
                ),
                _ => (FaultKind::Drop, rng.random_range(1..=2)),
            };
            *chaos.ecs_bursts.entry(kind.to_string()).or_default() += n;
            env.sim.add_fault(sim_fault(FaultTarget::AnyImage, kind, n));
        }
    }
}

async fn list(env: &Env) -> Vec<CopyImageCancellation> {
    env.cics()
        .list(&ListParams::default())
        .await
        .expect("list the resources")
        .items
}

/// Which resources are final, kept up to date from a watch of our own.
///
/// NB: polling with full lists instead cost the in-process API (which serves
/// the controller as well) more CPU than the controller's own traffic.
struct Progress {
    finals: Arc<Mutex<HashMap<String, bool>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    fn follow(env: &Env) -> Progress {
        let finals: Arc<Mutex<HashMap<String, bool>>> = Arc::default();
        let seen = finals.clone();
        // NB: the harness client's requests are spared by the relist faults.
        let stream = watcher(env.cics(), watcher::Config::default())
            .default_backoff()
            .touched_objects();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                if let Ok(cic) = event {
                    let done = is_final(&cic);
                    seen.lock().unwrap().insert(cic.name_any(), done);
                }
            }
        });
        Progress { finals, task }
    }

    fn finals(&self) -> usize {
        self.finals.lock().unwrap().values().filter(|f| **f).count()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn is_final(cic: &CopyImageCancellation) -> bool {
    matches!(phase(cic).as_deref(), Some("Succeeded" | "Failed"))
}

/// The Stalled (or Ready) reason of a finished resource.
fn final_reason(status: &CopyImageCancellationStatus) -> String {
    let wanted = if status.phase == Some(Phase::Succeeded) {
        "Ready"
    } else {
        "Stalled"
    };
    status
        .conditions
        .iter()
        .find(|c| c.type_ == wanted)
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

/// What the checks found.
#[derive(Default)]
struct Report {
    problems: Vec<String>,
    /// Answered requests whose answer a SIGKILL kept from being recorded.
    lost_to_kills: usize,
    /// Resources with more attempts than `attemptHistory` keeps (history checks skipped).
    truncated_histories: usize,
    /// Resources that ended PreviousAttemptMayHaveSucceeded, and truly had been cancelled.
    previous_attempt_succeeded: usize,
}

/// The simulator's `code` as the controller records it in `attemptHistory`.
fn history_outcome(code: &str) -> &str {
    if code == "Success" { "Succeeded" } else { code }
}

fn check(
    items: &[Item],
    resources: &[CopyImageCancellation],
    ecs: &[RequestRecord],
    api_log: &[ApiRecord],
    chaos: &Chaos,
) -> Report {
    let mut report = Report::default();
    let by_name: HashMap<String, &CopyImageCancellation> =
        resources.iter().map(|c| (c.name_any(), c)).collect();
    let mut by_image: HashMap<&str, Vec<&RequestRecord>> = HashMap::new();
    for r in ecs {
        if r.action.as_deref() == Some("CancelCopyImage")
            && let Some(image) = r.image_id.as_deref()
        {
            by_image.entry(image).or_default().push(r);
        }
    }
    for requests in by_image.values_mut() {
        requests.sort_by_key(|r| r.time);
    }
    // The kills while work was going on (not the one after everything was final).
    let kills = &chaos.kills;
    let unknown = OUTCOME_UNKNOWN;

    for item in items {
        let mut problem = |what: String| {
            report
                .problems
                .push(format!("{} ({}): {what}", item.name, item.plan.label()))
        };
        let Some(cic) = by_name.get(&item.name) else {
            problem("missing at the end".into());
            continue;
        };
        let Some(status) = cic.status.as_ref() else {
            problem("no status".into());
            continue;
        };
        if !is_final(cic) {
            problem(format!("not final: {:?}", status.phase));
            continue;
        }
        let requests = by_image
            .get(item.image.as_str())
            .cloned()
            .unwrap_or_default();
        let reason = final_reason(status);

        // No more requests than attempts recorded before sending them (the
        // contract's bound, attempts + one per kill, follows).
        if requests.len() > status.attempts as usize {
            problem(format!(
                "{} requests but {} attempts recorded",
                requests.len(),
                status.attempts
            ));
        }

        // Nothing sent after the final status was written: the write that
        // produced the final resourceVersion is the last word.
        let final_write = api_log.iter().find(|r| {
            r.verb == Verb::Patch
                && r.resource == CICS
                && r.subresource == "status"
                && r.name.as_deref() == Some(item.name.as_str())
                && r.code < 300
                && r.resource_version == cic.resource_version()
        });
        match final_write {
            None => problem(format!(
                "no status write produced the final resourceVersion {:?}",
                cic.resource_version()
            )),
            Some(write) => {
                for late in requests.iter().filter(|r| r.time > write.time) {
                    problem(format!(
                        "request at {} ({}) after the final status was written at {}",
                        late.time, late.code, write.time
                    ));
                }
            }
        }

        // Every answer reached the history, unless a SIGKILL took it.
        let answered: Vec<(usize, &&RequestRecord)> = requests
            .iter()
            .enumerate()
            .filter(|(_, r)| r.connection == ConnectionFate::Answered && r.request_id.is_some())
            .collect();
        let history = &status.attempt_history;
        let unknowns = history.iter().filter(|a| a.outcome == unknown).count();
        let mut lost_here = 0;
        let mut lost_success = false;
        if status.attempts > HISTORY_LIMIT {
            report.truncated_histories += 1;
        } else {
            let numbers: Vec<i32> = history.iter().map(|a| a.number).collect();
            if numbers != (1..=status.attempts).collect::<Vec<_>>() {
                problem(format!(
                    "history numbers {numbers:?} for {} attempts",
                    status.attempts
                ));
            }
            // The attempt each request was sent for, where its answer names it.
            let attempt_of: Vec<Option<i32>> = requests
                .iter()
                .map(|r| {
                    let id = r.request_id.as_deref()?;
                    history
                        .iter()
                        .find(|a| a.request_id.as_deref() == Some(id))
                        .map(|a| a.number)
                })
                .collect();
            let mut explained = vec![false; history.len()];
            for (i, r) in &answered {
                let id = r.request_id.as_deref().unwrap_or_default();
                if let Some(number) = attempt_of[*i] {
                    let entry = &history[(number - 1) as usize];
                    if entry.outcome != history_outcome(&r.code) {
                        problem(format!(
                            "request {id} answered {} but attempt {number} says {}",
                            r.code, entry.outcome
                        ));
                    }
                    continue;
                }
                // Lost only if the process that sent it was killed before it
                // sent anything else for the image (the next request came from
                // a later process), and an attempt between the neighbouring
                // recorded ones stayed Unknown: written ahead, never recorded.
                let next = requests.get(i + 1).map(|n| n.time);
                let killed = kills
                    .iter()
                    .find(|k| r.time <= **k + LOG_SLACK)
                    .filter(|k| next.is_none_or(|t| t > **k));
                let after = attempt_of[..*i]
                    .iter()
                    .flatten()
                    .max()
                    .copied()
                    .unwrap_or(0);
                let before = attempt_of[i + 1..]
                    .iter()
                    .flatten()
                    .min()
                    .copied()
                    .unwrap_or(i32::MAX);
                let slot = history.iter().position(|a| {
                    a.outcome == unknown
                        && a.number > after
                        && a.number < before
                        && a.time.0 <= r.time
                        && !explained[(a.number - 1) as usize]
                });
                match (killed, slot) {
                    (Some(_), Some(slot)) => {
                        explained[slot] = true;
                        lost_here += 1;
                        lost_success |= r.code == "Success";
                    }
                    _ => problem(format!(
                        "answer {id} ({}) at {} is not in the history {:?} (kill after it: {killed:?})",
                        r.code,
                        r.time,
                        history
                            .iter()
                            .map(|a| (
                                a.number,
                                a.outcome.as_str(),
                                a.request_id.as_deref().unwrap_or("-")
                            ))
                            .collect::<Vec<_>>()
                    )),
                }
            }
            // backoffLimit counts the attempts whose outcome was lost and the
            // InternalErrors met while the region answered others; never
            // throttling, terminal codes or outage-class answers
            // (TransportError, ServiceUnavailable: the endpoint's, not the
            // resource's). Whether an InternalError counted depends on the
            // answers around it (a run across resources is the endpoint's
            // incident), so those are a bound, the lost ones exact.
            let lost = history.iter().filter(|a| a.outcome == unknown).count();
            let internal = history
                .iter()
                .filter(|a| a.outcome == "InternalError")
                .count();
            if !(lost..=lost + internal).contains(&(status.failed_attempts as usize)) {
                problem(format!(
                    "failedAttempts {} but {lost} lost attempt(s) and {internal} InternalError(s) in the history",
                    status.failed_attempts
                ));
            }
            let dropped = requests
                .iter()
                .filter(|r| r.connection == ConnectionFate::Dropped)
                .count();
            let transport = history
                .iter()
                .filter(|a| a.outcome == OUTCOME_TRANSPORT_ERROR)
                .count();
            if dropped > transport + unknowns {
                problem(format!(
                    "{dropped} dropped connections but {transport} TransportError and {unknowns} Unknown attempts"
                ));
            }
        }
        report.lost_to_kills += lost_here;
        if unknowns > kills.len() {
            problem(format!(
                "{unknowns} Unknown attempts with only {} kills",
                kills.len()
            ));
        }
        for entry in history.iter().filter(|a| a.outcome == unknown) {
            // History times are whole seconds, rounded down.
            if !kills.iter().any(|k| entry.time.0 <= *k) {
                problem(format!(
                    "attempt {} is Unknown but no kill came after {}",
                    entry.number, entry.time.0
                ));
            }
        }

        // The end state fits the image, and a success carries the request ID
        // of the answer that said so.
        let last_answer = answered.last().map(|(_, r)| **r);
        let succeeded = phase(cic).as_deref() == Some("Succeeded");
        if succeeded {
            match last_answer {
                Some(r) if r.code == "Success" && r.request_id == status.request_id => {}
                other => problem(format!(
                    "Succeeded with request ID {:?}, but the last answer was {:?}",
                    status.request_id,
                    other.map(|r| (&r.code, &r.request_id))
                )),
            }
        }
        let previous = "PreviousAttemptMayHaveSucceeded";
        let fits = match item.plan {
            _ if reason == previous => {
                status.ambiguous_attempts > 0
                    && matches!(
                        status.error_code.as_deref(),
                        Some("IncorrectImageStatus" | "InvalidImageId.NotFound")
                    )
            }
            Plan::Exhausted => {
                reason == "RetriesExhausted" && status.failed_attempts == item.backoff_limit + 1
            }
            // NB: global bursts of InternalError and drops may, rarely, use
            // up a resource's retries; counted in the summary.
            plan if plan.cancellable() => succeeded || reason == "RetriesExhausted",
            Plan::Copied => reason == "IncorrectImageStatus",
            Plan::NotFromCopy => reason == "ImageCreatedNotFromCopy",
            Plan::Absent => reason == "InvalidImageIdNotFound",
            _ => false,
        };
        if !fits {
            problem(format!(
                "ended {:?} {reason} ({:?}), which does not fit the image",
                status.phase, status.error_code
            ));
        }
        if reason == previous && item.plan.cancellable() {
            // The copy really was cancelled by an attempt whose answer was lost.
            if lost_success {
                report.previous_attempt_succeeded += 1;
            } else {
                problem(
                    "PreviousAttemptMayHaveSucceeded, but no lost Success answer explains it"
                        .into(),
                );
            }
        }
    }
    report
}

fn summarize(
    items: &[Item],
    resources: &[CopyImageCancellation],
    ecs: &[RequestRecord],
    api_log: &[ApiRecord],
    chaos: &Chaos,
    report: &Report,
    elapsed: Duration,
) {
    let mut plans: BTreeMap<&str, usize> = BTreeMap::new();
    for item in items {
        *plans.entry(item.plan.label()).or_default() += 1;
    }
    let mut ends: BTreeMap<String, usize> = BTreeMap::new();
    for cic in resources {
        let status = cic.status.clone().unwrap_or_default();
        let key = format!(
            "{} {}",
            phase(cic).unwrap_or_default(),
            final_reason(&status)
        );
        *ends.entry(key).or_default() += 1;
    }
    let cancels: Vec<&RequestRecord> = ecs
        .iter()
        .filter(|r| r.action.as_deref() == Some("CancelCopyImage"))
        .collect();
    let mut ecs_codes: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &cancels {
        *ecs_codes.entry(r.code.as_str()).or_default() += 1;
    }
    let mut injected: BTreeMap<String, usize> = BTreeMap::new();
    for r in api_log {
        if let Some(kind) = r.injected {
            let verb = format!("{:?} {}", r.verb, r.resource);
            *injected
                .entry(format!("{kind:?} on {verb}{}", sub(&r.subresource)))
                .or_default() += 1;
        }
    }
    let conflicts = api_log.iter().filter(|r| r.code == 409).count();
    let status_writes = api_log
        .iter()
        .filter(|r| r.resource == CICS && r.subresource == "status" && r.verb == Verb::Patch)
        .count();
    let relists = api_log
        .iter()
        .filter(|r| from_controller(r) && r.resource == CICS && r.verb == Verb::List)
        .count();
    let watches = api_log
        .iter()
        .filter(|r| r.resource == CICS && r.verb == Verb::Watch)
        .count();
    println!("soak summary ({elapsed:.1?} until every resource was final)");
    println!("  resources by plan:   {plans:?}");
    println!("  resources by end:    {ends:?}");
    println!(
        "  ECS requests:        {} ({:.2} per resource), by answer {ecs_codes:?}",
        cancels.len(),
        cancels.len() as f64 / items.len().max(1) as f64
    );
    println!("  ECS fault bursts:    {:?}", chaos.ecs_bursts);
    println!(
        "  SIGKILLs:            {} while working + 1 after the end; answers lost to them: {}",
        chaos.kills.len(),
        report.lost_to_kills
    );
    println!(
        "  PreviousAttemptMayHaveSucceeded where a lost answer had cancelled the copy: {}",
        report.previous_attempt_succeeded
    );
    println!("  API faults injected: {injected:?}");
    println!(
        "  API: {status_writes} status writes, {conflicts} answered 409, {} watch drops, {} compactions (resumed watches get 410 Gone), {watches} watches, {relists} lists ({} made to fail)",
        chaos.watch_drops, chaos.history_expiries, chaos.relist_faults
    );
    println!(
        "  histories too long to check: {}; problems: {}",
        report.truncated_histories,
        report.problems.len()
    );
}

/// Whether the controller (not this test's own client) made the request.
/// Whether the controller has consumed every LIST fault injected so far and
/// listed successfully since: only then may more come. Faults injected while
/// earlier ones wait, or while the controller backs off from them, would make
/// every LIST fail for as long as the chaos lasts: an outage, not the blip the
/// soak means (the controller waits out outages too, but the soak would then
/// measure nothing).
fn relist_recovered(log: &[ApiRecord], injected: u32) -> bool {
    let lists: Vec<&ApiRecord> = log
        .iter()
        .filter(|r| from_controller(r) && r.resource == CICS && r.verb == Verb::List)
        .collect();
    let consumed = lists.iter().filter(|r| r.injected.is_some()).count();
    consumed >= injected as usize && lists.last().is_none_or(|r| r.code == 200)
}

fn from_controller(r: &ApiRecord) -> bool {
    r.user_agent.as_deref() != Some(HARNESS_USER_AGENT)
}

fn sub(subresource: &str) -> String {
    if subresource.is_empty() {
        String::new()
    } else {
        format!("/{subresource}")
    }
}
