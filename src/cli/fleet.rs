//! Fleets: `apply` / `plan` (and `get --out DIR`, `status`, `health`,
//! `backups`) with `--hosts SELECTOR` on many inventory hosts at once, each on the single-host path (`cmd::apply::execute`: one
//! connection, the whole pipeline, its own rollback).
//!
//! Order of work:
//! 1. Resolve every host's settings and its file (FILE, else the host's
//!    inventory `file:` with `{host}`), read and validate every file, and
//!    check every host's config path and restart command. Any problem stops
//!    the run here, before any host is touched (invalid file: exit 1; a
//!    setting: exit 2).
//! 2. Run: `--canary N` hosts first (a batch of their own), then batches of
//!    `--serial N` (all the rest when not given); within a batch at most
//!    `--parallel N` hosts at once. Once more than `--max-fail N` hosts
//!    failed, or on Ctrl-C, no host is started any more; those not started
//!    are reported `skipped`. On Ctrl-C (SIGINT, SIGTERM, SIGHUP: one handler
//!    for the run, see [`rollout`]) running hosts stop safely as a single
//!    host does (their `Stop`: before the write nothing changes, after it
//!    the old config is put back).
//! 3. Output: `--json`: one JSON object per host as it finishes (JSON lines:
//!    `host`, `result`, `step`, `exit`, `changed`, `backup`, `ms`, `error`,
//!    and the single-host `report`), then one `summary` object; otherwise a
//!    line per host as it finishes and a table at the end, on stderr.
//! 4. Exit: 0 when every host is done or unchanged (`plan`: 2 when any has
//!    changes pending); otherwise the code of the earliest failing step in
//!    pipeline order among the failed hosts; 11 (aborted) when hosts were
//!    skipped without a failure (Ctrl-C).

use std::cell::Cell;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use swapcfg::inventory::Inventory;
use swapcfg::pipeline::{ApplyReport, Step};
use swapcfg::stop::{Phase, Stop};
use swapcfg::validate::Severity;

use super::args::{
    ApplyArgs, BackupsArgs, GetArgs, HealthArgs, RollbackArgs, ServiceArgs, StatusArgs, TargetArgs,
};
use super::cmd::apply::{execute_watched, Job, Watch};
use super::exit::{self, Outcome};
use super::live::Live;
use super::render::{self, ApplyJson, Failure, HintContext};
use super::settings::{Change, Settings};
use super::ssh_config::SshConfig;
use super::style::Style;
use super::CmdResult;

/// One host of the run, resolved and validated.
struct Member {
    name: String,
    settings: Settings,
    file: PathBuf,
    bytes: Arc<Vec<u8>>,
}

/// How a host ended.
enum Ended {
    Ran(Box<ApplyReport>, HintContext, u64),
    /// Failed before a report existed.
    Error {
        step: Step,
        message: String,
        ms: u64,
    },
    Skipped,
}

impl Ended {
    fn result(&self) -> &'static str {
        match self {
            Ended::Skipped => "skipped",
            Ended::Error { .. } => "failed",
            Ended::Ran(rep, ..) => match rep.step {
                Step::Done => "ok",
                Step::Unchanged => "unchanged",
                Step::Planned => "planned",
                _ => "failed",
            },
        }
    }

    fn failed(&self) -> bool {
        self.result() == "failed"
    }
}

/// The batches of member indices: the canary batch, then `serial`-sized
/// batches (or one batch of the rest).
pub fn batches(n: usize, canary: usize, serial: Option<usize>) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let canary = canary.min(n);
    if canary > 0 {
        out.push((0..canary).collect());
    }
    let rest: Vec<usize> = (canary..n).collect();
    match serial {
        Some(s) if s > 0 => out.extend(rest.chunks(s).map(<[usize]>::to_vec)),
        _ if !rest.is_empty() => out.push(rest),
        _ => {}
    }
    out
}

/// The exit code of a finished fleet run (see the module doc).
pub fn fleet_code(steps: &[Option<Step>]) -> u8 {
    let failing = steps
        .iter()
        .flatten()
        .filter(|s| !matches!(s, Step::Done | Step::Unchanged | Step::Planned))
        .map(|s| exit::code(&Outcome::At(*s)))
        .min();
    match failing {
        Some(c) => c,
        None if steps.iter().flatten().any(|s| *s == Step::Planned) => 2,
        None => 0,
    }
}

/// The inventory, the ssh config and the selected host names.
fn select(t: &TargetArgs) -> Result<(Inventory, Option<SshConfig>, Vec<String>), Failure> {
    let selector = t.hosts.clone().unwrap_or_default();
    let inv = Inventory::discover(t.inventory.as_deref())
        .map_err(Failure::usage)?
        .ok_or_else(|| {
            Failure::usage(
                "--hosts needs an inventory (--inventory FILE, $SWAPCFG_INVENTORY, ./swapcfg.yaml)",
            )
        })?;
    let ssh = SshConfig::discover(t.ssh_config.as_deref()).map_err(Failure::usage)?;
    let names = inv.select(&selector).map_err(Failure::usage)?;
    Ok((inv, ssh, names))
}

/// `t` for one inventory host.
fn one(t: &TargetArgs, name: &str) -> TargetArgs {
    let mut one = t.clone();
    one.target = name.to_string();
    one.hosts = None;
    one
}

