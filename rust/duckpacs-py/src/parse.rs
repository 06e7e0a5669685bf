//! Python bindings of the DICOM parser (`duckpacs_core::parse`): conversions only.

use duckpacs_core::layout::{Framing, InstanceLayout, PixelKind};
use duckpacs_core::parse::json::{self, Field, Fields, JsonOptions};
use duckpacs_core::parse::{self, ParseOptions};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};
use std::ops::Range;

use crate::errors::to_py;

fn range_tuple(r: &Range<usize>) -> (usize, usize) {
    (r.start, r.end)
}

fn framing_name(f: Framing) -> &'static str {
    match f {
        Framing::Part10 => "part10",
        Framing::MetaWithoutPreamble => "meta_without_preamble",
        Framing::BareDataset => "bare_dataset",
    }
}

/// Converts an [`InstanceLayout`] to the dict documented in `_core.pyi`.
pub fn layout_dict<'py>(py: Python<'py>, l: &InstanceLayout) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("framing", framing_name(l.framing))?;
    d.set_item("meta", range_tuple(&l.meta))?;
    d.set_item("transfer_syntax", &l.transfer_syntax)?;
    d.set_item("sop_class_uid", &l.sop_class_uid)?;
    d.set_item("sop_instance_uid", &l.sop_instance_uid)?;
    d.set_item("study_instance_uid", &l.study_instance_uid)?;
    d.set_item("series_instance_uid", &l.series_instance_uid)?;
    d.set_item("patient_id", &l.patient_id)?;
    d.set_item("modality", &l.modality)?;
    d.set_item("deflated", l.deflated)?;
    match &l.pixel {
        None => d.set_item("pixel", py.None())?,
        Some(px) => {
            let p = PyDict::new(py);
            p.set_item("element", range_tuple(&px.element))?;
            p.set_item("value", range_tuple(&px.value))?;
            match &px.kind {
                PixelKind::Native {
                    rows,
                    columns,
                    samples_per_pixel,
                    bits_allocated,
                    pixel_representation,
                    planar_configuration,
                    frames,
                    frame_len,
                    big_endian,
                } => {
                    p.set_item("kind", "native")?;
                    p.set_item("rows", rows)?;
                    p.set_item("columns", columns)?;
                    p.set_item("samples_per_pixel", samples_per_pixel)?;
                    p.set_item("bits_allocated", bits_allocated)?;
                    p.set_item("pixel_representation", pixel_representation)?;
                    p.set_item("planar_configuration", planar_configuration)?;
                    p.set_item("frames", frames)?;
                    p.set_item("frame_len", frame_len)?;
                    p.set_item("big_endian", big_endian)?;
                }
                PixelKind::Encapsulated { items, frames } => {
                    p.set_item("kind", "encapsulated")?;
                    let it: Vec<(usize, usize)> = items.iter().map(range_tuple).collect();
                    let fr: Vec<(usize, usize)> = frames.iter().map(range_tuple).collect();
                    p.set_item("items", PyList::new(py, it)?)?;
                    p.set_item("frames", PyList::new(py, fr)?)?;
                }
            }
            d.set_item("pixel", p)?;
        }
    }
    Ok(d)
}

/// describe(data, transfer_syntax=None) -> dict: the instance layout (see `_core.pyi`).
#[pyfunction]
#[pyo3(signature = (data, transfer_syntax=None))]
pub fn describe<'py>(
    py: Python<'py>,
    data: &[u8],
    transfer_syntax: Option<&str>,
) -> PyResult<Bound<'py, PyDict>> {
    let layout = py
        .detach(|| parse::describe(data, transfer_syntax))
        .map_err(|e| to_py(py, e))?;
    layout_dict(py, &layout)
}

/// dump_json(data, transfer_syntax=None, bulk_data_uri=None, inline_threshold=0,
/// include_meta=False, pixel_data_by_tag=False) -> str: the DICOM JSON model (PS3.18 F.2)
/// of the dataset.
#[pyfunction]
#[pyo3(signature = (data, transfer_syntax=None, bulk_data_uri=None, inline_threshold=0, include_meta=false, pixel_data_by_tag=false))]
pub fn dump_json(
    py: Python<'_>,
    data: &[u8],
    transfer_syntax: Option<&str>,
    bulk_data_uri: Option<String>,
    inline_threshold: usize,
    include_meta: bool,
    pixel_data_by_tag: bool,
) -> PyResult<String> {
    let opts = JsonOptions {
        bulk_data_uri,
        inline_threshold,
        include_meta,
        pixel_data_by_tag,
    };
    py.detach(|| Ok(json::to_json(&parse_whole(data, transfer_syntax)?, &opts)))
        .map_err(|e| to_py(py, e))
}

/// A row dict as [`Fields`]: None is empty, a str is DICOM text, a list of dicts holds a
/// sequence's items, another list (or tuple) holds the values of a multi-valued attribute,
/// anything else is written as its `str()`.
fn fields(row: &Bound<'_, PyDict>) -> PyResult<Fields> {
    let mut out = Vec::with_capacity(row.len());
    for (k, v) in row.iter() {
        out.push((k.str()?.to_str()?.to_string(), field(&v)?));
    }
    Ok(out)
}

