//! The config as llama-swap's loader sees it: macros expanded, `${PORT}`
//! allocated, command comments stripped, the default proxy applied.
//!
//! Owns: the loader's macro rules (names, reserved names, scalar values,
//! self-reference, unknown macros, `${PORT}` only with `cmd`) and the
//! expansion itself, reproduced from llama-swap's `internal/config`:
//! global macros, then per model `MODEL_ID`, global and model macros
//! (model ones override), each list applied last-declared first so a macro
//! may use the ones declared before it; `${PORT}` numbered from `startPort`
//! in sorted model-id order, only for models whose `cmd` uses it.
//!
//! Bool fields holding yaml.v3's YAML 1.1 spellings (`yes`, `off`…) become
//! bools, as Go decodes them.
//!
//! `${env.NAME}` is left as written, with a warning (in values and in
//! mapping keys): only the host knows it.
//! Invariant: returns `None` exactly when the loader would stop with a
//! macro error; the findings then say why.

use foldhash::{HashMap, HashMapExt};
use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

use super::{field_of, get, p, Report, Seg};

/// llama-swap's default upstream URL.
pub const DEFAULT_PROXY: &str = "http://localhost:${PORT}";

// Constant patterns: compiled once; they are valid by construction.
static MACRO_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9_-]+$").expect("constant regex"));
static MACRO_USE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\$\{([a-zA-Z0-9_-]+)\}").expect("constant regex"));
static ENV_USE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\$\{env\.([a-zA-Z_][a-zA-Z0-9_]*)\}").expect("constant regex"));

/// Top-level keys of llama-swap's `Config` struct (macro uses are checked
/// only under these).
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "healthCheckTimeout",
    "logRequests",
    "logLevel",
    "logTimeFormat",
    "logToStdout",
    "metricsMaxInMemory",
    "captureBuffer",
    "store",
    "ui",
    "performance",
    "globalTTL",
    "unloadTimeout",
    "models",
    "profiles",
    "selectors",
    "routing",
    "groups",
    "matrix",
    "macros",
    "startPort",
    "hooks",
    "sendLoadingState",
    "includeAliasesInList",
    "apiKeys",
    "peers",
    "upstream",
];

/// Keys of llama-swap's `ModelConfig`.
pub const MODEL_KEYS: &[&str] = &[
    "cmd",
    "cmdStop",
    "proxy",
    "aliases",
    "env",
    "checkEndpoint",
    "ttl",
    "unloadTimeout",
    "unlisted",
    "useModelName",
    "name",
    "description",
    "concurrencyLimit",
    "filters",
    "macros",
    "metadata",
    "sendLoadingState",
    "timeouts",
    "compat",
    "capabilities",
    "healthCheckTimeout",
];

pub(crate) type MacroList = Vec<(String, Value)>;

/// The top-level `macros:`, checked (errors reported), in declaration order.
pub(crate) fn global_macros(top: &Map<String, Value>, report: &mut Report) -> MacroList {
    macro_list(top.get("macros"), &p(&["macros"]), "", report)
}

/// A model's own `macros:`, checked, when it declares any; an error when
/// the model is neither a mapping nor empty.
pub(crate) fn model_macros_of(id: &str, m: &Value, report: &mut Report) -> Option<MacroList> {
    match m {
        Value::Object(mm) => mm.get("macros").map(|macros| {
            macro_list(
                Some(macros),
                &p(&["models", id, "macros"]),
                &format!("model {id}: "),
                report,
            )
        }),
        Value::Null => None,
        _ => {
            report.error(
                &p(&["models", id]),
                "model-not-mapping",
                format!(
                    "model {id:?} must be a mapping of settings (cmd, proxy, …), not {}",
                    kind(m)
                ),
            );
            None
        }
    }
}

