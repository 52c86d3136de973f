//! swapcfg: change the configuration of llama-swap servers on remote hosts
//! safely, over a pure-Rust SSH stack (no `ssh` binary, no OpenSSL).
//!
//! This library is the domain: it knows hosts, files, configs and steps. It
//! knows nothing of command-line flags, exit codes or terminals: the
//! `swapcfg` binary (`src/main.rs`, `src/cli/`) owns those and is the only
//! thing that depends on clap. See ARCHITECTURE.md for the layers.
//!
//! # Crate map
//!
//! The pipeline, per host, is **validate → read → diff → backup → write →
//! restart → health**. Pure logic is kept apart from I/O:
//!
//! * Pure (no network, no clock, no filesystem beyond their inputs):
//!   - [`validate`]: YAML (positions, anchors, merge keys, duplicate keys),
//!     JSON Schema, and llama-swap's loader rules, every finding with
//!     `line:column`.
//!   - [`diff`]: unified diff of old and new bytes.
//!   - [`redact`]: config text with secret values (`apiKeys`, secret env
//!     items, metadata and keys) replaced by hash markers, for diffs.
//!   - [`target`]: `[user@]host[:port]` parsing.
//!   - [`limits`]: every bound and default budget, defined once.
//! * I/O:
//!   - [`transport`]: one SSH session (russh): connect, authenticate, verify
//!     the host key, run exec channels, open SFTP; every step has a timeout.
//!   - [`remote`]: the [`remote::RemoteOps`] seam (read / backup / write /
//!     restart) with three implementations, one per [`remote::Mode`]: SFTP,
//!     POSIX shell over exec, and the fixed-verb forced-command wrapper.
//!   - [`health`]: polls `GET <base_url>/v1/models` with hyper (backoff
//!     inside a total deadline), reads `/api/version` and `/running`.
//!   - [`reload`]: proves a change took: pre-flight probe, llama-swap's
//!     `/logs` marked before the write and scanned after it for the reload's
//!     outcome (watch and SIGHUP modes), model list check, rollback check.
//!   - [`hostcheck`]: what a new config needs from its host (executables,
//!     model files, store directory, env names) — planned purely, asked
//!     through [`remote::RemoteOps::probe`].
//!   - [`inventory`]: the hosts file (`defaults:` + `hosts:`), typed.
//!   - [`local`]: bounded reads of the user's local files.
//! * Orchestration:
//!   - [`pipeline`]: the apply pipeline as one function over `RemoteOps`,
//!     returning a typed [`pipeline::ApplyReport`].
//!   - [`stop`]: cooperative stop requests and the phase an apply is in.

pub mod diff;
pub mod health;
pub mod hostcheck;
pub mod inventory;
pub mod limits;
pub mod local;
pub mod pipeline;
pub mod redact;
pub mod reload;
pub mod remote;
pub mod stop;
pub mod target;
pub mod transport;
pub mod validate;
