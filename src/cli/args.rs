//! The flag surface (clap): what the user typed, before any resolution.
//!
//! Owns: the clap definitions and nothing else. Target flags live in one
//! shared struct, [`TargetArgs`], flattened into every subcommand that talks
//! to a host. Flags whose default may also come from the inventory are
//! `Option`s here; the defaults are applied once, in `settings`.
//!
//! This file depends only on clap and std, so `cargo xtask man` can include
//! it to generate the man page from the same definitions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `swapcfg --version`: the package version and the git commit it was built
/// from (set by build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("SWAPCFG_GIT_COMMIT"),
    ")"
);

/// Safely change llama-swap configuration on remote hosts.
#[derive(Debug, Parser)]
#[command(name = "swapcfg", version = VERSION, about, long_about = None)]
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
    /// Validate, diff, back up, write, restart and health-check a host.
    Apply(ApplyArgs),
    /// Show what `apply` would change, touching nothing (= apply --dry-run).
    Plan(ApplyArgs),
    /// Check that llama-swap answers (/v1/models); show its version and running models.
    Health(HealthArgs),
    /// Fleet drift: per host, the remote config's sha256 against its local
    /// file (in-sync / drifted / missing), health and models (needs --hosts).
    Status(StatusArgs),
    /// List the config's backups on the host.
    Backups(BackupsArgs),
    /// Restore the newest (or a named) backup through the apply pipeline.
    Rollback(RollbackArgs),
    /// Edit the remote config in $VISUAL/$EDITOR, validate, then apply.
    Edit(EditArgs),
    /// Print the forced-command script for a wrapper-mode key (POSIX sh).
    WrapperScript(WrapperScriptArgs),
    /// Run the real pipeline against an embedded sandbox host.
    Demo,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: ShellArg,
}

/// Shells `completions` can generate for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShellArg {
    Bash,
    Zsh,
    Fish,
    Elvish,
    Powershell,
}

/// What to do with a host key that is not in known_hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyArg {
    /// Unknown hosts are refused (default).
    Strict,
    /// Unknown host keys are recorded and used; changed keys are refused.
    AcceptNew,
}

/// How llama-swap picks up a new config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReloadArg {
    /// From the restart command (watch for `none`).
    Auto,
    /// A new process (health and models prove it).
    Restart,
    /// llama-swap runs with -watch-config.
    Watch,
    /// The command makes llama-swap reload (SIGHUP, systemctl reload).
    Signal,
}

/// How swapcfg touches the remote config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// SFTP subsystem (default).
    Sftp,
    /// POSIX shell commands over exec channels (hosts without SFTP).
    Shell,
    /// Verbs to an authorized_keys forced command (see `wrapper-script`).
    Wrapper,
}

