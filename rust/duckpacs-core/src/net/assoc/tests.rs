//! Negotiation without sockets: acceptor decisions, transfer syntax preference, role
//! selection, and the requestor's checks of the answer.

use super::acceptor::*;
use super::requestor::Proposal;
use super::*;
use crate::net::error::Error;
use crate::net::pdu::{AssociateAc, ContextResult, Rejection, APPLICATION_CONTEXT, IMPLICIT_VR_LE};

const VERIFICATION: &str = "1.2.840.10008.1.1";
const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
const MR: &str = "1.2.840.10008.5.1.4.1.1.4";
const EXPLICIT: &str = "1.2.840.10008.1.2.1";
const JPEG_LOSSLESS: &str = "1.2.840.10008.1.2.4.70";

fn proposal() -> Proposal {
    Proposal::new("GETSCU", "DUCKPACS")
        .with_context(VERIFICATION, &[IMPLICIT_VR_LE])
        .with_context(CT, &[JPEG_LOSSLESS, EXPLICIT, IMPLICIT_VR_LE])
        .with_context(MR, &["1.2.3.private", JPEG_LOSSLESS])
        .with_role(CT, false, true)
        .with_role(MR, true, true)
}

fn uncompressed() -> TransferSyntaxes {
    TransferSyntaxes::new(&[EXPLICIT, IMPLICIT_VR_LE], false)
}

fn storable() -> TransferSyntaxes {
    TransferSyntaxes::new(&[EXPLICIT, IMPLICIT_VR_LE], true)
}

#[test]
fn request_numbers_contexts_and_announces_us() {
    let rq = proposal().request().unwrap();
    let ids: Vec<u8> = rq.contexts.iter().map(|c| c.id).collect();
    assert_eq!(ids, vec![1, 3, 5]);
    assert_eq!(rq.application_context, APPLICATION_CONTEXT);
    assert_eq!(rq.user.max_length, Some(DEFAULT_MAX_PDU));
    assert_eq!(rq.user.implementation_class_uid, IMPLEMENTATION_CLASS_UID);
    assert!(is_valid_uid(IMPLEMENTATION_CLASS_UID));
    assert!(IMPLEMENTATION_VERSION_NAME.len() <= 16);
    assert_eq!(rq.user.roles.len(), 2);
    let too_many = (0..129).fold(Proposal::new("A", "B"), |p, _| {
        p.with_context(CT, &[EXPLICIT])
    });
    assert!(matches!(too_many.request(), Err(Error::Usage(_))));
}

#[test]
fn upper_layer_checks_come_first() {
    let mut rq = proposal().request().unwrap();
    assert_eq!(check_request(&rq), Ok(()));
    rq.protocol_version = 2; // bit 0 clear
    assert_eq!(
        check_request(&rq),
        Err(Rejection::protocol_version_not_supported())
    );
    rq.protocol_version = 3; // bit 0 set: version 1 supported among others
    rq.application_context = "1.2.3".into();
    assert_eq!(
        check_request(&rq),
        Err(Rejection::application_context_not_supported())
    );
}

#[test]
fn transfer_syntax_preference_is_ours_then_any_storable() {
    let proposed: Vec<String> = [JPEG_LOSSLESS, IMPLICIT_VR_LE, EXPLICIT]
        .map(String::from)
        .to_vec();
    // Our order wins over the peer's.
    assert_eq!(uncompressed().choose(&proposed), Some(EXPLICIT));
    // Nothing preferred: the first well-formed UID the peer offers, when storable.
    let jpeg_only = vec![
        "not a uid".to_string(),
        "1.2.08".to_string(), // leading zero in a component
        JPEG_LOSSLESS.to_string(),
    ];
    assert_eq!(storable().choose(&jpeg_only), Some(JPEG_LOSSLESS));
    assert_eq!(uncompressed().choose(&jpeg_only), None);
}

#[test]
fn acceptor_applies_decisions_per_context() {
    let p = proposal();
    let rq = p.request().unwrap();
    let acceptance = Acceptance {
        contexts: vec![
            ContextDecision::Accept(TransferSyntaxes::new(&[IMPLICIT_VR_LE], false)),
            ContextDecision::Accept(storable()),
            ContextDecision::Accept(uncompressed()),
        ],
        roles: vec![],
    };
    let (ac, n) = negotiate(&rq, &acceptance, 65_536, None).unwrap();
    let results: Vec<(u8, ContextResult, &str)> = ac
        .contexts
        .iter()
        .map(|c| (c.id, c.result, c.transfer_syntax.as_str()))
        .collect();
    assert_eq!(
        results,
        vec![
            (1, ContextResult::Acceptance, IMPLICIT_VR_LE),
            (3, ContextResult::Acceptance, EXPLICIT),
            // MR offered only a private syntax and JPEG: not uncompressed.
            (
                5,
                ContextResult::TransferSyntaxesNotSupported,
                IMPLICIT_VR_LE
            ),
        ]
    );
    assert_eq!(n.contexts.len(), 2);
    assert_eq!(n.refused.len(), 1);
    assert_eq!(n.our_max_pdu, 65_536);
    assert_eq!(n.peer_max_pdu, DEFAULT_MAX_PDU);
    assert_eq!(n.our_ae(), "DUCKPACS");
    assert_eq!(n.peer_ae(), "GETSCU");
    assert_eq!(ac.user.max_length, Some(65_536));
    assert_eq!(ac.user.implementation_class_uid, IMPLEMENTATION_CLASS_UID);
    // No role proposal answered: nothing in the AC, defaults apply.
    assert!(ac.user.roles.is_empty());
    assert!(n.context(3).unwrap().requestor_scu && !n.context(3).unwrap().requestor_scp);
}

