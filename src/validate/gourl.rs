//! Go's `net/url.Parse` verdict on a URL string: llama-swap parses every
//! model's `proxy` and every peer's `proxy` with it and refuses to load
//! when it fails.
//!
//! Owns: the checks `url.Parse` makes, in its order: control bytes, the
//! scheme (`missing protocol scheme`), the colon in the first segment of a
//! scheme-less reference, the authority (userinfo characters, a bracketed
//! host that must be an IPv6 address with an optional `%25` zone, `[` only
//! at the start, the port after the last colon all digits, characters a
//! host may hold, `%` escapes that only encode non-ASCII bytes in a host),
//! and well-formed `%` escapes in the path and the fragment. The query is
//! not checked (`Parse` keeps it raw). Written from the Go standard
//! library's documented behaviour and its source (Go 1.25), without the
//! opt-in strict colons for http(s) hosts.
//!
//! Invariant: [`parse_error`] is `None` exactly when `url.Parse` returns no
//! error; otherwise the text is Go's own `parse "…": …` message.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Go's error for `url.Parse(raw)`, or `None` when it parses.
pub fn parse_error(raw: &str) -> Option<String> {
    let (u, frag) = match raw.split_once('#') {
        Some((u, f)) => (u, Some(f)),
        None => (raw, None),
    };
    if let Err(why) = parse(u) {
        return Some(format!("parse {}: {why}", go_quote(u)));
    }
    if let Some(f) = frag {
        if let Err(why) = unescape(f, Mode::Other) {
            return Some(format!("parse {}: {why}", go_quote(raw)));
        }
    }
    None
}

/// `%q` as Go prints it, close enough for messages (Rust's escaping).
fn go_quote(s: &str) -> String {
    format!("{s:?}")
}

fn parse(raw: &str) -> Result<(), String> {
    if raw.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err("net/url: invalid control character in URL".into());
    }
    if raw == "*" {
        return Ok(());
    }
    let (scheme, rest) = scheme(raw)?;
    let scheme = scheme.to_ascii_lowercase();
    let rest = if rest.ends_with('?') && rest.matches('?').count() == 1 {
        &rest[..rest.len() - 1]
    } else {
        rest.split_once('?').map_or(rest, |(r, _)| r)
    };
    if !rest.starts_with('/') {
        if !scheme.is_empty() {
            // A rootless path is opaque: not checked further.
            return Ok(());
        }
        let segment = rest.split_once('/').map_or(rest, |(s, _)| s);
        if segment.contains(':') {
            return Err("first path segment in URL cannot contain colon".into());
        }
    }
    let mut path = rest;
    if (!scheme.is_empty() || !rest.starts_with("///")) && rest.starts_with("//") {
        let after = &rest[2..];
        let (authority, p) = match after.find('/') {
            Some(i) => (&after[..i], &after[i..]),
            None => (after, ""),
        };
        authority_error(authority)?;
        path = p;
    }
    unescape(path, Mode::Other).map(|_| ())
}

/// `scheme:rest` when `raw` starts with `[a-zA-Z][a-zA-Z0-9+.-]*:`.
fn scheme(raw: &str) -> Result<(&str, &str), String> {
    for (i, c) in raw.bytes().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
            b':' if i == 0 => return Err("missing protocol scheme".into()),
            b':' => return Ok((&raw[..i], &raw[i + 1..])),
            _ => return Ok(("", raw)),
        }
    }
    Ok(("", raw))
}

fn authority_error(authority: &str) -> Result<(), String> {
    let (userinfo, host) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    host_error(host)?;
    if let Some(user) = userinfo {
        let valid = user.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    '-' | '.'
                        | '_'
                        | ':'
                        | '~'
                        | '!'
                        | '$'
                        | '&'
                        | '\''
                        | '('
                        | ')'
                        | '*'
                        | '+'
                        | ','
                        | ';'
                        | '='
                        | '%'
                        | '@'
                )
        });
        if !valid {
            return Err("net/url: invalid userinfo".into());
        }
        let (name, password) = user.split_once(':').unwrap_or((user, ""));
        unescape(name, Mode::Other)?;
        unescape(password, Mode::Other)?;
    }
    Ok(())
}

fn host_error(host: &str) -> Result<(), String> {
    match host.rfind('[') {
        Some(i) if i > 0 => Err("invalid IP-literal".into()),
        Some(_) => {
            let Some(close) = host.rfind(']') else {
                return Err("missing ']' in host".into());
            };
            let colon_port = &host[close + 1..];
            if !valid_optional_port(colon_port) {
                return Err(format!("invalid port {} after host", go_quote(colon_port)));
            }
            let name = &host[1..close];
            let unescaped = match name.find("%25") {
                Some(z) => {
                    let mut h = unescape(&name[..z], Mode::Host)?;
                    h.extend(unescape(&name[z..], Mode::Zone)?);
                    h
                }
                None => unescape(name, Mode::Host)?,
            };
            ip_literal_error(&unescaped)
        }
        None => {
            if let Some(i) = host.rfind(':') {
                let colon_port = &host[i..];
                if !valid_optional_port(colon_port) {
                    return Err(format!("invalid port {} after host", go_quote(colon_port)));
                }
            }
            unescape(host, Mode::Host).map(|_| ())
        }
    }
}

