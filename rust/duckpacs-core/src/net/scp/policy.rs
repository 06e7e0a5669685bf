//! The archive's association policy: the host decides who may do what (once per
//! association); this turns that into presentation contexts, roles and the services.
//!
//! Contexts (PS3.8 9.3.3.2): Verification, the Patient and Study Root Query/Retrieve models
//! (C-GET and C-MOVE only with that permission, else "abstract syntax not supported", 3),
//! Storage Commitment Push, Modality Worklist FIND and Modality Performed Procedure Step
//! (answered by the host as rare services), and every other abstract syntax as a storage
//! SOP class, standard or private, in any transfer syntax the peer proposes (kept byte for
//! byte), except the services duckpacs does not provide (other study management, print,
//! UPS), refused with 3. Role
//! selection (PS3.7 D.3.3.4) is granted as proposed, so a C-GET requestor can take its
//! sub-operations. Echo, find, store and commitment without permission are refused per
//! request with 0x0124 (PS3.7 C.5).

use std::sync::Arc;
use std::time::Instant;

use super::find::FindScp;
use super::rare::RareScp;
use super::retrieve::{GetScp, MoveScp};
use super::store::StoreScp;
use super::{Context, Ending, Host, Peer, Permissions, Refusal, Tally};
use crate::archive::Writer;
use crate::net::assoc::acceptor::{Acceptance, ContextDecision, TransferSyntaxes};
use crate::net::association::{Association, Timeouts};
use crate::net::dimse::{Command, CommandField, Status};
use crate::net::error::Result;
use crate::net::pdu::{ContextResult, Rejection, RoleSelection};
use crate::net::service::{Accepted, AssociationRequest, Policy, Router, Service};
use crate::parse;
use crate::store::Store;

const VERIFICATION: &str = "1.2.840.10008.1.1";
const COMMITMENT: &str = "1.2.840.10008.1.20.1";
/// Modality Worklist Information Model - FIND (PS3.4 K.6.1.2.2).
pub const WORKLIST_FIND: &str = "1.2.840.10008.5.1.4.31";
/// Modality Performed Procedure Step SOP Class (PS3.4 F.7.3).
const MPPS: &str = "1.2.840.10008.3.1.2.3.3";
const QR_FIND: [&str; 2] = ["1.2.840.10008.5.1.4.1.2.1.1", "1.2.840.10008.5.1.4.1.2.2.1"];
const QR_MOVE: [&str; 2] = ["1.2.840.10008.5.1.4.1.2.1.2", "1.2.840.10008.5.1.4.1.2.2.2"];
const QR_GET: [&str; 2] = ["1.2.840.10008.5.1.4.1.2.1.3", "1.2.840.10008.5.1.4.1.2.2.3"];
/// Standard services that are not storage and that duckpacs does not provide.
const NOT_PROVIDED: [&str; 5] = [
    "1.2.840.10008.3.1.2.3.", // study management other than MPPS (checked first)
    "1.2.840.10008.5.1.1.",   // Print Management
    "1.2.840.10008.5.1.4.34.", // Unified Procedure Step
    "1.2.840.10008.5.1.4.1.2.4", // Composite Instance Root Retrieve
    "1.2.840.10008.5.1.4.1.2.5", // Composite Instance Retrieve Without Bulk Data
];
const UNCOMPRESSED: [&str; 3] = [
    parse::EXPLICIT_VR_LE,
    parse::IMPLICIT_VR_LE,
    parse::EXPLICIT_VR_BE,
];

fn decide(abstract_syntax: &str, p: &Permissions) -> ContextDecision {
    let service = || ContextDecision::Accept(TransferSyntaxes::new(&UNCOMPRESSED, false));
    let refuse = ContextDecision::Refuse(ContextResult::AbstractSyntaxNotSupported);
    if [VERIFICATION, COMMITMENT, WORKLIST_FIND, MPPS].contains(&abstract_syntax) {
        return service();
    }
    if QR_FIND.contains(&abstract_syntax) {
        return service();
    }
    if QR_GET.contains(&abstract_syntax) {
        return if p.get { service() } else { refuse };
    }
    if QR_MOVE.contains(&abstract_syntax) {
        return if p.move_ { service() } else { refuse };
    }
    if NOT_PROVIDED.iter().any(|n| abstract_syntax.starts_with(n)) {
        return refuse;
    }
    // A storage SOP class, standard or private: any transfer syntax, stored as received.
    ContextDecision::Accept(TransferSyntaxes::new(&[], true))
}

/// C-ECHO with the echo permission (PS3.4 A.4).
struct Echo(Arc<Context>);

