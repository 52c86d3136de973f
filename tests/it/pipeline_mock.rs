//! The pipeline over an in-memory `RemoteOps`: every step's failure, with
//! the final file bytes, backups and call log asserted.

use std::cell::RefCell;
use std::time::{Duration, SystemTime};

use swapcfg::health::HealthError;
use swapcfg::pipeline::{apply, ApplyError, ApplyOptions, Hooks, RollbackError, Step};
use swapcfg::pipeline::{sha256_hex, RemoteState, Warning};
use swapcfg::remote::{
    BackupEntry, LockInfo, LockTaken, RemoteError, RemoteFile, RemoteOps, RestartOutcome,
};

const OLD: &[u8] = b"models:\n  a:\n    cmd: x --port ${PORT}\n";
const NEW: &[u8] = b"models:\n  b:\n    cmd: y --port ${PORT}\n";

#[derive(Default)]
struct Mock {
    file: RefCell<Vec<u8>>,
    backups: RefCell<Vec<(String, Vec<u8>)>>,
    log: RefCell<Vec<String>>,
    fail: RefCell<Vec<&'static str>>,
    /// Bytes someone else writes after the read (while the backup runs).
    concurrent_edit: RefCell<Option<Vec<u8>>>,
    /// Someone else's edit right after this apply's write.
    edit_after_write: RefCell<Option<Vec<u8>>>,
    /// The lock holder.
    lock: RefCell<Option<LockInfo>>,
    /// Whether `write` changes the file before failing (a lost reply).
    write_lands_then_fails: RefCell<bool>,
    /// Answers in order (as SFTP): the lock goes out with the backup.
    ordered: bool,
}

impl Mock {
    fn new(content: &[u8]) -> Mock {
        Mock {
            file: RefCell::new(content.to_vec()),
            ..Default::default()
        }
    }
    fn failing(self, ops: &[&'static str]) -> Mock {
        *self.fail.borrow_mut() = ops.to_vec();
        self
    }
    fn check(&self, op: &'static str) -> Result<(), RemoteError> {
        self.log.borrow_mut().push(op.to_string());
        let mut fail = self.fail.borrow_mut();
        if let Some(i) = fail.iter().position(|f| *f == op) {
            fail.remove(i);
            return Err(RemoteError::Failed {
                op,
                message: "injected".into(),
            });
        }
        Ok(())
    }
    fn calls(&self) -> Vec<String> {
        self.log.borrow().clone()
    }
}

impl RemoteOps for Mock {
    async fn read(&self) -> Result<RemoteFile, RemoteError> {
        self.check("read")?;
        Ok(RemoteFile {
            bytes: self.file.borrow().clone(),
            mode: Some(0o640),
            owner: Some((1234, 2345)),
        })
    }
    async fn backup(&self, current: &RemoteFile, _now: SystemTime) -> Result<String, RemoteError> {
        if let Some(b) = self.concurrent_edit.borrow_mut().take() {
            *self.file.borrow_mut() = b;
        }
        self.check("backup")?;
        let name = format!("c.bak-{}", self.backups.borrow().len());
        self.backups
            .borrow_mut()
            .push((name.clone(), current.bytes.clone()));
        Ok(name)
    }
    async fn write(
        &self,
        content: &[u8],
        _like: &RemoteFile,
        expect: Option<&str>,
    ) -> Result<(), RemoteError> {
        if *self.write_lands_then_fails.borrow() {
            *self.write_lands_then_fails.borrow_mut() = false;
            *self.file.borrow_mut() = content.to_vec();
            self.log.borrow_mut().push("write".into());
            return Err(RemoteError::Disconnected {
                op: "write",
                message: "reply lost".into(),
            });
        }
        self.check("write")?;
        let found = sha256_hex(&self.file.borrow());
        if let Some(e) = expect {
            if e != found {
                return Err(RemoteError::Changed {
                    path: "/etc/c.yaml".into(),
                    expected: e.into(),
                    found,
                });
            }
        }
        *self.file.borrow_mut() = content.to_vec();
        if let Some(b) = self.edit_after_write.borrow_mut().take() {
            *self.file.borrow_mut() = b;
        }
        Ok(())
    }
    async fn lock(&self, me: &LockInfo, now: u64, force: bool) -> Result<LockTaken, RemoteError> {
        self.check("lock")?;
        let mut l = self.lock.borrow_mut();
        match l.clone() {
            None => {
                *l = Some(me.clone());
                Ok(LockTaken::Fresh)
            }
            Some(h) if h.expired(now) || force => {
                *l = Some(me.clone());
                Ok(LockTaken::TookOver { previous: Some(h) })
            }
            Some(h) => Err(RemoteError::Locked {
                path: "/etc/c.yaml".into(),
                holder: Some(Box::new(h)),
            }),
        }
    }
    fn ordered(&self) -> bool {
        self.ordered
    }
    async fn unlock(&self, me: &LockInfo) -> Result<(), RemoteError> {
        self.check("unlock")?;
        let mut l = self.lock.borrow_mut();
        if l.as_ref().is_some_and(|h| h.token == me.token) {
            *l = None;
        }
        Ok(())
    }
    async fn restart(&self, _command: &str, _t: Duration) -> Result<RestartOutcome, RemoteError> {
        self.check("restart")?;
        Ok(RestartOutcome {
            status: Some(0),
            stdout: String::new(),
            stderr: String::new(),
        })
    }
    async fn list_backups(&self) -> Result<Vec<BackupEntry>, RemoteError> {
        self.check("list")?;
        Ok(self
            .backups
            .borrow()
            .iter()
            .map(|(p, b)| BackupEntry {
                path: p.clone(),
                size: b.len() as u64,
                mtime: None,
            })
            .collect())
    }
    async fn read_backup(&self, path: &str) -> Result<RemoteFile, RemoteError> {
        self.check("read_backup")?;
        let b = self
            .backups
            .borrow()
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, b)| b.clone());
        b.map(|bytes| RemoteFile {
            bytes,
            ..RemoteFile::default()
        })
        .ok_or(RemoteError::NotFound { path: path.into() })
    }
    async fn remove_backup(&self, path: &str) -> Result<(), RemoteError> {
        self.check("remove")?;
        self.backups.borrow_mut().retain(|(p, _)| p != path);
        Ok(())
    }
}

