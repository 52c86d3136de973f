//! `RemoteOps` over SFTP (the default mode).
//!
//! Owns: reading with a size cap, backups (a `hardlink@openssh.com` link
//! when offered, else an exclusive-create copy), atomic writes (temp file in
//! the same directory, fsync when offered, `posix-rename@openssh.com` over
//! the target), symlink resolution, backup listing. Independent requests
//! are pipelined (all chunk reads or writes of a file are in flight at
//! once), and requests that depend only on being answered in order (the
//! server answers one channel's requests in order) share a flight, because
//! every round trip costs on a VPN. One exception to "open only what was
//! seen to be a regular file": the config's re-open for the hash goes out
//! beside the lstat that proves it still is one; a config turned into a
//! FIFO since the read would hold the server until the request times out.
//!
//! Invariants: the config path always holds the old bytes or the new bytes;
//! without `posix-rename` nothing is written; a handled failure removes its
//! temp file; backups and rewrites never get wider permissions than the
//! original.

use std::time::{Duration, Instant, SystemTime};

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
const HARDLINK: &str = "hardlink@openssh.com";

/// SFTP implementation of [`super::RemoteOps`] for one config path.
pub struct SftpRemote<'s> {
    session: &'s Session,
    sftp: std::sync::Arc<RawSftpSession>,
    /// The config's attributes, asked for together with the SFTP init;
    /// used (once) by the first read instead of a round trip of its own.
    first_stat: std::sync::Mutex<Option<FileAttributes>>,
    path: String,
    opts: RemoteOptions,
    posix_rename: bool,
    fsync: bool,
    /// `hardlink@openssh.com` is offered: backups are links (see
    /// `link_backup`).
    hardlink: bool,
    /// The config path was no symlink when the session opened: a write
    /// may then open it beside the lstat that proves it still is none
    /// (see `op_prepare`), instead of waiting for that lstat first.
    plain: bool,
    /// The lock this session holds, as far as it knows (see `LockState`).
    lock_state: std::sync::Mutex<LockState>,
    /// Set once a request found the connection gone: later requests fail
    /// at once instead of each waiting for its timeout.
    lost: std::sync::atomic::AtomicBool,
    /// The first read's guessed handle was right (the server names handles
    /// as OpenSSH's sftp-server does) and its close went out right behind
    /// its reads, so no handle is open: the next flight (lock ∥ backup ∥
    /// staged write) may guess its handles too ([`first_handle`]). Set by
    /// that read, taken by the staged write that uses it.
    guess: std::sync::atomic::AtomicBool,
}

/// The name OpenSSH's sftp-server gives a handle opened while no other is
/// open: slot 0, four bytes big-endian (`handle_new` takes the slot freed
/// last, and the only slot there is, is free).
fn first_handle() -> String {
    String::from_utf8_lossy(&[0u8; 4]).into_owned()
}

