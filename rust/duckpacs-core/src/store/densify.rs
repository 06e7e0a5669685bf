//! Storage layer, densifying: records still in the arrival encoding are rewritten in the
//! dense one (MED + zstd), a sealed pack at a time, crash-safe like compaction.
//!
//! Protocol, per victim pack (docs/STORAGE-FORMAT.md, "Densifying"):
//! 1. the journal of writer [`DENSIFY_WRITER`] says `intent VICTIM OUTPUT START` (durably);
//!    OUTPUT is that writer's pack receiving the dense copies, START its length before;
//! 2. every live record of the victim is appended to OUTPUT: arrival instances re-encoded a
//!    chunk at a time (their original checked against its SHA-256 on the way), the others
//!    copied; a little per [`Store::densify_step`], so the work yields to arrivals;
//! 3. with deletes held off, tombstones for copies whose original was deleted meanwhile;
//!    OUTPUT is synced and the journal says `commit`;
//! 4. the victim is deleted and the journal removed. The moves go to the caller, whose
//!    index must follow them; the new records stay held below the low-water mark until
//!    the caller settles them, so a crash before the index followed is repaired at the
//!    next opening (the records are past the index's marks and re-point its rows).
//!
//! A crash during 1-3 cuts OUTPUT back to START at the next opening (the victim is intact);
//! after 3 the victim is deleted. Either way nothing is lost and nothing is left twice.
//!
//! What the store holds is learnt by reading record heads incrementally (per-pack marks,
//! like the index's), a bounded number per step, so the first step on a large archive does
//! not read every head at once.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::compact;
use super::format::*;
use super::pack::{self, integrity, read_at, Step, Walker};
use super::record::{self, Densified};
use super::stream::{self, RecordOut};
use super::*;
use crate::error::{Error, Result};

/// Writer id of the packs that receive densified records.
pub const DENSIFY_WRITER: u32 = 0xFFFD;

/// Record heads read per step while learning what the store holds.
const SCAN_PER_STEP: usize = 50_000;

/// What one [`Store::densify_step`] did.
#[derive(Debug, Clone, Default)]
pub struct DensifyReport {
    /// Record bytes read from victims and written to the output.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Arrival records rewritten dense (finished in this step).
    pub densified: u64,
    /// Record heads read while learning the store.
    pub scanned: u64,
    /// Instances moved by the pack finished in this step, (old, new): the index must follow
    /// them, then the caller settles [`DensifyReport::settle`].
    pub moved: Vec<(Location, Location)>,
    pub settle: Vec<Location>,
    /// Victim packs finished in this step.
    pub packs: u64,
    /// Stored bytes of arrival records still waiting (as far as the store has been read).
    pub pending_bytes: u64,
    /// Packs left alone because they hold damage (`verify` reports it): (pack, reason).
    pub skipped: Vec<(u64, String)>,
    /// Nothing is left to densify.
    pub done: bool,
}

/// What the densifier knows of the store, read incrementally.
#[derive(Default)]
struct Scan {
    /// How far each pack has been read.
    marks: HashMap<u64, u64>,
    /// Per pack: arrival instance records (live or not) and their bytes.
    arrival: HashMap<u64, (u64, u64)>,
    /// Targets of every tombstone seen.
    dead: HashSet<Location>,
    /// Where each dictionary record is.
    dicts: HashMap<u64, Location>,
    /// Every pack has been read to its end once.
    complete: bool,
}

/// One record of a victim to carry over.
#[derive(Debug, Clone, Copy)]
struct Item {
    loc: Location,
    kind: Kind,
    arrival: bool,
    dict_id: u64,
}

/// An arrival record being re-encoded, possibly across steps.
struct Partial {
    old: Location,
    meta: Meta,
    flags: u8,
    out: RecordOut,
    next_chunk: usize,
    check: PlanCheck,
}

