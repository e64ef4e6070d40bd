//! Crash tests through `MemStorage`, which keeps beside what was written what was
//! made durable: `crash(DropUnsynced)` loses every unsynced write, `crash(Torn)`
//! keeps a random prefix of them with the last one cut. Also corruption (bit flips
//! through `MemStorage::corrupt` and on real files), fsync and write failures
//! (poisoning), crashes in the middle of a compaction, and the directory LOCK.
//!
//! Randomized tests print their seed; `ARGUS_SEED=<seed>` replays them.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use argus_engine::log::record::{self, RecordKind, FILE_HEADER};
use argus_engine::log::{CrashMode, FsyncPolicy, MemStorage, OwnedRecord, Recovered, Storage};
use argus_engine::store::{
    prefix_end, Compare, CompareOp, CompareTarget, PutLease, RangeOptions, Store, StoreOptions, TxnOp,
};
use argus_engine::Error;
use common::{check_history, k, ErrKind, Limits, Model};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn opts(policy: FsyncPolicy, segment_size: u64) -> StoreOptions {
    let mut o = StoreOptions::default();
    o.log.fsync = policy;
    o.log.segment_size = segment_size;
    o.log.batch_delay = Duration::from_micros(200);
    o.max_txn_ops = 8;
    o.max_request_bytes = 2048;
    o
}

fn open(storage: &MemStorage, o: &StoreOptions) -> argus_engine::Result<(Store, Recovered)> {
    Store::open_with_report(Arc::new(storage.clone()), o.clone())
}

fn get(s: &Store, key: &[u8], rev: u64) -> Option<Vec<u8>> {
    let r = s.range(key, b"", RangeOptions { revision: rev, ..Default::default() }).unwrap();
    r.kvs.into_iter().next().map(|kv| kv.value)
}

fn names(storage: &MemStorage, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = storage.list().unwrap().into_iter().filter(|n| n.starts_with(prefix)).collect();
    v.sort();
    v
}

/// Offset, record and LAST flag of every valid record of a segment, in order.
fn records_of(bytes: &[u8]) -> Vec<(usize, OwnedRecord, bool)> {
    let mut out = Vec::new();
    let mut off = FILE_HEADER;
    while off < bytes.len() {
        match record::decode(&bytes[off..]) {
            Ok((r, n)) => {
                out.push((off, OwnedRecord::from(r), r.last));
                off += n;
            }
            Err(_) => break,
        }
    }
    out
}

/// A copy of `storage` as it is now (all of it durable after a clean shutdown).
fn copy(storage: &MemStorage) -> MemStorage {
    storage.crash(CrashMode::DropUnsynced)
}

fn expect_corrupt(r: argus_engine::Result<(Store, Recovered)>, file: &str, offset: u64, ctx: &str) {
    match r {
        Err(Error::Corrupt { file: f, offset: o, reason }) => {
            assert_eq!(f.to_string_lossy(), format!("mem:{file}"), "{ctx}: file ({reason})");
            assert_eq!(o, offset, "{ctx}: offset ({reason})");
        }
        Err(e) => panic!("{ctx}: expected Corrupt in {file} at {offset}, got {e}"),
        Ok((s, _)) => {
            panic!("{ctx}: expected Corrupt in {file} at {offset}, opened at revision {}", s.current_revision())
        }
    }
}

/// Writes `n` revisions to `s` and the model: puts, and every fourth a txn of three
/// puts (a revision of three records). Values are `vlen` bytes.
fn write_some(s: &Store, m: &mut Model, n: usize, vlen: usize) {
    for i in 0..n {
        let v = |j: usize| -> Vec<u8> { format!("{i}.{j}.").bytes().chain(std::iter::repeat_n(b'v', vlen)).collect() };
        if i % 4 == 3 {
            let ops: Vec<TxnOp> = (0..3)
                .map(|j| TxnOp::Put {
                    key: format!("m{j}").into_bytes(),
                    value: v(j),
                    prev_kv: false,
                    lease: PutLease::None,
                })
                .collect();
            let got = k(s.txn(&[], &ops, &[]));
            assert_eq!(got, m.txn(&[], &ops, &[]));
        } else {
            let key = format!("k{}", i % 5).into_bytes();
            assert_eq!(k(s.put(&key, &v(0))), m.put(&key, &v(0), false));
        }
    }
}

// ---------------------------------------------------------------------------
// Several writer threads, a crash at an arbitrary moment.

const THREADS: usize = 4;

