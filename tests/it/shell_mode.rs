//! Shell mode keeps the `RemoteOps` contract: through the in-process server
//! (real `/bin/sh`, real filesystem) and, for the key cases, through Debian's
//! OpenSSH sshd. Every failure asserts the remote state afterwards: config
//! bytes, owner and mode, no temp file, no incomplete backup, the lock file.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::common::*;
use swapcfg::remote::{
    backup_path, AnyRemote, LockInfo, LockTaken, RemoteError, RemoteFile, RemoteOps, RemoteOptions,
};
use swapcfg::transport::Session;
use swapcfg_testkit::server::{FaultAction, FaultPlan, Op, TestServerBuilder};

const OLD: &[u8] = b"models:\n  a:\n    cmd: llama-server --port ${PORT}\n";
const NEW: &[u8] = b"models:\n  b:\n    cmd: llama-server --port ${PORT}\n";

fn sha(b: &[u8]) -> String {
    swapcfg::pipeline::sha256_hex(b)
}

/// A valid config of about `mib` MiB (one model, then comment lines).
fn big_config(mib: usize, tag: &str) -> Vec<u8> {
    let mut v = format!("models:\n  {tag}:\n    cmd: llama-server --port ${{PORT}}\n").into_bytes();
    let line = format!("# {tag} {}\n", "x".repeat(100));
    while v.len() < mib * 1024 * 1024 {
        v.extend_from_slice(line.as_bytes());
    }
    v
}

async fn shell_fixture(f: impl FnOnce(TestServerBuilder) -> TestServerBuilder) -> Fixture {
    fixture(|b| f(b.sftp(false))).await
}

/// A session with a generous per-request budget (multi-MB uploads on a
/// loaded CI machine).
async fn slow_session(fx: &Fixture) -> Session {
    let mut o = fx.options();
    o.op_timeout = Duration::from_secs(30);
    Session::connect(&o).await.expect("connect")
}

fn shell<'s>(s: &'s Session, path: &Path) -> AnyRemote<'s> {
    AnyRemote::Shell(swapcfg::remote::shell::ShellRemote::new(
        s,
        &path_str(path),
        RemoteOptions::default(),
    ))
}

/// Temp files swapcfg's scripts make in `dir`.
fn temps(dir: &Path) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| n.starts_with(".swapcfg-"))
        .collect()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Backup-named files (`config.yaml.bak-…`) in `dir`.
fn backup_names(dir: &Path, config: &str) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| n.starts_with(&format!("{config}.bak-")))
        .collect()
}

/// After a dropped connection the remote script may still be finishing:
/// wait (bounded) until its temp file is gone, then return what is left.
async fn settled_temps(dir: &Path) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let t = temps(dir);
        if t.is_empty() || Instant::now() > deadline {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn meta(p: &Path) -> (u32, u32, u32) {
    let m = std::fs::metadata(p).expect("metadata");
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn mkfifo(p: &Path, mode: u32) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), mode as libc::mode_t) }, 0);
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod fifo");
}

/// A character device like /dev/null (1:3), made in a test directory so a
/// bug could only ever touch this node. Root only.
fn mknod_null(p: &Path, mode: u32) -> bool {
    if !is_root() {
        return false;
    }
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: a valid NUL-terminated path; makedev/mknod have no other preconditions.
    let ok = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | mode, libc::makedev(1, 3)) } == 0;
    if ok {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod dev");
    }
    ok
}

fn lock_info(token: &str, started: u64, lease: u64) -> LockInfo {
    LockInfo {
        token: token.into(),
        client: "laptop".into(),
        user: "ann".into(),
        pid: 42,
        started,
        expires: started + lease,
    }
}

fn now_secs() -> u64 {
    swapcfg::pipeline::epoch_now()
}

// ---- in-process server ----

#[tokio::test]
async fn upload_cut_short_never_replaces_the_config() {
    let fx = shell_fixture(|b| b).await;
    let cfg = fx.config("config.yaml", OLD, 0o640);
    let dir = fx.dir.path().to_path_buf();
    let big = big_config(4, "b");
    let mut o = fx.options();
    o.op_timeout = Duration::from_secs(5);
    let s = Session::connect(&o).await.expect("connect");
    let r = shell(&s, &cfg);
    let cur = r.read().await.expect("read");
    let before = meta(&cfg);

    // The connection drops after 1.5 MB of the 4 MB upload.
    fx.server.set_faults(FaultPlan::one(
        Op::Exec,
        fx.server.op_count(Op::Exec) + 1,
        FaultAction::DropAfterStdin(1_500_000),
    ));
    // Usually Disconnected at once; when the drop catches the client
    // waiting for window space, russh reports it only at the timeout.
    let res = r.write(&big, &cur, Some(&sha(OLD))).await;
    assert!(
        matches!(
            res,
            Err(RemoteError::Disconnected { .. }) | Err(RemoteError::Timeout { .. })
        ),
        "{res:?}"
    );
    assert_eq!(
        settled_temps(&dir).await,
        Vec::<String>::new(),
        "temp removed"
    );
    assert_eq!(std::fs::read(&cfg).expect("cfg"), OLD, "old bytes");
    assert_eq!(meta(&cfg), before, "owner and mode");

    // The command's input ends early while the connection stays up: the
    // host reports how much it got, and nothing is replaced.
    let s = slow_session(&fx).await;
    let r = shell(&s, &cfg);
    fx.server.set_faults(FaultPlan::one(
        Op::Exec,
        fx.server.op_count(Op::Exec) + 1,
        FaultAction::CloseStdinAfter(1_000_000),
    ));
    match r.write(&big, &cur, Some(&sha(OLD))).await {
        Err(RemoteError::Incomplete { sent, got, path }) => {
            assert_eq!((sent, got), (big.len() as u64, 1_000_000));
            assert_eq!(path, path_str(&cfg));
        }
        other => panic!("expected Incomplete, got {other:?}"),
    }
    assert_eq!(temps(&dir), Vec::<String>::new());
    assert_eq!(std::fs::read(&cfg).expect("cfg"), OLD);
    assert_eq!(meta(&cfg), before);

    // A backup cut short leaves no backup-named file at all.
    fx.server.set_faults(FaultPlan::one(
        Op::Exec,
        fx.server.op_count(Op::Exec) + 1,
        FaultAction::CloseStdinAfter(10),
    ));
    let res = r.backup(&cur, SystemTime::now()).await;
    assert!(
        matches!(res, Err(RemoteError::Incomplete { got: 10, .. })),
        "{res:?}"
    );
    assert_eq!(backup_names(&dir, "config.yaml"), Vec::<String>::new());
    assert_eq!(temps(&dir), Vec::<String>::new());

    // And the same remote then writes the whole file.
    fx.server.set_faults(FaultPlan::default());
    r.write(&big, &cur, Some(&sha(OLD))).await.expect("write");
    assert_eq!(std::fs::read(&cfg).expect("cfg"), big);
    assert_eq!(meta(&cfg), before);
    assert_eq!(temps(&dir), Vec::<String>::new());
}

