//! Pure naming and record formats shared by every mode: backup names (made
//! and recognised), the lock file's path and its one-line-per-field record.
//!
//! Owns: what counts as a swapcfg backup (`<name>.bak-YYYYMMDDTHHMMSSZ` with
//! an optional `.N`), their order (by the timestamp in the name, then N),
//! and the lock record. No I/O.

use std::time::SystemTime;

/// `<path>.bak-YYYYMMDDTHHMMSSZ` for `now` in UTC.
pub fn backup_path(config_path: &str, now: SystemTime) -> String {
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{config_path}.bak-{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's civil-from-days algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The sort key of a swapcfg backup of `config_path`: (`YYYYMMDDTHHMMSSZ`,
/// N), or `None` for any other name (hand-made `.bak-old`, temp files, a
/// path in another directory).
pub fn backup_key(config_path: &str, path: &str) -> Option<(String, u32)> {
    let rest = path.strip_prefix(config_path)?.strip_prefix(".bak-")?;
    let (stamp, n) = match rest.split_once('.') {
        Some((s, n)) => {
            if n.is_empty() || n.len() > 3 || !n.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (s, n.parse().ok()?)
        }
        None => (rest, 0),
    };
    let b = stamp.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 16 || !digits(0..8) || b[8] != b'T' || !digits(9..15) || b[15] != b'Z' {
        return None;
    }
    Some((stamp.to_string(), n))
}

/// Whether `path` is a backup name swapcfg makes for `config_path`.
pub fn is_backup(config_path: &str, path: &str) -> bool {
    backup_key(config_path, path).is_some()
}

/// The lock file beside the config: `<path>.swapcfg-lock`.
pub fn lock_path(config_path: &str) -> String {
    format!("{config_path}.swapcfg-lock")
}

/// Largest lock record read.
pub const MAX_LOCK_RECORD: usize = 4096;

/// A lock file with no record at all (zero bytes) was left by an apply
/// stopped between its exclusive open and its record (SFTP writes the
/// record in the next flight). Such a lock is taken over like an expired
/// one once its mtime is this many seconds old: a record normally lands
/// one round trip after the open.
pub const ABANDONED_LOCK_SECS: u64 = 60;

/// Who holds the lock, as recorded in the lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    /// Random hex identifying this holder (only the holder removes it).
    pub token: String,
    /// The client machine's host name.
    pub client: String,
    pub user: String,
    pub pid: u32,
    /// Seconds since the Unix epoch.
    pub started: u64,
    /// After this time (epoch seconds) the lease has expired and another
    /// apply may take the lock over.
    pub expires: u64,
}

fn clean(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(128).collect()
}

impl LockInfo {
    /// The record written to the lock file (`key=value` lines).
    pub fn to_record(&self) -> String {
        format!(
            "swapcfg-lock 1\ntoken={}\nclient={}\nuser={}\npid={}\nstarted={}\nexpires={}\n",
            clean(&self.token),
            clean(&self.client),
            clean(&self.user),
            self.pid,
            self.started,
            self.expires
        )
    }

    /// Parse a record; `None` unless it is a complete swapcfg lock record.
    pub fn parse(record: &[u8]) -> Option<LockInfo> {
        if record.len() > MAX_LOCK_RECORD {
            return None;
        }
        let text = std::str::from_utf8(record).ok()?;
        let mut lines = text.lines();
        if lines.next()? != "swapcfg-lock 1" {
            return None;
        }
        let mut info = LockInfo {
            token: String::new(),
            client: String::new(),
            user: String::new(),
            pid: 0,
            started: 0,
            expires: 0,
        };
        // One bit per field: each must appear exactly once (a repeated
        // field is not a record swapcfg wrote).
        let mut seen = 0u8;
        for line in lines {
            let (k, v) = line.split_once('=')?;
            let bit = match k {
                "token" => {
                    info.token = clean(v);
                    1
                }
                "client" => {
                    info.client = clean(v);
                    2
                }
                "user" => {
                    info.user = clean(v);
                    4
                }
                "pid" => {
                    info.pid = v.parse().ok()?;
                    8
                }
                "started" => {
                    info.started = v.parse().ok()?;
                    16
                }
                "expires" => {
                    info.expires = v.parse().ok()?;
                    32
                }
                _ => continue,
            };
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
        }
        (seen == 63 && !info.token.is_empty()).then_some(info)
    }

    /// Whether the lease has run out at `now` (epoch seconds).
    pub fn expired(&self, now: u64) -> bool {
        now >= self.expires
    }
}

impl std::fmt::Display for LockInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}@{} (pid {}), started {}, lease until {}",
            self.user,
            self.client,
            self.pid,
            utc(self.started),
            utc(self.expires)
        )
    }
}

