//! The command-line surface: version, completions, hints that name flags,
//! and the exit codes made consistent across commands.

use crate::common::*;
use swapcfg_testkit::server::ScriptedExec;

#[test]
fn version_names_the_commit() {
    let out = swapcfg_cmd().arg("--version").output().expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    // "swapcfg 0.1.0 (abcdef123456)" or "(unknown)" outside git.
    let inner = text
        .trim()
        .strip_prefix(&format!("swapcfg {} (", env!("CARGO_PKG_VERSION")))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("unexpected version line {text:?}"));
    assert!(
        inner == "unknown" || (inner.len() >= 7 && inner.chars().all(|c| c.is_ascii_hexdigit())),
        "{inner:?}"
    );
}

#[test]
fn completions_generate_for_every_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef swapcfg"),
        ("fish", "complete -c swapcfg"),
        ("elvish", "edit:completion:arg-completer[swapcfg]"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = swapcfg_cmd()
            .args(["completions", shell])
            .output()
            .expect("run");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{shell}");
        assert!(text.contains(marker), "{shell}: no {marker:?}");
        assert!(text.contains("config-path"), "{shell}: flags completed");
    }
}

#[tokio::test]
async fn no_sftp_is_a_connect_failure_with_the_mode_hint_in_every_command() {
    let fx = fixture(|b| b.sftp(false)).await;
    let config = fx.dir.path().join("config.yaml");
    std::fs::write(&config, "models: {}\n").expect("write");
    let cfg = config.to_str().expect("utf8").to_string();
    for cmd in [
        vec!["get"],
        vec!["backups"],
        vec!["rollback", "--yes", "--restart-cmd", "true"],
    ] {
        let mut c = fx.cli(&cmd);
        c.args(["--config-path", &cfg]);
        let out = output(c).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{cmd:?}: {err}");
        assert!(
            err.contains("no SFTP") && err.contains("--mode shell"),
            "{cmd:?}: {err}"
        );
    }
    assert_eq!(std::fs::read(&config).expect("read"), b"models: {}\n");
}

#[test]
fn unknown_host_key_hint_names_the_flag() {
    // A listener that is not in known_hosts: the CLI (not the library)
    // adds which flag accepts it.
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let fx = rt.block_on(fixture(|b| b));
    std::fs::write(&fx.known_hosts, "").expect("empty known_hosts");
    let out = fx
        .cli(&["get", "--config-path", "/x"])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("--host-key-policy accept-new"), "{err}");
    drop(fx);
}

#[test]
fn local_devices_are_refused_without_reading() {
    let out = swapcfg_cmd()
        .args(["validate", "/dev/zero"])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("character device"), "{err}");
}

#[tokio::test]
async fn bad_base_urls_ports_and_keys_are_refused_before_connecting() {
    let fx = fixture(|b| b).await;
    let cfg = path_str(&fx.config("config.yaml", b"models: {}\n", 0o640));
    let new = fx.dir.path().join("new.yaml");
    std::fs::write(&new, "models:\n  a:\n    cmd: a --port ${PORT}\n").expect("new");
    let new = path_str(&new);
    for (extra, env, needle) in [
        (vec!["--base-url", "ftp://x"], None, "http://"),
        (vec!["--base-url", "http://h:70000"], None, "1 to 65535"),
        (
            vec!["--base-url", "http://bob:pw@h:8080"],
            None,
            "user:password@",
        ),
        (
            vec!["--api-key-env", "SWAPCFG_T_KEY"],
            Some("sk-1\r\nX-Evil: 1"),
            "control characters",
        ),
    ] {
        let mut args = vec![
            "apply",
            &new,
            "--config-path",
            &cfg,
            "--restart-cmd",
            "true",
            "--yes",
        ];
        args.extend(extra.iter().copied());
        let mut c = fx.cli(&args);
        if let Some(v) = env {
            c.env("SWAPCFG_T_KEY", v);
        }
        let out = output(c).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(needle), "{extra:?}: {err}");
        assert!(
            !err.contains("pw@") && !err.contains("sk-1"),
            "no secret echoed: {err}"
        );
    }
    assert_eq!(
        fx.server.op_count(swapcfg_testkit::server::Op::Open),
        0,
        "never connected"
    );
    assert!(fx.server.exec_log().is_empty());
    assert_eq!(std::fs::read(&cfg).expect("cfg"), b"models: {}\n");
    let out = output(fx.cli(&["get", "--config-path", &cfg, "--port", "0"])).await;
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn escape_sequences_from_the_host_never_reach_the_terminal_raw() {
    let fx = fixture(|b| b).await;
    // OSC 52 (clipboard write), a cursor move and a CR in a remote comment.
    let hostile = b"# \x1b]52;c;ZXZpbA==\x07 \x1b[2J\x1b[1;1H fake\rprompt\nmodels:\n  a:\n    cmd: a --port ${PORT}\n";
    let cfg = path_str(&fx.config("config.yaml", hostile, 0o640));
    let new = fx.dir.path().join("new.yaml");
    std::fs::write(&new, "models:\n  a:\n    cmd: a --port ${PORT}\n").expect("new");
    let out = output(fx.cli(&["plan", &path_str(&new), "--config-path", &cfg])).await;
    assert_eq!(out.status.code(), Some(2), "changes pending");
    for stream in [&out.stdout, &out.stderr] {
        assert!(
            !stream.contains(&0x1b) && !stream.contains(&b'\r'),
            "raw control bytes"
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\\x1b]52;c;ZXZpbA==\\x07"),
        "shown escaped: {text}"
    );
    // --json carries the exact text (JSON-escaped, not lost).
    let out = output(fx.cli(&["plan", &path_str(&new), "--config-path", &cfg, "--json"])).await;
    let v = json_of(&out);
    assert!(
        v["diff"].as_str().unwrap_or("").contains("\x1b]52;c;"),
        "{v}"
    );
}

