//! Python binding of the instance store (`duckpacs._core.Store`).
//!
//! Locations cross the boundary as `(pack, offset, length)` tuples of ints. Every call that
//! touches the disk or compresses runs with the GIL released.

use std::sync::{Arc, RwLock};

use duckpacs_core::layout::InstanceLayout;
use duckpacs_core::store::{self, Location, Meta};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::errors::to_py;

type Loc = (u64, u64, u64);

fn loc(l: Loc) -> Location {
    Location {
        pack: l.0,
        offset: l.1,
        length: l.2,
    }
}

fn tup(l: Location) -> Loc {
    (l.pack, l.offset, l.length)
}

/// The layout of a received buffer, as the parser describes it; `None` (the parser refused
/// it) stores it whole, byte for byte, which an archive may still want for unusual files.
fn layout_for(data: &[u8], transfer_syntax: Option<&str>) -> Option<InstanceLayout> {
    duckpacs_core::parse::describe(data, transfer_syntax).ok()
}

fn meta_dict<'py>(py: Python<'py>, m: &Meta) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("sop_instance_uid", &m.sop_instance_uid)?;
    d.set_item("sop_class_uid", &m.sop_class_uid)?;
    d.set_item("study_instance_uid", &m.study_instance_uid)?;
    d.set_item("series_instance_uid", &m.series_instance_uid)?;
    d.set_item("patient_id", &m.patient_id)?;
    d.set_item("modality", &m.modality)?;
    d.set_item("transfer_syntax", &m.transfer_syntax)?;
    d.set_item("sha256", hex(&m.sha256))?;
    d.set_item("original_len", m.original_len)?;
    d.set_item("frames", m.frames.len())?;
    let p = &m.provenance;
    d.set_item(
        "received_at_us",
        (p.received_at_us != 0).then_some(p.received_at_us),
    )?;
    d.set_item(
        "source_ae",
        (!p.source_ae.is_empty()).then_some(p.source_ae.as_str()),
    )?;
    Ok(d)
}

/// The provenance a put records: the given time or now, the given AE title or none.
fn provenance(received_at_us: Option<u64>, source_ae: Option<&str>) -> store::Provenance {
    let mut p = store::Provenance::now(source_ae.unwrap_or("").trim());
    if let Some(us) = received_at_us {
        p.received_at_us = us;
    }
    p
}

