//! Access rules: IP allow and deny lists (403), and the method allowlist (405 with `Allow`).

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

/// `allow_ips` / `deny_ips` on a route, on the client IP from the trusted-proxy logic.
#[derive(Debug, Clone, Default)]
pub struct IpRules {
    allow: Vec<ipnet::IpNet>,
    deny: Vec<ipnet::IpNet>,
}

impl IpRules {
    pub fn compile(
        allow: &[String],
        deny: &[String],
        path: &KeyPath,
        diags: &mut Diagnostics,
    ) -> Option<IpRules> {
        if allow.is_empty() && deny.is_empty() {
            return None;
        }
        let mut parse = |key: &str, list: &[String]| -> Vec<ipnet::IpNet> {
            list.iter()
                .enumerate()
                .filter_map(|(i, text)| {
                    let parsed = text
                        .parse::<ipnet::IpNet>()
                        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
                    parsed
                        .map_err(|_| {
                            diags.error(
                                path.key(key).index(i),
                                format!("`{text}` is not an IP address or CIDR"),
                            )
                        })
                        .ok()
                })
                .collect()
        };
        Some(IpRules {
            allow: parse("allow_ips", allow),
            deny: parse("deny_ips", deny),
        })
    }

    /// Denied when listed in `deny_ips`, or when `allow_ips` is set and does not list it.
    pub fn allows(&self, ip: std::net::IpAddr) -> bool {
        let ip = crate::policy::forwarded::canonical(ip);
        !self.deny.iter().any(|n| n.contains(&ip))
            && (self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip)))
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

    #[test]
    fn deny_wins_and_an_allow_list_shuts_out_the_rest() {
        let mut d = Diagnostics::default();
        let rules = IpRules::compile(
            &["10.0.0.0/8".into()],
            &["10.9.0.0/16".into()],
            &KeyPath::root(),
            &mut d,
        )
        .unwrap();
        assert!(rules.allows("10.1.2.3".parse().unwrap()));
        assert!(!rules.allows("10.9.1.1".parse().unwrap()));
        assert!(!rules.allows("192.0.2.1".parse().unwrap()));
        assert!(rules.allows("::ffff:10.1.2.3".parse().unwrap()));
    }
}
