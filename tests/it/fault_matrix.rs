//! Old bytes or new bytes, whatever happens (SFTP mode, through the CLI):
//! faults injected where they really happen — mid-transfer on a config of
//! several MB, a reply withheld then the connection dropped, the rename done
//! but its reply lost, a full disk, the client killed mid-write, two applies
//! at once. Every test checks the REMOTE STATE afterwards: the config's
//! bytes, backups, temp files and the lock, and that `remote_state` in
//! `--json` says what is really there.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;
use swapcfg_testkit::server::{FaultAction, FaultPlan, Op, ScriptedExec};

const RESTART: &str = "restart-ok";

/// A valid config of about `mb` MiB: one model and a large comment block
/// (cheap to validate, expensive to transfer: ~48 SFTP writes per 3 MiB).
fn big_config(model: &str, mb: usize) -> Vec<u8> {
    let mut s = format!("models:\n  {model}:\n    cmd: srv --port ${{PORT}}\n");
    let line = format!("# {}\n", "x".repeat(77));
    while s.len() < mb * 1024 * 1024 {
        s.push_str(&line);
    }
    s.into_bytes()
}

struct Case {
    fx: Fixture,
    cfg: String,
    new: String,
    old_bytes: Vec<u8>,
    new_bytes: Vec<u8>,
}

/// A case on a server without `hardlink@openssh.com`: backups are copies
/// (temp file, then rename), the fallback whose every step these faults
/// target by count. `linked_case` keeps the extension (link backups).
async fn case(plan: FaultPlan) -> Case {
    case_on(plan, false).await
}

async fn linked_case(plan: FaultPlan) -> Case {
    case_on(plan, true).await
}

async fn case_on(plan: FaultPlan, hardlink: bool) -> Case {
    let fx = fixture(|b| {
        b.restart_script(RESTART, ScriptedExec::default())
            .hardlink(hardlink)
    })
    .await;
    let old_bytes = big_config("old", 3);
    let new_bytes = big_config("new", 3);
    let cfg = path_str(&fx.config("config.yaml", &old_bytes, 0o640));
    let new = fx.dir.path().join("incoming").join("new.yaml");
    std::fs::create_dir_all(new.parent().expect("parent")).expect("mkdir");
    std::fs::write(&new, &new_bytes).expect("new");
    fx.server.set_faults(plan);
    Case {
        cfg,
        new: path_str(&new),
        fx,
        old_bytes,
        new_bytes,
    }
}

impl Case {
    fn apply(&self, extra: &[&str]) -> std::process::Command {
        let mut args = vec![
            "apply",
            &self.new,
            "--config-path",
            &self.cfg,
            "--restart-cmd",
            RESTART,
            "--yes",
            "--json",
        ];
        args.extend_from_slice(extra);
        self.fx.cli(&args)
    }

    /// Everything beside the config that is not the config or a backup.
    fn leftovers(&self) -> Vec<String> {
        self.fx
            .listing()
            .into_iter()
            .filter(|n| n != "config.yaml" && n != "incoming" && !n.starts_with("config.yaml.bak-"))
            .filter(|n| n != "id_test" && n != "known_hosts")
            .collect()
    }

    fn backups(&self) -> Vec<String> {
        self.fx
            .listing()
            .into_iter()
            .filter(|n| n.starts_with("config.yaml.bak-"))
            .collect()
    }

    fn config(&self) -> Vec<u8> {
        std::fs::read(&self.cfg).expect("config")
    }

    /// Refused by the lock at `lock`: the config untouched, the lock still
    /// holding `lock_bytes`, no backup, nothing beside them but the lock.
    fn assert_refused_by_lock(&self, lock: &str, lock_bytes: &[u8], what: &str) {
        assert!(self.config() == self.old_bytes, "{what}: untouched");
        assert_eq!(
            std::fs::read(lock).expect("lock"),
            lock_bytes,
            "{what}: the lock is left as it was"
        );
        assert_eq!(self.backups(), Vec::<String>::new(), "{what}: no backup");
        assert_eq!(
            self.leftovers(),
            vec!["config.yaml.swapcfg-lock".to_string()],
            "{what}: no temp file"
        );
    }
}

fn assert_state(c: &Case, v: &serde_json::Value, state: &str) {
    assert_eq!(v["remote_state"].as_str(), Some(state), "{v}");
    let want = if state == "old" {
        &c.old_bytes
    } else {
        &c.new_bytes
    };
    assert!(c.config() == *want, "the config holds the {state} bytes");
    assert_eq!(mode_of(Path::new(&c.cfg)), 0o640, "mode kept");
}

