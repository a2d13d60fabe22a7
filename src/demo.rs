//! `copyimage-canceller demo`: the whole controller path on embedded stand-ins
//! (the in-process Kubernetes API and the ECS simulator), no cluster or cloud
//! account needed. It applies the examples in `deploy/samples/`, shows their
//! status as `kubectl get` would while the controller works, and checks that
//! each one ends as the sample says.
//!
//! ```text
//! deploy/samples/*.yaml ──create──▶ sandbox Kubernetes API ◀──watch/status── controller (run's code)
//!                                        ▲                                        │ signed
//!          table on stdout ◀──list───────┘            ECS simulator ◀─────────────┘ CancelCopyImage
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use kube::{CustomResourceExt, ResourceExt};
use tokio_util::sync::CancellationToken;

use copyimage_stand_ins::ecs_simulator::{
    EcsSimulator, FaultCount, FaultKind, FaultSpec, FaultTarget, ImageState, SimulatorConfig,
    SimulatorHandle,
};
use copyimage_stand_ins::kube_api::{KubeApi, KubeApiHandle};

use crate::controller::Settings;
use crate::controller::conditions::{reasons, types};
use crate::controller::run::{LogFormat, WatchOptions, init_logging, run_controllers};
use crate::credentials::AccessKey;
use crate::ecs::client::{EcsClient, EcsClientConfig};
use crate::identity::OperatorCredentials;
use crate::resource::{CopyImageCancellation, Phase};
use crate::retry::Backoff;

/// How often the demo looks at the resources.
const POLL: Duration = Duration::from_millis(100);

/// The operator's key pair in the demo (used by samples without a Secret).
const DEMO_OPERATOR_KEY_ID: &str = "LTAI5tDemoOperatorKey";
/// The key pair the demo puts into the samples' Secret.
const DEMO_TEAM_KEY_ID: &str = "LTAI5tDemoTeamKey";

/// Arguments of `demo`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "\
The demo starts an in-process Kubernetes API and the ECS simulator on 127.0.0.1, runs the
controller (the same code as `run`) against them, and applies the examples in deploy/samples/:
  stop-copy-to-singapore  a copy in progress, cancelled at the first attempt
  stop-copy-to-frankfurt  ECS answers InternalError twice, the third attempt cancels the copy
  stop-copy-to-tokyo      the copy already finished: IncorrectImageStatus, final at once
  stop-copy-to-hangzhou   waits for Secret alibaba-credentials, which the demo creates later
It prints the resources like `kubectl get cic` whenever a status changes, then one resource as
YAML and its Events, and exits 0 when every resource ended as expected.")]
pub struct DemoArgs {
    /// First backoff ceiling of the controller (`run --retry-base-delay`).
    #[arg(long, value_name = "DURATION", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub retry_base_delay: Duration,
    /// Largest backoff ceiling of the controller (`run --retry-max-delay`).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub retry_max_delay: Duration,
    /// How long the demo waits before creating the Secret a sample is waiting for
    /// (and at least until that sample shows AwaitingCredentials).
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = humantime::parse_duration)]
    pub secret_delay: Duration,
    /// Give up (exit non-zero) if the resources are not all finished by then.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// The controller's log level on stderr (`info` shows every step).
    #[arg(long, value_name = "LEVEL", default_value = "warn")]
    pub log_level: String,
}

/// A sample file, embedded so the demo runs from any directory.
struct SampleFile {
    path: &'static str,
    text: &'static str,
}

/// `sample!("x.yaml")`: the file `deploy/samples/x.yaml`, path and text.
macro_rules! sample {
    ($file:literal) => {
        SampleFile {
            path: concat!("deploy/samples/", $file),
            text: include_str!(concat!("../deploy/samples/", $file)),
        }
    };
}

const SAMPLE_FILES: &[SampleFile] = &[
    sample!("copyimagecancellation-operator-credentials.yaml"),
    sample!("copyimagecancellation-retried.yaml"),
    sample!("copyimagecancellation-copy-finished.yaml"),
    sample!("copyimagecancellation.yaml"),
];

