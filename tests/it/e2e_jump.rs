//! ProxyJump end to end: Debian's sshd in network namespaces joined by veth
//! pairs, so the target is reachable ONLY through the jump host(s); the
//! built `swapcfg` runs in the first namespace with an empty PATH (nothing
//! spawned). Skips with a message without root, iproute2 or sshd; CI runs
//! as root with both installed.
//!
//! Layout (`netns::Line`): ns0 = client, ns1… = jump hosts, last = target;
//! each namespace reaches only its neighbours and none forwards packets.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use swapcfg_testkit::netns::{self, Line};
use swapcfg_testkit::sshd::{self, Options, Sshd};

const PORT: u16 = 2222;
const OLD: &[u8] = b"models:\n  old:\n    cmd: llama-server --port ${PORT} -m /m/old.gguf\n";
const NEW: &[u8] = b"models:\n  new:\n    cmd: llama-server --port ${PORT} -m /m/new.gguf\n";

fn available() -> bool {
    netns::available() && sshd::available()
}

/// A line of namespaces with an sshd in each but the first (the client's).
struct Net {
    servers: Vec<Sshd>,
    /// Dropped last: the namespaces outlive their sshd processes.
    line: Line,
    home: tempfile::TempDir,
}

impl Net {
    fn new(tag: &str, jumps: usize) -> Net {
        let line = Line::new(tag, jumps + 2).expect("namespaces");
        let servers = (1..=jumps + 1)
            .map(|i| {
                Sshd::start_in(Options::default(), &line.names[i], &Line::addr(i), PORT)
                    .expect("sshd in its namespace")
            })
            .collect();
        Net {
            servers,
            line,
            home: tempfile::tempdir().expect("home"),
        }
    }

    fn target(&self) -> &Sshd {
        self.servers.last().expect("target")
    }

    /// known_hosts for every server, as `[addr]:port key`.
    fn known_hosts(&self) -> PathBuf {
        let mut text = String::new();
        for (i, s) in self.servers.iter().enumerate() {
            text.push_str(&format!("[{}]:{PORT} {}\n", Line::addr(i + 1), s.host_pub));
        }
        let p = self.home.path().join("known_hosts");
        std::fs::write(&p, text).expect("known_hosts");
        p
    }

    /// An ssh config: `j1`, `j2`… and `target`, each with its own key;
    /// `target` jumps through all the jump hosts.
    fn ssh_config(&self, known_hosts: &Path) -> PathBuf {
        let mut text = String::new();
        let n = self.servers.len();
        for (i, s) in self.servers.iter().enumerate() {
            let name = if i + 1 == n {
                "target".to_string()
            } else {
                format!("j{}", i + 1)
            };
            let key = s
                .client_key(&format!("k_{name}"), "ed25519", "", "")
                .expect("client key");
            text.push_str(&format!(
                "Host {name}\n  HostName {}\n  Port {PORT}\n  User {}\n  IdentityFile {}\n",
                Line::addr(i + 1),
                sshd::whoami(),
                key.display()
            ));
            if i + 1 == n && n > 1 {
                let hops: Vec<String> = (1..n).map(|j| format!("j{j}")).collect();
                text.push_str(&format!("  ProxyJump {}\n", hops.join(",")));
            }
        }
        text.push_str(&format!(
            "Host *\n  UserKnownHostsFile {}\n  ConnectTimeout 3\n",
            known_hosts.display()
        ));
        let p = self.home.path().join("ssh_config");
        std::fs::write(&p, text).expect("ssh config");
        p
    }

    /// Run swapcfg in the client's namespace, clean environment.
    fn swapcfg(&self, args: &[&str]) -> Output {
        let mut c = self.line.command(0, env!("CARGO_BIN_EXE_swapcfg"));
        c.env_clear()
            .env("HOME", self.home.path())
            .env("USER", sshd::whoami())
            .args(args)
            .stdin(Stdio::null());
        c.output().expect("run swapcfg")
    }

    /// The config file on the target (namespaces share the filesystem).
    fn remote_config(&self) -> String {
        let p = self.target().dir.path().join("config.yaml");
        std::fs::write(&p, OLD).expect("config");
        p.to_str().expect("utf8").to_string()
    }

    fn new_file(&self) -> String {
        let p = self.home.path().join("new.yaml");
        std::fs::write(&p, NEW).expect("new config");
        p.to_str().expect("utf8").to_string()
    }
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout {}\nstderr {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Everything in the config's directory but sshd's own files: no backup,
/// temp file or lock may be left by a refused run.
fn config_dir_entries(s: &Sshd) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(s.dir.path())
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("config.yaml"))
        .collect();
    names.sort();
    names
}

