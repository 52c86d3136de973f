//! End-to-end against Debian's real OpenSSH sshd on loopback, driving the
//! built `swapcfg` binary with an empty PATH (it must never spawn `ssh`).
//! Skips with a message where /usr/sbin/sshd is missing; `.ci/run`
//! installs openssh-server so CI always runs it.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use swapcfg_testkit::sshd::{self, available, Options, Sshd};

const CONFIG: &[u8] =
    b"models:\n  qwen:\n    cmd: llama-server --port ${PORT} -m /models/qwen.gguf\n";

/// Run swapcfg with a clean environment: no PATH, HOME in the test dir.
fn swapcfg(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_swapcfg"));
    c.env_clear()
        .env("HOME", home)
        .env("USER", sshd::whoami())
        .args(args)
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run swapcfg")
}

fn config_file(s: &Sshd, name: &str, mode: u32) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = s.dir.path().join(name);
    std::fs::write(&p, CONFIG).expect("config");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    p.to_str().expect("utf8").to_string()
}

fn get(s: &Sshd, key: &Path, cfg: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let target = s.target();
    let kh = s.known_hosts.to_str().expect("utf8").to_string();
    let key = key.to_str().expect("utf8").to_string();
    let mut args = vec![
        "get",
        target.as_str(),
        "--config-path",
        cfg,
        "--identity",
        &key,
    ];
    if !extra.contains(&"--known-hosts") {
        args.extend(["--known-hosts", kh.as_str()]);
    }
    args.extend_from_slice(extra);
    swapcfg(s.dir.path(), &args, env)
}

#[test]
fn get_with_every_key_type_and_an_encrypted_key() {
    if !available() {
        return;
    }
    let s = Sshd::start(Options { sftp: true }).expect("sshd");
    let cfg = config_file(&s, "config.yaml", 0o600);
    for (name, kind, pass) in [
        ("k_ed", "ed25519", ""),
        ("k_ec", "ecdsa", ""),
        ("k_rsa", "rsa", ""),
        ("k_enc", "ed25519", "pass phrase"),
    ] {
        let key = s.client_key(name, kind, pass, "").expect("client key");
        let out = get(&s, &key, &cfg, &[], &[("SWAPCFG_KEY_PASSPHRASE", pass)]);
        assert!(
            out.status.success(),
            "{kind}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            s.log()
        );
        assert_eq!(out.stdout, CONFIG, "{kind}: byte-exact");
    }
    // The encrypted key without a passphrase (and no TTY) is a clear error.
    let key = s.dir.path().join("k_enc");
    let out = get(&s, &key, &cfg, &[], &[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SWAPCFG_KEY_PASSPHRASE"));
    // The sshd fixture only accepts rsa-sha2-256/512 (PubkeyAcceptedAlgorithms),
    // so the RSA login above proves swapcfg never signed with ssh-rsa/SHA-1.
    assert!(s.log().contains("Accepted publickey"), "{}", s.log());
}

#[test]
fn host_key_policies_against_openssh() {
    if !available() {
        return;
    }
    let s = Sshd::start(Options { sftp: true }).expect("sshd");
    let cfg = config_file(&s, "config.yaml", 0o644);
    let key = s.client_key("k", "ed25519", "", "").expect("client key");
    let kh = s.dir.path().join("kh_new");
    let kh_s = kh.to_str().expect("utf8");

    // strict: unknown host refused, fingerprint printed as ssh-keygen shows it.
    let out = get(&s, &key, &cfg, &["--known-hosts", kh_s], &[]);
    assert_eq!(out.status.code(), Some(3));
    let fp = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(s.dir.path().join("host_ed25519.pub"))
        .output()
        .expect("ssh-keygen -l");
    let fp = String::from_utf8_lossy(&fp.stdout)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_string();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains(&fp), "fingerprint {fp} in: {err}");
    assert!(!kh.exists());

    // accept-new: the line is written and OpenSSH's own ssh accepts it.
    let out = get(
        &s,
        &key,
        &cfg,
        &["--known-hosts", kh_s, "--host-key-policy", "accept-new"],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, CONFIG);
    let ssh = Command::new("ssh")
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
        ])
        .arg(format!("UserKnownHostsFile={kh_s}"))
        .args(["-o", "GlobalKnownHostsFile=/dev/null", "-i"])
        .arg(&key)
        .args(["-p", &s.port.to_string()])
        .arg(format!("{}@127.0.0.1", sshd::whoami()))
        .arg("true")
        .output()
        .expect("ssh");
    assert!(
        ssh.status.success(),
        "OpenSSH rejects our known_hosts line: {}",
        String::from_utf8_lossy(&ssh.stderr)
    );

    // changed: a different key recorded for the host is refused, naming file:line.
    let other = s.dir.path().join("other_host");
    sshd::keygen(&other, "ed25519", "").expect("keygen");
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).expect("pub");
    let bad = s.dir.path().join("kh_bad");
    std::fs::write(&bad, format!("# x\n[127.0.0.1]:{} {}", s.port, other_pub)).expect("kh");
    let out = get(
        &s,
        &key,
        &cfg,
        &[
            "--known-hosts",
            bad.to_str().expect("utf8"),
            "--host-key-policy",
            "accept-new",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CHANGED") && err.contains(&format!("{}:2", bad.display())),
        "{err}"
    );
}

