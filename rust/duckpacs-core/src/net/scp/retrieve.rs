//! C-GET SCP (PS3.4 C.4.3) and C-MOVE SCP (C.4.2): C-STORE sub-operations read from the
//! store and sent by our C-STORE SCU, on the same association (C-GET) or on a new one to the
//! configured destination (C-MOVE).
//!
//! Each instance goes out as stored, on a context accepted with its stored transfer syntax.
//! Only when the peer accepted none for that SOP class does the host transcode it to an
//! uncompressed syntax the peer did accept; when neither fits, the sub-operation fails and
//! its UID is listed in the Failed SOP Instance UID List (0008,0058). A pending response
//! follows each sub-operation; a C-CANCEL-RQ stops them with 0xFE00 (PS3.7 9.3.3.3).
//! Final status: Success when every sub-operation succeeded, 0xB000 when some failed or
//! warned, 0xA702 when all failed.

use std::sync::Arc;

use super::find::{cancelled, read_identifier};
use super::{Context, Located, Tally};
use crate::net::association::{Association, Timeouts};
use crate::net::client::connect_with;
use crate::net::dimse::command::SubOperations;
use crate::net::dimse::{Command, Status};
use crate::net::error::Result;
use crate::net::storescu::{self, Sent};
use crate::parse::{reader::Syntax, Vr};
use crate::store::Store;

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    completed: u16,
    failed: u16,
    warning: u16,
    failed_uids: Vec<String>,
}

impl Counts {
    fn done(&self) -> usize {
        usize::from(self.completed) + usize::from(self.failed) + usize::from(self.warning)
    }

    fn sub_operations(&self, with_remaining: bool) -> SubOperations {
        SubOperations {
            remaining: with_remaining
                .then(|| u16::try_from(self.total - self.done()).unwrap_or(u16::MAX)),
            completed: self.completed,
            failed: self.failed,
            warning: self.warning,
        }
    }

    fn final_status(&self) -> Status {
        if self.failed == 0 && self.warning == 0 {
            Status::SUCCESS
        } else if self.completed == 0 && self.warning == 0 {
            Status::OUT_OF_RESOURCES_SUB_OPERATIONS
        } else {
            Status::WARNING_SUB_OPERATIONS_FAILED
        }
    }

    /// The Failed SOP Instance UID List (0008,0058) as a dataset in `transfer_syntax`.
    fn failed_list(&self, transfer_syntax: &str) -> Option<Vec<u8>> {
        if self.failed_uids.is_empty() {
            return None;
        }
        let mut value = self.failed_uids.join("\\").into_bytes();
        if value.len() % 2 == 1 {
            value.push(0);
        }
        let syntax = super::identifier::syntax_of(transfer_syntax);
        let mut out = Vec::with_capacity(value.len() + 12);
        let (g, e, len) = (0x0008u16, 0x0058u16, value.len() as u32);
        let be = syntax == Syntax::EXPLICIT_BE;
        let w16 = |v: u16| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        out.extend(w16(g));
        out.extend(w16(e));
        if syntax.explicit {
            out.extend(Vr::UI.as_str().as_bytes());
            out.extend(w16(len as u16));
        } else {
            out.extend(len.to_le_bytes());
        }
        out.extend(value);
        Some(out)
    }
}

/// Where the sub-operations go and how they are labelled.
struct Target<'a> {
    assoc: &'a mut Association,
    /// C-MOVE: Move Originator AE Title and Message ID (PS3.7 9.1.1.1).
    originator: Option<(String, u16)>,
}

fn send_one(ctx: &Context, store: &Store, target: &mut Target<'_>, item: &Located) -> Sent {
    let originator = target
        .originator
        .as_ref()
        .map(|(ae, id)| (ae.as_str(), *id));
    let transcode = |stream: &[u8], ts: &str| ctx.host.transcode(stream, ts);
    let sent = storescu::send_stored(store, target.assoc, item, originator, &transcode);
    match &sent {
        Sent::Failed(why) => log::warn!(
            "sub-operation failed uid={} reason={why:?} {}",
            item.sop_instance_uid,
            ctx.peer.describe()
        ),
        _ => Tally::add(&ctx.tally.sent, 1),
    }
    sent
}

/// The sub-operations of one C-GET or C-MOVE, with pending responses on `requester`.
/// `dest` None: the sub-operations go to the requester itself (C-GET).
fn run(
    ctx: &Context,
    store: &Store,
    requester: &mut Association,
    context_id: u8,
    command: &Command,
    items: &[Located],
    mut dest: Option<Target<'_>>,
) -> Result<()> {
    let mut counts = Counts {
        total: items.len(),
        ..Counts::default()
    };
    let ts = requester
        .context(context_id)
        .map(|c| c.transfer_syntax.clone())
        .unwrap_or_default();
    for (n, item) in items.iter().enumerate() {
        if cancelled(requester, command.message_id)? {
            counts
                .failed_uids
                .extend(items[n..].iter().map(|i| i.sop_instance_uid.clone()));
            let rsp = command
                .response(Status::CANCEL)
                .with_sub_operations(counts.sub_operations(true));
            return send_final(requester, context_id, rsp, counts.failed_list(&ts));
        }
        let sent = match dest.as_mut() {
            Some(target) => send_one(ctx, store, target, item),
            None => {
                let mut own = Target {
                    assoc: requester,
                    originator: None,
                };
                send_one(ctx, store, &mut own, item)
            }
        };
        match sent {
            Sent::Completed => counts.completed += 1,
            Sent::Warning => counts.warning += 1,
            Sent::Failed(_) => {
                counts.failed += 1;
                counts.failed_uids.push(item.sop_instance_uid.clone());
            }
        }
        if !requester.is_open() {
            return Ok(()); // the requester went away mid-retrieve: nobody to answer
        }
        if n + 1 < items.len() {
            let rsp = command
                .response(Status::PENDING)
                .with_sub_operations(counts.sub_operations(true));
            requester.send(context_id, &rsp, None)?;
        }
    }
    let rsp = command
        .response(counts.final_status())
        .with_sub_operations(counts.sub_operations(false));
    send_final(requester, context_id, rsp, counts.failed_list(&ts))
}

