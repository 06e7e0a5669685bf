//! Index layer: turns parsed headers into Arrow record batches for the DuckDB index.
//!
//! The batch follows the header batch contract of `python/duckpacs/index/schema.py`
//! (`BATCH_SCHEMA`): one text column per key attribute ([`KEY_COLUMNS`]), the location and
//! provenance columns ([`Extra`]), and `attrs`, a list with one entry per value of every
//! element, top-level and nested, private ones included. Value rules (PS3.5 6.2):
//!
//! - text VRs: decoded with the Specific Character Set (by the parser), one entry per value;
//! - PN: the whole value including component groups (`Alphabetic=Ideographic=Phonetic`);
//! - binary numbers: formatted as text, the number also in `num` (DS and IS too);
//! - AT: `GGGGEEEE`; bulk binary VRs (OB, OW, ...): one entry without a value;
//! - UN that is printable ASCII (private elements of implicit VR files, up to 1 KiB): as text
//!   split on `\`, so private attributes stay searchable; other UN: no value;
//! - group 0002 and Pixel Data (7FE0,0010/0008/0009) are left out, and so is everything
//!   after the top-level Pixel Data (the store's header bytes end there).
//!
//! Sequence items are named by `parent`: `"SSSSSSSS#n"` (sequence tag in hex, item from 0),
//! nested items joined with `/`.

use std::sync::Arc;

use arrow_array::builder::{Float64Builder, StringBuilder, UInt64Builder};
use arrow_array::{
    ArrayRef, ListArray, RecordBatch, StructArray, TimestampMicrosecondArray, UInt16Array,
    UInt32Array,
};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{ArrowError, DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

use crate::parse::value::text_values;
use crate::parse::vr::ValueKind;
use crate::parse::{self, Dataset, Element, ParseOptions, Parsed, PersonName, Value, Vr};
use crate::Error;

/// Key-attribute columns, in the order of `KEY_ATTRIBUTES` in `schema.py`.
pub const KEY_COLUMNS: [(&str, u32); 31] = [
    ("patient_name", 0x0010_0010),
    ("patient_id", 0x0010_0020),
    ("issuer_of_patient_id", 0x0010_0021),
    ("patient_birth_date", 0x0010_0030),
    ("patient_sex", 0x0010_0040),
    ("study_instance_uid", 0x0020_000D),
    ("study_date", 0x0008_0020),
    ("study_time", 0x0008_0030),
    ("accession_number", 0x0008_0050),
    ("study_id", 0x0020_0010),
    ("study_description", 0x0008_1030),
    ("referring_physician_name", 0x0008_0090),
    ("series_instance_uid", 0x0020_000E),
    ("modality", 0x0008_0060),
    ("series_number", 0x0020_0011),
    ("series_description", 0x0008_103E),
    ("series_date", 0x0008_0021),
    ("series_time", 0x0008_0031),
    ("body_part_examined", 0x0018_0015),
    ("station_name", 0x0008_1010),
    ("institution_name", 0x0008_0080),
    ("manufacturer", 0x0008_0070),
    ("protocol_name", 0x0018_1030),
    ("sop_instance_uid", 0x0008_0018),
    ("sop_class_uid", 0x0008_0016),
    ("instance_number", 0x0020_0013),
    ("content_date", 0x0008_0023),
    ("content_time", 0x0008_0033),
    ("number_of_frames", 0x0028_0008),
    ("pixel_rows", 0x0028_0010),
    ("pixel_columns", 0x0028_0011),
];

const PIXEL_TAGS: [u32; 3] = [0x7FE0_0010, 0x7FE0_0008, 0x7FE0_0009];
/// Longest UN value read as text (see [`un_text`]).
pub const UN_TEXT_MAX: usize = 1024;
/// Sequences nested deeper than this are not indexed (the parser bounds nesting too).
const MAX_DEPTH: usize = 32;

/// Location and provenance of one instance (all optional; the transfer syntax defaults to
/// the parsed one).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extra {
    pub transfer_syntax: Option<String>,
    pub pack: Option<u64>,
    pub offset: Option<u64>,
    pub length: Option<u64>,
    /// Hex SHA-256 of the original bytes.
    pub sha256: Option<String>,
    pub size: Option<u64>,
    /// Microseconds since the Unix epoch, UTC.
    pub received_at_us: Option<i64>,
    pub source_ae: Option<String>,
}

