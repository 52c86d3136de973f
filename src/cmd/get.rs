//! `swapcfg get`: print the remote config byte-exact to stdout.

use std::io::Write;
use std::process::ExitCode;

use super::{exit, fail};
use crate::remote::{AnyRemote, RemoteOps, RemoteOptions};
use crate::transport::Session;

pub fn run(args: crate::cli::GetArgs) -> ExitCode {
    let t = &args.target;
    let opts = match super::connect_options(t) {
        Ok(o) => o,
        Err(e) => return fail(exit::USAGE, e),
    };
    let Some(path) = t.config_path.clone() else {
        return fail(
            exit::USAGE,
            "--config-path PATH is required (the config file's path on the host)",
        );
    };
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(exit::USAGE, e),
    };
    let mode = t.mode.unwrap_or_default();
    rt.block_on(async {
        let session = match Session::connect(&opts).await {
            Ok(s) => s,
            Err(e) => return fail(exit::CONNECT, e),
        };
        let host = session.label();
        let remote = match AnyRemote::open(&session, mode, &path, RemoteOptions::default()).await {
            Ok(r) => r,
            Err(e) => return fail(exit::READ, format!("{host}: {e}")),
        };
        let file = match remote.read().await {
            Ok(f) => f,
            Err(e) => return fail(exit::READ, format!("{host}: {e}")),
        };
        let mut out = std::io::stdout().lock();
        if let Err(e) = out.write_all(&file.bytes).and_then(|_| out.flush()) {
            return fail(exit::USAGE, format!("writing to stdout: {e}"));
        }
        drop(remote);
        session.close().await;
        ExitCode::SUCCESS
    })
}
