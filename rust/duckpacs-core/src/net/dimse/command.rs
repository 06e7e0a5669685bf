//! The DIMSE command set (PS3.7 6.3, Annex E): group 0000 elements, always Implicit VR
//! Little Endian, led by the Command Group Length (0000,0000), which is written and checked.
//! One [`Command`] type carries the fields of every C- and N- message; [`Command::decode`]
//! checks that the fields PS3.7 requires for its Command Field are present.

use std::fmt;

use super::status::Status;
use crate::net::error::{Error, Result};

/// Command set elements (PS3.7 Table E.1-1).
pub mod tag {
    pub const COMMAND_GROUP_LENGTH: u32 = 0x0000_0000;
    pub const AFFECTED_SOP_CLASS_UID: u32 = 0x0000_0002;
    pub const REQUESTED_SOP_CLASS_UID: u32 = 0x0000_0003;
    pub const COMMAND_FIELD: u32 = 0x0000_0100;
    pub const MESSAGE_ID: u32 = 0x0000_0110;
    pub const MESSAGE_ID_BEING_RESPONDED_TO: u32 = 0x0000_0120;
    pub const MOVE_DESTINATION: u32 = 0x0000_0600;
    pub const PRIORITY: u32 = 0x0000_0700;
    pub const COMMAND_DATA_SET_TYPE: u32 = 0x0000_0800;
    pub const STATUS: u32 = 0x0000_0900;
    pub const OFFENDING_ELEMENT: u32 = 0x0000_0901;
    pub const ERROR_COMMENT: u32 = 0x0000_0902;
    pub const ERROR_ID: u32 = 0x0000_0903;
    pub const AFFECTED_SOP_INSTANCE_UID: u32 = 0x0000_1000;
    pub const REQUESTED_SOP_INSTANCE_UID: u32 = 0x0000_1001;
    pub const EVENT_TYPE_ID: u32 = 0x0000_1002;
    pub const ATTRIBUTE_IDENTIFIER_LIST: u32 = 0x0000_1005;
    pub const ACTION_TYPE_ID: u32 = 0x0000_1008;
    pub const NUMBER_OF_REMAINING_SUB_OPERATIONS: u32 = 0x0000_1020;
    pub const NUMBER_OF_COMPLETED_SUB_OPERATIONS: u32 = 0x0000_1021;
    pub const NUMBER_OF_FAILED_SUB_OPERATIONS: u32 = 0x0000_1022;
    pub const NUMBER_OF_WARNING_SUB_OPERATIONS: u32 = 0x0000_1023;
    pub const MOVE_ORIGINATOR_AE_TITLE: u32 = 0x0000_1030;
    pub const MOVE_ORIGINATOR_MESSAGE_ID: u32 = 0x0000_1031;
}

/// Command Data Set Type value meaning "no dataset follows" (PS3.7 E.1-1).
pub const NO_DATASET: u16 = 0x0101;
/// The value we write when a dataset follows (any other value than 0x0101 means one does).
pub const DATASET_PRESENT: u16 = 0x0001;
/// Largest command set we assemble; real ones are a few hundred bytes.
pub const MAX_COMMAND_LEN: usize = 64 * 1024;

/// Priority (0000,0700) values (PS3.7 E.1-1).
pub mod priority {
    pub const MEDIUM: u16 = 0x0000;
    pub const HIGH: u16 = 0x0001;
    pub const LOW: u16 = 0x0002;
}

/// Command Field (0000,0100): which message this is (PS3.7 E.1-1). Responses have bit 15
/// set; [`CommandField::response`] maps a request to its response.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommandField(pub u16);

