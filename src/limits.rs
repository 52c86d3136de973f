//! Every bound and default budget swapcfg applies, defined once.
//!
//! Owns: the numbers. The layers import them; the CLI's help texts and the
//! README quote them.

use std::time::Duration;

/// Largest config file (local or remote, and every backup) read or sent.
pub const MAX_CONFIG: usize = 16 * 1024 * 1024;

/// Bytes kept of each of stdout and stderr of a remote command (restart,
/// wrapper verbs other than `read`).
pub const MAX_COMMAND_OUTPUT: usize = 64 * 1024;

/// Bytes of a backup listing read from the host.
pub const MAX_LISTING: usize = 1024 * 1024;

/// Budget for each remote request (SFTP operation, exec without its own
/// timeout) once connected.
pub const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// Default budget for DNS + TCP + handshake + authentication.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default time after which a silent host (no keepalive answered) is gone.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// Default budget for the restart command.
pub const RESTART_TIMEOUT: Duration = Duration::from_secs(120);

/// Largest inventory, private key or known_hosts file read.
pub const MAX_INVENTORY: u64 = 1024 * 1024;
