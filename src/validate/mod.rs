//! Validation of a llama-swap config, with no network access.
//!
//! Owns: the YAML layer ([`yaml`]: positions, anchors, merge keys, duplicate
//! keys, bounds), the expansion of the config into what llama-swap's loader
//! sees ([`expand`]: macros, `${PORT}`, comment stripping, defaults), the
//! JSON Schema layer ([`schema`]: embedded draft-07 schema or `--schema`),
//! the semantic layer ([`semantic`]: the loader's own rules), and mapping
//! every finding back to the original `line:column`. With a schema that
//! allows it, the models go through those layers one at a time
//! (`permodel`), with the same findings as the whole document.
//!
//! Invariant: [`Validator::validate`] is pure (no I/O) and never panics;
//! every finding carries a rule name, a JSONPath-like path and a position.

pub mod expand;
pub mod gourl;
mod permodel;
pub mod schema;
pub mod semantic;
pub mod yaml;

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
///
/// A flat tree mirroring the document: the children of a collection are
/// contiguous, and those of a mapping are sorted by key, so finding a path
/// costs a binary search per segment and the whole index is a few dozen
/// bytes per node (no path is stored).
#[derive(Debug, Default, Clone)]
pub struct Positions {
    /// Node 0 is the root; empty when the document was not a mapping.
    nodes: Vec<PosNode>,
    /// Mapping keys of all nodes, concatenated.
    names: String,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum PosKind {
    #[default]
    Scalar,
    Seq,
    Map,
}

#[derive(Debug, Default, Clone, Copy)]
struct PosNode {
    /// Key of this node in its parent mapping: `names[name_start..][..name_len]`.
    name_start: u32,
    name_len: u32,
    line: u32,
    column: u32,
    /// Position of that key (0 when the parent is not a mapping).
    key_line: u32,
    key_column: u32,
    /// Children: `nodes[first_child..][..count]`, where the low 30 bits of
    /// `shape` are the count and the top 2 the kind (32 bytes a node).
    first_child: u32,
    shape: u32,
}

const COUNT_BITS: u32 = 30;

impl PosNode {
    fn set_shape(&mut self, kind: PosKind, count: u32) {
        let kind = match kind {
            PosKind::Scalar => 0,
            PosKind::Seq => 1,
            PosKind::Map => 2,
        };
        self.shape = (kind << COUNT_BITS) | count.min((1 << COUNT_BITS) - 1);
    }

    fn kind(&self) -> PosKind {
        match self.shape >> COUNT_BITS {
            1 => PosKind::Seq,
            2 => PosKind::Map,
            _ => PosKind::Scalar,
        }
    }

    fn children(&self) -> usize {
        (self.shape & ((1 << COUNT_BITS) - 1)) as usize
    }
}

/// Positions and counts are small (a 16 MiB file, at most
/// `yaml::MAX_NODES` nodes). Past 4 GiB of keys (only aliases repeating a
/// huge key could do that) names read as empty and such findings point at
/// the parent.
fn small(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The key of `n` (empty if it did not fit in `u32` offsets).
fn name_of<'a>(names: &'a str, n: &PosNode) -> &'a str {
    let start = n.name_start as usize;
    names.get(start..start + n.name_len as usize).unwrap_or("")
}

/// Values in the tree (mapping keys are not counted).
fn count(node: &yaml::Node) -> usize {
    1 + match &node.kind {
        yaml::Kind::Seq(items) => items.iter().map(count).sum(),
        yaml::Kind::Map(entries) => entries.iter().map(|(_, v)| count(v)).sum(),
        _ => 0,
    }
}

/// Values in the tree (as [`count`]) and bytes of its string mapping keys
/// (what [`Positions`]' names will hold, but for the few keys that are not
/// strings), in one walk.
fn count_and_key_bytes(node: &yaml::Node) -> (usize, usize) {
    match &node.kind {
        yaml::Kind::Seq(items) => items.iter().fold((1, 0), |(n, b), item| {
            let (dn, db) = count_and_key_bytes(item);
            (n + dn, b + db)
        }),
        yaml::Kind::Map(entries) => entries.iter().fold((1, 0), |(n, b), (k, v)| {
            let key = match &k.kind {
                yaml::Kind::Str(s) => s.len(),
                _ => 0,
            };
            let (dn, db) = count_and_key_bytes(v);
            (n + dn, b + key + db)
        }),
        _ => (1, 0),
    }
}

