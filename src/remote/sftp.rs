//! `RemoteOps` over SFTP (the default mode).
//!
//! Owns: reading with a size cap, exclusive-create backups, atomic writes
//! (temp file in the same directory, fsync when offered,
//! `posix-rename@openssh.com` over the target), symlink resolution, backup
//! listing. Independent requests are pipelined (all chunk reads or writes of
//! a file are in flight at once) because every round trip costs on a VPN.
//!
//! Invariants: the config path always holds the old bytes or the new bytes;
//! without `posix-rename` nothing is written; a handled failure removes its
//! temp file; backups and rewrites never get wider permissions than the
//! original.

use std::time::{Duration, SystemTime};

use futures::future::join_all;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::client::RawSftpSession;
use russh_sftp::protocol::{FileAttributes, OpenFlags, Packet, StatusCode};

use super::{backup_path, BackupEntry, RemoteError, RemoteFile, RemoteOptions, RestartOutcome};
use crate::transport::Session;

/// Bytes per read/write request (OpenSSH's sftp-server serves up to 256 KiB).
const CHUNK: usize = 64 * 1024;
const POSIX_RENAME: &str = "posix-rename@openssh.com";
const FSYNC: &str = "fsync@openssh.com";

/// SFTP implementation of [`super::RemoteOps`] for one config path.
pub struct SftpRemote<'s> {
    session: &'s Session,
    sftp: RawSftpSession,
    path: String,
    opts: RemoteOptions,
    posix_rename: bool,
    fsync: bool,
}

