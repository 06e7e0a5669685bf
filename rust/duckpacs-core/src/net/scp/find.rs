//! C-FIND SCP (PS3.4 C.4.1): the identifier decoded here, the query run by the host on the
//! index, every pending answer encoded and sent from here. A C-CANCEL-RQ is looked for
//! between answers (PS3.7 9.3.2.3) and ends the answers with 0xFE00.

use std::sync::Arc;

use super::identifier::{self, LEVELS};
use super::{Context, Tally};
use crate::net::association::{Association, Received};
use crate::net::dimse::sink::LimitedVec;
use crate::net::dimse::{Command, CommandField, Status};
use crate::net::error::{Error, Result};

/// Largest identifier accepted (real ones are a few hundred bytes).
pub const MAX_IDENTIFIER: usize = 1 << 20;

/// The Study Root models (PS3.4 C.6.2), which have no PATIENT level.
pub fn is_study_root(sop_class: &str) -> bool {
    sop_class.starts_with("1.2.840.10008.5.1.4.1.2.2.")
}

/// Reads a query/retrieve identifier and decodes it, or answers the request with the
/// failure itself and returns None.
pub fn read_identifier(
    ctx: &Context,
    assoc: &mut Association,
    context_id: u8,
    command: &Command,
    what: &str,
) -> Result<Option<identifier::Query>> {
    let mut sink = LimitedVec::new(MAX_IDENTIFIER);
    match assoc.receive_dataset(&mut sink) {
        Ok(()) => {}
        Err(Error::Sink(e)) => {
            let rsp = command
                .response(Status::CANNOT_UNDERSTAND)
                .with_error_comment(&e.to_string());
            assoc.send(context_id, &rsp, None)?;
            return Ok(None);
        }
        Err(e) => return Err(e),
    }
    let ts = assoc
        .context(context_id)
        .map(|c| c.transfer_syntax.clone())
        .unwrap_or_default();
    let sop_class = command.affected_sop_class_uid.as_deref().unwrap_or("");
    match identifier::decode(&sink.data, &ts, is_study_root(sop_class)) {
        Ok(q) => Ok(Some(q)),
        Err(reason) => {
            log::warn!("{what} refused reason={reason:?} {}", ctx.peer.describe());
            let rsp = command
                .response(Status::IDENTIFIER_MISMATCH)
                .with_error_comment(&reason);
            assoc.send(context_id, &rsp, None)?;
            Ok(None)
        }
    }
}

/// Whether a C-CANCEL-RQ for `message_id` has arrived (read without waiting).
pub fn cancelled(assoc: &mut Association, message_id: Option<u16>) -> Result<bool> {
    if let Some(id) = assoc.take_cancel() {
        return Ok(Some(id) == message_id);
    }
    match assoc.poll()? {
        None => Ok(false),
        Some(Received::Command { command, .. }) if command.field == CommandField::C_CANCEL_RQ => {
            Ok(command.message_id_responded_to == message_id)
        }
        Some(Received::Command { command, .. }) => Err(Error::command(
            0,
            None,
            format!(
                "{} while a request is outstanding (asynchronous window 1)",
                command.field
            ),
        )),
        Some(Received::Released) => Err(Error::Closed {
            during: "a C-FIND, C-GET or C-MOVE",
        }),
    }
}

pub struct FindScp {
    pub ctx: Arc<Context>,
}

impl crate::net::Service for FindScp {
    fn handle(&mut self, assoc: &mut Association, context_id: u8, command: Command) -> Result<()> {
        if !self.ctx.allows(self.ctx.permissions.find, "C-FIND") {
            assoc.skip_dataset()?;
            return assoc.send(context_id, &command.response(Status::NOT_AUTHORIZED), None);
        }
        let Some(query) = read_identifier(&self.ctx, assoc, context_id, &command, "C-FIND")? else {
            return Ok(());
        };
        debug_assert!(LEVELS.contains(&query.level.as_str()));
        let rows = match self.ctx.host.find(&query.level, &query) {
            Ok(rows) => rows,
            Err(reason) => {
                log::warn!(
                    "C-FIND failed reason={reason:?} {}",
                    self.ctx.peer.describe()
                );
                let rsp = command.response(Status(0xC001)).with_error_comment(&reason);
                return assoc.send(context_id, &rsp, None);
            }
        };
        Tally::add(&self.ctx.tally.finds, 1);
        log::info!(
            "C-FIND qr_level={} matches={} {}",
            query.level,
            rows.len(),
            self.ctx.peer.describe()
        );
        let ts = assoc
            .context(context_id)
            .map(|c| c.transfer_syntax.clone())
            .unwrap_or_default();
        let mut pending = command.response(Status::PENDING);
        pending.has_dataset = true;
        for row in &rows {
            if cancelled(assoc, command.message_id)? {
                return assoc.send(context_id, &command.response(Status::CANCEL), None);
            }
            let answer = identifier::encode_answer(&query, row, &ts);
            assoc.send_bytes(context_id, &pending, &answer)?;
        }
        assoc.send(context_id, &command.response(Status::SUCCESS), None)
    }
}
