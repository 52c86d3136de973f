//! The TCP stream under an SSH session: acknowledges what it reads at once.
//!
//! OpenSSH's sshd leaves Nagle's algorithm on for sessions without a
//! terminal, so a small message it writes while an earlier one is still
//! unacknowledged waits for the client's ACK — and Linux delays that ACK up
//! to 40 ms when the client has nothing to send back. That is what held
//! every channel confirmation after authentication (sshd writes two messages
//! of its own first): 42 ms of one 170 ms apply on loopback.
//! [`AckingStream`] sets `TCP_QUICKACK` after every read that returned
//! bytes, so the kernel sends the pending ACK now instead of holding it.
//! Writes and everything else go straight to the inner stream.
//!
//! Invariant: this file knows sockets, not SSH.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A [`TcpStream`] that acknowledges received bytes without delay (Linux;
/// elsewhere a plain pass-through).
pub struct AckingStream {
    inner: TcpStream,
}

impl AckingStream {
    /// Wrap a connected stream; Nagle off for our own writes too.
    pub fn new(inner: TcpStream) -> AckingStream {
        let _ = inner.set_nodelay(true);
        AckingStream { inner }
    }

    fn ack_now(&self) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            // Best effort: a refused option only costs the delayed ACK.
            let _ = socket2::SockRef::from(&self.inner).set_tcp_quickack(true);
        }
    }
}

impl AsyncRead for AckingStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.ack_now();
        }
        polled
    }
}

impl AsyncWrite for AckingStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A request/response exchange puts a Linux socket in delayed-ACK
    /// ("pingpong") mode; `TCP_QUICKACK` reads back as 0 then. After a read
    /// through [`AckingStream`] it reads back as 1: the ACK went out.
    async fn quickack_after_exchange(wrap: bool) -> bool {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut b = [0u8; 1];
            for _ in 0..3 {
                s.read_exact(&mut b).await.unwrap();
                s.write_all(b"r").await.unwrap();
            }
            s
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let probe = socket2::SockRef::from(&tcp).try_clone().unwrap();
        let mut wrapped;
        let mut plain;
        let stream: &mut dyn AsyncReadWrite = if wrap {
            wrapped = AckingStream::new(tcp);
            &mut wrapped
        } else {
            plain = tcp;
            &mut plain
        };
        let mut b = [0u8; 1];
        for _ in 0..3 {
            stream.write_all(b"q").await.unwrap();
            stream.read_exact(&mut b).await.unwrap();
        }
        let on = probe.tcp_quickack().unwrap();
        drop(server.await.unwrap());
        on
    }

    trait AsyncReadWrite: AsyncRead + AsyncWrite + Unpin {}
    impl<T: AsyncRead + AsyncWrite + Unpin> AsyncReadWrite for T {}

    #[tokio::test]
    async fn reads_leave_the_socket_acknowledging_at_once() {
        assert!(
            !quickack_after_exchange(false).await,
            "control: a plain socket should be in delayed-ACK mode after an exchange"
        );
        assert!(quickack_after_exchange(true).await);
    }
}
