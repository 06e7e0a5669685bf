//! Archive layer, index rows on their way to the index.
//!
//! A stored instance's row is appended to an Arrow batch builder at once, so it is visible
//! to lookups here and to every query that flushes first. The committer (which owns the
//! DuckDB index) drains the builder as one batch together with the store marks it covers,
//! and confirms once the index has committed it. Until then the drained rows stay visible as
//! "committing", and an unconfirmed batch is handed out again, so a failed commit loses
//! nothing.
//!
//! Marks: the caller computes the store's low-water mark *before* draining. Every record
//! below that mark was settled, and a record is settled only after its row was added here,
//! so every such row is in this batch or an earlier one.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use arrow_array::RecordBatch;

use crate::index::{BatchBuilder, Extra};
use crate::parse::Parsed;
use crate::store::Location;
use crate::{Error, Result};

/// An archived instance as the write path needs to know it: where, and its SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    pub location: Location,
    pub sha256: [u8; 32],
}

/// A batch for the index and the store marks (pack, offset) it covers.
#[derive(Debug, Clone)]
pub struct Drained {
    pub batch: RecordBatch,
    pub marks: Vec<(u64, u64)>,
}

struct State {
    builder: BatchBuilder,
    rows: HashMap<String, Known>,
    committing: HashMap<String, Known>,
    drained: Option<Drained>,
    committed_marks: Vec<(u64, u64)>,
}

/// Rows stored but not yet confirmed by the index (see the module docs).
pub struct Pending {
    state: Mutex<State>,
    work: Condvar,
    flush_rows: usize,
}

impl Pending {
    /// `flush_rows`: how many pending rows wake a waiting committer before its timeout.
    pub fn new(flush_rows: usize) -> Pending {
        Pending {
            state: Mutex::new(State {
                builder: BatchBuilder::new(),
                rows: HashMap::new(),
                committing: HashMap::new(),
                drained: None,
                committed_marks: Vec::new(),
            }),
            work: Condvar::new(),
            flush_rows: flush_rows.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds the rows of stored instances (their parses, locations and provenance).
    pub fn add(&self, rows: &[(&Parsed<'_>, &Extra, &str, Known)]) -> Result<()> {
        let mut st = self.lock();
        for (parsed, extra, uid, known) in rows {
            st.builder.append(parsed, extra)?;
            st.rows.insert((*uid).to_string(), *known);
        }
        if st.rows.len() >= self.flush_rows {
            self.work.notify_all();
        }
        Ok(())
    }

    /// A pending or committing instance with this UID.
    pub fn get(&self, uid: &str) -> Option<Known> {
        let st = self.lock();
        st.rows.get(uid).or_else(|| st.committing.get(uid)).copied()
    }

    /// Rows not yet confirmed by the index.
    pub fn len(&self) -> usize {
        let st = self.lock();
        st.rows.len() + st.committing.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next batch for the index: the unconfirmed one again, else every pending row with
    /// `marks` (the store's low-water mark, taken before this call). None when there is
    /// neither a row nor a mark that moved.
    pub fn drain(&self, marks: Vec<(u64, u64)>) -> Result<Option<Drained>> {
        let mut st = self.lock();
        if let Some(d) = &st.drained {
            return Ok(Some(d.clone()));
        }
        if st.builder.is_empty() && marks == st.committed_marks {
            return Ok(None);
        }
        let batch = st
            .builder
            .finish()
            .map_err(|e| Error::parse(0, None, format!("building the index batch: {e}")))?;
        let rows = std::mem::take(&mut st.rows);
        st.committing.extend(rows);
        let d = Drained { batch, marks };
        st.drained = Some(d.clone());
        Ok(Some(d))
    }

    /// The index has committed the last drained batch.
    pub fn committed(&self) {
        let mut st = self.lock();
        if let Some(d) = st.drained.take() {
            st.committed_marks = d.marks;
        }
        st.committing.clear();
    }

    /// Waits until `flush_rows` rows are pending or `timeout` passes; true if rows wait.
    pub fn wait(&self, timeout: Duration) -> bool {
        let st = self.lock();
        let (st, _) = self
            .work
            .wait_timeout_while(st, timeout, |s| s.rows.len() < self.flush_rows)
            .unwrap_or_else(|p| p.into_inner());
        !st.rows.is_empty() || st.drained.is_some()
    }
}