/// The original, rebuilt from the decoded chunks in plan order, against its SHA-256: a
/// record is only rewritten once its arrival chunks are proved to give the original back.
struct PlanCheck {
    header: Vec<u8>,
    header_at: usize,
    plan_at: usize,
    sha: Sha256,
}

impl PlanCheck {
    fn headers_until_chunk(&mut self, meta: &Meta) -> std::result::Result<(), String> {
        while let Some(Piece::Header(n)) = meta.plan.get(self.plan_at) {
            let end = self
                .header_at
                .checked_add(*n as usize)
                .filter(|&e| e <= self.header.len())
                .ok_or("plan reads past the header stream")?;
            self.sha.update(&self.header[self.header_at..end]);
            self.header_at = end;
            self.plan_at += 1;
        }
        Ok(())
    }

    fn chunk(&mut self, meta: &Meta, i: usize, raw: &[u8]) -> std::result::Result<(), String> {
        self.headers_until_chunk(meta)?;
        match meta.plan.get(self.plan_at) {
            Some(Piece::Chunk(k)) if *k as usize == i => {
                self.sha.update(raw);
                self.plan_at += 1;
                Ok(())
            }
            _ => Err(format!("plan does not take chunk {i} next")),
        }
    }

    fn finish(mut self, meta: &Meta) -> std::result::Result<(), String> {
        self.headers_until_chunk(meta)?;
        if self.plan_at != meta.plan.len() || self.sha.finalize()[..] != meta.sha256[..] {
            return Err("arrival chunks do not rebuild the original (SHA-256)".into());
        }
        Ok(())
    }
}

/// A victim being rewritten.
struct Job {
    victim: u64,
    src: Arc<File>,
    src_path: PathBuf,
    output: u64,
    out: Arc<File>,
    out_path: PathBuf,
    start: u64,
    end: u64,
    items: Vec<Item>,
    next: usize,
    partial: Option<Partial>,
    /// Every record carried so far: (old, new, kind).
    moved: Vec<(Location, Location, Kind)>,
    /// Dictionaries carried so far: id -> new location.
    dicts: HashMap<u64, Location>,
}

/// The densifier of one store: its output writer, what it knows, the job under way.
pub(super) struct Densifier {
    out: Writer,
    scan: Scan,
    job: Option<Job>,
    /// Packs left alone (damage found while densifying them).
    skip: HashSet<u64>,
}

/// A failure that concerns the victim's bytes (skip the pack) rather than this process
/// (retry later).
fn is_damage(e: &Error) -> bool {
    matches!(e, Error::Integrity { .. })
}

impl Store {
    /// Does up to about `budget` bytes of densifying work (reading what the store holds
    /// first), encoding on `threads` threads; see the module docs. Needs a writer id: the
    /// new records are held below its low-water mark until [`Store::settle`].
    pub fn densify_step(&self, budget: u64, threads: usize) -> Result<DensifyReport> {
        self.writer()?;
        let mut guard = lock(&self.densifier);
        if guard.is_none() {
            *guard = Some(Densifier {
                out: Self::open_writer(&self.packs_dir, DENSIFY_WRITER)?,
                scan: Scan::default(),
                job: None,
                skip: HashSet::new(),
            });
        }
        let Some(d) = guard.as_mut() else {
            return Err(self.panicked());
        };
        let mut rep = DensifyReport::default();
        if d.job.is_none() {
            rep.scanned = self.learn_store(d, SCAN_PER_STEP, None)?;
            if d.scan.complete {
                if let Some(victim) = self.pick_victim(d)? {
                    if let Err(e) = self.start_job(d, victim) {
                        self.give_up(d, victim, e, &mut rep)?;
                    }
                }
            }
        }
        if let Some(victim) = d.job.as_ref().map(|j| j.victim) {
            let worked = self
                .work(d, budget, threads.max(1), &mut rep)
                .and_then(|all| {
                    if all {
                        self.finish_job(d, &mut rep)
                    } else {
                        Ok(())
                    }
                });
            if let Err(e) = worked {
                self.give_up(d, victim, e, &mut rep)?;
            }
        }
        rep.pending_bytes = d
            .scan
            .arrival
            .iter()
            .filter(|(p, _)| !d.skip.contains(p))
            .map(|(_, (_, b))| b)
            .sum();
        rep.done = d.scan.complete && d.job.is_none() && rep.pending_bytes == 0;
        Ok(rep)
    }

