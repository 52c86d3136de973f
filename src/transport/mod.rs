//! The SSH transport: one russh client session per host.
//!
//! Owns: connecting (with `--connect-timeout` covering DNS, TCP, handshake
//! and authentication), authentication (identity file, ssh-agent, default
//! keys), host-key verification against known_hosts (strict / accept-new),
//! keepalives, exec channels with bounded output and a timeout, and opening
//! SFTP channels. All later work on a host is multiplexed over the one
//! [`Session`].
//!
//! Invariant: this module never spawns a local process, and every await on
//! the network is bounded by a timeout.

pub mod auth;
pub mod known_hosts;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use russh::ChannelMsg;

use crate::target::Target;
use known_hosts::HostKeyStatus;

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

impl ConnectOptions {
    /// Options with the defaults: `~/.ssh/known_hosts`, strict, 10 s / 30 s.
    pub fn new(target: Target) -> Self {
        ConnectOptions {
            target,
            identity: None,
            known_hosts: default_known_hosts(),
            host_key_policy: HostKeyPolicy::Strict,
            connect_timeout: Duration::from_secs(10),
            op_timeout: Duration::from_secs(30),
        }
    }
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
}

/// Why connecting or talking to the host failed, in user words.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot resolve {host}: {message}; check the host name (or use an IP address)")]
    Resolve { host: String, message: String },
    #[error("{target}: connection refused; is sshd running and listening on port {port}?")]
    Refused { target: String, port: u16 },
    #[error("{target}: no answer within {secs} s while {phase}; check the address, VPN or firewall, or raise --connect-timeout")]
    ConnectTimeout {
        target: String,
        phase: &'static str,
        secs: u64,
    },
    #[error("{target}: cannot connect: {message}")]
    Connect { target: String, message: String },
    #[error("{target}: host key is not known ({known_hosts}).\n  Its {key_type} key fingerprint is {fingerprint}.\n  If that is the right host, rerun with --host-key-policy accept-new, or add this line to {known_hosts}:\n  {line}")]
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
    #[error("{target}: no key to offer: pass --identity FILE, start an ssh-agent (SSH_AUTH_SOCK), or create ~/.ssh/id_ed25519")]
    NoKeys { target: String },
    #[error("{target}: authentication as {user:?} rejected (tried {tried}); the server accepts: {methods}. Check --identity and the host's authorized_keys.")]
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
    #[error("{target}: connection lost during {op}: {message}")]
    Disconnected {
        target: String,
        op: String,
        message: String,
    },
    #[error("{target}: the host has no SFTP subsystem; use --mode shell (or --mode wrapper for a forced-command key)")]
    NoSftp { target: String },
    #[error("{target}: the host refused to run a command over exec ({message})")]
    ExecRefused { target: String, message: String },
}

/// What the host-key callback decided, kept for the error message.
#[derive(Debug, Clone)]
enum Verdict {
    Accepted,
    Rejected(HostKeyStatus, PublicKey),
    Io(String),
}

struct ClientHandler {
    host_name: String,
    known_hosts: PathBuf,
    policy: HostKeyPolicy,
    verdict: Arc<Mutex<Option<Verdict>>>,
}

impl client::Handler for ClientHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match server_key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            russh::keys::PublicKeyOrCertificate::Certificate(c) => {
                PublicKey::new(c.public_key().clone(), "")
            }
        };
        let verdict = match known_hosts::check(&self.known_hosts, &self.host_name, &key) {
            Ok(HostKeyStatus::Known) => Verdict::Accepted,
            Ok(HostKeyStatus::Unknown) if self.policy == HostKeyPolicy::AcceptNew => {
                match known_hosts::append(&self.known_hosts, &self.host_name, &key) {
                    Ok(()) => Verdict::Accepted,
                    Err(e) => Verdict::Io(format!("cannot record the new host key: {e}")),
                }
            }
            Ok(status) => Verdict::Rejected(status, key),
            Err(e) => Verdict::Io(e.to_string()),
        };
        let ok = matches!(verdict, Verdict::Accepted);
        if let Ok(mut v) = self.verdict.lock() {
            *v = Some(verdict);
        }
        Ok(ok)
    }
}

