//! RemoteOps through the in-process SSH server: every failure path leaves
//! the remote file intact, and the remote state is checked afterwards.

use std::time::{Duration, SystemTime};

use crate::common::*;
use swapcfg::remote::Mode;
use swapcfg::remote::{AnyRemote, RemoteError, RemoteFile, RemoteOps, RemoteOptions};
use swapcfg_testkit::server::{FaultAction, FaultPlan, Op, ScriptedExec};

const OLD: &[u8] = b"models:\n  a:\n    cmd: llama-server --port ${PORT}\n";
const NEW: &[u8] = b"models:\n  b:\n    cmd: llama-server --port ${PORT}\n";

async fn sftp<'s>(s: &'s swapcfg::transport::Session, path: &str) -> AnyRemote<'s> {
    AnyRemote::open(s, Mode::Sftp, path, RemoteOptions::default())
        .await
        .expect("open sftp")
}

#[tokio::test]
async fn sftp_read_returns_bytes_and_mode() {
    let fx = fixture(|b| b).await;
    let cfg = fx.config("config.yaml", OLD, 0o640);
    let s = fx.session().await;
    let r = sftp(&s, &path_str(&cfg)).await;
    let f = r.read().await.expect("read");
    assert_eq!(f.bytes, OLD);
    assert_eq!(f.mode, Some(0o640));
}

/// The first read goes out with its open, on the handle guessed for the
/// session's first open (slot 0, as OpenSSH names it); after a right guess
/// the staged write guesses its handles too (the temp's writes and the
/// config's hashing reads ride with their opens). A server that names
/// handles otherwise gets the reads again on the real handle and a staged
/// write the ordinary way. Either way: the same bytes read, the new bytes
/// in place with the old mode, each chunk written once, no temp file left.
#[tokio::test]
async fn sftp_guessed_handles_for_the_first_read_and_write_and_a_wrong_guess() {
    let old: Vec<u8> = (0..3_000_017u32).map(|i| (i % 251) as u8).collect();
    let new: Vec<u8> = (0..2_500_009u32).map(|i| (i % 239) as u8).collect();
    // Chunks of 64 KiB (a read: plus the one past the end).
    let chunks = |n: usize| n.div_ceil(64 * 1024);
    for (slot, first_reads) in [(0u32, 1usize), (7, 2)] {
        let fx = fixture(|b| b.first_handle_slot(slot)).await;
        let cfg = fx.config("config.yaml", &old, 0o640);
        let s = fx.session().await;
        let r = sftp(&s, &path_str(&cfg)).await;
        let current = r.read().await.expect("read");
        assert_eq!(current.bytes, old, "slot {slot}");
        assert_eq!(current.mode, Some(0o640));
        let per_read = chunks(old.len()) + 1;
        assert_eq!(
            fx.server.op_count(Op::Read),
            per_read * first_reads,
            "slot {slot}"
        );
        let sha = swapcfg::pipeline::sha256_hex(&old);
        r.write(&new, &current, Some(&sha)).await.expect("write");
        assert_eq!(std::fs::read(&cfg).expect("cfg"), new, "slot {slot}");
        assert_eq!(mode_of(&cfg), 0o640, "slot {slot}");
        assert_eq!(fx.listing(), vec!["config.yaml", "id_test", "known_hosts"]);
        assert_eq!(
            fx.server.op_count(Op::Write),
            chunks(new.len()),
            "slot {slot}"
        );
        // The hashing reads, once.
        assert_eq!(
            fx.server.op_count(Op::Read),
            per_read * (first_reads + 1),
            "slot {slot}"
        );
    }
}

#[tokio::test]
async fn sftp_read_large_file_in_pipelined_chunks() {
    let fx = fixture(|b| b).await;
    let big: Vec<u8> = (0..1_000_003u32).map(|i| (i % 251) as u8).collect();
    let cfg = fx.config("big.yaml", &big, 0o644);
    let s = fx.session().await;
    let r = sftp(&s, &path_str(&cfg)).await;
    assert_eq!(r.read().await.expect("read").bytes, big);
    assert!(fx.server.op_count(Op::Read) >= 16, "chunked reads");
}

