//! Host checks: probes planned from real users' configs, answered by the
//! in-process server over SFTP and shell with real files in its temp dir,
//! `--strict-host` stopping before anything is written (host files checked
//! afterwards), and the requests pipelined (one round trip for 50 paths).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use swapcfg::health::HealthError;
use swapcfg::hostcheck::{self, HostFinding, Level, ProbeKind};
use swapcfg::pipeline::{self, ApplyOptions, Hooks, Step};
use swapcfg::remote::{AnyRemote, LockInfo, Mode, RemoteOptions};
use swapcfg::transport::Session;
use swapcfg_testkit::proxy::{Proxy, ProxyOptions};
use swapcfg_testkit::server::{Op, TestServerBuilder};

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

#[test]
fn corpus_probes_point_at_their_text() {
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/llama-swap/corpus/real"
    ));
    let Ok(entries) = std::fs::read_dir(dir) else {
        eprintln!("skipping: {} not found", dir.display());
        return;
    };
    let (mut files, mut probes, mut verbatim) = (0, 0, 0);
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("yaml") {
            continue;
        }
        let src = std::fs::read(&path).expect("read corpus file");
        let text = String::from_utf8_lossy(&src);
        let lines: Vec<&str> = text.split('\n').collect();
        let plan = hostcheck::plan(&src);
        files += 1;
        for p in &plan.probes {
            probes += 1;
            assert!(p.query < plan.queries.len());
            if matches!(
                p.kind,
                ProbeKind::Executable | ProbeKind::File | ProbeKind::StoreDir
            ) {
                assert!(p.target.starts_with('/'), "{}: {p:?}", path.display());
            }
            let line = lines.get(p.line - 1).expect("line in file");
            let at: String = line.chars().skip(p.column - 1).collect();
            let want = match p.kind {
                ProbeKind::Env => format!("${{env.{}}}", p.target),
                _ => p.target.clone(),
            };
            // Where the text is not in the file as written (it comes from
            // a macro), the probe points at the start of the cmd value.
            if text.contains(&want) && p.kind != ProbeKind::StoreDir {
                assert!(
                    at.starts_with(&want) || at.starts_with(['$', '#', '"', '\'']),
                    "{}:{}:{}: {:?} is not at its position: {at:?}",
                    path.display(),
                    p.line,
                    p.column,
                    p.target
                );
                verbatim += usize::from(at.starts_with(&want));
            }
        }
    }
    assert!(files >= 40, "corpus files: {files}");
    assert!(
        probes > 100 && verbatim > 100,
        "{probes} probes, {verbatim} verbatim"
    );

    // One real file, exactly: absolute llama-server and --model/--mmproj
    // paths in `|` blocks.
    let src = std::fs::read(dir.join("012.yaml")).expect("012");
    let plan = hostcheck::plan(&src);
    let first: Vec<(ProbeKind, &str, usize, usize)> = plan
        .probes
        .iter()
        .take(3)
        .map(|p| (p.kind, p.target.as_str(), p.line, p.column))
        .collect();
    assert_eq!(
        first,
        [
            (
                ProbeKind::Executable,
                "/home/davpace/llama.cpp/build/bin/llama-server",
                8,
                7
            ),
            (
                ProbeKind::File,
                "/home/davpace/Models/Qwen3-30B/Qwen3-30B-A3B-Q4_K_M.gguf",
                9,
                15
            ),
            (
                ProbeKind::Executable,
                "/home/davpace/llama.cpp/build/bin/llama-server",
                26,
                7
            ),
        ]
    );
    assert!(plan
        .probes
        .iter()
        .any(|p| p.flag.as_deref() == Some("--mmproj") && p.line == 28));
}

