//! Which operator-level credential source the environment selects, in the
//! official SDKs' order: environment keys, RRSA (OIDC), ECS instance RAM role.
//! Pure: the environment is a lookup function and the time an argument.
//!
//! NB: unlike the SDKs' default chain, which tries each provider on every
//! `get` and silently falls through, the operator picks ONE source at start-up
//! and refuses half-done configuration with an error naming the variables: an
//! operator that quietly used a different identity than the one its owner set
//! up would be much harder to debug than one that does not start.

use std::time::Duration;

use jiff::Timestamp;
use reqwest::Url;

use super::cache::RefreshPolicy;
use super::imds::{DEFAULT_METADATA_ENDPOINT, ImdsConfig, is_valid_role_name};
use super::rrsa::{DEFAULT_DURATION, MIN_DURATION, RrsaConfig, is_valid_session_name};
use crate::credentials::{AccessKey, ENV_ACCESS_KEY_ID, ENV_ACCESS_KEY_SECRET, ENV_SECURITY_TOKEN};
use crate::ecs::client::is_valid_region_id;

/// RRSA: the RAM role to assume (`acs:ram::<account>:role/<name>`).
pub const ENV_ROLE_ARN: &str = "ALIBABA_CLOUD_ROLE_ARN";
/// RRSA: the cluster's OIDC provider (`acs:ram::<account>:oidc-provider/<name>`).
pub const ENV_OIDC_PROVIDER_ARN: &str = "ALIBABA_CLOUD_OIDC_PROVIDER_ARN";
/// RRSA: the projected service account token file.
pub const ENV_OIDC_TOKEN_FILE: &str = "ALIBABA_CLOUD_OIDC_TOKEN_FILE";
/// RRSA: the role session name (optional; generated when unset).
pub const ENV_ROLE_SESSION_NAME: &str = "ALIBABA_CLOUD_ROLE_SESSION_NAME";
/// RRSA: the STS region, for a regional endpoint `sts.{region}.aliyuncs.com`.
pub const ENV_STS_REGION: &str = "ALIBABA_CLOUD_STS_REGION";
/// RRSA: `true` selects the VPC endpoint `sts-vpc.{region}.aliyuncs.com`.
pub const ENV_VPC_ENDPOINT_ENABLED: &str = "ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED";
/// RRSA: an explicit STS endpoint (a host or a URL). This operator's own
/// variable, not an SDK one: for tests, proxies and private endpoints.
pub const ENV_STS_ENDPOINT: &str = "ALIBABA_CLOUD_STS_ENDPOINT";
/// ECS RAM role: the role name; setting it also turns the source on.
pub const ENV_ECS_METADATA: &str = "ALIBABA_CLOUD_ECS_METADATA";
/// ECS RAM role: `true` turns the source off whatever else is set.
pub const ENV_ECS_METADATA_DISABLED: &str = "ALIBABA_CLOUD_ECS_METADATA_DISABLED";
/// ECS RAM role: `true` forbids the tokenless (IMDSv1) fallback.
pub const ENV_IMDSV1_DISABLED: &str = "ALIBABA_CLOUD_IMDSV1_DISABLED";

/// Prefix of generated role session names (followed by the Unix time).
pub const SESSION_NAME_PREFIX: &str = "copyimage-canceller-";

/// What the operator's configuration (flags, not environment) adds to the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainOptions {
    /// Use the ECS instance RAM role even when `ALIBABA_CLOUD_ECS_METADATA`
    /// is unset (the role name is then read from the metadata service).
    /// NB: off by default: probing 100.100.100.200 on a machine that is not
    /// an ECS instance costs a timeout and surprises people.
    pub ecs_ram_role: bool,
    /// Base URL of the metadata service (tests point it at a stand-in).
    pub metadata_endpoint: String,
    /// Timeout of each metadata call (connect and whole request).
    pub metadata_timeout: Duration,
    /// `DurationSeconds` asked of STS (at least 15 minutes).
    pub sts_duration: Duration,
    /// Timeout of the STS connection.
    pub sts_connect_timeout: Duration,
    /// Timeout of the whole STS call.
    pub sts_request_timeout: Duration,
    /// When temporary credentials are refreshed, and how failures are retried.
    pub refresh: RefreshPolicy,
}

