//! Remote operations on the llama-swap config file: the [`RemoteOps`] seam.
//!
//! Owns: the trait the pipeline is written against, its error type, and the
//! pure backup-name function. Three implementations live in submodules:
//! [`sftp`] (default), [`shell`] (POSIX commands over exec, for hosts without
//! SFTP) and [`wrapper`] (verbs to an authorized_keys forced command, whose
//! own script [`wrapper_script`] generates).
//!
//! Invariants every implementation keeps:
//! * the config path holds the old bytes or the new bytes, never a mix: the
//!   new bytes go to a temp file in the same directory, are checked (length,
//!   and sha256 where the mode can), synced, given the old owner, group and
//!   mode, and only then renamed over the target;
//! * the rename happens only if the config still holds the bytes the caller
//!   expects (compare-and-swap, checked as late as the mode allows);
//! * only regular files are read or replaced (after following a symlink);
//! * a backup is complete the moment it has its backup name (written under
//!   a temp name and renamed, or — SFTP with `hardlink@openssh.com` — a hard
//!   link to the config, which the write then replaces by a rename), never
//!   overwrites a file and never has wider permissions than the original;
//! * only names swapcfg makes ([`names::backup_key`]) are listed, read or
//!   removed as backups, oldest first by the timestamp in the name;
//! * the lock beside the config is created atomically and removed only by
//!   its holder (matching token).

use std::time::{Duration, SystemTime};

pub mod names;

pub use names::{backup_path, LockInfo};

/// The config file as read from the host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RemoteFile {
    pub bytes: Vec<u8>,
    /// Permission bits (`st_mode & 0o7777`) when the mode can tell.
    pub mode: Option<u32>,
    /// Owner uid and gid when the mode can tell.
    pub owner: Option<(u32, u32)>,
}

/// A write begun by [`RemoteOps::prepare_write`], waiting for
/// [`RemoteOps::commit_write`]. Empty for modes that stage nothing.
#[derive(Debug, Default)]
pub struct Staged {
    pub(crate) sftp: Option<sftp::StagedWrite>,
}

/// What [`RemoteOps::commit_write_restarting`] gives: the commit's result,
/// when its reply came, and the restart's outcome when it was sent with
/// the commit (it may have gone on after that reply: the caller times the
/// restart from `written_at`).
#[derive(Debug)]
pub struct Committed {
    pub written: Result<(), RemoteError>,
    pub written_at: std::time::Instant,
    pub restart: Option<Result<RestartOutcome, RemoteError>>,
}

impl Committed {
    /// The commit's result, no restart sent with it; answered now.
    pub fn alone(written: Result<(), RemoteError>) -> Committed {
        Committed {
            written,
            written_at: std::time::Instant::now(),
            restart: None,
        }
    }
}

/// How the lock was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockTaken {
    /// Nobody held it.
    Fresh,
    /// A holder whose lease had expired (or, with `break_lock`, any holder)
    /// was replaced.
    TookOver { previous: Option<LockInfo> },
}

/// A backup that exists on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupEntry {
    /// Full remote path of the backup file.
    pub path: String,
    pub size: u64,
    /// Modification time, seconds since the Unix epoch (UTC), when known.
    pub mtime: Option<u64>,
}

/// Result of a restart command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartOutcome {
    pub status: Option<u32>,
    /// Bounded, lossily decoded stdout / stderr.
    pub stdout: String,
    pub stderr: String,
}