impl CommandField {
    pub const C_STORE_RQ: Self = Self(0x0001);
    pub const C_STORE_RSP: Self = Self(0x8001);
    pub const C_GET_RQ: Self = Self(0x0010);
    pub const C_GET_RSP: Self = Self(0x8010);
    pub const C_FIND_RQ: Self = Self(0x0020);
    pub const C_FIND_RSP: Self = Self(0x8020);
    pub const C_MOVE_RQ: Self = Self(0x0021);
    pub const C_MOVE_RSP: Self = Self(0x8021);
    pub const C_ECHO_RQ: Self = Self(0x0030);
    pub const C_ECHO_RSP: Self = Self(0x8030);
    pub const N_EVENT_REPORT_RQ: Self = Self(0x0100);
    pub const N_EVENT_REPORT_RSP: Self = Self(0x8100);
    pub const N_GET_RQ: Self = Self(0x0110);
    pub const N_GET_RSP: Self = Self(0x8110);
    pub const N_SET_RQ: Self = Self(0x0120);
    pub const N_SET_RSP: Self = Self(0x8120);
    pub const N_ACTION_RQ: Self = Self(0x0130);
    pub const N_ACTION_RSP: Self = Self(0x8130);
    pub const N_CREATE_RQ: Self = Self(0x0140);
    pub const N_CREATE_RSP: Self = Self(0x8140);
    pub const N_DELETE_RQ: Self = Self(0x0150);
    pub const N_DELETE_RSP: Self = Self(0x8150);
    pub const C_CANCEL_RQ: Self = Self(0x0FFF);

    pub fn is_response(self) -> bool {
        self.0 & 0x8000 != 0
    }

    /// The response to this request (C-CANCEL has none, but the mapping stays total).
    pub fn response(self) -> Self {
        Self(self.0 | 0x8000)
    }

    /// True for the codes PS3.7 E.1-1 defines.
    pub fn is_known(self) -> bool {
        self.name() != "unknown command"
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::C_STORE_RQ => "C-STORE-RQ",
            Self::C_STORE_RSP => "C-STORE-RSP",
            Self::C_GET_RQ => "C-GET-RQ",
            Self::C_GET_RSP => "C-GET-RSP",
            Self::C_FIND_RQ => "C-FIND-RQ",
            Self::C_FIND_RSP => "C-FIND-RSP",
            Self::C_MOVE_RQ => "C-MOVE-RQ",
            Self::C_MOVE_RSP => "C-MOVE-RSP",
            Self::C_ECHO_RQ => "C-ECHO-RQ",
            Self::C_ECHO_RSP => "C-ECHO-RSP",
            Self::N_EVENT_REPORT_RQ => "N-EVENT-REPORT-RQ",
            Self::N_EVENT_REPORT_RSP => "N-EVENT-REPORT-RSP",
            Self::N_GET_RQ => "N-GET-RQ",
            Self::N_GET_RSP => "N-GET-RSP",
            Self::N_SET_RQ => "N-SET-RQ",
            Self::N_SET_RSP => "N-SET-RSP",
            Self::N_ACTION_RQ => "N-ACTION-RQ",
            Self::N_ACTION_RSP => "N-ACTION-RSP",
            Self::N_CREATE_RQ => "N-CREATE-RQ",
            Self::N_CREATE_RSP => "N-CREATE-RSP",
            Self::N_DELETE_RQ => "N-DELETE-RQ",
            Self::N_DELETE_RSP => "N-DELETE-RSP",
            Self::C_CANCEL_RQ => "C-CANCEL-RQ",
            _ => "unknown command",
        }
    }
}

impl fmt::Debug for CommandField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:04X})", self.name(), self.0)
    }
}

impl fmt::Display for CommandField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Sub-operation counters of C-GET and C-MOVE responses (PS3.7 9.3.3.2, 9.3.4.2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubOperations {
    pub remaining: Option<u16>,
    pub completed: u16,
    pub failed: u16,
    pub warning: u16,
}

/// One DIMSE command set. Fields absent from the message are `None` (or empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub field: CommandField,
    /// Message ID (0000,0110), in requests.
    pub message_id: Option<u16>,
    /// Message ID Being Responded To (0000,0120), in responses and C-CANCEL-RQ.
    pub message_id_responded_to: Option<u16>,
    pub affected_sop_class_uid: Option<String>,
    pub requested_sop_class_uid: Option<String>,
    pub affected_sop_instance_uid: Option<String>,
    pub requested_sop_instance_uid: Option<String>,
    /// Priority (0000,0700): see [`priority`].
    pub priority: Option<u16>,
    /// Command Data Set Type (0000,0800) other than 0x0101: a dataset follows.
    pub has_dataset: bool,
    pub status: Option<Status>,
    /// Offending Element (0000,0901): tags as `gggg_eeee`.
    pub offending_elements: Vec<u32>,
    pub error_comment: Option<String>,
    pub error_id: Option<u16>,
    pub move_destination: Option<String>,
    pub event_type_id: Option<u16>,
    /// Attribute Identifier List (0000,1005), of N-GET.
    pub attribute_identifiers: Vec<u32>,
    pub action_type_id: Option<u16>,
    pub remaining: Option<u16>,
    pub completed: Option<u16>,
    pub failed: Option<u16>,
    pub warning: Option<u16>,
    pub move_originator_ae_title: Option<String>,
    pub move_originator_message_id: Option<u16>,
}

