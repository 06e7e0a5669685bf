//! Storage layer tests over real pack files in a temporary folder, with hand-built layouts.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use super::format::PACK_HEADER_LEN;
use super::*;
use crate::layout::{Framing, InstanceLayout, PixelKind, PixelLayout};
use std::collections::HashSet;

// `..Default::default()` keeps this building when the parser adds layout fields.
#[allow(clippy::needless_update)]
/// A fake instance: a header with the series UID repeated, 16-bit native frames, padding.
pub(crate) fn native(
    series: &str,
    n: u32,
    frames: usize,
    rows: usize,
    cols: usize,
) -> (Vec<u8>, InstanceLayout) {
    let mut buf = vec![0u8; 128];
    buf.extend_from_slice(b"DICM");
    for k in 0..40 {
        buf.extend_from_slice(
            format!("(0008,{k:04}) {series} attribute {k} of image {n};").as_bytes(),
        );
    }
    buf.push(b'x'); // odd length before the pixel data
    let value_start = buf.len() + 12;
    buf.extend_from_slice(b"\xe0\x7f\x10\x00OW\x00\x00LENG");
    for i in 0..frames * rows * cols {
        let v = ((i % cols) as u32 * 5 + (i / cols) as u32 * 3 + n) as u16;
        buf.extend_from_slice(&v.to_le_bytes());
    }
    let end = buf.len();
    buf.extend_from_slice(b"\xfc\xff\xfc\xff\x00\x00\x00\x00");
    let layout = InstanceLayout {
        framing: Framing::Part10,
        meta: 0..132,
        transfer_syntax: "1.2.840.10008.1.2.1".into(),
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.4".into(),
        sop_instance_uid: format!("{series}.{n}"),
        study_instance_uid: "1.2.3".into(),
        series_instance_uid: series.into(),
        patient_id: "P1".into(),
        modality: "MR".into(),
        pixel: Some(PixelLayout {
            element: value_start - 12..end,
            value: value_start..end,
            kind: PixelKind::Native {
                rows: rows as u16,
                columns: cols as u16,
                samples_per_pixel: 1,
                bits_allocated: 16,
                pixel_representation: 0,
                planar_configuration: 0,
                frames: frames as u32,
                frame_len: rows * cols * 2,
                big_endian: false,
            },
        }),
        ..InstanceLayout::default()
    };
    (buf, layout)
}