/// One authenticated SSH connection to a host. Cheap to share by reference;
/// every channel (SFTP, exec) is multiplexed over it.
pub struct Session {
    handle: Handle<ClientHandler>,
    label: String,
    op_timeout: Duration,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("label", &self.label)
            .finish()
    }
}

fn client_config() -> Arc<client::Config> {
    Arc::new(client::Config {
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 3,
        inactivity_timeout: None,
        nodelay: true,
        ..Default::default()
    })
}

impl Session {
    /// Connect, verify the host key, authenticate; all within
    /// `opts.connect_timeout`.
    pub async fn connect(opts: &ConnectOptions) -> Result<Session, TransportError> {
        let label = opts.target.to_string();
        let phase = Arc::new(Mutex::new("resolving the host name"));
        let secs = opts.connect_timeout.as_secs().max(1);
        match tokio::time::timeout(
            opts.connect_timeout,
            Self::connect_inner(opts, &label, phase.clone()),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(TransportError::ConnectTimeout {
                target: label,
                phase: phase.lock().map(|p| *p).unwrap_or("connecting"),
                secs,
            }),
        }
    }

    async fn connect_inner(
        opts: &ConnectOptions,
        label: &str,
        phase: Arc<Mutex<&'static str>>,
    ) -> Result<Session, TransportError> {
        let set_phase = |p: &'static str| {
            if let Ok(mut g) = phase.lock() {
                *g = p;
            }
        };
        let t = &opts.target;
        let addrs: Vec<_> = tokio::net::lookup_host((t.host.as_str(), t.port))
            .await
            .map_err(|e| TransportError::Resolve {
                host: t.host.clone(),
                message: e.to_string(),
            })?
            .collect();
        set_phase("opening the TCP connection");
        let mut last_err = None;
        let mut stream = None;
        for addr in &addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        let stream = match (stream, last_err) {
            (Some(s), _) => s,
            (None, Some(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(TransportError::Refused {
                    target: label.to_string(),
                    port: t.port,
                })
            }
            (None, e) => {
                return Err(TransportError::Connect {
                    target: label.to_string(),
                    message: e
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| "no address found".into()),
                })
            }
        };
        let _ = stream.set_nodelay(true);
        set_phase("exchanging SSH keys");
        let verdict = Arc::new(Mutex::new(None));
        let handler = ClientHandler {
            host_name: t.known_hosts_name(),
            known_hosts: opts.known_hosts.clone(),
            policy: opts.host_key_policy,
            verdict: verdict.clone(),
        };
        let mut handle = match client::connect_stream(client_config(), stream, handler).await {
            Ok(h) => h,
            Err(e) => {
                let v = verdict.lock().ok().and_then(|v| v.clone());
                return Err(host_key_error(label, opts, v, e));
            }
        };
        set_phase("authenticating");
        authenticate(&mut handle, opts, label).await?;
        Ok(Session {
            handle,
            label: label.to_string(),
            op_timeout: opts.op_timeout,
        })
    }

    /// Run `command` on an exec channel, feeding `stdin` (then EOF) when
    /// given, collecting at most `max_output` bytes of each stream, within
    /// `timeout`.
    pub async fn exec(
        &self,
        command: &str,
        stdin: Option<&[u8]>,
        timeout: Duration,
        max_output: usize,
    ) -> Result<ExecOutput, TransportError> {
        let run = async {
            let mut ch = self
                .handle
                .channel_open_session()
                .await
                .map_err(|e| self.lost("exec", e))?;
            ch.exec(true, command)
                .await
                .map_err(|e| self.lost("exec", e))?;
            if let Some(data) = stdin {
                ch.data(data)
                    .await
                    .map_err(|e| self.lost("exec stdin", e))?;
            }
            ch.eof().await.map_err(|e| self.lost("exec", e))?;
            let mut out = ExecOutput::default();
            while let Some(msg) = ch.wait().await {
                match msg {
                    ChannelMsg::Data { data } => {
                        push_bounded(&mut out.stdout, &data, max_output, &mut out.truncated)
                    }
                    ChannelMsg::ExtendedData { data, ext: 1 } => {
                        push_bounded(&mut out.stderr, &data, max_output, &mut out.truncated)
                    }
                    ChannelMsg::ExitStatus { exit_status } => out.status = Some(exit_status),
                    ChannelMsg::Failure => {
                        return Err(TransportError::ExecRefused {
                            target: self.label.clone(),
                            message: "exec request denied".into(),
                        })
                    }
                    ChannelMsg::Close => break,
                    _ => {}
                }
            }
            Ok(out)
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout {
                target: self.label.clone(),
                op: format!("command {:?}", truncate_for_message(command)),
                secs: timeout.as_secs(),
            }),
        }
    }

    /// Open a channel with the `sftp` subsystem requested; the caller builds
    /// its SFTP client on `channel.into_stream()`.
    pub async fn open_sftp_channel(
        &self,
    ) -> Result<russh::Channel<russh::client::Msg>, TransportError> {
        let open = async {
            let mut ch = self
                .handle
                .channel_open_session()
                .await
                .map_err(|e| self.lost("sftp", e))?;
            ch.request_subsystem(true, "sftp")
                .await
                .map_err(|e| self.lost("sftp", e))?;
            loop {
                match ch.wait().await {
                    Some(ChannelMsg::Success) => return Ok(ch),
                    Some(ChannelMsg::Failure)
                    | Some(ChannelMsg::Close)
                    | Some(ChannelMsg::Eof)
                    | None => {
                        return Err(TransportError::NoSftp {
                            target: self.label.clone(),
                        })
                    }
                    Some(_) => {}
                }
            }
        };
        match tokio::time::timeout(self.op_timeout, open).await {
            Ok(r) => r,
            Err(_) => Err(TransportError::Timeout {
                target: self.label.clone(),
                op: "opening the SFTP subsystem".into(),
                secs: self.op_timeout.as_secs(),
            }),
        }
    }

    /// Budget for each request on this session.
    pub fn op_timeout(&self) -> Duration {
        self.op_timeout
    }

    /// `user@host:port` for messages.
    pub fn label(&self) -> String {
        self.label.clone()
    }

    /// Close the connection politely.
    pub async fn close(self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.handle
                .disconnect(russh::Disconnect::ByApplication, "", "en"),
        )
        .await;
    }

    fn lost(&self, op: &str, e: russh::Error) -> TransportError {
        TransportError::Disconnected {
            target: self.label.clone(),
            op: op.to_string(),
            message: e.to_string(),
        }
    }
}

