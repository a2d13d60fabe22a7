//! The pacer's outage shell (the breaker's queue, probes and release), on
//! tokio's paused clock: time only moves when every task waits.

use std::time::Duration;

use super::breaker::Health;
use super::*;
use crate::test_support::assert_lines;

const KEY: &str = "LTAI5tPacerTestKeyId01";
const REGION: &str = "cn-hangzhou";
const OTHER_REGION: &str = "eu-central-1";

fn refused() -> Health {
    Health::Outage("TransportError: could not connect to ecs: connection refused".into())
}

fn now(slot: Slot) -> Grant {
    match slot {
        Slot::Now(grant) => grant,
        other => panic!("expected a slot at once, got {other:?}"),
    }
}

fn held(slot: Slot) -> (HeldTicket, EndpointOutage) {
    match slot {
        Slot::Unavailable(ticket, outage) => (ticket, outage),
        other => panic!("expected to be held by the outage, got {other:?}"),
    }
}

/// Opens `REGION`'s breaker with one refused answer.
fn open(pacer: &Arc<Pacer>) {
    let grant = now(pacer.slot(KEY, REGION, "first"));
    let (incident, outage) = pacer.answered_by_endpoint(grant, Answer::Unknown, refused());
    assert_eq!(incident, Incident::Yes);
    assert!(outage.is_some(), "one outage-class answer opens it");
}

#[tokio::test(start_paused = true)]
async fn an_outage_holds_the_region_and_names_it_other_regions_go_on() {
    let metrics = Arc::new(Metrics::default());
    let pacer = Pacer::new(PacingConfig::default(), Some(metrics.clone()));
    open(&pacer);
    let (_ticket, outage) = held(pacer.slot(KEY, REGION, "a"));
    assert_eq!(outage.region, REGION);
    assert!(
        outage.last_error.contains("connection refused"),
        "{outage:?}"
    );
    assert_eq!(pacer.endpoint_outage(REGION), Some(outage));
    // Another region is not held up.
    let _ = now(pacer.slot(KEY, OTHER_REGION, "b"));
    assert_eq!(pacer.endpoint_outage(OTHER_REGION), None);
    assert_lines(
        &metrics.encode(),
        [
            "copyimage_canceller_ecs_endpoint_available{region=\"cn-hangzhou\"} 0",
            "copyimage_canceller_ecs_requests_held_total{region=\"cn-hangzhou\"} 1",
        ],
    );
}

#[tokio::test(start_paused = true)]
async fn one_probe_at_a_time_to_the_longest_waiter_then_all_go_in_order() {
    let metrics = Arc::new(Metrics::default());
    let pacer = Pacer::new(PacingConfig::default(), Some(metrics.clone()));
    open(&pacer);
    let (a, _) = held(pacer.slot(KEY, REGION, "a"));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let (b, _) = held(pacer.slot(KEY, REGION, "b"));
    let (c, _) = held(pacer.slot(KEY, REGION, "c"));
    // The first probe goes to the longest waiter, within the first spacing.
    let started = tokio::time::Instant::now();
    let Some(Release::Probe(probe)) = a.released().await else {
        panic!("a waited longest: it probes");
    };
    assert!(started.elapsed() <= Duration::from_secs(1));
    assert!(probe.is_probe());
    // It fails: the endpoint stays unavailable; a goes to the back.
    let (_, outage) = pacer.answered_by_endpoint(probe, Answer::Unknown, refused());
    assert!(outage.is_some());
    let (a, _) = held(pacer.slot(KEY, REGION, "a"));
    // The next probe is b's, no sooner than half the doubled spacing (1 s).
    let failed_at = tokio::time::Instant::now();
    let Some(Release::Probe(probe)) = b.released().await else {
        panic!("b is next");
    };
    assert!(
        failed_at.elapsed() >= Duration::from_secs(1),
        "{:?}",
        failed_at.elapsed()
    );
    // b's probe is answered: the outage ends, everyone goes.
    let (incident, outage) = pacer.answered_by_endpoint(probe, Answer::Accepted, Health::Answers);
    assert_eq!((incident, outage), (Incident::No, None));
    assert!(matches!(c.released().await, Some(Release::Closed)));
    assert!(matches!(a.released().await, Some(Release::Closed)));
    let _ = now(pacer.slot(KEY, REGION, "a"));
    let text = metrics.encode();
    assert_lines(
        &text,
        [
            "copyimage_canceller_ecs_endpoint_available{region=\"cn-hangzhou\"} 1",
            "copyimage_canceller_ecs_requests_held_total{region=\"cn-hangzhou\"} 4",
        ],
    );
    let seconds: f64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("copyimage_canceller_ecs_outage_seconds_total{region=\"cn-hangzhou\"} ")
        })
        .expect("outage seconds")
        .parse()
        .unwrap();
    assert!(seconds >= 1.0, "{seconds}");
}

