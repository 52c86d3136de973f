//! `RemoteOps` as POSIX shell commands over exec channels, for hosts with no
//! SFTP subsystem (dropbear, busybox).
//!
//! Owns: the shell scripts for each operation and the quoting that makes any
//! file name safe in them. One exec round trip per operation.
//!
//! Invariants: every path reaches the shell single-quoted by [`quote`];
//! writes go to a temp file in the target's directory and are moved over the
//! (symlink-resolved) target with `mv -f`; backups use `set -C` so they never
//! clobber a file; a failed write removes its temp file (shell `trap`); the
//! temp file is synced (`sync FILE`, or a global `sync` on busybox) before `mv`.

use std::time::{Duration, SystemTime};

use super::{backup_path, BackupEntry, RemoteError, RemoteFile, RemoteOptions, RestartOutcome};
use crate::transport::{Session, TransportError};

/// Quote `s` for POSIX sh: `'…'`, with `'` written as `'\''`.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

// Exit codes the scripts use to say what went wrong.
const E_NOENT: u32 = 66;
const E_ACCES: u32 = 67;
const E_ISDIR: u32 = 68;
const E_TOOBIG: u32 = 69;

/// Shell implementation of [`super::RemoteOps`] for one config path.
pub struct ShellRemote<'s> {
    session: &'s Session,
    path: String,
    opts: RemoteOptions,
}

impl<'s> ShellRemote<'s> {
    pub fn new(session: &'s Session, config_path: &str, opts: RemoteOptions) -> Self {
        ShellRemote {
            session,
            path: config_path.to_string(),
            opts,
        }
    }

    async fn run(
        &self,
        op: &'static str,
        script: &str,
        stdin: Option<&[u8]>,
        cap: usize,
    ) -> Result<(u32, Vec<u8>, String), RemoteError> {
        let timeout = self.session.op_timeout();
        let out = self
            .session
            .exec(script, stdin, timeout, cap)
            .await
            .map_err(|e| transport_err(op, timeout, e))?;
        let status = out.status.unwrap_or(255);
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if out.truncated && status == 0 {
            return Err(RemoteError::Failed {
                op,
                message: "output larger than expected".into(),
            });
        }
        Ok((status, out.stdout, stderr))
    }

    async fn read_path(&self, path: &str) -> Result<RemoteFile, RemoteError> {
        let script = format!(
            "p={p}; if [ -d \"$p\" ]; then exit {E_ISDIR}; fi; \
             if [ ! -e \"$p\" ]; then exit {E_NOENT}; fi; \
             if [ ! -r \"$p\" ]; then exit {E_ACCES}; fi; \
             s=$(wc -c < \"$p\") || exit 1; s=$((s+0)); \
             if [ \"$s\" -gt {max} ]; then echo \"$s\" >&2; exit {E_TOOBIG}; fi; \
             m=$(stat -L -c %a \"$p\" 2>/dev/null || echo -); printf '%s\\n' \"$m\"; exec cat -- \"$p\"",
            p = quote(path),
            max = self.opts.max_size,
        );
        let cap = self.opts.max_size as usize + 64;
        let (status, stdout, stderr) = self.run("read", &script, None, cap).await?;
        match status {
            0 => {}
            E_NOENT => return Err(RemoteError::NotFound { path: path.into() }),
            E_ACCES => return Err(RemoteError::PermissionDenied { path: path.into() }),
            E_ISDIR => return Err(RemoteError::IsDirectory { path: path.into() }),
            E_TOOBIG => {
                return Err(RemoteError::TooLarge {
                    path: path.into(),
                    size: stderr.parse().unwrap_or(0),
                    limit: self.opts.max_size,
                })
            }
            s => {
                return Err(RemoteError::Failed {
                    op: "read",
                    message: format!("{path}: exit {s}: {stderr}"),
                })
            }
        }
        let nl = stdout
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| RemoteError::Failed {
                op: "read",
                message: "malformed reply from the read script".into(),
            })?;
        let mode = std::str::from_utf8(&stdout[..nl])
            .ok()
            .and_then(|m| u32::from_str_radix(m, 8).ok());
        let bytes = stdout[nl + 1..].to_vec();
        if bytes.len() as u64 > self.opts.max_size {
            return Err(RemoteError::TooLarge {
                path: path.into(),
                size: bytes.len() as u64,
                limit: self.opts.max_size,
            });
        }
        Ok(RemoteFile {
            bytes,
            mode,
            owner: None,
        })
    }
}

fn transport_err(op: &'static str, after: Duration, e: TransportError) -> RemoteError {
    match e {
        TransportError::Timeout { .. } => RemoteError::Timeout { op, after },
        TransportError::Disconnected { message, .. } => RemoteError::Disconnected { op, message },
        other => RemoteError::Failed {
            op,
            message: other.to_string(),
        },
    }
}

fn mode_arg(mode: Option<u32>) -> String {
    mode.map(|m| format!("chmod {:o} \"$t\" || exit 1;", m & 0o7777))
        .unwrap_or_default()
}

