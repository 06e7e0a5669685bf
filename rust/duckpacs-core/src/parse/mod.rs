//! The DICOM parser: Part 10 files, files without preamble or meta, and bare datasets as
//! received over DIMSE, in every transfer syntax (implicit/explicit VR little endian, explicit
//! VR big endian, deflated, encapsulated). Parser layer of duckpacs-core, no I/O.
//!
//! - [`parse`] walks a buffer into a [`Parsed`] tree of elements (ranges into the buffer,
//!   values decoded on demand with [`Parsed::value`]);
//! - [`describe`] returns the [`InstanceLayout`] the store needs (PS3.10 7.1 framing, pixel
//!   data position and frame/fragment geometry per PS3.5 8.1.1 and A.4).
//!
//! # Deflated transfer syntaxes
//! For Deflated Explicit VR Little Endian (1.2.840.10008.1.2.1.99, PS3.5 A.5) and JPIP
//! Referenced Deflate (1.2.840.10008.1.2.4.95) the dataset after the meta group is inflated
//! first. All ranges then index the *logical buffer* `data[..meta.end] ++
//! inflate(data[meta.end..])` returned by [`Parsed::data`]: meta offsets equal file offsets,
//! dataset offsets are `meta.end +` the offset in the inflated stream. [`InstanceLayout`]
//! reports `deflated = true` in that case and the store keeps such files whole.
//!
//! # Walking the tree
//! Elements keep byte ranges; values are decoded on demand with the character set of the
//! dataset they belong to:
//! ```
//! use duckpacs_core::parse::{parse, ParseOptions, Value};
//! let mut buf = Vec::new();
//! // (0010,0010) Patient's Name, implicit VR little endian, length 6, "Doe^J "
//! buf.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, 6, 0, 0, 0]);
//! buf.extend_from_slice(b"Doe^J ");
//! let p = parse(&buf, ParseOptions::default()).unwrap();
//! for el in &p.dataset.elements {
//!     assert_eq!(el.tag, 0x0010_0010);
//!     match p.value(&p.dataset, el) {
//!         Value::PersonNames(names) => assert_eq!(names[0].alphabetic, "Doe^J"),
//!         other => panic!("unexpected {other:?}"),
//!     }
//!     for item in el.items() {
//!         // nested datasets: item.dataset.elements, decoded with p.value(&item.dataset, ..)
//!         let _ = item;
//!     }
//! }
//! ```

pub mod charset;
pub mod dict;
pub mod dump;
pub mod json;
pub mod reader;
pub mod value;
pub mod vr;

use std::borrow::Cow;
use std::io::Read;
use std::ops::Range;

pub use charset::Charset;
pub use reader::{Content, Dataset, Element, Item, Syntax};
pub use value::{PersonName, Value};
pub use vr::Vr;

use crate::layout::{Framing, InstanceLayout, PixelKind, PixelLayout};
use crate::{Error, Result};
use reader::Reader;

pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
pub const DEFLATED_EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1.99";
pub const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";
pub const JPIP_REFERENCED_DEFLATE: &str = "1.2.840.10008.1.2.4.95";

/// How to parse.
#[derive(Debug, Clone, Copy, Default)]
pub struct ParseOptions<'a> {
    /// Transfer syntax of a bare dataset (as negotiated over DIMSE). Ignored when the buffer
    /// has a meta group that names one.
    pub transfer_syntax: Option<&'a str>,
    /// Stop before the top-level Pixel Data (or Float/Double Float Pixel Data) element.
    pub stop_at_pixel_data: bool,
}

/// A parsed buffer: the meta group, the dataset, and how they were framed and encoded.
#[derive(Debug, Clone)]
pub struct Parsed<'a> {
    data: Cow<'a, [u8]>,
    pub framing: Framing,
    /// The File Meta Information including any preamble (empty at 0 for a bare dataset).
    pub meta_range: Range<usize>,
    pub meta: Dataset,
    pub dataset: Dataset,
    /// Transfer syntax UID in use (trailing padding removed).
    pub transfer_syntax: String,
    pub syntax: Syntax,
    /// True when the dataset was inflated (see the module docs).
    pub deflated: bool,
    /// Offset of the pixel data element where parsing stopped (`stop_at_pixel_data`).
    pub stopped_at: Option<usize>,
    /// Loop iterations the reader spent on meta and dataset (bounded by the input length).
    pub steps: usize,
    /// Bytes after the last top-level element that are not an element: zero padding of any
    /// length, or 1 to 7 stray bytes (too short for an element header).
    pub trailing_padding: Option<Range<usize>>,
}

