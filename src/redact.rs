//! Secrets hidden from config text before it is diffed or printed.
//!
//! Owns: a pure function from config bytes to the same bytes with every
//! secret VALUE replaced in place by a marker `[redacted sha256:1a2b3c]`
//! (the first 6 hex digits of the SHA-256 of the secret). Equal secrets get
//! equal markers and different secrets (almost always, 24 bits) different
//! ones, so `diff::unified_diff(redact(old), redact(new))` shows a change
//! exactly on the lines where a secret changed, and nothing of its value.
//! Everything else is kept byte for byte: comments, quotes, indentation,
//! line endings, and the number of lines (a multi-line secret becomes the
//! marker followed by as many line breaks as it spanned, so every later line
//! keeps its number). [`Redactor::keyed`] uses HMAC-SHA256 under a key
//! instead (`[redacted hmac:…]`), so that a short secret cannot be found
//! from its marker by trying candidates.
//!
//! # What is a secret
//!
//! When the text is YAML (parsed with `saphyr-parser`, positions kept):
//! * **Secret-named keys, anywhere**: a mapping key whose name, lowercased
//!   without `_ - . space`, contains `apikey`, `password`, `passwd`,
//!   `passphrase`, `secret`, `credential`, `privatekey` or `accesskey`, or
//!   ends (trailing digits aside) with `token`, `auth`, `authorization` or
//!   `bearer` (`hf_token`, `token2`; not `max_tokens`, `tokenizer`): every
//!   scalar under it. This covers the top-level `apiKeys` list (block or
//!   flow, any quoting, multi-line scalars), `peers.*.apiKey` and e.g.
//!   `headers: {Authorization: …}`. A mapping under a name that only ends
//!   that way (a model id such as `my-token`) is walked normally instead.
//! * **`env:` items** `NAME=value` (list items, or a single string): the part
//!   after the first `=` when NAME contains (case-insensitive) `key`,
//!   `token`, `secret`, `password`, `passwd`, `passphrase`, `auth` (not
//!   `author`) or `credential`; `*_API_KEY` is included by `key`. An `env:`
//!   mapping is treated as `metadata`.
//! * **`metadata:` and `macros:` mappings** (any depth inside them): the value
//!   of every key whose name matches that same broad pattern, whatever its
//!   shape (a list or mapping value is hidden scalar by scalar).
//! * **Anchors and aliases**: a secret position holding an alias (`apiKeys:
//!   [*k]`) hides the anchored node where it is defined (`x: &k sk-123`);
//!   merge keys (`<<: *base`) inside these contexts are followed.
//! * **Macro references**: when a secret value uses `${name}`, the value of
//!   macro `name` (any `macros:` mapping) is hidden where it is defined.
//! * **Kept visible**: a secret value that is exactly one reference,
//!   `${env.NAME}` or `${name}` (the secret is elsewhere: the host's
//!   environment, or the macro, hidden at its definition); empty values;
//!   mapping keys; comments.
//! * **Repeats**: every secret of [`MIN_SWEEP_LEN`] to [`MAX_SWEEP_LEN`]
//!   bytes found above is also replaced wherever its exact text occurs
//!   elsewhere (a `cmd` line `--api-key sk-…` repeating an `apiKeys` item, a
//!   comment), up to [`MAX_SWEEP_SECRETS`] distinct secrets.
//!
//! When the text is not UTF-8 or not YAML (a broken remote file), or is over
//! [`MAX_NODES`] nodes, a line-based reader is used instead: `key: value`
//! with a key matching the broad pattern (anywhere on a line, flow mappings
//! too) hides the value and every following line indented deeper than the
//! key (block lists such as `apiKeys:` / `- a`, block scalars, continuation
//! lines); `NAME=value` with a matching NAME hides `value`. It over-redacts
//! (e.g. `max_tokens: 100`) rather than print a secret raw.
//!
//! # Limits
//! * Keys only: a secret typed straight into a `cmd` (`--api-key sk-…`,
//!   `Authorization: Bearer …` inside a string) is not recognised unless it
//!   also appears at a secret position (then the repeat sweep hides it).
//! * Mapping keys and comments are never treated as secrets (except by the
//!   repeat sweep).
//! * A multi-line secret keeps its line count (that many lines are visible
//!   as blank lines).
//! * The output is for reading; it is not guaranteed to be valid YAML (a
//!   plain scalar in a flow collection becomes `[redacted …]`).
//!
//! Invariants: pure, never panics on any bytes, linear time and memory
//! (no recursion; aliases are followed, never expanded; each node is visited
//! at most once per context).

use std::collections::{HashMap, HashSet};

use hmac::{Hmac, Mac};
use saphyr_parser::{Event, Parser, ScalarStyle};
use sha2::{Digest, Sha256};

/// Largest number of YAML nodes read structurally; beyond it the line-based
/// reader is used.
pub const MAX_NODES: usize = 1_000_000;
/// Shortest secret whose other occurrences in the text are also replaced.
pub const MIN_SWEEP_LEN: usize = 8;
/// Longest secret whose other occurrences in the text are also replaced.
pub const MAX_SWEEP_LEN: usize = 512;
/// Most distinct secrets searched for elsewhere in the text.
pub const MAX_SWEEP_SECRETS: usize = 4096;

/// Hex digits of the digest shown in a marker.
const MARKER_HEX: usize = 6;

/// How markers are made: plain SHA-256 ([`Redactor::new`]) or HMAC-SHA256
/// under a key ([`Redactor::keyed`]). Use ONE redactor for both sides of a
/// diff so that an unchanged secret keeps its marker.
#[derive(Clone, Default)]
pub struct Redactor {
    key: Option<Vec<u8>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("keyed", &self.key.is_some())
            .finish()
    }
}

/// [`Redactor::new`]`.redact(text)`: markers `[redacted sha256:XXXXXX]`.
pub fn redact(text: &[u8]) -> Vec<u8> {
    Redactor::new().redact(text)
}

impl Redactor {
    /// Markers from plain SHA-256: the same on every run and every machine.
    pub fn new() -> Redactor {
        Redactor { key: None }
    }

    /// Markers from HMAC-SHA256 under `key` (e.g. random per invocation):
    /// stable within one redactor, meaningless outside it.
    pub fn keyed(key: &[u8]) -> Redactor {
        Redactor {
            key: Some(key.to_vec()),
        }
    }

    /// The marker that replaces `secret`.
    pub fn marker(&self, secret: &[u8]) -> String {
        let (label, digest): (&str, Vec<u8>) = match &self.key {
            None => ("sha256", Sha256::digest(secret).to_vec()),
            Some(key) => match Hmac::<Sha256>::new_from_slice(key) {
                Ok(mut mac) => {
                    mac.update(secret);
                    ("hmac", mac.finalize().into_bytes().to_vec())
                }
                // HMAC accepts keys of any length; never reached.
                Err(_) => ("sha256", Sha256::digest(secret).to_vec()),
            },
        };
        let hex = hex::encode(digest);
        let short = hex.get(..MARKER_HEX).unwrap_or(&hex);
        format!("[redacted {label}:{short}]")
    }