fn send_final(
    assoc: &mut Association,
    context_id: u8,
    mut rsp: Command,
    failed: Option<Vec<u8>>,
) -> Result<()> {
    match failed {
        Some(list) => {
            rsp.has_dataset = true;
            assoc.send_bytes(context_id, &rsp, &list)
        }
        None => assoc.send(context_id, &rsp, None),
    }
}

/// Reads the identifier and asks the host where the instances are; answers failures itself.
fn locate(
    ctx: &Context,
    assoc: &mut Association,
    context_id: u8,
    command: &Command,
    what: &str,
) -> Result<Option<Vec<Located>>> {
    let Some(query) = read_identifier(ctx, assoc, context_id, command, what)? else {
        return Ok(None);
    };
    match ctx.host.locate(&query.level, &query) {
        Ok(items) if items.len() > usize::from(u16::MAX) => {
            // Sub-operation counts are US (PS3.7 C.4.2.1.6).
            let rsp = command.response(Status::OUT_OF_RESOURCES_MATCHES);
            assoc.send(context_id, &rsp, None)?;
            Ok(None)
        }
        Ok(items) => {
            log::info!(
                "{what} qr_level={} instances={} {}",
                query.level,
                items.len(),
                ctx.peer.describe()
            );
            Ok(Some(items))
        }
        Err(reason) => {
            log::warn!("{what} failed reason={reason:?} {}", ctx.peer.describe());
            let rsp = command.response(Status(0xC001)).with_error_comment(&reason);
            assoc.send(context_id, &rsp, None)?;
            Ok(None)
        }
    }
}

pub struct GetScp {
    pub ctx: Arc<Context>,
    pub store: Arc<Store>,
}

impl crate::net::Service for GetScp {
    fn handle(&mut self, assoc: &mut Association, context_id: u8, command: Command) -> Result<()> {
        if !self.ctx.allows(self.ctx.permissions.get, "C-GET") {
            assoc.skip_dataset()?;
            return assoc.send(context_id, &command.response(Status::NOT_AUTHORIZED), None);
        }
        let Some(items) = locate(&self.ctx, assoc, context_id, &command, "C-GET")? else {
            return Ok(());
        };
        run(
            &self.ctx,
            &self.store,
            assoc,
            context_id,
            &command,
            &items,
            None,
        )
    }
}

pub struct MoveScp {
    pub ctx: Arc<Context>,
    pub store: Arc<Store>,
    pub timeouts: Timeouts,
}

impl crate::net::Service for MoveScp {
    fn handle(&mut self, assoc: &mut Association, context_id: u8, command: Command) -> Result<()> {
        if !self.ctx.allows(self.ctx.permissions.move_, "C-MOVE") {
            assoc.skip_dataset()?;
            return assoc.send(context_id, &command.response(Status::NOT_AUTHORIZED), None);
        }
        let destination = command.move_destination.clone().unwrap_or_default();
        let destination = destination.trim().to_string();
        let Some(target) = self.ctx.host.destination(&destination) else {
            assoc.skip_dataset()?;
            log::warn!(
                "C-MOVE refused reason=\"unknown destination {destination}\" {}",
                self.ctx.peer.describe()
            );
            let rsp = command.response(Status::MOVE_DESTINATION_UNKNOWN);
            return assoc.send(context_id, &rsp, None);
        };
        let Some(items) = locate(&self.ctx, assoc, context_id, &command, "C-MOVE")? else {
            return Ok(());
        };
        if items.is_empty() {
            return assoc.send(context_id, &command.response(Status::SUCCESS), None);
        }
        let proposal = storescu::proposal(&self.ctx.our_ae, &destination, &items);
        let (host, port) = (target.host.as_str(), target.port);
        let dialed = connect_with((host, port), &proposal, self.timeouts, target.tls.as_ref());
        let mut dest = match dialed {
            Ok(a) => a,
            Err(e) => {
                log::warn!(
                    "C-MOVE cannot reach {destination} at {host}:{port}: {e} {}",
                    self.ctx.peer.describe()
                );
                let counts = Counts {
                    total: items.len(),
                    failed: u16::try_from(items.len()).unwrap_or(u16::MAX),
                    failed_uids: items.iter().map(|i| i.sop_instance_uid.clone()).collect(),
                    ..Counts::default()
                };
                let ts = assoc
                    .context(context_id)
                    .map(|c| c.transfer_syntax.clone())
                    .unwrap_or_default();
                let rsp = command
                    .response(Status::OUT_OF_RESOURCES_SUB_OPERATIONS)
                    .with_sub_operations(counts.sub_operations(false));
                return send_final(assoc, context_id, rsp, counts.failed_list(&ts));
            }
        };
        let originator = Some((
            self.ctx.peer.calling_ae.clone(),
            command.message_id.unwrap_or(0),
        ));
        let target = Target {
            assoc: &mut dest,
            originator,
        };
        let result = run(
            &self.ctx,
            &self.store,
            assoc,
            context_id,
            &command,
            &items,
            Some(target),
        );
        if dest.is_open() {
            let _ = dest.release();
        }
        result
    }
}
