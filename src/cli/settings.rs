//! Resolved settings: flags > inventory host > inventory defaults > built-in
//! defaults, parsed once into typed values.
//!
//! Owns: the precedence and the defaults. Nothing after this module looks at
//! a flag or an inventory entry; the commands receive a [`Settings`] (one
//! per host) and a [`Change`] (one per invocation).

use std::path::PathBuf;
use std::time::Duration;

use swapcfg::health::HealthCheck;
use swapcfg::inventory::{HostSettings, Inventory};
use swapcfg::limits;
use swapcfg::reload::ReloadMode;
use swapcfg::remote::Mode;
use swapcfg::target::Target;
use swapcfg::transport::{default_known_hosts, ConnectOptions, HostKeyPolicy};
use swapcfg::validate::Validator;

use super::args::{ChangeArgs, ModeArg, PolicyArg, ReloadArg, ServiceArgs, TargetArgs};
use super::ssh_config::{SshConfig, SshHost};

const HEALTH_PATH: &str = "/v1/models";
/// The first wait after a restart; later waits double up to the cap.
const HEALTH_FIRST_DELAY: Duration = Duration::from_millis(50);
const HEALTH_DELAY: Duration = Duration::from_secs(1);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
const HEALTH_TIMEOUT_TOTAL: Duration = Duration::from_secs(60);
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// What to run after the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restart {
    /// Run this command (in wrapper mode: send the `restart` verb).
    Command(String),
    /// `none`: llama-swap reloads by itself (`-watch-config`).
    Skip,
    /// Not configured (an error for commands that change the host).
    Unset,
}

/// The API key for llama-swap, read once from the named variable.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub env: String,
    pub value: String,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey(${}, <redacted>)", self.env)
    }
}

/// How health is checked (when a base URL is known).
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub base_url: Option<String>,
    pub path: String,
    /// At most this many attempts (`None`: the total deadline decides).
    pub attempts: Option<u32>,
    /// The longest wait between attempts (they start at 50 ms and double).
    pub delay: Duration,
    pub attempt_timeout: Duration,
    /// Every attempt and wait of one check together.
    pub total_timeout: Duration,
    pub verify_models: bool,
    /// How llama-swap picks up the config (resolved, never "auto").
    pub reload: ReloadMode,
    /// How long a reload may take to show in llama-swap's log.
    pub reload_timeout: Duration,
    /// Stop before writing when the pre-flight check is not healthy.
    pub require_healthy: bool,
    pub api_key: Option<ApiKey>,
    /// Extra trusted CA certificates (PEM bytes, read once).
    pub ca_pem: Option<Vec<u8>>,
    /// Where they came from (for the precedence test and messages).
    pub ca_cert: Option<PathBuf>,
}

/// Everything one host command needs, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub connect: ConnectOptions,
    /// Jump hosts in order (the first is reached directly, each next one
    /// through the one before, the target through the last).
    pub jumps: Vec<ConnectOptions>,
    pub mode: Mode,
    pub config_path: Option<String>,
    pub restart: Restart,
    pub restart_timeout: Duration,
    pub health: Health,
    pub schema: Option<PathBuf>,
    /// Wrapper mode: write through a seed-style forced command anyway.
    pub unverified_wrapper_write: bool,
    /// Inventory `strict_host` (`--strict-host` also turns it on).
    pub strict_host: bool,
}

/// Per-invocation choices of the commands that change a host.
#[derive(Debug, Clone, Copy, Default)]
pub struct Change {
    pub yes: bool,
    pub no_rollback: bool,
    pub keep_backups: Option<usize>,
    pub json: bool,
    pub break_lock: bool,
    pub show_secrets: bool,
    pub strict_host: bool,
}

impl From<&ChangeArgs> for Change {
    fn from(a: &ChangeArgs) -> Change {
        Change {
            yes: a.yes,
            no_rollback: a.no_rollback,
            keep_backups: a.keep_backups,
            json: a.json,
            break_lock: a.break_lock,
            show_secrets: a.show_secrets,
            strict_host: a.strict_host,
        }
    }
}

/// The reload mode a restart setting implies (`none`: watch).
fn implied_reload(restart: &Restart) -> ReloadMode {
    match restart {
        Restart::Command(c) => ReloadMode::implied_by(Some(c)),
        Restart::Skip => ReloadMode::Watch,
        Restart::Unset => ReloadMode::Restart,
    }
}

/// Jump hosts followed at most (a longer chain is a usage error).
pub const MAX_HOPS: usize = 8;

/// Whether `[user@]host[:port]` writes a port.
fn port_written(address: &str) -> bool {
    let rest = address.rsplit_once('@').map_or(address, |(_, r)| r);
    if rest.starts_with('[') {
        rest.contains("]:")
    } else {
        rest.matches(':').count() == 1
    }
}

/// `a,b` (or `none`) as hops; `ssh://` prefixes dropped.
fn split_hops(s: &str) -> Vec<String> {
    if s.trim().eq_ignore_ascii_case("none") {
        return Vec::new();
    }
    s.split(',')
        .map(|h| h.trim().trim_start_matches("ssh://").to_string())
        .filter(|h| !h.is_empty())
        .collect()
}

fn proxy_command_refused(file: &str, host: &str, cmd: &str) -> String {
    let shown: String = cmd.chars().take(60).collect();
    format!(
        "ssh config {file}: host {host:?} uses ProxyCommand ({shown:?}); swapcfg never runs a local command to reach a host. Use ProxyJump (or --jump HOPS), or --ssh-config none"
    )
}

