//! Checks a Content-Security-Policy and a Strict-Transport-Security value at load, so a typo
//! is a config error with a line number instead of a header browsers silently ignore.

/// CSP Level 3 directives and the few still widely sent.
const DIRECTIVES: &[&str] = &[
    "default-src",
    "script-src",
    "script-src-elem",
    "script-src-attr",
    "style-src",
    "style-src-elem",
    "style-src-attr",
    "img-src",
    "font-src",
    "connect-src",
    "media-src",
    "object-src",
    "frame-src",
    "child-src",
    "worker-src",
    "manifest-src",
    "fenced-frame-src",
    "base-uri",
    "sandbox",
    "form-action",
    "frame-ancestors",
    "report-uri",
    "report-to",
    "require-trusted-types-for",
    "trusted-types",
    "upgrade-insecure-requests",
    "block-all-mixed-content",
    "webrtc",
];

/// What the check found: errors refuse the config, warnings are printed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Findings {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// A CSP must parse into directives: `name value...; name value...`.
pub fn check_csp(value: &str) -> Findings {
    let mut f = Findings::default();
    let mut seen: Vec<&str> = Vec::new();
    for part in value.split(';') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let name = part.split_ascii_whitespace().next().unwrap_or_default();
        let well_formed = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !well_formed {
            f.errors
                .push(format!("`{name}` is not a CSP directive name"));
            continue;
        }
        let lower = name.to_ascii_lowercase();
        if seen.contains(&lower.as_str()) {
            f.warnings.push(format!(
                "directive `{name}` appears twice; browsers ignore the second"
            ));
        } else if let Some(known) = DIRECTIVES.iter().find(|d| **d == lower) {
            seen.push(known);
        } else {
            f.warnings
                .push(format!("`{name}` is not a known CSP directive"));
        }
    }
    if seen.is_empty() && f.errors.is_empty() {
        f.errors
            .push("a CSP needs at least one directive, e.g. \"default-src 'self'\"".into());
    }
    f
}

/// One year, the least `preload` accepts.
pub const ONE_YEAR: u64 = 31_536_000;

/// HSTS needs a numeric `max-age`; `preload` needs at least a year and `includeSubDomains`.
pub fn check_hsts(value: &str) -> Findings {
    let mut f = Findings::default();
    let mut max_age: Option<u64> = None;
    let (mut subdomains, mut preload) = (false, false);
    for part in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let lower = part.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("max-age=") {
            match v.trim_matches('"').parse::<u64>() {
                Ok(n) => max_age = Some(n),
                Err(_) => f.errors.push(format!(
                    "max-age must be a whole number of seconds, not `{v}`"
                )),
            }
        } else if lower == "includesubdomains" {
            subdomains = true;
        } else if lower == "preload" {
            preload = true;
        } else {
            f.errors.push(format!(
                "`{part}` is not an HSTS directive (max-age, includeSubDomains, preload)"
            ));
        }
    }
    match max_age {
        None if f.errors.is_empty() => f
            .errors
            .push("needs max-age, e.g. \"max-age=63072000; includeSubDomains\"".into()),
        Some(age) if preload && (age < ONE_YEAR || !subdomains) => f.errors.push(format!(
            "preload needs max-age of at least {ONE_YEAR} (a year) and includeSubDomains"
        )),
        Some(age) if age < ONE_YEAR / 2 => f
            .warnings
            .push(format!("max-age={age} is under six months")),
        _ => {}
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_well_formed_csp_passes() {
        assert_eq!(
            check_csp("default-src 'none'; frame-ancestors 'none'"),
            Findings::default()
        );
        assert_eq!(
            check_csp("default-src 'self'; report-to csp;"),
            Findings::default()
        );
    }

    #[test]
    fn unknown_and_repeated_directives_warn() {
        let f = check_csp("default-src 'self'; script-scr 'self'; default-src 'none'");
        assert!(f.errors.is_empty());
        assert_eq!(f.warnings.len(), 2, "{f:?}");
        assert!(f.warnings[0].contains("script-scr"));
    }

    #[test]
    fn a_csp_without_directives_or_with_garbage_names_is_an_error() {
        assert_eq!(check_csp(" ; ").errors.len(), 1);
        assert_eq!(check_csp("'self' default-src").errors.len(), 1);
    }

    #[test]
    fn hsts_needs_a_numeric_max_age() {
        assert!(check_hsts("max-age=63072000; includeSubDomains")
            .errors
            .is_empty());
        assert_eq!(check_hsts("includeSubDomains").errors.len(), 1);
        assert_eq!(check_hsts("max-age=two-years").errors.len(), 1);
        assert_eq!(check_hsts("max-age=600; colour=blue").errors.len(), 1);
    }

    #[test]
    fn preload_needs_a_year_and_subdomains() {
        assert!(check_hsts("max-age=63072000; includeSubDomains; preload")
            .errors
            .is_empty());
        assert_eq!(check_hsts("max-age=63072000; preload").errors.len(), 1);
        assert_eq!(
            check_hsts("max-age=86400; includeSubDomains; preload")
                .errors
                .len(),
            1
        );
    }

    #[test]
    fn a_short_max_age_warns() {
        let f = check_hsts("max-age=600");
        assert!(f.errors.is_empty());
        assert_eq!(f.warnings.len(), 1);
    }
}
