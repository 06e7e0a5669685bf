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
    // Fewer than 8 stray bytes after the last element are trailing bytes, not an error.
    let mut short_tail = part10(EXPLICIT_VR_LE);
    short_tail.extend(short(0x0008_0060, b"CS", b"CT"));
    short_tail.extend_from_slice(&[1, 2, 3]);
    let p = parse(&short_tail, ParseOptions::default()).unwrap();
    assert_eq!(
        p.trailing_padding,
        Some(short_tail.len() - 3..short_tail.len())
    );

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

/// Explicit VR big endian element with a 2-byte length.
fn short_be(tag: u32, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&((tag >> 16) as u16).to_be_bytes());
    v.extend_from_slice(&((tag & 0xFFFF) as u16).to_be_bytes());
    v.extend_from_slice(vr);
    v.extend_from_slice(&(value.len() as u16).to_be_bytes());
    v.extend_from_slice(value);
    v
}

#[test]
fn extended_offset_table_maps_frames() {
    let mut f = part10("1.2.840.10008.1.2.4.201");
    f.extend(short(0x0028_0008, b"IS", b"2 ")); // Number of Frames 2
                                                // (7FE0,0001) OV Extended Offset Table: 2 x u64 offsets 0 and 10
    f.extend_from_slice(&[0xE0, 0x7F, 0x01, 0x00, b'O', b'V', 0, 0, 16, 0, 0, 0]);
    f.extend_from_slice(&0u64.to_le_bytes());
    f.extend_from_slice(&10u64.to_le_bytes());
    // (7FE0,0010) OB undefined length, empty BOT, two 2-byte fragments, delimiter
    f.extend_from_slice(&[
        0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
    ]);
    f.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
    f.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 2, 0, 0, 0, 1, 2]);
    f.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 2, 0, 0, 0, 3, 4]);
    f.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    let px = describe(&f, None).unwrap().pixel.unwrap();
    match px.kind {
        PixelKind::Encapsulated { items, frames } => {
            assert_eq!(items.len(), 3);
            assert_eq!(frames, vec![1..2, 2..3]);
        }
        k => panic!("unexpected {k:?}"),
    }
}

#[test]
fn fragments_without_tables_one_frame_or_one_per_frame() {
    // Number of Frames absent (1) and three fragments: all in one frame.
    let mut f = part10("1.2.840.10008.1.2.5");
    f.extend_from_slice(&[
        0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
    ]);
    f.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]); // empty BOT
    for _ in 0..3 {
        f.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 2, 0, 0, 0, 0, 0]);
    }
    f.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    match describe(&f, None).unwrap().pixel.unwrap().kind {
        PixelKind::Encapsulated { frames, .. } => assert_eq!(frames, vec![1..4]),
        k => panic!("unexpected {k:?}"),
    }
}

#[test]
fn explicit_big_endian_numbers_and_detection() {
    // Bare dataset, explicit VR big endian: detected by content.
    let mut f = Vec::new();
    f.extend(short_be(0x0008_0060, b"CS", b"MR")); // Modality
    f.extend(short_be(0x0028_0010, b"US", &512u16.to_be_bytes())); // Rows 512
    f.extend(short_be(0x0028_1050, b"DS", b"40\\400 ")); // Window Center, two values
    let p = parse(&f, ParseOptions::default()).unwrap();
    assert_eq!(p.transfer_syntax, EXPLICIT_VR_BE);
    assert_eq!(p.int(&p.dataset, 0x0028_0010), Some(512));
    let wc = p.value(&p.dataset, p.dataset.get(0x0028_1050).unwrap());
    assert_eq!(wc.as_f64s(), vec![40.0, 400.0]);
}

