//! Unit tests of the store's etcd semantics; randomized model and crash tests live
//! in `engine/tests/`.

use super::*;
use crate::log::{FsyncPolicy, MemStorage};

fn mem_store() -> (Store, MemStorage) {
    let storage = MemStorage::new();
    let mut opts = StoreOptions::default();
    opts.log.fsync = FsyncPolicy::Always;
    (Store::open_storage(Arc::new(storage.clone()), opts).unwrap(), storage)
}

fn get(s: &Store, k: &[u8], rev: u64) -> Option<KeyValue> {
    s.range(k, b"", RangeOptions { revision: rev, ..Default::default() }).unwrap().kvs.pop()
}

#[test]
fn revisions_versions_and_generations_follow_etcd() {
    let (s, _) = mem_store();
    assert_eq!(s.current_revision(), 1);
    assert_eq!(s.put(b"a", b"1").unwrap().revision, 2);
    assert_eq!(s.put(b"a", b"2").unwrap().revision, 3);
    let kv = get(&s, b"a", 0).unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    let d = s.delete_range(b"a", b"", true).unwrap();
    assert_eq!((d.revision, d.deleted), (4, 1));
    assert_eq!(d.prev_kvs[0].value, b"2");
    assert!(get(&s, b"a", 0).is_none());
    assert_eq!(s.delete_range(b"a", b"", false).unwrap().deleted, 0);
    assert_eq!(s.current_revision(), 4, "deleting nothing makes no revision");
    s.put(b"a", b"3").unwrap();
    let kv = get(&s, b"a", 0).unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
    assert_eq!(get(&s, b"a", 3).unwrap().value, b"2");
    assert!(get(&s, b"a", 4).is_none());
}

#[test]
fn ranges_prefixes_limits_and_errors() {
    let (s, _) = mem_store();
    for k in ["/a", "/a/1", "/a/2", "/b", "/c"] {
        s.put(k.as_bytes(), b"v").unwrap();
    }
    let r = s.range(b"/a", &prefix_end(b"/a"), RangeOptions::default()).unwrap();
    assert_eq!(
        r.kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(),
        vec![b"/a".to_vec(), b"/a/1".to_vec(), b"/a/2".to_vec()]
    );
    let r = s.range(b"/a/", b"\0", RangeOptions { limit: 2, ..Default::default() }).unwrap();
    assert_eq!((r.kvs.len(), r.count, r.more), (2, 4, true));
    let r = s.range(b"/", b"\0", RangeOptions { count_only: true, ..Default::default() }).unwrap();
    assert_eq!((r.kvs.len(), r.count, r.more), (0, 5, false));
    let r = s.range(b"/a", b"/b", RangeOptions { keys_only: true, ..Default::default() }).unwrap();
    assert!(r.kvs.iter().all(|kv| kv.value.is_empty()) && r.kvs.len() == 3);
    assert!(matches!(s.range(b"/b", b"/a", RangeOptions::default()), Err(Error::InvalidRange)));
    assert!(matches!(s.range(b"", b"", RangeOptions::default()), Err(Error::EmptyKey)));
    assert!(matches!(
        s.range(b"/a", b"", RangeOptions { revision: 99, ..Default::default() }),
        Err(Error::FutureRevision { requested: 99, current: 6 })
    ));
    assert_eq!(prefix_end(b"a\xff"), b"b");
    assert_eq!(prefix_end(b"\xff\xff"), b"\0");
}

#[test]
fn limits_reject_without_writing() {
    let storage = MemStorage::new();
    let mut opts = StoreOptions::default();
    opts.max_key_bytes = 8;
    opts.max_value_bytes = 16;
    opts.max_request_bytes = 20;
    let s = Store::open_storage(Arc::new(storage), opts).unwrap();
    assert!(matches!(s.put(b"", b"v"), Err(Error::EmptyKey)));
    assert!(matches!(s.put(b"123456789", b"v"), Err(Error::KeyTooLarge { len: 9, max: 8 })));
    assert!(matches!(s.put(b"k", &[0; 17]), Err(Error::ValueTooLarge { len: 17, max: 16 })));
    assert!(matches!(s.put(b"1234567", &[0; 16]), Err(Error::RequestTooLarge { size: 23, max: 20 })));
    assert_eq!(s.current_revision(), 1, "nothing was written");
}