    /// `text` with every secret value replaced by its marker (see the module
    /// documentation for what is a secret).
    pub fn redact(&self, text: &[u8]) -> Vec<u8> {
        let mut hits = match std::str::from_utf8(text).ok().and_then(structural) {
            Some(h) => h,
            None => line_based(text),
        };
        sweep(text, &mut hits);
        self.apply(text, hits)
    }

    fn apply(&self, text: &[u8], mut hits: Vec<Hit>) -> Vec<u8> {
        hits.retain(|h| h.start < h.end && h.end <= text.len());
        hits.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
        let mut merged: Vec<Hit> = Vec::with_capacity(hits.len());
        for h in hits {
            if let Some(last) = merged.last_mut() {
                if h.start < last.end {
                    if h.end > last.end {
                        // Partial overlap (pathological): hide the union.
                        last.end = h.end;
                        last.secret = text.get(last.start..last.end).unwrap_or(&[]).to_vec();
                    }
                    continue;
                }
            }
            merged.push(h);
        }
        let mut out = Vec::with_capacity(text.len());
        let mut at = 0;
        for h in merged {
            out.extend_from_slice(text.get(at..h.start).unwrap_or(&[]));
            out.extend_from_slice(self.marker(&h.secret).as_bytes());
            let region = text.get(h.start..h.end).unwrap_or(&[]);
            for (i, &b) in region.iter().enumerate() {
                if b == b'\n' {
                    if i > 0 && region.get(i - 1) == Some(&b'\r') {
                        out.push(b'\r');
                    }
                    out.push(b'\n');
                }
            }
            at = h.end;
        }
        out.extend_from_slice(text.get(at..).unwrap_or(&[]));
        out
    }
}

/// A byte range of the text to replace, and the secret its marker hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hit {
    start: usize,
    end: usize,
    secret: Vec<u8>,
}

/// Add a hit for every other occurrence of a secret of
/// [`MIN_SWEEP_LEN`]..=[`MAX_SWEEP_LEN`] bytes (longest first where several
/// match at one place).
fn sweep(text: &[u8], hits: &mut Vec<Hit>) {
    let mut secrets: Vec<Vec<u8>> = hits
        .iter()
        .filter(|h| (MIN_SWEEP_LEN..=MAX_SWEEP_LEN).contains(&h.secret.len()))
        .map(|h| h.secret.clone())
        .collect();
    secrets.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    secrets.dedup();
    secrets.truncate(MAX_SWEEP_SECRETS);
    if secrets.is_empty() {
        return;
    }
    // Byte literals: ASCII alphanumerics as they are, every other byte as
    // `\xNN` (Unicode off, so it is that byte).
    let mut pattern = String::from("(?-u:");
    for (i, secret) in secrets.iter().enumerate() {
        if i > 0 {
            pattern.push('|');
        }
        for &b in secret {
            if b.is_ascii_alphanumeric() {
                pattern.push(char::from(b));
            } else {
                pattern.push_str(&format!("\\x{b:02X}"));
            }
        }
    }
    pattern.push(')');
    let Ok(re) = regex::bytes::RegexBuilder::new(&pattern)
        .unicode(false)
        .size_limit(1 << 28)
        .dfa_size_limit(1 << 26)
        .build()
    else {
        return;
    };
    for m in re.find_iter(text) {
        hits.push(Hit {
            start: m.start(),
            end: m.end(),
            secret: m.as_bytes().to_vec(),
        });
    }
}

// ---------------------------------------------------------------------------
// Names

/// The broad pattern (env names, metadata and macro keys, the fallback).
fn broad_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    const WORDS: [&str; 7] = [
        "key",
        "token",
        "secret",
        "passw",
        "passphrase",
        "credential",
        "bearer",
    ];
    if WORDS.iter().any(|w| n.contains(w)) {
        return true;
    }
    // `auth`, `oauth`, `authorization`, but not `author(s)`, `authority`.
    let mut from = 0;
    while let Some(i) = n.get(from..).and_then(|s| s.find("auth")) {
        let at = from + i;
        let rest = n.get(at + 4..).unwrap_or("");
        if !rest.starts_with("or") || rest.starts_with("oriz") || rest.starts_with("oris") {
            return true;
        }
        from = at + 4;
    }
    false
}

/// The strict pattern (mapping keys anywhere in the config): lowercased
/// without `_ - . space`, the name contains `apikey`, `password`, `passwd`,
/// `passphrase`, `secret`, `credential`, `privatekey` or `accesskey`
/// ([`Strict::Strong`]), or (trailing digits aside) ends with `token`,
/// `auth`, `authorization` or `bearer` ([`Strict::Ending`]: `hf_token`,
/// `token2`, but not `max_tokens`, `tokenizer`, `author`).
fn strict_secret_name(name: &str) -> Option<Strict> {
    let n: String = name
        .chars()
        .filter(|c| !matches!(c, '_' | '-' | '.' | ' '))
        .flat_map(char::to_lowercase)
        .collect();
    const INSIDE: [&str; 8] = [
        "apikey",
        "password",
        "passwd",
        "passphrase",
        "secret",
        "credential",
        "privatekey",
        "accesskey",
    ];
    const ENDINGS: [&str; 3] = ["token", "auth", "bearer"];
    let stem = n.trim_end_matches(|c: char| c.is_ascii_digit());
    if INSIDE.iter().any(|w| n.contains(w)) {
        Some(Strict::Strong)
    } else if ENDINGS.iter().any(|e| stem.ends_with(e)) || stem.ends_with("authorization") {
        Some(Strict::Ending)
    } else {
        None
    }
}

/// How a key matched the strict pattern: a strong word hides any value, an
/// ending (`…token`) only a scalar or a list (a mapping under `my-token:` is
/// more likely a model than a secret, and is walked).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Strict {
    Strong,
    Ending,
}

/// `${env.NAME}` or `${name}`, alone: a reference, not a secret.
fn is_reference(s: &str) -> bool {
    let Some(inner) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}')) else {
        return false;
    };
    let name = inner.strip_prefix("env.").unwrap_or(inner);
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Names of macros used as `${name}` in `s` (not `${env.…}`), added to
/// `seen`; the ones new to it are also queued on `pending`.
fn macro_refs(s: &str, seen: &mut HashSet<String>, pending: &mut Vec<String>) {
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        let after = rest.get(i + 2..).unwrap_or("");
        let len = after
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
            .count();
        if len > 0 && after.as_bytes().get(len) == Some(&b'}') {
            if let Some(name) = after.get(..len) {
                if seen.insert(name.to_string()) {
                    pending.push(name.to_string());
                }
            }
        }
        rest = after;
    }
}

// ---------------------------------------------------------------------------
// Structural (YAML) reading

enum Node {
    Scalar {
        value: String,
        style: ScalarStyle,
        /// An anchor or tag precedes the value inside the span.
        props: bool,
        start: usize,
        end: usize,
    },
    Seq(Vec<usize>),
    /// Keys and values interleaved.
    Map(Vec<usize>),
    Alias(Option<usize>),
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Ctx {
    Normal,
    Env,
    /// Keys matching the broad pattern hide their values.
    Meta,
    Secret,
}

/// Char index → byte offset, moving from the last position (spans arrive in
/// document order, so the total walk is linear).
struct Cursor<'a> {
    text: &'a [u8],
    chars: usize,
    bytes: usize,
}

