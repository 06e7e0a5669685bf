//! The dataset reader: walks a DICOM byte buffer into a tree of [`Element`]s without copying
//! values (each element keeps byte ranges into the buffer). Parser layer, no I/O.
//!
//! Encoding rules followed: PS3.5 7.1 (data element structure, explicit and implicit VR),
//! 7.5 (sequences and items of defined and undefined length), 7.8 (private elements),
//! A.4 (encapsulated pixel data), 6.2.2 (UN of undefined length holds an implicit VR little
//! endian sequence). Every step consumes at least 8 bytes or ends the loop, so the work and
//! the number of allocated elements are bounded by the buffer length; nesting is limited to
//! [`MAX_DEPTH`] levels so that a hostile file cannot overflow the stack.

use std::ops::Range;

use super::charset::Charset;
use super::dict;
use super::vr::Vr;
use crate::{Error, Result};

/// Deepest nesting of sequences accepted (real files rarely exceed 10).
pub const MAX_DEPTH: usize = 200;

pub const ITEM: u32 = 0xFFFE_E000;
pub const ITEM_DELIMITATION: u32 = 0xFFFE_E00D;
pub const SEQUENCE_DELIMITATION: u32 = 0xFFFE_E0DD;
pub const UNDEFINED: u32 = 0xFFFF_FFFF;

/// How a dataset is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syntax {
    pub explicit: bool,
    pub big_endian: bool,
}

impl Syntax {
    pub const IMPLICIT_LE: Syntax = Syntax {
        explicit: false,
        big_endian: false,
    };
    pub const EXPLICIT_LE: Syntax = Syntax {
        explicit: true,
        big_endian: false,
    };
    pub const EXPLICIT_BE: Syntax = Syntax {
        explicit: true,
        big_endian: true,
    };
}

/// One data element. Ranges are into [`super::Parsed::data`].
#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    /// `group << 16 | element`.
    pub tag: u32,
    pub vr: Vr,
    /// Offset of the first byte of the element (its tag).
    pub offset: usize,
    /// The value bytes. For undefined-length sequences and encapsulated pixel data this runs
    /// from the first item to the end of the sequence delimitation item.
    pub value: Range<usize>,
    /// True when the length field was 0xFFFFFFFF.
    pub undefined_length: bool,
    /// True when the value's numbers are big endian.
    pub big_endian: bool,
    /// True when the VR came from the dictionary (implicit VR) rather than the file.
    pub implicit: bool,
    pub content: Content,
}

/// What an element holds beyond its raw value.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Content {
    /// A plain value (text, numbers, bytes).
    #[default]
    Value,
    /// A sequence (SQ, or UN/private element of undefined length read as one).
    Items(Vec<Item>),
    /// Encapsulated pixel data (PS3.5 A.4): each item including its 8-byte header; the
    /// first is the Basic Offset Table.
    Fragments(Vec<Range<usize>>),
}

impl Element {
    /// End of the element (after its value and any delimitation item).
    pub fn end(&self) -> usize {
        self.value.end
    }
    pub fn group(&self) -> u16 {
        (self.tag >> 16) as u16
    }
    /// Sequence items, empty for other elements.
    pub fn items(&self) -> &[Item] {
        match &self.content {
            Content::Items(items) => items,
            _ => &[],
        }
    }
    pub fn is_sequence(&self) -> bool {
        matches!(self.content, Content::Items(_))
    }
    /// True for private data elements and private creators (odd group, PS3.5 7.8).
    pub fn is_private(&self) -> bool {
        self.group() & 1 == 1 && self.group() > 0x0008
    }
}

/// One sequence item.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Offset of the item tag.
    pub offset: usize,
    /// The item's content (its elements), excluding any item delimitation item.
    pub value: Range<usize>,
    /// End of the item, after an item delimitation item when the length was undefined.
    pub end: usize,
    pub undefined_length: bool,
    pub dataset: Dataset,
}

/// A list of elements plus the Specific Character Set that applies to them (inherited from
/// the enclosing dataset unless the dataset has its own (0008,0005), PS3.5 6.1.2.4... and
/// PS3.3 C.12.1.1.2).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Dataset {
    pub elements: Vec<Element>,
    pub charset: Charset,
}

