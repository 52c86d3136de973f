//! known_hosts: reading, matching and appending, as OpenSSH writes them.
//!
//! Owns: host-key verification against a known_hosts file. Plain and hashed
//! (`|1|salt|hmac-sha1`) host fields, comma lists, `*`/`?` wildcards, `!`
//! negation, `[host]:port` for non-22 ports, `@revoked` (a match refuses the
//! key) and `@cert-authority` (skipped: swapcfg does not trust host
//! certificates). Lines it cannot parse are skipped, never a panic.
//!
//! Invariant: a host that has entries, none of which holds the presented
//! key, is reported as [`HostKeyStatus::Changed`], naming the file and line.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use hmac::{Hmac, Mac};
use russh::keys::{HashAlg, PublicKey};

/// known_hosts files larger than this are refused.
const MAX_KNOWN_HOSTS: u64 = 16 * 1024 * 1024;

/// The verdict on a presented host key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyStatus {
    /// An entry for the host holds this key.
    Known,
    /// No entry names the host.
    Unknown,
    /// The host is known with other keys; `line` is the first such entry.
    Changed { file: PathBuf, line: usize },
    /// An `@revoked` entry holds this key.
    Revoked { file: PathBuf, line: usize },
}

/// `SHA256:…` fingerprint of a key, as `ssh-keygen -lf` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Check `key` for `host_name` (`host` or `[host]:port`) against `path`.
/// A missing file means every host is unknown.
pub fn check(path: &Path, host_name: &str, key: &PublicKey) -> std::io::Result<HostKeyStatus> {
    let text = match read_bounded(path)? {
        Some(t) => t,
        None => return Ok(HostKeyStatus::Unknown),
    };
    Ok(check_text(&text, path, host_name, key))
}

/// The file's text, bounded by bytes read; devices and FIFOs refused (a
/// FIFO would block the connect, `/dev/zero` would never end).
fn read_bounded(path: &Path) -> std::io::Result<Option<String>> {
    use crate::local::LocalReadError;
    match crate::local::read_bounded(path, MAX_KNOWN_HOSTS) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(LocalReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(LocalReadError::Io(e)) => Err(e),
        Err(e) => Err(std::io::Error::other(format!(
            "{}: {e} (a known_hosts file holds at most {MAX_KNOWN_HOSTS} bytes)",
            path.display()
        ))),
    }
}

