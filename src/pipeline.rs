//! The apply pipeline: read → diff → (plan) → confirm → conflict check →
//! backup → write → restart → health, with automatic rollback, written once
//! over [`RemoteOps`] so every failure path is testable with any remote.
//!
//! Owns: the order of the steps, the conflict guard (sha256 of the remote
//! bytes when read, compared again right before the write, and against
//! an expected hash), the unchanged no-op, rollback (write the backup's
//! bytes back atomically, restart again, re-check health), backup pruning,
//! and the [`ApplyReport`].
//!
//! Invariants: nothing is written before the confirmation and the conflict
//! check; a failure before `write` leaves the host untouched; a failure after
//! it is rolled back unless `no_rollback`; the report names the failing step
//! and carries the typed error. Validation happens before connecting (in the
//! caller).
//!
//! Architecture invariant: the pipeline knows no exit codes, flags or
//! terminals. What a step's failure means for the process is decided by the
//! binary's exit table; how it is worded for a person, by its renderer.

use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use crate::health::HealthError;
use crate::remote::{
    Committed, LockInfo, LockTaken, RemoteError, RemoteFile, RemoteOps, RestartOutcome,
};
use crate::stop::{Phase, Stop};
use crate::transport::TransportError;

/// The step an apply stopped at (or `done` / `unchanged` / `planned`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Validate,
    Connect,
    Read,
    /// Host checks (with `strict_host`: a problem stops the apply here).
    HostCheck,
    Lock,
    Conflict,
    Aborted,
    Backup,
    Write,
    Restart,
    Health,
    Rollback,
    /// Stopped on request after the write; the old config was restored.
    Interrupted,
    Planned,
    Unchanged,
    Done,
}

impl Step {
    /// The step's lowercase name (`read`, `health`, …).
    pub fn name(self) -> &'static str {
        match self {
            Step::Validate => "validate",
            Step::Connect => "connect",
            Step::Read => "read",
            Step::HostCheck => "host-check",
            Step::Lock => "lock",
            Step::Conflict => "conflict",
            Step::Aborted => "aborted",
            Step::Backup => "backup",
            Step::Write => "write",
            Step::Restart => "restart",
            Step::Health => "health",
            Step::Rollback => "rollback",
            Step::Interrupted => "interrupted",
            Step::Planned => "planned",
            Step::Unchanged => "unchanged",
            Step::Done => "done",
        }
    }
}

/// Why a step failed. Data first; the binary words it for people.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{label} is invalid ({errors} error(s)); nothing was sent to the host")]
    Invalid { label: String, errors: usize },
    #[error(transparent)]
    Connect(#[from] TransportError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Health(#[from] HealthError),
    #[error("remote config has sha256 {actual}, not the expected {expected}; re-plan against the current file")]
    NotExpected { actual: String, expected: String },
    #[error("{path} changed on the host while this apply ran (sha256 {} → {}); nothing was written, run again to see the new diff", .before.get(..12).unwrap_or(""), .after.get(..12).unwrap_or(""))]
    ChangedMeanwhile {
        path: String,
        before: String,
        after: String,
    },
    #[error("host checks found {problems} problem(s) with the new config on this host; nothing was changed")]
    HostCheck { problems: usize },
    #[error("not confirmed; nothing was changed")]
    NotConfirmed,
    #[error("interrupted before the write; nothing was changed")]
    InterruptedBefore,
    #[error("interrupted after the write; the old config was put back, restarted and checked")]
    InterruptedAfter,
}

/// Why the rollback itself failed.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("restoring the old config failed: {0}")]
    Restore(RemoteError),
    #[error("old config restored, but the restart failed: {0}")]
    Restart(RemoteError),
    #[error("old config restored and restarted, but health still fails: {0}")]
    Health(HealthError),
    #[error("not restoring: {0} after this apply wrote it (someone else changed it); it was left as it is")]
    Changed(RemoteError),
}

