//! Criterion benchmarks of the MVCC store on a real file system.
//!
//! - `put/<policy>/1`: one writer, one put (64-byte key, 256-byte value) per
//!   iteration, under fsync `never`, `batch` and `always`;
//! - `put/<policy>/16`: 16 writer threads sharing one store, each doing `iters / 16`
//!   puts; the time per iteration is the wall time per put of the whole group, so
//!   the throughput is the group's puts/s (this is what group commit is for);
//! - `range/get_1_of_10k`, `range/prefix_100_of_10k`: reads of one key and of a
//!   100-key prefix in a store of 10,000 keys;
//! - `txn/*` and `range/limit_10_of_10k`: txns a client can make expensive (see
//!   `bench_txn`);
//! - `recovery/*_1m`: reopening a data directory of 1,000,000 revisions (written
//!   once, before timing), each open in a fresh child process (this binary run
//!   again with `ARGUS_BENCH_RECOVERY_CHILD` set), timed inside it: the whole
//!   `Store::open` with a warm page cache, the same with the data files evicted
//!   from the page cache first (`cold`), and the log's scan alone
//!   (`RevisionLog::open`), so the report can split recovery into the scan and the
//!   index build;
//! - not a criterion benchmark, `group_commit_pairs`: 1 and 16 writers under
//!   `always` alternating on one store in 1.5 s runs, six rounds, recording the
//!   ratio and the median group size per run (a check of the criterion ratio
//!   against the disk's drift);
//! - `fs/pwrite_376b_fdatasync`: the file system's own cost of what `always` does
//!   per commit (one record-sized `pwrite` into a preallocated file, then
//!   `fdatasync`), run right after the puts, to explain their figures.
//!
//! The put benchmarks open their store on a `FileStorage` wrapped to count the
//! log's fdatasyncs and writes, and meter the process's CPU time and context
//! switches (getrusage), so the report can say how many puts shared one fsync and
//! whether the cores were the limit. They also record the log's own group commit
//! counters (`RevisionLog::commit_stats`: groups, revisions per group as a
//! histogram, so the median group size, and syncer hand-offs).
//!
//! `cargo bench -p argus-bench --bench store -- put/always` runs only the group
//! commit part: `put/always/{1,16}` and `group_commit_pairs` (which ignores the
//! filter); `scripts/bench-store.sh --group-commit` does that.
//!
//! Data directories are temporary directories under `$ARGUS_BENCH_DIR` or the
//! system temporary directory, unless that is tmpfs (then under the cargo target
//! directory). Facts about the run (where the data was, data set sizes) go to
//! `$ARGUS_STORE_META` (default `<target>/criterion/argus-store-meta.json`), which
//! `store-report` reads with criterion's estimates. `scripts/bench-store.sh` runs
//! it all.

use std::fs::File;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use argus_bench::{fs_of, target_dir, unix_now, RunMeta};
use argus_engine::log::storage::Mapping;
use argus_engine::log::{CommitStats, FileStorage, FsyncPolicy, RevisionLog, Storage, StorageFile, GROUP_SIZE_BOUNDS};
use argus_engine::store::{
    prefix_end, Compare, CompareOp, CompareTarget, PutLease, RangeOptions, Store, StoreOptions, TxnOp, TxnOpResult,
};
use criterion::{criterion_group, BenchmarkId, Criterion, SamplingMode, Throughput};
use serde_json::json;
use tempfile::TempDir;

const KEY_LEN: usize = 64;
const VALUE_LEN: usize = 256;
/// Distinct keys the put benchmarks cycle through.
const PUT_KEYS: usize = 10_000;
/// Writer threads of the concurrent put benchmarks.
const WRITERS: usize = 16;
/// Keys of the range benchmarks' store, in groups of `RANGE_GROUP` under one prefix.
const RANGE_KEYS: usize = 10_000;
const RANGE_GROUP: usize = 100;
/// Revisions of the recovery data set, written as puts cycling over `RECOVERY_KEYS`.
const RECOVERY_REVS: u64 = 1_000_000;
const RECOVERY_KEYS: usize = 100_000;

// ---------------------------------------------------------------------------
// Run metadata

struct Meta {
    path: PathBuf,
    meta: RunMeta,
}

