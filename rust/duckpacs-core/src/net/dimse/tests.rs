//! Command sets from hand-written bytes (PS3.7 E.1-1, Implicit VR Little Endian), the
//! constructors and responses of every C- and N- message, and bad command sets.

use super::command::{DATASET_PRESENT, NO_DATASET};
use super::*;
use crate::net::error::Error;

/// One element: group, element (each little endian), 4-byte length, value.
fn el(tag: u32, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
    v.extend_from_slice(&(tag as u16).to_le_bytes());
    v.extend_from_slice(&(value.len() as u32).to_le_bytes());
    v.extend_from_slice(value);
    v
}

fn us(tag: u32, v: u16) -> Vec<u8> {
    el(tag, &v.to_le_bytes())
}

/// The command group: (0000,0000) UL with the length of what follows, then the elements.
fn group(elements: &[Vec<u8>]) -> Vec<u8> {
    let rest = elements.concat();
    let mut v = el(0, &(rest.len() as u32).to_le_bytes());
    v.extend_from_slice(&rest);
    v
}

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
const STUDY_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
const STUDY_GET: &str = "1.2.840.10008.5.1.4.1.2.2.3";
const STUDY_MOVE: &str = "1.2.840.10008.5.1.4.1.2.2.2";
const COMMITMENT: &str = "1.2.840.10008.1.20.1";
const COMMITMENT_INSTANCE: &str = "1.2.840.10008.1.20.1.1";

#[test]
fn c_echo_rq_literal_bytes() {
    #[rustfmt::skip]
    let bytes: &[u8] = &[
        0x00, 0x00, 0x00, 0x00, 4, 0, 0, 0, 0x38, 0, 0, 0, // (0000,0000) UL 4: 56 bytes follow
        0x00, 0x00, 0x02, 0x00, 18, 0, 0, 0,               // (0000,0002) UI, length 18
        b'1', b'.', b'2', b'.', b'8', b'4', b'0', b'.', b'1', b'0', b'0', b'0', b'8', b'.',
        b'1', b'.', b'1', 0x00,                            //   Verification + NUL pad
        0x00, 0x00, 0x00, 0x01, 2, 0, 0, 0, 0x30, 0x00,    // (0000,0100) US C-ECHO-RQ
        0x00, 0x00, 0x10, 0x01, 2, 0, 0, 0, 0x07, 0x00,    // (0000,0110) US message ID 7
        0x00, 0x00, 0x00, 0x08, 2, 0, 0, 0, 0x01, 0x01,    // (0000,0800) US 0x0101 no dataset
    ];
    let c = Command::decode(bytes).unwrap();
    assert_eq!(c.field, CommandField::C_ECHO_RQ);
    assert_eq!(c.message_id, Some(7));
    assert_eq!(
        c.affected_sop_class_uid.as_deref(),
        Some(VERIFICATION_SOP_CLASS)
    );
    assert!(!c.has_dataset);
    assert_eq!(c, Command::c_echo_rq(7));
    assert_eq!(c.to_bytes().unwrap(), bytes);
}

#[test]
fn c_echo_rsp() {
    let bytes = group(&[
        el(0x0000_0002, b"1.2.840.10008.1.1\0"), // affected SOP class
        us(0x0000_0100, 0x8030),                 // C-ECHO-RSP
        us(0x0000_0120, 7),                      // message ID being responded to
        us(0x0000_0800, NO_DATASET),             // no dataset
        us(0x0000_0900, 0x0000),                 // status success
    ]);
    let c = Command::decode(&bytes).unwrap();
    assert_eq!(c.status, Some(Status::SUCCESS));
    assert_eq!(c, Command::c_echo_rq(7).response(Status::SUCCESS));
    assert_eq!(c.to_bytes().unwrap(), bytes);
}

