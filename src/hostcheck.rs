//! Host checks: what a new config needs from the host it goes to, found
//! before anything is written.
//!
//! Owns: the pure half. [`plan`] reads a config (as llama-swap's loader
//! expands it: macros, `${PORT}`, comment lines) and lists [`Probe`]s, each
//! with the config's `line:column`: the executable of every model's `cmd`
//! (split as llama-swap splits it: `#` lines dropped, trailing `\` joined,
//! POSIX word splitting), every absolute path given to a llama-server flag
//! that names a file (`-m`, `--mmproj`, `--lora`… also `--flag=value`),
//! `store.path`'s directory, and every `${env.NAME}`. Probes on the same
//! target share one [`Query`], so the remote side asks once per path.
//! [`judge`] turns the host's [`Answer`]s into [`HostFinding`]s.
//!
//! The remote half is [`crate::remote::RemoteOps::probe`], one per mode;
//! [`crate::pipeline::check_host`] asks it and judges the answers.
//!
//! Invariants: pure (no I/O), never panics, bounded: at most
//! [`MAX_QUERIES`] queries (the rest are reported as one note). It does not
//! know which user llama-swap runs as, its working directory, its `PATH` or
//! what a container sees: relative paths and paths inside a container
//! command (`docker`, `podman`…) are not probed, and access is judged for the
//! SSH user.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use crate::validate::{expand, p, to_json, yaml, Positions, Report};

/// Most distinct queries sent to a host in one apply.
pub const MAX_QUERIES: usize = 4096;

/// What a probe wants to know about its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// `cmd`'s first word, an absolute path: an executable regular file.
    Executable,
    /// `cmd`'s first word, a bare name: found on the host's `PATH`.
    Command,
    /// A file given to a flag (`-m /models/x.gguf`): exists, readable.
    File,
    /// `store.path`'s directory: exists, is a directory, writable.
    StoreDir,
    /// `${env.NAME}`: set in llama-swap's environment.
    Env,
}

impl ProbeKind {
    /// Lowercase name (`executable`, `command`, `file`, `store-dir`, `env`).
    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::Executable => "executable",
            ProbeKind::Command => "command",
            ProbeKind::File => "file",
            ProbeKind::StoreDir => "store-dir",
            ProbeKind::Env => "env",
        }
    }
}

/// One thing to check on the host, and where the config asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub kind: ProbeKind,
    /// The path, command name or variable name.
    pub target: String,
    /// The flag that named the file (`--mmproj`), for [`ProbeKind::File`].
    pub flag: Option<String>,
    /// The model whose `cmd` asks for it.
    pub model: Option<String>,
    pub line: usize,
    pub column: usize,
    /// Index into [`Plan::queries`].
    pub query: usize,
}

/// What the remote side is asked, once per distinct target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Query {
    /// Stat this absolute path (following links).
    Path(String),
    /// Look this bare name up on the `PATH` of a shell on the host.
    Command(String),
    /// Is this variable set in the running llama-swap's environment?
    Env(String),
}

/// The probes of one config and the distinct queries they need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub probes: Vec<Probe>,
    pub queries: Vec<Query>,
    /// Probes dropped past [`MAX_QUERIES`].
    pub dropped: usize,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.probes.is_empty() && self.dropped == 0
    }
}

/// File type as the host reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Directory,
    /// A symbolic link whose target does not exist.
    DanglingLink,
    /// Device, FIFO, socket.
    Other,
}

/// What the host said about one path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathFacts {
    /// `None`: the path does not exist.
    pub kind: Option<FileKind>,
    /// Access for the SSH user (`None`: the mode cannot tell).
    pub readable: Option<bool>,
    pub writable: Option<bool>,
    pub executable: Option<bool>,
}

/// The host's answer to one [`Query`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Path(PathFacts),
    /// Whether the command name was found on the shell's `PATH`.
    Command(bool),
    /// Whether the variable is set (the value is never read).
    Env(bool),
    /// Not checked, and why (e.g. "stat was refused: permission denied").
    Unknown(String),
}

/// How much a host finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Will break a model (or the start): a warning, an error with strict
    /// host checks.
    Problem,
    /// Could not be checked; never stops an apply.
    Note,
}

