//! `copyimage-canceller run`: the command line of the controller, and the
//! wiring of watches, caches and controllers around [`super::reconcile`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector;
use kube::runtime::watcher::{self, watcher};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::leader;
use super::{
    Context, REPORTING_CONTROLLER, Settings, error_policy, reconcile, resources_using_secret,
};
use crate::admin::{self, Health};
use crate::ecs::client::{DEFAULT_ENDPOINT_TEMPLATE, EcsClient, EcsClientConfig, SignatureVersion};
use crate::identity::cli::IdentityArgs;
use crate::identity::{CredentialState, OperatorCredentials};
use crate::metrics::Metrics;
use crate::pacing::pace::Ceiling;
use crate::pacing::{Pacer, PacingConfig};
use crate::resource::CopyImageCancellation;
use crate::retry::Backoff;
use crate::role_selector::RamRoleSelector;

const AFTER_HELP: &str = "\
Kubernetes access: the in-cluster service account, or KUBECONFIG / ~/.kube/config outside a cluster.
The operator needs: get/list/watch on copyimagecancellations, patch on copyimagecancellations/status,
list/watch on secrets (in the watched namespaces), and create/patch on events.k8s.io events.
With --leader-elect also create, get and patch on coordination.k8s.io leases (the Lease
copyimage-canceller in --leader-election-namespace).
With tenant roles (--namespace-roles, the default) also list/watch on ramroleselectors and
namespaces, and patch on ramroleselectors/status (cluster-scoped).

Credentials: a resource's spec.credentialsSecretRef names a Secret in its own namespace (keys
accessKeyId, accessKeySecret, optional securityToken). Resources without one use the operator's own
credentials, from the first configured source (as `copyimage-canceller credentials --help` lists):
ALIBABA_CLOUD_ACCESS_KEY_ID + ALIBABA_CLOUD_ACCESS_KEY_SECRET (+ ALIBABA_CLOUD_SECURITY_TOKEN);
RRSA (ALIBABA_CLOUD_ROLE_ARN + ALIBABA_CLOUD_OIDC_PROVIDER_ARN + ALIBABA_CLOUD_OIDC_TOKEN_FILE);
the ECS instance RAM role (ALIBABA_CLOUD_ECS_METADATA or --ecs-ram-role). Temporary credentials
are refreshed in the background. A partial RRSA triple stops `run` at start-up. While no key is
available, nothing is sent and the resource waits (reason AwaitingCredentials).
Between the two, a resource without a Secret in a namespace that one RamRoleSelector selects is
signed with a session of that selector's RAM role, assumed with STS AssumeRole from the operator's
identity (at ALIBABA_CLOUD_STS_ENDPOINT, else sts[-vpc].ALIBABA_CLOUD_STS_REGION.aliyuncs.com, else
sts.aliyuncs.com) under a session policy allowing only ecs:CancelCopyImage. Two selectors for one
namespace: the resource waits (AmbiguousRole). --require-namespace-role never falls back to the
operator's identity.

SIGTERM or Ctrl+C: no new work is taken; requests in flight finish and their outcomes are recorded
in status; then the process exits (status 0). Whatever is still in flight after --shutdown-timeout
is abandoned: the process logs the namespace/name of each such resource and exits with status 1.
Each abandoned attempt was written to status before it was sent (outcome Unknown), so after a
restart it is sent again; if that repeat finds the copy already cancelled or finished
(InvalidImageId.NotFound, IncorrectImageStatus), the resource ends Failed with reason
PreviousAttemptMayHaveSucceeded instead of Succeeded. Keep --shutdown-timeout below the pod's
terminationGracePeriodSeconds, with room for the kubelet, so the process ends on its own terms.";

