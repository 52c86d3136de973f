//! The project's own forced-command script (`swapcfg wrapper-script`): a
//! POSIX `sh` program for `command="…"` in authorized_keys that speaks
//! wrapper protocol 1 (the client side is [`super::wrapper`]).
//!
//! Owns: the script text and the quoting of the two values baked into it
//! (the config path and the restart command). Pure: no I/O.
//!
//! # Protocol 1
//!
//! The client's command arrives in `$SSH_ORIGINAL_COMMAND`. The script never
//! evaluates it: a command longer than 512 bytes, or holding anything but
//! `A-Z a-z 0-9`, space, `.` and `-`, is refused; the rest is split on spaces
//! (globbing off) into a verb and arguments, and each argument is checked
//! (digits, 64 lowercase hex, a backup stamp). Everything else is refused
//! with exit status 2 and a message on stderr. The config path is fixed in
//! the script: no verb takes a path.
//!
//! | verb | stdin | stdout on success |
//! |---|---|---|
//! | `hello` | – | `swapcfg-wrapper 1 VERB…` (capabilities), `path=CONFIG` |
//! | `read 1` | – | the `hello` lines, `file MODE UID GID` (octal, decimal), then the bytes |
//! | `read` | – | the bytes only (the seed verb, for people and old clients) |
//! | `backup STAMP SHA256` | – | the backup's path `CONFIG.bak-STAMP[.N]` |
//! | `write LEN SHA256 EXPECT` | the new bytes | – |
//! | `lock NOW FORCE` | the lock record | `fresh`, or `took-over` then the previous record |
//! | `unlock TOKEN` | – | – |
//! | `list` | – | one `SIZE MTIME SUFFIX` line per backup (`CONFIG.bak-SUFFIX`) |
//! | `read-backup SUFFIX` | – | as `read 1`, for `CONFIG.bak-SUFFIX` |
//! | `remove SUFFIX` | – | – |
//! | `restart` | – | the restart command's output (only when generated with one) |
//!
//! * `write`: stdin goes to a `mktemp` file beside the (symlink-resolved)
//!   config; it must be exactly `LEN` bytes with sha256 `SHA256`, else exit 3
//!   (`got=N` on stdout); it gets the config's owner, group and mode (a
//!   refused `chown` is accepted only when it already has them, else exit 1
//!   with nothing replaced), is
//!   synced, and, unless `EXPECT` is `-`, the config's sha256 is compared
//!   with `EXPECT` right before the `mv` (exit 4, `found=SHA256`). A signal
//!   or a failed check removes the temp file.
//! * `backup`: the config is copied to a `mktemp` file beside it, must hash to
//!   `SHA256` (the bytes the client read; else exit 4), gets the owner, group
//!   and mode (where `chown` is refused, the group and other bits are dropped
//!   instead), is synced, and is then hard-linked (`ln`, which never replaces
//!   a file) to the first free name of `CONFIG.bak-STAMP`, `.1` … `.99`.
//! * `lock`: the record (at most 4096 bytes, `swapcfg-lock 1` first, a hex
//!   `token=`) is hard-linked to `CONFIG.swapcfg-lock`; when that exists and
//!   its `expires=` is at or before `NOW` (or `FORCE` is 1) it is replaced
//!   with `mv` and read back. A live holder: exit 5, its record on stdout.
//!   `unlock` removes the lock only when its token matches.
//!
//! A failing `write` or `lock` reads the rest of its stdin before it exits,
//! so the client hears the answer instead of a closed channel.
//!
//! Exit status: 0 done, 1 failed (message on stderr), 2 refused, 3
//! incomplete, 4 changed, 5 locked, 6 not found, 7 not a regular file
//! (`kind=…`), 8 too large (`size=N`), 9 permission denied. Messages on
//! stderr start with `swapcfg-wrapper 1:`.
//!
//! Needs on the host: `sh`, `mktemp`, `stat` (GNU/busybox `-c` or BSD `-f`),
//! `head -c`, `cat`, `wc`, `sed`, `ln`, `mv`, `chmod`, `chown`, `date -u`,
//! `sync`, one of `sha256sum`, `shasum -a 256`, `sha256 -q` or `openssl
//! dgst -sha256`, and `readlink -f` only when the config is a symlink.

