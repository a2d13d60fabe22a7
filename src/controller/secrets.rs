//! Reading an access key out of the Secret a resource names. Pure: the
//! Secret comes from the shell's watch cache. Messages name the Secret and
//! the key, never a value.

use k8s_openapi::api::core::v1::Secret;

use crate::credentials::AccessKey;

/// Secret key holding the AccessKey ID.
pub const KEY_ACCESS_KEY_ID: &str = "accessKeyId";
/// Secret key holding the AccessKey secret.
pub const KEY_ACCESS_KEY_SECRET: &str = "accessKeySecret";
/// Secret key holding the optional STS security token.
pub const KEY_SECURITY_TOKEN: &str = "securityToken";
/// Every key read from a Secret (the Secret cache keeps only these).
pub const CREDENTIAL_KEYS: [&str; 3] =
    [KEY_ACCESS_KEY_ID, KEY_ACCESS_KEY_SECRET, KEY_SECURITY_TOKEN];

/// The access key in `secret` (Secret `namespace/name`), or why there is none,
/// in words fit for a status message.
pub fn access_key_from_secret(
    secret: Option<&Secret>,
    namespace: &str,
    name: &str,
) -> Result<AccessKey, String> {
    let Some(secret) = secret else {
        return Err(format!("Secret {namespace}/{name} not found"));
    };
    let read = |key: &str| -> Result<Option<String>, String> {
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.clone())
            // NB: stringData is write-only on a real API server; reading it
            // keeps Secrets built in memory (tests, stand-ins) working too.
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|s| s.clone().into_bytes())
            });
        match bytes {
            None => Ok(None),
            Some(b) => {
                let text = String::from_utf8(b).map_err(|_| {
                    format!("key {key} in Secret {namespace}/{name} is not valid UTF-8")
                })?;
                let text = text.trim().to_string();
                Ok((!text.is_empty()).then_some(text))
            }
        }
    };
    let required = |key: &str| -> Result<String, String> {
        read(key)?
            .ok_or_else(|| format!("Secret {namespace}/{name} has no key {key} (or it is empty)"))
    };
    let id = required(KEY_ACCESS_KEY_ID)?;
    let secret_value = required(KEY_ACCESS_KEY_SECRET)?;
    let token = read(KEY_SECURITY_TOKEN)?;
    Ok(AccessKey::new(id, secret_value, token))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    fn secret(pairs: &[(&str, &[u8])]) -> Secret {
        Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn table() {
        let full = secret(&[
            ("accessKeyId", b"LTAI5tId"),
            ("accessKeySecret", b"s3cr3t-value\n"),
            ("securityToken", b"CAIS-token"),
        ]);
        let key = access_key_from_secret(Some(&full), "images", "creds").unwrap();
        assert_eq!(key.id, "LTAI5tId");
        assert_eq!(
            key.secret(),
            "s3cr3t-value",
            "trailing newline from `echo` trimmed"
        );
        assert_eq!(key.security_token(), Some("CAIS-token"));

        let no_token = secret(&[
            ("accessKeyId", b"LTAI5tId"),
            ("accessKeySecret", b"s3cr3t-value"),
        ]);
        let key = access_key_from_secret(Some(&no_token), "images", "creds").unwrap();
        assert_eq!(key.security_token(), None);

        let rows: [(Option<Secret>, &str); 4] = [
            (None, "Secret images/creds not found"),
            (
                Some(secret(&[("accessKeyId", b"LTAI5tId")])),
                "Secret images/creds has no key accessKeySecret (or it is empty)",
            ),
            (
                Some(secret(&[
                    ("accessKeyId", b""),
                    ("accessKeySecret", b"s3cr3t-value"),
                ])),
                "Secret images/creds has no key accessKeyId (or it is empty)",
            ),
            (
                Some(secret(&[
                    ("accessKeyId", b"LTAI5tId"),
                    ("accessKeySecret", &[0xff, 0xfe]),
                ])),
                "key accessKeySecret in Secret images/creds is not valid UTF-8",
            ),
        ];
        for (secret, want) in rows {
            let err = access_key_from_secret(secret.as_ref(), "images", "creds").unwrap_err();
            assert_eq!(err, want);
        }
    }

    #[test]
    fn messages_never_carry_values() {
        let s = secret(&[
            ("accessKeyId", b"LTAI5tId"),
            ("accessKeySecret", &[0xff, b's', b'3']),
        ]);
        let err = access_key_from_secret(Some(&s), "images", "creds").unwrap_err();
        assert!(!err.contains("s3"), "{err}");
        let key = access_key_from_secret(
            Some(&secret(&[
                ("accessKeyId", b"LTAI5tId"),
                ("accessKeySecret", b"s3cr3t-value"),
            ])),
            "images",
            "creds",
        )
        .unwrap();
        assert!(!format!("{key:?}").contains("s3cr3t-value"));
    }
}
