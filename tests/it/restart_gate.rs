//! The primed restart (SFTP mode): the restart command's shell starts on
//! the host right after connecting and waits at a gate; the command runs
//! only when the apply opens the gate after the new config is in place, and
//! a run that never restarts leaves no shell behind. Checked on the
//! in-process server with a real `/bin/sh` (the gate is the shell's own
//! `read`) and a simulated network, so the order is not a race.

use std::time::{Duration, Instant};

use crate::common::*;
use swapcfg_testkit::standin::Standin;

const OLD: &[u8] = b"models:\n  a:\n    cmd: a --port ${PORT}\n";
const NEW: &[u8] = b"models:\n  a:\n    cmd: a --port ${PORT}\n  b:\n    cmd: b --port ${PORT}\n";

/// Wait (up to 10 s) until no process's command line has held `tag` for
/// 300 ms (a process caught between fork and exec is not missed).
async fn no_process_with(tag: &str) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut quiet_since = None;
    loop {
        let left = processes_with(tag);
        if !left.is_empty() {
            quiet_since = None;
        } else if quiet_since.get_or_insert_with(Instant::now).elapsed()
            > Duration::from_millis(300)
        {
            return left;
        }
        if Instant::now() > deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    let out = output(fx.cli(&[
        "apply",
        &path_str(&new),
        "--config-path",
        &cfg,
        "--restart-cmd",
        &format!("cat '{cfg}' > '{at_run}'"),
        "--base-url",
        &st.base_url(),
        "--yes",
        "--json",
    ]))
    .await;
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
    let cfg = path_str(&fx.config("config.yaml", OLD, 0o640));
    let ran = fx.dir.path().join("restart-ran");
    let tag = format!("gate-tag-{}", std::process::id());
    let new = fx.dir.path().join("new.yaml");
    std::fs::write(&new, NEW).expect("new");
    let st = Standin::start(vec!["a".into(), "b".into()], None)
        .await
        .expect("standin");
    // A conflict (the host's bytes are not the expected ones): refused
    // after the read, before anything is written.
    let out = output(fx.cli(&[
        "apply",
        &path_str(&new),
        "--config-path",
        &cfg,
        "--restart-cmd",
        &format!(": {tag}; : > '{}'", path_str(&ran)),
        "--base-url",
        &st.base_url(),
        "--expect-sha256",
        &"ab".repeat(32),
        "--yes",
        "--json",
    ]))
    .await;
    let v = json_of(&out);
    assert_eq!(
        (out.status.code(), v["step"].as_str()),
        (Some(5), Some("conflict")),
        "{v}"
    );
    assert_eq!(std::fs::read(&cfg).expect("cfg"), OLD);
    assert!(!ran.exists(), "the restart command ran");
    assert_eq!(
        no_process_with(&tag).await,
        Vec::<u32>::new(),
        "a shell is left"
    );
    // The gate never opened: the server never saw the command run.
    assert_eq!(fx.server.exec_log(), Vec::<String>::new());
    let left: Vec<String> = fx
        .listing()
        .into_iter()
        .filter(|n| n.starts_with(".config") || n.contains("lock") || n.contains(".bak-"))
        .collect();
    assert_eq!(left, Vec::<String>::new());
}