impl<'s> SftpRemote<'s> {
    /// Open the SFTP subsystem on `session` and negotiate extensions.
    ///
    /// Round trips: the SFTP channel and a spare channel for the restart
    /// open side by side (1); the subsystem request, INIT, a stat and an
    /// lstat of the config go out together (1). With `prime`, the spare
    /// channel starts that restart command at once, held at a gate
    /// ([`Session::open_spare_channel`]).
    pub async fn open(
        session: &'s Session,
        config_path: &str,
        opts: RemoteOptions,
        prime: Option<&str>,
    ) -> Result<SftpRemote<'s>, RemoteError> {
        let (stream, ()) = tokio::join!(
            session.open_sftp_stream(),
            session.open_spare_channel(prime.map(|command| (command, config_path)))
        );
        let (io, reply) = stream?;
        let sftp = RawSftpSession::new(io);
        sftp.set_timeout(session.op_timeout().as_secs().max(1));
        let (version, stat, lstat, accepted) = tokio::join!(
            sftp.init(),
            sftp.stat(config_path),
            sftp.lstat(config_path),
            reply.accepted()
        );
        accepted?;
        let version =
            version.map_err(|e| map_err("sftp init", config_path, session.op_timeout(), e))?;
        Ok(SftpRemote {
            session,
            posix_rename: version.extensions.contains_key(POSIX_RENAME),
            fsync: version.extensions.contains_key(FSYNC),
            hardlink: version.extensions.contains_key(HARDLINK),
            sftp: std::sync::Arc::new(sftp),
            first_stat: std::sync::Mutex::new(stat.ok().map(|a| a.attrs)),
            plain: lstat.is_ok_and(|a| !a.attrs.is_symlink()),
            lock_state: Default::default(),
            path: config_path.to_string(),
            opts,
            lost: Default::default(),
            guess: Default::default(),
        })
    }

    fn err(&self, op: &'static str, path: &str, e: SftpError) -> RemoteError {
        let e = map_err(op, path, self.session.op_timeout(), e);
        if matches!(
            e,
            RemoteError::Disconnected { .. } | RemoteError::Timeout { .. }
        ) {
            self.lost.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        e
    }

    /// Run `fut`, but fail at once when the connection ends meanwhile
    /// (russh-sftp would otherwise wait for each request's timeout).
    async fn guard<T>(
        &self,
        op: &'static str,
        fut: impl std::future::Future<Output = Result<T, RemoteError>>,
    ) -> Result<T, RemoteError> {
        self.alive(op)?;
        let r = tokio::select! {
            r = fut => r,
            () = self.session.closed() => {
                self.lost.store(true, std::sync::atomic::Ordering::Relaxed);
                return Err(RemoteError::Disconnected {
                    op,
                    message: self.session.why_closed(),
                });
            }
        };
        match r {
            // The SFTP stream ends with the connection, a moment before the
            // session notices: say why the connection ended, when it did.
            Err(RemoteError::Disconnected { op, message }) => {
                let closed =
                    tokio::time::timeout(Duration::from_millis(300), self.session.closed()).await;
                Err(RemoteError::Disconnected {
                    op,
                    message: if closed.is_ok() {
                        self.session.why_closed()
                    } else {
                        message
                    },
                })
            }
            r => r,
        }
    }

    /// `Err` at once when an earlier request found the connection gone.
    fn alive(&self, op: &'static str) -> Result<(), RemoteError> {
        if self.lost.load(std::sync::atomic::Ordering::Relaxed) {
            Err(RemoteError::Disconnected {
                op,
                message: "the connection to the host was lost earlier".into(),
            })
        } else {
            Ok(())
        }
    }

    /// Read a whole file with the size cap, pipelining the chunk reads.
    /// The file is stat'ed first and opened only if it is a regular file
    /// (opening a FIFO would block the server; a device would never end).
    async fn read_file(&self, path: &str) -> Result<RemoteFile, RemoteError> {
        let first = if path == self.path {
            self.first_stat.lock().ok().and_then(|mut s| s.take())
        } else {
            None
        };
        // The session's first read of the config is its first open.
        let first_open = first.is_some();
        let attrs = match first {
            Some(a) => a,
            None => {
                self.sftp
                    .stat(path)
                    .await
                    .map_err(|e| self.err("read", path, e))?
                    .attrs
            }
        };
        regular(path, &attrs)?;
        let bytes = self
            .read_regular(path, attrs.size.unwrap_or(0), first_open)
            .await?;
        Ok(RemoteFile {
            bytes,
            mode: attrs.permissions.map(|m| m & 0o7777),
            owner: attrs.uid.zip(attrs.gid),
        })
    }

    /// Open `path` (already known to be a regular file of about `size`
    /// bytes) and read it: two round trips; the close is not waited for.
    ///
    /// `first_open`: no handle was opened in this session before, so the
    /// open's handle is guessed — OpenSSH's sftp-server names its first
    /// handle slot 0 (`00 00 00 00`) — and the reads go out right behind the
    /// open, in the same round trip. The server answers in order, so they
    /// read the file just opened exactly when the open returns the guessed
    /// name (names are unique among open handles); any other answer and
    /// their replies are dropped and the file is read again with the real
    /// handle (a wrong guess costs those few requests, never a wrong
    /// byte). Reads change nothing on a host, and the lstat/stat that
    /// proved the file regular came first, as without the guess.
    async fn read_regular(
        &self,
        path: &str,
        size: u64,
        first_open: bool,
    ) -> Result<Vec<u8>, RemoteError> {
        let open = self
            .sftp
            .open(path, OpenFlags::READ, FileAttributes::empty());
        if !(first_open && size <= self.opts.max_size) {
            let handle = open.await.map_err(|e| self.err("read", path, e))?.handle;
            let result = self.read_handle(path, &handle, size).await;
            self.close_later(handle);
            return result;
        }
        // The close goes right behind the reads (on the same guess): when
        // the guess is right, no handle is left open after this flight.
        let guess = first_handle();
        let (opened, early, closed) = tokio::join!(
            open,
            self.read_handle(path, &guess, size),
            self.sftp.close(guess.clone())
        );
        let handle = opened.map_err(|e| self.err("read", path, e))?.handle;
        match early {
            // All of it was read before the close: the file had not grown
            // past its stat size (reads past it went out after the close).
            Ok(bytes) if handle == guess && closed.is_ok() && bytes.len() as u64 == size => {
                // The next flight may guess too, if its backup is a link
                // (a copied backup holds a handle open beside it).
                self.guess.store(
                    self.hardlink && self.plain,
                    std::sync::atomic::Ordering::Relaxed,
                );
                Ok(bytes)
            }
            _ => {
                // The guess was wrong (its reads and close found no such
                // handle), or the file changed size: read it again on a
                // handle of its own (the guessed one is closed already).
                let handle = if handle == guess {
                    self.sftp
                        .open(path, OpenFlags::READ, FileAttributes::empty())
                        .await
                        .map_err(|e| self.err("read", path, e))?
                        .handle
                } else {
                    handle
                };
                let result = self.read_handle(path, &handle, size).await;
                self.close_later(handle);
                result
            }
        }
    }

    /// Close a read handle without waiting for the reply (nothing depends
    /// on it; a failure changes nothing on the host).
    fn close_later(&self, handle: String) {
        if self.alive("close").is_err() {
            return;
        }
        let sftp = self.sftp.clone();
        tokio::spawn(async move {
            let _ = sftp.close(handle).await;
        });
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
        let handle = self.open_exclusive(op, path).await?;
        self.fill_and_close(op, path, handle, content, mode, owner)
            .await
    }

    /// Create `path` exclusively (mode 0600 until it is filled).
    async fn open_exclusive(&self, op: &'static str, path: &str) -> Result<String, RemoteError> {
        let mut attrs = FileAttributes::empty();
        attrs.permissions = Some(0o600);
        Ok(self
            .sftp
            .open(
                path,
                OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUDE,
                attrs,
            )
            .await
            .map_err(|e| self.err(op, path, e))?
            .handle)
    }

    /// Fill a file [`Self::open_exclusive`] created and close it: one round
    /// trip. Removes it on failure.
    async fn fill_and_close(
        &self,
        op: &'static str,
        path: &str,
        handle: String,
        content: &[u8],
        mode: Option<u32>,
        owner: Option<(Option<u32>, Option<u32>)>,
    ) -> Result<(), RemoteError> {
        // The close travels right behind the writes, fsync, mode change
        // and fstat: one round trip for all of them.
        let (result, closed) = tokio::join!(
            self.fill(op, path, &handle, content, mode, owner),
            self.sftp.close(handle.clone())
        );
        if self.alive(op).is_err() {
            // Nothing more can be sent; `clean_up` over a new connection
            // removes the temp file.
            return result;
        }
        let result = result.and(closed.map(|_| ()).map_err(|e| self.err(op, path, e)));
        if result.is_err() {
            self.remove_quietly(path).await;
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
        // Ask for the owner; whether it was kept is read from the fstat
        // below (a non-root SFTP user may not give files away).
        let chown = async {
            if let Some((uid, gid)) = owner {
                let mut a = FileAttributes::empty();
                a.uid = uid;
                a.gid = gid;
                let _ = self.sftp.fsetstat(handle, a).await;
            }
        };
        // Sent after the writes, so the server answers it after them.
        let size = self.sftp.fstat(handle);
        let (writes, fsync, chmod, (), size) = tokio::join!(writes, fsync, chmod, chown, size);
        for w in writes {
            w.map_err(|e| self.err(op, path, e))?;
        }
        let attrs = size.map_err(|e| self.err(op, path, e))?.attrs;
        let got = attrs.size;
        if got != Some(content.len() as u64) {
            return Err(RemoteError::Incomplete {
                path: path.to_string(),
                sent: content.len() as u64,
                got: got.unwrap_or(0),
            });
        }
        if let Some(r) = fsync {
            r.map_err(|e| self.err(op, path, e))?;
        }
        if let Some(r) = chmod {
            r.map_err(|e| self.err(op, path, e))?;
        }
        if let Some((uid, gid)) = owner {
            let kept = uid.is_none_or(|u| attrs.uid == Some(u))
                && gid.is_none_or(|g| attrs.gid == Some(g));
            if !kept {
                if op == "write" {
                    return Err(RemoteError::Failed {
                        op,
                        message: format!(
                            "{path}: the new file cannot be given the config's owner {}:{} (this SFTP user may not chown); nothing was replaced",
                            uid.map(|u| u.to_string()).unwrap_or_else(|| "?".into()),
                            gid.map(|g| g.to_string()).unwrap_or_else(|| "?".into())
                        ),
                    });
                }
                // A backup owned by us instead: readable by nobody else
                // (by path: the handle is closed right behind the fstat).
                let mut a = FileAttributes::empty();
                a.permissions = Some(mode.unwrap_or(0o600) & 0o700);
                self.sftp
                    .setstat(path, a)
                    .await
                    .map_err(|e| self.err(op, path, e))?;
            }
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
            regular(&self.path, &lattrs)?;
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
        regular(&real, &attrs)?;
        Ok((real, attrs))
    }

    /// (size, mtime, mode) of `path`, following links.
    async fn stat_of(&self, path: &str) -> Result<Stat, RemoteError> {
        let a = self
            .sftp
            .stat(path)
            .await
            .map_err(|e| self.err("write", path, e))?
            .attrs;
        Ok((a.size, a.mtime, a.permissions))
    }

    /// A fresh temp name beside `target`, carrying this run's tag.
    fn temp_beside(&self, target: &str) -> String {
        join(
            dir_name(target),
            &format!(
                ".{}.swapcfg-{:016x}-{:08x}.tmp",
                file_name(target),
                self.opts.tag,
                rand::random::<u32>()
            ),
        )
    }

    /// `posix-rename@openssh.com`: replace `to` with `from` atomically.
    async fn posix_rename(&self, from: &str, to: &str) -> Result<(), RemoteError> {
        let mut data = Vec::new();
        for s in [from, to] {
            data.extend_from_slice(&(s.len() as u32).to_be_bytes());
            data.extend_from_slice(s.as_bytes());
        }
        match self.sftp.extended(POSIX_RENAME, data).await {
            Ok(Packet::Status(s)) if s.status_code == StatusCode::Ok => Ok(()),
            Ok(Packet::Status(s)) => Err(self.err("write", to, SftpError::Status(s))),
            Ok(_) => Err(RemoteError::Failed {
                op: "write",
                message: "unexpected reply to posix-rename".into(),
            }),
            Err(e) => Err(self.err("write", to, e)),
        }
    }

    /// Remove temp files a dead apply left beside the config
    /// (`.<name>.swapcfg-<hex>.tmp`, for the config, its backups and its
    /// lock). Best effort: called only after taking over a stale lock.
    async fn remove_stale_temps(&self) {
        self.remove_temps(None).await
    }

    /// Remove swapcfg temp files beside the config: all of them, or only
    /// those carrying `tag`.
    async fn remove_temps(&self, tag: Option<u64>) {
        let dir = dir_name(&self.path);
        let Ok(handle) = self.sftp.opendir(dir).await.map(|h| h.handle) else {
            return;
        };
        let name = file_name(&self.path);
        let tagged = tag.map(|t| format!("{t:016x}-")).unwrap_or_default();
        let prefixes = [
            format!(".{name}.swapcfg-{tagged}"),
            format!(".{name}.swapcfg-lock.swapcfg-{tagged}"),
        ];
        let mut stale = Vec::new();
        for _ in 0..10_000 {
            match self.sftp.readdir(&handle).await {
                Ok(list) => stale.extend(list.files.into_iter().map(|f| f.filename).filter(|n| {
                    prefixes.iter().any(|p| n.starts_with(p.as_str())) && n.ends_with(".tmp")
                })),
                Err(_) => break,
            }
        }
        let _ = self.sftp.close(handle).await;
        join_all(
            stale
                .iter()
                .map(|n| self.remove_quietly_owned(join(dir, n))),
        )
        .await;
    }

    async fn remove_quietly_owned(&self, path: String) {
        self.remove_quietly(&path).await
    }

    async fn remove_quietly(&self, path: &str) {
        if self.alive("remove").is_err() {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.sftp.remove(path)).await;
    }

    /// The lock record at `lock`: `Ok(None)` when there is none or it is
    /// not a swapcfg record; `Err` when the host could not be asked.
    async fn read_lock(&self, lock: &str) -> Result<Option<super::LockInfo>, RemoteError> {
        let handle = match self
            .sftp
            .open(lock, OpenFlags::READ, FileAttributes::empty())
            .await
        {
            Ok(h) => h.handle,
            Err(e) => {
                return match self.err("lock", lock, e) {
                    RemoteError::NotFound { .. } | RemoteError::PermissionDenied { .. } => Ok(None),
                    other => Err(other),
                }
            }
        };
        self.read_lock_handle(lock, handle).await
    }

    /// The lock record behind an open read `handle` (closed after).
    async fn read_lock_handle(
        &self,
        lock: &str,
        handle: String,
    ) -> Result<Option<super::LockInfo>, RemoteError> {
        // The record's size comes with the first read (fstat right behind
        // it): a record read whole needs no second read to meet EOF.
        let want = super::names::MAX_LOCK_RECORD + 1;
        let (first, size) = tokio::join!(
            self.sftp.read(handle.as_str(), 0, want as u32),
            self.sftp.fstat(handle.as_str())
        );
        let data = match (first, size.ok().and_then(|a| a.attrs.size)) {
            (Ok(d), Some(size)) if d.data.len() as u64 >= size => {
                Ok(d.data[..d.data.len().min(want)].to_vec())
            }
            (Err(SftpError::Status(s)), _) if s.status_code == StatusCode::Eof => Ok(Vec::new()),
            _ => self.read_range(lock, &handle, 0, want).await,
        };
        self.close_later(handle);
        Ok(super::LockInfo::parse(&data?))
    }

    /// The compare-and-swap's refusal when the config's hash `found` is not
    /// the `expected` one; `None` when they agree.
    fn changed(&self, expected: &str, found: String) -> Option<RemoteError> {
        (!found.eq_ignore_ascii_case(expected)).then(|| RemoteError::Changed {
            path: self.path.clone(),
            expected: expected.to_string(),
            found,
        })
    }

    fn backup_prefix(&self) -> String {
        format!("{}.bak-", file_name(&self.path))
    }
}

/// A write staged by `prepare_write`: the complete temp file beside the
/// real config file, and the config's (size, mtime, mode) when it was
/// hashed.
#[derive(Debug)]
pub struct StagedWrite {
    tmp: String,
    real: String,
    before: Stat,
    /// The stat sent right behind the hashing reads: what it found, when
    /// its reply came, and how long that round trip took.
    after: Option<(Stat, Instant, Duration)>,
    /// Staged in one flight on guessed handles, each closed in it: no
    /// handle of this session is open, so the commit may guess too.
    idle: bool,
}

/// (size, mtime, mode) of a file.
type Stat = (Option<u64>, Option<u32>, Option<u32>);

/// What this session knows of the lock it holds.
#[derive(Default)]
struct LockState {
    /// The record being written after the exclusive open won the lock.
    filling: Option<tokio::task::JoinHandle<Result<(), SftpError>>>,
    /// The token of the lock this session created or took over.
    held: Option<String>,
    /// A read handle on the lock, opened beside the config's rename.
    reader: Option<String>,
    /// The lock was read back as this token's after the config's rename.
    verified: Option<String>,
}

/// Lease left (by this machine's clock) below which the unlock reads the
/// lock again instead of trusting the read beside the restart: room for
/// clock skew between the hosts running swapcfg.
const LEASE_MARGIN: Duration = Duration::from_secs(60);

/// Write the lock record on the handle the exclusive open returned:
/// write + fsync + mode + fstat + close in one round trip; the fstat's size
/// proves the record landed whole.
async fn fill_lock(
    sftp: std::sync::Arc<RawSftpSession>,
    handle: String,
    record: Vec<u8>,
    fsync: bool,
) -> Result<(), SftpError> {
    let len = record.len() as u64;
    let mut mode = FileAttributes::empty();
    mode.permissions = Some(0o644);
    let (written, synced, chmod, size, closed) = tokio::join!(
        sftp.write(handle.as_str(), 0, record),
        async {
            match fsync {
                true => sftp.fsync(handle.as_str()).await.map(|_| ()),
                false => Ok(()),
            }
        },
        sftp.fsetstat(handle.as_str(), mode),
        sftp.fstat(handle.as_str()),
        sftp.close(handle.as_str())
    );
    written?;
    synced?;
    chmod?;
    closed?;
    match size?.attrs.size {
        Some(n) if n == len => Ok(()),
        got => Err(SftpError::UnexpectedBehavior(format!(
            "the host stored {} of the {len} bytes of the lock record",
            got.unwrap_or(0)
        ))),
    }
}

/// Refuse anything but a regular file, naming what it is.
/// The `n`th name tried for a backup made at `base`'s time: `base`, then
/// `base.1`, `base.2`, … (a name already taken is never replaced).
fn backup_candidate(base: &str, n: u32) -> String {
    if n == 0 {
        base.to_string()
    } else {
        format!("{base}.{n}")
    }
}

fn regular(path: &str, attrs: &FileAttributes) -> Result<(), RemoteError> {
    if attrs.is_dir() {
        return Err(RemoteError::IsDirectory {
            path: path.to_string(),
        });
    }
    let kind = match attrs.permissions.map(|p| p & 0o170000) {
        None | Some(0o100000) => return Ok(()),
        Some(0o010000) => "a FIFO",
        Some(0o020000) => "a character device",
        Some(0o060000) => "a block device",
        Some(0o140000) => "a socket",
        Some(0o120000) => "a symbolic link",
        Some(_) => "not a regular file",
    };
    Err(RemoteError::NotRegular {
        path: path.to_string(),
        kind: kind.into(),
    })
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn owner_of(f: &RemoteFile) -> Option<(Option<u32>, Option<u32>)> {
    f.owner.map(|(u, g)| (Some(u), Some(g)))
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
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
            // OpenSSH answers ENOSPC and EDQUOT with a bare "Failure".
            StatusCode::Failure if matches!(op, "write" | "backup" | "lock") => {
                RemoteError::Failed {
                    op,
                    message: format!(
                        "{path}: the host refused to store the data ({}); a full disk or a quota is the usual cause",
                        s.error_message
                    ),
                }
            }
            _ => RemoteError::Failed {
                op,
                message: format!("{path}: {}", s.error_message),
            },
        },
        SftpError::Timeout => RemoteError::Timeout { op, after: timeout },
        SftpError::IO(m) => RemoteError::Disconnected { op, message: m },
        // russh-sftp reports a closed channel only as text in this variant
        // ("session closed"; "sender dropped" when the stream ended with
        // requests pending).
        SftpError::UnexpectedBehavior(m) if m.contains("closed") || m.contains("sender dropped") => {
            RemoteError::Disconnected { op, message: m }
        }
        other => RemoteError::Failed {
            op,
            message: format!("{path}: {other}"),
        },
    }
}

/// The operations themselves; the trait impl below runs each under
/// [`SftpRemote::guard`].
impl SftpRemote<'_> {
    async fn op_read(&self) -> Result<RemoteFile, RemoteError> {
        self.read_file(&self.path).await
    }

    async fn op_backup(
        &self,
        current: &RemoteFile,
        now: SystemTime,
    ) -> Result<String, RemoteError> {
        if self.hardlink && self.plain {
            if let Some(path) = self.link_backup(current, now).await? {
                return Ok(path);
            }
        }
        // Complete under a temp name first: an interrupted backup never
        // carries a backup's name. Its handle may be open while the staged
        // write's requests go out: no guessing of handles beside it.
        self.guess
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let tmp = self.temp_beside(&self.path);
        self.create_exclusive(
            "backup",
            &tmp,
            &current.bytes,
            current.mode,
            owner_of(current),
        )
        .await?;
        let base = backup_path(&self.path, now);
        for n in 0..100u32 {
            let candidate = backup_candidate(&base, n);
            // SFTP's plain rename never replaces an existing file.
            match self.sftp.rename(&tmp, &candidate).await {
                Ok(_) => return Ok(candidate),
                Err(e) => {
                    if self.sftp.lstat(&candidate).await.is_ok() {
                        continue;
                    }
                    self.remove_quietly(&tmp).await;
                    return Err(self.err("backup", &candidate, e));
                }
            }
        }
        self.remove_quietly(&tmp).await;
        Err(RemoteError::Failed {
            op: "backup",
            message: format!("{base}: 100 backups already exist for this second"),
        })
    }

    /// A backup as a hard link to the config (`hardlink@openssh.com`):
    /// one request, no data sent, complete the moment it has its name
    /// (link(2) never replaces a file), and the same inode, so the same
    /// mode and owner: never wider than the config. An lstat behind the
    /// link (same round trip) proves the new name is a regular file (link
    /// does not follow a symlink) with `current`'s size and mode.
    /// `Ok(None)`: no link could be made (another file system, EPERM from
    /// `fs.protected_hardlinks`, …) or it was not the file read: copy
    /// instead. The apply that follows replaces the config by a rename, so
    /// the backup keeps the old inode and bytes.
    async fn link_backup(
        &self,
        current: &RemoteFile,
        now: SystemTime,
    ) -> Result<Option<String>, RemoteError> {
        let base = backup_path(&self.path, now);
        for n in 0..100u32 {
            let candidate = backup_candidate(&base, n);
            let (linked, seen) = tokio::join!(
                self.sftp.hardlink(self.path.as_str(), candidate.as_str()),
                self.sftp.lstat(candidate.as_str())
            );
            match (linked, seen) {
                (Ok(_), Ok(a)) => {
                    let a = a.attrs;
                    let same = !a.is_symlink()
                        && regular(&candidate, &a).is_ok()
                        && a.size == Some(current.bytes.len() as u64)
                        && current
                            .mode
                            .is_none_or(|m| a.permissions.map(|p| p & 0o7777) == Some(m));
                    if same {
                        return Ok(Some(candidate));
                    }
                    // Not the file read (replaced meanwhile, or a symlink
                    // now): this name is ours, give it up and copy.
                    self.remove_quietly(&candidate).await;
                    return Ok(None);
                }
                (Ok(_), Err(e)) => {
                    let e = self.err("backup", &candidate, e);
                    self.remove_quietly(&candidate).await;
                    return Err(e);
                }
                // The name was taken before: try the next one.
                (Err(_), Ok(_)) => continue,
                (Err(e), Err(_)) => {
                    let e = self.err("backup", &candidate, e);
                    if matches!(
                        e,
                        RemoteError::Disconnected { .. } | RemoteError::Timeout { .. }
                    ) {
                        return Err(e);
                    }
                    return Ok(None);
                }
            }
        }
        Err(RemoteError::Failed {
            op: "backup",
            message: format!("{base}: 100 backups already exist for this second"),
        })
    }

    async fn op_write(
        &self,
        content: &[u8],
        like: &RemoteFile,
        expect: Option<&str>,
    ) -> Result<(), RemoteError> {
        let staged = self.op_prepare(content, like, expect).await?;
        self.op_commit(staged, expect, None).await.written
    }

    /// Stage a write in two round trips: (1) the lstat proving the config
    /// is still a regular file (not a symlink), the exclusive open of the
    /// temp file and the open of the config for reading go out together;
    /// (2) the temp file's writes + fsync + mode + owner + fstat + close,
    /// every read of the config (hashed for the compare-and-swap) and a
    /// stat of it right behind the reads. A config that was a symlink when
    /// the session opened is resolved first (lstat, realpath, stat).
    /// Nothing is replaced yet.
    async fn op_prepare(
        &self,
        content: &[u8],
        like: &RemoteFile,
        expect: Option<&str>,
    ) -> Result<StagedWrite, RemoteError> {
        if !self.posix_rename {
            self.guess
                .store(false, std::sync::atomic::Ordering::Relaxed);
            return Err(RemoteError::Unsupported {
                op: "write",
                why: format!(
                    "the SFTP server does not offer {POSIX_RENAME}, so {} cannot be replaced atomically; nothing was written",
                    self.path
                ),
                instead: Some(super::Mode::Shell),
            });
        }
        if self.plain {
            if let Some(staged) = self
                .stage_at(&self.path, None, content, like, expect)
                .await?
            {
                return Ok(staged);
            }
        }
        let (real, attrs) = self.resolve().await?;
        self.stage_at(&real, Some(attrs), content, like, expect)
            .await?
            .ok_or_else(|| RemoteError::Failed {
                op: "write",
                message: format!("{real}: not a regular file any more; nothing was written"),
            })
    }

    /// [`Self::op_prepare`] for the real file `real`. `known`: its
    /// attributes, already stat'ed; `None` asks for its lstat in the first
    /// round trip, and a symlink there gives `Ok(None)` (nothing left).
    async fn stage_at(
        &self,
        real: &str,
        known: Option<FileAttributes>,
        content: &[u8],
        like: &RemoteFile,
        expect: Option<&str>,
    ) -> Result<Option<StagedWrite>, RemoteError> {
        // Taken whatever happens: only the first staging after the read may
        // guess (later ones may have handles open beside them).
        let guess = self.guess.swap(false, std::sync::atomic::Ordering::Relaxed);
        if guess && known.is_none() && like.mode.is_some() {
            if let Some(staged) = self.stage_guessed(real, content, like, expect).await? {
                return Ok(staged);
            }
        }
        let tmp = self.temp_beside(real);
        let probe = known.is_none();
        let (attrs, created, reader) = tokio::join!(
            async {
                match known {
                    Some(a) => Ok(a),
                    None => self
                        .sftp
                        .lstat(real)
                        .await
                        .map(|a| a.attrs)
                        .map_err(|e| self.err("write", real, e)),
                }
            },
            self.open_exclusive("write", &tmp),
            async {
                match expect {
                    Some(_) => Some(
                        self.sftp
                            .open(real, OpenFlags::READ, FileAttributes::empty())
                            .await
                            .map(|h| h.handle)
                            .map_err(|e| self.err("write", real, e)),
                    ),
                    None => None,
                }
            }
        );
        let reader = reader.transpose();
        let checked = attrs.and_then(|a| {
            if probe && a.is_symlink() {
                return Ok(None);
            }
            regular(real, &a).map(|()| Some(a))
        });
        let (attrs, handle, reader) = match (checked, created, reader) {
            (Ok(Some(a)), Ok(h), Ok(r)) => (a, h, r),
            (checked, created, reader) => {
                let mut first = checked.err();
                match reader {
                    Ok(Some(r)) => self.close_later(r),
                    Ok(None) => {}
                    Err(e) => first = first.or(Some(e)),
                }
                match created {
                    Ok(h) => {
                        self.close_later(h);
                        self.remove_quietly(&tmp).await;
                    }
                    Err(e) => first = first.or(Some(e)),
                }
                return first.map_or(Ok(None), Err);
            }
        };
        let mode = like.mode.or(attrs.permissions.map(|m| m & 0o7777));
        let owner = owner_of(like).or_else(|| {
            (attrs.uid.is_some() || attrs.gid.is_some()).then_some((attrs.uid, attrs.gid))
        });
        // The attributes seen before the bytes were hashed are the "before"
        // of the compare: the stat behind the reads (and, if that is not
        // fresh at the commit, another one) must find the same, proving the
        // file was not changed after the bytes hashed here.
        let before = (attrs.size, attrs.mtime, attrs.permissions);
        let sent = Instant::now();
        let (created, hashed) = tokio::join!(
            self.fill_and_close("write", &tmp, handle, content, mode, owner),
            async {
                let r = reader?;
                let (bytes, after) = tokio::join!(
                    self.read_handle(real, &r, attrs.size.unwrap_or(0)),
                    self.stat_of(real)
                );
                self.close_later(r);
                Some((bytes.map(|b| sha256_hex(&b)), after))
            }
        );
        let flight = sent.elapsed();
        created?;
        self.staged(tmp, real, before, hashed, expect, flight)
            .await
            .map(Some)
    }

    /// The end of a staging whose temp file `tmp` is complete: the
    /// config's hash (`hashed`: of the reads, and the stat behind them)
    /// must be the `expected` one; else, or when they failed, the temp file
    /// is removed. `flight`: that round trip's length.
    async fn staged(
        &self,
        tmp: String,
        real: &str,
        before: Stat,
        hashed: Option<(Result<String, RemoteError>, Result<Stat, RemoteError>)>,
        expect: Option<&str>,
        flight: Duration,
    ) -> Result<StagedWrite, RemoteError> {
        let after = match hashed {
            None => None,
            Some((found, after)) => {
                let refused = match found {
                    Ok(found) => expect.and_then(|expected| self.changed(expected, found)),
                    Err(e) => Some(e),
                };
                if let Some(e) = refused {
                    self.remove_quietly(&tmp).await;
                    return Err(e);
                }
                after.ok()
            }
        };
        Ok(StagedWrite {
            tmp,
            real: real.to_string(),
            before,
            after: after.map(|a| (a, Instant::now(), flight)),
            idle: false,
        })
    }

    /// [`Self::stage_at`] in ONE round trip, when no handle is open (see
    /// `guess`): the lstat proving the config is still a regular file; the
    /// temp file's exclusive open, then on the handle it will get its
    /// writes + fsync + mode + owner + fstat + close; then the config's open
    /// for reading, its reads + close on that same guess, and the stat
    /// behind them. Each open's requests follow it before any other open,
    /// and each ends with its close, so a guessed name means the file just
    /// opened or no handle at all: a request on a wrong guess fails and
    /// changes nothing (the config is only ever opened for reading, last).
    ///
    /// `Ok(Some(outcome))` or `Err(e)`: as [`Self::stage_at`] gives them;
    /// `Ok(None)`: a guess was wrong (a server naming handles unlike
    /// sftp-server), everything undone: stage the ordinary way.
    #[allow(clippy::type_complexity)]
    async fn stage_guessed(
        &self,
        real: &str,
        content: &[u8],
        like: &RemoteFile,
        expect: Option<&str>,
    ) -> Result<Option<Option<StagedWrite>>, RemoteError> {
        let tmp = self.temp_beside(real);
        let guess = first_handle();
        let (mode, owner) = (like.mode, owner_of(like));
        let sent = Instant::now();
        let (attrs, (created, filled, closed), hashed) = tokio::join!(
            self.sftp.lstat(real),
            async {
                tokio::join!(
                    self.open_exclusive("write", &tmp),
                    self.fill("write", &tmp, &guess, content, mode, owner),
                    self.sftp.close(guess.clone())
                )
            },
            async {
                match expect {
                    Some(_) => Some(tokio::join!(
                        async {
                            self.sftp
                                .open(real, OpenFlags::READ, FileAttributes::empty())
                                .await
                                .map(|h| h.handle)
                        },
                        self.read_handle(real, &guess, like.bytes.len() as u64),
                        self.sftp.close(guess.clone()),
                        self.stat_of(real)
                    )),
                    None => None,
                }
            }
        );
        let flight = sent.elapsed();
        // Which guesses were right; a handle under another name is closed.
        let mut missed = false;
        let created = match created {
            Ok(h) if h == guess => Ok(()),
            Ok(h) => {
                missed = true;
                self.close_later(h);
                Ok(())
            }
            Err(e) => Err(e),
        };
        let hashed = hashed.map(|(opened, bytes, _, after)| match opened {
            Ok(h) if h == guess => Ok((bytes, after)),
            Ok(h) => {
                missed = true;
                self.close_later(h);
                Err(None)
            }
            Err(e) => Err(Some(self.err("write", real, e))),
        });
        if missed {
            if created.is_ok() {
                self.remove_quietly(&tmp).await;
            }
            return Ok(None);
        }
        let checked = attrs
            .map(|a| a.attrs)
            .map_err(|e| self.err("write", real, e))
            .and_then(|a| {
                if a.is_symlink() {
                    return Ok(None);
                }
                regular(real, &a).map(|()| Some(a))
            });
        // The temp file, whole and closed, or removed.
        let created = created
            .and_then(|()| filled.and(closed.map(|_| ()).map_err(|e| self.err("write", &tmp, e))));
        let fail = |e: Option<RemoteError>| async {
            if self.alive("write").is_ok() {
                self.remove_quietly(&tmp).await;
            }
            e.map_or(Ok(Some(None)), Err)
        };
        let attrs = match checked {
            Ok(Some(a)) => a,
            Ok(None) => return fail(None).await,
            Err(e) => return fail(Some(e)).await,
        };
        if let Err(e) = created {
            return fail(Some(e)).await;
        }
        let hashed = match hashed {
            None => None,
            Some(Err(e)) => return fail(e).await,
            Some(Ok((bytes, after))) => Some((bytes.map(|b| sha256_hex(&b)), after)),
        };
        let before = (attrs.size, attrs.mtime, attrs.permissions);
        self.staged(tmp, real, before, hashed, expect, flight)
            .await
            .map(|staged| {
                Some(Some(StagedWrite {
                    idle: true,
                    ..staged
                }))
            })
    }

    /// Finish a staged write: `posix-rename` (1 round trip), after the lock
    /// record (if this session wrote one) is known to be complete. The
    /// stat behind the hashing reads proves the config is still the file
    /// hashed when it is fresh (its reply came less than a tenth of that
    /// round trip ago: the rename then follows the check as closely as a
    /// stat of its own would); else it is stat'ed again (1 more). A read
    /// handle on the lock goes out beside the rename, for
    /// [`super::RemoteOps::recheck_lock`].
    async fn op_commit(
        &self,
        staged: StagedWrite,
        expect: Option<&str>,
        restart: Option<(&str, Duration, &[u8])>,
    ) -> super::Committed {
        let StagedWrite {
            tmp,
            real,
            before,
            after,
            idle,
        } = staged;
        // Handles stay open from here on (the lock's reader): no guessing
        // but the lock's read-back below, on a staging that left none open.
        self.guess
            .store(false, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut st) = self.lock_state.lock() {
            st.verified = None;
        }
        if let Some(expected) = expect {
            let after = match after {
                Some((a, at, flight)) if at.elapsed() <= flight / 10 => Ok(a),
                _ => self.stat_of(&real).await,
            };
            let unchanged = match after {
                Ok(after) => after == before,
                Err(e) => {
                    self.remove_quietly(&tmp).await;
                    return super::Committed::alone(Err(e));
                }
            };
            if !unchanged {
                // Changed after it was hashed: only the same bytes may be
                // replaced; say what is there now.
                let found = self
                    .read_file(&real)
                    .await
                    .map(|f| sha256_hex(&f.bytes))
                    .unwrap_or_else(|_| "(unreadable)".into());
                if let Some(e) = self.changed(expected, found) {
                    self.remove_quietly(&tmp).await;
                    return super::Committed::alone(Err(e));
                }
            }
        }
        if let Err(e) = self.finish_lock().await {
            self.remove_quietly(&tmp).await;
            return super::Committed::alone(Err(e));
        }
        let held = self.lock_state.lock().ok().and_then(|s| s.held.clone());
        let lock = super::names::lock_path(&self.path);
        // In one flight: the rename; the lock's read handle (on a guessed
        // name, its read + fstat + close too); the restart's gate line.
        let renamed = async {
            tokio::join!(self.posix_rename(&tmp, &real), async {
                match &held {
                    Some(token) => self.open_lock_reader(&lock, token, idle).await,
                    None => None,
                }
            })
        };
        let restarted = async {
            match restart {
                Some((command, timeout, content)) => {
                    super::run_restart_after(self.session, command, content, timeout).await
                }
                None => None,
            }
        };
        let mut restarted = std::pin::pin!(restarted);
        let mut renamed = std::pin::pin!(renamed);
        // The rename's requests first on the wire; a failed rename does not
        // wait for the gate (which gives up by itself, having run nothing).
        let ((renamed, reader), written_at, restarted) = tokio::select! {
            biased;
            r = &mut renamed => {
                let at = std::time::Instant::now();
                let done = if r.0.is_ok() { restarted.await } else { None };
                (r, at, done)
            }
            done = &mut restarted => {
                let r = renamed.await;
                (r, std::time::Instant::now(), done)
            }
        };
        if let Some(r) = reader {
            let old = self
                .lock_state
                .lock()
                .ok()
                .and_then(|mut s| s.reader.replace(r));
            if let Some(old) = old {
                self.close_later(old);
            }
        }
        if renamed.is_err() {
            self.remove_quietly(&tmp).await;
            return super::Committed::alone(renamed);
        }
        super::Committed {
            written: renamed,
            written_at,
            restart: restarted,
        }
    }

    /// Open the lock for reading beside the commit. On a session with no
    /// handle open (`idle`), its read + fstat + close go out right behind
    /// the open on the name sftp-server gives (slot 0): read back as
    /// `token`'s, it is remembered as verified and no handle is left.
    /// Otherwise (or on a wrong guess) the handle is returned for
    /// [`Self::op_recheck_lock`].
    async fn open_lock_reader(&self, lock: &str, token: &str, idle: bool) -> Option<String> {
        let open = async {
            self.sftp
                .open(lock, OpenFlags::READ, FileAttributes::empty())
                .await
                .ok()
                .map(|h| h.handle)
        };
        if !idle {
            return open.await;
        }
        let guess = first_handle();
        let want = super::names::MAX_LOCK_RECORD + 1;
        let (handle, first, size, _) = tokio::join!(
            open,
            self.sftp.read(guess.as_str(), 0, want as u32),
            self.sftp.fstat(guess.as_str()),
            self.sftp.close(guess.clone())
        );
        let handle = handle?;
        if handle != guess {
            return Some(handle);
        }
        let whole = match (first, size.ok().and_then(|a| a.attrs.size)) {
            (Ok(d), Some(size)) if d.data.len() as u64 >= size => Some(d.data),
            _ => None,
        };
        let seen = whole.and_then(|d| super::LockInfo::parse(&d[..d.len().min(want)]));
        if let (Some(seen), Ok(mut st)) = (seen, self.lock_state.lock()) {
            if seen.token == token {
                st.verified = Some(seen.token);
            }
        }
        None
    }

    /// Take the lock: its exclusive open (1 round trip) wins it; the
    /// record (write + fsync + mode + fstat + close) then goes out without
    /// being waited for, beside the next step's first requests. Whether it
    /// landed whole is checked before the config is replaced and before
    /// the unlock ([`Self::finish_lock`]).
    async fn op_lock(
        &self,
        me: &super::LockInfo,
        now: u64,
        force: bool,
    ) -> Result<super::LockTaken, RemoteError> {
        let lock = super::names::lock_path(&self.path);
        let record = me.to_record();
        // No handle open (see `guess`): the record's requests go out right
        // behind the open, on the handle it will get, closing it. Wrong
        // (the open failed, or another name): they found no handle.
        let opened = if self.guess.load(std::sync::atomic::Ordering::Relaxed) {
            let guess = first_handle();
            // Polled once each, in this order, so the open and then the
            // record's requests are on the wire before anything sent after
            // this; only the open's reply is awaited here (the record's are
            // checked before the rename, as below).
            let open = self.open_exclusive("lock", &lock);
            tokio::pin!(open);
            let sent = futures::poll!(open.as_mut());
            let mut fill = Box::pin(fill_lock(
                self.sftp.clone(),
                guess.clone(),
                record.clone().into_bytes(),
                self.fsync,
            ));
            let task = match futures::poll!(fill.as_mut()) {
                std::task::Poll::Ready(r) => tokio::spawn(async move { r }),
                std::task::Poll::Pending => tokio::spawn(fill),
            };
            let opened = match sent {
                std::task::Poll::Ready(r) => r,
                std::task::Poll::Pending => open.await,
            };
            match opened {
                Ok(handle) if handle == guess => {
                    if let Ok(mut st) = self.lock_state.lock() {
                        st.filling = Some(task);
                        st.held = Some(me.token.clone());
                    }
                    return Ok(super::LockTaken::Fresh);
                }
                // Refused, or another name: the record's requests found no
                // handle (left to end on their own).
                other => {
                    self.guess
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                    other
                }
            }
        } else {
            self.open_exclusive("lock", &lock).await
        };
        match opened {
            Ok(handle) => {
                // Polled once here, so its requests are on the wire before
                // anything sent after this returns (order on the channel is
                // order at the server); its replies are awaited later.
                let mut fill = Box::pin(fill_lock(
                    self.sftp.clone(),
                    handle,
                    record.into_bytes(),
                    self.fsync,
                ));
                let task = match futures::poll!(fill.as_mut()) {
                    std::task::Poll::Ready(r) => tokio::spawn(async move { r }),
                    std::task::Poll::Pending => tokio::spawn(fill),
                };
                if let Ok(mut st) = self.lock_state.lock() {
                    st.filling = Some(task);
                    st.held = Some(me.token.clone());
                }
                return Ok(super::LockTaken::Fresh);
            }
            Err(e) if self.sftp.lstat(&lock).await.is_err() => return Err(e),
            Err(_) => {}
        }
        let holder = self.read_lock(&lock).await?;
        let stale = match &holder {
            Some(h) => h.expired(now),
            // No record: abandoned if still empty and old enough.
            None => self.sftp.lstat(&lock).await.is_ok_and(|a| {
                a.attrs.size == Some(0)
                    && a.attrs.mtime.is_some_and(|m| {
                        now.saturating_sub(u64::from(m)) >= super::names::ABANDONED_LOCK_SECS
                    })
            }),
        };
        if !(stale || force) {
            return Err(RemoteError::Locked {
                path: self.path.clone(),
                holder: holder.map(Box::new),
            });
        }
        // Take over atomically; if two take over at once, the last rename
        // wins and the read-back tells the other one.
        let tmp = self.temp_beside(&lock);
        self.create_exclusive("lock", &tmp, record.as_bytes(), Some(0o644), None)
            .await?;
        if let Err(e) = self.posix_rename(&tmp, &lock).await {
            self.remove_quietly(&tmp).await;
            return Err(e);
        }
        match self.read_lock(&lock).await? {
            Some(h) if h.token == me.token => {
                if let Ok(mut st) = self.lock_state.lock() {
                    st.held = Some(me.token.clone());
                }
                // The previous holder is gone: its temp files will never be
                // renamed or removed by it.
                self.remove_stale_temps().await;
                Ok(super::LockTaken::TookOver { previous: holder })
            }
            other => Err(RemoteError::Locked {
                path: self.path.clone(),
                holder: other.map(Box::new),
            }),
        }
    }

    /// Wait for the lock record this session is writing (if any). If it
    /// did not land whole, the lock file (this session's own, created
    /// exclusively) is removed and the error returned.
    async fn finish_lock(&self) -> Result<(), RemoteError> {
        let task = self
            .lock_state
            .lock()
            .ok()
            .and_then(|mut s| s.filling.take());
        let Some(task) = task else {
            return Ok(());
        };
        let lock = super::names::lock_path(&self.path);
        let result = match task.await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => self.err("lock", &lock, e),
            Err(e) => RemoteError::Failed {
                op: "lock",
                message: format!("{lock}: writing the lock record failed: {e}"),
            },
        };
        if let Ok(mut st) = self.lock_state.lock() {
            st.held = None;
        }
        self.remove_quietly(&lock).await;
        Err(result)
    }

    /// Read the lock back through the handle opened beside the rename
    /// (or a new one): 1 round trip, beside the restart. Remembers it when
    /// it is still `me`'s. Nothing to do when the commit's own flight read
    /// it back ([`Self::open_lock_reader`]).
    async fn op_recheck_lock(&self, me: &super::LockInfo) {
        // Read back in the commit's own flight already.
        let (done, reader) = match self.lock_state.lock() {
            Ok(mut s) => (
                s.verified.as_deref() == Some(me.token.as_str()),
                s.reader.take(),
            ),
            Err(_) => (false, None),
        };
        if done {
            return;
        }
        let lock = super::names::lock_path(&self.path);
        let seen = match reader {
            Some(h) => self.read_lock_handle(&lock, h).await,
            None => self.read_lock(&lock).await,
        };
        if let (Ok(Some(h)), Ok(mut st)) = (seen, self.lock_state.lock()) {
            if h.token == me.token {
                st.verified = Some(h.token);
            }
        }
    }

    async fn op_clean_up(&self, me: Option<&super::LockInfo>) -> Result<(), RemoteError> {
        self.remove_temps(Some(self.opts.tag)).await;
        match me {
            Some(me) => self.op_unlock(me).await,
            None => Ok(()),
        }
    }

    /// Remove the lock if it is still `me`'s. Read back as `me`'s beside
    /// the restart ([`Self::op_recheck_lock`]) and with more than
    /// [`LEASE_MARGIN`] of its lease left (nobody may take it over before
    /// the lease ends but with `--break-lock`): removed at once (1 round
    /// trip). Otherwise read first (open; read + fstat: 2) as before.
    async fn op_unlock(&self, me: &super::LockInfo) -> Result<(), RemoteError> {
        if self.finish_lock().await.is_err() {
            // The record never landed and the lock file was removed.
            return Ok(());
        }
        let lock = super::names::lock_path(&self.path);
        let (verified, reader) = match self.lock_state.lock() {
            Ok(mut st) => (st.verified.take(), st.reader.take()),
            Err(_) => (None, None),
        };
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(u64::MAX);
        let leased = now.saturating_add(LEASE_MARGIN.as_secs()) < me.expires;
        let ours = if verified.as_deref() == Some(me.token.as_str()) && leased {
            if let Some(r) = reader {
                self.close_later(r);
            }
            true
        } else {
            let seen = match reader {
                Some(h) => self.read_lock_handle(&lock, h).await?,
                None => self.read_lock(&lock).await?,
            };
            seen.is_some_and(|h| h.token == me.token)
        };
        if !ours {
            return Ok(());
        }
        let removed = self
            .sftp
            .remove(&lock)
            .await
            .map(|_| ())
            .map_err(|e| self.err("unlock", &lock, e));
        if removed.is_ok() {
            if let Ok(mut st) = self.lock_state.lock() {
                st.held = None;
            }
        }
        removed
    }

    async fn op_list_backups(&self) -> Result<Vec<BackupEntry>, RemoteError> {
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
                        // readdir gives lstat attributes: links and
                        // directories named like backups are not backups.
                        if f.filename.starts_with(&prefix)
                            && !f.attrs.is_dir()
                            && !f.attrs.is_symlink()
                        {
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
        Ok(super::order_backups(&self.path, out))
    }

    async fn op_read_backup(&self, path: &str) -> Result<RemoteFile, RemoteError> {
        super::check_backup_path(&self.path, path)?;
        self.read_file(path).await
    }

    async fn op_remove_backup(&self, path: &str) -> Result<(), RemoteError> {
        super::check_backup_path(&self.path, path)?;
        self.sftp
            .remove(path)
            .await
            .map(|_| ())
            .map_err(|e| self.err("remove backup", path, e))
    }
}

