//! The requestor's half of negotiation: [`Proposal`] -> A-ASSOCIATE-RQ, and the
//! A-ASSOCIATE-AC -> [`Negotiated`] ([`Proposal::accept`]), checking that the acceptor only
//! answered what we asked (PS3.8 9.3.3, PS3.7 D.3.3.4).

use std::net::SocketAddr;

use super::{
    roles_for, Negotiated, PresentationContext, Role, IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME, MISSING_MAX_PDU, SMALLEST_USABLE_PDU,
};
use crate::net::error::{Error, Result};
use crate::net::pdu::{
    AssociateAc, AssociateRq, ContextResult, ProposedContext, RoleSelection, UserInfo,
    APPLICATION_CONTEXT,
};

/// What we ask for when we open an association.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub calling_ae: String,
    pub called_ae: String,
    /// Our Maximum Length (0 = no limit).
    pub max_pdu: u32,
    /// (abstract syntax, transfer syntaxes in our order of preference); at most 128
    /// contexts (odd IDs 1..255, PS3.8 9.3.2.2).
    pub contexts: Vec<(String, Vec<String>)>,
    /// Role selection proposals: the roles we (the requestor) want per SOP class, e.g. SCP
    /// for the storage classes a C-GET brings back.
    pub roles: Vec<RoleSelection>,
}

impl Proposal {
    pub fn new(calling_ae: &str, called_ae: &str) -> Self {
        Proposal {
            calling_ae: calling_ae.to_string(),
            called_ae: called_ae.to_string(),
            max_pdu: super::DEFAULT_MAX_PDU,
            contexts: Vec::new(),
            roles: Vec::new(),
        }
    }

    /// Propose `abstract_syntax` with these transfer syntaxes (one context).
    pub fn with_context(mut self, abstract_syntax: &str, transfer_syntaxes: &[&str]) -> Self {
        self.contexts.push((
            abstract_syntax.to_string(),
            transfer_syntaxes.iter().map(|s| s.to_string()).collect(),
        ));
        self
    }

    /// Propose to act as SCU and/or SCP for `sop_class`.
    pub fn with_role(mut self, sop_class: &str, scu: bool, scp: bool) -> Self {
        self.roles.push(RoleSelection {
            sop_class_uid: sop_class.to_string(),
            scu,
            scp,
        });
        self
    }

    /// The A-ASSOCIATE-RQ for this proposal.
    pub fn request(&self) -> Result<AssociateRq> {
        if self.contexts.is_empty() || self.contexts.len() > 128 {
            return Err(Error::Usage(format!(
                "{} presentation contexts proposed; 1 to 128 fit (PS3.8 9.3.2.2)",
                self.contexts.len()
            )));
        }
        let contexts = self
            .contexts
            .iter()
            .enumerate()
            .map(|(i, (abs, ts))| ProposedContext {
                id: (2 * i + 1) as u8,
                abstract_syntax: abs.clone(),
                transfer_syntaxes: ts.clone(),
            })
            .collect();
        Ok(AssociateRq {
            protocol_version: 1,
            called_ae: self.called_ae.clone(),
            calling_ae: self.calling_ae.clone(),
            application_context: APPLICATION_CONTEXT.to_string(),
            contexts,
            user: UserInfo {
                max_length: Some(self.max_pdu),
                implementation_class_uid: IMPLEMENTATION_CLASS_UID.to_string(),
                implementation_version_name: Some(IMPLEMENTATION_VERSION_NAME.to_string()),
                async_ops: None,
                roles: self.roles.clone(),
                ..UserInfo::default()
            },
        })
    }

    /// Interpret the acceptor's A-ASSOCIATE-AC to `rq` (built by [`Proposal::request`]).
    /// Fails when the answer names a context or transfer syntax we did not propose, grants
    /// a role we did not ask for, or accepts no context at all.
    pub fn accept(
        &self,
        rq: &AssociateRq,
        ac: &AssociateAc,
        peer_addr: Option<SocketAddr>,
    ) -> Result<Negotiated> {
        let peer_max_pdu = ac.user.max_length.unwrap_or(MISSING_MAX_PDU);
        if peer_max_pdu != 0 && peer_max_pdu < SMALLEST_USABLE_PDU {
            return Err(Error::Negotiation(format!(
                "the acceptor's maximum length {peer_max_pdu} cannot carry data"
            )));
        }
        let roles = granted_roles(&rq.user.roles, &ac.user.roles)?;
        let mut contexts = Vec::new();
        let mut refused = Vec::new();
        for answer in &ac.contexts {
            let Some(pc) = rq.contexts.iter().find(|p| p.id == answer.id) else {
                return Err(Error::Negotiation(format!(
                    "answer for presentation context {} that we did not propose",
                    answer.id
                )));
            };
            if answer.result != ContextResult::Acceptance {
                refused.push(answer.clone());
                continue;
            }
            if !pc.transfer_syntaxes.contains(&answer.transfer_syntax) {
                return Err(Error::Negotiation(format!(
                    "presentation context {} accepted with transfer syntax {} that we did not propose",
                    answer.id, answer.transfer_syntax
                )));
            }
            let (requestor_scu, requestor_scp) = roles_for(&roles, &pc.abstract_syntax);
            contexts.push(PresentationContext {
                id: pc.id,
                abstract_syntax: pc.abstract_syntax.clone(),
                transfer_syntax: answer.transfer_syntax.clone(),
                requestor_scu,
                requestor_scp,
            });
        }
        if contexts.is_empty() {
            let reasons: Vec<String> = refused
                .iter()
                .map(|r| format!("{}: {:?}", r.id, r.result))
                .collect();
            return Err(Error::Negotiation(format!(
                "no presentation context accepted ({})",
                reasons.join(", ")
            )));
        }
        Ok(Negotiated {
            role: Role::Requestor,
            calling_ae: rq.calling_ae.clone(),
            called_ae: rq.called_ae.clone(),
            peer_addr,
            contexts,
            refused,
            our_max_pdu: self.max_pdu,
            peer_max_pdu,
            peer_implementation_class_uid: ac.user.implementation_class_uid.clone(),
            peer_implementation_version_name: ac.user.implementation_version_name.clone(),
            roles,
        })
    }
}

/// The acceptor's role answers, checked against our proposals (PS3.7 D.3.3.4: an acceptor
/// may only withdraw a proposed role, never add one).
fn granted_roles(
    proposed: &[RoleSelection],
    answers: &[RoleSelection],
) -> Result<Vec<RoleSelection>> {
    answers
        .iter()
        .map(|a| {
            let Some(p) = proposed.iter().find(|p| p.sop_class_uid == a.sop_class_uid) else {
                return Err(Error::Negotiation(format!(
                    "role selection answer for {} that we did not propose",
                    a.sop_class_uid
                )));
            };
            if (a.scu && !p.scu) || (a.scp && !p.scp) {
                return Err(Error::Negotiation(format!(
                    "role selection for {} grants a role we did not propose",
                    a.sop_class_uid
                )));
            }
            Ok(a.clone())
        })
        .collect()
}
