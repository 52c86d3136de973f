//! swapcfg's integration tests, one binary (one link, one process start).
//!
//! * `common`: fixtures (client key, in-process server, known_hosts) and the
//!   CLI-run helper (argv builder, JSON assertions).
//! * `transport_inprocess`, `remote_ops`: the failure matrix through the
//!   in-process server, asserting the remote files afterwards.
//! * `pipeline_mock`: every pipeline step's failure over an in-memory remote.
//! * `cli_apply`: the binary end to end (JSON fields, exit codes, API key).
//! * `cli_fleet`: `apply`/`plan --hosts` over several in-process servers.
//! * `cli_surface`: version, completions, hints, exit-code consistency.
//! * `validate_rules`, `validate_corpus`, `validate_proptest`, `diff_patch`.
//! * `e2e_openssh`: Debian's sshd on loopback (skips where absent).
//! * `e2e_jump`: ProxyJump through sshd in network namespaces (root only).

mod backups;
mod cli_apply;
mod cli_fleet;
mod cli_surface;
mod common;
mod diff_patch;
mod e2e_faults;
mod e2e_jump;
mod e2e_openssh;
mod fault_matrix;
mod hostcheck;
mod nonregular;
mod pipeline_mock;
mod reload_proof;
mod remote_ops;
mod restart_gate;
mod round_trips;
mod shell_mode;
mod signals;
mod transport_inprocess;
mod validate_corpus;
mod validate_proptest;
mod validate_rules;
mod wrapper_mode;
