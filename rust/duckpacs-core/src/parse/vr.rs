//! Value Representations (PS3.5 6.2): the two-letter codes and the properties the parser
//! needs (header size in explicit VR, text or binary, value width). Parser layer.

use std::fmt;

/// A Value Representation, stored as its two ASCII letters packed big-endian (`b'A' << 8 | b'E'`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vr(pub u16);

macro_rules! vrs {
    ($($name:ident),*) => {
        impl Vr {
            $(pub const $name: Vr = Vr(
                ((stringify!($name).as_bytes()[0] as u16) << 8) | stringify!($name).as_bytes()[1] as u16,
            );)*
            /// Every VR defined by PS3.5 6.2 (2024 edition).
            pub const ALL: &'static [Vr] = &[$(Vr::$name),*];
        }
    };
}

vrs!(
    AE, AS, AT, CS, DA, DS, DT, FD, FL, IS, LO, LT, OB, OD, OF, OL, OV, OW, PN, SH, SL, SQ, SS, ST,
    SV, TM, UC, UI, UL, UN, UR, US, UT, UV
);

/// How a value is to be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// Character string, backslash-separated multi-values, charset-dependent (PS3.5 6.1.2.3).
    Text,
    /// Character string in the default repertoire only (AE, AS, CS, DA, DT, TM, UI, UR, DS, IS).
    AsciiText,
    /// Text whose value is a single value (LT, ST, UT: backslash is not a delimiter).
    SingleText,
    /// Person name (PS3.5 6.2.1).
    PersonName,
    /// Fixed-width binary numbers.
    Int {
        width: u8,
        signed: bool,
    },
    Float {
        width: u8,
    },
    /// Attribute Tag: pairs of 16-bit numbers.
    Tag,
    /// Opaque bytes (OB, OD, OF, OL, OV, OW, UN).
    Bytes,
    Sequence,
}

impl Vr {
    /// Parses two bytes as a VR, if they are one PS3.5 defines.
    pub fn from_bytes(b: [u8; 2]) -> Option<Vr> {
        let v = Vr(u16::from_be_bytes(b));
        if Vr::ALL.contains(&v) {
            Some(v)
        } else {
            None
        }
    }

    /// The two letters.
    pub fn bytes(self) -> [u8; 2] {
        self.0.to_be_bytes()
    }

    /// The two letters as a `&str`.
    pub fn as_str(self) -> &'static str {
        // Only VRs in ALL are ever constructed by the parser; anything else prints as "??".
        for (i, v) in Vr::ALL.iter().enumerate() {
            if *v == self {
                return NAMES.get(i).copied().unwrap_or("??");
            }
        }
        "??"
    }

    /// True when explicit VR encoding uses 2 reserved bytes and a 4-byte length
    /// (PS3.5 7.1.2, Table 7.1-1).
    pub fn has_long_header(self) -> bool {
        matches!(
            self,
            Vr::OB
                | Vr::OD
                | Vr::OF
                | Vr::OL
                | Vr::OV
                | Vr::OW
                | Vr::SQ
                | Vr::SV
                | Vr::UC
                | Vr::UN
                | Vr::UR
                | Vr::UT
                | Vr::UV
        )
    }

    /// How the value is decoded.
    pub fn kind(self) -> ValueKind {
        match self {
            Vr::AE | Vr::AS | Vr::CS | Vr::DA | Vr::DT | Vr::TM | Vr::UI | Vr::DS | Vr::IS => {
                ValueKind::AsciiText
            }
            Vr::UR => ValueKind::SingleText,
            Vr::LO | Vr::SH | Vr::UC => ValueKind::Text,
            Vr::LT | Vr::ST | Vr::UT => ValueKind::SingleText,
            Vr::PN => ValueKind::PersonName,
            Vr::SS => ValueKind::Int {
                width: 2,
                signed: true,
            },
            Vr::US => ValueKind::Int {
                width: 2,
                signed: false,
            },
            Vr::SL => ValueKind::Int {
                width: 4,
                signed: true,
            },
            Vr::UL => ValueKind::Int {
                width: 4,
                signed: false,
            },
            Vr::SV => ValueKind::Int {
                width: 8,
                signed: true,
            },
            Vr::UV => ValueKind::Int {
                width: 8,
                signed: false,
            },
            Vr::FL => ValueKind::Float { width: 4 },
            Vr::FD => ValueKind::Float { width: 8 },
            Vr::AT => ValueKind::Tag,
            Vr::SQ => ValueKind::Sequence,
            _ => ValueKind::Bytes,
        }
    }

    /// Byte that pads an odd-length value to even length: space for text, NUL for UI and
    /// binary (PS3.5 6.2).
    pub fn is_text(self) -> bool {
        matches!(
            self.kind(),
            ValueKind::Text | ValueKind::AsciiText | ValueKind::SingleText | ValueKind::PersonName
        )
    }
}

const NAMES: &[&str] = &[
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD", "OF", "OL",
    "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN", "UR", "US",
    "UT", "UV",
];

impl fmt::Debug for Vr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Vr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_codes() {
        assert_eq!(NAMES.len(), Vr::ALL.len());
        for (v, n) in Vr::ALL.iter().zip(NAMES) {
            assert_eq!(&v.bytes(), n.as_bytes());
        }
        assert_eq!(Vr::from_bytes(*b"SQ"), Some(Vr::SQ));
        assert_eq!(Vr::from_bytes(*b"XX"), None);
        assert!(Vr::OB.has_long_header());
        assert!(!Vr::US.has_long_header());
    }
}
