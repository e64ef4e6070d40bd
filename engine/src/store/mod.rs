//! The MVCC store: etcd's key-value model on the revision log.
//!
//! One write operation (put, delete-range, or a txn with writes) is one main
//! revision; its events get sub revisions `0, 1, …`. Writes are serialized by one
//! mutex: validate, read the state they depend on, append to the log, update the
//! key index, release the mutex, then wait for durability (so concurrent writers
//! share an fsync). Reads take no lock: they resolve keys in the lock-free
//! [`index`] at a revision at most `committed_rev` and read values zero-copy from the
//! mapped log.
//!
//! Compaction at `c` writes a base snapshot of the keys live at `c`, points their
//! index entries at it, drops shadowed index entries and deletes segments wholly
//! below `c` (`engine/FORMAT.md`, Compaction on disk).

mod hash;
mod index;
mod intervals;
mod lease;
mod types;
mod upstream;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

pub use hash::KvHash;
pub use lease::{LeaseExpiry, LeaseGrant};
pub use types::*;
pub use upstream::UpstreamEvent;

use crate::auth::AuthStore;
use crate::error::{Error, Result};
use crate::lease::Lessor;
use crate::log::record::RecordData;
/// The kind of an [`UpstreamEvent`] (PUT or DELETE), re-exported for it.
pub use crate::log::record::RecordKind;
use crate::log::{Event, FileStorage, Loc, LogOptions, LogReader, Recovered, RevisionLog, Storage};
use crate::range::KeySpan;
use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use crate::sync::{lock, Arc, Mutex};
use index::{Found, IndexEntry, KeyIndex};

/// Per-thread work counters, so tests can bound the work a request does (values
/// read from the log, overlay entries visited) without timing anything. Compiled
/// into test builds only; elsewhere `count` is a no-op.
pub(crate) mod work {
    /// A counter of the calling thread's work.
    #[derive(Clone, Copy, Debug)]
    pub(crate) enum Counter {
        /// Values read from the log (by any path).
        ValueReads,
        /// Entries of a txn's overlay (its branch's earlier writes) visited.
        OverlayVisits,
    }

    #[cfg(test)]
    thread_local! {
        static COUNTS: std::cell::Cell<[u64; 2]> = const { std::cell::Cell::new([0; 2]) };
    }

    /// Adds `n` to counter `c` of this thread.
    #[inline]
    pub(crate) fn count(c: Counter, n: u64) {
        #[cfg(test)]
        COUNTS.with(|counts| {
            let mut v = counts.get();
            v[c as usize] += n;
            counts.set(v);
        });
        #[cfg(not(test))]
        let _ = (c, n);
    }

    /// Counter `c` of this thread, resetting it to zero.
    #[cfg(test)]
    pub(crate) fn take(c: Counter) -> u64 {
        COUNTS.with(|counts| {
            let mut v = counts.get();
            let n = std::mem::take(&mut v[c as usize]);
            counts.set(v);
            n
        })
    }
}

/// Limits and log settings of a store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Settings of the revision log.
    pub log: LogOptions,
    /// Largest key, in bytes.
    pub max_key_bytes: usize,
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// Largest request (keys, values and range ends of every op and compare), as
    /// etcd's `--max-request-bytes` (1.5 MiB).
    pub max_request_bytes: usize,
    /// Most operations in one txn branch, and most compares (etcd: 128).
    pub max_txn_ops: usize,
    /// The leases of keys belong to an upstream cluster (a mirror's store, see
    /// [`Store::apply_upstream`]): keys keep their lease IDs in their records and
    /// index entries only, the store has no lease table of its own (opening it does
    /// not attach keys to leases, nor warn about leases it does not know), and its
    /// lease calls fail with [`Error::LeasesUpstream`]. Default `false`.
    pub foreign_leases: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            log: LogOptions::default(),
            max_key_bytes: 1536 * 1024,
            max_value_bytes: 1536 * 1024,
            max_request_bytes: 1536 * 1024,
            max_txn_ops: 128,
            foreign_leases: false,
        }
    }
}

struct Inner {
    log: RevisionLog,
    index: KeyIndex,
    opts: StoreOptions,
    /// Serializes writes; holds the last appended revision.
    write: Mutex<u64>,
    compact_rev: AtomicU64,
    /// Whether `compact(0)` succeeded on this store never compacted (see
    /// [`Store::compact`]); kept in memory only.
    compacted_zero: AtomicBool,
    compacting: Mutex<()>,
    /// The leases; changed under `write` (grant, revoke, attach), see `lease`.
    leases: Lessor,
    /// Users, roles and permissions (`crate::auth`), durable in the same log.
    auth: AuthStore,
}

/// The MVCC key-value store. Cheap to clone; every clone is the same store.
///
/// # Examples
///
/// ```
/// use argus_engine::store::{Store, StoreOptions, RangeOptions};
/// use argus_engine::log::MemStorage;
/// use std::sync::Arc;
///
/// let store = Store::open_storage(Arc::new(MemStorage::new()), StoreOptions::default()).unwrap();
/// let rev = store.put(b"/a", b"1").unwrap().revision;
/// assert_eq!(rev, 2); // a fresh store is at revision 1, as etcd
/// store.put(b"/a", b"2").unwrap();
/// let old = store.range(b"/a", b"", RangeOptions { revision: rev, ..Default::default() }).unwrap();
/// assert_eq!(old.kvs[0].value, b"1");
/// ```
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// One event a txn branch will append (as revision `base + 1`, sub revision = its
/// position).
struct PlannedEvent<'a> {
    kind: RecordKind,
    /// The key, shared with the branch's overlay when a later op of the branch reads
    /// it: one copy per event, whatever the number of ops that look at it.
    key: Rc<[u8]>,
    /// Borrowed from the request, except a `PutKeepValue`'s (the previous value).
    value: Cow<'a, [u8]>,
    create_revision: u64,
    version: u64,
    /// The key's lease after the event (0 for a DELETE).
    lease: i64,
    /// The key's lease before it (to detach the key from).
    old_lease: i64,
}

