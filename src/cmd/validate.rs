//! `swapcfg validate`.

use std::process::ExitCode;

pub fn run(_args: crate::cli::ValidateArgs) -> ExitCode {
    eprintln!("swapcfg: not implemented yet");
    ExitCode::from(2)
}
