//! `cargo xtask`: developer tasks that are not part of the shipped binary.
//!
//! * `dist [--check]`: the static, stripped x86_64 Linux binary at
//!   `target/dist/swapcfg`, its size and sha256; `--check` proves it is
//!   static, runs with an empty environment, and applies a config against a
//!   loopback OpenSSH sshd inside a mount namespace where `ssh`, `scp` and
//!   `sftp` do not exist.
//! * `bench [--rounds N] [--rtt MS] [--no-rc]`: swapcfg against OpenSSH and paramiko
//!   on one loopback sshd: medians of wall time, CPU time and peak memory.
//!   With `--rtt`, every flow reaches the sshd through the test kit's
//!   delaying TCP proxy (each chunk held RTT/2 in each direction, order
//!   kept), as across a VPN; swapcfg's `--json` step timings are printed too.
//!   With `--no-rc`, sshd has `SetEnv SHLVL=1` (bash then sources no
//!   `~/.bashrc` for a command): the same flows without the host's shell
//!   start-up.
//! * `bench --fleet N`: N inventory hosts behind one loopback sshd (distinct
//!   config paths and health endpoints): the sum of N single-host applies
//!   against one `apply --hosts @all --parallel 16` (target: fleet wall <=
//!   0.15 x the sum), and the fleet run's peak RSS; the CPU of swapcfg and
//!   of sshd (its own and its reaped children's, from `/proc/PID/stat`),
//!   `N x get` to split sshd's CPU between connections and commands, and
//!   the CPU floor of the fleet wall (CPU / cores) against the sum. Run
//!   twice: sshd as the machine has it (the login shell's `~/.bashrc` runs
//!   for every command), and with `SetEnv SHLVL=1` (it does not).
//! * `bench --fleet N --in-process [--parallel P]`: N hosts on the test
//!   kit's in-process SSH server hosted by xtask (one listener; per host
//!   its config path, its new file and its stand-in llama-swap restarted by
//!   a scripted command); one `apply --hosts @all` as a child: wall, peak
//!   RSS (goal <= 150 MiB), the child's peak open descriptors (sampled from
//!   `/proc/PID/fd`; goal O(parallel)), xtask's own descriptors back to
//!   their baseline (no server-side leak), every host's file; PASS/FAIL
//!   per goal, exit 1 on a FAIL.
//!
//! * `man [DIR]`: `swapcfg.1` (default `target/man/`) from the binary's own
//!   clap definitions (clap_mangen).
//!
//! Unlike swapcfg itself, xtask spawns processes freely (cargo, sshd,
//! ssh-keygen, ssh, python).

#[allow(dead_code)]
#[path = "../../src/cli/args.rs"]
mod args;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

type R<T> = Result<T, String>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("dist") => dist(args.iter().any(|a| a == "--check")),
        Some("man") => man(args.get(1).map(PathBuf::from)),
        Some("bench") if args.iter().any(|a| a == "--fleet") => {
            let n = flag_value(&args, "--fleet").unwrap_or(32) as usize;
            if args.iter().any(|a| a == "--in-process") {
                let parallel = flag_value(&args, "--parallel").unwrap_or(16) as usize;
                bench_fleet_in_process(n, parallel)
            } else {
                bench_fleet(n)
            }
        }
        Some("bench") => {
            let rtt = flag_value(&args, "--rtt");
            // Across a delay every round is slow: fewer by default.
            let rounds = flag_value(&args, "--rounds").unwrap_or(if rtt.is_some() { 6 } else { 20 });
            // `--no-rc`: sshd with `SetEnv SHLVL=1`, so bash sources no
            // ~/.bashrc for a command: the same flows without the host's
            // shell start-up, to tell what is swapcfg's from the host's.
            let sshd_extra = if args.iter().any(|a| a == "--no-rc") {
                "SetEnv SHLVL=1"
            } else {
                ""
            };
            bench(rounds as usize, rtt, sshd_extra)
        }
        _ => Err(
            "usage: cargo xtask dist [--check] | cargo xtask bench [--rounds N] [--rtt MS] [--no-rc] | cargo xtask bench --fleet N [--in-process [--parallel P]] | cargo xtask man [DIR]"
                .into(),
        ),
    };
    if let Err(e) = result {
        eprintln!("xtask: error: {e}");
        std::process::exit(1);
    }
}

