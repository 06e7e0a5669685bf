//! Query/Retrieve identifiers (PS3.4 C.4, C.6): decoding the request's, encoding C-FIND's
//! pending answers.
//!
//! Decoding: the identifier is parsed in its presentation context's transfer syntax, values
//! decoded with the identifier's own Specific Character Set (ISO 2022 escapes included,
//! PS3.5 6.1.2.5). Every public key is a return key; a key with a value other than empty or
//! `*` is also a matching key (universal matching, PS3.4 C.2.2.2.3). Sequence keys are
//! return keys only (sequence matching is optional, C.2.2.2.6).
//!
//! Encoding answers, the character set rule (docs/CHARACTER-SETS.md; PS3.4 C.4.1.1.3.2,
//! PS3.5 6.1), per answer, over all of its text values:
//! 1. every value in the default repertoire (ASCII): the answer declares the set the query
//!    declared, if any, and none otherwise;
//! 2. the query declared a character set and every value can be written in it (with its
//!    ISO 2022 code extensions, escape sequences and all, when it has them): the answer is
//!    written in it and declares it, as the query wrote it;
//! 3. otherwise (no set declared, or a value it cannot hold) the answer is written in
//!    UTF-8 and declares `ISO_IR 192`, which holds every character: PS3.4 C.4.1.1.3.2 lets
//!    the SCP answer in a set other than the one requested.
//!
//! No character is ever replaced, and no answer uses an encoding it does not declare.

use dicom_core::dictionary::DataDictionary;
use dicom_dictionary_std::StandardDataDictionary;

use super::text;
use crate::parse::reader::Syntax;
use crate::parse::{self, dict, Charset, ParseOptions, Value, Vr};

const QUERY_RETRIEVE_LEVEL: u32 = 0x0008_0052;
const SPECIFIC_CHARACTER_SET: u32 = 0x0008_0005;
const TIMEZONE_OFFSET: u32 = 0x0008_0201;
pub const LEVELS: [&str; 4] = ["PATIENT", "STUDY", "SERIES", "IMAGE"];
const UTF8_TERM: &str = "ISO_IR 192";

/// A decoded identifier.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// Query/Retrieve Level (0008,0052), upper case.
    pub level: String,
    /// Keyword -> matching value (DICOM text, values joined by `\`).
    pub matching: Vec<(String, String)>,
    /// Keywords to return, in the identifier's order, the level's unique key included.
    pub return_keys: Vec<String>,
    /// The identifier's Specific Character Set as sent, if any.
    pub charset_value: Option<String>,
    pub charset: Charset,
}

/// One value of a C-FIND answer as the index gives it.
#[derive(Debug, Clone, PartialEq)]
pub enum RowValue {
    Null,
    Text(String),
    /// A sequence's items (answered as an empty sequence: see the module docs).
    Items,
}

/// One match: keyword -> value.
pub type Row = Vec<(String, RowValue)>;

/// The unique key of each level (PS3.4 C.6.1.1, C.6.2.1), always returned.
pub fn unique_key(level: &str) -> &'static str {
    match level {
        "PATIENT" => "PatientID",
        "STUDY" => "StudyInstanceUID",
        "SERIES" => "SeriesInstanceUID",
        _ => "SOPInstanceUID",
    }
}

/// (explicit, big endian) of a transfer syntax for encoding identifiers.
pub fn syntax_of(transfer_syntax: &str) -> Syntax {
    match transfer_syntax {
        parse::IMPLICIT_VR_LE => Syntax::IMPLICIT_LE,
        parse::EXPLICIT_VR_BE => Syntax::EXPLICIT_BE,
        _ => Syntax::EXPLICIT_LE,
    }
}

