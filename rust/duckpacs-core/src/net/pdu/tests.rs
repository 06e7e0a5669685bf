//! PDUs from hand-written bytes, field by field (PS3.8 9.3), round trips, and the errors
//! of bad input.

use super::*;

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn limits() -> Limits {
    Limits::new(16_384)
}

/// A-ASSOCIATE-RQ from STORESCU to ANY-SCP proposing Verification (context 1) and CT
/// storage with role selection, with every user information sub-item we know plus a user
/// identity item (0x58) that must survive untouched.
fn associate_rq_bytes() -> Vec<u8> {
    let body = cat(&[
        &[0x00, 0x01],                // protocol version 1
        &[0x00, 0x00],                // reserved
        b"ANY-SCP         ",          // called AE title, 16 bytes space padded
        b"STORESCU        ",          // calling AE title
        &[0; 32],                     // reserved
        &[0x10, 0x00, 0x00, 0x15],    // application context item, length 21
        b"1.2.840.10008.3.1.1.1",     //   DICOM application context name
        &[0x20, 0x00, 0x00, 0x2E],    // presentation context item, length 46
        &[0x01, 0x00, 0x00, 0x00],    //   context ID 1, 3 reserved bytes
        &[0x30, 0x00, 0x00, 0x11],    //   abstract syntax sub-item, length 17
        b"1.2.840.10008.1.1",         //     Verification SOP class
        &[0x40, 0x00, 0x00, 0x11],    //   transfer syntax sub-item, length 17
        b"1.2.840.10008.1.2",         //     Implicit VR Little Endian
        &[0x20, 0x00, 0x00, 0x4D],    // presentation context item, length 77
        &[0x03, 0x00, 0x00, 0x00],    //   context ID 3
        &[0x30, 0x00, 0x00, 0x19],    //   abstract syntax, length 25
        b"1.2.840.10008.5.1.4.1.1.2", //     CT Image Storage
        &[0x40, 0x00, 0x00, 0x13],    //   transfer syntax, length 19
        b"1.2.840.10008.1.2.1",       //     Explicit VR Little Endian
        &[0x40, 0x00, 0x00, 0x11],    //   transfer syntax, length 17
        b"1.2.840.10008.1.2",         //     Implicit VR Little Endian
        &[0x50, 0x00, 0x00, 0x7D],    // user information item, length 125
        &[0x51, 0x00, 0x00, 0x04],    //   maximum length sub-item, length 4
        &[0x00, 0x00, 0x40, 0x00],    //     16384
        &[0x52, 0x00, 0x00, 0x0B],    //   implementation class UID, length 11
        b"1.2.3.4.5.6",               //     (made up)
        &[0x53, 0x00, 0x00, 0x04],    //   asynchronous operations window, length 4
        &[0x00, 0x01, 0x00, 0x01],    //     invoked 1, performed 1
        &[0x54, 0x00, 0x00, 0x1D],    //   SCP/SCU role selection, length 29
        &[0x00, 0x19],                //     UID length 25
        b"1.2.840.10008.5.1.4.1.1.2", //     CT Image Storage
        &[0x00, 0x01],                //     SCU role no, SCP role yes
        &[0x55, 0x00, 0x00, 0x0A],    //   implementation version name, length 10
        b"OFFIS_DCMT",                //
        &[0x56, 0x00, 0x00, 0x1D],    //   SOP class extended negotiation, length 29
        &[0x00, 0x19],                //     UID length 25
        b"1.2.840.10008.5.1.4.1.1.2", //     CT Image Storage
        &[0x01, 0x00],                //     service-class application information
        &[0x58, 0x00, 0x00, 0x0A],    //   user identity negotiation, length 10
        &[0x01, 0x00],                //     type 1 (username), no response requested
        &[0x00, 0x04],                //     primary field length 4
        b"jdoe",                      //     username
        &[0x00, 0x00],                //     secondary field length 0
    ]);
    let mut pdu = vec![0x01, 0x00]; // PDU type A-ASSOCIATE-RQ, reserved
    pdu.extend_from_slice(&(body.len() as u32).to_be_bytes()); // PDU length
    pdu.extend_from_slice(&body);
    pdu
}

