//! DIMSE status codes: the one table of them (PS3.7 Annex C for the general classes and
//! codes, PS3.4 for the service-specific ones). Every status sent or logged goes through
//! [`Status`], so "what does 0xA702 mean" has one answer.

use std::fmt;

/// Status class of a code (PS3.7 C.1-C.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    Success,
    Pending,
    Cancel,
    Warning,
    Failure,
}

/// A DIMSE Status (0000,0900) value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Status(pub u16);

/// (code, category, meaning, where it is defined).
const TABLE: &[(u16, Category, &str, &str)] = &[
    (0x0000, Category::Success, "Success", "PS3.7 C.1"),
    (
        0xFF00,
        Category::Pending,
        "Pending: matches or sub-operations are continuing",
        "PS3.7 C.2, PS3.4 C.4.1.1.4",
    ),
    (
        0xFF01,
        Category::Pending,
        "Pending: matches continuing, optional keys not supported",
        "PS3.7 C.2, PS3.4 Table C.4-1",
    ),
    (
        0xFE00,
        Category::Cancel,
        "Cancel: terminated by a C-CANCEL",
        "PS3.7 C.3",
    ),
    (
        0x0001,
        Category::Warning,
        "Warning: requested optional attributes not supported",
        "PS3.7 C.4",
    ),
    (
        0x0107,
        Category::Warning,
        "Warning: attribute list error",
        "PS3.7 C.4.2",
    ),
    (
        0x0116,
        Category::Warning,
        "Warning: attribute value out of range",
        "PS3.7 C.4.3",
    ),
    (
        0xB000,
        Category::Warning,
        "Warning: coercion of data elements, or sub-operations complete with failures",
        "PS3.4 Table B.2-1, C.4-2",
    ),
    (
        0xB006,
        Category::Warning,
        "Warning: elements discarded",
        "PS3.4 Table B.2-1",
    ),
    (
        0xB007,
        Category::Warning,
        "Warning: data set does not match SOP class",
        "PS3.4 Table B.2-1",
    ),
    (
        0x0105,
        Category::Failure,
        "Failure: no such attribute",
        "PS3.7 C.5",
    ),
    (
        0x0106,
        Category::Failure,
        "Failure: invalid attribute value",
        "PS3.7 C.5",
    ),
    (
        0x0110,
        Category::Failure,
        "Failure: processing failure",
        "PS3.7 C.5",
    ),
    (
        0x0111,
        Category::Failure,
        "Failure: duplicate SOP instance",
        "PS3.7 C.5",
    ),
    (
        0x0112,
        Category::Failure,
        "Failure: no such SOP instance",
        "PS3.7 C.5",
    ),
    (
        0x0113,
        Category::Failure,
        "Failure: no such event type",
        "PS3.7 C.5",
    ),
    (
        0x0114,
        Category::Failure,
        "Failure: no such argument",
        "PS3.7 C.5",
    ),
    (
        0x0115,
        Category::Failure,
        "Failure: invalid argument value",
        "PS3.7 C.5",
    ),
    (
        0x0117,
        Category::Failure,
        "Failure: invalid object instance",
        "PS3.7 C.5",
    ),
    (
        0x0118,
        Category::Failure,
        "Failure: no such SOP class",
        "PS3.7 C.5",
    ),
    (
        0x0119,
        Category::Failure,
        "Failure: class-instance conflict",
        "PS3.7 C.5",
    ),
    (
        0x0120,
        Category::Failure,
        "Failure: missing attribute",
        "PS3.7 C.5",
    ),
    (
        0x0121,
        Category::Failure,
        "Failure: missing attribute value",
        "PS3.7 C.5",
    ),
    (
        0x0122,
        Category::Failure,
        "Refused: SOP class not supported",
        "PS3.7 C.5",
    ),
    (
        0x0123,
        Category::Failure,
        "Failure: no such action type",
        "PS3.7 C.5",
    ),
    (
        0x0124,
        Category::Failure,
        "Refused: not authorized",
        "PS3.7 C.5",
    ),
    (
        0x0210,
        Category::Failure,
        "Failure: duplicate invocation",
        "PS3.7 C.5",
    ),
    (
        0x0211,
        Category::Failure,
        "Failure: unrecognized operation",
        "PS3.7 C.5",
    ),
    (
        0x0212,
        Category::Failure,
        "Failure: mistyped argument",
        "PS3.7 C.5",
    ),
    (
        0x0213,
        Category::Failure,
        "Failure: resource limitation",
        "PS3.7 C.5",
    ),
    (
        0xA700,
        Category::Failure,
        "Refused: out of resources",
        "PS3.4 Table B.2-1, C.4-1",
    ),
    (
        0xA701,
        Category::Failure,
        "Refused: out of resources, unable to calculate number of matches",
        "PS3.4 Table C.4-2",
    ),
    (
        0xA702,
        Category::Failure,
        "Refused: out of resources, unable to perform sub-operations",
        "PS3.4 Table C.4-2",
    ),
    (
        0xA801,
        Category::Failure,
        "Refused: move destination unknown",
        "PS3.4 Table C.4-2",
    ),
    (
        0xA900,
        Category::Failure,
        "Error: data set or identifier does not match SOP class",
        "PS3.4 Table B.2-1, C.4-1",
    ),
    (
        0xC000,
        Category::Failure,
        "Error: cannot understand / unable to process",
        "PS3.4 Table B.2-1, C.4-1",
    ),
];