fn meta() -> &'static Mutex<Meta> {
    static META: OnceLock<Mutex<Meta>> = OnceLock::new();
    META.get_or_init(|| {
        let path = std::env::var_os("ARGUS_STORE_META")
            .map(PathBuf::from)
            .unwrap_or_else(|| target_dir().join("criterion").join("argus-store-meta.json"));
        let mut meta = RunMeta { started_unix: unix_now(), facts: Default::default() };
        meta.facts.insert("loadavg_at_start".into(), json!(loadavg()));
        Mutex::new(Meta { path, meta })
    })
}

/// `/proc/loadavg`: how busy the shared machine was.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(|e| format!("({e})"), |s| s.trim().to_string())
}

/// Records `key = value` in the run's meta file (rewritten at once).
fn note(key: &str, value: serde_json::Value) {
    let mut m = meta().lock().unwrap_or_else(|p| p.into_inner());
    m.meta.facts.insert(key.to_string(), value);
    if let Err(e) = m.meta.save(&m.path) {
        eprintln!("warning: cannot write the run's meta file: {e}");
    }
}

/// CPU time (user + system) this process has used so far, and its context
/// switches (voluntary + involuntary), all threads included.
fn cpu_usage() -> (Duration, u64) {
    // SAFETY: getrusage fills the struct we pass; zeroed is a valid rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(rc, 0, "getrusage");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(ru.ru_utime) + tv(ru.ru_stime), (ru.ru_nvcsw + ru.ru_nivcsw) as u64)
}

/// Accumulates CPU time, context switches, wall time, operations and the log's
/// file syncs and writes over every sample of one benchmark (warm-up included), to
/// tell how busy the cores were and how many puts shared one fsync.
#[derive(Default)]
struct CpuMeter {
    cpu: Duration,
    switches: u64,
    wall: Duration,
    ops: u64,
    syncs: u64,
    writes: u64,
}

impl CpuMeter {
    /// Runs `f` (which returns the operations it did) and accounts for it;
    /// `io` counts the store's file syncs and writes.
    fn measure(&mut self, io: Option<&IoCounters>, f: impl FnOnce() -> u64) {
        let io0 = io.map(IoCounters::get);
        let (c0, s0) = cpu_usage();
        let w0 = Instant::now();
        let ops = f();
        self.wall += w0.elapsed();
        let (c1, s1) = cpu_usage();
        self.cpu += c1 - c0;
        self.switches += s1 - s0;
        self.ops += ops;
        if let (Some(io), Some((sy0, wr0))) = (io, io0) {
            let (sy1, wr1) = io.get();
            self.syncs += sy1 - sy0;
            self.writes += wr1 - wr0;
        }
    }

    fn note(&self, id: &str) {
        if self.ops == 0 {
            return;
        }
        let ops = self.ops as f64;
        note(
            &format!("cpu:{id}"),
            json!({
                "ops": self.ops,
                "cpu_seconds": self.cpu.as_secs_f64(),
                "wall_seconds": self.wall.as_secs_f64(),
                "cpu_us_per_op": self.cpu.as_secs_f64() * 1e6 / ops,
                "cores_busy": self.cpu.as_secs_f64() / self.wall.as_secs_f64(),
                "context_switches_per_op": self.switches as f64 / ops,
                "file_syncs": self.syncs,
                "file_writes": self.writes,
                "ops_per_file_sync": if self.syncs > 0 { json!(ops / self.syncs as f64) } else { json!(null) },
            }),
        );
    }
}

/// The group commit counters of an interval (`RevisionLog::commit_stats`), as JSON:
/// groups (one fsync round each), revisions, the median and mean group size
/// (revisions made durable per group) and the histogram (bucket upper bound →
/// groups).
fn commit_json(c: &CommitStats) -> serde_json::Value {
    let histogram: Vec<serde_json::Value> = GROUP_SIZE_BOUNDS
        .iter()
        .zip(c.group_sizes.iter())
        .filter(|(_, &n)| n > 0)
        .map(|(&le, &n)| json!({ "le": if le == u64::MAX { json!("inf") } else { json!(le) }, "groups": n }))
        .collect();
    json!({
        "groups": c.groups,
        "fsyncs": c.fsyncs,
        "revisions": c.revisions,
        "handoffs": c.handoffs,
        "median_group_size": c.median_group_size(),
        "mean_group_size": c.mean_group_size(),
        "group_sizes": histogram,
    })
}