/// The protocol version the script speaks and the client expects.
pub const PROTOCOL: u32 = 1;

/// First word of the `hello` line and prefix of every error message.
pub const MAGIC: &str = "swapcfg-wrapper";

/// Verbs every generated script offers (`restart` is added when generated
/// with a restart command).
pub const BASE_VERBS: [&str; 8] = [
    "read",
    "backup",
    "write",
    "lock",
    "unlock",
    "list",
    "read-backup",
    "remove",
];

/// Exit statuses of the script (see the module docs).
pub mod status {
    pub const FAILED: u32 = 1;
    pub const REFUSED: u32 = 2;
    pub const INCOMPLETE: u32 = 3;
    pub const CHANGED: u32 = 4;
    pub const LOCKED: u32 = 5;
    pub const NOT_FOUND: u32 = 6;
    pub const NOT_REGULAR: u32 = 7;
    pub const TOO_LARGE: u32 = 8;
    pub const DENIED: u32 = 9;
}

/// Why a script cannot be generated for these values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    #[error("config path {0:?} must be absolute (the forced command runs in the key owner's home directory)")]
    NotAbsolute(String),
    #[error("config path {0:?} must name a file, not a directory")]
    NotAFile(String),
    #[error("config path {0:?} holds a control character")]
    ControlCharacter(String),
    #[error("config path is {0} bytes long (at most 1024)")]
    TooLong(usize),
    #[error(
        "the restart command is empty (leave it out, or `none`, for a script without `restart`)"
    )]
    EmptyRestart,
    #[error("the restart command holds a NUL byte")]
    NulInRestart,
}

/// Quote `s` for POSIX sh: `'…'`, with `'` written as `'\''`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The script for `config_path`, with a `restart` verb running
/// `restart_cmd` (via `/bin/sh -c`) when one is given. `max_bytes` is the
/// largest config the script reads or accepts.
pub fn generate(
    config_path: &str,
    restart_cmd: Option<&str>,
    max_bytes: u64,
) -> Result<String, ScriptError> {
    if !config_path.starts_with('/') {
        return Err(ScriptError::NotAbsolute(config_path.into()));
    }
    if config_path.ends_with('/') || config_path.ends_with("/.") || config_path.ends_with("/..") {
        return Err(ScriptError::NotAFile(config_path.into()));
    }
    if config_path.chars().any(char::is_control) {
        return Err(ScriptError::ControlCharacter(config_path.into()));
    }
    if config_path.len() > 1024 {
        return Err(ScriptError::TooLong(config_path.len()));
    }
    let restart = match restart_cmd {
        None => None,
        Some(c) if c.trim().is_empty() => return Err(ScriptError::EmptyRestart),
        Some(c) if c.contains('\0') => return Err(ScriptError::NulInRestart),
        Some(c) => Some(c),
    };
    let mut caps: Vec<&str> = BASE_VERBS.to_vec();
    if restart.is_some() {
        caps.push("restart");
    }
    let mut s = String::with_capacity(TEMPLATE.len() + 512);
    s.push_str(&HEAD.replace("@VERSION@", env!("CARGO_PKG_VERSION")));
    s.push_str(&format!("CONFIG={}\n", sh_quote(config_path)));
    if let Some(cmd) = restart {
        s.push_str(&format!("RESTART_CMD={}\n", sh_quote(cmd)));
    }
    s.push_str(&format!("MAX_BYTES={max_bytes}\n"));
    s.push_str(&format!("CAPS='{}'\n", caps.join(" ")));
    s.push_str(TEMPLATE);
    if restart.is_some() {
        s.push_str(RESTART_VERB);
    }
    s.push_str(DISPATCH_HEAD);
    if restart.is_some() {
        s.push_str("    restart) v_restart \"$@\" ;;\n");
    }
    s.push_str(DISPATCH_TAIL);
    Ok(s)
}