/// A host layout in `dir`: an executable, a non-executable file, a model,
/// a dangling link, a read-only directory and a plain file.
fn layout(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).expect("bin");
    std::fs::write(bin.join("llama-server"), "#!/bin/sh\n").expect("exe");
    std::fs::set_permissions(bin.join("llama-server"), PermissionsExt::from_mode(0o755))
        .expect("chmod");
    std::fs::write(bin.join("noexec"), "x").expect("noexec");
    std::fs::set_permissions(bin.join("noexec"), PermissionsExt::from_mode(0o644)).expect("chmod");
    std::fs::write(dir.join("m.gguf"), "GGUF").expect("model");
    std::os::unix::fs::symlink(dir.join("gone"), dir.join("dangling")).expect("symlink");
    std::fs::create_dir(dir.join("store")).expect("store");
    std::fs::set_permissions(dir.join("store"), PermissionsExt::from_mode(0o777)).expect("chmod");
    std::fs::create_dir(dir.join("ro")).expect("ro");
    std::fs::set_permissions(dir.join("ro"), PermissionsExt::from_mode(0o555)).expect("chmod");
    std::fs::write(dir.join("plain"), "x").expect("plain");
    // Readable by an unprivileged shell (the temp dir is 0700).
    std::fs::set_permissions(dir, PermissionsExt::from_mode(0o755)).expect("chmod dir");
}

fn bad_config(d: &str) -> String {
    format!(
        "models:\n  a:\n    cmd: |\n      {d}/bin/llama-server --port ${{PORT}}\n        -m {d}/m.gguf\n        --mmproj={d}/missing.gguf\n        --lora {d}/dangling\n  b:\n    cmd: {d}/bin/noexec --port ${{PORT}} --model {d}/store\n  c:\n    cmd: no-such-command-swapcfg --port ${{PORT}}\n  d:\n    cmd: sh --port ${{PORT}} -m relative.gguf\nstore:\n  path: {d}/ro/activity.db\nhooks:\n  on_startup:\n    preload: [\"${{env.SWAPCFG_TEST_UNSET}}\"]\n"
    )
}

fn good_config(d: &str) -> String {
    format!(
        "models:\n  a:\n    cmd: {d}/bin/llama-server --port ${{PORT}} -m {d}/m.gguf\n  b:\n    cmd: sh --port ${{PORT}}\nstore:\n  path: {d}/store/activity.db\n"
    )
}

fn short(f: &[HostFinding]) -> Vec<(Level, String, usize, String)> {
    f.iter()
        .map(|f| (f.level, f.target.clone(), f.line, f.message.clone()))
        .collect()
}

async fn findings(s: &Session, mode: Mode, cfg: &Path, new: &str) -> Vec<HostFinding> {
    let remote = AnyRemote::open(s, mode, &path_str(cfg), RemoteOptions::default())
        .await
        .expect("open remote");
    pipeline::check_host(&remote, &hostcheck::plan(new.as_bytes())).await
}

#[tokio::test]
async fn sftp_reports_missing_unexecutable_and_unwritable_with_positions() {
    let fx = fixture(|b| b).await;
    let d = path_str(fx.dir.path());
    layout(fx.dir.path());
    let cfg = fx.config("config.yaml", b"models: {}\n", 0o644);
    let s = fx.session().await;
    let got = short(&findings(&s, Mode::Sftp, &cfg, &bad_config(&d)).await);
    let p = |t: &str| format!("{d}/{t}");
    let mut want =
        vec![
        (Level::Problem, p("missing.gguf"), 6, "does not exist on the host".to_string()),
        (
            Level::Problem,
            p("dangling"),
            7,
            "is a symbolic link to nothing on the host".into(),
        ),
        (Level::Problem, p("bin/noexec"), 9, "is not executable on the host".into()),
        (
            Level::Problem,
            p("store"),
            9,
            "is a directory, not a file, on the host".into(),
        ),
        (
            Level::Note,
            "no-such-command-swapcfg".into(),
            11,
            "not checked: a bare command name is looked up on the host's PATH only in shell mode"
                .into(),
        ),
        (
            Level::Note,
            "sh".into(),
            13,
            "not checked: a bare command name is looked up on the host's PATH only in shell mode"
                .into(),
        ),
    ];
    // Root may write anywhere; for anyone else the 0555 directory is not
    // writable by its mode bits.
    if !is_root() {
        want.push((
            Level::Problem,
            p("ro"),
            15,
            "(store.path's directory) is not writable on the host".into(),
        ));
    }
    want.push((
        Level::Note,
        "SWAPCFG_TEST_UNSET".into(),
        18,
        "not checked: llama-swap's environment is read only in shell mode".into(),
    ));
    assert_eq!(got, want);

    // A store path whose directory is a plain file.
    let cfg2 = format!("store:\n  path: {d}/plain/x.db\n");
    let got = short(&findings(&s, Mode::Sftp, &cfg, &cfg2).await);
    assert_eq!(
        got,
        [(
            Level::Problem,
            p("plain"),
            2,
            "(store.path's directory) is not a directory on the host".into()
        )]
    );
    // Everything present: nothing to say.
    let good = findings(&s, Mode::Sftp, &cfg, &good_config(&d)).await;
    assert!(
        good.iter()
            .all(|f| f.level == Level::Note && f.target == "sh"),
        "{good:?}"
    );
}

