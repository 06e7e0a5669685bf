//! The acceptor's half of negotiation (PS3.8 7.1.1, PS3.7 D.3.3): the checks the upper
//! layer itself makes ([`check_request`]), then [`negotiate`], which applies the
//! application's [`Acceptance`] to the proposed contexts and builds the A-ASSOCIATE-AC.

use std::net::SocketAddr;
use std::sync::Arc;

use super::{
    is_valid_uid, roles_for, Negotiated, PresentationContext, Role, IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME, MISSING_MAX_PDU, SMALLEST_USABLE_PDU,
};
use crate::net::pdu::{
    AssociateAc, AssociateRq, ContextAnswer, ContextResult, ProposedContext, Rejection,
    RoleSelection, UserInfo, APPLICATION_CONTEXT, IMPLICIT_VR_LE,
};

/// Which transfer syntax to accept for a context: the first of `preferred` (our order)
/// that the peer proposed; failing that, when `any_storable`, the first well-formed UID
/// the peer proposed (duckpacs stores every transfer syntax byte for byte).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferSyntaxes {
    pub preferred: Arc<[String]>,
    pub any_storable: bool,
}

impl TransferSyntaxes {
    pub fn new(preferred: &[&str], any_storable: bool) -> Self {
        TransferSyntaxes {
            preferred: preferred.iter().map(|s| s.to_string()).collect(),
            any_storable,
        }
    }

    /// The transfer syntax to accept out of those proposed, if any.
    pub fn choose<'p>(&self, proposed: &'p [String]) -> Option<&'p str> {
        for want in self.preferred.iter() {
            if let Some(ts) = proposed.iter().find(|p| *p == want) {
                return Some(ts);
            }
        }
        if self.any_storable {
            return proposed
                .iter()
                .find(|p| is_valid_uid(p))
                .map(String::as_str);
        }
        None
    }
}

/// The application's answer for one proposed presentation context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextDecision {
    /// Accept, with the transfer syntax chosen by these rules; when none of the proposed
    /// ones fits, the context is refused with reason 4 (transfer syntaxes not supported).
    Accept(TransferSyntaxes),
    /// Refuse with 1 (user rejection), 2 (no reason) or 3 (abstract syntax not supported).
    Refuse(ContextResult),
}

/// The application's decision to accept an association (PS3.8 9.3.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acceptance {
    /// One decision per proposed context, in the order proposed. Contexts past the end of
    /// this list are refused with reason 3 (abstract syntax not supported).
    pub contexts: Vec<ContextDecision>,
    /// Answers to the requestor's role selection proposals (PS3.7 D.3.3.4), by SOP class:
    /// the roles we allow the requestor. A proposal without an answer here is not answered,
    /// so the default roles apply (requestor SCU only).
    pub roles: Vec<RoleSelection>,
}

impl Acceptance {
    /// Decide every proposed context from its abstract syntax.
    pub fn by_abstract_syntax(
        contexts: &[ProposedContext],
        mut decide: impl FnMut(&str) -> ContextDecision,
    ) -> Self {
        Acceptance {
            contexts: contexts
                .iter()
                .map(|c| decide(&c.abstract_syntax))
                .collect(),
            roles: Vec::new(),
        }
    }
}

/// Checks that precede the application's policy: protocol version 1 (bit 0, PS3.8 9.3.2)
/// and the DICOM application context (PS3.7 A.2.1).
pub fn check_request(rq: &AssociateRq) -> Result<(), Rejection> {
    if rq.protocol_version & 1 == 0 {
        return Err(Rejection::protocol_version_not_supported());
    }
    if rq.application_context != APPLICATION_CONTEXT {
        return Err(Rejection::application_context_not_supported());
    }
    Ok(())
}

