//! Tests of the group commit (`commit.rs`): writers return only once durable, none
//! hangs, only the covered writers wake, the role is handed to exactly one writer,
//! a failed fsync wakes everyone with the right answer, `Batch` still waits for
//! company, and the counters add up.

use std::collections::HashMap;
use std::sync::{Condvar as StdCondvar, Mutex as StdMutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::*;

/// How long a test waits for something that should happen at once before it
/// declares a hang.
const PATIENCE: Duration = Duration::from_secs(30);

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(1));
    }
}

fn join<T>(h: JoinHandle<T>, what: &str) -> T {
    wait_until(&format!("{what} returns"), || h.is_finished());
    h.join().unwrap_or_else(|_| panic!("{what} panicked"))
}

fn opts(fsync: FsyncPolicy, segment_size: u64) -> LogOptions {
    LogOptions { fsync, segment_size, ..LogOptions::default() }
}

/// Appends one revision the way the store does (revision number and append under
/// one lock), returning its ticket and the location of its record; `locs`, if
/// given, gets the location before the revision can be published.
fn append(
    log: &RevisionLog,
    last: &StdMutex<u64>,
    value: &[u8],
    locs: Option<&StdMutex<HashMap<u64, Loc>>>,
) -> Result<(Ticket, Loc)> {
    let mut last = last.lock().unwrap();
    let rev = *last + 1;
    let mut loc = None;
    let ev = [Event { kind: RecordKind::Put, key: b"k", value, create_revision: 2, version: rev - 1, lease: 0 }];
    let ticket = log.append(rev, &ev, |l| {
        loc = Some(l[0]);
        if let Some(m) = locs {
            m.lock().unwrap().insert(rev, l[0]);
        }
    })?;
    *last = rev;
    Ok((ticket, loc.expect("before_commit ran")))
}

/// Whether the record of `rev` at `loc` is in the storage's durable bytes.
fn is_durable(log: &RevisionLog, storage: &MemStorage, rev: u64, loc: Loc) -> bool {
    let files = log.inner.files.load();
    let Some(seg) = files.segments.iter().find(|s| s.file_no == loc.file_no()) else { return false };
    let Some(bytes) = storage.read_durable(&seg.name) else { return false };
    matches!(record::decode(&bytes[loc.offset() as usize..]), Ok((r, _)) if r.main == rev && r.last)
}

fn waiting_revs(log: &RevisionLog) -> Vec<u64> {
    let mut revs: Vec<u64> = lock(&log.inner.sync).waiters_revs();
    revs.sort_unstable();
    revs
}

/// `writers` threads each append and wait for `per_writer` revisions, each fsync
/// taking `sync_delay`; every `wait_durable` must return, and only once its record
/// is durable; a reader checks meanwhile that whatever is committed is durable.
fn many_writers(fsync: FsyncPolicy, writers: usize, per_writer: usize, sync_delay: Duration) -> CommitStats {
    let storage = MemStorage::new();
    let gated = Gated { inner: storage.clone(), gate: Arc::new(Gate::default()), delay: sync_delay };
    // Small segments: rounds that span a roll are covered too.
    let (log, _) = RevisionLog::open(Arc::new(gated), opts(fsync, 16 << 10)).unwrap();
    let last = Arc::new(StdMutex::new(1u64));
    let locs = Arc::new(StdMutex::new(HashMap::new()));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (log, storage, locs, done) = (log.clone(), storage.clone(), Arc::clone(&locs), Arc::clone(&done));
        thread::spawn(move || {
            let mut seen = 1;
            while !done.load(Ordering::Acquire) {
                let c = log.committed_rev();
                assert!(c >= seen, "committed_rev went back from {seen} to {c}");
                seen = c;
                if c >= 2 {
                    let loc = *locs.lock().unwrap().get(&c).expect("a committed revision was appended");
                    assert!(is_durable(&log, &storage, c, loc), "revision {c} published before it is durable");
                }
                thread::yield_now();
            }
        })
    };
    let handles: Vec<_> = (0..writers)
        .map(|t| {
            let (log, storage, last, locs) = (log.clone(), storage.clone(), Arc::clone(&last), Arc::clone(&locs));
            thread::spawn(move || {
                for i in 0..per_writer {
                    let (ticket, loc) = append(&log, &last, &(t * 1000 + i).to_le_bytes(), Some(&locs)).unwrap();
                    log.wait_durable(ticket).unwrap();
                    assert!(log.committed_rev() >= ticket.rev, "wait_durable returned before the publish");
                    assert!(is_durable(&log, &storage, ticket.rev, loc), "revision {} not durable", ticket.rev);
                }
            })
        })
        .collect();
    for (t, h) in handles.into_iter().enumerate() {
        join(h, &format!("writer {t}"));
    }
    done.store(true, Ordering::Release);
    join(reader, "the reader");
    let total = (writers * per_writer) as u64;
    assert_eq!(log.committed_rev(), 1 + total);
    let s = lock(&log.inner.sync);
    assert!(!s.syncing_now(), "the role is given up at the end");
    assert!(s.waiters_revs().is_empty(), "nobody is left asleep");
    drop(s);
    let stats = log.commit_stats();
    assert_eq!(stats.revisions, total, "{stats:?}");
    assert!(stats.fsyncs <= stats.revisions && stats.fsyncs >= stats.groups, "{stats:?}");
    assert_eq!(stats.group_sizes.iter().sum::<u64>(), stats.groups, "{stats:?}");
    stats
}