impl super::RemoteOps for ShellRemote<'_> {
    async fn read(&self) -> Result<RemoteFile, RemoteError> {
        self.read_path(&self.path).await
    }

    async fn backup(&self, current: &RemoteFile, now: SystemTime) -> Result<String, RemoteError> {
        let script = format!(
            "umask 077; b={b}; t=\"$b\"; n=0; \
             while [ -e \"$t\" ] || [ -L \"$t\" ]; do n=$((n+1)); [ $n -gt 99 ] && exit 1; t=\"$b.$n\"; done; \
             set -C; cat > \"$t\" || exit 1; {chmod} printf '%s\\n' \"$t\"",
            b = quote(&backup_path(&self.path, now)),
            chmod = mode_arg(current.mode),
        );
        let (status, stdout, stderr) = self
            .run("backup", &script, Some(&current.bytes), 8192)
            .await?;
        if status != 0 {
            return Err(RemoteError::Failed {
                op: "backup",
                message: format!("exit {status}: {stderr}"),
            });
        }
        let path = String::from_utf8_lossy(&stdout)
            .trim_end_matches('\n')
            .to_string();
        super::check_backup_path(&self.path, &path)?;
        Ok(path)
    }

    async fn lock(
        &self,
        _me: &super::LockInfo,
        _now: u64,
        _force: bool,
    ) -> Result<super::LockTaken, RemoteError> {
        Err(RemoteError::Unsupported {
            op: "lock",
            why: "not yet in shell mode".into(),
            instead: None,
        })
    }

    async fn unlock(&self, _me: &super::LockInfo) -> Result<(), RemoteError> {
        Ok(())
    }

    async fn write(
        &self,
        content: &[u8],
        like: &RemoteFile,
        _expect: Option<&str>,
    ) -> Result<(), RemoteError> {
        let mode = like.mode;
        let script = format!(
            "p={p}; r=\"$p\"; if [ -L \"$p\" ]; then r=$(readlink -f -- \"$p\") || exit 1; fi; \
             m={m}; if [ -z \"$m\" ] && [ -e \"$r\" ]; then m=$(stat -c %a \"$r\" 2>/dev/null); fi; \
             d=$(dirname -- \"$r\"); t=\"$d/.$(basename -- \"$r\").swapcfg-$$.tmp\"; \
             umask 077; trap 'rm -f -- \"$t\"' EXIT; set -C; cat > \"$t\" || exit 1; \
             if [ -n \"$m\" ]; then chmod \"$m\" \"$t\" || exit 1; fi; \
             sync -- \"$t\" 2>/dev/null || sync; \
             mv -f -- \"$t\" \"$r\" || exit 1; trap - EXIT",
            p = quote(&self.path),
            m = mode.map(|m| format!("{:o}", m & 0o7777)).unwrap_or_default(),
        );
        let (status, _, stderr) = self.run("write", &script, Some(content), 8192).await?;
        if status != 0 {
            return Err(RemoteError::Failed {
                op: "write",
                message: format!("{}: exit {status}: {stderr}", self.path),
            });
        }
        Ok(())
    }

    async fn restart(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<RestartOutcome, RemoteError> {
        super::run_restart(self.session, command, timeout).await
    }

    async fn list_backups(&self) -> Result<Vec<BackupEntry>, RemoteError> {
        let (dir, name) = match self.path.rfind('/') {
            Some(i) => (&self.path[..i.max(1)], &self.path[i + 1..]),
            None => (".", self.path.as_str()),
        };
        let script = format!(
            "for f in {d}/{pre}*; do [ -f \"$f\" ] && printf '%s %s\\n' \"$(wc -c < \"$f\")\" \"$f\"; done; exit 0",
            d = quote(dir),
            pre = quote(&format!("{name}.bak-")),
        );
        let (status, stdout, stderr) = self
            .run("list backups", &script, None, crate::limits::MAX_LISTING)
            .await?;
        if status != 0 {
            return Err(RemoteError::Failed {
                op: "list backups",
                message: stderr,
            });
        }
        let out: Vec<BackupEntry> = String::from_utf8_lossy(&stdout)
            .lines()
            .filter_map(|l| {
                let (size, path) = l.trim_start().split_once(' ')?;
                Some(BackupEntry {
                    path: path.to_string(),
                    size: size.trim().parse().ok()?,
                    mtime: None,
                })
            })
            .filter(|b| super::check_backup_path(&self.path, &b.path).is_ok())
            .collect();
        Ok(super::order_backups(&self.path, out))
    }

    async fn read_backup(&self, path: &str) -> Result<RemoteFile, RemoteError> {
        super::check_backup_path(&self.path, path)?;
        self.read_path(path).await
    }

    async fn remove_backup(&self, path: &str) -> Result<(), RemoteError> {
        super::check_backup_path(&self.path, path)?;
        let (status, _, stderr) = self
            .run(
                "remove backup",
                &format!("rm -f -- {}", quote(path)),
                None,
                8192,
            )
            .await?;
        if status != 0 {
            return Err(RemoteError::Failed {
                op: "remove backup",
                message: stderr,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::quote;
    use proptest::prelude::*;

    fn sh_echo(s: &str) -> Vec<u8> {
        std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("printf %s {}", quote(s)))
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default()
    }

    #[test]
    fn quoting_survives_the_shell() {
        for s in [
            "plain",
            "with space",
            "it's",
            "'",
            "''",
            "-n",
            "$(rm -rf /)",
            "`x`",
            "a\nb",
            "\\",
            "*",
        ] {
            assert_eq!(sh_echo(s), s.as_bytes(), "{s:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn quoting_round_trips(s in "[^\u{0}]{0,40}") {
            prop_assert_eq!(sh_echo(&s), s.as_bytes());
        }
    }
}
