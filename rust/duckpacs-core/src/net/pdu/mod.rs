//! The seven PDUs of the DICOM upper layer (PS3.8 9.3) and their items: types, decoding
//! from bytes ([`decode`]) and encoding ([`Pdu::encode`]). No I/O here: the association
//! reads the 6-byte header, checks it with [`Header::parse`] against its limits, then reads
//! exactly that many bytes and hands them to [`decode_body`].
//!
//! All multi-byte fields are big endian (PS3.8 9.3.1). Reserved fields are written as zero
//! and never tested on receipt. Unknown sub-items of the user information item are kept
//! untouched ([`UserInfo::other`]); unknown items elsewhere are skipped, as PS3.8 9.3.1
//! allows.

mod decode;
mod encode;
#[cfg(test)]
mod tests;

use std::fmt;

pub use decode::{decode, decode_body, next_pdv};
pub use encode::{pdata_header, PDATA_OVERHEAD, PDV_HEADER};

use super::error::{Error, Result};

/// PDU type codes (PS3.8 Table 9-11 ff.).
pub mod kind {
    pub const ASSOCIATE_RQ: u8 = 0x01;
    pub const ASSOCIATE_AC: u8 = 0x02;
    pub const ASSOCIATE_RJ: u8 = 0x03;
    pub const P_DATA_TF: u8 = 0x04;
    pub const RELEASE_RQ: u8 = 0x05;
    pub const RELEASE_RP: u8 = 0x06;
    pub const ABORT: u8 = 0x07;
}

/// The DICOM application context name (PS3.7 A.2.1).
pub const APPLICATION_CONTEXT: &str = "1.2.840.10008.3.1.1.1";
/// Implicit VR Little Endian, the default transfer syntax (PS3.5 10.1).
pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
/// Size of the PDU header: type, reserved, 4-byte length (PS3.8 9.3.1).
pub const HEADER_LEN: usize = 6;
/// Largest association-phase PDU (A-ASSOCIATE-RQ/AC) we read. 128 presentation contexts
/// proposing 20 transfer syntaxes each stay under 80 KiB; this is generous and still bounds
/// what a peer can make us hold before the association exists.
pub const MAX_ASSOCIATE_PDU: u32 = 256 * 1024;
/// Ceiling for a P-DATA-TF PDU when our maximum length is 0 ("no limit", PS3.8 D.1): a
/// peer still cannot make us allocate more than this for one PDU.
pub const MAX_PDATA_CEILING: u32 = 16 * 1024 * 1024;

/// Name of a PDU type for messages and errors.
pub fn kind_name(pdu_type: u8) -> &'static str {
    match pdu_type {
        kind::ASSOCIATE_RQ => "A-ASSOCIATE-RQ",
        kind::ASSOCIATE_AC => "A-ASSOCIATE-AC",
        kind::ASSOCIATE_RJ => "A-ASSOCIATE-RJ",
        kind::P_DATA_TF => "P-DATA-TF",
        kind::RELEASE_RQ => "A-RELEASE-RQ",
        kind::RELEASE_RP => "A-RELEASE-RP",
        kind::ABORT => "A-ABORT",
        _ => "unknown PDU",
    }
}

/// A decoded PDU. P-DATA values borrow from the buffer they were decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pdu<'a> {
    AssociateRq(AssociateRq),
    AssociateAc(AssociateAc),
    AssociateRj(Rejection),
    PData(Vec<Pdv<'a>>),
    ReleaseRq,
    ReleaseRp,
    Abort(Abort),
}

impl Pdu<'_> {
    pub fn pdu_type(&self) -> u8 {
        match self {
            Pdu::AssociateRq(_) => kind::ASSOCIATE_RQ,
            Pdu::AssociateAc(_) => kind::ASSOCIATE_AC,
            Pdu::AssociateRj(_) => kind::ASSOCIATE_RJ,
            Pdu::PData(_) => kind::P_DATA_TF,
            Pdu::ReleaseRq => kind::RELEASE_RQ,
            Pdu::ReleaseRp => kind::RELEASE_RP,
            Pdu::Abort(_) => kind::ABORT,
        }
    }

    pub fn name(&self) -> &'static str {
        kind_name(self.pdu_type())
    }
}

/// The PDU header (PS3.8 9.3.1): type and length of what follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub pdu_type: u8,
    pub length: u32,
}

/// What we accept from the peer, checked on the header before any allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest P-DATA-TF length (the Maximum Length we announced, PS3.8 D.1; never 0 here).
    pub max_pdata: u32,
    /// Largest A-ASSOCIATE-RQ/AC length.
    pub max_associate: u32,
}

impl Limits {
    /// Limits for an association whose announced maximum length is `max_pdu` (0 = none).
    pub fn new(max_pdu: u32) -> Self {
        let max_pdata = if max_pdu == 0 {
            MAX_PDATA_CEILING
        } else {
            max_pdu.min(MAX_PDATA_CEILING)
        };
        Limits {
            max_pdata,
            max_associate: MAX_ASSOCIATE_PDU,
        }
    }
}