/// With --hosts, the one positional is FILE (`None`: each host's `file:`);
/// a second one is a usage error saying `why` there is only one.
fn one_file(positional: &str, second: bool, why: &str) -> Result<Option<PathBuf>, Failure> {
    match (positional, second) {
        (_, true) => Err(Failure::usage(format!(
            "with --hosts, give at most one FILE ({why})"
        ))),
        ("", false) => Ok(None),
        (f, false) => Ok(Some(PathBuf::from(f))),
    }
}

/// A usage error about one selected host.
fn at_host(name: &str, e: impl std::fmt::Display) -> Failure {
    Failure::usage(format!("host {name}: {e}"))
}

/// One selected host's settings, resolved as a single TARGET's are (flags >
/// inventory host > ssh config > inventory defaults).
fn host_settings(
    t: &TargetArgs,
    name: &str,
    service: Option<&ServiceArgs>,
    inv: &Inventory,
    ssh: Option<&SshConfig>,
) -> Result<Settings, Failure> {
    Settings::resolve_full(&one(t, name), service, Some(inv), ssh, &|n| {
        std::env::var(n).ok()
    })
    .map_err(|e| at_host(name, e))
}

/// The local file for host `name`: FILE when one was given for all, else
/// its inventory `file:`.
fn host_file(common: Option<&PathBuf>, inv: &Inventory, name: &str) -> Result<PathBuf, Failure> {
    common
        .cloned()
        .or_else(|| inv.file_for(name))
        .ok_or_else(|| at_host(name, "no FILE given and no `file:` for it in the inventory"))
}

fn prepare(args: &ApplyArgs) -> Result<Vec<Member>, Failure> {
    let t = &args.target;
    let (inv, ssh, names) = select(t)?;
    // With --hosts, the one positional is FILE.
    let common = one_file(
        &t.target,
        args.file.is_some(),
        "it is applied to every host",
    )?;
    let mut read: Vec<(PathBuf, Arc<Vec<u8>>)> = Vec::new();
    let mut members = Vec::new();
    let mut invalid = 0;
    for name in names {
        let at = |e: String| at_host(&name, e);
        let settings = host_settings(t, &name, Some(&args.service), &inv, ssh.as_ref())?;
        settings.config_path().map_err(at)?;
        if !(args.dry_run) {
            settings.restart_command().map_err(at)?;
        }
        let file = host_file(common.as_ref(), &inv, &name)?;
        let bytes = match read.iter().find(|(p, _)| *p == file) {
            Some((_, b)) => b.clone(),
            None => {
                let b = Arc::new(super::cmd::read_local(&file)?);
                read.push((file.clone(), b.clone()));
                b
            }
        };
        let outcome = settings.validator().map_err(at)?.validate(&bytes);
        if !outcome.is_valid() {
            let style = Style::for_stderr();
            for f in outcome
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
            {
                eprintln!("{}", render::finding(f, &file.display().to_string(), style));
            }
            invalid += 1;
        }
        members.push(Member {
            name,
            settings,
            file,
            bytes,
        });
    }
    if invalid > 0 {
        return Err(Failure {
            outcome: Outcome::Invalid,
            ..Failure::usage(format!(
                "{invalid} host(s) have an invalid config file; no host was touched"
            ))
        });
    }
    Ok(members)
}

/// `apply` / `plan` with `--hosts`.
pub fn apply(args: ApplyArgs, plan: bool) -> CmdResult {
    let members = prepare(&args)?;
    let change = Change {
        // Nobody can confirm N hosts one by one: a fleet apply needs --yes
        // (plan changes nothing).
        yes: args.change.yes,
        ..Change::from(&args.change)
    };
    let dry_run = plan || args.dry_run;
    if !dry_run && !change.yes {
        return Err(Failure::usage(
            "a fleet apply needs --yes (run `plan --hosts …` first to see every diff)",
        ));
    }
    let t = &args.target;
    let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    let (force, expect_sha256) = (args.force, &args.expect_sha256);
    let code =
        super::runtime()?.block_on(rollout(&names, Rollout::of(t, change.json), |i, watch| {
            let m = &members[i];
            async move {
                let started = Instant::now();
                let job = Job {
                    settings: &m.settings,
                    change,
                    new: &m.bytes,
                    new_label: m.file.display().to_string(),
                    dry_run,
                    force,
                    expect_sha256: expect_sha256.clone(),
                };
                let mut ctx = HintContext::default();
                let r = execute_watched(&job, &mut ctx, false, Some(watch)).await;
                (ended(r, ctx, started), Extra::new())
            }
        }));
    Ok(exit_outcome(code))
}

/// The outcome whose exit code is `code`.
fn exit_outcome(code: u8) -> Outcome {
    match code {
        0 => Outcome::Success,
        _ => Outcome::At(step_for_code(code)),
    }
}

/// How a host's run ended, from its apply.
fn ended(r: Result<ApplyReport, Failure>, ctx: HintContext, started: Instant) -> Ended {
    let ms = started.elapsed().as_millis() as u64;
    match r {
        Ok(rep) => Ended::Ran(Box::new(rep), ctx, ms),
        // Settings were checked up front; whatever is left fails this host
        // at its step.
        Err(f) => failed_before(&f, Step::Connect, ms),
    }
}

