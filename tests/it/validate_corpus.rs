//! Conformance with real users' configs and llama-swap's own examples, read
//! from `../shared/llama-swap/` (skipped with a message where absent).
//!
//! * Embedded schema: swapcfg's verdict equals the real server's (`starts`
//!   in CHECKS.tsv: does llama-swap start with the file — loader plus
//!   server creation) on every row that is not host-dependent.
//! * `--schema upstream/config-schema.json`: the schema layer accepts a file
//!   exactly when upstream's schema accepts it after macro expansion
//!   (`schema_after_expansion`); where expansion itself fails (`-`), the
//!   file is rejected.

use std::path::PathBuf;

use swapcfg::validate::Validator;

fn shared() -> Option<PathBuf> {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/llama-swap"));
    if p.join("CHECKS.tsv").exists() {
        Some(p)
    } else {
        eprintln!("skipping corpus conformance: {} not found", p.display());
        None
    }
}

/// (path, schema_after_expansion, starts) per CHECKS.tsv row.
fn rows(dir: &std::path::Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(dir.join("CHECKS.tsv")).expect("CHECKS.tsv");
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            Some((
                c.first()?.to_string(),
                c.get(3)?.to_string(),
                c.get(13)?.to_string(),
            ))
        })
        .collect()
}

#[test]
fn embedded_schema_verdicts_match_the_server_start() {
    let Some(dir) = shared() else { return };
    let v = Validator::embedded();
    let mut checked = 0;
    let mut mismatches = Vec::new();
    for (path, _, starts) in rows(&dir) {
        if starts != "valid" && starts != "invalid" {
            continue; // host-dependent (store.path)
        }
        let bytes = std::fs::read(dir.join(&path)).expect("corpus file");
        let out = v.validate(&bytes);
        checked += 1;
        if out.is_valid() != (starts == "valid") {
            mismatches.push(format!(
                "{path}: server {starts}, swapcfg {:?}",
                out.findings
            ));
        }
    }
    eprintln!(
        "corpus: {checked} rows checked, {} mismatches",
        mismatches.len()
    );
    assert!(checked >= 78, "only {checked} rows checked");
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn upstream_examples_are_rejected_by_the_loader_rules_but_fit_the_embedded_schema() {
    let Some(dir) = shared() else { return };
    let v = Validator::embedded();
    for name in [
        "config.example.yaml",
        "docker-config.example.yaml",
        "docker-unified-config.example.yaml",
    ] {
        let out = v.validate(&std::fs::read(dir.join("upstream").join(name)).expect("example"));
        assert!(!out.is_valid(), "{name}: the loader rejects it");
        assert!(
            out.findings.iter().all(|f| f.rule != "schema"),
            "{name}: embedded schema accepts it: {:?}",
            out.findings
        );
        assert!(
            out.findings
                .iter()
                .any(|f| f.rule == "proxy-port-without-cmd"),
            "{name}"
        );
    }
}

#[test]
fn user_schema_layer_matches_upstream_schema_after_expansion() {
    let Some(dir) = shared() else { return };
    let v = Validator::from_schema_file(&dir.join("upstream/config-schema.json"))
        .expect("upstream schema");
    let mut mismatches = Vec::new();
    for (path, after, loader) in rows(&dir) {
        if loader == "host" || loader.is_empty() {
            continue;
        }
        let out = v.validate(&std::fs::read(dir.join(&path)).expect("corpus file"));
        let schema_errors = out.findings.iter().filter(|f| f.rule == "schema").count();
        let ok = match after.as_str() {
            "yes" => schema_errors == 0,
            "no" => schema_errors > 0 && !out.is_valid(),
            _ => !out.is_valid(), // expansion fails: rejected before the schema
        };
        if !ok {
            mismatches.push(format!(
                "{path}: after_expansion={after}, schema errors {schema_errors}: {:?}",
                out.findings
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn per_model_validation_gives_the_whole_document_findings() {
    let Some(dir) = shared() else { return };
    let v = Validator::embedded();
    let mut compared = 0;
    for sub in ["corpus/real", "upstream"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(sub))
            .expect("corpus dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        for path in files {
            let bytes = std::fs::read(&path).expect("corpus file");
            let (a, b) = (v.validate(&bytes), v.validate_whole_document(&bytes));
            assert_eq!(a.findings, b.findings, "{}", path.display());
            assert_eq!(a.listed_models, b.listed_models, "{}", path.display());
            compared += 1;
        }
    }
    assert!(compared >= 70, "only {compared} files compared");
}
