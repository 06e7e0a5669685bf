//! Unit tests of the parser on hand-written byte arrays (commented tag by tag).

use super::*;
use crate::layout::{Framing, PixelKind};

/// Part 10 header: 128-byte preamble, "DICM", and a meta group naming `ts` (explicit VR LE).
fn part10(ts: &str) -> Vec<u8> {
    let mut ts = ts.as_bytes().to_vec();
    if ts.len() % 2 == 1 {
        ts.push(0);
    }
    let mut v = vec![0u8; 128];
    v.extend_from_slice(b"DICM");
    // (0002,0010) UI, 2-byte length, value
    v.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
    v.extend_from_slice(&(ts.len() as u16).to_le_bytes());
    v.extend_from_slice(&ts);
    v
}

/// Explicit VR LE element with a 2-byte length.
fn short(tag: u32, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
    v.extend_from_slice(&((tag & 0xFFFF) as u16).to_le_bytes());
    v.extend_from_slice(vr);
    v.extend_from_slice(&(value.len() as u16).to_le_bytes());
    v.extend_from_slice(value);
    v
}

#[test]
fn part10_native_two_frames() {
    let mut f = part10(EXPLICIT_VR_LE);
    let meta_end = f.len();
    f.extend(short(0x0008_0060, b"CS", b"CT")); // (0008,0060) Modality "CT"
    f.extend(short(0x0028_0002, b"US", &1u16.to_le_bytes())); // Samples per Pixel 1
    f.extend(short(0x0028_0008, b"IS", b"2 ")); // Number of Frames "2 "
    f.extend(short(0x0028_0010, b"US", &2u16.to_le_bytes())); // Rows 2
    f.extend(short(0x0028_0011, b"US", &2u16.to_le_bytes())); // Columns 2
    f.extend(short(0x0028_0100, b"US", &16u16.to_le_bytes())); // Bits Allocated 16
    let px_at = f.len();
    // (7FE0,0010) OW, 2 reserved bytes, 4-byte length 16: two frames of 2x2x2 bytes
    f.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0, 16, 0, 0, 0]);
    f.extend_from_slice(&[7u8; 16]);
    let l = describe(&f, None).unwrap();
    assert_eq!(l.framing, Framing::Part10);
    assert_eq!(l.meta, 0..meta_end);
    assert_eq!(l.modality, "CT");
    let px = l.pixel.unwrap();
    assert_eq!(px.element, px_at..f.len());
    assert_eq!(px.value, px_at + 12..f.len());
    match px.kind {
        PixelKind::Native {
            frames,
            frame_len,
            rows,
            ..
        } => {
            assert_eq!((frames, frame_len, rows), (2, 8, 2));
        }
        k => panic!("unexpected {k:?}"),
    }
}

#[test]
fn bare_implicit_dataset_detected_and_sequence_read() {
    let mut f = Vec::new();
    // (0008,0060) Modality, implicit: tag, 4-byte length 2, "MR"
    f.extend_from_slice(&[0x08, 0x00, 0x60, 0x00, 2, 0, 0, 0, b'M', b'R']);
    // (0008,1115) Referenced Series Sequence, undefined length
    f.extend_from_slice(&[0x08, 0x00, 0x15, 0x11, 0xFF, 0xFF, 0xFF, 0xFF]);
    // Item, undefined length
    f.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    // (0020,000E) Series Instance UID "1.2" + NUL pad
    f.extend_from_slice(&[0x20, 0x00, 0x0E, 0x00, 4, 0, 0, 0, b'1', b'.', b'2', 0]);
    // Item delimitation, sequence delimitation
    f.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
    f.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    let p = parse(&f, ParseOptions::default()).unwrap();
    assert_eq!(p.framing, Framing::BareDataset);
    assert_eq!(p.transfer_syntax, IMPLICIT_VR_LE);
    let sq = p.dataset.get(0x0008_1115).unwrap();
    assert_eq!(sq.vr, Vr::SQ);
    assert_eq!(sq.value.end, f.len());
    let item = &sq.items()[0];
    assert_eq!(p.string(&item.dataset, 0x0020_000E), "1.2");
    assert_eq!(
        p.value(&p.dataset, p.dataset.get(0x0008_0060).unwrap()),
        Value::Strings(vec!["MR".into()])
    );
}

#[test]
fn encapsulated_with_basic_offset_table() {
    let mut f = part10("1.2.840.10008.1.2.4.50");
    f.extend(short(0x0028_0008, b"IS", b"2 ")); // Number of Frames 2
    let px_at = f.len();
    // (7FE0,0010) OB, undefined length
    f.extend_from_slice(&[
        0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
    ]);
    // BOT item, 8 bytes: offsets 0 and 20 (frame 2 starts after 2 fragments of 8+2 bytes)
    f.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 8, 0, 0, 0, 0, 0, 0, 0, 20, 0, 0, 0]);
    for _ in 0..3 {
        // fragment item of 2 bytes
        f.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 2, 0, 0, 0, 0xAB, 0xCD]);
    }
    // sequence delimitation
    f.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    let l = describe(&f, None).unwrap();
    let px = l.pixel.unwrap();
    assert_eq!(px.element, px_at..f.len());
    match px.kind {
        PixelKind::Encapsulated { items, frames } => {
            assert_eq!(items.len(), 4);
            assert_eq!(items[0], px_at + 12..px_at + 28);
            assert_eq!(frames, vec![1..3, 3..4]);
        }
        k => panic!("unexpected {k:?}"),
    }
}

#[test]
fn truncated_value_is_an_error_with_context() {
    let mut f = part10(EXPLICIT_VR_LE);
    // (0010,0010) PN claims 10 bytes, only 3 follow
    f.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, b'P', b'N', 10, 0, b'A', b'B', b'C']);
    match parse(&f, ParseOptions::default()) {
        Err(crate::Error::Parse { offset, tag, .. }) => {
            assert_eq!(offset, f.len() - 11);
            assert_eq!(tag, Some(0x0010_0010));
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let mut f = Vec::new();
    for _ in 0..10_000 {
        // (0008,1115) SQ undefined length in implicit VR, then an item of undefined length
        f.extend_from_slice(&[0x08, 0x00, 0x15, 0x11, 0xFF, 0xFF, 0xFF, 0xFF]);
        f.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    }
    assert!(parse(&f, ParseOptions::default()).is_err());
}