#[test]
fn txn_compares_branches_and_sees_own_writes() {
    let (s, _) = mem_store();
    s.put(b"k", b"1").unwrap();
    let cmp = [Compare::new(b"k".to_vec(), CompareOp::Equal, CompareTarget::Value(b"1".to_vec()))];
    let ops = [
        TxnOp::Put { key: b"k".to_vec(), value: b"2".to_vec(), prev_kv: true, lease: PutLease::None },
        TxnOp::Put { key: b"j".to_vec(), value: b"x".to_vec(), prev_kv: false, lease: PutLease::None },
        TxnOp::Range { key: b"a".to_vec(), range_end: b"z".to_vec(), options: RangeOptions::default() },
    ];
    let r = s.txn(&cmp, &ops, &[]).unwrap();
    assert!(r.succeeded);
    assert_eq!(r.revision, 3);
    let TxnOpResult::Range(rr) = &r.responses[2] else { panic!("range answer expected") };
    assert_eq!(
        rr.kvs.iter().map(|kv| (kv.key.clone(), kv.value.clone())).collect::<Vec<_>>(),
        vec![(b"j".to_vec(), b"x".to_vec()), (b"k".to_vec(), b"2".to_vec())]
    );
    let TxnOpResult::Put(p) = &r.responses[0] else { panic!("put answer expected") };
    assert_eq!(p.prev_kv.as_ref().unwrap().value, b"1");
    // Both events carry revision 3; the failure branch of a false compare runs.
    let r = s
        .txn(&cmp, &ops, &[TxnOp::Range { key: b"k".to_vec(), range_end: vec![], options: RangeOptions::default() }])
        .unwrap();
    assert!(!r.succeeded);
    assert_eq!(r.revision, 3, "a read-only branch makes no revision");
    let missing = [Compare::new(b"nope".to_vec(), CompareOp::Equal, CompareTarget::Version(0))];
    assert!(s.txn(&missing, &[], &[]).unwrap().succeeded);
    let dup = [
        TxnOp::Put { key: b"k".to_vec(), value: b"2".to_vec(), prev_kv: false, lease: PutLease::None },
        TxnOp::DeleteRange { key: b"a".to_vec(), range_end: b"z".to_vec(), prev_kv: false },
    ];
    assert!(matches!(s.txn(&[], &dup, &[]), Err(Error::DuplicateKey)));
}

#[test]
fn compaction_survives_reopen_and_rejects_old_reads() {
    let storage = MemStorage::new();
    let mut opts = StoreOptions::default();
    opts.log.segment_size = 64 * 1024;
    opts.max_request_bytes = 8 * 1024;
    opts.max_value_bytes = 8 * 1024;
    let s = Store::open_storage(Arc::new(storage.clone()), opts.clone()).unwrap();
    for i in 0..400u32 {
        s.put(format!("k{}", i % 20).as_bytes(), &vec![i as u8; 500]).unwrap();
    }
    s.delete_range(b"k1", b"", false).unwrap();
    let segs_before = storage.list().unwrap().iter().filter(|n| n.ends_with(".log")).count();
    assert!(segs_before > 2);
    let cur = s.current_revision();
    let at = cur - 5;
    let want = s.range(b"k", b"\0", RangeOptions { revision: at, ..Default::default() }).unwrap().kvs;
    let want_now = s.range(b"k", b"\0", RangeOptions::default()).unwrap().kvs;
    s.compact(at).unwrap();
    assert!(matches!(
        s.range(b"k0", b"", RangeOptions { revision: at - 1, ..Default::default() }),
        Err(Error::Compacted { .. })
    ));
    assert!(matches!(s.compact(at), Err(Error::Compacted { .. })));
    assert_eq!(s.range(b"k", b"\0", RangeOptions { revision: at, ..Default::default() }).unwrap().kvs, want);
    let segs_after = storage.list().unwrap().iter().filter(|n| n.ends_with(".log")).count();
    assert!(segs_after < segs_before, "{segs_after} segments left of {segs_before}");
    drop(s);
    let s = Store::open_storage(Arc::new(storage.clone()), opts).unwrap();
    assert_eq!(s.compact_revision(), at);
    assert_eq!(s.current_revision(), cur);
    assert_eq!(s.range(b"k", b"\0", RangeOptions { revision: at, ..Default::default() }).unwrap().kvs, want);
    assert_eq!(s.range(b"k", b"\0", RangeOptions::default()).unwrap().kvs, want_now);
    s.put(b"k0", b"after").unwrap();
    assert_eq!(get(&s, b"k0", 0).unwrap().value, b"after");
}