impl<'s> SftpRemote<'s> {
    /// Open the SFTP subsystem on `session` and negotiate extensions.
    pub async fn open(
        session: &'s Session,
        config_path: &str,
        opts: RemoteOptions,
    ) -> Result<SftpRemote<'s>, RemoteError> {
        let channel = session.open_sftp_channel().await?;
        let sftp = RawSftpSession::new(channel.into_stream());
        sftp.set_timeout(session.op_timeout().as_secs().max(1));
        let version = sftp
            .init()
            .await
            .map_err(|e| map_err("sftp init", config_path, session.op_timeout(), e))?;
        Ok(SftpRemote {
            session,
            posix_rename: version.extensions.contains_key(POSIX_RENAME),
            fsync: version.extensions.contains_key(FSYNC),
            sftp,
            path: config_path.to_string(),
            opts,
        })
    }

    fn err(&self, op: &'static str, path: &str, e: SftpError) -> RemoteError {
        map_err(op, path, self.session.op_timeout(), e)
    }

    /// Read a whole file with the size cap, pipelining the chunk reads.
    async fn read_file(&self, path: &str) -> Result<RemoteFile, RemoteError> {
        let (attrs, handle) = tokio::join!(
            self.sftp.stat(path),
            self.sftp
                .open(path, OpenFlags::READ, FileAttributes::empty())
        );
        let attrs = attrs.map_err(|e| self.err("read", path, e))?.attrs;
        if attrs.is_dir() {
            if let Ok(h) = handle {
                let _ = self.sftp.close(h.handle).await;
            }
            return Err(RemoteError::IsDirectory {
                path: path.to_string(),
            });
        }
        let handle = handle.map_err(|e| self.err("read", path, e))?.handle;
        let result = self
            .read_handle(path, &handle, attrs.size.unwrap_or(0))
            .await;
        let _ = self.sftp.close(handle).await;
        let bytes = result?;
        Ok(RemoteFile {
            bytes,
            mode: attrs.permissions.map(|m| m & 0o7777),
        })
    }

    async fn read_handle(
        &self,
        path: &str,
        handle: &str,
        size: u64,
    ) -> Result<Vec<u8>, RemoteError> {
        let limit = self.opts.max_size;
        if size > limit {
            return Err(RemoteError::TooLarge {
                path: path.to_string(),
                size,
                limit,
            });
        }
        // All chunks, plus one read past the stat size (the file may have
        // grown), in flight at once: one round trip for the whole file.
        let offsets: Vec<u64> = (0..size).step_by(CHUNK).collect();
        let (chunks, tail) = tokio::join!(
            join_all(offsets.iter().map(|&off| {
                let len = (size - off).min(CHUNK as u64) as usize;
                self.read_range(path, handle, off, len)
            })),
            self.read_range(path, handle, size, CHUNK)
        );
        let mut bytes = Vec::with_capacity(size as usize);
        for c in chunks {
            bytes.extend_from_slice(&c?);
        }
        let tail = tail?;
        if tail.is_empty() || bytes.len() as u64 != size {
            return Ok(bytes);
        }
        bytes.extend_from_slice(&tail);
        // It did grow: read on until EOF, bounded.
        loop {
            if bytes.len() as u64 > limit {
                return Err(RemoteError::TooLarge {
                    path: path.to_string(),
                    size: bytes.len() as u64,
                    limit,
                });
            }
            let more = self
                .read_range(path, handle, bytes.len() as u64, CHUNK)
                .await?;
            if more.is_empty() {
                break;
            }
            bytes.extend_from_slice(&more);
            if bytes.len() as u64 > limit {
                return Err(RemoteError::TooLarge {
                    path: path.to_string(),
                    size: bytes.len() as u64,
                    limit,
                });
            }
        }
        Ok(bytes)
    }

    /// Read `len` bytes at `off`, looping over short reads; stops at EOF.
    async fn read_range(
        &self,
        path: &str,
        handle: &str,
        off: u64,
        len: usize,
    ) -> Result<Vec<u8>, RemoteError> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let want = (len - out.len()) as u32;
            match self.sftp.read(handle, off + out.len() as u64, want).await {
                Ok(d) if d.data.is_empty() => break,
                Ok(d) => out.extend_from_slice(&d.data[..d.data.len().min(want as usize)]),
                Err(SftpError::Status(s)) if s.status_code == StatusCode::Eof => break,
                Err(e) => return Err(self.err("read", path, e)),
            }
        }
        Ok(out)
    }

    /// Create `path` exclusively and fill it with `content` and `mode`,
    /// pipelining writes, fsync and the mode change. Removes it on failure.
    async fn create_exclusive(
        &self,
        op: &'static str,
        path: &str,
        content: &[u8],
        mode: Option<u32>,
        owner: Option<(Option<u32>, Option<u32>)>,
    ) -> Result<(), RemoteError> {
        let mut attrs = FileAttributes::empty();
        attrs.permissions = Some(0o600);
        let handle = self
            .sftp
            .open(
                path,
                OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUDE,
                attrs,
            )
            .await
            .map_err(|e| self.err(op, path, e))?
            .handle;
        let result = self.fill(op, path, &handle, content, mode, owner).await;
        let closed = self.sftp.close(handle).await;
        let result = result.and(closed.map(|_| ()).map_err(|e| self.err(op, path, e)));
        if result.is_err() {
            let _ = tokio::time::timeout(Duration::from_secs(5), self.sftp.remove(path)).await;
        }
        result
    }

    async fn fill(
        &self,
        op: &'static str,
        path: &str,
        handle: &str,
        content: &[u8],
        mode: Option<u32>,
        owner: Option<(Option<u32>, Option<u32>)>,
    ) -> Result<(), RemoteError> {
        let writes = join_all(
            content
                .chunks(CHUNK)
                .enumerate()
                .map(|(i, c)| self.sftp.write(handle, (i * CHUNK) as u64, c.to_vec())),
        );
        let fsync = async {
            if self.fsync {
                Some(self.sftp.fsync(handle).await)
            } else {
                None
            }
        };
        let chmod = async {
            match mode {
                Some(m) => {
                    let mut a = FileAttributes::empty();
                    a.permissions = Some(m & 0o7777);
                    Some(self.sftp.fsetstat(handle, a).await)
                }
                None => None,
            }
        };
        // Keep the owner where the server lets us; refusal is expected for
        // non-root users and harmless (the file is then theirs already).
        let chown = async {
            if let Some((uid, gid)) = owner {
                let mut a = FileAttributes::empty();
                a.uid = uid;
                a.gid = gid;
                let _ = self.sftp.fsetstat(handle, a).await;
            }
        };
        let (writes, fsync, chmod, ()) = tokio::join!(writes, fsync, chmod, chown);
        for w in writes {
            w.map_err(|e| self.err(op, path, e))?;
        }
        if let Some(r) = fsync {
            r.map_err(|e| self.err(op, path, e))?;
        }
        if let Some(r) = chmod {
            r.map_err(|e| self.err(op, path, e))?;
        }
        Ok(())
    }

    /// The real file behind the config path (the link target for a symlink).
    async fn resolve(&self) -> Result<(String, FileAttributes), RemoteError> {
        let lattrs = self
            .sftp
            .lstat(&self.path)
            .await
            .map_err(|e| self.err("write", &self.path, e))?
            .attrs;
        if !lattrs.is_symlink() {
            return Ok((self.path.clone(), lattrs));
        }
        let real = self
            .sftp
            .realpath(&self.path)
            .await
            .map_err(|e| self.err("write", &self.path, e))?
            .files
            .into_iter()
            .next()
            .map(|f| f.filename)
            .ok_or_else(|| RemoteError::Failed {
                op: "write",
                message: "realpath returned nothing".into(),
            })?;
        let attrs = self
            .sftp
            .stat(&real)
            .await
            .map_err(|e| self.err("write", &real, e))?
            .attrs;
        Ok((real, attrs))
    }

    fn backup_prefix(&self) -> String {
        format!("{}.bak-", file_name(&self.path))
    }
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn dir_name(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(i) => &path[..i],
        None => ".",
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Map an SFTP client error to a [`RemoteError`] naming `path`.
fn map_err(op: &'static str, path: &str, timeout: Duration, e: SftpError) -> RemoteError {
    match e {
        SftpError::Status(s) => match s.status_code {
            StatusCode::NoSuchFile => RemoteError::NotFound {
                path: path.to_string(),
            },
            StatusCode::PermissionDenied => RemoteError::PermissionDenied {
                path: path.to_string(),
            },
            _ => RemoteError::Failed {
                op,
                message: format!("{path}: {}", s.error_message),
            },
        },
        SftpError::Timeout => RemoteError::Timeout { op, after: timeout },
        SftpError::IO(m) => RemoteError::Disconnected { op, message: m },
        SftpError::UnexpectedBehavior(m) if m.contains("closed") => {
            RemoteError::Disconnected { op, message: m }
        }
        other => RemoteError::Failed {
            op,
            message: format!("{path}: {other}"),
        },
    }
}

impl super::RemoteOps for SftpRemote<'_> {
    async fn read(&self) -> Result<RemoteFile, RemoteError> {
        self.read_file(&self.path).await
    }

    async fn backup(&self, current: &RemoteFile, now: SystemTime) -> Result<String, RemoteError> {
        let base = backup_path(&self.path, now);
        for n in 0..100u32 {
            let candidate = if n == 0 {
                base.clone()
            } else {
                format!("{base}.{n}")
            };
            match self
                .create_exclusive("backup", &candidate, &current.bytes, current.mode, None)
                .await
            {
                Ok(()) => return Ok(candidate),
                // SFTP v3 reports EEXIST as a generic failure: look before retrying.
                Err(RemoteError::Failed { .. }) if self.sftp.lstat(&candidate).await.is_ok() => {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
        Err(RemoteError::Failed {
            op: "backup",
            message: format!("{base}: 100 backups already exist for this second"),
        })
    }

    async fn write(&self, content: &[u8], mode: Option<u32>) -> Result<(), RemoteError> {
        if !self.posix_rename {
            return Err(RemoteError::Unsupported {
                op: "write",
                why: format!(
                    "the SFTP server does not offer {POSIX_RENAME}, so {} cannot be replaced atomically; nothing was written",
                    self.path
                ),
                instead: Some(super::Mode::Shell),
            });
        }
        let (real, attrs) = self.resolve().await?;
        let mode = mode.or(attrs.permissions.map(|m| m & 0o7777));
        let tmp = join(
            dir_name(&real),
            &format!(
                ".{}.swapcfg-{:016x}.tmp",
                file_name(&real),
                rand::random::<u64>()
            ),
        );
        let owner = (attrs.uid.is_some() || attrs.gid.is_some()).then_some((attrs.uid, attrs.gid));
        self.create_exclusive("write", &tmp, content, mode, owner)
            .await?;
        let mut data = Vec::new();
        for s in [&tmp, &real] {
            data.extend_from_slice(&(s.len() as u32).to_be_bytes());
            data.extend_from_slice(s.as_bytes());
        }
        let renamed = match self.sftp.extended(POSIX_RENAME, data).await {
            Ok(Packet::Status(s)) if s.status_code == StatusCode::Ok => Ok(()),
            Ok(Packet::Status(s)) => Err(self.err("write", &real, SftpError::Status(s))),
            Ok(_) => Err(RemoteError::Failed {
                op: "write",
                message: "unexpected reply to posix-rename".into(),
            }),
            Err(e) => Err(self.err("write", &real, e)),
        };
        if renamed.is_err() {
            let _ = tokio::time::timeout(Duration::from_secs(5), self.sftp.remove(&tmp)).await;
        }
        renamed
    }

    async fn restart(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<RestartOutcome, RemoteError> {
        super::run_restart(self.session, command, timeout).await
    }

    async fn list_backups(&self) -> Result<Vec<BackupEntry>, RemoteError> {
        let dir = dir_name(&self.path);
        let handle = self
            .sftp
            .opendir(dir)
            .await
            .map_err(|e| self.err("list backups", dir, e))?
            .handle;
        let prefix = self.backup_prefix();
        let mut out = Vec::new();
        let mut result = Ok(());
        for _ in 0..10_000 {
            match self.sftp.readdir(&handle).await {
                Ok(name) => {
                    for f in name.files {
                        if f.filename.starts_with(&prefix) && !f.attrs.is_dir() {
                            out.push(BackupEntry {
                                path: join(dir, &f.filename),
                                size: f.attrs.size.unwrap_or(0),
                                mtime: f.attrs.mtime.map(u64::from),
                            });
                        }
                    }
                }
                Err(SftpError::Status(s)) if s.status_code == StatusCode::Eof => break,
                Err(e) => {
                    result = Err(self.err("list backups", dir, e));
                    break;
                }
            }
        }
        let _ = self.sftp.close(handle).await;
        result?;
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    async fn read_backup(&self, path: &str) -> Result<RemoteFile, RemoteError> {
        super::check_backup_path(&self.path, path)?;
        self.read_file(path).await
    }

    async fn remove_backup(&self, path: &str) -> Result<(), RemoteError> {
        super::check_backup_path(&self.path, path)?;
        self.sftp
            .remove(path)
            .await
            .map(|_| ())
            .map_err(|e| self.err("remove backup", path, e))
    }
}