#[test]
fn always_16_writers_return_only_when_durable() {
    // An in-memory fsync is nearly free: groups are mostly of one.
    let stats = many_writers(FsyncPolicy::Always, 16, 40, Duration::ZERO);
    assert!(stats.median_group_size().is_some());
}

#[test]
fn always_16_writers_on_a_slow_disk_share_fsyncs() {
    let stats = many_writers(FsyncPolicy::Always, 16, 20, Duration::from_micros(300));
    assert!(stats.groups < stats.revisions, "16 writers share some fsyncs: {stats:?}");
    assert!(stats.handoffs > 0, "writers that came during an fsync got the role: {stats:?}");
}

#[test]
fn batch_16_writers_return_only_when_durable() {
    let stats = many_writers(FsyncPolicy::Batch, 16, 20, Duration::from_micros(100));
    assert!(stats.groups < stats.revisions, "{stats:?}");
}

// ---------------------------------------------------------------------------
// A storage whose file syncs wait at a gate, to stage who is where

#[derive(Default)]
struct Gate {
    state: StdMutex<GateState>,
    cv: StdCondvar,
}

#[derive(Default)]
struct GateState {
    closed: bool,
    permits: u64,
    waiting: u64,
}

impl Gate {
    fn pass(&self) {
        let mut g = self.state.lock().unwrap();
        g.waiting += 1;
        self.cv.notify_all();
        while g.closed && g.permits == 0 {
            g = self.cv.wait(g).unwrap();
        }
        if g.closed {
            g.permits -= 1;
        }
        g.waiting -= 1;
        self.cv.notify_all();
    }
    fn close(&self) {
        self.state.lock().unwrap().closed = true;
    }
    fn open(&self) {
        self.state.lock().unwrap().closed = false;
        self.cv.notify_all();
    }
    /// Lets `n` more syncs through.
    fn allow(&self, n: u64) {
        self.state.lock().unwrap().permits += n;
        self.cv.notify_all();
    }
    /// Waits until exactly `n` syncs wait at the gate.
    fn wait_for(&self, n: u64) {
        let start = Instant::now();
        let mut g = self.state.lock().unwrap();
        while g.waiting != n || g.permits > 0 {
            assert!(start.elapsed() < PATIENCE, "timed out waiting for {n} syncs at the gate");
            g = self.cv.wait_timeout(g, Duration::from_millis(10)).unwrap().0;
        }
    }
}

/// [`MemStorage`] whose file syncs pass `gate` and then take `delay`, like a disk.
#[derive(Debug)]
struct Gated {
    inner: MemStorage,
    gate: Arc<Gate>,
    delay: Duration,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gate")
    }
}

struct GatedFile {
    inner: Arc<dyn StorageFile>,
    gate: Arc<Gate>,
    delay: Duration,
}

impl StorageFile for GatedFile {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn write_at(&self, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        self.inner.write_at(offset, bytes)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_at(offset, buf)
    }
    fn sync(&self) -> std::io::Result<()> {
        self.gate.pass();
        if !self.delay.is_zero() {
            thread::sleep(self.delay);
        }
        self.inner.sync()
    }
    fn map(&self) -> std::io::Result<storage::Mapping> {
        self.inner.map()
    }
}

