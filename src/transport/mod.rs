//! The SSH transport: one russh client session per host.
//!
//! Owns: connecting (one connect timeout covering DNS, TCP, handshake and
//! authentication), authentication (identity file, ssh-agent, default keys),
//! host-key verification against known_hosts (strict / accept-new),
//! keepalives, exec channels with bounded output and a timeout, and opening
//! SFTP channels. All later work on a host is multiplexed over the one
//! [`Session`].
//!
//! * `session.rs`: [`Session`]: connect, exec, SFTP channel, close.
//! * `handler.rs`: the russh client handler (the host-key decision).
//! * `auth.rs`: keys, passphrases and the authentication exchange.
//! * `error.rs`: [`TransportError`], data first; the words say what failed,
//!   never which flag fixes it (the CLI adds that).
//! * `known_hosts.rs`: the OpenSSH-compatible known_hosts reader/writer.
//! * `gate.rs`: the process-group command line and the gate a primed
//!   command waits at on the host (`go`, or `after` a file holds given bytes).
//! * `tcp.rs`: the TCP stream under a session, acknowledging what it reads
//!   at once (sshd's Nagle would otherwise wait on our delayed ACKs).
//! * `jump.rs`: [`connect_via`]: ProxyJump without a process (each hop a
//!   session, the next one riding a `direct-tcpip` channel of the previous).
//!
//! Invariant: this module never spawns a local process, and every await on
//! the network is bounded by a timeout.

pub mod auth;
pub mod channel_io;
mod error;
pub mod gate;
mod handler;
mod jump;
pub mod known_hosts;
mod session;
mod tcp;

use std::path::PathBuf;
use std::time::Duration;

use crate::target::Target;

pub use error::TransportError;
pub use jump::connect_via;
pub use session::Session;

/// What to do with a host key that is not in known_hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyPolicy {
    /// Unknown hosts are refused (default).
    #[default]
    Strict,
    /// Unknown host keys are appended to known_hosts and used; changed keys
    /// are still refused.
    AcceptNew,
}

/// Everything needed to open a [`Session`].
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub target: Target,
    /// When set, only this key is offered.
    pub identity: Option<PathBuf>,
    /// The known_hosts file consulted (and appended to under accept-new).
    pub known_hosts: PathBuf,
    pub host_key_policy: HostKeyPolicy,
    /// TCP connect + handshake + auth budget.
    pub connect_timeout: Duration,
    /// Budget for each later request (SFTP op, exec without its own timeout).
    pub op_timeout: Duration,
    /// A host that answers no keepalive for this long is considered gone.
    pub keepalive: Duration,
}

/// `~/.ssh/known_hosts`.
pub fn default_known_hosts() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
    PathBuf::from(home).join(".ssh").join("known_hosts")
}

/// Output of a command run over an exec channel.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    /// Exit status; `None` when the server sent none (e.g. killed by signal).
    pub status: Option<u32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// True when stdout or stderr was cut at the byte cap.
    pub truncated: bool,
    /// The command was not held at a gate, or its gate let it run (the
    /// gate's line came); otherwise nothing past the gate ran, whatever
    /// the exit status says.
    pub gate_opened: bool,
}

impl HostKeyPolicy {
    /// The policy's name as written in settings.
    pub fn name(self) -> &'static str {
        match self {
            HostKeyPolicy::Strict => "strict",
            HostKeyPolicy::AcceptNew => "accept-new",
        }
    }
}

impl std::str::FromStr for HostKeyPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<HostKeyPolicy, String> {
        match s {
            "strict" => Ok(HostKeyPolicy::Strict),
            "accept-new" => Ok(HostKeyPolicy::AcceptNew),
            other => Err(format!(
                "unknown host-key policy {other:?} (expected strict or accept-new)"
            )),
        }
    }
}