/// A host that failed before a report existed (`default`: the step when
/// the failure names none).
fn failed_before(f: &Failure, default: Step, ms: u64) -> Ended {
    Ended::Error {
        step: match f.outcome {
            Outcome::At(s) => s,
            _ => default,
        },
        message: f.error.to_string(),
        ms,
    }
}

/// Extra fields of a host's JSON line (`rollback`: `restored`).
type Extra = serde_json::Map<String, serde_json::Value>;

/// The rollout flags of a fleet run.
#[derive(Clone, Copy)]
struct Rollout {
    canary: usize,
    serial: Option<usize>,
    parallel: usize,
    max_fail: usize,
    json: bool,
}

impl Rollout {
    fn of(t: &TargetArgs, json: bool) -> Rollout {
        Rollout {
            canary: t.canary,
            serial: t.serial,
            parallel: t.parallel.max(1),
            max_fail: t.max_fail,
            json,
        }
    }
}

/// Where a host is in a rollout.
#[derive(Clone, Copy, PartialEq)]
enum Lane {
    Waiting,
    Running,
    Over,
}

/// SIGINT, SIGTERM and SIGHUP, for a whole fleet run (its hosts install
/// none of their own).
struct Signals(Vec<(tokio::signal::unix::Signal, &'static str, i32)>);

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        let kinds = [
            (SignalKind::interrupt(), "SIGINT", 130),
            (SignalKind::terminate(), "SIGTERM", 143),
            (SignalKind::hangup(), "SIGHUP", 129),
        ];
        Signals(
            kinds
                .into_iter()
                .filter_map(|(k, name, code)| signal(k).ok().map(|s| (s, name, code)))
                .collect(),
        )
    }

    /// The next signal: its name and the exit code of a second one.
    async fn next(&mut self) -> (&'static str, i32) {
        if self.0.is_empty() {
            return std::future::pending().await;
        }
        let recvs = self.0.iter_mut().map(|(s, name, code)| {
            Box::pin(async move {
                s.recv().await;
                (*name, *code)
            })
        });
        futures::future::select_all(recvs).await.0
    }
}

/// Run `run` on every host of `names` as the rollout flags say (canary,
/// batches, `--parallel`, `--max-fail`), printing each host's line (or JSON
/// line) as it ends and the summary; returns the exit code.
///
/// Signals: the first SIGINT / SIGTERM / SIGHUP starts no more hosts (they
/// are reported `skipped`) and asks every running host to stop safely, as a
/// single-host run does (before its write: nothing changes, `aborted`;
/// after it: the old config is put back, `interrupted`); a second one
/// exits at once (128 + the signal), naming the running hosts and what
/// each holds.
async fn rollout<F, Fut>(names: &[String], r: Rollout, run: F) -> u8
where
    F: Fn(usize, Watch) -> Fut,
    Fut: std::future::Future<Output = (Ended, Extra)>,
{
    let order = batches(names.len(), r.canary, r.serial);
    let live = (!r.json && Style::for_stderr().color).then(Live::new);
    let stops: Vec<Stop> = names.iter().map(|_| Stop::default()).collect();
    let lanes: Vec<Cell<Lane>> = names.iter().map(|_| Cell::new(Lane::Waiting)).collect();
    let mut signals = Signals::install();
    let interrupted = Cell::new(false);
    let failed = Cell::new(0usize);
    let mut ended: Vec<Option<Ended>> = (0..names.len()).map(|_| None).collect();
    let halted = || failed.get() > r.max_fail || interrupted.get();
    let say = |f: &dyn Fn()| match &live {
        Some(l) => l.suspend(f),
        None => f(),
    };
    let on_signal = |name: &str, code: i32| {
        if !interrupted.replace(true) {
            say(&|| {
                eprintln!("swapcfg: {name}: no more hosts are started; running ones stop safely; send it again to exit at once")
            });
            for s in &stops {
                s.request();
            }
            return;
        }
        let running: Vec<String> = (0..names.len())
            .filter(|i| lanes[*i].get() == Lane::Running)
            .map(|i| format!("{} ({})", render::term(&names[i]), holds(stops[i].phase())))
            .collect();
        let running = match running.is_empty() {
            true => "none".to_string(),
            false => running.join(", "),
        };
        if let Some(l) = &live {
            l.clear();
        }
        eprintln!("swapcfg: {name} again: exiting at once; running: {running}; their locks are left (leases expire, or use --break-lock)");
        std::process::exit(code);
    };
    'batches: for batch in &order {
        let mut runs = futures::stream::iter(batch.iter().copied())
            .map(|i| {
                let (run, halted, live, lanes, stops) = (&run, &halted, &live, &lanes, &stops);
                async move {
                    if halted() {
                        return (i, Ended::Skipped, Extra::new(), None);
                    }
                    lanes[i].set(Lane::Running);
                    let line = live.as_ref().map(|l| l.start(&names[i]));
                    let seen = line.clone();
                    let watch = Watch {
                        stop: stops[i].clone(),
                        on_step: Box::new(move |s| {
                            if let Some(l) = &seen {
                                l.step(s);
                            }
                        }),
                    };
                    let (e, extra) = run(i, watch).await;
                    (i, e, extra, line)
                }
            })
            .buffer_unordered(r.parallel);
        loop {
            let next = tokio::select! {
                biased;
                (name, code) = signals.next() => {
                    on_signal(name, code);
                    continue;
                }
                next = runs.next() => next,
            };
            let Some((i, e, extra, line)) = next else {
                continue 'batches;
            };
            lanes[i].set(Lane::Over);
            if e.failed() {
                failed.set(failed.get() + 1);
            }
            if let (Some(l), Some(line)) = (&live, &line) {
                l.end(line);
            }
            say(&|| print_host_with(&names[i], &e, &extra, r.json));
            ended[i] = Some(e);
        }
    }
    // Hosts of batches never reached are skipped too.
    for (i, e) in ended.iter_mut().enumerate() {
        if e.is_none() {
            print_host(&names[i], &Ended::Skipped, r.json);
            *e = Some(Ended::Skipped);
        }
    }
    drop(live);
    let ended: Vec<Ended> = ended.into_iter().flatten().collect();
    let steps: Vec<Option<Step>> = ended
        .iter()
        .map(|e| match e {
            Ended::Ran(rep, ..) => Some(rep.step),
            Ended::Error { step, .. } => Some(*step),
            Ended::Skipped => None,
        })
        .collect();
    let mut code = fleet_code(&steps);
    if matches!(code, 0 | 2) && steps.iter().any(Option::is_none) {
        // Hosts were skipped without a failure: interrupted (Ctrl-C).
        code = exit::code(&Outcome::At(Step::Aborted));
    }
    print_summary(names, &ended, code, r.json);
    code
}