#[tokio::test]
async fn sftp_read_errors_name_the_problem() {
    let fx = fixture(|b| b).await;
    let s = fx.session().await;
    let missing = path_str(&fx.dir.path().join("nope.yaml"));
    let r = sftp(&s, &missing).await;
    assert!(matches!(r.read().await, Err(RemoteError::NotFound { path }) if path == missing));

    let dir = path_str(fx.dir.path());
    let r = sftp(&s, &dir).await;
    assert!(matches!(
        r.read().await,
        Err(RemoteError::IsDirectory { .. })
    ));

    let cfg = fx.config("c.yaml", OLD, 0o644);
    let small = AnyRemote::open(
        &s,
        Mode::Sftp,
        &path_str(&cfg),
        RemoteOptions {
            max_size: 10,
            ..RemoteOptions::default()
        },
    )
    .await
    .expect("open");
    assert!(matches!(
        small.read().await,
        Err(RemoteError::TooLarge { limit: 10, .. })
    ));

    fx.server.set_faults(FaultPlan::one(
        Op::Open,
        fx.server.op_count(Op::Open) + 1,
        FaultAction::PermissionDenied,
    ));
    let r = sftp(&s, &path_str(&cfg)).await;
    assert!(matches!(
        r.read().await,
        Err(RemoteError::PermissionDenied { .. })
    ));
}

#[tokio::test]
async fn sftp_backup_is_an_independent_copy_with_same_mode() {
    // Without hardlink@openssh.com: a copy (temp file, then its name).
    let fx = fixture(|b| b.hardlink(false)).await;
    let cfg = fx.config("config.yaml", OLD, 0o600);
    let s = fx.session().await;
    let r = sftp(&s, &path_str(&cfg)).await;
    let cur = r.read().await.expect("read");
    let now = SystemTime::now();
    let b1 = r.backup(&cur, now).await.expect("backup 1");
    let b2 = r
        .backup(&cur, now)
        .await
        .expect("backup 2 in the same second");
    assert_ne!(b1, b2, "same-second backups must not collide");
    assert_eq!(b1, swapcfg::remote::backup_path(&path_str(&cfg), now));
    for b in [&b1, &b2] {
        assert_eq!(std::fs::read(b).expect("backup bytes"), OLD);
        assert_eq!(mode_of(std::path::Path::new(b)), 0o600);
    }
    // Independent copy: changing the config in place leaves the backup alone.
    std::fs::write(&cfg, b"changed").expect("edit");
    assert_eq!(std::fs::read(&b1).expect("backup"), OLD);
    let listed = r.list_backups().await.expect("list");
    assert_eq!(
        listed.iter().map(|b| b.path.clone()).collect::<Vec<_>>(),
        vec![b1.clone(), b2.clone()]
    );
    assert_eq!(listed[0].size, OLD.len() as u64);
    assert_eq!(r.read_backup(&b1).await.expect("read backup").bytes, OLD);
    r.remove_backup(&b2).await.expect("remove");
    assert!(!std::path::Path::new(&b2).exists());
    assert!(
        r.remove_backup(&path_str(&cfg)).await.is_err(),
        "only backups can be removed"
    );
}

#[tokio::test]
async fn sftp_write_is_atomic_keeps_mode_and_leaves_no_temp() {
    let fx = fixture(|b| b).await;
    let cfg = fx.config("config.yaml", OLD, 0o640);
    let s = fx.session().await;
    let r = sftp(&s, &path_str(&cfg)).await;
    r.write(NEW, &like(0o640), None).await.expect("write");
    assert_eq!(std::fs::read(&cfg).expect("read"), NEW);
    assert_eq!(mode_of(&cfg), 0o640);
    assert_eq!(fx.listing(), vec!["config.yaml", "id_test", "known_hosts"]);
    assert!(
        fx.server.op_count(Op::Fsync) >= 1,
        "fsync used when offered"
    );
}

