//! The write-path fault matrix against Debian's real OpenSSH (SFTP mode),
//! with the faults made by a TCP proxy in front of sshd: the connection cut
//! mid-upload of a 3 MiB config, replies withheld then the link cut, the
//! client SIGKILLed mid-transfer on a slow link, and a really full disk (a
//! 4 MiB tmpfs, where the test may mount one). Each test checks the files on
//! the host afterwards. Skips where /usr/sbin/sshd is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::mode_of;
use swapcfg_testkit::proxy::{Break, Proxy, ProxyOptions};
use swapcfg_testkit::sshd::{self, available, Options, Sshd};

fn big_config(model: &str, bytes: usize) -> Vec<u8> {
    let mut s = format!("models:\n  {model}:\n    cmd: srv --port ${{PORT}}\n");
    let line = format!("# {}\n", "y".repeat(77));
    while s.len() < bytes {
        s.push_str(&line);
    }
    s.into_bytes()
}

struct Host {
    sshd: Sshd,
    key: PathBuf,
    dir: PathBuf,
    cfg: PathBuf,
    new: PathBuf,
    old_bytes: Vec<u8>,
    new_bytes: Vec<u8>,
}

fn host(dir: Option<PathBuf>, size: usize) -> Host {
    let sshd = Sshd::start(Options { sftp: true }).expect("sshd");
    let key = sshd.client_key("k", "ed25519", "", "").expect("key");
    let dir = dir.unwrap_or_else(|| sshd.dir.path().join("etc"));
    std::fs::create_dir_all(&dir).expect("dir");
    let old_bytes = big_config("old", size);
    let new_bytes = big_config("new", size);
    let cfg = dir.join("config.yaml");
    std::fs::write(&cfg, &old_bytes).expect("cfg");
    let new = sshd.dir.path().join("new.yaml");
    std::fs::write(&new, &new_bytes).expect("new");
    Host {
        sshd,
        key,
        dir,
        cfg,
        new,
        old_bytes,
        new_bytes,
    }
}

impl Host {
    /// `swapcfg apply --json` through `port` (a proxy's, or sshd's own).
    fn apply(&self, port: u16, extra: &[&str]) -> Command {
        self.apply_with(port, "true", extra)
    }

    /// [`Host::apply`] with this restart command.
    fn apply_with(&self, port: u16, restart: &str, extra: &[&str]) -> Command {
        let kh = self.sshd.dir.path().join(format!("kh-{port}"));
        std::fs::write(&kh, format!("[127.0.0.1]:{port} {}\n", self.sshd.host_pub)).expect("kh");
        let mut c = Command::new(env!("CARGO_BIN_EXE_swapcfg"));
        c.env_clear()
            .env("HOME", self.sshd.dir.path())
            .env("USER", sshd::whoami())
            .arg("apply")
            .arg(format!("{}@127.0.0.1:{port}", sshd::whoami()))
            .arg(&self.new)
            .arg("--config-path")
            .arg(&self.cfg)
            .arg("--identity")
            .arg(&self.key)
            .arg("--known-hosts")
            .arg(&kh)
            .args(["--restart-cmd", restart, "--yes", "--json"])
            .args(extra)
            .stdin(Stdio::null());
        c
    }

    fn leftovers(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.dir)
            .expect("dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "config.yaml" && !n.starts_with("config.yaml.bak-"))
            .collect();
        v.sort();
        v
    }

    fn backups(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .expect("dir")
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("config.yaml.bak-"))
            })
            .collect();
        v.sort();
        v
    }
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

async fn run(c: Command) -> Output {
    let mut c = c;
    tokio::task::spawn_blocking(move || c.output().expect("run"))
        .await
        .expect("join")
}