/// What the config path holds after the apply, as last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteState {
    /// The bytes read at the start (nothing was changed, or the rollback
    /// restored them).
    Old,
    /// The new bytes.
    New,
    /// Neither could be confirmed: the host did not answer, or it holds
    /// other bytes.
    Unknown,
}

impl RemoteState {
    pub fn name(self) -> &'static str {
        match self {
            RemoteState::Old => "old",
            RemoteState::New => "new",
            RemoteState::Unknown => "unknown",
        }
    }
}

/// What happened. The binary renders it (human text, `--json`); this type
/// is not itself an output format.
#[derive(Debug)]
pub struct ApplyReport {
    pub ok: bool,
    pub step: Step,
    pub host: String,
    pub config_path: String,
    pub changed: bool,
    pub backup_path: Option<String>,
    pub diff: String,
    pub error: Option<ApplyError>,
    /// The failure after the write was kept on purpose (`no_rollback`).
    pub kept_new: bool,
    pub rolled_back: bool,
    pub rollback_error: Option<RollbackError>,
    /// What the config holds at the end, as last seen (`None` before it
    /// was read).
    pub remote_state: Option<RemoteState>,
    /// Whether `remote_state` was confirmed by reading the file again after
    /// a failed write (rather than known from acknowledged requests).
    pub state_reread: bool,
    pub old_sha256: Option<String>,
    pub new_sha256: String,
    pub pruned_backups: Vec<String>,
    pub warnings: Vec<Warning>,
    /// What the host checks found (problems and notes), in config order.
    pub host_findings: Vec<crate::hostcheck::HostFinding>,
    /// Findings of validating the new file (errors and warnings), set by
    /// the caller that validated it; the pipeline itself does not validate.
    pub findings: Vec<crate::validate::Finding>,
    /// Milliseconds per step, in the order the steps ran.
    pub timings_ms: Vec<(Step, u64)>,
    /// The lock was already released (or handed to a recovery connection).
    lock_released: bool,
}

/// Something worth telling that did not stop the apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// Pruning was asked for but this mode cannot list or delete backups.
    PruneUnsupported { why: String },
    /// Listing backups for pruning failed.
    PruneList { error: String },
    /// One backup could not be deleted.
    PruneRemove { path: String, error: String },
    /// No health check was configured, so health was not checked.
    HealthNotChecked,
    /// This mode cannot lock; concurrent applies are not excluded.
    LockUnsupported { why: String },
    /// A lock whose lease had expired (or `break_lock`) was taken over.
    LockTakenOver { previous: Option<LockInfo> },
    /// The lock could not be removed at the end (its lease will expire).
    Unlock { error: String },
    /// About llama-swap: pre-flight, reload proof, rollback check.
    Service(crate::health::ServiceWarning),
}

impl ApplyReport {
    /// A report for a failure before any remote work (validate, connect).
    pub fn early(
        step: Step,
        host: &str,
        config_path: &str,
        new: &[u8],
        error: ApplyError,
    ) -> ApplyReport {
        ApplyReport {
            ok: false,
            step,
            host: host.to_string(),
            config_path: config_path.to_string(),
            changed: false,
            backup_path: None,
            diff: String::new(),
            error: Some(error),
            kept_new: false,
            rolled_back: false,
            rollback_error: None,
            remote_state: None,
            state_reread: false,
            old_sha256: None,
            new_sha256: sha256_hex(new),
            pruned_backups: Vec::new(),
            warnings: Vec::new(),
            host_findings: Vec::new(),
            findings: Vec::new(),
            timings_ms: Vec::new(),
            lock_released: false,
        }
    }

    /// Milliseconds spent in `step`, if it ran.
    pub fn timing(&self, step: Step) -> Option<u64> {
        self.timings_ms
            .iter()
            .find(|(s, _)| *s == step)
            .map(|(_, ms)| *ms)
    }
}

