//! Proving a change took, end to end: the binary against the in-process SSH
//! server and a stand-in llama-swap that follows the config FILE the server
//! writes (watch polling, SIGHUP, restart with a late port), judged by
//! swapcfg's validator plus a host-dependent refusal (an unset
//! `${env.NAME}`, which only the server can judge). Each test checks the
//! host's file and the stand-in's log afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use swapcfg_testkit::server::ScriptedExec;
use swapcfg_testkit::standin::{Judge, Standin, StandinBuilder};

const OLD: &[u8] = b"models:\n  a:\n    cmd: srv --port ${PORT}\n";
const NEW: &[u8] =
    b"models:\n  a:\n    cmd: srv --port ${PORT}\n  b:\n    cmd: srv2 --port ${PORT}\n";
/// Valid for swapcfg (it cannot see the host's environment); refused by the
/// server, whose environment lacks the variable.
const REFUSED: &[u8] =
    b"models:\n  a:\n    cmd: srv --port ${PORT} --key ${env.LS_UNSET_FOR_TEST}\n  b:\n    cmd: srv2 --port ${PORT}\n";

/// The server's judgement: swapcfg's validator, plus unset variables.
fn judge() -> Judge {
    let v = swapcfg::validate::Validator::embedded();
    Arc::new(move |bytes: &[u8]| {
        let text = String::from_utf8_lossy(bytes);
        if let Some(at) = text.find("${env.") {
            let name: String = text[at + 6..].chars().take_while(|c| *c != '}').collect();
            return Err(format!("environment variable '{name}' is not set"));
        }
        let o = v.validate(bytes);
        match o
            .findings
            .iter()
            .find(|f| !o.is_valid() && f.message.len() < 500)
        {
            Some(f) => Err(f.message.clone()),
            None => Ok(o.listed_models),
        }
    })
}

struct Host {
    fx: Fixture,
    cfg: String,
    new: std::path::PathBuf,
}

async fn host() -> Host {
    let fx = fixture(|b| b).await;
    let cfg = path_str(&fx.config("config.yaml", OLD, 0o644));
    let new = fx.dir.path().join("new.yaml");
    Host { fx, cfg, new }
}

impl Host {
    async fn apply(
        &self,
        bytes: &[u8],
        base: &str,
        extra: &[&str],
    ) -> (std::process::Output, serde_json::Value) {
        std::fs::write(&self.new, bytes).expect("new file");
        let mut c = self.fx.cli(&[
            "apply",
            &path_str(&self.new),
            "--config-path",
            &self.cfg,
            "--base-url",
            base,
            "--yes",
            "--json",
        ]);
        c.args(extra);
        let out = output(c).await;
        let v = json_of(&out);
        (out, v)
    }

    fn config(&self) -> Vec<u8> {
        std::fs::read(&self.cfg).expect("config")
    }

    /// Names beside the config (backups), without the new file and keys.
    fn beside(&self) -> Vec<String> {
        self.fx
            .listing()
            .into_iter()
            .filter(|n| n.starts_with("config.yaml"))
            .collect()
    }
}

/// The apply exited with `code` at `step` (the report printed otherwise).
#[track_caller]
fn assert_ended(out: &std::process::Output, v: &serde_json::Value, code: i32, step: &str) {
    assert_eq!(
        (out.status.code(), v["step"].as_str()),
        (Some(code), Some(step)),
        "{v}"
    );
}