fn person_name_text(n: &parse::PersonName) -> String {
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

fn value_text(v: Value) -> Option<String> {
    let parts: Vec<String> = match v {
        Value::Strings(v) => v,
        Value::PersonNames(v) => v.iter().map(person_name_text).collect(),
        Value::Ints(v) => v.iter().map(i64::to_string).collect(),
        Value::UInts(v) => v.iter().map(u64::to_string).collect(),
        Value::Floats(v) => v.iter().map(f64::to_string).collect(),
        Value::Tags(v) => v.iter().map(|t| format!("{t:08X}")).collect(),
        Value::Bytes | Value::Sequence => return None,
    };
    Some(parts.join("\\"))
}

/// Decodes an identifier received in `transfer_syntax`. Errors say what is wrong, for the
/// Error Comment of the 0xA900 / 0xC000 answer.
pub fn decode(bytes: &[u8], transfer_syntax: &str, study_root: bool) -> Result<Query, String> {
    let opts = ParseOptions {
        transfer_syntax: Some(transfer_syntax),
        stop_at_pixel_data: false,
    };
    let p = parse::parse(bytes, opts).map_err(|e| format!("identifier: {e}"))?;
    let ds = &p.dataset;
    let mut q = Query {
        charset: ds.charset,
        ..Query::default()
    };
    for el in &ds.elements {
        let tag = el.tag;
        if tag >> 16 == 0x0002 || tag == TIMEZONE_OFFSET {
            continue;
        }
        if tag == QUERY_RETRIEVE_LEVEL {
            q.level = p.string(ds, tag).trim().to_ascii_uppercase();
            continue;
        }
        if tag == SPECIFIC_CHARACTER_SET {
            let raw = String::from_utf8_lossy(p.raw(el))
                .trim_end_matches(['\0', ' '])
                .to_string();
            q.charset_value = (!raw.is_empty()).then_some(raw);
            continue;
        }
        let Some(keyword) = dict::keyword(tag) else {
            continue; // private and unknown keys: neither matched nor returned
        };
        q.return_keys.push(keyword.to_string());
        if el.is_sequence() {
            continue;
        }
        if let Some(text) = value_text(p.value(ds, el)) {
            let text = text.trim();
            if !text.is_empty() && text != "*" {
                q.matching.push((keyword.to_string(), text.to_string()));
            }
        }
    }
    if !LEVELS.contains(&q.level.as_str()) {
        return Err(format!(
            "Query/Retrieve Level {:?} is not one of {}",
            q.level,
            LEVELS.join(", ")
        ));
    }
    if q.level == "PATIENT" && study_root {
        return Err("PATIENT level is not part of the Study Root model (PS3.4 C.6.2)".into());
    }
    let unique = unique_key(&q.level);
    if !q.return_keys.iter().any(|k| k == unique) {
        q.return_keys.push(unique.to_string());
    }
    Ok(q)
}

/// Whether `vr`'s values are written as text (and so in the answer's character set).
fn is_text(vr: Vr) -> bool {
    !matches!(
        vr,
        Vr::US
            | Vr::SS
            | Vr::UL
            | Vr::SL
            | Vr::FL
            | Vr::FD
            | Vr::AT
            | Vr::SV
            | Vr::UV
            | Vr::SQ
            | Vr::OB
            | Vr::OW
            | Vr::OF
            | Vr::OD
            | Vr::OL
            | Vr::OV
            | Vr::UN
    )
}

/// The character set an answer is written in: (value of (0008,0005), set) per the rule of
/// the module docs. `texts` are the answer's text values with whether each is a person name.
fn answer_charset(query: &Query, texts: &[(&str, bool)]) -> (Option<String>, Charset) {
    if texts.iter().all(|(t, _)| t.is_ascii()) {
        return (query.charset_value.clone(), Charset::default());
    }
    let asked = query.charset;
    if !asked.terms().is_empty()
        && texts
            .iter()
            .all(|(t, pn)| text::encode(t, &asked, *pn).is_some())
    {
        return (query.charset_value.clone(), asked);
    }
    (
        Some(UTF8_TERM.to_string()),
        Charset::from_value(UTF8_TERM.as_bytes()),
    )
}

fn tag_of(keyword: &str) -> Option<(u32, Vr)> {
    let entry = StandardDataDictionary.by_name(keyword)?;
    let tag = (u32::from(entry.tag.inner().group()) << 16) | u32::from(entry.tag.inner().element());
    Some((tag, dict::implicit_vr(tag, false)))
}

/// Writes one element in `syntax`.
fn push_element(out: &mut Vec<u8>, syntax: Syntax, tag: u32, vr: Vr, value: &[u8]) {
    let u16b = |v: u16| {
        if syntax.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let u32b = |v: u32| {
        if syntax.big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    out.extend_from_slice(&u16b((tag >> 16) as u16));
    out.extend_from_slice(&u16b((tag & 0xFFFF) as u16));
    let len = value.len() as u32;
    if !syntax.explicit {
        out.extend_from_slice(&u32b(len));
    } else if vr.has_long_header() {
        out.extend_from_slice(vr.as_str().as_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&u32b(len));
    } else {
        out.extend_from_slice(vr.as_str().as_bytes());
        out.extend_from_slice(&u16b(len as u16));
    }
    out.extend_from_slice(value);
}

/// The bytes of a text value in `vr`, or None when it cannot be written (a number that does
/// not parse for a binary VR).
fn value_bytes(text: &str, vr: Vr, charset: &Charset, syntax: Syntax) -> Option<Vec<u8>> {
    let parts = || text.split('\\').map(str::trim);
    let be = syntax.big_endian;
    let mut out = Vec::new();
    match vr {
        Vr::US | Vr::SS => {
            for p in parts() {
                let v: i64 = p.parse().ok()?;
                let b = if vr == Vr::US {
                    u16::try_from(v).ok()?.to_le_bytes()
                } else {
                    i16::try_from(v).ok()?.to_le_bytes()
                };
                out.extend(if be { [b[1], b[0]] } else { b });
            }
        }
        Vr::UL | Vr::SL => {
            for p in parts() {
                let v: i64 = p.parse().ok()?;
                let mut b = if vr == Vr::UL {
                    u32::try_from(v).ok()?.to_le_bytes()
                } else {
                    i32::try_from(v).ok()?.to_le_bytes()
                };
                if be {
                    b.reverse();
                }
                out.extend(b);
            }
        }
        Vr::FL | Vr::FD => {
            for p in parts() {
                let v: f64 = p.parse().ok()?;
                let mut b = if vr == Vr::FL {
                    (v as f32).to_le_bytes().to_vec()
                } else {
                    v.to_le_bytes().to_vec()
                };
                if be {
                    b.reverse();
                }
                out.extend(b);
            }
        }
        Vr::AT => {
            for p in parts() {
                let t =
                    u32::from_str_radix(p.trim_matches(['(', ')']).replace(',', "").as_str(), 16)
                        .ok()?;
                for half in [(t >> 16) as u16, (t & 0xFFFF) as u16] {
                    out.extend(if be {
                        half.to_be_bytes()
                    } else {
                        half.to_le_bytes()
                    });
                }
            }
        }
        Vr::OB | Vr::OW | Vr::OF | Vr::OD | Vr::OL | Vr::OV | Vr::UN | Vr::SV | Vr::UV => {
            return None
        }
        _ => {
            out = text::encode(text, charset, vr == Vr::PN)?;
            if out.len() % 2 == 1 {
                out.push(if vr == Vr::UI { 0 } else { b' ' });
            }
        }
    }
    Some(out)
}

/// The C-FIND pending answer for one match (PS3.4 C.4.1.1.3.2): the Specific Character Set
/// when needed, the level, and every return key (empty when the index has no value),
/// in ascending tag order, encoded in `transfer_syntax`.
pub fn encode_answer(query: &Query, row: &Row, transfer_syntax: &str) -> Vec<u8> {
    let syntax = syntax_of(transfer_syntax);
    let value_of = |keyword: &str| row.iter().find(|(k, _)| k == keyword).map(|(_, v)| v);
    let mut elements: Vec<(u32, Vr, &str, Option<&RowValue>)> = query
        .return_keys
        .iter()
        .filter_map(|k| tag_of(k).map(|(tag, vr)| (tag, vr, k.as_str(), value_of(k))))
        .filter(|(tag, ..)| *tag != SPECIFIC_CHARACTER_SET && *tag != QUERY_RETRIEVE_LEVEL)
        .collect();
    elements.sort_by_key(|e| e.0);
    elements.dedup_by_key(|e| e.0);
    let texts: Vec<(&str, bool)> = elements
        .iter()
        .filter(|(_, vr, ..)| is_text(*vr))
        .filter_map(|(_, vr, _, v)| match v {
            Some(RowValue::Text(t)) => Some((t.as_str(), *vr == Vr::PN)),
            _ => None,
        })
        .collect();
    let (declared, charset) = answer_charset(query, &texts);
    let asked_for_charset = query
        .return_keys
        .iter()
        .any(|k| k == "SpecificCharacterSet");
    let mut out = Vec::with_capacity(256);
    if declared.is_some() || asked_for_charset {
        let value = declared.unwrap_or_default();
        let mut b = value.into_bytes();
        if b.len() % 2 == 1 {
            b.push(b' ');
        }
        push_element(&mut out, syntax, SPECIFIC_CHARACTER_SET, Vr::CS, &b);
    }
    let mut level = query.level.clone().into_bytes();
    if level.len() % 2 == 1 {
        level.push(b' ');
    }
    let mut level_written = false;
    for (tag, vr, _, value) in elements {
        if !level_written && tag > QUERY_RETRIEVE_LEVEL {
            push_element(&mut out, syntax, QUERY_RETRIEVE_LEVEL, Vr::CS, &level);
            level_written = true;
        }
        let bytes = match value {
            Some(RowValue::Text(t)) if vr != Vr::SQ => value_bytes(t, vr, &charset, syntax),
            _ => None,
        };
        push_element(&mut out, syntax, tag, vr, bytes.as_deref().unwrap_or(&[]));
    }
    if !level_written {
        push_element(&mut out, syntax, QUERY_RETRIEVE_LEVEL, Vr::CS, &level);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(out: &mut Vec<u8>, tag: u32, vr: &[u8; 2], value: &[u8]) {
        push_element(
            out,
            Syntax::EXPLICIT_LE,
            tag,
            Vr::from_bytes(*vr).unwrap(),
            value,
        );
    }

    fn identifier(charset: Option<&[u8]>, name: &[u8]) -> Vec<u8> {
        let mut id = Vec::new();
        if let Some(cs) = charset {
            el(&mut id, SPECIFIC_CHARACTER_SET, b"CS", cs);
        }
        el(&mut id, QUERY_RETRIEVE_LEVEL, b"CS", b"STUDY ");
        el(&mut id, 0x0010_0010, b"PN", name);
        el(&mut id, 0x0020_000D, b"UI", b"");
        id
    }

    fn answer_name(bytes: &[u8]) -> (Option<String>, String) {
        let p = parse::parse(
            bytes,
            ParseOptions {
                transfer_syntax: Some(parse::EXPLICIT_VR_LE),
                stop_at_pixel_data: false,
            },
        )
        .unwrap();
        let cs = p
            .dataset
            .get(SPECIFIC_CHARACTER_SET)
            .map(|e| String::from_utf8_lossy(p.raw(e)).trim().to_string());
        let name = p
            .dataset
            .get(0x0010_0010)
            .and_then(|e| value_text(p.value(&p.dataset, e)))
            .unwrap();
        (cs, name)
    }

    #[test]
    fn decodes_matching_and_return_keys_with_the_query_charset() {
        let id = identifier(Some(b"ISO_IR 100"), b"M\xfcller*");
        let q = decode(&id, parse::EXPLICIT_VR_LE, true).unwrap();
        assert_eq!(q.level, "STUDY");
        assert_eq!(
            q.matching,
            vec![("PatientName".to_string(), "Müller*".to_string())]
        );
        assert_eq!(q.return_keys, vec!["PatientName", "StudyInstanceUID"]);
        assert_eq!(q.charset_value.as_deref(), Some("ISO_IR 100"));
        let bad = decode(&identifier(None, b"X")[..0], parse::EXPLICIT_VR_LE, true);
        assert!(bad.is_err());
    }

    #[test]
    fn answers_declare_the_set_their_values_are_written_in() {
        let row = |name: &str| vec![("PatientName".to_string(), RowValue::Text(name.into()))];
        // ASCII values, no set asked: nothing declared.
        let q = decode(&identifier(None, b"*"), parse::EXPLICIT_VR_LE, true).unwrap();
        assert_eq!(
            answer_name(&encode_answer(
                &q,
                &row("Smith^John"),
                parse::EXPLICIT_VR_LE
            )),
            (None, "Smith^John".into())
        );
        // Non-ASCII value, no set asked: UTF-8, declared, nothing replaced.
        let a = encode_answer(&q, &row("Wang^XiaoDong=王^小東"), parse::EXPLICIT_VR_LE);
        assert_eq!(
            answer_name(&a),
            (Some("ISO_IR 192".into()), "Wang^XiaoDong=王^小東".into())
        );
        // Latin-1 asked and the value fits: Latin-1, declared.
        let q1 = decode(
            &identifier(Some(b"ISO_IR 100"), b"*"),
            parse::EXPLICIT_VR_LE,
            true,
        )
        .unwrap();
        let a = encode_answer(&q1, &row("Müller"), parse::EXPLICIT_VR_LE);
        assert!(a.windows(6).any(|w| w == b"M\xfcller"));
        assert_eq!(
            answer_name(&a),
            (Some("ISO_IR 100".into()), "Müller".into())
        );
        // Latin-1 asked but the value does not fit: UTF-8, declared.
        let a = encode_answer(&q1, &row("Ηλίας"), parse::EXPLICIT_VR_LE);
        assert_eq!(answer_name(&a), (Some("ISO_IR 192".into()), "Ηλίας".into()));
    }

    #[test]
    fn iso2022_queries_are_decoded_and_answered_in_their_own_set() {
        // PS3.5 H.3.1: the query names the patient with ISO 2022 escapes.
        let raw =
            b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B";
        let mut padded = raw.to_vec();
        padded.push(b' ');
        let q = decode(
            &identifier(Some(b"\\ISO 2022 IR 87 "), &padded),
            parse::EXPLICIT_VR_LE,
            true,
        )
        .unwrap();
        let name = "Yamada^Tarou=山田^太郎=やまだ^たろう";
        assert_eq!(
            q.matching,
            vec![("PatientName".to_string(), name.to_string())]
        );
        let row = vec![("PatientName".to_string(), RowValue::Text(name.into()))];
        let a = encode_answer(&q, &row, parse::EXPLICIT_VR_LE);
        assert!(
            a.windows(raw.len()).any(|w| w == raw),
            "the standard's bytes"
        );
        assert_eq!(
            answer_name(&a),
            (Some("\\ISO 2022 IR 87".into()), name.into())
        );
        // A Korean name does not fit the Japanese set: UTF-8, declared.
        let row = vec![(
            "PatientName".to_string(),
            RowValue::Text("Hong^Gildong=洪^吉洞=홍^길동".into()),
        )];
        let a = encode_answer(&q, &row, parse::EXPLICIT_VR_LE);
        assert_eq!(
            answer_name(&a),
            (
                Some("ISO_IR 192".into()),
                "Hong^Gildong=洪^吉洞=홍^길동".into()
            )
        );
    }

    #[test]
    fn every_text_value_counts_not_only_person_names() {
        // A non-ASCII value in a code string (not allowed there, but stored) is declared too.
        let mut id = Vec::new();
        el(&mut id, QUERY_RETRIEVE_LEVEL, b"CS", b"STUDY ");
        el(&mut id, 0x0008_0061, b"CS", b"");
        el(&mut id, 0x0020_000D, b"UI", b"");
        let q = decode(&id, parse::EXPLICIT_VR_LE, true).unwrap();
        let row = vec![(
            "ModalitiesInStudy".to_string(),
            RowValue::Text("MRÉ".into()),
        )];
        let a = encode_answer(&q, &row, parse::EXPLICIT_VR_LE);
        assert!(a.windows(10).any(|w| w == b"ISO_IR 192"));
    }

    #[test]
    fn answers_are_in_tag_order_with_empty_unknown_values_and_binary_numbers() {
        let mut id = Vec::new();
        el(&mut id, QUERY_RETRIEVE_LEVEL, b"CS", b"IMAGE ");
        el(&mut id, 0x0008_0018, b"UI", b"");
        el(&mut id, 0x0028_0010, b"US", b"");
        el(&mut id, 0x0018_0081, b"DS", b"");
        let q = decode(&id, parse::EXPLICIT_VR_LE, false).unwrap();
        let row = vec![
            ("SOPInstanceUID".to_string(), RowValue::Text("1.2.3".into())),
            ("Rows".to_string(), RowValue::Text("512".into())),
            ("EchoTime".to_string(), RowValue::Null),
        ];
        for ts in [
            parse::EXPLICIT_VR_LE,
            parse::IMPLICIT_VR_LE,
            parse::EXPLICIT_VR_BE,
        ] {
            let a = encode_answer(&q, &row, ts);
            let p = parse::parse(
                &a,
                ParseOptions {
                    transfer_syntax: Some(ts),
                    stop_at_pixel_data: false,
                },
            )
            .unwrap();
            let tags: Vec<u32> = p.dataset.elements.iter().map(|e| e.tag).collect();
            assert_eq!(
                tags,
                vec![0x0008_0018, 0x0008_0052, 0x0018_0081, 0x0028_0010],
                "{ts}"
            );
            assert_eq!(p.int(&p.dataset, 0x0028_0010), Some(512), "{ts}");
            assert_eq!(p.string(&p.dataset, 0x0008_0018), "1.2.3");
            assert!(p.raw(p.dataset.get(0x0018_0081).unwrap()).is_empty());
        }
    }
}
