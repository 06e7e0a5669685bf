//! Archive layer, the duplicate rule: when are two arrivals of one SOP Instance UID the same
//! instance?
//!
//! The same instance reaches the archive with different File Meta Information: a file from
//! disk carries its creator's meta, a C-STORE gets the meta we build (PS3.10 7.1). Only the
//! dataset is the instance, so two arrivals are the same when their datasets (everything
//! after group 0002) are byte-identical. Comparing whole-stream SHA-256 first answers the
//! common case (the same file sent twice) without reading the stored copy.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::pending::Known;
use crate::part10;
use crate::store::Store;

/// Everything after the File Meta Information (the whole buffer when there is none).
pub fn dataset_part(stream: &[u8]) -> &[u8] {
    match part10::split(stream) {
        Ok(f) => stream.get(f.dataset_offset..).unwrap_or(&[]),
        Err(_) => stream,
    }
}

/// Whether `new` holds the same dataset as `stored` (PS3.10 framing aside).
pub fn same_dataset(stored: &[u8], new: &[u8]) -> bool {
    dataset_part(stored) == dataset_part(new)
}

/// Whether the file at `path` holds the dataset archived as `known`, compared as streams
/// (an instance of gigabytes is never read whole): the SHA-256 of the whole file first, then
/// the datasets piece by piece. An unreadable side counts as different.
pub fn same_file(store: &Store, known: &Known, path: &Path) -> bool {
    let whole_sha = File::open(path).and_then(|mut f| {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; PIECE];
        loop {
            match f.read(&mut buf)? {
                0 => return Ok(h.finalize()),
                n => h.update(&buf[..n]),
            }
        }
    });
    if whole_sha.is_ok_and(|d| d.as_slice() == known.sha256) {
        return true;
    }
    let (Ok(mut stored), Ok(mut new)) = (store.open_instance(known.location), File::open(path))
    else {
        return false;
    };
    same_dataset_streams(&mut stored, &mut new).unwrap_or(false)
}

/// [`same_dataset`] for two streams, in bounded memory.
pub fn same_dataset_streams(a: &mut dyn Read, b: &mut dyn Read) -> io::Result<bool> {
    let (mut a_head, mut b_head) = (head(a)?, head(b)?);
    let (a_at, b_at) = (dataset_start(&a_head), dataset_start(&b_head));
    a_head.drain(..a_at.min(a_head.len()));
    b_head.drain(..b_at.min(b_head.len()));
    let mut a = io::Cursor::new(a_head).chain(a);
    let mut b = io::Cursor::new(b_head).chain(b);
    let (mut x, mut y) = (vec![0u8; PIECE], vec![0u8; PIECE]);
    loop {
        let n = fill(&mut a, &mut x)?;
        let m = fill(&mut b, &mut y)?;
        if n != m || x[..n] != y[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Bytes compared at once, and the most the File Meta Information may take.
const PIECE: usize = 1 << 20;

fn head(r: &mut dyn Read) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.take(PIECE as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

fn dataset_start(head: &[u8]) -> usize {
    part10::split(head).map_or(0, |f| f.dataset_offset)
}

/// Reads until `buf` is full or the stream ends; the count read.
fn fill(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meta_does_not_make_two_instances_differ() {
        let dataset = b"\x08\x00\x18\x00\x04\x00\x00\x001.2\x00".to_vec();
        let mut from_disk = part10::build_meta("1.2", "1.2", "1.2.840.10008.1.2.1", "");
        from_disk.extend_from_slice(&dataset);
        let mut over_dimse = part10::build_meta("1.2", "1.2", "1.2.840.10008.1.2.1", "CT1");
        over_dimse.extend_from_slice(&dataset);
        assert_ne!(from_disk, over_dimse);
        assert!(same_dataset(&from_disk, &over_dimse));
        let mut other = over_dimse.clone();
        *other.last_mut().unwrap() = b'9';
        assert!(!same_dataset(&from_disk, &other));
        let streams = |a: &[u8], b: &[u8]| same_dataset_streams(&mut &a[..], &mut &b[..]).unwrap();
        assert!(streams(&from_disk, &over_dimse));
        assert!(!streams(&from_disk, &other));
        assert!(!streams(&from_disk, &from_disk[..from_disk.len() - 1]));
    }
}
