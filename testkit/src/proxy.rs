//! A TCP proxy on loopback that makes a real network out of a real sshd:
//! it holds every chunk for a fixed delay in each direction (order kept;
//! this kernel has no `tc netem`), and can break the FIRST connection the
//! way links break: cut after N bytes from the client (a dropped connection
//! mid-upload), or stall after N bytes (replies withheld) and cut later.
//! Later connections pass untouched, so a client can reconnect.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// How the first connection breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Break {
    /// Close both sides once the client has sent this many bytes.
    CutAfterUpload(u64),
    /// Once the client has sent this many bytes, forward nothing more in
    /// either direction; close both sides after the duration.
    StallAfterUpload(u64, Duration),
}

/// Proxy settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProxyOptions {
    /// Added to every chunk in each direction (half the round trip).
    pub delay: Duration,
    /// How the first connection breaks, if at all.
    pub first: Option<Break>,
}

/// A running proxy; stops accepting when dropped.
pub struct Proxy {
    addr: SocketAddr,
    uploaded: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listen on 127.0.0.1 and forward to `target`.
    pub async fn start(target: SocketAddr, opts: ProxyOptions) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let uploaded = Arc::new(AtomicU64::new(0));
        let counter = uploaded.clone();
        let task = tokio::spawn(async move {
            let mut first = true;
            while let Ok((client, _)) = listener.accept().await {
                let brk = if first { opts.first } else { None };
                first = false;
                let counter = counter.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(target).await {
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        pipe(client, server, opts.delay, brk, counter).await;
                    }
                });
            }
        });
        Ok(Proxy {
            addr,
            uploaded,
            task,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Bytes the first connection's client has sent so far.
    pub fn uploaded(&self) -> u64 {
        self.uploaded.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(
    client: TcpStream,
    server: TcpStream,
    delay: Duration,
    brk: Option<Break>,
    counter: Arc<AtomicU64>,
) {
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let stalled = Arc::new(AtomicBool::new(false));
    let (cut_tx, mut cut_rx) = tokio::sync::watch::channel(false);
    let up = direction(
        cr,
        sw,
        delay,
        brk,
        Some(counter),
        stalled.clone(),
        cut_tx.clone(),
    );
    let down = direction(sr, cw, delay, None, None, stalled, cut_tx);
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        _ = cut_rx.wait_for(|c| *c) => {}
    }
}

/// Forward `from` → `to`, each chunk held for `delay` (a queue keeps the
/// order), counting and breaking per `brk`.
async fn direction(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    brk: Option<Break>,
    counter: Option<Arc<AtomicU64>>,
    stalled: Arc<AtomicBool>,
    cut: tokio::sync::watch::Sender<bool>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let stalled_w = stalled.clone();
    let writer = async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if stalled_w.load(Ordering::Relaxed) {
                continue;
            }
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut sent = 0u64;
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut chunk = buf[..n].to_vec();
            if let Some(c) = &counter {
                let limit = match brk {
                    Some(Break::CutAfterUpload(l)) | Some(Break::StallAfterUpload(l, _)) => Some(l),
                    None => None,
                };
                if let Some(limit) = limit {
                    if sent + n as u64 >= limit {
                        chunk.truncate((limit - sent) as usize);
                        sent = limit;
                        c.store(sent, Ordering::Relaxed);
                        let _ = tx.send((tokio::time::Instant::now() + delay, chunk));
                        match brk {
                            Some(Break::StallAfterUpload(_, after)) => {
                                // Let what was sent arrive, then forward nothing.
                                tokio::time::sleep(delay).await;
                                stalled.store(true, Ordering::Relaxed);
                                tokio::time::sleep(after).await;
                            }
                            _ => tokio::time::sleep(delay).await,
                        }
                        let _ = cut.send(true);
                        return;
                    }
                }
                sent += n as u64;
                c.store(sent, Ordering::Relaxed);
            }
            if tx
                .send((tokio::time::Instant::now() + delay, chunk))
                .is_err()
            {
                break;
            }
        }
    };
    tokio::join!(reader, writer);
}

/// Copy `from` → `to`, holding every chunk for `delay` after it was read
/// (a queue keeps the order; chunks read meanwhile are not held back
/// further): one direction of a link with that latency. Ends when `from`
/// ends (then `to` is shut down) or `to` fails.
pub async fn delayed_copy<R, W>(mut from: R, mut to: W, delay: Duration)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if tx
                .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
            {
                break;
            }
        }
    };
    tokio::join!(reader, writer);
}