/// Inputs of one apply.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub host: String,
    pub config_path: String,
    /// Label of the new file in the diff header.
    pub new_label: String,
    pub dry_run: bool,
    pub force: bool,
    pub expect_sha256: Option<String>,
    /// `None` skips the restart (llama-swap runs with `-watch-config`).
    pub restart_cmd: Option<String>,
    pub restart_timeout: Duration,
    pub no_rollback: bool,
    pub keep_backups: Option<usize>,
    /// The lock record for this apply (`None`: do not lock).
    pub lock: Option<LockInfo>,
    /// Take the lock even from a live holder.
    pub break_lock: bool,
    /// Stop requests (signals) and the phase, shared with the caller.
    pub stop: Stop,
    /// Redacts secrets (apiKeys, secret env values…) in the diff; `None`
    /// shows them.
    pub redactor: Option<crate::redact::Redactor>,
    /// What to check on the host before writing (`None`: no host checks).
    /// Runs beside the read, so it costs no extra round trip.
    pub host_checks: Option<crate::hostcheck::Plan>,
    /// A host-check problem stops the apply before anything is written.
    pub strict_host: bool,
}

/// The parts of an apply that are not remote file operations.
#[allow(async_fn_in_trait)]
pub trait Hooks {
    /// Show the diff and ask; `false` aborts with nothing written.
    fn confirm(&mut self, diff: &str) -> bool;
    /// A step is starting (for progress output).
    fn step(&mut self, _step: Step) {}
    /// The config is about to be written (`rollback`: the old bytes back):
    /// record what proves the change later (llama-swap's log position).
    async fn before_write(&mut self, _bytes: &[u8], _rollback: bool) {}
    /// Check that llama-swap answers; after a change (`rollback == false`)
    /// it may also require the new config's models. `Err` is the reason.
    async fn health(&mut self, rollback: bool) -> Result<(), HealthError>;
    /// The connection was lost mid-apply: over a fresh connection (bounded
    /// by the caller's connect timeout), run [`RemoteOps::clean_up`] for
    /// `me` (this run's temp files, the lock if still ours) and read the
    /// config. `None` when that is not possible.
    async fn recover(&mut self, _me: Option<&LockInfo>) -> Option<Vec<u8>> {
        None
    }
}

/// Epoch seconds now.
pub fn epoch_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

