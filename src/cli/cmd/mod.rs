//! One thin adapter per subcommand: resolved settings → library call →
//! [`super::exit::Outcome`] (or a [`super::render::Failure`]). No exit
//! numbers here: `exit::code` is the only table.

pub mod apply;
pub mod backups;
pub mod completions;
pub mod demo;
pub mod diff_files;
pub mod edit;
pub mod get;
pub mod health;
pub mod rollback;
pub mod validate;
pub mod wrapper_script;

use std::path::Path;

use super::render::Failure;

/// Read a local config file given on the command line (bounded by bytes
/// read; devices and FIFOs refused).
pub fn read_local(path: &Path) -> Result<Vec<u8>, Failure> {
    swapcfg::local::read_bounded(path, swapcfg::limits::MAX_CONFIG as u64)
        .map_err(|e| Failure::usage(format!("{}: {e}", path.display())))
}