/// The txn's earlier writes (its ops', nested txns' included), by key, for its
/// later ops: a key maps to the index in `events` of its put, or to `None` if a
/// delete removed it. Ordered, so a range or delete finds the writes in its span in
/// `O(log n + k)`.
type Overlay = BTreeMap<Rc<[u8]>, Option<usize>>;

/// A txn's chosen branch, planned: events for the log and answers for the caller.
struct Plan<'a> {
    succeeded: bool,
    events: Vec<PlannedEvent<'a>>,
    responses: Vec<TxnOpResult>,
}

/// What [`Store::choose`] decided before any op runs.
#[derive(Default)]
struct TxnPath {
    /// The branch taken by each txn that runs (the txn itself, then its nested txns
    /// in the order they run: depth first), as etcd's `txnPath`.
    decisions: Vec<bool>,
    /// Ops that will run (nested txns not counted, their ops counted).
    ops: usize,
    /// Whether a delete is among them so far.
    deleted: bool,
    /// The position among them of the last op that looks at the writes of earlier
    /// ops: a range, a delete, or a put after a delete. Only the ops before it record
    /// their writes in the overlay, so the common single put or delete (and a txn of
    /// puts only) records nothing.
    last_user: Option<usize>,
}

/// Plans the ops of a txn one by one in the order they run, nested txns included.
struct Planner<'s, 'a, 'r> {
    store: &'s Store,
    base: u64,
    reader: &'r mut LogReader,
    decisions: std::vec::IntoIter<bool>,
    last_user: Option<usize>,
    /// Ops planned so far (as [`TxnPath::ops`] counts them).
    ops_run: usize,
    overlay: Overlay,
    events: Vec<PlannedEvent<'a>>,
}

/// A key's state before a put of the txn.
enum Prior {
    /// As committed at `base`.
    Committed(Found),
    /// As an earlier put of this txn left it (index in `events`).
    Pending(usize),
    /// Missing (never written, deleted before `base`, or by an earlier op).
    Missing,
}

impl<'a> Planner<'_, 'a, '_> {
    fn rev(&self) -> u64 {
        self.base + 1
    }

    /// The revision of a range or delete answered now: the new one once some op has
    /// written (etcd's write txn reads at `base + 1` once it has changes).
    fn answer_rev(&self) -> u64 {
        if self.events.is_empty() {
            self.base
        } else {
            self.base + 1
        }
    }

