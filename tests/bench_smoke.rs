//! The end-to-end bench's core (`benches/e2e/harness.rs`) at N = 20 through
//! the real binary: its counts agree with the simulator's and the API's own
//! logs, the targets it judges on counts hold, and the JSON says the same.
//! A scripted ECS failure shows the counting can fail. No timed assertions:
//! the timings are only checked to be present and ordered.

#[path = "../benches/e2e/harness.rs"]
mod harness;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use copyimage_stand_ins::ecs_simulator::{FaultCount, FaultKind, FaultSpec, FaultTarget};
use copyimage_stand_ins::kube_api::Verb;
use harness::{Report, Settings, World, image_id};

const N: usize = 20;

fn settings() -> Settings {
    Settings {
        controller_bin: PathBuf::from(env!("CARGO_BIN_EXE_copyimage-canceller")),
        ecs_latency: Duration::from_millis(20),
        concurrency: 4,
        extra_args: vec![
            "--retry-base-delay".into(),
            "50ms".into(),
            "--retry-max-delay".into(),
            "200ms".into(),
        ],
        extra_env: Vec::new(),
        timeout: Duration::from_secs(120),
    }
}

fn target<'a>(report: &'a Report, name: &str) -> &'a harness::Target {
    report
        .targets
        .iter()
        .find(|t| t.name.starts_with(name))
        .unwrap_or_else(|| panic!("no target {name:?} in {:#?}", report.targets))
}

/// CancelCopyImage requests per image in the simulator's log.
fn ecs_per_image(world: &World) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for r in world.sim.requests() {
        if r.action.as_deref() == Some("CancelCopyImage")
            && let Some(image) = r.image_id
        {
            *out.entry(image).or_default() += 1;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_counts_what_the_logs_show_and_writes_it_as_json() {
    let world = World::start(&settings())
        .await
        .expect("start the bench world");
    let idle = world.idle(3).await.expect("idle samples");
    let load = world.load(N).await.expect("the load");

    // The bench's counts against the simulator's log, read here independently.
    let per_image = ecs_per_image(&world);
    let names: Vec<String> = (0..N).map(|i| format!("load-{i:06}")).collect();
    for name in &names {
        assert_eq!(
            per_image.get(&image_id(name)),
            Some(&1),
            "{name}: {per_image:?}"
        );
    }
    let c = &load.counts;
    assert_eq!(c.ecs_requests, N);
    assert_eq!((c.ecs_min_per_resource, c.ecs_max_per_resource), (1, 1));
    assert_eq!(c.resources_without_exactly_one_request, 0);
    assert_eq!(c.attempts_recorded, N as i64, "one attempt recorded each");

    // ... and against the API's log.
    let requests = world.api.requests();
    let mut status_writes: HashMap<String, usize> = HashMap::new();
    for r in &requests {
        if r.resource == "copyimagecancellations"
            && r.subresource == "status"
            && matches!(r.verb, Verb::Patch | Verb::Update)
        {
            *status_writes.entry(r.name.clone().unwrap()).or_default() += 1;
        }
    }
    assert_eq!(c.status_patches, status_writes.values().sum::<usize>());
    assert_eq!(
        c.status_patches_max_one_resource,
        status_writes.values().copied().max().unwrap()
    );
    assert!(
        c.status_patches_max_one_resource <= 2,
        "status writes per resource: {status_writes:?}"
    );
    let event_creates = requests
        .iter()
        .filter(|r| r.verb == Verb::Create && r.resource == "events")
        .count();
    assert_eq!(c.event_creates, event_creates);
    assert_eq!(c.event_creates, N, "one Cancelled Event each");
    assert_eq!(c.events_max_one_resource, 1);
    assert_eq!(c.events_per_resource, 1.0);

    assert_eq!((load.succeeded, load.failed), (N, 0));
    assert_eq!(c.final_in_api, N);
    // Timings exist and are ordered (never compared with a bound here).
    assert!(load.total_s > 0.0 && load.throughput_per_s > 0.0);
    assert!(load.p50_ms <= load.p99_ms && load.p99_ms <= load.max_ms);
    assert!(idle.p50_ms <= idle.p99_ms && idle.p99_ms <= idle.max_ms);
    assert_eq!(load.ideal_per_s, 4.0 / 0.02);
    assert!(load.rss_idle_mib > 0.0 && load.rss_peak_mib >= load.rss_idle_mib);
    world.stop().await;

    let report = Report::new("smoke".into(), Some(idle), vec![load]);
    for name in [
        "exactly 1 ECS request per resource",
        "at most 2 status writes per resource",
        "at most 1 Event per resource",
        "every resource final",
    ] {
        assert!(target(&report, name).pass, "{:#?}", report.targets);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out/bench-e2e.json");
    report.write_json(&path).expect("write the JSON");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let counts = &json["loads"][0]["counts"];
    assert_eq!(json["loads"][0]["n"], N);
    assert_eq!(counts["ecs_requests"], N);
    assert_eq!(
        counts["status_patches"],
        report.loads[0].counts.status_patches
    );
    assert_eq!(counts["event_creates"], N);
    assert_eq!(json["idle"]["samples"], 3);
    let targets = json["targets"].as_array().unwrap();
    assert_eq!(targets.len(), report.targets.len());
    let ecs = targets
        .iter()
        .find(|t| t["name"] == "exactly 1 ECS request per resource")
        .unwrap();
    assert_eq!(ecs["pass"], true);
    assert_eq!(ecs["n"], N);
    assert_eq!(json["all_met"], report.all_met);
    assert!(json["machine"]["cpus"].as_u64().unwrap() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_shows_in_the_counts_and_misses_the_target() {
    let world = World::start(&settings())
        .await
        .expect("start the bench world");
    // The third resource's first CancelCopyImage answers InternalError.
    world.sim.add_fault(FaultSpec::new(
        FaultTarget::Image(image_id("load-000002")),
        FaultKind::InternalError,
        FaultCount::Times(1),
    ));
    let load = world.load(5).await.expect("the load");
    let c = &load.counts;
    assert_eq!(c.ecs_requests, 6, "{c:#?}");
    assert_eq!((c.ecs_min_per_resource, c.ecs_max_per_resource), (1, 2));
    assert_eq!(c.resources_without_exactly_one_request, 1);
    assert_eq!(c.attempts_recorded, 6);
    assert_eq!(load.succeeded, 5, "the retry succeeded");
    // RetryScheduled, then Cancelled.
    assert_eq!(c.events_max_one_resource, 2);
    world.stop().await;
    let report = Report::new("smoke".into(), None, vec![load]);
    assert!(!target(&report, "exactly 1 ECS request per resource").pass);
    assert!(!target(&report, "at most 1 Event per resource").pass);
    assert!(target(&report, "every resource final").pass);
    assert!(!report.all_met);
}
