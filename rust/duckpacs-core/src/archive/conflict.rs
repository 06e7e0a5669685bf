//! Archive layer, the duplicate rule: when are two arrivals of one SOP Instance UID the same
//! instance?
//!
//! The same instance reaches the archive with different File Meta Information: a file from
//! disk carries its creator's meta, a C-STORE gets the meta we build (PS3.10 7.1). Only the
//! dataset is the instance, so two arrivals are the same when their datasets (everything
//! after group 0002) are byte-identical. Comparing whole-stream SHA-256 first answers the
//! common case (the same file sent twice) without reading the stored copy.

use crate::part10;

/// Everything after the File Meta Information (the whole buffer when there is none).
pub fn dataset_part(stream: &[u8]) -> &[u8] {
    match part10::split(stream) {
        Ok(f) => stream.get(f.dataset_offset..).unwrap_or(&[]),
        Err(_) => stream,
    }
}

/// Whether `new` holds the same dataset as `stored` (PS3.10 framing aside).
pub fn same_dataset(stored: &[u8], new: &[u8]) -> bool {
    dataset_part(stored) == dataset_part(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meta_does_not_make_two_instances_differ() {
        let dataset = b"\x08\x00\x18\x00\x04\x00\x00\x001.2\x00".to_vec();
        let mut from_disk = part10::build_meta("1.2", "1.2", "1.2.840.10008.1.2.1", "");
        from_disk.extend_from_slice(&dataset);
        let mut over_dimse = part10::build_meta("1.2", "1.2", "1.2.840.10008.1.2.1", "CT1");
        over_dimse.extend_from_slice(&dataset);
        assert_ne!(from_disk, over_dimse);
        assert!(same_dataset(&from_disk, &over_dimse));
        let mut other = over_dimse.clone();
        *other.last_mut().unwrap() = b'9';
        assert!(!same_dataset(&from_disk, &other));
    }
}
