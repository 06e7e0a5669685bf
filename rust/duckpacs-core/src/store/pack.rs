//! Storage layer, pack files: naming, positional reads, walking the records of a pack with
//! resynchronisation past damage, and torn-tail recovery for a writer's active pack.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::format::*;
use crate::error::{Error, Result};

/// Largest writer id (pack ids are `writer << 32 | seq`, kept below 2^48).
pub const MAX_WRITER: u32 = 0xFFFF;

pub fn pack_id(writer: u32, seq: u32) -> u64 {
    (u64::from(writer) << 32) | u64::from(seq)
}

/// The file name of a pack (a node's packs have the same names in the bucket).
pub fn pack_name(pack: u64) -> String {
    format!(
        "w{:05}-{:08}.dpk",
        (pack >> 32) & 0xFFFF,
        pack & 0xFFFF_FFFF
    )
}

/// Parses `wWWWWW-SSSSSSSS.dpk` back into a pack id.
pub fn parse_pack_name(name: &str) -> Option<u64> {
    let rest = name.strip_prefix('w')?.strip_suffix(".dpk")?;
    let (w, s) = rest.split_once('-')?;
    let w: u32 = w.parse().ok()?;
    let s: u32 = s.parse().ok()?;
    (w <= MAX_WRITER).then(|| pack_id(w, s))
}

/// Every pack in `dir`, sorted by id.
pub fn list_packs(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if let Some(id) = entry.file_name().to_str().and_then(parse_pack_name) {
            out.push((id, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// What a pack is read through: a local file, or another node's pack in object storage.
pub trait PackRead {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
    fn size(&self) -> std::io::Result<u64>;
}

impl PackRead for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }

    fn size(&self) -> std::io::Result<u64> {
        self.metadata().map(|m| m.len())
    }
}

impl<T: PackRead + ?Sized> PackRead for std::sync::Arc<T> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }

    fn size(&self) -> std::io::Result<u64> {
        (**self).size()
    }
}

pub fn read_at<F: PackRead + ?Sized>(
    file: &F,
    path: &Path,
    offset: u64,
    len: usize,
) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)
        .map_err(|e| Error::io(path, e))?;
    Ok(buf)
}

pub fn integrity(path: &Path, offset: u64, message: impl Into<String>) -> Error {
    Error::Integrity {
        path: path.to_path_buf(),
        offset,
        message: message.into(),
    }
}

/// One step of a walk over a pack.
#[derive(Debug)]
pub enum Step {
    /// A record whose header checksum holds (the body is not checked yet).
    Record { offset: u64, header: RecordHeader },
    /// Bytes that hold no valid record header, from `offset` for `len` bytes; the walk
    /// resumes at the next valid header after them (or at the end of the pack).
    Damaged {
        offset: u64,
        len: u64,
        message: String,
    },
    /// The pack ends with `len` bytes that do not form a whole record (a torn write, or a
    /// record still being written by another process).
    Tail { offset: u64, len: u64 },
}

/// Walks the records of one pack by their headers (a local file, or one of this node's
/// packs kept only in object storage).
pub struct Walker<'a> {
    file: &'a dyn PackRead,
    path: &'a Path,
    len: u64,
    at: u64,
}

const WINDOW: usize = 1 << 20;