impl Positions {
    /// Name node `slot` as the mapping key `key` found at `at` (line,
    /// column).
    fn set_name(&mut self, slot: usize, key: &str, at: (u32, u32)) {
        if let Some(n) = self.nodes.get_mut(slot) {
            n.name_start = small(self.names.len());
            n.name_len = small(key.len());
            (n.key_line, n.key_column) = at;
        }
        self.names.push_str(key);
    }

    /// [`Positions::set_name`] of node `slot` from the key node `k`; its
    /// text.
    fn name_slot(&mut self, slot: usize, k: yaml::Node) -> String {
        let at = (k.line, k.column);
        let key = k.into_key_text();
        self.set_name(slot, &key, at);
        key
    }

    fn name(&self, n: &PosNode) -> &str {
        name_of(&self.names, n)
    }

    /// The node at `path`, or its deepest existing ancestor; and whether
    /// the whole path was found.
    fn find(&self, path: &[Seg]) -> Option<(&PosNode, bool)> {
        let mut cur = self.nodes.first()?;
        for seg in path {
            let first = cur.first_child as usize;
            let children = self.nodes.get(first..first + cur.children()).unwrap_or(&[]);
            let next = match (cur.kind(), seg) {
                (PosKind::Seq, Seg::Index(i)) => children.get(*i),
                (PosKind::Map, Seg::Key(k)) => children
                    .binary_search_by(|c| self.name(c).cmp(k.as_str()))
                    .ok()
                    .and_then(|i| children.get(i)),
                _ => None,
            };
            match next {
                Some(n) => cur = n,
                None => return Some((cur, false)),
            }
        }
        Some((cur, true))
    }

    /// Position of the value at `path`, or of its nearest ancestor.
    pub fn value(&self, path: &[Seg]) -> (usize, usize) {
        match self.find(path) {
            Some((n, _)) => (n.line as usize, n.column as usize),
            None => (1, 1),
        }
    }

    /// Position of the key naming `path` (falls back to the value).
    pub fn key(&self, path: &[Seg]) -> (usize, usize) {
        match (self.find(path), path.last()) {
            (Some((n, true)), Some(Seg::Key(_))) => (n.key_line as usize, n.key_column as usize),
            _ => self.value(path),
        }
    }
}

/// Convert the positioned tree to JSON, recording positions. Consumes the
/// tree: its strings move into the JSON value.
pub fn to_json(node: yaml::Node, pos: &mut Positions) -> Value {
    pos.nodes.clear();
    pos.names.clear();
    pos.nodes.reserve_exact(count(&node));
    pos.nodes.push(PosNode::default());
    let value = build(node, 0, pos, Room::Root);
    pos.names.shrink_to_fit();
    value
}

/// A document whose `models:` is a non-empty mapping, converted but for the
/// models' values (see [`permodel`]).
pub(crate) struct Split {
    /// The top level; `models` holds an empty mapping (in its place).
    pub top: Map<String, Value>,
    /// Model ids and their values, in document order.
    pub ids: Vec<String>,
    pub nodes: Vec<yaml::Node>,
    /// Slot of each model (document order) in the positions.
    pub slots: Vec<usize>,
    /// Document indexes of the models in sorted-id order.
    pub ranked: Vec<u32>,
}

