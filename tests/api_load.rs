//! API-server load: what the real `copyimage-canceller run` binary asks the
//! Kubernetes API for while it works through many resources, counted by the
//! in-process API. The controller reads from its watch caches only (no GET or
//! LIST per reconcile), writes only the status subresource, and its
//! list/watch traffic does not grow with the number of resources. When the
//! API server answers 429 (API Priority and Fairness), the controller waits
//! the Retry-After it was given before asking again, and never sends a
//! second CancelCopyImage because of it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use copyimage_stand_ins::AccessKey;
use copyimage_stand_ins::ecs_simulator::{FaultCount, FaultKind};
use copyimage_stand_ins::kube_api::{Fault, RequestRecord, Verb};
use kube::ResourceExt;
use kube::api::ListParams;

const CICS: &str = "copyimagecancellations";
const SECRETS: &str = "secrets";
const EVENTS: &str = "events";

/// What one load run asked of the API server (the controller's requests only).
struct Load {
    resources: usize,
    requests: Vec<RequestRecord>,
}

impl Load {
    fn count(&self, verb: Verb, resource: &str, subresource: &str) -> usize {
        self.requests
            .iter()
            .filter(|r| r.verb == verb && r.resource == resource && r.subresource == subresource)
            .count()
    }

    /// Status PATCHes of one resource, by answer code.
    fn status_patches(&self, name: &str) -> Vec<u16> {
        self.requests
            .iter()
            .filter(|r| {
                r.verb == Verb::Patch
                    && r.resource == CICS
                    && r.subresource == "status"
                    && r.name.as_deref() == Some(name)
            })
            .map(|r| r.code)
            .collect()
    }

    /// The counts table: one row per (verb, resource, subresource), answered
    /// 2xx and otherwise, with the per-resource rate.
    fn table(&self) -> String {
        let mut rows: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
        for r in &self.requests {
            let resource = if r.subresource.is_empty() {
                r.resource.clone()
            } else {
                format!("{}/{}", r.resource, r.subresource)
            };
            let row = rows
                .entry((format!("{:?}", r.verb).to_uppercase(), resource))
                .or_default();
            if (200..300).contains(&r.code) {
                row.0 += 1;
            } else {
                row.1 += 1;
            }
        }
        let mut out = format!(
            "API requests by the controller for {} resources\n{:<8} {:<32} {:>6} {:>6} {:>12}\n",
            self.resources, "verb", "resource", "2xx", "other", "per resource"
        );
        for ((verb, resource), (ok, other)) in rows {
            out.push_str(&format!(
                "{verb:<8} {resource:<32} {ok:>6} {other:>6} {:>12.2}\n",
                (ok + other) as f64 / self.resources as f64
            ));
        }
        out
    }
}

