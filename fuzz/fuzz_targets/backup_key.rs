//! `backup_key(config, path)` against an independent oracle: it accepts
//! exactly `<config>.bak-YYYYMMDDTHHMMSSZ` with an optional `.N` (1 to 3
//! ASCII digits) and returns that stamp and N; `backup_path` names are
//! recognised and order by time.
//!
//! Input: byte 0 picks whether the path is `<config><rest>` (even) or
//! `<rest>` alone (odd); bytes 1..17 are two times; then `config\nrest`.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use regex::Regex;
use swapcfg::remote::names::{backup_key, backup_path, is_backup};

fn pattern() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| {
        Regex::new(r"\A\.bak-([0-9]{8}T[0-9]{6}Z)(?:\.([0-9]{1,3}))?\z").expect("regex")
    })
}

fn oracle(config: &str, path: &str) -> Option<(String, u32)> {
    let c = pattern().captures(path.strip_prefix(config)?)?;
    let n = c
        .get(2)
        .map_or(0, |m| m.as_str().parse().expect("1-3 digits"));
    Some((c[1].to_string(), n))
}

/// Seconds before 10000-01-01T00:00:00Z (four-digit years).
const YEAR_10000: u64 = 253_402_300_800;

fuzz_target!(|data: &[u8]| {
    if data.len() < 17 {
        return;
    }
    let (mode, times, rest) = (data[0], &data[1..17], &data[17..]);
    let Ok(rest) = std::str::from_utf8(rest) else {
        return;
    };
    let (config, tail) = rest.split_once('\n').unwrap_or((rest, ""));
    let path = if mode % 2 == 0 {
        format!("{config}{tail}")
    } else {
        tail.to_string()
    };
    let got = backup_key(config, &path);
    assert_eq!(
        got,
        oracle(config, &path),
        "config {config:?}, path {path:?}"
    );
    assert_eq!(is_backup(config, &path), got.is_some());

    let secs = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes")) % YEAR_10000;
    let (t1, t2) = (secs(&times[..8]), secs(&times[8..]));
    let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
    let (p1, p2) = (backup_path(config, at(t1)), backup_path(config, at(t2)));
    let (k1, k2) = (backup_key(config, &p1), backup_key(config, &p2));
    let (Some(k1), Some(k2)) = (k1, k2) else {
        panic!("backup_path names not recognised: {p1:?} {p2:?}");
    };
    assert_eq!(k1.1, 0);
    assert_eq!(t1.cmp(&t2), k1.cmp(&k2), "order of {p1:?} and {p2:?}");
});
