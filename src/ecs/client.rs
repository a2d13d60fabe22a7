//! Sends one signed CancelCopyImage and turns what came back into a
//! [`CancelOutcome`]: the endpoint check, the HTTP shell, and the pure
//! response parser with its redaction.

use std::net::IpAddr;
use std::sync::{Arc, Once};
use std::time::Duration;

use http::HeaderMap;
use jiff::Timestamp;
use reqwest::Url;
use serde_json::Value;

use super::resolve::{ConfirmingResolver, HostLookup, SystemLookup, host_not_found};
use super::signature::{Method, percent_encode, sign_cancel_copy_image};
use super::signature_v3::sign_cancel_copy_image_v3;
use super::{CancelOutcome, ServiceError, TransportError, TransportKind};
use crate::credentials::AccessKey;

/// The default endpoint template (`{regionId}` is replaced per request).
pub const DEFAULT_ENDPOINT_TEMPLATE: &str = "https://ecs.{regionId}.aliyuncs.com";
/// The placeholder an endpoint template may hold.
pub const REGION_PLACEHOLDER: &str = "{regionId}";
/// The most response body read; beyond it the answer is a transport error.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// The most characters of a service message kept (status, logs, stderr).
pub const MAX_MESSAGE_CHARS: usize = 512;
/// The most characters kept of short fields (code, request ID, host ID).
const MAX_FIELD_CHARS: usize = 128;
/// The header carrying the service's retry delay in milliseconds.
pub const RETRY_AFTER_HEADER: &str = "x-acs-retry-after";
/// What replaces the `server string to sign is: ...` echo.
pub const STRING_TO_SIGN_REDACTED: &str = "(server string to sign redacted)";
/// What replaces a secret value found in a message.
const REDACTED: &str = "[REDACTED]";
/// The region used to check an endpoint template before any real region is known.
const SAMPLE_REGION: &str = "cn-hangzhou";

/// How the client reaches ECS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcsClientConfig {
    /// Endpoint template, `{regionId}` replaced by the request's region.
    pub endpoint: String,
    /// Accept `http://` to hosts other than loopback (unencrypted requests).
    pub allow_insecure_endpoint: bool,
    /// Limit for establishing the connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Limit for the whole attempt, body included.
    pub request_timeout: Duration,
    /// The most response body read.
    pub max_body_bytes: usize,
    /// How requests are signed.
    pub signature_version: SignatureVersion,
}

/// How CancelCopyImage requests are signed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SignatureVersion {
    /// RPC signature `HMAC-SHA1` / `SignatureVersion=1.0`: every parameter,
    /// signature included, in a form body.
    #[default]
    V1,
    /// `ACS3-HMAC-SHA256`: action, version, date, nonce and token in signed
    /// `x-acs-*` headers, `Authorization` header, `RegionId` and `ImageId`
    /// in a form body.
    V3,
}

impl Default for EcsClientConfig {
    fn default() -> Self {
        Self {
            endpoint: DEFAULT_ENDPOINT_TEMPLATE.to_owned(),
            allow_insecure_endpoint: false,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            signature_version: SignatureVersion::V1,
        }
    }
}

/// Why an endpoint (template) or a region ID was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// Not a URL.
    #[error(
        "endpoint {endpoint:?} is not a valid URL ({reason}): give a URL such as https://ecs.{{regionId}}.aliyuncs.com"
    )]
    Invalid {
        /// The endpoint as given (region substituted).
        endpoint: String,
        /// What the URL parser said.
        reason: String,
    },
    /// A URL without a host (`unix:/x`, `https:///`).
    #[error(
        "endpoint {endpoint:?} has no host: give a URL such as https://ecs.{{regionId}}.aliyuncs.com"
    )]
    NoHost {
        /// The endpoint as given (region substituted).
        endpoint: String,
    },
    /// A scheme other than `https` or `http`.
    #[error("endpoint {endpoint:?} uses the scheme {scheme:?}: use https://")]
    UnsupportedScheme {
        /// The endpoint as given (region substituted).
        endpoint: String,
        /// Its scheme.
        scheme: String,
    },
    /// User info, a query or a fragment, none of which an RPC endpoint has.
    #[error(
        "endpoint {endpoint:?} must not contain user info, a query or a fragment: give scheme, host, optional port and path only"
    )]
    ExtraParts {
        /// The endpoint as given (region substituted).
        endpoint: String,
    },
    /// `http://` to a host that is not loopback.
    #[error(
        "endpoint {endpoint:?} sends signed requests unencrypted (http://) to the non-loopback host {host}: use https://, or pass --allow-insecure-endpoint if you really mean it"
    )]
    Insecure {
        /// The endpoint as given (region substituted).
        endpoint: String,
        /// Its host.
        host: String,
    },
    /// A region ID that is not of the form `cn-hangzhou`.
    #[error(
        "region ID {region_id:?} is not a valid region ID: expected lower-case letters, digits and '-', like cn-hangzhou or ap-southeast-1"
    )]
    InvalidRegionId {
        /// The region ID as given.
        region_id: String,
    },
}

