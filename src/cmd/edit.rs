//! `swapcfg edit TARGET`: fetch the config into a temp file, open
//! `$VISUAL`/`$EDITOR` (default `vi`), validate on save and reopen with the
//! errors as `#` comments on top (like `kubectl edit`); an unchanged or
//! emptied file aborts; then the apply pipeline with its confirmation.
//! Spawning the user's editor is the one local process swapcfg starts.

use std::process::ExitCode;

use super::exit;
use crate::remote::{AnyRemote, RemoteOps, RemoteOptions};
use crate::transport::Session;
use crate::validate::Severity;

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

pub fn run(args: crate::cli::EditArgs) -> ExitCode {
    let (res, path, rt) = match super::setup(&args.target, Some(&args.service)) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let original = match rt.block_on(async {
        let session = Session::connect(&res.connect)
            .await
            .map_err(|e| (exit::CONNECT, e.to_string()))?;
        let remote = AnyRemote::open(&session, res.mode, &path, RemoteOptions::default())
            .await
            .map_err(|e| (exit::READ, e.to_string()))?;
        let f = remote
            .read()
            .await
            .map_err(|e| (exit::READ, e.to_string()))?;
        drop(remote);
        session.close().await;
        Ok::<_, (u8, String)>(f.bytes)
    }) {
        Ok(b) => b,
        Err((code, e)) => return super::fail(code, format!("{}: {e}", res.host())),
    };
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return super::fail(exit::USAGE, format!("temp dir: {e}")),
    };
    let file = dir
        .path()
        .join(path.rsplit('/').next().unwrap_or("config.yaml"));
    if let Err(e) = std::fs::write(&file, &original) {
        return super::fail(exit::USAGE, format!("{}: {e}", file.display()));
    }
    let validator = match super::validator(&res) {
        Ok(v) => v,
        Err(e) => return super::fail(exit::USAGE, e),
    };
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
                return super::fail(
                    exit::ABORTED,
                    format!("editor `{ed}` exited with {s}; nothing was changed"),
                )
            }
            Err(e) => {
                return super::fail(exit::ABORTED, format!("cannot start editor `{ed}`: {e}"))
            }
        }
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => strip_header(&t),
            Err(e) => return super::fail(exit::USAGE, format!("{}: {e}", file.display())),
        };
        if text.trim().is_empty() {
            return super::fail(
                exit::ABORTED,
                "the file is empty: edit aborted, nothing was changed",
            );
        }
        if text.as_bytes() == original.as_slice() {
            eprintln!("swapcfg: no changes made; nothing to do");
            return ExitCode::SUCCESS;
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
        if let Err(e) = std::fs::write(&file, format!("{header}{text}")) {
            return super::fail(exit::USAGE, format!("{}: {e}", file.display()));
        }
    };
    let job = super::apply::Job {
        res: &res,
        service: &args.service,
        change: &args.change,
        new: edited.as_bytes(),
        new_label: format!("{} (edited)", path),
        dry_run: false,
        force: false,
        expect_sha256: Some(crate::pipeline::sha256_hex(&original)),
    };
    rt.block_on(super::apply::run_job(&job))
}