/// A store of `n` keys `k00000…` with 100-byte values, written in txns of 100 puts.
fn store_with_keys(n: usize) -> Store {
    let (s, _) = mem_store();
    let mut ops = Vec::new();
    for i in 0..n {
        ops.push(TxnOp::Put {
            key: format!("k{i:05}").into_bytes(),
            value: vec![b'v'; 100],
            prev_kv: false,
            lease: PutLease::None,
        });
        if ops.len() == 100 || i + 1 == n {
            s.txn(&[], &ops, &[]).unwrap();
            ops.clear();
        }
    }
    s
}

#[test]
fn second_delete_range_over_the_same_span_is_not_quadratic() {
    const N: u64 = 2000;
    let s = store_with_keys(N as usize);
    let del = TxnOp::DeleteRange { key: b"k".to_vec(), range_end: b"l".to_vec(), prev_kv: false };
    let range = TxnOp::Range { key: b"k".to_vec(), range_end: b"l".to_vec(), options: RangeOptions::default() };
    let put = TxnOp::Put { key: b"z".to_vec(), value: b"1".to_vec(), prev_kv: false, lease: PutLease::None };
    work::take(work::Counter::OverlayVisits);
    let r = s.txn(&[], &[del.clone(), del, range, put], &[]).unwrap();
    let visits = work::take(work::Counter::OverlayVisits);
    let [TxnOpResult::DeleteRange(d1), TxnOpResult::DeleteRange(d2), TxnOpResult::Range(rr), _] = &r.responses[..]
    else {
        panic!("two deletes, a range and a put: {:?}", r.responses)
    };
    assert_eq!((d1.deleted, d2.deleted), (N, 0), "the second delete finds the keys gone");
    assert_eq!((rr.count, rr.kvs.len()), (0, 0), "the range sees the deletes");
    assert_eq!(s.range(b"k", b"l", RangeOptions::default()).unwrap().count, 0);
    assert_eq!(s.index_entries() as u64, 2 * N + 1, "one put and one delete per key, and z");
    // Each key of the second delete and of the range is looked up once in the
    // overlay (a lookup counts one visit, a range walk one per entry it yields):
    // linear in N, where scanning the overlay per key is N * N / 2.
    assert!(visits <= 4 * N, "{visits} overlay visits for {N} keys");
}

#[test]
fn txn_range_with_limit_reads_only_the_values_it_returns() {
    const N: usize = 1000;
    let s = store_with_keys(N);
    let limited = |options| TxnOp::Range { key: b"k".to_vec(), range_end: b"l".to_vec(), options };
    let put = TxnOp::Put { key: b"k00001x".to_vec(), value: b"new".to_vec(), prev_kv: false, lease: PutLease::None };
    s.put(b"k00001x", b"new").unwrap();
    let cases = [
        (RangeOptions { limit: 10, ..Default::default() }, 10, 10),
        (RangeOptions { keys_only: true, ..Default::default() }, N + 1, 0),
        (RangeOptions { count_only: true, ..Default::default() }, 0, 0),
    ];
    for (options, kvs, reads) in cases {
        // Read-only, and after a write of the same txn (which the range must see).
        for ops in [vec![limited(options)], vec![put.clone(), limited(options)]] {
            let writes = ops.len() > 1;
            work::take(work::Counter::ValueReads);
            let r = s.txn(&[], &ops, &[]).unwrap();
            let n = work::take(work::Counter::ValueReads);
            let TxnOpResult::Range(rr) = r.responses.last().unwrap() else { panic!("range answer expected") };
            assert_eq!(rr.kvs.len(), kvs, "{options:?} writes={writes}");
            assert_eq!(rr.count, N + 1, "{options:?} writes={writes}");
            assert_eq!(rr.more, options.limit != 0, "{options:?}");
            // Values read: at most those returned (the put's value comes from the txn).
            assert!(n <= reads as u64, "{options:?} writes={writes}: {n} values read for {} returned", rr.kvs.len());
            if options.limit != 0 {
                let keys: Vec<_> = rr.kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()).collect();
                assert_eq!(keys[..3], ["k00000", "k00001", "k00001x"], "the txn's own put is merged in order");
                assert_eq!(rr.kvs[2].value, b"new");
                assert_eq!(rr.kvs[3].value, vec![b'v'; 100]);
            }
            if options.keys_only {
                assert!(rr.kvs.iter().all(|kv| kv.value.is_empty()));
            }
        }
    }
}

