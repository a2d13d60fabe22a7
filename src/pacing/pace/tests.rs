//! The pace as tables (one row per case) and as closed loops against a model
//! of the service's quota, all on a clock of plain numbers: no sleeps.

use std::collections::BinaryHeap;
use std::time::Duration;

use super::*;

const THROTTLED: Answer = Answer::Throttled { retry_after: None };

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

/// A pace that has accepted `n` answers spread over the second before `t`.
fn with_accepted(mut pace: Pace, n: usize, t: f64) -> Pace {
    for i in 0..n {
        let at = t - 0.999 + 0.999 * i as f64 / n as f64;
        pace.answered(at, at - 0.02, Answer::Accepted, at - 0.01);
    }
    pace
}

#[test]
fn no_limit_until_the_service_throttles() {
    let mut pace = Pace::new(true, None);
    assert_eq!(pace.rate(0.0), None);
    // A thousand requests in one millisecond: nothing holds them.
    for i in 0..1000 {
        assert_eq!(pace.take(f64::from(i) * 1e-6), Ok(()));
    }
    assert!(!pace.is_adapted());
    // Other answers, and transport failures, do not engage it.
    assert_eq!(pace.answered(0.01, 0.0, Answer::Accepted, 1.0), None);
    assert_eq!(pace.answered(0.01, 0.0, Answer::Unknown, 1.0), None);
    assert_eq!(pace.rate(0.02), None);
}

#[test]
fn a_throttling_answer_cuts_to_beta_of_what_was_accepted_and_pauses_to_the_second() {
    // (accepted in the last second, pace before, time left in the second) -> (rate, pause)
    let rows: [(usize, Option<Ceiling>, f64, f64, f64); 4] = [
        // Unpaced: the service accepted 50 in the last second.
        (50, None, 0.7, 35.0, 0.7),
        (200, None, 0.25, 140.0, 0.25),
        // Nothing accepted (the minute's quota is spent): the floor.
        (0, None, 0.5, MIN_RATE, 0.5),
        // A ceiling below what was accepted is what was offered: cut from it.
        (
            100,
            Some(Ceiling {
                rate: 40.0,
                burst: 1,
            }),
            0.1,
            28.0,
            0.1,
        ),
    ];
    for (accepted, ceiling, to_end, rate, pause) in rows {
        let mut pace = with_accepted(Pace::new(true, ceiling), accepted, 10.0);
        let reaction = pace.answered(10.0, 9.98, THROTTLED, 10.0 + to_end);
        let Some(Reaction::Cut { rate: r, pause: p }) = reaction else {
            panic!("{accepted}: {reaction:?}");
        };
        assert!(close(r, rate) && close(p, pause), "{accepted}: {r} {p}");
        assert!(pace.is_adapted());
        // Nothing goes before the second ends.
        assert_eq!(pace.take(10.0 + to_end / 2.0), Err(10.0 + to_end));
        assert_eq!(pace.take(10.0 + to_end), Ok(()));
    }
}

#[test]
fn throttling_answers_to_requests_sent_before_the_cut_are_ignored() {
    let mut pace = with_accepted(Pace::new(true, None), 50, 1.0);
    assert!(matches!(
        pace.answered(1.0, 0.98, THROTTLED, 1.5),
        Some(Reaction::Cut { .. })
    ));
    let rate = pace.rate(1.0);
    // Sixteen more answers to requests that were in flight at the cut.
    for i in 0..16 {
        let t = 1.0 + f64::from(i) * 0.001;
        assert_eq!(
            pace.answered(t, 0.99, THROTTLED, 1.5),
            Some(Reaction::Ignored)
        );
    }
    assert_eq!(pace.rate(1.0), rate);
    // One sent after the cut is news.
    assert!(matches!(
        pace.answered(2.0, 1.6, THROTTLED, 3.0),
        Some(Reaction::Cut { .. })
    ));
}

