//! Storage layer, streams: records written and read a chunk at a time, so that an instance
//! of gigabytes goes in and comes out in bounded memory.
//!
//! - [`RecordOut`] writes a record in place in a pack file: the metadata block's length
//!   depends only on counts (chunks, plan pieces, frames, strings), so chunk data is written
//!   first at its final offset, then the header and metadata, then the trailer (whose
//!   checksum is computed by reading the record back in pieces).
//! - [`Store::put_stream`] encodes an original read from any [`Read`] frame by frame into a
//!   pack of its own (written as `*.dpk.partial`, renamed once durable).
//! - [`InstanceReader`] rebuilds the original chunk by chunk, checking each chunk's xxh3 as
//!   it goes and the SHA-256 at the end.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::Xxh3Default;

use super::format::*;
use super::pack::{self, integrity, read_at, PackRead};
use super::record::{self, DictRef};
use super::*;
use crate::error::{Error, Result};
use crate::layout::InstanceLayout;

/// Pieces read or written at once when streaming (also the largest raw pixel chunk).
pub(super) const PIECE: usize = 1 << 20;

/// Originals at least this large are stored by [`Store::put_file`] as a stream, in a pack
/// of their own; smaller ones go through the ordinary, group-committed path.
pub const STREAM_MIN: u64 = 64 << 20;

/// xxh3-64 of `len` bytes of `file` from `offset`, read a piece at a time.
pub(super) fn xxh3_range<F: PackRead + ?Sized>(
    file: &F,
    path: &Path,
    offset: u64,
    len: u64,
) -> Result<u64> {
    let mut h = Xxh3Default::new();
    let mut buf = vec![0u8; PIECE.min(len as usize)];
    let mut done = 0u64;
    while done < len {
        let n = PIECE.min((len - done) as usize);
        PackRead::read_exact_at(file, &mut buf[..n], offset + done)
            .map_err(|e| Error::io(path, e))?;
        h.update(&buf[..n]);
        done += n as u64;
    }
    Ok(h.digest())
}

/// Whether the trailer of the `record_len`-byte record at `offset` holds (bounded memory).
pub(super) fn trailer_holds<F: PackRead + ?Sized>(
    file: &F,
    path: &Path,
    offset: u64,
    record_len: u64,
) -> Result<bool> {
    if record_len < (RECORD_HEADER_LEN + TRAILER_LEN) as u64 {
        return Ok(false);
    }
    let body = record_len - TRAILER_LEN as u64;
    let t = read_at(file, path, offset + body, TRAILER_LEN)?;
    if t[..8] != TRAILER_MAGIC {
        return Ok(false);
    }
    let mut want = [0u8; 8];
    want.copy_from_slice(&t[8..]);
    Ok(xxh3_range(file, path, offset, body)? == u64::from_le_bytes(want))
}

/// Copies `len` bytes between files a piece at a time.
pub(super) fn copy_range(
    src: (&File, &Path, u64),
    dst: (&File, &Path, u64),
    len: u64,
) -> Result<()> {
    let mut buf = vec![0u8; PIECE.min(len as usize)];
    let mut done = 0u64;
    while done < len {
        let n = PIECE.min((len - done) as usize);
        FileExt::read_exact_at(src.0, &mut buf[..n], src.2 + done)
            .map_err(|e| Error::io(src.1, e))?;
        dst.0
            .write_all_at(&buf[..n], dst.2 + done)
            .map_err(|e| Error::io(dst.1, e))?;
        done += n as u64;
    }
    Ok(())
}

/// A record being written in place at `base` of a pack file (see the module docs).
#[derive(Debug, Clone)]
pub(super) struct RecordOut {
    base: u64,
    data_start: u64,
    /// Next chunk data offset, relative to the record.
    at: u64,
}

impl RecordOut {
    /// Chunk data will start after a metadata block as long as `meta`'s (same counts).
    pub(super) fn new(base: u64, meta: &Meta) -> RecordOut {
        let data_start = record::data_start(meta);
        RecordOut {
            base,
            data_start,
            at: data_start,
        }
    }

    /// Where the record starts in its pack.
    pub(super) fn base(&self) -> u64 {
        self.base
    }

    /// Offset (relative to the record) where chunk data starts.
    pub(super) fn data_start(&self) -> u64 {
        self.data_start
    }

    /// Counts `n` bytes of chunk data written by other means (a verbatim copy).
    pub(super) fn advance(&mut self, n: u64) {
        self.at += n;
    }

    /// Writes one chunk's stored bytes; returns their offset in the record.
    pub(super) fn put(&mut self, file: &File, path: &Path, data: &[u8]) -> Result<u64> {
        let at = self.at;
        file.write_all_at(data, self.base + at)
            .map_err(|e| Error::io(path, e))?;
        self.at += data.len() as u64;
        Ok(at)
    }

