//! The watcher index: which synced groups a key reaches.
//!
//! Algorithm. The index is sharded by stream (a stream's groups all live in one
//! shard, so one shard's match yields every group of a stream at once). A shard
//! stores each distinct key range once, in a [`Range`] record of its range slab;
//! exact-key ranges are found by a hash table of range indices (hashed by key, so
//! the key bytes are not stored twice), the other ranges by an [`IntervalTree`] of
//! range indices. A range record holds its first `Synced` group (at most one per
//! stream and class); a range with more keeps the rest in the shard's overflow map. Matching a key is one hash lookup plus one stab, then a
//! walk of the synced lists it reached: its cost grows with the groups reached,
//! not with their watchers.
//!
//! Invariants:
//! - the index has one owner (the notifier), which changes it between revisions and
//!   matches against it (possibly from several threads at once, through `&self`)
//!   only after [`Shard::prepare`]; Rust's borrow rules make a match during a change
//!   impossible, so there are no snapshots to publish and nothing to copy;
//! - a range record lives exactly as long as some group (in any state) refers to it
//!   (`refs`), so group records can keep its index;
//! - the tree covers every live non-exact range once `prepare` has run; ranges are
//!   added to it in batches (sort the new ones, merge with the sorted old ones), so
//!   registering N range watchers costs O(N log N) overall, not O(N) per watcher.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use super::interval::{End, IntervalTree, Spans};
use super::slab::{Record, Slab};

/// A watcher's key range as requested: `key`, and an exclusive end that is a key,
/// nothing (one key) or unbounded. Stored as one allocation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct KeyRange {
    /// The key, then the end key when bounded.
    bytes: Box<[u8]>,
    key_len: u32,
    kind: RangeKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum RangeKind {
    Exact,
    Bounded,
    Unbounded,
}

impl KeyRange {
    /// One key.
    pub(crate) fn exact(key: &[u8]) -> KeyRange {
        KeyRange { bytes: key.into(), key_len: key.len() as u32, kind: RangeKind::Exact }
    }

    /// `[key, end)`; `end` must be above `key`.
    pub(crate) fn bounded(key: &[u8], end: &[u8]) -> KeyRange {
        debug_assert!(end > key);
        let mut b = Vec::with_capacity(key.len() + end.len());
        b.extend_from_slice(key);
        b.extend_from_slice(end);
        KeyRange { bytes: b.into(), key_len: key.len() as u32, kind: RangeKind::Bounded }
    }

    /// Every key `>= key`.
    pub(crate) fn from_key(key: &[u8]) -> KeyRange {
        KeyRange { bytes: key.into(), key_len: key.len() as u32, kind: RangeKind::Unbounded }
    }

    pub(crate) fn key(&self) -> &[u8] {
        &self.bytes[..self.key_len as usize]
    }

    pub(crate) fn end(&self) -> End<'_> {
        match self.kind {
            RangeKind::Exact => End::Key(&[]),
            RangeKind::Bounded => End::Key(&self.bytes[self.key_len as usize..]),
            RangeKind::Unbounded => End::Unbounded,
        }
    }

    /// `(key, range_end)` as a client sends them: `range_end` is empty for one
    /// key and `"\0"` for every key from `key` on (the inverse of the parse in
    /// [`WatchController::watch`](super::WatchController::watch)).
    pub(crate) fn as_sent(&self) -> (&[u8], &[u8]) {
        match self.kind {
            RangeKind::Exact => (self.key(), &[]),
            RangeKind::Bounded => (self.key(), &self.bytes[self.key_len as usize..]),
            RangeKind::Unbounded => (self.key(), &[0]),
        }
    }

    pub(crate) fn is_exact(&self) -> bool {
        self.kind == RangeKind::Exact
    }

    /// Whether `k` is in the range.
    pub(crate) fn contains(&self, k: &[u8]) -> bool {
        match self.kind {
            RangeKind::Exact => k == self.key(),
            RangeKind::Bounded => k >= self.key() && k < &self.bytes[self.key_len as usize..],
            RangeKind::Unbounded => k >= self.key(),
        }
    }
}

/// No group.
const NONE: u32 = u32::MAX;

/// One distinct key range of a shard.
pub(crate) struct Range {
    pub(crate) range: KeyRange,
    /// Groups (in any state) that refer to it.
    refs: u32,
    /// Its first synced group (`NONE`: none); more are in `Shard::more_synced`.
    first_synced: u32,
}

/// Ranges are named only by the index's own tables and its groups, which never keep
/// a stale index: no generation.
impl Record for Range {}

struct Ranges<'a>(&'a Slab<Range>);

impl Spans for Ranges<'_> {
    fn start(&self, i: u32) -> &[u8] {
        self.0.at(i).1.range.key()
    }
    fn end(&self, i: u32) -> End<'_> {
        self.0.at(i).1.range.end()
    }
}

