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
use super::{lock, lock_file, pack, record, stream, sync_dir, CompactReport, Store};
use crate::error::{Error, Result};

pub(super) fn journal_path(dir: &Path, writer: u32) -> PathBuf {
    dir.join(format!("compact-w{writer:05}.journal"))
}

/// Writes the rewrite journal of `writer` durably: `STATE VICTIM OUTPUT`, plus `START`
/// when the output pack held records before this rewrite (densifying appends to one
/// output pack): undoing then cuts the output back to `START` instead of deleting it.
pub(super) fn write_journal(
    dir: &Path,
    writer: u32,
    state: &str,
    victim: u64,
    output: u64,
    start: Option<u64>,
) -> Result<()> {
    let path = journal_path(dir, writer);
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let line = match start {
        Some(s) => format!("{state} {victim} {output} {s}"),
        None => format!("{state} {victim} {output}"),
    };
    writeln!(f, "{line}").map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    sync_dir(dir)
}

pub(super) fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Removes the journal once its rewrite is complete.
pub(super) fn clear_journal(dir: &Path, writer: u32) -> Result<()> {
    remove_if_exists(&journal_path(dir, writer))?;
    sync_dir(dir)
}

/// A rewrite journal: state, victim, output, and the output's length before the rewrite.
type Journal = (String, u64, u64, Option<u64>);

fn parse_journal(text: &str) -> Option<Journal> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let num = |s: &str| s.parse::<u64>().ok();
    match parts.as_slice() {
        [state, v, o] => Some((state.to_string(), num(v)?, num(o)?, None)),
        [state, v, o, s] => Some((state.to_string(), num(v)?, num(o)?, Some(num(s)?))),
        _ => None,
    }
}

/// The writer ids with a rewrite journal in `dir`.
fn journal_writers(dir: &Path) -> Result<Vec<u32>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let id = name
            .to_str()
            .and_then(|n| n.strip_prefix("compact-w"))
            .and_then(|n| n.strip_suffix(".journal"))
            .and_then(|n| n.parse::<u32>().ok());
        ids.extend(id);
    }
    Ok(ids)
}

/// What readers must leave out while a rewrite is under way, so that no record is seen
/// twice: pack -> offset from which its records do not count. Before the commit, the
/// output's records from START (all of them without START); after it, the whole victim.
pub(super) fn uncommitted(dir: &Path) -> Result<HashMap<u64, u64>> {
    let mut out = HashMap::new();
    let header = PACK_HEADER_LEN as u64;
    for id in journal_writers(dir)? {
        let text = std::fs::read_to_string(journal_path(dir, id)).unwrap_or_default();
        match parse_journal(&text) {
            Some((state, victim, _, _)) if state == "commit" => {
                out.insert(victim, header);
            }
            Some((_, _, output, start)) => {
                out.insert(output, start.unwrap_or(0).max(header));
            }
            None => {}
        }
    }
    Ok(out)
}

/// Finishes or undoes an interrupted rewrite of this writer (called with its lock held).
pub(super) fn recover_journal(dir: &Path, writer: u32) -> Result<()> {
    let path = journal_path(dir, writer);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let Some((state, victim, output, start)) = parse_journal(&text) else {
        return Err(Error::Store {
            path,
            offset: 0,
            message: "unreadable compaction journal; inspect it before removing it".into(),
        });
    };
    match (state.as_str(), start) {
        ("commit", _) => remove_if_exists(&dir.join(pack::pack_name(victim)))?,
        (_, Some(s)) if s > PACK_HEADER_LEN as u64 => {
            // The output held earlier records: cut off what this rewrite had added.
            let out = dir.join(pack::pack_name(output));
            match OpenOptions::new().write(true).open(&out) {
                Ok(f) => {
                    f.set_len(s).map_err(|e| Error::io(&out, e))?;
                    f.sync_all().map_err(|e| Error::io(&out, e))?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&out, e)),
            }
        }
        _ => remove_if_exists(&dir.join(pack::pack_name(output)))?,
    }
    sync_dir(dir)?;
    remove_if_exists(&path)?;
    sync_dir(dir)
}

/// Recovers the journals of writers whose process is gone (their lock is free), whoever
/// opens the store: a reader must not find both a victim and its copy. `own` is this
/// process's writer, recovered when it opened. A lock that cannot be taken (a read-only
/// folder) leaves the journal to its writer.
pub(super) fn recover_dead_journals(dir: &Path, own: Option<u32>) -> Result<()> {
    for id in journal_writers(dir)? {
        if Some(id) == own {
            continue;
        }
        if let Ok(Some(_lock)) = lock_file(&dir.join(format!("w{id:05}.lock")), true) {
            recover_journal(dir, id)?;
        }
    }
    Ok(())
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
        write_journal(&self.packs_dir, w.id, "intent", victim, output, None)?;
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
        let src_path = self.pack_path(victim);
        let src = self.local_file(victim)?;
        for (loc, kind) in keep {
            // Checked, then copied a piece at a time: a record may be gigabytes.
            if !stream::trailer_holds(&src, &src_path, loc.offset, loc.length)? {
                return Err(pack::integrity(
                    &src_path,
                    loc.offset,
                    "record checksum mismatch",
                ));
            }
            stream::copy_range(
                (&src, &src_path, loc.offset),
                (&out, &out_path, end),
                loc.length,
            )?;
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
        write_journal(&self.packs_dir, w.id, "commit", victim, output, None)?;
        self.add_moves(&moved);
        lock(&self.files).remove(&victim);
        remove_if_exists(&self.pack_path(victim))?;
        sync_dir(&self.packs_dir)?;
        clear_journal(&self.packs_dir, w.id)?;
        Ok(moved)
    }
}
