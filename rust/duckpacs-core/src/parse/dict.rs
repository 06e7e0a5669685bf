//! Data dictionary look-ups (PS3.6) for implicit VR datasets and for display, backed by the
//! maintained `dicom-dictionary-std` crate. Parser layer.
//!
//! Rules on top of the dictionary (PS3.5 7.1, 7.2, 7.8):
//! - group length elements (gggg,0000) are UL;
//! - private creators (odd group, element 0010-00FF) are LO;
//! - other private elements, and unknown public ones, are UN;
//! - repeating groups (50xx, 60xx, 7Fxx) are resolved by the dictionary's ranges;
//! - context-dependent VRs resolve as pydicom and DCMTK do for implicit VR:
//!   "US or SS" -> US (SS when Pixel Representation is 1, see [`implicit_vr`]),
//!   "OB or OW" -> OW, "US or OW" (LUT data) -> OW.

use super::vr::Vr;
use dicom_core::dictionary::{DataDictionary, VirtualVr};
use dicom_core::Tag;
use dicom_dictionary_std::StandardDataDictionary;

/// VR for an element read in implicit VR. `signed_pixels` is whether Pixel Representation
/// (0028,0103) of the enclosing dataset is 1 (it decides "US or SS" elements).
pub fn implicit_vr(tag: u32, signed_pixels: bool) -> Vr {
    let group = (tag >> 16) as u16;
    let element = (tag & 0xFFFF) as u16;
    if element == 0 {
        return Vr::UL;
    }
    if group & 1 == 1 {
        if (0x0010..=0x00FF).contains(&element) {
            return Vr::LO;
        }
        return Vr::UN;
    }
    match StandardDataDictionary.by_tag(Tag(group, element)) {
        Some(entry) => from_virtual(entry.vr, signed_pixels),
        None => Vr::UN,
    }
}

fn from_virtual(vr: VirtualVr, signed_pixels: bool) -> Vr {
    match vr {
        VirtualVr::Exact(v) => Vr::from_bytes(v.to_bytes()).unwrap_or(Vr::UN),
        VirtualVr::Xs => {
            if signed_pixels {
                Vr::SS
            } else {
                Vr::US
            }
        }
        VirtualVr::Ox | VirtualVr::Px => Vr::OW,
        // LUT Data (0028,3006): OW unless the LUT has a single entry (PS3.3 C.11.1.1.1).
        VirtualVr::Lt => Vr::OW,
        _ => Vr::UN,
    }
}

/// True when the dictionary VR of `tag` is "US or SS" (decided by Pixel Representation).
pub fn is_us_or_ss(tag: u32) -> bool {
    let group = (tag >> 16) as u16;
    if group & 1 == 1 {
        return false;
    }
    matches!(
        StandardDataDictionary
            .by_tag(Tag(group, (tag & 0xFFFF) as u16))
            .map(|e| e.vr),
        Some(VirtualVr::Xs)
    )
}

/// Keyword (e.g. "PatientName") of a public tag, for display; private creators and private
/// elements have none.
pub fn keyword(tag: u32) -> Option<&'static str> {
    let group = (tag >> 16) as u16;
    let element = (tag & 0xFFFF) as u16;
    if group & 1 == 1 {
        return None;
    }
    StandardDataDictionary
        .by_tag(Tag(group, element))
        .map(|e| e.alias)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        assert_eq!(implicit_vr(0x0010_0010, false), Vr::PN);
        assert_eq!(implicit_vr(0x0008_0000, false), Vr::UL);
        assert_eq!(implicit_vr(0x0009_0010, false), Vr::LO);
        assert_eq!(implicit_vr(0x0009_1001, false), Vr::UN);
        assert_eq!(implicit_vr(0x6002_3000, false), Vr::OW);
        assert_eq!(implicit_vr(0x5004_3000, false), Vr::OW);
        assert_eq!(implicit_vr(0x0028_0106, true), Vr::SS);
        assert_eq!(implicit_vr(0x0028_0106, false), Vr::US);
        assert_eq!(implicit_vr(0x7FE0_0010, false), Vr::OW);
        assert_eq!(implicit_vr(0x0008_1115, false), Vr::SQ);
        assert_eq!(keyword(0x0010_0010), Some("PatientName"));
    }
}
