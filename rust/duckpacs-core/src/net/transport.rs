//! The byte stream under an association (PS3.8 9.1: TCP, or TLS over TCP later). The
//! association needs a little more than `Read + Write`: read timeouts for ARTIM and the
//! idle timer, a non-blocking peek for C-CANCEL, and half-closing.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// A connected byte stream the association runs over. Implemented for [`TcpStream`]; a TLS
/// stream implements it by delegating the socket calls to its TCP stream.
pub trait Transport: Read + Write + Send {
    /// Timeout of each blocking read (`None`: wait forever). A timed-out read fails with
    /// `WouldBlock` or `TimedOut`.
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()>;
    /// Timeout of each blocking write.
    fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()>;
    /// Switch reads to non-blocking (a read with no data waiting fails with `WouldBlock`).
    fn set_nonblocking(&mut self, nonblocking: bool) -> io::Result<()>;
    /// Close our sending half: the peer reads end-of-stream after what we sent.
    fn shutdown_write(&mut self) -> io::Result<()>;
    /// Close both halves.
    fn close(&mut self) -> io::Result<()>;
    fn peer_addr(&self) -> Option<SocketAddr>;
}

impl Transport for TcpStream {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
    fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_write_timeout(self, timeout)
    }
    fn set_nonblocking(&mut self, nonblocking: bool) -> io::Result<()> {
        TcpStream::set_nonblocking(self, nonblocking)
    }
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
    fn close(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Both)
    }
    fn peer_addr(&self) -> Option<SocketAddr> {
        TcpStream::peer_addr(self).ok()
    }
}

/// A TCP stream shared with whoever may need to shut it down from another thread (the
/// server at shutdown), without a second file descriptor.
#[derive(Debug, Clone)]
pub struct SharedTcp(pub Arc<TcpStream>);

impl Read for SharedTcp {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl Write for SharedTcp {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        (&*self.0).write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        (&*self.0).flush()
    }
}

impl Transport for SharedTcp {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.0.set_read_timeout(timeout)
    }
    fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.0.set_write_timeout(timeout)
    }
    fn set_nonblocking(&mut self, nonblocking: bool) -> io::Result<()> {
        self.0.set_nonblocking(nonblocking)
    }
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.0.shutdown(Shutdown::Write)
    }
    fn close(&mut self) -> io::Result<()> {
        self.0.shutdown(Shutdown::Both)
    }
    fn peer_addr(&self) -> Option<SocketAddr> {
        self.0.peer_addr().ok()
    }
}

/// Write `a` then `b` with as few system calls as the kernel allows (one `writev` when the
/// socket takes both), so a command PDU and the first dataset PDU leave together.
pub(crate) fn write_both(stream: &mut dyn Transport, a: &[u8], b: &[u8]) -> io::Result<()> {
    let total = a.len() + b.len();
    let mut done = 0;
    while done < total {
        let result = if done < a.len() {
            stream.write_vectored(&[io::IoSlice::new(&a[done..]), io::IoSlice::new(b)])
        } else {
            stream.write(&b[done - a.len()..])
        };
        match result {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