/// Fields PS3.7 makes mandatory per message (9.3 and 10.3; for responses only what every
/// response needs, as the rest is conditional on the status).
fn required(field: CommandField) -> &'static [u32] {
    use tag::*;
    match field {
        CommandField::C_STORE_RQ => &[
            AFFECTED_SOP_CLASS_UID,
            MESSAGE_ID,
            PRIORITY,
            AFFECTED_SOP_INSTANCE_UID,
        ],
        CommandField::C_FIND_RQ | CommandField::C_GET_RQ => {
            &[AFFECTED_SOP_CLASS_UID, MESSAGE_ID, PRIORITY]
        }
        CommandField::C_MOVE_RQ => &[
            AFFECTED_SOP_CLASS_UID,
            MESSAGE_ID,
            PRIORITY,
            MOVE_DESTINATION,
        ],
        CommandField::C_ECHO_RQ => &[AFFECTED_SOP_CLASS_UID, MESSAGE_ID],
        CommandField::C_CANCEL_RQ => &[MESSAGE_ID_BEING_RESPONDED_TO],
        CommandField::N_EVENT_REPORT_RQ => &[
            AFFECTED_SOP_CLASS_UID,
            MESSAGE_ID,
            AFFECTED_SOP_INSTANCE_UID,
            EVENT_TYPE_ID,
        ],
        CommandField::N_GET_RQ | CommandField::N_SET_RQ | CommandField::N_DELETE_RQ => &[
            REQUESTED_SOP_CLASS_UID,
            MESSAGE_ID,
            REQUESTED_SOP_INSTANCE_UID,
        ],
        CommandField::N_ACTION_RQ => &[
            REQUESTED_SOP_CLASS_UID,
            MESSAGE_ID,
            REQUESTED_SOP_INSTANCE_UID,
            ACTION_TYPE_ID,
        ],
        CommandField::N_CREATE_RQ => &[AFFECTED_SOP_CLASS_UID, MESSAGE_ID],
        f if f.is_response() => &[MESSAGE_ID_BEING_RESPONDED_TO, STATUS],
        _ => &[MESSAGE_ID],
    }
}

/// Requests that always carry a dataset (the identifier, the instance, the modifications).
fn needs_dataset(field: CommandField) -> bool {
    matches!(
        field,
        CommandField::C_STORE_RQ
            | CommandField::C_FIND_RQ
            | CommandField::C_GET_RQ
            | CommandField::C_MOVE_RQ
            | CommandField::N_SET_RQ
    )
}

impl Command {
    /// A command with only its field set; the constructors below fill the rest.
    pub fn new(field: CommandField) -> Self {
        Command {
            field,
            message_id: None,
            message_id_responded_to: None,
            affected_sop_class_uid: None,
            requested_sop_class_uid: None,
            affected_sop_instance_uid: None,
            requested_sop_instance_uid: None,
            priority: None,
            has_dataset: false,
            status: None,
            offending_elements: Vec::new(),
            error_comment: None,
            error_id: None,
            move_destination: None,
            event_type_id: None,
            attribute_identifiers: Vec::new(),
            action_type_id: None,
            remaining: None,
            completed: None,
            failed: None,
            warning: None,
            move_originator_ae_title: None,
            move_originator_message_id: None,
        }
    }

    fn request(field: CommandField, message_id: u16, sop_class: &str) -> Self {
        let mut c = Command::new(field);
        c.message_id = Some(message_id);
        c.affected_sop_class_uid = Some(sop_class.to_string());
        c
    }

    fn n_request(
        field: CommandField,
        message_id: u16,
        sop_class: &str,
        sop_instance: &str,
    ) -> Self {
        let mut c = Command::new(field);
        c.message_id = Some(message_id);
        c.requested_sop_class_uid = Some(sop_class.to_string());
        c.requested_sop_instance_uid = Some(sop_instance.to_string());
        c
    }

