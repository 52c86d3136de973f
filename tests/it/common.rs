//! Shared fixtures for integration tests: a client key on disk, an
//! in-process SSH server that trusts it, and known_hosts naming the server.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, PrivateKey};
use swapcfg::target::Target;
use swapcfg::transport::{ConnectOptions, HostKeyPolicy, Session};
use swapcfg_testkit::server::{TestServer, TestServerBuilder};

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub key_path: PathBuf,
    pub key: PrivateKey,
    pub known_hosts: PathBuf,
    pub server: TestServer,
}

pub fn new_key() -> PrivateKey {
    PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).expect("key generation")
}

pub fn write_key(dir: &Path, key: &PrivateKey) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("id_test");
    let pem = key.to_openssh(LineEnding::LF).expect("encode key");
    std::fs::write(&path, pem.as_bytes()).expect("write key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
    path
}

/// Start a server (configured by `f`) trusting a fresh client key, with
/// known_hosts already holding the server's key.
pub async fn fixture(f: impl FnOnce(TestServerBuilder) -> TestServerBuilder) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = new_key();
    let key_path = write_key(dir.path(), &key);
    let server = f(TestServerBuilder::new().authorized_key(key.public_key().clone()))
        .start()
        .await
        .expect("start test server");
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(&known_hosts, format!("{}\n", server.known_hosts_line())).expect("known_hosts");
    Fixture {
        dir,
        key_path,
        key,
        known_hosts,
        server,
    }
}

impl Fixture {
    pub fn options(&self) -> ConnectOptions {
        ConnectOptions {
            target: Target {
                user: "tester".into(),
                host: "127.0.0.1".into(),
                port: self.server.port(),
            },
            identity: Some(self.key_path.clone()),
            known_hosts: self.known_hosts.clone(),
            host_key_policy: HostKeyPolicy::Strict,
            connect_timeout: Duration::from_secs(5),
            op_timeout: Duration::from_secs(2),
            keepalive: Duration::from_secs(15),
        }
    }

    pub async fn session(&self) -> Session {
        Session::connect(&self.options())
            .await
            .expect("connect to test server")
    }

    /// A config file in the fixture's directory with `content` and `mode`.
    pub fn config(&self, name: &str, content: &[u8], mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).expect("write config");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod config");
        p
    }

    /// Names in the fixture directory (sorted), to spot temp files/backups.
    pub fn listing(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir.path())
            .expect("read_dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

pub fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o7777
}

pub fn path_str(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}

/// The swapcfg binary with a clean environment for inventory discovery.
pub fn swapcfg_cmd() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_swapcfg"));
    c.stdin(std::process::Stdio::null())
        .env_remove("SWAPCFG_INVENTORY")
        .env("NO_COLOR", "1");
    c
}

impl Fixture {
    /// `swapcfg SUBCOMMAND tester@127.0.0.1 ARGS…` with this fixture's key,
    /// known_hosts and port.
    pub fn cli(&self, args: &[&str]) -> std::process::Command {
        let mut c = swapcfg_cmd();
        c.args(&args[..1])
            .arg("tester@127.0.0.1")
            .args(&args[1..])
            .arg("--identity")
            .arg(&self.key_path)
            .arg("--known-hosts")
            .arg(&self.known_hosts)
            .args(["--port", &self.server.port().to_string()]);
        c
    }
}

/// Run a command off the async runtime (the in-process server keeps
/// serving meanwhile).
pub async fn output(mut c: std::process::Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || c.output().expect("run swapcfg"))
        .await
        .expect("join")
}

/// stdout parsed as one JSON value (panics with stdout and stderr).
pub fn json_of(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// pids of processes whose command line contains `needle`.
pub fn processes_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd)
            .replace('\0', " ")
            .contains(needle)
        {
            out.push(pid);
        }
    }
    out
}

/// Wait (up to 10 s) until no process's command line has held `needle` for
/// 300 ms (a process caught between fork and exec is not missed); what is
/// left then.
pub fn wait_no_process_with(needle: &str) -> Vec<u32> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut quiet_since = None;
    loop {
        let left = processes_with(needle);
        if !left.is_empty() {
            quiet_since = None;
        } else if quiet_since
            .get_or_insert_with(std::time::Instant::now)
            .elapsed()
            > Duration::from_millis(300)
        {
            return left;
        }
        if std::time::Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