/// How to reach one jump host: its own ssh config entry (HostName, User,
/// Port, IdentityFile, UserKnownHostsFile, StrictHostKeyChecking,
/// ConnectTimeout), a user or port written in the hop winning; the
/// connection flags (`--known-hosts`, `--host-key-policy`,
/// `--connect-timeout`) beat the hop's ssh config, except that the hop's own
/// `IdentityFile` beats `--identity` (a key is per host); what is set by
/// neither comes from the target's resolved settings. A hop's own ProxyJump
/// is not followed.
fn jump_options(
    hop: &str,
    args: &TargetArgs,
    to: &ConnectOptions,
    ssh: Option<&SshConfig>,
) -> Result<ConnectOptions, String> {
    let hop = hop.trim_start_matches("ssh://");
    let mut target = Target::parse(hop).map_err(|e| format!("jump host {e}"))?;
    let sc = match ssh {
        Some(c) => c.lookup(&target.host, &target.user)?,
        None => SshHost::default(),
    };
    if let Some(cmd) = &sc.proxy_command {
        let file = ssh
            .map(|c| c.path.display().to_string())
            .unwrap_or_default();
        return Err(proxy_command_refused(&file, &target.host, cmd));
    }
    if let Some(h) = &sc.host_name {
        target.host = Target::parse(h)
            .map_err(|e| format!("ssh config HostName {e}"))?
            .host;
    }
    if !hop.contains('@') {
        if let Some(u) = &sc.user {
            target.user = u.clone();
        }
    }
    if !port_written(hop) {
        if let Some(p) = sc.port {
            target.port = p;
        }
    }
    Ok(ConnectOptions {
        target,
        // A key is per host: the hop's own IdentityFile wins over --identity.
        identity: sc
            .identity
            .or(args.identity.clone())
            .or(to.identity.clone()),
        known_hosts: args
            .known_hosts
            .clone()
            .or(sc.known_hosts)
            .unwrap_or_else(|| to.known_hosts.clone()),
        host_key_policy: match args.host_key_policy {
            Some(PolicyArg::Strict) => HostKeyPolicy::Strict,
            Some(PolicyArg::AcceptNew) => HostKeyPolicy::AcceptNew,
            None => sc.host_key_policy.unwrap_or(to.host_key_policy),
        },
        connect_timeout: args
            .connect_timeout
            .map(Duration::from_secs)
            .or(sc.connect_timeout)
            .unwrap_or(to.connect_timeout)
            .max(Duration::from_secs(1)),
        op_timeout: to.op_timeout,
        keepalive: to.keepalive,
    })
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(if s.is_finite() {
        s.clamp(0.0, 86_400.0)
    } else {
        0.0
    })
}

