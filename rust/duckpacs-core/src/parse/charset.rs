//! Specific Character Set (0008,0005) decoding: PS3.5 6.1 and PS3.3 C.12.1.1.2, including
//! ISO 2022 code extensions with escape sequences (PS3.5 6.1.2.5, Japanese PS3.5 H, Korean
//! I, Chinese J). Parser layer; the code tables come from `encoding_rs`.
//!
//! Design: text is decoded to a Rust `String` first, then split on the delimiters (`\`, and
//! for person names `=` and `^`). Multi-byte sets are consumed a character at a time, so a
//! byte 0x5C inside a Kanji or GBK character never splits a value. For ISO 2022 the G0/G1
//! designations return to their initial state after each delimiter and control character
//! (PS3.5 6.1.2.5.3).

use encoding_rs::Encoding;

/// One character set named by a Defined Term of (0008,0005).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Term {
    /// Default repertoire (ISO IR 6, ASCII). Bytes >= 0x80 are read as Latin-1, as DCMTK and
    /// pydicom do for files that use them without declaring a character set.
    #[default]
    Default,
    Latin1,
    Latin2,
    Latin3,
    Latin4,
    Cyrillic,
    Arabic,
    Greek,
    Hebrew,
    Latin5,
    Thai,
    /// JIS X 0201: Romaji in G0, half-width Katakana in G1.
    JisX0201,
    Utf8,
    Gb18030,
    Gbk,
    /// ISO 2022 IR 87: JIS X 0208 Kanji (multi-byte, G0).
    JisX0208,
    /// ISO 2022 IR 159: JIS X 0212 supplementary Kanji (multi-byte, G0).
    JisX0212,
    /// ISO 2022 IR 149: KS X 1001 Hangul and Hanja (multi-byte, G1).
    KsX1001,
    /// ISO 2022 IR 58: GB 2312 (multi-byte, G1).
    Gb2312,
}

/// The parsed value of (0008,0005): up to 4 terms, and whether code extensions are in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Charset {
    terms: [Term; 4],
    len: u8,
    iso2022: bool,
}

fn term_from_name(name: &str) -> Option<(Term, bool)> {
    let t = match name {
        "" | "ISO_IR 6" | "ISO 2022 IR 6" => Term::Default,
        "ISO_IR 100" | "ISO 2022 IR 100" => Term::Latin1,
        "ISO_IR 101" | "ISO 2022 IR 101" => Term::Latin2,
        "ISO_IR 109" | "ISO 2022 IR 109" => Term::Latin3,
        "ISO_IR 110" | "ISO 2022 IR 110" => Term::Latin4,
        "ISO_IR 144" | "ISO 2022 IR 144" => Term::Cyrillic,
        "ISO_IR 127" | "ISO 2022 IR 127" => Term::Arabic,
        "ISO_IR 126" | "ISO 2022 IR 126" => Term::Greek,
        "ISO_IR 138" | "ISO 2022 IR 138" => Term::Hebrew,
        "ISO_IR 148" | "ISO 2022 IR 148" => Term::Latin5,
        "ISO_IR 166" | "ISO 2022 IR 166" => Term::Thai,
        "ISO_IR 13" | "ISO 2022 IR 13" => Term::JisX0201,
        "ISO_IR 192" => Term::Utf8,
        "GB18030" => Term::Gb18030,
        "GBK" => Term::Gbk,
        "ISO 2022 IR 87" => Term::JisX0208,
        "ISO 2022 IR 159" => Term::JisX0212,
        "ISO 2022 IR 149" => Term::KsX1001,
        "ISO 2022 IR 58" => Term::Gb2312,
        _ => return None,
    };
    Some((t, name.starts_with("ISO 2022")))
}

impl Charset {
    /// Parses the raw value of (0008,0005). Unknown terms are ignored (the default
    /// repertoire is used), as DCMTK and pydicom do after a warning.
    pub fn from_value(raw: &[u8]) -> Charset {
        let mut cs = Charset::default();
        let text = latin1(raw);
        for (i, name) in text.split('\\').enumerate() {
            let name = name.trim_matches(|c: char| c == ' ' || c == '\0');
            // Some writers use underscores or spaces inconsistently ("ISO-IR 100", "ISO_IR100").
            let normalised = normalise(name);
            if let Some((t, ext)) = term_from_name(&normalised) {
                if (cs.len as usize) < cs.terms.len() {
                    cs.terms[cs.len as usize] = t;
                    cs.len += 1;
                }
                cs.iso2022 |= ext || i > 0;
            }
        }
        cs
    }

