//! Part 10 framing: the File Meta Information group (PS3.10 7.1), built and split without
//! decoding the dataset. The one owner of group 0002 in duckpacs.
//!
//! A DIMSE C-STORE carries a bare dataset; the archive stores it as a Part 10 stream: a
//! 128-byte preamble, `DICM`, group 0002 in Explicit VR Little Endian, then the dataset
//! exactly as received. Going out (C-GET, C-MOVE, `duckpacs send`) the meta is split off
//! again.

use crate::{Error, Result};

/// Our Implementation Class UID (PS3.7 D.3.3.2), a UUID-derived UID under 2.25 (PS3.5 B.2),
/// in meta groups we write and in association negotiation (net::assoc).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.87936788337233048782838656642852649147";
/// Our Implementation Version Name (PS3.7 D.3.3.2, at most 16 characters), in meta groups
/// we write and in association negotiation.
pub const IMPLEMENTATION_VERSION_NAME: &str = concat!("DUCKPACS_", env!("CARGO_PKG_VERSION"));

const PREAMBLE_LEN: usize = 128;

/// Where the dataset starts in a Part 10 stream, and what the meta says about it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Framing {
    pub dataset_offset: usize,
    pub transfer_syntax: String,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
}

fn push_element(out: &mut Vec<u8>, element: u16, vr: &[u8; 2], value: &[u8]) {
    out.extend_from_slice(&0x0002u16.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(vr);
    if vr == b"OB" {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    } else {
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(value);
}

/// A UI value padded to even length with NUL, or a text value with a space (PS3.5 6.2).
fn padded(text: &str, pad: u8) -> Vec<u8> {
    let mut v = text.as_bytes().to_vec();
    if !v.len().is_multiple_of(2) {
        v.push(pad);
    }
    v
}

/// Preamble, `DICM` and group 0002 for a dataset received over the network: Media Storage
/// SOP Class/Instance UID from the C-STORE request (PS3.7 9.1.1), the transfer syntax of the
/// presentation context it came in, and the calling AE title as Source Application Entity
/// Title (0002,0016) when there is one.
pub fn build_meta(
    sop_class_uid: &str,
    sop_instance_uid: &str,
    transfer_syntax: &str,
    source_ae: &str,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(256);
    push_element(&mut body, 0x0001, b"OB", &[0, 1]);
    push_element(&mut body, 0x0002, b"UI", &padded(sop_class_uid, 0));
    push_element(&mut body, 0x0003, b"UI", &padded(sop_instance_uid, 0));
    push_element(&mut body, 0x0010, b"UI", &padded(transfer_syntax, 0));
    push_element(
        &mut body,
        0x0012,
        b"UI",
        &padded(IMPLEMENTATION_CLASS_UID, 0),
    );
    push_element(
        &mut body,
        0x0013,
        b"SH",
        &padded(IMPLEMENTATION_VERSION_NAME, b' '),
    );
    let ae = source_ae.trim();
    if !ae.is_empty() {
        push_element(&mut body, 0x0016, b"AE", &padded(ae, b' '));
    }
    let mut out = vec![0u8; PREAMBLE_LEN];
    out.extend_from_slice(b"DICM");
    push_element(&mut out, 0x0000, b"UL", &(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

fn uid_text(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .trim_matches(|c: char| c == '\0' || c == ' ')
        .to_string()
}

/// VRs whose explicit-VR header has a reserved field and a 4-byte length (PS3.5 7.1.2).
const LONG_VRS: [&[u8; 2]; 13] = [
    b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV",
];

/// Finds the end of group 0002 in a Part 10 stream (with or without the preamble), walking
/// the meta elements one by one (Explicit VR Little Endian, PS3.10 7.1) rather than trusting
/// (0002,0000), which some writers get wrong. Errors name the byte offset when the stream
/// has no readable meta.
pub fn split(buf: &[u8]) -> Result<Framing> {
    let mut pos = if buf.get(PREAMBLE_LEN..PREAMBLE_LEN + 4) == Some(b"DICM") {
        PREAMBLE_LEN + 4
    } else {
        0
    };
    let mut f = Framing::default();
    while let Some(head) = buf.get(pos..pos + 8) {
        let group = u16::from_le_bytes([head[0], head[1]]);
        if group != 0x0002 {
            break;
        }
        let element = u16::from_le_bytes([head[2], head[3]]);
        let tag = 0x0002_0000 | u32::from(element);
        let long = LONG_VRS.iter().any(|vr| vr[..] == head[4..6]);
        let (length, start) = if long {
            let Some(len) = buf.get(pos + 8..pos + 12) else {
                return Err(Error::parse(pos, Some(tag), "file meta truncated"));
            };
            (
                u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize,
                pos + 12,
            )
        } else {
            (u16::from_le_bytes([head[6], head[7]]) as usize, pos + 8)
        };
        let Some(value) = buf.get(start..start.saturating_add(length)) else {
            return Err(Error::parse(
                pos,
                Some(tag),
                format!(
                    "file meta element runs past the end ({length} bytes declared, {} left)",
                    buf.len().saturating_sub(start)
                ),
            ));
        };
        match element {
            0x0002 => f.sop_class_uid = uid_text(value),
            0x0003 => f.sop_instance_uid = uid_text(value),
            0x0010 => f.transfer_syntax = uid_text(value),
            _ => {}
        }
        pos = start + length;
    }
    if f.transfer_syntax.is_empty() {
        return Err(Error::parse(
            pos,
            Some(0x0002_0010),
            "no Transfer Syntax UID (0002,0010) in the file meta (PS3.10 7.1)",
        ));
    }
    f.dataset_offset = pos;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_meta_splits_back_and_pads_values() {
        let meta = build_meta(
            "1.2.840.10008.5.1.4.1.1.4",
            "1.2.3",
            "1.2.840.10008.1.2",
            "MRI1",
        );
        assert_eq!(&meta[128..132], b"DICM");
        let mut stream = meta.clone();
        stream.extend_from_slice(b"\x08\x00\x18\x00\x06\x00\x00\x001.2.3\x00");
        let f = split(&stream).unwrap();
        assert_eq!(f.dataset_offset, meta.len());
        assert_eq!(f.transfer_syntax, "1.2.840.10008.1.2");
        assert_eq!(f.sop_class_uid, "1.2.840.10008.5.1.4.1.1.4");
        assert_eq!(f.sop_instance_uid, "1.2.3"); // NUL padding trimmed
                                                 // Group length counts every byte after itself (PS3.10 7.1).
        let group_len = u32::from_le_bytes(meta[140..144].try_into().unwrap()) as usize;
        assert_eq!(group_len, meta.len() - 144);
        assert!(meta.len().is_multiple_of(2));
    }

    #[test]
    fn meta_without_preamble_and_missing_meta() {
        let meta = build_meta("1.2", "3.4", "1.2.840.10008.1.2.1", "");
        assert_eq!(
            split(&meta[132..]).unwrap().dataset_offset,
            meta.len() - 132
        );
        let err = split(b"\x08\x00\x16\x00UI\x02\x001\x00").unwrap_err();
        assert!(err.to_string().contains("Transfer Syntax"));
        let err = split(&meta[..meta.len() - 3]).unwrap_err();
        assert!(err.to_string().contains("runs past the end"));
        // Stray bytes after the meta that do not make an element header end the walk.
        let mut body = meta[132..].to_vec();
        body.extend_from_slice(b"\x08\x00\x16\x00");
        assert_eq!(split(&body).unwrap().dataset_offset, meta.len() - 132);
    }
}
