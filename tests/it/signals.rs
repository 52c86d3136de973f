//! Nothing half-done: SIGINT / SIGTERM / SIGHUP at each step of a real
//! apply (the binary against the in-process server). Before the write the
//! apply stops with nothing changed (exit 11); after it the old config is
//! put back, restarted and checked (exit 12); a second signal exits at once
//! saying what the host holds. Every test checks the host's files after.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use swapcfg_testkit::server::{FaultAction, FaultPlan, Op, ScriptedExec};
use swapcfg_testkit::standin::Standin;

const OLD: &[u8] = b"models:\n  a:\n    cmd: a --port ${PORT}\n";
const NEW: &[u8] = b"models:\n  a:\n    cmd: a --port ${PORT}\n  b:\n    cmd: b --port ${PORT}\n";

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(rc, 0, "kill");
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn finish(child: Child) -> std::process::Output {
    tokio::task::spawn_blocking(move || child.wait_with_output().expect("wait"))
        .await
        .expect("join")
}

fn spawn(mut c: std::process::Command) -> Child {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c.spawn().expect("spawn")
}

/// Only the config (and complete backups) beside it: no temp file, no lock.
fn leftovers(fx: &Fixture) -> Vec<String> {
    fx.listing()
        .into_iter()
        .filter(|n| n.starts_with(".config") || n.contains("swapcfg-lock"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_or_sigterm_during_the_health_wait_rolls_back_and_exits_12() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let fx = fixture(|b| b.restart_script("ok", ScriptedExec::default())).await;
        let cfg = path_str(&fx.config("config.yaml", OLD, 0o640));
        let new = fx.dir.path().join("new.yaml");
        std::fs::write(&new, NEW).expect("new");
        // The new model never appears: health keeps polling.
        let st = Standin::start(vec!["a".into()], None)
            .await
            .expect("standin");
        let child = spawn(fx.cli(&[
            "apply",
            &path_str(&new),
            "--config-path",
            &cfg,
            "--restart-cmd",
            "ok",
            "--base-url",
            &st.base_url(),
            "--verify-models",
            "--health-attempts",
            "100",
            "--health-delay",
            "0.05",
            "--yes",
            "--json",
        ]));
        wait_until("health polling", || st.request_count() >= 3).await;
        assert_eq!(
            std::fs::read(&cfg).expect("cfg"),
            NEW,
            "new config in place"
        );
        signal(&child, sig);
        let out = finish(child).await;
        let v = json_of(&out);
        assert_eq!(out.status.code(), Some(12), "{sig}: {v}");
        assert_eq!(
            (
                v["step"].as_str(),
                v["rolled_back"].as_bool(),
                v["remote_state"].as_str()
            ),
            (Some("interrupted"), Some(true), Some("old")),
            "{v}"
        );
        assert_eq!(std::fs::read(&cfg).expect("cfg"), OLD, "{sig}: restored");
        assert_eq!(mode_of(std::path::Path::new(&cfg)), 0o640);
        assert_eq!(leftovers(&fx), Vec::<String>::new(), "{sig}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("stopping safely"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_slow_restart_puts_the_old_config_back() {
    let fx = fixture(|b| b).await;
    let cfg = path_str(&fx.config("config.yaml", OLD, 0o600));
    let mark = path_str(&fx.dir.path().join("restarted-once"));
    let new = fx.dir.path().join("new.yaml");
    std::fs::write(&new, NEW).expect("new");
    // First restart is slow; the rollback's restart is quick.
    let tag = format!("3.{}7", std::process::id() % 1000);
    let restart = format!("if [ -e '{mark}' ]; then exit 0; fi; : > '{mark}'; sleep {tag}");
    let child = spawn(fx.cli(&[
        "apply",
        &path_str(&new),
        "--config-path",
        &cfg,
        "--restart-cmd",
        &restart,
        "--yes",
        "--json",
    ]));
    let mark_path = std::path::PathBuf::from(&mark);
    wait_until("the slow restart", || mark_path.exists()).await;
    signal(&child, libc::SIGTERM);
    let t = Instant::now();
    let out = finish(child).await;
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "did not wait for the slow restart"
    );
    let v = json_of(&out);
    assert_eq!(out.status.code(), Some(12), "{v}");
    assert_eq!(std::fs::read(&cfg).expect("cfg"), OLD);
    assert_eq!(leftovers(&fx), Vec::<String>::new());
    let restarts = fx
        .server
        .exec_log()
        .iter()
        .filter(|c| **c == restart)
        .count();
    assert_eq!(restarts, 2, "restarted again with the old config");
    assert_eq!(
        processes_with(&format!("sleep {tag}")),
        Vec::<u32>::new(),
        "the interrupted restart was stopped on the host, not left beside the rollback's"
    );
}

/// Write `old` as config.yaml (0640) and NEW beside it, arm `fault`, and
/// spawn `apply NEW --restart-cmd ok --yes --json`. Returns the config path.
fn apply_with_fault(fx: &Fixture, old: &[u8], fault: FaultPlan) -> (String, Child) {
    let cfg = path_str(&fx.config("config.yaml", old, 0o640));
    let new = fx.dir.path().join("new.yaml");
    std::fs::write(&new, NEW).expect("new");
    fx.server.set_faults(fault);
    let child = spawn(fx.cli(&[
        "apply",
        &path_str(&new),
        "--config-path",
        &cfg,
        "--restart-cmd",
        "ok",
        "--yes",
        "--json",
    ]));
    (cfg, child)
}

/// SIGINT to `child`, stuck before its write: it ends within 10 s (no
/// step's timeout) with exit 11, the config holds `old`, no temp file and
/// no lock are left.
async fn stopped_before_the_write(fx: &Fixture, child: Child, cfg: &str, old: &[u8]) {
    let t = Instant::now();
    signal(&child, libc::SIGINT);
    let out = finish(child).await;
    let v = json_of(&out);
    assert_eq!(out.status.code(), Some(11), "{v}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(v["remote_state"].as_str(), Some("old"), "{v}");
    assert!(std::fs::read(cfg).expect("cfg") == old, "untouched");
    assert_eq!(leftovers(fx), Vec::<String>::new(), "temp and lock removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_during_the_backup_upload_changes_nothing_and_exits_11() {
    // A server without hardlink@openssh.com: the backup is an upload.
    let fx = fixture(|b| {
        b.restart_script("ok", ScriptedExec::default())
            .hardlink(false)
    })
    .await;
    let mut old = OLD.to_vec();
    while old.len() < 3 << 20 {
        old.extend_from_slice(b"# padding padding padding padding padding padding padding\n");
    }
    let (cfg, child) =
        apply_with_fault(&fx, &old, FaultPlan::one(Op::Write, 20, FaultAction::Hang));
    wait_until("the backup upload", || fx.server.op_count(Op::Write) >= 20).await;
    // Neither half of backup ∥ upload waits for the stuck one's timeout.
    stopped_before_the_write(&fx, child, &cfg, &old).await;
    assert!(
        fx.listing()
            .iter()
            .all(|n| !n.starts_with("config.yaml.bak-")),
        "no incomplete backup under a backup name"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_while_the_lock_is_unanswered_ends_at_once_and_changes_nothing() {
    let fx = fixture(|b| b.restart_script("ok", ScriptedExec::default())).await;
    // Open 1 is the read; open 2 the lock's exclusive open (sent first in
    // its flight, the backup link and the staged write queued behind it).
    let (cfg, child) = apply_with_fault(&fx, OLD, FaultPlan::one(Op::Open, 2, FaultAction::Hang));
    wait_until("the lock's open", || fx.server.op_count(Op::Open) >= 2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Not the lock step's 30 s timeout.
    stopped_before_the_write(&fx, child, &cfg, OLD).await;
    assert_eq!(fx.server.op_count(Op::Exec), 0, "no restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigint_exits_at_once_and_says_what_the_host_holds() {
    for (sig, code) in [
        (libc::SIGINT, 130),
        (libc::SIGTERM, 143),
        (libc::SIGHUP, 129),
    ] {
        second_signal(sig, code).await;
    }
}

async fn second_signal(sig: i32, code: i32) {
    let fx = fixture(|b| b).await;
    let cfg = path_str(&fx.config("config.yaml", OLD, 0o600));
    let mark = path_str(&fx.dir.path().join("restarted-once"));
    let new = fx.dir.path().join("new.yaml");
    std::fs::write(&new, NEW).expect("new");
    // The first restart fails (→ rollback); the rollback's restart hangs.
    let restart = format!("if [ -e '{mark}' ]; then sleep 30; fi; : > '{mark}'; exit 1");
    let child = spawn(fx.cli(&[
        "apply",
        &path_str(&new),
        "--config-path",
        &cfg,
        "--restart-cmd",
        &restart,
        "--yes",
    ]));
    wait_until("the rollback's restart", || {
        fx.server
            .exec_log()
            .iter()
            .filter(|c| **c == restart)
            .count()
            >= 2
    })
    .await;
    signal(&child, sig);
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal(&child, sig);
    let t = Instant::now();
    let out = finish(child).await;
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(code));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("exiting at once") && err.contains("being restored"),
        "{err}"
    );
    // The restore itself (an atomic write) had happened before the restart.
    assert_eq!(std::fs::read(&cfg).expect("cfg"), OLD);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_past_its_timeout_is_stopped_on_the_host_with_its_children() {
    let fx = fixture(|b| b).await;
    let cfg = path_str(&fx.config("config.yaml", OLD, 0o600));
    let mark = path_str(&fx.dir.path().join("restarted-once"));
    let new = fx.dir.path().join("new.yaml");
    std::fs::write(&new, NEW).expect("new");
    // The first restart hangs with a child in the background; the
    // rollback's restart is quick.
    let tag = format!("4{}.25", std::process::id() % 1000);
    let restart =
        format!("if [ -e '{mark}' ]; then exit 0; fi; : > '{mark}'; sleep {tag}1 & sleep {tag}2");
    let out = output(fx.cli(&[
        "apply",
        &path_str(&new),
        "--config-path",
        &cfg,
        "--restart-cmd",
        &restart,
        "--restart-timeout",
        "1",
        "--yes",
        "--json",
    ]))
    .await;
    let v = json_of(&out);
    assert_eq!(out.status.code(), Some(8), "{v}");
    let err = v["error"].as_str().unwrap_or("");
    assert!(
        err.contains("did not finish within 1 s")
            && err.contains("stopped on the host")
            && err.contains("--restart-timeout"),
        "{err}"
    );
    assert_eq!(v["rolled_back"].as_bool(), Some(true), "{v}");
    assert_eq!(std::fs::read(&cfg).expect("cfg"), OLD);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        processes_with(&format!("sleep {tag}")),
        Vec::<u32>::new(),
        "no process of the restart is left"
    );
}