/// One shard of the index.
#[derive(Default)]
pub(crate) struct Shard {
    ranges: Slab<Range>,
    /// Exact ranges, by key.
    exact: HashTable<u32>,
    /// Synced groups of a range beyond its first (a range that several streams or
    /// classes watch).
    more_synced: hashbrown::HashMap<u32, Vec<u32>>,
    /// Other ranges, by key and end (to find an existing one when interning).
    spans: HashTable<u32>,
    hasher: hashbrown::DefaultHashBuilder,
    tree: IntervalTree,
    /// The non-exact ranges in the tree, in tree order.
    tree_order: Vec<u32>,
    /// Non-exact ranges created since the last build.
    added: Vec<u32>,
    /// Non-exact ranges whose last reference went since the last build: their
    /// records stay (with no references) until the next build drops them from the
    /// tree, so no index in the tree ever names a reused slot.
    dying: usize,
    tree_dirty: bool,
    /// Groups in the synced lists of this shard.
    synced_groups: usize,
    /// Of those, groups at non-exact ranges.
    synced_range_groups: usize,
}

impl Shard {
    fn hash_exact(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn hash_span(&self, r: &KeyRange) -> u64 {
        self.hasher.hash_one((r.kind, &r.bytes[..], r.key_len))
    }

    /// The index of the range equal to `r`, created if needed, with one more
    /// reference.
    pub(crate) fn intern(&mut self, r: KeyRange) -> u32 {
        let exact = r.is_exact();
        let h = if exact { self.hash_exact(r.key()) } else { self.hash_span(&r) };
        let ranges = &self.ranges;
        let table = if exact { &self.exact } else { &self.spans };
        if let Some(&i) = table.find(h, |&i| ranges.at(i).1.range == r) {
            self.ranges.at_mut(i).refs += 1;
            return i;
        }
        let handle = self.ranges.insert(Range { range: r, refs: 1, first_synced: NONE });
        let ranges = &self.ranges;
        if exact {
            let hasher = &self.hasher;
            self.exact.insert_unique(h, handle.index, |&i| hasher.hash_one(ranges.at(i).1.range.key()));
        } else {
            let hasher = &self.hasher;
            self.spans.insert_unique(h, handle.index, |&i| {
                let r = &ranges.at(i).1.range;
                hasher.hash_one((r.kind, &r.bytes[..], r.key_len))
            });
            self.added.push(handle.index);
            self.tree_dirty = true;
        }
        handle.index
    }

    /// Drops one reference to range `i`; frees it with the last.
    pub(crate) fn release(&mut self, i: u32) {
        let r = self.ranges.at_mut(i);
        r.refs -= 1;
        if r.refs > 0 {
            return;
        }
        let (handle, r) = self.ranges.at(i);
        debug_assert!(r.first_synced == NONE, "a range with synced groups has references");
        let exact = r.range.is_exact();
        let h = if exact { self.hash_exact(r.range.key()) } else { self.hash_span(&r.range) };
        let table = if exact { &mut self.exact } else { &mut self.spans };
        if let Ok(entry) = table.find_entry(h, |&x| x == i) {
            entry.remove();
        }
        if exact {
            self.ranges.remove(handle);
        } else {
            // Freed by the next `prepare`, which takes it out of the tree first.
            self.tree_dirty = true;
            self.dying += 1;
            if self.dying > 4096 {
                self.prepare();
            }
        }
    }

    pub(crate) fn range(&self, i: u32) -> &Range {
        self.ranges.at(i).1
    }

    /// The synced groups of range `i`.
    pub(crate) fn synced(&self, i: u32) -> impl Iterator<Item = u32> + '_ {
        let first = self.ranges.at(i).1.first_synced;
        let more = if first == NONE { None } else { self.more_synced.get(&i) };
        (first != NONE).then_some(first).into_iter().chain(more.into_iter().flatten().copied())
    }

    /// Adds group `g` to range `i`'s synced groups.
    pub(crate) fn link_synced(&mut self, i: u32, g: u32) {
        let r = self.ranges.at_mut(i);
        if r.first_synced == NONE {
            r.first_synced = g;
        } else {
            self.more_synced.entry(i).or_default().push(g);
        }
        self.synced_groups += 1;
        if !self.ranges.at(i).1.range.is_exact() {
            self.synced_range_groups += 1;
        }
    }

    /// Removes group `g` from range `i`'s synced groups.
    pub(crate) fn unlink_synced(&mut self, i: u32, g: u32) {
        let r = self.ranges.at_mut(i);
        if r.first_synced == g {
            r.first_synced = NONE;
            if let Some(more) = self.more_synced.get_mut(&i) {
                r.first_synced = more.pop().expect("no empty overflow lists");
                if more.is_empty() {
                    self.more_synced.remove(&i);
                }
            }
        } else if let Some(more) = self.more_synced.get_mut(&i) {
            if let Some(at) = more.iter().position(|&x| x == g) {
                more.swap_remove(at);
            }
            if more.is_empty() {
                self.more_synced.remove(&i);
            }
        }
        self.synced_groups -= 1;
        if !self.ranges.at(i).1.range.is_exact() {
            self.synced_range_groups -= 1;
        }
    }

    /// Whether any synced group could match anything here.
    pub(crate) fn is_active(&self) -> bool {
        self.synced_groups > 0
    }