    /// Writes header, metadata (whose chunk table must now be final) and trailer; returns
    /// the record's length.
    pub(super) fn finish(
        self,
        file: &File,
        path: &Path,
        kind: Kind,
        flags: u8,
        meta: &Meta,
    ) -> Result<u64> {
        let record_len = self.at + TRAILER_LEN as u64;
        let head = record::head_bytes(kind, flags, meta, record_len);
        if head.len() as u64 != self.data_start {
            return Err(Error::Store {
                path: path.to_path_buf(),
                offset: self.base,
                message: "metadata block changed length while the record was written".into(),
            });
        }
        file.write_all_at(&head, self.base)
            .map_err(|e| Error::io(path, e))?;
        let sum = xxh3_range(file, path, self.base, self.at)?;
        let mut t = [0u8; TRAILER_LEN];
        t[..8].copy_from_slice(&TRAILER_MAGIC);
        t[8..].copy_from_slice(&sum.to_le_bytes());
        file.write_all_at(&t, self.base + self.at)
            .map_err(|e| Error::io(path, e))?;
        Ok(record_len)
    }
}

/// A pack being written under a temporary name; removed unless [`PartialPack::publish`]ed.
pub(super) struct PartialPack {
    file: File,
    tmp: PathBuf,
    path: PathBuf,
    published: bool,
}