/// Expand `raw` as the loader does. `None` when the loader would fail.
/// Consumes `raw`: the expanded config reuses its values.
pub fn expand(raw: Value, report: &mut Report) -> Option<Value> {
    let before = report.findings.len();
    warn_env(&raw, &mut Vec::new(), report);
    let Value::Object(top) = raw else { return None };

    let globals = global_macros(&top, report);
    // Only the models that declare macros: the others have none.
    let mut model_macros: HashMap<String, MacroList> = HashMap::new();
    if let Some(Value::Object(models)) = top.get("models") {
        for (id, m) in models {
            if let Some(list) = model_macros_of(id, m, report) {
                model_macros.insert(id.clone(), list);
            }
        }
    }
    if report.findings[before..]
        .iter()
        .any(|f| f.severity == super::Severity::Error)
    {
        return None;
    }

    let global_slugs = slugs(&globals);
    let mut out = Map::new();
    for (k, mut v) in top {
        if k == "macros" {
            continue;
        }
        if k != "models" {
            expand_top_value(&k, &mut v, &global_slugs);
        }
        out.insert(k, v);
    }
    let start_port = start_port(&out, report)?;

    // Per model (map order): may a string of it still hold `${`? Those that
    // cannot are skipped by `check_macro_uses` (no second walk of them).
    let mut uses_left: Vec<bool> = Vec::new();
    if let Some(Value::Object(models)) = out.get_mut("models") {
        uses_left = vec![false; models.len()];
        let mut sorted: Vec<(usize, &String, &mut Value)> = models
            .iter_mut()
            .enumerate()
            .map(|(i, (id, m))| (i, id, m))
            .collect();
        sorted.sort_unstable_by(|a, b| a.1.cmp(b.1));
        let mut next_port = start_port;
        let model_bools = model_bool_fields();
        for (index, id, model) in sorted {
            let Value::Object(fields) = model else {
                continue;
            };
            let ctx = ModelContext {
                globals: &globals,
                global_slugs: &global_slugs,
                own: model_macros.get(id.as_str()),
                model_bools: &model_bools,
            };
            let flag = expand_model(id, fields, &ctx, &mut next_port, report)?;
            if let Some(slot) = uses_left.get_mut(index) {
                *slot = flag;
            }
        }
    }

    let mut expanded = Value::Object(out);
    // Those of the models are done.
    coerce_bools(&mut expanded, &top_bool_fields());
    let before = report.findings.len();
    check_macro_uses(&expanded, &uses_left, report);
    if report.findings.len() > before {
        return None;
    }
    Some(expanded)
}

/// Global macros applied to one top-level value other than `models` (as
/// the loader does: a peer's `proxy` is decoded and URL-checked as written,
/// global macros reach only its `apiKey` and `filters`).
pub(crate) fn expand_top_value(key: &str, v: &mut Value, global_slugs: &[Slug]) {
    if key == "peers" {
        if let Value::Object(peers) = v {
            for peer in peers.values_mut() {
                if let Value::Object(fields) = peer {
                    for (name, field) in fields.iter_mut() {
                        if name == "apiKey" || name == "filters" {
                            substitute(field, &[global_slugs]);
                        }
                    }
                }
            }
        }
    } else {
        substitute(v, &[global_slugs]);
    }
}

/// `startPort` of the expanded top level (5800 when unset); `None`, with an
/// error, when the loader refuses it.
pub(crate) fn start_port(top: &Map<String, Value>, report: &mut Report) -> Option<i64> {
    let start_port = match top.get("startPort") {
        None | Some(Value::Null) => 5800,
        Some(Value::Number(n)) if n.is_i64() => n.as_i64().unwrap_or(0),
        Some(other) => {
            report.error(
                &p(&["startPort"]),
                "start-port",
                format!("startPort must be an integer, not {}", kind(other)),
            );
            return None;
        }
    };
    if start_port < 1 {
        report.error(
            &p(&["startPort"]),
            "start-port",
            "startPort must be greater than 1",
        );
        return None;
    }
    Some(start_port)
}

/// The bool fields of a model (the `models.*.…` ones, without that prefix).
pub(crate) fn model_bool_fields() -> Vec<&'static [&'static str]> {
    BOOL_FIELDS
        .iter()
        .filter_map(|p| match p {
            ["models", "*", rest @ ..] => Some(rest),
            _ => None,
        })
        .collect()
}

/// The bool fields outside `models`.
pub(crate) fn top_bool_fields() -> Vec<&'static [&'static str]> {
    BOOL_FIELDS
        .iter()
        .copied()
        .filter(|p| p.first() != Some(&"models"))
        .collect()
}

/// Coerce the YAML 1.1 bool strings at `paths` (see [`coerce_bools`]).
pub(crate) fn coerce_bool_fields(v: &mut Value, paths: &[&[&str]]) {
    coerce_bools(v, paths);
}

