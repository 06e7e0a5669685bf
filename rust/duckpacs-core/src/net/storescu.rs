//! C-STORE SCU of stored instances (PS3.4 B, PS3.7 9.1.1): what C-GET and C-MOVE
//! sub-operations and `duckpacs send` share.
//!
//! Each instance goes out as stored, on a context accepted with its stored transfer syntax.
//! Only when the peer accepted none for that SOP class is it transcoded (by the caller's
//! transcoder) to an uncompressed syntax the peer did accept; we never send in a syntax that
//! was not negotiated (PS3.8 9.3).

use std::io::{self, Read};

use super::assoc::requestor::Proposal;
use super::association::Association;
use super::dimse::command::priority;
use super::dimse::Command;
use super::scp::Located;
use crate::parse;
use crate::part10;
use crate::store::Store;

/// Uncompressed syntaxes a transcoded instance may go out in, best first (PS3.5 A.1-A.2).
pub const UNCOMPRESSED: [&str; 3] = [
    parse::EXPLICIT_VR_LE,
    parse::IMPLICIT_VR_LE,
    parse::EXPLICIT_VR_BE,
];
/// Presentation context IDs are odd numbers from 1 to 255 (PS3.8 9.3.2.2).
pub const MAX_CONTEXTS: usize = 128;

/// How one C-STORE went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    Completed,
    /// The peer stored it with a warning (0xB000-0xBFFF and the PS3.4 B.2.3 warnings).
    Warning,
    Failed(String),
}

/// A stored Part 10 stream's dataset re-encoded in a transfer syntax.
pub type Transcode<'a> = &'a dyn Fn(&[u8], &str) -> Result<Vec<u8>, String>;

/// Sends one stored instance on `assoc` (see the module docs). `originator`: a C-MOVE's
/// Move Originator AE Title and Message ID (PS3.7 9.1.1.1).
pub fn send_stored(
    store: &Store,
    assoc: &mut Association,
    item: &Located,
    originator: Option<(&str, u16)>,
    transcode: Transcode<'_>,
) -> Sent {
    if item.location.length >= STREAM_OUT {
        if let Some(sent) = send_streamed(store, assoc, item, originator) {
            return sent;
        }
        if let Some(sent) = send_native_switched(store, assoc, item, originator, transcode) {
            return sent;
        }
    }
    let stream = match store.get(item.location) {
        Ok(s) => s,
        Err(e) => return Sent::Failed(format!("cannot read it: {e}")),
    };
    let framing = match part10::split(&stream) {
        Ok(f) => f,
        Err(e) => return Sent::Failed(format!("stored stream: {e}")),
    };
    let negotiated = assoc.negotiated();
    let class = &item.sop_class_uid;
    let (context_id, transcoded) = match negotiated
        .context_for(class, Some(&framing.transfer_syntax))
    {
        Some(c) => (c.id, None),
        None => {
            let Some(c) = UNCOMPRESSED
                .iter()
                .find_map(|ts| negotiated.context_for(class, Some(ts)))
                .cloned()
            else {
                return Sent::Failed(format!(
                    "the peer accepted {class} in neither {} nor an uncompressed syntax",
                    framing.transfer_syntax
                ));
            };
            match transcode(&stream, &c.transfer_syntax) {
                Ok(data) => (c.id, Some(data)),
                Err(e) => {
                    return Sent::Failed(format!("cannot transcode to {}: {e}", c.transfer_syntax))
                }
            }
        }
    };
    let mut dataset: &[u8] = match &transcoded {
        Some(d) => d,
        None => &stream[framing.dataset_offset..],
    };
    request(assoc, context_id, item, originator, &mut dataset)
}

/// Records at least this long in the store are sent as a stream, never read whole.
pub const STREAM_OUT: u64 = 8 << 20;

