//! `RemoteOps` as POSIX shell commands over exec channels, for hosts with no
//! SFTP subsystem (dropbear, busybox).
//!
//! Owns: the shell scripts for each operation, the quoting that makes any
//! file name safe in them, and the mapping of their exit codes to
//! [`RemoteError`]. One exec round trip per operation (two for a contended
//! lock).
//!
//! Invariants (the [`super`] contract, in shell terms):
//! * every value reaches the shell single-quoted by [`quote`];
//! * nothing unbounded runs: a path is tested with `[ -f ]` (after following
//!   a symlink) before anything opens it, so a FIFO or a device is refused by
//!   type ([`RemoteError::NotRegular`]) and never read; file bytes are read
//!   with `head -c` (max + 1); sizes come from `stat`, else from `wc -c` on a
//!   file already known to be regular;
//! * new bytes (config or backup) go to a temp file made by `mktemp` in the
//!   destination's directory (`O_EXCL`, random name, mode 0600, ours), which
//!   is opened once as fd 3 and checked to be that same regular file, ours,
//!   with one link; on Linux every later step (write, hash, chown, chmod, sync) goes
//!   through `/proc/self/fd/3`, so no planted or swapped name is ever
//!   followed, and nothing but that temp file is ever chmod'ed or chown'ed
//!   (without `/proc`, each step re-checks the name is still a regular file
//!   and not a symlink);
//! * before a temp file is given its name, its length and digest are checked
//!   against what the client sent: `sha256sum` where the host has it, else
//!   POSIX `cksum` (CRC-32 and length, computed by [`cksum`] on the client);
//!   a host with neither is refused ([`RemoteError::Unsupported`]). A short or
//!   missing input (dropped connection, killed client, full disk) is
//!   [`RemoteError::Incomplete`] and never reaches the rename;
//! * the temp file is synced and given the old owner, group and mode (chown,
//!   then chmod); a refused chown is accepted only when the file already has
//!   that owner and group, else the write fails with nothing replaced (for a
//!   backup, group and other bits are dropped instead);
//! * the compare-and-swap hashes the target right before `mv` (same digest
//!   tool; with `cksum`, the expected CRC is known only for bytes this remote
//!   has seen, else the write is refused);
//! * a symlinked config is resolved with `readlink -f` plus a sentinel, so a
//!   target name ending in newlines is kept exactly; the link stays a link;
//! * backups are linked (`ln`, which never replaces anything) from the
//!   complete temp file to the first free name of `<config>.bak-STAMP`,
//!   `.1` … `.99`; the lock is linked the same way, so both are exclusive
//!   even against planted symlinks;
//! * a failed script removes its temp file (an `EXIT` trap; `HUP`, `INT`,
//!   `PIPE` and `TERM` exit through it) and drains its stdin.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::{
    backup_path, names, BackupEntry, LockInfo, LockTaken, Mode, RemoteError, RemoteFile,
    RemoteOptions, RestartOutcome,
};
use crate::transport::gate::posix_cksum as cksum;
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
const E_FIFO: u32 = 71;
const E_CHR: u32 = 72;
const E_BLK: u32 = 73;
const E_SOCK: u32 = 74;
const E_ODD: u32 = 75;
const E_CHANGED: u32 = 76;
const E_INCOMPLETE: u32 = 77;
const E_LOCKED: u32 = 78;
const E_NOHASH: u32 = 79;
const E_TEMP: u32 = 80;
const E_RESOLVE: u32 = 81;
const E_TEMPGONE: u32 = 82;
const E_OWNER: u32 = 83;
const E_NAMES: u32 = 84;