/// The arrival encoding named by a `Store(arrival=...)` argument: None for the default,
/// "dense" (encode dense at once), "raw", or "zstd:LEVEL" (byte shuffle, then zstd).
fn arrival_of(name: Option<&str>) -> PyResult<Option<store::Arrival>> {
    let Some(name) = name else {
        return Ok(Some(store::ARRIVAL));
    };
    let level = name.strip_prefix("zstd:").map(str::parse::<i32>);
    match (name, level) {
        ("dense", _) => Ok(None),
        ("raw", _) => Ok(Some(store::Arrival::Raw)),
        (_, Some(Ok(l))) if (-7..=19).contains(&l) => Ok(Some(store::Arrival::Zstd(l))),
        _ => Err(PyValueError::new_err(format!(
            "arrival must be \"dense\", \"raw\" or \"zstd:LEVEL\" (LEVEL -7..19), not {name:?}"
        ))),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An open instance store (`<data>/store`).
#[pyclass(frozen, module = "duckpacs._core")]
pub struct Store {
    inner: RwLock<Option<Arc<store::Store>>>,
}

impl Store {
    /// The open core store (shared with the archive writer).
    pub fn inner(&self) -> PyResult<Arc<store::Store>> {
        self.get_inner()
    }

    fn get_inner(&self) -> PyResult<Arc<store::Store>> {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        g.clone()
            .ok_or_else(|| PyValueError::new_err("store is closed"))
    }
}

#[pymethods]
impl Store {
    // Python keyword arguments, one per store option.
    #[allow(clippy::too_many_arguments)]
    #[new]
    #[pyo3(signature = (path, writer_id=None, pack_size=1<<30, dictionaries=true, sync=true, arrival=None, remote=None))]
    fn new(
        py: Python<'_>,
        path: std::path::PathBuf,
        writer_id: Option<u32>,
        pack_size: u64,
        dictionaries: bool,
        sync: bool,
        arrival: Option<&str>,
        remote: Option<Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let remote = remote.map(|d| remote_config(&d)).transpose()?;
        let mut opts = store::Options {
            pack_size,
            sync,
            ..store::Options::default()
        };
        opts.levels.arrival = arrival_of(arrival)?;
        if !dictionaries {
            opts.dict_samples = 0;
        }
        let s = py
            .detach(|| {
                let mut s = store::Store::open(&path, writer_id, opts)?;
                if let Some(config) = remote {
                    let packs = s.root().join("packs");
                    std::fs::create_dir_all(&packs)
                        .map_err(|e| duckpacs_core::Error::io(&packs, e))?;
                    s.set_remote(store::Remote::connect(config, &packs)?);
                }
                Ok::<_, duckpacs_core::Error>(s)
            })
            .map_err(|e| to_py(py, e))?;
        Ok(Store {
            inner: RwLock::new(Some(Arc::new(s))),
        })
    }

    /// Same as the constructor.
    #[allow(clippy::too_many_arguments)]
    #[staticmethod]
    #[pyo3(signature = (path, writer_id=None, pack_size=1<<30, dictionaries=true, sync=true, arrival=None, remote=None))]
    fn open(
        py: Python<'_>,
        path: std::path::PathBuf,
        writer_id: Option<u32>,
        pack_size: u64,
        dictionaries: bool,
        sync: bool,
        arrival: Option<&str>,
        remote: Option<Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        Store::new(
            py,
            path,
            writer_id,
            pack_size,
            dictionaries,
            sync,
            arrival,
            remote,
        )
    }

    #[getter]
    fn path(&self) -> PyResult<std::path::PathBuf> {
        Ok(self.get_inner()?.root().to_path_buf())
    }

    #[getter]
    fn writer_id(&self) -> PyResult<Option<u32>> {
        Ok(self.get_inner()?.writer_id())
    }

    /// Group-commit fsyncs issued by this writer since it opened (fewer than puts when
    /// several threads put at once).
    #[getter]
    fn sync_count(&self) -> PyResult<u64> {
        Ok(self.get_inner()?.sync_count())
    }

    /// Stores one instance (a whole Part 10 buffer, or meta we wrote + dataset as received)
    /// and returns its location once durable.
    /// `received_at_us` (microseconds since the Unix epoch, UTC; default now) and
    /// `source_ae` (the sender's AE title) are kept with the record for a rebuilt index.
    /// With `hold`, the record stays below this writer's `low_water()` until `settle`.
    #[pyo3(signature = (data, transfer_syntax=None, received_at_us=None, source_ae=None, hold=false))]
    fn put(
        &self,
        py: Python<'_>,
        data: &[u8],
        transfer_syntax: Option<&str>,
        received_at_us: Option<u64>,
        source_ae: Option<&str>,
        hold: bool,
    ) -> PyResult<Loc> {
        let s = self.get_inner()?;
        let prov = provenance(received_at_us, source_ae);
        py.detach(|| {
            let layout = layout_for(data, transfer_syntax);
            s.put_held(data, layout.as_ref(), &prov, hold)
                .map(|(loc, _)| loc)
        })
        .map(tup)
        .map_err(|e| to_py(py, e))
    }

    /// Stores the file at `path` (a Part 10 file, or a bare dataset in `transfer_syntax`),
    /// described through a read-only mapping and, from 64 MiB on, encoded frame by frame
    /// into a pack of its own: memory stays bounded whatever the size. Provenance and
    /// `hold` as for `put`.
    #[pyo3(signature = (path, transfer_syntax=None, received_at_us=None, source_ae=None, hold=false))]
    fn put_file(
        &self,
        py: Python<'_>,
        path: std::path::PathBuf,
        transfer_syntax: Option<&str>,
        received_at_us: Option<u64>,
        source_ae: Option<&str>,
        hold: bool,
    ) -> PyResult<Loc> {
        let s = self.get_inner()?;
        let prov = provenance(received_at_us, source_ae);
        py.detach(|| {
            let layout = store::describe_file(&path, transfer_syntax)?;
            s.put_file(&path, layout.as_ref(), &prov, hold)
                .map(|(loc, _)| loc)
        })
        .map(tup)
        .map_err(|e| to_py(py, e))
    }

    /// Stores a batch with one fsync (encoding on every core); locations in input order.
    /// Every item gets the same provenance (see `put`).
    #[pyo3(signature = (items, received_at_us=None, source_ae=None))]
    fn put_many(
        &self,
        py: Python<'_>,
        items: Vec<Bound<'_, PyBytes>>,
        received_at_us: Option<u64>,
        source_ae: Option<&str>,
    ) -> PyResult<Vec<Loc>> {
        let s = self.get_inner()?;
        let prov = provenance(received_at_us, source_ae);
        let slices: Vec<&[u8]> = items.iter().map(|b| b.as_bytes()).collect();
        py.detach(|| s.put_buffers(&slices, None, &prov))
            .map(|v| v.into_iter().map(tup).collect())
            .map_err(|e| to_py(py, e))
    }

    /// The original bytes of the instance at `location`.
    fn get<'py>(&self, py: Python<'py>, location: Loc) -> PyResult<Bound<'py, PyBytes>> {
        let s = self.get_inner()?;
        let v = py
            .detach(|| s.get(loc(location)))
            .map_err(|e| to_py(py, e))?;
        Ok(PyBytes::new(py, &v))
    }

    /// The original bytes of the instance at `location` as a stream of pieces (an iterator
    /// of bytes, with `read(size)`), rebuilt a chunk at a time with each chunk checked; a
    /// SHA-256 mismatch raises IntegrityError after the last piece.
    fn open_instance(&self, py: Python<'_>, location: Loc) -> PyResult<InstanceStream> {
        let s = self.get_inner()?;
        let reader = py
            .detach(|| s.open_instance(loc(location)))
            .map_err(|e| to_py(py, e))?;
        Ok(InstanceStream {
            reader,
            buf: Vec::new(),
            at: 0,
        })
    }

    /// Frame `index` (0-based): native frame bytes, or the fragments of that frame.
    fn get_frame<'py>(
        &self,
        py: Python<'py>,
        location: Loc,
        index: usize,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let s = self.get_inner()?;
        let v = py
            .detach(|| s.get_frame(loc(location), index))
            .map_err(|e| to_py(py, e))?;
        Ok(PyBytes::new(py, &v))
    }

    /// Number of frames the store can serve one by one for this instance.
    fn frame_count(&self, py: Python<'_>, location: Loc) -> PyResult<usize> {
        let s = self.get_inner()?;
        py.detach(|| s.frame_count(loc(location)))
            .map_err(|e| to_py(py, e))
    }

    /// UIDs, SHA-256 and size of the record at `location`.
    fn meta<'py>(&self, py: Python<'py>, location: Loc) -> PyResult<Bound<'py, PyDict>> {
        let s = self.get_inner()?;
        let m = py
            .detach(|| s.meta(loc(location)))
            .map_err(|e| to_py(py, e))?;
        meta_dict(py, &m)
    }

    /// Hex SHA-256 of the original bytes at `location`, from the record's metadata alone.
    fn sha256(&self, py: Python<'_>, location: Loc) -> PyResult<String> {
        let s = self.get_inner()?;
        py.detach(|| s.sha256(loc(location)))
            .map(|d| hex(&d))
            .map_err(|e| to_py(py, e))
    }

    /// The original bytes that precede the top-level pixel data element.
    fn header_bytes<'py>(&self, py: Python<'py>, location: Loc) -> PyResult<Bound<'py, PyBytes>> {
        let s = self.get_inner()?;
        let v = py
            .detach(|| s.header_bytes(loc(location)))
            .map_err(|e| to_py(py, e))?;
        Ok(PyBytes::new(py, &v))
    }

    /// Deletes the instance at `location` (durable tombstone); returns the tombstone's
    /// location. With `hold`, the tombstone stays below `low_water()` until `settle`.
    #[pyo3(signature = (location, hold=false))]
    fn delete(&self, py: Python<'_>, location: Loc, hold: bool) -> PyResult<Loc> {
        let s = self.get_inner()?;
        py.detach(|| s.delete_held(loc(location), hold))
            .map(tup)
            .map_err(|e| to_py(py, e))
    }

    /// Every live instance, lazily: an iterator of dicts with `location`, the UIDs,
    /// `sha256`, `original_len`, `frames`, and `header` (the original bytes before the pixel
    /// data, enough to rebuild the index) when `headers` is true.
    #[pyo3(signature = (headers=true))]
    fn scan(&self, py: Python<'_>, headers: bool) -> PyResult<ScanIter> {
        let s = self.get_inner()?;
        let entries = py.detach(|| s.scan()).map_err(|e| to_py(py, e))?;
        Ok(ScanIter {
            store: s,
            entries: entries.into_iter().collect(),
            headers,
        })
    }

    /// The records past the index's marks (`since`: pack -> offset; missing packs are read
    /// whole): a dict with `instances` (an iterator like `scan`'s, in log order),
    /// `tombstoned` (locations deleted past the marks), `ends` (pack -> new mark) and
    /// `damaged` (records left out because their checksums fail).
    #[pyo3(signature = (since, headers=true, local_only=false))]
    fn tail<'py>(
        &self,
        py: Python<'py>,
        since: std::collections::HashMap<u64, u64>,
        headers: bool,
        local_only: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let s = self.get_inner()?;
        let t = py
            .detach(|| {
                if local_only {
                    s.tail_local(&since)
                } else {
                    s.tail(&since)
                }
            })
            .map_err(|e| to_py(py, e))?;
        let d = PyDict::new(py);
        let tombstoned: Vec<Loc> = t.tombstoned.into_iter().map(tup).collect();
        let ends: std::collections::HashMap<u64, u64> = t.ends.into_iter().collect();
        d.set_item(
            "instances",
            ScanIter {
                store: s,
                entries: t.instances.into_iter().collect(),
                headers,
            },
        )?;
        d.set_item("tombstoned", tombstoned)?;
        d.set_item("ends", ends)?;
        d.set_item("damaged", t.damaged)?;
        Ok(d)
    }

    /// Pack -> offset below which every record this writer appended may be marked indexed
    /// (held records keep it down until settled). Empty when read-only.
    fn low_water(&self) -> PyResult<std::collections::HashMap<u64, u64>> {
        Ok(self.get_inner()?.low_water().into_iter().collect())
    }

    /// Releases records put with `hold=True`: the index owner has taken them.
    fn settle(&self, locations: Vec<Loc>) -> PyResult<()> {
        let l: Vec<Location> = locations.into_iter().map(loc).collect();
        self.get_inner()?.settle(&l);
        Ok(())
    }

    /// Checks every checksum (`deep`: rebuilds every instance and compares SHA-256).
    /// `progress(done_bytes, total_bytes)` is called now and then.
    #[pyo3(signature = (deep=false, progress=None))]
    fn verify<'py>(
        &self,
        py: Python<'py>,
        deep: bool,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let s = self.get_inner()?;
        let rep = py
            .detach(|| {
                // Bytes verified: report every 32 MiB, not every record.
                s.verify(deep, progress_reporter(progress.as_ref(), 32 << 20))
            })
            .map_err(|e| to_py(py, e))?;
        let d = PyDict::new(py);
        d.set_item("packs", rep.packs)?;
        d.set_item("records", rep.records)?;
        d.set_item("instances", rep.instances)?;
        d.set_item("bytes", rep.bytes)?;
        let damaged = PyList::empty(py);
        for x in rep.damaged {
            let e = PyDict::new(py);
            e.set_item("pack", x.pack)?;
            e.set_item("pack_file", store::pack::pack_name(x.pack))?;
            e.set_item("offset", x.offset)?;
            e.set_item("length", x.length)?;
            e.set_item("sop_instance_uid", x.sop_instance_uid)?;
            e.set_item("message", x.message)?;
            damaged.append(e)?;
        }
        d.set_item("damaged", damaged)?;
        Ok(d)
    }

    /// Sizes: instances, raw and stored bytes, split header / pixels, dead bytes.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.get_inner()?;
        let st = py.detach(|| s.stats()).map_err(|e| to_py(py, e))?;
        let d = PyDict::new(py);
        for (k, v) in [
            ("packs", st.packs),
            ("pack_bytes", st.pack_bytes),
            ("instances", st.instances),
            ("raw_bytes", st.raw_bytes),
            ("stored_bytes", st.stored_bytes),
            ("header_raw_bytes", st.header_raw),
            ("header_stored_bytes", st.header_stored),
            ("pixel_raw_bytes", st.pixel_raw),
            ("pixel_stored_bytes", st.pixel_stored),
            ("tombstones", st.tombstones),
            ("deleted_instances", st.deleted_instances),
            ("dead_bytes", st.dead_bytes),
            ("dictionaries", st.dictionaries),
            ("dictionary_bytes", st.dictionary_bytes),
            ("arrival_instances", st.arrival_instances),
            ("arrival_raw_bytes", st.arrival_raw_bytes),
            ("arrival_stored_bytes", st.arrival_stored_bytes),
        ] {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    /// Rewrites sealed packs whose dead share is at least `min_dead_ratio`; needs a writer id.
    /// Returns `packs_rewritten`, `bytes_before`, `bytes_after` and `moved`: a list of
    /// `(old_location, new_location)` the index must apply.
    #[pyo3(signature = (min_dead_ratio=0.2, progress=None))]
    fn compact<'py>(
        &self,
        py: Python<'py>,
        min_dead_ratio: f64,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let s = self.get_inner()?;
        let rep = py
            .detach(|| s.compact(min_dead_ratio, progress_reporter(progress.as_ref(), 1)))
            .map_err(|e| to_py(py, e))?;
        let d = PyDict::new(py);
        d.set_item("packs_rewritten", rep.packs_rewritten)?;
        d.set_item("bytes_before", rep.bytes_before)?;
        d.set_item("bytes_after", rep.bytes_after)?;
        let moved: Vec<(Loc, Loc)> = rep
            .moved
            .into_iter()
            .map(|(a, b)| (tup(a), tup(b)))
            .collect();
        d.set_item("moved", moved)?;
        Ok(d)
    }

    /// Rewrites records still in the arrival encoding in the dense one: about `budget`
    /// bytes of work on `threads` threads (docs/STORAGE-FORMAT.md, "Densifying"). Returns
    /// `bytes_in`, `bytes_out`, `densified`, `scanned` (record heads read while learning
    /// the store), `packs` (victims finished), `moved` (`(old, new)` locations the index
    /// must follow), `settle` (to pass to `settle` once it has), `pending_bytes`,
    /// `skipped` (`(pack, reason)`: packs left alone for damage) and `done`.
    #[pyo3(signature = (budget=8<<20, threads=1))]
    fn densify_step<'py>(
        &self,
        py: Python<'py>,
        budget: u64,
        threads: usize,
    ) -> PyResult<Bound<'py, PyDict>> {
        let s = self.get_inner()?;
        let rep = py
            .detach(|| s.densify_step(budget, threads))
            .map_err(|e| to_py(py, e))?;
        let d = PyDict::new(py);
        for (k, v) in [
            ("bytes_in", rep.bytes_in),
            ("bytes_out", rep.bytes_out),
            ("densified", rep.densified),
            ("scanned", rep.scanned),
            ("packs", rep.packs),
            ("pending_bytes", rep.pending_bytes),
        ] {
            d.set_item(k, v)?;
        }
        let moved: Vec<(Loc, Loc)> = rep
            .moved
            .into_iter()
            .map(|(a, b)| (tup(a), tup(b)))
            .collect();
        d.set_item("moved", moved)?;
        let settle: Vec<Loc> = rep.settle.into_iter().map(tup).collect();
        d.set_item("settle", settle)?;
        d.set_item("skipped", rep.skipped)?;
        d.set_item("done", rep.done)?;
        Ok(d)
    }

    /// Closes this writer's active pack (the next record starts a new one).
    fn seal(&self, py: Python<'_>) -> PyResult<()> {
        let s = self.get_inner()?;
        py.detach(|| s.seal()).map_err(|e| to_py(py, e))
    }

    /// Packs of node `number` (pack ids `pack | number << 48`) are read from the bucket
    /// under `<prefix>/<name>/`.
    fn name_node(&self, py: Python<'_>, number: u16, name: &str) -> PyResult<()> {
        let s = self.get_inner()?;
        s.name_node(number, name).map_err(|e| to_py(py, e))
    }

    /// Uploads the packs no writer appends to any more and the bucket lacks (until `budget`
    /// bytes went up), then removes from the bucket the packs removed here. A failure is
    /// reported in `error`, not raised.
    #[pyo3(signature = (budget=None))]
    fn upload_step<'py>(
        &self,
        py: Python<'py>,
        budget: Option<u64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let s = self.get_inner()?;
        let rep = py
            .detach(|| s.upload_step(budget))
            .map_err(|e| to_py(py, e))?;
        let d = PyDict::new(py);
        d.set_item("uploaded", rep.uploaded)?;
        d.set_item("bytes", rep.bytes)?;
        d.set_item("deleted", rep.deleted)?;
        d.set_item("pending_packs", rep.pending_packs)?;
        d.set_item("pending_bytes", rep.pending_bytes)?;
        d.set_item("sealed_pending_bytes", rep.sealed_pending_bytes)?;
        d.set_item("error", rep.error)?;
        Ok(d)
    }

    /// Removes local copies of packs the bucket holds whole, oldest first, until this node's
    /// packs take at most `keep` bytes; only packs the index covers to their end
    /// (`indexed`: pack -> mark) go. Their records are then read from the bucket.
    fn evict_step<'py>(
        &self,
        py: Python<'py>,
        keep: u64,
        indexed: std::collections::HashMap<u64, u64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let s = self.get_inner()?;
        let rep = py
            .detach(|| s.evict_step(keep, &indexed))
            .map_err(|e| to_py(py, e))?;
        let d = PyDict::new(py);
        d.set_item("evicted", rep.evicted)?;
        d.set_item("bytes", rep.bytes)?;
        d.set_item("local_bytes", rep.local_bytes)?;
        Ok(d)
    }

    /// Object-storage reads of this process: GETs, bytes fetched, cache hits and use.
    /// `None` without object storage.
    fn remote_stats<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(st) = self.get_inner()?.remote_stats() else {
            return Ok(None);
        };
        let d = PyDict::new(py);
        d.set_item("gets", st.gets)?;
        d.set_item("get_bytes", st.get_bytes)?;
        d.set_item("hits", st.hits)?;
        d.set_item("cache_bytes", st.cache_bytes)?;
        d.set_item("cache_limit", st.cache_limit)?;
        Ok(Some(d))
    }

    /// Append batches this writer has written since it opened (instances, dictionaries,
    /// tombstones): what a background job watches to yield to arrivals.
    #[getter]
    fn appends(&self) -> PyResult<u64> {
        Ok(self.get_inner()?.appends())
    }

    /// Releases files and locks; later calls raise ValueError.
    fn close(&self) {
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        *g = None;
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        _t: Option<Py<PyAny>>,
        _v: Option<Py<PyAny>>,
        _tb: Option<Py<PyAny>>,
    ) -> bool {
        self.close();
        false
    }
}