#[test]
fn get_errors_name_host_and_path() {
    if !available() {
        return;
    }
    let s = Sshd::start(Options { sftp: true }).expect("sshd");
    let key = s.client_key("k", "ed25519", "", "").expect("client key");
    let missing = s.dir.path().join("missing.yaml");
    let out = get(&s, &key, missing.to_str().expect("utf8"), &[], &[]);
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("127.0.0.1") && err.contains("missing.yaml"),
        "{err}"
    );
}

#[test]
fn shell_mode_without_sftp_subsystem() {
    if !available() {
        return;
    }
    let s = Sshd::start(Options { sftp: false }).expect("sshd");
    let cfg = config_file(&s, "my config's.yaml", 0o640);
    let key = s.client_key("k", "ed25519", "", "").expect("client key");
    let out = get(&s, &key, &cfg, &[], &[]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "sftp mode must fail without the subsystem (a connect failure)"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--mode shell"));
    let out = get(&s, &key, &cfg, &["--mode", "shell"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, CONFIG);
}

#[test]
fn wrapper_mode_with_a_forced_command_key() {
    if !available() {
        return;
    }
    let s = Sshd::start(Options { sftp: true }).expect("sshd");
    let cfg = config_file(&s, "config.yaml", 0o644);
    let log = s.dir.path().join("wrapper.log");
    let script = s.dir.path().join("wrapper.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$SSH_ORIGINAL_COMMAND\" >> '{log}'\ncase \"$SSH_ORIGINAL_COMMAND\" in\n  read) exec cat '{cfg}' ;;\n  *) echo \"verb not allowed\" >&2; exit 2 ;;\nesac\n",
            log = log.display()
        ),
    )
    .expect("script");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let key = s
        .client_key(
            "k",
            "ed25519",
            "",
            &format!("command=\"{}\",restrict", script.display()),
        )
        .expect("client key");
    let out = get(&s, &key, "/ignored", &["--mode", "wrapper"], &[]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.log()
    );
    assert_eq!(out.stdout, CONFIG);
    // `read 1` is protocol 1's read; this seed-style wrapper refuses it.
    assert_eq!(
        std::fs::read_to_string(&log).expect("log"),
        "read 1\nread\n"
    );
    // The same key cannot reach SFTP: the forced command wins.
    let out = get(&s, &key, &cfg, &[], &[]);
    assert_ne!(out.status.code(), Some(0));
}

// ---- The apply pipeline against real OpenSSH and a real HTTP endpoint ----

struct Http {
    rt: tokio::runtime::Runtime,
    standin: swapcfg_testkit::standin::Standin,
}

fn http(models: &[&str]) -> Http {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let standin = rt
        .block_on(swapcfg_testkit::standin::Standin::start(
            models.iter().map(|m| m.to_string()).collect(),
            None,
        ))
        .expect("http endpoint");
    Http { rt, standin }
}

const NEW: &[u8] = b"models:\n  qwen:\n    cmd: llama-server --port ${PORT} -m /models/qwen.gguf\n  llama:\n    cmd: llama-server --port ${PORT} -m /models/llama.gguf\n";

fn apply(
    s: &Sshd,
    key: &Path,
    cfg: &str,
    new: &Path,
    extra: &[&str],
) -> (Output, serde_json::Value) {
    let target = s.target();
    let kh = s.known_hosts.to_str().expect("utf8").to_string();
    let key = key.to_str().expect("utf8").to_string();
    let new = new.to_str().expect("utf8").to_string();
    let mut args = vec![
        "apply",
        target.as_str(),
        new.as_str(),
        "--config-path",
        cfg,
        "--identity",
        &key,
        "--known-hosts",
        &kh,
        "--yes",
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = swapcfg(s.dir.path(), &args, &[]);
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| serde_json::json!({"stderr": String::from_utf8_lossy(&out.stderr)}));
    (out, v)
}

/// An SFTP sshd with a 0600 config, an ed25519 client key, NEW beside it
/// and a healthy endpoint listing both of NEW's models.
fn apply_setup() -> (Sshd, Http, String, std::path::PathBuf, std::path::PathBuf) {
    let s = Sshd::start(Options { sftp: true }).expect("sshd");
    let h = http(&["qwen", "llama"]);
    let cfg = config_file(&s, "config.yaml", 0o600);
    let key = s.client_key("k", "ed25519", "", "").expect("client key");
    let new = s.dir.path().join("new.yaml");
    std::fs::write(&new, NEW).expect("new");
    (s, h, cfg, key, new)
}

fn mode(p: &str) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("meta").permissions().mode() & 0o7777
}

