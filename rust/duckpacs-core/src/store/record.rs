//! Storage layer, records: turns one received buffer plus its [`InstanceLayout`] into the
//! bytes of one instance record (header stream + pixel chunks, filtered and compressed), and
//! back. Also builds tombstone and dictionary records. No file access here.
//!
//! The split never trusts the layout blindly: when its ranges do not fit the buffer, or the
//! transfer syntax is deflated (PS3.5 A.5, the whole dataset is one zlib stream), the instance
//! is stored whole as its header stream, which is always byte exact.

use std::ops::Range;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use xxhash_rust::xxh3::xxh3_64;

use super::filter::{self, Geometry};
use super::format::*;
use crate::layout::{InstanceLayout, PixelKind};

/// Largest raw pixel chunk: bigger frames are split at row boundaries.
pub const MAX_CHUNK: usize = 1 << 20;

/// Frames smaller than this use plain MED: four class streams cost more than they save.
const MIN_CLASS_CHUNK: usize = 32 << 10;

/// Frames smaller than this are not given chunks of their own.
const MIN_FRAME_CHUNK: usize = 256;

/// Deflated Explicit VR Little Endian (PS3.5 A.5) and its JPIP variant.
const DEFLATED: [&str; 2] = ["1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95"];

/// A trained header dictionary, ready for compression and decompression.
pub struct HeaderDict {
    pub id: u64,
    pub loc: Location,
    pub raw: Vec<u8>,
    level: i32,
    /// Built on first use: readers only ever need the decoder side.
    enc: std::sync::OnceLock<zstd::dict::EncoderDictionary<'static>>,
    dec: zstd::dict::DecoderDictionary<'static>,
}

impl std::fmt::Debug for HeaderDict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderDict")
            .field("id", &self.id)
            .field("loc", &self.loc)
            .finish()
    }
}

impl HeaderDict {
    fn encoder(&self) -> &zstd::dict::EncoderDictionary<'static> {
        self.enc
            .get_or_init(|| zstd::dict::EncoderDictionary::copy(&self.raw, self.level))
    }

    pub fn new(raw: Vec<u8>, loc: Location, level: i32) -> HeaderDict {
        HeaderDict {
            id: dict_id(&raw),
            loc,
            level,
            enc: std::sync::OnceLock::new(),
            dec: zstd::dict::DecoderDictionary::copy(&raw),
            raw,
        }
    }
}

/// Builds the header dictionary of a series from its first headers: either zstd's trained
/// dictionary or the most recent headers themselves as a raw-content dictionary, whichever
/// compresses a held-out header better. Headers of one series differ in a few values, so
/// the raw content usually wins by far (65x against 12x on the Philips MR series).
pub fn build_dictionary(samples: &[Vec<u8>], max: usize, level: i32) -> Option<Vec<u8>> {
    let (train, test) = samples.split_at(samples.len().checked_sub(1)?);
    let test = test.first()?;
    let raw_of = |s: &[Vec<u8>]| {
        let all = s.concat();
        all[all.len().saturating_sub(max)..].to_vec()
    };
    let trained_of = |s: &[Vec<u8>]| {
        let total: usize = s.iter().map(Vec::len).sum();
        zstd::dict::from_samples(s, max.min(total / 2).max(256)).ok()
    };
    let cost = |dict: &[u8]| {
        zstd::bulk::Compressor::with_dictionary(level, dict)
            .and_then(|mut c| c.compress(test))
            .map_or(usize::MAX, |v| v.len())
    };
    // A raw-content dictionary must not look like a formatted one (zstd's magic number).
    let usable = |d: &Vec<u8>| d.len() >= 8 && d[..4] != [0x37, 0xA4, 0x30, 0xEC];
    let raw_cost = if train.is_empty() {
        usize::MAX
    } else {
        cost(&raw_of(train))
    };
    let trained_cost = trained_of(train).map_or(usize::MAX, |d| cost(&d));
    let chosen = if trained_cost < raw_cost {
        trained_of(samples)
    } else {
        None
    };
    chosen.or_else(|| Some(raw_of(samples))).filter(usable)
}

/// Identifier of a dictionary: xxh3-64 of its bytes, never 0.
pub fn dict_id(raw: &[u8]) -> u64 {
    xxh3_64(raw).max(1)
}

/// How native pixel chunks are written when an instance arrives, before densifying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The pixel bytes as they are (codec 0).
    Raw,
    /// Byte shuffle for samples of 2 bytes and more, then zstd at this level.
    Zstd(i32),
}

/// The arrival encoding chosen by measurement (docs/STORAGE-FORMAT.md, "Arrival
/// encoding"): byte shuffle + zstd at level 1.
pub const ARRIVAL: Arrival = Arrival::Zstd(1);

