//! The ECS instance RAM role, read from the instance metadata service with
//! the IMDSv2 token flow (and the tokenless call only when allowed).

use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use super::fetch::{FetchError, TemporaryCredentials, http_client, read_capped, redact};
use super::rrsa::parse_expiration;
use crate::credentials::AccessKey;

/// The metadata service of every ECS instance.
pub const DEFAULT_METADATA_ENDPOINT: &str = "http://100.100.100.200";
/// Path of the IMDSv2 token (PUT).
pub const TOKEN_PATH: &str = "/latest/api/token";
/// Path of the role listing; the role's credentials are below it.
pub const CREDENTIALS_PATH: &str = "/latest/meta-data/ram/security-credentials/";
/// Header asking for a token with this lifetime in seconds.
pub const TOKEN_TTL_HEADER: &str = "X-aliyun-ecs-metadata-token-ttl-seconds";
/// Header carrying the token.
pub const TOKEN_HEADER: &str = "X-aliyun-ecs-metadata-token";
/// Lifetime asked for the token (the service's maximum, like the SDKs).
pub const TOKEN_TTL_SECONDS: u32 = 21600;
/// The most of a metadata answer read.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// How to reach the metadata service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImdsConfig {
    /// Base URL (`http://100.100.100.200`).
    pub endpoint: Url,
    /// The role name; read from the service when `None`.
    pub role_name: Option<String>,
    /// Whether the tokenless (IMDSv1) call may be used when no token can be had.
    pub imdsv1_allowed: bool,
    /// Timeout of each call.
    pub timeout: Duration,
}

/// Whether `name` can be a RAM role name and thus a path segment
/// (letters, digits, `.`, `@`, `-`, `_`, 1 to 64).
pub fn is_valid_role_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'@' | b'-' | b'_'))
        && name != "."
        && name != ".."
}

/// Reads the instance role's credentials.
#[derive(Clone, Debug)]
pub struct ImdsFetcher {
    config: ImdsConfig,
    http: reqwest::Client,
}

impl ImdsFetcher {
    /// A fetcher for `config`; fails only when the HTTP client cannot be
    /// built.
    pub fn new(config: ImdsConfig) -> reqwest::Result<Self> {
        let http = http_client(config.timeout, config.timeout, true)?;
        Ok(Self { config, http })
    }

    /// The configuration.
    pub fn config(&self) -> &ImdsConfig {
        &self.config
    }

    /// Token (or tokenless when allowed), role name, credentials.
    pub async fn fetch(&self) -> Result<TemporaryCredentials, FetchError> {
        let token = match self.token().await {
            Ok(token) => Some(token),
            Err(err) if self.config.imdsv1_allowed => {
                tracing::debug!(error = %err, "IMDSv2 token unavailable; using the tokenless call");
                None
            }
            Err(err) => {
                return Err(FetchError::Metadata {
                    message: format!(
                        "{err}; the tokenless fallback is off (ALIBABA_CLOUD_IMDSV1_DISABLED=true)"
                    ),
                });
            }
        };
        let sensitive: Vec<&str> = token.iter().map(String::as_str).collect();
        let role = match &self.config.role_name {
            Some(role) => role.clone(),
            None => {
                let listing = self.get(CREDENTIALS_PATH, token.as_deref()).await?;
                let role = listing
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .unwrap_or_default()
                    .to_owned();
                if !is_valid_role_name(&role) {
                    return Err(FetchError::Metadata {
                        message: format!(
                            "the instance has no usable RAM role (listing {:?}): attach a RAM role to the instance, or set ALIBABA_CLOUD_ECS_METADATA",
                            redact(&listing, &sensitive)
                        ),
                    });
                }
                role
            }
        };
        let body = self
            .get(&format!("{CREDENTIALS_PATH}{role}"), token.as_deref())
            .await?;
        parse_credentials(body.as_bytes())
    }

    fn url(&self, path: &str) -> Url {
        let mut url = self.config.endpoint.clone();
        url.set_path(path);
        url
    }

