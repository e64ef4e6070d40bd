//! An immutable interval tree over byte-string ranges, built once from a sorted set
//! of distinct ranges and then only read (stabbed) by any number of threads.
//!
//! Layout: the ranges sorted by `(start, end)` in one array; the implicit balanced
//! tree rooted at the middle of every sub-array; `max_end[i]` is the greatest end in
//! the subtree rooted at `i` (CLRS 14.3 augmentation). A stab at point `p` skips any
//! subtree whose `max_end <= p` and any right part whose starts exceed `p`, so it
//! costs `O(log n + k)` for `k` ranges containing `p`. Each node holds every value
//! registered for its exact range, so a thousand watchers on one prefix cost one
//! node visit.

/// Exclusive end of a range: a key, or unbounded (etcd's `"\0"` range end).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum RangeEnd {
    Key(Vec<u8>),
    Unbounded,
}

impl RangeEnd {
    fn above(&self, p: &[u8]) -> bool {
        match self {
            RangeEnd::Key(e) => p < e.as_slice(),
            RangeEnd::Unbounded => true,
        }
    }
}

pub(crate) struct IntervalTree<V> {
    starts: Vec<Vec<u8>>,
    ends: Vec<RangeEnd>,
    max_end: Vec<RangeEnd>,
    values: Vec<V>,
}

impl<V> Default for IntervalTree<V> {
    fn default() -> Self {
        IntervalTree { starts: Vec::new(), ends: Vec::new(), max_end: Vec::new(), values: Vec::new() }
    }
}

impl<V> IntervalTree<V> {
    /// Builds the tree from distinct ranges given in `(start, end)` order.
    pub(crate) fn from_sorted(items: impl IntoIterator<Item = ((Vec<u8>, RangeEnd), V)>) -> Self {
        let mut t = IntervalTree::default();
        for ((s, e), v) in items {
            debug_assert!(t.starts.last().is_none_or(|l: &Vec<u8>| l <= &s));
            t.starts.push(s);
            t.ends.push(e);
            t.values.push(v);
        }
        t.max_end = t.ends.clone();
        let n = t.starts.len();
        t.augment(0, n);
        t
    }

    fn augment(&mut self, lo: usize, hi: usize) -> Option<usize> {
        if lo >= hi {
            return None;
        }
        let mid = lo + (hi - lo) / 2;
        let l = self.augment(lo, mid);
        let r = self.augment(mid + 1, hi);
        let mut m = self.ends[mid].clone();
        for c in [l, r].into_iter().flatten() {
            if self.max_end[c] > m {
                m = self.max_end[c].clone();
            }
        }
        self.max_end[mid] = m;
        Some(mid)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.starts.len()
    }

    /// Calls `f` with the value of every range containing `p`.
    pub(crate) fn stab<'a>(&'a self, p: &[u8], f: &mut impl FnMut(&'a V)) {
        self.stab_in(0, self.starts.len(), p, f);
    }

    fn stab_in<'a>(&'a self, lo: usize, hi: usize, p: &[u8], f: &mut impl FnMut(&'a V)) {
        if lo >= hi {
            return;
        }
        let mid = lo + (hi - lo) / 2;
        if !self.max_end[mid].above(p) {
            return; // every range below ends at or before p
        }
        self.stab_in(lo, mid, p, f);
        if self.starts[mid].as_slice() <= p {
            if self.ends[mid].above(p) {
                f(&self.values[mid]);
            }
            self.stab_in(mid + 1, hi, p, f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn end(e: Option<&[u8]>) -> RangeEnd {
        e.map_or(RangeEnd::Unbounded, |e| RangeEnd::Key(e.to_vec()))
    }

    #[test]
    fn stab_matches_a_linear_scan() {
        let seed: u64 = std::env::var("ARGUS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
        println!("interval tree seed {seed} (replay with ARGUS_SEED={seed})");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for _ in 0..200 {
            let n = rng.random_range(0..40);
            let mut ranges = std::collections::BTreeMap::new();
            for i in 0..n {
                let a: u8 = rng.random_range(0..20);
                let e = if rng.random_bool(0.1) { None } else { Some(vec![a + rng.random_range(1..8)]) };
                ranges.insert((vec![a], end(e.as_deref())), i);
            }
            let tree = IntervalTree::from_sorted(ranges.iter().map(|(k, v)| (k.clone(), *v)));
            assert_eq!(tree.len(), ranges.len());
            for p in 0..30u8 {
                let mut got = Vec::new();
                tree.stab(&[p], &mut |v| got.push(*v));
                got.sort();
                let mut want: Vec<_> = ranges
                    .iter()
                    .filter(|((s, e), _)| s.as_slice() <= [p].as_slice() && e.above(&[p]))
                    .map(|(_, v)| *v)
                    .collect();
                want.sort();
                assert_eq!(got, want, "seed {seed}, point {p}");
            }
        }
    }
}