/// Storage whose next file sync, once armed, blocks until released: a segment roll
/// (which fsyncs the sealed segment under the log's writer mutex) then stays in
/// progress for as long as a test needs.
#[derive(Debug)]
struct GatedStorage {
    mem: MemStorage,
    gate: Arc<Gate>,
}

#[derive(Debug, Default)]
struct Gate {
    armed: std::sync::atomic::AtomicBool,
    /// Told when a sync is held.
    entered: std::sync::Mutex<Option<std::sync::mpsc::Sender<()>>>,
    /// The held sync waits for a message (or a hang-up) here.
    release: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

struct GatedFile {
    file: Arc<dyn crate::log::StorageFile>,
    gate: Arc<Gate>,
}

impl crate::log::StorageFile for GatedFile {
    fn len(&self) -> u64 {
        self.file.len()
    }
    fn write_at(&self, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_at(offset, bytes)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.file.read_at(offset, buf)
    }
    fn sync(&self) -> std::io::Result<()> {
        if self.gate.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            let entered = self.gate.entered.lock().unwrap().take().expect("armed once");
            let release = self.gate.release.lock().unwrap().take().expect("armed once");
            entered.send(()).unwrap();
            let _ = release.recv();
        }
        self.file.sync()
    }
    fn map(&self) -> std::io::Result<crate::log::storage::Mapping> {
        self.file.map()
    }
}

impl Storage for GatedStorage {
    fn list(&self) -> std::io::Result<Vec<String>> {
        self.mem.list()
    }
    fn create(&self, name: &str, len: u64) -> std::io::Result<Arc<dyn crate::log::StorageFile>> {
        Ok(Arc::new(GatedFile { file: self.mem.create(name, len)?, gate: Arc::clone(&self.gate) }))
    }
    fn open(&self, name: &str) -> std::io::Result<Arc<dyn crate::log::StorageFile>> {
        Ok(Arc::new(GatedFile { file: self.mem.open(name)?, gate: Arc::clone(&self.gate) }))
    }
    fn remove(&self, name: &str) -> std::io::Result<()> {
        self.mem.remove(name)
    }
    fn rename(&self, from: &str, to: &str) -> std::io::Result<()> {
        self.mem.rename(from, to)
    }
    fn sync_dir(&self) -> std::io::Result<()> {
        self.mem.sync_dir()
    }
    fn path(&self, name: &str) -> std::path::PathBuf {
        self.mem.path(name)
    }
}

