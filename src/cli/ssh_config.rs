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
//! [`MAX_FILES`] files, nesting at most [`MAX_DEPTH`]), and its lines are
//! kept with each `Include` flattened in place. Which lines apply to a host
//! is decided here as OpenSSH's readconf does: `Host` pattern lists,
//! `Match` (`all`, `host`, `originalhost`, `user`, `localuser`, `tagged`,
//! `final`, `canonical`, each negatable; `host` sees `HostName` as set so
//! far), an included file's blocks never matching under an inactive block,
//! and the including block's state restored after each included file.
//! `Match exec` (swapcfg never runs a process), `localnetwork`, `command`,
//! `version` and `sessiontype` cannot be judged: when the rest of the line
//! holds, the block is not applied and a warning names the line. ssh2-config
//! then reads the applying lines (one block per line, so the first value of
//! each keyword wins and `IdentityFile`s accumulate). `%h`, `%d`, `%u`, `%r`,
//! `%%` are expanded in `HostName`, `IdentityFile` and `UserKnownHostsFile`.

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

/// A read ssh config: its lines, `Include`s flattened in place, evaluated
/// per host by [`SshConfig::lookup`].
pub struct SshConfig {
    pub path: PathBuf,
    /// The files read (the top one first), for `file:line` in messages.
    files: Vec<PathBuf>,
    lines: Vec<Line>,
    home: Option<PathBuf>,
    /// `Match` lines already warned about (file index, line).
    warned: std::sync::Mutex<std::collections::BTreeSet<(usize, usize)>>,
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

/// One meaningful line of the config, after the pre-read flattened every
/// `Include` in place.
#[derive(Debug)]
struct Line {
    /// Index into [`SshConfig::files`].
    file: usize,
    /// 1-based line number in that file.
    line: usize,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// `Host PATTERN…`: starts a block active when a pattern matches.
    Host(Vec<String>),
    /// `Match CRITERIA…`: starts a block active when every criterion holds.
    Match(Vec<String>),
    /// An included file starts: its `Host`/`Match` lines never match when
    /// the including block is inactive; OpenSSH restores the including
    /// block's state when the file ends ([`Kind::Leave`]).
    Enter,
    Leave,
    /// Any other keyword, the line as written (handed to ssh2-config).
    Setting(String),
}

/// Pre-read of a file and, recursively, of what it includes: every file
/// bounded, regular, within the file and depth budgets; the lines kept in
/// order with each `Include` replaced by the included files' lines.
struct PreRead<'a> {
    home: Option<&'a Path>,
    stack: Vec<PathBuf>,
    files: Vec<PathBuf>,
    lines: Vec<Line>,
}

impl PreRead<'_> {
    fn file(&mut self, path: &Path, bytes: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| format!("ssh config {}: not UTF-8 text", path.display()))?;
        let file = self.files.len();
        self.files.push(path.to_path_buf());
        for (n, raw) in text.lines().enumerate() {
            let Some((key, args)) = keyword(raw) else {
                continue;
            };
            let line = n + 1;
            let kind = match key.as_str() {
                "host" => Kind::Host(args),
                "match" => Kind::Match(args),
                "include" => {
                    for arg in args {
                        self.include(path, line, &arg)?;
                    }
                    continue;
                }
                _ => Kind::Setting(raw.trim().to_string()),
            };
            self.lines.push(Line { file, line, kind });
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
            if self.files.len() >= MAX_FILES {
                return Err(format!("{}: more than {MAX_FILES} files included", at()));
            }
            let canonical = p.canonicalize().unwrap_or_else(|_| p.clone());
            if self.stack.contains(&canonical) {
                return Err(format!("{}: includes itself ({})", at(), p.display()));
            }
            let bytes = swapcfg::local::read_bounded(&p, MAX_SSH_CONFIG)
                .map_err(|e| format!("{}: {}: {e}", at(), p.display()))?;
            self.stack.push(canonical);
            let file = self.files.len();
            self.lines.push(Line {
                file,
                line: 0,
                kind: Kind::Enter,
            });
            self.file(&p, &bytes)?;
            self.lines.push(Line {
                file,
                line: 0,
                kind: Kind::Leave,
            });
            self.stack.pop();
        }
        Ok(())
    }
}

