//! The watcher index: which synced watchers a key reaches.
//!
//! Algorithm. Watchers are spread over shards by their unique number. Each shard
//! publishes an immutable snapshot: exact-key watchers in a hash map (key → every
//! watcher of that key), range and prefix watchers in an [`IntervalTree`] whose node
//! holds every watcher of that exact range. Matching a key against a shard is one
//! hash lookup plus one stab, on a snapshot loaded without a lock (arc-swap), so any
//! number of threads match the shards in parallel.
//!
//! Invariants:
//! - changes (add, remove) are queued by anyone with [`WatcherIndex::queue`] and
//!   applied in batches by the shard's single owner (the notifier) in
//!   [`WatcherIndex::apply`], which rebuilds only the shards that changed and then
//!   publishes them (Release); a matcher sees either the old or the new snapshot of a
//!   shard, never a half-built one;
//! - the index only says which watchers *may* receive an event; whether one does is
//!   decided by its own state (`WatcherCore::synced`, its start revision), so a
//!   watcher removed from delivery takes effect at once, before the next rebuild.

use std::collections::{BTreeMap, HashMap};

use super::interval::{IntervalTree, RangeEnd};
use super::watcher::WatcherCore;
use crate::sync::{lock, Arc, Mutex, SwapCell};

type Set = Arc<[Arc<WatcherCore>]>;

#[derive(Default)]
struct ShardSnapshot {
    /// Keys are shared (`Arc`) so that publishing a new snapshot copies pointers,
    /// not key bytes.
    exact: HashMap<Arc<[u8]>, Set>,
    tree: Arc<IntervalTree<Set>>,
    /// Watchers in this shard (read by tests).
    #[cfg_attr(not(test), allow(dead_code))]
    watchers: usize,
    /// Watchers with a range (not an exact key) in this shard.
    range_watchers: usize,
}

#[derive(Default)]
struct ShardMaster {
    exact: HashMap<Vec<u8>, Members>,
    ranges: BTreeMap<(Vec<u8>, RangeEnd), Members>,
    /// Exact keys whose set changed since the last publish.
    dirty_keys: Vec<Vec<u8>>,
    ranges_dirty: bool,
    watchers: usize,
}

/// The watchers of one exact key or range: inline while there is one (the common
/// case of watchers on distinct keys costs no map), a map beyond.
#[derive(Default)]
enum Members {
    #[default]
    Empty,
    One(Arc<WatcherCore>),
    Many(BTreeMap<u64, Arc<WatcherCore>>),
}

impl Members {
    /// Adds `w`; returns whether it was new.
    fn insert(&mut self, w: Arc<WatcherCore>) -> bool {
        match std::mem::take(self) {
            Members::Empty => {
                *self = Members::One(w);
                true
            }
            Members::One(o) if o.uid == w.uid => {
                *self = Members::One(w);
                false
            }
            Members::One(o) => {
                *self = Members::Many(BTreeMap::from([(o.uid, o), (w.uid, w)]));
                true
            }
            Members::Many(mut m) => {
                let new = m.insert(w.uid, w).is_none();
                *self = Members::Many(m);
                new
            }
        }
    }

    /// Removes `uid`; returns whether it was there.
    fn remove(&mut self, uid: u64) -> bool {
        match self {
            Members::Empty => false,
            Members::One(o) if o.uid == uid => {
                *self = Members::Empty;
                true
            }
            Members::One(_) => false,
            Members::Many(m) => {
                let r = m.remove(&uid).is_some();
                if m.is_empty() {
                    *self = Members::Empty;
                }
                r
            }
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, Members::Empty)
    }

    fn len(&self) -> usize {
        match self {
            Members::Empty => 0,
            Members::One(_) => 1,
            Members::Many(m) => m.len(),
        }
    }

    fn to_set(&self) -> Set {
        match self {
            Members::Empty => Arc::from(Vec::new()),
            Members::One(o) => Arc::from(vec![Arc::clone(o)]),
            Members::Many(m) => m.values().cloned().collect(),
        }
    }
}

/// A queued change of the index.
pub(crate) enum Change {
    Add(Arc<WatcherCore>),
    Remove(Arc<WatcherCore>),
}

struct Shard {
    snapshot: SwapCell<ShardSnapshot>,
    pending: Mutex<Vec<Change>>,
    master: Mutex<ShardMaster>,
}

pub(crate) struct WatcherIndex {
    shards: Box<[Shard]>,
}

impl WatcherIndex {
    pub(crate) fn new(shards: usize) -> Self {
        let shards = (0..shards.max(1))
            .map(|_| Shard {
                snapshot: SwapCell::new(Arc::new(ShardSnapshot::default())),
                pending: Mutex::new(Vec::new()),
                master: Mutex::new(ShardMaster::default()),
            })
            .collect();
        WatcherIndex { shards }
    }

    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    fn shard_of(&self, w: &WatcherCore) -> &Shard {
        &self.shards[(w.uid % self.shards.len() as u64) as usize]
    }

    /// Queues a change; it takes effect at the next [`WatcherIndex::apply`].
    pub(crate) fn queue(&self, change: Change) {
        let w = match &change {
            Change::Add(w) | Change::Remove(w) => w,
        };
        lock(&self.shard_of(w).pending).push(change);
    }