fn encapsulated() -> (Vec<u8>, InstanceLayout) {
    let mut buf = b"ENCAPSULATED HEADER".to_vec();
    let el = buf.len();
    buf.extend_from_slice(b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff");
    let v0 = buf.len();
    let mut items = Vec::new();
    for frag in [&b""[..], b"FRAME-ONE", b"FRAME-TWO-A", b"B"] {
        let s = buf.len();
        buf.extend_from_slice(b"\xfe\xff\x00\xe0");
        buf.extend_from_slice(&(frag.len() as u32).to_le_bytes());
        buf.extend_from_slice(frag);
        items.push(s..buf.len());
    }
    buf.extend_from_slice(b"\xfe\xff\xdd\xe0\0\0\0\0");
    let layout = InstanceLayout {
        transfer_syntax: "1.2.840.10008.1.2.4.50".into(),
        sop_instance_uid: "9.9".into(),
        pixel: Some(PixelLayout {
            element: el..buf.len(),
            value: v0..buf.len(),
            kind: PixelKind::Encapsulated {
                items,
                frames: vec![1..2, 2..4],
            },
        }),
        ..InstanceLayout::default()
    };
    (buf, layout)
}

fn opts() -> Options {
    Options {
        dict_samples: 3,
        ..Options::default()
    }
}

#[test]
fn put_get_frames_scan_delete_stats() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Some(1), opts()).unwrap();
    let (a, la) = native("1.2.3.4", 1, 3, 700, 800);
    let (b, lb) = encapsulated();
    let la_loc = s.put(&a, Some(&la)).unwrap();
    let from_ct = Provenance {
        received_at_us: 1_700_000_000_123_456,
        source_ae: "CT_SCANNER".into(),
    };
    let locs = s
        .put_many(&[(&b, Some(&lb)), (b"not dicom at all", None)], &from_ct)
        .unwrap();
    // The provenance survives the round trip: a rebuilt index restores it from here.
    assert_eq!(s.meta(locs[0]).unwrap().provenance, from_ct);
    assert_eq!(s.meta(locs[1]).unwrap().provenance, from_ct);
    assert!(s.meta(la_loc).unwrap().provenance.received_at_us > 1_700_000_000_000_000);
    assert_eq!(s.get(la_loc).unwrap(), a);
    assert_eq!(s.get(locs[0]).unwrap(), b);
    assert_eq!(s.get(locs[1]).unwrap(), b"not dicom at all");
    let frame = s.get_frame(la_loc, 2).unwrap();
    let px = la.pixel.as_ref().unwrap();
    assert_eq!(
        frame,
        &a[px.value.start + 2 * 1_120_000..px.value.start + 3 * 1_120_000]
    );
    assert_eq!(s.get_frame(locs[0], 1).unwrap(), b"FRAME-TWO-AB");
    assert!(s.get_frame(la_loc, 3).is_err());
    assert_eq!(s.header_bytes(la_loc).unwrap(), &a[..px.element.start]);
    assert_eq!(s.scan().unwrap().len(), 3);
    s.delete(locs[1]).unwrap();
    let live: Vec<Location> = s.scan().unwrap().iter().map(|e| e.location).collect();
    assert_eq!(live, vec![la_loc, locs[0]]);
    let st = s.stats().unwrap();
    assert_eq!(
        (st.instances, st.tombstones, st.deleted_instances),
        (2, 1, 1)
    );
    assert_eq!(st.raw_bytes, (a.len() + b.len()) as u64);
    assert!(st.stored_bytes * 5 < st.raw_bytes, "{st:?}");
    assert!(s.verify(true, |_, _| {}).unwrap().damaged.is_empty());
}

#[test]
fn dictionaries_are_trained_stored_and_found_by_a_fresh_reader() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Some(2), opts()).unwrap();
    let mut locs = Vec::new();
    let mut bufs = Vec::new();
    for n in 0..8 {
        let (b, l) = native("1.2.840.99", n, 1, 16, 16);
        locs.push(s.put(&b, Some(&l)).unwrap());
        bufs.push(b);
    }
    assert_eq!(s.stats().unwrap().dictionaries, 1);
    assert_eq!(s.meta(locs[0]).unwrap().dict_id, 0);
    assert_ne!(s.meta(locs[7]).unwrap().dict_id, 0);
    drop(s);
    let r = Store::open(dir.path(), None, opts()).unwrap();
    for (l, b) in locs.iter().zip(&bufs) {
        assert_eq!(&r.get(*l).unwrap(), b);
    }
    assert!(r.put(b"x", None).is_err(), "read-only store accepted a put");
}

#[test]
fn a_second_writer_with_the_same_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _s = Store::open(dir.path(), Some(3), opts()).unwrap();
    assert!(matches!(
        Store::open(dir.path(), Some(3), opts()),
        Err(Error::Locked { .. })
    ));
    assert!(Store::open(dir.path(), Some(4), opts()).is_ok());
}

