//! `swapcfg demo`: an embedded sandbox host. Starts the in-process SSH/SFTP
//! server and a stand-in llama-swap endpoint on loopback, then runs the
//! real pipeline (same transport, remote ops and reports as a real host):
//! a valid change, an invalid change refused, a failed restart rolled back.

use crate::cli::render::Failure;
use crate::cli::CmdResult;

#[cfg(not(feature = "demo"))]
pub fn run() -> CmdResult {
    Err(Failure::usage(
        "this build has no demo sandbox (built without the `demo` feature); run `cargo run --release -- demo` from a clone",
    ))
}

#[cfg(feature = "demo")]
pub fn run() -> CmdResult {
    let rt = crate::cli::runtime()?;
    rt.block_on(sandbox::demo())
        .map_err(|e| Failure::usage(format!("demo: {e}")))?
}

#[cfg(feature = "demo")]
mod sandbox {
    use std::time::Duration;

    use russh::keys::ssh_key::LineEnding;
    use russh::keys::{Algorithm, PrivateKey};
    use swapcfg::remote::Mode;
    use swapcfg::target::Target;
    use swapcfg::transport::{ConnectOptions, HostKeyPolicy};
    use swapcfg_testkit::server::TestServerBuilder;
    use swapcfg_testkit::standin::{Standin, StandinBuilder};

    use super::CmdResult;
    use crate::cli::exit;
    use crate::cli::exit::Outcome;
    use crate::cli::render::{Failure, HintContext};
    use crate::cli::settings::{Change, Health, Restart, Settings};
    use crate::cli::style::Style;

    const V1: &str = "# llama-swap on the demo host\nmodels:\n  qwen-7b:\n    cmd: llama-server --port ${PORT} -m models/qwen2.5-7b.gguf\n    ttl: 300\n";
    const V2: &str = "# llama-swap on the demo host\nmodels:\n  qwen-7b:\n    cmd: llama-server --port ${PORT} -m models/qwen2.5-7b.gguf\n    ttl: 300\n  llama-3b:\n    cmd: llama-server --port ${PORT} -m models/llama-3.2-3b.gguf\n    aliases: [small]\n";
    const INVALID: &str = "models:\n  qwen-7b:\n    cmd: llama-server -m models/qwen2.5-7b.gguf\n    proxy: http://127.0.0.1:${PORT}\n    ttl: -5\n";
    /// Loads for swapcfg (it cannot see the host's environment); the server
    /// refuses it: HF_TOKEN is not set in llama-swap's environment.
    const NEEDS_ENV: &str = "# llama-swap on the demo host\nmodels:\n  qwen-7b:\n    cmd: llama-server --port ${PORT} -m models/qwen2.5-7b.gguf\n    ttl: 300\n  llama-3b:\n    cmd: llama-server --port ${PORT} -m models/llama-3.2-3b.gguf --hf-token ${env.HF_TOKEN}\n    aliases: [small]\n";
    const BROKEN: &str = "models:\n  qwen-7b:\n    cmd: llama-server --port ${PORT} -m models/qwen2.5-7b.gguf\n  broken-model:\n    cmd: /opt/missing/llama-server --port ${PORT}\n";

    fn section(title: &str) {
        let s = Style::for_stdout();
        println!("\n{}", s.bold(&format!("== {title}")));
    }

