//! `swapcfg validate FILE... [--schema S] [--json]`: success when every
//! file is valid, `Invalid` when any is, usage on I/O errors.

use swapcfg::validate::{Finding, Severity, Validator};

use crate::cli::args::ValidateArgs;
use crate::cli::exit::Outcome;
use crate::cli::render::{self, Failure};
use crate::cli::style::Style;
use crate::cli::CmdResult;

pub fn run(args: ValidateArgs) -> CmdResult {
    let validator = match &args.schema {
        Some(path) => Validator::from_schema_file(path)
            .map_err(|e| Failure::usage(format!("--schema {e}")))?,
        None => Validator::embedded(),
    };
    let mut all: Vec<Finding> = Vec::new();
    let mut io_error = false;
    let (mut invalid, mut valid) = (0usize, 0usize);
    for file in &args.files {
        let name = file.display().to_string();
        let bytes = match super::read_local(file) {
            Ok(b) => b,
            Err(f) => {
                render::print_failure(&f, &Default::default());
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
        let s = serde_json::to_string_pretty(&all).map_err(|e| Failure::usage(e.to_string()))?;
        println!("{s}");
    } else {
        let style = Style::for_stdout();
        for f in &all {
            println!(
                "{}",
                render::finding(f, f.file.as_deref().unwrap_or("-"), style)
            );
        }
        let warnings = all
            .iter()
            .filter(|f| f.severity == Severity::Warning)
            .count();
        println!("{valid} valid, {invalid} invalid, {warnings} warning(s)");
    }
    Ok(if io_error {
        Outcome::Usage
    } else if invalid > 0 {
        Outcome::Invalid
    } else {
        Outcome::Success
    })
}
