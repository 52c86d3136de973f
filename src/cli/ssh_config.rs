//! The OpenSSH client configuration (`~/.ssh/config`, or `--ssh-config
//! FILE`, `none` to skip), read so hosts are reached the way `ssh` reaches
//! them.
//!
//! Parser: `ssh2-config`. Evaluated against `russh-config` (0.58):
//! * `Include` (globs, `~`, relative to `~/.ssh`, cycle detection): ssh2-config
//!   yes; russh-config no.
//! * Keywords modelled: ssh2-config has `HostName`, `User`, `Port`,
//!   `IdentityFile` (list), `ConnectTimeout`, `ServerAliveInterval`,
//!   `ProxyJump` (comma list) and keeps every other keyword verbatim
//!   (`IdentitiesOnly`, `UserKnownHostsFile`, `StrictHostKeyChecking`,
//!   `ProxyCommand`, `ServerAliveCountMax` are read from there);
//!   russh-config has no `ConnectTimeout`, `ServerAliveInterval`,
//!   `IdentitiesOnly`, reads `StrictHostKeyChecking accept-new` as `yes`, and
//!   splits `Key Value` on one space only (no tabs, no `Key=Value`).
//! * `Host` patterns with `!` negation: both.
//! * Processes: russh-config carries a `ProxyCommand` stream that spawns the
//!   command (tokio::process); ssh2-config spawns nothing.
//! * Maintenance: both released in 2025-26; ssh2-config is a dedicated crate
//!   with a large test suite, russh-config a small helper beside russh.
//! * Licence: russh-config Apache-2.0; ssh2-config MIT, but its `dirs`
//!   dependency brings `option-ext` (MPL-2.0), allowed for that one crate in
//!   deny.toml (used unmodified).
//! * Size: a stripped LTO release binary that parses a file grows by about
//!   180 KiB with ssh2-config and about 900 KiB with russh-config (its tokio,
//!   globset and whoami; much of that is shared with swapcfg's own tokio).
//!
//! What ssh2-config lacks is handled here: every file (the top one and each
//! `Include`d one) is read bounded first ([`swapcfg::local::read_bounded`]:
//! regular files only, at most [`MAX_SSH_CONFIG`] bytes, at most
//! [`MAX_FILES`] files, nesting at most [`MAX_DEPTH`]); `Match` blocks are
//! refused (ssh2-config does not know them and would apply their lines to
//! the block before; the implicit `~/.ssh/config` with one is skipped with
//! a warning, so one unrelated `Match` does not stop every command); `%h`, `%d`, `%u`, `%r`, `%%` are expanded in
//! `HostName`, `IdentityFile` and `UserKnownHostsFile`.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Duration;

use swapcfg::transport::HostKeyPolicy;

/// Bytes read from one ssh config file (the top one or an included one).
pub const MAX_SSH_CONFIG: u64 = 1024 * 1024;
/// Files read in all (the top one and every included one).
pub const MAX_FILES: usize = 64;
/// `Include` nesting.
pub const MAX_DEPTH: usize = 16;

/// What `ssh` would use for one host, as far as swapcfg uses it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SshHost {
    pub host_name: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    /// The first `IdentityFile` that exists (ssh skips missing ones).
    pub identity: Option<PathBuf>,
    pub identities_only: bool,
    pub known_hosts: Option<PathBuf>,
    pub host_key_policy: Option<HostKeyPolicy>,
    pub connect_timeout: Option<Duration>,
    /// `ServerAliveInterval` × `ServerAliveCountMax` (3 when unset): how
    /// long a silent host is kept.
    pub keepalive: Option<Duration>,
    /// `ProxyJump` hops; `Some(empty)` for `ProxyJump none`.
    pub proxy_jump: Option<Vec<String>>,
    /// A `ProxyCommand` other than `none` (refused by the caller unless a
    /// jump given elsewhere takes precedence).
    pub proxy_command: Option<String>,
}

/// A parsed ssh config.
pub struct SshConfig {
    pub path: PathBuf,
    parsed: ssh2_config::SshConfig,
    home: Option<PathBuf>,
}

