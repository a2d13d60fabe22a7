//! The pacer's queue, scopes and reports, on tokio's paused clock: time only
//! moves when every task waits, so no test sleeps for real.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::*;
use crate::test_support::assert_lines;

const KEY: &str = "LTAI5tPacerTestKeyId01";
const OTHER_KEY: &str = "LTAI5tPacerTestKeyId02";
const REGION: &str = "cn-hangzhou";
const THROTTLED: Answer = Answer::Throttled { retry_after: None };

fn now(slot: Slot) -> Grant {
    match slot {
        Slot::Now(grant) => grant,
        Slot::Queued(_) => panic!("queued, expected a slot at once"),
        Slot::Unavailable(..) => panic!("held by an outage, expected a slot at once"),
    }
}

fn queued(slot: Slot) -> Ticket {
    match slot {
        Slot::Queued(ticket) => ticket,
        Slot::Now(grant) => panic!("a slot at once ({grant:?}), expected a queue"),
        Slot::Unavailable(..) => panic!("held by an outage, expected the pace's queue"),
    }
}

/// Waits in the queue `slot` joins until the pace grants the turn.
async fn turn(slot: Slot) -> Grant {
    queued(slot).granted().await.expect("granted")
}

/// Ten accepted answers then a throttled one: the scope is paced at 7/s.
fn adapt(pacer: &Arc<Pacer>, key: &str, region: &str) {
    for i in 0..10 {
        let grant = now(pacer.slot(key, region, &format!("warm-up-{i}")));
        pacer.answered(grant, Answer::Accepted);
    }
    let grant = now(pacer.slot(key, region, "throttled"));
    pacer.answered(grant, THROTTLED);
}

