//! What the application plugs into the acceptor: a [`Policy`] decided once per association
//! (who may associate, which contexts and roles, and which [`Service`] serves them), and
//! the services that answer DIMSE requests. [`Router`] dispatches by Command Field and
//! answers what no service handles with 0x0211 (unrecognized operation, PS3.7 C.5);
//! [`EchoScp`] is the Verification SCP (PS3.4 A.4).

use std::net::SocketAddr;

use super::assoc::acceptor::Acceptance;
use super::association::Association;
use super::dimse::{Command, CommandField, Status};
use super::error::Result;
use super::pdu::{AssociateRq, ProposedContext, Rejection, RoleSelection};
use super::tls::TlsSession;

/// An incoming association request as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct AssociationRequest<'a> {
    pub rq: &'a AssociateRq,
    pub peer_addr: Option<SocketAddr>,
    /// The TLS session it came over (None on a plain listener).
    pub tls: Option<&'a TlsSession>,
}

impl AssociationRequest<'_> {
    pub fn called_ae(&self) -> &str {
        &self.rq.called_ae
    }
    pub fn calling_ae(&self) -> &str {
        &self.rq.calling_ae
    }
    pub fn contexts(&self) -> &[ProposedContext] {
        &self.rq.contexts
    }
    /// The requestor's role selection proposals (PS3.7 D.3.3.4).
    pub fn roles(&self) -> &[RoleSelection] {
        &self.rq.user.roles
    }
}

/// A positive decision: how to answer the request, and the service for the association.
pub struct Accepted {
    pub acceptance: Acceptance,
    pub service: Box<dyn Service>,
}

/// The application's decision, once per association, after the upper layer's own checks
/// (protocol version, application context) and the server's association limit. Runs on
/// the association's thread, so it may block (the caller of a Python callback does).
pub trait Policy: Send + Sync {
    /// Accept (contexts, roles, the service) or reject with the PS3.8 9.3.4 reason, e.g.
    /// [`Rejection::called_ae_not_recognized`].
    fn decide(&self, request: &AssociationRequest<'_>) -> std::result::Result<Accepted, Rejection>;
}

/// Serves the requests of one association. Created by the [`Policy`] for it, so it carries
/// whatever the decision granted; dropped when the association ends.
pub trait Service: Send {
    /// Handle one request received on `context_id`. When `command.has_dataset`, its
    /// dataset is still on the wire: read it with [`Association::receive_dataset`] (or
    /// [`Association::skip_dataset`]) before answering with [`Association::send`].
    /// An `Err` that [`crate::net::Error::is_recoverable`] lets the association go on;
    /// any other ends it (aborted if still open).
    fn handle(&mut self, assoc: &mut Association, context_id: u8, command: Command) -> Result<()>;
}

/// Dispatch by Command Field to one service per request type.
#[derive(Default)]
pub struct Router {
    routes: Vec<(CommandField, Box<dyn Service>)>,
}

impl Router {
    pub fn new() -> Self {
        Router::default()
    }

    /// Serve requests with Command Field `field` (e.g. [`CommandField::C_STORE_RQ`]) by
    /// `service`; a later route for the same field replaces an earlier one.
    pub fn route(mut self, field: CommandField, service: impl Service + 'static) -> Self {
        self.routes.retain(|(f, _)| *f != field);
        self.routes.push((field, Box::new(service)));
        self
    }
}

impl Service for Router {
    fn handle(&mut self, assoc: &mut Association, context_id: u8, command: Command) -> Result<()> {
        if let Some((_, service)) = self.routes.iter_mut().find(|(f, _)| *f == command.field) {
            return service.handle(assoc, context_id, command);
        }
        if command.has_dataset {
            assoc.skip_dataset()?;
        }
        if command.field.is_response() || command.field == CommandField::C_CANCEL_RQ {
            // A C-CANCEL with nothing to cancel, or a response to nothing: PS3.7 9.3.2.3
            // and 9.1.1 give it no answer.
            log::debug!("ignored {} with no request outstanding", command.field);
            return Ok(());
        }
        log::info!(
            "{} on context {context_id} from {}: unrecognized operation (0x0211)",
            command.field,
            assoc.negotiated().peer_ae()
        );
        let rsp = command.response(Status::UNRECOGNIZED_OPERATION);
        assoc.send(context_id, &rsp, None)
    }
}

/// Verification SCP (PS3.4 A.4, PS3.7 9.1.5): answers C-ECHO-RQ with Success.
#[derive(Debug, Default, Clone, Copy)]
pub struct EchoScp;

impl Service for EchoScp {
    fn handle(&mut self, assoc: &mut Association, context_id: u8, command: Command) -> Result<()> {
        if command.has_dataset {
            assoc.skip_dataset()?;
        }
        assoc.send(context_id, &command.response(Status::SUCCESS), None)
    }
}