/// Why an [`EcsClient`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint template was refused.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// The HTTP client could not be built (TLS roots, ...).
    #[error("could not build the HTTPS client: {0}")]
    Http(#[source] reqwest::Error),
}

/// Whether `region_id` is a well-formed region ID
/// (`^[a-z]{2,}(-[a-z0-9]+)+$`, at most 64 characters), the same rule as the
/// resource schema. It is also what keeps a region from changing the host an
/// endpoint template points to.
pub fn is_valid_region_id(region_id: &str) -> bool {
    let mut parts = region_id.split('-');
    let first = parts.next().unwrap_or_default();
    let mut rest = parts.peekable();
    region_id.len() <= 64
        && first.len() >= 2
        && first.bytes().all(|b| b.is_ascii_lowercase())
        && rest.peek().is_some()
        && rest.all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// A checked endpoint template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    template: String,
    allow_insecure: bool,
}

impl Endpoint {
    /// Checks `template` (with a sample region substituted): an `https://`
    /// URL with a host, or `http://` to a loopback host (127.0.0.0/8, ::1,
    /// localhost) unless `allow_insecure`.
    pub fn new(template: &str, allow_insecure: bool) -> Result<Self, EndpointError> {
        let endpoint = Self {
            template: template.trim().to_owned(),
            allow_insecure,
        };
        endpoint.url_for(SAMPLE_REGION)?;
        Ok(endpoint)
    }

    /// The template as configured.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// The URL for `region_id`, checked again after substitution.
    pub fn url_for(&self, region_id: &str) -> Result<Url, EndpointError> {
        if !is_valid_region_id(region_id) {
            return Err(EndpointError::InvalidRegionId {
                region_id: region_id.to_owned(),
            });
        }
        let endpoint = self.template.replace(REGION_PLACEHOLDER, region_id);
        let url = Url::parse(&endpoint).map_err(|e| EndpointError::Invalid {
            endpoint: endpoint.clone(),
            reason: e.to_string(),
        })?;
        let scheme = url.scheme();
        if scheme != "https" && scheme != "http" {
            return Err(EndpointError::UnsupportedScheme {
                scheme: scheme.to_owned(),
                endpoint,
            });
        }
        let host = match url.host_str() {
            Some(h) if !h.is_empty() => h.to_owned(),
            _ => return Err(EndpointError::NoHost { endpoint }),
        };
        if !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(EndpointError::ExtraParts { endpoint });
        }
        if scheme == "http" && !self.allow_insecure && !is_loopback_host(&host) {
            return Err(EndpointError::Insecure { endpoint, host });
        }
        Ok(url)
    }
}

/// The `Host` header a request to `url` carries (and V3 signs): the host,
/// plus `:port` when the URL names a port other than the scheme's default.
fn host_header(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// 127.0.0.0/8, ::1 (also as an IPv4-mapped address) and `localhost`.
fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => bare.eq_ignore_ascii_case("localhost"),
    }
}

/// The CancelCopyImage client: one signed POST per call, no retries (the
/// caller's [`crate::retry::RetryPolicy`] decides those).
#[derive(Clone, Debug)]
pub struct EcsClient {
    http: reqwest::Client,
    endpoint: Endpoint,
    config: EcsClientConfig,
}

