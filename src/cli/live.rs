//! A fleet's live lines on a TTY: one line per running host (host, current
//! step, elapsed), drawn with indicatif's `MultiProgress` (the maintained
//! progress crate, from console-rs). Used only when stderr is a terminal,
//! `NO_COLOR` is unset and there is no `--json`; elsewhere a fleet run
//! prints its plain lines only.
//!
//! A line appears when its host starts and goes when it ends (so at most
//! `--parallel` lines); the host's ending line and the final table are
//! printed above the live lines as without them. The text of a line is a
//! pure function ([`message`], [`elapsed`]) of the host's name, its step
//! events and the time: tested without a terminal.

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use swapcfg::pipeline::Step;

use super::render;

/// The live lines of one fleet run.
pub struct Live {
    multi: MultiProgress,
    style: ProgressStyle,
}

/// One running host's line.
#[derive(Clone)]
pub struct HostLine {
    bar: ProgressBar,
    host: String,
}

/// A host name as a line shows it: terminal controls escaped (and line
/// breaks, which would break the line), padded to a column.
fn name(host: &str) -> String {
    let safe = render::term(host).replace('\n', "\\n").replace('\t', "\\t");
    format!("{safe:<20}")
}

/// What a host's line says after the step events `steps` (the last one is
/// the current step; none yet: connecting).
pub fn message(host: &str, steps: &[Step]) -> String {
    let now = steps.last().map_or("starting", |s| s.name());
    format!("{} {now:<10}", name(host))
}

/// The time a line shows: tenths of a second under a minute, then minutes
/// and seconds.
pub fn elapsed(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{}.{}s", s, d.subsec_millis() / 100)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

impl Live {
    /// Live lines on stderr.
    pub fn new() -> Live {
        let style = ProgressStyle::with_template("{spinner} {msg} {took}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .with_key("took", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&elapsed(s.elapsed()));
            });
        Live {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            style,
        }
    }

    /// A line for a host that starts now.
    pub fn start(&self, host: &str) -> HostLine {
        let bar = self
            .multi
            .add(ProgressBar::new_spinner().with_style(self.style.clone()));
        bar.set_message(message(host, &[]));
        bar.enable_steady_tick(Duration::from_millis(100));
        HostLine {
            bar,
            host: host.to_string(),
        }
    }

    /// The host's line goes (it ended).
    pub fn end(&self, line: &HostLine) {
        line.bar.finish_and_clear();
        self.multi.remove(&line.bar);
    }

    /// Every line goes (the process exits at once).
    pub fn clear(&self) {
        let _ = self.multi.clear();
    }

    /// Print (with `f`) above the live lines.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.multi.suspend(f)
    }
}

impl HostLine {
    /// The host started `step`.
    pub fn step(&self, step: Step) {
        self.bar.set_message(message(&self.host, &[step]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_follows_the_step_events_and_escapes_the_name() {
        assert_eq!(
            message("gpu-1", &[]),
            format!("{:<20} {:<10}", "gpu-1", "starting")
        );
        let steps = [Step::Connect, Step::Read, Step::Backup, Step::Write];
        for n in 1..=steps.len() {
            let line = message("gpu-1", &steps[..n]);
            assert!(
                line.starts_with("gpu-1 ") && line.contains(steps[n - 1].name()),
                "{line}"
            );
            assert_eq!(line.chars().count(), 31, "fixed columns: {line:?}");
        }
        let evil = message("a\x1b[2Jb\nc", &[Step::Health]);
        assert!(!evil.contains('\x1b') && !evil.contains('\n'), "{evil:?}");
        assert!(evil.contains("a\\x1b[2Jb\\nc") && evil.contains("health"));
    }

    #[test]
    fn elapsed_in_tenths_then_minutes() {
        assert_eq!(elapsed(Duration::from_millis(0)), "0.0s");
        assert_eq!(elapsed(Duration::from_millis(1_490)), "1.4s");
        assert_eq!(elapsed(Duration::from_millis(59_999)), "59.9s");
        assert_eq!(elapsed(Duration::from_secs(125)), "2m05s");
    }
}