/// Shell functions every script starts with. Their own variables start
/// with `_`; the scripts' variables never do.
///
/// `fail CODE [TEXT]`: print TEXT on stdout, drain stdin (so the client's
/// upload always completes), exit CODE. `regular P`: fail unless P is a
/// regular file after following links, naming what it is by exit code.
/// `cap N P`: at most N bytes of P.
const LIB: &str = r#"NL='
'
fail() { _c=$1; shift; if [ $# -gt 0 ]; then printf '%s\n' "$*"; fi; cat >/dev/null 2>&1; exit "$_c"; }
has() { command -v "$1" >/dev/null 2>&1; }
cap() { if head -c 0 </dev/null >/dev/null 2>&1; then head -c "$1" -- "$2"; else dd if="$2" bs="$1" count=1 2>/dev/null; fi; }
regular() {
  if [ -d "$1" ]; then fail 68; fi
  if [ -f "$1" ]; then return 0; fi
  if [ ! -e "$1" ]; then fail 66; fi
  if [ -p "$1" ]; then fail 71; elif [ -c "$1" ]; then fail 72; elif [ -b "$1" ]; then fail 73; elif [ -S "$1" ]; then fail 74; fi
  fail 75
}
dir_of() { case $1 in */*) D=${1%/*}; [ -n "$D" ] || D=/ ;; *) D=. ;; esac; }
"#;

/// Shell functions of the scripts that create files.
///
/// `new_temp DIR`: mktemp in DIR, opened as fd 3 and checked to be a
/// regular file of ours with one link; `g` is the name later steps use
/// (`/proc/self/fd/3` when the host has it and it is that same file).
/// `ours`: without `/proc`, re-check the temp name before using it.
/// `hashtool`: pick sha256sum, else cksum. `fill N SHA CKSUM`: stdin into the
/// temp file, then check length and digest. `perm OWNER MODE STRICT`: chown
/// then chmod. `flush`: sync the temp file.
const TEMP_LIB: &str = r#"t=
trap '[ -z "$t" ] || rm -f -- "$t"' EXIT
trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 141' PIPE; trap 'exit 143' TERM
umask 077
ours() { if [ "$g" = "$t" ]; then { [ -f "$t" ] && [ ! -L "$t" ]; } || fail 82; fi; }
new_temp() {
  [ -w "$1" ] || fail 67
  t=$(mktemp -- "$1/.swapcfg-XXXXXXXXXX") || fail 80
  command exec 3<>"$t" || fail 80
  g=$t
  _a=$(stat -c '%d:%i:%u:%h' -- "$t" 2>/dev/null) || _a=
  _b=$(stat -L -c '%d:%i:%u:%h' /proc/self/fd/3 2>/dev/null) || _b=
  if [ -n "$_b" ]; then [ "$_a" = "$_b" ] || fail 82; g=/proc/self/fd/3; fi
  if [ -n "$_a" ]; then
    _u=$(id -u 2>/dev/null) || _u=
    case $_a in *:${_u:-*}:1) ;; *) fail 82 ;; esac
  fi
  ours
}
hashtool() { if has sha256sum; then how=sha256; elif has cksum; then how=cksum; else fail 79; fi; }
fill() {
  _n=$1; _h=$2; _k=$3
  cat >&3; _w=$?
  [ "$_w" -eq 0 ] || cat >/dev/null 2>&1
  _got=$(wc -c < "$g") || fail 1
  _got=$((_got + 0))
  [ "$_got" = "$_n" ] || fail 77 "$_got"
  if [ "$how" = sha256 ]; then
    _x=$(sha256sum < "$g") || fail 1; _x=${_x%% *}
    [ "$_x" = "$_h" ] || fail 77 "$_got"
  else
    _x=$(cksum < "$g") || fail 1; set -- $_x
    [ "$1 $2" = "$_k" ] || fail 77 "$_got"
  fi
}
perm() {
  _m=$2
  if [ -n "$1" ]; then
    ours
    if ! chown "${1% *}:${1#* }" "$g" 2>/dev/null; then
      _now=$(stat -L -c '%u %g' -- "$g" 2>/dev/null) || _now=
      if [ "$_now" != "$1" ]; then
        [ -z "$3" ] || fail 83 "$_now"
        [ -z "$_m" ] || _m=$(printf '%o' $((0$_m & 0700)))
      fi
    fi
  fi
  if [ -n "$_m" ]; then ours; chmod "$_m" "$g" || fail 1; fi
}
flush() { ours; sync -- "$g" 2>/dev/null || sync; }
"#;

/// Shell implementation of [`super::RemoteOps`] for one config path.
pub struct ShellRemote<'s> {
    session: &'s Session,
    path: String,
    opts: RemoteOptions,
    /// sha256 → `cksum` line of bytes this remote has read or written: the
    /// compare-and-swap's expected value on hosts without `sha256sum`.
    seen: Mutex<Vec<(String, String)>>,
}

/// What a script run returned: exit status, stdout, trimmed stderr.
struct Reply {
    status: u32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Reply {
    /// The first line of stdout.
    fn line(&self) -> String {
        let end = self
            .stdout
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(self.stdout.len());
        String::from_utf8_lossy(&self.stdout[..end]).into_owned()
    }
}

impl<'s> ShellRemote<'s> {
    pub fn new(session: &'s Session, config_path: &str, opts: RemoteOptions) -> Self {
        ShellRemote {
            session,
            path: config_path.to_string(),
            opts,
            seen: Mutex::new(Vec::new()),
        }
    }

    async fn run(
        &self,
        op: &'static str,
        script: &str,
        stdin: Option<&[u8]>,
        cap: usize,
    ) -> Result<Reply, RemoteError> {
        let timeout = self.session.op_timeout();
        let out = self
            .session
            .exec(script, stdin, timeout, cap)
            .await
            .map_err(|e| transport_err(op, timeout, e))?;
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let Some(status) = out.status else {
            return Err(RemoteError::Disconnected {
                op,
                message: format!(
                    "the remote shell ended without an exit status (connection lost or shell killed){}",
                    if stderr.is_empty() {
                        String::new()
                    } else {
                        format!(": {stderr}")
                    }
                ),
            });
        };
        if out.truncated && status == 0 {
            return Err(RemoteError::Failed {
                op,
                message: "output larger than expected".into(),
            });
        }
        Ok(Reply {
            status,
            stdout: out.stdout,
            stderr,
        })
    }

    /// Remember the digests of `bytes` (for the `cksum` compare-and-swap).
    fn remember(&self, bytes: &[u8]) -> (String, String) {
        let sha = sha256_hex(bytes);
        let ck = cksum_line(bytes);
        if let Ok(mut seen) = self.seen.lock() {
            if !seen.iter().any(|(s, _)| *s == sha) {
                if seen.len() >= 8 {
                    seen.remove(0);
                }
                seen.push((sha.clone(), ck.clone()));
            }
        }
        (sha, ck)
    }

    /// The `cksum` line of the bytes whose sha256 is `sha`, if known.
    fn cksum_for(&self, sha: &str, like: &RemoteFile) -> Option<String> {
        if sha256_hex(&like.bytes) == sha {
            return Some(cksum_line(&like.bytes));
        }
        self.seen
            .lock()
            .ok()?
            .iter()
            .find(|(s, _)| s == sha)
            .map(|(_, c)| c.clone())
    }

    async fn read_path(&self, path: &str) -> Result<RemoteFile, RemoteError> {
        let cap = self.opts.max_size as usize + 128;
        let reply = self.run("read", &self.read_script(path), None, cap).await?;
        self.read_reply(path, reply)
    }

    fn read_script(&self, path: &str) -> String {
        let max = self.opts.max_size;
        format!(
            r#"{LIB}p={p}; max={max}
regular "$p"
[ -r "$p" ] || fail 67
s=; if has stat; then s=$(stat -L -c '%s %u %g %a' -- "$p" 2>/dev/null) || s=; fi
if [ -z "$s" ]; then z=$(wc -c < "$p") || fail 1; s="$((z + 0)) - - -"; fi
z=${{s%% *}}
[ "$z" -le "$max" ] || fail 69 "$z"
printf '%s\n' "$s"
cap $((max + 1)) "$p"
"#,
            p = quote(path),
        )
    }

    fn read_reply(&self, path: &str, reply: Reply) -> Result<RemoteFile, RemoteError> {
        let max = self.opts.max_size;
        match reply.status {
            0 => {}
            E_TOOBIG => {
                return Err(RemoteError::TooLarge {
                    path: path.into(),
                    size: reply.line().trim().parse().unwrap_or(0),
                    limit: max,
                })
            }
            s => return Err(classify("read", path, s, &reply)),
        }
        let nl = reply
            .stdout
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| RemoteError::Failed {
                op: "read",
                message: "malformed reply from the read script".into(),
            })?;
        let head = String::from_utf8_lossy(&reply.stdout[..nl]).into_owned();
        let fields: Vec<&str> = head.split_whitespace().collect();
        let num = |i: usize, radix: u32| {
            fields
                .get(i)
                .and_then(|f| u32::from_str_radix(f, radix).ok())
        };
        let mode = num(3, 8).map(|m| m & 0o7777);
        let owner = num(1, 10).zip(num(2, 10));
        let bytes = reply.stdout[nl + 1..].to_vec();
        if bytes.len() as u64 > max {
            return Err(RemoteError::TooLarge {
                path: path.into(),
                size: bytes.len() as u64,
                limit: max,
            });
        }
        Ok(RemoteFile { bytes, mode, owner })
    }

    /// Read the lock's record (bounded) as the first script printed it.
    fn holder(stdout: &[u8]) -> Option<LockInfo> {
        LockInfo::parse(stdout)
    }
}

/// Map the exit codes every script shares to an error about `path`.
fn classify(op: &'static str, path: &str, status: u32, reply: &Reply) -> RemoteError {
    let path = path.to_string();
    let not_regular = |kind: &str| RemoteError::NotRegular {
        path: path.clone(),
        kind: kind.into(),
    };
    match status {
        E_NOENT => RemoteError::NotFound { path },
        E_ACCES => RemoteError::PermissionDenied { path },
        E_ISDIR => RemoteError::IsDirectory { path },
        E_FIFO => not_regular("a FIFO"),
        E_CHR => not_regular("a character device"),
        E_BLK => not_regular("a block device"),
        E_SOCK => not_regular("a socket"),
        E_ODD => not_regular("not a regular file"),
        E_NOHASH => RemoteError::Unsupported {
            op,
            why: format!(
                "the host has neither sha256sum nor cksum, so the bytes of {path} cannot be checked before they replace anything; nothing was written"
            ),
            instead: Some(Mode::Sftp),
        },
        E_TEMP => RemoteError::Failed {
            op,
            message: format!(
                "{path}: cannot create a temp file beside it with mktemp: {}",
                reply.stderr
            ),
        },
        E_RESOLVE => RemoteError::Failed {
            op,
            message: format!("{path}: cannot resolve the symbolic link: {}", reply.stderr),
        },
        E_TEMPGONE => RemoteError::Failed {
            op,
            message: format!(
                "{path}: the temp file was replaced by something else while it was written; nothing was replaced"
            ),
        },
        E_OWNER => RemoteError::Failed {
            op,
            message: format!(
                "{path}: cannot give the new file the old owner and group (chown refused; it would be {}); nothing was replaced",
                reply.line()
            ),
        },
        E_NAMES => RemoteError::Failed {
            op,
            message: format!("{path}: 100 backups already exist for this second"),
        },
        s => RemoteError::Failed {
            op,
            message: format!("{path}: exit {s}: {}", reply.stderr),
        },
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

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// `cksum`'s output for stdin: `CRC LENGTH`.
fn cksum_line(bytes: &[u8]) -> String {
    let (crc, len) = cksum(bytes);
    format!("{crc} {len}")
}

fn mode_arg(mode: Option<u32>) -> String {
    quote(
        &mode
            .map(|m| format!("{:o}", m & 0o7777))
            .unwrap_or_default(),
    )
}

fn owner_arg(owner: Option<(u32, u32)>) -> String {
    quote(&owner.map(|(u, g)| format!("{u} {g}")).unwrap_or_default())
}

impl super::RemoteOps for ShellRemote<'_> {
    async fn read(&self) -> Result<RemoteFile, RemoteError> {
        let f = self.read_path(&self.path).await?;
        self.remember(&f.bytes);
        Ok(f)
    }

    async fn backup(&self, current: &RemoteFile, now: SystemTime) -> Result<String, RemoteError> {
        let (sha, ck) = self.remember(&current.bytes);
        let script = format!(
            r#"{LIB}{TEMP_LIB}p={p}; b={b}; n={n}; h={h}; k={k}; m={m}; o={o}
hashtool
if [ -z "$m" ] || [ -z "$o" ]; then
  if [ -f "$p" ] && has stat; then
    s=$(stat -L -c '%u %g %a' -- "$p" 2>/dev/null) || s=
    if [ -n "$s" ]; then [ -n "$m" ] || m=${{s##* }}; [ -n "$o" ] || o=${{s% *}}; fi
  fi
fi
dir_of "$b"
new_temp "$D"
fill "$n" "$h" "$k"
perm "$o" "$m" ''
flush
i=0; c=$b
while :; do
  if [ ! -e "$c" ] && [ ! -L "$c" ]; then
    if le=$(ln -- "$t" "$c" 2>&1); then
      if [ "$c" -ef "$t" ] && [ ! -L "$c" ]; then
        rm -f -- "$t"; t=
        sync -- "$D" 2>/dev/null
        printf '%s\n' "$c"; exit 0
      fi
      rm -f -- "$c/${{t##*/}}"
    elif [ ! -e "$c" ] && [ ! -L "$c" ]; then
      printf '%s\n' "$le" >&2; fail 1
    fi
  fi
  i=$((i + 1)); [ "$i" -lt 100 ] || fail 84
  c=$b.$i
done
"#,
            p = quote(&self.path),
            b = quote(&backup_path(&self.path, now)),
            n = current.bytes.len(),
            h = quote(&sha),
            k = quote(&ck),
            m = mode_arg(current.mode),
            o = owner_arg(current.owner),
        );
        let reply = self
            .run("backup", &script, Some(&current.bytes), 64 * 1024)
            .await?;
        match reply.status {
            0 => {}
            E_INCOMPLETE => {
                return Err(RemoteError::Incomplete {
                    path: backup_path(&self.path, now),
                    sent: current.bytes.len() as u64,
                    got: reply.line().trim().parse().unwrap_or(0),
                })
            }
            s => return Err(classify("backup", &self.path, s, &reply)),
        }
        let out = String::from_utf8_lossy(&reply.stdout);
        let path = out.strip_suffix('\n').unwrap_or(&out).to_string();
        super::check_backup_path(&self.path, &path)?;
        Ok(path)
    }

    async fn write(
        &self,
        content: &[u8],
        like: &RemoteFile,
        expect: Option<&str>,
    ) -> Result<(), RemoteError> {
        let (sha, ck) = self.remember(content);
        let expect = expect.map(|e| e.to_ascii_lowercase());
        let expect_ck = expect
            .as_deref()
            .and_then(|e| self.cksum_for(e, like))
            .unwrap_or_default();
        let script = format!(
            r#"{LIB}{TEMP_LIB}p={p}; n={n}; h={h}; k={k}; e={e}; ek={ek}; m={m}; o={o}
hashtool
if [ -n "$e" ] && [ "$how" = cksum ] && [ -z "$ek" ]; then fail 79; fi
r=$p
if [ -L "$p" ]; then
  r=$(readlink -f -- "$p" && echo .) || {{ [ -e "$p" ] || fail 66; fail 81; }}
  r=${{r%.}}
  case $r in *"$NL") r=${{r%"$NL"}} ;; *) fail 81 ;; esac
  [ -n "$r" ] || fail 81