impl Storage for Gated {
    fn list(&self) -> std::io::Result<Vec<String>> {
        self.inner.list()
    }
    fn create(&self, name: &str, len: u64) -> std::io::Result<Arc<dyn StorageFile>> {
        let f = self.inner.create(name, len)?;
        Ok(Arc::new(GatedFile { inner: f, gate: Arc::clone(&self.gate), delay: self.delay }))
    }
    fn open(&self, name: &str) -> std::io::Result<Arc<dyn StorageFile>> {
        let f = self.inner.open(name)?;
        Ok(Arc::new(GatedFile { inner: f, gate: Arc::clone(&self.gate), delay: self.delay }))
    }
    fn remove(&self, name: &str) -> std::io::Result<()> {
        self.inner.remove(name)
    }
    fn rename(&self, from: &str, to: &str) -> std::io::Result<()> {
        self.inner.rename(from, to)
    }
    fn sync_dir(&self) -> std::io::Result<()> {
        self.inner.sync_dir()
    }
    fn path(&self, name: &str) -> std::path::PathBuf {
        self.inner.path(name)
    }
}

/// A log under `Always` on gated storage, with the gate closed.
fn gated_log() -> (MemStorage, Arc<Gate>, RevisionLog) {
    let storage = MemStorage::new();
    let gate = Arc::new(Gate::default());
    let gated = Gated { inner: storage.clone(), gate: Arc::clone(&gate), delay: Duration::ZERO };
    let (log, _) = RevisionLog::open(Arc::new(gated), opts(FsyncPolicy::Always, 64 << 10)).unwrap();
    gate.close();
    (storage, gate, log)
}

type Writer = JoinHandle<Result<u64>>;

/// A writer thread that appends one revision and waits for it.
fn writer(log: &RevisionLog, last: &Arc<StdMutex<u64>>) -> Writer {
    let (log, last) = (log.clone(), Arc::clone(last));
    thread::spawn(move || {
        let (ticket, _) = append(&log, &last, b"v", None)?;
        log.wait_durable(ticket)?;
        Ok(ticket.rev)
    })
}

/// Stages the scene of the gated tests: writer A (revision 2) syncs, held at the
/// gate; B (3) and C (4) arrived meanwhile and sleep.
fn a_syncs_while_b_and_c_sleep(log: &RevisionLog, gate: &Gate) -> (Writer, Writer, Writer) {
    let last = Arc::new(StdMutex::new(1u64));
    let a = writer(log, &last);
    gate.wait_for(1);
    let b = writer(log, &last);
    wait_until("B sleeps", || waiting_revs(log) == [3]);
    let c = writer(log, &last);
    wait_until("C sleeps", || waiting_revs(log) == [3, 4]);
    (a, b, c)
}

#[test]
fn the_syncer_wakes_only_whom_it_made_durable_and_hands_on_to_one() {
    let (_storage, gate, log) = gated_log();
    let (a, b, c) = a_syncs_while_b_and_c_sleep(&log, &gate);
    gate.allow(1); // A's fsync of revision 2 completes
    assert_eq!(join(a, "A").unwrap(), 2);
    gate.wait_for(1); // the next round's fsync started at once, without A returning first
    assert_eq!(log.committed_rev(), 2);
    assert_eq!(waiting_revs(&log), [4], "C sleeps on: B took the role, C was not woken");
    assert!(!b.is_finished() && !c.is_finished());
    let s = log.commit_stats();
    assert_eq!((s.groups, s.revisions, s.handoffs), (1, 1, 1), "{s:?}");
    gate.open();
    assert_eq!(join(b, "B").unwrap(), 3);
    assert_eq!(join(c, "C").unwrap(), 4);
    assert_eq!(log.committed_rev(), 4);
    let s = log.commit_stats();
    assert_eq!((s.groups, s.fsyncs, s.revisions, s.handoffs), (2, 2, 3, 1), "{s:?}");
    assert_eq!(s.group_sizes[..3], [1, 1, 0], "one group of 1, one of 2: {s:?}");
    assert_eq!(s.median_group_size(), Some(1));
    assert!(!lock(&log.inner.sync).syncing_now());
}

#[test]
fn a_failed_fsync_wakes_every_waiter_with_poisoned() {
    let (storage, gate, log) = gated_log();
    let (a, b, c) = a_syncs_while_b_and_c_sleep(&log, &gate);
    storage.fail_syncs(true);
    gate.open();
    for (h, name) in [(a, "A"), (b, "B"), (c, "C")] {
        assert!(matches!(join(h, name), Err(Error::Poisoned(_))), "{name} gets Poisoned");
    }
    assert_eq!(log.committed_rev(), 1, "nothing was published");
    assert!(log.is_poisoned());
    assert!(waiting_revs(&log).is_empty() && !lock(&log.inner.sync).syncing_now());
    assert!(matches!(log.wait_durable(Ticket { rev: 3 }), Err(Error::Poisoned(_))), "later waits fail at once");
    assert_eq!(log.commit_stats().groups, 0);
}