impl Cursor<'_> {
    fn to(&mut self, target: usize) -> usize {
        let t = self.text;
        while self.chars < target && self.bytes < t.len() {
            self.bytes += 1;
            while self.bytes < t.len() && t[self.bytes] & 0xC0 == 0x80 {
                self.bytes += 1;
            }
            self.chars += 1;
        }
        while self.chars > target && self.bytes > 0 {
            self.bytes -= 1;
            while self.bytes > 0 && t[self.bytes] & 0xC0 == 0x80 {
                self.bytes -= 1;
            }
            self.chars -= 1;
        }
        self.bytes
    }
}

/// Hits for a YAML text, or `None` when it does not parse (or is too big).
fn structural(text: &str) -> Option<Vec<Hit>> {
    let (nodes, roots) = build(text)?;
    let mut w = Walk {
        text: text.as_bytes(),
        nodes: &nodes,
        visited: HashSet::new(),
        work: Vec::new(),
        hits: Vec::new(),
        refs: HashSet::new(),
        pending: Vec::new(),
        macros: HashMap::new(),
    };
    for r in roots {
        w.push(r, Ctx::Normal);
    }
    // Macros used by secrets are secret where defined (and so are the
    // macros they use): every name is queued once.
    loop {
        while let Some((id, ctx)) = w.work.pop() {
            w.visit(id, ctx);
        }
        let Some(name) = w.pending.pop() else { break };
        let defs = w.macros.get(&name).cloned().unwrap_or_default();
        for v in defs {
            w.push(v, Ctx::Secret);
        }
    }
    Some(w.hits)
}

fn build(text: &str) -> Option<(Vec<Node>, Vec<usize>)> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut roots: Vec<usize> = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    let mut anchors: HashMap<usize, usize> = HashMap::new();
    let mut cur = Cursor {
        text: text.as_bytes(),
        chars: 0,
        bytes: 0,
    };
    for item in Parser::new_from_str(text) {
        let (event, span) = item.ok()?;
        let (node, anchor, opens) = match event {
            Event::SequenceStart(anchor, _) => (Node::Seq(Vec::new()), anchor, true),
            Event::MappingStart(anchor, _) => (Node::Map(Vec::new()), anchor, true),
            Event::SequenceEnd | Event::MappingEnd => {
                stack.pop();
                continue;
            }
            Event::Scalar(value, style, anchor, tag) => {
                let start = cur.to(span.start.index());
                let end = cur.to(span.end.index());
                let node = Node::Scalar {
                    value: value.into_owned(),
                    style,
                    props: anchor > 0 || tag.is_some(),
                    start,
                    end,
                };
                (node, anchor, false)
            }
            Event::Alias(id) => (Node::Alias(anchors.get(&id).copied()), 0, false),
            Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart(_)
            | Event::DocumentEnd
            | Event::Nothing => continue,
        };
        let id = nodes.len();
        if id >= MAX_NODES {
            return None;
        }
        nodes.push(node);
        if anchor > 0 {
            anchors.insert(anchor, id);
        }
        match stack.last().and_then(|&p| nodes.get_mut(p)) {
            Some(Node::Seq(items)) | Some(Node::Map(items)) => items.push(id),
            _ => roots.push(id),
        }
        if opens {
            stack.push(id);
        }
    }
    Some((nodes, roots))
}

struct Walk<'a> {
    text: &'a [u8],
    nodes: &'a [Node],
    visited: HashSet<(usize, Ctx)>,
    work: Vec<(usize, Ctx)>,
    hits: Vec<Hit>,
    /// Macro names used by secret values.
    refs: HashSet<String>,
    /// Names in `refs` whose definitions are not hidden yet.
    pending: Vec<String>,
    /// Every `macros:` entry: name → value nodes.
    macros: HashMap<String, Vec<usize>>,
}