impl super::RemoteOps for SftpRemote<'_> {
    async fn read(&self) -> Result<RemoteFile, RemoteError> {
        self.guard("read", self.op_read()).await
    }

    async fn backup(&self, current: &RemoteFile, now: SystemTime) -> Result<String, RemoteError> {
        self.guard("backup", self.op_backup(current, now)).await
    }

    async fn write(
        &self,
        content: &[u8],
        like: &RemoteFile,
        expect: Option<&str>,
    ) -> Result<(), RemoteError> {
        self.guard("write", self.op_write(content, like, expect))
            .await
    }

    async fn prepare_write(
        &self,
        content: &[u8],
        like: &RemoteFile,
        expect: Option<&str>,
    ) -> Result<super::Staged, RemoteError> {
        self.guard("write", self.op_prepare(content, like, expect))
            .await
            .map(|w| super::Staged { sftp: Some(w) })
    }

    async fn commit_write(
        &self,
        staged: super::Staged,
        content: &[u8],
        like: &RemoteFile,
        expect: Option<&str>,
    ) -> Result<(), RemoteError> {
        match staged.sftp {
            Some(w) => {
                self.guard("write", async {
                    self.op_commit(w, expect, None).await.written
                })
                .await
            }
            None => self.write(content, like, expect).await,
        }
    }

    async fn commit_write_restarting(
        &self,
        staged: super::Staged,
        content: &[u8],
        like: &RemoteFile,
        expect: Option<&str>,
        restart: Option<(&str, Duration)>,
    ) -> super::Committed {
        let Some(w) = staged.sftp else {
            return super::Committed::alone(self.write(content, like, expect).await);
        };
        if let Err(e) = self.alive("write") {
            self.remove_quietly(&w.tmp).await;
            return super::Committed::alone(Err(e));
        }
        let restart = restart.map(|(command, timeout)| (command, timeout, content));
        self.op_commit(w, expect, restart).await
    }

    async fn discard_write(&self, staged: super::Staged) {
        if let Some(w) = staged.sftp {
            self.remove_quietly(&w.tmp).await;
        }
    }

    async fn lock(
        &self,
        me: &super::LockInfo,
        now: u64,
        force: bool,
    ) -> Result<super::LockTaken, RemoteError> {
        self.guard("lock", self.op_lock(me, now, force)).await
    }

    async fn unlock(&self, me: &super::LockInfo) -> Result<(), RemoteError> {
        self.guard("unlock", self.op_unlock(me)).await
    }

    fn ordered(&self) -> bool {
        true
    }

    async fn recheck_lock(&self, me: &super::LockInfo) {
        let _ = self
            .guard("lock", async {
                self.op_recheck_lock(me).await;
                Ok(())
            })
            .await;
    }

    async fn clean_up(&self, me: Option<&super::LockInfo>) -> Result<(), RemoteError> {
        self.guard("clean up", self.op_clean_up(me)).await
    }

    async fn restart(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<RestartOutcome, RemoteError> {
        super::run_restart(self.session, command, timeout).await
    }

    async fn list_backups(&self) -> Result<Vec<BackupEntry>, RemoteError> {
        self.guard("list backups", self.op_list_backups()).await
    }

    async fn read_backup(&self, path: &str) -> Result<RemoteFile, RemoteError> {
        self.guard("read backup", self.op_read_backup(path)).await
    }

    async fn remove_backup(&self, path: &str) -> Result<(), RemoteError> {
        self.guard("remove backup", self.op_remove_backup(path))
            .await
    }
    async fn probe(
        &self,
        queries: &[crate::hostcheck::Query],
    ) -> Result<Vec<crate::hostcheck::Answer>, RemoteError> {
        self.guard("host checks", self.op_probe(queries)).await
    }
}