fn warnings(v: &serde_json::Value) -> Vec<String> {
    v["warnings"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|w| w.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

async fn watching(h: &Host, logs: bool) -> Standin {
    StandinBuilder::new(Vec::new())
        .config(&h.cfg, judge())
        .watch(Duration::from_millis(30))
        .logs(logs)
        .start()
        .await
        .expect("stand-in")
}

#[tokio::test]
async fn watch_mode_reloaded_is_proven_from_the_log() {
    let h = host().await;
    let st = watching(&h, true).await;
    let (out, v) = h
        .apply(
            NEW,
            &st.base_url(),
            &["--restart-cmd", "none", "--reload-timeout", "5"],
        )
        .await;
    assert_ended(&out, &v, 0, "done");
    assert_eq!(h.config(), NEW);
    assert_eq!(
        st.log_text(),
        "[INFO] reloading configuration\n[INFO] configuration reloaded\n"
    );
    assert_eq!(st.reload_count(), 1);
    // No service warning (host checks may add their own notes).
    assert!(
        !warnings(&v)
            .iter()
            .any(|w| w.contains("llama-swap") || w.contains("proof") || w.contains("healthy")),
        "{v}"
    );
    assert!(h.fx.server.exec_log().is_empty(), "watch mode runs nothing");
}

#[tokio::test]
async fn watch_mode_refused_is_rolled_back_quoting_the_server() {
    let h = host().await;
    let st = watching(&h, true).await;
    let (out, v) = h
        .apply(
            REFUSED,
            &st.base_url(),
            &["--restart-cmd", "none", "--reload-timeout", "5"],
        )
        .await;
    assert_ended(&out, &v, 9, "health");
    assert_eq!(v["rolled_back"].as_bool(), Some(true), "{v}");
    let e = v["error"].as_str().unwrap_or("");
    assert!(
        e.contains("refused") && e.contains("environment variable 'LS_UNSET_FOR_TEST' is not set"),
        "{v}"
    );
    assert_eq!(h.config(), OLD, "the old bytes are back on the host");
    assert_eq!(v["remote_state"].as_str(), Some("old"));
    assert_eq!(
        st.log_text(),
        "[INFO] reloading configuration\n\
         [WARN] failed to reload config: environment variable 'LS_UNSET_FOR_TEST' is not set\n\
         [INFO] reloading configuration\n\
         [INFO] configuration reloaded\n",
        "the refusal, then the rollback's reload, which swapcfg waited for"
    );
    // The human report escapes and quotes the same reason.
    let mut c = h.fx.cli(&[
        "apply",
        &path_str(&h.new),
        "--config-path",
        &h.cfg,
        "--base-url",
        &st.base_url(),
        "--restart-cmd",
        "none",
        "--reload-timeout",
        "5",
        "--yes",
    ]);
    c.stdout(std::process::Stdio::null());
    let out = output(c).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(9), "{err}");
    assert!(err.contains("LS_UNSET_FOR_TEST' is not set"), "{err}");
    assert!(err.contains("rolled back"), "{err}");
    assert_eq!(h.config(), OLD);
}

#[tokio::test]
async fn watch_mode_change_not_noticed_fails_and_is_rolled_back() {
    let h = host().await;
    // llama-swap without -watch-config: nothing ever reloads.
    let st = StandinBuilder::new(Vec::new())
        .config(&h.cfg, judge())
        .start()
        .await
        .expect("stand-in");
    let t = Instant::now();
    let (out, v) = h
        .apply(
            NEW,
            &st.base_url(),
            &["--restart-cmd", "none", "--reload-timeout", "0.4"],
        )
        .await;
    assert_ended(&out, &v, 9, "health");
    let e = v["error"].as_str().unwrap_or("");
    assert!(
        e.contains("did not reload within") && e.contains("reloading configuration"),
        "{v}"
    );
    assert_eq!(v["rolled_back"].as_bool(), Some(true), "{v}");
    assert_eq!(h.config(), OLD, "the old bytes are back on the host");
    assert_eq!(st.reload_count(), 0);
    assert_eq!(st.log_text(), "");
    // The rollback does not wait a second deadline for a change the server
    // never noticed.
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(h.beside().iter().any(|n| n.starts_with("config.yaml.bak-")));
}

#[tokio::test]
async fn watch_mode_without_logs_falls_back_to_the_model_list_with_a_warning() {
    let h = host().await;
    let st = watching(&h, false).await;
    let (out, v) = h
        .apply(
            NEW,
            &st.base_url(),
            &["--restart-cmd", "none", "--reload-timeout", "5"],
        )
        .await;
    assert_ended(&out, &v, 0, "done");
    assert_eq!(h.config(), NEW);
    // The model list was waited for: the watcher's reload happened.
    assert_eq!(st.reload_count(), 1);
    let w = warnings(&v);
    assert!(
        w.iter()
            .any(|w| w.contains("/logs: HTTP 404") && w.contains("the proof is weaker")),
        "{v}"
    );

    // And a refusal there is caught only by the model list: not listed
    // within the deadline → failure and rollback.
    let (out, v) = h
        .apply(
            b"models:\n  a:\n    cmd: srv --port ${PORT}\n  c:\n    cmd: srv3 --port ${PORT} --k ${env.LS_UNSET_FOR_TEST}\n",
            &st.base_url(),
            &["--restart-cmd", "none", "--reload-timeout", "0.5"],
        )
        .await;
    assert_ended(&out, &v, 9, "health");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .contains("does not list [\"c\"]"),
        "{v}"
    );
    assert_eq!(h.config(), NEW, "rolled back to the previous config");
}

