//! duckpacs-core: the pure-Rust heart of duckpacs.
//!
//! Nothing here knows about Python; the `duckpacs-py` crate is the thin binding layer.

pub mod archive;
pub mod error;
pub mod index;
pub mod layout;
pub mod net;
pub mod parse;
pub mod part10;
pub mod store;

pub use error::{Error, Result};

/// Crate version, reported by `duckpacs version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
