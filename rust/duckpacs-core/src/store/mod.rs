//! Storage layer: the append-only, compressed, checksummed instance store.
//!
//! A store is a folder with `packs/`. Each writer (one per process, by writer id) appends
//! records to its own packs `packs/wWWWWW-SSSSSSSS.dpk`, holding an exclusive `flock` on
//! `packs/wWWWWW.lock`; any process reads any pack. `put` returns a [`Location`] (pack id,
//! offset, length) that the index records, so reads are one positional read. Records are
//! described in `docs/STORAGE-FORMAT.md`.
//!
//! Durability is a group commit: writers append under a mutex, then wait for an fsync that
//! covers their record; one thread syncs on behalf of all that are waiting.

mod compact;
pub mod filter;
pub mod format;
pub mod pack;
pub mod record;
mod tail;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

pub use format::{Kind, Location, Meta, Provenance};
pub use record::Levels;
pub use tail::Tail;

use crate::error::{Error, Result};
use crate::layout::InstanceLayout;
use format::*;
use pack::{integrity, read_at, Recovery, Step, Walker};
use record::{DictRef, HeaderDict};

/// Dictionaries kept in memory at once (a prepared encoder dictionary takes a few MB).
const MAX_DICTS: usize = 32;

/// Read handles kept open at once.
const MAX_OPEN_PACKS: usize = 128;

/// Tunables of a store.
#[derive(Debug, Clone)]
pub struct Options {
    /// A pack is rolled when the next record would take it past this size.
    pub pack_size: u64,
    pub levels: Levels,
    /// Headers of a series kept to train its dictionary (0 disables dictionaries).
    pub dict_samples: usize,
    /// Largest dictionary trained.
    pub dict_size: usize,
    /// fsync before acknowledging (turn off only for throw-away stores).
    pub sync: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            pack_size: 1 << 30,
            levels: Levels::default(),
            dict_samples: 4,
            dict_size: 128 << 10,
            sync: true,
        }
    }
}