#[test]
fn a_cut_is_undone_when_a_later_request_in_the_same_window_is_accepted() {
    // (sent at, window end) of the accepted answer -> undone?
    let rows = [
        // Sent after the throttled one (10.40), in its window (ends 11.0): a
        // spent window would have refused it, so the throttling was not the quota.
        (10.45, 11.0, true),
        // Sent before the throttled one: says nothing about after.
        (10.35, 11.0, false),
        // In the next window: a fresh quota, says nothing about the last.
        (11.05, 12.0, false),
    ];
    for (sent_at, window_end, undone) in rows {
        let mut pace = with_accepted(Pace::new(true, None), 50, 10.4);
        let before = pace.rate(10.45);
        let reaction = pace.answered(10.42, 10.40, THROTTLED, 11.0);
        assert!(matches!(reaction, Some(Reaction::Cut { .. })));
        let got = pace.answered(11.1, sent_at, Answer::Accepted, window_end);
        assert_eq!(got == Some(Reaction::Undone), undone, "sent at {sent_at}");
        if undone {
            // The pace from before the cut (none: unpaced), and no pause.
            assert_eq!(pace.rate(10.45), before);
            assert!(!pace.is_adapted());
            assert_eq!(pace.take(10.5), Ok(()));
        } else {
            assert!(pace.is_adapted());
        }
    }
    // A retry-after floor that came with the undone cut stays.
    let mut pace = with_accepted(Pace::new(true, None), 50, 10.4);
    let floor = Answer::Throttled {
        retry_after: Some(Duration::from_secs(2)),
    };
    pace.answered(10.42, 10.40, floor, 11.0);
    assert_eq!(
        pace.answered(10.5, 10.45, Answer::Accepted, 11.0),
        Some(Reaction::Undone)
    );
    assert_eq!(pace.take(11.0), Err(12.42));
}

#[test]
fn stray_throttling_does_not_sink_the_pace() {
    // One request in ten refused at random (not a quota): cuts are taken back
    // by the accepted requests sent after them, and a backlog still drains at
    // the rate of its concurrency, not at the floor.
    let mut pace = Pace::new(true, None);
    let (mut t, mut sent) = (0.0, 0u32);
    let mut in_flight: Vec<(f64, f64, Answer)> = Vec::new();
    while t < 20.0 {
        if pace.take(t).is_ok() {
            sent += 1;
            let answer = if sent % 10 == 0 {
                THROTTLED
            } else {
                Answer::Accepted
            };
            in_flight.push((t + 0.02, t, answer));
        }
        t += 0.005;
        in_flight.retain(|&(at, sent_at, answer)| {
            if at <= t {
                pace.answered(at, sent_at, answer, (sent_at + 1e-9).ceil());
                false
            } else {
                true
            }
        });
    }
    // 200 a second offered for 20 s.
    assert!(sent >= 3600, "{sent} sent");
}

#[test]
fn the_pace_grows_back_along_the_cubic_and_probes_above() {
    let mut pace = with_accepted(Pace::new(true, None), 100, 0.0);
    pace.answered(0.0, -0.01, THROTTLED, 0.0);
    let k = (100.0 * (1.0 - BETA) / CUBIC_C).cbrt();
    // Keep sending at the pace so that the growth is not capped.
    let mut t = 0.0;
    let mut rates = Vec::new();
    while t < k + 3.0 {
        let rate = pace.rate(t).unwrap();
        assert_eq!(pace.take(t), Ok(()));
        rates.push((t, rate));
        t += 1.0 / rate;
    }
    let at = |when: f64| {
        rates
            .iter()
            .min_by(|a, b| (a.0 - when).abs().total_cmp(&(b.0 - when).abs()))
            .unwrap()
            .1
    };
    assert!(close(at(0.0), 70.0));
    // Concave up to w_max, flat around it, then above it.
    assert!((at(k) - 100.0).abs() < 0.5, "{}", at(k));
    assert!(at(k / 2.0) > 85.0 && at(k / 2.0) < 100.0);
    assert!(at(k + 3.0) > 105.0);
    assert!(rates.windows(2).all(|w| w[1].1 >= w[0].1 - 1e-9));
}

