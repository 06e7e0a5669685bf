//! C-STORE SCP, the spool: an instance arriving over the network is kept in memory while
//! it is small and moves to a file once it passes [`SPOOL_AT`], so receiving an instance of
//! gigabytes costs no more memory than a small one. A spooled file goes through
//! [`crate::archive::Writer::store_file`] and is removed once stored (or refused).
//!
//! Spool files live in `<store>/spool/`. They hold nothing acknowledged (success is only
//! answered once the instance is in the store), so files left by a killed process are
//! removed when the next writer starts ([`clear`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::net::DatasetSink;

/// Instances up to this size stay in memory; larger ones are written to a spool file.
pub const SPOOL_AT: usize = 8 << 20;

/// The folder of spool files under a store's root.
pub fn dir(store_root: &Path) -> PathBuf {
    store_root.join("spool")
}

/// Removes spool files left behind by a killed process (best effort: a file that cannot
/// be removed is only wasted space).
pub fn clear(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// A received instance: in memory, or in a spool file removed when this is dropped.
pub enum Received {
    Memory(Vec<u8>),
    File(SpoolFile),
}

impl Received {
    pub fn len(&self) -> u64 {
        match self {
            Received::Memory(v) => v.len() as u64,
            Received::File(f) => f.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A spool file, removed on drop.
pub struct SpoolFile {
    pub path: PathBuf,
    pub len: u64,
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// A [`DatasetSink`] that starts in memory (with `head`, e.g. the File Meta Information we
/// built) and spills to a spool file past [`SPOOL_AT`].
pub struct Spool {
    dir: PathBuf,
    at: usize,
    mem: Vec<u8>,
    file: Option<(BufWriter<File>, SpoolFile)>,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

impl Spool {
    pub fn new(dir: PathBuf, head: Vec<u8>) -> Spool {
        Spool::with_threshold(dir, head, SPOOL_AT)
    }

    /// As [`Spool::new`], spilling past `at` bytes (tests use a small one).
    pub fn with_threshold(dir: PathBuf, head: Vec<u8>, at: usize) -> Spool {
        Spool {
            dir,
            at,
            mem: head,
            file: None,
        }
    }

    /// What was received (call after the association finished the dataset).
    pub fn into_received(mut self) -> io::Result<Received> {
        match self.file.take() {
            None => Ok(Received::Memory(std::mem::take(&mut self.mem))),
            Some((w, spool)) => {
                w.into_inner().map_err(|e| e.into_error())?;
                Ok(Received::File(spool))
            }
        }
    }

    fn spill(&mut self) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{}-{n}.dcm", std::process::id()));
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        // Owned from here on: an error below removes the file again.
        let mut spool = SpoolFile { path, len: 0 };
        let mut w = BufWriter::with_capacity(1 << 20, f);
        w.write_all(&self.mem)?;
        spool.len = self.mem.len() as u64;
        self.mem = Vec::new();
        self.file = Some((w, spool));
        Ok(())
    }
}

impl DatasetSink for Spool {
    fn write(&mut self, fragment: &[u8]) -> io::Result<()> {
        if let Some((w, spool)) = &mut self.file {
            w.write_all(fragment)?;
            spool.len += fragment.len() as u64;
            return Ok(());
        }
        self.mem.extend_from_slice(fragment);
        if self.mem.len() > self.at {
            self.spill()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        if let Some((w, _)) = &mut self.file {
            w.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_stays_in_memory_large_spills_and_is_removed_after() {
        let dir = tempfile::tempdir().unwrap();
        let mut small = Spool::with_threshold(dir.path().join("spool"), b"HEAD".to_vec(), 16);
        small.write(b"0123").unwrap();
        small.finish().unwrap();
        assert!(matches!(small.into_received().unwrap(), Received::Memory(v) if v == b"HEAD0123"));

        let mut big = Spool::with_threshold(dir.path().join("spool"), b"HEAD".to_vec(), 16);
        for _ in 0..10 {
            big.write(b"0123456789").unwrap();
        }
        big.finish().unwrap();
        let Received::File(f) = big.into_received().unwrap() else {
            panic!("not spilled");
        };
        let path = f.path.clone();
        let bytes = fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, f.len);
        assert_eq!(&bytes[..4], b"HEAD");
        assert_eq!(bytes.len(), 104);
        drop(f);
        assert!(!path.exists());
    }

    #[test]
    fn an_abandoned_spool_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::with_threshold(dir.path().to_path_buf(), Vec::new(), 1);
        s.write(b"abc").unwrap();
        drop(s); // the association failed before `finish`
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
