//! Exec channels of the test server: a forced-command script, the built-in
//! seed-style wrapper verbs, scripted commands and `/bin/sh -c` for shell
//! mode.
//!
//! Invariant: every exec ends with an exit status, EOF and close, except
//! under a `Hang` fault (which waits for the connection to close).

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::SystemTime;

use russh::server::Msg;
use russh::{Channel, ChannelMsg};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ConnCtl, FaultAction, ScriptedExec, Shared, ShellSpec};

/// Bytes of stdin the server accepts for one exec (wrapper `write`, `sh`).
const MAX_STDIN: usize = 64 * 1024 * 1024;

/// What marks a command held at a gate by the client: the shell is to
/// read one line first and run nothing unless it is `go` (exit 125). Written
/// here from the gate's contract, not taken from the client's code.
pub(crate) const GATE: &str = "read -r swapcfg_go";

/// A gate told `after CRC LEN` waits until the watched file's POSIX
/// `cksum` prints `CRC LEN`, this long at most (then 124, nothing ran).
const AFTER_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// The stderr line of a gate that waited in vain.
const GAVE_UP: &[u8] = b"swapcfg-gate-gave-up\n";

/// Wait for a gated command's line, as its shell's `read` would. `Some`
/// with the channel and the bytes read (for a shell to see again) when the
/// line is `go`, or `after CRC LEN` once the watched file (the gated
/// command's argument before the command) has that checksum — a real
/// shell started `early` does that wait itself; otherwise the command ends
/// with 125 (or 124 after waiting in vain) and nothing ran (a shell
/// started `early` sees its stdin end, as on a host).
pub(crate) async fn gate(
    mut channel: Channel<Msg>,
    command: &str,
    early: Option<&mut Early>,
) -> Option<(Channel<Msg>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut early = early;
    loop {
        let msg = match early.as_deref_mut() {
            // Looked at every 10 ms (`wait` would close its stdin).
            Some(Ok(child)) => tokio::select! {
                m = channel.wait() => m,
                () = tokio::time::sleep(std::time::Duration::from_millis(10)) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        // The shell ended before its line (its rc files
                        // exit): as on a host, the channel ends with its
                        // status and nothing past the gate ran.
                        let code = status.code().unwrap_or(1);
                        finish(&channel, u32::try_from(code).unwrap_or(1), b"", b"").await;
                        return None;
                    }
                    continue;
                }
            },
            _ => channel.wait().await,
        };
        let Some(msg) = msg else { break };
        match msg {
            ChannelMsg::Data { data } => {
                buf.extend_from_slice(&data);
                if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                    let real_shell = matches!(early, Some(Ok(_)));
                    if &buf[..nl] == b"go" {
                        if !real_shell {
                            opened(&channel).await;
                        }
                        return Some((channel, buf));
                    }
                    if let Some(want) = buf[..nl].strip_prefix(b"after ") {
                        if real_shell {
                            return Some((channel, buf));
                        }
                        let want = String::from_utf8_lossy(want).into_owned();
                        if holds(command, &want).await {
                            opened(&channel).await;
                            return Some((channel, buf));
                        }
                        finish(&channel, 124, b"", GAVE_UP).await;
                        return None;
                    }
                    break;
                }
                if buf.len() > 64 {
                    break;
                }
            }
            ChannelMsg::Eof | ChannelMsg::Close => break,
            _ => {}
        }
    }
    if let Some(Ok(child)) = early {
        drop(child.stdin.take());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), child.wait()).await;
    }
    finish(&channel, 125, b"", b"").await;
    None
}

/// What a gate writes on stderr once it lets its command run (a real
/// shell's gate writes it itself).
async fn opened(channel: &Channel<Msg>) {
    let _ = channel
        .extended_data_bytes(1, b"swapcfg-gate-open\n".to_vec())
        .await;
}

