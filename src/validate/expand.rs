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
//! `${env.NAME}` is left as written, with a warning: only the host knows it.
//! Invariant: returns `None` exactly when the loader would stop with a
//! macro error; the findings then say why.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

use super::{p, Report, Seg};

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

type MacroList = Vec<(String, Value)>;

/// Expand `raw` as the loader does. `None` when the loader would fail.
pub fn expand(raw: &Value, report: &mut Report) -> Option<Value> {
    let before = report.findings.len();
    warn_env(raw, &mut Vec::new(), report);
    let Value::Object(top) = raw else { return None };

    let globals = macro_list(top.get("macros"), &p(&["macros"]), "", report);
    let mut model_macros: Vec<(String, MacroList)> = Vec::new();
    if let Some(Value::Object(models)) = top.get("models") {
        for (id, m) in models {
            let path = p(&["models", id]);
            match m {
                Value::Object(mm) => {
                    let list = macro_list(
                        mm.get("macros"),
                        &p(&["models", id, "macros"]),
                        &format!("model {id}: "),
                        report,
                    );
                    model_macros.push((id.clone(), list));
                }
                Value::Null => model_macros.push((id.clone(), Vec::new())),
                _ => report.error(
                    &path,
                    "model-not-mapping",
                    format!(
                        "model {id:?} must be a mapping of settings (cmd, proxy, …), not {}",
                        kind(m)
                    ),
                ),
            }
        }
    }
    if report.findings[before..]
        .iter()
        .any(|f| f.severity == super::Severity::Error)
    {
        return None;
    }

    let mut out = Map::new();
    for (k, v) in top {
        if k == "macros" {
            continue;
        }
        if k == "models" {
            out.insert(k.clone(), v.clone());
        } else {
            out.insert(k.clone(), substitute_list(v.clone(), &globals));
        }
    }

    let start_port = match out.get("startPort") {
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

    if let Some(Value::Object(models)) = out.get_mut("models") {
        let mut ids: Vec<String> = models.keys().cloned().collect();
        ids.sort();
        let mut next_port = start_port;
        for id in ids {
            let Some(Value::Object(model)) = models.get_mut(&id) else {
                continue;
            };
            model.remove("macros");
            for field in ["cmd", "cmdStop"] {
                if let Some(Value::String(s)) = model.get(field) {
                    let stripped = strip_comments(s);
                    model.insert(field.to_string(), Value::String(stripped));
                }
            }
            if matches!(model.get("proxy"), None | Some(Value::Null)) {
                model.insert("proxy".into(), Value::String(DEFAULT_PROXY.into()));
            }
            let own = model_macros
                .iter()
                .find(|(m, _)| *m == id)
                .map(|(_, l)| l.clone())
                .unwrap_or_default();
            let macros = merge_macros(&id, &globals, &own);
            let mut value = substitute_list(Value::Object(std::mem::take(model)), &macros);
            if !substitute_param_keys(&mut value, &macros, &id, report) {
                return None;
            }
            let cmd_port = value
                .get("cmd")
                .and_then(Value::as_str)
                .is_some_and(|c| c.contains("${PORT}"));
            let proxy_port = value
                .get("proxy")
                .and_then(Value::as_str)
                .is_some_and(|c| c.contains("${PORT}"));
            if proxy_port && !cmd_port {
                report.error(
                    &p(&["models", &id, "proxy"]),
                    "proxy-port-without-cmd",
                    format!("model {id}: proxy uses ${{PORT}} but cmd does not - ${{PORT}} is only available when used in cmd (add --port ${{PORT}} to cmd, or give proxy a fixed port)"),
                );
                return None;
            }
            if cmd_port {
                let port = vec![("PORT".to_string(), Value::from(next_port))];
                value = substitute_list(value, &port);
                if !substitute_param_keys(&mut value, &port, &id, report) {
                    return None;
                }
                next_port += 1;
            }
            if let Some(keys) = value
                .pointer("/filters/setParamsByID")
                .and_then(Value::as_object)
            {
                if let Some(k) = keys.keys().find(|k| MACRO_USE.is_match(k)) {
                    report.error(
                        &p(&["models", &id, "filters", "setParamsByID"]),
                        "unknown-macro",
                        format!("unknown macro in model {id} filters.setParamsByID key {k:?}"),
                    );
                    return None;
                }
            }
            *model = match value {
                Value::Object(m) => m,
                _ => Map::new(),
            };
        }
    }

    let expanded = Value::Object(out);
    let before = report.findings.len();
    check_macro_uses(&expanded, report);
    if report.findings.len() > before {
        return None;
    }
    Some(expanded)
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

/// Apply macros last-declared first (as llama-swap does).
fn substitute_list(mut v: Value, macros: &MacroList) -> Value {
    for (name, value) in macros.iter().rev() {
        v = substitute(v, &format!("${{{name}}}"), value);
    }
    v
}

fn substitute(v: Value, slug: &str, value: &Value) -> Value {
    match v {
        Value::String(s) if s == slug => value.clone(),
        Value::String(s) if s.contains(slug) => Value::String(s.replace(slug, &go_text(value))),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|i| substitute(i, slug, value))
                .collect(),
        ),
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, i)| (k, substitute(i, slug, value)))
                .collect(),
        ),
        other => other,
    }
}

