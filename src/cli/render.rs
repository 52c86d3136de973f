//! Presentation: the words and shapes people and machines see.
//!
//! Owns: the error type the commands return ([`Failure`]), the hints that
//! name the flag fixing a library error (the library itself never names
//! flags), the human apply report, validation findings, diffs, and the
//! `--json` apply object ([`ApplyJson`]), which is a contract of its own,
//! not a dump of the library's report.

use swapcfg::health::HealthError;
use swapcfg::hostcheck::{HostFinding, Level, ProbeKind};
use swapcfg::pipeline::{ApplyError, ApplyReport, RemoteState, RollbackError, Step, Warning};
use swapcfg::remote::RemoteError;
use swapcfg::transport::TransportError;
use swapcfg::validate::{Finding, Severity};

use super::exit::Outcome;
use super::style::Style;

/// Why a command stopped: where (for the exit status) and what (for words).
#[derive(Debug)]
pub struct Failure {
    pub outcome: Outcome,
    pub error: Box<CliError>,
    /// The host it happened on, when the message does not name it.
    pub host: Option<String>,
}

/// The errors commands meet, typed until rendered.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Health(#[from] HealthError),
    #[error("{0}")]
    Other(String),
}

impl Failure {
    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            outcome: Outcome::Usage,
            error: Box::new(CliError::Usage(message.into())),
            host: None,
        }
    }

    /// A failure at a pipeline step.
    pub fn at(step: Step, error: impl Into<CliError>) -> Failure {
        Failure {
            outcome: Outcome::At(step),
            error: Box::new(error.into()),
            host: None,
        }
    }

    /// A failure with its own outcome and a plain message.
    pub fn other(outcome: Outcome, message: impl Into<String>) -> Failure {
        Failure {
            outcome,
            error: Box::new(CliError::Other(message.into())),
            host: None,
        }
    }

    /// Name the host in the message.
    pub fn on(mut self, host: String) -> Failure {
        self.host = Some(host);
        self
    }
}

/// Context the hints may name (the API key's variable).
#[derive(Debug, Clone, Default)]
pub struct HintContext {
    pub api_key_env: Option<String>,
}

fn transport_hint(e: &TransportError) -> Option<String> {
    Some(match e {
        TransportError::ConnectTimeout { .. } => {
            "raise --connect-timeout if the host is slow to answer".into()
        }
        TransportError::HostKeyUnknown { .. } => {
            "if that is the right host, rerun with --host-key-policy accept-new".into()
        }
        TransportError::NoKeys { .. } => "pass --identity FILE".into(),
        TransportError::CommandTimeout { .. } => {
            "raise --restart-timeout if the restart is only slow".into()
        }
        TransportError::AuthRejected { .. } => "check --identity".into(),
        TransportError::Jump { source, .. } => return transport_hint(source),
        TransportError::JumpChannel { .. } => {
            "check that the jump host reaches the target's address and port, and allows TCP forwarding (AllowTcpForwarding)".into()
        }
        TransportError::NoSftp { .. } => {
            "use --mode shell (or --mode wrapper for a forced-command key)".into()
        }
        _ => return None,
    })
}

/// The flag that fixes `e`, if one does.
pub fn hint(e: &CliError, ctx: &HintContext) -> Option<String> {
    match e {
        CliError::Transport(t) | CliError::Remote(RemoteError::Transport(t)) => transport_hint(t),
        CliError::Remote(r) => remote_hint(r),
        CliError::Health(h) => health_hint(h, ctx),
        CliError::Usage(_) | CliError::Other(_) => None,
    }
}