const SECRET_SAMPLE: SampleFile = SampleFile {
    path: "deploy/samples/alibaba-credentials-secret.yaml",
    text: include_str!("../deploy/samples/alibaba-credentials-secret.yaml"),
};

/// What the demo makes ECS do for a sample, and how the sample must end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Story {
    /// A copy in progress: cancelled at the first attempt.
    Cancelled,
    /// `InternalError` this many times, then cancelled.
    CancelledAfterInternalErrors(u32),
    /// The copy already finished: `IncorrectImageStatus`, final at once.
    CopyAlreadyFinished,
    /// Waits for its Secret, which the demo creates later; then cancelled.
    CancelledOnceTheSecretExists,
}

impl Story {
    /// The story of a sample, by file.
    fn of(path: &str) -> anyhow::Result<Self> {
        Ok(match path {
            "deploy/samples/copyimagecancellation-operator-credentials.yaml" => Story::Cancelled,
            "deploy/samples/copyimagecancellation-retried.yaml" => {
                Story::CancelledAfterInternalErrors(2)
            }
            "deploy/samples/copyimagecancellation-copy-finished.yaml" => Story::CopyAlreadyFinished,
            "deploy/samples/copyimagecancellation.yaml" => Story::CancelledOnceTheSecretExists,
            other => bail!("the demo has no story for {other}"),
        })
    }

    /// The simulator state that makes the story happen.
    fn image_state(self) -> ImageState {
        match self {
            Story::CopyAlreadyFinished => ImageState::Copied,
            _ => ImageState::Copying,
        }
    }

    /// `(phase, errorCode, attempts)` at the end.
    fn expected(self) -> (Phase, Option<&'static str>, i32) {
        match self {
            Story::Cancelled | Story::CancelledOnceTheSecretExists => (Phase::Succeeded, None, 1),
            Story::CancelledAfterInternalErrors(n) => (
                Phase::Succeeded,
                None,
                i32::try_from(n).unwrap_or(i32::MAX) + 1,
            ),
            Story::CopyAlreadyFinished => (Phase::Failed, Some("IncorrectImageStatus"), 1),
        }
    }
}

/// One sample resource and its story.
struct Sample {
    path: &'static str,
    resource: CopyImageCancellation,
    story: Story,
}

fn load_samples() -> anyhow::Result<Vec<Sample>> {
    SAMPLE_FILES
        .iter()
        .map(|file| {
            let resource: CopyImageCancellation = serde_yaml_ng::from_str(file.text)
                .with_context(|| format!("{} is not a CopyImageCancellation", file.path))?;
            Ok(Sample {
                path: file.path,
                story: Story::of(file.path)?,
                resource,
            })
        })
        .collect()
}

/// Runs the demo; an error says which resource did not end as expected.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    init_logging(LogFormat::Text, &args.log_level)?;
    let samples = load_samples()?;
    let operator_key = AccessKey::new(DEMO_OPERATOR_KEY_ID, demo_secret(), None);
    let team_key = AccessKey::new(DEMO_TEAM_KEY_ID, demo_secret(), None);

    let api = KubeApi::start(vec![CopyImageCancellation::crd()]).await?;
    let sim = start_simulator(&samples, [operator_key.clone(), team_key.clone()]).await?;
    println!("In-process Kubernetes API on {}", api.url());
    println!(
        "ECS simulator on {} (plays ECS in every region)",
        sim.endpoint()
    );

    let settings = Arc::new(Settings {
        ecs: EcsClient::new(EcsClientConfig {
            endpoint: sim.endpoint(),
            ..EcsClientConfig::default()
        })?,
        backoff: Backoff::new(args.retry_base_delay, args.retry_max_delay)
            .context("--retry-base-delay / --retry-max-delay")?,
        operator: OperatorCredentials::fixed(operator_key),
        pacer: crate::pacing::Pacer::new(crate::pacing::PacingConfig::default(), None),
    });
    let shutdown = CancellationToken::new();
    let controller = tokio::spawn(run_controllers(
        api.client()?,
        settings,
        WatchOptions {
            max_concurrent_reconciles: 16,
            ..WatchOptions::default()
        },
        shutdown.clone(),
    ));
    println!(
        "Controller started (retry delays {} to {})\n",
        humantime::format_duration(args.retry_base_delay),
        humantime::format_duration(args.retry_max_delay)
    );

    let outcome = play(&args, &api, &sim, &samples, &team_key).await;
    shutdown.cancel();
    match tokio::time::timeout(Duration::from_secs(10), controller).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => eprintln!("demo: the controller stopped with an error: {err:#}"),
        Ok(Err(err)) => eprintln!("demo: the controller task failed: {err}"),
        Err(_) => eprintln!("demo: the controller did not stop within 10s"),
    }
    sim.shutdown().await;
    api.shutdown().await;
    outcome
}

