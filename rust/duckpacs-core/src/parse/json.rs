//! The DICOM JSON model (PS3.18 F.2): duckpacs' one producer of it, for WADO-RS metadata and
//! `dump --json` ([`to_json`], from a parsed dataset) and for QIDO-RS results and STOW-RS
//! responses ([`rows_to_json`], from rows of DICOM text as the index keeps them). Both write
//! values through the same functions: person names split into their groups (F.2.2), IS and
//! DS as JSON numbers (F.2.3), empty values without "Value" and empty ones among several as
//! null (F.2.5).
//!
//! Bulk data is never inlined (F.2.7): Pixel Data and binary values longer than
//! [`JsonOptions::inline_threshold`] become a `BulkDataURI` when a base URI is given, or are
//! left out (only `"vr"` is written) otherwise.

use std::fmt::Write as _;

use dicom_core::dictionary::DataDictionary;
use dicom_dictionary_std::StandardDataDictionary;

use super::dict;
use super::reader::{is_pixel_tag, Content, Dataset, Element};
use super::value::{from_text, parse_is, PersonName, Value};
use super::vr::{ValueKind, Vr};
use super::Parsed;

/// Options of [`to_json`].
#[derive(Debug, Clone, Default)]
pub struct JsonOptions {
    /// Prefix of `BulkDataURI`s; the URI is `{base}{offset}/{length}` (byte range of the value
    /// in [`Parsed::data`]). `None` leaves bulk data out.
    pub bulk_data_uri: Option<String>,
    /// Binary values up to this many bytes are written as `InlineBinary` (default 0: none).
    pub inline_threshold: usize,
    /// Also write the File Meta Information group (0002).
    pub include_meta: bool,
    /// Point the top-level Pixel Data elements at `{base}{tag}` (e.g. `bulkdata/7FE00010`)
    /// instead of a byte range: WADO-RS serves pixel data by tag, frame by frame.
    pub pixel_data_by_tag: bool,
}

/// Writes the dataset of `p` as DICOM JSON.
pub fn to_json(p: &Parsed<'_>, opts: &JsonOptions) -> String {
    let mut out = String::with_capacity(4096);
    let mut w = Writer {
        p,
        opts,
        out: &mut out,
        depth: 0,
    };
    if opts.include_meta {
        let mut merged = p.meta.clone();
        merged.elements.extend(p.dataset.elements.iter().cloned());
        merged.charset = p.dataset.charset;
        w.dataset(&merged);
    } else {
        w.dataset(&p.dataset);
    }
    out
}

struct Writer<'a, 'b> {
    p: &'a Parsed<'b>,
    opts: &'a JsonOptions,
    out: &'a mut String,
    /// Sequence nesting of the element being written (0: top level).
    depth: usize,
}

