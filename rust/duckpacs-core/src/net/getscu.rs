//! C-GET SCU (PS3.4 C.4.3): ask a peer for a study and take its C-STORE sub-operations on
//! the same association, each handed to a sink (for `duckpacs migrate`: straight into the
//! archive). The requestor proposes one presentation context per (SOP class, transfer
//! syntax) with the SCP role (PS3.7 D.3.3.4), so the peer can send every instance in the
//! syntax it stored it in.

use super::assoc::requestor::Proposal;
use super::association::Timeouts;
use super::client::{connect_with, Reply, TlsDial};
use super::dimse::command::priority;
use super::dimse::sink::LimitedVec;
use super::dimse::{Command, Status};
use super::error::Result;
use super::scp::identifier::{encode_answer, Query, RowValue};
use crate::parse;

/// The Study Root Query/Retrieve Information Model - GET (PS3.4 C.6.2).
pub const STUDY_ROOT_GET: &str = "1.2.840.10008.5.1.4.1.2.2.3";
/// A sub-operation's dataset larger than this is refused with 0xA700 (bounded memory).
pub const MAX_INSTANCE: usize = 1 << 30;

/// What one C-GET brought.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Got {
    /// Whether the peer accepted the C-GET context at all.
    pub accepted: bool,
    /// The final response's status (None: the association ended first).
    pub status: Option<u16>,
    pub completed: u16,
    pub failed: u16,
    pub warning: u16,
    /// Instances handed to the sink and kept by it.
    pub received: usize,
    /// Why the sink refused the ones it refused.
    pub errors: Vec<String>,
    /// The association ended before the final response: why.
    pub ended: Option<String>,
}

/// One received instance: SOP Class UID, SOP Instance UID, transfer syntax, dataset bytes.
pub type Incoming<'a> = (&'a str, &'a str, &'a str, Vec<u8>);

/// C-GET of `study_uid` from the peer at `addr`; `offers` are the (SOP class, transfer
/// syntax) pairs to propose for the sub-operations; `sink` keeps one instance and returns
/// the C-STORE status to answer with (an `Err` answers 0xA700 and is noted). With `tls`
/// the association runs over DICOM TLS.
#[allow(clippy::too_many_arguments)]
pub fn get_study(
    addr: (&str, u16),
    our_ae: &str,
    peer_ae: &str,
    study_uid: &str,
    offers: &[(String, String)],
    timeouts: Timeouts,
    tls: Option<&TlsDial>,
    sink: &mut dyn FnMut(Incoming<'_>) -> std::result::Result<u16, String>,
) -> Result<Got> {
    let mut proposal = Proposal::new(our_ae, peer_ae).with_context(
        STUDY_ROOT_GET,
        &[parse::EXPLICIT_VR_LE, parse::IMPLICIT_VR_LE],
    );
    let mut classes: Vec<&str> = Vec::new();
    for (class, ts) in offers.iter().take(127) {
        proposal = proposal.with_context(class, &[ts.as_str()]);
        if !classes.contains(&class.as_str()) {
            classes.push(class);
        }
    }
    for class in classes {
        proposal = proposal.with_role(class, true, true);
    }
    let mut assoc = connect_with(addr, &proposal, timeouts, tls)?;
    let mut got = Got::default();
    let Some(ctx) = assoc
        .negotiated()
        .context_for(STUDY_ROOT_GET, None)
        .cloned()
    else {
        let _ = assoc.release();
        return Ok(got);
    };
    got.accepted = true;
    let query = Query {
        level: "STUDY".into(),
        return_keys: vec!["StudyInstanceUID".into()],
        ..Query::default()
    };
    let row = vec![(
        "StudyInstanceUID".to_string(),
        RowValue::Text(study_uid.to_string()),
    )];
    let identifier = encode_answer(&query, &row, &ctx.transfer_syntax);
    let id = assoc.next_message_id();
    assoc.send_bytes(
        ctx.id,
        &Command::c_get_rq(id, STUDY_ROOT_GET, priority::MEDIUM),
        &identifier,
    )?;
    loop {
        let reply = match assoc.next_reply(id) {
            Ok(r) => r,
            Err(e) => {
                got.ended = Some(e.to_string());
                return Ok(got);
            }
        };
        match reply {
            Reply::Request {
                context_id,
                command,
            } => {
                let status = receive_one(&mut assoc, context_id, &command, &mut got, sink)?;
                let rsp = command.response(Status(status));
                assoc.send(context_id, &rsp, None)?;
            }
            Reply::Response(rsp) => {
                if rsp.has_dataset {
                    assoc.skip_dataset()?;
                }
                let status = rsp.status_or_success();
                if status == Status::PENDING || status == Status::PENDING_OPTIONAL_KEYS {
                    continue;
                }
                got.status = Some(status.0);
                got.completed = rsp.completed.unwrap_or(0);
                got.failed = rsp.failed.unwrap_or(0);
                got.warning = rsp.warning.unwrap_or(0);
                break;
            }
        }
    }
    if assoc.is_open() {
        let _ = assoc.release();
    }
    Ok(got)
}

/// Receives one C-STORE sub-operation and hands it to the sink; the status to answer.
fn receive_one(
    assoc: &mut super::association::Association,
    context_id: u8,
    command: &Command,
    got: &mut Got,
    sink: &mut dyn FnMut(Incoming<'_>) -> std::result::Result<u16, String>,
) -> Result<u16> {
    let mut data = LimitedVec::new(MAX_INSTANCE);
    match assoc.receive_dataset(&mut data) {
        Ok(()) => {}
        Err(super::error::Error::Sink(e)) => {
            got.errors.push(e.to_string());
            return Ok(Status::OUT_OF_RESOURCES.0);
        }
        Err(e) => return Err(e),
    }
    let ts = assoc
        .context(context_id)
        .map(|c| c.transfer_syntax.clone())
        .unwrap_or_default();
    let class = command.affected_sop_class_uid.as_deref().unwrap_or("");
    let uid = command.affected_sop_instance_uid.as_deref().unwrap_or("");
    match sink((class, uid, &ts, data.data)) {
        Ok(status) => {
            if status == 0 || (0xB000..=0xBFFF).contains(&status) {
                got.received += 1;
            }
            Ok(status)
        }
        Err(e) => {
            got.errors.push(format!("{uid}: {e}"));
            Ok(Status::OUT_OF_RESOURCES.0)
        }
    }
}
