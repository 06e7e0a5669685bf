//! Archive layer tests: the write path over a real store in a temporary folder, with the
//! committed index played by a map (the commit step the Python committer does).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::*;
use crate::part10;
use crate::store::{Options, Provenance, Store};

/// A small MR dataset in Explicit VR Little Endian with a Part 10 meta group.
fn instance(uid: &str, pixel: u8, source_ae: &str) -> Vec<u8> {
    fn el(out: &mut Vec<u8>, tag: u32, vr: &[u8; 2], value: &[u8]) {
        out.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
        out.extend_from_slice(&((tag & 0xFFFF) as u16).to_le_bytes());
        out.extend_from_slice(vr);
        if vr == b"OW" {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        }
        out.extend_from_slice(value);
    }
    let pad = |s: &str| {
        let mut v = s.as_bytes().to_vec();
        if v.len() % 2 == 1 {
            v.push(0);
        }
        v
    };
    let mut out = part10::build_meta(
        "1.2.840.10008.5.1.4.1.1.4",
        uid,
        "1.2.840.10008.1.2.1",
        source_ae,
    );
    el(
        &mut out,
        0x0008_0016,
        b"UI",
        &pad("1.2.840.10008.5.1.4.1.1.4"),
    );
    el(&mut out, 0x0008_0018, b"UI", &pad(uid));
    el(&mut out, 0x0008_0060, b"CS", b"MR");
    el(&mut out, 0x0010_0020, b"LO", b"P1");
    el(&mut out, 0x0020_000D, b"UI", &pad("1.2.3"));
    el(&mut out, 0x0020_000E, b"UI", &pad("1.2.3.4"));
    el(&mut out, 0x0028_0002, b"US", &1u16.to_le_bytes());
    el(&mut out, 0x0028_0010, b"US", &4u16.to_le_bytes());
    el(&mut out, 0x0028_0011, b"US", &4u16.to_le_bytes());
    el(&mut out, 0x0028_0100, b"US", &16u16.to_le_bytes());
    el(&mut out, 0x0028_0103, b"US", &0u16.to_le_bytes());
    el(&mut out, 0x7FE0_0010, b"OW", &[pixel; 32]);
    out
}

/// The committed index: what a drained batch became.
#[derive(Default, Clone)]
struct MapIndex(Arc<Mutex<HashMap<String, Known>>>);

impl Lookup for MapIndex {
    fn lookup(&self, uids: &[String]) -> Result<HashMap<String, Known>, String> {
        let m = self.0.lock().unwrap();
        Ok(uids
            .iter()
            .filter_map(|u| m.get(u).map(|k| (u.clone(), *k)))
            .collect())
    }
}

fn writer(dir: &std::path::Path, policy: OnConflict) -> (Writer, MapIndex) {
    let store = Store::open(
        dir,
        Some(1),
        Options {
            sync: false,
            ..Options::default()
        },
    )
    .unwrap();
    let index = MapIndex::default();
    (
        Writer::new(Arc::new(store), Box::new(index.clone()), policy, 512),
        index,
    )
}

/// Plays the committer: drain, "commit" into the map, confirm.
fn commit(w: &Writer, index: &MapIndex) -> usize {
    let Some(d) = w.drain().unwrap() else {
        return 0;
    };
    let uids = d.batch.column_by_name("sop_instance_uid").unwrap();
    let uids = uids
        .as_any()
        .downcast_ref::<arrow_array::StringArray>()
        .unwrap();
    let mut m = index.0.lock().unwrap();
    for i in 0..d.batch.num_rows() {
        let uid = uids.value(i).to_string();
        m.insert(uid.clone(), w.pending(&uid).unwrap());
    }
    drop(m);
    w.committed();
    d.batch.num_rows()
}

fn prov() -> Provenance {
    Provenance::now("MOD")
}

#[test]
fn stores_once_then_answers_identical_even_with_another_meta() {
    let dir = tempfile::tempdir().unwrap();
    let (w, index) = writer(dir.path(), OnConflict::KeepFirst);
    let first = w.store(&instance("1.9.1", 7, "MOD"), None, &prov());
    let Outcome::Stored { location, .. } = first else {
        panic!("{first:?}")
    };
    assert_eq!(w.pending_len(), 1);
    // The same dataset from disk (another meta): identical, before and after the commit.
    let again = w.store(&instance("1.9.1", 7, ""), None, &prov());
    assert_eq!(
        again,
        Outcome::Identical {
            uid: "1.9.1".into(),
            location
        }
    );
    assert_eq!(commit(&w, &index), 1);
    assert_eq!(w.pending_len(), 0);
    let again = w.store(&instance("1.9.1", 7, "OTHER"), None, &prov());
    assert_eq!(
        again,
        Outcome::Identical {
            uid: "1.9.1".into(),
            location
        }
    );
    // Another dataset under the same UID: the first is kept.
    let other = w.store(&instance("1.9.1", 8, "MOD"), None, &prov());
    assert_eq!(
        other,
        Outcome::KeptFirst {
            uid: "1.9.1".into(),
            location
        }
    );
    assert_eq!(w.store_handle().stats().unwrap().instances, 1);
}