#[test]
fn a_failed_fsync_after_a_handoff_fails_only_what_it_did_not_make_durable() {
    let (storage, gate, log) = gated_log();
    let (a, b, c) = a_syncs_while_b_and_c_sleep(&log, &gate);
    gate.allow(1);
    assert_eq!(join(a, "A").unwrap(), 2, "A's own fsync succeeded");
    gate.wait_for(1); // B syncs 3 and 4
    storage.fail_syncs(true);
    gate.open();
    assert!(matches!(join(b, "B"), Err(Error::Poisoned(_))));
    assert!(matches!(join(c, "C"), Err(Error::Poisoned(_))), "C, asleep, is woken with the error");
    assert_eq!(log.committed_rev(), 2);
    assert!(log.wait_durable(Ticket { rev: 2 }).is_ok(), "a durable revision stays acknowledged");
}

#[test]
fn batch_syncs_at_once_when_batch_bytes_are_pending() {
    // A long delay (slices of 1.25 s): only the batch_bytes ring ends the wait early.
    let o = LogOptions {
        fsync: FsyncPolicy::Batch,
        batch_delay: Duration::from_secs(10),
        batch_bytes: 2 * record::encoded_len(1, 1) as u64,
        ..LogOptions::default()
    };
    let (log, _) = RevisionLog::open(Arc::new(MemStorage::new()), o).unwrap();
    let last = Arc::new(StdMutex::new(1u64));
    let start = Instant::now();
    let a = writer(&log, &last);
    wait_until("A waits for company", || lock(&log.inner.sync).syncing_now());
    let b = writer(&log, &last);
    assert_eq!(join(a, "A").unwrap(), 2);
    assert_eq!(join(b, "B").unwrap(), 3);
    assert!(start.elapsed() < Duration::from_secs(1), "took {:?}", start.elapsed());
    let s = log.commit_stats();
    assert_eq!((s.groups, s.revisions), (1, 2), "one group of both: {s:?}");
}

#[test]
fn never_leaves_the_counters_alone() {
    let (log, _) = RevisionLog::open(Arc::new(MemStorage::new()), opts(FsyncPolicy::Never, 64 << 10)).unwrap();
    let last = StdMutex::new(1u64);
    let (t, _) = append(&log, &last, b"v", None).unwrap();
    log.wait_durable(t).unwrap();
    assert_eq!(log.committed_rev(), 2);
    assert_eq!(log.commit_stats(), CommitStats::default());
}

#[test]
fn commit_stats_buckets_median_and_interval() {
    let mut s = CommitStats::default();
    assert_eq!(s.median_group_size(), None);
    for size in [1, 8, 8, 9, 16, 17, 100_000] {
        s.record_group(size, 1);
    }
    assert_eq!(s.groups, 7);
    assert_eq!(s.revisions, 1 + 8 + 8 + 9 + 16 + 17 + 100_000);
    assert_eq!(s.group_sizes[0], 1);
    assert_eq!(s.group_sizes[7], 2, "size 8");
    assert_eq!(s.group_sizes[15], 1, "size 16");
    assert_eq!(s.group_sizes[16], 1, "17 goes to the 17–32 bucket");
    assert_eq!(s.group_sizes[GROUP_SIZE_BOUNDS.len() - 1], 1, "beyond 8192");
    assert_eq!(s.median_group_size(), Some(9), "the 4th of 7");
    let before = s.clone();
    s.record_group(2, 1);
    s.record_group(2, 2);
    let d = s.since(&before);
    assert_eq!((d.groups, d.fsyncs, d.revisions), (2, 3, 4));
    assert_eq!(d.median_group_size(), Some(2));
    assert_eq!(d.mean_group_size(), Some(2.0));
}