impl std::fmt::Debug for SshConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshConfig")
            .field("path", &self.path)
            .finish()
    }
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// `~` or `~/…` against `home`.
fn expand_home(s: &str, home: Option<&Path>) -> PathBuf {
    match (s, home) {
        ("~", Some(h)) => h.to_path_buf(),
        (s, Some(h)) if s.starts_with("~/") => h.join(&s[2..]),
        (s, _) => PathBuf::from(s),
    }
}

/// The keyword and arguments of one config line (`Key value…` or
/// `Key=value…`), without comments; `None` for blank and comment lines.
fn keyword(line: &str) -> Option<(String, Vec<String>)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let split = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let key = line[..split].to_ascii_lowercase();
    let rest = line[split..]
        .trim_start()
        .trim_start_matches('=')
        .trim_start();
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in rest.chars() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted && cur.is_empty() => break,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    args.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        args.push(cur);
    }
    Some((key, args))
}

/// Pre-read of a file and, recursively, of what it includes: every file
/// bounded, regular, within the file and depth budgets; `Match` refused.
struct PreRead<'a> {
    home: Option<&'a Path>,
    files: usize,
    stack: Vec<PathBuf>,
    /// The first `Match` line seen (file, line).
    first_match: Option<(PathBuf, usize)>,
}

/// A `Match` block, which ssh2-config would apply to the wrong host.
struct MatchAt(PathBuf, usize);

impl MatchAt {
    fn refusal(&self) -> String {
        format!(
            "ssh config {}:{}: `Match` blocks are not supported; move the host's settings into a `Host` block, or pass --ssh-config none (or another file)",
            self.0.display(),
            self.1
        )
    }
}

