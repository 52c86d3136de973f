//! An SSH channel as the byte stream an SFTP client runs on, opened so that
//! the client's first requests follow the subsystem request without waiting
//! for its reply (one round trip instead of two): the reply is delivered
//! separately ([`SubsystemReply`]).
//!
//! Invariant: a refused subsystem (or a channel the host closes) ends the
//! stream at once, so the client's pending requests fail instead of waiting
//! for their timeouts.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use russh::client::Msg;
use russh::{Channel, ChannelMsg};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot};

use super::TransportError;

/// The data of one channel as `AsyncRead + AsyncWrite`.
pub struct ChannelIo {
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
    writer: Pin<Box<dyn AsyncWrite + Send + Sync>>,
    _write_half: russh::ChannelWriteHalf<Msg>,
    reader: tokio::task::JoinHandle<()>,
}

/// The host's answer to the subsystem request.
pub struct SubsystemReply {
    rx: oneshot::Receiver<bool>,
    target: String,
    timeout: Duration,
}

impl SubsystemReply {
    /// `Ok` once the host started the subsystem; [`TransportError::NoSftp`]
    /// when it refused it or closed the channel.
    pub async fn accepted(self) -> Result<(), TransportError> {
        match tokio::time::timeout(self.timeout, self.rx).await {
            Ok(Ok(true)) => Ok(()),
            Ok(_) => Err(TransportError::NoSftp {
                target: self.target,
            }),
            Err(_) => Err(TransportError::Timeout {
                target: self.target,
                op: "opening the SFTP subsystem".into(),
                secs: self.timeout.as_secs(),
            }),
        }
    }
}

/// Split an open channel, on which a subsystem was just requested (with a
/// reply wanted), into its data stream and the reply.
pub(super) fn subsystem_stream(
    ch: Channel<Msg>,
    target: String,
    timeout: Duration,
) -> (ChannelIo, SubsystemReply) {
    let (mut read, write) = ch.split();
    let writer = Box::pin(write.make_writer());
    // Unbounded, so the connection's task never waits on this channel (it
    // must keep reading the socket to notice the connection end): what
    // arrives is the replies to this client's own requests, bounded by
    // them and by the channel window.
    let (dtx, drx) = mpsc::unbounded_channel::<Vec<u8>>();
    let (atx, arx) = oneshot::channel();
    let reader = tokio::spawn(async move {
        let mut atx = Some(atx);
        while let Some(msg) = read.wait().await {
            match msg {
                // Data is handed on in the guard; only a gone reader stops.
                ChannelMsg::Data { data } if dtx.send(data.to_vec()).is_err() => break,
                ChannelMsg::Success => {
                    if let Some(a) = atx.take() {
                        let _ = a.send(true);
                    }
                }
                // Refused, or the channel ended: the stream ends with it
                // (dropping `atx` unanswered reads as refused).
                ChannelMsg::Failure | ChannelMsg::Eof | ChannelMsg::Close => break,
                _ => {}
            }
        }
    });
    (
        ChannelIo {
            rx: drx,
            buf: Vec::new(),
            pos: 0,
            writer,
            _write_half: write,
            reader,
        },
        SubsystemReply {
            rx: arx,
            target,
            timeout,
        },
    )
}

impl Drop for ChannelIo {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl AsyncRead for ChannelIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos >= this.buf.len() {
            match ready!(this.rx.poll_recv(cx)) {
                Some(v) => {
                    this.buf = v;
                    this.pos = 0;
                }
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = out.remaining().min(this.buf.len() - this.pos);
        out.put_slice(&this.buf[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ChannelIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.writer.as_mut().poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.as_mut().poll_shutdown(cx)
    }
}
