//! Where the fragments of a received dataset go. The association calls
//! [`DatasetSink::write`] for each P-DATA fragment as it arrives and [`DatasetSink::finish`]
//! once after the last one; only then is the dataset complete. When the association fails
//! before that (abort, truncation, timeout), `finish` is never called and the sink must
//! treat what it got as incomplete (dropping it discards).

use std::io;

/// Receives a dataset fragment by fragment (a C-STORE instance, a C-FIND identifier).
pub trait DatasetSink {
    /// The next fragment, in order. An error stops delivery: the association reads and
    /// drops the rest of the dataset and reports [`crate::net::Error::Sink`], so the
    /// service can still answer with a failure status (0xA700, 0xC000).
    fn write(&mut self, fragment: &[u8]) -> io::Result<()>;
    /// The last fragment has been written: the dataset is complete.
    fn finish(&mut self) -> io::Result<()>;
}

/// Collects the whole dataset in memory, for small ones only.
impl DatasetSink for Vec<u8> {
    fn write(&mut self, fragment: &[u8]) -> io::Result<()> {
        self.extend_from_slice(fragment);
        Ok(())
    }
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<S: DatasetSink + ?Sized> DatasetSink for &mut S {
    fn write(&mut self, fragment: &[u8]) -> io::Result<()> {
        (**self).write(fragment)
    }
    fn finish(&mut self) -> io::Result<()> {
        (**self).finish()
    }
}

/// Drops the dataset (of a request that is refused anyway).
#[derive(Debug, Default, Clone, Copy)]
pub struct Discard;

impl DatasetSink for Discard {
    fn write(&mut self, _fragment: &[u8]) -> io::Result<()> {
        Ok(())
    }
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Collects a dataset in memory up to `limit` bytes (C-FIND identifiers, N-ACTION
/// information); a larger one fails with `io::ErrorKind::OutOfMemory`.
#[derive(Debug, Clone)]
pub struct LimitedVec {
    pub data: Vec<u8>,
    pub limit: usize,
}

impl LimitedVec {
    pub fn new(limit: usize) -> Self {
        LimitedVec {
            data: Vec::new(),
            limit,
        }
    }
}

impl DatasetSink for LimitedVec {
    fn write(&mut self, fragment: &[u8]) -> io::Result<()> {
        if self.data.len() + fragment.len() > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("dataset larger than {} bytes", self.limit),
            ));
        }
        self.data.extend_from_slice(fragment);
        Ok(())
    }
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}
