//! Decoding element values: text per Specific Character Set, person names split into their
//! component groups (PS3.5 6.2.1), binary numbers in the dataset's byte order. Parser layer.

use super::charset::{self, Charset};
use super::reader::{Content, Element};
use super::vr::{ValueKind, Vr};

/// A person name's three component groups (PS3.5 6.2.1.1): alphabetic, ideographic and
/// phonetic, each still holding its `^`-separated components.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PersonName {
    pub alphabetic: String,
    pub ideographic: String,
    pub phonetic: String,
}

/// A decoded value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Text values (also DS and IS, as written; see [`Value::as_f64s`]).
    Strings(Vec<String>),
    PersonNames(Vec<PersonName>),
    /// SS, US, SL, UL, SV.
    Ints(Vec<i64>),
    /// UV (may exceed i64).
    UInts(Vec<u64>),
    /// FL, FD.
    Floats(Vec<f64>),
    /// AT: `group << 16 | element`.
    Tags(Vec<u32>),
    /// OB, OD, OF, OL, OV, OW, UN: see the element's raw value range.
    Bytes,
    /// SQ: see [`Element::items`].
    Sequence,
}

impl Value {
    /// Numbers as f64: DS/IS parsed from text (empty or invalid values skipped), binary
    /// numbers converted.
    pub fn as_f64s(&self) -> Vec<f64> {
        match self {
            Value::Strings(v) => v.iter().filter_map(|s| s.trim().parse().ok()).collect(),
            Value::Ints(v) => v.iter().map(|&x| x as f64).collect(),
            Value::UInts(v) => v.iter().map(|&x| x as f64).collect(),
            Value::Floats(v) => v.clone(),
            _ => Vec::new(),
        }
    }

    /// Integers: IS parsed from text, binary integers as they are.
    pub fn as_i64s(&self) -> Vec<i64> {
        match self {
            Value::Strings(v) => v.iter().filter_map(|s| parse_is(s)).collect(),
            Value::Ints(v) => v.clone(),
            Value::UInts(v) => v.iter().filter_map(|&x| i64::try_from(x).ok()).collect(),
            _ => Vec::new(),
        }
    }

    /// The values as display strings (text as is, numbers formatted).
    pub fn is_empty(&self) -> bool {
        match self {
            Value::Strings(v) => v.is_empty(),
            Value::PersonNames(v) => v.is_empty(),
            Value::Ints(v) => v.is_empty(),
            Value::UInts(v) => v.is_empty(),
            Value::Floats(v) => v.is_empty(),
            Value::Tags(v) => v.is_empty(),
            Value::Bytes | Value::Sequence => false,
        }
    }
}

/// Parses an IS value ("+12", " 7 "; also "12.0", which some writers produce).
pub fn parse_is(s: &str) -> Option<i64> {
    let t = s.trim();
    t.parse::<i64>().ok().or_else(|| {
        let f: f64 = t.parse().ok()?;
        if f.fract() == 0.0 && f.abs() < 9.0e15 {
            Some(f as i64)
        } else {
            None
        }
    })
}

/// A text value without its padding (PS3.5 6.2).
pub(crate) fn trim_value(vr: Vr, s: &str) -> &str {
    let pad = |c: char| c == ' ' || c == '\0';
    match vr {
        // Leading spaces are significant in LT, ST, UT; trailing ones are not.
        Vr::LT | Vr::ST | Vr::UT => s.trim_end_matches(pad),
        _ => s.trim_matches(pad),
    }
}

/// The values of a decoded text element, each trimmed: split on `\` (PS3.5 6.4) except for
/// the VRs that hold a single value (LT, ST, UT, UR), where a backslash is just a character.
pub(crate) fn text_values(vr: Vr, s: &str) -> impl Iterator<Item = &str> {
    let single = matches!(vr, Vr::LT | Vr::ST | Vr::UT | Vr::UR);
    s.splitn(if single { 1 } else { usize::MAX }, '\\')
        .map(move |p| trim_value(vr, p))
}