/// Writes a JSON string literal.
pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Standard base64 (RFC 4648) for InlineBinary.
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let b = [
            c[0],
            c.get(1).copied().unwrap_or(0),
            c.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].iter().enumerate() {
            if i <= c.len() {
                s.push(T[((n >> shift) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

fn push_f64(out: &mut String, v: f64) {
    if v.is_finite() {
        let a = v.abs();
        if v.fract() == 0.0 && a < 1e15 {
            let _ = write!(out, "{}", v as i64);
        } else if !(1e-5..1e16).contains(&a) {
            // Shortest round-trip digits with an exponent (valid JSON: 1.7e38).
            let _ = write!(out, "{v:e}");
        } else {
            let _ = write!(out, "{v}");
        }
    } else {
        // JSON has no NaN or infinity; PS3.18 F.2.3.1 gives no encoding, write it as a string.
        push_json_str(out, &v.to_string());
    }
}

impl Writer<'_, '_> {
    fn dataset(&mut self, ds: &Dataset) {
        self.out.push('{');
        let mut first = true;
        for el in &ds.elements {
            if !first {
                self.out.push(',');
            }
            first = false;
            let _ = write!(self.out, "\"{:08X}\":", el.tag);
            self.element(ds, el);
        }
        self.out.push('}');
    }

    fn element(&mut self, ds: &Dataset, el: &Element) {
        let vr = json_vr(el);
        let _ = write!(self.out, "{{\"vr\":\"{vr}\"");
        match &el.content {
            Content::Items(items) => {
                if !items.is_empty() {
                    self.out.push_str(",\"Value\":[");
                    self.depth += 1;
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            self.out.push(',');
                        }
                        self.dataset(&item.dataset);
                    }
                    self.depth -= 1;
                    self.out.push(']');
                }
            }
            Content::Fragments(_) => self.bulk(el),
            Content::Value => self.value(ds, el),
        }
        self.out.push('}');
    }

    fn bulk(&mut self, el: &Element) {
        if let Some(base) = &self.opts.bulk_data_uri {
            self.out.push_str(",\"BulkDataURI\":");
            let uri = if self.opts.pixel_data_by_tag && self.depth == 0 && is_pixel_tag(el.tag) {
                format!("{base}{:08X}", el.tag)
            } else {
                format!("{base}{}/{}", el.value.start, el.value.len())
            };
            push_json_str(self.out, &uri);
        }
    }

    fn value(&mut self, ds: &Dataset, el: &Element) {
        if el.value.is_empty() {
            return;
        }
        match self.p.value(ds, el) {
            Value::Bytes => {
                if is_pixel_tag(el.tag) || el.value.len() > self.opts.inline_threshold {
                    self.bulk(el);
                } else {
                    self.out.push_str(",\"InlineBinary\":");
                    let b64 = base64(&little_endian(self.p.raw(el), el));
                    push_json_str(self.out, &b64);
                }
            }
            v => push_value(self.out, el.vr, &v),
        }
    }
}

/// A binary value in little endian, as DICOM JSON and bulk data carry it whatever the
/// stored transfer syntax (a big endian one keeps words of OW, OL, OF, OD, OV reversed).
fn little_endian<'v>(raw: &'v [u8], el: &Element) -> std::borrow::Cow<'v, [u8]> {
    let width = match el.vr {
        Vr::OW => 2,
        Vr::OL | Vr::OF => 4,
        Vr::OD | Vr::OV => 8,
        _ => 1,
    };
    if !el.big_endian || width == 1 {
        return std::borrow::Cow::Borrowed(raw);
    }
    let mut out = raw.to_vec();
    for word in out.chunks_exact_mut(width) {
        word.reverse();
    }
    std::borrow::Cow::Owned(out)
}

/// Writes `,"Value":[...]` for a decoded value other than bytes and sequences; nothing for
/// an empty one.
fn push_value(out: &mut String, vr: Vr, v: &Value) {
    match v {
        Value::Bytes | Value::Sequence => {}
        // A value that is only padding is empty (PS3.18 F.2.5): no "Value".
        Value::Strings(s) if s.iter().all(String::is_empty) && s.len() <= 1 => {}
        Value::PersonNames(n) if n.iter().all(|p| p == &PersonName::default()) && n.len() <= 1 => {}
        Value::Strings(s) => push_strings(out, vr, s),
        Value::PersonNames(names) => push_names(out, names),
        Value::Ints(v) => push_list(out, v.iter(), |o, x| {
            let _ = write!(o, "{x}");
        }),
        Value::UInts(v) => push_list(out, v.iter(), |o, x| {
            let _ = write!(o, "{x}");
        }),
        Value::Floats(v) => push_list(out, v.iter(), |o, x| push_f64(o, *x)),
        Value::Tags(v) => push_list(out, v.iter(), |o, x| {
            let _ = write!(o, "\"{x:08X}\"");
        }),
    }
}

fn push_list<T>(out: &mut String, it: impl Iterator<Item = T>, mut f: impl FnMut(&mut String, T)) {
    out.push_str(",\"Value\":[");
    for (i, x) in it.enumerate() {
        if i > 0 {
            out.push(',');
        }
        f(out, x);
    }
    out.push(']');
}

/// Text values; DS and IS as JSON numbers (PS3.18 F.2.3); empty values as null (F.2.5).
fn push_strings(out: &mut String, vr: Vr, values: &[String]) {
    push_list(out, values.iter(), |o, s| {
        if s.is_empty() {
            o.push_str("null");
            return;
        }
        match vr {
            Vr::IS => match parse_is(s) {
                Some(n) => {
                    let _ = write!(o, "{n}");
                }
                None => push_json_str(o, s),
            },
            Vr::DS => match s.trim().parse::<f64>() {
                Ok(f) if f.is_finite() => push_f64(o, f),
                _ => push_json_str(o, s),
            },
            _ => push_json_str(o, s),
        }
    });
}

/// Person names as objects of their non-empty groups (PS3.18 F.2.2).
fn push_names(out: &mut String, names: &[PersonName]) {
    push_list(out, names.iter(), |o, n| {
        o.push('{');
        let mut first = true;
        for (key, val) in [
            ("Alphabetic", &n.alphabetic),
            ("Ideographic", &n.ideographic),
            ("Phonetic", &n.phonetic),
        ] {
            if val.is_empty() {
                continue;
            }
            if !first {
                o.push(',');
            }
            first = false;
            let _ = write!(o, "\"{key}\":");
            push_json_str(o, val);
        }
        o.push('}');
    });
}

/// One attribute of a row: DICOM text as the index keeps it (values joined by `\\`),
/// nothing, or the items of a sequence.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Empty,
    Text(String),
    Items(Vec<Fields>),
}

