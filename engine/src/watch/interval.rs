//! An immutable interval tree over byte-string ranges that are stored elsewhere:
//! the tree keeps only their indices (`u32`), so a key is stored once, in its range
//! record, however many structures refer to it.
//!
//! Layout: the range indices sorted by `(start, end)` in one array; the implicit
//! balanced tree rooted at the middle of every sub-array; `max_end[i]` names the range
//! with the greatest end in the subtree rooted at `i` (CLRS 14.3 augmentation). A stab
//! at point `p` skips any subtree whose greatest end is `<= p` and any right part whose
//! starts exceed `p`, so it costs `O(log n + k)` for `k` ranges containing `p`.
//!
//! Invariant: the tree is built from, and stabbed against, the same [`Spans`]; a
//! range must not change or be freed while a tree built over it is used (the index
//! rebuilds its tree before the next match whenever a range came or went).

use std::cmp::Ordering;

/// Exclusive end of a range: a key, or unbounded (etcd's `"\0"` range end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End<'a> {
    Key(&'a [u8]),
    Unbounded,
}

impl End<'_> {
    fn above(&self, p: &[u8]) -> bool {
        match self {
            End::Key(e) => p < *e,
            End::Unbounded => true,
        }
    }
}

impl Ord for End<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (End::Key(a), End::Key(b)) => a.cmp(b),
            (End::Key(_), End::Unbounded) => Ordering::Less,
            (End::Unbounded, End::Key(_)) => Ordering::Greater,
            (End::Unbounded, End::Unbounded) => Ordering::Equal,
        }
    }
}

impl PartialOrd for End<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Where the tree's ranges live.
pub(crate) trait Spans {
    fn start(&self, i: u32) -> &[u8];
    fn end(&self, i: u32) -> End<'_>;

    /// Order of ranges `a` and `b` by `(start, end)`.
    fn order(&self, a: u32, b: u32) -> Ordering {
        self.start(a).cmp(self.start(b)).then_with(|| self.end(a).cmp(&self.end(b)))
    }
}

#[derive(Default)]
pub(crate) struct IntervalTree {
    order: Vec<u32>,
    max_end: Vec<u32>,
}

impl IntervalTree {
    /// Builds the tree from range indices given in `(start, end)` order.
    pub(crate) fn build(order: Vec<u32>, spans: &impl Spans) -> Self {
        debug_assert!(order.windows(2).all(|w| spans.order(w[0], w[1]) != Ordering::Greater));
        let mut t = IntervalTree { max_end: order.clone(), order };
        let n = t.order.len();
        t.augment(0, n, spans);
        t
    }

    fn augment(&mut self, lo: usize, hi: usize, spans: &impl Spans) -> Option<u32> {
        if lo >= hi {
            return None;
        }
        let mid = lo + (hi - lo) / 2;
        let l = self.augment(lo, mid, spans);
        let r = self.augment(mid + 1, hi, spans);
        let mut m = self.order[mid];
        for c in [l, r].into_iter().flatten() {
            if spans.end(c) > spans.end(m) {
                m = c;
            }
        }
        self.max_end[mid] = m;
        Some(m)
    }

    /// Ranges in the tree.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    /// Calls `f` with every range containing `p`.
    pub(crate) fn stab(&self, spans: &impl Spans, p: &[u8], f: &mut impl FnMut(u32)) {
        self.stab_in(spans, 0, self.order.len(), p, f);
    }

    fn stab_in(&self, spans: &impl Spans, lo: usize, hi: usize, p: &[u8], f: &mut impl FnMut(u32)) {
        if lo >= hi {
            return;
        }
        let mid = lo + (hi - lo) / 2;
        if !spans.end(self.max_end[mid]).above(p) {
            return; // every range below ends at or before p
        }
        self.stab_in(spans, lo, mid, p, f);
        let i = self.order[mid];
        if spans.start(i) <= p {
            if spans.end(i).above(p) {
                f(i);
            }
            self.stab_in(spans, mid + 1, hi, p, f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    struct V(Vec<(Vec<u8>, Option<Vec<u8>>)>);

    impl Spans for V {
        fn start(&self, i: u32) -> &[u8] {
            &self.0[i as usize].0
        }
        fn end(&self, i: u32) -> End<'_> {
            self.0[i as usize].1.as_deref().map_or(End::Unbounded, End::Key)
        }
    }

    #[test]
    fn stab_matches_a_linear_scan() {
        let seed: u64 = std::env::var("ARGUS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
        println!("interval tree seed {seed} (replay with ARGUS_SEED={seed})");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for _ in 0..200 {
            let n = rng.random_range(0..40);
            let mut v = V(Vec::new());
            for _ in 0..n {
                let a: u8 = rng.random_range(0..20);
                let e = if rng.random_bool(0.1) { None } else { Some(vec![a + rng.random_range(1..8)]) };
                v.0.push((vec![a], e));
            }
            let mut order: Vec<u32> = (0..v.0.len() as u32).collect();
            order.sort_by(|&a, &b| v.order(a, b));
            let tree = IntervalTree::build(order, &v);
            assert_eq!(tree.len(), v.0.len());
            for p in 0..30u8 {
                let mut got = Vec::new();
                tree.stab(&v, &[p], &mut |i| got.push(i));
                got.sort();
                let want: Vec<u32> =
                    (0..v.0.len() as u32).filter(|&i| v.start(i) <= [p].as_slice() && v.end(i).above(&[p])).collect();
                assert_eq!(got, want, "seed {seed}, point {p}");
            }
        }
    }
}