#[test]
fn associate_rq_decodes_field_by_field() {
    let bytes = associate_rq_bytes();
    let (pdu, used) = decode(&bytes, limits()).unwrap();
    assert_eq!(used, bytes.len());
    let Pdu::AssociateRq(rq) = pdu else {
        panic!("{pdu:?}")
    };
    assert_eq!(rq.protocol_version, 1);
    assert_eq!(rq.called_ae, "ANY-SCP");
    assert_eq!(rq.calling_ae, "STORESCU");
    assert_eq!(rq.application_context, APPLICATION_CONTEXT);
    assert_eq!(rq.contexts.len(), 2);
    assert_eq!(rq.contexts[0].id, 1);
    assert_eq!(rq.contexts[0].abstract_syntax, "1.2.840.10008.1.1");
    assert_eq!(rq.contexts[0].transfer_syntaxes, vec![IMPLICIT_VR_LE]);
    assert_eq!(rq.contexts[1].id, 3);
    assert_eq!(
        rq.contexts[1].transfer_syntaxes,
        vec!["1.2.840.10008.1.2.1", IMPLICIT_VR_LE]
    );
    let u = &rq.user;
    assert_eq!(u.max_length, Some(16384));
    assert_eq!(u.implementation_class_uid, "1.2.3.4.5.6");
    assert_eq!(u.implementation_version_name.as_deref(), Some("OFFIS_DCMT"));
    assert_eq!(u.async_ops, Some((1, 1)));
    assert_eq!(
        u.roles,
        vec![RoleSelection {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            scu: false,
            scp: true
        }]
    );
    assert_eq!(u.extended[0].info, vec![1, 0]);
    assert_eq!(u.other.len(), 1);
    assert_eq!(u.other[0].item_type, 0x58);
    assert_eq!(&u.other[0].data[4..8], b"jdoe");
}

#[test]
fn associate_rq_round_trips_byte_for_byte() {
    let bytes = associate_rq_bytes();
    let (pdu, _) = decode(&bytes, limits()).unwrap();
    assert_eq!(pdu.to_bytes().unwrap(), bytes);
}

/// A-ASSOCIATE-AC accepting context 1, refusing context 3 (abstract syntax not supported).
fn associate_ac_bytes() -> Vec<u8> {
    let body = cat(&[
        &[0x00, 0x01, 0x00, 0x00], // protocol version 1, reserved
        b"ANY-SCP         ",       // called AE (echoed, not tested)
        b"STORESCU        ",       // calling AE (echoed)
        &[0; 32],                  // reserved
        &[0x10, 0x00, 0x00, 0x15], // application context, length 21
        b"1.2.840.10008.3.1.1.1",  //
        &[0x21, 0x00, 0x00, 0x19], // presentation context (answer), length 25
        &[0x01, 0x00, 0x00, 0x00], //   ID 1, reserved, result 0 acceptance, reserved
        &[0x40, 0x00, 0x00, 0x11], //   transfer syntax, length 17
        b"1.2.840.10008.1.2",      //     Implicit VR Little Endian
        &[0x21, 0x00, 0x00, 0x19], // presentation context (answer), length 25
        &[0x03, 0x00, 0x03, 0x00], //   ID 3, result 3 abstract syntax not supported
        &[0x40, 0x00, 0x00, 0x11], //   transfer syntax (not significant)
        b"1.2.840.10008.1.2",      //
        &[0x50, 0x00, 0x00, 0x1F], // user information, length 31
        &[0x51, 0x00, 0x00, 0x04], //   maximum length
        &[0x00, 0x04, 0x00, 0x00], //     262144
        &[0x52, 0x00, 0x00, 0x07], //   implementation class UID, length 7
        b"1.2.3.4",                //
        &[0x55, 0x00, 0x00, 0x08], //   implementation version name, length 8
        b"DUCKPACS",               //
    ]);
    let mut pdu = vec![0x02, 0x00];
    pdu.extend_from_slice(&(body.len() as u32).to_be_bytes());
    pdu.extend_from_slice(&body);
    pdu
}

