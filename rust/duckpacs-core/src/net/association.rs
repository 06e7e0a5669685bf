//! An association over any [`Transport`] (PS3.8 7, 9.2), for both roles: establishing it
//! ([`Connection`] on the acceptor side, [`Association::request`] on the requestor side),
//! then DIMSE messages in both directions, release (with release collision, PS3.8 9.2.1
//! and the state table's Sta9-Sta12) and abort.
//!
//! Timers: ARTIM (PS3.8 9.1.5) bounds the wait for the A-ASSOCIATE-RQ after connecting,
//! for the A-ASSOCIATE-AC/RJ after requesting and for the A-RELEASE-RP; the idle timer
//! bounds how long an established association may go without a byte from the peer.
//!
//! Failures abort by themselves: when a method fails with an error that owes the peer an
//! A-ABORT ([`Error::abort`]), the abort has been sent and the transport closed before the
//! method returns. Only [`Error::Sink`] and [`Error::Usage`] leave the association open.
//!
//! Messages (PS3.7 Annex E, PS3.8 9.3.5): a command is assembled in memory (at most
//! [`MAX_COMMAND_LEN`] bytes); its dataset is streamed fragment by fragment to a
//! [`DatasetSink`], so memory stays at one PDU whatever the instance size. Sending cuts the
//! command and the dataset into PDUs no larger than the peer's maximum, one write per PDU,
//! the command PDU going out in the same write as the first dataset PDU.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::assoc::acceptor::{check_request, negotiate, Acceptance};
use super::assoc::requestor::Proposal;
use super::assoc::{Negotiated, PresentationContext, Role};
use super::dimse::{Command, DatasetSink, Discard, MAX_COMMAND_LEN};
use super::error::{Error, Result, Timer};
use super::pdu::{
    self, decode_body, kind, kind_name, pdata_header, Abort, AssociateRq, Header, Limits, Pdu,
    Rejection, HEADER_LEN, PDATA_OVERHEAD, PDV_HEADER,
};
use super::transport::{write_both, Transport};

/// The timers of an association.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// ARTIM (PS3.8 9.1.5): association request, answer and release waits.
    pub artim: Duration,
    /// Longest silence of the peer on an established association, and the timeout of each
    /// write (a peer that stops reading). `None`: reads wait forever, writes time out after
    /// ARTIM.
    pub idle: Option<Duration>,
}

impl Default for Timeouts {
    /// 30 s ARTIM (DCMTK's and pynetdicom's default), 60 s idle (duckpacs'
    /// `dimse.idle_timeout` default).
    fn default() -> Self {
        Timeouts {
            artim: Duration::from_secs(30),
            idle: Some(Duration::from_secs(60)),
        }
    }
}

/// What [`Association::receive`] got.
// One per message, moved once: boxing the command would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A DIMSE command. When `command.has_dataset`, read the dataset next with
    /// [`Association::receive_dataset`] (or drop it with [`Association::skip_dataset`]).
    Command { context_id: u8, command: Command },
    /// The peer released the association; we answered A-RELEASE-RP and closed.
    Released,
}

/// How long a read may wait.
#[derive(Clone, Copy)]
enum Wait {
    /// Until this instant (ARTIM).
    Until(Instant),
    /// The idle timeout per read.
    Idle,
}

/// Longest we wait for the peer to close after our last PDU, and how much we read and drop
/// meanwhile (so that closing does not reset the connection under our last PDU).
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 4 << 20;

/// The transport with PDU framing, timers and the abort-on-failure rule.
struct Link {
    stream: Box<dyn Transport>,
    timeouts: Timeouts,
    limits: Limits,
    /// Read timeout now set on the socket, to skip redundant calls.
    read_timeout: Option<Option<Duration>>,
    /// First header byte already read by [`Association::poll`].
    peeked: Option<u8>,
    /// Set by the server to abort at shutdown; reads then end as [`Error::Shutdown`].
    interrupt: Option<Arc<AtomicBool>>,
    open: bool,
}

