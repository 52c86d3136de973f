//! Backups that can be trusted: only names swapcfg makes are listed, pruned
//! or chosen; the backup just made is never pruned; `rollback` says which
//! backup it chose.

use crate::common::*;
use swapcfg_testkit::server::ScriptedExec;

const OLD: &[u8] = b"models:\n  a:\n    cmd: a --port ${PORT}\n";
const V2: &[u8] = b"models:\n  b:\n    cmd: b --port ${PORT}\n";
const V3: &[u8] = b"models:\n  c:\n    cmd: c --port ${PORT}\n";

#[tokio::test]
async fn hand_made_bak_files_are_never_pruned_or_chosen() {
    let fx = fixture(|b| b.restart_script("ok", ScriptedExec::default())).await;
    let cfg = path_str(&fx.config("config.yaml", OLD, 0o640));
    // Hand-made files that sort after swapcfg's timestamps.
    for (name, body) in [
        ("config.yaml.bak-old", &b"hand-made old\n"[..]),
        ("config.yaml.bak-manual", b"hand-made manual\n"),
        ("config.yaml.bak-zzz", b"zzz\n"),
    ] {
        std::fs::write(fx.dir.path().join(name), body).expect("hand-made");
    }
    for (i, body) in [V2, V3].iter().enumerate() {
        let f = fx.dir.path().join(format!("v{i}.yaml"));
        std::fs::write(&f, body).expect("new");
        let out = output(fx.cli(&[
            "apply",
            &path_str(&f),
            "--config-path",
            &cfg,
            "--restart-cmd",
            "ok",
            "--keep-backups",
            "0",
            "--yes",
            "--json",
        ]))
        .await;
        let v = json_of(&out);
        assert_eq!(out.status.code(), Some(0), "{v}");
        let fresh = v["backup_path"].as_str().expect("backup").to_string();
        assert!(
            std::path::Path::new(&fresh).exists(),
            "--keep-backups 0 never deletes the backup just made: {v}"
        );
    }
    let listing = fx.listing();
    for name in [
        "config.yaml.bak-old",
        "config.yaml.bak-manual",
        "config.yaml.bak-zzz",
    ] {
        assert!(
            listing.contains(&name.to_string()),
            "{name} untouched: {listing:?}"
        );
    }
    let ours: Vec<&String> = listing
        .iter()
        .filter(|n| n.starts_with("config.yaml.bak-2"))
        .collect();
    assert_eq!(
        ours.len(),
        1,
        "only the newest swapcfg backup is kept: {listing:?}"
    );

    // `backups` lists only swapcfg's names.
    let out = output(fx.cli(&["backups", "--config-path", &cfg, "--json"])).await;
    let v = json_of(&out);
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");

    // `rollback` picks the newest swapcfg backup (V2's bytes), not .bak-zzz,
    // and says which.
    let out = output(fx.cli(&[
        "rollback",
        "--config-path",
        &cfg,
        "--restart-cmd",
        "ok",
        "--yes",
    ]))
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("restoring") && err.contains(ours[0].as_str()),
        "{err}"
    );
    assert_eq!(std::fs::read(&cfg).expect("cfg"), V2);
    // A hand-made name is refused as a backup to restore.
    let out = output(fx.cli(&[
        "rollback",
        &format!("{cfg}.bak-old"),
        "--config-path",
        &cfg,
        "--restart-cmd",
        "ok",
        "--yes",
    ]))
    .await;
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&cfg).expect("cfg"), V2, "nothing changed");
}
