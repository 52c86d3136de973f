//! Command-line parsing (clap) and dispatch to [`crate::cmd`].
//!
//! Owns: the flag surface. Target flags live in one shared struct,
//! [`TargetArgs`], flattened into every subcommand that talks to a host.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::transport::HostKeyPolicy;

/// Safely change llama-swap configuration on remote hosts.
#[derive(Debug, Parser)]
#[command(name = "swapcfg", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the remote config byte-exact to stdout.
    Get(GetArgs),
    /// Validate config files locally (YAML, JSON Schema, llama-swap rules).
    Validate(ValidateArgs),
    /// Show a unified diff between two local files.
    DiffFiles(DiffFilesArgs),
}

/// How swapcfg touches the remote config file.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// SFTP subsystem (default).
    #[default]
    Sftp,
    /// POSIX shell commands over exec channels (hosts without SFTP).
    Shell,
    /// Fixed verbs `read`, `backup`, `write`, `restart` to a forced command.
    Wrapper,
}

/// Flags shared by every subcommand that connects to a host.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Host to connect to: `[user@]host[:port]` (IPv6 in brackets).
    pub target: String,
    /// Path of the llama-swap config file on the host.
    #[arg(long, value_name = "PATH")]
    pub config_path: Option<String>,
    /// How to reach the file.
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Private key to offer (only this key is offered when given).
    #[arg(long, short = 'i', value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// known_hosts file (default ~/.ssh/known_hosts).
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// What to do with an unknown host key.
    #[arg(long, value_enum)]
    pub host_key_policy: Option<HostKeyPolicy>,
    /// SSH port (overrides a port in TARGET).
    #[arg(long, short = 'p')]
    pub port: Option<u16>,
    /// Seconds allowed for TCP connect, handshake and authentication.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub connect_timeout: u64,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Config files to validate.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Use this JSON Schema (draft-07) instead of the embedded one.
    #[arg(long, value_name = "SCHEMA.json")]
    pub schema: Option<PathBuf>,
    /// Print findings as a JSON array.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DiffFilesArgs {
    pub old: PathBuf,
    pub new: PathBuf,
}

/// Entry point used by `main.rs`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Get(args) => crate::cmd::get::run(args),
        Command::Validate(args) => crate::cmd::validate::run(args),
        Command::DiffFiles(args) => crate::cmd::diff_files::run(args),
    }
}