/// `ssh`'s pattern lists (`Host` arguments, one `Match` criterion's comma
/// list): `Some(true)` when a pattern matches and no `!pattern` does,
/// `Some(false)` when a negated one matches, `None` when nothing matches.
fn pattern_list<'p>(
    patterns: impl Iterator<Item = &'p str>,
    subject: &str,
    fold_case: bool,
) -> Option<bool> {
    let mut found = None;
    for p in patterns {
        let (negated, p) = match p.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, p),
        };
        let hit = if fold_case {
            wildmatch::WildMatch::new_case_insensitive(p).matches(subject)
        } else {
            wildmatch::WildMatch::new(p).matches(subject)
        };
        if hit {
            if negated {
                return Some(false);
            }
            found = Some(true);
        }
    }
    found
}

/// What a `Match` line is evaluated against.
struct MatchContext<'a> {
    /// The host name as typed.
    alias: &'a str,
    /// `HostName` as set so far (`%h` expanded), else the alias.
    host: &'a str,
    /// `User` as set so far, else the user swapcfg would use.
    user: &'a str,
    /// `Tag` as set so far.
    tag: Option<&'a str>,
}

/// A `Match` line's verdict.
enum Verdict {
    Yes,
    No,
    /// Every criterion swapcfg can judge holds, but one it cannot (`exec`,
    /// `localnetwork`, …) decides: the block is not applied, with a warning.
    Unknown(String),
}

fn match_line(args: &[String], cx: &MatchContext<'_>) -> Result<Verdict, String> {
    if args.is_empty() {
        return Err("`Match` needs criteria".into());
    }
    let mut unknown: Option<String> = None;
    let mut result = true;
    let mut i = 0;
    let n = args.len();
    while i < n {
        let raw = args[i].as_str();
        let (negate, word) = match raw.strip_prefix('!') {
            Some(w) => (true, w),
            None => (false, raw),
        };
        let word = word.to_ascii_lowercase();
        i += 1;
        let holds = match word.as_str() {
            "all" => {
                let others = args
                    .iter()
                    .filter(|a| {
                        let a = a.trim_start_matches('!').to_ascii_lowercase();
                        a != "all" && a != "canonical" && a != "final"
                    })
                    .count();
                if others > 0 {
                    return Err("`Match all` must appear alone (or with canonical/final)".into());
                }
                Some(true)
            }
            // swapcfg does no host-name canonicalization: the canonical
            // pass never happens; the final pass is this one.
            "canonical" => Some(false),
            "final" => Some(true),
            _ => {
                let Some(value) = args.get(i) else {
                    return Err(format!("`Match {word}` needs an argument"));
                };
                i += 1;
                let list = || value.split(',');
                match word.as_str() {
                    "host" => Some(pattern_list(list(), cx.host, true) == Some(true)),
                    "originalhost" => Some(pattern_list(list(), cx.alias, true) == Some(true)),
                    "user" => Some(pattern_list(list(), cx.user, false) == Some(true)),
                    "localuser" => Some(
                        pattern_list(list(), &swapcfg::target::local_user(), false) == Some(true),
                    ),
                    "tagged" => Some(match cx.tag {
                        Some(t) => pattern_list(list(), t, false) == Some(true),
                        None => value.is_empty(),
                    }),
                    "exec" | "localnetwork" | "command" | "version" | "sessiontype" => {
                        if unknown.is_none() {
                            unknown = Some(format!(
                                "`{word}` is not evaluated (swapcfg {})",
                                if word == "exec" {
                                    "never runs a process"
                                } else {
                                    "cannot judge it"
                                }
                            ));
                        }
                        None
                    }
                    _ => return Err(format!("unsupported `Match` criterion {word:?}")),
                }
            }
        };
        if let Some(h) = holds {
            if h == negate {
                result = false;
            }
        }
    }
    Ok(match (result, unknown) {
        (false, _) => Verdict::No,
        (true, None) => Verdict::Yes,
        (true, Some(why)) => Verdict::Unknown(why),
    })
}

impl SshConfig {
    /// `--ssh-config`: `none` → nothing; a path → that file (must exist);
    /// absent → `~/.ssh/config` when it exists.
    pub fn discover(flag: Option<&Path>) -> Result<Option<SshConfig>, String> {
        match flag {
            Some(p) if p == Path::new("none") => Ok(None),
            Some(p) => SshConfig::load(p).map(Some),
            None => match home().map(|h| h.join(".ssh").join("config")) {
                Some(p) if p.exists() => SshConfig::load(&p).map(Some),
                _ => Ok(None),
            },
        }
    }

    /// Read and parse `path` and the files it includes (each bounded).
    pub fn load(path: &Path) -> Result<SshConfig, String> {
        let bytes = swapcfg::local::read_bounded(path, MAX_SSH_CONFIG)
            .map_err(|e| format!("ssh config {}: {e}", path.display()))?;
        SshConfig::parse(path, &bytes, home())
    }