fn attr_fields() -> Fields {
    Fields::from(vec![
        Field::new("parent", DataType::Utf8, false),
        Field::new("tag", DataType::UInt32, false),
        Field::new("vr", DataType::Utf8, false),
        Field::new("creator", DataType::Utf8, true),
        Field::new("vm_index", DataType::UInt16, false),
        Field::new("value", DataType::Utf8, true),
        Field::new("num", DataType::Float64, true),
    ])
}

fn attrs_item() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Struct(attr_fields()), true))
}

/// The Arrow schema of a header batch (equal to `BATCH_SCHEMA` in `schema.py`).
pub fn schema() -> SchemaRef {
    let mut fields: Vec<Field> = KEY_COLUMNS
        .iter()
        .map(|(name, _)| Field::new(*name, DataType::Utf8, true))
        .collect();
    fields.extend([
        Field::new("transfer_syntax", DataType::Utf8, true),
        Field::new("pack", DataType::UInt64, true),
        Field::new("offset", DataType::UInt64, true),
        Field::new("length", DataType::UInt64, true),
        Field::new("sha256", DataType::Utf8, true),
        Field::new("size", DataType::UInt64, true),
        Field::new(
            "received_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new("source_ae", DataType::Utf8, true),
        Field::new("attrs", DataType::List(attrs_item()), true),
    ]);
    Arc::new(Schema::new(fields))
}

/// Column builders of the `attrs` entries.
#[derive(Default)]
struct Attrs {
    parent: StringBuilder,
    tag: Vec<u32>,
    vr: StringBuilder,
    creator: StringBuilder,
    vm_index: Vec<u16>,
    value: StringBuilder,
    num: Float64Builder,
    offsets: Vec<i32>,
}

impl Attrs {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        parent: &str,
        tag: u32,
        vr: &str,
        creator: Option<&str>,
        vm_index: usize,
        value: Option<&str>,
        num: Option<f64>,
    ) {
        self.parent.append_value(parent);
        self.tag.push(tag);
        self.vr.append_value(vr);
        self.creator.append_option(creator);
        self.vm_index
            .push(u16::try_from(vm_index).unwrap_or(u16::MAX));
        self.value.append_option(value);
        self.num.append_option(num);
    }

    fn len(&self) -> usize {
        self.tag.len()
    }
}

/// Accumulates instances and produces one [`RecordBatch`].
pub struct BatchBuilder {
    keys: Vec<StringBuilder>,
    transfer_syntax: StringBuilder,
    pack: UInt64Builder,
    offset: UInt64Builder,
    length: UInt64Builder,
    sha256: StringBuilder,
    size: UInt64Builder,
    received_at: Vec<Option<i64>>,
    source_ae: StringBuilder,
    attrs: Attrs,
    rows: usize,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchBuilder {
    pub fn new() -> Self {
        let mut attrs = Attrs::default();
        attrs.offsets.push(0);
        BatchBuilder {
            keys: KEY_COLUMNS.iter().map(|_| StringBuilder::new()).collect(),
            transfer_syntax: StringBuilder::new(),
            pack: UInt64Builder::new(),
            offset: UInt64Builder::new(),
            length: UInt64Builder::new(),
            sha256: StringBuilder::new(),
            size: UInt64Builder::new(),
            received_at: Vec::new(),
            source_ae: StringBuilder::new(),
            attrs,
            rows: 0,
        }
    }

    /// Number of instances appended so far.
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends one parsed instance.
    pub fn append(&mut self, p: &Parsed<'_>, extra: &Extra) -> Result<(), Error> {
        let ds = &p.dataset;
        let mut keys: [Option<String>; KEY_COLUMNS.len()] = Default::default();
        entries(p, ds, "", 0, &mut self.attrs, &mut keys);
        for (builder, key) in self.keys.iter_mut().zip(keys.iter()) {
            builder.append_option(key.as_deref());
        }
        let ts = extra
            .transfer_syntax
            .as_deref()
            .unwrap_or(p.transfer_syntax.as_str());
        self.transfer_syntax.append_value(ts);
        self.pack.append_option(extra.pack);
        self.offset.append_option(extra.offset);
        self.length.append_option(extra.length);
        self.sha256.append_option(extra.sha256.as_deref());
        self.size.append_option(extra.size);
        self.received_at.push(extra.received_at_us);
        self.source_ae.append_option(extra.source_ae.as_deref());
        let end = i32::try_from(self.attrs.len())
            .map_err(|_| Error::parse(0, None, "header batch too large (over 2^31 values)"))?;
        self.attrs.offsets.push(end);
        self.rows += 1;
        Ok(())
    }

    /// Builds the batch and resets the builder.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let mut columns: Vec<ArrayRef> = self
            .keys
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        let received = TimestampMicrosecondArray::from(std::mem::take(&mut self.received_at))
            .with_timezone("UTC");
        columns.extend([
            Arc::new(self.transfer_syntax.finish()) as ArrayRef,
            Arc::new(self.pack.finish()),
            Arc::new(self.offset.finish()),
            Arc::new(self.length.finish()),
            Arc::new(self.sha256.finish()),
            Arc::new(self.size.finish()),
            Arc::new(received),
            Arc::new(self.source_ae.finish()),
        ]);
        let a = &mut self.attrs;
        let values = StructArray::try_new(
            attr_fields(),
            vec![
                Arc::new(a.parent.finish()) as ArrayRef,
                Arc::new(UInt32Array::from(std::mem::take(&mut a.tag))),
                Arc::new(a.vr.finish()),
                Arc::new(a.creator.finish()),
                Arc::new(UInt16Array::from(std::mem::take(&mut a.vm_index))),
                Arc::new(a.value.finish()),
                Arc::new(a.num.finish()),
            ],
            None,
        )?;
        let offsets = std::mem::replace(&mut a.offsets, vec![0]);
        let list = ListArray::try_new(
            attrs_item(),
            OffsetBuffer::new(offsets.into()),
            Arc::new(values),
            None,
        )?;
        columns.push(Arc::new(list));
        self.rows = 0;
        RecordBatch::try_new(schema(), columns)
    }
}