/// A row: keywords (or tags as 8 hex digits) and their values.
pub type Fields = Vec<(String, Field)>;

/// The tag and VR of a keyword or of a tag written as 8 hex digits (PS3.18 8.3.4.1); the
/// VR is the dictionary's, resolved as for implicit VR ([`dict::implicit_vr`]).
pub fn tag_and_vr(name: &str) -> Option<(u32, Vr)> {
    let tag = if name.len() == 8 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        u32::from_str_radix(name, 16).ok()?
    } else {
        let entry = StandardDataDictionary.by_name(name)?;
        let t = entry.tag.inner();
        (u32::from(t.group()) << 16) | u32::from(t.element())
    };
    Some((tag, dict::implicit_vr(tag, false)))
}

/// Writes one row as a DICOM JSON object, attributes in tag order; names that are neither
/// keywords nor tags are left out.
pub fn push_row(out: &mut String, row: &[(String, Field)]) {
    let mut fields: Vec<(u32, Vr, &Field)> = row
        .iter()
        .filter_map(|(name, f)| tag_and_vr(name).map(|(t, vr)| (t, vr, f)))
        .collect();
    fields.sort_by_key(|f| f.0);
    fields.dedup_by_key(|f| f.0);
    out.push('{');
    for (i, (tag, vr, field)) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let vr = match field {
            Field::Items(_) => Vr::SQ,
            _ => vr,
        };
        let _ = write!(out, "\"{tag:08X}\":{{\"vr\":\"{vr}\"");
        match field {
            Field::Empty => {}
            Field::Items(items) if items.is_empty() => {}
            Field::Items(items) => push_list(out, items.iter(), |o, item| push_row(o, item)),
            Field::Text(t) if t.is_empty() => {}
            // Binary values have no text form: the index's text is their content.
            Field::Text(t) if vr.kind() == ValueKind::Bytes => {
                out.push_str(",\"InlineBinary\":");
                push_json_str(out, &base64(t.as_bytes()));
            }
            Field::Text(t) => push_value(out, vr, &from_text(vr, t)),
        }
        out.push('}');
    }
    out.push('}');
}

/// Rows as a DICOM JSON array (PS3.18 F.2.1): QIDO-RS results.
pub fn rows_to_json(rows: &[Fields]) -> String {
    let mut out = String::with_capacity(rows.len() * 512 + 2);
    out.push('[');
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_row(&mut out, row);
    }
    out.push(']');
    out
}

/// The VR written in JSON: a UN of undefined length read as a sequence is written as SQ
/// (PS3.5 6.2.2: its content is an implicit VR sequence).
fn json_vr(el: &Element) -> Vr {
    if el.is_sequence() {
        Vr::SQ
    } else {
        el.vr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn rows_follow_the_rules_of_datasets() {
        let text = |t: &str| Field::Text(t.to_string());
        let row: Fields = vec![
            (
                "PatientName".into(),
                text("Yamada^Tarou=山田^太郎=やまだ^たろう"),
            ),
            ("InstanceNumber".into(), text("7")),
            ("SliceThickness".into(), text("1.50")),
            ("ImageType".into(), text("ORIGINAL\\PRIMARY\\")),
            ("AccessionNumber".into(), Field::Empty),
            ("Rows".into(), text("512")),
            ("00091010".into(), text("x")),
            ("NotAKeyword".into(), text("left out")),
            (
                "ReferencedSOPSequence".into(),
                Field::Items(vec![vec![("ReferencedSOPInstanceUID".into(), text("1.2"))]]),
            ),
        ];
        let want = concat!(
            r#"[{"00080008":{"vr":"CS","Value":["ORIGINAL","PRIMARY",null]},"#,
            r#""00080050":{"vr":"SH"},"#,
            r#""00081199":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.2"]}}]},"#,
            r#""00091010":{"vr":"UN","InlineBinary":"eA=="},"#,
            r#""00100010":{"vr":"PN","Value":[{"Alphabetic":"Yamada^Tarou","#,
            r#""Ideographic":"山田^太郎","Phonetic":"やまだ^たろう"}]},"#,
            r#""00180050":{"vr":"DS","Value":[1.5]},"00200013":{"vr":"IS","Value":[7]},"#,
            r#""00280010":{"vr":"US","Value":[512]}}]"#
        );
        assert_eq!(rows_to_json(&[row]), want);
    }
}