fn field(v: &Bound<'_, PyAny>) -> PyResult<Field> {
    if v.is_none() {
        return Ok(Field::Empty);
    }
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(Field::Text(s.to_str()?.to_string()));
    }
    if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() {
        let values: Vec<Bound<'_, PyAny>> = v.try_iter()?.collect::<PyResult<_>>()?;
        if values.is_empty() {
            return Ok(Field::Empty);
        }
        if values.iter().all(|x| x.is_instance_of::<PyDict>()) {
            let items = values
                .iter()
                .map(|x| fields(x.cast::<PyDict>()?))
                .collect::<PyResult<Vec<Fields>>>()?;
            return Ok(Field::Items(items));
        }
        let texts = values
            .iter()
            .map(|x| Ok(x.str()?.to_str()?.to_string()))
            .collect::<PyResult<Vec<String>>>()?;
        return Ok(Field::Text(texts.join("\\")));
    }
    Ok(Field::Text(v.str()?.to_str()?.to_string()))
}

/// rows_json(rows) -> str: a DICOM JSON array (PS3.18 F.2) of rows of DICOM text.
#[pyfunction]
pub fn rows_json(py: Python<'_>, rows: &Bound<'_, PyList>) -> PyResult<String> {
    let rows = rows
        .iter()
        .map(|r| fields(r.cast::<PyDict>()?))
        .collect::<PyResult<Vec<Fields>>>()?;
    Ok(py.detach(|| json::rows_to_json(&rows)))
}

/// row_json(row) -> str: one DICOM JSON object (PS3.18 F.2) of a row of DICOM text.
#[pyfunction]
pub fn row_json(row: &Bound<'_, PyDict>) -> PyResult<String> {
    let mut out = String::new();
    json::push_row(&mut out, &fields(row)?);
    Ok(out)
}

/// dump_text(data, transfer_syntax=None) -> str: the human-readable dump.
#[pyfunction]
#[pyo3(signature = (data, transfer_syntax=None))]
pub fn dump_text(py: Python<'_>, data: &[u8], transfer_syntax: Option<&str>) -> PyResult<String> {
    py.detach(|| Ok(parse::dump::to_text(&parse_whole(data, transfer_syntax)?)))
        .map_err(|e| to_py(py, e))
}

/// One row of [`scan_headers`]: error (None when parsed), then the identifying attributes.
type HeaderRow = (
    Option<String>,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    usize,
    usize,
);

fn scan_one(path: &str) -> HeaderRow {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) => {
            let msg = format!("{path}: {e}");
            return (
                Some(msg),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                0,
                0,
            );
        }
    };
    let size = data.len();
    match parse::parse(
        &data,
        ParseOptions {
            transfer_syntax: None,
            stop_at_pixel_data: true,
        },
    ) {
        Ok(p) => {
            let ds = &p.dataset;
            (
                None,
                p.transfer_syntax.clone(),
                p.string(ds, 0x0008_0016),
                p.string(ds, 0x0008_0018),
                p.string(ds, 0x0020_000D),
                p.string(ds, 0x0020_000E),
                p.string(ds, 0x0010_0020),
                p.string(ds, 0x0008_0060),
                ds.elements.len(),
                size,
            )
        }
        Err(e) => (
            Some(format!("{path}: {e}")),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            0,
            size,
        ),
    }
}

/// scan_headers(paths, threads=0) -> list of tuples: reads and parses each file up to its
/// Pixel Data in Rust, in parallel with the GIL released (`threads` 0 = one per core).
/// Each tuple: (error or None, transfer_syntax, sop_class_uid, sop_instance_uid,
/// study_instance_uid, series_instance_uid, patient_id, modality, top-level element count,
/// file size). A file that fails gives its error message instead of raising.
#[pyfunction]
#[pyo3(signature = (paths, threads=0))]
pub fn scan_headers(
    py: Python<'_>,
    paths: Vec<String>,
    threads: usize,
) -> PyResult<Vec<HeaderRow>> {
    use rayon::prelude::*;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
    Ok(py.detach(|| pool.install(|| paths.par_iter().map(|p| scan_one(p)).collect())))
}

/// Registers the parser functions on the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(describe, m)?)?;
    m.add_function(wrap_pyfunction!(dump_json, m)?)?;
    m.add_function(wrap_pyfunction!(dump_text, m)?)?;
    m.add_function(wrap_pyfunction!(rows_json, m)?)?;
    m.add_function(wrap_pyfunction!(row_json, m)?)?;
    m.add_function(wrap_pyfunction!(scan_headers, m)?)?;
    Ok(())
}

/// The whole dataset (pixel data included), as the dump functions show it.
fn parse_whole<'a>(
    data: &'a [u8],
    transfer_syntax: Option<&str>,
) -> duckpacs_core::Result<parse::Parsed<'a>> {
    parse::parse(
        data,
        ParseOptions {
            transfer_syntax,
            stop_at_pixel_data: false,
        },
    )
}
