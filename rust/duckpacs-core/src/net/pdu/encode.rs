//! Encoding PDUs. Association PDUs are built in a `Vec` (they are small); P-DATA-TF PDUs on
//! the hot path are framed with [`pdata_header`] directly in the association's send buffer.

use super::*;

/// Bytes of a PDV item before its value: 4-byte length, context ID, control header.
pub const PDV_HEADER: usize = 6;
/// Bytes a P-DATA-TF PDU carrying one PDV adds to the value: PDU header + PDV header.
pub const PDATA_OVERHEAD: usize = HEADER_LEN + PDV_HEADER;

/// PDU header and PDV header of a P-DATA-TF PDU holding one PDV of `value_len` bytes
/// (PS3.8 9.3.5, message control header per Annex E.2: bit 0 command, bit 1 last).
pub fn pdata_header(
    value_len: usize,
    context_id: u8,
    is_command: bool,
    is_last: bool,
) -> [u8; PDATA_OVERHEAD] {
    let pdv_len = (value_len + 2) as u32;
    let pdu_len = pdv_len + 4;
    let mut h = [0u8; PDATA_OVERHEAD];
    h[0] = kind::P_DATA_TF;
    h[2..6].copy_from_slice(&pdu_len.to_be_bytes());
    h[6..10].copy_from_slice(&pdv_len.to_be_bytes());
    h[10] = context_id;
    h[11] = u8::from(is_command) | (u8::from(is_last) << 1);
    h
}

impl Pdu<'_> {
    /// Append the encoded PDU to `out`. Fails only for values that do not fit their field
    /// (an AE title over 16 characters, an item over 65,535 bytes).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        let start = out.len();
        out.extend_from_slice(&[self.pdu_type(), 0, 0, 0, 0, 0]);
        match self {
            Pdu::AssociateRq(rq) => {
                fixed_part(out, rq.protocol_version, &rq.called_ae, &rq.calling_ae)?;
                item(out, 0x10, rq.application_context.as_bytes())?;
                for pc in &rq.contexts {
                    proposed_context(out, pc)?;
                }
                user_info(out, &rq.user)?;
            }
            Pdu::AssociateAc(ac) => {
                fixed_part(out, ac.protocol_version, &ac.called_ae, &ac.calling_ae)?;
                item(out, 0x10, ac.application_context.as_bytes())?;
                for pc in &ac.contexts {
                    let mut v = vec![pc.id, 0, pc.result as u8, 0];
                    item(&mut v, 0x40, pc.transfer_syntax.as_bytes())?;
                    item(out, 0x21, &v)?;
                }
                user_info(out, &ac.user)?;
            }
            Pdu::AssociateRj(rj) => out.extend_from_slice(&[0, rj.result, rj.source, rj.reason]),
            Pdu::PData(pdvs) => {
                for pdv in pdvs {
                    let len = u32::try_from(pdv.data.len() + 2)
                        .map_err(|_| Error::Usage("PDV over 4 GiB".into()))?;
                    out.extend_from_slice(&len.to_be_bytes());
                    out.push(pdv.context_id);
                    out.push(u8::from(pdv.is_command) | (u8::from(pdv.is_last) << 1));
                    out.extend_from_slice(pdv.data);
                }
            }
            Pdu::ReleaseRq | Pdu::ReleaseRp => out.extend_from_slice(&[0; 4]),
            Pdu::Abort(a) => out.extend_from_slice(&[0, 0, a.source, a.reason]),
        }
        let length = u32::try_from(out.len() - start - HEADER_LEN)
            .map_err(|_| Error::Usage("PDU over 4 GiB".into()))?;
        out[start + 2..start + 6].copy_from_slice(&length.to_be_bytes());
        Ok(())
    }

    /// The encoded PDU as a new vector.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }
}

/// An AE title field: 16 bytes, space padded (PS3.8 9.3.2). It must be 1 to 16 characters
/// of the ISO 646 basic G0 set without backslash or controls (PS3.5 Table 6.2-1, AE).
fn ae_title(out: &mut Vec<u8>, ae: &str) -> Result<()> {
    let ae = ae.trim_matches(' ');
    if ae.is_empty()
        || ae.len() > 16
        || !ae.bytes().all(|b| (0x20..0x7F).contains(&b) && b != b'\\')
    {
        return Err(Error::Usage(format!(
            "AE title {ae:?} is not 1 to 16 printable ASCII characters (PS3.5 6.2, AE)"
        )));
    }
    let mut field = [b' '; 16];
    field[..ae.len()].copy_from_slice(ae.as_bytes());
    out.extend_from_slice(&field);
    Ok(())
}

fn fixed_part(out: &mut Vec<u8>, version: u16, called: &str, calling: &str) -> Result<()> {
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    ae_title(out, called)?;
    ae_title(out, calling)?;
    out.extend_from_slice(&[0; 32]);
    Ok(())
}

/// Item header (type, reserved, 2-byte length) and value.
fn item(out: &mut Vec<u8>, item_type: u8, value: &[u8]) -> Result<()> {
    let len = u16::try_from(value.len()).map_err(|_| {
        Error::Usage(format!(
            "item 0x{item_type:02X} of {} bytes exceeds 65,535",
            value.len()
        ))
    })?;
    out.extend_from_slice(&[item_type, 0]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
    Ok(())
}

fn proposed_context(out: &mut Vec<u8>, pc: &ProposedContext) -> Result<()> {
    let mut v = vec![pc.id, 0, 0, 0];
    item(&mut v, 0x30, pc.abstract_syntax.as_bytes())?;
    for ts in &pc.transfer_syntaxes {
        item(&mut v, 0x40, ts.as_bytes())?;
    }
    item(out, 0x20, &v)
}

fn uid_prefixed(v: &mut Vec<u8>, uid: &str) -> Result<()> {
    let len = u16::try_from(uid.len()).map_err(|_| Error::Usage("UID too long".into()))?;
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(uid.as_bytes());
    Ok(())
}

fn user_info(out: &mut Vec<u8>, user: &UserInfo) -> Result<()> {
    let mut v = Vec::new();
    if let Some(max) = user.max_length {
        item(&mut v, 0x51, &max.to_be_bytes())?;
    }
    item(&mut v, 0x52, user.implementation_class_uid.as_bytes())?;
    if let Some((invoked, performed)) = user.async_ops {
        let mut w = invoked.to_be_bytes().to_vec();
        w.extend_from_slice(&performed.to_be_bytes());
        item(&mut v, 0x53, &w)?;
    }
    for role in &user.roles {
        let mut w = Vec::new();
        uid_prefixed(&mut w, &role.sop_class_uid)?;
        w.push(u8::from(role.scu));
        w.push(u8::from(role.scp));
        item(&mut v, 0x54, &w)?;
    }
    if let Some(name) = &user.implementation_version_name {
        item(&mut v, 0x55, name.as_bytes())?;
    }
    for ext in &user.extended {
        let mut w = Vec::new();
        uid_prefixed(&mut w, &ext.sop_class_uid)?;
        w.extend_from_slice(&ext.info);
        item(&mut v, 0x56, &w)?;
    }
    for raw in &user.other {
        item(&mut v, raw.item_type, &raw.data)?;
    }
    item(out, 0x50, &v)
}