#[tokio::test]
async fn sftp_write_through_symlink_keeps_the_link() {
    let fx = fixture(|b| b).await;
    let real = fx.config("real.yaml", OLD, 0o644);
    let link = fx.dir.path().join("config.yaml");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let s = fx.session().await;
    let r = sftp(&s, &path_str(&link)).await;
    r.write(NEW, &RemoteFile::default(), None)
        .await
        .expect("write");
    assert!(std::fs::symlink_metadata(&link)
        .expect("lstat")
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&real).expect("target"), NEW);
    assert_eq!(mode_of(&real), 0o644);
}

/// A write failing at `op` (on its first call after setup) leaves the old
/// bytes and, for handled failures, no temp file.
async fn write_fault(
    op: Op,
    action: FaultAction,
) -> (Result<(), RemoteError>, Vec<u8>, Vec<String>) {
    let fx = fixture(|b| b).await;
    let cfg = fx.config("config.yaml", OLD, 0o644);
    let s = fx.session().await;
    let r = sftp(&s, &path_str(&cfg)).await;
    fx.server
        .set_faults(FaultPlan::one(op, fx.server.op_count(op) + 1, action));
    let res = r.write(NEW, &like(0o644), None).await;
    let bytes = std::fs::read(&cfg).expect("config still readable");
    let names = fx
        .listing()
        .into_iter()
        .filter(|n| n.contains("swapcfg"))
        .collect();
    (res, bytes, names)
}

#[tokio::test]
async fn sftp_write_failures_leave_old_bytes_and_no_temp_file() {
    for op in [Op::Open, Op::Write, Op::Fsync, Op::Setstat, Op::Rename] {
        for action in [FaultAction::Fail, FaultAction::PermissionDenied] {
            let (res, bytes, temps) = write_fault(op, action).await;
            assert!(res.is_err(), "{op:?}/{action:?} must fail");
            assert_eq!(bytes, OLD, "{op:?}/{action:?}: old bytes intact");
            assert!(
                temps.is_empty(),
                "{op:?}/{action:?}: temp files left: {temps:?}"
            );
        }
    }
}

#[tokio::test]
async fn sftp_write_hang_times_out_and_drop_errors_with_old_bytes_intact() {
    for op in [Op::Write, Op::Fsync, Op::Rename] {
        let (res, bytes, _) = write_fault(op, FaultAction::Hang).await;
        assert!(
            matches!(
                res,
                Err(RemoteError::Timeout { .. }) | Err(RemoteError::Disconnected { .. })
            ),
            "{op:?}: {res:?}"
        );
        assert_eq!(bytes, OLD);
        let (res, bytes, _) = write_fault(op, FaultAction::Drop).await;
        assert!(res.is_err(), "{op:?} drop must fail");
        assert_eq!(
            bytes, OLD,
            "{op:?}: a dropped connection leaves the old file"
        );
    }
}

#[tokio::test]
async fn sftp_without_posix_rename_refuses_to_write() {
    let fx = fixture(|b| b.posix_rename(false)).await;
    let cfg = fx.config("config.yaml", OLD, 0o644);
    let s = fx.session().await;
    let r = sftp(&s, &path_str(&cfg)).await;
    let err = r
        .write(NEW, &RemoteFile::default(), None)
        .await
        .expect_err("must refuse");
    assert!(err.to_string().contains("posix-rename"), "{err}");
    assert_eq!(std::fs::read(&cfg).expect("read"), OLD);
    assert_eq!(fx.listing(), vec!["config.yaml", "id_test", "known_hosts"]);
}