/// Whether the file a gated `command` watches comes to have the `cksum`
/// output `want` within [`AFTER_WAIT`], as the host's `cksum` computes it.
async fn holds(command: &str, want: &str) -> bool {
    let Some((rest, _command)) = super::split_last_quoted(command) else {
        return false;
    };
    let Some((_, watched)) = super::split_last_quoted(rest) else {
        return false;
    };
    let deadline = tokio::time::Instant::now() + AFTER_WAIT;
    loop {
        if let Ok(file) = std::fs::File::open(&watched) {
            let out = tokio::process::Command::new("cksum")
                .stdin(Stdio::from(file))
                .output()
                .await;
            if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == want) {
                return true;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// A shell started when its exec request came (before its gate opened).
pub(crate) type Early = std::io::Result<tokio::process::Child>;

/// Start `command` as [`run`] would in a shell, now.
pub(crate) fn spawn_shell(spec: &ShellSpec, command: &str) -> Early {
    let Some((program, args)) = spec.program.split_first() else {
        return Err(std::io::Error::other("no shell configured"));
    };
    let command = match &spec.prelude {
        Some(p) => format!("{p}\n{command}"),
        None => command.to_string(),
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .arg("-c")
        .arg(&command)
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    spawn(cmd)
}

fn spawn(mut cmd: tokio::process::Command) -> Early {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
}

/// `stdin`: bytes the client already sent (a gate's line), fed first to a
/// shell; `early`: that shell, already started.
pub(crate) async fn run(
    shared: Arc<Shared>,
    ctl: Arc<ConnCtl>,
    channel: Channel<Msg>,
    command: String,
    fault: Option<FaultAction>,
    stdin: Vec<u8>,
    early: Option<Early>,
) {
    match fault {
        Some(FaultAction::Hang) => {
            ctl.hang().await;
            return;
        }
        Some(FaultAction::Fail) => {
            finish(&channel, 1, b"", b"injected failure\n").await;
            return;
        }
        Some(FaultAction::PermissionDenied) => {
            finish(&channel, 1, b"", b"Permission denied\n").await;
            return;
        }
        Some(FaultAction::Drop) | Some(FaultAction::WithholdThenDrop(_)) => {
            ctl.drop_connection();
            return;
        }
        Some(FaultAction::DoThenDrop)
        | Some(FaultAction::DropAfterStdin(_))
        | Some(FaultAction::CloseStdinAfter(_))
        | Some(FaultAction::Slow(_))
        | None => {}
    }
    let lose_reply = fault == Some(FaultAction::DoThenDrop);
    let cut = match fault {
        Some(FaultAction::DropAfterStdin(n)) => Some(StdinCut::Drop(n, ctl.clone())),
        Some(FaultAction::CloseStdinAfter(n)) => Some(StdinCut::Close(n)),
        _ => None,
    };
    if let Some(script) = shared.forced_command.clone() {
        // As sshd runs `command="…"`: the client's command only in the
        // environment.
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg(&script).env("SSH_ORIGINAL_COMMAND", &command);
        piped(
            channel,
            spawn(cmd),
            Vec::new(),
            cut,
            lose_reply.then_some(&ctl),
        )
        .await;
    } else if let Some(config) = shared.wrapper.clone() {
        wrapper_verb(&shared, channel, command.trim(), &config).await;
    } else if let Some(script) = shared.script(&command) {
        scripted(&channel, &script).await;
    } else if shared.shell_exec {
        let child = early.unwrap_or_else(|| spawn_shell(&shared.shell, &command));
        piped(channel, child, stdin, cut, lose_reply.then_some(&ctl)).await;
    } else {
        finish(
            &channel,
            127,
            b"",
            b"exec: command not allowed on this host\n",
        )
        .await;
    }
}

/// Send stdout, stderr, the exit status, EOF and close.
async fn finish(channel: &Channel<Msg>, status: u32, stdout: &[u8], stderr: &[u8]) {
    if !stdout.is_empty() {
        let _ = channel.data_bytes(stdout.to_vec()).await;
    }
    if !stderr.is_empty() {
        let _ = channel.extended_data_bytes(1, stderr.to_vec()).await;
    }
    let _ = channel.exit_status(status).await;
    let _ = channel.eof().await;
    let _ = channel.close().await;
}

async fn scripted(channel: &Channel<Msg>, script: &ScriptedExec) {
    if !script.delay.is_zero() {
        tokio::time::sleep(script.delay).await;
    }
    if let Some(hook) = &script.hook {
        hook();
    }
    finish(channel, script.exit_status, &script.stdout, &script.stderr).await;
}

/// Read the client's stdin until EOF (bounded).
async fn read_stdin(channel: &mut Channel<Msg>) -> Result<Vec<u8>, &'static str> {
    let mut buf = Vec::new();
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } => {
                if buf.len() + data.len() > MAX_STDIN {
                    return Err("stdin too large");
                }
                buf.extend_from_slice(&data);
            }
            ChannelMsg::Eof | ChannelMsg::Close => break,
            _ => {}
        }
    }
    Ok(buf)
}

