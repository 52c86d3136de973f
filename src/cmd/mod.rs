//! One module per subcommand; each exposes `run(args) -> ExitCode`.

pub mod diff_files;
pub mod get;
pub mod validate;