fi
if [ -e "$r" ] || [ -L "$r" ]; then
  regular "$r"
  if [ -z "$m" ] || [ -z "$o" ]; then
    s=; if has stat; then s=$(stat -L -c '%u %g %a' -- "$r" 2>/dev/null) || s=; fi
    if [ -n "$s" ]; then [ -n "$m" ] || m=${{s##* }}; [ -n "$o" ] || o=${{s% *}}; fi
  fi
elif [ -n "$e" ]; then
  fail 66
fi
dir_of "$r"
new_temp "$D"
fill "$n" "$h" "$k"
perm "$o" "$m" 1
flush
if [ -n "$e" ]; then
  regular "$r"
  if [ "$how" = sha256 ]; then
    x=$(sha256sum < "$r") || fail 1; x=${{x%% *}}
    [ "$x" = "$e" ] || fail 76 "$x"
  else
    x=$(cksum < "$r") || fail 1; set -- $x
    [ "$1 $2" = "$ek" ] || fail 76 "cksum:$1:$2"
  fi
fi
ours
[ ! -d "$r" ] || fail 68
mv -f -- "$t" "$r" || fail 1
t=
sync -- "$D" 2>/dev/null
printf 'ok %s\n' "$how"
"#,
            p = quote(&self.path),
            n = content.len(),
            h = quote(&sha),
            k = quote(&ck),
            e = quote(expect.as_deref().unwrap_or("")),
            ek = quote(&expect_ck),
            m = mode_arg(like.mode),
            o = owner_arg(like.owner),
        );
        let reply = self.run("write", &script, Some(content), 64 * 1024).await?;
        match reply.status {
            0 if reply.line().starts_with("ok ") => Ok(()),
            0 => Err(RemoteError::Failed {
                op: "write",
                message: format!("{}: the write script did not finish", self.path),
            }),
            E_INCOMPLETE => Err(RemoteError::Incomplete {
                path: self.path.clone(),
                sent: content.len() as u64,
                got: reply.line().trim().parse().unwrap_or(0),
            }),
            E_CHANGED => Err(RemoteError::Changed {
                path: self.path.clone(),
                expected: expect.unwrap_or_default(),
                found: reply.line(),
            }),
            s => Err(classify("write", &self.path, s, &reply)),
        }
    }

    async fn lock(&self, me: &LockInfo, now: u64, force: bool) -> Result<LockTaken, RemoteError> {
        let lock = names::lock_path(&self.path);
        let record = me.to_record();
        let max = names::MAX_LOCK_RECORD + 1;
        let script = format!(
            r#"{LIB}{TEMP_LIB}l={l}; rec={rec}
dir_of "$l"
new_temp "$D"
printf '%s' "$rec" >&3 || fail 1
perm '' 644 ''
if [ ! -e "$l" ] && [ ! -L "$l" ]; then
  if le=$(ln -- "$t" "$l" 2>&1); then
    if [ "$l" -ef "$t" ] && [ ! -L "$l" ]; then rm -f -- "$t"; t=; exit 0; fi
    rm -f -- "$l/${{t##*/}}"
  elif [ ! -e "$l" ] && [ ! -L "$l" ]; then
    printf '%s\n' "$le" >&2; fail 1
  fi
fi
if [ -f "$l" ] && [ ! -L "$l" ]; then cap {max} "$l"; fi
fail 78
"#,
            l = quote(&lock),
            rec = quote(&record),
        );
        let reply = self.run("lock", &script, None, 64 * 1024).await?;
        match reply.status {
            0 => return Ok(LockTaken::Fresh),
            E_LOCKED => {}
            s => return Err(classify("lock", &lock, s, &reply)),
        }
        let holder = Self::holder(&reply.stdout);
        let stale = holder.as_ref().is_some_and(|h| h.expired(now));
        if !(stale || force) {
            return Err(RemoteError::Locked {
                path: self.path.clone(),
                holder: holder.map(Box::new),
            });
        }
        // Take over: only if the lock still names the holder just read (two
        // takers racing mostly see each other here), by renaming a complete
        // record over it, then reading it back.
        let seen = holder.as_ref().map(|h| h.token.clone()).unwrap_or_default();
        let script = format!(
            r#"{LIB}{TEMP_LIB}l={l}; rec={rec}; seen={seen}
dir_of "$l"
new_temp "$D"
printf '%s' "$rec" >&3 || fail 1
perm '' 644 ''
flush
[ ! -d "$l" ] || fail 78
if [ -n "$seen" ] && ! {{ cap {max} "$l" 2>/dev/null | grep -Fqx -e "token=$seen"; }}; then
  if [ -f "$l" ] && [ ! -L "$l" ]; then cap {max} "$l"; fi
  fail 78
fi
ours
mv -f -- "$t" "$l" || fail 1
t=
if [ -f "$l" ] && [ ! -L "$l" ]; then cap {max} "$l"; fi
"#,
            l = quote(&lock),
            rec = quote(&record),
            seen = quote(&seen),
        );
        let reply = self.run("lock", &script, None, 64 * 1024).await?;
        match reply.status {
            0 | E_LOCKED => {}
            s => return Err(classify("lock", &lock, s, &reply)),
        }
        match Self::holder(&reply.stdout) {
            Some(h) if reply.status == 0 && h.token == me.token => {
                Ok(LockTaken::TookOver { previous: holder })
            }
            other => Err(RemoteError::Locked {
                path: self.path.clone(),
                holder: other.map(Box::new),
            }),
        }
    }

    async fn unlock(&self, me: &LockInfo) -> Result<(), RemoteError> {
        let lock = names::lock_path(&self.path);
        // The token as the record stores it (control characters dropped).
        let token = LockInfo::parse(me.to_record().as_bytes())
            .map(|i| i.token)
            .unwrap_or_else(|| me.token.clone());
        let script = format!(
            r#"{LIB}l={l}; tok={tok}
if [ -f "$l" ] && [ ! -L "$l" ] && cap {max} "$l" | grep -Fqx -e "token=$tok"; then
  rm -f -- "$l" || fail 1
fi
exit 0
"#,
            l = quote(&lock),
            tok = quote(&token),
            max = names::MAX_LOCK_RECORD + 1,
        );
        let reply = self.run("unlock", &script, None, 8192).await?;
        match reply.status {
            0 => Ok(()),
            s => Err(classify("unlock", &lock, s, &reply)),
        }
    }

    async fn restart(
        &self,
        command: &str,
        timeout: Duration,
    ) -> Result<RestartOutcome, RemoteError> {
        super::run_restart(self.session, command, timeout).await
    }

    async fn list_backups(&self) -> Result<Vec<BackupEntry>, RemoteError> {
        // NUL-terminated `SIZE MTIME PATH` records: any file name survives.
        let script = format!(
            r#"{LIB}st=; if has stat; then st=1; fi
for f in {p}.bak-*; do
  {{ [ -f "$f" ] && [ ! -L "$f" ]; }} || continue
  s=; if [ -n "$st" ]; then s=$(stat -c '%s %Y' -- "$f" 2>/dev/null) || s=; fi
  if [ -z "$s" ]; then z=$(wc -c < "$f") || continue; s="$((z + 0)) -"; fi
  printf '%s %s\000' "$s" "$f"
done
exit 0
"#,
            p = quote(&self.path),
        );
        let reply = self
            .run("list backups", &script, None, crate::limits::MAX_LISTING)
            .await?;
        if reply.status != 0 {
            return Err(classify("list backups", &self.path, reply.status, &reply));
        }
        let out: Vec<BackupEntry> = reply
            .stdout
            .split(|&b| b == 0)
            .filter_map(|rec| {
                let rec = std::str::from_utf8(rec).ok()?;
                let (size, rest) = rec.split_once(' ')?;
                let (mtime, path) = rest.split_once(' ')?;
                Some(BackupEntry {
                    path: path.to_string(),
                    size: size.parse().ok()?,
                    mtime: mtime.parse().ok(),
                })
            })
            .collect();
        Ok(super::order_backups(&self.path, out))
    }

    async fn read_backup(&self, path: &str) -> Result<RemoteFile, RemoteError> {
        super::check_backup_path(&self.path, path)?;
        self.read_path(path).await
    }

    async fn remove_backup(&self, path: &str) -> Result<(), RemoteError> {
        super::check_backup_path(&self.path, path)?;
        let script = format!(
            r#"{LIB}f={f}
[ ! -d "$f" ] || fail 68
rm -f -- "$f" || fail 1
"#,
            f = quote(path),
        );
        let reply = self.run("remove backup", &script, None, 8192).await?;
        match reply.status {
            0 => Ok(()),
            s => Err(classify("remove backup", path, s, &reply)),
        }
    }
    async fn probe(
        &self,
        queries: &[crate::hostcheck::Query],
    ) -> Result<Vec<crate::hostcheck::Answer>, RemoteError> {
        self.op_probe(queries).await
    }

    async fn read_probing(
        &self,
        queries: &[crate::hostcheck::Query],
    ) -> (
        Result<RemoteFile, RemoteError>,
        Result<Vec<crate::hostcheck::Answer>, RemoteError>,
    ) {
        self.op_read_probing(queries).await
    }
}

