//! Shared by the integration tests: an in-memory oracle of the store's etcd
//! semantics (one `BTreeMap` per revision), written from the specification rather
//! than from the engine's code, and checks that hold a `Store` against it.
//!
//! Every test binary uses a different part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;

use argus_engine::log::record::RecordKind;
use argus_engine::log::OwnedRecord;
use argus_engine::store::{
    Compare, CompareOp, CompareTarget, DeleteResult, KeyValue, PutLease, PutResult, RangeOptions, RangeResult, Store,
    StoreOptions, TxnOp, TxnOpResult, TxnResult,
};
use argus_engine::Error;

/// The live keys at one revision.
pub type State = BTreeMap<Vec<u8>, KeyValue>;

/// An engine error reduced to what a test compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrKind {
    EmptyKey,
    InvalidRange,
    DuplicateKey,
    KeyNotFound,
    TooManyOps,
    KeyTooLarge,
    ValueTooLarge,
    RequestTooLarge,
    Compacted { requested: u64, compact_revision: u64 },
    FutureRevision { requested: u64, current: u64 },
    Poisoned,
    NoSpace,
    Corrupt,
    Locked,
    Io,
    Other(String),
}

/// Reduces an engine error to its [`ErrKind`].
pub fn kind(e: &Error) -> ErrKind {
    match e {
        Error::EmptyKey => ErrKind::EmptyKey,
        Error::InvalidRange => ErrKind::InvalidRange,
        Error::DuplicateKey => ErrKind::DuplicateKey,
        Error::KeyNotFound => ErrKind::KeyNotFound,
        Error::TooManyOps { .. } => ErrKind::TooManyOps,
        Error::KeyTooLarge { .. } => ErrKind::KeyTooLarge,
        Error::ValueTooLarge { .. } => ErrKind::ValueTooLarge,
        Error::RequestTooLarge { .. } => ErrKind::RequestTooLarge,
        Error::Compacted { requested, compact_revision } => {
            ErrKind::Compacted { requested: *requested, compact_revision: *compact_revision }
        }
        Error::FutureRevision { requested, current } => {
            ErrKind::FutureRevision { requested: *requested, current: *current }
        }
        Error::Poisoned(_) => ErrKind::Poisoned,
        Error::NoSpace(_) => ErrKind::NoSpace,
        Error::Corrupt { .. } => ErrKind::Corrupt,
        Error::Locked(_) => ErrKind::Locked,
        Error::Io { .. } => ErrKind::Io,
        other => ErrKind::Other(other.to_string()),
    }
}

/// Maps the error of an engine result to its [`ErrKind`].
pub fn k<T>(r: argus_engine::Result<T>) -> Result<T, ErrKind> {
    r.map_err(|e| kind(&e))
}

/// The store's request limits, as the oracle applies them.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_key: usize,
    pub max_value: usize,
    pub max_request: usize,
    pub max_ops: usize,
}

impl Limits {
    pub fn of(o: &StoreOptions) -> Limits {
        Limits {
            max_key: o.max_key_bytes,
            max_value: o.max_value_bytes,
            max_request: o.max_request_bytes,
            max_ops: o.max_txn_ops,
        }
    }
}

/// Whether key `k` lies in the span `(key, end)`: `end` empty is the one key,
/// `"\0"` every key `>= key`, otherwise `[key, end)`.
pub fn span_contains(key: &[u8], end: &[u8], k: &[u8]) -> bool {
    match end {
        [] => k == key,
        [0] => k >= key,
        e => k >= key && k < e,
    }
}

/// Whether etcd 3.4's duplicate-key check counts key `k` as deleted by a delete of
/// `(key, end)`: its interval arithmetic reads the end `"\0"` as the smallest key, so
/// such a delete covers no key there (though it deletes every key from `key` on).
fn delete_conflicts(key: &[u8], end: &[u8], k: &[u8]) -> bool {
    match end {
        [] => k == key,
        [0] => false,
        e => k >= key && k < e,
    }
}

/// A `(key, range_end)` pair.
type Span = (Vec<u8>, Vec<u8>);

