//! `swapcfg health TARGET`: poll llama-swap's /v1/models (no SSH needed).

use swapcfg::pipeline::Step;

use crate::cli::args::HealthArgs;
use crate::cli::exit::Outcome;
use crate::cli::render::{self, Failure, HintContext};
use crate::cli::settings::Settings;
use crate::cli::CmdResult;

pub fn run(args: HealthArgs, ctx: &mut HintContext) -> CmdResult {
    if args.target.hosts.is_some() {
        return crate::cli::fleet::health(args);
    }
    let settings = Settings::resolve(&args.target, Some(&args.service)).map_err(Failure::usage)?;
    ctx.api_key_env = settings.health.api_key.as_ref().map(|k| k.env.clone());
    let hc = settings.health_check(None).ok_or_else(|| {
        Failure::usage("--base-url URL is required (or base_url in the inventory)")
    })?;
    let result = crate::cli::runtime()?.block_on(swapcfg::health::check(&hc, &mut |_| {}));
    match result {
        Ok(r) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "host": settings.host(), "attempts": r.attempts_used, "models": r.listed_models, "elapsed_ms": r.elapsed.as_millis() as u64})
                );
            } else {
                println!(
                    "healthy: {} lists {} model(s): {}",
                    hc.base_url,
                    r.listed_models.len(),
                    render::term(&r.listed_models.join(", "))
                );
            }
            Ok(Outcome::Success)
        }
        Err(e) if args.json => {
            let e = render::CliError::from(e);
            let message = render::with_hint(e.to_string(), render::hint(&e, ctx));
            println!(
                "{}",
                serde_json::json!({"ok": false, "host": settings.host(), "error": message})
            );
            Ok(Outcome::At(Step::Health))
        }
        Err(e) => Err(Failure::at(Step::Health, e)),
    }
}