/// Split `root` for [`permodel`]: positions for all but the inside of the
/// models (filled by [`model_to_json`]); `Err(root)` when the document is
/// not a mapping with a non-empty `models:` mapping.
pub(crate) fn split_models(root: yaml::Node, pos: &mut Positions) -> Result<Split, yaml::Node> {
    let is_models = |k: &yaml::Node| matches!(&k.kind, yaml::Kind::Str(s) if s == "models");
    let applies = match &root.kind {
        yaml::Kind::Map(entries) => entries
            .iter()
            .any(|(k, v)| is_models(k) && matches!(&v.kind, yaml::Kind::Map(m) if !m.is_empty())),
        _ => false,
    };
    if !applies {
        return Err(root);
    }
    pos.nodes.clear();
    pos.names.clear();
    let (nodes, key_bytes) = count_and_key_bytes(&root);
    pos.nodes.reserve_exact(nodes);
    // Grown once: reallocating a buffer this size frees a large block,
    // which makes glibc consolidate every small free block first.
    pos.names.reserve_exact(key_bytes);
    pos.nodes.push(PosNode::default());
    let yaml::Node { kind, line, column } = root;
    let entries = match kind {
        yaml::Kind::Map(entries) => entries,
        other => {
            return Err(yaml::Node {
                kind: other,
                line,
                column,
            })
        }
    };
    let children = entries.len();
    let first = 1;
    pos.nodes.resize(first + children, PosNode::default());
    if let Some(n) = pos.nodes.get_mut(0) {
        n.line = line;
        n.column = column;
        n.first_child = small(first);
        n.set_shape(PosKind::Map, small(children));
    }
    let mut top = if children > 8 {
        Map::with_capacity(children)
    } else {
        Map::new()
    };
    let mut split = Split {
        top: Map::new(),
        ids: Vec::new(),
        nodes: Vec::new(),
        slots: Vec::new(),
        ranked: Vec::new(),
    };
    for (i, (k, v)) in entries.into_iter().enumerate() {
        let models = is_models(&k);
        let key = pos.name_slot(first + i, k);
        let value = match v.kind {
            yaml::Kind::Map(models_entries) if models => {
                let n = models_entries.len();
                let mfirst = pos.nodes.len();
                pos.nodes.resize(mfirst + n, PosNode::default());
                if let Some(node) = pos.nodes.get_mut(first + i) {
                    node.line = v.line;
                    node.column = v.column;
                    node.first_child = small(mfirst);
                    node.set_shape(PosKind::Map, small(n));
                }
                let mut key_at = Vec::with_capacity(n);
                split.ids.reserve_exact(n);
                split.nodes.reserve_exact(n);
                for (mk, mv) in models_entries {
                    key_at.push((mk.line, mk.column));
                    split.ids.push(mk.into_key_text());
                    split.nodes.push(mv);
                }
                let ids = &split.ids;
                let mut ranked: Vec<u32> = (0..small(n)).collect();
                ranked.sort_unstable_by(|a, b| ids[*a as usize].cmp(&ids[*b as usize]));
                split.slots = vec![0; n];
                // The block is laid out sorted, as `build` sorts it.
                for (rank, &doc) in ranked.iter().enumerate() {
                    let doc = doc as usize;
                    split.slots[doc] = mfirst + rank;
                    let (kl, kc) = key_at[doc];
                    let (vl, vc) = (split.nodes[doc].line, split.nodes[doc].column);
                    pos.set_name(mfirst + rank, &ids[doc], (kl, kc));
                    if let Some(node) = pos.nodes.get_mut(mfirst + rank) {
                        node.line = vl;
                        node.column = vc;
                    }
                }
                split.ranked = ranked;
                Value::Object(Map::new())
            }
            kind => build(
                yaml::Node {
                    kind,
                    line: v.line,
                    column: v.column,
                },
                first + i,
                pos,
                Room::Other,
            ),
        };
        top.insert(key, value);
    }
    let Positions { nodes, names } = pos;
    if let Some(block) = nodes.get_mut(first..first + children) {
        block.sort_unstable_by(|a, b| name_of(names, a).cmp(name_of(names, b)));
    }
    split.top = top;
    Ok(split)
}

/// Convert one model of a [`Split`] into its slot of the positions.
pub(crate) fn model_to_json(node: yaml::Node, slot: usize, pos: &mut Positions) -> Value {
    build(node, slot, pos, Room::Model)
}