/// Compression settings.
#[derive(Debug, Clone, Copy)]
pub struct Levels {
    pub header: i32,
    /// zstd level of the dense pixel encoding (after the MED filters).
    pub pixel: i32,
    /// Arriving native frames that would get the costly filter (MED with activity classes,
    /// frames of 32 KiB and more) get this cheap encoding and are densified later; `None`
    /// encodes them dense at once. Smaller frames are always encoded dense: plain MED
    /// costs them no more than the arrival encoding would.
    pub arrival: Option<Arrival>,
}

impl Levels {
    /// Native pixels encoded dense as they arrive (no densifying needed).
    pub fn dense() -> Levels {
        Levels {
            arrival: None,
            ..Levels::default()
        }
    }
}

impl Default for Levels {
    fn default() -> Self {
        Levels {
            header: 6,
            pixel: 3,
            arrival: Some(ARRIVAL),
        }
    }
}

/// An encoded record, ready to append.
#[derive(Debug)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub meta: Meta,
    /// Raw bytes of the header stream (for dictionary training) when this is an instance.
    pub header_stream: Vec<u8>,
    /// Split of the original: header bytes and pixel bytes.
    pub raw_header: u64,
    pub raw_pixels: u64,
}

/// Byte range of the pixel value cut out of the header stream, and how to encode it.
#[derive(Debug, Clone)]
pub(super) struct Cut {
    pub(super) range: Range<usize>,
    /// Native pixels: the dense filter and the geometry it needs (the arrival encoding may
    /// apply first). Encapsulated fragments: `None`, kept unchanged.
    dense: Option<(u8, Geometry)>,
}

impl Cut {
    /// Only the costly dense filter is put off until densifying.
    fn takes_arrival(&self) -> bool {
        matches!(self.dense, Some((FILTER_MED_CLASSES, _)))
    }
}

/// The pixel cuts, the frame table and the length of the prefix before the pixel element.
type CutPlan = (Vec<Cut>, Vec<(u32, u32)>, usize);

/// Plans the cuts of an original of `len` bytes; `None` means store the instance whole.
fn plan_cuts(len: usize, layout: &InstanceLayout) -> Option<CutPlan> {
    if layout.deflated || DEFLATED.contains(&layout.transfer_syntax.as_str()) {
        return None;
    }
    let px = layout.pixel.as_ref()?;
    if px.element.start > px.value.start
        || px.value.start > px.value.end
        || px.value.end > len
        || px.element.end > len
    {
        return None;
    }
    match &px.kind {
        PixelKind::Native {
            columns,
            samples_per_pixel,
            bits_allocated,
            pixel_representation,
            planar_configuration,
            frames,
            frame_len,
            big_endian,
            ..
        } => {
            let frames = *frames as usize;
            let frame_len = *frame_len;
            let total = frames.checked_mul(frame_len)?;
            if frames == 0 || frame_len == 0 || total > px.value.end - px.value.start {
                return None;
            }
            if frames > 1 && frame_len < MIN_FRAME_CHUNK {
                return None; // Tiny frames: per-frame chunks would cost more than they save.
            }
            let samples = usize::from((*samples_per_pixel).max(1));
            let bytes = match bits_allocated {
                8 => 1,
                16 => 2,
                32 => 4,
                64 => 8,
                _ => 0,
            };
            let interleaved = *planar_configuration == 0 || samples == 1;
            let (row_len, stride) = if interleaved {
                (usize::from(*columns) * samples, samples)
            } else {
                (usize::from(*columns), 1)
            };
            let g = Geometry {
                row_len,
                stride,
                sample_bytes: bytes.max(1),
                big_endian: *big_endian,
                signed: *pixel_representation == 1,
            };
            let med = bytes > 0 && filter::med_applies(frame_len, &g);
            // Chunk size: whole rows for MED, else whole samples.
            let unit = if med { row_len * bytes } else { bytes.max(1) };
            let per_chunk = (MAX_CHUNK / unit).max(1) * unit;
            let (filt, sample_bytes) = if med && frame_len >= MIN_CLASS_CHUNK {
                (FILTER_MED_CLASSES, bytes)
            } else if med {
                (FILTER_MED, bytes)
            } else if bytes > 1 {
                (FILTER_SHUFFLE, bytes)
            } else {
                (FILTER_NONE, 1)
            };
            let g = Geometry { sample_bytes, ..g };
            let mut cuts = Vec::new();
            let mut table = Vec::with_capacity(frames);
            for f in 0..frames {
                let start = px.value.start + f * frame_len;
                let first = cuts.len() as u32 + 1;
                let mut at = start;
                while at < start + frame_len {
                    let end = (at + per_chunk).min(start + frame_len);
                    cuts.push(Cut {
                        range: at..end,
                        dense: Some((filt, g)),
                    });
                    at = end;
                }
                table.push((first, cuts.len() as u32 + 1 - first));
            }
            Some((cuts, table, px.element.start))
        }
        PixelKind::Encapsulated { items, frames } => {
            let mut cuts = Vec::new();
            let mut prev = px.value.start;
            for (k, item) in items.iter().enumerate() {
                if item.start < prev || item.end < item.start + 8 || item.end > px.value.end {
                    return None;
                }
                prev = item.end;
                if k == 0 {
                    continue; // Basic Offset Table stays in the header stream.
                }
                cuts.push(Cut {
                    range: item.start + 8..item.end,
                    dense: None,
                });
            }
            // Item k (k >= 1) is chunk k.
            let mut table = Vec::with_capacity(frames.len());
            for fr in frames {
                if fr.start == 0 || fr.end > items.len() || fr.start > fr.end {
                    table.clear();
                    break;
                }
                table.push((fr.start as u32, (fr.end - fr.start) as u32));
            }
            Some((cuts, table, px.element.start))
        }
    }
}

