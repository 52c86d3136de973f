//! `swapcfg rollback TARGET [BACKUP]`: restore the newest (or a named)
//! backup through the same pipeline: validated, the current file backed up
//! first, restart, health.

use swapcfg::pipeline::Step;
use swapcfg::remote::RemoteOps;

use crate::cli::args::RollbackArgs;
use crate::cli::host::Host;
use crate::cli::render::{Failure, HintContext};
use crate::cli::settings::{Change, Settings};
use crate::cli::CmdResult;

pub fn run(args: RollbackArgs, ctx: &mut HintContext) -> CmdResult {
    let settings = Settings::resolve(&args.target, Some(&args.service)).map_err(Failure::usage)?;
    let path = settings.config_path().map_err(Failure::usage)?;
    crate::cli::runtime()?.block_on(async {
        // Fetch the backup's bytes first (one short session), then run the
        // ordinary apply job with them.
        let host = Host::connect(&settings, &path).await?;
        let fetched = async {
            let remote = host.remote(&settings, Default::default()).await?;
            let chosen = match &args.backup {
                Some(b) => b.clone(),
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
        let (chosen, bytes) = fetched?;
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