    /// Brings the tree up to date with the ranges (call before matching).
    pub(crate) fn prepare(&mut self) {
        if !self.tree_dirty {
            return;
        }
        self.tree_dirty = false;
        let ranges = &self.ranges;
        let spans = Ranges(ranges);
        let live = |i: &u32| ranges.at(*i).1.refs > 0;
        // Every non-exact range is in the old tree or among the added ones, so the
        // dying ones are all found here.
        let (mut added, mut dead): (Vec<u32>, Vec<u32>) = std::mem::take(&mut self.added).into_iter().partition(live);
        added.sort_unstable_by(|&a, &b| spans.order(a, b));
        let old = std::mem::take(&mut self.tree_order);
        let mut order = Vec::with_capacity(old.len() + added.len());
        let mut new = added.into_iter().peekable();
        for i in old {
            if !live(&i) {
                dead.push(i);
                continue;
            }
            while let Some(n) = new.next_if(|&n| spans.order(n, i).is_lt()) {
                order.push(n);
            }
            order.push(i);
        }
        order.extend(new);
        self.tree = IntervalTree::build(order.clone(), &spans);
        self.tree_order = order;
        debug_assert_eq!(dead.len(), self.dying);
        for i in dead {
            let h = self.ranges.handle(i);
            self.ranges.remove(h);
        }
        self.dying = 0;
    }

    /// Calls `f` with every synced group whose range holds `key`. The shard must be
    /// prepared.
    pub(crate) fn for_each_synced(&self, key: &[u8], mut f: impl FnMut(u32)) {
        debug_assert!(!self.tree_dirty, "match on an unprepared shard");
        let ranges = &self.ranges;
        let h = self.hash_exact(key);
        if let Some(&i) = self.exact.find(h, |&i| ranges.at(i).1.range.key() == key) {
            self.synced(i).for_each(&mut f);
        }
        if self.synced_range_groups > 0 {
            self.tree.stab(&Ranges(ranges), key, &mut |i| self.synced(i).for_each(&mut f));
        }
    }

    /// Range records, live or waiting for the next build to drop them (tests).
    #[cfg(test)]
    pub(crate) fn range_count(&self) -> usize {
        self.ranges.len()
    }

    /// Changes not yet applied to the tree: ranges added or freed since the last
    /// build (tests).
    #[cfg(test)]
    pub(crate) fn pending_changes(&self) -> usize {
        self.added.len() + self.dying + usize::from(self.tree_dirty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;

    /// The shard agrees with a linear scan over every synced group's range, through
    /// random interning, linking, unlinking and releasing in batches.
    #[test]
    fn matches_agree_with_a_linear_scan() {
        let seed: u64 = std::env::var("ARGUS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
        println!("watcher index seed {seed} (replay with ARGUS_SEED={seed})");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut shard = Shard::default();
        // group id -> (range index, range, synced)
        let mut live: BTreeMap<u32, (u32, KeyRange, bool)> = BTreeMap::new();
        let mut next_group = 0;
        for _round in 0..80 {
            for _ in 0..rng.random_range(0..30) {
                let roll = rng.random_range(0..10);
                if !live.is_empty() && roll < 3 {
                    let g = *live.keys().nth(rng.random_range(0..live.len())).unwrap();
                    let (i, _, synced) = live.remove(&g).unwrap();
                    if synced {
                        shard.unlink_synced(i, g);
                    }
                    shard.release(i);
                } else if !live.is_empty() && roll < 5 {
                    let g = *live.keys().nth(rng.random_range(0..live.len())).unwrap();
                    let e = live.get_mut(&g).unwrap();
                    if e.2 {
                        shard.unlink_synced(e.0, g);
                    } else {
                        shard.link_synced(e.0, g);
                    }
                    e.2 = !e.2;
                } else {
                    let a: u8 = rng.random_range(b'a'..b'k');
                    let r = match rng.random_range(0..3) {
                        0 => KeyRange::exact(&[a]),
                        1 => KeyRange::bounded(&[a], &[a + rng.random_range(1..5)]),
                        _ => KeyRange::from_key(&[a]),
                    };
                    let i = shard.intern(r.clone());
                    assert_eq!(shard.range(i).range, r);
                    let synced = rng.random_bool(0.7);
                    if synced {
                        shard.link_synced(i, next_group);
                    }
                    live.insert(next_group, (i, r, synced));
                    next_group += 1;
                }
            }
            shard.prepare();
            let distinct: std::collections::HashSet<_> = live.values().map(|v| v.1.clone()).collect();
            assert_eq!(shard.range_count(), distinct.len(), "seed {seed}: one record per distinct range");
            for p in b'a'..=b'o' {
                for key in [vec![p], vec![p, b'x']] {
                    let mut got = Vec::new();
                    shard.for_each_synced(&key, |g| got.push(g));
                    got.sort();
                    let want: Vec<u32> =
                        live.iter().filter(|(_, (_, r, s))| *s && r.contains(&key)).map(|(g, _)| *g).collect();
                    assert_eq!(got, want, "seed {seed}, key {key:?}");
                }
            }
        }
    }
}
