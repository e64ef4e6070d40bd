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
        TxnOp::Put { key: b"k".to_vec(), value: b"2".to_vec(), prev_kv: true },
        TxnOp::Put { key: b"j".to_vec(), value: b"x".to_vec(), prev_kv: false },
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
        TxnOp::Put { key: b"k".to_vec(), value: b"2".to_vec(), prev_kv: false },
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
