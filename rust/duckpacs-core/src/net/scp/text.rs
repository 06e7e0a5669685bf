//! Text into the bytes of a declared Specific Character Set (PS3.5 6.1, PS3.3 C.12.1.1.2):
//! the encoder of C-FIND answers, the inverse of [`crate::parse::charset`].
//!
//! A set without code extensions (one Defined Term: `ISO_IR 100`, `GB18030`, `ISO_IR 192`...)
//! writes each character with its code in that set. A set with code extensions (ISO 2022,
//! PS3.5 6.1.2.5) designates, character by character, the first of its terms that holds
//! the character, with the escape sequences of PS3.3 Tables C.12-3 and C.12-4, and returns
//! to the designations of value 1 before every delimiter (`\`, and `^`, `=` in person names),
//! every control character and the end of the value (PS3.5 6.1.2.5.3). That gives the
//! standard's own examples byte for byte (PS3.5 H.3.1 Japanese, I.2 Korean, J.3 Chinese).
//!
//! Every function returns None when a character has no code in the set: the caller then
//! answers in another set, it never substitutes a character.

use crate::parse::charset::{Charset, Term};

/// Encodes `text` in one character set without code extensions; None when a character has
/// no code in it.
pub fn encode_single(text: &str, term: Term) -> Option<Vec<u8>> {
    if text.is_ascii() {
        return Some(text.as_bytes().to_vec());
    }
    let encoding = match term {
        Term::Utf8 => return Some(text.as_bytes().to_vec()),
        Term::Latin1 => return latin1(text),
        Term::Latin5 => return text.chars().map(latin5_byte).collect(),
        Term::JisX0201 => return text.chars().map(jis_x0201_byte).collect(),
        Term::Latin2 => encoding_rs::ISO_8859_2,
        Term::Latin3 => encoding_rs::ISO_8859_3,
        Term::Latin4 => encoding_rs::ISO_8859_4,
        Term::Cyrillic => encoding_rs::ISO_8859_5,
        Term::Arabic => encoding_rs::ISO_8859_6,
        Term::Greek => encoding_rs::ISO_8859_7,
        Term::Hebrew => encoding_rs::ISO_8859_8,
        Term::Thai => encoding_rs::WINDOWS_874,
        Term::Gb18030 => encoding_rs::GB18030,
        Term::Gbk => encoding_rs::GBK,
        // The ISO 2022 multi-byte sets exist only with code extensions; the default
        // repertoire has no character beyond ASCII.
        Term::Default | Term::JisX0208 | Term::JisX0212 | Term::KsX1001 | Term::Gb2312 => {
            return None
        }
    };
    let (bytes, _, unmappable) = encoding.encode(text);
    (!unmappable).then(|| bytes.into_owned())
}

/// Encodes a value in `charset`: with ISO 2022 code extensions when it has them. `pn`
/// makes `^` and `=` delimiters (person names).
pub fn encode(text: &str, charset: &Charset, pn: bool) -> Option<Vec<u8>> {
    if charset.decodes_ascii_unchanged() {
        let term = charset.terms().first().copied().unwrap_or_default();
        return encode_single(text, term);
    }
    Iso2022::new(charset.terms(), pn).encode(text)
}

fn latin1(text: &str) -> Option<Vec<u8>> {
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect()
}

/// ISO 8859-9 is Latin-1 with six letters changed (the decoder's `latin5_char`).
fn latin5_byte(c: char) -> Option<u8> {
    Some(match c {
        '\u{011E}' => 0xD0,
        '\u{0130}' => 0xDD,
        '\u{015E}' => 0xDE,
        '\u{011F}' => 0xF0,
        '\u{0131}' => 0xFD,
        '\u{015F}' => 0xFE,
        '\u{D0}' | '\u{DD}' | '\u{DE}' | '\u{F0}' | '\u{FD}' | '\u{FE}' => return None,
        c => u8::try_from(u32::from(c)).ok()?,
    })
}

/// JIS X 0201: ASCII (read as Romaji) and half-width Katakana U+FF61..U+FF9F in 0xA1..0xDF.
fn jis_x0201_byte(c: char) -> Option<u8> {
    let u = u32::from(c);
    if u < 0x80 {
        return Some(u as u8);
    }
    (0xFF61..=0xFF9F)
        .contains(&u)
        .then(|| (0xA1 + (u - 0xFF61)) as u8)
}

