//! `swapcfg health TARGET`: poll llama-swap's /v1/models and report its
//! version (`/api/version`) and running models (`/running`). Plain HTTP:
//! no SSH connection is made, so the report names the URL, not a host.

use swapcfg::health::Client;
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
    let mut hc = settings.health_check(None).ok_or_else(|| {
        Failure::usage("--base-url URL is required (or base_url in the inventory)")
    })?;
    // A look at a running service: a short deadline unless one was asked.
    if args.service.health_timeout_total.is_none() {
        hc.total_timeout = hc.attempt_timeout;
    }
    let url = format!("{}{}", hc.base_url, hc.path);
    let rt = crate::cli::runtime()?;
    let result = rt.block_on(async {
        let r = swapcfg::health::check(&hc, &mut |_| {}).await?;
        let client = Client::new(&hc)?;
        let (version, running) = tokio::join!(client.version(), client.running());
        Ok::<_, swapcfg::health::HealthError>((r, version, running))
    });
    match result {
        Ok((r, version, running)) => {
            // Version and running models are extras: what failed is said,
            // but the check itself passed.
            let version = match version {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(seen)) => Err(seen.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let running = match running {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(seen)) => Err(seen.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "ok": true,
                        "url": url,
                        "attempts": r.attempts_used,
                        "models": r.listed_models,
                        "version": version.as_ref().ok(),
                        "version_error": version.as_ref().err(),
                        "running": running.as_ref().ok(),
                        "running_error": running.as_ref().err(),
                        "elapsed_ms": r.elapsed.as_millis() as u64,
                    })
                );
            } else {
                println!(
                    "healthy: {} lists {} model(s): {}",
                    render::term(&hc.base_url),
                    r.listed_models.len(),
                    render::term(&r.listed_models.join(", "))
                );
                match &version {
                    Ok(v) => println!("version: {}", render::term(v)),
                    Err(e) => println!("version: unknown ({})", render::term(e)),
                }
                match &running {
                    Ok(v) if v.is_empty() => println!("running: none"),
                    Ok(v) => println!("running: {}", render::term(&v.join(", "))),
                    Err(e) => println!("running: unknown ({})", render::term(e)),
                }
            }
            Ok(Outcome::Success)
        }
        Err(e) if args.json => {
            let e = render::CliError::from(e);
            let message = render::with_hint(e.to_string(), render::hint(&e, ctx));
            println!(
                "{}",
                serde_json::json!({"ok": false, "url": url, "error": message})
            );
            Ok(Outcome::At(Step::Health))
        }
        Err(e) => Err(Failure::at(Step::Health, e)),
    }
}