/// One result of the host checks, at the config's `line:column`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFinding {
    pub level: Level,
    /// What was checked (meaningless for a note with an empty `target`).
    pub kind: ProbeKind,
    pub target: String,
    /// The flag that named the file, for [`ProbeKind::File`].
    pub flag: Option<String>,
    pub model: Option<String>,
    /// `line:column` in the config; `0:0` for a note about the whole check.
    pub line: usize,
    pub column: usize,
    /// What is wrong, without the target or model (the renderer adds them).
    pub message: String,
}

/// llama-server flags whose value is a file to read.
const FILE_FLAGS: &[&str] = &[
    "-m",
    "--model",
    "-mm",
    "--mmproj",
    "--lora",
    "--lora-scaled",
    "--control-vector",
    "--control-vector-scaled",
    "-md",
    "--model-draft",
    "-mv",
    "--model-vocoder",
    "--chat-template-file",
    "--grammar-file",
    "--json-schema-file",
    "--api-key-file",
    "--ssl-key-file",
    "--ssl-cert-file",
    "-lcs",
    "--lookup-cache-static",
];

/// Commands whose file arguments are paths on another machine or inside a
/// container: their flags are not probed.
const ELSEWHERE: &[&str] = &[
    "docker",
    "podman",
    "nerdctl",
    "kubectl",
    "singularity",
    "apptainer",
    "ssh",
];

static ENV_USE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\$\{env\.([a-zA-Z_][a-zA-Z0-9_]*)\}").expect("constant regex"));

/// Split a `cmd` as llama-swap does before running it: lines whose trimmed
/// text starts with `#` are dropped, a line ending in `\` (after trimming)
/// is joined to the next, then POSIX words: blanks are space, tab and
/// newline; `'…'` is literal; in `"…"` a backslash escapes only `$`, `` ` ``,
/// `"`, `\` and a newline; outside quotes it escapes any character
/// (backslash-newline is nothing). An unterminated quote ends at the end.
pub fn split_command(cmd: &str) -> Vec<String> {
    let mut joined = String::with_capacity(cmd.len());
    for (i, line) in cmd.split('\n').enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') {
            continue;
        }
        if i > 0 && !joined.is_empty() {
            joined.push('\n');
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                joined.push_str(head);
                joined.push(' ');
            }
            None => joined.push_str(line),
        }
    }
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    #[derive(PartialEq)]
    enum Q {
        None,
        Single,
        Double,
    }
    let mut q = Q::None;
    let mut chars = joined.chars().peekable();
    while let Some(c) = chars.next() {
        match q {
            Q::Single => {
                if c == '\'' {
                    q = Q::None;
                } else {
                    word.get_or_insert_with(String::new).push(c);
                }
            }
            Q::Double => match c {
                '"' => q = Q::None,
                '\\' => match chars.peek().copied() {
                    Some('\n') | None => {
                        chars.next();
                    }
                    Some(n @ ('$' | '`' | '"' | '\\')) => {
                        chars.next();
                        word.get_or_insert_with(String::new).push(n);
                    }
                    Some(_) => word.get_or_insert_with(String::new).push('\\'),
                },
                c => word.get_or_insert_with(String::new).push(c),
            },
            Q::None => match c {
                ' ' | '\t' | '\n' => {
                    if let Some(w) = word.take() {
                        words.push(w);
                    }
                }
                '\'' => {
                    word.get_or_insert_with(String::new);
                    q = Q::Single;
                }
                '"' => {
                    word.get_or_insert_with(String::new);
                    q = Q::Double;
                }
                '\\' => match chars.next() {
                    Some('\n') | None => {}
                    Some(n) => word.get_or_insert_with(String::new).push(n),
                },
                c => word.get_or_insert_with(String::new).push(c),
            },
        }
    }
    if let Some(w) = word {
        words.push(w);
    }
    words
}

