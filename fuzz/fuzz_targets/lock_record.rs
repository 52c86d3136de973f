//! `LockInfo::parse` on arbitrary bytes: never panics; accepts only a
//! complete record (header and each of the six fields), whose text fields
//! hold no control character and at most 128 characters; an accepted
//! record round-trips through `to_record`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swapcfg::remote::names::MAX_LOCK_RECORD;
use swapcfg::remote::LockInfo;

const FIELDS: [&str; 6] = ["token", "client", "user", "pid", "started", "expires"];

fuzz_target!(|data: &[u8]| {
    let Some(info) = LockInfo::parse(data) else {
        return;
    };
    assert!(data.len() <= MAX_LOCK_RECORD);
    let text = std::str::from_utf8(data).expect("accepted record is UTF-8");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("swapcfg-lock 1"));
    let keys: Vec<&str> = lines
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    for f in FIELDS {
        assert!(
            keys.contains(&f),
            "accepted a record without {f}=: {text:?}"
        );
    }
    assert!(!info.token.is_empty());
    for s in [&info.token, &info.client, &info.user] {
        assert!(
            s.chars().count() <= 128 && !s.chars().any(char::is_control),
            "{s:?}"
        );
    }
    let record = info.to_record();
    assert_eq!(
        LockInfo::parse(record.as_bytes()).as_ref(),
        Some(&info),
        "{record:?}"
    );
    let _ = info.to_string();
    let _ = info.expired(info.started);
});