#[tokio::test]
async fn dev_zero_and_fifos_as_local_file_flags_are_refused_quickly() {
    let fx = fixture(|b| b).await;
    let fifo = fx.dir.path().join("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo")
        .success());
    let fifo = path_str(&fifo);
    let cfg = path_str(&fx.config("config.yaml", b"models: {}\n", 0o640));
    let new = fx.dir.path().join("new.yaml");
    std::fs::write(&new, "models:\n  a:\n    cmd: a --port ${PORT}\n").expect("new");
    let new = path_str(&new);
    for bad in ["/dev/zero", fifo.as_str()] {
        for (flag_args, code) in [
            (
                vec![
                    "apply",
                    bad,
                    "--config-path",
                    &cfg,
                    "--restart-cmd",
                    "true",
                    "--yes",
                ],
                2,
            ),
            (
                vec![
                    "apply",
                    &new,
                    "--config-path",
                    &cfg,
                    "--restart-cmd",
                    "true",
                    "--yes",
                    "--inventory",
                    bad,
                ],
                2,
            ),
            (
                vec![
                    "apply",
                    &new,
                    "--config-path",
                    &cfg,
                    "--restart-cmd",
                    "true",
                    "--yes",
                    "--schema",
                    bad,
                ],
                2,
            ),
            (
                vec![
                    "apply",
                    &new,
                    "--config-path",
                    &cfg,
                    "--restart-cmd",
                    "true",
                    "--yes",
                    "--ca-cert",
                    bad,
                    "--base-url",
                    "https://h:1",
                ],
                2,
            ),
            (vec!["--identity", bad], 3),
            (vec!["--known-hosts", bad], 3),
        ] {
            let mut c = if flag_args[0] == "apply" {
                fx.cli(&flag_args)
            } else {
                // Without the fixture's own key / known_hosts flags.
                let mut c = swapcfg_cmd();
                c.args(["get", "tester@127.0.0.1", "--config-path", &cfg])
                    .args(["--port", &fx.server.port().to_string()])
                    .args(&flag_args);
                if flag_args[0] == "--identity" {
                    c.arg("--known-hosts").arg(&fx.known_hosts);
                } else {
                    c.arg("--identity").arg(&fx.key_path);
                }
                c
            };
            c.env("HOME", fx.dir.path());
            let run = output(c);
            let out = tokio::time::timeout(std::time::Duration::from_secs(15), run)
                .await
                .unwrap_or_else(|_| panic!("{flag_args:?} hung"));
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(code), "{flag_args:?}: {err}");
            assert!(err.contains("not a regular file"), "{flag_args:?}: {err}");
        }
    }
}

#[tokio::test]
async fn an_encrypted_default_key_without_passphrase_says_so() {
    let fx = fixture(|b| b).await;
    let home = fx.dir.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).expect("mkdir");
    let key = home.join(".ssh").join("id_ed25519");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "secret-pass", "-f"])
        .arg(&key)
        .stdin(std::process::Stdio::null())
        .status()
        .expect("ssh-keygen");
    assert!(made.success());
    let mut c = swapcfg_cmd();
    c.args(["get", "tester@127.0.0.1", "--config-path", "/x"])
        .args(["--port", &fx.server.port().to_string()])
        .arg("--known-hosts")
        .arg(&fx.known_hosts)
        .env("HOME", &home)
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("SWAPCFG_KEY_PASSPHRASE");
    let out = output(c).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("encrypted")
            && err.contains("SWAPCFG_KEY_PASSPHRASE")
            && !err.contains("unknown"),
        "{err}"
    );
    assert!(!err.contains("secret-pass"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_health_with_a_private_ca_and_refused_without_it() {
    let st = swapcfg_testkit::standin::Standin::start_tls(vec!["a".into()], None)
        .await
        .expect("tls standin");
    let dir = tempfile::tempdir().expect("tmp");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, st.cert_pem().expect("pem")).expect("ca");
    let mut c = swapcfg_cmd();
    c.args(["health", "gpu", "--base-url", &st.base_url(), "--json"])
        .arg("--ca-cert")
        .arg(&ca);
    let out = output(c).await;
    let v = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(v["models"][0].as_str(), Some("a"), "{v}");
    // Without the CA the certificate is refused at once (not retried), with
    // the flag that fixes it.
    let mut c = swapcfg_cmd();
    c.args([
        "health",
        "gpu",
        "--base-url",
        &st.base_url(),
        "--health-attempts",
        "5",
    ]);
    let t = std::time::Instant::now();
    let out = output(c).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(9), "{err}");
    assert!(
        err.contains("certificate") && err.contains("--ca-cert"),
        "{err}"
    );
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "not retried"
    );
}

