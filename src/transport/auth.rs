//! Client keys: loading OpenSSH (and legacy PEM) private keys, passphrases,
//! and the default key list.
//!
//! Invariant: a passphrase is held only as long as decryption needs it and
//! never appears in an error or a log line.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg};

use super::handler::ClientHandler;
use super::{ConnectOptions, TransportError};

/// Environment variable holding the passphrase of an encrypted key.
pub const PASSPHRASE_ENV: &str = "SWAPCFG_KEY_PASSPHRASE";

/// Private key files larger than this are refused.
const MAX_KEY_FILE: u64 = crate::limits::MAX_INVENTORY;

/// Why a key could not be used (never contains the passphrase).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    Unreadable(String),
    NotAKey(String),
    NeedsPassphrase,
    BadPassphrase,
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Unreadable(e) => write!(f, "cannot read the key file: {e}"),
            KeyError::NotAKey(e) => write!(f, "not a usable private key ({e})"),
            KeyError::NeedsPassphrase => write!(
                f,
                "the key is encrypted and no passphrase is available: set {PASSPHRASE_ENV} or run on a terminal"
            ),
            KeyError::BadPassphrase => write!(f, "wrong passphrase for the key (from {PASSPHRASE_ENV} or the prompt)"),
        }
    }
}

/// Where the passphrase for an encrypted key comes from.
pub enum PassphraseSource {
    /// `SWAPCFG_KEY_PASSPHRASE`, else a no-echo prompt when stdin is a TTY.
    EnvOrPrompt,
    /// Never ask: encrypted keys are skipped (used for default keys).
    EnvOnly,
}

/// Load a private key file, decrypting it if needed.
pub fn load_key(path: &Path, source: PassphraseSource) -> Result<PrivateKey, KeyError> {
    let bytes = crate::local::read_bounded(path, MAX_KEY_FILE).map_err(|e| match e {
        crate::local::LocalReadError::Io(e) => KeyError::Unreadable(e.to_string()),
        other => KeyError::NotAKey(format!("{other} for a key file")),
    })?;
    let text = String::from_utf8(bytes).map_err(|_| KeyError::NotAKey("not text".into()))?;
    decode(&text, &path.display().to_string(), source)
}

fn is_encrypted(text: &str) -> bool {
    if let Ok(k) = PrivateKey::from_openssh(text) {
        return k.is_encrypted();
    }
    text.contains("ENCRYPTED")
}

/// Decode key text; `label` names the key in a prompt.
pub fn decode(text: &str, label: &str, source: PassphraseSource) -> Result<PrivateKey, KeyError> {
    if !is_encrypted(text) {
        return russh::keys::decode_secret_key(text, None)
            .map_err(|e| KeyError::NotAKey(e.to_string()));
    }
    let pass = match std::env::var(PASSPHRASE_ENV) {
        Ok(p) => p,
        Err(_) => match source {
            PassphraseSource::EnvOrPrompt if std::io::stdin().is_terminal() => {
                rpassword::prompt_password(format!("Enter passphrase for key {label}: "))
                    .map_err(|_| KeyError::NeedsPassphrase)?
            }
            _ => return Err(KeyError::NeedsPassphrase),
        },
    };
    russh::keys::decode_secret_key(text, Some(&pass)).map_err(|_| KeyError::BadPassphrase)
}

/// `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa`, in that order, that exist.
pub fn default_key_files() -> Vec<PathBuf> {
    let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) else {
        return Vec::new();
    };
    let ssh = PathBuf::from(home).join(".ssh");
    ["id_ed25519", "id_ecdsa", "id_rsa"]
        .iter()
        .map(|n| ssh.join(n))
        .filter(|p| p.is_file())
        .collect()
}

