//! A positioned YAML tree, composed from `saphyr-parser` events.
//!
//! Owns: turning YAML text into [`Node`]s that remember their `line:column`,
//! resolving anchors, aliases and `<<:` merge keys the way Go's
//! gopkg.in/yaml.v3 (llama-swap's YAML library) does, rejecting duplicate
//! keys, and resolving plain scalars with the YAML 1.2 core schema.
//!
//! Invariants (bounds on untrusted input): at most [`MAX_NODES`] nodes after
//! alias expansion ("billion laughs" stops early), nesting at most
//! [`MAX_DEPTH`], exactly one document. Never panics on any input.

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::borrow::Cow;
use std::collections::hash_map::Entry;

use saphyr_parser::{Event, Parser, ScalarStyle};

/// Largest number of nodes a document may expand to (aliases included).
pub const MAX_NODES: usize = 1_000_000;
/// Deepest nesting of collections accepted.
pub const MAX_DEPTH: usize = 128;

/// A YAML value with the position of its first character (1-based).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: Kind,
    pub line: u32,
    pub column: u32,
}

/// The resolved value of a node.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(compact_str::CompactString),
    Seq(Vec<Node>),
    /// Entries in document order; merge keys already applied.
    Map(Vec<(Node, Node)>),
}

/// A YAML-level problem, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub line: usize,
    pub column: usize,
    /// Rule name: `yaml-syntax`, `yaml-duplicate-key`, `yaml-tabs`, …
    pub rule: &'static str,
    pub message: String,
}

impl Node {
    fn new(kind: Kind, line: usize, column: usize) -> Node {
        Node {
            kind,
            line: u32::try_from(line).unwrap_or(u32::MAX),
            column: u32::try_from(column).unwrap_or(u32::MAX),
        }
    }

    /// A null at 1:1 (a placeholder for a node moved out).
    pub(crate) fn null() -> Node {
        Node::new(Kind::Null, 1, 1)
    }

    /// The key text of a scalar node (how Go would spell a map key).
    pub fn key_text(&self) -> String {
        self.key_cow().into_owned()
    }

    /// [`Node::key_text`] without copying a string key.
    fn key_cow(&self) -> Cow<'_, str> {
        match &self.kind {
            Kind::Str(s) => Cow::Borrowed(s.as_str()),
            Kind::Int(i) => Cow::Owned(i.to_string()),
            Kind::Float(f) => Cow::Owned(f.to_string()),
            Kind::Bool(b) => Cow::Owned(b.to_string()),
            Kind::Null => Cow::Borrowed(""),
            Kind::Seq(_) | Kind::Map(_) => Cow::Borrowed("<collection>"),
        }
    }

    /// [`Node::key_text`], moving a string key out of the node.
    pub(crate) fn into_key_text(self) -> String {
        match self.kind {
            Kind::Str(s) => s.into_string(),
            _ => self.key_text(),
        }
    }

    /// Look up a mapping entry by key text.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            Kind::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.key_cow() == key)
                .map(|(_, v)| v),
            _ => None,
        }
    }

    fn size(&self) -> usize {
        1 + match &self.kind {
            Kind::Seq(v) => v.iter().map(Node::size).sum(),
            Kind::Map(e) => e.iter().map(|(k, v)| k.size() + v.size()).sum(),
            _ => 0,
        }
    }
}

enum Frame {
    Seq {
        items: Vec<Node>,
        anchor: usize,
        line: usize,
        col: usize,
    },
    Map {
        entries: Vec<(Node, Node)>,
        pending_key: Option<Node>,
        anchor: usize,
        line: usize,
        col: usize,
    },
}