/// Records a benchmark's group commit counters (the whole life of its store,
/// warm-up included, like the CPU meter) and prints a line about them.
fn note_commit(id: &str, store: &Store) {
    let c = store.log().commit_stats();
    if c.groups == 0 {
        return;
    }
    eprintln!(
        "{id}: {} groups of {} revisions, median group size {}, mean {:.2}, {} syncer hand-offs",
        c.groups,
        c.revisions,
        c.median_group_size().unwrap_or(0),
        c.mean_group_size().unwrap_or(0.0),
        c.handoffs
    );
    note(&format!("commit:{id}"), commit_json(&c));
}

// ---------------------------------------------------------------------------
// A storage that counts what the log asks of the file system

/// Counts of [`StorageFile::sync`] (fdatasync) and [`StorageFile::write_at`] calls.
#[derive(Default)]
struct IoCounters {
    syncs: AtomicU64,
    writes: AtomicU64,
}

impl IoCounters {
    fn get(&self) -> (u64, u64) {
        (self.syncs.load(Ordering::Relaxed), self.writes.load(Ordering::Relaxed))
    }
}

/// [`FileStorage`] with every file's syncs and writes counted (one relaxed atomic
/// add per call, nothing else), so the put benchmarks can report how many puts
/// shared one fsync. `Store::open(dir, opts)` is `FileStorage::open(dir)` passed to
/// `Store::open_storage`, which is what this does with the wrapper in between.
#[derive(Debug)]
struct CountingStorage {
    inner: FileStorage,
    counters: Arc<IoCounters>,
}

impl std::fmt::Debug for IoCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.get())
    }
}

struct CountingFile {
    inner: Arc<dyn StorageFile>,
    counters: Arc<IoCounters>,
}

impl StorageFile for CountingFile {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn write_at(&self, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        self.inner.write_at(offset, bytes)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_at(offset, buf)
    }
    fn sync(&self) -> std::io::Result<()> {
        self.counters.syncs.fetch_add(1, Ordering::Relaxed);
        self.inner.sync()
    }
    fn map(&self) -> std::io::Result<Mapping> {
        self.inner.map()
    }
}

impl CountingStorage {
    fn wrap(&self, f: Arc<dyn StorageFile>) -> Arc<dyn StorageFile> {
        Arc::new(CountingFile { inner: f, counters: Arc::clone(&self.counters) })
    }
}

impl Storage for CountingStorage {
    fn list(&self) -> std::io::Result<Vec<String>> {
        self.inner.list()
    }
    fn create(&self, name: &str, len: u64) -> std::io::Result<Arc<dyn StorageFile>> {
        self.inner.create(name, len).map(|f| self.wrap(f))
    }
    fn open(&self, name: &str) -> std::io::Result<Arc<dyn StorageFile>> {
        self.inner.open(name).map(|f| self.wrap(f))
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
    fn path(&self, name: &str) -> PathBuf {
        self.inner.path(name)
    }
}

// ---------------------------------------------------------------------------
// Fixtures

/// Where data directories are made: `$ARGUS_BENCH_DIR`, else the temporary
/// directory unless it is in memory, else `<target>/bench-data`.
fn data_base() -> &'static PathBuf {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let chosen = match std::env::var_os("ARGUS_BENCH_DIR") {
            Some(d) => PathBuf::from(d),
            None => {
                let tmp = std::env::temp_dir();
                if fs_of(&tmp).is_some_and(|f| f.is_memory()) {
                    target_dir().join("bench-data")
                } else {
                    tmp
                }
            }
        };
        std::fs::create_dir_all(&chosen).expect("create the benchmark data directory");
        let fs = fs_of(&chosen);
        if let Some(f) = &fs {
            assert!(
                !f.is_memory(),
                "benchmark data directory {} is on {} (in memory): fsync costs nothing there",
                chosen.display(),
                f.fstype
            );
        }
        note("data_dir_base", json!(chosen.display().to_string()));
        note("data_dir_fs", serde_json::to_value(fs).unwrap_or_default());
        chosen
    })
}

fn temp_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir_in(data_base()).expect("create a temporary data directory")
}

fn store_options(fsync: FsyncPolicy) -> StoreOptions {
    let mut o = StoreOptions::default();
    o.log.fsync = fsync;
    o
}

/// A 64-byte key: `prefix` then `n` zero-padded to fill.
fn key(prefix: &str, n: usize) -> Vec<u8> {
    let k = format!("{prefix}{n:0width$}", width = KEY_LEN - prefix.len());
    assert_eq!(k.len(), KEY_LEN);
    k.into_bytes()
}