fn push_bounded(buf: &mut Vec<u8>, data: &[u8], cap: usize, truncated: &mut bool) {
    let room = cap.saturating_sub(buf.len());
    if data.len() > room {
        *truncated = true;
    }
    buf.extend_from_slice(&data[..data.len().min(room)]);
}

fn truncate_for_message(s: &str) -> String {
    let mut out: String = s.chars().take(80).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

fn host_key_error(
    label: &str,
    opts: &ConnectOptions,
    v: Option<Verdict>,
    e: russh::Error,
) -> TransportError {
    let kh = opts.known_hosts.display().to_string();
    match v {
        Some(Verdict::Rejected(HostKeyStatus::Unknown, key)) => TransportError::HostKeyUnknown {
            target: label.to_string(),
            known_hosts: kh,
            key_type: key.algorithm().to_string(),
            fingerprint: known_hosts::fingerprint(&key),
            line: known_hosts::entry_line(&opts.target.known_hosts_name(), &key),
        },
        Some(Verdict::Rejected(HostKeyStatus::Changed { file, line }, key)) => {
            TransportError::HostKeyChanged {
                target: label.to_string(),
                key_type: key.algorithm().to_string(),
                fingerprint: known_hosts::fingerprint(&key),
                file: file.display().to_string(),
                line,
            }
        }
        Some(Verdict::Rejected(HostKeyStatus::Revoked { file, line }, key)) => {
            TransportError::HostKeyRevoked {
                target: label.to_string(),
                fingerprint: known_hosts::fingerprint(&key),
                file: file.display().to_string(),
                line,
            }
        }
        Some(Verdict::Io(message)) => TransportError::KnownHosts { file: kh, message },
        _ => TransportError::Handshake {
            target: label.to_string(),
            message: e.to_string(),
        },
    }
}

/// Offer keys: `--identity` alone when given; else the agent's keys, then
/// the default key files.
async fn authenticate(
    handle: &mut Handle<ClientHandler>,
    opts: &ConnectOptions,
    label: &str,
) -> Result<(), TransportError> {
    let user = opts.target.user.clone();
    let mut tried: Vec<String> = Vec::new();
    let mut methods = String::from("unknown");
    let rsa_hash = match handle.best_supported_rsa_hash().await {
        Ok(Some(h)) => h,           // server-sig-algs told us (None = only ssh-rsa)
        _ => Some(HashAlg::Sha256), // no ext-info: modern default
    };
    let note = |r: &client::AuthResult, methods: &mut String| {
        if let client::AuthResult::Failure {
            remaining_methods, ..
        } = r
        {
            let names: Vec<&str> = remaining_methods.iter().map(<&str>::from).collect();
            *methods = if names.is_empty() {
                "nothing".into()
            } else {
                names.join(",")
            };
        }
    };

    let mut keys: Vec<(String, PrivateKey)> = Vec::new();
    if let Some(path) = &opts.identity {
        let key = auth::load_key(path, auth::PassphraseSource::EnvOrPrompt).map_err(|error| {
            TransportError::Key {
                path: path.display().to_string(),
                error,
            }
        })?;
        keys.push((path.display().to_string(), key));
    } else {
        if let Ok(mut agent) = russh::keys::agent::client::AgentClient::connect_env().await {
            if let Ok(ids) = agent.request_identities().await {
                for id in ids {
                    let russh::keys::agent::AgentIdentity::PublicKey { key, comment } = id else {
                        continue;
                    };
                    let hash = if key.algorithm().is_rsa() {
                        rsa_hash
                    } else {
                        None
                    };
                    tried.push(format!("agent key {comment}"));
                    match handle
                        .authenticate_publickey_with(&user, key, hash, &mut agent)
                        .await
                    {
                        Ok(r) if r.success() => return Ok(()),
                        Ok(r) => note(&r, &mut methods),
                        Err(_) => {}
                    }
                }
            }
        }
        for path in auth::default_key_files() {
            match auth::load_key(&path, auth::PassphraseSource::EnvOrPrompt) {
                Ok(k) => keys.push((path.display().to_string(), k)),
                Err(_) => tried.push(format!("{} (unusable)", path.display())),
            }
        }
    }
    if keys.is_empty() && tried.is_empty() {
        return Err(TransportError::NoKeys {
            target: label.to_string(),
        });
    }
    for (name, key) in keys {
        let hash = if key.algorithm().is_rsa() {
            rsa_hash
        } else {
            None
        };
        tried.push(name);
        let r = handle
            .authenticate_publickey(&user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
            .await
            .map_err(|e| TransportError::Handshake {
                target: label.to_string(),
                message: e.to_string(),
            })?;
        if r.success() {
            return Ok(());
        }
        note(&r, &mut methods);
    }
    Err(TransportError::AuthRejected {
        target: label.to_string(),
        user,
        tried: tried.join(", "),
        methods,
    })
}