/// Where a mapping is, for the room [`build`] gives it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Room {
    Root,
    /// `models:`.
    Models,
    /// One model: room for the `proxy` expansion adds when it is missing
    /// (growing a model's map then would reallocate both of its tables).
    Model,
    Other,
}

/// Fill `pos.nodes[slot]` (all but the key) and convert `node`.
fn build(node: yaml::Node, slot: usize, pos: &mut Positions, room: Room) -> Value {
    let (line, column) = (node.line, node.column);
    let (kind, children) = match &node.kind {
        yaml::Kind::Seq(items) => (PosKind::Seq, items.len()),
        yaml::Kind::Map(entries) => (PosKind::Map, entries.len()),
        _ => (PosKind::Scalar, 0),
    };
    let first = pos.nodes.len();
    pos.nodes.resize(first + children, PosNode::default());
    if let Some(n) = pos.nodes.get_mut(slot) {
        n.line = line;
        n.column = column;
        n.first_child = small(first);
        n.set_shape(kind, small(children));
    }
    match node.kind {
        yaml::Kind::Null => Value::Null,
        yaml::Kind::Bool(b) => Value::Bool(b),
        yaml::Kind::Int(i) => Value::from(i),
        yaml::Kind::Float(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        yaml::Kind::Str(s) => Value::String(s.into_string()),
        yaml::Kind::Seq(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, n)| build(n, first + i, pos, Room::Other))
                .collect(),
        ),
        yaml::Kind::Map(entries) => {
            // Exact for large mappings (`models:`) and models; small ones
            // grow as usual.
            let mut m = if room == Room::Model {
                Map::with_capacity(children + 1)
            } else if children > 8 {
                Map::with_capacity(children)
            } else {
                Map::new()
            };
            let child_room = match room {
                Room::Models => Room::Model,
                _ => Room::Other,
            };
            for (i, (k, v)) in entries.into_iter().enumerate() {
                let key = pos.name_slot(first + i, k);
                let value = if room == Room::Root && key == "models" {
                    build(v, first + i, pos, Room::Models)
                } else {
                    build(v, first + i, pos, child_room)
                };
                m.insert(key, value);
            }
            // Keys are unique (the YAML layer rejects duplicates).
            let Positions { nodes, names } = pos;
            if let Some(block) = nodes.get_mut(first..first + children) {
                block.sort_unstable_by(|a, b| name_of(names, a).cmp(name_of(names, b)));
            }
            Value::Object(m)
        }
    }
}

/// `m.get(key)`, scanning small mappings (cheaper than hashing the key).
pub(crate) fn field_of<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    if m.len() <= 8 {
        m.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    } else {
        m.get(key)
    }
}

/// `v.get(key)` (`None` unless `v` is a mapping), via [`field_of`].
pub(crate) fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_object().and_then(|m| field_of(m, key))
}

/// Where a finding falls in the order the whole-document checks emit
/// them: (phase, then up to three ranks inside it); see [`permodel`].
pub(crate) type Order = (u8, u32, u32, u32);

/// Collects findings with positions resolved.
pub struct Report<'a> {
    pub pos: &'a Positions,
    pub findings: Vec<Finding>,
    /// [`Report::order`] of each finding, when it was pushed.
    pub(crate) orders: Vec<Order>,
    /// The order of the findings pushed now.
    pub(crate) order: Order,
}