#[tokio::test]
async fn connection_dropped_mid_transfer_of_the_config_leaves_the_old_bytes() {
    // Write #1 is the lock record; the backup's and the new config's
    // writes (#2..) travel side by side, so write #70 is mid-transfer.
    let c = case(FaultPlan::one(Op::Write, 70, FaultAction::Drop)).await;
    let out = output(c.apply(&[])).await;
    let v = json_of(&out);
    // Which upload the cut lands in depends on how the two interleave;
    // either way nothing was replaced.
    assert_state(&c, &v, "old");
    assert_eq!(
        c.leftovers(),
        Vec::<String>::new(),
        "temp files and lock cleaned over a fresh connection"
    );
    if v["step"].as_str() == Some("backup") {
        assert_eq!(out.status.code(), Some(6), "{v}");
        assert!(
            c.backups().is_empty(),
            "a cut backup never gets a backup's name"
        );
    } else {
        assert_eq!(out.status.code(), Some(7), "{v}");
        let err = v["error"].as_str().unwrap_or("");
        assert!(err.contains("intact") && err.contains("read back"), "{err}");
        assert_eq!(c.backups().len(), 1, "the backup made before the cut stays");
    }
}

#[tokio::test]
async fn connection_dropped_at_the_commit_leaves_the_old_bytes() {
    // Rename #1 is the backup's; #2 the commit's posix-rename: the
    // connection drops before it is done.
    let c = case(FaultPlan::one(Op::Rename, 2, FaultAction::Drop)).await;
    let out = output(c.apply(&[])).await;
    let v = json_of(&out);
    assert_eq!(out.status.code(), Some(7), "{v}");
    assert_state(&c, &v, "old");
    let err = v["error"].as_str().unwrap_or("");
    assert!(err.contains("intact") && err.contains("read back"), "{err}");
    assert_eq!(
        c.leftovers(),
        Vec::<String>::new(),
        "temp files and lock cleaned over a fresh connection"
    );
    assert_eq!(
        c.backups().len(),
        1,
        "the backup made before the write stays"
    );
}

#[tokio::test]
async fn reply_withheld_then_connection_dropped_at_the_rename() {
    let c = case(FaultPlan::one(
        // Rename #1 gives the backup its name; #2 is the config's.
        Op::Rename,
        2,
        FaultAction::WithholdThenDrop(Duration::from_millis(300)),
    ))
    .await;
    let out = output(c.apply(&[])).await;
    let v = json_of(&out);
    assert_eq!(out.status.code(), Some(7), "{v}");
    assert_state(&c, &v, "old");
    assert_eq!(c.leftovers(), Vec::<String>::new());
}

#[tokio::test]
async fn rename_done_but_reply_lost_is_reported_as_new() {
    let c = case(FaultPlan::one(Op::Rename, 2, FaultAction::DoThenDrop)).await;
    let out = output(c.apply(&[])).await;
    let v = json_of(&out);
    assert_eq!(out.status.code(), Some(7), "{v}");
    assert_state(&c, &v, "new");
    let err = v["error"].as_str().unwrap_or("");
    assert!(
        err.contains("new config IS in place"),
        "never claims intact: {err}"
    );
    assert_eq!(c.leftovers(), Vec::<String>::new());
}

#[tokio::test]
async fn disk_full_during_the_config_upload() {
    // SFTP servers answer ENOSPC with SSH_FX_FAILURE, as this fault does.
    let c = case(FaultPlan::one(Op::Write, 60, FaultAction::Fail)).await;
    let out = output(c.apply(&[])).await;
    let v = json_of(&out);
    assert_eq!(out.status.code(), Some(7), "{v}");
    assert_state(&c, &v, "old");
    assert_eq!(
        c.leftovers(),
        Vec::<String>::new(),
        "temp removed on the same session"
    );
}

#[tokio::test]
async fn an_interrupted_backup_never_carries_a_backup_name() {
    for action in [FaultAction::Drop, FaultAction::Fail] {
        let c = case(FaultPlan::one(Op::Write, 20, action)).await;
        let out = output(c.apply(&[])).await;
        let v = json_of(&out);
        assert_eq!(out.status.code(), Some(6), "{action:?}: {v}");
        assert_state(&c, &v, "old");
        assert_eq!(c.backups(), Vec::<String>::new(), "{action:?}");
        assert_eq!(c.leftovers(), Vec::<String>::new(), "{action:?}");
    }
}