/// Creates `n` resources (one retried twice after InternalError, every
/// fifth signing with its own Secret; the last tenth created after the
/// Secret was rotated, all signing with it), waits until
/// every one is final and its Events are out, and returns the controller's
/// requests from start-up on.
async fn load(n: usize) -> Load {
    assert!(n >= 10, "the mix needs at least 10 resources");
    // NB: the admin server is on as deployed (its readiness probe lists
    // one resource every --api-probe-interval: here once, at start-up).
    let env =
        Env::sandbox_with_args(&["--admin-addr", "127.0.0.1:0", "--api-probe-interval", "1h"])
            .await;
    let old = AccessKey::new("LTAI5tLoadOldKey", "loadOldSecret", None);
    let new = AccessKey::new("LTAI5tLoadNewKey", "loadNewSecret", None);
    env.sim.add_key(old.clone());
    env.sim.add_key(new.clone());
    env.put_secret("team-keys", &old).await;

    let before_rotation = n - n / 10;
    let resource = |i: usize| {
        let name = format!("load-{i:05}");
        let image = format!("m-load{i:05}");
        env.copying(&image);
        if i.is_multiple_of(5) || i >= before_rotation {
            cic_with_secret(&name, &image, "team-keys")
        } else {
            cic(&name, &image)
        }
    };
    env.fault(
        "m-load00001",
        FaultKind::InternalError,
        FaultCount::Times(2),
    );
    for i in 0..before_rotation {
        env.create(&resource(i)).await;
    }
    wait_all_final(&env, before_rotation).await;
    env.put_secret("team-keys", &new).await;
    assert!(env.sim.remove_key(&old.id));
    // NB: the Secret and the resources come through separate watches.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in before_rotation..n {
        env.create(&resource(i)).await;
    }
    wait_all_final(&env, n).await;

    // Every resource succeeded with exactly one request, except the retried one.
    let cics = env
        .cics()
        .list(&ListParams::default())
        .await
        .expect("list the resources");
    for cic in &cics.items {
        let name = cic.name_any();
        assert_eq!(
            phase(cic).as_deref(),
            Some("Succeeded"),
            "{name}:\n{}",
            yaml(cic)
        );
        let expected = if name == "load-00001" { 3 } else { 1 };
        assert_eq!(
            env.ecs_requests(&cic.spec.image_id).len(),
            expected,
            "{name}: CancelCopyImage requests"
        );
    }
    let rotated = env.ecs_requests(&format!("m-load{before_rotation:05}"));
    assert_eq!(
        rotated[0].access_key_id.as_deref(),
        Some(new.id.as_str()),
        "signed with the rotated key"
    );

    // One Cancelled per resource, two RetryScheduled for the retried one.
    let expected_events = n + 2;
    env.eventually("every Event published", |env| {
        let requests = env.controller_requests();
        let events = requests
            .iter()
            .filter(|r| r.resource == EVENTS && matches!(r.verb, Verb::Create | Verb::Patch))
            .count();
        events >= expected_events
    })
    .await;
    // Anything still to come (a late requeue) would show up within a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let load = Load {
        resources: n,
        requests: env.controller_requests(),
    };
    env.cleanup().await;
    load
}

/// Polls (as the test client, whose requests are not counted) until `n`
/// resources exist and every one is Succeeded or Failed.
async fn wait_all_final(env: &Env, n: usize) {
    env.eventually_async(&format!("{n} resources final"), || async {
        let list = env
            .cics()
            .list(&ListParams::default())
            .await
            .expect("list the resources");
        list.items.len() == n
            && list
                .items
                .iter()
                .all(|c| matches!(phase(c).as_deref(), Some("Succeeded" | "Failed")))
    })
    .await;
}

/// Asserts the request budget of one run and returns its list/watch counts.
fn assert_budget(load: &Load) -> BTreeMap<&'static str, usize> {
    let n = load.resources;
    println!("{}", load.table());

    // Reads come from the watch caches: no GET of anything the controller watches.
    for resource in [CICS, SECRETS, EVENTS] {
        assert_eq!(load.count(Verb::Get, resource, ""), 0, "GET {resource}");
    }
    assert_eq!(load.count(Verb::Get, CICS, "status"), 0, "GET cics/status");
    assert_eq!(load.count(Verb::List, EVENTS, ""), 0, "LIST events");

    // Writes go to the status subresource only: never to the resource itself.
    let main_writes: Vec<_> = load
        .requests
        .iter()
        .filter(|r| r.resource == CICS && r.subresource.is_empty() && r.verb.is_write())
        .collect();
    assert!(
        main_writes.is_empty(),
        "writes to the resource: {main_writes:#?}"
    );
    assert_eq!(load.count(Verb::Update, CICS, "status"), 0, "PUT status");
    // Secrets are only read.
    assert!(
        !load
            .requests
            .iter()
            .any(|r| r.resource == SECRETS && r.verb.is_write()),
        "no Secret writes"
    );

    // Status writes: the write-ahead and the outcome; two more per retry.
    // None is refused: a reconcile whose cache has not yet seen our own last
    // write waits for its watch event instead of earning a 409.
    let mut applied = 0;
    for i in 0..n {
        let name = format!("load-{i:05}");
        let codes = load.status_patches(&name);
        let expected = if name == "load-00001" { 2 + 2 * 2 } else { 2 };
        assert!(
            codes.len() == expected && codes.iter().all(|c| (200..300).contains(c)),
            "{name}: {expected} applied status writes, none refused: {codes:?}"
        );
        applied += codes.len();
    }
    assert_eq!(applied, 2 * n + 4, "applied status writes in all");

    // Events: one create per resource on success (plus one per retry); the
    // Recorder patches only repeats of an Event it already published.
    let event_creates = load.count(Verb::Create, EVENTS, "");
    let event_patches = load.count(Verb::Patch, EVENTS, "");
    assert_eq!(event_creates + event_patches, n + 2, "Event writes");

    // List and watch traffic: start-up (the access check's and the readiness
    // probe's one-item LIST, the caches' LIST + WATCH), and a re-watch at
    // most; nothing per resource.
    let counts = BTreeMap::from([
        ("LIST cics", load.count(Verb::List, CICS, "")),
        ("WATCH cics", load.count(Verb::Watch, CICS, "")),
        ("LIST secrets", load.count(Verb::List, SECRETS, "")),
        ("WATCH secrets", load.count(Verb::Watch, SECRETS, "")),
    ]);
    for (what, count) in &counts {
        let limit = if what.starts_with("LIST cics") { 3 } else { 1 };
        assert!(
            (1..=limit + 1).contains(count),
            "{what}: {count}, expected {limit} (one more for a re-watch at most)"
        );
    }
    let kinds: BTreeSet<&str> = load.requests.iter().map(|r| r.resource.as_str()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([CICS, SECRETS, EVENTS]),
        "nothing else is requested"
    );
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_requests_do_not_grow_with_the_number_of_resources() {
    let small = load(20).await;
    let small_counts = assert_budget(&small);
    let large = load(100).await;
    let large_counts = assert_budget(&large);
    for (what, count) in &large_counts {
        assert!(
            *count <= small_counts[what] + 1,
            "{what}: {count} for {} resources, {} for {}",
            large.resources,
            small_counts[what],
            small.resources
        );
    }
}