    /// Applies queued changes and publishes the shards that changed. Called by the
    /// index's owner only.
    pub(crate) fn apply(&self) {
        for shard in self.shards.iter() {
            let changes = std::mem::take(&mut *lock(&shard.pending));
            if changes.is_empty() {
                continue;
            }
            let mut m = lock(&shard.master);
            for c in changes {
                match c {
                    Change::Add(w) => {
                        let inserted = match &w.end {
                            None => {
                                m.dirty_keys.push(w.key.clone());
                                m.exact.entry(w.key.clone()).or_default().insert(Arc::clone(&w))
                            }
                            Some(end) => {
                                m.ranges_dirty = true;
                                m.ranges.entry((w.key.clone(), end.clone())).or_default().insert(Arc::clone(&w))
                            }
                        };
                        m.watchers += usize::from(inserted);
                    }
                    Change::Remove(w) => {
                        let removed = match &w.end {
                            None => {
                                m.dirty_keys.push(w.key.clone());
                                let r = m.exact.get_mut(&w.key).is_some_and(|s| s.remove(w.uid));
                                if m.exact.get(&w.key).is_some_and(Members::is_empty) {
                                    m.exact.remove(&w.key);
                                }
                                r
                            }
                            Some(end) => {
                                m.ranges_dirty = true;
                                let k = (w.key.clone(), end.clone());
                                let r = m.ranges.get_mut(&k).is_some_and(|s| s.remove(w.uid));
                                if m.ranges.get(&k).is_some_and(Members::is_empty) {
                                    m.ranges.remove(&k);
                                }
                                r
                            }
                        };
                        m.watchers -= usize::from(removed);
                    }
                }
            }
            let old = shard.snapshot.load();
            let mut exact = old.exact.clone();
            let mut dirty = std::mem::take(&mut m.dirty_keys);
            // One rebuild per changed key, however many changes it had.
            dirty.sort_unstable();
            dirty.dedup();
            for k in dirty {
                match m.exact.get(&k) {
                    Some(set) => {
                        exact.insert(Arc::from(k), set.to_set());
                    }
                    None => {
                        exact.remove(k.as_slice());
                    }
                }
            }
            let tree = if m.ranges_dirty {
                m.ranges_dirty = false;
                Arc::new(IntervalTree::from_sorted(m.ranges.iter().map(|(k, set)| (k.clone(), set.to_set()))))
            } else {
                Arc::clone(&old.tree)
            };
            let range_watchers = m.ranges.values().map(Members::len).sum();
            shard.snapshot.store(Arc::new(ShardSnapshot { exact, tree, watchers: m.watchers, range_watchers }));
        }
    }

    /// Calls `f` with every watcher of shard `shard` whose key or range holds `key`.
    pub(crate) fn for_each_match(&self, shard: usize, key: &[u8], mut f: impl FnMut(&Arc<WatcherCore>)) {
        let snap = self.shards[shard].snapshot.load();
        if let Some(set) = snap.exact.get(key) {
            set.iter().for_each(&mut f);
        }
        snap.tree.stab(key, &mut |set: &Set| set.iter().for_each(&mut f));
    }

    /// An upper bound on the watchers `key` can reach, cheap to compute: its exact
    /// watchers plus every watcher with a range in a shard that has ranges.
    pub(crate) fn candidates(&self, key: &[u8]) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let snap = s.snapshot.load();
                snap.exact.get(key).map_or(0, |set| set.len()) + snap.range_watchers
            })
            .sum()
    }

    /// Watchers in the published snapshots.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.snapshot.load().watchers).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::stream::StreamShared;
    use crate::watch::types::Filters;
    use rand::{Rng, SeedableRng};

    fn core(uid: u64, key: &[u8], end: Option<RangeEnd>, stream: &Arc<StreamShared>) -> Arc<WatcherCore> {
        Arc::new(WatcherCore::new(
            uid,
            uid as i64,
            Arc::clone(stream),
            key.to_vec(),
            end,
            Filters::default(),
            false,
            false,
            0,
        ))
    }

    /// The index agrees with a linear scan over every registered watcher, through
    /// random adds and removes in batches.
    #[test]
    fn matches_agree_with_a_linear_scan() {
        let seed: u64 = std::env::var("ARGUS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
        println!("watcher index seed {seed} (replay with ARGUS_SEED={seed})");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let stream = StreamShared::detached(1);
        let index = WatcherIndex::new(4);
        let mut live: BTreeMap<u64, Arc<WatcherCore>> = BTreeMap::new();
        let mut uid = 0;
        for _round in 0..60 {
            for _ in 0..rng.random_range(0..30) {
                if !live.is_empty() && rng.random_bool(0.3) {
                    let k = *live.keys().nth(rng.random_range(0..live.len())).unwrap();
                    let w = live.remove(&k).unwrap();
                    index.queue(Change::Remove(w));
                } else {
                    uid += 1;
                    let a: u8 = rng.random_range(b'a'..b'k');
                    let w = match rng.random_range(0..3) {
                        0 => core(uid, &[a], None, &stream),
                        1 => core(uid, &[a], Some(RangeEnd::Key(vec![a + rng.random_range(1..5)])), &stream),
                        _ => core(uid, &[a], Some(RangeEnd::Unbounded), &stream),
                    };
                    live.insert(uid, Arc::clone(&w));
                    index.queue(Change::Add(w));
                }
            }
            index.apply();
            assert_eq!(index.len(), live.len(), "seed {seed}");
            for p in b'a'..=b'o' {
                for key in [vec![p], vec![p, b'x']] {
                    let mut got = Vec::new();
                    for s in 0..index.shard_count() {
                        index.for_each_match(s, &key, |w| got.push(w.uid));
                    }
                    got.sort();
                    let want: Vec<u64> = live.values().filter(|w| w.contains(&key)).map(|w| w.uid).collect();
                    assert_eq!(got, want, "seed {seed}, key {key:?}");
                }
            }
        }
    }
}