fn lock_file(path: &Path, exclusive: bool) -> Result<Option<File>> {
    let f = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    // SAFETY: flock on a file descriptor we own; no memory is shared with the kernel.
    let rc = unsafe { libc::flock(f.as_raw_fd(), op | libc::LOCK_NB) };
    if rc == 0 {
        Ok(Some(f))
    } else {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            Ok(None)
        } else {
            Err(Error::io(path, e))
        }
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

struct Active {
    file: Arc<File>,
    path: PathBuf,
    pack: u64,
    end: u64,
}

struct WriterState {
    active: Option<Active>,
    next_seq: u32,
    /// Number of append batches written so far (tickets for the group commit).
    written: u64,
    /// Records appended with `hold` and not yet settled, as (pack, offset): the index has
    /// not been told about them yet, so the low-water mark must stay at or below them.
    held: BTreeSet<(u64, u64)>,
    /// End of every pack this writer appended to since it opened (see `low_water`).
    ends: BTreeMap<u64, u64>,
}

struct SyncState {
    synced: u64,
    syncing: bool,
    /// fsyncs issued for acknowledgements (group commit makes this far fewer than puts).
    count: u64,
}

struct Writer {
    id: u32,
    _lock: File,
    state: Mutex<WriterState>,
    sync: Mutex<SyncState>,
    cond: Condvar,
}

#[derive(Default)]
struct Dicts {
    /// Dictionaries loaded for reading or writing, by id (bounded, see `MAX_DICTS`).
    by_id: HashMap<u64, DictRef>,
    /// The dictionary of each series this writer trained or used (bounded).
    by_series: HashMap<String, DictRef>,
    /// Every series this writer trained a dictionary for: (id, location), to reload it
    /// after it left `by_series`.
    known: HashMap<String, (u64, Location)>,
    samples: HashMap<String, Vec<Vec<u8>>>,
    /// Series for which training failed or is under way.
    no_train: HashSet<String>,
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
}

/// A live instance found by [`Store::scan`].
#[derive(Debug, Clone)]
pub struct Entry {
    pub location: Location,
    pub meta: Meta,
}

/// Result of [`Store::compact`].
#[derive(Debug, Clone, Default)]
pub struct CompactReport {
    pub packs_rewritten: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Records that moved: (old location, new location). The index must follow them.
    pub moved: Vec<(Location, Location)>,
}

/// An open store.
pub struct Store {
    root: PathBuf,
    packs_dir: PathBuf,
    opts: Options,
    writer: Option<Writer>,
    files: Mutex<HashMap<u64, Arc<File>>>,
    dicts: Mutex<Dicts>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Store {
    /// Opens (creating if needed) the store in `root`. With a writer id, this process
    /// appends to its own packs and recovers their torn tail; without, it only reads.
    pub fn open(root: impl AsRef<Path>, writer: Option<u32>, opts: Options) -> Result<Store> {
        let root = root.as_ref().to_path_buf();
        let packs_dir = root.join("packs");
        let writer = match writer {
            None => None,
            Some(id) => {
                if id > pack::MAX_WRITER {
                    return Err(Error::Store {
                        path: root,
                        offset: 0,
                        message: format!("writer id {id} above {}", pack::MAX_WRITER),
                    });
                }
                std::fs::create_dir_all(&packs_dir).map_err(|e| Error::io(&packs_dir, e))?;
                Some(Self::open_writer(&packs_dir, id)?)
            }
        };
        Ok(Store {
            root,
            packs_dir,
            opts,
            writer,
            files: Mutex::new(HashMap::new()),
            dicts: Mutex::new(Dicts::default()),
        })
    }

    fn open_writer(dir: &Path, id: u32) -> Result<Writer> {
        let lock_path = dir.join(format!("w{id:05}.lock"));
        let lock_f = lock_file(&lock_path, true)?.ok_or(Error::Locked { path: lock_path })?;
        compact::recover_journal(dir, id)?;
        let mine: Vec<(u64, PathBuf)> = pack::list_packs(dir)?
            .into_iter()
            .filter(|(p, _)| p >> 32 == u64::from(id))
            .collect();
        let mut next_seq = 1;
        let mut active = None;
        let mut ends = BTreeMap::new();
        if let Some((last, path)) = mine.last() {
            next_seq = ((last & 0xFFFF_FFFF) as u32).saturating_add(1);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|e| Error::io(path, e))?;
            let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
            if len < PACK_HEADER_LEN as u64 {
                // Crashed while creating the pack: nothing in it was ever acknowledged.
                std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
                sync_dir(dir)?;
                next_seq -= 1;
            } else if let Ok(Recovery::Clean { end, .. }) = pack::recover(&file, path) {
                ends.insert(*last, end);
                active = Some(Active {
                    file: Arc::new(file),
                    path: path.clone(),
                    pack: *last,
                    end,
                });
            }
        }
        Ok(Writer {
            id,
            _lock: lock_f,
            state: Mutex::new(WriterState {
                active,
                next_seq,
                written: 0,
                held: BTreeSet::new(),
                ends,
            }),
            sync: Mutex::new(SyncState {
                synced: 0,
                syncing: false,
                count: 0,
            }),
            cond: Condvar::new(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Number of group-commit fsyncs this writer has issued since it opened.
    pub fn sync_count(&self) -> u64 {
        self.writer.as_ref().map_or(0, |w| lock(&w.sync).count)
    }

    pub fn writer_id(&self) -> Option<u32> {
        self.writer.as_ref().map(|w| w.id)
    }

    fn writer(&self) -> Result<&Writer> {
        self.writer.as_ref().ok_or_else(|| Error::Store {
            path: self.root.clone(),
            offset: 0,
            message: "store opened read-only (no writer id)".into(),
        })
    }

    fn new_pack(&self, w: &Writer, st: &mut WriterState) -> Result<()> {
        if let Some(old) = st.active.take() {
            if self.opts.sync {
                old.file.sync_data().map_err(|e| Error::io(&old.path, e))?;
            }
        }
        let seq = st.next_seq;
        let pack = pack::pack_id(w.id, seq);
        let path = self.packs_dir.join(pack::pack_name(pack));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let started = file
            .write_all_at(&pack_header(w.id, seq), 0)
            .and_then(|()| {
                if self.opts.sync {
                    file.sync_all()
                } else {
                    Ok(())
                }
            })
            .map_err(|e| Error::io(&path, e))
            .and_then(|()| {
                if self.opts.sync {
                    sync_dir(&self.packs_dir)
                } else {
                    Ok(())
                }
            });
        if let Err(e) = started {
            // A disk that filled up mid-way: leave no half-made pack behind, so the next
            // append (once there is space) creates it afresh instead of failing on it.
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        st.next_seq = seq.saturating_add(1);
        st.active = Some(Active {
            file: Arc::new(file),
            path,
            pack,
            end: PACK_HEADER_LEN as u64,
        });
        Ok(())
    }

    /// Appends whole records and returns once they are durable. With `hold`, each record
    /// stays below the writer's low-water mark until [`Store::settle`] releases it.
    fn append(&self, records: &[&[u8]], hold: bool) -> Result<Vec<Location>> {
        let w = self.writer()?;
        let mut locs = Vec::with_capacity(records.len());
        let ticket = {
            let mut st = lock(&w.state);
            for rec in records {
                let len = rec.len() as u64;
                let roll = match &st.active {
                    None => true,
                    Some(a) => a.end > PACK_HEADER_LEN as u64 && a.end + len > self.opts.pack_size,
                };
                if roll {
                    self.new_pack(w, &mut st)?;
                }
                let Some(a) = st.active.as_mut() else {
                    return Err(Error::Store {
                        path: self.packs_dir.clone(),
                        offset: 0,
                        message: "no active pack".into(),
                    });
                };
                if let Err(e) = a.file.write_all_at(rec, a.end) {
                    // Leave no partial record behind; a failed cut leaves a torn tail that
                    // the next open removes.
                    let _ = a.file.set_len(a.end);
                    return Err(Error::io(&a.path, e));
                }
                locs.push(Location {
                    pack: a.pack,
                    offset: a.end,
                    length: len,
                });
                a.end += len;
                let (pack, offset, end) = (a.pack, a.end - len, a.end);
                if hold {
                    st.held.insert((pack, offset));
                }
                st.ends.insert(pack, end);
            }
            st.written += 1;
            st.written
        };
        if self.opts.sync {
            self.wait_durable(w, ticket)?;
        }
        Ok(locs)
    }

    /// Group commit: returns once an fsync that started after ticket `t` was written has
    /// finished. One waiting thread syncs for all.
    fn wait_durable(&self, w: &Writer, t: u64) -> Result<()> {
        let mut s = lock(&w.sync);
        loop {
            if s.synced >= t {
                return Ok(());
            }
            if s.syncing {
                s = w.cond.wait(s).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            s.syncing = true;
            drop(s);
            let (target, file) = {
                let st = lock(&w.state);
                (
                    st.written,
                    st.active.as_ref().map(|a| (a.file.clone(), a.path.clone())),
                )
            };
            let r = match &file {
                Some((f, p)) => f.sync_data().map_err(|e| Error::io(p, e)),
                None => Ok(()),
            };
            s = lock(&w.sync);
            s.syncing = false;
            s.count += 1;
            if r.is_ok() {
                s.synced = s.synced.max(target);
            }
            w.cond.notify_all();
            r?;
        }
    }

    fn series_dict(&self, layout: Option<&InstanceLayout>) -> Option<DictRef> {
        let series = &layout?.series_instance_uid;
        let known = {
            let d = lock(&self.dicts);
            if let Some(dict) = d.by_series.get(series) {
                return Some(dict.clone());
            }
            *d.known.get(series)?
        };
        // Evicted earlier: reload it (a dictionary that cannot be read is simply not used).
        let meta = Meta {
            dict_id: known.0,
            dict_loc: known.1,
            ..Meta::default()
        };
        let dict = self.dictionary(&meta).ok().flatten()?;
        let mut d = lock(&self.dicts);
        if d.by_series.len() >= MAX_DICTS {
            d.by_series.clear();
        }
        d.by_series.insert(series.clone(), dict.clone());
        Some(dict)
    }

    /// Keeps a header sample of a series; trains and stores its dictionary once enough.
    fn learn(&self, series: &str, header: &[u8]) -> Result<()> {
        if self.opts.dict_samples == 0 || series.is_empty() {
            return Ok(());
        }
        let samples = {
            let mut d = lock(&self.dicts);
            if d.by_series.contains_key(series)
                || d.known.contains_key(series)
                || d.no_train.contains(series)
            {
                return Ok(());
            }
            if d.samples.len() >= 256 && !d.samples.contains_key(series) {
                // Bound memory: forget the pending samples of other series.
                d.samples.clear();
            }
            let v = d.samples.entry(series.to_string()).or_default();
            v.push(header[..header.len().min(256 << 10)].to_vec());
            if v.len() < self.opts.dict_samples {
                return Ok(());
            }
            d.no_train.insert(series.to_string());
            d.samples.remove(series).unwrap_or_default()
        };
        let Some(raw) =
            record::build_dictionary(&samples, self.opts.dict_size, self.opts.levels.header)
        else {
            return Ok(()); // Nothing to learn from: this series stays dictionary-less.
        };
        let rec = record::encode_dictionary(&raw, series);
        let loc = self.append(&[&rec], false)?[0];
        let dict = Arc::new(HeaderDict::new(raw, loc, self.opts.levels.header));
        let mut d = lock(&self.dicts);
        if d.by_id.len() >= MAX_DICTS {
            d.by_id.clear();
        }
        if d.by_series.len() >= MAX_DICTS {
            d.by_series.clear();
        }
        d.by_id.insert(dict.id, dict.clone());
        d.known.insert(series.to_string(), (dict.id, dict.loc));
        d.by_series.insert(series.to_string(), dict);
        d.no_train.remove(series);
        Ok(())
    }

    fn encode(
        &self,
        buf: &[u8],
        layout: Option<&InstanceLayout>,
        provenance: &Provenance,
    ) -> Result<record::Encoded> {
        let dict = self.series_dict(layout);
        record::encode_instance(buf, layout, dict.as_deref(), self.opts.levels, provenance).map_err(
            |m| Error::Store {
                path: self.packs_dir.clone(),
                offset: 0,
                message: m,
            },
        )
    }

    /// Stores one instance received now from nobody in particular (see [`Store::put_with`]).
    pub fn put(&self, buf: &[u8], layout: Option<&InstanceLayout>) -> Result<Location> {
        self.put_with(buf, layout, &Provenance::now(""))
    }

    /// Stores one instance: `buf` exactly as received, `layout` from the parser (or `None`
    /// to store it whole), with its provenance. Returns once the record is durable.
    pub fn put_with(
        &self,
        buf: &[u8],
        layout: Option<&InstanceLayout>,
        provenance: &Provenance,
    ) -> Result<Location> {
        self.put_held(buf, layout, provenance, false)
            .map(|(loc, _)| loc)
    }

    /// [`Store::put_with`], optionally holding the record below the low-water mark until
    /// [`Store::settle`]: how a caller that indexes asynchronously keeps the index's
    /// per-pack marks honest (docs/ARCHITECTURE.md, "Crash recovery").
    pub fn put_held(
        &self,
        buf: &[u8],
        layout: Option<&InstanceLayout>,
        provenance: &Provenance,
        hold: bool,
    ) -> Result<(Location, [u8; 32])> {
        let e = self.encode(buf, layout, provenance)?;
        let loc = self.append(&[&e.bytes], hold)?[0];
        if e.meta.dict_id == 0 {
            self.learn(&e.meta.series_instance_uid, &e.header_stream)?;
        }
        Ok((loc, e.meta.sha256))
    }

    /// Stores a batch with one fsync, every instance with the same provenance; locations in
    /// input order.
    pub fn put_many(
        &self,
        items: &[(&[u8], Option<&InstanceLayout>)],
        provenance: &Provenance,
    ) -> Result<Vec<Location>> {
        let stored = self.put_many_held(items, provenance, false)?;
        Ok(stored.into_iter().map(|(loc, _)| loc).collect())
    }

    /// [`Store::put_many`] returning each record's SHA-256 too, optionally held (see
    /// [`Store::put_held`]).
    pub fn put_many_held(
        &self,
        items: &[(&[u8], Option<&InstanceLayout>)],
        provenance: &Provenance,
        hold: bool,
    ) -> Result<Vec<(Location, [u8; 32])>> {
        // Encode groups on every core (a bulk import has nothing else to do); learn header
        // dictionaries between groups so a series' later instances in the same batch use
        // them; append everything in input order with one fsync.
        let cores = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .max(1);
        let mut encoded = Vec::with_capacity(items.len());
        for group in items.chunks(16) {
            let per = group.len().div_ceil(cores).max(1);
            let parts: Vec<Result<Vec<record::Encoded>>> = std::thread::scope(|sc| {
                let handles: Vec<_> = group
                    .chunks(per)
                    .map(|part| {
                        sc.spawn(move || {
                            part.iter()
                                .map(|(b, l)| self.encode(b, *l, provenance))
                                .collect()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|_| Err(self.panicked())))
                    .collect()
            });
            for part in parts {
                for e in part? {
                    if e.meta.dict_id == 0 {
                        self.learn(&e.meta.series_instance_uid, &e.header_stream)?;
                    }
                    encoded.push(e);
                }
            }
        }
        let recs: Vec<&[u8]> = encoded.iter().map(|e| e.bytes.as_slice()).collect();
        let locs = self.append(&recs, hold)?;
        Ok(locs
            .into_iter()
            .zip(encoded.iter().map(|e| e.meta.sha256))
            .collect())
    }

    /// Lays out and stores received buffers (see [`Store::put_many`]): each is described by
    /// the parser on every core; a buffer the parser refuses is stored whole.
    pub fn put_buffers(
        &self,
        bufs: &[&[u8]],
        transfer_syntax: Option<&str>,
        provenance: &Provenance,
    ) -> Result<Vec<Location>> {
        let cores = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .max(1);
        let per = bufs.len().div_ceil(cores).max(1);
        let layouts: Vec<Option<InstanceLayout>> = std::thread::scope(|sc| {
            let handles: Vec<_> = bufs
                .chunks(per)
                .map(|part| {
                    sc.spawn(move || {
                        part.iter()
                            .map(|b| crate::parse::describe(b, transfer_syntax).ok())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        if layouts.len() != bufs.len() {
            return Err(self.panicked());
        }
        let batch: Vec<(&[u8], Option<&InstanceLayout>)> = bufs
            .iter()
            .zip(&layouts)
            .map(|(b, l)| (*b, l.as_ref()))
            .collect();
        self.put_many(&batch, provenance)
    }

    fn panicked(&self) -> Error {
        Error::Store {
            path: self.root.clone(),
            offset: 0,
            message: "encoder thread panicked".into(),
        }
    }

    fn pack_path(&self, pack: u64) -> PathBuf {
        self.packs_dir.join(pack::pack_name(pack))
    }

    fn file(&self, pack: u64) -> Result<Arc<File>> {
        if let Some(f) = lock(&self.files).get(&pack) {
            return Ok(f.clone());
        }
        let path = self.pack_path(pack);
        let f = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let head = read_at(&f, &path, 0, PACK_HEADER_LEN)
            .map_err(|_| integrity(&path, 0, "pack header truncated"))?;
        let (w, s) = parse_pack_header(&head).map_err(|m| integrity(&path, 0, m))?;
        if pack::pack_id(w, s) != pack {
            return Err(integrity(&path, 0, "pack header names another pack"));
        }
        let f = Arc::new(f);
        let mut files = lock(&self.files);
        if files.len() >= MAX_OPEN_PACKS {
            // Stay well inside the descriptor limit; readers holding an Arc keep theirs.
            files.clear();
        }
        files.insert(pack, f.clone());
        Ok(f)
    }

    /// Reads and checks a whole record (header, metadata and trailer checksums).
    fn read_record(&self, loc: Location) -> Result<(Vec<u8>, record::Parsed)> {
        let path = self.pack_path(loc.pack);
        let f = self.file(loc.pack)?;
        let size = f.metadata().map_err(|e| Error::io(&path, e))?.len();
        let fits = loc
            .offset
            .checked_add(loc.length)
            .is_some_and(|end| end <= size);
        if !fits || loc.offset < PACK_HEADER_LEN as u64 || loc.length > MAX_RAW_LEN {
            return Err(Error::Store {
                path,
                offset: loc.offset,
                message: format!("no record of {} bytes here (pack has {size})", loc.length),
            });
        }
        let rec = read_at(&f, &path, loc.offset, loc.length as usize)?;
        let parsed = record::parse_head(&rec).map_err(|m| integrity(&path, loc.offset, m))?;
        if parsed.header.record_len != loc.length {
            return Err(Error::Store {
                path,
                offset: loc.offset,
                message: format!(
                    "record is {} bytes, location says {}",
                    parsed.header.record_len, loc.length
                ),
            });
        }
        check_trailer(&rec).map_err(|m| integrity(&path, loc.offset, m))?;
        Ok((rec, parsed))
    }

    fn dictionary(&self, meta: &Meta) -> Result<Option<DictRef>> {
        let id = meta.dict_id;
        if id == 0 {
            return Ok(None);
        }
        if let Some(d) = lock(&self.dicts).by_id.get(&id) {
            return Ok(Some(d.clone()));
        }
        if let Ok(Some(d)) = self.load_dict(meta.dict_loc, id) {
            return Ok(Some(d));
        }
        // The dictionary moved (compaction): find it by id.
        let missing = || {
            integrity(
                &self.pack_path(meta.dict_loc.pack),
                meta.dict_loc.offset,
                format!("dictionary {id:016x} not found"),
            )
        };
        let loc = self.find_dict(id)?.ok_or_else(missing)?;
        self.load_dict(loc, id)?.ok_or_else(missing).map(Some)
    }

    /// Loads dictionary `id` from the record at `loc` (and caches it); `None` if that
    /// record is not this dictionary.
    fn load_dict(&self, loc: Location, id: u64) -> Result<Option<DictRef>> {
        let (rec, p) = self.read_record(loc)?;
        if p.header.kind != Kind::Dictionary || p.meta.chunks.len() != 1 || p.meta.dict_id != id {
            return Ok(None);
        }
        let c = &p.meta.chunks[0];
        let raw = record::decode_chunk(record::chunk_bytes(&rec, c).unwrap_or(&[]), c, None)
            .map_err(|m| integrity(&self.pack_path(loc.pack), loc.offset, m))?;
        if record::dict_id(&raw) != id {
            return Ok(None);
        }
        let d = Arc::new(HeaderDict::new(raw, loc, self.opts.levels.header));
        let mut dicts = lock(&self.dicts);
        if dicts.by_id.len() >= MAX_DICTS {
            dicts.by_id.clear();
        }
        dicts.by_id.insert(d.id, d.clone());
        Ok(Some(d))
    }

    fn find_dict(&self, id: u64) -> Result<Option<Location>> {
        let mut found = None;
        self.walk_all(|loc, h, meta| {
            if h.kind == Kind::Dictionary && meta.is_some_and(|m| m.dict_id == id) {
                found = Some(loc);
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// The original bytes of the instance at `loc`, checked chunk by chunk.
    pub fn get(&self, loc: Location) -> Result<Vec<u8>> {
        let (rec, p) = self.read_record(loc)?;
        self.rebuild(loc, &rec, &p, false)
    }

    fn rebuild(&self, loc: Location, rec: &[u8], p: &record::Parsed, sha: bool) -> Result<Vec<u8>> {
        let path = self.pack_path(loc.pack);
        if p.header.kind != Kind::Instance {
            return Err(Error::Store {
                path,
                offset: loc.offset,
                message: format!("record is a {}, not an instance", p.header.kind.name()),
            });
        }
        let dict = self.dictionary(&p.meta)?;
        record::reconstruct(rec, p, dict.as_deref(), sha)
            .map_err(|m| integrity(&path, loc.offset, m))
    }

    /// Metadata (UIDs, SHA-256, sizes) of the record at `loc`, after checking the whole
    /// record's checksum.
    pub fn meta(&self, loc: Location) -> Result<Meta> {
        Ok(self.read_record(loc)?.1.meta)
    }

    /// SHA-256 of the original bytes of the record at `loc`, read from its metadata block
    /// (checked by its own checksum) without reading the chunk data: what an importer needs
    /// right after `put_many`, which computed it.
    pub fn sha256(&self, loc: Location) -> Result<[u8; 32]> {
        Ok(self.read_head(loc)?.meta.sha256)
    }

    fn read_head(&self, loc: Location) -> Result<record::Parsed> {
        let path = self.pack_path(loc.pack);
        let f = self.file(loc.pack)?;
        // One read covers header and metadata of most records; a second when it does not.
        let first = loc.length.clamp(RECORD_HEADER_LEN as u64, 8192) as usize;
        let h = read_at(&f, &path, loc.offset, first)?;
        let header = parse_record_header(&h).map_err(|m| integrity(&path, loc.offset, m))?;
        if header.record_len != loc.length {
            return Err(Error::Store {
                path,
                offset: loc.offset,
                message: format!(
                    "record is {} bytes, location says {}",
                    header.record_len, loc.length
                ),
            });
        }
        let n = RECORD_HEADER_LEN + header.meta_len as usize;
        let head = if n <= h.len() {
            h
        } else {
            read_at(&f, &path, loc.offset, n)?
        };
        record::parse_head(&head).map_err(|m| integrity(&path, loc.offset, m))
    }

    /// Frame `index` (0-based) of the instance at `loc`: the native frame bytes, or the
    /// encapsulated fragments of that frame concatenated. Reads only that frame's chunks.
    pub fn get_frame(&self, loc: Location, index: usize) -> Result<Vec<u8>> {
        let path = self.pack_path(loc.pack);
        let p = self.read_head(loc)?;
        let &(first, count) = p.meta.frames.get(index).ok_or_else(|| Error::Store {
            path: path.clone(),
            offset: loc.offset,
            message: format!(
                "no frame {index} (instance has {} in its frame table)",
                p.meta.frames.len()
            ),
        })?;
        let f = self.file(loc.pack)?;
        let mut out = Vec::new();
        for c in &p.meta.chunks[first as usize..(first + count) as usize] {
            let stored = read_at(&f, &path, loc.offset + c.offset, c.stored_len as usize)?;
            let raw = record::decode_chunk(&stored, c, None)
                .map_err(|m| integrity(&path, loc.offset, m))?;
            out.extend_from_slice(&raw);
        }
        Ok(out)
    }

    /// Number of frames in the frame table of the instance at `loc`.
    pub fn frame_count(&self, loc: Location) -> Result<usize> {
        Ok(self.read_head(loc)?.meta.frames.len())
    }

    /// Deletes the instance at `loc` by appending a tombstone; returns its location.
    pub fn delete(&self, loc: Location) -> Result<Location> {
        self.delete_held(loc, false)
    }

    /// [`Store::delete`], optionally holding the tombstone below the low-water mark until
    /// [`Store::settle`] (the caller removes the row from the index first).
    pub fn delete_held(&self, loc: Location, hold: bool) -> Result<Location> {
        let p = self.read_head(loc)?;
        if p.header.kind != Kind::Instance {
            return Err(Error::Store {
                path: self.pack_path(loc.pack),
                offset: loc.offset,
                message: "only instances can be deleted".into(),
            });
        }
        let rec = record::encode_tombstone(loc, &p.meta);
        Ok(self.append(&[&rec], hold)?[0])
    }

    /// Calls `f` for every record of every pack whose header checksum holds, with its
    /// metadata when that is intact. Damaged spans are skipped.
    fn walk_all(
        &self,
        mut f: impl FnMut(Location, &RecordHeader, Option<&Meta>) -> Result<()>,
    ) -> Result<()> {
        for (pack, path) in pack::list_packs(&self.packs_dir)? {
            let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
            let Ok(mut walker) = Walker::new(&file, &path) else {
                continue;
            };
            while let Some(step) = walker.next_step()? {
                if let Step::Record { offset, header } = step {
                    let loc = Location {
                        pack,
                        offset,
                        length: header.record_len,
                    };
                    let n = RECORD_HEADER_LEN + header.meta_len as usize;
                    let head = read_at(&file, &path, offset, n)?;
                    let meta = record::parse_head(&head).ok().map(|p| p.meta);
                    f(loc, &header, meta.as_ref())?;
                }
            }
        }
        Ok(())
    }

    /// Every live instance (not deleted by a tombstone), in pack order, with its metadata.
    pub fn scan(&self) -> Result<Vec<Entry>> {
        let mut entries = Vec::new();
        let mut dead = HashSet::new();
        self.walk_all(|loc, h, meta| {
            match (h.kind, meta) {
                (Kind::Instance, Some(m)) => entries.push(Entry {
                    location: loc,
                    meta: m.clone(),
                }),
                (Kind::Tombstone, Some(m)) => {
                    dead.insert(m.target);
                }
                _ => {}
            }
            Ok(())
        })?;
        entries.retain(|e| !dead.contains(&e.location));
        Ok(entries)
    }

    /// The original bytes before the pixel data element (the whole header for the index).
    pub fn header_bytes(&self, loc: Location) -> Result<Vec<u8>> {
        let path = self.pack_path(loc.pack);
        let p = self.read_head(loc)?;
        let c = p
            .meta
            .chunks
            .first()
            .ok_or_else(|| integrity(&path, loc.offset, "no header chunk"))?;
        let f = self.file(loc.pack)?;
        let stored = read_at(&f, &path, loc.offset + c.offset, c.stored_len as usize)?;
        let dict = self.dictionary(&p.meta)?;
        let mut h = record::decode_chunk(&stored, c, dict.as_deref())
            .map_err(|m| integrity(&path, loc.offset, m))?;
        h.truncate(p.meta.header_prefix as usize);
        Ok(h)
    }

    /// Whether the writer owning `pack` is alive (its lock is held by some process).
    fn pack_active(&self, pack: u64) -> bool {
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

    fn verify_record(
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