impl Walk<'_> {
    /// Follow an alias to its anchored node (aliases never carry anchors, so
    /// one step is enough).
    fn resolve(&self, id: usize) -> Option<usize> {
        match self.nodes.get(id)? {
            Node::Alias(target) => *target,
            _ => Some(id),
        }
    }

    fn push(&mut self, id: usize, ctx: Ctx) {
        if let Some(id) = self.resolve(id) {
            if self.visited.insert((id, ctx)) {
                self.work.push((id, ctx));
            }
        }
    }

    fn key_text(&self, id: usize) -> &str {
        match self.resolve(id).and_then(|r| self.nodes.get(r)) {
            Some(Node::Scalar { value, .. }) => value,
            _ => "",
        }
    }

    fn visit(&mut self, id: usize, ctx: Ctx) {
        let nodes = self.nodes;
        match nodes.get(id) {
            Some(Node::Seq(items)) => {
                for &i in items {
                    self.push(i, ctx);
                }
            }
            Some(Node::Map(kv)) => {
                for pair in kv.chunks(2) {
                    let [k, v] = pair else { continue };
                    self.entry(*k, *v, ctx);
                }
            }
            Some(Node::Scalar { value, .. }) => match ctx {
                Ctx::Secret => self.hide(id, value, 0),
                Ctx::Env => self.env_item(id, value),
                Ctx::Normal | Ctx::Meta => {}
            },
            Some(Node::Alias(_)) | None => {}
        }
    }

    fn entry(&mut self, k: usize, v: usize, ctx: Ctx) {
        let name = self.key_text(k).to_string();
        if name == "<<" && ctx != Ctx::Secret {
            // Merge: the merged mappings belong to this one's context.
            if let Some(Node::Seq(items)) = self.resolve(v).and_then(|r| self.nodes.get(r)) {
                for &i in items {
                    self.push(i, ctx);
                }
            } else {
                self.push(v, ctx);
            }
            return;
        }
        let next = match ctx {
            Ctx::Secret => Ctx::Secret,
            Ctx::Meta | Ctx::Env => {
                if broad_secret_name(&name) {
                    Ctx::Secret
                } else {
                    Ctx::Meta
                }
            }
            Ctx::Normal => {
                let value = self.resolve(v).and_then(|r| self.nodes.get(r));
                let strict = strict_secret_name(&name);
                if strict == Some(Strict::Strong)
                    || strict == Some(Strict::Ending) && !matches!(value, Some(Node::Map(_)))
                {
                    Ctx::Secret
                } else if name == "env" {
                    Ctx::Env
                } else if name == "metadata" {
                    Ctx::Meta
                } else if name == "macros" {
                    if let Some(Node::Map(kv)) = value {
                        for pair in kv.chunks(2) {
                            if let [mk, mv] = pair {
                                let n = self.key_text(*mk).to_string();
                                self.macros.entry(n).or_default().push(*mv);
                            }
                        }
                    }
                    Ctx::Meta
                } else {
                    Ctx::Normal
                }
            }
        };
        self.push(v, next);
    }

    /// `NAME=value`: hide `value` when NAME looks secret.
    fn env_item(&mut self, id: usize, value: &str) {
        let Some(eq) = value.find('=') else { return };
        let name = value.get(..eq).unwrap_or("");
        if !broad_secret_name(name.trim()) {
            return;
        }
        self.hide(id, value.get(eq + 1..).unwrap_or(""), eq + 1);
    }

    /// Hide `secret`, the part of scalar `id`'s value from byte `skip` (the
    /// `NAME=` of an env item) to its end.
    fn hide(&mut self, id: usize, secret: &str, skip: usize) {
        macro_refs(secret, &mut self.refs, &mut self.pending);
        if secret.is_empty() || is_reference(secret) {
            return;
        }
        let Some(Node::Scalar {
            value,
            style,
            props,
            start,
            end,
        }) = self.nodes.get(id)
        else {
            return;
        };
        let Some((cs, ce)) = content(self.text, *start, *end, *style, *props) else {
            return;
        };
        let mut from = cs;
        if skip > 0 {
            // The source spells `NAME=` as the value does (no escapes): hide
            // only what follows; otherwise hide the whole scalar.
            let prefix = value.as_bytes().get(..skip).unwrap_or(&[]);
            if self.text.get(cs..ce).is_some_and(|s| s.starts_with(prefix)) {
                from = cs + skip;
            }
        }
        if from < ce {
            self.hits.push(Hit {
                start: from,
                end: ce,
                secret: secret.as_bytes().to_vec(),
            });
        }
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// The bytes of a scalar's value inside its span: after any anchor, tag and
/// block header, inside the quotes, without trailing blank space.
fn content(
    text: &[u8],
    start: usize,
    end: usize,
    style: ScalarStyle,
    props: bool,
) -> Option<(usize, usize)> {
    let end = end.min(text.len());
    let mut s = start.min(end);
    if props {
        // Skip `&anchor`, `!tag`, blanks and comments between them.
        loop {
            while s < end && is_ws(text[s]) {
                s += 1;
            }
            match text.get(s) {
                Some(b'&') | Some(b'!') if s < end => {
                    while s < end && !is_ws(text[s]) {
                        s += 1;
                    }
                }
                Some(b'#') if s < end => {
                    while s < end && text[s] != b'\n' {
                        s += 1;
                    }
                }
                _ => break,
            }
        }
    }
    let mut e = end;
    match style {
        ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => {
            let q = if style == ScalarStyle::SingleQuoted {
                b'\''
            } else {
                b'"'
            };
            if e >= s + 2 && text.get(s) == Some(&q) && text.get(e - 1) == Some(&q) {
                s += 1;
                e -= 1;
            }
        }
        ScalarStyle::Literal | ScalarStyle::Folded => {
            if props && matches!(text.get(s), Some(b'|') | Some(b'>')) {
                // Header line (`|-2 # comment`) after the properties.
                while s < end && text[s] != b'\n' {
                    s += 1;
                }
                s = (s + 1).min(end);
            }
            while s < e && is_ws(text[s]) {
                s += 1;
            }
            while e > s && is_ws(text[e - 1]) {
                e -= 1;
            }
        }
        ScalarStyle::Plain => {
            while e > s && is_ws(text[e - 1]) {
                e -= 1;
            }
        }
    }
    (s < e).then_some((s, e))
}

// ---------------------------------------------------------------------------
// Line-based fallback

/// Lines deeper than `indent` (or list items at it) continue a secret.
#[derive(Clone, Copy)]
struct Block {
    indent: usize,
    /// Every deeper line is content (block scalar, unclosed flow or quote).
    whole: bool,
}

fn line_based(text: &[u8]) -> Vec<Hit> {
    let mut hits = Vec::new();
    let mut block: Option<Block> = None;
    let mut pos = 0;
    for raw in text.split_inclusive(|&b| b == b'\n') {
        let base = pos;
        pos += raw.len();
        let mut len = raw.len();
        while len > 0 && matches!(raw[len - 1], b'\n' | b'\r') {
            len -= 1;
        }
        let line = &raw[..len];
        let indent = line
            .iter()
            .take_while(|&&b| b == b' ' || b == b'\t')
            .count();
        if indent == line.len() {
            continue;
        }
        if let Some(b) = block {
            let dash = line.get(indent) == Some(&b'-');
            if indent > b.indent || (!b.whole && indent == b.indent && dash) {
                if b.whole {
                    let mut e = line.len();
                    while e > indent && is_ws(line[e - 1]) {
                        e -= 1;
                    }
                    push_line(&mut hits, line, base, indent, e);
                } else {
                    scan_line(line, base, indent, true, &mut hits, &mut block);
                }
                continue;
            }
            block = None;
        }
        if line.get(indent) == Some(&b'#') {
            continue;
        }
        scan_line(line, base, indent, false, &mut hits, &mut block);
    }
    hits
}

/// Hide `line[s..e]`, the line starting at byte `base` of the text.
fn push_line(hits: &mut Vec<Hit>, line: &[u8], base: usize, s: usize, e: usize) {
    let Some(secret) = line.get(s..e) else {
        return;
    };
    if secret.is_empty() || std::str::from_utf8(secret).is_ok_and(is_reference) {
        return;
    }
    hits.push(Hit {
        start: base + s,
        end: base + e,
        secret: secret.to_vec(),
    });
}

fn token_byte(b: u8) -> bool {
    !matches!(
        b,
        b' ' | b'\t' | b':' | b'=' | b',' | b'[' | b']' | b'{' | b'}' | b'"' | b'\'' | b'#'
    )
}

/// Index of the quote closing the one at `at`, if closed on this line.
fn close_quote(line: &[u8], at: usize) -> Option<usize> {
    let q = *line.get(at)?;
    let mut i = at + 1;
    while i < line.len() {
        let b = line[i];
        if q == b'"' && b == b'\\' {
            i += 2;
            continue;
        }
        if b == q {
            if q == b'\'' && line.get(i + 1) == Some(&b'\'') {
                i += 2;
                continue;
            }
            return Some(i);
        }
        i += 1;
    }
    None
}

/// One line of a possibly broken file. `inside`: the line continues a
/// secret block (its items and values are secret, its keys are not).
fn scan_line(
    line: &[u8],
    base: usize,
    indent: usize,
    inside: bool,
    hits: &mut Vec<Hit>,
    block: &mut Option<Block>,
) {
    let n = line.len();
    let mut i = indent;
    // Leading `- ` list markers.
    while i < n && line[i] == b'-' && line.get(i + 1).is_none_or(|&b| b == b' ' || b == b'\t') {
        i += 1;
        while i < n && (line[i] == b' ' || line[i] == b'\t') {
            i += 1;
        }
    }
    let first = i;
    if inside {
        // A secret item, or `key: value` inside a secret mapping.
        let value_at = key_end(line, i).map_or(i, |c| c + 1);
        if let Some((s, e, _)) = value_region(line, value_at, false) {
            push_line(hits, line, base, s, e);
        }
        return;
    }
    let mut flow = 0usize;
    while i < n {
        let b = line[i];
        match b {
            b'#' if i == 0 || line[i - 1] == b' ' || line[i - 1] == b'\t' => return,
            b'[' | b'{' => {
                flow += 1;
                i += 1;
            }
            b']' | b'}' => {
                flow = flow.saturating_sub(1);
                i += 1;
            }
            b'"' | b'\'' => {
                let close = close_quote(line, i);
                let inner_end = close.unwrap_or(n);
                let inner = line.get(i + 1..inner_end).unwrap_or(&[]);
                if let Some(c) = key_colon(line, close.map_or(n, |c| c + 1)) {
                    let name = String::from_utf8_lossy(inner).into_owned();
                    let col = (i == first).then_some(first);
                    i = key(line, base, col, c, &name, flow, hits, block);
                    continue;
                }
                // A quoted value: `"NAME=secret"`?
                let name_len = inner.iter().take_while(|&&c| c != b'=').count();
                if name_len < inner.len() {
                    let name = String::from_utf8_lossy(&inner[..name_len]);
                    if is_env_name(&name) && broad_secret_name(&name) {
                        push_line(hits, line, base, i + 1 + name_len + 1, inner_end);
                    }
                }
                i = close.map_or(n, |c| c + 1);
            }
            _ if token_byte(b) => {
                let start = i;
                while i < n && token_byte(line[i]) {
                    i += 1;
                }
                let name = String::from_utf8_lossy(&line[start..i]).into_owned();
                if let Some(c) = key_colon(line, i) {
                    let col = (start == first).then_some(first);
                    i = key(line, base, col, c, &name, flow, hits, block);
                } else if line.get(i) == Some(&b'=')
                    && is_env_name(&name)
                    && broad_secret_name(&name)
                {
                    let value = if start == first {
                        value_region(line, i + 1, flow > 0)
                    } else {
                        word_region(line, i + 1)
                    };
                    match value {
                        Some((s, e, next)) => {
                            push_line(hits, line, base, s, e);
                            i = next.max(i + 1);
                        }
                        None => i += 1,
                    }
                }
            }
            _ => i += 1,
        }
    }
}

/// A `key:` whose `:` is at `c`; `col`: the key's column when it starts the
/// line (then deeper lines after it belong to its value). Returns where to
/// go on scanning.
#[allow(clippy::too_many_arguments)]
fn key(
    line: &[u8],
    base: usize,
    col: Option<usize>,
    c: usize,
    name: &str,
    flow: usize,
    hits: &mut Vec<Hit>,
    block: &mut Option<Block>,
) -> usize {
    let n = line.len();
    if !broad_secret_name(name.trim()) {
        return c + 1;
    }
    let mut s = c + 1;
    while s < n && (line[s] == b' ' || line[s] == b'\t') {
        s += 1;
    }
    let open = |whole: bool, block: &mut Option<Block>| {
        if let Some(indent) = col {
            *block = Some(Block { indent, whole });
        }
    };
    match line.get(s) {
        None | Some(b'#') => {
            open(false, block);
            n
        }
        Some(b'|') | Some(b'>') => {
            open(true, block);
            n
        }
        Some(b'[') | Some(b'{') => match close_flow(line, s) {
            Some(j) => {
                push_line(hits, line, base, s + 1, j);
                j + 1
            }
            None => {
                let mut e = n;
                while e > s && is_ws(line[e - 1]) {
                    e -= 1;
                }
                push_line(hits, line, base, s, e);
                open(true, block);
                n
            }
        },
        _ => match value_region(line, s, flow > 0) {
            Some((vs, ve, next)) => {
                push_line(hits, line, base, vs, ve);
                // Deeper lines continue this scalar (or an unclosed quote).
                open(true, block);
                next.max(c + 1)
            }
            None => c + 1,
        },
    }
}

/// Index of the bracket closing the flow collection opened at `at`, if on
/// this line (quotes skipped).
fn close_flow(line: &[u8], at: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = at;
    while i < line.len() {
        match line[i] {
            b'[' | b'{' => depth += 1,
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Some(i);
                }
            }
            b'"' | b'\'' => i = close_quote(line, i)?,
            _ => {}
        }
        i += 1;
    }
    None
}