    /// The Defined Terms in use.
    pub fn terms(&self) -> &[Term] {
        self.terms.get(..self.len as usize).unwrap_or(&[])
    }

    fn first(&self) -> Term {
        self.terms().first().copied().unwrap_or_default()
    }

    /// Whether ASCII bytes decode to the same text: true for every character set but
    /// ISO 2022 code extensions (whose escape sequences are ASCII bytes). Every single-byte
    /// and multi-byte set DICOM names is an ASCII superset (PS3.3 C.12.1.1.2).
    pub fn decodes_ascii_unchanged(&self) -> bool {
        !self.iso2022
    }

    /// Decodes a text value. `pn` selects person-name delimiters (`^`, `=`) for the ISO 2022
    /// reset rule.
    pub fn decode(&self, raw: &[u8], pn: bool) -> String {
        if !self.iso2022 {
            return decode_single(self.first(), raw);
        }
        decode_iso2022(self.first(), raw, pn)
    }
}

fn normalise(name: &str) -> String {
    let upper = name.to_ascii_uppercase();
    match upper.as_str() {
        "ISO-IR 100" | "ISO_IR100" | "ISO-IR100" => "ISO_IR 100".to_string(),
        "ISO-IR 192" | "ISO_IR192" | "UTF-8" | "UTF8" => "ISO_IR 192".to_string(),
        _ => upper,
    }
}

/// ISO 8859-1 (and so ASCII) bytes as a string.
pub(crate) fn latin1(raw: &[u8]) -> String {
    if raw.is_ascii() {
        // Nearly every value is ASCII, which is already UTF-8: one copy, not a char-by-char
        // build (that build was the largest single cost of indexing a header).
        return String::from_utf8(raw.to_vec()).unwrap_or_default();
    }
    raw.iter().map(|&b| b as char).collect()
}

/// ISO 8859-9 differs from Latin-1 in six positions.
fn latin5_char(b: u8) -> char {
    match b {
        0xD0 => '\u{011E}',
        0xDD => '\u{0130}',
        0xDE => '\u{015E}',
        0xF0 => '\u{011F}',
        0xFD => '\u{0131}',
        0xFE => '\u{015F}',
        _ => b as char,
    }
}

fn encoding_of(t: Term) -> Option<&'static Encoding> {
    Some(match t {
        Term::Latin2 => encoding_rs::ISO_8859_2,
        Term::Latin3 => encoding_rs::ISO_8859_3,
        Term::Latin4 => encoding_rs::ISO_8859_4,
        Term::Cyrillic => encoding_rs::ISO_8859_5,
        Term::Arabic => encoding_rs::ISO_8859_6,
        Term::Greek => encoding_rs::ISO_8859_7,
        Term::Hebrew => encoding_rs::ISO_8859_8,
        Term::Thai => encoding_rs::WINDOWS_874,
        Term::JisX0201 => encoding_rs::SHIFT_JIS,
        Term::Utf8 => encoding_rs::UTF_8,
        Term::Gb18030 | Term::Gbk | Term::Gb2312 => encoding_rs::GB18030,
        Term::KsX1001 => encoding_rs::EUC_KR,
        Term::JisX0208 | Term::JisX0212 => encoding_rs::EUC_JP,
        Term::Default | Term::Latin1 | Term::Latin5 => return None,
    })
}

fn decode_single(t: Term, raw: &[u8]) -> String {
    match t {
        Term::Default | Term::Latin1 => latin1(raw),
        Term::Latin5 if raw.is_ascii() => latin1(raw),
        Term::Latin5 => raw.iter().map(|&b| latin5_char(b)).collect(),
        // JIS X 0201 with ISO_IR 13: 0x5C and 0x7E are read as ASCII (as pydicom does).
        _ => match encoding_of(t) {
            Some(enc) => enc.decode_without_bom_handling(raw).0.into_owned(),
            None => latin1(raw),
        },
    }
}

/// The graphic sets designated to G0 and G1 while decoding ISO 2022 text.
#[derive(Clone, Copy, PartialEq, Eq)]
enum G0 {
    Ascii,
    JisRoman,
    JisX0208,
    JisX0212,
}

fn initial_g0(first: Term) -> G0 {
    if first == Term::JisX0201 {
        G0::JisRoman
    } else {
        G0::Ascii
    }
}

/// Escape sequences of PS3.3 C.12.1.1.2 Tables C.12-3/4: returns the sequence length and
/// the new designation.
enum Designation {
    G0(G0),
    G1(Term),
}