thread_local! {
    /// One zstd context per thread, reused: creating one per chunk costs more than a small
    /// chunk's compression.
    static CCTX: std::cell::RefCell<Vec<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
    static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn compress_plain(data: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    CCTX.with(|cell| {
        let mut ctxs = cell.borrow_mut();
        if let Some((_, c)) = ctxs.iter_mut().find(|(l, _)| *l == level) {
            return c.compress(data);
        }
        let mut c = zstd::bulk::Compressor::new(level)?;
        let out = c.compress(data);
        if ctxs.len() < 4 {
            ctxs.push((level, c));
        }
        out
    })
}

fn decompress_plain(data: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    DCTX.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        match slot.as_mut() {
            Some(d) => d.decompress(data, capacity),
            None => zstd::bulk::decompress(data, capacity),
        }
    })
}

fn zstd_err(e: std::io::Error) -> String {
    format!("zstd: {e}")
}

/// Compresses one chunk and fills its table entry (offset is set by the caller).
fn encode_chunk(
    raw: &[u8],
    filt: u8,
    g: &Geometry,
    codec: u8,
    level: i32,
    dict: Option<&HeaderDict>,
) -> Result<(Vec<u8>, Chunk), String> {
    if filt == FILTER_MED_CLASSES {
        return encode_classes(raw, g, level);
    }
    let filtered = match filt {
        FILTER_MED => filter::med_encode(raw, g),
        FILTER_SHUFFLE => filter::shuffle(raw, g.sample_bytes),
        _ => raw.to_vec(),
    };
    let mut chunk = Chunk {
        raw_len: raw.len() as u64,
        filter: filt,
        codec,
        level: level.clamp(-128, 127) as i8,
        sample_bytes: g.sample_bytes as u8,
        flags: (if g.big_endian { FLAG_BIG_ENDIAN } else { 0 })
            | (if g.signed { FLAG_SIGNED } else { 0 }),
        row_len: g.row_len as u32,
        stride: g.stride as u32,
        ..Chunk::default()
    };
    let stored = match codec {
        CODEC_STORED => filtered,
        _ => {
            let z = match dict {
                Some(d) => zstd::bulk::Compressor::with_prepared_dictionary(d.encoder())
                    .and_then(|mut c| c.compress(&filtered))
                    .map_err(zstd_err)?,
                None => compress_plain(&filtered, level).map_err(zstd_err)?,
            };
            chunk.codec = if dict.is_some() {
                CODEC_ZSTD_DICT
            } else {
                CODEC_ZSTD
            };
            if z.len() >= raw.len() {
                // Incompressible: keep the raw bytes, unfiltered.
                chunk.codec = CODEC_STORED;
                chunk.filter = FILTER_NONE;
                raw.to_vec()
            } else {
                z
            }
        }
    };
    chunk.stored_len = stored.len() as u64;
    chunk.xxh3 = xxh3_64(&stored);
    Ok((stored, chunk))
}

fn chunk_entry(raw: &[u8], filt: u8, g: &Geometry, level: i32) -> Chunk {
    Chunk {
        raw_len: raw.len() as u64,
        filter: filt,
        codec: CODEC_ZSTD,
        level: level.clamp(-128, 127) as i8,
        sample_bytes: g.sample_bytes as u8,
        flags: (if g.big_endian { FLAG_BIG_ENDIAN } else { 0 })
            | (if g.signed { FLAG_SIGNED } else { 0 }),
        row_len: g.row_len as u32,
        stride: g.stride as u32,
        ..Chunk::default()
    }
}

