//! A real OpenSSH sshd on 127.0.0.1 for end-to-end tests: temp host keys,
//! temp authorized_keys, its own sshd_config; stopped by pid on drop.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SSHD: &str = "/usr/sbin/sshd";

/// None (with a printed reason) where sshd is not installed.
pub fn available() -> bool {
    if Path::new(SSHD).exists() {
        true
    } else {
        eprintln!("skipping e2e: {SSHD} not found (apt-get install openssh-server)");
        false
    }
}

pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub host_pub: String,
    pub known_hosts: PathBuf,
    pub authorized_keys: PathBuf,
    child: Child,
}

pub fn keygen(path: &Path, kind: &str, pass: &str) {
    let mut c = Command::new("ssh-keygen");
    c.args(["-q", "-t", kind, "-N", pass, "-C", "e2e", "-f"])
        .arg(path);
    if kind == "rsa" {
        c.args(["-b", "2048"]);
    }
    let st = c.stdin(Stdio::null()).status().expect("ssh-keygen");
    assert!(st.success(), "ssh-keygen {kind}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

pub struct Options {
    pub sftp: bool,
}

impl Sshd {
    pub fn start(opts: Options) -> Sshd {
        // sshd refuses to start without its privilege-separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let host_key = d.join("host_ed25519");
        keygen(&host_key, "ed25519", "");
        let authorized_keys = d.join("authorized_keys");
        std::fs::write(&authorized_keys, "").expect("authorized_keys");
        let port = free_port();
        let mut cfg = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {ak}\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPidFile {pid}\n\
             LogLevel VERBOSE\nPermitRootLogin yes\n\
             PubkeyAcceptedAlgorithms ssh-ed25519,ecdsa-sha2-nistp256,rsa-sha2-512,rsa-sha2-256\nMaxStartups 100\n",
            hk = host_key.display(),
            ak = authorized_keys.display(),
            pid = d.join("sshd.pid").display(),
        );
        if opts.sftp {
            cfg.push_str("Subsystem sftp internal-sftp\n");
        }
        let cfg_path = d.join("sshd_config");
        std::fs::write(&cfg_path, cfg).expect("sshd_config");
        let log = std::fs::File::create(d.join("sshd.log")).expect("log");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sshd");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not start: {}",
                std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let host_pub = std::fs::read_to_string(d.join("host_ed25519.pub")).expect("host pub");
        let host_pub = host_pub
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let known_hosts = d.join("known_hosts");
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_pub}\n"))
            .expect("known_hosts");
        Sshd {
            dir,
            port,
            host_pub,
            known_hosts,
            authorized_keys,
            child,
        }
    }

    /// Create a client key of `kind` (passphrase `pass`), authorize it with
    /// `options` (e.g. `command="…",restrict`), return its path.
    pub fn client_key(&self, name: &str, kind: &str, pass: &str, options: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        keygen(&p, kind, pass);
        let public = std::fs::read_to_string(p.with_extension("pub")).expect("pub");
        let mut ak = std::fs::read_to_string(&self.authorized_keys).unwrap_or_default();
        if options.is_empty() {
            ak.push_str(&public);
        } else {
            ak.push_str(&format!("{options} {public}"));
        }
        std::fs::write(&self.authorized_keys, ak).expect("authorized_keys");
        p
    }

    pub fn target(&self) -> String {
        format!("{}@127.0.0.1:{}", whoami(), self.port)
    }

    /// pids of sshd processes serving connections (children of the listener).
    pub fn session_pids(&self) -> Vec<i32> {
        let me = self.child.id() as i32;
        let mut out = Vec::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return out;
        };
        for e in dir.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // pid (comm) state ppid ...
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if ppid == Some(me) {
                out.push(pid);
            }
        }
        out
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

pub fn whoami() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "root".into())
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