#[tokio::test]
async fn compare_and_swap_refuses_a_changed_config() {
    let fx = shell_fixture(|b| b).await;
    let cfg = fx.config("config.yaml", OLD, 0o644);
    let s = fx.session().await;
    let r = shell(&s, &cfg);
    let cur = r.read().await.expect("read");
    let theirs = b"models: {}\n# edited by hand meanwhile\n";
    std::fs::write(&cfg, theirs).expect("edit");
    match r.write(NEW, &cur, Some(&sha(OLD))).await {
        Err(RemoteError::Changed {
            path,
            expected,
            found,
        }) => {
            assert_eq!(path, path_str(&cfg));
            assert_eq!(expected, sha(OLD));
            assert_eq!(found, sha(theirs));
        }
        other => panic!("expected Changed, got {other:?}"),
    }
    assert_eq!(std::fs::read(&cfg).expect("cfg"), theirs, "untouched");
    assert_eq!(temps(fx.dir.path()), Vec::<String>::new());
    // Upper-case hex is the same digest; the matching hash goes through.
    r.write(NEW, &cur, Some(&sha(theirs).to_uppercase()))
        .await
        .expect("write with the current hash");
    assert_eq!(std::fs::read(&cfg).expect("cfg"), NEW);
    // With expect, a config that vanished is not recreated.
    std::fs::remove_file(&cfg).expect("rm");
    let res = r.write(NEW, &cur, Some(&sha(NEW))).await;
    assert!(matches!(res, Err(RemoteError::NotFound { .. })), "{res:?}");
    assert!(!cfg.exists());
    assert_eq!(temps(fx.dir.path()), Vec::<String>::new());
}

#[tokio::test]
async fn planted_symlinks_at_temp_and_backup_names_are_never_followed() {
    let fx = shell_fixture(|b| b).await;
    let dir = fx.dir.path().to_path_buf();
    let cfg = fx.config("config.yaml", OLD, 0o640);
    let victim = fx.config("victim.txt", b"victim bytes\n", 0o600);
    let fifo = dir.join("fifo");
    mkfifo(&fifo, 0o600);
    let dev = dir.join("devnull");
    let have_dev = mknod_null(&dev, 0o600);
    let targets: Vec<&Path> = if have_dev {
        vec![&victim, &fifo, &dev]
    } else {
        vec![&victim, &fifo]
    };
    // The old predictable name `.config.yaml.swapcfg-$$.tmp` for the next
    // pids, and the backup names of this second, all planted.
    let last: u64 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1000);
    let mut planted = Vec::new();
    for (i, pid) in (last + 1..last + 1500).enumerate() {
        let link = dir.join(format!(".config.yaml.swapcfg-{pid}.tmp"));
        let to = targets[i % targets.len()];
        std::os::unix::fs::symlink(to, &link).expect("plant");
        planted.push((link, to.to_path_buf()));
    }
    let now = SystemTime::now();
    let base = backup_path(&path_str(&cfg), now);
    for (name, to) in [(base.clone(), &victim), (format!("{base}.1"), &fifo)] {
        std::os::unix::fs::symlink(to, &name).expect("plant backup name");
        planted.push((PathBuf::from(name), to.to_path_buf()));
    }

    let s = fx.session().await;
    let r = shell(&s, &cfg);
    let cur = r.read().await.expect("read");
    let b = r.backup(&cur, now).await.expect("backup");
    assert_eq!(
        b,
        format!("{base}.2"),
        "planted names skipped, not followed"
    );
    assert_eq!(std::fs::read(&b).expect("backup"), OLD);
    assert!(std::fs::symlink_metadata(&b).expect("lstat").is_file());
    r.write(NEW, &cur, Some(&sha(OLD))).await.expect("write");
    assert_eq!(std::fs::read(&cfg).expect("cfg"), NEW);
    assert!(std::fs::symlink_metadata(&cfg).expect("lstat").is_file());
    assert_eq!(mode_of(&cfg), 0o640);

    // Nothing planted was touched.
    assert_eq!(std::fs::read(&victim).expect("victim"), b"victim bytes\n");
    assert_eq!(mode_of(&victim), 0o600);
    let f = std::fs::symlink_metadata(&fifo).expect("fifo");
    assert!(f.file_type().is_fifo() && f.mode() & 0o7777 == 0o600);
    if have_dev {
        let d = std::fs::symlink_metadata(&dev).expect("dev");
        assert!(d.file_type().is_char_device() && d.mode() & 0o7777 == 0o600);
    }
    for (link, to) in &planted {
        assert_eq!(&std::fs::read_link(link).expect("still a link"), to);
    }
    assert_eq!(temps(&dir), Vec::<String>::new());
}