impl PreRead<'_> {
    fn file(&mut self, path: &Path, bytes: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| format!("ssh config {}: not UTF-8 text", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            let Some((key, args)) = keyword(line) else {
                continue;
            };
            match key.as_str() {
                "match" if self.first_match.is_none() => {
                    self.first_match = Some((path.to_path_buf(), n + 1));
                }
                "include" => {
                    for arg in args {
                        self.include(path, n + 1, &arg)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn include(&mut self, from: &Path, line: usize, arg: &str) -> Result<(), String> {
        let at = || format!("ssh config {}:{line}: Include {arg}", from.display());
        let pattern = if arg.starts_with('/') {
            arg.to_string()
        } else if arg == "~" || arg.starts_with("~/") {
            let h = self
                .home
                .ok_or_else(|| format!("{}: HOME is not set", at()))?;
            let escaped = glob::Pattern::escape(&h.display().to_string());
            format!("{escaped}{}", &arg[1..])
        } else {
            let h = self
                .home
                .ok_or_else(|| format!("{}: HOME is not set", at()))?;
            let escaped = glob::Pattern::escape(&h.join(".ssh").display().to_string());
            format!("{escaped}/{arg}")
        };
        let paths = glob::glob(&pattern).map_err(|e| format!("{}: {e}", at()))?;
        for p in paths {
            let p = p.map_err(|e| format!("{}: {e}", at()))?;
            if self.stack.len() >= MAX_DEPTH {
                return Err(format!("{}: Include nested deeper than {MAX_DEPTH}", at()));
            }
            self.files += 1;
            if self.files > MAX_FILES {
                return Err(format!("{}: more than {MAX_FILES} files included", at()));
            }
            let canonical = p.canonicalize().unwrap_or_else(|_| p.clone());
            if self.stack.contains(&canonical) {
                return Err(format!("{}: includes itself ({})", at(), p.display()));
            }
            let bytes = swapcfg::local::read_bounded(&p, MAX_SSH_CONFIG)
                .map_err(|e| format!("{}: {}: {e}", at(), p.display()))?;
            self.stack.push(canonical);
            self.file(&p, &bytes)?;
            self.stack.pop();
        }
        Ok(())
    }
}

impl SshConfig {
    /// `--ssh-config`: `none` → nothing; a path → that file (must exist);
    /// absent → `~/.ssh/config` when it exists.
    pub fn discover(flag: Option<&Path>) -> Result<Option<SshConfig>, String> {
        match flag {
            Some(p) if p == Path::new("none") => Ok(None),
            Some(p) => SshConfig::load(p).map(Some),
            // The implicit file: one with a `Match` block is not used (a
            // warning says so) rather than stopping every command.
            None => match home().map(|h| h.join(".ssh").join("config")) {
                Some(p) if p.exists() => match SshConfig::load_checked(&p)? {
                    Ok(c) => Ok(Some(c)),
                    Err(m) => {
                        eprintln!(
                            "warning: {}; {} is not used for this run",
                            m.refusal(),
                            p.display()
                        );
                        Ok(None)
                    }
                },
                _ => Ok(None),
            },
        }
    }

    /// Read and parse `path` and the files it includes (each bounded).
    pub fn load(path: &Path) -> Result<SshConfig, String> {
        SshConfig::load_checked(path)?.map_err(|m| m.refusal())
    }

    /// [`SshConfig::load`], with a `Match` block told apart from other errors.
    fn load_checked(path: &Path) -> Result<Result<SshConfig, MatchAt>, String> {
        let bytes = swapcfg::local::read_bounded(path, MAX_SSH_CONFIG)
            .map_err(|e| format!("ssh config {}: {e}", path.display()))?;
        SshConfig::parse_checked(path, &bytes, home())
    }

    /// Parse `bytes` (read from `path`), with `~` and relative includes
    /// resolved against `home`.
    #[cfg(test)]
    pub fn parse(path: &Path, bytes: &[u8], home: Option<PathBuf>) -> Result<SshConfig, String> {
        SshConfig::parse_checked(path, bytes, home)?.map_err(|m| m.refusal())
    }

    fn parse_checked(
        path: &Path,
        bytes: &[u8],
        home: Option<PathBuf>,
    ) -> Result<Result<SshConfig, MatchAt>, String> {
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let mut pre = PreRead {
            home: home.as_deref(),
            files: 1,
            stack: vec![canonical],
            first_match: None,
        };
        pre.file(path, bytes)?;
        if let Some((file, line)) = pre.first_match {
            return Ok(Err(MatchAt(file, line)));
        }
        let mut cfg = ssh2_config::SshConfig::default();
        if let Some(h) = &home {
            cfg = cfg.home_dir(h);
        }
        let mut reader: &mut dyn BufRead = &mut &bytes[..];
        let parsed = cfg
            .parse(
                &mut reader,
                ssh2_config::ParseRule::ALLOW_UNKNOWN_FIELDS
                    | ssh2_config::ParseRule::ALLOW_UNSUPPORTED_FIELDS,
            )
            .map_err(|e| format!("ssh config {}: {e}", path.display()))?;
        Ok(Ok(SshConfig {
            path: path.to_path_buf(),
            parsed,
            home,
        }))
    }

    /// The settings `ssh` would use for `alias` (the host name as typed).
    pub fn lookup(&self, alias: &str, user: &str) -> Result<SshHost, String> {
        let p = self.parsed.query(alias);
        let at = |key: &str, why: String| {
            format!(
                "ssh config {}: {key} for host {alias:?}: {why}",
                self.path.display()
            )
        };
        let raw = |key: &str| -> Option<Vec<String>> { p.unsupported_fields.get(key).cloned() };
        let first = |key: &str| raw(key).and_then(|v| v.into_iter().next());
        let home = self.home.as_deref();
        let host_name = p.host_name.as_deref().map(|h| tokens(h, alias, user, home));
        let remote_user = p.user.clone().unwrap_or_else(|| user.to_string());
        let expand = |s: &str| {
            expand_home(
                &tokens(s, host_name.as_deref().unwrap_or(alias), &remote_user, home),
                home,
            )
        };
        let identity = p
            .identity_file
            .iter()
            .flatten()
            .map(|f| expand(&f.display().to_string()))
            .find(|f| f.is_file());
        let identities_only = match first("identitiesonly").as_deref() {
            None => false,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "yes" | "true" => true,
                "no" | "false" => false,
                _ => return Err(at("IdentitiesOnly", format!("{v:?} is not yes or no"))),
            },
        };
        let host_key_policy = match first("stricthostkeychecking").as_deref() {
            None => None,
            Some(v) => Some(match v.to_ascii_lowercase().as_str() {
                // No prompt here: `ask` refuses unknown keys, as `yes` does.
                "yes" | "true" | "ask" => HostKeyPolicy::Strict,
                // swapcfg never connects to a host whose key CHANGED: `no`
                // records unknown keys (as accept-new) and refuses changed ones.
                "accept-new" | "no" | "false" | "off" => HostKeyPolicy::AcceptNew,
                _ => {
                    return Err(at(
                        "StrictHostKeyChecking",
                        format!("{v:?} is not yes, ask, accept-new or no"),
                    ))
                }
            }),
        };
        let keepalive = match p.server_alive_interval {
            Some(every) if !every.is_zero() => {
                let count = match first("serveralivecountmax") {
                    None => 3,
                    Some(v) => v.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        at("ServerAliveCountMax", format!("{v:?} is not a number"))
                    })?,
                };
                Some(every.saturating_mul(count))
            }
            _ => None,
        };
        let proxy_jump = p.proxy_jump.as_ref().map(|hops| {
            if hops.len() == 1 && hops[0].eq_ignore_ascii_case("none") {
                Vec::new()
            } else {
                hops.iter()
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty())
                    .collect()
            }
        });
        let proxy_command = raw("proxycommand")
            .map(|v| v.join(" "))
            .filter(|c| !c.eq_ignore_ascii_case("none"));
        Ok(SshHost {
            host_name: host_name.clone(),
            user: p.user.clone(),
            port: p.port,
            identity,
            identities_only,
            known_hosts: first("userknownhostsfile").map(|f| expand(&f)),
            host_key_policy,
            connect_timeout: p.connect_timeout.filter(|t| !t.is_zero()),
            keepalive,
            proxy_jump,
            proxy_command,
        })
    }
}

