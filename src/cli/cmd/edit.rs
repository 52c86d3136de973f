//! `swapcfg edit TARGET`: fetch the config into a temp file, open
//! `$VISUAL`/`$EDITOR` (default `vi`), validate on save and reopen with the
//! errors as `#` comments on top (like `kubectl edit`); an unchanged or
//! emptied file aborts; then the apply pipeline with its confirmation.
//! Spawning the user's editor is the one local process swapcfg starts.

use swapcfg::pipeline::Step;
use swapcfg::remote::RemoteOps;
use swapcfg::validate::Severity;

use crate::cli::args::EditArgs;
use crate::cli::exit::Outcome;
use crate::cli::host::Host;
use crate::cli::render::{Failure, HintContext};
use crate::cli::settings::{Change, Settings};
use crate::cli::CmdResult;

const MARK: &str = "# swapcfg: ";

/// Drop the error header swapcfg added on a previous round.
fn strip_header(text: &str) -> String {
    text.lines()
        .skip_while(|l| l.starts_with(MARK))
        .collect::<Vec<_>>()
        .join("\n")
        + if text.ends_with('\n') { "\n" } else { "" }
}

fn editor() -> String {
    std::env::var("VISUAL")
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| std::env::var("EDITOR").ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| "vi".into())
}

fn aborted(message: impl Into<String>) -> Failure {
    Failure::other(Outcome::At(Step::Aborted), message)
}

pub fn run(args: EditArgs, ctx: &mut HintContext) -> CmdResult {
    if args.target.hosts.is_some() {
        // One editor session is one person reading one host's file: N hosts
        // would mean N editors in a row (or one text pretending to be N).
        return Err(Failure::usage(
            "edit opens one editor on one host's config, so it takes one TARGET, not --hosts; \
             for many hosts: `swapcfg get --hosts SELECTOR --out DIR`, edit the files, then \
             `swapcfg plan`/`apply --hosts SELECTOR` with `file: DIR/{host}.yaml` in the inventory",
        ));
    }
    let settings = Settings::resolve(&args.target, Some(&args.service)).map_err(Failure::usage)?;
    let path = settings.config_path().map_err(Failure::usage)?;
    let rt = crate::cli::runtime()?;
    let original = rt.block_on(async {
        let host = Host::connect(&settings, &path).await?;
        let remote = host.remote(&settings, Default::default()).await?;
        let f = remote
            .read()
            .await
            .map_err(|e| Failure::at(Step::Read, e).on(settings.host()))?;
        drop(remote);
        host.close().await;
        Ok::<_, Failure>(f.bytes)
    })?;
    let dir = tempfile::tempdir().map_err(|e| Failure::usage(format!("temp dir: {e}")))?;
    let file = dir
        .path()
        .join(path.rsplit('/').next().unwrap_or("config.yaml"));
    let io = |e: std::io::Error| Failure::usage(format!("{}: {e}", file.display()));
    std::fs::write(&file, &original).map_err(io)?;
    let validator = settings.validator().map_err(Failure::usage)?;
    let edited = loop {
        let ed = editor();
        let status = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("{ed} \"$1\""))
            .arg("sh")
            .arg(&file)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => {
                return Err(aborted(format!(
                    "editor `{ed}` exited with {s}; nothing was changed"
                )))
            }
            Err(e) => return Err(aborted(format!("cannot start editor `{ed}`: {e}"))),
        }
        let text = strip_header(&std::fs::read_to_string(&file).map_err(io)?);
        if text.trim().is_empty() {
            return Err(aborted(
                "the file is empty: edit aborted, nothing was changed",
            ));
        }
        if text.as_bytes() == original.as_slice() {
            eprintln!("swapcfg: no changes made; nothing to do");
            return Ok(Outcome::Success);
        }
        let outcome = validator.validate(text.as_bytes());
        if outcome.is_valid() {
            break text;
        }
        let mut header =
            format!("{MARK}the config has errors; fix them and save (empty the file to abort):\n");
        for f in outcome
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
        {
            // Lines shift by the header; report positions in the body.
            header.push_str(&format!(
                "{MARK}line {}:{}: {}: {}\n",
                f.line,
                f.column,
                f.path,
                f.message.replace('\n', " ")
            ));
        }
        std::fs::write(&file, format!("{header}{text}")).map_err(io)?;
    };
    let job = super::apply::Job {
        settings: &settings,
        change: Change::from(&args.change),
        new: edited.as_bytes(),
        new_label: format!("{} (edited)", path),
        dry_run: false,
        force: false,
        expect_sha256: Some(swapcfg::pipeline::sha256_hex(&original)),
    };
    rt.block_on(super::apply::run_job(&job, ctx))
}