impl<'a> Report<'a> {
    /// An empty report locating findings with `pos`.
    pub fn new(pos: &'a Positions) -> Report<'a> {
        Report {
            pos,
            findings: Vec::new(),
            orders: Vec::new(),
            order: (0, 0, 0, 0),
        }
    }
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
        self.orders.push(self.order);
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
    ///
    /// When the schema allows it (the embedded one does), the models are
    /// validated one at a time ([`permodel`]), with the same findings as
    /// [`Validator::validate_whole_document`].
    pub fn validate(&self, source: &[u8]) -> Outcome {
        let (text, root) = match parse_source(source) {
            Ok(parsed) => parsed,
            Err(outcome) => return outcome,
        };
        if !self.schema.splits() {
            return self.validate_tree(root);
        }
        let mut pos = Positions::default();
        match split_models(root, &mut pos) {
            Ok(split) => {
                if let Some(outcome) = permodel::validate(&self.schema, split, &mut pos) {
                    return outcome;
                }
                // Rare: the order of two schema errors at one position
                // needs the whole document; start again that way.
                drop(pos);
                match yaml::parse(text) {
                    Ok(root) => self.validate_tree(root),
                    Err(_) => Outcome::default(),
                }
            }
            Err(root) => self.validate_tree(root),
        }
    }

    /// [`Validator::validate`] with the whole document converted and
    /// checked at once, layer after layer: the reference the per-model
    /// path is tested against (same findings, same order).
    #[doc(hidden)]
    pub fn validate_whole_document(&self, source: &[u8]) -> Outcome {
        match parse_source(source) {
            Ok((_, root)) => self.validate_tree(root),
            Err(outcome) => outcome,
        }
    }

    /// [`Validator::validate`] of a parsed document, the whole document at
    /// a time (the reference for [`permodel`]).
    fn validate_tree(&self, root: yaml::Node) -> Outcome {
        let mut pos = Positions::default();
        let raw = match &root.kind {
            yaml::Kind::Null => Value::Object(Map::new()),
            yaml::Kind::Map(_) => to_json(root, &mut pos),
            _ => {
                return Outcome {
                    findings: vec![Finding {
                        file: None,
                        line: root.line as usize,
                        column: root.column as usize,
                        path: "$".into(),
                        severity: Severity::Error,
                        rule: "yaml-top-level".into(),
                        message: "the top level must be a mapping of settings (e.g. `models:`)"
                            .into(),
                    }],
                    listed_models: Vec::new(),
                };
            }
        };
        let mut report = Report::new(&pos);
        semantic::unknown_keys(&raw, &mut report);
        let Some(expanded) = expand::expand(raw, &mut report) else {
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

/// The YAML tree of config bytes, or the outcome of a file that has none
/// (too large, not UTF-8, not YAML).
fn parse_source(source: &[u8]) -> Result<(&str, yaml::Node), Outcome> {
    let empty = Positions::default();
    let mut report = Report::new(&empty);
    if source.len() > MAX_FILE {
        report.error(
            &[],
            "file-too-large",
            format!(
                "file is {} bytes, over the {MAX_FILE}-byte limit",
                source.len()
            ),
        );
        return Err(Outcome {
            findings: report.findings,
            listed_models: Vec::new(),
        });
    }
    let text = match std::str::from_utf8(source) {
        Ok(t) => t,
        Err(e) => {
            report.error(
                &[],
                "yaml-encoding",
                format!("not UTF-8 text (byte {})", e.valid_up_to()),
            );
            return Err(Outcome {
                findings: report.findings,
                listed_models: Vec::new(),
            });
        }
    };
    match yaml::parse(text) {
        Ok(root) => Ok((text, root)),
        Err(e) => Err(Outcome {
            findings: vec![Finding {
                file: None,
                line: e.line,
                column: e.column,
                path: "$".into(),
                severity: Severity::Error,
                rule: e.rule.into(),
                message: e.message,
            }],
            listed_models: Vec::new(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Every path of the tree with its value and key positions, the plain
    /// way: a map keyed by the whole path.
    fn reference(
        node: &yaml::Node,
        path: &mut Vec<Seg>,
        values: &mut HashMap<Vec<Seg>, (usize, usize)>,
        keys: &mut HashMap<Vec<Seg>, (usize, usize)>,
    ) {
        values.insert(path.clone(), (node.line as usize, node.column as usize));
        match &node.kind {
            yaml::Kind::Seq(items) => {
                for (i, n) in items.iter().enumerate() {
                    path.push(Seg::Index(i));
                    reference(n, path, values, keys);
                    path.pop();
                }
            }
            yaml::Kind::Map(entries) => {
                for (k, v) in entries {
                    path.push(Seg::Key(k.key_text()));
                    keys.insert(path.clone(), (k.line as usize, k.column as usize));
                    reference(v, path, values, keys);
                    path.pop();
                }
            }
            _ => {}
        }
    }

    #[test]
    fn a_schema_error_sharing_a_position_across_the_models_takes_the_whole_path() {
        // The merge key puts the selector's `name` and the model's at one
        // position: the schema library's order between the two is only
        // known by checking the whole document.
        let src = "selectors:\n  s: &d {name: 5, strategy: warm, targets: [m]}\nmodels:\n  m:\n    <<: *d\n    cmd: x\n    proxy: http://h:1\n  n:\n    name: 6\n    cmd: y\n    proxy: http://h:2\n";
        let v = Validator::embedded();
        let root = yaml::parse(src).unwrap_or_else(|e| panic!("{e:?}"));
        let mut pos = Positions::default();
        let split = split_models(root, &mut pos).unwrap_or_else(|_| panic!("splits"));
        assert!(permodel::validate(&v.schema, split, &mut pos).is_none());
        let (fast, whole) = (
            v.validate(src.as_bytes()),
            v.validate_whole_document(src.as_bytes()),
        );
        assert_eq!(fast.findings, whole.findings);
        let rules: Vec<(&str, usize)> = fast
            .findings
            .iter()
            .filter(|f| f.rule == "schema")
            .map(|f| (f.path.as_str(), f.line))
            .collect();
        assert_eq!(
            rules,
            [
                ("$.selectors.s.name", 2),
                ("$.models.m.name", 2),
                ("$.models.n.name", 9)
            ]
        );
        // Without the shared position, no fallback.
        let plain = src.replace("<<: *d", "description: d");
        let root = yaml::parse(&plain).unwrap_or_else(|e| panic!("{e:?}"));
        let split = split_models(root, &mut pos).unwrap_or_else(|_| panic!("splits"));
        assert!(permodel::validate(&v.schema, split, &mut pos).is_some());
    }

    #[test]
    fn one_walk_counts_the_nodes_and_key_bytes() {
        let src = "a: [1, {bb: 2}]\nccc: &x {d: 1}\ne: *x\n7: {ff: [g]}\n";
        let root = yaml::parse(src).unwrap_or_else(|e| panic!("{e:?}"));
        // Keys: a, bb, ccc, d, e, d (the alias's copy), ff; `7` is not a string.
        assert_eq!(
            count_and_key_bytes(&root),
            (count(&root), 1 + 2 + 3 + 1 + 1 + 1 + 2)
        );
    }

    #[test]
    fn positions_match_a_map_of_whole_paths() {
        let src = "zeta: 1\nalpha:\n  - {b: 2, a: [x, {k: v}]}\n  - plain\n\"\": empty\n7: seven\nbase: &b {ttl: 5, cmd: x}\nmodels:\n  m:\n    <<: *b\n    ttl: 9\n  \"é\": {cmd: y}\n  n: *b\n";
        let root = yaml::parse(src).unwrap_or_else(|e| panic!("{e:?}"));
        let (mut values, mut keys) = (HashMap::new(), HashMap::new());
        reference(&root, &mut Vec::new(), &mut values, &mut keys);
        let mut pos = Positions::default();
        to_json(root, &mut pos);

        // Every stored path, plus paths below, beside and past them.
        let mut queries: Vec<Vec<Seg>> = values.keys().cloned().collect();
        for path in values.keys() {
            for extra in [
                Seg::Key("nope".into()),
                Seg::Key("0".into()),
                Seg::Index(0),
                Seg::Index(9),
            ] {
                let mut q = path.clone();
                q.push(extra.clone());
                queries.push(q.clone());
                q.push(Seg::Key("ttl".into()));
                queries.push(q);
            }
        }
        for q in &queries {
            let want_value = (0..=q.len())
                .rev()
                .find_map(|n| values.get(&q[..n]).copied())
                .unwrap_or((1, 1));
            let want_key = keys.get(q).copied().unwrap_or(want_value);
            assert_eq!(pos.value(q), want_value, "value of {}", display_path(q));
            assert_eq!(pos.key(q), want_key, "key of {}", display_path(q));
        }
        assert_eq!(Positions::default().value(&p(&["a"])), (1, 1));
    }
}