    /// Plans the branch that [`Store::choose`] picked next and returns which it was,
    /// with its answers.
    fn branch(&mut self, success: &'a [TxnOp], failure: &'a [TxnOp]) -> Result<(bool, Vec<TxnOpResult>)> {
        let succeeded = self.decisions.next().expect("one decision per txn that runs");
        let ops = if succeeded { success } else { failure };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let r = match op {
                TxnOp::Txn { success, failure, .. } => {
                    let (succeeded, responses) = self.branch(success, failure)?;
                    // The revision is set once the whole txn is planned.
                    TxnOpResult::Txn(TxnResult { succeeded, responses, revision: 0 })
                }
                op => {
                    let remember = self.last_user.is_some_and(|last| self.ops_run < last);
                    self.ops_run += 1;
                    self.op(op, remember)?
                }
            };
            responses.push(r);
        }
        Ok((succeeded, responses))
    }

    /// Plans one op (not a nested txn); `remember`: record its writes in the overlay
    /// for later ops.
    fn op(&mut self, op: &'a TxnOp, remember: bool) -> Result<TxnOpResult> {
        match op {
            TxnOp::Put { key, value, prev_kv, lease } | TxnOp::PutKeepValue { key, value, prev_kv, lease } => {
                let keep = matches!(op, TxnOp::PutKeepValue { .. });
                self.put(key, value, *prev_kv, keep, *lease, remember)
            }
            TxnOp::DeleteRange { key, range_end, prev_kv } => self.delete(key, range_end, *prev_kv, remember),
            TxnOp::Range { key, range_end, options } => {
                let pending = Pending { overlay: &self.overlay, events: &self.events, rev: self.base + 1 };
                let mut r = self.store.range_in_txn(key, range_end, options, self.base, pending, self.reader)?;
                r.revision = self.answer_rev();
                Ok(TxnOpResult::Range(r))
            }
            TxnOp::Txn { .. } => unreachable!("nested txns are planned by `branch`"),
        }
    }

    fn put(
        &mut self,
        key: &'a [u8],
        value: &'a [u8],
        prev_kv: bool,
        keep: bool,
        lease: PutLease,
        remember: bool,
    ) -> Result<TxnOpResult> {
        let rev = self.rev();
        let prior = match self.overlay.get(key) {
            Some(Some(i)) => Prior::Pending(*i),
            Some(None) => Prior::Missing,
            None => self.store.inner.index.get(key, self.base).map_or(Prior::Missing, Prior::Committed),
        };
        if !self.overlay.is_empty() {
            work::count(work::Counter::OverlayVisits, 1);
        }
        let (create_revision, version) = match &prior {
            Prior::Committed(p) => (p.create_revision, p.version + 1),
            Prior::Pending(i) => (self.events[*i].create_revision, self.events[*i].version + 1),
            Prior::Missing if keep || lease == PutLease::Keep => return Err(Error::KeyNotFound),
            Prior::Missing => (rev, 1),
        };
        let old_lease = match &prior {
            Prior::Committed(p) => p.lease,
            Prior::Pending(i) => self.events[*i].lease,
            Prior::Missing => 0,
        };
        let new_lease = match lease {
            PutLease::None => 0,
            PutLease::Keep => old_lease,
            PutLease::Attach(id) if self.store.inner.leases.contains(id) => id,
            PutLease::Attach(_) => return Err(Error::LeaseNotFound),
        };
        // The previous state, read only if the answer or the value needs it.
        let prev: Option<KeyValue> = match prior {
            Prior::Committed(p) if keep || prev_kv => Some(self.store.read_value(self.reader, p)?),
            Prior::Pending(i) if keep || prev_kv => {
                Some(Pending { overlay: &self.overlay, events: &self.events, rev }.kv(i, false))
            }
            _ => None,
        };
        let value: Cow<'a, [u8]> = match (&prev, keep) {
            (Some(p), true) => Cow::Owned(p.value.clone()),
            _ => Cow::Borrowed(value),
        };
        let key: Rc<[u8]> = Rc::from(key);
        if remember {
            self.overlay.insert(Rc::clone(&key), Some(self.events.len()));
        }
        self.events.push(PlannedEvent {
            kind: RecordKind::Put,
            key,
            value,
            create_revision,
            version,
            lease: new_lease,
            old_lease,
        });
        let prev_kv = if prev_kv { prev } else { None };
        Ok(TxnOpResult::Put(PutResult { revision: rev, prev_kv }))
    }

    /// Deletes the keys of the span as the txn's earlier ops left them: a key an
    /// earlier delete removed is gone already, and a key an earlier put (of a nested
    /// txn, see [`Store::txn`]) wrote is deleted with the state that put gave it.
    fn delete(&mut self, key: &[u8], range_end: &[u8], prev_kv: bool, remember: bool) -> Result<TxnOpResult> {
        let span = KeySpan::parse(key, range_end)?;
        let Planner { store, base, reader, overlay, events, .. } = self;
        let (store, base) = (*store, *base);
        let rev = base + 1;
        // The txn's earlier writes in the span, in key order, merged with the index's
        // keys as the scan meets them.
        let earlier: Vec<(Rc<[u8]>, Option<usize>)> = match span.bounds() {
            Some(b) if !overlay.is_empty() => overlay.range::<[u8], _>(b).map(|(k, s)| (Rc::clone(k), *s)).collect(),
            _ => Vec::new(),
        };
        work::count(work::Counter::OverlayVisits, earlier.len() as u64);
        let mut earlier = earlier.into_iter().peekable();
        let mut prev_kvs = Vec::new();
        let mut deleted = 0u64;
        // Records the delete of `key`, whose state before it was `prev` (read only with
        // `prev_kv`).
        // `old_lease`: the key's lease before the delete, which it is detached from.
        let mut record = |key: Rc<[u8]>,
                          prev: Option<KeyValue>,
                          old_lease: i64,
                          events: &mut Vec<PlannedEvent<'a>>,
                          overlay: &mut Overlay| {
            prev_kvs.extend(prev);
            if remember {
                overlay.insert(Rc::clone(&key), None);
            }
            let value = Cow::Borrowed(&[][..]);
            events.push(PlannedEvent {
                kind: RecordKind::Delete,
                key,
                value,
                create_revision: 0,
                version: 0,
                lease: 0,
                old_lease,
            });
            deleted += 1;
        };
        // The state an earlier put of this txn (`events[i]`) gave its key.
        let pending_prev = |i: usize, events: &[PlannedEvent<'a>], overlay: &Overlay| {
            prev_kv.then(|| Pending { overlay, events, rev }.kv(i, false))
        };
        let mut failed = None;
        store.scan(&span, base, |f| {
            // Earlier writes at keys before `f`'s come first; one at `f`'s key replaces it.
            while let Some((k, state)) = earlier.next_if(|(k, _)| k[..] < f.key[..]) {
                if let Some(i) = state {
                    let prev = pending_prev(i, events, overlay);
                    let old_lease = events[i].lease;
                    record(k, prev, old_lease, events, overlay);
                }
            }
            if let Some((k, state)) = earlier.next_if(|(k, _)| k[..] == f.key[..]) {
                if let Some(i) = state {
                    let prev = pending_prev(i, events, overlay);
                    let old_lease = events[i].lease;
                    record(k, prev, old_lease, events, overlay);
                }
                return true;
            }
            let old_lease = f.lease;
            if prev_kv {
                match store.read_value(reader, f) {
                    Ok(kv) => record(Rc::from(kv.key.as_slice()), Some(kv), old_lease, events, overlay),
                    Err(e) => {
                        failed = Some(e);
                        return false;
                    }
                }
            } else {
                record(Rc::from(f.key), None, old_lease, events, overlay);
            }
            true
        });
        if let Some(e) = failed {
            return Err(e);
        }
        for (k, state) in earlier {
            if let Some(i) = state {
                let prev = pending_prev(i, events, overlay);
                let old_lease = events[i].lease;
                record(k, prev, old_lease, events, overlay);
            }
        }
        let revision = self.answer_rev();
        Ok(TxnOpResult::DeleteRange(DeleteResult { revision, deleted, prev_kvs }))
    }
}

/// Whether some op of `ops` (or of a txn nested in them) writes.
fn may_write(ops: &[TxnOp]) -> bool {
    ops.iter().any(|o| match o {
        TxnOp::Range { .. } => false,
        TxnOp::Txn { success, failure, .. } => may_write(success) || may_write(failure),
        _ => true,
    })
}

/// Sets the revision of every nested txn's answer to the txn's.
fn set_nested_revision(responses: &mut [TxnOpResult], revision: u64) {
    for r in responses {
        if let TxnOpResult::Txn(t) = r {
            t.revision = revision;
            set_nested_revision(&mut t.responses, revision);
        }
    }
}

/// The branch's earlier writes, as a range inside the txn sees them.
#[derive(Clone, Copy)]
struct Pending<'o, 'a> {
    overlay: &'o Overlay,
    events: &'o [PlannedEvent<'a>],
    /// The revision the writes will have.
    rev: u64,
}

impl Pending<'_, '_> {
    /// The state the put `events[i]` gives its key.
    fn kv(&self, i: usize, keys_only: bool) -> KeyValue {
        let e = &self.events[i];
        KeyValue {
            key: e.key.to_vec(),
            value: if keys_only { Vec::new() } else { e.value.to_vec() },
            create_revision: e.create_revision,
            mod_revision: self.rev,
            version: e.version,
            lease: e.lease,
        }
    }
}

/// A key found in the index, or the state a pending write gives it.
enum Either<L, R> {
    Left(L),
    Right(R),
}

impl Store {
    /// Opens (creating if needed) the store in directory `dir`.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] if another process has it open, [`Error::Corrupt`] if
    /// recovery finds corruption that is not a torn tail, I/O errors.
    pub fn open(dir: impl AsRef<Path>, opts: StoreOptions) -> Result<Store> {
        let storage = Arc::new(FileStorage::open(dir)?);
        Self::open_storage(storage, opts)
    }