#[tokio::test]
async fn owner_group_and_mode_are_kept_on_write_and_backup() {
    let fx = shell_fixture(|b| b).await;
    let cfg = fx.config("config.yaml", OLD, 0o640);
    let (uid, gid) = if is_root() {
        std::os::unix::fs::chown(&cfg, Some(1234), Some(2345)).expect("chown");
        (1234, 2345)
    } else {
        eprintln!("not root: owner kept as the current user only");
        let m = std::fs::metadata(&cfg).expect("meta");
        (m.uid(), m.gid())
    };
    let s = fx.session().await;
    let r = shell(&s, &cfg);
    let cur = r.read().await.expect("read");
    assert_eq!(cur.owner, Some((uid, gid)), "read fills the owner");
    assert_eq!(cur.mode, Some(0o640));
    let b = r.backup(&cur, SystemTime::now()).await.expect("backup");
    assert_eq!(meta(Path::new(&b)), (uid, gid, 0o640), "backup");
    r.write(NEW, &cur, Some(&sha(OLD))).await.expect("write");
    assert_eq!(meta(&cfg), (uid, gid, 0o640), "config after write");
    // Without a `like`, the current file's owner and mode are used.
    r.write(OLD, &RemoteFile::default(), None)
        .await
        .expect("write without like");
    assert_eq!(meta(&cfg), (uid, gid, 0o640));
    assert_eq!(std::fs::read(&cfg).expect("cfg"), OLD);
    // The backup restores with its owner too (rollback's path).
    let back = r.read_backup(&b).await.expect("read backup");
    assert_eq!((back.owner, back.mode), (Some((uid, gid)), Some(0o640)));
    assert_eq!(temps(fx.dir.path()), Vec::<String>::new());
}

#[tokio::test]
async fn symlink_target_name_ending_in_newlines_is_the_file_written() {
    let fx = shell_fixture(|b| b).await;
    let dir = fx.dir.path().to_path_buf();
    for target in ["real.yaml\n", "real.yaml\n\n"] {
        let real = fx.config(target, OLD, 0o640);
        let link = dir.join("config.yaml");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let s = fx.session().await;
        let r = shell(&s, &link);
        let cur = r.read().await.expect("read");
        assert_eq!(cur.bytes, OLD);
        r.write(NEW, &cur, Some(&sha(OLD))).await.expect("write");
        assert_eq!(std::fs::read(&real).expect("real"), NEW, "{target:?}");
        assert_eq!(mode_of(&real), 0o640);
        assert_eq!(std::fs::read_link(&link).expect("still a link"), real);
        assert!(!dir.join("real.yaml").exists(), "no stripped-name file");
        assert_eq!(temps(&dir), Vec::<String>::new());
        std::fs::remove_file(&real).expect("rm");
    }
}

#[tokio::test]
async fn fifos_and_devices_are_refused_by_type_without_hanging() {
    let fx = shell_fixture(|b| b).await;
    let dir = fx.dir.path().to_path_buf();
    let s = fx.session().await;
    let fifo = dir.join("config.yaml");
    mkfifo(&fifo, 0o644);
    let zero = dir.join("zero.yaml");
    std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
    let bound = Duration::from_secs(10);
    for (path, kind) in [(&fifo, "a FIFO"), (&zero, "a character device")] {
        let r = shell(&s, path);
        let res = tokio::time::timeout(bound, r.read())
            .await
            .expect("read hangs");
        match res {
            Err(RemoteError::NotRegular { path: p, kind: k }) => {
                assert_eq!((p.as_str(), k.as_str()), (path_str(path).as_str(), kind));
            }
            other => panic!("{path:?}: expected NotRegular, got {other:?}"),
        }
    }
    // Writing through them is refused before anything is created.
    let r = shell(&s, &fifo);
    let res = tokio::time::timeout(bound, r.write(NEW, &RemoteFile::default(), None))
        .await
        .expect("write hangs");
    assert!(
        matches!(&res, Err(RemoteError::NotRegular { kind, .. }) if kind == "a FIFO"),
        "{res:?}"
    );
    let f = std::fs::symlink_metadata(&fifo).expect("fifo");
    assert!(f.file_type().is_fifo() && f.mode() & 0o7777 == 0o644);
    let dev = dir.join("dev");
    if mknod_null(&dev, 0o600) {
        let link = dir.join("dev.yaml");
        std::os::unix::fs::symlink(&dev, &link).expect("symlink");
        let r = shell(&s, &link);
        let res = tokio::time::timeout(bound, r.write(NEW, &RemoteFile::default(), None))
            .await
            .expect("write hangs");
        assert!(
            matches!(&res, Err(RemoteError::NotRegular { kind, .. }) if kind == "a character device"),
            "{res:?}"
        );
        let d = std::fs::symlink_metadata(&dev).expect("dev");
        assert!(d.file_type().is_char_device() && d.mode() & 0o7777 == 0o600);
    }
    // A FIFO under a backup name is neither listed nor read.
    let cfg = fx.config("c.yaml", OLD, 0o644);
    let bname = backup_path(&path_str(&cfg), SystemTime::now());
    mkfifo(Path::new(&bname), 0o644);
    let r = shell(&s, &cfg);
    assert!(r.list_backups().await.expect("list").is_empty());
    let res = tokio::time::timeout(bound, r.read_backup(&bname))
        .await
        .expect("read_backup hangs");
    assert!(
        matches!(res, Err(RemoteError::NotRegular { .. })),
        "{res:?}"
    );
    // A directory is named as one.
    let r = shell(&s, &dir);
    assert!(matches!(
        r.read().await,
        Err(RemoteError::IsDirectory { .. })
    ));
    // Over the size cap: refused from its size, nothing transferred.
    let small = AnyRemote::Shell(swapcfg::remote::shell::ShellRemote::new(
        &s,
        &path_str(&cfg),
        RemoteOptions {
            max_size: 10,
            ..RemoteOptions::default()
        },
    ));
    assert!(matches!(
        small.read().await,
        Err(RemoteError::TooLarge { size, limit: 10, .. }) if size == OLD.len() as u64
    ));
    assert_eq!(temps(&dir), Vec::<String>::new());
}

