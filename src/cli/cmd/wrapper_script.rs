//! `swapcfg wrapper-script --config-path PATH [--restart-cmd CMD]`: print
//! the project's forced-command script (the library's
//! [`swapcfg::remote::wrapper_script`]) on stdout.

use std::io::Write;

use crate::cli::args::WrapperScriptArgs;
use crate::cli::exit::Outcome;
use crate::cli::render::Failure;
use crate::cli::CmdResult;

pub fn run(args: WrapperScriptArgs) -> CmdResult {
    let restart = args.restart_cmd.as_deref().filter(|c| *c != "none");
    let script = swapcfg::remote::wrapper_script::generate(
        &args.config_path,
        restart,
        swapcfg::limits::MAX_CONFIG as u64,
    )
    .map_err(|e| Failure::usage(format!("--config-path/--restart-cmd: {e}")))?;
    let mut out = std::io::stdout().lock();
    out.write_all(script.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| Failure::usage(format!("writing to stdout: {e}")))?;
    Ok(Outcome::Success)
}
