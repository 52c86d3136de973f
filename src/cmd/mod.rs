//! One module per subcommand; each exposes `run(args) -> ExitCode`.
//!
//! Owns: the exit-status table (one code per failing step, documented in the
//! README) and the shared glue from command-line target flags to a
//! connected session.

pub mod apply;
pub mod backups;
pub mod demo;
pub mod diff_files;
pub mod edit;
pub mod get;
pub mod health;
pub mod rollback;
pub mod validate;

use std::time::Duration;

use std::path::PathBuf;

use crate::cli::{Mode, ServiceArgs, TargetArgs};
use crate::health::HealthCheck;
use crate::inventory::Inventory;
use crate::target::Target;
use crate::transport::{default_known_hosts, ConnectOptions, HostKeyPolicy};
use crate::validate::Validator;

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

/// Target flags merged with the inventory (flags win).
#[derive(Debug, Clone)]
pub struct Resolved {
    pub connect: ConnectOptions,
    pub mode: Mode,
    pub config_path: Option<String>,
    pub restart_cmd: Option<String>,
    pub base_url: Option<String>,
    pub api_key_env: Option<String>,
    pub schema: Option<PathBuf>,
}

impl Resolved {
    /// `user@host:port` for messages.
    pub fn host(&self) -> String {
        self.connect.target.to_string()
    }

    /// The config path, or a usage error naming the flag.
    pub fn config_path(&self) -> Result<String, String> {
        if self.config_path.is_none() && self.mode == Mode::Wrapper {
            // The forced command knows its file; this only labels messages.
            return Ok("(wrapper config)".into());
        }
        self.config_path.clone().ok_or_else(|| {
            "--config-path PATH is required (the config file's path on the host), or set config_path in the inventory".into()
        })
    }
}

/// Merge the shared target flags, the service flags and the inventory.
pub fn resolve(args: &TargetArgs, service: Option<&ServiceArgs>) -> Result<Resolved, String> {
    let inv = Inventory::discover(args.inventory.as_deref())?;
    let host = inv
        .as_ref()
        .map(|i| i.resolve(&args.target))
        .unwrap_or_default();
    let address = host.address.clone().unwrap_or_else(|| args.target.clone());
    let mut target = Target::parse(&address)?;
    if let (Some(u), false) = (&host.user, address.contains('@')) {
        target.user = u.clone();
    }
    if let Some(p) = args.port.or(host.port) {
        target.port = p;
    }
    let policy = match (args.host_key_policy, host.host_key_policy.as_deref()) {
        (Some(p), _) => p,
        (None, Some("accept-new")) => HostKeyPolicy::AcceptNew,
        _ => HostKeyPolicy::Strict,
    };
    let mode = match (args.mode, host.mode.as_deref()) {
        (Some(m), _) => m,
        (None, Some("shell")) => Mode::Shell,
        (None, Some("wrapper")) => Mode::Wrapper,
        _ => Mode::Sftp,
    };
    Ok(Resolved {
        connect: ConnectOptions {
            target,
            identity: args.identity.clone().or(host.identity),
            known_hosts: args
                .known_hosts
                .clone()
                .or(host.known_hosts)
                .unwrap_or_else(default_known_hosts),
            host_key_policy: policy,
            connect_timeout: Duration::from_secs(args.connect_timeout.max(1)),
            op_timeout: Duration::from_secs(30),
        },
        mode,
        config_path: args.config_path.clone().or(host.config_path),
        restart_cmd: service
            .and_then(|s| s.restart_cmd.clone())
            .or(host.restart_cmd),
        base_url: service.and_then(|s| s.base_url.clone()).or(host.base_url),
        api_key_env: service
            .and_then(|s| s.api_key_env.clone())
            .or(host.api_key_env),
        schema: service.and_then(|s| s.schema.clone()).or(host.schema),
    })
}

/// The health check for `res`, if a base URL is known. The API key is read
/// from the named environment variable (never from a flag).
pub fn health_check(
    res: &Resolved,
    service: &ServiceArgs,
    expect: Option<Vec<String>>,
) -> Result<Option<HealthCheck>, String> {
    let Some(base) = &res.base_url else {
        return Ok(None);
    };
    let api_key = match &res.api_key_env {
        Some(name) => Some(
            std::env::var(name)
                .map_err(|_| format!("--api-key-env {name}: the variable is not set"))?,
        ),
        None => None,
    };
    let secs = |s: f64| Duration::from_secs_f64(s.clamp(0.0, 3600.0));
    Ok(Some(HealthCheck {
        base_url: base.clone(),
        path: service.health_path.clone(),
        api_key,
        attempts: service.health_attempts.max(1),
        delay: secs(service.health_delay),
        attempt_timeout: secs(service.health_timeout.max(0.1)),
        expect_models: if service.verify_models { expect } else { None },
    }))
}

/// The restart command: wrapper mode uses its own verb; `none` skips.
pub fn restart_command(res: &Resolved) -> Result<Option<String>, String> {
    if res.mode == Mode::Wrapper {
        return Ok(Some("restart".into()));
    }
    match res.restart_cmd.as_deref() {
        Some("none") => Ok(None),
        Some(c) => Ok(Some(c.to_string())),
        None => Err("--restart-cmd CMD is required (e.g. 'systemctl restart llama-swap'), or `none` when llama-swap runs with -watch-config".into()),
    }
}

/// The validator for `res` (embedded schema unless one is configured).
pub fn validator(res: &Resolved) -> Result<Validator, String> {
    match &res.schema {
        Some(p) => Validator::from_schema_file(p).map_err(|e| format!("--schema {e}")),
        None => Ok(Validator::embedded()),
    }
}

/// Build connect options from the shared target flags (no inventory).
pub fn connect_options(args: &TargetArgs) -> Result<ConnectOptions, String> {
    resolve(args, None).map(|r| r.connect)
}

/// The common start of a host command: resolve flags and inventory,
/// require the config path, start a runtime. `Err` is the exit status
/// (the message is already printed).
pub fn setup(
    args: &TargetArgs,
    service: Option<&ServiceArgs>,
) -> Result<(Resolved, String, tokio::runtime::Runtime), std::process::ExitCode> {
    let res = resolve(args, service).map_err(|e| fail(exit::USAGE, e))?;
    let path = res.config_path().map_err(|e| fail(exit::USAGE, e))?;
    let rt = runtime().map_err(|e| fail(exit::USAGE, e))?;
    Ok((res, path, rt))
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