#[tokio::test]
async fn only_swapcfg_backups_are_listed_and_hand_made_ones_stay() {
    let fx = shell_fixture(|b| b).await;
    let dir = fx.dir.path().to_path_buf();
    let cfg = fx.config("config.yaml", OLD, 0o600);
    for n in [
        "config.yaml.bak-old",
        "config.yaml.bak-manual",
        "config.yaml.bak-20250101T000000Z.tmp",
        "config.yaml.bak-2025",
    ] {
        fx.config(n, b"hand-made\n", 0o644);
    }
    std::os::unix::fs::symlink(&cfg, dir.join("config.yaml.bak-20240101T000000Z"))
        .expect("symlink under a backup name");
    let s = fx.session().await;
    let r = shell(&s, &cfg);
    let cur = r.read().await.expect("read");
    let t1 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_034_445);
    let b2 = r.backup(&cur, t1).await.expect("backup");
    let b1 = r
        .backup(&cur, t1 - Duration::from_secs(86_400))
        .await
        .expect("older backup");
    let b3 = r.backup(&cur, t1).await.expect("same second");
    assert_eq!(b3, format!("{b2}.1"));
    let listed = r.list_backups().await.expect("list");
    assert_eq!(
        listed.iter().map(|b| b.path.as_str()).collect::<Vec<_>>(),
        vec![b1.as_str(), b2.as_str(), b3.as_str()],
        "oldest first by the name's stamp; hand-made and symlinked names left out"
    );
    assert!(listed
        .iter()
        .all(|b| b.size == OLD.len() as u64 && b.mtime.is_some()));
    for b in [&b1, &b2, &b3] {
        assert_eq!(mode_of(Path::new(b)), 0o600);
    }
    assert!(r
        .remove_backup(&path_str(&dir.join("config.yaml.bak-old")))
        .await
        .is_err());
    r.remove_backup(&b1).await.expect("remove");
    assert!(!Path::new(&b1).exists());
    for n in [
        "config.yaml.bak-old",
        "config.yaml.bak-manual",
        "config.yaml.bak-20250101T000000Z.tmp",
        "config.yaml.bak-2025",
    ] {
        assert_eq!(std::fs::read(dir.join(n)).expect(n), b"hand-made\n");
    }
    assert_eq!(temps(&dir), Vec::<String>::new());
}

#[tokio::test]
async fn lock_is_exclusive_expires_and_is_removed_only_by_its_holder() {
    let fx = shell_fixture(|b| b).await;
    let dir = fx.dir.path().to_path_buf();
    let cfg = fx.config("config.yaml", OLD, 0o644);
    let lock = dir.join("config.yaml.swapcfg-lock");
    let s = fx.session().await;
    let r = shell(&s, &cfg);
    let now = now_secs();
    let a = lock_info("aaaa", now, 600);
    let b = lock_info("bbbb", now, 600);
    assert_eq!(
        r.lock(&a, now, false).await.expect("lock"),
        LockTaken::Fresh
    );
    assert_eq!(
        std::fs::read(&lock).expect("lock file"),
        a.to_record().as_bytes()
    );
    assert_eq!(mode_of(&lock), 0o644);
    match r.lock(&b, now, false).await {
        Err(RemoteError::Locked { holder, path }) => {
            assert_eq!(holder.as_deref(), Some(&a));
            assert_eq!(path, path_str(&cfg));
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(&lock).expect("lock"),
        a.to_record().as_bytes()
    );
    // a's lease has run out: b takes over.
    let later = a.expires + 1;
    assert_eq!(
        r.lock(&b, later, false).await.expect("take over"),
        LockTaken::TookOver {
            previous: Some(a.clone())
        }
    );
    assert_eq!(
        std::fs::read(&lock).expect("lock"),
        b.to_record().as_bytes()
    );
    // a no longer holds it: its unlock leaves b's lock.
    r.unlock(&a).await.expect("unlock a");
    assert_eq!(
        std::fs::read(&lock).expect("lock"),
        b.to_record().as_bytes()
    );
    // Forced: any holder is replaced.
    let c = lock_info("cccc", now, 600);
    assert!(matches!(
        r.lock(&c, now, true).await,
        Ok(LockTaken::TookOver { previous: Some(p) }) if p == b
    ));
    r.unlock(&c).await.expect("unlock c");
    assert!(!lock.exists());
    // An unreadable record: locked by an unknown holder, not taken over
    // unless forced.
    std::fs::write(&lock, b"garbage").expect("garbage");
    assert!(matches!(
        r.lock(&a, later + 10_000, false).await,
        Err(RemoteError::Locked { holder: None, .. })
    ));
    assert_eq!(std::fs::read(&lock).expect("lock"), b"garbage");
    std::fs::remove_file(&lock).expect("rm");
    // A symlink planted at the lock name is not followed.
    let victim = fx.config("victim", b"v", 0o600);
    std::os::unix::fs::symlink(&victim, &lock).expect("plant");
    assert!(matches!(
        r.lock(&a, now, false).await,
        Err(RemoteError::Locked { holder: None, .. })
    ));
    assert_eq!(std::fs::read(&victim).expect("victim"), b"v");
    assert_eq!(mode_of(&victim), 0o600);
    // Forced over a symlink: the link itself is replaced, its target kept.
    assert!(matches!(
        r.lock(&a, now, true).await,
        Ok(LockTaken::TookOver { previous: None })
    ));
    assert!(std::fs::symlink_metadata(&lock).expect("lstat").is_file());
    assert_eq!(std::fs::read(&victim).expect("victim"), b"v");
    r.unlock(&a).await.expect("unlock");
    assert!(!lock.exists());
    assert_eq!(temps(&dir), Vec::<String>::new());
}

#[tokio::test]
async fn a_full_disk_leaves_no_empty_backup_and_no_truncated_config() {
    // `ulimit -f 128` (64 KiB) makes writes past it fail (EFBIG/SIGXFSZ) the
    // way ENOSPC does: the file stops short.
    let fx = shell_fixture(|b| b.shell_prelude("ulimit -f 128")).await;
    let dir = fx.dir.path().to_path_buf();
    let old = big_config(1, "a")[..100_000].to_vec();
    let cfg = fx.config("config.yaml", &old, 0o640);
    let s = fx.session().await;
    let r = shell(&s, &cfg);
    let cur = r.read().await.expect("read is not limited");
    assert_eq!(cur.bytes, old);
    let res = r.backup(&cur, SystemTime::now()).await;
    match res {
        Err(RemoteError::Incomplete { sent, got, .. }) => {
            assert_eq!(sent, old.len() as u64);
            assert!(got < sent, "{got}");
        }
        other => panic!("expected Incomplete, got {other:?}"),
    }
    assert_eq!(backup_names(&dir, "config.yaml"), Vec::<String>::new());
    assert_eq!(temps(&dir), Vec::<String>::new());
    let new = big_config(1, "b")[..90_000].to_vec();
    let res = r.write(&new, &cur, Some(&sha(&old))).await;
    assert!(
        matches!(res, Err(RemoteError::Incomplete { .. })),
        "{res:?}"
    );
    assert_eq!(std::fs::read(&cfg).expect("cfg"), old);
    assert_eq!(mode_of(&cfg), 0o640);
    assert_eq!(temps(&dir), Vec::<String>::new());
    // Small files still fit.
    r.write(NEW, &cur, Some(&sha(&old)))
        .await
        .expect("small write");
    assert_eq!(std::fs::read(&cfg).expect("cfg"), NEW);
}

/// A directory whose entries link the named tools (for a restricted PATH).
fn tool_dir(root: &Path, tools: &[(&str, &str)]) -> PathBuf {
    let d = root.join("bin");
    std::fs::create_dir_all(&d).expect("bin dir");
    for (name, target) in tools {
        std::os::unix::fs::symlink(target, d.join(name)).expect("tool link");
    }
    d
}

fn which(tool: &str) -> Option<String> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|d| format!("{d}/{tool}"))
        .find(|p| Path::new(p).exists())
}