/// Apply `new` to the config behind `remote`.
pub async fn apply<R: RemoteOps, H: Hooks>(
    remote: &R,
    new: &[u8],
    opts: &ApplyOptions,
    hooks: &mut H,
) -> ApplyReport {
    let mut rep = ApplyReport::early(
        Step::Read,
        &opts.host,
        &opts.config_path,
        new,
        ApplyError::NotConfirmed,
    );
    rep.error = None;
    macro_rules! timed {
        ($step:expr, $e:expr) => {{
            hooks.step($step);
            let t = Instant::now();
            let r = $e;
            rep.timings_ms.push(($step, ms(t.elapsed())));
            r
        }};
    }
    macro_rules! fail {
        ($step:expr, $err:expr) => {{
            rep.step = $step;
            rep.error = Some(ApplyError::from($err));
            return rep;
        }};
    }

    // The host checks ride along with the read (same round trips).
    let current = match opts.host_checks.as_ref().filter(|p| !p.is_empty()) {
        None => timed!(Step::Read, remote.read().await),
        Some(plan) => {
            let (current, answers) = timed!(Step::Read, remote.read_probing(&plan.queries).await);
            rep.host_findings = judged(plan, answers);
            current
        }
    };
    let current = match current {
        Ok(c) => c,
        Err(e) => fail!(Step::Read, e),
    };
    let old_sha = sha256_hex(&current.bytes);
    rep.old_sha256 = Some(old_sha.clone());
    rep.remote_state = Some(RemoteState::Old);
    // The report never holds a secret unless asked: both sides are
    // redacted with one redactor, so a changed secret still shows.
    rep.diff = match &opts.redactor {
        Some(r) => crate::diff::unified_diff(
            &r.redact(&current.bytes),
            &r.redact(new),
            &format!("{}:{}", opts.host, opts.config_path),
            &opts.new_label,
        ),
        None => crate::diff::unified_diff(
            &current.bytes,
            new,
            &format!("{}:{}", opts.host, opts.config_path),
            &opts.new_label,
        ),
    };
    if let Some(expected) = &opts.expect_sha256 {
        if !expected.eq_ignore_ascii_case(&old_sha) {
            fail!(
                Step::Conflict,
                ApplyError::NotExpected {
                    actual: old_sha,
                    expected: expected.clone(),
                }
            );
        }
    }
    let changed = current.bytes != new;
    rep.changed = changed;
    if !changed && !opts.force {
        rep.ok = true;
        rep.step = Step::Unchanged;
        return rep;
    }
    let problems = rep
        .host_findings
        .iter()
        .filter(|f| f.level == crate::hostcheck::Level::Problem)
        .count();
    if opts.strict_host && problems > 0 {
        fail!(Step::HostCheck, ApplyError::HostCheck { problems });
    }
    if opts.dry_run {
        rep.ok = true;
        rep.step = if changed {
            Step::Planned
        } else {
            Step::Unchanged
        };
        return rep;
    }
    if !hooks.confirm(&rep.diff) {
        fail!(Step::Aborted, ApplyError::NotConfirmed);
    }
    if opts.stop.requested() {
        fail!(Step::Aborted, ApplyError::InterruptedBefore);
    }

    // One apply at a time per config: everything from here to the end runs
    // under the lock (released on every path below). Where the host answers
    // requests in order (SFTP), the lock's request goes out first, with the
    // backup's and the staged write's behind it: they run under it. If it
    // is refused, or taken over from an expired holder (after they ran),
    // their work is undone (and, taken over, begun again under the lock).
    let mut early = None;
    let locked = match &opts.lock {
        None => None,
        Some(me) => {
            hooks.step(Step::Lock);
            let t = Instant::now();
            // Raced with a stop request: a host that never answers the
            // lock's request does not hold the run until its timeout.
            let lock = async {
                let r = opts
                    .stop
                    .race(remote.lock(me, epoch_now(), opts.break_lock))
                    .await;
                (r, ms(t.elapsed()))
            };
            let ((taken, lock_ms), staging) = if remote.ordered() {
                let (l, st) = futures::join!(lock, async {
                    hooks.step(Step::Backup);
                    stage(remote, &current, new, &old_sha, &opts.stop).await
                });
                (l, Some(st))
            } else {
                (lock.await, None)
            };
            rep.timings_ms.push((Step::Lock, lock_ms));
            let Some(taken) = taken else {
                // Stopped while the lock was asked for: this run's temp
                // files, and the lock if it got it, are removed — here if
                // that is quick, else over a fresh connection (requests on
                // this one may be queued behind the unanswered one).
                let quick =
                    tokio::time::timeout(Duration::from_secs(2), remote.clean_up(Some(me))).await;
                if !matches!(quick, Ok(Ok(()))) && hooks.recover(Some(me)).await.is_none() {
                    rep.warnings.push(Warning::Unlock {
                        error: "the host could not be reached to remove the lock and temp files"
                            .into(),
                    });
                }
                fail!(Step::Aborted, ApplyError::InterruptedBefore);
            };
            match taken {
                Ok(LockTaken::Fresh) => {
                    early = staging;
                    Some(me)
                }
                Ok(LockTaken::TookOver { previous }) => {
                    undo(remote, staging).await;
                    rep.warnings.push(Warning::LockTakenOver { previous });
                    Some(me)
                }
                Err(RemoteError::Unsupported { why, .. }) => {
                    early = staging;
                    rep.warnings.push(Warning::LockUnsupported { why });
                    None
                }
                Err(e) if lost(&e) => {
                    // Cut off with the lock's reply in flight, and the backup
                    // and staged upload beside it: the lock (and a temp file)
                    // may be this run's. The recovery removes this run's
                    // temp files and the lock if it carries this run's
                    // token, and reads what the config holds. The upload
                    // cut beside it is the step named.
                    let mut staging = staging;
                    let cut = match staging.as_mut() {
                        Some(st) if matches!(&st.staged, Err(w) if lost(w)) => {
                            let placeholder = Err(RemoteError::Failed {
                                op: "write",
                                message: String::new(),
                            });
                            std::mem::replace(&mut st.staged, placeholder).err()
                        }
                        _ => None,
                    };
                    undo(remote, staging).await;
                    observe(remote, &current.bytes, new, Some(me), hooks, &mut rep).await;
                    match cut {
                        Some(w) => fail!(Step::Write, w),
                        None => fail!(Step::Lock, e),
                    }
                }
                Err(e) => {
                    undo(remote, staging).await;
                    fail!(Step::Lock, e)
                }
            }
        }
    };
    if opts.stop.requested() && early.is_none() {
        rep.step = Step::Aborted;
        rep.error = Some(ApplyError::InterruptedBefore);
    } else {
        changing(
            remote, &current, new, &old_sha, locked, early, opts, hooks, &mut rep,
        )
        .await;
    }
    if let Some(me) = locked.filter(|_| !rep.lock_released) {
        match remote.unlock(me).await {
            Ok(()) => {}
            Err(e) if lost(&e) && rep.state_reread => {} // recovered already
            Err(e) if lost(&e) && hooks.recover(Some(me)).await.is_some() => {}
            Err(e) => rep.warnings.push(Warning::Unlock {
                error: e.to_string(),
            }),
        }
    }
    rep
}

