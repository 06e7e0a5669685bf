//! Storage layer tests of the arrival encoding, densifying and streams, over real packs.

use std::collections::HashSet;
use std::io::{Cursor, Read};

use super::format::*;
use super::tests::native;
use super::*;

fn opts() -> Options {
    Options {
        dict_samples: 3,
        ..Options::default()
    }
}

/// Densifies until nothing is left; returns every move.
fn densify_all(s: &Store, budget: u64, threads: usize) -> Vec<(Location, Location)> {
    let mut moved = Vec::new();
    for _ in 0..10_000 {
        let r = s.densify_step(budget, threads).unwrap();
        assert!(r.skipped.is_empty(), "{:?}", r.skipped);
        moved.extend(r.moved);
        s.settle(&r.settle);
        if r.done {
            return moved;
        }
    }
    panic!("densifying never finished");
}

fn flags_at(s: &Store, loc: Location) -> u8 {
    s.read_head(loc).unwrap().header.flags
}

#[test]
fn arrival_records_densify_to_exactly_what_a_dense_put_writes() {
    let dir = tempfile::tempdir().unwrap();
    let dense_dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Some(1), opts()).unwrap();
    let d = Store::open(
        dense_dir.path(),
        Some(1),
        Options {
            levels: Levels::dense(),
            ..opts()
        },
    )
    .unwrap();
    let mut items = Vec::new();
    for n in 0..6 {
        // Large frames (MED classes), small ones (plain MED), one single-frame image.
        items.push(native("2.2", n, 2, 300, 260));
        items.push(native("3.3", n, 3, 16, 16));
    }
    items.push(native("4.4", 0, 1, 512, 512));
    items.push(native("4.4", 1, 1, 8, 8));
    let mut locs = Vec::new();
    let mut dense = Vec::new();
    for (b, l) in &items {
        locs.push(s.put(b, Some(l)).unwrap());
        dense.push(d.put(b, Some(l)).unwrap());
    }
    // Frames of 32 KiB and more arrive cheap; small ones are dense at once (plain MED
    // costs them no more).
    let big = |i: usize| i.is_multiple_of(2);
    for (i, (loc, dl)) in locs.iter().zip(&dense).enumerate() {
        let want = if big(i) { RECORD_FLAG_ARRIVAL } else { 0 };
        assert_eq!(flags_at(&s, *loc), want, "instance {i}");
        assert_eq!(flags_at(&d, *dl), 0);
    }
    let st = s.stats().unwrap();
    assert_eq!(
        st.arrival_instances,
        items.iter().enumerate().filter(|(i, _)| big(*i)).count() as u64
    );
    assert!(st.stored_bytes > d.stats().unwrap().stored_bytes);

    let moved: HashMap<Location, Location> = densify_all(&s, 256 << 10, 2).into_iter().collect();
    // Every record of the victim moves, arrival or not (the pack goes).
    assert_eq!(moved.len(), items.len());
    let st = s.stats().unwrap();
    assert_eq!((st.arrival_instances, st.arrival_stored_bytes), (0, 0));
    for (i, ((b, _), old)) in items.iter().zip(&locs).enumerate() {
        let new = moved[old];
        assert_eq!(flags_at(&s, new), 0);
        assert_eq!(&s.get(new).unwrap(), b);
        // The old location still reads in this process (the index follows a moment later).
        assert_eq!(&s.get(*old).unwrap(), b);
        let ours = s.read_head(new).unwrap().meta;
        let theirs = d.read_head(dense[i]).unwrap().meta;
        let strip = |m: &Meta| -> Vec<(u64, u64, u64, u8, u8)> {
            m.chunks
                .iter()
                .map(|c| (c.stored_len, c.raw_len, c.xxh3, c.filter, c.codec))
                .collect()
        };
        assert_eq!(strip(&ours), strip(&theirs), "instance {i}");
        assert_eq!(ours.sha256, theirs.sha256);
    }
    // The first pack is gone; a fresh reader finds everything, dictionaries at their new
    // home (the densified records say where it is).
    assert!(!dir
        .path()
        .join("packs")
        .join(pack::pack_name(locs[0].pack))
        .exists());
    drop(s);
    let r = Store::open(dir.path(), None, opts()).unwrap();
    let mut dicts = HashMap::new();
    r.walk_all(|loc, h, m| {
        if h.kind == Kind::Dictionary {
            dicts.insert(m.unwrap().dict_id, loc);
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(dicts.len(), 2);
    for ((b, _), old) in items.iter().zip(&locs) {
        let new = moved[old];
        let m = r.read_head(new).unwrap().meta;
        if m.dict_id != 0 {
            assert_eq!(m.dict_loc, dicts[&m.dict_id]);
        }
        assert_eq!(&r.get(new).unwrap(), b);
    }
    assert!(r.verify(true, |_, _| {}).unwrap().damaged.is_empty());
}

#[test]
fn densifying_drops_deleted_instances_and_carries_late_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Some(1), opts()).unwrap();
    let items: Vec<_> = (0..8).map(|n| native("5.5", n, 2, 200, 200)).collect();
    let locs: Vec<Location> = items
        .iter()
        .map(|(b, l)| s.put(b, Some(l)).unwrap())
        .collect();
    s.delete(locs[0]).unwrap();
    // The smallest budget: the job spans many steps; a delete lands in the middle.
    let mut moved = HashMap::new();
    let mut deleted_mid_job = false;
    for _ in 0..1000 {
        let r = s.densify_step(1, 1).unwrap();
        moved.extend(r.moved.iter().copied());
        s.settle(&r.settle);
        if !deleted_mid_job && r.bytes_in > 0 && r.packs == 0 {
            s.delete(locs[7]).unwrap();
            deleted_mid_job = true;
        }
        if r.done {
            break;
        }
    }
    assert!(deleted_mid_job);
    let live: HashSet<String> = s
        .scan()
        .unwrap()
        .into_iter()
        .map(|e| e.meta.sop_instance_uid)
        .collect();
    let want: HashSet<String> = (1..7).map(|n| format!("5.5.{n}")).collect();
    assert_eq!(live, want);
    for n in 1..7 {
        assert_eq!(s.get(moved[&locs[n]]).unwrap(), items[n].0);
    }
    // Reopened, nothing comes back.
    drop(s);
    let r = Store::open(dir.path(), None, opts()).unwrap();
    assert_eq!(r.scan().unwrap().len(), 6);
    assert!(r.verify(true, |_, _| {}).unwrap().damaged.is_empty());
}

