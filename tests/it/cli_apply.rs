//! `swapcfg apply/plan/rollback/backups/edit` end to end through the
//! in-process SSH server and the stand-in llama-swap endpoint, asserting
//! the remote files on disk, `--json` fields and exit codes per step.

use std::path::Path;
use std::process::Output;

use crate::common::*;
use swapcfg_testkit::server::{Op, ScriptedExec};
use swapcfg_testkit::standin::Standin;

const OLD: &[u8] = b"models:\n  a:\n    cmd: srv --port ${PORT}\n";
const NEW: &[u8] =
    b"models:\n  a:\n    cmd: srv --port ${PORT}\n  b:\n    cmd: srv2 --port ${PORT}\n";
const RESTART_OK: &str = "restart-ok";
const RESTART_BAD: &str = "restart-bad";

/// A restart that fails while the config mentions `srv2` (the new model),
/// like llama-swap failing to start a model; run by the host's shell.
fn restart_fails_on_new(cfg: &str) -> String {
    format!("if grep -q srv2 '{cfg}'; then echo 'model b: exec srv2: not found' >&2; exit 1; fi")
}

async fn run(fx: &Fixture, args: Vec<String>, env: Vec<(String, String)>) -> Output {
    let mut full = args;
    let port = fx.server.port().to_string();
    full.extend(
        [
            "--identity",
            &path_str(&fx.key_path),
            "--known-hosts",
            &path_str(&fx.known_hosts),
            "--port",
            &port,
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    tokio::task::spawn_blocking(move || {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_swapcfg"));
        c.args(&full)
            .stdin(std::process::Stdio::null())
            .env_remove("SWAPCFG_INVENTORY");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("run swapcfg")
    })
    .await
    .expect("join")
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "json: {e}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn write_new(fx: &Fixture, bytes: &[u8]) -> String {
    let p = fx.dir.path().join("new.yaml");
    std::fs::write(&p, bytes).expect("new file");
    path_str(&p)
}

fn backups(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("config.yaml.bak-"))
        .collect();
    v.sort();
    v
}

async fn setup() -> (Fixture, String, Standin) {
    let fx = fixture(|b| {
        b.restart_script(RESTART_OK, ScriptedExec::default())
            .restart_script(RESTART_BAD, ScriptedExec::exit(1, "unit failed to start"))
    })
    .await;
    let cfg = path_str(&fx.config("config.yaml", OLD, 0o600));
    let standin = Standin::start(vec!["a".into(), "b".into()], None)
        .await
        .expect("standin");
    (fx, cfg, standin)
}

#[tokio::test]
async fn apply_success_json_fields_and_remote_state() {
    let (fx, cfg, st) = setup().await;
    let new = write_new(&fx, NEW);
    let out = run(
        &fx,
        s(&[
            "apply",
            "tester@127.0.0.1",
            &new,
            "--config-path",
            &cfg,
            "--restart-cmd",
            RESTART_OK,
            "--base-url",
            &st.base_url(),
            "--verify-models",
            "--yes",
            "--json",
        ]),
        vec![],
    )
    .await;
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(
        (
            v["ok"].as_bool(),
            v["step"].as_str(),
            v["changed"].as_bool(),
            v["rolled_back"].as_bool()
        ),
        (Some(true), Some("done"), Some(true), Some(false))
    );
    assert!(v["host"].as_str().unwrap_or("").contains("127.0.0.1"));
    assert!(v["diff"].as_str().unwrap_or("").contains("+  b:"));
    assert!(v["error"].is_null());
    for k in ["connect", "read", "backup", "write", "restart", "health"] {
        assert!(v["timings_ms"][k].is_u64(), "timing {k}: {v}");
    }
    assert_eq!(std::fs::read(&cfg).expect("cfg"), NEW);
    assert_eq!(mode_of(Path::new(&cfg)), 0o600);
    let b = v["backup_path"].as_str().expect("backup path").to_string();
    assert_eq!(std::fs::read(&b).expect("backup"), OLD);
    assert_eq!(
        mode_of(Path::new(&b)),
        0o600,
        "backups never widen permissions"
    );
    assert_eq!(fx.server.exec_log(), vec![RESTART_OK]);
    assert!(st.request_count() >= 1);
}

#[tokio::test]
async fn invalid_config_never_connects() {
    let (fx, cfg, _st) = setup().await;
    let new = write_new(&fx, b"globalTTL: -1\n");
    let out = run(
        &fx,
        s(&[
            "apply",
            "t@127.0.0.1",
            &new,
            "--config-path",
            &cfg,
            "--restart-cmd",
            RESTART_OK,
            "--yes",
            "--json",
        ]),
        vec![],
    )
    .await;
    let v = json(&out);
    assert_eq!(
        (out.status.code(), v["step"].as_str()),
        (Some(1), Some("validate"))
    );
    assert_eq!(std::fs::read(&cfg).expect("cfg"), OLD);
    assert_eq!(fx.server.op_count(Op::Open), 0, "no SFTP work");
    assert_eq!(fx.server.op_count(Op::Subsystem), 0, "no session at all");
}

#[tokio::test]
async fn failed_restart_is_rolled_back_to_the_exact_old_bytes() {
    let (fx, cfg, st) = setup().await;
    let new = write_new(&fx, NEW);
    let restart = restart_fails_on_new(&cfg);
    let out = run(
        &fx,
        s(&[
            "apply",
            "t@127.0.0.1",
            &new,
            "--config-path",
            &cfg,
            "--restart-cmd",
            &restart,
            "--base-url",
            &st.base_url(),
            "--yes",
            "--json",
        ]),
        vec![],
    )
    .await;
    let v = json(&out);
    assert_eq!(
        (
            out.status.code(),
            v["step"].as_str(),
            v["rolled_back"].as_bool()
        ),
        (Some(8), Some("restart"), Some(true)),
        "{v}"
    );
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .contains("srv2: not found"),
        "{v}"
    );
    assert_eq!(std::fs::read(&cfg).expect("cfg"), OLD, "old bytes restored");
    assert_eq!(
        fx.server.exec_log(),
        vec![restart.clone(), restart],
        "restart re-run after restoring"
    );
    assert_eq!(backups(fx.dir.path()).len(), 1);
}

