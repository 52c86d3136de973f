//! `apply` / `plan --hosts`: several in-process servers named in one
//! inventory, driven through the binary; every test checks the hosts'
//! files afterwards.

use std::path::PathBuf;

use crate::common::{fixture, output, path_str, swapcfg_cmd, Fixture};

const OLD: &[u8] = b"models:\n  old:\n    cmd: llama-server --port ${PORT} -m /m/old.gguf\n";

fn new_for(host: &str) -> Vec<u8> {
    format!("models:\n  {host}:\n    cmd: llama-server --port ${{PORT}} -m /m/{host}.gguf\n")
        .into_bytes()
}

struct Fleet {
    hosts: Vec<Fixture>,
    dir: tempfile::TempDir,
    inventory: PathBuf,
}

impl Fleet {
    /// Hosts h1…hN, one server each; `file: configs/{host}.yaml` with a
    /// distinct new config per host; `dead` names hosts whose port has no
    /// server (connect fails).
    async fn new(n: usize, dead: &[&str]) -> Fleet {
        let mut hosts = Vec::new();
        for _ in 0..n {
            hosts.push(fixture(|b| b).await);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("configs")).expect("mkdir");
        let free = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let mut inv = String::from("defaults:\n  user: tester\n  restart_cmd: none\n  file: configs/{host}.yaml\n  connect_timeout: 2\nhosts:\n");
        for (i, fx) in hosts.iter().enumerate() {
            let name = format!("h{}", i + 1);
            fx.config("config.yaml", OLD, 0o644);
            std::fs::write(
                dir.path().join("configs").join(format!("{name}.yaml")),
                new_for(&name),
            )
            .expect("write");
            let port = if dead.contains(&name.as_str()) {
                free
            } else {
                fx.server.port()
            };
            inv.push_str(&format!(
                "  {name}:\n    address: 127.0.0.1\n    port: {port}\n    identity: {}\n    known_hosts: {}\n    config_path: {}\n",
                path_str(&fx.key_path),
                path_str(&fx.known_hosts),
                path_str(&fx.dir.path().join("config.yaml")),
            ));
        }
        inv.push_str("groups:\n  two: [h2, h1]\n");
        let inventory = dir.path().join("inventory.yaml");
        std::fs::write(&inventory, inv).expect("inventory");
        Fleet {
            hosts,
            dir,
            inventory,
        }
    }

    async fn run(&self, args: &[&str]) -> std::process::Output {
        let mut c = swapcfg_cmd();
        c.args(args).arg("--inventory").arg(&self.inventory);
        output(c).await
    }

    fn remote(&self, i: usize) -> Vec<u8> {
        std::fs::read(self.hosts[i].dir.path().join("config.yaml")).expect("read")
    }

    /// Nothing but the config (and the fixture's key and known_hosts) in
    /// host `i`'s directory: no backup, temp file or lock.
    fn untouched(&self, i: usize) -> bool {
        self.remote(i) == OLD
            && self.hosts[i]
                .listing()
                .iter()
                .all(|n| n == "config.yaml" || n == "id_test" || n == "known_hosts")
    }
}

fn lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| {
                panic!(
                    "not a JSON line ({e}): {l}\nstderr: {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
        })
        .collect()
}

fn summary(v: &[serde_json::Value]) -> &serde_json::Value {
    &v.last().expect("summary line")["summary"]
}

