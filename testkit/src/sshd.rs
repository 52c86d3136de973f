//! A real OpenSSH `sshd` on 127.0.0.1 with a temp host key, a temp
//! authorized_keys and its own sshd_config; killed on drop. One harness for
//! the end-to-end tests and `cargo xtask bench` / `dist --check`.
//!
//! Everything returns `Result<_, String>` so the caller decides whether a
//! missing sshd is a skip (tests) or an error (xtask).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's OpenSSH server lives.
pub const SSHD: &str = "/usr/sbin/sshd";

/// Whether sshd is installed (tests skip with a printed reason otherwise).
pub fn available() -> bool {
    if Path::new(SSHD).exists() {
        true
    } else {
        eprintln!("skipping: {SSHD} not found (apt-get install openssh-server)");
        false
    }
}

/// How to configure the server.
#[derive(Debug, Clone)]
pub struct Options {
    /// Offer the `sftp` subsystem (`internal-sftp`).
    pub sftp: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { sftp: true }
    }
}

/// A running sshd.
pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// `type base64` of the host key.
    pub host_pub: String,
    /// A known_hosts file naming this server (`[127.0.0.1]:port`).
    pub known_hosts: PathBuf,
    pub authorized_keys: PathBuf,
    child: Child,
}

/// `ssh-keygen -t kind -N pass -f path` (RSA with 2048 bits).
pub fn keygen(path: &Path, kind: &str, pass: &str) -> Result<(), String> {
    let mut c = Command::new("ssh-keygen");
    c.args(["-q", "-t", kind, "-N", pass, "-C", "swapcfg-test", "-f"])
        .arg(path);
    if kind == "rsa" {
        c.args(["-b", "2048"]);
    }
    let st = c
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("ssh-keygen: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("ssh-keygen -t {kind} failed ({st})"))
    }
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn io(what: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

impl Sshd {
    /// Start sshd and wait until it accepts TCP connections (10 s at most).
    pub fn start(opts: Options) -> Result<Sshd, String> {
        Sshd::start_at(opts, None, "127.0.0.1", free_port()?, "")
    }

    /// [`Sshd::start`] with `extra` appended to its sshd_config (lines, e.g.
    /// `SetEnv SHLVL=1`: Debian's bash, as the login shell of a command
    /// sshd runs, sources `~/.bashrc` unless SHLVL says it is nested; a
    /// benchmark that should not time the machine's own `~/.bashrc` sets it).
    pub fn start_with(opts: Options, extra: &str) -> Result<Sshd, String> {
        Sshd::start_at(opts, None, "127.0.0.1", free_port()?, extra)
    }

    /// Start sshd inside network namespace `netns` (see [`crate::netns`]),
    /// listening on `addr:port` only; wait (10 s at most) until its log says
    /// it listens. `known_hosts` names it as `[addr]:port`.
    pub fn start_in(opts: Options, netns: &str, addr: &str, port: u16) -> Result<Sshd, String> {
        Sshd::start_at(opts, Some(netns), addr, port, "")
    }

    fn start_at(
        opts: Options,
        netns: Option<&str>,
        addr: &str,
        port: u16,
        extra: &str,
    ) -> Result<Sshd, String> {
        if !Path::new(SSHD).exists() {
            return Err(format!("{SSHD} not found (apt-get install openssh-server)"));
        }
        // sshd refuses to start without its privilege-separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let dir = tempfile::tempdir().map_err(io("tempdir"))?;
        let d = dir.path();
        let host_key = d.join("host_ed25519");
        keygen(&host_key, "ed25519", "")?;
        let authorized_keys = d.join("authorized_keys");
        std::fs::write(&authorized_keys, "").map_err(io("authorized_keys"))?;
        let mut cfg = format!(
            "Port {port}\nListenAddress {addr}\nHostKey {hk}\nAuthorizedKeysFile {ak}\nStrictModes no\nUsePAM no\n\
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
        if !extra.is_empty() {
            cfg.push_str(extra.trim_end());
            cfg.push('\n');
        }
        let cfg_path = d.join("sshd_config");
        std::fs::write(&cfg_path, cfg).map_err(io("sshd_config"))?;
        let log = std::fs::File::create(d.join("sshd.log")).map_err(io("sshd.log"))?;
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new(crate::netns::IP);
                c.args(["netns", "exec", ns, SSHD]);
                c
            }
            None => Command::new(SSHD),
        };
        let child = command
            .args(["-D", "-e", "-f"])
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(io("spawning sshd"))?;
        let mut me = Sshd {
            port,
            host_pub: String::new(),
            known_hosts: d.join("known_hosts"),
            authorized_keys,
            child,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let listening = |me: &Sshd| match netns {
            // Not reachable from here: its log says when it listens.
            Some(_) => me.log().contains("Server listening on"),
            None => std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        };
        while !listening(&me) {
            if Instant::now() > deadline {
                return Err(format!("sshd did not start: {}", me.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let host_pub = std::fs::read_to_string(me.dir.path().join("host_ed25519.pub"))
            .map_err(io("host key"))?;
        me.host_pub = host_pub
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        std::fs::write(
            &me.known_hosts,
            format!("[{addr}]:{port} {}\n", me.host_pub),
        )
        .map_err(io("known_hosts"))?;
        Ok(me)
    }

    /// Create a client key of `kind` (passphrase `pass`), authorize it with
    /// `options` (e.g. `command="…",restrict`), return its path.
    pub fn client_key(
        &self,
        name: &str,
        kind: &str,
        pass: &str,
        options: &str,
    ) -> Result<PathBuf, String> {
        let p = self.dir.path().join(name);
        keygen(&p, kind, pass)?;
        let public = std::fs::read_to_string(p.with_extension("pub")).map_err(io("public key"))?;
        let mut ak = std::fs::read_to_string(&self.authorized_keys).unwrap_or_default();
        if !options.is_empty() {
            ak.push_str(options);
            ak.push(' ');
        }
        ak.push_str(&public);
        std::fs::write(&self.authorized_keys, ak).map_err(io("authorized_keys"))?;
        Ok(p)
    }

    /// `user@127.0.0.1:port` for the current user.
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

    /// The listening sshd's pid (its CPU time, and through `cutime` /
    /// `cstime` that of the per-connection processes it reaped, is read
    /// from `/proc/PID/stat` by `cargo xtask bench --fleet`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// sshd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

/// The current user's name (`$USER`, else root).
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