impl<'a> Parsed<'a> {
    /// The buffer all ranges refer to (the input, or the logical inflated buffer).
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Raw value bytes of an element.
    pub fn raw(&self, el: &Element) -> &[u8] {
        self.data.get(el.value.clone()).unwrap_or(&[])
    }

    /// Decoded value of `el`, which belongs to `ds` (whose character set applies).
    pub fn value(&self, ds: &Dataset, el: &Element) -> Value {
        value::decode(&self.data, el, &ds.charset)
    }

    /// First value of a top-level text element, trimmed, or "" when absent.
    pub fn string(&self, ds: &Dataset, tag: u32) -> String {
        match ds.get(tag).map(|el| self.value(ds, el)) {
            Some(Value::Strings(v)) => v.into_iter().next().unwrap_or_default(),
            Some(Value::PersonNames(v)) => v
                .into_iter()
                .next()
                .map(|p| p.alphabetic)
                .unwrap_or_default(),
            _ => String::new(),
        }
    }

    /// First value of an integer element (binary or IS).
    pub fn int(&self, ds: &Dataset, tag: u32) -> Option<i64> {
        ds.get(tag)
            .and_then(|el| self.value(ds, el).as_i64s().first().copied())
    }
}

/// (explicit, big endian, deflated) of a transfer syntax UID. Unknown UIDs (private or
/// encapsulated syntaxes) use explicit VR little endian (PS3.5 10.1).
fn syntax_of(uid: &str) -> (Syntax, bool) {
    match uid {
        IMPLICIT_VR_LE => (Syntax::IMPLICIT_LE, false),
        EXPLICIT_VR_BE => (Syntax::EXPLICIT_BE, false),
        DEFLATED_EXPLICIT_VR_LE | JPIP_REFERENCED_DEFLATE => (Syntax::EXPLICIT_LE, true),
        _ => (Syntax::EXPLICIT_LE, false),
    }
}

/// Guesses the encoding of a dataset starting at `pos` from its first element: explicit VR
/// when bytes 4..6 are a VR, big endian when the group reads more plausibly that way.
fn detect_syntax(buf: &[u8], pos: usize) -> Syntax {
    let Some(head) = buf.get(pos..pos + 8) else {
        return Syntax::IMPLICIT_LE;
    };
    let explicit = Vr::from_bytes([head[4], head[5]]).is_some();
    let le = u16::from_le_bytes([head[0], head[1]]);
    let be = u16::from_be_bytes([head[0], head[1]]);
    if explicit && be < le && be != 0 && be <= 0x0008 + 0x00FF && head[0] == 0 {
        return Syntax::EXPLICIT_BE;
    }
    if explicit {
        Syntax::EXPLICIT_LE
    } else {
        Syntax::IMPLICIT_LE
    }
}

fn trim_uid(raw: &[u8]) -> String {
    raw.iter()
        .map(|&b| b as char)
        .collect::<String>()
        .trim_matches(|c: char| c == '\0' || c == ' ')
        .to_string()
}

/// Largest inflated dataset accepted: deflate cannot expand more than ~1032:1, and no real
/// dataset needs more than 1 GiB; a larger result is refused as a decompression bomb.
fn inflate_limit(compressed: usize) -> u64 {
    (compressed as u64)
        .saturating_mul(1032)
        .saturating_add(1024)
        .min(1 << 30)
}

fn inflate(buf: &[u8], meta_end: usize) -> Result<Vec<u8>> {
    let body = buf.get(meta_end..).unwrap_or(&[]);
    let limit = inflate_limit(body.len());
    let mut out = Vec::with_capacity(meta_end + body.len() * 4);
    out.extend_from_slice(buf.get(..meta_end).unwrap_or(&[]));
    let decoder = flate2::read::DeflateDecoder::new(body);
    let read = decoder.take(limit + 1).read_to_end(&mut out).map_err(|e| {
        Error::parse(
            meta_end,
            None,
            format!("deflated dataset does not inflate: {e}"),
        )
    })?;
    if read as u64 > limit {
        return Err(Error::parse(
            meta_end,
            None,
            format!("deflated dataset inflates beyond {limit} bytes"),
        ));
    }
    Ok(out)
}

