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