#[tokio::test]
async fn restart_failing_again_during_rollback_is_exit_10() {
    let (fx, cfg, _st) = setup().await;
    let new = write_new(&fx, NEW);
    let out = run(
        &fx,
        s(&[
            "apply",
            "t@127.0.0.1",
            &new,
            "--config-path",
            &cfg,
            "--restart-cmd",
            RESTART_BAD,
            "--yes",
            "--json",
        ]),
        vec![],
    )
    .await;
    let v = json(&out);
    assert_eq!(
        (
            out.status.code(),
            v["step"].as_str(),
            v["rolled_back"].as_bool()
        ),
        (Some(10), Some("rollback"), Some(false)),
        "{v}"
    );
    assert!(
        v["rollback_error"]
            .as_str()
            .unwrap_or("")
            .contains("restart"),
        "{v}"
    );
    assert_eq!(
        std::fs::read(&cfg).expect("cfg"),
        OLD,
        "old bytes restored even so"
    );
    assert_eq!(fx.server.exec_log(), vec![RESTART_BAD, RESTART_BAD]);
}

#[tokio::test]
async fn unhealthy_after_restart_rolls_back_and_health_recovers() {
    let (fx, cfg, st) = setup().await;
    let new = write_new(&fx, NEW);
    // Endpoint lists only `a`: --verify-models fails for the new config
    // (which adds `b`), and passes again once the old config is back.
    st.set_models(vec!["a".into()]);
    let out = run(
        &fx,
        s(&[
            "apply",
            "t@127.0.0.1",
            &new,
            "--config-path",
            &cfg,
            "--restart-cmd",
            RESTART_OK,
            "--base-url",
            &st.base_url(),
            "--verify-models",
            "--health-attempts",
            "2",
            "--health-delay",
            "0.05",
            "--yes",
            "--json",
        ]),
        vec![],
    )
    .await;
    let v = json(&out);
    assert_eq!(
        (
            out.status.code(),
            v["step"].as_str(),
            v["rolled_back"].as_bool()
        ),
        (Some(9), Some("health"), Some(true)),
        "{v}"
    );
    assert!(v["error"].as_str().unwrap_or("").contains("\"b\""), "{v}");
    assert_eq!(std::fs::read(&cfg).expect("cfg"), OLD);
    assert_eq!(fx.server.exec_log(), vec![RESTART_OK, RESTART_OK]);
}