    /// C-ECHO-RQ (PS3.7 9.3.5.1), Verification SOP class.
    pub fn c_echo_rq(message_id: u16) -> Self {
        Self::request(CommandField::C_ECHO_RQ, message_id, VERIFICATION_SOP_CLASS)
    }

    /// C-STORE-RQ (PS3.7 9.3.1.1); the instance follows as the dataset.
    pub fn c_store_rq(message_id: u16, sop_class: &str, sop_instance: &str, priority: u16) -> Self {
        let mut c = Self::request(CommandField::C_STORE_RQ, message_id, sop_class);
        c.affected_sop_instance_uid = Some(sop_instance.to_string());
        c.priority = Some(priority);
        c.has_dataset = true;
        c
    }

    /// C-FIND-RQ (PS3.7 9.3.2.1); the identifier follows as the dataset.
    pub fn c_find_rq(message_id: u16, sop_class: &str, priority: u16) -> Self {
        let mut c = Self::request(CommandField::C_FIND_RQ, message_id, sop_class);
        c.priority = Some(priority);
        c.has_dataset = true;
        c
    }

    /// C-GET-RQ (PS3.7 9.3.3.1); the identifier follows as the dataset.
    pub fn c_get_rq(message_id: u16, sop_class: &str, priority: u16) -> Self {
        let mut c = Self::request(CommandField::C_GET_RQ, message_id, sop_class);
        c.priority = Some(priority);
        c.has_dataset = true;
        c
    }

    /// C-MOVE-RQ (PS3.7 9.3.4.1) to `destination`; the identifier follows as the dataset.
    pub fn c_move_rq(message_id: u16, sop_class: &str, priority: u16, destination: &str) -> Self {
        let mut c = Self::request(CommandField::C_MOVE_RQ, message_id, sop_class);
        c.priority = Some(priority);
        c.move_destination = Some(destination.to_string());
        c.has_dataset = true;
        c
    }

    /// C-CANCEL-RQ (PS3.7 9.3.2.3) of the request with `message_id`.
    pub fn c_cancel_rq(message_id: u16) -> Self {
        let mut c = Command::new(CommandField::C_CANCEL_RQ);
        c.message_id_responded_to = Some(message_id);
        c
    }

    /// N-EVENT-REPORT-RQ (PS3.7 10.3.1.1); event information may follow as the dataset.
    pub fn n_event_report_rq(
        message_id: u16,
        sop_class: &str,
        sop_instance: &str,
        event_type: u16,
    ) -> Self {
        let mut c = Self::request(CommandField::N_EVENT_REPORT_RQ, message_id, sop_class);
        c.affected_sop_instance_uid = Some(sop_instance.to_string());
        c.event_type_id = Some(event_type);
        c
    }

    /// N-GET-RQ (PS3.7 10.3.2.1).
    pub fn n_get_rq(message_id: u16, sop_class: &str, sop_instance: &str) -> Self {
        Self::n_request(CommandField::N_GET_RQ, message_id, sop_class, sop_instance)
    }

    /// N-SET-RQ (PS3.7 10.3.3.1); the modification list follows as the dataset.
    pub fn n_set_rq(message_id: u16, sop_class: &str, sop_instance: &str) -> Self {
        let mut c = Self::n_request(CommandField::N_SET_RQ, message_id, sop_class, sop_instance);
        c.has_dataset = true;
        c
    }

    /// N-ACTION-RQ (PS3.7 10.3.4.1); action information may follow as the dataset.
    pub fn n_action_rq(
        message_id: u16,
        sop_class: &str,
        sop_instance: &str,
        action_type: u16,
    ) -> Self {
        let mut c = Self::n_request(
            CommandField::N_ACTION_RQ,
            message_id,
            sop_class,
            sop_instance,
        );
        c.action_type_id = Some(action_type);
        c
    }

    /// N-CREATE-RQ (PS3.7 10.3.5.1); the instance UID may be left to the performer.
    pub fn n_create_rq(message_id: u16, sop_class: &str, sop_instance: Option<&str>) -> Self {
        let mut c = Self::request(CommandField::N_CREATE_RQ, message_id, sop_class);
        c.affected_sop_instance_uid = sop_instance.map(str::to_string);
        c
    }