/// What a host holds at `phase` (for the second signal's message).
fn holds(phase: Phase) -> &'static str {
    match phase {
        Phase::Untouched => "old config, nothing written",
        Phase::Writing => "a write in flight: old or new config",
        Phase::NewInPlace => "NEW config, not rolled back",
        Phase::RollingBack => "old config being restored: check it",
        Phase::Restored => "old config restored",
    }
}

/// `rollback --hosts …`: every host restores its newest backup (or, with a
/// single host, the one named) through the apply pipeline, with the same
/// rollout flags, output and exit code as a fleet apply.
pub fn rollback(args: RollbackArgs) -> CmdResult {
    let t = &args.target;
    // With --hosts, the one positional is BACKUP.
    let named = match (t.target.as_str(), &args.backup) {
        (_, Some(_)) => {
            return Err(Failure::usage(
                "with --hosts, give at most one BACKUP (each host restores its newest one when none is named)",
            ))
        }
        ("", None) => None,
        (b, None) => Some(b.to_string()),
    };
    let hosts = resolve_all(t, Some(&args.service), true)?;
    if named.is_some() && hosts.len() != 1 {
        return Err(Failure::usage(format!(
            "a named BACKUP is one host's file, but --hosts selected {} hosts; name none to restore each host's newest backup",
            hosts.len()
        )));
    }
    for (name, s) in &hosts {
        s.restart_command()
            .map_err(|e| Failure::usage(format!("host {name}: {e}")))?;
    }
    let change = Change::from(&args.change);
    if !change.yes {
        return Err(Failure::usage(
            "a fleet rollback needs --yes (see `backups --hosts …` for what each host has)",
        ));
    }
    let names: Vec<String> = hosts.iter().map(|(n, _)| n.clone()).collect();
    let named = named.as_deref();
    let code =
        super::runtime()?.block_on(rollout(&names, Rollout::of(t, change.json), |i, watch| {
            let (name, settings) = &hosts[i];
            async move {
                let started = Instant::now();
                let fetched = match settings.config_path() {
                    Ok(path) => super::cmd::rollback::fetch_backup(settings, &path, named).await,
                    Err(e) => Err(Failure::usage(format!("host {name}: {e}"))),
                };
                let (chosen, bytes) = match fetched {
                    Ok(f) => f,
                    Err(f) => {
                        let ms = started.elapsed().as_millis() as u64;
                        return (failed_before(&f, Step::Read, ms), Extra::new());
                    }
                };
                let job = Job {
                    settings,
                    change,
                    new: &bytes,
                    new_label: chosen.clone(),
                    dry_run: false,
                    force: false,
                    expect_sha256: None,
                };
                let mut ctx = HintContext::default();
                let r = execute_watched(&job, &mut ctx, false, Some(watch)).await;
                let mut extra = Extra::new();
                extra.insert("restored".into(), chosen.into());
                (ended(r, ctx, started), extra)
            }
        }));
    Ok(exit_outcome(code))
}

