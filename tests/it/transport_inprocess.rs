//! Connecting: host-key policies, authentication and timeouts, through the
//! in-process SSH server.

use std::time::Duration;

use crate::common::*;
use swapcfg::transport::{known_hosts, HostKeyPolicy, Session, TransportError};
use swapcfg_testkit::server::{FaultAction, FaultPlan, Op, TestServerBuilder};

#[tokio::test]
async fn strict_refuses_unknown_host_and_prints_fingerprint() {
    let fx = fixture(|b| b).await;
    let mut o = fx.options();
    o.known_hosts = fx.dir.path().join("empty_known_hosts");
    let err = Session::connect(&o).await.expect_err("must refuse");
    let fp = known_hosts::fingerprint(fx.server.host_public_key());
    assert!(
        matches!(err, TransportError::HostKeyUnknown { .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&fp) && msg.contains("accept it as new"),
        "{msg}"
    );
    assert!(!msg.contains("--"), "the library names no flag: {msg}");
    assert!(!o.known_hosts.exists(), "strict mode writes nothing");
}

#[tokio::test]
async fn accept_new_records_the_key_then_strict_accepts_it() {
    let fx = fixture(|b| b).await;
    let mut o = fx.options();
    o.known_hosts = fx.dir.path().join("new_known_hosts");
    o.host_key_policy = HostKeyPolicy::AcceptNew;
    Session::connect(&o).await.expect("accept-new connects");
    let text = std::fs::read_to_string(&o.known_hosts).expect("written");
    assert_eq!(text, format!("{}\n", fx.server.known_hosts_line()));
    o.host_key_policy = HostKeyPolicy::Strict;
    Session::connect(&o).await.expect("strict now accepts");
}

#[tokio::test]
async fn changed_host_key_is_refused_even_with_accept_new() {
    let fx = fixture(|b| b).await;
    let other = TestServerBuilder::new()
        .authorized_key(fx.key.public_key().clone())
        .start()
        .await
        .expect("second server");
    // known_hosts claims the second server's address has the first one's key.
    let kh = fx.dir.path().join("kh");
    let line = fx
        .server
        .known_hosts_line()
        .replace(&fx.server.port().to_string(), &other.port().to_string());
    std::fs::write(&kh, format!("# first line\n{line}\n")).expect("kh");
    let mut o = fx.options();
    o.target.port = other.port();
    o.known_hosts = kh.clone();
    o.host_key_policy = HostKeyPolicy::AcceptNew;
    let err = Session::connect(&o).await.expect_err("refused");
    match &err {
        TransportError::HostKeyChanged { file, line, .. } => {
            assert_eq!(file, &kh.display().to_string());
            assert_eq!(*line, 2);
        }
        other => panic!("expected HostKeyChanged, got {other}"),
    }
    assert_eq!(
        std::fs::read_to_string(&kh).expect("kh").lines().count(),
        2,
        "nothing appended"
    );
}

#[tokio::test]
async fn rejected_auth_names_methods() {
    let fx = fixture(|b| b.reject_all_auth()).await;
    let err = Session::connect(&fx.options()).await.expect_err("rejected");
    assert!(matches!(err, TransportError::AuthRejected { .. }), "{err}");
    assert!(err.to_string().contains("publickey"), "{err}");
}

#[tokio::test]
async fn wrong_key_is_rejected() {
    let fx = fixture(|b| b).await;
    let other = write_key(&fx.dir.path().join(""), &new_key());
    let mut o = fx.options();
    o.identity = Some(other);
    assert!(matches!(
        Session::connect(&o).await,
        Err(TransportError::AuthRejected { .. })
    ));
}

#[tokio::test]
async fn refused_port_and_silent_listener() {
    let fx = fixture(|b| b).await;
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = free.local_addr().expect("addr").port();
    drop(free);
    let mut o = fx.options();
    o.target.port = port;
    assert!(matches!(
        Session::connect(&o).await,
        Err(TransportError::Refused { .. })
    ));

    // Accepts TCP (kernel backlog) but never speaks SSH.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    o.target.port = silent.local_addr().expect("addr").port();
    o.connect_timeout = Duration::from_millis(500);
    let err = Session::connect(&o).await.expect_err("times out");
    assert!(
        matches!(err, TransportError::ConnectTimeout { .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("exchanging SSH keys"),
        "names the phase: {msg}"
    );
    assert!(!msg.contains("--"), "the library names no flag: {msg}");
}

#[tokio::test]
async fn exec_times_out_on_a_hanging_command_and_bounds_output() {
    let fx = fixture(|b| b).await;
    let s = fx.session().await;
    fx.server
        .set_faults(FaultPlan::one(Op::Exec, 1, FaultAction::Hang));
    let err = s
        .exec("true", None, Duration::from_millis(300), 1024)
        .await
        .expect_err("timeout");
    assert!(matches!(err, TransportError::Timeout { .. }), "{err}");
    let out = s
        .exec("head -c 5000 /dev/zero", None, Duration::from_secs(5), 1000)
        .await
        .expect("exec");
    assert_eq!(out.stdout.len(), 1000);
    assert!(out.truncated);
    assert_eq!(out.status, Some(0));
    let out = s
        .exec(
            "cat; echo err >&2; exit 4",
            Some(b"in"),
            Duration::from_secs(5),
            1000,
        )
        .await
        .expect("exec");
    assert_eq!(
        (out.stdout.as_slice(), out.stderr.as_slice(), out.status),
        (&b"in"[..], &b"err\n"[..], Some(4))
    );
}