/// Parses `buf` (see the module docs for what is accepted).
pub fn parse<'a>(buf: &'a [u8], opts: ParseOptions<'_>) -> Result<Parsed<'a>> {
    let (framing, meta_start) = if buf.get(128..132) == Some(b"DICM") {
        (Framing::Part10, 132)
    } else if buf.get(0..2) == Some(&[0x02, 0x00]) && buf.get(2..4).is_some() {
        (Framing::MetaWithoutPreamble, 0)
    } else {
        (Framing::BareDataset, 0)
    };

    let mut meta = Dataset::default();
    let mut meta_end = 0;
    let mut meta_ts = None;
    let mut steps = 0;
    if framing != Framing::BareDataset {
        let mut r = Reader::new(buf, false);
        let (m, end) = r.read_meta(meta_start)?;
        steps = r.steps;
        meta_end = end;
        meta_ts = m
            .get(0x0002_0010)
            .map(|el| trim_uid(buf.get(el.value.clone()).unwrap_or(&[])));
        meta = m;
    }
    let transfer_syntax = match (meta_ts, opts.transfer_syntax) {
        (Some(ts), _) if !ts.is_empty() => ts,
        (_, Some(ts)) => trim_uid(ts.as_bytes()),
        _ => String::new(),
    };
    let (mut syntax, deflated) = if transfer_syntax.is_empty() {
        (detect_syntax(buf, meta_end), false)
    } else {
        syntax_of(&transfer_syntax)
    };
    let data: Cow<'a, [u8]> = if deflated {
        Cow::Owned(inflate(buf, meta_end)?)
    } else {
        Cow::Borrowed(buf)
    };
    // Files whose meta names one little-endian syntax but whose dataset uses the other
    // exist; like pydicom and DCMTK, trust the content (PS3.10 is explicit about neither).
    if !syntax.big_endian {
        let seen = detect_syntax(&data, meta_end);
        if !seen.big_endian {
            syntax = seen;
        }
    }
    let transfer_syntax = if transfer_syntax.is_empty() {
        match (syntax.explicit, syntax.big_endian) {
            (false, _) => IMPLICIT_VR_LE.to_string(),
            (true, false) => EXPLICIT_VR_LE.to_string(),
            (true, true) => EXPLICIT_VR_BE.to_string(),
        }
    } else {
        transfer_syntax
    };
    let mut r = Reader::new(&data, opts.stop_at_pixel_data);
    let (mut dataset, _) = r.read_top(meta_end, syntax, Charset::default())?;
    if r.saw_us_or_ss {
        reader::resolve_us_or_ss(&data, &mut dataset, false);
    }
    let stopped_at = r.stopped_at;
    let steps = steps + r.steps;
    let trailing_padding = r.trailing.clone();
    Ok(Parsed {
        framing,
        meta_range: 0..meta_end,
        meta,
        dataset,
        transfer_syntax,
        syntax,
        deflated,
        stopped_at,
        steps,
        trailing_padding,
        data,
    })
}

/// The layout of one instance for the store (see [`InstanceLayout`]).
pub fn describe(buf: &[u8], transfer_syntax: Option<&str>) -> Result<InstanceLayout> {
    let p = parse(
        buf,
        ParseOptions {
            transfer_syntax,
            stop_at_pixel_data: false,
        },
    )?;
    layout_of(&p)
}

/// Builds the layout from an already parsed buffer.
pub fn layout_of(p: &Parsed<'_>) -> Result<InstanceLayout> {
    let ds = &p.dataset;
    let pixel = ds
        .elements
        .iter()
        .rev()
        .find(|e| reader::is_pixel_tag(e.tag))
        .map(|el| pixel_layout(p, el));
    Ok(InstanceLayout {
        framing: p.framing,
        meta: p.meta_range.clone(),
        transfer_syntax: p.transfer_syntax.clone(),
        sop_class_uid: p.string(ds, 0x0008_0016),
        sop_instance_uid: p.string(ds, 0x0008_0018),
        study_instance_uid: p.string(ds, 0x0020_000D),
        series_instance_uid: p.string(ds, 0x0020_000E),
        patient_id: p.string(ds, 0x0010_0020),
        modality: p.string(ds, 0x0008_0060),
        pixel,
        deflated: p.deflated,
    })
}

fn u16_of(p: &Parsed<'_>, tag: u32) -> u16 {
    p.int(&p.dataset, tag)
        .and_then(|v| u16::try_from(v).ok())
        .unwrap_or(0)
}

fn pixel_layout(p: &Parsed<'_>, el: &Element) -> PixelLayout {
    let element = el.offset..el.end();
    let value = el.value.clone();
    let number_of_frames = p.int(&p.dataset, 0x0028_0008).filter(|&n| n > 0);
    let kind = match &el.content {
        Content::Fragments(items) => PixelKind::Encapsulated {
            frames: encapsulated_frames(p, items, number_of_frames),
            items: items.clone(),
        },
        _ => native(p, el, number_of_frames),
    };
    PixelLayout {
        element,
        value,
        kind,
    }
}

