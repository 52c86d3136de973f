//! The apply pipeline: read → diff → (plan) → confirm → conflict check →
//! backup → write → restart → health, with automatic rollback, written once
//! over [`RemoteOps`] so every failure path is testable with any remote.
//!
//! Owns: the order of the steps, the conflict guard (sha256 of the remote
//! bytes when read, compared again right before the write, and against
//! `--expect-sha256`), the unchanged no-op, rollback (write the backup's
//! bytes back atomically, restart again, re-check health), backup pruning,
//! and the [`ApplyReport`].
//!
//! Invariants: nothing is written before the confirmation and the conflict
//! check; a failure before `write` leaves the host untouched; a failure after
//! it is rolled back unless `no_rollback`; the report names the failing step.
//! Validation happens before connecting (in the command layer).

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use crate::remote::{RemoteError, RemoteFile, RemoteOps};

/// The step an apply stopped at (or `done` / `unchanged` / `planned`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    Validate,
    Connect,
    Read,
    Conflict,
    Aborted,
    Backup,
    Write,
    Restart,
    Health,
    Rollback,
    Planned,
    Unchanged,
    Done,
}

impl Step {
    /// The exit status for a report ending at this step.
    pub fn exit_code(self, ok: bool) -> u8 {
        use crate::cmd::exit;
        match self {
            Step::Done | Step::Unchanged => exit::OK,
            Step::Planned => exit::USAGE, // dry run: changes pending
            Step::Validate => exit::INVALID,
            Step::Connect => exit::CONNECT,
            Step::Read => exit::READ,
            Step::Conflict => exit::CONFLICT,
            Step::Aborted => exit::ABORTED,
            Step::Backup => exit::BACKUP,
            Step::Write => exit::WRITE,
            Step::Restart => exit::RESTART,
            Step::Health => exit::HEALTH,
            Step::Rollback if ok => exit::OK,
            Step::Rollback => exit::ROLLBACK_FAILED,
        }
    }
}

/// What happened, for humans and `--json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApplyReport {
    pub ok: bool,
    pub step: Step,
    pub host: String,
    pub config_path: String,
    pub changed: bool,
    pub backup_path: Option<String>,
    pub diff: String,
    pub error: Option<String>,
    pub rolled_back: bool,
    pub rollback_error: Option<String>,
    pub old_sha256: Option<String>,
    pub new_sha256: String,
    pub pruned_backups: Vec<String>,
    pub warnings: Vec<String>,
    pub timings_ms: BTreeMap<&'static str, u64>,
}

impl ApplyReport {
    /// A report for a failure before any remote work (validate, connect).
    pub fn early(
        step: Step,
        host: &str,
        config_path: &str,
        new: &[u8],
        error: String,
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
            rolled_back: false,
            rollback_error: None,
            old_sha256: None,
            new_sha256: sha256_hex(new),
            pruned_backups: Vec::new(),
            warnings: Vec::new(),
            timings_ms: BTreeMap::new(),
        }
    }

    pub fn exit_code(&self) -> u8 {
        self.step.exit_code(self.ok)
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
}