/// What expanding one model needs besides the model.
pub(crate) struct ModelContext<'a> {
    pub globals: &'a MacroList,
    pub global_slugs: &'a [Slug<'static>],
    /// The model's own `macros:`, when it declares any.
    pub own: Option<&'a MacroList>,
    pub model_bools: &'a [&'static [&'static str]],
}

/// Expand one model (a mapping) in place, as the loader does, numbering
/// `${PORT}` from `next_port`. `None` (with an error) when the loader stops
/// here; otherwise whether a string of the model may still hold `${`.
pub(crate) fn expand_model(
    id: &str,
    model: &mut Map<String, Value>,
    ctx: &ModelContext,
    next_port: &mut i64,
    report: &mut Report,
) -> Option<bool> {
    if model.keys().any(|k| k == "macros") {
        model.remove("macros");
    }
    for field in ["cmd", "cmdStop"] {
        if let Some(Value::String(s)) = field_mut(model, field) {
            if s.contains('#') {
                *s = strip_comments(s);
            }
        }
    }
    // The default proxy is set below, once `${PORT}` is known: no
    // macro can change it (`PORT` is a reserved macro name).
    let default_proxy = matches!(field_of(model, "proxy"), None | Some(Value::Null));
    // Applied last-declared first: the model's own macros (which
    // override global ones in place), the globals, then `MODEL_ID`.
    let merged;
    let model_id;
    let lists: [&[Slug]; 2] = match ctx.own {
        Some(own) => {
            merged = slugs(&merge_macros(id, ctx.globals, own));
            [&merged, &[]]
        }
        None => {
            model_id = [Slug {
                slug: Cow::Borrowed("${MODEL_ID}"),
                text: Cow::Borrowed(id),
                value: None,
            }];
            [ctx.global_slugs, &model_id]
        }
    };
    let mut value = Value::Object(std::mem::take(model));
    let result = expand_model_value(
        id,
        &mut value,
        &lists,
        default_proxy,
        ctx,
        next_port,
        report,
    );
    *model = match value {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    result
}

fn expand_model_value(
    id: &str,
    value: &mut Value,
    lists: &[&[Slug]; 2],
    default_proxy: bool,
    ctx: &ModelContext,
    next_port: &mut i64,
    report: &mut Report,
) -> Option<bool> {
    substitute(value, lists);
    if !substitute_param_keys(value, lists, id, report) {
        return None;
    }
    let cmd_port = get(value, "cmd")
        .and_then(Value::as_str)
        .is_some_and(|c| c.contains("${PORT}"));
    let proxy_port = default_proxy
        || get(value, "proxy")
            .and_then(Value::as_str)
            .is_some_and(|c| c.contains("${PORT}"));
    if proxy_port && !cmd_port {
        report.error(
            &p(&["models", id, "proxy"]),
            "proxy-port-without-cmd",
            format!("model {id}: proxy uses ${{PORT}} but cmd does not - ${{PORT}} is only available when used in cmd (add --port ${{PORT}} to cmd, or give proxy a fixed port)"),
        );
        return None;
    }
    if cmd_port {
        if default_proxy {
            if let Value::Object(m) = value {
                let url = DEFAULT_PROXY.replace("${PORT}", &next_port.to_string());
                m.insert("proxy".into(), Value::String(url));
            }
        }
        let port = [Slug {
            slug: Cow::Borrowed("${PORT}"),
            // Go's `%v` of the number.
            text: Cow::Owned(next_port.to_string()),
            value: Some(Value::from(*next_port)),
        }];
        substitute(value, &[&port]);
        if !substitute_param_keys(value, &[&port], id, report) {
            return None;
        }
        *next_port += 1;
    }
    if let Some(keys) = get(value, "filters")
        .and_then(|f| get(f, "setParamsByID"))
        .and_then(Value::as_object)
    {
        if let Some(k) = keys.keys().find(|k| MACRO_USE.is_match(k)) {
            report.error(
                &p(&["models", id, "filters", "setParamsByID"]),
                "unknown-macro",
                format!("unknown macro in model {id} filters.setParamsByID key {k:?}"),
            );
            return None;
        }
    }
    coerce_bools(value, ctx.model_bools);
    Some(mentions_macro(value))
}

/// The fields llama-swap decodes into a Go `bool` (`*` = any key): the
/// boolean properties of the embedded schema (a test keeps them equal).
pub const BOOL_FIELDS: &[&[&str]] = &[
    &["logRequests"],
    &["sendLoadingState"],
    &["includeAliasesInList"],
    &["performance", "disabled"],
    &["models", "*", "unlisted"],
    &["models", "*", "sendLoadingState"],
    &["models", "*", "compat", "ignoreWebsockets"],
    &["models", "*", "capabilities", "tools"],
    &["models", "*", "capabilities", "reranker"],
    &["selectors", "*", "unlisted"],
    &["groups", "*", "swap"],
    &["groups", "*", "exclusive"],
    &["groups", "*", "persistent"],
    &["routing", "router", "settings", "groups", "*", "swap"],
    &["routing", "router", "settings", "groups", "*", "exclusive"],
    &["routing", "router", "settings", "groups", "*", "persistent"],
];

const MAX_BOOL_FIELDS: usize = 32;
const _: () = assert!(BOOL_FIELDS.len() <= MAX_BOOL_FIELDS);

/// What Go's yaml.v3 puts in a `bool` field for a string: the YAML 1.1
/// spellings it still accepts there (quoted or not); `None` for any other
/// string, which it refuses (the schema layer then reports the type).
pub fn go_bool(s: &str) -> Option<bool> {
    match s {
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some(true),
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

/// Replace the YAML 1.1 boolean strings at `paths` by the bools Go
/// decodes. One walk for all paths: each mapping on the way is scanned
/// once (no lookups: most are a model's few keys).
fn coerce_bools(v: &mut Value, paths: &[&[&str]]) {
    if paths.iter().any(|p| p.is_empty()) {
        if let Some(b) = v.as_str().and_then(go_bool) {
            *v = Value::Bool(b);
        }
        return;
    }
    let Value::Object(m) = v else { return };
    let mut tails: [&[&str]; MAX_BOOL_FIELDS] = [&[]; MAX_BOOL_FIELDS];
    for (k, child) in m.iter_mut() {
        let mut n = 0;
        for path in paths {
            if let Some((head, tail)) = path.split_first() {
                if (*head == "*" || head == k) && n < tails.len() {
                    tails[n] = tail;
                    n += 1;
                }
            }
        }
        if n > 0 {
            coerce_bools(child, &tails[..n]);
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Validate and collect a `macros:` mapping in declaration order.
fn macro_list(v: Option<&Value>, path: &[Seg], prefix: &str, report: &mut Report) -> MacroList {
    let mut out = Vec::new();
    let map = match v {
        None | Some(Value::Null) => return out,
        Some(Value::Object(m)) => m,
        Some(other) => {
            report.error(
                path,
                "macro-type",
                format!(
                    "{prefix}macros must be a mapping of name: value, not {}",
                    kind(other)
                ),
            );
            return out;
        }
    };
    for (name, value) in map {
        let mut at = path.to_vec();
        at.push(Seg::Key(name.clone()));
        if name.len() >= 64 {
            report.error_at_key(
                &at,
                "macro-name",
                format!("{prefix}macro name '{name}' exceeds maximum length of 63 characters"),
            );
        } else if !MACRO_NAME.is_match(name) {
            report.error_at_key(&at, "macro-name", format!("{prefix}macro name '{name}' contains invalid characters, must match ^[a-zA-Z0-9_-]+$"));
        } else if matches!(name.as_str(), "PID" | "PORT" | "MODEL_ID") {
            report.error_at_key(
                &at,
                "macro-reserved",
                format!("{prefix}macro name '{name}' is reserved"),
            );
        }
        match value {
            Value::String(s) if s.contains(&format!("${{{name}}}")) => {
                report.error(
                    &at,
                    "macro-self-reference",
                    format!("{prefix}macro '{name}' contains self-reference"),
                );
            }
            Value::String(_) | Value::Number(_) | Value::Bool(_) => {}
            other => report.error(
                &at,
                "macro-type",
                format!(
                    "{prefix}macro '{name}' must be a scalar (string, number or boolean), not {}",
                    kind(other)
                ),
            ),
        }
        out.push((name.clone(), value.clone()));
    }
    out
}

fn merge_macros(id: &str, globals: &MacroList, own: &MacroList) -> MacroList {
    let mut merged: MacroList = vec![("MODEL_ID".into(), Value::String(id.into()))];
    merged.extend(globals.iter().cloned());
    for (n, v) in own {
        match merged.iter_mut().find(|(m, _)| m == n) {
            Some(slot) => slot.1 = v.clone(),
            None => merged.push((n.clone(), v.clone())),
        }
    }
    merged
}

/// Go's `%v` for a scalar.
fn go_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A macro ready to apply: `${name}`, its value as text, and its value.
pub(crate) struct Slug<'a> {
    slug: Cow<'a, str>,
    text: Cow<'a, str>,
    /// `None`: the value is the string `text` (as is `Some` of a string).
    value: Option<Value>,
}

/// `macros` in the order llama-swap applies them: last-declared first.
pub(crate) fn slugs(macros: &[(String, Value)]) -> Vec<Slug<'static>> {
    macros
        .iter()
        .rev()
        .map(|(name, value)| Slug {
            slug: Cow::Owned(format!("${{{name}}}")),
            text: Cow::Owned(go_text(value)),
            value: Some(value.clone()),
        })
        .collect()
}

/// Where `pat` (which starts with `$`) first occurs in `s`: like
/// `s.find(pat)`, but only the `$` are searched for, so no searcher is set
/// up for `pat` (the strings are short and most have no `$`).
fn find_dollar(s: &str, pat: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s.get(from..)?.find('$') {
        let at = from + i;
        if s.get(at..)?.starts_with(pat) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// `s` with every `slug` (which starts with `$`) replaced by `text`, as
/// `str::replace` does (leftmost first, not overlapping); `None` when
/// `slug` does not occur.
fn replaced(s: &str, slug: &str, text: &str) -> Option<String> {
    let mut out = String::new();
    replace_into(s, slug, text, &mut out).then_some(out)
}

/// [`replaced`] into `out` (cleared first; its allocation is reused);
/// false, and `out` meaningless, when `slug` does not occur.
fn replace_into(s: &str, slug: &str, text: &str, out: &mut String) -> bool {
    let Some(mut at) = find_dollar(s, slug) else {
        return false;
    };
    out.clear();
    out.reserve(s.len() + text.len());
    let mut done = 0;
    loop {
        let Some(before) = s.get(done..at) else {
            return false;
        };
        out.push_str(before);
        out.push_str(text);
        done = at + slug.len();
        match s.get(done..).and_then(|rest| find_dollar(rest, slug)) {
            Some(i) => at = done + i,
            None => break,
        }
    }
    match s.get(done..) {
        Some(rest) => {
            out.push_str(rest);
            true
        }
        None => false,
    }
}

/// Apply the macros of `lists`, in order, to every string in `v`, in place.
/// Each string goes through them all in turn (macro values are scalars, so
/// this is the same as one pass over the tree per macro): a string that is
/// exactly `${name}` takes the value (and its type); one that contains it
/// gets the text.
fn substitute(v: &mut Value, lists: &[&[Slug]]) {
    substitute_in(v, lists, &mut Scratch::default());
}

/// Two text buffers [`substitute_in`] works in: a string that changes
/// costs no allocation per macro applied (the result is swapped into the
/// tree, the replaced buffer becomes scratch).
#[derive(Default)]
struct Scratch {
    cur: String,
    next: String,
}

fn substitute_in(v: &mut Value, lists: &[&[Slug]], buf: &mut Scratch) {
    let Value::String(s) = v else {
        match v {
            Value::Array(items) => items.iter_mut().for_each(|i| substitute_in(i, lists, buf)),
            Value::Object(m) => m.values_mut().for_each(|i| substitute_in(i, lists, buf)),
            _ => {}
        }
        return;
    };
    // Every slug starts with `${`: a string without it never changes.
    if !s.contains("${") {
        return;
    }
    let Scratch { cur, next } = buf;
    cur.clear();
    cur.push_str(s);
    let mut changed = false;
    for m in lists.iter().flat_map(|l| l.iter()) {
        if *cur == m.slug {
            // Exactly `${name}`: the value, with its type.
            match &m.value {
                None | Some(Value::String(_)) => {
                    cur.clear();
                    cur.push_str(&m.text);
                    changed = true;
                }
                Some(typed) => {
                    *v = typed.clone();
                    return;
                }
            }
        } else if replace_into(cur, &m.slug, &m.text, next) {
            std::mem::swap(cur, next);
            changed = true;
        }
    }
    if changed {
        std::mem::swap(s, cur);
    }
}

/// Macros in `filters.setParamsByID` keys; false (with an error) when two
/// keys collide.
fn substitute_param_keys(
    model: &mut Value,
    lists: &[&[Slug]],
    id: &str,
    report: &mut Report,
) -> bool {
    let Some(Value::Object(params)) = model
        .get_mut("filters")
        .and_then(|f| f.get_mut("setParamsByID"))
    else {
        return true;
    };
    let mut out = Map::new();
    for (k, v) in std::mem::take(params) {
        let mut nk = k.clone();
        for m in lists.iter().flat_map(|l| l.iter()) {
            if let Some(new) = replaced(&nk, &m.slug, &m.text) {
                nk = new;
            }
        }
        if out.contains_key(&nk) {
            report.error(&p(&["models", id, "filters", "setParamsByID"]), "set-params-by-id", format!("model {id} filters.setParamsByID: keys {k:?} and {nk:?} resolve to the same value"));
            return false;
        }
        out.insert(nk, v);
    }
    *params = out;
    true
}

/// Drop `#` comment lines from a command, as llama-swap does.
pub fn strip_comments(cmd: &str) -> String {
    let mut out = String::with_capacity(cmd.len());
    let kept = cmd.split('\n').filter(|l| !l.trim().starts_with('#'));
    for (i, line) in kept.enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(line);
    }
    out
}

/// `m.get_mut(key)`, scanning small mappings (as [`field_of`]).
fn field_mut<'a>(m: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Value> {
    if m.len() <= 8 {
        m.iter_mut().find(|(k, _)| *k == key).map(|(_, v)| v)
    } else {
        m.get_mut(key)
    }
}

/// A path segment borrowed from the value being walked; turned into a
/// [`Seg`] path only when a finding needs it.
#[derive(Clone, Copy)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

fn owned(path: &[Step]) -> Vec<Seg> {
    path.iter()
        .map(|s| match s {
            Step::Key(k) => Seg::Key((*k).to_string()),
            Step::Index(i) => Seg::Index(*i),
        })
        .collect()
}

/// `env-macro` warnings for the `${env.NAME}` in `s` (found at `path`).
fn warn_env_in(s: &str, path: &[Step], report: &mut Report) {
    let mut seen = Vec::new();
    for c in ENV_USE.captures_iter(s) {
        let name = c[1].to_string();
        if !seen.contains(&name) {
            report.warn(&owned(path), "env-macro", format!("${{env.{name}}} is read from llama-swap's environment on the host; swapcfg cannot check it (make sure {name} is set there: llama-swap refuses to start without it)"));
            seen.push(name);
        }
    }
}

/// `${env.NAME}` anywhere: llama-swap substitutes it in the whole text
/// (comments aside) before decoding, so mapping keys (model ids…) count too.
fn warn_env<'a>(v: &'a Value, path: &mut Vec<Step<'a>>, report: &mut Report) {
    match v {
        // `${env.` is in every match: most strings are skipped unscanned.
        Value::String(s) if s.contains("${env.") => warn_env_in(s, path, report),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Step::Index(i));
                warn_env(item, path, report);
                path.pop();
            }
        }
        Value::Object(m) => {
            for (k, item) in m {
                warn_env_entry(k, item, path, report);
            }
        }
        _ => {}
    }
}

