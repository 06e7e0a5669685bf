//! Storage layer, the writer: one per process and writer id; appends records to its own
//! packs under a mutex, and a group commit (one thread fsyncs for every waiting one) makes
//! them durable before a put returns. Held records and low-water marks: `tail.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use super::format::*;
use super::pack::{self, Recovery};
use super::record::{self};
use super::*;
use crate::error::{Error, Result};
use crate::layout::InstanceLayout;

pub(super) struct Active {
    pub(super) file: Arc<File>,
    pub(super) path: PathBuf,
    pub(super) pack: u64,
    pub(super) end: u64,
}

pub(super) struct WriterState {
    pub(super) active: Option<Active>,
    pub(super) next_seq: u32,
    /// Number of append batches written so far (tickets for the group commit).
    pub(super) written: u64,
    /// Records appended with `hold` and not yet settled, as (pack, offset): the index has
    /// not been told about them yet, so the low-water mark must stay at or below them.
    pub(super) held: BTreeSet<(u64, u64)>,
    /// End of every pack this writer appended to since it opened (see `low_water`).
    pub(super) ends: BTreeMap<u64, u64>,
}

pub(super) struct SyncState {
    pub(super) synced: u64,
    pub(super) syncing: bool,
    /// fsyncs issued for acknowledgements (group commit makes this far fewer than puts).
    pub(super) count: u64,
}

pub(super) struct Writer {
    pub(super) id: u32,
    pub(super) _lock: File,
    pub(super) state: Mutex<WriterState>,
    pub(super) sync: Mutex<SyncState>,
    pub(super) cond: Condvar,
}

impl Store {
    pub(super) fn open_writer(dir: &Path, id: u32) -> Result<Writer> {
        let lock_path = dir.join(format!("w{id:05}.lock"));
        let lock_f = lock_file(&lock_path, true)?.ok_or(Error::Locked { path: lock_path })?;
        compact::recover_journal(dir, id)?;
        stream::remove_partials(dir, id)?;
        let mine: Vec<(u64, PathBuf)> = pack::list_packs(dir)?
            .into_iter()
            .filter(|(p, _)| p >> 32 == u64::from(id))
            .collect();
        let mut next_seq = 1;
        let mut active = None;
        let mut ends = BTreeMap::new();
        // Packs evicted to object storage are not on disk: their numbers stay taken, and
        // when the newest is one of them, the writer starts a new pack.
        let evicted_last = super::remote::logged_packs(dir)
            .into_iter()
            .filter(|p| p >> 32 == u64::from(id))
            .max();
        let newest_local = mine.last().map(|(p, _)| *p);
        if let Some(e) = evicted_last.filter(|&e| Some(e) > newest_local) {
            next_seq = ((e & 0xFFFF_FFFF) as u32).saturating_add(1);
        } else if let Some((last, path)) = mine.last() {
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

    /// Append batches (records stored, dictionaries, tombstones) this writer has written
    /// since it opened: a background job that must yield to arrivals watches it move.
    pub fn appends(&self) -> u64 {
        self.writer.as_ref().map_or(0, |w| lock(&w.state).written)
    }

    /// Closes this writer's active pack, durably: the next record starts a new pack, and
    /// the closed one may be densified or compacted.
    pub fn seal(&self) -> Result<()> {
        let w = self.writer()?;
        let mut st = lock(&w.state);
        if let Some(old) = st.active.take() {
            if self.opts.sync {
                // Records appended before the seal may still wait for their group commit,
                // which syncs the active pack: sync this one for them.
                old.file.sync_data().map_err(|e| Error::io(&old.path, e))?;
            }
        }
        Ok(())
    }

    /// Number of group-commit fsyncs this writer has issued since it opened.
    pub fn sync_count(&self) -> u64 {
        self.writer.as_ref().map_or(0, |w| lock(&w.sync).count)
    }

    pub fn writer_id(&self) -> Option<u32> {
        self.writer.as_ref().map(|w| w.id)
    }

    pub(super) fn writer(&self) -> Result<&Writer> {
        self.writer.as_ref().ok_or_else(|| Error::Store {
            path: self.root.clone(),
            offset: 0,
            message: "store opened read-only (no writer id)".into(),
        })
    }

    pub(super) fn new_pack(&self, w: &Writer, st: &mut WriterState) -> Result<()> {
        if let Some(old) = st.active.take() {
            if self.opts.sync {
                old.file.sync_data().map_err(|e| Error::io(&old.path, e))?;
            }
        }
        let seq = st.next_seq;
        let pack = pack::pack_id(w.id, seq);
        let path = self.packs_dir.join(pack::pack_name(pack));
        // Made under a temporary name and renamed once its header is durable: a kill (or a
        // disk that fills up) never leaves a pack without its header behind.
        let file = super::stream::PartialPack::create(&self.packs_dir, w.id, seq)?
            .publish(self.opts.sync)?;
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
    pub(super) fn append(&self, records: &[&[u8]], hold: bool) -> Result<Vec<Location>> {
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
    pub(super) fn wait_durable(&self, w: &Writer, t: u64) -> Result<()> {
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

    pub(super) fn encode(
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

    pub(super) fn panicked(&self) -> Error {
        Error::Store {
            path: self.root.clone(),
            offset: 0,
            message: "encoder thread panicked".into(),
        }
    }

    /// Deletes the instance at `loc` by appending a tombstone; returns its location.
    pub fn delete(&self, loc: Location) -> Result<Location> {
        self.delete_held(loc, false)
    }

    /// [`Store::delete`], optionally holding the tombstone below the low-water mark until
    /// [`Store::settle`] (the caller removes the row from the index first).
    pub fn delete_held(&self, loc: Location, hold: bool) -> Result<Location> {
        let _gate = lock(&self.gate);
        let loc = self.forward(loc);
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
}