/// Inside brackets only an IPv6 address (an IPv4-mapped one included),
/// with an optional non-empty zone after `%`, as `netip.ParseAddr`.
fn ip_literal_error(bytes: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(bytes);
    let (addr, zone) = match text.split_once('%') {
        Some((a, z)) => (a, Some(z)),
        None => (text.as_ref(), None),
    };
    if addr.parse::<Ipv4Addr>().is_ok() {
        return if zone.is_some() {
            Err(format!(
                "invalid host: ParseAddr({}): IPv4 addresses cannot have a zone",
                go_quote(&text)
            ))
        } else {
            Err("invalid IP-literal".into())
        };
    }
    if zone == Some("") {
        return Err(format!(
            "invalid host: ParseAddr({}): zone must be a non-empty string",
            go_quote(&text)
        ));
    }
    if addr.parse::<Ipv6Addr>().is_err() {
        return Err(format!(
            "invalid host: ParseAddr({}): not an IP address",
            go_quote(&text)
        ));
    }
    Ok(())
}

/// Empty, or `:` and digits.
fn valid_optional_port(port: &str) -> bool {
    port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Host,
    Zone,
    /// Path, fragment, user and password: only escapes are checked.
    Other,
}

/// ASCII bytes a host may hold unescaped (Go's `shouldEscape` in host mode).
fn host_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'-' | b'_'
                | b'.'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'['
                | b']'
                | b'<'
                | b'>'
                | b'"'
        )
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The unescaped bytes, or Go's error (`invalid URL escape "%zz"`,
/// `invalid character " " in host name`).
fn unescape(s: &str, mode: Mode) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let pair = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            );
            let (Some(hi), Some(lo)) = pair else {
                let end = (i + 3).min(b.len());
                return Err(format!(
                    "invalid URL escape {}",
                    go_quote(&String::from_utf8_lossy(&b[i..end]))
                ));
            };
            let escape = &s[i..i + 3];
            if mode == Mode::Host && hi < 8 && escape != "%25" {
                return Err(format!("invalid URL escape {}", go_quote(escape)));
            }
            let v = (hi << 4) | lo;
            if mode == Mode::Zone && escape != "%25" && v != b' ' && !(v >= 0x80 || host_byte(v)) {
                return Err(format!("invalid URL escape {}", go_quote(escape)));
            }
            out.push(v);
            i += 3;
            continue;
        }
        if matches!(mode, Mode::Host | Mode::Zone) && c < 0x80 && !host_byte(c) {
            return Err(format!(
                "invalid character {} in host name",
                go_quote(&char::from(c).to_string())
            ));
        }
        out.push(c);
        i += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::parse_error;

    /// Each verdict follows from Go's `net/url` source, step by step.
    #[test]
    fn verdicts_follow_go_url_parse() {
        let ok = [
            "http://127.0.0.1:9000",
            "http://[::1]:8080/v1",
            "http://[fe80::1%25en0]:80",
            "http://[::ffff:1.2.3.4]",
            "https://user:p%40ss@host.example/a%20b?q=%zz#frag",
            "localhost:9000",      // scheme "localhost", opaque "9000"
            "http:/relative",      // no authority
            "http://host:/",       // empty port is valid
            "http://a:b:80/",      // the last colon starts the port
            "http://ho$t.example", // `$` is a sub-delim
            "http://h\u{e9}st",    // non-ASCII bytes are allowed in a host
            "",
            "*",
            "/just/a/path",
            "127.0.0.1/x:y", // the colon is not in the first segment
            "///x:y",        // three slashes: a path, no authority
        ];
        for u in ok {
            assert_eq!(parse_error(u), None, "{u:?} parses in Go");
        }
        let bad = [
            (
                "127.0.0.1:9000",
                "first path segment in URL cannot contain colon",
            ),
            (
                "1localhost:9000",
                "first path segment in URL cannot contain colon",
            ),
            (":9000", "missing protocol scheme"),
            // Unexpanded macros: `${PORT}` is no port, `{` no host byte.
            (
                "http://localhost:${PORT}",
                "invalid port \":${PORT}\" after host",
            ),
            ("http://${h}:8080", "invalid character \"{\" in host name"),
            ("http://h:po/", "invalid port \":po\" after host"),
            ("http://[::1]x", "invalid port \"x\" after host"),
            ("http://[::1", "missing ']' in host"),
            ("http://a[::1]", "invalid IP-literal"),
            ("http://[1.2.3.4]:80", "invalid IP-literal"),
            ("http://[localhost]", "invalid host"),
            ("http://[fe80::1%25]", "zone must be a non-empty string"),
            ("http://h%41st", "invalid URL escape \"%41\""),
            ("http://h st", "invalid character \" \" in host name"),
            ("http://h{x}", "invalid character \"{\" in host name"),
            ("http://x/%zz", "invalid URL escape \"%zz\""),
            ("http://x/a%2", "invalid URL escape \"%2\""),
            ("http://x/#%g0", "invalid URL escape \"%g0\""),
            ("http://us er@h", "net/url: invalid userinfo"),
            ("http://u%zz@h", "invalid URL escape \"%zz\""),
            ("http://h\u{7f}", "invalid control character"),
            ("http://[fe80::1%25%0a]", "invalid URL escape \"%0a\""),
        ];
        for (u, why) in bad {
            let e = parse_error(u).unwrap_or_else(|| panic!("{u:?} fails in Go"));
            assert!(e.contains(why), "{u:?}: {e}");
            assert!(e.starts_with("parse \""), "{u:?}: {e}");
        }
    }
}