/// `get --hosts … --out DIR`: every host's config byte-exact to
/// `DIR/{host}.yaml` (written to a temp name, then renamed), at most
/// `--parallel` hosts at once; a host that fails leaves no file.
pub fn get(args: GetArgs) -> CmdResult {
    let t = &args.target;
    let dir = args
        .out
        .clone()
        .ok_or_else(|| Failure::usage("get --hosts needs --out DIR (one file per host)"))?;
    if !dir.is_dir() {
        return Err(Failure::usage(format!(
            "--out {}: not a directory",
            dir.display()
        )));
    }
    let (inv, ssh, names) = select(t)?;
    let mut hosts = Vec::new();
    for name in names {
        if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\', '\0']) {
            return Err(at_host(&name, "the name cannot be a file name under --out"));
        }
        let settings = host_settings(t, &name, None, &inv, ssh.as_ref())?;
        let path = settings.config_path().map_err(|e| at_host(&name, e))?;
        hosts.push((name, settings, path));
    }
    let json = args.json;
    let parallel = t.parallel.max(1);
    let steps = super::runtime()?.block_on(async {
        let mut runs = futures::stream::iter(hosts.iter())
            .map(|(name, settings, path)| {
                let dir = &dir;
                async move {
                    let started = Instant::now();
                    let r = fetch(settings, path).await.and_then(|bytes| {
                        let dest = dir.join(format!("{name}.yaml"));
                        let tmp = dir.join(format!(".{name}.yaml.swapcfg-tmp"));
                        std::fs::write(&tmp, &bytes)
                            .and_then(|()| std::fs::rename(&tmp, &dest))
                            .map_err(|e| {
                                let _ = std::fs::remove_file(&tmp);
                                Failure::usage(format!("{}: {e}", dest.display()))
                            })?;
                        Ok((bytes, dest))
                    });
                    (name, r, started.elapsed().as_millis() as u64)
                }
            })
            .buffer_unordered(parallel);
        let mut steps: Vec<(String, Option<Step>)> = Vec::new();
        while let Some((name, r, ms)) = runs.next().await {
            let step = match &r {
                Ok(_) => None,
                Err(f) => Some(match f.outcome {
                    Outcome::At(s) => s,
                    _ => Step::Read,
                }),
            };
            if json {
                let line = match &r {
                    Ok((bytes, dest)) => serde_json::json!({
                        "host": name, "result": "ok", "bytes": bytes.len(),
                        "sha256": swapcfg::pipeline::sha256_hex(bytes),
                        "path": dest.display().to_string(), "ms": ms, "error": null,
                    }),
                    Err(f) => serde_json::json!({
                        "host": name, "result": "failed",
                        "step": step.map(|s| s.name()), "ms": ms,
                        "error": f.error.to_string(),
                    }),
                };
                println!("{line}");
            } else {
                let s = Style::for_stderr();
                match &r {
                    Ok((bytes, dest)) => eprintln!(
                        "{} {}: {} bytes → {}",
                        s.ok("✓"),
                        render::term(name),
                        bytes.len(),
                        render::term(&dest.display().to_string())
                    ),
                    Err(f) => eprintln!(
                        "{} {}: {}",
                        s.err("✗"),
                        render::term(name),
                        render::term(&f.error.to_string())
                    ),
                }
            }
            steps.push((name.clone(), step));
        }
        steps
    });
    let what = format!("written to {}", render::term(&dir.display().to_string()));
    Ok(summarize(&steps, json, &what))
}

/// `status --hosts …`: per host, the remote config against its local file
/// (`in-sync`, `drifted`, or `missing` on the host), its sha256, and, when a
/// base URL is known, one health attempt with the models listed.
/// Exit: the earliest failing step when a host could not be read; else 9
/// when one is unhealthy; else 1 when one drifted or is missing; else 0.
pub fn status(args: StatusArgs) -> CmdResult {
    let t = &args.target;
    if t.hosts.is_none() {
        return Err(Failure::usage(
            "status works on inventory hosts: --hosts SELECTOR (e.g. @all)",
        ));
    }
    let (inv, ssh, names) = select(t)?;
    let common = one_file(
        &t.target,
        args.file.is_some(),
        "every host is compared with it",
    )?;
    let mut hosts = Vec::new();
    for name in names {
        let settings = host_settings(t, &name, Some(&args.service), &inv, ssh.as_ref())?;
        let path = settings.config_path().map_err(|e| at_host(&name, e))?;
        let file = host_file(common.as_ref(), &inv, &name)?;
        let local = super::cmd::read_local(&file)?;
        hosts.push((name, settings, path, local));
    }
    let json = args.json;
    let parallel = t.parallel.max(1);
    let rows = super::runtime()?.block_on(async {
        let mut runs = futures::stream::iter(hosts.iter())
            .map(|(name, settings, path, local)| async move {
                let remote = fetch_opt(settings, path).await;
                let (health, version) = match settings.health_check(None) {
                    None => (None, None),
                    Some(mut hc) => {
                        hc.max_attempts = Some(1);
                        let h = swapcfg::health::check(&hc, &mut |_| {}).await;
                        // The version only from a service that answered.
                        let v = match (&h, swapcfg::health::Client::new(&hc)) {
                            (Ok(_), Ok(c)) => c.version().await.ok().and_then(|r| r.ok()),
                            _ => None,
                        };
                        (Some(h), v)
                    }
                };
                let row = status_row(name, local, remote, health, version);
                if json {
                    println!("{}", row.1);
                } else {
                    eprintln!("{}", row.2);
                }
                row
            })
            .buffer_unordered(parallel);
        let mut rows = Vec::new();
        while let Some(r) = runs.next().await {
            rows.push(r);
        }
        rows
    });
    let count = |f: &dyn Fn(&serde_json::Value) -> bool| rows.iter().filter(|r| f(&r.1)).count();
    let failed_steps: Vec<Option<Step>> = rows.iter().map(|r| r.0).collect();
    let unhealthy = count(&|v| v["health"] == "unhealthy");
    let off = count(&|v| v["sync"] == "drifted" || v["sync"] == "missing");
    let code = match fleet_code(&failed_steps) {
        0 if unhealthy > 0 => exit::code(&Outcome::At(Step::Health)),
        0 if off > 0 => exit::code(&Outcome::Differ),
        c => c,
    };
    let summary = serde_json::json!({"summary": {
        "hosts": rows.len(),
        "in_sync": count(&|v| v["sync"] == "in-sync"),
        "drifted": count(&|v| v["sync"] == "drifted"),
        "missing": count(&|v| v["sync"] == "missing"),
        "failed": count(&|v| v["result"] == "failed"),
        "unhealthy": unhealthy,
        "exit": code,
    }});
    if json {
        println!("{summary}");
    } else {
        let s = &summary["summary"];
        eprintln!(
            "{} hosts: {} in-sync, {} drifted, {} missing, {} failed, {} unhealthy",
            s["hosts"], s["in_sync"], s["drifted"], s["missing"], s["failed"], s["unhealthy"]
        );
    }
    Ok(match code {
        0 => Outcome::Success,
        1 => Outcome::Differ,
        c => Outcome::At(step_for_code(c)),
    })
}