#[test]
fn un_with_undefined_length_holds_implicit_sequence() {
    let mut f = part10(EXPLICIT_VR_LE);
    // (0009,1010) UN undefined length
    f.extend_from_slice(&[
        0x09, 0x00, 0x10, 0x10, b'U', b'N', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
    ]);
    // item of defined length 10 holding (0008,0060) implicit VR "CT"
    f.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 10, 0, 0, 0]);
    f.extend_from_slice(&[0x08, 0x00, 0x60, 0x00, 2, 0, 0, 0, b'C', b'T']);
    // sequence delimitation
    f.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    // (0010,0020) LO Patient ID after it, explicit again
    f.extend(short(0x0010_0020, b"LO", b"ID1 "));
    let p = parse(&f, ParseOptions::default()).unwrap();
    let un = p.dataset.get(0x0009_1010).unwrap();
    assert!(un.is_sequence() && un.is_private());
    assert!(p.dataset.private_creator(0x0009_1010).is_none());
    let item = &un.items()[0].dataset;
    assert_eq!(p.string(item, 0x0008_0060), "CT");
    assert_eq!(p.string(&p.dataset, 0x0010_0020), "ID1");
}

#[test]
fn explicit_un_of_known_tag_uses_dictionary_vr() {
    let mut f = part10(EXPLICIT_VR_LE);
    // (0008,0060) written as UN (long header) holding "MR"
    f.extend_from_slice(&[
        0x08, 0x00, 0x60, 0x00, b'U', b'N', 0, 0, 2, 0, 0, 0, b'M', b'R',
    ]);
    let p = parse(&f, ParseOptions::default()).unwrap();
    let el = p.dataset.get(0x0008_0060).unwrap();
    assert_eq!(el.vr, Vr::CS);
    assert_eq!(p.string(&p.dataset, 0x0008_0060), "MR");
}

#[test]
fn odd_length_group_length_and_trailing_padding() {
    let mut f = Vec::new();
    // Meta without preamble: (0002,0000) UL group length 28, (0002,0010) UI implicit LE
    f.extend(short(0x0002_0000, b"UL", &28u32.to_le_bytes()));
    f.extend(short(0x0002_0010, b"UI", b"1.2.840.10008.1.2\0"));
    let meta_end = f.len();
    // (0008,0000) implicit group length, (0010,0010) with odd length 3 "A^B"
    f.extend_from_slice(&[0x08, 0x00, 0x00, 0x00, 4, 0, 0, 0, 8, 0, 0, 0]);
    f.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, 3, 0, 0, 0, b'A', b'^', b'B']);
    f.extend_from_slice(&[0u8; 13]); // trailing zero padding
    let p = parse(&f, ParseOptions::default()).unwrap();
    assert_eq!(p.framing, Framing::MetaWithoutPreamble);
    assert_eq!(p.meta_range, 0..meta_end);
    assert_eq!(p.dataset.get(0x0008_0000).unwrap().vr, Vr::UL);
    match p.value(&p.dataset, p.dataset.get(0x0010_0010).unwrap()) {
        Value::PersonNames(n) => assert_eq!(n[0].alphabetic, "A^B"),
        v => panic!("unexpected {v:?}"),
    }
    assert_eq!(p.trailing_padding, Some(f.len() - 13..f.len()));
}

#[test]
fn single_bit_pixels_are_one_packed_frame() {
    let mut f = part10(EXPLICIT_VR_LE);
    f.extend(short(0x0028_0008, b"IS", b"3 ")); // 3 frames
    f.extend(short(0x0028_0010, b"US", &3u16.to_le_bytes())); // Rows 3
    f.extend(short(0x0028_0011, b"US", &3u16.to_le_bytes())); // Columns 3
    f.extend(short(0x0028_0100, b"US", &1u16.to_le_bytes())); // Bits Allocated 1
                                                              // 3*3*3 = 27 bits -> 4 bytes, padded to even length 4
    f.extend_from_slice(&[
        0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 4, 0, 0, 0, 1, 2, 3, 4,
    ]);
    match describe(&f, None).unwrap().pixel.unwrap().kind {
        PixelKind::Native {
            frames, frame_len, ..
        } => assert_eq!((frames, frame_len), (1, 4)),
        k => panic!("unexpected {k:?}"),
    }
}

#[test]
fn stop_at_pixel_data_leaves_pixels_unread() {
    let mut f = part10(EXPLICIT_VR_LE);
    f.extend(short(0x0008_0060, b"CS", b"CT"));
    let px_at = f.len();
    // (7FE0,0010) OW claiming 1 MB that is not there: never read when stopping before it
    f.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0, 0, 0, 0x10, 0]);
    let p = parse(
        &f,
        ParseOptions {
            transfer_syntax: None,
            stop_at_pixel_data: true,
        },
    )
    .unwrap();
    assert_eq!(p.stopped_at, Some(px_at));
    assert_eq!(p.dataset.elements.len(), 1);
    assert!(parse(&f, ParseOptions::default()).is_err());
}

