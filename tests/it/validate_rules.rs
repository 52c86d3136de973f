//! One minimal config per validation rule: the rule, its path and its
//! line:column are asserted, plus the YAML layer and the CLI contract.

use swapcfg::validate::{Severity, Validator};

const OK_MODEL: &str = "models:\n  m:\n    cmd: llama-server --port ${PORT}\n";

/// (config, rule, path, line, column, severity)
const CASES: &[(&str, &str, &str, usize, usize, Severity)] = &[
    // YAML layer
    ("a: 1\na: 2\n", "yaml-duplicate-key", "$", 2, 1, Severity::Error),
    ("- 1\n- 2\n", "yaml-top-level", "$", 1, 1, Severity::Error),
    ("models:\n\tm: {}\n", "yaml-tabs", "$", 2, 1, Severity::Error),
    ("a: 1\n---\nb: 2\n", "yaml-multiple-documents", "$", 2, 1, Severity::Error),
    ("models: [1, 2\n", "yaml-syntax", "$", 2, 1, Severity::Error),
    // Macros
    ("macros:\n  PORT: 1\nmodels: {}\n", "macro-reserved", "$.macros.PORT", 2, 3, Severity::Error),
    ("macros:\n  \"bad name\": 1\n", "macro-name", "$.macros[\"bad name\"]", 2, 3, Severity::Error),
    ("macros:\n  a: \"x ${a}\"\n", "macro-self-reference", "$.macros.a", 2, 6, Severity::Error),
    ("macros:\n  a: [1]\n", "macro-type", "$.macros.a", 2, 6, Severity::Error),
    ("models:\n  m:\n    cmd: run ${nope} --port ${PORT}\n", "unknown-macro", "$.models.m.cmd", 3, 10, Severity::Error),
    ("models:\n  m:\n    cmd: run\n    proxy: http://h:${PORT}\n", "proxy-port-without-cmd", "$.models.m.proxy", 4, 12, Severity::Error),
    ("models:\n  m:\n    cmd: run\n", "proxy-port-without-cmd", "$.models.m.proxy", 3, 5, Severity::Error),
    ("startPort: 0\nmodels: {}\n", "start-port", "$.startPort", 1, 12, Severity::Error),
    ("models:\n  m: 900\n", "model-not-mapping", "$.models.m", 2, 6, Severity::Error),
    // Schema (types as Go decodes them)
    ("models:\n  m:\n    cmd: run --port ${PORT}\n    ttl: soon\n", "schema", "$.models.m.ttl", 4, 10, Severity::Error),
    ("profiles:\n  p: [a, b]\n", "schema", "$.profiles.p", 2, 6, Severity::Error),
    // Semantic rules
    ("globalTTL: -5\n", "global-ttl", "$.globalTTL", 1, 12, Severity::Error),
    ("unloadTimeout: -1\n", "unload-timeout", "$.unloadTimeout", 1, 16, Severity::Error),
    ("logToStdout: sometimes\n", "log-to-stdout", "$.logToStdout", 1, 14, Severity::Error),
    ("performance:\n  every: 1s\n", "performance-every", "$.performance.every", 2, 10, Severity::Error),
    ("upstream:\n  ignorePaths: [\"(unclosed\"]\n", "upstream-ignore-path", "$.upstream.ignorePaths[0]", 2, 17, Severity::Error),
    ("models:\n  a:\n    cmd: x --port ${PORT}\n    aliases: [z]\n  b:\n    cmd: y --port ${PORT}\n    aliases: [z]\n", "duplicate-alias", "$.models.b.aliases[0]", 7, 15, Severity::Error),
    ("models:\n  m:\n    cmd: x --port ${PORT}\n    ttl: -2\n", "model-ttl", "$.models.m.ttl", 4, 10, Severity::Error),
    ("models:\n  m:\n    cmd: x --port ${PORT}\n    unloadTimeout: -1\n", "model-unload-timeout", "$.models.m.unloadTimeout", 4, 20, Severity::Error),
    ("models:\n  m:\n    cmd: x --port ${PORT}\n    capabilities:\n      in: [video]\n", "capabilities", "$.models.m.capabilities.in[0]", 5, 12, Severity::Error),
    ("models:\n  m:\n    cmd: x\n    proxy: \"http://h:po/\"\n", "proxy-url", "$.models.m.proxy", 4, 12, Severity::Error),
    ("models:\n  a:\n    cmd: x --port ${PORT}\n  b:\n    cmd: y --port ${PORT}\n    filters:\n      setParamsByID:\n        a: {x: 1}\n", "set-params-by-id", "$.models.b.filters.setParamsByID.a", 8, 9, Severity::Error),
    ("models:\n  a:\n    cmd: x --port ${PORT}\ngroups:\n  g:\n    members: [a]\nmatrix:\n  sets:\n    s: a\n", "groups-and-matrix", "$.groups", 5, 3, Severity::Error),
    ("models:\n  a:\n    cmd: x --port ${PORT}\ngroups:\n  g:\n    members: [a, a]\n", "group-duplicate-member", "$.groups.g.members[1]", 6, 18, Severity::Error),
    ("models:\n  a:\n    cmd: x --port ${PORT}\ngroups:\n  g:\n    members: [a]\n  h:\n    members: [a]\n", "group-member-reused", "$.groups.h.members[0]", 8, 15, Severity::Error),
    ("models:\n  a:\n    cmd: x --port ${PORT}\ngroups:\n  g:\n    members: [ghost]\n", "group-member-unknown", "$.groups.g.members[0]", 6, 15, Severity::Error),
    ("models:\n  a:\n    cmd: x --port ${PORT}\nrouting:\n  router:\n    settings:\n      groups:\n        g:\n          members: [a, ghost]\n", "group-member-unknown", "$.routing.router.settings.groups.g.members[1]", 9, 24, Severity::Error),
    ("models:\n  a:\n    cmd: x --port ${PORT}\nmatrix:\n  sets: {}\n", "matrix", "$.matrix", 5, 3, Severity::Error),
    ("models:\n  a:\n    cmd: x --port ${PORT}\nmatrix:\n  vars:\n    v: nope\n  sets:\n    s: v\n", "matrix", "$.matrix.vars.v", 6, 8, Severity::Error),
    ("groups:\n  g:\n    members: []\nrouting:\n  router:\n    use: group\n", "routing-conflict", "$.routing.router", 6, 5, Severity::Error),
    ("routing:\n  router:\n    use: random\n", "routing-router", "$.routing.router.use", 3, 10, Severity::Error),
    ("routing:\n  scheduler:\n    use: lifo\n", "routing-scheduler", "$.routing.scheduler.use", 3, 10, Severity::Error),
    ("apiKeys: [\"\"]\n", "api-keys", "$.apiKeys[0]", 1, 11, Severity::Error),
    ("apiKeys: [\"a b\"]\n", "api-keys", "$.apiKeys[0]", 1, 11, Severity::Error),
    ("peers:\n  p:\n    proxy: http://h\n    models: []\n", "peer", "$.peers.p", 3, 5, Severity::Error),
    ("models:\n  p/m:\n    cmd: x --port ${PORT}\npeers:\n  p:\n    proxy: http://h\n    models: [m]\n", "peer-name-reserved", "$.peers.p.models[0]", 7, 14, Severity::Error),
    ("peers:\n  a/b:\n    proxy: http://h\n    models: [c]\n  a:\n    proxy: http://h\n    models: [b/c]\n", "peer-name-reserved", "$.peers[\"a/b\"].models[0]", 4, 14, Severity::Error),
    ("selectors:\n  s:\n    targets: [x]\n", "selector", "$.selectors.s", 3, 5, Severity::Error),
    ("models:\n  a:\n    cmd: x --port ${PORT}\nprofiles:\n  p:\n    pins:\n      main: ghost\n", "profile", "$.profiles.p.pins.main", 7, 13, Severity::Error),
    // Warnings (exit status stays 0)
    ("models:\n  m:\n    cmdd: x\n    cmd: x --port ${PORT}\n", "unknown-key", "$.models.m.cmdd", 3, 5, Severity::Warning),
    ("modles: {}\n", "unknown-key", "$.modles", 1, 1, Severity::Warning),
    ("models:\n  a:\n    cmd: x --port ${PORT}\nhooks:\n  on_startup:\n    preload: [ghost]\n", "preload-unknown", "$.hooks.on_startup.preload[0]", 6, 15, Severity::Warning),
    ("models:\n  m:\n    cmd: x --port ${PORT} --key ${env.HF_TOKEN}\n", "env-macro", "$.models.m.cmd", 3, 5, Severity::Warning),
    ("healthCheckTimeout: 5\n", "health-check-timeout", "$.healthCheckTimeout", 1, 1, Severity::Warning),
    ("store:\n  path: /var/lib/ls\n", "store-path", "$.store.path", 2, 3, Severity::Warning),
];

