//! swapcfg: change the configuration of llama-swap servers on remote hosts
//! safely, over a pure-Rust SSH stack (no `ssh` binary, no OpenSSL).
//!
//! # Crate map
//!
//! The pipeline, per host, is **validate → read → diff → backup → write →
//! restart → health**. Pure logic is kept apart from I/O:
//!
//! * Pure checks (no network, no clock, no filesystem beyond their inputs):
//!   - [`validate`]: YAML (positions, anchors, merge keys, duplicate keys),
//!     JSON Schema, and llama-swap's loader rules, every finding with
//!     `line:column`.
//!   - [`diff`]: unified diff of old and new bytes.
//!   - [`remote::backup_path`]: the `<path>.bak-YYYYMMDDTHHMMSSZ` name.
//! * I/O:
//!   - [`target`]: `[user@]host[:port]` parsing.
//!   - [`transport`]: one SSH session (russh): connect, authenticate, verify
//!     the host key, run exec channels, open SFTP; every step has a timeout.
//!   - [`remote`]: the [`remote::RemoteOps`] seam (read / backup / write /
//!     restart) with three implementations: SFTP, POSIX shell over exec, and
//!     the fixed-verb forced-command wrapper.
//!   - [`health`]: polls `GET <base_url>/v1/models` with hyper.
//!   - [`standin`]: a stand-in llama-swap `/v1/models` endpoint (tests, demo).
//!   - [`testserver`]: an in-process russh SSH/SFTP server with a fault plan,
//!     used by the tests and by `swapcfg demo`.
//! * Orchestration and presentation:
//!   - [`pipeline`]: the apply pipeline as one function over `RemoteOps`.
//!   - [`inventory`]: the hosts file (`defaults:` + `hosts:`).
//!   - [`report`]: human (colored when allowed) and `--json` output.
//!   - [`cli`] and [`cmd`]: argument parsing and one module per subcommand.

pub mod cli;
pub mod cmd;
pub mod diff;
pub mod health;
pub mod inventory;
pub mod pipeline;
pub mod remote;
pub mod report;
pub mod standin;
pub mod target;
pub mod testserver;
pub mod transport;
pub mod validate;