#[tokio::test]
async fn no_rollback_keeps_new_file() {
    let (fx, cfg, _st) = setup().await;
    let new = write_new(&fx, NEW);
    let out = run(
        &fx,
        s(&[
            "apply",
            "t@127.0.0.1",
            &new,
            "--config-path",
            &cfg,
            "--restart-cmd",
            RESTART_BAD,
            "--no-rollback",
            "--yes",
            "--json",
        ]),
        vec![],
    )
    .await;
    assert_eq!(out.status.code(), Some(8));
    assert_eq!(std::fs::read(&cfg).expect("cfg"), NEW);
    assert_eq!(backups(fx.dir.path()).len(), 1);
}

#[tokio::test]
async fn health_needs_the_api_key_and_passes_only_with_it() {
    let (fx, cfg, _) = setup().await;
    let st = Standin::start(vec!["a".into(), "b".into()], Some("sk-secret-123".into()))
        .await
        .expect("standin");
    let new = write_new(&fx, NEW);
    let base = st.base_url();
    let args = |extra: &[&str]| {
        let mut a = s(&[
            "apply",
            "t@127.0.0.1",
            &new,
            "--config-path",
            &cfg,
            "--restart-cmd",
            RESTART_OK,
            "--base-url",
            &base,
            "--health-attempts",
            "1",
            "--yes",
            "--json",
        ]);
        a.extend(s(extra));
        a
    };
    // Without the key the pre-flight probe gets 401: nothing is written
    // (bytes, no backup, no temp file, no lock), and the error names the flag.
    let before = fx.listing();
    let out = run(&fx, args(&[]), vec![]).await;
    let v = json(&out);
    assert_eq!(
        (out.status.code(), v["step"].as_str()),
        (Some(9), Some("health")),
        "{v}"
    );
    let e = v["error"].as_str().unwrap_or("");
    assert!(
        e.contains("llama-swap requires an API key") && e.contains("--api-key-env NAME"),
        "{v}"
    );
    assert!(e.contains("nothing was written"), "{v}");
    assert_eq!(std::fs::read(&cfg).expect("cfg"), OLD, "untouched");
    assert_eq!(fx.listing(), before, "no backup, temp file or lock");
    assert!(fx.server.exec_log().is_empty(), "no restart");

    // A wrong key: the same stop, naming the variable, never "pass --api-key-env".
    let out = run(
        &fx,
        args(&["--api-key-env", "LS_KEY"]),
        vec![("LS_KEY".into(), "sk-wrong".into())],
    )
    .await;
    let v = json(&out);
    assert_eq!(
        (out.status.code(), v["step"].as_str()),
        (Some(9), Some("health")),
        "{v}"
    );
    let e = v["error"].as_str().unwrap_or("");
    assert!(e.contains("the key in $LS_KEY was rejected"), "{v}");
    assert!(!e.contains("give one with --api-key-env"), "{v}");
    assert!(!e.contains("sk-wrong"), "{v}");
    assert_eq!(std::fs::read(&cfg).expect("cfg"), OLD, "untouched");
    assert_eq!(fx.listing(), before, "no backup, temp file or lock");
    assert!(fx.server.exec_log().is_empty(), "no restart");

    let out = run(
        &fx,
        args(&["--api-key-env", "LS_KEY"]),
        vec![("LS_KEY".into(), "sk-secret-123".into())],
    )
    .await;
    let v = json(&out);
    assert_eq!(
        (out.status.code(), v["step"].as_str()),
        (Some(0), Some("done")),
        "{v}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("sk-secret-123"),
        "the key never reaches --json"
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("sk-secret-123"));
}