impl<'a> Walker<'a> {
    pub fn new(file: &'a dyn PackRead, path: &'a Path) -> Result<Walker<'a>> {
        Walker::starting_at(file, path, PACK_HEADER_LEN as u64)
    }

    /// A walk that starts at `offset`, which must be a record boundary (an index mark).
    pub fn starting_at(file: &'a dyn PackRead, path: &'a Path, offset: u64) -> Result<Walker<'a>> {
        let len = file.size().map_err(|e| Error::io(path, e))?;
        let head = read_at(file, path, 0, PACK_HEADER_LEN.min(len as usize))?;
        parse_pack_header(&head).map_err(|m| integrity(path, 0, m))?;
        Ok(Walker {
            file,
            path,
            len,
            at: offset.max(PACK_HEADER_LEN as u64),
        })
    }

    fn header_at(&self, offset: u64) -> Result<std::result::Result<RecordHeader, String>> {
        if self.len - offset < RECORD_HEADER_LEN as u64 {
            return Ok(Err("truncated".into()));
        }
        let b = read_at(self.file, self.path, offset, RECORD_HEADER_LEN)?;
        Ok(parse_record_header(&b).and_then(|h| {
            if offset + h.record_len > self.len {
                Err("record runs past the end of the pack".into())
            } else {
                Ok(h)
            }
        }))
    }

    /// Offset of the next valid record header after `from`, if any.
    fn resync(&self, from: u64) -> Result<Option<u64>> {
        let mut at = from;
        while at < self.len {
            let n = ((self.len - at) as usize).min(WINDOW + RECORD_MAGIC.len());
            let win = read_at(self.file, self.path, at, n)?;
            let mut i = 0;
            while let Some(pos) = win[i..].windows(4).position(|w| w == RECORD_MAGIC) {
                let cand = at + (i + pos) as u64;
                if matches!(self.header_at(cand)?, Ok(h) if self.trailer_ok(cand, &h)?) {
                    return Ok(Some(cand));
                }
                i += pos + 1;
            }
            if n <= RECORD_MAGIC.len() {
                break;
            }
            at += (n - RECORD_MAGIC.len()) as u64;
        }
        Ok(None)
    }

    /// Whether the whole record at `offset` passes its trailer checksum.
    pub fn trailer_ok(&self, offset: u64, h: &RecordHeader) -> Result<bool> {
        super::stream::trailer_holds(self.file, self.path, offset, h.record_len)
    }

    pub fn next_step(&mut self) -> Result<Option<Step>> {
        if self.at >= self.len {
            return Ok(None);
        }
        let offset = self.at;
        match self.header_at(offset)? {
            Ok(h) => {
                self.at += h.record_len;
                Ok(Some(Step::Record { offset, header: h }))
            }
            Err(message) => match self.resync(offset + 1)? {
                Some(next) => {
                    self.at = next;
                    Ok(Some(Step::Damaged {
                        offset,
                        len: next - offset,
                        message,
                    }))
                }
                None => {
                    let len = self.len - offset;
                    self.at = self.len;
                    Ok(Some(Step::Tail { offset, len }))
                }
            },
        }
    }
}

/// Outcome of recovering a writer's last pack.
#[derive(Debug, PartialEq, Eq)]
pub enum Recovery {
    /// The pack ends cleanly at `end` (a torn tail was cut off if `cut` > 0).
    Clean { end: u64, cut: u64 },
    /// The pack holds damage followed by valid records: it is left as it is, and the
    /// writer starts a new pack. `verify` reports the damage.
    Damaged,
}

/// Checks every record of the pack (whole-record checksums) and cuts off a torn tail: bytes
/// after the last valid record that contain no further valid record. Never removes a
/// record that passes its checksum.
pub fn recover(file: &File, path: &Path) -> Result<Recovery> {
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let walker = Walker::new(file, path)?;
    let mut at = PACK_HEADER_LEN as u64;
    while at < len {
        let ok = match walker.header_at(at)? {
            Ok(h) if walker.trailer_ok(at, &h)? => Some(h.record_len),
            _ => None,
        };
        match ok {
            Some(n) => at += n,
            None => {
                if walker.resync(at + 1)?.is_some() {
                    return Ok(Recovery::Damaged);
                }
                file.set_len(at).map_err(|e| Error::io(path, e))?;
                file.sync_all().map_err(|e| Error::io(path, e))?;
                return Ok(Recovery::Clean {
                    end: at,
                    cut: len - at,
                });
            }
        }
    }
    Ok(Recovery::Clean { end: at, cut: 0 })
}
