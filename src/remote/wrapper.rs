//! `RemoteOps` over an authorized_keys forced command: one exec per verb,
//! the verb and its arguments as the SSH command.
//!
//! Owns: telling the two kinds of forced command apart, and both protocols'
//! client side. The kinds:
//!
//! * the project's script ([`super::wrapper_script`], protocol 1): `write`
//!   carries the length and sha256 of the new bytes and the sha256 the config
//!   must still have; backups, the lock, listing and pruning work as in the
//!   other modes. Its exit statuses map to typed errors.
//! * a seed-style wrapper: the plain verbs `read` (bytes on stdout), `backup`
//!   (prints the backup path), `write` (bytes on stdin) and `restart`. Its
//!   `write` cannot tell a cut connection from a short file, so swapcfg does
//!   not write through it (nor back up for a write) unless the caller opted
//!   in ([`RemoteOptions::unverified_wrapper_write`]). It has no lock (the
//!   pipeline warns) and no listing. The refusal comes at `backup`, the
//!   first step of every write, before anything is sent: an apply stops
//!   with nothing created on the host (the binary's exit 6, "nothing
//!   written").
//!
//! Detection costs no extra round trip with the project's script: the first
//! `read` is sent as `read 1`, whose answer starts with the `hello` lines
//! (`swapcfg-wrapper 1 VERBS…`, `path=CONFIG`). A seed wrapper rejects the
//! unknown form (or prints no such header), and the plain `read` follows.
//! Any other first operation sends `hello`.
//!
//! Invariants: only the verbs above are ever sent, with arguments the client
//! built from digits, hex and backup stamps; every reply is bounded
//! ([`crate::limits`]) and parsed strictly (a backup path must be a swapcfg
//! backup name of the config, [`super::names::is_backup`]); a non-zero exit
//! is that verb's failure, reported with its (bounded) stderr; no exit
//! status at all means the link was lost ([`RemoteError::Disconnected`]:
//! whether the verb took effect is unknown, so the pipeline reads back).

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use super::wrapper_script::{status, MAGIC, PROTOCOL};
use super::{
    backup_path, names, BackupEntry, LockInfo, LockTaken, Mode, RemoteError, RemoteFile,
    RemoteOptions, RestartOutcome,
};
use crate::transport::{ExecOutput, Session, TransportError};

/// Longest backup path the wrapper may print.
const MAX_BACKUP_LINE: usize = 4096;
/// Room for the header lines in front of the bytes of a `read 1`.
const HEADER_SLACK: usize = 8192;

/// `op` of the error refusing to write through a seed-style wrapper (the
/// binary's hint names the flag that accepts the risk).
pub const UNVERIFIED_WRITE_OP: &str = "a write without length or checksum";
/// `op` of the error refusing to start a change the forced-command script
/// cannot restart after.
pub const NO_RESTART_OP: &str = "restart through this forced command";

/// Which forced command answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    /// The plain verbs `read`, `backup`, `write`, `restart`.
    Seed,
    /// The project's script.
    V1 {
        /// The config path the script owns.
        path: String,
        /// The verbs it offers.
        verbs: Vec<String>,
    },
}

impl Protocol {
    fn offers(&self, verb: &str) -> bool {
        match self {
            Protocol::Seed => matches!(verb, "read" | "backup" | "write" | "restart"),
            Protocol::V1 { verbs, .. } => verbs.iter().any(|v| v == verb),
        }
    }
}

/// Wrapper implementation of [`super::RemoteOps`].
pub struct WrapperRemote<'s> {
    session: &'s Session,
    /// The config path the caller named (may be a placeholder: the forced
    /// command owns the file); used only for messages and seed backups.
    label: String,
    opts: RemoteOptions,
    proto: OnceLock<Protocol>,
}

/// Map a transport failure of verb `op`.
fn transport_err(op: &'static str, timeout: Duration, e: TransportError) -> RemoteError {
    match e {
        TransportError::Timeout { .. } => RemoteError::Timeout { op, after: timeout },
        TransportError::Disconnected { message, .. } => RemoteError::Disconnected { op, message },
        other => RemoteError::Failed {
            op,
            message: other.to_string(),
        },
    }
}