const TOOLS: &[&str] = &[
    "cat", "chmod", "chown", "dd", "grep", "head", "id", "ln", "mktemp", "mv", "readlink", "rm",
    "stat", "sync", "wc",
];

#[tokio::test]
async fn a_temp_name_swapped_right_after_mktemp_is_never_written_or_chmodded() {
    // The race a random name leaves: someone who can write the directory
    // replaces the fresh temp file before the script opens it. A fake
    // mktemp plays that attacker (symlink to a victim, a FIFO, or a hard
    // link to the victim).
    let tools = tempfile::tempdir().expect("tmp");
    let Some(real_mktemp) = which("mktemp") else {
        return;
    };
    let fx = shell_fixture(|b| {
        b.shell_env("PATH", &format!("{}:/usr/bin:/bin", tools.path().display()))
    })
    .await;
    let dir = fx.dir.path().to_path_buf();
    let cfg = fx.config("config.yaml", OLD, 0o640);
    let victim = fx.config("victim", b"victim\n", 0o600);
    let fifo = dir.join("fifo");
    mkfifo(&fifo, 0o600);
    let s = fx.session().await;
    let r = shell(&s, &cfg);
    let cur = r.read().await.expect("read");
    for swap in [
        format!("ln -s '{}' \"$n\"", victim.display()),
        format!("ln -s '{}' \"$n\"", fifo.display()),
        format!("ln '{}' \"$n\"", victim.display()),
    ] {
        let fake = tools.path().join("mktemp");
        std::fs::write(
            &fake,
            format!("#!/bin/sh\nn=$({real_mktemp} \"$@\") || exit 1\nrm -f -- \"$n\"\n{swap}\nprintf '%s\\n' \"$n\"\n"),
        )
        .expect("fake mktemp");
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let res = r.write(NEW, &cur, Some(&sha(OLD))).await;
        assert!(
            matches!(&res, Err(RemoteError::Failed { message, .. }) if message.contains("temp file was replaced")),
            "{swap}: {res:?}"
        );
        let res = r.backup(&cur, SystemTime::now()).await;
        assert!(
            matches!(res, Err(RemoteError::Failed { .. })),
            "{swap}: {res:?}"
        );
        assert_eq!(
            std::fs::read(&victim).expect("victim"),
            b"victim\n",
            "{swap}"
        );
        assert_eq!(meta(&victim).2, 0o600, "{swap}");
        let f = std::fs::symlink_metadata(&fifo).expect("fifo");
        assert!(f.file_type().is_fifo() && f.mode() & 0o7777 == 0o600);
        assert_eq!(std::fs::read(&cfg).expect("cfg"), OLD);
        assert_eq!(backup_names(&dir, "config.yaml"), Vec::<String>::new());
        assert_eq!(
            temps(&dir),
            Vec::<String>::new(),
            "{swap}: the planted name is removed"
        );
    }
}