fn value() -> Vec<u8> {
    (0..VALUE_LEN).map(|i| b'a' + (i % 26) as u8).collect()
}

/// A store in its own temporary directory (the store is dropped first).
struct Fixture {
    store: Store,
    io: Arc<IoCounters>,
    _dir: TempDir,
}

impl Fixture {
    fn new(prefix: &str, fsync: FsyncPolicy) -> Fixture {
        let dir = temp_dir(prefix);
        let io = Arc::new(IoCounters::default());
        let storage = CountingStorage {
            inner: FileStorage::open(dir.path()).expect("open the data directory"),
            counters: Arc::clone(&io),
        };
        let store = Store::open_storage(Arc::new(storage), store_options(fsync)).expect("open the store");
        Fixture { store, io, _dir: dir }
    }
}

// ---------------------------------------------------------------------------
// Puts

/// Writes back every dirty page of the machine first, so that a benchmark of fsync
/// does not pay for the build's (or anyone's) earlier writes.
fn settle() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

fn bench_put(c: &mut Criterion) {
    settle();
    let keys: Vec<Vec<u8>> = (0..PUT_KEYS).map(|i| key("/registry/bench/", i)).collect();
    let value = value();
    note(
        "put",
        json!({ "key_bytes": KEY_LEN, "value_bytes": VALUE_LEN, "distinct_keys": PUT_KEYS, "writers": [1, WRITERS] }),
    );

    let mut group = c.benchmark_group("put");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(1));
    for policy in [FsyncPolicy::Never, FsyncPolicy::Batch, FsyncPolicy::Always] {
        group.sampling_mode(SamplingMode::Auto);
        let mut fixture: Option<Fixture> = None;
        let mut meter = CpuMeter::default();
        let mut n = 0usize;
        group.bench_function(BenchmarkId::new(policy.to_string(), 1), |b| {
            let fx = fixture.get_or_insert_with(|| Fixture::new("put-1-", policy));
            let store = &fx.store;
            meter.measure(Some(&fx.io), || {
                let before = n;
                b.iter(|| {
                    let r = store.put(&keys[n % PUT_KEYS], &value).expect("put");
                    n += 1;
                    black_box(r)
                });
                (n - before) as u64
            });
        });
        meter.note(&format!("put/{policy}/1"));
        if let Some(fx) = fixture.take() {
            note_commit(&format!("put/{policy}/1"), &fx.store);
        }

        // Flat sampling: every sample is a long run of puts, so thread start-up and
        // the ramp of group commit are a small part of it.
        group.sampling_mode(SamplingMode::Flat);
        let mut meter = CpuMeter::default();
        group.bench_function(BenchmarkId::new(policy.to_string(), WRITERS), |b| {
            let fx = fixture.get_or_insert_with(|| Fixture::new("put-16-", policy));
            let (store, io) = (fx.store.clone(), Arc::clone(&fx.io));
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                meter.measure(Some(&io), || {
                    let start = Instant::now();
                    std::thread::scope(|s| {
                        for t in 0..WRITERS {
                            let n = iters / WRITERS as u64 + u64::from((t as u64) < iters % WRITERS as u64);
                            let store = store.clone();
                            let (keys, value) = (&keys, &value);
                            s.spawn(move || {
                                for i in 0..n as usize {
                                    let k = &keys[(t * (PUT_KEYS / WRITERS) + i) % PUT_KEYS];
                                    black_box(store.put(k, value).expect("put"));
                                }
                            });
                        }
                    });
                    elapsed = start.elapsed();
                    iters
                });
                elapsed
            });
        });
        meter.note(&format!("put/{policy}/{WRITERS}"));
        if let Some(fx) = fixture.take() {
            note_commit(&format!("put/{policy}/{WRITERS}"), &fx.store);
        }
    }
    group.finish();
}

// ---------------------------------------------------------------------------
// Ranges

