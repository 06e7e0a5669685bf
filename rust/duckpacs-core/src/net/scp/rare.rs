//! The rare services, answered by the host: N-ACTION (Storage Commitment Push Model, PS3.4
//! J), with its N-EVENT-REPORT sent on the same association while the requester keeps it
//! open, else handed back to the host to deliver on a new one (J.3.3); N-CREATE and N-SET
//! (Modality Performed Procedure Step, PS3.4 F.7); C-FIND on the Modality Worklist model
//! (PS3.4 K), whose matches the host returns encoded and which are sent here as pending
//! responses, with C-CANCEL looked for between them (PS3.7 9.3.2.3).

use std::sync::Arc;

use super::find::cancelled;
use super::{Context, Tally};
use crate::net::association::Association;
use crate::net::dimse::sink::LimitedVec;
use crate::net::dimse::{Command, CommandField, Status};
use crate::net::error::{Error, Result};

/// Largest action information accepted (a commitment request lists UIDs: a few MB at most).
const MAX_INFORMATION: usize = 16 << 20;

pub struct RareScp {
    pub ctx: Arc<Context>,
}

impl crate::net::Service for RareScp {
    fn handle(&mut self, assoc: &mut Association, context_id: u8, command: Command) -> Result<()> {
        let mut info = LimitedVec::new(MAX_INFORMATION);
        if command.has_dataset {
            match assoc.receive_dataset(&mut info) {
                Ok(()) => {}
                Err(Error::Sink(e)) => {
                    let rsp = command
                        .response(Status::OUT_OF_RESOURCES)
                        .with_error_comment(&e.to_string());
                    return assoc.send(context_id, &rsp, None);
                }
                Err(e) => return Err(e),
            }
        }
        // A worklist query is a query; N-ACTION, N-CREATE and N-SET report what a modality
        // stored or did, so they go with the store permission.
        let permitted = if command.field == CommandField::C_FIND_RQ {
            self.ctx.permissions.find
        } else {
            self.ctx.permissions.store
        };
        if !self.ctx.allows(permitted, &command.field.to_string()) {
            return assoc.send(context_id, &command.response(Status::NOT_AUTHORIZED), None);
        }
        let ts = assoc
            .context(context_id)
            .map(|c| c.transfer_syntax.clone())
            .unwrap_or_default();
        let reply = self
            .ctx
            .host
            .rare(&self.ctx.peer, &command, &info.data, &ts);
        if command.field == CommandField::C_FIND_RQ {
            Tally::add(&self.ctx.tally.finds, 1);
        }
        let mut pending = command.response(Status::PENDING);
        pending.has_dataset = true;
        for answer in &reply.pending {
            if cancelled(assoc, command.message_id)? {
                return assoc.send(context_id, &command.response(Status::CANCEL), None);
            }
            assoc.send_bytes(context_id, &pending, answer)?;
        }
        let mut rsp = command.response(Status(reply.status));
        if let Some(comment) = &reply.comment {
            rsp = rsp.with_error_comment(comment);
        }
        if let Some(uid) = &reply.instance_uid {
            rsp.affected_sop_instance_uid = Some(uid.clone());
        }
        match &reply.dataset {
            Some(d) => {
                rsp.has_dataset = true;
                assoc.send_bytes(context_id, &rsp, d)?;
            }
            None => assoc.send(context_id, &rsp, None)?,
        }
        let Some((event_type, report)) = reply.report else {
            return Ok(());
        };
        let class = command.requested_sop_class_uid.clone().unwrap_or_default();
        let instance = command
            .requested_sop_instance_uid
            .clone()
            .unwrap_or_default();
        let id = assoc.next_message_id();
        let mut rq = Command::n_event_report_rq(id, &class, &instance, event_type);
        rq.has_dataset = true;
        let mut source = report.as_slice();
        match assoc.send_request(context_id, &rq, Some(&mut source)) {
            Ok(r) if r.status_or_success() == Status::SUCCESS => {
                log::info!(
                    "N-EVENT-REPORT sent on=\"same association\" {}",
                    self.ctx.peer.describe()
                );
                Ok(())
            }
            other => {
                log::info!(
                    "N-EVENT-REPORT not taken on the same association ({}); sending on a new one {}",
                    match &other {
                        Ok(r) => format!("status 0x{:04X}", r.status_or_success().0),
                        Err(e) => e.to_string(),
                    },
                    self.ctx.peer.describe()
                );
                self.ctx
                    .host
                    .report_elsewhere(&self.ctx.peer, &command, event_type, &report);
                // A peer that released or aborted has ended the association: nothing more
                // to do here. Any other failure was answered by the association itself.
                match other {
                    Err(e) if !assoc.is_open() => {
                        log::debug!("association ended during the report: {e}");
                        Ok(())
                    }
                    _ => Ok(()),
                }
            }
        }
    }
}
