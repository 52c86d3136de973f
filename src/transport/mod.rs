//! The SSH transport: one russh client session per host.
//!
//! Owns: connecting (with `--connect-timeout`), authentication (identity
//! file, ssh-agent, default keys), host-key verification against
//! known_hosts (strict / accept-new), keepalives, exec channels with bounded
//! output and a timeout, and opening SFTP channels. All later work on a host
//! is multiplexed over the one [`Session`].
//!
//! Invariant: this module never spawns a local process.

use std::path::PathBuf;
use std::time::Duration;

use crate::target::Target;

/// What to do with a host key that is not in known_hosts.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
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
    /// `--identity`: when set, only this key is offered.
    pub identity: Option<PathBuf>,
    /// `--known-hosts` (default `~/.ssh/known_hosts`).
    pub known_hosts: PathBuf,
    pub host_key_policy: HostKeyPolicy,
    /// TCP connect + handshake + auth budget.
    pub connect_timeout: Duration,
    /// Budget for each later request (SFTP op, exec without its own timeout).
    pub op_timeout: Duration,
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
}
