//! The test server's SFTP subsystem, over the real filesystem.
//!
//! Semantics follow OpenSSH's sftp-server where the client can tell the
//! difference: plain `rename` refuses an existing target,
//! `posix-rename@openssh.com` replaces it atomically, `hardlink@openssh.com`
//! links without following a symlink, `fsync@openssh.com`
//! syncs an open handle, symlinks are not followed by `lstat`. Handles and
//! read lengths are bounded.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::sync::Arc;

use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, Handle, Name, OpenFlags, Packet, Status, StatusCode, Version,
};
use russh_sftp::server::StatusReply;

use super::{ConnCtl, FaultAction, Op, Shared};

/// Open handles at once (their names are one byte wide in the last of four,
/// kept below 128 so each is a UTF-8 string, as russh-sftp wants).
const MAX_HANDLES: u32 = 128;
const MAX_READ: u32 = 256 * 1024;
const MAX_DIR_ENTRIES: usize = 10_000;

enum OpenHandle {
    File(fs::File),
    Dir(Option<Vec<File>>),
}

pub(crate) struct SftpHandler {
    shared: Arc<Shared>,
    ctl: Arc<ConnCtl>,
    handles: HashMap<String, OpenHandle>,
    /// Slots closed, the last closed on top (reused first); `slots` were
    /// ever made.
    free: Vec<u32>,
    slots: u32,
}

impl SftpHandler {
    pub(crate) fn new(shared: Arc<Shared>, ctl: Arc<ConnCtl>) -> Self {
        SftpHandler {
            shared,
            ctl,
            handles: HashMap::new(),
            free: Vec::new(),
            slots: 0,
        }
        .starting_at_slot()
    }

    /// Apply the fault plan for `op`: an error reply, or never replying.
    /// `Ok(true)`: do the operation, then call [`Self::lose_reply`].
    async fn check(&self, op: Op) -> Result<bool, StatusReply> {
        match self.shared.fault(op) {
            None | Some(FaultAction::DropAfterStdin(_)) | Some(FaultAction::CloseStdinAfter(_)) => {
                Ok(false)
            }
            Some(FaultAction::DoThenDrop) => Ok(true),
            Some(FaultAction::Slow(d)) => {
                tokio::time::sleep(d).await;
                Ok(false)
            }
            Some(FaultAction::WithholdThenDrop(d)) => {
                tokio::time::sleep(d).await;
                self.ctl.drop_connection();
                self.ctl.hang().await;
                Err(StatusCode::Failure.into())
            }
            Some(FaultAction::Fail) => Err(StatusCode::Failure.with_message("injected failure")),
            Some(FaultAction::PermissionDenied) => {
                Err(StatusCode::PermissionDenied.with_message("Permission denied"))
            }
            Some(FaultAction::Hang) => {
                self.ctl.hang().await;
                Err(StatusCode::Failure.into())
            }
            Some(FaultAction::Drop) => {
                self.ctl.drop_connection();
                self.ctl.hang().await;
                Err(StatusCode::Failure.into())
            }
        }
    }

    /// The operation was done; drop the connection instead of replying.
    async fn lose_reply(&self) -> StatusReply {
        self.ctl.drop_connection();
        self.ctl.hang().await;
        StatusCode::Failure.into()
    }

    fn starting_at_slot(mut self) -> Self {
        self.slots = self.shared.first_handle_slot.min(MAX_HANDLES);
        self
    }

    /// A handle named as OpenSSH's sftp-server names them: a slot number,
    /// four bytes big-endian, the slot closed last reused first, else a new
    /// one (so a session's first handle is slot 0 here as there, and a
    /// client's guess of a handle is right here when it would be there).
    fn insert(&mut self, h: OpenHandle) -> Result<String, StatusReply> {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None if self.slots < MAX_HANDLES => {
                self.slots += 1;
                self.slots - 1
            }
            None => return Err(StatusCode::Failure.with_message("too many open handles")),
        };
        let name = String::from_utf8_lossy(&slot.to_be_bytes()).into_owned();
        self.handles.insert(name.clone(), h);
        Ok(name)
    }

    fn file(&mut self, handle: &str) -> Result<&mut fs::File, StatusReply> {
        match self.handles.get_mut(handle) {
            Some(OpenHandle::File(f)) => Ok(f),
            _ => Err(StatusCode::Failure.with_message("invalid handle")),
        }
    }
}

fn io_err(e: std::io::Error) -> StatusReply {
    let code = match e.kind() {
        std::io::ErrorKind::NotFound => StatusCode::NoSuchFile,
        std::io::ErrorKind::PermissionDenied => StatusCode::PermissionDenied,
        _ => StatusCode::Failure,
    };
    code.with_message(e.to_string())
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Success".into(),
        language_tag: "en-US".into(),
    }
}