/// Parse one YAML document into a positioned tree. An empty document is
/// `Null`.
pub fn parse(src: &str) -> Result<Node, YamlError> {
    if let Some((line, column)) = tab_indentation(src) {
        return Err(YamlError {
            line,
            column,
            rule: "yaml-tabs",
            message: "tab character used for indentation; YAML allows only spaces".into(),
        });
    }
    let end = end_of(src);
    let mut parser = Parser::new_from_str(src);
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut nodes = 0usize;
    let mut documents = 0usize;
    let mut root: Option<Node> = None;

    for item in &mut parser {
        let (event, span) = item.map_err(|e| {
            let (line, column) = within(end, e.marker().line(), e.marker().col() + 1);
            YamlError {
                line,
                column,
                rule: "yaml-syntax",
                message: e.info().to_string(),
            }
        })?;
        let (line, col) = within(end, span.start.line(), span.start.col() + 1);
        let node = match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(YamlError {
                        line,
                        column: col,
                        rule: "yaml-multiple-documents",
                        message: "more than one YAML document; llama-swap reads only the first, put everything in one".into(),
                    });
                }
                continue;
            }
            Event::SequenceStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(limit(
                        line,
                        col,
                        format!("nesting deeper than {MAX_DEPTH} levels"),
                    ));
                }
                stack.push(Frame::Seq {
                    items: Vec::new(),
                    anchor,
                    line,
                    col,
                });
                continue;
            }
            Event::MappingStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(limit(
                        line,
                        col,
                        format!("nesting deeper than {MAX_DEPTH} levels"),
                    ));
                }
                stack.push(Frame::Map {
                    entries: Vec::new(),
                    pending_key: None,
                    anchor,
                    line,
                    col,
                });
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq {
                    items,
                    anchor,
                    line,
                    col,
                }) => {
                    let n = Node::new(Kind::Seq(items), line, col);
                    if anchor > 0 {
                        anchors.insert(anchor, n.clone());
                    }
                    n
                }
                _ => return Err(syntax(line, col, "unbalanced sequence")),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map {
                    entries,
                    anchor,
                    line,
                    col,
                    ..
                }) => {
                    let n = Node::new(Kind::Map(finish_mapping(entries)?), line, col);
                    if anchor > 0 {
                        anchors.insert(anchor, n.clone());
                    }
                    n
                }
                _ => return Err(syntax(line, col, "unbalanced mapping")),
            },
            Event::Scalar(value, style, anchor, tag) => {
                let explicit_str = tag
                    .as_ref()
                    .is_some_and(|t| t.suffix == "str" || t.suffix.ends_with(":str"));
                let kind = if style != ScalarStyle::Plain || explicit_str {
                    Kind::Str(exact(value))
                } else {
                    match resolve_typed(&value) {
                        Some(kind) => kind,
                        None => Kind::Str(exact(value)),
                    }
                };
                let n = Node::new(kind, line, col);
                if anchor > 0 {
                    anchors.insert(anchor, n.clone());
                }
                n
            }
            Event::Alias(id) => {
                let Some(target) = anchors.get(&id) else {
                    return Err(syntax(line, col, "alias refers to an unknown anchor"));
                };
                nodes += target.size();
                if nodes > MAX_NODES {
                    return Err(limit(line, col, format!("aliases expand to more than {MAX_NODES} nodes (a \"billion laughs\" document?)")));
                }
                let mut n = target.clone();
                // The alias itself is where a reader looks.
                n.line = u32::try_from(line).unwrap_or(u32::MAX);
                n.column = u32::try_from(col).unwrap_or(u32::MAX);
                n
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => continue,
        };
        nodes += 1;
        if nodes > MAX_NODES {
            return Err(limit(line, col, format!("more than {MAX_NODES} nodes")));
        }
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => *pending_key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
    Ok(root.unwrap_or(Node::new(Kind::Null, 1, 1)))
}

/// The last position of `src` as saphyr counts them: 1-based line (breaks
/// are `\n`, `\r\n` and a lone `\r`) and the column after its last
/// character.
fn end_of(src: &str) -> (usize, usize) {
    let (mut line, mut col) = (1, 1);
    let mut chars = src.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' | '\r' => (line, col) = (line + 1, 1),
            _ => col += 1,
        }
    }
    (line, col)
}