/// The object-storage settings from the `remote=` dict (see `_core.pyi`).
fn remote_config(d: &Bound<'_, PyDict>) -> PyResult<store::RemoteConfig> {
    let text = |k: &str| -> PyResult<String> {
        d.get_item(k)?
            .ok_or_else(|| PyValueError::new_err(format!("remote: {k} is required")))?
            .extract::<String>()
    };
    let number = |k: &str, default: u64| -> PyResult<u64> {
        match d.get_item(k)? {
            Some(v) => v.extract::<u64>(),
            None => Ok(default),
        }
    };
    Ok(store::RemoteConfig {
        endpoint: text("endpoint")?,
        bucket: text("bucket")?,
        prefix: text("prefix").unwrap_or_default(),
        region: text("region").unwrap_or_else(|_| "us-east-1".into()),
        access_key: text("access_key")?,
        secret_key: text("secret_key")?,
        node: text("node")?,
        cache_bytes: number("cache_bytes", 256 << 20)?,
        timeout: std::time::Duration::from_millis(number("timeout_ms", 10_000)?),
    })
}

/// Iterator returned by `Store.scan()`.
#[pyclass(module = "duckpacs._core")]
pub struct ScanIter {
    store: Arc<store::Store>,
    entries: std::collections::VecDeque<store::Entry>,
    headers: bool,
}