/// The number after `flag` in `args`, if there is one.
fn flag_value(args: &[String], flag: &str) -> Option<u64> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn run(cmd: &mut Command) -> R<String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Features of the shipped binary: the CLI without the demo sandbox (so no
/// SSH server and no test kit inside).
const DIST_FEATURES: [&str; 3] = ["--no-default-features", "--features", "cli"];

/// `swapcfg.1` from the clap definitions.
fn man(dir: Option<PathBuf>) -> R<()> {
    use clap::CommandFactory;
    let dir = dir.unwrap_or_else(|| root().join("target").join("man"));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    // One page for swapcfg and one per subcommand (swapcfg-apply.1, …).
    clap_mangen::generate_to(args::Cli::command(), &dir).map_err(|e| e.to_string())?;
    let page = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    if !page("swapcfg.1").contains("apply") || !page("swapcfg-apply.1").contains("config\\-path") {
        return Err(format!(
            "the man pages in {} look incomplete",
            dir.display()
        ));
    }
    let n = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    println!(
        "{}: {n} man pages (swapcfg.1 and one per subcommand)",
        dir.display()
    );
    Ok(())
}

/// `cargo tree` of the dist build: proves the test kit is not in it.
fn dist_tree() -> R<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut c = Command::new(cargo);
    c.current_dir(root())
        .args([
            "tree",
            "--package",
            "swapcfg",
            "--edges",
            "normal",
            "--target",
            TARGET,
        ])
        .args(DIST_FEATURES);
    run(&mut c)
}

/// Build the static binary; returns its path.
fn build_dist() -> R<PathBuf> {
    let root = root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "--package",
            "swapcfg",
            "--bin",
            "swapcfg",
            "--target",
            TARGET,
        ])
        .args(DIST_FEATURES)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("cargo build failed".into());
    }
    let built = root
        .join("target")
        .join(TARGET)
        .join("release")
        .join("swapcfg");
    let dist = root.join("target").join("dist");
    std::fs::create_dir_all(&dist).map_err(|e| e.to_string())?;
    let out = dist.join("swapcfg");
    std::fs::copy(&built, &out).map_err(|e| format!("{}: {e}", built.display()))?;
    Ok(out)
}

fn dist(check: bool) -> R<()> {
    let tree = dist_tree()?;
    let crates = tree.lines().count();
    if tree.contains("swapcfg-testkit") || tree.contains("clap_mangen") {
        return Err("the dist build depends on the test kit".into());
    }
    println!("dist dependency tree: {crates} lines, no swapcfg-testkit, no hyper server");
    let bin = build_dist()?;
    let size = std::fs::metadata(&bin).map_err(|e| e.to_string())?.len();
    let sha = run(Command::new("sha256sum").arg(&bin))?;
    println!(
        "{}: {size} bytes ({:.2} MiB), sha256 {}",
        bin.display(),
        size as f64 / 1048576.0,
        sha.split_whitespace().next().unwrap_or("")
    );
    if size >= 15 * 1024 * 1024 {
        return Err(format!("size budget exceeded: {size} bytes >= 15 MiB"));
    }
    if !check {
        return Ok(());
    }
    let file = run(Command::new("file").arg(&bin))?;
    println!("file: {}", file.trim());
    if !(file.contains("statically linked") || file.contains("static-pie linked")) {
        return Err("`file` does not say statically linked".into());
    }
    let ldd = Command::new("ldd")
        .arg(&bin)
        .output()
        .map_err(|e| e.to_string())?;
    let ldd_text = format!(
        "{}{}",
        String::from_utf8_lossy(&ldd.stdout),
        String::from_utf8_lossy(&ldd.stderr)
    );
    println!("ldd: {}", ldd_text.trim());
    if !(ldd_text.contains("not a dynamic executable") || ldd_text.contains("statically linked")) {
        return Err("ldd lists shared libraries".into());
    }
    let v = run(Command::new(&bin).env_clear().arg("--version"))?;
    println!("env -i swapcfg --version: {}", v.trim());

    // A full apply inside a mount namespace where ssh, scp and sftp are gone.
    let fx = Sshd::start()?;
    let http = HttpOk::start(&["qwen"])?;
    let new = fx.dir.join("new.yaml");
    std::fs::write(&new, NEW).map_err(|e| e.to_string())?;
    let mut script = String::from("set -e\n");
    for tool in ["/usr/bin/ssh", "/usr/bin/scp", "/usr/bin/sftp"] {
        if Path::new(tool).exists() {
            script.push_str(&format!("mount --bind /dev/null {tool}\n"));
        }
    }
    script.push_str("for t in ssh scp sftp; do if [ -s /usr/bin/$t ]; then echo \"$t still present\"; exit 3; fi; done\n");
    script.push_str(&format!(
        "exec env -i HOME={home} {bin} apply root@127.0.0.1:{port} {new} --config-path {cfg} --identity {key} --known-hosts {kh} --restart-cmd true --base-url {url} --yes\n",
        home = fx.dir.display(),
        bin = bin.display(),
        port = fx.port,
        new = new.display(),
        cfg = fx.config.display(),
        key = fx.key.display(),
        kh = fx.known_hosts.display(),
        url = http.url(),
    ));
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .map_err(|e| e.to_string())?;
    print!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err(format!(
            "apply in the no-ssh namespace failed ({})",
            out.status
        ));
    }
    let now = std::fs::read(&fx.config).map_err(|e| e.to_string())?;
    if now != NEW.as_bytes() {
        return Err("the remote config was not updated".into());
    }
    println!("no-ssh namespace: apply succeeded (ssh, scp, sftp hidden); remote config updated");
    Ok(())
}

