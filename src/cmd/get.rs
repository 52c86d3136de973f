//! `swapcfg get`.

use std::process::ExitCode;

pub fn run(_args: crate::cli::GetArgs) -> ExitCode {
    eprintln!("swapcfg: not implemented yet");
    ExitCode::from(2)
}
