//! `swapcfg apply` / `swapcfg plan`, and the job runner that `rollback`,
//! `edit` and `demo` share: validate locally, connect once, run the
//! pipeline, render the report.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use swapcfg::health::{HealthError, ServiceWarning};
use swapcfg::pipeline::{self, ApplyError, ApplyOptions, ApplyReport, Hooks, Step, Warning};
use swapcfg::reload::Service;
use swapcfg::remote::{LockInfo, RemoteOps, RemoteOptions};
use swapcfg::stop::{Phase, Stop};
use swapcfg::validate::Severity;

use crate::cli::args::ApplyArgs;
use crate::cli::exit::Outcome;
use crate::cli::host::Host;
use crate::cli::render::{self, Failure, HintContext};
use crate::cli::settings::{Change, Settings};
use crate::cli::style::Style;
use crate::cli::CmdResult;

/// What to apply and how.
pub struct Job<'a> {
    pub settings: &'a Settings,
    pub change: Change,
    pub new: &'a [u8],
    pub new_label: String,
    pub dry_run: bool,
    pub force: bool,
    pub expect_sha256: Option<String>,
}

pub fn run(args: ApplyArgs, plan: bool, ctx: &mut HintContext) -> CmdResult {
    if args.target.hosts.is_some() {
        return crate::cli::fleet::apply(args, plan);
    }
    let settings = Settings::resolve(&args.target, Some(&args.service)).map_err(Failure::usage)?;
    let file = args
        .file
        .clone()
        .ok_or_else(|| Failure::usage("FILE is required".to_string()))?;
    let new = super::read_local(&file)?;
    let job = Job {
        settings: &settings,
        change: Change::from(&args.change),
        new: &new,
        new_label: file.display().to_string(),
        dry_run: plan || args.dry_run,
        force: args.force,
        expect_sha256: args.expect_sha256.clone(),
    };
    crate::cli::runtime()?.block_on(run_job(&job, ctx))
}

/// Validate → connect → pipeline → report.
pub async fn run_job(job: &Job<'_>, ctx: &mut HintContext) -> CmdResult {
    let rep = execute(job, ctx, true).await?;
    Ok(Outcome::At(rep.step))
}

/// [`run_job`] returning the report; printing (findings, diff, report) only
/// when `print` (a fleet run prints its own lines).
pub async fn execute(
    job: &Job<'_>,
    ctx: &mut HintContext,
    print: bool,
) -> Result<ApplyReport, Failure> {
    execute_watched(job, ctx, print, None).await
}

/// A caller that owns the signals and watches the steps (a fleet run): the
/// apply obeys `stop` instead of installing its own signal handler, and
/// tells `on_step` each step it starts.
pub struct Watch {
    pub stop: Stop,
    pub on_step: Box<dyn FnMut(Step)>,
}