/// The two bytes of `c` in a 94x94 set reached through an EUC encoding (both in 0xA1..0xFE).
fn euc_pair(c: char, encoding: &'static encoding_rs::Encoding) -> Option<[u8; 2]> {
    let mut buf = [0u8; 4];
    let (bytes, _, unmappable) = encoding.encode(c.encode_utf8(&mut buf));
    match (unmappable, bytes.as_ref()) {
        (false, &[a, b]) if (0xA1..=0xFE).contains(&a) && (0xA1..=0xFE).contains(&b) => {
            Some([a, b])
        }
        _ => None,
    }
}

/// What G0 holds while encoding.
#[derive(Clone, Copy, PartialEq, Eq)]
enum G0 {
    Ascii,
    JisRoman,
    JisX0208,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct State {
    g0: G0,
    /// The set designated to G1 (None: nothing designated).
    g1: Option<Term>,
}

/// The escape sequence designating `term` to G1 (PS3.3 Tables C.12-3 and C.12-4).
fn g1_escape(term: Term) -> Option<&'static [u8]> {
    Some(match term {
        Term::Latin1 => b"\x1b-A",
        Term::Latin2 => b"\x1b-B",
        Term::Latin3 => b"\x1b-C",
        Term::Latin4 => b"\x1b-D",
        Term::Cyrillic => b"\x1b-L",
        Term::Arabic => b"\x1b-G",
        Term::Greek => b"\x1b-F",
        Term::Hebrew => b"\x1b-H",
        Term::Latin5 => b"\x1b-M",
        Term::Thai => b"\x1b-T",
        Term::JisX0201 => b"\x1b)I",
        Term::KsX1001 => b"\x1b$)C",
        Term::Gb2312 => b"\x1b$)A",
        _ => return None,
    })
}

fn g0_escape(g0: G0) -> &'static [u8] {
    match g0 {
        G0::Ascii => b"\x1b(B",
        G0::JisRoman => b"\x1b(J",
        G0::JisX0208 => b"\x1b$B",
    }
}

struct Iso2022<'a> {
    terms: &'a [Term],
    pn: bool,
    initial: State,
    state: State,
    out: Vec<u8>,
}

impl<'a> Iso2022<'a> {
    fn new(terms: &'a [Term], pn: bool) -> Self {
        let first = terms.first().copied().unwrap_or_default();
        let initial = State {
            g0: if first == Term::JisX0201 {
                G0::JisRoman
            } else {
                G0::Ascii
            },
            g1: g1_escape(first).map(|_| first),
        };
        Iso2022 {
            terms,
            pn,
            initial,
            state: initial,
            out: Vec::new(),
        }
    }

    fn encode(mut self, text: &str) -> Option<Vec<u8>> {
        for c in text.chars() {
            if u32::from(c) < 0x20 || c == '\\' || (self.pn && (c == '^' || c == '=')) {
                self.back_to_initial();
                self.out.push(c as u8);
                self.state = self.initial;
            } else if c.is_ascii() {
                self.ascii(c as u8);
            } else {
                self.other(c)?;
            }
        }
        self.back_to_initial();
        Some(self.out)
    }

    /// PS3.5 6.1.2.5.3: value 1's sets are active again before a delimiter and at the end.
    fn back_to_initial(&mut self) {
        if self.state.g0 != self.initial.g0 {
            self.out.extend_from_slice(g0_escape(self.initial.g0));
        }
        if self.state.g1 != self.initial.g1 {
            if let Some(esc) = self.initial.g1.and_then(g1_escape) {
                self.out.extend_from_slice(esc);
            }
        }
        self.state = self.initial;
    }

    fn designate_g0(&mut self, g0: G0) {
        if self.state.g0 != g0 {
            self.out.extend_from_slice(g0_escape(g0));
            self.state.g0 = g0;
        }
    }

    fn designate_g1(&mut self, term: Term) {
        if self.state.g1 != Some(term) {
            if let Some(esc) = g1_escape(term) {
                self.out.extend_from_slice(esc);
            }
            self.state.g1 = Some(term);
        }
    }

