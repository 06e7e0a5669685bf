//! Storage layer, verification and statistics: every checksum, optionally every instance
//! rebuilt and compared with its SHA-256; sizes of what the store holds.

use std::collections::{HashMap, HashSet};
use std::fs::File;

use super::format::*;
use super::pack::{self, Step, Walker};
use super::record::{self};
use super::*;
use crate::error::{Error, Result};

/// Damage found by [`Store::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub pack: u64,
    pub offset: u64,
    pub length: u64,
    /// SOP Instance UID when the record's metadata could still be read.
    pub sop_instance_uid: String,
    pub message: String,
}

/// Result of [`Store::verify`].
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub packs: u64,
    pub records: u64,
    pub instances: u64,
    pub bytes: u64,
    pub damaged: Vec<Damage>,
}

/// Result of [`Store::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub packs: u64,
    pub pack_bytes: u64,
    pub instances: u64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub header_raw: u64,
    pub header_stored: u64,
    pub pixel_raw: u64,
    pub pixel_stored: u64,
    pub tombstones: u64,
    pub deleted_instances: u64,
    pub dead_bytes: u64,
    pub dictionaries: u64,
    pub dictionary_bytes: u64,
}

impl Store {
    /// Whether the writer owning `pack` is alive (its lock is held by some process).
    pub(super) fn pack_active(&self, pack: u64) -> bool {
        if self
            .writer
            .as_ref()
            .is_some_and(|w| u64::from(w.id) == pack >> 32)
        {
            return true;
        }
        let lock_path = self.packs_dir.join(format!("w{:05}.lock", pack >> 32));
        lock_path.exists() && matches!(lock_file(&lock_path, true), Ok(None))
    }

    /// Checks every record's checksums; with `deep`, rebuilds every instance and compares
    /// its SHA-256. `progress` is called with (bytes done, bytes total).
    pub fn verify(&self, deep: bool, mut progress: impl FnMut(u64, u64)) -> Result<VerifyReport> {
        let packs = pack::list_packs(&self.packs_dir)?;
        let total: u64 = packs
            .iter()
            .filter_map(|(_, p)| p.metadata().ok())
            .map(|m| m.len())
            .sum();
        let mut rep = VerifyReport::default();
        let mut done = 0u64;
        for (pack, path) in packs {
            rep.packs += 1;
            let pack_start = done;
            let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
            let size = file.metadata().map_err(|e| Error::io(&path, e))?.len();
            let damage = |offset: u64, length: u64, uid: &str, message: String| Damage {
                pack,
                offset,
                length,
                sop_instance_uid: uid.to_string(),
                message,
            };
            let mut walker = match Walker::new(&file, &path) {
                Ok(w) => w,
                Err(e) => {
                    rep.damaged
                        .push(damage(0, size, "", format!("pack header: {e}")));
                    done += size;
                    continue;
                }
            };
            while let Some(step) = walker.next_step()? {
                match step {
                    Step::Record { offset, header } => {
                        rep.records += 1;
                        rep.bytes += header.record_len;
                        let loc = Location {
                            pack,
                            offset,
                            length: header.record_len,
                        };
                        if let Err((uid, m)) = self.verify_record(loc, deep) {
                            rep.damaged.push(damage(offset, header.record_len, &uid, m));
                        } else if header.kind == Kind::Instance {
                            rep.instances += 1;
                        }
                        done += header.record_len;
                    }
                    Step::Damaged {
                        offset,
                        len,
                        message,
                    } => {
                        rep.damaged.push(damage(
                            offset,
                            len,
                            "",
                            format!("unreadable bytes: {message}"),
                        ));
                        done += len;
                    }
                    Step::Tail { offset, len } => {
                        if !self.pack_active(pack) {
                            rep.damaged.push(damage(
                                offset,
                                len,
                                "",
                                "torn or damaged tail".into(),
                            ));
                        }
                        done += len;
                    }
                }
                progress(done, total);
            }
            // Records do not cover the pack header: count the whole file as done, so that the
            // last report is (total, total) and a progress display reaches 100 %.
            done = pack_start + size;
            progress(done, total);
        }
        Ok(rep)
    }

    pub(super) fn verify_record(
        &self,
        loc: Location,
        deep: bool,
    ) -> std::result::Result<(), (String, String)> {
        let (rec, p) = match self.read_record(loc) {
            Ok(r) => r,
            Err(e) => {
                let uid = self.read_head(loc).map(|p| p.meta.sop_instance_uid);
                let uid = uid.unwrap_or_default();
                return Err((uid, e.to_string()));
            }
        };
        let uid = p.meta.sop_instance_uid.clone();
        for c in &p.meta.chunks {
            let ok =
                record::chunk_bytes(&rec, c).is_ok_and(|b| xxhash_rust::xxh3::xxh3_64(b) == c.xxh3);
            if !ok {
                return Err((
                    uid,
                    format!("chunk at record offset {} fails its checksum", c.offset),
                ));
            }
        }
        if deep && p.header.kind == Kind::Instance {
            self.rebuild(loc, &rec, &p, true)
                .map_err(|e| (uid, e.to_string()))?;
        }
        Ok(())
    }

    /// Sizes of the store: live instances, raw and stored bytes, split header / pixels.
    pub fn stats(&self) -> Result<Stats> {
        let mut s = Stats::default();
        let mut instances: HashMap<Location, (u64, u64)> = HashMap::new();
        let mut dead = HashSet::new();
        let packs = pack::list_packs(&self.packs_dir)?;
        s.packs = packs.len() as u64;
        s.pack_bytes = packs
            .iter()
            .filter_map(|(_, p)| p.metadata().ok())
            .map(|m| m.len())
            .sum();
        let mut per: HashMap<Location, [u64; 4]> = HashMap::new();
        self.walk_all(|loc, h, meta| {
            let Some(m) = meta else { return Ok(()) };
            match h.kind {
                Kind::Instance => {
                    let hs = m.chunks.first().map_or(0, |c| c.stored_len);
                    let ps: u64 = m.chunks.iter().skip(1).map(|c| c.stored_len).sum();
                    let pr: u64 = m.chunks.iter().skip(1).map(|c| c.raw_len).sum();
                    instances.insert(loc, (m.original_len, loc.length));
                    per.insert(loc, [m.original_len - pr, hs, pr, ps]);
                }
                Kind::Tombstone => {
                    s.tombstones += 1;
                    s.dead_bytes += loc.length;
                    dead.insert(m.target);
                }
                Kind::Dictionary => {
                    s.dictionaries += 1;
                    s.dictionary_bytes += loc.length;
                }
            }
            Ok(())
        })?;
        for (loc, (raw, stored)) in instances {
            if dead.contains(&loc) {
                s.deleted_instances += 1;
                s.dead_bytes += stored;
                continue;
            }
            s.instances += 1;
            s.raw_bytes += raw;
            s.stored_bytes += stored;
            if let Some(p) = per.get(&loc) {
                s.header_raw += p[0];
                s.header_stored += p[1];
                s.pixel_raw += p[2];
                s.pixel_stored += p[3];
            }
        }
        Ok(s)
    }
}