impl Default for ChainOptions {
    fn default() -> Self {
        Self {
            ecs_ram_role: false,
            metadata_endpoint: DEFAULT_METADATA_ENDPOINT.to_owned(),
            metadata_timeout: Duration::from_secs(1),
            sts_duration: DEFAULT_DURATION,
            sts_connect_timeout: Duration::from_secs(5),
            sts_request_timeout: Duration::from_secs(10),
            refresh: RefreshPolicy::default(),
        }
    }
}

/// The source the chain selected.
#[derive(Clone, Debug)]
pub enum SourceSpec {
    /// Nothing is configured: only resources with their own Secret can be served.
    None,
    /// Keys from the environment (with an optional STS token), never refreshed.
    Environment(AccessKey),
    /// RRSA: STS `AssumeRoleWithOIDC` with the projected token.
    Rrsa(RrsaConfig),
    /// The ECS instance RAM role, through the metadata service.
    EcsRamRole(ImdsConfig),
}

/// Why the environment's credential configuration was refused at start-up.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// One of the AccessKey pair is set, the other is not.
    #[error(
        "{set} is set but {missing} is not: set both ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET, or neither"
    )]
    PartialAccessKey {
        /// The variable that is set.
        set: &'static str,
        /// The variable that is missing.
        missing: &'static str,
    },
    /// An STS token without the key it belongs to.
    #[error(
        "ALIBABA_CLOUD_SECURITY_TOKEN is set without ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET: an STS token is only valid with the temporary key it was issued with; set all three or unset it"
    )]
    TokenWithoutKey,
    /// Some, not all, of the RRSA triple.
    #[error(
        "RRSA is only partly configured: {} set but {} not set; set all three of ALIBABA_CLOUD_ROLE_ARN, ALIBABA_CLOUD_OIDC_PROVIDER_ARN and ALIBABA_CLOUD_OIDC_TOKEN_FILE (on ACK the pod identity webhook injects them when RRSA is enabled for the service account) or none of them",
        .set.join(", "), .missing.join(", ")
    )]
    PartialRrsa {
        /// The variables that are set.
        set: Vec<&'static str>,
        /// The variables that are missing.
        missing: Vec<&'static str>,
    },
    /// A role session name STS would refuse.
    #[error(
        "ALIBABA_CLOUD_ROLE_SESSION_NAME {value:?} is not a valid role session name: use 2 to 64 letters, digits, '.', '@', '-' or '_'"
    )]
    InvalidSessionName {
        /// The value as given.
        value: String,
    },
    /// A malformed STS region.
    #[error(
        "ALIBABA_CLOUD_STS_REGION {value:?} is not a region ID: use one such as cn-hangzhou (the endpoint becomes sts.cn-hangzhou.aliyuncs.com)"
    )]
    InvalidStsRegion {
        /// The value as given.
        value: String,
    },
    /// VPC endpoints are regional.
    #[error(
        "ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED=true needs ALIBABA_CLOUD_STS_REGION: the STS VPC endpoints are regional (sts-vpc.{{region}}.aliyuncs.com)"
    )]
    VpcWithoutRegion,
    /// An endpoint that is not a usable URL, or plain HTTP off loopback.
    #[error("{variable} {value:?} is not a usable endpoint: {reason}")]
    InvalidEndpoint {
        /// Where it came from (a variable or an option).
        variable: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A boolean variable with a value that is neither true nor false.
    #[error("{variable} is {value:?}: use true or false")]
    InvalidBool {
        /// The variable.
        variable: &'static str,
        /// The value as given.
        value: String,
    },
    /// A role name that cannot be part of a metadata path.
    #[error(
        "ALIBABA_CLOUD_ECS_METADATA {value:?} is not a RAM role name: use the name of the role attached to the instance (letters, digits, '.', '@', '-', '_', at most 64)"
    )]
    InvalidRoleName {
        /// The value as given.
        value: String,
    },
    /// `DurationSeconds` below the STS minimum.
    #[error(
        "the STS session duration {seconds}s is below the minimum of 900s (15 minutes): ask for at least 900s"
    )]
    DurationTooShort {
        /// The duration asked for.
        seconds: u64,
    },
    /// The HTTP client could not be built.
    #[error("could not build the HTTP client for {what}: {reason}")]
    Http {
        /// STS or the metadata service.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

/// Selects the credential source from `lookup` (the environment) and
/// `options`, at time `now` (for a generated session name). Pure.
///
/// Order: environment keys win; then RRSA when all three variables are set;
/// then the ECS instance RAM role when `ALIBABA_CLOUD_ECS_METADATA` is set or
/// `options.ecs_ram_role`, unless `ALIBABA_CLOUD_ECS_METADATA_DISABLED=true`;
/// otherwise [`SourceSpec::None`]. Half-set groups are errors even when a
/// higher source wins, so a broken deployment shows at once.
pub fn resolve(
    lookup: impl Fn(&str) -> Option<String>,
    options: &ChainOptions,
    now: Timestamp,
) -> Result<SourceSpec, ChainError> {
    let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());

    let id = get(ENV_ACCESS_KEY_ID);
    let secret = get(ENV_ACCESS_KEY_SECRET);
    let token = get(ENV_SECURITY_TOKEN);
    let environment = match (&id, &secret) {
        (Some(_), None) => {
            return Err(ChainError::PartialAccessKey {
                set: ENV_ACCESS_KEY_ID,
                missing: ENV_ACCESS_KEY_SECRET,
            });
        }
        (None, Some(_)) => {
            return Err(ChainError::PartialAccessKey {
                set: ENV_ACCESS_KEY_SECRET,
                missing: ENV_ACCESS_KEY_ID,
            });
        }
        (None, None) if token.is_some() => return Err(ChainError::TokenWithoutKey),
        (None, None) => None,
        (Some(id), Some(secret)) => Some(AccessKey::new(id, secret, token)),
    };

    let rrsa_vars = [ENV_ROLE_ARN, ENV_OIDC_PROVIDER_ARN, ENV_OIDC_TOKEN_FILE];
    let (set, missing): (Vec<&'static str>, Vec<&'static str>) =
        rrsa_vars.iter().partition(|name| get(name).is_some());
    if !set.is_empty() && !missing.is_empty() {
        return Err(ChainError::PartialRrsa { set, missing });
    }
    let rrsa = if missing.is_empty() {
        Some(rrsa_config(&get, options, now)?)
    } else {
        None
    };

    let ecs_disabled = parse_bool(ENV_ECS_METADATA_DISABLED, get(ENV_ECS_METADATA_DISABLED))?;
    let imdsv1_disabled = parse_bool(ENV_IMDSV1_DISABLED, get(ENV_IMDSV1_DISABLED))?;
    let role_name = get(ENV_ECS_METADATA).map(|v| v.trim().to_owned());
    if let Some(role) = &role_name
        && !is_valid_role_name(role)
    {
        return Err(ChainError::InvalidRoleName {
            value: role.clone(),
        });
    }
    let ecs = if !ecs_disabled && (role_name.is_some() || options.ecs_ram_role) {
        let base = checked_url(
            "metadata endpoint (--metadata-endpoint)",
            &options.metadata_endpoint,
            true,
        )?;
        Some(ImdsConfig {
            endpoint: base,
            role_name,
            imdsv1_allowed: !imdsv1_disabled,
            timeout: options.metadata_timeout,
        })
    } else {
        None
    };

    Ok(if let Some(key) = environment {
        SourceSpec::Environment(key)
    } else if let Some(rrsa) = rrsa {
        SourceSpec::Rrsa(rrsa)
    } else if let Some(ecs) = ecs {
        SourceSpec::EcsRamRole(ecs)
    } else {
        SourceSpec::None
    })
}