fn bench_range(c: &mut Criterion) {
    let prefix = |g: usize| format!("/registry/range/{g:03}/");
    let fixture = Fixture::new("range-", FsyncPolicy::Never);
    let value = value();
    let mut all = Vec::with_capacity(RANGE_KEYS);
    for g in 0..RANGE_KEYS / RANGE_GROUP {
        for i in 0..RANGE_GROUP {
            let k = key(&prefix(g), i);
            fixture.store.put(&k, &value).expect("put");
            all.push(k);
        }
    }
    note(
        "range",
        json!({ "keys": RANGE_KEYS, "prefix_keys": RANGE_GROUP, "key_bytes": KEY_LEN, "value_bytes": VALUE_LEN }),
    );
    let store = &fixture.store;

    let mut group = c.benchmark_group("range");
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(1));
    group.bench_function("get_1_of_10k", |b| {
        // A stride coprime with the key count visits the keys out of order.
        let mut n = 0usize;
        b.iter(|| {
            n = (n + 7919) % RANGE_KEYS;
            let r = store.range(&all[n], b"", RangeOptions::default()).expect("range");
            assert_eq!(r.kvs.len(), 1);
            black_box(r)
        });
    });
    group.bench_function("prefix_100_of_10k", |b| {
        let groups = RANGE_KEYS / RANGE_GROUP;
        let ranges: Vec<(Vec<u8>, Vec<u8>)> = (0..groups)
            .map(|g| {
                let p = prefix(g).into_bytes();
                let e = prefix_end(&p);
                (p, e)
            })
            .collect();
        let mut n = 0usize;
        b.iter(|| {
            n = (n + 37) % groups;
            let (k, e) = &ranges[n];
            let r = store.range(k, e, RangeOptions::default()).expect("range");
            assert_eq!(r.kvs.len(), RANGE_GROUP);
            black_box(r)
        });
    });
    group.finish();
}

// ---------------------------------------------------------------------------
// Txns (issue #10: work a client can make the store do)

/// Keys of the txn benchmarks' spans.
const TXN_KEYS: usize = 10_000;
/// Most ops in one txn (etcd's default `max_txn_ops`), for refilling.
const TXN_OPS: usize = 128;

/// Puts `TXN_KEYS` keys under `/registry/txn/` with 128-put txns.
fn fill_txn_keys(store: &Store, value: &[u8]) {
    let keys: Vec<Vec<u8>> = (0..TXN_KEYS).map(|i| key("/registry/txn/", i)).collect();
    for chunk in keys.chunks(TXN_OPS) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|k| TxnOp::Put { key: k.clone(), value: value.to_vec(), prev_kv: false, lease: PutLease::None })
            .collect();
        store.txn(&[], &ops, &[]).expect("fill");
    }
}

/// - `txn/delete_once_10k`, `txn/delete_twice_10k`: a txn deleting a 10,000-key
///   span once, and twice (the second delete finds every key gone); refilling is
///   not timed. Their ratio is the cost of the second pass (it was quadratic);
/// - `txn/range_limit_10_of_10k` against `range/limit_10_of_10k`: a read-only txn
///   whose range returns 10 of 10,000 keys, against the plain range (the txn used
///   to read every value before applying the limit);
/// - `txn/read_only_during_rolls`: a read-only txn (a value compare and a 10-key
///   range) while a writer thread appends 64 KiB values to a store of 2 MiB
///   segments, so a segment rolls (with its fsync) every ~30 puts (read-only txns
///   used to read values under the log's writer mutex, held across a roll).
fn bench_txn(c: &mut Criterion) {
    let value = value();
    let fixture = Fixture::new("txn-", FsyncPolicy::Never);
    let store = &fixture.store;
    let start = b"/registry/txn/".to_vec();
    let end = prefix_end(&start);
    let del = TxnOp::DeleteRange { key: start.clone(), range_end: end.clone(), prev_kv: false };
    note("txn", json!({ "keys": TXN_KEYS, "key_bytes": KEY_LEN, "value_bytes": VALUE_LEN }));

    let mut group = c.benchmark_group("txn");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(1));
    for (id, ops) in [("delete_once_10k", vec![del.clone()]), ("delete_twice_10k", vec![del.clone(), del.clone()])] {
        group.bench_function(id, |b| {
            b.iter_batched(
                || fill_txn_keys(store, &value),
                |()| {
                    let r = store.txn(&[], &ops, &[]).expect("delete");
                    black_box(r)
                },
                criterion::BatchSize::PerIteration,
            );
        });
    }
    fill_txn_keys(store, &value);
    let limited = RangeOptions { limit: 10, ..Default::default() };
    let range = [TxnOp::Range { key: start.clone(), range_end: end.clone(), options: limited }];
    group.bench_function("range_limit_10_of_10k", |b| {
        b.iter(|| {
            let r = store.txn(&[], &range, &[]).expect("txn");
            assert!(matches!(&r.responses[0], TxnOpResult::Range(rr) if rr.kvs.len() == 10 && rr.count == TXN_KEYS));
            black_box(r)
        });
    });
    group.finish();
    let mut group = c.benchmark_group("range");
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(1));
    group.bench_function("limit_10_of_10k", |b| {
        b.iter(|| {
            let r = store.range(&start, &end, limited).expect("range");
            assert_eq!((r.kvs.len(), r.count), (10, TXN_KEYS));
            black_box(r)
        });
    });
    group.finish();

    // Read-only txns beside a writer that keeps rolling segments.
    let dir = temp_dir("txn-rolls-");
    let mut opts = store_options(FsyncPolicy::Never);
    opts.log.segment_size = 2 << 20;
    let rolls = Store::open(dir.path(), opts).expect("open the store");
    fill_txn_keys(&rolls, &value);
    let first = key("/registry/txn/", 0);
    let cmp = [Compare::new(first.clone(), CompareOp::Equal, CompareTarget::Value(value.clone()))];
    let range = [TxnOp::Range {
        key: first,
        range_end: end.clone(),
        options: RangeOptions { limit: 10, ..Default::default() },
    }];
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (rolls, stop) = (rolls.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let big = vec![b'w'; 64 << 10];
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                rolls.put(&key("/registry/writer/", n % 1000), &big).expect("put");
                n += 1;
            }
            n
        })
    };
    let mut group = c.benchmark_group("txn");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(1));
    group.bench_function("read_only_during_rolls", |b| {
        b.iter(|| {
            let r = rolls.txn(&cmp, &range, &[]).expect("txn");
            assert!(r.succeeded);
            black_box(r)
        });
    });
    group.finish();
    stop.store(true, Ordering::Relaxed);
    let puts = writer.join().expect("the writer");
    note("txn_rolls", json!({ "segment_bytes": 2 << 20, "writer_value_bytes": 64 << 10, "writer_puts": puts }));
}

