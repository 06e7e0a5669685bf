//! Archive layer, a compact answer to "could this SOP Instance UID be archived already?".
//!
//! Every arrival asks it. Most arrivals are new instances, and asking the index (DuckDB,
//! through the interpreter) for each one cost more than storing it. This scalable Bloom
//! filter answers "certainly not" without the index; only a "maybe" (an instance sent again,
//! or a false positive, about 1 in 100) asks the index. Seeded with the index's UIDs when
//! the archive opens; every instance the writer stores is added. Nothing is ever removed
//! (a deleted instance stays a "maybe": the index then answers).
//!
//! Memory: about 1.2 bytes per archived instance (10 bits each at a 1 % false-positive
//! rate), so 12 MB for ten million instances.

use std::sync::RwLock;

use xxhash_rust::xxh3::xxh3_128;

const BITS_PER_ENTRY: usize = 10;
const HASHES: u64 = 7;
const FIRST_CAPACITY: usize = 1 << 16;

struct Bloom {
    bits: Vec<u64>,
    capacity: usize,
    len: usize,
}

impl Bloom {
    fn new(capacity: usize) -> Bloom {
        let words = (capacity * BITS_PER_ENTRY).div_ceil(64).max(1);
        Bloom {
            bits: vec![0; words],
            capacity,
            len: 0,
        }
    }

    /// The bit positions of a key (double hashing, Kirsch-Mitzenmacher).
    fn positions(&self, h: u128) -> impl Iterator<Item = usize> + '_ {
        let m = (self.bits.len() * 64) as u64;
        let (a, b) = (h as u64, (h >> 64) as u64 | 1);
        (0..HASHES).map(move |i| (a.wrapping_add(i.wrapping_mul(b)) % m) as usize)
    }

    fn insert(&mut self, h: u128) {
        let positions: Vec<usize> = self.positions(h).collect();
        for p in positions {
            self.bits[p / 64] |= 1 << (p % 64);
        }
        self.len += 1;
    }

    fn contains(&self, h: u128) -> bool {
        self.positions(h)
            .all(|p| self.bits[p / 64] & (1 << (p % 64)) != 0)
    }
}

/// The set of UIDs that may be archived (see the module docs).
pub struct KnownUids {
    filters: RwLock<Vec<Bloom>>,
}

impl Default for KnownUids {
    fn default() -> Self {
        KnownUids {
            filters: RwLock::new(vec![Bloom::new(FIRST_CAPACITY)]),
        }
    }
}

impl KnownUids {
    /// Adds UIDs (when seeding from the index, and as instances are stored).
    pub fn insert<'a>(&self, uids: impl IntoIterator<Item = &'a str>) {
        let mut filters = self.filters.write().unwrap_or_else(|p| p.into_inner());
        for uid in uids {
            let h = xxh3_128(uid.as_bytes());
            let last = filters.last_mut().expect("never empty");
            if last.len >= last.capacity {
                let next = last.capacity * 2;
                filters.push(Bloom::new(next));
            }
            filters.last_mut().expect("never empty").insert(h);
        }
    }

    /// False only when `uid` is certainly not archived.
    pub fn may_contain(&self, uid: &str) -> bool {
        let h = xxh3_128(uid.as_bytes());
        let filters = self.filters.read().unwrap_or_else(|p| p.into_inner());
        filters.iter().any(|f| f.contains(h))
    }

    /// Bytes the filters take.
    pub fn memory(&self) -> usize {
        let filters = self.filters.read().unwrap_or_else(|p| p.into_inner());
        filters.iter().map(|f| f.bits.len() * 8).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_forgets_and_rarely_imagines() {
        let known = KnownUids::default();
        let uids: Vec<String> = (0..200_000).map(|i| format!("1.2.826.0.1.{i}")).collect();
        known.insert(uids.iter().map(String::as_str));
        assert!(uids.iter().all(|u| known.may_contain(u)));
        let false_positives = (0..100_000)
            .filter(|i| known.may_contain(&format!("2.25.{i}")))
            .count();
        assert!(
            false_positives < 4_000,
            "{false_positives} false positives in 100,000"
        );
        assert!(known.memory() < 1 << 20);
    }
}
