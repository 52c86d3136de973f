//! The semantic layer: the rules llama-swap's loader (`internal/config`)
//! enforces after decoding, which a schema cannot express, plus warnings for
//! likely mistakes the loader lets through.
//!
//! Owns: one named rule per loader check (the README's "Validation rules"
//! table), run on the expanded config by [`check`], one function per rule
//! group, in this order: top-level settings, aliases, each model's fields
//! (timeouts, capabilities, `filters.setParamsByID`, proxy, cmd), routing
//! (router, then groups or matrix), scheduler, hooks, API keys, peers,
//! selectors, profiles. Also [`unknown_keys`] (run on the raw config) and
//! [`listed_models`]. Defensive about types (the schema layer reports
//! those), so it never panics on odd input.

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::ops::ControlFlow;

use serde_json::Value;

use super::expand::{MODEL_KEYS, TOP_LEVEL_KEYS};
use super::{get, p, Report, Seg};

fn obj(v: Option<&Value>) -> Option<&serde_json::Map<String, Value>> {
    v.and_then(Value::as_object)
}

/// The strings of a list, with their indexes (other items skipped).
fn strs(v: Option<&Value>) -> impl Iterator<Item = (usize, &str)> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, x)| x.as_str().map(|s| (i, s)))
}

fn int(v: Option<&Value>) -> Option<i64> {
    v.and_then(Value::as_i64)
}

fn with(path: &[Seg], seg: Seg) -> Vec<Seg> {
    let mut v = path.to_vec();
    v.push(seg);
    v
}