const HEAD: &str = r#"#!/bin/sh
# swapcfg forced-command wrapper, protocol 1 (generated by swapcfg @VERSION@:
# `swapcfg wrapper-script`). Do not edit: regenerate instead.
#
# Install it where the key's user cannot change it, e.g. owned by root in
# /usr/local/lib/swapcfg/, and pin the key in ~/.ssh/authorized_keys:
#   command="/bin/sh /usr/local/lib/swapcfg/wrapper.sh",restrict ssh-ed25519 AAAA… swapcfg
#
# The client's command arrives in $SSH_ORIGINAL_COMMAND and is never
# evaluated: only the verbs below, with checked arguments, run.
#   hello | read [1] | backup [STAMP SHA256] | write LEN SHA256 EXPECT|-
#   lock NOW 0|1 | unlock TOKEN | list | read-backup SUFFIX | remove SUFFIX
#   restart (only when generated with --restart-cmd)
# Exit status: 0 done, 1 failed, 2 refused, 3 incomplete, 4 changed,
# 5 locked, 6 not found, 7 not a regular file, 8 too large, 9 denied.
"#;

const TEMPLATE: &str = r#"
unset IFS
set -f
umask 077
LC_ALL=C
export LC_ALL
CDIR=${CONFIG%/*}
[ -n "$CDIR" ] || CDIR=/
CBASE=${CONFIG##*/}
LOCKF=$CONFIG.swapcfg-lock
STAMP_GLOB='[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z'
TMP=
DRAIN=

cleanup() {
    if [ -n "$TMP" ]; then rm -f -- "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 141' PIPE
trap 'exit 143' TERM

die() {
    code=$1
    shift
    printf 'swapcfg-wrapper 1: %s\n' "$*" >&2
    # Read what the client still sends, so it hears this answer rather
    # than a closed channel.
    if [ -n "$DRAIN" ]; then cat >/dev/null 2>&1; fi
    exit "$code"
}
refuse() { die 2 "refused: $*"; }

is_digits() {
    case $1 in '' | *[!0-9]*) return 1 ;; esac
    [ ${#1} -le 15 ]
}
is_hex64() {
    case $1 in *[!0-9a-f]*) return 1 ;; esac
    [ ${#1} -eq 64 ]
}
is_token() {
    case $1 in '' | *[!0-9a-f]*) return 1 ;; esac
    [ ${#1} -le 128 ]
}
is_stamp() {
    case $1 in $STAMP_GLOB) return 0 ;; esac
    return 1
}
is_suffix() {
    case $1 in
        $STAMP_GLOB | $STAMP_GLOB.[0-9] | $STAMP_GLOB.[0-9][0-9] | $STAMP_GLOB.[0-9][0-9][0-9]) return 0 ;;
    esac
    return 1
}

# size, mode (octal), uid, gid, mtime of $1 (following a symlink)
meta() {
    m=$(stat -L -c '%s %a %u %g %Y' -- "$1" 2>/dev/null) ||
        m=$(stat -L -f '%z %Lp %u %g %m' -- "$1" 2>/dev/null) || return 1
    case $m in '' | *[!0-9\ ]*) return 1 ;; esac
    printf '%s\n' "$m"
}

sha_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        h=$(sha256sum <"$1") || return 1
    elif command -v shasum >/dev/null 2>&1; then
        h=$(shasum -a 256 <"$1") || return 1
    elif command -v sha256 >/dev/null 2>&1; then
        h=$(sha256 -q <"$1") || return 1
    elif command -v openssl >/dev/null 2>&1; then
        h=$(openssl dgst -sha256 -r <"$1") || return 1
    else
        return 1
    fi
    h=${h%%[!0-9a-f]*}
    is_hex64 "$h" || return 1
    printf '%s\n' "$h"
}
sha_or_die() {
    sha_of "$1" || die 1 "cannot hash $1 (needs sha256sum, shasum, sha256 or openssl)"
}