fn rrsa_config(
    get: &impl Fn(&str) -> Option<String>,
    options: &ChainOptions,
    now: Timestamp,
) -> Result<RrsaConfig, ChainError> {
    let required = |name: &str| get(name).map(|v| v.trim().to_owned()).unwrap_or_default();
    let session_name = match get(ENV_ROLE_SESSION_NAME) {
        Some(name) if is_valid_session_name(name.trim()) => name.trim().to_owned(),
        Some(name) => return Err(ChainError::InvalidSessionName { value: name }),
        None => format!("{SESSION_NAME_PREFIX}{}", now.as_second()),
    };
    if options.sts_duration < MIN_DURATION {
        return Err(ChainError::DurationTooShort {
            seconds: options.sts_duration.as_secs(),
        });
    }
    Ok(RrsaConfig {
        role_arn: required(ENV_ROLE_ARN),
        oidc_provider_arn: required(ENV_OIDC_PROVIDER_ARN),
        token_file: required(ENV_OIDC_TOKEN_FILE).into(),
        session_name,
        endpoint: sts_endpoint(get)?,
        duration: options.sts_duration,
        connect_timeout: options.sts_connect_timeout,
        request_timeout: options.sts_request_timeout,
    })
}

/// The STS endpoint from the environment (`ALIBABA_CLOUD_STS_ENDPOINT`,
/// else `ALIBABA_CLOUD_STS_REGION` and `ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED`,
/// else `sts.aliyuncs.com`), as RRSA uses it; tenant roles are assumed there too.
pub fn sts_endpoint_from(lookup: impl Fn(&str) -> Option<String>) -> Result<Url, ChainError> {
    let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
    sts_endpoint(&get)
}

