//! The watch engine: etcd v3 watch semantics on the revision log.
//!
//! Clients open a [`WatchStream`] on a [`WatchHub`] and create watchers on a key, a
//! range or a prefix from a revision; each receives every matching change after its
//! start, in order, exactly once, whole revisions at a time, with progress
//! bookmarks. Writers never wait for watchers: the notifier thread follows the
//! store's committed revision after the fact. Modules follow the data flow:
//!
//! - [`notify`](self::notify): the notifier, sole owner of watcher state;
//! - [`index`](self::index): which synced watchers a key reaches (sharded, hash map +
//!   [`interval`](self::interval) tree, immutable snapshots);
//! - [`stream`](self::stream): bounded multiplexed streams and the victim protocol;
//! - [`victims`](self::victims): the retry queue of drained streams;
//! - [`catchup`](self::catchup): unsynced watchers served from the log, in parallel.

mod catchup;
mod delivery;
mod group;
mod hub;
mod index;
mod interval;
mod notify;
mod slab;
mod stream;
mod types;
mod victims;

pub use delivery::{Delivery, Ids, Item, Part};
#[cfg(loom)]
pub use hub::ManualNotifier;
pub use hub::{MetricsSnapshot, WatchHealth, WatchHub, WatchMetrics, WatchOptions};
pub use stream::{WatchController, WatchError, WatchReceiver, WatchStream};
pub use types::*;

#[cfg(test)]
mod tests;