#[tokio::test]
async fn shell_mode_checks_access_path_and_env_as_the_ssh_user() {
    // As root, run the host's shell as nobody, so that access(2) is an
    // ordinary user's (root may write to a 0555 directory).
    let fx = fixture(|b| {
        let b = b.sftp(false);
        if is_root() {
            b.shell_program(&[
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "/bin/sh",
            ])
        } else {
            b
        }
    })
    .await;
    let d = path_str(fx.dir.path());
    layout(fx.dir.path());
    let cfg = fx.config("config.yaml", b"models: {}\n", 0o644);
    let s = fx.session().await;
    let got = short(&findings(&s, Mode::Shell, &cfg, &bad_config(&d)).await);
    let p = |t: &str| format!("{d}/{t}");
    assert_eq!(
        got,
        [
            (Level::Problem, p("missing.gguf"), 6, "does not exist on the host".to_string()),
            (
                Level::Problem,
                p("dangling"),
                7,
                "is a symbolic link to nothing on the host".into()
            ),
            (Level::Problem, p("bin/noexec"), 9, "is not executable on the host".into()),
            (
                Level::Problem,
                p("store"),
                9,
                "is a directory, not a file, on the host".into()
            ),
            (
                Level::Problem,
                "no-such-command-swapcfg".into(),
                11,
                "not found on the PATH of a shell on the host".into()
            ),
            (
                Level::Problem,
                p("ro"),
                15,
                "(store.path's directory) is not writable on the host".into()
            ),
            (
                Level::Note,
                "SWAPCFG_TEST_UNSET".into(),
                18,
                "not checked: no running llama-swap owned by the SSH user was found to read its environment".into()
            ),
        ]
    );
    assert_eq!(
        findings(&s, Mode::Shell, &cfg, &good_config(&d)).await,
        [],
        "all good: no findings"
    );
    // One exec for all of it.
    let checks = fx
        .server
        .exec_log()
        .iter()
        .filter(|c| c.contains("findsvc"))
        .count();
    assert_eq!(checks, 2, "one check script per run");
}

#[tokio::test]
async fn wrapper_mode_says_host_checks_are_unavailable() {
    let fx = fixture(|b| b.wrapper(std::path::PathBuf::from("/nonexistent"))).await;
    let d = path_str(fx.dir.path());
    let cfg = fx.config("config.yaml", b"models: {}\n", 0o644);
    let s = fx.session().await;
    let got = findings(&s, Mode::Wrapper, &cfg, &good_config(&d)).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].level, Level::Note);
    assert!(got[0]
        .message
        .contains("host checks unavailable: wrapper mode"));
}

struct H;

impl Hooks for H {
    fn confirm(&mut self, _diff: &str) -> bool {
        true
    }
    async fn health(&mut self, _rollback: bool) -> Result<(), HealthError> {
        Ok(())
    }
}

fn opts(cfg: &Path, new: &str, strict: bool) -> ApplyOptions {
    ApplyOptions {
        host: "tester@127.0.0.1".into(),
        config_path: path_str(cfg),
        new_label: "new.yaml".into(),
        dry_run: false,
        force: false,
        expect_sha256: None,
        restart_cmd: None,
        restart_timeout: Duration::from_secs(5),
        no_rollback: false,
        keep_backups: None,
        lock: Some(LockInfo {
            token: "t0k".into(),
            client: "laptop".into(),
            user: "ann".into(),
            pid: 1,
            started: pipeline::epoch_now(),
            expires: pipeline::epoch_now() + 60,
        }),
        break_lock: false,
        stop: Default::default(),
        redactor: None,
        host_checks: Some(hostcheck::plan(new.as_bytes())),
        strict_host: strict,
    }
}