#[test]
fn an_interrupted_densify_is_undone_at_the_next_opening() {
    let dir = tempfile::tempdir().unwrap();
    let items: Vec<_> = (0..6).map(|n| native("6.6", n, 2, 300, 300)).collect();
    let locs: Vec<Location> = {
        let s = Store::open(dir.path(), Some(1), opts()).unwrap();
        let locs = items
            .iter()
            .map(|(b, l)| s.put(b, Some(l)).unwrap())
            .collect();
        // Work part of the way, then stop without committing (as a kill would).
        for _ in 0..3 {
            let r = s.densify_step(1, 1).unwrap();
            assert!(r.moved.is_empty());
        }
        // The copies made so far are not part of the store yet, for any reader.
        assert_eq!(s.scan().unwrap().len(), items.len());
        let other = Store::open(dir.path(), None, opts()).unwrap();
        assert_eq!(other.stats().unwrap().instances, items.len() as u64);
        assert_eq!(
            other.verify(false, |_, _| {}).unwrap().instances,
            items.len() as u64
        );
        locs
    };
    let packs = dir.path().join("packs");
    assert!(packs
        .join(format!("compact-w{DENSIFY_WRITER:05}.journal"))
        .exists());
    // Any opening (here a reader) undoes it: the output is cut back, the victim stays.
    let r = Store::open(dir.path(), None, opts()).unwrap();
    assert!(!packs
        .join(format!("compact-w{DENSIFY_WRITER:05}.journal"))
        .exists());
    assert!(r.verify(true, |_, _| {}).unwrap().damaged.is_empty());
    assert_eq!(r.scan().unwrap().len(), items.len());
    for ((b, _), loc) in items.iter().zip(&locs) {
        assert_eq!(&r.get(*loc).unwrap(), b);
    }
    drop(r);
    // And the next densifier finishes the job from scratch.
    let s = Store::open(dir.path(), Some(1), opts()).unwrap();
    let moved: HashMap<_, _> = densify_all(&s, u64::MAX, 2).into_iter().collect();
    for ((b, _), loc) in items.iter().zip(&locs) {
        assert_eq!(&s.get(moved[loc]).unwrap(), b);
    }
    assert_eq!(s.stats().unwrap().arrival_instances, 0);
}

