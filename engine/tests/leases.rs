//! Leases in the store: grant, attach (put with a lease, a key moving between
//! leases), revoke and expiry (one revision deleting every key of the lease), and
//! durability through reopen, compaction and crashes that lose unsynced writes
//! (`MemStorage`). The randomized test prints its seed; `ARGUS_SEED=<seed>` replays
//! it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use argus_engine::lease::{MAX_LEASE_TTL, MIN_LEASE_TTL, TICK};
use argus_engine::log::{CrashMode, FsyncPolicy, MemStorage};
use argus_engine::store::{PutLease, RangeOptions, Store, TxnOp, TxnOpResult};
use argus_engine::Error;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod common;

use common::{open_copy, small_opts};

fn put(s: &Store, key: &str, lease: PutLease) -> argus_engine::Result<u64> {
    let op = TxnOp::Put { key: key.as_bytes().to_vec(), value: b"v".to_vec(), prev_kv: false, lease };
    Ok(s.txn(&[], &[op], &[])?.revision)
}

/// Every live key with its lease.
fn leases_of_keys(s: &Store) -> BTreeMap<String, i64> {
    let r = s.range(b"\0", b"\0", RangeOptions::default()).unwrap();
    r.kvs.into_iter().map(|kv| (String::from_utf8(kv.key).unwrap(), kv.lease)).collect()
}

fn keys_of(s: &Store, id: i64) -> Vec<String> {
    s.lease_time_to_live(id, true).unwrap().keys.into_iter().map(|k| String::from_utf8(k).unwrap()).collect()
}

#[test]
fn grant_attach_move_detach_and_revoke() {
    let s = open_copy(&MemStorage::new(), &small_opts(FsyncPolicy::Always, 1 << 20));
    let a = s.grant_lease(0, 60).unwrap();
    assert!(a.id > 0, "a generated ID is positive, as etcd's");
    assert_eq!(a.ttl, 60);
    let b = s.grant_lease(7, 1).unwrap();
    assert_eq!((b.id, b.ttl), (7, MIN_LEASE_TTL), "a TTL below the minimum is raised to it");
    assert_eq!(s.current_revision(), 1, "a grant moves no revision");
    assert!(matches!(s.grant_lease(7, 10), Err(Error::LeaseExists)));
    assert!(matches!(s.grant_lease(8, MAX_LEASE_TTL + 1), Err(Error::LeaseTtlTooLarge { .. })));
    assert!(matches!(put(&s, "/x", PutLease::Attach(99)), Err(Error::LeaseNotFound)));
    assert_eq!(s.current_revision(), 1, "a refused put writes nothing");

    put(&s, "/a", PutLease::Attach(a.id)).unwrap();
    put(&s, "/b", PutLease::Attach(a.id)).unwrap();
    put(&s, "/c", PutLease::Attach(7)).unwrap();
    put(&s, "/d", PutLease::None).unwrap();
    assert_eq!(keys_of(&s, a.id), ["/a", "/b"]);
    // ignore_lease keeps the key's lease, or none; on a missing key it is refused.
    put(&s, "/a", PutLease::Keep).unwrap();
    put(&s, "/d", PutLease::Keep).unwrap();
    assert!(matches!(put(&s, "/nope", PutLease::Keep), Err(Error::KeyNotFound)));
    // A key moves to another lease, and a put without one detaches it.
    put(&s, "/b", PutLease::Attach(7)).unwrap();
    put(&s, "/c", PutLease::None).unwrap();
    let want: BTreeMap<String, i64> =
        [("/a", a.id), ("/b", 7), ("/c", 0), ("/d", 0)].into_iter().map(|(k, l)| (k.to_string(), l)).collect();
    assert_eq!(leases_of_keys(&s), want);
    assert_eq!(keys_of(&s, a.id), ["/a"]);
    assert_eq!(keys_of(&s, 7), ["/b"]);
    // A delete detaches too.
    s.delete_range(b"/a", b"", false).unwrap();
    assert!(keys_of(&s, a.id).is_empty());

    // Revoke: one revision deleting every key of the lease.
    put(&s, "/e", PutLease::Attach(7)).unwrap();
    put(&s, "/f", PutLease::Attach(7)).unwrap();
    let before = s.current_revision();
    let rev = s.revoke_lease(7).unwrap();
    assert_eq!(rev, before + 1);
    let deleted: Vec<Vec<u8>> = s
        .log()
        .reader()
        .records(rev, rev)
        .map(|r| r.unwrap().1)
        .map(|r| {
            assert_eq!(r.kind, argus_engine::log::record::RecordKind::Delete);
            r.key.to_vec()
        })
        .collect();
    assert_eq!(deleted, [b"/b".to_vec(), b"/e".to_vec(), b"/f".to_vec()]);
    assert!(matches!(s.revoke_lease(7), Err(Error::LeaseNotFound)));
    assert!(matches!(s.keep_alive(7), Err(Error::LeaseNotFound)));
    // Revoking a lease with no keys moves no revision.
    let rev = s.revoke_lease(a.id).unwrap();
    assert_eq!(rev, s.current_revision());
    assert_eq!(rev, before + 1);
    assert!(s.lease_ids().is_empty());
    assert_eq!(s.lessor().stats().attached_keys, 0);
}