size_of() {
    n=$(wc -c <"$1") || return 1
    n=${n#"${n%%[0-9]*}"}
    n=${n%%[!0-9]*}
    is_digits "$n" || return 1
    printf '%s\n' "$n"
}

sync_file() {
    sync -- "$1" 2>/dev/null || sync
}

owner_of() {
    o=$(meta "$1") || return 1
    set -- $o
    printf '%s:%s\n' "$3" "$4"
}

# give $2 the owner, group and mode of $1. A refused chown is fine when $2
# already has that owner and group; else with $3 = strict it fails, and
# otherwise (a backup) the group and other bits are dropped instead.
copy_meta() {
    m=$(meta "$1") || die 1 "cannot read the mode of $1 (needs stat)"
    set -- "$2" "$3" $m
    want=$5:$6
    mode=$4
    if ! chown "$want" "$1" 2>/dev/null && [ "$(owner_of "$1")" != "$want" ]; then
        if [ "$2" = strict ]; then
            die 1 "cannot give the new file the config's owner and group $want (chown refused); nothing was replaced"
        fi
        mode=$(printf '%o' $((0$mode & 0700)))
    fi
    chmod "$mode" "$1" || die 1 "cannot set mode $mode on $1"
}

# the file behind the config path, in T
resolve() {
    T=$CONFIG
    if [ -L "$T" ]; then
        T=$(readlink -f -- "$CONFIG" 2>/dev/null) ||
            die 1 "$CONFIG is a symbolic link and readlink -f is not available"
        case $T in /*) ;; *) die 1 "$CONFIG: cannot resolve the symbolic link" ;; esac
    fi
}

regular() {
    if [ -d "$1" ]; then
        printf 'kind=dir\npath=%s\n' "$1"
        die 7 "$1: is a directory"
    fi
    if [ ! -e "$1" ]; then
        printf 'path=%s\n' "$1"
        die 6 "$1: no such file"
    fi
    if [ ! -f "$1" ]; then
        if [ -p "$1" ]; then k=fifo
        elif [ -c "$1" ]; then k=char
        elif [ -b "$1" ]; then k=block
        elif [ -S "$1" ]; then k=socket
        else k=other
        fi
        printf 'kind=%s\npath=%s\n' "$k" "$1"
        die 7 "$1: is not a regular file ($k)"
    fi
    if [ ! -r "$1" ]; then
        printf 'path=%s\n' "$1"
        die 9 "$1: permission denied"
    fi
}

new_temp() {
    TMP=$(mktemp "$1/.$2.swapcfg-XXXXXXXXXX") || {
        TMP=
        die 1 "cannot create a temp file in $1"
    }
}

header() {
    printf 'swapcfg-wrapper 1 %s\npath=%s\n' "$CAPS" "$CONFIG"
}

# header, `file MODE UID GID`, then the bytes of $1 (a checked regular file)
send_file() {
    m=$(meta "$1") || die 1 "cannot stat $1 (needs stat)"
    set -- "$1" $m
    if [ "$2" -gt "$MAX_BYTES" ]; then
        printf 'size=%s\npath=%s\n' "$2" "$1"
        die 8 "$1: $2 bytes, over the $MAX_BYTES-byte limit"
    fi
    header
    printf 'file %s %s %s\n' "$3" "$4" "$5"
    cat -- "$1" || die 1 "cannot read $1"
}

v_hello() {
    [ $# -eq 0 ] || refuse "hello takes no arguments"
    header
}

v_read() {
    case $# in
        0)
            resolve
            regular "$T"
            m=$(meta "$T") || die 1 "cannot stat $T (needs stat)"
            set -- $m
            [ "$1" -le "$MAX_BYTES" ] || die 8 "$T: $1 bytes, over the $MAX_BYTES-byte limit"
            cat -- "$T" || die 1 "cannot read $T"
            ;;
        1)
            [ "$1" = 1 ] || refuse "read: protocol $1 is not spoken here (1 is)"
            resolve
            regular "$T"
            send_file "$T"
            ;;
        *) refuse "read takes at most one argument" ;;
    esac
}

v_backup() {
    case $# in
        0)
            stamp=$(date -u +%Y%m%dT%H%M%SZ)
            want=
            ;;
        2)
            is_stamp "$1" || refuse "backup: STAMP must look like 20250101T000000Z"
            is_hex64 "$2" || refuse "backup: SHA256 must be 64 lowercase hex digits"
            stamp=$1
            want=$2
            ;;
        *) refuse "backup takes no arguments, or STAMP SHA256" ;;
    esac
    is_stamp "$stamp" || die 1 "date -u printed an unexpected stamp"
    resolve
    regular "$T"
    new_temp "$CDIR" "$CBASE"
    cat -- "$T" >"$TMP" || die 1 "cannot copy $T"
    if [ -n "$want" ]; then
        got=$(sha_or_die "$TMP") || exit 1
        if [ "$got" != "$want" ]; then
            printf 'found=%s\n' "$got"
            die 4 "$CONFIG changed since it was read; no backup made"
        fi
    fi
    copy_meta "$T" "$TMP" lenient
    sync_file "$TMP"
    base=$CONFIG.bak-$stamp
    n=0
    while [ "$n" -lt 100 ]; do
        if [ "$n" -eq 0 ]; then name=$base; else name=$base.$n; fi
        if ln -- "$TMP" "$name" 2>/dev/null; then
            rm -f -- "$TMP"
            TMP=
            printf '%s\n' "$name"
            return 0
        fi
        if [ ! -e "$name" ] && [ ! -L "$name" ]; then
            die 1 "cannot create $name"
        fi
        n=$((n + 1))
    done
    die 1 "$base: 100 backups already exist for this second"
}

v_write() {
    [ $# -eq 3 ] || refuse "write takes LEN SHA256 EXPECT (EXPECT: a sha256 or -)"
    is_digits "$1" || refuse "write: LEN must be digits"
    is_hex64 "$2" || refuse "write: SHA256 must be 64 lowercase hex digits"
    [ "$3" = - ] || is_hex64 "$3" || refuse "write: EXPECT must be a sha256 or -"
    len=$1
    want=$2
    expect=$3
    if [ "$len" -gt "$MAX_BYTES" ]; then
        printf 'size=%s\n' "$len"
        die 8 "$len bytes, over the $MAX_BYTES-byte limit; nothing was replaced"
    fi
    resolve
    regular "$T"
    tdir=${T%/*}
    [ -n "$tdir" ] || tdir=/
    new_temp "$tdir" "${T##*/}"
    head -c "$((len + 1))" >"$TMP" || die 1 "cannot write $TMP; nothing was replaced"
    got=$(size_of "$TMP") || die 1 "cannot measure $TMP"
    if [ "$got" -ne "$len" ]; then
        printf 'got=%s\n' "$got"
        die 3 "received $got of $len bytes; nothing was replaced"
    fi
    sha=$(sha_or_die "$TMP") || exit 1
    if [ "$sha" != "$want" ]; then
        printf 'got=%s\n' "$got"
        die 3 "the received bytes hash to $sha, not $want; nothing was replaced"
    fi
    copy_meta "$T" "$TMP" strict
    sync_file "$TMP"
    if [ "$expect" != - ]; then
        cur=$(sha_or_die "$T") || exit 1
        if [ "$cur" != "$expect" ]; then
            printf 'found=%s\n' "$cur"
            die 4 "$CONFIG changed on the host; nothing was replaced"
        fi
    fi
    mv -f -- "$TMP" "$T" || die 1 "cannot rename the new file over $T; nothing was replaced"
    TMP=
}