struct H {
    confirm: bool,
    health_fails: usize,
    health_calls: Vec<bool>,
}

impl Hooks for H {
    fn confirm(&mut self, _diff: &str) -> bool {
        self.confirm
    }
    async fn health(&mut self, rollback: bool) -> Result<(), HealthError> {
        self.health_calls.push(rollback);
        if self.health_fails > 0 {
            self.health_fails -= 1;
            return Err(HealthError::Unhealthy {
                url: "http://h/v1/models".into(),
                attempts: 1,
                elapsed: std::time::Duration::from_millis(5),
                last: swapcfg::health::Seen::Status {
                    status: 503,
                    body: "loading".into(),
                },
            });
        }
        Ok(())
    }
}

fn hooks() -> H {
    H {
        confirm: true,
        health_fails: 0,
        health_calls: Vec::new(),
    }
}

fn opts() -> ApplyOptions {
    ApplyOptions {
        host: "u@h:22".into(),
        config_path: "/etc/c.yaml".into(),
        new_label: "new.yaml".into(),
        dry_run: false,
        force: false,
        expect_sha256: None,
        restart_cmd: Some("systemctl restart llama-swap".into()),
        restart_timeout: Duration::from_secs(5),
        no_rollback: false,
        keep_backups: None,
        lock: Some(me("mine")),
        break_lock: false,
        stop: Default::default(),
        redactor: None,
        host_checks: None,
        strict_host: false,
    }
}

fn me(token: &str) -> LockInfo {
    LockInfo {
        token: token.into(),
        client: "laptop".into(),
        user: "ann".into(),
        pid: 7,
        started: 1_000,
        expires: u64::MAX,
    }
}