#[tokio::test]
async fn restart_reports_status_stderr_and_timeout() {
    let fx = fixture(|b| {
        b.restart_script("restart-ok", ScriptedExec::default())
            .restart_script(
                "restart-bad",
                ScriptedExec::exit(3, "unit llama-swap failed"),
            )
            .restart_script(
                "restart-slow",
                ScriptedExec::ok_after(Duration::from_secs(30)),
            )
    })
    .await;
    let cfg = fx.config("config.yaml", OLD, 0o644);
    let s = fx.session().await;
    let r = sftp(&s, &path_str(&cfg)).await;
    assert_eq!(
        r.restart("restart-ok", Duration::from_secs(5))
            .await
            .expect("ok")
            .status,
        Some(0)
    );
    match r.restart("restart-bad", Duration::from_secs(5)).await {
        Err(RemoteError::RestartFailed { status, stderr }) => {
            assert_eq!(status, Some(3));
            assert!(stderr.contains("unit llama-swap failed"));
        }
        other => panic!("expected RestartFailed, got {other:?}"),
    }
    assert!(matches!(
        r.restart("restart-slow", Duration::from_millis(300)).await,
        Err(RemoteError::Transport(
            swapcfg::transport::TransportError::CommandTimeout { .. }
        ))
    ));
    // The restart runs under the process-group wrapper, its command last.
    assert!(fx
        .server
        .raw_exec_log()
        .iter()
        .any(|c| c.ends_with("swapcfg 'restart-bad'")));
    assert!(fx.server.exec_log().contains(&"restart-bad".to_string()));
}

#[tokio::test]
async fn shell_mode_handles_awkward_file_names() {
    let fx = fixture(|b| b.sftp(false)).await;
    let cfg = fx.config("it's a \"config\" $x.yaml", OLD, 0o640);
    let s = fx.session().await;
    let path = path_str(&cfg);
    assert!(
        AnyRemote::open(&s, Mode::Sftp, &path, RemoteOptions::default())
            .await
            .is_err(),
        "no sftp here"
    );
    let r = AnyRemote::open(&s, Mode::Shell, &path, RemoteOptions::default())
        .await
        .expect("shell");
    let cur = r.read().await.expect("read");
    let owner = {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&cfg).expect("metadata");
        (m.uid(), m.gid())
    };
    assert_eq!(
        cur,
        RemoteFile {
            bytes: OLD.to_vec(),
            mode: Some(0o640),
            owner: Some(owner),
        }
    );
    let now = SystemTime::now();
    let b1 = r.backup(&cur, now).await.expect("backup");
    let b2 = r.backup(&cur, now).await.expect("backup 2");
    assert_ne!(b1, b2);
    assert_eq!(std::fs::read(&b1).expect("b1"), OLD);
    assert_eq!(mode_of(std::path::Path::new(&b1)), 0o640);
    r.write(NEW, &like(0o640), None).await.expect("write");
    assert_eq!(std::fs::read(&cfg).expect("cfg"), NEW);
    assert_eq!(mode_of(&cfg), 0o640);
    assert_eq!(r.list_backups().await.expect("list").len(), 2);
    assert_eq!(r.read_backup(&b1).await.expect("rb").bytes, OLD);
    assert!(
        fx.listing().iter().all(|n| !n.contains("swapcfg")),
        "no temp left"
    );
    let missing = AnyRemote::open(
        &s,
        Mode::Shell,
        &format!("{path}.none"),
        RemoteOptions::default(),
    )
    .await
    .expect("shell");
    assert!(matches!(
        missing.read().await,
        Err(RemoteError::NotFound { .. })
    ));
}

#[tokio::test]
async fn shell_mode_write_failure_keeps_old_bytes() {
    let fx = fixture(|b| b.sftp(false)).await;
    let cfg = fx.config("config.yaml", OLD, 0o644);
    let s = fx.session().await;
    let r = AnyRemote::open(&s, Mode::Shell, &path_str(&cfg), RemoteOptions::default())
        .await
        .expect("shell");
    fx.server.set_faults(FaultPlan::one(
        Op::Exec,
        fx.server.op_count(Op::Exec) + 1,
        FaultAction::Fail,
    ));
    assert!(r.write(NEW, &RemoteFile::default(), None).await.is_err());
    assert_eq!(std::fs::read(&cfg).expect("cfg"), OLD);
}

