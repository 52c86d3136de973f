//! `RemoteOps` over an authorized_keys forced command: the fixed verbs
//! `read`, `backup`, `write` (content on stdin) and `restart`.
//!
//! Owns: the verb protocol and the bounds on what the wrapper prints.
//! Invariant: nothing but the four verbs is ever sent; a non-zero exit is
//! the failure of that verb, reported with its (bounded) stderr.

use std::time::{Duration, SystemTime};

use super::{BackupEntry, RemoteError, RemoteFile, RemoteOptions, RestartOutcome};
use crate::transport::Session;

/// Longest backup path the wrapper may print.
const MAX_BACKUP_LINE: usize = 4096;

/// Wrapper implementation of [`super::RemoteOps`].
pub struct WrapperRemote<'s> {
    session: &'s Session,
    opts: RemoteOptions,
}

impl<'s> WrapperRemote<'s> {
    pub fn new(session: &'s Session, opts: RemoteOptions) -> Self {
        WrapperRemote { session, opts }
    }

    async fn verb(
        &self,
        op: &'static str,
        stdin: Option<&[u8]>,
        timeout: Duration,
        cap: usize,
    ) -> Result<Vec<u8>, RemoteError> {
        let out = self
            .session
            .exec(op, stdin, timeout, cap)
            .await
            .map_err(|e| match e {
                crate::transport::TransportError::Timeout { .. } => {
                    RemoteError::Timeout { op, after: timeout }
                }
                crate::transport::TransportError::Disconnected { message, .. } => {
                    RemoteError::Disconnected { op, message }
                }
                other => RemoteError::Failed {
                    op,
                    message: other.to_string(),
                },
            })?;
        match out.status {
            Some(0) if out.truncated => Err(RemoteError::OutputTooLong {
                op,
                limit: cap as u64,
            }),
            Some(0) => Ok(out.stdout),
            status => Err(RemoteError::Failed {
                op,
                message: format!(
                    "wrapper verb `{op}` failed (exit {}): {}",
                    status
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "none".into()),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            }),
        }
    }

    fn unsupported(op: &'static str) -> RemoteError {
        RemoteError::Unsupported {
            op,
            why: "the forced-command wrapper only offers read, backup, write and restart".into(),
            instead: Some(super::Mode::Sftp),
        }
    }
}

impl super::RemoteOps for WrapperRemote<'_> {
    async fn read(&self) -> Result<RemoteFile, RemoteError> {
        let cap = self.opts.max_size as usize;
        let bytes = self
            .verb("read", None, self.session.op_timeout(), cap)
            .await
            .map_err(|e| match e {
                RemoteError::OutputTooLong { limit, .. } => RemoteError::TooLarge {
                    path: "(wrapper read)".into(),
                    size: limit + 1,
                    limit,
                },
                other => other,
            })?;
        Ok(RemoteFile {
            bytes,
            ..RemoteFile::default()
        })
    }

    async fn backup(&self, _current: &RemoteFile, _now: SystemTime) -> Result<String, RemoteError> {
        let out = self
            .verb("backup", None, self.session.op_timeout(), MAX_BACKUP_LINE)
            .await?;
        let text = String::from_utf8(out).map_err(|_| RemoteError::Failed {
            op: "backup",
            message: "wrapper printed a non-UTF-8 backup path".into(),
        })?;
        let line = text.trim_end_matches(['\n', '\r']);
        if line.is_empty() || line.contains(['\n', '\0']) {
            return Err(RemoteError::Failed {
                op: "backup",
                message: format!(
                    "wrapper `backup` must print exactly one line with the backup path, got {:?}",
                    text
                ),
            });
        }
        Ok(line.to_string())
    }

    async fn lock(
        &self,
        _me: &super::LockInfo,
        _now: u64,
        _force: bool,
    ) -> Result<super::LockTaken, RemoteError> {
        Err(Self::unsupported("lock"))
    }

    async fn unlock(&self, _me: &super::LockInfo) -> Result<(), RemoteError> {
        Ok(())
    }

    async fn write(
        &self,
        content: &[u8],
        _like: &RemoteFile,
        _expect: Option<&str>,
    ) -> Result<(), RemoteError> {
        self.verb(
            "write",
            Some(content),
            self.session.op_timeout(),
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
        let out = self
            .session
            .exec("restart", None, timeout, crate::limits::MAX_COMMAND_OUTPUT)
            .await;
        super::restart_outcome(out, timeout)
    }

    async fn list_backups(&self) -> Result<Vec<BackupEntry>, RemoteError> {
        Err(Self::unsupported("list backups"))
    }

    async fn read_backup(&self, _path: &str) -> Result<RemoteFile, RemoteError> {
        Err(Self::unsupported("read backup"))
    }

    async fn remove_backup(&self, _path: &str) -> Result<(), RemoteError> {
        Err(Self::unsupported("remove backup"))
    }
}
