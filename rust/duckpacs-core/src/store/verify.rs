//! Storage layer, verification and statistics: every checksum, optionally every instance
//! rebuilt and compared with its SHA-256; sizes of what the store holds.

use std::collections::{HashMap, HashSet};

use super::format::{self as record_format, *};
use super::pack::{self, integrity, Step, Walker};
use super::*;
use crate::error::{Error, Result};

/// An error's message without the path and offset the damage report already gives.
fn plain(e: Error) -> String {
    match e {
        Error::Integrity { message, .. } => message,
        other => other.to_string(),
    }
}

fn read_into<F: super::pack::PackRead + ?Sized>(
    f: &F,
    path: &std::path::Path,
    offset: u64,
    buf: &mut [u8],
) -> Result<()> {
    f.read_exact_at(buf, offset).map_err(|e| Error::io(path, e))
}

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
    /// Live instances still in the arrival encoding (densifying rewrites them), their
    /// original and stored bytes.
    pub arrival_instances: u64,
    pub arrival_raw_bytes: u64,
    pub arrival_stored_bytes: u64,
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
        let uncommitted = super::compact::uncommitted(&self.packs_dir)?;
        for (pack, path) in packs {
            let Some(file) = super::read::open_pack(&path)? else {
                continue; // removed since it was listed (a rewrite finished)
            };
            rep.packs += 1;
            let pack_start = done;
            let until = uncommitted.get(&pack).copied().unwrap_or(u64::MAX);
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
                    // Written by a rewrite under way, not committed: not part of the store.
                    Step::Record { offset, .. }
                    | Step::Damaged { offset, .. }
                    | Step::Tail { offset, .. }
                        if offset >= until =>
                    {
                        break;
                    }
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
        let p = match self.read_head(loc) {
            Ok(p) => p,
            Err(e) => return Err((String::new(), e.to_string())),
        };
        let uid = p.meta.sop_instance_uid.clone();
        self.check_sums(loc, &p.meta)
            .map_err(|e| (uid.clone(), plain(e)))?;
        if deep && p.header.kind == Kind::Instance {
            // Rebuilt a chunk at a time: a record may be gigabytes.
            let rebuilt = self.open_instance(loc).and_then(|mut r| {
                while r.next_piece()?.is_some() {}
                Ok(())
            });
            rebuilt.map_err(|e| (uid, plain(e)))?;
        }
        Ok(())
    }

    /// Checks the trailer and every chunk's xxh3 in one sequential read of the record, a
    /// piece at a time.
    fn check_sums(&self, loc: Location, meta: &Meta) -> Result<()> {
        let path = self.pack_path(loc.pack);
        let f = self.file(loc.pack)?;
        let body = loc.length.saturating_sub(TRAILER_LEN as u64);
        // Chunks in the order their bytes appear (a streamed record writes chunk 0 last).
        let mut order: Vec<&record_format::Chunk> = meta.chunks.iter().collect();
        order.sort_by_key(|c| c.offset);
        let mut next = 0usize;
        let mut current: Option<xxhash_rust::xxh3::Xxh3Default> = None;
        let mut whole = xxhash_rust::xxh3::Xxh3Default::new();
        let mut buf = vec![0u8; stream::PIECE.min(body as usize)];
        let mut at = 0u64;
        while at < body {
            let n = stream::PIECE.min((body - at) as usize);
            read_into(&f, &path, loc.offset + at, &mut buf[..n])?;
            whole.update(&buf[..n]);
            let (p0, p1) = (at, at + n as u64);
            while let Some(c) = order.get(next) {
                let (c0, c1) = (c.offset, c.offset + c.stored_len);
                if c0 >= p1 {
                    break;
                }
                let h = current.get_or_insert_with(xxhash_rust::xxh3::Xxh3Default::new);
                let (s0, s1) = (c0.max(p0), c1.min(p1));
                if s1 > s0 {
                    h.update(&buf[(s0 - p0) as usize..(s1 - p0) as usize]);
                }
                if c1 > p1 {
                    break;
                }
                if h.digest() != c.xxh3 {
                    let m = format!("chunk at record offset {} fails its checksum", c.offset);
                    return Err(integrity(&path, loc.offset, m));
                }
                current = None;
                next += 1;
            }
            at = p1;
        }
        let t = pack::read_at(&f, &path, loc.offset + body, TRAILER_LEN)?;
        let mut want = [0u8; 8];
        want.copy_from_slice(&t[8..]);
        if t[..8] != TRAILER_MAGIC || whole.digest() != u64::from_le_bytes(want) {
            return Err(integrity(&path, loc.offset, "record checksum mismatch"));
        }
        Ok(())
    }

    /// Sizes of the store: live instances, raw and stored bytes, split header / pixels.
    pub fn stats(&self) -> Result<Stats> {
        let mut s = Stats::default();
        let mut instances: HashMap<Location, (u64, u64, bool)> = HashMap::new();
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
                    let arrival = h.flags & RECORD_FLAG_ARRIVAL != 0;
                    instances.insert(loc, (m.original_len, loc.length, arrival));
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
        for (loc, (raw, stored, arrival)) in instances {
            if dead.contains(&loc) {
                s.deleted_instances += 1;
                s.dead_bytes += stored;
                continue;
            }
            if arrival {
                s.arrival_instances += 1;
                s.arrival_raw_bytes += raw;
                s.arrival_stored_bytes += stored;
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