#[test]
fn a_txn_attaches_and_reads_leases() {
    let s = open_copy(&MemStorage::new(), &small_opts(FsyncPolicy::Never, 1 << 20));
    s.grant_lease(5, 30).unwrap();
    let ops = [
        TxnOp::Put { key: b"/t1".to_vec(), value: b"1".to_vec(), prev_kv: false, lease: PutLease::Attach(5) },
        TxnOp::Range { key: b"/t1".to_vec(), range_end: Vec::new(), options: RangeOptions::default() },
    ];
    let r = s.txn(&[], &ops, &[]).unwrap();
    match &r.responses[1] {
        TxnOpResult::Range(rr) => assert_eq!(rr.kvs[0].lease, 5, "a range in the txn sees the lease it attached"),
        other => panic!("{other:?}"),
    }
    // A txn naming a missing lease writes nothing.
    let bad = [TxnOp::Put { key: b"/t2".to_vec(), value: b"2".to_vec(), prev_kv: false, lease: PutLease::Attach(6) }];
    assert!(matches!(s.txn(&[], &bad, &[]), Err(Error::LeaseNotFound)));
    assert_eq!(keys_of(&s, 5), ["/t1"]);
}

#[test]
fn expiry_revokes_after_the_deadline_and_a_keep_alive_postpones_it() {
    let s = open_copy(&MemStorage::new(), &small_opts(FsyncPolicy::Never, 1 << 20));
    let t0 = Instant::now();
    s.grant_lease(1, 5).unwrap();
    s.grant_lease(2, 5).unwrap();
    s.grant_lease(3, 50).unwrap();
    put(&s, "/one/a", PutLease::Attach(1)).unwrap();
    put(&s, "/one/b", PutLease::Attach(1)).unwrap();
    put(&s, "/two", PutLease::Attach(2)).unwrap();
    assert_eq!(s.expire_leases(t0 + Duration::from_secs(4)).unwrap(), 0, "nothing expires early");
    assert_eq!(s.keep_alive(2).unwrap(), 5);
    // A keep-alive three seconds in (the lessor takes the time explicitly).
    assert_eq!(s.lessor().renew(2, t0 + Duration::from_secs(3)), Some(5));
    let rev = s.current_revision();
    // Lease 1's deadline has passed one tick after t0 + 5 s; lease 2's has not.
    assert_eq!(s.expire_leases(t0 + Duration::from_secs(5) + TICK).unwrap(), 1);
    assert_eq!(s.current_revision(), rev + 1, "one revision for both keys of lease 1");
    assert_eq!(s.lease_ids(), [2, 3]);
    assert_eq!(leases_of_keys(&s).keys().cloned().collect::<Vec<_>>(), ["/two"]);
    assert_eq!(s.expire_leases(t0 + Duration::from_millis(7900)).unwrap(), 0);
    assert_eq!(s.expire_leases(t0 + Duration::from_secs(8) + TICK).unwrap(), 1, "at its new deadline");
    assert_eq!(s.lease_ids(), [3]);
    assert!(leases_of_keys(&s).is_empty());
}

/// A mass expiry (many chunks of revokes, with a pause between two holds of the
/// write lock) revokes every lease, each in a revision of its own, while another
/// thread writes: the writer's puts all succeed, and every revision is one lease's
/// or one put's.
#[test]
fn a_mass_expiry_revokes_every_lease_while_a_writer_puts() {
    let s = open_copy(&MemStorage::new(), &small_opts(FsyncPolicy::Always, 1 << 20));
    let t0 = Instant::now();
    let n: i64 = 300; // 19 chunks
    for id in 1..=n {
        s.grant_lease(id, 5).unwrap();
        put(&s, &format!("/l/{id:04}"), PutLease::Attach(id)).unwrap();
    }
    let before = s.current_revision();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (s, stop) = (s.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut puts = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                put(&s, "/w", PutLease::None).unwrap();
                puts += 1;
            }
            puts
        })
    };
    let revoked = s.expire_leases(t0 + Duration::from_secs(5) + TICK).unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let puts = writer.join().unwrap();
    assert_eq!(revoked, n as usize);
    assert!(s.lease_ids().is_empty());
    let left: Vec<String> = leases_of_keys(&s).into_keys().collect();
    assert!(left.iter().all(|k| k == "/w"), "every key of a lease is gone: {left:?}");
    assert_eq!(s.current_revision(), before + n as u64 + puts, "one revision per lease and per put");
}