/// The STS endpoint: the explicit one, else regional/VPC, else central.
fn sts_endpoint(get: &impl Fn(&str) -> Option<String>) -> Result<Url, ChainError> {
    let vpc = parse_bool(ENV_VPC_ENDPOINT_ENABLED, get(ENV_VPC_ENDPOINT_ENABLED))?;
    if let Some(explicit) = get(ENV_STS_ENDPOINT) {
        let explicit = explicit.trim();
        let url = if explicit.contains("://") {
            explicit.to_owned()
        } else {
            format!("https://{explicit}")
        };
        return checked_url(ENV_STS_ENDPOINT, &url, false);
    }
    let host = match get(ENV_STS_REGION).map(|r| r.trim().to_owned()) {
        Some(region) if !is_valid_region_id(&region) => {
            return Err(ChainError::InvalidStsRegion { value: region });
        }
        Some(region) if vpc => format!("sts-vpc.{region}.aliyuncs.com"),
        Some(region) => format!("sts.{region}.aliyuncs.com"),
        None if vpc => return Err(ChainError::VpcWithoutRegion),
        None => "sts.aliyuncs.com".to_owned(),
    };
    checked_url(ENV_STS_ENDPOINT, &format!("https://{host}"), false)
}

/// `value` as a base URL: http(s), a host, no user info, query or fragment;
/// plain `http://` only to loopback unless `allow_http` (the metadata
/// service is plain HTTP on a link-local address by design).
fn checked_url(variable: &'static str, value: &str, allow_http: bool) -> Result<Url, ChainError> {
    let invalid = |reason: String| ChainError::InvalidEndpoint {
        variable,
        value: value.to_owned(),
        reason,
    };
    let url = Url::parse(value.trim())
        .map_err(|e| invalid(format!("{e}; give a URL such as https://sts.aliyuncs.com")))?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(invalid(format!(
            "the scheme {:?} is not http(s)",
            url.scheme()
        )));
    }
    let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
        return Err(invalid("it has no host".to_owned()));
    };
    if !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(invalid(
            "it must not contain user info, a query or a fragment".to_owned(),
        ));
    }
    if url.scheme() == "http" && !allow_http && !is_loopback_host(host) {
        return Err(invalid(format!(
            "plain http:// to the non-loopback host {host} would send the OIDC token and receive keys unencrypted: use https://"
        )));
    }
    Ok(url)
}