/// The channel closed without an exit status: the connection was lost or
/// the command killed, so whether the verb took effect is unknown.
fn no_status(op: &'static str) -> RemoteError {
    RemoteError::Disconnected {
        op,
        message: "the forced command ended without an exit status (connection lost, or the command was killed)".into(),
    }
}

fn stderr_text(out: &ExecOutput) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

/// The value of the first `key=` line of `out`.
fn field<'a>(out: &'a [u8], key: &str) -> Option<&'a str> {
    std::str::from_utf8(out)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A path the script printed: absolute, no control characters, bounded.
fn clean_path(s: &str) -> Option<String> {
    (s.starts_with('/') && s.len() <= MAX_BACKUP_LINE && !s.chars().any(char::is_control))
        .then(|| s.to_string())
}

/// Split a reply into its first line and the rest.
fn line(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let nl = bytes.iter().position(|&b| b == b'\n')?;
    Some((std::str::from_utf8(&bytes[..nl]).ok()?, &bytes[nl + 1..]))
}

/// Parse the `hello` lines at the start of `bytes`; returns the protocol
/// and the rest, or `None` when they are not there.
fn parse_hello(bytes: &[u8]) -> Option<Result<(Protocol, &[u8]), RemoteError>> {
    let (first, rest) = line(bytes)?;
    let mut words = first.split(' ');
    if words.next()? != MAGIC {
        return None;
    }
    let version = words.next()?;
    if version != PROTOCOL.to_string() {
        return Some(Err(RemoteError::Failed {
            op: "hello",
            message: format!(
                "the forced command speaks wrapper protocol {:?}; this swapcfg speaks {PROTOCOL} (regenerate the script with this version)",
                version.chars().take(16).collect::<String>()
            ),
        }));
    }
    let verbs: Vec<String> = words
        .filter(|w| !w.is_empty())
        .take(32)
        .map(|w| w.chars().take(32).collect())
        .collect();
    let bad = |what: &str| {
        Some(Err(RemoteError::Failed {
            op: "hello",
            message: format!("the forced-command script sent a malformed header ({what})"),
        }))
    };
    let Some((path_line, rest)) = line(rest) else {
        return bad("no path line");
    };
    let Some(path) = path_line.strip_prefix("path=").and_then(clean_path) else {
        return bad("path");
    };
    Some(Ok((Protocol::V1 { path, verbs }, rest)))
}

/// Parse `file MODE UID GID` (octal mode, decimal ids; `-` when unknown)
/// into a file without bytes, and the rest (the bytes).
fn parse_file_line(bytes: &[u8]) -> Option<(RemoteFile, &[u8])> {
    let (l, rest) = line(bytes)?;
    let mut w = l.strip_prefix("file ")?.split(' ');
    let mode = w.next()?;
    let (uid, gid) = (w.next()?, w.next()?);
    if w.next().is_some() {
        return None;
    }
    let mode = match mode {
        "-" => None,
        m => Some(u32::from_str_radix(m, 8).ok()? & 0o7777),
    };
    let owner = match (uid.parse::<u32>(), gid.parse::<u32>()) {
        (Ok(u), Ok(g)) => Some((u, g)),
        _ => None,
    };
    Some((
        RemoteFile {
            bytes: Vec::new(),
            mode,
            owner,
        },
        rest,
    ))
}

/// A `list` reply (`SIZE MTIME SUFFIX` lines) as backups of `path`, oldest
/// first, names swapcfg does not make dropped.
fn parse_listing(path: &str, out: Vec<u8>) -> Result<Vec<BackupEntry>, RemoteError> {
    let text = String::from_utf8(out).map_err(|_| RemoteError::Failed {
        op: "list backups",
        message: "the forced-command script sent a non-UTF-8 listing".into(),
    })?;
    let mut list = Vec::new();
    for l in text.lines() {
        let mut w = l.split(' ');
        let (Some(size), Some(mtime), Some(suffix), None) =
            (w.next(), w.next(), w.next(), w.next())
        else {
            return Err(RemoteError::Failed {
                op: "list backups",
                message: format!("malformed listing line {l:?}"),
            });
        };
        let (Ok(size), mtime) = (size.parse::<u64>(), mtime.parse::<u64>().ok()) else {
            return Err(RemoteError::Failed {
                op: "list backups",
                message: format!("malformed listing line {l:?}"),
            });
        };
        list.push(BackupEntry {
            path: format!("{path}.bak-{suffix}"),
            size,
            mtime,
        });
    }
    Ok(super::order_backups(path, list))
}