#[tokio::test]
async fn dry_run_unchanged_and_no_tty_refusal() {
    let (fx, cfg, _st) = setup().await;
    let new = write_new(&fx, NEW);
    let out = run(
        &fx,
        s(&["plan", "t@127.0.0.1", &new, "--config-path", &cfg]),
        vec![],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "changes pending");
    assert!(String::from_utf8_lossy(&out.stdout).contains("+  b:"));
    assert_eq!(std::fs::read(&cfg).expect("cfg"), OLD);
    assert!(backups(fx.dir.path()).is_empty());

    let out = run(
        &fx,
        s(&[
            "apply",
            "t@127.0.0.1",
            &new,
            "--config-path",
            &cfg,
            "--restart-cmd",
            RESTART_OK,
        ]),
        vec![],
    )
    .await;
    assert_eq!(out.status.code(), Some(11), "no TTY and no --yes");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    assert_eq!(std::fs::read(&cfg).expect("cfg"), OLD);

    let same = write_new(&fx, OLD);
    let out = run(
        &fx,
        s(&[
            "apply",
            "t@127.0.0.1",
            &same,
            "--config-path",
            &cfg,
            "--restart-cmd",
            RESTART_OK,
            "--yes",
            "--json",
        ]),
        vec![],
    )
    .await;
    assert_eq!(
        (out.status.code(), json(&out)["step"].as_str()),
        (Some(0), Some("unchanged"))
    );
    assert!(
        backups(fx.dir.path()).is_empty(),
        "unchanged creates no backup"
    );
    assert!(fx.server.exec_log().is_empty(), "and restarts nothing");
}

#[tokio::test]
async fn conflict_guard_with_expect_sha256() {
    let (fx, cfg, _st) = setup().await;
    let new = write_new(&fx, NEW);
    let out = run(
        &fx,
        s(&[
            "apply",
            "t@127.0.0.1",
            &new,
            "--config-path",
            &cfg,
            "--restart-cmd",
            RESTART_OK,
            "--expect-sha256",
            &"ab".repeat(32),
            "--yes",
            "--json",
        ]),
        vec![],
    )
    .await;
    assert_eq!(
        (out.status.code(), json(&out)["step"].as_str()),
        (Some(5), Some("conflict"))
    );
    assert_eq!(std::fs::read(&cfg).expect("cfg"), OLD);
    assert!(backups(fx.dir.path()).is_empty());
}

#[tokio::test]
async fn backups_and_rollback_to_a_named_backup() {
    let (fx, cfg, _st) = setup().await;
    let new = write_new(&fx, NEW);
    let out = run(
        &fx,
        s(&[
            "apply",
            "t@127.0.0.1",
            &new,
            "--config-path",
            &cfg,
            "--restart-cmd",
            RESTART_OK,
            "--yes",
            "--json",
        ]),
        vec![],
    )
    .await;
    let b = json(&out)["backup_path"]
        .as_str()
        .expect("backup")
        .to_string();
    let out = run(
        &fx,
        s(&["backups", "t@127.0.0.1", "--config-path", &cfg, "--json"]),
        vec![],
    )
    .await;
    let v = json(&out);
    assert_eq!(v[0]["path"].as_str(), Some(b.as_str()));
    assert_eq!(v[0]["size"].as_u64(), Some(OLD.len() as u64));
    let out = run(
        &fx,
        s(&[
            "rollback",
            "t@127.0.0.1",
            &b,
            "--config-path",
            &cfg,
            "--restart-cmd",
            RESTART_OK,
            "--yes",
            "--json",
        ]),
        vec![],
    )
    .await;
    let v = json(&out);
    assert_eq!(
        (out.status.code(), v["step"].as_str()),
        (Some(0), Some("done")),
        "{v}"
    );
    assert_eq!(std::fs::read(&cfg).expect("cfg"), OLD);
    assert_eq!(
        backups(fx.dir.path()).len(),
        2,
        "the current file was backed up first"
    );
}

#[tokio::test]
async fn edit_validates_and_reopens_with_errors_then_applies() {
    let (fx, cfg, _st) = setup().await;
    // An editor that first writes an invalid config, then (seeing the
    // swapcfg error header) a valid one.
    let editor = fx.dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nif grep -q '^# swapcfg:' \"$1\"; then printf 'models:\\n  a:\\n    cmd: srv --port ${PORT}\\n    ttl: 60\\n' > \"$1\"; else printf 'globalTTL: -3\\n' > \"$1\"; fi\n",
    )
    .expect("editor");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let out = run(
        &fx,
        s(&[
            "edit",
            "t@127.0.0.1",
            "--config-path",
            &cfg,
            "--restart-cmd",
            RESTART_OK,
            "--yes",
            "--json",
        ]),
        vec![
            ("EDITOR".into(), path_str(&editor)),
            ("VISUAL".into(), String::new()),
        ],
    )
    .await;
    let v = json(&out);
    assert_eq!(
        (out.status.code(), v["step"].as_str()),
        (Some(0), Some("done")),
        "{v}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(&cfg).expect("cfg"),
        b"models:\n  a:\n    cmd: srv --port ${PORT}\n    ttl: 60\n"
    );
}