#[tokio::test]
async fn secrets_never_reach_the_diff_unless_asked() {
    let fx = fixture(|b| b.restart_script("ok", ScriptedExec::default())).await;
    let old = "apiKeys:\n  - sk-old-secret-0001\nmodels:\n  a:\n    cmd: a --port ${PORT}\n    env:\n      - HF_TOKEN=hf_oldtoken123\n      - CUDA_VISIBLE_DEVICES=0\n";
    let new = "apiKeys:\n  - sk-new-secret-0002\nmodels:\n  a:\n    cmd: a --port ${PORT}\n    env:\n      - HF_TOKEN=hf_newtoken456\n      - CUDA_VISIBLE_DEVICES=1\n";
    let cfg = path_str(&fx.config("config.yaml", old.as_bytes(), 0o640));
    let newf = fx.dir.path().join("new.yaml");
    std::fs::write(&newf, new).expect("new");
    let newf = path_str(&newf);
    let secrets = [
        "sk-old-secret-0001",
        "sk-new-secret-0002",
        "hf_oldtoken123",
        "hf_newtoken456",
    ];
    for extra in [vec![], vec!["--json"]] {
        let mut args = vec!["plan", &newf, "--config-path", &cfg];
        args.extend(extra.iter().copied());
        let out = output(fx.cli(&args)).await;
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(2), "{all}");
        for s in secrets {
            assert!(!all.contains(s), "{extra:?}: {s} leaked:\n{all}");
        }
        assert!(all.contains("[redacted"), "{all}");
        assert!(
            all.contains("CUDA_VISIBLE_DEVICES=1"),
            "non-secrets shown: {all}"
        );
    }
    // A real apply with --json: the diff field is redacted too.
    let out = output(fx.cli(&[
        "apply",
        &newf,
        "--config-path",
        &cfg,
        "--restart-cmd",
        "ok",
        "--yes",
        "--json",
    ]))
    .await;
    let v = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{v}");
    for s in secrets {
        assert!(!v.to_string().contains(s), "{s} in --json");
    }
    // --show-secrets opts out.
    std::fs::write(&cfg, old).expect("reset");
    let out = output(fx.cli(&["plan", &newf, "--config-path", &cfg, "--show-secrets"])).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("sk-new-secret-0002"));
    // diff-files redacts as well.
    let oldf = fx.dir.path().join("old.yaml");
    std::fs::write(&oldf, old).expect("old");
    let out = swapcfg_cmd()
        .args(["diff-files", &path_str(&oldf), &newf])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("sk-new-secret-0002"));
}

#[tokio::test]
async fn ssh_config_match_blocks_are_evaluated_and_exec_is_never_run() {
    let fx = fixture(|b| b).await;
    let cfg = fx.config("config.yaml", b"models: {}\n", 0o644);
    let home = fx.dir.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).expect("mkdir");
    let ssh_config = home.join(".ssh").join("config");
    let marker = fx.dir.path().join("exec-ran");
    let get = |text: String, extra: &[&str]| {
        std::fs::write(&ssh_config, text).expect("write");
        let mut c = fx.cli(&["get", "--config-path", &path_str(&cfg)]);
        c.args(extra).env("HOME", &home);
        output(c)
    };
    // `Match exec` is not run (no marker file) and its block not applied:
    // the connection goes direct, a warning names the line.
    let out = get(
        format!(
            "Host other\n  User x\nMatch originalhost 127.0.0.1 exec \"touch {}\"\n  ProxyCommand nc %h %p\n",
            marker.display()
        ),
        &[],
    )
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(out.stdout, b"models: {}\n");
    assert!(
        err.contains("warning")
            && err.contains(":3: `Match` block not applied")
            && err.contains("exec"),
        "{err}"
    );
    assert!(!marker.exists(), "exec must never run");
    // A `Match` that holds applies: its ProxyCommand is refused before
    // connecting (implicit file and named file alike).
    let text = "Match originalhost 127.0.0.1 !user nobody\n  ProxyCommand nc %h %p\n".to_string();
    for extra in [
        vec![],
        vec!["--ssh-config".to_string(), path_str(&ssh_config)],
    ] {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let out = get(text.clone(), &extra).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("ProxyCommand"), "{err}");
    }
}