/// A position inside the text: saphyr puts the end of the stream on the
/// line after a last line that has no line break; a finding there is
/// reported at the end of the last line instead.
fn within(end: (usize, usize), line: usize, col: usize) -> (usize, usize) {
    if (line, col) > end {
        end
    } else {
        (line, col)
    }
}

/// The parser's string as the tree keeps it: up to 24 bytes inline in the
/// node (most keys, ids, aliases: no allocation held until validation
/// ends), longer ones in an allocation of their size (the scan buffer has
/// spare capacity; copying frees it for the next scalar). Converting to a
/// `String` later reuses a long one's buffer.
fn exact(value: Cow<'_, str>) -> compact_str::CompactString {
    compact_str::CompactString::new(value.as_ref())
}

fn syntax(line: usize, column: usize, message: &str) -> YamlError {
    YamlError {
        line,
        column,
        rule: "yaml-syntax",
        message: message.to_string(),
    }
}

fn limit(line: usize, column: usize, message: String) -> YamlError {
    YamlError {
        line,
        column,
        rule: "yaml-limit",
        message,
    }
}

/// First line whose indentation contains a tab (outside block scalars this
/// is always an error; inside them it is content, so only leading tabs
/// before any non-space are flagged when the line is not in a block).
fn tab_indentation(src: &str) -> Option<(usize, usize)> {
    let mut block_indent: Option<usize> = None;
    for (i, line) in src.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if let Some(bi) = block_indent {
            if line.trim().is_empty() || indent > bi || line.starts_with('\t') && bi == 0 {
                continue;
            }
            block_indent = None;
        }
        if line[indent..].starts_with('\t')
            && !line.trim().is_empty()
            && !line.trim_start().starts_with('#')
        {
            return Some((i + 1, indent + 1));
        }
        let t = line.trim_end();
        if t.ends_with('|')
            || t.ends_with('>')
            || t.ends_with("|-")
            || t.ends_with(">-")
            || t.ends_with("|+")
            || t.ends_with(">+")
        {
            block_indent = Some(indent);
        }
    }
    None
}

/// Apply `<<` merge keys and reject duplicate explicit keys (yaml.v3
/// semantics: explicit keys win over merged ones; among merged mappings the
/// first one listed wins). Linear: keys are looked up in hash maps.
fn finish_mapping(entries: Vec<(Node, Node)>) -> Result<Vec<(Node, Node)>, YamlError> {
    if entries.len() <= SMALL_MAPPING && !entries.iter().any(|(k, _)| is_merge_key(k)) {
        // The common case, without allocating: compare with the keys before.
        for (j, (k, _)) in entries.iter().enumerate() {
            let t = k.key_cow();
            if let Some((prev, _)) = entries[..j].iter().find(|(p, _)| p.key_cow() == t) {
                return Err(duplicate_key(k, &t, prev.line as usize));
            }
        }
        return Ok(entries);
    }
    if !entries.iter().any(|(k, _)| is_merge_key(k)) {
        // A large mapping without merge keys (`models:`): keys are checked
        // borrowed, and the entries are kept as they are (no key copies).
        let mut seen: HashMap<Cow<'_, str>, usize> = HashMap::with_capacity(entries.len());
        for (k, _) in &entries {
            match seen.entry(k.key_cow()) {
                Entry::Occupied(prev) => return Err(duplicate_key(k, prev.key(), *prev.get())),
                Entry::Vacant(slot) => {
                    slot.insert(k.line as usize);
                }
            }
        }
        drop(seen);
        return Ok(entries);
    }
    // Key text -> line of its explicit definition.
    let mut explicit_keys: HashMap<String, usize> = HashMap::with_capacity(entries.len());
    let mut explicit: Vec<(Node, Node)> = Vec::with_capacity(entries.len());
    let mut merged_keys: HashSet<String> = HashSet::new();
    let mut merged: Vec<(Node, Node)> = Vec::new();
    for (k, v) in entries {
        if is_merge_key(&k) {
            let sources: Vec<Node> = match v.kind {
                Kind::Map(_) => vec![v],
                Kind::Seq(items) => items,
                _ => {
                    return Err(YamlError {
                        line: v.line as usize,
                        column: v.column as usize,
                        rule: "yaml-merge",
                        message: "map merge requires a mapping or a list of mappings".into(),
                    })
                }
            };
            for src in sources {
                let Kind::Map(src_entries) = src.kind else {
                    return Err(YamlError {
                        line: src.line as usize,
                        column: src.column as usize,
                        rule: "yaml-merge",
                        message: "map merge requires a mapping or a list of mappings".into(),
                    });
                };
                for (mk, mv) in src_entries {
                    if merged_keys.insert(mk.key_text()) {
                        merged.push((mk, mv));
                    }
                }
            }
            continue;
        }
        match explicit_keys.entry(k.key_text()) {
            Entry::Occupied(prev) => return Err(duplicate_key(&k, prev.key(), *prev.get())),
            Entry::Vacant(slot) => {
                slot.insert(k.line as usize);
            }
        }
        explicit.push((k, v));
    }
    for (mk, mv) in merged {
        if !explicit_keys.contains_key(&mk.key_text()) {
            explicit.push((mk, mv));
        }
    }
    Ok(explicit)
}

