//! Benchmark: validation time and memory against the number of models.
//! Run with `cargo bench --bench validate` (`-- --max N` stops at N models).
//!
//! First the original benchmark: the generated 1,000-model config is valid
//! (asserted) and its median time is printed (target: under 10 ms). Then a
//! curve for 1k to 100k models: median wall time, time per model, median
//! CPU time (wall time also counts waits for a core on a busy machine) and
//! peak RSS. Each point runs in a child process (this binary re-executed
//! with `--size N [--full]`), so the peak RSS (`VmHWM`) is that size's own,
//! generated text included: `peak MiB` after the first validation (what
//! one `swapcfg validate` costs), `after` once all the timed runs are done
//! (repeated validations fragment the heap). Every generated config must be
//! valid and list all its models, or the bench fails.
//!
//! Two shapes of model entry:
//! * compact (~120 bytes, 8 YAML nodes): a block `cmd` with a comment line,
//!   global macros and `${PORT}`, an alias, membership of one group. 100,000
//!   of them fit under both the 16 MiB file limit and the 1,000,000-node
//!   YAML limit.
//! * full (~170 bytes, ~21 nodes): the original benchmark's config, which
//!   adds a `<<:` merge of shared defaults and a `name`. The node limit stops
//!   it before 50,000 models, so its curve ends at 20,000.
//!
//! Timings are printed, never asserted: the machine is shared.

use std::process::{Command, ExitCode};
use std::time::Instant;

use swapcfg::validate::{Validator, MAX_FILE};

const SIZES: &[usize] = &[1_000, 5_000, 10_000, 20_000, 50_000, 100_000];
/// Largest size of the full shape in the curve (under the node limit).
const FULL_MAX: usize = 20_000;

#[derive(Clone, Copy)]
enum Shape {
    Compact,
    Full,
}

/// A valid config with `models` models of the given shape, all in one group.
fn config(models: usize, shape: Shape) -> String {
    let mut s = String::with_capacity(models * 200 + 512);
    match shape {
        // The original benchmark's config, unchanged.
        Shape::Full => {
            s.push_str("healthCheckTimeout: 120\nstartPort: 10000\nmacros:\n  llama: /opt/llama/llama-server\n  ctx: 8192\n");
            s.push_str("x-defaults: &defaults\n  ttl: 300\n  checkEndpoint: /health\n  env: [\"CUDA_VISIBLE_DEVICES=0\"]\n");
            s.push_str("models:\n");
            for i in 0..models {
                s.push_str(&format!(
                    "  model-{i:04}:\n    <<: *defaults\n    cmd: |\n      # model {i}\n      ${{llama}} --port ${{PORT}} -c ${{ctx}} -m /models/m{i}.gguf\n    aliases: [\"alias-{i}\"]\n    name: \"Model {i}\"\n"
                ));
            }
            s.push_str("groups:\n  all:\n    swap: true\n    members:\n");
            for i in 0..models {
                s.push_str(&format!("      - model-{i:04}\n"));
            }
        }
        Shape::Compact => {
            s.push_str("healthCheckTimeout: 120\nstartPort: 10000\nmacros:\n  l: /opt/llama/llama-server\n  c: 8192\n");
            s.push_str("models:\n");
            for i in 0..models {
                s.push_str(&format!(
                    "  m{i:05}:\n    cmd: |\n      # {i}\n      ${{l}} --port ${{PORT}} -c ${{c}} -m /m/{i}.gguf\n    aliases: [a{i}]\n"
                ));
            }
            s.push_str("groups:\n  all:\n    swap: true\n    members:\n");
            for i in 0..models {
                s.push_str(&format!("      - m{i:05}\n"));
            }
        }
    }
    s
}

/// Peak resident set size of this process, in KiB (`VmHWM`).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU time of this process, in ms (on a shared machine, wall time also
/// counts the waits for a core).
fn cpu_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return f64::NAN;
    }
    ts.tv_sec as f64 * 1000.0 + ts.tv_nsec as f64 / 1e6
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(|a, b| a.total_cmp(b));
    times.get(times.len() / 2).copied().unwrap_or(f64::NAN)
}

/// What [`time_size`] measured.
struct Sample {
    bytes: usize,
    /// (wall ms, CPU ms) per run.
    times: Vec<(f64, f64)>,
    /// `VmHWM` after the first validation, KiB.
    first_peak: Option<u64>,
}