token_of() {
    head -c 4096 -- "$1" 2>/dev/null | sed -n 's/^token=//p' | head -n 1
}

v_lock() {
    [ $# -eq 2 ] || refuse "lock takes NOW FORCE"
    is_digits "$1" || refuse "lock: NOW must be digits"
    case $2 in 0 | 1) ;; *) refuse "lock: FORCE must be 0 or 1" ;; esac
    now=$1
    force=$2
    new_temp "$CDIR" "$CBASE"
    head -c 4097 >"$TMP" || die 1 "cannot write $TMP"
    size=$(size_of "$TMP") || die 1 "cannot measure $TMP"
    [ "$size" -le 4096 ] || refuse "lock: the record is over 4096 bytes"
    [ "$(head -n 1 -- "$TMP")" = 'swapcfg-lock 1' ] || refuse "lock: not a swapcfg lock record"
    mine=$(token_of "$TMP")
    is_token "$mine" || refuse "lock: the record has no hex token"
    chmod 644 "$TMP" || die 1 "cannot set the mode of $TMP"
    if ln -- "$TMP" "$LOCKF" 2>/dev/null; then
        rm -f -- "$TMP"
        TMP=
        echo fresh
        return 0
    fi
    if [ ! -e "$LOCKF" ] && [ ! -L "$LOCKF" ]; then
        die 1 "cannot create $LOCKF"
    fi
    holder=$(head -c 4096 -- "$LOCKF" 2>/dev/null)
    exp=$(printf '%s\n' "$holder" | sed -n 's/^expires=//p' | head -n 1)
    if [ "$force" = 0 ] && ! { is_digits "$exp" && [ "$now" -ge "$exp" ]; }; then
        printf '%s\n' "$holder"
        die 5 "$CONFIG is locked by another apply"
    fi
    mv -f -- "$TMP" "$LOCKF" || die 1 "cannot replace $LOCKF"
    TMP=
    if [ "$(token_of "$LOCKF")" = "$mine" ]; then
        printf 'took-over\n%s\n' "$holder"
        return 0
    fi
    head -c 4096 -- "$LOCKF"
    die 5 "$CONFIG is locked by another apply"
}