// ---------------------------------------------------------------------------
// Recovery

/// Writes every dirty page of the data files and drops them from the page cache.
fn evict(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("list data directory") {
        let path = entry.expect("directory entry").path();
        let f = File::open(&path).expect("open data file");
        f.sync_all().expect("fsync data file");
        // SAFETY: a plain system call on a file descriptor we own.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "posix_fadvise(DONTNEED) of {}", path.display());
    }
}

fn dir_bytes(dir: &Path) -> (u64, usize) {
    let mut bytes = 0;
    let mut segments = 0;
    for entry in std::fs::read_dir(dir).expect("list data directory").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("seg-") {
            segments += 1;
            bytes += entry.metadata().map_or(0, |m| m.len());
        }
    }
    (bytes, segments)
}

fn build_recovery_dir() -> TempDir {
    let dir = temp_dir("recovery-");
    let keys: Vec<Vec<u8>> = (0..RECOVERY_KEYS).map(|i| key("/registry/recovery/", i)).collect();
    let value = value();
    let start = Instant::now();
    {
        let store = Store::open(dir.path(), store_options(FsyncPolicy::Never)).expect("open the store");
        for i in 0..RECOVERY_REVS as usize {
            store.put(&keys[i % RECOVERY_KEYS], &value).expect("put");
        }
        assert_eq!(store.current_revision(), RECOVERY_REVS + 1);
        store.flush().expect("flush");
    }
    let build = start.elapsed();
    let (bytes, segments) = dir_bytes(dir.path());
    let record = argus_engine::log::record::encoded_len(KEY_LEN, VALUE_LEN);
    note(
        "recovery",
        json!({
            "revisions": RECOVERY_REVS,
            "distinct_keys": RECOVERY_KEYS,
            "key_bytes": KEY_LEN,
            "value_bytes": VALUE_LEN,
            "record_bytes": record,
            "log_record_bytes": record as u64 * RECOVERY_REVS,
            "segment_files": segments,
            "segment_file_bytes": bytes,
            "build_seconds": build.as_secs_f64(),
            "build_puts_per_sec": RECOVERY_REVS as f64 / build.as_secs_f64(),
        }),
    );
    dir
}

