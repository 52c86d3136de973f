//! The primed restart (SFTP mode): the restart command's shell starts on
//! the host right after connecting and waits at a gate; the command runs
//! only when the apply opens the gate after the new config is in place, and
//! a run that never restarts leaves no shell behind. Checked on the
//! in-process server with a real `/bin/sh` (the gate is the shell's own
//! `read`) and a simulated network, so the order is not a race.

use std::time::Duration;

use crate::common::*;
use swapcfg_testkit::standin::Standin;

const OLD: &[u8] = b"models:\n  a:\n    cmd: a --port ${PORT}\n";
const NEW: &[u8] = b"models:\n  a:\n    cmd: a --port ${PORT}\n  b:\n    cmd: b --port ${PORT}\n";

/// `swapcfg apply NEW --config-path CFG --restart-cmd RESTART` against the
/// fixture, health from `st`, with `extra`.
fn apply(
    fx: &Fixture,
    new: &std::path::Path,
    cfg: &str,
    restart: &str,
    st: &Standin,
    extra: &[&str],
) -> std::process::Command {
    let new = path_str(new);
    let base = st.base_url();
    let mut args = vec![
        "apply",
        &new,
        "--config-path",
        cfg,
        "--restart-cmd",
        restart,
        "--base-url",
        &base,
        "--yes",
        "--json",
    ];
    args.extend_from_slice(extra);
    fx.cli(&args)
}

/// A host with the OLD config, the NEW file, a stand-in serving both
/// models, and a restart command that leaves `ran` behind and carries a
/// tag to find its shell by.
struct Marked {
    cfg: String,
    ran: std::path::PathBuf,
    tag: String,
    new: std::path::PathBuf,
    st: Standin,
    restart: String,
}

async fn marked(fx: &Fixture, tag: &str) -> Marked {
    let cfg = path_str(&fx.config("config.yaml", OLD, 0o640));
    let ran = fx.dir.path().join("restart-ran");
    let tag = format!("{tag}-{}", std::process::id());
    let new = fx.dir.path().join("new.yaml");
    std::fs::write(&new, NEW).expect("new");
    let st = Standin::start(vec!["a".into(), "b".into()], None)
        .await
        .expect("standin");
    let restart = format!(": {tag}; : > '{}'", path_str(&ran));
    Marked {
        cfg,
        ran,
        tag,
        new,
        st,
        restart,
    }
}

/// No process carrying `tag` is left on the host (waited for: a gate may
/// still be polling).
async fn no_shell_left(tag: &str) {
    let tag = tag.to_string();
    let left = tokio::task::spawn_blocking(move || wait_no_process_with(&tag))
        .await
        .expect("join");
    assert_eq!(left, Vec::<u32>::new(), "a shell is left");
}

/// No temp file and no lock beside the config.
fn no_temp_or_lock(fx: &Fixture) {
    let left: Vec<String> = fx
        .listing()
        .into_iter()
        .filter(|n| n.starts_with(".config") || n.contains("lock"))
        .collect();
    assert_eq!(left, Vec::<String>::new(), "temp file or lock left");
}