#[tokio::test]
async fn strict_host_stops_before_writing_anything() {
    const OLD: &[u8] = b"models: {}\n";
    for mode in [Mode::Sftp, Mode::Shell] {
        let fx = fixture(|b| b.sftp(mode == Mode::Sftp)).await;
        let d = path_str(fx.dir.path());
        layout(fx.dir.path());
        let cfg = fx.config("config.yaml", OLD, 0o640);
        let before = fx.listing();
        let s = fx.session().await;
        let remote = AnyRemote::open(&s, mode, &path_str(&cfg), RemoteOptions::default())
            .await
            .expect("open");
        let new = bad_config(&d);
        let rep = pipeline::apply(&remote, new.as_bytes(), &opts(&cfg, &new, true), &mut H).await;
        assert_eq!(rep.step, Step::HostCheck, "{mode}: {rep:?}");
        assert!(!rep.ok);
        assert!(matches!(
            rep.error,
            Some(pipeline::ApplyError::HostCheck { problems }) if problems >= 4
        ));
        // The host is untouched: same bytes and mode, no backup, no temp
        // file, no lock.
        assert_eq!(std::fs::read(&cfg).expect("config"), OLD, "{mode}");
        assert_eq!(mode_of(&cfg), 0o640);
        assert_eq!(fx.listing(), before, "{mode}: no backup, temp or lock");
        if mode == Mode::Shell {
            assert_eq!(fx.server.exec_log().len(), 1, "read and checks in one exec");
        }

        // Without strict, the same apply goes through with the warnings.
        let rep = pipeline::apply(&remote, new.as_bytes(), &opts(&cfg, &new, false), &mut H).await;
        assert_eq!(rep.step, Step::Done, "{mode}: {rep:?}");
        assert!(rep.host_findings.len() >= 5);
        assert_eq!(std::fs::read(&cfg).expect("config"), new.as_bytes());
    }
}

#[tokio::test]
async fn fifty_probes_take_about_one_round_trip() {
    let fx = fixture(|b: TestServerBuilder| b).await;
    let d = path_str(fx.dir.path());
    let mut new = String::from("models:\n");
    for i in 0..50 {
        std::fs::write(fx.dir.path().join(format!("m{i}.gguf")), "GGUF").expect("model");
        new.push_str(&format!(
            "  m{i}:\n    cmd: sh --port ${{PORT}} -m {d}/m{i}.gguf\n"
        ));
    }
    let plan = hostcheck::plan(new.as_bytes());
    assert_eq!(plan.queries.len(), 51, "50 files and one command");
    let cfg = fx.config("config.yaml", b"models: {}\n", 0o644);

    // 50 ms each way: a 100 ms round trip, as over a VPN.
    let proxy = Proxy::start(
        fx.server.addr(),
        ProxyOptions {
            delay: Duration::from_millis(50),
            first: None,
        },
    )
    .await
    .expect("proxy");
    let mut o = fx.options();
    o.target.port = proxy.port();
    let line = fx.server.known_hosts_line().replace(
        &format!("]:{} ", fx.server.port()),
        &format!("]:{} ", proxy.port()),
    );
    o.known_hosts = fx.dir.path().join("known_hosts_proxy");
    std::fs::write(&o.known_hosts, format!("{line}\n")).expect("known_hosts");
    o.op_timeout = Duration::from_secs(10);
    let s = Session::connect(&o).await.expect("connect");
    let remote = AnyRemote::open(&s, Mode::Sftp, &path_str(&cfg), RemoteOptions::default())
        .await
        .expect("open");
    let stats = fx.server.op_count(Op::Stat);
    let t = Instant::now();
    let found = pipeline::check_host(&remote, &plan).await;
    let took = t.elapsed();
    eprintln!("50 paths over a 100 ms round trip: {took:?}");
    assert!(found.iter().all(|f| f.level == Level::Note), "{found:?}");
    // A stat and an lstat per path, and the login directory.
    assert_eq!(fx.server.op_count(Op::Stat) - stats, 101);
    // One after another, 101 requests would take over 10 s; pipelined they
    // take about one round trip (bound generous for a loaded machine).
    assert!(
        took < Duration::from_millis(1500),
        "host checks took {took:?} for 101 requests at 100 ms a round trip"
    );

    // In an apply they run beside the read of the current config: the read
    // step takes no longer than without them (the read's own round trips
    // cover the probes' one).
    let mut o = opts(&cfg, &new, false);
    o.dry_run = true;
    o.lock = None;
    let with = pipeline::apply(&remote, new.as_bytes(), &o, &mut H).await;
    o.host_checks = None;
    let without = pipeline::apply(&remote, new.as_bytes(), &o, &mut H).await;
    let (with, without) = (
        with.timing(Step::Read).expect("read"),
        without.timing(Step::Read).expect("read"),
    );
    eprintln!("read step: {with} ms with host checks, {without} ms without");
    assert!(
        with < without + 60,
        "host checks added {} ms to the read",
        with.saturating_sub(without)
    );
}

