//! The DICOM network layers (PS3.8 upper layer, PS3.7 DIMSE), pure Rust, blocking
//! `std::net` sockets, one thread per association:
//!
//! - [`pdu`]: the seven PDUs of PS3.8 9.3 and their items, decoded with every length
//!   checked before use;
//! - [`assoc`]: negotiation, acceptor ([`assoc::acceptor`]) and requestor
//!   ([`assoc::requestor`]) halves, ending in [`Negotiated`];
//! - [`dimse`]: the command set of PS3.7 Annex E, the status table, dataset sinks;
//! - [`association`]: an established association over any [`Transport`]: DIMSE messages
//!   (datasets streamed), release, abort, ARTIM and idle timers;
//! - [`service`]: what the application plugs in ([`Policy`], [`Service`], [`Router`],
//!   [`EchoScp`]); [`server`]: the listener; [`client`]: connect, C-ECHO, C-STORE and the
//!   reply loop for the other requests.
//!
//! Logging goes through the `log` facade (target `duckpacs_core::net::...`).

pub mod assoc;
pub mod association;
pub mod client;
pub mod dimse;
pub mod error;
pub mod getscu;
pub mod pdu;
pub mod scp;
pub mod server;
pub mod service;
pub mod storescu;
pub mod tls;
pub mod transport;

pub use assoc::acceptor::{Acceptance, ContextDecision, TransferSyntaxes};
pub use assoc::requestor::Proposal;
pub use assoc::{Negotiated, PresentationContext, Role};
pub use association::{Association, Connection, Received, Timeouts};
pub use client::{connect, connect_with, Reply, TlsDial};
pub use dimse::{Command, CommandField, DatasetSink, Status};
pub use error::{Error, Result, Timer};
pub use server::{Load, Server, ServerConfig};
pub use service::{Accepted, AssociationRequest, EchoScp, Policy, Router, Service};
pub use transport::Transport;