/// The file arguments of `args` (after the executable): `(flag, path)`.
fn file_args(args: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if let Some((flag, value)) = a.split_once('=') {
            if FILE_FLAGS.contains(&flag) {
                out.push((flag.to_string(), value.to_string()));
            }
        } else if FILE_FLAGS.contains(&a.as_str()) {
            if let Some(v) = args.get(i + 1) {
                out.push((a.clone(), v.clone()));
                i += 1;
            }
        }
        i += 1;
    }
    out
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `path`'s directory (`/a/b.db` → `/a`; `/x` → `/`).
fn parent(path: &str) -> &str {
    match path.trim_end_matches('/').rfind('/') {
        Some(0) => "/",
        Some(i) => &path[..i],
        None => ".",
    }
}

/// Where `needle` first appears in `src` at or after `(line, column)`
/// (1-based, columns in characters), within the lines of one YAML value:
/// the value's own line, then following lines that are blank or indented
/// deeper than `key_column`. Falls back to `(line, column)`.
fn locate(lines: &[&str], at: (usize, usize), key_column: usize, needle: &str) -> (usize, usize) {
    if needle.is_empty() {
        return at;
    }
    for (n, text) in lines.iter().enumerate().skip(at.0.saturating_sub(1)) {
        let from = if n + 1 == at.0 {
            text.char_indices()
                .nth(at.1.saturating_sub(1))
                .map(|(b, _)| b)
                .unwrap_or(text.len())
        } else {
            let indent = text.chars().take_while(|c| *c == ' ').count();
            if !text.trim().is_empty() && indent < key_column {
                break;
            }
            0
        };
        if let Some(i) = text.get(from..).and_then(|t| t.find(needle)) {
            let col = text[..from + i].chars().count() + 1;
            return (n + 1, col);
        }
    }
    at
}

/// The probes `source` needs. Empty when the config does not parse or
/// expand (validation reports why).
pub fn plan(source: &[u8]) -> Plan {
    let mut plan = Plan::default();
    let Ok(text) = std::str::from_utf8(source) else {
        return plan;
    };
    if source.len() > crate::validate::MAX_FILE {
        return plan;
    }
    let Ok(root) = yaml::parse(text) else {
        return plan;
    };
    if !matches!(root.kind, yaml::Kind::Map(_)) {
        return plan;
    }
    let mut pos = Positions::default();
    let raw = to_json(root, &mut pos);
    let mut report = Report::new(&pos);
    let Some(config) = expand::expand(raw, &mut report) else {
        return plan;
    };
    let lines: Vec<&str> = text.split('\n').collect();
    let mut index: HashMap<Query, usize> = HashMap::new();
    // `at` is called only for a probe that is kept (finding the text costs).
    let mut add =
        |plan: &mut Plan, kind, target: String, flag, model, at: &dyn Fn() -> (usize, usize)| {
            let q = match kind {
                ProbeKind::Command => Query::Command(target.clone()),
                ProbeKind::Env => Query::Env(target.clone()),
                _ => Query::Path(target.clone()),
            };
            let query = match index.get(&q) {
                Some(&i) => i,
                None if plan.queries.len() >= MAX_QUERIES => {
                    plan.dropped += 1;
                    return;
                }
                None => {
                    index.insert(q.clone(), plan.queries.len());
                    plan.queries.push(q);
                    plan.queries.len() - 1
                }
            };
            let (line, column) = at();
            plan.probes.push(Probe {
                kind,
                target,
                flag,
                model,
                line,
                column,
                query,
            });
        };

    // Models in document order (the expanded map is sorted by id).
    let mut models: Vec<(&String, &Value)> = crate::validate::get(&config, "models")
        .and_then(Value::as_object)
        .map(|m| m.iter().collect())
        .unwrap_or_default();
    models.sort_by_cached_key(|(id, _)| pos.key(&p(&["models", id])));
    for (id, model) in models {
        let Some(cmd) = crate::validate::get(model, "cmd").and_then(Value::as_str) else {
            continue;
        };
        let path = p(&["models", id, "cmd"]);
        let at = pos.value(&path);
        let key_col = pos.key(&path).1;
        let words = split_command(cmd);
        let Some(exe) = words.first() else { continue };
        if exe.contains("${") {
            continue; // `${env.…}`: only llama-swap knows the value
        }
        let exe_at = || locate(&lines, at, key_col, exe);
        if exe.starts_with('/') {
            add(
                &mut plan,
                ProbeKind::Executable,
                exe.clone(),
                None,
                Some(id.clone()),
                &exe_at,
            );
        } else if !exe.contains('/') {
            add(
                &mut plan,
                ProbeKind::Command,
                exe.clone(),
                None,
                Some(id.clone()),
                &exe_at,
            );
        }
        if ELSEWHERE.contains(&basename(exe)) {
            continue;
        }
        for (flag, file) in file_args(&words[1..]) {
            if !file.starts_with('/') || file.contains("${") {
                continue;
            }
            let file_at = || locate(&lines, at, key_col, &file);
            add(
                &mut plan,
                ProbeKind::File,
                file.clone(),
                Some(flag),
                Some(id.clone()),
                &file_at,
            );
        }
    }

    let store = p(&["store", "path"]);
    if let Some(path) = crate::validate::get(&config, "store")
        .and_then(|s| crate::validate::get(s, "path"))
        .and_then(Value::as_str)
    {
        if path.starts_with('/') && !path.contains("${") {
            add(
                &mut plan,
                ProbeKind::StoreDir,
                parent(path).to_string(),
                None,
                None,
                &|| pos.value(&store),
            );
        }
    }

    // `${env.NAME}` anywhere but in comment lines, keys included.
    for (n, line) in lines.iter().enumerate() {
        if !line.contains("${env.") || line.trim_start().starts_with('#') {
            continue;
        }
        for c in ENV_USE.captures_iter(line) {
            let (Some(all), Some(name)) = (c.get(0), c.get(1)) else {
                continue;
            };
            let col = line[..all.start()].chars().count() + 1;
            add(
                &mut plan,
                ProbeKind::Env,
                name.as_str().to_string(),
                None,
                None,
                &|| (n + 1, col),
            );
        }
    }
    plan
}