    /// Opens the store on any [`Storage`] (the file system, or memory in tests).
    ///
    /// # Errors
    ///
    /// As [`Store::open`].
    pub fn open_storage(storage: Arc<dyn Storage>, opts: StoreOptions) -> Result<Store> {
        Ok(Self::open_with_report(storage, opts)?.0)
    }

    /// As [`Store::open_storage`], also returning what recovery found.
    ///
    /// # Errors
    ///
    /// As [`Store::open`].
    pub fn open_with_report(storage: Arc<dyn Storage>, opts: StoreOptions) -> Result<(Store, Recovered)> {
        let overhead = 128 * opts.max_txn_ops;
        if (opts.log.segment_size as usize) < 32 + opts.max_request_bytes + overhead {
            // Larger revisions still work (they get a segment of their own), but every
            // such write would cost a new file: refuse the configuration instead.
            return Err(Error::InvalidOptions(format!(
                "segment size {} is smaller than the largest request ({} bytes) plus record overhead",
                opts.log.segment_size, opts.max_request_bytes
            )));
        }
        let (log, recovered) = RevisionLog::open(storage, opts.log.clone())?;
        let index = KeyIndex::default();
        let reader = log.reader();
        let compact_rev = reader.snapshot_rev();
        for (loc, r) in reader.snapshot_records() {
            index.insert(
                r.key.to_vec(),
                r.mod_revision,
                r.sub,
                IndexEntry::new(loc, r.create_revision, r.version, r.lease, false),
            );
        }
        let leases = Lessor::default();
        let opened = std::time::Instant::now();
        for (id, ttl) in reader.snapshot_leases() {
            leases.insert(id, ttl, opened);
        }
        // One pass over the log rebuilds the index. (A build split over rayon's
        // threads was no faster on the shared 2-core machine: 1.6 s for 1M revisions
        // in results/store.md, against 1.0 s for this pass in an earlier run.)
        let corrupt_auth = |loc: Option<Loc>, reason: String| Error::Corrupt {
            file: log.path_of(
                &loc.and_then(|l| reader.file_name(l))
                    .unwrap_or_else(|| crate::log::snapshot_name(reader.snapshot_rev())),
            ),
            offset: loc.map_or(0, |l| l.offset()),
            reason,
        };
        let mut auth = crate::auth::Replay::new(reader.snapshot_auth())
            .map_err(|why| corrupt_auth(None, format!("auth record does not decode: {why}")))?;
        for item in reader.records_with_leases(compact_rev + 1, reader.committed_rev()) {
            let (loc, r) = item?;
            if r.kind == RecordKind::Auth {
                auth.apply(r.value).map_err(|why| corrupt_auth(Some(loc), format!("auth record: {why}")))?;
                continue;
            }
            if r.kind.is_lease() {
                match crate::log::record::lease_op(&r) {
                    Some((id, Some(ttl))) => leases.insert(id, ttl, opened),
                    Some((id, None)) => drop(leases.remove(id)),
                    None => {}
                }
                continue;
            }
            let tomb = r.kind == RecordKind::Delete;
            let entry = IndexEntry::new(loc, r.create_revision, r.version, r.lease, tomb);
            index.insert(r.key.to_vec(), r.main, r.sub, entry);
        }
        // Attach every live key to its lease. A lease missing here would be a log
        // that lost a grant it acknowledged: the key keeps its lease ID (as etcd
        // does), and is reported. Foreign leases are not ours to attach.
        if !opts.foreign_leases {
            index.scan(b"", None, reader.committed_rev(), |f| {
                if f.lease != 0 {
                    if leases.contains(f.lease) {
                        leases.reattach(&f.key, 0, f.lease);
                    } else {
                        tracing::warn!(key = %String::from_utf8_lossy(&f.key), lease = f.lease, "key attached to a lease that does not exist");
                    }
                }
                true
            });
        }
        let last = log.committed_rev();
        drop(reader);
        let auth = AuthStore::new(log.clone(), auth.state);
        let inner = Inner {
            log,
            index,
            opts,
            write: Mutex::new(last),
            compact_rev: AtomicU64::new(compact_rev),
            compacted_zero: AtomicBool::new(false),
            compacting: Mutex::new(()),
            leases,
            auth,
        };
        Ok((Store { inner: Arc::new(inner) }, recovered))
    }

    /// The revision log under the store (the watch machinery reads it).
    pub fn log(&self) -> &RevisionLog {
        &self.inner.log
    }

    /// The auth state: users, roles, permissions (etcd's Auth service).
    pub fn auth(&self) -> &AuthStore {
        &self.inner.auth
    }

    /// The options the store runs with.
    pub fn options(&self) -> &StoreOptions {
        &self.inner.opts
    }

    /// The newest committed revision: every read and watch sees at most this.
    pub fn current_revision(&self) -> u64 {
        self.inner.log.committed_rev()
    }

    /// The compaction revision: reads below it fail with [`Error::Compacted`].
    pub fn compact_revision(&self) -> u64 {
        self.inner.compact_rev.load(Ordering::Acquire)
    }

    /// Number of retained index entries (every live change since compaction).
    pub fn index_entries(&self) -> usize {
        self.inner.index.len()
    }

    /// Makes every acknowledged write durable, whatever the fsync policy.
    ///
    /// # Errors
    ///
    /// The fsync's I/O error.
    pub fn flush(&self) -> Result<()> {
        self.inner.log.flush()
    }