#[test]
fn replace_points_at_the_newcomer_and_tombstones_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let (w, index) = writer(dir.path(), OnConflict::Replace);
    let Outcome::Stored {
        location: first, ..
    } = w.store(&instance("1.9.2", 1, ""), None, &prov())
    else {
        panic!()
    };
    commit(&w, &index);
    let out = w.store(&instance("1.9.2", 2, ""), None, &prov());
    let Outcome::Replaced {
        location, previous, ..
    } = out
    else {
        panic!("{out:?}")
    };
    assert_eq!(previous, first);
    assert_eq!(w.pending("1.9.2").unwrap().location, location);
    let stats = w.store_handle().stats().unwrap();
    assert_eq!((stats.instances, stats.deleted_instances), (1, 1));
}

#[test]
fn concurrent_senders_of_one_uid_store_one_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (w, index) = writer(dir.path(), OnConflict::KeepFirst);
    let w = Arc::new(w);
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let w = w.clone();
            std::thread::spawn(move || {
                (0..20)
                    .map(|n| {
                        w.store(
                            &instance(&format!("1.9.3.{n}"), 3, &format!("A{t}")),
                            None,
                            &prov(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let outcomes: Vec<Outcome> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let stored = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Stored { .. }))
        .count();
    let identical = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Identical { .. }))
        .count();
    assert_eq!((stored, identical), (20, 140));
    assert_eq!(w.store_handle().stats().unwrap().instances, 20);
    assert_eq!(commit(&w, &index), 20);
}

#[test]
fn a_batch_reports_each_item_and_dedupes_within_itself() {
    let dir = tempfile::tempdir().unwrap();
    let (w, _index) = writer(dir.path(), OnConflict::KeepFirst);
    let a = instance("1.9.4.1", 1, "");
    let b = instance("1.9.4.2", 2, "");
    let a_other = instance("1.9.4.1", 9, "");
    let garbage = b"not dicom at all".to_vec();
    let out = w.store_many(&[&a, &b, &a, &a_other, &garbage], None, &prov());
    assert!(matches!(out[0], Outcome::Stored { .. }));
    assert!(matches!(out[1], Outcome::Stored { .. }));
    let Outcome::Stored { location, .. } = out[0] else {
        panic!()
    };
    assert_eq!(
        out[2],
        Outcome::Identical {
            uid: "1.9.4.1".into(),
            location
        }
    );
    assert_eq!(
        out[3],
        Outcome::KeptFirst {
            uid: "1.9.4.1".into(),
            location
        }
    );
    assert!(matches!(
        &out[4],
        Outcome::Rejected {
            kind: Rejection::Malformed | Rejection::NoUid,
            ..
        }
    ));
    assert_eq!(w.store_handle().stats().unwrap().instances, 2);
}

#[test]
fn drained_batches_carry_marks_and_are_handed_out_again_until_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let (w, index) = writer(dir.path(), OnConflict::KeepFirst);
    assert!(w.drain().unwrap().is_none());
    for n in 0..3 {
        w.store(&instance(&format!("1.9.5.{n}"), n, ""), None, &prov());
    }
    let d = w.drain().unwrap().unwrap();
    assert_eq!(d.batch.num_rows(), 3);
    let end = w.pending("1.9.5.2").unwrap().location;
    assert_eq!(d.marks, vec![(end.pack, end.offset + end.length)]);
    // Not confirmed (the index failed): the same batch again, and the rows stay visible.
    let again = w.drain().unwrap().unwrap();
    assert_eq!(again.batch.num_rows(), 3);
    assert!(w.pending("1.9.5.0").is_some());
    assert_eq!(commit(&w, &index), 3);
    assert!(w.drain().unwrap().is_none(), "nothing new, marks unchanged");
}

struct Down;
impl Lookup for Down {
    fn lookup(&self, _: &[String]) -> Result<HashMap<String, Known>, String> {
        Err("connection refused".into())
    }
}

#[test]
fn an_unreachable_index_refuses_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Some(1), Options::default()).unwrap();
    let w = Writer::new(Arc::new(store), Box::new(Down), OnConflict::KeepFirst, 1);
    let out = w.store(&instance("1.9.6", 1, ""), None, &prov());
    assert!(
        matches!(
            out,
            Outcome::Rejected {
                kind: Rejection::OutOfResources,
                ..
            }
        ),
        "{out:?}"
    );
    assert_eq!(w.store_handle().stats().unwrap().instances, 0);
}