#[test]
fn read_only_txn_does_not_wait_for_a_segment_roll() {
    let gate = Arc::new(Gate::default());
    let storage = GatedStorage { mem: MemStorage::new(), gate: Arc::clone(&gate) };
    let mut opts = StoreOptions::default();
    opts.log.fsync = FsyncPolicy::Never; // the roll's fsync is the only one
    opts.log.segment_size = 16 * 1024;
    opts.max_request_bytes = 4096;
    opts.max_txn_ops = 8;
    let s = Store::open_storage(Arc::new(storage), opts).unwrap();
    s.put(b"a", b"1").unwrap();
    s.put(b"b", b"2").unwrap();
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    *gate.entered.lock().unwrap() = Some(entered_tx);
    *gate.release.lock().unwrap() = Some(release_rx);
    gate.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    // A writer fills the segment until a put rolls it and blocks in the roll's fsync.
    let writer = {
        let (s, gate) = (s.clone(), Arc::clone(&gate));
        std::thread::spawn(move || {
            let mut i = 0;
            while gate.armed.load(std::sync::atomic::Ordering::SeqCst) {
                assert!(i < 100, "no segment roll after 100 KB");
                s.put(format!("w{i}").as_bytes(), &[b'x'; 1000]).unwrap();
                i += 1;
            }
        })
    };
    entered.recv_timeout(std::time::Duration::from_secs(60)).expect("the writer reaches the roll's fsync");
    // The roll is in progress, holding the log's writer mutex. A read-only txn with
    // a value compare and a range must still be served.
    let (done_tx, done) = std::sync::mpsc::channel();
    let reader = {
        let s = s.clone();
        std::thread::spawn(move || {
            let cmp = [Compare::new(b"a".to_vec(), CompareOp::Equal, CompareTarget::Value(b"1".to_vec()))];
            let range = TxnOp::Range { key: b"a".to_vec(), range_end: b"c".to_vec(), options: RangeOptions::default() };
            done_tx.send(s.txn(&cmp, &[range], &[])).unwrap();
        })
    };
    // Passing does not depend on timing: the answer comes while the roll is held.
    // Only a failing run waits out the minute, then lets the roll go so it can end.
    let got = done.recv_timeout(std::time::Duration::from_secs(60));
    drop(release);
    reader.join().unwrap();
    let r = match got {
        Ok(r) => r.unwrap(),
        Err(_) => panic!("a read-only txn waited for a segment roll (the log's writer mutex)"),
    };
    assert!(r.succeeded);
    let TxnOpResult::Range(rr) = &r.responses[0] else { panic!("range answer expected") };
    assert_eq!(rr.kvs.iter().map(|kv| kv.value.clone()).collect::<Vec<_>>(), vec![b"1".to_vec(), b"2".to_vec()]);
    writer.join().unwrap();
}

/// etcd answers a range or delete inside a txn whose `range_end` is at or before
/// its key with nothing (as a plain Range does), not with the single key and not
/// with an error.
#[test]
fn txn_ranges_and_deletes_with_an_end_before_the_key_select_nothing() {
    let (s, _) = mem_store();
    s.put(b"b", b"1").unwrap();
    s.put(b"c", b"2").unwrap();
    let rev = s.current_revision();
    for end in [&b"a"[..], b"b"] {
        let ops = [
            TxnOp::Range { key: b"b".to_vec(), range_end: end.to_vec(), options: RangeOptions::default() },
            TxnOp::DeleteRange { key: b"b".to_vec(), range_end: end.to_vec(), prev_kv: true },
        ];
        let r = s.txn(&[], &ops, &[]).unwrap();
        match &r.responses[0] {
            TxnOpResult::Range(rr) => assert_eq!((rr.count, rr.kvs.len()), (0, 0), "range [b, {end:?})"),
            other => panic!("{other:?}"),
        }
        match &r.responses[1] {
            TxnOpResult::DeleteRange(d) => assert_eq!((d.deleted, d.prev_kvs.len()), (0, 0), "delete [b, {end:?})"),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.revision, rev, "nothing written, no new revision");
    }
    assert_eq!(get(&s, b"b", 0).unwrap().value, b"1");
}

fn put_op(k: &str, v: &str) -> TxnOp {
    TxnOp::Put { key: k.into(), value: v.into(), prev_kv: false, lease: PutLease::None }
}

fn range_op(k: &str) -> TxnOp {
    TxnOp::Range { key: k.into(), range_end: Vec::new(), options: RangeOptions::default() }
}

fn version_is(k: &str, v: u64) -> Compare {
    Compare::new(k, CompareOp::Equal, CompareTarget::Version(v))
}

/// The records the log holds for revision `rev`: (kind, key, create, version).
fn records(s: &Store, rev: u64) -> Vec<(RecordKind, String, u64, u64)> {
    s.log()
        .reader()
        .records(rev, rev)
        .map(|r| {
            let (_, r) = r.unwrap();
            (r.kind, String::from_utf8_lossy(r.key).into_owned(), r.create_revision, r.version)
        })
        .collect()
}