#[tokio::test]
async fn success_backs_up_writes_restarts_and_checks_health() {
    let m = Mock::new(OLD);
    let mut h = hooks();
    let r = apply(&m, NEW, &opts(), &mut h).await;
    assert!(r.ok && r.step == Step::Done && r.changed, "{r:?}");
    assert_eq!(*m.file.borrow(), NEW);
    assert_eq!(m.backups.borrow()[0].1, OLD);
    assert_eq!(r.backup_path.as_deref(), Some("c.bak-0"));
    assert_eq!(
        m.calls(),
        vec!["read", "lock", "backup", "write", "restart", "unlock"]
    );
    assert_eq!(h.health_calls, vec![false]);
    assert!(r.diff.contains("-  a:") && r.diff.contains("+  b:"));
    let order: Vec<Step> = r.timings_ms.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        order,
        vec![
            Step::Read,
            Step::Lock,
            Step::Backup,
            Step::Write,
            Step::Restart,
            Step::Health
        ],
        "timings in pipeline order"
    );
    assert!(r.ok && r.error.is_none());
}

#[tokio::test]
async fn unchanged_is_a_no_op_unless_forced() {
    let m = Mock::new(OLD);
    let r = apply(&m, OLD, &opts(), &mut hooks()).await;
    assert_eq!((r.ok, r.step, r.changed), (true, Step::Unchanged, false));
    assert_eq!(m.calls(), vec!["read"], "no backup, write or restart");
    let mut o = opts();
    o.force = true;
    let r = apply(&m, OLD, &o, &mut hooks()).await;
    assert_eq!(r.step, Step::Done);
    assert_eq!(m.backups.borrow().len(), 1);
}

#[tokio::test]
async fn dry_run_touches_nothing_and_exits_2_with_changes() {
    let m = Mock::new(OLD);
    let mut o = opts();
    o.dry_run = true;
    let r = apply(&m, NEW, &o, &mut hooks()).await;
    assert_eq!((r.ok, r.step), (true, Step::Planned));
    assert_eq!(*m.file.borrow(), OLD);
    assert_eq!(m.calls(), vec!["read"]);
    let r = apply(&m, OLD, &o, &mut hooks()).await;
    assert_eq!((r.ok, r.step), (true, Step::Unchanged));
}

#[tokio::test]
async fn refusal_to_confirm_writes_nothing() {
    let m = Mock::new(OLD);
    let mut h = hooks();
    h.confirm = false;
    let r = apply(&m, NEW, &opts(), &mut h).await;
    assert_eq!((r.ok, r.step), (false, Step::Aborted));
    assert!(matches!(r.error, Some(ApplyError::NotConfirmed)));
    assert_eq!(*m.file.borrow(), OLD);
    assert!(m.backups.borrow().is_empty());
}

#[tokio::test]
async fn concurrent_edit_is_caught_by_the_compare_before_the_rename() {
    let m = Mock::new(OLD);
    *m.concurrent_edit.borrow_mut() = Some(b"someone else\n".to_vec());
    let r = apply(&m, NEW, &opts(), &mut hooks()).await;
    assert_eq!(r.step, Step::Conflict);
    assert!(matches!(r.error, Some(ApplyError::ChangedMeanwhile { .. })));
    assert_eq!(*m.file.borrow(), b"someone else\n", "not clobbered");
    assert_eq!(
        m.backups.borrow()[0].1,
        OLD,
        "the backup holds what was read"
    );
    assert!(!m.calls().contains(&"restart".to_string()));
    assert!(m.lock.borrow().is_none(), "lock released");
}

