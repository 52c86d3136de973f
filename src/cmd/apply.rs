//! `swapcfg apply` / `swapcfg plan`, and the runner that `rollback` and
//! `edit` share: validate locally, connect once, run the pipeline, report.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::{exit, Resolved};
use crate::cli::{ChangeArgs, ServiceArgs};
use crate::health::HealthCheck;
use crate::pipeline::{self, ApplyOptions, ApplyReport, Hooks, Step};
use crate::remote::{AnyRemote, RemoteOptions};
use crate::report::Style;
use crate::transport::Session;
use crate::validate::Severity;

/// What to apply and how.
pub struct Job<'a> {
    pub res: &'a Resolved,
    pub service: &'a ServiceArgs,
    pub change: &'a ChangeArgs,
    pub new: &'a [u8],
    pub new_label: String,
    pub dry_run: bool,
    pub force: bool,
    pub expect_sha256: Option<String>,
}

pub fn run(args: crate::cli::ApplyArgs, plan: bool) -> ExitCode {
    let res = match super::resolve(&args.target, Some(&args.service)) {
        Ok(r) => r,
        Err(e) => return super::fail(exit::USAGE, e),
    };
    let new = match super::validate::read_bounded(&args.file) {
        Ok(b) => b,
        Err(e) => return super::fail(exit::USAGE, format!("{}: {e}", args.file.display())),
    };
    let job = Job {
        res: &res,
        service: &args.service,
        change: &args.change,
        new: &new,
        new_label: args.file.display().to_string(),
        dry_run: plan || args.dry_run,
        force: args.force,
        expect_sha256: args.expect_sha256.clone(),
    };
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => return super::fail(exit::USAGE, e),
    };
    rt.block_on(run_job(&job))
}

/// Validate → connect → pipeline → report. Returns the exit status.
pub async fn run_job(job: &Job<'_>) -> ExitCode {
    ExitCode::from(run_job_code(job).await)
}

/// [`run_job`], with the exit status as a number.
pub async fn run_job_code(job: &Job<'_>) -> u8 {
    let res = job.res;
    let host = res.host();
    let config_path = match res.config_path() {
        Ok(p) => p,
        Err(e) => return usage(e),
    };
    let restart_cmd = if job.dry_run {
        None
    } else {
        match super::restart_command(res) {
            Ok(c) => c,
            Err(e) => return usage(e),
        }
    };
    let validator = match super::validator(res) {
        Ok(v) => v,
        Err(e) => return usage(e),
    };
    let outcome = validator.validate(job.new);
    let out_style = Style::for_stdout();
    let err_style = Style::for_stderr();
    if !job.change.json {
        for f in &outcome.findings {
            let sev = match f.severity {
                Severity::Error => err_style.err("error"),
                Severity::Warning => err_style.warn("warning"),
            };
            eprintln!(
                "{}:{}:{}: {sev}: {}: {} [{}]",
                job.new_label, f.line, f.column, f.path, f.message, f.rule
            );
        }
    }
    if !outcome.is_valid() {
        let n = outcome
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count();
        let rep = ApplyReport::early(
            Step::Validate,
            &host,
            &config_path,
            job.new,
            format!(
                "{} is invalid ({n} error(s)); nothing was sent to the host",
                job.new_label
            ),
        );
        return finish(&rep, job.change.json);
    }
    let health = match super::health_check(res, job.service, Some(outcome.listed_models.clone())) {
        Ok(h) => h,
        Err(e) => return usage(e),
    };

    let t = Instant::now();
    let session = match Session::connect(&res.connect).await {
        Ok(s) => s,
        Err(e) => {
            return finish(
                &ApplyReport::early(Step::Connect, &host, &config_path, job.new, e.to_string()),
                job.change.json,
            )
        }
    };
    let connect_ms = t.elapsed().as_millis() as u64;
    let remote =
        match AnyRemote::open(&session, res.mode, &config_path, RemoteOptions::default()).await {
            Ok(r) => r,
            Err(e) => {
                return finish(
                    &ApplyReport::early(Step::Connect, &host, &config_path, job.new, e.to_string()),
                    job.change.json,
                )
            }
        };
    let opts = ApplyOptions {
        host: host.clone(),
        config_path: config_path.clone(),
        new_label: job.new_label.clone(),
        dry_run: job.dry_run,
        force: job.force,
        expect_sha256: job.expect_sha256.clone(),
        restart_cmd,
        restart_timeout: Duration::from_secs(job.service.restart_timeout.max(1)),
        no_rollback: job.change.no_rollback,
        keep_backups: job.change.keep_backups,
    };
    let mut hooks = CliHooks {
        yes: job.change.yes,
        json: job.change.json,
        health,
        style: out_style,
        progress: err_style.color,
    };
    let mut rep = pipeline::apply(&remote, job.new, &opts, &mut hooks).await;
    rep.timings_ms.insert("connect", connect_ms);
    if health_skipped(&hooks, &rep) {
        rep.warnings
            .push("no --base-url: health was not checked".into());
    }
    if job.dry_run && !job.change.json {
        print_diff(&rep.diff, out_style);
    }
    drop(remote);
    session.close().await;
    finish(&rep, job.change.json)
}