/// The puts and deletes of a branch, after checking them as etcd 3.4's
/// `checkIntervals` does (written from its description, naively): a branch's
/// deletes first; then each nested txn's puts (both branches) against the puts of
/// the nested txns before it (a key in both branches of one nested txn is fine) and
/// against the deletes so far, its deletes added after; last, the branch's own puts
/// against all the puts and deletes collected.
fn check_writes(ops: &[TxnOp]) -> Result<(Vec<Vec<u8>>, Vec<Span>), ErrKind> {
    let mut dels: Vec<Span> = ops
        .iter()
        .filter_map(|o| match o {
            TxnOp::DeleteRange { key, range_end, .. } => Some((key.clone(), range_end.clone())),
            _ => None,
        })
        .collect();
    let deleted = |dels: &[Span], k: &[u8]| dels.iter().any(|(key, end)| delete_conflicts(key, end, k));
    let mut puts: Vec<Vec<u8>> = Vec::new();
    for o in ops {
        let TxnOp::Txn { success, failure, .. } = o else { continue };
        let (puts_then, dels_then) = check_writes(success)?;
        let (puts_else, dels_else) = check_writes(failure)?;
        for k in &puts_then {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(ErrKind::DuplicateKey);
            }
        }
        for k in &puts_else {
            if (puts.contains(k) && !puts_then.contains(k)) || deleted(&dels, k) {
                return Err(ErrKind::DuplicateKey);
            }
        }
        puts.extend(puts_then);
        puts.extend(puts_else);
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for o in ops {
        if let TxnOp::Put { key, .. } | TxnOp::PutKeepValue { key, .. } = o {
            if puts.contains(key) || deleted(&dels, key) {
                return Err(ErrKind::DuplicateKey);
            }
            puts.push(key.clone());
        }
    }
    Ok((puts, dels))
}

fn set_nested_revision(responses: &mut [TxnOpResult], revision: u64) {
    for r in responses {
        if let TxnOpResult::Txn(t) = r {
            t.revision = revision;
            set_nested_revision(&mut t.responses, revision);
        }
    }
}

fn check_span(key: &[u8], end: &[u8]) -> Result<(), ErrKind> {
    if key.is_empty() {
        return Err(ErrKind::EmptyKey);
    }
    match end {
        [] | [0] => Ok(()),
        e if e <= key => Err(ErrKind::InvalidRange),
        _ => Ok(()),
    }
}

fn holds(c: &Compare, kv: &KeyValue) -> bool {
    let ord = match &c.target {
        CompareTarget::Value(v) => kv.value.cmp(v),
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::CreateRevision(v) => kv.create_revision.cmp(v),
        CompareTarget::ModRevision(v) => kv.mod_revision.cmp(v),
        CompareTarget::Lease(v) => kv.lease.cmp(v),
    };
    match c.op {
        CompareOp::Equal => ord.is_eq(),
        CompareOp::Greater => ord.is_gt(),
        CompareOp::Less => ord.is_lt(),
        CompareOp::NotEqual => ord.is_ne(),
    }
}

/// Builds a range answer over `src` (without the header revision, set by callers).
fn range_over(src: &State, key: &[u8], end: &[u8], o: &RangeOptions, revision: u64) -> RangeResult {
    let all: Vec<&KeyValue> = src.values().filter(|kv| span_contains(key, end, &kv.key)).collect();
    let count = all.len();
    let mut kvs: Vec<KeyValue> = if o.count_only {
        Vec::new()
    } else {
        let n = if o.limit == 0 { count } else { o.limit.min(count) };
        all[..n].iter().map(|kv| (*kv).clone()).collect()
    };
    if o.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    RangeResult { more: !o.count_only && count > kvs.len(), kvs, count, revision }
}

/// The oracle: the state at every revision since 1, the events of every revision,
/// and the compaction revision.
#[derive(Clone, Debug)]
pub struct Model {
    /// `states[r]`: live keys at revision `r` (`states[0]` is unused and empty).
    pub states: Vec<State>,
    /// `events[r]`: the records revision `r` appended.
    pub events: Vec<Vec<OwnedRecord>>,
    pub compact_rev: u64,
    /// Whether `compact(0)` succeeded on the never-compacted store since it was
    /// opened (etcd's compaction revision starts at -1; the store remembers this
    /// while it is open: reset it on a reopen).
    pub compacted_zero: bool,
    pub limits: Limits,
}

impl Model {
    /// A fresh store: revision 1, no keys.
    pub fn new(limits: Limits) -> Model {
        Model {
            states: vec![State::new(), State::new()],
            events: vec![Vec::new(), Vec::new()],
            compact_rev: 0,
            compacted_zero: false,
            limits,
        }
    }