    /// N-DELETE-RQ (PS3.7 10.3.6.1).
    pub fn n_delete_rq(message_id: u16, sop_class: &str, sop_instance: &str) -> Self {
        Self::n_request(
            CommandField::N_DELETE_RQ,
            message_id,
            sop_class,
            sop_instance,
        )
    }

    /// The response to this request with `status`, carrying the fields PS3.7 says the
    /// response repeats: the affected SOP class (and instance, for C-STORE and the N-
    /// services, where the requested UIDs become the affected ones), the action or event
    /// type. No dataset; set [`Command::has_dataset`] when one follows.
    pub fn response(&self, status: Status) -> Command {
        let mut r = Command::new(self.field.response());
        r.message_id_responded_to = self.message_id;
        r.status = Some(status);
        r.affected_sop_class_uid = self
            .affected_sop_class_uid
            .clone()
            .or_else(|| self.requested_sop_class_uid.clone());
        match self.field {
            CommandField::C_STORE_RQ
            | CommandField::N_EVENT_REPORT_RQ
            | CommandField::N_CREATE_RQ => {
                r.affected_sop_instance_uid = self.affected_sop_instance_uid.clone();
            }
            CommandField::N_GET_RQ
            | CommandField::N_SET_RQ
            | CommandField::N_ACTION_RQ
            | CommandField::N_DELETE_RQ => {
                r.affected_sop_instance_uid = self.requested_sop_instance_uid.clone();
            }
            _ => {}
        }
        r.event_type_id = self.event_type_id;
        r.action_type_id = self.action_type_id;
        r
    }

    /// Set the four sub-operation counters (C-GET/C-MOVE responses).
    pub fn with_sub_operations(mut self, ops: SubOperations) -> Self {
        self.remaining = ops.remaining;
        self.completed = Some(ops.completed);
        self.failed = Some(ops.failed);
        self.warning = Some(ops.warning);
        self
    }

    /// Set the Error Comment (0000,0902); PS3.7 limits it to 64 characters (LO), longer
    /// text is cut at a character boundary.
    pub fn with_error_comment(mut self, comment: &str) -> Self {
        let mut end = comment.len().min(64);
        while !comment.is_char_boundary(end) {
            end -= 1;
        }
        self.error_comment = Some(comment[..end].to_string());
        self
    }

    /// The Status (0000,0900) or, for a command without one, Success.
    pub fn status_or_success(&self) -> Status {
        self.status.unwrap_or(Status::SUCCESS)
    }

    /// The message ID this command is about: its own for a request, the responded-to one
    /// for a response or a C-CANCEL-RQ.
    pub fn subject_message_id(&self) -> Option<u16> {
        if self.field.is_response() || self.field == CommandField::C_CANCEL_RQ {
            self.message_id_responded_to
        } else {
            self.message_id
        }
    }

    /// Check the fields PS3.7 makes mandatory for this Command Field.
    pub fn validate(&self) -> Result<()> {
        for &t in required(self.field) {
            if !self.has(t) {
                return Err(Error::command(
                    0,
                    Some(t),
                    format!("{} lacks a mandatory field", self.field),
                ));
            }
        }
        if needs_dataset(self.field) && !self.has_dataset {
            return Err(Error::command(
                0,
                Some(tag::COMMAND_DATA_SET_TYPE),
                format!("{} without a dataset (PS3.7 9.3)", self.field),
            ));
        }
        Ok(())
    }

    fn has(&self, t: u32) -> bool {
        use tag::*;
        match t {
            AFFECTED_SOP_CLASS_UID => self.affected_sop_class_uid.is_some(),
            REQUESTED_SOP_CLASS_UID => self.requested_sop_class_uid.is_some(),
            AFFECTED_SOP_INSTANCE_UID => self.affected_sop_instance_uid.is_some(),
            REQUESTED_SOP_INSTANCE_UID => self.requested_sop_instance_uid.is_some(),
            MESSAGE_ID => self.message_id.is_some(),
            MESSAGE_ID_BEING_RESPONDED_TO => self.message_id_responded_to.is_some(),
            PRIORITY => self.priority.is_some(),
            STATUS => self.status.is_some(),
            MOVE_DESTINATION => self.move_destination.is_some(),
            EVENT_TYPE_ID => self.event_type_id.is_some(),
            ACTION_TYPE_ID => self.action_type_id.is_some(),
            _ => true,
        }
    }
}

