//! A local Alibaba Cloud ECS `CancelCopyImage` endpoint that checks requests
//! like the real service (RPC V1 signature, timestamp skew, nonce reuse, STS
//! token, region, image state) and answers with the same codes, statuses and
//! bodies, plus scriptable faults. For tests, the demo, and users' staging.
//!
//! ```text
//! HTTP request ──▶ server (I/O: read, delay, write)
//!                    │ merged params, method, now
//!                    ▼
//!              state::SimulatorState::decide (pure)
//!                    ├─ verify::check      signature, timestamp, key, STS, params
//!                    ├─ verify::NonceCache replay refusal
//!                    ├─ quota::QuotaMeter  flow control per key and region (quota mode)
//!                    ├─ faults::FaultPlan  scripted faults, in order
//!                    └─ images             copying → cancelled (gone)
//!                    ▼
//!              render (JSON / XML / proxy pages)
//! ```
//!
//! Control routes under `/_simulator/` change images and faults at run time
//! and read the request log; see [`server`].

pub mod cli;
mod clock;
pub mod faults;
pub mod outage;
pub mod policy;
pub mod quota;
pub mod render;
mod server;
pub mod state;
pub mod verify;
pub mod verify_v3;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use server::Shared;

use crate::access_key::AccessKey;

pub use clock::{Clock, ManualClock, SystemClock};
pub use faults::{FaultCount, FaultKind, FaultSpec, FaultTarget};
pub use outage::{OutageMode, OutagePlan};
pub use quota::QuotaLimits;
pub use state::{ConnectionFate, ImageState, RequestRecord};

/// Region IDs the simulator knows unless told otherwise: Alibaba Cloud's public regions.
pub const BUILTIN_REGIONS: &[&str] = &[
    "cn-qingdao",
    "cn-beijing",
    "cn-zhangjiakou",
    "cn-huhehaote",
    "cn-wulanchabu",
    "cn-hangzhou",
    "cn-shanghai",
    "cn-nanjing",
    "cn-fuzhou",
    "cn-wuhan-lr",
    "cn-shenzhen",
    "cn-heyuan",
    "cn-guangzhou",
    "cn-chengdu",
    "cn-hongkong",
    "cn-shanghai-finance-1",
    "cn-shenzhen-finance-1",
    "cn-beijing-finance-1",
    "cn-north-2-gov-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-southeast-1",
    "ap-southeast-3",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "us-east-1",
    "us-west-1",
    "na-south-1",
    "eu-west-1",
    "eu-central-1",
    "me-east-1",
    "me-central-1",
];

/// `HostId` in error bodies, as the central ECS endpoint sends it.
pub const DEFAULT_HOST_ID: &str = "ecs.aliyuncs.com";

/// How to start a simulator.
#[derive(Clone, Debug)]
pub struct SimulatorConfig {
    /// Address to listen on (default `127.0.0.1:0`, a free port).
    pub listen: SocketAddr,
    /// Access keys it accepts.
    pub keys: Vec<AccessKey>,
    /// Images at start.
    pub images: Vec<(String, ImageState)>,
    /// Faults at start, in order.
    pub faults: Vec<FaultSpec>,
    /// Known region IDs (default [`BUILTIN_REGIONS`]).
    pub regions: BTreeSet<String>,
    /// Largest accepted `Timestamp` skew (default 15 minutes, like ECS).
    pub max_skew: Duration,
    /// Delay before every API answer.
    pub latency: Duration,
    /// Source of time.
    pub clock: Arc<dyn Clock>,
    /// `HostId` in error bodies.
    pub host_id: String,
    /// How many live nonces are remembered before requests are refused.
    pub nonce_capacity: usize,
    /// How many requests the log keeps.
    pub request_log_capacity: usize,
    /// Flow control per access key and region (default: none).
    pub quota: QuotaLimits,
    /// Whole-endpoint outages to start on a timer (`--outage`).
    pub outages: Vec<OutagePlan>,
}

impl SimulatorConfig {
    /// A config accepting `keys`, with defaults for everything else.
    pub fn new(keys: impl IntoIterator<Item = AccessKey>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            keys: keys.into_iter().collect(),
            images: Vec::new(),
            faults: Vec::new(),
            regions: BUILTIN_REGIONS.iter().map(|r| (*r).to_owned()).collect(),
            max_skew: verify::DEFAULT_MAX_SKEW,
            latency: Duration::ZERO,
            clock: Arc::new(SystemClock),
            host_id: DEFAULT_HOST_ID.to_owned(),
            nonce_capacity: 100_000,
            request_log_capacity: 10_000,
            quota: QuotaLimits::default(),
            outages: Vec::new(),
        }
    }

    /// Adds an image.
    pub fn with_image(mut self, id: impl Into<String>, state: ImageState) -> Self {
        self.images.push((id.into(), state));
        self
    }

    /// Adds a fault.
    pub fn with_fault(mut self, fault: FaultSpec) -> Self {
        self.faults.push(fault);
        self
    }

    /// Uses this clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Listens on this address.
    pub fn with_listen(mut self, listen: SocketAddr) -> Self {
        self.listen = listen;
        self
    }
}

/// The simulator, started with [`EcsSimulator::start`].
#[derive(Debug)]
pub struct EcsSimulator;