    fn check_key(&self, key: &[u8]) -> Result<()> {
        if key.is_empty() {
            return Err(Error::EmptyKey);
        }
        if key.len() > self.inner.opts.max_key_bytes {
            return Err(Error::KeyTooLarge { len: key.len(), max: self.inner.opts.max_key_bytes });
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<()> {
        if value.len() > self.inner.opts.max_value_bytes {
            return Err(Error::ValueTooLarge { len: value.len(), max: self.inner.opts.max_value_bytes });
        }
        Ok(())
    }

    fn check_size(&self, size: usize) -> Result<()> {
        if size > self.inner.opts.max_request_bytes {
            return Err(Error::RequestTooLarge { size, max: self.inner.opts.max_request_bytes });
        }
        Ok(())
    }

    /// Resolves `revision` (0: current) for a read, checking it is retained.
    fn read_rev(&self, revision: u64) -> Result<u64> {
        let current = self.current_revision();
        let rev = if revision == 0 { current } else { revision };
        if rev > current {
            return Err(Error::FutureRevision { requested: rev, current });
        }
        let compact_revision = self.compact_revision();
        if rev < compact_revision {
            return Err(Error::Compacted { requested: rev, compact_revision });
        }
        Ok(rev)
    }

    /// Keys in `[key, range_end)` at a revision (etcd's Range).
    ///
    /// `range_end` empty: the one key; `"\0"`: every key `>= key`; see [`prefix_end`].
    ///
    /// # Errors
    ///
    /// [`Error::EmptyKey`], [`Error::InvalidRange`], [`Error::Compacted`],
    /// [`Error::FutureRevision`].
    pub fn range(&self, key: &[u8], range_end: &[u8], opts: RangeOptions) -> Result<RangeResult> {
        let span = KeySpan::parse_non_empty(key, range_end)?;
        self.check_size(key.len() + range_end.len())?;
        let rev = self.read_rev(opts.revision)?;
        let header = self.current_revision();
        let mut reader = self.inner.log.reader();
        let mut kvs = Vec::new();
        let mut count = 0usize;
        let mut failed = None;
        let limit = if opts.limit == 0 { usize::MAX } else { opts.limit };
        self.scan(&span, rev, |f| {
            count += 1;
            if !opts.count_only && kvs.len() < limit {
                match self.materialize(&mut reader, f, opts.keys_only) {
                    Ok(kv) => kvs.push(kv),
                    Err(e) => {
                        failed = Some(e);
                        return false;
                    }
                }
            }
            true
        });
        // A compaction that began during the scan may have removed entries this read
        // needed (an entry it dropped no longer resolves): report it rather than a
        // partial answer.
        let compact_revision = self.compact_revision();
        if rev < compact_revision {
            return Err(Error::Compacted { requested: rev, compact_revision });
        }
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(RangeResult { more: count > kvs.len() && !opts.count_only, kvs, count, revision: header })
    }

    fn scan(&self, span: &KeySpan<'_>, rev: u64, mut f: impl FnMut(Found) -> bool) {
        match *span {
            KeySpan::One(k) => {
                if let Some(found) = self.inner.index.get(k, rev) {
                    f(found);
                }
            }
            KeySpan::From(k) => self.inner.index.scan(k, None, rev, f),
            KeySpan::Between(k, end) => self.inner.index.scan(k, Some(end), rev, f),
            KeySpan::Empty => {}
        }
    }

    /// Reads the value of an index entry from a committed view of the log.
    fn materialize(&self, reader: &mut LogReader, f: Found, keys_only: bool) -> Result<KeyValue> {
        if keys_only {
            return Ok(f.without_value());
        }
        self.resolve(f, |loc, key, retry| {
            if retry {
                *reader = self.inner.log.reader();
            }
            reader.get(loc).filter(|r| r.key == key).map(|r| r.value.to_vec())
        })
    }

    /// Reads the value of `f`'s record with `read(loc, key, retry)`.
    ///
    /// A compaction may move the entry to a new snapshot and delete the file its old
    /// location points into between the index lookup and the read: then the entry is
    /// looked up again (compaction re-points it before deleting anything) and `read`
    /// is called with `retry` set, to take a fresh view if it has one.
    fn resolve(&self, f: Found, mut read: impl FnMut(Loc, &[u8], bool) -> Option<Vec<u8>>) -> Result<KeyValue> {
        work::count(work::Counter::ValueReads, 1);
        let mut loc = f.loc;
        for attempt in 0..3 {
            if let Some(value) = read(loc, &f.key, attempt > 0) {
                return Ok(KeyValue { value, ..f.without_value() });
            }
            loc = self.inner.index.loc_of(&f.key, f.main, f.sub).unwrap_or(loc);
        }
        Err(unresolved(&f.key, loc))
    }

    /// The key's state just before revision `rev` (for an event's `prev_kv`), or
    /// `None` if it did not exist or that revision is compacted.
    pub(crate) fn kv_before(&self, reader: &mut LogReader, key: &[u8], rev: u64) -> Option<KeyValue> {
        let at = rev.checked_sub(1)?;
        if at < self.compact_revision() {
            return None;
        }
        let f = self.inner.index.get(key, at)?;
        let kv = self.materialize(reader, f, false).ok()?;
        // A compaction racing this read may have dropped the entry we used.
        (at >= self.compact_revision()).then_some(kv)
    }

    /// Reads the value of `f` for a txn: through `reader` (a lock-free view of the
    /// committed log, as plain reads use) when `f`'s revision is committed in it,
    /// else through the log's writer. Only a writing txn meets the latter (it holds
    /// the store's write mutex, and may build on revisions appended but not yet
    /// durable); a read-only txn plans at its view's committed revision, so it never
    /// takes the log's writer mutex and never waits behind a segment roll.
    fn read_value(&self, reader: &mut LogReader, f: Found) -> Result<KeyValue> {
        if f.main <= reader.committed_rev() {
            return self.materialize(reader, f, false);
        }
        self.resolve(f, |loc, key, _| self.inner.log.read_written(loc).filter(|r| r.key == key).map(|r| r.value))
    }

    /// Sets `key` to `value` (etcd's Put). Returns once durable per the fsync policy.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyKey`], [`Error::KeyTooLarge`], [`Error::ValueTooLarge`],
    /// [`Error::RequestTooLarge`], [`Error::Poisoned`]; nothing is written then.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<PutResult> {
        self.put_with(key, value, false)
    }

    /// As [`Store::put`], returning the previous key-value when `prev_kv`.
    ///
    /// # Errors
    ///
    /// As [`Store::put`].
    pub fn put_with(&self, key: &[u8], value: &[u8], prev_kv: bool) -> Result<PutResult> {
        let r = self.txn(
            &[],
            &[TxnOp::Put { key: key.to_vec(), value: value.to_vec(), prev_kv, lease: PutLease::None }],
            &[],
        )?;
        match r.responses.into_iter().next() {
            Some(TxnOpResult::Put(p)) => Ok(p),
            _ => unreachable!("a one-put txn answers with one put"),
        }
    }

    /// Deletes the keys in `[key, range_end)` as one revision, one DELETE event per
    /// key (etcd's DeleteRange). Deleting nothing makes no revision.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyKey`], [`Error::InvalidRange`], [`Error::Poisoned`].
    pub fn delete_range(&self, key: &[u8], range_end: &[u8], prev_kv: bool) -> Result<DeleteResult> {
        let op = TxnOp::DeleteRange { key: key.to_vec(), range_end: range_end.to_vec(), prev_kv };
        let r = self.txn(&[], &[op], &[])?;
        match r.responses.into_iter().next() {
            Some(TxnOpResult::DeleteRange(d)) => Ok(d),
            _ => unreachable!("a one-delete txn answers with one delete"),
        }
    }

    /// Validates a txn (or a nested one) as etcd's `checkTxnRequest` does: the larger
    /// of its compare count and its branches' op counts must be at most `max_ops`
    /// (the op limit at the top; for a nested txn, what its enclosing txn left: that
    /// limit minus the enclosing txn's own count), then every compare and op (keys,
    /// sizes, spans), nested txns recursively. Adds the bytes of keys, values and
    /// range ends to `size`.
    fn validate_txn(
        &self,
        compares: &[Compare],
        success: &[TxnOp],
        failure: &[TxnOp],
        max_ops: usize,
        size: &mut usize,
    ) -> Result<()> {
        let count = compares.len().max(success.len()).max(failure.len());
        if count > max_ops {
            return Err(Error::TooManyOps { count, max: max_ops });
        }
        for c in compares {
            KeySpan::parse_non_empty(&c.key, &c.range_end)?;
            *size += c.key.len() + c.range_end.len();
            if let CompareTarget::Value(v) = &c.target {
                *size += v.len();
            }
        }
        for op in success.iter().chain(failure) {
            match op {
                TxnOp::Put { key, value, .. } | TxnOp::PutKeepValue { key, value, .. } => {
                    self.check_key(key)?;
                    self.check_value(value)?;
                    *size += key.len() + value.len();
                }
                TxnOp::DeleteRange { key, range_end, .. } | TxnOp::Range { key, range_end, .. } => {
                    self.check_key(key)?;
                    // As etcd, a range or delete inside a txn whose end is at or before
                    // its key is valid and selects nothing (a plain Range answers the
                    // same).
                    KeySpan::parse(key, range_end)?;
                    *size += key.len() + range_end.len();
                }
                TxnOp::Txn { compares, success, failure } => {
                    self.validate_txn(compares, success, failure, max_ops - count, size)?;
                }
            }
        }
        Ok(())
    }

    /// Applies `success` if every compare holds, else `failure`, atomically as one
    /// revision (none if the branch writes nothing). Ops see the writes of the ops
    /// that ran before them, as in etcd; so do the ops of a nested txn
    /// ([`TxnOp::Txn`]), whose compares, like every compare of the request, are
    /// evaluated against the state before the txn (etcd 3.4's `compareToPath`).
    ///
    /// Two writes of one key are refused by etcd 3.4's rules (`checkIntervals`, see
    /// `intervals.rs`): two puts of a key, or a put in a delete's span, whichever comes
    /// first, at one level or across levels; except that the two branches of a nested
    /// txn may put the same key, a nested txn may put a key that a later sibling
    /// nested txn deletes, and a delete whose range end is `"\0"` conflicts with no
    /// put (a put after it of a key it deleted starts a new generation).
    ///
    /// An answer's revision is etcd's: a put's is the txn's new revision; a range's or
    /// a delete's is the new revision if some op up to it (itself included) wrote,
    /// else the revision before the txn; a nested txn's is the txn's.
    ///
    /// # Errors
    ///
    /// Validation errors of any op, nested ones included ([`Error::DuplicateKey`],
    /// [`Error::TooManyOps`], limits), [`Error::KeyNotFound`] for a
    /// [`TxnOp::PutKeepValue`] of a missing key, [`Error::Compacted`] /
    /// [`Error::FutureRevision`] for a range at such a revision, [`Error::Poisoned`].
    /// Nothing is written on error.
    pub fn txn(&self, compares: &[Compare], success: &[TxnOp], failure: &[TxnOp]) -> Result<TxnResult> {
        let mut size = 0;
        self.validate_txn(compares, success, failure, self.inner.opts.max_txn_ops, &mut size)?;
        intervals::check(success)?;
        intervals::check(failure)?;
        self.check_size(size)?;

        let inner = &*self.inner;
        if !may_write(success) && !may_write(failure) {
            // A read-only txn takes no lock and reads at the committed revision of one
            // view of the log, so it never sees a write that is not yet durable, and
            // reads values as plain ranges do (see `read_value`).
            let mut reader = inner.log.reader();
            let base = reader.committed_rev();
            let plan = self.plan(compares, success, failure, base, &mut reader)?;
            return Ok(TxnResult { succeeded: plan.succeeded, responses: plan.responses, revision: base });
        }
        let mut last = lock(&inner.write);
        let base = *last;
        let mut reader = inner.log.reader();
        let mut plan = self.plan(compares, success, failure, base, &mut reader)?;
        drop(reader);
        let rev = base + 1;
        if plan.events.is_empty() {
            // The branch that ran wrote nothing: no new revision. Its answers come from
            // the state at `base`, which may not be durable yet: wait until it is.
            drop(last);
            inner.log.wait_durable(crate::log::Ticket { rev: base })?;
            return Ok(TxnResult { succeeded: plan.succeeded, responses: plan.responses, revision: base });
        }
        let ticket = self.append_locked(&mut last, &plan.events)?;
        drop(last);
        // The events (and their keys) are in the log and the index now.
        plan.events = Vec::new();
        inner.log.wait_durable(ticket)?;
        Ok(TxnResult { succeeded: plan.succeeded, responses: plan.responses, revision: rev })
    }

    /// Appends `events` as the revision after `*last` (which the caller's hold of
    /// the write lock guards) and advances it: the records, the index entries (in
    /// before the revision can be published: a reader at the committed revision
    /// sees every event of it, or none) and the keys' lease attachments (a key is
    /// attached to the lease its newest entry carries). Returns the ticket to wait
    /// for durability with, outside the lock.
    fn append_locked(&self, last: &mut u64, events: &[PlannedEvent<'_>]) -> Result<crate::log::Ticket> {
        let inner = &*self.inner;
        let rev = *last + 1;
        let log_events: Vec<Event<'_>> = events
            .iter()
            .map(|e| Event {
                kind: e.kind,
                key: &e.key,
                value: &e.value,
                create_revision: e.create_revision,
                version: e.version,
                lease: e.lease,
            })
            .collect();
        let ticket = inner.log.append(rev, &log_events, |locs| {
            for (i, (e, loc)) in events.iter().zip(locs).enumerate() {
                let tomb = e.kind == RecordKind::Delete;
                let entry = IndexEntry::new(*loc, e.create_revision, e.version, e.lease, tomb);
                inner.index.insert(e.key.to_vec(), rev, i as u32, entry);
            }
        })?;
        if !inner.opts.foreign_leases {
            for e in events {
                inner.leases.reattach(&e.key, e.old_lease, e.lease);
            }
        }
        *last = rev;
        Ok(ticket)
    }

    /// Chooses the branch of the txn and of every txn nested in the chosen branches
    /// (every compare evaluated against the state at `base`, as etcd 3.4 does before
    /// it runs any op), then plans the chosen ops in order: their events (to be
    /// revision `base + 1`) and their answers, each op seeing the writes of the ops
    /// before it. Values are read through `reader` (see [`Store::read_value`]).
    ///
    /// Work: each op costs its index scan plus `O(log w)` per key for the `w`
    /// earlier writes of the txn (an ordered overlay, not a list scanned per key),
    /// and values are read only for what an answer returns.
    fn plan<'a>(
        &self,
        compares: &[Compare],
        success: &'a [TxnOp],
        failure: &'a [TxnOp],
        base: u64,
        reader: &mut LogReader,
    ) -> Result<Plan<'a>> {
        let mut path = TxnPath::default();
        self.choose(compares, success, failure, base, reader, &mut path)?;
        let mut planner = Planner {
            store: self,
            base,
            reader,
            decisions: path.decisions.into_iter(),
            last_user: path.last_user,
            ops_run: 0,
            overlay: Overlay::new(),
            events: Vec::new(),
        };
        let (succeeded, mut responses) = planner.branch(success, failure)?;
        let events = planner.events;
        let revision = if events.is_empty() { base } else { base + 1 };
        set_nested_revision(&mut responses, revision);
        Ok(Plan { succeeded, events, responses })
    }