#[pymethods]
impl ScanIter {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __len__(&self) -> usize {
        self.entries.len()
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(e) = self.entries.pop_front() else {
            return Ok(None);
        };
        let d = meta_dict(py, &e.meta)?;
        d.set_item("location", tup(e.location))?;
        if self.headers {
            let s = &self.store;
            let h = py
                .detach(|| s.header_bytes(e.location))
                .map_err(|err| to_py(py, err))?;
            d.set_item("header", PyBytes::new(py, &h))?;
        }
        Ok(Some(d))
    }
}

/// Iterator returned by `Store.open_instance()`: the original, a piece at a time.
#[pyclass(module = "duckpacs._core")]
pub struct InstanceStream {
    reader: store::InstanceReader,
    buf: Vec<u8>,
    at: usize,
}

impl InstanceStream {
    /// Up to `want` bytes: what is left of the current piece, then further pieces.
    fn take(&mut self, want: usize) -> duckpacs_core::Result<Vec<u8>> {
        let mut out = Vec::new();
        while out.len() < want {
            if self.at >= self.buf.len() {
                match self.reader.next_piece()? {
                    Some(p) => {
                        self.buf = p;
                        self.at = 0;
                    }
                    None => break,
                }
            }
            let n = (want - out.len()).min(self.buf.len() - self.at);
            if out.is_empty() && n == self.buf.len() && self.at == 0 {
                // A whole piece: hand it over without copying.
                out = std::mem::take(&mut self.buf);
                continue;
            }
            out.extend_from_slice(&self.buf[self.at..self.at + n]);
            self.at += n;
        }
        Ok(out)
    }
}

