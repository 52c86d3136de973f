//! Wrapper mode end to end: the script `swapcfg wrapper-script` prints, run
//! as the forced command by the in-process server (and once by OpenSSH's
//! sshd), and a seed-style wrapper (the test kit's built-in plain verbs).
//! Every test looks at the host's files afterwards: old or new bytes, owner
//! and mode, no temp files, no half-made backups, the lock file.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime};

use swapcfg::pipeline::sha256_hex;
use swapcfg::remote::wrapper::{Protocol, UNVERIFIED_WRITE_OP};
use swapcfg::remote::{
    AnyRemote, LockInfo, LockTaken, Mode, RemoteError, RemoteOps, RemoteOptions,
};
use swapcfg_testkit::server::{FaultAction, FaultPlan, Op, ScriptedExec};

use crate::common::*;

const OLD: &[u8] = b"models:\n  a:\n    cmd: srv --port ${PORT}\n";
const NEW: &[u8] =
    b"models:\n  a:\n    cmd: srv --port ${PORT}\n  b:\n    cmd: srv2 --port ${PORT}\n";

/// A host: `etc/` holds the config (and nothing else unless swapcfg puts
/// it there), `bin/` the generated script and what the restart leaves.
struct Host {
    _dir: tempfile::TempDir,
    etc: PathBuf,
    bin: PathBuf,
    cfg: PathBuf,
    script: PathBuf,
}

impl Host {
    fn cfg(&self) -> String {
        path_str(&self.cfg)
    }

    /// Names in `etc/`, sorted.
    fn etc(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.etc)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn backups(&self) -> Vec<PathBuf> {
        self.etc()
            .into_iter()
            .filter(|n| n.starts_with("config.yaml.bak-"))
            .map(|n| self.etc.join(n))
            .collect()
    }

    fn lock_file(&self) -> PathBuf {
        self.etc.join("config.yaml.swapcfg-lock")
    }

    /// Wait (bounded) until `etc/` holds exactly `names`.
    async fn settle(&self, names: &[&str]) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.etc() != names && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(self.etc(), names);
    }
}

/// `swapcfg wrapper-script --config-path CFG [--restart-cmd R]`.
fn generate(cfg: &str, restart: Option<&str>) -> Output {
    let mut c = swapcfg_cmd();
    c.args(["wrapper-script", "--config-path", cfg]);
    if let Some(r) = restart {
        c.args(["--restart-cmd", r]);
    }
    c.output().expect("run swapcfg wrapper-script")
}

/// A host with the config (`content`, `mode`) and the generated script;
/// `restart: true` gives the script a restart command that appends a line
/// to `bin/restarted` (quoted awkwardly on purpose).
fn host(content: &[u8], mode: u32, restart: bool) -> Host {
    let dir = tempfile::tempdir().expect("tempdir");
    let etc = dir.path().join("etc");
    let bin = dir.path().join("bin");
    std::fs::create_dir(&etc).expect("etc");
    std::fs::create_dir(&bin).expect("bin");
    let cfg = etc.join("config.yaml");
    std::fs::write(&cfg, content).expect("config");
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(mode)).expect("chmod");
    let restart_cmd = format!(
        "echo \"it's restarted\" >> '{}'",
        bin.join("restarted").display()
    );
    let out = generate(&path_str(&cfg), restart.then_some(restart_cmd.as_str()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = bin.join("wrapper.sh");
    std::fs::write(&script, &out.stdout).expect("script");
    Host {
        _dir: dir,
        etc,
        bin,
        cfg,
        script,
    }
}

/// `swapcfg ARGS… --identity … --known-hosts … --port …`.
async fn cli(fx: &Fixture, args: &[&str]) -> Output {
    let mut c = swapcfg_cmd();
    c.args(args)
        .arg("--identity")
        .arg(&fx.key_path)
        .arg("--known-hosts")
        .arg(&fx.known_hosts)
        .args(["--port", &fx.server.port().to_string()]);
    output(c).await
}

/// `apply` of `new` in wrapper mode with `extra` flags, `--yes --json`.
async fn apply(fx: &Fixture, new: &[u8], extra: &[&str]) -> (Output, serde_json::Value) {
    let file = fx.dir.path().join("new.yaml");
    std::fs::write(&file, new).expect("new file");
    let file = path_str(&file);
    let mut args = vec![
        "apply",
        "tester@127.0.0.1",
        &file,
        "--mode",
        "wrapper",
        "--yes",
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = cli(fx, &args).await;
    let v = json_of(&out);
    (out, v)
}

async fn wrapper<'s>(s: &'s swapcfg::transport::Session, opts: RemoteOptions) -> AnyRemote<'s> {
    AnyRemote::open(s, Mode::Wrapper, "(wrapper config)", opts)
        .await
        .expect("open wrapper")
}

