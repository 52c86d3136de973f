//! An in-process SSH server (russh + russh-sftp) for tests and `swapcfg demo`.
//!
//! Owns: a loopback server with public-key auth, an SFTP subsystem over the
//! real filesystem, exec handling (scripted restart commands, shell-mode
//! commands, wrapper verbs), and a fault plan that fails, hangs or drops the
//! connection at a chosen operation on its Nth call.