fn escape(rest: &[u8]) -> Option<(usize, Designation)> {
    let d = |n, x| Some((n, x));
    match rest {
        [0x1B, b'(', b'B', ..] => d(3, Designation::G0(G0::Ascii)),
        [0x1B, b'(', b'J', ..] => d(3, Designation::G0(G0::JisRoman)),
        [0x1B, b'$', b'B', ..] | [0x1B, b'$', b'@', ..] => d(3, Designation::G0(G0::JisX0208)),
        [0x1B, b'$', b'(', b'D', ..] => d(4, Designation::G0(G0::JisX0212)),
        [0x1B, b')', b'I', ..] => d(3, Designation::G1(Term::JisX0201)),
        [0x1B, b'$', b')', b'C', ..] => d(4, Designation::G1(Term::KsX1001)),
        [0x1B, b'$', b')', b'A', ..] => d(4, Designation::G1(Term::Gb2312)),
        [0x1B, b'-', f, ..] => {
            let t = match f {
                b'A' => Term::Latin1,
                b'B' => Term::Latin2,
                b'C' => Term::Latin3,
                b'D' => Term::Latin4,
                b'L' => Term::Cyrillic,
                b'G' => Term::Arabic,
                b'F' => Term::Greek,
                b'H' => Term::Hebrew,
                b'M' => Term::Latin5,
                b'T' => Term::Thai,
                _ => return None,
            };
            d(3, Designation::G1(t))
        }
        _ => None,
    }
}

/// G1 starts with the set of the first term (e.g. Latin-1 for "ISO 2022 IR 100").
fn g1_initial(first: Term) -> Term {
    first
}

/// Decodes one G1 run (bytes >= 0x80) in the set `t`.
fn decode_g1(t: Term, run: &[u8], out: &mut String) {
    match t {
        Term::Default | Term::Latin1 => out.extend(run.iter().map(|&b| b as char)),
        Term::Latin5 => out.extend(run.iter().map(|&b| latin5_char(b))),
        Term::JisX0201 => out.extend(run.iter().map(|&b| {
            if (0xA1..=0xDF).contains(&b) {
                char::from_u32(0xFF61 + u32::from(b - 0xA1)).unwrap_or('\u{FFFD}')
            } else {
                '\u{FFFD}'
            }
        })),
        _ => match encoding_of(t) {
            Some(enc) => out.push_str(&enc.decode_without_bom_handling(run).0),
            None => out.extend(run.iter().map(|&b| b as char)),
        },
    }
}

/// Decodes one G0 run (bytes < 0x80, no control characters) designated to `g0`.
fn decode_g0(g0: G0, run: &[u8], out: &mut String) {
    match g0 {
        G0::Ascii | G0::JisRoman => out.extend(run.iter().map(|&b| b as char)),
        G0::JisX0208 => {
            let euc: Vec<u8> = run.iter().map(|&b| b | 0x80).collect();
            out.push_str(&encoding_rs::EUC_JP.decode_without_bom_handling(&euc).0);
        }
        G0::JisX0212 => {
            let mut euc = Vec::with_capacity(run.len() / 2 * 3 + 1);
            for pair in run.chunks(2) {
                euc.push(0x8F);
                euc.extend(pair.iter().map(|&b| b | 0x80));
            }
            out.push_str(&encoding_rs::EUC_JP.decode_without_bom_handling(&euc).0);
        }
    }
}

fn is_reset_delimiter(b: u8, pn: bool) -> bool {
    matches!(b, b'\\' | b'\r' | b'\n' | b'\t' | 0x0C) || (pn && matches!(b, b'^' | b'='))
}

