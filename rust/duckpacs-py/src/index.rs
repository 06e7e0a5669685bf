//! Python bindings of the index batch builder (`duckpacs_core::index`): conversions only.
//!
//! `index_batch(buffers, extras, transfer_syntax)` parses the buffers with the GIL released
//! and returns a `HeaderBatch`, which exports itself through the Arrow PyCapsule interface
//! (`__arrow_c_stream__`), so `duckpacs.index.Index.add_batch` (or `pyarrow.table`) takes
//! it without copying.

use arrow_array::ffi_stream::FFI_ArrowArrayStream;
use arrow_array::{RecordBatch, RecordBatchIterator};
use duckpacs_core::index::{build_batches, schema, Extra};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyCapsule, PyDict};

use crate::errors::to_py;

/// One header batch built in Rust (see `duckpacs.index.schema.BATCH_SCHEMA`).
#[pyclass(name = "HeaderBatch", module = "duckpacs._core", frozen)]
pub struct HeaderBatch {
    /// One batch per worker thread, in input order.
    batches: Vec<RecordBatch>,
    errors: Vec<(usize, String)>,
}

impl HeaderBatch {
    /// A batch built elsewhere in Rust (the archive writer's pending rows).
    pub fn from_batch(batch: RecordBatch) -> HeaderBatch {
        HeaderBatch {
            batches: vec![batch],
            errors: Vec::new(),
        }
    }
}

#[pymethods]
impl HeaderBatch {
    /// Number of instances in the batch.
    #[getter]
    fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// `(index into buffers, message)` of every buffer that could not be parsed.
    #[getter]
    fn errors(&self) -> Vec<(usize, String)> {
        self.errors.clone()
    }

    fn __len__(&self) -> usize {
        self.num_rows()
    }

    /// Arrow PyCapsule interface: a stream of the batches. The schema is fixed, so
    /// `requested_schema` is ignored (consumers cast if they need to).
    #[pyo3(signature = (requested_schema = None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        drop(requested_schema);
        let batches: Vec<_> = self.batches.iter().cloned().map(Ok).collect();
        let reader = RecordBatchIterator::new(batches, schema());
        let stream = FFI_ArrowArrayStream::new(Box::new(reader));
        // pyarrow moves the stream out (clearing `release`); dropping the capsule's value
        // releases the stream only when nobody took it.
        PyCapsule::new_with_value(py, stream, c"arrow_array_stream")
    }
}

fn opt<'py, T: FromPyObjectOwned<'py>>(d: &Bound<'py, PyDict>, key: &str) -> PyResult<Option<T>> {
    match d.get_item(key)? {
        None => Ok(None),
        Some(v) if v.is_none() => Ok(None),
        Some(v) => v.extract::<T>().map(Some).map_err(Into::into),
    }
}

fn extra(d: &Bound<'_, PyDict>) -> PyResult<Extra> {
    let received_at_us = match d.get_item("received_at")? {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => {
            // a datetime (aware or naive UTC) or microseconds since the epoch
            if let Ok(us) = v.extract::<i64>() {
                Some(us)
            } else {
                let seconds: f64 = v.call_method0("timestamp")?.extract()?;
                Some((seconds * 1_000_000.0).round() as i64)
            }
        }
    };
    Ok(Extra {
        transfer_syntax: opt(d, "transfer_syntax")?,
        pack: opt(d, "pack")?,
        offset: opt(d, "offset")?,
        length: opt(d, "length")?,
        sha256: opt(d, "sha256")?,
        size: opt(d, "size")?,
        received_at_us,
        source_ae: opt(d, "source_ae")?,
    })
}

/// Parses `buffers` (Part 10 files or bare datasets; pixel data skipped) into one header batch.
///
/// `extras[i]` holds the location and provenance of `buffers[i]` (keys `pack`, `offset`,
/// `length`, `sha256`, `size`, `received_at`, `source_ae`, `transfer_syntax`);
/// `transfer_syntax` is the one negotiated for bare datasets; `threads` defaults to the
/// number of CPUs (large lists are split into contiguous chunks, one batch each).
#[pyfunction]
#[pyo3(signature = (buffers, extras = None, transfer_syntax = None, threads = None))]
fn index_batch(
    py: Python<'_>,
    buffers: Vec<PyBackedBytes>,
    extras: Option<Vec<Bound<'_, PyDict>>>,
    transfer_syntax: Option<String>,
    threads: Option<usize>,
) -> PyResult<HeaderBatch> {
    let extras = extras
        .unwrap_or_default()
        .iter()
        .map(extra)
        .collect::<PyResult<Vec<Extra>>>()?;
    let threads = threads
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1);
    let built = py.detach(|| {
        let slices: Vec<&[u8]> = buffers.iter().map(|b| b.as_ref()).collect();
        build_batches(&slices, &extras, transfer_syntax.as_deref(), threads)
    });
    let (batches, failed) = built.map_err(|e| to_py(py, e))?;
    let errors = failed
        .into_iter()
        .map(|(i, e)| (i, e.to_string()))
        .collect();
    Ok(HeaderBatch { batches, errors })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<HeaderBatch>()?;
    m.add_function(wrap_pyfunction!(index_batch, m)?)?;
    Ok(())
}