#[tokio::test]
async fn without_sha256sum_cksum_checks_the_bytes_and_without_both_nothing_is_written() {
    let tools = tempfile::tempdir().expect("tmp");
    let mut with_cksum: Vec<(String, String)> = TOOLS
        .iter()
        .filter_map(|t| which(t).map(|p| (t.to_string(), p)))
        .collect();
    let Some(ck) = which("cksum") else {
        eprintln!("skipping: no cksum");
        return;
    };
    with_cksum.push(("cksum".into(), ck));
    let pairs: Vec<(&str, &str)> = with_cksum
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let bin = tool_dir(tools.path(), &pairs);
    let fx = shell_fixture(|b| b.shell_env("PATH", &path_str(&bin))).await;
    let dir = fx.dir.path().to_path_buf();
    let cfg = fx.config("config.yaml", OLD, 0o640);
    let s = fx.session().await;
    let r = shell(&s, &cfg);
    let cur = r.read().await.expect("read");
    r.backup(&cur, SystemTime::now()).await.expect("backup");
    r.write(NEW, &cur, Some(&sha(OLD)))
        .await
        .expect("write (cksum)");
    assert_eq!(std::fs::read(&cfg).expect("cfg"), NEW);
    // The compare-and-swap works with cksum for bytes this remote wrote.
    r.write(OLD, &cur, Some(&sha(NEW)))
        .await
        .expect("rollback-style write");
    assert_eq!(std::fs::read(&cfg).expect("cfg"), OLD);
    std::fs::write(&cfg, b"theirs\n").expect("edit");
    let res = r.write(NEW, &cur, Some(&sha(OLD))).await;
    assert!(
        matches!(&res, Err(RemoteError::Changed { found, .. }) if found.starts_with("cksum:")),
        "{res:?}"
    );
    assert_eq!(std::fs::read(&cfg).expect("cfg"), b"theirs\n");
    // A digest the client never saw cannot be checked with cksum: refused.
    let res = r.write(NEW, &RemoteFile::default(), Some(&sha(b"x"))).await;
    assert!(
        matches!(res, Err(RemoteError::Unsupported { .. })),
        "{res:?}"
    );
    // Cut short: cksum and length catch it.
    fx.server.set_faults(FaultPlan::one(
        Op::Exec,
        fx.server.op_count(Op::Exec) + 1,
        FaultAction::CloseStdinAfter(5),
    ));
    let res = r.write(NEW, &cur, None).await;
    assert!(
        matches!(res, Err(RemoteError::Incomplete { got: 5, .. })),
        "{res:?}"
    );
    assert_eq!(std::fs::read(&cfg).expect("cfg"), b"theirs\n");
    assert_eq!(temps(&dir), Vec::<String>::new());
    drop(s);

    // Neither sha256sum nor cksum: nothing is written.
    std::fs::remove_file(bin.join("cksum")).expect("rm cksum");
    let s = fx.session().await;
    let r = shell(&s, &cfg);
    let res = r.write(NEW, &RemoteFile::default(), None).await;
    assert!(
        matches!(res, Err(RemoteError::Unsupported { op: "write", .. })),
        "{res:?}"
    );
    assert_eq!(std::fs::read(&cfg).expect("cfg"), b"theirs\n");
    assert_eq!(temps(&dir), Vec::<String>::new());
}

#[tokio::test]
async fn busybox_ash_with_only_busybox_tools() {
    let Some(bb) = which("busybox") else {
        eprintln!("skipping: busybox not installed");
        return;
    };
    let tools = tempfile::tempdir().expect("tmp");
    let mut list: Vec<&str> = TOOLS.to_vec();
    list.extend(["sha256sum", "sh", "printf", "test", "["]);
    let pairs: Vec<(&str, &str)> = list.iter().map(|t| (*t, bb.as_str())).collect();
    let bin = tool_dir(tools.path(), &pairs);
    let fx = shell_fixture(|b| {
        b.shell_program(&[bb.as_str(), "sh"])
            .shell_env("PATH", &path_str(&bin))
    })
    .await;
    let dir = fx.dir.path().to_path_buf();
    let cfg = fx.config("config.yaml", OLD, 0o640);
    if is_root() {
        std::os::unix::fs::chown(&cfg, Some(1234), Some(2345)).expect("chown");
    }
    let before = meta(&cfg);
    let s = slow_session(&fx).await;
    let r = shell(&s, &cfg);
    let cur = r.read().await.expect("read");
    assert_eq!((cur.bytes.as_slice(), cur.mode), (OLD, Some(0o640)));
    let b = r.backup(&cur, SystemTime::now()).await.expect("backup");
    assert_eq!(meta(Path::new(&b)), before);
    r.write(NEW, &cur, Some(&sha(OLD))).await.expect("write");
    assert_eq!(std::fs::read(&cfg).expect("cfg"), NEW);
    assert_eq!(meta(&cfg), before);
    let res = r.write(OLD, &cur, Some(&sha(OLD))).await;
    assert!(matches!(res, Err(RemoteError::Changed { .. })), "{res:?}");
    let big = big_config(2, "c");
    fx.server.set_faults(FaultPlan::one(
        Op::Exec,
        fx.server.op_count(Op::Exec) + 1,
        FaultAction::CloseStdinAfter(700_000),
    ));
    let res = r.write(&big, &cur, None).await;
    assert!(
        matches!(res, Err(RemoteError::Incomplete { got: 700_000, .. })),
        "{res:?}"
    );
    assert_eq!(std::fs::read(&cfg).expect("cfg"), NEW);
    let me = lock_info("bb01", now_secs(), 600);
    assert_eq!(
        r.lock(&me, now_secs(), false).await.expect("lock"),
        LockTaken::Fresh
    );
    assert!(matches!(
        r.lock(&lock_info("bb02", now_secs(), 600), now_secs(), false)
            .await,
        Err(RemoteError::Locked {
            holder: Some(_),
            ..
        })
    ));
    r.unlock(&me).await.expect("unlock");
    assert_eq!(r.list_backups().await.expect("list").len(), 1);
    let link = dir.join("link.yaml");
    let real = fx.config("real\n", OLD, 0o600);
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let r2 = shell(&s, &link);
    r2.write(NEW, &RemoteFile::default(), None)
        .await
        .expect("write through link");
    assert_eq!(std::fs::read(&real).expect("real"), NEW);
    assert_eq!(
        names(&dir)
            .into_iter()
            .filter(|n| n.starts_with(".swapcfg-") || n.contains("swapcfg-lock"))
            .collect::<Vec<_>>(),
        Vec::<String>::new()
    );
}

