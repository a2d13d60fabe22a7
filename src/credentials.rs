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
