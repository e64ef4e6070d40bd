//! The key index: for every key, every retained change, ordered by (key, revision),
//! in a lock-free skip list, so readers never block the writer and vice versa.
//!
//! Each entry holds where its record lives in the log and the key's create revision
//! and version after the change (a DELETE is a tombstone ending a generation, like
//! etcd's `keyIndex` generations). The state of key `k` at revision `r` is the entry
//! with the greatest `(main, sub) <= (r, MAX)` for `k`: absent or a tombstone means
//! the key does not exist at `r`.
//!
//! Invariants:
//! - only the store's single writer inserts, and only entries of revisions above
//!   every committed revision, so a reader at revision `r <= committed` sees a fixed
//!   set of entries `<= r`, whatever the writer does meanwhile;
//! - compaction at `c` removes entries shadowed at `c` (every entry of a key below
//!   its newest entry `<= c`, and that one too if it is a tombstone), which changes no
//!   answer at any revision `>= c`;
//! - `loc` is updated (Release) only by compaction, from a segment location to the
//!   snapshot location of the same bytes, after the snapshot is published.

use std::ops::Bound;

use crossbeam_skiplist::SkipMap;

use crate::log::Loc;
use crate::sync::atomic::{AtomicU64, Ordering};

/// Ordering key of the index: key bytes, then revision.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct IndexKey {
    pub(crate) key: Vec<u8>,
    pub(crate) main: u64,
    pub(crate) sub: u32,
}

/// One retained change of a key.
#[derive(Debug)]
pub(crate) struct IndexEntry {
    loc: AtomicU64,
    pub(crate) create_revision: u64,
    pub(crate) version: u64,
    /// The key's lease after the change (0: none, and always for a tombstone).
    pub(crate) lease: i64,
    pub(crate) tombstone: bool,
}

impl IndexEntry {
    pub(crate) fn new(loc: Loc, create_revision: u64, version: u64, lease: i64, tombstone: bool) -> Self {
        IndexEntry { loc: AtomicU64::new(loc.0), create_revision, version, lease, tombstone }
    }

    pub(crate) fn loc(&self) -> Loc {
        Loc(self.loc.load(Ordering::Acquire))
    }

    pub(crate) fn set_loc(&self, loc: Loc) {
        self.loc.store(loc.0, Ordering::Release);
    }
}

/// A key's state at some revision, as found in the index.
#[derive(Clone, Debug)]
pub(crate) struct Found {
    pub(crate) key: Vec<u8>,
    pub(crate) main: u64,
    pub(crate) sub: u32,
    pub(crate) loc: Loc,
    pub(crate) create_revision: u64,
    pub(crate) version: u64,
    pub(crate) lease: i64,
}

impl Found {
    /// The key's state, without its value (which lives in the log).
    pub(crate) fn without_value(&self) -> crate::store::KeyValue {
        crate::store::KeyValue {
            key: self.key.clone(),
            value: Vec::new(),
            create_revision: self.create_revision,
            mod_revision: self.main,
            version: self.version,
            lease: self.lease,
        }
    }
}

#[derive(Default)]
pub(crate) struct KeyIndex {
    map: SkipMap<IndexKey, IndexEntry>,
}

/// The smallest key greater than `k`.
fn successor(k: &[u8]) -> Vec<u8> {
    let mut s = Vec::with_capacity(k.len() + 1);
    s.extend_from_slice(k);
    s.push(0);
    s
}

impl KeyIndex {
    pub(crate) fn insert(&self, key: Vec<u8>, main: u64, sub: u32, entry: IndexEntry) {
        self.map.insert(IndexKey { key, main, sub }, entry);
    }

    /// State of `key` at revision `rev`, if it exists then.
    pub(crate) fn get(&self, key: &[u8], rev: u64) -> Option<Found> {
        self.latest(&IndexKey { key: key.to_vec(), main: rev, sub: u32::MAX })
    }

    /// The state `probe` (a key at a revision, sub `MAX`) names: the key's newest
    /// entry at or below the revision, unless it is missing or a tombstone.
    fn latest(&self, probe: &IndexKey) -> Option<Found> {
        let e = self.map.upper_bound(Bound::Included(probe))?;
        if e.key().key != probe.key || e.value().tombstone {
            return None;
        }
        Some(Found {
            key: e.key().key.clone(),
            main: e.key().main,
            sub: e.key().sub,
            loc: e.value().loc(),
            create_revision: e.value().create_revision,
            version: e.value().version,
            lease: e.value().lease,
        })
    }

    /// Calls `f` with every key in `[start, end)` (`end = None`: unbounded) that
    /// exists at `rev`, in key order, until `f` returns false.
    pub(crate) fn scan(&self, start: &[u8], end: Option<&[u8]>, rev: u64, mut f: impl FnMut(Found) -> bool) {
        let mut cursor = IndexKey { key: start.to_vec(), main: 0, sub: 0 };
        loop {
            let Some(first) = self.map.lower_bound(Bound::Included(&cursor)) else { return };
            let k = &first.key().key;
            if end.is_some_and(|e| k.as_slice() >= e) {
                return;
            }
            let probe = IndexKey { key: k.clone(), main: rev, sub: u32::MAX };
            if let Some(found) = self.latest(&probe) {
                if !f(found) {
                    return;
                }
            }
            cursor = IndexKey { key: successor(&probe.key), main: 0, sub: 0 };
        }
    }

    /// The current location of the entry `(key, main, sub)`, if it is retained.
    pub(crate) fn loc_of(&self, key: &[u8], main: u64, sub: u32) -> Option<Loc> {
        let k = IndexKey { key: key.to_vec(), main, sub };
        self.map.get(&k).map(|e| e.value().loc())
    }

    /// Sets the location of the entry `(key, main, sub)`.
    pub(crate) fn set_loc(&self, key: &[u8], main: u64, sub: u32, loc: Loc) {
        let k = IndexKey { key: key.to_vec(), main, sub };
        if let Some(e) = self.map.get(&k) {
            e.value().set_loc(loc);
        }
    }

    /// Removes every entry shadowed at `rev` (see the module invariants).
    /// Returns the number removed.
    pub(crate) fn compact(&self, rev: u64) -> usize {
        let mut removed = 0;
        let mut doomed: Vec<IndexKey> = Vec::new();
        let mut cursor: Option<IndexKey> = None;
        loop {
            let next = match &cursor {
                None => self.map.front(),
                Some(c) => self.map.lower_bound(Bound::Included(c)),
            };
            let Some(first) = next else { break };
            let key = first.key().key.clone();
            // Entries of this key at or below rev, oldest first.
            let mut at_or_below: Vec<(IndexKey, bool)> = Vec::new();
            let lo = IndexKey { key: key.clone(), main: 0, sub: 0 };
            let hi = IndexKey { key: key.clone(), main: rev, sub: u32::MAX };
            for e in self.map.range(lo..=hi) {
                at_or_below.push((e.key().clone(), e.value().tombstone));
            }
            if let Some((_, last_is_tombstone)) = at_or_below.last() {
                let keep_last = !last_is_tombstone;
                let n = at_or_below.len() - usize::from(keep_last);
                doomed.extend(at_or_below.drain(..n).map(|(k, _)| k));
            }
            for k in doomed.drain(..) {
                if self.map.remove(&k).is_some() {
                    removed += 1;
                }
            }
            cursor = Some(IndexKey { key: successor(&key), main: 0, sub: 0 });
        }
        removed
    }

    /// Number of entries (for tests and metrics).
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}