#[tokio::test]
async fn a_live_lock_stops_the_apply_before_anything_is_written() {
    let m = Mock::new(OLD);
    *m.lock.borrow_mut() = Some(me("theirs"));
    let r = apply(&m, NEW, &opts(), &mut hooks()).await;
    assert_eq!((r.ok, r.step), (false, Step::Lock));
    match &r.error {
        Some(ApplyError::Remote(RemoteError::Locked {
            holder: Some(h), ..
        })) => {
            assert_eq!(h.token, "theirs")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(*m.file.borrow(), OLD);
    assert!(m.backups.borrow().is_empty());
    assert_eq!(m.calls(), vec!["read", "lock"]);
    assert_eq!(
        m.lock.borrow().as_ref().map(|h| h.token.clone()),
        Some("theirs".into()),
        "their lock is left alone"
    );
}

#[tokio::test]
async fn an_expired_lock_is_taken_over_with_a_warning_and_break_lock_forces() {
    let m = Mock::new(OLD);
    let mut stale = me("stale");
    stale.expires = 10;
    *m.lock.borrow_mut() = Some(stale);
    let r = apply(&m, NEW, &opts(), &mut hooks()).await;
    assert_eq!(r.step, Step::Done);
    assert!(r.warnings.iter().any(|w| matches!(
        w,
        Warning::LockTakenOver { previous: Some(p) } if p.token == "stale"
    )));
    assert!(m.lock.borrow().is_none(), "released after success");

    let m = Mock::new(OLD);
    *m.lock.borrow_mut() = Some(me("live"));
    let mut o = opts();
    o.break_lock = true;
    let r = apply(&m, NEW, &o, &mut hooks()).await;
    assert_eq!(r.step, Step::Done);
    assert_eq!(*m.file.borrow(), NEW);
}

#[tokio::test]
async fn plans_and_unchanged_applies_take_no_lock() {
    let m = Mock::new(OLD);
    *m.lock.borrow_mut() = Some(me("theirs"));
    let mut o = opts();
    o.dry_run = true;
    let r = apply(&m, NEW, &o, &mut hooks()).await;
    assert_eq!(r.step, Step::Planned);
    let r = apply(&m, OLD, &opts(), &mut hooks()).await;
    assert_eq!(r.step, Step::Unchanged);
    assert_eq!(m.calls(), vec!["read", "read"]);
}

#[tokio::test]
async fn rollback_does_not_clobber_a_file_someone_changed_after_the_write() {
    let m = Mock::new(OLD).failing(&["restart"]);
    *m.edit_after_write.borrow_mut() = Some(b"their fix\n".to_vec());
    let r = apply(&m, NEW, &opts(), &mut hooks()).await;
    assert_eq!((r.step, r.rolled_back), (Step::Rollback, false));
    assert!(matches!(r.rollback_error, Some(RollbackError::Changed(_))));
    assert_eq!(*m.file.borrow(), b"their fix\n", "left as they made it");
    assert_eq!(r.remote_state, Some(RemoteState::Unknown));
    assert!(m.lock.borrow().is_none());
}

#[tokio::test]
async fn a_lost_write_reply_is_resolved_by_reading_the_file_back() {
    let m = Mock::new(OLD);
    *m.write_lands_then_fails.borrow_mut() = true;
    let r = apply(&m, NEW, &opts(), &mut hooks()).await;
    assert_eq!(r.step, Step::Write);
    assert_eq!(
        r.remote_state,
        Some(RemoteState::New),
        "read back: the new bytes landed"
    );
    assert!(r.state_reread);
    assert_eq!(*m.file.borrow(), NEW);

    // A write refused before the rename: the old bytes, seen again.
    let m = Mock::new(OLD).failing(&["write"]);
    let r = apply(&m, NEW, &opts(), &mut hooks()).await;
    assert_eq!(
        (r.step, r.remote_state),
        (Step::Write, Some(RemoteState::Old))
    );
    assert!(r.state_reread);
}

#[tokio::test]
async fn the_fresh_backup_is_never_pruned() {
    let m = Mock::new(OLD);
    let mut o = opts();
    o.keep_backups = Some(0);
    o.force = true;
    for _ in 0..2 {
        let r = apply(&m, NEW, &o, &mut hooks()).await;
        assert_eq!(r.step, Step::Done);
    }
    let names: Vec<String> = m.backups.borrow().iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert_eq!(
        m.backups.borrow()[0].1,
        NEW,
        "the one just made (of the 2nd run)"
    );
}

#[tokio::test]
async fn expect_sha256_pins_the_planned_version() {
    let m = Mock::new(OLD);
    let mut o = opts();
    o.expect_sha256 = Some("00".repeat(32));
    let r = apply(&m, NEW, &o, &mut hooks()).await;
    assert_eq!(r.step, Step::Conflict);
    assert_eq!(*m.file.borrow(), OLD);
    o.expect_sha256 = Some(swapcfg::pipeline::sha256_hex(OLD).to_uppercase());
    let r = apply(&m, NEW, &o, &mut hooks()).await;
    assert_eq!(r.step, Step::Done);
}

#[tokio::test]
async fn read_backup_and_write_failures_stop_with_the_old_file() {
    for (op, step) in [
        ("read", Step::Read),
        ("backup", Step::Backup),
        ("write", Step::Write),
    ] {
        let m = Mock::new(OLD).failing(&[op]);
        let r = apply(&m, NEW, &opts(), &mut hooks()).await;
        assert_eq!((r.ok, r.step), (false, step), "{op}");
        assert!(matches!(r.error, Some(ApplyError::Remote(_))), "{op}");
        assert_eq!(*m.file.borrow(), OLD, "{op}: old bytes intact");
        assert!(
            !m.calls().contains(&"restart".to_string()),
            "{op}: no restart"
        );
    }
}

#[tokio::test]
async fn restart_failure_restores_old_bytes_and_restarts_again() {
    let m = Mock::new(OLD).failing(&["restart"]);
    let mut h = hooks();
    let r = apply(&m, NEW, &opts(), &mut h).await;
    assert_eq!((r.ok, r.step, r.rolled_back), (false, Step::Restart, true));
    assert_eq!(*m.file.borrow(), OLD);
    assert_eq!(
        m.calls(),
        vec!["read", "lock", "backup", "write", "restart", "write", "restart", "unlock"]
    );
    assert_eq!(
        h.health_calls,
        vec![true],
        "health re-checked after rollback only"
    );
    assert!(r
        .error
        .as_ref()
        .is_some_and(|e| e.to_string().contains("injected")));
}

#[tokio::test]
async fn health_failure_rolls_back() {
    let m = Mock::new(OLD);
    let mut h = hooks();
    h.health_fails = 1;
    let r = apply(&m, NEW, &opts(), &mut h).await;
    assert_eq!((r.step, r.rolled_back), (Step::Health, true));
    assert_eq!(*m.file.borrow(), OLD);
    assert_eq!(h.health_calls, vec![false, true]);
}

#[tokio::test]
async fn failed_rollback_is_reported_loudly() {
    let m = Mock::new(OLD);
    let mut h = hooks();
    h.health_fails = 2;
    let r = apply(&m, NEW, &opts(), &mut h).await;
    assert_eq!((r.step, r.rolled_back), (Step::Rollback, false));
    assert!(matches!(r.rollback_error, Some(RollbackError::Health(_))));
    assert_eq!(
        *m.file.borrow(),
        OLD,
        "old bytes were written back even though health still fails"
    );
}

#[tokio::test]
async fn no_rollback_keeps_the_new_file_and_the_backup() {
    let m = Mock::new(OLD).failing(&["restart"]);
    let mut o = opts();
    o.no_rollback = true;
    let r = apply(&m, NEW, &o, &mut hooks()).await;
    assert_eq!((r.step, r.rolled_back), (Step::Restart, false));
    assert_eq!(*m.file.borrow(), NEW);
    assert_eq!(m.backups.borrow()[0].1, OLD);
    assert!(
        r.kept_new,
        "the report says the new config was kept on purpose"
    );
}

#[tokio::test]
async fn keep_backups_prunes_the_oldest_after_success() {
    let m = Mock::new(OLD);
    let mut o = opts();
    o.force = true;
    o.keep_backups = Some(2);
    for _ in 0..3 {
        let r = apply(&m, NEW, &o, &mut hooks()).await;
        assert_eq!(r.step, Step::Done);
    }
    let names: Vec<String> = m.backups.borrow().iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(names, vec!["c.bak-1", "c.bak-2"]);
}

#[tokio::test]
async fn restart_none_skips_the_restart() {
    let m = Mock::new(OLD);
    let mut o = opts();
    o.restart_cmd = None;
    let r = apply(&m, NEW, &o, &mut hooks()).await;
    assert_eq!(r.step, Step::Done);
    assert!(!m.calls().contains(&"restart".to_string()));
}

/// Hooks that record the order of marks and checks, answering health with
/// a fixed result per call.
struct Marks<'a> {
    m: &'a Mock,
    seen: Vec<String>,
    results: Vec<Result<(), HealthError>>,
}

impl Hooks for Marks<'_> {
    fn confirm(&mut self, _diff: &str) -> bool {
        true
    }
    async fn before_write(&mut self, bytes: &[u8], rollback: bool) {
        // The file still holds what was there before this write.
        let now = self.m.file.borrow().clone();
        self.seen.push(format!(
            "mark rollback={rollback} len={} file_was_new={}",
            bytes.len(),
            now == NEW
        ));
    }
    async fn health(&mut self, rollback: bool) -> Result<(), HealthError> {
        self.seen.push(format!("health rollback={rollback}"));
        if self.results.is_empty() {
            Ok(())
        } else {
            self.results.remove(0)
        }
    }
}

