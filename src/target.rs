//! Parsing of SSH-style targets: `[user@]host[:port]`, IPv6 in brackets.
//!
//! Owns: [`Target`] and its parser. Invariant: a parsed target always has a
//! non-empty host, a user and a port (local user and 22 when not written).

use std::fmt;

/// Where to connect, as the user wrote it (`[user@]host[:port]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub user: String,
    /// Host name or IP address, without brackets.
    pub host: String,
    pub port: u16,
}

impl Target {
    /// Parse `[user@]host[:port]`; `[v6addr]` or `[v6addr]:port` for IPv6.
    /// A bare IPv6 address without brackets is accepted when it has no port.
    pub fn parse(input: &str) -> Result<Target, String> {
        let s = input.trim();
        if s.is_empty() {
            return Err("empty target: expected [user@]host[:port]".into());
        }
        let (user, rest) = match s.rsplit_once('@') {
            Some((u, r)) if !u.is_empty() => (u.to_string(), r),
            Some(_) => return Err(format!("{input:?}: empty user before '@'")),
            None => (local_user(), s),
        };
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let (h, after) = inner
                .split_once(']')
                .ok_or_else(|| format!("{input:?}: missing ']' after IPv6 address"))?;
            let port = match after {
                "" => 22,
                p => parse_port(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("{input:?}: expected ':port' after ']'"))?,
                )
                .map_err(|e| format!("{input:?}: {e}"))?,
            };
            (h.to_string(), port)
        } else if rest.matches(':').count() > 1 {
            (rest.to_string(), 22) // bare IPv6 address
        } else if let Some((h, p)) = rest.split_once(':') {
            (
                h.to_string(),
                parse_port(p).map_err(|e| format!("{input:?}: {e}"))?,
            )
        } else {
            (rest.to_string(), 22)
        };
        if host.is_empty() {
            return Err(format!("{input:?}: empty host name"));
        }
        // Brackets only ever delimit an IPv6 address: a host holding one
        // would not read back from its own `Display` form. `, * ? !` are
        // known_hosts pattern syntax and `| #` start a hashed name or a
        // comment there: a host holding one could never be matched by the
        // entry written for it (every connect would append another).
        if host.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(c, '/' | '[' | ']' | ',' | '*' | '?' | '!' | '|' | '#')
        }) {
            return Err(format!("{input:?}: invalid character in host name"));
        }
        Ok(Target { user, host, port })
    }

    /// The host as known_hosts names it: `host` on port 22, else `[host]:port`.
    pub fn known_hosts_name(&self) -> String {
        if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}@[{}]:{}", self.user, self.host, self.port)
        } else {
            write!(f, "{}@{}:{}", self.user, self.host, self.port)
        }
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("invalid port {p:?} (expected 1-65535)")),
        Ok(n) => Ok(n),
    }
}

/// The local user name, without spawning a process: `$USER`, `$LOGNAME`,
/// then the password database.
pub fn local_user() -> String {
    for var in ["USER", "LOGNAME"] {
        if let Ok(u) = std::env::var(var) {
            if !u.is_empty() {
                return u;
            }
        }
    }
    passwd_name().unwrap_or_else(|| "root".to_string())
}

fn passwd_name() -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes into `pwd` and `buf`, both sized and owned
    // here; `result` is null or points at `pwd`.
    let rc = unsafe {
        libc::getpwuid_r(
            libc::getuid(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name points into `buf` and is NUL-terminated on success.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Target {
        Target::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn refuses_known_hosts_pattern_characters_in_host_names() {
        for bad in ["a,b", "gpu*", "gpu?", "!gpu", "|1|x", "gpu#1", "u@a,b:22"] {
            let e = Target::parse(bad).expect_err(bad);
            assert!(e.contains("invalid character"), "{bad}: {e}");
        }
        // A zone index stays accepted.
        assert_eq!(t("[fe80::1%eth0]:2222").host, "fe80::1%eth0");
    }

    #[test]
    fn parses_user_host_port() {
        assert_eq!(
            t("bob@gpu1:2222"),
            Target {
                user: "bob".into(),
                host: "gpu1".into(),
                port: 2222
            }
        );
        let d = t("gpu1");
        assert_eq!((d.host.as_str(), d.port), ("gpu1", 22));
        assert!(!d.user.is_empty());
    }

    #[test]
    fn parses_ipv6() {
        assert_eq!(t("root@[::1]:2200").host, "::1");
        assert_eq!(t("root@[::1]:2200").port, 2200);
        assert_eq!(t("[fe80::1]").port, 22);
        assert_eq!(t("fe80::1").host, "fe80::1");
        assert_eq!(t("a@[::1]:22").known_hosts_name(), "::1");
        assert_eq!(t("a@[::1]:23").known_hosts_name(), "[::1]:23");
    }

    #[test]
    fn rejects_bad_targets() {
        for bad in [
            "",
            "@host",
            "host:0",
            "host:99999",
            "host:x",
            "[::1",
            "[::1]x",
            "u@:22",
            "a b",
            "[[x]",
            "x]",
            "[a]b]",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn accepted_targets_read_back_from_display() {
        // Found by the `target` fuzz target: a host holding a bracket was
        // accepted but its `Display` form was rejected or read differently.
        assert!(Target::parse("[1a:@:]:11").is_err());
        for s in [
            "bob@gpu1:2222",
            "gpu1",
            "root@[::1]:2200",
            "fe80::1",
            "a@b@[::1]",
            "[::1]:@h",
        ] {
            let parsed = t(s);
            assert_eq!(t(&parsed.to_string()), parsed, "{s}");
        }
    }
}