    pub fn current(&self) -> u64 {
        self.states.len() as u64 - 1
    }

    pub fn state(&self, rev: u64) -> &State {
        &self.states[rev as usize]
    }

    /// First revision reads may ask for.
    pub fn first_readable(&self) -> u64 {
        self.compact_rev.max(1)
    }

    /// Forgets revisions after `rev` (what a crash under `fsync=never` may do).
    pub fn truncate(&mut self, rev: u64) {
        assert!(rev >= 1 && rev <= self.current());
        self.states.truncate(rev as usize + 1);
        self.events.truncate(rev as usize + 1);
    }

    fn check_key(&self, key: &[u8]) -> Result<(), ErrKind> {
        if key.is_empty() {
            return Err(ErrKind::EmptyKey);
        }
        if key.len() > self.limits.max_key {
            return Err(ErrKind::KeyTooLarge);
        }
        Ok(())
    }

    /// A range read, as `Store::range`.
    pub fn range(&self, key: &[u8], end: &[u8], o: RangeOptions) -> Result<RangeResult, ErrKind> {
        check_span(key, end)?;
        if key.len() + end.len() > self.limits.max_request {
            return Err(ErrKind::RequestTooLarge);
        }
        let current = self.current();
        let rev = if o.revision == 0 { current } else { o.revision };
        if rev > current {
            return Err(ErrKind::FutureRevision { requested: rev, current });
        }
        if rev < self.compact_rev {
            return Err(ErrKind::Compacted { requested: rev, compact_revision: self.compact_rev });
        }
        Ok(range_over(self.state(rev), key, end, &o, current))
    }

    /// etcd's `checkTxnRequest`: the largest of the compare and branch op counts
    /// within `max_ops`, nested txns within what their enclosing txn leaves.
    fn validate_txn(
        &self,
        compares: &[Compare],
        success: &[TxnOp],
        failure: &[TxnOp],
        max_ops: usize,
        size: &mut usize,
    ) -> Result<(), ErrKind> {
        let count = compares.len().max(success.len()).max(failure.len());
        if count > max_ops {
            return Err(ErrKind::TooManyOps);
        }
        for c in compares {
            check_span(&c.key, &c.range_end)?;
            *size += c.key.len() + c.range_end.len();
            if let CompareTarget::Value(v) = &c.target {
                *size += v.len();
            }
        }
        for op in success.iter().chain(failure) {
            match op {
                TxnOp::Put { key, value, .. } | TxnOp::PutKeepValue { key, value, .. } => {
                    self.check_key(key)?;
                    if value.len() > self.limits.max_value {
                        return Err(ErrKind::ValueTooLarge);
                    }
                    *size += key.len() + value.len();
                }
                TxnOp::DeleteRange { key, range_end, .. } | TxnOp::Range { key, range_end, .. } => {
                    self.check_key(key)?;
                    check_span(key, range_end)?;
                    *size += key.len() + range_end.len();
                }
                TxnOp::Txn { compares, success, failure } => {
                    self.validate_txn(compares, success, failure, max_ops - count, size)?
                }
            }
        }
        Ok(())
    }

    fn compare(&self, c: &Compare, state: &State) -> bool {
        let found: Vec<&KeyValue> = state.values().filter(|kv| span_contains(&c.key, &c.range_end, &kv.key)).collect();
        if found.is_empty() {
            // etcd: a value compare on a missing key fails; other targets compare 0.
            if matches!(c.target, CompareTarget::Value(_)) {
                return false;
            }
            return holds(c, &KeyValue { key: c.key.clone(), ..KeyValue::default() });
        }
        found.iter().all(|kv| holds(c, kv))
    }

    /// A transaction, as `Store::txn`; on success with writes the model gains a revision.
    pub fn txn(&mut self, compares: &[Compare], success: &[TxnOp], failure: &[TxnOp]) -> Result<TxnResult, ErrKind> {
        let mut size = 0;
        self.validate_txn(compares, success, failure, self.limits.max_ops, &mut size)?;
        check_writes(success)?;
        check_writes(failure)?;
        if size > self.limits.max_request {
            return Err(ErrKind::RequestTooLarge);
        }
        let base = self.current();
        // `next` is the state as the txn's earlier operations left it.
        let mut next = self.state(base).clone();
        let mut events: Vec<OwnedRecord> = Vec::new();
        let (succeeded, mut responses) = self.run(compares, success, failure, &mut next, &mut events)?;
        let wrote = !events.is_empty();
        let final_rev = if wrote { base + 1 } else { base };
        set_nested_revision(&mut responses, final_rev);
        if wrote {
            self.states.push(next);
            self.events.push(events);
        }
        Ok(TxnResult { succeeded, responses, revision: final_rev })
    }

