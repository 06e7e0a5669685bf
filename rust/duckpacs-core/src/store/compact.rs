//! Storage layer, compaction: rewrites sealed packs without their deleted records.
//!
//! Protocol (crash-safe; see docs/STORAGE-FORMAT.md "Compaction"), one victim pack at a time:
//! 1. write the journal `packs/compact-wWWWWW.journal` = `intent VICTIM OUTPUT` (durably);
//! 2. copy every live record of the victim unchanged into a new pack OUTPUT of this writer,
//!    plus tombstones for copies whose original was deleted meanwhile; fsync it;
//! 3. rewrite the journal as `commit VICTIM OUTPUT` (durably);
//! 4. delete the victim, fsync the folder, delete the journal.
//!
//! When the writer next opens, a journal in state `intent` means the output is incomplete:
//! it is deleted and the victim kept. In state `commit` the victim is deleted. Either way
//! no record is lost and none is left twice.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::format::{pack_header, Kind, Location, PACK_HEADER_LEN};
use super::{lock, lock_file, pack, record, sync_dir, CompactReport, Store};
use crate::error::{Error, Result};

fn journal_path(dir: &Path, writer: u32) -> PathBuf {
    dir.join(format!("compact-w{writer:05}.journal"))
}

pub(super) fn write_journal(
    dir: &Path,
    writer: u32,
    state: &str,
    victim: u64,
    output: u64,
) -> Result<()> {
    let path = journal_path(dir, writer);
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    writeln!(f, "{state} {victim} {output}").map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    sync_dir(dir)
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Finishes or undoes an interrupted compaction of this writer (called with its lock held).
pub(super) fn recover_journal(dir: &Path, writer: u32) -> Result<()> {
    let path = journal_path(dir, writer);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let parts: Vec<&str> = text.split_whitespace().collect();
    let parsed = match parts.as_slice() {
        [state, v, o] => v
            .parse::<u64>()
            .ok()
            .zip(o.parse::<u64>().ok())
            .map(|(v, o)| (*state, v, o)),
        _ => None,
    };
    let Some((state, victim, output)) = parsed else {
        return Err(Error::Store {
            path,
            offset: 0,
            message: "unreadable compaction journal; inspect it before removing it".into(),
        });
    };
    match state {
        "commit" => remove_if_exists(&dir.join(pack::pack_name(victim)))?,
        _ => remove_if_exists(&dir.join(pack::pack_name(output)))?,
    }
    sync_dir(dir)?;
    remove_if_exists(&path)?;
    sync_dir(dir)
}

impl Store {
    /// Rewrites every sealed pack whose dead share (deleted instances, spent tombstones) is
    /// at least `min_dead_ratio`. Returns the moves the index must apply.
    pub fn compact(
        &self,
        min_dead_ratio: f64,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<CompactReport> {
        let w = self.writer()?;
        let lock_path = self.packs_dir.join("compact.lock");
        let _guard = lock_file(&lock_path, true)?.ok_or(Error::Locked { path: lock_path })?;
        let mut rep = CompactReport::default();
        let packs = pack::list_packs(&self.packs_dir)?;
        let mut last_of: HashMap<u64, u64> = HashMap::new();
        for (p, _) in &packs {
            last_of.insert(p >> 32, *p);
        }
        let own_active = lock(&w.state).active.as_ref().map(|a| a.pack);
        let sealed = |p: u64| {
            Some(p) != own_active && !(last_of.get(&(p >> 32)) == Some(&p) && self.pack_active(p))
        };
        let mut by_pack: HashMap<u64, Vec<(Location, Kind, Location)>> = HashMap::new();
        let mut dead = HashSet::new();
        self.walk_all(|loc, h, meta| {
            let target = meta.map(|m| m.target).unwrap_or_default();
            if h.kind == Kind::Tombstone {
                dead.insert(target);
            }
            by_pack
                .entry(loc.pack)
                .or_default()
                .push((loc, h.kind, target));
            Ok(())
        })?;
        let existing: HashSet<u64> = packs.iter().map(|(p, _)| *p).collect();
        let victims: Vec<u64> = packs
            .iter()
            .map(|(p, _)| *p)
            .filter(|p| sealed(*p))
            .collect();
        let total = victims.len() as u64;
        let mut gone: HashSet<u64> = HashSet::new();
        for (i, victim) in victims.into_iter().enumerate() {
            progress(i as u64, total);
            let path = self.pack_path(victim);
            let size = std::fs::metadata(&path)
                .map_err(|e| Error::io(&path, e))?
                .len();
            let records = by_pack.remove(&victim).unwrap_or_default();
            let keep: Vec<(Location, Kind)> = records
                .iter()
                .filter(|(loc, kind, target)| match kind {
                    Kind::Instance => !dead.contains(loc),
                    Kind::Dictionary => true,
                    Kind::Tombstone => {
                        target.pack != victim
                            && existing.contains(&target.pack)
                            && !gone.contains(&target.pack)
                    }
                })
                .map(|(l, k, _)| (*l, *k))
                .collect();
            let live: u64 =
                keep.iter().map(|(l, _)| l.length).sum::<u64>() + PACK_HEADER_LEN as u64;
            if size == 0
                || ((size - live.min(size)) as f64) < min_dead_ratio * size as f64
                || live >= size
            {
                continue;
            }
            let moved = self.rewrite(w, victim, &keep)?;
            gone.insert(victim);
            rep.packs_rewritten += 1;
            rep.bytes_before += size;
            rep.bytes_after += live;
            rep.moved.extend(moved);
        }
        progress(total, total);
        Ok(rep)
    }

    /// Steps 1-4 of the protocol for one victim; returns the instance moves.
    fn rewrite(
        &self,
        w: &super::Writer,
        victim: u64,
        keep: &[(Location, Kind)],
    ) -> Result<Vec<(Location, Location)>> {
        let seq = {
            let mut st = lock(&w.state);
            let s = st.next_seq;
            st.next_seq = s.saturating_add(1);
            s
        };
        let output = pack::pack_id(w.id, seq);
        write_journal(&self.packs_dir, w.id, "intent", victim, output)?;
        let out_path = self.pack_path(output);
        let out = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&out_path)
            .map_err(|e| Error::io(&out_path, e))?;
        out.write_all_at(&pack_header(w.id, seq), 0)
            .map_err(|e| Error::io(&out_path, e))?;
        let mut end = PACK_HEADER_LEN as u64;
        let mut moved = Vec::new();
        for (loc, kind) in keep {
            let (bytes, _) = self.read_record(*loc)?;
            out.write_all_at(&bytes, end)
                .map_err(|e| Error::io(&out_path, e))?;
            let new = Location {
                pack: output,
                offset: end,
                length: loc.length,
            };
            end += loc.length;
            if *kind == Kind::Instance {
                moved.push((*loc, new));
            }
        }
        // Deletes that landed while copying: carry them over to the copies.
        let mut dead = HashSet::new();
        self.walk_all(|_, h, meta| {
            if let (Kind::Tombstone, Some(m)) = (h.kind, meta) {
                dead.insert(m.target);
            }
            Ok(())
        })?;
        for (old, new) in &moved {
            if dead.contains(old) {
                let victim_meta = self.read_head(*old)?.meta;
                let t = record::encode_tombstone(*new, &victim_meta);
                out.write_all_at(&t, end)
                    .map_err(|e| Error::io(&out_path, e))?;
                end += t.len() as u64;
            }
        }
        out.sync_all().map_err(|e| Error::io(&out_path, e))?;
        sync_dir(&self.packs_dir)?;
        write_journal(&self.packs_dir, w.id, "commit", victim, output)?;
        lock(&self.files).remove(&victim);
        remove_if_exists(&self.pack_path(victim))?;
        sync_dir(&self.packs_dir)?;
        remove_if_exists(&journal_path(&self.packs_dir, w.id))?;
        sync_dir(&self.packs_dir)?;
        Ok(moved)
    }
}
