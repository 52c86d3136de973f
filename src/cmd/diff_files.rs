//! `swapcfg diff-files OLD NEW`: the diff preview on two local files.
//! Exit 0 when identical, 1 when different, 2 on I/O errors.

use std::process::ExitCode;

pub fn run(args: crate::cli::DiffFilesArgs) -> ExitCode {
    let read = |p: &std::path::Path| {
        super::validate::read_bounded(p).map_err(|e| format!("{}: {e}", p.display()))
    };
    let (old, new) = match (read(&args.old), read(&args.new)) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(e), _) | (_, Err(e)) => return super::fail(super::exit::USAGE, e),
    };
    let diff = crate::diff::unified_diff(
        &old,
        &new,
        &args.old.display().to_string(),
        &args.new.display().to_string(),
    );
    if diff.is_empty() {
        return ExitCode::SUCCESS;
    }
    if crate::report::Style::for_stdout().color {
        print!("{}", crate::diff::colorize(&diff));
    } else {
        print!("{diff}");
    }
    ExitCode::from(1)
}
