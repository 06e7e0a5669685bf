//! Human-readable dump of a parsed buffer (`duckpacs dump FILE`). Presentation layer over
//! the parser: one line per element with tag, VR, keyword, value (shortened) and where its
//! bytes are; sequences indented item by item. Bulk data is summarised, never printed.

use std::fmt::Write as _;

use super::dict;
use super::reader::{Content, Dataset, Element};
use super::value::Value;
use super::Parsed;

/// Longest value text printed before it is shortened with "...".
const MAX_VALUE_CHARS: usize = 64;

/// The whole dump: a header line, the meta group, then the dataset.
pub fn to_text(p: &Parsed<'_>) -> String {
    let mut out = String::with_capacity(8192);
    let _ = writeln!(
        out,
        "# framing: {:?}, transfer syntax: {}{}",
        p.framing,
        p.transfer_syntax,
        if p.deflated {
            " (offsets are into the inflated dataset)"
        } else {
            ""
        }
    );
    if !p.meta.elements.is_empty() {
        out.push_str("# File Meta Information\n");
        dataset(p, &p.meta, 0, &mut out);
    }
    out.push_str("# Dataset\n");
    dataset(p, &p.dataset, 0, &mut out);
    if let Some(r) = &p.trailing_padding {
        let _ = writeln!(out, "# {} trailing bytes (padding) at {}", r.len(), r.start);
    }
    out
}

fn dataset(p: &Parsed<'_>, ds: &Dataset, depth: usize, out: &mut String) {
    for el in &ds.elements {
        element(p, ds, el, depth, out);
    }
}

fn shorten(s: &str) -> String {
    if s.chars().count() <= MAX_VALUE_CHARS {
        return s.to_string();
    }
    let mut t: String = s.chars().take(MAX_VALUE_CHARS).collect();
    t.push_str("...");
    t
}

fn join<T: std::fmt::Display>(v: &[T]) -> String {
    let mut s = String::new();
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            s.push('\\');
        }
        let _ = write!(s, "{x}");
        if s.len() > MAX_VALUE_CHARS * 2 {
            break;
        }
    }
    s
}

fn value_text(p: &Parsed<'_>, ds: &Dataset, el: &Element) -> String {
    match &el.content {
        Content::Items(items) => return format!("({} items)", items.len()),
        Content::Fragments(f) => {
            return format!("<encapsulated: {} fragments incl. offset table>", f.len())
        }
        Content::Value => {}
    }
    match p.value(ds, el) {
        Value::Strings(v) => format!("[{}]", shorten(&v.join("\\"))),
        Value::PersonNames(v) => {
            let names: Vec<String> = v
                .iter()
                .map(|n| {
                    let mut s = n.alphabetic.clone();
                    if !n.ideographic.is_empty() || !n.phonetic.is_empty() {
                        let _ = write!(s, "={}", n.ideographic);
                    }
                    if !n.phonetic.is_empty() {
                        let _ = write!(s, "={}", n.phonetic);
                    }
                    s
                })
                .collect();
            format!("[{}]", shorten(&names.join("\\")))
        }
        Value::Ints(v) => shorten(&join(&v)),
        Value::UInts(v) => shorten(&join(&v)),
        Value::Floats(v) => shorten(&join(&v)),
        Value::Tags(v) => {
            let t: Vec<String> = v
                .iter()
                .map(|t| format!("({:04X},{:04X})", t >> 16, t & 0xFFFF))
                .collect();
            shorten(&t.join("\\"))
        }
        Value::Bytes => format!("<{} bytes>", el.value.len()),
        Value::Sequence => String::new(),
    }
}

fn element(p: &Parsed<'_>, ds: &Dataset, el: &Element, depth: usize, out: &mut String) {
    let indent = "  ".repeat(depth);
    let name = dict::keyword(el.tag).unwrap_or(if el.tag >> 16 & 1 == 1 {
        if (0x10..=0xFF).contains(&(el.tag & 0xFFFF)) {
            "PrivateCreator"
        } else {
            "Private"
        }
    } else {
        "Unknown"
    });
    let len = if el.undefined_length {
        "undefined".to_string()
    } else {
        el.value.len().to_string()
    };
    let _ = writeln!(
        out,
        "{indent}({:04X},{:04X}) {} {:<36} {}  # len {len} @ {}",
        el.tag >> 16,
        el.tag & 0xFFFF,
        el.vr,
        name,
        value_text(p, ds, el),
        el.offset
    );
    if let Content::Items(items) = &el.content {
        for (i, item) in items.iter().enumerate() {
            let _ = writeln!(out, "{indent}  > item {} @ {}", i + 1, item.offset);
            dataset(p, &item.dataset, depth + 2, out);
        }
    }
}