/// Host checks: ask the host (all queries at once) and judge the answers.
/// A mode that cannot look, or a failed look, gives one note: host checks
/// never stop an apply by failing themselves.
pub async fn check_host<R: RemoteOps>(
    remote: &R,
    plan: &crate::hostcheck::Plan,
) -> Vec<crate::hostcheck::HostFinding> {
    judged(plan, remote.probe(&plan.queries).await)
}

fn judged(
    plan: &crate::hostcheck::Plan,
    answers: Result<Vec<crate::hostcheck::Answer>, RemoteError>,
) -> Vec<crate::hostcheck::HostFinding> {
    use crate::hostcheck::{judge, HostFinding};
    match answers {
        Ok(answers) => judge(plan, &answers),
        Err(RemoteError::Unsupported { why, .. }) => {
            vec![HostFinding::note(format!("host checks unavailable: {why}"))]
        }
        Err(e) => vec![HostFinding::note(format!("host checks failed: {e}"))],
    }
}

/// The session is gone (as opposed to a refusal the host answered).
fn lost(e: &RemoteError) -> bool {
    matches!(
        e,
        RemoteError::Timeout { .. }
            | RemoteError::Disconnected { .. }
            | RemoteError::Transport(
                TransportError::Timeout { .. } | TransportError::Disconnected { .. }
            )
    )
}

