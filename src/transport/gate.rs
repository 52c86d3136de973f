//! The gate a primed command waits at on the host, and the command line
//! that runs a command in a process group of its own.
//!
//! Owns: what the host's `sh` is sent for [`super::Session::exec_group`]
//! (the process-group wrapper and its `swapcfg-pgid` line), the gate's
//! protocol (one line on stdin: `go`, or `after CRC LEN` — wait until the
//! watched file's POSIX `cksum` is that), and that checksum computed here
//! (shell mode checks its uploads with the same function).
//!
//! Architecture invariant: nothing past a gate runs unless its line came
//! and (for `after`) the watched file held exactly the bytes it names; the
//! end of stdin, any other line, or a wait past [`AFTER_WAIT`] ends the
//! shell having run nothing (exit 125, or 124 with [`GAVE_UP`]).

/// The line that opens a primed command's gate at once.
pub(crate) const GATE_OPEN: &[u8; 3] = b"go\n";

/// The first stderr line of a gate that waited for the watched file in
/// vain (it then exits 124 having run nothing).
pub(crate) const GAVE_UP: &str = "swapcfg-gate-gave-up";

/// The stderr line a gate writes once it lets the command run: a channel
/// that ends without it ran nothing past the gate (the waiting shell ended
/// first), whatever its exit status.
pub(crate) const OPENED: &str = "swapcfg-gate-open";

/// How long a gate told `after …` polls the watched file (150 polls 20 ms
/// apart; a `sleep` without fractions counts as 50 of them).
pub const AFTER_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// The gate's script; `$1` is the watched file (then shifted away).
const GATE: &str = r#"IFS= read -r swapcfg_go || exit 125
case $swapcfg_go in
go) ;;
"after "*)
  swapcfg_n=0
  until [ "after $(cksum < "$1" 2>/dev/null)" = "$swapcfg_go" ]; do
    swapcfg_n=$((swapcfg_n + 1))
    if [ "$swapcfg_n" -gt 150 ]; then echo swapcfg-gate-gave-up >&2; exit 124; fi
    sleep 0.02 2>/dev/null || { sleep 1; swapcfg_n=$((swapcfg_n + 49)); }
  done ;;
*) exit 125 ;;
esac
echo swapcfg-gate-open >&2
shift
"#;

/// The command line [`super::Session::exec_group`] sends: `command` (a
/// POSIX `sh` command line) in its own process group (`setsid` where
/// present); the inner shell prints its pid (= its process group when
/// setsid ran) on stderr first, then becomes the command. `gated` (the
/// watched file): first wait at the gate (see the module doc).
pub(crate) fn group_command(command: &str, gated: Option<&str>) -> String {
    let inner = "printf 'swapcfg-pgid %s\\n' \"$$\" >&2; exec /bin/sh -c \"$1\"";
    let group = format!(
        "if command -v setsid >/dev/null 2>&1; then setsid /bin/sh -c {i} swapcfg \"$1\" & else /bin/sh -c {i} swapcfg \"$1\" & fi; wait $!",
        i = sh_quote(inner)
    );
    match gated {
        None => format!(
            "/bin/sh -c {} swapcfg {}",
            sh_quote(&group),
            sh_quote(command)
        ),
        Some(watched) => format!(
            "/bin/sh -c {} swapcfg {} {}",
            sh_quote(&format!("{GATE}{group}")),
            sh_quote(watched),
            sh_quote(command)
        ),
    }
}

/// The gate line that lets the command run once the watched file holds
/// `content`.
pub(crate) fn after_line(content: &[u8]) -> String {
    let (crc, len) = posix_cksum(content);
    format!("after {crc} {len}\n")
}