/// Apply with `m`'s restart extended to append the config it sees to a
/// file; the apply must succeed, and the restart have run once, after the
/// rename (it saw the new bytes exactly once). Gives the `--json` report.
async fn apply_and_see_one_restart(fx: &Fixture, m: &Marked) -> serde_json::Value {
    let seen = fx.dir.path().join("restart-saw");
    let restart = format!("{}; cat '{}' >> '{}'", m.restart, m.cfg, path_str(&seen));
    let out = output(apply(fx, &m.new, &m.cfg, &restart, &m.st, &[])).await;
    let v = json_of(&out);
    assert_eq!(
        (out.status.code(), v["step"].as_str()),
        (Some(0), Some("done")),
        "{v}"
    );
    assert_eq!(std::fs::read(&m.cfg).expect("cfg"), NEW);
    assert_eq!(std::fs::read(&seen).expect("restart ran"), NEW);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_restart_shell_starts_before_the_write_and_its_command_runs_after_it() {
    // Every exec's shell first copies the config as it is when that shell
    // starts (the host's rc files run at that moment too).
    let side = tempfile::tempdir().expect("tempdir");
    let cfg = path_str(&side.path().join("config.yaml"));
    std::fs::write(&cfg, OLD).expect("config");
    let at_start = path_str(&side.path().join("at-shell-start"));
    let at_run = path_str(&side.path().join("at-restart"));
    let prelude = format!("cat '{cfg}' > '{at_start}'");
    let fx = fixture(|b| {
        b.round_trip(Duration::from_millis(40))
            .shell_prelude(&prelude)
    })
    .await;
    let new = fx.dir.path().join("new.yaml");
    std::fs::write(&new, NEW).expect("new");
    let st = Standin::start(vec!["a".into(), "b".into()], None)
        .await
        .expect("standin");
    let restart = format!("cat '{cfg}' > '{at_run}'");
    let out = output(apply(&fx, &new, &cfg, &restart, &st, &[])).await;
    let v = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(std::fs::read(&cfg).expect("cfg"), NEW);
    // One shell, started while the host still held the old config (beside
    // the read, not after the commit), and its command saw the new one.
    assert_eq!(std::fs::read(&at_start).expect("shell ran"), OLD);
    assert_eq!(std::fs::read(&at_run).expect("restart ran"), NEW);
    let log = fx.server.raw_exec_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(log[0].contains("read -r swapcfg_go"), "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_never_restarts_leaves_no_waiting_shell_and_runs_nothing() {
    let fx = fixture(|b| b).await;
    let m = marked(&fx, "gate-tag").await;
    // A conflict (the host's bytes are not the expected ones): refused
    // after the read, before anything is written.
    let sha = "ab".repeat(32);
    let out = output(apply(
        &fx,
        &m.new,
        &m.cfg,
        &m.restart,
        &m.st,
        &["--expect-sha256", &sha],
    ))
    .await;
    let v = json_of(&out);
    assert_eq!(
        (out.status.code(), v["step"].as_str()),
        (Some(5), Some("conflict")),
        "{v}"
    );
    assert_eq!(std::fs::read(&m.cfg).expect("cfg"), OLD);
    // The waiting shell ends once the connection closes, without running
    // the command (looked at after it ended: it would have run by then).
    no_shell_left(&m.tag).await;
    assert!(!m.ran.exists(), "the restart command ran");
    // The gate never opened: the server never saw the command run.
    assert_eq!(fx.server.exec_log(), Vec::<String>::new());
    let left: Vec<String> = fx
        .listing()
        .into_iter()
        .filter(|n| n.starts_with(".config") || n.contains("lock") || n.contains(".bak-"))
        .collect();
    assert_eq!(left, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_starts_no_shell_on_the_host() {
    let side = tempfile::tempdir().expect("tempdir");
    let started = side.path().join("shell-started");
    let prelude = format!(": > '{}'", path_str(&started));
    let fx = fixture(|b| b.shell_prelude(&prelude)).await;
    let cfg = path_str(&fx.config("config.yaml", OLD, 0o640));
    let new = fx.dir.path().join("new.yaml");
    std::fs::write(&new, NEW).expect("new");
    let st = Standin::start(vec!["a".into(), "b".into()], None)
        .await
        .expect("standin");
    let tag = format!("dry-gate-{}", std::process::id());
    let restart = format!(": {tag}");
    let out = output(apply(&fx, &new, &cfg, &restart, &st, &["--dry-run"])).await;
    // 2: a change is planned, nothing done.
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    no_shell_left(&tag).await;
    assert!(!started.exists(), "a dry run started a shell on the host");
    assert_eq!(fx.server.raw_exec_log(), Vec::<String>::new());
    assert_eq!(std::fs::read(&cfg).expect("cfg"), OLD);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_rename_runs_no_restart_and_the_gate_gives_up_alone() {
    use swapcfg_testkit::server::{FaultAction, FaultPlan, Op};
    // The restart goes out with the rename (its gate waits for the new
    // bytes); the host refuses the rename (the link backup is no rename).
    let fx = fixture(|b| b.faults(FaultPlan::one(Op::Rename, 1, FaultAction::Fail))).await;
    let m = marked(&fx, "refused-rename").await;
    let t = std::time::Instant::now();
    let out = output(apply(&fx, &m.new, &m.cfg, &m.restart, &m.st, &[])).await;
    let took = t.elapsed();
    let v = json_of(&out);
    assert_eq!(
        (out.status.code(), v["step"].as_str()),
        (Some(7), Some("write")),
        "{v}"
    );
    // The apply did not wait for the gate to give up.
    assert!(took < swapcfg::transport::gate::AFTER_WAIT, "took {took:?}");
    assert_eq!(std::fs::read(&m.cfg).expect("cfg"), OLD);
    // The waiting shell polls for the new bytes, gives up and ends without
    // running the command (looked at once it ended).
    no_shell_left(&m.tag).await;
    assert!(
        !m.ran.exists(),
        "the restart ran although the rename was refused"
    );
    // The gate's line did go out with the rename (the server hands a line
    // to the waiting shell and logs the command then): it was the shell's
    // own wait that ran nothing.
    assert_eq!(fx.server.exec_log(), vec![m.restart.clone()]);
    no_temp_or_lock(&fx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_slower_than_the_gate_waits_still_restarts_once_after_it() {
    use swapcfg_testkit::server::{FaultAction, FaultPlan, Op};
    // The host takes longer over the rename than the gate waits for the
    // new bytes: the gate gives up having run nothing, and the apply then
    // starts the restart on a channel of its own — once, after the rename.
    let slow = swapcfg::transport::gate::AFTER_WAIT + Duration::from_millis(700);
    let fx = fixture(|b| b.faults(FaultPlan::one(Op::Rename, 1, FaultAction::Slow(slow)))).await;
    let m = marked(&fx, "slow-rename").await;
    apply_and_see_one_restart(&fx, &m).await;
    // The primed (gated) command line, then the restart afresh (no gate).
    let log = fx.server.raw_exec_log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log[0].contains("read -r swapcfg_go"), "{log:?}");
    assert!(!log[1].contains("read -r swapcfg_go"), "{log:?}");
    no_shell_left(&m.tag).await;
    no_temp_or_lock(&fx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_shell_that_ended_early_is_replaced_and_the_restart_runs_once() {
    // The host's first shell ends before its gate (an rc file exits); the
    // channel closes. The restart must still run — once, after the rename,
    // on a channel of its own — and never count as done when it did not
    // run.
    let side = tempfile::tempdir().expect("tempdir");
    let first = path_str(&side.path().join("first-shell"));
    let prelude = format!("[ -e '{first}' ] || {{ : > '{first}'; exit 0; }}");
    let fx = fixture(|b| {
        b.round_trip(Duration::from_millis(40))
            .shell_prelude(&prelude)
    })
    .await;
    let m = marked(&fx, "ended-early").await;
    apply_and_see_one_restart(&fx, &m).await;
    assert!(
        std::path::Path::new(&first).exists(),
        "the first shell ran its rc"
    );
    // The server logs a gated command when its gate opens: the one that
    // ran is the fresh, ungated one.
    let log = fx.server.raw_exec_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(!log[0].contains("read -r swapcfg_go"), "{log:?}");
    no_shell_left(&m.tag).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_sent_with_the_commit_is_timed_as_the_restart_not_the_write() {
    // The restart rides with the rename, but the apply still waits for it:
    // that wait is the restart's time in the report, not the write's.
    let fx = fixture(|b| b).await;
    let mut m = marked(&fx, "timed").await;
    m.restart = format!("sleep 0.8; {}", m.restart);
    let v = apply_and_see_one_restart(&fx, &m).await;
    assert_eq!(
        fx.server.raw_exec_log().len(),
        1,
        "one shell: the primed one"
    );
    let t = &v["timings_ms"];
    let (write, restart) = (t["write"].as_u64(), t["restart"].as_u64());
    assert!(
        matches!(restart, Some(ms) if ms >= 700),
        "restart {restart:?} ms for a restart that sleeps 0.8 s: {t}"
    );
    assert!(
        matches!(write, Some(ms) if ms < 700),
        "write {write:?} ms holds the restart's sleep: {t}"
    );
    no_temp_or_lock(&fx);
    no_shell_left(&m.tag).await;
}
