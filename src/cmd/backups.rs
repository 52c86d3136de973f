//! `swapcfg backups TARGET`: list the config's backups (time, size).

use std::process::ExitCode;

use super::exit;
use crate::remote::{AnyRemote, RemoteOps, RemoteOptions};
use crate::transport::Session;

pub fn run(args: crate::cli::BackupsArgs) -> ExitCode {
    let (res, path, rt) = match super::setup(&args.target, None) {
        Ok(x) => x,
        Err(code) => return code,
    };
    rt.block_on(async {
        let session = match Session::connect(&res.connect).await {
            Ok(s) => s,
            Err(e) => return super::fail(exit::CONNECT, e),
        };
        let remote =
            match AnyRemote::open(&session, res.mode, &path, RemoteOptions::default()).await {
                Ok(r) => r,
                Err(e) => return super::fail(exit::READ, format!("{}: {e}", res.host())),
            };
        let list = match remote.list_backups().await {
            Ok(l) => l,
            Err(e) => return super::fail(exit::READ, format!("{}: {e}", res.host())),
        };
        if args.json {
            let items: Vec<_> = list
                .iter()
                .map(|b| serde_json::json!({"path": b.path, "size": b.size, "mtime": b.mtime}))
                .collect();
            println!("{}", serde_json::Value::Array(items));
        } else if list.is_empty() {
            println!("no backups of {path} on {}", res.host());
        } else {
            for b in &list {
                let stamp = b.path.rsplit(".bak-").next().unwrap_or("");
                println!("{stamp:<20} {:>10} bytes  {}", b.size, b.path);
            }
        }
        drop(remote);
        session.close().await;
        ExitCode::SUCCESS
    })
}
