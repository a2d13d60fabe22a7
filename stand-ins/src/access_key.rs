//! The access keys the stand-ins know and mint: their own type, not the
//! operator's, so that nothing here is borrowed from the code under test.

/// An Alibaba Cloud access key as the simulators hold it: ID, secret and, for
/// temporary (STS) keys, the security token.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKey {
    /// The AccessKey ID.
    pub id: String,
    secret: String,
    security_token: Option<String>,
}

impl AccessKey {
    /// The AccessKey secret.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The STS security token, for a temporary key.
    pub fn security_token(&self) -> Option<&str> {
        self.security_token.as_deref()
    }

    /// A key from its ID, secret and (temporary keys only) token.
    pub fn new(
        id: impl Into<String>,
        secret: impl Into<String>,
        security_token: Option<String>,
    ) -> Self {
        let (id, secret) = (id.into(), secret.into());
        Self {
            id,
            secret,
            security_token,
        }
    }
}

// NB: the simulators log what they see; a key's secret and token must not be
// among it.
impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let token = self.security_token.as_ref().map(|_| "[REDACTED]");
        write!(
            f,
            "AccessKey {{ id: {:?}, secret: [REDACTED], security_token: {token:?} }}",
            self.id
        )
    }
}

/// Environment variable holding the AccessKey ID (the Alibaba Cloud SDKs' name).
pub const ENV_ACCESS_KEY_ID: &str = "ALIBABA_CLOUD_ACCESS_KEY_ID";
/// Environment variable holding the AccessKey secret.
pub const ENV_ACCESS_KEY_SECRET: &str = "ALIBABA_CLOUD_ACCESS_KEY_SECRET";
/// Environment variable holding an optional STS security token.
pub const ENV_SECURITY_TOKEN: &str = "ALIBABA_CLOUD_SECURITY_TOKEN";