/// Offer keys: the identity file alone when given; else the agent's keys, then
/// the default key files.
pub(super) async fn authenticate(
    handle: &mut Handle<ClientHandler>,
    opts: &ConnectOptions,
    label: &str,
) -> Result<(), TransportError> {
    let user = opts.target.user.clone();
    let mut tried: Vec<String> = Vec::new();
    let mut methods = String::from("unknown");
    let mut unusable: Option<(String, KeyError)> = None;
    let mut agent_offered = 0usize;
    // Asked only when an RSA key is offered: it waits for the server's
    // EXT_INFO, a round trip after the key exchange.
    let mut rsa_hash: Option<Option<HashAlg>> = None;
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
        let key =
            load_key(path, PassphraseSource::EnvOrPrompt).map_err(|error| TransportError::Key {
                path: path.display().to_string(),
                error,
            })?;
        keys.push((path.display().to_string(), key));
    } else {
        if let Ok(mut agent) = russh::keys::agent::client::AgentClient::connect_env().await {
            if let Ok(ids) = agent.request_identities().await {
                for id in ids {
                    let russh::keys::agent::AgentIdentity::PublicKey { key, comment } = id else {
                        continue;
                    };
                    let hash = rsa_hash_for(handle, &mut rsa_hash, key.algorithm().is_rsa()).await;
                    tried.push(format!("agent key {comment}"));
                    agent_offered += 1;
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
        for path in default_key_files() {
            match load_key(&path, PassphraseSource::EnvOrPrompt) {
                Ok(k) => keys.push((path.display().to_string(), k)),
                Err(error) => {
                    tried.push(format!("{} (unusable)", path.display()));
                    unusable.get_or_insert((path.display().to_string(), error));
                }
            }
        }
    }
    // Nothing could be offered at all: say why the key was unusable
    // (e.g. encrypted without a passphrase) rather than "rejected".
    if keys.is_empty() && agent_offered == 0 {
        if let Some((path, error)) = unusable {
            return Err(TransportError::Key { path, error });
        }
    }
    if keys.is_empty() && tried.is_empty() {
        return Err(TransportError::NoKeys {
            target: label.to_string(),
        });
    }
    for (name, key) in keys {
        let hash = rsa_hash_for(handle, &mut rsa_hash, key.algorithm().is_rsa()).await;
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

/// The signature hash for an RSA key (`None` for other keys): what the
/// server's `server-sig-algs` allows, asked once.
async fn rsa_hash_for(
    handle: &Handle<ClientHandler>,
    cache: &mut Option<Option<HashAlg>>,
    is_rsa: bool,
) -> Option<HashAlg> {
    if !is_rsa {
        return None;
    }
    if let Some(h) = cache {
        return *h;
    }
    let h = match handle.best_supported_rsa_hash().await {
        Ok(Some(h)) => h,           // server-sig-algs told us (None = only ssh-rsa)
        _ => Some(HashAlg::Sha256), // no ext-info: modern default
    };
    *cache = Some(h);
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::ssh_key::LineEnding;
    use russh::keys::Algorithm;

    #[test]
    fn plain_and_encrypted_keys() {
        let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
            .unwrap_or_else(|e| panic!("{e}"));
        let plain = key
            .to_openssh(LineEnding::LF)
            .unwrap_or_else(|e| panic!("{e}"));
        let got = decode(&plain, "k", PassphraseSource::EnvOnly).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got.public_key().key_data(), key.public_key().key_data());

        let enc = key
            .encrypt(&mut rand::rng(), "s3cret")
            .and_then(|k| k.to_openssh(LineEnding::LF).map(|s| s.to_string()))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(is_encrypted(&enc));
        // The env var is process-global: this is the only test touching it.
        std::env::remove_var(PASSPHRASE_ENV);
        assert_eq!(
            decode(&enc, "k", PassphraseSource::EnvOnly).err(),
            Some(KeyError::NeedsPassphrase)
        );
        std::env::set_var(PASSPHRASE_ENV, "wrong");
        assert_eq!(
            decode(&enc, "k", PassphraseSource::EnvOnly).err(),
            Some(KeyError::BadPassphrase)
        );
        std::env::set_var(PASSPHRASE_ENV, "s3cret");
        let got = decode(&enc, "k", PassphraseSource::EnvOnly).unwrap_or_else(|e| panic!("{e}"));
        std::env::remove_var(PASSPHRASE_ENV);
        assert_eq!(got.public_key().key_data(), key.public_key().key_data());
        assert!(!KeyError::BadPassphrase.to_string().contains("s3cret"));
        assert!(matches!(
            decode("hello", "k", PassphraseSource::EnvOnly),
            Err(KeyError::NotAKey(_))
        ));
    }
}
