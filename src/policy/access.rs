//! Access rules: the method allowlist (405 with `Allow`).

use http::{HeaderValue, Method};

use crate::config::diagnostics::Diagnostics;
use crate::config::KeyPath;

/// The methods a route accepts, and the `Allow` header listing them, built at load.
#[derive(Debug, Clone)]
pub struct MethodSet {
    methods: Vec<Method>,
    pub allow: HeaderValue,
}

impl MethodSet {
    /// `HEAD` is accepted wherever `GET` is (RFC 9110 §9.3.2), and listed in `Allow`.
    pub fn compile(list: &[String], path: &KeyPath, diags: &mut Diagnostics) -> Option<MethodSet> {
        if list.is_empty() {
            diags.error(
                path.clone(),
                "an empty list would refuse every request; leave `methods` out to allow any",
            );
            return None;
        }
        let mut methods: Vec<Method> = Vec::new();
        for (i, name) in list.iter().enumerate() {
            let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase());
            match Method::from_bytes(name.as_bytes()) {
                Ok(m) if valid => {
                    if !methods.contains(&m) {
                        methods.push(m);
                    }
                }
                _ => diags.error(
                    path.index(i),
                    format!("`{name}` is not a method name; write it in capitals, e.g. \"GET\""),
                ),
            }
        }
        if methods.contains(&Method::GET) && !methods.contains(&Method::HEAD) {
            methods.push(Method::HEAD);
        }
        let names: Vec<&str> = methods.iter().map(Method::as_str).collect();
        let allow = HeaderValue::from_str(&names.join(", ")).ok()?;
        Some(MethodSet { methods, allow })
    }

    pub fn allows(&self, method: &Method) -> bool {
        self.methods.contains(method)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_brings_head_along_and_allow_lists_both() {
        let mut d = Diagnostics::default();
        let set =
            MethodSet::compile(&["GET".into(), "POST".into()], &KeyPath::root(), &mut d).unwrap();
        assert!(set.allows(&Method::HEAD));
        assert!(!set.allows(&Method::DELETE));
        assert_eq!(set.allow, "GET, POST, HEAD");
    }

    #[test]
    fn lowercase_or_empty_lists_are_errors() {
        let mut d = Diagnostics::default();
        MethodSet::compile(&["get".into()], &KeyPath::root().key("methods"), &mut d);
        MethodSet::compile(&[], &KeyPath::root().key("methods"), &mut d);
        assert_eq!(d.error_count(), 2);
    }
}