#[tokio::test]
async fn wrapper_mode_uses_only_the_four_verbs() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, OLD).expect("write");
    let fx = fixture(|b| {
        b.wrapper(cfg.clone())
            .restart_script("restart", ScriptedExec::exit(1, "restart refused"))
    })
    .await;
    let s = fx.session().await;
    let opts = RemoteOptions {
        unverified_wrapper_write: true,
        ..RemoteOptions::default()
    };
    let r = AnyRemote::open(&s, Mode::Wrapper, "ignored", opts)
        .await
        .expect("wrapper");
    let cur = r.read().await.expect("read");
    assert_eq!(cur.bytes, OLD);
    let b = r.backup(&cur, SystemTime::now()).await.expect("backup");
    assert_eq!(std::fs::read(&b).expect("backup bytes"), OLD);
    r.write(NEW, &RemoteFile::default(), None)
        .await
        .expect("write");
    assert_eq!(std::fs::read(&cfg).expect("cfg"), NEW);
    let err = r
        .restart("anything", Duration::from_secs(5))
        .await
        .expect_err("restart fails");
    assert!(err.to_string().contains("restart refused"), "{err}");
    assert!(matches!(
        r.list_backups().await,
        Err(RemoteError::Unsupported { .. })
    ));
    // `read 1` (protocol 1's read, which a seed wrapper refuses) comes first.
    assert_eq!(
        fx.server.exec_log(),
        vec!["read 1", "read", "backup", "write", "restart"]
    );
}

#[tokio::test]
async fn wrapper_verb_failure_is_reported_with_stderr() {
    let fx = fixture(|b| b.wrapper("/nonexistent/config.yaml")).await;
    let s = fx.session().await;
    let r = AnyRemote::open(&s, Mode::Wrapper, "x", RemoteOptions::default())
        .await
        .expect("wrapper");
    let err = r.read().await.expect_err("read fails");
    assert!(
        err.to_string().contains("/nonexistent/config.yaml"),
        "{err}"
    );
}

/// Inode number of a local file (the test server's files are local).
fn inode(p: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).expect("stat").ino()
}

#[tokio::test]
async fn sftp_backup_is_a_hard_link_that_the_write_leaves_with_the_old_bytes() {
    let fx = fixture(|b| b).await;
    let cfg = fx.config("config.yaml", OLD, 0o640);
    let s = fx.session().await;
    let r = sftp(&s, &path_str(&cfg)).await;
    let cur = r.read().await.expect("read");
    let now = SystemTime::now();
    let b1 = r.backup(&cur, now).await.expect("backup 1");
    let b2 = r.backup(&cur, now).await.expect("backup 2, same second");
    assert_eq!(b1, swapcfg::remote::backup_path(&path_str(&cfg), now));
    assert_ne!(b1, b2, "a taken name is never replaced");
    for b in [&b1, &b2] {
        let b = std::path::Path::new(b);
        assert_eq!(inode(b), inode(&cfg), "a link, not a copy");
        assert_eq!(mode_of(b), 0o640, "the config's own mode, never wider");
    }
    // Two made, one refused on the name the first one took.
    assert_eq!(fx.server.op_count(Op::Link), 3);
    assert_eq!(fx.server.op_count(Op::Write), 0, "no bytes sent");
    // The write renames a new file over the config: the backups keep the
    // old inode and bytes, and a later in-place edit leaves them alone.
    let sha = swapcfg::pipeline::sha256_hex(OLD);
    r.write(NEW, &cur, Some(&sha)).await.expect("write");
    assert_eq!(std::fs::read(&cfg).expect("cfg"), NEW);
    std::fs::write(&cfg, b"edited in place").expect("edit");
    for b in [&b1, &b2] {
        assert_eq!(std::fs::read(b).expect("backup"), OLD);
    }
    assert_ne!(inode(std::path::Path::new(&b1)), inode(&cfg));
    let listed = r.list_backups().await.expect("list");
    assert_eq!(listed.len(), 2);
    assert_eq!(r.read_backup(&b1).await.expect("read backup").bytes, OLD);
}

