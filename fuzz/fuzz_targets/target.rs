//! `Target::parse` on arbitrary UTF-8: never panics; an accepted target has
//! a user, a host and a non-zero port, and parses back to itself from its
//! `Display` form (`user@host:port`, `user@[v6]:port`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use swapcfg::target::Target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(t) = Target::parse(s) else {
        return;
    };
    assert!(
        !t.user.is_empty() && !t.host.is_empty() && t.port != 0,
        "{t:?}"
    );
    let shown = t.to_string();
    let back = Target::parse(&shown)
        .unwrap_or_else(|e| panic!("{s:?} parsed as {t:?}, shown as {shown:?}, rejected: {e}"));
    assert_eq!(back, t, "{s:?} shown as {shown:?}");
    let kh = t.known_hosts_name();
    if t.port == 22 {
        assert_eq!(kh, t.host);
    } else {
        assert_eq!(kh, format!("[{}]:{}", t.host, t.port));
    }
});
