//! The command line: everything that knows about flags, exit codes and
//! terminals. The library below knows none of them.
//!
//! * `args`: clap definitions (what the user typed).
//! * `settings`: flags > inventory host > ssh config > inventory defaults,
//!   resolved once (`ssh_config`: the OpenSSH client config, bounded).
//! * `host`: the one way to connect and open the remote config.
//! * `fleet`: `apply`/`plan`/`rollback --hosts`: many hosts, each on the
//!   single-host path (`live`: their live lines on a TTY).
//! * `cmd/*`: one thin adapter per subcommand (settings → library → outcome).
//! * `render` + `style`: human and `--json` output, hints naming flags.
//! * `exit`: the exit-status table, applied once in `main`.

pub mod args;
mod cmd;
pub mod exit;
mod fleet;
mod host;
mod live;
mod render;
mod settings;
mod ssh_config;
mod style;

use clap::Parser;

use args::{Cli, Command};
use exit::Outcome;
use render::{Failure, HintContext};

/// Parse the process arguments, run the command, print its failure (if
/// any) and return its outcome.
pub fn run() -> Outcome {
    let cli = Cli::parse();
    let mut ctx = HintContext::default();
    let result = match cli.command {
        Command::Get(a) => cmd::get::run(a),
        Command::Validate(a) => cmd::validate::run(a),
        Command::DiffFiles(a) => cmd::diff_files::run(a),
        Command::Apply(a) => cmd::apply::run(a, false, &mut ctx),
        Command::Plan(a) => cmd::apply::run(a, true, &mut ctx),
        Command::Health(a) => cmd::health::run(a, &mut ctx),
        Command::Status(a) => fleet::status(a),
        Command::Backups(a) => cmd::backups::run(a),
        Command::Rollback(a) => cmd::rollback::run(a, &mut ctx),
        Command::Edit(a) => cmd::edit::run(a, &mut ctx),
        Command::WrapperScript(a) => cmd::wrapper_script::run(a),
        Command::Demo => cmd::demo::run(),
        Command::Completions(a) => cmd::completions::run(a),
    };
    match result {
        Ok(outcome) => outcome,
        Err(f) => {
            render::print_failure(&f, &ctx);
            f.outcome
        }
    }
}

/// What every command returns.
pub type CmdResult = Result<Outcome, Failure>;

/// A current-thread tokio runtime for one command.
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::usage(format!("cannot start the async runtime: {e}")))
}