/// The host-check script: reads `K ARG` lines on stdin (`P` path, `C`
/// command name, `E` variable name) and prints `N CODE` per line, in order.
/// Variable values never leave the host: `grep -q` compares names there.
const PROBE_SCRIPT: &str = r#"svc=; looked=
findsvc() {
  looked=1
  for d in /proc/[0-9]*; do
    [ -O "$d" ] || continue
    c=; IFS= read -r c < "$d/comm" 2>/dev/null || continue
    case $c in llama-swap*) if [ -r "$d/environ" ]; then svc=$d; return; fi ;; esac
  done
}
n=0
while IFS= read -r line; do
  k=${line%% *}; a=${line#? }
  case $k in
  P) if [ -e "$a" ]; then
       if [ -f "$a" ]; then t=f; elif [ -d "$a" ]; then t=d; else t=o; fi
       r=0; w=0; x=0
       if [ -r "$a" ]; then r=1; fi
       if [ -w "$a" ]; then w=1; fi
       if [ -x "$a" ]; then x=1; fi
       echo "$n $t$r$w$x"
     elif [ -L "$a" ]; then echo "$n l"
     else echo "$n -"; fi ;;
  C) if command -v "$a" >/dev/null 2>&1; then echo "$n c1"; else echo "$n c0"; fi ;;
  E) [ -n "$looked" ] || findsvc
     if [ -z "$svc" ]; then echo "$n e?"
     elif tr '\000' '\n' < "$svc/environ" 2>/dev/null | grep -q "^$a="; then echo "$n e1"
     else echo "$n e0"; fi ;;
  *) echo "$n ?" ;;
  esac
  n=$((n+1))