/// As etcd 3.4 (checked side by side in `server/tests/conformance/differences.rs`):
/// every compare, nested ones included, sees the state before the txn; every op,
/// nested ones included, sees the writes of the ops before it; the whole txn is one
/// revision; a range's answer carries the revision before the txn until some op has
/// written.
#[test]
fn nested_txn_compares_see_the_state_before_the_txn_and_ops_see_earlier_writes() {
    let (s, _) = mem_store();
    s.put(b"a", b"1").unwrap(); // 2
    let inner = |v| TxnOp::Txn {
        compares: vec![version_is("a", v)],
        success: vec![range_op("a"), put_op("in", "success")],
        failure: vec![range_op("a"), put_op("in", "failure")],
    };
    let outer =
        [range_op("a"), put_op("a", "2"), inner(1), TxnOp::Txn { compares: vec![], success: vec![], failure: vec![] }];
    let r = s.txn(&[], &outer, &[]).unwrap();
    assert!(r.succeeded);
    assert_eq!(r.revision, 3);
    let [TxnOpResult::Range(before), TxnOpResult::Put(p), TxnOpResult::Txn(t), TxnOpResult::Txn(empty)] =
        &r.responses[..]
    else {
        panic!("{r:?}")
    };
    assert_eq!((before.revision, before.kvs[0].version), (2, 1), "before any write: the old revision");
    assert_eq!(p.revision, 3);
    // version(a) = 1 held before the txn (the outer put made it 2): success.
    assert!(t.succeeded, "{t:?}");
    assert_eq!(t.revision, 3);
    let [TxnOpResult::Range(seen), TxnOpResult::Put(_)] = &t.responses[..] else { panic!("{t:?}") };
    assert_eq!((seen.revision, seen.kvs[0].value.as_slice(), seen.kvs[0].version), (3, &b"2"[..], 2));
    assert!(empty.succeeded && empty.responses.is_empty());
    assert_eq!(get(&s, b"in", 0).unwrap().value, b"success");
    assert_eq!(records(&s, 3), [(RecordKind::Put, "a".into(), 2, 2), (RecordKind::Put, "in".into(), 3, 1)]);
    // A compare on the outer put's result (version 2) fails inside: failure branch.
    let r = s.txn(&[], &[put_op("a", "3"), inner(3)], &[]).unwrap();
    let TxnOpResult::Txn(t) = &r.responses[1] else { panic!("{r:?}") };
    assert!(!t.succeeded);
    assert_eq!(get(&s, b"in", 0).unwrap().value, b"failure");
    // Two levels, in the failure branch of the outer txn.
    let deep = TxnOp::Txn {
        compares: vec![version_is("zz", 0)],
        success: vec![TxnOp::Txn { compares: vec![], success: vec![put_op("deep", "1")], failure: vec![] }],
        failure: vec![],
    };
    let r = s.txn(&[version_is("a", 0)], &[], &[deep]).unwrap();
    assert!(!r.succeeded);
    let TxnOpResult::Txn(t1) = &r.responses[0] else { panic!("{r:?}") };
    let TxnOpResult::Txn(t2) = &t1.responses[0] else { panic!("{r:?}") };
    let TxnOpResult::Put(p) = &t2.responses[0] else { panic!("{r:?}") };
    assert!(t1.succeeded && t2.succeeded && p.revision == 5 && t2.revision == 5);
    // A nested txn that writes nothing: no revision, every answer at the current one.
    let r =
        s.txn(&[], &[TxnOp::Txn { compares: vec![], success: vec![range_op("deep")], failure: vec![] }], &[]).unwrap();
    assert_eq!(r.revision, 5);
    assert_eq!(s.current_revision(), 5);
}

