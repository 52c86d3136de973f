//! `swapcfg health TARGET`: poll llama-swap's /v1/models (no SSH needed).

use std::process::ExitCode;

use super::exit;

pub fn run(args: crate::cli::HealthArgs) -> ExitCode {
    let res = match super::resolve(&args.target, Some(&args.service)) {
        Ok(r) => r,
        Err(e) => return super::fail(exit::USAGE, e),
    };
    let hc = match super::health_check(&res, &args.service, None) {
        Ok(Some(h)) => h,
        Ok(None) => {
            return super::fail(
                exit::USAGE,
                "--base-url URL is required (or base_url in the inventory)",
            )
        }
        Err(e) => return super::fail(exit::USAGE, e),
    };
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => return super::fail(exit::USAGE, e),
    };
    match rt.block_on(crate::health::check(&hc, &mut |_| {})) {
        Ok(r) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "host": res.host(), "attempts": r.attempts_used, "models": r.listed_models, "elapsed_ms": r.elapsed.as_millis() as u64})
                );
            } else {
                println!(
                    "healthy: {} lists {} model(s): {}",
                    hc.base_url,
                    r.listed_models.len(),
                    r.listed_models.join(", ")
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "host": res.host(), "error": e.to_string()})
                );
                ExitCode::from(exit::HEALTH)
            } else {
                super::fail(exit::HEALTH, e)
            }
        }
    }
}