#[test]
fn associate_ac_decodes_and_round_trips() {
    let bytes = associate_ac_bytes();
    let (pdu, _) = decode(&bytes, limits()).unwrap();
    let Pdu::AssociateAc(ac) = &pdu else {
        panic!("{pdu:?}")
    };
    assert_eq!(ac.contexts.len(), 2);
    assert_eq!(ac.contexts[0].result, ContextResult::Acceptance);
    assert_eq!(ac.contexts[0].transfer_syntax, IMPLICIT_VR_LE);
    assert_eq!(ac.contexts[1].id, 3);
    assert_eq!(
        ac.contexts[1].result,
        ContextResult::AbstractSyntaxNotSupported
    );
    assert_eq!(ac.user.max_length, Some(262_144));
    assert_eq!(
        ac.user.implementation_version_name.as_deref(),
        Some("DUCKPACS")
    );
    assert_eq!(pdu.to_bytes().unwrap(), bytes);
}

#[test]
fn fixed_size_pdus_decode() {
    // A-ASSOCIATE-RJ: type 3, reserved, length 4; reserved, result 1 permanent,
    // source 1 service-user, reason 7 called AE title not recognized.
    let rj = [0x03, 0x00, 0, 0, 0, 4, 0x00, 0x01, 0x01, 0x07];
    let (pdu, _) = decode(&rj, limits()).unwrap();
    assert_eq!(pdu, Pdu::AssociateRj(Rejection::called_ae_not_recognized()));
    assert_eq!(pdu.to_bytes().unwrap(), rj);
    // A-RELEASE-RQ / RP: type 5 / 6, length 4, 4 reserved bytes.
    let rq = [0x05, 0x00, 0, 0, 0, 4, 0, 0, 0, 0];
    assert_eq!(decode(&rq, limits()).unwrap().0, Pdu::ReleaseRq);
    assert_eq!(Pdu::ReleaseRq.to_bytes().unwrap(), rq);
    let rp = [0x06, 0x00, 0, 0, 0, 4, 0, 0, 0, 0];
    assert_eq!(decode(&rp, limits()).unwrap().0, Pdu::ReleaseRp);
    // A-ABORT: type 7, length 4; reserved, reserved, source 2 provider, reason 6 invalid
    // PDU parameter value.
    let ab = [0x07, 0x00, 0, 0, 0, 4, 0x00, 0x00, 0x02, 0x06];
    let (pdu, _) = decode(&ab, limits()).unwrap();
    assert_eq!(pdu, Pdu::Abort(Abort::provider(Abort::INVALID_PARAMETER)));
    assert_eq!(pdu.to_bytes().unwrap(), ab);
}

#[test]
fn p_data_with_two_pdvs() {
    let bytes = [
        0x04, 0x00, 0, 0, 0, 0x10, // P-DATA-TF, length 16
        0, 0, 0, 0x04, // PDV item length 4
        0x01, 0x03, // context 1, control: command (bit 0), last (bit 1)
        0xAA, 0xBB, // command bytes
        0, 0, 0, 0x04, // PDV item length 4
        0x01, 0x00, // context 1, control: dataset, not last
        0xCC, 0xDD, // dataset bytes
    ];
    let (pdu, _) = decode(&bytes, limits()).unwrap();
    let Pdu::PData(pdvs) = &pdu else {
        panic!("{pdu:?}")
    };
    assert_eq!(
        pdvs[0],
        Pdv {
            context_id: 1,
            is_command: true,
            is_last: true,
            data: &[0xAA, 0xBB]
        }
    );
    assert!(!pdvs[1].is_command && !pdvs[1].is_last);
    assert_eq!(pdvs[1].data, &[0xCC, 0xDD]);
    assert_eq!(pdu.to_bytes().unwrap(), bytes);
    // The hot-path header for one PDV matches the general encoder.
    let one = Pdu::PData(vec![pdvs[0]]).to_bytes().unwrap();
    assert_eq!(one[..PDATA_OVERHEAD], pdata_header(2, 1, true, true));
}