#[tokio::test]
async fn the_mark_is_taken_right_before_each_write_and_a_401_is_not_rolled_back() {
    let m = Mock::new(OLD);
    let refused = HealthError::ReloadRefused {
        url: "http://h".into(),
        reason: "failed to reload config: x".into(),
    };
    let mut h = Marks {
        m: &m,
        seen: Vec::new(),
        results: vec![Err(refused)],
    };
    let r = apply(&m, NEW, &opts(), &mut h).await;
    assert_eq!((r.step, r.rolled_back), (Step::Health, true));
    assert_eq!(
        h.seen,
        [
            format!("mark rollback=false len={} file_was_new=false", NEW.len()),
            "health rollback=false".to_string(),
            format!("mark rollback=true len={} file_was_new=true", OLD.len()),
            "health rollback=true".to_string(),
        ]
    );
    assert_eq!(*m.file.borrow(), OLD);

    // A 401 after the change: llama-swap answers; the new file is kept,
    // no second restart, no rollback error.
    let m = Mock::new(OLD);
    let mut h = Marks {
        m: &m,
        seen: Vec::new(),
        results: vec![Err(HealthError::Unauthorized {
            url: "http://h/v1/models".into(),
            status: 401,
            key_sent: false,
        })],
    };
    let r = apply(&m, NEW, &opts(), &mut h).await;
    assert_eq!(
        (r.step, r.rolled_back, r.kept_new),
        (Step::Health, false, true)
    );
    assert!(r.rollback_error.is_none());
    assert_eq!(*m.file.borrow(), NEW);
    assert_eq!(h.seen.len(), 2, "no rollback mark or check: {:?}", h.seen);
    assert_eq!(
        m.log
            .borrow()
            .iter()
            .filter(|c| c.starts_with("restart"))
            .count(),
        1
    );
}

