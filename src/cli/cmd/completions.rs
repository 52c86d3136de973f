//! `swapcfg completions SHELL`: a completion script from the same clap
//! definitions (clap_complete).

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::args::{Cli, CompletionsArgs, ShellArg};
use crate::cli::exit::Outcome;
use crate::cli::CmdResult;

pub fn run(args: CompletionsArgs) -> CmdResult {
    let shell = match args.shell {
        ShellArg::Bash => Shell::Bash,
        ShellArg::Zsh => Shell::Zsh,
        ShellArg::Fish => Shell::Fish,
        ShellArg::Elvish => Shell::Elvish,
        ShellArg::Powershell => Shell::PowerShell,
    };
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "swapcfg", &mut std::io::stdout());
    Ok(Outcome::Success)
}
