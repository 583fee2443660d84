//! Reading `gateway.toml`: TOML text -> typed sections, with every problem collected and located.
//!
//! Each section (and each upstream and route on its own) is deserialized separately, so one
//! mistake does not hide the next: `palisade check` lists them all.

pub mod diagnostics;
pub mod schema;
pub mod secret;
pub mod units;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

pub use diagnostics::{Diagnostics, KeyPath, SourceMap};
pub use schema::*;
pub use secret::SecretRef;

const SECTIONS: &[&str] = &[
    "server",
    "admin",
    "tls",
    "upstreams",
    "defaults",
    "headers",
    "cors",
    "rate_limits",
    "lockouts",
    "api_keys",
    "redis",
    "static",
    "routes",
];

/// A config file as read: the sections that parsed, and where it came from.
pub struct Loaded {
    pub config: Config,
    /// The folder relative paths in the config are taken from.
    pub base_dir: PathBuf,
    pub source: SourceMap,
}

/// Reads and parses `file`. Problems go into `diags`; the result is `None` when the text could
/// not be read or parsed at all, or when a section failed to deserialize.
pub fn load(file: &Path, diags: &mut Diagnostics) -> Result<Loaded, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("{}: cannot read config: {e}", file.display()))?;
    let config = parse(&text, diags);
    let base_dir = file
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    Ok(Loaded {
        config,
        base_dir,
        source: SourceMap::new(file, &text),
    })
}

/// Parses config text. Sections that fail are reported and left at their defaults, so that the
/// checks that follow still run on the rest (their results are only used when nothing failed).
pub fn parse(text: &str, diags: &mut Diagnostics) -> Config {
    let mut config = Config {
        server: ServerConfig::default(),
        admin: AdminConfig::default(),
        tls: None,
        upstreams: BTreeMap::new(),
        defaults: DefaultsConfig::default(),
        headers: BTreeMap::new(),
        cors: BTreeMap::new(),
        rate_limits: BTreeMap::new(),
        lockouts: BTreeMap::new(),
        api_keys: BTreeMap::new(),
        redis: None,
        statics: Vec::new(),
        routes: Vec::new(),
    };
    let table = match text.parse::<toml::Table>() {
        Ok(table) => table,
        Err(e) => {
            let message = e.message().trim().lines().collect::<Vec<_>>().join("; ");
            diags.error_at(e.span(), format!("syntax error: {message}"));
            return config;
        }
    };
    let root = KeyPath::root();
    for (key, value) in table {
        let path = root.key(&key);
        match key.as_str() {
            "server" => {
                if let Some(v) = section(value, &path, diags) {
                    config.server = v;
                }
            }
            "admin" => {
                if let Some(v) = section(value, &path, diags) {
                    config.admin = v;
                }
            }
            "tls" => config.tls = section(value, &path, diags),
            "defaults" => {
                if let Some(v) = section(value, &path, diags) {
                    config.defaults = v;
                }
            }
            "upstreams" => config.upstreams = named_sections(value, &path, diags),
            "headers" => config.headers = named_sections(value, &path, diags),
            "cors" => config.cors = named_sections(value, &path, diags),
            "rate_limits" => config.rate_limits = named_sections(value, &path, diags),
            "lockouts" => config.lockouts = named_sections(value, &path, diags),
            "api_keys" => config.api_keys = named_sections(value, &path, diags),
            "redis" => config.redis = section(value, &path, diags),
            "routes" => config.routes = array_sections(value, &path, "[[routes]]", diags),
            "static" => config.statics = array_sections(value, &path, "[[static]]", diags),
            other => diags.error(
                path,
                format!(
                    "unknown section `{other}`; expected one of: {}",
                    SECTIONS.join(", ")
                ),
            ),
        }
    }
    config
}

fn section<T: DeserializeOwned>(
    value: toml::Value,
    path: &KeyPath,
    diags: &mut Diagnostics,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            diags.error(
                path.join_serde(e.path()),
                e.inner().message().trim().to_string(),
            );
            None
        }
    }
}

fn array_sections<T: DeserializeOwned>(
    value: toml::Value,
    path: &KeyPath,
    form: &str,
    diags: &mut Diagnostics,
) -> Vec<T> {
    match value {
        toml::Value::Array(items) => items
            .into_iter()
            .enumerate()
            .filter_map(|(i, item)| section(item, &path.index(i), diags))
            .collect(),
        _ => {
            diags.error(
                path.clone(),
                format!("must be an array of tables: write each as {form}"),
            );
            Vec::new()
        }
    }
}

fn named_sections<T: DeserializeOwned>(
    value: toml::Value,
    path: &KeyPath,
    diags: &mut Diagnostics,
) -> BTreeMap<String, T> {
    let mut out = BTreeMap::new();
    match value {
        toml::Value::Table(entries) => {
            for (name, entry) in entries {
                if let Some(v) = section(entry, &path.key(&name), diags) {
                    out.insert(name, v);
                }
            }
        }
        _ => diags.error(
            path.clone(),
            "must be a table of named entries, e.g. [upstreams.app]",
        ),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        let mut diags = Diagnostics::default();
        parse(text, &mut diags);
        let map = SourceMap::new(Path::new("g.toml"), text);
        diags.list.iter().map(|d| map.render(d)).collect()
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let e = errors("[server]\nlisten = [\"127.0.0.1:1\"]\nlisten_tls = []\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("g.toml:3:1: server.listen_tls: unknown field `listen_tls`"),
            "{e:?}"
        );
    }

    #[test]
    fn every_broken_section_is_reported_not_just_the_first() {
        let text = "[upstreams.a]\nservers = \"x\"\n\n[[routes]]\nname = \"r\"\nupstream = \"a\"\ncolor = 1\n\n[admin]\nlisten = 5\n";
        let e = errors(text);
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(
            e.iter()
                .any(|l| l.starts_with("g.toml:2:") && l.contains("upstreams.a.servers")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|l| l.starts_with("g.toml:7:1: routes[0].color")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|l| l.starts_with("g.toml:10:") && l.contains("admin.listen")),
            "{e:?}"
        );
    }

    #[test]
    fn a_syntax_error_points_at_the_text() {
        let e = errors("[server]\nlisten = [\"a\"\n");
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("g.toml:3:1: (top level): syntax error: invalid array; expected `]`"),
            "{e:?}"
        );
    }

    #[test]
    fn a_bad_unit_names_the_key() {
        let e =
            errors("[upstreams.a]\nservers = [\"127.0.0.1:1\"]\nconnect_timeout = \"2 parsecs\"\n");
        assert!(e[0].contains("upstreams.a.connect_timeout"), "{e:?}");
        assert!(e[0].contains("unknown duration unit"), "{e:?}");
    }
}
