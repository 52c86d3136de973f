//! `swapcfg backups TARGET`: list the config's backups (time, size).

use swapcfg::pipeline::Step;
use swapcfg::remote::RemoteOps;

use crate::cli::args::BackupsArgs;
use crate::cli::exit::Outcome;
use crate::cli::host::Host;
use crate::cli::render::{term, Failure};
use crate::cli::settings::Settings;
use crate::cli::CmdResult;

pub fn run(args: BackupsArgs) -> CmdResult {
    if args.target.hosts.is_some() {
        return crate::cli::fleet::backups(args);
    }
    let settings = Settings::resolve(&args.target, None).map_err(Failure::usage)?;
    let path = settings.config_path().map_err(Failure::usage)?;
    crate::cli::runtime()?.block_on(async {
        let host = Host::connect(&settings, &path).await?;
        let remote = host.remote(&settings, Default::default()).await?;
        let list = remote
            .list_backups()
            .await
            .map_err(|e| Failure::at(Step::Read, e).on(settings.host()))?;
        if args.json {
            let items: Vec<_> = list
                .iter()
                .map(|b| serde_json::json!({"path": b.path, "size": b.size, "mtime": b.mtime}))
                .collect();
            println!("{}", serde_json::Value::Array(items));
        } else if list.is_empty() {
            println!("no backups of {} on {}", term(&path), settings.host());
        } else {
            for b in &list {
                let stamp = b.path.rsplit(".bak-").next().unwrap_or("");
                println!(
                    "{:<20} {:>10} bytes  {}",
                    term(stamp),
                    b.size,
                    term(&b.path)
                );
            }
        }
        drop(remote);
        host.close().await;
        Ok(Outcome::Success)
    })
}
