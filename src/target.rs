//! Parsing of SSH-style targets: `[user@]host[:port]`, IPv6 in brackets.
//!
//! Owns: [`Target`] and its parser. Invariant: a parsed target always has a
//! non-empty host, a user and a port (defaults filled in by the caller's
//! context: local user, port 22).

/// Where to connect, as the user wrote it (`[user@]host[:port]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub user: String,
    /// Host name or IP address, without brackets.
    pub host: String,
    pub port: u16,
}
