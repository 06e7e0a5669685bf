//! duckpacs._core: the thin pyo3 layer over duckpacs-core.
//!
//! Only conversions live here; logic belongs in duckpacs-core so that it can be tested and
//! fuzzed without Python.

use pyo3::prelude::*;

// Rust-side allocations only (Python objects keep CPython's allocator): building an index
// batch makes many small strings, which glibc's malloc served slowly.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod archive;
mod errors;
mod index;
mod net;
mod parse;
mod store;

/// Build profile of this extension ("release" or "debug").
const PROFILE: &str = if cfg!(debug_assertions) {
    "debug"
} else {
    "release"
};

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", duckpacs_core::VERSION)?;
    m.add("BUILD_PROFILE", PROFILE)?;
    m.add("RUSTC_VERSION", env!("DUCKPACS_RUSTC_VERSION"))?;
    m.add_class::<store::Store>()?;
    m.add_class::<store::ScanIter>()?;
    m.add_class::<store::InstanceStream>()?;
    parse::register(m)?;
    index::register(m)?;
    archive::register(m)?;
    net::register(m)?;
    // Rust's `log` records (the DICOM listener's) go to Python's logging, under logger
    // names from their module path (`duckpacs_core.net...`; see duckpacs.logs).
    let _ = pyo3_log::Logger::new(m.py(), pyo3_log::Caching::LoggersAndLevels)?.install();
    Ok(())
}