#[test]
fn every_rule_has_a_minimal_failing_config() {
    let v = Validator::embedded();
    let mut failures = Vec::new();
    for (src, rule, path, line, col, sev) in CASES {
        let out = v.validate(src.as_bytes());
        let hit = out.findings.iter().find(|f| f.rule == *rule);
        match hit {
            Some(f)
                if f.path == *path && f.line == *line && f.column == *col && f.severity == *sev =>
            {
                assert_eq!(out.is_valid(), *sev == Severity::Warning, "{rule}: verdict");
            }
            _ => failures.push(format!(
                "{rule} in {src:?}: expected {path} {line}:{col} {sev:?}, got {:?}",
                out.findings
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn valid_config_has_no_findings_and_lists_models() {
    let src = format!("{OK_MODEL}  hidden:\n    cmd: y --port ${{PORT}}\n    unlisted: true\n");
    let out = Validator::embedded().validate(src.as_bytes());
    assert!(out.findings.is_empty(), "{:?}", out.findings);
    assert_eq!(out.listed_models, vec!["m".to_string()]);
}

#[test]
fn anchors_and_merge_keys_are_resolved_like_the_loader() {
    let src = "x-base: &base\n  ttl: 300\n  cmd: srv --port ${PORT}\nmodels:\n  a:\n    <<: *base\n  b:\n    <<: *base\n    ttl: -7\n";
    let out = Validator::embedded().validate(src.as_bytes());
    let ttl: Vec<_> = out
        .findings
        .iter()
        .filter(|f| f.rule == "model-ttl")
        .collect();
    assert_eq!(ttl.len(), 1, "{:?}", out.findings);
    assert_eq!((ttl[0].path.as_str(), ttl[0].line), ("$.models.b.ttl", 9));
    // x-base is not a llama-swap key: a warning, not an error.
    let errors: Vec<_> = out
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| f.rule.as_str())
        .collect();
    assert_eq!(errors, vec!["model-ttl"]);
    assert!(
        out.findings
            .iter()
            .any(|f| f.rule == "unknown-key" && f.path == "$[\"x-base\"]"),
        "{:?}",
        out.findings
    );
}

#[test]
fn macros_expand_in_declaration_order_and_keep_types() {
    // `ctx` is an integer macro used as a whole value: it stays an integer.
    let src = "macros:\n  ctx: 8192\n  bin: /opt/llama\n  srv: ${bin}/server\nmodels:\n  m:\n    cmd: ${srv} -c ${ctx} --port ${PORT}\n    capabilities:\n      context: ${ctx}\n";
    let out = Validator::embedded().validate(src.as_bytes());
    assert!(out.is_valid(), "{:?}", out.findings);
    // A macro may not use one declared after it (the loader applies the list last-first).
    let bad = "macros:\n  srv: ${bin}/server\n  bin: /opt/llama\nmodels:\n  m:\n    cmd: ${srv} --port ${PORT}\n";
    let out = Validator::embedded().validate(bad.as_bytes());
    assert!(
        out.findings
            .iter()
            .any(|f| f.rule == "unknown-macro" && f.message.contains("${bin}")),
        "{:?}",
        out.findings
    );
}

#[test]
fn billion_laughs_is_refused_quickly() {
    let mut s = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        s.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n",
            p = i - 1
        ));
    }
    let out = Validator::embedded().validate(s.as_bytes());
    assert_eq!(
        out.findings.first().map(|f| f.rule.as_str()),
        Some("yaml-limit")
    );
    let big = vec![b'#'; swapcfg::validate::MAX_FILE + 1];
    assert_eq!(
        Validator::embedded().validate(&big).findings[0].rule,
        "file-too-large"
    );
}

#[test]
fn cli_prints_file_line_col_and_exit_codes() {
    let dir = tempfile::tempdir().expect("tmp");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "globalTTL: -5\nmodels:\n  a:\n    cmd: a --port ${PORT}\n",
    )
    .expect("write");
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, OK_MODEL).expect("write");
    let bin = env!("CARGO_BIN_EXE_swapcfg");
    let out = std::process::Command::new(bin)
        .arg("validate")
        .arg(&good)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    let out = std::process::Command::new(bin)
        .arg("validate")
        .arg(&good)
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{}:1:12: error: $.globalTTL: ", bad.display())),
        "{text}"
    );
    assert!(text.contains("1 valid, 1 invalid"), "{text}");
    assert!(!text.contains('\x1b'), "no color when piped");
    let out = std::process::Command::new(bin)
        .args(["validate", "--json"])
        .arg(&bad)
        .output()
        .expect("run");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v[0]["rule"], "global-ttl");
    assert_eq!(v[0]["line"], 1);
    assert_eq!(v[0]["column"], 12);
    assert_eq!(v[0]["severity"], "error");
    let out = std::process::Command::new(bin)
        .arg("validate")
        .arg(dir.path().join("missing.yaml"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_config_without_models_is_valid_with_a_no_models_warning() {
    let v = Validator::embedded();
    for (src, line) in [
        ("healthCheckTimeout: 120\n", 1),
        ("logLevel: info\nmodels: {}\n", 2),
    ] {
        let out = v.validate(src.as_bytes());
        assert!(out.is_valid(), "{src}");
        let w: Vec<_> = out
            .findings
            .iter()
            .filter(|f| f.rule == "no-models")
            .collect();
        assert_eq!(w.len(), 1, "{src}: {:?}", out.findings);
        assert_eq!((w[0].severity, w[0].line), (Severity::Warning, line));
    }
    let out = v.validate(b"models:\n  a:\n    cmd: a --port ${PORT}\n");
    assert!(out.findings.iter().all(|f| f.rule != "no-models"));
}

/// What llama-swap's server (not only its loader) accepts and refuses at
/// start (SERVER.md): group members are looked up as model ids or aliases,
/// YAML 1.1 booleans decode into Go bools, proxies go through Go's
/// `url.Parse`, `${env.NAME}` counts in mapping keys.
#[test]
fn server_start_rules() {
    let v = Validator::embedded();
    let rules = |src: &str| -> Vec<(String, Severity, usize, usize)> {
        v.validate(src.as_bytes())
            .findings
            .into_iter()
            .filter(|f| f.rule != "no-models")
            .map(|f| (f.rule, f.severity, f.line, f.column))
            .collect()
    };
    // An alias (or a setParamsByID key) as a member: accepted, no warning.
    let alias = "models:\n  a:\n    cmd: x --port ${PORT}\n    aliases: [al]\n    filters:\n      setParamsByID:\n        byid: {t: 1}\ngroups:\n  g:\n    members: [al, byid]\n";
    assert_eq!(rules(alias), vec![]);
    let routed = "models:\n  a:\n    cmd: x --port ${PORT}\n    aliases: [al]\nrouting:\n  router:\n    settings:\n      groups:\n        g:\n          members: [al]\n";
    assert_eq!(rules(routed), vec![]);
    // Groups of the router not in use are not built.
    let unused = "models:\n  a:\n    cmd: x --port ${PORT}\nrouting:\n  router:\n    use: matrix\n    settings:\n      matrix:\n        sets:\n          s: a\n      groups:\n        g:\n          members: [ghost]\n";
    assert!(
        v.validate(unused.as_bytes()).is_valid(),
        "{:?}",
        rules(unused)
    );

    // Booleans as yaml.v3 decodes them into a bool field.
    for word in [
        "yes", "Yes", "YES", "on", "On", "y", "Y", "\"yes\"", "no", "off", "N",
    ] {
        let src = format!("sendLoadingState: {word}\nmodels:\n  a:\n    cmd: x --port ${{PORT}}\n    unlisted: {word}\ngroups:\n  g:\n    swap: {word}\n    members: [a]\n");
        let out = v.validate(src.as_bytes());
        assert!(out.findings.is_empty(), "{word}: {:?}", out.findings);
        let hidden = matches!(
            word,
            "yes" | "Yes" | "YES" | "on" | "On" | "y" | "Y" | "\"yes\""
        );
        assert_eq!(out.listed_models.is_empty(), hidden, "{word}");
    }
    for word in ["\"true\"", "yess", "1", "enabled"] {
        let src = format!("models:\n  a:\n    cmd: x --port ${{PORT}}\n    unlisted: {word}\n");
        assert_eq!(
            rules(&src),
            vec![("schema".to_string(), Severity::Error, 4, 15)],
            "{word}"
        );
    }

    // Proxies as Go's url.Parse judges them, model and peer.
    let out = v.validate(b"models:\n  a:\n    cmd: x\n    proxy: \"127.0.0.1:9000\"\n");
    let f = &out.findings[0];
    assert_eq!((f.rule.as_str(), f.line, f.column), ("proxy-url", 4, 12));
    assert!(
        f.message
            .contains("first path segment in URL cannot contain colon"),
        "{}",
        f.message
    );
    assert!(v
        .validate(b"models:\n  a:\n    cmd: x\n    proxy: \"localhost:9000\"\n")
        .is_valid());
    let peer = "peers:\n  p:\n    proxy: \"10.0.0.2:8080\"\n    models: [m]\n";
    assert_eq!(
        rules(peer),
        vec![("peer".to_string(), Severity::Error, 3, 12)]
    );
    // A peer's proxy is checked as written: macros do not reach it.
    let peer = "macros:\n  h: example.org\npeers:\n  p:\n    proxy: \"http://${h}:8080\"\n    models: [m]\n";
    assert_eq!(
        rules(peer),
        vec![("peer".to_string(), Severity::Error, 5, 12)]
    );
    // `${env.NAME}` is left to the host, in values and in keys.
    let env = "models:\n  ${env.MODEL}:\n    cmd: x --port ${PORT}\n    proxy: \"http://${env.HOST}:${PORT}\"\n";
    assert_eq!(
        rules(env),
        vec![
            ("env-macro".to_string(), Severity::Warning, 2, 3),
            ("env-macro".to_string(), Severity::Warning, 4, 5),
        ]
    );
}
