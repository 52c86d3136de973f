//! The inventory file: `defaults:` and named `hosts:` carrying target flags.
//!
//! Owns: finding the file (`--inventory`, `$SWAPCFG_INVENTORY`,
//! `./swapcfg.yaml`, `$XDG_CONFIG_HOME/swapcfg/inventory.yaml`), parsing it
//! with the positioned YAML reader (errors carry `file:line:column`), and
//! merging host settings over defaults. Every value is parsed here, once,
//! into its type (mode, host-key policy, port, seconds); command-line flags
//! override both (done by the caller).
//!
//! Architecture invariant: the inventory knows setting names as they are
//! written in the file, never command-line flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::remote::Mode;
use crate::transport::HostKeyPolicy;

use crate::validate::yaml::{self, Kind, Node};

use crate::limits::MAX_INVENTORY;

const KEYS: &[&str] = &[
    "address",
    "port",
    "user",
    "identity",
    "known_hosts",
    "host_key_policy",
    "mode",
    "config_path",
    "restart_cmd",
    "base_url",
    "api_key_env",
    "schema",
    "connect_timeout",
    "restart_timeout",
    "health_path",
    "health_attempts",
    "health_delay",
    "health_timeout",
    "verify_models",
    "ca_cert",
    "health_timeout_total",
    "reload",
    "reload_timeout",
    "require_healthy",
    "strict_host",
    "proxy_jump",
    "keepalive",
    "file",
];

/// Settings for one host; every field optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostSettings {
    pub address: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub identity: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub host_key_policy: Option<HostKeyPolicy>,
    pub mode: Option<Mode>,
    pub config_path: Option<String>,
    pub restart_cmd: Option<String>,
    pub base_url: Option<String>,
    pub api_key_env: Option<String>,
    pub schema: Option<PathBuf>,
    pub connect_timeout: Option<Duration>,
    pub restart_timeout: Option<Duration>,
    pub health_path: Option<String>,
    pub health_attempts: Option<u32>,
    pub health_delay: Option<Duration>,
    pub health_timeout: Option<Duration>,
    pub verify_models: Option<bool>,
    pub ca_cert: Option<PathBuf>,
    pub health_timeout_total: Option<Duration>,
    /// How llama-swap picks up the config (`None`: implied by restart_cmd).
    pub reload: Option<crate::reload::ReloadMode>,
    pub reload_timeout: Option<Duration>,
    pub require_healthy: Option<bool>,
    /// A host-check problem stops the apply before writing.
    pub strict_host: Option<bool>,
    /// Jump hosts, `[user@]host[:port]` each, in order (`none`: empty).
    pub proxy_jump: Option<Vec<String>>,
    /// A host that answers no keepalive for this long is considered gone.
    pub keepalive: Option<Duration>,
    /// The local config file for this host in a fleet run; `{host}` stands
    /// for the host's inventory name (see [`Inventory::file_for`]).
    pub file: Option<String>,
}

impl HostSettings {
    /// `self` where set, else `base`.
    pub fn over(self, base: &HostSettings) -> HostSettings {
        macro_rules! pick {
            ($($f:ident),*) => { HostSettings { $($f: self.$f.or_else(|| base.$f.clone()),)* } };
        }
        pick!(
            address,
            port,
            user,
            identity,
            known_hosts,
            host_key_policy,
            mode,
            config_path,
            restart_cmd,
            base_url,
            api_key_env,
            schema,
            connect_timeout,
            restart_timeout,
            health_path,
            health_attempts,
            health_delay,
            health_timeout,
            verify_models,
            ca_cert,
            health_timeout_total,
            reload,
            reload_timeout,
            require_healthy,
            strict_host,
            proxy_jump,
            keepalive,
            file
        )
    }
}

/// A parsed inventory.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub path: PathBuf,
    pub defaults: HostSettings,
    pub hosts: BTreeMap<String, HostSettings>,
    /// `groups:`: name → host names (each a key of `hosts`).
    pub groups: BTreeMap<String, Vec<String>>,
}

fn err(path: &Path, n: &Node, msg: impl std::fmt::Display) -> String {
    format!(
        "inventory {}:{}:{}: {msg}",
        path.display(),
        n.line,
        n.column
    )
}