/// 127.0.0.0/8, ::1 and `localhost`.
fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => bare.eq_ignore_ascii_case("localhost"),
    }
}

/// `true`/`1` and `false`/`0` (any case); unset is false.
fn parse_bool(variable: &'static str, value: Option<String>) -> Result<bool, ChainError> {
    match value.as_deref().map(str::trim) {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => Ok(false),
        Some(v) => Err(ChainError::InvalidBool {
            variable,
            value: v.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const ROLE: &str = "acs:ram::1234567890123456:role/canceller";
    const PROVIDER: &str = "acs:ram::1234567890123456:oidc-provider/ack-rrsa-c123";
    const FILE: &str = "/var/run/secrets/ack.alibabacloud.com/rrsa-tokens/token";

    type Vars = Vec<(&'static str, &'static str)>;

    fn now() -> Timestamp {
        "2026-11-27T12:00:00Z".parse().unwrap()
    }

    fn run(vars: &[(&str, &str)], options: &ChainOptions) -> Result<SourceSpec, ChainError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        resolve(|n| map.get(n).cloned(), options, now())
    }

    /// A short description of the selected source, for table rows.
    fn summary(spec: &SourceSpec) -> String {
        match spec {
            SourceSpec::None => "none".into(),
            SourceSpec::Environment(k) => {
                format!("env {} token={}", k.id, k.security_token().is_some())
            }
            SourceSpec::Rrsa(c) => format!(
                "rrsa {} session={} duration={}",
                c.endpoint,
                c.session_name,
                c.duration.as_secs()
            ),
            SourceSpec::EcsRamRole(c) => format!(
                "ecs {} role={:?} v1={}",
                c.endpoint, c.role_name, c.imdsv1_allowed
            ),
        }
    }

    #[test]
    fn selection_table() {
        let id = (ENV_ACCESS_KEY_ID, "LTAIid");
        let secret = (ENV_ACCESS_KEY_SECRET, "sec");
        let rrsa = [
            (ENV_ROLE_ARN, ROLE),
            (ENV_OIDC_PROVIDER_ARN, PROVIDER),
            (ENV_OIDC_TOKEN_FILE, FILE),
        ];
        let plain = ChainOptions::default();
        let probe = ChainOptions {
            ecs_ram_role: true,
            ..ChainOptions::default()
        };
        let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
            rrsa.iter().chain(extra.iter()).copied().collect()
        };
        let rows: Vec<(Vars, &ChainOptions, &str)> = vec![
            (vec![], &plain, "none"),
            (vec![id, secret], &plain, "env LTAIid token=false"),
            (
                vec![id, secret, (ENV_SECURITY_TOKEN, "CAIS")],
                &plain,
                "env LTAIid token=true",
            ),
            // Environment keys win over RRSA and the ECS role.
            (
                [id, secret]
                    .into_iter()
                    .chain(with(&[(ENV_ECS_METADATA, "r")]))
                    .collect(),
                &probe,
                "env LTAIid token=false",
            ),
            // The ECS role only when asked for.
            (
                vec![(ENV_ECS_METADATA, "node-role")],
                &plain,
                "ecs http://100.100.100.200/ role=Some(\"node-role\") v1=true",
            ),
            (
                vec![],
                &probe,
                "ecs http://100.100.100.200/ role=None v1=true",
            ),
            (
                vec![(ENV_IMDSV1_DISABLED, "TRUE")],
                &probe,
                "ecs http://100.100.100.200/ role=None v1=false",
            ),
            (
                vec![(ENV_ECS_METADATA, "r"), (ENV_ECS_METADATA_DISABLED, "true")],
                &probe,
                "none",
            ),
            // Empty values count as unset.
            (
                vec![(ENV_ACCESS_KEY_ID, ""), (ENV_ROLE_ARN, " ")],
                &plain,
                "none",
            ),
        ];
        for (i, (vars, options, want)) in rows.into_iter().enumerate() {
            let got = run(&vars, options).map(|s| summary(&s));
            assert_eq!(got.as_deref(), Ok(want), "row {i}: {vars:?}");
        }
        // RRSA, its three variables set: (options, STS endpoint, session, more variables).
        let default_session = "copyimage-canceller-1795780800";
        #[rustfmt::skip]
        let rrsa_rows: Vec<(&ChainOptions, &str, &str, Vars)> = vec![
            (&plain, "https://sts.aliyuncs.com/",                 default_session, vec![]),
            (&plain, "https://sts.aliyuncs.com/",                 "my.session@x",  vec![(ENV_ROLE_SESSION_NAME, "my.session@x")]),
            (&plain, "https://sts.cn-hangzhou.aliyuncs.com/",     default_session, vec![(ENV_STS_REGION, "cn-hangzhou")]),
            (&plain, "https://sts-vpc.cn-hangzhou.aliyuncs.com/", default_session, vec![(ENV_STS_REGION, "cn-hangzhou"), (ENV_VPC_ENDPOINT_ENABLED, "true")]),
            (&plain, "https://sts.cn-hangzhou.aliyuncs.com/",     default_session, vec![(ENV_STS_REGION, "cn-hangzhou"), (ENV_VPC_ENDPOINT_ENABLED, "false")]),
            // The explicit endpoint wins over region and VPC.
            (&plain, "http://127.0.0.1:8080/",                    default_session, vec![(ENV_STS_ENDPOINT, "http://127.0.0.1:8080"), (ENV_STS_REGION, "cn-hangzhou")]),
            (&plain, "https://sts.private.example/",              default_session, vec![(ENV_STS_ENDPOINT, "sts.private.example")]),
            // RRSA wins over the ECS role.
            (&probe, "https://sts.aliyuncs.com/",                 default_session, vec![(ENV_ECS_METADATA, "r")]),
        ];
        for (options, endpoint, session, extra) in rrsa_rows {
            let vars = with(&extra);
            let got = run(&vars, options).map(|s| summary(&s));
            let want = format!("rrsa {endpoint} session={session} duration=3600");
            assert_eq!(got, Ok(want), "{vars:?}");
        }
    }

    #[test]
    fn errors_table() {
        let rows: Vec<(Vars, ChainOptions, ChainError)> = vec![
            (
                vec![(ENV_ACCESS_KEY_ID, "x")],
                ChainOptions::default(),
                ChainError::PartialAccessKey {
                    set: ENV_ACCESS_KEY_ID,
                    missing: ENV_ACCESS_KEY_SECRET,
                },
            ),
            (
                vec![(ENV_ACCESS_KEY_SECRET, "x")],
                ChainOptions::default(),
                ChainError::PartialAccessKey {
                    set: ENV_ACCESS_KEY_SECRET,
                    missing: ENV_ACCESS_KEY_ID,
                },
            ),
            (
                vec![(ENV_SECURITY_TOKEN, "CAIS")],
                ChainOptions::default(),
                ChainError::TokenWithoutKey,
            ),
            (
                vec![(ENV_ROLE_ARN, ROLE)],
                ChainOptions::default(),
                ChainError::PartialRrsa {
                    set: vec![ENV_ROLE_ARN],
                    missing: vec![ENV_OIDC_PROVIDER_ARN, ENV_OIDC_TOKEN_FILE],
                },
            ),
            // A partial triple is refused even though env keys would win.
            (
                vec![
                    (ENV_ACCESS_KEY_ID, "x"),
                    (ENV_ACCESS_KEY_SECRET, "y"),
                    (ENV_OIDC_PROVIDER_ARN, PROVIDER),
                    (ENV_OIDC_TOKEN_FILE, FILE),
                ],
                ChainOptions::default(),
                ChainError::PartialRrsa {
                    set: vec![ENV_OIDC_PROVIDER_ARN, ENV_OIDC_TOKEN_FILE],
                    missing: vec![ENV_ROLE_ARN],
                },
            ),
            (
                vec![
                    (ENV_ROLE_ARN, ROLE),
                    (ENV_OIDC_PROVIDER_ARN, PROVIDER),
                    (ENV_OIDC_TOKEN_FILE, FILE),
                    (ENV_ROLE_SESSION_NAME, "a b"),
                ],
                ChainOptions::default(),
                ChainError::InvalidSessionName {
                    value: "a b".into(),
                },
            ),
            (
                vec![
                    (ENV_ROLE_ARN, ROLE),
                    (ENV_OIDC_PROVIDER_ARN, PROVIDER),
                    (ENV_OIDC_TOKEN_FILE, FILE),
                    (ENV_STS_REGION, "evil.example.com/"),
                ],
                ChainOptions::default(),
                ChainError::InvalidStsRegion {
                    value: "evil.example.com/".into(),
                },
            ),
            (
                vec![
                    (ENV_ROLE_ARN, ROLE),
                    (ENV_OIDC_PROVIDER_ARN, PROVIDER),
                    (ENV_OIDC_TOKEN_FILE, FILE),
                    (ENV_VPC_ENDPOINT_ENABLED, "true"),
                ],
                ChainOptions::default(),
                ChainError::VpcWithoutRegion,
            ),
            (
                vec![
                    (ENV_ROLE_ARN, ROLE),
                    (ENV_OIDC_PROVIDER_ARN, PROVIDER),
                    (ENV_OIDC_TOKEN_FILE, FILE),
                    (ENV_VPC_ENDPOINT_ENABLED, "yes"),
                ],
                ChainOptions::default(),
                ChainError::InvalidBool {
                    variable: ENV_VPC_ENDPOINT_ENABLED,
                    value: "yes".into(),
                },
            ),
            (
                vec![
                    (ENV_ROLE_ARN, ROLE),
                    (ENV_OIDC_PROVIDER_ARN, PROVIDER),
                    (ENV_OIDC_TOKEN_FILE, FILE),
                ],
                ChainOptions {
                    sts_duration: Duration::from_secs(899),
                    ..ChainOptions::default()
                },
                ChainError::DurationTooShort { seconds: 899 },
            ),
            (
                vec![(ENV_ECS_METADATA, "../../user-data")],
                ChainOptions::default(),
                ChainError::InvalidRoleName {
                    value: "../../user-data".into(),
                },
            ),
        ];
        for (i, (vars, options, want)) in rows.into_iter().enumerate() {
            let got = run(&vars, &options).map(|s| summary(&s));
            assert_eq!(got, Err(want), "row {i}: {vars:?}");
        }
    }

    #[test]
    fn insecure_sts_endpoint_is_refused_with_the_fix() {
        let err = run(
            &[
                (ENV_ROLE_ARN, ROLE),
                (ENV_OIDC_PROVIDER_ARN, PROVIDER),
                (ENV_OIDC_TOKEN_FILE, FILE),
                (ENV_STS_ENDPOINT, "http://sts.example.com"),
            ],
            &ChainOptions::default(),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(ENV_STS_ENDPOINT) && text.contains("use https://"),
            "{text}"
        );
    }

    #[test]
    fn partial_triple_message_names_set_and_missing_variables() {
        let err = run(&[(ENV_OIDC_TOKEN_FILE, FILE)], &ChainOptions::default()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("ALIBABA_CLOUD_OIDC_TOKEN_FILE set")
                && text.contains("ALIBABA_CLOUD_ROLE_ARN, ALIBABA_CLOUD_OIDC_PROVIDER_ARN not set"),
            "{text}"
        );
    }

    #[test]
    fn errors_never_echo_secrets() {
        let err = run(
            &[(ENV_ACCESS_KEY_SECRET, "s3cr3t-value")],
            &ChainOptions::default(),
        )
        .unwrap_err();
        assert!(!format!("{err} {err:?}").contains("s3cr3t-value"));
        let err = run(
            &[(ENV_SECURITY_TOKEN, "CAIS-token-value")],
            &ChainOptions::default(),
        )
        .unwrap_err();
        assert!(!format!("{err} {err:?}").contains("CAIS-token-value"));
    }
}
