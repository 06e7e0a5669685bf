//! Errors of the network layer. Each says where it went wrong (which PDU, which item, the
//! byte offset inside the PDU, the DIMSE tag) and, through [`Error::abort`], which A-ABORT
//! the upper layer owes the peer for it (PS3.8 9.3.8).

use std::io;
use std::time::Duration;

use super::pdu::{Abort, Rejection};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which timer ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// The Association Request/Reject/Release Timer (PS3.8 9.1.5).
    Artim,
    /// No PDU from the peer of an established association for this long.
    Idle,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The transport failed (not a timeout, not an orderly close).
    #[error("{during}: {source}")]
    Io {
        during: &'static str,
        #[source]
        source: io::Error,
    },
    /// A timer ran out while waiting for the peer.
    #[error("{during}: nothing from the peer for {after:?} ({timer:?} timer)")]
    Timeout {
        during: &'static str,
        timer: Timer,
        after: Duration,
    },
    /// The peer closed the connection (or half of it) without a release or an abort.
    #[error("{during}: the peer closed the connection")]
    Closed { during: &'static str },
    /// A PDU or one of its items is malformed. `offset` counts from the PDU's first byte.
    #[error("{pdu}{}: byte {offset}: {reason}", fmt_item(.item))]
    Malformed {
        pdu: &'static str,
        item: Option<u8>,
        offset: usize,
        reason: String,
    },
    /// A PDU announces more bytes than we accept; nothing of that size was allocated.
    #[error("{pdu}: length {length} exceeds the limit of {limit} bytes")]
    TooLong {
        pdu: &'static str,
        length: u32,
        limit: u32,
    },
    /// The PDU type byte names no PDU of PS3.8 9.3.
    #[error("unrecognized PDU type 0x{pdu_type:02X}")]
    UnknownPduType { pdu_type: u8 },
    /// A valid PDU that the association state does not allow (PS3.8 9.2 state table).
    #[error("unexpected {pdu} while {state}")]
    UnexpectedPdu {
        pdu: &'static str,
        state: &'static str,
    },
    /// A DIMSE command set that cannot be decoded or lacks a required field (PS3.7 9, 10, E).
    #[error("DIMSE command at byte {offset}{}: {reason}", fmt_tag(.tag))]
    Command {
        offset: usize,
        tag: Option<u32>,
        reason: String,
    },
    /// P-DATA fragments that break the message rules of PS3.8 9.3.5 / PS3.7 Annex E.
    #[error("P-DATA: {reason}")]
    Fragment { reason: String },
    /// The acceptor answered our A-ASSOCIATE-RQ with an A-ASSOCIATE-RJ.
    #[error("association rejected: {0}")]
    Rejected(Rejection),
    /// The peer sent an A-ABORT.
    #[error("association aborted by the peer: {0}")]
    Aborted(Abort),
    /// Negotiation gave nothing usable (no accepted context, a bad maximum length, ...).
    #[error("negotiation: {0}")]
    Negotiation(String),
    /// The dataset sink failed. The rest of the dataset was read and dropped, so the
    /// association is still usable: the service answers with a failure status.
    #[error("dataset sink: {0}")]
    Sink(#[source] io::Error),
    /// A call that does not fit the association (unknown context, wrong state).
    #[error("{0}")]
    Usage(String),
    /// The server is shutting down and aborted the association.
    #[error("the server is shutting down")]
    Shutdown,
}

fn fmt_item(item: &Option<u8>) -> String {
    match item {
        Some(t) => format!(" item 0x{t:02X}"),
        None => String::new(),
    }
}

fn fmt_tag(tag: &Option<u32>) -> String {
    match tag {
        Some(t) => format!(" in ({:04X},{:04X})", t >> 16, t & 0xFFFF),
        None => String::new(),
    }
}

impl Error {
    pub(crate) fn io(during: &'static str, source: io::Error) -> Self {
        Error::Io { during, source }
    }

    pub(crate) fn malformed(
        pdu: &'static str,
        item: Option<u8>,
        offset: usize,
        reason: impl Into<String>,
    ) -> Self {
        Error::Malformed {
            pdu,
            item,
            offset,
            reason: reason.into(),
        }
    }

    pub(crate) fn command(offset: usize, tag: Option<u32>, reason: impl Into<String>) -> Self {
        Error::Command {
            offset,
            tag,
            reason: reason.into(),
        }
    }

    pub(crate) fn fragment(reason: impl Into<String>) -> Self {
        Error::Fragment {
            reason: reason.into(),
        }
    }

    /// The A-ABORT to send the peer for this error, or `None` when none is owed: the peer
    /// already aborted or closed, rejected us, or the association is still usable
    /// ([`Error::Sink`], [`Error::Usage`]).
    pub fn abort(&self) -> Option<Abort> {
        match self {
            Error::UnknownPduType { .. } => Some(Abort::provider(Abort::UNRECOGNIZED_PDU)),
            Error::UnexpectedPdu { .. } => Some(Abort::provider(Abort::UNEXPECTED_PDU)),
            Error::Malformed { .. } | Error::TooLong { .. } => {
                Some(Abort::provider(Abort::INVALID_PARAMETER))
            }
            // ARTIM running out before the association exists only closes the transport
            // (PS3.8 state table: Sta2 Evt18, AA-2); the release wait sends its own abort.
            Error::Timeout {
                timer: Timer::Artim,
                ..
            } => None,
            Error::Command { .. } | Error::Fragment { .. } | Error::Timeout { .. } => {
                Some(Abort::provider(Abort::NOT_SPECIFIED))
            }
            Error::Shutdown => Some(Abort::user()),
            Error::Io { .. } | Error::Negotiation(_) => Some(Abort::provider(Abort::NOT_SPECIFIED)),
            Error::Closed { .. }
            | Error::Rejected(_)
            | Error::Aborted(_)
            | Error::Sink(_)
            | Error::Usage(_) => None,
        }
    }

    /// True when the association can go on after this error.
    pub fn is_recoverable(&self) -> bool {
        matches!(self, Error::Sink(_) | Error::Usage(_))
    }
}
