//! RRSA (RAM Roles for Service Accounts on ACK): exchanges the projected
//! service account token for STS credentials with the unsigned
//! `AssumeRoleWithOIDC` call. The token file is read again on every call,
//! because the kubelet rotates it.

use std::path::PathBuf;
use std::time::Duration;

use jiff::Timestamp;
use reqwest::Url;
use serde::Deserialize;

use super::fetch::{FetchError, TemporaryCredentials, http_client, read_capped, redact};
use crate::credentials::AccessKey;

/// The STS API version of `AssumeRoleWithOIDC`.
pub const STS_API_VERSION: &str = "2015-04-01";
/// The action.
pub const ACTION: &str = "AssumeRoleWithOIDC";
/// `DurationSeconds` asked for unless configured: one hour, like the SDKs.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(3600);
/// The least `DurationSeconds` STS accepts.
pub const MIN_DURATION: Duration = Duration::from_secs(900);
/// The most of an STS answer read.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// The most of a token file read; projected tokens are a few KiB.
const MAX_TOKEN_BYTES: u64 = 64 * 1024;

/// Where and how to assume the role. Holds no secret: the token stays in its file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RrsaConfig {
    /// `RoleArn`.
    pub role_arn: String,
    /// `OIDCProviderArn`.
    pub oidc_provider_arn: String,
    /// The projected token, read again on every call.
    pub token_file: PathBuf,
    /// `RoleSessionName`.
    pub session_name: String,
    /// STS base URL.
    pub endpoint: Url,
    /// `DurationSeconds`.
    pub duration: Duration,
    /// Connection timeout.
    pub connect_timeout: Duration,
    /// Whole-call timeout.
    pub request_timeout: Duration,
}

/// Whether STS would accept `name` as `RoleSessionName`: 2 to 64 of
/// letters, digits, `.`, `@`, `-`, `_`.
pub fn is_valid_session_name(name: &str) -> bool {
    (2..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'@' | b'-' | b'_'))
}

/// Calls `AssumeRoleWithOIDC` with the configured role.
#[derive(Clone, Debug)]
pub struct RrsaFetcher {
    config: RrsaConfig,
    http: reqwest::Client,
}

impl RrsaFetcher {
    /// A fetcher for `config`; fails only when the HTTP client cannot be
    /// built.
    pub fn new(config: RrsaConfig) -> reqwest::Result<Self> {
        let http = http_client(config.connect_timeout, config.request_timeout, false)?;
        Ok(Self { config, http })
    }

    /// The configuration.
    pub fn config(&self) -> &RrsaConfig {
        &self.config
    }

    /// Reads the token file and exchanges the token for credentials.
    pub async fn fetch(&self) -> Result<TemporaryCredentials, FetchError> {
        let token = read_token(&self.config.token_file).await?;
        let (query, form) = request_parts(&self.config, &token, Timestamp::now());
        let mut url = self.config.endpoint.clone();
        url.set_query(Some(&query));
        post_form(&self.http, url, form, &[&token]).await
    }
}

/// POSTs one form-encoded STS call and reads the answer (capped) into
/// credentials; shared by `AssumeRoleWithOIDC` and `AssumeRole`, which differ
/// only in how the form is built. `sensitive` values are scrubbed from every
/// error message, the transport's included.
pub(super) async fn post_form(
    http: &reqwest::Client,
    url: Url,
    form: String,
    sensitive: &[&str],
) -> Result<TemporaryCredentials, FetchError> {
    let host = url.host_str().unwrap_or_default().to_owned();
    let sent = http
        .post(url)
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(http::header::ACCEPT, "application/json")
        .body(form)
        .send()
        .await;
    let mut response = sent.map_err(|e| FetchError::Transport {
        service: "STS",
        message: redact(&super::fetch::describe_reqwest(&e, &host), sensitive),
    })?;
    let status = response.status().as_u16();
    let body = read_capped(&mut response, MAX_BODY_BYTES)
        .await
        .map_err(|message| FetchError::Transport {
            service: "STS",
            message: format!("HTTP {status} from {host}: {message}"),
        })?;
    parse_response(status, &body, sensitive)
}

/// Reads the projected token; a missing, unreadable or empty file is an error naming it.
async fn read_token(path: &std::path::Path) -> Result<String, FetchError> {
    use tokio::io::AsyncReadExt as _;
    let unreadable = |reason: String| FetchError::TokenFile {
        path: path.display().to_string(),
        reason,
    };
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| unreadable(e.to_string()))?;
    let mut token = String::new();
    file.take(MAX_TOKEN_BYTES + 1)
        .read_to_string(&mut token)
        .await
        .map_err(|e| unreadable(e.to_string()))?;
    if token.len() as u64 > MAX_TOKEN_BYTES {
        return Err(unreadable(format!(
            "it is larger than {MAX_TOKEN_BYTES} bytes, not a service account token"
        )));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(unreadable("it is empty".to_owned()));
    }
    Ok(token.to_owned())
}

