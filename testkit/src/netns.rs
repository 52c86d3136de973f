//! Network namespaces in a line, joined by veth pairs, for tests that need a
//! host reachable ONLY through another one (ProxyJump).
//!
//! `Line::new(tag, n)` makes namespaces `ns[0] … ns[n-1]`; link `i` joins
//! `ns[i]` (address `10.99.i.1`) and `ns[i+1]` (`10.99.i.2`), each /24. No
//! namespace forwards packets and none has a default route, so `ns[0]` reaches
//! `ns[1]` only: a connection from `ns[0]` to `ns[2]` fails with "network
//! unreachable". Names carry the process id and a per-test tag, so parallel
//! tests never collide; dropping the `Line` deletes the namespaces (and with
//! them their veth ends).
//!
//! Needs root and iproute2: [`available`] says why not (tests skip then).

use std::process::{Command, Stdio};

/// iproute2's `ip`.
pub const IP: &str = "/usr/sbin/ip";

/// Whether namespaces can be made here (root and `ip`); prints why not.
pub fn available() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    let root = unsafe { libc_geteuid() } == 0;
    if !root {
        eprintln!("skipping: network namespaces need root (id -u is not 0)");
        return false;
    }
    if !std::path::Path::new(IP).exists() {
        eprintln!("skipping: {IP} not found (apt-get install iproute2)");
        return false;
    }
    true
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// Run `ip ARGS`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new(IP)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Namespaces in a line; deleted on drop.
pub struct Line {
    pub names: Vec<String>,
}

impl Line {
    /// `n` namespaces in a line (see the module doc). `tag` tells tests of
    /// one process apart (a short word, letters and digits).
    pub fn new(tag: &str, n: usize) -> Result<Line, String> {
        let pid = std::process::id();
        let mut line = Line { names: Vec::new() };
        for i in 0..n {
            let name = format!("swcfg-{pid}-{tag}-{i}");
            ip(&["netns", "add", &name])?;
            line.names.push(name.clone());
            ip(&["-n", &name, "link", "set", "lo", "up"])?;
        }
        for i in 0..n.saturating_sub(1) {
            // Interface names are at most 15 bytes.
            let a = format!("v{pid}{tag}{i}a");
            let b = format!("v{pid}{tag}{i}b");
            if a.len() > 15 {
                return Err(format!("interface name {a} too long: use a shorter tag"));
            }
            let (na, nb) = (&line.names[i], &line.names[i + 1]);
            ip(&[
                "link", "add", &a, "netns", na, "type", "veth", "peer", "name", &b, "netns", nb,
            ])?;
            ip(&[
                "-n",
                na,
                "addr",
                "add",
                &format!("10.99.{i}.1/24"),
                "dev",
                &a,
            ])?;
            ip(&[
                "-n",
                nb,
                "addr",
                "add",
                &format!("10.99.{i}.2/24"),
                "dev",
                &b,
            ])?;
            ip(&["-n", na, "link", "set", &a, "up"])?;
            ip(&["-n", nb, "link", "set", &b, "up"])?;
        }
        Ok(line)
    }

    /// The address by which `ns[i-1]` reaches `ns[i]` (`i` ≥ 1).
    pub fn addr(i: usize) -> String {
        format!("10.99.{}.2", i - 1)
    }

    /// A command run inside `ns[i]`.
    pub fn command(&self, i: usize, program: &str) -> Command {
        let mut c = Command::new(IP);
        c.args(["netns", "exec", &self.names[i], program]);
        c
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = ip(&["netns", "del", n]);
        }
    }
}
