//! Storage layer, on-disk format: pack header, record header, metadata block, chunk table and
//! trailer, with their checksums. `docs/STORAGE-FORMAT.md` describes the same bytes in prose;
//! keep the two in step. All integers are little endian.
//!
//! Nothing here touches files: encoders fill a `Vec<u8>`, decoders take slices and return a
//! message (turned into an integrity error with path and offset by the caller) when a
//! structure or checksum does not hold.

use xxhash_rust::xxh3::xxh3_64;

pub const PACK_MAGIC: [u8; 8] = *b"\x89DPK\r\n\x1a\n";
pub const PACK_VERSION: u16 = 1;
pub const PACK_HEADER_LEN: usize = 32;

pub const RECORD_MAGIC: [u8; 4] = *b"DREC";
/// Version 2 appends the provenance (received time, source AE title) to the metadata block;
/// version 1 records are still read (their provenance is unknown).
pub const RECORD_VERSION: u8 = 2;
pub const RECORD_VERSION_1: u8 = 1;
pub const RECORD_HEADER_LEN: usize = 40;
/// Record header flag (byte 6): the pixel chunks are still in the arrival encoding (cheap,
/// written as instances arrive); densifying rewrites the record in the dense encoding.
/// Readers that predate the flag ignore byte 6 and still read the record: every chunk
/// names its own filter and codec.
pub const RECORD_FLAG_ARRIVAL: u8 = 1;
pub const TRAILER_MAGIC: [u8; 8] = *b"DRECEND\0";
pub const TRAILER_LEN: usize = 16;
pub const CHUNK_ENTRY_LEN: usize = 48;

/// Largest value the format accepts for any decoded length (a DICOM value is < 4 GiB).
pub const MAX_RAW_LEN: u64 = 1 << 34;

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Instance = 1,
    Tombstone = 2,
    Dictionary = 3,
}

impl Kind {
    pub fn from_u8(v: u8) -> Option<Kind> {
        match v {
            1 => Some(Kind::Instance),
            2 => Some(Kind::Tombstone),
            3 => Some(Kind::Dictionary),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Instance => "instance",
            Kind::Tombstone => "tombstone",
            Kind::Dictionary => "dictionary",
        }
    }
}

/// Where a record is: the pack (`writer << 32 | seq`), its byte offset and total length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Location {
    pub pack: u64,
    pub offset: u64,
    pub length: u64,
}

/// Filters (applied before the codec, undone after it).
pub const FILTER_NONE: u8 = 0;
pub const FILTER_SHUFFLE: u8 = 1;
pub const FILTER_MED: u8 = 2;
/// MED residuals split by activity class, each class stream compressed on its own.
pub const FILTER_MED_CLASSES: u8 = 3;
/// Codecs.
pub const CODEC_STORED: u8 = 0;
pub const CODEC_ZSTD: u8 = 1;
pub const CODEC_ZSTD_DICT: u8 = 2;
/// Chunk flags.
pub const FLAG_BIG_ENDIAN: u8 = 1;
pub const FLAG_SIGNED: u8 = 2;
/// The chunk is in the arrival encoding; byte 37 names the filter densifying applies.
pub const FLAG_ARRIVAL: u8 = 4;

/// One entry of the chunk table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chunk {
    /// Offset of the stored bytes from the start of the record.
    pub offset: u64,
    pub stored_len: u64,
    pub raw_len: u64,
    /// xxh3-64 of the stored bytes.
    pub xxh3: u64,
    pub filter: u8,
    pub codec: u8,
    pub level: i8,
    pub sample_bytes: u8,
    pub flags: u8,
    pub row_len: u32,
    pub stride: u32,
    /// Byte 37, for a chunk flagged [`FLAG_ARRIVAL`]: the filter it gets when densified
    /// (its geometry fields above already describe the samples). 0 otherwise.
    pub dense_filter: u8,
}

/// One step of the reconstruction plan: the original bytes are these pieces in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// The next `n` bytes of the header stream (chunk 0).
    Header(u64),
    /// All bytes of chunk `i`.
    Chunk(u32),
}

/// The metadata block of a record (same layout for every kind; unused fields are zero).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Meta {
    /// SHA-256 of the original bytes (instance) or of the deleted original (tombstone).
    pub sha256: [u8; 32],
    pub original_len: u64,
    /// Length of the original's prefix before the top-level pixel data element.
    pub header_prefix: u64,
    /// Dictionary the header chunk was compressed with (0 = none) and where it was written.
    pub dict_id: u64,
    pub dict_loc: Location,
    /// Tombstone: the record it deletes.
    pub target: Location,
    pub transfer_syntax: String,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub patient_id: String,
    pub modality: String,
    pub plan: Vec<Piece>,
    /// Frame i is chunks `first .. first + count`.
    pub frames: Vec<(u32, u32)>,
    pub chunks: Vec<Chunk>,
    /// When and from whom the instance arrived (record version 2; unknown in version 1).
    pub provenance: Provenance,
}