/// Flags shared by every subcommand that connects to a host.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Host to connect to: `[user@]host[:port]` (IPv6 in brackets).
    #[arg(
        required_unless_present = "hosts",
        default_value = "",
        hide_default_value = true
    )]
    pub target: String,
    /// Inventory hosts to run on (apply, plan, rollback, get --out, status,
    /// health, backups): `a,b`, `@GROUP`, `@all`; then the one positional
    /// argument is FILE (else each host's `file:`; rollback: BACKUP, with
    /// one host only, else each host's newest).
    #[arg(long, value_name = "SELECTOR")]
    pub hosts: Option<String>,
    /// Fleet: hosts at once.
    #[arg(long, value_name = "N", default_value_t = 8, requires = "hosts")]
    pub parallel: usize,
    /// Fleet: hosts per rolling batch (each batch ends before the next starts).
    #[arg(long, value_name = "N", requires = "hosts")]
    pub serial: Option<usize>,
    /// Fleet: run this many hosts first, alone, before the rest.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "hosts")]
    pub canary: usize,
    /// Fleet: once more hosts failed than this, start no more (the rest are
    /// reported `skipped`).
    #[arg(long, value_name = "N", default_value_t = 0, requires = "hosts")]
    pub max_fail: usize,
    /// Path of the llama-swap config file on the host.
    #[arg(long, value_name = "PATH")]
    pub config_path: Option<String>,
    /// How to reach the file.
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// Private key to offer (only this key is offered when given).
    #[arg(long, short = 'i', value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// known_hosts file (default ~/.ssh/known_hosts).
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// What to do with an unknown host key.
    #[arg(long, value_enum)]
    pub host_key_policy: Option<PolicyArg>,
    /// SSH port (overrides a port in TARGET).
    #[arg(long, short = 'p')]
    pub port: Option<u16>,
    /// Seconds allowed for TCP connect, handshake and authentication [default: 10].
    #[arg(long, value_name = "SECS")]
    pub connect_timeout: Option<u64>,
    /// Seconds of silence (no keepalive answered) after which the host is
    /// considered gone [default: 15].
    #[arg(long, value_name = "SECS")]
    pub keepalive: Option<u64>,
    /// OpenSSH client config read for the host (`none`: skip it)
    /// [default: ~/.ssh/config when it exists].
    #[arg(long, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
    /// Jump hosts, `[user@]host[:port]` comma-separated, each reached through
    /// the one before (as ssh -J; `none` ignores a configured ProxyJump).
    #[arg(long, short = 'J', value_name = "HOPS")]
    pub jump: Option<String>,
    /// Inventory file with `defaults:` and `hosts:` (TARGET may name a host).
    #[arg(long, value_name = "FILE", env = "SWAPCFG_INVENTORY")]
    pub inventory: Option<PathBuf>,
    /// Wrapper mode: write through a seed-style forced command although its
    /// `write` carries no length or checksum (a cut connection can install a
    /// truncated config). Prefer the script `wrapper-script` prints.
    #[arg(long)]
    pub unverified_wrapper_write: bool,
}

/// Flags for the llama-swap service on the host: restart and health.
#[derive(Debug, Clone, Args)]
pub struct ServiceArgs {
    /// Command that restarts llama-swap (`none` when it runs with -watch-config).
    #[arg(long, value_name = "CMD")]
    pub restart_cmd: Option<String>,
    /// Seconds the restart command may take [default: 120].
    #[arg(long, value_name = "SECS")]
    pub restart_timeout: Option<u64>,
    /// llama-swap's base URL, e.g. http://gpu1:8080 (health is skipped without it).
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// Path polled for health [default: /v1/models].
    #[arg(long, value_name = "PATH")]
    pub health_path: Option<String>,
    /// At most N health attempts (default: as many as
    /// --health-timeout-total allows).
    #[arg(long, value_name = "N")]
    pub health_attempts: Option<u32>,
    /// Longest wait between health attempts: they start ~50 ms apart and
    /// double up to this [default: 1].
    #[arg(long, value_name = "SECS")]
    pub health_delay: Option<f64>,
    /// Seconds each health attempt may take [default: 5].
    #[arg(long, value_name = "SECS")]
    pub health_timeout: Option<f64>,
    /// Seconds all health attempts together may take [default: 60].
    #[arg(long, value_name = "SECS")]
    pub health_timeout_total: Option<f64>,
    /// How llama-swap picks up the new config: `restart` (a new process),
    /// `watch` (-watch-config) or `signal` (the restart command sends SIGHUP
    /// or runs `systemctl reload`); with watch and signal the reload is
    /// proven from llama-swap's /logs [default: auto: watch for
    /// `--restart-cmd none`, signal for a command with `reload`, `-HUP`,
    /// `-s HUP`, else restart].
    #[arg(long, value_enum, value_name = "HOW")]
    pub reload: Option<ReloadArg>,
    /// Seconds a reload may take to show in llama-swap's log (at least two
    /// -watch-config intervals) [default: 10].
    #[arg(long, value_name = "SECS")]
    pub reload_timeout: Option<f64>,
    /// Stop before writing when llama-swap is not healthy (by default a
    /// warning: the apply may be the fix).
    #[arg(long)]
    pub require_healthy: bool,
    /// Extra CA certificate(s), PEM, trusted for an https base URL (besides
    /// the system's roots).
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Environment variable holding an API key for llama-swap's apiKeys.
    #[arg(long, value_name = "NAME")]
    pub api_key_env: Option<String>,
    /// Require every listed model of the new config on /v1/models (the
    /// default; kept for old scripts).
    #[arg(long, overrides_with = "no_verify_models")]
    pub verify_models: bool,
    /// Do not require the new config's models on /v1/models.
    #[arg(long)]
    pub no_verify_models: bool,
    /// Validate against this JSON Schema instead of the embedded one.
    #[arg(long, value_name = "SCHEMA.json")]
    pub schema: Option<PathBuf>,
}