#[tokio::test(start_paused = true)]
async fn an_unused_probe_passes_to_the_next_waiter_at_once() {
    let pacer = Pacer::new(PacingConfig::default(), None);
    open(&pacer);
    let (a, _) = held(pacer.slot(KEY, REGION, "a"));
    let (b, _) = held(pacer.slot(KEY, REGION, "b"));
    let Some(Release::Probe(probe)) = a.released().await else {
        panic!("a probes");
    };
    // Its write-ahead lost a race: the grant is dropped unanswered.
    let dropped_at = tokio::time::Instant::now();
    drop(probe);
    let Some(Release::Probe(_probe)) = b.released().await else {
        panic!("b probes");
    };
    assert_eq!(dropped_at.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_that_gave_up_is_skipped_for_the_probe() {
    let pacer = Pacer::new(PacingConfig::default(), None);
    open(&pacer);
    let (a, _) = held(pacer.slot(KEY, REGION, "a"));
    let (b, _) = held(pacer.slot(KEY, REGION, "b"));
    drop(a);
    assert!(matches!(b.released().await, Some(Release::Probe(_))));
}

#[tokio::test(start_paused = true)]
async fn shutting_down_releases_every_held_resource_with_nothing_sent() {
    let pacer = Pacer::new(PacingConfig::default(), None);
    open(&pacer);
    let (a, _) = held(pacer.slot(KEY, REGION, "a"));
    pacer.close();
    assert!(a.released().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn internal_errors_across_resources_are_an_incident_then_open_it() {
    let pacer = Pacer::new(PacingConfig::default(), None);
    let ie = || Health::InternalError("InternalError (HTTP 500)".into());
    let mut verdicts = Vec::new();
    for uid in ["a", "b", "c"] {
        let grant = now(pacer.slot(KEY, REGION, uid));
        verdicts.push(pacer.answered_by_endpoint(grant, Answer::Accepted, ie()));
    }
    assert_eq!(verdicts[0], (Incident::No, None));
    assert_eq!(verdicts[1], (Incident::Yes, None));
    assert_eq!(verdicts[2].0, Incident::Yes);
    assert!(
        verdicts[2].1.is_some(),
        "the third resource in a row opens it"
    );
    let _ = held(pacer.slot(KEY, REGION, "d"));
}

#[tokio::test(start_paused = true)]
async fn without_pacing_the_breaker_still_holds() {
    let config = PacingConfig {
        adaptive: false,
        ceiling: None,
    };
    let pacer = Pacer::new(config, None);
    open(&pacer);
    let _ = held(pacer.slot(KEY, REGION, "a"));
}

#[tokio::test(start_paused = true)]
async fn a_new_pacer_trusts_every_endpoint() {
    // What a new leader starts with.
    let pacer = Pacer::new(PacingConfig::default(), None);
    assert_eq!(pacer.endpoint_outage(REGION), None);
    let _ = now(pacer.slot(KEY, REGION, "a"));
}