/// Native geometry (PS3.5 8.1.1, PS3.3 C.7.6.3; YBR_*_422 holds 2 samples a pixel, C.7.6.3.1.2).
/// Bits Allocated 1 packs frames without
/// padding between them, so the whole bit stream `ceil(rows*columns*frames/8)` bytes is
/// reported as one frame (`frames = 1`). When the attributes are missing or the value is
/// shorter than they claim, `frames = 0` and `frame_len = 0`: the whole value is tail.
fn native(p: &Parsed<'_>, el: &Element, number_of_frames: Option<i64>) -> PixelKind {
    let rows = u16_of(p, 0x0028_0010);
    let columns = u16_of(p, 0x0028_0011);
    let samples_per_pixel = u16_of(p, 0x0028_0002).max(1);
    let bits_allocated = match el.tag {
        0x7FE0_0008 => 32,
        0x7FE0_0009 => 64,
        _ => u16_of(p, 0x0028_0100),
    };
    let pixel_representation = u16_of(p, 0x0028_0103);
    let planar_configuration = u16_of(p, 0x0028_0006);
    let frames_claimed = u64::try_from(number_of_frames.unwrap_or(1)).unwrap_or(1);
    // YBR_FULL_422 / YBR_PARTIAL_422 keep two chroma samples per two pixels: 2 samples a
    // pixel instead of 3 (PS3.3 C.7.6.3.1.2).
    let photometric = p.string(&p.dataset, 0x0028_0004);
    let samples = if samples_per_pixel == 3 && photometric.ends_with("_422") {
        2
    } else {
        u64::from(samples_per_pixel)
    };
    let pixels = u64::from(rows) * u64::from(columns) * samples;
    let (mut frames, mut frame_len) = if bits_allocated == 1 {
        (1u64, (pixels * frames_claimed).div_ceil(8))
    } else {
        (frames_claimed, pixels * u64::from(bits_allocated) / 8)
    };
    let available = el.value.len() as u64;
    if frame_len == 0
        || bits_allocated % 8 != 0 && bits_allocated != 1
        || frames.saturating_mul(frame_len) > available
    {
        frames = 0;
        frame_len = 0;
    }
    PixelKind::Native {
        rows,
        columns,
        samples_per_pixel,
        bits_allocated,
        pixel_representation,
        planar_configuration,
        frames: u32::try_from(frames).unwrap_or(0),
        frame_len: usize::try_from(frame_len).unwrap_or(0),
        big_endian: el.big_endian,
    }
}

/// Frame -> fragment indices (into `items`, item 0 being the Basic Offset Table), PS3.5 A.4:
/// the Basic Offset Table when present, else the Extended Offset Table (7FE0,0001), else one
/// fragment per frame when the counts match, else every fragment in one frame for a single
/// frame image; otherwise unknown (empty).
fn encapsulated_frames(
    p: &Parsed<'_>,
    items: &[Range<usize>],
    number_of_frames: Option<i64>,
) -> Vec<Range<usize>> {
    let data = p.data();
    let Some(bot) = items.first() else {
        return Vec::new();
    };
    let fragments = items.len().saturating_sub(1);
    if fragments == 0 {
        return Vec::new();
    }
    let first = items.get(1).map(|r| r.start).unwrap_or(0);
    // Offsets of each fragment's item tag relative to the first fragment.
    let starts: Vec<u64> = items
        .iter()
        .skip(1)
        .map(|r| (r.start - first) as u64)
        .collect();
    let bot_value = data.get(bot.start + 8..bot.end).unwrap_or(&[]);
    let offsets: Vec<u64> = if !bot_value.is_empty() {
        bot_value
            .chunks_exact(4)
            .map(|c| u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect()
    } else if let Some(eot) = p.dataset.get(0x7FE0_0001) {
        p.raw(eot)
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect()
    } else {
        Vec::new()
    };
    if !offsets.is_empty() {
        let mut idx = Vec::with_capacity(offsets.len());
        for off in &offsets {
            match starts.binary_search(off) {
                Ok(i) => idx.push(i + 1),
                Err(_) => return Vec::new(),
            }
        }
        if idx.windows(2).any(|w| w[0] >= w[1]) || idx.first() != Some(&1) {
            return Vec::new();
        }
        let mut frames = Vec::with_capacity(idx.len());
        for (k, &s) in idx.iter().enumerate() {
            let e = idx.get(k + 1).copied().unwrap_or(items.len());
            frames.push(s..e);
        }
        return frames;
    }
    let n = number_of_frames.unwrap_or(1);
    if usize::try_from(n).ok() == Some(fragments) {
        return (1..items.len()).map(|i| i..i + 1).collect();
    }
    if n == 1 {
        let all: Range<usize> = 1..items.len();
        return std::iter::once(all).collect();
    }
    Vec::new()
}

#[cfg(test)]
mod tests;