/// Log output format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Arguments of `run`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = AFTER_HELP)]
pub struct RunArgs {
    /// ECS endpoint template; `{regionId}` is replaced by each resource's spec.regionId.
    #[arg(long, value_name = "TEMPLATE", default_value = DEFAULT_ENDPOINT_TEMPLATE)]
    pub ecs_endpoint: String,
    /// Accept an http:// endpoint on a non-loopback host (requests then cross the network unencrypted).
    #[arg(long)]
    pub allow_insecure_endpoint: bool,
    /// How requests are signed: v1 (HMAC-SHA1 RPC signature) or v3 (ACS3-HMAC-SHA256, signed headers).
    #[arg(long, value_name = "VERSION", value_enum, default_value_t = SignatureVersion::V1)]
    pub signature_version: SignatureVersion,
    /// First backoff ceiling; each retry doubles it (full jitter below it).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub retry_base_delay: Duration,
    /// Largest backoff ceiling (and largest honoured x-acs-retry-after).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub retry_max_delay: Duration,
    /// Watch only this namespace (repeat for several); default: all namespaces.
    #[arg(long = "watch-namespace", value_name = "NS", value_parser = parse_namespace)]
    pub watch_namespaces: Vec<String>,
    /// Only handle resources matching this label selector (e.g. `team=images,env!=dev`).
    #[arg(long, value_name = "LABELS")]
    pub selector: Option<String>,
    /// Most reconciles (and so CancelCopyImage requests) in flight at once.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_concurrent_reconciles: u16,
    /// Log format.
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Read the Secrets that resources name in spec.credentialsSecretRef (needs list/watch on
    /// Secrets). With false, no Secret is watched or read, and such resources wait
    /// (AwaitingCredentials) saying why.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub per_resource_secrets: bool,
    /// Serve /livez, /readyz and /metrics on this address (e.g. 0.0.0.0:8080).
    #[arg(long, value_name = "ADDR")]
    pub admin_addr: Option<SocketAddr>,
    /// Log level or filter directives (`info`, `debug`, `copyimage_canceller=debug,kube=warn`).
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: String,
    /// How CancelCopyImage requests are paced. `adaptive`: no client-side limit for an access
    /// key in a region until ECS throttles it there, then a pace that learns the account's quota
    /// (cut on throttling, grown back over time), one per access key and region, fair to the
    /// resources waiting on it. `off`: never paced; throttled resources back off one by one.
    #[arg(long, value_name = "MODE", value_enum, default_value_t = PacingMode::Adaptive)]
    pub ecs_pacing: PacingMode,
    /// An optional hard ceiling: most CancelCopyImage requests per second for each access key
    /// and region, whatever the adaptive pace allows. Default: none (the service's throttling
    /// answers set the pace).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub ecs_qps: Option<u32>,
    /// With --ecs-qps: requests that may go at once after a quiet spell. Default: 1.
    #[arg(long, value_name = "N", requires = "ecs_qps", value_parser = clap::value_parser!(u32).range(1..))]
    pub ecs_burst: Option<u32>,
    /// Run the controllers only while holding the Lease `copyimage-canceller` (for several
    /// replicas): followers wait; a leader that loses the Lease exits (status 1) and is
    /// restarted as a follower; SIGTERM releases it. Needs get/create/patch on
    /// coordination.k8s.io leases in --leader-election-namespace.
    #[arg(long)]
    pub leader_elect: bool,
    /// Namespace of the leader Lease; default: the pod's (POD_NAMESPACE or the service-account
    /// namespace file).
    #[arg(long, value_name = "NS", value_parser = parse_namespace)]
    pub leader_election_namespace: Option<String>,
    /// How long the Lease stays valid after its last renewal (whole seconds): how long a
    /// crashed leader blocks the others. Hidden: for tests and unusual clusters.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = humantime::parse_duration, hide = true)]
    pub leader_lease_duration: Duration,
    /// How long before expiry the leader renews the Lease (whole seconds, below
    /// --leader-lease-duration). Hidden: for tests and unusual clusters.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration, hide = true)]
    pub leader_renew_grace: Duration,
    /// After SIGTERM, how long reconciles in flight get to finish and record their outcome
    /// before the process exits anyway (status 1, naming them; see below). Keep it below the
    /// pod's terminationGracePeriodSeconds.
    #[arg(long, value_name = "DURATION", default_value = "25s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
    /// How often /readyz's probe lists one CopyImageCancellation to learn whether the Kubernetes
    /// API answers (watch errors mark it unreachable at once; only an answer clears that).
    /// Hidden: for tests and unusual clusters.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_probe_interval, hide = true)]
    pub api_probe_interval: Duration,
    /// Sign resources without a credentialsSecretRef with the RAM role of the one
    /// RamRoleSelector that selects their namespace (assumed with STS AssumeRole from the
    /// operator's identity). Needs list/watch on ramroleselectors and namespaces. With false,
    /// selectors are ignored. When the RamRoleSelector CRD is not installed, this is off (with a
    /// warning) until a restart.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub namespace_roles: bool,
    /// Never sign with the operator's own identity: a resource without a credentialsSecretRef
    /// in a namespace no RamRoleSelector selects waits (AwaitingCredentials) until an
    /// administrator creates one. For clusters shared by several teams.
    #[arg(long)]
    pub require_namespace_role: bool,
    /// Where the operator's own credentials come from.
    #[command(flatten)]
    pub identity: IdentityArgs,
}

fn parse_probe_interval(value: &str) -> Result<Duration, String> {
    match humantime::parse_duration(value) {
        Ok(every) if every >= Duration::from_millis(100) => Ok(every),
        Ok(_) => Err("at least 100ms".to_owned()),
        Err(err) => Err(err.to_string()),
    }
}

fn parse_namespace(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(value.to_owned())
    } else {
        Err(
            "expected a namespace name: lower-case letters, digits and '-', at most 63 characters"
                .to_owned(),
        )
    }
}

/// Where and what the controllers watch.
#[derive(Clone, Debug, Default)]
pub struct WatchOptions {
    /// Namespaces to watch; empty: all.
    pub namespaces: Vec<String>,
    /// Label selector for resources.
    pub selector: Option<String>,
    /// Most reconciles at once, across namespaces.
    pub max_concurrent_reconciles: u16,
    /// The Events' `reportingInstance` (the pod name).
    pub instance: Option<String>,
    /// Where to report cache sync, shutdown and broken loops (`--admin-addr`).
    pub health: Option<Arc<Health>>,
    /// Where to count reconciles, requests and status writes (`/metrics`).
    pub metrics: Option<Arc<Metrics>>,
    /// Do not watch or read Secrets (`--per-resource-secrets=false`):
    /// resources naming a Secret wait, saying why.
    pub without_secrets: bool,
    /// After shutdown begins, how long reconciles in flight may take before
    /// they are abandoned (`--shutdown-timeout`); `None`: as long as they need.
    pub shutdown_timeout: Option<Duration>,
    /// How often `health` learns whether the API answers (`--api-probe-interval`);
    /// `None`: never, and watch errors do not mark the API unreachable either
    /// (nothing could clear the mark). `run` probes only with `--admin-addr`.
    pub api_probe_interval: Option<Duration>,
    /// Tenant roles (RamRoleSelectors); `None`: off, every resource without
    /// a Secret uses the operator's identity.
    pub tenant_roles: Option<TenantRoleOptions>,
}

/// How tenant roles are assumed (`--namespace-roles`, `--require-namespace-role`).
#[derive(Clone, Debug)]
pub struct TenantRoleOptions {
    /// The STS endpoint (as for RRSA: `ALIBABA_CLOUD_STS_ENDPOINT`, `ALIBABA_CLOUD_STS_REGION`).
    pub sts_endpoint: reqwest::Url,
    /// When sessions are refreshed, and how failures are retried.
    pub refresh: crate::identity::RefreshPolicy,
    /// `--require-namespace-role`.
    pub require_namespace_role: bool,
}

