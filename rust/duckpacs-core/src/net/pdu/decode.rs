//! Decoding PDUs from bytes. Every length is checked against what is left before anything
//! is read or allocated, so no input can make the decoder allocate more than the input's
//! size or run past its end. Errors name the PDU, the item and the byte offset from the
//! PDU's first byte.

use super::*;

/// Decode one whole PDU (header included) from the start of `bytes`, checking the header
/// against `limits`. Returns the PDU and the number of bytes it took.
pub fn decode(bytes: &[u8], limits: Limits) -> Result<(Pdu<'_>, usize)> {
    let Some(head) = bytes.get(..HEADER_LEN) else {
        return Err(Error::malformed(
            "PDU",
            None,
            bytes.len(),
            "truncated PDU header",
        ));
    };
    let header = Header::parse(head.try_into().expect("6 bytes"), limits)?;
    let end = HEADER_LEN + header.length as usize;
    let Some(body) = bytes.get(HEADER_LEN..end) else {
        return Err(Error::malformed(
            kind_name(header.pdu_type),
            None,
            bytes.len(),
            format!("truncated: {} bytes announced", header.length),
        ));
    };
    Ok((decode_body(header.pdu_type, body)?, end))
}

/// Decode the bytes after a checked [`Header`].
pub fn decode_body(pdu_type: u8, body: &[u8]) -> Result<Pdu<'_>> {
    let name = kind_name(pdu_type);
    let mut c = Cursor::new(body, name, HEADER_LEN);
    match pdu_type {
        kind::ASSOCIATE_RQ => associate_rq(&mut c).map(Pdu::AssociateRq),
        kind::ASSOCIATE_AC => associate_ac(&mut c).map(Pdu::AssociateAc),
        kind::ASSOCIATE_RJ => {
            let b = c.take(4)?;
            Ok(Pdu::AssociateRj(Rejection::new(b[1], b[2], b[3])))
        }
        kind::P_DATA_TF => pdata(body).map(Pdu::PData),
        kind::RELEASE_RQ => c.take(4).map(|_| Pdu::ReleaseRq),
        kind::RELEASE_RP => c.take(4).map(|_| Pdu::ReleaseRp),
        kind::ABORT => {
            let b = c.take(4)?;
            Ok(Pdu::Abort(Abort {
                source: b[2],
                reason: b[3],
            }))
        }
        _ => Err(Error::UnknownPduType { pdu_type }),
    }
}

fn pdata(body: &[u8]) -> Result<Vec<Pdv<'_>>> {
    let mut pdvs = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let (pdv, next) = next_pdv(body, pos)?;
        pdvs.push(pdv);
        pos = next;
    }
    if pdvs.is_empty() {
        return Err(Error::malformed(
            "P-DATA-TF",
            None,
            HEADER_LEN,
            "no presentation data value item (PS3.8 9.3.5 requires one or more)",
        ));
    }
    Ok(pdvs)
}

/// The PDV item starting at `pos` of a P-DATA-TF body, and the position after it
/// (PS3.8 9.3.5.1: 4-byte item length, context ID, message control header, value).
pub fn next_pdv(body: &[u8], pos: usize) -> Result<(Pdv<'_>, usize)> {
    let offset = HEADER_LEN + pos;
    let err = |reason: String| Error::malformed("P-DATA-TF", None, offset, reason);
    let Some(head) = body.get(pos..pos + PDV_HEADER) else {
        return Err(err(format!(
            "{} bytes left, a PDV item needs at least {PDV_HEADER}",
            body.len() - pos
        )));
    };
    let length = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if length < 2 {
        return Err(err(format!("PDV item length {length}, at least 2")));
    }
    let end = pos + 4 + length;
    if end > body.len() {
        return Err(err(format!(
            "PDV item length {length} runs past the PDU's end ({} bytes left)",
            body.len() - pos - 4
        )));
    }
    let control = head[5];
    let pdv = Pdv {
        context_id: head[4],
        is_command: control & 0x01 != 0,
        is_last: control & 0x02 != 0,
        data: &body[pos + PDV_HEADER..end],
    };
    Ok((pdv, end))
}