/// etcd lets a nested txn put a key that a later sibling nested txn deletes, and a
/// put follow a delete with range end "\0" over its key: one revision then changes
/// a key twice, and each op sees the other's write.
#[test]
fn a_txn_may_change_a_key_twice_as_etcd_allows() {
    let (s, _) = mem_store();
    s.put(b"b", b"old").unwrap(); // 2
    let del = |k: &str, end: &str| TxnOp::DeleteRange { key: k.into(), range_end: end.into(), prev_kv: true };
    let nested = |ops| TxnOp::Txn { compares: vec![], success: ops, failure: vec![] };
    let r = s.txn(&[], &[nested(vec![put_op("x", "new")]), nested(vec![del("a", "y")])], &[]).unwrap();
    assert_eq!(r.revision, 3);
    let TxnOpResult::Txn(t) = &r.responses[1] else { panic!("{r:?}") };
    let TxnOpResult::DeleteRange(d) = &t.responses[0] else { panic!("{r:?}") };
    // Both keys, in key order: b as committed, x as the earlier put left it.
    let prev: Vec<(&[u8], &[u8], u64, u64)> =
        d.prev_kvs.iter().map(|kv| (&kv.key[..], &kv.value[..], kv.mod_revision, kv.version)).collect();
    assert_eq!(prev, [(&b"b"[..], &b"old"[..], 2, 1), (&b"x"[..], &b"new"[..], 3, 1)]);
    assert_eq!(d.deleted, 2);
    assert_eq!(
        records(&s, 3),
        [
            (RecordKind::Put, "x".into(), 3, 1),
            (RecordKind::Delete, "b".into(), 0, 0),
            (RecordKind::Delete, "x".into(), 0, 0)
        ]
    );
    assert!(get(&s, b"x", 0).is_none() && get(&s, b"b", 0).is_none());
    // The other order is refused.
    assert!(matches!(
        s.txn(&[], &[nested(vec![del("x", "")]), nested(vec![put_op("x", "1")])], &[]),
        Err(Error::DuplicateKey)
    ));
    // A "\0" end conflicts with no put: the put starts a new generation.
    s.put(b"c", b"1").unwrap(); // 4
    s.put(b"c", b"2").unwrap(); // 5
    let r = s.txn(&[], &[del("a", "\0"), put_op("c", "3"), range_op("c")], &[]).unwrap();
    assert_eq!(r.revision, 6);
    let TxnOpResult::Range(rr) = &r.responses[2] else { panic!("{r:?}") };
    assert_eq!((rr.kvs[0].create_revision, rr.kvs[0].version), (6, 1));
    assert_eq!(records(&s, 6), [(RecordKind::Delete, "c".into(), 0, 0), (RecordKind::Put, "c".into(), 6, 1)]);
    let kv = get(&s, b"c", 0).unwrap();
    assert_eq!((kv.value.as_slice(), kv.create_revision, kv.version), (&b"3"[..], 6, 1));
    assert_eq!(get(&s, b"c", 5).unwrap().value, b"2");
    // ignore_value of a key the txn deleted: nothing to keep (etcd panics there).
    let keep = TxnOp::PutKeepValue { key: b"c".to_vec(), value: Vec::new(), prev_kv: false, lease: PutLease::None };
    assert!(matches!(s.txn(&[], &[del("a", "\0"), keep], &[]), Err(Error::KeyNotFound)));
    assert_eq!(s.current_revision(), 6);
}

/// etcd's op limit for a nested txn: what the enclosing txn leaves of it (the limit
/// minus the largest of its compare, success and failure counts).
#[test]
fn nested_txns_count_against_what_their_enclosing_txn_leaves() {
    let (s, _) = mem_store();
    let nested = |n| TxnOp::Txn { compares: vec![], success: vec![range_op("a"); n], failure: vec![] };
    let outer = |n| {
        let mut ops = vec![range_op("a"); 99];
        ops.push(nested(n));
        ops
    };
    assert!(s.txn(&[], &outer(28), &[]).is_ok());
    assert!(matches!(s.txn(&[], &outer(29), &[]), Err(Error::TooManyOps { count: 29, max: 28 })));
    // The branch not taken counts too, and compares count as ops.
    let compares = TxnOp::Txn { compares: vec![version_is("a", 0); 29], success: vec![], failure: vec![] };
    let mut ops = vec![range_op("a"); 99];
    ops.push(compares);
    assert!(matches!(s.txn(&[], &[], &ops), Err(Error::TooManyOps { count: 29, max: 28 })));
}

/// etcd's compaction revision starts at -1: compacting at 0 succeeds once.
#[test]
fn compact_at_zero_succeeds_once_on_a_store_never_compacted() {
    let (s, _) = mem_store();
    s.compact(0).unwrap();
    assert!(matches!(s.compact(0), Err(Error::Compacted { requested: 0, compact_revision: 0 })));
    assert_eq!(s.compact_revision(), 0);
    s.put(b"a", b"1").unwrap();
    s.compact(2).unwrap();
    assert!(matches!(s.compact(0), Err(Error::Compacted { requested: 0, compact_revision: 2 })));
    let (s, _) = mem_store();
    s.put(b"a", b"1").unwrap();
    s.compact(1).unwrap();
    assert!(matches!(s.compact(0), Err(Error::Compacted { requested: 0, compact_revision: 1 })));
}