/// Model ids (not `unlisted`) llama-swap lists on `/v1/models`.
pub fn listed_models(cfg: &Value) -> Vec<String> {
    let mut ids: Vec<String> = obj(cfg.get("models"))
        .map(|m| {
            m.iter()
                .filter(|(_, v)| !get(v, "unlisted").and_then(Value::as_bool).unwrap_or(false))
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// Buffers for [`distance`], reused across calls.
#[derive(Default)]
struct Rows {
    b: Vec<char>,
    prev: Vec<usize>,
    cur: Vec<usize>,
}

/// Levenshtein distance between `a` and `rows.b`, for "did you mean" hints.
fn distance(a: &[char], rows: &mut Rows) -> usize {
    let Rows { b, prev, cur } = rows;
    prev.clear();
    prev.extend(0..=b.len());
    cur.clear();
    cur.resize(b.len() + 1, 0);
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(prev, cur);
    }
    prev[b.len()]
}

/// ` (did you mean `k`?)` for the closest known key within 2 edits,
/// ignoring case.
fn suggestion(key: &str, known: &[&str]) -> String {
    let key: Vec<char> = key.to_lowercase().chars().collect();
    let mut rows = Rows::default();
    known
        .iter()
        .map(|k| {
            rows.b.clear();
            if k.is_ascii() {
                rows.b
                    .extend(k.bytes().map(|c| char::from(c.to_ascii_lowercase())));
            } else {
                rows.b.extend(k.to_lowercase().chars());
            }
            (distance(&key, &mut rows), k)
        })
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

/// Keys llama-swap silently ignores (top level and per model): warnings.
pub fn unknown_keys(raw: &Value, report: &mut Report) {
    let Some(top) = raw.as_object() else { return };
    for k in top.keys() {
        unknown_top_key(k, report);
    }
    if let Some(models) = obj(top.get("models")) {
        for (id, m) in models {
            unknown_model_keys(id, m, report);
        }
    }
}

/// [`unknown_keys`] for one top-level key.
pub(crate) fn unknown_top_key(k: &str, report: &mut Report) {
    if !TOP_LEVEL_KEYS.contains(&k) {
        report.warn(
            &p(&[k]),
            "unknown-key",
            format!(
                "llama-swap ignores the top-level key `{k}`{}",
                suggestion(k, TOP_LEVEL_KEYS)
            ),
        );
    }
}

/// [`unknown_keys`] for one model.
pub(crate) fn unknown_model_keys(id: &str, m: &Value, report: &mut Report) {
    if let Some(fields) = m.as_object() {
        for k in fields.keys() {
            if !MODEL_KEYS.contains(&k.as_str()) {
                report.warn(
                    &p(&["models", id, k]),
                    "unknown-key",
                    format!(
                        "llama-swap ignores `{k}` in model {id}{}",
                        suggestion(k, MODEL_KEYS)
                    ),
                );
            }
        }
    }
}

/// Go's `url.Parse` error for `u`, unless `u` holds `${env.NAME}` (its
/// value is only known on the host).
fn url_error(u: &str) -> Option<String> {
    if u.contains("${env.") {
        return None;
    }
    super::gourl::parse_error(u)
}

/// Go duration (`5s`, `1m30s`, `500ms`) or integer nanoseconds, in ns.
fn go_duration(v: &Value) -> Option<f64> {
    if let Some(n) = v.as_i64() {
        return Some(n as f64);
    }
    let s = v.as_str()?.trim();
    if s == "0" {
        return Some(0.0);
    }
    let mut total = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// All loader rules on the expanded config: one call per rule group of the
/// README's table. The order is the order findings are emitted in; a
/// routing error stops the checks, as it stops the loader.
pub fn check(cfg: &Value, r: &mut Report) {
    let Some(top) = cfg.as_object() else { return };
    let empty = serde_json::Map::new();
    let models = obj(top.get("models")).unwrap_or(&empty);
    check_top(top, models.is_empty(), r);
    let mut aliases = check_aliases(
        models
            .iter()
            .map(|(id, m)| (id.as_str(), get(m, "aliases"))),
        models.len(),
        r,
    );
    check_models(models, &mut aliases, r);
    let names = Names {
        models,
        aliases: &aliases,
    };
    check_references(top, &names, r);
}

/// The rules before the aliases: `no-models` (when `no_models`), then the
/// top-level settings.
pub(crate) fn check_top(top: &serde_json::Map<String, Value>, no_models: bool, r: &mut Report) {
    if no_models {
        // llama-swap starts with such a file and serves nothing.
        let at = if top.contains_key("models") {
            p(&["models"])
        } else {
            Vec::new()
        };
        r.warn(
            &at,
            "no-models",
            "the config defines no models: llama-swap starts and serves nothing",
        );
    }
    check_settings(top, r);
}

/// The rules after the models' own: routing (which may stop the loader),
/// scheduler, hooks, API keys, peers, selectors, profiles, peer names.
pub(crate) fn check_references(
    top: &serde_json::Map<String, Value>,
    names: &Names,
    r: &mut Report,
) {
    if check_routing(top, names, r).is_break() {
        return;
    }
    check_scheduler(top, names, r);
    check_hooks(top, names, r);
    check_api_keys(top, r);
    let peer_models = check_peers(top, r);
    let empty = serde_json::Map::new();
    let selectors = obj(top.get("selectors")).unwrap_or(&empty);
    check_selectors(selectors, names, &peer_models, r);
    check_profiles(top, names, &peer_models, selectors, r);
    check_peer_namespace(top, names, selectors, r);
}

/// What a model reference may name: a model id or an alias (including the
/// `filters.setParamsByID` keys, which the loader registers as aliases).
pub(crate) struct Names<'a> {
    pub models: &'a dyn Ids,
    pub aliases: &'a Aliases<'a>,
}

/// The set of model ids.
pub(crate) trait Ids {
    fn has(&self, id: &str) -> bool;
}

impl Ids for serde_json::Map<String, Value> {
    fn has(&self, id: &str) -> bool {
        self.contains_key(id)
    }
}

impl Ids for HashSet<&str> {
    fn has(&self, id: &str) -> bool {
        self.contains(id)
    }
}

/// Alias -> the model id owning it.
pub(crate) type Aliases<'a> = HashMap<&'a str, &'a str>;

impl Names<'_> {
    fn resolves(&self, name: &str) -> bool {
        self.models.has(name) || self.aliases.contains_key(name)
    }
}

/// Top-level settings: `health-check-timeout`, `performance-every`,
/// `global-ttl`, `unload-timeout`, `store-path`, `upstream-ignore-path`,
/// `log-to-stdout`.
fn check_settings(top: &serde_json::Map<String, Value>, r: &mut Report) {
    if let Some(h) = int(top.get("healthCheckTimeout")) {
        if h < 15 {
            r.warn(
                &p(&["healthCheckTimeout"]),
                "health-check-timeout",
                format!("healthCheckTimeout {h} is below 15; llama-swap raises it to 15"),
            );
        }
    }
    if let Some(every) = top.get("performance").and_then(|p| p.get("every")) {
        match go_duration(every) {
            Some(ns) if ns >= 5e9 || ns == 0.0 => {}
            Some(_) => r.error(
                &p(&["performance", "every"]),
                "performance-every",
                "performance.every must be at least 5s",
            ),
            None => r.error(
                &p(&["performance", "every"]),
                "performance-every",
                "performance.every is not a duration (e.g. 5s, 1m)",
            ),
        }
    }
    if int(top.get("globalTTL")).is_some_and(|v| v < 0) {
        r.error(
            &p(&["globalTTL"]),
            "global-ttl",
            "globalTTL must be >= 0 (0 = never unload)",
        );
    }
    if int(top.get("unloadTimeout")).is_some_and(|v| v < 0) {
        r.error(
            &p(&["unloadTimeout"]),
            "unload-timeout",
            "unloadTimeout must be >= 0",
        );
    }
    if let Some(path) = top
        .get("store")
        .and_then(|s| s.get("path"))
        .and_then(Value::as_str)
    {
        r.warn(&p(&["store", "path"]), "store-path", format!("store.path {path:?} must be a writable directory on the host; swapcfg cannot check that locally"));
    }
    for (i, pat) in strs(top.get("upstream").and_then(|u| u.get("ignorePaths"))) {
        if regex::Regex::new(pat).is_err() {
            r.error(
                &with(&p(&["upstream", "ignorePaths"]), Seg::Index(i)),
                "upstream-ignore-path",
                format!("upstream.ignorePaths: invalid regular expression {pat:?}"),
            );
        }
    }
    if let Some(v) = top.get("logToStdout").and_then(Value::as_str) {
        if !matches!(v, "proxy" | "upstream" | "both" | "none") {
            r.error(
                &p(&["logToStdout"]),
                "log-to-stdout",
                "logToStdout must be one of: proxy, upstream, both, none",
            );
        }
    }
}

/// `duplicate-alias`: in document order, the second use of an alias is the
/// error. Returns alias -> owning model id.
pub(crate) fn check_aliases<'a>(
    models: impl Iterator<Item = (&'a str, Option<&'a Value>)>,
    count: usize,
    r: &mut Report,
) -> Aliases<'a> {
    check_alias_list(
        models.flat_map(|(id, list)| strs(list).map(move |(i, a)| (id, i, a))),
        count,
        r,
    )
}

