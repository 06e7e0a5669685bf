//! Storage layer, the store read as a log: what lies past the index's per-pack marks, and
//! how far a writer's records may be marked as indexed.
//!
//! The store is the source of truth and the index a view of it. The index records, per
//! pack, an offset below which every record has been applied (indexed, or deliberately
//! left out), in the same transaction as the rows. When the archive is opened for writing,
//! [`Store::tail`] returns every record past those marks so the index catches up before any
//! new work is accepted (docs/ARCHITECTURE.md, "Crash recovery").
//!
//! A writer whose records are indexed asynchronously (the DIMSE path: stored, then handed
//! to the index owner) appends them *held* and settles each one once the index owner has
//! taken it; [`Store::low_water`] never passes a held record, so a mark committed with a
//! batch can never skip a record that was durable but not yet handed over.

use std::collections::{HashMap, HashSet};

use super::format::{Kind, Location, PACK_HEADER_LEN, RECORD_HEADER_LEN};
use super::pack::{read_at, PackRead, Step, Walker};
use super::remote::Listed;
use super::{lock, record, Entry, Store};
use crate::error::{Error, Result};

/// The records past a set of per-pack marks (see [`Store::tail`]).
#[derive(Debug, Default)]
pub struct Tail {
    /// Instance records past the marks, in log order (pack, then offset), without those a
    /// tombstone past the marks deletes.
    pub instances: Vec<Entry>,
    /// Targets of the tombstones past the marks: the index must drop these locations.
    pub tombstoned: Vec<Location>,
    /// For every pack: the end of its last whole, checked record (the new mark).
    pub ends: Vec<(u64, u64)>,
    /// Records past the marks whose checksums fail (left out; `verify` reports them).
    pub damaged: u64,
}

impl Store {
    /// Every record past `since` (pack -> offset; a pack not in it is read from its start).
    ///
    /// Each record's whole-record checksum is checked before it is returned: a record torn
    /// by a crash is never handed to the index. A pack's walk stops at a torn tail.
    pub fn tail(&self, since: &HashMap<u64, u64>) -> Result<Tail> {
        self.tail_of(since, false)
    }

    /// [`Store::tail`] over the packs on this node's disk only (a backup copies files;
    /// packs evicted to object storage are kept by the bucket).
    pub fn tail_local(&self, since: &HashMap<u64, u64>) -> Result<Tail> {
        self.tail_of(since, true)
    }

    fn tail_of(&self, since: &HashMap<u64, u64>, local_only: bool) -> Result<Tail> {
        let mut tail = Tail::default();
        let uncommitted = super::compact::uncommitted(&self.packs_dir)?;
        for (pack, listed) in self.listing()? {
            if let Listed::Evicted(size) = listed {
                if local_only {
                    continue;
                }
                // Evicted only once indexed to its end: nothing past a mark there, and no
                // request to the bucket for it at every opening.
                if since.get(&pack).is_some_and(|&m| m >= size) {
                    tail.ends.push((pack, size));
                    continue;
                }
            }
            let Some((file, path)) = self.open_listed(pack, &listed)? else {
                continue; // removed since it was listed (a rewrite finished)
            };
            let until = uncommitted.get(&pack).copied().unwrap_or(u64::MAX);
            let size = file.size().map_err(|e| Error::io(&path, e))?;
            let start = since
                .get(&pack)
                .copied()
                .filter(|&m| m <= size)
                .unwrap_or(0)
                .max(PACK_HEADER_LEN as u64);
            let Ok(mut walker) = Walker::starting_at(&*file, &path, start) else {
                tail.damaged += 1;
                continue;
            };
            let mut end = start;
            while let Some(step) = walker.next_step()? {
                match step {
                    Step::Record { offset, .. } if offset >= until => break,
                    Step::Record { offset, header } => {
                        end = offset + header.record_len;
                        if !walker.trailer_ok(offset, &header)? {
                            tail.damaged += 1;
                            continue;
                        }
                        let n = RECORD_HEADER_LEN + header.meta_len as usize;
                        let head = read_at(&file, &path, offset, n)?;
                        let Ok(parsed) = record::parse_head(&head) else {
                            tail.damaged += 1;
                            continue;
                        };
                        let location = Location {
                            pack,
                            offset,
                            length: header.record_len,
                        };
                        match header.kind {
                            Kind::Instance => tail.instances.push(Entry {
                                location,
                                meta: parsed.meta,
                            }),
                            Kind::Tombstone => tail.tombstoned.push(parsed.meta.target),
                            Kind::Dictionary => {}
                        }
                    }
                    Step::Damaged { offset, len, .. } => {
                        tail.damaged += 1;
                        end = offset + len;
                    }
                    Step::Tail { .. } => break,
                }
            }
            tail.ends.push((pack, end));
        }
        let dead: HashSet<Location> = tail.tombstoned.iter().copied().collect();
        tail.instances.retain(|e| !dead.contains(&e.location));
        Ok(tail)
    }

    /// Per pack this writer appended to since it opened: the offset below which every
    /// record it wrote may be marked as indexed (the first held record, else the pack's
    /// end). Empty for a read-only store.
    pub fn low_water(&self) -> Vec<(u64, u64)> {
        let Some(w) = self.writer.as_ref() else {
            return Vec::new();
        };
        let st = lock(&w.state);
        st.ends
            .iter()
            .map(|(&pack, &end)| {
                let first_held = st
                    .held
                    .range((pack, 0)..(pack, u64::MAX))
                    .next()
                    .map(|&(_, offset)| offset);
                (pack, first_held.unwrap_or(end))
            })
            .collect()
    }

    /// Releases records appended held (see [`Store::put_held`]): the index owner has them.
    pub fn settle(&self, locations: &[Location]) {
        if let Some(w) = self.writer.as_ref() {
            let mut st = lock(&w.state);
            for l in locations {
                st.held.remove(&(l.pack, l.offset));
            }
        }
    }
}