/// Installs the ring crypto provider for rustls, once per process.
fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // NB: fails only when another provider is already installed, which
        // is just as good for us.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl EcsClient {
    /// A client for `config`; refuses a bad endpoint template.
    ///
    /// TLS certificates are verified against the platform's roots.
    pub fn new(config: EcsClientConfig) -> Result<Self, ClientError> {
        Self::with_lookup(config, Arc::new(SystemLookup))
    }

    /// Like [`EcsClient::new`], looking host names up with `lookup` (tests
    /// inject names that do not exist, or a DNS server that fails).
    pub fn with_lookup(
        config: EcsClientConfig,
        lookup: Arc<dyn HostLookup>,
    ) -> Result<Self, ClientError> {
        let endpoint = Endpoint::new(&config.endpoint, config.allow_insecure_endpoint)?;
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .dns_resolver(Arc::new(ConfirmingResolver::new(lookup)))
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            // A redirect would resend the signed body to a host of someone
            // else's choosing.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("copyimage-canceller/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ClientError::Http)?;
        Ok(Self {
            http,
            endpoint,
            config,
        })
    }

    /// The checked endpoint template.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Sends exactly one CancelCopyImage, with a fresh `SignatureNonce`
    /// (UUID v4) and the current `Timestamp`.
    pub async fn cancel_copy_image(
        &self,
        key: &AccessKey,
        region_id: &str,
        image_id: &str,
    ) -> CancelOutcome {
        let nonce = uuid::Uuid::new_v4().to_string();
        self.cancel_copy_image_at(key, region_id, image_id, &nonce, Timestamp::now())
            .await
    }

    /// Like [`EcsClient::cancel_copy_image`] with the nonce and timestamp
    /// given (tests of nonce reuse and clock skew).
    ///
    /// A region ID that is not well formed is refused before anything is
    /// sent, as a terminal `InvalidRegionId.Malformed` error with no request ID.
    pub async fn cancel_copy_image_at(
        &self,
        key: &AccessKey,
        region_id: &str,
        image_id: &str,
        nonce: &str,
        timestamp: Timestamp,
    ) -> CancelOutcome {
        let url = match self.endpoint.url_for(region_id) {
            Ok(url) => url,
            Err(err) => return refused_locally(&err),
        };
        let (request, mut sensitive) = match self.config.signature_version {
            SignatureVersion::V1 => {
                let signed = sign_cancel_copy_image(
                    Method::Post,
                    key,
                    region_id,
                    image_id,
                    nonce,
                    timestamp,
                );
                let sensitive: Vec<String> = signed.sensitive_values().map(str::to_owned).collect();
                let request = self
                    .http
                    .post(url.clone())
                    .header(
                        http::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(signed.form_body());
                (request, sensitive)
            }
            SignatureVersion::V3 => {
                let signed = sign_cancel_copy_image_v3(
                    key,
                    &host_header(&url),
                    region_id,
                    image_id,
                    nonce,
                    timestamp,
                );
                let sensitive: Vec<String> = signed.sensitive_values().map(str::to_owned).collect();
                // NB: the path is always `/`, which is what was signed.
                let mut v3_url = url.clone();
                v3_url.set_path("/");
                let mut request = self.http.post(v3_url);
                for (name, value) in signed.headers() {
                    request = request.header(name, value);
                }
                (request.body(signed.body().to_owned()), sensitive)
            }
        };
        sensitive.push(key.secret().to_owned());
        let sensitive: Vec<&str> = sensitive.iter().map(String::as_str).collect();

        let sent = request
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(err) => {
                let (kind, message) = self.describe(&err, &url);
                return transport(kind, message, None, &sensitive);
            }
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        match read_capped(&mut response, self.config.max_body_bytes).await {
            Ok(body) => parse_response(status, &headers, &body, &sensitive),
            Err(BodyError::TooLarge) => transport(
                TransportKind::InvalidResponse,
                format!(
                    "HTTP {status}: response body is larger than {} bytes, not an ECS API response",
                    self.config.max_body_bytes
                ),
                Some(status),
                &sensitive,
            ),
            Err(BodyError::Read(err)) => {
                let (kind, message) = self.describe(&err, &url);
                transport(
                    kind,
                    format!("HTTP {status}: reading the response body failed: {message}"),
                    Some(status),
                    &sensitive,
                )
            }
        }
    }

    /// A transport failure's kind, and in words: what failed, where, and why.
    fn describe(&self, err: &reqwest::Error, url: &Url) -> (TransportKind, String) {
        let host = url.host_str().unwrap_or_default();
        if let Some(not_found) = host_not_found(err) {
            return (
                TransportKind::HostNotFound,
                format!(
                    "the endpoint host {not_found}: no ECS endpoint answers for this region; \
                     check regionId (or the --ecs-endpoint template)"
                ),
            );
        }
        let (kind, what) = if err.is_timeout() {
            (
                TransportKind::Timeout,
                format!(
                    "request to {host} timed out (limit {:?})",
                    self.config.request_timeout
                ),
            )
        } else if err.is_connect() {
            (
                TransportKind::Connect,
                format!("could not connect to {host}"),
            )
        } else if err.is_body() || err.is_decode() {
            (
                TransportKind::Interrupted,
                format!("response from {host} was cut short"),
            )
        } else {
            // NB: mostly a connection reset or closed before the answer.
            (
                TransportKind::Interrupted,
                format!("request to {host} failed"),
            )
        };
        let mut chain = String::new();
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            chain.push_str(": ");
            chain.push_str(&cause.to_string());
            source = cause.source();
        }
        (kind, format!("{what}{chain}"))
    }
}

enum BodyError {
    TooLarge,
    Read(reqwest::Error),
}