#[test]
fn concurrent_puts_share_fsyncs_and_all_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(
        dir.path(),
        Some(1),
        Options {
            pack_size: 64 << 10,
            ..opts()
        },
    )
    .unwrap();
    let results: Vec<(Location, Vec<u8>)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..4)
            .map(|t| {
                let s = &s;
                sc.spawn(move || {
                    (0..25)
                        .map(|i| {
                            let (b, l) = native(&format!("1.{t}"), i, 1, 32, 32);
                            (s.put(&b, Some(&l)).unwrap(), b)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert!(s.stats().unwrap().packs > 1);
    for (l, b) in results {
        assert_eq!(s.get(l).unwrap(), b);
    }
}

#[test]
fn torn_tail_is_cut_and_damage_in_the_middle_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut locs = Vec::new();
    {
        let s = Store::open(dir.path(), Some(1), opts()).unwrap();
        for n in 0..3 {
            let (b, l) = native("7.7", n, 1, 8, 8);
            locs.push((s.put(&b, Some(&l)).unwrap(), b));
        }
    }
    let path = dir
        .path()
        .join("packs")
        .join(pack::pack_name(locs[0].0.pack));
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    let clean = f.metadata().unwrap().len();
    // A torn record: the first half of a copy of the last one.
    let last = &locs[2].0;
    let rec = std::fs::read(&path).unwrap()
        [last.offset as usize..(last.offset + last.length) as usize]
        .to_vec();
    f.write_all_at(&rec[..rec.len() / 2], clean).unwrap();
    {
        let s = Store::open(dir.path(), Some(1), opts()).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), clean);
        let (b, l) = native("7.7", 9, 1, 8, 8);
        let loc = s.put(&b, Some(&l)).unwrap();
        assert_eq!(loc.offset, clean);
        assert!(s.verify(false, |_, _| {}).unwrap().damaged.is_empty());
    }
    // Damage in the middle (a flipped byte in record 1) must not be truncated away.
    f.write_all_at(&[0xAA], locs[1].0.offset + 50).unwrap();
    let s = Store::open(dir.path(), Some(1), opts()).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() > clean);
    assert_eq!(s.get(locs[2].0).unwrap(), locs[2].1);
    assert!(s.get(locs[1].0).is_err());
    let (b, l) = native("7.7", 10, 1, 8, 8);
    assert_ne!(
        s.put(&b, Some(&l)).unwrap().pack,
        locs[0].0.pack,
        "wrote after damage"
    );
    let rep = s.verify(false, |_, _| {}).unwrap();
    assert_eq!(rep.damaged.len(), 1);
    assert_eq!(rep.damaged[0].sop_instance_uid, "");
}

#[test]
fn every_single_byte_flip_is_detected_by_verify_and_by_reads() {
    let dir = tempfile::tempdir().unwrap();
    let mut locs = Vec::new();
    {
        let s = Store::open(
            dir.path(),
            Some(1),
            Options {
                dict_samples: 2,
                ..opts()
            },
        )
        .unwrap();
        for n in 0..3 {
            let (b, l) = native("5.5", n, 2, 4, 6);
            locs.push(s.put(&b, Some(&l)).unwrap());
        }
        let (b, l) = encapsulated();
        locs.push(s.put(&b, Some(&l)).unwrap());
        let t = s.delete(locs[0]).unwrap();
        locs.push(t);
        assert_eq!(s.stats().unwrap().dictionaries, 1);
    }
    let path = dir.path().join("packs").join(pack::pack_name(locs[0].pack));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let len = f.metadata().unwrap().len();
    let r = Store::open(dir.path(), None, opts()).unwrap();
    let mut records = Vec::new();
    r.walk_all(|loc, h, _| {
        records.push((loc, h.kind));
        Ok(())
    })
    .unwrap();
    assert_eq!(records.len(), 6);
    drop(r);
    for i in 0..len {
        let mut byte = [0u8];
        f.read_exact_at(&mut byte, i).unwrap();
        f.write_all_at(&[byte[0] ^ 0x01], i).unwrap();
        let r = Store::open(dir.path(), None, opts()).unwrap();
        let rep = r.verify(true, |_, _| {}).unwrap();
        assert!(
            !rep.damaged.is_empty(),
            "flip at {i} of {len} not seen by verify"
        );
        for (l, kind) in records
            .iter()
            .filter(|(l, _)| l.offset <= i && i < l.offset + l.length)
        {
            let read = match kind {
                Kind::Instance => r.get(*l).map(|_| ()),
                _ => r.meta(*l).map(|_| ()),
            };
            assert!(read.is_err(), "flip at {i} not seen reading {l:?}");
        }
        if i < PACK_HEADER_LEN as u64 {
            assert!(
                r.get(locs[1]).is_err(),
                "pack header flip at {i} not seen by a read"
            );
        }
        f.write_all_at(&byte, i).unwrap();
    }
}

#[test]
fn compaction_reclaims_deleted_records_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let small = Options {
        pack_size: 4 << 10,
        dict_samples: 2,
        ..opts()
    };
    let mut kept = Vec::new();
    {
        let s = Store::open(dir.path(), Some(1), small.clone()).unwrap();
        for n in 0..12 {
            let (b, l) = native("3.3", n, 1, 16, 16);
            let loc = s.put(&b, Some(&l)).unwrap();
            if n % 3 == 0 {
                kept.push((loc, b));
            } else {
                s.delete(loc).unwrap();
            }
        }
    }
    let s = Store::open(dir.path(), Some(2), small).unwrap();
    let before = s.stats().unwrap();
    let rep = s.compact(0.2, |_, _| {}).unwrap();
    assert!(rep.packs_rewritten > 0, "{rep:?}");
    let after = s.stats().unwrap();
    assert!(after.pack_bytes < before.pack_bytes, "{before:?} {after:?}");
    assert_eq!(after.instances, 4);
    let moves: HashMap<Location, Location> = rep.moved.iter().copied().collect();
    for (loc, b) in &kept {
        let now = moves.get(loc).copied().unwrap_or(*loc);
        assert_eq!(&s.get(now).unwrap(), b);
    }
    let live: HashSet<Location> = s.scan().unwrap().iter().map(|e| e.location).collect();
    assert_eq!(live.len(), 4);
    assert!(s.verify(true, |_, _| {}).unwrap().damaged.is_empty());
    // A second run finds nothing more to do.
    assert_eq!(s.compact(0.2, |_, _| {}).unwrap().packs_rewritten, 0);
}