/// Why a remote operation failed, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{path}: no such file on the host")]
    NotFound { path: String },
    #[error("{path}: permission denied on the host")]
    PermissionDenied { path: String },
    #[error("{path}: is a directory, not a config file")]
    IsDirectory { path: String },
    #[error("{path}: is {kind}, not a regular file; refusing to read or replace it")]
    NotRegular { path: String, kind: String },
    #[error("{path} is locked by another apply: {}", .holder.as_ref().map(|h| h.to_string()).unwrap_or_else(|| format!("holder unknown (no readable lock record; an empty one is taken over once {} s old, or use --break-lock)", names::ABANDONED_LOCK_SECS)))]
    Locked {
        path: String,
        holder: Option<Box<LockInfo>>,
    },
    #[error("{path} changed on the host (sha256 {} where {} was expected); nothing was replaced", short(.found), short(.expected))]
    Changed {
        path: String,
        expected: String,
        found: String,
    },
    #[error(
        "{path}: the host received {got} of {sent} bytes (or other bytes); nothing was replaced"
    )]
    Incomplete { path: String, sent: u64, got: u64 },
    #[error("{path}: file is {size} bytes, over the {limit}-byte limit")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("{op} timed out after {after:?}; the host stopped answering")]
    Timeout { op: &'static str, after: Duration },
    #[error("{op} is not supported in this mode: {why}")]
    Unsupported {
        op: &'static str,
        why: String,
        /// A mode that can do it, when there is one.
        instead: Option<Mode>,
    },
    #[error("restart command exited with status {}: {stderr}", status_text(.status))]
    RestartFailed { status: Option<u32>, stderr: String },
    #[error("{op} failed: {message}")]
    Failed { op: &'static str, message: String },
    #[error("connection lost during {op}: {message}")]
    Disconnected { op: &'static str, message: String },
    #[error("{op}: the host printed more than {limit} bytes")]
    OutputTooLong { op: &'static str, limit: u64 },
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// How swapcfg touches the remote config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The SFTP subsystem (default).
    #[default]
    Sftp,
    /// POSIX shell commands over exec channels (hosts without SFTP).
    Shell,
    /// Verbs to an authorized_keys forced command (the script `swapcfg
    /// wrapper-script` prints, or a seed-style `read`/`backup`/`write`/`restart`).
    Wrapper,
}

impl Mode {
    /// Every mode, in the order help texts list them.
    pub const ALL: [Mode; 3] = [Mode::Sftp, Mode::Shell, Mode::Wrapper];

    /// The mode's name as written in settings (`sftp`, `shell`, `wrapper`).
    pub fn name(self) -> &'static str {
        match self {
            Mode::Sftp => "sftp",
            Mode::Shell => "shell",
            Mode::Wrapper => "wrapper",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown mode {s:?} (expected sftp, shell or wrapper)"))
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

fn status_text(status: &Option<u32>) -> String {
    status
        .map(|s| s.to_string())
        .unwrap_or_else(|| "none (killed by a signal?)".into())
}

/// The seam between the pipeline and the host. One implementation per mode.
///
/// All methods act on the one config path the implementation was built
/// for. Implementations must keep the invariants in the module docs.
#[allow(async_fn_in_trait)]
pub trait RemoteOps {
    /// Read the config file (bounded by the implementation's size cap).
    async fn read(&self) -> Result<RemoteFile, RemoteError>;
    /// Create a backup holding `current` (the bytes just read, with their
    /// mode and owner) next to the config, named by [`backup_path`] for `now`
    /// (`.1`, `.2`… on a collision), written under a temp name and renamed
    /// when complete, never overwriting an existing file. Returns its path.
    async fn backup(&self, current: &RemoteFile, now: SystemTime) -> Result<String, RemoteError>;
    /// Replace the config atomically with `content`, with `like`'s mode and
    /// owner. When `expect` is given (hex sha256), the rename happens only if
    /// the config still holds those bytes, else [`RemoteError::Changed`].
    async fn write(
        &self,
        content: &[u8],
        like: &RemoteFile,
        expect: Option<&str>,
    ) -> Result<(), RemoteError>;
    /// Stage a write of `content` so that it can run beside the backup:
    /// whatever can be done before the config is replaced (SFTP: upload
    /// and sync the temp file, hash the config again). Nothing at the
    /// config path changes. Finish with [`RemoteOps::commit_write`] (same
    /// arguments) or [`RemoteOps::discard_write`]. Default: stage nothing;
    /// `commit_write` then does the whole [`RemoteOps::write`].
    async fn prepare_write(
        &self,
        _content: &[u8],
        _like: &RemoteFile,
        _expect: Option<&str>,
    ) -> Result<Staged, RemoteError> {
        Ok(Staged::default())
    }
    /// Finish a staged write with the guarantees of [`RemoteOps::write`]
    /// (the compare-and-swap against `expect` is checked right before the
    /// rename).
    async fn commit_write(
        &self,
        _staged: Staged,
        content: &[u8],
        like: &RemoteFile,
        expect: Option<&str>,
    ) -> Result<(), RemoteError> {
        self.write(content, like, expect).await
    }
    /// [`RemoteOps::commit_write`], with the restart that follows it sent
    /// in the same flight where the mode can (SFTP with the restart primed:
    /// the host runs `restart` only once the config holds `content`, see
    /// [`crate::transport::gate`]). The second half: `None` when no restart
    /// was sent (run it after a successful commit); `Some` is its outcome —
    /// meaningful only when the commit succeeded (after a failed one the
    /// host's gate runs nothing and gives up by itself). Default: commit
    /// only.
    async fn commit_write_restarting(
        &self,
        staged: Staged,
        content: &[u8],
        like: &RemoteFile,
        expect: Option<&str>,
        _restart: Option<(&str, Duration)>,
    ) -> Committed {
        Committed::alone(self.commit_write(staged, content, like, expect).await)
    }
    /// Give up a staged write (its temp file is removed, best effort).
    async fn discard_write(&self, _staged: Staged) {}
    /// Take the lock beside the config for `me`. A holder whose lease has
    /// expired at `now` (epoch seconds) is replaced; with `force`, any
    /// holder is. Otherwise [`RemoteError::Locked`] naming the holder.
    async fn lock(&self, me: &LockInfo, now: u64, force: bool) -> Result<LockTaken, RemoteError>;
    /// Requests are answered in the order they were sent (SFTP: one
    /// channel, one server process): a [`RemoteOps::lock`] sent first
    /// covers the backup and the staged write sent right behind it, so the
    /// pipeline may send them together (and undo them when the lock is
    /// refused). Default `false`: each exec may run at any time.
    fn ordered(&self) -> bool {
        false
    }
    /// Remove the lock if it is still `me`'s (same token).
    async fn unlock(&self, me: &LockInfo) -> Result<(), RemoteError>;
    /// After the config was replaced, beside the restart: read the lock
    /// back, so that [`RemoteOps::unlock`] at the end need not (SFTP).
    /// Best effort; the unlock reads it itself when this did not prove it
    /// is still `me`'s. Default: nothing.
    async fn recheck_lock(&self, _me: &LockInfo) {}
    /// After a run whose connection was lost: remove the temp files this
    /// run's tag left and the lock if it is still `me`'s. Best effort.
    async fn clean_up(&self, me: Option<&LockInfo>) -> Result<(), RemoteError> {
        match me {
            Some(me) => self.unlock(me).await,
            None => Ok(()),
        }
    }
    /// Run the restart command (ignored by wrapper mode, which has its own
    /// `restart` verb) with a timeout.
    async fn restart(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<RestartOutcome, RemoteError>;
    /// List swapcfg's backups of the config, oldest first (by the name's
    /// timestamp, then its `.N`).
    async fn list_backups(&self) -> Result<Vec<BackupEntry>, RemoteError>;
    /// Read a backup file (a path returned by `list_backups` or `backup`).
    async fn read_backup(&self, path: &str) -> Result<RemoteFile, RemoteError>;
    /// Delete a backup file (for `--keep-backups`).
    async fn remove_backup(&self, path: &str) -> Result<(), RemoteError>;
    /// Host checks: one [`Answer`](crate::hostcheck::Answer) per query, in
    /// order, with every request in flight at once. Reads metadata only
    /// (never a file's bytes, never a variable's value) and writes nothing.
    async fn probe(
        &self,
        queries: &[crate::hostcheck::Query],
    ) -> Result<Vec<crate::hostcheck::Answer>, RemoteError> {
        let _ = queries;
        Err(RemoteError::Unsupported {
            op: "host checks",
            why: "this mode cannot look at the host's files".into(),
            instead: None,
        })
    }
    /// [`read`](Self::read) and [`probe`](Self::probe) at once; a mode may
    /// merge them into one request (shell mode: one exec).
    async fn read_probing(
        &self,
        queries: &[crate::hostcheck::Query],
    ) -> (
        Result<RemoteFile, RemoteError>,
        Result<Vec<crate::hostcheck::Answer>, RemoteError>,
    ) {
        futures::join!(self.read(), self.probe(queries))
    }
}

pub mod sftp;
pub mod shell;
pub mod wrapper;
pub mod wrapper_script;

use crate::transport::{ExecOutput, Session, TransportError};

/// Limits and choices shared by the implementations.
#[derive(Debug, Clone, Copy)]
pub struct RemoteOptions {
    /// Largest config (or backup) swapcfg reads, in bytes.
    pub max_size: u64,
    /// Marks this run's temp files (`.<name>.swapcfg-<tag>-….tmp`) so that
    /// [`RemoteOps::clean_up`] — possibly over a later connection with the
    /// same tag — removes exactly them.
    pub tag: u64,
    /// Wrapper mode: back up and write through a seed-style forced command
    /// (plain `write`: no length, no checksum, so a cut connection can
    /// install a truncated file) instead of refusing.
    pub unverified_wrapper_write: bool,
    /// Wrapper mode: a restart will follow the write, so a forced-command
    /// script without a `restart` verb is refused before anything changes.
    pub wrapper_restart: bool,
    /// SFTP mode: start the restart command's shell on the host right after
    /// connecting, held at a gate until the restart
    /// ([`Session::open_spare_channel`]). Only for a run that will restart.
    pub prime_restart: bool,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            max_size: crate::limits::MAX_CONFIG as u64,
            tag: rand::random(),
            unverified_wrapper_write: false,
            wrapper_restart: false,
            prime_restart: false,
        }
    }
}

/// Bytes of restart output kept (each of stdout and stderr).
const RESTART_OUTPUT_CAP: usize = crate::limits::MAX_COMMAND_OUTPUT;

/// Run a restart command over an exec channel (sftp and shell modes).
pub(crate) async fn run_restart(
    session: &Session,
    command: &str,
    timeout: Duration,
) -> Result<RestartOutcome, RemoteError> {
    restart_outcome(
        session
            .exec_group(command, timeout, RESTART_OUTPUT_CAP)
            .await,
        timeout,
    )
}

/// [`run_restart`] started by its primed gate once the config holds
/// `content` ([`Session::exec_group_after`]). `None`: nothing ran — no
/// primed channel (or the host had closed it), or its gate gave up
/// waiting.
pub(crate) async fn run_restart_after(
    session: &Session,
    command: &str,
    content: &[u8],
    timeout: Duration,
) -> Option<Result<RestartOutcome, RemoteError>> {
    let out = session
        .exec_group_after(command, content, timeout, RESTART_OUTPUT_CAP)
        .await?;
    // Gave up waiting, or the waiting shell ended before its gate opened:
    // nothing ran.
    if matches!(&out, Ok(o) if !o.gate_opened) {
        return None;
    }
    Some(restart_outcome(out, timeout))
}

/// Turn an exec result into a restart outcome: non-zero exit is a failure.
pub(crate) fn restart_outcome(
    out: Result<ExecOutput, TransportError>,
    timeout: Duration,
) -> Result<RestartOutcome, RemoteError> {
    let out = out.map_err(|e| match e {
        e @ (TransportError::CommandTimeout { .. } | TransportError::Cancelled { .. }) => {
            RemoteError::Transport(e)
        }
        TransportError::Timeout { .. } => RemoteError::Timeout {
            op: "restart",
            after: timeout,
        },
        TransportError::Disconnected { message, .. } => RemoteError::Disconnected {
            op: "restart",
            message,
        },
        other => RemoteError::Failed {
            op: "restart",
            message: other.to_string(),
        },
    })?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if out.status != Some(0) {
        return Err(RemoteError::RestartFailed {
            status: out.status,
            stderr,
        });
    }
    Ok(RestartOutcome {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        stderr,
    })
}

/// A backup path must be a name swapcfg makes for this config
/// ([`names::backup_key`]): swapcfg never reads or deletes anything else.
pub(crate) fn check_backup_path(config_path: &str, backup: &str) -> Result<(), RemoteError> {
    if names::is_backup(config_path, backup) {
        Ok(())
    } else {
        Err(RemoteError::Failed {
            op: "backup",
            message: format!(
                "{backup:?} is not a backup of {config_path} (expected {config_path}.bak-YYYYMMDDTHHMMSSZ)"
            ),
        })
    }
}

/// Sort backups oldest first by the timestamp in their names (then `.N`),
/// dropping names swapcfg does not make.
pub(crate) fn order_backups(config_path: &str, list: Vec<BackupEntry>) -> Vec<BackupEntry> {
    let mut keyed: Vec<((String, u32), BackupEntry)> = list
        .into_iter()
        .filter_map(|b| Some((names::backup_key(config_path, &b.path)?, b)))
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    keyed.into_iter().map(|(_, b)| b).collect()
}

/// The mode-dispatching implementation the pipeline and commands use.
pub enum AnyRemote<'s> {
    Sftp(sftp::SftpRemote<'s>),
    Shell(shell::ShellRemote<'s>),
    Wrapper(wrapper::WrapperRemote<'s>),
}

impl<'s> AnyRemote<'s> {
    /// Build the implementation for `mode` on an open session.
    pub async fn open(
        session: &'s Session,
        mode: Mode,
        config_path: &str,
        opts: RemoteOptions,
    ) -> Result<AnyRemote<'s>, RemoteError> {
        Self::open_with_restart(session, mode, config_path, opts, None).await
    }

    /// [`AnyRemote::open`], knowing the restart command the run may send:
    /// primed when `opts.prime_restart` (SFTP mode).
    pub async fn open_with_restart(
        session: &'s Session,
        mode: Mode,
        config_path: &str,
        opts: RemoteOptions,
        restart: Option<&str>,
    ) -> Result<AnyRemote<'s>, RemoteError> {
        Ok(match mode {
            Mode::Sftp => {
                let prime = restart.filter(|_| opts.prime_restart);
                AnyRemote::Sftp(sftp::SftpRemote::open(session, config_path, opts, prime).await?)
            }
            Mode::Shell => AnyRemote::Shell(shell::ShellRemote::new(session, config_path, opts)),
            Mode::Wrapper => {
                AnyRemote::Wrapper(wrapper::WrapperRemote::new(session, config_path, opts))
            }
        })
    }
}

macro_rules! dispatch {
    ($self:ident, $r:ident => $e:expr) => {
        match $self {
            AnyRemote::Sftp($r) => $e,
            AnyRemote::Shell($r) => $e,
            AnyRemote::Wrapper($r) => $e,
        }
    };
}

impl RemoteOps for AnyRemote<'_> {
    async fn read(&self) -> Result<RemoteFile, RemoteError> {
        dispatch!(self, r => r.read().await)
    }
    async fn backup(&self, current: &RemoteFile, now: SystemTime) -> Result<String, RemoteError> {
        dispatch!(self, r => r.backup(current, now).await)
    }
    async fn write(
        &self,
        content: &[u8],
        like: &RemoteFile,
        expect: Option<&str>,
    ) -> Result<(), RemoteError> {
        dispatch!(self, r => r.write(content, like, expect).await)
    }
    async fn prepare_write(
        &self,
        content: &[u8],
        like: &RemoteFile,
        expect: Option<&str>,
    ) -> Result<Staged, RemoteError> {
        dispatch!(self, r => r.prepare_write(content, like, expect).await)
    }
    async fn commit_write(
        &self,
        staged: Staged,
        content: &[u8],
        like: &RemoteFile,
        expect: Option<&str>,
    ) -> Result<(), RemoteError> {
        dispatch!(self, r => r.commit_write(staged, content, like, expect).await)
    }
    async fn commit_write_restarting(
        &self,
        staged: Staged,
        content: &[u8],
        like: &RemoteFile,
        expect: Option<&str>,
        restart: Option<(&str, Duration)>,
    ) -> Committed {
        dispatch!(self, r => r.commit_write_restarting(staged, content, like, expect, restart).await)
    }
    async fn discard_write(&self, staged: Staged) {
        dispatch!(self, r => r.discard_write(staged).await)
    }
    async fn lock(&self, me: &LockInfo, now: u64, force: bool) -> Result<LockTaken, RemoteError> {
        dispatch!(self, r => r.lock(me, now, force).await)
    }
    async fn unlock(&self, me: &LockInfo) -> Result<(), RemoteError> {
        dispatch!(self, r => r.unlock(me).await)
    }
    async fn recheck_lock(&self, me: &LockInfo) {
        dispatch!(self, r => r.recheck_lock(me).await)
    }
    fn ordered(&self) -> bool {
        dispatch!(self, r => r.ordered())
    }
    async fn clean_up(&self, me: Option<&LockInfo>) -> Result<(), RemoteError> {
        dispatch!(self, r => r.clean_up(me).await)
    }
    async fn restart(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<RestartOutcome, RemoteError> {
        dispatch!(self, r => r.restart(command, timeout).await)
    }
    async fn list_backups(&self) -> Result<Vec<BackupEntry>, RemoteError> {
        dispatch!(self, r => r.list_backups().await)
    }
    async fn read_backup(&self, path: &str) -> Result<RemoteFile, RemoteError> {
        dispatch!(self, r => r.read_backup(path).await)
    }
    async fn remove_backup(&self, path: &str) -> Result<(), RemoteError> {
        dispatch!(self, r => r.remove_backup(path).await)
    }
    async fn probe(
        &self,
        queries: &[crate::hostcheck::Query],
    ) -> Result<Vec<crate::hostcheck::Answer>, RemoteError> {
        dispatch!(self, r => r.probe(queries).await)
    }
    async fn read_probing(
        &self,
        queries: &[crate::hostcheck::Query],
    ) -> (
        Result<RemoteFile, RemoteError>,
        Result<Vec<crate::hostcheck::Answer>, RemoteError>,
    ) {
        dispatch!(self, r => r.read_probing(queries).await)
    }
}
