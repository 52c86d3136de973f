//! [`TransportError`]: why connecting or talking to the host failed.
//!
//! Each variant carries the data (target, phase, fingerprint, file:line); the
//! message says what happened and what to check on the host. It never names a
//! command-line flag: the CLI layer adds which flag fixes it.

use super::auth;

/// Why connecting or talking to the host failed, in user words.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot resolve {host}: {message}; check the host name (or use an IP address)")]
    Resolve { host: String, message: String },
    #[error("{target}: connection refused; is sshd running and listening on port {port}?")]
    Refused { target: String, port: u16 },
    #[error(
        "{target}: no answer within {secs} s while {phase}; check the address, VPN or firewall"
    )]
    ConnectTimeout {
        target: String,
        phase: &'static str,
        secs: u64,
    },
    #[error("{target}: cannot connect: {message}")]
    Connect { target: String, message: String },
    #[error("{target}: host key is not known ({known_hosts}).\n  Its {key_type} key fingerprint is {fingerprint}.\n  If that is the right host, accept it as new, or add this line to {known_hosts}:\n  {line}")]
    HostKeyUnknown {
        target: String,
        known_hosts: String,
        key_type: String,
        fingerprint: String,
        line: String,
    },
    #[error("{target}: HOST KEY HAS CHANGED; refusing to connect (possible man-in-the-middle).\n  Presented {key_type} key {fingerprint}; the known key is at {file}:{line}.\n  If the host was really reinstalled, remove that line and connect again.")]
    HostKeyChanged {
        target: String,
        key_type: String,
        fingerprint: String,
        file: String,
        line: usize,
    },
    #[error(
        "{target}: host key {fingerprint} is marked @revoked at {file}:{line}; refusing to connect"
    )]
    HostKeyRevoked {
        target: String,
        fingerprint: String,
        file: String,
        line: usize,
    },
    #[error("known_hosts {file}: {message}")]
    KnownHosts { file: String, message: String },
    #[error("key {path}: {error}")]
    Key { path: String, error: auth::KeyError },
    #[error("{target}: no key to offer: no identity file was given, no ssh-agent answers (SSH_AUTH_SOCK), and ~/.ssh has no id_ed25519, id_ecdsa or id_rsa")]
    NoKeys { target: String },
    #[error("{target}: authentication as {user:?} rejected (tried {tried}); the server accepts: {methods}. Check the key offered and the host's authorized_keys.")]
    AuthRejected {
        target: String,
        user: String,
        tried: String,
        methods: String,
    },
    #[error("{target}: SSH handshake failed: {message}")]
    Handshake { target: String, message: String },
    #[error("{target}: {op} timed out after {secs} s; the host stopped answering")]
    Timeout {
        target: String,
        op: String,
        secs: u64,
    },
    #[error("{target}: {command:?} did not finish within {secs} s; {}", if *.stopped { "it was stopped on the host (its whole process group)" } else { "it could NOT be stopped on the host and may still be running" })]
    CommandTimeout {
        target: String,
        command: String,
        secs: f64,
        stopped: bool,
    },
    #[error("{target}: {command:?} was stopped on request; {}", if *.stopped { "its process group on the host was stopped too" } else { "it could NOT be stopped on the host and may still be running" })]
    Cancelled {
        target: String,
        command: String,
        stopped: bool,
    },
    #[error("{target}: connection lost during {op}: {message}")]
    Disconnected {
        target: String,
        op: String,
        message: String,
    },
    #[error("jump host {hop} (hop {index} of {of}): {source}")]
    Jump {
        /// `user@host:port` of the jump host that failed.
        hop: String,
        /// 1-based position in the chain.
        index: usize,
        of: usize,
        source: Box<TransportError>,
    },
    #[error("{via}: the jump host could not open a connection to {to}: {message}")]
    JumpChannel {
        via: String,
        to: String,
        message: String,
    },
    #[error("{target}: the host offers no SFTP subsystem")]
    NoSftp { target: String },
    #[error("{target}: the host refused to run a command over exec ({message})")]
    ExecRefused { target: String, message: String },
}