#[test]
fn apply_through_a_bastion_when_the_direct_path_fails() {
    if !available() {
        return;
    }
    let net = Net::new("a", 1);
    let kh = net.known_hosts();
    let cfg_file = net.ssh_config(&kh);
    let ssh_cfg = cfg_file.to_str().expect("utf8");
    let cfg = net.remote_config();
    let new = net.new_file();
    let target_key = net.target().dir.path().join("k_target");
    // The direct path really fails: the client has no route to the target.
    let direct = format!("{}@{}:{PORT}", sshd::whoami(), Line::addr(2));
    let out = net.swapcfg(&[
        "get",
        &direct,
        "--config-path",
        &cfg,
        "--ssh-config",
        "none",
        "--identity",
        target_key.to_str().expect("utf8"),
        "--known-hosts",
        kh.to_str().expect("utf8"),
        "--connect-timeout",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unreachable"),
        "{}",
        text(&out)
    );
    // Through the bastion (ssh config: ProxyJump j1), apply succeeds.
    let out = net.swapcfg(&[
        "apply",
        "target",
        &new,
        "--config-path",
        &cfg,
        "--ssh-config",
        ssh_cfg,
        "--restart-cmd",
        "none",
        "--yes",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(std::fs::read(&cfg).expect("read config"), NEW);
    // `-J` on the command line does the same without a ProxyJump line:
    // the jump host comes from the flag, its key and address from the
    // ssh config's `j1` entry.
    std::fs::write(&cfg, OLD).expect("reset");
    let plain = net.home.path().join("ssh_config_no_jump");
    let no_jump: String = std::fs::read_to_string(&cfg_file)
        .expect("read")
        .lines()
        .filter(|l| !l.contains("ProxyJump"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&plain, no_jump).expect("write");
    let out = net.swapcfg(&[
        "get",
        "target",
        "--config-path",
        &cfg,
        "--ssh-config",
        plain.to_str().expect("utf8"),
        "-J",
        "j1",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(out.stdout, OLD, "byte-exact through the jump");
    // A target the jump host cannot reach: the error names the jump host
    // and where it could not connect to.
    let nowhere = format!("{}@10.99.7.2:{PORT}", sshd::whoami());
    let out = net.swapcfg(&[
        "get",
        &nowhere,
        "--config-path",
        &cfg,
        "--ssh-config",
        plain.to_str().expect("utf8"),
        "-J",
        "j1",
        "--identity",
        target_key.to_str().expect("utf8"),
        "--connect-timeout",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:{PORT}: the jump host could not open a connection to 10.99.7.2:{PORT}",
            Line::addr(1)
        )) && err.contains("AllowTcpForwarding"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_chain_of_two_jumps() {
    if !available() {
        return;
    }
    let net = Net::new("c", 2);
    let kh = net.known_hosts();
    let ssh_cfg = net.ssh_config(&kh);
    let cfg = net.remote_config();
    let new = net.new_file();
    // The client cannot reach the second jump host directly either.
    let out = net.swapcfg(&[
        "get",
        "j2",
        "--config-path",
        &cfg,
        "--ssh-config",
        ssh_cfg.to_str().expect("utf8"),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let out = net.swapcfg(&[
        "apply",
        "target",
        &new,
        "--config-path",
        &cfg,
        "--ssh-config",
        ssh_cfg.to_str().expect("utf8"),
        "--restart-cmd",
        "none",
        "--yes",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(std::fs::read(&cfg).expect("read config"), NEW);
    // Each hop authenticated with its own key (IdentityFile per Host).
    for (i, s) in net.servers.iter().enumerate() {
        assert!(
            s.log().contains("Accepted publickey"),
            "server {i} saw no login: {}",
            s.log()
        );
    }
}

#[test]
fn a_changed_host_key_on_the_jump_host_is_refused_naming_the_hop() {
    if !available() {
        return;
    }
    let net = Net::new("k", 1);
    let kh = net.known_hosts();
    let ssh_cfg = net.ssh_config(&kh);
    let cfg = net.remote_config();
    let new = net.new_file();
    // known_hosts holds another key for the jump host.
    let other = net.home.path().join("other_host_key");
    sshd::keygen(&other, "ed25519", "").expect("keygen");
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).expect("pub");
    let other_pub: Vec<&str> = other_pub.split_whitespace().take(2).collect();
    let text_kh = format!(
        "[{}]:{PORT} {}\n[{}]:{PORT} {}\n",
        Line::addr(1),
        other_pub.join(" "),
        Line::addr(2),
        net.target().host_pub
    );
    std::fs::write(&kh, text_kh).expect("known_hosts");
    let before = config_dir_entries(net.target());
    let out = net.swapcfg(&[
        "apply",
        "target",
        &new,
        "--config-path",
        &cfg,
        "--ssh-config",
        ssh_cfg.to_str().expect("utf8"),
        "--restart-cmd",
        "none",
        "--yes",
        // accept-new never accepts a changed key, on any hop.
        "--host-key-policy",
        "accept-new",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let hop = format!(
        "jump host {}@{}:{PORT} (hop 1 of 1)",
        sshd::whoami(),
        Line::addr(1)
    );
    assert!(err.contains(&hop), "names the hop: {}", text(&out));
    assert!(err.contains("HOST KEY HAS CHANGED"), "{}", text(&out));
    // The target was never reached: same bytes, nothing added beside it.
    assert_eq!(std::fs::read(&cfg).expect("read config"), OLD);
    assert_eq!(config_dir_entries(net.target()), before);
    assert!(
        !net.target().log().contains("Accepted publickey"),
        "the target saw no login: {}",
        net.target().log()
    );
    // known_hosts was not rewritten with the presented key.
    let kh_after = std::fs::read_to_string(&kh).expect("read known_hosts");
    assert_eq!(kh_after.lines().count(), 2, "{kh_after}");
}