#[test]
fn c_store_rq_and_rsp() {
    let rq_bytes = group(&[
        el(0x0000_0002, b"1.2.840.10008.5.1.4.1.1.2\0"), // affected SOP class (CT), padded
        us(0x0000_0100, 0x0001),                         // C-STORE-RQ
        us(0x0000_0110, 3),                              // message ID
        us(0x0000_0700, priority::MEDIUM),               // priority
        us(0x0000_0800, DATASET_PRESENT),                // a dataset follows
        el(0x0000_1000, b"1.2.3.4"),                     // affected SOP instance (odd: +NUL)
        el(0x0000_1030, b"MOVER "),                      // move originator AE (space pad)
        us(0x0000_1031, 99),                             // move originator message ID
    ]);
    // The odd-length instance UID and the space-padded AE title decode without padding.
    let rq = {
        let mut c = Command::decode(&rq_bytes).unwrap();
        assert_eq!(c.affected_sop_instance_uid.as_deref(), Some("1.2.3.4"));
        assert_eq!(c.move_originator_ae_title.as_deref(), Some("MOVER"));
        assert_eq!(c.move_originator_message_id, Some(99));
        assert!(c.has_dataset);
        c.move_originator_ae_title = None;
        c.move_originator_message_id = None;
        c
    };
    assert_eq!(rq, Command::c_store_rq(3, CT, "1.2.3.4", priority::MEDIUM));

    let rsp = rq
        .response(Status::CANNOT_UNDERSTAND)
        .with_error_comment("bad dataset");
    let expected = group(&[
        el(0x0000_0002, b"1.2.840.10008.5.1.4.1.1.2\0"),
        us(0x0000_0100, 0x8001),          // C-STORE-RSP
        us(0x0000_0120, 3),               // responding to 3
        us(0x0000_0800, NO_DATASET),      //
        us(0x0000_0900, 0xC000),          // cannot understand
        el(0x0000_0902, b"bad dataset "), // error comment, space padded
        el(0x0000_1000, b"1.2.3.4\0"),    // affected SOP instance, NUL padded
    ]);
    assert_eq!(rsp.to_bytes().unwrap(), expected);
    assert_eq!(Command::decode(&expected).unwrap(), rsp);
}

#[test]
fn c_find_rq_and_pending_rsp() {
    let rq = Command::c_find_rq(11, STUDY_FIND, priority::LOW);
    let expected = group(&[
        el(0x0000_0002, b"1.2.840.10008.5.1.4.1.2.2.1\0"), // Study Root FIND
        us(0x0000_0100, 0x0020),                           // C-FIND-RQ
        us(0x0000_0110, 11),                               // message ID
        us(0x0000_0700, priority::LOW),                    // priority low
        us(0x0000_0800, DATASET_PRESENT),                  // identifier follows
    ]);
    assert_eq!(rq.to_bytes().unwrap(), expected);
    assert_eq!(Command::decode(&expected).unwrap(), rq);
    let mut pending = rq.response(Status::PENDING);
    pending.has_dataset = true;
    let bytes = pending.to_bytes().unwrap();
    let back = Command::decode(&bytes).unwrap();
    assert_eq!(back.field, CommandField::C_FIND_RSP);
    assert!(back.has_dataset && back.status_or_success().is_pending());
}