impl Dataset {
    /// The Private Creator element reserving the block of private element `tag`
    /// ((gggg,00xx) for (gggg,xxyy), PS3.5 7.8.1), if the dataset has one.
    pub fn private_creator(&self, tag: u32) -> Option<&Element> {
        let group = tag >> 16;
        let element = tag & 0xFFFF;
        if group & 1 == 0 || element < 0x1000 {
            return None;
        }
        self.get((group << 16) | (element >> 8))
    }

    /// The element with `tag`, found by binary search when the elements are in order.
    pub fn get(&self, tag: u32) -> Option<&Element> {
        match self.elements.binary_search_by_key(&tag, |e| e.tag) {
            Ok(i) => self.elements.get(i),
            Err(_) => self.elements.iter().find(|e| e.tag == tag),
        }
    }
}

pub(crate) fn is_pixel_tag(tag: u32) -> bool {
    matches!(tag, 0x7FE0_0008 | 0x7FE0_0009 | 0x7FE0_0010)
}

/// Element header as read from the buffer.
struct Header {
    tag: u32,
    vr: Vr,
    len: u32,
    header_len: usize,
    implicit: bool,
}

/// Where a dataset ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Until {
    /// The end of the byte range (top level, or an item of defined length).
    End,
    /// An item delimitation item (item of undefined length).
    ItemDelimiter,
    /// The first element whose group is not 0002 (the File Meta Information).
    MetaEnd,
}

pub(crate) struct Reader<'a> {
    pub buf: &'a [u8],
    pub stop_at_pixel_data: bool,
    /// Offset of the pixel data element where reading stopped, if it did.
    pub stopped_at: Option<usize>,
    /// Trailing bytes after the last top-level element (zeros, or fewer than 8 bytes).
    pub trailing: Option<Range<usize>>,
    /// An element with a "US or SS" dictionary VR was read without an explicit VR.
    pub saw_us_or_ss: bool,
    /// Loop iterations spent: each consumes at least 8 bytes or ends its loop, so this stays
    /// below `2 * len / 8 + 2` (checked by the fuzz test).
    pub steps: usize,
}

fn u16_at(buf: &[u8], pos: usize, be: bool) -> Option<u16> {
    let b = buf.get(pos..pos.checked_add(2)?)?;
    let a = [b[0], b[1]];
    Some(if be {
        u16::from_be_bytes(a)
    } else {
        u16::from_le_bytes(a)
    })
}

fn u32_at(buf: &[u8], pos: usize, be: bool) -> Option<u32> {
    let b = buf.get(pos..pos.checked_add(4)?)?;
    let a = [b[0], b[1], b[2], b[3]];
    Some(if be {
        u32::from_be_bytes(a)
    } else {
        u32::from_le_bytes(a)
    })
}

/// Tag at `pos` (group then element, each in the syntax's byte order).
pub(crate) fn tag_at(buf: &[u8], pos: usize, be: bool) -> Option<u32> {
    let g = u16_at(buf, pos, be)?;
    let e = u16_at(buf, pos + 2, be)?;
    Some((u32::from(g) << 16) | u32::from(e))
}

