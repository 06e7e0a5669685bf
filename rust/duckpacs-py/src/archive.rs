//! Python binding of the archive's write path (`duckpacs_core::archive::Writer`).
//!
//! `ArchiveWriter(store, lookup, on_conflict, flush_rows)`: `store` is a `_core.Store`
//! opened with a writer id; `lookup(uids) -> {uid: (pack, offset, length, sha256_hex)}` asks
//! the committed index (called with the GIL, from whichever thread stores). Every store call
//! runs with the GIL released. Outcomes come back as dicts (see `_core.pyi`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use duckpacs_core::archive::{Known, Lookup, OnConflict, Outcome, Rejection, Writer};
use duckpacs_core::part10;
use duckpacs_core::store::{Location, Provenance};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::errors::to_py;
use crate::index::HeaderBatch;
use crate::store::Store;

/// The committed index, asked through a Python callable.
struct PyLookup(Py<PyAny>);

fn sha_from_hex(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

impl Lookup for PyLookup {
    fn lookup(&self, uids: &[String]) -> Result<HashMap<String, Known>, String> {
        Python::attach(|py| {
            let found = self
                .0
                .call1(py, (uids.to_vec(),))
                .map_err(|e| e.to_string())?;
            let found: HashMap<String, (u64, u64, u64, String)> =
                found.extract(py).map_err(|e: PyErr| e.to_string())?;
            Ok(found
                .into_iter()
                .map(|(uid, (pack, offset, length, sha))| {
                    let location = Location {
                        pack,
                        offset,
                        length,
                    };
                    // A row without a readable SHA-256 never equals a newcomer's: compared
                    // by bytes instead (conflict::same_dataset).
                    let sha256 = sha_from_hex(&sha).unwrap_or([0; 32]);
                    (uid, Known { location, sha256 })
                })
                .collect())
        })
    }
}

fn provenance(received_at_us: Option<u64>, source_ae: Option<&str>) -> Provenance {
    let mut p = Provenance::now(source_ae.unwrap_or("").trim());
    if let Some(us) = received_at_us {
        p.received_at_us = us;
    }
    p
}

type Loc = (u64, u64, u64);

fn tup(l: Location) -> Loc {
    (l.pack, l.offset, l.length)
}

fn outcome_dict<'py>(py: Python<'py>, o: &Outcome) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let (name, uid) = match o {
        Outcome::Stored { uid, location } => {
            d.set_item("location", tup(*location))?;
            ("stored", uid)
        }
        Outcome::Identical { uid, location } => {
            d.set_item("location", tup(*location))?;
            ("identical", uid)
        }
        Outcome::KeptFirst { uid, location } => {
            d.set_item("location", tup(*location))?;
            ("kept-first", uid)
        }
        Outcome::Replaced {
            uid,
            location,
            previous,
        } => {
            d.set_item("location", tup(*location))?;
            d.set_item("previous", tup(*previous))?;
            ("replaced", uid)
        }
        Outcome::Rejected { uid, kind, reason } => {
            let kind = match kind {
                Rejection::Malformed => "malformed",
                Rejection::NoUid => "no-uid",
                Rejection::OutOfResources => "out-of-resources",
            };
            d.set_item("rejection", kind)?;
            d.set_item("reason", reason)?;
            ("rejected", uid)
        }
    };
    d.set_item("outcome", name)?;
    d.set_item("sop_instance_uid", uid)?;
    Ok(d)
}

/// The archive's one write path (see `duckpacs_core::archive`).
#[pyclass(frozen, module = "duckpacs._core")]
pub struct ArchiveWriter {
    inner: RwLock<Option<Arc<Writer>>>,
}

impl ArchiveWriter {
    /// The core writer, shared with the Rust DIMSE server.
    pub fn writer(&self) -> PyResult<Arc<Writer>> {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        g.clone()
            .ok_or_else(|| PyValueError::new_err("archive writer is closed"))
    }
}