done
"#;

/// Bytes of output per query line (`N CODE\n`), generously.
const PROBE_LINE: usize = 32;

impl ShellRemote<'_> {
    /// Host checks: one script, one exec, every query on its stdin.
    async fn op_probe(
        &self,
        queries: &[crate::hostcheck::Query],
    ) -> Result<Vec<crate::hostcheck::Answer>, RemoteError> {
        let (input, sent, lines) = probe_input(queries);
        let codes: Vec<String> = if lines == 0 {
            Vec::new()
        } else {
            let reply = self
                .run(
                    "host checks",
                    PROBE_SCRIPT,
                    Some(&input),
                    lines * PROBE_LINE + 1024,
                )
                .await?;
            if reply.status != 0 {
                return Err(RemoteError::Failed {
                    op: "host checks",
                    message: format!(
                        "the check script exited with status {}: {}",
                        reply.status, reply.stderr
                    ),
                });
            }
            parse_probe(&reply.stdout, lines)?
        };
        Ok(probe_answers(sent, &codes))
    }

    /// The read and the host checks in ONE exec: the check script runs
    /// first (its answers are the first lines of the output), then the read
    /// script. If the answers cannot be split off, the config is read again
    /// on its own.
    async fn op_read_probing(
        &self,
        queries: &[crate::hostcheck::Query],
    ) -> (
        Result<RemoteFile, RemoteError>,
        Result<Vec<crate::hostcheck::Answer>, RemoteError>,
    ) {
        let (input, sent, lines) = probe_input(queries);
        if lines == 0 {
            return (
                super::RemoteOps::read(self).await,
                Ok(probe_answers(sent, &[])),
            );
        }
        let script = format!("{PROBE_SCRIPT}{}", self.read_script(&self.path));
        let cap = self.opts.max_size as usize + 128 + lines * PROBE_LINE + 1024;
        let mut reply = match self.run("read", &script, Some(&input), cap).await {
            Ok(r) => r,
            Err(e) => {
                let probe = RemoteError::Failed {
                    op: "host checks",
                    message: e.to_string(),
                };
                return (Err(e), Err(probe));
            }
        };
        let split = (0..lines).try_fold(0usize, |at, _| {
            let rest = reply.stdout.get(at..)?;
            Some(at + rest.iter().position(|&b| b == b'\n')? + 1)
        });
        let Some(at) = split else {
            let why = RemoteError::Failed {
                op: "host checks",
                message: "the check script's answers were cut short".into(),
            };
            return (super::RemoteOps::read(self).await, Err(why));
        };
        let answers = parse_probe(&reply.stdout[..at], lines).map(|c| probe_answers(sent, &c));
        reply.stdout.drain(..at);
        let file = self.read_reply(&self.path, reply);
        if let Ok(f) = &file {
            self.remember(&f.bytes);
        }
        (file, answers)
    }
}

