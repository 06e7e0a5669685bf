//! DIMSE (PS3.7): the command set of every C- and N- message ([`Command`]), the status
//! codes ([`Status`]), and where a received dataset goes ([`DatasetSink`]). How messages
//! are cut into and assembled from P-DATA fragments (PS3.7 Annex E, PS3.8 9.3.5) is the
//! association's job (`net::association`), which streams dataset fragments to a sink so
//! that no instance is ever held whole in memory.

pub mod command;
pub mod sink;
pub mod status;
#[cfg(test)]
mod tests;

pub use command::{
    priority, tag, Command, CommandField, SubOperations, MAX_COMMAND_LEN, VERIFICATION_SOP_CLASS,
};
pub use sink::{DatasetSink, Discard, LimitedVec};
pub use status::{Category, Status};