fn apply_attrs(path: &std::path::Path, attrs: &FileAttributes) -> std::io::Result<()> {
    if let Some(size) = attrs.size {
        fs::OpenOptions::new()
            .write(true)
            .open(path)?
            .set_len(size)?;
    }
    if let Some(mode) = attrs.permissions {
        fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))?;
    }
    if attrs.uid.is_some() || attrs.gid.is_some() {
        std::os::unix::fs::chown(path, attrs.uid, attrs.gid)?;
    }
    Ok(())
}

/// Read one SSH string (u32 length + bytes) from `data` at `*pos`.
fn take_string(data: &[u8], pos: &mut usize) -> Option<String> {
    let len_bytes: [u8; 4] = data.get(*pos..*pos + 4)?.try_into().ok()?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    let bytes = data.get(*pos + 4..*pos + 4 + len)?;
    *pos += 4 + len;
    Some(String::from_utf8_lossy(bytes).into_owned())
}

impl russh_sftp::server::Handler for SftpHandler {
    type Error = StatusReply;

    fn unimplemented(&self) -> Self::Error {
        StatusCode::OpUnsupported.into()
    }

    async fn init(
        &mut self,
        _version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        let mut v = Version::new();
        if self.shared.posix_rename {
            v.extensions
                .insert("posix-rename@openssh.com".into(), "1".into());
        }
        if self.shared.hardlink {
            v.extensions
                .insert("hardlink@openssh.com".into(), "1".into());
        }
        if self.shared.fsync {
            v.extensions.insert("fsync@openssh.com".into(), "1".into());
        }
        Ok(v)
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        self.check(Op::Open).await?;
        let mut opts = fs::OpenOptions::new();
        opts.read(pflags.contains(OpenFlags::READ))
            .write(pflags.contains(OpenFlags::WRITE) || pflags.contains(OpenFlags::APPEND))
            .append(pflags.contains(OpenFlags::APPEND));
        if pflags.contains(OpenFlags::CREATE) {
            if pflags.contains(OpenFlags::EXCLUDE) {
                opts.create_new(true);
            } else {
                opts.create(true);
            }
        }
        if pflags.contains(OpenFlags::TRUNCATE) {
            opts.truncate(true);
        }
        opts.mode(attrs.permissions.map(|m| m & 0o7777).unwrap_or(0o666));
        let f = opts.open(&filename).map_err(io_err)?;
        if f.metadata().map(|m| m.is_dir()).unwrap_or(false) {
            return Err(StatusCode::Failure.with_message(format!("{filename}: is a directory")));
        }
        let handle = self.insert(OpenHandle::File(f))?;
        Ok(Handle { id, handle })
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        match self.handles.remove(&handle) {
            Some(_) => {
                if let Ok(b) = <[u8; 4]>::try_from(handle.as_bytes()) {
                    self.free.push(u32::from_be_bytes(b));
                }
                Ok(ok(id))
            }
            None => Err(StatusCode::Failure.with_message("invalid handle")),
        }
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, Self::Error> {
        self.check(Op::Read).await?;
        let f = self.file(&handle)?;
        f.seek(SeekFrom::Start(offset)).map_err(io_err)?;
        let mut buf = vec![0u8; len.min(MAX_READ) as usize];
        let n = f.read(&mut buf).map_err(io_err)?;
        if n == 0 && len > 0 {
            return Err(StatusCode::Eof.into());
        }
        buf.truncate(n);
        Ok(Data { id, data: buf })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        let lose = self.check(Op::Write).await?;
        let f = self.file(&handle)?;
        f.seek(SeekFrom::Start(offset)).map_err(io_err)?;
        f.write_all(&data).map_err(io_err)?;
        if lose {
            return Err(self.lose_reply().await);
        }
        Ok(ok(id))
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        self.check(Op::Stat).await?;
        let m = fs::symlink_metadata(&path).map_err(io_err)?;
        let mut attrs = FileAttributes::from(&m);
        // Keep the real file-type bits (symlinks included).
        attrs.permissions = Some(m.mode());
        Ok(Attrs { id, attrs })
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        self.check(Op::Stat).await?;
        let m = fs::metadata(&path).map_err(io_err)?;
        let mut attrs = FileAttributes::from(&m);
        // The full st_mode, file type included, as OpenSSH's server sends.
        attrs.permissions = Some(m.mode());
        Ok(Attrs { id, attrs })
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        self.check(Op::Stat).await?;
        let m = self.file(&handle)?.metadata().map_err(io_err)?;
        let mut attrs = FileAttributes::from(&m);
        attrs.permissions = Some(m.mode());
        Ok(Attrs { id, attrs })
    }

    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        self.check(Op::Setstat).await?;
        apply_attrs(std::path::Path::new(&path), &attrs).map_err(io_err)?;
        Ok(ok(id))
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        self.check(Op::Setstat).await?;
        let f = self.file(&handle)?;
        if let Some(size) = attrs.size {
            f.set_len(size).map_err(io_err)?;
        }
        if let Some(mode) = attrs.permissions {
            f.set_permissions(fs::Permissions::from_mode(mode & 0o7777))
                .map_err(io_err)?;
        }
        if attrs.uid.is_some() || attrs.gid.is_some() {
            std::os::unix::fs::fchown(&*f, attrs.uid, attrs.gid).map_err(io_err)?;
        }
        Ok(ok(id))
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        self.check(Op::Readdir).await?;
        let mut files = Vec::new();
        for entry in fs::read_dir(&path).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            if files.len() >= MAX_DIR_ENTRIES {
                break;
            }
            let Ok(m) = entry.path().symlink_metadata() else {
                continue;
            };
            files.push(File::new(
                entry.file_name().to_string_lossy(),
                FileAttributes::from(&m),
            ));
        }
        let handle = self.insert(OpenHandle::Dir(Some(files)))?;
        Ok(Handle { id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        match self.handles.get_mut(&handle) {
            Some(OpenHandle::Dir(entries)) => match entries.take() {
                Some(files) => Ok(Name { id, files }),
                None => Err(StatusCode::Eof.into()),
            },
            _ => Err(StatusCode::Failure.with_message("invalid handle")),
        }
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        self.check(Op::Remove).await?;
        fs::remove_file(&filename).map_err(io_err)?;
        Ok(ok(id))
    }

    async fn mkdir(
        &mut self,
        id: u32,
        path: String,
        _attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        fs::create_dir(&path).map_err(io_err)?;
        Ok(ok(id))
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Result<Status, Self::Error> {
        fs::remove_dir(&path).map_err(io_err)?;
        Ok(ok(id))
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let p = if path.is_empty() {
            ".".to_string()
        } else {
            path
        };
        let real = fs::canonicalize(&p).map_err(io_err)?;
        Ok(Name {
            id,
            files: vec![File::dummy(real.to_string_lossy())],
        })
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, Self::Error> {
        let lose = self.check(Op::Rename).await?;
        // Like OpenSSH's sftp-server: plain rename never replaces a file.
        if fs::symlink_metadata(&newpath).is_ok() {
            return Err(StatusCode::Failure.with_message(format!("{newpath}: file exists")));
        }
        fs::rename(&oldpath, &newpath).map_err(io_err)?;
        if lose {
            return Err(self.lose_reply().await);
        }
        Ok(ok(id))
    }

    async fn readlink(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let target = fs::read_link(&path).map_err(io_err)?;
        Ok(Name {
            id,
            files: vec![File::dummy(target.to_string_lossy())],
        })
    }

    async fn symlink(
        &mut self,
        id: u32,
        linkpath: String,
        targetpath: String,
    ) -> Result<Status, Self::Error> {
        std::os::unix::fs::symlink(&targetpath, &linkpath).map_err(io_err)?;
        Ok(ok(id))
    }

    async fn extended(
        &mut self,
        id: u32,
        request: String,
        data: Vec<u8>,
    ) -> Result<Packet, Self::Error> {
        let mut pos = 0;
        match request.as_str() {
            "posix-rename@openssh.com" if self.shared.posix_rename => {
                let lose = self.check(Op::Rename).await?;
                let (Some(old), Some(new)) =
                    (take_string(&data, &mut pos), take_string(&data, &mut pos))
                else {
                    return Err(StatusCode::BadMessage.into());
                };
                fs::rename(&old, &new).map_err(io_err)?;
                if lose {
                    return Err(self.lose_reply().await);
                }
                Ok(Packet::Status(ok(id)))
            }
            // link(2): fails on an existing name, does not follow a
            // symlink (links the link itself), as OpenSSH's sftp-server.
            "hardlink@openssh.com" if self.shared.hardlink => {
                self.check(Op::Link).await?;
                let (Some(old), Some(new)) =
                    (take_string(&data, &mut pos), take_string(&data, &mut pos))
                else {
                    return Err(StatusCode::BadMessage.into());
                };
                fs::hard_link(&old, &new).map_err(io_err)?;
                Ok(Packet::Status(ok(id)))
            }
            "fsync@openssh.com" if self.shared.fsync => {
                self.check(Op::Fsync).await?;
                let Some(handle) = take_string(&data, &mut pos) else {
                    return Err(StatusCode::BadMessage.into());
                };
                self.file(&handle)?.sync_all().map_err(io_err)?;
                Ok(Packet::Status(ok(id)))
            }
            _ => Err(StatusCode::OpUnsupported.with_message(format!("{request}: unsupported"))),
        }
    }
}