/// Backup, write (compare-and-swap against `old_sha`), restart, health,
/// rollback, prune: the steps that run under the lock.
#[allow(clippy::too_many_arguments)]
async fn changing<R: RemoteOps, H: Hooks>(
    remote: &R,
    current: &RemoteFile,
    new: &[u8],
    old_sha: &str,
    me: Option<&LockInfo>,
    early: Option<Staging>,
    opts: &ApplyOptions,
    hooks: &mut H,
    rep: &mut ApplyReport,
) {
    macro_rules! timed {
        ($step:expr, $e:expr) => {{
            hooks.step($step);
            let t = Instant::now();
            let r = $e;
            rep.timings_ms.push(($step, ms(t.elapsed())));
            r
        }};
    }
    let stop = &opts.stop;
    // Begun beside the lock already (an ordered remote), or now.
    let Staging {
        backup,
        backup_ms,
        staged,
        t,
    } = match early {
        Some(st) => st,
        None => {
            hooks.step(Step::Backup);
            stage(remote, current, new, old_sha, stop).await
        }
    };
    rep.timings_ms.push((Step::Backup, backup_ms));
    let backup = match backup {
        Some(Ok(b)) => b,
        Some(Err(e)) => {
            if let Ok(s) = staged {
                remote.discard_write(s).await;
            }
            rep.step = Step::Backup;
            rep.error = Some(e.into());
            return;
        }
        None => {
            // Stopped mid-backup: its temp file (and the staged one) may be
            // left. Requests on this session may be queued behind the
            // interrupted upload, so clean up here only if that is quick,
            // else over a fresh connection.
            let quick = tokio::time::timeout(Duration::from_secs(2), remote.clean_up(me)).await;
            if !matches!(quick, Ok(Ok(()))) && hooks.recover(me).await.is_none() {
                rep.warnings.push(Warning::Unlock {
                    error: "the host could not be reached to remove the lock and temp files".into(),
                });
            }
            rep.lock_released = true;
            rep.step = Step::Aborted;
            rep.error = Some(ApplyError::InterruptedBefore);
            return;
        }
    };
    rep.backup_path = Some(backup.clone());
    if stop.requested() {
        if let Ok(s) = staged {
            remote.discard_write(s).await;
        }
        rep.step = Step::Aborted;
        rep.error = Some(ApplyError::InterruptedBefore);
        return;
    }

    // The write is never cut short: it is atomic and bounded by timeouts.
    hooks.before_write(new, false).await;
    stop.set_phase(Phase::Writing);
    hooks.step(Step::Write);
    // Where the mode can, the restart goes out with the commit: the host
    // starts it once the config holds the new bytes (no round trip of its
    // own); `early` is its outcome.
    let send_restart = opts
        .restart_cmd
        .as_deref()
        .map(|cmd| (cmd, opts.restart_timeout));
    let committed = match staged {
        Ok(s) => {
            remote
                .commit_write_restarting(s, new, current, Some(old_sha), send_restart)
                .await
        }
        Err(e) => Committed::alone(Err(e)),
    };
    let Committed {
        written,
        written_at,
        restart: early,
    } = committed;
    rep.timings_ms
        .push((Step::Write, ms(written_at.saturating_duration_since(t))));
    let early = early.map(|r| (r, written_at));
    if let Err(e) = written {
        stop.set_phase(Phase::Untouched);
        if let RemoteError::Changed { found, .. } = &e {
            rep.step = Step::Conflict;
            rep.error = Some(ApplyError::ChangedMeanwhile {
                path: opts.config_path.clone(),
                before: old_sha.to_string(),
                after: found.clone(),
            });
            return;
        }
        rep.step = Step::Write;
        rep.error = Some(e.into());
        observe(remote, &current.bytes, new, me, hooks, rep).await;
        if rep.remote_state == Some(RemoteState::New) {
            stop.set_phase(Phase::NewInPlace);
        }
        return;
    }
    rep.remote_state = Some(RemoteState::New);
    stop.set_phase(Phase::NewInPlace);

    // Restart and health give way to a stop request: the change is then
    // undone like a failed one (whatever --no-rollback says).
    let failure: Option<(Step, ApplyError)> = if stop.requested() {
        Some((Step::Interrupted, ApplyError::InterruptedAfter))
    } else {
        // The restart is not raced here: the session ends it on a stop
        // request itself and stops it on the host, so the rollback's
        // restart never runs beside it. The lock is read back beside it, so
        // the unlock at the end needs no read of its own.
        let recheck = async {
            if let Some(me) = me {
                remote.recheck_lock(me).await;
            }
        };
        let (restarted, ()) = tokio::join!(restart(remote, opts, early, hooks, rep), recheck);
        match restarted {
            Err(RemoteError::Transport(TransportError::Cancelled { .. })) => {
                Some((Step::Interrupted, ApplyError::InterruptedAfter))
            }
            Err(e) => Some((Step::Restart, e.into())),
            Ok(()) if stop.requested() => Some((Step::Interrupted, ApplyError::InterruptedAfter)),
            Ok(()) => match timed!(Step::Health, stop.race(hooks.health(false)).await) {
                None => Some((Step::Interrupted, ApplyError::InterruptedAfter)),
                Some(Err(e)) => Some((Step::Health, e.into())),
                Some(Ok(())) => None,
            },
        }
    };
    if let Some((step, err)) = failure {
        rep.step = step;
        rep.error = Some(err);
        // A 401 after the change: llama-swap runs and answers, but swapcfg
        // holds no (valid) key to check it; rolling back would meet the same
        // 401. Kept and reported as a key problem.
        let unverifiable = matches!(
            rep.error,
            Some(ApplyError::Health(HealthError::Unauthorized { .. }))
        );
        if (opts.no_rollback || unverifiable) && step != Step::Interrupted {
            rep.kept_new = true;
            return;
        }
        stop.set_phase(Phase::RollingBack);
        rollback(remote, current, new, me, opts, hooks, rep).await;
        if rep.rolled_back {
            stop.set_phase(Phase::Restored);
        }
        return;
    }

    if let Some(keep) = opts.keep_backups {
        prune(remote, keep, &backup, rep).await;
    }
    rep.ok = true;
    rep.step = Step::Done;
}