#[tokio::test]
async fn client_killed_mid_write_then_the_next_apply_recovers() {
    let c = case(FaultPlan::one(Op::Write, 70, FaultAction::Hang)).await;
    let mut cmd = c.apply(&[]);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while c.fx.server.op_count(Op::Write) < 70 {
        assert!(std::time::Instant::now() < deadline, "write never reached");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(c.config() == c.old_bytes, "old bytes after SIGKILL");
    let lock = std::fs::read_to_string(format!("{}.swapcfg-lock", c.cfg)).expect("lock left");
    assert!(lock.contains(&format!("pid={}", child.id())), "{lock}");

    // The next apply is refused, naming the dead holder…
    c.fx.server.set_faults(FaultPlan::default());
    let out = output(c.apply(&[])).await;
    let v = json_of(&out);
    assert_eq!(out.status.code(), Some(5), "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("pid {}", child.id())),
        "{v}"
    );
    assert!(c.config() == c.old_bytes);
    // …until told to break the lock; then the dead run's temp files go too.
    let out = output(c.apply(&["--break-lock"])).await;
    let v = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_state(&c, &v, "new");
    assert!(
        v["warnings"].to_string().contains("took over the lock"),
        "{v}"
    );
    assert_eq!(c.leftovers(), Vec::<String>::new());
}

#[tokio::test]
async fn two_applies_at_once_exactly_one_wins() {
    let fx =
        fixture(|b| b.restart_script(RESTART, ScriptedExec::ok_after(Duration::from_millis(800))))
            .await;
    let cfg = path_str(&fx.config(
        "config.yaml",
        b"models:\n  a:\n    cmd: a --port ${PORT}\n",
        0o640,
    ));
    let mut files = Vec::new();
    for (i, m) in ["x", "y"].iter().enumerate() {
        let p = fx.dir.path().join(format!("new{i}.yaml"));
        std::fs::write(
            &p,
            format!("models:\n  {m}:\n    cmd: {m} --port ${{PORT}}\n"),
        )
        .expect("new");
        files.push(path_str(&p));
    }
    for round in 0..3 {
        let runs: Vec<_> = files
            .iter()
            .map(|f| {
                let mut c = fx.cli(&[
                    "apply",
                    f,
                    "--config-path",
                    &cfg,
                    "--restart-cmd",
                    RESTART,
                    "--yes",
                    "--json",
                    "--force",
                ]);
                c.stdout(Stdio::piped()).stderr(Stdio::piped());
                c.spawn().expect("spawn")
            })
            .collect();
        let outs: Vec<_> = tokio::task::spawn_blocking(move || {
            runs.into_iter()
                .map(|c| c.wait_with_output().expect("wait"))
                .collect::<Vec<_>>()
        })
        .await
        .expect("join");
        let codes: Vec<Option<i32>> = outs.iter().map(|o| o.status.code()).collect();
        let winners: Vec<usize> = (0..2).filter(|&i| codes[i] == Some(0)).collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one wins: {codes:?}"
        );
        let loser = 1 - winners[0];
        assert_eq!(codes[loser], Some(5), "round {round}: the other exits 5");
        let v = json_of(&outs[loser]);
        let err = v["error"].as_str().unwrap_or("");
        assert!(
            err.contains("locked by") || err.contains("changed on the host"),
            "{err}"
        );
        assert_eq!(
            std::fs::read(&cfg).expect("cfg"),
            std::fs::read(&files[winners[0]]).expect("winner"),
            "round {round}: the file is the winner's"
        );
        assert!(
            !Path::new(&format!("{cfg}.swapcfg-lock")).exists(),
            "lock released"
        );
    }
}

#[tokio::test]
async fn an_owner_that_cannot_be_kept_refuses_the_write_and_narrows_the_backup() {
    // setstat calls: #1 the lock's mode, #2/#3 the backup's mode/owner,
    // #4/#5 the new config's mode/owner. A refused chown is what a non-root
    // SFTP user gets.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: needs root to give the config another owner");
        return;
    }
    let owned = |c: &Case| {
        std::os::unix::fs::chown(&c.cfg, Some(1234), Some(2345)).expect("chown");
    };
    let c = case(FaultPlan::one(
        Op::Setstat,
        5,
        FaultAction::PermissionDenied,
    ))
    .await;
    owned(&c);
    let out = output(c.apply(&[])).await;
    let v = json_of(&out);
    assert_eq!(out.status.code(), Some(7), "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains("owner"), "{v}");
    assert_state(&c, &v, "old");
    assert_eq!(c.leftovers(), Vec::<String>::new());

    let c = case(FaultPlan::one(
        Op::Setstat,
        3,
        FaultAction::PermissionDenied,
    ))
    .await;
    owned(&c);
    let out = output(c.apply(&[])).await;
    let v = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{v}");
    let b = v["backup_path"].as_str().expect("backup");
    assert_eq!(
        mode_of(Path::new(b)),
        0o600,
        "a backup we could not chown is ours alone"
    );
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(&c.cfg).expect("cfg");
    assert_eq!(
        (m.uid(), m.gid()),
        (1234, 2345),
        "the new config keeps its owner"
    );
}