#[tokio::test]
async fn signal_mode_is_detected_and_proven() {
    let h = host().await;
    let st = StandinBuilder::new(Vec::new())
        .config(&h.cfg, judge())
        .start()
        .await
        .expect("stand-in");
    h.fx.server
        .set_script("kill -HUP 4242", ScriptedExec::running(st.reload_hook()));
    let (out, v) = h
        .apply(NEW, &st.base_url(), &["--restart-cmd", "kill -HUP 4242"])
        .await;
    assert_ended(&out, &v, 0, "done");
    assert_eq!(
        st.log_text(),
        "[INFO] received SIGHUP, reloading config\n[INFO] reloading configuration\n[INFO] configuration reloaded\n"
    );
    assert_eq!(h.fx.server.exec_log(), ["kill -HUP 4242"]);
}

#[tokio::test]
async fn restart_with_a_late_port_is_found_within_150ms_of_it_opening() {
    let h = host().await;
    let st = StandinBuilder::new(Vec::new())
        .config(&h.cfg, judge())
        .start_delay(Duration::from_millis(300))
        .start()
        .await
        .expect("stand-in");
    h.fx.server
        .set_script("restart-llama", ScriptedExec::running(st.restart_hook()));
    let (out, v) = h
        .apply(NEW, &st.base_url(), &["--restart-cmd", "restart-llama"])
        .await;
    let finished = Instant::now();
    assert_ended(&out, &v, 0, "done");
    assert_eq!((st.restart_count(), st.is_up()), (1, true));
    assert_eq!(h.config(), NEW);
    // The health step starts when the restart returns; the port opens 300 ms
    // later. The bound: done within 150 ms of the port opening.
    let health = v["timings_ms"]["health"].as_u64().expect("health timing");
    let after_open = health.saturating_sub(300);
    let wall = finished.duration_since(st.opened_at());
    eprintln!("late port: health step {health} ms, {after_open} ms after the port opened; process exit {wall:?} after it");
    assert!(health >= 300, "not before the port opened: {v}");
    assert!(after_open <= 150, "health took {health} ms: {v}");
    assert!(wall < Duration::from_millis(600), "{wall:?}");
}

#[tokio::test]
async fn restart_refused_by_the_server_is_rolled_back_and_health_says_what_it_saw() {
    let h = host().await;
    let st = StandinBuilder::new(Vec::new())
        .config(&h.cfg, judge())
        .start_delay(Duration::from_millis(20))
        .start()
        .await
        .expect("stand-in");
    h.fx.server
        .set_script("restart-llama", ScriptedExec::running(st.restart_hook()));
    let (out, v) = h
        .apply(
            REFUSED,
            &st.base_url(),
            &[
                "--restart-cmd",
                "restart-llama",
                "--health-timeout-total",
                "0.5",
            ],
        )
        .await;
    assert_ended(&out, &v, 9, "health");
    let e = v["error"].as_str().unwrap_or("");
    assert!(e.contains("cannot connect"), "says what it saw: {v}");
    assert_eq!(v["rolled_back"].as_bool(), Some(true), "{v}");
    assert_eq!(h.config(), OLD);
    assert_eq!(
        (st.restart_count(), st.is_up()),
        (2, true),
        "restarted again with the old config"
    );
}