    fn ascii(&mut self, b: u8) {
        // JIS X 0201 Romaji differs from ASCII only in 0x5C (a delimiter here) and 0x7E.
        let roman_ok = self.initial.g0 == G0::JisRoman && b != b'~';
        match self.state.g0 {
            G0::Ascii => {}
            G0::JisRoman if b != b'~' => {}
            _ if roman_ok => self.designate_g0(G0::JisRoman),
            _ => self.designate_g0(G0::Ascii),
        }
        self.out.push(b);
    }

    /// A character beyond ASCII, in the first declared set that holds it.
    fn other(&mut self, c: char) -> Option<()> {
        for &term in self.terms {
            match term {
                Term::JisX0208 => {
                    if let Some([a, b]) = euc_pair(c, encoding_rs::EUC_JP) {
                        self.designate_g0(G0::JisX0208);
                        self.out.extend_from_slice(&[a & 0x7F, b & 0x7F]);
                        return Some(());
                    }
                }
                Term::KsX1001 | Term::Gb2312 => {
                    let enc = if term == Term::KsX1001 {
                        encoding_rs::EUC_KR
                    } else {
                        encoding_rs::GB18030
                    };
                    if let Some(pair) = euc_pair(c, enc) {
                        self.designate_g1(term);
                        self.out.extend_from_slice(&pair);
                        return Some(());
                    }
                }
                _ if g1_escape(term).is_some() => {
                    let mut buf = [0u8; 4];
                    if let Some(bytes) = encode_single(c.encode_utf8(&mut buf), term) {
                        if let [b] = bytes[..] {
                            if b >= 0x80 {
                                self.designate_g1(term);
                                self.out.push(b);
                                return Some(());
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(charset: &[u8], text: &str, pn: bool) -> Vec<u8> {
        let cs = Charset::from_value(charset);
        let bytes = encode(text, &cs, pn).expect("encodable");
        assert_eq!(
            cs.decode(&bytes, pn),
            text,
            "{}",
            String::from_utf8_lossy(charset)
        );
        bytes
    }

    #[test]
    fn the_standards_iso2022_examples_byte_for_byte() {
        // PS3.5 H.3.1 (Japanese, JIS X 0208 in G0).
        let raw = round_trip(
            b"\\ISO 2022 IR 87",
            "Yamada^Tarou=山田^太郎=やまだ^たろう",
            true,
        );
        assert_eq!(
            raw,
            b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B"
        );
        // PS3.5 I.2 (Korean, KS X 1001 in G1, designated again after each delimiter).
        let raw = round_trip(b"\\ISO 2022 IR 149", "Hong^Gildong=洪^吉洞=홍^길동", true);
        assert_eq!(
            raw,
            b"Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7=\x1b$)C\xc8\xab^\x1b$)C\xb1\xe6\xb5\xbf"
        );
        // PS3.5 J.3 (Chinese, GB 2312 in G1).
        let raw = round_trip(b"\\ISO 2022 IR 58", "Zhang^XiaoDong=张^小东=", true);
        assert_eq!(
            raw,
            b"Zhang^XiaoDong=\x1b$)A\xd5\xc5^\x1b$)A\xd0\xa1\xb6\xab="
        );
    }

    #[test]
    fn half_width_katakana_and_latin_extensions() {
        // PS3.5 H.3.2: JIS X 0201 as value 1 (Katakana in G1 from the start).
        round_trip(
            b"ISO 2022 IR 13\\ISO 2022 IR 87",
            "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう",
            true,
        );
        // Latin-1 as value 1 and Greek designated for one word, back before the delimiter.
        let raw = round_trip(
            b"ISO 2022 IR 100\\ISO 2022 IR 126",
            "Jérôme^Διονυσιος",
            true,
        );
        assert!(raw.windows(3).any(|w| w == b"\x1b-F"));
        assert!(raw.ends_with(b"\x1b-A"));
    }

    #[test]
    fn characters_outside_the_set_are_never_substituted() {
        let cs = Charset::from_value(b"\\ISO 2022 IR 87");
        assert_eq!(encode("Müller", &cs, true), None);
        assert_eq!(encode_single("Ηλίας", Term::Latin1), None);
        assert_eq!(encode_single("İ", Term::Latin5), Some(vec![0xDD]));
        assert_eq!(encode_single("Ý", Term::Latin5), None);
        assert_eq!(
            encode_single("Müller", Term::Latin1),
            Some(b"M\xfcller".to_vec())
        );
        assert_eq!(encode_single("王", Term::Default), None);
    }
}