impl Header {
    /// Parse and check a header: the type must be one of PS3.8 9.3, the length within
    /// `limits` (P-DATA, A-ASSOCIATE-RQ/AC) or exactly 4 (RJ, release, abort).
    pub fn parse(bytes: [u8; HEADER_LEN], limits: Limits) -> Result<Header> {
        let pdu_type = bytes[0];
        let length = u32::from_be_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]);
        let name = kind_name(pdu_type);
        let limit = match pdu_type {
            kind::ASSOCIATE_RQ | kind::ASSOCIATE_AC => limits.max_associate,
            kind::P_DATA_TF => limits.max_pdata,
            kind::ASSOCIATE_RJ | kind::RELEASE_RQ | kind::RELEASE_RP | kind::ABORT => {
                if length != 4 {
                    return Err(Error::malformed(
                        name,
                        None,
                        2,
                        format!("length {length}, this PDU has 4 bytes after its header"),
                    ));
                }
                4
            }
            _ => return Err(Error::UnknownPduType { pdu_type }),
        };
        if length > limit {
            return Err(Error::TooLong {
                pdu: name,
                length,
                limit,
            });
        }
        Ok(Header { pdu_type, length })
    }
}

/// A proposed presentation context (PS3.8 9.3.2.2): an odd ID, one abstract syntax and the
/// transfer syntaxes the requestor offers for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProposedContext {
    pub id: u8,
    pub abstract_syntax: String,
    pub transfer_syntaxes: Vec<String>,
}

/// The acceptor's answer for one presentation context (PS3.8 9.3.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContextResult {
    Acceptance = 0,
    UserRejection = 1,
    /// Provider rejection, no reason given.
    NoReason = 2,
    AbstractSyntaxNotSupported = 3,
    TransferSyntaxesNotSupported = 4,
}

impl ContextResult {
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0 => ContextResult::Acceptance,
            1 => ContextResult::UserRejection,
            2 => ContextResult::NoReason,
            3 => ContextResult::AbstractSyntaxNotSupported,
            4 => ContextResult::TransferSyntaxesNotSupported,
            _ => return None,
        })
    }
}

/// A presentation context item of an A-ASSOCIATE-AC. For a refused context the transfer
/// syntax is not significant (PS3.8 9.3.3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextAnswer {
    pub id: u8,
    pub result: ContextResult,
    pub transfer_syntax: String,
}

/// SCP/SCU Role Selection sub-item (PS3.7 D.3.3.4). The flags are the *requestor's* roles,
/// in the request as proposed and in the answer as accepted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoleSelection {
    pub sop_class_uid: String,
    pub scu: bool,
    pub scp: bool,
}

/// SOP Class Extended Negotiation sub-item (PS3.7 D.3.3.5): service-class specific bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtendedNegotiation {
    pub sop_class_uid: String,
    pub info: Vec<u8>,
}

/// A user information sub-item we do not interpret (common extended negotiation 0x57, user
/// identity 0x58/0x59, or an unknown type), kept byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawItem {
    pub item_type: u8,
    pub data: Vec<u8>,
}

/// The User Information item (PS3.8 9.3.2.3, PS3.7 D.3.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    /// Maximum Length sub-item (PS3.8 D.1): the largest P-DATA-TF variable field the sender
    /// can receive; 0 means no limit. `None` when the sub-item was missing.
    pub max_length: Option<u32>,
    pub implementation_class_uid: String,
    pub implementation_version_name: Option<String>,
    /// Asynchronous Operations Window (PS3.7 D.3.3.3): (invoked, performed).
    pub async_ops: Option<(u16, u16)>,
    pub roles: Vec<RoleSelection>,
    pub extended: Vec<ExtendedNegotiation>,
    pub other: Vec<RawItem>,
}

/// A-ASSOCIATE-RQ (PS3.8 9.3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssociateRq {
    /// Bit 0 set for version 1 (the only one).
    pub protocol_version: u16,
    pub called_ae: String,
    pub calling_ae: String,
    pub application_context: String,
    pub contexts: Vec<ProposedContext>,
    pub user: UserInfo,
}

/// A-ASSOCIATE-AC (PS3.8 9.3.3). The AE title fields echo the request's and are not tested
/// on receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssociateAc {
    pub protocol_version: u16,
    pub called_ae: String,
    pub calling_ae: String,
    pub application_context: String,
    pub contexts: Vec<ContextAnswer>,
    pub user: UserInfo,
}

/// A-ASSOCIATE-RJ parameters (PS3.8 9.3.4, Table 9-21): result, source and reason, kept as
/// the raw codes so that a peer's reserved values survive; the constructors name the
/// combinations the standard defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rejection {
    /// 1 rejected-permanent, 2 rejected-transient.
    pub result: u8,
    /// 1 service-user, 2 service-provider (ACSE), 3 service-provider (presentation).
    pub source: u8,
    pub reason: u8,
}

impl Rejection {
    pub const PERMANENT: u8 = 1;
    pub const TRANSIENT: u8 = 2;
    pub const SOURCE_USER: u8 = 1;
    pub const SOURCE_ACSE: u8 = 2;
    pub const SOURCE_PRESENTATION: u8 = 3;