/// The check script's stdin (`K ARG` lines), which query each line answers
/// (`None`: not sent: a newline or NUL in it), and the number of lines.
fn probe_input(queries: &[crate::hostcheck::Query]) -> (Vec<u8>, Vec<Option<usize>>, usize) {
    use crate::hostcheck::Query;
    {
        let mut input = Vec::new();
        // Index of each query's line in the script's input.
        let mut sent: Vec<Option<usize>> = Vec::with_capacity(queries.len());
        let mut lines = 0;
        for q in queries {
            let (k, a) = match q {
                Query::Path(p) => ('P', p),
                Query::Command(c) => ('C', c),
                Query::Env(e) => ('E', e),
            };
            let env_ok = !matches!(q, Query::Env(_))
                || a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if a.contains(['\n', '\0']) || !env_ok {
                sent.push(None);
                continue;
            }
            input.extend_from_slice(format!("{k} {a}\n").as_bytes());
            sent.push(Some(lines));
            lines += 1;
        }
        (input, sent, lines)
    }
}

fn probe_answers(sent: Vec<Option<usize>>, codes: &[String]) -> Vec<crate::hostcheck::Answer> {
    use crate::hostcheck::Answer;
    {
        sent.into_iter()
            .map(|i| match i.and_then(|i| codes.get(i)) {
                Some(code) => probe_answer(code),
                None => {
                    Answer::Unknown("the name holds a newline or NUL; not sent to the host".into())
                }
            })
            .collect()
    }
}

