//! `swapcfg rollback TARGET [BACKUP]`: restore the newest (or a named)
//! backup through the same pipeline: validated, the current file backed up
//! first, restart, health. With `--hosts`: every host its own newest backup
//! (see `cli::fleet::rollback`).

use swapcfg::pipeline::Step;
use swapcfg::remote::RemoteOps;

use crate::cli::args::RollbackArgs;
use crate::cli::host::Host;
use crate::cli::render::{Failure, HintContext};
use crate::cli::settings::{Change, Settings};
use crate::cli::CmdResult;

pub fn run(args: RollbackArgs, ctx: &mut HintContext) -> CmdResult {
    if args.target.hosts.is_some() {
        return crate::cli::fleet::rollback(args);
    }
    let settings = Settings::resolve(&args.target, Some(&args.service)).map_err(Failure::usage)?;
    let path = settings.config_path().map_err(Failure::usage)?;
    crate::cli::runtime()?.block_on(async {
        // Fetch the backup's bytes first (one short session), then run the
        // ordinary apply job with them.
        let (chosen, bytes) = fetch_backup(&settings, &path, args.backup.as_deref()).await?;
        if !args.change.json {
            let why = if args.backup.is_some() {
                "as named"
            } else {
                "the newest swapcfg backup, by the time in its name"
            };
            eprintln!(
                "swapcfg: rollback: restoring {chosen} ({why}); the diff below is current → backup"
            );
        }
        let job = super::apply::Job {
            settings: &settings,
            change: Change::from(&args.change),
            new: &bytes,
            new_label: chosen,
            dry_run: false,
            force: false,
            expect_sha256: None,
        };
        super::apply::run_job(&job, ctx).await
    })
}

/// One short session: the path and bytes of the backup `named` (else the
/// newest backup of `path`). No backup: a failure at `read`.
pub async fn fetch_backup(
    settings: &Settings,
    path: &str,
    named: Option<&str>,
) -> Result<(String, Vec<u8>), Failure> {
    let host = Host::connect(settings, path).await?;
    let fetched = async {
        let remote = host.remote(settings, Default::default()).await?;
        let chosen = match named {
            Some(b) => b.to_string(),
            None => remote
                .list_backups()
                .await
                .map_err(|e| Failure::at(Step::Read, e).on(settings.host()))?
                .pop()
                .map(|b| b.path)
                .ok_or_else(|| {
                    Failure::at(
                        Step::Read,
                        crate::cli::render::CliError::Other(format!(
                            "no backups of {path} on {}",
                            settings.host()
                        )),
                    )
                })?,
        };
        let file = remote
            .read_backup(&chosen)
            .await
            .map_err(|e| Failure::at(Step::Read, e).on(settings.host()))?;
        Ok::<_, Failure>((chosen, file.bytes))
    }
    .await;
    host.close().await;
    fetched
}