/// Where an instance came from: kept in the store so that a rebuilt index can restore it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Provenance {
    /// Microseconds since the Unix epoch (UTC) when the archive received it; 0 = unknown.
    pub received_at_us: u64,
    /// Calling AE title of the association that sent it; empty for files imported from disk.
    pub source_ae: String,
}

impl Provenance {
    /// Received now (the system clock) from `source_ae`.
    pub fn now(source_ae: &str) -> Provenance {
        let us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        Provenance {
            received_at_us: us,
            source_ae: source_ae.to_string(),
        }
    }
}

/// The fixed record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub kind: Kind,
    /// Record version (1 or 2): decides whether the metadata block ends with the provenance.
    pub version: u8,
    /// Byte 6: [`RECORD_FLAG_ARRIVAL`]; bits a reader does not know are ignored.
    pub flags: u8,
    pub meta_len: u32,
    pub n_chunks: u32,
    pub record_len: u64,
    pub meta_xxh3: u64,
}

pub fn pack_header(writer: u32, seq: u32) -> [u8; PACK_HEADER_LEN] {
    let mut h = [0u8; PACK_HEADER_LEN];
    h[..8].copy_from_slice(&PACK_MAGIC);
    h[8..10].copy_from_slice(&PACK_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&writer.to_le_bytes());
    h[16..20].copy_from_slice(&seq.to_le_bytes());
    let sum = xxh3_64(&h[..24]);
    h[24..32].copy_from_slice(&sum.to_le_bytes());
    h
}

/// Checks a pack header and returns (writer, seq).
pub fn parse_pack_header(h: &[u8]) -> Result<(u32, u32), String> {
    if h.len() < PACK_HEADER_LEN {
        return Err("pack header truncated".into());
    }
    if h[..8] != PACK_MAGIC {
        return Err("not a duckpacs pack (bad magic)".into());
    }
    if xxh3_64(&h[..24]) != u64_at(h, 24) {
        return Err("pack header checksum mismatch".into());
    }
    let version = u16::from_le_bytes([h[8], h[9]]);
    if version != PACK_VERSION {
        return Err(format!("unsupported pack version {version}"));
    }
    Ok((u32_at(h, 12), u32_at(h, 16)))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

pub fn record_header(h: &RecordHeader) -> [u8; RECORD_HEADER_LEN] {
    let mut b = [0u8; RECORD_HEADER_LEN];
    b[..4].copy_from_slice(&RECORD_MAGIC);
    b[4] = h.kind as u8;
    b[5] = h.version;
    b[6] = h.flags;
    b[8..12].copy_from_slice(&h.meta_len.to_le_bytes());
    b[12..16].copy_from_slice(&h.n_chunks.to_le_bytes());
    b[16..24].copy_from_slice(&h.record_len.to_le_bytes());
    b[24..32].copy_from_slice(&h.meta_xxh3.to_le_bytes());
    let sum = xxh3_64(&b[..32]);
    b[32..40].copy_from_slice(&sum.to_le_bytes());
    b
}

pub fn parse_record_header(b: &[u8]) -> Result<RecordHeader, String> {
    if b.len() < RECORD_HEADER_LEN {
        return Err("record header truncated".into());
    }
    if b[..4] != RECORD_MAGIC {
        return Err("bad record magic".into());
    }
    if xxh3_64(&b[..32]) != u64_at(b, 32) {
        return Err("record header checksum mismatch".into());
    }
    if b[5] != RECORD_VERSION && b[5] != RECORD_VERSION_1 {
        return Err(format!("unsupported record version {}", b[5]));
    }
    let kind = Kind::from_u8(b[4]).ok_or_else(|| format!("unknown record kind {}", b[4]))?;
    let h = RecordHeader {
        kind,
        version: b[5],
        flags: b[6],
        meta_len: u32_at(b, 8),
        n_chunks: u32_at(b, 12),
        record_len: u64_at(b, 16),
        meta_xxh3: u64_at(b, 24),
    };
    let min = (RECORD_HEADER_LEN + TRAILER_LEN) as u64 + u64::from(h.meta_len);
    if h.record_len < min {
        return Err(format!(
            "record length {} shorter than its parts",
            h.record_len
        ));
    }
    if u64::from(h.n_chunks) * CHUNK_ENTRY_LEN as u64 > u64::from(h.meta_len) {
        return Err("chunk table larger than the metadata block".into());
    }
    Ok(h)
}

pub fn trailer(record_without_trailer: &[u8]) -> [u8; TRAILER_LEN] {
    let mut t = [0u8; TRAILER_LEN];
    t[..8].copy_from_slice(&TRAILER_MAGIC);
    t[8..].copy_from_slice(&xxh3_64(record_without_trailer).to_le_bytes());
    t
}

/// Checks the trailer of a whole record (header through trailer).
pub fn check_trailer(record: &[u8]) -> Result<(), String> {
    let n = record.len();
    if n < RECORD_HEADER_LEN + TRAILER_LEN {
        return Err("record truncated".into());
    }
    let t = &record[n - TRAILER_LEN..];
    if t[..8] != TRAILER_MAGIC {
        return Err("bad record trailer magic".into());
    }
    if xxh3_64(&record[..n - TRAILER_LEN]) != u64_at(t, 8) {
        return Err("record checksum mismatch".into());
    }
    Ok(())
}

struct W(Vec<u8>);

impl W {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn loc(&mut self, l: &Location) {
        self.u64(l.pack);
        self.u64(l.offset);
        self.u64(l.length);
    }
    fn str(&mut self, s: &str) {
        let b = s.as_bytes();
        let n = b.len().min(u16::MAX as usize);
        self.u16(n as u16);
        self.0.extend_from_slice(&b[..n]);
    }
}

struct R<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        match end {
            Some(e) => {
                let s = &self.b[self.at..e];
                self.at = e;
                Ok(s)
            }
            None => Err(format!("metadata truncated at byte {}", self.at)),
        }
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32_at(self.take(4)?, 0))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64_at(self.take(8)?, 0))
    }
    fn loc(&mut self) -> Result<Location, String> {
        Ok(Location {
            pack: self.u64()?,
            offset: self.u64()?,
            length: self.u64()?,
        })
    }
    fn str(&mut self) -> Result<String, String> {
        let n = self.u16()? as usize;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| "metadata string is not UTF-8".to_string())
    }
}

