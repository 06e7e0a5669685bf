//! Maps duckpacs-core errors onto the Python hierarchy in `duckpacs.errors`.
//!
//! The exception classes are defined in Python (so they are easy to read and subclass); this
//! module looks them up by name when an error crosses the boundary.

// The binding modules (parse, store, index) call these as they are added.
#![allow(dead_code)]

use duckpacs_core::Error;
use pyo3::exceptions::{PyFileNotFoundError, PyPermissionError};
use pyo3::prelude::*;

/// Builds an instance of `duckpacs.errors.<class>` carrying `message`.
pub fn py_error(py: Python<'_>, class: &str, message: String) -> PyErr {
    match py
        .import("duckpacs.errors")
        .and_then(|m| m.getattr(class))
        .and_then(|cls| cls.call1((message.clone(),)))
    {
        Ok(instance) => PyErr::from_value(instance),
        Err(e) => e,
    }
}

/// Converts a core error into the matching Python exception.
pub fn to_py(py: Python<'_>, err: Error) -> PyErr {
    let message = err.to_string();
    #[allow(unreachable_patterns)]
    match &err {
        Error::Io { source, .. } => match source.kind() {
            std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(message),
            std::io::ErrorKind::PermissionDenied => PyPermissionError::new_err(message),
            _ => py_error(py, "StorageError", message),
        },
        Error::Store { .. } => py_error(py, "StorageError", message),
        Error::Integrity { .. } => py_error(py, "IntegrityError", message),
        Error::Locked { .. } => py_error(py, "ArchiveLockedError", message),
        Error::Parse { .. } => py_error(py, "ParseError", message),
        _ => py_error(py, "DuckpacsError", message),
    }
}