/// Reads the body, refusing more than `cap` bytes without buffering them.
async fn read_capped(response: &mut reqwest::Response, cap: usize) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
        if body.len() + chunk.len() > cap {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn transport(
    kind: TransportKind,
    message: String,
    http_status: Option<u16>,
    sensitive: &[&str],
) -> CancelOutcome {
    CancelOutcome::Transport(TransportError {
        kind,
        message: redact(&message, sensitive, MAX_MESSAGE_CHARS),
        http_status,
    })
}

/// A request refused before sending: terminal, since no retry can fix it.
fn refused_locally(err: &EndpointError) -> CancelOutcome {
    let code = match err {
        EndpointError::InvalidRegionId { .. } => "InvalidRegionId.Malformed",
        _ => "InvalidEndpoint",
    };
    CancelOutcome::Service(ServiceError {
        http_status: 400,
        code: code.to_owned(),
        message: bound(
            &format!("{err} (refused locally: nothing was sent)"),
            MAX_MESSAGE_CHARS,
        ),
        request_id: None,
        host_id: None,
        recommend: None,
        retry_after: None,
    })
}

/// Turns a response into an outcome. Pure.
///
/// `sensitive` holds values (secret, token, signature) that are scrubbed
/// from every text kept. A JSON body with `Code` is a service error; a 2xx
/// JSON body with `RequestId` and no code is success; anything else (HTML
/// from a proxy, an empty or truncated body, JSON without a code) is a
/// transport error carrying the HTTP status.
pub fn parse_response(
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    sensitive: &[&str],
) -> CancelOutcome {
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("no content type");
    let object = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => map,
        _ => {
            return transport(
                TransportKind::InvalidResponse,
                format!(
                    "HTTP {status}{}: the response is not an ECS API answer ({content_type}, {} bytes, not a JSON object)",
                    reason_suffix(status),
                    body.len()
                ),
                Some(status),
                sensitive,
            );
        }
    };
    let field = |names: &[&str], max: usize| {
        names.iter().find_map(|name| match object.get(*name) {
            Some(Value::String(s)) if !s.is_empty() => Some(redact(s, sensitive, max)),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        })
    };
    let request_id = field(&["RequestId", "requestId"], MAX_FIELD_CHARS);
    match field(&["Code", "code"], MAX_FIELD_CHARS) {
        Some(code) => CancelOutcome::Service(ServiceError {
            http_status: status,
            code,
            message: field(&["Message", "message"], MAX_MESSAGE_CHARS).unwrap_or_default(),
            request_id,
            host_id: field(&["HostId", "hostId"], MAX_FIELD_CHARS),
            recommend: field(&["Recommend", "recommend"], MAX_MESSAGE_CHARS),
            retry_after: retry_after(headers),
        }),
        None if (200..300).contains(&status) => match request_id {
            Some(request_id) => CancelOutcome::Cancelled { request_id },
            None => transport(
                TransportKind::InvalidResponse,
                format!("HTTP {status}: the response has neither a RequestId nor an error Code"),
                Some(status),
                sensitive,
            ),
        },
        None => transport(
            TransportKind::InvalidResponse,
            format!(
                "HTTP {status}{}: the JSON response has no error Code{}",
                reason_suffix(status),
                request_id
                    .map(|id| format!(" (RequestId {id})"))
                    .unwrap_or_default()
            ),
            Some(status),
            sensitive,
        ),
    }
}

fn reason_suffix(status: u16) -> String {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .map(|r| format!(" {r}"))
        .unwrap_or_default()
}

/// `x-acs-retry-after`, in milliseconds.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER_HEADER)?.to_str().ok()?.trim();
    value.parse::<u64>().ok().map(Duration::from_millis)
}

/// Makes service text safe to keep: cuts the `server string to sign is: ...`
/// echo (it repeats every parameter, the security token included), scrubs
/// every `sensitive` value (plain and percent-encoded once or twice, as the
/// echo writes them), turns control characters into spaces, and bounds the
/// length to `max_chars` characters.
pub fn redact(text: &str, sensitive: &[&str], max_chars: usize) -> String {
    const ECHO_MARKERS: [&str; 3] = [
        "server string to sign is",
        "server stringtosign is",
        "server canonicalrequest is",
    ];
    let lower = text.to_ascii_lowercase();
    let cut = ECHO_MARKERS.iter().filter_map(|m| lower.find(m)).min();
    let mut out = match cut {
        Some(at) => {
            let kept = text[..at].trim_end();
            if kept.is_empty() {
                STRING_TO_SIGN_REDACTED.to_owned()
            } else {
                format!("{kept} {STRING_TO_SIGN_REDACTED}")
            }
        }
        None => text.to_owned(),
    };
    for value in sensitive.iter().filter(|v| !v.is_empty()) {
        let once = percent_encode(value);
        let twice = percent_encode(&once);
        for form in [twice.as_str(), once.as_str(), value] {
            if out.contains(form) {
                out = out.replace(form, REDACTED);
            }
        }
    }
    let out: String = out
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    bound(&out, max_chars)
}

