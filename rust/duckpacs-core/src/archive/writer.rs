//! Archive layer, the writer: parse once, one caller per UID, the duplicate rule, durable
//! store, pending index row (see the module docs of [`crate::archive`]).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use sha2::{Digest, Sha256};

use super::conflict;
use super::known::KnownUids;
use super::pending::{Drained, Known, Pending};
use crate::index::Extra;
use crate::layout::InstanceLayout;
use crate::parse::{self, ParseOptions, Parsed};
use crate::store::{Location, MappedFile, Provenance, Store};
use crate::Result;

/// The committed index, asked which of some SOP Instance UIDs it already holds.
pub trait Lookup: Send + Sync {
    /// UID -> location and SHA-256 of the indexed instances among `uids`. An error (the
    /// index is unreachable) refuses the store: nothing is written.
    fn lookup(&self, uids: &[String]) -> std::result::Result<HashMap<String, Known>, String>;
}

/// What a second, different instance under an archived SOP Instance UID does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    /// Keep the first one made durable; the newcomer is answered with a warning (0xB006).
    KeepFirst,
    /// Store the newcomer, point the index at it, and delete the earlier record.
    Replace,
}

/// Why an instance was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The bytes are not a DICOM dataset we can read (C-STORE 0xC000).
    Malformed,
    /// No SOP Instance UID (0008,0018) (C-STORE 0xA900).
    NoUid,
    /// The store or the index could not take it now: disk full, index unreachable (0xA700).
    OutOfResources,
}

/// What [`Writer::store`] did with one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Stored {
        uid: String,
        location: Location,
    },
    /// The same dataset was archived already: nothing written.
    Identical {
        uid: String,
        location: Location,
    },
    /// Another dataset under this UID is archived and kept (`OnConflict::KeepFirst`).
    KeptFirst {
        uid: String,
        location: Location,
    },
    /// Stored, replacing the earlier instance under this UID (`OnConflict::Replace`).
    Replaced {
        uid: String,
        location: Location,
        previous: Location,
    },
    Rejected {
        uid: String,
        kind: Rejection,
        reason: String,
    },
}

impl Outcome {
    fn rejected(uid: &str, kind: Rejection, reason: impl Into<String>) -> Outcome {
        Outcome::Rejected {
            uid: uid.to_string(),
            kind,
            reason: reason.into(),
        }
    }
}

/// UIDs being stored right now: a second caller with the same UID waits for the first.
#[derive(Default)]
struct Claims {
    held: Mutex<HashSet<String>>,
    freed: Condvar,
}

struct ClaimGuard<'a> {
    claims: &'a Claims,
    uids: Vec<String>,
}

impl Claims {
    /// Claims `uids` (sorted and distinct, so two batches never wait on each other).
    fn claim(&self, mut uids: Vec<String>) -> ClaimGuard<'_> {
        uids.sort();
        uids.dedup();
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        for uid in &uids {
            while held.contains(uid) {
                held = self.freed.wait(held).unwrap_or_else(|p| p.into_inner());
            }
            held.insert(uid.clone());
        }
        ClaimGuard { claims: self, uids }
    }
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        let mut held = self.claims.held.lock().unwrap_or_else(|p| p.into_inner());
        for uid in &self.uids {
            held.remove(uid);
        }
        self.claims.freed.notify_all();
    }
}

/// One instance between parse and store.
struct Item<'a> {
    buf: &'a [u8],
    parsed: Parsed<'a>,
    layout: InstanceLayout,
}

/// Decision for one parsed item.
enum Plan {
    Done(Outcome),
    Write { previous: Option<Location> },
}