#[test]
fn c_get_and_c_move_with_sub_operations() {
    let get = Command::c_get_rq(5, STUDY_GET, priority::MEDIUM);
    assert_eq!(Command::decode(&get.to_bytes().unwrap()).unwrap(), get);
    let mv = Command::c_move_rq(6, STUDY_MOVE, priority::HIGH, "STORESCP");
    let expected = group(&[
        el(0x0000_0002, b"1.2.840.10008.5.1.4.1.2.2.2\0"),
        us(0x0000_0100, 0x0021),          // C-MOVE-RQ
        us(0x0000_0110, 6),               //
        el(0x0000_0600, b"STORESCP"),     // move destination (even: no pad)
        us(0x0000_0700, priority::HIGH),  //
        us(0x0000_0800, DATASET_PRESENT), //
    ]);
    assert_eq!(mv.to_bytes().unwrap(), expected);
    let rsp = mv
        .response(Status::WARNING_SUB_OPERATIONS_FAILED)
        .with_sub_operations(SubOperations {
            remaining: None,
            completed: 10,
            failed: 2,
            warning: 1,
        });
    let expected = group(&[
        el(0x0000_0002, b"1.2.840.10008.5.1.4.1.2.2.2\0"),
        us(0x0000_0100, 0x8021), // C-MOVE-RSP
        us(0x0000_0120, 6),      //
        us(0x0000_0800, NO_DATASET),
        us(0x0000_0900, 0xB000), // sub-operations complete, one or more failures
        us(0x0000_1021, 10),     // completed
        us(0x0000_1022, 2),      // failed
        us(0x0000_1023, 1),      // warning
    ]);
    assert_eq!(rsp.to_bytes().unwrap(), expected);
    let back = Command::decode(&expected).unwrap();
    assert_eq!((back.remaining, back.completed), (None, Some(10)));
    let pending = get
        .response(Status::PENDING)
        .with_sub_operations(SubOperations {
            remaining: Some(3),
            ..Default::default()
        });
    let back = Command::decode(&pending.to_bytes().unwrap()).unwrap();
    assert_eq!(back.remaining, Some(3));
}

#[test]
fn c_cancel_rq() {
    let expected = group(&[
        us(0x0000_0100, 0x0FFF),     // C-CANCEL-RQ
        us(0x0000_0120, 11),         // message ID being cancelled
        us(0x0000_0800, NO_DATASET), //
    ]);
    let c = Command::decode(&expected).unwrap();
    assert_eq!(c, Command::c_cancel_rq(11));
    assert_eq!(c.subject_message_id(), Some(11));
    assert_eq!(c.to_bytes().unwrap(), expected);
}

#[test]
fn n_action_and_n_event_report() {
    let action = Command::n_action_rq(2, COMMITMENT, COMMITMENT_INSTANCE, 1);
    let mut with_data = action.clone();
    with_data.has_dataset = true;
    let expected = group(&[
        el(0x0000_0003, b"1.2.840.10008.1.20.1"), // requested SOP class
        us(0x0000_0100, 0x0130),                  // N-ACTION-RQ
        us(0x0000_0110, 2),                       // message ID
        us(0x0000_0800, DATASET_PRESENT),         // action information follows
        el(0x0000_1001, b"1.2.840.10008.1.20.1.1"), // requested SOP instance
        us(0x0000_1008, 1),                       // action type 1 (request commitment)
    ]);
    let bytes = with_data.to_bytes().unwrap();
    assert_eq!(bytes, expected);
    let tags: Vec<u16> = elements(&bytes).into_iter().map(|(t, _)| t).collect();
    assert!(
        tags.windows(2).all(|w| w[0] < w[1]),
        "ascending tags: {tags:?}"
    );
    assert_eq!(Command::decode(&bytes).unwrap(), with_data);

    let rsp = action.response(Status::SUCCESS);
    assert_eq!(rsp.field, CommandField::N_ACTION_RSP);
    assert_eq!(rsp.affected_sop_class_uid.as_deref(), Some(COMMITMENT));
    assert_eq!(
        rsp.affected_sop_instance_uid.as_deref(),
        Some(COMMITMENT_INSTANCE)
    );
    assert_eq!(rsp.action_type_id, Some(1));

    let event = Command::n_event_report_rq(4, COMMITMENT, COMMITMENT_INSTANCE, 2);
    let expected = group(&[
        el(0x0000_0002, b"1.2.840.10008.1.20.1"), // affected SOP class
        us(0x0000_0100, 0x0100),                  // N-EVENT-REPORT-RQ
        us(0x0000_0110, 4),                       //
        us(0x0000_0800, NO_DATASET),              //
        el(0x0000_1000, b"1.2.840.10008.1.20.1.1"), // affected SOP instance
        us(0x0000_1002, 2),                       // event type 2 (failures exist)
    ]);
    assert_eq!(event.to_bytes().unwrap(), expected);
    let rsp = Command::decode(&expected)
        .unwrap()
        .response(Status::SUCCESS);
    assert_eq!(rsp.event_type_id, Some(2));
    assert_eq!(Command::decode(&rsp.to_bytes().unwrap()).unwrap(), rsp);
}