/// [`check_aliases`] over (model id, index in its `aliases`, alias), in
/// document order.
pub(crate) fn check_alias_list<'a>(
    list: impl Iterator<Item = (&'a str, usize, &'a str)>,
    count: usize,
    r: &mut Report,
) -> Aliases<'a> {
    let mut aliases = Aliases::with_capacity(count);
    for (id, i, a) in list {
        if let Some(owner) = aliases.get(a) {
            r.error(
                &with(&p(&["models", id, "aliases"]), Seg::Index(i)),
                "duplicate-alias",
                format!("duplicate alias {a} found in model: {id} (already an alias of {owner})"),
            );
        } else {
            aliases.insert(a, id);
        }
    }
    aliases
}

/// Each model's own fields, in sorted model-id order (the loader's).
/// `filters.setParamsByID` keys are registered in `aliases`.
fn check_models<'a>(
    models: &'a serde_json::Map<String, Value>,
    aliases: &mut Aliases<'a>,
    r: &mut Report,
) {
    let mut sorted: Vec<(&String, &Value)> = models.iter().collect();
    sorted.sort_by_key(|(id, _)| *id);
    for (id, m) in sorted {
        check_model_own(id, m, r);
        let keys = obj(get(m, "filters").and_then(|f| f.get("setParamsByID")));
        check_set_params_by_id(
            id,
            keys.into_iter().flat_map(|k| k.keys()),
            models,
            aliases,
            r,
        );
        check_model_link(id, m, r);
    }
}