/// The forced-command wrapper: fixed verbs acting on one config path.
async fn wrapper_verb(shared: &Shared, mut channel: Channel<Msg>, verb: &str, config: &Path) {
    match verb {
        "read" => match std::fs::read(config) {
            Ok(bytes) => finish(&channel, 0, &bytes, b"").await,
            Err(e) => {
                finish(
                    &channel,
                    1,
                    b"",
                    format!("read: {}: {e}\n", config.display()).as_bytes(),
                )
                .await
            }
        },
        "backup" => match wrapper_backup(config) {
            Ok(path) => finish(&channel, 0, format!("{path}\n").as_bytes(), b"").await,
            Err(e) => finish(&channel, 1, b"", format!("backup: {e}\n").as_bytes()).await,
        },
        "write" => {
            let content = match read_stdin(&mut channel).await {
                Ok(c) => c,
                Err(e) => {
                    return finish(&channel, 1, b"", format!("write: {e}\n").as_bytes()).await
                }
            };
            match wrapper_write(config, &content) {
                Ok(()) => finish(&channel, 0, b"", b"").await,
                Err(e) => finish(&channel, 1, b"", format!("write: {e}\n").as_bytes()).await,
            }
        }
        "restart" => {
            let script = shared.script("restart").unwrap_or_default();
            scripted(&channel, &script).await;
        }
        other => {
            let msg = format!("unknown verb {other:?}; allowed: read, backup, write, restart\n");
            finish(&channel, 2, b"", msg.as_bytes()).await;
        }
    }
}

