//! Storage layer, reading: one positional read per record, checked chunk by chunk, the
//! original rebuilt (or one frame), and walks over every record.

use std::collections::HashSet;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use super::format::*;
use super::pack::{self, integrity, read_at, PackRead, Step, Walker};
use super::record::{self};
use super::remote;
use super::*;
use crate::error::{Error, Result};

/// Opens a listed pack; `None` when it has been removed since (a rewrite finished).
pub(super) fn open_pack(path: &std::path::Path) -> Result<Option<File>> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// A pack as the readers see it: one of this node's files, or another node's pack in
/// object storage.
pub enum PackFile {
    Local(File),
    Remote(remote::RemotePack),
}

impl PackFile {
    /// The file of a local pack (rewrites and walks need one).
    pub fn as_file(&self) -> Option<&File> {
        match self {
            PackFile::Local(f) => Some(f),
            PackFile::Remote(_) => None,
        }
    }
}

impl PackRead for PackFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        match self {
            PackFile::Local(f) => PackRead::read_exact_at(f, buf, offset),
            PackFile::Remote(r) => r.read_exact_at(buf, offset),
        }
    }

    fn size(&self) -> std::io::Result<u64> {
        match self {
            PackFile::Local(f) => PackRead::size(f),
            PackFile::Remote(r) => r.size(),
        }
    }
}

/// A live instance found by [`Store::scan`].
#[derive(Debug, Clone)]
pub struct Entry {
    pub location: Location,
    pub meta: Meta,
}

impl Store {
    pub(super) fn pack_path(&self, pack: u64) -> PathBuf {
        self.packs_dir.join(pack::pack_name(pack))
    }

