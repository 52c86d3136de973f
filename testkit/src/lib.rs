//! swapcfg's test kit: the hosts the tests, the benchmarks and `swapcfg demo`
//! talk to. Nothing here ships in the release binary (`cargo xtask dist`
//! builds without it).
//!
//! * [`server`]: an in-process russh SSH/SFTP server over the real
//!   filesystem, with scripted exec, shell exec, forced-command wrapper verbs
//!   and a fault plan (fail, deny, hang, drop at an operation's Nth call).
//! * [`standin`]: a stand-in llama-swap HTTP endpoint (`/v1/models`).
//! * [`netns`]: network namespaces in a line joined by veth pairs (a host
//!   reachable only through another one).
//! * [`proxy`]: a delaying, connection-breaking TCP proxy (real networks
//!   and broken links in front of a real sshd).
//! * [`sshd`]: a real OpenSSH `sshd` on loopback with a temp host key, shared
//!   by the end-to-end tests and `cargo xtask bench`.
//!
//! Invariant: this crate does not depend on the `swapcfg` library; whatever
//! it must agree on with the client (backup names, wrapper verbs) it computes
//! itself.

pub mod netns;
pub mod proxy;
pub mod server;
pub mod sshd;
pub mod standin;
