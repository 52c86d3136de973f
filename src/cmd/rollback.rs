//! `swapcfg rollback TARGET [BACKUP]`: restore the newest (or a named)
//! backup through the same pipeline: validated, the current file backed up
//! first, restart, health.

use std::process::ExitCode;

use super::exit;
use crate::remote::{AnyRemote, RemoteOps, RemoteOptions};
use crate::transport::Session;

pub fn run(args: crate::cli::RollbackArgs) -> ExitCode {
    let (res, path, rt) = match super::setup(&args.target, Some(&args.service)) {
        Ok(x) => x,
        Err(code) => return code,
    };
    rt.block_on(async {
        // Fetch the backup's bytes first (one short session), then run the
        // ordinary apply job with them.
        let session = match Session::connect(&res.connect).await {
            Ok(s) => s,
            Err(e) => return super::fail(exit::CONNECT, e),
        };
        let fetched = async {
            let remote = AnyRemote::open(&session, res.mode, &path, RemoteOptions::default())
                .await
                .map_err(|e| e.to_string())?;
            let chosen = match &args.backup {
                Some(b) => b.clone(),
                None => remote
                    .list_backups()
                    .await
                    .map_err(|e| e.to_string())?
                    .pop()
                    .map(|b| b.path)
                    .ok_or_else(|| format!("no backups of {path} on {}", res.host()))?,
            };
            let file = remote
                .read_backup(&chosen)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((chosen, file.bytes))
        }
        .await;
        session.close().await;
        let (chosen, bytes) = match fetched {
            Ok(x) => x,
            Err(e) => return super::fail(exit::READ, format!("{}: {e}", res.host())),
        };
        let job = super::apply::Job {
            res: &res,
            service: &args.service,
            change: &args.change,
            new: &bytes,
            new_label: chosen,
            dry_run: false,
            force: false,
            expect_sha256: None,
        };
        super::apply::run_job(&job).await
    })
}