/// A base URL as llama-swap serves it: `http://` or `https://`, a host, a
/// port from 1 to 65535 if given, no `user:password@`, no query or fragment.
/// Checked before anything touches the host.
pub fn check_base_url(url: &str) -> Result<String, String> {
    let bad = |why: &str| format!("--base-url {url:?}: {why}");
    let lower = url.to_ascii_lowercase();
    let rest = if let Some(r) = lower.strip_prefix("http://") {
        &url[url.len() - r.len()..]
    } else if let Some(r) = lower.strip_prefix("https://") {
        &url[url.len() - r.len()..]
    } else {
        return Err(bad("must start with http:// or https://"));
    };
    if url.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(bad("contains spaces or control characters"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err("--base-url: user:password@ is not allowed in the URL (it would be echoed); llama-swap takes an API key: --api-key-env NAME".to_string());
    }
    if rest.contains(['?', '#']) {
        return Err(bad("must not have a query or fragment"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("unclosed [ in the host"))?;
        match after {
            "" => (h, None),
            p => (
                h,
                Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
            ),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    if let Some(p) = port {
        match p.parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) && !p.starts_with('+') => {}
            _ => return Err(bad("the port must be a number from 1 to 65535")),
        }
    }
    Ok(url.trim_end_matches('/').to_string())
}

impl Settings {
    /// Find the inventory (flag, `$SWAPCFG_INVENTORY`, default places) and
    /// the ssh config (`--ssh-config`, `~/.ssh/config`), and resolve.
    /// `service` is `None` for commands that neither restart nor check
    /// health (the API key variable is then not read).
    pub fn resolve(args: &TargetArgs, service: Option<&ServiceArgs>) -> Result<Settings, String> {
        if args.hosts.is_some() {
            return Err("--hosts works with apply, plan, rollback, get --out, status, health and backups; this command takes one TARGET".into());
        }
        let inv = Inventory::discover(args.inventory.as_deref())?;
        let ssh = SshConfig::discover(args.ssh_config.as_deref())?;
        Settings::resolve_full(args, service, inv.as_ref(), ssh.as_ref(), &|name| {
            std::env::var(name).ok()
        })
    }

    /// [`Settings::resolve`] with the inventory and the environment given
    /// (no ssh config).
    #[cfg(test)]
    pub fn resolve_with(
        args: &TargetArgs,
        service: Option<&ServiceArgs>,
        inv: Option<&Inventory>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, String> {
        Settings::resolve_full(args, service, inv, None, env)
    }

    /// [`Settings::resolve`] with the inventory, the ssh config and the
    /// environment given. Connection settings: flags > inventory host > ssh
    /// config > inventory defaults > built-in defaults.
    pub fn resolve_full(
        args: &TargetArgs,
        service: Option<&ServiceArgs>,
        inv: Option<&Inventory>,
        ssh: Option<&SshConfig>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, String> {
        let (inv_host, inv_defaults) = match inv {
            Some(i) => i.layers(&args.target),
            None => (
                HostSettings {
                    address: Some(args.target.clone()),
                    ..Default::default()
                },
                HostSettings::default(),
            ),
        };
        let host: HostSettings = inv_host.clone().over(&inv_defaults);
        let address = host.address.clone().unwrap_or_else(|| args.target.clone());
        let mut target = Target::parse(&address)?;
        // The host name as typed (TARGET or the inventory's address) is what
        // the ssh config's `Host` patterns see, as `ssh ADDRESS` would.
        let sc = match ssh {
            Some(c) => c.lookup(&target.host, &target.user)?,
            None => SshHost::default(),
        };
        let sc_path = || {
            ssh.map(|c| c.path.display().to_string())
                .unwrap_or_default()
        };
        if let Some(h) = &sc.host_name {
            target.host = Target::parse(h)
                .map_err(|e| format!("ssh config {}: HostName {e}", sc_path()))?
                .host;
        }
        if !address.contains('@') {
            if let Some(u) = inv_host
                .user
                .clone()
                .or(sc.user.clone())
                .or(inv_defaults.user.clone())
            {
                target.user = u;
            }
        }
        let port = args.port.or(if port_written(&address) {
            Some(target.port)
        } else {
            inv_host.port.or(sc.port).or(inv_defaults.port)
        });
        if let Some(p) = port {
            if p == 0 {
                return Err("--port must be from 1 to 65535".into());
            }
            target.port = p;
        }
        let policy = match args.host_key_policy {
            Some(PolicyArg::Strict) => HostKeyPolicy::Strict,
            Some(PolicyArg::AcceptNew) => HostKeyPolicy::AcceptNew,
            None => inv_host
                .host_key_policy
                .or(sc.host_key_policy)
                .or(inv_defaults.host_key_policy)
                .unwrap_or_default(),
        };
        let mode = match args.mode {
            Some(ModeArg::Sftp) => Mode::Sftp,
            Some(ModeArg::Shell) => Mode::Shell,
            Some(ModeArg::Wrapper) => Mode::Wrapper,
            None => host.mode.unwrap_or_default(),
        };
        let connect_timeout = args
            .connect_timeout
            .map(Duration::from_secs)
            .or(inv_host.connect_timeout)
            .or(sc.connect_timeout)
            .or(inv_defaults.connect_timeout)
            .unwrap_or(limits::CONNECT_TIMEOUT)
            .max(Duration::from_secs(1));
        let keepalive = args
            .keepalive
            .map(Duration::from_secs)
            .or(inv_host.keepalive)
            .or(sc.keepalive)
            .or(inv_defaults.keepalive)
            .unwrap_or(limits::KEEPALIVE)
            .max(Duration::from_secs(1));
        let ssh_identity = sc.identity.clone().or_else(|| {
            // IdentitiesOnly without IdentityFile: ssh offers its default
            // key files and not the agent's keys.
            sc.identities_only
                .then(|| {
                    swapcfg::transport::auth::default_key_files()
                        .into_iter()
                        .next()
                })
                .flatten()
        });
        let identity = args
            .identity
            .clone()
            .or(inv_host.identity.clone())
            .or(ssh_identity)
            .or(inv_defaults.identity.clone());
        let known_hosts = args
            .known_hosts
            .clone()
            .or(inv_host.known_hosts.clone())
            .or(sc.known_hosts.clone())
            .or(inv_defaults.known_hosts.clone())
            .unwrap_or_else(default_known_hosts);
        let jump_over = args
            .jump
            .as_deref()
            .map(split_hops)
            .or(inv_host.proxy_jump.clone());
        if let (Some(cmd), None) = (&sc.proxy_command, &jump_over) {
            return Err(proxy_command_refused(&sc_path(), &target.host, cmd));
        }
        let hops = jump_over
            .or(sc.proxy_jump.clone())
            .or(inv_defaults.proxy_jump.clone())
            .unwrap_or_default();
        if hops.len() > MAX_HOPS {
            return Err(format!(
                "{} jump hosts: at most {MAX_HOPS} are followed",
                hops.len()
            ));
        }
        let connect = ConnectOptions {
            target,
            identity,
            known_hosts,
            host_key_policy: policy,
            connect_timeout,
            op_timeout: limits::OP_TIMEOUT,
            keepalive,
        };
        let jumps = hops
            .iter()
            .map(|hop| jump_options(hop, args, &connect, ssh))
            .collect::<Result<Vec<_>, String>>()?;
        let s = service;
        let restart_cmd = s.and_then(|s| s.restart_cmd.clone()).or(host.restart_cmd);
        let restart = match (restart_cmd.as_deref(), mode) {
            (Some("none"), _) => Restart::Skip,
            (Some(c), _) => Restart::Command(c.to_string()),
            (None, Mode::Wrapper) => Restart::Command("restart".into()),
            (None, _) => Restart::Unset,
        };
        let reload = match s.and_then(|s| s.reload) {
            Some(ReloadArg::Restart) => ReloadMode::Restart,
            Some(ReloadArg::Watch) => ReloadMode::Watch,
            Some(ReloadArg::Signal) => ReloadMode::Signal,
            Some(ReloadArg::Auto) => implied_reload(&restart),
            None => host.reload.unwrap_or_else(|| implied_reload(&restart)),
        };
        let api_key_env = s.and_then(|s| s.api_key_env.clone()).or(host.api_key_env);
        let api_key = match (service, api_key_env) {
            (Some(_), Some(name)) => {
                let value = env(&name)
                    .ok_or_else(|| format!("--api-key-env {name}: the variable is not set"))?;
                if value.is_empty() || !value.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
                    return Err(format!(
                        "--api-key-env {name}: the value is empty or holds spaces or control characters (CR, LF, …), so it cannot be sent as an HTTP header; check the variable"
                    ));
                }
                Some(ApiKey { value, env: name })
            }
            _ => None,
        };
        let ca_cert = s.and_then(|s| s.ca_cert.clone()).or(host.ca_cert);
        let ca_pem = match (&ca_cert, service) {
            (Some(p), Some(_)) => Some(
                swapcfg::local::read_bounded(p, limits::MAX_INVENTORY)
                    .map_err(|e| format!("--ca-cert {}: {e}", p.display()))?,
            ),
            _ => None,
        };
        let base_url = s
            .and_then(|s| s.base_url.clone())
            .or(host.base_url)
            .map(|u| check_base_url(&u))
            .transpose()?;
        Ok(Settings {
            connect,
            jumps,
            mode,
            config_path: args.config_path.clone().or(host.config_path),
            restart,
            restart_timeout: s
                .and_then(|s| s.restart_timeout)
                .map(Duration::from_secs)
                .or(host.restart_timeout)
                .unwrap_or(limits::RESTART_TIMEOUT)
                .max(Duration::from_secs(1)),
            health: Health {
                base_url,
                path: s
                    .and_then(|s| s.health_path.clone())
                    .or(host.health_path)
                    .unwrap_or_else(|| HEALTH_PATH.into()),
                attempts: s
                    .and_then(|s| s.health_attempts)
                    .or(host.health_attempts)
                    .map(|n| n.max(1)),
                delay: s
                    .and_then(|s| s.health_delay)
                    .map(secs)
                    .or(host.health_delay)
                    .unwrap_or(HEALTH_DELAY),
                attempt_timeout: s
                    .and_then(|s| s.health_timeout)
                    .map(secs)
                    .or(host.health_timeout)
                    .unwrap_or(HEALTH_TIMEOUT)
                    .max(Duration::from_millis(100)),
                total_timeout: s
                    .and_then(|s| s.health_timeout_total)
                    .map(secs)
                    .or(host.health_timeout_total)
                    .unwrap_or(HEALTH_TIMEOUT_TOTAL)
                    .max(Duration::from_millis(100)),
                verify_models: match s {
                    Some(s) if s.no_verify_models => false,
                    Some(s) if s.verify_models => true,
                    _ => host.verify_models.unwrap_or(true),
                },
                reload,
                reload_timeout: s
                    .and_then(|s| s.reload_timeout)
                    .map(secs)
                    .or(host.reload_timeout)
                    .unwrap_or(RELOAD_TIMEOUT)
                    .max(Duration::from_millis(100)),
                require_healthy: s.is_some_and(|s| s.require_healthy)
                    || host.require_healthy.unwrap_or(false),
                api_key,
                ca_pem,
                ca_cert,
            },
            schema: s.and_then(|s| s.schema.clone()).or(host.schema),
            unverified_wrapper_write: args.unverified_wrapper_write,
            strict_host: host.strict_host.unwrap_or(false),
        })
    }

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

    /// The restart command for the pipeline (`None` = skip), or a usage
    /// error when none is configured.
    pub fn restart_command(&self) -> Result<Option<String>, String> {
        match &self.restart {
            Restart::Command(c) => Ok(Some(c.clone())),
            Restart::Skip => Ok(None),
            Restart::Unset => Err("--restart-cmd CMD is required (e.g. 'systemctl restart llama-swap'), or `none` when llama-swap runs with -watch-config".into()),
        }
    }

    /// The health check, if a base URL is known; `expect` are the models
    /// that must be listed when model verification is on.
    pub fn health_check(&self, expect: Option<Vec<String>>) -> Option<HealthCheck> {
        let h = &self.health;
        Some(HealthCheck {
            base_url: h.base_url.clone()?,
            path: h.path.clone(),
            api_key: h.api_key.as_ref().map(|k| k.value.clone()),
            max_attempts: h.attempts,
            first_delay: HEALTH_FIRST_DELAY.min(h.delay),
            max_delay: h.delay,
            total_timeout: h.total_timeout,
            attempt_timeout: h.attempt_timeout,
            expect_models: if h.verify_models { expect } else { None },
            ca_pem: h.ca_pem.clone(),
        })
    }

    /// How long this apply may hold the config's lock: every budget it can
    /// spend (restart twice, health twice) plus five minutes for the person
    /// at the confirmation prompt and the transfers.
    pub fn lock_lease(&self) -> Duration {
        let h = &self.health;
        let health = h.total_timeout + h.reload_timeout;
        (self.restart_timeout + health) * 2 + Duration::from_secs(300)
    }

    /// The validator (embedded schema unless one is configured).
    pub fn validator(&self) -> Result<Validator, String> {
        match &self.schema {
            Some(p) => Validator::from_schema_file(p).map_err(|e| format!("--schema {e}")),
            None => Ok(Validator::embedded()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn target(t: &str) -> TargetArgs {
        TargetArgs {
            target: t.into(),
            config_path: None,
            mode: None,
            identity: None,
            known_hosts: None,
            host_key_policy: None,
            port: None,
            connect_timeout: None,
            keepalive: None,
            ssh_config: None,
            jump: None,
            hosts: None,
            parallel: 8,
            serial: None,
            canary: 0,
            max_fail: 0,
            inventory: None,
            unverified_wrapper_write: false,
        }
    }

    fn service() -> ServiceArgs {
        ServiceArgs {
            restart_cmd: None,
            restart_timeout: None,
            base_url: None,
            health_path: None,
            health_attempts: None,
            health_delay: None,
            health_timeout: None,
            health_timeout_total: None,
            reload: None,
            reload_timeout: None,
            require_healthy: false,
            api_key_env: None,
            verify_models: false,
            no_verify_models: false,
            schema: None,
            ca_cert: None,
        }
    }

    /// An inventory whose defaults set every setting to `d`-values and whose
    /// host `h` sets every setting to `h`-values (`other` sets none).
    const INV: &str = "\
defaults:
  user: duser
  port: 2201
  strict_host: true
  identity: /d/id
  known_hosts: /d/kh
  host_key_policy: strict
  mode: shell
  config_path: /d/config.yaml
  restart_cmd: d-restart
  base_url: http://d:8080
  api_key_env: D_KEY
  schema: /d/schema.json
  connect_timeout: 11
  restart_timeout: 21
  health_path: /d/health
  health_attempts: 3
  health_delay: 0.5
  health_timeout: 1.5
  verify_models: false
  health_timeout_total: 31
  reload: signal
  reload_timeout: 7
  require_healthy: false
  keepalive: 9
  proxy_jump: djump
hosts:
  h:
    address: 10.0.0.9
    user: huser
    port: 2202
    strict_host: false
    identity: /h/id
    known_hosts: /h/kh
    host_key_policy: accept-new
    mode: wrapper
    config_path: /h/config.yaml
    restart_cmd: h-restart
    base_url: http://h:8080
    api_key_env: H_KEY
    schema: /h/schema.json
    connect_timeout: 12
    restart_timeout: 22
    health_path: /h/health
    health_attempts: 4
    health_delay: 0.25
    health_timeout: 2.5
    verify_models: true
    health_timeout_total: 32
    reload: watch
    reload_timeout: 8
    require_healthy: true
    keepalive: 8
    proxy_jump: hjump1,hjump2
  other: {}
";

    fn env(name: &str) -> Option<String> {
        Some(format!("value-of-{name}"))
    }

    fn resolve(t: &TargetArgs, s: &ServiceArgs) -> Settings {
        let inv = Inventory::parse(Path::new("inv.yaml"), INV).unwrap_or_else(|e| panic!("{e}"));
        Settings::resolve_with(t, Some(s), Some(&inv), &env).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn host_overrides_defaults_for_every_setting() {
        let h = resolve(&target("h"), &service());
        let d = resolve(&target("other"), &service());
        assert_eq!(h.connect.target.host, "10.0.0.9");
        assert_eq!(d.connect.target.host, "other");
        assert_eq!(
            (
                h.connect.target.user.as_str(),
                d.connect.target.user.as_str()
            ),
            ("huser", "duser")
        );
        assert_eq!((h.connect.target.port, d.connect.target.port), (2202, 2201));
        assert_eq!(h.connect.identity.as_deref(), Some(Path::new("/h/id")));
        assert_eq!(d.connect.identity.as_deref(), Some(Path::new("/d/id")));
        assert_eq!(
            (
                h.connect.known_hosts.as_path(),
                d.connect.known_hosts.as_path()
            ),
            (Path::new("/h/kh"), Path::new("/d/kh"))
        );
        assert_eq!(
            (h.connect.host_key_policy, d.connect.host_key_policy),
            (HostKeyPolicy::AcceptNew, HostKeyPolicy::Strict)
        );
        assert_eq!((h.mode, d.mode), (Mode::Wrapper, Mode::Shell));
        assert_eq!(
            (h.config_path.as_deref(), d.config_path.as_deref()),
            (Some("/h/config.yaml"), Some("/d/config.yaml"))
        );
        assert_eq!(
            (h.restart.clone(), d.restart.clone()),
            (
                Restart::Command("h-restart".into()),
                Restart::Command("d-restart".into())
            )
        );
        assert_eq!(
            (h.health.base_url.as_deref(), d.health.base_url.as_deref()),
            (Some("http://h:8080"), Some("http://d:8080"))
        );
        assert_eq!(
            (
                h.health.api_key.as_ref().map(|k| k.env.as_str()),
                d.health.api_key.as_ref().map(|k| k.value.as_str())
            ),
            (Some("H_KEY"), Some("value-of-D_KEY"))
        );
        assert_eq!(
            (h.schema.as_deref(), d.schema.as_deref()),
            (
                Some(Path::new("/h/schema.json")),
                Some(Path::new("/d/schema.json"))
            )
        );
        assert_eq!(
            (h.connect.connect_timeout, d.connect.connect_timeout),
            (Duration::from_secs(12), Duration::from_secs(11))
        );
        assert_eq!(
            (h.restart_timeout, d.restart_timeout),
            (Duration::from_secs(22), Duration::from_secs(21))
        );
        assert_eq!(
            (h.health.path.as_str(), d.health.path.as_str()),
            ("/h/health", "/d/health")
        );
        assert_eq!((h.health.attempts, d.health.attempts), (Some(4), Some(3)));
        assert_eq!(
            (h.health.delay, d.health.delay),
            (Duration::from_millis(250), Duration::from_millis(500))
        );
        assert_eq!(
            (h.health.attempt_timeout, d.health.attempt_timeout),
            (Duration::from_millis(2500), Duration::from_millis(1500))
        );
        assert_eq!(
            (h.health.verify_models, d.health.verify_models),
            (true, false)
        );
        assert_eq!((h.strict_host, d.strict_host), (false, true));
        assert_eq!(
            (h.health.total_timeout, d.health.total_timeout),
            (Duration::from_secs(32), Duration::from_secs(31))
        );
        assert_eq!(
            (h.health.reload, d.health.reload),
            (ReloadMode::Watch, ReloadMode::Signal)
        );
        assert_eq!(
            (h.health.reload_timeout, d.health.reload_timeout),
            (Duration::from_secs(8), Duration::from_secs(7))
        );
        assert_eq!(
            (h.health.require_healthy, d.health.require_healthy),
            (true, false)
        );
    }

    #[test]
    fn reload_mode_and_model_check_flags() {
        let mut s = service();
        s.health_timeout_total = Some(2.5);
        s.reload = Some(ReloadArg::Restart);
        s.reload_timeout = Some(0.5);
        s.require_healthy = true;
        s.no_verify_models = true;
        let r = resolve(&target("h"), &s);
        assert_eq!(r.health.total_timeout, Duration::from_millis(2500));
        assert_eq!(r.health.reload, ReloadMode::Restart);
        assert_eq!(r.health.reload_timeout, Duration::from_millis(500));
        assert!(r.health.require_healthy && !r.health.verify_models);
        // auto: from the restart command, over the inventory's choice.
        let mut s = service();
        s.reload = Some(ReloadArg::Auto);
        s.restart_cmd = Some("none".into());
        assert_eq!(resolve(&target("h"), &s).health.reload, ReloadMode::Watch);
        s.restart_cmd = Some("sudo systemctl reload llama-swap".into());
        assert_eq!(resolve(&target("h"), &s).health.reload, ReloadMode::Signal);
        // Without an inventory: implied by the command.
        let mut s = service();
        s.restart_cmd = Some("none".into());
        let r = Settings::resolve_with(&target("gpu"), Some(&s), None, &env)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.health.reload, ReloadMode::Watch);
        assert!(r.health.verify_models);
        // The health check starts at 50 ms and doubles up to --health-delay.
        let mut s = service();
        s.base_url = Some("http://g:8080".into());
        s.health_delay = Some(0.02);
        let r = Settings::resolve_with(&target("gpu"), Some(&s), None, &env)
            .unwrap_or_else(|e| panic!("{e}"));
        let hc = r.health_check(Some(vec!["m".into()])).expect("check");
        assert_eq!(
            (hc.first_delay, hc.max_delay),
            (Duration::from_millis(20), Duration::from_millis(20))
        );
        assert_eq!(hc.expect_models, Some(vec!["m".to_string()]));
    }

    #[test]
    fn flags_override_host_for_every_setting() {
        let mut t = target("h");
        t.config_path = Some("/f/config.yaml".into());
        t.mode = Some(ModeArg::Sftp);
        t.identity = Some("/f/id".into());
        t.known_hosts = Some("/f/kh".into());
        t.host_key_policy = Some(PolicyArg::Strict);
        t.port = Some(2203);
        t.connect_timeout = Some(13);
        let mut s = service();
        s.restart_cmd = Some("f-restart".into());
        s.restart_timeout = Some(23);
        s.base_url = Some("http://f:8080".into());
        s.health_path = Some("/f/health".into());
        s.health_attempts = Some(5);
        s.health_delay = Some(0.125);
        s.health_timeout = Some(3.5);
        s.health_timeout_total = Some(4.5);
        s.reload = Some(ReloadArg::Signal);
        s.reload_timeout = Some(6.5);
        s.require_healthy = true;
        s.api_key_env = Some("F_KEY".into());
        s.schema = Some("/f/schema.json".into());
        let r = resolve(&t, &s);
        assert_eq!(r.connect.target.port, 2203);
        assert_eq!(r.connect.identity.as_deref(), Some(Path::new("/f/id")));
        assert_eq!(r.connect.known_hosts, Path::new("/f/kh"));
        assert_eq!(r.connect.host_key_policy, HostKeyPolicy::Strict);
        assert_eq!(r.mode, Mode::Sftp);
        assert_eq!(r.config_path.as_deref(), Some("/f/config.yaml"));
        assert_eq!(r.restart, Restart::Command("f-restart".into()));
        assert_eq!(r.health.base_url.as_deref(), Some("http://f:8080"));
        assert_eq!(
            r.health.api_key.as_ref().map(|k| k.env.as_str()),
            Some("F_KEY")
        );
        assert_eq!(r.schema.as_deref(), Some(Path::new("/f/schema.json")));
        assert_eq!(r.connect.connect_timeout, Duration::from_secs(13));
        assert_eq!(r.restart_timeout, Duration::from_secs(23));
        assert_eq!(r.health.path, "/f/health");
        assert_eq!(r.health.attempts, Some(5));
        assert_eq!(r.health.delay, Duration::from_millis(125));
        assert_eq!(r.health.attempt_timeout, Duration::from_millis(3500));
        assert_eq!(r.health.total_timeout, Duration::from_millis(4500));
        assert_eq!(r.health.reload, ReloadMode::Signal);
        assert_eq!(r.health.reload_timeout, Duration::from_millis(6500));
        assert!(r.health.require_healthy);
        // A user in TARGET wins over the inventory's user.
        let r = resolve(&target("bob@other"), &service());
        assert_eq!(r.connect.target.user, "bob");
    }

    /// An ssh config setting every connection setting to `s`-values for
    /// every host, with `StrictHostKeyChecking` = `policy`.
    fn ssh_config(dir: &Path, policy: &str) -> SshConfig {
        let id = dir.join("s_id");
        std::fs::write(&id, "key").unwrap_or_else(|e| panic!("{e}"));
        let text = format!(
            "Host other\n  HostName 10.9.9.9\nHost *\n  User suser\n  Port 2209\n  IdentityFile {}\n  UserKnownHostsFile /s/kh\n  StrictHostKeyChecking {policy}\n  ConnectTimeout 19\n  ServerAliveInterval 6\n  ProxyJump sjump\n",
            id.display()
        );
        SshConfig::parse(&dir.join("ssh_config"), text.as_bytes(), None)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn resolve_ssh(t: &TargetArgs, with_inv: bool, ssh: &SshConfig) -> Result<Settings, String> {
        let inv = Inventory::parse(Path::new("inv.yaml"), INV).unwrap_or_else(|e| panic!("{e}"));
        Settings::resolve_full(
            t,
            Some(&service()),
            with_inv.then_some(&inv),
            Some(ssh),
            &env,
        )
    }

    #[test]
    fn ssh_config_sits_between_inventory_host_and_defaults() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let yes = ssh_config(dir.path(), "yes");
        let new = ssh_config(dir.path(), "accept-new");
        let ok = |r: Result<Settings, String>| r.unwrap_or_else(|e| panic!("{e}"));
        // Inventory host over ssh config.
        let h = ok(resolve_ssh(&target("h"), true, &yes));
        assert_eq!(h.connect.target.user, "huser");
        assert_eq!(h.connect.target.port, 2202);
        assert_eq!(h.connect.identity.as_deref(), Some(Path::new("/h/id")));
        assert_eq!(h.connect.known_hosts, Path::new("/h/kh"));
        assert_eq!(h.connect.host_key_policy, HostKeyPolicy::AcceptNew);
        assert_eq!(h.connect.connect_timeout, Duration::from_secs(12));
        assert_eq!(h.connect.keepalive, Duration::from_secs(8));
        let hops: Vec<_> = h.jumps.iter().map(|j| j.target.host.as_str()).collect();
        assert_eq!(hops, ["hjump1", "hjump2"]);
        // ssh config over inventory defaults.
        let o = ok(resolve_ssh(&target("other"), true, &new));
        assert_eq!(o.connect.target.host, "10.9.9.9", "HostName");
        assert_eq!(o.connect.target.user, "suser");
        assert_eq!(o.connect.target.port, 2209);
        assert_eq!(o.connect.identity, Some(dir.path().join("s_id")));
        assert_eq!(o.connect.known_hosts, Path::new("/s/kh"));
        assert_eq!(o.connect.host_key_policy, HostKeyPolicy::AcceptNew);
        assert_eq!(o.connect.connect_timeout, Duration::from_secs(19));
        assert_eq!(o.connect.keepalive, Duration::from_secs(18));
        let hops: Vec<_> = o.jumps.iter().map(|j| j.target.to_string()).collect();
        assert_eq!(hops, ["suser@sjump:2209"], "hops get their own ssh config");
        // Without the ssh config, the defaults again.
        let d = resolve(&target("other"), &service());
        assert_eq!(
            (d.connect.target.host.as_str(), d.connect.target.port),
            ("other", 2201)
        );
        assert_eq!(d.connect.keepalive, Duration::from_secs(9));
        assert_eq!(d.jumps.len(), 1);
        assert_eq!(d.jumps[0].target.host, "djump");
        // ssh config over built-in defaults (no inventory).
        let b = ok(resolve_ssh(&target("plain"), false, &yes));
        assert_eq!(
            (b.connect.target.user.as_str(), b.connect.target.port),
            ("suser", 2209)
        );
        assert_eq!(b.connect.host_key_policy, HostKeyPolicy::Strict);
    }

    #[test]
    fn flags_override_ssh_config() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let ssh = ssh_config(dir.path(), "accept-new");
        let mut t = target("fred@other:2299");
        t.identity = Some("/f/id".into());
        t.known_hosts = Some("/f/kh".into());
        t.host_key_policy = Some(PolicyArg::Strict);
        t.connect_timeout = Some(13);
        t.keepalive = Some(14);
        t.jump = Some("ops@j1:2022,j2".into());
        let r = resolve_ssh(&t, false, &ssh).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.connect.target.to_string(), "fred@10.9.9.9:2299");
        assert_eq!(r.connect.identity.as_deref(), Some(Path::new("/f/id")));
        assert_eq!(r.connect.known_hosts, Path::new("/f/kh"));
        assert_eq!(r.connect.host_key_policy, HostKeyPolicy::Strict);
        assert_eq!(r.connect.connect_timeout, Duration::from_secs(13));
        assert_eq!(r.connect.keepalive, Duration::from_secs(14));
        // The hops: written user/port win, then the hop's ssh config; the
        // connection flags apply to every hop.
        let hops: Vec<_> = r.jumps.iter().map(|j| j.target.to_string()).collect();
        assert_eq!(hops, ["ops@j1:2022", "suser@j2:2209"]);
        for j in &r.jumps {
            assert_eq!(j.identity, Some(dir.path().join("s_id")), "a hop's own key");
            assert_eq!(j.known_hosts, Path::new("/f/kh"));
            assert_eq!(j.host_key_policy, HostKeyPolicy::Strict);
            assert_eq!(j.connect_timeout, Duration::from_secs(13));
        }
        t.jump = Some("none".into());
        let r = resolve_ssh(&t, false, &ssh).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            r.jumps.is_empty(),
            "--jump none drops the configured ProxyJump"
        );
    }

    #[test]
    fn proxy_command_is_refused_unless_a_jump_overrides_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let ssh = SshConfig::parse(
            &dir.path().join("cfg"),
            b"Host gpu\n  ProxyCommand ssh -W %h:%p bastion\n",
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let e = resolve_ssh(&target("gpu"), false, &ssh)
            .err()
            .unwrap_or_default();
        assert!(
            e.contains("ProxyCommand") && e.contains("never runs a local command"),
            "{e}"
        );
        let mut t = target("gpu");
        t.jump = Some("b".into());
        let r = resolve_ssh(&t, false, &ssh).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.jumps.len(), 1);
        // A jump host using ProxyCommand is refused too.
        t = target("x");
        t.jump = Some("gpu".into());
        assert!(resolve_ssh(&t, false, &ssh).is_err());
        t.jump = Some("a,b,c,d,e,f,g,h,i".into());
        let e = resolve_ssh(&t, false, &ssh).err().unwrap_or_default();
        assert!(e.contains("at most 8"), "{e}");
    }

    #[test]
    fn built_in_defaults_without_inventory() {
        let r = Settings::resolve_with(&target("gpu"), Some(&service()), None, &env)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.mode, Mode::Sftp);
        assert_eq!(r.connect.host_key_policy, HostKeyPolicy::Strict);
        assert_eq!(r.connect.connect_timeout, limits::CONNECT_TIMEOUT);
        assert_eq!(r.restart_timeout, limits::RESTART_TIMEOUT);
        assert_eq!(r.restart, Restart::Unset);
        assert_eq!(r.health.path, HEALTH_PATH);
        assert_eq!(
            (
                r.health.attempts,
                r.health.delay,
                r.health.attempt_timeout,
                r.health.total_timeout
            ),
            (None, HEALTH_DELAY, HEALTH_TIMEOUT, HEALTH_TIMEOUT_TOTAL)
        );
        assert!(r.health.verify_models, "the model check is on by default");
        assert!(r.health.api_key.is_none() && !r.health.require_healthy);
        assert_eq!(
            (r.health.reload, r.health.reload_timeout),
            (ReloadMode::Restart, RELOAD_TIMEOUT)
        );
    }

    #[test]
    fn base_urls_are_checked_before_connecting() {
        for ok in [
            "http://gpu1:8080",
            "https://gpu1:8443/",
            "http://10.0.0.5:8080/prefix",
            "http://[::1]:8080",
            "HTTP://gpu1",
        ] {
            assert!(check_base_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ftp://x",
            "gpu1:8080",
            "http://h:70000",
            "http://h:0",
            "http://h:",
            "http://h:8a",
            "http://user:pw@h:8080",
            "http://:8080",
            "http://h:8080/?x=1",
            "http://h\r\n:8080",
            "http://[::1",
        ] {
            assert!(check_base_url(bad).is_err(), "{bad}");
        }
        let e = check_base_url("http://user:pw@h:8080")
            .err()
            .unwrap_or_default();
        assert!(!e.contains("pw"), "userinfo never echoed: {e}");
        let mut s = service();
        s.base_url = Some("http://h:70000".into());
        assert!(Settings::resolve_with(&target("gpu"), Some(&s), None, &env).is_err());
    }

    #[test]
    fn api_key_values_must_be_header_safe() {
        let mut s = service();
        s.api_key_env = Some("K".into());
        let e = Settings::resolve_with(&target("gpu"), Some(&s), None, &|_| {
            Some("sk-1\r\nX: y".into())
        })
        .err()
        .unwrap_or_default();
        assert!(e.contains("--api-key-env K") && !e.contains("sk-1"), "{e}");
    }

    #[test]
    fn restart_none_and_wrapper() {
        let mut s = service();
        s.restart_cmd = Some("none".into());
        let mut t = target("gpu");
        t.mode = Some(ModeArg::Wrapper);
        let r = Settings::resolve_with(&t, Some(&s), None, &env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.restart_command(), Ok(None), "wrapper mode honours `none`");
        let r = Settings::resolve_with(&t, Some(&service()), None, &env)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.restart_command(), Ok(Some("restart".into())));
    }

    #[test]
    fn unset_key_variable_and_port_zero_are_usage_errors() {
        let mut s = service();
        s.api_key_env = Some("NOPE".into());
        let e = Settings::resolve_with(&target("gpu"), Some(&s), None, &|_| None).err();
        assert!(e.is_some_and(|e| e.contains("NOPE")));
        let mut t = target("gpu");
        t.port = Some(0);
        assert!(Settings::resolve_with(&t, None, None, &env).is_err());
    }
}