/// [`warn_env`] for the entry `key: item` of the mapping at `path`.
fn warn_env_entry<'a>(
    key: &'a str,
    item: &'a Value,
    path: &mut Vec<Step<'a>>,
    report: &mut Report,
) {
    path.push(Step::Key(key));
    if key.contains("${env.") {
        warn_env_in(key, path, report);
    }
    warn_env(item, path, report);
    path.pop();
}

/// `env-macro` warnings for one top-level entry (for `models`, its key only).
pub(crate) fn warn_env_top(key: &str, v: &Value, report: &mut Report) {
    if key == "models" {
        let empty = Value::Object(Map::new());
        warn_env_entry(key, &empty, &mut Vec::new(), report);
    } else {
        warn_env_entry(key, v, &mut Vec::new(), report);
    }
}

/// `env-macro` warnings for one model (its id included).
pub(crate) fn warn_env_model(id: &str, m: &Value, report: &mut Report) {
    let mut path = Vec::with_capacity(8);
    path.push(Step::Key("models"));
    warn_env_entry(id, m, &mut path, report);
}

/// Unknown `${name}` left after expansion, under the keys llama-swap knows.
/// Whether a string in `v` holds `${` (a macro use left).
fn mentions_macro(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains("${"),
        Value::Array(items) => items.iter().any(mentions_macro),
        Value::Object(m) => m.values().any(mentions_macro),
        _ => false,
    }
}