#[test]
fn streamed_puts_read_back_and_densify() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Some(1), opts()).unwrap();
    // 3 frames of 1.12 MB (two chunks each) with bytes after the pixel data.
    let (b, l) = native("7.7", 1, 3, 700, 800);
    let prov = Provenance::now("STREAMER");
    let (loc, sha) = s
        .put_stream(&mut Cursor::new(&b), b.len() as u64, Some(&l), &prov, false)
        .unwrap();
    assert_eq!(loc.offset, PACK_HEADER_LEN as u64);
    assert_eq!(flags_at(&s, loc), RECORD_FLAG_ARRIVAL);
    assert_eq!(s.get(loc).unwrap(), b);
    assert_eq!(s.meta(loc).unwrap().provenance, prov);
    assert_eq!(sha, s.sha256(loc).unwrap());
    assert_eq!(s.get_frame(loc, 1).unwrap().len(), 700 * 800 * 2);
    let mut streamed = Vec::new();
    let mut reader = s.open_instance(loc).unwrap();
    assert_eq!(reader.size(), b.len() as u64);
    reader.read_to_end(&mut streamed).unwrap();
    assert_eq!(streamed, b);
    // Its own pack; the active pack is untouched.
    let small = s.put(&native("7.7", 2, 1, 4, 4).0, None).unwrap();
    assert_ne!(small.pack, loc.pack);
    // Without a layout (stored whole), and a short reader: an error, nothing left behind.
    let (w, _) = s
        .put_stream(&mut Cursor::new(b"whole"), 5, None, &prov, false)
        .unwrap();
    assert_eq!(s.get(w).unwrap(), b"whole");
    let short = s.put_stream(&mut Cursor::new(b"abc"), 10, None, &prov, false);
    assert!(short.is_err());
    let names: Vec<String> = std::fs::read_dir(dir.path().join("packs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".partial")), "{names:?}");
    let moved: HashMap<_, _> = densify_all(&s, 1 << 20, 2).into_iter().collect();
    assert_eq!(s.get(moved[&loc]).unwrap(), b);
    assert!(s.verify(true, |_, _| {}).unwrap().damaged.is_empty());
}

#[test]
fn a_streamed_read_reports_damage_and_a_wrong_sha_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Some(1), opts()).unwrap();
    let (b, l) = native("8.8", 1, 2, 400, 400);
    let loc = s.put(&b, Some(&l)).unwrap();
    // A record whose SHA-256 is wrong but every checksum holds (a writer's bug): the
    // stream gives every byte, then an integrity error instead of the end.
    let (rec, p) = s.read_record(loc).unwrap();
    let mut meta = p.meta.clone();
    meta.sha256[0] ^= 1;
    let data_end = rec.len() - TRAILER_LEN;
    let mut forged = record::head_bytes(Kind::Instance, p.header.flags, &meta, rec.len() as u64);
    let start = forged.len();
    forged.extend_from_slice(&rec[start..data_end]);
    let t = trailer(&forged);
    forged.extend_from_slice(&t);
    let bad = s.append(&[&forged], false).unwrap()[0];
    let mut r = s.open_instance(bad).unwrap();
    let mut got = Vec::new();
    let err = loop {
        match r.next_piece() {
            Ok(Some(piece)) => got.extend_from_slice(&piece),
            Ok(None) => panic!("a wrong SHA-256 went unnoticed"),
            Err(e) => break e,
        }
    };
    assert_eq!(got, b);
    assert!(err.to_string().contains("SHA-256"), "{err}");
    // A flipped byte in a pixel chunk fails that chunk's checksum while streaming.
    let path = dir.path().join("packs").join(pack::pack_name(loc.pack));
    let c = &p.meta.chunks[2];
    let at = loc.offset + c.offset + 3;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    use std::os::unix::fs::FileExt;
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, at).unwrap();
    f.write_all_at(&[byte[0] ^ 0x40], at).unwrap();
    let mut out = Vec::new();
    assert!(s.open_instance(loc).unwrap().read_to_end(&mut out).is_err());
    let rep = s.verify(false, |_, _| {}).unwrap();
    assert_eq!(rep.damaged.len(), 1);
    assert!(rep.damaged[0].message.contains("fails its checksum"));
}

