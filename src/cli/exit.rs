//! The exit-status table, applied in exactly one place ([`code`], called by
//! `main`). Commands return an [`Outcome`]; nothing else picks a number.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done, unchanged, healthy, identical |
//! | 1 | a config is invalid (nothing sent), or `--strict-host` and a host check found a problem (nothing written); `diff-files`: the files differ |
//! | 2 | usage: bad flags, settings or local files; `plan`: changes pending |
//! | 3 | connect: TCP, host key, authentication, opening SFTP |
//! | 4 | read: the remote config (or a backup) could not be read |
//! | 5 | conflict: the remote file is not what was planned against, or another apply holds the lock |
//! | 6 | backup failed; nothing written |
//! | 7 | write failed; old config in place |
//! | 8 | restart failed (rolled back unless `--no-rollback`) |
//! | 9 | health failed (rolled back unless `--no-rollback`) |
//! | 10 | the rollback itself failed: the host may be broken |
//! | 11 | aborted: not confirmed, editor failed, or interrupted before the write |
//! | 12 | interrupted after the write: the old config was restored and is healthy |
//! | 129/130/143 | a second SIGHUP/SIGINT/SIGTERM: exited at once (the state is printed) |

use swapcfg::pipeline::Step;

/// What a command ended with, as far as the exit status cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The command did what it was asked.
    Success,
    /// `diff-files`: the two files differ.
    Differ,
    /// `validate`: at least one file is invalid.
    Invalid,
    /// Bad flags, settings or local input.
    Usage,
    /// A host command stopped at this step (also: a finished apply report).
    At(Step),
}

/// The exit status for `outcome`.
pub fn code(outcome: &Outcome) -> u8 {
    match outcome {
        Outcome::Success => 0,
        Outcome::Differ | Outcome::Invalid => 1,
        Outcome::Usage => 2,
        Outcome::At(step) => match step {
            Step::Done | Step::Unchanged => 0,
            Step::Validate | Step::HostCheck => 1,
            Step::Planned => 2,
            Step::Connect => 3,
            Step::Read => 4,
            Step::Conflict | Step::Lock => 5,
            Step::Backup => 6,
            Step::Write => 7,
            Step::Restart => 8,
            Step::Health => 9,
            Step::Rollback => 10,
            Step::Aborted => 11,
            Step::Interrupted => 12,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_distinct_per_meaning() {
        let steps = [
            Step::Validate,
            Step::Connect,
            Step::Read,
            Step::Conflict,
            Step::Backup,
            Step::Write,
            Step::Restart,
            Step::Health,
            Step::Rollback,
            Step::Aborted,
        ];
        let codes: Vec<u8> = steps.iter().map(|s| code(&Outcome::At(*s))).collect();
        assert_eq!(codes, vec![1, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        assert_eq!(code(&Outcome::Usage), code(&Outcome::At(Step::Planned)));
        assert_eq!(code(&Outcome::At(Step::Done)), 0);
        assert_eq!(code(&Outcome::At(Step::Unchanged)), 0);
    }
}
