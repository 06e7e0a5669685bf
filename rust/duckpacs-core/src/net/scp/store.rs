//! C-STORE SCP (PS3.4 B.2): the received dataset, framed with the File Meta Information we
//! build from the request (PS3.10 7.1), goes through the archive's one write path. Success
//! is answered only once the instance is durable and findable ([`crate::archive`]).
//!
//! A dataset larger than [`spool::SPOOL_AT`] is received into a spool file and stored from
//! there, so memory does not grow with the instance.
//!
//! Statuses (PS3.4 B.2.3): 0x0000 stored, or the same instance already archived; 0xB006
//! another instance under that UID is kept (`keep-first`); 0xC000 the dataset cannot be
//! parsed; 0xA900 no SOP Instance UID; 0xA700 the store or the index cannot take it now
//! (disk full). Any refusal leaves the association open for the next instance.

use std::sync::Arc;

use super::spool::{self, Received, Spool};
use super::{Context, Tally};
use crate::archive::{Outcome, Rejection, Writer};
use crate::net::association::Association;
use crate::net::dimse::{Command, Status};
use crate::net::error::{Error, Result};
use crate::part10;
use crate::store::Provenance;

pub struct StoreScp {
    pub ctx: Arc<Context>,
    pub writer: Arc<Writer>,
}

impl StoreScp {
    fn status_of(&self, outcome: &Outcome) -> (Status, Option<String>) {
        let t = &self.ctx.tally;
        match outcome {
            Outcome::Stored { .. } | Outcome::Replaced { .. } => {
                Tally::add(&t.stored, 1);
                (Status::SUCCESS, None)
            }
            Outcome::Identical { .. } => {
                Tally::add(&t.duplicates, 1);
                (Status::SUCCESS, None)
            }
            Outcome::KeptFirst { uid, .. } => {
                Tally::add(&t.duplicates, 1);
                log::warn!(
                    "C-STORE conflict uid={uid} rule=keep-first status=0xB006 {}",
                    self.ctx.peer.describe()
                );
                let comment = "another instance with this SOP Instance UID is kept";
                (Status::WARNING_ELEMENTS_DISCARDED, Some(comment.into()))
            }
            Outcome::Rejected { uid, kind, reason } => {
                Tally::add(&t.failed, 1);
                let status = match kind {
                    Rejection::Malformed => Status::CANNOT_UNDERSTAND,
                    Rejection::NoUid => Status::IDENTIFIER_MISMATCH,
                    Rejection::OutOfResources => Status::OUT_OF_RESOURCES,
                };
                log::warn!(
                    "C-STORE rejected uid={uid:?} status=0x{:04X} reason={reason:?} {}",
                    status.0,
                    self.ctx.peer.describe()
                );
                (status, Some(reason.clone()))
            }
        }
    }
}

impl crate::net::Service for StoreScp {
    fn handle(&mut self, assoc: &mut Association, context_id: u8, command: Command) -> Result<()> {
        if !self.ctx.allows(self.ctx.permissions.store, "C-STORE") {
            assoc.skip_dataset()?;
            return assoc.send(context_id, &command.response(Status::NOT_AUTHORIZED), None);
        }
        let Some(pc) = assoc.context(context_id).cloned() else {
            return Err(Error::Usage(format!("no context {context_id}")));
        };
        let sop_class = command.affected_sop_class_uid.clone().unwrap_or_default();
        let sop_instance = command
            .affected_sop_instance_uid
            .clone()
            .unwrap_or_default();
        let meta = part10::build_meta(
            &sop_class,
            &sop_instance,
            &pc.transfer_syntax,
            &self.ctx.peer.calling_ae,
        );
        let dir = spool::dir(self.writer.store_handle().root());
        let mut sink = Spool::new(dir, meta);
        let received = match assoc.receive_dataset(&mut sink) {
            Ok(()) => sink.into_received(),
            Err(Error::Sink(e)) => Err(e),
            Err(e) => return Err(e),
        };
        let received = match received {
            Ok(r) => r,
            Err(e) => {
                let rsp = command
                    .response(Status::OUT_OF_RESOURCES)
                    .with_error_comment(&format!("cannot keep the dataset: {e}"));
                return assoc.send(context_id, &rsp, None);
            }
        };
        Tally::add(&self.ctx.tally.bytes, received.len());
        let prov = Provenance::now(&self.ctx.peer.calling_ae);
        let outcome = match &received {
            Received::Memory(stream) => self.writer.store(stream, None, &prov),
            Received::File(spooled) => self.writer.store_file(&spooled.path, &prov),
        };
        drop(received);
        log::debug!("C-STORE {outcome:?} {}", self.ctx.peer.describe());
        let (status, comment) = self.status_of(&outcome);
        let mut rsp = command.response(status);
        if let Some(c) = comment {
            rsp = rsp.with_error_comment(&c);
        }
        assoc.send(context_id, &rsp, None)
    }
}