#[test]
fn interrupted_compaction_is_undone_or_finished_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let packs = dir.path().join("packs");
    let loc = {
        let s = Store::open(dir.path(), Some(1), opts()).unwrap();
        let (b, l) = native("4.4", 1, 1, 8, 8);
        s.put(&b, Some(&l)).unwrap()
    };
    let victim = loc.pack;
    let output = pack::pack_id(1, 2);
    // Intent only: the half-written output goes, the victim stays.
    std::fs::write(packs.join(pack::pack_name(output)), b"partial").unwrap();
    compact::write_journal(&packs, 1, "intent", victim, output, None).unwrap();
    drop(Store::open(dir.path(), Some(1), opts()).unwrap());
    assert!(!packs.join(pack::pack_name(output)).exists());
    assert!(packs.join(pack::pack_name(victim)).exists());
    // Commit: the copy is complete, the victim goes.
    std::fs::copy(
        packs.join(pack::pack_name(victim)),
        packs.join("w00009-00000001.dpk"),
    )
    .unwrap();
    compact::write_journal(&packs, 9, "commit", victim, pack::pack_id(9, 1), None).unwrap();
    drop(Store::open(dir.path(), Some(9), opts()).unwrap());
    assert!(!packs.join(pack::pack_name(victim)).exists());
    assert!(!packs.join("compact-w00009.journal").exists());
}

#[test]
fn many_series_keep_their_dictionaries_within_the_memory_bound() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(
        dir.path(),
        Some(1),
        Options {
            dict_samples: 2,
            sync: false,
            ..opts()
        },
    )
    .unwrap();
    let series: Vec<String> = (0..MAX_DICTS + 5).map(|k| format!("1.9.{k}")).collect();
    let mut first_dict = HashMap::new();
    for round in 0..3 {
        for uid in &series {
            let (b, l) = native(uid, round, 1, 4, 4);
            let loc = s.put(&b, Some(&l)).unwrap();
            let id = s.meta(loc).unwrap().dict_id;
            if round == 2 {
                assert_ne!(id, 0, "series {uid} lost its dictionary");
                assert_eq!(*first_dict.entry(uid.clone()).or_insert(id), id);
                assert_eq!(s.get(loc).unwrap(), b);
            }
        }
    }
    let d = lock(&s.dicts);
    assert!(d.by_series.len() <= MAX_DICTS && d.by_id.len() <= MAX_DICTS);
    drop(d);
    assert_eq!(s.stats().unwrap().dictionaries, series.len() as u64);
}