/// `YYYY-MM-DD HH:MM:SSZ` for epoch seconds.
pub fn utc(secs: u64) -> String {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn backup_name_is_utc_compact_iso8601() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_034_445);
        assert_eq!(
            backup_path("/etc/llama-swap/config.yaml", t),
            "/etc/llama-swap/config.yaml.bak-20251125T013405Z"
        );
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_825_600);
        assert_eq!(backup_path("c", leap), "c.bak-20000229T120000Z");
        assert_eq!(
            backup_path("c", SystemTime::UNIX_EPOCH),
            "c.bak-19700101T000000Z"
        );
    }

    #[test]
    fn only_names_swapcfg_makes_are_backups() {
        let c = "/etc/ls/config.yaml";
        assert_eq!(
            backup_key(c, "/etc/ls/config.yaml.bak-20251125T013405Z"),
            Some(("20251125T013405Z".into(), 0))
        );
        assert_eq!(
            backup_key(c, "/etc/ls/config.yaml.bak-20251125T013405Z.12"),
            Some(("20251125T013405Z".into(), 12))
        );
        for not in [
            "/etc/ls/config.yaml.bak-old",
            "/etc/ls/config.yaml.bak-manual",
            "/etc/ls/config.yaml.bak-20251125T013405Z.tmp",
            "/etc/ls/config.yaml.bak-20251125T013405Z.",
            "/etc/ls/config.yaml.bak-20251125T013405",
            "/etc/ls/config.yaml.bak-2025112XT013405Z",
            "/etc/ls/config.yaml.bak-20251125T013405Z/x",
            "/etc/ls/other.yaml.bak-20251125T013405Z",
            "/etc/ls/config.yaml",
        ] {
            assert!(!is_backup(c, not), "{not}");
        }
        // Order by the stamp, then N (not by string: ".10" after ".9").
        let mut v = vec![
            "/etc/ls/config.yaml.bak-20251125T013405Z.10",
            "/etc/ls/config.yaml.bak-20251125T013405Z.9",
            "/etc/ls/config.yaml.bak-20240101T000000Z",
            "/etc/ls/config.yaml.bak-20251125T013405Z",
        ];
        v.sort_by_key(|p| backup_key(c, p));
        assert_eq!(
            v,
            vec![
                "/etc/ls/config.yaml.bak-20240101T000000Z",
                "/etc/ls/config.yaml.bak-20251125T013405Z",
                "/etc/ls/config.yaml.bak-20251125T013405Z.9",
                "/etc/ls/config.yaml.bak-20251125T013405Z.10",
            ]
        );
    }

    #[test]
    fn lock_record_round_trips_and_rejects_garbage() {
        let info = LockInfo {
            token: "00ff".into(),
            client: "laptop\x1b[2J".into(),
            user: "ann".into(),
            pid: 42,
            started: 1_764_034_445,
            expires: 1_764_035_045,
        };
        let back = LockInfo::parse(info.to_record().as_bytes()).expect("parse");
        assert_eq!(back.client, "laptop[2J", "control characters dropped");
        assert_eq!((back.pid, back.expires), (42, 1_764_035_045));
        assert!(back.expired(1_764_035_045) && !back.expired(1_764_035_044));
        assert!(LockInfo::parse(b"").is_none());
        assert!(LockInfo::parse(b"swapcfg-lock 1\ntoken=a\n").is_none());
        assert!(LockInfo::parse(&vec![b'a'; MAX_LOCK_RECORD + 1]).is_none());
        assert!(back.to_string().contains("ann@laptop[2J (pid 42)"));
    }

    #[test]
    fn lock_record_needs_each_field_once() {
        // Found by the `lock_record` fuzz target: six lines of any known
        // fields counted as complete, so a record without `expires` read
        // as a lease that had run out at 1970 (and was taken over).
        let six_tokens = format!("swapcfg-lock 1\n{}", "token=a\n".repeat(6));
        assert!(LockInfo::parse(six_tokens.as_bytes()).is_none());
        let full = "swapcfg-lock 1\ntoken=a\nclient=c\nuser=u\npid=1\nstarted=2\nexpires=3\n";
        assert!(LockInfo::parse(full.as_bytes()).is_some());
        let repeated = format!("{full}expires=99\n");
        assert!(LockInfo::parse(repeated.as_bytes()).is_none());
        // Over 255 field lines used to overflow the u8 counter (a panic
        // with overflow checks on).
        let many = format!("{full}{}", "pid=1\n".repeat(300));
        assert!(many.len() <= MAX_LOCK_RECORD);
        assert!(LockInfo::parse(many.as_bytes()).is_none());
    }
}
