//! What the RRSA and instance-role fetchers share: what one fetch yields or
//! why it failed, and how they talk HTTP (no redirects, capped reads,
//! secrets redacted from messages).

use std::sync::Once;
use std::time::Duration;

use jiff::Timestamp;

use crate::credentials::AccessKey;

/// The most characters of an error message kept (status, events, logs).
const MAX_MESSAGE_CHARS: usize = 512;

/// Credentials with an expiry (STS or the instance role).
#[derive(Clone, Debug)]
pub struct TemporaryCredentials {
    /// The key, with its security token.
    pub key: AccessKey,
    /// When STS stops accepting it.
    pub expiration: Timestamp,
}

/// Why one fetch of temporary credentials failed. Messages hold no secret,
/// token or key material.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The projected OIDC token could not be read.
    #[error(
        "cannot read the OIDC token file {path}: {reason} (is the service account token projected into the pod? ACK's RRSA webhook mounts it)"
    )]
    TokenFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The service could not be reached or its answer was cut short.
    #[error("{service} could not be reached: {message}")]
    Transport {
        /// Which service.
        service: &'static str,
        /// What failed.
        message: String,
    },
    /// The service answered with an error body.
    #[error(
        "{service} answered HTTP {http_status} {code}: {message}{}",
        .request_id.as_ref().map(|id| format!(" (request ID {id})")).unwrap_or_default()
    )]
    Service {
        /// Which service.
        service: &'static str,
        /// HTTP status.
        http_status: u16,
        /// The error code (`AuthenticationFail.OIDCToken.Expired`).
        code: String,
        /// The service's message, redacted and bounded.
        message: String,
        /// The request ID, for support tickets.
        request_id: Option<String>,
    },
    /// An answer that is not what the service sends.
    #[error("{service} answered with something else than expected: {message}")]
    InvalidResponse {
        /// Which service.
        service: &'static str,
        /// What was wrong.
        message: String,
    },
    /// The metadata service failed (unreachable, refused, no role).
    #[error("ECS metadata service: {message}")]
    Metadata {
        /// What failed.
        message: String,
    },
    /// The operator's own identity, which signs AssumeRole, has no key.
    #[error("the operator's own credentials, which assume the role, are not available: {message}")]
    Caller {
        /// Why (no secret in it).
        message: String,
    },
}

impl FetchError {
    /// The service's error code, when the service answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Service { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// Installs the ring crypto provider for rustls, once per process.
fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // NB: fails only when another provider (e.g. the ECS client's) is
        // already installed, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// An HTTP client with these timeouts and no redirects (a redirect would
/// resend the token elsewhere); `no_proxy` for the link-local metadata service.
pub(super) fn http_client(
    connect_timeout: Duration,
    request_timeout: Duration,
    no_proxy: bool,
) -> reqwest::Result<reqwest::Client> {
    install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .timeout(request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("copyimage-canceller/", env!("CARGO_PKG_VERSION")));
    if no_proxy {
        builder = builder.no_proxy();
    }
    builder.build()
}

/// A transport failure in words: what failed, where, and why.
pub(super) fn describe_reqwest(err: &reqwest::Error, host: &str) -> String {
    let what = if err.is_timeout() {
        format!("request to {host} timed out")
    } else if err.is_connect() {
        format!("could not connect to {host}")
    } else {
        format!("request to {host} failed")
    };
    let mut text = what;
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reads at most `cap` bytes of the body.
pub(super) async fn read_capped(
    response: &mut reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, String> {
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(format!("the answer is larger than {cap} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("the answer was cut short ({e})"))?
    {
        if body.len() + chunk.len() > cap {
            return Err(format!("the answer is larger than {cap} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `text` with every `sensitive` value replaced, bounded in length.
pub(super) fn redact(text: &str, sensitive: &[&str]) -> String {
    let mut out = text.to_owned();
    for value in sensitive.iter().filter(|v| v.len() >= 4) {
        out = out.replace(value, "[REDACTED]");
    }
    if out.chars().count() > MAX_MESSAGE_CHARS {
        out = out.chars().take(MAX_MESSAGE_CHARS).collect::<String>() + "…";
    }
    out
}