#[test]
fn n_create_n_set_n_get_n_delete() {
    let create = Command::n_create_rq(8, "1.2.840.10008.3.1.2.3.3", Some("1.2.3"));
    let back = Command::decode(&create.to_bytes().unwrap()).unwrap();
    assert_eq!(back, create);
    let rsp = create.response(Status::SUCCESS);
    assert_eq!(rsp.affected_sop_instance_uid.as_deref(), Some("1.2.3"));
    let set = Command::n_set_rq(9, "1.2.840.10008.3.1.2.3.3", "1.2.3");
    assert!(set.has_dataset);
    let back = Command::decode(&set.to_bytes().unwrap()).unwrap();
    assert_eq!(back.requested_sop_instance_uid.as_deref(), Some("1.2.3"));
    let rsp = set.response(Status::SUCCESS);
    assert_eq!(rsp.field, CommandField::N_SET_RSP);
    assert_eq!(rsp.affected_sop_instance_uid.as_deref(), Some("1.2.3"));
    let mut get = Command::n_get_rq(10, "1.2.840.10008.3.1.2.3.3", "1.2.3");
    get.attribute_identifiers = vec![0x0010_0010, 0x0008_0018];
    let back = Command::decode(&get.to_bytes().unwrap()).unwrap();
    assert_eq!(back.attribute_identifiers, vec![0x0010_0010, 0x0008_0018]);
    let del = Command::n_delete_rq(12, "1.2.840.10008.3.1.2.3.3", "1.2.3");
    assert_eq!(Command::decode(&del.to_bytes().unwrap()).unwrap(), del);
}

#[test]
fn offending_elements_and_error_id() {
    let mut rsp = Command::c_store_rq(1, CT, "1.2", priority::MEDIUM).response(Status(0x0106));
    rsp.offending_elements = vec![0x0010_0020];
    rsp.error_id = Some(0x1234);
    let bytes = rsp.to_bytes().unwrap();
    // (0000,0901) AT: group 0010, element 0020, each little endian.
    let at = el(0x0000_0901, &[0x10, 0x00, 0x20, 0x00]);
    assert!(bytes.windows(at.len()).any(|w| w == at.as_slice()));
    assert_eq!(Command::decode(&bytes).unwrap(), rsp);
}

/// (element number, value length) of each element.
fn elements(bytes: &[u8]) -> Vec<(u16, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 8 <= bytes.len() {
        let e = u16::from_le_bytes([bytes[pos + 2], bytes[pos + 3]]);
        let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
        out.push((e, len));
        pos += 8 + len;
    }
    out
}

