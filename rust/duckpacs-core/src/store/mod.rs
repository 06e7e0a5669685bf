//! Storage layer: the append-only, compressed, checksummed instance store.
//!
//! A store is a folder with `packs/`. Each writer (one per process, by writer id) appends
//! records to its own packs `packs/wWWWWW-SSSSSSSS.dpk`, holding an exclusive `flock` on
//! `packs/wWWWWW.lock`; any process reads any pack. `put` returns a [`Location`] (pack id,
//! offset, length) that the index records, so reads are one positional read. Records are
//! described in `docs/STORAGE-FORMAT.md`.
//!
//! Durability is a group commit: writers append under a mutex, then wait for an fsync that
//! covers their record; one thread syncs on behalf of all that are waiting.

mod compact;
mod densify;
mod dicts;
pub mod filter;
pub mod format;
pub mod pack;
mod read;
pub mod record;
pub mod remote;
mod stream;
mod tail;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_densify;
#[cfg(test)]
mod tests_remote;
mod verify;
mod writer;

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use densify::{DensifyReport, DENSIFY_WRITER};
use dicts::Dicts;
pub use format::{Kind, Location, Meta, Provenance};
pub use read::{Entry, PackFile};
pub use record::{Arrival, Levels, ARRIVAL};
pub use remote::{EvictReport, Remote, RemoteConfig, RemoteStats, UploadReport};
pub use stream::{describe_file, InstanceReader, MappedFile, STREAM_MIN};
pub use tail::Tail;
pub use verify::{Damage, Stats, VerifyReport};
use writer::Writer;

use crate::error::{Error, Result};

/// Dictionaries kept in memory at once (a prepared encoder dictionary takes a few MB).
const MAX_DICTS: usize = 32;

/// Read handles kept open at once.
const MAX_OPEN_PACKS: usize = 128;

/// Tunables of a store.
#[derive(Debug, Clone)]
pub struct Options {
    /// A pack is rolled when the next record would take it past this size.
    pub pack_size: u64,
    pub levels: Levels,
    /// Headers of a series kept to train its dictionary (0 disables dictionaries).
    pub dict_samples: usize,
    /// Largest dictionary trained.
    pub dict_size: usize,
    /// fsync before acknowledging (turn off only for throw-away stores).
    pub sync: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            pack_size: 1 << 30,
            levels: Levels::default(),
            dict_samples: 4,
            dict_size: 128 << 10,
            sync: true,
        }
    }
}

fn lock_file(path: &Path, exclusive: bool) -> Result<Option<File>> {
    let f = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    // SAFETY: flock on a file descriptor we own; no memory is shared with the kernel.
    let rc = unsafe { libc::flock(f.as_raw_fd(), op | libc::LOCK_NB) };
    if rc == 0 {
        Ok(Some(f))
    } else {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            Ok(None)
        } else {
            Err(Error::io(path, e))
        }
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Result of [`Store::compact`].
#[derive(Debug, Clone, Default)]
pub struct CompactReport {
    pub packs_rewritten: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Records that moved: (old location, new location). The index must follow them.
    pub moved: Vec<(Location, Location)>,
}

/// How long a moved record's old location still reads in this process (see [`Moves`]).
const FORWARD_FOR: Duration = Duration::from_secs(600);

/// Records this process moved (densifying, compaction): old location -> new one. A reader
/// that found a location in the index just before the index followed the move (a long
/// retrieval) still reads the record, for [`FORWARD_FOR`] after the move.
#[derive(Default)]
struct Moves {
    map: HashMap<Location, Location>,
    batches: VecDeque<(Instant, Vec<Location>)>,
}

impl Moves {
    fn add(&mut self, moved: &[(Location, Location)]) {
        let now = Instant::now();
        while let Some((at, _)) = self.batches.front() {
            if now.duration_since(*at) < FORWARD_FOR {
                break;
            }
            if let Some((_, olds)) = self.batches.pop_front() {
                for o in olds {
                    self.map.remove(&o);
                }
            }
        }
        self.map.extend(moved.iter().copied());
        self.batches
            .push_back((now, moved.iter().map(|(o, _)| *o).collect()));
    }

    fn resolve(&self, mut loc: Location) -> Location {
        // A record moved twice (densified, then compacted) is followed to its last home.
        for _ in 0..8 {
            match self.map.get(&loc) {
                Some(n) => loc = *n,
                None => break,
            }
        }
        loc
    }
}

/// An open store.
pub struct Store {
    root: PathBuf,
    packs_dir: PathBuf,
    opts: Options,
    writer: Option<Writer>,
    files: Mutex<HashMap<u64, Arc<PackFile>>>,
    /// Object storage: this node's uploads, other nodes' packs (issue 26).
    remote: Option<Arc<Remote>>,
    dicts: Mutex<Dicts>,
    moves: Mutex<Moves>,
    densifier: Mutex<Option<densify::Densifier>>,
    /// Deletes and the end of a densify job take turns: a tombstone never lands on a record
    /// between the job's last look at the tombstones and its victim's removal.
    gate: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Store {
    /// Opens (creating if needed) the store in `root`. With a writer id, this process
    /// appends to its own packs and recovers their torn tail; without, it only reads.
    pub fn open(root: impl AsRef<Path>, writer: Option<u32>, opts: Options) -> Result<Store> {
        let root = root.as_ref().to_path_buf();
        let packs_dir = root.join("packs");
        let writer = match writer {
            None => None,
            Some(id) => {
                if id > pack::MAX_WRITER {
                    return Err(Error::Store {
                        path: root,
                        offset: 0,
                        message: format!("writer id {id} above {}", pack::MAX_WRITER),
                    });
                }
                std::fs::create_dir_all(&packs_dir).map_err(|e| Error::io(&packs_dir, e))?;
                Some(Self::open_writer(&packs_dir, id)?)
            }
        };
        // A rewrite (compaction, densifying) whose process died is finished or undone
        // before anyone reads the packs, so readers never see a victim and its copy both.
        compact::recover_dead_journals(&packs_dir, writer.as_ref().map(|w| w.id))?;
        Ok(Store {
            root,
            packs_dir,
            opts,
            writer,
            files: Mutex::new(HashMap::new()),
            remote: None,
            dicts: Mutex::new(Dicts::default()),
            moves: Mutex::new(Moves::default()),
            densifier: Mutex::new(None),
            gate: Mutex::new(()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the record that was at `loc` is now, when this process moved it.
    pub fn forward(&self, loc: Location) -> Location {
        let m = lock(&self.moves);
        if m.map.is_empty() {
            loc
        } else {
            m.resolve(loc)
        }
    }

    pub(super) fn add_moves(&self, moved: &[(Location, Location)]) {
        if !moved.is_empty() {
            lock(&self.moves).add(moved);
        }
    }
}