/// How long the readiness probe waits for the API's answer.
const API_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `run` until SIGTERM or Ctrl+C.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(args.log_format, &args.log_level)?;
    let backoff = Backoff::new(args.retry_base_delay, args.retry_max_delay)?;
    let ecs = EcsClient::new(EcsClientConfig {
        endpoint: args.ecs_endpoint.clone(),
        allow_insecure_endpoint: args.allow_insecure_endpoint,
        signature_version: args.signature_version,
        ..EcsClientConfig::default()
    })
    .context("--ecs-endpoint")?;
    let election = if args.leader_elect {
        Some(leader::LeaderElection::from_flags(
            args.leader_election_namespace.as_deref(),
            args.leader_lease_duration,
            args.leader_renew_grace,
        )?)
    } else {
        None
    };
    let operator = OperatorCredentials::from_env(&args.identity.chain_options())
        .context("operator credentials")?;
    let status = operator.status();
    info!(
        source = status.source.map_or("none", |s| s.as_str()),
        state = status.state.as_str(),
        "operator credentials (for resources without a credentialsSecretRef)"
    );
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes (in-cluster service account, or KUBECONFIG)")?;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let health = Health::new();
    let metrics = Arc::new(Metrics::default());
    metrics.credentials(&status);
    // Without --leader-elect this process sends as soon as it starts: it leads.
    metrics.set_leader(election.is_none());
    if let Some(changes) = operator.changes() {
        let pod_events = super::OperatorEvents::from_env(
            client.clone(),
            std::env::var("POD_NAME").ok().filter(|n| !n.is_empty()),
        );
        tokio::spawn(watch_credentials(changes, metrics.clone(), pod_events));
    }
    // The admin server outlives the controllers so probes see the drain.
    let admin_stop = CancellationToken::new();
    let admin = match args.admin_addr {
        Some(addr) => {
            let listener = admin::bind(addr).await?;
            info!(addr = %listener.local_addr()?, "admin server: /livez, /readyz, /metrics");
            let stop = admin_stop.clone();
            Some(tokio::spawn(admin::serve(
                listener,
                health.clone(),
                metrics.clone(),
                async move { stop.cancelled().await },
            )))
        }
        None => None,
    };
    let tenant_roles = if args.namespace_roles {
        Some(TenantRoleOptions {
            sts_endpoint: crate::identity::chain::sts_endpoint_from(|n| std::env::var(n).ok())
                .context("the STS endpoint for tenant roles")?,
            // NB: a failing AssumeRole is usually a trust policy being fixed
            // in RAM, which nothing announces: retried at most 30 s apart.
            refresh: crate::identity::RefreshPolicy {
                backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(30))?,
                ..args.identity.chain_options().refresh
            },
            require_namespace_role: args.require_namespace_role,
        })
    } else {
        anyhow::ensure!(
            !args.require_namespace_role,
            "--require-namespace-role needs --namespace-roles=true: without RamRoleSelectors no resource without a credentialsSecretRef could ever be signed"
        );
        None
    };
    let options = WatchOptions {
        tenant_roles,
        namespaces: args.watch_namespaces,
        selector: args.selector,
        max_concurrent_reconciles: args.max_concurrent_reconciles,
        instance: std::env::var("POD_NAME").ok().filter(|n| !n.is_empty()),
        health: Some(health),
        metrics: Some(metrics.clone()),
        without_secrets: !args.per_resource_secrets,
        shutdown_timeout: Some(args.shutdown_timeout),
        // Only /readyz reads it: without the admin server, no probe requests.
        api_probe_interval: args.admin_addr.map(|_| args.api_probe_interval),
    };
    let settings = Arc::new(Settings {
        ecs,
        backoff,
        operator,
        pacer: Pacer::new(
            pacing_config(args.ecs_pacing, args.ecs_qps, args.ecs_burst),
            Some(metrics.clone()),
        ),
    });
    // Followers serve /livez (the admin server is up) but start no controller until they lead.
    let leadership = match &election {
        Some(election) => match leader::acquire(client.clone(), election, &shutdown).await {
            Ok(Some(leadership)) => {
                metrics.set_leader(true);
                leadership.exit_on_loss(shutdown.clone());
                Some(leadership)
            }
            Ok(None) => {
                admin_stop.cancel();
                return Ok(());
            }
            Err(err) => {
                admin_stop.cancel();
                return Err(err);
            }
        },
        None => None,
    };
    let result = run_controllers(client, settings, options, shutdown).await;
    if let Some(leadership) = leadership {
        leadership.release().await;
        metrics.set_leader(false);
    }
    admin_stop.cancel();
    if let Some(admin) = admin {
        match admin.await {
            Ok(Err(err)) => warn!(error = %err, "admin server"),
            Err(err) => warn!(error = %err, "admin server task"),
            Ok(Ok(())) => {}
        }
    }
    result
}

/// `--ecs-pacing`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PacingMode {
    /// Paced per access key and region once ECS throttles.
    Adaptive,
    /// Never paced (but for --ecs-qps).
    Off,
}

/// The pacing `--ecs-pacing`, `--ecs-qps` and `--ecs-burst` ask for.
pub fn pacing_config(mode: PacingMode, qps: Option<u32>, burst: Option<u32>) -> PacingConfig {
    PacingConfig {
        adaptive: mode == PacingMode::Adaptive,
        ceiling: qps.map(|qps| Ceiling {
            rate: f64::from(qps),
            burst: burst.unwrap_or(1),
        }),
    }
}

/// Follows the operator credentials' refreshes into `metrics`, with a
/// Warning log line while they fail (the error is redacted at its source)
/// and, in a pod, an Event about it on each transition.
async fn watch_credentials(
    mut changes: crate::identity::CredentialChanges,
    metrics: Arc<Metrics>,
    pod_events: Option<super::OperatorEvents>,
) {
    let mut last = None;
    while let Some(status) = changes.next().await {
        metrics.credentials(&status);
        if let (Some(events), Some(note)) =
            (&pod_events, super::decide::credential_event(last, &status))
        {
            events.publish(&note).await;
        }
        let source = status.source.map_or("none", |s| s.as_str());
        match status.state {
            CredentialState::RefreshFailing
            | CredentialState::Expired
            | CredentialState::Unavailable => warn!(
                source,
                state = status.state.as_str(),
                consecutive_failures = status.consecutive_failures,
                error = status.last_error.as_deref().unwrap_or_default(),
                "operator credentials could not be refreshed; resources without a credentialsSecretRef wait"
            ),
            state if last != Some(state) => info!(
                source,
                state = state.as_str(),
                access_key_id = status.access_key_id.as_deref().unwrap_or_default(),
                "operator credentials obtained"
            ),
            _ => debug!(source, "operator credentials refreshed"),
        }
        last = Some(status.state);
    }
}

