//! The diff redactor (`swapcfg::redact`) on arbitrary bytes: never panics,
//! is deterministic, keeps the number of lines (`\n`), and puts its markers
//! in the same places whatever the key. On a constructed `apiKey: sk…`
//! line the value becomes exactly its marker, and a secret of at least
//! MIN_SWEEP_LEN bytes repeated on another line is hidden there too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swapcfg::redact::{redact, Redactor, MAX_SWEEP_LEN, MIN_SWEEP_LEN};

/// `text` with every marker `[redacted LABEL:XXXXXX]` made the same.
fn unmarked(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let label = [&b"[redacted sha256:"[..], &b"[redacted hmac:"[..]]
            .into_iter()
            .find(|l| rest.starts_with(l));
        if let Some(l) = label {
            let hex = &rest[l.len()..];
            if hex.len() > 6 && hex[..6].iter().all(u8::is_ascii_hexdigit) && hex[6] == b']' {
                out.extend_from_slice(b"[MARK]");
                i += l.len() + 7;
                continue;
            }
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

fn newlines(b: &[u8]) -> usize {
    b.iter().filter(|&&c| c == b'\n').count()
}

fuzz_target!(|data: &[u8]| {
    let out = redact(data);
    assert_eq!(out, redact(data), "redact is not deterministic");
    assert_eq!(newlines(&out), newlines(data), "line count changed");
    let keyed = Redactor::keyed(b"fuzz-key").redact(data);
    assert_eq!(newlines(&keyed), newlines(data));
    assert_eq!(
        unmarked(&out),
        unmarked(&keyed),
        "markers placed differently with a key"
    );

    // A secret the fuzzer spells, at a secret position.
    let first = data.split(|&b| b == b'\n').next().unwrap_or_default();
    let tail: Vec<u8> = first
        .iter()
        .copied()
        .filter(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
        .take(MAX_SWEEP_LEN - 2)
        .collect();
    let secret = format!("sk{}", String::from_utf8(tail).expect("ASCII"));
    let marker = Redactor::new().marker(secret.as_bytes());
    let doc = format!("apiKey: {secret}\n");
    assert_eq!(
        String::from_utf8_lossy(&redact(doc.as_bytes())),
        format!("apiKey: {marker}\n")
    );
    if secret.len() >= MIN_SWEEP_LEN {
        let doc = format!(
            "apiKey: {secret}\nmodels:\n  m:\n    cmd: run --api-key {secret} # {secret}\n"
        );
        let shown = String::from_utf8_lossy(&redact(doc.as_bytes())).into_owned();
        assert!(!shown.contains(&secret), "{secret:?} shown in {shown:?}");
    }
});