/// The query string and the form body of the call. Pure.
///
/// Like credentials-go: the common parameters in the query, the rest in the
/// POST body, so the token never lands in a URL (or a proxy's access log).
pub fn request_parts(config: &RrsaConfig, token: &str, now: Timestamp) -> (String, String) {
    let timestamp = now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let duration = config.duration.as_secs().to_string();
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("Action", ACTION)
        .append_pair("Version", STS_API_VERSION)
        .append_pair("Format", "JSON")
        .append_pair("Timestamp", &timestamp)
        .finish();
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("DurationSeconds", &duration)
        .append_pair("RoleArn", &config.role_arn)
        .append_pair("OIDCProviderArn", &config.oidc_provider_arn)
        .append_pair("OIDCToken", token)
        .append_pair("RoleSessionName", &config.session_name)
        .finish();
    (query, body)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SuccessBody {
    credentials: CredentialsBody,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CredentialsBody {
    access_key_id: String,
    access_key_secret: String,
    security_token: String,
    expiration: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(alias = "code")]
    #[serde(rename = "Code")]
    code: Option<String>,
    #[serde(alias = "message")]
    #[serde(rename = "Message")]
    message: Option<String>,
    #[serde(alias = "requestId")]
    #[serde(rename = "RequestId")]
    request_id: Option<String>,
}

/// Turns an STS answer into credentials or an error. Pure. `sensitive`
/// values (the OIDC token) are scrubbed from every message.
pub fn parse_response(
    status: u16,
    body: &[u8],
    sensitive: &[&str],
) -> Result<TemporaryCredentials, FetchError> {
    // NB: every text of the error is scrubbed, not only the service's
    // message: the JSON parser's error quotes strings of the body, the
    // expiration is quoted as sent, and the request ID is the service's
    // text too (fuzzing found the token in all three).
    parse_unscrubbed(status, body).map_err(|err| match err {
        FetchError::Service {
            service,
            http_status,
            code,
            message,
            request_id,
        } => FetchError::Service {
            service,
            http_status,
            code: redact(&code, sensitive),
            message: redact(&message, sensitive),
            request_id: request_id.map(|id| redact(&id, sensitive)),
        },
        FetchError::InvalidResponse { service, message } => FetchError::InvalidResponse {
            service,
            message: redact(&message, sensitive),
        },
        other => other,
    })
}

fn parse_unscrubbed(status: u16, body: &[u8]) -> Result<TemporaryCredentials, FetchError> {
    if (200..300).contains(&status) {
        let parsed: SuccessBody =
            serde_json::from_slice(body).map_err(|e| FetchError::InvalidResponse {
                service: "STS",
                message: format!(
                    "HTTP {status}: the body is not an AssumeRoleWithOIDC answer ({e})"
                ),
            })?;
        let c = parsed.credentials;
        let expiration = parse_expiration(&c.expiration, "STS")?;
        if c.access_key_id.is_empty()
            || c.access_key_secret.is_empty()
            || c.security_token.is_empty()
        {
            return Err(FetchError::InvalidResponse {
                service: "STS",
                message: format!(
                    "HTTP {status}: the answer's Credentials lack a key, secret or token"
                ),
            });
        }
        return Ok(TemporaryCredentials {
            key: AccessKey::new(c.access_key_id, c.access_key_secret, Some(c.security_token)),
            expiration,
        });
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody {
            code: Some(code),
            message,
            request_id,
        }) => Err(FetchError::Service {
            service: "STS",
            http_status: status,
            code,
            message: message.unwrap_or_default(),
            request_id,
        }),
        _ => Err(FetchError::InvalidResponse {
            service: "STS",
            message: format!("HTTP {status} without an STS error body"),
        }),
    }
}

