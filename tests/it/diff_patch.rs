//! The diff preview round-trips through `patch -p0`: applying it to the old
//! file gives exactly the new bytes.

use proptest::prelude::*;
use std::process::{Command, Stdio};

use swapcfg::diff::unified_diff;

fn patch_applies(old: &[u8], new: &[u8]) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    std::fs::write(dir.path().join("config.yaml"), old).map_err(|e| e.to_string())?;
    let diff = unified_diff(old, new, "config.yaml", "config.yaml");
    if diff.is_empty() {
        return if old == new {
            Ok(())
        } else {
            Err("empty diff for different inputs".into())
        };
    }
    let mut child = Command::new("patch")
        .args(["-s", "-p0"])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().ok_or("stdin")?;
        stdin
            .write_all(diff.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "patch failed: {}\n{diff}",
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    let got = std::fs::read(dir.path().join("config.yaml")).map_err(|e| e.to_string())?;
    if got == new {
        Ok(())
    } else {
        Err(format!("patched bytes differ\n{diff}"))
    }
}

#[test]
fn edge_cases_round_trip() {
    let cases: &[(&[u8], &[u8])] = &[
        (b"", b"a\n"),
        (b"a\n", b""),
        (b"a\nb\n", b"a\nb"),
        (b"a\nb", b"a\nb\n"),
        (b"a\r\nb\r\n", b"a\nb\n"),
        (
            b"1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n13\n14\n",
            b"1\nX\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\nY\n14\n",
        ),
        (
            b"models:\n  a:\n    cmd: x\n",
            b"models:\n  a:\n    cmd: y\n  b:\n    cmd: z\n",
        ),
    ];
    for (old, new) in cases {
        patch_applies(old, new).unwrap_or_else(|e| panic!("{old:?} -> {new:?}: {e}"));
    }
}

fn lines() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        prop::sample::select(vec!["a", "b", "c", "ttl: 5", "cmd: x", ""]),
        0..30,
    )
    .prop_map(|v| v.into_iter().map(String::from).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn random_edits_round_trip(old in lines(), new in lines(), old_nl in any::<bool>(), new_nl in any::<bool>()) {
        let join = |v: &Vec<String>, nl: bool| {
            let mut s = v.join("\n");
            if nl && !v.is_empty() { s.push('\n'); }
            s.into_bytes()
        };
        let (o, n) = (join(&old, old_nl), join(&new, new_nl));
        prop_assert_eq!(patch_applies(&o, &n), Ok(()));
    }
}