fn command_error(bytes: &[u8]) -> (usize, Option<u32>, String) {
    match Command::decode(bytes) {
        Err(Error::Command {
            offset,
            tag,
            reason,
        }) => (offset, tag, reason),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_command_sets_say_where() {
    let good = Command::c_echo_rq(1).to_bytes().unwrap();
    // A wrong group length, or none, is read past (peers get it wrong; the elements'
    // lengths delimit them): the command decodes the same.
    let mut b = good.clone();
    b[8] += 1;
    assert_eq!(Command::decode(&b).unwrap(), Command::c_echo_rq(1));
    assert_eq!(Command::decode(&good[12..]).unwrap(), Command::c_echo_rq(1));
    // Truncated in the middle of an element.
    let mut b = good.clone();
    b.truncate(b.len() - 1);
    let n = b.len() as u32 - 12;
    b[8..12].copy_from_slice(&n.to_le_bytes());
    let (_, tag, reason) = command_error(&b);
    assert_eq!(tag, Some(0x0000_0800));
    assert!(reason.contains("runs past"), "{reason}");
    // An element of another group is skipped (Orthanc 1.10 sends one); the rest decodes.
    let mut b = good.clone();
    b.extend_from_slice(&us(0x0008_0016, 1));
    assert_eq!(Command::decode(&b).unwrap(), Command::c_echo_rq(1));
    // The same element twice.
    let b = group(&[us(0x0000_0100, 0x30), us(0x0000_0100, 0x30)]);
    assert!(command_error(&b).2.contains("twice"));
    // A US of 4 bytes.
    let b = group(&[el(0x0000_0100, &[0x30, 0, 0, 0])]);
    assert!(command_error(&b).2.contains("expected 2"));
    // No Command Field / no Command Data Set Type.
    let b = group(&[us(0x0000_0110, 1), us(0x0000_0800, NO_DATASET)]);
    assert_eq!(command_error(&b).1, Some(0x0000_0100));
    let b = group(&[us(0x0000_0100, 0x30), us(0x0000_0110, 1)]);
    assert_eq!(command_error(&b).1, Some(0x0000_0800));
    // A C-STORE-RQ without its instance UID.
    let b = group(&[
        el(0x0000_0002, b"1.2\0"),
        us(0x0000_0100, 0x0001),
        us(0x0000_0110, 1),
        us(0x0000_0700, 0),
        us(0x0000_0800, DATASET_PRESENT),
    ]);
    assert_eq!(command_error(&b).1, Some(0x0000_1000));
    // A C-FIND-RQ that announces no identifier.
    let b = group(&[
        el(0x0000_0002, b"1.2\0"),
        us(0x0000_0100, 0x0020),
        us(0x0000_0110, 1),
        us(0x0000_0700, 0),
        us(0x0000_0800, NO_DATASET),
    ]);
    assert_eq!(command_error(&b).1, Some(0x0000_0800));
    // More than 64 KiB.
    let b = vec![0u8; MAX_COMMAND_LEN + 1];
    assert!(command_error(&b).2.contains("more than"));
    // Empty.
    assert!(command_error(&[]).2.contains("empty"));
}

#[test]
fn retired_elements_are_skipped_and_unknown_fields_kept() {
    let b = group(&[
        el(0x0000_0001, &[0, 0, 0, 0]), // (0000,0001) Length to End (retired)
        el(0x0000_0002, b"1.2.840.10008.1.1\0"),
        us(0x0000_0100, 0x0030),
        us(0x0000_0110, 1),
        us(0x0000_0800, NO_DATASET),
        el(0x0000_5010, b"x\0"), // (0000,5010) Message Set ID (retired)
    ]);
    assert_eq!(Command::decode(&b).unwrap(), Command::c_echo_rq(1));
    // An unknown request keeps its field, so it can be answered with 0x0211.
    let b = group(&[
        us(0x0000_0100, 0x0042),
        us(0x0000_0110, 5),
        us(0x0000_0800, NO_DATASET),
    ]);
    let c = Command::decode(&b).unwrap();
    assert!(!c.field.is_known() && !c.field.is_response());
    assert_eq!(
        c.response(Status::UNRECOGNIZED_OPERATION).field,
        CommandField(0x8042)
    );
}

#[test]
fn encoding_refuses_bad_values() {
    let mut c = Command::c_echo_rq(1);
    c.affected_sop_class_uid = Some("1.2.x".into());
    assert!(c.to_bytes().is_err());
    let c = Command::c_move_rq(1, STUDY_MOVE, 0, "A-DESTINATION-OVER-16");
    assert!(c.to_bytes().is_err());
    let mut c = Command::c_store_rq(1, CT, "1.2", 0);
    c.affected_sop_instance_uid = None;
    assert!(c.to_bytes().is_err());
    // An error comment is cut to 64 characters at a character boundary.
    let c = Command::c_echo_rq(1)
        .response(Status(0x0110))
        .with_error_comment(&"é".repeat(40));
    assert!(c.error_comment.as_ref().unwrap().len() <= 64);
    assert!(c.to_bytes().is_ok());
}