/// The operation writer `t` performs as its `i`-th: deterministic in (seed, t, i),
/// every one writes at least one PUT whose value starts with `t<t>:<i>:`.
fn writer_op(seed: u64, t: usize, i: usize) -> (Vec<Compare>, Vec<TxnOp>, Vec<TxnOp>) {
    let mut rng = StdRng::seed_from_u64(seed ^ ((t as u64) << 48) ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let tag = format!("t{t}:{i}:");
    let mut val = |j: usize| -> Vec<u8> {
        let pad = rng.random_range(0..150);
        format!("{tag}{j}:").bytes().chain((0..pad).map(|p| b'a' + (p % 26) as u8)).collect()
    };
    let own = |j: usize| format!("t{t}/k{j}").into_bytes();
    let put = |key: Vec<u8>, value: Vec<u8>| TxnOp::Put { key, value, prev_kv: false, lease: PutLease::None };
    let choice = i % 10;
    match choice {
        0..6 => {
            let key = if choice == 0 { format!("shared/{}", i % 3).into_bytes() } else { own(i % 5) };
            (Vec::new(), vec![put(key, val(0))], Vec::new())
        }
        6..9 => {
            let c = vec![Compare::new(own(0), CompareOp::Greater, CompareTarget::Version(0))];
            let success =
                vec![put(own(1), val(0)), put(own(2), val(1)), put(format!("shared/{}", t % 3).into_bytes(), val(2))];
            let failure = vec![put(own(0), val(0)), put(own(3), val(1))];
            (c, success, failure)
        }
        _ => {
            let prefix = format!("t{t}/").into_bytes();
            let end = prefix_end(&prefix);
            let success = vec![
                TxnOp::DeleteRange { key: prefix, range_end: end, prev_kv: false },
                put(format!("t{t}m").into_bytes(), val(0)),
            ];
            (Vec::new(), success, Vec::new())
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Ack {
    t: usize,
    i: usize,
    rev: u64,
}

fn op_id(recs: &[OwnedRecord]) -> (usize, usize) {
    let put = recs.iter().find(|r| r.kind == RecordKind::Put).expect("every writer op puts");
    let s = String::from_utf8_lossy(&put.value);
    let mut parts = s.split(':');
    let t = parts.next().and_then(|p| p.strip_prefix('t')).and_then(|p| p.parse().ok());
    let i = parts.next().and_then(|p| p.parse().ok());
    (t.expect("thread in value"), i.expect("op index in value"))
}

/// Reopens a crash image and checks that it holds a prefix of what the writers
/// did: every revision up to the recovered one is exactly the events of one writer
/// op (all of them: a txn is all or nothing), each writer's ops in order and
/// without gaps, every op in `required` at its acknowledged revision, and every
/// other acknowledged op that falls in the prefix at its revision. Then checks
/// every revision's contents and that the store takes new writes.
fn verify_prefix(
    image: &MemStorage,
    o: &StoreOptions,
    seed: u64,
    required: &[Ack],
    all: &[Ack],
    compacted: u64,
    ctx: &str,
) -> Recovered {
    let (store, rec) = open(image, o).unwrap_or_else(|e| panic!("{ctx}: reopen after crash: {e}"));
    let r = store.current_revision();
    assert_eq!(rec.last_rev, r, "{ctx}");
    assert!(
        rec.compact_rev >= compacted,
        "{ctx}: compaction at {compacted} was acknowledged, recovered {}",
        rec.compact_rev
    );
    assert!(rec.compact_rev <= r, "{ctx}: compaction revision {} above the recovered {r}", rec.compact_rev);
    // Revisions below the log's first segment were compacted away: every one of them
    // was committed, so acknowledged, and the acknowledgement says which op it was.
    let acked: HashMap<u64, (usize, usize)> = all.iter().map(|a| (a.rev, (a.t, a.i))).collect();
    let first_logged = store.log().reader().first_rev();
    assert!(first_logged <= rec.compact_rev.max(2), "{ctx}: log starts at {first_logged}");
    let mut by_rev: BTreeMap<u64, Vec<OwnedRecord>> = BTreeMap::new();
    for item in store.log().reader().records(2, r) {
        let (_, rec) = item.unwrap_or_else(|e| panic!("{ctx}: reading the recovered log: {e}"));
        by_rev.entry(rec.main).or_default().push(OwnedRecord::from(rec));
    }
    let mut model = Model::new(Limits::of(o));
    let mut next_i = [0usize; THREADS];
    let mut op_at: HashMap<u64, (usize, usize)> = HashMap::new();
    for rev in 2..=r {
        let recs = by_rev.get(&rev);
        let (t, i) = match recs {
            Some(recs) => op_id(recs),
            None => {
                assert!(rev < first_logged, "{ctx}: revision {rev} of {r} has no records");
                *acked.get(&rev).unwrap_or_else(|| panic!("{ctx}: compacted revision {rev} was never acknowledged"))
            }
        };
        assert_eq!(i, next_i[t], "{ctx}: revision {rev} is op {i} of writer {t}, expected op {}", next_i[t]);
        next_i[t] += 1;
        let (c, s, f) = writer_op(seed, t, i);
        model.txn(&c, &s, &f).unwrap_or_else(|e| panic!("{ctx}: model rejects op {t}:{i}: {e:?}"));
        assert_eq!(model.current(), rev, "{ctx}: op {t}:{i} at revision {rev} writes nothing in the model");
        if let Some(recs) = recs {
            assert_eq!(&model.events[rev as usize], recs, "{ctx}: events of revision {rev} (op {t}:{i})");
        }
        op_at.insert(rev, (t, i));
    }
    model.compact_rev = rec.compact_rev;
    for a in required {
        assert!(a.rev <= r, "{ctx}: acknowledged revision {} (op {}:{}) lost; recovered up to {r}", a.rev, a.t, a.i);
    }
    for a in all.iter().filter(|a| a.rev <= r) {
        assert_eq!(op_at.get(&a.rev), Some(&(a.t, a.i)), "{ctx}: acknowledged revision {} holds another op", a.rev);
    }
    check_history(&model, &store, ctx);
    // The recovered store takes writes, and they survive a reopen.
    assert_eq!(k(store.put(b"after", b"crash")), model.put(b"after", b"crash", false), "{ctx}: write after recovery");
    drop(store);
    let (store, rec2) = open(image, o).unwrap_or_else(|e| panic!("{ctx}: second reopen: {e}"));
    assert_eq!(rec2.torn_bytes, 0, "{ctx}: the torn tail was zeroed by the first recovery");
    check_history(&model, &store, &format!("{ctx}, after a write and a reopen"));
    rec
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum CrashAt {
    /// `crash(DropUnsynced)` while the writers run.
    Live,
    /// Make fsyncs fail (under never: stop the writers), let every writer stop, then
    /// `crash(Torn)`: the unsynced tail is cut at a random point.
    QuiescedTorn,
    /// As `QuiescedTorn`, then `crash(Reordered)`: of the unsynced pages, a random
    /// set survives, later ones without earlier ones (an ordinary power cut under
    /// group commit, where several revisions are written before one fsync).
    QuiescedReordered,
}

fn concurrent_crash(policy: FsyncPolicy, at: CrashAt, seed: u64, rounds: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut torn_total = 0;
    for round in 0..rounds {
        let ctx = format!("{policy} {at:?} round {round} (seed {seed})");
        let storage = MemStorage::new();
        // Small segments: writers roll segments while others wait for an fsync.
        let o = opts(policy, 8192);
        let store = Store::open_storage(Arc::new(storage.clone()), o.clone()).unwrap();
        let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (store, acks, errors, stop) = (store.clone(), acks.clone(), errors.clone(), stop.clone());
                thread::spawn(move || {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) && i < 5000 {
                        let (c, s, f) = writer_op(seed, t, i);
                        match store.txn(&c, &s, &f) {
                            Ok(r) => acks.lock().unwrap().push(Ack { t, i, rev: r.revision }),
                            Err(e) => {
                                errors.lock().unwrap().push(format!("writer {t} op {i}: {e}"));
                                return;
                            }
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        // A compactor racing the writers (and the crash).
        let compactions: Arc<Mutex<Vec<u64>>> = Arc::default();
        let compactor = {
            let (store, compactions, stop) = (store.clone(), compactions.clone(), stop.clone());
            let mut rng = StdRng::seed_from_u64(rng.random());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    thread::sleep(Duration::from_micros(rng.random_range(500..3000)));
                    let cur = store.current_revision();
                    if cur < 20 {
                        continue;
                    }
                    if policy == FsyncPolicy::Never && store.flush().is_err() {
                        return;
                    }
                    // Works around `never_compaction_then_crash_then_writes_reopen`:
                    // compact only what the flush above made durable.
                    let c = cur - rng.random_range(0..10);
                    match store.compact(c) {
                        Ok(()) => compactions.lock().unwrap().push(c),
                        Err(Error::Compacted { .. }) => {}
                        Err(_) => return, // injected faults
                    }
                }
            })
        };
        let target = rng.random_range(20..200);
        let deadline = Instant::now() + Duration::from_secs(20);
        while acks.lock().unwrap().len() < target {
            assert!(Instant::now() < deadline, "{ctx}: writers too slow");
            thread::sleep(Duration::from_micros(200));
        }
        let (image, required, all, compacted) = match at {
            CrashAt::Live => {
                let before: Vec<Ack> = acks.lock().unwrap().clone();
                let compacted = compactions.lock().unwrap().iter().copied().max().unwrap_or(0);
                let image = storage.crash(CrashMode::DropUnsynced);
                // Let the writers go on a little past the crash, then stop them.
                let more = before.len() + 20;
                while acks.lock().unwrap().len() < more && Instant::now() < deadline {
                    thread::sleep(Duration::from_micros(200));
                }
                stop.store(true, Ordering::Relaxed);
                for h in handles {
                    h.join().unwrap();
                }
                compactor.join().unwrap();
                assert!(errors.lock().unwrap().is_empty(), "{ctx}: {:?}", errors.lock().unwrap());
                let all = acks.lock().unwrap().clone();
                let required = if policy == FsyncPolicy::Never { Vec::new() } else { before };
                (image, required, all, compacted)
            }
            CrashAt::QuiescedTorn | CrashAt::QuiescedReordered => {
                if policy == FsyncPolicy::Never {
                    stop.store(true, Ordering::Relaxed);
                } else {
                    storage.fail_syncs(true);
                }
                for h in handles {
                    h.join().unwrap();
                }
                stop.store(true, Ordering::Relaxed);
                compactor.join().unwrap();
                if policy != FsyncPolicy::Never {
                    let errors = errors.lock().unwrap();
                    assert_eq!(errors.len(), THREADS, "{ctx}: every writer stops on the failed fsync: {errors:?}");
                    assert!(store.log().is_poisoned(), "{ctx}");
                }
                let all = acks.lock().unwrap().clone();
                let compacted = compactions.lock().unwrap().iter().copied().max().unwrap_or(0);
                let image = if at == CrashAt::QuiescedTorn {
                    common::torn_crash(&storage, rng.random())
                } else {
                    storage.crash(CrashMode::Reordered { seed: rng.random() })
                };
                let required = if policy == FsyncPolicy::Never { Vec::new() } else { all.clone() };
                (image, required, all, compacted)
            }
        };
        drop(store);
        let rec = verify_prefix(&image, &o, seed, &required, &all, compacted, &ctx);
        torn_total += rec.torn_bytes;
        println!(
            "{ctx}: {} acks, {} compactions, recovered revision {} compacted at {}, torn bytes {}",
            all.len(),
            compactions.lock().unwrap().len(),
            rec.last_rev,
            rec.compact_rev,
            rec.torn_bytes
        );
    }
    println!("{policy} {at:?}: {torn_total} torn bytes in all rounds");
}

#[test]
fn concurrent_writers_always_crash_live() {
    concurrent_crash(FsyncPolicy::Always, CrashAt::Live, common::seed("concurrent_writers_always_crash_live"), 3);
}

#[test]
fn concurrent_writers_batch_crash_live() {
    concurrent_crash(FsyncPolicy::Batch, CrashAt::Live, common::seed("concurrent_writers_batch_crash_live"), 3);
}

#[test]
fn concurrent_writers_never_crash_live() {
    concurrent_crash(FsyncPolicy::Never, CrashAt::Live, common::seed("concurrent_writers_never_crash_live"), 3);
}

#[test]
fn concurrent_writers_always_torn() {
    concurrent_crash(FsyncPolicy::Always, CrashAt::QuiescedTorn, common::seed("concurrent_writers_always_torn"), 3);
}

#[test]
fn concurrent_writers_batch_torn() {
    concurrent_crash(FsyncPolicy::Batch, CrashAt::QuiescedTorn, common::seed("concurrent_writers_batch_torn"), 3);
}

#[test]
fn concurrent_writers_never_torn() {
    concurrent_crash(FsyncPolicy::Never, CrashAt::QuiescedTorn, common::seed("concurrent_writers_never_torn"), 3);
}

#[test]
fn concurrent_writers_always_reordered() {
    let seed = common::seed("concurrent_writers_always_reordered");
    concurrent_crash(FsyncPolicy::Always, CrashAt::QuiescedReordered, seed, 4);
}

#[test]
fn concurrent_writers_batch_reordered() {
    let seed = common::seed("concurrent_writers_batch_reordered");
    concurrent_crash(FsyncPolicy::Batch, CrashAt::QuiescedReordered, seed, 4);
}

#[test]
fn concurrent_writers_never_reordered() {
    let seed = common::seed("concurrent_writers_never_reordered");
    concurrent_crash(FsyncPolicy::Never, CrashAt::QuiescedReordered, seed, 4);
}

// ---------------------------------------------------------------------------
// Torn tails, deterministically: every cut of a revision that a crash interrupted.

struct TornSetup {
    /// Durable state: revisions 2..=5.
    base: MemStorage,
    model: Model,
    segment: String,
    /// The bytes of the interrupted revision 6 (three records) and where they go.
    torn: Vec<u8>,
    offset: usize,
    /// End of each record's key and value (before padding), relative to `offset`.
    data_ends: Vec<usize>,
}

impl TornSetup {
    /// A cut leaves the same bytes as a cut at its last nonzero byte.
    fn effective(&self, cut: usize) -> usize {
        self.torn[..cut].iter().rposition(|&b| b != 0).map_or(0, |p| p + 1)
    }

    /// Cuts that leave two or more whole records of the revision and nothing of the
    /// rest (the engine bug of `torn_revision_cut_at_a_record_boundary_recovers`).
    fn at_inner_boundary(&self, cut: usize) -> bool {
        let e = self.effective(cut);
        self.data_ends[1..self.data_ends.len() - 1].contains(&e)
    }
}

fn torn_setup() -> TornSetup {
    let storage = MemStorage::new();
    let o = opts(FsyncPolicy::Always, 64 << 10);
    let s = Store::open_storage(Arc::new(storage.clone()), o.clone()).unwrap();
    let mut model = Model::new(Limits::of(&o));
    write_some(&s, &mut model, 4, 10);
    storage.fail_syncs(true);
    let ops: Vec<TxnOp> = (0..3)
        .map(|j| TxnOp::Put {
            key: format!("torn{j}").into_bytes(),
            value: vec![b'x'; 20 + j * 8],
            prev_kv: false,
            lease: PutLease::None,
        })
        .collect();
    assert!(s.txn(&[], &ops, &[]).is_err(), "the txn's fsync fails");
    drop(s);
    storage.fail_syncs(false);
    let segment = names(&storage, "seg-").pop().unwrap();
    let live = storage.read_file(&segment).unwrap();
    let recs = records_of(&live);
    let torn_recs: Vec<_> = recs.iter().filter(|(_, r, _)| r.main == 6).collect();
    assert_eq!(torn_recs.len(), 3, "the failed txn's records are in the live file");
    let offset = torn_recs[0].0;
    let end = torn_recs[2].0 + record::encoded_len(torn_recs[2].1.key.len(), torn_recs[2].1.value.len());
    let data_ends = torn_recs.iter().map(|(o, r, _)| o - offset + 56 + r.key.len() + r.value.len()).collect();
    let base = storage.crash(CrashMode::DropUnsynced);
    assert!(records_of(&base.read_file(&segment).unwrap()).iter().all(|(_, r, _)| r.main < 6));
    TornSetup { base, model, segment, torn: live[offset..end].to_vec(), offset, data_ends }
}

/// Opens `base` with the first `cut` bytes of the torn revision written in place
/// (as a crash in the middle of its write leaves them), and checks the recovery.
fn check_cut(t: &TornSetup, cut: usize) -> Result<(), String> {
    let image = copy(&t.base);
    let file = image.open(&t.segment).unwrap();
    file.write_at(t.offset as u64, &t.torn[..cut]).unwrap();
    file.sync().unwrap();
    drop(file);
    let o = opts(FsyncPolicy::Always, 64 << 10);
    let (s, rec) = open(&image, &o).map_err(|e| format!("cut {cut}: open failed: {e}"))?;
    let mut model = t.model.clone();
    let e = t.effective(cut);
    if e >= *t.data_ends.last().unwrap() {
        // The whole revision reached the disk (at most zero padding is missing).
        let ops: Vec<TxnOp> = (0..3)
            .map(|j| TxnOp::Put {
                key: format!("torn{j}").into_bytes(),
                value: vec![b'x'; 20 + j * 8],
                prev_kv: false,
                lease: PutLease::None,
            })
            .collect();
        model.txn(&[], &ops, &[]).unwrap();
        if rec.torn_bytes != 0 {
            return Err(format!("cut {cut}: complete revision reported {} torn bytes", rec.torn_bytes));
        }
    } else {
        if rec.torn_bytes != e as u64 {
            return Err(format!("cut {cut}: torn_bytes {} (expected {e})", rec.torn_bytes));
        }
        let after = image.read_file(&t.segment).unwrap();
        if after[t.offset..].iter().any(|&b| b != 0) {
            return Err(format!("cut {cut}: the torn tail was not zeroed"));
        }
    }
    check_history(&model, &s, &format!("cut {cut}"));
    assert_eq!(k(s.put(b"new", b"write")), model.put(b"new", b"write", false), "cut {cut}: write after recovery");
    drop(s);
    let (s, rec) = open(&image, &o).map_err(|e| format!("cut {cut}: second open failed: {e}"))?;
    if rec.torn_bytes != 0 {
        return Err(format!("cut {cut}: second open found {} torn bytes", rec.torn_bytes));
    }
    check_history(&model, &s, &format!("cut {cut}, reopened"));
    Ok(())
}

#[test]
fn torn_revision_cut_inside_a_record_recovers() {
    let t = torn_setup();
    let mut failures = Vec::new();
    let mut tested = 0;
    for cut in 0..=t.torn.len() {
        if t.at_inner_boundary(cut) {
            continue; // the ignored test below
        }
        tested += 1;
        if let Err(e) = check_cut(&t, cut) {
            failures.push(e);
        }
    }
    assert!(tested > 100);
    assert!(failures.is_empty(), "{} of {tested} cuts fail: {failures:#?}", failures.len());
}

#[test]
fn torn_revision_cut_at_a_record_boundary_recovers() {
    let t = torn_setup();
    let cuts: Vec<usize> = (0..=t.torn.len()).filter(|&c| t.at_inner_boundary(c)).collect();
    assert!(!cuts.is_empty());
    let failures: Vec<String> = cuts.iter().filter_map(|&cut| check_cut(&t, cut).err()).collect();
    assert!(failures.is_empty(), "{} of {} cuts fail: {failures:#?}", failures.len(), cuts.len());
}

/// Random crash images under fsync=never (torn and reordered) recover a prefix.
#[test]
fn never_policy_torn_crashes_recover_a_prefix() {
    let seed = common::seed("never_policy_torn_crashes_recover_a_prefix");
    let mut rng = StdRng::seed_from_u64(seed);
    let o = opts(FsyncPolicy::Never, 4096);
    let storage = MemStorage::new();
    let s = Store::open_storage(Arc::new(storage.clone()), o.clone()).unwrap();
    let mut model = Model::new(Limits::of(&o));
    write_some(&s, &mut model, 60, 40);
    assert!(names(&storage, "seg-").len() > 1, "the writes roll segments");
    let mut torn_images = 0;
    for round in 0..16 {
        let mode = match round {
            0 => CrashMode::DropUnsynced,
            r if r % 2 == 1 => CrashMode::Torn { seed: rng.random() },
            _ => CrashMode::Reordered { seed: rng.random() },
        };
        let image = storage.crash(mode);
        let (r, rec) = {
            let (s2, rec) = open(&image, &o).unwrap_or_else(|e| panic!("round {round} ({mode:?}): {e}"));
            (s2.current_revision(), rec)
        };
        torn_images += usize::from(rec.torn_bytes > 0);
        let mut m = model.clone();
        m.truncate(r);
        let (s2, _) = open(&image, &o).unwrap();
        check_history(&m, &s2, &format!("round {round} ({mode:?}), recovered up to {r}"));
        assert_eq!(k(s2.put(b"x", b"y")), m.put(b"x", b"y", false));
        s2.flush().unwrap();
        drop(s2);
        let (s2, _) = open(&image, &o).unwrap();
        check_history(&m, &s2, &format!("round {round} ({mode:?}), after a write"));
    }
    println!("{torn_images} of 15 torn or reordered images had a torn tail");
}

/// A bit flip in the last record, with nothing valid after it, is a torn tail: the
/// revision is dropped and the store opens (FORMAT.md, Recovery).
#[test]
fn flipped_bit_in_the_last_revision_is_a_torn_tail() {
    let storage = MemStorage::new();
    let o = opts(FsyncPolicy::Always, 64 << 10);
    let s = Store::open_storage(Arc::new(storage.clone()), o.clone()).unwrap();
    let mut model = Model::new(Limits::of(&o));
    write_some(&s, &mut model, 7, 10);
    drop(s);
    let seg = names(&storage, "seg-").pop().unwrap();
    let recs = records_of(&storage.read_file(&seg).unwrap());
    let (off, last, _) = recs.last().unwrap().clone();
    assert_eq!(last.main, 8);
    let image = copy(&storage);
    image.corrupt(&seg, off + 60, 3);
    let (s, rec) = open(&image, &o).unwrap();
    assert!(rec.torn_bytes > 0);
    // Revision 8 was a three-record txn: all of it goes.
    model.truncate(7);
    check_history(&model, &s, "after dropping the corrupt last revision");
}

// ---------------------------------------------------------------------------
// Corruption in the middle of the log, in sealed segments and in snapshots.

#[test]
fn mid_file_corruption_is_reported_with_file_and_offset() {
    let storage = MemStorage::new();
    let o = opts(FsyncPolicy::Always, 64 << 10);
    let s = Store::open_storage(Arc::new(storage.clone()), o.clone()).unwrap();
    let mut model = Model::new(Limits::of(&o));
    write_some(&s, &mut model, 12, 10);
    drop(s);
    let seg = names(&storage, "seg-").pop().unwrap();
    let original = storage.read_file(&seg).unwrap();
    let recs = records_of(&original);
    let last_rev = recs.last().unwrap().1.main;
    let mut checked = 0;
    for (off, r, _) in &recs {
        if r.main == last_rev {
            continue; // nothing valid follows: a torn tail, tested above
        }
        let kv_end = 56 + r.key.len() + r.value.len();
        // Length, crc, revision, sub, kind, flags, key and value bytes.
        for pos in [0usize, 4, 8, 16, 20, 21, 24, 32, 40, 48, 56, kv_end - 1] {
            for bit in [0u8, 5] {
                let image = copy(&storage);
                image.corrupt(&seg, off + pos, bit);
                let before = image.read_file(&seg).unwrap();
                let ctx = format!("bit {bit} of byte {pos} of record {}.{} at {off}", r.main, r.sub);
                expect_corrupt(open(&image, &o), &seg, *off as u64, &ctx);
                assert_eq!(image.read_file(&seg).unwrap(), before, "{ctx}: a failed open changes nothing");
                checked += 1;
            }
        }
    }
    assert!(checked > 300, "{checked}");
    // The untouched log still opens.
    let (s, _) = open(&storage, &o).unwrap();
    check_history(&model, &s, "uncorrupted");
}

#[test]
fn corrupt_sealed_segment_is_reported() {
    let storage = MemStorage::new();
    let o = opts(FsyncPolicy::Never, 4096);
    let s = Store::open_storage(Arc::new(storage.clone()), o.clone()).unwrap();
    let mut model = Model::new(Limits::of(&o));
    write_some(&s, &mut model, 60, 60);
    s.flush().unwrap();
    drop(s);
    let segs = names(&storage, "seg-");
    assert!(segs.len() >= 3, "{segs:?}");
    for seg in &segs[..segs.len() - 1] {
        let bytes = storage.read_file(seg).unwrap();
        let recs = records_of(&bytes);
        // Its last record (a torn tail, were the segment the last one).
        let (off, r, last) = recs.last().unwrap().clone();
        assert!(last);
        let image = copy(&storage);
        image.corrupt(seg, off + 56 + r.key.len(), 1);
        expect_corrupt(open(&image, &o), seg, off as u64, &format!("last record of sealed {seg}"));
        // A nonzero byte in the unused space after its last record.
        let end = off + record::encoded_len(r.key.len(), r.value.len());
        if end + 100 < bytes.len() {
            let image = copy(&storage);
            image.corrupt(seg, end + 100, 0);
            expect_corrupt(open(&image, &o), seg, end as u64, &format!("garbage after the records of sealed {seg}"));
        }
        // Its header.
        let image = copy(&storage);
        image.corrupt(seg, 3, 2);
        expect_corrupt(open(&image, &o), seg, 0, &format!("header of {seg}"));
    }
    let (s, _) = open(&storage, &o).unwrap();
    check_history(&model, &s, "uncorrupted");
}

#[test]
fn corrupt_snapshot_is_reported() {
    let storage = MemStorage::new();
    let o = opts(FsyncPolicy::Always, 64 << 10);
    let s = Store::open_storage(Arc::new(storage.clone()), o.clone()).unwrap();
    let mut model = Model::new(Limits::of(&o));
    write_some(&s, &mut model, 12, 10);
    s.compact(10).unwrap();
    model.compact(10).unwrap();
    drop(s);
    let snap = names(&storage, "snap-").pop().unwrap();
    assert_eq!(snap, format!("snap-{:020}.snap", 10));
    let bytes = storage.read_file(&snap).unwrap();
    let mut off = FILE_HEADER;
    let mut recs = Vec::new();
    while let Ok((r, n)) = record::decode(&bytes[off..]) {
        recs.push((off, r.kind, r.key.len() + r.value.len()));
        off += n;
        if r.kind == RecordKind::End {
            break;
        }
    }
    assert_eq!(recs.last().unwrap().1, RecordKind::End);
    assert_eq!(recs.len(), 9, "8 live keys and END");
    for (off, kind, kv) in &recs {
        for pos in [4usize, 8, 40, 56 + kv.saturating_sub(1)] {
            let image = copy(&storage);
            image.corrupt(&snap, off + pos, 6);
            expect_corrupt(open(&image, &o), &snap, *off as u64, &format!("{kind:?} record at {off}, byte {pos}"));
        }
    }
    let image = copy(&storage);
    image.corrupt(&snap, 17, 0); // the revision in the header
    expect_corrupt(open(&image, &o), &snap, 0, "snapshot header");
    let (s, _) = open(&storage, &o).unwrap();
    check_history(&model, &s, "uncorrupted");
}

#[test]
fn corruption_on_real_files_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(FsyncPolicy::Always, 64 << 10);
    let s = Store::open(dir.path(), o.clone()).unwrap();
    for i in 0..5 {
        s.put(format!("k{i}").as_bytes(), b"value").unwrap();
    }
    drop(s);
    let seg = dir.path().join(format!("seg-{:020}.log", 2));
    let mut bytes = std::fs::read(&seg).unwrap();
    let recs = records_of(&bytes);
    let off = recs[1].0;
    bytes[off + 57] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();
    match Store::open(dir.path(), o) {
        Err(Error::Corrupt { file, offset, .. }) => {
            assert_eq!(file, seg);
            assert_eq!(offset, off as u64);
        }
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("expected Corrupt, opened"),
    }
}

// ---------------------------------------------------------------------------
// Failed fsyncs and writes poison the log.

#[derive(Clone, Copy, Debug)]
enum Fault {
    Sync,
    Write,
}

fn set_fault(storage: &MemStorage, f: Fault, on: bool) {
    match f {
        Fault::Sync => storage.fail_syncs(on),
        Fault::Write => storage.fail_writes(on),
    }
}

fn poisoning(fault: Fault, policy: FsyncPolicy) {
    let ctx = format!("{fault:?} failure under {policy}");
    let storage = MemStorage::new();
    let o = opts(policy, 64 << 10);
    let s = Store::open_storage(Arc::new(storage.clone()), o.clone()).unwrap();
    let mut model = Model::new(Limits::of(&o));
    write_some(&s, &mut model, 6, 10);
    s.flush().unwrap(); // under never, so that the crash image below holds them
    let committed = s.current_revision();
    set_fault(&storage, fault, true);
    let r = s.put(b"k0", b"lost");
    assert!(r.is_err(), "{ctx}: the put fails: {r:?}");
    assert!(s.log().is_poisoned(), "{ctx}");
    set_fault(&storage, fault, false);
    assert_eq!(k(s.put(b"k1", b"later")), Err(ErrKind::Poisoned), "{ctx}: later puts fail");
    assert_eq!(k(s.delete_range(b"k", &prefix_end(b"k"), false)), Err(ErrKind::Poisoned), "{ctx}: later deletes fail");
    let ops = [TxnOp::Put { key: b"z".to_vec(), value: b"1".to_vec(), prev_kv: false, lease: PutLease::None }];
    assert_eq!(k(s.txn(&[], &ops, &[]).map(|_| ())), Err(ErrKind::Poisoned), "{ctx}: later txns fail");
    // Reads work and show only committed data.
    assert_eq!(s.current_revision(), committed, "{ctx}");
    check_history(&model, &s, &ctx);
    drop(s);
    // After a crash, the store reopens at the committed state and takes writes.
    let image = storage.crash(CrashMode::DropUnsynced);
    let (s, _) = open(&image, &o).unwrap();
    check_history(&model, &s, &format!("{ctx}, reopened"));
    assert_eq!(k(s.put(b"k0", b"again")), model.put(b"k0", b"again", false));
    check_history(&model, &s, &format!("{ctx}, written after reopening"));
}

#[test]
fn failed_fsync_poisons_always() {
    poisoning(Fault::Sync, FsyncPolicy::Always);
}

#[test]
fn failed_fsync_poisons_batch() {
    poisoning(Fault::Sync, FsyncPolicy::Batch);
}

#[test]
fn failed_write_poisons_always() {
    poisoning(Fault::Write, FsyncPolicy::Always);
}

#[test]
fn failed_write_poisons_never() {
    poisoning(Fault::Write, FsyncPolicy::Never);
}

/// A segment seal (fsync, whatever the policy) that fails poisons the log too.
#[test]
fn failed_fsync_when_sealing_a_segment_poisons_never() {
    let storage = MemStorage::new();
    let o = opts(FsyncPolicy::Never, 4096);
    let s = Store::open_storage(Arc::new(storage.clone()), o.clone()).unwrap();
    let mut model = Model::new(Limits::of(&o));
    write_some(&s, &mut model, 8, 200);
    assert_eq!(names(&storage, "seg-").len(), 1);
    storage.fail_syncs(true);
    let mut rolled = false;
    for i in 0..40 {
        match k(s.put(b"fill", &[b'f'; 300])) {
            Ok(p) => {
                assert_eq!(Ok(p), model.put(b"fill", &[b'f'; 300], false), "fill {i}");
            }
            Err(e) => {
                assert_eq!(e, ErrKind::Poisoned, "fill {i}");
                rolled = true;
                break;
            }
        }
    }
    assert!(rolled, "the segment filled up");
    storage.fail_syncs(false);
    assert_eq!(k(s.put(b"a", b"b")), Err(ErrKind::Poisoned));
    check_history(&model, &s, "poisoned at a seal");
    // Under never nothing unsynced was acknowledged as durable; reopening the
    // un-crashed storage keeps every acknowledged write.
    drop(s);
    let (s, _) = open(&storage, &o).unwrap();
    check_history(&model, &s, "reopened");
    assert_eq!(k(s.put(b"a", b"b")), model.put(b"a", b"b", false));
}

#[test]
fn read_only_txn_after_failed_fsync_sees_only_committed_data() {
    let storage = MemStorage::new();
    let o = opts(FsyncPolicy::Always, 64 << 10);
    let s = Store::open_storage(Arc::new(storage.clone()), o).unwrap();
    assert_eq!(s.put(b"a", b"committed").unwrap().revision, 2);
    storage.fail_syncs(true);
    assert!(s.put(b"a", b"failed").is_err());
    assert_eq!(s.current_revision(), 2);
    assert_eq!(get(&s, b"a", 0).unwrap(), b"committed", "a plain range shows committed data");
    let read = [TxnOp::Range { key: b"a".to_vec(), range_end: Vec::new(), options: RangeOptions::default() }];
    let r = s.txn(&[], &read, &[]).unwrap();
    let argus_engine::store::TxnOpResult::Range(rr) = &r.responses[0] else { panic!("{r:?}") };
    assert_eq!(
        (rr.kvs[0].value.as_slice(), rr.kvs[0].mod_revision, r.revision),
        (&b"committed"[..], 2, 2),
        "a read-only txn shows the failed write"
    );
    let c = Compare::new(b"a".to_vec(), CompareOp::Equal, CompareTarget::Value(b"failed".to_vec()));
    assert!(!s.txn(&[c], &[], &[]).unwrap().succeeded, "a compare sees the failed write");
}

#[test]
fn failed_compaction_changes_nothing() {
    let storage = MemStorage::new();
    let o = opts(FsyncPolicy::Always, 64 << 10);
    let s = Store::open_storage(Arc::new(storage.clone()), o.clone()).unwrap();
    let mut model = Model::new(Limits::of(&o));
    write_some(&s, &mut model, 8, 10);
    storage.fail_syncs(true);
    assert_eq!(k(s.compact(6)), Err(ErrKind::Io));
    storage.fail_syncs(false);
    assert_eq!(s.compact_revision(), 0, "the failed compaction left the compaction revision");
    check_history(&model, &s, "after a failed compaction");
    s.compact(6).expect("retrying the compaction");
    model.compact(6).unwrap();
    check_history(&model, &s, "after retrying");
}

// ---------------------------------------------------------------------------
// A crash in the middle of a compaction.

/// A store with several segments (4 KiB), its model, and revisions 2..=41.
fn multi_segment_store(policy: FsyncPolicy) -> (MemStorage, Store, Model, StoreOptions) {
    let storage = MemStorage::new();
    let o = opts(policy, 4096);
    let s = Store::open_storage(Arc::new(storage.clone()), o.clone()).unwrap();
    let mut model = Model::new(Limits::of(&o));
    write_some(&s, &mut model, 40, 150);
    assert!(names(&storage, "seg-").len() >= 4);
    (storage, s, model, o)
}

fn seg_first(name: &str) -> u64 {
    name.strip_prefix("seg-").unwrap().strip_suffix(".log").unwrap().parse().unwrap()
}

/// Segments of `names` (sorted) wholly below `rev`.
fn wholly_below(names: &[String], rev: u64) -> Vec<String> {
    names.windows(2).filter(|w| seg_first(&w[1]) - 1 < rev).map(|w| w[0].clone()).collect()
}

/// Copies file `name` of `from` into `to`, durably.
fn put_file(to: &MemStorage, name: &str, bytes: &[u8]) {
    let f = to.create(name, bytes.len() as u64).unwrap();
    f.write_at(0, bytes).unwrap();
    f.sync().unwrap();
    to.sync_dir().unwrap();
}

#[test]
fn crash_after_compaction_keeps_it() {
    for (i, mode) in [CrashMode::DropUnsynced, CrashMode::Torn { seed: 7 }].into_iter().enumerate() {
        let (storage, s, mut model, o) = multi_segment_store(FsyncPolicy::Always);
        let segs = names(&storage, "seg-");
        let c = 25;
        s.compact(c).unwrap();
        model.compact(c).unwrap();
        let doomed = wholly_below(&segs, c);
        assert!(!doomed.is_empty());
        for d in &doomed {
            assert!(storage.read_file(d).is_none(), "{d} removed by the compaction");
        }
        let image = storage.crash(mode);
        drop(s);
        let (s, rec) = open(&image, &o).unwrap();
        assert_eq!((rec.compact_rev, rec.torn_bytes), (c, 0), "{i}");
        check_history(&model, &s, &format!("{mode:?} after compaction"));
        assert_eq!(k(s.put(b"k1", b"new")), model.put(b"k1", b"new", false));
        check_history(&model, &s, "written after");
    }
}

#[test]
fn crash_between_snapshot_and_segment_removal() {
    let (storage, s, mut model, o) = multi_segment_store(FsyncPolicy::Always);
    let before = copy(&storage);
    let segs = names(&storage, "seg-");
    let c = 30;
    s.compact(c).unwrap();
    model.compact(c).unwrap();
    let snap = format!("snap-{c:020}.snap");
    // The snapshot is durable, the segments below it not yet removed.
    put_file(&before, &snap, &storage.read_file(&snap).unwrap());
    drop(s);
    let doomed = wholly_below(&segs, c);
    assert!(doomed.len() >= 2, "{doomed:?}");
    let (s, rec) = open(&before, &o).unwrap();
    assert_eq!(rec.compact_rev, c);
    let mut removed = rec.removed_files.clone();
    removed.sort();
    assert_eq!(removed, doomed, "leftover segments are deleted");
    for d in &doomed {
        assert!(before.read_file(d).is_none());
    }
    check_history(&model, &s, "snapshot written, segments left");
    assert_eq!(k(s.put(b"k2", b"new")), model.put(b"k2", b"new", false));
    drop(s);
    let (s, _) = open(&before, &o).unwrap();
    check_history(&model, &s, "reopened");
}

#[test]
fn crash_before_snapshot_rename() {
    let (storage, s, model, o) = multi_segment_store(FsyncPolicy::Always);
    let before = copy(&storage);
    s.compact(30).unwrap();
    let snap = storage.read_file(&format!("snap-{:020}.snap", 30)).unwrap();
    drop(s);
    for (i, len) in [0, snap.len() / 2, snap.len()].into_iter().enumerate() {
        let image = copy(&before);
        let tmp = format!("snap-{:020}.tmp", 30);
        put_file(&image, &tmp, &snap[..len]);
        let (s, rec) = open(&image, &o).unwrap();
        assert_eq!(rec.compact_rev, 0, "{i}: the compaction never happened");
        assert!(rec.removed_files.contains(&tmp), "{i}: {:?}", rec.removed_files);
        assert!(image.read_file(&tmp).is_none());
        check_history(&model, &s, &format!("{i}: temporary snapshot of {len} bytes"));
    }
}

#[test]
fn crash_after_a_second_snapshot_before_the_old_one_is_removed() {
    let (storage, s, mut model, o) = multi_segment_store(FsyncPolicy::Always);
    s.compact(15).unwrap();
    model.compact(15).unwrap();
    let image = copy(&storage);
    s.compact(33).unwrap();
    model.compact(33).unwrap();
    let new = format!("snap-{:020}.snap", 33);
    put_file(&image, &new, &storage.read_file(&new).unwrap());
    drop(s);
    let (s, rec) = open(&image, &o).unwrap();
    assert_eq!(rec.compact_rev, 33);
    assert!(rec.removed_files.contains(&format!("snap-{:020}.snap", 15)), "{:?}", rec.removed_files);
    assert_eq!(names(&image, "snap-"), vec![new]);
    check_history(&model, &s, "two snapshots");
}

#[test]
fn never_compaction_then_crash_then_writes_reopen() {
    let storage = MemStorage::new();
    let o = opts(FsyncPolicy::Never, 64 << 10);
    let s = Store::open_storage(Arc::new(storage.clone()), o.clone()).unwrap();
    let mut model = Model::new(Limits::of(&o));
    write_some(&s, &mut model, 6, 10); // revisions 2..=7, none synced
    s.compact(7).unwrap();
    model.compact(7).unwrap();
    let image = storage.crash(CrashMode::DropUnsynced);
    drop(s);
    let (s, rec) = open(&image, &o).unwrap();
    assert_eq!((rec.compact_rev, rec.last_rev), (7, 7));
    // The state at the compaction revision is there (from the snapshot).
    let all = s.range(common::ALL.0, common::ALL.1, RangeOptions::default()).unwrap();
    assert_eq!(Ok(all), model.range(common::ALL.0, common::ALL.1, RangeOptions::default()));
    for i in 0..3 {
        assert_eq!(k(s.put(b"k9", format!("{i}").as_bytes())), model.put(b"k9", format!("{i}").as_bytes(), false));
    }
    s.flush().unwrap();
    drop(s);
    let (s, _) = open(&image, &o).unwrap_or_else(|e| panic!("reopen after acknowledged, flushed writes: {e}"));
    // Everything, including the log's events from the compaction revision on.
    check_history(&model, &s, "second reopen");
}

// ---------------------------------------------------------------------------
// The directory LOCK.

#[test]
fn second_open_of_a_directory_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(FsyncPolicy::Always, 64 << 10);
    let s = Store::open(dir.path(), o.clone()).unwrap();
    s.put(b"a", b"1").unwrap();
    match Store::open(dir.path(), o.clone()) {
        Err(Error::Locked(p)) => assert_eq!(p, dir.path()),
        Err(e) => panic!("expected Locked, got {e}"),
        Ok(_) => panic!("a second open of a directory in use succeeded"),
    }
    // The first store is unaffected.
    assert_eq!(s.put(b"a", b"2").unwrap().revision, 3);
    drop(s);
    let s = Store::open(dir.path(), o).unwrap();
    assert_eq!(get(&s, b"a", 0).unwrap(), b"2");
    assert_eq!(get(&s, b"a", 2).unwrap(), b"1");
}

// ---------------------------------------------------------------------------
// Other recovery edges of FORMAT.md.

/// A last segment whose header never reached the disk (all zeros) is deleted.
#[test]
fn zero_header_last_segment_is_removed() {
    let (storage, s, mut model, o) = multi_segment_store(FsyncPolicy::Always);
    let image = copy(&storage);
    drop(s);
    let empty = format!("seg-{:020}.log", model.current() + 1);
    put_file(&image, &empty, &vec![0u8; 4096]);
    let (s, rec) = open(&image, &o).unwrap();
    assert_eq!(rec.removed_files, vec![empty.clone()]);
    assert!(image.read_file(&empty).is_none());
    check_history(&model, &s, "zero-header segment removed");
    for i in 0..30 {
        let v = vec![b'z'; 200 + i];
        assert_eq!(k(s.put(b"k0", &v)), model.put(b"k0", &v, false));
    }
    drop(s);
    let (s, _) = open(&image, &o).unwrap();
    check_history(&model, &s, "written and reopened");
}

/// A segment missing from the middle of the log, or from its start, is corruption,
/// not a shorter history.
#[test]
fn missing_segment_is_reported() {
    let (storage, s, _model, o) = multi_segment_store(FsyncPolicy::Always);
    drop(s);
    let segs = names(&storage, "seg-");
    assert!(segs.len() >= 3);
    for gone in [1, 0] {
        let image = copy(&storage);
        image.remove(&segs[gone]).unwrap();
        image.sync_dir().unwrap();
        expect_corrupt(open(&image, &o), &segs[gone + 1], 0, &format!("without {}", segs[gone]));
    }
}

/// Options that do not fit the segment size are refused.
#[test]
fn segment_smaller_than_a_request_is_refused() {
    let mut o = opts(FsyncPolicy::Always, 4096);
    o.max_request_bytes = 4096;
    assert!(matches!(open(&MemStorage::new(), &o), Err(Error::InvalidOptions(_))));
    let o = opts(FsyncPolicy::Always, 2048);
    assert!(matches!(open(&MemStorage::new(), &o), Err(Error::InvalidOptions(_))));
}

// ---------------------------------------------------------------------------
// A revision larger than an empty active segment: the roll must not reuse the
// active segment's name (it did: the new file truncated the mapped one, the file
// set listed one file twice, and a compaction unlinked it behind both entries,
// losing every write acknowledged after it).

fn large_options() -> StoreOptions {
    let mut large = opts(FsyncPolicy::Always, 64 << 10);
    large.max_request_bytes = 16 << 10;
    large.max_txn_ops = 128;
    large
}

/// With `s` just opened on an empty active segment of 4 KiB: writes a revision
/// larger than that segment (`first`), a few puts, compacts, a few more puts, and
/// checks the history now, in `crash_image()` if given, and after reopening.
fn large_first_revision(
    ctx: &str,
    s: Store,
    model: &mut Model,
    first: &dyn Fn(&Store, &mut Model),
    reopen: &dyn Fn() -> Store,
    crash_image: &dyn Fn() -> Option<Store>,
) {
    first(&s, model);
    for i in 0..5 {
        let key = format!("k{i}").into_bytes();
        assert_eq!(k(s.put(&key, b"after")), model.put(&key, b"after", false), "{ctx}");
    }
    let c = s.current_revision();
    assert_eq!(k(s.compact(c)), model.compact(c), "{ctx}");
    for i in 0..5 {
        let key = format!("k{i}").into_bytes();
        assert_eq!(k(s.put(&key, b"after compaction")), model.put(&key, b"after compaction", false), "{ctx}");
    }
    check_history(model, &s, &format!("{ctx}: before reopening"));
    if let Some(image) = crash_image() {
        check_history(model, &image, &format!("{ctx}: crash image"));
    }
    drop(s);
    let s = reopen();
    check_history(model, &s, &format!("{ctx}: reopened"));
    assert_eq!(k(s.put(b"next", b"1")), model.put(b"next", b"1", false), "{ctx}: no revision handed out twice");
    check_history(model, &s, &format!("{ctx}: written after reopening"));
}

/// A put of 6,000 bytes.
fn big_put(s: &Store, m: &mut Model) {
    let big = vec![b'b'; 6000];
    assert_eq!(k(s.put(b"big", &big)), m.put(b"big", &big, false), "big put");
}

/// One txn of 40 puts of 100 bytes (about 6.5 KiB of records).
fn big_txn(s: &Store, m: &mut Model) {
    let ops: Vec<TxnOp> = (0..40)
        .map(|i| TxnOp::Put {
            key: format!("t{i:02}").into_bytes(),
            value: vec![b't'; 100],
            prev_kv: false,
            lease: PutLease::None,
        })
        .collect();
    assert_eq!(k(s.txn(&[], &ops, &[])), m.txn(&[], &ops, &[]), "big txn");
}

#[test]
fn a_revision_larger_than_an_empty_active_segment_loses_nothing_files() {
    for (what, first) in [("put", &big_put as &dyn Fn(&Store, &mut Model)), ("txn", &big_txn)] {
        let dir = tempfile::tempdir().unwrap();
        // A fresh store with 4 KiB segments: its only segment is empty.
        drop(Store::open(dir.path(), opts(FsyncPolicy::Always, 4096)).unwrap());
        let s = Store::open(dir.path(), large_options()).unwrap();
        let mut model = Model::new(Limits::of(&large_options()));
        let reopen = || Store::open(dir.path(), large_options()).unwrap();
        large_first_revision(&format!("files, {what} first"), s, &mut model, first, &reopen, &|| None);
    }
}

#[test]
fn a_revision_larger_than_an_empty_active_segment_loses_nothing_mem() {
    for (what, first) in [("put", &big_put as &dyn Fn(&Store, &mut Model)), ("txn", &big_txn)] {
        let storage = MemStorage::new();
        drop(open(&storage, &opts(FsyncPolicy::Always, 4096)).unwrap());
        let s = open(&storage, &large_options()).unwrap().0;
        let mut model = Model::new(Limits::of(&large_options()));
        let reopen = || open(&storage, &large_options()).unwrap().0;
        let crash = || Some(open(&storage.crash(CrashMode::DropUnsynced), &large_options()).unwrap().0);
        large_first_revision(&format!("mem, {what} first"), s, &mut model, first, &reopen, &crash);
    }
}

/// The DeleteRange case: under `never`, a crash loses the first revision written
/// to a new segment, which recovery then finds empty; the first revision after
/// opening deletes every key, more bytes than that segment holds.
#[test]
fn a_large_delete_range_first_after_a_crash_loses_nothing() {
    let storage = MemStorage::new();
    let small = opts(FsyncPolicy::Never, 4096);
    let mut model = Model::new(Limits::of(&large_options()));
    let s = open(&storage, &small).unwrap().0;
    let segments = names(&storage, "seg-").len();
    let mut i = 0;
    // Puts until the second roll to a new segment; the crash then loses that put.
    let image = loop {
        // Long keys: the DeleteRange's records outgrow a 4 KiB segment.
        let key = format!("d{i:03}{}", "-".repeat(60)).into_bytes();
        let before = model.clone();
        assert_eq!(k(s.put(&key, b"0123456789")), model.put(&key, b"0123456789", false));
        i += 1;
        if names(&storage, "seg-").len() > segments + 1 {
            model = before; // the roll synced every earlier put
            break storage.crash(CrashMode::DropUnsynced);
        }
        if i % 10 == 0 {
            s.flush().unwrap(); // the earlier puts survive the crash
        }
    };
    drop(s);
    let (s, rec) = open(&image, &large_options()).unwrap();
    assert!(rec.last_rev == model.current(), "recovered {rec:?}, model at {}", model.current());
    let delete = |s: &Store, m: &mut Model| {
        let end = prefix_end(b"d");
        assert_eq!(k(s.delete_range(b"d", &end, true)), m.delete_range(b"d", &end, true), "delete range");
    };
    let reopen = || open(&image, &large_options()).unwrap().0;
    let crash = || Some(open(&image.crash(CrashMode::DropUnsynced), &large_options()).unwrap().0);
    large_first_revision("mem, large DeleteRange first", s, &mut model, &delete, &reopen, &crash);
}

/// Several revisions written before one fsync (fsync=never here; group commit does
/// the same with its groups), then a power cut that persists a random set of their
/// pages: later pages may survive while earlier ones are lost. None of those
/// revisions was acknowledged as durable, so the store opens at the last revision
/// before the first unwritten page and reports the revisions it dropped.
#[test]
fn reordered_pages_after_a_power_cut_recover_a_prefix() {
    let seed = common::seed("reordered_pages_after_a_power_cut_recover_a_prefix");
    let mut rng = StdRng::seed_from_u64(seed);
    let o = opts(FsyncPolicy::Never, 64 << 10);
    let mut gaps_with_later_records = 0;
    for round in 0..24 {
        let storage = MemStorage::new();
        let s = Store::open_storage(Arc::new(storage.clone()), o.clone()).unwrap();
        let mut model = Model::new(Limits::of(&o));
        write_some(&s, &mut model, 4, 10);
        s.flush().unwrap();
        let durable = s.current_revision();
        // About 40 KiB in ten pages, none of it synced.
        write_some(&s, &mut model, 36, 1000);
        let last = s.current_revision();
        drop(s);
        let image = storage.crash(CrashMode::Reordered { seed: rng.random() });
        let ctx = format!("round {round}");
        let (s2, rec) = open(&image, &o).unwrap_or_else(|e| panic!("{ctx}: a power cut must not stop the store: {e}"));
        let r = s2.current_revision();
        assert!(r >= durable, "{ctx}: recovered {r}, but {durable} was durable");
        let mut m = model.clone();
        m.truncate(r);
        check_history(&m, &s2, &format!("{ctx}: recovered up to {r}"));
        match &rec.dropped {
            Some(d) => {
                assert_eq!(*d.revisions.start(), r + 1, "{ctx}: {d:?}");
                assert!(*d.revisions.end() <= last, "{ctx}: {d:?}");
                gaps_with_later_records += usize::from(*d.revisions.end() > r + 1);
            }
            // Nothing of the later revisions reached the disk (or all did).
            None => assert_eq!(rec.torn_bytes, 0, "{ctx}: bytes zeroed without a report"),
        }
        drop(s2);
        let (s3, rec3) = open(&image, &o).unwrap();
        assert_eq!(rec3.dropped, None, "{ctx}: the first recovery truncated the tail");
        check_history(&m, &s3, &format!("{ctx}: reopened"));
    }
    assert!(gaps_with_later_records > 0, "no round lost a page before a surviving one (seed {seed})");
    println!("{gaps_with_later_records} of 24 rounds dropped revisions that followed an unwritten page");
}

// ---------------------------------------------------------------------------
// A full disk refuses writes cleanly (nothing written, the log not poisoned),
// reads go on, and writes resume once space is freed, without a restart.

#[test]
fn a_full_disk_refuses_writes_and_they_resume_when_space_returns() {
    let storage = MemStorage::new();
    let o = opts(FsyncPolicy::Always, 8192);
    let s = Store::open_storage(Arc::new(storage.clone()), o.clone()).unwrap();
    let mut model = Model::new(Limits::of(&o));
    write_some(&s, &mut model, 10, 100);
    // No room for another segment.
    let used: u64 = names(&storage, "seg-").iter().map(|n| storage.read_file(n).unwrap().len() as u64).sum();
    storage.set_capacity(Some(used));
    let mut refused = 0;
    for i in 0..200 {
        let key = format!("k{}", i % 5).into_bytes();
        let v = vec![b'f'; 300];
        match k(s.put(&key, &v)) {
            Ok(r) => assert_eq!(Ok(r), model.put(&key, &v, false), "put {i}"),
            Err(ErrKind::NoSpace) => refused += 1,
            Err(e) => panic!("put {i}: expected success or NoSpace, got {e:?}"),
        }
    }
    assert!(refused > 0, "the active segment filled up");
    assert!(!s.log().is_poisoned(), "a full disk does not poison the log");
    // Compaction needs a snapshot file: refused too, and it changes nothing.
    let c = s.current_revision() - 1;
    assert_eq!(k(s.compact(c)), Err(ErrKind::NoSpace));
    assert_eq!(s.compact_revision(), 0);
    assert!(names(&storage, "snap-").is_empty(), "no half snapshot left: {:?}", names(&storage, "snap-"));
    check_history(&model, &s, "reads while the disk is full");
    // Space returns: writes and compactions resume, no restart.
    storage.set_capacity(None);
    write_some(&s, &mut model, 20, 300);
    let c = s.current_revision() - 3;
    assert_eq!(k(s.compact(c)), model.compact(c));
    check_history(&model, &s, "after space returned");
    let image = storage.crash(CrashMode::DropUnsynced);
    let (s2, _) = open(&image, &o).unwrap();
    check_history(&model, &s2, "crash image after space returned");
    drop(s2);
    drop(s);
    let (s, _) = open(&storage, &o).unwrap();
    check_history(&model, &s, "reopened");
}

/// The roll that replaces an empty active segment with a larger one, on a full
/// disk: refused, the empty segment stays, and the write succeeds later.
#[test]
fn a_full_disk_keeps_an_empty_active_segment_it_cannot_grow() {
    let storage = MemStorage::new();
    drop(open(&storage, &opts(FsyncPolicy::Always, 4096)).unwrap());
    let (s, _) = open(&storage, &large_options()).unwrap();
    let mut model = Model::new(Limits::of(&large_options()));
    storage.set_capacity(Some(8192));
    let big = vec![b'b'; 6000];
    assert_eq!(k(s.put(b"big", &big)), Err(ErrKind::NoSpace));
    assert_eq!(names(&storage, "seg-"), vec![format!("seg-{:020}.log", 2)], "no temporary file left");
    assert_eq!(k(s.put(b"small", b"1")), model.put(b"small", b"1", false), "a write that fits still succeeds");
    storage.set_capacity(None);
    big_put(&s, &mut model);
    check_history(&model, &s, "after space returned");
    drop(s);
    let (s, _) = open(&storage, &large_options()).unwrap();
    check_history(&model, &s, "reopened");
}