    /// Parse `bytes` (read from `path`), with `~` and relative includes
    /// resolved against `home`. Every keyword line is checked here (a bad
    /// `Port` in a block for another host is still an error, as in ssh).
    pub fn parse(path: &Path, bytes: &[u8], home: Option<PathBuf>) -> Result<SshConfig, String> {
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let mut pre = PreRead {
            home: home.as_deref(),
            stack: vec![canonical],
            files: Vec::new(),
            lines: Vec::new(),
        };
        pre.file(path, bytes)?;
        let cfg = SshConfig {
            path: path.to_path_buf(),
            files: pre.files,
            lines: pre.lines,
            home,
            warned: std::sync::Mutex::new(std::collections::BTreeSet::new()),
        };
        let all: Vec<&Line> = cfg
            .lines
            .iter()
            .filter(|l| matches!(l.kind, Kind::Setting(_)))
            .collect();
        if cfg.settings(&all).is_err() {
            // Name the line: parse them one by one.
            for l in all {
                if let Err(e) = cfg.settings(&[l]) {
                    return Err(format!("{}: {e}", cfg.at(l)));
                }
            }
        }
        Ok(cfg)
    }

    /// `file:line` of a config line.
    fn at(&self, l: &Line) -> String {
        let file = self.files.get(l.file).unwrap_or(&self.path);
        format!("ssh config {}:{}", file.display(), l.line)
    }

    /// ssh2-config's reading of `lines` (each `Setting`), in order, the
    /// first value of each keyword winning as in ssh.
    fn settings(&self, lines: &[&Line]) -> Result<ssh2_config::HostParams, String> {
        let mut text = String::new();
        for l in lines {
            if let Kind::Setting(s) = &l.kind {
                // One block per line: ssh2-config merges blocks first-wins
                // (and accumulates IdentityFile), as ssh does.
                text.push_str("Host *\n");
                text.push_str(s);
                text.push('\n');
            }
        }
        let mut cfg = ssh2_config::SshConfig::default();
        if let Some(h) = &self.home {
            cfg = cfg.home_dir(h);
        }
        let mut reader: &mut dyn BufRead = &mut text.as_bytes();
        let parsed = cfg
            .parse(
                &mut reader,
                ssh2_config::ParseRule::ALLOW_UNKNOWN_FIELDS
                    | ssh2_config::ParseRule::ALLOW_UNSUPPORTED_FIELDS,
            )
            .map_err(|e| e.to_string())?;
        Ok(parsed.query("swapcfg"))
    }

    /// The lines that apply to `alias`: OpenSSH's evaluation of `Host`,
    /// `Match` and `Include` scoping, in file order.
    fn active(&self, alias: &str, user: &str) -> Result<Vec<&Line>, String> {
        let mut out = Vec::new();
        let mut active = true;
        let mut never = false;
        let mut stack: Vec<(bool, bool)> = Vec::new();
        let mut host_name: Option<String> = None;
        let mut remote_user: Option<String> = None;
        let mut tag: Option<String> = None;
        for l in &self.lines {
            match &l.kind {
                Kind::Enter => {
                    stack.push((active, never));
                    never = never || !active;
                }
                Kind::Leave => {
                    (active, never) = stack.pop().unwrap_or((true, false));
                }
                Kind::Host(patterns) => {
                    active = !never
                        && pattern_list(patterns.iter().map(String::as_str), alias, true)
                            == Some(true);
                }
                Kind::Match(args) => {
                    if never {
                        active = false;
                        continue;
                    }
                    let host = host_name
                        .as_deref()
                        .map(|h| tokens(h, alias, user, self.home.as_deref()));
                    let cx = MatchContext {
                        alias,
                        host: host.as_deref().unwrap_or(alias),
                        user: remote_user.as_deref().unwrap_or(user),
                        tag: tag.as_deref(),
                    };
                    active =
                        match match_line(args, &cx).map_err(|e| format!("{}: {e}", self.at(l)))? {
                            Verdict::Yes => true,
                            Verdict::No => false,
                            Verdict::Unknown(why) => {
                                self.warn_once(l, &why);
                                false
                            }
                        };
                }
                Kind::Setting(s) if active => {
                    if let Some((key, args)) = keyword(s) {
                        let slot = match key.as_str() {
                            "hostname" => &mut host_name,
                            "user" => &mut remote_user,
                            "tag" => &mut tag,
                            _ => &mut None,
                        };
                        if slot.is_none() {
                            *slot = args.into_iter().next();
                        }
                    }
                    out.push(l);
                }
                Kind::Setting(_) => {}
            }
        }
        Ok(out)
    }