    pub async fn demo() -> Result<CmdResult, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let d = dir.path();
        let config = d.join("config.yaml");
        std::fs::write(&config, V1).map_err(|e| e.to_string())?;
        let key =
            PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).map_err(|e| e.to_string())?;
        let key_path = d.join("id_demo");
        let pem = key.to_openssh(LineEnding::LF).map_err(|e| e.to_string())?;
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&key_path)
                .map_err(|e| e.to_string())?;
            f.write_all(pem.as_bytes()).map_err(|e| e.to_string())?;
        }
        let server = TestServerBuilder::new()
            .authorized_key(key.public_key().clone())
            .start()
            .await
            .map_err(|e| format!("starting the sandbox SSH server: {e}"))?;
        let known_hosts = d.join("known_hosts");
        std::fs::write(&known_hosts, format!("{}\n", server.known_hosts_line()))
            .map_err(|e| e.to_string())?;
        let standin = Standin::start(vec!["qwen-7b".into()], None)
            .await
            .map_err(|e| e.to_string())?;
        // The sandbox "restart": fails like llama-swap would when a model's
        // binary is missing (runs on the sandbox host, not by the client).
        let restart = format!(
        "if grep -q /opt/missing '{}'; then echo 'llama-swap.service: model broken-model: exec /opt/missing/llama-server: no such file' >&2; exit 1; fi",
        config.display()
    );
        let config_path = config.to_str().ok_or("temp path is not UTF-8")?.to_string();
        let settings = Settings {
            connect: ConnectOptions {
                target: Target {
                    user: "demo".into(),
                    host: "127.0.0.1".into(),
                    port: server.port(),
                },
                identity: Some(key_path),
                known_hosts,
                host_key_policy: HostKeyPolicy::Strict,
                connect_timeout: Duration::from_secs(10),
                op_timeout: Duration::from_secs(10),
                keepalive: swapcfg::limits::KEEPALIVE,
            },
            jumps: Vec::new(),
            mode: Mode::Sftp,
            config_path: Some(config_path.clone()),
            restart: Restart::Command(restart),
            restart_timeout: Duration::from_secs(30),
            health: Health {
                base_url: Some(standin.base_url()),
                path: "/v1/models".into(),
                attempts: None,
                delay: Duration::from_millis(200),
                attempt_timeout: Duration::from_secs(2),
                total_timeout: Duration::from_secs(5),
                verify_models: true,
                reload: swapcfg::reload::ReloadMode::Restart,
                reload_timeout: Duration::from_secs(5),
                require_healthy: false,
                api_key: None,
                ca_pem: None,
                ca_cert: None,
            },
            schema: None,
            unverified_wrapper_write: false,
            strict_host: false,
        };
        let change = Change {
            yes: true,
            ..Change::default()
        };
        println!(
            "sandbox host: {} (in-process SSH/SFTP server), llama-swap stand-in at {}",
            settings.host(),
            standin.base_url()
        );
        println!("remote config: {config_path}");

        let run = |new: &'static str, label: &str| super::super::apply::Job {
            settings: &settings,
            change,
            new: new.as_bytes(),
            new_label: label.to_string(),
            dry_run: false,
            force: false,
            expect_sha256: None,
        };

        section("1. A valid change: add the model llama-3b");
        standin.set_models(vec!["qwen-7b".into(), "llama-3b".into(), "small".into()]);
        let c1 = code(
            super::super::apply::run_job(&run(V2, "new-config.yaml"), &mut HintContext::default())
                .await,
        );

        section("2. An invalid change is refused before connecting");
        let c2 = code(
            super::super::apply::run_job(
                &run(INVALID, "bad-config.yaml"),
                &mut HintContext::default(),
            )
            .await,
        );

        section("3. A change whose restart fails is rolled back");
        let c3 = code(
            super::super::apply::run_job(
                &run(BROKEN, "broken-config.yaml"),
                &mut HintContext::default(),
            )
            .await,
        );

        section(
            "4. llama-swap with -watch-config refuses a change: read from its log, rolled back",
        );
        // A stand-in that follows the sandbox's config file as llama-swap's
        // watcher does, judging it like the server: swapcfg's rules, plus
        // the host's environment (HF_TOKEN is not set there).
        let validator = swapcfg::validate::Validator::embedded();
        let judge: swapcfg_testkit::standin::Judge = std::sync::Arc::new(move |bytes: &[u8]| {
            if String::from_utf8_lossy(bytes).contains("${env.HF_TOKEN}") {
                return Err("environment variable 'HF_TOKEN' is not set".into());
            }
            let o = validator.validate(bytes);
            if o.is_valid() {
                Ok(o.listed_models)
            } else {
                Err("invalid config".into())
            }
        });
        let watching = StandinBuilder::new(Vec::new())
            .config(&config, judge)
            .watch(Duration::from_millis(200))
            .start()
            .await
            .map_err(|e| e.to_string())?;
        let mut watch_settings = settings.clone();
        watch_settings.restart = Restart::Skip;
        watch_settings.health.base_url = Some(watching.base_url());
        watch_settings.health.reload = swapcfg::reload::ReloadMode::Watch;
        let c4 = code(
            super::super::apply::run_job(
                &super::super::apply::Job {
                    settings: &watch_settings,
                    change,
                    new: NEEDS_ENV.as_bytes(),
                    new_label: "needs-env.yaml".into(),
                    dry_run: false,
                    force: false,
                    expect_sha256: None,
                },
                &mut HintContext::default(),
            )
            .await,
        );
        println!(
            "llama-swap's log:\n{}",
            watching
                .log_text()
                .lines()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        drop(watching);

        section("Result on the host");
        let now = std::fs::read_to_string(&config).map_err(|e| e.to_string())?;
        println!(
            "config is {} (the change from step 1)",
            if now == V2 {
                "intact"
            } else {
                "NOT as expected"
            }
        );
        let mut backups: Vec<String> = std::fs::read_dir(d)
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("config.yaml.bak-"))
            .collect();
        backups.sort();
        println!("backups: {}", backups.join(", "));
        println!(
        "exit statuses: {c1} {c2} {c3} {c4} (0 = done, 1 = invalid, 8 = restart failed and rolled back, 9 = refused by llama-swap and rolled back)"
    );
        drop(standin);
        server.shutdown().await;
        Ok(if now == V2 {
            Ok(Outcome::Success)
        } else {
            Err(Failure::other(
                Outcome::At(swapcfg::pipeline::Step::Rollback),
                "the sandbox host did not end with the config of step 1",
            ))
        })
    }

    /// The exit status a step's job would give (printed by the demo).
    fn code(r: CmdResult) -> u8 {
        match r {
            Ok(o) => exit::code(&o),
            Err(f) => {
                crate::cli::render::print_failure(&f, &HintContext::default());
                exit::code(&f.outcome)
            }
        }
    }
}