fn sshd_addr(h: &Host) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], h.sshd.port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_link_cut_or_stalled_mid_upload_leaves_old_bytes_and_nothing_else() {
    if !available() {
        return;
    }
    // Uploads: the lock record, then the 3 MiB config (OpenSSH offers
    // hardlink@openssh.com: the backup is a link, complete before the
    // upload starts): 1.5 MiB in, the upload is cut.
    for brk in [
        Break::CutAfterUpload(1_500_000),
        Break::StallAfterUpload(1_500_000, Duration::from_millis(700)),
    ] {
        let h = host(None, 3 << 20);
        let proxy = Proxy::start(
            sshd_addr(&h),
            ProxyOptions {
                delay: Duration::ZERO,
                first: Some(brk),
            },
        )
        .await
        .expect("proxy");
        let out = run(h.apply(proxy.port(), &[])).await;
        let v = json(&out);
        // The lock, the backup's link and the upload go out in one flight:
        // the cut is noticed by the backup's reply or the upload's,
        // whichever was awaited; nothing was replaced either way.
        let (code, step) = (out.status.code(), v["step"].as_str());
        assert!(
            matches!(
                (code, step),
                (Some(7), Some("write")) | (Some(6), Some("backup"))
            ),
            "{brk:?}: {v}"
        );
        assert_eq!(v["remote_state"].as_str(), Some("old"), "{brk:?}: {v}");
        assert!(
            std::fs::read(&h.cfg).expect("cfg") == h.old_bytes,
            "{brk:?}"
        );
        assert_eq!(
            h.leftovers(),
            Vec::<String>::new(),
            "{brk:?}: temp and lock cleaned"
        );
        let backups = h.backups();
        assert_eq!(backups.len(), 1, "{brk:?}: the backup made first stays");
        assert!(
            std::fs::read(&backups[0]).expect("backup") == h.old_bytes,
            "{brk:?}: the backup holds the old bytes"
        );
        assert_eq!(
            mode_of(&backups[0]),
            mode_of(Path::new(&h.cfg)),
            "{brk:?}: the backup's mode is the config's"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_client_killed_mid_transfer_on_a_slow_link() {
    if !available() {
        return;
    }
    let h = host(None, 3 << 20);
    let proxy = Proxy::start(
        sshd_addr(&h),
        ProxyOptions {
            delay: Duration::from_millis(15),
            first: None,
        },
    )
    .await
    .expect("proxy");
    let mut c = h.apply(proxy.port(), &[]);
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = c.spawn().expect("spawn");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while proxy.uploaded() < 1_500_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "upload never got going"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        std::fs::read(&h.cfg).expect("cfg") == h.old_bytes,
        "old bytes after SIGKILL"
    );
    let left = h.leftovers();
    assert!(
        left.contains(&"config.yaml.swapcfg-lock".to_string()),
        "{left:?}"
    );

    // The dead run's lock names it; --break-lock recovers and removes the
    // dead run's temp files too.
    let out = run(h.apply(h.sshd.port, &[])).await;
    assert_eq!(out.status.code(), Some(5), "{}", json(&out));
    let out = run(h.apply(h.sshd.port, &["--break-lock"])).await;
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v}");
    assert!(std::fs::read(&h.cfg).expect("cfg") == h.new_bytes);
    assert_eq!(h.leftovers(), Vec::<String>::new());
}

/// A 4 MiB tmpfs, where this process may mount one (root with
/// CAP_SYS_ADMIN); `None` (the test skips with a message) elsewhere.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = std::env::temp_dir().join(format!("swapcfg-full-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            Some(Tmpfs(dir))
        } else {
            eprintln!("skipping the real disk-full case: cannot mount a tmpfs here");
            let _ = std::fs::remove_dir(&dir);
            None
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_really_full_disk() {
    if !available() {
        return;
    }
    let Some(fs) = Tmpfs::mount("4m") else {
        return;
    };
    // The 2.2 MB config (its backup is a link: no space) fits; the 2.2 MB
    // temp file beside it does not.
    let h = host(Some(fs.0.join("etc")), 2_200_000);
    let out = run(h.apply(h.sshd.port, &[])).await;
    let v = json(&out);
    assert!(
        matches!(out.status.code(), Some(6) | Some(7)),
        "backup or write refused: {v}"
    );
    assert_eq!(v["remote_state"].as_str(), Some("old"), "{v}");
    assert!(
        v["error"].as_str().unwrap_or("").contains("full disk"),
        "says what a bare SFTP Failure usually means: {v}"
    );
    assert!(std::fs::read(&h.cfg).expect("cfg") == h.old_bytes);
    assert_eq!(h.leftovers(), Vec::<String>::new(), "no temp file, no lock");
    for b in h.backups() {
        assert!(
            std::fs::read(&b).expect("backup") == h.old_bytes,
            "complete backups only"
        );
    }
    drop(h);
    assert!(Path::new(&fs.0).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_fifo_config_is_refused_without_blocking_the_server() {
    if !available() {
        return;
    }
    let h = host(None, 1000);
    std::fs::remove_file(&h.cfg).expect("rm");
    let made = Command::new("mkfifo").arg(&h.cfg).status().expect("mkfifo");
    assert!(made.success());
    let t = std::time::Instant::now();
    let out = run(h.apply(h.sshd.port, &[])).await;
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    let v = json(&out);
    assert_eq!(out.status.code(), Some(4), "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains("FIFO"), "{v}");
    // No sftp-server left blocked on the FIFO.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !h.sshd.session_pids().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "sshd sessions left: {:?}",
            h.sshd.session_pids()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(h.leftovers(), Vec::<String>::new(), "no lock, no temp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_host_that_stops_answering_is_noticed_within_the_keepalive() {
    if !available() {
        return;
    }
    let h = host(None, 3 << 20);
    // Mid-upload the link goes silent for a minute (TCP stays open).
    let proxy = Proxy::start(
        sshd_addr(&h),
        ProxyOptions {
            delay: Duration::ZERO,
            first: Some(Break::StallAfterUpload(1_500_000, Duration::from_secs(60))),
        },
    )
    .await
    .expect("proxy");
    let t = std::time::Instant::now();
    let out = run(h.apply(proxy.port(), &["--keepalive", "2"])).await;
    let took = t.elapsed();
    let v = json(&out);
    assert!(took < Duration::from_secs(10), "noticed in {took:?}: {v}");
    // The backup's link and the upload share a flight: the step named is
    // the one whose reply was awaited when the keepalive gave up.
    let err = v["error"].as_str().unwrap_or("");
    let step = match out.status.code() {
        Some(7) => "write",
        Some(6) => "backup",
        other => panic!("exit {other:?}: {v}"),
    };
    assert!(
        err.contains(&format!("during {step}")) && err.contains("no keepalive for 2 s"),
        "says which operation was waiting and why it gave up: {err}"
    );
    assert_eq!(v["remote_state"].as_str(), Some("old"), "{v}");
    assert!(std::fs::read(&h.cfg).expect("cfg") == h.old_bytes);
    assert_eq!(h.leftovers(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_restart_past_its_timeout_leaves_no_process() {
    if !available() {
        return;
    }
    let h = host(None, 1000);
    let tag = format!("6{}.75", std::process::id() % 1000);
    let mark = h.dir.join("restarted-once");
    let restart = format!(
        "if [ -e '{m}' ]; then exit 0; fi; : > '{m}'; sleep {tag}1 & sleep {tag}2",
        m = mark.display()
    );
    let c = h.apply_with(h.sshd.port, &restart, &["--restart-timeout", "1"]);
    let out = run(c).await;
    let v = json(&out);
    assert_eq!(out.status.code(), Some(8), "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .contains("stopped on the host"),
        "{v}"
    );
    assert!(
        std::fs::read(&h.cfg).expect("cfg") == h.old_bytes,
        "rolled back"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let left: Vec<u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            String::from_utf8_lossy(
                &std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default(),
            )
            .replace('\0', " ")
            .contains(&format!("sleep {tag}"))
        })
        .collect();
    assert_eq!(
        left,
        Vec::<u32>::new(),
        "OpenSSH: the restart's process group was stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_sigint_during_the_health_wait_puts_the_old_config_back() {
    if !available() {
        return;
    }
    let h = host(None, 1000);
    // The new model never appears on the stand-in: health keeps polling.
    let st = swapcfg_testkit::standin::Standin::start(vec!["old".into()], None)
        .await
        .expect("standin");
    let mut c = h.apply(
        h.sshd.port,
        &[
            "--base-url",
            &st.base_url(),
            "--verify-models",
            "--health-attempts",
            "200",
            "--health-delay",
            "0.05",
        ],
    );
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().expect("spawn");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while st.request_count() < 3 {
        assert!(std::time::Instant::now() < deadline, "health never polled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(std::fs::read(&h.cfg).expect("cfg") == h.new_bytes);
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().expect("wait"))
        .await
        .expect("join");
    let v = json(&out);
    assert_eq!(out.status.code(), Some(12), "{v}");
    assert_eq!(v["rolled_back"].as_bool(), Some(true), "{v}");
    assert!(
        std::fs::read(&h.cfg).expect("cfg") == h.old_bytes,
        "old config back"
    );
    assert_eq!(h.leftovers(), Vec::<String>::new(), "no lock, no temp");
}