/// A value given as DICOM text, as the index keeps it (values joined by `\\`, numbers in
/// decimal, tags as 8 hex digits): split and typed by the rules [`decode`] applies to bytes,
/// so both give the same [`Value`]. Numbers that do not parse stay text.
pub fn from_text(vr: Vr, text: &str) -> Value {
    let parts = || text.split('\\').map(str::trim);
    match vr.kind() {
        ValueKind::PersonName if text.is_empty() => Value::PersonNames(Vec::new()),
        ValueKind::PersonName => Value::PersonNames(text.split('\\').map(person_name).collect()),
        _ if text.is_empty() => Value::Strings(Vec::new()),
        ValueKind::Int { .. } if vr == Vr::UV => parts()
            .map(|p| p.parse().ok())
            .collect::<Option<_>>()
            .map_or_else(|| strings(vr, text), Value::UInts),
        ValueKind::Int { .. } => parts()
            .map(|p| p.parse().ok())
            .collect::<Option<_>>()
            .map_or_else(|| strings(vr, text), Value::Ints),
        ValueKind::Float { .. } => parts()
            .map(|p| p.parse().ok())
            .collect::<Option<_>>()
            .map_or_else(|| strings(vr, text), Value::Floats),
        ValueKind::Tag => parts()
            .map(|p| u32::from_str_radix(&p.replace(['(', ')', ','], ""), 16).ok())
            .collect::<Option<_>>()
            .map_or_else(|| strings(vr, text), Value::Tags),
        _ => strings(vr, text),
    }
}

/// Decodes `el`'s value from `buf` with the dataset's character set.
pub fn decode(buf: &[u8], el: &Element, charset: &Charset) -> Value {
    if let Content::Items(_) = el.content {
        return Value::Sequence;
    }
    if let Content::Fragments(_) = el.content {
        return Value::Bytes;
    }
    let raw = buf.get(el.value.clone()).unwrap_or(&[]);
    let be = el.big_endian;
    match el.vr.kind() {
        ValueKind::AsciiText => {
            if raw.is_empty() {
                return Value::Strings(Vec::new());
            }
            strings(el.vr, &charset::latin1(raw))
        }
        ValueKind::Text => {
            if raw.is_empty() {
                return Value::Strings(Vec::new());
            }
            strings(el.vr, &charset.decode(raw, false))
        }
        ValueKind::SingleText => {
            if raw.is_empty() {
                return Value::Strings(Vec::new());
            }
            let s = if el.vr == Vr::UR {
                charset::latin1(raw)
            } else {
                charset.decode(raw, false)
            };
            strings(el.vr, &s)
        }
        ValueKind::PersonName => {
            if raw.is_empty() {
                return Value::PersonNames(Vec::new());
            }
            let s = charset.decode(raw, true);
            Value::PersonNames(s.split('\\').map(person_name).collect())
        }
        ValueKind::Int { width, signed } => {
            let w = usize::from(width);
            if el.vr == Vr::UV {
                return Value::UInts(raw.chunks_exact(w).map(|c| uint(c, be)).collect());
            }
            Value::Ints(
                raw.chunks_exact(w)
                    .map(|c| {
                        let u = uint(c, be);
                        if signed {
                            let shift = 64 - 8 * w as u32;
                            ((u << shift) as i64) >> shift
                        } else {
                            u as i64
                        }
                    })
                    .collect(),
            )
        }
        ValueKind::Float { width } => Value::Floats(
            raw.chunks_exact(usize::from(width))
                .map(|c| {
                    let u = uint(c, be);
                    if width == 4 {
                        f64::from(f32::from_bits(u as u32))
                    } else {
                        f64::from_bits(u)
                    }
                })
                .collect(),
        ),
        ValueKind::Tag => Value::Tags(
            raw.chunks_exact(4)
                .map(|c| {
                    let g = uint(c.get(0..2).unwrap_or(&[]), be) as u32;
                    let e = uint(c.get(2..4).unwrap_or(&[]), be) as u32;
                    (g << 16) | e
                })
                .collect(),
        ),
        ValueKind::Bytes => Value::Bytes,
        ValueKind::Sequence => Value::Sequence,
    }
}

fn uint(c: &[u8], be: bool) -> u64 {
    let mut v: u64 = 0;
    if be {
        for &b in c {
            v = (v << 8) | u64::from(b);
        }
    } else {
        for &b in c.iter().rev() {
            v = (v << 8) | u64::from(b);
        }
    }
    v
}

fn strings(vr: Vr, s: &str) -> Value {
    Value::Strings(text_values(vr, s).map(str::to_string).collect())
}

fn person_name(s: &str) -> PersonName {
    let mut groups = s.splitn(3, '=');
    let clean = |g: Option<&str>| {
        g.map(|x| x.trim_end_matches([' ', '\0']).to_string())
            .unwrap_or_default()
    };
    PersonName {
        alphabetic: clean(groups.next()).trim_start_matches(' ').to_string(),
        ideographic: clean(groups.next()),
        phonetic: clean(groups.next()),
    }
}