/// The pure reply parsers of this module, public only for the fuzz
/// targets (`fuzz/`): not a stable API.
#[doc(hidden)]
pub mod replies {
    use super::{BackupEntry, Protocol, RemoteError, RemoteFile};

    /// The `hello` lines at the start of a reply, and the rest.
    pub fn hello(bytes: &[u8]) -> Option<Result<(Protocol, &[u8]), RemoteError>> {
        super::parse_hello(bytes)
    }

    /// A `file MODE UID GID` line (no bytes in the file), and the rest.
    pub fn file_line(bytes: &[u8]) -> Option<(RemoteFile, &[u8])> {
        super::parse_file_line(bytes)
    }

    /// The value of the first `key=` line of a failure reply.
    pub fn field<'a>(out: &'a [u8], key: &str) -> Option<&'a str> {
        super::field(out, key)
    }

    /// A path the script printed, when acceptable.
    pub fn clean_path(s: &str) -> Option<String> {
        super::clean_path(s)
    }

    /// A seed wrapper's `backup` reply: exactly one line.
    pub fn backup_line(out: Vec<u8>) -> Result<String, RemoteError> {
        super::WrapperRemote::one_line("backup", out)
    }

    /// A `list` reply as backups of `path`.
    pub fn listing(path: &str, out: Vec<u8>) -> Result<Vec<BackupEntry>, RemoteError> {
        super::parse_listing(path, out)
    }
}

impl<'s> WrapperRemote<'s> {
    pub fn new(session: &'s Session, config_path: &str, opts: RemoteOptions) -> Self {
        WrapperRemote {
            session,
            label: config_path.to_string(),
            opts,
            proto: OnceLock::new(),
        }
    }

    /// The protocol detected so far (`None` before the first verb).
    pub fn protocol(&self) -> Option<&Protocol> {
        self.proto.get()
    }

    /// Send `command` (with `stdin`) and collect its bounded output.
    async fn exec(
        &self,
        op: &'static str,
        command: &str,
        stdin: Option<&[u8]>,
        timeout: Duration,
        cap: usize,
    ) -> Result<ExecOutput, RemoteError> {
        self.session
            .exec(command, stdin, timeout, cap)
            .await
            .map_err(|e| transport_err(op, timeout, e))
    }

    /// Learn the protocol with `hello` unless known.
    async fn protocol_or_hello(&self) -> Result<&Protocol, RemoteError> {
        if let Some(p) = self.proto.get() {
            return Ok(p);
        }
        let out = self
            .exec(
                "hello",
                "hello",
                None,
                self.session.op_timeout(),
                MAX_BACKUP_LINE * 2,
            )
            .await?;
        let proto = match (out.status, parse_hello(&out.stdout)) {
            (None, _) => return Err(no_status("hello")),
            (Some(0), Some(parsed)) if !out.truncated => parsed?.0,
            _ => Protocol::Seed,
        };
        Ok(self.proto.get_or_init(|| proto))
    }

    /// The config path for errors: the script's when known.
    fn path(&self) -> String {
        match self.proto.get() {
            Some(Protocol::V1 { path, .. }) => path.clone(),
            _ => self.label.clone(),
        }
    }

