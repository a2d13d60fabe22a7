//! Leader election for `run --leader-elect`: the coordination.k8s.io Lease
//! `copyimage-canceller`, held through `kube-lease-manager`, so that of several
//! replicas only one runs the controllers that send CancelCopyImage.

use std::time::Duration;

use anyhow::{Context as _, bail};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use rand::Rng as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// The name of the Lease the replicas compete for.
pub const LEASE_NAME: &str = "copyimage-canceller";

/// Where Kubernetes mounts the pod's namespace.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// How long releasing the Lease may take on the way out.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// Leader-election settings, resolved from `run`'s flags and the pod's environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderElection {
    /// Namespace of the Lease.
    pub namespace: String,
    /// This replica's holder identity.
    pub identity: String,
    /// Seconds a lease stays valid after its last renewal.
    pub duration_secs: u64,
    /// Seconds before expiry at which the holder renews.
    pub grace_secs: u64,
}

impl LeaderElection {
    /// Resolves the settings from the flags, `POD_NAMESPACE`, the service-account
    /// namespace file, `POD_NAME` and the hostname.
    pub fn from_flags(
        namespace_flag: Option<&str>,
        lease_duration: Duration,
        renew_grace: Duration,
    ) -> anyhow::Result<Self> {
        let env = |name: &str| std::env::var(name).ok();
        let file = std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE).ok();
        let namespace = lease_namespace(
            namespace_flag,
            env("POD_NAMESPACE").as_deref(),
            file.as_deref(),
        )?;
        let (duration_secs, grace_secs) = lease_timing(lease_duration, renew_grace)?;
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| env("HOSTNAME"));
        let suffix: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(6)
            .map(|b| char::from(b).to_ascii_lowercase())
            .collect();
        let identity = holder_identity(env("POD_NAME").as_deref(), hostname.as_deref(), &suffix);
        Ok(Self {
            namespace,
            identity,
            duration_secs,
            grace_secs,
        })
    }
}

/// The Lease's namespace: the flag, else `POD_NAMESPACE`, else the
/// service-account namespace file; an error asking for the flag otherwise.
pub fn lease_namespace(
    flag: Option<&str>,
    pod_namespace: Option<&str>,
    service_account_file: Option<&str>,
) -> anyhow::Result<String> {
    [flag, pod_namespace, service_account_file]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|ns| !ns.is_empty())
        .map(str::to_owned)
        .context(
            "--leader-elect needs the Lease's namespace: pass --leader-election-namespace NS \
             (outside a pod neither POD_NAMESPACE nor the service-account namespace file is there)",
        )
}

/// The holder identity: the pod name (unique within the namespace), else the
/// hostname plus a random suffix (two processes on one host must differ).
pub fn holder_identity(pod_name: Option<&str>, hostname: Option<&str>, suffix: &str) -> String {
    if let Some(pod) = pod_name.map(str::trim).filter(|p| !p.is_empty()) {
        return pod.to_owned();
    }
    let host = hostname
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .unwrap_or("copyimage-canceller");
    format!("{host}-{suffix}")
}

/// Whole seconds for the lease manager: duration and grace at least 1 s, grace below duration.
pub fn lease_timing(duration: Duration, grace: Duration) -> anyhow::Result<(u64, u64)> {
    let (d, g) = (duration.as_secs(), grace.as_secs());
    if d == 0 || g == 0 {
        bail!("--leader-lease-duration and --leader-renew-grace must be at least 1s");
    }
    if g >= d {
        bail!("--leader-renew-grace ({g}s) must be shorter than --leader-lease-duration ({d}s)");
    }
    Ok((d, g))
}

/// A held Lease: renewed in the background until [`Leadership::release`].
pub struct Leadership {
    receiver: watch::Receiver<bool>,
    task: JoinHandle<kube_lease_manager::Result<LeaseManager>>,
    identity: String,
}

