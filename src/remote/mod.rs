//! Remote operations on the llama-swap config file: the [`RemoteOps`] seam.
//!
//! Owns: the trait the pipeline is written against, its error type, and the
//! pure backup-name function. Three implementations live in submodules:
//! [`sftp`] (default), [`shell`] (POSIX commands over exec, for hosts without
//! SFTP) and [`wrapper`] (fixed verbs to an authorized_keys forced command).
//!
//! Invariants every implementation keeps: a failed write leaves the old bytes
//! in place (temp file + rename in the same directory); a backup is an
//! independent copy with the old bytes and never wider permissions; an
//! existing file is never overwritten by a backup.

use std::time::{Duration, SystemTime};

/// The config file as read from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    pub bytes: Vec<u8>,
    /// Permission bits (`st_mode & 0o7777`) when the mode can tell.
    pub mode: Option<u32>,
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
    /// Fixed verbs `read`, `backup`, `write`, `restart` to a forced command.
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
    /// mode) next to the config, named by [`backup_path`] for `now`, never
    /// overwriting an existing file. Returns the backup's path.
    async fn backup(&self, current: &RemoteFile, now: SystemTime) -> Result<String, RemoteError>;
    /// Replace the config atomically with `content`, keeping `mode`.
    async fn write(&self, content: &[u8], mode: Option<u32>) -> Result<(), RemoteError>;
    /// Run the restart command (ignored by wrapper mode, which has its own
    /// `restart` verb) with a timeout.
    async fn restart(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<RestartOutcome, RemoteError>;
    /// List backups of the config, oldest first.
    async fn list_backups(&self) -> Result<Vec<BackupEntry>, RemoteError>;
    /// Read a backup file (a path returned by `list_backups` or `backup`).
    async fn read_backup(&self, path: &str) -> Result<RemoteFile, RemoteError>;
    /// Delete a backup file (for `--keep-backups`).
    async fn remove_backup(&self, path: &str) -> Result<(), RemoteError>;
}

/// `<path>.bak-YYYYMMDDTHHMMSSZ` for `now` in UTC. Pure.
pub fn backup_path(config_path: &str, now: SystemTime) -> String {
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{config_path}.bak-{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's civil-from-days algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_name_is_utc_compact_iso8601() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_034_445);
        assert_eq!(
            backup_path("/etc/llama-swap/config.yaml", t),
            "/etc/llama-swap/config.yaml.bak-20251125T013405Z"
        );
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_825_600);
        assert_eq!(backup_path("c", leap), "c.bak-20000229T120000Z");
        assert_eq!(
            backup_path("c", SystemTime::UNIX_EPOCH),
            "c.bak-19700101T000000Z"
        );
    }
}

pub mod sftp;
pub mod shell;
pub mod wrapper;

use crate::transport::{ExecOutput, Session, TransportError};

/// Limits shared by the implementations.
#[derive(Debug, Clone, Copy)]
pub struct RemoteOptions {
    /// Largest config (or backup) swapcfg reads, in bytes.
    pub max_size: u64,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            max_size: crate::limits::MAX_CONFIG as u64,
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
            .exec(command, None, timeout, RESTART_OUTPUT_CAP)
            .await,
        timeout,
    )
}

/// Turn an exec result into a restart outcome: non-zero exit is a failure.
pub(crate) fn restart_outcome(
    out: Result<ExecOutput, TransportError>,
    timeout: Duration,
) -> Result<RestartOutcome, RemoteError> {
    let out = out.map_err(|e| match e {
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

/// A backup path must be `<config>.bak-…` in the config's directory, with
/// no path tricks: swapcfg never reads or deletes anything else.
pub(crate) fn check_backup_path(config_path: &str, backup: &str) -> Result<(), RemoteError> {
    let ok = backup
        .strip_prefix(config_path)
        .and_then(|rest| rest.strip_prefix(".bak-"))
        .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'));
    if ok {
        Ok(())
    } else {
        Err(RemoteError::Failed {
            op: "backup",
            message: format!(
                "{backup:?} is not a backup of {config_path} (expected {config_path}.bak-…)"
            ),
        })
    }
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
        Ok(match mode {
            Mode::Sftp => {
                AnyRemote::Sftp(sftp::SftpRemote::open(session, config_path, opts).await?)
            }
            Mode::Shell => AnyRemote::Shell(shell::ShellRemote::new(session, config_path, opts)),
            Mode::Wrapper => AnyRemote::Wrapper(wrapper::WrapperRemote::new(session, opts)),
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
    async fn write(&self, content: &[u8], mode: Option<u32>) -> Result<(), RemoteError> {
        dispatch!(self, r => r.write(content, mode).await)
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
}
