//! Association negotiation (PS3.8 7.1, PS3.7 Annex D): what both sides agree on when an
//! association is established. [`acceptor`] turns an A-ASSOCIATE-RQ and the application's
//! [`acceptor::Policy`] decision into an A-ASSOCIATE-AC or -RJ; [`requestor`] builds the
//! A-ASSOCIATE-RQ from proposed contexts and reads the answer. Both end in a
//! [`Negotiated`]: the accepted presentation contexts with their transfer syntax and roles,
//! and both maximum PDU lengths. No I/O here.

pub mod acceptor;
pub mod requestor;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;

use super::pdu::{ContextAnswer, RoleSelection};

/// Our Implementation Class UID and Version Name (PS3.7 D.3.3.2): the same as in the meta
/// groups we write (one owner, `part10`).
pub use crate::part10::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};
/// Our default Maximum Length (PS3.8 D.1): 256 KiB. A 0.5 MB MR image then takes 2 PDUs
/// instead of 32 at DCMTK's 16 KiB default, so per-PDU reads and header checks stop
/// mattering, while one such buffer per association keeps 32 associations under 9 MB.
pub const DEFAULT_MAX_PDU: u32 = 256 * 1024;
/// What we assume of a peer that sends no Maximum Length sub-item (it is mandatory, PS3.8
/// D.1): the conservative 16 KiB most implementations default to.
pub const MISSING_MAX_PDU: u32 = 16 * 1024;
/// Largest PDU we send when the peer announces no limit (0).
pub const SEND_CEILING: u32 = 1024 * 1024;

/// Which end of the association we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Requestor,
    Acceptor,
}

/// An accepted presentation context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentationContext {
    pub id: u8,
    pub abstract_syntax: String,
    pub transfer_syntax: String,
    /// The requestor may act as SCU (send requests) on this context (PS3.7 D.3.3.4; by
    /// default yes).
    pub requestor_scu: bool,
    /// The requestor may act as SCP (receive requests, e.g. C-STORE sub-operations of a
    /// C-GET; by default no).
    pub requestor_scp: bool,
}

impl PresentationContext {
    /// True when the side `role` may send requests on this context (act as SCU). The
    /// acceptor is SCU exactly where the requestor is SCP.
    pub fn may_request(&self, role: Role) -> bool {
        match role {
            Role::Requestor => self.requestor_scu,
            Role::Acceptor => self.requestor_scp,
        }
    }
}

/// The outcome of negotiation, kept by the association.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Our side.
    pub role: Role,
    pub calling_ae: String,
    pub called_ae: String,
    /// The peer's address, when the transport has one.
    pub peer_addr: Option<SocketAddr>,
    /// Accepted contexts only, in the order proposed.
    pub contexts: Vec<PresentationContext>,
    /// The answers for refused contexts (requestor side: why they were refused).
    pub refused: Vec<ContextAnswer>,
    /// The largest P-DATA-TF PDU we accept (what we announced; 0 = no limit).
    pub our_max_pdu: u32,
    /// The largest P-DATA-TF PDU the peer accepts (0 = no limit).
    pub peer_max_pdu: u32,
    pub peer_implementation_class_uid: String,
    pub peer_implementation_version_name: Option<String>,
    /// The role selections in force (the acceptor's answers).
    pub roles: Vec<RoleSelection>,
}

impl Negotiated {
    /// The accepted context with this ID.
    pub fn context(&self, id: u8) -> Option<&PresentationContext> {
        self.contexts.iter().find(|c| c.id == id)
    }

    /// The first accepted context for `abstract_syntax` (and `transfer_syntax`, if given)
    /// on which our side may send requests.
    pub fn context_for(
        &self,
        abstract_syntax: &str,
        transfer_syntax: Option<&str>,
    ) -> Option<&PresentationContext> {
        self.contexts.iter().find(|c| {
            c.abstract_syntax == abstract_syntax
                && transfer_syntax.is_none_or(|ts| c.transfer_syntax == ts)
                && c.may_request(self.role)
        })
    }

    /// Our AE title.
    pub fn our_ae(&self) -> &str {
        match self.role {
            Role::Requestor => &self.calling_ae,
            Role::Acceptor => &self.called_ae,
        }
    }

    /// The peer's AE title.
    pub fn peer_ae(&self) -> &str {
        match self.role {
            Role::Requestor => &self.called_ae,
            Role::Acceptor => &self.calling_ae,
        }
    }

    /// Largest PDV value we may put in one P-DATA-TF PDU to the peer (PS3.8 D.1: the
    /// peer's maximum covers the PDV items, each with a 6-byte header).
    pub fn max_send_fragment(&self) -> usize {
        let max = match self.peer_max_pdu {
            0 => SEND_CEILING,
            n => n.min(SEND_CEILING),
        };
        max as usize - super::pdu::PDV_HEADER
    }
}

/// Peer maximum lengths below this cannot carry a PDV with one byte of value.
pub(crate) const SMALLEST_USABLE_PDU: u32 = super::pdu::PDV_HEADER as u32 + 1;

/// The roles in force for `abstract_syntax` given the acceptor's answers (PS3.7 D.3.3.4):
/// a returned item sets both flags, no item means the defaults (requestor SCU only).
pub(crate) fn roles_for(roles: &[RoleSelection], abstract_syntax: &str) -> (bool, bool) {
    roles
        .iter()
        .find(|r| r.sop_class_uid == abstract_syntax)
        .map_or((true, false), |r| (r.scu, r.scp))
}

/// True when `uid` is a well-formed UID (PS3.5 9.1): 1 to 64 characters, digits and dots,
/// components without leading zeros.
pub fn is_valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 64
        && uid.split('.').all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_digit())
                && (part == "0" || !part.starts_with('0'))
        })
}
