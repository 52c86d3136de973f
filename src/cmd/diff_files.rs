//! `swapcfg diff-files`.

use std::process::ExitCode;

pub fn run(_args: crate::cli::DiffFilesArgs) -> ExitCode {
    eprintln!("swapcfg: not implemented yet");
    ExitCode::from(2)
}