impl Link {
    fn new(mut stream: Box<dyn Transport>, timeouts: Timeouts, max_pdu: u32) -> Self {
        // A failure here shows up on the first read or write.
        let _ = stream.set_write_timeout(timeouts.idle.or(Some(timeouts.artim)));
        Link {
            stream,
            timeouts,
            limits: Limits::new(max_pdu),
            read_timeout: None,
            peeked: None,
            interrupt: None,
            open: true,
        }
    }

    fn interrupted(&self) -> bool {
        self.interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
    }

    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
        if self.read_timeout != Some(timeout) {
            self.stream
                .set_read_timeout(timeout)
                .map_err(|e| Error::io("setting the read timeout", e))?;
            self.read_timeout = Some(timeout);
        }
        Ok(())
    }

    fn read_exact(&mut self, buf: &mut [u8], wait: Wait, during: &'static str) -> Result<()> {
        let mut filled = 0;
        while filled < buf.len() {
            let timeout = match wait {
                Wait::Idle => self.timeouts.idle,
                Wait::Until(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(Error::Timeout {
                            during,
                            timer: Timer::Artim,
                            after: self.timeouts.artim,
                        });
                    }
                    Some(deadline - now)
                }
            };
            self.set_read_timeout(timeout)?;
            match self.stream.read(&mut buf[filled..]) {
                Ok(0) if self.interrupted() => return Err(Error::Shutdown),
                Ok(0) => return Err(Error::Closed { during }),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) if self.interrupted() => return Err(Error::Shutdown),
                Err(e) if is_timeout(&e) => {
                    if let (Wait::Idle, Some(idle)) = (wait, self.timeouts.idle) {
                        return Err(Error::Timeout {
                            during,
                            timer: Timer::Idle,
                            after: idle,
                        });
                    }
                }
                Err(e) => return Err(Error::io(during, e)),
            }
        }
        Ok(())
    }

    fn read_header(&mut self, wait: Wait, during: &'static str) -> Result<Header> {
        let mut h = [0u8; HEADER_LEN];
        let start = match self.peeked.take() {
            Some(b) => {
                h[0] = b;
                1
            }
            None => 0,
        };
        self.read_exact(&mut h[start..], wait, during)?;
        Header::parse(h, self.limits)
    }

    /// A PDU body read piece by piece, so that memory follows the bytes that really
    /// arrive, not the length announced.
    fn read_body(&mut self, len: u32, wait: Wait, during: &'static str) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        let mut piece = [0u8; 16 * 1024];
        let mut left = len as usize;
        while left > 0 {
            let n = left.min(piece.len());
            self.read_exact(&mut piece[..n], wait, during)?;
            body.extend_from_slice(&piece[..n]);
            left -= n;
        }
        Ok(body)
    }

    /// One non-blocking read of a byte: `None` when nothing is waiting.
    fn try_read_byte(&mut self) -> Result<Option<u8>> {
        let during = "polling for a PDU";
        self.stream
            .set_nonblocking(true)
            .map_err(|e| Error::io(during, e))?;
        let mut b = [0u8; 1];
        let got = loop {
            match self.stream.read(&mut b) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        self.stream
            .set_nonblocking(false)
            .map_err(|e| Error::io(during, e))?;
        match got {
            Ok(0) => Err(Error::Closed { during }),
            Ok(_) => Ok(Some(b[0])),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(Error::io(during, e)),
        }
    }

    fn write_all(&mut self, bytes: &[u8], during: &'static str) -> Result<()> {
        self.stream
            .write_all(bytes)
            .map_err(|e| Error::io(during, e))
    }

    fn send_pdu(&mut self, pdu: &Pdu<'_>) -> Result<()> {
        let bytes = pdu.to_bytes()?;
        self.write_all(&bytes, pdu.name())
    }

    /// Send an A-ABORT (best effort: the peer may be gone) and close.
    fn abort_and_close(&mut self, abort: Abort) {
        if self.open {
            let _ = self.send_pdu(&Pdu::Abort(abort));
            self.linger_and_close();
        }
    }

    /// Close after our last PDU: half-close, give the peer a moment to read it and close its
    /// side (PS3.8 Sta13), dropping whatever it still sends, then close.
    fn linger_and_close(&mut self) {
        if !self.open {
            return;
        }
        self.open = false;
        self.peeked = None;
        let _ = self.stream.shutdown_write();
        let _ = self.stream.set_read_timeout(Some(LINGER));
        let deadline = Instant::now() + LINGER;
        let mut sink = [0u8; 16 * 1024];
        let mut dropped = 0;
        while dropped < LINGER_BYTES && Instant::now() < deadline {
            match self.stream.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(n) => dropped += n,
            }
        }
        let _ = self.stream.close();
    }

    fn close(&mut self) {
        if self.open {
            self.open = false;
            let _ = self.stream.close();
        }
    }

    /// The failure rule: send the A-ABORT the error owes, or close when the association
    /// cannot go on; then hand the error back.
    fn fail(&mut self, e: Error) -> Error {
        if let Some(abort) = e.abort() {
            self.abort_and_close(abort);
        } else if !e.is_recoverable() {
            self.close();
        }
        e
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// An accepted transport connection before negotiation (acceptor side, PS3.8 Sta2).
pub struct Connection {
    link: Link,
    max_pdu: u32,
    started: Instant,
}

impl Connection {
    /// Start ARTIM for the A-ASSOCIATE-RQ now. `max_pdu` is the Maximum Length we will
    /// announce (0 = no limit; we still refuse P-DATA PDUs over 16 MiB).
    pub fn new(stream: Box<dyn Transport>, timeouts: Timeouts, max_pdu: u32) -> Self {
        Connection {
            link: Link::new(stream, timeouts, max_pdu),
            max_pdu,
            started: Instant::now(),
        }
    }

    /// Abort with [`Error::Shutdown`] once `flag` is set and the transport's reads end.
    pub fn set_interrupt(&mut self, flag: Arc<AtomicBool>) {
        self.link.interrupt = Some(flag);
    }

    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.link.stream.peer_addr()
    }

    /// Wait (under ARTIM, counted from [`Connection::new`]) for the A-ASSOCIATE-RQ. Any
    /// other PDU, or a malformed one, is answered with an A-ABORT (PS3.8 state table, Sta2
    /// Evt19: AA-1); a silent peer is disconnected when ARTIM runs out (AA-2).
    pub fn read_request(&mut self) -> Result<AssociateRq> {
        let result = self.read_request_inner();
        result.map_err(|e| self.link.fail(e))
    }

    fn read_request_inner(&mut self) -> Result<AssociateRq> {
        let during = "waiting for the A-ASSOCIATE-RQ";
        let wait = Wait::Until(self.started + self.link.timeouts.artim);
        let header = self.link.read_header(wait, during)?;
        if header.pdu_type != kind::ASSOCIATE_RQ {
            if header.pdu_type == kind::ABORT {
                let mut b = [0u8; 4];
                self.link.read_exact(&mut b, wait, during)?;
                return Err(Error::Aborted(Abort {
                    source: b[2],
                    reason: b[3],
                }));
            }
            return Err(Error::UnexpectedPdu {
                pdu: kind_name(header.pdu_type),
                state: during,
            });
        }
        let body = self.link.read_body(header.length, wait, during)?;
        match decode_body(header.pdu_type, &body)? {
            Pdu::AssociateRq(rq) => Ok(rq),
            other => Err(Error::UnexpectedPdu {
                pdu: other.name(),
                state: during,
            }),
        }
    }

    /// Answer with an A-ASSOCIATE-RJ and close.
    pub fn reject(mut self, rejection: Rejection) -> Result<()> {
        let sent = self.link.send_pdu(&Pdu::AssociateRj(rejection));
        self.link.linger_and_close();
        sent
    }

    /// Negotiate `rq` with the application's `acceptance` and answer. A request the upper
    /// layer itself refuses (protocol version, application context, PS3.8 9.3.4) gets an
    /// A-ASSOCIATE-RJ and [`Error::Rejected`]; otherwise the A-ASSOCIATE-AC goes out and the
    /// association is established.
    pub fn accept(mut self, rq: &AssociateRq, acceptance: &Acceptance) -> Result<Association> {
        let peer = self.peer_addr();
        let outcome =
            check_request(rq).and_then(|()| negotiate(rq, acceptance, self.max_pdu, peer));
        match outcome {
            Err(rejection) => {
                self.reject(rejection)?;
                Err(Error::Rejected(rejection))
            }
            Ok((ac, negotiated)) => {
                if let Err(e) = self.link.send_pdu(&Pdu::AssociateAc(ac)) {
                    return Err(self.link.fail(e));
                }
                Ok(Association::new(self.link, negotiated))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Released,
    Aborted,
}

/// The next thing on the wire while a message is expected.
enum Next {
    Pdv {
        context_id: u8,
        is_command: bool,
        is_last: bool,
        start: usize,
        end: usize,
    },
    ReleaseRq,
}

/// An established association.
pub struct Association {
    link: Link,
    negotiated: Negotiated,
    /// Body of the P-DATA-TF PDU being read (`rlen` valid bytes, next PDV at `rpos`); its
    /// length only grows, up to our maximum, so steady-state reads never reallocate.
    rbuf: Vec<u8>,
    rlen: usize,
    rpos: usize,
    /// The command being assembled.
    command: Vec<u8>,
    /// Context of a dataset announced by the last command and not read yet.
    dataset_pending: Option<u8>,
    /// Send buffer: P-DATA header space and one fragment.
    chunk: Vec<u8>,
    /// Encoded command PDUs of the message being sent.
    head: Vec<u8>,
    next_message_id: u16,
    /// Message ID named by a C-CANCEL-RQ that arrived while we waited for a response.
    pub(crate) cancel: Option<u16>,
    state: State,
}

impl Association {
    fn new(link: Link, negotiated: Negotiated) -> Self {
        Association {
            link,
            negotiated,
            rbuf: Vec::new(),
            rlen: 0,
            rpos: 0,
            command: Vec::new(),
            dataset_pending: None,
            chunk: Vec::new(),
            head: Vec::new(),
            next_message_id: 1,
            cancel: None,
            state: State::Open,
        }
    }

    /// Request an association over `stream` (requestor side): send the A-ASSOCIATE-RQ of
    /// `proposal` and wait (under ARTIM) for the answer.
    pub fn request(
        stream: Box<dyn Transport>,
        proposal: &Proposal,
        timeouts: Timeouts,
    ) -> Result<Association> {
        let rq = proposal.request()?;
        let mut link = Link::new(stream, timeouts, proposal.max_pdu);
        let peer = link.stream.peer_addr();
        match request_inner(&mut link, proposal, &rq, peer) {
            Ok(negotiated) => Ok(Association::new(link, negotiated)),
            Err(e @ Error::Timeout { .. }) | Err(e @ Error::Negotiation(_)) => {
                link.abort_and_close(Abort::provider(Abort::NOT_SPECIFIED));
                Err(e)
            }
            Err(e) => Err(link.fail(e)),
        }
    }

    /// What was negotiated: contexts, roles, AE titles, maximum lengths.
    pub fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    /// The accepted presentation context `id`.
    pub fn context(&self, id: u8) -> Option<&PresentationContext> {
        self.negotiated.context(id)
    }

    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.negotiated.peer_addr
    }

    /// True until the association is released or aborted.
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// True when the last command announced a dataset that has not been read yet.
    pub fn dataset_pending(&self) -> bool {
        self.dataset_pending.is_some()
    }

    /// A fresh Message ID for a request of ours (PS3.7 9.3.1.1: unique among our
    /// outstanding requests).
    pub fn next_message_id(&mut self) -> u16 {
        let id = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1).max(1);
        id
    }

    /// Abort with [`Error::Shutdown`] once `flag` is set and the transport's reads end.
    pub fn set_interrupt(&mut self, flag: Arc<AtomicBool>) {
        self.link.interrupt = Some(flag);
    }

    /// The Message ID of a C-CANCEL-RQ that arrived while [`Association::store`] (or
    /// another call waiting for one final response) was waiting, e.g. the requestor
    /// cancelling its C-GET during a C-STORE sub-operation (PS3.7 9.3.3.3); cleared by
    /// reading it.
    pub fn take_cancel(&mut self) -> Option<u16> {
        self.cancel.take()
    }

    fn ensure_open(&self) -> Result<()> {
        match self.state {
            State::Open => Ok(()),
            State::Released => Err(Error::Usage("the association was released".into())),
            State::Aborted => Err(Error::Usage("the association was aborted".into())),
        }
    }

    /// Apply the failure rule and record the state.
    fn fail(&mut self, e: Error) -> Error {
        let e = self.link.fail(e);
        if !self.link.open {
            self.state = State::Aborted;
        }
        e
    }

    // ---- receiving ---------------------------------------------------------------------

    /// Wait (under the idle timer) for the next DIMSE command, or the peer's release.
    pub fn receive(&mut self) -> Result<Received> {
        self.ensure_open()?;
        if self.dataset_pending.is_some() {
            return Err(Error::Usage(
                "the dataset of the last command has not been read".into(),
            ));
        }
        let result = self.receive_command();
        result.map_err(|e| self.fail(e))
    }

    /// Like [`Association::receive`], but only when something is already waiting: `None`
    /// at once otherwise. For an SCP that checks for C-CANCEL between responses.
    pub fn poll(&mut self) -> Result<Option<Received>> {
        self.ensure_open()?;
        if self.rpos < self.rlen || self.link.peeked.is_some() {
            return self.receive().map(Some);
        }
        match self.link.try_read_byte() {
            Ok(None) => Ok(None),
            Ok(Some(b)) => {
                self.link.peeked = Some(b);
                self.receive().map(Some)
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn receive_command(&mut self) -> Result<Received> {
        self.command.clear();
        let mut context = None;
        loop {
            let during = "waiting for a DIMSE command";
            let (context_id, is_command, is_last, start, end) = match self.next_pdv(during)? {
                Next::ReleaseRq if context.is_none() => {
                    self.link.send_pdu(&Pdu::ReleaseRp)?;
                    self.link.linger_and_close();
                    self.state = State::Released;
                    return Ok(Received::Released);
                }
                Next::ReleaseRq => {
                    return Err(Error::UnexpectedPdu {
                        pdu: "A-RELEASE-RQ",
                        state: "receiving a command",
                    })
                }
                Next::Pdv {
                    context_id,
                    is_command,
                    is_last,
                    start,
                    end,
                } => (context_id, is_command, is_last, start, end),
            };
            if !is_command {
                return Err(Error::fragment(format!(
                    "a dataset fragment on context {context_id} where a command was expected"
                )));
            }
            match context {
                None if self.negotiated.context(context_id).is_none() => {
                    return Err(Error::fragment(format!(
                        "a command on presentation context {context_id}, which was not accepted"
                    )));
                }
                None => context = Some(context_id),
                Some(c) if c != context_id => {
                    return Err(Error::fragment(format!(
                        "one command's fragments on contexts {c} and {context_id}"
                    )));
                }
                Some(_) => {}
            }
            if self.command.len() + (end - start) > MAX_COMMAND_LEN {
                return Err(Error::fragment(format!(
                    "a command set over {MAX_COMMAND_LEN} bytes"
                )));
            }
            self.command.extend_from_slice(&self.rbuf[start..end]);
            if is_last {
                break;
            }
        }
        let context_id = context.expect("set by the first fragment");
        let command = Command::decode(&self.command)?;
        if command.has_dataset {
            self.dataset_pending = Some(context_id);
        }
        Ok(Received::Command {
            context_id,
            command,
        })
    }

    /// Stream the dataset announced by the last command to `sink`, fragment by fragment,
    /// then call its `finish`. A sink error does not end the association: the rest of the
    /// dataset is read and dropped and [`Error::Sink`] returned, so the service can answer
    /// with a failure status. Any other failure (abort, truncation, timeout) aborts, and
    /// `finish` is never called.
    pub fn receive_dataset(&mut self, sink: &mut dyn DatasetSink) -> Result<()> {
        self.ensure_open()?;
        let Some(context_id) = self.dataset_pending.take() else {
            return Err(Error::Usage("no dataset announced".into()));
        };
        let mut sink_error = None;
        let result = self.stream_dataset(context_id, sink, &mut sink_error);
        if let Err(e) = result {
            return Err(self.fail(e));
        }
        if let Some(e) = sink_error {
            return Err(Error::Sink(e));
        }
        sink.finish().map_err(Error::Sink)
    }

    /// Read and drop the dataset announced by the last command.
    pub fn skip_dataset(&mut self) -> Result<()> {
        self.receive_dataset(&mut Discard)
    }

    fn stream_dataset(
        &mut self,
        context_id: u8,
        sink: &mut dyn DatasetSink,
        sink_error: &mut Option<io::Error>,
    ) -> Result<()> {
        loop {
            let (id, is_command, is_last, start, end) =
                match self.next_pdv("receiving a dataset")? {
                    Next::ReleaseRq => {
                        return Err(Error::UnexpectedPdu {
                            pdu: "A-RELEASE-RQ",
                            state: "receiving a dataset",
                        })
                    }
                    Next::Pdv {
                        context_id,
                        is_command,
                        is_last,
                        start,
                        end,
                    } => (context_id, is_command, is_last, start, end),
                };
            if is_command {
                return Err(Error::fragment(
                    "a command fragment before the dataset's last fragment (truncated dataset)",
                ));
            }
            if id != context_id {
                return Err(Error::fragment(format!(
                    "a dataset fragment on context {id} inside a message on context {context_id}"
                )));
            }
            if sink_error.is_none() {
                if let Err(e) = sink.write(&self.rbuf[start..end]) {
                    *sink_error = Some(e);
                }
            }
            if is_last {
                return Ok(());
            }
        }
    }

    /// The next PDV, reading a new PDU when the current one is used up.
    fn next_pdv(&mut self, during: &'static str) -> Result<Next> {
        if self.rpos >= self.rlen {
            if let Some(next) = self.read_pdu(during)? {
                return Ok(next);
            }
        }
        let (pdv, next) = pdu::next_pdv(&self.rbuf[..self.rlen], self.rpos)?;
        let start = next - pdv.data.len();
        let result = Next::Pdv {
            context_id: pdv.context_id,
            is_command: pdv.is_command,
            is_last: pdv.is_last,
            start,
            end: next,
        };
        self.rpos = next;
        Ok(result)
    }

    /// Read one PDU: a P-DATA-TF body goes to `rbuf` (returns `None`); an A-RELEASE-RQ
    /// is returned; an A-ABORT or anything else ends the association.
    fn read_pdu(&mut self, during: &'static str) -> Result<Option<Next>> {
        let header = self.link.read_header(Wait::Idle, during)?;
        match header.pdu_type {
            kind::P_DATA_TF => {
                let len = header.length as usize;
                if len < PDV_HEADER {
                    return Err(Error::malformed(
                        "P-DATA-TF",
                        None,
                        HEADER_LEN,
                        format!("length {len} cannot hold a PDV item"),
                    ));
                }
                if self.rbuf.len() < len {
                    self.rbuf.resize(len, 0);
                }
                self.rlen = 0;
                self.rpos = 0;
                let mut buf = std::mem::take(&mut self.rbuf);
                let read = self.link.read_exact(&mut buf[..len], Wait::Idle, during);
                self.rbuf = buf;
                read?;
                self.rlen = len;
                Ok(None)
            }
            kind::RELEASE_RQ => {
                let mut b = [0u8; 4];
                self.link.read_exact(&mut b, Wait::Idle, during)?;
                Ok(Some(Next::ReleaseRq))
            }
            kind::ABORT => {
                let mut b = [0u8; 4];
                self.link.read_exact(&mut b, Wait::Idle, during)?;
                self.link.close();
                Err(Error::Aborted(Abort {
                    source: b[2],
                    reason: b[3],
                }))
            }
            other => Err(Error::UnexpectedPdu {
                pdu: kind_name(other),
                state: "the association is established",
            }),
        }
    }

    // ---- sending -----------------------------------------------------------------------

    /// Send a message on `context_id`: the command, then the dataset read from `dataset`
    /// until its end. The Command Data Set Type written follows whether a dataset is given.
    /// A source that fails mid-message aborts the association (the peer cannot be told
    /// otherwise that the message is cut short).
    pub fn send(
        &mut self,
        context_id: u8,
        command: &Command,
        dataset: Option<&mut dyn Read>,
    ) -> Result<()> {
        self.ensure_open()?;
        if self.negotiated.context(context_id).is_none() {
            return Err(Error::Usage(format!(
                "presentation context {context_id} was not accepted"
            )));
        }
        self.encode_command(context_id, command, dataset.is_some())?;
        let result = match dataset {
            None => {
                let head = std::mem::take(&mut self.head);
                let sent = self.link.write_all(&head, "sending a command");
                self.head = head;
                sent
            }
            Some(source) => self.send_dataset(context_id, source),
        };
        result.map_err(|e| self.fail(e))
    }

    /// [`Association::send`] with the dataset in memory.
    pub fn send_bytes(&mut self, context_id: u8, command: &Command, dataset: &[u8]) -> Result<()> {
        let mut source = dataset;
        self.send(context_id, command, Some(&mut source))
    }

    /// The command's P-DATA-TF PDUs into `self.head`.
    fn encode_command(
        &mut self,
        context_id: u8,
        command: &Command,
        has_dataset: bool,
    ) -> Result<()> {
        let mut encoded = Vec::with_capacity(256);
        command
            .encode_as(&mut encoded, has_dataset)
            .map_err(|e| Error::Usage(e.to_string()))?;
        let fragment = self.negotiated.max_send_fragment();
        self.head.clear();
        let pieces = encoded.len().div_ceil(fragment);
        for (i, piece) in encoded.chunks(fragment).enumerate() {
            let last = i + 1 == pieces;
            self.head
                .extend_from_slice(&pdata_header(piece.len(), context_id, true, last));
            self.head.extend_from_slice(piece);
        }
        Ok(())
    }

    /// Dataset PDUs, each filled to the peer's maximum; one byte is read ahead to know
    /// whether a full fragment is the last. The command PDUs leave with the first one.
    fn send_dataset(&mut self, context_id: u8, source: &mut dyn Read) -> Result<()> {
        let fragment = self.negotiated.max_send_fragment();
        if self.chunk.len() < PDATA_OVERHEAD + fragment {
            self.chunk.resize(PDATA_OVERHEAD + fragment, 0);
        }
        let during = "sending a dataset";
        let mut head = Some(std::mem::take(&mut self.head));
        let mut carry = None;
        loop {
            let data = &mut self.chunk[PDATA_OVERHEAD..PDATA_OVERHEAD + fragment];
            let mut n = 0;
            if let Some(b) = carry.take() {
                data[0] = b;
                n = 1;
            }
            n += fill(source, &mut data[n..])?;
            let last = if n < fragment {
                true
            } else {
                carry = read_one(source)?;
                carry.is_none()
            };
            self.chunk[..PDATA_OVERHEAD].copy_from_slice(&pdata_header(n, context_id, false, last));
            let pdu = &self.chunk[..PDATA_OVERHEAD + n];
            let written = match head.take() {
                Some(h) => {
                    let r = write_both(self.link.stream.as_mut(), &h, pdu);
                    self.head = h;
                    r
                }
                None => self.link.stream.write_all(pdu),
            };
            written.map_err(|e| Error::io(during, e))?;
            if last {
                return Ok(());
            }
        }
    }

    // ---- release and abort -------------------------------------------------------------

    /// Release the association (PS3.8 7.2): send A-RELEASE-RQ and wait, under ARTIM, for
    /// the A-RELEASE-RP. P-DATA still arriving meanwhile is dropped. A release collision
    /// (the peer's A-RELEASE-RQ crossing ours, PS3.8 9.2.1) is resolved as the state table
    /// says: the requestor answers at once and waits for the acceptor's A-RELEASE-RP; the
    /// acceptor waits for that answer and then sends its own. No answer in time: A-ABORT.
    pub fn release(&mut self) -> Result<()> {
        self.ensure_open()?;
        if self.dataset_pending.is_some() {
            return Err(Error::Usage(
                "the dataset of the last command has not been read".into(),
            ));
        }
        match self.release_inner() {
            Ok(()) => {
                self.state = State::Released;
                Ok(())
            }
            Err(e @ Error::Timeout { .. }) => {
                self.link
                    .abort_and_close(Abort::provider(Abort::NOT_SPECIFIED));
                self.state = State::Aborted;
                Err(e)
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn release_inner(&mut self) -> Result<()> {
        let during = "waiting for the A-RELEASE-RP";
        self.link.send_pdu(&Pdu::ReleaseRq)?;
        let wait = Wait::Until(Instant::now() + self.link.timeouts.artim);
        let mut owe_answer = false;
        loop {
            let header = self.link.read_header(wait, during)?;
            let body = self.link.read_body(header.length, wait, during)?;
            match header.pdu_type {
                kind::P_DATA_TF => {
                    log::debug!("dropped {} bytes of P-DATA while releasing", body.len());
                }
                kind::RELEASE_RP => {
                    if owe_answer {
                        self.link.send_pdu(&Pdu::ReleaseRp)?;
                    }
                    match self.negotiated.role {
                        // The requestor closes the transport (PS3.8 AR-3).
                        Role::Requestor => self.link.close(),
                        Role::Acceptor => self.link.linger_and_close(),
                    }
                    return Ok(());
                }
                kind::RELEASE_RQ => match self.negotiated.role {
                    // Collision, requestor side (Sta9 -> Sta11): answer, await theirs.
                    Role::Requestor => self.link.send_pdu(&Pdu::ReleaseRp)?,
                    // Collision, acceptor side (Sta10 -> Sta12): answer after theirs.
                    Role::Acceptor => owe_answer = true,
                },
                kind::ABORT => {
                    self.link.close();
                    return Err(Error::Aborted(Abort {
                        source: body[2],
                        reason: body[3],
                    }));
                }
                other => {
                    return Err(Error::UnexpectedPdu {
                        pdu: kind_name(other),
                        state: during,
                    })
                }
            }
        }
    }

    /// Abort the association (A-ABORT with `abort`'s source and reason) and close.
    pub fn abort(&mut self, abort: Abort) {
        if self.state == State::Open {
            self.link.abort_and_close(abort);
            self.state = State::Aborted;
        }
    }
}

impl std::fmt::Debug for Association {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Association")
            .field("negotiated", &self.negotiated)
            .field("state", &self.state)
            .field("dataset_pending", &self.dataset_pending)
            .finish_non_exhaustive()
    }
}

impl Drop for Association {
    /// An association dropped while open is aborted (service-user), so the peer learns at
    /// once instead of by its own timer.
    fn drop(&mut self) {
        self.abort(Abort::user());
    }
}

fn request_inner(
    link: &mut Link,
    proposal: &Proposal,
    rq: &AssociateRq,
    peer: Option<SocketAddr>,
) -> Result<Negotiated> {
    let during = "waiting for the A-ASSOCIATE-AC";
    link.send_pdu(&Pdu::AssociateRq(rq.clone()))?;
    let wait = Wait::Until(Instant::now() + link.timeouts.artim);
    let header = link.read_header(wait, during)?;
    if header.pdu_type == kind::P_DATA_TF {
        return Err(Error::UnexpectedPdu {
            pdu: "P-DATA-TF",
            state: during,
        });
    }
    let body = link.read_body(header.length, wait, during)?;
    match decode_body(header.pdu_type, &body)? {
        Pdu::AssociateAc(ac) => proposal.accept(rq, &ac, peer),
        Pdu::AssociateRj(rj) => {
            link.linger_and_close();
            Err(Error::Rejected(rj))
        }
        Pdu::Abort(a) => {
            link.close();
            Err(Error::Aborted(a))
        }
        other => Err(Error::UnexpectedPdu {
            pdu: other.name(),
            state: during,
        }),
    }
}

/// Read until `buf` is full or the source ends; the count read.
fn fill(source: &mut dyn Read, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match source.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("reading the dataset to send", e)),
        }
    }
    Ok(n)
}

fn read_one(source: &mut dyn Read) -> Result<Option<u8>> {
    let mut b = [0u8; 1];
    Ok((fill(source, &mut b)? == 1).then_some(b[0]))
}
