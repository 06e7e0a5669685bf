//! The DICOM JSON model (PS3.18 F.2) of a parsed dataset. Presentation layer over the
//! parser: bulk data is never inlined (F.2.7): Pixel Data and binary values longer than
//! [`JsonOptions::inline_threshold`] become a `BulkDataURI` when a base URI is given, or are
//! left out (only `"vr"` is written) otherwise.

use std::fmt::Write as _;

use super::reader::{is_pixel_tag, Content, Dataset, Element};
use super::value::{parse_is, PersonName, Value};
use super::vr::Vr;
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
        let v = self.p.value(ds, el);
        match v {
            Value::Bytes => {
                if is_pixel_tag(el.tag) || el.value.len() > self.opts.inline_threshold {
                    self.bulk(el);
                } else {
                    self.out.push_str(",\"InlineBinary\":");
                    let b64 = base64(self.p.raw(el));
                    push_json_str(self.out, &b64);
                }
            }
            Value::Sequence => {}
            // A value that is only padding is empty (PS3.18 F.2.5): no "Value".
            Value::Strings(s) if s.iter().all(String::is_empty) && s.len() <= 1 => {}
            Value::PersonNames(n)
                if n.iter().all(|p| p == &PersonName::default()) && n.len() <= 1 => {}
            Value::Strings(s) => self.strings(el.vr, &s),
            Value::PersonNames(names) => self.names(&names),
            Value::Ints(v) => self.list(v.iter(), |o, x| {
                let _ = write!(o, "{x}");
            }),
            Value::UInts(v) => self.list(v.iter(), |o, x| {
                let _ = write!(o, "{x}");
            }),
            Value::Floats(v) => self.list(v.iter(), |o, x| push_f64(o, *x)),
            Value::Tags(v) => self.list(v.iter(), |o, x| {
                let _ = write!(o, "\"{x:08X}\"");
            }),
        }
    }

    fn list<T>(&mut self, it: impl Iterator<Item = T>, mut f: impl FnMut(&mut String, T)) {
        self.out.push_str(",\"Value\":[");
        for (i, x) in it.enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            f(self.out, x);
        }
        self.out.push(']');
    }

    /// Text values; DS and IS as JSON numbers (PS3.18 F.2.3); empty values as null (F.2.5).
    fn strings(&mut self, vr: Vr, values: &[String]) {
        self.list(values.iter(), |o, s| {
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

    fn names(&mut self, names: &[PersonName]) {
        self.list(names.iter(), |o, n| {
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
}
