//! # argus-engine
//!
//! The library half of Argus, a watch engine with etcd v3 semantics: an append-only,
//! memory-mapped [revision log](log), an MVCC [store] on top of it, and (in later
//! modules) the watch machinery. It has no async runtime in it.
//!
//! Start at [`store::Store`]; `engine/FORMAT.md` specifies the bytes on disk and
//! `ARCHITECTURE.md` at the repository root the data flow and invariants.

#![deny(missing_docs)]

pub mod check;
pub mod error;
pub mod log;
pub mod range;
pub mod store;
pub(crate) mod sync;
pub mod watch;

pub use error::{Error, Result};
pub use range::KeySpan;