fn health_skipped(h: &CliHooks, rep: &ApplyReport) -> bool {
    h.health.is_none() && matches!(rep.step, Step::Done)
}

fn print_diff(diff: &str, style: Style) {
    if style.color {
        print!("{}", crate::diff::colorize(diff));
    } else {
        print!("{diff}");
    }
}

fn usage(e: impl std::fmt::Display) -> u8 {
    eprintln!("swapcfg: error: {e}");
    exit::USAGE
}

/// Print the report and turn it into the exit status.
pub fn finish(rep: &ApplyReport, json: bool) -> u8 {
    if json {
        match serde_json::to_string_pretty(rep) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("swapcfg: error: {e}"),
        }
    } else {
        human(rep);
    }
    rep.exit_code()
}

fn human(rep: &ApplyReport) {
    let s = Style::for_stderr();
    let timings: Vec<String> = rep
        .timings_ms
        .iter()
        .map(|(k, v)| format!("{k} {v}ms"))
        .collect();
    let where_ = format!("{}:{}", rep.host, rep.config_path);
    match rep.step {
        Step::Done => eprintln!(
            "{} {where_} updated{} ({})",
            s.ok("✓ done:"),
            rep.backup_path
                .as_ref()
                .map(|b| format!(", backup {b}"))
                .unwrap_or_default(),
            timings.join(", ")
        ),
        Step::Unchanged => eprintln!(
            "{} {where_} already has these bytes; nothing to do (use --force to apply anyway)",
            s.ok("✓ unchanged:")
        ),
        Step::Planned => eprintln!(
            "{} the diff above would be applied to {where_} (nothing was changed)",
            s.warn("• plan:")
        ),
        step => {
            let name = serde_json::to_value(step)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            eprintln!(
                "{} {where_}: {}",
                s.err(&format!("✗ failed at step {name}:")),
                rep.error.as_deref().unwrap_or("unknown error")
            );
            if rep.rolled_back {
                eprintln!(
                    "{} the previous config was restored, restarted and is healthy again",
                    s.ok("↺ rolled back:")
                );
            }
            if let Some(e) = &rep.rollback_error {
                eprintln!(
                    "{} {e}\n  THE HOST MAY BE BROKEN: check it now; the previous config is at {}",
                    s.err("✗ rollback failed:"),
                    rep.backup_path.as_deref().unwrap_or("?")
                );
            }
        }
    }
    for w in &rep.warnings {
        eprintln!("{} {w}", s.warn("warning:"));
    }
}

/// Confirmation, progress and health for the command line.
pub struct CliHooks {
    pub yes: bool,
    pub json: bool,
    pub health: Option<HealthCheck>,
    pub style: Style,
    /// Progress lines on stderr (only on a TTY).
    pub progress: bool,
}

impl Hooks for CliHooks {
    fn confirm(&mut self, diff: &str) -> bool {
        if !self.json {
            print_diff(diff, self.style);
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
        if self.progress && !self.json {
            let name = serde_json::to_value(step)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            eprintln!("  … {name}");
        }
    }

    async fn health(&mut self, rollback: bool) -> Result<(), String> {
        let Some(hc) = &self.health else {
            return Ok(());
        };
        let mut hc = hc.clone();
        if rollback {
            // The old config is back: its models, not the new ones, are listed.
            hc.expect_models = None;
        }
        let spin = self.progress && !self.json;
        let frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
        let total = hc.attempts;
        let mut progress = |n: u32| {
            if spin {
                eprint!(
                    "\r  {} health: attempt {n}/{total} ",
                    frames[(n as usize) % frames.len()]
                );
                let _ = std::io::stderr().flush();
            }
        };
        let r = crate::health::check(&hc, &mut progress).await;
        if spin {
            eprintln!();
        }
        r.map(|_| ()).map_err(|e| e.to_string())
    }
}