/// Filter 3: `u8 K`, K x (u32 raw length, u32 stored length), then the K class streams,
/// each a zstd frame, or raw when zstd would not shrink it (stored length == raw length).
fn encode_classes(raw: &[u8], g: &Geometry, level: i32) -> Result<(Vec<u8>, Chunk), String> {
    let streams = filter::med_classes_encode(raw, g);
    let mut table = vec![streams.len() as u8];
    let mut body = Vec::with_capacity(raw.len() / 2);
    for st in &streams {
        let z = compress_plain(st, level).map_err(zstd_err)?;
        let payload: &[u8] = if z.len() < st.len() { &z } else { st };
        table.extend_from_slice(&(st.len() as u32).to_le_bytes());
        table.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        body.extend_from_slice(payload);
    }
    table.extend_from_slice(&body);
    let mut chunk = chunk_entry(raw, FILTER_MED_CLASSES, g, level);
    let stored = if table.len() < raw.len() {
        table
    } else {
        chunk.codec = CODEC_STORED;
        chunk.filter = FILTER_NONE;
        raw.to_vec()
    };
    chunk.stored_len = stored.len() as u64;
    chunk.xxh3 = xxh3_64(&stored);
    Ok((stored, chunk))
}

fn decode_classes(stored: &[u8], c: &Chunk, g: &Geometry) -> Result<Vec<u8>, String> {
    let k = usize::from(*stored.first().ok_or("empty class table")?);
    if k != filter::CLASSES || c.codec != CODEC_ZSTD {
        return Err(format!("class chunk with {k} classes / codec {}", c.codec));
    }
    let word = |at: usize| -> Result<usize, String> {
        let b = stored.get(at..at + 4).ok_or("class table truncated")?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let mut at = 1 + 8 * k;
    let mut streams = Vec::with_capacity(k);
    let mut total = 0usize;
    for i in 0..k {
        let (raw_len, stored_len) = (word(1 + 8 * i)?, word(5 + 8 * i)?);
        total = total.saturating_add(raw_len);
        if total > c.raw_len as usize || stored_len > raw_len {
            return Err("class stream lengths out of range".into());
        }
        let payload = stored
            .get(at..at + stored_len)
            .ok_or("class stream truncated")?;
        at += stored_len;
        streams.push(if stored_len == raw_len {
            payload.to_vec()
        } else {
            decompress_plain(payload, raw_len).map_err(zstd_err)?
        });
        if streams[i].len() != raw_len {
            return Err("class stream decoded to the wrong length".into());
        }
    }
    filter::med_classes_decode(&streams, c.raw_len as usize, g)
}

/// Header and metadata block of a record whose chunk table is final.
pub(super) fn head_bytes(kind: Kind, flags: u8, meta: &Meta, record_len: u64) -> Vec<u8> {
    let meta_bytes = encode_meta(meta);
    let h = RecordHeader {
        kind,
        version: RECORD_VERSION,
        flags,
        meta_len: meta_bytes.len() as u32,
        n_chunks: meta.chunks.len() as u32,
        record_len,
        meta_xxh3: xxh3_64(&meta_bytes),
    };
    let mut out = Vec::with_capacity(RECORD_HEADER_LEN + meta_bytes.len());
    out.extend_from_slice(&record_header(&h));
    out.extend_from_slice(&meta_bytes);
    out
}

/// Where chunk data starts in a record with this metadata: its length does not depend on
/// the values in the chunk table, only on the counts, so it is known before any chunk is
/// encoded (what lets a record be written as a stream).
pub(super) fn data_start(meta: &Meta) -> u64 {
    (RECORD_HEADER_LEN + encode_meta(meta).len()) as u64
}

/// Assembles header, metadata and chunk data into a record with its trailer.
fn assemble(kind: Kind, flags: u8, mut meta: Meta, datas: Vec<Vec<u8>>) -> (Vec<u8>, Meta) {
    let mut at = data_start(&meta);
    for (c, d) in meta.chunks.iter_mut().zip(&datas) {
        c.offset = at;
        at += d.len() as u64;
    }
    let record_len = at + TRAILER_LEN as u64;
    let mut out = Vec::with_capacity(record_len as usize);
    out.extend_from_slice(&head_bytes(kind, flags, &meta, record_len));
    for d in &datas {
        out.extend_from_slice(d);
    }
    let t = trailer(&out);
    out.extend_from_slice(&t);
    (out, meta)
}

/// An instance record before its chunks are encoded: the metadata without SHA-256 and
/// chunk table, and the pixel cuts. Needs only the original's length and layout.
pub(super) struct Planned {
    pub(super) meta: Meta,
    pub(super) cuts: Vec<Cut>,
    /// The ranges of the original that form the header stream, in order.
    pub(super) header_ranges: Vec<Range<usize>>,
}

impl Planned {
    pub(super) fn header_len(&self) -> usize {
        self.header_ranges.iter().map(Range::len).sum()
    }

    /// Whether pixel chunks get the arrival encoding (the record is flagged for it).
    pub(super) fn arrival(&self, levels: &Levels) -> bool {
        levels.arrival.is_some() && self.cuts.iter().any(Cut::takes_arrival)
    }
}

/// Plans the record of an original of `len` bytes. `layout` may be `None` (stored whole).
pub(super) fn plan_instance(
    len: usize,
    layout: Option<&InstanceLayout>,
    provenance: &Provenance,
) -> Planned {
    let mut meta = Meta {
        original_len: len as u64,
        provenance: provenance.clone(),
        ..Meta::default()
    };
    if let Some(l) = layout {
        meta.transfer_syntax = l.transfer_syntax.clone();
        meta.sop_class_uid = l.sop_class_uid.clone();
        meta.sop_instance_uid = l.sop_instance_uid.clone();
        meta.study_instance_uid = l.study_instance_uid.clone();
        meta.series_instance_uid = l.series_instance_uid.clone();
        meta.patient_id = l.patient_id.clone();
        meta.modality = l.modality.clone();
    }
    let (cuts, frames, prefix) = match layout.and_then(|l| plan_cuts(len, l)) {
        Some(p) => p,
        None => (Vec::new(), Vec::new(), len),
    };
    meta.header_prefix = prefix as u64;
    meta.frames = frames;
    let mut header_ranges = Vec::new();
    let mut cursor = 0usize;
    for (i, c) in cuts.iter().enumerate() {
        if c.range.start > cursor {
            meta.plan
                .push(Piece::Header((c.range.start - cursor) as u64));
            header_ranges.push(cursor..c.range.start);
        }
        meta.plan.push(Piece::Chunk(i as u32 + 1));
        cursor = c.range.end;
    }
    if cursor < len || meta.plan.is_empty() {
        meta.plan.push(Piece::Header((len - cursor) as u64));
        header_ranges.push(cursor..len);
    }
    Planned {
        meta,
        cuts,
        header_ranges,
    }
}

const PLAIN: Geometry = Geometry {
    row_len: 0,
    stride: 0,
    sample_bytes: 1,
    big_endian: false,
    signed: false,
};

/// Encodes the header stream (chunk 0) and notes its dictionary in `meta`.
pub(super) fn encode_header(
    header_stream: &[u8],
    dict: Option<&HeaderDict>,
    levels: &Levels,
    meta: &mut Meta,
) -> Result<(Vec<u8>, Chunk), String> {
    // Headers are small and worth a higher level; a file stored whole is not.
    let level = if header_stream.len() <= 256 << 10 {
        levels.header
    } else {
        levels.pixel
    };
    let (data, chunk) = encode_chunk(header_stream, FILTER_NONE, &PLAIN, CODEC_ZSTD, level, dict)?;
    if chunk.codec == CODEC_ZSTD_DICT {
        if let Some(d) = dict {
            meta.dict_id = d.id;
            meta.dict_loc = d.loc;
        }
    }
    Ok((data, chunk))
}

/// Encodes one pixel cut: large native frames in the arrival encoding when `levels` has
/// one, other native pixels dense; encapsulated fragments unchanged.
pub(super) fn encode_cut(
    raw: &[u8],
    cut: &Cut,
    levels: &Levels,
) -> Result<(Vec<u8>, Chunk), String> {
    let Some((dense_filter, g)) = cut.dense else {
        return encode_chunk(raw, FILTER_NONE, &PLAIN, CODEC_STORED, levels.pixel, None);
    };
    let arrival = levels.arrival.filter(|_| cut.takes_arrival());
    let (data, mut chunk) = match arrival {
        None => return encode_chunk(raw, dense_filter, &g, CODEC_ZSTD, levels.pixel, None),
        Some(Arrival::Raw) => encode_chunk(raw, FILTER_NONE, &g, CODEC_STORED, 0, None)?,
        Some(Arrival::Zstd(level)) => {
            let filt = if g.sample_bytes > 1 {
                FILTER_SHUFFLE
            } else {
                FILTER_NONE
            };
            encode_chunk(raw, filt, &g, CODEC_ZSTD, level, None)?
        }
    };
    chunk.flags |= FLAG_ARRIVAL;
    chunk.dense_filter = dense_filter;
    Ok((data, chunk))
}

/// Re-encodes a pixel chunk in the arrival encoding in the dense one its entry names (a
/// chunk already dense is kept as it is); returns the raw bytes too (the caller checks
/// them against the record's SHA-256).
pub fn densify_chunk(stored: &[u8], c: &Chunk, level: i32) -> Result<Densified, String> {
    if c.flags & FLAG_ARRIVAL == 0 {
        let raw = decode_chunk(stored, c, None)?;
        return Ok(Densified {
            raw,
            data: stored.to_vec(),
            chunk: c.clone(),
        });
    }
    let g = geometry_of(c);
    let f = c.dense_filter;
    let med = f == FILTER_MED || f == FILTER_MED_CLASSES;
    if f > FILTER_MED_CLASSES || med && !filter::med_applies(c.raw_len as usize, &g) {
        return Err(format!(
            "chunk at record offset {} names dense filter {f} that does not fit it",
            c.offset
        ));
    }
    let raw = decode_chunk(stored, c, None)?;
    let (data, chunk) = encode_chunk(&raw, f, &g, CODEC_ZSTD, level, None)?;
    Ok(Densified { raw, data, chunk })
}

/// One chunk re-encoded by [`densify_chunk`].
pub struct Densified {
    pub raw: Vec<u8>,
    pub data: Vec<u8>,
    pub chunk: Chunk,
}

/// Encodes one received instance. `layout` may be `None` (stored whole).
pub fn encode_instance(
    buf: &[u8],
    layout: Option<&InstanceLayout>,
    dict: Option<&HeaderDict>,
    levels: Levels,
    provenance: &Provenance,
) -> Result<Encoded, String> {
    let planned = plan_instance(buf.len(), layout, provenance);
    let flags = if planned.arrival(&levels) {
        RECORD_FLAG_ARRIVAL
    } else {
        0
    };
    let Planned {
        mut meta,
        cuts,
        header_ranges,
    } = planned;
    meta.sha256.copy_from_slice(&Sha256::digest(buf));
    let mut header_stream = Vec::with_capacity(header_ranges.iter().map(Range::len).sum());
    for r in &header_ranges {
        header_stream.extend_from_slice(&buf[r.clone()]);
    }
    let (hdata, hchunk) = encode_header(&header_stream, dict, &levels, &mut meta)?;
    let mut datas = vec![hdata];
    meta.chunks.push(hchunk);
    let mut raw_pixels = 0u64;
    for c in &cuts {
        let (d, ch) = encode_cut(&buf[c.range.clone()], c, &levels)?;
        raw_pixels += c.range.len() as u64;
        datas.push(d);
        meta.chunks.push(ch);
    }
    let (bytes, meta) = assemble(Kind::Instance, flags, meta, datas);
    Ok(Encoded {
        bytes,
        meta,
        raw_header: header_stream.len() as u64,
        header_stream,
        raw_pixels,
    })
}

/// Encodes a tombstone deleting the record at `target` (whose metadata is `victim`).
pub fn encode_tombstone(target: Location, victim: &Meta) -> Vec<u8> {
    let meta = Meta {
        sha256: victim.sha256,
        target,
        sop_instance_uid: victim.sop_instance_uid.clone(),
        series_instance_uid: victim.series_instance_uid.clone(),
        study_instance_uid: victim.study_instance_uid.clone(),
        ..Meta::default()
    };
    assemble(Kind::Tombstone, 0, meta, Vec::new()).0
}

/// Encodes a dictionary record for the headers of `series_uid`.
pub fn encode_dictionary(raw: &[u8], series_uid: &str) -> Vec<u8> {
    let chunk = Chunk {
        raw_len: raw.len() as u64,
        stored_len: raw.len() as u64,
        xxh3: xxh3_64(raw),
        sample_bytes: 1,
        ..Chunk::default()
    };
    let meta = Meta {
        dict_id: dict_id(raw),
        original_len: raw.len() as u64,
        series_instance_uid: series_uid.to_string(),
        plan: vec![Piece::Chunk(0)],
        chunks: vec![chunk],
        ..Meta::default()
    };
    assemble(Kind::Dictionary, 0, meta, vec![raw.to_vec()]).0
}

/// A parsed record whose header and metadata checksums hold.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub header: RecordHeader,
    pub meta: Meta,
}

