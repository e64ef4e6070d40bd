//! Accepted connections, which the server can close all at once: a graceful stop
//! waits for every connection to finish its streams, and a Watch stream whose client
//! does not read cannot even be sent its end (HTTP/2 flow control), so at the end of
//! the shutdown grace the server closes what is left ([`Connections::close_all`]).
//!
//! Each connection is a [`Conn`]: the accepted socket, and a waker that its reads and
//! writes register when they would wait. Closing wakes every connection's task,
//! whose next read or write fails; hyper then drops the connection, and with it
//! every stream it carried.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Every connection accepted, for closing them all.
#[derive(Default)]
pub struct Connections {
    closed: AtomicBool,
    wakers: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    list: Vec<Weak<AtomicWaker>>,
    /// The length at which the list is next pruned of connections gone.
    prune_at: usize,
}

impl Connections {
    /// No connections yet.
    pub fn new() -> Arc<Connections> {
        Arc::default()
    }

    /// Wraps an accepted socket.
    pub fn wrap(self: &Arc<Self>, io: TcpStream) -> Conn {
        let waker = Arc::new(AtomicWaker::new());
        let mut r = self.wakers.lock().unwrap_or_else(|p| p.into_inner());
        if r.list.len() >= r.prune_at {
            r.list.retain(|w| w.strong_count() > 0);
            r.prune_at = (2 * r.list.len()).max(64);
        }
        r.list.push(Arc::downgrade(&waker));
        Conn { io, waker, all: Arc::clone(self) }
    }

    /// Closes every connection (their next read or write fails) and those accepted
    /// from now on; returns how many were open.
    pub fn close_all(&self) -> usize {
        self.closed.store(true, Ordering::SeqCst);
        let list = std::mem::take(&mut self.wakers.lock().unwrap_or_else(|p| p.into_inner()).list);
        let mut open = 0;
        for w in list.iter().filter_map(Weak::upgrade) {
            open += 1;
            w.wake();
        }
        open
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// An accepted connection that [`Connections::close_all`] can close.
pub struct Conn {
    io: TcpStream,
    waker: Arc<AtomicWaker>,
    all: Arc<Connections>,
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "argus: connection closed at shutdown")
}

impl Conn {
    /// After an operation of the socket: a pending one registers the task's waker
    /// (then checks again, as `close_all` sets the flag before it wakes).
    fn after<T>(&self, cx: &Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_pending() {
            self.waker.register(cx.waker());
            if self.all.is_closed() {
                return Poll::Ready(Err(closed()));
            }
        }
        r
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.all.is_closed() {
            return Poll::Ready(Err(closed()));
        }
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        self.after(cx, r)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.all.is_closed() {
            return Poll::Ready(Err(closed()));
        }
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.after(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.all.is_closed() {
            return Poll::Ready(Err(closed()));
        }
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.after(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.after(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(conn: &mut Conn) -> io::Result<usize> {
        let mut b = [0u8; 8];
        std::future::poll_fn(|cx| {
            let mut buf = ReadBuf::new(&mut b);
            Pin::new(&mut *conn).poll_read(cx, &mut buf).map_ok(|()| buf.filled().len())
        })
        .await
    }

    /// A connection waiting to read, and one accepted after, fail once closed; the
    /// peer sees the socket closed.
    #[tokio::test]
    async fn close_all_fails_pending_and_later_reads() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let conns = Connections::new();
        let peer = TcpStream::connect(addr).await.expect("connect");
        let mut conn = conns.wrap(l.accept().await.expect("accept").0);
        peer.writable().await.expect("writable");
        assert_eq!(peer.try_write(b"x").expect("write"), 1);
        assert_eq!(read(&mut conn).await.expect("read"), 1);
        let reader = tokio::spawn(async move {
            let r = read(&mut conn).await;
            drop(conn);
            r
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(conns.close_all(), 1);
        let r = reader.await.expect("reader");
        assert_eq!(r.expect_err("closed").kind(), io::ErrorKind::ConnectionAborted);
        peer.readable().await.expect("readable");
        let mut b = [0u8; 8];
        assert_eq!(peer.try_read(&mut b).expect("eof"), 0, "the peer sees the connection closed");
        let _peer2 = TcpStream::connect(addr).await.expect("connect");
        let mut late = conns.wrap(l.accept().await.expect("accept").0);
        assert!(read(&mut late).await.is_err());
    }
}