/// Apply `acceptance` to the request: choose each context's result and transfer syntax,
/// answer role selections (never granting a role the requestor did not propose) and the
/// asynchronous operations window (1/1: one operation at a time, PS3.7 D.3.3.3). Fails with
/// a rejection when the peer's maximum length is too small to carry any PDV.
pub fn negotiate(
    rq: &AssociateRq,
    acceptance: &Acceptance,
    our_max_pdu: u32,
    peer_addr: Option<SocketAddr>,
) -> Result<(AssociateAc, Negotiated), Rejection> {
    let peer_max_pdu = rq.user.max_length.unwrap_or(MISSING_MAX_PDU);
    if peer_max_pdu != 0 && peer_max_pdu < SMALLEST_USABLE_PDU {
        return Err(Rejection::no_reason());
    }
    let roles = answer_roles(&rq.user.roles, &acceptance.roles);
    let mut answers = Vec::with_capacity(rq.contexts.len());
    let mut contexts = Vec::new();
    let mut refused = Vec::new();
    for (i, pc) in rq.contexts.iter().enumerate() {
        let answer = decide_context(pc, acceptance.contexts.get(i));
        if answer.result == ContextResult::Acceptance {
            let (requestor_scu, requestor_scp) = roles_for(&roles, &pc.abstract_syntax);
            contexts.push(PresentationContext {
                id: pc.id,
                abstract_syntax: pc.abstract_syntax.clone(),
                transfer_syntax: answer.transfer_syntax.clone(),
                requestor_scu,
                requestor_scp,
            });
        } else {
            refused.push(answer.clone());
        }
        answers.push(answer);
    }
    let ac = AssociateAc {
        protocol_version: 1,
        called_ae: rq.called_ae.clone(),
        calling_ae: rq.calling_ae.clone(),
        application_context: APPLICATION_CONTEXT.to_string(),
        contexts: answers,
        user: UserInfo {
            max_length: Some(our_max_pdu),
            implementation_class_uid: IMPLEMENTATION_CLASS_UID.to_string(),
            implementation_version_name: Some(IMPLEMENTATION_VERSION_NAME.to_string()),
            async_ops: rq.user.async_ops.map(|_| (1, 1)),
            roles: roles.clone(),
            ..UserInfo::default()
        },
    };
    let negotiated = Negotiated {
        role: Role::Acceptor,
        calling_ae: rq.calling_ae.clone(),
        called_ae: rq.called_ae.clone(),
        peer_addr,
        contexts,
        refused,
        our_max_pdu,
        peer_max_pdu,
        peer_implementation_class_uid: rq.user.implementation_class_uid.clone(),
        peer_implementation_version_name: rq.user.implementation_version_name.clone(),
        roles,
    };
    Ok((ac, negotiated))
}

fn decide_context(pc: &ProposedContext, decision: Option<&ContextDecision>) -> ContextAnswer {
    let refuse = |result| ContextAnswer {
        id: pc.id,
        result,
        // Not significant for a refused context (PS3.8 9.3.3.2), but present.
        transfer_syntax: IMPLICIT_VR_LE.to_string(),
    };
    match decision {
        None => refuse(ContextResult::AbstractSyntaxNotSupported),
        Some(ContextDecision::Refuse(ContextResult::Acceptance)) => refuse(ContextResult::NoReason),
        Some(ContextDecision::Refuse(result)) => refuse(*result),
        Some(ContextDecision::Accept(rules)) => match rules.choose(&pc.transfer_syntaxes) {
            Some(ts) => ContextAnswer {
                id: pc.id,
                result: ContextResult::Acceptance,
                transfer_syntax: ts.to_string(),
            },
            None => refuse(ContextResult::TransferSyntaxesNotSupported),
        },
    }
}

/// Role selection answers (PS3.7 D.3.3.4): for each proposal the application answered,
/// the roles both sides agree to. A role is granted only when proposed and allowed.
fn answer_roles(proposed: &[RoleSelection], allowed: &[RoleSelection]) -> Vec<RoleSelection> {
    proposed
        .iter()
        .filter_map(|p| {
            let a = allowed
                .iter()
                .find(|a| a.sop_class_uid == p.sop_class_uid)?;
            Some(RoleSelection {
                sop_class_uid: p.sop_class_uid.clone(),
                scu: p.scu && a.scu,
                scp: p.scp && a.scp,
            })
        })
        .collect()
}
