//! Secret references: a secret is never a silent default. It is written inline (the audit
//! warns), or named as `{ env = "NAME" }` or `{ file = "/path" }` and read at load. A missing
//! one stops the start with its name.

use std::path::Path;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(
    untagged,
    expecting = "a string, { env = \"NAME\" } or { file = \"/path\" }"
)]
pub enum SecretRef {
    Inline(String),
    Source(SecretSource),
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum SecretSource {
    Env(String),
    File(String),
}

/// A resolved secret. Its `Debug` never prints the value.
#[derive(Clone)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl SecretRef {
    /// Reads the secret. Relative file paths are taken from `base` (the config file's folder).
    pub fn resolve(&self, base: &Path) -> Result<Secret, String> {
        match self {
            SecretRef::Inline(value) => Ok(Secret(value.clone())),
            SecretRef::Source(SecretSource::Env(name)) => match std::env::var(name) {
                Ok(value) if !value.is_empty() => Ok(Secret(value)),
                Ok(_) => Err(format!("environment variable `{name}` is empty")),
                Err(_) => Err(format!("environment variable `{name}` is not set")),
            },
            SecretRef::Source(SecretSource::File(path)) => {
                let full = base.join(path);
                std::fs::read_to_string(&full)
                    .map(Secret)
                    .map_err(|e| format!("cannot read secret file `{}`: {e}", full.display()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_environment_variable_is_named() {
        let r = SecretRef::Source(SecretSource::Env("PALISADE_TEST_SURELY_UNSET".into()));
        let err = r.resolve(Path::new(".")).unwrap_err();
        assert!(err.contains("PALISADE_TEST_SURELY_UNSET"), "{err}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let r = SecretRef::Source(SecretSource::File("no/such/key.pem".into()));
        let err = r.resolve(Path::new("/tmp")).unwrap_err();
        assert!(err.contains("/tmp/no/such/key.pem"), "{err}");
    }

    #[test]
    fn debug_output_hides_the_value() {
        let s = SecretRef::Inline("hunter2".into())
            .resolve(Path::new("."))
            .unwrap();
        assert_eq!(format!("{s:?}"), "Secret(..)");
    }
}