    /// Runs the branch of a txn (nested or not) that its compares choose. Every
    /// compare sees the state before the txn (etcd 3.4 evaluates them all first);
    /// every op sees `next`, the state the ops before it left. Answers' revisions
    /// are etcd's: a put's the new revision; a range's or delete's the new one once
    /// some op up to it wrote, else the current one.
    fn run(
        &self,
        compares: &[Compare],
        success: &[TxnOp],
        failure: &[TxnOp],
        next: &mut State,
        events: &mut Vec<OwnedRecord>,
    ) -> Result<(bool, Vec<TxnOpResult>), ErrKind> {
        let base = self.current();
        let rev = base + 1;
        let succeeded = compares.iter().all(|c| self.compare(c, self.state(base)));
        let ops = if succeeded { success } else { failure };
        let mut responses = Vec::new();
        for op in ops {
            match op {
                TxnOp::Put { key, value, prev_kv, .. } | TxnOp::PutKeepValue { key, value, prev_kv, .. } => {
                    let prev = next.get(key).cloned();
                    // etcd's ignore_value: the key's current value, and the key must exist.
                    let value = match (op, &prev) {
                        (TxnOp::PutKeepValue { .. }, Some(p)) => &p.value,
                        (TxnOp::PutKeepValue { .. }, None) => return Err(ErrKind::KeyNotFound),
                        _ => value,
                    };
                    let (create_revision, version) =
                        prev.as_ref().map_or((rev, 1), |p| (p.create_revision, p.version + 1));
                    let kv = KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision,
                        mod_revision: rev,
                        version,
                        lease: 0,
                    };
                    events.push(OwnedRecord {
                        main: rev,
                        sub: events.len() as u32,
                        kind: RecordKind::Put,
                        create_revision,
                        mod_revision: rev,
                        version,
                        key: key.clone(),
                        value: value.clone(),
                    });
                    next.insert(key.clone(), kv);
                    responses.push(TxnOpResult::Put(PutResult {
                        revision: rev,
                        prev_kv: if *prev_kv { prev } else { None },
                    }));
                }
                TxnOp::DeleteRange { key, range_end, prev_kv } => {
                    let doomed: Vec<KeyValue> =
                        next.values().filter(|kv| span_contains(key, range_end, &kv.key)).cloned().collect();
                    for kv in &doomed {
                        events.push(OwnedRecord {
                            main: rev,
                            sub: events.len() as u32,
                            kind: RecordKind::Delete,
                            create_revision: 0,
                            mod_revision: rev,
                            version: 0,
                            key: kv.key.clone(),
                            value: Vec::new(),
                        });
                        next.remove(&kv.key);
                    }
                    responses.push(TxnOpResult::DeleteRange(DeleteResult {
                        revision: if events.is_empty() { base } else { rev },
                        deleted: doomed.len() as u64,
                        prev_kvs: if *prev_kv { doomed } else { Vec::new() },
                    }));
                }
                TxnOp::Range { key, range_end, options } => {
                    let r = options.revision;
                    if r != 0 && r != base {
                        if r > base {
                            return Err(ErrKind::FutureRevision { requested: r, current: base });
                        }
                        if r < self.compact_rev {
                            return Err(ErrKind::Compacted { requested: r, compact_revision: self.compact_rev });
                        }
                    }
                    // A read at the txn's own revision sees the earlier writes; a
                    // historical one does not.
                    let src = if r == 0 || r == base { &*next } else { self.state(r) };
                    let revision = if events.is_empty() { base } else { rev };
                    responses.push(TxnOpResult::Range(range_over(src, key, range_end, options, revision)));
                }
                TxnOp::Txn { compares, success, failure } => {
                    let (succeeded, responses_in) = self.run(compares, success, failure, next, events)?;
                    responses.push(TxnOpResult::Txn(TxnResult { succeeded, responses: responses_in, revision: 0 }));
                }
            }
        }
        Ok((succeeded, responses))
    }

    /// As `Store::put_with`.
    pub fn put(&mut self, key: &[u8], value: &[u8], prev_kv: bool) -> Result<PutResult, ErrKind> {
        let r = self.txn(
            &[],
            &[TxnOp::Put { key: key.to_vec(), value: value.to_vec(), prev_kv, lease: PutLease::None }],
            &[],
        )?;
        match r.responses.into_iter().next() {
            Some(TxnOpResult::Put(p)) => Ok(p),
            other => panic!("model: a put answered {other:?}"),
        }
    }

    /// As `Store::delete_range`.
    pub fn delete_range(&mut self, key: &[u8], end: &[u8], prev_kv: bool) -> Result<DeleteResult, ErrKind> {
        let op = TxnOp::DeleteRange { key: key.to_vec(), range_end: end.to_vec(), prev_kv };
        let r = self.txn(&[], &[op], &[])?;
        match r.responses.into_iter().next() {
            Some(TxnOpResult::DeleteRange(d)) => Ok(d),
            other => panic!("model: a delete answered {other:?}"),
        }
    }

    /// As `Store::compact`.
    pub fn compact(&mut self, rev: u64) -> Result<(), ErrKind> {
        if rev == 0 && self.compact_rev == 0 && !self.compacted_zero {
            self.compacted_zero = true;
            return Ok(());
        }
        if rev <= self.compact_rev {
            return Err(ErrKind::Compacted { requested: rev, compact_revision: self.compact_rev });
        }
        if rev > self.current() {
            return Err(ErrKind::FutureRevision { requested: rev, current: self.current() });
        }
        self.compact_rev = rev;
        Ok(())
    }
}

