//! Host name lookup for the ECS endpoint that tells a name that does not
//! exist (NXDOMAIN) from a lookup that failed for now (a DNS server down, a
//! timeout): the first is a region that does not exist, the second an outage.
//!
//! reqwest's own resolver turns every failure into the same opaque error;
//! this one asks `getaddrinfo` for its `EAI_*` code and hands reqwest a typed
//! [`HostNotFound`] that the client finds again in the error's source chain.
//! A "no such name" is believed only when [`CONFIRMATIONS`] lookups in a row
//! say so, [`CONFIRM_SPACING`] apart: one bad answer from a flapping DNS
//! server must not fail every resource of a region.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// How many lookups in a row must say "no such name" before it is believed.
pub const CONFIRMATIONS: u32 = 3;
/// The pause between those lookups (a negative answer cached by a resolver
/// for a few seconds is still one server's word, but a DNS server that
/// briefly answered wrong usually recovers within it).
pub const CONFIRM_SPACING: Duration = Duration::from_millis(500);

/// What one lookup said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupError {
    /// The name does not exist (`EAI_NONAME`, NXDOMAIN).
    NoSuchName,
    /// Anything else: a temporary failure, a server that did not answer.
    Failed(String),
}

/// Looks a host name up. Implemented by [`SystemLookup`]; tests inject their own.
pub trait HostLookup: Send + Sync + fmt::Debug {
    /// The addresses of `host`.
    fn lookup(&self, host: &str) -> BoxFuture<'static, Result<Vec<IpAddr>, LookupError>>;
}

/// The system resolver (`getaddrinfo`: `/etc/hosts`, then DNS, as configured
/// by nsswitch), the same as reqwest's default, with its error code kept.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemLookup;

impl HostLookup for SystemLookup {
    fn lookup(&self, host: &str) -> BoxFuture<'static, Result<Vec<IpAddr>, LookupError>> {
        let host = host.to_owned();
        Box::pin(async move {
            let looked = tokio::task::spawn_blocking(move || {
                let hints = dns_lookup::AddrInfoHints {
                    socktype: i32::from(dns_lookup::SockType::Stream),
                    ..dns_lookup::AddrInfoHints::default()
                };
                match dns_lookup::getaddrinfo(Some(&host), None, Some(hints)) {
                    Ok(found) => Ok(found
                        .filter_map(Result::ok)
                        .map(|info| info.sockaddr.ip())
                        .collect::<Vec<_>>()),
                    Err(err) if matches!(err.kind(), dns_lookup::LookupErrorKind::NoName) => {
                        Err(LookupError::NoSuchName)
                    }
                    Err(err) => Err(LookupError::Failed(format!(
                        "name lookup failed ({:?}): {}",
                        err.kind(),
                        std::io::Error::from(err)
                    ))),
                }
            })
            .await;
            match looked {
                Ok(result) => result,
                Err(join) => Err(LookupError::Failed(format!("name lookup failed: {join}"))),
            }
        })
    }
}

/// The error a lookup hands reqwest when the name does not exist, confirmed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{host} does not exist (NXDOMAIN, {lookups} lookups in a row)")]
pub struct HostNotFound {
    /// The name looked up.
    pub host: String,
    /// How many lookups said so.
    pub lookups: u32,
}

/// A lookup that failed for now.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LookupFailed(String);

/// reqwest's resolver: a [`HostLookup`] with "no such name" confirmed.
#[derive(Clone, Debug)]
pub struct ConfirmingResolver {
    lookup: Arc<dyn HostLookup>,
    confirmations: u32,
    spacing: Duration,
}

impl ConfirmingResolver {
    /// Confirms with [`CONFIRMATIONS`] lookups [`CONFIRM_SPACING`] apart.
    pub fn new(lookup: Arc<dyn HostLookup>) -> Self {
        Self {
            lookup,
            confirmations: CONFIRMATIONS,
            spacing: CONFIRM_SPACING,
        }
    }

    /// With other confirmation settings (tests).
    pub fn with_confirmation(mut self, confirmations: u32, spacing: Duration) -> Self {
        self.confirmations = confirmations.max(1);
        self.spacing = spacing;
        self
    }

    /// Looks `host` up until it resolves, fails for now, or has said "no
    /// such name" `confirmations` times in a row.
    pub async fn resolve_host(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        for lookup in 1..=self.confirmations {
            match self.lookup.lookup(host).await {
                Ok(found) if !found.is_empty() => return Ok(found),
                Ok(_) => {
                    return Err(ResolveError::Failed(LookupFailed(format!(
                        "{host} has no address"
                    ))));
                }
                Err(LookupError::Failed(why)) => {
                    return Err(ResolveError::Failed(LookupFailed(format!(
                        "looking up {host}: {why}"
                    ))));
                }
                Err(LookupError::NoSuchName) if lookup < self.confirmations => {
                    tokio::time::sleep(self.spacing).await;
                }
                Err(LookupError::NoSuchName) => {}
            }
        }
        Err(ResolveError::NotFound(HostNotFound {
            host: host.to_owned(),
            lookups: self.confirmations,
        }))
    }
}