/// `uses_left[i]` false: model `i` (map order) has no `${` left and is
/// skipped; models past its end are all checked.
fn check_macro_uses(v: &Value, uses_left: &[bool], report: &mut Report) {
    let Value::Object(top) = v else { return };
    for (k, value) in top {
        if k == "models" {
            if let Value::Object(models) = value {
                for (i, (id, m)) in models.iter().enumerate() {
                    if uses_left.get(i).copied().unwrap_or(true) {
                        check_macro_uses_model(id, m, report);
                    }
                }
            }
        } else {
            check_macro_uses_top(k, value, report);
        }
    }
}

/// Unknown `${name}` left in one expanded model.
pub(crate) fn check_macro_uses_model(id: &str, m: &Value, report: &mut Report) {
    if let Value::Object(fields) = m {
        for (field, fv) in fields {
            let mut path = vec![Step::Key("models"), Step::Key(id), Step::Key(field)];
            find_macros(
                fv,
                &mut path,
                field == "cmdStop",
                &|| format!("{id}.{field}"),
                report,
            );
        }
    }
}

/// Unknown `${name}` left in one top-level entry other than `models`.
pub(crate) fn check_macro_uses_top(k: &str, value: &Value, report: &mut Report) {
    if !TOP_LEVEL_KEYS.contains(&k) || k == "models" {
        return;
    }
    if k == "peers" {
        // A peer's `proxy` is URL-checked as written (the `peer` rule).
        if let Value::Object(peers) = value {
            for (pid, peer) in peers {
                let Value::Object(fields) = peer else {
                    continue;
                };
                for (field, fv) in fields.iter().filter(|(f, _)| *f != "proxy") {
                    let mut path = vec![Step::Key("peers"), Step::Key(pid), Step::Key(field)];
                    find_macros(
                        fv,
                        &mut path,
                        false,
                        &|| format!("peers.{pid}.{field}"),
                        report,
                    );
                }
            }
        }
    } else {
        find_macros(
            value,
            &mut vec![Step::Key(k)],
            false,
            &|| k.to_string(),
            report,
        );
    }
}

