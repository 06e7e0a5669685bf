//! The byte stream under an association (PS3.8 9.1: TCP, or TLS over TCP later). The
//! association needs a little more than `Read + Write`: read timeouts for ARTIM and the
//! idle timer, a non-blocking peek for C-CANCEL, and half-closing.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
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