/// Mappings up to this size check duplicates by comparing keys pairwise.
const SMALL_MAPPING: usize = 16;

fn is_merge_key(k: &Node) -> bool {
    matches!(&k.kind, Kind::Str(s) if s == "<<")
}

fn duplicate_key(k: &Node, text: &str, prev_line: usize) -> YamlError {
    YamlError {
        line: k.line as usize,
        column: k.column as usize,
        rule: "yaml-duplicate-key",
        message: format!("mapping key {text:?} already defined at line {prev_line}"),
    }
}

/// Resolve a plain scalar with the YAML 1.2 core schema, as yaml.v3 does
/// for untyped values.
pub fn resolve_plain(s: &str) -> Kind {
    resolve_typed(s).unwrap_or_else(|| Kind::Str(s.into()))
}

/// [`resolve_plain`], `None` for a string.
fn resolve_typed(s: &str) -> Option<Kind> {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Some(Kind::Null),
        "true" | "True" | "TRUE" => return Some(Kind::Bool(true)),
        "false" | "False" | "FALSE" => return Some(Kind::Bool(false)),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Some(Kind::Float(f64::INFINITY))
        }
        "-.inf" | "-.Inf" | "-.INF" => return Some(Kind::Float(f64::NEG_INFINITY)),
        ".nan" | ".NaN" | ".NAN" => return Some(Kind::Float(f64::NAN)),
        _ => {}
    }
    if let Some(i) = parse_int(s) {
        return Some(Kind::Int(i));
    }
    let float_like = s
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        && s.bytes().any(|b| b.is_ascii_digit());
    if float_like {
        if let Ok(f) = s.parse::<f64>() {
            return Some(Kind::Float(f));
        }
    }
    None
}

