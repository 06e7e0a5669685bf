//! Where the bytes of one instance are: the contract between the parser and the store.
//!
//! The parser (`parse`) fills an [`InstanceLayout`] from a received buffer without copying
//! pixel data; the store (`store`) uses it to split the buffer into a header part and pixel
//! chunks (one per frame, or one per encapsulated fragment) and to put it back together
//! byte for byte. All offsets are into the buffer that was parsed.

use std::ops::Range;

/// What the store and the index need to know about one received instance.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InstanceLayout {
    /// How the buffer starts: a Part 10 file (preamble + "DICM" + meta), meta without a
    /// preamble, or a bare dataset (as received over DIMSE).
    pub framing: Framing,
    /// Byte range of the File Meta Information group (0002) including any preamble, or an
    /// empty range at 0 for a bare dataset.
    pub meta: Range<usize>,
    /// Transfer Syntax UID the dataset is encoded in (from the meta, from the caller for a
    /// bare dataset, or detected by content), without trailing padding.
    pub transfer_syntax: String,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub patient_id: String,
    pub modality: String,
    /// The top-level Pixel Data (7FE0,0010), Float Pixel Data (7FE0,0008) or Double Float
    /// Pixel Data (7FE0,0009) element, if present.
    pub pixel: Option<PixelLayout>,
    /// True for deflated transfer syntaxes: every offset above (except `meta`) then indexes
    /// the logical buffer `buf[..meta.end] ++ inflate(buf[meta.end..])`, not the file; the
    /// store keeps such files whole (see `parse` module docs).
    pub deflated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// 128-byte preamble, "DICM", then group 0002.
    #[default]
    Part10,
    /// Group 0002 without preamble (seen in some legacy archives).
    MetaWithoutPreamble,
    /// Dataset only (DIMSE, or a legacy file with no meta at all).
    BareDataset,
}

/// Position and geometry of the pixel data value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PixelLayout {
    /// Range of the whole element (tag, VR, length and value; for encapsulated data this
    /// ends after the sequence delimitation item).
    pub element: Range<usize>,
    /// Range of the value only (for encapsulated data: from the first item tag to the end of
    /// the sequence delimitation item).
    pub value: Range<usize>,
    pub kind: PixelKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PixelKind {
    /// Native (uncompressed) pixels: `frames` frames of `frame_len` bytes each start at
    /// `value.start`; bytes past `frames * frame_len` (odd-length padding) are `tail`.
    Native {
        rows: u16,
        columns: u16,
        samples_per_pixel: u16,
        bits_allocated: u16,
        pixel_representation: u16,
        planar_configuration: u16,
        frames: u32,
        frame_len: usize,
        /// True when the dataset is big endian (explicit VR big endian).
        big_endian: bool,
    },
    /// Encapsulated pixels (PS3.5 A.4): each item (8-byte item header plus fragment bytes),
    /// the first being the Basic Offset Table; `frames` maps frame number -> the fragment
    /// indices (into `items`) that hold it, when it can be determined.
    Encapsulated {
        items: Vec<Range<usize>>,
        frames: Vec<Range<usize>>,
    },
}