/// Parses the header and metadata at the start of `rec` (which may be just those bytes).
pub fn parse_head(rec: &[u8]) -> Result<Parsed, String> {
    let header = parse_record_header(rec)?;
    let end = RECORD_HEADER_LEN + header.meta_len as usize;
    let mb = rec
        .get(RECORD_HEADER_LEN..end)
        .ok_or("metadata truncated")?;
    if xxh3_64(mb) != header.meta_xxh3 {
        return Err("metadata checksum mismatch".into());
    }
    let meta = decode_meta(mb, &header)?;
    Ok(Parsed { header, meta })
}

/// The sample geometry a chunk entry records.
fn geometry_of(c: &Chunk) -> Geometry {
    Geometry {
        row_len: c.row_len as usize,
        stride: c.stride as usize,
        sample_bytes: c.sample_bytes as usize,
        big_endian: c.flags & FLAG_BIG_ENDIAN != 0,
        signed: c.flags & FLAG_SIGNED != 0,
    }
}

/// Verifies and decodes chunk `c` whose stored bytes are `stored`.
pub fn decode_chunk(
    stored: &[u8],
    c: &Chunk,
    dict: Option<&HeaderDict>,
) -> Result<Vec<u8>, String> {
    if xxh3_64(stored) != c.xxh3 {
        return Err(format!(
            "chunk at record offset {} fails its checksum",
            c.offset
        ));
    }
    let raw_len = usize::try_from(c.raw_len).map_err(|_| "chunk too large")?;
    let g = geometry_of(c);
    if c.filter == FILTER_MED_CLASSES {
        return decode_classes(stored, c, &g);
    }
    let filtered = match c.codec {
        CODEC_STORED => stored.to_vec(),
        CODEC_ZSTD => decompress_plain(stored, raw_len).map_err(zstd_err)?,
        CODEC_ZSTD_DICT => {
            let d = dict.ok_or("chunk needs a dictionary that was not found")?;
            zstd::bulk::Decompressor::with_prepared_dictionary(&d.dec)
                .and_then(|mut z| z.decompress(stored, raw_len))
                .map_err(zstd_err)?
        }
        other => return Err(format!("unknown codec {other}")),
    };
    if filtered.len() != raw_len {
        return Err(format!(
            "chunk decoded to {} bytes, expected {raw_len}",
            filtered.len()
        ));
    }
    match c.filter {
        FILTER_NONE => Ok(filtered),
        FILTER_SHUFFLE => Ok(filter::unshuffle(&filtered, g.sample_bytes)),
        FILTER_MED if filter::med_applies(filtered.len(), &g) => {
            Ok(filter::med_decode(&filtered, &g))
        }
        other => Err(format!("unknown or inconsistent filter {other}")),
    }
}