impl EcsSimulator {
    /// Binds `config.listen` and serves until [`SimulatorHandle::shutdown`] or the handle is dropped.
    pub async fn start(config: SimulatorConfig) -> anyhow::Result<SimulatorHandle> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| {
                anyhow::anyhow!("ecs-simulator cannot listen on {}: {e}", config.listen)
            })?;
        let addr = listener.local_addr()?;
        let mut faults = faults::FaultPlan::default();
        for fault in config.faults {
            faults.push(fault);
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(state::SimulatorState {
                keys: verify::KeyRing::new(config.keys),
                regions: config.regions,
                max_skew: config.max_skew,
                images: config.images.into_iter().collect(),
                faults,
                nonces: verify::NonceCache::new(config.nonce_capacity, config.max_skew),
                requests: VecDeque::new(),
                request_log_capacity: config.request_log_capacity,
                quota: quota::QuotaMeter::new(config.quota),
                session_policies: BTreeMap::new(),
            }),
            clock: config.clock,
            latency: config.latency,
            host_id: config.host_id,
            shutdown: CancellationToken::new(),
            outage: tokio::sync::watch::Sender::new(None),
            outage_generation: std::sync::atomic::AtomicU64::new(0),
            connections: Mutex::new(CancellationToken::new()),
            listening: tokio::sync::watch::Sender::new(true),
        });
        let task = tokio::spawn(server::accept_loop(listener, shared.clone()));
        for plan in config.outages {
            let shared = shared.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(plan.after) => {}
                    _ = shared.shutdown.cancelled() => return,
                }
                server::set_outage(&shared, Some(plan.mode), plan.lasts);
            });
        }
        Ok(SimulatorHandle {
            addr,
            shared,
            task: Some(task),
        })
    }
}

/// Controls a running simulator. Dropping it stops the simulator.
#[derive(Debug)]
pub struct SimulatorHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

impl SimulatorHandle {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, to give clients as their endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The request log, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.state().requests.iter().cloned().collect()
    }

    /// Empties the request log.
    pub fn clear_requests(&self) {
        self.shared.state().requests.clear();
    }

    /// Creates or replaces an image.
    pub fn set_image(&self, id: impl Into<String>, state: ImageState) {
        self.shared.state().images.insert(id.into(), state);
    }

    /// Removes an image, returning its state.
    pub fn remove_image(&self, id: &str) -> Option<ImageState> {
        self.shared.state().images.remove(id)
    }

    /// The state of an image (`None` once a copy was cancelled).
    pub fn image(&self, id: &str) -> Option<ImageState> {
        self.shared.state().images.get(id).copied()
    }

    /// Appends a fault.
    pub fn add_fault(&self, fault: FaultSpec) {
        self.shared.state().faults.push(fault);
    }

    /// Forgets every fault.
    pub fn clear_faults(&self) {
        self.shared.state().faults.clear();
    }

    /// Faults not yet spent, in order.
    pub fn pending_faults(&self) -> Vec<FaultSpec> {
        self.shared.state().faults.pending().to_vec()
    }

    /// Replaces the quota limits (what the current windows counted stays).
    pub fn set_quota(&self, limits: QuotaLimits) {
        self.shared.state().quota.set_limits(limits);
    }

    /// Accepts another key (or replaces the one with the same ID).
    pub fn add_key(&self, key: AccessKey) {
        self.shared.state().keys.insert(key);
    }

    /// Accepts a key minted with a session `policy` (STS AssumeRole): its
    /// requests outside the policy are refused with `Forbidden.RAM`.
    pub fn add_key_with_policy(&self, key: AccessKey, policy: Option<String>) {
        let mut state = self.shared.state();
        match policy {
            Some(policy) => state.session_policies.insert(key.id.clone(), policy),
            None => state.session_policies.remove(&key.id),
        };
        state.keys.insert(key);
    }

    /// Stops accepting the key with this ID (as after a rotation), returning whether it was known.
    pub fn remove_key(&self, id: &str) -> bool {
        self.shared.state().keys.remove(id).is_some()
    }

    /// Starts a whole-endpoint outage (`Some`), for `lasts` when given, or
    /// ends it (`None`). A `refuse` outage closes the port and its open
    /// connections and binds it again when it ends; the end of a `blackhole`
    /// cuts the requests it held. Returns once the
    /// port is closed (refuse) or listening (anything else).
    pub async fn set_outage(&self, mode: Option<OutageMode>, lasts: Option<Duration>) {
        server::set_outage(&self.shared, mode, lasts);
        let want = mode != Some(OutageMode::Refuse);
        let mut listening = self.shared.listening.subscribe();
        // NB: an error means the accept loop ended (shutdown): nothing to wait for.
        let _ = listening.wait_for(|now| *now == want).await;
    }

    /// The outage in force.
    pub fn outage(&self) -> Option<OutageMode> {
        self.shared.outage()
    }

    /// Stops accepting, ends held connections, and waits for the listener to close.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.cancel();
        if let Some(task) = self.task.take() {
            // NB: a panic in the accept loop has nothing left to report here.
            let _ = task.await;
        }
    }
}

impl Drop for SimulatorHandle {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}
