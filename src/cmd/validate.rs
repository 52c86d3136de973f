//! `swapcfg validate FILE... [--schema S] [--json]`.
//!
//! Exit 0 when every file is valid, 1 when any is invalid, 2 on usage or
//! I/O errors.

use std::process::ExitCode;

use crate::report::Style;
use crate::validate::{Finding, Severity, Validator};

pub fn run(args: crate::cli::ValidateArgs) -> ExitCode {
    let validator = match &args.schema {
        Some(path) => match Validator::from_schema_file(path) {
            Ok(v) => v,
            Err(e) => return super::fail(super::exit::USAGE, format!("--schema {e}")),
        },
        None => Validator::embedded(),
    };
    let mut all: Vec<Finding> = Vec::new();
    let mut io_error = false;
    let (mut invalid, mut valid) = (0usize, 0usize);
    for file in &args.files {
        let name = file.display().to_string();
        let bytes = match read_bounded(file) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("swapcfg: error: {name}: {e}");
                io_error = true;
                continue;
            }
        };
        let outcome = validator.validate(&bytes);
        if outcome.is_valid() {
            valid += 1;
        } else {
            invalid += 1;
        }
        all.extend(outcome.findings.into_iter().map(|mut f| {
            f.file = Some(name.clone());
            f
        }));
    }
    if args.json {
        match serde_json::to_string_pretty(&all) {
            Ok(s) => println!("{s}"),
            Err(e) => return super::fail(super::exit::USAGE, e),
        }
    } else {
        let style = Style::for_stdout();
        for f in &all {
            let sev = match f.severity {
                Severity::Error => style.err("error"),
                Severity::Warning => style.warn("warning"),
            };
            println!(
                "{}:{}:{}: {sev}: {}: {} [{}]",
                f.file.as_deref().unwrap_or("-"),
                f.line,
                f.column,
                f.path,
                f.message,
                f.rule
            );
        }
        let warnings = all
            .iter()
            .filter(|f| f.severity == Severity::Warning)
            .count();
        println!("{valid} valid, {invalid} invalid, {warnings} warning(s)");
    }
    if io_error {
        ExitCode::from(super::exit::USAGE)
    } else if invalid > 0 {
        ExitCode::from(super::exit::INVALID)
    } else {
        ExitCode::SUCCESS
    }
}

/// Read a local config with the size bound.
pub fn read_bounded(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.is_dir() {
        return Err("is a directory".into());
    }
    if meta.len() > crate::validate::MAX_FILE as u64 {
        return Err(format!(
            "{} bytes, over the {}-byte limit",
            meta.len(),
            crate::validate::MAX_FILE
        ));
    }
    std::fs::read(path).map_err(|e| e.to_string())
}