/// Stored bytes of chunk `c` within a whole record.
pub fn chunk_bytes<'a>(rec: &'a [u8], c: &Chunk) -> Result<&'a [u8], String> {
    let start = usize::try_from(c.offset).map_err(|_| "chunk offset too large")?;
    let len = usize::try_from(c.stored_len).map_err(|_| "chunk too large")?;
    rec.get(start..start.saturating_add(len))
        .ok_or_else(|| "chunk outside the record".into())
}

/// Rebuilds the original bytes of an instance record (whole record in `rec`) and checks
/// them against the stored SHA-256 when `check_sha` is set.
pub fn reconstruct(
    rec: &[u8],
    p: &Parsed,
    dict: Option<&HeaderDict>,
    check_sha: bool,
) -> Result<Vec<u8>, String> {
    let m = &p.meta;
    let first = m
        .chunks
        .first()
        .ok_or("instance record without a header chunk")?;
    let header = decode_chunk(chunk_bytes(rec, first)?, first, dict)?;
    let mut out = Vec::with_capacity((m.original_len as usize).min(rec.len().saturating_mul(64)));
    let mut h = 0usize;
    for piece in &m.plan {
        match *piece {
            Piece::Header(n) => {
                let end = h.checked_add(n as usize).filter(|&e| e <= header.len());
                let end = end.ok_or("plan reads past the header stream")?;
                out.extend_from_slice(&header[h..end]);
                h = end;
            }
            Piece::Chunk(i) => {
                let c = &m.chunks[i as usize];
                out.extend_from_slice(&decode_chunk(chunk_bytes(rec, c)?, c, None)?);
            }
        }
    }
    if check_sha && Sha256::digest(&out)[..] != m.sha256[..] {
        return Err("rebuilt instance does not match its SHA-256".into());
    }
    Ok(out)
}