/// The API server's Retry-After in the 429 tests, and the least gap accepted
/// after each 429 (a little under it, for timer granularity).
const RETRY_AFTER_SECONDS: u32 = 1;
const LEAST_GAP: Duration = Duration::from_millis(900);

/// The controller's requests matching `keep`, oldest first.
fn requests_where(env: &Env, keep: impl Fn(&RequestRecord) -> bool) -> Vec<RequestRecord> {
    let mut requests: Vec<RequestRecord> =
        env.controller_requests().into_iter().filter(keep).collect();
    requests.sort_by_key(|r| r.received);
    requests
}

/// Asserts that every request answered 429 in `requests` (one kind, oldest
/// first) was followed by the next one no sooner than the Retry-After, and
/// returns how many were answered 429. A lower bound only: slow machines
/// only make the gaps longer.
fn assert_waited_after_429(what: &str, requests: &[RequestRecord]) -> usize {
    for pair in requests.windows(2) {
        if pair[0].code == 429 {
            let gap = pair[1].received.duration_since(pair[0].received);
            assert!(
                gap >= LEAST_GAP,
                "{what}: asked again {gap:?} after a 429 with Retry-After: {RETRY_AFTER_SECONDS}; codes {:?}",
                requests.iter().map(|r| r.code).collect::<Vec<_>>()
            );
        }
    }
    requests.iter().filter(|r| r.code == 429).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_writes_and_events_refused_with_429_wait_and_never_resend() {
    let env = Env::sandbox().await;
    let name = "throttled-by-the-api-server";
    env.copying("m-load429");
    // The ECS answer is held so the 429s can be aimed at recording it.
    env.fault(
        "m-load429",
        FaultKind::Latency {
            delay: Duration::from_secs(2),
        },
        FaultCount::Times(1),
    );
    env.create(&cic(name, "m-load429")).await;
    let status_patches = |env: &Env| {
        requests_where(env, |r| {
            r.verb == Verb::Patch
                && r.resource == CICS
                && r.subresource == "status"
                && r.name.as_deref() == Some(name)
        })
    };
    // The write-ahead is applied; the request is at ECS.
    env.eventually("the write-ahead applied", |env| {
        status_patches(env).iter().any(|r| r.code == 200)
    })
    .await;
    let api = env.sandbox_api();
    api.inject_fault(
        Fault::too_many_requests(3, RETRY_AFTER_SECONDS)
            .verb(Verb::Patch)
            .resource(CICS)
            .subresource("status"),
    );
    api.inject_fault(
        Fault::too_many_requests(2, RETRY_AFTER_SECONDS)
            .verb(Verb::Create)
            .resource(EVENTS),
    );

    let done = env.wait_finished(name).await;
    assert_eq!(
        phase(&done).as_deref(),
        Some("Succeeded"),
        "{}",
        yaml(&done)
    );
    assert_eq!(outcomes(&done), ["Succeeded"]);
    assert_eq!(
        env.ecs_requests("m-load429").len(),
        1,
        "the outcome is recorded, never sent again"
    );
    env.wait_event(name, "Cancelled").await;
    // NB: the API logs a request once answered, a moment after storing it.
    let event_creates =
        |env: &Env| requests_where(env, |r| r.verb == Verb::Create && r.resource == EVENTS);
    env.eventually(
        "the last status write and the Event in the request log",
        |env| status_patches(env).len() >= 5 && event_creates(env).iter().any(|r| r.code == 201),
    )
    .await;

    let patches = status_patches(&env);
    let codes: Vec<u16> = patches.iter().map(|r| r.code).collect();
    assert_eq!(
        codes,
        [200, 429, 429, 429, 200],
        "the write-ahead, then the outcome after three 429s"
    );
    assert_eq!(assert_waited_after_429("status PATCH", &patches), 3);
    let events = event_creates(&env);
    assert_eq!(
        events.iter().map(|r| r.code).collect::<Vec<_>>(),
        [429, 429, 201],
        "the Cancelled Event after two 429s"
    );
    assert_eq!(assert_waited_after_429("Event create", &events), 2);
    println!("status PATCH codes {codes:?}, Event create codes [429, 429, 201]");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_and_watches_refused_with_429_are_spaced_not_a_hot_loop() {
    let mut env = Env::sandbox_not_started(&[]).await;
    env.copying("m-loadlist429");
    let api = env.sandbox_api();
    // Overloaded from the start: every LIST of the resources is refused.
    api.inject_fault(
        Fault::too_many_requests(u32::MAX, RETRY_AFTER_SECONDS)
            .verb(Verb::List)
            .resource(CICS),
    );
    env.start_controller();
    let lists = |env: &Env| requests_where(env, |r| r.verb == Verb::List && r.resource == CICS);
    env.eventually("four LISTs refused", |env| lists(env).len() >= 4)
        .await;
    // Load eases, but the first WATCH of the resources and the first LIST
    // of Secrets are still refused twice each.
    let api = env.sandbox_api();
    api.clear_faults();
    api.inject_fault(
        Fault::too_many_requests(2, RETRY_AFTER_SECONDS)
            .verb(Verb::Watch)
            .resource(CICS),
    );
    api.inject_fault(
        Fault::too_many_requests(2, RETRY_AFTER_SECONDS)
            .verb(Verb::List)
            .resource(SECRETS),
    );
    env.create(&cic("after-the-storm", "m-loadlist429")).await;
    let done = env.wait_finished("after-the-storm").await;
    assert_eq!(
        phase(&done).as_deref(),
        Some("Succeeded"),
        "{}",
        yaml(&done)
    );
    assert_eq!(env.ecs_requests("m-loadlist429").len(), 1);

    // The resource may be handled from the first LIST, before the WATCH is
    // through: wait until both caches got past their 429s.
    env.eventually("the WATCH and the Secret LIST answered", |env| {
        [(Verb::Watch, CICS), (Verb::List, SECRETS)]
            .iter()
            .all(|(verb, resource)| {
                requests_where(env, |r| r.verb == *verb && r.resource == *resource)
                    .iter()
                    .any(|r| r.code == 200)
            })
    })
    .await;
    let refused_lists = assert_waited_after_429("LIST copyimagecancellations", &lists(&env));
    assert!(refused_lists >= 4, "{refused_lists} LISTs refused");
    let watches = requests_where(&env, |r| r.verb == Verb::Watch && r.resource == CICS);
    assert_eq!(
        assert_waited_after_429("WATCH copyimagecancellations", &watches),
        2
    );
    let secret_lists = requests_where(&env, |r| r.verb == Verb::List && r.resource == SECRETS);
    assert_eq!(assert_waited_after_429("LIST secrets", &secret_lists), 2);
    println!(
        "LIST copyimagecancellations {:?}\nWATCH copyimagecancellations {:?}\nLIST secrets {:?}",
        lists(&env).iter().map(|r| r.code).collect::<Vec<_>>(),
        watches.iter().map(|r| r.code).collect::<Vec<_>>(),
        secret_lists.iter().map(|r| r.code).collect::<Vec<_>>()
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_watches_are_retried_with_the_watchers_backoff() {
    let mut env = Env::sandbox_not_started(&[]).await;
    env.copying("m-loadwatch500");
    let api = env.sandbox_api();
    // A 500 is not retried by the client: the watchers' own backoff
    // (kube-runtime's default, from 800 ms) spaces the next WATCH.
    for resource in [CICS, SECRETS] {
        api.inject_fault(
            Fault::internal_error(3)
                .verb(Verb::Watch)
                .resource(resource),
        );
    }
    env.start_controller();
    env.create(&cic("after-broken-watches", "m-loadwatch500"))
        .await;
    let done = env.wait_finished("after-broken-watches").await;
    assert_eq!(
        phase(&done).as_deref(),
        Some("Succeeded"),
        "{}",
        yaml(&done)
    );
    assert_eq!(env.ecs_requests("m-loadwatch500").len(), 1);
    let watches = |env: &Env, resource: &str| {
        requests_where(env, |r| r.verb == Verb::Watch && r.resource == resource)
    };
    env.eventually("both watches established", |env| {
        [CICS, SECRETS]
            .iter()
            .all(|resource| watches(env, resource).iter().any(|r| r.code == 200))
    })
    .await;
    for resource in [CICS, SECRETS] {
        let requests = watches(&env, resource);
        let codes: Vec<u16> = requests.iter().map(|r| r.code).collect();
        assert_eq!(codes, [500, 500, 500, 200], "WATCH {resource}");
        for pair in requests.windows(2) {
            let gap = pair[1].received.duration_since(pair[0].received);
            assert!(
                gap >= Duration::from_millis(700),
                "WATCH {resource} repeated {gap:?} after a 500"
            );
        }
        println!("WATCH {resource} {codes:?}");
    }
    // The first LIST of each cache went through: a failed WATCH resumes
    // from it instead of listing everything again.
    assert_eq!(
        requests_where(&env, |r| r.verb == Verb::List && r.resource == SECRETS).len(),
        1
    );
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_watched_namespace_is_listed_and_watched_once() {
    let scopes = ["load-team-a", "load-team-b"];
    let env = Env::sandbox_with_args(&[
        "--watch-namespace",
        scopes[0],
        "--watch-namespace",
        scopes[1],
    ])
    .await;
    for (i, namespace) in scopes.iter().enumerate() {
        let cics: kube::Api<copyimage_canceller::resource::CopyImageCancellation> =
            kube::Api::namespaced(env.client.clone(), namespace);
        for j in 0..5 {
            let image = format!("m-scope{i}x{j}");
            env.copying(&image);
            cics.create(&Default::default(), &cic(&format!("scoped-{j}"), &image))
                .await
                .expect("create a resource");
        }
    }
    env.eventually("every resource cancelled once", |env| {
        env.sim
            .requests()
            .iter()
            .filter(|r| r.code == "Success")
            .count()
            == 10
    })
    .await;
    env.eventually("every outcome written", |env| {
        env.controller_requests()
            .iter()
            .filter(|r| r.resource == CICS && r.subresource == "status" && r.code == 200)
            .count()
            == 20
    })
    .await;
    let requests = env.controller_requests();
    for namespace in scopes {
        let count = |verb: Verb, resource: &str| {
            requests
                .iter()
                .filter(|r| {
                    r.verb == verb
                        && r.resource == resource
                        && r.namespace.as_deref() == Some(namespace)
                })
                .count()
        };
        // The start-up access check and the cache's first list; then one watch each.
        assert_eq!(count(Verb::List, CICS), 2, "LIST cics in {namespace}");
        assert_eq!(count(Verb::Watch, CICS), 1, "WATCH cics in {namespace}");
        assert_eq!(count(Verb::List, SECRETS), 1, "LIST secrets in {namespace}");
        assert_eq!(
            count(Verb::Watch, SECRETS),
            1,
            "WATCH secrets in {namespace}"
        );
        assert_eq!(count(Verb::Get, CICS) + count(Verb::Get, SECRETS), 0);
    }
    let cluster_wide: Vec<_> = requests
        .iter()
        .filter(|r| r.resource != EVENTS && r.namespace.is_none())
        .collect();
    assert!(
        cluster_wide.is_empty(),
        "nothing outside the watched namespaces: {cluster_wide:#?}"
    );
    env.cleanup().await;
}