    pub(super) fn file(&self, pack: u64) -> Result<Arc<PackFile>> {
        if let Some(f) = lock(&self.files).get(&pack) {
            return Ok(f.clone());
        }
        let f = if remote::node_of(pack) != 0 {
            PackFile::Remote(self.remote()?.open_pack(pack)?)
        } else {
            match self.open_local(pack) {
                Ok(f) => PackFile::Local(f),
                // Evicted from this node's disk: its copy in the bucket.
                Err(Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound && self.remote.is_some() =>
                {
                    PackFile::Remote(self.remote()?.open_own(pack)?)
                }
                Err(e) => return Err(e),
            }
        };
        let f = Arc::new(f);
        let mut files = lock(&self.files);
        if files.len() >= MAX_OPEN_PACKS {
            // Stay well inside the descriptor limit; readers holding an Arc keep theirs.
            files.clear();
        }
        files.insert(pack, f.clone());
        Ok(f)
    }

    /// The pack holding `loc`, opened again when another node's pack was opened before it
    /// grew past `loc` (uploaded again since).
    pub(super) fn file_for(&self, loc: Location) -> Result<Arc<PackFile>> {
        let f = self.file(loc.pack)?;
        if let PackFile::Remote(r) = &*f {
            if r.size().unwrap_or(0) < loc.offset.saturating_add(loc.length) {
                lock(&self.files).remove(&loc.pack);
                return self.file(loc.pack);
            }
        }
        Ok(f)
    }

    /// One of this node's packs, as a file of its own (rewrites copy from it).
    pub(super) fn local_file(&self, pack: u64) -> Result<Arc<File>> {
        if remote::node_of(pack) != 0 {
            return Err(Error::Store {
                path: self.source_path(pack),
                offset: 0,
                message: "another node's pack is never rewritten here".into(),
            });
        }
        Ok(Arc::new(self.open_local(pack)?))
    }

    fn open_local(&self, pack: u64) -> Result<File> {
        let path = self.pack_path(pack);
        let f = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let head = read_at(&f, &path, 0, PACK_HEADER_LEN)
            .map_err(|_| integrity(&path, 0, "pack header truncated"))?;
        let (w, s) = parse_pack_header(&head).map_err(|m| integrity(&path, 0, m))?;
        if pack::pack_id(w, s) != pack {
            return Err(integrity(&path, 0, "pack header names another pack"));
        }
        Ok(f)
    }

    /// Where a record's errors point: the local file, or the object of another node.
    pub(super) fn source_path(&self, pack: u64) -> PathBuf {
        match (remote::node_of(pack), &self.remote) {
            (0, _) | (_, None) => self.pack_path(pack),
            (_, Some(r)) => r.display_path(pack),
        }
    }

    /// A record read from another node carries that node's pack ids for its dictionary.
    fn from_node(loc: Location, mut p: record::Parsed) -> record::Parsed {
        let node = remote::node_bits(loc.pack);
        if node != 0 && p.meta.dict_id != 0 {
            p.meta.dict_loc.pack = remote::local_id(p.meta.dict_loc.pack) | node;
        }
        p
    }

    /// Reads and checks a whole record (header, metadata and trailer checksums).
    pub(super) fn read_record(&self, loc: Location) -> Result<(Vec<u8>, record::Parsed)> {
        let path = self.source_path(loc.pack);
        let f = self.file_for(loc)?;
        let size = f.size().map_err(|e| Error::io(&path, e))?;
        let fits = loc
            .offset
            .checked_add(loc.length)
            .is_some_and(|end| end <= size);
        if !fits || loc.offset < PACK_HEADER_LEN as u64 || loc.length > MAX_RAW_LEN {
            return Err(Error::Store {
                path,
                offset: loc.offset,
                message: format!("no record of {} bytes here (pack has {size})", loc.length),
            });
        }
        let rec = read_at(&f, &path, loc.offset, loc.length as usize)?;
        let parsed = record::parse_head(&rec).map_err(|m| integrity(&path, loc.offset, m))?;
        if parsed.header.record_len != loc.length {
            return Err(Error::Store {
                path,
                offset: loc.offset,
                message: format!(
                    "record is {} bytes, location says {}",
                    parsed.header.record_len, loc.length
                ),
            });
        }
        check_trailer(&rec).map_err(|m| integrity(&path, loc.offset, m))?;
        Ok((rec, Self::from_node(loc, parsed)))
    }

    /// The original bytes of the instance at `loc`, checked chunk by chunk.
    pub fn get(&self, loc: Location) -> Result<Vec<u8>> {
        let loc = self.forward(loc);
        let (rec, p) = self.read_record(loc)?;
        self.rebuild(loc, &rec, &p, false)
    }

    pub(super) fn rebuild(
        &self,
        loc: Location,
        rec: &[u8],
        p: &record::Parsed,
        sha: bool,
    ) -> Result<Vec<u8>> {
        let path = self.source_path(loc.pack);
        if p.header.kind != Kind::Instance {
            return Err(Error::Store {
                path,
                offset: loc.offset,
                message: format!("record is a {}, not an instance", p.header.kind.name()),
            });
        }
        let dict = self.dictionary(&p.meta)?;
        record::reconstruct(rec, p, dict.as_deref(), sha)
            .map_err(|m| integrity(&path, loc.offset, m))
    }

    /// Metadata (UIDs, SHA-256, sizes) of the record at `loc`, after checking the whole
    /// record's checksum (read a piece at a time: a record may be gigabytes).
    pub fn meta(&self, loc: Location) -> Result<Meta> {
        let loc = self.forward(loc);
        let p = self.read_head(loc)?;
        let path = self.source_path(loc.pack);
        let f = self.file_for(loc)?;
        if !super::stream::trailer_holds(&f, &path, loc.offset, loc.length)? {
            return Err(integrity(&path, loc.offset, "record checksum mismatch"));
        }
        Ok(p.meta)
    }

    /// SHA-256 of the original bytes of the record at `loc`, read from its metadata block
    /// (checked by its own checksum) without reading the chunk data: what an importer needs
    /// right after `put_many`, which computed it.
    pub fn sha256(&self, loc: Location) -> Result<[u8; 32]> {
        Ok(self.read_head(self.forward(loc))?.meta.sha256)
    }

    pub(super) fn read_head(&self, loc: Location) -> Result<record::Parsed> {
        let path = self.source_path(loc.pack);
        let f = self.file_for(loc)?;
        // One read covers header and metadata of most records; a second when it does not.
        let first = loc.length.clamp(RECORD_HEADER_LEN as u64, 8192) as usize;
        let h = read_at(&f, &path, loc.offset, first)?;
        let header = parse_record_header(&h).map_err(|m| integrity(&path, loc.offset, m))?;
        if header.record_len != loc.length {
            return Err(Error::Store {
                path,
                offset: loc.offset,
                message: format!(
                    "record is {} bytes, location says {}",
                    header.record_len, loc.length
                ),
            });
        }
        let n = RECORD_HEADER_LEN + header.meta_len as usize;
        let head = if n <= h.len() {
            h
        } else {
            read_at(&f, &path, loc.offset, n)?
        };
        let p = record::parse_head(&head).map_err(|m| integrity(&path, loc.offset, m))?;
        Ok(Self::from_node(loc, p))
    }

    /// Frame `index` (0-based) of the instance at `loc`: the native frame bytes, or the
    /// encapsulated fragments of that frame concatenated. Reads only that frame's chunks.
    pub fn get_frame(&self, loc: Location, index: usize) -> Result<Vec<u8>> {
        let loc = self.forward(loc);
        let path = self.source_path(loc.pack);
        let p = self.read_head(loc)?;
        let &(first, count) = p.meta.frames.get(index).ok_or_else(|| Error::Store {
            path: path.clone(),
            offset: loc.offset,
            message: format!(
                "no frame {index} (instance has {} in its frame table)",
                p.meta.frames.len()
            ),
        })?;
        let f = self.file_for(loc)?;
        let mut out = Vec::new();
        for c in &p.meta.chunks[first as usize..(first + count) as usize] {
            let stored = read_at(&f, &path, loc.offset + c.offset, c.stored_len as usize)?;
            let raw = record::decode_chunk(&stored, c, None)
                .map_err(|m| integrity(&path, loc.offset, m))?;
            out.extend_from_slice(&raw);
        }
        Ok(out)
    }

    /// Number of frames in the frame table of the instance at `loc`.
    pub fn frame_count(&self, loc: Location) -> Result<usize> {
        Ok(self.read_head(self.forward(loc))?.meta.frames.len())
    }

    /// A listed pack opened for a walk: its file, or its copy in the bucket when evicted.
    pub(super) fn open_listed(
        &self,
        pack: u64,
        listed: &remote::Listed,
    ) -> Result<Option<(Arc<dyn PackRead>, PathBuf)>> {
        match listed {
            remote::Listed::Local(path) => Ok(open_pack(path)?.map(|f| {
                let f: Arc<dyn PackRead> = Arc::new(f);
                (f, path.clone())
            })),
            remote::Listed::Evicted(_) => {
                let f: Arc<dyn PackRead> = self.file(pack)?;
                Ok(Some((f, self.source_path(pack))))
            }
        }
    }

    /// Calls `f` for every record of every pack whose header checksum holds, with its
    /// metadata when that is intact. Damaged spans are skipped.
    pub(super) fn walk_all(
        &self,
        mut f: impl FnMut(Location, &RecordHeader, Option<&Meta>) -> Result<()>,
    ) -> Result<()> {
        let uncommitted = super::compact::uncommitted(&self.packs_dir)?;
        for (pack, listed) in self.listing()? {
            let Some((file, path)) = self.open_listed(pack, &listed)? else {
                continue; // removed since it was listed (a rewrite finished)
            };
            let Ok(mut walker) = Walker::new(&*file, &path) else {
                continue;
            };
            let until = uncommitted.get(&pack).copied().unwrap_or(u64::MAX);
            while let Some(step) = walker.next_step()? {
                if let Step::Record { offset, header } = step {
                    if offset >= until {
                        break;
                    }
                    let loc = Location {
                        pack,
                        offset,
                        length: header.record_len,
                    };
                    let n = RECORD_HEADER_LEN + header.meta_len as usize;
                    let head = read_at(&file, &path, offset, n)?;
                    let meta = record::parse_head(&head).ok().map(|p| p.meta);
                    f(loc, &header, meta.as_ref())?;
                }
            }
        }
        Ok(())
    }

    /// Every live instance (not deleted by a tombstone), in pack order, with its metadata.
    pub fn scan(&self) -> Result<Vec<Entry>> {
        let mut entries = Vec::new();
        let mut dead = HashSet::new();
        self.walk_all(|loc, h, meta| {
            match (h.kind, meta) {
                (Kind::Instance, Some(m)) => entries.push(Entry {
                    location: loc,
                    meta: m.clone(),
                }),
                (Kind::Tombstone, Some(m)) => {
                    dead.insert(m.target);
                }
                _ => {}
            }
            Ok(())
        })?;
        entries.retain(|e| !dead.contains(&e.location));
        Ok(entries)
    }

    /// The original bytes before the pixel data element (the whole header for the index).
    pub fn header_bytes(&self, loc: Location) -> Result<Vec<u8>> {
        let loc = self.forward(loc);
        let path = self.source_path(loc.pack);
        let p = self.read_head(loc)?;
        let c = p
            .meta
            .chunks
            .first()
            .ok_or_else(|| integrity(&path, loc.offset, "no header chunk"))?;
        let f = self.file_for(loc)?;
        let stored = read_at(&f, &path, loc.offset + c.offset, c.stored_len as usize)?;
        let dict = self.dictionary(&p.meta)?;
        let mut h = record::decode_chunk(&stored, c, dict.as_deref())
            .map_err(|m| integrity(&path, loc.offset, m))?;
        h.truncate(p.meta.header_prefix as usize);
        Ok(h)
    }
}