/// `'…'` for POSIX sh, with `'` written as `'\''`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// CRC-32 (polynomial 0x04C11DB7, most significant bit first), one table
/// row per byte value.
const TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u32) << 24;
        let mut k = 0;
        while k < 8 {
            c = if c & 0x8000_0000 != 0 {
                (c << 1) ^ 0x04C1_1DB7
            } else {
                c << 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

fn crc_step(crc: u32, byte: u8) -> u32 {
    (crc << 8) ^ TABLE[((crc >> 24) ^ u32::from(byte)) as usize]
}

/// What POSIX `cksum` prints for `bytes`: the CRC of the bytes followed by
/// their length (least significant byte first, no trailing zero bytes),
/// complemented; and the length.
pub fn posix_cksum(bytes: &[u8]) -> (u32, u64) {
    let mut crc = bytes.iter().fold(0u32, |c, &b| crc_step(c, b));
    let mut n = bytes.len() as u64;
    while n != 0 {
        crc = crc_step(crc, n as u8);
        n >>= 8;
    }
    (!crc, bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    fn system_cksum(bytes: &[u8]) -> String {
        let mut child = Command::new("cksum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("cksum runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(bytes)
            .expect("write");
        let out = child.wait_with_output().expect("cksum output");
        String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_string()
    }

    #[test]
    fn the_checksum_is_the_one_cksum_prints() {
        // Values from POSIX `cksum` (GNU coreutils) on stdin, then the
        // machine's own `cksum` on sizes around the length's byte counts.
        assert_eq!(posix_cksum(b""), (4_294_967_295, 0));
        assert_eq!(posix_cksum(b"hello"), (3_287_646_509, 5));
        let mut seed = 0x9e37_79b9_u32;
        let mut sizes = vec![0, 1, 2, 255, 256, 257, 65_535, 65_536, 70_001];
        sizes.push(3 * 1024 * 1024 + 7);
        for size in sizes {
            let bytes: Vec<u8> = (0..size)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            let (crc, len) = posix_cksum(&bytes);
            assert_eq!(format!("{crc} {len}"), system_cksum(&bytes), "size {size}");
        }
    }

    #[test]
    fn a_gated_command_names_the_watched_file_before_the_command() {
        let line = group_command("systemctl restart llama-swap", Some("/etc/it's.yaml"));
        assert!(line.contains("read -r swapcfg_go"));
        assert!(line.ends_with("swapcfg '/etc/it'\\''s.yaml' 'systemctl restart llama-swap'"));
        assert!(!group_command("true", None).contains("swapcfg_go"));
    }

    /// The gate run by the machine's own `sh`: it runs the command only
    /// once the file holds the bytes named; a wrong or missing line, or a
    /// file that never gets them, runs nothing.
    #[test]
    fn the_gate_runs_the_command_only_after_the_file_holds_the_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let watched = dir.path().join("config.yaml");
        let mark = dir.path().join("ran");
        std::fs::write(&watched, b"old\n").expect("write");
        let command = format!("echo ran > '{}'", mark.display());
        let script = group_command(&command, Some(&watched.display().to_string()));
        let run = |stdin: &[u8]| {
            let mut child = Command::new("/bin/sh")
                .arg("-c")
                .arg(&script)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("sh");
            let mut input = child.stdin.take().expect("stdin");
            input.write_all(stdin).expect("line");
            drop(input);
            child
        };
        // Nothing, or any other line: 125, nothing ran.
        for line in [&b""[..], b"stop\n"] {
            let out = run(line).wait_with_output().expect("exit");
            assert_eq!(out.status.code(), Some(125));
            assert!(!mark.exists());
        }
        // The file never gets the bytes: gives up, 124, nothing ran.
        let t = std::time::Instant::now();
        let out = run(after_line(b"new\n").as_bytes())
            .wait_with_output()
            .expect("exit");
        assert_eq!(out.status.code(), Some(124));
        assert!(String::from_utf8_lossy(&out.stderr).starts_with(GAVE_UP));
        assert!(t.elapsed() >= AFTER_WAIT / 2, "{:?}", t.elapsed());
        assert!(!mark.exists());
        // The bytes arrive (renamed into place) after the line: it runs.
        let child = run(after_line(b"new\n").as_bytes());
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!mark.exists(), "ran before the file held the bytes");
        let tmp = dir.path().join(".config.yaml.tmp");
        std::fs::write(&tmp, b"new\n").expect("write");
        std::fs::rename(&tmp, &watched).expect("rename");
        let out = child.wait_with_output().expect("exit");
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert_eq!(std::fs::read(&mark).expect("ran"), b"ran\n");
    }
}