#[tokio::test]
async fn apply_every_host_its_own_file_json_lines_and_summary() {
    let f = Fleet::new(3, &[]).await;
    let out = f
        .run(&["apply", "--hosts", "@all", "--yes", "--json"])
        .await;
    let v = lines(&out);
    assert_eq!(out.status.code(), Some(0), "{v:?}");
    assert_eq!(v.len(), 4, "one line per host and a summary: {v:?}");
    let mut names: Vec<&str> = v[..3]
        .iter()
        .map(|h| h["host"].as_str().unwrap_or(""))
        .collect();
    names.sort();
    assert_eq!(names, ["h1", "h2", "h3"]);
    for h in &v[..3] {
        assert_eq!(h["result"], "ok", "{h}");
        assert_eq!(h["exit"], 0);
        assert_eq!(h["changed"], true);
        assert!(h["backup"]
            .as_str()
            .is_some_and(|b| b.contains("config.yaml")));
    }
    let s = summary(&v);
    assert_eq!(
        (s["hosts"].as_u64(), s["ok"].as_u64(), s["exit"].as_u64()),
        (Some(3), Some(3), Some(0))
    );
    for i in 0..3 {
        assert_eq!(f.remote(i), new_for(&format!("h{}", i + 1)), "host {i}");
    }
    // Again: every host unchanged, exit 0.
    let out = f
        .run(&["apply", "--hosts", "h1,@two", "--yes", "--json"])
        .await;
    let v = lines(&out);
    assert_eq!(out.status.code(), Some(0), "{v:?}");
    assert_eq!(
        summary(&v)["unchanged"],
        2,
        "h1 once (selector dedupes): {v:?}"
    );
}