fn is_env_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.first()
        .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// Index of a `:` that ends a key at `at` (blanks allowed before it), when
/// followed by a blank, a flow delimiter or the end of the line.
fn key_colon(line: &[u8], at: usize) -> Option<usize> {
    let mut i = at;
    while i < line.len() && (line[i] == b' ' || line[i] == b'\t') {
        i += 1;
    }
    if line.get(i) != Some(&b':') {
        return None;
    }
    match line.get(i + 1) {
        None | Some(b' ') | Some(b'\t') | Some(b',') | Some(b']') | Some(b'}') => Some(i),
        _ => None,
    }
}

/// The `:` of a `key:` starting at `at`, if the line starts with one.
fn key_end(line: &[u8], at: usize) -> Option<usize> {
    match line.get(at) {
        Some(b'"') | Some(b'\'') => key_colon(line, close_quote(line, at)? + 1),
        _ => {
            let mut i = at;
            while i < line.len() && token_byte(line[i]) {
                i += 1;
            }
            (i > at).then_some(())?;
            key_colon(line, i)
        }
    }
}

/// A word starting at `at` (an inline `NAME=value` in a command), or a
/// quoted string there.
fn word_region(line: &[u8], at: usize) -> Option<(usize, usize, usize)> {
    if matches!(line.get(at), Some(b'"') | Some(b'\'')) {
        return value_region(line, at, false);
    }
    let mut e = at;
    while e < line.len() && !matches!(line[e], b' ' | b'\t') {
        e += 1;
    }
    (e > at).then_some((at, e, e))
}

