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

/// Why connecting or talking to the host failed, in user words.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("{0}")]
    Other(String),
}

/// One authenticated SSH connection to a host. Cheap to share by reference;
/// every channel (SFTP, exec) is multiplexed over it.
pub struct Session {
    _private: (),
}

impl Session {
    /// Connect, verify the host key, authenticate.
    pub async fn connect(_opts: &ConnectOptions) -> Result<Session, TransportError> {
        Err(TransportError::Other(
            "transport not implemented yet".into(),
        ))
    }

    /// Run `command` on an exec channel, feeding `stdin` (then EOF) when
    /// given, collecting at most `max_output` bytes of each stream, within
    /// `timeout`.
    pub async fn exec(
        &self,
        _command: &str,
        _stdin: Option<&[u8]>,
        _timeout: Duration,
        _max_output: usize,
    ) -> Result<ExecOutput, TransportError> {
        Err(TransportError::Other(
            "transport not implemented yet".into(),
        ))
    }

    /// Open a channel with the `sftp` subsystem requested; the caller builds
    /// its SFTP client on `channel.into_stream()`.
    pub async fn open_sftp_channel(
        &self,
    ) -> Result<russh::Channel<russh::client::Msg>, TransportError> {
        Err(TransportError::Other(
            "transport not implemented yet".into(),
        ))
    }

    /// Budget for each request on this session.
    pub fn op_timeout(&self) -> Duration {
        Duration::from_secs(30)
    }

    /// `user@host:port` for messages.
    pub fn label(&self) -> String {
        String::new()
    }
}