/// Set (to `store:<dir>` or `log:<dir>`) in a child process of this benchmark:
/// the process opens that data directory once and reports the time instead of
/// benchmarking. Recovery is timed in a fresh process per open, as a restart
/// would run it: in a process that has already built and dropped one 1M-entry
/// index, the next build is slower (the heap it reuses is scattered).
const CHILD_ENV: &str = "ARGUS_BENCH_RECOVERY_CHILD";

/// The child's side: one open, then `<wall ns> <cpu ns> <context switches>` on
/// stdout, and exit without dropping the store.
fn recovery_child(spec: &str) -> ! {
    let (what, dir) = spec.split_once(':').expect("ARGUS_BENCH_RECOVERY_CHILD is what:dir");
    let opts = store_options(FsyncPolicy::Never);
    let (c0, s0) = cpu_usage();
    let start = Instant::now();
    let last_rev = match what {
        "store" => {
            let store = Store::open(dir, opts).expect("reopen the store");
            let rev = store.current_revision();
            std::mem::forget(store);
            rev
        }
        "log" => {
            let storage = Arc::new(FileStorage::open(dir).expect("lock the data directory"));
            let (log, rec) = RevisionLog::open(storage, opts.log).expect("reopen the log");
            std::mem::forget(log);
            rec.last_rev
        }
        other => panic!("unknown recovery child {other:?}"),
    };
    let wall = start.elapsed();
    let (c1, s1) = cpu_usage();
    assert_eq!(last_rev, RECOVERY_REVS + 1, "recovered the wrong revision");
    println!("{} {} {}", wall.as_nanos(), (c1 - c0).as_nanos(), s1 - s0);
    std::process::exit(0);
}

/// Opens `dir` in a fresh child process; returns the open's wall time, CPU time
/// and context switches as the child measured them (process start-up excluded).
fn open_in_child(what: &str, dir: &Path) -> (Duration, Duration, u64) {
    let exe = std::env::current_exe().expect("path of the benchmark binary");
    let out = std::process::Command::new(exe)
        .env(CHILD_ENV, format!("{what}:{}", dir.display()))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run the recovery child");
    assert!(out.status.success(), "recovery child failed: {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let nums: Vec<u128> = text.split_whitespace().map(|n| n.parse().expect("child output")).collect();
    assert_eq!(nums.len(), 3, "child output {text:?}");
    (Duration::from_nanos(nums[0] as u64), Duration::from_nanos(nums[1] as u64), nums[2] as u64)
}

/// One recovery benchmark: `iters` opens of `dir`, each in a fresh process
/// (`evict` first: from a cold page cache), metered into `meter`.
fn time_opens(what: &str, dir: &Path, cold: bool, iters: u64, meter: &mut CpuMeter) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        if cold {
            evict(dir);
        }
        let (wall, cpu, switches) = open_in_child(what, dir);
        total += wall;
        meter.wall += wall;
        meter.cpu += cpu;
        meter.switches += switches;
        meter.ops += 1;
    }
    total
}

fn bench_recovery(c: &mut Criterion) {
    let mut group = c.benchmark_group("recovery");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(10));
    group.sampling_mode(SamplingMode::Flat);
    let mut dir: Option<TempDir> = None;
    for (id, what, cold) in
        [("store_open_1m", "store", false), ("log_open_1m", "log", false), ("store_open_1m_cold", "store", true)]
    {
        let mut meter = CpuMeter::default();
        group.bench_function(id, |b| {
            let path = dir.get_or_insert_with(build_recovery_dir).path().to_path_buf();
            b.iter_custom(|iters| time_opens(what, &path, cold, iters, &mut meter));
        });
        meter.note(&format!("recovery/{id}"));
    }
    group.finish();
    note("loadavg_at_end", json!(loadavg()));
}

// ---------------------------------------------------------------------------
// Group commit, interleaved

/// Rounds of the interleaved group-commit measurement, and the length of each run.
const PAIR_ROUNDS: usize = 6;
const PAIR_RUN: Duration = Duration::from_millis(1500);

/// `writers` threads putting on `store` for `dur`; returns puts/s and the log's
/// group commit counters of the run.
fn run_writers(store: &Store, keys: &[Vec<u8>], value: &[u8], writers: usize, dur: Duration) -> (f64, CommitStats) {
    let before = store.log().commit_stats();
    let start = Instant::now();
    let deadline = start + dur;
    let total = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..writers {
            let (store, total) = (store.clone(), &total);
            s.spawn(move || {
                let mut i = t * (PUT_KEYS / WRITERS);
                let mut n = 0;
                while Instant::now() < deadline {
                    black_box(store.put(&keys[i % PUT_KEYS], value).expect("put"));
                    i += 1;
                    n += 1;
                }
                total.fetch_add(n, Ordering::Relaxed);
            });
        }
    });
    let rate = total.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    (rate, store.log().commit_stats().since(&before))
}