/// The script's output: exactly `lines` lines `N CODE`, N counting from 0.
fn parse_probe(out: &[u8], lines: usize) -> Result<Vec<String>, RemoteError> {
    let bad = |why: String| RemoteError::Failed {
        op: "host checks",
        message: format!("unexpected output from the check script: {why}"),
    };
    let text = std::str::from_utf8(out).map_err(|_| bad("not UTF-8".into()))?;
    let mut codes = Vec::with_capacity(lines);
    for (i, line) in text.lines().enumerate() {
        let (n, code) = line
            .split_once(' ')
            .ok_or_else(|| bad(format!("line {}", i + 1)))?;
        if n != i.to_string() || code.len() > 4 {
            return Err(bad(format!("line {}", i + 1)));
        }
        codes.push(code.to_string());
    }
    if codes.len() != lines {
        return Err(bad(format!(
            "{} answers for {lines} questions",
            codes.len()
        )));
    }
    Ok(codes)
}

fn probe_answer(code: &str) -> crate::hostcheck::Answer {
    use crate::hostcheck::{Answer, FileKind, PathFacts};
    let bit = |i: usize| code.as_bytes().get(i).map(|b| *b == b'1');
    match code {
        "-" => Answer::Path(PathFacts::default()),
        "l" => Answer::Path(PathFacts {
            kind: Some(FileKind::DanglingLink),
            ..PathFacts::default()
        }),
        "c1" => Answer::Command(true),
        "c0" => Answer::Command(false),
        "e1" => Answer::Env(true),
        "e0" => Answer::Env(false),
        "e?" => Answer::Unknown(
            "no running llama-swap owned by the SSH user was found to read its environment".into(),
        ),
        c if c.len() == 4 && c.as_bytes()[1..].iter().all(|b| *b == b'0' || *b == b'1') => {
            let kind = match c.as_bytes()[0] {
                b'f' => FileKind::Regular,
                b'd' => FileKind::Directory,
                b'o' => FileKind::Other,
                _ => return Answer::Unknown(format!("unknown reply {c:?}")),
            };
            Answer::Path(PathFacts {
                kind: Some(kind),
                readable: bit(1),
                writable: bit(2),
                executable: bit(3),
            })
        }
        other => Answer::Unknown(format!("unknown reply {other:?}")),
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
