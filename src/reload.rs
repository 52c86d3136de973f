//! Proving that llama-swap took a change: the [`Service`] the pipeline's
//! hooks call around the write (pre-flight, log mark, reload proof, health
//! and model check, rollback check).
//!
//! How a change reaches llama-swap ([`ReloadMode`]):
//! * `Restart`: the restart command starts a new process (fresh log); the
//!   proof is health plus the model list, polled with a short backoff.
//! * `Watch` (`-watch-config`, no restart command) and `Signal` (a command
//!   that sends SIGHUP / `systemctl reload`): the process keeps running and
//!   a refused config changes nothing visible on `/v1/models`. Before the
//!   write the end of `GET /logs` is recorded ([`LogMark`]); after it the
//!   log must show `reloading configuration` followed by `configuration
//!   reloaded` (success) or `failed to …` (refused, with the server's
//!   reason) within the reload deadline. Where `/logs` cannot be read, the
//!   model list is compared instead and a [`ServiceWarning::ReloadUnproven`]
//!   says the proof is weaker.
//!
//! Owns: the log mark and the scan of new log lines (pure, tested), the
//! order of the checks. Does not know SSH, steps or flags.

use std::time::{Duration, Instant};

use crate::health::{self, Client, HealthCheck, HealthError, Seen, ServiceWarning};

/// Largest `/logs` body read (llama-swap keeps its last 10,240 writes).
pub const MAX_LOGS: usize = 8 * 1024 * 1024;

/// Bytes of the log's end kept to find the same place again.
const ANCHOR: usize = 4096;

/// How llama-swap picks up a new config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReloadMode {
    /// A restart command starts a new process.
    #[default]
    Restart,
    /// llama-swap polls the file (`-watch-config`); nothing is run.
    Watch,
    /// The command makes the running process reload (SIGHUP).
    Signal,
}

impl ReloadMode {
    pub fn name(self) -> &'static str {
        match self {
            ReloadMode::Restart => "restart",
            ReloadMode::Watch => "watch",
            ReloadMode::Signal => "signal",
        }
    }

    /// Whether the process keeps running across the change.
    pub fn in_place(self) -> bool {
        !matches!(self, ReloadMode::Restart)
    }

    /// The mode a restart command implies: `None` (no command) is watch;
    /// a command that sends SIGHUP (`kill -HUP`, `-s HUP`, `-SIGHUP`) or
    /// runs `systemctl reload` is signal; anything else restarts.
    pub fn implied_by(cmd: Option<&str>) -> ReloadMode {
        let Some(cmd) = cmd else {
            return ReloadMode::Watch;
        };
        let words: Vec<&str> = cmd.split_whitespace().collect();
        let hup = |w: &str| matches!(w, "HUP" | "SIGHUP" | "hup" | "sighup");
        for (i, w) in words.iter().enumerate() {
            if *w == "reload" || *w == "-HUP" || *w == "-SIGHUP" || *w == "--signal=HUP" {
                return ReloadMode::Signal;
            }
            if matches!(*w, "-s" | "--signal") && words.get(i + 1).is_some_and(|n| hup(n)) {
                return ReloadMode::Signal;
            }
        }
        ReloadMode::Restart
    }
}

/// Where llama-swap's log ended before the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogMark {
    len: usize,
    tail: Vec<u8>,
}

impl LogMark {
    /// The mark at the end of `log`.
    pub fn at_end(log: &[u8]) -> LogMark {
        LogMark {
            len: log.len(),
            tail: log[log.len().saturating_sub(ANCHOR)..].to_vec(),
        }
    }

    /// What `log` holds after the mark, or `None` when the marked place is
    /// gone (the log rotated past it, or it is another process's log).
    pub fn after<'a>(&self, log: &'a [u8]) -> Option<&'a [u8]> {
        if self.tail.is_empty() {
            return (log.len() >= self.len).then_some(log);
        }
        // Unrotated: the old log is a prefix of the new one.
        if log.len() >= self.len && log[self.len - self.tail.len()..self.len] == self.tail[..] {
            return Some(&log[self.len..]);
        }
        // Rotated: old lines dropped at the front, so the place can only
        // have moved toward the start; take the last match before it.
        let limit = log.len().min(self.len);
        log[..limit]
            .windows(self.tail.len())
            .rposition(|w| w == &self.tail[..])
            .map(|at| &log[at + self.tail.len()..])
    }
}

