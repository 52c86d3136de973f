//! The forced-command wrapper's reply parsers (`swapcfg::remote::wrapper::
//! replies`) on arbitrary bytes: never panic, and what they accept is
//! bounded and well-formed: a protocol-1 header names an absolute path
//! without control characters and at most 32 short verbs; the rest of a
//! reply is a suffix of it; a file line's mode fits in 0o7777; a backup
//! line is one non-empty line; a listing holds only swapcfg backup names of
//! the config, oldest first.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swapcfg::remote::names::{backup_key, is_backup};
use swapcfg::remote::wrapper::replies;
use swapcfg::remote::wrapper::Protocol;
use swapcfg::remote::{BackupEntry, RemoteError};

fn good_path(p: &str) -> bool {
    p.starts_with('/') && p.len() <= 4096 && !p.chars().any(char::is_control)
}

fn check_listing(path: &str, reply: &[u8], got: Result<Vec<BackupEntry>, RemoteError>) {
    let Ok(list) = got else { return };
    let text = std::str::from_utf8(reply).expect("accepted listing is UTF-8");
    assert!(list.len() <= text.lines().count());
    for e in &list {
        assert!(is_backup(path, &e.path), "{:?} listed for {path:?}", e.path);
    }
    for w in list.windows(2) {
        assert!(
            backup_key(path, &w[0].path) <= backup_key(path, &w[1].path),
            "listing out of order: {:?} before {:?}",
            w[0].path,
            w[1].path
        );
    }
}

fn check_file_line(reply: &[u8]) {
    if let Some((meta, bytes)) = replies::file_line(reply) {
        assert!(meta.bytes.is_empty());
        assert!(meta.mode.is_none_or(|m| m <= 0o7777), "{:?}", meta.mode);
        assert!(bytes.len() < reply.len() && reply.ends_with(bytes));
    }
}

fuzz_target!(|data: &[u8]| {
    // `read 1` / `read-backup`: header, file line, bytes.
    if let Some(Ok((proto, rest))) = replies::hello(data) {
        let Protocol::V1 { path, verbs } = &proto else {
            panic!("a header parsed as a seed wrapper: {proto:?}");
        };
        assert!(good_path(path), "{path:?}");
        assert!(verbs.len() <= 32, "{verbs:?}");
        assert!(verbs
            .iter()
            .all(|v| !v.is_empty() && v.chars().count() <= 32));
        assert!(rest.len() < data.len() && data.ends_with(rest));
        check_file_line(rest);
        // A listing after a header: backups of the path the script owns.
        check_listing(path, rest, replies::listing(path, rest.to_vec()));
    }
    check_file_line(data);
    // Failure replies: `key=value` lines.
    if let Some(p) = replies::field(data, "path") {
        assert!(!p.contains('\n'));
        if let Some(clean) = replies::clean_path(p) {
            assert!(good_path(&clean) && clean == p);
        }
    }
    // A seed wrapper's `backup`: one line.
    if let Ok(line) = replies::backup_line(data.to_vec()) {
        assert!(
            !line.is_empty() && !line.chars().any(char::is_control),
            "{line:?}"
        );
        assert!(data == line.as_bytes() || data == format!("{line}\n").as_bytes());
    }
    let config = "/etc/llama-swap/config.yaml";
    check_listing(config, data, replies::listing(config, data.to_vec()));
});