/// A bounds-checked reader over a PDU body or item value.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf[0]` from the PDU's first byte, for error messages.
    base: usize,
    pdu: &'static str,
    item: Option<u8>,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8], pdu: &'static str, base: usize) -> Self {
        Cursor {
            buf,
            pos: 0,
            base,
            pdu,
            item: None,
        }
    }

    fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn err(&self, reason: impl Into<String>) -> Error {
        Error::malformed(self.pdu, self.item, self.offset(), reason)
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let left = self.buf.len() - self.pos;
        if n > left {
            return Err(self.err(format!("{n} bytes needed, {left} left")));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The next item: its type and a cursor over its value (type, reserved, 2-byte length;
    /// PS3.8 9.3.2.1 ff.).
    fn item(&mut self) -> Result<(u8, Cursor<'a>)> {
        let item_type = self.u8()?;
        self.item = Some(item_type);
        self.take(1)?;
        let length = self.u16()? as usize;
        let base = self.base + self.pos;
        let value = self.take(length)?;
        let mut sub = Cursor::new(value, self.pdu, base);
        sub.item = Some(item_type);
        self.item = None;
        Ok((item_type, sub))
    }

    fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }
}

/// Text of an AE title or UID field: leading and trailing spaces and trailing NUL padding
/// are not significant (PS3.8 9.3.2, PS3.5 9.1).
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_matches(|c| c == ' ' || c == '\0')
        .to_string()
}

/// Fixed part shared by RQ and AC: version, reserved, called AE, calling AE, 32 reserved.
fn fixed_part(c: &mut Cursor<'_>) -> Result<(u16, String, String)> {
    let version = c.u16()?;
    c.take(2)?;
    let called = text(c.take(16)?);
    let calling = text(c.take(16)?);
    c.take(32)?;
    Ok((version, called, calling))
}

fn associate_rq(c: &mut Cursor<'_>) -> Result<AssociateRq> {
    let (protocol_version, called_ae, calling_ae) = fixed_part(c)?;
    let mut app = None;
    let mut contexts: Vec<ProposedContext> = Vec::new();
    let mut user = None;
    while !c.is_empty() {
        let at = c.offset();
        let (item_type, mut v) = c.item()?;
        match item_type {
            0x10 => app = Some(text(v.rest())),
            0x20 => {
                let pc = proposed_context(&mut v)?;
                if contexts.iter().any(|p| p.id == pc.id) {
                    return Err(Error::malformed(
                        "A-ASSOCIATE-RQ",
                        Some(0x20),
                        at,
                        format!("presentation context ID {} proposed twice", pc.id),
                    ));
                }
                contexts.push(pc);
            }
            0x50 => user = Some(user_info(&mut v)?),
            0x21 => {
                return Err(v.err("an accepted-context item (0x21) in a request"));
            }
            _ => {}
        }
    }
    let Some(application_context) = app else {
        return Err(c.err("no application context item (0x10)"));
    };
    if contexts.is_empty() {
        return Err(c.err("no presentation context item (0x20)"));
    }
    Ok(AssociateRq {
        protocol_version,
        called_ae,
        calling_ae,
        application_context,
        contexts,
        user: user.unwrap_or_default(),
    })
}

fn associate_ac(c: &mut Cursor<'_>) -> Result<AssociateAc> {
    let (protocol_version, called_ae, calling_ae) = fixed_part(c)?;
    let mut app = None;
    let mut contexts = Vec::new();
    let mut user = None;
    while !c.is_empty() {
        let (item_type, mut v) = c.item()?;
        match item_type {
            0x10 => app = Some(text(v.rest())),
            0x21 => contexts.push(context_answer(&mut v)?),
            0x50 => user = Some(user_info(&mut v)?),
            0x20 => return Err(v.err("a proposed-context item (0x20) in an answer")),
            _ => {}
        }
    }
    let Some(application_context) = app else {
        return Err(c.err("no application context item (0x10)"));
    };
    Ok(AssociateAc {
        protocol_version,
        called_ae,
        calling_ae,
        application_context,
        contexts,
        user: user.unwrap_or_default(),
    })
}

