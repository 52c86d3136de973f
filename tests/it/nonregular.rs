//! Only regular files are read or replaced (after following a symlink): a
//! FIFO, a device or a link to one is refused at read by its type, without
//! being opened, and nothing hangs or gets replaced.

use std::time::Duration;

use crate::common::*;

#[tokio::test]
async fn fifo_and_devices_are_refused_by_type_in_sftp_mode() {
    let fx = fixture(|b| b).await;
    let fifo = fx.dir.path().join("fifo.yaml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let zero = fx.dir.path().join("zero.yaml");
    std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
    let null = fx.dir.path().join("null.yaml");
    std::os::unix::fs::symlink("/dev/null", &null).expect("symlink");
    let new = fx.dir.path().join("new.yaml");
    std::fs::write(&new, "models:\n  a:\n    cmd: a --port ${PORT}\n").expect("new");

    for (path, kind) in [
        (&fifo, "FIFO"),
        (&zero, "character device"),
        (&null, "character device"),
    ] {
        let p = path_str(path);
        let run = output(fx.cli(&["get", "--config-path", &p]));
        let out = tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .expect("get must not hang");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{p}: {err}");
        assert!(err.contains(kind), "{p}: {err}");

        let apply = output(fx.cli(&[
            "apply",
            &path_str(&new),
            "--config-path",
            &p,
            "--restart-cmd",
            "none",
            "--yes",
        ]));
        let out = tokio::time::timeout(Duration::from_secs(20), apply)
            .await
            .expect("apply must not hang");
        assert_eq!(
            out.status.code(),
            Some(4),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Nothing was replaced: the links still point at the devices.
    assert_eq!(
        std::fs::read_link(&null).expect("link"),
        std::path::Path::new("/dev/null")
    );
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata("/dev/null")
        .expect("null")
        .file_type()
        .is_char_device());
    assert!(std::fs::symlink_metadata(&fifo)
        .expect("fifo")
        .file_type()
        .is_fifo());
}