/// Waits until this replica holds the Lease. `None` when `shutdown` came first
/// (the attempt is then abandoned and anything held released).
pub async fn acquire(
    client: kube::Client,
    election: &LeaderElection,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<Leadership>> {
    let manager = LeaseManagerBuilder::new(client, LEASE_NAME)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_duration(election.duration_secs)
        .with_grace(election.grace_secs)
        .build()
        .await
        .with_context(|| {
            format!(
                "leader election: Lease {}/{LEASE_NAME} (needs get/create/patch on coordination.k8s.io leases)",
                election.namespace
            )
        })?;
    let (mut receiver, task) = manager.watch().await;
    info!(
        lease = LEASE_NAME,
        namespace = %election.namespace,
        identity = %election.identity,
        "waiting to become the leader"
    );
    let held = tokio::select! {
        held = receiver.wait_for(|leader| *leader) => held.is_ok(),
        () = shutdown.cancelled() => false,
    };
    let leadership = Leadership {
        receiver,
        task,
        identity: election.identity.clone(),
    };
    if held {
        info!(identity = %leadership.identity, "became the leader");
        Ok(Some(leadership))
    } else {
        leadership.release().await;
        Ok(None)
    }
}

impl Leadership {
    /// Exits the process (status 1) as soon as the Lease is lost, unless
    /// `shutdown` came first: no send may start once another replica may lead,
    /// and the restarted process rejoins as a follower (as controller-runtime does).
    pub fn exit_on_loss(&self, shutdown: CancellationToken) {
        let mut receiver = self.receiver.clone();
        let identity = self.identity.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = receiver.wait_for(|leader| !*leader) => {
                    error!(%identity, "lost the leader Lease: exiting so that only the new leader sends");
                    std::process::exit(1);
                }
                () = shutdown.cancelled() => {}
            }
        });
    }

    /// Gives the Lease up so that another replica takes over without waiting for it to expire.
    pub async fn release(self) {
        let Self {
            receiver,
            task,
            identity,
        } = self;
        // Closing the last receiver makes the manager's task release and end.
        drop(receiver);
        match tokio::time::timeout(RELEASE_TIMEOUT, task).await {
            Ok(Ok(Ok(_))) => info!(%identity, "released the leader Lease"),
            Ok(Ok(Err(err))) => warn!(%identity, error = %err, "releasing the leader Lease"),
            Ok(Err(err)) => warn!(%identity, error = %err, "leader election task"),
            Err(_) => warn!(%identity, "releasing the leader Lease timed out; it will expire"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_comes_from_flag_then_env_then_file() {
        // (flag, POD_NAMESPACE, service-account file, expected)
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
        );
        let cases: &[Case] = &[
            (Some("ops"), Some("env"), Some("file"), Some("ops")),
            (None, Some("env"), Some("file"), Some("env")),
            (None, Some(""), Some("file\n"), Some("file")),
            (None, None, Some("file\n"), Some("file")),
            (None, None, None, None),
            (None, Some(" "), Some(""), None),
        ];
        for (flag, env, file, want) in cases {
            let got = lease_namespace(*flag, *env, *file);
            match want {
                Some(want) => assert_eq!(got.unwrap(), *want, "{flag:?} {env:?} {file:?}"),
                None => assert!(
                    got.unwrap_err()
                        .to_string()
                        .contains("--leader-election-namespace"),
                    "{flag:?} {env:?} {file:?}"
                ),
            }
        }
    }

    #[test]
    fn identity_is_pod_name_or_host_with_suffix() {
        let cases = [
            (Some("cic-7d9f"), Some("node"), "cic-7d9f"),
            (Some(""), Some("node\n"), "node-abc123"),
            (None, None, "copyimage-canceller-abc123"),
        ];
        for (pod, host, want) in cases {
            assert_eq!(holder_identity(pod, host, "abc123"), want);
        }
    }

    #[test]
    fn timing_needs_whole_seconds_and_grace_below_duration() {
        let s = Duration::from_secs;
        assert_eq!(lease_timing(s(15), s(5)).unwrap(), (15, 5));
        assert!(lease_timing(s(5), s(5)).is_err());
        assert!(lease_timing(s(0), s(1)).is_err());
        assert!(lease_timing(s(3), Duration::from_millis(500)).is_err());
    }
}
