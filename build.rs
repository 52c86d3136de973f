// Records the git commit for `swapcfg --version` (SWAPCFG_GIT_COMMIT),
// `unknown` outside a git checkout. Build-time only: the binary itself
// never spawns git.
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=SWAPCFG_GIT_COMMIT");
    if let Ok(c) = std::env::var("SWAPCFG_GIT_COMMIT") {
        println!("cargo:rustc-env=SWAPCFG_GIT_COMMIT={c}");
        return;
    }
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SWAPCFG_GIT_COMMIT={commit}");
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        // HEAD moves on checkout; logs/HEAD grows on every commit.
        println!("cargo:rerun-if-changed={dir}/HEAD");
        println!("cargo:rerun-if-changed={dir}/logs/HEAD");
    }
}