/// Verification SOP Class (PS3.4 A.4).
pub const VERIFICATION_SOP_CLASS: &str = "1.2.840.10008.1.1";

// ---- encoding --------------------------------------------------------------------------

impl Command {
    /// Append the encoded command set to `out` (Implicit VR Little Endian, ascending tags,
    /// group length first). The command is validated first.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        self.encode_as(out, self.has_dataset)
    }

    /// [`Command::encode`] with the Command Data Set Type taken from `has_dataset` (the
    /// association sets it from whether a dataset is really sent).
    pub fn encode_as(&self, out: &mut Vec<u8>, has_dataset: bool) -> Result<()> {
        if self.has_dataset != has_dataset {
            let mut c = self.clone();
            c.has_dataset = has_dataset;
            return c.encode_as(out, has_dataset);
        }
        self.validate()?;
        let start = out.len();
        out.extend_from_slice(&[0; 12]); // (0000,0000) UL, filled in below
        let mut w = Writer(out);
        use tag::*;
        w.uid(AFFECTED_SOP_CLASS_UID, &self.affected_sop_class_uid)?;
        w.uid(REQUESTED_SOP_CLASS_UID, &self.requested_sop_class_uid)?;
        w.us(COMMAND_FIELD, Some(self.field.0));
        w.us(MESSAGE_ID, self.message_id);
        w.us(MESSAGE_ID_BEING_RESPONDED_TO, self.message_id_responded_to);
        w.text(MOVE_DESTINATION, &self.move_destination, 16)?;
        w.us(PRIORITY, self.priority);
        let dataset_type = if self.has_dataset {
            DATASET_PRESENT
        } else {
            NO_DATASET
        };
        w.us(COMMAND_DATA_SET_TYPE, Some(dataset_type));
        w.us(STATUS, self.status.map(|s| s.0));
        w.tags(OFFENDING_ELEMENT, &self.offending_elements)?;
        w.text(ERROR_COMMENT, &self.error_comment, 64)?;
        w.us(ERROR_ID, self.error_id);
        w.uid(AFFECTED_SOP_INSTANCE_UID, &self.affected_sop_instance_uid)?;
        w.uid(REQUESTED_SOP_INSTANCE_UID, &self.requested_sop_instance_uid)?;
        w.us(EVENT_TYPE_ID, self.event_type_id);
        w.tags(ATTRIBUTE_IDENTIFIER_LIST, &self.attribute_identifiers)?;
        w.us(ACTION_TYPE_ID, self.action_type_id);
        w.us(NUMBER_OF_REMAINING_SUB_OPERATIONS, self.remaining);
        w.us(NUMBER_OF_COMPLETED_SUB_OPERATIONS, self.completed);
        w.us(NUMBER_OF_FAILED_SUB_OPERATIONS, self.failed);
        w.us(NUMBER_OF_WARNING_SUB_OPERATIONS, self.warning);
        w.text(MOVE_ORIGINATOR_AE_TITLE, &self.move_originator_ae_title, 16)?;
        w.us(MOVE_ORIGINATOR_MESSAGE_ID, self.move_originator_message_id);
        let group_len = (out.len() - start - 12) as u32;
        out[start..start + 4].copy_from_slice(&[0, 0, 0, 0]);
        out[start + 4..start + 8].copy_from_slice(&4u32.to_le_bytes());
        out[start + 8..start + 12].copy_from_slice(&group_len.to_le_bytes());
        Ok(())
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(256);
        self.encode(&mut out)?;
        Ok(out)
    }
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn header(&mut self, tag: u32, len: usize) -> Result<()> {
        let len = u32::try_from(len)
            .ok()
            .filter(|&l| l as usize <= MAX_COMMAND_LEN)
            .ok_or_else(|| Error::command(0, Some(tag), "value too long"))?;
        self.0
            .extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
        self.0.extend_from_slice(&(tag as u16).to_le_bytes());
        self.0.extend_from_slice(&len.to_le_bytes());
        Ok(())
    }

    fn us(&mut self, tag: u32, value: Option<u16>) {
        if let Some(v) = value {
            self.header(tag, 2).expect("2 bytes fit");
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// UI: padded to even length with one NUL (PS3.5 9.1).
    fn uid(&mut self, tag: u32, value: &Option<String>) -> Result<()> {
        if let Some(v) = value {
            if v.len() > 64 || !v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                return Err(Error::command(
                    0,
                    Some(tag),
                    format!("{v:?} is not a UID of at most 64 digits and dots (PS3.5 9.1)"),
                ));
            }
            let pad = v.len() % 2;
            self.header(tag, v.len() + pad)?;
            self.0.extend_from_slice(v.as_bytes());
            if pad == 1 {
                self.0.push(0);
            }
        }
        Ok(())
    }

    /// AE / LO: padded to even length with a space.
    fn text(&mut self, tag: u32, value: &Option<String>, max: usize) -> Result<()> {
        if let Some(v) = value {
            if v.len() > max || v.bytes().any(|b| b < 0x20 || b == b'\\') {
                return Err(Error::command(
                    0,
                    Some(tag),
                    format!("{v:?}: at most {max} characters, no control or backslash"),
                ));
            }
            let pad = v.len() % 2;
            self.header(tag, v.len() + pad)?;
            self.0.extend_from_slice(v.as_bytes());
            if pad == 1 {
                self.0.push(b' ');
            }
        }
        Ok(())
    }

    /// AT values: group then element, each little endian.
    fn tags(&mut self, tag: u32, values: &[u32]) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        self.header(tag, values.len() * 4)?;
        for v in values {
            self.0.extend_from_slice(&((v >> 16) as u16).to_le_bytes());
            self.0.extend_from_slice(&(*v as u16).to_le_bytes());
        }
        Ok(())
    }
}