#[test]
fn leases_and_their_keys_survive_reopen_compaction_and_small_segments() {
    let storage = MemStorage::new();
    // Small segments: lease records start segments and share them with revisions.
    let o = small_opts(FsyncPolicy::Always, 4096);
    let s = open_copy(&storage, &o);
    for id in 1..=40 {
        s.grant_lease(id, 100 + id).unwrap();
    }
    for i in 0..120 {
        let id = 1 + (i % 40) as i64;
        put(&s, &format!("/k{i:03}"), PutLease::Attach(id)).unwrap();
    }
    for id in 31..=40 {
        s.revoke_lease(id).unwrap();
    }
    // Keys moved off their leases and back.
    put(&s, "/k000", PutLease::None).unwrap();
    put(&s, "/k001", PutLease::Attach(3)).unwrap();
    let keys = leases_of_keys(&s);
    let ids = s.lease_ids();
    s.compact(s.current_revision() - 5).unwrap();
    // Leases granted and revoked after the compaction.
    s.grant_lease(100, 9).unwrap();
    s.grant_lease(101, 9).unwrap();
    s.revoke_lease(101).unwrap();
    let mut ids_after = ids.clone();
    ids_after.push(100);
    drop(s);
    let s = open_copy(&storage, &o);
    assert_eq!(s.lease_ids(), ids_after);
    assert_eq!(leases_of_keys(&s), keys);
    assert_eq!(s.lease_time_to_live(100, false).unwrap().granted, 9);
    assert_eq!(s.lease_time_to_live(5, false).unwrap().granted, 105);
    assert_eq!(keys_of(&s, 3), ["/k001", "/k002", "/k042", "/k082"]);
    // The rebuilt attachments are live: a revoke deletes exactly the lease's keys.
    let rev = s.revoke_lease(3).unwrap();
    assert_eq!(s.log().reader().records(rev, rev).count(), 4);
    // Compacting at the current revision and reopening keeps them too.
    s.compact(s.current_revision()).unwrap();
    let keys = leases_of_keys(&s);
    drop(s);
    let s = open_copy(&storage, &o);
    assert_eq!(leases_of_keys(&s), keys);
    assert_eq!(s.lessor().stats().attached_keys, keys.values().filter(|&&l| l != 0).count());
}

/// Random grants, puts with leases, revokes, keep-alives, compactions and crashes
/// (losing everything unsynced, under `always` and `never`): after each reopen the
/// leases and every key's lease equal the model's state of some acknowledged
/// prefix (under `always`: exactly what was acknowledged).
#[test]
fn random_lease_histories_survive_crashes() {
    let seed = common::seed("random_lease_histories_survive_crashes");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut storage = MemStorage::new();
    // The model: leases and the lease of every live key.
    let mut leases: BTreeSet<i64> = BTreeSet::new();
    let mut keys: BTreeMap<String, i64> = BTreeMap::new();
    for round in 0..12 {
        let policy = if rng.random_bool(0.6) { FsyncPolicy::Always } else { FsyncPolicy::Never };
        let o = small_opts(policy, [4096, 8192][rng.random_range(0..2)]);
        let s = open_copy(&storage, &o);
        assert_eq!(s.lease_ids().into_iter().collect::<BTreeSet<_>>(), leases, "round {round}: leases");
        assert_eq!(leases_of_keys(&s), keys, "round {round}: keys");
        for _ in 0..rng.random_range(10..60) {
            match rng.random_range(0..10) {
                0..=1 => {
                    let id = rng.random_range(1..30);
                    if s.grant_lease(id, 60).is_ok() {
                        leases.insert(id);
                    }
                }
                2..=6 => {
                    let key = format!("/k{}", rng.random_range(0..25));
                    let id = rng.random_range(0..30);
                    let lease = if id == 0 { PutLease::None } else { PutLease::Attach(id) };
                    match put(&s, &key, lease) {
                        Ok(_) => drop(keys.insert(key, id)),
                        Err(Error::LeaseNotFound) => assert!(!leases.contains(&id)),
                        Err(e) => panic!("{e}"),
                    }
                }
                7 => {
                    let id = rng.random_range(1..30);
                    if s.revoke_lease(id).is_ok() {
                        leases.remove(&id);
                        keys.retain(|_, l| *l != id);
                    }
                }
                8 => {
                    let key = format!("/k{}", rng.random_range(0..25));
                    s.delete_range(key.as_bytes(), b"", false).unwrap();
                    keys.remove(&key);
                }
                _ => {
                    let rev = s.current_revision();
                    if rev > s.compact_revision() {
                        s.compact(rng.random_range(s.compact_revision() + 1..=rev)).unwrap();
                    }
                }
            }
        }
        if policy == FsyncPolicy::Never {
            s.flush().unwrap();
        }
        drop(s);
        if rng.random_bool(0.5) {
            storage = storage.crash(CrashMode::DropUnsynced);
        }
    }
}