/// Host checks over SFTP: a `stat` and an `lstat` per path, and one `stat`
/// of the login directory (whose owner is taken as the SSH user, to judge
/// permission bits), all sent before any reply is awaited.
impl SftpRemote<'_> {
    async fn op_probe(
        &self,
        queries: &[crate::hostcheck::Query],
    ) -> Result<Vec<crate::hostcheck::Answer>, RemoteError> {
        use crate::hostcheck::{Answer, Query};
        let replies = queries.iter().map(|q| async move {
            match q {
                Query::Path(p) => {
                    let (st, lst) = tokio::join!(self.sftp.stat(p), self.sftp.lstat(p));
                    Ok(Some((st, lst)))
                }
                Query::Command(_) | Query::Env(_) => Ok::<_, RemoteError>(None),
            }
        });
        let (home, replies) = tokio::join!(self.sftp.stat("."), join_all(replies));
        let me = home.ok().and_then(|a| a.attrs.uid);
        let mut out = Vec::with_capacity(queries.len());
        for (q, r) in queries.iter().zip(replies) {
            out.push(match (q, r?) {
                (Query::Command(_), _) => Answer::Unknown(
                    "a bare command name is looked up on the host's PATH only in shell mode".into(),
                ),
                (Query::Env(_), _) => {
                    Answer::Unknown("llama-swap's environment is read only in shell mode".into())
                }
                (Query::Path(p), Some((st, lst))) => self.path_answer(p, st, lst, me)?,
                (Query::Path(_), None) => Answer::Unknown("no reply".into()),
            });
        }
        Ok(out)
    }

    fn path_answer(
        &self,
        path: &str,
        st: Result<russh_sftp::protocol::Attrs, SftpError>,
        lst: Result<russh_sftp::protocol::Attrs, SftpError>,
        me: Option<u32>,
    ) -> Result<crate::hostcheck::Answer, RemoteError> {
        use crate::hostcheck::{access_from_mode, Answer, FileKind, PathFacts};
        let attrs = match st {
            Ok(a) => a.attrs,
            Err(e) => {
                return match self.err("host checks", path, e) {
                    RemoteError::NotFound { .. } => Ok(Answer::Path(PathFacts {
                        kind: lst.is_ok().then_some(FileKind::DanglingLink),
                        ..PathFacts::default()
                    })),
                    e @ (RemoteError::Timeout { .. } | RemoteError::Disconnected { .. }) => Err(e),
                    RemoteError::PermissionDenied { .. } => Ok(Answer::Unknown(
                        "the host refused to stat it (permission denied)".into(),
                    )),
                    other => Ok(Answer::Unknown(other.to_string())),
                };
            }
        };
        let Some(mode) = attrs.permissions else {
            return Ok(Answer::Unknown("the host sent no file type".into()));
        };
        let kind = match mode & 0o170000 {
            0o100000 => FileKind::Regular,
            0o040000 => FileKind::Directory,
            _ => FileKind::Other,
        };
        let access = |bit| {
            attrs
                .uid
                .and_then(|uid| access_from_mode(mode, uid, me, bit))
        };
        Ok(Answer::Path(PathFacts {
            kind: Some(kind),
            readable: access(0o4),
            writable: access(0o2),
            executable: access(0o1),
        }))
    }
}