/// [`execute`], watched by the caller (see [`Watch`]).
pub async fn execute_watched(
    job: &Job<'_>,
    ctx: &mut HintContext,
    print: bool,
    watch: Option<Watch>,
) -> Result<ApplyReport, Failure> {
    let (stop, mut on_step) = match watch {
        Some(w) => (Some(w.stop), Some(w.on_step)),
        None => (None, None),
    };
    if let Some(f) = &mut on_step {
        f(Step::Connect);
    }
    let settings = job.settings;
    ctx.api_key_env = settings.health.api_key.as_ref().map(|k| k.env.clone());
    let host = settings.host();
    let config_path = settings.config_path().map_err(Failure::usage)?;
    let restart_cmd = if job.dry_run {
        None
    } else {
        settings.restart_command().map_err(Failure::usage)?
    };
    let validator = settings.validator().map_err(Failure::usage)?;
    let outcome = validator.validate(job.new);
    if print && !job.change.json {
        let style = Style::for_stderr();
        for f in &outcome.findings {
            eprintln!("{}", render::finding(f, &job.new_label, style));
        }
    }
    let early = |step: Step, error: ApplyError| {
        let mut rep = ApplyReport::early(step, &host, &config_path, job.new, error);
        rep.findings = outcome.findings.clone();
        if print {
            render::apply_report(&rep, job.change.json, ctx);
        }
        Ok(rep)
    };
    if !outcome.is_valid() {
        let errors = outcome
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count();
        return early(
            Step::Validate,
            ApplyError::Invalid {
                label: job.new_label.clone(),
                errors,
            },
        );
    }
    let mut service = settings
        .health_check(Some(outcome.listed_models.clone()))
        .map(|hc| Service::new(hc, settings.health.reload, settings.health.reload_timeout));

    // The pre-flight probe runs beside the connection, so it costs no time.
    let t = Instant::now();
    let preflight = async {
        match &service {
            Some(s) if !job.dry_run => Some(s.preflight().await),
            _ => None,
        }
    };
    // What to check on the host, planned while connecting (a second parse
    // of the config: as long as validating it).
    let planning = {
        let new = job.new.to_vec();
        tokio::task::spawn_blocking(move || swapcfg::hostcheck::plan(&new))
    };
    let (conn, preflight) = tokio::join!(Host::connect(settings, &config_path), preflight);
    let conn = match conn {
        Ok(h) => h,
        Err(f) => return early_failure(f, &early),
    };
    let connect_ms = t.elapsed().as_millis() as u64;
    let mut preflight_warning = None;
    match preflight {
        None | Some(Ok(None)) => {}
        // A key problem, a bad URL: stop before anything is written.
        Some(Err(e)) => {
            conn.close().await;
            return early(Step::Health, ApplyError::Health(e));
        }
        Some(Ok(Some(seen))) if settings.health.require_healthy => {
            conn.close().await;
            let url = settings.health.base_url.clone().unwrap_or_default();
            return early(
                Step::Health,
                ApplyError::Health(HealthError::Unhealthy {
                    url: format!("{url}{}", settings.health.path),
                    attempts: 1,
                    elapsed: t.elapsed(),
                    last: seen,
                }),
            );
        }
        Some(Ok(Some(seen))) => {
            if let Some(s) = &mut service {
                s.healthy_before = false;
            }
            preflight_warning = Some(ServiceWarning::PreflightUnhealthy {
                url: format!(
                    "{}{}",
                    settings.health.base_url.clone().unwrap_or_default(),
                    settings.health.path
                ),
                seen,
            })
        }
    }
    // A run that may restart: the restart's shell starts beside the read
    // (a dry run starts nothing on the host).
    let remote_opts = RemoteOptions {
        prime_restart: !job.dry_run,
        ..RemoteOptions::default()
    };
    let remote = match conn.remote(settings, remote_opts).await {
        Ok(r) => r,
        Err(f) => return early_failure(f, &early),
    };
    let opts = ApplyOptions {
        host: host.clone(),
        config_path: config_path.clone(),
        new_label: job.new_label.clone(),
        dry_run: job.dry_run,
        force: job.force,
        expect_sha256: job.expect_sha256.clone(),
        restart_cmd,
        restart_timeout: settings.restart_timeout,
        no_rollback: job.change.no_rollback,
        keep_backups: job.change.keep_backups,
        lock: (!job.dry_run).then(|| lock_record(settings)),
        break_lock: job.change.break_lock,
        stop: stop.clone().unwrap_or_default(),
        redactor: (!job.change.show_secrets).then(run_redactor),
        host_checks: planning.await.ok(),
        strict_host: job.change.strict_host || settings.strict_host,
    };
    let out_style = Style::for_stdout();
    let mut hooks = CliHooks {
        yes: job.change.yes,
        // Not printing (a fleet host): no diff, no progress lines.
        json: job.change.json || !print,
        service,
        style: out_style,
        progress: print && Style::for_stderr().color,
        settings: settings.clone(),
        config_path: config_path.clone(),
        remote_opts,
        stop: opts.stop.clone(),
        signals: None,
        recovered: false,
        caller_signals: stop.is_some(),
        on_step,
    };
    conn.session.cancel_on(opts.stop.clone());
    let mut rep = pipeline::apply(&remote, job.new, &opts, &mut hooks).await;
    rep.findings = outcome.findings;
    rep.timings_ms.insert(0, (Step::Connect, connect_ms));
    if hooks.service.is_none() && rep.step == Step::Done {
        rep.warnings.push(Warning::HealthNotChecked);
    }
    let said = hooks
        .service
        .as_mut()
        .map(|s| std::mem::take(&mut s.warnings))
        .unwrap_or_default();
    rep.warnings.extend(
        preflight_warning
            .into_iter()
            .chain(said)
            .map(Warning::Service),
    );
    if print && job.dry_run && !job.change.json {
        render::diff(&rep.diff, out_style);
    }
    drop(remote);
    conn.close().await;
    if hooks.recovered {
        // The first connection was stuck when a fresh one cleaned up: a
        // request still queued on the host (the staged upload's create,
        // behind a stalled backup write) can run only once that connection
        // is closed. Now it is: sweep this run's temp files once more, and
        // remove the lock if it carries this run's token (its record, sent
        // right behind the lock's exclusive open, may land only now).
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let _ = hooks.recover(opts.lock.as_ref()).await;
    }
    if print {
        render::apply_report(&rep, job.change.json, ctx);
    }
    Ok(rep)
}