    /// Abandons the job: the output is cut back (nothing of it was acknowledged). Damage
    /// in the victim leaves that pack alone from now on; any other error is returned.
    fn give_up(
        &self,
        d: &mut Densifier,
        victim: u64,
        e: Error,
        rep: &mut DensifyReport,
    ) -> Result<()> {
        if let Some(job) = d.job.take() {
            let cut = job.out.set_len(job.start).and_then(|()| job.out.sync_all());
            cut.map_err(|err| Error::io(&job.out_path, err))?;
            compact::clear_journal(&self.packs_dir, DENSIFY_WRITER)?;
        }
        if is_damage(&e) {
            d.skip.insert(victim);
            rep.skipped.push((victim, e.to_string()));
            Ok(())
        } else {
            Err(e)
        }
    }

    /// Reads record heads past the scan's marks, at most `limit` of them.
    fn learn_store(&self, d: &mut Densifier, limit: usize, leave: Option<u64>) -> Result<u64> {
        let packs = pack::list_packs(&self.packs_dir)?;
        let existing: HashSet<u64> = packs.iter().map(|(p, _)| *p).collect();
        let scan = &mut d.scan;
        scan.marks.retain(|p, _| existing.contains(p));
        scan.arrival.retain(|p, _| existing.contains(p));
        let mut read = 0u64;
        for (pack, path) in packs {
            if Some(pack) == leave {
                continue;
            }
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&path, e)),
            };
            let size = file.metadata().map_err(|e| Error::io(&path, e))?.len();
            let from = scan
                .marks
                .get(&pack)
                .copied()
                .unwrap_or(PACK_HEADER_LEN as u64);
            if size <= from {
                continue;
            }
            let Ok(mut walker) = Walker::starting_at(&file, &path, from) else {
                d.skip.insert(pack);
                scan.marks.insert(pack, size);
                continue;
            };
            while let Some(step) = walker.next_step()? {
                match step {
                    Step::Record { offset, header } => {
                        let n = RECORD_HEADER_LEN + header.meta_len as usize;
                        let head = read_at(&file, &path, offset, n)?;
                        let loc = Location {
                            pack,
                            offset,
                            length: header.record_len,
                        };
                        match record::parse_head(&head) {
                            Ok(p) => Self::note(scan, loc, &p),
                            // Still being written by its live writer: read it next time.
                            Err(_) if self.pack_active(pack) => break,
                            Err(_) => {
                                d.skip.insert(pack);
                            }
                        }
                        scan.marks.insert(pack, offset + header.record_len);
                        read += 1;
                    }
                    Step::Damaged { offset, len, .. } => {
                        d.skip.insert(pack);
                        scan.marks.insert(pack, offset + len);
                    }
                    Step::Tail { .. } => break,
                }
                if read as usize >= limit {
                    return Ok(read);
                }
            }
        }
        scan.complete = true;
        Ok(read)
    }

    fn note(scan: &mut Scan, loc: Location, p: &record::Parsed) {
        match p.header.kind {
            Kind::Instance if p.header.flags & RECORD_FLAG_ARRIVAL != 0 => {
                let e = scan.arrival.entry(loc.pack).or_default();
                e.0 += 1;
                e.1 += loc.length;
            }
            Kind::Instance => {}
            Kind::Tombstone => {
                scan.dead.insert(p.meta.target);
            }
            Kind::Dictionary => {
                scan.dicts.insert(p.meta.dict_id, loc);
            }
        }
    }

    /// The oldest pack with arrival records that nobody appends to any more and whose
    /// records the index has all been told about (none held). This process's own active
    /// pack is sealed for it when it is the last one left.
    fn pick_victim(&self, d: &Densifier) -> Result<Option<u64>> {
        let main = self.writer()?;
        let packs = pack::list_packs(&self.packs_dir)?;
        let mut last_of: HashMap<u64, u64> = HashMap::new();
        for (p, _) in &packs {
            last_of.insert(p >> 32, *p);
        }
        let mut candidates: Vec<u64> = d
            .scan
            .arrival
            .iter()
            .filter(|(p, (n, _))| *n > 0 && !d.skip.contains(p))
            .map(|(p, _)| *p)
            .collect();
        candidates.sort_unstable();
        let mut own_active = None;
        for p in candidates {
            let writer = p >> 32;
            if writer == u64::from(DENSIFY_WRITER) {
                continue;
            }
            if writer == u64::from(main.id) {
                let st = lock(&main.state);
                let held = st.held.range((p, 0)..(p, u64::MAX)).next().is_some();
                if st.active.as_ref().is_some_and(|a| a.pack == p) {
                    own_active = Some(p);
                } else if !held {
                    return Ok(Some(p));
                }
                continue;
            }
            if !(last_of.get(&writer) == Some(&p) && self.pack_active(p)) {
                return Ok(Some(p));
            }
        }
        let Some(p) = own_active else {
            return Ok(None);
        };
        // Seal our own pack only when all its records are settled, in one step under the
        // writer's lock, so no held record can slip in between.
        let mut st = lock(&main.state);
        let held = st.held.range((p, 0)..(p, u64::MAX)).next().is_some();
        if held || !matches!(&st.active, Some(a) if a.pack == p) {
            return Ok(None);
        }
        if let Some(old) = st.active.take() {
            if self.opts.sync {
                old.file.sync_data().map_err(|e| Error::io(&old.path, e))?;
            }
        }
        Ok(Some(p))
    }

    /// Lists the victim's live records and writes the intent to the journal.
    fn start_job(&self, d: &mut Densifier, victim: u64) -> Result<()> {
        let src_path = self.pack_path(victim);
        let src = self.local_file(victim)?;
        let size = src.metadata().map_err(|e| Error::io(&src_path, e))?.len();
        let existing: HashSet<u64> = pack::list_packs(&self.packs_dir)?
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        let mut items = Vec::new();
        let mut walker = Walker::new(&src, &src_path)?;
        while let Some(step) = walker.next_step()? {
            let Step::Record { offset, header } = step else {
                return Err(integrity(&src_path, 0, "the pack holds damaged bytes"));
            };
            let n = RECORD_HEADER_LEN + header.meta_len as usize;
            let head = read_at(&src, &src_path, offset, n)?;
            let p = record::parse_head(&head).map_err(|m| integrity(&src_path, offset, m))?;
            let loc = Location {
                pack: victim,
                offset,
                length: header.record_len,
            };
            let keep = match header.kind {
                Kind::Instance => !d.scan.dead.contains(&loc),
                Kind::Dictionary => true,
                Kind::Tombstone => {
                    p.meta.target.pack != victim && existing.contains(&p.meta.target.pack)
                }
            };
            if keep {
                items.push(Item {
                    loc,
                    kind: header.kind,
                    arrival: header.kind == Kind::Instance
                        && header.flags & RECORD_FLAG_ARRIVAL != 0,
                    dict_id: p.meta.dict_id,
                });
            }
        }
        let (output, out, out_path, start) = {
            let mut st = lock(&d.out.state);
            let roll = match &st.active {
                None => true,
                Some(a) => a.end > PACK_HEADER_LEN as u64 && a.end + size > self.opts.pack_size,
            };
            if roll {
                self.new_pack(&d.out, &mut st)?;
            }
            let Some(a) = st.active.as_ref() else {
                return Err(self.panicked());
            };
            (a.pack, a.file.clone(), a.path.clone(), a.end)
        };
        compact::write_journal(
            &self.packs_dir,
            DENSIFY_WRITER,
            "intent",
            victim,
            output,
            Some(start),
        )?;
        d.job = Some(Job {
            victim,
            src,
            src_path,
            output,
            out,
            out_path,
            start,
            end: start,
            items,
            next: 0,
            partial: None,
            moved: Vec::new(),
            dicts: HashMap::new(),
        });
        Ok(())
    }

    /// Carries records until `budget` bytes were read; true once the victim is all done.
    fn work(
        &self,
        d: &mut Densifier,
        budget: u64,
        threads: usize,
        rep: &mut DensifyReport,
    ) -> Result<bool> {
        let Densifier { scan, job, .. } = d;
        let Some(job) = job.as_mut() else {
            return Ok(true);
        };
        let mut spent = 0u64;
        while spent < budget {
            if let Some(mut p) = job.partial.take() {
                spent += self.densify_chunks(job, &mut p, budget - spent, threads)?;
                if p.next_chunk < p.meta.chunks.len() {
                    job.partial = Some(p);
                    continue;
                }
                p.check
                    .finish(&p.meta)
                    .map_err(|m| integrity(&job.src_path, p.old.offset, m))?;
                let base = p.out.base();
                let len =
                    p.out
                        .finish(&job.out, &job.out_path, Kind::Instance, p.flags, &p.meta)?;
                let new = Location {
                    pack: job.output,
                    offset: base,
                    length: len,
                };
                job.moved.push((p.old, new, Kind::Instance));
                job.end = base + len;
                rep.bytes_out += len;
                rep.densified += 1;
                continue;
            }
            let Some(item) = job.items.get(job.next).copied() else {
                break;
            };
            job.next += 1;
            if item.arrival {
                job.partial = Some(self.begin_record(job, scan, item)?);
                spent += RECORD_HEADER_LEN as u64;
            } else {
                let new = self.copy_record(job, scan, item)?;
                spent += item.loc.length;
                rep.bytes_out += new.length;
            }
        }
        rep.bytes_in += spent;
        Ok(job.partial.is_none() && job.next >= job.items.len())
    }

    /// Where dictionary `id` is now: carried by this job, or where the scan saw it.
    fn dict_home(job: &Job, scan: &Scan, id: u64) -> Option<Location> {
        job.dicts.get(&id).or_else(|| scan.dicts.get(&id)).copied()
    }

    /// Copies a record that needs no re-encoding. An instance whose dictionary moved gets
    /// its metadata rewritten to say where it went (readers then find it at once).
    fn copy_record(&self, job: &mut Job, scan: &Scan, item: Item) -> Result<Location> {
        let (src, src_path) = (&job.src, &job.src_path);
        if !stream::trailer_holds(src, src_path, item.loc.offset, item.loc.length)? {
            return Err(integrity(
                src_path,
                item.loc.offset,
                "record checksum mismatch",
            ));
        }
        let base = job.end;
        let home = (item.kind == Kind::Instance && item.dict_id != 0)
            .then(|| Self::dict_home(job, scan, item.dict_id))
            .flatten();
        let mut head = None;
        if let Some(home) = home {
            let p = self.read_head_in(src, src_path, item.loc)?;
            if p.meta.dict_loc != home {
                head = Some(p);
            }
        }
        let length = match head {
            None => {
                stream::copy_range(
                    (src, src_path, item.loc.offset),
                    (&job.out, &job.out_path, base),
                    item.loc.length,
                )?;
                item.loc.length
            }
            Some(p) => {
                let mut meta = p.meta;
                meta.dict_loc = home.unwrap_or_default();
                let mut out = RecordOut::new(base, &meta);
                let data_len = item.loc.length - out.data_start() - TRAILER_LEN as u64;
                stream::copy_range(
                    (src, src_path, item.loc.offset + out.data_start()),
                    (&job.out, &job.out_path, base + out.data_start()),
                    data_len,
                )?;
                out.advance(data_len);
                out.finish(&job.out, &job.out_path, item.kind, p.header.flags, &meta)?
            }
        };
        let new = Location {
            pack: job.output,
            offset: base,
            length,
        };
        if item.kind == Kind::Dictionary {
            job.dicts.insert(item.dict_id, new);
        }
        job.moved.push((item.loc, new, item.kind));
        job.end = base + length;
        Ok(new)
    }

    fn read_head_in(
        &self,
        f: &File,
        path: &std::path::Path,
        loc: Location,
    ) -> Result<record::Parsed> {
        let h = read_at(f, path, loc.offset, RECORD_HEADER_LEN)?;
        let header = parse_record_header(&h).map_err(|m| integrity(path, loc.offset, m))?;
        let head = read_at(
            f,
            path,
            loc.offset,
            RECORD_HEADER_LEN + header.meta_len as usize,
        )?;
        record::parse_head(&head).map_err(|m| integrity(path, loc.offset, m))
    }

    /// Starts re-encoding an arrival record: metadata (dictionary location brought up to
    /// date), header chunk copied, the header stream decoded for the SHA-256 check.
    fn begin_record(&self, job: &mut Job, scan: &Scan, item: Item) -> Result<Partial> {
        let (src, src_path) = (&job.src, &job.src_path);
        let p = self.read_head_in(src, src_path, item.loc)?;
        let mut meta = p.meta;
        if meta.dict_id != 0 {
            if let Some(home) = Self::dict_home(job, scan, meta.dict_id) {
                meta.dict_loc = home;
            }
        }
        let first = meta.chunks.first().cloned().ok_or_else(|| {
            integrity(src_path, item.loc.offset, "instance without a header chunk")
        })?;
        let stored = read_at(
            src,
            src_path,
            item.loc.offset + first.offset,
            first.stored_len as usize,
        )?;
        let dict = self.dictionary(&meta)?;
        let header = record::decode_chunk(&stored, &first, dict.as_deref())
            .map_err(|m| integrity(src_path, item.loc.offset, m))?;
        let mut out = RecordOut::new(job.end, &meta);
        let offset = out.put(&job.out, &job.out_path, &stored)?;
        meta.chunks[0].offset = offset;
        Ok(Partial {
            old: item.loc,
            flags: p.header.flags & !RECORD_FLAG_ARRIVAL,
            meta,
            out,
            next_chunk: 1,
            check: PlanCheck {
                header,
                header_at: 0,
                plan_at: 0,
                sha: Sha256::new(),
            },
        })
    }

    /// Re-encodes chunks of `p`, a group at a time over `threads`, until `budget` bytes
    /// were read or the record is done; returns the bytes read.
    fn densify_chunks(
        &self,
        job: &Job,
        p: &mut Partial,
        budget: u64,
        threads: usize,
    ) -> Result<u64> {
        let level = self.opts.levels.pixel;
        let mut spent = 0u64;
        while spent < budget && p.next_chunk < p.meta.chunks.len() {
            let group = (p.next_chunk..p.meta.chunks.len()).take(threads * 2);
            let mut inputs = Vec::new();
            for i in group {
                let c = p.meta.chunks[i].clone();
                let stored = read_at(
                    &job.src,
                    &job.src_path,
                    p.old.offset + c.offset,
                    c.stored_len as usize,
                )?;
                spent += c.stored_len;
                inputs.push((i, c, stored));
            }
            let one = |(i, c, stored): &(usize, Chunk, Vec<u8>)| {
                record::densify_chunk(stored, c, level)
                    .map(|d| (*i, d))
                    .map_err(|m| integrity(&job.src_path, p.old.offset, m))
            };
            let results: Vec<Result<(usize, Densified)>> = if threads <= 1 || inputs.len() <= 1 {
                inputs.iter().map(one).collect()
            } else {
                std::thread::scope(|sc| {
                    let handles: Vec<_> = inputs.iter().map(|x| sc.spawn(move || one(x))).collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().unwrap_or_else(|_| Err(self.panicked())))
                        .collect()
                })
            };
            for r in results {
                let (
                    i,
                    Densified {
                        raw,
                        data,
                        mut chunk,
                    },
                ) = r?;
                p.check
                    .chunk(&p.meta, i, &raw)
                    .map_err(|m| integrity(&job.src_path, p.old.offset, m))?;
                chunk.offset = p.out.put(&job.out, &job.out_path, &data)?;
                p.meta.chunks[i] = chunk;
                p.next_chunk = i + 1;
            }
        }
        Ok(spent)
    }

    /// Steps 3 and 4 of the protocol (see the module docs).
    fn finish_job(&self, d: &mut Densifier, rep: &mut DensifyReport) -> Result<()> {
        let main = self.writer()?;
        let _gate = lock(&self.gate);
        let output = d.job.as_ref().map(|j| j.output);
        // Tombstones that landed while copying (deletes wait for the gate from here on).
        self.learn_store(d, usize::MAX, output)?;
        let Some(mut job) = d.job.take() else {
            return Ok(());
        };
        let dead: Vec<(Location, Location)> = job
            .moved
            .iter()
            .filter(|(old, _, kind)| *kind == Kind::Instance && d.scan.dead.contains(old))
            .map(|(old, new, _)| (*old, *new))
            .collect();
        for (old, new) in dead {
            let victim_meta = self.read_head_in(&job.src, &job.src_path, old)?.meta;
            let t = record::encode_tombstone(new, &victim_meta);
            use std::os::unix::fs::FileExt;
            job.out
                .write_all_at(&t, job.end)
                .map_err(|e| Error::io(&job.out_path, e))?;
            job.end += t.len() as u64;
            d.scan.dead.insert(new);
        }
        if self.opts.sync {
            job.out
                .sync_all()
                .map_err(|e| Error::io(&job.out_path, e))?;
            sync_dir(&self.packs_dir)?;
        }
        let (victim, output, start) = (job.victim, job.output, job.start);
        compact::write_journal(
            &self.packs_dir,
            DENSIFY_WRITER,
            "commit",
            victim,
            output,
            Some(start),
        )?;
        // Committed: from here the victim goes, whatever happens.
        let forwards: Vec<(Location, Location)> = job
            .moved
            .iter()
            .filter(|(_, _, k)| *k != Kind::Tombstone)
            .map(|(o, n, _)| (*o, *n))
            .collect();
        self.add_moves(&forwards);
        for (&id, &loc) in &job.dicts {
            d.scan.dicts.insert(id, loc);
            self.dict_moved(id, loc);
        }
        if let Some(a) = lock(&d.out.state)
            .active
            .as_mut()
            .filter(|a| a.pack == output)
        {
            a.end = a.end.max(job.end);
        }
        {
            let mut st = lock(&main.state);
            let e = st.ends.entry(output).or_insert(0);
            *e = (*e).max(job.end);
            st.held.insert((output, start));
            // No mark for a pack that is gone (its id may be used again after a restart).
            st.ends.remove(&victim);
        }
        lock(&self.files).remove(&victim);
        compact::remove_if_exists(&job.src_path)?;
        sync_dir(&self.packs_dir)?;
        compact::clear_journal(&self.packs_dir, DENSIFY_WRITER)?;
        d.scan.marks.remove(&victim);
        d.scan.arrival.remove(&victim);
        d.scan.dead.retain(|l| l.pack != victim);
        d.scan.marks.insert(output, job.end);
        rep.moved = job
            .moved
            .iter()
            .filter(|(_, _, k)| *k == Kind::Instance)
            .map(|(o, n, _)| (*o, *n))
            .collect();
        rep.settle.push(Location {
            pack: output,
            offset: start,
            length: job.end - start,
        });
        rep.packs += 1;
        job.moved.clear();
        Ok(())
    }
}