fn settings(path: &Path, node: &Node, what: &str) -> Result<HostSettings, String> {
    let Kind::Map(entries) = &node.kind else {
        if node.kind == Kind::Null {
            return Ok(HostSettings::default());
        }
        return Err(err(
            path,
            node,
            format!("{what} must be a mapping of settings"),
        ));
    };
    let mut s = HostSettings::default();
    for (k, v) in entries {
        let key = k.key_text();
        let text = || match &v.kind {
            Kind::Str(t) => Ok(t.to_string()),
            Kind::Int(i) => Ok(i.to_string()),
            _ => Err(err(path, v, format!("{what}.{key} must be a string"))),
        };
        match key.as_str() {
            "address" => s.address = Some(text()?),
            "port" => match v.kind {
                Kind::Int(p) if (1..=65535).contains(&p) => s.port = Some(p as u16),
                _ => {
                    return Err(err(
                        path,
                        v,
                        format!("{what}.port must be a number from 1 to 65535"),
                    ))
                }
            },
            "user" => s.user = Some(text()?),
            "identity" => s.identity = Some(PathBuf::from(text()?)),
            "known_hosts" => s.known_hosts = Some(PathBuf::from(text()?)),
            "host_key_policy" => {
                s.host_key_policy = Some(text()?.parse().map_err(|_| {
                    err(
                        path,
                        v,
                        format!("{what}.host_key_policy must be strict or accept-new"),
                    )
                })?)
            }
            "mode" => {
                s.mode = Some(text()?.parse().map_err(|_| {
                    err(
                        path,
                        v,
                        format!("{what}.mode must be sftp, shell or wrapper"),
                    )
                })?)
            }
            "connect_timeout" => s.connect_timeout = Some(seconds(path, v, what, &key)?),
            "restart_timeout" => s.restart_timeout = Some(seconds(path, v, what, &key)?),
            "health_delay" => s.health_delay = Some(seconds(path, v, what, &key)?),
            "health_timeout" => s.health_timeout = Some(seconds(path, v, what, &key)?),
            "health_path" => s.health_path = Some(text()?),
            "health_attempts" => match v.kind {
                Kind::Int(n) if (1..=1000).contains(&n) => s.health_attempts = Some(n as u32),
                _ => {
                    return Err(err(
                        path,
                        v,
                        format!("{what}.health_attempts must be a number from 1 to 1000"),
                    ))
                }
            },
            "health_timeout_total" => s.health_timeout_total = Some(seconds(path, v, what, &key)?),
            "reload_timeout" => s.reload_timeout = Some(seconds(path, v, what, &key)?),
            "reload" => {
                use crate::reload::ReloadMode;
                s.reload = match text()?.as_str() {
                    "auto" => None,
                    "restart" => Some(ReloadMode::Restart),
                    "watch" => Some(ReloadMode::Watch),
                    "signal" => Some(ReloadMode::Signal),
                    _ => {
                        return Err(err(
                            path,
                            v,
                            format!("{what}.reload must be auto, restart, watch or signal"),
                        ))
                    }
                }
            }
            "require_healthy" => match v.kind {
                Kind::Bool(b) => s.require_healthy = Some(b),
                _ => {
                    return Err(err(
                        path,
                        v,
                        format!("{what}.require_healthy must be true or false"),
                    ))
                }
            },
            "verify_models" => match v.kind {
                Kind::Bool(b) => s.verify_models = Some(b),
                _ => {
                    return Err(err(
                        path,
                        v,
                        format!("{what}.verify_models must be true or false"),
                    ))
                }
            },
            "config_path" => s.config_path = Some(text()?),
            "restart_cmd" => s.restart_cmd = Some(text()?),
            "base_url" => s.base_url = Some(text()?),
            "api_key_env" => s.api_key_env = Some(text()?),
            "schema" => s.schema = Some(PathBuf::from(text()?)),
            "ca_cert" => s.ca_cert = Some(PathBuf::from(text()?)),
            "strict_host" => match v.kind {
                Kind::Bool(b) => s.strict_host = Some(b),
                _ => {
                    return Err(err(
                        path,
                        v,
                        format!("{what}.strict_host must be true or false"),
                    ))
                }
            },
            "keepalive" => s.keepalive = Some(seconds(path, v, what, &key)?),
            "file" => s.file = Some(text()?),
            "proxy_jump" => {
                let t = text()?;
                s.proxy_jump = Some(if t.trim().eq_ignore_ascii_case("none") {
                    Vec::new()
                } else {
                    t.split(',').map(|h| h.trim().to_string()).collect()
                });
                if s.proxy_jump.iter().flatten().any(|h| h.is_empty()) {
                    return Err(err(
                        path,
                        v,
                        format!(
                            "{what}.proxy_jump has an empty hop (expected host1,user@host2:port)"
                        ),
                    ));
                }
            }
            other => {
                return Err(err(
                    path,
                    k,
                    format!(
                        "unknown setting `{other}` in {what} (known: {})",
                        KEYS.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(s)
}

/// `groups:`: name → list of host names, each defined under `hosts:`.
fn parse_groups(
    path: &Path,
    node: &Node,
    hosts: &BTreeMap<String, HostSettings>,
) -> Result<BTreeMap<String, Vec<String>>, String> {
    let mut out = BTreeMap::new();
    let entries = match &node.kind {
        Kind::Map(e) => e,
        Kind::Null => return Ok(out),
        _ => return Err(err(path, node, "groups must be a mapping of name: [hosts]")),
    };
    for (k, v) in entries {
        let name = k.key_text();
        if name == "all" || name.is_empty() || name.contains([',', '@']) {
            return Err(err(
                path,
                k,
                format!("group name `{name}` is reserved or holds `,` or `@`"),
            ));
        }
        let Kind::Seq(items) = &v.kind else {
            return Err(err(
                path,
                v,
                format!("groups.{name} must be a list of host names"),
            ));
        };
        let mut members = Vec::new();
        for item in items {
            let host = match &item.kind {
                Kind::Str(t) => t.to_string(),
                _ => return Err(err(path, item, format!("groups.{name}: a host name"))),
            };
            if !hosts.contains_key(&host) {
                return Err(err(
                    path,
                    item,
                    format!("groups.{name}: no host `{host}` under hosts:"),
                ));
            }
            members.push(host);
        }
        out.insert(name, members);
    }
    Ok(out)
}

/// Seconds (an integer or a decimal, 0 to 86400) as a duration.
fn seconds(path: &Path, v: &Node, what: &str, key: &str) -> Result<Duration, String> {
    let secs = match v.kind {
        Kind::Int(i) => i as f64,
        Kind::Float(f) => f,
        _ => f64::NAN,
    };
    if (0.0..=86_400.0).contains(&secs) {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(err(
            path,
            v,
            format!("{what}.{key} must be a number of seconds from 0 to 86400"),
        ))
    }
}

impl Inventory {
    /// Parse inventory text; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Inventory, String> {
        let root = yaml::parse(text).map_err(|e| {
            format!(
                "inventory {}:{}:{}: {}",
                path.display(),
                e.line,
                e.column,
                e.message
            )
        })?;
        let mut inv = Inventory {
            path: path.to_path_buf(),
            ..Default::default()
        };
        let Kind::Map(entries) = &root.kind else {
            return Err(err(
                path,
                &root,
                "the inventory must be a mapping with `defaults:` and `hosts:`",
            ));
        };
        let mut groups = None;
        for (k, v) in entries {
            match k.key_text().as_str() {
                "defaults" => inv.defaults = settings(path, v, "defaults")?,
                "hosts" => match &v.kind {
                    Kind::Map(hosts) => {
                        for (name, h) in hosts {
                            inv.hosts.insert(
                                name.key_text(),
                                settings(path, h, &format!("hosts.{}", name.key_text()))?,
                            );
                        }
                    }
                    Kind::Null => {}
                    _ => return Err(err(path, v, "hosts must be a mapping of name: settings")),
                },
                "groups" => groups = Some(v),
                other => {
                    return Err(err(
                        path,
                        k,
                        format!("unknown key `{other}` (expected defaults, hosts, groups)"),
                    ))
                }
            }
        }
        if let Some(g) = groups {
            inv.groups = parse_groups(path, g, &inv.hosts)?;
        }
        Ok(inv)
    }

    /// The inventory host names a `--hosts` selector names, in order, each
    /// once: a comma list of host names, `@GROUP` and `@all`.
    pub fn select(&self, selector: &str) -> Result<Vec<String>, String> {
        let mut out: Vec<String> = Vec::new();
        let push = |name: &str, out: &mut Vec<String>| {
            if !out.iter().any(|n| n == name) {
                out.push(name.to_string());
            }
        };
        for item in selector.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            if item == "@all" {
                for name in self.hosts.keys() {
                    push(name, &mut out);
                }
            } else if let Some(g) = item.strip_prefix('@') {
                let members = self.groups.get(g).ok_or_else(|| {
                    format!(
                        "no group `{g}` in inventory {} (groups: {})",
                        self.path.display(),
                        self.groups.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                })?;
                for name in members {
                    push(name, &mut out);
                }
            } else if self.hosts.contains_key(item) {
                push(item, &mut out);
            } else {
                return Err(format!(
                    "no host `{item}` in inventory {}",
                    self.path.display()
                ));
            }
        }
        if out.is_empty() {
            return Err(format!("the selector {selector:?} names no host"));
        }
        Ok(out)
    }

    /// The local config file for inventory host `name`: its `file:` (else
    /// the defaults' `file:`) with `{host}` replaced by the name; a relative
    /// path is taken from the inventory file's directory.
    pub fn file_for(&self, name: &str) -> Option<PathBuf> {
        let pattern = self
            .hosts
            .get(name)
            .and_then(|h| h.file.clone())
            .or_else(|| self.defaults.file.clone())?;
        let p = PathBuf::from(pattern.replace("{host}", name));
        Some(if p.is_absolute() {
            p
        } else {
            self.path.parent().unwrap_or(Path::new("")).join(p)
        })
    }

    /// Read and parse a file (bounded).
    pub fn load(path: &Path) -> Result<Inventory, String> {
        let bytes = crate::local::read_bounded(path, MAX_INVENTORY)
            .map_err(|e| format!("inventory {}: {e}", path.display()))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| format!("inventory {}: not UTF-8 text", path.display()))?;
        Inventory::parse(path, &text)
    }

    /// Find the inventory: the explicit path (`--inventory` or
    /// `$SWAPCFG_INVENTORY`) must exist; the default places are optional.
    pub fn discover(explicit: Option<&Path>) -> Result<Option<Inventory>, String> {
        if let Some(p) = explicit {
            return Inventory::load(p).map(Some);
        }
        let mut candidates = vec![PathBuf::from("swapcfg.yaml")];
        let xdg = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
        if let Some(x) = xdg {
            candidates.push(x.join("swapcfg").join("inventory.yaml"));
        }
        for c in candidates {
            if c.is_file() {
                return Inventory::load(&c).map(Some);
            }
        }
        Ok(None)
    }

    /// The two inventory layers for TARGET, apart (the ssh config sits
    /// between them): the host's own settings (`address` = TARGET when the
    /// host sets none, or when TARGET is no inventory host), and the defaults.
    pub fn layers(&self, target: &str) -> (HostSettings, HostSettings) {
        let host = match self.hosts.get(target) {
            // As `resolve`: the host's address, else the defaults', else
            // the name itself.
            Some(h) => {
                let mut h = h.clone();
                if h.address.is_none() && self.defaults.address.is_none() {
                    h.address = Some(target.to_string());
                }
                h
            }
            None => HostSettings {
                address: Some(target.to_string()),
                ..Default::default()
            },
        };
        (host, self.defaults.clone())
    }

    /// Settings for TARGET: a host name merged over defaults, or the
    /// defaults with `address` = TARGET.
    pub fn resolve(&self, target: &str) -> HostSettings {
        match self.hosts.get(target) {
            Some(h) => {
                let mut s = h.clone().over(&self.defaults);
                if s.address.is_none() {
                    s.address = Some(target.to_string());
                }
                s
            }
            None => HostSettings {
                address: Some(target.to_string()),
                ..self.defaults.clone()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INV: &str = "defaults:\n  user: admin\n  config_path: /etc/llama-swap/config.yaml\n  restart_cmd: systemctl restart llama-swap\nhosts:\n  gpu1:\n    address: 10.0.0.5\n    port: 2222\n    base_url: http://10.0.0.5:8080\n  gpu2:\n    user: root\n";

    #[test]
    fn hosts_override_defaults() {
        let inv = Inventory::parse(Path::new("inv.yaml"), INV).unwrap_or_else(|e| panic!("{e}"));
        let g1 = inv.resolve("gpu1");
        assert_eq!(g1.address.as_deref(), Some("10.0.0.5"));
        assert_eq!(g1.port, Some(2222));
        assert_eq!(g1.user.as_deref(), Some("admin"));
        assert_eq!(
            g1.restart_cmd.as_deref(),
            Some("systemctl restart llama-swap")
        );
        let g2 = inv.resolve("gpu2");
        assert_eq!(
            (g2.address.as_deref(), g2.user.as_deref()),
            (Some("gpu2"), Some("root"))
        );
        let other = inv.resolve("bob@box:22");
        assert_eq!(other.address.as_deref(), Some("bob@box:22"));
        assert_eq!(
            other.config_path.as_deref(),
            Some("/etc/llama-swap/config.yaml")
        );
    }

    const FLEET: &str = "defaults:\n  file: configs/{host}.yaml\nhosts:\n  a: {}\n  b: { file: /abs/b.yaml }\n  c: {}\ngroups:\n  gpu: [c, a]\n  one: [b]\n";

    #[test]
    fn selectors_groups_and_files() {
        let inv =
            Inventory::parse(Path::new("/repo/inv.yaml"), FLEET).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            inv.select("@all"),
            Ok(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(inv.select("@gpu"), Ok(vec!["c".into(), "a".into()]));
        assert_eq!(
            inv.select("b, @gpu,a,@one"),
            Ok(vec!["b".into(), "c".into(), "a".into()]),
            "order of first mention, each once"
        );
        let e = inv.select("a,zz").err().unwrap_or_default();
        assert!(e.contains("no host `zz`"), "{e}");
        let e = inv.select("@nope").err().unwrap_or_default();
        assert!(
            e.contains("no group `nope`") && e.contains("gpu, one"),
            "{e}"
        );
        assert!(inv.select(" , ").is_err());
        assert_eq!(
            inv.file_for("a"),
            Some(PathBuf::from("/repo/configs/a.yaml"))
        );
        assert_eq!(inv.file_for("b"), Some(PathBuf::from("/abs/b.yaml")));
        let plain = Inventory::parse(Path::new("inv.yaml"), INV).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(plain.file_for("gpu1"), None);
        let e = Inventory::parse(
            Path::new("i.yaml"),
            "hosts:\n  a: {}\ngroups:\n  g: [a, x]\n",
        )
        .err()
        .unwrap_or_default();
        assert!(
            e.starts_with("inventory i.yaml:4:10: groups.g: no host `x`"),
            "{e}"
        );
        let e = Inventory::parse(
            Path::new("i.yaml"),
            "hosts:\n  a: {}\ngroups:\n  all: [a]\n",
        )
        .err()
        .unwrap_or_default();
        assert!(e.contains("reserved"), "{e}");
    }

    #[test]
    fn layers_keep_the_defaults_address_for_named_hosts() {
        let inv = Inventory::parse(
            Path::new("i.yaml"),
            "defaults:\n  address: 10.0.0.1\nhosts:\n  a: {}\n  b: { address: 10.0.0.2 }\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let addr = |t: &str| {
            let (h, d) = inv.layers(t);
            h.over(&d).address
        };
        assert_eq!(addr("a"), inv.resolve("a").address);
        assert_eq!(addr("a").as_deref(), Some("10.0.0.1"));
        assert_eq!(addr("b").as_deref(), Some("10.0.0.2"));
        assert_eq!(addr("other").as_deref(), Some("other"));
    }

    #[test]
    fn errors_carry_line_and_column() {
        let e = Inventory::parse(Path::new("inv.yaml"), "hosts:\n  a:\n    prot: 22\n")
            .err()
            .unwrap_or_default();
        assert!(
            e.starts_with("inventory inv.yaml:3:5: unknown setting `prot`"),
            "{e}"
        );
        let e = Inventory::parse(Path::new("inv.yaml"), "hosts:\n  a:\n    port: x\n")
            .err()
            .unwrap_or_default();
        assert!(
            e.starts_with("inventory inv.yaml:3:11: hosts.a.port"),
            "{e}"
        );
        let e = Inventory::parse(Path::new("inv.yaml"), "hosts:\n  a: {}\n  a: {}\n")
            .err()
            .unwrap_or_default();
        assert!(
            e.contains("inv.yaml:3:3") && e.contains("already defined"),
            "{e}"
        );
    }
}