/// Sends a large instance as stored, a piece at a time, so memory does not grow with it.
/// `None` when the peer needs another syntax: transcoding reads the instance whole.
fn send_streamed(
    store: &Store,
    assoc: &mut Association,
    item: &Located,
    originator: Option<(&str, u16)>,
) -> Option<Sent> {
    let context_id = assoc
        .negotiated()
        .context_for(&item.sop_class_uid, Some(&item.transfer_syntax))?
        .id;
    let mut reader = match store.open_instance(item.location) {
        Ok(r) => r,
        Err(e) => return Some(Sent::Failed(format!("cannot read it: {e}"))),
    };
    let mut head = Vec::new();
    if let Err(e) = (&mut reader).take(1 << 20).read_to_end(&mut head) {
        return Some(Sent::Failed(format!("cannot read it: {e}")));
    }
    let framing = match part10::split(&head) {
        Ok(f) if f.transfer_syntax == item.transfer_syntax => f,
        Ok(_) => return None,
        Err(e) => return Some(Sent::Failed(format!("stored stream: {e}"))),
    };
    let mut source = io::Cursor::new(&head[framing.dataset_offset..]).chain(reader);
    Some(request(assoc, context_id, item, originator, &mut source))
}

/// The little endian syntaxes whose pixel data is the same bytes in either (PS3.5 A.1, A.2).
const NATIVE_LE: [&str; 2] = [parse::EXPLICIT_VR_LE, parse::IMPLICIT_VR_LE];
/// The most read ahead to find the pixel data of a large instance.
const HEAD_MAX: usize = 64 << 20;

/// A large instance with native pixel data, sent in the other little endian syntax (a
/// C-GET requestor such as DCMTK's getscu often takes only Implicit VR Little Endian):
/// only the elements before the pixel data are re-encoded (by `transcode`); the pixel
/// values go out as stored, a piece at a time. `None` when this does not apply (no such
/// context, encapsulated pixels, elements after the pixel data): then the instance is
/// transcoded whole.
fn send_native_switched(
    store: &Store,
    assoc: &mut Association,
    item: &Located,
    originator: Option<(&str, u16)>,
    transcode: Transcode<'_>,
) -> Option<Sent> {
    let stored = item.transfer_syntax.as_str();
    let target = NATIVE_LE
        .iter()
        .find(|ts| **ts != stored && NATIVE_LE.contains(&stored))?;
    let context_id = assoc
        .negotiated()
        .context_for(&item.sop_class_uid, Some(target))?
        .id;
    let mut reader = store.open_instance(item.location).ok()?;
    let total = usize::try_from(reader.size()).ok()?;
    let mut head: Vec<u8> = Vec::new();
    let (at, bits) = loop {
        if let Some(found) = pixel_data_at(&head) {
            break found;
        }
        if head.len() >= HEAD_MAX {
            return None;
        }
        head.extend(reader.next_piece().ok()??);
    };
    let explicit = stored == parse::EXPLICIT_VR_LE;
    let value_at = at + if explicit { 12 } else { 8 };
    let len_at = value_at - 4;
    let len = u32::from_le_bytes(head.get(len_at..value_at)?.try_into().ok()?);
    if len == u32::MAX || value_at + len as usize != total {
        return None; // encapsulated, or elements follow the pixel data
    }
    let mut element = vec![0xE0, 0x7F, 0x10, 0x00];
    if *target == parse::EXPLICIT_VR_LE {
        element.extend_from_slice(if bits > 8 { b"OW" } else { b"OB" });
        element.extend_from_slice(&[0, 0]);
    }
    element.extend_from_slice(&len.to_le_bytes());
    let header = match transcode(&head[..at], target) {
        Ok(h) => h,
        Err(e) => return Some(Sent::Failed(format!("cannot transcode to {target}: {e}"))),
    };
    let rest = head.get(value_at..).unwrap_or(&[]);
    let mut source = io::Cursor::new(header)
        .chain(io::Cursor::new(element))
        .chain(rest)
        .chain(reader);
    Some(request(assoc, context_id, item, originator, &mut source))
}

