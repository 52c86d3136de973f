//! The `swapcfg` binary: the command line over the `swapcfg` library.
//!
//! Everything that knows about flags, exit codes and terminals lives under
//! `src/cli/`; the library below it knows none of them. `main` hands the
//! process arguments to the CLI and turns the command's typed outcome into
//! the exit status, in exactly one place ([`cli::exit::code`]).

mod cli;

fn main() -> std::process::ExitCode {
    let outcome = cli::run();
    std::process::ExitCode::from(cli::exit::code(&outcome))
}