/// Not a criterion benchmark: the group-commit ratio measured with 1 and 16
/// writers alternating on one store under fsync=always (1, 16, 16, 1, 1, 16, ...),
/// so that the shared disk's drifting latency hits both sides of each pair alike.
/// Criterion measures `put/always/1` and `put/always/16` a minute apart; this is
/// the check that their ratio is not an artefact of when each ran.
fn group_commit_pairs(_: &mut Criterion) {
    let keys: Vec<Vec<u8>> = (0..PUT_KEYS).map(|i| key("/registry/bench/", i)).collect();
    let value = value();
    let fx = Fixture::new("pairs-", FsyncPolicy::Always);
    let _ = run_writers(&fx.store, &keys, &value, WRITERS, Duration::from_millis(300)); // warm-up
    let (mut one, mut many, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut groups_one, mut groups_many) = (Vec::new(), Vec::new());
    for round in 0..PAIR_ROUNDS {
        let ((a, ca), (b, cb)) = if round % 2 == 0 {
            let a = run_writers(&fx.store, &keys, &value, 1, PAIR_RUN);
            (a, run_writers(&fx.store, &keys, &value, WRITERS, PAIR_RUN))
        } else {
            let b = run_writers(&fx.store, &keys, &value, WRITERS, PAIR_RUN);
            (run_writers(&fx.store, &keys, &value, 1, PAIR_RUN), b)
        };
        one.push(a);
        many.push(b);
        ratios.push(b / a);
        groups_one.push(ca);
        groups_many.push(cb);
    }
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    let median = (sorted[(PAIR_ROUNDS - 1) / 2] + sorted[PAIR_ROUNDS / 2]) / 2.0;
    let medians = |cs: &[CommitStats]| cs.iter().map(|c| c.median_group_size()).collect::<Vec<_>>();
    let means = |cs: &[CommitStats]| cs.iter().map(|c| c.mean_group_size()).collect::<Vec<_>>();
    eprintln!(
        "group_commit_pairs: 16-writer / 1-writer puts/s per round {ratios:.2?}, median {median:.2}; \
         median group size of the 16-writer runs [{}]",
        medians(&groups_many)
            .iter()
            .map(|m| m.map_or("-".to_string(), |g| g.to_string()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    note(
        "group_commit_pairs",
        json!({
            "rounds": PAIR_ROUNDS,
            "run_seconds": PAIR_RUN.as_secs_f64(),
            "puts_per_sec_1_writer": one,
            "puts_per_sec_16_writers": many,
            "ratios": ratios,
            "median_ratio": median,
            "median_group_size_1_writer": medians(&groups_one),
            "median_group_size_16_writers": medians(&groups_many),
            "mean_group_size_16_writers": means(&groups_many),
            "commit_16_writers": groups_many.iter().map(commit_json).collect::<Vec<_>>(),
        }),
    );
}

// ---------------------------------------------------------------------------
// The file system's own fsync cost

fn bench_fs(c: &mut Criterion) {
    settle();
    let dir = temp_dir("fs-");
    let path = dir.path().join("file");
    let size: u64 = 64 << 20;
    let file = File::options().create(true).truncate(true).read(true).write(true).open(&path).expect("create");
    // Preallocated by ftruncate, as the log creates its segments.
    file.set_len(size).expect("ftruncate");
    file.sync_all().expect("fsync");
    let rec = vec![0x5au8; argus_engine::log::record::encoded_len(KEY_LEN, VALUE_LEN)];

    let mut group = c.benchmark_group("fs");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(1));
    group.bench_function("pwrite_376b_fdatasync", |b| {
        let mut off = 0u64;
        b.iter(|| {
            if off + rec.len() as u64 > size {
                off = 0;
            }
            file.write_all_at(&rec, off).expect("pwrite");
            file.sync_data().expect("fdatasync");
            off += rec.len() as u64;
        });
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .without_plots()
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_put, group_commit_pairs, bench_fs, bench_range, bench_txn, bench_recovery
}
// criterion_main!, with the recovery child's entry in front.
fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        recovery_child(&spec);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