/// The pure part of [`check`].
pub fn check_text(text: &str, file: &Path, host_name: &str, key: &PublicKey) -> HostKeyStatus {
    let mut first_other: Option<usize> = None;
    let mut known = false;
    for (idx, raw) in text.lines().enumerate() {
        let line_no = idx + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let mut first = fields.next().unwrap_or_default();
        let mut revoked = false;
        if let Some(marker) = first.strip_prefix('@') {
            match marker {
                "revoked" => revoked = true,
                _ => continue, // @cert-authority and unknown markers
            }
            first = match fields.next() {
                Some(f) => f,
                None => continue,
            };
        }
        let (Some(kind), Some(blob)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !hosts_match(first, host_name) {
            continue;
        }
        let Ok(entry_key) = PublicKey::from_openssh(&format!("{kind} {blob}")) else {
            continue;
        };
        let same = entry_key.key_data() == key.key_data();
        if revoked {
            if same {
                return HostKeyStatus::Revoked {
                    file: file.to_path_buf(),
                    line: line_no,
                };
            }
            continue;
        }
        if same {
            known = true;
        } else if first_other.is_none() {
            first_other = Some(line_no);
        }
    }
    match (known, first_other) {
        (true, _) => HostKeyStatus::Known,
        (false, Some(line)) => HostKeyStatus::Changed {
            file: file.to_path_buf(),
            line,
        },
        (false, None) => HostKeyStatus::Unknown,
    }
}

/// Does the host field of an entry name `host_name`?
fn hosts_match(field: &str, host_name: &str) -> bool {
    if let Some(hashed) = field.strip_prefix("|1|") {
        return hashed_match(hashed, host_name);
    }
    let mut matched = false;
    for pattern in field.split(',') {
        if let Some(neg) = pattern.strip_prefix('!') {
            if glob(neg, host_name) {
                return false;
            }
        } else if glob(pattern, host_name) {
            matched = true;
        }
    }
    matched
}

fn hashed_match(hashed: &str, host_name: &str) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    let Some((salt, hash)) = hashed.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (b64.decode(salt), b64.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(host_name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// Case-insensitive glob with `*` and `?`, as OpenSSH's match_pattern.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let t: Vec<char> = text.to_ascii_lowercase().chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// The line OpenSSH would append for `host_name` and `key` (no newline).
pub fn entry_line(host_name: &str, key: &PublicKey) -> String {
    let mut bare = key.clone();
    bare.set_comment("");
    let encoded = bare.to_openssh().unwrap_or_default();
    format!("{host_name} {encoded}")
}

/// `|1|salt|hmac key`: the entry with the host name hashed as OpenSSH's
/// HashKnownHosts writes it (HMAC-SHA1 keyed with a random 20-byte salt).
pub fn hashed_entry_line(host_name: &str, key: &PublicKey) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let salt: [u8; 20] = rand::random();
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
        return entry_line(host_name, key);
    };
    mac.update(host_name.as_bytes());
    let plain = entry_line(host_name, key);
    let encoded = plain.split_once(' ').map(|(_, k)| k).unwrap_or("");
    format!(
        "|1|{}|{} {encoded}",
        b64.encode(salt),
        b64.encode(mac.finalize().into_bytes())
    )
}

/// Append an entry, creating the file (0600) and its directory (0700).
pub fn append(path: &Path, host_name: &str, key: &PublicKey) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
    }
    let existing = crate::local::read_bounded(path, MAX_KNOWN_HOSTS).unwrap_or_default();
    let needs_newline = !existing.is_empty() && !existing.ends_with(b"\n");
    // A file whose entries are hashed (HashKnownHosts) gets a hashed one.
    let hashed = String::from_utf8_lossy(&existing)
        .lines()
        .any(|l| l.starts_with("|1|"));
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    let mut line = String::new();
    if needs_newline {
        line.push('\n');
    }
    if hashed {
        line.push_str(&hashed_entry_line(host_name, key));
    } else {
        line.push_str(&entry_line(host_name, key));
    }
    line.push('\n');
    f.write_all(line.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::{Algorithm, PrivateKey};

    fn key() -> PublicKey {
        PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
            .map(|k| k.public_key().clone())
            .unwrap_or_else(|e| panic!("keygen: {e}"))
    }

    fn hashed_entry(host: &str, salt: &[u8]) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(salt).unwrap_or_else(|_| panic!("hmac"));
        mac.update(host.as_bytes());
        format!(
            "|1|{}|{}",
            b64.encode(salt),
            b64.encode(mac.finalize().into_bytes())
        )
    }

    #[test]
    fn plain_and_port_entries() {
        let (k, other) = (key(), key());
        let f = Path::new("kh");
        let text = format!(
            "# comment\n\ngarbage\n{}\n{}\n",
            entry_line("gpu1,10.0.0.5", &k),
            entry_line("[gpu2]:2222", &other)
        );
        assert_eq!(check_text(&text, f, "gpu1", &k), HostKeyStatus::Known);
        assert_eq!(check_text(&text, f, "10.0.0.5", &k), HostKeyStatus::Known);
        assert_eq!(check_text(&text, f, "GPU1", &k), HostKeyStatus::Known);
        assert_eq!(check_text(&text, f, "gpu2", &other), HostKeyStatus::Unknown);
        assert_eq!(
            check_text(&text, f, "[gpu2]:2222", &other),
            HostKeyStatus::Known
        );
        assert_eq!(
            check_text(&text, f, "[gpu2]:2222", &k),
            HostKeyStatus::Changed {
                file: f.to_path_buf(),
                line: 5
            }
        );
        assert_eq!(check_text(&text, f, "gpu3", &k), HostKeyStatus::Unknown);
    }

    #[test]
    fn hashed_entries_match_only_their_host() {
        let k = key();
        let text = format!(
            "{}\n",
            entry_line(
                &hashed_entry("[127.0.0.1]:2200", b"0123456789abcdefghij"),
                &k
            )
        );
        let f = Path::new("kh");
        assert_eq!(
            check_text(&text, f, "[127.0.0.1]:2200", &k),
            HostKeyStatus::Known
        );
        assert_eq!(
            check_text(&text, f, "127.0.0.1", &k),
            HostKeyStatus::Unknown
        );
        assert_eq!(
            check_text(&text, f, "[127.0.0.1]:2200", &key()),
            HostKeyStatus::Changed {
                file: f.to_path_buf(),
                line: 1
            }
        );
    }

    #[test]
    fn wildcards_negation_and_revoked() {
        let k = key();
        let f = Path::new("kh");
        let text = format!("{}\n", entry_line("*.lab,!bad.lab", &k));
        assert_eq!(check_text(&text, f, "gpu.lab", &k), HostKeyStatus::Known);
        assert_eq!(check_text(&text, f, "bad.lab", &k), HostKeyStatus::Unknown);
        let revoked = format!(
            "@revoked {}\n{}\n",
            entry_line("*", &k),
            entry_line("gpu", &k)
        );
        assert_eq!(
            check_text(&revoked, f, "gpu", &k),
            HostKeyStatus::Revoked {
                file: f.to_path_buf(),
                line: 1
            }
        );
    }

    #[test]
    fn append_creates_private_file_and_round_trips() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("sub/known_hosts");
        let k = key();
        append(&path, "[::1]:2222", &k).unwrap_or_else(|e| panic!("{e}"));
        let mode = std::fs::metadata(&path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        assert_eq!(mode, 0o600);
        assert_eq!(
            check(&path, "[::1]:2222", &k).ok(),
            Some(HostKeyStatus::Known)
        );
        assert_eq!(
            check(&dir.path().join("none"), "x", &k).ok(),
            Some(HostKeyStatus::Unknown)
        );
        assert!(fingerprint(&k).starts_with("SHA256:"));
    }

    #[test]
    fn accept_new_hashes_when_the_file_is_hashed() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let kh = dir.path().join("known_hosts");
        let other = key();
        std::fs::write(
            &kh,
            format!("{}\n", hashed_entry_line("[10.0.0.1]:22", &other)),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let k = key();
        append(&kh, "[127.0.0.1]:2222", &k).unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read_to_string(&kh).unwrap_or_default();
        assert!(
            !text.contains("127.0.0.1"),
            "host name not written in clear: {text}"
        );
        assert_eq!(text.lines().filter(|l| l.starts_with("|1|")).count(), 2);
        assert!(matches!(
            check(&kh, "[127.0.0.1]:2222", &k).unwrap_or_else(|e| panic!("{e}")),
            HostKeyStatus::Known
        ));
        // A plain file stays plain.
        let plain = dir.path().join("plain");
        append(&plain, "gpu1", &k).unwrap_or_else(|e| panic!("{e}"));
        assert!(std::fs::read_to_string(&plain)
            .unwrap_or_default()
            .starts_with("gpu1 "));
    }
}
