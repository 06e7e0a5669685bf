//! The archive's DIMSE services (PS3.4) over the network layers: what `duckpacs serve`
//! answers, on native threads.
//!
//! The hot services run here end to end: C-ECHO, C-STORE (straight into the archive's one
//! write path, [`crate::archive::Writer`]), C-FIND (identifier decoded and every pending
//! response encoded here), C-GET and C-MOVE (sub-operations read from the store and sent by
//! our C-STORE SCU). What needs the orchestrator goes through [`Host`], which the Python
//! binding implements: who may do what (once per association), the index queries
//! (DuckDB), transcoding for a peer that refuses the stored transfer syntax, the move
//! destinations of the configuration, and the rare services (Storage Commitment, Modality
//! Worklist C-FIND, MPPS N-CREATE/N-SET).
//!
//! - [`policy`]: the association policy (contexts, roles, permissions);
//! - [`identifier`]: C-FIND/C-GET/C-MOVE identifiers in, C-FIND answers out (with the
//!   Specific Character Set rules of PS3.5 6.1 and PS3.4 C.4.1.1.3);
//! - [`text`]: text into the bytes of a declared character set (ISO 2022 included);
//! - [`store`], [`find`], [`retrieve`], [`rare`]: the services; [`spool`]: where a large
//!   received instance waits for the store.

pub mod find;
pub mod identifier;
pub mod policy;
pub mod rare;
pub mod retrieve;
pub mod spool;
pub mod store;
pub mod text;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub use identifier::{Query, Row, RowValue};
pub use policy::ArchivePolicy;

use crate::net::dimse::Command;
use crate::store::Location;

/// What a peer may do, decided once per association by the [`Host`] (PS3.4 access is not
/// in the standard; these are duckpacs' permissions, see docs/ARCHITECTURE.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Permissions {
    pub echo: bool,
    pub store: bool,
    pub find: bool,
    pub get: bool,
    pub move_: bool,
}

/// A C-MOVE destination: its address, and how to dial it over TLS when it wants TLS.
#[derive(Clone)]
pub struct Destination {
    pub host: String,
    pub port: u16,
    pub tls: Option<crate::net::client::TlsDial>,
}

/// The association being decided or served, as the host sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub calling_ae: String,
    pub called_ae: String,
    pub addr: Option<SocketAddr>,
    /// The TLS session it came over (None on the plain listener).
    pub tls: Option<super::tls::TlsSession>,
}

impl Peer {
    pub fn describe(&self) -> String {
        match self.addr {
            Some(a) => format!("peer={} addr={a}", self.calling_ae),
            None => format!("peer={}", self.calling_ae),
        }
    }
}

/// A rejection the host asks for (PS3.8 9.3.4 reasons, rejected-permanent, service-user).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    CallingAeNotRecognized,
    CalledAeNotRecognized,
    NoReason,
}

/// One instance a C-GET or C-MOVE will send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax: String,
    pub location: Location,
}

/// The host's answer to a rare request (N-ACTION, N-CREATE, N-SET, worklist C-FIND).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RareReply {
    /// Status of the response to the request.
    pub status: u16,
    /// Answers sent with status Pending (0xFF00) before the final response: a worklist
    /// C-FIND's matches (PS3.4 K.4.1.2), each in the context's transfer syntax.
    pub pending: Vec<Vec<u8>>,
    /// Error Comment (0000,0902) of the final response, for a failure the peer should read.
    pub comment: Option<String>,
    /// Affected SOP Instance UID of the response when the host chose it (an N-CREATE-RQ
    /// without one: the SCP assigns it, PS3.7 10.1.5.1.2).
    pub instance_uid: Option<String>,
    /// A dataset for the response, in the context's transfer syntax.
    pub dataset: Option<Vec<u8>>,
    /// An N-EVENT-REPORT to send after the response (Storage Commitment's result, PS3.4
    /// J.3.3): event type and event information in the context's transfer syntax.
    pub report: Option<(u16, Vec<u8>)>,
}

/// What the orchestrator provides (the Python binding calls into the interpreter).
pub trait Host: Send + Sync {
    /// Once per association: the peer's permissions, or a rejection.
    fn admit(&self, peer: &Peer) -> Result<Permissions, Refusal>;
    /// The matches of a query at `level` (PATIENT, STUDY, SERIES, IMAGE), each with the
    /// return keys' values (PS3.4 C.4.1.2).
    fn find(&self, level: &str, query: &Query) -> Result<Vec<Row>, String>;
    /// The instances under the matches of a query (PS3.4 C.4.2.2, C.4.3.2).
    fn locate(&self, level: &str, query: &Query) -> Result<Vec<Located>, String>;
    /// The dataset of `stream` (a stored Part 10 stream) transcoded to `transfer_syntax`,
    /// for a peer that accepted no context with the stored one (PS3.5 A.1-A.2).
    fn transcode(&self, stream: &[u8], transfer_syntax: &str) -> Result<Vec<u8>, String>;
    /// Where a C-MOVE destination AE title is, if it is a configured peer.
    fn destination(&self, ae_title: &str) -> Option<Destination>;
    /// A request of a rare service (N-ACTION, N-CREATE, N-SET, a worklist C-FIND), with its
    /// dataset in `transfer_syntax`.
    fn rare(
        &self,
        peer: &Peer,
        command: &Command,
        dataset: &[u8],
        transfer_syntax: &str,
    ) -> RareReply;
    /// An N-EVENT-REPORT the peer did not take on its own association (it released first):
    /// the host delivers it on a new one.
    fn report_elsewhere(&self, peer: &Peer, command: &Command, event_type: u16, info: &[u8]);
}

/// Counters of one association, logged when it ends (issue: the log shows arrivals).
#[derive(Debug, Default)]
pub struct Tally {
    pub stored: AtomicU64,
    pub duplicates: AtomicU64,
    pub failed: AtomicU64,
    pub bytes: AtomicU64,
    pub finds: AtomicU64,
    pub sent: AtomicU64,
}

impl Tally {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Logs one line when an association ends: who, what arrived and left, how long.
pub struct Ending {
    pub peer: Peer,
    pub tally: Arc<Tally>,
    pub started: Instant,
}

impl Drop for Ending {
    fn drop(&mut self) {
        let t = &self.tally;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        log::info!(
            "association ended {} stored={} duplicates={} failures={} bytes={} finds={} sent={} seconds={:.2}",
            self.peer.describe(),
            load(&t.stored),
            load(&t.duplicates),
            load(&t.failed),
            load(&t.bytes),
            load(&t.finds),
            load(&t.sent),
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// The per-association context every service gets.
pub struct Context {
    pub host: Arc<dyn Host>,
    pub peer: Peer,
    pub permissions: Permissions,
    pub tally: Arc<Tally>,
    pub our_ae: String,
}

impl Context {
    /// Whether the peer may use `what`; logs a refusal.
    pub fn allows(&self, allowed: bool, what: &str) -> bool {
        if !allowed {
            log::warn!(
                "{what} refused reason=\"not authorized\" {}",
                self.peer.describe()
            );
        }
        allowed
    }
}