#[tokio::test]
async fn cli_lists_host_checks_in_json_and_strict_host_exits_1() {
    let fx = fixture(|b| b).await;
    let d = path_str(fx.dir.path());
    layout(fx.dir.path());
    const OLD: &[u8] = b"models: {}\n";
    let cfg = path_str(&fx.config("config.yaml", OLD, 0o600));
    let new_path = fx.dir.path().join("new.yaml");
    // A path with an escape sequence in it: escaped on a terminal.
    let new = format!(
        "models:\n  a:\n    cmd: {d}/bin/llama-server --port ${{PORT}} -m {d}/missing.gguf\n  e:\n    cmd: \"/nonexistent\\e]0;pwn\\a/bin --port ${{PORT}}\"\n  f:\n    cmd: llama-server --port ${{PORT}}\n  g:\n    cmd: llama-server --port ${{PORT}}\n"
    );
    std::fs::write(&new_path, &new).expect("new");
    let before = fx.listing();
    let args = |extra: &[&str]| {
        let mut a = vec![
            "apply",
            new_path.to_str().expect("utf8"),
            "--config-path",
            &cfg,
            "--restart-cmd",
            "none",
            "--yes",
        ];
        a.extend_from_slice(extra);
        a.iter().map(|s| s.to_string()).collect::<Vec<String>>()
    };

    let a = args(&["--json", "--strict-host"]);
    let out = output(fx.cli(&a.iter().map(String::as_str).collect::<Vec<_>>())).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(out.status.code(), Some(1), "{v}");
    assert_eq!(v["step"], "host-check");
    assert_eq!(v["ok"], false);
    let checks = v["host_checks"].as_array().expect("host_checks");
    assert_eq!(checks.len(), 4, "{v}");
    assert_eq!(
        (checks[2]["severity"].as_str(), checks[3]["model"].as_str()),
        (Some("note"), Some("g"))
    );
    let missing = format!("{d}/missing.gguf");
    let column = new
        .lines()
        .nth(2)
        .and_then(|l| l.find(&missing))
        .expect("in line 3")
        + 1;
    assert_eq!(
        checks[0],
        serde_json::json!({
            "severity": "error", "check": "file", "target": missing,
            "flag": "-m", "model": "a", "line": 3, "column": column,
            "message": "does not exist on the host",
        })
    );
    assert_eq!(checks[1]["check"], "executable");
    assert_eq!(checks[1]["target"], "/nonexistent\u{1b}]0;pwn\u{7}/bin");
    assert!(v["error"]
        .as_str()
        .expect("error")
        .contains("host checks found 2 problem(s)"));
    // Nothing written: same bytes, no backup, no temp file, no lock.
    assert_eq!(std::fs::read(&cfg).expect("cfg"), OLD);
    assert_eq!(fx.listing(), before);

    // Without --strict-host: warnings, one line each, escaped; applied.
    let a = args(&[]);
    let out = output(fx.cli(&a.iter().map(String::as_str).collect::<Vec<_>>())).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("host check"))
        .collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert_eq!(
        lines[2],
        "host check: note: not checked: a bare command name is looked up on the host's PATH only in shell mode (2 places: llama-server)",
        "notes saying the same thing are one line"
    );
    assert!(lines[0].starts_with("host check 3:"), "{err}");
    assert!(
        lines[0].ends_with(&format!(
            ": warning: model \"a\": -m {d}/missing.gguf does not exist on the host"
        )),
        "{err}"
    );
    assert!(
        lines[1].contains("/nonexistent\\x1b]0;pwn\\x07/bin does not exist on the host"),
        "{err}"
    );
    assert!(!err.contains('\u{1b}'), "raw escape on the terminal");
    assert_eq!(std::fs::read(&cfg).expect("cfg"), new.as_bytes());
}