/// At most `max_chars` characters, cut on a character boundary, marked with `…`.
fn bound(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecs::RetryClass;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    fn service(
        http_status: u16,
        code: &str,
        message: &str,
        request_id: Option<&str>,
        host_id: Option<&str>,
        recommend: Option<&str>,
        retry_after: Option<Duration>,
    ) -> CancelOutcome {
        CancelOutcome::Service(ServiceError {
            http_status,
            code: code.into(),
            message: message.into(),
            request_id: request_id.map(Into::into),
            host_id: host_id.map(Into::into),
            recommend: recommend.map(Into::into),
            retry_after,
        })
    }

    fn transport_err(status: Option<u16>, message: &str) -> CancelOutcome {
        CancelOutcome::Transport(TransportError {
            kind: TransportKind::InvalidResponse,
            message: message.into(),
            http_status: status,
        })
    }

    const TOKEN: &str = "CAIS+sts/token=0001";
    const SECRET: &str = "SecretValue0000000000000000001";
    const SIG: &str = "Ab+c/d=";

    type Row = (
        u16,
        Vec<(&'static str, &'static str)>,
        &'static str,
        CancelOutcome,
    );

    #[test]
    fn parse_response_table() {
        let json = [("content-type", "application/json;charset=utf-8")];
        let html = [("content-type", "text/html")];
        let rows: Vec<Row> = vec![
            (
                200,
                json.to_vec(),
                r#"{"RequestId":"473469C7-AA6F-4DC5-B3DB-A3DC0DE3C83E"}"#,
                CancelOutcome::Cancelled {
                    request_id: "473469C7-AA6F-4DC5-B3DB-A3DC0DE3C83E".into(),
                },
            ),
            (
                200,
                json.to_vec(),
                r#"{"requestId":"r-lower"}"#,
                CancelOutcome::Cancelled {
                    request_id: "r-lower".into(),
                },
            ),
            (
                400,
                json.to_vec(),
                r#"{"RequestId":"R1","HostId":"ecs.aliyuncs.com","Code":"IncorrectImageStatus","Message":"The image is copied finished.","Recommend":"https://api.aliyun.com/troubleshoot?q=IncorrectImageStatus"}"#,
                service(
                    400,
                    "IncorrectImageStatus",
                    "The image is copied finished.",
                    Some("R1"),
                    Some("ecs.aliyuncs.com"),
                    Some("https://api.aliyun.com/troubleshoot?q=IncorrectImageStatus"),
                    None,
                ),
            ),
            (
                404,
                json.to_vec(),
                r#"{"requestId":"R2","code":"InvalidImageId.NotFound","message":"The specified ImageId does not exist."}"#,
                service(
                    404,
                    "InvalidImageId.NotFound",
                    "The specified ImageId does not exist.",
                    Some("R2"),
                    None,
                    None,
                    None,
                ),
            ),
            (
                400,
                vec![("x-acs-retry-after", "1500")],
                r#"{"RequestId":"R3","Code":"Throttling.User","Message":"Request was denied due to user flow control."}"#,
                service(
                    400,
                    "Throttling.User",
                    "Request was denied due to user flow control.",
                    Some("R3"),
                    None,
                    None,
                    Some(Duration::from_millis(1500)),
                ),
            ),
            (
                400,
                vec![("x-acs-retry-after", "soon")],
                r#"{"RequestId":"R3","Code":"Throttling"}"#,
                service(400, "Throttling", "", Some("R3"), None, None, None),
            ),
            (
                500,
                json.to_vec(),
                r#"{"RequestId":"R4","Code":"InternalError","Message":"The request processing has failed due to some unknown error."}"#,
                service(
                    500,
                    "InternalError",
                    "The request processing has failed due to some unknown error.",
                    Some("R4"),
                    None,
                    None,
                    None,
                ),
            ),
            (
                502,
                html.to_vec(),
                "<html><body><h1>502 Bad Gateway</h1></body></html>",
                transport_err(
                    Some(502),
                    "HTTP 502 Bad Gateway: the response is not an ECS API answer (text/html, 50 bytes, not a JSON object)",
                ),
            ),
            (
                503,
                vec![],
                "",
                transport_err(
                    Some(503),
                    "HTTP 503 Service Unavailable: the response is not an ECS API answer (no content type, 0 bytes, not a JSON object)",
                ),
            ),
            (
                200,
                json.to_vec(),
                r#"{"RequestId":"R5""#,
                transport_err(
                    Some(200),
                    "HTTP 200 OK: the response is not an ECS API answer (application/json;charset=utf-8, 17 bytes, not a JSON object)",
                ),
            ),
            (
                200,
                json.to_vec(),
                r#"["RequestId"]"#,
                transport_err(
                    Some(200),
                    "HTTP 200 OK: the response is not an ECS API answer (application/json;charset=utf-8, 13 bytes, not a JSON object)",
                ),
            ),
            (
                200,
                json.to_vec(),
                r#"{}"#,
                transport_err(
                    Some(200),
                    "HTTP 200: the response has neither a RequestId nor an error Code",
                ),
            ),
            (
                403,
                json.to_vec(),
                r#"{"RequestId":"R6","error":"denied"}"#,
                transport_err(
                    Some(403),
                    "HTTP 403 Forbidden: the JSON response has no error Code (RequestId R6)",
                ),
            ),
        ];
        for (i, (status, hdrs, body, want)) in rows.into_iter().enumerate() {
            let got = parse_response(
                status,
                &headers(&hdrs),
                body.as_bytes(),
                &[SECRET, TOKEN, SIG],
            );
            assert_eq!(got, want, "row {i}: {body}");
        }
    }

    #[test]
    fn parsed_outcomes_classify_as_the_contract_says() {
        use RetryClass::{Outage, Retryable, Success, Terminal, Throttled};
        let code = |code: &str| format!(r#"{{"RequestId":"R","Code":"{code}"}}"#);
        let rows = [
            (200, r#"{"RequestId":"R"}"#.to_owned(), Success),
            (400, code("Throttling.Api"), Throttled),
            (500, code("InternalError"), Retryable),
            (503, code("ServiceUnavailable"), Outage),
            (502, "<html>bad gateway</html>".to_owned(), Outage),
            (200, "{truncated".to_owned(), Outage),
            (400, code("IncorrectImageStatus"), Terminal),
            (400, code("SignatureDoesNotMatch"), Terminal),
        ];
        for (status, body, want) in rows {
            let got = parse_response(status, &HeaderMap::new(), body.as_bytes(), &[]).retry_class();
            assert_eq!(got, want, "{status} {body}");
        }
    }

    #[test]
    fn signature_mismatch_echo_is_cut_and_secrets_scrubbed() {
        let echo = format!(
            "POST&%2F&AccessKeyId%3Did%26SecurityToken%3D{}%26Signature",
            percent_encode(&percent_encode(TOKEN))
        );
        let body = serde_json::json!({
            "RequestId": "R7",
            "Code": "SignatureDoesNotMatch",
            "Message": format!("Specified signature is not matched with our calculation. server string to sign is:{echo}"),
        })
        .to_string();
        let got = parse_response(
            400,
            &HeaderMap::new(),
            body.as_bytes(),
            &[SECRET, TOKEN, SIG],
        );
        let CancelOutcome::Service(err) = &got else {
            panic!("{got:?}")
        };
        assert_eq!(
            err.message,
            "Specified signature is not matched with our calculation. (server string to sign redacted)"
        );
        let debug = format!("{got:?}");
        for leak in [
            TOKEN,
            &percent_encode(TOKEN),
            &percent_encode(&percent_encode(TOKEN)),
            "POST&%2F",
        ] {
            assert!(!debug.contains(leak), "{leak} in {debug}");
        }
    }

    #[test]
    fn redact_table() {
        let long = "é".repeat(600);
        let long_want = format!("{}…", "é".repeat(511));
        let rows: Vec<(String, String)> = vec![
            ("plain message".into(), "plain message".into()),
            (
                "The request signature does not conform to Aliyun standards. server string to sign is:GET&%2F&x".into(),
                "The request signature does not conform to Aliyun standards. (server string to sign redacted)".into(),
            ),
            (
                "Specified signature does not match our calculation. server StringToSign is [x], server CanonicalRequest is [y]".into(),
                "Specified signature does not match our calculation. (server string to sign redacted)".into(),
            ),
            ("Server String To Sign Is: x".into(), STRING_TO_SIGN_REDACTED.into()),
            (format!("token {TOKEN} and secret {SECRET}"), "token [REDACTED] and secret [REDACTED]".into()),
            (format!("sig {}", percent_encode(SIG)), "sig [REDACTED]".into()),
            ("line\nbreak\r\tx".into(), "line break  x".into()),
            (long, long_want),
        ];
        for (input, want) in rows {
            assert_eq!(
                redact(&input, &[SECRET, TOKEN, SIG, ""], MAX_MESSAGE_CHARS),
                want,
                "{input}"
            );
        }
    }

    #[test]
    fn region_id_table() {
        let rows = [
            ("cn-hangzhou", true),
            ("ap-southeast-1", true),
            ("cn-shanghai-finance-1", true),
            ("us-east-1", true),
            ("cn", false),
            ("c-hangzhou", false),
            ("cn-", false),
            ("cn--x", false),
            ("CN-hangzhou", false),
            ("cn-hangzhou.evil.com", false),
            ("cn-hangzhou/x", false),
            ("cn-hangzhou@evil", false),
            ("cn-hangzhou 测试", false),
            ("", false),
        ];
        for (region, want) in rows {
            assert_eq!(is_valid_region_id(region), want, "{region:?}");
        }
        assert!(!is_valid_region_id(&format!("cn-{}", "a".repeat(62))));
        assert!(is_valid_region_id(&format!("cn-{}", "a".repeat(61))));
    }

    /// The variant's name (its Debug form up to the fields), for tables of refusals.
    fn kind(e: &EndpointError) -> String {
        let debug = format!("{e:?}");
        debug.split(' ').next().unwrap_or_default().to_owned()
    }

    #[test]
    fn endpoint_table() {
        let ok = |template: &str, insecure: bool, want: &str| {
            let url = Endpoint::new(template, insecure)
                .and_then(|e| e.url_for("cn-hangzhou"))
                .unwrap_or_else(|e| panic!("{template}: {e}"));
            assert_eq!(url.as_str(), want, "{template}");
        };
        ok(
            DEFAULT_ENDPOINT_TEMPLATE,
            false,
            "https://ecs.cn-hangzhou.aliyuncs.com/",
        );
        ok(
            "https://ecs-vpc.{regionId}.aliyuncs.com",
            false,
            "https://ecs-vpc.cn-hangzhou.aliyuncs.com/",
        );
        ok(
            "https://ecs.aliyuncs.com/",
            false,
            "https://ecs.aliyuncs.com/",
        );
        ok("http://127.0.0.1:8080", false, "http://127.0.0.1:8080/");
        ok("http://127.8.9.10:1/", false, "http://127.8.9.10:1/");
        ok("http://[::1]:8080", false, "http://[::1]:8080/");
        ok("http://localhost:8080", false, "http://localhost:8080/");
        ok(
            "http://ecs.{regionId}.example.internal",
            true,
            "http://ecs.cn-hangzhou.example.internal/",
        );

        let err = |template: &str| Endpoint::new(template, false).unwrap_err();
        let insecure = err("http://ecs.{regionId}.example.internal");
        assert!(
            matches!(insecure, EndpointError::Insecure { .. }),
            "{insecure:?}"
        );
        assert!(
            insecure.to_string().contains("--allow-insecure-endpoint"),
            "{insecure}"
        );
        // (template, the kind of refusal; `A|B`: either)
        for (template, want) in [
            ("http://10.0.0.1:80", "Insecure"),
            ("http://128.0.0.1:80", "Insecure"),
            ("http://localhost.evil.com", "Insecure"),
            ("ecs.{regionId}.aliyuncs.com", "Invalid"),
            ("ftp://ecs.aliyuncs.com", "UnsupportedScheme"),
            ("unix:/var/run/ecs.sock", "UnsupportedScheme"),
            ("https:///", "Invalid|NoHost"),
            ("https://user:pw@ecs.aliyuncs.com", "ExtraParts"),
            ("https://ecs.aliyuncs.com/?a=b", "ExtraParts"),
        ] {
            let got = kind(&err(template));
            assert!(want.split('|').any(|k| k == got), "{template}: {got}");
        }

        let endpoint = Endpoint::new(DEFAULT_ENDPOINT_TEMPLATE, false).unwrap();
        let bad = endpoint.url_for("cn-hangzhou.evil.com/").unwrap_err();
        assert!(
            matches!(bad, EndpointError::InvalidRegionId { .. }),
            "{bad:?}"
        );
    }

    #[test]
    fn default_config() {
        let config = EcsClientConfig::default();
        assert_eq!(config.endpoint, "https://ecs.{regionId}.aliyuncs.com");
        assert_eq!(config.connect_timeout, Duration::from_secs(5));
        assert_eq!(config.request_timeout, Duration::from_secs(30));
        assert!(!config.allow_insecure_endpoint);
        assert!(EcsClient::new(config).is_ok());
    }

    #[test]
    fn new_refuses_insecure_endpoint_naming_the_flag() {
        let err = EcsClient::new(EcsClientConfig {
            endpoint: "http://ecs.example.com".into(),
            ..EcsClientConfig::default()
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("--allow-insecure-endpoint"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn bad_region_is_refused_without_sending() {
        // Nothing listens on this endpoint: a send would be a transport error.
        let client = EcsClient::new(EcsClientConfig {
            endpoint: "http://127.0.0.1:9".into(),
            ..EcsClientConfig::default()
        })
        .unwrap();
        let key = AccessKey::new("id", SECRET, None);
        let outcome = client
            .cancel_copy_image(&key, "cn-hangzhou.evil.com", "m-1")
            .await;
        let CancelOutcome::Service(err) = &outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(err.code, "InvalidRegionId.Malformed");
        assert!(err.message.contains("nothing was sent"), "{}", err.message);
        assert_eq!(outcome.retry_class(), RetryClass::Terminal);
    }

    /// Name lookups from a table: a host maps to loopback, to "no such
    /// name", or to a lookup that fails for now.
    #[derive(Debug)]
    struct Names(
        Vec<(
            &'static str,
            Result<Vec<IpAddr>, super::super::resolve::LookupError>,
        )>,
    );

    impl HostLookup for Names {
        fn lookup(
            &self,
            host: &str,
        ) -> futures::future::BoxFuture<
            'static,
            Result<Vec<IpAddr>, super::super::resolve::LookupError>,
        > {
            let answer = self
                .0
                .iter()
                .find(|(h, _)| *h == host)
                .map(|(_, a)| a.clone())
                .unwrap_or(Err(super::super::resolve::LookupError::NoSuchName));
            Box::pin(async move { answer })
        }
    }

    /// Through the client and an injected resolver: a region whose endpoint
    /// does not exist is terminal and names the host; a DNS failure for now
    /// is an outage; a region that resolves is sent to as usual.
    #[tokio::test]
    async fn a_region_that_does_not_resolve_is_told_from_a_dns_hiccup() {
        use super::super::resolve::LookupError;
        use copyimage_stand_ins::AccessKey as SimKey;
        use copyimage_stand_ins::ecs_simulator::{EcsSimulator, ImageState, SimulatorConfig};
        let sim = EcsSimulator::start(
            SimulatorConfig::new([SimKey::new("LTAI5tResolverTestKey", SECRET, None)])
                .with_image("m-1", ImageState::Copying),
        )
        .await
        .unwrap();
        let lookup = Names(vec![
            (
                "ecs.cn-hangzhou.example",
                Ok(vec![IpAddr::from([127, 0, 0, 1])]),
            ),
            (
                "ecs.cn-shanghai.example",
                Err(LookupError::Failed("EAI_AGAIN".into())),
            ),
        ]);
        let client = EcsClient::with_lookup(
            EcsClientConfig {
                endpoint: format!("http://ecs.{{regionId}}.example:{}", sim.addr().port()),
                allow_insecure_endpoint: true,
                ..EcsClientConfig::default()
            },
            Arc::new(lookup),
        )
        .unwrap();
        let key = AccessKey::new("LTAI5tResolverTestKey", SECRET, None);

        let outcome = client.cancel_copy_image(&key, "cn-nowhere-1", "m-1").await;
        let CancelOutcome::Transport(err) = &outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(err.kind, TransportKind::HostNotFound, "{}", err.message);
        assert!(
            err.message
                .contains("ecs.cn-nowhere-1.example does not exist"),
            "{}",
            err.message
        );
        assert_eq!(outcome.retry_class(), RetryClass::Terminal);

        let outcome = client.cancel_copy_image(&key, "cn-shanghai", "m-1").await;
        let CancelOutcome::Transport(err) = &outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(err.kind, TransportKind::Connect, "{}", err.message);
        assert!(err.message.contains("EAI_AGAIN"), "{}", err.message);
        assert_eq!(outcome.retry_class(), RetryClass::Outage);

        let outcome = client.cancel_copy_image(&key, "cn-hangzhou", "m-1").await;
        assert_eq!(outcome.retry_class(), RetryClass::Success, "{outcome:?}");
        // Only the region that resolved reached the service.
        assert_eq!(sim.requests().len(), 1);
    }

    /// The simulator's whole-endpoint outages, as the client sees them, and
    /// the same port answering again once each ends.
    #[tokio::test]
    async fn each_simulated_outage_is_an_outage_to_the_client() {
        use copyimage_stand_ins::AccessKey as SimKey;
        use copyimage_stand_ins::ecs_simulator::{
            EcsSimulator, ImageState, OutageMode, SimulatorConfig,
        };
        let sim = EcsSimulator::start(
            SimulatorConfig::new([SimKey::new("LTAI5tOutageTestKey", SECRET, None)])
                .with_image("m-1", ImageState::Copying),
        )
        .await
        .unwrap();
        let client = EcsClient::new(EcsClientConfig {
            endpoint: sim.endpoint(),
            request_timeout: Duration::from_secs(2),
            ..EcsClientConfig::default()
        })
        .unwrap();
        let key = AccessKey::new("LTAI5tOutageTestKey", SECRET, None);
        let addr = sim.addr();
        // A pooled connection from before must not outlive the outage.
        let warm = client
            .cancel_copy_image(&key, "cn-hangzhou", "m-missing")
            .await;
        assert_eq!(warm.retry_class(), RetryClass::Terminal, "{warm:?}");
        for (mode, want) in [
            (OutageMode::Refuse, TransportKind::Connect),
            (OutageMode::Blackhole, TransportKind::Timeout),
        ] {
            sim.set_outage(Some(mode), None).await;
            let mut outcome = client.cancel_copy_image(&key, "cn-hangzhou", "m-1").await;
            if matches!(&outcome, CancelOutcome::Transport(e) if e.kind == TransportKind::Interrupted)
            {
                // NB: the pooled connection the outage closed, met first.
                assert_eq!(outcome.retry_class(), RetryClass::Outage, "{mode}");
                outcome = client.cancel_copy_image(&key, "cn-hangzhou", "m-1").await;
            }
            let CancelOutcome::Transport(err) = &outcome else {
                panic!("{mode}: {outcome:?}")
            };
            assert_eq!(err.kind, want, "{mode}: {}", err.message);
            assert_eq!(outcome.retry_class(), RetryClass::Outage, "{mode}");
            sim.set_outage(None, None).await;
        }
        sim.set_outage(Some(OutageMode::Unavailable), None).await;
        let outcome = client.cancel_copy_image(&key, "cn-hangzhou", "m-1").await;
        let CancelOutcome::Service(err) = &outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(
            (err.http_status, err.code.as_str()),
            (503, "ServiceUnavailable")
        );
        assert!(err.message.contains("temporary failure"), "{}", err.message);
        assert!(err.request_id.is_some());
        assert_eq!(outcome.retry_class(), RetryClass::Outage);
        sim.set_outage(None, None).await;
        // Back, on the same port, and nothing above cancelled the copy.
        assert_eq!(sim.addr(), addr);
        assert_eq!(sim.image("m-1"), Some(ImageState::Copying));
        let outcome = client.cancel_copy_image(&key, "cn-hangzhou", "m-1").await;
        assert_eq!(outcome.retry_class(), RetryClass::Success, "{outcome:?}");
    }
}