    /// Evaluates the compares of a txn at `base` and records the branch taken, then
    /// walks that branch: its nested txns recursively, and the position of every op
    /// that will run (for [`TxnPath::last_user`]).
    fn choose<'a>(
        &self,
        compares: &[Compare],
        success: &'a [TxnOp],
        failure: &'a [TxnOp],
        base: u64,
        reader: &mut LogReader,
        path: &mut TxnPath,
    ) -> Result<()> {
        let mut succeeded = true;
        for c in compares {
            if !self.compare(c, base, reader)? {
                succeeded = false;
                break;
            }
        }
        path.decisions.push(succeeded);
        for op in if succeeded { success } else { failure } {
            match op {
                TxnOp::Txn { compares, success, failure } => {
                    self.choose(compares, success, failure, base, reader, path)?;
                }
                TxnOp::Range { .. } | TxnOp::DeleteRange { .. } => {
                    path.deleted |= matches!(op, TxnOp::DeleteRange { .. });
                    path.last_user = Some(path.ops);
                    path.ops += 1;
                }
                TxnOp::Put { .. } | TxnOp::PutKeepValue { .. } => {
                    if path.deleted {
                        // It may put a key that a delete before it removed (see `txn`).
                        path.last_user = Some(path.ops);
                    }
                    path.ops += 1;
                }
            }
        }
        Ok(())
    }

    /// A range inside a txn: the state at `base` with the branch's earlier writes
    /// merged in (a read at another revision sees no pending writes). Index entries
    /// and pending writes are merged in key order as they come; every key counts, but
    /// values are read only for the keys returned (not with `keys_only` or
    /// `count_only`, and at most `limit`), as in [`Store::range`].
    fn range_in_txn(
        &self,
        key: &[u8],
        range_end: &[u8],
        opts: &RangeOptions,
        base: u64,
        pending: Pending<'_, '_>,
        reader: &mut LogReader,
    ) -> Result<RangeResult> {
        let span = KeySpan::parse(key, range_end)?;
        if opts.revision != 0 && opts.revision != base {
            // A historical read inside a txn sees no pending writes.
            if opts.revision > base {
                return Err(Error::FutureRevision { requested: opts.revision, current: base });
            }
            let cr = self.compact_revision();
            if opts.revision < cr {
                return Err(Error::Compacted { requested: opts.revision, compact_revision: cr });
            }
        }
        let at = if opts.revision == 0 { base } else { opts.revision };
        let limit = if opts.limit == 0 { usize::MAX } else { opts.limit };
        let mut kvs = Vec::new();
        let mut count = 0usize;
        // Counts a key and, if the answer still takes keys, adds it (reading the value
        // of a committed one only if it is returned with it).
        let mut take = |item: Either<Found, KeyValue>| -> Result<()> {
            count += 1;
            if opts.count_only || kvs.len() >= limit {
                return Ok(());
            }
            let kv = match item {
                Either::Left(f) if opts.keys_only => f.without_value(),
                Either::Left(f) => self.read_value(reader, f)?,
                Either::Right(kv) => kv,
            };
            kvs.push(kv);
            Ok(())
        };
        // The branch's writes in the span, in key order.
        let bounds = span.bounds().filter(|_| at == base);
        let mut writes = bounds.map(|b| pending.overlay.range::<[u8], _>(b)).into_iter().flatten().peekable();
        let mut failed = None;
        self.scan(&span, at, |f| {
            // Writes at keys before `f`'s come first; one at `f`'s key replaces it.
            let mut replaced = false;
            let mut r = Ok(());
            while let Some((k, state)) = writes.next_if(|(k, _)| k[..] <= f.key[..]) {
                work::count(work::Counter::OverlayVisits, 1);
                replaced = k[..] == f.key[..];
                if let Some(i) = state {
                    r = take(Either::Right(pending.kv(*i, opts.keys_only)));
                }
                if replaced || r.is_err() {
                    break;
                }
            }
            if r.is_ok() && !replaced {
                r = take(Either::Left(f));
            }
            match r {
                Ok(()) => true,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        for (_, state) in writes {
            work::count(work::Counter::OverlayVisits, 1);
            if let Some(i) = state {
                take(Either::Right(pending.kv(*i, opts.keys_only)))?;
            }
        }
        // As in `range`: a compaction during the scan may have dropped entries a
        // historical read needed.
        let cr = self.compact_revision();
        if at < cr {
            return Err(Error::Compacted { requested: at, compact_revision: cr });
        }
        Ok(RangeResult { more: !opts.count_only && count > kvs.len(), kvs, count, revision: base })
    }

    /// Whether every key of `c`'s span at `rev` satisfies it (stopping at the first
    /// that does not); values are read only for a value compare.
    fn compare(&self, c: &Compare, rev: u64, reader: &mut LogReader) -> Result<bool> {
        let span = KeySpan::parse_non_empty(&c.key, &c.range_end)?;
        let mut any = false;
        let mut holds = true;
        let mut failed = None;
        self.scan(&span, rev, |f| {
            any = true;
            let kv = if matches!(c.target, CompareTarget::Value(_)) {
                match self.read_value(reader, f) {
                    Ok(kv) => kv,
                    Err(e) => {
                        failed = Some(e);
                        return false;
                    }
                }
            } else {
                f.without_value()
            };
            holds = c.holds(&kv);
            holds
        });
        if let Some(e) = failed {
            return Err(e);
        }
        if !any {
            // As etcd: a missing key fails a value compare; other targets compare
            // against zero.
            if matches!(c.target, CompareTarget::Value(_)) {
                return Ok(false);
            }
            let zero = KeyValue { key: c.key.clone(), ..KeyValue::default() };
            return Ok(c.holds(&zero));
        }
        Ok(holds)
    }

    /// Compacts history below `revision`: reads below it fail with
    /// [`Error::Compacted`] from now on, the keys live at it are written to a base
    /// snapshot, and segments wholly below it are deleted. Survives a restart.
    ///
    /// Revision 0 on a store never compacted succeeds once and changes nothing, as
    /// in etcd, whose compaction revision starts at -1 (so `compact(0)` moves it to
    /// 0, and a second `compact(0)` is refused as compacted). The store remembers that
    /// only while it is open (etcd persists it).
    ///
    /// # Errors
    ///
    /// [`Error::Compacted`] if `revision` is not above the current compaction
    /// revision (but see revision 0 above), [`Error::FutureRevision`] if above the
    /// current revision, I/O errors.
    pub fn compact(&self, revision: u64) -> Result<()> {
        let inner = &*self.inner;
        let _g = lock(&inner.compacting);
        let current = self.current_revision();
        let compact_revision = self.compact_revision();
        if revision == 0 && compact_revision == 0 && !inner.compacted_zero.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        if revision <= compact_revision {
            return Err(Error::Compacted { requested: revision, compact_revision });
        }
        if revision > current {
            return Err(Error::FutureRevision { requested: revision, current });
        }
        // Every record up to `revision` must be durable before the snapshot that
        // stands for them is: committed ones are, except under `fsync=never`.
        if inner.opts.log.fsync == crate::log::FsyncPolicy::Never {
            inner.log.flush()?;
        }

        let mut reader = inner.log.reader();
        let mut live: Vec<Found> = Vec::new();
        inner.index.scan(b"", None, revision, |f| {
            live.push(f);
            true
        });
        let mut kvs = Vec::with_capacity(live.len());
        for f in &live {
            let kv = self.materialize(&mut reader, f.clone(), false)?;
            kvs.push(kv);
        }
        let records = live.iter().zip(&kvs).map(|(f, kv)| RecordData {
            main: f.main,
            sub: f.sub,
            kind: RecordKind::Put,
            last: true,
            create_revision: f.create_revision,
            mod_revision: f.main,
            version: f.version,
            lease: f.lease,
            key: &kv.key,
            value: &kv.value,
        });
        let auth = inner.auth.snapshot_value();
        let locs: Vec<Loc> = inner.log.write_snapshot(revision, records, &inner.leases.grants(), auth.as_deref())?;
        // The snapshot is durable: the compaction has happened (a restart would find
        // it), so reads below `revision` fail from here on. A failure before this
        // point changes nothing.
        inner.compact_rev.store(revision, Ordering::Release);
        for (f, loc) in live.iter().zip(locs) {
            inner.index.set_loc(&f.key, f.main, f.sub, loc);
        }
        inner.index.compact(revision);
        inner.log.drop_before(revision)?;
        Ok(())
    }
}

fn unresolved(key: &[u8], loc: Loc) -> Error {
    Error::Corrupt {
        file: format!("record {loc:?}").into(),
        offset: loc.offset(),
        reason: format!("index entry of key {:?} does not resolve to its record", String::from_utf8_lossy(key)),
    }
}

/// The range end that selects every key starting with `prefix` (etcd's
/// `GetPrefixRangeEnd`): the prefix with its last byte below 0xff incremented and
/// what follows dropped; `"\0"` (every key) if there is no such byte.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(&last) = end.last() {
        if last < 0xff {
            *end.last_mut().expect("non-empty") += 1;
            return end;
        }
        end.pop();
    }
    vec![0]
}

#[cfg(test)]
mod tests;