/// Flags shared by the commands that change a host.
#[derive(Debug, Clone, Args)]
pub struct ChangeArgs {
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Show secret values (apiKeys, secret env values, …) in diffs instead
    /// of `[redacted hmac:…]` markers.
    #[arg(long)]
    pub show_secrets: bool,
    /// Keep the new config (and the backup) when restart or health fails.
    #[arg(long)]
    pub no_rollback: bool,
    /// After success, delete the oldest backups beyond N.
    #[arg(long, value_name = "N")]
    pub keep_backups: Option<usize>,
    /// Print one JSON object instead of the human report.
    #[arg(long)]
    pub json: bool,
    /// Take the config's lock even when another apply holds it (after
    /// making sure that apply is gone).
    #[arg(long)]
    pub break_lock: bool,
    /// Stop before writing when a host check finds a problem (a missing
    /// model file, a cmd that is not executable, …); default: warn.
    #[arg(long)]
    pub strict_host: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The new config file (with --hosts: given as the first positional, or
    /// each host's inventory `file:`).
    #[arg(required_unless_present = "hosts")]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub service: ServiceArgs,
    #[command(flatten)]
    pub change: ChangeArgs,
    /// Stop after the diff; touch nothing (exit 0 no change, 2 changes pending).
    #[arg(long)]
    pub dry_run: bool,
    /// Apply even when the remote bytes are already identical.
    #[arg(long)]
    pub force: bool,
    /// Refuse unless the remote config has this sha256 (hex).
    #[arg(long, value_name = "HEX")]
    pub expect_sha256: Option<String>,
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub service: ServiceArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// The local file every host is compared with (else each host's
    /// inventory `file:`); with --hosts it is the one positional argument.
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub service: ServiceArgs,
    /// One JSON object per host, then a summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BackupsArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Backup path to restore (default: the newest).
    pub backup: Option<String>,
    #[command(flatten)]
    pub service: ServiceArgs,
    #[command(flatten)]
    pub change: ChangeArgs,
}

#[derive(Debug, Args)]
pub struct EditArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub service: ServiceArgs,
    #[command(flatten)]
    pub change: ChangeArgs,
}

#[derive(Debug, Args)]
pub struct WrapperScriptArgs {
    /// The config file the script owns on the host (absolute).
    #[arg(long, value_name = "PATH")]
    pub config_path: String,
    /// Command the script's `restart` verb runs (omit, or `none`, for a
    /// script without `restart`: llama-swap with -watch-config).
    #[arg(long, value_name = "CMD")]
    pub restart_cmd: Option<String>,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// With --hosts: write each host's config byte-exact to DIR/{host}.yaml.
    #[arg(long, value_name = "DIR", requires = "hosts")]
    pub out: Option<PathBuf>,
    /// With --hosts: one JSON object per host, then a summary.
    #[arg(long, requires = "hosts")]
    pub json: bool,
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
    /// Show secret values instead of redaction markers.
    #[arg(long)]
    pub show_secrets: bool,
}
