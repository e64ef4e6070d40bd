//! What every part of the engine knows of one watcher: immutable identity, key
//! range, filters and start, plus two flags the notifier flips.
//!
//! Invariant: `synced` is true exactly while the watcher is in the synced state;
//! only the notifier (the one owner of watcher state) changes it, and matchers
//! deliver a revision to a watcher only while it is true and the revision is at or
//! after `min_rev`.

use super::interval::RangeEnd;
use super::stream::StreamShared;
use super::types::{Filters, WatchId};
use crate::sync::atomic::{AtomicBool, Ordering};
use crate::sync::Arc;

pub(crate) struct WatcherCore {
    /// Unique in the hub; picks the index shard.
    pub(crate) uid: u64,
    /// The id its stream knows it by.
    pub(crate) id: WatchId,
    pub(crate) stream: Arc<StreamShared>,
    pub(crate) key: Vec<u8>,
    /// `None`: just `key`.
    pub(crate) end: Option<RangeEnd>,
    pub(crate) filters: Filters,
    pub(crate) prev_kv: bool,
    pub(crate) progress_notify: bool,
    /// First revision it may receive.
    pub(crate) min_rev: u64,
    pub(crate) synced: AtomicBool,
    /// Set when events were sent since the last periodic progress tick.
    pub(crate) sent_since_tick: AtomicBool,
}

impl WatcherCore {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        uid: u64,
        id: WatchId,
        stream: Arc<StreamShared>,
        key: Vec<u8>,
        end: Option<RangeEnd>,
        filters: Filters,
        prev_kv: bool,
        progress_notify: bool,
        min_rev: u64,
    ) -> Self {
        WatcherCore {
            uid,
            id,
            stream,
            key,
            end,
            filters,
            prev_kv,
            progress_notify,
            min_rev,
            synced: AtomicBool::new(false),
            sent_since_tick: AtomicBool::new(false),
        }
    }

    /// Whether `k` is in the watcher's key range.
    pub(crate) fn contains(&self, k: &[u8]) -> bool {
        match &self.end {
            None => k == self.key.as_slice(),
            Some(RangeEnd::Unbounded) => k >= self.key.as_slice(),
            Some(RangeEnd::Key(e)) => k >= self.key.as_slice() && k < e.as_slice(),
        }
    }

    pub(crate) fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub(crate) fn set_synced(&self, on: bool) {
        self.synced.store(on, Ordering::Release);
    }
}