fn protocol<'a>(r: &'a AnyRemote<'_>) -> Option<&'a Protocol> {
    match r {
        AnyRemote::Wrapper(w) => w.protocol(),
        _ => None,
    }
}

fn owner(p: &Path) -> (u32, u32) {
    let m = std::fs::metadata(p).expect("metadata");
    (m.uid(), m.gid())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

// ---- the generated script itself ----

#[test]
fn generated_script_is_valid_sh_and_offers_restart_only_when_asked() {
    let with = host(OLD, 0o644, true);
    let without = host(OLD, 0o644, false);
    let none = generate(&without.cfg(), Some("none"));
    assert!(none.status.success());
    assert!(
        none.stdout == std::fs::read(&without.script).expect("script"),
        "--restart-cmd none is the script without restart"
    );
    for sh in ["/bin/sh", "/bin/dash", "/usr/bin/busybox", "/bin/bash"] {
        if !Path::new(sh).exists() {
            continue;
        }
        for h in [&with, &without] {
            let mut c = std::process::Command::new(sh);
            match sh {
                "/usr/bin/busybox" => c.args(["sh", "-n"]),
                "/bin/bash" => c.args(["--posix", "-n"]),
                _ => c.arg("-n"),
            };
            let out = c.arg(&h.script).output().expect("sh -n");
            assert!(
                out.status.success(),
                "{sh} -n: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let run = |h: &Host, command: &str| {
        std::process::Command::new("/bin/sh")
            .arg(&h.script)
            .env("SSH_ORIGINAL_COMMAND", command)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run script")
    };
    let hello = run(&with, "hello");
    assert_eq!(
        String::from_utf8_lossy(&hello.stdout),
        format!(
            "swapcfg-wrapper 1 read backup write lock unlock list read-backup remove restart\npath={}\n",
            with.cfg()
        )
    );
    let r = run(&with, "restart");
    assert_eq!(r.status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(with.bin.join("restarted")).expect("restarted"),
        "it's restarted\n",
        "the quoted restart command ran as written"
    );

    let hello = run(&without, "hello");
    assert!(!String::from_utf8_lossy(&hello.stdout).contains("restart"));
    let r = run(&without, "restart");
    assert_eq!(r.status.code(), Some(2), "no restart verb");
    assert!(String::from_utf8_lossy(&r.stderr).contains("unknown verb restart"));

    // Paths the script could not own are refused (usage, exit 2).
    for bad in ["relative/config.yaml", "/etc/llama-swap/", "/etc/a\nb"] {
        let out = generate(bad, None);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(out.stdout.is_empty());
    }
}

#[tokio::test]
async fn script_refuses_unknown_verbs_and_shell_metacharacters() {
    let h = host(OLD, 0o640, false);
    let fx = fixture(|b| b.forced_command(&h.script)).await;
    let s = fx.session().await;
    let pwned = h.bin.join("pwned");
    let p = pwned.display();
    let attempts = [
        format!("read; touch {p}"),
        format!("read 1;touch {p}"),
        format!("read $(touch {p})"),
        format!("read `touch {p}`"),
        format!("read && touch {p}"),
        format!("read | tee {p}"),
        format!("read\ntouch {p}"),
        format!("touch {p}"),
        "read-backup ../../../etc/passwd".to_string(),
        "remove *".to_string(),
        "remove 20250101T000000Z.x".to_string(),
        "write 10 nothex -".to_string(),
        "write 99999999999999999999 x -".to_string(),
        "backup 2025 00".to_string(),
        "lock now 0".to_string(),
        "unlock XYZ".to_string(),
        "hello there".to_string(),
        "read 2".to_string(),
        "restart".to_string(),
        "sftp".to_string(),
        String::new(),
    ];
    for cmd in &attempts {
        let out = s
            .exec(cmd, Some(b"x"), Duration::from_secs(5), 4096)
            .await
            .expect("exec");
        assert_eq!(out.status, Some(2), "{cmd:?} must be refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with("swapcfg-wrapper 1: refused"),
            "{cmd:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "{cmd:?} printed something");
    }
    assert!(!pwned.exists(), "nothing was executed");
    assert_eq!(h.etc(), ["config.yaml"]);
    assert_eq!(std::fs::read(&h.cfg).expect("cfg"), OLD);
    assert_eq!(fx.server.exec_log().len(), attempts.len());
}

#[tokio::test]
async fn script_errors_are_typed_and_name_the_real_path() {
    let h = host(OLD, 0o640, false);
    let fx = fixture(|b| b.forced_command(&h.script)).await;
    let s = fx.session().await;
    std::fs::remove_file(&h.cfg).expect("rm");
    let r = wrapper(&s, RemoteOptions::default()).await;
    match r.read().await {
        Err(RemoteError::NotFound { path }) => assert_eq!(path, h.cfg()),
        other => panic!("{other:?}"),
    }
    let fifo = std::process::Command::new("mkfifo")
        .arg(&h.cfg)
        .status()
        .expect("mkfifo");
    assert!(fifo.success());
    match r.read().await {
        Err(RemoteError::NotRegular { path, kind }) => {
            assert_eq!((path.as_str(), kind.as_str()), (h.cfg().as_str(), "a FIFO"))
        }
        other => panic!("{other:?}"),
    }
    std::fs::remove_file(&h.cfg).expect("rm fifo");
    std::fs::create_dir(&h.cfg).expect("dir");
    assert!(matches!(
        r.read().await,
        Err(RemoteError::IsDirectory { .. })
    ));
    assert_eq!(
        fx.server.exec_log(),
        ["read 1", "read 1", "read 1"],
        "the script's own errors: no fallback to the seed verbs"
    );
}

// ---- apply through the generated script ----

#[tokio::test]
async fn apply_through_the_generated_script() {
    let h = host(OLD, 0o640, true);
    let chowned = is_root();
    if chowned {
        std::os::unix::fs::chown(&h.cfg, Some(4321), Some(4322)).expect("chown");
    }
    let before = owner(&h.cfg);
    let fx = fixture(|b| b.forced_command(&h.script)).await;
    let (out, v) = apply(&fx, NEW, &[]).await;
    assert_eq!(
        (out.status.code(), v["step"].as_str()),
        (Some(0), Some("done")),
        "{v}"
    );
    assert_eq!(std::fs::read(&h.cfg).expect("cfg"), NEW);
    assert_eq!(mode_of(&h.cfg), 0o640, "mode kept");
    assert_eq!(owner(&h.cfg), before, "owner and group kept");
    let backups = h.backups();
    assert_eq!(backups.len(), 1, "{:?}", h.etc());
    assert_eq!(
        v["backup_path"].as_str(),
        Some(path_str(&backups[0]).as_str())
    );
    assert_eq!(std::fs::read(&backups[0]).expect("backup"), OLD);
    assert_eq!(mode_of(&backups[0]), 0o640);
    assert_eq!(owner(&backups[0]), before);
    // No temp file, no lock left behind; the restart verb ran once.
    assert_eq!(h.etc().len(), 2, "{:?}", h.etc());
    assert!(!h.lock_file().exists());
    assert_eq!(
        std::fs::read_to_string(h.bin.join("restarted")).expect("restarted"),
        "it's restarted\n"
    );
    assert!(
        v["warnings"]
            .as_array()
            .expect("warnings")
            .iter()
            .all(|w| !w.as_str().unwrap_or("").contains("lock")),
        "the lock was taken: {v}"
    );
    // Only protocol verbs, one exec each, arguments digits and hex.
    let log = fx.server.exec_log();
    let verbs: Vec<&str> = log
        .iter()
        .map(|c| c.split(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(
        verbs,
        ["read", "lock", "backup", "write", "restart", "unlock"],
        "{log:?}"
    );
    assert_eq!(log[0], "read 1", "the first read is also the hello");
    let new_sha = sha256_hex(NEW);
    let old_sha = sha256_hex(OLD);
    assert_eq!(log[3], format!("write {} {new_sha} {old_sha}", NEW.len()));
    assert!(log[2].starts_with("backup ") && log[2].ends_with(&old_sha));
    for c in &log {
        assert!(
            c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b' ' || b == b'-'),
            "{c:?}"
        );
    }

    // Backups, rollback and pruning go through the same script.
    let out = cli(
        &fx,
        &["backups", "tester@127.0.0.1", "--mode", "wrapper", "--json"],
    )
    .await;
    let list = json_of(&out);
    assert_eq!(
        list[0]["path"].as_str(),
        Some(path_str(&backups[0]).as_str())
    );
    assert_eq!(list[0]["size"].as_u64(), Some(OLD.len() as u64));
    let out = cli(
        &fx,
        &[
            "rollback",
            "tester@127.0.0.1",
            "--mode",
            "wrapper",
            "--yes",
            "--json",
            "--keep-backups",
            "1",
        ],
    )
    .await;
    let v = json_of(&out);
    assert_eq!(
        (out.status.code(), v["step"].as_str()),
        (Some(0), Some("done")),
        "{v}"
    );
    assert_eq!(std::fs::read(&h.cfg).expect("cfg"), OLD, "rolled back");
    assert_eq!(
        v["pruned_backups"][0].as_str(),
        Some(path_str(&backups[0]).as_str())
    );
    let now = h.backups();
    assert_eq!(now.len(), 1, "kept one: {:?}", h.etc());
    assert_eq!(std::fs::read(&now[0]).expect("backup"), NEW);
    assert_eq!(h.etc().len(), 2, "{:?}", h.etc());
}

#[tokio::test]
async fn a_script_without_restart_refuses_before_changing_anything() {
    let h = host(OLD, 0o644, false);
    let fx = fixture(|b| b.forced_command(&h.script)).await;
    let (out, v) = apply(&fx, NEW, &[]).await;
    assert_eq!(
        (out.status.code(), v["step"].as_str()),
        (Some(6), Some("backup")),
        "{v}"
    );
    let err = v["error"].as_str().expect("error");
    assert!(err.contains("--restart-cmd none"), "{err}");
    assert!(v["backup_path"].is_null());
    assert_eq!(h.etc(), ["config.yaml"], "no backup, no temp, no lock");
    assert_eq!(std::fs::read(&h.cfg).expect("cfg"), OLD);

    let (out, v) = apply(&fx, NEW, &["--restart-cmd", "none"]).await;
    assert_eq!(
        (out.status.code(), v["step"].as_str()),
        (Some(0), Some("done")),
        "{v}"
    );
    assert_eq!(std::fs::read(&h.cfg).expect("cfg"), NEW);
    assert!(!fx.server.exec_log().iter().any(|c| c == "restart"));
}

// ---- cut uploads ----

#[tokio::test]
async fn dropped_connection_mid_upload_leaves_the_old_file_and_no_temp() {
    // Several MB, so the upload is still running when the link dies.
    let old: Vec<u8> = (0..3_000_000u32)
        .map(|i| b"abcdefghij\n"[(i % 11) as usize])
        .collect();
    let new: Vec<u8> = old.iter().map(|b| b.to_ascii_uppercase()).collect();
    let h = host(&old, 0o640, false);
    let fx = fixture(|b| b.forced_command(&h.script)).await;
    let s = fx.session().await;
    let r = wrapper(&s, RemoteOptions::default()).await;
    let cur = r.read().await.expect("read");
    assert_eq!(cur.bytes, old);
    assert_eq!(cur.mode, Some(0o640));
    assert!(matches!(protocol(&r), Some(Protocol::V1 { .. })));
    // 1 MiB reaches the script (its temp file exists by then: the pipe
    // holds 64 KiB), then the TCP connection is shut down.
    fx.server.set_faults(FaultPlan::one(
        Op::Exec,
        fx.server.op_count(Op::Exec) + 1,
        FaultAction::DropAfterStdin(1 << 20),
    ));
    let err = r
        .write(&new, &cur, Some(&sha256_hex(&old)))
        .await
        .expect_err("the link died");
    assert!(
        matches!(
            err,
            RemoteError::Disconnected { .. } | RemoteError::Timeout { .. }
        ),
        "{err:?}"
    );
    assert!(fx.server.exec_log().iter().any(|c| c.starts_with("write ")));
    // The script saw EOF after 1 MiB of 3 MB, refused, removed its temp.
    h.settle(&["config.yaml"]).await;
    assert_eq!(std::fs::read(&h.cfg).expect("cfg"), old, "old bytes");
    assert_eq!(mode_of(&h.cfg), 0o640);
}

#[tokio::test]
async fn short_stdin_is_incomplete_and_replaces_nothing() {
    let h = host(OLD, 0o600, true);
    let fx = fixture(|b| b.forced_command(&h.script)).await;
    let s = fx.session().await;

    // Fewer bytes than announced, straight to the script.
    let sha = sha256_hex(NEW);
    let out = s
        .exec(
            &format!("write {} {sha} -", NEW.len()),
            Some(&NEW[..10]),
            Duration::from_secs(5),
            4096,
        )
        .await
        .expect("exec");
    assert_eq!(out.status, Some(3));
    assert_eq!(out.stdout, b"got=10\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!(
        "received 10 of {} bytes; nothing was replaced",
        NEW.len()
    )));
    // The right length with other bytes is incomplete too.
    let mut other = NEW.to_vec();
    other[0] ^= 1;
    let out = s
        .exec(
            &format!("write {} {sha} -", NEW.len()),
            Some(&other),
            Duration::from_secs(5),
            4096,
        )
        .await
        .expect("exec");
    assert_eq!(out.status, Some(3));
    assert_eq!(h.etc(), ["config.yaml"]);
    assert_eq!(std::fs::read(&h.cfg).expect("cfg"), OLD);

    // A link that loses the tail but ends cleanly (a shim in front of the
    // script keeps only 10 bytes of every upload): the CLI reports it.
    let shim = h.bin.join("shim.sh");
    std::fs::write(
        &shim,
        format!(
            "case $SSH_ORIGINAL_COMMAND in\n  write\\ *) head -c 10 | /bin/sh '{s}' ;;\n  *) exec /bin/sh '{s}' ;;\nesac\n",
            s = h.script.display()
        ),
    )
    .expect("shim");
    let fx = fixture(|b| b.forced_command(&shim)).await;
    let (out, v) = apply(&fx, NEW, &[]).await;
    assert_eq!(
        (out.status.code(), v["step"].as_str()),
        (Some(7), Some("write")),
        "{v}"
    );
    let err = v["error"].as_str().expect("error");
    assert!(
        err.contains(&format!("received 10 of {} bytes", NEW.len())),
        "{err}"
    );
    assert_eq!(v["remote_state"].as_str(), Some("old"), "{v}");
    assert_eq!(std::fs::read(&h.cfg).expect("cfg"), OLD);
    assert_eq!(mode_of(&h.cfg), 0o600);
    // The backup made before the write is complete; no temp, no lock.
    let backups = h.backups();
    assert_eq!(backups.len(), 1);
    assert_eq!(std::fs::read(&backups[0]).expect("backup"), OLD);
    assert_eq!(h.etc().len(), 2, "{:?}", h.etc());
    assert!(
        !h.bin.join("restarted").exists(),
        "no restart after a failed write"
    );
}

#[tokio::test]
async fn a_forced_command_that_cannot_chown_keeps_the_old_file() {
    // The key's user is not the config's owner and cannot chown: the write
    // is refused rather than leaving the config owned by someone else; the
    // backup it made first is private to that user instead.
    if !is_root() || !Path::new("/usr/bin/setpriv").exists() {
        eprintln!("skipping: needs root and setpriv to run the script as nobody");
        return;
    }
    let h = host(OLD, 0o644, false);
    let open = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    open(h._dir.path(), 0o755);
    open(&h.bin, 0o755);
    open(&h.script, 0o644);
    open(&h.etc, 0o777);
    let shim = h.bin.join("as-nobody.sh");
    std::fs::write(
        &shim,
        format!(
            "exec /usr/bin/setpriv --reuid=65534 --regid=65534 --clear-groups /bin/sh '{}'\n",
            h.script.display()
        ),
    )
    .expect("shim");
    let fx = fixture(|b| b.forced_command(&shim)).await;
    let (out, v) = apply(&fx, NEW, &["--restart-cmd", "none"]).await;
    assert_eq!(
        (out.status.code(), v["step"].as_str()),
        (Some(7), Some("write")),
        "{v}"
    );
    let err = v["error"].as_str().expect("error");
    assert!(err.contains("chown refused"), "{err}");
    assert_eq!(v["remote_state"].as_str(), Some("old"), "{v}");
    assert_eq!(std::fs::read(&h.cfg).expect("cfg"), OLD);
    assert_eq!((owner(&h.cfg), mode_of(&h.cfg)), ((0, 0), 0o644));
    let backups = h.backups();
    assert_eq!(backups.len(), 1, "{:?}", h.etc());
    assert_eq!(std::fs::read(&backups[0]).expect("backup"), OLD);
    assert_eq!(
        (owner(&backups[0]), mode_of(&backups[0])),
        ((65534, 65534), 0o600),
        "not readable by the config's group and others"
    );
    assert_eq!(h.etc().len(), 2, "no temp, no lock: {:?}", h.etc());
}

// ---- compare-and-swap ----

#[tokio::test]
async fn changed_config_is_not_replaced_nor_backed_up() {
    let h = host(OLD, 0o644, false);
    let fx = fixture(|b| b.forced_command(&h.script)).await;
    let s = fx.session().await;
    let r = wrapper(&s, RemoteOptions::default()).await;
    let cur = r.read().await.expect("read");
    let theirs: &[u8] = b"models: {} # someone else\n";
    std::fs::write(&h.cfg, theirs).expect("someone else writes");

    let err = r
        .backup(&cur, SystemTime::now())
        .await
        .expect_err("changed");
    match &err {
        RemoteError::Changed {
            expected, found, ..
        } => {
            assert_eq!(expected, &sha256_hex(OLD));
            assert_eq!(found, &sha256_hex(theirs));
        }
        other => panic!("{other:?}"),
    }
    let err = r
        .write(NEW, &cur, Some(&sha256_hex(OLD)))
        .await
        .expect_err("changed");
    match &err {
        RemoteError::Changed { path, found, .. } => {
            assert_eq!(path, &h.cfg());
            assert_eq!(found, &sha256_hex(theirs));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(&h.cfg).expect("cfg"), theirs, "untouched");
    assert_eq!(h.etc(), ["config.yaml"], "no backup, no temp");

    // Against the bytes it holds now, the write goes through.
    r.write(NEW, &cur, Some(&sha256_hex(theirs)))
        .await
        .expect("write");
    assert_eq!(std::fs::read(&h.cfg).expect("cfg"), NEW);
    assert_eq!(mode_of(&h.cfg), 0o644);
    assert_eq!(h.etc(), ["config.yaml"]);
}

#[tokio::test]
async fn a_symlinked_config_stays_a_link_and_its_target_is_replaced() {
    let h = host(OLD, 0o600, false);
    let real = h.etc.join("real.yaml");
    std::fs::rename(&h.cfg, &real).expect("mv");
    std::os::unix::fs::symlink("real.yaml", &h.cfg).expect("symlink");
    let fx = fixture(|b| b.forced_command(&h.script)).await;
    let s = fx.session().await;
    let r = wrapper(&s, RemoteOptions::default()).await;
    let cur = r.read().await.expect("read");
    assert_eq!((cur.bytes.as_slice(), cur.mode), (OLD, Some(0o600)));
    let b = r.backup(&cur, SystemTime::now()).await.expect("backup");
    assert!(b.starts_with(&format!("{}.bak-", h.cfg())), "{b}");
    r.write(NEW, &cur, Some(&sha256_hex(OLD)))
        .await
        .expect("write");
    assert!(std::fs::symlink_metadata(&h.cfg)
        .expect("lstat")
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&real).expect("real"), NEW);
    assert_eq!(mode_of(&real), 0o600);
    assert_eq!(std::fs::read(&b).expect("backup"), OLD);
    assert_eq!(mode_of(Path::new(&b)), 0o600);
    assert_eq!(h.etc().len(), 3, "link, target, backup: {:?}", h.etc());
}

// ---- the lock ----

fn record(token: &str, expires: u64) -> String {
    format!(
        "swapcfg-lock 1\ntoken={token}\nclient=otherbox\nuser=bob\npid=4242\nstarted=1700000000\nexpires={expires}\n"
    )
}

#[tokio::test]
async fn lock_held_is_a_conflict_naming_the_holder_and_expired_leases_are_taken_over() {
    let h = host(OLD, 0o644, false);
    let fx = fixture(|b| b.forced_command(&h.script)).await;
    let now = swapcfg::pipeline::epoch_now();
    let live = record("feedface", now + 3600);
    std::fs::write(h.lock_file(), &live).expect("lock");

    let (out, v) = apply(&fx, NEW, &["--restart-cmd", "none"]).await;
    assert_eq!(
        (out.status.code(), v["step"].as_str()),
        (Some(5), Some("lock")),
        "{v}"
    );
    let err = v["error"].as_str().expect("error");
    assert!(err.contains("bob@otherbox (pid 4242)"), "{err}");
    assert_eq!(std::fs::read(&h.cfg).expect("cfg"), OLD);
    assert_eq!(
        std::fs::read_to_string(h.lock_file()).expect("lock"),
        live,
        "the holder's lock is untouched"
    );
    assert_eq!(h.etc(), ["config.yaml", "config.yaml.swapcfg-lock"]);

    std::fs::write(h.lock_file(), record("feedface", now - 10)).expect("stale lock");
    let (out, v) = apply(&fx, NEW, &["--restart-cmd", "none"]).await;
    assert_eq!(
        (out.status.code(), v["step"].as_str()),
        (Some(0), Some("done")),
        "{v}"
    );
    assert!(
        v["warnings"].as_array().expect("warnings").iter().any(|w| w
            .as_str()
            .unwrap_or("")
            .contains("took over the lock of bob@otherbox (pid 4242)")),
        "{v}"
    );
    assert_eq!(std::fs::read(&h.cfg).expect("cfg"), NEW);
    assert!(!h.lock_file().exists(), "released at the end");
    assert_eq!(h.backups().len(), 1);
    assert_eq!(h.etc().len(), 2, "{:?}", h.etc());
}

#[tokio::test]
async fn lock_and_unlock_keep_the_record_format_and_the_holder() {
    let h = host(OLD, 0o644, false);
    let fx = fixture(|b| b.forced_command(&h.script)).await;
    let s = fx.session().await;
    let r = wrapper(&s, RemoteOptions::default()).await;
    let me = LockInfo {
        token: "0123abcd".into(),
        client: "laptop".into(),
        user: "ann".into(),
        pid: 7,
        started: 100,
        expires: 200,
    };
    assert_eq!(
        r.lock(&me, 150, false).await.expect("lock"),
        LockTaken::Fresh
    );
    assert_eq!(
        std::fs::read_to_string(h.lock_file()).expect("lock"),
        me.to_record()
    );
    assert_eq!(mode_of(&h.lock_file()), 0o644);
    let other = LockInfo {
        token: "ffff".into(),
        user: "bob".into(),
        expires: 900,
        ..me.clone()
    };
    match r.lock(&other, 150, false).await {
        Err(RemoteError::Locked {
            holder: Some(holder),
            ..
        }) => assert_eq!(*holder, me),
        other => panic!("{other:?}"),
    }
    // Not the holder: unlock leaves it; after the lease, a takeover.
    r.unlock(&other).await.expect("unlock");
    assert!(h.lock_file().exists());
    assert_eq!(
        r.lock(&other, 200, false).await.expect("takeover"),
        LockTaken::TookOver {
            previous: Some(me.clone())
        }
    );
    r.unlock(&me).await.expect("unlock");
    assert_eq!(
        std::fs::read_to_string(h.lock_file()).expect("lock"),
        other.to_record()
    );
    // --break-lock: a live holder is replaced too.
    let breaker = LockInfo {
        token: "beef".into(),
        ..me.clone()
    };
    assert_eq!(
        r.lock(&breaker, 300, true).await.expect("break"),
        LockTaken::TookOver {
            previous: Some(other.clone())
        }
    );
    r.unlock(&other).await.expect("unlock");
    assert!(h.lock_file().exists(), "still the breaker's");
    r.unlock(&breaker).await.expect("unlock");
    assert_eq!(h.etc(), ["config.yaml"], "no lock, no temp");
}

// ---- a seed-style wrapper (the test kit's built-in plain verbs) ----

#[tokio::test]
async fn seed_wrapper_reads_and_restarts_but_writes_only_when_allowed() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, OLD).expect("cfg");
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let names = || {
        let mut v: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let fx = fixture(|b| {
        b.wrapper(cfg.clone())
            .restart_script("restart", ScriptedExec::default())
    })
    .await;
    let s = fx.session().await;
    let r = wrapper(&s, RemoteOptions::default()).await;
    let cur = r.read().await.expect("read");
    assert_eq!(cur.bytes, OLD);
    assert_eq!(protocol(&r), Some(&Protocol::Seed));
    r.restart("ignored", Duration::from_secs(5))
        .await
        .expect("restart");
    for result in [
        r.backup(&cur, SystemTime::now()).await.map(|_| ()),
        r.write(NEW, &cur, None).await,
    ] {
        match result {
            Err(RemoteError::Unsupported { op, why, .. }) => {
                assert_eq!(op, UNVERIFIED_WRITE_OP);
                assert!(why.contains("truncated config"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        r.lock(
            &LockInfo {
                token: "ab".into(),
                client: "c".into(),
                user: "u".into(),
                pid: 1,
                started: 0,
                expires: 1
            },
            0,
            false
        )
        .await,
        Err(RemoteError::Unsupported { .. })
    ));
    assert_eq!(
        fx.server.exec_log(),
        ["read 1", "read", "restart"],
        "nothing sent for the refused backup and write"
    );
    assert_eq!(names(), ["config.yaml"]);

    // Opted in: the plain verbs, the backup path checked.
    let r = wrapper(
        &s,
        RemoteOptions {
            unverified_wrapper_write: true,
            ..RemoteOptions::default()
        },
    )
    .await;
    let cur = r.read().await.expect("read");
    let b = r.backup(&cur, SystemTime::now()).await.expect("backup");
    assert!(
        swapcfg::remote::names::is_backup(&path_str(&cfg), &b),
        "{b}"
    );
    assert_eq!(std::fs::read(&b).expect("backup"), OLD);
    r.write(NEW, &cur, None).await.expect("write");
    assert_eq!(std::fs::read(&cfg).expect("cfg"), NEW);
    assert_eq!(names().len(), 2);
}

#[tokio::test]
async fn apply_to_a_seed_wrapper_is_refused_before_the_backup_unless_allowed() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, OLD).expect("cfg");
    let fx = fixture(|b| {
        b.wrapper(cfg.clone())
            .restart_script("restart", ScriptedExec::default())
    })
    .await;
    let (out, v) = apply(&fx, NEW, &[]).await;
    assert_eq!(
        (out.status.code(), v["step"].as_str()),
        (Some(6), Some("backup")),
        "exit 6: nothing backed up, nothing written: {v}"
    );
    let err = v["error"].as_str().expect("error");
    assert!(err.contains("swapcfg wrapper-script"), "{err}");
    assert!(err.contains("--unverified-wrapper-write"), "{err}");
    assert!(err.contains("nothing was written"), "{err}");
    assert!(v["backup_path"].is_null());
    assert_eq!(v["remote_state"].as_str(), Some("old"));
    assert_eq!(std::fs::read(&cfg).expect("cfg"), OLD);
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
    assert_eq!(fx.server.exec_log(), ["read 1", "read"]);

    let (out, v) = apply(&fx, NEW, &["--unverified-wrapper-write"]).await;
    assert_eq!(
        (out.status.code(), v["step"].as_str()),
        (Some(0), Some("done")),
        "{v}"
    );
    assert_eq!(std::fs::read(&cfg).expect("cfg"), NEW);
    let b = v["backup_path"].as_str().expect("backup");
    assert_eq!(std::fs::read(b).expect("backup"), OLD);
    assert!(
        v["warnings"]
            .as_array()
            .expect("warnings")
            .iter()
            .any(|w| w.as_str().unwrap_or("").contains("no lock taken")),
        "{v}"
    );
}

// ---- OpenSSH's sshd running the script as the key's forced command ----

#[test]
fn apply_through_the_script_under_openssh() {
    use swapcfg_testkit::sshd::{available, Options, Sshd};
    if !available() {
        return;
    }
    let h = host(OLD, 0o640, true);
    let s = Sshd::start(Options { sftp: true }).expect("sshd");
    let key = s
        .client_key(
            "k",
            "ed25519",
            "",
            &format!("command=\"sh {}\",restrict", h.script.display()),
        )
        .expect("client key");
    let new = s.dir.path().join("new.yaml");
    std::fs::write(&new, NEW).expect("new");
    let run = |args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_swapcfg"));
        c.env_clear()
            .env("HOME", s.dir.path())
            .args(args)
            .arg("--identity")
            .arg(&key)
            .arg("--known-hosts")
            .arg(&s.known_hosts)
            .stdin(std::process::Stdio::null());
        c.output().expect("run swapcfg")
    };
    let target = s.target();
    let out = run(&[
        "apply",
        &target,
        new.to_str().expect("utf8"),
        "--mode",
        "wrapper",
        "--yes",
        "--json",
    ]);
    let v = json_of(&out);
    assert_eq!(
        (out.status.code(), v["step"].as_str()),
        (Some(0), Some("done")),
        "{v}\n{}",
        s.log()
    );
    assert_eq!(std::fs::read(&h.cfg).expect("cfg"), NEW);
    assert_eq!(mode_of(&h.cfg), 0o640);
    let backups = h.backups();
    assert_eq!(backups.len(), 1, "{:?}", h.etc());
    assert_eq!(std::fs::read(&backups[0]).expect("backup"), OLD);
    assert_eq!(mode_of(&backups[0]), 0o640);
    assert_eq!(h.etc().len(), 2, "no temp, no lock: {:?}", h.etc());
    assert_eq!(
        std::fs::read_to_string(h.bin.join("restarted")).expect("restarted"),
        "it's restarted\n"
    );
    // `get` through the same key; sftp is not reachable with it.
    let out = run(&["get", &target, "--mode", "wrapper"]);
    assert_eq!(out.stdout, NEW, "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["get", &target, "--config-path", &h.cfg()]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "the forced command wins over sftp"
    );

    // The forced command refuses what is not a verb, over real sshd too.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let pwned = h.bin.join("pwned");
    rt.block_on(async {
        let session = swapcfg::transport::Session::connect(&swapcfg::transport::ConnectOptions {
            target: swapcfg::target::Target::parse(&target).expect("target"),
            identity: Some(key.clone()),
            known_hosts: s.known_hosts.clone(),
            host_key_policy: swapcfg::transport::HostKeyPolicy::Strict,
            connect_timeout: Duration::from_secs(10),
            op_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(15),
        })
        .await
        .expect("connect");
        for cmd in [
            format!("read; touch {}", pwned.display()),
            format!("read $(touch {})", pwned.display()),
        ] {
            let out = session
                .exec(&cmd, None, Duration::from_secs(10), 4096)
                .await
                .expect("exec");
            assert_eq!(out.status, Some(2), "{cmd}");
        }
        session.close().await;
    });
    assert!(!pwned.exists());
    assert_eq!(std::fs::read(&h.cfg).expect("cfg"), NEW);
}

#[test]
fn a_refused_write_under_openssh_is_answered_not_cut_off() {
    // sshd closes the channel when the forced command exits: a script that
    // refused a write without reading its stdin would leave a large upload
    // hanging on a closed channel. The script reads it, so the client hears
    // why.
    use swapcfg_testkit::sshd::{available, Options, Sshd};
    if !available() {
        return;
    }
    let h = host(OLD, 0o640, false);
    let s = Sshd::start(Options { sftp: false }).expect("sshd");
    let key = s
        .client_key(
            "k",
            "ed25519",
            "",
            &format!("command=\"sh {}\",restrict", h.script.display()),
        )
        .expect("client key");
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| b"xyz\n"[(i % 4) as usize])
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let session = swapcfg::transport::Session::connect(&swapcfg::transport::ConnectOptions {
            target: swapcfg::target::Target::parse(&s.target()).expect("target"),
            identity: Some(key.clone()),
            known_hosts: s.known_hosts.clone(),
            host_key_policy: swapcfg::transport::HostKeyPolicy::Strict,
            connect_timeout: Duration::from_secs(10),
            op_timeout: Duration::from_secs(20),
            keepalive: Duration::from_secs(15),
        })
        .await
        .expect("connect");
        let r = wrapper(&session, RemoteOptions::default()).await;
        let cur = r.read().await.expect("read");
        // The config becomes a directory between the read and the write.
        std::fs::remove_file(&h.cfg).expect("rm");
        std::fs::create_dir(&h.cfg).expect("mkdir");
        match r.write(&big, &cur, Some(&sha256_hex(OLD))).await {
            Err(RemoteError::IsDirectory { path }) => assert_eq!(path, h.cfg()),
            other => panic!("{other:?}\n{}", s.log()),
        }
        session.close().await;
    });
    assert_eq!(h.etc(), ["config.yaml"]);
    assert!(h.cfg.is_dir());
}