#[test]
fn growth_is_capped_at_twice_what_is_actually_sent() {
    let mut pace = with_accepted(Pace::new(true, None), 100, 0.0);
    pace.answered(0.0, -0.01, THROTTLED, 0.0);
    // A minute later with nothing sent: the curve says thousands, the cap
    // says twice w_max (nothing sent is below w_max).
    assert!(close(pace.rate(60.0).unwrap(), 200.0));
    // Sending 150 in a second raises the cap to 300.
    for i in 0..150 {
        pace.sent.push(60.0 + f64::from(i) / 150.0);
    }
    assert!(close(pace.rate(60.999).unwrap(), 300.0));
}

#[test]
fn the_schedule_spaces_requests_and_catches_up_on_a_late_timer() {
    let mut pace = Pace::new(
        true,
        Some(Ceiling {
            rate: 10.0,
            burst: 1,
        }),
    );
    assert_eq!(pace.take(0.0), Ok(()));
    assert_eq!(pace.take(0.05), Err(0.08));
    // A timer 15 ms late keeps the schedule (0.1, 0.2, ...), not 0.115 + 0.1.
    assert_eq!(pace.take(0.095), Ok(()));
    assert_eq!(pace.take(0.18), Ok(()));
    assert_eq!(pace.take(0.19), Err(0.28));
}

#[test]
fn the_ceiling_allows_its_burst_then_its_rate() {
    let mut pace = Pace::new(
        true,
        Some(Ceiling {
            rate: 5.0,
            burst: 3,
        }),
    );
    assert_eq!(pace.rate(0.0), Some(5.0));
    for _ in 0..3 {
        assert_eq!(pace.take(0.0), Ok(()));
    }
    let Err(at) = pace.take(0.0) else {
        panic!("a fourth request went at once")
    };
    assert!(close(at, 0.2 - 0.02), "{at}");
    // Adapted below the ceiling, the adaptive pace decides.
    let mut pace = with_accepted(pace, 4, 1.0);
    pace.answered(1.0, 0.9, THROTTLED, 1.0);
    assert!(close(pace.rate(1.0).unwrap(), 4.0 * BETA));
}

#[test]
fn retry_after_is_a_floor_even_when_the_answer_is_stale_or_pacing_is_off() {
    // (adaptive, sent before the last cut, x-acs-retry-after) -> next slot
    for adaptive in [true, false] {
        let mut pace = Pace::new(adaptive, None);
        let reaction = pace.answered(
            5.0,
            4.9,
            Answer::Throttled {
                retry_after: Some(Duration::from_millis(2500)),
            },
            5.1,
        );
        assert_eq!(pace.take(7.0), Err(7.5), "adaptive {adaptive}");
        assert_eq!(pace.take(7.5), Ok(()), "adaptive {adaptive}");
        assert_eq!(pace.is_adapted(), adaptive);
        if !adaptive {
            assert_eq!(reaction, Some(Reaction::Ignored));
            assert_eq!(pace.rate(8.0), None);
        }
    }
}

/// The service's quota as the simulator keeps it: calls counted in windows
/// aligned to the clock's seconds; a call past the limit is throttled and
/// does not count.
struct ModelQuota {
    per_second: Box<dyn Fn(f64) -> u32>,
    window: i64,
    used: u32,
}

impl ModelQuota {
    fn call(&mut self, t: f64) -> Answer {
        let window = t.floor() as i64;
        if window != self.window {
            self.window = window;
            self.used = 0;
        }
        if self.used < (self.per_second)(t) {
            self.used += 1;
            Answer::Accepted
        } else {
            THROTTLED
        }
    }
}

/// One request in flight: when its answer comes, when it was sent, the answer.
#[derive(PartialEq)]
struct InFlight(f64, f64, Answer);

impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Earliest answer first (a max-heap, reversed).
        other.0.total_cmp(&self.0)
    }
}

/// What a backlog drained against a model quota came to.
#[derive(Debug)]
struct Drain {
    seconds: f64,
    requests: u32,
    throttled: u32,
    /// (second, requests sent in it, throttled among them).
    per_second: Vec<(i64, u32, u32)>,
}