/// A model's rules before `set-params-by-id`: timeouts, capabilities.
pub(crate) fn check_model_own(id: &str, m: &Value, r: &mut Report) {
    check_model_timeouts(id, m, r);
    check_capabilities(id, m, r);
}

/// A model's rules after `set-params-by-id`: proxy, cmd.
pub(crate) fn check_model_link(id: &str, m: &Value, r: &mut Report) {
    check_model_proxy(id, m, r);
    check_model_cmd(id, m, r);
}

/// `$.models[id]` followed by `rest`.
fn model_path(id: &str, rest: &[&str]) -> Vec<Seg> {
    let mut path = p(&["models", id]);
    path.extend(rest.iter().map(|k| Seg::Key(k.to_string())));
    path
}

/// `model-ttl`, `model-unload-timeout`.
fn check_model_timeouts(id: &str, m: &Value, r: &mut Report) {
    if int(get(m, "ttl")).is_some_and(|t| t < -1) {
        r.error(
            &model_path(id, &["ttl"]),
            "model-ttl",
            format!(
                "model {id}: invalid TTL value (use 0 for never, -1 for globalTTL, or seconds)"
            ),
        );
    }
    if int(get(m, "unloadTimeout")).is_some_and(|t| t < 0) {
        r.error(
            &model_path(id, &["unloadTimeout"]),
            "model-unload-timeout",
            format!("model {id}: invalid unloadTimeout value"),
        );
    }
}

/// `capabilities`: modalities and context.
fn check_capabilities(id: &str, m: &Value, r: &mut Report) {
    let Some(caps) = get(m, "capabilities") else {
        return;
    };
    for dir in ["in", "out"] {
        for (i, modality) in strs(caps.get(dir)) {
            if !matches!(modality, "text" | "audio" | "image") {
                r.error(&with(&model_path(id, &["capabilities", dir]), Seg::Index(i)), "capabilities", format!("model {id}: capabilities.{dir}: invalid modality {modality:?}, must be one of: text, audio, image"));
            }
        }
    }
    if int(caps.get("context")).is_some_and(|c| c < 0) {
        r.error(
            &model_path(id, &["capabilities", "context"]),
            "capabilities",
            format!("model {id}: capabilities.context: must be >= 0"),
        );
    }
}

/// `set-params-by-id`: keys may not name another model or another model's
/// alias; the others become aliases of this model.
pub(crate) fn check_set_params_by_id<'a>(
    id: &'a str,
    keys: impl Iterator<Item = &'a String>,
    models: &dyn Ids,
    aliases: &mut Aliases<'a>,
    r: &mut Report,
) {
    for key in keys {
        if key.as_str() == id {
            continue;
        }
        let at = || model_path(id, &["filters", "setParamsByID", key]);
        if models.has(key) {
            r.error_at_key(&at(), "set-params-by-id", format!("model {id} filters.setParamsByID: key '{key}' conflicts with an existing model ID"));
        } else if let Some(owner) = aliases.get(key.as_str()) {
            if *owner != id {
                r.error_at_key(&at(), "set-params-by-id", format!("duplicate alias '{key}' in model {id} filters.setParamsByID, already used by model {owner}"));
            }
        } else {
            aliases.insert(key, id);
        }
    }
}

/// `proxy-url`.
fn check_model_proxy(id: &str, m: &Value, r: &mut Report) {
    if let Some(proxy) = get(m, "proxy").and_then(Value::as_str) {
        if let Some(why) = url_error(proxy) {
            r.error(
                &model_path(id, &["proxy"]),
                "proxy-url",
                format!("model {id}: invalid proxy URL: {why}"),
            );
        }
    }
}

/// `empty-cmd` (warning).
fn check_model_cmd(id: &str, m: &Value, r: &mut Report) {
    if get(m, "cmd")
        .and_then(Value::as_str)
        .is_none_or(|c| c.trim().is_empty())
    {
        r.warn(
            &model_path(id, &[]),
            "empty-cmd",
            format!(
                "model {id} has no cmd; llama-swap loads the config but cannot start this model"
            ),
        );
    }
}