#[tokio::test]
async fn plan_changes_nothing_and_exits_2_with_one_file_for_all() {
    let f = Fleet::new(2, &[]).await;
    let common = f.dir.path().join("common.yaml");
    std::fs::write(&common, new_for("common")).expect("write");
    let out = f
        .run(&["plan", "--hosts", "@two", &path_str(&common), "--json"])
        .await;
    let v = lines(&out);
    assert_eq!(out.status.code(), Some(2), "{v:?}");
    assert_eq!(summary(&v)["planned"], 2);
    assert!(f.untouched(0) && f.untouched(1));
    // A fleet apply without --yes is refused before anything runs.
    let out = f.run(&["apply", "--hosts", "@all"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    assert!(f.untouched(0) && f.untouched(1));
}

#[tokio::test]
async fn an_invalid_file_stops_the_run_before_any_host_is_touched() {
    let f = Fleet::new(3, &[]).await;
    std::fs::write(
        f.dir.path().join("configs/h3.yaml"),
        b"models:\n  bad:\n    cmd: [not, a, string\n",
    )
    .expect("write");
    let out = f
        .run(&["apply", "--hosts", "@all", "--yes", "--json"])
        .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("h3.yaml"));
    for i in 0..3 {
        assert!(f.untouched(i), "host {i}: {:?}", f.hosts[i].listing());
    }
    // A host without a file (no FILE, no `file:` for it) is a usage error,
    // before any host too.
    let out = f.run(&["apply", "--hosts", "h1,nope", "--yes"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no host `nope`"));
}

#[tokio::test]
async fn a_failed_canary_skips_the_rest_and_max_fail_lets_them_run() {
    let f = Fleet::new(3, &["h1"]).await;
    let out = f
        .run(&[
            "apply", "--hosts", "@all", "--canary", "1", "--yes", "--json",
        ])
        .await;
    let v = lines(&out);
    assert_eq!(
        out.status.code(),
        Some(3),
        "connect is the failing step: {v:?}"
    );
    let s = summary(&v);
    assert_eq!(s["failed_hosts"], serde_json::json!(["h1"]), "{v:?}");
    assert_eq!(s["skipped_hosts"], serde_json::json!(["h2", "h3"]), "{v:?}");
    assert!(f.untouched(1) && f.untouched(2), "skipped hosts untouched");
    // --max-fail 1, one at a time: h1 fails, h2 and h3 still run.
    let out = f
        .run(&[
            "apply",
            "--hosts",
            "@all",
            "--parallel",
            "1",
            "--max-fail",
            "1",
            "--yes",
            "--json",
        ])
        .await;
    let v = lines(&out);
    assert_eq!(out.status.code(), Some(3), "{v:?}");
    let s = summary(&v);
    assert_eq!(
        (s["ok"].as_u64(), s["failed"].as_u64()),
        (Some(2), Some(1)),
        "{v:?}"
    );
    assert_eq!(f.remote(1), new_for("h2"));
    assert_eq!(f.remote(2), new_for("h3"));
    let h1 = v.iter().find(|h| h["host"] == "h1").expect("h1 line");
    assert_eq!(
        (h1["result"].as_str(), h1["step"].as_str()),
        (Some("failed"), Some("connect"))
    );
}

#[tokio::test]
async fn get_out_writes_each_host_byte_exact_and_names_the_failures() {
    let f = Fleet::new(3, &["h3"]).await;
    // Bytes a text round trip would change: CRLF, a tab, no final newline.
    let odd: &[u8] = b"models:\r\n  x:\r\n\tcmd: \xe2\x9c\x93 y";
    std::fs::write(f.hosts[1].dir.path().join("config.yaml"), odd).expect("write");
    let out_dir = f.dir.path().join("out");
    std::fs::create_dir(&out_dir).expect("mkdir");
    let out = f
        .run(&[
            "get",
            "--hosts",
            "@all",
            "--out",
            &path_str(&out_dir),
            "--json",
        ])
        .await;
    let v = lines(&out);
    assert_eq!(out.status.code(), Some(3), "h3 cannot connect: {v:?}");
    assert_eq!(std::fs::read(out_dir.join("h1.yaml")).expect("h1"), OLD);
    assert_eq!(std::fs::read(out_dir.join("h2.yaml")).expect("h2"), odd);
    let mut names: Vec<String> = std::fs::read_dir(&out_dir)
        .expect("read out")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["h1.yaml", "h2.yaml"],
        "no file (or temp) for the failed host"
    );
    let s = summary(&v);
    assert_eq!(s["failed_hosts"], serde_json::json!(["h3"]));
    let h2 = v.iter().find(|h| h["host"] == "h2").expect("h2 line");
    assert_eq!(h2["bytes"].as_u64(), Some(odd.len() as u64));
    // Without --out: a usage error, nothing connects.
    let out = f.run(&["get", "--hosts", "@all"]).await;
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn human_output_is_one_line_per_host_and_a_table_without_diffs() {
    let f = Fleet::new(2, &[]).await;
    let out = f.run(&["apply", "--hosts", "@all", "--yes"]).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stdout.is_empty(),
        "no diff on stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("✓ h1: ok") && err.contains("✓ h2: ok"),
        "{err}"
    );
    assert!(
        err.contains("host") && err.contains("backup"),
        "table header: {err}"
    );
    assert!(err.contains("2 hosts: 2 ok, 0 unchanged"), "{err}");
    assert_eq!(f.remote(0), new_for("h1"));
}

#[tokio::test]
async fn status_shows_drift_health_and_models() {
    use swapcfg_testkit::standin::Standin;
    let f = Fleet::new(3, &[]).await;
    let standin = Standin::start(vec!["qwen".into(), "llama".into()], None)
        .await
        .expect("standin");
    // h1 in sync with its file, h2 drifted (still OLD), h3's config gone.
    std::fs::write(f.hosts[0].dir.path().join("config.yaml"), new_for("h1")).expect("write");
    std::fs::remove_file(f.hosts[2].dir.path().join("config.yaml")).expect("rm");
    let inv = std::fs::read_to_string(&f.inventory).expect("inventory");
    let inv = inv.replacen(
        "  h1:\n",
        &format!("  h1:\n    base_url: {}\n", standin.base_url()),
        1,
    );
    std::fs::write(&f.inventory, inv).expect("inventory");
    let out = f.run(&["status", "--hosts", "@all", "--json"]).await;
    let v = lines(&out);
    assert_eq!(out.status.code(), Some(1), "drift exits 1: {v:?}");
    let row = |h: &str| v.iter().find(|r| r["host"] == h).cloned().expect("row");
    let h1 = row("h1");
    assert_eq!(
        (h1["sync"].as_str(), h1["health"].as_str()),
        (Some("in-sync"), Some("healthy"))
    );
    assert_eq!(h1["models"], serde_json::json!(["qwen", "llama"]));
    assert_eq!(h1["version"], "standin (commit standin)");
    assert_eq!(h1["sha256"], h1["local_sha256"]);
    let h2 = row("h2");
    assert_eq!(
        (h2["sync"].as_str(), h2["health"].as_str()),
        (Some("drifted"), Some("unchecked"))
    );
    assert_ne!(h2["sha256"], h2["local_sha256"]);
    assert_eq!(row("h3")["sync"], "missing");
    let s = summary(&v);
    assert_eq!(
        (
            s["in_sync"].as_u64(),
            s["drifted"].as_u64(),
            s["missing"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );
    // Status changes nothing.
    assert_eq!(f.remote(1), OLD);
    assert!(!f.hosts[2].dir.path().join("config.yaml").exists());
    // All in sync and healthy: exit 0; an unhealthy one: exit 9.
    let out = f.run(&["status", "--hosts", "h1", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{:?}", lines(&out));
    standin.set_status(500);
    let out = f.run(&["status", "--hosts", "h1", "--json"]).await;
    assert_eq!(out.status.code(), Some(9), "{:?}", lines(&out));
}

#[tokio::test]
async fn health_and_backups_on_many_hosts() {
    use swapcfg_testkit::standin::Standin;
    let f = Fleet::new(2, &["h2"]).await;
    let up = Standin::start(vec!["qwen".into()], None)
        .await
        .expect("standin");
    let down = Standin::start(vec![], None).await.expect("standin");
    down.set_status(503);
    let inv = std::fs::read_to_string(&f.inventory)
        .expect("inventory")
        .replacen(
            "  h1:\n",
            &format!("  h1:\n    base_url: {}\n", up.base_url()),
            1,
        )
        .replacen(
            "  h2:\n",
            &format!("  h2:\n    base_url: {}\n", down.base_url()),
            1,
        );
    std::fs::write(&f.inventory, inv).expect("inventory");
    let out = f
        .run(&[
            "health",
            "--hosts",
            "@all",
            "--health-attempts",
            "1",
            "--json",
        ])
        .await;
    let v = lines(&out);
    assert_eq!(out.status.code(), Some(9), "{v:?}");
    let h1 = v.iter().find(|h| h["host"] == "h1").expect("h1");
    assert_eq!(h1["models"], serde_json::json!(["qwen"]));
    assert_eq!(summary(&v)["failed_hosts"], serde_json::json!(["h2"]));
    // backups: h1 has one after an apply; h2 cannot connect (exit 3).
    let out = f
        .run(&[
            "apply",
            "--hosts",
            "h1",
            "--yes",
            "--json",
            "--health-attempts",
            "1",
            // The stand-in does not follow the file: no reload to prove,
            // and it lists its own models.
            "--reload",
            "restart",
            "--no-verify-models",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{:?}", lines(&out));
    let out = f.run(&["backups", "--hosts", "@all", "--json"]).await;
    let v = lines(&out);
    assert_eq!(out.status.code(), Some(3), "{v:?}");
    let h1 = v.iter().find(|h| h["host"] == "h1").expect("h1");
    let backups = h1["backups"].as_array().expect("backups");
    assert_eq!(backups.len(), 1, "{h1}");
    let path = backups[0]["path"].as_str().expect("path");
    assert_eq!(std::fs::read(path).expect("backup bytes"), OLD);
    assert_eq!(summary(&v)["failed_hosts"], serde_json::json!(["h2"]));
    // edit still takes one TARGET, and says what to do instead.
    let out = f.run(&["edit", "--hosts", "@all"]).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("one editor") && err.contains("get --hosts"),
        "{err}"
    );
}

/// The backups beside host `i`'s config (full paths), oldest first.
fn backups_of(f: &Fleet, i: usize) -> Vec<PathBuf> {
    f.hosts[i]
        .listing()
        .into_iter()
        .filter(|n| n.starts_with("config.yaml.bak-"))
        .map(|n| f.hosts[i].dir.path().join(n))
        .collect()
}

#[tokio::test]
async fn rollback_hosts_restores_each_hosts_newest_backup() {
    let f = Fleet::new(3, &[]).await;
    // h1 and h2 get their new config (and a backup of OLD); h3 has none.
    let out = f
        .run(&["apply", "--hosts", "h1,h2", "--yes", "--json"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{:?}", lines(&out));
    assert_eq!(f.remote(0), new_for("h1"));
    // Without --yes: refused before any host is touched.
    let out = f.run(&["rollback", "--hosts", "@all"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    assert_eq!((f.remote(0), f.remote(1)), (new_for("h1"), new_for("h2")));
    // One at a time, --max-fail 0: h3 (no backup) is last, so h1 and h2 are
    // restored and h3 fails at read (exit 4), untouched.
    let out = f
        .run(&[
            "rollback",
            "--hosts",
            "@all",
            "--parallel",
            "1",
            "--yes",
            "--json",
        ])
        .await;
    let v = lines(&out);
    assert_eq!(out.status.code(), Some(4), "{v:?}");
    assert_eq!((f.remote(0), f.remote(1)), (OLD.to_vec(), OLD.to_vec()));
    assert!(f.untouched(2), "{:?}", f.hosts[2].listing());
    for (i, name) in [(0, "h1"), (1, "h2")] {
        let h = v.iter().find(|h| h["host"] == name).expect("host line");
        assert_eq!(
            (h["result"].as_str(), h["changed"].as_bool()),
            (Some("ok"), Some(true)),
            "{h}"
        );
        let restored = h["restored"].as_str().expect("restored");
        assert_eq!(std::fs::read(restored).expect("restored backup"), OLD);
        // The rollback backed up the config it replaced.
        let taken = h["backup"].as_str().expect("backup");
        assert_eq!(std::fs::read(taken).expect("new backup"), new_for(name));
        assert_eq!(backups_of(&f, i).len(), 2, "{:?}", f.hosts[i].listing());
    }
    let h3 = v.iter().find(|h| h["host"] == "h3").expect("h3 line");
    assert_eq!(
        (h3["result"].as_str(), h3["step"].as_str()),
        (Some("failed"), Some("read"))
    );
    assert!(
        h3["error"]
            .as_str()
            .is_some_and(|e| e.contains("no backups")),
        "{h3}"
    );
    let s = summary(&v);
    assert_eq!(
        (s["ok"].as_u64(), s["failed_hosts"].clone()),
        (Some(2), serde_json::json!(["h3"]))
    );
    // A named backup is one host's: refused with several hosts, nothing
    // touched...
    let newer = backups_of(&f, 0)
        .into_iter()
        .find(|b| std::fs::read(b).ok() == Some(new_for("h1")))
        .expect("backup of h1's new config");
    let named = path_str(&newer);
    let out = f
        .run(&["rollback", "--hosts", "h1,h2", &named, "--yes"])
        .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("named BACKUP"));
    assert_eq!((f.remote(0), f.remote(1)), (OLD.to_vec(), OLD.to_vec()));
    // ...and restored on the one host selected.
    let out = f
        .run(&["rollback", "--hosts", "h1", &named, "--yes", "--json"])
        .await;
    let v = lines(&out);
    assert_eq!(out.status.code(), Some(0), "{v:?}");
    assert_eq!(v[0]["restored"].as_str(), Some(named.as_str()));
    assert_eq!(f.remote(0), new_for("h1"));
    assert_eq!(f.remote(1), OLD);
}

impl Fleet {
    /// Add `line` (e.g. `restart_cmd: …`) to host `name`'s inventory entry.
    fn set(&self, name: &str, line: &str) {
        let inv = std::fs::read_to_string(&self.inventory).expect("inventory");
        let inv = inv.replacen(
            &format!("  {name}:\n"),
            &format!("  {name}:\n    {line}\n"),
            1,
        );
        std::fs::write(&self.inventory, inv).expect("inventory");
    }

    fn spawn(&self, args: &[&str]) -> std::process::Child {
        let mut c = swapcfg_cmd();
        c.args(args)
            .arg("--inventory")
            .arg(&self.inventory)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c.spawn().expect("spawn")
    }

    /// Temp files or a lock beside host `i`'s config.
    fn leftovers(&self, i: usize) -> Vec<String> {
        self.hosts[i]
            .listing()
            .into_iter()
            .filter(|n| n.starts_with(".config") || n.contains("swapcfg-lock"))
            .collect()
    }
}

/// A fleet apply of every host, one at a time, JSON lines.
const ONE_AT_A_TIME: &[&str] = &[
    "apply",
    "--hosts",
    "@all",
    "--parallel",
    "1",
    "--yes",
    "--json",
];

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

fn kill(child: &std::process::Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0, "kill");
}

async fn finish(child: std::process::Child) -> std::process::Output {
    tokio::task::spawn_blocking(move || child.wait_with_output().expect("wait"))
        .await
        .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_mid_fleet_starts_no_more_hosts_and_the_running_one_rolls_back() {
    let f = Fleet::new(3, &[]).await;
    // h1 runs first (--parallel 1); its restart is slow the first time
    // (the rollback's restart is quick).
    let mark = f.dir.path().join("h1-restarting");
    let tag = format!("5.{}3", std::process::id() % 1000);
    f.set(
        "h1",
        &format!(
            "restart_cmd: \"if [ -e '{m}' ]; then exit 0; fi; : > '{m}'; sleep {tag}\"",
            m = path_str(&mark)
        ),
    );
    let child = f.spawn(ONE_AT_A_TIME);
    wait_for("h1's restart", || mark.exists()).await;
    assert_eq!(f.remote(0), new_for("h1"), "h1's new config is in place");
    let t = std::time::Instant::now();
    kill(&child, libc::SIGINT);
    let out = finish(child).await;
    assert!(
        t.elapsed() < std::time::Duration::from_secs(4),
        "did not wait for the slow restart: {:?}",
        t.elapsed()
    );
    let v = lines(&out);
    assert_eq!(
        out.status.code(),
        Some(12),
        "interrupted after the write, restored: {v:?}"
    );
    let h1 = v.iter().find(|h| h["host"] == "h1").expect("h1 line");
    assert_eq!(
        (
            h1["step"].as_str(),
            h1["report"]["rolled_back"].as_bool(),
            h1["report"]["remote_state"].as_str()
        ),
        (Some("interrupted"), Some(true), Some("old")),
        "{h1}"
    );
    for h in ["h2", "h3"] {
        let line = v.iter().find(|l| l["host"] == h).expect("host line");
        assert_eq!(line["result"], "skipped", "{line}");
    }
    let s = summary(&v);
    assert_eq!(
        (
            s["failed_hosts"].clone(),
            s["skipped_hosts"].clone(),
            s["exit"].as_u64()
        ),
        (
            serde_json::json!(["h1"]),
            serde_json::json!(["h2", "h3"]),
            Some(12)
        ),
        "{s}"
    );
    // The remote state of every host: h1 whole and old again, no temp file
    // or lock; h2 and h3 never touched.
    assert_eq!(f.remote(0), OLD);
    assert_eq!(f.leftovers(0), Vec::<String>::new());
    assert!(f.untouched(1) && f.untouched(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SIGINT: no more hosts are started"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_before_the_write_changes_no_host_and_exits_11() {
    use swapcfg_testkit::server::{FaultAction, FaultPlan, Op};
    let f = Fleet::new(3, &[]).await;
    // h1's backup (a hard link, sent behind the lock's exclusive open and
    // before the staged write) is never answered.
    let old = OLD.to_vec();
    f.hosts[0]
        .server
        .set_faults(FaultPlan::one(Op::Link, 1, FaultAction::Hang));
    let child = f.spawn(ONE_AT_A_TIME);
    wait_for("h1's backup", || f.hosts[0].server.op_count(Op::Link) >= 1).await;
    kill(&child, libc::SIGTERM);
    let out = finish(child).await;
    let v = lines(&out);
    assert_eq!(out.status.code(), Some(11), "{v:?}");
    let h1 = v.iter().find(|h| h["host"] == "h1").expect("h1 line");
    assert_eq!(
        (h1["step"].as_str(), h1["report"]["remote_state"].as_str()),
        (Some("aborted"), Some("old")),
        "{h1}"
    );
    assert_eq!(
        summary(&v)["skipped_hosts"],
        serde_json::json!(["h2", "h3"])
    );
    assert!(f.remote(0) == old, "h1 untouched");
    // The lock's record was queued behind the unanswered link; it lands
    // when the stuck connection closes, and the end-of-run sweep removes
    // it with this run's temp files.
    assert_eq!(
        f.leftovers(0),
        Vec::<String>::new(),
        "temp and lock removed"
    );
    assert!(
        f.hosts[0]
            .listing()
            .iter()
            .all(|n| !n.starts_with("config.yaml.bak-")),
        "no backup: the link was never made"
    );
    assert!(f.untouched(1) && f.untouched(2));
}

/// Run `args` with stderr on a pseudo-terminal (120 columns); stdout
/// piped. Returns the exit code, stdout, and everything the terminal got.
async fn on_a_tty(f: &Fleet, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize {
        ws_row: 40,
        ws_col: 120,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two fds into our ints; no name buffer, no
    // termios; the winsize is read only.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty");
    // SAFETY: both fds were just opened by openpty and are owned here only.
    let (mut master, slave) = unsafe {
        (
            std::fs::File::from_raw_fd(master),
            std::fs::File::from_raw_fd(slave),
        )
    };
    let mut c = swapcfg_cmd();
    c.env_remove("NO_COLOR").env("TERM", "xterm");
    for (k, v) in env {
        c.env(k, v);
    }
    c.args(args)
        .arg("--inventory")
        .arg(&f.inventory)
        .stdout(std::process::Stdio::piped())
        .stderr(slave);
    let child = c.spawn().expect("spawn");
    drop(c); // our copy of the slave: the master reads EOF (EIO) at exit
    let term = tokio::task::spawn_blocking(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // Bounded: the run is short; EIO once the child closed the slave.
        while got.len() < 1 << 20 {
            match master.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        got
    });
    let out = finish(child).await;
    let term = term.await.expect("join");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&term).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_tty_each_running_host_has_a_live_line_then_the_table() {
    let f = Fleet::new(2, &[]).await;
    // h1 restarts for a moment: its line shows the step and the time.
    f.set("h1", "restart_cmd: \"sleep 0.6\"");
    let (code, stdout, term) = on_a_tty(&f, &["apply", "--hosts", "@all", "--yes"], &[]).await;
    assert_eq!(code, Some(0), "{term}");
    assert!(stdout.is_empty(), "{stdout}");
    let live = regex::Regex::new(r"h1 +restart +\d+\.\ds").expect("regex");
    assert!(live.is_match(&term), "a live line for h1: {term:?}");
    assert!(
        term.contains("\x1b["),
        "drawn with cursor movements: {term:?}"
    );
    // The ending lines and the table as without a terminal.
    assert!(
        term.contains("h1: ok") && term.contains("h2: ok"),
        "{term:?}"
    );
    assert!(term.contains("2 hosts: 2 ok, 0 unchanged"), "{term:?}");
    let table = term.rfind("2 hosts:").expect("summary");
    let header = term.rfind("result").expect("table header");
    assert!(
        header < table && !live.is_match(&term[header..]),
        "live lines gone before the table"
    );
    assert_eq!(f.remote(0), new_for("h1"));
    // NO_COLOR on the same terminal: the plain lines only.
    f.set("h2", "restart_cmd: \"sleep 0.6\"");
    std::fs::write(f.dir.path().join("configs/h2.yaml"), OLD).expect("write");
    let (code, _, term) = on_a_tty(
        &f,
        &["apply", "--hosts", "@all", "--yes"],
        &[("NO_COLOR", "1")],
    )
    .await;
    assert_eq!(code, Some(0), "{term}");
    assert!(
        !term.contains("\x1b[") && !term.contains("restart"),
        "{term:?}"
    );
    assert!(
        term.contains("h2: ok") && term.contains("1 ok, 1 unchanged"),
        "{term:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigint_exits_at_once_naming_the_running_hosts() {
    let f = Fleet::new(2, &[]).await;
    // h1's first restart fails (→ rollback); the rollback's restart hangs.
    let mark = f.dir.path().join("h1-restarted");
    f.set(
        "h1",
        &format!(
            "restart_cmd: \"if [ -e '{m}' ]; then sleep 30; fi; : > '{m}'; exit 1\"",
            m = path_str(&mark)
        ),
    );
    let child = f.spawn(&["apply", "--hosts", "@all", "--parallel", "1", "--yes"]);
    wait_for("h1's rollback restart", || {
        f.hosts[0]
            .server
            .exec_log()
            .iter()
            .filter(|c| c.contains("h1-restarted"))
            .count()
            >= 2
    })
    .await;
    kill(&child, libc::SIGINT);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    kill(&child, libc::SIGINT);
    let t = std::time::Instant::now();
    let out = finish(child).await;
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(130));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SIGINT again: exiting at once; running: h1 (old config being restored"),
        "{err}"
    );
    // The restore (an atomic write) happened before the hanging restart;
    // h2 was never started.
    assert_eq!(f.remote(0), OLD);
    assert!(f.untouched(1));
}

#[tokio::test]
async fn a_stalled_host_delays_no_other_beyond_parallel() {
    use std::time::Duration;
    use swapcfg_testkit::server::{FaultAction, FaultPlan, Op};
    // h1 stops answering at its first file open (the read of its config):
    // the reply is withheld for 3 s, then the connection drops. With
    // --parallel 2, h1 holds one slot the whole time; h2, h3 and h4 go
    // through the other one, and every one of them finishes before h1 does.
    const STALL: Duration = Duration::from_secs(3);
    let f = Fleet::new(4, &[]).await;
    f.hosts[0].server.set_faults(FaultPlan::one(
        Op::Open,
        1,
        FaultAction::WithholdThenDrop(STALL),
    ));
    let out = f
        .run(&[
            "apply",
            "--hosts",
            "@all",
            "--parallel",
            "2",
            "--yes",
            "--json",
        ])
        .await;
    let v = lines(&out);
    assert_eq!(v.len(), 5, "one line per host and a summary: {v:?}");
    let order: Vec<&str> = v[..4]
        .iter()
        .map(|h| h["host"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        order.last(),
        Some(&"h1"),
        "the others finish while h1 stalls: {v:?}"
    );
    for h in &v[..3] {
        assert_eq!(h["result"], "ok", "{h}");
        assert!(
            h["ms"]
                .as_u64()
                .is_some_and(|ms| ms < STALL.as_millis() as u64),
            "{h}"
        );
    }
    let h1 = &v[3];
    assert_eq!(
        (h1["result"].as_str(), h1["step"].as_str()),
        (Some("failed"), Some("read")),
        "{h1}"
    );
    assert!(
        h1["ms"]
            .as_u64()
            .is_some_and(|ms| ms >= STALL.as_millis() as u64 - 100),
        "h1 failed on its own, when its connection dropped: {h1}"
    );
    let s = summary(&v);
    assert_eq!(
        (s["ok"].as_u64(), s["failed"].as_u64()),
        (Some(3), Some(1)),
        "{v:?}"
    );
    assert_eq!(s["failed_hosts"], serde_json::json!(["h1"]));
    assert_eq!(out.status.code(), s["exit"].as_u64().map(|c| c as i32));
    // Remote state: the three others hold their new file; h1 was never
    // written (no backup, temp file or lock left behind).
    for i in 1..4 {
        assert_eq!(f.remote(i), new_for(&format!("h{}", i + 1)), "host {i}");
    }
    assert!(f.untouched(0), "h1: {:?}", f.hosts[0].listing());
}