pub fn encode_meta(m: &Meta) -> Vec<u8> {
    let mut w = W(Vec::with_capacity(512 + m.chunks.len() * CHUNK_ENTRY_LEN));
    w.0.extend_from_slice(&m.sha256);
    w.u64(m.original_len);
    w.u64(m.header_prefix);
    w.u64(m.dict_id);
    w.loc(&m.dict_loc);
    w.loc(&m.target);
    for s in [
        &m.transfer_syntax,
        &m.sop_class_uid,
        &m.sop_instance_uid,
        &m.study_instance_uid,
        &m.series_instance_uid,
        &m.patient_id,
        &m.modality,
    ] {
        w.str(s);
    }
    w.u32(m.plan.len() as u32);
    for p in &m.plan {
        match *p {
            Piece::Header(n) => {
                w.u8(0);
                w.u64(n);
            }
            Piece::Chunk(i) => {
                w.u8(1);
                w.u64(u64::from(i));
            }
        }
    }
    w.u32(m.frames.len() as u32);
    for &(first, count) in &m.frames {
        w.u32(first);
        w.u32(count);
    }
    for c in &m.chunks {
        w.u64(c.offset);
        w.u64(c.stored_len);
        w.u64(c.raw_len);
        w.u64(c.xxh3);
        w.u8(c.filter);
        w.u8(c.codec);
        w.u8(c.level as u8);
        w.u8(c.sample_bytes);
        w.u8(c.flags);
        w.u8(c.dense_filter);
        w.0.extend_from_slice(&[0, 0]);
        w.u32(c.row_len);
        w.u32(c.stride);
    }
    w.u64(m.provenance.received_at_us);
    w.str(&m.provenance.source_ae);
    w.0
}