v_unlock() {
    [ $# -eq 1 ] || refuse "unlock takes TOKEN"
    is_token "$1" || refuse "unlock: TOKEN must be hex"
    [ -f "$LOCKF" ] || return 0
    [ "$(token_of "$LOCKF")" = "$1" ] || return 0
    rm -f -- "$LOCKF" || die 1 "cannot remove $LOCKF"
}

v_list() {
    [ $# -eq 0 ] || refuse "list takes no arguments"
    set +f
    for f in "$CONFIG".bak-*; do
        [ -f "$f" ] && [ ! -L "$f" ] || continue
        s=${f#"$CONFIG".bak-}
        is_suffix "$s" || continue
        m=$(meta "$f") || continue
        set -- $m
        printf '%s %s %s\n' "$1" "$5" "$s"
    done
    set -f
}

backup_file() {
    [ $# -eq 1 ] && is_suffix "$1" || refuse "expected a backup suffix YYYYMMDDTHHMMSSZ[.N]"
    B=$CONFIG.bak-$1
    if [ -L "$B" ]; then
        printf 'kind=other\npath=%s\n' "$B"
        die 7 "$B: is a symbolic link"
    fi
    regular "$B"
}

v_read_backup() {
    backup_file "$@"
    send_file "$B"
}

v_remove() {
    backup_file "$@"
    rm -f -- "$B" || die 1 "cannot remove $B"
}
"#;

const RESTART_VERB: &str = r#"
v_restart() {
    [ $# -eq 0 ] || refuse "restart takes no arguments"
    exec /bin/sh -c "$RESTART_CMD" </dev/null
}
"#;

const DISPATCH_HEAD: &str = r#"
cmd=${SSH_ORIGINAL_COMMAND-}
[ -n "$cmd" ] || refuse "no command: this key only runs swapcfg's verbs ($CAPS hello)"
[ ${#cmd} -le 512 ] || refuse "the command is over 512 bytes"
case $cmd in
    *[!A-Za-z0-9\ .-]*) refuse "the command holds characters no verb takes" ;;
esac
set -- $cmd
verb=$1
shift
case $verb in write | lock) DRAIN=1 ;; esac
case $verb in
    hello) v_hello "$@" ;;
    read) v_read "$@" ;;
    backup) v_backup "$@" ;;
    write) v_write "$@" ;;
    lock) v_lock "$@" ;;
    unlock) v_unlock "$@" ;;
    list) v_list "$@" ;;
    read-backup) v_read_backup "$@" ;;
    remove) v_remove "$@" ;;
"#;

const DISPATCH_TAIL: &str = r#"    *) refuse "unknown verb $verb (this script offers: $CAPS hello)" ;;
esac
exit 0
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_single_quoted_and_checked() {
        let s = generate("/etc/ls/it's.yaml", Some("echo '$HOME'; x"), 10).expect("script");
        assert!(s.contains("CONFIG='/etc/ls/it'\\''s.yaml'\n"), "{s}");
        assert!(s.contains("RESTART_CMD='echo '\\''$HOME'\\''; x'\n"), "{s}");
        assert!(s.contains("restart) v_restart"));
        assert!(s.contains("CAPS='read backup write lock unlock list read-backup remove restart'"));
        let s = generate("/c.yaml", None, 10).expect("script");
        assert!(!s.contains("RESTART_CMD") && !s.contains("v_restart"));
        assert!(s.contains("CAPS='read backup write lock unlock list read-backup remove'"));
        assert_eq!(
            generate("c.yaml", None, 1),
            Err(ScriptError::NotAbsolute("c.yaml".into()))
        );
        assert!(generate("/etc/", None, 1).is_err());
        assert!(generate("/etc/a\nb", None, 1).is_err());
        assert_eq!(
            generate("/a", Some("  "), 1),
            Err(ScriptError::EmptyRestart)
        );
    }
}
