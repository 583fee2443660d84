//! Config errors that point at the text: every problem is collected (not just the first) with
//! its key path, and printed as `FILE:LINE:COL: key.path: reason`.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A path to a key in the config, such as `routes[2].upstream`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(Vec<Segment>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

impl KeyPath {
    pub fn root() -> Self {
        KeyPath(Vec::new())
    }

    pub fn key(&self, key: &str) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Key(key.to_string()));
        next
    }

    pub fn index(&self, index: usize) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Index(index));
        next
    }

    /// Extends this path with the path serde reported inside a section.
    pub fn join_serde(&self, inner: &serde_path_to_error::Path) -> Self {
        use serde_path_to_error::Segment as S;
        let mut next = self.clone();
        for segment in inner.iter() {
            match segment {
                S::Seq { index } => next.0.push(Segment::Index(*index)),
                S::Map { key } => next.0.push(Segment::Key(key.clone())),
                S::Enum { variant } => next.0.push(Segment::Key(variant.clone())),
                S::Unknown => {}
            }
        }
        next
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top level)");
        }
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    // As TOML writes it: a key that is not bare is quoted, so the path is
                    // the one to look for in the file and a dot in a key is not a separator.
                    if is_bare_key(key) {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A TOML bare key: ASCII letters, digits, `_` and `-`, at least one.
pub fn is_bare_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub severity: Severity,
    pub path: KeyPath,
    pub reason: String,
    /// A byte range in the text, when the problem is known by position rather than by key.
    pub span: Option<Range<usize>>,
}

/// Collects every problem found while loading one config file.
#[derive(Debug, Default)]
pub struct Diagnostics {
    pub list: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn error(&mut self, path: KeyPath, reason: impl Into<String>) {
        self.push(Severity::Error, path, reason.into(), None);
    }

    pub fn warn(&mut self, path: KeyPath, reason: impl Into<String>) {
        self.push(Severity::Warning, path, reason.into(), None);
    }

    pub fn error_at(&mut self, span: Option<Range<usize>>, reason: impl Into<String>) {
        self.push(Severity::Error, KeyPath::root(), reason.into(), span);
    }

    fn push(
        &mut self,
        severity: Severity,
        path: KeyPath,
        reason: String,
        span: Option<Range<usize>>,
    ) {
        self.list.push(Diagnostic {
            severity,
            path,
            reason,
            span,
        });
    }

    pub fn has_errors(&self) -> bool {
        self.list.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn error_count(&self) -> usize {
        self.list
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.list.iter().filter(|d| d.severity == Severity::Warning)
    }
}

/// The config text and its layout, to turn key paths into line and column.
pub struct SourceMap {
    pub file: PathBuf,
    text: String,
    doc: Option<toml_edit::ImDocument<String>>,
}

impl SourceMap {
    pub fn new(file: &Path, text: &str) -> Self {
        SourceMap {
            file: file.to_path_buf(),
            text: text.to_string(),
            doc: toml_edit::ImDocument::parse(text.to_string()).ok(),
        }
    }

    /// The span of the value at `path`, or of the nearest enclosing item that has one.
    fn span_of(&self, path: &KeyPath) -> Option<Range<usize>> {
        let doc = self.doc.as_ref()?;
        let mut item = doc.as_item();
        let mut best = None;
        for segment in &path.0 {
            // A key is located at the key itself (where a reader looks), an array element at
            // the element.
            let (next, key_span) = match segment {
                Segment::Key(key) => {
                    let key_span = item
                        .as_table_like()
                        .and_then(|t| t.get_key_value(key))
                        .and_then(|(k, _)| k.span());
                    (item.get(key.as_str()), key_span)
                }
                Segment::Index(index) => (item.get(*index), None),
            };
            let Some(found) = next else { break };
            if let Some(span) = key_span.or_else(|| found.span()) {
                best = Some(span);
            }
            item = found;
        }
        best
    }

    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before
            .rfind('\n')
            .map_or(before.len(), |nl| before.len() - nl - 1)
            + 1;
        (line, col)
    }

    /// Every diagnostic rendered, in the order they appear in the file.
    pub fn render_all<'a>(&self, list: impl Iterator<Item = &'a Diagnostic>) -> Vec<String> {
        let mut placed: Vec<((usize, usize), String)> =
            list.map(|d| (self.position(d), self.render(d))).collect();
        placed.sort_by_key(|(pos, _)| *pos);
        placed.into_iter().map(|(_, line)| line).collect()
    }

    fn position(&self, d: &Diagnostic) -> (usize, usize) {
        let span = d.span.clone().or_else(|| self.span_of(&d.path));
        span.map_or((1, 1), |s| self.line_col(s.start))
    }

    pub fn render(&self, d: &Diagnostic) -> String {
        let (line, col) = self.position(d);
        let label = match d.severity {
            Severity::Error => "",
            Severity::Warning => "warning: ",
        };
        format!(
            "{}:{line}:{col}: {label}{}: {}",
            self.file.display(),
            d.path,
            d.reason
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_print_like_toml_keys() {
        let p = KeyPath::root().key("routes").index(2).key("upstream");
        assert_eq!(p.to_string(), "routes[2].upstream");
        // A key that is not bare is quoted: its dot is not a separator.
        let p = KeyPath::root()
            .key("upstreams")
            .key("api.v1")
            .key("servers");
        assert_eq!(p.to_string(), "upstreams.\"api.v1\".servers");
    }

    #[test]
    fn a_path_is_located_at_its_key() {
        let text = "[server]\nlisten = [\"a\"]\n\n[[routes]]\nname = \"x\"\n\n[[routes]]\nname = \"y\"\nupstream = \"nope\"\n";
        let map = SourceMap::new(Path::new("g.toml"), text);
        let d = Diagnostic {
            severity: Severity::Error,
            path: KeyPath::root().key("routes").index(1).key("upstream"),
            reason: "unknown upstream".into(),
            span: None,
        };
        assert_eq!(
            map.render(&d),
            "g.toml:9:1: routes[1].upstream: unknown upstream"
        );
    }
}