/// Decodes a metadata block (already checked against the header's xxh3) and validates that
/// every reference in it stays inside the record.
pub fn decode_meta(b: &[u8], h: &RecordHeader) -> Result<Meta, String> {
    let mut r = R { b, at: 0 };
    let mut m = Meta::default();
    m.sha256.copy_from_slice(r.take(32)?);
    m.original_len = r.u64()?;
    m.header_prefix = r.u64()?;
    m.dict_id = r.u64()?;
    m.dict_loc = r.loc()?;
    m.target = r.loc()?;
    m.transfer_syntax = r.str()?;
    m.sop_class_uid = r.str()?;
    m.sop_instance_uid = r.str()?;
    m.study_instance_uid = r.str()?;
    m.series_instance_uid = r.str()?;
    m.patient_id = r.str()?;
    m.modality = r.str()?;
    if m.original_len > MAX_RAW_LEN {
        return Err(format!("original length {} out of range", m.original_len));
    }
    let n_plan = r.u32()? as usize;
    // Each entry takes 9 bytes: refuse counts the block cannot hold before allocating.
    if n_plan > b.len() / 9 {
        return Err("plan longer than the metadata block".into());
    }
    for _ in 0..n_plan {
        let op = r.u8()?;
        let v = r.u64()?;
        m.plan.push(match op {
            0 => Piece::Header(v),
            1 => Piece::Chunk(u32::try_from(v).map_err(|_| "chunk index out of range")?),
            _ => return Err(format!("unknown plan op {op}")),
        });
    }
    let n_frames = r.u32()? as usize;
    if n_frames > b.len() / 8 {
        return Err("frame table longer than the metadata block".into());
    }
    for _ in 0..n_frames {
        m.frames.push((r.u32()?, r.u32()?));
    }
    let body_end = h.record_len - TRAILER_LEN as u64;
    for _ in 0..h.n_chunks {
        let mut c = Chunk {
            offset: r.u64()?,
            stored_len: r.u64()?,
            raw_len: r.u64()?,
            xxh3: r.u64()?,
            filter: r.u8()?,
            codec: r.u8()?,
            level: r.u8()? as i8,
            sample_bytes: r.u8()?,
            flags: r.u8()?,
            ..Chunk::default()
        };
        c.dense_filter = r.u8()?;
        r.take(2)?;
        c.row_len = r.u32()?;
        c.stride = r.u32()?;
        let data_start = (RECORD_HEADER_LEN as u64) + u64::from(h.meta_len);
        let end = c
            .offset
            .checked_add(c.stored_len)
            .ok_or("chunk range overflows")?;
        if c.offset < data_start || end > body_end {
            return Err(format!(
                "chunk at {} (+{}) outside the record",
                c.offset, c.stored_len
            ));
        }
        if c.raw_len > MAX_RAW_LEN || (c.codec == CODEC_STORED && c.raw_len != c.stored_len) {
            return Err(format!("chunk raw length {} inconsistent", c.raw_len));
        }
        m.chunks.push(c);
    }
    if h.version >= RECORD_VERSION {
        m.provenance.received_at_us = r.u64()?;
        m.provenance.source_ae = r.str()?;
    }
    if r.at != b.len() {
        return Err("trailing bytes in the metadata block".into());
    }
    let n_chunks = m.chunks.len() as u64;
    let mut total = 0u64;
    for p in &m.plan {
        total = total.saturating_add(match *p {
            Piece::Header(n) => n,
            Piece::Chunk(i) if u64::from(i) < n_chunks => m.chunks[i as usize].raw_len,
            Piece::Chunk(i) => return Err(format!("plan names missing chunk {i}")),
        });
    }
    if h.kind == Kind::Instance && total != m.original_len {
        return Err(format!(
            "plan covers {total} bytes, original has {}",
            m.original_len
        ));
    }
    for &(first, count) in &m.frames {
        if u64::from(first) + u64::from(count) > n_chunks {
            return Err("frame table names missing chunks".into());
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_detect_flips() {
        let h = RecordHeader {
            kind: Kind::Instance,
            version: RECORD_VERSION,
            flags: RECORD_FLAG_ARRIVAL,
            meta_len: 500,
            n_chunks: 2,
            record_len: 1000,
            meta_xxh3: 77,
        };
        let b = record_header(&h);
        assert_eq!(parse_record_header(&b).unwrap(), h);
        for i in 0..b.len() {
            let mut c = b;
            c[i] ^= 0x10;
            assert!(parse_record_header(&c).is_err(), "flip at {i} undetected");
        }
        let p = pack_header(3, 9);
        assert_eq!(parse_pack_header(&p).unwrap(), (3, 9));
    }

    #[test]
    fn version_1_metadata_reads_with_unknown_provenance() {
        let mut m = Meta {
            original_len: 10,
            plan: vec![Piece::Header(10)],
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            provenance: Provenance {
                received_at_us: 42,
                source_ae: "MOD".into(),
            },
            ..Meta::default()
        };
        let v2 = encode_meta(&m);
        let mut h = RecordHeader {
            kind: Kind::Instance,
            version: RECORD_VERSION,
            flags: 0,
            meta_len: v2.len() as u32,
            n_chunks: 0,
            record_len: 4096,
            meta_xxh3: 0,
        };
        assert_eq!(decode_meta(&v2, &h).unwrap(), m);
        // A version 1 block is the same bytes without the trailing provenance (u64 + "MOD").
        let v1 = &v2[..v2.len() - 8 - 2 - 3];
        h.version = RECORD_VERSION_1;
        m.provenance = Provenance::default();
        assert_eq!(decode_meta(v1, &h).unwrap(), m);
        assert!(
            decode_meta(&v2, &h).is_err(),
            "v1 header must not accept v2 trailing bytes"
        );
    }
}