/// Buffers that failed to parse: (index into the input, why).
pub type Failures = Vec<(usize, Error)>;

/// [`build_batch`] on up to `threads` threads over contiguous chunks of `buffers`: one batch
/// per chunk, in order; failed buffers are reported with their index into `buffers`.
pub fn build_batches(
    buffers: &[&[u8]],
    extras: &[Extra],
    transfer_syntax: Option<&str>,
    threads: usize,
) -> Result<(Vec<RecordBatch>, Failures), Error> {
    let threads = threads.clamp(1, 64);
    // Below a few hundred buffers a thread costs more than it saves.
    let chunk = buffers.len().div_ceil(threads).max(256);
    let results: Vec<Result<(RecordBatch, Failures), Error>> = std::thread::scope(|scope| {
        let handles: Vec<_> = buffers
            .chunks(chunk)
            .enumerate()
            .map(|(n, part)| {
                let start = n * chunk;
                let end = (start + part.len()).min(extras.len());
                let extra = extras.get(start.min(end)..end).unwrap_or(&[]);
                scope.spawn(move || build_batch(part, extra, transfer_syntax))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::parse(0, None, "header batch worker panicked")))
            })
            .collect()
    });
    let mut batches = Vec::new();
    let mut failed = Vec::new();
    for (n, result) in results.into_iter().enumerate() {
        let (batch, errors) = result?;
        batches.push(batch);
        failed.extend(errors.into_iter().map(|(i, e)| (n * chunk + i, e)));
    }
    Ok((batches, failed))
}

/// Parses each buffer (pixel data skipped) and builds one batch of those that parse; the
/// others are returned with their index and error. A bare dataset is read in its extra's
/// transfer syntax, else in `transfer_syntax` (a Part 10 meta group names its own).
pub fn build_batch(
    buffers: &[&[u8]],
    extras: &[Extra],
    transfer_syntax: Option<&str>,
) -> Result<(RecordBatch, Failures), Error> {
    let mut builder = BatchBuilder::new();
    let mut failed = Vec::new();
    let none = Extra::default();
    for (i, buf) in buffers.iter().enumerate() {
        let extra = extras.get(i).unwrap_or(&none);
        let opts = ParseOptions {
            // a record's own transfer syntax (bare datasets from the store) wins
            transfer_syntax: extra.transfer_syntax.as_deref().or(transfer_syntax),
            stop_at_pixel_data: true,
        };
        match parse::parse(buf, opts) {
            Ok(p) => builder.append(&p, extra)?,
            Err(e) => failed.push((i, e)),
        }
    }
    let batch = builder
        .finish()
        .map_err(|e| Error::parse(0, None, format!("building the header batch: {e}")))?;
    Ok((batch, failed))
}

