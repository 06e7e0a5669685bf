//! Error type shared by the core. Each variant carries enough context (path, tag, offset)
//! for a user to find the problem; the binding crate maps variants onto `duckpacs.errors`.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// I/O failure, with the file it concerned.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The store could not do what was asked (bad argument, unknown location, full pack).
    #[error("{path}: offset {offset}: {message}")]
    Store {
        path: PathBuf,
        offset: u64,
        message: String,
    },
    /// Stored bytes fail a checksum or a structural check: the data on disk is damaged.
    #[error("{path}: offset {offset}: integrity: {message}")]
    Integrity {
        path: PathBuf,
        offset: u64,
        message: String,
    },
    /// Another process holds the write lock of this store writer.
    #[error("{path}: locked by another process")]
    Locked { path: PathBuf },
    /// Malformed or truncated DICOM data: where (byte offset, tag when known) and what was
    /// expected.
    #[error("DICOM parse error at byte {offset}{}: {reason}", fmt_tag(.tag))]
    Parse {
        offset: usize,
        tag: Option<u32>,
        reason: String,
    },
}

fn fmt_tag(tag: &Option<u32>) -> String {
    match tag {
        Some(t) => format!(" in ({:04X},{:04X})", t >> 16, t & 0xFFFF),
        None => String::new(),
    }
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn parse(offset: usize, tag: Option<u32>, reason: impl Into<String>) -> Self {
        Error::Parse {
            offset,
            tag,
            reason: reason.into(),
        }
    }
}