#[test]
fn dense_encoding_at_arrival_needs_no_densifying() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(
        dir.path(),
        Some(1),
        Options {
            levels: Levels::dense(),
            ..opts()
        },
    )
    .unwrap();
    let (b, l) = native("9.9", 1, 2, 200, 200);
    let loc = s.put(&b, Some(&l)).unwrap();
    assert_eq!(flags_at(&s, loc), 0);
    let r = s.densify_step(u64::MAX, 1).unwrap();
    assert!(r.done && r.moved.is_empty() && r.bytes_in == 0, "{r:?}");
    assert_eq!(s.get(loc).unwrap(), b);
}

#[test]
fn raw_arrival_round_trips_and_keeps_the_geometry_for_densifying() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(
        dir.path(),
        Some(1),
        Options {
            levels: Levels {
                arrival: Some(Arrival::Raw),
                ..Levels::default()
            },
            ..opts()
        },
    )
    .unwrap();
    let (b, l) = native("1.1", 1, 2, 200, 150);
    let loc = s.put(&b, Some(&l)).unwrap();
    let m = s.read_head(loc).unwrap().meta;
    assert!(m.chunks[1..].iter().all(|c| c.codec == CODEC_STORED
        && c.flags & FLAG_ARRIVAL != 0
        && c.dense_filter == FILTER_MED_CLASSES
        && c.row_len == 150));
    let moved: HashMap<_, _> = densify_all(&s, u64::MAX, 1).into_iter().collect();
    let m = s.read_head(moved[&loc]).unwrap().meta;
    assert!(m.chunks[1..].iter().all(|c| c.filter == FILTER_MED_CLASSES));
    assert_eq!(s.get(moved[&loc]).unwrap(), b);
}

#[test]
fn sealing_starts_a_new_pack_and_appends_count_arrivals() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), Some(1), opts()).unwrap();
    assert_eq!(s.appends(), 0);
    let a = s.put(b"one", None).unwrap();
    s.seal().unwrap();
    let b = s.put(b"two", None).unwrap();
    assert_ne!(a.pack, b.pack);
    assert_eq!(s.appends(), 2);
    assert_eq!(s.get(a).unwrap(), b"one");
}

#[test]
fn a_reader_finishes_the_commit_of_a_dead_writer_before_reading() {
    // A rewrite killed after its commit: the output is complete, the victim not yet gone.
    // A reader (the index's catch-up opens one) must see only the copy.
    let dir = tempfile::tempdir().unwrap();
    let packs = dir.path().join("packs");
    let loc = {
        let s = Store::open(dir.path(), Some(1), opts()).unwrap();
        let (b, l) = native("2.5", 1, 1, 8, 8);
        s.put(&b, Some(&l)).unwrap()
    };
    let output = pack::pack_id(DENSIFY_WRITER, 1);
    let copy = packs.join(pack::pack_name(output));
    let mut bytes = std::fs::read(packs.join(pack::pack_name(loc.pack))).unwrap();
    bytes[..PACK_HEADER_LEN].copy_from_slice(&pack_header(DENSIFY_WRITER, 1));
    std::fs::write(&copy, &bytes).unwrap();
    compact::write_journal(&packs, DENSIFY_WRITER, "commit", loc.pack, output, Some(32)).unwrap();
    let r = Store::open(dir.path(), None, opts()).unwrap();
    let live: Vec<Location> = r.scan().unwrap().iter().map(|e| e.location).collect();
    assert_eq!(
        live,
        vec![Location {
            pack: output,
            ..loc
        }]
    );
    assert!(!packs.join(pack::pack_name(loc.pack)).exists());
    // While its writer is alive, a journal is left to it.
    let s = Store::open(dir.path(), Some(1), opts()).unwrap();
    let (b, l) = native("2.5", 2, 1, 8, 8);
    let other = s.put(&b, Some(&l)).unwrap();
    compact::write_journal(&packs, 1, "intent", other.pack, pack::pack_id(1, 99), None).unwrap();
    drop(Store::open(dir.path(), None, opts()).unwrap());
    assert!(packs.join("compact-w00001.journal").exists());
}