/// One host's status: its failing step (if it could not be read), the JSON
/// object, and the human line.
fn status_row(
    name: &str,
    local: &[u8],
    remote: Result<Option<Vec<u8>>, Failure>,
    health: Option<Result<swapcfg::health::HealthReport, swapcfg::health::HealthError>>,
    version: Option<String>,
) -> (Option<Step>, serde_json::Value, String) {
    use swapcfg::pipeline::sha256_hex;
    let (step, sync, sha, error) = match &remote {
        Ok(Some(b)) if b == local => (None, "in-sync", Some(sha256_hex(b)), None),
        Ok(Some(b)) => (None, "drifted", Some(sha256_hex(b)), None),
        Ok(None) => (None, "missing", None, None),
        Err(f) => (
            Some(match f.outcome {
                Outcome::At(s) => s,
                _ => Step::Read,
            }),
            "unknown",
            None,
            Some(f.error.to_string()),
        ),
    };
    let (health_word, models, health_error) = match &health {
        None => ("unchecked", Vec::new(), None),
        Some(Ok(r)) => ("healthy", r.listed_models.clone(), None),
        Some(Err(e)) => ("unhealthy", Vec::new(), Some(e.to_string())),
    };
    let v = serde_json::json!({
        "host": name,
        "result": if step.is_some() { "failed" } else { "ok" },
        "sync": sync,
        "sha256": sha,
        "local_sha256": sha256_hex(local),
        "health": health_word,
        "models": models,
        // llama-swap's `/api/version` (`null`: unhealthy or not said).
        "version": version,
        "error": error,
        "health_error": health_error,
    });
    let line = format!(
        "{:<20} {:<9} {:<10} {} {}{}",
        render::term(name),
        sync,
        health_word,
        sha.as_deref().and_then(|s| s.get(..12)).unwrap_or("-"),
        render::term(&models.join(",")),
        error
            .or(health_error)
            .map(|e| format!("  {}", render::term(&e)))
            .unwrap_or_default()
    );
    (step, v, line)
}

/// Every selected host's settings (config path checked when `path`).
fn resolve_all(
    t: &TargetArgs,
    service: Option<&ServiceArgs>,
    path: bool,
) -> Result<Vec<(String, Settings)>, Failure> {
    let (inv, ssh, names) = select(t)?;
    names
        .into_iter()
        .map(|name| {
            let s = host_settings(t, &name, service, &inv, ssh.as_ref())?;
            if path {
                s.config_path().map_err(|e| at_host(&name, e))?;
            }
            Ok((name, s))
        })
        .collect()
}

/// Run `work` on every host (at most `parallel` at once), printing a line
/// (or a JSON object: `host`, `result`, the fields of `describe`, `error`)
/// per host as it finishes and a summary; the exit is the earliest failing
/// step.
fn run_each<'a, T, Fut>(
    hosts: &'a [(String, Settings)],
    parallel: usize,
    json: bool,
    work: impl Fn(&'a Settings) -> Fut,
    describe: impl Fn(&T) -> (serde_json::Value, String),
) -> CmdResult
where
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let steps = super::runtime()?.block_on(async {
        let mut runs = futures::stream::iter(hosts.iter())
            .map(|(name, settings)| {
                let work = &work;
                async move { (name, work(settings).await) }
            })
            .buffer_unordered(parallel.max(1));
        let mut steps = Vec::new();
        while let Some((name, r)) = runs.next().await {
            let st = Style::for_stderr();
            let step = r.as_ref().err().map(|f| match f.outcome {
                Outcome::At(s) => s,
                _ => Step::Connect,
            });
            match (&r, json) {
                (Ok(v), true) => {
                    let (mut obj, _) = describe(v);
                    if let Some(m) = obj.as_object_mut() {
                        m.insert("host".into(), name.as_str().into());
                        m.insert("result".into(), "ok".into());
                        m.insert("error".into(), serde_json::Value::Null);
                    }
                    println!("{obj}");
                }
                (Ok(v), false) => {
                    eprintln!("{} {}: {}", st.ok("✓"), render::term(name), describe(v).1)
                }
                (Err(f), true) => println!(
                    "{}",
                    serde_json::json!({"host": name, "result": "failed",
                        "step": step.map(|s| s.name()), "error": f.error.to_string()})
                ),
                (Err(f), false) => eprintln!(
                    "{} {}: {}",
                    st.err("✗"),
                    render::term(name),
                    render::term(&f.error.to_string())
                ),
            }
            steps.push((name.clone(), step));
        }
        steps
    });
    Ok(summarize(&steps, json, "ok"))
}

