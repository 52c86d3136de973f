//! `swapcfg get`: print the remote config byte-exact to stdout.

use std::io::Write;
use std::process::ExitCode;

use super::{exit, fail};
use crate::remote::{AnyRemote, RemoteOps, RemoteOptions};
use crate::transport::Session;

pub fn run(args: crate::cli::GetArgs) -> ExitCode {
    let (res, path, rt) = match super::setup(&args.target, None) {
        Ok(x) => x,
        Err(code) => return code,
    };
    rt.block_on(async {
        let session = match Session::connect(&res.connect).await {
            Ok(s) => s,
            Err(e) => return fail(exit::CONNECT, e),
        };
        let host = session.label();
        let remote =
            match AnyRemote::open(&session, res.mode, &path, RemoteOptions::default()).await {
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