impl Service for Echo {
    fn handle(&mut self, assoc: &mut Association, context_id: u8, command: Command) -> Result<()> {
        if command.has_dataset {
            assoc.skip_dataset()?;
        }
        if !self.0.allows(self.0.permissions.echo, "C-ECHO") {
            return assoc.send(context_id, &command.response(Status::NOT_AUTHORIZED), None);
        }
        log::info!("C-ECHO status=success {}", self.0.peer.describe());
        assoc.send(context_id, &command.response(Status::SUCCESS), None)
    }
}

/// C-FIND by information model: the Query/Retrieve models are the index's (Rust end to
/// end), the Modality Worklist model is the host's.
struct Finds {
    archive: FindScp,
    worklist: RareScp,
}

impl Service for Finds {
    fn handle(&mut self, assoc: &mut Association, context_id: u8, command: Command) -> Result<()> {
        if command.affected_sop_class_uid.as_deref() == Some(WORKLIST_FIND) {
            self.worklist.handle(assoc, context_id, command)
        } else {
            self.archive.handle(assoc, context_id, command)
        }
    }
}

/// The services of one association, and its closing log line.
struct Served {
    router: Router,
    _ending: Ending,
}

impl Service for Served {
    fn handle(&mut self, assoc: &mut Association, context_id: u8, command: Command) -> Result<()> {
        self.router.handle(assoc, context_id, command)
    }
}

/// The archive's [`Policy`] (see the module docs).
pub struct ArchivePolicy {
    pub host: Arc<dyn Host>,
    pub writer: Arc<Writer>,
    pub store: Arc<Store>,
    pub our_ae: String,
    /// Timers of the associations C-MOVE opens to its destinations.
    pub timeouts: Timeouts,
}

fn rejection(r: Refusal) -> (Rejection, &'static str) {
    match r {
        Refusal::CalledAeNotRecognized => (
            Rejection::called_ae_not_recognized(),
            "called AE title not recognised",
        ),
        Refusal::CallingAeNotRecognized => (
            Rejection::calling_ae_not_recognized(),
            "calling AE title not recognised",
        ),
        Refusal::NoReason => (Rejection::no_reason(), "no reason given"),
    }
}

impl Policy for ArchivePolicy {
    fn decide(&self, request: &AssociationRequest<'_>) -> std::result::Result<Accepted, Rejection> {
        let peer = Peer {
            calling_ae: request.calling_ae().to_string(),
            called_ae: request.called_ae().to_string(),
            addr: request.peer_addr,
            tls: request.tls.cloned(),
        };
        let permissions = match self.host.admit(&peer) {
            Ok(p) => p,
            Err(r) => {
                let (rejection, why) = rejection(r);
                log::warn!("association rejected reason=\"{why}\" {}", peer.describe());
                return Err(rejection);
            }
        };
        let mut acceptance =
            Acceptance::by_abstract_syntax(request.contexts(), |a| decide(a, &permissions));
        acceptance.roles = request
            .roles()
            .iter()
            .map(|r| RoleSelection {
                sop_class_uid: r.sop_class_uid.clone(),
                scu: r.scu,
                scp: r.scp,
            })
            .collect();
        log::info!("association accepted {}", peer.describe());
        let tally = Arc::new(Tally::default());
        let ctx = Arc::new(Context {
            host: self.host.clone(),
            peer: peer.clone(),
            permissions,
            tally: tally.clone(),
            our_ae: self.our_ae.clone(),
        });
        let router = Router::new()
            .route(CommandField::C_ECHO_RQ, Echo(ctx.clone()))
            .route(
                CommandField::C_STORE_RQ,
                StoreScp {
                    ctx: ctx.clone(),
                    writer: self.writer.clone(),
                },
            )
            .route(
                CommandField::C_FIND_RQ,
                Finds {
                    archive: FindScp { ctx: ctx.clone() },
                    worklist: RareScp { ctx: ctx.clone() },
                },
            )
            .route(
                CommandField::C_GET_RQ,
                GetScp {
                    ctx: ctx.clone(),
                    store: self.store.clone(),
                },
            )
            .route(
                CommandField::C_MOVE_RQ,
                MoveScp {
                    ctx: ctx.clone(),
                    store: self.store.clone(),
                    timeouts: self.timeouts,
                },
            )
            .route(CommandField::N_CREATE_RQ, RareScp { ctx: ctx.clone() })
            .route(CommandField::N_SET_RQ, RareScp { ctx: ctx.clone() })
            .route(CommandField::N_ACTION_RQ, RareScp { ctx });
        let service = Served {
            router,
            _ending: Ending {
                peer,
                tally,
                started: Instant::now(),
            },
        };
        Ok(Accepted {
            acceptance,
            service: Box::new(service),
        })
    }
}
