//! One module per subcommand; each exposes `run(args) -> ExitCode`.
//!
//! Owns: the exit-status table (one code per failing step, documented in the
//! README) and the shared glue from command-line target flags to a
//! connected session.

pub mod diff_files;
pub mod get;
pub mod validate;

use std::time::Duration;

use crate::cli::TargetArgs;
use crate::target::Target;
use crate::transport::{default_known_hosts, ConnectOptions};

/// Exit statuses, one per failing step.
pub mod exit {
    pub const OK: u8 = 0;
    pub const INVALID: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const CONNECT: u8 = 3;
    pub const READ: u8 = 4;
    pub const CONFLICT: u8 = 5;
    pub const BACKUP: u8 = 6;
    pub const WRITE: u8 = 7;
    pub const RESTART: u8 = 8;
    pub const HEALTH: u8 = 9;
    pub const ROLLBACK_FAILED: u8 = 10;
    pub const ABORTED: u8 = 11;
}

/// Build connect options from the shared target flags.
pub fn connect_options(args: &TargetArgs) -> Result<ConnectOptions, String> {
    let mut target = Target::parse(&args.target)?;
    if let Some(p) = args.port {
        target.port = p;
    }
    Ok(ConnectOptions {
        target,
        identity: args.identity.clone(),
        known_hosts: args.known_hosts.clone().unwrap_or_else(default_known_hosts),
        host_key_policy: args.host_key_policy.unwrap_or_default(),
        connect_timeout: Duration::from_secs(args.connect_timeout.max(1)),
        op_timeout: Duration::from_secs(30),
    })
}

/// A current-thread tokio runtime for one command.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// Print `swapcfg: error: …` on stderr and return `code`.
pub fn fail(code: u8, message: impl std::fmt::Display) -> std::process::ExitCode {
    eprintln!("swapcfg: error: {message}");
    std::process::ExitCode::from(code)
}
