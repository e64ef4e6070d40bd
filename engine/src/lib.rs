//! # argus-engine
//!
//! The library half of Argus, a watch engine with etcd v3 semantics: an append-only,
//! memory-mapped [revision log](log), an MVCC [store] on top of it with etcd's
//! [leases](lease), the [watch]
//! machinery (a [`watch::WatchHub`] whose notifier thread fans each committed
//! revision out to the watchers of every stream; it queues a watcher's `created`
//! response when it registers the watcher, before any of its events), and a
//! [checker](check) of etcd's watch guarantees for tests. It has no async runtime
//! in it.
//!
//! Start at [`store::Store`] and [`watch::WatchHub`]; `engine/FORMAT.md` specifies
//! the bytes on disk (and of a [backup]) and `ARCHITECTURE.md` at the repository root the data flow and
//! invariants.

#![deny(missing_docs)]

pub mod auth;
pub mod backup;
pub mod check;
pub mod error;
pub mod lease;
pub mod log;
pub mod range;
pub mod store;
pub(crate) mod sync;
pub mod watch;

pub use error::{Error, Result};
pub use range::KeySpan;
