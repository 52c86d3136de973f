//! `swapcfg diff-files OLD NEW`: the diff preview on two local files.
//! Identical → success; different → `Outcome::Differ`; I/O → usage.

use crate::cli::args::DiffFilesArgs;
use crate::cli::exit::Outcome;
use crate::cli::style::Style;
use crate::cli::CmdResult;

pub fn run(args: DiffFilesArgs) -> CmdResult {
    let old = super::read_local(&args.old)?;
    let new = super::read_local(&args.new)?;
    let (old, new) = if args.show_secrets {
        (old, new)
    } else {
        let r = super::apply::run_redactor();
        (r.redact(&old), r.redact(&new))
    };
    let diff = swapcfg::diff::unified_diff(
        &old,
        &new,
        &args.old.display().to_string(),
        &args.new.display().to_string(),
    );
    if diff.is_empty() {
        return Ok(Outcome::Success);
    }
    crate::cli::render::diff(&diff, Style::for_stdout());
    Ok(Outcome::Differ)
}