/// Every key: the span `["\0", "\0")` is every key `>= "\0"`.
pub const ALL: (&[u8], &[u8]) = (b"\0", b"\0");

/// Checks revisions, every retained revision's full contents, the compaction and
/// future-revision errors and the log's records against the model.
pub fn check_history(m: &Model, s: &Store, ctx: &str) {
    let cur = m.current();
    assert_eq!(s.current_revision(), cur, "{ctx}: current revision");
    assert_eq!(s.compact_revision(), m.compact_rev, "{ctx}: compact revision");
    for rev in m.first_readable()..=cur {
        let o = RangeOptions { revision: rev, ..Default::default() };
        let got = k(s.range(ALL.0, ALL.1, o));
        let want = m.range(ALL.0, ALL.1, o);
        assert_eq!(got, want, "{ctx}: everything at revision {rev}");
    }
    if m.compact_rev > 1 {
        let rev = m.compact_rev - 1;
        let o = RangeOptions { revision: rev, ..Default::default() };
        assert_eq!(
            k(s.range(ALL.0, ALL.1, o)),
            Err(ErrKind::Compacted { requested: rev, compact_revision: m.compact_rev }),
            "{ctx}: read below the compaction revision"
        );
        if rev > 1 {
            let o = RangeOptions { revision: 1, ..Default::default() };
            assert!(
                matches!(k(s.range(b"a", b"", o)), Err(ErrKind::Compacted { requested: 1, .. })),
                "{ctx}: read at revision 1 after compaction"
            );
        }
    }
    let o = RangeOptions { revision: cur + 1, ..Default::default() };
    assert_eq!(
        k(s.range(ALL.0, ALL.1, o)),
        Err(ErrKind::FutureRevision { requested: cur + 1, current: cur }),
        "{ctx}: read above the current revision"
    );
    check_log(m, s, ctx);
}