#[pymethods]
impl ArchiveWriter {
    #[new]
    #[pyo3(signature = (store, lookup, on_conflict="keep-first", flush_rows=512))]
    fn new(
        store: &Store,
        lookup: Py<PyAny>,
        on_conflict: &str,
        flush_rows: usize,
    ) -> PyResult<Self> {
        let policy = match on_conflict {
            "keep-first" => OnConflict::KeepFirst,
            "replace" => OnConflict::Replace,
            other => {
                return Err(PyValueError::new_err(format!(
                    "on_conflict must be keep-first or replace, not {other:?}"
                )))
            }
        };
        let inner = store.inner()?;
        if inner.writer_id().is_none() {
            return Err(PyValueError::new_err(
                "the store must be opened with a writer id",
            ));
        }
        let writer = Writer::new(inner, Box::new(PyLookup(lookup)), policy, flush_rows);
        Ok(ArchiveWriter {
            inner: RwLock::new(Some(Arc::new(writer))),
        })
    }

    /// Drops this handle on the writer (and its share of the store): the store's writer
    /// lock is released once nothing else holds the writer.
    fn close(&self) {
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        *g = None;
    }

    /// Stores one instance: a Part 10 stream, or a bare dataset in `transfer_syntax`.
    #[pyo3(signature = (data, transfer_syntax=None, received_at_us=None, source_ae=None))]
    fn store<'py>(
        &self,
        py: Python<'py>,
        data: &[u8],
        transfer_syntax: Option<&str>,
        received_at_us: Option<u64>,
        source_ae: Option<&str>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let prov = provenance(received_at_us, source_ae);
        let w = self.writer()?;
        let o = py.detach(|| w.store(data, transfer_syntax, &prov));
        outcome_dict(py, &o)
    }

    /// Stores a dataset received over DIMSE: the File Meta Information is built from the
    /// request's UIDs and the presentation context's transfer syntax (PS3.10 7.1).
    #[pyo3(signature = (dataset, transfer_syntax, sop_class_uid, sop_instance_uid, source_ae=None, received_at_us=None))]
    #[allow(clippy::too_many_arguments)]
    fn store_dataset<'py>(
        &self,
        py: Python<'py>,
        dataset: &[u8],
        transfer_syntax: &str,
        sop_class_uid: &str,
        sop_instance_uid: &str,
        source_ae: Option<&str>,
        received_at_us: Option<u64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let prov = provenance(received_at_us, source_ae);
        let w = self.writer()?;
        let o = py.detach(|| {
            let mut stream = part10::build_meta(
                sop_class_uid,
                sop_instance_uid,
                transfer_syntax,
                &prov.source_ae,
            );
            stream.extend_from_slice(dataset);
            w.store(&stream, None, &prov)
        });
        outcome_dict(py, &o)
    }

    /// Stores the Part 10 file at `path` in memory that does not grow with the instance
    /// (parsed through a read-only mapping, streamed into the store): for files of
    /// gigabytes. The same rules and outcome as `store`.
    #[pyo3(signature = (path, received_at_us=None, source_ae=None))]
    fn store_file<'py>(
        &self,
        py: Python<'py>,
        path: std::path::PathBuf,
        received_at_us: Option<u64>,
        source_ae: Option<&str>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let prov = provenance(received_at_us, source_ae);
        let w = self.writer()?;
        let o = py.detach(|| w.store_file(&path, &prov));
        outcome_dict(py, &o)
    }

    /// Stores a batch (parsed on every core, one fsync); one dict per item, in order.
    #[pyo3(signature = (items, received_at_us=None, source_ae=None))]
    fn store_many<'py>(
        &self,
        py: Python<'py>,
        items: Vec<Bound<'py, PyBytes>>,
        received_at_us: Option<u64>,
        source_ae: Option<&str>,
    ) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let prov = provenance(received_at_us, source_ae);
        let slices: Vec<&[u8]> = items.iter().map(|b| b.as_bytes()).collect();
        let w = self.writer()?;
        let out = py.detach(|| w.store_many(&slices, None, &prov));
        out.iter().map(|o| outcome_dict(py, o)).collect()
    }

    /// Feeds archived SOP Instance UIDs to the filter that spares new instances an index
    /// lookup; call `seeded()` once every UID of the index has been fed.
    fn seed(&self, py: Python<'_>, uids: Vec<String>) -> PyResult<()> {
        let w = self.writer()?;
        py.detach(|| w.seed(uids.iter().map(String::as_str)));
        Ok(())
    }

    /// Refuse every arrival with `reason` (a storage limit) until called with None.
    #[pyo3(signature = (reason=None))]
    fn set_refusal(&self, reason: Option<String>) -> PyResult<()> {
        self.writer()?.set_refusal(reason);
        Ok(())
    }

    /// Every archived UID has been fed to `seed`.
    fn seeded(&self) -> PyResult<()> {
        self.writer()?.seeded();
        Ok(())
    }

    /// The next batch for the index and the store marks it covers, or None.
    fn drain(&self, py: Python<'_>) -> PyResult<Option<(HeaderBatch, HashMap<u64, u64>)>> {
        let w = self.writer()?;
        let d = py.detach(|| w.drain()).map_err(|e| to_py(py, e))?;
        Ok(d.map(|d| {
            let marks = d.marks.into_iter().collect();
            (HeaderBatch::from_batch(d.batch), marks)
        }))
    }

    /// The index has committed the last drained batch.
    fn committed(&self) -> PyResult<()> {
        self.writer()?.committed();
        Ok(())
    }

    /// Waits up to `timeout` seconds for enough rows to commit; True if rows wait.
    fn wait(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let w = self.writer()?;
        Ok(py.detach(|| w.wait(Duration::from_secs_f64(timeout.max(0.0)))))
    }

    /// A stored instance not yet confirmed by the index: (location, sha256 hex) or None.
    fn pending(&self, uid: &str) -> PyResult<Option<(Loc, String)>> {
        Ok(self.writer()?.pending(uid).map(|k| {
            let sha: String = k.sha256.iter().map(|b| format!("{b:02x}")).collect();
            (tup(k.location), sha)
        }))
    }

    /// Rows stored but not yet confirmed by the index.
    #[getter]
    fn pending_rows(&self) -> PyResult<usize> {
        Ok(self.writer()?.pending_len())
    }
}

