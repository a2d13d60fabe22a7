//! Where access keys come from: the resource's Secret, or the operator's
//! environment. Secret values are held in [`secrecy::SecretString`], so they
//! never show in `Debug` output.

use secrecy::{ExposeSecret, SecretString};

/// Environment variable holding the AccessKey ID.
pub const ENV_ACCESS_KEY_ID: &str = "ALIBABA_CLOUD_ACCESS_KEY_ID";
/// Environment variable holding the AccessKey secret.
pub const ENV_ACCESS_KEY_SECRET: &str = "ALIBABA_CLOUD_ACCESS_KEY_SECRET";
/// Environment variable holding an optional STS security token.
pub const ENV_SECURITY_TOKEN: &str = "ALIBABA_CLOUD_SECURITY_TOKEN";

/// An Alibaba Cloud access key, with an STS token when it is temporary.
#[derive(Clone)]
pub struct AccessKey {
    /// The AccessKey ID (not secret: it is sent in every request).
    pub id: String,
    /// The AccessKey secret.
    pub secret: SecretString,
    /// The STS security token, for temporary credentials.
    pub security_token: Option<SecretString>,
}

impl AccessKey {
    /// A key from its parts.
    pub fn new(
        id: impl Into<String>,
        secret: impl Into<String>,
        security_token: Option<String>,
    ) -> Self {
        Self {
            id: id.into(),
            secret: SecretString::from(secret.into()),
            security_token: security_token.map(SecretString::from),
        }
    }

    /// The secret, for signing only.
    pub fn secret(&self) -> &str {
        self.secret.expose_secret()
    }

    /// The security token, for signing only.
    pub fn security_token(&self) -> Option<&str> {
        self.security_token.as_ref().map(|t| t.expose_secret())
    }
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("id", &self.id)
            .field("secret", &"[REDACTED]")
            .field(
                "security_token",
                &self.security_token.as_ref().map(|_| "[REDACTED]"),
            )
            .finish()
    }
}

/// Why no access key could be read from the environment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// A required variable is unset or empty.
    #[error(
        "environment variable {variable} is not set (or is empty): export it with your Alibaba Cloud AccessKey {what}"
    )]
    MissingVariable {
        /// The variable's name.
        variable: &'static str,
        /// What it should hold, for the message.
        what: &'static str,
    },
}

impl AccessKey {
    /// Reads `ALIBABA_CLOUD_ACCESS_KEY_ID`, `ALIBABA_CLOUD_ACCESS_KEY_SECRET`
    /// and the optional `ALIBABA_CLOUD_SECURITY_TOKEN` from the environment.
    pub fn from_env() -> Result<Self, CredentialsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`AccessKey::from_env`], with `lookup` standing in for the
    /// environment. An empty value counts as missing.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, CredentialsError> {
        let get = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let id = get(ENV_ACCESS_KEY_ID).ok_or(CredentialsError::MissingVariable {
            variable: ENV_ACCESS_KEY_ID,
            what: "ID",
        })?;
        let secret = get(ENV_ACCESS_KEY_SECRET).ok_or(CredentialsError::MissingVariable {
            variable: ENV_ACCESS_KEY_SECRET,
            what: "secret",
        })?;
        Ok(Self::new(id, secret, get(ENV_SECURITY_TOKEN)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    type Row<'a> = (
        Vec<(&'a str, &'a str)>,
        Result<(&'a str, &'a str, Option<&'a str>), CredentialsError>,
    );

    #[test]
    fn from_lookup_table() {
        let id = (ENV_ACCESS_KEY_ID, "LTAI5tId");
        let secret = (ENV_ACCESS_KEY_SECRET, "s3cr3t-value");
        let token = (ENV_SECURITY_TOKEN, "CAIS-token");
        let missing = |variable| {
            Err(CredentialsError::MissingVariable {
                variable,
                what: if variable == ENV_ACCESS_KEY_ID {
                    "ID"
                } else {
                    "secret"
                },
            })
        };
        let rows: Vec<Row> = vec![
            (vec![id, secret], Ok(("LTAI5tId", "s3cr3t-value", None))),
            (
                vec![id, secret, token],
                Ok(("LTAI5tId", "s3cr3t-value", Some("CAIS-token"))),
            ),
            (
                vec![id, secret, (ENV_SECURITY_TOKEN, "")],
                Ok(("LTAI5tId", "s3cr3t-value", None)),
            ),
            (vec![secret], missing(ENV_ACCESS_KEY_ID)),
            (
                vec![(ENV_ACCESS_KEY_ID, ""), secret],
                missing(ENV_ACCESS_KEY_ID),
            ),
            (vec![id], missing(ENV_ACCESS_KEY_SECRET)),
            (
                vec![id, (ENV_ACCESS_KEY_SECRET, ""), token],
                missing(ENV_ACCESS_KEY_SECRET),
            ),
        ];
        for (i, (vars, want)) in rows.into_iter().enumerate() {
            let got = AccessKey::from_lookup(lookup(&vars));
            let got = got
                .as_ref()
                .map(|k| (k.id.as_str(), k.secret(), k.security_token()));
            assert_eq!(got, want.as_ref().map(|w| *w), "row {i}");
        }
    }

    #[test]
    fn missing_variable_message_names_it() {
        let err = AccessKey::from_lookup(lookup(&[(ENV_ACCESS_KEY_ID, "x")])).unwrap_err();
        assert!(
            err.to_string().contains("ALIBABA_CLOUD_ACCESS_KEY_SECRET"),
            "{err}"
        );
    }

    #[test]
    fn debug_never_shows_secret_or_token() {
        let key = AccessKey::new("LTAI5tId", "s3cr3t-value", Some("CAIS-token".into()));
        let debug = format!("{key:?} {key:#?}");
        assert!(
            !debug.contains("s3cr3t-value") && !debug.contains("CAIS-token"),
            "{debug}"
        );
        assert!(debug.contains("LTAI5tId"));
    }
}