/// The log holds exactly the model's events from its first retained revision on,
/// and keeps the segment that holds the compaction revision.
pub fn check_log(m: &Model, s: &Store, ctx: &str) {
    let reader = s.log().reader();
    let cur = m.current();
    assert_eq!(reader.committed_rev(), cur, "{ctx}: log committed revision");
    let first = reader.first_rev();
    assert!(
        first <= m.compact_rev.max(2),
        "{ctx}: log starts at revision {first}, after the compaction revision {}",
        m.compact_rev
    );
    let mut got: Vec<OwnedRecord> = Vec::new();
    let mut lasts = Vec::new();
    for item in reader.records(first, cur) {
        let (_, r) = item.unwrap_or_else(|e| panic!("{ctx}: reading the log: {e}"));
        lasts.push(r.last);
        got.push(OwnedRecord::from(r));
    }
    let want: Vec<OwnedRecord> = (first.max(2)..=cur).flat_map(|r| m.events[r as usize].iter().cloned()).collect();
    if got != want {
        let n = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
        panic!(
            "{ctx}: log records from revision {first} differ at record {n} of {}/{}: got {:?}, want {:?}",
            got.len(),
            want.len(),
            got.get(n),
            want.get(n)
        );
    }
    for (i, r) in got.iter().enumerate() {
        let last = got.get(i + 1).is_none_or(|n| n.main != r.main);
        assert_eq!(lasts[i], last, "{ctx}: LAST flag of record {}.{}", r.main, r.sub);
    }
    // Reads from other starting revisions (a watcher's catch-up: the segment, then
    // the sparse index within it), whole and of one revision.
    let lo = first.max(2);
    if lo <= cur {
        let n = cur - lo + 1;
        let mut froms: Vec<u64> = (0..8).map(|j| lo + j * n / 8).collect();
        froms.push(cur);
        froms.dedup();
        for from in froms {
            let want_from: Vec<&OwnedRecord> = (from..=cur).flat_map(|r| m.events[r as usize].iter()).collect();
            let got_from: Vec<OwnedRecord> =
                reader.records(from, cur).map(|i| OwnedRecord::from(i.expect("read the log").1)).collect();
            assert!(
                got_from.iter().eq(want_from.iter().copied()),
                "{ctx}: log records {from}..={cur}: got {} records, want {}",
                got_from.len(),
                want_from.len()
            );
            let one: Vec<OwnedRecord> =
                reader.records(from, from).map(|i| OwnedRecord::from(i.expect("read the log").1)).collect();
            assert_eq!(one, m.events[from as usize], "{ctx}: log records of revision {from} alone");
        }
    }
}

/// Checks each span in `spans` at revision `rev` with a few option variants.
pub fn check_spans(m: &Model, s: &Store, rev: u64, spans: &[(Vec<u8>, Vec<u8>)], ctx: &str) {
    let variants = [
        RangeOptions { revision: rev, ..Default::default() },
        RangeOptions { revision: rev, limit: 1, ..Default::default() },
        RangeOptions { revision: rev, limit: 2, keys_only: true, ..Default::default() },
        RangeOptions { revision: rev, count_only: true, ..Default::default() },
    ];
    for (i, (key, end)) in spans.iter().enumerate() {
        // Every span with the plain options; the other variants in rotation.
        let o = [variants[0], variants[1 + i % 3]];
        for o in o {
            let got = k(s.range(key, end, o));
            let want = m.range(key, end, o);
            assert_eq!(got, want, "{ctx}: range {key:?}..{end:?} with {o:?}");
        }
    }
}

/// The seed of a randomized test: `ARGUS_SEED` if set, else a fresh random one.
/// Printed, so that a failure can be replayed with `ARGUS_SEED=<seed>`.
pub fn seed(test: &str) -> u64 {
    let seed = match std::env::var("ARGUS_SEED") {
        Ok(s) => s.parse().unwrap_or_else(|_| panic!("ARGUS_SEED={s:?} is not a u64")),
        Err(_) => rand::random(),
    };
    println!("{test}: seed {seed} (replay with ARGUS_SEED={seed})");
    seed
}

/// Store options for the small-log tests: fsync `policy`, segments of
/// `segment_size` bytes, requests of at most 2 KiB and 8 txn ops.
pub fn small_opts(policy: argus_engine::log::FsyncPolicy, segment_size: u64) -> StoreOptions {
    let mut o = StoreOptions::default();
    o.log.fsync = policy;
    o.log.segment_size = segment_size;
    o.max_request_bytes = 2048;
    o.max_txn_ops = 8;
    o
}

/// Opens a store on a copy of `storage` (the copy shares its files).
pub fn open_copy(storage: &argus_engine::log::MemStorage, o: &StoreOptions) -> Store {
    Store::open_storage(std::sync::Arc::new(storage.clone()), o.clone()).unwrap()
}

/// `storage.crash(Torn { seed })`.
pub fn torn_crash(storage: &argus_engine::log::MemStorage, seed: u64) -> argus_engine::log::MemStorage {
    storage.crash(argus_engine::log::CrashMode::Torn { seed })
}