fn decode_iso2022(first: Term, raw: &[u8], pn: bool) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut g0 = initial_g0(first);
    let mut g1 = g1_initial(first);
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == 0x1B {
            if let Some((n, d)) = escape(&raw[i..]) {
                match d {
                    Designation::G0(g) => g0 = g,
                    Designation::G1(t) => g1 = t,
                }
                i += n;
                continue;
            }
            out.push('\u{FFFD}');
            i += 1;
            continue;
        }
        if b >= 0x80 {
            let start = i;
            while i < raw.len() && raw[i] >= 0x80 {
                i += 1;
            }
            decode_g1(g1, &raw[start..i], &mut out);
            continue;
        }
        let multibyte = matches!(g0, G0::JisX0208 | G0::JisX0212);
        if !multibyte && is_reset_delimiter(b, pn) {
            out.push(b as char);
            g0 = initial_g0(first);
            g1 = g1_initial(first);
            i += 1;
            continue;
        }
        if b < 0x20 {
            out.push(b as char);
            i += 1;
            continue;
        }
        let start = i;
        while i < raw.len() && raw[i] >= 0x20 && raw[i] < 0x80 && raw[i] != 0x1B {
            if !multibyte && is_reset_delimiter(raw[i], pn) {
                break;
            }
            i += 1;
        }
        decode_g0(g0, &raw[start..i], &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_byte_sets() {
        let cs = Charset::from_value(b"ISO_IR 100");
        assert_eq!(cs.decode(b"Buc^J\xe9r\xf4me", true), "Buc^Jérôme");
        let cs = Charset::from_value(b"ISO_IR 144");
        assert_eq!(cs.decode(b"\xbb\xee\xdace\xdc", false), "Люкceм");
        let cs = Charset::from_value(b"ISO_IR 192");
        assert_eq!(
            cs.decode("Wang^XiaoDong=王^小東".as_bytes(), true),
            "Wang^XiaoDong=王^小東"
        );
    }

    #[test]
    fn japanese_iso2022() {
        // PS3.5 H.3.1 example: Yamada^Tarou=山田^太郎=やまだ^たろう
        let cs = Charset::from_value(b"\\ISO 2022 IR 87");
        let raw =
            b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B";
        assert_eq!(cs.decode(raw, true), "Yamada^Tarou=山田^太郎=やまだ^たろう");
    }

    #[test]
    fn korean_iso2022() {
        // PS3.5 I.2 example: Hong^Gildong=洪^吉洞=홍^길동
        let cs = Charset::from_value(b"\\ISO 2022 IR 149");
        let raw = b"Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7=\x1b$)C\xc8\xab^\x1b$)C\xb1\xe6\xb5\xbf";
        assert_eq!(cs.decode(raw, true), "Hong^Gildong=洪^吉洞=홍^길동");
    }

    #[test]
    fn other_single_byte_and_chinese_sets() {
        let cases: &[(&[u8], &[u8], &str)] = &[
            (b"ISO_IR 101", b"\xb1", "\u{0105}"), // Latin-2 a with ogonek
            (b"ISO_IR 109", b"\xa1", "\u{0126}"), // Latin-3 H with stroke
            (b"ISO_IR 110", b"\xa1", "\u{0104}"), // Latin-4 A with ogonek
            (b"ISO_IR 148", b"\xdd\xfd", "\u{0130}\u{0131}"), // Latin-5 dotted I, dotless i
            (b"ISO_IR 166", b"\xa1", "\u{0E01}"), // TIS-620 ko kai
            (b"ISO_IR 13", b"\xb1", "\u{FF71}"),  // JIS X 0201 half-width katakana a
            (b"GBK", b"\xd6\xd0", "\u{4E2D}"),    // zhong
            (b"GB18030", b"\x81\x30\x81\x30", "\u{0080}"), // four-byte sequence
        ];
        for (term, raw, want) in cases {
            let cs = Charset::from_value(term);
            assert_eq!(
                cs.decode(raw, false),
                *want,
                "{}",
                String::from_utf8_lossy(term)
            );
        }
    }

    #[test]
    fn iso2022_supplementary_sets() {
        // JIS X 0212 (ESC $ ( D) 0x222F is BREVE; back to ASCII with ESC ( B.
        let cs = Charset::from_value(b"\\ISO 2022 IR 159");
        assert_eq!(cs.decode(b"a\x1b$(D\x22\x2f\x1b(Bb", false), "a\u{02D8}b");
        // GB 2312 in G1 (ESC $ ) A), bytes in GR.
        let cs = Charset::from_value(b"\\ISO 2022 IR 58");
        assert_eq!(cs.decode(b"Zhang\x1b$)A\xd5\xc5", false), "Zhang\u{5F20}");
        // Latin-1 designated to G1 (ESC - A) under ISO 2022 IR 100.
        let cs = Charset::from_value(b"ISO 2022 IR 100");
        assert_eq!(cs.decode(b"\x1b-A\xe9", false), "\u{e9}");
        // A value delimiter resets G0 to ASCII: the second value is plain ASCII.
        let cs = Charset::from_value(b"\\ISO 2022 IR 87");
        assert_eq!(cs.decode(b"\x1b$B;3\x1b(B\\AB", false), "\u{5C71}\\AB");
    }
}
