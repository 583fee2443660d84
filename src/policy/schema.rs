//! JSON Schema per route (draft 2020-12, formats asserted), compiled at load. The body is
//! buffered up to the route's limit, validated, and forwarded byte for byte when valid.

use std::path::Path;

use serde::Serialize;

use crate::config::diagnostics::Diagnostics;
use crate::config::KeyPath;

pub struct BodySchema {
    validator: jsonschema::Validator,
}

/// One reason a body does not match, where it is, without echoing the value.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Mismatch {
    pub pointer: String,
    pub message: String,
}

/// At most this many mismatches are reported.
const MAX_MISMATCHES: usize = 20;

impl BodySchema {
    pub fn compile(
        file: &str,
        base: &Path,
        path: &KeyPath,
        diags: &mut Diagnostics,
    ) -> Option<BodySchema> {
        let full = base.join(file);
        let text = match std::fs::read_to_string(&full) {
            Ok(t) => t,
            Err(e) => {
                diags.error(
                    path.clone(),
                    format!("cannot read `{}`: {e}", full.display()),
                );
                return None;
            }
        };
        let schema: serde_json::Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                diags.error(
                    path.clone(),
                    format!("`{}` is not JSON: {e}", full.display()),
                );
                return None;
            }
        };
        match jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema)
        {
            Ok(validator) => Some(BodySchema { validator }),
            Err(e) => {
                diags.error(
                    path.clone(),
                    format!(
                        "`{}` is not a valid JSON Schema: {}",
                        full.display(),
                        e.masked()
                    ),
                );
                None
            }
        }
    }

    /// `Ok` when the body is JSON that matches; otherwise what is wrong with it.
    pub fn check(&self, body: &[u8]) -> Result<(), Vec<Mismatch>> {
        let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
            vec![Mismatch {
                pointer: String::new(),
                message: format!("not valid JSON: {e}"),
            }]
        })?;
        let mismatches: Vec<Mismatch> = self
            .validator
            .iter_errors(&value)
            .take(MAX_MISMATCHES)
            .map(|e| Mismatch {
                pointer: e.instance_path().to_string(),
                message: e.masked().to_string(),
            })
            .collect();
        if mismatches.is_empty() {
            Ok(())
        } else {
            Err(mismatches)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(text: &str) -> BodySchema {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.json"), text).unwrap();
        let mut d = Diagnostics::default();
        BodySchema::compile("s.json", dir.path(), &KeyPath::root(), &mut d).expect("valid schema")
    }

    const JOB: &str = r#"{
        "type": "object",
        "required": ["workflow", "callback_url"],
        "properties": {
            "workflow": {"type": "string", "minLength": 1, "maxLength": 128},
            "callback_url": {"type": "string", "format": "uri", "pattern": "^https?://", "maxLength": 1024}
        }
    }"#;

    #[test]
    fn a_matching_body_passes() {
        assert_eq!(
            schema(JOB).check(br#"{"workflow":"w","callback_url":"https://x.example/cb"}"#),
            Ok(())
        );
    }

    #[test]
    fn mismatches_name_the_pointer_and_never_echo_the_value() {
        let long = "a".repeat(5000);
        let body = format!(r#"{{"workflow":"{long}","callback_url":"ftp://files.example/x"}}"#);
        let errors = schema(JOB).check(body.as_bytes()).unwrap_err();
        let pointers: Vec<&str> = errors.iter().map(|e| e.pointer.as_str()).collect();
        assert!(
            pointers.contains(&"/workflow") && pointers.contains(&"/callback_url"),
            "{errors:?}"
        );
        assert!(
            errors.iter().all(|e| !e.message.contains(&long[..100])),
            "{errors:?}"
        );
    }

    #[test]
    fn malformed_json_is_reported() {
        let errors = schema(JOB).check(b"{not json").unwrap_err();
        assert!(errors[0].message.starts_with("not valid JSON"));
    }
}
