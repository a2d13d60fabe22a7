//! Table tests of the breaker: each row a sequence of answers at given
//! times, and what the breaker must say after each.

use super::*;

/// One step: at `t`, resource `uid` got `health` (`probe`: it was the probe).
struct Step {
    t: f64,
    uid: &'static str,
    health: Health,
    probe: bool,
    /// Expected: incident, change, open afterwards, next probe due.
    want: (bool, Option<Change>, bool, Option<f64>),
}

fn outage(err: &str) -> Health {
    Health::Outage(err.to_owned())
}
fn ie() -> Health {
    Health::InternalError("InternalError: The request processing has failed".to_owned())
}

fn step(
    t: f64,
    uid: &'static str,
    health: Health,
    probe: bool,
    want: (bool, Option<Change>, bool, Option<f64>),
) -> Step {
    Step {
        t,
        uid,
        health,
        probe,
        want,
    }
}

const OPENED: Option<Change> = Some(Change::Opened);

fn closed_after(after: f64) -> Option<Change> {
    Some(Change::Closed { after })
}

/// With jitter 1.0 the spacing is its ceiling: 1, 2, 4, 8, 10, 10 ...
#[test]
fn breaker_table() {
    use Health::Answers;
    let rows: Vec<(&str, Vec<Step>)> = vec![
        (
            "one outage-class answer from one resource opens it; the probe goes after a second",
            vec![step(
                10.0,
                "a",
                outage("connection refused"),
                false,
                (true, OPENED, true, Some(11.0)),
            )],
        ),
        (
            "answers keep it closed",
            vec![
                step(1.0, "a", Answers, false, (false, None, false, None)),
                step(2.0, "b", Answers, false, (false, None, false, None)),
            ],
        ),
        (
            "failed probes space the next one out, doubling up to the cap",
            vec![
                step(
                    0.0,
                    "a",
                    outage("refused"),
                    false,
                    (true, OPENED, true, Some(1.0)),
                ),
                step(
                    1.0,
                    "a",
                    outage("refused"),
                    true,
                    (true, None, true, Some(3.0)),
                ),
                step(
                    3.0,
                    "b",
                    outage("refused"),
                    true,
                    (true, None, true, Some(7.0)),
                ),
                step(
                    7.0,
                    "c",
                    outage("refused"),
                    true,
                    (true, None, true, Some(15.0)),
                ),
                step(
                    15.0,
                    "d",
                    outage("refused"),
                    true,
                    (true, None, true, Some(25.0)),
                ),
                step(
                    25.0,
                    "e",
                    outage("refused"),
                    true,
                    (true, None, true, Some(35.0)),
                ),
            ],
        ),
        (
            "late answers of requests sent before it opened do not move the probe",
            vec![
                step(
                    0.0,
                    "a",
                    outage("reset"),
                    false,
                    (true, OPENED, true, Some(1.0)),
                ),
                step(
                    0.5,
                    "b",
                    outage("timeout"),
                    false,
                    (true, None, true, Some(1.0)),
                ),
            ],
        ),
        (
            "the first answer that is not outage-class closes it, probe or not",
            vec![
                step(
                    0.0,
                    "a",
                    outage("503 ServiceUnavailable"),
                    false,
                    (true, OPENED, true, Some(1.0)),
                ),
                step(
                    1.0,
                    "a",
                    outage("503 ServiceUnavailable"),
                    true,
                    (true, None, true, Some(3.0)),
                ),
                step(
                    3.0,
                    "b",
                    Answers,
                    true,
                    (false, closed_after(3.0), false, None),
                ),
            ],
        ),
        (
            "a late success closes it too",
            vec![
                step(
                    0.0,
                    "a",
                    outage("reset"),
                    false,
                    (true, OPENED, true, Some(1.0)),
                ),
                step(
                    0.2,
                    "b",
                    Answers,
                    false,
                    (false, closed_after(0.2), false, None),
                ),
            ],
        ),
        (
            "one poisoned image: InternalError alone is the resource's, counted, never opens",
            vec![
                step(0.0, "poison", ie(), false, (false, None, false, None)),
                step(1.0, "poison", ie(), false, (false, None, false, None)),
                step(3.0, "poison", ie(), false, (false, None, false, None)),
            ],
        ),
        (
            "a poisoned image among answering resources never opens it",
            vec![
                step(0.0, "poison", ie(), false, (false, None, false, None)),
                step(0.1, "a", Answers, false, (false, None, false, None)),
                step(0.2, "poison", ie(), false, (false, None, false, None)),
                step(0.3, "b", Answers, false, (false, None, false, None)),
                step(0.4, "poison", ie(), false, (false, None, false, None)),
            ],
        ),
        (
            "InternalError from three resources in a row opens it; from the second on, not counted",
            vec![
                step(0.0, "a", ie(), false, (false, None, false, None)),
                step(0.1, "a", ie(), false, (false, None, false, None)),
                step(0.2, "b", ie(), false, (true, None, false, None)),
                step(0.3, "c", ie(), false, (true, OPENED, true, Some(1.3))),
                step(1.3, "d", ie(), true, (true, None, true, Some(3.3))),
                step(
                    3.3,
                    "e",
                    Answers,
                    true,
                    (false, closed_after(3.0), false, None),
                ),
            ],
        ),
        (
            "another answer between breaks the run",
            vec![
                step(0.0, "a", ie(), false, (false, None, false, None)),
                step(0.1, "b", ie(), false, (true, None, false, None)),
                step(0.2, "x", Answers, false, (false, None, false, None)),
                step(0.3, "c", ie(), false, (false, None, false, None)),
                step(0.4, "d", ie(), false, (true, None, false, None)),
            ],
        ),
        (
            "outage-class answers do not break a run of InternalError (both say the endpoint fails)",
            vec![
                step(0.0, "a", ie(), false, (false, None, false, None)),
                step(0.1, "b", ie(), false, (true, None, false, None)),
                step(
                    0.2,
                    "x",
                    outage("reset"),
                    false,
                    (true, OPENED, true, Some(1.2)),
                ),
            ],
        ),
        (
            "InternalError while open keeps it open (an incident), and a probe's is not counted",
            vec![
                step(
                    0.0,
                    "a",
                    outage("refused"),
                    false,
                    (true, OPENED, true, Some(1.0)),
                ),
                step(1.0, "a", ie(), true, (true, None, true, Some(3.0))),
            ],
        ),
        (
            "after closing, a new run starts from nothing",
            vec![
                step(0.0, "a", ie(), false, (false, None, false, None)),
                step(0.1, "b", ie(), false, (true, None, false, None)),
                step(0.2, "c", ie(), false, (true, OPENED, true, Some(1.2))),
                step(
                    1.2,
                    "c",
                    Answers,
                    true,
                    (false, closed_after(1.0), false, None),
                ),
                step(1.3, "a", ie(), false, (false, None, false, None)),
            ],
        ),
        (
            "two images failing in turn, nothing else between: each repeat is counted, never opens",
            vec![
                step(0.0, "a", ie(), false, (false, None, false, None)),
                step(0.1, "b", ie(), false, (true, None, false, None)),
                step(0.2, "a", ie(), false, (false, None, false, None)),
                step(0.3, "b", ie(), false, (false, None, false, None)),
                step(0.4, "a", ie(), false, (false, None, false, None)),
            ],
        ),
        (
            "an InternalError incident is given up when a resource already probed fails again",
            vec![
                step(0.0, "a", ie(), false, (false, None, false, None)),
                step(0.1, "b", ie(), false, (true, None, false, None)),
                step(0.2, "c", ie(), false, (true, OPENED, true, Some(1.2))),
                step(1.2, "a", ie(), true, (true, None, true, Some(3.2))),
                step(3.2, "b", ie(), true, (true, None, true, Some(7.2))),
                step(
                    7.2,
                    "a",
                    ie(),
                    true,
                    (false, Some(Change::GaveUp { after: 7.0 }), false, None),
                ),
                // From now on a's and b's are their own: counted, no run, never open.
                step(8.0, "a", ie(), false, (false, None, false, None)),
                step(8.1, "b", ie(), false, (false, None, false, None)),
                step(8.2, "a", ie(), false, (false, None, false, None)),
                // c was never probed: it still counts towards a run of others.
                step(8.3, "c", ie(), false, (false, None, false, None)),
                step(8.4, "d", ie(), false, (true, None, false, None)),
            ],
        ),
        (
            "a resource given up on is judged by the run rule again once it gets another answer",
            vec![
                step(
                    0.0,
                    "a",
                    outage("refused"),
                    false,
                    (true, OPENED, true, Some(1.0)),
                ),
                step(1.0, "a", ie(), true, (true, None, true, Some(3.0))),
                step(
                    3.0,
                    "a",
                    ie(),
                    true,
                    (false, Some(Change::GaveUp { after: 3.0 }), false, None),
                ),
                step(4.0, "a", Answers, false, (false, None, false, None)),
                step(5.0, "a", ie(), false, (false, None, false, None)),
                step(5.1, "b", ie(), false, (true, None, false, None)),
            ],
        ),
        (
            "an outage of another kind is not given up on InternalError from new resources",
            vec![
                step(
                    0.0,
                    "x",
                    outage("refused"),
                    false,
                    (true, OPENED, true, Some(1.0)),
                ),
                step(1.0, "a", ie(), true, (true, None, true, Some(3.0))),
                step(3.0, "b", ie(), true, (true, None, true, Some(7.0))),
                step(
                    7.0,
                    "c",
                    outage("refused"),
                    true,
                    (true, None, true, Some(15.0)),
                ),
            ],
        ),
    ];
    for (name, steps) in rows {
        let mut b = Breaker::new();
        for (i, s) in steps.iter().enumerate() {
            if s.probe {
                assert!(
                    b.probe_due().is_some_and(|due| due <= s.t),
                    "{name} step {i}: a probe was due"
                );
                b.probe_sent();
                assert_eq!(b.probe_due(), None, "{name} step {i}: one probe at a time");
            }
            let v = b.answered(s.t, s.uid, &s.health, s.probe, 1.0);
            let (incident, change, open, due) = s.want.clone();
            assert_eq!(v.incident, incident, "{name} step {i}: incident");
            assert_eq!(v.change, change, "{name} step {i}: change");
            assert_eq!(b.is_open(), open, "{name} step {i}: open");
            assert_eq!(b.probe_due(), due, "{name} step {i}: next probe");
        }
    }
}