/// Routing: legacy top-level `groups`/`matrix` vs `routing.router`
/// (`routing-conflict`, `routing-router`, `groups-and-matrix`), then the
/// groups or the matrix in use. `Break` when the loader stops here.
fn check_routing(
    top: &serde_json::Map<String, Value>,
    names: &Names,
    r: &mut Report,
) -> ControlFlow<()> {
    let router = top.get("routing").and_then(|x| x.get("router"));
    let legacy = !top.get("matrix").is_none_or(Value::is_null)
        || obj(top.get("groups")).is_some_and(|g| !g.is_empty());
    let router_use = router
        .and_then(|x| x.get("use"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let settings = router.and_then(|x| x.get("settings"));
    let has_routing = !router_use.is_empty()
        || !settings
            .and_then(|s| s.get("matrix"))
            .is_none_or(Value::is_null)
        || obj(settings.and_then(|s| s.get("groups"))).is_some_and(|g| !g.is_empty());
    let (groups, groups_path, matrix, matrix_path) = if legacy && has_routing {
        r.error(&p(&["routing", "router"]), "routing-conflict", "config uses both the legacy top-level 'matrix'/'groups' keys and 'routing.router'; move the top-level keys into routing.router");
        return ControlFlow::Break(());
    } else if legacy {
        (
            top.get("groups"),
            p(&["groups"]),
            top.get("matrix").filter(|m| !m.is_null()),
            p(&["matrix"]),
        )
    } else {
        let sp = p(&["routing", "router", "settings"]);
        match router_use {
            "matrix" => {
                let m = settings
                    .and_then(|s| s.get("matrix"))
                    .filter(|m| !m.is_null());
                if m.is_none() {
                    r.error(&p(&["routing", "router", "use"]), "routing-router", "routing.router.use is 'matrix' but routing.router.settings.matrix is not set");
                    return ControlFlow::Break(());
                }
                (
                    None,
                    with(&sp, Seg::Key("groups".into())),
                    m,
                    with(&sp, Seg::Key("matrix".into())),
                )
            }
            "group" | "" => (
                settings.and_then(|s| s.get("groups")),
                with(&sp, Seg::Key("groups".into())),
                None,
                with(&sp, Seg::Key("matrix".into())),
            ),
            other => {
                r.error(
                    &p(&["routing", "router", "use"]),
                    "routing-router",
                    format!("routing.router.use: unknown router {other:?} (valid: group, matrix)"),
                );
                return ControlFlow::Break(());
            }
        }
    };
    let empty = serde_json::Map::new();
    let groups = obj(groups).unwrap_or(&empty);
    if matrix.is_some() && !groups.is_empty() {
        r.error(
            &groups_path,
            "groups-and-matrix",
            "config cannot use both 'groups' and 'matrix'",
        );
    } else if let Some(mx) = matrix {
        check_matrix(mx, &matrix_path, names.models, r);
    } else {
        check_groups(groups, &groups_path, names, r);
    }
    ControlFlow::Continue(())
}

/// `group-duplicate-member`, `group-member-reused` (the loader), and
/// `group-member-unknown` (the server: building the group router looks
/// every member up as a model id or alias and refuses to start without it).
fn check_groups(
    groups: &serde_json::Map<String, Value>,
    groups_path: &[Seg],
    names: &Names,
    r: &mut Report,
) {
    let gids: Vec<&String> = groups.keys().collect();
    // Member -> index of the group it is in (sized once: one entry a member).
    let members = groups
        .values()
        .filter_map(|g| g.get("members").and_then(Value::as_array))
        .map(Vec::len)
        .sum();
    let mut used: HashMap<&str, usize> = HashMap::with_capacity(members);
    for (n, (gid, g)) in groups.iter().enumerate() {
        // Members already seen in this group are those `used` gives to it,
        // plus those reported as in another group.
        let mut reused = HashSet::new();
        for (i, member) in strs(g.get("members")) {
            let at = || [groups_path, &p(&[gid, "members"]), &[Seg::Index(i)]].concat();
            let owner = used.get(member).copied();
            if owner == Some(n) || reused.contains(member) {
                r.error(
                    &at(),
                    "group-duplicate-member",
                    format!("duplicate model member {member} found in group: {gid}"),
                );
                continue;
            }
            if let Some(other) = owner.and_then(|o| gids.get(o)) {
                r.error(
                    &at(),
                    "group-member-reused",
                    format!("model member {member} is used in multiple groups: {other} and {gid}"),
                );
                reused.insert(member);
                continue;
            }
            used.insert(member, n);
            if !names.resolves(member) {
                r.error(
                    &at(),
                    "group-member-unknown",
                    format!("group {gid}: member {member:?} names no model id or alias; llama-swap refuses to start (creating group router: no model config for {member:?})"),
                );
            }
        }
    }
}

/// `routing-scheduler`: the scheduler name and `fifo.priority` references.
fn check_scheduler(top: &serde_json::Map<String, Value>, names: &Names, r: &mut Report) {
    let scheduler = top.get("routing").and_then(|x| x.get("scheduler"));
    if let Some(u) = scheduler.and_then(|s| s.get("use")).and_then(Value::as_str) {
        if !u.is_empty() && u != "fifo" {
            r.error(
                &p(&["routing", "scheduler", "use"]),
                "routing-scheduler",
                format!("routing.scheduler.use: unknown scheduler {u:?} (valid: fifo)"),
            );
        }
    }
    if let Some(prio) = obj(scheduler
        .and_then(|s| s.get("settings"))
        .and_then(|s| s.get("fifo"))
        .and_then(|f| f.get("priority")))
    {
        for k in prio.keys() {
            if !names.resolves(k) {
                r.error_at_key(
                    &p(&["routing", "scheduler", "settings", "fifo", "priority", k]),
                    "routing-scheduler",
                    format!(
                        "routing.scheduler.settings.fifo.priority references unknown model {k:?}"
                    ),
                );
            }
        }
    }
}

/// `preload-unknown` (warning).
fn check_hooks(top: &serde_json::Map<String, Value>, names: &Names, r: &mut Report) {
    for (i, m) in strs(
        top.get("hooks")
            .and_then(|h| h.get("on_startup"))
            .and_then(|o| o.get("preload")),
    ) {
        if !m.trim().is_empty() && !names.resolves(m.trim()) {
            r.warn(
                &[p(&["hooks", "on_startup", "preload"]), vec![Seg::Index(i)]].concat(),
                "preload-unknown",
                format!("preload entry {m:?} names no model or alias; llama-swap skips it"),
            );
        }
    }
}

/// `api-keys`.
fn check_api_keys(top: &serde_json::Map<String, Value>, r: &mut Report) {
    let Some(keys) = top.get("apiKeys").and_then(Value::as_array) else {
        return;
    };
    for (i, k) in keys.iter().enumerate() {
        let at = with(&p(&["apiKeys"]), Seg::Index(i));
        match k.as_str() {
            Some("") => r.error(&at, "api-keys", "empty api key found in apiKeys"),
            Some(s) if s.contains(' ') => r.error(
                &at,
                "api-keys",
                format!("apiKeys[{i}]: api key cannot contain spaces"),
            ),
            _ => {}
        }
    }
}

/// `peer`. Returns the model names peers serve (`m` and `peer/m`).
fn check_peers(top: &serde_json::Map<String, Value>, r: &mut Report) -> HashSet<String> {
    let Some(peers) = obj(top.get("peers")) else {
        return HashSet::new();
    };
    let mut peer_models: HashSet<String> = HashSet::new();
    for (pid, peer) in peers {
        let pp = p(&["peers", pid]);
        match peer.get("proxy").and_then(Value::as_str) {
            None | Some("") => r.error(&pp, "peer", format!("peers.{pid}: proxy is required")),
            Some(u) => {
                if let Some(why) = url_error(u) {
                    r.error(
                        &with(&pp, Seg::Key("proxy".into())),
                        "peer",
                        format!("peers.{pid}: invalid peer proxy URL ({u}): {why}"),
                    );
                }
            }
        }
        let pm: Vec<(usize, &str)> = strs(peer.get("models")).collect();
        if pm.is_empty() {
            r.error(
                &pp,
                "peer",
                format!("peers.{pid}: peer models can not be empty"),
            );
        }
        for (_, m) in pm {
            peer_models.insert(m.to_string());
            peer_models.insert(format!("{pid}/{m}"));
        }
    }
    peer_models
}

/// `selector`: names, strategy, targets (no chaining).
fn check_selectors(
    selectors: &serde_json::Map<String, Value>,
    names: &Names,
    peer_models: &HashSet<String>,
    r: &mut Report,
) {
    for (sid, s) in selectors {
        let sp = p(&["selectors", sid]);
        if sid.trim().is_empty() {
            r.error_at_key(&sp, "selector", "selectors: selector names cannot be empty");
        }
        if names.resolves(sid) {
            r.error_at_key(
                &sp,
                "selector",
                format!("selectors.{sid}: name conflicts with a model ID or alias"),
            );
        }
        match s.get("strategy").and_then(Value::as_str).unwrap_or("") {
            "" => r.error(&sp, "selector", format!("selectors.{sid}.strategy is required")),
            "warm" | "pin" | "spillover" => {}
            other => r.error(&with(&sp, Seg::Key("strategy".into())), "selector", format!("selectors.{sid}.strategy: unknown strategy {other:?} (valid: warm, pin, spillover)")),
        }
        let targets: Vec<(usize, &str)> = strs(s.get("targets")).collect();
        if targets.is_empty() {
            r.error(
                &sp,
                "selector",
                format!("selectors.{sid}.targets must contain at least one entry"),
            );
        }
        for (i, t) in targets {
            let at = [sp.clone(), p(&["targets"]), vec![Seg::Index(i)]].concat();
            if selectors.contains_key(t) {
                r.error(&at, "selector", format!("selectors.{sid}.targets[{i}] references selector {t:?}; selector chaining is not supported"));
            } else if !names.resolves(t) && !peer_models.contains(t) {
                r.error(
                    &at,
                    "selector",
                    format!("selectors.{sid}.targets[{i}] references unknown model {t:?}"),
                );
            }
        }
    }
}

/// `profile`: names, at least one pin, pin names and targets.
fn check_profiles(
    top: &serde_json::Map<String, Value>,
    names: &Names,
    peer_models: &HashSet<String>,
    selectors: &serde_json::Map<String, Value>,
    r: &mut Report,
) {
    let Some(profiles) = top.get("profiles").and_then(Value::as_object) else {
        return;
    };
    for (name, prof) in profiles {
        let pp = p(&["profiles", name]);
        if name.trim().is_empty() {
            r.error_at_key(&pp, "profile", "profiles: profile names cannot be empty");
        }
        let Some(pins) = prof
            .get("pins")
            .and_then(Value::as_object)
            .filter(|p| !p.is_empty())
        else {
            r.error(
                &pp,
                "profile",
                format!("profiles.{name}.pins must contain at least one entry"),
            );
            continue;
        };
        for (pin, target) in pins {
            let at = [pp.clone(), p(&["pins", pin])].concat();
            if pin.trim().is_empty() {
                r.error_at_key(
                    &at,
                    "profile",
                    format!("profiles.{name}.pins: pin names cannot be empty"),
                );
            }
            let t = target.as_str().unwrap_or("");
            if !t.is_empty()
                && !names.resolves(t)
                && !peer_models.contains(t)
                && !selectors.contains_key(t)
            {
                r.error(
                    &at,
                    "profile",
                    format!("profiles.{name}.pins.{pin} references unknown model {t:?}"),
                );
            }
        }
    }
}

/// `matrix`: at least one set, `vars`, `evict_costs`, set expressions.
fn check_matrix(mx: &Value, mp: &[Seg], models: &dyn Ids, r: &mut Report) {
    let vars: BTreeMap<String, String> = obj(mx.get("vars"))
        .map(|v| {
            v.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let known = |ident: &str| vars.contains_key(ident) || models.has(ident);
    let empty = serde_json::Map::new();
    let sets = obj(mx.get("sets")).unwrap_or(&empty);
    if sets.is_empty() {
        r.error(mp, "matrix", "matrix: matrix must define at least one set");
        return;
    }
    for (k, model) in &vars {
        let at = [mp.to_vec(), p(&["vars", k])].concat();
        let key_ok = !k.is_empty()
            && k.len() <= 32
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !key_ok {
            r.error_at_key(&at, "matrix", format!("matrix: var key {k:?} must contain only alphanumeric, '-' or '.' characters and be 1-32 characters long"));
        } else if !models.has(model) {
            r.error(
                &at,
                "matrix",
                format!("matrix: var key {k:?} references unknown model {model:?}"),
            );
        }
    }
    if let Some(costs) = obj(mx.get("evict_costs")) {
        for (k, c) in costs {
            let at = [mp.to_vec(), p(&["evict_costs", k])].concat();
            if c.as_i64().is_some_and(|c| c <= 0) {
                r.error(
                    &at,
                    "matrix",
                    format!("matrix: evict_cost for {k:?} must be a positive integer"),
                );
            } else if !known(k) {
                r.error_at_key(
                    &at,
                    "matrix",
                    format!("matrix: evict_costs: unknown var or model {k:?}"),
                );
            }
        }
    }
    // The set DSL is approximated: every identifier must be a var or a model.
    for (name, dsl) in sets {
        let Some(dsl) = dsl.as_str() else { continue };
        for ident in dsl.split(|c: char| {
            !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '/'))
        }) {
            if !ident.is_empty() && !known(ident) && !sets.contains_key(ident) {
                r.error(
                    &[mp.to_vec(), p(&["sets", name])].concat(),
                    "matrix",
                    format!("matrix: set {name:?} references unknown var or model {ident:?}"),
                );
                break;
            }
        }
    }
}

/// `peer-name-reserved` (the server, building its peer router): every
/// `peer/model` name is reserved; two peers may not spell the same one, and
/// no model id, alias, selector or profile pin may take it.
fn check_peer_namespace(
    top: &serde_json::Map<String, Value>,
    names: &Names,
    selectors: &serde_json::Map<String, Value>,
    r: &mut Report,
) {
    let Some(peers) = obj(top.get("peers")) else {
        return;
    };
    let mut pids: Vec<&String> = peers.keys().collect();
    pids.sort();
    // Full name -> (peer, model) that first claimed it.
    let mut claimed: HashMap<String, (&str, &str)> = HashMap::new();
    let pins: Vec<(&String, &String)> = obj(top.get("profiles"))
        .into_iter()
        .flatten()
        .flat_map(|(name, prof)| {
            obj(prof.get("pins"))
                .into_iter()
                .flatten()
                .map(move |(pin, _)| (name, pin))
        })
        .collect();
    let pinned: HashMap<&str, &str> = pins.iter().map(|(n, p)| (p.as_str(), n.as_str())).collect();
    for pid in pids {
        let mut seen = HashSet::new();
        for (i, model) in strs(peers.get(pid.as_str()).and_then(|p| p.get("models"))) {
            if !seen.insert(model) {
                continue;
            }
            let at = [p(&["peers", pid, "models"]), vec![Seg::Index(i)]].concat();
            let fqn = format!("{pid}/{model}");
            if let Some((other, other_model)) = claimed.get(&fqn) {
                r.error(&at, "peer-name-reserved", format!("peer model name {fqn:?} is ambiguous between peers.{other} model {other_model:?} and peers.{pid} model {model:?}"));
                continue;
            }
            let conflict = if names.models.has(&fqn) {
                Some(format!("model ID {fqn:?}"))
            } else if let Some(owner) = names.aliases.get(fqn.as_str()) {
                Some(format!("model {owner} alias {fqn:?}"))
            } else if selectors.contains_key(&fqn) {
                Some(format!("selector ID {fqn:?}"))
            } else {
                pinned
                    .get(fqn.as_str())
                    .map(|prof| format!("profile {prof} pin {fqn:?}"))
            };
            if let Some(what) = conflict {
                r.error(
                    &at,
                    "peer-name-reserved",
                    format!("{what} conflicts with fully qualified peer model name (peers.{pid} serves {model:?})"),
                );
            }
            claimed.insert(fqn, (pid.as_str(), model));
        }
    }
}