fn parse_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let body: Cow<'_, str> = if body.contains('_') {
        Cow::Owned(body.replace('_', ""))
    } else {
        Cow::Borrowed(body)
    };
    let v = if let Some(h) = body.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()?
    } else if let Some(o) = body.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()?
    } else if let Some(b) = body.strip_prefix("0b") {
        i64::from_str_radix(b, 2).ok()?
    } else if !body.is_empty() && body.bytes().all(|b| b.is_ascii_digit()) {
        body.parse::<i64>().ok()?
    } else {
        return None;
    };
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Node {
        parse(s).unwrap_or_else(|e| panic!("{s}: {e:?}"))
    }

    #[test]
    fn scalars_resolve_like_go_yaml_v3() {
        let n = p("a: 1\nb: 0x10\nc: 1.5\nd: true\ne: yes\nf: ~\ng: '1'\nh: !!str 2\ni: -3\n");
        let get = |k: &str| n.get(k).map(|v| v.kind.clone());
        assert_eq!(get("a"), Some(Kind::Int(1)));
        assert_eq!(get("b"), Some(Kind::Int(16)));
        assert_eq!(get("c"), Some(Kind::Float(1.5)));
        assert_eq!(get("d"), Some(Kind::Bool(true)));
        assert_eq!(get("e"), Some(Kind::Str("yes".into())));
        assert_eq!(get("f"), Some(Kind::Null));
        assert_eq!(get("g"), Some(Kind::Str("1".into())));
        assert_eq!(get("h"), Some(Kind::Str("2".into())));
        assert_eq!(get("i"), Some(Kind::Int(-3)));
    }

    #[test]
    fn positions_are_one_based() {
        let n = p("models:\n  a:\n    ttl: 5\n");
        let ttl = n
            .get("models")
            .and_then(|m| m.get("a"))
            .and_then(|a| a.get("ttl"))
            .cloned();
        assert_eq!(ttl.map(|t| (t.line, t.column)), Some((3, 10)));
    }

    #[test]
    fn anchors_and_merge_keys() {
        let n = p("base: &b\n  ttl: 5\n  cmd: x\nm:\n  <<: *b\n  ttl: 9\nl:\n  <<: [{a: 1}, {a: 2, b: 3}]\n");
        let m = n.get("m").cloned().unwrap_or_else(|| panic!("m"));
        assert_eq!(
            m.get("ttl").map(|v| v.kind.clone()),
            Some(Kind::Int(9)),
            "explicit key wins"
        );
        assert_eq!(
            m.get("cmd").map(|v| v.kind.clone()),
            Some(Kind::Str("x".into()))
        );
        let l = n.get("l").cloned().unwrap_or_else(|| panic!("l"));
        assert_eq!(
            l.get("a").map(|v| v.kind.clone()),
            Some(Kind::Int(1)),
            "first merged wins"
        );
        assert_eq!(l.get("b").map(|v| v.kind.clone()), Some(Kind::Int(3)));
    }

    #[test]
    fn positions_stay_inside_the_text() {
        // Found by the `validate` fuzz target: with no line break after
        // the last line, saphyr's end of stream (and an error found there)
        // is on a line past the end of the file.
        for (src, at) in [
            ("a: 1\nb", (2, 2)),
            ("a: 1\r\nbc", (2, 3)),
            ("a: 1\nb\n", (3, 1)),
        ] {
            let e = parse(src).err().unwrap_or_else(|| panic!("{src:?}"));
            assert_eq!((e.line, e.column), at, "{src:?}: {}", e.message);
        }
        assert_eq!(end_of(""), (1, 1));
        assert_eq!(end_of("ab\rc\r\n"), (3, 1));
    }

    #[test]
    fn duplicate_keys_are_errors_naming_both_lines() {
        let e = parse("a: 1\nb: 2\na: 3\n")
            .err()
            .unwrap_or_else(|| panic!("dup"));
        assert_eq!((e.line, e.column, e.rule), (3, 1, "yaml-duplicate-key"));
        assert!(e.message.contains("line 1"), "{}", e.message);
    }

    #[test]
    fn bounded_on_hostile_input() {
        let mut s = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            s.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n", p = i - 1));
        }
        assert_eq!(parse(&s).err().map(|e| e.rule), Some("yaml-limit"));
        // Deep nesting is refused (by our limit or the parser's own).
        let deep = "[".repeat(5000) + &"]".repeat(5000);
        assert!(parse(&deep).is_err());
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert_eq!(parse(&deep).err().map(|e| e.rule), Some("yaml-limit"));
        assert_eq!(
            parse("a: 1\n---\nb: 2\n").err().map(|e| e.rule),
            Some("yaml-multiple-documents")
        );
        assert_eq!(
            parse("a:\n\tb: 1\n").err().map(|e| e.rule),
            Some("yaml-tabs")
        );
        assert_eq!(
            parse("a: [1, 2\n").err().map(|e| e.rule),
            Some("yaml-syntax")
        );
        assert!(
            parse("cmd: |\n  a\n  \tb\n").is_ok(),
            "tabs inside block scalars are content"
        );
    }
}