/// The closing summary of a per-host loop (`get`, `backups`): a JSON
/// object or one line, and the outcome of the earliest failing step.
fn summarize(steps: &[(String, Option<Step>)], json: bool, ok_word: &str) -> Outcome {
    let failed: Vec<&str> = steps
        .iter()
        .filter(|(_, s)| s.is_some())
        .map(|(n, _)| n.as_str())
        .collect();
    let code = fleet_code(&steps.iter().map(|(_, s)| *s).collect::<Vec<_>>());
    if json {
        println!(
            "{}",
            serde_json::json!({"summary": {"hosts": steps.len(), "ok": steps.len() - failed.len(),
                "failed": failed.len(), "failed_hosts": failed, "exit": code}})
        );
    } else {
        eprintln!(
            "{} hosts: {} {ok_word}, {} failed",
            steps.len(),
            steps.len() - failed.len(),
            failed.len()
        );
    }
    match code {
        0 => Outcome::Success,
        c => Outcome::At(step_for_code(c)),
    }
}

/// `health --hosts …`: every host's llama-swap health (no SSH).
pub fn health(args: HealthArgs) -> CmdResult {
    let hosts = resolve_all(&args.target, Some(&args.service), false)?;
    for (name, s) in &hosts {
        if s.health_check(None).is_none() {
            return Err(Failure::usage(format!(
                "host {name}: no base URL (--base-url URL, or base_url in the inventory)"
            )));
        }
    }
    run_each(
        &hosts,
        args.target.parallel,
        args.json,
        |s| {
            let hc = s.health_check(None);
            async move {
                let hc = hc.ok_or_else(|| Failure::usage("no base URL"))?;
                swapcfg::health::check(&hc, &mut |_| {})
                    .await
                    .map_err(|e| Failure::at(Step::Health, e))
            }
        },
        |r: &swapcfg::health::HealthReport| {
            (
                serde_json::json!({"models": r.listed_models, "attempts": r.attempts_used}),
                format!(
                    "healthy, {} model(s): {}",
                    r.listed_models.len(),
                    render::term(&r.listed_models.join(", "))
                ),
            )
        },
    )
}

/// `backups --hosts …`: every host's backups of its config.
pub fn backups(args: BackupsArgs) -> CmdResult {
    let hosts = resolve_all(&args.target, None, true)?;
    run_each(
        &hosts,
        args.target.parallel,
        args.json,
        |s| async move {
            use swapcfg::remote::RemoteOps;
            let path = s.config_path().map_err(Failure::usage)?;
            let host = super::host::Host::connect(s, &path).await?;
            let list = {
                let remote = host.remote(s, Default::default()).await?;
                remote
                    .list_backups()
                    .await
                    .map_err(|e| Failure::at(Step::Read, e))
            };
            host.close().await;
            list
        },
        |list: &Vec<swapcfg::remote::BackupEntry>| {
            let items: Vec<_> = list
                .iter()
                .map(|b| serde_json::json!({"path": b.path, "size": b.size, "mtime": b.mtime}))
                .collect();
            let newest = list
                .iter()
                .map(|b| b.path.rsplit(".bak-").next().unwrap_or(""))
                .max()
                .unwrap_or("-");
            (
                serde_json::json!({ "backups": items }),
                format!("{} backup(s), newest {}", list.len(), render::term(newest)),
            )
        },
    )
}

/// Connect, read the config (`None` when it does not exist), close.
async fn fetch_opt(settings: &Settings, path: &str) -> Result<Option<Vec<u8>>, Failure> {
    use swapcfg::remote::{RemoteError, RemoteOps};
    let host = super::host::Host::connect(settings, path).await?;
    let bytes = {
        let remote = host.remote(settings, Default::default()).await?;
        match remote.read().await {
            Ok(f) => Ok(Some(f.bytes)),
            Err(RemoteError::NotFound { .. }) => Ok(None),
            Err(e) => Err(Failure::at(Step::Read, e)),
        }
    };
    host.close().await;
    bytes
}

/// Connect, read the config, close.
async fn fetch(settings: &Settings, path: &str) -> Result<Vec<u8>, Failure> {
    use swapcfg::remote::RemoteOps;
    let host = super::host::Host::connect(settings, path).await?;
    let bytes = {
        let remote = host.remote(settings, Default::default()).await?;
        remote
            .read()
            .await
            .map(|f| f.bytes)
            .map_err(|e| Failure::at(Step::Read, e))
    };
    host.close().await;
    bytes
}

/// The step whose exit code is `code` (the fleet's exit goes through the one
/// exit table).
fn step_for_code(code: u8) -> Step {
    [
        Step::Planned,
        Step::Connect,
        Step::Read,
        Step::Conflict,
        Step::Backup,
        Step::Write,
        Step::Restart,
        Step::Health,
        Step::Rollback,
        Step::Aborted,
        Step::Interrupted,
    ]
    .into_iter()
    .find(|s| exit::code(&Outcome::At(*s)) == code)
    .unwrap_or(Step::Aborted)
}

