//! ProxyJump without a process: each jump host is a russh [`Session`]; the
//! next connection (the next jump host, finally the target) rides a
//! `direct-tcpip` channel of the one before, opened by the jump host's sshd
//! (no command runs on it, nothing is spawned here).
//!
//! Every hop is a full SSH connection of its own: its host key is checked
//! against known_hosts under its own policy, it authenticates with its own
//! key, and its connect timeout covers the channel open, the handshake and
//! authentication. An error on a jump host is [`TransportError::Jump`],
//! naming the hop; an error on the target keeps the target's own variant.

use std::sync::{Arc, Mutex};

use super::{ConnectOptions, Session, TransportError};

/// Connect to `target` through `hops` in order (directly when empty). The
/// returned session keeps the jump-host sessions open while it lives and
/// closes them after itself.
pub async fn connect_via(
    hops: &[ConnectOptions],
    target: &ConnectOptions,
) -> Result<Session, TransportError> {
    let of = hops.len();
    let mut via: Vec<Session> = Vec::with_capacity(of);
    for (i, hop) in hops.iter().enumerate() {
        let session = match via.last() {
            None => Session::connect(hop).await,
            Some(prev) => over(prev, hop).await,
        };
        match session {
            Ok(s) => via.push(s),
            Err(e) => {
                close_all(via).await;
                return Err(TransportError::Jump {
                    hop: hop.target.to_string(),
                    index: i + 1,
                    of,
                    source: Box::new(e),
                });
            }
        }
    }
    let session = match via.last() {
        None => Session::connect(target).await,
        Some(prev) => over(prev, target).await,
    };
    match session {
        Ok(s) => Ok(s.riding(via)),
        Err(e) => {
            close_all(via).await;
            Err(e)
        }
    }
}

/// One SSH connection to `opts.target` over a `direct-tcpip` channel of
/// `prev`, within `opts.connect_timeout`.
async fn over(prev: &Session, opts: &ConnectOptions) -> Result<Session, TransportError> {
    let label = opts.target.to_string();
    let phase = Arc::new(Mutex::new("opening a channel through the jump host"));
    let set_phase = {
        let phase = phase.clone();
        move |p: &'static str| {
            if let Ok(mut g) = phase.lock() {
                *g = p;
            }
        }
    };
    let run = async {
        let ch = prev
            .direct_tcpip(&opts.target.host, opts.target.port)
            .await
            .map_err(|e| TransportError::JumpChannel {
                via: prev.label(),
                to: format!("{}:{}", opts.target.host, opts.target.port),
                message: e.to_string(),
            })?;
        Session::establish(opts, &label, ch.into_stream(), set_phase).await
    };
    match tokio::time::timeout(opts.connect_timeout, run).await {
        Ok(r) => r,
        Err(_) => Err(TransportError::ConnectTimeout {
            target: label.clone(),
            phase: phase.lock().map(|p| *p).unwrap_or("connecting"),
            secs: opts.connect_timeout.as_secs().max(1),
        }),
    }
}

async fn close_all(via: Vec<Session>) {
    for s in via.into_iter().rev() {
        s.close().await;
    }
}