fn remote_hint(e: &RemoteError) -> Option<String> {
    use swapcfg::remote::wrapper::{NO_RESTART_OP, UNVERIFIED_WRITE_OP};
    match e {
        RemoteError::Transport(t) => transport_hint(t),
        RemoteError::Unsupported { op, .. } if *op == UNVERIFIED_WRITE_OP => Some(
            "make the key's forced command the script `swapcfg wrapper-script --config-path PATH` prints (it checks length and sha256), or pass --unverified-wrapper-write to write through this one anyway".into(),
        ),
        RemoteError::Unsupported { op, .. } if *op == NO_RESTART_OP => Some(
            "pass --restart-cmd none if llama-swap reloads by itself (-watch-config), or regenerate the script with `swapcfg wrapper-script --restart-cmd CMD`".into(),
        ),
        RemoteError::Unsupported {
            instead: Some(m), ..
        } => Some(match m {
            swapcfg::remote::Mode::Sftp => {
                "use --mode sftp or --mode shell with an unrestricted key".into()
            }
            other => format!("use --mode {other}"),
        }),
        _ => None,
    }
}

fn health_hint(e: &HealthError, ctx: &HintContext) -> Option<String> {
    match e {
        HealthError::Unauthorized {
            key_sent: false, ..
        } => Some(
            "give one with --api-key-env NAME (the variable holding one of llama-swap's apiKeys)"
                .into(),
        ),
        HealthError::Unauthorized { key_sent: true, .. } => Some(match &ctx.api_key_env {
            Some(name) => {
                format!("the key in ${name} was rejected: it is not one of llama-swap's apiKeys")
            }
            None => "the key given was rejected: it is not one of llama-swap's apiKeys".into(),
        }),
        HealthError::BadUrl { .. } => Some("check --base-url".into()),
        HealthError::Tls { .. } => {
            Some("if llama-swap uses a private CA, pass it with --ca-cert FILE".into())
        }
        _ => None,
    }
}