/// Validate `models` models once (the config must be valid), then `runs`
/// more times, timed.
fn time_size(v: &Validator, models: usize, shape: Shape, runs: usize) -> Result<Sample, String> {
    let src = config(models, shape);
    if src.len() > MAX_FILE {
        return Err(format!(
            "{models} models: {} bytes, over the {MAX_FILE}-byte limit",
            src.len()
        ));
    }
    let out = v.validate(src.as_bytes());
    if !out.is_valid() || out.listed_models.len() != models {
        return Err(format!(
            "{models} models: generated config must be valid and list every model: {:?}",
            &out.findings[..out.findings.len().min(3)]
        ));
    }
    drop(out);
    let first_peak = peak_rss_kib();
    let times = (0..runs)
        .map(|_| {
            let (t, cpu) = (Instant::now(), cpu_ms());
            std::hint::black_box(v.validate(std::hint::black_box(src.as_bytes())));
            (t.elapsed().as_secs_f64() * 1000.0, cpu_ms() - cpu)
        })
        .collect();
    Ok(Sample {
        bytes: src.len(),
        times,
        first_peak,
    })
}

/// Child mode: time one size and print
/// `N BYTES MEDIAN_WALL_MS FIRST_PEAK_KIB RUNS MEDIAN_CPU_MS PEAK_KIB`.
fn child(models: usize, shape: Shape) -> Result<(), String> {
    let v = Validator::embedded();
    let runs = (700_000 / models).clamp(7, 31);
    let sample = time_size(&v, models, shape, runs)?;
    let no_peak = "cannot read VmHWM from /proc/self/status";
    let first = sample.first_peak.ok_or(no_peak)?;
    let peak = peak_rss_kib().ok_or(no_peak)?;
    let wall = median(sample.times.iter().map(|t| t.0).collect());
    let cpu = median(sample.times.iter().map(|t| t.1).collect());
    println!(
        "{models} {} {wall:.3} {first} {runs} {cpu:.3} {peak}",
        sample.bytes
    );
    Ok(())
}

/// Print one curve, each point measured by a child process.
fn table(exe: &std::path::Path, shape: Shape, max: usize) -> Result<(), String> {
    println!(
        "{:>8} {:>9} {:>5} {:>10} {:>9} {:>8} {:>9} {:>9}",
        "models", "KiB", "runs", "median ms", "µs/model", "cpu ms", "peak MiB", "after"
    );
    for &n in SIZES.iter().filter(|&&n| n <= max) {
        let mut cmd = Command::new(exe);
        cmd.args(["--size", &n.to_string()]);
        if let Shape::Full = shape {
            cmd.arg("--full");
        }
        let out = cmd
            .output()
            .map_err(|e| format!("{}: {e}", exe.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{n} models: child failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let line = String::from_utf8_lossy(&out.stdout);
        let f: Vec<&str> = line.split_whitespace().collect();
        let field = |i: usize| -> Result<f64, String> {
            f.get(i)
                .and_then(|x| x.parse::<f64>().ok())
                .ok_or_else(|| format!("{n} models: bad child output {line:?}"))
        };
        let (bytes, ms, first, runs, cpu, peak) = (
            field(1)?,
            field(2)?,
            field(3)?,
            field(4)?,
            field(5)?,
            field(6)?,
        );
        println!(
            "{n:>8} {:>9.0} {runs:>5} {ms:>10.2} {:>9.2} {cpu:>8.2} {:>9.1} {:>9.1}",
            bytes / 1024.0,
            ms * 1000.0 / n as f64,
            first / 1024.0,
            peak / 1024.0
        );
    }
    Ok(())
}

fn curve(max: usize) -> Result<(), String> {
    // The original benchmark: 1,000 full models, valid, all listed.
    let v = Validator::embedded();
    let sample = time_size(&v, 1000, Shape::Full, 31)?;
    let cpu = median(sample.times.iter().map(|t| t.1).collect());
    let times: Vec<f64> = sample.times.iter().map(|t| t.0).collect();
    let (lo, hi) = (
        times.iter().copied().fold(f64::INFINITY, f64::min),
        times.iter().copied().fold(0.0, f64::max),
    );
    println!(
        "validate 1000-model config ({} KiB): median {:.2} ms, min {:.2} ms, max {:.2} ms, median CPU {cpu:.2} ms (31 runs; target < 10 ms)",
        sample.bytes / 1024,
        median(times),
        lo,
        hi
    );
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    println!("\ncompact models (child process per size):");
    table(&exe, Shape::Compact, max)?;
    println!("\nfull models (merge key and name; the node limit ends them before 50,000):");
    table(&exe, Shape::Full, max.min(FULL_MAX))
}

/// The number after `flag`, if `flag` is given.
fn arg(args: &[String], flag: &str) -> Result<Option<usize>, String> {
    match args.iter().position(|a| a == flag) {
        None => Ok(None),
        Some(i) => args
            .get(i + 1)
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(|| format!("{flag} needs a positive number of models")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let shape = if args.iter().any(|a| a == "--full") {
        Shape::Full
    } else {
        Shape::Compact
    };
    let result = match (arg(&args, "--size"), arg(&args, "--max")) {
        (Err(e), _) | (_, Err(e)) => Err(e),
        (Ok(Some(n)), _) => child(n, shape),
        (Ok(None), Ok(max)) => curve(max.unwrap_or(usize::MAX)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench validate: {e}");
            ExitCode::FAILURE
        }
    }
}