const OLD: &str = "models:\n  qwen:\n    cmd: llama-server --port ${PORT} -m /models/qwen.gguf\n";
const NEW: &str =
    "models:\n  qwen:\n    cmd: llama-server --port ${PORT} -m /models/qwen.gguf\n    ttl: 300\n";

/// The test kit's loopback sshd with one client key and a config file.
struct Sshd {
    _sshd: swapcfg_testkit::sshd::Sshd,
    dir: PathBuf,
    port: u16,
    key: PathBuf,
    known_hosts: PathBuf,
    config: PathBuf,
}

impl Sshd {
    fn start() -> R<Sshd> {
        Sshd::start_with("")
    }

    /// With `extra` lines in the sshd_config.
    fn start_with(extra: &str) -> R<Sshd> {
        let sshd = swapcfg_testkit::sshd::Sshd::start_with(Default::default(), extra)?;
        let key = sshd.client_key("client", "ed25519", "", "")?;
        let dir = sshd.dir.path().to_path_buf();
        let config = dir.join("config.yaml");
        std::fs::write(&config, OLD).map_err(|e| e.to_string())?;
        Ok(Sshd {
            port: sshd.port,
            known_hosts: sshd.known_hosts.clone(),
            _sshd: sshd,
            dir,
            key,
            config,
        })
    }
}

/// A minimal always-healthy `/v1/models` endpoint on loopback.
struct HttpOk {
    addr: std::net::SocketAddr,
}

impl HttpOk {
    fn start(models: &[&str]) -> R<HttpOk> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let data: Vec<String> = models
            .iter()
            .map(|m| format!("{{\"id\":\"{m}\",\"object\":\"model\"}}"))
            .collect();
        let body = format!("{{\"object\":\"list\",\"data\":[{}]}}", data.join(","));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut s = stream;
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
            }
        });
        Ok(HttpOk { addr })
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Wall time, CPU time (user+sys) and peak RSS of one process run.
#[derive(Clone, Copy, Default)]
struct Sample {
    wall: f64,
    cpu: f64,
    rss_kib: i64,
}

fn measure(cmd: &mut Command, stdin: Option<&[u8]>) -> R<Sample> {
    let t = Instant::now();
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if let (Some(data), Some(mut si)) = (stdin, child.stdin.take()) {
        si.write_all(data).map_err(|e| e.to_string())?;
    }
    let mut err = String::new();
    if let Some(mut se) = child.stderr.take() {
        let _ = se.read_to_string(&mut err);
    }
    let mut status = 0;
    // SAFETY: wait4 on our own child's pid with valid out-pointers.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall = t.elapsed().as_secs_f64();
    if r != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("{cmd:?} failed: {err}"));
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Sample {
        wall,
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        rss_kib: ru.ru_maxrss,
    })
}

