//! Archive layer: the one door through which bytes enter the archive.
//!
//! Every way in (C-STORE, STOW-RS, `import`, `import-scans`, `migrate`) calls
//! [`Writer::store`] or [`Writer::store_many`], so "duplicate", "replace" and "who sent it"
//! mean one thing everywhere:
//!
//! 1. each instance is parsed once: the same parse gives the store its layout and the index
//!    its row;
//! 2. one SOP Instance UID is handled by one caller at a time (a second arrival of the same
//!    UID waits for the first to finish, then sees it), so concurrent senders never store
//!    two copies;
//! 3. the duplicate rule ([`conflict`]): same UID and the same dataset (everything after
//!    the File Meta Information) is the same instance: nothing is written; same UID with
//!    another dataset follows [`OnConflict`];
//! 4. the record is made durable in the store (held below the writer's low-water mark) and
//!    its index row is added to [`pending`], where lookups and the index committer see it;
//! 5. the committer (Python, which owns DuckDB) drains pending rows as one Arrow batch with
//!    the store marks that batch covers, and confirms the commit.
//!
//! Success is only reported after step 4: the instance is durable and findable (every query
//! flushes pending rows first), and after a crash the index catches up with the store
//! (`python/duckpacs/archive/recovery.py`).

pub mod conflict;
pub mod known;
pub mod pending;
mod writer;

pub use pending::{Drained, Known};
pub use writer::{Lookup, OnConflict, Outcome, Rejection, Writer};

#[cfg(test)]
mod tests;