fn pn_text(n: &PersonName) -> String {
    let mut s = n.alphabetic.clone();
    if !n.ideographic.is_empty() || !n.phonetic.is_empty() {
        s.push('=');
        s.push_str(&n.ideographic);
    }
    if !n.phonetic.is_empty() {
        s.push('=');
        s.push_str(&n.phonetic);
    }
    s
}

fn float_text(vr: Vr, x: f64) -> String {
    if vr == Vr::FL {
        format!("{}", x as f32)
    } else {
        format!("{x}")
    }
}

/// (text, number) of each value of `el`; None for a value-less or bulk element.
fn values(p: &Parsed<'_>, ds: &Dataset, el: &Element) -> Option<Vec<(String, Option<f64>)>> {
    let numeric_text = el.vr == Vr::DS || el.vr == Vr::IS;
    let out: Vec<(String, Option<f64>)> = match p.value(ds, el) {
        Value::Strings(v) => v
            .into_iter()
            .map(|s| {
                let num = if numeric_text {
                    s.trim().parse::<f64>().ok()
                } else {
                    None
                };
                (s, num)
            })
            .collect(),
        Value::PersonNames(v) => v.iter().map(|n| (pn_text(n), None)).collect(),
        Value::Ints(v) => v.iter().map(|&i| (i.to_string(), Some(i as f64))).collect(),
        Value::UInts(v) => v.iter().map(|&i| (i.to_string(), Some(i as f64))).collect(),
        Value::Floats(v) => v.iter().map(|&x| (float_text(el.vr, x), Some(x))).collect(),
        Value::Tags(v) => v.iter().map(|&t| (format!("{t:08X}"), None)).collect(),
        Value::Bytes if el.vr == Vr::UN => {
            un_text(p.raw(el))?.into_iter().map(|s| (s, None)).collect()
        }
        Value::Bytes | Value::Sequence => return None,
    };
    match out.as_slice() {
        [] => None,
        [(only, _)] if only.is_empty() => None,
        _ => Some(out),
    }
}

/// An UN value that is plain text (private elements of implicit VR files): its values, so
/// they can be searched. Printable ASCII only, at most [`UN_TEXT_MAX`] bytes.
fn un_text(raw: &[u8]) -> Option<Vec<String>> {
    let body = {
        let mut end = raw.len();
        while end > 0 && matches!(raw.get(end - 1), Some(0 | b' ')) {
            end -= 1;
        }
        raw.get(..end)?
    };
    if body.is_empty() || body.len() > UN_TEXT_MAX || !body.iter().all(|b| (0x20..0x7F).contains(b))
    {
        return None;
    }
    let text = std::str::from_utf8(body).ok()?;
    Some(text.split('\\').map(|p| p.trim().to_string()).collect())
}

/// The fast path of [`entries`] for text that is plain ASCII in a character set that leaves
/// ASCII unchanged (nearly every value): the values are pushed as slices of the buffer,
/// without the `String` per value that [`values`] builds. It gives exactly what `values`
/// gives (the splitting and trimming of `value::decode`, PS3.5 6.2); returns false, having
/// pushed nothing, when it does not apply.
fn push_ascii_text(
    p: &Parsed<'_>,
    ds: &Dataset,
    el: &Element,
    parent: &str,
    owner: Option<&str>,
    out: &mut Attrs,
    key: Option<&mut Option<String>>,
) -> bool {
    let via_charset = match el.vr.kind() {
        ValueKind::AsciiText => false, // decoded as Latin-1 whatever the character set
        ValueKind::Text | ValueKind::SingleText => el.vr != Vr::UR,
        _ => return false,
    };
    let raw = p.raw(el);
    if !raw.is_ascii() || (via_charset && !ds.charset.decodes_ascii_unchanged()) {
        return false;
    }
    let Ok(text) = std::str::from_utf8(raw) else {
        return false;
    };
    let numeric = el.vr == Vr::DS || el.vr == Vr::IS;
    let vr = el.vr.as_str();
    let tag = el.tag;
    let mut values = text_values(el.vr, text).peekable();
    let first = values.next().unwrap_or("");
    // No values, or one empty value: an entry without a value (as `values` returning None).
    if raw.is_empty() || (first.is_empty() && values.peek().is_none()) {
        out.push(parent, tag, vr, owner, 0, None, None);
        if let Some(slot) = key {
            *slot = Some(String::new());
        }
        return true;
    }
    let mut joined = key.is_some().then(String::new);
    for (i, piece) in std::iter::once(first).chain(values).enumerate() {
        let num = if numeric {
            piece.trim().parse::<f64>().ok()
        } else {
            None
        };
        out.push(parent, tag, vr, owner, i, Some(piece), num);
        if let Some(j) = joined.as_mut() {
            if i > 0 {
                j.push('\\');
            }
            j.push_str(piece);
        }
    }
    if let (Some(slot), Some(j)) = (key, joined) {
        *slot = Some(j);
    }
    true
}

