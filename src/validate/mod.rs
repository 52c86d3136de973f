//! Validation of a llama-swap config, with no network access.
//!
//! Owns: the YAML layer ([`yaml`]: positions, anchors, merge keys, duplicate
//! keys, bounds), the expansion of the config into what llama-swap's loader
//! sees ([`expand`]: macros, `${PORT}`, comment stripping, defaults), the
//! JSON Schema layer ([`schema`]: embedded draft-07 schema or `--schema`),
//! the semantic layer ([`semantic`]: the loader's own rules), and mapping
//! every finding back to the original `line:column`.
//!
//! Invariant: [`Validator::validate`] is pure (no I/O) and never panics;
//! every finding carries a rule name, a JSONPath-like path and a position.

pub mod expand;
pub mod schema;
pub mod semantic;
pub mod yaml;

use std::collections::HashMap;
use std::path::Path;

use serde_json::{Map, Value};

/// Largest config accepted, in bytes.
pub const MAX_FILE: usize = 16 * 1024 * 1024;

/// Error or warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in a config.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    pub file: Option<String>,
    pub line: usize,
    pub column: usize,
    /// JSONPath-like: `$.models["qwen-7b"].ttl`.
    pub path: String,
    pub severity: Severity,
    pub rule: String,
    pub message: String,
}

/// The result of validating one config.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub findings: Vec<Finding>,
    /// Model ids llama-swap lists on `/v1/models` (not `unlisted`).
    pub listed_models: Vec<String>,
}

impl Outcome {
    /// No error findings (warnings allowed).
    pub fn is_valid(&self) -> bool {
        !self.findings.iter().any(|f| f.severity == Severity::Error)
    }
}

/// A path inside the config, as segments.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// `$.models["qwen-7b"].ttl` for display.
pub fn display_path(segs: &[Seg]) -> String {
    let mut s = String::from("$");
    for seg in segs {
        match seg {
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
            Seg::Key(k) => {
                let simple = !k.is_empty()
                    && k.chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if simple {
                    s.push('.');
                    s.push_str(k);
                } else {
                    s.push_str(&format!(
                        "[{}]",
                        serde_json::to_string(k).unwrap_or_default()
                    ));
                }
            }
        }
    }
    s
}

/// Where each value (and each mapping key) of the original document is.
#[derive(Debug, Default, Clone)]
pub struct Positions {
    values: HashMap<Vec<Seg>, (usize, usize)>,
    keys: HashMap<Vec<Seg>, (usize, usize)>,
}

impl Positions {
    /// Position of the value at `path`, or of its nearest ancestor.
    pub fn value(&self, path: &[Seg]) -> (usize, usize) {
        let mut p = path.to_vec();
        loop {
            if let Some(pos) = self.values.get(&p) {
                return *pos;
            }
            if p.pop().is_none() {
                return (1, 1);
            }
        }
    }

    /// Position of the key naming `path` (falls back to the value).
    pub fn key(&self, path: &[Seg]) -> (usize, usize) {
        self.keys
            .get(path)
            .copied()
            .unwrap_or_else(|| self.value(path))
    }
}

/// Convert the positioned tree to JSON, recording positions.
pub fn to_json(node: &yaml::Node, path: &mut Vec<Seg>, pos: &mut Positions) -> Value {
    pos.values.insert(path.clone(), (node.line, node.column));
    match &node.kind {
        yaml::Kind::Null => Value::Null,
        yaml::Kind::Bool(b) => Value::Bool(*b),
        yaml::Kind::Int(i) => Value::from(*i),
        yaml::Kind::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        yaml::Kind::Str(s) => Value::String(s.clone()),
        yaml::Kind::Seq(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    path.push(Seg::Index(i));
                    let v = to_json(n, path, pos);
                    path.pop();
                    v
                })
                .collect(),
        ),
        yaml::Kind::Map(entries) => {
            let mut m = Map::new();
            for (k, v) in entries {
                let key = k.key_text();
                path.push(Seg::Key(key.clone()));
                pos.keys.insert(path.clone(), (k.line, k.column));
                let value = to_json(v, path, pos);
                path.pop();
                m.insert(key, value);
            }
            Value::Object(m)
        }
    }
}

/// Collects findings with positions resolved.
pub struct Report<'a> {
    pub pos: &'a Positions,
    pub findings: Vec<Finding>,
}

