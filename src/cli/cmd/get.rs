//! `swapcfg get`: print the remote config byte-exact to stdout.

use std::io::Write;

use swapcfg::pipeline::Step;
use swapcfg::remote::RemoteOps;

use crate::cli::args::GetArgs;
use crate::cli::exit::Outcome;
use crate::cli::host::Host;
use crate::cli::render::Failure;
use crate::cli::settings::Settings;
use crate::cli::CmdResult;

pub fn run(args: GetArgs) -> CmdResult {
    if args.target.hosts.is_some() {
        return crate::cli::fleet::get(args);
    }
    let settings = Settings::resolve(&args.target, None).map_err(Failure::usage)?;
    let path = settings.config_path().map_err(Failure::usage)?;
    crate::cli::runtime()?.block_on(async {
        let host = Host::connect(&settings, &path).await?;
        let remote = host.remote(&settings, Default::default()).await?;
        let file = remote
            .read()
            .await
            .map_err(|e| Failure::at(Step::Read, e).on(settings.host()))?;
        // Byte-exact when piped; on a terminal, the host's control
        // characters are shown escaped rather than interpreted.
        let mut out = std::io::stdout().lock();
        let shown = if std::io::IsTerminal::is_terminal(&out) {
            crate::cli::render::term(&String::from_utf8_lossy(&file.bytes))
                .into_owned()
                .into_bytes()
        } else {
            file.bytes
        };
        out.write_all(&shown)
            .and_then(|_| out.flush())
            .map_err(|e| Failure::usage(format!("writing to stdout: {e}")))?;
        drop(remote);
        host.close().await;
        Ok(Outcome::Success)
    })
}
