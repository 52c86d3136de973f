//! `Validator::validate` on arbitrary bytes: never panics, is deterministic,
//! gives the same findings as `validate_whole_document`, and every finding carries a rule, a `$`-path and a position inside the
//! input (1-based line and column).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use swapcfg::validate::Validator;

fn validator() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(Validator::embedded)
}

fuzz_target!(|data: &[u8]| {
    let v = validator();
    let a = v.validate(data);
    let b = v.validate(data);
    assert_eq!(a.findings, b.findings, "validate is not deterministic");
    assert_eq!(a.listed_models, b.listed_models, "listed models differ");
    // One model at a time gives the whole-document path's findings.
    let whole = v.validate_whole_document(data);
    assert_eq!(
        a.findings, whole.findings,
        "per-model and whole-document findings differ"
    );
    assert_eq!(
        a.listed_models, whole.listed_models,
        "per-model and whole-document lists differ"
    );
    // YAML line breaks are \n, \r\n and a lone \r: never more lines than
    // \n and \r together, plus one.
    let breaks = data.iter().filter(|&&c| c == b'\n' || c == b'\r').count();
    for f in &a.findings {
        assert!(!f.rule.is_empty(), "finding without a rule: {f:?}");
        assert!(f.path.starts_with('$'), "finding path not from $: {f:?}");
        assert!(
            f.line >= 1 && f.column >= 1,
            "finding without a position: {f:?}"
        );
        assert!(f.line <= breaks + 1, "finding past the last line: {f:?}");
    }
    if !a.is_valid() {
        assert!(a
            .findings
            .iter()
            .any(|f| f.severity == swapcfg::validate::Severity::Error));
    }
});