/// `%h` (host), `%r` (remote user), `%u` (local user), `%d` (home), `%%`.
fn tokens(s: &str, host: &str, remote_user: &str, home: Option<&Path>) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('h') => out.push_str(host),
            Some('r') => out.push_str(remote_user),
            Some('u') => out.push_str(&swapcfg::target::local_user()),
            Some('d') => out.push_str(&home.map(|h| h.display().to_string()).unwrap_or_default()),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, home: &Path) -> SshConfig {
        SshConfig::parse(
            &home.join("config"),
            text.as_bytes(),
            Some(home.to_path_buf()),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn keywords_patterns_and_first_value_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = dir.path();
        std::fs::create_dir_all(h.join(".ssh")).expect("mkdir");
        std::fs::write(h.join(".ssh/id_gpu"), "k").expect("key");
        let cfg = parse(
            "\
Host gpu*  !gpu9
  HostName %h.lan
  User ops
  Port 2200
  IdentityFile ~/.ssh/missing
  IdentityFile ~/.ssh/id_gpu
  IdentitiesOnly yes
  UserKnownHostsFile ~/.ssh/kh_%h
  StrictHostKeyChecking accept-new
  ConnectTimeout 7
  ServerAliveInterval 5
  ServerAliveCountMax 2
  ProxyJump bastion,ops@b2:2022
Host gpu1
  User late
Host *
  User everyone
  Port=2299
  StrictHostKeyChecking no
",
            h,
        );
        let g = cfg.lookup("gpu1", "me").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(g.host_name.as_deref(), Some("gpu1.lan"));
        assert_eq!(g.user.as_deref(), Some("ops"), "the first value wins");
        assert_eq!(g.port, Some(2200));
        assert_eq!(
            g.identity,
            Some(h.join(".ssh/id_gpu")),
            "missing keys skipped"
        );
        assert!(g.identities_only);
        assert_eq!(g.known_hosts, Some(h.join(".ssh/kh_gpu1.lan")));
        assert_eq!(g.host_key_policy, Some(HostKeyPolicy::AcceptNew));
        assert_eq!(g.connect_timeout, Some(Duration::from_secs(7)));
        assert_eq!(g.keepalive, Some(Duration::from_secs(10)));
        assert_eq!(
            g.proxy_jump,
            Some(vec!["bastion".to_string(), "ops@b2:2022".to_string()])
        );
        // Negated: gpu9 falls through to `Host *`.
        let n = cfg.lookup("gpu9", "me").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (n.host_name, n.user.as_deref(), n.port, n.proxy_jump),
            (None, Some("everyone"), Some(2299), None)
        );
        assert_eq!(n.host_key_policy, Some(HostKeyPolicy::AcceptNew));
        assert!(!n.identities_only && n.identity.is_none() && n.keepalive.is_none());
    }

    #[test]
    fn includes_are_followed_and_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = dir.path();
        std::fs::create_dir_all(h.join(".ssh/conf.d")).expect("mkdir");
        std::fs::write(
            h.join(".ssh/conf.d/a.conf"),
            "Host inc\n  HostName 10.1.2.3\n  ProxyJump none\n",
        )
        .expect("write");
        std::fs::write(h.join(".ssh/conf.d/b.conf"), "Host inc2\n  Port 2022\n").expect("write");
        let cfg = parse("Include conf.d/*.conf\nHost *\n  Port 2200\n", h);
        let i = cfg.lookup("inc", "me").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (i.host_name.as_deref(), i.port, i.proxy_jump),
            (Some("10.1.2.3"), Some(2200), Some(vec![]))
        );
        assert_eq!(cfg.lookup("inc2", "me").map(|i| i.port), Ok(Some(2022)));
        // An include cycle, a FIFO and an oversized file are clear errors.
        std::fs::write(h.join(".ssh/loop"), "Include ~/.ssh/loop\n").expect("write");
        let e = SshConfig::parse(Path::new("c"), b"Include loop\n", Some(h.to_path_buf()))
            .err()
            .unwrap_or_default();
        assert!(e.contains("includes itself"), "{e}");
        let fifo = h.join(".ssh/fifo");
        let c = std::ffi::CString::new(fifo.to_str().expect("utf8")).expect("cstr");
        // SAFETY: mkfifo(3) on a NUL-terminated path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = SshConfig::parse(Path::new("c"), b"Include fifo\n", Some(h.to_path_buf()))
            .err()
            .unwrap_or_default();
        assert!(e.contains("Include fifo") && e.contains("FIFO"), "{e}");
        std::fs::write(h.join(".ssh/big"), vec![b'#'; MAX_SSH_CONFIG as usize + 1]).expect("write");
        let e = SshConfig::parse(Path::new("c"), b"Include big\n", Some(h.to_path_buf()))
            .err()
            .unwrap_or_default();
        assert!(e.contains("limit"), "{e}");
        let top = h.join("top");
        std::fs::write(&top, vec![b'#'; MAX_SSH_CONFIG as usize + 1]).expect("write");
        let e = SshConfig::load(&top).err().unwrap_or_default();
        assert!(e.starts_with("ssh config ") && e.contains("limit"), "{e}");
    }

    #[test]
    fn refusals_are_clear() {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = dir.path();
        let e = SshConfig::parse(
            Path::new("cfg"),
            b"Host a\n  Port 1\nMatch host b\n  User x\n",
            Some(h.to_path_buf()),
        )
        .err()
        .unwrap_or_default();
        assert!(e.starts_with("ssh config cfg:3: `Match`"), "{e}");
        let cfg = parse(
            "Host a\n  ProxyCommand nc %h %p\nHost b\n  ProxyCommand none\n",
            h,
        );
        let a = cfg.lookup("a", "me").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.proxy_command.as_deref(), Some("nc %h %p"));
        assert_eq!(cfg.lookup("b", "me").map(|b| b.proxy_command), Ok(None));
        let cfg = parse("Host a\n  StrictHostKeyChecking maybe\n", h);
        let e = cfg.lookup("a", "me").err().unwrap_or_default();
        assert!(
            e.contains("StrictHostKeyChecking") && e.contains("maybe"),
            "{e}"
        );
        assert!(matches!(
            SshConfig::discover(Some(Path::new("none"))),
            Ok(None)
        ));
        let e = SshConfig::discover(Some(&h.join("absent")))
            .err()
            .unwrap_or_default();
        assert!(e.starts_with("ssh config ") && e.contains("absent"), "{e}");
    }
}
