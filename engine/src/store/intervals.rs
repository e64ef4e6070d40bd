//! etcd 3.4's rule for writes of one txn touching the same key (`checkIntervals` in
//! `etcdserver/api/v3rpc/key.go`), across nested txns.
//!
//! For the ops of one branch: its deletes are collected first; then, nested txn by
//! nested txn in order, the puts of the nested txn's success and failure branches
//! (recursively collected, with their deletes) must not be a key put by an earlier
//! nested txn of this branch nor a key in a delete collected so far (this branch's
//! own deletes and those of the earlier nested txns; the two branches of one nested
//! txn may put the same key, as only one of them runs); the nested txn's deletes are
//! added after its puts are checked. Last, this branch's own puts must not repeat a
//! collected put nor fall in a collected delete. Deletes may overlap each other.
//!
//! Consequences the store relies on (and handles): an earlier nested txn may put a
//! key that a *later* sibling nested txn deletes (the order of the checks lets it
//! through, as etcd does), so a delete can meet a put of the same txn; and a delete
//! with range end `"\0"` (every key from its key on) conflicts with no put, because
//! etcd's interval arithmetic reads that end as the smallest key (so a put after such
//! a delete may put a key the delete removed). A delete whose range end is at or
//! before its key selects nothing and conflicts with nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use super::TxnOp;
use crate::error::{Error, Result};
use crate::range::KeySpan;