    /// A `Match` block not applied because a criterion could not be judged:
    /// said once per line and run.
    fn warn_once(&self, l: &Line, why: &str) {
        let first = self
            .warned
            .lock()
            .map(|mut w| w.insert((l.file, l.line)))
            .unwrap_or(false);
        if first {
            eprintln!("warning: {}: `Match` block not applied: {why}", self.at(l));
        }
    }

    /// The settings `ssh` would use for `alias` (the host name as typed).
    pub fn lookup(&self, alias: &str, user: &str) -> Result<SshHost, String> {
        let lines = self.active(alias, user)?;
        let p = self
            .settings(&lines)
            .map_err(|e| format!("ssh config {}: host {alias:?}: {e}", self.path.display()))?;
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
    fn match_blocks_and_include_scoping_follow_openssh() {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = dir.path();
        std::fs::create_dir_all(h.join(".ssh")).expect("mkdir");
        std::fs::write(h.join(".ssh/id_lan"), "k").expect("key");
        // Under an inactive block: its `Host *` never matches.
        std::fs::write(
            h.join(".ssh/hidden.conf"),
            "Port 1\nHost *\n  User hidden\n",
        )
        .expect("write");
        // Under gpu1's block: the top applies, `Host other` ends it, and
        // the including block is active again after the file.
        std::fs::write(
            h.join(".ssh/gpu1.conf"),
            "Port 2201\nHost other\n  User no\n",
        )
        .expect("write");
        let cfg = parse(
            "\
Host nothere
  Include hidden.conf
Host gpu1
  Include gpu1.conf
  ConnectTimeout 5
Host gpu*
  HostName %h.lan
Match host *.lan user ops !originalhost gpu3
  IdentityFile ~/.ssh/id_lan
Match originalhost gpu2 !user ops
  Port 2202
Match exec \"test -d /\" host gpu3.lan
  Port 7
Match localuser nobody-here-at-all
  Port 8
Match all
  User ops
",
            h,
        );
        let g1 = cfg.lookup("gpu1", "me").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(g1.port, Some(2201), "gpu1.conf's top applies");
        assert_eq!(
            g1.connect_timeout,
            Some(Duration::from_secs(5)),
            "restored after the include"
        );
        assert_eq!(g1.user.as_deref(), Some("ops"), "not `no`, not `hidden`");
        assert_eq!(g1.host_name.as_deref(), Some("gpu1.lan"));
        // `user ops` is judged on the user set so far: `me` here (User ops
        // comes later), so the id_lan block does not apply.
        assert_eq!(g1.identity, None);
        let g1 = cfg.lookup("gpu1", "ops").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            g1.identity,
            Some(h.join(".ssh/id_lan")),
            "host sees HostName"
        );
        let g2 = cfg.lookup("gpu2", "me").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(g2.port, Some(2202));
        let g2 = cfg.lookup("gpu2", "ops").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(g2.port, None, "negated user");
        // `exec` is never run: its block is not applied (a warning says so).
        let g3 = cfg.lookup("gpu3", "ops").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((g3.port, g3.identity), (None, None));
        let other = cfg.lookup("plain", "me").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((other.port, other.user.as_deref()), (None, Some("ops")));
        // Errors name the line.
        let cfg = parse("Host a\nMatch all host a\n  Port 1\n", h);
        let e = cfg.lookup("a", "me").err().unwrap_or_default();
        assert!(e.contains("config:2") && e.contains("alone"), "{e}");
        let cfg = parse("Match host\n", h);
        let e = cfg.lookup("a", "me").err().unwrap_or_default();
        assert!(e.contains("needs an argument"), "{e}");
    }

    #[test]
    fn refusals_are_clear() {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = dir.path();
        let e = SshConfig::parse(
            Path::new("cfg"),
            b"Host a\n  Port 1\nMatch host b\n  Port x\n",
            Some(h.to_path_buf()),
        )
        .err()
        .unwrap_or_default();
        assert!(e.starts_with("ssh config cfg:4: "), "{e}");
        let cfg = parse("Match nosuch a\n  Port 1\n", h);
        let e = cfg.lookup("a", "me").err().unwrap_or_default();
        assert!(e.contains("config:1") && e.contains("nosuch"), "{e}");
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