#[tokio::test]
async fn shell_mode_reply_withheld_then_dropped_and_disk_full_through_the_cli() {
    // Exec #1 reads, #2 locks, #3 backs up, #4 writes the config.
    for (plan, label) in [
        (
            FaultPlan::one(
                Op::Exec,
                4,
                FaultAction::WithholdThenDrop(Duration::from_millis(300)),
            ),
            "withheld then dropped",
        ),
        (
            FaultPlan::one(Op::Exec, 4, FaultAction::Fail),
            "the host fails the write",
        ),
    ] {
        let c = case(plan).await;
        let t = std::time::Instant::now();
        let out = output(c.apply(&["--mode", "shell"])).await;
        let v = json_of(&out);
        // The refused upload is noticed when the command ends, not when
        // the 30 s operation timeout fires.
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{label}: {:?}",
            t.elapsed()
        );
        assert_eq!(out.status.code(), Some(7), "{label}: {v}");
        assert_state(&c, &v, "old");
        assert_eq!(c.leftovers(), Vec::<String>::new(), "{label}");
        assert_eq!(c.backups().len(), 1, "{label}: the complete backup stays");
    }
}

/// With `hardlink@openssh.com` (OpenSSH's default) the backup is a link,
/// made before the upload: a cut upload, or a cut at the commit, leaves the
/// old bytes, no temp file, no lock, and that backup holding the old bytes.
#[tokio::test]
async fn with_link_backups_a_cut_upload_or_commit_leaves_the_old_bytes_and_the_backup() {
    for plan in [
        // Write #1 is the lock record; #30 is mid-upload of the config.
        FaultPlan::one(Op::Write, 30, FaultAction::Drop),
        // The only rename is the config's.
        FaultPlan::one(Op::Rename, 1, FaultAction::Drop),
        FaultPlan::one(
            Op::Rename,
            1,
            FaultAction::WithholdThenDrop(Duration::from_millis(300)),
        ),
    ] {
        let c = linked_case(plan.clone()).await;
        let out = output(c.apply(&[])).await;
        let v = json_of(&out);
        assert_eq!(out.status.code(), Some(7), "{plan:?}: {v}");
        assert_state(&c, &v, "old");
        assert_eq!(c.leftovers(), Vec::<String>::new(), "{plan:?}");
        let backups = c.backups();
        assert_eq!(backups.len(), 1, "{plan:?}");
        let b = c.fx.dir.path().join(&backups[0]);
        assert!(
            std::fs::read(&b).expect("backup") == c.old_bytes,
            "{plan:?}"
        );
        assert_eq!(mode_of(&b), 0o640, "{plan:?}");
        assert_eq!(c.fx.server.op_count(Op::Link), 1, "{plan:?}");
    }
}

#[tokio::test]
async fn with_link_backups_a_rename_done_but_reply_lost_keeps_the_old_bytes_in_the_backup() {
    let c = linked_case(FaultPlan::one(Op::Rename, 1, FaultAction::DoThenDrop)).await;
    let out = output(c.apply(&[])).await;
    let v = json_of(&out);
    assert_eq!(out.status.code(), Some(7), "{v}");
    assert_state(&c, &v, "new");
    assert_eq!(c.leftovers(), Vec::<String>::new());
    let backups = c.backups();
    assert_eq!(backups.len(), 1);
    let b = c.fx.dir.path().join(&backups[0]);
    assert!(std::fs::read(&b).expect("backup") == c.old_bytes);
    assert_eq!(mode_of(&b), 0o640);
}