#[tokio::test]
async fn unreachable_before_the_change_warns_or_stops_with_require_healthy() {
    let h = host().await;
    // Nothing listens on this port.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("addr"))
    };
    let before = h.beside();
    let (out, v) = h
        .apply(NEW, &dead, &["--restart-cmd", "none", "--require-healthy"])
        .await;
    assert_ended(&out, &v, 9, "health");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .contains("nothing was written"),
        "{v}"
    );
    assert_eq!(h.config(), OLD);
    assert_eq!(h.beside(), before, "no backup, temp file or lock");

    let (out, v) = h
        .apply(
            NEW,
            &dead,
            &[
                "--restart-cmd",
                "none",
                "--reload-timeout",
                "0.2",
                "--no-rollback",
            ],
        )
        .await;
    assert_eq!(out.status.code(), Some(9), "{v}");
    assert!(
        warnings(&v)
            .iter()
            .any(|w| w.contains("before the change") && w.contains("cannot connect")),
        "{v}"
    );
    assert_eq!(h.config(), NEW, "went on (kept with --no-rollback)");

    // Rolled back: llama-swap is as unhealthy as before, which is not a
    // failed rollback (exit 9, not 10).
    let (out, v) = h
        .apply(
            OLD,
            &dead,
            &["--restart-cmd", "none", "--reload-timeout", "0.2"],
        )
        .await;
    assert_ended(&out, &v, 9, "health");
    assert_eq!(v["rolled_back"].as_bool(), Some(true), "{v}");
    assert!(v["rollback_error"].is_null(), "{v}");
    assert!(
        warnings(&v)
            .iter()
            .any(|w| w.contains("not healthy with it either")),
        "{v}"
    );
    assert_eq!(h.config(), NEW, "the previous config is back");
}

#[tokio::test]
async fn health_command_reports_version_running_models_and_no_ssh_target() {
    let st = StandinBuilder::new(vec!["a".into(), "b".into()])
        .api_key("sk-h")
        .start()
        .await
        .expect("stand-in");
    st.set_running(vec!["a".into()]);
    let mut c = swapcfg_cmd();
    c.args([
        "health",
        "gpu1",
        "--base-url",
        &st.base_url(),
        "--api-key-env",
        "HK",
        "--json",
    ])
    .env("HK", "sk-h");
    let out = output(c).await;
    let v = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert!(
        v.get("host").is_none(),
        "a plain HTTP check names no SSH target: {v}"
    );
    assert_eq!(
        v["url"].as_str(),
        Some(format!("{}/v1/models", st.base_url()).as_str())
    );
    assert_eq!(v["models"], serde_json::json!(["a", "b"]));
    assert_eq!(v["running"], serde_json::json!(["a"]));
    assert!(
        v["version"].as_str().unwrap_or("").contains("standin"),
        "{v}"
    );

    // A failure says what it saw: the status and the first bytes, escaped
    // for a terminal.
    st.set_status(503);
    let mut c = swapcfg_cmd();
    c.args([
        "health",
        "gpu1",
        "--base-url",
        &st.base_url(),
        "--api-key-env",
        "HK",
        "--health-timeout-total",
        "0.3",
    ])
    .env("HK", "sk-h");
    let out = output(c).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(9), "{err}");
    assert!(err.contains("HTTP 503") && err.contains("loading"), "{err}");
}

#[tokio::test]
async fn a_401_after_the_change_is_a_key_problem_not_a_failed_rollback() {
    let h = host().await;
    let st = StandinBuilder::new(Vec::new())
        .config(&h.cfg, judge())
        .api_key("sk-k")
        .start_delay(Duration::from_millis(400))
        .start()
        .await
        .expect("stand-in");
    h.fx.server
        .set_script("restart-llama", ScriptedExec::running(st.restart_hook()));
    // Down while swapcfg looks before the change (the pre-flight only
    // warns), keyed once it is up again after the restart.
    st.restart();
    let (out, v) = h
        .apply(NEW, &st.base_url(), &["--restart-cmd", "restart-llama"])
        .await;
    assert_ended(&out, &v, 9, "health");
    assert!(v["rollback_error"].is_null(), "{v}");
    assert_eq!(v["rolled_back"].as_bool(), Some(false), "{v}");
    let e = v["error"].as_str().unwrap_or("");
    assert!(
        e.contains("requires an API key")
            && e.contains("--api-key-env NAME")
            && e.contains("not rolled back"),
        "{v}"
    );
    assert!(
        warnings(&v).iter().any(|w| w.contains("before the change")),
        "{v}"
    );
    assert_eq!(h.config(), NEW, "kept: llama-swap runs it and answers");
    assert_eq!(
        h.fx.server.exec_log(),
        ["restart-llama"],
        "one restart, no rollback"
    );
}