#[test]
fn deflated_dataset_offsets_index_the_inflated_buffer() {
    use std::io::Write;
    let mut dataset = short(0x0008_0060, b"CS", b"OT");
    dataset.extend(short(0x0010_0020, b"LO", b"P1"));
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&dataset).unwrap();
    let mut f = part10(DEFLATED_EXPLICIT_VR_LE);
    let meta_end = f.len();
    f.extend(enc.finish().unwrap());
    let p = parse(&f, ParseOptions::default()).unwrap();
    assert!(p.deflated);
    assert_eq!(&p.data()[meta_end..], &dataset[..]);
    let el = p.dataset.get(0x0010_0020).unwrap();
    assert_eq!(el.offset, meta_end + 10);
    let l = layout_of(&p).unwrap();
    assert!(l.deflated);
    assert_eq!(l.patient_id, "P1");
}

#[test]
fn encapsulated_icon_inside_a_sequence() {
    let mut f = part10("1.2.840.10008.1.2.4.50");
    // (0088,0200) Icon Image Sequence, undefined length; item undefined length
    f.extend_from_slice(&[
        0x88, 0x00, 0x00, 0x02, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
    ]);
    f.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    // nested (7FE0,0010) OB undefined: empty BOT, one fragment, delimiter
    f.extend_from_slice(&[
        0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
    ]);
    f.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
    f.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 2, 0, 0, 0, 0xFF, 0xD8]);
    f.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    // item delimitation, sequence delimitation
    f.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
    f.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    let l = describe(&f, None).unwrap();
    assert!(
        l.pixel.is_none(),
        "only top-level pixel data is the instance's"
    );
    let p = parse(&f, ParseOptions::default()).unwrap();
    let icon = &p.dataset.get(0x0088_0200).unwrap().items()[0].dataset;
    assert!(
        matches!(icon.get(0x7FE0_0010).unwrap().content, Content::Fragments(ref v) if v.len() == 2)
    );
}

#[test]
fn private_creator_of_a_private_element() {
    let mut f = Vec::new();
    // implicit VR: (0029,0010) creator "SIEMENS CSA HEADER", (0029,1008) private value "IMAGE NUM 4 "
    f.extend_from_slice(&[0x29, 0x00, 0x10, 0x00, 18, 0, 0, 0]);
    f.extend_from_slice(b"SIEMENS CSA HEADER");
    f.extend_from_slice(&[0x29, 0x00, 0x08, 0x10, 12, 0, 0, 0]);
    f.extend_from_slice(b"IMAGE NUM 4 ");
    let p = parse(&f, ParseOptions::default()).unwrap();
    let creator = p.dataset.private_creator(0x0029_1008).unwrap();
    assert_eq!(creator.vr, Vr::LO);
    assert_eq!(p.string(&p.dataset, creator.tag), "SIEMENS CSA HEADER");
    assert_eq!(p.dataset.get(0x0029_1008).unwrap().vr, Vr::UN);
}

#[test]
fn ybr_full_422_frames_hold_two_samples_per_pixel() {
    let mut f = part10(EXPLICIT_VR_LE);
    f.extend(short(0x0028_0002, b"US", &3u16.to_le_bytes())); // Samples per Pixel 3
    f.extend(short(0x0028_0004, b"CS", b"YBR_FULL_422")); // Photometric Interpretation
    f.extend(short(0x0028_0010, b"US", &2u16.to_le_bytes())); // Rows 2
    f.extend(short(0x0028_0011, b"US", &2u16.to_le_bytes())); // Columns 2
    f.extend(short(0x0028_0100, b"US", &8u16.to_le_bytes())); // Bits Allocated 8
                                                              // (7FE0,0010) OB length 8: Y1 Y2 Cb Cr for each of the two rows
    f.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 8, 0, 0, 0]);
    f.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    match describe(&f, None).unwrap().pixel.unwrap().kind {
        PixelKind::Native {
            frames, frame_len, ..
        } => assert_eq!((frames, frame_len), (1, 8)),
        k => panic!("unexpected {k:?}"),
    }
}