#[tokio::test]
async fn a_refused_link_falls_back_to_a_copied_backup() {
    // What fs.protected_hardlinks answers a user who does not own the file.
    let c = linked_case(FaultPlan::one(Op::Link, 1, FaultAction::PermissionDenied)).await;
    let out = output(c.apply(&[])).await;
    let v = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_state(&c, &v, "new");
    assert_eq!(c.leftovers(), Vec::<String>::new());
    let b = v["backup_path"].as_str().expect("backup");
    assert!(std::fs::read(b).expect("backup") == c.old_bytes);
    assert_eq!(mode_of(Path::new(b)), 0o640);
    assert_eq!(c.fx.server.op_count(Op::Link), 1);
    assert_eq!(
        c.fx.server.op_count(Op::Rename),
        2,
        "the copy's and the config's"
    );
}

/// The lock's request goes out with the backup's and the upload's (they run
/// under it when it is won). When another apply holds it, what they made
/// is removed again: the holder's lock, the config and the backups are as
/// they were, and no temp file is left — with link backups and with copies.
#[tokio::test]
async fn a_lock_held_by_another_apply_leaves_no_trace_of_the_refused_one() {
    for hardlink in [true, false] {
        let c = case_on(FaultPlan::default(), hardlink).await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let holder = swapcfg::remote::LockInfo {
            token: "other-apply".into(),
            client: "elsewhere".into(),
            user: "someone".into(),
            pid: 4242,
            started: now,
            expires: now + 3600,
        };
        let lock = swapcfg::remote::names::lock_path(&c.cfg);
        std::fs::write(&lock, holder.to_record()).expect("lock");
        let out = output(c.apply(&[])).await;
        let v = json_of(&out);
        assert_eq!(out.status.code(), Some(5), "{hardlink}: {v}");
        assert!(
            v["error"].as_str().unwrap_or("").contains("pid 4242")
                || v["error"].as_str().unwrap_or("").contains("4242"),
            "{hardlink}: names the holder: {v}"
        );
        c.assert_refused_by_lock(&lock, holder.to_record().as_bytes(), &hardlink.to_string());
    }
}

/// An expired lock is taken over; what ran beside the refused exclusive
/// open (before the lock was this apply's) is undone and done again under
/// it: one backup of the old bytes, the new bytes, no temp, no lock.
#[tokio::test]
async fn an_expired_lock_is_taken_over_and_the_work_redone_under_it() {
    let c = linked_case(FaultPlan::default()).await;
    let holder = swapcfg::remote::LockInfo {
        token: "dead-apply".into(),
        client: "elsewhere".into(),
        user: "someone".into(),
        pid: 4243,
        started: 1,
        expires: 2,
    };
    let lock = swapcfg::remote::names::lock_path(&c.cfg);
    std::fs::write(&lock, holder.to_record()).expect("lock");
    let out = output(c.apply(&[])).await;
    let v = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_state(&c, &v, "new");
    let backups = c.backups();
    assert_eq!(
        backups.len(),
        1,
        "the first backup was removed: {backups:?}"
    );
    let b = c.fx.dir.path().join(&backups[0]);
    assert!(std::fs::read(&b).expect("backup") == c.old_bytes);
    assert_eq!(c.leftovers(), Vec::<String>::new(), "no temp, no lock");
    assert_eq!(c.fx.server.op_count(Op::Link), 2, "linked twice");
}

/// A lock file with no record (an apply stopped between its exclusive open
/// and its record) blocks like a held one while young, and is taken over
/// like an expired one once `ABANDONED_LOCK_SECS` old by its mtime.
#[tokio::test]
async fn an_empty_lock_is_refused_while_young_and_taken_over_once_abandoned() {
    let secs = swapcfg::remote::names::ABANDONED_LOCK_SECS;
    for (age, taken) in [(5, false), (secs + 30, true)] {
        let c = linked_case(FaultPlan::default()).await;
        let lock = swapcfg::remote::names::lock_path(&c.cfg);
        let f = std::fs::File::create(&lock).expect("lock");
        let then = std::time::SystemTime::now() - std::time::Duration::from_secs(age);
        f.set_times(std::fs::FileTimes::new().set_modified(then))
            .expect("mtime");
        drop(f);
        let out = output(c.apply(&[])).await;
        let v = json_of(&out);
        if taken {
            assert_eq!(out.status.code(), Some(0), "{age}: {v}");
            assert_state(&c, &v, "new");
            assert_eq!(c.leftovers(), Vec::<String>::new(), "no temp, no lock");
        } else {
            assert_eq!(out.status.code(), Some(5), "{age}: {v}");
            let e = v["error"].as_str().unwrap_or("");
            assert!(
                e.contains("no readable lock record") && e.contains("--break-lock"),
                "{e}"
            );
            c.assert_refused_by_lock(&lock, b"", "empty lock");
        }
    }
}