#[tokio::test]
async fn shell_read_with_checks_keeps_the_read_errors_and_bytes() {
    use swapcfg::remote::{RemoteError, RemoteOps};
    let fx = fixture(|b| b.sftp(false)).await;
    let d = path_str(fx.dir.path());
    layout(fx.dir.path());
    let body = b"models: {}\n# 0123456789\n";
    let cfg = fx.config("config.yaml", body, 0o640);
    let plan = hostcheck::plan(bad_config(&d).as_bytes());
    let s = fx.session().await;
    let open = |path: String, max_size: u64| {
        let s = &s;
        async move {
            AnyRemote::open(
                s,
                Mode::Shell,
                &path,
                RemoteOptions {
                    max_size,
                    ..RemoteOptions::default()
                },
            )
            .await
            .expect("open")
        }
    };
    let r = open(path_str(&cfg), 1 << 20).await;
    let (file, answers) = r.read_probing(&plan.queries).await;
    assert_eq!(file.expect("read").bytes, body);
    assert_eq!(answers.expect("answers").len(), plan.queries.len());

    let r = open(format!("{d}/nope.yaml"), 1 << 20).await;
    let (file, answers) = r.read_probing(&plan.queries).await;
    assert!(
        matches!(file, Err(RemoteError::NotFound { .. })),
        "{file:?}"
    );
    assert!(answers.is_ok());

    let r = open(path_str(&cfg), 10).await;
    let (file, _) = r.read_probing(&plan.queries).await;
    assert!(
        matches!(file, Err(RemoteError::TooLarge { size, limit: 10, .. }) if size == body.len() as u64),
        "{file:?}"
    );
    assert_eq!(fx.server.exec_log().len(), 3, "one exec each");
}

#[tokio::test]
async fn shell_mode_compares_env_names_with_the_running_llama_swap() {
    // A process named llama-swap owned by the shell's user, with one of the
    // two variables set (as root, both run as nobody).
    let fx = fixture(|b| {
        let b = b.sftp(false);
        if is_root() {
            b.shell_program(&[
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "/bin/sh",
            ])
        } else {
            b
        }
    })
    .await;
    std::fs::set_permissions(fx.dir.path(), PermissionsExt::from_mode(0o755)).expect("chmod");
    let fake = fx.dir.path().join("llama-swap");
    std::fs::copy("/bin/sleep", &fake).expect("copy sleep");
    let mut cmd = if is_root() {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&fake);
        c
    } else {
        std::process::Command::new(&fake)
    };
    let mut child = cmd
        .arg("30")
        .env_clear()
        .env("SWAPCFG_TEST_SET", "secret-value-never-sent")
        .spawn()
        .expect("start the fake llama-swap");
    // Wait until its environment is readable.
    let environ = format!("/proc/{}/environ", child.id());
    for _ in 0..100 {
        if std::fs::read(&environ).is_ok_and(|e| !e.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cfg = fx.config("config.yaml", b"models: {}\n", 0o644);
    let s = fx.session().await;
    let new = "hooks:\n  on_startup:\n    preload: [\"${env.SWAPCFG_TEST_SET}\", \"${env.SWAPCFG_TEST_UNSET}\"]\n";
    let got = short(&findings(&s, Mode::Shell, &cfg, new).await);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        got,
        [(
            Level::Problem,
            "SWAPCFG_TEST_UNSET".to_string(),
            3,
            "is not set in the running llama-swap's environment (llama-swap refuses to load the config)".into()
        )]
    );
}