/// A connect-phase failure becomes an early report (so `--json` still
/// prints one object).
fn early_failure(
    f: Failure,
    early: &dyn Fn(Step, ApplyError) -> Result<ApplyReport, Failure>,
) -> Result<ApplyReport, Failure> {
    use crate::cli::render::CliError;
    let error = match *f.error {
        CliError::Transport(t) => ApplyError::Connect(t),
        CliError::Remote(r) => ApplyError::Remote(r),
        _ => return Err(f),
    };
    early(Step::Connect, error)
}

/// A redactor keyed for this run: markers show that a secret changed
/// without offering a hash of a short secret to guess against.
pub fn run_redactor() -> swapcfg::redact::Redactor {
    swapcfg::redact::Redactor::keyed(&rand::random::<[u8; 32]>())
}

/// The lock record for an apply from this process.
fn lock_record(settings: &Settings) -> LockInfo {
    let now = pipeline::epoch_now();
    let client = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into());
    LockInfo {
        token: format!("{:032x}", rand::random::<u128>()),
        client,
        user: swapcfg::target::local_user(),
        pid: std::process::id(),
        started: now,
        expires: now + settings.lock_lease().as_secs(),
    }
}

/// Confirmation, progress, health and re-reading for the command line.
pub struct CliHooks {
    pub yes: bool,
    pub json: bool,
    /// Health, reload proof and model check (when a base URL is known).
    pub service: Option<Service>,
    pub style: Style,
    /// Progress lines on stderr (only on a TTY).
    pub progress: bool,
    /// To reconnect once after a lost reply.
    pub settings: Settings,
    pub config_path: String,
    /// This run's remote options (the tag marks its temp files).
    pub remote_opts: RemoteOptions,
    /// Stop requests go here (from the signal handler).
    pub stop: Stop,
    /// The signal handler, installed once the host is about to change.
    pub signals: Option<tokio::task::JoinHandle<()>>,
    /// A fresh connection cleaned up for this run and read the config (the
    /// first one was lost or stuck).
    pub recovered: bool,
    /// The caller handles signals (a fleet run): none are installed here.
    pub caller_signals: bool,
    /// Told each step as it starts (a fleet run's live line).
    pub on_step: Option<Box<dyn FnMut(Step)>>,
}

impl Drop for CliHooks {
    fn drop(&mut self) {
        if let Some(h) = self.signals.take() {
            h.abort();
        }
    }
}