/// Access from permission bits, for a user `me` (root may do anything but
/// execute a file without any `x` bit). `None` when it depends on groups
/// the user may be in, or `me` is unknown.
pub fn access_from_mode(mode: u32, owner: u32, me: Option<u32>, bit: u32) -> Option<bool> {
    let me = me?;
    if me == 0 {
        return Some(bit != 0o1 || mode & 0o111 != 0);
    }
    if owner == me {
        return Some(mode & (bit << 6) != 0);
    }
    if mode & bit != 0 {
        return Some(true);
    }
    if mode & (bit << 3) != 0 {
        return None;
    }
    Some(false)
}

/// The findings for `plan` given the host's `answers` (one per query, in
/// order; missing answers count as unknown).
pub fn judge(plan: &Plan, answers: &[Answer]) -> Vec<HostFinding> {
    let mut out = Vec::new();
    for probe in &plan.probes {
        let answer = answers.get(probe.query);
        let (level, message) = match (probe.kind, answer) {
            (_, None) => (Level::Note, "not checked: the host gave no answer".into()),
            (_, Some(Answer::Unknown(why))) => (Level::Note, format!("not checked: {why}")),
            (ProbeKind::Command, Some(Answer::Command(false))) => (
                Level::Problem,
                "not found on the PATH of a shell on the host".into(),
            ),
            (ProbeKind::Env, Some(Answer::Env(false))) => (
                Level::Problem,
                "is not set in the running llama-swap's environment (llama-swap refuses to load the config)".into(),
            ),
            (_, Some(Answer::Command(true) | Answer::Env(true))) => continue,
            (kind, Some(Answer::Path(f))) => match path_problem(kind, f) {
                Some(m) => (Level::Problem, m),
                None => continue,
            },
            (_, Some(Answer::Command(_) | Answer::Env(_))) => continue,
        };
        out.push(HostFinding {
            level,
            kind: probe.kind,
            target: probe.target.clone(),
            flag: probe.flag.clone(),
            model: probe.model.clone(),
            line: probe.line,
            column: probe.column,
            message,
        });
    }
    if plan.dropped > 0 {
        out.push(HostFinding::note(format!(
            "{} more checks not made (over {MAX_QUERIES} distinct paths)",
            plan.dropped
        )));
    }
    out
}