    /// The error for a failed protocol-1 verb (exit status per the module
    /// docs of [`super::wrapper_script`]).
    fn v1_error(&self, op: &'static str, verb: &str, out: &ExecOutput) -> RemoteError {
        let path = || {
            field(&out.stdout, "path")
                .and_then(clean_path)
                .unwrap_or_else(|| self.path())
        };
        match out.status {
            Some(status::NOT_FOUND) => RemoteError::NotFound { path: path() },
            Some(status::DENIED) => RemoteError::PermissionDenied { path: path() },
            Some(status::NOT_REGULAR) => match field(&out.stdout, "kind") {
                Some("dir") => RemoteError::IsDirectory { path: path() },
                kind => RemoteError::NotRegular {
                    path: path(),
                    kind: match kind {
                        Some("fifo") => "a FIFO",
                        Some("char") => "a character device",
                        Some("block") => "a block device",
                        Some("socket") => "a socket",
                        _ => "not a regular file (or a symbolic link)",
                    }
                    .into(),
                },
            },
            Some(status::TOO_LARGE) => RemoteError::TooLarge {
                path: path(),
                size: field(&out.stdout, "size")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(self.opts.max_size + 1),
                limit: self.opts.max_size,
            },
            status => RemoteError::Failed {
                op,
                message: format!(
                    "wrapper verb `{verb}` failed (exit {}): {}",
                    status
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "none".into()),
                    stderr_text(out)
                ),
            },
        }
    }

    /// Run a verb that must succeed; its stdout.
    async fn verb(
        &self,
        op: &'static str,
        command: &str,
        stdin: Option<&[u8]>,
        cap: usize,
    ) -> Result<Vec<u8>, RemoteError> {
        let out = self
            .exec(op, command, stdin, self.session.op_timeout(), cap)
            .await?;
        self.check(op, command, out, cap)
    }

    fn check(
        &self,
        op: &'static str,
        command: &str,
        out: ExecOutput,
        cap: usize,
    ) -> Result<Vec<u8>, RemoteError> {
        let verb = command.split(' ').next().unwrap_or(command);
        match out.status {
            None => Err(no_status(op)),
            Some(0) if out.truncated => Err(RemoteError::OutputTooLong {
                op,
                limit: cap as u64,
            }),
            Some(0) => Ok(out.stdout),
            _ if matches!(self.proto.get(), Some(Protocol::V1 { .. })) => {
                Err(self.v1_error(op, verb, &out))
            }
            Some(status) => Err(RemoteError::Failed {
                op,
                message: format!(
                    "wrapper verb `{verb}` failed (exit {status}): {}",
                    stderr_text(&out)
                ),
            }),
        }
    }

    /// A `read 1` / `read-backup` reply: header, file line, bytes.
    fn parse_file(&self, op: &'static str, out: &[u8]) -> Result<RemoteFile, RemoteError> {
        let malformed = || RemoteError::Failed {
            op,
            message: "the forced-command script sent a malformed reply".into(),
        };
        let (_, rest) = parse_hello(out).ok_or_else(malformed)??;
        let (meta, bytes) = parse_file_line(rest).ok_or_else(malformed)?;
        self.file(bytes.to_vec(), meta.mode, meta.owner)
    }

    fn file(
        &self,
        bytes: Vec<u8>,
        mode: Option<u32>,
        owner: Option<(u32, u32)>,
    ) -> Result<RemoteFile, RemoteError> {
        if bytes.len() as u64 > self.opts.max_size {
            return Err(RemoteError::TooLarge {
                path: self.path(),
                size: bytes.len() as u64,
                limit: self.opts.max_size,
            });
        }
        Ok(RemoteFile { bytes, mode, owner })
    }

    fn read_cap(&self) -> usize {
        (self.opts.max_size as usize).saturating_add(HEADER_SLACK)
    }

    /// Output over the cap while reading a file means the file is too large.
    fn too_large(&self, e: RemoteError) -> RemoteError {
        match e {
            RemoteError::OutputTooLong { .. } => RemoteError::TooLarge {
                path: self.path(),
                size: self.opts.max_size + 1,
                limit: self.opts.max_size,
            },
            other => other,
        }
    }

    /// The plain `read` of a seed-style wrapper.
    async fn seed_read(&self) -> Result<RemoteFile, RemoteError> {
        let cap = self.opts.max_size as usize;
        let bytes = self
            .verb("read", "read", None, cap)
            .await
            .map_err(|e| self.too_large(e))?;
        self.file(bytes, None, None)
    }

    /// Refuse to change the host through a seed-style wrapper unless the
    /// caller accepted unverified writes.
    fn seed_write_allowed(&self) -> Result<(), RemoteError> {
        if self.opts.unverified_wrapper_write {
            return Ok(());
        }
        Err(RemoteError::Unsupported {
            op: UNVERIFIED_WRITE_OP,
            why: "the forced command is a seed-style wrapper (plain verbs read, backup, write, \
                  restart) whose `write` cannot tell a dropped connection from a short file, so it \
                  could install a truncated config"
                .into(),
            instead: None,
        })
    }

    fn unsupported(op: &'static str) -> RemoteError {
        RemoteError::Unsupported {
            op,
            why: "the forced command is a seed-style wrapper (read, backup, write and restart \
                  only); the project's forced-command script offers it"
                .into(),
            instead: Some(Mode::Sftp),
        }
    }

    fn v1_path(&self) -> Option<&str> {
        match self.proto.get() {
            Some(Protocol::V1 { path, .. }) => Some(path),
            _ => None,
        }
    }

    /// One line of text (a backup path), strictly.
    fn one_line(op: &'static str, out: Vec<u8>) -> Result<String, RemoteError> {
        let text = String::from_utf8(out).map_err(|_| RemoteError::Failed {
            op,
            message: "the wrapper printed a non-UTF-8 path".into(),
        })?;
        let line = text.strip_suffix('\n').unwrap_or(&text);
        if line.is_empty() || line.chars().any(char::is_control) {
            return Err(RemoteError::Failed {
                op,
                message: format!(
                    "the wrapper's `backup` must print exactly one line with the backup path, got {:?}",
                    text.chars().take(200).collect::<String>()
                ),
            });
        }
        Ok(line.to_string())
    }

    /// A seed wrapper's backup path: a swapcfg backup name of the config
    /// (of the configured path when one was given, else of whatever it
    /// names before `.bak-`).
    fn check_seed_backup(&self, line: &str) -> Result<(), RemoteError> {
        let config = if self.label.starts_with('/') {
            self.label.as_str()
        } else {
            match line.rfind(".bak-") {
                Some(i) if line.starts_with('/') => &line[..i],
                _ => line,
            }
        };
        super::check_backup_path(config, line)
    }

    /// The `.bak-` suffix of a backup of the script's config.
    fn suffix<'p>(&self, path: &'p str) -> Result<&'p str, RemoteError> {
        let config = self.v1_path().unwrap_or(&self.label);
        super::check_backup_path(config, path)?;
        Ok(&path[config.len() + ".bak-".len()..])
    }
}

