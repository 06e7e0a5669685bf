//! The requestor's helpers: connect and negotiate ([`connect`]), then send requests and
//! read what comes back ([`Association::next_reply`]). A reply is either a response to our
//! request (pending ones first for C-FIND, C-GET, C-MOVE) or, on a C-GET, a C-STORE-RQ
//! sub-operation the acceptor sends us on the same association (we act as its SCP there,
//! where role selection granted it, PS3.4 C.4.3). C-ECHO and C-STORE are built on it.

use std::io::Read;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;

use super::assoc::requestor::Proposal;
use super::association::{Association, Received, Timeouts};
use super::dimse::{priority, Command, CommandField, Status, VERIFICATION_SOP_CLASS};
use super::error::{Error, Result};
use super::tls::TlsStream;

/// How to dial a peer that wants DICOM over TLS (PS3.15 B.1, B.9): our client settings
/// (the CA its certificate must chain to, our certificate if any) and the name its
/// certificate must carry (the host name or IP address we dial).
#[derive(Clone)]
pub struct TlsDial {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: String,
}

/// Open a TCP connection to `addr` (each resolved address in turn, ARTIM as the connect
/// timeout, TCP_NODELAY on) and negotiate `proposal` over it.
pub fn connect(
    addr: impl ToSocketAddrs,
    proposal: &Proposal,
    timeouts: Timeouts,
) -> Result<Association> {
    connect_with(addr, proposal, timeouts, None)
}

/// [`connect`], over TLS when `tls` is given: the handshake (within ARTIM) comes before
/// the A-ASSOCIATE-RQ.
pub fn connect_with(
    addr: impl ToSocketAddrs,
    proposal: &Proposal,
    timeouts: Timeouts,
    tls: Option<&TlsDial>,
) -> Result<Association> {
    let during = "connecting";
    let addrs = addr.to_socket_addrs().map_err(|e| Error::io(during, e))?;
    let mut last = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeouts.artim) {
            Ok(stream) => {
                stream.set_nodelay(true).map_err(|e| Error::io(during, e))?;
                let Some(tls) = tls else {
                    return Association::request(Box::new(stream), proposal, timeouts);
                };
                let stream = TlsStream::connect(
                    Arc::clone(&tls.config),
                    &tls.server_name,
                    stream,
                    timeouts.artim,
                )
                .map_err(|e| Error::io("the TLS handshake", e))?;
                return Association::request(Box::new(stream), proposal, timeouts);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(Error::io(
        during,
        last.unwrap_or_else(|| std::io::Error::other("the address resolved to nothing")),
    ))
}

/// What came back while a request of ours is outstanding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A response to our request; `command.status` tells whether more follow (pending). Its
    /// dataset, if `command.has_dataset`, is to be read with `receive_dataset`.
    Response(Command),
    /// A request from the acceptor (a C-STORE-RQ sub-operation of our C-GET): read its
    /// dataset, then answer it with `send` on `context_id`.
    Request { context_id: u8, command: Command },
}

impl Association {
    /// Wait for the next reply to our request `message_id`. A response to another message
    /// is a protocol error (we run one request at a time: asynchronous window 1/1).
    pub fn next_reply(&mut self, message_id: u16) -> Result<Reply> {
        match self.receive()? {
            Received::Released => Err(Error::UnexpectedPdu {
                pdu: "A-RELEASE-RQ",
                state: "a response was due",
            }),
            Received::Command {
                context_id,
                command,
            } => {
                if !command.field.is_response() {
                    return Ok(Reply::Request {
                        context_id,
                        command,
                    });
                }
                if command.message_id_responded_to != Some(message_id) {
                    let e = Error::command(
                        0,
                        Some(super::dimse::tag::MESSAGE_ID_BEING_RESPONDED_TO),
                        format!(
                            "{} answers message {:?}, we wait for {message_id}",
                            command.field, command.message_id_responded_to
                        ),
                    );
                    self.abort(super::pdu::Abort::provider(0));
                    return Err(e);
                }
                Ok(Reply::Response(command))
            }
        }
    }

    /// Wait for the final response to `message_id`, for requests that expect no pending
    /// responses nor sub-operations (C-ECHO, C-STORE, N-ACTION, ...). A C-CANCEL-RQ arriving
    /// meanwhile is kept for [`Association::take_cancel`]; any other request is a protocol
    /// error.
    fn final_response(&mut self, message_id: u16) -> Result<Command> {
        loop {
            match self.next_reply(message_id)? {
                Reply::Response(rsp) => {
                    if rsp.has_dataset {
                        self.skip_dataset()?;
                    }
                    return Ok(rsp);
                }
                Reply::Request { command, .. } if command.field == CommandField::C_CANCEL_RQ => {
                    self.cancel = command.message_id_responded_to;
                }
                Reply::Request { command, .. } => {
                    let e = Error::command(
                        0,
                        None,
                        format!("{} while waiting for a response", command.field),
                    );
                    self.abort(super::pdu::Abort::provider(0));
                    return Err(e);
                }
            }
        }
    }

    /// Send `command` (a request expecting one final response, e.g. a C-STORE-RQ with Move
    /// Originator fields) on `context_id` with its dataset, and return the response.
    pub fn send_request(
        &mut self,
        context_id: u8,
        command: &Command,
        dataset: Option<&mut dyn Read>,
    ) -> Result<Command> {
        let id = command
            .message_id
            .ok_or_else(|| Error::Usage("a request needs a Message ID".into()))?;
        self.send(context_id, command, dataset)?;
        self.final_response(id)
    }

    /// C-ECHO (PS3.7 9.1.5) on the Verification context: the status of the C-ECHO-RSP.
    pub fn echo(&mut self) -> Result<Status> {
        let Some(ctx) = self.negotiated().context_for(VERIFICATION_SOP_CLASS, None) else {
            return Err(Error::Usage("no accepted Verification context".into()));
        };
        let ctx = ctx.id;
        let id = self.next_message_id();
        self.send(ctx, &Command::c_echo_rq(id), None)?;
        Ok(self.final_response(id)?.status_or_success())
    }

    /// C-STORE (PS3.7 9.1.1) of one instance, its dataset (without the File Meta
    /// Information, in the context's transfer syntax) read from `dataset`. Uses the first
    /// accepted context for `sop_class` (and `transfer_syntax`, if given). Returns the
    /// C-STORE-RSP.
    pub fn store(
        &mut self,
        sop_class: &str,
        sop_instance: &str,
        transfer_syntax: Option<&str>,
        dataset: &mut dyn Read,
    ) -> Result<Command> {
        let Some(ctx) = self.negotiated().context_for(sop_class, transfer_syntax) else {
            return Err(Error::Usage(format!(
                "no accepted context for {sop_class} in {}",
                transfer_syntax.unwrap_or("any transfer syntax")
            )));
        };
        let ctx = ctx.id;
        let id = self.next_message_id();
        let rq = Command::c_store_rq(id, sop_class, sop_instance, priority::MEDIUM);
        self.send(ctx, &rq, Some(dataset))?;
        self.final_response(id)
    }
}