/// Cancels `shutdown` on SIGTERM or Ctrl+C.
async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c().map(|_| "SIGINT");
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
                "SIGTERM"
            }
            Err(err) => {
                warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending().await
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<&str>();
    let name = tokio::select! {
        name = ctrl_c => name,
        name = term => name,
    };
    info!(
        signal = name,
        "stopping: no new work; waiting for requests in flight to be recorded"
    );
    shutdown.cancel();
}

/// Runs one controller per watched namespace (or one for all) until
/// `shutdown` is cancelled and every reconcile in flight has finished, or
/// until `options.shutdown_timeout` after `shutdown`: then the reconciles
/// still running are dropped, named in a Warning, and the result is an error.
pub async fn run_controllers(
    client: kube::Client,
    settings: Arc<Settings>,
    options: WatchOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let scopes: Vec<Option<String>> = if options.namespaces.is_empty() {
        vec![None]
    } else {
        options.namespaces.iter().cloned().map(Some).collect()
    };
    for scope in &scopes {
        check_access(
            &client,
            scope.as_deref(),
            options.selector.as_deref(),
            &shutdown,
        )
        .await?;
    }
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: REPORTING_CONTROLLER.to_string(),
            instance: options.instance.clone(),
        },
    );
    let metrics = options.metrics.clone().unwrap_or_default();
    let health = options.health.clone();
    let tenant_roles = match &options.tenant_roles {
        Some(tenant) => {
            check_tenant_access(&client, tenant.require_namespace_role, &shutdown).await?
        }
        None => false,
    }
    .then_some(options.tenant_roles.clone())
    .flatten();
    if let Some(health) = &health {
        // A resource cache and (unless told not to read Secrets) a Secret cache per scope;
        // with tenant roles, the selector and Namespace caches.
        let per_scope = if options.without_secrets { 1 } else { 2 };
        let tenant_caches = if tenant_roles.is_some() { 2 } else { 0 };
        health.expect_caches(per_scope * scopes.len() + tenant_caches);
        let (health, stop) = (health.clone(), shutdown.clone());
        tokio::spawn(async move {
            stop.cancelled().await;
            health.stopping();
        });
    }
    {
        // SIGTERM: stop taking work. Resources waiting for the pace have sent
        // and recorded nothing; they give up at once instead of holding the
        // shutdown until their turn.
        let (pacer, stop) = (settings.pacer.clone(), shutdown.clone());
        tokio::spawn(async move {
            stop.cancelled().await;
            pacer.close();
        });
    }
    let mut feeds = Vec::new();
    // Where watch errors are reported: only where the probe can clear them.
    let api_health = health
        .clone()
        .filter(|_| options.api_probe_interval.is_some());
    if let (Some(health), Some(every)) = (&api_health, options.api_probe_interval) {
        let probed: Api<CopyImageCancellation> = match scopes.first().and_then(Option::as_deref) {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        feeds.push(tokio::spawn(probe_api(probed, health.clone(), every)));
    }
    // Tenant roles: the selector and Namespace caches, fed by their own
    // tasks, each change passed on to every scope's controller so the
    // resources it may concern look again.
    let mut selector_wakers: Vec<futures::channel::mpsc::UnboundedSender<RamRoleSelector>> =
        Vec::new();
    let mut namespace_wakers: Vec<futures::channel::mpsc::UnboundedSender<Namespace>> = Vec::new();
    let mut wake_rx = Vec::new();
    for _ in &scopes {
        let (stx, srx) = futures::channel::mpsc::unbounded::<RamRoleSelector>();
        let (ntx, nrx) = futures::channel::mpsc::unbounded::<Namespace>();
        selector_wakers.push(stx);
        namespace_wakers.push(ntx);
        wake_rx.push((srx, nrx));
    }
    let tenancy = match &tenant_roles {
        None => None,
        Some(tenant) => {
            let (selectors, feed) = cluster_cache(
                Api::<RamRoleSelector>::all(client.clone()),
                |_| {},
                selector_wakers,
                api_health.clone(),
                "RamRoleSelectors",
            );
            feeds.push(feed);
            let (namespaces, feed) = cluster_cache(
                Api::<Namespace>::all(client.clone()),
                trim_namespace,
                namespace_wakers,
                api_health.clone(),
                "Namespaces",
            );
            feeds.push(feed);
            if let Some(health) = &health {
                report_synced(health.clone(), selectors.clone());
                report_synced(health.clone(), namespaces.clone());
            }
            let tenancy = Arc::new(super::roles::Tenancy {
                selectors,
                namespaces,
                roles: crate::identity::tenant::TenantRoles::new(
                    settings.operator.clone(),
                    tenant.sts_endpoint.clone(),
                    tenant.refresh,
                    Duration::from_secs(5),
                    Duration::from_secs(10),
                ),
                require_namespace_role: tenant.require_namespace_role,
            });
            feeds.push(tokio::spawn(super::roles::write_selector_statuses(
                client.clone(),
                tenancy.clone(),
                super::FIELD_MANAGER,
                shutdown.clone(),
            )));
            info!(
                require_namespace_role = tenant.require_namespace_role,
                "tenant roles on: resources without a credentialsSecretRef use the RamRoleSelector of their namespace"
            );
            Some(tenancy)
        }
    };
    let mut wake_rx = wake_rx.into_iter();
    let in_flight = Arc::new(InFlight::default());
    let concurrency = options.max_concurrent_reconciles.max(1);
    let permits = Arc::new(Semaphore::new(usize::from(concurrency)));
    let mut controllers = Vec::new();
    for scope in scopes {
        let (cics, secrets): (Api<CopyImageCancellation>, Api<Secret>) = match &scope {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
        let mut config = watcher::Config::default();
        if let Some(selector) = &options.selector {
            config = config.labels(selector);
        }
        // Controller::new's own watch and cache, with each object trimmed
        // before it is stored.
        let (resources, writer) = reflector::store::<CopyImageCancellation>();
        let trigger = watcher(cics, config)
            .modify(trim_resource)
            .reflect(writer)
            .applied_objects();
        let mut controller = Controller::for_stream(trigger, resources.clone())
            .with_config(controller::Config::default().concurrency(concurrency));
        metrics.watch_resources(resources.clone());
        if let Some(health) = &health {
            report_synced(health.clone(), resources.clone());
        }
        let secret_store = if options.without_secrets {
            None
        } else {
            // The Secret cache that credentials are read from, fed by its own
            // task so it fills even while every reconcile slot is busy. Each
            // Secret change is passed on only once the cache holds it, so the
            // reconcile it wakes reads the new keys.
            let (secret_store, writer) = reflector::store::<Secret>();
            let (changed_tx, changed_rx) =
                futures::channel::mpsc::unbounded::<Result<Secret, watcher::Error>>();
            let reporter = api_health.clone();
            let feed = watcher(secrets, watcher::Config::default())
                .default_backoff()
                .modify(trim_secret)
                .reflect(writer)
                .touched_objects()
                .for_each(move |event| {
                    match event {
                        // NB: fails only once the controller has stopped.
                        Ok(secret) => drop(changed_tx.unbounded_send(Ok(secret))),
                        Err(err) => {
                            report_api_trouble(reporter.as_deref(), &err);
                            warn!(error = %err, "watching Secrets failed; retrying")
                        }
                    }
                    std::future::ready(())
                });
            feeds.push(tokio::spawn(feed));
            if let Some(health) = &health {
                report_synced(health.clone(), secret_store.clone());
            }
            // A created or rotated Secret wakes the resources waiting on it.
            let resources = resources.clone();
            controller = controller.watches_stream(changed_rx, move |secret: Secret| {
                resources_using_secret(&secret, &resources.state())
            });
            Some(secret_store)
        };
        let (selector_rx, namespace_rx) = wake_rx.next().expect("one pair per scope");
        let mut ctx = Context::new(
            client.clone(),
            settings.clone(),
            secret_store,
            recorder.clone(),
            permits.clone(),
            metrics.clone(),
        )
        .with_reporting_instance(options.instance.clone());
        if let Some(tenancy) = &tenancy {
            ctx = ctx.with_tenancy(tenancy.clone());
            // A new, changed or deleted selector may move any resource that
            // has no Secret; a Namespace's labels, those in it.
            let all = resources.clone();
            controller = controller
                .watches_stream(selector_rx.map(Ok), move |_: RamRoleSelector| {
                    resources_without_secret(&all.state(), None)
                });
            let all = resources.clone();
            controller = controller.watches_stream(namespace_rx.map(Ok), move |ns: Namespace| {
                resources_without_secret(&all.state(), ns.metadata.name.as_deref())
            });
        }
        let ctx = Arc::new(ctx);
        let stop = shutdown.clone();
        let scope_name = scope
            .clone()
            .unwrap_or_else(|| "all namespaces".to_string());
        info!(scope = %scope_name, "watching CopyImageCancellations");
        let (health, stopping) = (health.clone(), shutdown.clone());
        let reporter = api_health.clone();
        let in_flight = in_flight.clone();
        let tracked = move |obj: Arc<CopyImageCancellation>, ctx: Arc<Context>| {
            let entry = in_flight.enter(&obj);
            async move {
                let _entry = entry;
                reconcile(obj, ctx).await
            }
        };
        let run = controller
            .graceful_shutdown_on(async move { stop.cancelled().await })
            .run(tracked, error_policy, ctx)
            .for_each(move |result| {
                match result {
                    Ok((obj, _)) => debug!(resource = %obj, "reconciled"),
                    Err(controller::Error::ObjectNotFound(obj)) => {
                        debug!(resource = %obj, "gone before its turn")
                    }
                    Err(controller::Error::QueueError(err)) => {
                        report_api_trouble(reporter.as_deref(), &err);
                        warn!(error = %err, "watching CopyImageCancellations failed; retrying")
                    }
                    Err(err) => warn!(error = %err, "controller"),
                }
                std::future::ready(())
            })
            .map(move |()| {
                if !stopping.is_cancelled()
                    && let Some(health) = health
                {
                    health.broken(format!("the controller for {scope_name} ended"));
                }
            });
        controllers.push(run);
    }
    let mut all = Box::pin(futures::future::join_all(controllers));
    let drained = match options.shutdown_timeout {
        None => {
            (&mut all).await;
            true
        }
        Some(limit) => tokio::select! {
            _ = &mut all => true,
            () = async {
                shutdown.cancelled().await;
                tokio::time::sleep(limit).await;
            } => false,
        },
    };
    // NB: read before the controllers (and with them the reconciles) are dropped.
    let abandoned = in_flight.names();
    drop(all);
    if let Some(health) = &health {
        health.stopping();
    }
    for feed in feeds {
        feed.abort();
    }
    if drained {
        info!("stopped");
        return Ok(());
    }
    // The reconciles were dropped with the controllers above; each one that
    // had sent a request left its write-ahead (outcome Unknown) in status.
    let limit = humantime::format_duration(options.shutdown_timeout.unwrap_or_default());
    warn!(
        count = abandoned.len(),
        resources = %abandoned_list(&abandoned, ABANDONED_LISTED),
        "--shutdown-timeout {limit} passed: abandoning reconciles still in flight; their attempts \
         are repeated after a restart (and may end PreviousAttemptMayHaveSucceeded)"
    );
    anyhow::bail!(
        "--shutdown-timeout {limit} passed with {} reconcile(s) still in flight",
        abandoned.len()
    )
}

/// At most this many names in the shutdown Warning (the count is always exact).
const ABANDONED_LISTED: usize = 50;

/// `ns/a, ns/b` for the first `most` of `names`, then how many more.
fn abandoned_list(names: &[String], most: usize) -> String {
    let mut list = names
        .iter()
        .take(most)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > most {
        list.push_str(&format!(" and {} more", names.len() - most));
    }
    if list.is_empty() {
        list.push_str("none");
    }
    list
}

/// The resources (`namespace/name`) whose reconcile is running, so that a
/// shutdown that runs out of time can say which ones it abandons.
#[derive(Debug, Default)]
struct InFlight(std::sync::Mutex<std::collections::BTreeMap<String, usize>>);

impl InFlight {
    /// Counts `obj` in until the returned entry is dropped (the reconcile
    /// finished, or was dropped with its controller).
    fn enter(self: &Arc<Self>, obj: &CopyImageCancellation) -> InFlightEntry {
        let key = format!(
            "{}/{}",
            obj.metadata.namespace.as_deref().unwrap_or_default(),
            obj.metadata.name.as_deref().unwrap_or_default()
        );
        *self.lock().entry(key.clone()).or_default() += 1;
        InFlightEntry {
            set: self.clone(),
            key,
        }
    }

    /// The resources in flight now, sorted.
    fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, usize>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One running reconcile in [`InFlight`].
struct InFlightEntry {
    set: Arc<InFlight>,
    key: String,
}

impl Drop for InFlightEntry {
    fn drop(&mut self) {
        let mut map = self.set.lock();
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// What a watch error says about reaching the API: `None` for 410 Gone (the
/// watcher's history was compacted; it lists again, nothing is wrong).
fn api_trouble(err: &watcher::Error) -> Option<String> {
    match err {
        watcher::Error::WatchError(status) if status.code == 410 => None,
        err => Some(err.to_string()),
    }
}

/// Marks the API unreachable in `health` when `err` says so.
fn report_api_trouble(health: Option<&Health>, err: &watcher::Error) {
    if let (Some(health), Some(why)) = (health, api_trouble(err)) {
        health.api_failed(&why);
    }
}

/// Every `every`, lists one CopyImageCancellation (metadata only) and tells
/// `health` whether the API answered. Watch errors mark the API unreachable
/// as they happen, but a watch that resumes on a quiet cluster says nothing,
/// so this is what clears the mark (and what notices a silent partition,
/// which an open watch only notices after minutes).
async fn probe_api(api: Api<CopyImageCancellation>, health: Arc<Health>, every: Duration) {
    let params = ListParams::default().limit(1);
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let sent = std::time::Instant::now();
        match tokio::time::timeout(API_PROBE_TIMEOUT, api.list_metadata(&params)).await {
            Ok(Ok(_)) => health.api_answered(sent),
            Ok(Err(err)) => {
                debug!(error = %err, "readiness probe: listing copyimagecancellations failed");
                health.api_failed(&format!("listing copyimagecancellations: {err}"));
            }
            Err(_) => health.api_failed(&format!(
                "listing copyimagecancellations: no answer within {}",
                humantime::format_duration(API_PROBE_TIMEOUT)
            )),
        }
    }
}

/// `kubectl apply`'s copy of the whole object (for a Secret: its values again).
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what no reconcile reads before an object is cached: managedFields
/// (often larger than the rest of a resource) and the last-applied copy.
fn trim_metadata(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// What the resource cache keeps of a CopyImageCancellation.
fn trim_resource(obj: &mut CopyImageCancellation) {
    trim_metadata(&mut obj.metadata);
}

/// What the Secret cache keeps: the credential keys only. With every
/// Secret of the watched namespaces cached, Helm release payloads and
/// certificates would otherwise cost megabytes.
fn trim_secret(secret: &mut Secret) {
    trim_metadata(&mut secret.metadata);
    let wanted = |key: &String| super::secrets::CREDENTIAL_KEYS.contains(&key.as_str());
    if let Some(data) = &mut secret.data {
        data.retain(|key, _| wanted(key));
    }
    if let Some(data) = &mut secret.string_data {
        data.retain(|key, _| wanted(key));
    }
}

/// The unfinished resources without a credentialsSecretRef (in `namespace`
/// when given): those whose identity a selector or Namespace change may move.
fn resources_without_secret(
    resources: &[Arc<CopyImageCancellation>],
    namespace: Option<&str>,
) -> Vec<kube::runtime::reflector::ObjectRef<CopyImageCancellation>> {
    resources
        .iter()
        .filter(|r| r.spec.credentials_secret_ref.is_none())
        .filter(|r| namespace.is_none_or(|ns| r.metadata.namespace.as_deref() == Some(ns)))
        .filter(|r| {
            !r.status
                .as_ref()
                .is_some_and(|s| s.phase.is_some_and(crate::resource::Phase::is_finished))
        })
        .map(|r| kube::runtime::reflector::ObjectRef::from_obj(r.as_ref()))
        .collect()
}

/// What the Namespace cache keeps: name and labels.
fn trim_namespace(ns: &mut Namespace) {
    trim_metadata(&mut ns.metadata);
    ns.spec = None;
    ns.status = None;
}

/// Whether tenant roles can be used: the RamRoleSelector CRD is installed and
/// the operator may list selectors and Namespaces. A missing CRD turns them
/// off with a warning (no selector can exist), unless they are required.
async fn check_tenant_access(
    client: &kube::Client,
    required: bool,
    shutdown: &CancellationToken,
) -> anyhow::Result<bool> {
    let params = ListParams::default().limit(1);
    let selectors: Api<RamRoleSelector> = Api::all(client.clone());
    let mut pause = CHECK_ACCESS_FIRST_PAUSE;
    let listed = loop {
        match selectors.list_metadata(&params).await {
            Err(err) if transient(&err) && !shutdown.is_cancelled() => {
                warn!(error = %err, "listing ramroleselectors failed; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(CHECK_ACCESS_MAX_PAUSE);
            }
            other => break other,
        }
    };
    match listed {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 && !required => {
            warn!(
                "the RamRoleSelector CRD is not installed: every resource without a credentialsSecretRef \
                 uses the operator's identity; install crds/ramroleselectors.yaml and restart to use tenant roles"
            );
            return Ok(false);
        }
        Err(kube::Error::Api(status)) if status.code == 404 => anyhow::bail!(
            "--require-namespace-role needs the RamRoleSelector CRD: kubectl apply -f crds/ramroleselectors.yaml"
        ),
        Err(kube::Error::Api(status)) if status.code == 403 => anyhow::bail!(
            "not allowed to list ramroleselectors: {}; grant the operator's RBAC role (the chart's), or run with --namespace-roles=false",
            status.message
        ),
        Err(err) => return Err(err).context("listing ramroleselectors"),
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    match namespaces.list_metadata(&params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 403 => anyhow::bail!(
            "not allowed to list namespaces (tenant roles select them by labels): {}; grant the operator's RBAC role, or run with --namespace-roles=false",
            status.message
        ),
        Err(err) => Err(err).context("listing namespaces"),
    }
}

/// A cluster-wide cache of `K` (objects trimmed by `trim`) fed by its own
/// watch task, returned to be awaited; every change is passed on to each of
/// `wakers` (one per scope's controller), and watch errors are reported to
/// `reporter` and logged naming `what`.
fn cluster_cache<K>(
    api: Api<K>,
    trim: fn(&mut K),
    wakers: Vec<futures::channel::mpsc::UnboundedSender<K>>,
    reporter: Option<Arc<Health>>,
    what: &'static str,
) -> (reflector::Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let feed = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(trim)
        .reflect(writer)
        .touched_objects()
        .for_each(move |event| {
            match event {
                Ok(object) => {
                    for waker in &wakers {
                        drop(waker.unbounded_send(object.clone()));
                    }
                }
                Err(err) => {
                    report_api_trouble(reporter.as_deref(), &err);
                    warn!(error = %err, "watching {what} failed; retrying")
                }
            }
            std::future::ready(())
        });
    (store, tokio::spawn(feed))
}

/// Marks one cache synced in `health` once `store` has its first list.
fn report_synced<K>(health: Arc<Health>, store: reflector::Store<K>)
where
    K: kube::Resource + Clone + Send + Sync + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Send + Sync,
{
    tokio::spawn(async move {
        if super::cache_ready(&store, None).await {
            health.cache_synced();
        }
    });
}

/// The start-up check's first pause after a transient failure; it doubles
/// with each failure up to [`CHECK_ACCESS_MAX_PAUSE`].
const CHECK_ACCESS_FIRST_PAUSE: Duration = Duration::from_millis(250);

/// The longest pause between two start-up checks: one one-item LIST per 5 s
/// while the API server is down is no load, and the operator starts within 5 s
/// of its recovery.
const CHECK_ACCESS_MAX_PAUSE: Duration = Duration::from_secs(5);

/// Whether a failed API call may well succeed if repeated.
fn transient(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => status.code >= 500 || status.code == 429,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// Fails early, with the fix, when the CRD is missing, access is denied, or
/// the selector is malformed. While the API server fails transiently (5xx,
/// 429, connection errors) it tries again until it answers or `shutdown`,
/// as the watches do later: an outage of any length is waited out (the
/// operator is not ready meanwhile) instead of crash-looping the Pod, whose
/// restarts would only wait longer and longer (found by the chaos soak, where
/// a limit of 8 tries ran out).
async fn check_access(
    client: &kube::Client,
    namespace: Option<&str>,
    selector: Option<&str>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let api: Api<CopyImageCancellation> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut params = ListParams::default().limit(1);
    if let Some(selector) = selector {
        params = params.labels(selector);
    }
    let scope = namespace.map_or_else(
        || "all namespaces".to_string(),
        |ns| format!("namespace {ns}"),
    );
    let mut pause = CHECK_ACCESS_FIRST_PAUSE;
    let mut tries: u64 = 1;
    let listed = loop {
        match api.list_metadata(&params).await {
            Err(err) if transient(&err) => {
                warn!(error = %err, tries, "listing copyimagecancellations in {scope} failed; trying again");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.cancelled() => break Err(err),
                }
                pause = (pause * 2).min(CHECK_ACCESS_MAX_PAUSE);
                tries += 1;
            }
            other => break other,
        }
    };
    match listed {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => anyhow::bail!(
            "the CopyImageCancellation CRD is not installed: kubectl apply -f crds/copyimagecancellations.yaml"
        ),
        Err(kube::Error::Api(status)) if status.code == 403 => anyhow::bail!(
            "not allowed to list copyimagecancellations in {scope}: {}; grant the operator's RBAC role",
            status.message
        ),
        Err(kube::Error::Api(status)) if status.code == 400 && selector.is_some() => anyhow::bail!(
            "--selector {:?} was refused by the API server: {}",
            selector.unwrap_or_default(),
            status.message
        ),
        Err(err) => Err(err).with_context(|| format!("listing copyimagecancellations in {scope}")),
    }
}

/// Sets up logging on stderr.
pub fn init_logging(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level).with_context(|| {
        format!(
            "--log-level {level:?}: expected a level such as info or debug, or filter directives"
        )
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        // The current span (`reconcile` with namespace, resource, attempt,
        // request_id) on every line, and the list of spans it sits in.
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
    result.map_err(|err| anyhow::anyhow!("setting up logging: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resource `name` for m-abc in cn-hangzhou, with the spec's defaults.
    fn resource(name: &str) -> CopyImageCancellation {
        CopyImageCancellation::new(
            name,
            crate::resource::CopyImageCancellationSpec {
                region_id: "cn-hangzhou".into(),
                image_id: "m-abc".into(),
                credentials_secret_ref: None,
                backoff_limit: 6,
                active_deadline_seconds: None,
            },
        )
    }

    #[test]
    fn cached_objects_keep_what_reconciles_read_and_nothing_else() {
        use k8s_openapi::ByteString;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
        let meta = |extra: &[(&str, &str)]| {
            let mut annotations: std::collections::BTreeMap<String, String> = extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            annotations.insert(LAST_APPLIED.into(), "{\"the\": \"whole object\"}".into());
            ObjectMeta {
                name: Some("x".into()),
                namespace: Some("images".into()),
                uid: Some("u".into()),
                resource_version: Some("7".into()),
                generation: Some(2),
                labels: Some([("team".to_string(), "images".to_string())].into()),
                annotations: Some(annotations),
                managed_fields: Some(vec![ManagedFieldsEntry {
                    manager: Some("kubectl".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }
        };

        let mut secret = Secret {
            metadata: meta(&[("owner", "platform")]),
            data: Some(
                [
                    ("accessKeyId", "id"),
                    ("accessKeySecret", "s"),
                    ("securityToken", "t"),
                    ("release", "a large Helm payload"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
            ),
            string_data: Some([("tls.key".to_string(), "pem".to_string())].into()),
            ..Default::default()
        };
        trim_secret(&mut secret);
        let keys: Vec<&String> = secret.data.as_ref().unwrap().keys().collect();
        assert_eq!(keys, ["accessKeyId", "accessKeySecret", "securityToken"]);
        assert_eq!(secret.string_data, Some(Default::default()));
        assert_eq!(secret.metadata.managed_fields, None);
        assert_eq!(
            secret.metadata.annotations,
            Some([("owner".to_string(), "platform".to_string())].into())
        );
        let key = super::super::secrets::access_key_from_secret(Some(&secret), "images", "x")
            .expect("the key survives trimming");
        assert_eq!((key.id.as_str(), key.secret()), ("id", "s"));

        let mut cic = resource("x");
        cic.metadata = meta(&[]);
        let before = cic.clone();
        trim_resource(&mut cic);
        assert_eq!(cic.metadata.managed_fields, None);
        assert_eq!(
            cic.metadata.annotations, None,
            "only last-applied was there"
        );
        let mut expected = before;
        expected.metadata.managed_fields = None;
        expected.metadata.annotations = None;
        assert_eq!(
            cic, expected,
            "spec, status, name, uid, version, labels kept"
        );
    }

    #[test]
    fn the_shutdown_warning_names_what_is_abandoned_and_bounds_the_list() {
        let names = |n: usize| (0..n).map(|i| format!("ns/r{i}")).collect::<Vec<_>>();
        for (names, most, want) in [
            (names(0), 3, "none"),
            (names(1), 3, "ns/r0"),
            (names(3), 3, "ns/r0, ns/r1, ns/r2"),
            (names(5), 3, "ns/r0, ns/r1, ns/r2 and 2 more"),
        ] {
            assert_eq!(abandoned_list(&names, most), want);
        }
    }

    #[test]
    fn in_flight_counts_each_resource_until_its_last_reconcile_ends() {
        let set = Arc::new(InFlight::default());
        let cic = |ns: &str, name: &str| {
            let mut c = resource(name);
            c.metadata.namespace = Some(ns.into());
            c
        };
        let b = set.enter(&cic("images", "b"));
        let a1 = set.enter(&cic("images", "a"));
        let a2 = set.enter(&cic("images", "a"));
        assert_eq!(set.names(), ["images/a", "images/b"]);
        drop(a1);
        assert_eq!(set.names(), ["images/a", "images/b"]);
        drop((a2, b));
        assert!(set.names().is_empty());
    }

    #[test]
    fn only_a_gone_watch_is_not_api_trouble() {
        let status = |code: u16| {
            Box::new(kube::core::Status {
                code,
                message: "m".into(),
                ..kube::core::Status::default()
            })
        };
        let refused = || kube::Error::Api(status(503));
        for (err, trouble) in [
            (watcher::Error::WatchError(status(410)), false),
            (watcher::Error::WatchError(status(500)), true),
            (watcher::Error::InitialListFailed(refused()), true),
            (watcher::Error::WatchStartFailed(refused()), true),
            (watcher::Error::WatchFailed(refused()), true),
            (watcher::Error::NoResourceVersion, true),
        ] {
            let why = api_trouble(&err);
            assert_eq!(why.is_some(), trouble, "{err}");
            if let Some(why) = why {
                assert_eq!(why, err.to_string());
            }
        }
    }

    #[test]
    fn shutdown_and_probe_flags_have_their_defaults_and_refuse_nonsense() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: RunArgs,
        }
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(cli.args.shutdown_timeout, Duration::from_secs(25));
        assert_eq!(cli.args.api_probe_interval, Duration::from_secs(5));
        let cli = Cli::try_parse_from(["x", "--shutdown-timeout", "45s"]).unwrap();
        assert_eq!(cli.args.shutdown_timeout, Duration::from_secs(45));
        for (flag, value, says) in [
            ("--shutdown-timeout", "soon", "--shutdown-timeout"),
            ("--api-probe-interval", "10ms", "at least 100ms"),
            ("--api-probe-interval", "often", "--api-probe-interval"),
        ] {
            let err = Cli::try_parse_from(["x", flag, value])
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains(says), "{flag} {value}: {err}");
        }
    }

    #[test]
    fn pacing_flags_default_to_adaptive_without_a_ceiling_and_refuse_nonsense() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: RunArgs,
        }
        let adaptive = |ceiling| PacingConfig {
            adaptive: true,
            ceiling,
        };
        let rows: [(&[&str], PacingConfig); 4] = [
            (&[], adaptive(None)),
            (
                &["--ecs-qps", "3"],
                adaptive(Some(Ceiling {
                    rate: 3.0,
                    burst: 1,
                })),
            ),
            (
                &["--ecs-qps", "3", "--ecs-burst", "4"],
                adaptive(Some(Ceiling {
                    rate: 3.0,
                    burst: 4,
                })),
            ),
            (
                &["--ecs-pacing", "off"],
                PacingConfig {
                    adaptive: false,
                    ceiling: None,
                },
            ),
        ];
        for (flags, want) in rows {
            let cli = Cli::try_parse_from(["x"].iter().chain(flags)).unwrap();
            let a = cli.args;
            assert_eq!(
                pacing_config(a.ecs_pacing, a.ecs_qps, a.ecs_burst),
                want,
                "{flags:?}"
            );
        }
        for (flags, named) in [
            (&["--ecs-qps", "0"][..], "--ecs-qps"),
            (&["--ecs-qps", "5", "--ecs-burst", "0"], "--ecs-burst"),
            // A burst without a ceiling means nothing: refused, not ignored.
            (&["--ecs-burst", "5"], "--ecs-qps"),
            (&["--ecs-pacing", "fixed"], "adaptive"),
        ] {
            let err = Cli::try_parse_from(["x"].iter().chain(flags))
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains(named), "{flags:?}: {err}");
        }
    }
}