/// A random secret for this run only (nothing to leak, nothing to guess).
fn demo_secret() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

async fn start_simulator(
    samples: &[Sample],
    keys: [AccessKey; 2],
) -> anyhow::Result<SimulatorHandle> {
    // The simulator holds its own copy of each key: it checks our signatures
    // with its own code.
    let mut config = SimulatorConfig::new(
        keys.map(|k| copyimage_stand_ins::AccessKey::new(k.id.clone(), k.secret(), None)),
    );
    for sample in samples {
        let image = sample.resource.spec.image_id.clone();
        config = config.with_image(image.clone(), sample.story.image_state());
        if let Story::CancelledAfterInternalErrors(n) = sample.story {
            config = config.with_fault(FaultSpec::new(
                FaultTarget::Image(image),
                FaultKind::InternalError,
                FaultCount::Times(n),
            ));
        }
    }
    EcsSimulator::start(config).await
}

/// Applies the samples, shows progress, and checks the ends.
async fn play(
    args: &DemoArgs,
    api: &KubeApiHandle,
    sim: &SimulatorHandle,
    samples: &[Sample],
    team_key: &AccessKey,
) -> anyhow::Result<()> {
    let client = api.client()?;
    for sample in samples {
        let namespace = sample
            .resource
            .namespace()
            .with_context(|| format!("{} names no namespace", sample.path))?;
        let cics: Api<CopyImageCancellation> = Api::namespaced(client.clone(), &namespace);
        cics.create(&PostParams::default(), &sample.resource)
            .await
            .with_context(|| format!("applying {}", sample.path))?;
        println!("applied {} ({})", sample.path, describe(sample.story));
    }
    let waiting_for_secret: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.story == Story::CancelledOnceTheSecretExists)
        .collect();
    let mut secret_created = waiting_for_secret.is_empty();

    let started = tokio::time::Instant::now();
    let mut last_rows: Option<Vec<Row>> = None;
    let mut seen_awaiting: BTreeSet<String> = BTreeSet::new();
    let all: Api<CopyImageCancellation> = Api::all(client.clone());
    loop {
        let mut resources = all.list(&ListParams::default()).await?.items;
        resources.sort_by_key(|r| r.metadata.creation_timestamp.clone().map(|t| t.0));
        for r in &resources {
            if awaiting_credentials(r) {
                seen_awaiting.insert(r.name_any());
            }
        }
        let rows: Vec<Row> = resources.iter().map(Row::of).collect();
        if last_rows.as_ref() != Some(&rows) {
            println!(
                "\n[{:>5.1}s] kubectl get cic -A",
                started.elapsed().as_secs_f64()
            );
            print!("{}", table(&resources, jiff::Timestamp::now()));
            // What changed, in the words of the conditions.
            for row in &rows {
                let before = last_rows
                    .iter()
                    .flatten()
                    .find(|r| r.namespace == row.namespace && r.name == row.name);
                if !row.condition.is_empty() && before.is_none_or(|b| b.condition != row.condition)
                {
                    println!("  {}: {}", row.name, row.condition);
                }
            }
            last_rows = Some(rows);
        }
        if resources.len() == samples.len()
            && resources.iter().all(|r| {
                r.status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(Phase::is_finished)
            })
        {
            break;
        }
        // NB: only once the waiting sample says it awaits credentials, which the
        // controller says after its Secret has been absent for a few seconds.
        if !secret_created
            && started.elapsed() >= args.secret_delay
            && waiting_for_secret
                .iter()
                .all(|s| seen_awaiting.contains(&s.resource.name_any()))
        {
            create_secret(&client, &waiting_for_secret, team_key).await?;
            secret_created = true;
        }
        if started.elapsed() >= args.timeout {
            let unfinished: Vec<String> = resources
                .iter()
                .filter(|r| {
                    !r.status
                        .as_ref()
                        .and_then(|s| s.phase)
                        .is_some_and(Phase::is_finished)
                })
                .map(ResourceExt::name_any)
                .collect();
            bail!(
                "not every resource finished within {} (still running: {}); run again with --log-level info to see the controller's steps",
                humantime::format_duration(args.timeout),
                unfinished.join(", ")
            );
        }
        tokio::time::sleep(POLL).await;
    }

    let showcase = samples
        .iter()
        .find(|s| matches!(s.story, Story::CancelledAfterInternalErrors(_)))
        .unwrap_or(&samples[0]);
    let name = showcase.resource.name_any();
    let namespace = showcase.resource.namespace().unwrap_or_default();
    let cics: Api<CopyImageCancellation> = Api::namespaced(client.clone(), &namespace);
    let shown = cics.get(&name).await?;
    println!("\nkubectl -n {namespace} get cic {name} -o yaml");
    print!("{}", as_yaml(&shown)?);
    println!("\nkubectl -n {namespace} events --for cic/{name}");
    print!("{}", events_table(&client, &namespace, &name).await?);

    check(samples, &client, sim, &seen_awaiting).await?;
    println!(
        "\ndemo: all {} resources ended as expected in {:.1}s",
        samples.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn describe(story: Story) -> String {
    match story {
        Story::Cancelled => "a copy in progress".into(),
        Story::CancelledAfterInternalErrors(n) => {
            format!("ECS will answer InternalError {n} times first")
        }
        Story::CopyAlreadyFinished => "a copy that has already finished".into(),
        Story::CancelledOnceTheSecretExists => "its credentials Secret does not exist yet".into(),
    }
}

/// Creates the samples' Secret from `deploy/samples/`, with the demo's key in place of the placeholders.
async fn create_secret(
    client: &kube::Client,
    waiting: &[&Sample],
    key: &AccessKey,
) -> anyhow::Result<()> {
    let mut secret: Secret = serde_yaml_ng::from_str(SECRET_SAMPLE.text)
        .with_context(|| format!("{} is not a Secret", SECRET_SAMPLE.path))?;
    let name = secret.name_any();
    let namespace = secret.namespace().unwrap_or_default();
    for sample in waiting {
        let wanted = sample
            .resource
            .spec
            .credentials_secret_ref
            .as_ref()
            .map(|r| r.name.as_str());
        if wanted != Some(name.as_str())
            || sample.resource.namespace().as_deref() != Some(&namespace)
        {
            bail!(
                "{} waits for Secret {wanted:?}, but {} defines {namespace}/{name}",
                sample.path,
                SECRET_SAMPLE.path
            );
        }
    }
    secret.string_data = Some(BTreeMap::from([
        ("accessKeyId".to_string(), key.id.clone()),
        ("accessKeySecret".to_string(), key.secret().to_string()),
    ]));
    Api::<Secret>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &secret)
        .await
        .with_context(|| format!("creating Secret {namespace}/{name}"))?;
    println!(
        "\ncreated Secret {namespace}/{name} from {} (with the demo's key)",
        SECRET_SAMPLE.path
    );
    Ok(())
}