impl Status {
    pub const SUCCESS: Status = Status(0x0000);
    pub const PENDING: Status = Status(0xFF00);
    pub const PENDING_OPTIONAL_KEYS: Status = Status(0xFF01);
    pub const CANCEL: Status = Status(0xFE00);
    pub const WARNING_COERCION: Status = Status(0xB000);
    pub const WARNING_SUB_OPERATIONS_FAILED: Status = Status(0xB000);
    pub const WARNING_ELEMENTS_DISCARDED: Status = Status(0xB006);
    pub const WARNING_DATASET_MISMATCH: Status = Status(0xB007);
    pub const PROCESSING_FAILURE: Status = Status(0x0110);
    pub const DUPLICATE_SOP_INSTANCE: Status = Status(0x0111);
    pub const NO_SUCH_SOP_INSTANCE: Status = Status(0x0112);
    pub const NO_SUCH_SOP_CLASS: Status = Status(0x0118);
    pub const SOP_CLASS_NOT_SUPPORTED: Status = Status(0x0122);
    pub const NO_SUCH_ACTION_TYPE: Status = Status(0x0123);
    pub const NOT_AUTHORIZED: Status = Status(0x0124);
    pub const DUPLICATE_INVOCATION: Status = Status(0x0210);
    pub const UNRECOGNIZED_OPERATION: Status = Status(0x0211);
    pub const RESOURCE_LIMITATION: Status = Status(0x0213);
    pub const OUT_OF_RESOURCES: Status = Status(0xA700);
    pub const OUT_OF_RESOURCES_MATCHES: Status = Status(0xA701);
    pub const OUT_OF_RESOURCES_SUB_OPERATIONS: Status = Status(0xA702);
    pub const MOVE_DESTINATION_UNKNOWN: Status = Status(0xA801);
    pub const IDENTIFIER_MISMATCH: Status = Status(0xA900);
    pub const CANNOT_UNDERSTAND: Status = Status(0xC000);

    /// Class of the code. Codes outside the table follow the ranges of PS3.7 C and the
    /// service tables of PS3.4 (Bxxx warning, Axxx and Cxxx failure).
    pub fn category(self) -> Category {
        if let Some(entry) = Self::entry(self.0) {
            return entry.1;
        }
        match self.0 {
            0xB000..=0xBFFF => Category::Warning,
            _ => Category::Failure,
        }
    }

    /// What the code means and where it is defined, for logs and error messages.
    pub fn meaning(self) -> (&'static str, &'static str) {
        match Self::entry(self.0) {
            Some(&(_, _, meaning, source)) => (meaning, source),
            None => match self.0 {
                0xA000..=0xAFFF => ("Refused or failed (service-specific)", "PS3.4"),
                0xB000..=0xBFFF => ("Warning (service-specific)", "PS3.4"),
                0xC000..=0xCFFF => ("Error: cannot understand (service-specific)", "PS3.4"),
                _ => ("Failure: unknown status code", "PS3.7 C.5"),
            },
        }
    }

    fn entry(code: u16) -> Option<&'static (u16, Category, &'static str, &'static str)> {
        TABLE.iter().find(|e| e.0 == code)
    }

    pub fn is_success(self) -> bool {
        self.category() == Category::Success
    }

    pub fn is_pending(self) -> bool {
        self.category() == Category::Pending
    }

    /// Final statuses end a request (everything but pending).
    pub fn is_final(self) -> bool {
        !self.is_pending()
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Status(0x{:04X})", self.0)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (meaning, source) = self.meaning();
        write!(f, "0x{:04X} {meaning} ({source})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_follow_ps3_7_annex_c() {
        assert_eq!(Status::SUCCESS.category(), Category::Success);
        assert_eq!(Status::PENDING.category(), Category::Pending);
        assert_eq!(Status::PENDING_OPTIONAL_KEYS.category(), Category::Pending);
        assert_eq!(Status::CANCEL.category(), Category::Cancel);
        assert_eq!(Status(0x0001).category(), Category::Warning);
        assert_eq!(Status(0xB123).category(), Category::Warning);
        assert_eq!(Status(0xA7FF).category(), Category::Failure);
        assert_eq!(Status(0xC123).category(), Category::Failure);
        assert_eq!(Status::NOT_AUTHORIZED.category(), Category::Failure);
        assert!(Status::PENDING.is_pending() && !Status::PENDING.is_final());
        assert!(Status::CANCEL.is_final());
    }

    #[test]
    fn every_code_is_listed_once() {
        for (i, a) in TABLE.iter().enumerate() {
            assert!(TABLE[i + 1..].iter().all(|b| b.0 != a.0), "0x{:04X}", a.0);
        }
        assert_eq!(
            Status::MOVE_DESTINATION_UNKNOWN.to_string(),
            "0xA801 Refused: move destination unknown (PS3.4 Table C.4-2)"
        );
        assert_eq!(Status(0xC0FF).meaning().1, "PS3.4");
    }
}