/// SIGINT, SIGTERM, SIGHUP: the first asks the apply to stop safely (before
/// the write: nothing changes; after it: the old config is put back); the
/// second exits at once with 128 + the signal number, saying what the host
/// holds.
fn install_signals(stop: Stop, progress: bool) -> Option<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).ok()?;
    let mut term = signal(SignalKind::terminate()).ok()?;
    let mut hup = signal(SignalKind::hangup()).ok()?;
    Some(tokio::spawn(async move {
        let mut seen = 0;
        loop {
            let (name, code) = tokio::select! {
                _ = int.recv() => ("SIGINT", 130),
                _ = term.recv() => ("SIGTERM", 143),
                _ = hup.recv() => ("SIGHUP", 129),
            };
            seen += 1;
            if seen == 1 {
                stop.request();
                let _ = progress;
                eprintln!(
                    "swapcfg: {name}: stopping safely ({}); send it again to exit at once",
                    match stop.phase() {
                        Phase::Untouched => "nothing was changed; removing the lock and temp files",
                        Phase::Writing =>
                            "letting the atomic write finish, then putting the old config back",
                        _ => "putting the old config back, restarting, checking health",
                    }
                );
                continue;
            }
            let state = match stop.phase() {
                Phase::Untouched => "the old config is in place (nothing was written)",
                Phase::Writing => {
                    "a write was in flight: the config is the old one or the new one, check which"
                }
                Phase::NewInPlace => "the NEW config is in place and was NOT rolled back",
                Phase::RollingBack => "the old config was being restored: check the host NOW",
                Phase::Restored => "the old config was restored",
            };
            eprintln!("swapcfg: {name} again: exiting at once; {state}; the lock beside the config is left (its lease expires, or use --break-lock)");
            std::process::exit(code);
        }
    }))
}

impl Hooks for CliHooks {
    fn confirm(&mut self, diff: &str) -> bool {
        if !self.json {
            render::diff(diff, self.style);
        }
        if self.yes {
            return true;
        }
        if !std::io::stdin().is_terminal() {
            eprintln!("swapcfg: refusing to change the host: stdin is not a terminal, so nobody can confirm; re-run with --yes");
            return false;
        }
        eprint!("Apply these changes? [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        if std::io::stdin().read_line(&mut answer).is_err() {
            return false;
        }
        matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes")
    }

    fn step(&mut self, step: Step) {
        // Past the confirmation, signals stop the apply safely instead of
        // killing the process.
        if self.signals.is_none()
            && !self.caller_signals
            && matches!(step, Step::Lock | Step::Backup)
        {
            self.signals = install_signals(self.stop.clone(), self.progress);
        }
        if let Some(f) = &mut self.on_step {
            f(step);
        }
        if self.progress && !self.json {
            eprintln!("  … {}", step.name());
        }
    }

    async fn before_write(&mut self, bytes: &[u8], rollback: bool) {
        if let Some(s) = &mut self.service {
            s.before_write(bytes.len(), rollback).await;
        }
    }

    async fn health(&mut self, rollback: bool) -> Result<(), HealthError> {
        let Some(service) = &mut self.service else {
            return Ok(());
        };
        let spin = self.progress && !self.json;
        let frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
        let mut progress = |n: u32| {
            if spin {
                eprint!(
                    "\r  {} health: attempt {n} ",
                    frames[(n as usize) % frames.len()]
                );
                let _ = std::io::stderr().flush();
            }
        };
        let r = service.after_change(rollback, &mut progress).await;
        if spin {
            eprintln!();
        }
        r
    }

    async fn recover(&mut self, me: Option<&LockInfo>) -> Option<Vec<u8>> {
        let (settings, path) = (&self.settings, &self.config_path);
        // Only cleaning up: no restart to start ahead.
        let opts = RemoteOptions {
            prime_restart: false,
            ..self.remote_opts
        };
        let fresh = async {
            let host = Host::connect(settings, path).await.ok()?;
            let bytes = {
                let remote = host.remote(settings, opts).await.ok()?;
                let _ = remote.clean_up(me).await;
                remote.read().await.ok().map(|f| f.bytes)
            };
            host.close().await;
            bytes
        };
        let budget = settings.connect.connect_timeout * 2 + std::time::Duration::from_secs(5);
        let seen = tokio::time::timeout(budget, fresh).await.ok().flatten();
        // Only a host that answered is swept again at the end (an
        // unreachable one would only cost another connect timeout).
        self.recovered |= seen.is_some();
        seen
    }
}