/// Drains `n` requests, `concurrency` at a time with `latency` each, against
/// `quota`, starting at `start` (mid-second, as a real start is), retrying a
/// throttled one as soon as the pace allows.
fn drain(n: u32, concurrency: usize, latency: f64, quota: ModelQuota, start: f64) -> Drain {
    let mut quota = quota;
    let mut pace = Pace::new(true, None);
    let mut in_flight = BinaryHeap::new();
    let (mut pending, mut done, mut t) = (n, 0, start);
    let (mut requests, mut throttled) = (0, 0);
    let mut per_second: Vec<(i64, u32, u32)> = Vec::new();
    while done < n {
        assert!(t < start + 600.0, "did not drain: {done} of {n}");
        let mut next_try = f64::INFINITY;
        while pending > 0 && in_flight.len() < concurrency {
            match pace.take(t) {
                Ok(()) => {
                    let answer = quota.call(t);
                    let second = t.floor() as i64;
                    if per_second.last().is_none_or(|s| s.0 != second) {
                        per_second.push((second, 0, 0));
                    }
                    let slot = per_second.last_mut().unwrap();
                    slot.1 += 1;
                    requests += 1;
                    if answer != Answer::Accepted {
                        slot.2 += 1;
                        throttled += 1;
                    }
                    in_flight.push(InFlight(t + latency, t, answer));
                    pending -= 1;
                }
                Err(at) => {
                    next_try = at;
                    break;
                }
            }
        }
        let next_answer = in_flight.peek().map_or(f64::INFINITY, |f| f.0);
        t = next_try.min(next_answer);
        while in_flight.peek().is_some_and(|f| f.0 <= t) {
            let InFlight(at, sent, answer) = in_flight.pop().unwrap();
            // The window of the second it was sent in (a send at a whole
            // second counts in the window that starts there).
            pace.answered(at, sent, answer, (sent + 1e-9).ceil());
            if answer == Answer::Accepted {
                done += 1;
            } else {
                pending += 1;
            }
        }
    }
    Drain {
        seconds: t - start,
        requests,
        throttled,
        per_second,
    }
}

fn fixed(q: u32) -> ModelQuota {
    ModelQuota {
        per_second: Box::new(move |_| q),
        window: i64::MIN,
        used: 0,
    }
}

#[test]
fn a_backlog_drains_near_the_quota_with_few_throttled_answers() {
    // (quota per second, backlog, concurrency, latency)
    for (q, n, concurrency, latency) in [
        (50, 2000, 16, 0.02),
        (200, 2000, 16, 0.02),
        (200, 4000, 64, 0.02),
        (20, 600, 16, 0.05),
    ] {
        let d = drain(n, concurrency, latency, fixed(q), 0.37);
        let ideal = f64::from(n) / f64::from(q);
        let share = f64::from(d.throttled) / f64::from(d.requests);
        eprintln!(
            "quota {q}/s, {n} requests: {:.2} s ({:.3} of ideal), {} of {} throttled",
            d.seconds,
            d.seconds / ideal,
            d.throttled,
            d.requests
        );
        assert!(
            d.seconds <= 1.25 * ideal && share <= 0.05,
            "quota {q}/s, {n} requests: {:.1} s (ideal {ideal:.1} s), {} of {} throttled",
            d.seconds,
            d.throttled,
            d.requests
        );
    }
}

#[test]
fn a_halved_quota_is_found_again_within_ten_seconds() {
    let quota = ModelQuota {
        per_second: Box::new(|t| if t < 10.0 { 200 } else { 100 }),
        window: i64::MIN,
        used: 0,
    };
    let d = drain(4000, 16, 0.02, quota, 0.37);
    // From ten seconds after the change to the end, every second's throttled
    // share is under 5 %.
    let late: Vec<_> = d
        .per_second
        .iter()
        .filter(|(s, sent, _)| *s >= 20 && *sent > 0)
        .collect();
    assert!(late.len() >= 10, "{:?}", d.per_second);
    let (sent, throttled) = late.iter().fold((0, 0), |(a, b), (_, s, t)| (a + s, b + t));
    assert!(
        f64::from(throttled) / f64::from(sent) < 0.05,
        "{throttled} of {sent} throttled after the change settled: {:?}",
        d.per_second
    );
    // And it kept using the new quota: at least 80 % of it.
    assert!(f64::from(sent) / late.len() as f64 >= 80.0, "{late:?}");
}