/// Keeps dictionaries shareable between threads.
pub type DictRef = Arc<HeaderDict>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{Framing, PixelLayout};

    fn native_buf(frames: usize, rows: usize, cols: usize) -> (Vec<u8>, InstanceLayout) {
        let mut buf = b"HEADER-BYTES-ODD".to_vec();
        let value_start = buf.len() + 12;
        buf.extend_from_slice(b"\xe0\x7f\x10\x00OW\x00\x00LENG");
        for i in 0..frames * rows * cols {
            buf.extend_from_slice(&((i % 97) as u16 * 13 + (i / cols) as u16).to_le_bytes());
        }
        buf.extend_from_slice(b"\xfc\xff\xfc\xff trailing padding");
        let end = value_start + frames * rows * cols * 2;
        let layout = InstanceLayout {
            framing: Framing::BareDataset,
            transfer_syntax: "1.2.840.10008.1.2.1".into(),
            sop_instance_uid: "1.2.3".into(),
            pixel: Some(PixelLayout {
                element: value_start - 12..end,
                value: value_start..end,
                kind: PixelKind::Native {
                    rows: rows as u16,
                    columns: cols as u16,
                    samples_per_pixel: 1,
                    bits_allocated: 16,
                    pixel_representation: 0,
                    planar_configuration: 0,
                    frames: frames as u32,
                    frame_len: rows * cols * 2,
                    big_endian: false,
                },
            }),
            ..InstanceLayout::default()
        };
        (buf, layout)
    }

    #[test]
    fn native_instance_round_trips_and_splits_frames() {
        let (buf, layout) = native_buf(3, 600, 1000);
        let e = encode_instance(
            &buf,
            Some(&layout),
            None,
            Levels::default(),
            &Provenance::default(),
        )
        .unwrap();
        let p = parse_head(&e.bytes).unwrap();
        check_trailer(&e.bytes).unwrap();
        assert_eq!(p.meta.frames.len(), 3);
        assert_eq!(p.meta.frames[0], (1, 2)); // 1.2 MB frame split in two chunks
        assert_eq!(reconstruct(&e.bytes, &p, None, true).unwrap(), buf);
        assert!(e.bytes.len() < buf.len() / 3);
    }

    #[test]
    fn bad_layout_is_stored_whole() {
        let (buf, mut layout) = native_buf(1, 4, 4);
        if let Some(px) = layout.pixel.as_mut() {
            px.value.end = buf.len() + 10;
        }
        let e = encode_instance(
            &buf,
            Some(&layout),
            None,
            Levels::default(),
            &Provenance::default(),
        )
        .unwrap();
        let p = parse_head(&e.bytes).unwrap();
        assert_eq!(p.meta.chunks.len(), 1);
        assert_eq!(reconstruct(&e.bytes, &p, None, true).unwrap(), buf);
    }

    #[test]
    fn encapsulated_fragments_are_kept_unchanged() {
        let mut buf = b"HDR".to_vec();
        let v0 = buf.len();
        let mut items = Vec::new();
        for frag in [&b""[..], b"JPEGDATA1", b"XY"] {
            let s = buf.len();
            buf.extend_from_slice(b"\xfe\xff\x00\xe0");
            buf.extend_from_slice(&(frag.len() as u32).to_le_bytes());
            buf.extend_from_slice(frag);
            items.push(s..buf.len());
        }
        buf.extend_from_slice(b"\xfe\xff\xdd\xe0\0\0\0\0");
        let layout = InstanceLayout {
            transfer_syntax: "1.2.840.10008.1.2.4.50".into(),
            pixel: Some(PixelLayout {
                element: 0..buf.len(),
                value: v0..buf.len(),
                kind: PixelKind::Encapsulated {
                    items,
                    frames: vec![1..2, 2..3],
                },
            }),
            ..InstanceLayout::default()
        };
        let e = encode_instance(
            &buf,
            Some(&layout),
            None,
            Levels::default(),
            &Provenance::default(),
        )
        .unwrap();
        let p = parse_head(&e.bytes).unwrap();
        assert_eq!(p.meta.frames, vec![(1, 1), (2, 1)]);
        let c = &p.meta.chunks[1];
        assert_eq!(chunk_bytes(&e.bytes, c).unwrap(), b"JPEGDATA1");
        assert_eq!(reconstruct(&e.bytes, &p, None, true).unwrap(), buf);
    }

    #[test]
    fn dictionary_compresses_headers() {
        let samples: Vec<Vec<u8>> = (0..20)
            .map(|i| {
                format!("PATIENT^NAME 1.2.840.{i} SeriesDescription DTI b=1000 {i}")
                    .repeat(20)
                    .into_bytes()
            })
            .collect();
        let raw = zstd::dict::from_samples(&samples, 4096).unwrap();
        let d = HeaderDict::new(raw, Location::default(), 6);
        let buf = samples[3].clone();
        let e = encode_instance(
            &buf,
            None,
            Some(&d),
            Levels::default(),
            &Provenance::default(),
        )
        .unwrap();
        let p = parse_head(&e.bytes).unwrap();
        assert_eq!(p.meta.dict_id, d.id);
        assert!(reconstruct(&e.bytes, &p, None, true).is_err());
        assert_eq!(reconstruct(&e.bytes, &p, Some(&d), true).unwrap(), buf);
    }

    #[test]
    fn damaged_chunks_with_valid_checksums_never_panic() {
        // A chunk whose bytes were altered and re-checksummed (a bug or a forger, not bit
        // rot) must decode to an error or to some bytes, never panic.
        let (buf, layout) = native_buf(1, 200, 100);
        let e = encode_instance(
            &buf,
            Some(&layout),
            None,
            Levels::default(),
            &Provenance::default(),
        )
        .unwrap();
        let p = parse_head(&e.bytes).unwrap();
        for c in &p.meta.chunks[1..] {
            let stored = chunk_bytes(&e.bytes, c).unwrap().to_vec();
            let mut seed = 9u64;
            for round in 0..300 {
                let mut bad = stored.clone();
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let at = (seed >> 33) as usize % bad.len();
                bad[at] ^= 1 << (round % 8);
                if round % 3 == 0 {
                    bad.truncate(at);
                }
                let mut c2 = c.clone();
                c2.xxh3 = xxh3_64(&bad);
                let _ = decode_chunk(&bad, &c2, None);
            }
        }
    }
}
