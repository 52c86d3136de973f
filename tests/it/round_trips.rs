//! The round-trip budget of one apply (SFTP mode), held with the one timed
//! test the budget asks for: the in-process server delays every chunk it
//! receives and sends by half a round trip, and the whole apply (connect,
//! open, read, lock, backup ∥ write, restart, unlock) must take at most
//! `BUDGET` round trips plus a generous slack. ARCHITECTURE.md has the
//! budget step by step; a step that waits one more round trip than listed
//! there shows up here as `RTT` more wall time.

use std::time::{Duration, Instant};

use swapcfg::health::HealthError;
use swapcfg::pipeline::{self, ApplyOptions, Hooks, Step};
use swapcfg::remote::{AnyRemote, LockInfo, Mode, RemoteOptions};
use swapcfg_testkit::server::ScriptedExec;

use crate::common::{fixture, path_str};

const OLD: &[u8] = b"models:\n  a:\n    cmd: llama-server --port ${PORT}\n";
// Absolute paths, so the default host checks really stat them (beside the
// read): /bin/sh is found, the model file is not (one warning).
const NEW: &[u8] =
    b"models:\n  a:\n    cmd: /bin/sh --port ${PORT} -m /no/such/model.gguf\n    ttl: 60\n";

/// The simulated network's round trip.
const RTT: Duration = Duration::from_millis(50);

/// Round trips of one apply, as ARCHITECTURE.md counts them: connect 5
/// (banner + KEXINIT, key exchange, service request, russh's public-key
/// probe, the signed request; TCP's own handshake is not delayed here),
/// open 2, read 1 (the open and the reads on its guessed handle together),
/// lock ∥ backup (a hard link) ∥ staged write 1 (every open's requests on
/// its guessed handle), commit ∥ restart ∥ the lock read back 1 (the
/// primed restart's gate lets it run once the config holds the new bytes),
/// unlock 1.
const BUDGET: u32 = 5 + 2 + 1 + 1 + 1 + 1;

/// Everything that is not a round trip: CPU, scheduling on a busy CI
/// machine, the key exchange's arithmetic in a debug build. Less than the
/// round trips the changes before the last saved (6: 20 before, 14 after;
/// 34 before the first), so a return to an old sequence fails here; the
/// last ones (the read and the staging on guessed handles, the restart
/// with the commit) are held by the per-step limits below.
const SLACK: Duration = Duration::from_millis(240);

/// The `timings_ms` of `step` (none: `u64::MAX`).
fn step_ms(rep: &pipeline::ApplyReport, step: Step) -> u64 {
    rep.timings_ms
        .iter()
        .find(|(s, _)| *s == step)
        .map(|(_, ms)| *ms)
        .unwrap_or(u64::MAX)
}

struct Healthy;

impl Hooks for Healthy {
    fn confirm(&mut self, _diff: &str) -> bool {
        true
    }
    async fn health(&mut self, _rollback: bool) -> Result<(), HealthError> {
        Ok(())
    }
}

#[tokio::test]
async fn sftp_apply_stays_within_its_round_trip_budget() {
    let fx = fixture(|b| {
        b.round_trip(RTT)
            .restart_script("restart-llama", ScriptedExec::default())
    })
    .await;
    let cfg = fx.config("config.yaml", OLD, 0o640);
    let opts = ApplyOptions {
        host: "tester@127.0.0.1".into(),
        config_path: path_str(&cfg),
        new_label: "new.yaml".into(),
        dry_run: false,
        force: false,
        expect_sha256: None,
        restart_cmd: Some("restart-llama".into()),
        restart_timeout: Duration::from_secs(5),
        no_rollback: false,
        keep_backups: None,
        lock: Some(LockInfo {
            token: "round-trips".into(),
            client: "ci".into(),
            user: "tester".into(),
            pid: 1,
            started: pipeline::epoch_now(),
            expires: pipeline::epoch_now() + 600,
        }),
        break_lock: false,
        stop: Default::default(),
        redactor: None,
        // As the CLI does by default: host checks beside the read.
        host_checks: Some(swapcfg::hostcheck::plan(NEW)),
        strict_host: false,
    };

    let t = Instant::now();
    let session = swapcfg::transport::Session::connect(&fx.options())
        .await
        .expect("connect");
    let connected = t.elapsed();
    // As the CLI opens it: the restart's shell primed beside the read.
    let remote = AnyRemote::open_with_restart(
        &session,
        Mode::Sftp,
        &opts.config_path,
        RemoteOptions {
            prime_restart: true,
            ..RemoteOptions::default()
        },
        Some("restart-llama"),
    )
    .await
    .expect("open sftp");
    let opened = t.elapsed() - connected;
    let rep = pipeline::apply(&remote, NEW, &opts, &mut Healthy).await;
    let took = t.elapsed();

    assert!(rep.ok, "apply failed: {:?}", rep.error);
    assert_eq!(rep.step, Step::Done);
    let missing: Vec<&str> = rep
        .host_findings
        .iter()
        .map(|f| f.target.as_str())
        .collect();
    assert_eq!(missing, vec!["/no/such/model.gguf"], "the host checks ran");
    // The host holds the new bytes, one backup of the old ones, no temp
    // file and no lock.
    assert_eq!(std::fs::read(&cfg).expect("config"), NEW);
    let listing = fx.listing();
    let backups: Vec<_> = listing.iter().filter(|n| n.contains(".bak-")).collect();
    assert_eq!(backups.len(), 1, "{listing:?}");
    assert_eq!(
        std::fs::read(fx.dir.path().join(backups[0])).expect("backup"),
        OLD
    );
    assert!(
        !listing
            .iter()
            .any(|n| n.ends_with(".tmp") || n.contains("lock")),
        "{listing:?}"
    );
    assert_eq!(fx.server.exec_log(), vec!["restart-llama".to_string()]);

    let limit = RTT * BUDGET + SLACK;
    assert!(
        took <= limit,
        "apply took {took:?} (connect {connected:?}, open {opened:?}; steps {:?}), over the budget of {BUDGET} round trips of {RTT:?} + {SLACK:?} = {limit:?}",
        rep.timings_ms
    );
    // The read is one round trip (its reads ride with the open on the
    // guessed handle), and so is the lock ∥ backup ∥ staged write (the
    // `write` timing counts from its start to the end of the commit and
    // the restart sent with it: two); one more would be RTT more.
    let read_ms = step_ms(&rep, Step::Read);
    assert!(
        read_ms <= (RTT + Duration::from_millis(40)).as_millis() as u64,
        "read took {read_ms} ms: more than one round trip"
    );
    let write_ms = step_ms(&rep, Step::Write);
    assert!(
        write_ms <= (RTT * 2 + Duration::from_millis(40)).as_millis() as u64,
        "lock ∥ backup ∥ staged write + commit took {write_ms} ms: more than two round trips"
    );
    // The restart came back with the commit: no round trip of its own.
    let restart_ms = step_ms(&rep, Step::Restart);
    assert!(
        restart_ms <= (RTT / 2).as_millis() as u64,
        "the restart took {restart_ms} ms after the commit: it did not ride with it"
    );
    // The delay is real: well over the budget's lower half, or the test
    // would prove nothing.
    assert!(took >= RTT * BUDGET / 2, "took {took:?}: is the delay on?");
    drop(remote);
    session.close().await;
}