#[test]
fn the_outage_names_its_start_and_last_error() {
    let mut b = Breaker::new();
    assert_eq!(b.outage(), None);
    b.answered(5.0, "a", &outage("connection refused"), false, 0.0);
    b.answered(6.0, "b", &outage("HTTP 503 ServiceUnavailable"), false, 0.0);
    assert_eq!(b.outage(), Some((5.0, "HTTP 503 ServiceUnavailable")));
}

#[test]
fn an_unused_probe_makes_room_for_the_next_at_once() {
    let mut b = Breaker::new();
    b.answered(0.0, "a", &outage("refused"), false, 1.0);
    b.probe_sent();
    assert_eq!(b.probe_due(), None);
    b.probe_unused(4.0);
    assert_eq!(b.probe_due(), Some(4.0));
    // Not when no probe was out.
    b.probe_unused(9.0);
    assert_eq!(b.probe_due(), Some(4.0));
}

#[test]
fn probe_spacing_table() {
    let rows = [
        (0, 0.0, 0.5),
        (0, 1.0, 1.0),
        (1, 0.5, 1.5),
        (3, 1.0, 8.0),
        (4, 0.0, 5.0),
        (4, 1.0, 10.0),
        (40, 1.0, 10.0),
        (2, 7.0, 4.0),
        (2, -1.0, 2.0),
    ];
    for (failed, jitter, want) in rows {
        assert_eq!(probe_spacing(failed, jitter), want, "{failed} {jitter}");
    }
}

/// Over a 60 s outage with the slowest-growing draw (jitter 0), probes come
/// no faster than the spacing allows: the count is the spacing's sum.
#[test]
fn a_minute_of_outage_costs_a_handful_of_probes() {
    for jitter in [0.0, 0.5, 1.0] {
        let mut b = Breaker::new();
        b.answered(0.0, "a", &outage("refused"), false, jitter);
        let mut probes = 0;
        while let Some(due) = b.probe_due().filter(|due| *due < 60.0) {
            b.probe_sent();
            b.answered(due, "a", &outage("refused"), true, jitter);
            probes += 1;
        }
        assert!(probes <= 14, "jitter {jitter}: {probes} probes in a minute");
        assert!(probes >= 6, "jitter {jitter}: {probes} probes in a minute");
    }
}