/// A value starting at or after `at`: `(start, end, next)` with quotes
/// excluded, comments and trailing blanks cut, and (in flow) ending at `,]}`.
fn value_region(line: &[u8], at: usize, flow: bool) -> Option<(usize, usize, usize)> {
    let n = line.len();
    let mut s = at;
    while s < n && (line[s] == b' ' || line[s] == b'\t') {
        s += 1;
    }
    match line.get(s) {
        None | Some(b'#') => None,
        Some(b'"') | Some(b'\'') => {
            let close = close_quote(line, s);
            let e = close.unwrap_or(n);
            Some((s + 1, e, close.map_or(n, |c| c + 1)))
        }
        _ => {
            let mut e = s;
            while e < n {
                let b = line[e];
                if b == b'#' && e > s && (line[e - 1] == b' ' || line[e - 1] == b'\t') {
                    break;
                }
                if flow && matches!(b, b',' | b']' | b'}') {
                    break;
                }
                e += 1;
            }
            let next = e;
            while e > s && is_ws(line[e - 1]) {
                e -= 1;
            }
            Some((s, e, next))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(s: &str) -> String {
        String::from_utf8_lossy(&redact(s.as_bytes())).into_owned()
    }

    fn m(secret: &str) -> String {
        Redactor::new().marker(secret.as_bytes())
    }

    #[test]
    fn marker_is_a_sha256_prefix_equal_for_equal_secrets() {
        // sha256("sk-hunter2") = af859d…
        assert_eq!(m("sk-hunter2"), "[redacted sha256:af859d]");
        assert_eq!(m("a"), m("a"));
        assert_ne!(m("a"), m("b"));
        let k = Redactor::keyed(b"run-key");
        assert_eq!(k.marker(b"a"), k.marker(b"a"));
        assert_ne!(k.marker(b"a"), Redactor::keyed(b"other").marker(b"a"));
        assert!(k.marker(b"a").starts_with("[redacted hmac:"));
        assert_eq!(format!("{k:?}"), "Redactor { keyed: true }");
    }

    #[test]
    fn api_keys_block_flow_quoted_plain() {
        let src =
            "apiKeys:\n  - \"sk-hunter2\"\n  # tip: printf …\n  - sk-plain-1\n  - 'sk-single'\n";
        assert_eq!(
            r(src),
            format!(
                "apiKeys:\n  - \"{}\"\n  # tip: printf …\n  - {}\n  - '{}'\n",
                m("sk-hunter2"),
                m("sk-plain-1"),
                m("sk-single")
            )
        );
        assert_eq!(
            r("apiKeys: [a1, \"b2\", 'c3'] # three\n"),
            format!(
                "apiKeys: [{}, \"{}\", '{}'] # three\n",
                m("a1"),
                m("b2"),
                m("c3")
            )
        );
        // Block list at the key's own indentation, and an integer-looking key.
        assert_eq!(
            r("apiKeys:\n- 8675309\nx: 1\n"),
            format!("apiKeys:\n- {}\nx: 1\n", m("8675309"))
        );
    }

    #[test]
    fn multi_line_secrets_keep_the_line_count() {
        let src = "apiKeys:\n  - |\n    line-one\n    line-two\n  - \"quoted\n    over two\"\n  - plain\n    continued\nafter: 1\n";
        let out = r(src);
        assert_eq!(
            out,
            format!(
                "apiKeys:\n  - |\n    {}\n\n  - \"{}\n\"\n  - {}\n\nafter: 1\n",
                m("line-one\nline-two\n"),
                m("quoted over two"),
                m("plain continued")
            )
        );
        assert_eq!(out.lines().count(), src.lines().count());
        // CRLF line endings are kept, inside and after the secret.
        let crlf = "token: |\r\n  a\r\n  b\r\nx: y\r\n";
        assert_eq!(
            r(crlf),
            format!("token: |\r\n  {}\r\n\r\nx: y\r\n", m("a\nb\n"))
        );
    }

    #[test]
    fn env_items_hide_only_the_value_of_secret_names() {
        let src = "models:\n  m:\n    env:\n      - \"CUDA_VISIBLE_DEVICES=0,1\"\n      - HF_TOKEN=hf_abc\n      - 'OPENAI_API_KEY=sk-x'\n      - \"DB_PASSWD=p\"\n      - MY_AUTH=a\n      - AUTHOR=me\n      - EMPTY_KEY=\n      - REF_KEY=${env.REAL_KEY}\n    cmd: x\n";
        assert_eq!(
            r(src),
            format!(
                "models:\n  m:\n    env:\n      - \"CUDA_VISIBLE_DEVICES=0,1\"\n      - HF_TOKEN={}\n      - 'OPENAI_API_KEY={}'\n      - \"DB_PASSWD={}\"\n      - MY_AUTH={}\n      - AUTHOR=me\n      - EMPTY_KEY=\n      - REF_KEY=${{env.REAL_KEY}}\n    cmd: x\n",
                m("hf_abc"),
                m("sk-x"),
                m("p"),
                m("a")
            )
        );
        assert_eq!(
            r("env: [\"A_KEY=v\", B=c]\n"),
            format!("env: [\"A_KEY={}\", B=c]\n", m("v"))
        );
        // An escape in the name: the whole item is hidden.
        assert_eq!(
            r("env:\n  - \"\\x41_TOKEN=v\"\n"),
            format!("env:\n  - \"{}\"\n", m("v"))
        );
    }

    #[test]
    fn metadata_macros_peers_and_secret_keys_anywhere() {
        let src = "models:\n  m:\n    metadata:\n      author: me\n      note: hello\n      nested:\n        db_password: [p1, p2]\n        credentials: {user: u}\n        list:\n          - api_key: k1\npeers:\n  p:\n    proxy: http://x\n    apiKey: peer-key\n    headers: {Authorization: Bearer abc, X: y}\nmacros:\n  hf_key: mk\n  dir: /models\n";
        assert_eq!(
            r(src),
            format!(
                "models:\n  m:\n    metadata:\n      author: me\n      note: hello\n      nested:\n        db_password: [{}, {}]\n        credentials: {{user: {}}}\n        list:\n          - api_key: {}\npeers:\n  p:\n    proxy: http://x\n    apiKey: {}\n    headers: {{Authorization: {}, X: y}}\nmacros:\n  hf_key: {}\n  dir: /models\n",
                m("p1"),
                m("p2"),
                m("u"),
                m("k1"),
                m("peer-key"),
                m("Bearer abc"),
                m("mk")
            )
        );
        // A model whose id ends like a secret is walked, not hidden; a
        // mapping under a strong word is hidden whole.
        let model = "models:\n  my-token:\n    cmd: llama-server\n    apiKey: z\ncredentials: {user: u, pass: p}\n";
        assert_eq!(
            r(model),
            format!(
                "models:\n  my-token:\n    cmd: llama-server\n    apiKey: {}\ncredentials: {{user: {}, pass: {}}}\n",
                m("z"),
                m("u"),
                m("p")
            )
        );
    }

    #[test]
    fn anchors_aliases_merges_and_macro_references() {
        let src = "x: &k sk-anchored\ny: &l [\"l1\"]\napiKeys: [*k]\npeers:\n  p:\n    apiKeys: *l\nbase: &b\n  token: merged\nmodels:\n  m:\n    metadata:\n      <<: *b\n";
        assert_eq!(
            r(src),
            format!(
                "x: &k {}\ny: &l [\"{}\"]\napiKeys: [*k]\npeers:\n  p:\n    apiKeys: *l\nbase: &b\n  token: {}\nmodels:\n  m:\n    metadata:\n      <<: *b\n",
                m("sk-anchored"),
                m("l1"),
                m("merged")
            )
        );
        // Tags and anchors before quoted and block scalars.
        assert_eq!(
            r("a: &t !!str \"v1\"\nb: &u |\n  v2\napiKeys: [*t, *u]\n"),
            format!(
                "a: &t !!str \"{}\"\nb: &u |\n  {}\napiKeys: [*t, *u]\n",
                m("v1"),
                m("v2\n")
            )
        );
        // `${name}` keeps the reference and hides the macro (and the macros
        // it uses) where defined; `${env.NAME}` stays as it is.
        let src = "macros:\n  inner: in-secret\n  k1: \"pre-${inner}\"\n  other: shown\nmodels:\n  m:\n    macros:\n      k1: model-level\napiKeys:\n  - \"${k1}\"\n  - ${env.API_KEY_1}\n";
        assert_eq!(
            r(src),
            format!(
                "macros:\n  inner: {}\n  k1: \"{}\"\n  other: shown\nmodels:\n  m:\n    macros:\n      k1: {}\napiKeys:\n  - \"${{k1}}\"\n  - ${{env.API_KEY_1}}\n",
                m("in-secret"),
                m("pre-${inner}"),
                m("model-level")
            )
        );
    }

    #[test]
    fn repeats_of_a_secret_elsewhere_are_hidden_too() {
        let src = "apiKeys: [sk-long-enough]\nmodels:\n  m:\n    cmd: llama-server --api-key sk-long-enough # sk-long-enough\n    name: short\napiKey: short\n";
        assert_eq!(
            r(src),
            format!(
                "apiKeys: [{k}]\nmodels:\n  m:\n    cmd: llama-server --api-key {k} # {k}\n    name: short\napiKey: {s}\n",
                k = m("sk-long-enough"),
                s = m("short")
            )
        );
    }

    #[test]
    fn non_secrets_are_untouched_byte_for_byte() {
        let src = "# llama-swap\r\nhealthCheckTimeout: 60\nmacros:\n  \"llama\": >\n    /usr/bin/llama-server\n    --port ${PORT}\nmodels:\n  \"qwen\":\n    cmd: |\n      ${llama} -m q.gguf   \n    env:\n      - \"CUDA_VISIBLE_DEVICES=0\"\n    metadata: {author: me, purpose: coding}\n    aliases: [a, 'b', \"c\"]\n    ttl: 5\t# tab comment\ngroups:\n  g: {members: [qwen]}\napiKeys: []\npeers: {}\n\n\n";
        assert_eq!(r(src), src);
        assert_eq!(r(""), "");
        // A byte-order mark and non-ASCII text before a secret: offsets are
        // bytes, the parser's are characters.
        assert!(structural("\u{feff}# é ü\nnote: «ü»\napiKeys: [sk-ü-1]\n").is_some());
        assert_eq!(
            r("\u{feff}# é ü\nnote: «ü»\napiKeys: [sk-ü-1]\n"),
            format!("\u{feff}# é ü\nnote: «ü»\napiKeys: [{}]\n", m("sk-ü-1"))
        );
        assert_eq!(redact(b"\xff\xfe not utf-8 \n"), b"\xff\xfe not utf-8 \n");
    }

    #[test]
    fn diff_of_redacted_texts_shows_exactly_the_changed_lines() {
        let old = "apiKeys:\n  - sk-old-0001\n  - sk-same-0002\nmodels:\n  m:\n    cmd: run\n    env:\n      - HF_TOKEN=hf_same\n    ttl: 5\n";
        let new = "apiKeys:\n  - sk-new-0001\n  - sk-same-0002\nmodels:\n  m:\n    cmd: run\n    env:\n      - HF_TOKEN=hf_same\n    ttl: 6\n";
        let red = Redactor::keyed(b"one key for both sides");
        let d = crate::diff::unified_diff(
            &red.redact(old.as_bytes()),
            &red.redact(new.as_bytes()),
            "old",
            "new",
        );
        let changed: Vec<&str> = d
            .lines()
            .filter(|l| {
                (l.starts_with('-') || l.starts_with('+'))
                    && !l.starts_with("---")
                    && !l.starts_with("+++")
            })
            .collect();
        assert_eq!(
            changed,
            vec![
                format!("-  - {}", red.marker(b"sk-old-0001")),
                format!("+  - {}", red.marker(b"sk-new-0001")),
                "-    ttl: 5".to_string(),
                "+    ttl: 6".to_string(),
            ],
            "{d}"
        );
        assert!(!d.contains("sk-") && !d.contains("hf_same"), "{d}");
        // Unchanged secrets give identical texts: no diff at all.
        assert_eq!(red.redact(old.as_bytes()), red.redact(old.as_bytes()));
    }

    #[test]
    fn invalid_yaml_falls_back_to_lines() {
        let src = "apiKeys:\n  - \"unterminated\n  - sk-plain # c\nmodels: [\n  m:\n    env: [\"API_KEY=zzz\", B=c]\n    cmd: env HF_TOKEN=hf_x run\n    token: abc\n    secret: |\n      aaa\n    x: y\n\tbad: tab\nmetadata: {api_key: k1, b: 2}\n";
        assert_eq!(
            r(src),
            format!(
                "apiKeys:\n  - \"{}\n  - {} # c\nmodels: [\n  m:\n    env: [\"API_KEY={}\", B=c]\n    cmd: env HF_TOKEN={} run\n    token: {}\n    secret: |\n      {}\n    x: y\n\tbad: tab\nmetadata: {{api_key: {}, b: 2}}\n",
                m("unterminated"),
                m("sk-plain"),
                m("zzz"),
                m("hf_x"),
                m("abc"),
                m("aaa"),
                m("k1")
            )
        );
        // Not UTF-8: the same rules on bytes.
        let out = redact(b"\xff: 1\napiKeys: [k\xfe1]\n");
        let mut want = b"\xff: 1\napiKeys: [".to_vec();
        want.extend_from_slice(Redactor::new().marker(b"k\xfe1").as_bytes());
        want.extend_from_slice(b"]\n");
        assert_eq!(out, want);
    }

    // ---- properties

    /// A secret: `Q` never appears in the filler below, nor in markers.
    fn secret() -> impl Strategy<Value = String> {
        "Q[A-Za-z0-9+/_-]{7,24}"
    }

    /// One secret placed one way: `(snippet, secrets, local, single_line)`.
    /// `local`: recognisable from its own lines (no alias, no macro);
    /// `single_line`: each secret is the whole value on one line.
    fn placed(form: u8, a: String, b: String, i: usize) -> (String, Vec<String>, bool, bool) {
        let (text, secrets, local, single) = match form % 12 {
            0 => (format!("apiKeys:\n  - {a}\n  - \"{b}\" # c\n"), vec![a, b], true, true),
            1 => (format!("apiKeys: [{a}, '{b}']\n"), vec![a, b], true, true),
            2 => (
                format!("models:\n  m{i}:\n    cmd: run\n    env:\n      - \"HF_TOKEN={a}\"\n      - OPENAI_API_KEY={b}\n      - CUDA_VISIBLE_DEVICES=0\n"),
                vec![a, b],
                true,
                true,
            ),
            3 => (
                format!("models:\n  m{i}:\n    metadata:\n      note: plain\n      deep:\n        db_password: {a}\n        list: [{{Authorization: \"{b}\"}}]\n"),
                vec![a, b],
                true,
                true,
            ),
            4 => (
                format!("peers:\n  p{i}:\n    proxy: http://h\n    apiKey: '{a}'\n    headers: {{Authorization: {b}}}\n"),
                vec![a, b],
                true,
                true,
            ),
            5 => (format!("anch{i}: &k{i} {a}\napiKeys: [*k{i}]\n"), vec![a], false, true),
            6 => (format!("token{i}: |\n  {a}\n  {b}\nafter{i}: x\n"), vec![a, b], true, false),
            7 => (
                format!("macros:\n  mac{i}: \"{a}\"\napiKeys: [\"${{mac{i}}}\"]\n"),
                vec![a],
                false,
                true,
            ),
            8 => (format!("secret{i}: \"{a}\n  {b}\"\n"), vec![a, b], true, false),
            9 => (format!("password{i}: {a}\n  {b}\n"), vec![a, b], true, false),
            10 => (
                format!("models:\n  m{i}:\n    cmd: llama-server --api-key {a}\n    env: [\"X_SECRET={a}\"]\n"),
                vec![a],
                false,
                true,
            ),
            _ => (
                format!("ref{i}: &r{i} !!str \"{a}\"\nmodels:\n  m{i}:\n    metadata:\n      <<: {{api_token: *r{i}}}\n"),
                vec![a],
                false,
                true,
            ),
        };
        (text, secrets, local, single)
    }

    #[derive(Debug, Clone)]
    struct Generated {
        text: String,
        /// (secret, local, single_line)
        secrets: Vec<(String, bool, bool)>,
    }

    fn config() -> impl Strategy<Value = Generated> {
        (
            proptest::collection::vec((any::<u8>(), secret(), secret(), "[a-z ]{0,12}"), 1..8),
            any::<bool>(),
        )
            .prop_map(|(parts, crlf)| {
                let mut text = String::from("# config\nhealthCheckTimeout: 30\n");
                let mut secrets = Vec::new();
                let mut top: HashSet<String> = HashSet::new();
                for (i, (form, a, b, filler)) in parts.into_iter().enumerate() {
                    let (snippet, s, local, single) = placed(form, a, b, i);
                    // A top-level key already used: nest the snippet under `w{i}:`.
                    let keys: Vec<String> = snippet
                        .lines()
                        .filter(|l| !l.starts_with(' ') && l.contains(':'))
                        .map(|l| l.split(':').next().unwrap_or("").to_string())
                        .collect();
                    if keys.iter().any(|k| top.contains(k)) {
                        text.push_str(&format!("w{i}:\n"));
                        for l in snippet.split_inclusive('\n') {
                            text.push_str("  ");
                            text.push_str(l);
                        }
                    } else {
                        top.extend(keys);
                        text.push_str(&snippet);
                    }
                    text.push_str(&format!("f{i}: \"{filler}\"\n"));
                    secrets.extend(s.into_iter().map(|s| (s, local, single)));
                }
                if crlf {
                    text = text.replace('\n', "\r\n");
                }
                Generated { text, secrets }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

        #[test]
        fn never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = redact(&bytes);
        }

        #[test]
        fn never_panics_on_yaml_like_text(s in "[a-zA-Z:&*!|>\\[\\]{},'\"# \\-=\n\t\r\\\\$]{0,300}") {
            let out = redact(s.as_bytes());
            // Redaction only ever replaces: no secret-free text grows lines.
            prop_assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), s.matches('\n').count());
        }

        #[test]
        fn generated_configs_keep_no_secret_and_every_other_line(
            g in config(),
            cut in any::<prop::sample::Index>(),
        ) {
            let text = &g.text;
            prop_assert!(crate::validate::yaml::parse(text).is_ok(), "generator made invalid YAML:\n{}", text);
            let out = String::from_utf8_lossy(&redact(text.as_bytes())).into_owned();
            for (s, _, _) in &g.secrets {
                prop_assert!(!out.contains(s.as_str()), "{} leaked:\n{}\n=>\n{}", s, text, out);
            }
            // Same lines, and every line without a secret unchanged.
            let (a, b): (Vec<&str>, Vec<&str>) = (text.split('\n').collect(), out.split('\n').collect());
            prop_assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(&b) {
                if !x.contains('Q') {
                    prop_assert_eq!(x, y);
                }
            }
            // A truncated (often broken) file still hides every complete
            // secret that its own lines mark as secret.
            let head = &text[..cut.index(text.len() + 1)];
            let out = String::from_utf8_lossy(&redact(head.as_bytes())).into_owned();
            for (s, local, _) in &g.secrets {
                if *local {
                    prop_assert!(!out.contains(s.as_str()), "{} leaked from a cut file:\n{}\n=>\n{}", s, head, out);
                }
            }
        }

        #[test]
        fn a_changed_secret_changes_exactly_its_lines(g in config(), pick in any::<prop::sample::Index>()) {
            let red = Redactor::keyed(b"k");
            let singles: Vec<&String> = g.secrets.iter().filter(|s| s.2).map(|s| &s.0).collect();
            if singles.is_empty() {
                return Ok(());
            }
            let old_secret = singles[pick.index(singles.len())];
            let mut new_secret = format!("{old_secret}Z");
            while red.marker(new_secret.as_bytes()) == red.marker(old_secret.as_bytes()) {
                new_secret.push('Z');
            }
            let new = g.text.replace(old_secret.as_str(), &new_secret);
            let (ro, rn) = (red.redact(g.text.as_bytes()), red.redact(new.as_bytes()));
            let (ro, rn) = (String::from_utf8_lossy(&ro), String::from_utf8_lossy(&rn));
            let lines = |s: &str| s.split('\n').map(str::to_string).collect::<Vec<_>>();
            let (o, n, ro, rn) = (lines(&g.text), lines(&new), lines(&ro), lines(&rn));
            prop_assert_eq!(ro.len(), o.len());
            prop_assert_eq!(rn.len(), n.len());
            for j in 0..o.len() {
                prop_assert_eq!(ro[j] != rn[j], o[j] != n[j], "line {}:\n{}", j + 1, g.text);
            }
        }
    }

    #[test]
    fn large_inputs_are_linear() {
        let mut s = String::from("apiKeys:\n");
        for i in 0..MAX_SWEEP_SECRETS {
            s.push_str(&format!("  - sk-secret-number-{i:06}\n"));
        }
        for i in 0..MAX_SWEEP_SECRETS {
            s.push_str(&format!(
                "m{i}: [x, y, {{a: b}}] # sk-secret-number-{i:06}\n"
            ));
        }
        let t = std::time::Instant::now();
        let out = redact(s.as_bytes());
        assert!(!String::from_utf8_lossy(&out).contains("sk-secret"));
        assert!(
            t.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            t.elapsed()
        );
        // Aliases are never expanded.
        let mut s = String::from("a0: &a0 [sk-laugh-secret]\n");
        for i in 1..40 {
            s.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}]\n",
                p = i - 1
            ));
        }
        s.push_str("apiKeys: *a39\n");
        let out = redact(s.as_bytes());
        assert!(!String::from_utf8_lossy(&out).contains("sk-laugh"));
        // Deep nesting (the parser refuses it or we walk it without recursion).
        let deep = "a: ".to_string() + &"[".repeat(100_000) + "token: x";
        let _ = redact(deep.as_bytes());
        let deep: String = (0..5000)
            .map(|i| format!("{}k:\n", " ".repeat(i)))
            .collect();
        let _ = redact(deep.as_bytes());
    }
}