#[tokio::test]
async fn sftp_backup_copies_when_the_link_is_refused() {
    // EPERM from fs.protected_hardlinks, EXDEV, a server that answers
    // Failure: each falls back to the copy, with the same guarantees.
    for action in [FaultAction::PermissionDenied, FaultAction::Fail] {
        let fx = fixture(|b| b).await;
        let cfg = fx.config("config.yaml", OLD, 0o640);
        let s = fx.session().await;
        let r = sftp(&s, &path_str(&cfg)).await;
        let cur = r.read().await.expect("read");
        fx.server.set_faults(FaultPlan::one(Op::Link, 1, action));
        let b = r.backup(&cur, SystemTime::now()).await.expect("backup");
        let b = std::path::Path::new(&b);
        assert_ne!(inode(b), inode(&cfg), "{action:?}: a copy");
        assert_eq!(std::fs::read(b).expect("backup"), OLD, "{action:?}");
        assert_eq!(mode_of(b), 0o640, "{action:?}: mode kept");
        assert_eq!(fx.server.op_count(Op::Link), 1, "{action:?}");
        let names = fx.listing();
        assert_eq!(
            names
                .iter()
                .filter(|n| n.starts_with("config.yaml.bak-"))
                .count(),
            1,
            "{action:?}: one backup: {names:?}"
        );
        assert!(
            !names.iter().any(|n| n.ends_with(".tmp")),
            "{action:?}: no temp left: {names:?}"
        );
    }
}

#[tokio::test]
async fn sftp_backup_of_a_symlinked_config_copies_the_target() {
    // link(2) would link the symlink itself: a config reached through a
    // symlink is backed up by copying the file it points to.
    let fx = fixture(|b| b).await;
    let real = fx.config("real.yaml", OLD, 0o640);
    let cfg = fx.dir.path().join("config.yaml");
    std::os::unix::fs::symlink(&real, &cfg).expect("symlink");
    let s = fx.session().await;
    let r = sftp(&s, &path_str(&cfg)).await;
    let cur = r.read().await.expect("read");
    let b = r.backup(&cur, SystemTime::now()).await.expect("backup");
    let b = std::path::Path::new(&b);
    assert!(!std::fs::symlink_metadata(b)
        .expect("lstat")
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(b).expect("backup"), OLD);
    assert_eq!(mode_of(b), 0o640);
    assert_eq!(fx.server.op_count(Op::Link), 0);
}

#[tokio::test]
async fn test_server_sftp_has_openssh_rename_semantics() {
    use russh_sftp::client::RawSftpSession;
    let fx = fixture(|b| b).await;
    let a = fx.config("a.yaml", b"A", 0o644);
    let b = fx.config("b.yaml", b"B", 0o644);
    let s = fx.session().await;
    let raw = RawSftpSession::new(s.open_sftp_channel().await.expect("sftp").into_stream());
    let v = raw.init().await.expect("init");
    assert!(
        v.extensions.contains_key("posix-rename@openssh.com")
            && v.extensions.contains_key("fsync@openssh.com")
    );
    assert!(
        raw.rename(path_str(&a), path_str(&b)).await.is_err(),
        "plain rename refuses an existing target"
    );
    assert_eq!(std::fs::read(&b).expect("b"), b"B");
    let mut data = Vec::new();
    for p in [path_str(&a), path_str(&b)] {
        data.extend_from_slice(&(p.len() as u32).to_be_bytes());
        data.extend_from_slice(p.as_bytes());
    }
    raw.extended("posix-rename@openssh.com", data)
        .await
        .expect("posix-rename");
    assert_eq!(std::fs::read(&b).expect("b"), b"A", "posix-rename replaces");
    assert!(!a.exists());
    assert_eq!(fx.server.op_count(Op::Rename), 2);
}

/// A `like` file for `write`: only the mode matters.
fn like(mode: u32) -> RemoteFile {
    RemoteFile {
        mode: Some(mode),
        ..RemoteFile::default()
    }
}
