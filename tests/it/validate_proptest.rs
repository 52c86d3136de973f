//! Generated configs with mutations whose verdicts follow llama-swap's
//! loader rules (read from its `internal/config`): `${PORT}` in proxy needs
//! it in cmd, `ttl` below -1 is rejected, an alias may be used once, and a
//! model may appear once per group and in one group only.

use proptest::prelude::*;
use swapcfg::validate::Validator;

#[derive(Debug, Clone)]
struct Model {
    cmd_port: bool,
    proxy: Option<bool>, // None = default proxy (uses ${PORT}); Some(true) = explicit ${PORT}
    ttl: Option<i64>,
    aliases: Vec<u8>,
}

fn model() -> impl Strategy<Value = Model> {
    (
        any::<bool>(),
        prop::option::of(any::<bool>()),
        prop::option::of(-3i64..400),
        prop::collection::vec(0u8..6, 0..3),
    )
        .prop_map(|(cmd_port, proxy, ttl, aliases)| Model {
            cmd_port,
            proxy,
            ttl,
            aliases,
        })
}

fn render(models: &[Model], groups: &[Vec<usize>]) -> String {
    let mut s = String::from("models:\n");
    for (i, m) in models.iter().enumerate() {
        s.push_str(&format!(
            "  m{i}:\n    cmd: llama-server {}-m /x{i}.gguf\n",
            if m.cmd_port {
                "--port ${PORT} "
            } else {
                "--port 9000 "
            }
        ));
        match m.proxy {
            Some(true) => s.push_str("    proxy: http://127.0.0.1:${PORT}\n"),
            Some(false) => s.push_str(&format!("    proxy: http://127.0.0.1:{}\n", 9000 + i)),
            None => {}
        }
        if let Some(t) = m.ttl {
            s.push_str(&format!("    ttl: {t}\n"));
        }
        if !m.aliases.is_empty() {
            let a: Vec<String> = m.aliases.iter().map(|a| format!("alias{a}")).collect();
            s.push_str(&format!("    aliases: [{}]\n", a.join(", ")));
        }
    }
    if !groups.is_empty() {
        s.push_str("groups:\n");
        for (g, members) in groups.iter().enumerate() {
            let names: Vec<String> = members.iter().map(|m| format!("m{m}")).collect();
            s.push_str(&format!("  g{g}:\n    members: [{}]\n", names.join(", ")));
        }
    }
    s
}

fn expected_valid(models: &[Model], groups: &[Vec<usize>]) -> bool {
    let port_ok = models.iter().all(|m| m.cmd_port || m.proxy == Some(false));
    let ttl_ok = models.iter().all(|m| m.ttl.is_none_or(|t| t >= -1));
    let mut aliases: Vec<u8> = models.iter().flat_map(|m| m.aliases.clone()).collect();
    let n = aliases.len();
    aliases.sort();
    aliases.dedup();
    let alias_ok = aliases.len() == n;
    let mut members: Vec<usize> = groups.iter().flatten().copied().collect();
    let n = members.len();
    members.sort();
    members.dedup();
    let groups_ok = members.len() == n;
    port_ok && ttl_ok && alias_ok && groups_ok
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn verdicts_follow_the_loader_rules(
        models in prop::collection::vec(model(), 1..6),
        groups in prop::collection::vec(prop::collection::vec(0usize..6, 0..3), 0..3),
    ) {
        let groups: Vec<Vec<usize>> = groups.into_iter().map(|g| g.into_iter().filter(|m| *m < models.len()).collect()).collect();
        let src = render(&models, &groups);
        let out = Validator::embedded().validate(src.as_bytes());
        prop_assert_eq!(out.is_valid(), expected_valid(&models, &groups), "{}\n{:?}", src, out.findings);
        for f in &out.findings {
            prop_assert!(f.line >= 1 && f.line <= src.lines().count() + 1, "position inside the file: {:?}", f);
        }
    }
}