/// What new log lines say about a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// No `reloading configuration` yet.
    NotStarted,
    /// Started, no outcome yet.
    Pending,
    Reloaded,
    /// `failed to …`: the server's words.
    Refused(String),
}

/// The message of a log line: the text after its `[LEVEL] ` tag.
fn message(line: &str) -> Option<(&str, &str)> {
    for level in ["INFO", "WARN", "ERROR", "DEBUG"] {
        let tag = format!("[{level}] ");
        if let Some(at) = line.find(&tag) {
            return Some((level, line[at + tag.len()..].trim_end()));
        }
    }
    None
}

/// Scan new log text: the outcome of the last reload that started in it.
pub fn scan(new: &[u8]) -> Scan {
    let text = String::from_utf8_lossy(new);
    let mut state = Scan::NotStarted;
    for line in text.lines() {
        let Some((level, msg)) = message(line) else {
            continue;
        };
        if msg == "reloading configuration" {
            state = Scan::Pending;
        } else if state == Scan::Pending && msg == "configuration reloaded" {
            state = Scan::Reloaded;
        } else if state == Scan::Pending && level != "INFO" && msg.starts_with("failed to ") {
            state = Scan::Refused(msg.to_string());
        }
    }
    state
}

/// The change's proof, per apply: hooks call [`Service::preflight`],
/// [`Service::before_write`] and [`Service::after_change`].
#[derive(Debug)]
pub struct Service {
    pub check: HealthCheck,
    pub mode: ReloadMode,
    /// How long a reload may take to show in the log.
    pub reload_timeout: Duration,
    mark: Option<Result<LogMark, Seen>>,
    /// Whether llama-swap noticed the forward change (a reload started).
    noticed: bool,
    last_write: Option<(Instant, usize)>,
    /// Built once (an https client loads the system's roots).
    client: Option<Client>,
    /// Whether llama-swap was healthy before the change (the pre-flight
    /// probe); when it was not, a rollback that leaves it as unhealthy as
    /// before is not a failed rollback.
    pub healthy_before: bool,
    /// Warnings for the report.
    pub warnings: Vec<ServiceWarning>,
}

impl Service {
    pub fn new(check: HealthCheck, mode: ReloadMode, reload_timeout: Duration) -> Service {
        Service {
            check,
            mode,
            reload_timeout,
            mark: None,
            noticed: true,
            last_write: None,
            client: None,
            healthy_before: true,
            warnings: Vec::new(),
        }
    }

    /// Record a warning once.
    fn warn(&mut self, w: ServiceWarning) {
        if !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }

    /// Before anything is written: one probe of the health path. `Err`
    /// only for a key problem (401/403) or a bad URL; anything else
    /// unhealthy is returned as what was seen.
    pub async fn preflight(&self) -> Result<Option<Seen>, HealthError> {
        let client = Client::new(&self.check)?;
        Ok(client
            .get_ok(
                &self.check.path,
                health::MAX_BODY,
                self.check.attempt_timeout,
            )
            .await?
            .err())
    }

    /// Right before a write: record where llama-swap's log ends (reload
    /// modes only). Before a rollback's write of as many bytes as the
    /// change's, make sure the file's mtime will differ from it (a watcher
    /// comparing mtime and size would not see a same-size file written in
    /// the same second on a filesystem with coarse timestamps).
    pub async fn before_write(&mut self, len: usize, rollback: bool) {
        if !self.mode.in_place() {
            return;
        }
        if let (true, Some((at, n))) = (rollback, self.last_write) {
            let gap = Duration::from_millis(1100);
            if n == len && at.elapsed() < gap {
                tokio::time::sleep(gap - at.elapsed()).await;
            }
        }
        self.mark = Some(self.log().await.map(|l| LogMark::at_end(&l)));
        self.last_write = Some((Instant::now(), len));
    }