/// The parts of an apply that are not remote file operations.
#[allow(async_fn_in_trait)]
pub trait Hooks {
    /// Show the diff and ask; `false` aborts with nothing written.
    fn confirm(&mut self, diff: &str) -> bool;
    /// A step is starting (for progress output).
    fn step(&mut self, _step: Step) {}
    /// Check that llama-swap answers; after a change (`rollback == false`)
    /// it may also require the new config's models. `Err` is the reason.
    async fn health(&mut self, rollback: bool) -> Result<(), String>;
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
        String::new(),
    );
    rep.error = None;
    macro_rules! timed {
        ($name:expr, $step:expr, $e:expr) => {{
            hooks.step($step);
            let t = Instant::now();
            let r = $e;
            rep.timings_ms.insert($name, ms(t.elapsed()));
            r
        }};
    }
    macro_rules! fail {
        ($step:expr, $err:expr) => {{
            rep.step = $step;
            rep.error = Some($err.to_string());
            return rep;
        }};
    }

    let current = match timed!("read", Step::Read, remote.read().await) {
        Ok(c) => c,
        Err(e) => fail!(Step::Read, e),
    };
    let old_sha = sha256_hex(&current.bytes);
    rep.old_sha256 = Some(old_sha.clone());
    rep.diff = crate::diff::unified_diff(
        &current.bytes,
        new,
        &format!("{}:{}", opts.host, opts.config_path),
        &opts.new_label,
    );
    if let Some(expected) = &opts.expect_sha256 {
        if !expected.eq_ignore_ascii_case(&old_sha) {
            fail!(Step::Conflict, format!("remote config has sha256 {old_sha}, not the expected {expected}; re-plan against the current file"));
        }
    }
    let changed = current.bytes != new;
    rep.changed = changed;
    if !changed && !opts.force {
        rep.ok = true;
        rep.step = Step::Unchanged;
        return rep;
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
        fail!(Step::Aborted, "not confirmed; nothing was changed");
    }

    // Conflict guard: the file must still be what we planned against.
    match timed!("conflict", Step::Conflict, remote.read().await) {
        Ok(again) if sha256_hex(&again.bytes) == old_sha => {}
        Ok(again) => fail!(
            Step::Conflict,
            format!(
                "{} changed on the host while this apply ran (sha256 {} → {}); nothing was written, run again to see the new diff",
                opts.config_path,
                &old_sha[..12],
                &sha256_hex(&again.bytes)[..12]
            )
        ),
        Err(e) => fail!(Step::Conflict, e),
    }

    let backup = match timed!(
        "backup",
        Step::Backup,
        remote.backup(&current, SystemTime::now()).await
    ) {
        Ok(b) => b,
        Err(e) => fail!(Step::Backup, format!("{e}; nothing was written")),
    };
    rep.backup_path = Some(backup.clone());

    if let Err(e) = timed!("write", Step::Write, remote.write(new, current.mode).await) {
        fail!(
            Step::Write,
            format!("{e}; the old config is intact (backup at {backup})")
        );
    }

    let failure: Option<(Step, String)> = match restart(remote, opts, hooks, &mut rep).await {
        Err(e) => Some((Step::Restart, e)),
        Ok(()) => match timed!("health", Step::Health, hooks.health(false).await) {
            Err(e) => Some((Step::Health, e)),
            Ok(()) => None,
        },
    };
    if let Some((step, err)) = failure {
        rep.step = step;
        if opts.no_rollback {
            rep.error = Some(format!(
                "{err}; the new config was kept (--no-rollback), the previous one is at {backup}"
            ));
            return rep;
        }
        rep.error = Some(err);
        rollback(remote, &current, opts, hooks, &mut rep).await;
        return rep;
    }

    if let Some(keep) = opts.keep_backups {
        prune(remote, keep, &mut rep).await;
    }
    rep.ok = true;
    rep.step = Step::Done;
    rep
}

async fn restart<R: RemoteOps, H: Hooks>(
    remote: &R,
    opts: &ApplyOptions,
    hooks: &mut H,
    rep: &mut ApplyReport,
) -> Result<(), String> {
    let Some(cmd) = &opts.restart_cmd else {
        return Ok(());
    };
    hooks.step(Step::Restart);
    let t = Instant::now();
    let r = remote.restart(cmd, opts.restart_timeout).await;
    rep.timings_ms.insert("restart", ms(t.elapsed()));
    r.map(|_| ()).map_err(|e| e.to_string())
}

/// Put the old bytes back, restart and re-check health.
async fn rollback<R: RemoteOps, H: Hooks>(
    remote: &R,
    old: &RemoteFile,
    opts: &ApplyOptions,
    hooks: &mut H,
    rep: &mut ApplyReport,
) {
    hooks.step(Step::Rollback);
    let t = Instant::now();
    let result: Result<(), String> = async {
        remote
            .write(&old.bytes, old.mode)
            .await
            .map_err(|e| format!("restoring the old config failed: {e}"))?;
        if let Some(cmd) = &opts.restart_cmd {
            remote
                .restart(cmd, opts.restart_timeout)
                .await
                .map_err(|e| format!("old config restored, but the restart failed: {e}"))?;
        }
        hooks
            .health(true)
            .await
            .map_err(|e| format!("old config restored and restarted, but health still fails: {e}"))
    }
    .await;
    rep.timings_ms.insert("rollback", ms(t.elapsed()));
    match result {
        Ok(()) => rep.rolled_back = true,
        Err(e) => {
            rep.rolled_back = false;
            rep.rollback_error = Some(e);
            rep.step = Step::Rollback;
        }
    }
}

/// Remove the oldest backups beyond `keep`.
async fn prune<R: RemoteOps>(remote: &R, keep: usize, rep: &mut ApplyReport) {
    match remote.list_backups().await {
        Ok(list) => {
            let excess = list.len().saturating_sub(keep);
            for b in list.into_iter().take(excess) {
                match remote.remove_backup(&b.path).await {
                    Ok(()) => rep.pruned_backups.push(b.path),
                    Err(e) => rep
                        .warnings
                        .push(format!("could not prune {}: {e}", b.path)),
                }
            }
        }
        Err(RemoteError::Unsupported { why, .. }) => {
            rep.warnings.push(format!("--keep-backups ignored: {why}"))
        }
        Err(e) => rep
            .warnings
            .push(format!("could not list backups to prune: {e}")),
    }
}