#[tokio::test]
async fn the_model_check_is_on_by_default_and_can_be_skipped() {
    let h = host().await;
    // Lists only `a`, whatever the file says (an old process still serving).
    let st = Standin::start(vec!["a".into()], None)
        .await
        .expect("stand-in");
    h.fx.server
        .set_script("restart-ok", ScriptedExec::default());
    let (out, v) = h
        .apply(
            NEW,
            &st.base_url(),
            &[
                "--restart-cmd",
                "restart-ok",
                "--health-timeout-total",
                "0.3",
            ],
        )
        .await;
    assert_ended(&out, &v, 9, "health");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .contains("does not list [\"b\"]"),
        "{v}"
    );
    assert_eq!(h.config(), OLD, "rolled back");
    // With `/health` as the health path the models still come from /v1/models.
    let (out, v) = h
        .apply(
            NEW,
            &st.base_url(),
            &[
                "--restart-cmd",
                "restart-ok",
                "--health-path",
                "/health",
                "--health-timeout-total",
                "0.3",
            ],
        )
        .await;
    assert_eq!(out.status.code(), Some(9), "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .contains("does not list [\"b\"]"),
        "{v}"
    );
    assert_eq!(h.config(), OLD, "rolled back");
    st.set_models(vec!["a".into(), "b".into()]);
    let (out, v) = h
        .apply(
            NEW,
            &st.base_url(),
            &["--restart-cmd", "restart-ok", "--health-path", "/health"],
        )
        .await;
    assert_eq!(out.status.code(), Some(0), "{v}");
    st.set_models(vec!["a".into()]);
    std::fs::write(&h.cfg, OLD).expect("reset");
    let (out, v) = h
        .apply(
            NEW,
            &st.base_url(),
            &["--restart-cmd", "restart-ok", "--no-verify-models"],
        )
        .await;
    assert_ended(&out, &v, 0, "done");
    assert_eq!(h.config(), NEW);
}

/// One raw HTTP/1.1 GET: (status line, headers and body as text).
fn raw_get(addr: std::net::SocketAddr, path: &str, header: Option<&str>) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let extra = header.map(|h| format!("{h}\r\n")).unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n"
    )
    .expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

#[tokio::test]
async fn the_stand_in_answers_like_the_real_server_with_api_keys() {
    let st = StandinBuilder::new(vec!["a".into()])
        .api_key("sk-1")
        .start()
        .await
        .expect("stand-in");
    let addr = st.addr();
    let answers = tokio::task::spawn_blocking(move || {
        [
            raw_get(addr, "/health", None),
            raw_get(addr, "/v1/models", None),
            raw_get(addr, "/v1/models", Some("Authorization: Bearer sk-2")),
            raw_get(addr, "/models", Some("x-api-key: sk-1")),
            raw_get(addr, "/logs", Some("Authorization: Bearer sk-1")),
            raw_get(addr, "/api/version", Some("x-api-key: sk-1")),
        ]
    })
    .await
    .expect("join");
    let status = |a: &str| a.lines().next().unwrap_or("").to_string();
    assert!(
        status(&answers[0]).contains("200") && answers[0].ends_with("OK"),
        "{}",
        answers[0]
    );
    for a in &answers[1..3] {
        assert!(status(a).contains("401"), "{a}");
        assert!(
            a.to_ascii_lowercase().contains("www-authenticate: basic"),
            "{a}"
        );
    }
    assert!(
        status(&answers[3]).contains("200") && answers[3].contains("\"id\":\"a\""),
        "{}",
        answers[3]
    );
    assert!(status(&answers[4]).contains("200"), "{}", answers[4]);
    assert!(answers[5].contains("\"version\""), "{}", answers[5]);
}