fn find_macros<'a>(
    v: &'a Value,
    path: &mut Vec<Step<'a>>,
    allow_pid: bool,
    label: &dyn Fn() -> String,
    report: &mut Report,
) {
    match v {
        // `${` is in every match: most strings are skipped unscanned.
        Value::String(s) if s.contains("${") => {
            for c in MACRO_USE.captures_iter(s) {
                let name = &c[1];
                if name == "PID" && allow_pid {
                    continue;
                }
                report.error(&owned(path), "unknown-macro", format!("unknown macro '${{{name}}}' found in {}; declare it under `macros:` (top level or in the model)", label()));
                return;
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Step::Index(i));
                find_macros(item, path, allow_pid, label, report);
                path.pop();
            }
        }
        Value::Object(m) => {
            for (k, item) in m {
                path.push(Step::Key(k));
                find_macros(item, path, allow_pid, label, report);
                path.pop();
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paths of the embedded schema whose type is exactly `boolean`.
    fn bool_leaves(node: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if node.get("type").and_then(Value::as_str) == Some("boolean") {
            out.push(path.clone());
        }
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            for (k, child) in props {
                path.push(k.clone());
                bool_leaves(child, path, out);
                path.pop();
            }
        }
        if let Some(child) = node.get("additionalProperties").filter(|c| c.is_object()) {
            path.push("*".into());
            bool_leaves(child, path, out);
            path.pop();
        }
    }

    #[test]
    fn bool_fields_are_the_schemas_booleans() {
        let schema: Value =
            serde_json::from_str(include_str!("../../schema/llama-swap.schema.json"))
                .unwrap_or_else(|e| panic!("{e}"));
        let mut leaves = Vec::new();
        bool_leaves(&schema, &mut Vec::new(), &mut leaves);
        let mut want: Vec<Vec<String>> = BOOL_FIELDS
            .iter()
            .map(|p| p.iter().map(|s| s.to_string()).collect())
            .collect();
        leaves.sort();
        want.sort();
        assert_eq!(leaves, want);
        // `expand` coerces those under `models` per model: all are `models.*.…`.
        for path in BOOL_FIELDS.iter().filter(|p| p.first() == Some(&"models")) {
            assert_eq!(path.get(1), Some(&"*"), "{path:?}");
        }
        assert_eq!(go_bool("On"), Some(true));
        assert_eq!(
            go_bool("true"),
            None,
            "a string `true` is not a bool to yaml.v3"
        );
    }

    #[test]
    fn replaced_is_str_replace() {
        let slugs = ["${a}", "${ab}", "${PORT}", "$", "${a"];
        let strings = [
            "",
            "${a}",
            "x${a}y${a}z",
            "${a}${a}",
            "$${a}}",
            "${ab}${a}",
            "é${a}ü$",
            "no macro",
            "${PORT}:${PORT}",
            "${a",
            "$$$",
        ];
        for s in strings {
            for slug in slugs {
                let want = s.contains(slug).then(|| s.replace(slug, "<v>"));
                assert_eq!(replaced(s, slug, "<v>"), want, "{s:?} {slug:?}");
                assert_eq!(find_dollar(s, slug), s.find(slug), "{s:?} {slug:?}");
            }
        }
    }

    /// The plain way: each macro in turn, a new string per replacement.
    fn substitute_reference(v: &mut Value, lists: &[&[Slug]]) {
        match v {
            Value::String(_) => {
                for m in lists.iter().flat_map(|l| l.iter()) {
                    match v {
                        Value::String(s) if *s == m.slug => {
                            *v = m
                                .value
                                .clone()
                                .unwrap_or_else(|| Value::String(m.text.to_string()));
                        }
                        Value::String(s) => *s = s.replace(m.slug.as_ref(), &m.text),
                        _ => return,
                    }
                }
            }
            Value::Array(items) => items
                .iter_mut()
                .for_each(|i| substitute_reference(i, lists)),
            Value::Object(m) => m.values_mut().for_each(|i| substitute_reference(i, lists)),
            _ => {}
        }
    }

    #[test]
    fn substitute_applies_macros_in_turn_like_the_plain_way() {
        // `b` uses `a` (declared before it, applied after it), `n` is a
        // number, `s` a string that is itself a macro use.
        let macros: MacroList = vec![
            ("a".into(), Value::String("A".into())),
            ("b".into(), Value::String("<${a}>".into())),
            ("n".into(), Value::from(7)),
            ("s".into(), Value::String("${a}".into())),
        ];
        let globals = slugs(&macros);
        let id = [Slug {
            slug: Cow::Borrowed("${MODEL_ID}"),
            text: Cow::Borrowed("m1"),
            value: None,
        }];
        let port = [Slug {
            slug: Cow::Borrowed("${PORT}"),
            text: Cow::Borrowed("5800"),
            value: Some(Value::from(5800)),
        }];
        let doc: Value = serde_json::json!({
            "cmd": "# c\nrun ${b} ${a}${a} --port ${PORT} ${MODEL_ID}",
            "list": ["${n}", "${s}", "${b}", "x${n}", "${MODEL_ID}", "${PORT}", "$${a}}", "${none}", 3],
            "deep": {"k": ["${b}${b}", {"q": "${n}"}]},
            "plain": "no macro at all",
        });
        for lists in [
            vec![&globals[..], &id[..]],
            vec![&port[..]],
            vec![&globals[..], &id[..], &port[..]],
        ] {
            let (mut got, mut want) = (doc.clone(), doc.clone());
            substitute(&mut got, &lists);
            substitute_reference(&mut want, &lists);
            assert_eq!(got, want);
        }
        let mut typed = serde_json::json!(["${n}", "${PORT}"]);
        substitute(&mut typed, &[&globals, &port]);
        assert_eq!(
            typed,
            serde_json::json!([7, 5800]),
            "exact uses take the type"
        );
        for cmd in ["", "a", "# x", "a\n# b\nc", "  # x\n\nb\n", "a\n#"] {
            let want = cmd
                .split('\n')
                .filter(|l| !l.trim().starts_with('#'))
                .collect::<Vec<_>>()
                .join("\n");
            assert_eq!(strip_comments(cmd), want, "{cmd:?}");
        }
    }
}
