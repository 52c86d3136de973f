//! Unified diff of the remote config against the new one (imara-diff,
//! histogram algorithm).
//!
//! Owns: a pure function from (old bytes, new bytes, labels) to a unified
//! diff with 3 lines of context that `patch -p0` applies, and its optional
//! coloring. Identical inputs give an empty string. Line endings are part of
//! the lines, so a CRLF change shows; a missing final newline is marked with
//! `\ No newline at end of file`, as diff(1) does. Non-UTF-8 bytes are shown
//! lossily (the diff is for reading; the bytes written are never the diff's).

use imara_diff::{Algorithm, Diff, InternedInput};

/// Lines of context around each change.
const CONTEXT: u32 = 3;

/// The unified diff turning `old` into `new`; empty when they are equal.
pub fn unified_diff(old: &[u8], new: &[u8], old_label: &str, new_label: &str) -> String {
    if old == new {
        return String::new();
    }
    let input = InternedInput::new(
        imara_diff::sources::byte_lines(old),
        imara_diff::sources::byte_lines(new),
    );
    let mut diff = Diff::compute(Algorithm::Histogram, &input);
    diff.postprocess_lines(&input);
    let before: Vec<&[u8]> = input.before.iter().map(|t| input.interner[*t]).collect();
    let after: Vec<&[u8]> = input.after.iter().map(|t| input.interner[*t]).collect();

    // Group changes whose context overlaps into one hunk.
    let mut groups: Vec<Vec<imara_diff::Hunk>> = Vec::new();
    for h in diff.hunks() {
        match groups.last_mut() {
            Some(g)
                if g.last().is_some_and(|prev| {
                    h.before.start.saturating_sub(prev.before.end) <= 2 * CONTEXT
                }) =>
            {
                g.push(h)
            }
            _ => groups.push(vec![h]),
        }
    }
    let mut out = format!("--- {old_label}\n+++ {new_label}\n");
    for g in groups {
        let (Some(first), Some(last)) = (g.first(), g.last()) else {
            continue;
        };
        let b_start = first.before.start.saturating_sub(CONTEXT);
        let b_end = (last.before.end + CONTEXT).min(before.len() as u32);
        let a_start = first.after.start - (first.before.start - b_start);
        let a_end = (last.after.end + (b_end - last.before.end)).min(after.len() as u32);
        out.push_str(&format!(
            "@@ -{} +{} @@\n",
            range(b_start, b_end),
            range(a_start, a_end)
        ));
        let mut pos = b_start;
        for h in &g {
            for i in pos..h.before.start {
                line(&mut out, ' ', before[i as usize]);
            }
            for i in h.before.clone() {
                line(&mut out, '-', before[i as usize]);
            }
            for i in h.after.clone() {
                line(&mut out, '+', after[i as usize]);
            }
            pos = h.before.end;
        }
        for i in pos..b_end {
            line(&mut out, ' ', before[i as usize]);
        }
    }
    out
}

/// `start,len` in diff(1)'s 1-based form (`start` is the line before when empty).
fn range(start: u32, end: u32) -> String {
    let len = end - start;
    match len {
        0 => format!("{start},0"),
        1 => format!("{}", start + 1),
        _ => format!("{},{}", start + 1, len),
    }
}

fn line(out: &mut String, mark: char, bytes: &[u8]) {
    out.push(mark);
    out.push_str(&String::from_utf8_lossy(bytes));
    if !bytes.ends_with(b"\n") {
        out.push_str("\n\\ No newline at end of file\n");
    }
}

/// ANSI colors: red removals, green additions, cyan hunk headers, bold file
/// headers.
pub fn colorize(diff: &str) -> String {
    let mut out = String::with_capacity(diff.len() + diff.len() / 4);
    for l in diff.split_inclusive('\n') {
        let (body, nl) = match l.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (l, ""),
        };
        let code = if body.starts_with("+++") || body.starts_with("---") {
            "1"
        } else if body.starts_with('+') {
            "32"
        } else if body.starts_with('-') {
            "31"
        } else if body.starts_with("@@") {
            "36"
        } else {
            ""
        };
        if code.is_empty() {
            out.push_str(l);
        } else {
            out.push_str(&format!("\x1b[{code}m{body}\x1b[0m{nl}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_is_empty_and_headers_name_both_sides() {
        assert_eq!(unified_diff(b"a\n", b"a\n", "x", "y"), "");
        let d = unified_diff(b"a\nb\nc\n", b"a\nB\nc\n", "host:/etc/c.yaml", "new.yaml");
        assert_eq!(
            d,
            "--- host:/etc/c.yaml\n+++ new.yaml\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n"
        );
    }

    #[test]
    fn missing_final_newline_and_crlf_are_visible() {
        let d = unified_diff(b"a\n", b"a", "o", "n");
        assert!(d.contains("-a\n+a\n\\ No newline at end of file\n"), "{d}");
        let d = unified_diff(b"a\r\nb\n", b"a\nb\n", "o", "n");
        assert!(d.contains("-a\r\n+a\n"), "{d:?}");
    }

    #[test]
    fn colorize_only_marks_lines() {
        let c = colorize("--- a\n+++ b\n@@ -1 +1 @@\n-x\n+y\n z\n");
        assert!(
            c.contains("\x1b[31m-x\x1b[0m\n")
                && c.contains("\x1b[32m+y\x1b[0m\n")
                && c.contains(" z\n")
        );
    }
}
