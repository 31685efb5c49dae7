//! Connections that stop taking our bytes are closed (control API and peer API alike).
//!
//! An event stream writes for as long as the node runs. A consumer that stops reading would keep
//! its connection, and the task writing to it, forever: the socket buffers fill and every write
//! waits. [`StallGuard`] wraps a listener so that a write (or flush) that cannot make progress
//! for `timeout` fails, and the server drops the connection. A consumer that reads slowly but
//! steadily is never cut; an idle connection with nothing to write is not either.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// A listener whose connections fail a write that waits longer than `timeout`.
pub(crate) struct StallGuard<L> {
    inner: L,
    timeout: Duration,
}

impl<L> StallGuard<L> {
    pub(crate) fn new(inner: L, timeout: Duration) -> Self {
        StallGuard { inner, timeout }
    }
}

impl<L: Listener> Listener for StallGuard<L> {
    type Io = Guarded<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.inner.accept().await;
        (Guarded { io, timeout: self.timeout, stalled: None }, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection of a [`StallGuard`].
pub(crate) struct Guarded<T> {
    io: T,
    timeout: Duration,
    /// Started when a write first had to wait; cleared once one makes progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> Guarded<T> {
    /// `io` whose writes fail once one has waited longer than `timeout` (for connections not
    /// accepted through a [`StallGuard`]: the peer API's own accept loop).
    pub(crate) fn new(io: T, timeout: Duration) -> Self {
        Guarded { io, timeout, stalled: None }
    }

    /// Passes a ready result through; on `Pending`, fails once the write has waited too long.
    fn watch<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match poll {
            Poll::Ready(result) => {
                self.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let deadline = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client stopped reading what we send",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn a_write_nobody_reads_fails_after_the_timeout_and_a_read_one_does_not() {
        // A duplex pipe with a small buffer stands in for a socket whose peer stopped reading.
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut guarded = Guarded { io: ours, timeout: Duration::from_millis(100), stalled: None };
        guarded.write_all(&[0; 64]).await.expect("fits the buffer");
        let err = guarded.write_all(&[0; 64]).await.expect_err("nobody reads");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        let (ours, mut reader) = tokio::io::duplex(64);
        let mut guarded = Guarded { io: ours, timeout: Duration::from_millis(100), stalled: None };
        let drain = tokio::spawn(async move {
            let mut sink = Vec::new();
            // Slow but steady: 64 bytes every 50 ms.
            let mut buf = [0; 64];
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                match tokio::io::AsyncReadExt::read(&mut reader, &mut buf).await {
                    Ok(0) | Err(_) => break sink,
                    Ok(n) => sink.extend_from_slice(&buf[..n]),
                }
            }
        });
        guarded.write_all(&[1; 640]).await.expect("a steady reader is never cut");
        drop(guarded);
        assert_eq!(drain.await.expect("drain").len(), 640);
        theirs.shutdown().await.ok();
    }
}