// ---- against Debian's OpenSSH sshd ----

mod openssh {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use swapcfg::target::Target;
    use swapcfg::transport::{ConnectOptions, HostKeyPolicy};
    use swapcfg_testkit::sshd::{self, Options, Sshd};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::watch;

    /// A loopback TCP proxy in front of sshd: client→server bytes can be
    /// throttled (a slow link) and every connection cut at once.
    struct Proxy {
        port: u16,
        rate: Arc<AtomicU64>,
        cut: watch::Sender<bool>,
    }

    impl Proxy {
        async fn start(upstream: u16) -> Proxy {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let port = listener.local_addr().expect("addr").port();
            let rate = Arc::new(AtomicU64::new(0));
            let (cut, cut_rx) = watch::channel(false);
            let r = rate.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        continue;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let rate = r.clone();
                    let mut cut1 = cut_rx.clone();
                    let mut cut2 = cut_rx.clone();
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            tokio::select! {
                                _ = cut_wait(&mut cut1) => break,
                                n = cr.read(&mut buf) => {
                                    let Ok(n) = n else { break };
                                    if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                    let bps = rate.load(Ordering::Relaxed);
                                    if bps > 0 {
                                        tokio::time::sleep(Duration::from_secs_f64(n as f64 / bps as f64)).await;
                                    }
                                }
                            }
                        }
                    });
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            tokio::select! {
                                _ = cut_wait(&mut cut2) => break,
                                n = sr.read(&mut buf) => {
                                    let Ok(n) = n else { break };
                                    if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                    });
                }
            });
            Proxy { port, rate, cut }
        }
    }

    /// Resolves once the proxy is cut (never, if the sender is gone).
    async fn cut_wait(rx: &mut watch::Receiver<bool>) {
        loop {
            let cut = *rx.borrow_and_update();
            if cut {
                return;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    struct Host {
        sshd: Sshd,
        key: PathBuf,
    }

    fn host() -> Option<Host> {
        if !sshd::available() {
            return None;
        }
        let sshd = Sshd::start(Options { sftp: false }).expect("sshd");
        let key = sshd.client_key("k", "ed25519", "", "").expect("client key");
        Some(Host { sshd, key })
    }

    impl Host {
        fn dir(&self) -> PathBuf {
            self.sshd.dir.path().join("etc")
        }

        /// known_hosts naming the server at `port` (sshd's own or a proxy's).
        fn known_hosts(&self, port: u16) -> PathBuf {
            let p = self.sshd.dir.path().join(format!("kh_{port}"));
            std::fs::write(&p, format!("[127.0.0.1]:{port} {}\n", self.sshd.host_pub))
                .expect("known_hosts");
            p
        }

        async fn session(&self, port: u16) -> Session {
            self.session_with(port, Duration::from_secs(60)).await
        }

        async fn session_with(&self, port: u16, op_timeout: Duration) -> Session {
            let o = ConnectOptions {
                target: Target {
                    user: sshd::whoami(),
                    host: "127.0.0.1".into(),
                    port,
                },
                identity: Some(self.key.clone()),
                known_hosts: self.known_hosts(port),
                host_key_policy: HostKeyPolicy::Strict,
                connect_timeout: Duration::from_secs(10),
                op_timeout,
                keepalive: Duration::from_secs(15),
            };
            Session::connect(&o).await.expect("connect to sshd")
        }

        fn config(&self, content: &[u8]) -> PathBuf {
            let d = self.dir();
            std::fs::create_dir_all(&d).expect("dir");
            let p = d.join("config.yaml");
            std::fs::write(&p, content).expect("config");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).expect("chmod");
            if is_root() {
                std::os::unix::fs::chown(&p, Some(1234), Some(2345)).expect("chown");
            }
            p
        }
    }

    #[tokio::test]
    async fn openssh_owner_cas_planted_links_fifo_and_lock() {
        let Some(h) = host() else { return };
        let cfg = h.config(OLD);
        let dir = h.dir();
        let before = meta(&cfg);
        let victim = dir.join("victim");
        std::fs::write(&victim, b"v").expect("victim");
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let last: u64 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1000);
        for pid in last + 1..last + 1000 {
            std::os::unix::fs::symlink(
                &victim,
                dir.join(format!(".config.yaml.swapcfg-{pid}.tmp")),
            )
            .expect("plant");
        }
        let s = h.session(h.sshd.port).await;
        let r = shell(&s, &cfg);
        let cur = r.read().await.expect("read");
        assert_eq!(
            (cur.owner, cur.mode),
            (Some((before.0, before.1)), Some(0o640))
        );
        let b = r.backup(&cur, SystemTime::now()).await.expect("backup");
        assert_eq!(meta(Path::new(&b)), before);
        r.write(NEW, &cur, Some(&sha(OLD))).await.expect("write");
        assert_eq!(std::fs::read(&cfg).expect("cfg"), NEW);
        assert_eq!(meta(&cfg), before);
        assert_eq!(std::fs::read(&victim).expect("victim"), b"v");
        assert_eq!(mode_of(&victim), 0o600);
        // CAS
        let res = r.write(OLD, &cur, Some(&sha(OLD))).await;
        assert!(
            matches!(&res, Err(RemoteError::Changed { found, .. }) if *found == sha(NEW)),
            "{res:?}"
        );
        assert_eq!(std::fs::read(&cfg).expect("cfg"), NEW);
        // FIFO: refused, no hang.
        let fifo = dir.join("fifo.yaml");
        mkfifo(&fifo, 0o644);
        let res = tokio::time::timeout(Duration::from_secs(10), shell(&s, &fifo).read())
            .await
            .expect("no hang");
        assert!(
            matches!(&res, Err(RemoteError::NotRegular { kind, .. }) if kind == "a FIFO"),
            "{res:?}"
        );
        // Lock
        let now = now_secs();
        let a = lock_info("a1", now, 600);
        assert_eq!(
            r.lock(&a, now, false).await.expect("lock"),
            LockTaken::Fresh
        );
        assert!(matches!(
            r.lock(&lock_info("b1", now, 600), now, false).await,
            Err(RemoteError::Locked { holder: Some(x), .. }) if *x == a
        ));
        let b1 = lock_info("b1", now, 600);
        assert!(matches!(
            r.lock(&b1, a.expires, false).await,
            Ok(LockTaken::TookOver { previous: Some(x) }) if x == a
        ));
        r.unlock(&a).await.expect("unlock a");
        assert!(
            dir.join("config.yaml.swapcfg-lock").exists(),
            "b1's lock stays"
        );
        r.unlock(&b1).await.expect("unlock b1");
        assert!(!dir.join("config.yaml.swapcfg-lock").exists());
        assert_eq!(temps(&dir), Vec::<String>::new());
    }

    #[tokio::test]
    async fn openssh_connection_dropped_mid_upload_leaves_the_old_file() {
        let Some(h) = host() else { return };
        let cfg = h.config(OLD);
        let dir = h.dir();
        let before = meta(&cfg);
        let proxy = Proxy::start(h.sshd.port).await;
        // The 4 MB upload takes ~4 s at the proxy's rate; a drop that finds
        // the client waiting for window space is seen only at the timeout.
        let s = h.session_with(proxy.port, Duration::from_secs(10)).await;
        let r = shell(&s, &cfg);
        let cur = r.read().await.expect("read");
        let big = big_config(4, "b");
        // A slow link: ~1 MB/s; cut it once the host has written 1 MB.
        proxy.rate.store(1_000_000, Ordering::Relaxed);
        let cut = async {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let grown = temps(&dir).iter().any(|t| {
                    std::fs::metadata(dir.join(t)).map(|m| m.len()).unwrap_or(0) > 1_000_000
                });
                if grown || Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = proxy.cut.send(true);
        };
        let expect = sha(OLD);
        let (res, ()) = tokio::join!(r.write(&big, &cur, Some(&expect)), cut);
        assert!(
            matches!(
                res,
                Err(RemoteError::Disconnected { .. }) | Err(RemoteError::Timeout { .. })
            ),
            "{res:?}"
        );
        assert_eq!(
            settled_temps(&dir).await,
            Vec::<String>::new(),
            "temp removed"
        );
        assert_eq!(std::fs::read(&cfg).expect("cfg"), OLD, "old bytes");
        assert_eq!(meta(&cfg), before);
    }

    #[tokio::test]
    async fn openssh_killed_client_mid_apply_leaves_the_old_file() {
        let Some(h) = host() else { return };
        let cfg = h.config(OLD);
        let dir = h.dir();
        let before = meta(&cfg);
        let proxy = Proxy::start(h.sshd.port).await;
        let new = h.sshd.dir.path().join("new.yaml");
        std::fs::write(&new, big_config(4, "b")).expect("new");
        let kh = h.known_hosts(proxy.port);
        proxy.rate.store(1_000_000, Ordering::Relaxed);
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_swapcfg"))
            .env_clear()
            .env("HOME", h.sshd.dir.path())
            .args([
                "apply",
                &format!("{}@127.0.0.1:{}", sshd::whoami(), proxy.port),
                new.to_str().expect("utf8"),
                "--config-path",
                cfg.to_str().expect("utf8"),
                "--mode",
                "shell",
                "--identity",
                h.key.to_str().expect("utf8"),
                "--known-hosts",
                kh.to_str().expect("utf8"),
                "--restart-cmd",
                "none",
                "--yes",
                "--json",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn swapcfg");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let grown = temps(&dir)
                .iter()
                .any(|t| std::fs::metadata(dir.join(t)).map(|m| m.len()).unwrap_or(0) > 1_000_000);
            if grown {
                break;
            }
            assert!(Instant::now() < deadline, "the upload never started");
            assert!(
                child.try_wait().expect("wait").is_none(),
                "swapcfg ended early"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.kill().expect("kill -9 swapcfg");
        let _ = child.wait();
        // The proxy notices the client's socket closing and closes sshd's.
        assert_eq!(
            settled_temps(&dir).await,
            Vec::<String>::new(),
            "temp removed"
        );
        assert_eq!(std::fs::read(&cfg).expect("cfg"), OLD, "old bytes");
        assert_eq!(meta(&cfg), before);
        // The backup taken before the write is complete.
        let backups = backup_names(&dir, "config.yaml");
        assert_eq!(backups.len(), 1, "{backups:?}");
        assert_eq!(std::fs::read(dir.join(&backups[0])).expect("backup"), OLD);
        assert_eq!(meta(&dir.join(&backups[0])), before);
        // The killed apply's lock stays, complete, until its lease expires.
        let rec = std::fs::read(dir.join("config.yaml.swapcfg-lock")).expect("lock left");
        let held = LockInfo::parse(&rec).expect("a complete lock record");
        assert!(held.expires > now_secs(), "{held}");
    }
}