/// Macros in `filters.setParamsByID` keys; false (with an error) when two
/// keys collide.
fn substitute_param_keys(
    model: &mut Value,
    macros: &MacroList,
    id: &str,
    report: &mut Report,
) -> bool {
    let Some(Value::Object(params)) = model.pointer_mut("/filters/setParamsByID") else {
        return true;
    };
    let mut out = Map::new();
    for (k, v) in std::mem::take(params) {
        let mut nk = k.clone();
        for (name, value) in macros.iter().rev() {
            nk = nk.replace(&format!("${{{name}}}"), &go_text(value));
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
    cmd.split('\n')
        .filter(|l| !l.trim().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

fn warn_env(v: &Value, path: &mut Vec<Seg>, report: &mut Report) {
    match v {
        Value::String(s) => {
            let mut seen = Vec::new();
            for c in ENV_USE.captures_iter(s) {
                let name = c[1].to_string();
                if !seen.contains(&name) {
                    report.warn(path, "env-macro", format!("${{env.{name}}} is read from llama-swap's environment on the host; swapcfg cannot check it (make sure {name} is set there)"));
                    seen.push(name);
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Seg::Index(i));
                warn_env(item, path, report);
                path.pop();
            }
        }
        Value::Object(m) => {
            for (k, item) in m {
                path.push(Seg::Key(k.clone()));
                warn_env(item, path, report);
                path.pop();
            }
        }
        _ => {}
    }
}

/// Unknown `${name}` left after expansion, under the keys llama-swap knows.
fn check_macro_uses(v: &Value, report: &mut Report) {
    let Value::Object(top) = v else { return };
    for (k, value) in top {
        if !TOP_LEVEL_KEYS.contains(&k.as_str()) {
            continue;
        }
        if k == "models" {
            if let Value::Object(models) = value {
                for (id, m) in models {
                    if let Value::Object(fields) = m {
                        for (field, fv) in fields {
                            let mut path = p(&["models", id, field]);
                            find_macros(
                                fv,
                                &mut path,
                                field == "cmdStop",
                                &format!("{id}.{field}"),
                                report,
                            );
                        }
                    }
                }
            }
        } else {
            find_macros(value, &mut p(&[k]), false, k, report);
        }
    }
}

fn find_macros(v: &Value, path: &mut Vec<Seg>, allow_pid: bool, label: &str, report: &mut Report) {
    match v {
        Value::String(s) => {
            for c in MACRO_USE.captures_iter(s) {
                let name = &c[1];
                if name == "PID" && allow_pid {
                    continue;
                }
                report.error(path, "unknown-macro", format!("unknown macro '${{{name}}}' found in {label}; declare it under `macros:` (top level or in the model)"));
                return;
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Seg::Index(i));
                find_macros(item, path, allow_pid, label, report);
                path.pop();
            }
        }
        Value::Object(m) => {
            for (k, item) in m {
                path.push(Seg::Key(k.clone()));
                find_macros(item, path, allow_pid, label, report);
                path.pop();
            }
        }
        _ => {}
    }
}