fn wrapper_backup(config: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let bytes = std::fs::read(config)?;
    let mode = std::fs::metadata(config)?.permissions().mode() & 0o7777;
    let base = format!(
        "{}.bak-{}",
        config.to_string_lossy(),
        utc_stamp(SystemTime::now())
    );
    for n in 0..100 {
        let candidate = if n == 0 {
            base.clone()
        } else {
            format!("{base}.{n}")
        };
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&candidate)
        {
            Ok(mut f) => {
                use std::io::Write;
                f.write_all(&bytes)?;
                f.sync_all()?;
                std::fs::set_permissions(&candidate, std::fs::Permissions::from_mode(mode))?;
                return Ok(candidate);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("too many backups in the same second"))
}

fn wrapper_write(config: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let target = std::fs::canonicalize(config)?;
    let mode = std::fs::metadata(&target)?.permissions().mode() & 0o7777;
    let dir = target.parent().unwrap_or(Path::new("/"));
    let tmp = dir.join(format!(".swapcfg-wrapper-{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&tmp, &target)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Where a stdin fault cuts the command's input.
enum StdinCut {
    /// After N bytes, shut the connection down.
    Drop(usize, Arc<ConnCtl>),
    /// After N bytes, close the command's stdin (discard the rest).
    Close(usize),
}

/// Run `cmd` with stdin/stdout/stderr wired to the channel (`first`, bytes
/// already read from it, fed before the rest), ending with its exit status
/// (255 for a signal); `cut` ends its stdin early; with `lose_reply` the
/// connection is dropped instead of sending the status.
async fn piped(
    channel: Channel<Msg>,
    child: Early,
    first: Vec<u8>,
    cut: Option<StdinCut>,
    lose_reply: Option<&Arc<ConnCtl>>,
) {
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            finish(&channel, 127, b"", format!("sh: {e}\n").as_bytes()).await;
            return;
        }
    };
    let (mut reader, writer) = channel.split();
    let mut stdin = child.stdin.take();
    let feed = async move {
        let mut fed = 0usize;
        if let Some(s) = stdin.as_mut() {
            if s.write_all(&first).await.is_err() {
                stdin = None;
            }
        }
        while let Some(msg) = reader.wait().await {
            match msg {
                ChannelMsg::Data { data } => {
                    let limit = match &cut {
                        Some(StdinCut::Drop(n, _)) | Some(StdinCut::Close(n)) => *n,
                        None => usize::MAX,
                    };
                    let take = data.len().min(limit.saturating_sub(fed));
                    if let Some(s) = stdin.as_mut() {
                        if s.write_all(&data[..take]).await.is_err() {
                            stdin = None;
                        }
                    }
                    fed += take;
                    if take < data.len() {
                        match &cut {
                            Some(StdinCut::Drop(_, ctl)) => {
                                drop(stdin.take());
                                ctl.drop_connection();
                            }
                            _ => drop(stdin.take()),
                        }
                    }
                }
                ChannelMsg::Eof | ChannelMsg::Close => break,
                _ => {}
            }
        }
        drop(stdin);
    };
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let pump_out = async {
        if let Some(out) = out.as_mut() {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = out.read(&mut buf).await {
                if n == 0 || writer.data_bytes(buf[..n].to_vec()).await.is_err() {
                    break;
                }
            }
        }
    };
    let pump_err = async {
        if let Some(err) = err.as_mut() {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = err.read(&mut buf).await {
                if n == 0
                    || writer
                        .extended_data_bytes(1, buf[..n].to_vec())
                        .await
                        .is_err()
                {
                    break;
                }
            }
        }
    };
    tokio::spawn(feed);
    tokio::join!(pump_out, pump_err);
    let status = match child.wait().await {
        Ok(s) => s.code().map(|c| c as u32).unwrap_or(255),
        Err(_) => 255,
    };
    if let Some(ctl) = lose_reply {
        ctl.drop_connection();
        return;
    }
    let _ = writer.exit_status(status).await;
    let _ = writer.eof().await;
    let _ = writer.close().await;
}

/// `YYYYMMDDTHHMMSSZ` for `t`, computed here independently of the client's
/// own naming code (a test double must not reuse what it checks): walks the
/// calendar year by year and month by month.
pub(crate) fn utc_stamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut days = secs / 86_400;
    let rem = secs % 86_400;
    let leap = |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    let mut year = 1970u64;
    loop {
        let len = if leap(year) { 366 } else { 365 };
        if days < len {
            break;
        }
        days -= len;
        year += 1;
    }
    let lengths = [
        31,
        if leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let mut month = 1u64;
    for len in lengths {
        if days < len {
            break;
        }
        days -= len;
        month += 1;
    }
    format!(
        "{year:04}{month:02}{:02}T{:02}{:02}{:02}Z",
        days + 1,
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::utc_stamp;
    use std::time::{Duration, SystemTime};

    #[test]
    fn stamps() {
        let at = |s| utc_stamp(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "19700101T000000Z");
        assert_eq!(at(951_825_600), "20000229T120000Z");
        assert_eq!(at(1_764_034_445), "20251125T013405Z");
        assert_eq!(at(4_102_444_799), "20991231T235959Z");
        assert_eq!(at(4_107_542_399), "21000228T235959Z");
    }
}