/// The archive's one write path (see the module docs).
pub struct Writer {
    store: Arc<Store>,
    lookup: Box<dyn Lookup>,
    on_conflict: OnConflict,
    pending: Pending,
    claims: Claims,
    /// UIDs that may be archived (see [`KnownUids`]); trusted once `seeded`.
    known_uids: KnownUids,
    seeded: AtomicBool,
    /// While set, every arrival is refused with this reason (a storage policy: disk quota).
    refusal: Mutex<Option<String>>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Writer {
    /// A writer over `store` (opened with a writer id); `flush_rows` pending rows wake the
    /// committer early (see [`Writer::wait`]).
    pub fn new(
        store: Arc<Store>,
        lookup: Box<dyn Lookup>,
        on_conflict: OnConflict,
        flush_rows: usize,
    ) -> Writer {
        Writer {
            store,
            lookup,
            on_conflict,
            pending: Pending::new(flush_rows),
            claims: Claims::default(),
            known_uids: KnownUids::default(),
            seeded: AtomicBool::new(false),
            refusal: Mutex::new(None),
        }
    }

    /// Refuse every arrival with `reason` (out of resources: 0xA700 over DIMSE, 507 over
    /// STOW-RS) until called with None.
    pub fn set_refusal(&self, reason: Option<String>) {
        *self.refusal.lock().unwrap_or_else(|p| p.into_inner()) = reason;
    }

    /// Adds archived UIDs to the filter that spares new instances an index lookup (the
    /// caller feeds every UID of the index, then calls [`Writer::seeded`]).
    pub fn seed<'a>(&self, uids: impl IntoIterator<Item = &'a str>) {
        self.known_uids.insert(uids);
    }

    /// Every archived UID has been fed to [`Writer::seed`]: a UID the filter has never seen
    /// is new, without asking the index.
    pub fn seeded(&self) {
        self.seeded.store(true, Ordering::Release);
    }

    pub fn store_handle(&self) -> &Arc<Store> {
        &self.store
    }

    /// Stores one instance: a Part 10 stream, or a bare dataset in `transfer_syntax`.
    pub fn store(&self, buf: &[u8], transfer_syntax: Option<&str>, prov: &Provenance) -> Outcome {
        self.store_many(&[buf], transfer_syntax, prov)
            .pop()
            .unwrap_or_else(|| Outcome::rejected("", Rejection::Malformed, "nothing to store"))
    }

