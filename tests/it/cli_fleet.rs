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
    // rollback and edit still take one TARGET.
    let out = f.run(&["rollback", "--hosts", "@all", "--yes"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--hosts works with"));
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