impl super::RemoteOps for WrapperRemote<'_> {
    async fn read(&self) -> Result<RemoteFile, RemoteError> {
        match self.proto.get() {
            Some(Protocol::Seed) => return self.seed_read().await,
            Some(Protocol::V1 { .. }) => {
                let out = self
                    .verb("read", "read 1", None, self.read_cap())
                    .await
                    .map_err(|e| self.too_large(e))?;
                return self.parse_file("read", &out);
            }
            None => {}
        }
        // First contact: `read 1` is the project's read and its hello.
        let out = self
            .exec(
                "read",
                "read 1",
                None,
                self.session.op_timeout(),
                self.read_cap(),
            )
            .await?;
        if out.status.is_none() {
            return Err(no_status("read"));
        }
        if out.status == Some(0) {
            if let Some(parsed) = parse_hello(&out.stdout) {
                let (proto, _) = parsed?;
                let _ = self.proto.set(proto);
                if out.truncated {
                    return Err(RemoteError::TooLarge {
                        path: self.path(),
                        size: self.opts.max_size + 1,
                        limit: self.opts.max_size,
                    });
                }
                return self.parse_file("read", &out.stdout);
            }
        } else if stderr_text(&out).starts_with(&format!("{MAGIC} {PROTOCOL}:")) {
            // The project's script, failing (missing file…): its typed error.
            return Err(self.v1_error("read", "read", &out));
        }
        let _ = self.proto.set(Protocol::Seed);
        self.seed_read().await
    }

    async fn backup(&self, current: &RemoteFile, now: SystemTime) -> Result<String, RemoteError> {
        let proto = self.protocol_or_hello().await?.clone();
        let Protocol::V1 { path, verbs } = proto else {
            self.seed_write_allowed()?;
            let out = self.verb("backup", "backup", None, MAX_BACKUP_LINE).await?;
            let line = Self::one_line("backup", out)?;
            self.check_seed_backup(&line)?;
            return Ok(line);
        };
        if self.opts.wrapper_restart && !verbs.iter().any(|v| v == "restart") {
            return Err(RemoteError::Unsupported {
                op: NO_RESTART_OP,
                why: format!(
                    "the script for {path} was generated without a restart command, so it has no \
                     `restart` verb"
                ),
                instead: None,
            });
        }
        let stamp = backup_path("", now);
        let stamp = stamp.trim_start_matches(".bak-");
        let sha = sha256_hex(&current.bytes);
        let out = self
            .exec(
                "backup",
                &format!("backup {stamp} {sha}"),
                None,
                self.session.op_timeout(),
                MAX_BACKUP_LINE,
            )
            .await?;
        if out.status == Some(status::CHANGED) {
            return Err(RemoteError::Changed {
                path,
                expected: sha,
                found: field(&out.stdout, "found")
                    .filter(|s| is_hex64(s))
                    .unwrap_or("unknown")
                    .to_string(),
            });
        }
        let line = Self::one_line(
            "backup",
            self.check("backup", "backup", out, MAX_BACKUP_LINE)?,
        )?;
        super::check_backup_path(&path, &line)?;
        if names::backup_key(&path, &line).map(|k| k.0).as_deref() != Some(stamp) {
            return Err(RemoteError::Failed {
                op: "backup",
                message: format!("the script named the backup {line:?}, not for the stamp {stamp}"),
            });
        }
        Ok(line)
    }

    async fn write(
        &self,
        content: &[u8],
        _like: &RemoteFile,
        expect: Option<&str>,
    ) -> Result<(), RemoteError> {
        // The script gives the new file the config's own owner and mode.
        let proto = self.protocol_or_hello().await?.clone();
        let Protocol::V1 { path, .. } = proto else {
            self.seed_write_allowed()?;
            return self
                .verb(
                    "write",
                    "write",
                    Some(content),
                    crate::limits::MAX_COMMAND_OUTPUT,
                )
                .await
                .map(|_| ());
        };
        let expect = match expect {
            None => "-".to_string(),
            Some(e) if is_hex64(&e.to_ascii_lowercase()) => e.to_ascii_lowercase(),
            Some(e) => {
                return Err(RemoteError::Failed {
                    op: "write",
                    message: format!("expected sha256 {e:?} is not 64 hex digits"),
                })
            }
        };
        let sent = content.len() as u64;
        let sha = sha256_hex(content);
        let out = self
            .exec(
                "write",
                &format!("write {sent} {sha} {expect}"),
                Some(content),
                self.session.op_timeout(),
                crate::limits::MAX_COMMAND_OUTPUT,
            )
            .await?;
        match out.status {
            Some(status::INCOMPLETE) => Err(RemoteError::Incomplete {
                path,
                sent,
                got: field(&out.stdout, "got")
                    .and_then(|g| g.parse().ok())
                    .unwrap_or(0),
            }),
            Some(status::CHANGED) => Err(RemoteError::Changed {
                path,
                expected: expect,
                found: field(&out.stdout, "found")
                    .filter(|s| is_hex64(s))
                    .unwrap_or("unknown")
                    .to_string(),
            }),
            _ => self
                .check("write", "write", out, crate::limits::MAX_COMMAND_OUTPUT)
                .map(|_| ()),
        }
    }

    async fn lock(&self, me: &LockInfo, now: u64, force: bool) -> Result<LockTaken, RemoteError> {
        let proto = self.protocol_or_hello().await?.clone();
        if !proto.offers("lock") {
            return Err(RemoteError::Unsupported {
                op: "lock",
                why: "the forced command is a seed-style wrapper without a lock".into(),
                instead: None,
            });
        }
        let cap = names::MAX_LOCK_RECORD * 2 + 64;
        let out = self
            .exec(
                "lock",
                &format!("lock {now} {}", u8::from(force)),
                Some(me.to_record().as_bytes()),
                self.session.op_timeout(),
                cap,
            )
            .await?;
        if out.status == Some(status::LOCKED) {
            return Err(RemoteError::Locked {
                path: self.path(),
                holder: LockInfo::parse(&out.stdout).map(Box::new),
            });
        }
        let stdout = self.check("lock", "lock", out, cap)?;
        match line(&stdout) {
            Some(("fresh", _)) => Ok(LockTaken::Fresh),
            Some(("took-over", previous)) => Ok(LockTaken::TookOver {
                previous: LockInfo::parse(previous),
            }),
            _ => Err(RemoteError::Failed {
                op: "lock",
                message: "the forced-command script sent a malformed lock reply".into(),
            }),
        }
    }

    async fn unlock(&self, me: &LockInfo) -> Result<(), RemoteError> {
        let proto = self.protocol_or_hello().await?.clone();
        if !proto.offers("unlock") {
            return Ok(());
        }
        let token = &me.token;
        if token.is_empty()
            || token.len() > 128
            || !token
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(RemoteError::Failed {
                op: "unlock",
                message: "the lock token is not lowercase hex".into(),
            });
        }
        self.verb(
            "unlock",
            &format!("unlock {token}"),
            None,
            crate::limits::MAX_COMMAND_OUTPUT,
        )
        .await
        .map(|_| ())
    }

    async fn restart(
        &self,
        _command: &str,
        timeout: Duration,
    ) -> Result<RestartOutcome, RemoteError> {
        // The forced command owns the restart command; `_command` only
        // decided that there is a restart.
        let proto = self.protocol_or_hello().await?;
        if !proto.offers("restart") {
            return Err(RemoteError::Unsupported {
                op: NO_RESTART_OP,
                why: "the script was generated without a restart command, so it has no `restart` verb"
                    .into(),
                instead: None,
            });
        }
        let out = self
            .session
            .exec("restart", None, timeout, crate::limits::MAX_COMMAND_OUTPUT)
            .await;
        super::restart_outcome(out, timeout)
    }

    async fn list_backups(&self) -> Result<Vec<BackupEntry>, RemoteError> {
        let proto = self.protocol_or_hello().await?.clone();
        let Protocol::V1 { path, verbs } = proto else {
            return Err(Self::unsupported("list backups"));
        };
        if !verbs.iter().any(|v| v == "list") {
            return Err(Self::unsupported("list backups"));
        }
        let out = self
            .verb("list backups", "list", None, crate::limits::MAX_LISTING)
            .await?;
        parse_listing(&path, out)
    }

    async fn read_backup(&self, backup: &str) -> Result<RemoteFile, RemoteError> {
        let proto = self.protocol_or_hello().await?;
        if !proto.offers("read-backup") {
            return Err(Self::unsupported("read backup"));
        }
        let suffix = self.suffix(backup)?;
        let out = self
            .verb(
                "read backup",
                &format!("read-backup {suffix}"),
                None,
                self.read_cap(),
            )
            .await
            .map_err(|e| self.too_large(e))?;
        self.parse_file("read backup", &out)
    }

    async fn remove_backup(&self, backup: &str) -> Result<(), RemoteError> {
        let proto = self.protocol_or_hello().await?;
        if !proto.offers("remove") {
            return Err(Self::unsupported("remove backup"));
        }
        let suffix = self.suffix(backup)?;
        self.verb(
            "remove backup",
            &format!("remove {suffix}"),
            None,
            crate::limits::MAX_COMMAND_OUTPUT,
        )
        .await
        .map(|_| ())
    }
    async fn probe(
        &self,
        _queries: &[crate::hostcheck::Query],
    ) -> Result<Vec<crate::hostcheck::Answer>, RemoteError> {
        Err(RemoteError::Unsupported {
            op: "host checks",
            why: "wrapper mode: the forced command has no verb to look at files".into(),
            instead: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_and_file_lines_parse_strictly() {
        let reply =
            b"swapcfg-wrapper 1 read backup write\npath=/etc/c.yaml\nfile 640 0 7\nmodels: {}\n";
        let (proto, rest) = parse_hello(reply).expect("header").expect("v1");
        assert_eq!(
            proto,
            Protocol::V1 {
                path: "/etc/c.yaml".into(),
                verbs: vec!["read".into(), "backup".into(), "write".into()]
            }
        );
        assert!(proto.offers("write") && !proto.offers("restart"));
        let (meta, bytes) = parse_file_line(rest).expect("file line");
        assert_eq!(
            (meta.mode, meta.owner, bytes),
            (Some(0o640), Some((0, 7)), &b"models: {}\n"[..])
        );
        // A seed wrapper's config bytes are not a header.
        assert!(parse_hello(b"models:\n  a: {}\n").is_none());
        assert!(parse_hello(b"swapcfg-wrapper 2 read\npath=/c\n")
            .expect("ours")
            .is_err());
        assert!(parse_hello(b"swapcfg-wrapper 1 read\npath=relative\n")
            .expect("ours")
            .is_err());
        assert!(parse_file_line(b"file 999 0 0\n").is_none(), "not octal");
        assert!(parse_file_line(b"file 644 0 0 extra\n").is_none());
        assert_eq!(field(b"kind=dir\npath=/x\n", "path"), Some("/x"));
        assert_eq!(field(b"kind=dir\n", "path"), None);
    }
}