    /// Stores a batch (parsed on every core, one fsync); outcomes in input order.
    pub fn store_many(
        &self,
        bufs: &[&[u8]],
        transfer_syntax: Option<&str>,
        prov: &Provenance,
    ) -> Vec<Outcome> {
        if let Some(reason) = self.refusal() {
            return bufs
                .iter()
                .map(|_| Outcome::rejected("", Rejection::OutOfResources, &reason))
                .collect();
        }
        let parsed = parse_all(bufs, transfer_syntax);
        let mut outcomes: Vec<Option<Outcome>> = vec![None; bufs.len()];
        let mut items: Vec<(usize, Item<'_>)> = Vec::new();
        for (i, result) in parsed.into_iter().enumerate() {
            match result {
                Ok(item) if item.layout.sop_instance_uid.is_empty() => {
                    outcomes[i] = Some(Outcome::rejected(
                        "",
                        Rejection::NoUid,
                        "no SOP Instance UID (0008,0018)",
                    ));
                }
                Ok(item) => items.push((i, item)),
                Err(e) => {
                    outcomes[i] = Some(Outcome::rejected(
                        "",
                        Rejection::Malformed,
                        format!("malformed: {e}"),
                    ));
                }
            }
        }
        let uids: Vec<String> = items
            .iter()
            .map(|(_, it)| it.layout.sop_instance_uid.clone())
            .collect();
        let _claim = self.claims.claim(uids.clone());
        for (i, outcome) in self.write(&items, &uids, prov) {
            outcomes[i] = Some(outcome);
        }
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::rejected("", Rejection::Malformed, "lost")))
            .collect()
    }

    /// Stores the Part 10 file at `path` (a C-STORE spooled to disk, an imported file of
    /// gigabytes) by the same rules as [`Writer::store`], in memory that does not grow with
    /// the instance: the header is parsed through a read-only mapping (the pixel pages are
    /// not touched) and the store reads the file as a stream ([`Store::put_file`]).
    pub fn store_file(&self, path: &Path, prov: &Provenance) -> Outcome {
        if let Some(reason) = self.refusal() {
            return Outcome::rejected("", Rejection::OutOfResources, &reason);
        }
        let map = match MappedFile::open(path) {
            Ok(m) => m,
            Err(e) => return Outcome::rejected("", Rejection::OutOfResources, e.to_string()),
        };
        let item = match parse_one(&map, None) {
            Ok(it) => it,
            Err(e) => {
                return Outcome::rejected("", Rejection::Malformed, format!("malformed: {e}"))
            }
        };
        let uid = item.layout.sop_instance_uid.clone();
        if uid.is_empty() {
            return Outcome::rejected("", Rejection::NoUid, "no SOP Instance UID (0008,0018)");
        }
        let uids = [uid.clone()];
        let _claim = self.claims.claim(uids.to_vec());
        let known = match self.known(&uids) {
            Ok(k) => k,
            Err(reason) => return Outcome::rejected(&uid, Rejection::OutOfResources, &reason),
        };
        let previous = match known.get(&uid) {
            None => None,
            Some(k) => {
                let same = conflict::same_file(&self.store, k, path);
                match self.decide(&uid, same, k) {
                    Plan::Done(o) => return o,
                    Plan::Write { previous } => previous,
                }
            }
        };
        let put = |_: &[(&[u8], Option<&InstanceLayout>)]| {
            self.store
                .put_file(path, Some(&item.layout), prov, true)
                .map(|stored| vec![stored])
        };
        self.commit(&[(0, &item, previous)], prov, put)
            .pop()
            .map_or_else(
                || Outcome::rejected(&uid, Rejection::Malformed, "lost"),
                |(_, o)| o,
            )
    }

    fn refusal(&self) -> Option<String> {
        self.refusal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Decides, stores and indexes the claimed items.
    fn write(
        &self,
        items: &[(usize, Item<'_>)],
        uids: &[String],
        prov: &Provenance,
    ) -> Vec<(usize, Outcome)> {
        let known = match self.known(uids) {
            Ok(k) => k,
            Err(reason) => {
                return items
                    .iter()
                    .zip(uids)
                    .map(|((i, _), uid)| {
                        (
                            *i,
                            Outcome::rejected(uid, Rejection::OutOfResources, &reason),
                        )
                    })
                    .collect()
            }
        };
        let mut done = Vec::new();
        let mut writes: Vec<(usize, &Item<'_>, Option<Location>)> = Vec::new();
        // An earlier item of this batch that will be written, by UID: later copies are
        // decided against its bytes.
        let mut in_batch: HashMap<&str, &[u8]> = HashMap::new();
        for ((i, item), uid) in items.iter().zip(uids) {
            let plan = match in_batch.get(uid.as_str()) {
                Some(earlier) if conflict::same_dataset(earlier, item.buf) => {
                    Plan::Done(Outcome::Identical {
                        uid: uid.clone(),
                        location: Location::default(),
                    })
                }
                Some(_) if self.on_conflict == OnConflict::KeepFirst => {
                    Plan::Done(Outcome::KeptFirst {
                        uid: uid.clone(),
                        location: Location::default(),
                    })
                }
                Some(_) => Plan::Write { previous: None },
                None => self.plan(uid, item.buf, known.get(uid)),
            };
            match plan {
                Plan::Done(o) => done.push((*i, o)),
                Plan::Write { previous } => {
                    in_batch.insert(uid.as_str(), item.buf);
                    writes.push((*i, item, previous));
                }
            }
        }
        let put = |batch: &[(&[u8], Option<&InstanceLayout>)]| {
            self.store.put_many_held(batch, prov, true)
        };
        done.extend(self.commit(&writes, prov, put));
        self.fill_batch_locations(&mut done);
        done
    }

    /// Pending rows first (not yet in the index), then the index.
    fn known(&self, uids: &[String]) -> std::result::Result<HashMap<String, Known>, String> {
        let mut out = HashMap::new();
        let mut ask = Vec::new();
        let filtered = self.seeded.load(Ordering::Acquire);
        for uid in uids {
            match self.pending.get(uid) {
                Some(k) => {
                    out.insert(uid.clone(), k);
                }
                None if filtered && !self.known_uids.may_contain(uid) => {}
                None => ask.push(uid.clone()),
            }
        }
        if !ask.is_empty() {
            let found = self
                .lookup
                .lookup(&ask)
                .map_err(|e| format!("index unavailable: {e}"))?;
            out.extend(found);
        }
        Ok(out)
    }

    /// The duplicate rule against the archived copy (see [`conflict`]).
    fn plan(&self, uid: &str, buf: &[u8], known: Option<&Known>) -> Plan {
        let Some(k) = known else {
            return Plan::Write { previous: None };
        };
        let same = Sha256::digest(buf).as_slice() == k.sha256
            || self
                .store
                .get(k.location)
                .is_ok_and(|stored| conflict::same_dataset(&stored, buf));
        self.decide(uid, same, k)
    }

    /// The rule once it is known whether the newcomer is the archived dataset.
    fn decide(&self, uid: &str, same: bool, k: &Known) -> Plan {
        if same {
            Plan::Done(Outcome::Identical {
                uid: uid.to_string(),
                location: k.location,
            })
        } else if self.on_conflict == OnConflict::KeepFirst {
            Plan::Done(Outcome::KeptFirst {
                uid: uid.to_string(),
                location: k.location,
            })
        } else {
            Plan::Write {
                previous: Some(k.location),
            }
        }
    }

    /// Durable store (held) by `put`, pending rows, settle, then tombstones for replaced
    /// records.
    fn commit<F>(
        &self,
        writes: &[(usize, &Item<'_>, Option<Location>)],
        prov: &Provenance,
        put: F,
    ) -> Vec<(usize, Outcome)>
    where
        F: FnOnce(&[(&[u8], Option<&InstanceLayout>)]) -> Result<Vec<(Location, [u8; 32])>>,
    {
        if writes.is_empty() {
            return Vec::new();
        }
        let batch: Vec<(&[u8], Option<&InstanceLayout>)> = writes
            .iter()
            .map(|(_, it, _)| (it.buf, Some(&it.layout)))
            .collect();
        let stored = match put(&batch) {
            Ok(s) => s,
            Err(e) => {
                let reason = store_reason(&e);
                return writes
                    .iter()
                    .map(|(i, it, _)| {
                        let uid = &it.layout.sop_instance_uid;
                        (
                            *i,
                            Outcome::rejected(uid, Rejection::OutOfResources, &reason),
                        )
                    })
                    .collect();
            }
        };
        let extras: Vec<Extra> = writes
            .iter()
            .zip(&stored)
            .map(|((_, it, _), (loc, sha))| Extra {
                transfer_syntax: Some(it.layout.transfer_syntax.clone()),
                pack: Some(loc.pack),
                offset: Some(loc.offset),
                length: Some(loc.length),
                sha256: Some(hex(sha)),
                size: Some(it.buf.len() as u64),
                received_at_us: i64::try_from(prov.received_at_us).ok(),
                source_ae: (!prov.source_ae.is_empty()).then(|| prov.source_ae.clone()),
            })
            .collect();
        let rows: Vec<_> = writes
            .iter()
            .zip(&stored)
            .zip(&extras)
            .map(|(((_, it, _), (loc, sha)), extra)| {
                let known = Known {
                    location: *loc,
                    sha256: *sha,
                };
                (
                    &it.parsed,
                    extra,
                    it.layout.sop_instance_uid.as_str(),
                    known,
                )
            })
            .collect();
        let locations: Vec<Location> = stored.iter().map(|(l, _)| *l).collect();
        self.known_uids.insert(
            writes
                .iter()
                .map(|(_, it, _)| it.layout.sop_instance_uid.as_str()),
        );
        if let Err(e) = self.pending.add(&rows) {
            // Durable but not findable now: left held, so the next opening indexes them.
            let reason = format!("stored, but the index row failed: {e}");
            return writes
                .iter()
                .map(|(i, it, _)| {
                    let uid = &it.layout.sop_instance_uid;
                    (
                        *i,
                        Outcome::rejected(uid, Rejection::OutOfResources, &reason),
                    )
                })
                .collect();
        }
        self.store.settle(&locations);
        writes
            .iter()
            .zip(locations)
            .map(|((i, it, previous), location)| {
                let uid = it.layout.sop_instance_uid.clone();
                let outcome = match previous {
                    Some(prev) => {
                        // The earlier record is dead now; a failed tombstone only leaves an
                        // orphan for `verify` and compaction to report.
                        let _ = self.store.delete(*prev);
                        Outcome::Replaced {
                            uid,
                            location,
                            previous: *prev,
                        }
                    }
                    None => Outcome::Stored { uid, location },
                };
                (*i, outcome)
            })
            .collect()
    }

    /// In-batch duplicates were decided before their first copy had a location.
    fn fill_batch_locations(&self, done: &mut [(usize, Outcome)]) {
        for (_, o) in done.iter_mut() {
            if let Outcome::Identical { uid, location } | Outcome::KeptFirst { uid, location } = o {
                if *location == Location::default() {
                    if let Some(k) = self.pending.get(uid) {
                        *location = k.location;
                    }
                }
            }
        }
    }

    /// A pending instance (stored, not yet confirmed by the index).
    pub fn pending(&self, uid: &str) -> Option<Known> {
        self.pending.get(uid)
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The next batch for the index with the store marks it covers (see [`Pending::drain`]).
    pub fn drain(&self) -> Result<Option<Drained>> {
        let marks = self.store.low_water();
        self.pending.drain(marks)
    }

    /// The index has committed the last drained batch.
    pub fn committed(&self) {
        self.pending.committed();
    }

    /// Waits for rows to commit (see [`Pending::wait`]).
    pub fn wait(&self, timeout: std::time::Duration) -> bool {
        self.pending.wait(timeout)
    }
}

fn store_reason(e: &crate::Error) -> String {
    if let crate::Error::Io { source, .. } = e {
        if source.raw_os_error() == Some(libc::ENOSPC) {
            return "disk full".into();
        }
    }
    format!("store failed: {e}")
}

/// Parses one instance: its index rows and its layout for the store.
fn parse_one<'a>(
    buf: &'a [u8],
    transfer_syntax: Option<&str>,
) -> std::result::Result<Item<'a>, crate::Error> {
    let opts = ParseOptions {
        transfer_syntax,
        stop_at_pixel_data: false,
    };
    let parsed = parse::parse(buf, opts)?;
    let layout = parse::layout_of(&parsed)?;
    Ok(Item {
        buf,
        parsed,
        layout,
    })
}

/// Parses every buffer (on every core for a batch).
fn parse_all<'a>(
    bufs: &[&'a [u8]],
    transfer_syntax: Option<&str>,
) -> Vec<std::result::Result<Item<'a>, crate::Error>> {
    let one = |buf: &'a [u8]| parse_one(buf, transfer_syntax);
    if bufs.len() < 4 {
        return bufs.iter().map(|b| one(b)).collect();
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = bufs.len().div_ceil(cores).max(1);
    std::thread::scope(|sc| {
        let handles: Vec<_> = bufs
            .chunks(per)
            .map(|part| {
                let n = part.len();
                (
                    n,
                    sc.spawn(move || part.iter().map(|b| one(b)).collect::<Vec<_>>()),
                )
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|(n, h)| {
                h.join().unwrap_or_else(|_| {
                    (0..n)
                        .map(|_| Err(crate::Error::parse(0, None, "parser thread panicked")))
                        .collect()
                })
            })
            .collect()
    })
}