impl Report<'_> {
    fn push(
        &mut self,
        severity: Severity,
        at: (usize, usize),
        path: &[Seg],
        rule: &str,
        message: String,
    ) {
        self.findings.push(Finding {
            file: None,
            line: at.0,
            column: at.1,
            path: display_path(path),
            severity,
            rule: rule.to_string(),
            message,
        });
    }

    /// An error located at the value of `path`.
    pub fn error(&mut self, path: &[Seg], rule: &str, message: impl Into<String>) {
        let at = self.pos.value(path);
        self.push(Severity::Error, at, path, rule, message.into());
    }

    /// An error located at the key of `path`.
    pub fn error_at_key(&mut self, path: &[Seg], rule: &str, message: impl Into<String>) {
        let at = self.pos.key(path);
        self.push(Severity::Error, at, path, rule, message.into());
    }

    /// A warning located at the key of `path`.
    pub fn warn(&mut self, path: &[Seg], rule: &str, message: impl Into<String>) {
        let at = self.pos.key(path);
        self.push(Severity::Warning, at, path, rule, message.into());
    }
}

/// Shorthand for building paths: `p(&["models", "a", "ttl"])`.
pub fn p(keys: &[&str]) -> Vec<Seg> {
    keys.iter().map(|k| Seg::Key(k.to_string())).collect()
}

/// Compiled validation settings, reusable across files.
pub struct Validator {
    schema: schema::Schema,
}

impl Validator {
    /// The embedded schema describing llama-swap's configuration.
    pub fn embedded() -> Validator {
        Validator {
            schema: schema::Schema::embedded(),
        }
    }

    /// A user's draft-07 schema (`--schema`).
    pub fn from_schema_file(path: &Path) -> Result<Validator, String> {
        Ok(Validator {
            schema: schema::Schema::from_file(path)?,
        })
    }

    /// Validate config bytes. Pure.
    pub fn validate(&self, source: &[u8]) -> Outcome {
        let empty = Positions::default();
        let mut report = Report {
            pos: &empty,
            findings: Vec::new(),
        };
        if source.len() > MAX_FILE {
            report.error(
                &[],
                "file-too-large",
                format!(
                    "file is {} bytes, over the {MAX_FILE}-byte limit",
                    source.len()
                ),
            );
            return Outcome {
                findings: report.findings,
                listed_models: Vec::new(),
            };
        }
        let text = match std::str::from_utf8(source) {
            Ok(t) => t,
            Err(e) => {
                report.error(
                    &[],
                    "yaml-encoding",
                    format!("not UTF-8 text (byte {})", e.valid_up_to()),
                );
                return Outcome {
                    findings: report.findings,
                    listed_models: Vec::new(),
                };
            }
        };
        let root = match yaml::parse(text) {
            Ok(r) => r,
            Err(e) => {
                report.findings.push(Finding {
                    file: None,
                    line: e.line,
                    column: e.column,
                    path: "$".into(),
                    severity: Severity::Error,
                    rule: e.rule.into(),
                    message: e.message,
                });
                return Outcome {
                    findings: report.findings,
                    listed_models: Vec::new(),
                };
            }
        };
        let mut pos = Positions::default();
        let raw = match &root.kind {
            yaml::Kind::Null => Value::Object(Map::new()),
            yaml::Kind::Map(_) => to_json(&root, &mut Vec::new(), &mut pos),
            _ => {
                report.findings.push(Finding {
                    file: None,
                    line: root.line,
                    column: root.column,
                    path: "$".into(),
                    severity: Severity::Error,
                    rule: "yaml-top-level".into(),
                    message: "the top level must be a mapping of settings (e.g. `models:`)".into(),
                });
                return Outcome {
                    findings: report.findings,
                    listed_models: Vec::new(),
                };
            }
        };
        let mut report = Report {
            pos: &pos,
            findings: Vec::new(),
        };
        semantic::unknown_keys(&raw, &mut report);
        let Some(expanded) = expand::expand(&raw, &mut report) else {
            return Outcome {
                findings: report.findings,
                listed_models: Vec::new(),
            };
        };
        self.schema.check(&expanded, &mut report);
        semantic::check(&expanded, &mut report);
        let listed_models = semantic::listed_models(&expanded);
        let mut findings = report.findings;
        findings.sort_by_key(|f| (f.line, f.column));
        findings.dedup();
        Outcome {
            findings,
            listed_models,
        }
    }
}