fn awaiting_credentials(r: &CopyImageCancellation) -> bool {
    r.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == types::RECONCILING && c.reason == reasons::AWAITING_CREDENTIALS)
    })
}

/// Compares every resource with its story, and what ECS received with the status.
async fn check(
    samples: &[Sample],
    client: &kube::Client,
    sim: &SimulatorHandle,
    seen_awaiting: &BTreeSet<String>,
) -> anyhow::Result<()> {
    let requests = sim.requests();
    let mut problems = Vec::new();
    for sample in samples {
        let name = sample.resource.name_any();
        let namespace = sample.resource.namespace().unwrap_or_default();
        let r = Api::<CopyImageCancellation>::namespaced(client.clone(), &namespace)
            .get(&name)
            .await?;
        let status = r.status.clone().unwrap_or_default();
        let (phase, code, attempts) = sample.story.expected();
        let got = (status.phase, status.error_code.as_deref(), status.attempts);
        if got != (Some(phase), code, attempts) {
            problems.push(format!(
                "{name}: expected phase {phase:?}, errorCode {code:?}, attempts {attempts}; got {got:?}"
            ));
        }
        let sent = requests
            .iter()
            .filter(|q| q.image_id.as_deref() == Some(sample.resource.spec.image_id.as_str()))
            .count();
        if i32::try_from(sent).ok() != Some(status.attempts) {
            problems.push(format!(
                "{name}: status.attempts is {} but ECS received {sent} request(s)",
                status.attempts
            ));
        }
        if sample.story == Story::CancelledOnceTheSecretExists && !seen_awaiting.contains(&name) {
            problems.push(format!(
                "{name}: never showed Reconciling reason AwaitingCredentials while its Secret was missing"
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!(
            "some resources did not end as expected:\n  {}",
            problems.join("\n  ")
        )
    }
}

/// The columns of one table row that change (AGE left out).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Row {
    namespace: String,
    name: String,
    region: String,
    image: String,
    phase: String,
    request_id: String,
    error: String,
    attempts: String,
    /// The condition that is True, `Type/Reason: message` (not a table column).
    condition: String,
}

impl Row {
    fn of(r: &CopyImageCancellation) -> Self {
        let status = r.status.as_ref();
        Self {
            namespace: r.namespace().unwrap_or_default(),
            name: r.name_any(),
            region: r.spec.region_id.clone(),
            image: r.spec.image_id.clone(),
            phase: status
                .and_then(|s| s.phase)
                .map(|p| format!("{p:?}"))
                .unwrap_or_default(),
            request_id: status
                .and_then(|s| s.request_id.clone())
                .unwrap_or_default(),
            error: status
                .and_then(|s| s.error_code.clone())
                .unwrap_or_default(),
            attempts: status.map(|s| s.attempts.to_string()).unwrap_or_default(),
            condition: headline(r),
        }
    }
}

/// The condition that tells where a resource stands (Stalled, else Ready,
/// else Reconciling, whichever is True) as `Type/Reason: message`; empty
/// before the first status.
fn headline(r: &CopyImageCancellation) -> String {
    let conditions = r
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    [types::STALLED, types::READY, types::RECONCILING]
        .iter()
        .find_map(|t| {
            conditions
                .iter()
                .find(|c| c.type_ == *t && c.status == "True")
        })
        .map(|c| format!("{}/{}: {}", c.type_, c.reason, c.message))
        .unwrap_or_default()
}

/// `kubectl get cic -A` as text, ages counted to `now`.
fn table(resources: &[CopyImageCancellation], now: jiff::Timestamp) -> String {
    let header = [
        "NAMESPACE",
        "NAME",
        "REGION",
        "IMAGE",
        "PHASE",
        "REQUEST-ID",
        "ERROR",
        "ATTEMPTS",
        "AGE",
    ];
    let mut lines: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for r in resources {
        let row = Row::of(r);
        let age = r
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| age(now.duration_since(t.0)))
            .unwrap_or_else(|| "<unknown>".into());
        lines.push(vec![
            row.namespace,
            row.name,
            row.region,
            row.image,
            row.phase,
            row.request_id,
            row.error,
            row.attempts,
            age,
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| lines.iter().map(|l| l[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for line in lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("   ").trim_end());
    }
    out
}

/// An age the way kubectl prints it: `7s`, `3m12s`, `2h5m`, `4d`.
fn age(elapsed: jiff::SignedDuration) -> String {
    let secs = elapsed.as_secs().max(0);
    match secs {
        0..=119 => format!("{secs}s"),
        120..=3599 => format!("{}m{}s", secs / 60, secs % 60),
        3600..=86_399 => format!("{}h{}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d", secs / 86_400),
    }
}

/// The resource as `kubectl get -o yaml` shows it (managedFields hidden).
fn as_yaml(r: &CopyImageCancellation) -> anyhow::Result<String> {
    let mut r = r.clone();
    r.metadata.managed_fields = None;
    Ok(serde_yaml_ng::to_string(&r)?)
}

/// The Events about one resource, oldest first, as `kubectl events` lists them.
async fn events_table(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<String> {
    let mut events: Vec<Event> = Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect();
    events.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
    let mut out = String::new();
    let _ = writeln!(out, "{:<8} {:<16} {:<5} MESSAGE", "TYPE", "REASON", "COUNT");
    for e in events {
        // NB: repeats of one reason are aggregated into a series; the note is the first one's.
        let count = e.series.as_ref().map_or(1, |s| s.count.max(1));
        let _ = writeln!(
            out,
            "{:<8} {:<16} {:<5} {}",
            e.type_.unwrap_or_default(),
            e.reason.unwrap_or_default(),
            count,
            e.note.unwrap_or_default()
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_has_a_story_and_parses() {
        let samples = load_samples().unwrap();
        assert_eq!(samples.len(), SAMPLE_FILES.len());
        let stories: BTreeSet<String> = samples.iter().map(|s| format!("{:?}", s.story)).collect();
        assert_eq!(stories.len(), 4, "one sample per story: {stories:?}");
        let images: BTreeSet<&str> = samples
            .iter()
            .map(|s| s.resource.spec.image_id.as_str())
            .collect();
        assert_eq!(images.len(), samples.len(), "each sample has its own image");
    }

    #[test]
    fn ages_read_like_kubectl() {
        let cases = [
            (0, "0s"),
            (59, "59s"),
            (119, "119s"),
            (120, "2m0s"),
            (3725, "1h2m"),
            (200_000, "2d"),
        ];
        for (secs, want) in cases {
            assert_eq!(age(jiff::SignedDuration::from_secs(secs)), want, "{secs}s");
        }
    }

    #[test]
    fn table_aligns_columns_and_leaves_unset_fields_blank() {
        let mut r: CopyImageCancellation = serde_yaml_ng::from_str(SAMPLE_FILES[0].text).unwrap();
        r.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-01-01T00:00:00Z".parse().unwrap(),
        ));
        let now: jiff::Timestamp = "2026-01-01T00:00:05Z".parse().unwrap();
        let text = table(&[r], now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("NAMESPACE   NAME"), "{}", lines[0]);
        assert!(
            lines[1].starts_with("images      stop-copy-to-singapore"),
            "{}",
            lines[1]
        );
        assert!(lines[1].ends_with("5s"), "{}", lines[1]);
        let age_column = lines[0].rfind("AGE").unwrap();
        assert_eq!(lines[1].rfind("5s").unwrap(), age_column);
    }

    #[test]
    fn the_secret_sample_is_the_one_the_waiting_sample_names() {
        let secret: Secret = serde_yaml_ng::from_str(SECRET_SAMPLE.text).unwrap();
        let waiting = load_samples()
            .unwrap()
            .into_iter()
            .find(|s| s.story == Story::CancelledOnceTheSecretExists)
            .unwrap();
        assert_eq!(
            waiting
                .resource
                .spec
                .credentials_secret_ref
                .clone()
                .unwrap()
                .name,
            secret.name_any()
        );
        assert_eq!(waiting.resource.namespace(), secret.namespace());
    }
}