/// Where the top-level pixel data element starts in `head` (a stored stream's beginning,
/// meta included), and Bits Allocated; `None` until `head` reaches that element's header.
fn pixel_data_at(head: &[u8]) -> Option<(usize, i64)> {
    let opts = parse::ParseOptions {
        transfer_syntax: None,
        stop_at_pixel_data: true,
    };
    let parsed = parse::parse(head, opts).ok()?;
    let at = parsed.stopped_at?;
    (head.len() >= at + 12).then(|| (at, parsed.int(&parsed.dataset, 0x0028_0100).unwrap_or(16)))
}

/// One C-STORE request with `dataset` on `context_id`, and how the peer answered.
fn request(
    assoc: &mut Association,
    context_id: u8,
    item: &Located,
    originator: Option<(&str, u16)>,
    dataset: &mut dyn Read,
) -> Sent {
    let id = assoc.next_message_id();
    let mut rq = Command::c_store_rq(
        id,
        &item.sop_class_uid,
        &item.sop_instance_uid,
        priority::MEDIUM,
    );
    if let Some((ae, msg)) = originator {
        rq.move_originator_ae_title = Some(ae.to_string());
        rq.move_originator_message_id = Some(msg);
    }
    match assoc.send_request(context_id, &rq, Some(dataset)) {
        Ok(rsp) => match rsp.status_or_success().0 {
            0x0000 => Sent::Completed,
            0xB000..=0xBFFF | 0x0001 | 0x0107 | 0x0116 => Sent::Warning,
            s => Sent::Failed(format!("the peer answered 0x{s:04X}")),
        },
        Err(e) => Sent::Failed(e.to_string()),
    }
}

/// Contexts to propose for `items`: one per (SOP class, stored syntax), so the peer can take
/// the bytes as stored, and an uncompressed fallback per class for transcoding (offering
/// Implicit VR Little Endian, the one syntax every SCP must accept, PS3.5 10.1, whenever the
/// stored syntax is another); at most [`MAX_CONTEXTS`].
pub fn proposal(our_ae: &str, peer_ae: &str, items: &[Located]) -> Proposal {
    let mut proposal = Proposal::new(our_ae, peer_ae);
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for item in items {
        let pair = (item.sop_class_uid.as_str(), item.transfer_syntax.as_str());
        if seen.contains(&pair) || seen.len() >= MAX_CONTEXTS {
            continue;
        }
        seen.push(pair);
        proposal = proposal.with_context(pair.0, &[pair.1]);
        let fallback = (pair.0, "");
        if pair.1 != parse::IMPLICIT_VR_LE && !seen.contains(&fallback) && seen.len() < MAX_CONTEXTS
        {
            seen.push(fallback);
            proposal = proposal.with_context(pair.0, &UNCOMPRESSED[..2]);
        }
    }
    proposal
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Location;

    fn item(class: &str, ts: &str) -> Located {
        Located {
            sop_instance_uid: "1.2.3".into(),
            sop_class_uid: class.into(),
            transfer_syntax: ts.into(),
            location: Location {
                pack: 0,
                offset: 0,
                length: 0,
            },
        }
    }

    fn offered(p: &Proposal) -> Vec<(String, Vec<String>)> {
        p.contexts.clone()
    }

    #[test]
    fn explicit_instances_also_offer_implicit_for_default_only_receivers() {
        let p = proposal(
            "US",
            "PEER",
            &[item("1.2.840.10008.5.1.4.1.1.2", parse::EXPLICIT_VR_LE)],
        );
        let contexts = offered(&p);
        assert_eq!(contexts.len(), 2);
        assert!(contexts[1].1.iter().any(|t| t == parse::IMPLICIT_VR_LE));
    }

    #[test]
    fn implicit_instances_need_no_fallback() {
        let p = proposal(
            "US",
            "PEER",
            &[item("1.2.840.10008.5.1.4.1.1.2", parse::IMPLICIT_VR_LE)],
        );
        assert_eq!(offered(&p).len(), 1);
    }
}