// ---- decoding --------------------------------------------------------------------------

impl Command {
    /// Decode a command set. The group length must come first and match the bytes after
    /// it; every element must be of group 0000, fit in the buffer and appear once;
    /// retired or unknown group 0000 elements are skipped. Mandatory fields are checked.
    pub fn decode(bytes: &[u8]) -> Result<Command> {
        if bytes.len() > MAX_COMMAND_LEN {
            return Err(Error::command(
                0,
                None,
                format!("{} bytes, more than {MAX_COMMAND_LEN}", bytes.len()),
            ));
        }
        let mut field = None;
        let mut c = Command::new(CommandField(0));
        let mut dataset_type = None;
        let mut seen: Vec<u32> = Vec::with_capacity(16);
        let mut pos = 0;
        while pos < bytes.len() {
            let Some(h) = bytes.get(pos..pos + 8) else {
                return Err(Error::command(pos, None, "truncated element header"));
            };
            let tag = (u32::from(u16::from_le_bytes([h[0], h[1]])) << 16)
                | u32::from(u16::from_le_bytes([h[2], h[3]]));
            let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
            let start = pos + 8;
            let Some(value) = bytes.get(start..start.saturating_add(len)) else {
                return Err(Error::command(
                    pos,
                    Some(tag),
                    format!("value length {len} runs past the command's end"),
                ));
            };
            let el = Element {
                tag,
                value,
                offset: pos,
            };
            if tag >> 16 != 0 {
                // Not a command element (PS3.7 E.1); Orthanc 1.10's C-GET sub-operations
                // carry a stray group 0008 after the command. Skipped, as pynetdicom does.
                log::debug!(
                    "skipped ({:04X},{:04X}) in a command set",
                    tag >> 16,
                    tag & 0xFFFF
                );
                pos = start + len;
                continue;
            }
            if seen.contains(&tag) {
                return Err(el.err("element appears twice"));
            }
            seen.push(tag);
            if tag == tag::COMMAND_GROUP_LENGTH {
                // PS3.7 E.1 makes it mandatory and exact, but peers get it wrong (Orthanc
                // 1.10 sends C-GET sub-operations whose length leaves out elements), and
                // the elements' own lengths delimit them anyway: a wrong value is noted,
                // not fatal, as DCMTK and pynetdicom also read past it.
                let n = el.u32()? as usize;
                if pos != 0 || n != bytes.len() - start - 4 {
                    log::debug!(
                        "command group length {n} at byte {pos}; {} bytes follow",
                        bytes.len() - start - 4
                    );
                }
            } else {
                match tag {
                    tag::COMMAND_FIELD => field = Some(CommandField(el.u16()?)),
                    tag::COMMAND_DATA_SET_TYPE => dataset_type = Some(el.u16()?),
                    _ => c.set(&el)?,
                }
            }
            pos = start + len;
        }
        if seen.is_empty() {
            return Err(Error::command(0, None, "empty command set"));
        }
        let Some(field) = field else {
            return Err(Error::command(0, Some(tag::COMMAND_FIELD), "missing"));
        };
        let Some(dataset_type) = dataset_type else {
            return Err(Error::command(
                0,
                Some(tag::COMMAND_DATA_SET_TYPE),
                "missing",
            ));
        };
        c.field = field;
        c.has_dataset = dataset_type != NO_DATASET;
        c.validate()?;
        Ok(c)
    }