/// The File Meta Information for a dataset received over DIMSE (PS3.10 7.1).
#[pyfunction]
#[pyo3(signature = (sop_class_uid, sop_instance_uid, transfer_syntax, source_ae=""))]
fn part10_meta<'py>(
    py: Python<'py>,
    sop_class_uid: &str,
    sop_instance_uid: &str,
    transfer_syntax: &str,
    source_ae: &str,
) -> Bound<'py, PyBytes> {
    let meta = part10::build_meta(sop_class_uid, sop_instance_uid, transfer_syntax, source_ae);
    PyBytes::new(py, &meta)
}

/// `(dataset_offset, transfer_syntax, sop_class_uid, sop_instance_uid)` of a Part 10 stream.
#[pyfunction]
fn part10_split(py: Python<'_>, data: &[u8]) -> PyResult<(usize, String, String, String)> {
    let f = part10::split(data).map_err(|e| to_py(py, e))?;
    Ok((
        f.dataset_offset,
        f.transfer_syntax,
        f.sop_class_uid,
        f.sop_instance_uid,
    ))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ArchiveWriter>()?;
    m.add("IMPLEMENTATION_CLASS_UID", part10::IMPLEMENTATION_CLASS_UID)?;
    m.add(
        "IMPLEMENTATION_VERSION_NAME",
        part10::IMPLEMENTATION_VERSION_NAME,
    )?;
    m.add_function(wrap_pyfunction!(part10_meta, m)?)?;
    m.add_function(wrap_pyfunction!(part10_split, m)?)?;
    Ok(())
}