/// The backup and the staged write, begun together.
struct Staging {
    /// `None`: stopped before both halves were done.
    backup: Option<Result<String, RemoteError>>,
    backup_ms: u64,
    staged: Result<crate::remote::Staged, RemoteError>,
    /// When they began (`write` counts from here too).
    t: Instant,
}

/// The backup and the upload of the new bytes run at the same time; the
/// config is replaced (commit) only once the backup exists. Both steps'
/// times count from this start (`write` includes the wait for `backup`).
/// `futures::join!` polls in order (tokio's rotates): the backup's requests
/// always go out first, so the order on the wire is fixed.
async fn stage<R: RemoteOps>(
    remote: &R,
    current: &RemoteFile,
    new: &[u8],
    old_sha: &str,
    stop: &Stop,
) -> Staging {
    let t = Instant::now();
    let ((backup, backup_ms), staged) = futures::join!(
        async {
            let b = stop.race(remote.backup(current, SystemTime::now())).await;
            (b, ms(t.elapsed()))
        },
        stop.race(remote.prepare_write(new, current, Some(old_sha)))
    );
    // A stop request ends both halves at once (neither waits for the other).
    let (backup, staged) = match (backup, staged) {
        (Some(b), Some(st)) => (Some(b), st),
        _ => (
            None,
            Err(RemoteError::Failed {
                op: "write",
                message: "stopped".into(),
            }),
        ),
    };
    Staging {
        backup,
        backup_ms,
        staged,
        t,
    }
}

/// Undo a staging that ran beside a lock this apply did not get (or got
/// only by taking it over, after the staging ran): its temp file and the
/// backup it made (a name of its own) are removed.
async fn undo<R: RemoteOps>(remote: &R, early: Option<Staging>) {
    let Some(st) = early else { return };
    if let Ok(s) = st.staged {
        remote.discard_write(s).await;
    }
    match st.backup {
        Some(Ok(b)) => {
            let _ = remote.remove_backup(&b).await;
        }
        Some(Err(_)) => {}
        None => {
            let _ = tokio::time::timeout(Duration::from_secs(2), remote.clean_up(None)).await;
        }
    }
}

/// After a failed write: what does the config hold now? Read it on this
/// session; if the session is gone, over a fresh one (via the hooks).
async fn observe<R: RemoteOps, H: Hooks>(
    remote: &R,
    old: &[u8],
    new: &[u8],
    me: Option<&LockInfo>,
    hooks: &mut H,
    rep: &mut ApplyReport,
) {
    let seen = match remote.read().await {
        Ok(f) => Some(f.bytes),
        Err(e) if lost(&e) => hooks.recover(me).await,
        Err(_) => None,
    };
    rep.state_reread = seen.is_some();
    rep.remote_state = Some(match seen {
        Some(b) if b == old => RemoteState::Old,
        Some(b) if b == new => RemoteState::New,
        _ => RemoteState::Unknown,
    });
}