    fn set(&mut self, el: &Element<'_>) -> Result<()> {
        use tag::*;
        match el.tag {
            AFFECTED_SOP_CLASS_UID => self.affected_sop_class_uid = Some(el.text()),
            REQUESTED_SOP_CLASS_UID => self.requested_sop_class_uid = Some(el.text()),
            AFFECTED_SOP_INSTANCE_UID => self.affected_sop_instance_uid = Some(el.text()),
            REQUESTED_SOP_INSTANCE_UID => self.requested_sop_instance_uid = Some(el.text()),
            MESSAGE_ID => self.message_id = Some(el.u16()?),
            MESSAGE_ID_BEING_RESPONDED_TO => self.message_id_responded_to = Some(el.u16()?),
            MOVE_DESTINATION => self.move_destination = Some(el.text()),
            PRIORITY => self.priority = Some(el.u16()?),
            STATUS => self.status = Some(Status(el.u16()?)),
            OFFENDING_ELEMENT => self.offending_elements = el.tags()?,
            ERROR_COMMENT => self.error_comment = Some(el.text()),
            ERROR_ID => self.error_id = Some(el.u16()?),
            EVENT_TYPE_ID => self.event_type_id = Some(el.u16()?),
            ATTRIBUTE_IDENTIFIER_LIST => self.attribute_identifiers = el.tags()?,
            ACTION_TYPE_ID => self.action_type_id = Some(el.u16()?),
            NUMBER_OF_REMAINING_SUB_OPERATIONS => self.remaining = Some(el.u16()?),
            NUMBER_OF_COMPLETED_SUB_OPERATIONS => self.completed = Some(el.u16()?),
            NUMBER_OF_FAILED_SUB_OPERATIONS => self.failed = Some(el.u16()?),
            NUMBER_OF_WARNING_SUB_OPERATIONS => self.warning = Some(el.u16()?),
            MOVE_ORIGINATOR_AE_TITLE => self.move_originator_ae_title = Some(el.text()),
            MOVE_ORIGINATOR_MESSAGE_ID => self.move_originator_message_id = Some(el.u16()?),
            // Retired elements (Length to End, Recognition Code, ...) are skipped.
            _ => {}
        }
        Ok(())
    }
}

struct Element<'a> {
    tag: u32,
    value: &'a [u8],
    offset: usize,
}

impl Element<'_> {
    fn err(&self, reason: impl Into<String>) -> Error {
        Error::command(self.offset, Some(self.tag), reason)
    }

    fn u16(&self) -> Result<u16> {
        match self.value {
            [a, b] => Ok(u16::from_le_bytes([*a, *b])),
            v => Err(self.err(format!("US value of {} bytes, expected 2", v.len()))),
        }
    }

    fn u32(&self) -> Result<u32> {
        match self.value {
            [a, b, c, d] => Ok(u32::from_le_bytes([*a, *b, *c, *d])),
            v => Err(self.err(format!("UL value of {} bytes, expected 4", v.len()))),
        }
    }

    /// UI, AE, LO: padding (NUL, spaces) is not significant.
    fn text(&self) -> String {
        String::from_utf8_lossy(self.value)
            .trim_matches(|c| c == ' ' || c == '\0')
            .to_string()
    }

    fn tags(&self) -> Result<Vec<u32>> {
        if !self.value.len().is_multiple_of(4) {
            return Err(self.err(format!(
                "AT value of {} bytes, not a multiple of 4",
                self.value.len()
            )));
        }
        Ok(self
            .value
            .chunks_exact(4)
            .map(|c| {
                (u32::from(u16::from_le_bytes([c[0], c[1]])) << 16)
                    | u32::from(u16::from_le_bytes([c[2], c[3]]))
            })
            .collect())
    }
}