fn host_json(name: &str, e: &Ended) -> serde_json::Value {
    match e {
        Ended::Skipped => serde_json::json!({
            "host": name, "result": "skipped", "step": null, "exit": null,
            "changed": false, "backup": null, "ms": null, "error": null,
        }),
        Ended::Error { step, message, ms } => serde_json::json!({
            "host": name, "result": "failed", "step": step.name(),
            "exit": exit::code(&Outcome::At(*step)), "changed": false,
            "backup": null, "ms": ms, "error": message,
        }),
        Ended::Ran(rep, ctx, ms) => {
            let report = ApplyJson::new(rep, ctx);
            serde_json::json!({
                "host": name,
                "result": e.result(),
                "step": rep.step.name(),
                "exit": exit::code(&Outcome::At(rep.step)),
                "changed": rep.changed,
                "backup": rep.backup_path,
                "ms": ms,
                "error": report.error,
                "report": report,
            })
        }
    }
}

fn print_host(name: &str, e: &Ended, json: bool) {
    print_host_with(name, e, &Extra::new(), json)
}

/// [`print_host`] with `extra` fields (JSON; `restored` also in the line).
fn print_host_with(name: &str, e: &Ended, extra: &Extra, json: bool) {
    if json {
        let mut v = host_json(name, e);
        if let Some(m) = v.as_object_mut() {
            m.extend(extra.clone());
        }
        println!("{v}");
        return;
    }
    let s = Style::for_stderr();
    let mark = match e.result() {
        "ok" | "unchanged" => s.ok("✓"),
        "planned" => s.warn("•"),
        "skipped" => s.warn("-"),
        _ => s.err("✗"),
    };
    let detail = match e {
        Ended::Skipped => String::new(),
        Ended::Error { step, message, ms } => {
            format!(" at {} ({ms} ms) {message}", step.name())
        }
        Ended::Ran(rep, ctx, ms) => {
            let err = ApplyJson::new(rep, ctx).error.unwrap_or_default();
            format!(" at {} ({ms} ms) {err}", rep.step.name())
        }
    };
    let restored = match extra.get("restored").and_then(|v| v.as_str()) {
        Some(b) => format!(" (restoring {b})"),
        None => String::new(),
    };
    eprintln!(
        "{mark} {}: {}{}{}",
        render::term(name),
        e.result(),
        render::term(&restored),
        render::term(&detail)
    );
}

fn print_summary(members: &[String], ended: &[Ended], code: u8, json: bool) {
    let count = |r: &str| ended.iter().filter(|e| e.result() == r).count();
    let named = |r: &str| -> Vec<&str> {
        members
            .iter()
            .zip(ended)
            .filter(|(_, e)| e.result() == r)
            .map(|(m, _)| m.as_str())
            .collect()
    };
    if json {
        println!(
            "{}",
            serde_json::json!({"summary": {
                "hosts": members.len(),
                "ok": count("ok"),
                "unchanged": count("unchanged"),
                "planned": count("planned"),
                "failed": count("failed"),
                "skipped": count("skipped"),
                "failed_hosts": named("failed"),
                "skipped_hosts": named("skipped"),
                "exit": code,
            }})
        );
        return;
    }
    eprintln!();
    eprintln!(
        "{:<20} {:<10} {:<11} {:<8} {:>8}  backup",
        "host", "result", "step", "changed", "ms"
    );
    for (m, e) in members.iter().zip(ended) {
        let (step, changed, ms, backup) = match e {
            Ended::Skipped => ("-", "-".to_string(), "-".to_string(), String::new()),
            Ended::Error { step, ms, .. } => (
                step.name(),
                "false".to_string(),
                ms.to_string(),
                String::new(),
            ),
            Ended::Ran(rep, _, ms) => (
                rep.step.name(),
                rep.changed.to_string(),
                ms.to_string(),
                rep.backup_path.clone().unwrap_or_default(),
            ),
        };
        eprintln!(
            "{:<20} {:<10} {:<11} {:<8} {:>8}  {}",
            render::term(m),
            e.result(),
            step,
            changed,
            ms,
            render::term(&backup)
        );
    }
    eprintln!(
        "{} hosts: {} ok, {} unchanged, {} planned, {} failed, {} skipped",
        members.len(),
        count("ok"),
        count("unchanged"),
        count("planned"),
        count("failed"),
        count("skipped")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_canary_then_serial() {
        assert_eq!(batches(5, 0, None), vec![vec![0, 1, 2, 3, 4]]);
        assert_eq!(batches(5, 1, None), vec![vec![0], vec![1, 2, 3, 4]]);
        assert_eq!(
            batches(5, 1, Some(2)),
            vec![vec![0], vec![1, 2], vec![3, 4]]
        );
        assert_eq!(batches(2, 5, Some(1)), vec![vec![0, 1]]);
        assert!(batches(0, 1, None).is_empty());
    }

    #[test]
    fn exit_code_is_the_earliest_failing_step() {
        assert_eq!(fleet_code(&[Some(Step::Done), Some(Step::Unchanged)]), 0);
        assert_eq!(fleet_code(&[Some(Step::Done), Some(Step::Planned)]), 2);
        assert_eq!(
            fleet_code(&[
                Some(Step::Health),
                None,
                Some(Step::Connect),
                Some(Step::Planned)
            ]),
            3
        );
        assert_eq!(fleet_code(&[Some(Step::Write), Some(Step::Restart)]), 7);
        for code in [2u8, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12] {
            assert_eq!(exit::code(&Outcome::At(step_for_code(code))), code);
        }
    }
}