/// The keys some delete covers, as disjoint half-open intervals `[start, end)`
/// keyed by start (overlapping and touching ones merged on insert): membership of a
/// key is one lookup, whatever the number of deletes.
#[derive(Default)]
pub(super) struct Deleted {
    intervals: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Deleted {
    /// Adds the keys of a delete's span (none for a `"\0"` end or an empty span:
    /// see the module doc).
    fn add(&mut self, span: KeySpan<'_>) {
        let (start, end) = match span {
            KeySpan::One(k) => {
                let mut end = k.to_vec();
                end.push(0);
                (k.to_vec(), end)
            }
            KeySpan::Between(a, b) => (a.to_vec(), b.to_vec()),
            KeySpan::From(_) | KeySpan::Empty => return,
        };
        self.insert(start, end);
    }

    /// Inserts `[start, end)`, merged with every interval it overlaps or touches.
    fn insert(&mut self, mut start: Vec<u8>, mut end: Vec<u8>) {
        let below = self.intervals.range::<[u8], _>((Bound::Unbounded, Bound::Included(start.as_slice()))).next_back();
        if let Some((s, e)) = below {
            if *e >= start {
                start = s.clone();
            }
        }
        // Every interval starting in `[start, end]` joins (the one found below too).
        while let Some((s, e)) =
            self.intervals.range::<[u8], _>((Bound::Included(start.as_slice()), Bound::Unbounded)).next()
        {
            if *s > end {
                break;
            }
            let s = s.clone();
            if *e > end {
                end = e.clone();
            }
            self.intervals.remove(&s);
        }
        self.intervals.insert(start, end);
    }

    /// Whether some delete covers `key`.
    pub(super) fn contains(&self, key: &[u8]) -> bool {
        self.intervals
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .is_some_and(|(_, end)| key < end.as_slice())
    }

    /// Adds every key of `other`.
    fn union(&mut self, other: Deleted) {
        for (s, e) in other.intervals {
            self.insert(s, e);
        }
    }
}

/// Checks the writes of a branch `ops` (and of the txns nested in it) by the rule of
/// the module doc; returns the keys they put and the keys they delete, for the
/// enclosing branch's check.
///
/// # Errors
///
/// [`Error::DuplicateKey`]. Spans must have been validated (keys not empty).
pub(super) fn check(ops: &[TxnOp]) -> Result<(BTreeSet<&[u8]>, Deleted)> {
    let mut dels = Deleted::default();
    for op in ops {
        if let TxnOp::DeleteRange { key, range_end, .. } = op {
            dels.add(KeySpan::parse(key, range_end)?);
        }
    }
    let mut puts: BTreeSet<&[u8]> = BTreeSet::new();
    for op in ops {
        let TxnOp::Txn { success, failure, .. } = op else { continue };
        let (puts_then, dels_then) = check(success)?;
        let (puts_else, dels_else) = check(failure)?;
        for k in &puts_then {
            if puts.contains(k) || dels.contains(k) {
                return Err(Error::DuplicateKey);
            }
            puts.insert(k);
        }
        for k in &puts_else {
            // The same key in both branches of one nested txn is fine: one runs.
            if (puts.contains(k) && !puts_then.contains(k)) || dels.contains(k) {
                return Err(Error::DuplicateKey);
            }
            puts.insert(k);
        }
        dels.union(dels_then);
        dels.union(dels_else);
    }
    for op in ops {
        let (TxnOp::Put { key, .. } | TxnOp::PutKeepValue { key, .. }) = op else { continue };
        if puts.contains(key.as_slice()) || dels.contains(key) {
            return Err(Error::DuplicateKey);
        }
        puts.insert(key);
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RangeOptions;

    fn put(k: &str) -> TxnOp {
        TxnOp::Put { key: k.into(), value: b"v".to_vec(), prev_kv: false, lease: crate::store::PutLease::None }
    }

    fn del(k: &str, end: &str) -> TxnOp {
        TxnOp::DeleteRange { key: k.into(), range_end: end.into(), prev_kv: false }
    }

    fn txn(success: Vec<TxnOp>, failure: Vec<TxnOp>) -> TxnOp {
        TxnOp::Txn { compares: Vec::new(), success, failure }
    }

    fn ok(ops: &[TxnOp]) -> bool {
        match check(ops) {
            Ok(_) => true,
            Err(Error::DuplicateKey) => false,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn deleted_merges_intervals_and_answers_membership() {
        let mut d = Deleted::default();
        d.add(KeySpan::Between(b"c", b"e"));
        d.add(KeySpan::One(b"a"));
        d.add(KeySpan::Between(b"b", b"c"));
        d.add(KeySpan::Between(b"d", b"g"));
        d.add(KeySpan::From(b"a"));
        d.add(KeySpan::Empty);
        for (k, want) in
            [("a", true), ("a\0", false), ("aa", false), ("b", true), ("c", true), ("f", true), ("g", false)]
        {
            assert_eq!(d.contains(k.as_bytes()), want, "{k:?}");
        }
        assert_eq!(d.intervals.len(), 2, "[a, a\\0) and [b, g): {:?}", d.intervals);
    }

    /// Each case was checked against etcd 3.4.23 (see
    /// `server/tests/conformance/differences.rs` for the ones run side by side).
    #[test]
    fn follows_etcd_across_nested_txns() {
        let range = TxnOp::Range { key: b"a".to_vec(), range_end: Vec::new(), options: RangeOptions::default() };
        // One level, as before nesting.
        assert!(!ok(&[put("a"), put("a")]));
        assert!(!ok(&[put("b"), del("a", "c")]));
        assert!(!ok(&[del("a", "c"), put("b")]));
        assert!(ok(&[del("a", "c"), del("b", "d"), range.clone()]));
        // A "\0" end conflicts with nothing; neither does an empty span.
        assert!(ok(&[del("a", "\0"), put("b")]));
        assert!(ok(&[del("b", "a"), put("b")]));
        // Across levels: an outer put or delete against a nested put.
        assert!(!ok(&[put("a"), txn(vec![put("a")], vec![])]));
        assert!(!ok(&[txn(vec![], vec![put("a")]), put("a")]));
        assert!(!ok(&[del("a", ""), txn(vec![put("a")], vec![])]));
        assert!(!ok(&[txn(vec![del("a", "b")], vec![]), put("a")]));
        assert!(!ok(&[txn(vec![txn(vec![put("a")], vec![])], vec![]), put("a")]));
        // The two branches of one nested txn may put the same key; siblings may not.
        assert!(ok(&[txn(vec![put("a")], vec![put("a")])]));
        assert!(!ok(&[txn(vec![put("a")], vec![]), txn(vec![], vec![put("a")])]));
        // A nested put then a later sibling's delete of it passes; the other order
        // does not.
        assert!(ok(&[txn(vec![put("a")], vec![]), txn(vec![del("a", "")], vec![])]));
        assert!(!ok(&[txn(vec![del("a", "")], vec![]), txn(vec![put("a")], vec![])]));
        // An outer delete after a nested put is collected first, so it conflicts.
        assert!(!ok(&[txn(vec![put("a")], vec![]), del("a", "")]));
        // Deletes at different levels may overlap.
        assert!(ok(&[del("a", "z"), txn(vec![del("b", "")], vec![del("c", "\0")])]));
    }
}