/// Random appends (some larger than a segment, some right after opening, when the
/// active segment is empty), lease records between them (some the first records of
/// a segment, some filling one), reopens with other segment sizes, crashes that
/// lose unsynced tails, and compactions: no two live segments ever share a name or a
/// first revision, the directory holds exactly the live segments, and every lease
/// record is found again on open unless a crash lost it before it was synced.
#[test]
fn no_two_live_segments_share_a_name() {
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeSet;
    let seed: u64 = std::env::var("ARGUS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("segment names seed {seed} (replay with ARGUS_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut storage = MemStorage::new();
    let check = |log: &RevisionLog, storage: &MemStorage, ctx: &str| {
        let files = log.inner.files.load();
        let names: Vec<&str> = files.segments.iter().map(|s| s.name.as_str()).collect();
        let mut unique = names.clone();
        unique.dedup();
        assert_eq!(names, unique, "{ctx}: live segments {names:?}");
        assert!(files.segments.windows(2).all(|p| p[0].first_rev < p[1].first_rev), "{ctx}: {names:?}");
        let mut on_disk: Vec<String> = storage.list().unwrap().into_iter().filter(|n| n.starts_with("seg-")).collect();
        on_disk.sort();
        assert_eq!(on_disk, names, "{ctx}: files on disk");
    };
    // Lease IDs granted (all of them, and those known durable).
    let mut granted: BTreeSet<i64> = BTreeSet::new();
    let mut durable: BTreeSet<i64> = BTreeSet::new();
    let recovered = |log: &RevisionLog| -> BTreeSet<i64> {
        let r = log.reader();
        let mut ids: BTreeSet<i64> = r.snapshot_leases().into_iter().map(|(id, _)| id).collect();
        for item in r.records_with_leases(0, r.committed_rev()) {
            let (_, rec) = item.unwrap();
            if let Some((id, Some(_))) = record::lease_op(&rec) {
                ids.insert(id);
            }
        }
        ids
    };
    for round in 0..30 {
        let size = [4096u64, 8192, 65536][rng.random_range(0..3)];
        let policy = if rng.random_bool(0.5) { FsyncPolicy::Always } else { FsyncPolicy::Never };
        let (log, rec) = RevisionLog::open(Arc::new(storage.clone()), opts(policy, size)).unwrap();
        let found = recovered(&log);
        let lost: Vec<&i64> = durable.difference(&found).collect();
        assert!(lost.is_empty(), "round {round}: durable lease records lost: {lost:?}");
        assert!(found.is_subset(&granted), "round {round}: lease records from nowhere");
        // What a reopen without a crash finds may still be unsynced (`never`): it
        // is there, but only what was synced counts as durable.
        granted = found;
        let mut last = rec.last_rev;
        let mut hold_rev = None;
        for i in 0..rng.random_range(1..40) {
            // Lease records: sometimes one, sometimes enough to fill a small segment.
            if rng.random_bool(0.3) {
                let n = if rng.random_bool(0.1) { rng.random_range(50..150) } else { 1 };
                for _ in 0..n {
                    let id = granted.last().map_or(1, |l| l + 1);
                    let w = log.append_lease(id, Some(60)).unwrap();
                    granted.insert(id);
                    if policy == FsyncPolicy::Always {
                        log.sync_lease_record(w).unwrap();
                        durable.insert(id);
                    }
                }
                check(&log, &storage, &format!("round {round}, lease records before append {i}"));
            }
            // Large ones often first, when the active segment may be empty.
            let p = if i == 0 { 0.5 } else { 0.1 };
            let len = if rng.random_bool(p) { rng.random_range(4096..20000) } else { rng.random_range(0..300) };
            let value = vec![b'v'; len];
            let ev =
                [Event { kind: RecordKind::Put, key: b"k", value: &value, create_revision: 2, version: 1, lease: 0 }];
            let t = log.append(last + 1, &ev, |_| {}).unwrap();
            log.wait_durable(t).unwrap();
            if policy == FsyncPolicy::Always {
                // Everything before a durable revision is durable with it.
                durable = granted.clone();
            }
            last += 1;
            check(&log, &storage, &format!("round {round}, append {i} of {len} bytes, segment size {size}"));
            if rng.random_bool(0.05) {
                hold_rev = Some(last);
            }
        }
        if let Some(r) = hold_rev {
            let recs: Vec<RecordData<'_>> = Vec::new();
            let leases: Vec<(i64, i64)> = granted.iter().map(|&id| (id, 60)).collect();
            log.write_snapshot(r, recs.into_iter(), &leases, None).unwrap();
            log.drop_before(r).unwrap();
            check(&log, &storage, &format!("round {round}, compacted at {r}"));
            durable = granted.clone();
        }
        if rng.random_bool(0.5) {
            log.flush().unwrap();
            durable = granted.clone();
        }
        drop(log);
        if rng.random_bool(0.3) {
            storage = storage.crash(CrashMode::DropUnsynced);
            let (log, _) = RevisionLog::open(Arc::new(storage.clone()), opts(policy, size)).unwrap();
            check(&log, &storage, &format!("round {round}, after a crash"));
        }
    }
}