fn add(a: Sample, b: Sample) -> Sample {
    Sample {
        wall: a.wall + b.wall,
        cpu: a.cpu + b.cpu,
        rss_kib: a.rss_kib.max(b.rss_kib),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// The delaying proxy in front of the sshd, on its own runtime thread:
/// every chunk held `rtt / 2` in each direction, order kept.
struct Delay {
    _proxy: swapcfg_testkit::proxy::Proxy,
    _rt: tokio::runtime::Runtime,
    port: u16,
    known_hosts: PathBuf,
}

impl Delay {
    fn start(fx: &Sshd, rtt_ms: u64) -> R<Delay> {
        use swapcfg_testkit::proxy::{Proxy, ProxyOptions};
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let target = std::net::SocketAddr::from(([127, 0, 0, 1], fx.port));
        let proxy = rt
            .block_on(Proxy::start(
                target,
                ProxyOptions {
                    delay: std::time::Duration::from_micros(rtt_ms * 500),
                    first: None,
                },
            ))
            .map_err(|e| e.to_string())?;
        let port = proxy.port();
        // The same host key, known under the proxy's port too.
        let text = std::fs::read_to_string(&fx.known_hosts).map_err(|e| e.to_string())?;
        let extra = text.replace(
            &format!("[127.0.0.1]:{}", fx.port),
            &format!("[127.0.0.1]:{port}"),
        );
        let known_hosts = fx.dir.join("known_hosts.rtt");
        std::fs::write(&known_hosts, format!("{text}{extra}")).map_err(|e| e.to_string())?;
        Ok(Delay {
            _proxy: proxy,
            _rt: rt,
            port,
            known_hosts,
        })
    }
}

fn bench(rounds: usize, rtt: Option<u64>, sshd_extra: &str) -> R<()> {
    let bin = build_dist()?;
    let fx = Sshd::start_with(sshd_extra)?;
    let http = HttpOk::start(&["qwen"])?;
    let new = fx.dir.join("new.yaml");
    std::fs::write(&new, NEW).map_err(|e| e.to_string())?;
    let cfg = fx.config.display().to_string();
    let delay = rtt.map(|ms| Delay::start(&fx, ms)).transpose()?;
    let (port, known_hosts) = match &delay {
        Some(d) => (d.port.to_string(), d.known_hosts.clone()),
        None => (fx.port.to_string(), fx.known_hosts.clone()),
    };
    let ssh_opts = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.push(format!("UserKnownHostsFile={}", known_hosts.display()));
        v.extend(
            ["-o", "GlobalKnownHostsFile=/dev/null", "-i"]
                .iter()
                .map(|s| s.to_string()),
        );
        v.push(fx.key.display().to_string());
        v.extend(["-p".to_string(), port.clone()]);
        v.extend(extra.iter().map(|s| s.to_string()));
        v.push("root@127.0.0.1".into());
        v
    };
    let ssh = |extra: &[&str], remote: &str, stdin: Option<&[u8]>| -> R<Sample> {
        measure(Command::new("ssh").args(ssh_opts(extra)).arg(remote), stdin)
    };
    let flow = |extra: &[&str]| -> R<Sample> {
        let mut s = ssh(extra, &format!("cat {cfg}"), None)?;
        s = add(s, ssh(extra, &format!("cp -p {cfg} {cfg}.bak-ref"), None)?);
        s = add(
            s,
            ssh(extra, &format!("cat > {cfg}"), Some(NEW.as_bytes()))?,
        );
        Ok(add(s, ssh(extra, "true", None)?))
    };
    // paramiko in a throwaway venv under target/.
    let venv = root().join("target").join("bench-venv");
    let py = venv.join("bin").join("python");
    if !py.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        run(Command::new(&py).args(["-m", "pip", "install", "-q", "paramiko"]))?;
    }
    let pm_script = root().join("xtask").join("bench").join("paramiko_flow.py");
    let sock = fx.dir.join("cm.sock");
    let cm = format!("ControlPath={}", sock.display());
    run(Command::new("ssh").args(ssh_opts(&[
        "-o",
        "ControlMaster=yes",
        "-o",
        &cm,
        "-o",
        "ControlPersist=600",
        "-f",
        "-N",
    ])))?;

    let mut results: Vec<(&str, Vec<Sample>)> = vec![
        ("a: ssh host true", vec![]),
        ("b: 4 x ssh (reference)", vec![]),
        ("c: 4 x ssh + ControlMaster", vec![]),
        ("d: swapcfg apply --force", vec![]),
        ("e: paramiko, one connection", vec![]),
    ];
    // Flow d: the same apply every round.
    let apply = || {
        let mut c = Command::new(&bin);
        c.env_clear()
            .env("HOME", &fx.dir)
            .args(["apply", &format!("root@127.0.0.1:{port}")])
            .arg(&new)
            .args([
                "--config-path",
                &cfg,
                "--identity",
                &fx.key.display().to_string(),
                "--known-hosts",
                &known_hosts.display().to_string(),
                "--restart-cmd",
                "true",
                "--base-url",
                &http.url(),
                "--force",
                "--yes",
            ]);
        c
    };
    for _ in 0..rounds {
        results[0].1.push(ssh(&[], "true", None)?);
        results[1].1.push(flow(&[])?);
        results[2].1.push(flow(&["-o", &cm])?);
        results[3].1.push(measure(&mut apply(), None)?);
        results[4].1.push(measure(
            Command::new(&py)
                .arg(&pm_script)
                .args(["127.0.0.1", &port, "root"])
                .arg(&fx.key)
                .arg(&known_hosts)
                .arg(&cfg)
                .arg(&new),
            None,
        )?);
        // Keep the backup directory from growing without bound.
        if let Ok(rd) = std::fs::read_dir(&fx.dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().contains(".bak-") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
    let _ = Command::new("ssh")
        .args(ssh_opts(&["-o", &cm, "-O", "exit"]))
        .output();

    let med: Vec<(String, f64, f64, f64)> = results
        .iter()
        .map(|(n, s)| {
            (
                n.to_string(),
                median(s.iter().map(|x| x.wall * 1000.0).collect()),
                median(s.iter().map(|x| x.cpu * 1000.0).collect()),
                median(s.iter().map(|x| x.rss_kib as f64 / 1024.0).collect()),
            )
        })
        .collect();
    let cpus = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpus
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mut place = match rtt {
        Some(ms) => format!("sshd behind a {ms} ms round-trip proxy"),
        None => "loopback sshd".into(),
    };
    if !sshd_extra.is_empty() {
        place.push_str(&format!(
            " (sshd_config `{sshd_extra}`: no ~/.bashrc for commands)"
        ));
    }
    println!("\n{place}, {rounds} rounds, medians; machine: {nproc} x {model}\n");
    println!("| flow | wall ms | CPU ms | peak RSS MiB |\n|---|---:|---:|---:|");
    for (n, w, c, m) in &med {
        println!("| {n} | {w:.1} | {c:.1} | {m:.1} |");
    }
    let d = &med[3];
    let ratio = |i: usize| d.1 / med[i].1;
    match rtt {
        Some(_) => println!(
            "\nratios (wall): d/a = {:.2} (goal <= 1.5), d/b = {:.2} (<= 0.40), d/c = {:.2} (<= 0.85), d/e = {:.2} (<= 0.60)",
            ratio(0),
            ratio(1),
            ratio(2),
            ratio(4)
        ),
        None => println!(
            "\nratios (wall): d/a = {:.2}, d/b = {:.2} (goal <= 0.15), d/c = {:.2}, d/e = {:.2}",
            ratio(0),
            ratio(1),
            ratio(2),
            ratio(4)
        ),
    }
    println!(
        "ratio (CPU): d/e = {:.2} (goal <= 0.1); swapcfg peak RSS {:.1} MiB (goal <= 12)",
        d.2 / med[4].2,
        d.3
    );
    // One more apply with --json: where the time goes, step by step.
    let json = run(apply().arg("--json"))?;
    let timings = json
        .find("\"timings_ms\"")
        .and_then(|i| json[i..].find('}').map(|j| &json[i..=i + j]))
        .unwrap_or("(no timings_ms in the JSON)");
    println!("swapcfg --json: {timings}");
    let mut version = Vec::new();
    for _ in 0..rounds.max(5) {
        version.push(measure(Command::new(&bin).env_clear().arg("--version"), None)?.wall * 1000.0);
    }
    println!(
        "swapcfg --version: {:.1} ms (median; goal <= 5)",
        median(version)
    );
    Ok(())
}

/// `bench --fleet N`: see the module doc. Twice: with the machine's own
/// login shell start-up (Debian's bash sources `~/.bashrc` for every
/// command sshd runs; here it may run `pyenv init`, ~100 ms of CPU), and
/// without it (`SetEnv SHLVL=1`), so the table says what is swapcfg's and
/// what is the host's.
fn bench_fleet(n: usize) -> R<()> {
    let bin = build_dist()?;
    println!("\n## sshd as configured on this machine (the login shell's rc files run for every command)");
    bench_fleet_on(n, &bin, "")?;
    println!("\n## sshd with `SetEnv SHLVL=1` (bash does not source ~/.bashrc for a command)");
    bench_fleet_on(n, &bin, "SetEnv SHLVL=1")
}

fn bench_fleet_on(n: usize, bin: &Path, sshd_extra: &str) -> R<()> {
    let fx = Sshd::start_with(sshd_extra)?;
    let new = fx.dir.join("new.yaml");
    std::fs::write(&new, NEW).map_err(|e| e.to_string())?;
    let mut https = Vec::new();
    let mut inv = format!(
        "defaults:\n  address: 127.0.0.1\n  port: {}\n  user: {}\n  identity: {}\n  known_hosts: {}\n  restart_cmd: \"true\"\n  health_delay: 0.05\nhosts:\n",
        fx.port,
        swapcfg_testkit::sshd::whoami(),
        fx.key.display(),
        fx.known_hosts.display()
    );
    for i in 0..n {
        let cfg = fx.dir.join(format!("config-{i}.yaml"));
        std::fs::write(&cfg, OLD).map_err(|e| e.to_string())?;
        let http = HttpOk::start(&["qwen"])?;
        inv.push_str(&format!(
            "  h{i}:\n    config_path: {}\n    base_url: {}\n",
            cfg.display(),
            http.url()
        ));
        https.push(http);
    }
    let inventory = fx.dir.join("inventory.yaml");
    std::fs::write(&inventory, inv).map_err(|e| e.to_string())?;
    let clean = || {
        if let Ok(rd) = std::fs::read_dir(&fx.dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().contains(".bak-") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    };
    let swapcfg = |extra: &[&str]| -> R<Sample> {
        measure(
            Command::new(bin)
                .env_clear()
                .env("HOME", &fx.dir)
                .args(extra)
                .arg("--inventory")
                .arg(&inventory)
                .args(["--force", "--yes"]),
            None,
        )
    };
    let sshd_pid = fx._sshd.pid().to_string();
    let load_before = load();
    let mut single = Sample::default();
    let sshd_0 = sshd_cpu(&sshd_pid);
    for i in 0..n {
        let host = format!("h{i}");
        let new = new.display().to_string();
        single = add(single, swapcfg(&["apply", &host, &new])?);
    }
    let sshd_single = sshd_cpu(&sshd_pid) - sshd_0;
    clean();
    let new_s = new.display().to_string();
    let log_1 = fx._sshd.log();
    let sshd_1 = sshd_cpu(&sshd_pid);
    let fleet = swapcfg(&["apply", "--hosts", "@all", &new_s, "--parallel", "16"])?;
    let sshd_fleet = sshd_cpu(&sshd_pid) - sshd_1;
    clean();
    // What sshd did for the fleet: connections and exec'd commands.
    let log = fx._sshd.log();
    let fleet_log = log.get(log_1.len()..).unwrap_or("");
    let count = |what: &str| fleet_log.matches(what).count();
    let (conns, execs) = (
        count("Accepted publickey"),
        count("Starting session: command"),
    );
    // The same connections with no command run: N x `get` (connect,
    // SFTP read, close) splits sshd's CPU between the connection and the
    // commands.
    let sshd_2 = sshd_cpu(&sshd_pid);
    let mut gets = Sample::default();
    for i in 0..n {
        gets = add(
            gets,
            measure(
                Command::new(bin)
                    .env_clear()
                    .env("HOME", &fx.dir)
                    .args(["get", &format!("h{i}"), "--inventory"])
                    .arg(&inventory),
                None,
            )?,
        );
    }
    let sshd_gets = sshd_cpu(&sshd_pid) - sshd_2;
    let ratio = fleet.wall / single.wall;
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!(
        "\nfleet of {n} hosts behind one loopback sshd ({nproc} CPUs; load before: {load_before}, after: {})\n",
        load()
    );
    println!("| run | wall ms | swapcfg CPU ms | sshd CPU ms | peak RSS MiB |\n|---|---:|---:|---:|---:|");
    println!(
        "| sum of {n} single-host applies | {:.1} | {:.1} | {:.1} | {:.1} |",
        single.wall * 1000.0,
        single.cpu * 1000.0,
        sshd_single * 1000.0,
        single.rss_kib as f64 / 1024.0
    );
    println!(
        "| apply --hosts @all --parallel 16 | {:.1} | {:.1} | {:.1} | {:.1} |",
        fleet.wall * 1000.0,
        fleet.cpu * 1000.0,
        sshd_fleet * 1000.0,
        fleet.rss_kib as f64 / 1024.0
    );
    println!(
        "| {n} x get (connect, SFTP read, no command) | {:.1} | {:.1} | {:.1} | {:.1} |",
        gets.wall * 1000.0,
        gets.cpu * 1000.0,
        sshd_gets * 1000.0,
        gets.rss_kib as f64 / 1024.0
    );
    println!(
        "\nsshd during the fleet run: {conns} connections, {execs} commands (the restart; ~{:.1} ms of sshd CPU per connection with its SFTP session, ~{:.1} ms per command with its login shell)",
        sshd_gets * 1000.0 / n as f64,
        (sshd_fleet - sshd_gets).max(0.0) * 1000.0 / (execs.max(1)) as f64
    );
    // Every host costs CPU in swapcfg and in sshd (OpenSSH re-executes
    // itself per connection, forks a privilege-separated child, a session
    // and the restart's shell): however well the hosts overlap, the fleet
    // cannot end before that CPU is spent on the machine's cores.
    let cpu_fleet = fleet.cpu + sshd_fleet;
    let floor = cpu_fleet / nproc.max(1) as f64;
    println!(
        "\nCPU per host in the fleet run: swapcfg {:.1} ms + sshd {:.1} ms = {:.1} ms; in a single-host apply: swapcfg {:.1} ms + sshd {:.1} ms",
        fleet.cpu * 1000.0 / n as f64,
        sshd_fleet * 1000.0 / n as f64,
        cpu_fleet * 1000.0 / n as f64,
        single.cpu * 1000.0 / n as f64,
        sshd_single * 1000.0 / n as f64,
    );
    println!(
        "CPU floor of the fleet wall: {:.1} ms CPU / {nproc} cores = {:.1} ms, i.e. fleet / sum >= {:.3} on this machine (wall of a single apply: {:.1} ms, of which CPU {:.0}%)",
        cpu_fleet * 1000.0,
        floor * 1000.0,
        floor / single.wall,
        single.wall * 1000.0 / n as f64,
        100.0 * (single.cpu + sshd_single) / single.wall
    );
    println!(
        "{}: ratio (wall): fleet / sum = {ratio:.3} (target <= 0.15){}",
        if ratio <= 0.15 { "PASS" } else { "FAIL" },
        if floor / single.wall > 0.15 {
            " -- out of reach here: the CPU floor alone is above the target"
        } else {
            ""
        }
    );
    // Where a single apply's wall goes, step by step.
    let json = run(Command::new(bin)
        .env_clear()
        .env("HOME", &fx.dir)
        .args(["apply", "h0", &new_s, "--inventory"])
        .arg(&inventory)
        .args(["--force", "--yes", "--json"]))?;
    clean();
    let timings = json
        .find("\"timings_ms\"")
        .and_then(|i| json[i..].find('}').map(|j| &json[i..=i + j]))
        .unwrap_or("(no timings_ms in the JSON)");
    println!("one single-host apply, --json: {timings}");
    drop(https);
    Ok(())
}

/// Descriptors open in process `pid` (`None` once it is gone).
fn fd_count(pid: &str) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

/// A run of the swapcfg binary watched from outside: wall time, CPU time
/// and peak RSS (from `wait4`), and the peak of its open descriptors
/// (sampled every 2 ms from `/proc/PID/fd`).
struct Watched {
    sample: Sample,
    peak_fds: usize,
    fd_samples: usize,
    stdout: String,
    stderr: String,
    code: i32,
}

fn watch_run(cmd: &mut Command) -> R<Watched> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let t = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let pid = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let (peak, samples) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let sampler = {
        let (done, peak, samples) = (done.clone(), peak.clone(), samples.clone());
        std::thread::spawn(move || {
            let pid = pid.to_string();
            while !done.load(Ordering::SeqCst) {
                if let Some(n) = fd_count(&pid) {
                    peak.fetch_max(n, Ordering::SeqCst);
                    samples.fetch_add(1, Ordering::SeqCst);
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        })
    };
    let reader = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let mut status = 0;
    // SAFETY: wait4 on our own child's pid with valid out-pointers.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut ru) };
    let wall = t.elapsed().as_secs_f64();
    done.store(true, Ordering::SeqCst);
    let _ = sampler.join();
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if r != pid as libc::pid_t || !libc::WIFEXITED(status) {
        return Err(format!("{cmd:?} did not exit normally: {stderr}"));
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Watched {
        sample: Sample {
            wall,
            cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
            rss_kib: ru.ru_maxrss,
        },
        peak_fds: peak.load(Ordering::SeqCst),
        fd_samples: samples.load(Ordering::SeqCst),
        stdout,
        stderr,
        code: libc::WEXITSTATUS(status),
    })
}

/// A config naming `model` (the stand-ins list what their file names).
fn model_config(model: &str) -> String {
    format!("models:\n  {model}:\n    cmd: llama-server --port ${{PORT}} -m /models/{model}.gguf\n")
}

/// The model ids of a config as the stand-ins judge it: the keys under
/// `models:` (enough for the files this benchmark writes).
fn judge_models(bytes: &[u8]) -> Result<Vec<String>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
    let ids: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   ") && l.ends_with(':'))
        .map(|l| l.trim().trim_end_matches(':').to_string())
        .collect();
    if ids.is_empty() {
        return Err("no models".into());
    }
    Ok(ids)
}

/// `bench --fleet N --in-process [--parallel P]`: N inventory hosts on the
/// test kit's in-process SSH server (one listener, hosted by this process),
/// each with its own config path, its own new file (`file:
/// new/{host}.yaml`) and its own stand-in llama-swap that a scripted
/// `restart-{host}` restarts from the file. One `swapcfg apply --hosts @all`
/// runs as a child; reported: wall and CPU, the child's peak RSS (goal <=
/// 150 MiB), the child's peak descriptors (goal: O(parallel), not
/// O(hosts)), this process's descriptors before and after (goal: back to
/// the baseline: no leak on the server side), and every host's file.
fn bench_fleet_in_process(n: usize, parallel: usize) -> R<()> {
    use swapcfg_testkit::server::{ScriptedExec, TestServerBuilder};
    use swapcfg_testkit::standin::{Judge, StandinBuilder};
    let bin = build_dist()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let dir = tempfile_dir()?;
    let key_path = dir.join("id_bench");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key_path))?;
    let key = russh::keys::load_secret_key(&key_path, None).map_err(|e| e.to_string())?;
    let server = rt
        .block_on(
            TestServerBuilder::new()
                .authorized_key(key.public_key().clone())
                .start(),
        )
        .map_err(|e| e.to_string())?;
    let known_hosts = dir.join("known_hosts");
    std::fs::write(&known_hosts, format!("{}\n", server.known_hosts_line()))
        .map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir.join("new")).map_err(|e| e.to_string())?;
    let judge: Judge = std::sync::Arc::new(judge_models);
    let mut inv = format!(
        "defaults:\n  address: 127.0.0.1\n  port: {}\n  user: bench\n  identity: {}\n  known_hosts: {}\n  health_delay: 0.05\n  file: {}/new/{{host}}.yaml\nhosts:\n",
        server.port(),
        key_path.display(),
        known_hosts.display(),
        dir.display()
    );
    let mut standins = Vec::with_capacity(n);
    let mut configs = Vec::with_capacity(n);
    for i in 0..n {
        let host = format!("h{i}");
        let hdir = dir.join(&host);
        std::fs::create_dir_all(&hdir).map_err(|e| e.to_string())?;
        let cfg = hdir.join("config.yaml");
        std::fs::write(&cfg, model_config("old")).map_err(|e| e.to_string())?;
        let new = model_config(&format!("m{i}"));
        std::fs::write(dir.join("new").join(format!("{host}.yaml")), &new)
            .map_err(|e| e.to_string())?;
        let st = rt
            .block_on(
                StandinBuilder::new(Vec::new())
                    .config(&cfg, judge.clone())
                    .start(),
            )
            .map_err(|e| e.to_string())?;
        server.set_script(
            &format!("restart-{host}"),
            ScriptedExec::running(st.restart_hook()),
        );
        inv.push_str(&format!(
            "  {host}:\n    config_path: {}\n    base_url: {}\n    restart_cmd: restart-{host}\n",
            cfg.display(),
            st.base_url()
        ));
        standins.push(st);
        configs.push((cfg, new));
    }
    let inventory = dir.join("inventory.yaml");
    std::fs::write(&inventory, inv).map_err(|e| e.to_string())?;
    let me = std::process::id().to_string();
    let baseline = fd_count(&me).unwrap_or(0);
    let run = watch_run(
        Command::new(&bin)
            .env_clear()
            .env("HOME", &dir)
            .args(["apply", "--hosts", "@all", "--yes", "--json"])
            .args(["--parallel", &parallel.to_string()])
            .arg("--inventory")
            .arg(&inventory),
    )?;
    // Connections end asynchronously on the server side: give them a moment.
    let mut after = fd_count(&me).unwrap_or(usize::MAX);
    let settle = Instant::now();
    while after > baseline && settle.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(50));
        after = fd_count(&me).unwrap_or(usize::MAX);
    }
    let wrong: Vec<String> = configs
        .iter()
        .enumerate()
        .filter(|(_, (cfg, new))| std::fs::read(cfg).ok().as_deref() != Some(new.as_bytes()))
        .map(|(i, _)| format!("h{i}"))
        .collect();
    let summary = run
        .stdout
        .lines()
        .rev()
        .find(|l| l.contains("\"summary\""))
        .unwrap_or("(no summary line)")
        .to_string();
    let restarted = standins.iter().filter(|s| s.restart_count() == 1).count();
    drop(standins);
    drop(server);
    drop(rt);
    let _ = std::fs::remove_dir_all(&dir);

    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let rss_mib = run.sample.rss_kib as f64 / 1024.0;
    // Per connection at most a few descriptors (the SSH socket, the health
    // check's HTTP socket, a timer or two); the runtime's own are fixed.
    let fd_bound = 32 + 4 * parallel;
    println!(
        "\nfleet of {n} hosts on the in-process server (one listener), --parallel {parallel}; {nproc} CPUs; load: {}\n",
        load()
    );
    println!(
        "swapcfg apply --hosts @all: exit {}, wall {:.1} ms, CPU {:.1} ms, peak RSS {rss_mib:.1} MiB",
        run.code,
        run.sample.wall * 1000.0,
        run.sample.cpu * 1000.0
    );
    println!("summary: {summary}");
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    let ok_exit = run.code == 0;
    let ok_rss = rss_mib <= 150.0;
    let ok_fds = run.peak_fds <= fd_bound && run.fd_samples > 0;
    let ok_leak = after <= baseline;
    let ok_files = wrong.is_empty() && restarted == n;
    println!("{}: exit 0 (every host done)", verdict(ok_exit));
    println!(
        "{}: peak RSS {rss_mib:.1} MiB (goal <= 150)",
        verdict(ok_rss)
    );
    println!(
        "{}: swapcfg's peak open descriptors {} over {} samples (goal: O(parallel) <= 32 + 4 x {parallel} = {fd_bound}; hosts: {n})",
        verdict(ok_fds),
        run.peak_fds,
        run.fd_samples
    );
    println!(
        "{}: server side (this process) descriptors {baseline} before, {after} after (goal: back to the baseline)",
        verdict(ok_leak)
    );
    println!(
        "{}: {} of {n} hosts hold their new file, {restarted} stand-ins restarted once{}",
        verdict(ok_files),
        n - wrong.len(),
        if wrong.is_empty() {
            String::new()
        } else {
            format!(
                " (wrong: {})",
                wrong
                    .iter()
                    .take(10)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    if !(ok_exit && ok_rss && ok_fds && ok_leak && ok_files) {
        let tail: Vec<&str> = run.stderr.lines().rev().take(20).collect();
        eprintln!("swapcfg stderr (last lines):");
        for l in tail.into_iter().rev() {
            eprintln!("  {l}");
        }
        return Err("the in-process fleet benchmark failed a goal".into());
    }
    Ok(())
}

/// CPU seconds (user + system) of process `pid` and of the children it
/// has reaped: for the sshd listener, every connection's processes.
fn sshd_cpu(pid: &str) -> f64 {
    // Children exit a moment after their connection closes.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After `pid (comm) `: state is field 0, utime 11, stime 12, cutime
    // 13, cstime 14.
    let ticks: f64 = stat
        .rsplit(')')
        .next()
        .map(|r| {
            r.split_whitespace()
                .skip(11)
                .take(4)
                .filter_map(|t| t.parse::<f64>().ok())
                .sum()
        })
        .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks / hz
}

/// The load averages from `/proc/loadavg` (other work shares the CPUs).
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// A fresh directory under the system temp dir.
fn tempfile_dir() -> R<PathBuf> {
    let d = std::env::temp_dir().join(format!(
        "swapcfg-bench-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
    Ok(d)
}