#[tokio::test]
async fn wrapper_mode_apply_needs_no_config_path() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, OLD).expect("cfg");
    let fx = fixture(|b| b.wrapper(cfg.clone())).await;
    let new = write_new(&fx, NEW);
    let out = run(
        &fx,
        s(&[
            "apply",
            "t@127.0.0.1",
            &new,
            "--mode",
            "wrapper",
            "--unverified-wrapper-write",
            "--yes",
            "--json",
        ]),
        vec![],
    )
    .await;
    let v = json(&out);
    assert_eq!(
        (out.status.code(), v["step"].as_str()),
        (Some(0), Some("done")),
        "{v}"
    );
    assert_eq!(std::fs::read(&cfg).expect("cfg"), NEW);
    assert_eq!(
        fx.server.exec_log(),
        vec!["read 1", "read", "backup", "write", "restart"],
        "no second read: the compare happens in the write"
    );
}

/// `--json` carries the validation findings in full: as data in
/// `findings`, quoted in `error` when they stopped the apply, and the
/// warnings of a valid file in `warnings`.
#[tokio::test]
async fn json_carries_validation_findings() {
    let (fx, cfg, _st) = setup().await;
    // Loads, but the server would not start: a group member naming nothing.
    let bad = write_new(
        &fx,
        b"models:\n  a:\n    cmd: srv --port ${PORT}\ngroups:\n  g:\n    members: [a, ghost]\n",
    );
    let out = run(
        &fx,
        s(&[
            "apply",
            "t@127.0.0.1",
            &bad,
            "--config-path",
            &cfg,
            "--restart-cmd",
            RESTART_OK,
            "--yes",
            "--json",
        ]),
        vec![],
    )
    .await;
    let v = json(&out);
    assert_eq!(
        (out.status.code(), v["step"].as_str()),
        (Some(1), Some("validate")),
        "{v}"
    );
    let error = v["error"].as_str().unwrap_or("");
    assert!(
        error.contains("6:18: $.groups.g.members[1]") && error.contains("no model config"),
        "{error}"
    );
    let f = &v["findings"][0];
    assert_eq!(
        (
            f["rule"].as_str(),
            f["severity"].as_str(),
            f["line"].as_u64(),
            f["column"].as_u64(),
            f["path"].as_str()
        ),
        (
            Some("group-member-unknown"),
            Some("error"),
            Some(6),
            Some(18),
            Some("$.groups.g.members[1]")
        ),
        "{v}"
    );
    assert!(f["message"].as_str().unwrap_or("").contains("ghost"));
    assert_eq!(std::fs::read(&cfg).expect("cfg"), OLD);
    assert_eq!(fx.server.op_count(Op::Subsystem), 0, "never connected");

    // A valid file with a warning: `plan --json` lists it (human output
    // prints it on stderr).
    let warn = write_new(
        &fx,
        b"models:\n  a:\n    cmd: srv --port ${PORT}\n    cmdd: typo\n",
    );
    let out = run(
        &fx,
        s(&[
            "plan",
            "t@127.0.0.1",
            &warn,
            "--config-path",
            &cfg,
            "--json",
        ]),
        vec![],
    )
    .await;
    let v = json(&out);
    assert_eq!(
        (out.status.code(), v["step"].as_str(), v["ok"].as_bool()),
        (Some(2), Some("planned"), Some(true)), // 2: changes pending
        "{v}"
    );
    let warnings: Vec<&str> = v["warnings"]
        .as_array()
        .map(|a| a.iter().filter_map(|w| w.as_str()).collect())
        .unwrap_or_default();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("4:5: $.models.a.cmdd:") && w.ends_with("[unknown-key]")),
        "{v}"
    );
    let f = &v["findings"][0];
    assert_eq!(
        (
            f["rule"].as_str(),
            f["severity"].as_str(),
            f["line"].as_u64()
        ),
        (Some("unknown-key"), Some("warning"), Some(4)),
        "{v}"
    );
    assert_eq!(
        std::fs::read(&cfg).expect("cfg"),
        OLD,
        "plan writes nothing"
    );
}
