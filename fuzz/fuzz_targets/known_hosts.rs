//! known_hosts matching (`check_text`) on arbitrary text.
//!
//! Input: the first line is the host name (`host` or `[host]:port`), the
//! rest is the known_hosts file, read lossily as `check` reads it.
//! Properties: no panic; a reported line exists; for a plain host name,
//! appending the entry swapcfg itself writes, plain or hashed, makes the
//! host known (unless the key is revoked), and appending an entry with another key to a file
//! that did not name the host makes it `Changed` at that line.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use russh::keys::PublicKey;
use swapcfg::transport::known_hosts::{check_text, entry_line, hashed_entry_line, HostKeyStatus};

/// Fixed ed25519 keys (public halves only; the private halves were discarded).
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEv4XuuhSouEUlpz0vnlSiPlAnb1SeqaSvUJfYZtjSm3";
const OTHER: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKft0kUsutEzFmh+bzM96VWw6JcWhqqcrXImGOCg5XNz";

fn keys() -> &'static (PublicKey, PublicKey) {
    static K: OnceLock<(PublicKey, PublicKey)> = OnceLock::new();
    K.get_or_init(|| {
        let parse = |s: &str| PublicKey::from_openssh(s).expect("constant key parses");
        (parse(KEY), parse(OTHER))
    })
}

/// A host name as `Target::known_hosts_name` makes for an ordinary host:
/// no pattern characters, no list separator, no marker.
fn plain(host: &str) -> bool {
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:[]".contains(&b))
}

fuzz_target!(|data: &[u8]| {
    let (key, other) = keys();
    let text = String::from_utf8_lossy(data);
    let (host, body) = text.split_once('\n').unwrap_or((&text, ""));
    let file = Path::new("known_hosts");
    let status = check_text(body, file, host, key);
    if let HostKeyStatus::Changed { file: f, line } | HostKeyStatus::Revoked { file: f, line } =
        &status
    {
        assert_eq!(f, file);
        assert!(
            *line >= 1 && *line <= body.lines().count(),
            "line {line} is not in the file"
        );
    }
    if !plain(host) {
        return;
    }
    let prefix = format!("{body}\n");
    let entry_no = prefix.lines().count() + 1;
    let with_ours = format!("{prefix}{}\n", entry_line(host, key));
    let after = check_text(&with_ours, file, host, key);
    match (&status, &after) {
        (HostKeyStatus::Revoked { .. }, _) => assert_eq!(after, status),
        (_, HostKeyStatus::Known) => {}
        _ => panic!("appended entry for {host:?} not matched: {after:?} (before: {status:?})"),
    }
    let with_hashed = format!("{prefix}{}\n", hashed_entry_line(host, key));
    assert_eq!(
        check_text(&with_hashed, file, host, key),
        after,
        "hashed entry for {host:?} read differently from the plain one"
    );
    if status == HostKeyStatus::Unknown {
        let with_other = format!("{prefix}{}\n", entry_line(host, other));
        assert_eq!(
            check_text(&with_other, file, host, key),
            HostKeyStatus::Changed {
                file: file.to_path_buf(),
                line: entry_no
            },
            "another key for {host:?} appended at line {entry_no}"
        );
    }
});