    async fn token(&self) -> Result<String, FetchError> {
        let response = self
            .http
            .put(self.url(TOKEN_PATH))
            .header(TOKEN_TTL_HEADER, TOKEN_TTL_SECONDS.to_string())
            .send()
            .await;
        let token = self.text(TOKEN_PATH, response, &[]).await?;
        let token = token.trim().to_owned();
        if token.is_empty() {
            return Err(FetchError::Metadata {
                message: "the IMDSv2 token answer was empty".to_owned(),
            });
        }
        Ok(token)
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Result<String, FetchError> {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = token {
            request = request.header(TOKEN_HEADER, token);
        }
        let sensitive: Vec<&str> = token.into_iter().collect();
        self.text(path, request.send().await, &sensitive).await
    }

    async fn text(
        &self,
        path: &str,
        response: reqwest::Result<reqwest::Response>,
        sensitive: &[&str],
    ) -> Result<String, FetchError> {
        let host = self
            .config
            .endpoint
            .host_str()
            .unwrap_or_default()
            .to_owned();
        let mut response = response.map_err(|e| FetchError::Metadata {
            message: format!(
                "{path}: {} (is this an ECS instance?)",
                redact(&super::fetch::describe_reqwest(&e, &host), sensitive)
            ),
        })?;
        let status = response.status();
        let body = read_capped(&mut response, MAX_BODY_BYTES)
            .await
            .map_err(|message| FetchError::Metadata {
                message: format!("{path}: HTTP {}: {message}", status.as_u16()),
            })?;
        if !status.is_success() {
            return Err(FetchError::Metadata {
                message: format!(
                    "{path}: HTTP {}{}",
                    status.as_u16(),
                    match status.as_u16() {
                        401 | 403 => " (the metadata service refused the request)",
                        404 => " (not found: is a RAM role attached to the instance?)",
                        _ => "",
                    }
                ),
            });
        }
        String::from_utf8(body).map_err(|_| FetchError::Metadata {
            message: format!("{path}: the answer is not UTF-8"),
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CredentialsBody {
    code: Option<String>,
    access_key_id: Option<String>,
    access_key_secret: Option<String>,
    security_token: Option<String>,
    expiration: Option<String>,
}

/// The role's credentials answer. Pure.
pub fn parse_credentials(body: &[u8]) -> Result<TemporaryCredentials, FetchError> {
    let invalid = |message: String| FetchError::InvalidResponse {
        service: "the metadata service",
        message,
    };
    let parsed: CredentialsBody = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("the credentials answer is not JSON ({e})")))?;
    match parsed.code.as_deref() {
        Some("Success") => {}
        other => {
            return Err(invalid(format!(
                "the credentials answer has Code {:?}, not \"Success\"",
                other.unwrap_or("")
            )));
        }
    }
    match (
        parsed.access_key_id,
        parsed.access_key_secret,
        parsed.security_token,
        parsed.expiration,
    ) {
        (Some(id), Some(secret), Some(token), Some(expiration))
            if !id.is_empty() && !secret.is_empty() && !token.is_empty() =>
        {
            Ok(TemporaryCredentials {
                expiration: parse_expiration(&expiration, "the metadata service")?,
                key: AccessKey::new(id, secret, Some(token)),
            })
        }
        _ => Err(invalid(
            "the credentials answer lacks AccessKeyId, AccessKeySecret, SecurityToken or Expiration"
                .to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let ok = br#"{"AccessKeyId":"STS.x","AccessKeySecret":"sec","Expiration":"2026-11-27T13:00:00Z","SecurityToken":"CAIS","LastUpdated":"2026-11-27T07:00:00Z","Code":"Success"}"#;
        let got = parse_credentials(ok).unwrap();
        assert_eq!(
            (
                got.key.id.as_str(),
                got.key.secret(),
                got.key.security_token()
            ),
            ("STS.x", "sec", Some("CAIS"))
        );
        let rows: Vec<(&[u8], &str)> = vec![
            (
                br#"{"Code":"Failed"}"#,
                "the metadata service answered with something else than expected: the credentials answer has Code \"Failed\", not \"Success\"",
            ),
            (
                br#"{"Code":"Success","AccessKeyId":"a"}"#,
                "the metadata service answered with something else than expected: the credentials answer lacks AccessKeyId, AccessKeySecret, SecurityToken or Expiration",
            ),
            (
                b"<html>",
                "the metadata service answered with something else than expected: the credentials answer is not JSON (expected value at line 1 column 1)",
            ),
        ];
        for (i, (body, want)) in rows.into_iter().enumerate() {
            assert_eq!(
                parse_credentials(body).unwrap_err().to_string(),
                want,
                "row {i}"
            );
        }
    }

    #[test]
    fn role_names() {
        for (name, ok) in [
            ("EcsRamRole", true),
            ("a.b-c_d@e", true),
            ("", false),
            ("..", false),
            ("a/b", false),
            ("a b", false),
            (&"r".repeat(65), false),
        ] {
            assert_eq!(is_valid_role_name(name), ok, "{name:?}");
        }
    }
}