#[test]
fn apply_rollback_and_named_rollback_against_openssh() {
    if !available() {
        return;
    }
    let (s, h, cfg, key, new) = apply_setup();
    let base = h.standin.base_url();

    // A successful apply: backup and rewrite keep 0600.
    let (out, v) = apply(
        &s,
        &key,
        &cfg,
        &new,
        &[
            "--restart-cmd",
            "true",
            "--base-url",
            &base,
            "--verify-models",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(std::fs::read(&cfg).expect("cfg"), NEW);
    assert_eq!(mode(&cfg), 0o600);
    let backup = v["backup_path"].as_str().expect("backup").to_string();
    assert_eq!(std::fs::read(&backup).expect("backup"), CONFIG);
    assert_eq!(mode(&backup), 0o600);

    // A failing restart is rolled back to the exact old bytes.
    std::fs::write(&new, b"models:\n  other:\n    cmd: srv --port ${PORT}\n").expect("new");
    let restart =
        format!("grep -q other '{cfg}' && {{ echo 'llama-swap failed' >&2; exit 1; }}; true");
    let (out, v) = apply(
        &s,
        &key,
        &cfg,
        &new,
        &["--restart-cmd", &restart, "--base-url", &base],
    );
    assert_eq!(
        (out.status.code(), v["rolled_back"].as_bool()),
        (Some(8), Some(true)),
        "{v}"
    );
    assert_eq!(
        std::fs::read(&cfg).expect("cfg"),
        NEW,
        "exact old bytes restored"
    );

    // rollback to the first backup, by name.
    let target = s.target();
    let kh = s.known_hosts.to_str().expect("utf8");
    let out = swapcfg(
        s.dir.path(),
        &[
            "rollback",
            &target,
            &backup,
            "--config-path",
            &cfg,
            "--identity",
            key.to_str().expect("utf8"),
            "--known-hosts",
            kh,
            "--restart-cmd",
            "true",
            "--base-url",
            &base,
            "--yes",
            "--json",
        ],
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(std::fs::read(&cfg).expect("cfg"), CONFIG);
    drop(h.rt);
}

#[test]
fn apply_through_a_symlinked_config_and_in_shell_mode() {
    if !available() {
        return;
    }
    let s = Sshd::start(Options { sftp: false }).expect("sshd");
    let real = config_file(&s, "real.yaml", 0o640);
    let link = s.dir.path().join("config.yaml");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let key = s.client_key("k", "ed25519", "", "").expect("client key");
    let new = s.dir.path().join("new.yaml");
    std::fs::write(&new, NEW).expect("new");
    let (out, v) = apply(
        &s,
        &key,
        link.to_str().expect("utf8"),
        &new,
        &["--restart-cmd", "none", "--mode", "shell"],
    );
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert!(std::fs::symlink_metadata(&link)
        .expect("lstat")
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&real).expect("real"), NEW);
    assert_eq!(mode(&real), 0o640);
}

#[test]
fn symlinked_config_over_sftp_stays_a_link() {
    if !available() {
        return;
    }
    let s = Sshd::start(Options { sftp: true }).expect("sshd");
    let real = config_file(&s, "real.yaml", 0o644);
    let link = s.dir.path().join("config.yaml");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let key = s.client_key("k", "ed25519", "", "").expect("client key");
    let new = s.dir.path().join("new.yaml");
    std::fs::write(&new, NEW).expect("new");
    let (out, v) = apply(
        &s,
        &key,
        link.to_str().expect("utf8"),
        &new,
        &["--restart-cmd", "none"],
    );
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert!(std::fs::symlink_metadata(&link)
        .expect("lstat")
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&real).expect("real"), NEW);
}

#[test]
fn dropped_connection_during_write_leaves_the_old_file() {
    if !available() {
        return;
    }
    let s = Sshd::start(Options { sftp: true }).expect("sshd");
    let cfg = config_file(&s, "config.yaml", 0o644);
    let marker = s.dir.path().join("writing");
    let script = s.dir.path().join("wrapper.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$SSH_ORIGINAL_COMMAND\" in\n  read) exec cat '{cfg}' ;;\n  backup) b='{cfg}.bak-20250101T000000Z'; cp -p '{cfg}' \"$b\" && echo \"$b\" ;;\n  write) t='{cfg}.tmp'; cat > \"$t\"; touch '{m}'; sleep 30; mv \"$t\" '{cfg}' ;;\n  restart) exit 0 ;;\nesac\n",
            m = marker.display()
        ),
    )
    .expect("script");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let key = s
        .client_key(
            "k",
            "ed25519",
            "",
            &format!("command=\"{}\",restrict", script.display()),
        )
        .expect("client key");
    let new = s.dir.path().join("new.yaml");
    std::fs::write(&new, NEW).expect("new");
    let handle = std::thread::spawn({
        let marker = marker.clone();
        move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while !marker.exists() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    });
    let child = {
        let target = s.target();
        let kh = s.known_hosts.to_str().expect("utf8").to_string();
        let mut c = Command::new(env!("CARGO_BIN_EXE_swapcfg"));
        c.env_clear()
            .env("HOME", s.dir.path())
            .args([
                "apply",
                &target,
                new.to_str().expect("utf8"),
                "--config-path",
                &cfg,
                "--mode",
                "wrapper",
                "--unverified-wrapper-write",
                "--identity",
                key.to_str().expect("utf8"),
                "--known-hosts",
                &kh,
                "--yes",
                "--json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().expect("spawn swapcfg")
    };
    handle.join().expect("join");
    assert!(marker.exists(), "the wrapper write started: {}", s.log());
    // Kill the sshd processes serving this connection: the link drops mid-write.
    for pid in s.session_pids() {
        // SAFETY: plain kill(2) on a pid we just read from /proc.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(7),
        "write step failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(std::fs::read(&cfg).expect("cfg"), CONFIG, "old file intact");
}

#[test]
fn host_checks_against_openssh_in_sftp_and_shell_mode() {
    if !available() {
        return;
    }
    for (sftp, mode) in [(true, "sftp"), (false, "shell")] {
        let s = Sshd::start(Options { sftp }).expect("sshd");
        let cfg = config_file(&s, "config.yaml", 0o644);
        let key = s.client_key("k", "ed25519", "", "").expect("client key");
        let d = s.dir.path().to_str().expect("utf8").to_string();
        std::fs::create_dir(s.dir.path().join("store")).expect("store");
        let new = s.dir.path().join("new.yaml");
        let text = format!(
            "models:\n  a:\n    cmd: /bin/sh --port ${{PORT}} -m {d}/missing.gguf --mmproj {d}/config.yaml\n  b:\n    cmd: /nonexistent/llama-server --port ${{PORT}}\n  c:\n    cmd: no-such-cmd-swapcfg-e2e --port ${{PORT}}\nstore:\n  path: {d}/store/activity.db\n"
        );
        std::fs::write(&new, &text).expect("new");
        let (out, v) = apply(
            &s,
            &key,
            &cfg,
            &new,
            &["--restart-cmd", "none", "--mode", mode, "--strict-host"],
        );
        assert_eq!(out.status.code(), Some(1), "{mode}: {v}");
        assert_eq!(v["step"], "host-check", "{mode}: {v}");
        assert_eq!(
            std::fs::read(&cfg).expect("cfg"),
            CONFIG,
            "{mode}: untouched"
        );
        let got: Vec<(String, String, u64)> = v["host_checks"]
            .as_array()
            .expect("host_checks")
            .iter()
            .map(|c| {
                (
                    c["severity"].as_str().unwrap_or("").to_string(),
                    c["target"].as_str().unwrap_or("").to_string(),
                    c["line"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        let cmd_c = if sftp { "note" } else { "error" };
        assert_eq!(
            got,
            [
                ("error".to_string(), format!("{d}/missing.gguf"), 3),
                ("error".into(), "/nonexistent/llama-server".into(), 5),
                (cmd_c.into(), "no-such-cmd-swapcfg-e2e".into(), 7),
            ],
            "{mode}: {v}"
        );
        // Without --strict-host, a plan reports the same as warnings and
        // the checks run beside the read.
        let (out, v) = apply(
            &s,
            &key,
            &cfg,
            &new,
            &["--restart-cmd", "none", "--mode", mode, "--dry-run"],
        );
        assert_eq!(out.status.code(), Some(2), "{mode}: {v}");
        assert_eq!(v["host_checks"][0]["severity"], "warning", "{mode}: {v}");
        eprintln!(
            "{mode}: read with host checks {} ms",
            v["timings_ms"]["read"]
        );
    }
}

/// The primed restart against a real sshd and the user's real login shell:
/// the shell starts while the host still holds the old config and its
/// command runs after the new one is in place; a run refused before any
/// write (a conflict) leaves no waiting shell behind and runs nothing.
#[test]
fn primed_restart_runs_after_the_write_and_a_refused_run_leaves_no_shell() {
    if !available() {
        return;
    }
    let (s, h, cfg, key, new) = apply_setup();
    let base = h.standin.base_url();
    let seen = s.dir.path().join("seen-by-restart");
    let restart = format!("cat '{cfg}' > '{}'", seen.display());
    let (out, v) = apply(
        &s,
        &key,
        &cfg,
        &new,
        &["--restart-cmd", &restart, "--base-url", &base],
    );
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert_eq!(std::fs::read(&seen).expect("restart ran"), NEW);

    // A conflict: refused after the read, nothing written, no restart.
    std::fs::write(&cfg, CONFIG).expect("reset");
    let tag = format!("e2e-gate-{}", std::process::id());
    let ran = s.dir.path().join("ran");
    let restart = format!(": {tag}; : > '{}'", ran.display());
    let sha = "ab".repeat(32);
    let (out, v) = apply(
        &s,
        &key,
        &cfg,
        &new,
        &[
            "--restart-cmd",
            &restart,
            "--base-url",
            &base,
            "--expect-sha256",
            &sha,
        ],
    );
    assert_eq!(out.status.code(), Some(5), "{v}");
    // sshd closes the waiting shell's stdin when the connection ends: it
    // exits without running the command.
    assert_eq!(
        crate::common::wait_no_process_with(&tag),
        Vec::<u32>::new(),
        "a shell holding the restart is left"
    );
    assert!(!ran.exists(), "the restart ran after a refused apply");
    assert_eq!(std::fs::read(&cfg).expect("cfg"), CONFIG);
}