fn truncated(pos: usize, tag: Option<u32>, what: &str) -> Error {
    Error::parse(pos, tag, format!("truncated: expected {what}"))
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], stop_at_pixel_data: bool) -> Self {
        Reader {
            buf,
            stop_at_pixel_data,
            stopped_at: None,
            trailing: None,
            saw_us_or_ss: false,
            steps: 0,
        }
    }

    /// Reads the header at `pos`. Item tags (FFFE,xxxx) never carry a VR (PS3.5 7.5).
    fn header(&mut self, pos: usize, syn: Syntax) -> Result<Header> {
        let buf = self.buf;
        let be = syn.big_endian;
        let tag = tag_at(buf, pos, be).ok_or_else(|| truncated(pos, None, "an element tag"))?;
        if tag >> 16 == 0xFFFE {
            let len = u32_at(buf, pos + 4, be)
                .ok_or_else(|| truncated(pos, Some(tag), "an item length"))?;
            return Ok(Header {
                tag,
                vr: Vr::UN,
                len,
                header_len: 8,
                implicit: true,
            });
        }
        if syn.explicit {
            let vr_bytes = buf
                .get(pos + 4..pos + 6)
                .ok_or_else(|| truncated(pos, Some(tag), "a VR"))?;
            if let Some(vr) = Vr::from_bytes([vr_bytes[0], vr_bytes[1]]) {
                if vr.has_long_header() {
                    let len = u32_at(buf, pos + 8, be)
                        .ok_or_else(|| truncated(pos, Some(tag), "a 4-byte length"))?;
                    return Ok(Header {
                        tag,
                        vr,
                        len,
                        header_len: 12,
                        implicit: false,
                    });
                }
                let len = u16_at(buf, pos + 6, be)
                    .ok_or_else(|| truncated(pos, Some(tag), "a 2-byte length"))?;
                return Ok(Header {
                    tag,
                    vr,
                    len: u32::from(len),
                    header_len: 8,
                    implicit: false,
                });
            }
            // Not a VR: some writers switch to implicit VR for single elements (seen in
            // legacy files); DCMTK and pydicom read such an element as implicit VR.
        }
        let len =
            u32_at(buf, pos + 4, be).ok_or_else(|| truncated(pos, Some(tag), "a 4-byte length"))?;
        Ok(Header {
            tag,
            vr: self.dictionary_vr(tag),
            len,
            header_len: 8,
            implicit: true,
        })
    }

    /// VR from the dictionary; "US or SS" elements are read as US and fixed up afterwards by
    /// [`resolve_us_or_ss`] once Pixel Representation is known.
    fn dictionary_vr(&mut self, tag: u32) -> Vr {
        let vr = dict::implicit_vr(tag, false);
        if vr == Vr::US && dict::is_us_or_ss(tag) {
            self.saw_us_or_ss = true;
        }
        vr
    }

    /// Reads the top-level dataset (or the meta group) from `pos` to the end of the buffer.
    pub fn read_top(
        &mut self,
        pos: usize,
        syn: Syntax,
        charset: Charset,
    ) -> Result<(Dataset, usize)> {
        let end = self.buf.len();
        self.dataset(pos, end, syn, charset, 0, Until::End)
    }

    /// Reads the File Meta Information group starting at `pos` (explicit VR LE, PS3.10 7.1).
    pub fn read_meta(&mut self, pos: usize) -> Result<(Dataset, usize)> {
        let end = self.buf.len();
        self.dataset(
            pos,
            end,
            Syntax::EXPLICIT_LE,
            Charset::default(),
            0,
            Until::MetaEnd,
        )
    }

    fn dataset(
        &mut self,
        mut pos: usize,
        end: usize,
        syn: Syntax,
        mut charset: Charset,
        depth: usize,
        until: Until,
    ) -> Result<(Dataset, usize)> {
        let mut elements: Vec<Element> = Vec::new();
        let top = depth == 0 && until == Until::End;
        loop {
            self.steps += 1;
            if pos >= end {
                if until == Until::ItemDelimiter {
                    return Err(truncated(pos, None, "an item delimitation item"));
                }
                break;
            }
            let rest = self.buf.get(pos..end).unwrap_or(&[]);
            if top && (rest.len() < 8 || rest.iter().all(|&b| b == 0)) {
                // Trailing zero padding, or fewer stray bytes than an element header, after
                // the last element (written by some modalities; pydicom and DCMTK ignore it).
                // The range is reported so that the file can be rebuilt byte for byte.
                self.trailing = Some(pos..end);
                pos = end;
                break;
            }
            if rest.len() < 8 {
                return Err(truncated(pos, None, "an 8-byte element header"));
            }
            let tag = tag_at(self.buf, pos, syn.big_endian).unwrap_or(0);
            if until == Until::MetaEnd && tag >> 16 != 0x0002 {
                break;
            }
            if tag == ITEM_DELIMITATION {
                pos += 8;
                if until == Until::ItemDelimiter || depth > 0 {
                    return Ok((Dataset { elements, charset }, pos));
                }
                return Err(Error::parse(
                    pos - 8,
                    Some(tag),
                    "item delimitation item outside an item",
                ));
            }
            if tag == SEQUENCE_DELIMITATION || tag == ITEM {
                return Err(Error::parse(
                    pos,
                    Some(tag),
                    "item or sequence delimiter where a data element was expected",
                ));
            }
            if top && self.stop_at_pixel_data && is_pixel_tag(tag) {
                self.stopped_at = Some(pos);
                pos = end;
                break;
            }
            let el = self.element(pos, end, syn, charset, depth)?;
            if el.tag == 0x0008_0005 {
                let v = self.buf.get(el.value.clone()).unwrap_or(&[]);
                charset = Charset::from_value(v);
            }
            pos = el.end();
            elements.push(el);
        }
        Ok((Dataset { elements, charset }, pos))
    }

    fn element(
        &mut self,
        pos: usize,
        end: usize,
        syn: Syntax,
        charset: Charset,
        depth: usize,
    ) -> Result<Element> {
        let h = self.header(pos, syn)?;
        let start = pos + h.header_len;
        let tag = h.tag;
        let mut el = Element {
            tag,
            vr: h.vr,
            offset: pos,
            value: start..start,
            undefined_length: h.len == UNDEFINED,
            big_endian: syn.big_endian,
            implicit: h.implicit,
            content: Content::Value,
        };
        if h.len == UNDEFINED {
            if is_pixel_tag(tag) && h.vr != Vr::SQ {
                // Encapsulated pixel data, also inside an Icon Image Sequence (PS3.5 A.4).
                let (frags, after) = self.fragments(start, end, syn)?;
                if h.implicit {
                    // Encapsulated pixel data is OB (PS3.5 A.4).
                    el.vr = Vr::OB;
                }
                el.value = start..after;
                el.content = Content::Fragments(frags);
                return Ok(el);
            }
            // SQ; UN holding an implicit VR LE sequence (PS3.5 6.2.2); an implicit VR element
            // not known to be SQ (private sequences).
            let inner = match (h.vr, h.implicit) {
                (Vr::SQ, _) => syn,
                (_, true) => syn,
                (Vr::UN, false) => Syntax::IMPLICIT_LE,
                _ => {
                    return Err(Error::parse(
                        pos,
                        Some(tag),
                        format!("undefined length is not allowed for VR {}", h.vr),
                    ))
                }
            };
            if h.implicit || h.vr == Vr::UN {
                el.vr = if h.vr == Vr::UN && !h.implicit {
                    Vr::UN
                } else {
                    Vr::SQ
                };
            }
            let (items, after) = self.items(start, end, true, inner, charset, depth + 1)?;
            el.value = start..after;
            el.content = Content::Items(items);
            return Ok(el);
        }
        let value_end = start
            .checked_add(h.len as usize)
            .filter(|&e| e <= end)
            .ok_or_else(|| {
                Error::parse(
                    pos,
                    Some(tag),
                    format!(
                        "value length {} runs past the end of its {} ({} bytes left)",
                        h.len,
                        if depth == 0 { "buffer" } else { "item" },
                        end.saturating_sub(start)
                    ),
                )
            })?;
        el.value = start..value_end;
        let mut inner = syn;
        if h.vr == Vr::UN && !h.implicit {
            // A UN value is encoded as in implicit VR little endian (PS3.5 6.2.2); when the
            // dictionary knows the tag, read it with the known VR (as pydicom and DCMTK do).
            let known = self.dictionary_vr(tag);
            if known != Vr::UN {
                el.vr = known;
                el.implicit = true;
                el.big_endian = false;
                inner = Syntax::IMPLICIT_LE;
            }
        }
        if el.vr == Vr::SQ {
            let (items, _) = self.items(start, value_end, false, inner, charset, depth + 1)?;
            el.content = Content::Items(items);
        }
        Ok(el)
    }

    /// Reads sequence items from `pos`: up to `end` (defined length) or up to and including
    /// a sequence delimitation item (undefined length). Returns the items and the end offset.
    fn items(
        &mut self,
        mut pos: usize,
        end: usize,
        undefined: bool,
        syn: Syntax,
        charset: Charset,
        depth: usize,
    ) -> Result<(Vec<Item>, usize)> {
        if depth > MAX_DEPTH {
            return Err(Error::parse(
                pos,
                None,
                format!("sequences nested deeper than {MAX_DEPTH}"),
            ));
        }
        let mut items = Vec::new();
        loop {
            self.steps += 1;
            if !undefined && pos >= end {
                break;
            }
            if end.saturating_sub(pos) < 8 {
                return Err(truncated(
                    pos,
                    None,
                    "an item or sequence delimitation item",
                ));
            }
            let be = syn.big_endian;
            let tag = tag_at(self.buf, pos, be).unwrap_or(0);
            let len = u32_at(self.buf, pos + 4, be).unwrap_or(0);
            if tag == SEQUENCE_DELIMITATION {
                pos += 8;
                if undefined {
                    break;
                }
                // A delimiter inside a defined-length sequence is redundant; skip it.
                continue;
            }
            if tag != ITEM {
                return Err(Error::parse(
                    pos,
                    Some(tag),
                    "expected an item tag (FFFE,E000) inside a sequence",
                ));
            }
            let start = pos + 8;
            let (dataset, value, after) = if len == UNDEFINED {
                let (ds, after) =
                    self.dataset(start, end, syn, charset, depth, Until::ItemDelimiter)?;
                (ds, start..after.saturating_sub(8).max(start), after)
            } else {
                let item_end = start
                    .checked_add(len as usize)
                    .filter(|&e| e <= end)
                    .ok_or_else(|| {
                        Error::parse(
                            pos,
                            Some(tag),
                            format!("item length {len} runs past the end of its sequence"),
                        )
                    })?;
                let (ds, after) = self.dataset(start, item_end, syn, charset, depth, Until::End)?;
                (ds, start..item_end.min(after), item_end)
            };
            items.push(Item {
                offset: pos,
                value,
                end: after,
                undefined_length: len == UNDEFINED,
                dataset,
            });
            pos = after;
        }
        Ok((items, pos))
    }

    /// Reads the items of encapsulated pixel data up to the sequence delimiter (PS3.5 A.4).
    fn fragments(
        &mut self,
        mut pos: usize,
        end: usize,
        syn: Syntax,
    ) -> Result<(Vec<Range<usize>>, usize)> {
        let mut frags = Vec::new();
        loop {
            self.steps += 1;
            if end.saturating_sub(pos) < 8 {
                return Err(truncated(
                    pos,
                    Some(0x7FE0_0010),
                    "a fragment item or sequence delimiter",
                ));
            }
            let tag = tag_at(self.buf, pos, syn.big_endian).unwrap_or(0);
            let len = u32_at(self.buf, pos + 4, syn.big_endian).unwrap_or(0);
            match tag {
                SEQUENCE_DELIMITATION => return Ok((frags, pos + 8)),
                ITEM => {
                    let item_end = (pos + 8)
                        .checked_add(len as usize)
                        .filter(|&e| e <= end && len != UNDEFINED)
                        .ok_or_else(|| {
                            Error::parse(pos, Some(tag), format!("fragment length {len} runs past the end of the data"))
                        })?;
                    frags.push(pos..item_end);
                    pos = item_end;
                }
                _ => {
                    return Err(Error::parse(
                        pos,
                        Some(tag),
                        "expected a fragment item (FFFE,E000) or sequence delimiter in encapsulated pixel data",
                    ))
                }
            }
        }
    }
}

/// Sets the VR of "US or SS" elements read without an explicit VR: SS where the nearest
/// Pixel Representation (0028,0103), in the dataset or an enclosing one, is 1 (PS3.3
/// C.7.6.3.1.3 and the dictionary note for these tags).
pub(crate) fn resolve_us_or_ss(buf: &[u8], ds: &mut Dataset, inherited: bool) {
    let signed = match ds.elements.iter().find(|e| e.tag == 0x0028_0103) {
        Some(el) => {
            let be = el.big_endian;
            u16_at(buf, el.value.start, be).filter(|_| el.value.len() >= 2) == Some(1)
        }
        None => inherited,
    };
    for el in &mut ds.elements {
        if el.implicit && el.vr == Vr::US && signed && dict::is_us_or_ss(el.tag) {
            el.vr = Vr::SS;
        }
        if let Content::Items(items) = &mut el.content {
            for item in items {
                resolve_us_or_ss(buf, &mut item.dataset, signed);
            }
        }
    }
}