#[test]
fn tail_returns_records_past_the_marks_and_drops_what_tombstones_delete() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Some(5), opts()).unwrap();
    let mut locs = Vec::new();
    for n in 0..4 {
        let (buf, layout) = native("1.9.1", n, 1, 8, 8);
        locs.push(s.put(&buf, Some(&layout)).unwrap());
    }
    let all = s.tail(&HashMap::new()).unwrap();
    assert_eq!(all.instances.len(), 4);
    let end = all.ends[0].1;
    assert_eq!(end, locs[3].offset + locs[3].length);

    // Past a mark after the second record: the last two, then nothing once marked at the end.
    let mut since = HashMap::new();
    since.insert(locs[0].pack, locs[1].offset + locs[1].length);
    let uids: Vec<_> = s
        .tail(&since)
        .unwrap()
        .instances
        .into_iter()
        .map(|e| e.meta.sop_instance_uid)
        .collect();
    assert_eq!(uids, ["1.9.1.2", "1.9.1.3"]);
    since.insert(locs[0].pack, end);
    assert!(s.tail(&since).unwrap().instances.is_empty());

    // A deletion past the mark is reported, and an instance it deletes in the tail is left out.
    s.delete(locs[0]).unwrap();
    s.delete(locs[3]).unwrap();
    let t = s.tail(&since).unwrap();
    assert_eq!(t.tombstoned, vec![locs[0], locs[3]]);
    assert!(t.instances.is_empty());
    let whole = s.tail(&HashMap::new()).unwrap();
    assert_eq!(whole.instances.len(), 2);
}

#[test]
fn tail_skips_a_torn_record_and_stops_at_the_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Some(6), opts()).unwrap();
    let (a, la) = native("1.9.2", 0, 1, 8, 8);
    let (b, lb) = native("1.9.2", 1, 1, 8, 8);
    let first = s.put(&a, Some(&la)).unwrap();
    let second = s.put(&b, Some(&lb)).unwrap();
    drop(s);
    // Cut the second record in half, as a crash in the middle of its write would.
    let path = dir.path().join("packs").join(pack::pack_name(second.pack));
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(second.offset + second.length / 2).unwrap();
    let r = Store::open(dir.path(), None, opts()).unwrap();
    let t = r.tail(&HashMap::new()).unwrap();
    assert_eq!(t.instances.len(), 1);
    assert_eq!(t.ends, vec![(first.pack, first.offset + first.length)]);
    // A body damaged in place fails its checksum: left out and counted.
    f.write_all_at(b"\xde\xad\xbe\xef", first.offset + first.length - 40)
        .unwrap();
    let t = r.tail(&HashMap::new()).unwrap();
    assert!(t.instances.is_empty());
    assert_eq!(t.damaged, 1);
}

#[test]
fn low_water_never_passes_a_held_record() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Some(7), opts()).unwrap();
    let prov = Provenance::now("MOD");
    let (a, la) = native("1.9.3", 0, 1, 8, 8);
    let (b, lb) = native("1.9.3", 1, 1, 8, 8);
    let (held, _) = s.put_held(&a, Some(&la), &prov, true).unwrap();
    let (after, _) = s.put_held(&b, Some(&lb), &prov, true).unwrap();
    assert_eq!(s.low_water(), vec![(held.pack, held.offset)]);
    s.settle(&[after]); // settled out of order: the first still holds the mark
    assert_eq!(s.low_water(), vec![(held.pack, held.offset)]);
    s.settle(&[held]);
    // Nothing held: the mark is the pack's end (past any dictionary record too).
    let end = s.low_water()[0].1;
    assert!(end >= after.offset + after.length);
    let reader = Store::open(dir.path(), None, opts()).unwrap();
    assert!(reader.low_water().is_empty());
    assert_eq!(
        reader
            .tail(&HashMap::from([(held.pack, end)]))
            .unwrap()
            .instances
            .len(),
        0
    );
}
