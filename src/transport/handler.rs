//! The russh client handler: decides whether the presented host key is
//! acceptable (known_hosts + policy) and records why, for the error message.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use russh::client;
use russh::keys::PublicKey;

use super::known_hosts::{self, HostKeyStatus};
use super::{ConnectOptions, HostKeyPolicy, TransportError};

/// What the host-key callback decided, kept for the error message.
#[derive(Debug, Clone)]
pub(super) enum Verdict {
    Accepted,
    Rejected(HostKeyStatus, PublicKey),
    Io(String),
}

pub(super) struct ClientHandler {
    pub(super) host_name: String,
    pub(super) known_hosts: PathBuf,
    pub(super) policy: HostKeyPolicy,
    pub(super) verdict: Arc<Mutex<Option<Verdict>>>,
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

/// The error for a handshake that failed, using the handler's verdict.
pub(super) fn host_key_error(
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