/// Presentation context item of a request (PS3.8 9.3.2.2): ID, 3 reserved bytes, one
/// abstract syntax sub-item (0x30) and one or more transfer syntax sub-items (0x40).
fn proposed_context(v: &mut Cursor<'_>) -> Result<ProposedContext> {
    let id = v.u8()?;
    v.take(3)?;
    let mut abstract_syntax = None;
    let mut transfer_syntaxes = Vec::new();
    while !v.is_empty() {
        let (sub_type, mut s) = v.item()?;
        match sub_type {
            0x30 if abstract_syntax.is_none() => abstract_syntax = Some(text(s.rest())),
            0x30 => return Err(s.err("a second abstract syntax sub-item")),
            0x40 => transfer_syntaxes.push(text(s.rest())),
            other => {
                return Err(s.err(format!(
                    "sub-item 0x{other:02X} in presentation context {id}"
                )))
            }
        }
    }
    let Some(abstract_syntax) = abstract_syntax else {
        return Err(v.err(format!(
            "presentation context {id} has no abstract syntax sub-item (0x30)"
        )));
    };
    if transfer_syntaxes.is_empty() {
        return Err(v.err(format!(
            "presentation context {id} has no transfer syntax sub-item (0x40)"
        )));
    }
    Ok(ProposedContext {
        id,
        abstract_syntax,
        transfer_syntaxes,
    })
}

/// Presentation context item of an answer (PS3.8 9.3.3.2): ID, reserved, result/reason,
/// reserved, one transfer syntax sub-item (not significant unless accepted).
fn context_answer(v: &mut Cursor<'_>) -> Result<ContextAnswer> {
    let id = v.u8()?;
    v.take(1)?;
    let code = v.u8()?;
    v.take(1)?;
    let Some(result) = ContextResult::from_u8(code) else {
        return Err(v.err(format!(
            "presentation context {id}: result/reason {code} is not 0-4"
        )));
    };
    let mut transfer_syntax = None;
    while !v.is_empty() {
        let (sub_type, mut s) = v.item()?;
        if sub_type == 0x40 && transfer_syntax.is_none() {
            transfer_syntax = Some(text(s.rest()));
        } else {
            return Err(s.err(format!(
                "sub-item 0x{sub_type:02X} in accepted presentation context {id}"
            )));
        }
    }
    if result == ContextResult::Acceptance && transfer_syntax.is_none() {
        return Err(v.err(format!(
            "accepted presentation context {id} names no transfer syntax"
        )));
    }
    Ok(ContextAnswer {
        id,
        result,
        transfer_syntax: transfer_syntax.unwrap_or_default(),
    })
}

/// User Information sub-items (PS3.7 D.3.3, PS3.8 D.1).
fn user_info(v: &mut Cursor<'_>) -> Result<UserInfo> {
    let mut user = UserInfo::default();
    while !v.is_empty() {
        let (sub_type, mut s) = v.item()?;
        match sub_type {
            0x51 => {
                user.max_length = Some(s.u32()?);
            }
            0x52 => user.implementation_class_uid = text(s.rest()),
            0x55 => user.implementation_version_name = Some(text(s.rest())),
            0x53 => {
                let invoked = s.u16()?;
                let performed = s.u16()?;
                user.async_ops = Some((invoked, performed));
            }
            0x54 => {
                let uid = uid_prefixed(&mut s)?;
                let scu = s.u8()? != 0;
                let scp = s.u8()? != 0;
                user.roles.push(RoleSelection {
                    sop_class_uid: uid,
                    scu,
                    scp,
                });
            }
            0x56 => {
                let uid = uid_prefixed(&mut s)?;
                user.extended.push(ExtendedNegotiation {
                    sop_class_uid: uid,
                    info: s.rest().to_vec(),
                });
            }
            item_type => user.other.push(RawItem {
                item_type,
                data: s.rest().to_vec(),
            }),
        }
    }
    Ok(user)
}

/// A UID preceded by its 2-byte length (role selection, extended negotiation).
fn uid_prefixed(s: &mut Cursor<'_>) -> Result<String> {
    let n = s.u16()? as usize;
    Ok(text(s.take(n)?))
}