impl PartialPack {
    pub(super) fn create(dir: &Path, writer: u32, seq: u32) -> Result<PartialPack> {
        let path = dir.join(pack::pack_name(pack::pack_id(writer, seq)));
        let tmp = partial_name(&path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        let p = PartialPack {
            file,
            tmp,
            path,
            published: false,
        };
        p.file
            .write_all_at(&pack_header(writer, seq), 0)
            .map_err(|e| Error::io(&p.tmp, e))?;
        Ok(p)
    }

    /// Makes the pack durable, then gives it its real name (atomically visible).
    pub(super) fn publish(mut self, sync: bool) -> Result<File> {
        if sync {
            self.file.sync_all().map_err(|e| Error::io(&self.tmp, e))?;
        }
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        if let Some(dir) = self.path.parent() {
            if sync {
                sync_dir(dir)?;
            }
        }
        self.published = true;
        self.file.try_clone().map_err(|e| Error::io(&self.path, e))
    }
}

impl Drop for PartialPack {
    fn drop(&mut self) {
        if !self.published {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

fn partial_name(pack: &Path) -> PathBuf {
    let mut s = pack.as_os_str().to_os_string();
    s.push(".partial");
    PathBuf::from(s)
}

/// Removes the partial packs a killed stream of writer `id` left (never acknowledged).
pub(super) fn remove_partials(dir: &Path, id: u32) -> Result<()> {
    let prefix = format!("w{id:05}-");
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".dpk.partial") {
            let p = entry.path();
            std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
        }
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes of the original, naming the offset on a short read.
fn read_original(r: &mut dyn Read, buf: &mut [u8], at: usize, path: &Path) -> Result<()> {
    r.read_exact(buf).map_err(|e| Error::Store {
        path: path.to_path_buf(),
        offset: at as u64,
        message: format!("reading the original at byte {at}: {e}"),
    })
}

impl Store {
    /// Stores an original of `len` bytes read from `reader` (in order, once) as a stream:
    /// one pixel chunk in memory at a time, in a pack of its own. `layout` describes the
    /// original as [`Store::put_held`]'s does (offsets from its first byte). Returns once
    /// the record is durable; `hold` as for [`Store::put_held`].
    pub fn put_stream(
        &self,
        reader: &mut dyn Read,
        len: u64,
        layout: Option<&InstanceLayout>,
        provenance: &Provenance,
        hold: bool,
    ) -> Result<(Location, [u8; 32])> {
        let w = self.writer()?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&n| n as u64 <= MAX_RAW_LEN)
            .ok_or_else(|| Error::Store {
                path: self.packs_dir.clone(),
                offset: 0,
                message: format!("an original of {len} bytes is larger than a record may be"),
            })?;
        let planned = record::plan_instance(len, layout, provenance);
        let levels = self.opts.levels;
        let flags = if planned.arrival(&levels) {
            RECORD_FLAG_ARRIVAL
        } else {
            0
        };
        let dict = self.series_dict(layout);
        let header_len = planned.header_len();
        let record::Planned { mut meta, cuts, .. } = planned;
        meta.chunks = vec![Chunk::default(); cuts.len() + 1];
        if let Some(d) = &dict {
            // Set now so the metadata has its final shape; cleared if zstd keeps it raw.
            meta.dict_id = d.id;
            meta.dict_loc = d.loc;
        }
        let seq = {
            let mut st = lock(&w.state);
            let s = st.next_seq;
            st.next_seq = s.saturating_add(1);
            s
        };
        let part = PartialPack::create(&self.packs_dir, w.id, seq)?;
        let base = PACK_HEADER_LEN as u64;
        let mut out = RecordOut::new(base, &meta);
        let mut sha = Sha256::new();
        let mut header_stream = Vec::with_capacity(header_len);
        let mut buf = Vec::new();
        let mut pos = 0usize;
        for (i, cut) in cuts.iter().enumerate() {
            let gap = cut.range.start - pos;
            let h0 = header_stream.len();
            header_stream.resize(h0 + gap, 0);
            read_original(reader, &mut header_stream[h0..], pos, &part.tmp)?;
            sha.update(&header_stream[h0..]);
            buf.resize(cut.range.len(), 0);
            read_original(reader, &mut buf, cut.range.start, &part.tmp)?;
            sha.update(&buf);
            let (data, mut chunk) = record::encode_cut(&buf, cut, &levels)
                .map_err(|m| integrity(&part.tmp, base, m))?;
            chunk.offset = out.put(&part.file, &part.tmp, &data)?;
            meta.chunks[i + 1] = chunk;
            pos = cut.range.end;
        }
        let h0 = header_stream.len();
        header_stream.resize(h0 + (len - pos), 0);
        read_original(reader, &mut header_stream[h0..], pos, &part.tmp)?;
        sha.update(&header_stream[h0..]);
        meta.sha256.copy_from_slice(&sha.finalize());
        let (data, mut chunk) =
            record::encode_header(&header_stream, dict.as_deref(), &levels, &mut meta)
                .map_err(|m| integrity(&part.tmp, base, m))?;
        if chunk.codec != CODEC_ZSTD_DICT {
            meta.dict_id = 0;
            meta.dict_loc = Location::default();
        }
        chunk.offset = out.put(&part.file, &part.tmp, &data)?;
        meta.chunks[0] = chunk;
        let record_len = out.finish(&part.file, &part.tmp, Kind::Instance, flags, &meta)?;
        let pack_id = pack::pack_id(w.id, seq);
        part.publish(self.opts.sync)?;
        {
            let mut st = lock(&w.state);
            st.ends.insert(pack_id, base + record_len);
            if hold {
                st.held.insert((pack_id, base));
            }
            st.written += 1;
        }
        if meta.dict_id == 0 {
            self.learn(&meta.series_instance_uid, &header_stream)?;
        }
        let loc = Location {
            pack: pack_id,
            offset: base,
            length: record_len,
        };
        Ok((loc, meta.sha256))
    }

    /// Stores the file at `path` (see [`Store::put_held`]): read into memory when small,
    /// streamed into a pack of its own from [`STREAM_MIN`] bytes on.
    pub fn put_file(
        &self,
        path: &Path,
        layout: Option<&InstanceLayout>,
        provenance: &Provenance,
        hold: bool,
    ) -> Result<(Location, [u8; 32])> {
        let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
        if len < STREAM_MIN {
            let mut buf = Vec::with_capacity(len as usize);
            f.read_to_end(&mut buf).map_err(|e| Error::io(path, e))?;
            return self.put_held(&buf, layout, provenance, hold);
        }
        self.put_stream(&mut f, len, layout, provenance, hold)
    }

    /// A reader of the original bytes of the instance at `loc`, rebuilt a chunk at a time
    /// (see [`InstanceReader`]).
    pub fn open_instance(&self, loc: Location) -> Result<InstanceReader> {
        let loc = self.forward(loc);
        let path = self.source_path(loc.pack);
        let p = self.read_head(loc)?;
        if p.header.kind != Kind::Instance {
            return Err(Error::Store {
                path,
                offset: loc.offset,
                message: format!("record is a {}, not an instance", p.header.kind.name()),
            });
        }
        let file = self.file_for(loc)?;
        let dict = self.dictionary(&p.meta)?;
        InstanceReader::new(file, path, loc, p.meta, dict)
    }
}

/// The original bytes of one instance, rebuilt chunk by chunk in plan order. Each chunk's
/// xxh3 is checked as it is read; when the last byte has been produced the SHA-256 of
/// everything produced is compared with the record's, and a mismatch is an integrity
/// error instead of the end of the stream.
pub struct InstanceReader {
    file: Arc<PackFile>,
    path: PathBuf,
    loc: Location,
    meta: Meta,
    header: Vec<u8>,
    header_at: usize,
    next: usize,
    sha: Sha256,
    checked: bool,
    buf: Vec<u8>,
    buf_at: usize,
}

impl InstanceReader {
    fn new(
        file: Arc<PackFile>,
        path: PathBuf,
        loc: Location,
        meta: Meta,
        dict: Option<DictRef>,
    ) -> Result<InstanceReader> {
        let first = meta.chunks.first().ok_or_else(|| {
            integrity(&path, loc.offset, "instance record without a header chunk")
        })?;
        let stored = read_at(
            &file,
            &path,
            loc.offset + first.offset,
            first.stored_len as usize,
        )?;
        let header = record::decode_chunk(&stored, first, dict.as_deref())
            .map_err(|m| integrity(&path, loc.offset, m))?;
        Ok(InstanceReader {
            file,
            path,
            loc,
            meta,
            header,
            header_at: 0,
            next: 0,
            sha: Sha256::new(),
            checked: false,
            buf: Vec::new(),
            buf_at: 0,
        })
    }

    /// Length of the original in bytes.
    pub fn size(&self) -> u64 {
        self.meta.original_len
    }

    /// The record's metadata (UIDs, transfer syntax, frame table).
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// The next piece of the original (a run of header bytes or one decoded chunk), or
    /// `None` at the end once the SHA-256 has been checked.
    pub fn next_piece(&mut self) -> Result<Option<Vec<u8>>> {
        let Some(&piece) = self.meta.plan.get(self.next) else {
            if !self.checked {
                self.checked = true;
                let sha = std::mem::take(&mut self.sha).finalize();
                if sha[..] != self.meta.sha256[..] {
                    return Err(integrity(
                        &self.path,
                        self.loc.offset,
                        "rebuilt instance does not match its SHA-256",
                    ));
                }
            }
            return Ok(None);
        };
        self.next += 1;
        let out = match piece {
            Piece::Header(n) => {
                let end = self
                    .header_at
                    .checked_add(n as usize)
                    .filter(|&e| e <= self.header.len())
                    .ok_or_else(|| {
                        integrity(
                            &self.path,
                            self.loc.offset,
                            "plan reads past the header stream",
                        )
                    })?;
                let v = self.header[self.header_at..end].to_vec();
                self.header_at = end;
                v
            }
            Piece::Chunk(i) => {
                let c = &self.meta.chunks[i as usize];
                let stored = read_at(
                    &self.file,
                    &self.path,
                    self.loc.offset + c.offset,
                    c.stored_len as usize,
                )?;
                record::decode_chunk(&stored, c, None)
                    .map_err(|m| integrity(&self.path, self.loc.offset, m))?
            }
        };
        self.sha.update(&out);
        Ok(Some(out))
    }
}

impl Read for InstanceReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buf_at >= self.buf.len() {
            match self.next_piece() {
                Ok(Some(p)) => {
                    self.buf = p;
                    self.buf_at = 0;
                }
                Ok(None) => return Ok(0),
                Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            }
        }
        let n = out.len().min(self.buf.len() - self.buf_at);
        out[..n].copy_from_slice(&self.buf[self.buf_at..self.buf_at + n]);
        self.buf_at += n;
        Ok(n)
    }
}

/// A file mapped read-only, for describing a large original without reading it into
/// memory: the parser touches the pages of the header (and of anything after the pixel
/// data), not the pixel values.
pub struct MappedFile {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and private; nothing mutates it through this handle.
unsafe impl Send for MappedFile {}
// SAFETY: as above: shared access is read-only.
unsafe impl Sync for MappedFile {}

impl MappedFile {
    /// Maps `path`. The file must not shrink while mapped (a read past its new end raises
    /// SIGBUS): map files that this process is reading, not ones another is rewriting.
    pub fn open(path: &Path) -> Result<MappedFile> {
        use std::os::unix::io::AsRawFd;
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
        let len = usize::try_from(len).map_err(|_| Error::Store {
            path: path.to_path_buf(),
            offset: 0,
            message: "file too large to map".into(),
        })?;
        if len == 0 {
            return Ok(MappedFile {
                ptr: std::ptr::null_mut(),
                len: 0,
            });
        }
        // SAFETY: a fresh private read-only mapping of a file we opened; checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                f.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::io(path, std::io::Error::last_os_error()));
        }
        Ok(MappedFile { ptr, len })
    }
}

impl std::ops::Deref for MappedFile {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr` maps `len` readable bytes for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmapping exactly the mapping created in `open`.
            unsafe {
                libc::munmap(self.ptr, self.len);
            }
        }
    }
}

/// The layout of the file at `path`, parsed through a read-only mapping (see
/// [`MappedFile`]); `None` when the parser refuses it (it is then stored whole).
pub fn describe_file(path: &Path, transfer_syntax: Option<&str>) -> Result<Option<InstanceLayout>> {
    let map = MappedFile::open(path)?;
    Ok(crate::parse::describe(&map, transfer_syntax).ok())
}