/// Why [`ConfirmingResolver::resolve_host`] found nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResolveError {
    /// The name does not exist, confirmed.
    NotFound(HostNotFound),
    /// The lookup failed for now.
    Failed(LookupFailed),
}

impl Resolve for ConfirmingResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        Box::pin(async move {
            match this.resolve_host(name.as_str()).await {
                Ok(found) => {
                    // NB: the port is set by the connector afterwards.
                    let addrs: Addrs = Box::new(found.into_iter().map(|ip| SocketAddr::new(ip, 0)));
                    Ok(addrs)
                }
                Err(ResolveError::NotFound(e)) => Err(Box::new(e) as _),
                Err(ResolveError::Failed(e)) => Err(Box::new(e) as _),
            }
        })
    }
}

/// Whether `err`'s source chain holds a confirmed [`HostNotFound`].
pub fn host_not_found<'e>(err: &'e (dyn std::error::Error + 'static)) -> Option<&'e HostNotFound> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<HostNotFound>() {
            return Some(found);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Answers from a script, one per lookup (the last repeats).
    #[derive(Debug)]
    struct Scripted(Mutex<Vec<Looked>>);

    impl Scripted {
        fn new(answers: Vec<Looked>) -> Arc<Self> {
            Arc::new(Self(Mutex::new(answers)))
        }
        fn left(&self) -> usize {
            self.0.lock().unwrap().len()
        }
    }

    impl HostLookup for Scripted {
        fn lookup(&self, _: &str) -> BoxFuture<'static, Result<Vec<IpAddr>, LookupError>> {
            let mut script = self.0.lock().unwrap();
            let answer = if script.len() > 1 {
                script.remove(0)
            } else {
                script[0].clone()
            };
            Box::pin(async move { answer })
        }
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// One lookup's answer.
    type Looked = Result<Vec<IpAddr>, LookupError>;

    #[tokio::test(start_paused = true)]
    async fn no_such_name_is_believed_only_when_confirmed() {
        use LookupError::{Failed, NoSuchName};
        let nx = || Err(NoSuchName);
        let tmp = || Err(Failed("EAI_AGAIN".into()));
        // (name, the lookups' answers in order, what the resolver makes of them)
        let rows: Vec<(&str, Vec<Looked>, &str)> = vec![
            ("found at once", vec![Ok(vec![IP])], "found"),
            (
                "NXDOMAIN three times in a row",
                vec![nx(), nx(), nx()],
                "not found",
            ),
            ("NXDOMAIN then found", vec![nx(), Ok(vec![IP])], "found"),
            (
                "NXDOMAIN twice then found",
                vec![nx(), nx(), Ok(vec![IP])],
                "found",
            ),
            (
                "NXDOMAIN then a temporary failure",
                vec![nx(), tmp()],
                "failed",
            ),
            ("a temporary failure", vec![tmp()], "failed"),
            ("no address at all", vec![Ok(vec![])], "failed"),
        ];
        for (name, script, want) in rows {
            let lookup = Scripted::new(script);
            let resolver = ConfirmingResolver::new(lookup.clone());
            let got = match resolver.resolve_host("ecs.cn-x.aliyuncs.com").await {
                Ok(_) => "found",
                Err(ResolveError::NotFound(e)) => {
                    assert_eq!(e.lookups, CONFIRMATIONS, "{name}");
                    "not found"
                }
                Err(ResolveError::Failed(_)) => "failed",
            };
            assert_eq!(got, want, "{name}");
            assert!(lookup.left() >= 1, "{name}");
        }
    }

    #[test]
    fn the_typed_error_is_found_in_a_source_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("client error (Connect)")]
        struct Wrapper(#[source] Box<dyn std::error::Error + Send + Sync>);
        let inner = HostNotFound {
            host: "ecs.x.invalid".into(),
            lookups: 3,
        };
        let outer = Wrapper(Box::new(Wrapper(Box::new(inner.clone()))));
        assert_eq!(host_not_found(&outer), Some(&inner));
        let other = Wrapper(Box::new(LookupFailed("timeout".into())));
        assert_eq!(host_not_found(&other), None);
    }

    /// The machine's own resolver: `.invalid` never exists (RFC 6761).
    #[tokio::test]
    async fn the_system_lookup_says_no_such_name_for_an_invalid_name() {
        let got = SystemLookup.lookup("ecs.cn-nowhere-9.invalid").await;
        assert_eq!(got, Err(LookupError::NoSuchName));
        let local = SystemLookup
            .lookup("localhost")
            .await
            .expect("localhost resolves");
        assert!(local.iter().all(IpAddr::is_loopback), "{local:?}");
    }
}