    pub const fn new(result: u8, source: u8, reason: u8) -> Self {
        Rejection {
            result,
            source,
            reason,
        }
    }
    /// Service-user, reason 1: no reason given.
    pub const fn no_reason() -> Self {
        Self::new(Self::PERMANENT, Self::SOURCE_USER, 1)
    }
    /// Service-user, reason 2: application context name not supported.
    pub const fn application_context_not_supported() -> Self {
        Self::new(Self::PERMANENT, Self::SOURCE_USER, 2)
    }
    /// Service-user, reason 3: calling AE title not recognized.
    pub const fn calling_ae_not_recognized() -> Self {
        Self::new(Self::PERMANENT, Self::SOURCE_USER, 3)
    }
    /// Service-user, reason 7: called AE title not recognized.
    pub const fn called_ae_not_recognized() -> Self {
        Self::new(Self::PERMANENT, Self::SOURCE_USER, 7)
    }
    /// Service-provider (ACSE), reason 2: protocol version not supported.
    pub const fn protocol_version_not_supported() -> Self {
        Self::new(Self::PERMANENT, Self::SOURCE_ACSE, 2)
    }
    /// Service-provider (presentation), transient, reason 1: temporary congestion.
    pub const fn temporary_congestion() -> Self {
        Self::new(Self::TRANSIENT, Self::SOURCE_PRESENTATION, 1)
    }
    /// Service-provider (presentation), transient, reason 2: local limit exceeded.
    pub const fn local_limit_exceeded() -> Self {
        Self::new(Self::TRANSIENT, Self::SOURCE_PRESENTATION, 2)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let result = match self.result {
            Self::PERMANENT => "permanent",
            Self::TRANSIENT => "transient",
            _ => "result ?",
        };
        let (source, reason) = match (self.source, self.reason) {
            (1, 1) => ("service-user", "no reason given"),
            (1, 2) => ("service-user", "application context name not supported"),
            (1, 3) => ("service-user", "calling AE title not recognized"),
            (1, 7) => ("service-user", "called AE title not recognized"),
            (1, _) => ("service-user", "reserved reason"),
            (2, 1) => ("service-provider (ACSE)", "no reason given"),
            (2, 2) => ("service-provider (ACSE)", "protocol version not supported"),
            (2, _) => ("service-provider (ACSE)", "reserved reason"),
            (3, 1) => ("service-provider (presentation)", "temporary congestion"),
            (3, 2) => ("service-provider (presentation)", "local limit exceeded"),
            (3, _) => ("service-provider (presentation)", "reserved reason"),
            _ => ("unknown source", "unknown reason"),
        };
        write!(
            f,
            "{result}, {source}, reason {}: {reason} (PS3.8 9.3.4)",
            self.reason
        )
    }
}

/// A-ABORT parameters (PS3.8 9.3.8, Table 9-26): source and reason/diagnostic codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Abort {
    /// 0 service-user initiated, 2 service-provider initiated.
    pub source: u8,
    /// Meaningful only when the provider aborted.
    pub reason: u8,
}

impl Abort {
    pub const SOURCE_USER: u8 = 0;
    pub const SOURCE_PROVIDER: u8 = 2;
    pub const NOT_SPECIFIED: u8 = 0;
    pub const UNRECOGNIZED_PDU: u8 = 1;
    pub const UNEXPECTED_PDU: u8 = 2;
    pub const UNRECOGNIZED_PARAMETER: u8 = 4;
    pub const UNEXPECTED_PARAMETER: u8 = 5;
    pub const INVALID_PARAMETER: u8 = 6;

    /// An abort decided by the application (shutdown, a service giving up).
    pub const fn user() -> Self {
        Abort {
            source: Self::SOURCE_USER,
            reason: 0,
        }
    }
    /// An abort by the upper layer itself, with one of the reason constants.
    pub const fn provider(reason: u8) -> Self {
        Abort {
            source: Self::SOURCE_PROVIDER,
            reason,
        }
    }
}

impl fmt::Display for Abort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source {
            Self::SOURCE_USER => write!(f, "service-user abort (PS3.8 9.3.8)"),
            Self::SOURCE_PROVIDER => {
                let reason = match self.reason {
                    0 => "reason not specified",
                    1 => "unrecognized PDU",
                    2 => "unexpected PDU",
                    4 => "unrecognized PDU parameter",
                    5 => "unexpected PDU parameter",
                    6 => "invalid PDU parameter value",
                    _ => "reserved reason",
                };
                write!(
                    f,
                    "service-provider abort, reason {}: {reason} (PS3.8 9.3.8)",
                    self.reason
                )
            }
            other => write!(f, "abort with reserved source {other}"),
        }
    }
}

/// One Presentation Data Value of a P-DATA-TF PDU (PS3.8 9.3.5.1, Annex E.2): a fragment of
/// a command or a dataset, with the message control header's two bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pdv<'a> {
    pub context_id: u8,
    /// Bit 0 of the message control header: command (true) or dataset fragment.
    pub is_command: bool,
    /// Bit 1: the last fragment of the command or dataset.
    pub is_last: bool,
    pub data: &'a [u8],
}