/// Column of a top-level key attribute.
fn key_slot(tag: u32) -> Option<usize> {
    KEY_COLUMNS.iter().position(|(_, t)| *t == tag)
}

/// All values of a key attribute as one text (`\`-joined), "" when it has none.
fn joined(v: Option<&Vec<(String, Option<f64>)>>) -> String {
    match v {
        None => String::new(),
        Some(v) => v
            .iter()
            .map(|(s, _)| s.as_str())
            .collect::<Vec<_>>()
            .join("\\"),
    }
}

/// The Private Creator of a private element (PS3.5 7.8.1), from the same dataset.
fn creator(p: &Parsed<'_>, ds: &Dataset, tag: u32) -> Option<String> {
    let group = tag >> 16;
    let element = tag & 0xFFFF;
    if group & 1 == 0 || element < 0x1000 {
        return None;
    }
    let el = ds.get((group << 16) | (element >> 8))?;
    // LO, or UN when an implicit VR parser did not know it for a creator (PS3.5 7.8.1).
    values(p, ds, el)?.into_iter().next().map(|(text, _)| text)
}

/// Pushes every element of `ds` (recursively) onto `out`; at the top level, also fills the
/// key-attribute texts in `keys` (so each value is decoded once).
fn entries(
    p: &Parsed<'_>,
    ds: &Dataset,
    parent: &str,
    depth: usize,
    out: &mut Attrs,
    keys: &mut [Option<String>],
) {
    for el in &ds.elements {
        let tag = el.tag;
        if depth == 0 && PIXEL_TAGS.contains(&tag) {
            // The index holds the header: what precedes the pixel data. Elements after it
            // (trailing padding, signatures) are not in the store's header bytes either, so
            // an index rebuilt from the store equals the one built on arrival.
            break;
        }
        if tag >> 16 == 0x0002 || PIXEL_TAGS.contains(&tag) {
            continue;
        }
        let owner = creator(p, ds, tag);
        let owner = owner.as_deref();
        if el.is_sequence() {
            out.push(parent, tag, "SQ", owner, 0, None, None);
            if depth >= MAX_DEPTH {
                continue;
            }
            for (i, item) in el.items().iter().enumerate() {
                let child = if parent.is_empty() {
                    format!("{tag:08X}#{i}")
                } else {
                    format!("{parent}/{tag:08X}#{i}")
                };
                entries(p, &item.dataset, &child, depth + 1, out, &mut []);
            }
            continue;
        }
        let vr = el.vr.as_str();
        let key = if depth == 0 {
            key_slot(tag).and_then(|i| keys.get_mut(i))
        } else {
            None
        };
        if push_ascii_text(p, ds, el, parent, owner, out, key) {
            continue;
        }
        let decoded = values(p, ds, el);
        if depth == 0 {
            if let Some(slot) = key_slot(tag).and_then(|i| keys.get_mut(i)) {
                *slot = Some(joined(decoded.as_ref()));
            }
        }
        match decoded {
            None => out.push(parent, tag, vr, owner, 0, None, None),
            Some(v) => {
                for (i, (text, num)) in v.iter().enumerate() {
                    out.push(parent, tag, vr, owner, i, Some(text), *num);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;

    /// A small explicit VR little endian dataset: PatientName with two component groups,
    /// a DS with two values, a private block, a sequence with one item.
    fn dataset() -> Vec<u8> {
        fn el(out: &mut Vec<u8>, g: u16, e: u16, vr: &[u8; 2], value: &[u8]) {
            out.extend(g.to_le_bytes());
            out.extend(e.to_le_bytes());
            out.extend(vr);
            let len = u16::try_from(value.len()).unwrap_or(0);
            out.extend(len.to_le_bytes());
            out.extend(value);
        }
        let mut b = Vec::new();
        el(&mut b, 0x0008, 0x0005, b"CS", b"ISO_IR 192");
        el(&mut b, 0x0008, 0x0018, b"UI", b"1.2.3.4\0");
        el(&mut b, 0x0008, 0x0060, b"CS", b"MR");
        el(&mut b, 0x0009, 0x0010, b"LO", b"ACME 1.0");
        el(&mut b, 0x0009, 0x1001, b"LO", b"secret");
        el(
            &mut b,
            0x0010,
            0x0010,
            b"PN",
            "Yamada^Tarou=山田^太郎 ".as_bytes(),
        );
        el(&mut b, 0x0018, 0x0050, b"DS", b"1.5\\2 ");
        // (0040,0275) SQ, undefined length, one item of undefined length with CodeValue.
        b.extend([0x40, 0x00, 0x75, 0x02]);
        b.extend(b"SQ\0\0");
        b.extend([0xFF; 4]);
        b.extend([0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        el(&mut b, 0x0008, 0x0100, b"SH", b"CODE1 ");
        b.extend([0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        b.extend([0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        b
    }

    #[test]
    fn builds_key_columns_and_entries() {
        let buf = dataset();
        let extra = Extra {
            pack: Some(3),
            offset: Some(100),
            ..Extra::default()
        };
        let (batch, failed) =
            build_batch(&[&buf], &[extra], Some(parse::EXPLICIT_VR_LE)).expect("batch");
        assert!(failed.is_empty());
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.schema(), schema());
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<arrow_array::StringArray>())
                .map(|a| a.value(0).to_string())
        };
        assert_eq!(
            col("patient_name").as_deref(),
            Some("Yamada^Tarou=山田^太郎")
        );
        assert_eq!(col("sop_instance_uid").as_deref(), Some("1.2.3.4"));
        assert_eq!(col("modality").as_deref(), Some("MR"));
        let attrs = batch
            .column_by_name("attrs")
            .and_then(|c| c.as_any().downcast_ref::<ListArray>())
            .expect("attrs");
        let item = attrs.value(0);
        let s = item.as_any().downcast_ref::<StructArray>().expect("struct");
        let text = |i: usize, f: &str| {
            s.column_by_name(f)
                .and_then(|c| c.as_any().downcast_ref::<arrow_array::StringArray>())
                .and_then(|a| {
                    if a.is_valid(i) {
                        Some(a.value(i).to_string())
                    } else {
                        None
                    }
                })
        };
        let tags = s
            .column_by_name("tag")
            .and_then(|c| c.as_any().downcast_ref::<UInt32Array>())
            .expect("tags");
        let find = |tag: u32| {
            (0..s.len())
                .filter(|&i| tags.value(i) == tag)
                .collect::<Vec<_>>()
        };
        let private = find(0x0009_1001);
        assert_eq!(text(private[0], "creator").as_deref(), Some("ACME 1.0"));
        let ds = find(0x0018_0050);
        assert_eq!(ds.len(), 2);
        assert_eq!(text(ds[1], "value").as_deref(), Some("2"));
        let code = find(0x0008_0100);
        assert_eq!(text(code[0], "parent").as_deref(), Some("00400275#0"));
        assert_eq!(text(code[0], "value").as_deref(), Some("CODE1"));
        let seq = find(0x0040_0275);
        assert_eq!(text(seq[0], "vr").as_deref(), Some("SQ"));
        assert_eq!(text(seq[0], "value"), None);
    }

    #[test]
    fn threads_split_the_work_and_keep_indices() {
        let good = dataset();
        let bad = vec![0x08, 0x00, 0x18, 0x00, b'U', b'I', 0xFF, 0x7F, b'1'];
        let mut buffers: Vec<&[u8]> = vec![&good; 700];
        buffers[600] = &bad;
        let extras: Vec<Extra> = (0..700)
            .map(|i| Extra {
                offset: Some(i),
                ..Extra::default()
            })
            .collect();
        let (batches, failed) =
            build_batches(&buffers, &extras, Some(parse::EXPLICIT_VR_LE), 3).expect("batches");
        assert_eq!(batches.len(), 3);
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 699);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0, 600);
        let offsets = batches[2]
            .column_by_name("offset")
            .and_then(|c| c.as_any().downcast_ref::<arrow_array::UInt64Array>())
            .expect("offsets");
        assert_eq!(offsets.value(0), 512);
    }

    #[test]
    fn bad_buffers_are_reported_not_fatal() {
        let good = dataset();
        let bad = vec![0x08, 0x00, 0x18, 0x00, b'U', b'I', 0xFF, 0x7F, b'1'];
        let (batch, failed) =
            build_batch(&[&bad, &good], &[], Some(parse::EXPLICIT_VR_LE)).expect("batch");
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0, 0);
    }

    /// The ASCII fast path pushes exactly what the general path (`values`, `joined`) does,
    /// for every text VR and the awkward values: empty, padding only, empty components,
    /// leading spaces (significant in LT/ST/UT), NUL-padded UIDs, numbers with spaces.
    #[test]
    fn ascii_fast_path_equals_the_general_path() {
        fn el(out: &mut Vec<u8>, tag: u32, vr: &[u8; 2], value: &[u8]) {
            out.extend(((tag >> 16) as u16).to_le_bytes());
            out.extend(((tag & 0xFFFF) as u16).to_le_bytes());
            out.extend(vr);
            let long = matches!(vr, b"UT" | b"UR" | b"UC");
            if long {
                out.extend([0, 0]);
                out.extend((value.len() as u32).to_le_bytes());
            } else {
                out.extend((value.len() as u16).to_le_bytes());
            }
            out.extend(value);
        }
        let samples: [&[u8]; 14] = [
            b"",
            b"  ",
            b"\0\0",
            b"A",
            b" A ",
            b"A\\B",
            b"A\\\\B ",
            b"\\",
            b" 1.5\\ 2 ",
            b"1.2.3\0",
            b"  lead and trail  ",
            b"x\\",
            b"-3\\+4e2\\abc",
            b"MR\\CT ",
        ];
        let vrs: [&[u8; 2]; 16] = [
            b"AE", b"AS", b"CS", b"DA", b"DS", b"DT", b"IS", b"LO", b"LT", b"SH", b"ST", b"TM",
            b"UC", b"UI", b"UR", b"UT",
        ];
        for charset in [&b"ISO_IR 100"[..], b"ISO_IR 192", b"\\ISO 2022 IR 87"] {
            let mut buf = Vec::new();
            el(&mut buf, 0x0008_0005, b"CS", charset);
            let mut tag = 0x0011_1000u32; // private-looking but without a creator
            for vr in vrs {
                for v in samples {
                    // even length, as the standard requires
                    let mut v = v.to_vec();
                    if v.len() % 2 == 1 {
                        v.push(b' ');
                    }
                    el(&mut buf, tag, vr, &v);
                    tag += 1;
                }
            }
            let opts = ParseOptions {
                transfer_syntax: Some(parse::EXPLICIT_VR_LE),
                stop_at_pixel_data: true,
            };
            let p = parse::parse(&buf, opts).expect("parses");
            let ds = &p.dataset;
            let mut taken = 0;
            for e in &ds.elements[1..] {
                let mut fast = Attrs::default();
                let mut fast_key = None;
                let took = push_ascii_text(&p, ds, e, "", None, &mut fast, Some(&mut fast_key));
                let mut slow = Attrs::default();
                let decoded = values(&p, ds, e);
                let slow_key = Some(joined(decoded.as_ref()));
                match &decoded {
                    None => slow.push("", e.tag, e.vr.as_str(), None, 0, None, None),
                    Some(v) => {
                        for (i, (text, num)) in v.iter().enumerate() {
                            slow.push("", e.tag, e.vr.as_str(), None, i, Some(text), *num);
                        }
                    }
                }
                let charset_text = !matches!(e.vr.kind(), ValueKind::AsciiText) && e.vr != Vr::UR;
                assert_eq!(
                    took,
                    !(charset.starts_with(b"\\") && charset_text),
                    "{:?}",
                    e.vr
                );
                if !took {
                    continue;
                }
                taken += 1;
                let what = format!("{:?} {:08X} {:?}", e.vr, e.tag, p.raw(e));
                assert_eq!(fast_key, slow_key, "key text of {what}");
                assert_eq!(fast.len(), slow.len(), "entries of {what}");
                let (f, s) = (fast.value.finish(), slow.value.finish());
                assert_eq!(f, s, "values of {what}");
                assert_eq!(fast.num.finish(), slow.num.finish(), "numbers of {what}");
                assert_eq!(fast.vm_index, slow.vm_index, "value indices of {what}");
            }
            assert!(
                taken >= 9 * samples.len(),
                "the fast path ran for {taken} elements"
            );
        }
    }
}