/// `Expiration` as STS and the metadata service write it (`2026-11-27T12:00:00Z`).
pub(super) fn parse_expiration(
    value: &str,
    service: &'static str,
) -> Result<Timestamp, FetchError> {
    value.parse().map_err(|_| FetchError::InvalidResponse {
        service,
        message: format!("Expiration {value:?} is not an RFC 3339 time"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RrsaConfig {
        RrsaConfig {
            role_arn: "acs:ram::1:role/r".into(),
            oidc_provider_arn: "acs:ram::1:oidc-provider/p".into(),
            token_file: "/t".into(),
            session_name: "s1".into(),
            endpoint: "https://sts.aliyuncs.com".parse().unwrap(),
            duration: DEFAULT_DURATION,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn request_parts_split_like_credentials_go() {
        let (query, body) = request_parts(
            &config(),
            "eyJ.tok+en",
            "2026-11-27T12:00:00Z".parse().unwrap(),
        );
        let pairs = |s: &str| -> Vec<(String, String)> {
            form_urlencoded::parse(s.as_bytes()).into_owned().collect()
        };
        let owned = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            pairs(&query),
            owned(&[
                ("Action", "AssumeRoleWithOIDC"),
                ("Version", "2015-04-01"),
                ("Format", "JSON"),
                ("Timestamp", "2026-11-27T12:00:00Z"),
            ])
        );
        assert_eq!(
            pairs(&body),
            owned(&[
                ("DurationSeconds", "3600"),
                ("RoleArn", "acs:ram::1:role/r"),
                ("OIDCProviderArn", "acs:ram::1:oidc-provider/p"),
                ("OIDCToken", "eyJ.tok+en"),
                ("RoleSessionName", "s1"),
            ])
        );
        assert!(!query.contains("tok"), "the token stays out of the URL");
    }

    #[test]
    fn parse_table() {
        let ok = br#"{"RequestId":"R1","AssumedRoleUser":{"Arn":"a","AssumedRoleId":"i"},
            "Credentials":{"AccessKeyId":"STS.abc","AccessKeySecret":"sec","SecurityToken":"CAIS","Expiration":"2026-11-27T13:00:00Z"}}"#;
        let got = parse_response(200, ok, &[]).unwrap();
        assert_eq!(got.key.id, "STS.abc");
        assert_eq!(got.key.secret(), "sec");
        assert_eq!(got.key.security_token(), Some("CAIS"));
        assert_eq!(got.expiration, "2026-11-27T13:00:00Z".parse().unwrap());

        let rows: Vec<(u16, &[u8], &str)> = vec![
            (
                400,
                br#"{"RequestId":"R2","HostId":"sts.aliyuncs.com","Code":"AuthenticationFail.OIDCToken.Expired","Message":"The OIDC token has expired."}"#,
                "STS answered HTTP 400 AuthenticationFail.OIDCToken.Expired: The OIDC token has expired. (request ID R2)",
            ),
            (
                400,
                br#"{"code":"InvalidParameter.OIDCToken","message":"token eyJsecret is invalid"}"#,
                "STS answered HTTP 400 InvalidParameter.OIDCToken: token [REDACTED] is invalid",
            ),
            (
                502,
                b"<html>Bad Gateway</html>",
                "STS answered with something else than expected: HTTP 502 without an STS error body",
            ),
            (
                200,
                br#"{"RequestId":"R3"}"#,
                "STS answered with something else than expected: HTTP 200: the body is not an AssumeRoleWithOIDC answer (missing field `Credentials` at line 1 column 18)",
            ),
            (
                200,
                br#"{"Credentials":{"AccessKeyId":"a","AccessKeySecret":"b","SecurityToken":"c","Expiration":"soon"}}"#,
                "STS answered with something else than expected: Expiration \"soon\" is not an RFC 3339 time",
            ),
        ];
        for (i, (status, body, want)) in rows.into_iter().enumerate() {
            let err = parse_response(status, body, &["eyJsecret"]).unwrap_err();
            assert_eq!(err.to_string(), want, "row {i}");
        }
    }

    /// Regression (found by `cargo fuzz`, target `credentials`): the token
    /// came out of the JSON parser's error, the quoted expiration and the
    /// request ID.
    #[test]
    fn token_never_leaves_through_any_error_text() {
        let rows: [(u16, &[u8], &str); 3] = [
            (
                200,
                br#"{"RequestId":"R2","Credentials":"eyJsecret.tok"}"#,
                "STS answered with something else than expected: HTTP 200: the body is not an AssumeRoleWithOIDC answer (invalid type: string \"[REDACTED].tok\", expected struct CredentialsBody at line 1 column 47)",
            ),
            (
                200,
                br#"{"Credentials":{"AccessKeyId":"a","AccessKeySecret":"b","SecurityToken":"c","Expiration":"eyJsecret"}}"#,
                "STS answered with something else than expected: Expiration \"[REDACTED]\" is not an RFC 3339 time",
            ),
            (
                400,
                br#"{"RequestId":"eyJsecret","Code":"InvalidParameter.OIDCToken"}"#,
                "STS answered HTTP 400 InvalidParameter.OIDCToken:  (request ID [REDACTED])",
            ),
        ];
        for (i, (status, body, want)) in rows.into_iter().enumerate() {
            let err = parse_response(status, body, &["eyJsecret"]).unwrap_err();
            assert_eq!(err.to_string(), want, "row {i}");
            assert!(
                !format!("{err:?}").contains("eyJsecret"),
                "row {i}: {err:?}"
            );
        }
    }

    #[test]
    fn session_names() {
        for (name, ok) in [
            ("ab", true),
            ("a", false),
            ("copyimage-canceller-1700000000", true),
            ("a.b@c_d-e", true),
            ("a b", false),
            ("a/b", false),
            (&"x".repeat(64), true),
            (&"x".repeat(65), false),
        ] {
            assert_eq!(is_valid_session_name(name), ok, "{name}");
        }
    }
}