/// `s` made safe for a terminal: every control character but tab and
/// newline (C0, DEL, C1: escape sequences, carriage returns, OSC 52…) is
/// written as a visible escape (`\x1b`, `\u{9b}`). Human output only;
/// `--json` carries the exact text.
pub fn term(s: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| (c.is_control() && c != '\n' && c != '\t') || c == '\u{7f}';
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if unsafe_char(c) {
            if (c as u32) < 0x80 {
                out.push_str(&format!("\\x{:02x}", c as u32));
            } else {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `message` followed by `hint` (on its own line when the message has
/// several lines).
pub fn with_hint(message: String, hint: Option<String>) -> String {
    match hint {
        None => message,
        Some(h) if message.contains('\n') => format!("{message}\n  {h}"),
        Some(h) => format!("{message}; {h}"),
    }
}

/// `swapcfg: error: …` on stderr.
pub fn print_failure(f: &Failure, ctx: &HintContext) {
    let host = f
        .host
        .as_ref()
        .map(|h| format!("{h}: "))
        .unwrap_or_default();
    let message = with_hint(f.error.to_string(), hint(&f.error, ctx));
    eprintln!("swapcfg: error: {}{}", term(&host), term(&message));
}

fn apply_error_hint(e: &ApplyError, ctx: &HintContext) -> Option<String> {
    match e {
        ApplyError::Connect(t) => transport_hint(t),
        ApplyError::Remote(r) => remote_hint(r),
        ApplyError::Health(h) => health_hint(h, ctx),
        _ => None,
    }
}

/// The one-line (or few-line) reason an apply stopped, with what it means
/// for the host and the flag that fixes it.
pub fn apply_error(rep: &ApplyReport, ctx: &HintContext) -> Option<String> {
    let e = rep.error.as_ref()?;
    let mut msg = with_hint(e.to_string(), apply_error_hint(e, ctx));
    let backup = rep.backup_path.as_deref().unwrap_or("?");
    let seen = if rep.state_reread {
        "read back from the host"
    } else {
        "as the host acknowledged"
    };
    match rep.step {
        Step::Backup => msg.push_str("; nothing was written"),
        Step::Write => msg.push_str(&match rep.remote_state {
            Some(RemoteState::Old) => {
                format!("; the old config is intact ({seen}; backup at {backup})")
            }
            Some(RemoteState::New) => format!(
                "; the new config IS in place ({seen}) but was not restarted; the previous one is at {backup}"
            ),
            _ => format!(
                "; the config could not be read back, so its state is UNKNOWN: check the host (previous config at {backup})"
            ),
        }),
        Step::Health if rep.backup_path.is_none() => {
            msg.push_str("; checked before the change: nothing was written")
        }
        Step::Health
            if rep.kept_new
                && matches!(
                    rep.error,
                    Some(ApplyError::Health(HealthError::Unauthorized { .. }))
                ) =>
        {
            msg.push_str(&format!(
                "; the new config IS in place and llama-swap answers, but without a valid key it could not be checked, so it was not rolled back (the previous one is at {backup})"
            ))
        }
        Step::Restart | Step::Health if rep.kept_new => msg.push_str(&format!(
            "; the new config was kept (--no-rollback), the previous one is at {backup}"
        )),
        _ => {}
    }
    Some(msg)
}

fn rollback_error(e: &RollbackError, ctx: &HintContext) -> String {
    let hint = match e {
        RollbackError::Health(h) => health_hint(h, ctx),
        RollbackError::Restore(r) | RollbackError::Restart(r) | RollbackError::Changed(r) => {
            remote_hint(r)
        }
    };
    with_hint(e.to_string(), hint)
}

fn warning(w: &Warning) -> String {
    match w {
        Warning::PruneUnsupported { why } => format!("--keep-backups ignored: {why}"),
        Warning::PruneList { error } => format!("could not list backups to prune: {error}"),
        Warning::PruneRemove { path, error } => format!("could not prune {path}: {error}"),
        Warning::HealthNotChecked => "no --base-url: health was not checked".into(),
        Warning::LockUnsupported { why } => {
            format!("no lock taken ({why}); concurrent applies are not excluded")
        }
        Warning::LockTakenOver { previous: Some(p) } => {
            format!("took over the lock of {p}")
        }
        Warning::LockTakenOver { previous: None } => {
            "took over a lock whose record could not be read".into()
        }
        Warning::Unlock { error } => {
            format!("could not remove the lock ({error}); its lease will expire")
        }
        Warning::Service(w) => service_warning(w),
    }
}

fn service_warning(w: &swapcfg::health::ServiceWarning) -> String {
    use swapcfg::health::ServiceWarning as W;
    match w {
        W::PreflightUnhealthy { url, seen } => format!(
            "before the change {url} was not healthy ({seen}); going on, as the change may be the fix (--require-healthy stops here)"
        ),
        W::ReloadUnproven { why } => format!(
            "the reload could not be read from llama-swap's log ({why}); only /v1/models was compared, which does not show edits to cmd or groups: the proof is weaker"
        ),
        W::UnhealthyAsBefore { error } => format!(
            "the previous config is back, but llama-swap is not healthy with it either, as before the change: {error}"
        ),
        W::RollbackUnverified { url } => format!(
            "after the rollback {url} asks for an API key: it answers, but its health was not verified (--api-key-env NAME)"
        ),
    }
}

/// `apply`/`plan`/`rollback`/`edit --json`: one object per host.
///
/// Fields (stable; new ones may be added):
/// * `ok`: the apply reached its goal (done, unchanged, planned).
/// * `step`: where it ended: `validate`, `connect`, `read`, `conflict`,
///   `aborted`, `backup`, `write`, `restart`, `health`, `rollback` (the
///   rollback failed), `planned`, `unchanged`, `done`.
/// * `host`: `user@host:port`; `config_path`: the remote file.
/// * `changed`: the new bytes differ from the remote ones.
/// * `backup_path`: the backup made by this apply, if any.
/// * `diff`: unified diff of remote → new.
/// * `error`: why it stopped, with the flag that fixes it; `null` on success.
/// * `rolled_back`: the old config was restored and is healthy again (or,
///   when llama-swap was not healthy before the change either, as healthy as
///   before: a warning says so).
/// * `remote_state`: what the config holds at the end as last seen: `old`,
///   `new` or `unknown` (`null` when it was never read). After a failed
///   write it was read back (over a fresh connection if needed).
/// * `rollback_error`: why the rollback failed (the host may be broken).
/// * `old_sha256`, `new_sha256`: hex sha256 of the remote and new bytes.
/// * `pruned_backups`: backups deleted by `--keep-backups`.
/// * `warnings`: things that did not stop the apply, validation warnings
///   of the new file included (`line:col: path: message [rule]`).
/// * `findings`: every validation finding of the new file, errors and
///   warnings, as objects: `rule`, `severity` (`error`/`warning`), `line`,
///   `column` (1-based, in the new file), `path` (`$.models["m"].proxy`),
///   `message`. When `step` is `validate`, the errors here are why; `error`
///   then also quotes the first ones.
/// * `timings_ms`: milliseconds per step, in the order they ran. `backup`
///   and `write` overlap (the upload runs beside the backup): both count
///   from the same start, `write` until the rename's reply, so they are
///   not to be added up. A restart sent with the rename counts from that
///   reply to its end.
/// * `host_checks`: what the host checks found before anything was
///   written, in config order; each `{severity, check, target, flag, model,
///   line, column, message}`: `severity` is `warning` (`error` when
///   `--strict-host` stopped the apply) or `note` (could not be checked);
///   `check` is `executable`, `command`, `file`, `store-dir` or `env`;
///   `target` the path, command or variable name (`""` for a note about the
///   whole check); `flag` the cmd flag that named a file; `line`/`column` in
///   the new config (`0` for a whole-check note). `[]` when all passed.
#[derive(Debug, serde::Serialize)]
pub struct ApplyJson {
    pub ok: bool,
    pub step: &'static str,
    pub host: String,
    pub config_path: String,
    pub changed: bool,
    pub backup_path: Option<String>,
    pub diff: String,
    pub error: Option<String>,
    pub rolled_back: bool,
    pub remote_state: Option<&'static str>,
    pub rollback_error: Option<String>,
    pub old_sha256: Option<String>,
    pub new_sha256: String,
    pub pruned_backups: Vec<String>,
    pub warnings: Vec<String>,
    pub findings: Vec<FindingJson>,
    pub timings_ms: serde_json::Map<String, serde_json::Value>,
    pub host_checks: Vec<HostCheckJson>,
}

/// One host-check finding in `--json` (see [`ApplyJson`]).
#[derive(Debug, serde::Serialize)]
pub struct HostCheckJson {
    pub severity: &'static str,
    pub check: &'static str,
    pub target: String,
    pub flag: Option<String>,
    pub model: Option<String>,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

fn host_severity(f: &HostFinding, rep: &ApplyReport) -> &'static str {
    match f.level {
        Level::Note => "note",
        Level::Problem if rep.step == Step::HostCheck => "error",
        Level::Problem => "warning",
    }
}

/// The host-check lines for people: each problem on its own line; notes
/// that say the same thing (a bare command in every model, over SFTP) once,
/// naming what they cover.
fn host_lines(rep: &ApplyReport, s: Style) -> Vec<String> {
    let mut lines = Vec::new();
    let mut notes: Vec<(&str, Vec<&HostFinding>)> = Vec::new();
    for f in &rep.host_findings {
        if f.level == Level::Problem {
            lines.push(host_finding(f, rep, s));
        } else if let Some((_, group)) = notes.iter_mut().find(|(m, _)| *m == f.message) {
            group.push(f);
        } else {
            notes.push((&f.message, vec![f]));
        }
    }
    for (message, group) in notes {
        match group.as_slice() {
            [one] => lines.push(host_finding(one, rep, s)),
            many => {
                let mut targets: Vec<&str> = Vec::new();
                for f in many {
                    if !targets.contains(&f.target.as_str()) {
                        targets.push(&f.target);
                    }
                }
                let shown = targets
                    .iter()
                    .take(3)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ");
                let more = targets.len().saturating_sub(3);
                lines.push(format!(
                    "host check: note: {} ({} places: {}{})",
                    term(message),
                    many.len(),
                    term(&shown),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                ));
            }
        }
    }
    lines
}

/// One host-check finding for people: `host check 8:12: warning: model
/// "a": -m /models/a.gguf does not exist on the host` (host-sent and
/// config text escaped).
fn host_finding(f: &HostFinding, rep: &ApplyReport, s: Style) -> String {
    let sev = match host_severity(f, rep) {
        "error" => s.err("error"),
        "note" => "note".to_string(),
        _ => s.warn("warning"),
    };
    let at = if f.line == 0 {
        String::new()
    } else {
        format!(" {}:{}", f.line, f.column)
    };
    let model = f
        .model
        .as_ref()
        .map(|m| format!("model {m:?}: "))
        .unwrap_or_default();
    let what = match (&f.flag, f.target.is_empty()) {
        (_, true) => String::new(),
        (Some(flag), false) => format!("{flag} {} ", f.target),
        (None, false) if f.kind == ProbeKind::Env => format!("${{env.{}}} ", f.target),
        (None, false) => format!("{} ", f.target),
    };
    format!(
        "host check{at}: {sev}: {}",
        term(&format!("{model}{what}{}", f.message))
    )
}

/// One validation finding in `ApplyJson.findings`.
#[derive(Debug, serde::Serialize)]
pub struct FindingJson {
    pub rule: String,
    pub severity: Severity,
    pub line: usize,
    pub column: usize,
    pub path: String,
    pub message: String,
}

impl From<&Finding> for FindingJson {
    fn from(f: &Finding) -> FindingJson {
        FindingJson {
            rule: f.rule.clone(),
            severity: f.severity,
            line: f.line,
            column: f.column,
            path: f.path.clone(),
            message: f.message.clone(),
        }
    }
}

/// A finding on one line, without the file: `line:col: path: message [rule]`.
fn finding_line(f: &Finding) -> String {
    format!(
        "{}:{}: {}: {} [{}]",
        f.line, f.column, f.path, f.message, f.rule
    )
}

/// How many errors `error` quotes when validation stopped the apply.
const QUOTED_ERRORS: usize = 3;

/// `apply_error`, plus the first validation errors when they are the reason.
fn json_error(rep: &ApplyReport, ctx: &HintContext) -> Option<String> {
    let mut msg = apply_error(rep, ctx)?;
    if matches!(rep.error, Some(ApplyError::Invalid { .. })) {
        let errors: Vec<String> = rep
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .take(QUOTED_ERRORS)
            .map(finding_line)
            .collect();
        if !errors.is_empty() {
            msg.push_str(": ");
            msg.push_str(&errors.join("; "));
        }
    }
    Some(msg)
}

impl ApplyJson {
    pub fn new(rep: &ApplyReport, ctx: &HintContext) -> ApplyJson {
        ApplyJson {
            ok: rep.ok,
            step: rep.step.name(),
            host: rep.host.clone(),
            config_path: rep.config_path.clone(),
            changed: rep.changed,
            backup_path: rep.backup_path.clone(),
            diff: rep.diff.clone(),
            error: json_error(rep, ctx),
            rolled_back: rep.rolled_back,
            remote_state: rep.remote_state.map(RemoteState::name),
            rollback_error: rep.rollback_error.as_ref().map(|e| rollback_error(e, ctx)),
            old_sha256: rep.old_sha256.clone(),
            new_sha256: rep.new_sha256.clone(),
            pruned_backups: rep.pruned_backups.clone(),
            warnings: rep
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Warning)
                .map(finding_line)
                .chain(rep.warnings.iter().map(warning))
                .collect(),
            findings: rep.findings.iter().map(FindingJson::from).collect(),
            timings_ms: rep
                .timings_ms
                .iter()
                .map(|(s, ms)| (s.name().to_string(), serde_json::Value::from(*ms)))
                .collect(),
            host_checks: rep
                .host_findings
                .iter()
                .map(|f| HostCheckJson {
                    severity: host_severity(f, rep),
                    check: f.kind.name(),
                    target: f.target.clone(),
                    flag: f.flag.clone(),
                    model: f.model.clone(),
                    line: f.line,
                    column: f.column,
                    message: f.message.clone(),
                })
                .collect(),
        }
    }
}

/// Print the report: JSON on stdout, or the human summary on stderr.
pub fn apply_report(rep: &ApplyReport, json: bool, ctx: &HintContext) {
    if json {
        match serde_json::to_string_pretty(&ApplyJson::new(rep, ctx)) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("swapcfg: error: {e}"),
        }
    } else {
        human(rep, ctx);
    }
}

fn human(rep: &ApplyReport, ctx: &HintContext) {
    let s = Style::for_stderr();
    let timings: Vec<String> = rep
        .timings_ms
        .iter()
        .map(|(k, v)| format!("{} {v}ms", k.name()))
        .collect();
    let where_ = format!("{}:{}", rep.host, rep.config_path);
    for line in host_lines(rep, s) {
        eprintln!("{line}");
    }
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
            eprintln!(
                "{} {}: {}",
                s.err(&format!("✗ failed at step {}:", step.name())),
                term(&where_),
                term(&apply_error(rep, ctx).unwrap_or_else(|| "unknown error".into()))
            );
            if rep.rolled_back && rep.timing(Step::Restart).is_none() {
                eprintln!(
                    "{} the previous config was restored and llama-swap is healthy with it",
                    s.ok("↺ rolled back:")
                );
            } else if rep.rolled_back {
                eprintln!(
                    "{} the previous config was restored, restarted and is healthy again",
                    s.ok("↺ rolled back:")
                );
            }
            if let Some(e) = &rep.rollback_error {
                eprintln!(
                    "{} {}\n  THE HOST MAY BE BROKEN: check it now; the previous config is at {}",
                    s.err("✗ rollback failed:"),
                    term(&rollback_error(e, ctx)),
                    rep.backup_path.as_deref().unwrap_or("?")
                );
            }
        }
    }
    for w in &rep.warnings {
        eprintln!("{} {}", s.warn("warning:"), term(&warning(w)));
    }
}