#[pymethods]
impl InstanceStream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// Length of the original in bytes.
    #[getter]
    fn size(&self) -> u64 {
        self.reader.size()
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let piece = if self.at < self.buf.len() {
            let rest = self.buf[self.at..].to_vec();
            self.at = self.buf.len();
            Some(rest)
        } else {
            let r = &mut self.reader;
            py.detach(|| r.next_piece()).map_err(|e| to_py(py, e))?
        };
        Ok(piece.map(|p| PyBytes::new(py, &p)))
    }

    /// Up to `size` bytes (all that is left when negative); b"" at the end.
    #[pyo3(signature = (size=-1))]
    fn read<'py>(&mut self, py: Python<'py>, size: i64) -> PyResult<Bound<'py, PyBytes>> {
        let want = usize::try_from(size).unwrap_or(usize::MAX);
        let v = py.detach(|| self.take(want)).map_err(|e| to_py(py, e))?;
        Ok(PyBytes::new(py, &v))
    }
}

/// A `(done, total)` callback for long store operations run with the GIL released: calls the
/// Python `progress(done, total)` when `done` has moved at least `step` since the last call,
/// and always at the end. Errors raised by the callback are ignored (progress is cosmetic).
fn progress_reporter(progress: Option<&Py<PyAny>>, step: u64) -> impl FnMut(u64, u64) + '_ {
    let mut last = 0u64;
    move |done, total| {
        let Some(cb) = progress else { return };
        if done.saturating_sub(last) >= step || done == total {
            last = done;
            Python::attach(|py| {
                let _ = cb.call1(py, (done, total));
            });
        }
    }
}
