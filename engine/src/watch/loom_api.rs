//! Public handles on engine internals for the loom models in `loom-tests/`
//! (compiled only with `--cfg loom`). They call the engine's own code; nothing here
//! re-implements it.

use super::index::{Change, WatcherIndex};
use super::interval::RangeEnd;
use super::notify::deliverable;
use super::stream::StreamShared;
use super::types::{EventKind, Filters};
use super::watcher::WatcherCore;
use crate::sync::{lock, Arc, Mutex};
use std::collections::HashMap;

/// The watcher index with the notifier's rules for adding, canceling and matching.
pub struct IndexModel {
    index: WatcherIndex,
    stream: Arc<StreamShared>,
    cores: Mutex<HashMap<u64, Arc<WatcherCore>>>,
}

impl IndexModel {
    /// An empty index of `shards` shards.
    pub fn new(shards: usize) -> Self {
        IndexModel {
            index: WatcherIndex::new(shards),
            stream: StreamShared::new(1, 16, 1 << 20, None).0,
            cores: Mutex::new(HashMap::new()),
        }
    }

    /// Registers watcher `uid` on `key` (or the prefix range `[key, end)`) as synced,
    /// the way the notifier does: queue the add, then mark it synced.
    pub fn add(&self, uid: u64, key: &[u8], end: Option<&[u8]>) {
        let core = Arc::new(WatcherCore::new(
            uid,
            uid as i64,
            Arc::clone(&self.stream),
            key.to_vec(),
            end.map(|e| RangeEnd::Key(e.to_vec())),
            Filters::default(),
            false,
            false,
            0,
        ));
        lock(&self.cores).insert(uid, Arc::clone(&core));
        self.index.queue(Change::Add(Arc::clone(&core)));
        core.set_synced(true);
    }

    /// Cancels `uid` the way the notifier does: out of delivery at once, out of
    /// the index at the next apply.
    pub fn cancel(&self, uid: u64) {
        let core = lock(&self.cores).remove(&uid);
        if let Some(core) = core {
            core.set_synced(false);
            self.index.queue(Change::Remove(core));
        }
    }

    /// Applies queued changes and publishes new snapshots (the owner's job).
    pub fn apply(&self) {
        self.index.apply();
    }

    /// Watchers a PUT of `key` at revision 1 would be delivered to.
    pub fn deliverable(&self, key: &[u8]) -> Vec<u64> {
        let mut out = Vec::new();
        for s in 0..self.index.shard_count() {
            self.index.for_each_match(s, key, |w| {
                if deliverable(w, 1, EventKind::Put) {
                    out.push(w.uid);
                }
            });
        }
        out.sort_unstable();
        out
    }
}