/// One finding as `file:line:col: severity: path: message [rule]`.
pub fn finding(f: &Finding, file: &str, style: Style) -> String {
    let sev = match f.severity {
        Severity::Error => style.err("error"),
        Severity::Warning => style.warn("warning"),
    };
    format!(
        "{}:{}:{}: {sev}: {}: {} [{}]",
        term(file),
        f.line,
        f.column,
        term(&f.path),
        term(&f.message),
        f.rule
    )
}

/// A unified diff on stdout, colored when allowed, control characters from
/// either file escaped.
pub fn diff(diff: &str, style: Style) {
    let diff = term(diff);
    if style.color {
        print!("{}", swapcfg::diff::colorize(&diff));
    } else {
        print!("{diff}");
    }
}

#[cfg(test)]
mod tests {
    use super::term;

    #[test]
    fn control_characters_are_escaped_for_terminals() {
        assert_eq!(term("plain\ttab\nline"), "plain\ttab\nline");
        assert_eq!(
            term("a\x1b]52;c;ZXZpbA==\x07b"),
            "a\\x1b]52;c;ZXZpbA==\\x07b"
        );
        assert_eq!(term("cr\rdel\x7f"), "cr\\x0ddel\\x7f");
        assert_eq!(term("csi\u{9b}2J"), "csi\\u{9b}2J");
    }
}