/// Model fields, valid and not, for [`whole_document_and_per_model_agree`].
const FIELDS: &[&str] = &[
    "cmd: run --port ${PORT} ${MODEL_ID}",
    "cmd: run ${g} ${own}",
    "cmd: |\n      # comment\n      run ${g} --port ${PORT}",
    "cmd: ${n}",
    "cmdStop: kill ${PID} ${nope}",
    "proxy: http://127.0.0.1:${PORT}",
    "proxy: 'h:1'",
    "proxy: http://h:9",
    "ttl: -3",
    "ttl: x",
    "ttl: ${n}",
    "unlisted: yes",
    "aliases: [al1]",
    "aliases: [al1, al2, al1]",
    "aliases: [${MODEL_ID}-a]",
    "filters: {setParamsByID: {al2: {}, '${MODEL_ID}-p': {}}}",
    "filters: {setParamsByID: {m3: {}}}",
    "filters: {setParamsByID: {'${zz}': {}}}",
    "macros: {own: o}",
    "macros: {PORT: 1}",
    "env: ['A=${env.HOME}']",
    "<<: *d",
    "capabilities: {in: [text, video], context: -1}",
    "bogus: 1",
    "name: ${g}",
];

const TOPS: &[&str] = &[
    "macros: {g: G, n: 5}",
    "macros: {g: G, n: 5, 'bad name': 1}",
    "startPort: 100",
    "startPort: x",
    "healthCheckTimeout: 3",
    "logLevel: 5",
    "x-d: &d {ttl: -2, unlisted: 'on'}",
    "hooks: {on_startup: {preload: [m1, nope, '${g}']}}",
    "selectors: {s: {strategy: warm, targets: [m2, al1, nope]}}",
    "peers: {p: {proxy: 'http://p:1', models: [m1]}}",
    "modles: {}",
];

fn config() -> impl Strategy<Value = String> {
    // Mostly with a fixed proxy, so that most configs expand.
    let model = (prop::sample::subsequence(FIELDS, 0..5), 0..8u8);
    let ids = prop::sample::subsequence(&["m1", "m2", "m3", "b", "a0", "z", "${env.ID}"][..], 1..7)
        .prop_shuffle();
    (
        prop::sample::subsequence(TOPS, 0..6).prop_shuffle(),
        ids.prop_flat_map(move |ids| {
            let n = ids.len();
            (Just(ids), prop::collection::vec(model.clone(), n))
        }),
        prop::collection::vec(0usize..7, 0..5),
        any::<bool>(),
    )
        .prop_map(|(tops, (ids, models), members, models_first)| {
            let anchored = tops.iter().any(|t| t.contains("&d"));
            let mut top = String::new();
            for t in &tops {
                top.push_str(t);
                top.push('\n');
            }
            let mut s = String::from("models:\n");
            for (id, (fields, fixed)) in ids.iter().zip(&models) {
                s.push_str(&format!("  {id}:\n"));
                let mut seen = Vec::new();
                let mut fields = fields.clone();
                if *fixed > 0 {
                    fields.push("proxy: http://h:9");
                }
                for f in &fields {
                    let key = f.split(':').next().unwrap_or("");
                    if seen.contains(&key) || (*f == "<<: *d" && !anchored) {
                        continue;
                    }
                    seen.push(key);
                    s.push_str(&format!("    {f}\n"));
                }
            }
            let list: Vec<&str> = members
                .iter()
                .filter_map(|&m| ids.get(m).copied())
                .collect();
            s.push_str(&format!(
                "groups:\n  g1: {{members: [{}]}}\n",
                list.join(", ")
            ));
            // The anchor must come before its use.
            if models_first && !anchored {
                s + &top
            } else {
                top + &s
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Validation one model at a time gives the whole-document path's
    /// findings, in its order (expansion stops, merge-key positions,
    /// `${PORT}` numbering in sorted-id order, cross-model rules).
    #[test]
    fn whole_document_and_per_model_agree(src in config()) {
        let v = Validator::embedded();
        let per_model = v.validate(src.as_bytes());
        let whole = v.validate_whole_document(src.as_bytes());
        prop_assert_eq!(&per_model.findings, &whole.findings, "{}", src);
        prop_assert_eq!(&per_model.listed_models, &whole.listed_models, "{}", src);
    }
}