/// Run the restart command, unless it already ran with the commit
/// (`early`: its outcome, and when the commit's reply came: its time is
/// what the apply waited for it past that reply).
async fn restart<R: RemoteOps, H: Hooks>(
    remote: &R,
    opts: &ApplyOptions,
    early: Option<(Result<RestartOutcome, RemoteError>, Instant)>,
    hooks: &mut H,
    rep: &mut ApplyReport,
) -> Result<(), RemoteError> {
    let Some(cmd) = &opts.restart_cmd else {
        return Ok(());
    };
    hooks.step(Step::Restart);
    let (r, t) = match early {
        Some((r, written_at)) => (r, written_at),
        None => {
            let t = Instant::now();
            (remote.restart(cmd, opts.restart_timeout).await, t)
        }
    };
    rep.timings_ms.push((Step::Restart, ms(t.elapsed())));
    r.map(|_| ())
}

/// Put the old bytes back (only over the bytes this apply wrote), restart
/// and re-check health.
async fn rollback<R: RemoteOps, H: Hooks>(
    remote: &R,
    old: &RemoteFile,
    new: &[u8],
    me: Option<&LockInfo>,
    opts: &ApplyOptions,
    hooks: &mut H,
    rep: &mut ApplyReport,
) {
    hooks.step(Step::Rollback);
    let t = Instant::now();
    let new_sha = sha256_hex(new);
    let mut restored = false;
    hooks.before_write(&old.bytes, true).await;
    let result: Result<(), RollbackError> = async {
        remote
            .write(&old.bytes, old, Some(&new_sha))
            .await
            .map_err(|e| match e {
                RemoteError::Changed { .. } => RollbackError::Changed(e),
                e => RollbackError::Restore(e),
            })?;
        restored = true;
        if let Some(cmd) = &opts.restart_cmd {
            remote
                .restart(cmd, opts.restart_timeout)
                .await
                .map_err(RollbackError::Restart)?;
        }
        hooks.health(true).await.map_err(RollbackError::Health)
    }
    .await;
    rep.timings_ms.push((Step::Rollback, ms(t.elapsed())));
    if restored {
        rep.remote_state = Some(RemoteState::Old);
    }
    match result {
        Ok(()) => rep.rolled_back = true,
        Err(e) => {
            rep.rolled_back = false;
            if let RollbackError::Restore(_) = &e {
                observe(remote, &old.bytes, new, me, hooks, rep).await;
            } else if let RollbackError::Changed(_) = &e {
                rep.remote_state = Some(RemoteState::Unknown);
            }
            rep.rollback_error = Some(e);
            rep.step = Step::Rollback;
        }
    }
}

/// Remove the oldest backups beyond `keep` (the list is swapcfg's names
/// only, oldest first); the backup this apply made is never removed.
async fn prune<R: RemoteOps>(remote: &R, keep: usize, fresh: &str, rep: &mut ApplyReport) {
    match remote.list_backups().await {
        Ok(list) => {
            let excess = list.len().saturating_sub(keep);
            for b in list.into_iter().filter(|b| b.path != fresh).take(excess) {
                match remote.remove_backup(&b.path).await {
                    Ok(()) => rep.pruned_backups.push(b.path),
                    Err(e) => rep.warnings.push(Warning::PruneRemove {
                        path: b.path,
                        error: e.to_string(),
                    }),
                }
            }
        }
        Err(RemoteError::Unsupported { why, .. }) => {
            rep.warnings.push(Warning::PruneUnsupported { why })
        }
        Err(e) => rep.warnings.push(Warning::PruneList {
            error: e.to_string(),
        }),
    }
}