/// The UIDs in the order their tickets are granted.
async fn grant_order(tickets: Vec<(&'static str, Ticket)>) -> Vec<&'static str> {
    let mut waiting: FuturesUnordered<_> = tickets
        .into_iter()
        .map(|(uid, ticket)| async move {
            let grant = ticket.granted().await.expect("granted");
            assert_eq!(grant.uid, uid);
            uid
        })
        .collect();
    let mut order = Vec::new();
    while let Some(uid) = waiting.next().await {
        order.push(uid);
    }
    order
}

#[tokio::test(start_paused = true)]
async fn unthrottled_scopes_send_at_once() {
    let pacer = Pacer::new(PacingConfig::default(), None);
    for i in 0..500 {
        let grant = now(pacer.slot(KEY, REGION, &format!("r{i}")));
        assert_eq!(grant.waited, Duration::ZERO);
        pacer.answered(grant, Answer::Accepted);
    }
    assert_eq!(pacer.scopes(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_resource_that_has_waited_longest_goes_next() {
    let pacer = Pacer::new(PacingConfig::default(), None);
    adapt(&pacer, KEY, REGION);
    // `old` asks first, is throttled, and asks again after `b` and `c`
    // queued: it keeps its place ahead of them.
    let first = queued(pacer.slot(KEY, REGION, "old"));
    let grant = first.granted().await.expect("granted");
    tokio::time::advance(Duration::from_millis(10)).await;
    let b = queued(pacer.slot(KEY, REGION, "b"));
    tokio::time::advance(Duration::from_millis(10)).await;
    let c = queued(pacer.slot(KEY, REGION, "c"));
    pacer.answered(grant, THROTTLED);
    tokio::time::advance(Duration::from_millis(10)).await;
    let old = queued(pacer.slot(KEY, REGION, "old"));
    assert_eq!(
        grant_order(vec![("c", c), ("b", b), ("old", old)]).await,
        ["old", "b", "c"]
    );
}

#[tokio::test(start_paused = true)]
async fn an_answer_other_than_throttling_ends_the_wait() {
    let pacer = Pacer::new(PacingConfig::default(), None);
    adapt(&pacer, KEY, REGION);
    let early = turn(pacer.slot(KEY, REGION, "retried")).await;
    pacer.answered(early, Answer::Accepted);
    tokio::time::advance(Duration::from_millis(10)).await;
    let b = queued(pacer.slot(KEY, REGION, "b"));
    tokio::time::advance(Duration::from_millis(10)).await;
    // Its InternalError retry is a new wait: behind `b`.
    let again = queued(pacer.slot(KEY, REGION, "retried"));
    assert_eq!(
        grant_order(vec![("retried", again), ("b", b)]).await,
        ["b", "retried"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_waiter_that_gives_up_takes_no_slot() {
    let pacer = Pacer::new(PacingConfig::default(), None);
    adapt(&pacer, KEY, REGION);
    let gone = queued(pacer.slot(KEY, REGION, "deleted"));
    let kept = queued(pacer.slot(KEY, REGION, "kept"));
    drop(gone);
    let started = Instant::now();
    let grant = kept.granted().await.expect("granted");
    // The first slot after the cut's pause (under a second), not the second one.
    assert!(started.elapsed() < Duration::from_secs(1), "{grant:?}");
    assert!(grant.waited < Duration::from_secs(1), "{grant:?}");
}

#[tokio::test(start_paused = true)]
async fn scopes_are_per_access_key_and_region() {
    let pacer = Pacer::new(PacingConfig::default(), None);
    adapt(&pacer, KEY, REGION);
    let _waiting = queued(pacer.slot(KEY, REGION, "paced"));
    // Another account in the same region, and the same account elsewhere,
    // are not slowed.
    for _ in 0..50 {
        now(pacer.slot(OTHER_KEY, REGION, "other-key"));
        now(pacer.slot(KEY, "eu-central-1", "other-region"));
    }
    assert_eq!(pacer.scopes(), 3);
}

#[tokio::test(start_paused = true)]
async fn an_idle_scope_is_dropped_and_starts_again_unpaced() {
    let pacer = Pacer::new(PacingConfig::default(), None);
    adapt(&pacer, KEY, REGION);
    turn(pacer.slot(KEY, REGION, "paced")).await;
    tokio::time::advance(IDLE_SCOPE + SWEEP_EVERY).await;
    // Any request sweeps; the idle scope goes.
    now(pacer.slot(OTHER_KEY, REGION, "sweeper"));
    assert_eq!(pacer.scopes(), 1);
    for i in 0..20 {
        now(pacer.slot(KEY, REGION, &format!("fresh-{i}")));
    }
}

#[tokio::test(start_paused = true)]
async fn pacing_off_never_holds_a_request_but_the_ceiling_does() {
    let pacer = Pacer::new(
        PacingConfig {
            adaptive: false,
            ceiling: None,
        },
        None,
    );
    adapt(&pacer, KEY, REGION);
    for i in 0..100 {
        now(pacer.slot(KEY, REGION, &format!("r{i}")));
    }
    // Nothing paced, nothing kept.
    assert_eq!(pacer.scopes(), 0);
    let capped = Pacer::new(
        PacingConfig {
            adaptive: false,
            ceiling: Some(Ceiling {
                rate: 10.0,
                burst: 2,
            }),
        },
        None,
    );
    now(capped.slot(KEY, REGION, "a"));
    now(capped.slot(KEY, REGION, "b"));
    let started = Instant::now();
    turn(capped.slot(KEY, REGION, "c")).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(70) && waited <= Duration::from_millis(110),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn reports_go_to_metrics_by_region_and_never_name_the_key() {
    let metrics = Arc::new(Metrics::default());
    let pacer = Pacer::new(PacingConfig::default(), Some(metrics.clone()));
    adapt(&pacer, KEY, REGION);
    let waited = turn(pacer.slot(KEY, REGION, "paced")).await;
    pacer.answered(waited, Answer::Accepted);
    let text = metrics.encode();
    assert_lines(
        &text,
        [
            "copyimage_canceller_ecs_throttled_total{region=\"cn-hangzhou\"} 1",
            "copyimage_canceller_ecs_pace_wait_seconds_count{region=\"cn-hangzhou\"} 12",
        ],
    );
    assert!(
        text.lines().any(|l| l.starts_with(
            "copyimage_canceller_ecs_pace_requests_per_second{region=\"cn-hangzhou\"} "
        )),
        "{text}"
    );
    let debug = format!("{pacer:?}");
    for shown in [&text, &debug] {
        assert!(!shown.contains(KEY), "{shown}");
        assert!(!shown.contains("LTAI"), "{shown}");
    }
}

#[tokio::test(start_paused = true)]
async fn closing_releases_every_waiter_and_gives_no_more_slots() {
    let pacer = Pacer::new(PacingConfig::default(), None);
    adapt(&pacer, KEY, REGION);
    let waiting: Vec<Ticket> = (0..5)
        .map(|i| queued(pacer.slot(KEY, REGION, &format!("w{i}"))))
        .collect();
    pacer.close();
    for ticket in waiting {
        assert!(ticket.granted().await.is_none());
    }
    // Even a scope never throttled gives nothing now.
    assert!(
        queued(pacer.slot(OTHER_KEY, REGION, "late"))
            .granted()
            .await
            .is_none()
    );
}