    async fn log(&mut self) -> Result<bytes::Bytes, Seen> {
        if self.client.is_none() {
            let c = Client::new(&self.check).map_err(|e| Seen::Exchange { why: e.to_string() })?;
            self.client = Some(c);
        }
        let Some(client) = &self.client else {
            return Err(Seen::Nothing);
        };
        match client
            .get_ok("/logs", MAX_LOGS, self.check.attempt_timeout)
            .await
        {
            Ok(r) => r,
            Err(e) => Err(Seen::Exchange { why: e.to_string() }),
        }
    }

    /// Wait for the reload after the mark: `Ok(true)` reloaded,
    /// `Ok(false)` the log could not be read (no proof either way).
    async fn await_reload(&mut self, mark: &LogMark) -> Result<bool, HealthError> {
        let started = Instant::now();
        let deadline = started + self.reload_timeout;
        let mut wait = self.check.first_delay.max(Duration::from_millis(1));
        let mut started_seen = false;
        loop {
            let state = match self.log().await {
                Ok(log) => match mark.after(&log) {
                    Some(new) => scan(new),
                    None => {
                        self.warn(ServiceWarning::ReloadUnproven {
                            why: "llama-swap's log no longer holds the place marked before the write (it rotated or restarted)".into(),
                        });
                        return Ok(false);
                    }
                },
                Err(seen) => {
                    self.warn(ServiceWarning::ReloadUnproven {
                        why: format!("{}/logs: {seen}", self.check.base_url),
                    });
                    return Ok(false);
                }
            };
            match state {
                Scan::Reloaded => return Ok(true),
                Scan::Refused(reason) => {
                    return Err(HealthError::ReloadRefused {
                        url: self.check.base_url.clone(),
                        reason,
                    })
                }
                Scan::Pending => {
                    self.noticed = true;
                    started_seen = true;
                }
                Scan::NotStarted => {}
            }
            if Instant::now() + wait > deadline {
                return Err(HealthError::ReloadNotSeen {
                    url: self.check.base_url.clone(),
                    waited: started.elapsed(),
                    started: started_seen,
                });
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(self.check.max_delay.max(Duration::from_millis(1)));
        }
    }

    /// After the write (and the restart or signal, if any): prove the
    /// change took (`rollback == false`: the new config's models listed),
    /// or that the old config is back and answering (`rollback == true`).
    pub async fn after_change(
        &mut self,
        rollback: bool,
        progress: &mut dyn FnMut(u32),
    ) -> Result<(), HealthError> {
        let mut hc = self.check.clone();
        if rollback {
            // The old config is back: its models, not the new ones, are listed.
            hc.expect_models = None;
        }
        // The first probe runs at once, in every mode: after a restart it
        // usually finds nothing listening yet (SERVER.md) and the backoff
        // follows; an old process still answering is not told apart by a
        // fixed wait either (the model list is the restart mode's proof).
        let first_wait = Duration::ZERO;
        if self.mode.in_place() {
            let mark = self.mark.take();
            // A rollback of a change llama-swap never noticed: it kept the
            // old config all along, so there is no reload to wait for.
            let wait_for_it = !rollback || self.noticed;
            if !rollback {
                self.noticed = false;
            }
            match mark {
                Some(Ok(mark)) if wait_for_it => {
                    let r = self.await_reload(&mark).await;
                    if matches!(r, Ok(true) | Err(HealthError::ReloadRefused { .. })) {
                        self.noticed = true;
                    }
                    if !r? {
                        // Fallback: the model list, within the reload deadline.
                        hc.total_timeout = self.reload_timeout;
                        self.noticed = true;
                    }
                }
                Some(Err(seen)) if wait_for_it => {
                    self.warn(ServiceWarning::ReloadUnproven {
                        why: format!("{}/logs: {seen}", self.check.base_url),
                    });
                    hc.total_timeout = self.reload_timeout;
                    self.noticed = true;
                }
                _ => {}
            }
        }
        match health::poll(&hc, first_wait, progress).await {
            Err(HealthError::Unauthorized { url, .. }) if rollback => {
                self.warn(ServiceWarning::RollbackUnverified { url });
                Ok(())
            }
            Err(e) if rollback && !self.healthy_before => {
                self.warn(ServiceWarning::UnhealthyAsBefore {
                    error: e.to_string(),
                });
                Ok(())
            }
            r => r.map(|_| ()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_implied_by_the_command() {
        assert_eq!(ReloadMode::implied_by(None), ReloadMode::Watch);
        for c in [
            "systemctl reload llama-swap",
            "sudo systemctl reload llama-swap.service",
            "kill -HUP $(cat /run/llama-swap.pid)",
            "pkill -SIGHUP llama-swap",
            "kill -s HUP 1234",
        ] {
            assert_eq!(ReloadMode::implied_by(Some(c)), ReloadMode::Signal, "{c}");
        }
        for c in [
            "systemctl restart llama-swap",
            "systemctl reload-or-restart llama-swap",
            "/opt/reload.sh",
            "restart",
        ] {
            assert_eq!(ReloadMode::implied_by(Some(c)), ReloadMode::Restart, "{c}");
        }
    }

    #[test]
    fn the_mark_finds_new_lines_unrotated_and_rotated() {
        let before = b"[INFO] a\n[INFO] b\n".to_vec();
        let m = LogMark::at_end(&before);
        let mut now = before.clone();
        now.extend_from_slice(b"[INFO] reloading configuration\n");
        assert_eq!(
            m.after(&now),
            Some(&b"[INFO] reloading configuration\n"[..])
        );
        // Rotated: the first line dropped.
        let rotated = b"[INFO] b\n[INFO] c\n";
        let m2 = LogMark::at_end(b"[INFO] a\n[INFO] b\n");
        assert_eq!(
            m2.after(rotated),
            None,
            "the whole tail must still be there"
        );
        let long: Vec<u8> = (0..2000)
            .flat_map(|i| format!("[INFO] line {i}\n").into_bytes())
            .collect();
        let m3 = LogMark::at_end(&long);
        let mut later = long[100..].to_vec();
        later.extend_from_slice(b"[INFO] new\n");
        assert_eq!(m3.after(&later), Some(&b"[INFO] new\n"[..]));
        // Another process's log (restarted): the place is gone.
        assert_eq!(m3.after(b"[INFO] fresh\n"), None);
        // An empty log before: everything after is new.
        let empty = LogMark::at_end(b"");
        assert_eq!(empty.after(b"x\n"), Some(&b"x\n"[..]));
    }

    #[test]
    fn the_scan_follows_the_last_reload() {
        assert_eq!(scan(b"[INFO] hello\n"), Scan::NotStarted);
        assert_eq!(scan(b"[INFO] reloading configuration\n"), Scan::Pending);
        assert_eq!(
            scan(b"[INFO] reloading configuration\n[INFO] configuration reloaded\n"),
            Scan::Reloaded
        );
        assert_eq!(
            scan(b"x [INFO] reloading configuration\n[WARN] failed to build new server during reload: creating group router: no model config for \"m\"\n"),
            Scan::Refused("failed to build new server during reload: creating group router: no model config for \"m\"".into())
        );
        // An outcome without a start is not ours; a later start pends again.
        assert_eq!(scan(b"[INFO] configuration reloaded\n"), Scan::NotStarted);
        assert_eq!(
            scan(b"[INFO] reloading configuration\n[INFO] configuration reloaded\n[INFO] reloading configuration\n"),
            Scan::Pending
        );
        // Timestamps and prefixes before the level tag.
        assert_eq!(
            scan(b"2026-11-25 [proxy] [INFO] reloading configuration\r\n2026-11-25 [proxy] [INFO] configuration reloaded\r\n"),
            Scan::Reloaded
        );
    }
}