#[test]
fn refusals_and_missing_decisions() {
    let rq = proposal().request().unwrap();
    let acceptance = Acceptance {
        contexts: vec![
            ContextDecision::Refuse(ContextResult::UserRejection),
            // "Refuse with acceptance" makes no sense: sent as no-reason.
            ContextDecision::Refuse(ContextResult::Acceptance),
        ],
        roles: vec![],
    };
    let (ac, n) = negotiate(&rq, &acceptance, 0, None).unwrap();
    let results: Vec<ContextResult> = ac.contexts.iter().map(|c| c.result).collect();
    assert_eq!(
        results,
        vec![
            ContextResult::UserRejection,
            ContextResult::NoReason,
            ContextResult::AbstractSyntaxNotSupported, // no decision given
        ]
    );
    assert!(n.contexts.is_empty());
    // The requestor sees that nothing was accepted.
    let e = proposal().accept(&rq, &ac, None).unwrap_err();
    assert!(matches!(e, Error::Negotiation(_)), "{e}");
    assert!(
        e.to_string().contains("no presentation context accepted"),
        "{e}"
    );
}

#[test]
fn by_abstract_syntax_helper() {
    let rq = proposal().request().unwrap();
    let acceptance = Acceptance::by_abstract_syntax(&rq.contexts, |a| {
        if a == VERIFICATION {
            ContextDecision::Accept(uncompressed())
        } else {
            ContextDecision::Refuse(ContextResult::AbstractSyntaxNotSupported)
        }
    });
    let (_, n) = negotiate(&rq, &acceptance, 0, None).unwrap();
    assert_eq!(n.contexts.len(), 1);
    assert_eq!(n.contexts[0].abstract_syntax, VERIFICATION);
}

#[test]
fn role_selection_grants_only_what_was_proposed_and_allowed() {
    let p = proposal();
    let rq = p.request().unwrap();
    let acceptance = Acceptance {
        contexts: vec![
            ContextDecision::Accept(uncompressed()),
            ContextDecision::Accept(storable()),
            ContextDecision::Accept(storable()),
        ],
        roles: vec![
            // CT: requestor proposed SCP only; we allow both: SCP only is granted.
            RoleSelection {
                sop_class_uid: CT.into(),
                scu: true,
                scp: true,
            },
            // MR: requestor proposed both; we allow SCU only.
            RoleSelection {
                sop_class_uid: MR.into(),
                scu: true,
                scp: false,
            },
        ],
    };
    let (ac, n) = negotiate(&rq, &acceptance, 0, None).unwrap();
    let ct = n.context(3).unwrap();
    assert!(!ct.requestor_scu && ct.requestor_scp);
    assert!(ct.may_request(Role::Acceptor) && !ct.may_request(Role::Requestor));
    let mr = n.context(5).unwrap();
    assert!(mr.requestor_scu && !mr.requestor_scp);
    // The requestor reads the same roles from the answer.
    let r = p.accept(&rq, &ac, None).unwrap();
    assert_eq!(r.context(3).unwrap(), ct);
    assert_eq!(r.context(5).unwrap(), mr);
    assert_eq!(r.context_for(CT, None), None, "we are not SCU for CT");
    assert!(r
        .context_for(MR, Some(mr.transfer_syntax.as_str()))
        .is_some());
}

#[test]
fn async_window_and_peer_maximum() {
    let mut rq = proposal().request().unwrap();
    rq.user.async_ops = Some((5, 5));
    rq.user.max_length = None;
    let acceptance = Acceptance::default();
    let (ac, n) = negotiate(&rq, &acceptance, 0, None).unwrap();
    assert_eq!(ac.user.async_ops, Some((1, 1)));
    assert_eq!(n.peer_max_pdu, MISSING_MAX_PDU);
    rq.user.max_length = Some(6);
    assert_eq!(
        negotiate(&rq, &acceptance, 0, None).unwrap_err(),
        Rejection::no_reason()
    );
    // 0 is "no limit": we send at most SEND_CEILING.
    rq.user.max_length = Some(0);
    let (_, n) = negotiate(&rq, &acceptance, 0, None).unwrap();
    assert_eq!(n.max_send_fragment(), SEND_CEILING as usize - 6);
}

fn accepted_ac(rq: &crate::net::pdu::AssociateRq) -> AssociateAc {
    let acceptance =
        Acceptance::by_abstract_syntax(&rq.contexts, |_| ContextDecision::Accept(storable()));
    negotiate(rq, &acceptance, 0, None).unwrap().0
}

#[test]
fn requestor_refuses_answers_it_did_not_ask_for() {
    let p = proposal();
    let rq = p.request().unwrap();
    let good = accepted_ac(&rq);
    assert!(p.accept(&rq, &good, None).is_ok());

    let mut ac = good.clone();
    ac.contexts[0].id = 7;
    assert!(p
        .accept(&rq, &ac, None)
        .unwrap_err()
        .to_string()
        .contains("did not propose"));

    let mut ac = good.clone();
    ac.contexts[0].transfer_syntax = EXPLICIT.into();
    assert!(p
        .accept(&rq, &ac, None)
        .unwrap_err()
        .to_string()
        .contains("transfer syntax"));

    let mut ac = good.clone();
    ac.user.roles = vec![RoleSelection {
        sop_class_uid: CT.into(),
        scu: true, // we proposed SCU = no for CT
        scp: true,
    }];
    assert!(p
        .accept(&rq, &ac, None)
        .unwrap_err()
        .to_string()
        .contains("grants a role"));

    let mut ac = good;
    ac.user.max_length = Some(3);
    assert!(matches!(
        p.accept(&rq, &ac, None),
        Err(Error::Negotiation(_))
    ));
}