#[tokio::test]
async fn an_ordered_remote_sends_the_lock_with_the_backup_and_undoes_it_when_refused() {
    let m = Mock {
        ordered: true,
        ..Mock::new(OLD)
    };
    let r = apply(&m, NEW, &opts(), &mut hooks()).await;
    assert!(r.ok && r.step == Step::Done, "{r:?}");
    assert_eq!(
        m.calls(),
        vec!["read", "lock", "backup", "write", "restart", "unlock"]
    );
    assert_eq!(m.backups.borrow().len(), 1);

    // Held by a live apply: the backup made beside the lock is removed.
    let m = Mock {
        ordered: true,
        ..Mock::new(OLD)
    };
    *m.lock.borrow_mut() = Some(me("theirs"));
    let r = apply(&m, NEW, &opts(), &mut hooks()).await;
    assert_eq!((r.ok, r.step), (false, Step::Lock), "{r:?}");
    assert_eq!(m.calls(), vec!["read", "lock", "backup", "remove"]);
    assert!(m.backups.borrow().is_empty(), "no backup left");
    assert_eq!(*m.file.borrow(), OLD);
    assert_eq!(
        m.lock.borrow().as_ref().map(|l| l.token.clone()),
        Some("theirs".into())
    );

    // Expired: taken over, and the backup made again under the lock.
    let m = Mock {
        ordered: true,
        ..Mock::new(OLD)
    };
    let mut dead = me("dead");
    dead.expires = 1;
    *m.lock.borrow_mut() = Some(dead);
    let r = apply(&m, NEW, &opts(), &mut hooks()).await;
    assert!(r.ok && r.step == Step::Done, "{r:?}");
    assert_eq!(
        m.calls(),
        vec!["read", "lock", "backup", "remove", "backup", "write", "restart", "unlock"]
    );
    assert_eq!(m.backups.borrow().len(), 1, "one backup");
    assert_eq!(m.backups.borrow()[0].1, OLD);
    assert_eq!(*m.file.borrow(), NEW);
    assert!(r
        .warnings
        .iter()
        .any(|w| matches!(w, Warning::LockTakenOver { .. })));
}