impl HostFinding {
    /// A note about the host checks as a whole (no target, no position).
    pub fn note(message: String) -> HostFinding {
        HostFinding {
            level: Level::Note,
            kind: ProbeKind::File,
            target: String::new(),
            flag: None,
            model: None,
            line: 0,
            column: 0,
            message,
        }
    }
}

fn path_problem(kind: ProbeKind, f: &PathFacts) -> Option<String> {
    let Some(k) = f.kind else {
        return Some("does not exist on the host".into());
    };
    if k == FileKind::DanglingLink {
        return Some("is a symbolic link to nothing on the host".into());
    }
    match kind {
        ProbeKind::Executable => {
            if k != FileKind::Regular {
                return Some("is not a regular file on the host".into());
            }
            (f.executable == Some(false)).then(|| "is not executable on the host".into())
        }
        ProbeKind::File => {
            if k == FileKind::Directory {
                return Some("is a directory, not a file, on the host".into());
            }
            (f.readable == Some(false)).then(|| "is not readable on the host".into())
        }
        ProbeKind::StoreDir => {
            if k != FileKind::Directory {
                return Some("(store.path's directory) is not a directory on the host".into());
            }
            (f.writable == Some(false) || f.executable == Some(false))
                .then(|| "(store.path's directory) is not writable on the host".into())
        }
        ProbeKind::Command | ProbeKind::Env => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        split_command(s)
    }

    #[test]
    fn splits_like_llama_swap() {
        assert_eq!(words("a b\tc\nd"), ["a", "b", "c", "d"]);
        assert_eq!(
            words("/bin/llama-server \\\n  -m '/m/a b.gguf' \\\n  --port 9"),
            ["/bin/llama-server", "-m", "/m/a b.gguf", "--port", "9"]
        );
        assert_eq!(
            words("# note\nx -m /a # not a comment"),
            ["x", "-m", "/a", "#", "not", "a", "comment"]
        );
        assert_eq!(
            words(r#"x "a\"b\$c\n" 'q\x' \ y"#),
            ["x", "a\"b$c\\n", "q\\x", " y"]
        );
        assert_eq!(words("x \"\" ''"), ["x", "", ""]);
        assert_eq!(words("x \"unterminated"), ["x", "unterminated"]);
        assert_eq!(words("a\r b"), ["a\r", "b"]);
        assert!(words("  \n# only\n").is_empty());
    }

    #[test]
    fn finds_file_flags_in_both_forms() {
        let a: Vec<String> = [
            "--port",
            "1",
            "-m",
            "/a",
            "--mmproj=/b",
            "--lora",
            "rel",
            "-m",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            file_args(&a),
            [
                ("-m".to_string(), "/a".to_string()),
                ("--mmproj".into(), "/b".into()),
                ("--lora".into(), "rel".into())
            ]
        );
    }

    #[test]
    fn plan_positions_and_dedup() {
        let src = "macros:\n  bin: /opt/llama-server\nmodels:\n  b:\n    cmd: |\n      # comment\n      ${bin} --port ${PORT}\n        -m /models/b.gguf\n        --mmproj=/models/p.gguf\n  a:\n    cmd: ${bin} -m /models/a.gguf -m rel.gguf\n    proxy: http://h:1\n  c:\n    cmd: docker run -v /x:/y img -m /y/m.gguf\n    proxy: http://h:1\n  d:\n    cmd: ./local -m /models/a.gguf\n    proxy: http://h:1\nstore:\n  path: /var/lib/ls/s.db\nhooks:\n  x: ${env.HOME_X}\n# ${env.IGNORED}\n";
        let plan = plan(src.as_bytes());
        let got: Vec<(ProbeKind, &str, Option<&str>, usize, usize)> = plan
            .probes
            .iter()
            .map(|p| {
                (
                    p.kind,
                    p.target.as_str(),
                    p.model.as_deref(),
                    p.line,
                    p.column,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                // From a macro: not in the text, so at the value.
                (ProbeKind::Executable, "/opt/llama-server", Some("b"), 6, 7),
                (ProbeKind::File, "/models/b.gguf", Some("b"), 8, 12),
                (ProbeKind::File, "/models/p.gguf", Some("b"), 9, 18),
                (
                    ProbeKind::Executable,
                    "/opt/llama-server",
                    Some("a"),
                    11,
                    10
                ),
                (ProbeKind::File, "/models/a.gguf", Some("a"), 11, 20),
                (ProbeKind::Command, "docker", Some("c"), 14, 10),
                (ProbeKind::File, "/models/a.gguf", Some("d"), 17, 21),
                (ProbeKind::StoreDir, "/var/lib/ls", None, 20, 9),
                (ProbeKind::Env, "HOME_X", None, 22, 6),
            ]
        );
        // Same target, one query.
        assert_eq!(plan.queries.len(), 7);
        assert_eq!(plan.probes[0].query, plan.probes[3].query);
        assert_eq!(plan.probes[4].query, plan.probes[6].query);
    }

    #[test]
    fn invalid_configs_plan_nothing() {
        assert!(plan(b"models: [").is_empty());
        assert!(plan(b"- a").is_empty());
        assert!(plan(b"models:\n  a:\n    cmd: x ${nope}\n").is_empty());
        assert!(plan(&[0xff, 0xfe]).is_empty());
    }

    #[test]
    fn access_bits() {
        assert_eq!(access_from_mode(0o700, 5, Some(5), 0o2), Some(true));
        assert_eq!(access_from_mode(0o500, 5, Some(5), 0o2), Some(false));
        assert_eq!(access_from_mode(0o770, 5, Some(6), 0o2), None);
        assert_eq!(access_from_mode(0o757, 5, Some(6), 0o2), Some(true));
        assert_eq!(access_from_mode(0o750, 5, Some(6), 0o2), Some(false));
        assert_eq!(access_from_mode(0o644, 5, Some(0), 0o1), Some(false));
        assert_eq!(access_from_mode(0o000, 5, Some(0), 0o2), Some(true));
        assert_eq!(access_from_mode(0o777, 5, None, 0o2), None);
    }

    #[test]
    fn judge_reports_problems_and_notes() {
        let plan = plan(b"models:\n  a:\n    cmd: /bin/ls -m /nope.gguf --mmproj /dir\n    proxy: http://h:1\n  b:\n    cmd: llama-server\n    proxy: http://h:1\nstore:\n  path: /ro/s.db\n");
        let answers = vec![
            Answer::Path(PathFacts {
                kind: Some(FileKind::Regular),
                executable: Some(false),
                ..Default::default()
            }),
            Answer::Path(PathFacts::default()),
            Answer::Path(PathFacts {
                kind: Some(FileKind::Directory),
                ..Default::default()
            }),
            Answer::Unknown("bare names are not looked up in SFTP mode".into()),
            Answer::Path(PathFacts {
                kind: Some(FileKind::Directory),
                writable: Some(false),
                executable: Some(true),
                ..Default::default()
            }),
        ];
        let f = judge(&plan, &answers);
        let short: Vec<(Level, &str, &str)> = f
            .iter()
            .map(|f| (f.level, f.target.as_str(), f.message.as_str()))
            .collect();
        assert_eq!(
            short,
            [
                (Level::Problem, "/bin/ls", "is not executable on the host"),
                (Level::Problem, "/nope.gguf", "does not exist on the host"),
                (
                    Level::Problem,
                    "/dir",
                    "is a directory, not a file, on the host"
                ),
                (
                    Level::Note,
                    "llama-server",
                    "not checked: bare names are not looked up in SFTP mode"
                ),
                (
                    Level::Problem,
                    "/ro",
                    "(store.path's directory) is not writable on the host"
                ),
            ]
        );
        let good = vec![
            Answer::Path(PathFacts {
                kind: Some(FileKind::Regular),
                executable: Some(true),
                readable: Some(true),
                writable: None,
            }),
            Answer::Path(PathFacts {
                kind: Some(FileKind::Regular),
                ..Default::default()
            }),
            Answer::Path(PathFacts {
                kind: Some(FileKind::Regular),
                ..Default::default()
            }),
            Answer::Command(true),
            Answer::Path(PathFacts {
                kind: Some(FileKind::Directory),
                writable: Some(true),
                executable: Some(true),
                readable: Some(true),
            }),
        ];
        assert_eq!(judge(&plan, &good), []);
    }
}