#[test]
fn header_checks_type_and_length_before_allocating() {
    let l = limits();
    let e = Header::parse([0x09, 0, 0, 0, 0, 4], l).unwrap_err();
    assert!(matches!(e, Error::UnknownPduType { pdu_type: 9 }), "{e}");
    assert_eq!(e.abort(), Some(Abort::provider(Abort::UNRECOGNIZED_PDU)));
    let e = Header::parse([0x04, 0, 0xFF, 0xFF, 0xFF, 0xFF], l).unwrap_err();
    assert!(
        matches!(
            e,
            Error::TooLong {
                length: u32::MAX,
                limit: 16_384,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.abort(), Some(Abort::provider(Abort::INVALID_PARAMETER)));
    let e = Header::parse([0x01, 0, 0x00, 0x10, 0x00, 0x01], l).unwrap_err();
    assert!(matches!(e, Error::TooLong { .. }), "{e}");
    let e = Header::parse([0x05, 0, 0, 0, 0, 5], l).unwrap_err();
    assert!(e.to_string().contains("A-RELEASE-RQ"), "{e}");
    // A maximum of 0 means "no limit", still capped.
    assert_eq!(Limits::new(0).max_pdata, MAX_PDATA_CEILING);
}

#[test]
fn malformed_items_say_where() {
    // Truncated body: the PDU announces more than there is.
    let mut rq = associate_rq_bytes();
    rq.truncate(rq.len() - 10);
    let e = decode(&rq, limits()).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");

    // An item length running past the end of the PDU: the application context item (at
    // byte 74) claims 0x7FFF bytes.
    let mut rq = associate_rq_bytes();
    rq[76] = 0x7F;
    rq[77] = 0xFF;
    let e = decode(&rq, limits()).unwrap_err();
    let Error::Malformed {
        pdu, item, offset, ..
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!((*pdu, *item, *offset), ("A-ASSOCIATE-RQ", Some(0x10), 78));

    // No presentation context at all: bytes 0..74 plus the application context item.
    let mut body = associate_rq_bytes()[6..74 + 25].to_vec();
    let mut short = vec![0x01, 0];
    short.extend_from_slice(&(body.len() as u32).to_be_bytes());
    short.append(&mut body);
    let e = decode(&short, limits()).unwrap_err();
    assert!(e.to_string().contains("no presentation context"), "{e}");

    // The same context ID twice.
    let mut rq = associate_rq_bytes();
    let second = 74 + 25 + 50; // after the application context and context 1
    assert_eq!(rq[second], 0x20);
    rq[second + 4] = 0x01;
    let e = decode(&rq, limits()).unwrap_err();
    assert!(e.to_string().contains("proposed twice"), "{e}");
}

#[test]
fn bad_pdvs_are_rejected() {
    // PDV item length 1 (needs at least context ID and control header).
    let b = [0x04, 0, 0, 0, 0, 6, 0, 0, 0, 1, 1, 3];
    let e = decode(&b, limits()).unwrap_err();
    assert!(e.to_string().contains("at least 2"), "{e}");
    // PDV item length past the PDU's end.
    let b = [0x04, 0, 0, 0, 0, 6, 0, 0, 0, 9, 1, 3];
    let e = decode(&b, limits()).unwrap_err();
    assert!(e.to_string().contains("past the PDU's end"), "{e}");
    // Empty P-DATA-TF.
    let b = [0x04, 0, 0, 0, 0, 0];
    assert!(decode(&b, limits()).is_err());
}

#[test]
fn encoding_refuses_bad_ae_titles() {
    let (Pdu::AssociateRq(mut rq), _) = decode(&associate_rq_bytes(), limits()).unwrap() else {
        unreachable!()
    };
    rq.called_ae = "THIS-IS-MORE-THAN-16".into();
    assert!(Pdu::AssociateRq(rq.clone()).to_bytes().is_err());
    rq.called_ae = "".into();
    assert!(Pdu::AssociateRq(rq.clone()).to_bytes().is_err());
    rq.called_ae = "BACK\\SLASH".into();
    assert!(Pdu::AssociateRq(rq).to_bytes().is_err());
}

#[test]
fn rejection_and_abort_explain_themselves() {
    assert_eq!(
        Rejection::local_limit_exceeded().to_string(),
        "transient, service-provider (presentation), reason 2: local limit exceeded (PS3.8 9.3.4)"
    );
    assert!(Abort::provider(2).to_string().contains("unexpected PDU"));
}
