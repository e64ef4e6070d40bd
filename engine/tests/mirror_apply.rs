//! A mirror's store: revisions assigned upstream (`Store::install_base`,
//! `Store::apply_upstream`, `StoreOptions::foreign_leases`; FORMAT.md, Mirrored
//! logs).
//!
//! The reference is an ordinary store: writes run on it, and its revisions (as its
//! log holds them) are copied into a mirror store the way `argus mirror` copies an
//! etcd cluster's. Reads at every revision and watches from several revisions must
//! then be equal on the two stores.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use argus_engine::log::record::RecordKind;
use argus_engine::log::{CrashMode, FsyncPolicy, LogOptions, MemStorage, RevisionLog, Storage};
use argus_engine::store::{KeyValue, PutLease, RangeOptions, RangeResult, Store, StoreOptions, TxnOp, UpstreamEvent};
use argus_engine::watch::{Event, WatchController, WatchHub, WatchOptions, WatchReceiver, WatchRequest};
use argus_engine::Error;
use common::{k, ErrKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const T: Duration = Duration::from_secs(30);

fn options(foreign_leases: bool) -> StoreOptions {
    let mut o = StoreOptions::default();
    o.log.fsync = FsyncPolicy::Never;
    o.log.segment_size = 16 << 10; // many segments: rolls and compactions that delete some
    o.max_key_bytes = 256;
    o.max_value_bytes = 1024;
    o.max_request_bytes = 4096;
    o.max_txn_ops = 16;
    o.foreign_leases = foreign_leases;
    o
}

fn reference() -> Store {
    Store::open_storage(Arc::new(MemStorage::new()), options(false)).expect("open the reference store")
}

fn mirror_on(storage: &MemStorage) -> Store {
    Store::open_storage(Arc::new(storage.clone()), options(true)).expect("open the mirror store")
}

/// One event of a revision, owned (what an upstream watch delivers).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Ev {
    kind: RecordKind,
    key: Vec<u8>,
    value: Vec<u8>,
    create_revision: u64,
    version: u64,
    lease: i64,
}

impl Ev {
    fn put(key: &str, value: &str, create_revision: u64, version: u64, lease: i64) -> Ev {
        Ev { kind: RecordKind::Put, key: key.into(), value: value.into(), create_revision, version, lease }
    }

    fn delete(key: &str) -> Ev {
        Ev { kind: RecordKind::Delete, key: key.into(), value: Vec::new(), create_revision: 0, version: 0, lease: 0 }
    }
}

/// The events of revision `rev` in `store`'s log.
fn events_of(store: &Store, rev: u64) -> Vec<Ev> {
    let reader = store.log().reader();
    let evs: Vec<Ev> = reader
        .records(rev, rev)
        .map(|r| {
            let (_, r) = r.expect("read the log");
            assert_eq!(r.main, rev);
            Ev {
                kind: r.kind,
                key: r.key.to_vec(),
                value: r.value.to_vec(),
                create_revision: r.create_revision,
                version: r.version,
                lease: r.lease,
            }
        })
        .collect();
    evs
}

fn upstream(evs: &[Ev]) -> Vec<UpstreamEvent<'_>> {
    evs.iter()
        .map(|e| UpstreamEvent {
            kind: e.kind,
            key: &e.key,
            value: &e.value,
            create_revision: e.create_revision,
            version: e.version,
            lease: e.lease,
        })
        .collect()
}

fn apply(mirror: &Store, rev: u64, evs: &[Ev]) {
    mirror.apply_upstream(rev, &upstream(evs)).unwrap_or_else(|e| panic!("apply revision {rev}: {e}"));
}

/// Copies the reference's revisions after the mirror's last one into the mirror.
fn catch_up(reference: &Store, mirror: &Store) {
    for rev in mirror.current_revision() + 1..=reference.current_revision() {
        apply(mirror, rev, &events_of(reference, rev));
    }
}

/// Every key at `rev` (0: current).
fn all(store: &Store, rev: u64) -> Result<RangeResult, ErrKind> {
    k(store.range(b"\0", b"\0", RangeOptions { revision: rev, ..Default::default() }))
}

/// Installs the reference's state at `base` (its compaction revision) in the mirror,
/// with revision `base`'s events.
fn install(reference: &Store, mirror: &Store, base: u64) {
    let kvs = all(reference, base).expect("read the base").kvs;
    let evs = events_of(reference, base);
    mirror.install_base(base, &kvs, &upstream(&evs)).unwrap_or_else(|e| panic!("install the base at {base}: {e}"));
}

/// The events a watch on every key from `from` receives up to revision `until`, with
/// prev_kv, or the compaction revision it was canceled with.
fn watch_all(hub: &WatchHub, from: i64, until: u64) -> Result<Vec<Event>, u64> {
    let (_ctl, mut rx) = start_watch(hub, from);
    collect(&mut rx, from, until)
}

/// A watcher on every key from `from`, with prev_kv.
fn start_watch(hub: &WatchHub, from: i64) -> (WatchController, WatchReceiver) {
    let (ctl, rx) = hub.stream().split();
    let req = WatchRequest {
        key: b"\0".to_vec(),
        range_end: b"\0".to_vec(),
        start_revision: from,
        prev_kv: true,
        ..WatchRequest::default()
    };
    ctl.watch(req).expect("create the watcher");
    (ctl, rx)
}

/// What the watcher of `rx` (from `from`) receives up to revision `until`, or the
/// compaction revision it was canceled with.
fn collect(rx: &mut WatchReceiver, from: i64, until: u64) -> Result<Vec<Event>, u64> {
    let deadline = Instant::now() + T;
    let mut events = Vec::new();
    loop {
        if events.last().is_some_and(|e: &Event| e.kv.mod_revision >= until) {
            return Ok(events);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let r = rx.recv_timeout(left).unwrap_or_else(|| panic!("watch from {from}: nothing within {T:?}"));
        if r.canceled {
            return Err(r.compact_revision);
        }
        events.extend(r.events());
    }
}

/// Reads at every revision up to one past the current, and watches from the
/// compaction revision (and around it), from `extra` and from the current revision,
/// are equal on both stores.
fn check_equal(reference: &Store, mirror: &Store, ref_hub: &WatchHub, mirror_hub: &WatchHub, extra: &[u64], ctx: &str) {
    let current = reference.current_revision();
    assert_eq!(mirror.current_revision(), current, "{ctx}: current revision");
    assert_eq!(mirror.compact_revision(), reference.compact_revision(), "{ctx}: compaction revision");
    for rev in 0..=current + 1 {
        assert_eq!(all(mirror, rev), all(reference, rev), "{ctx}: range at {rev}");
    }
    let compact = reference.compact_revision();
    let mut froms: Vec<u64> = vec![compact.saturating_sub(1).max(1), compact.max(1), compact + 1, current];
    froms.extend(extra);
    froms.sort_unstable();
    froms.dedup();
    // (Revision 1 has no events: a store at it has nothing to watch.)
    for from in froms.into_iter().filter(|&f| f >= 1 && f <= current && current >= 2) {
        let want = watch_all(ref_hub, from as i64, current);
        let got = watch_all(mirror_hub, from as i64, current);
        assert_eq!(got, want, "{ctx}: watch from {from} (compacted at {compact}, current {current})");
    }
}

/// One random write on the reference store (it may write nothing).
fn random_write(rng: &mut StdRng, store: &Store, leases: &mut [i64]) {
    let key = |rng: &mut StdRng| format!("/k/{:02}", rng.random_range(0..12)).into_bytes();
    let lease = |rng: &mut StdRng, leases: &[i64]| {
        if rng.random_bool(0.4) {
            PutLease::Attach(leases[rng.random_range(0..leases.len())])
        } else {
            PutLease::None
        }
    };
    let value = |rng: &mut StdRng| format!("v{}", rng.random_range(0..1000)).into_bytes();
    match rng.random_range(0..10) {
        0..=4 => {
            let op = TxnOp::Put { key: key(rng), value: value(rng), prev_kv: false, lease: lease(rng, leases) };
            store.txn(&[], &[op], &[]).expect("put");
        }
        5 => {
            store.delete_range(&key(rng), b"", false).expect("delete");
        }
        6 => {
            let from = key(rng);
            let to = key(rng);
            let (from, to) = if from < to { (from, to) } else { (to, Vec::new()) };
            store.delete_range(&from, &to, false).expect("delete a range");
        }
        7 | 8 => {
            // Several puts and a delete in one revision (distinct keys).
            let mut keys: Vec<Vec<u8>> = (0..rng.random_range(2..5)).map(|_| key(rng)).collect();
            keys.sort();
            keys.dedup();
            let mut ops: Vec<TxnOp> = Vec::new();
            for (i, k) in keys.into_iter().enumerate() {
                if i == 1 && rng.random_bool(0.5) {
                    ops.push(TxnOp::DeleteRange { key: k, range_end: Vec::new(), prev_kv: false });
                } else {
                    ops.push(TxnOp::Put { key: k, value: value(rng), prev_kv: false, lease: lease(rng, leases) });
                }
            }
            store.txn(&[], &ops, &[]).expect("txn");
        }
        _ => {
            // Revoke a lease (deleting its keys in one revision) and grant another.
            let i = rng.random_range(0..leases.len());
            store.revoke_lease(leases[i]).expect("revoke");
            leases[i] = store.grant_lease(0, 600).expect("grant").id;
        }
    }
}

/// Randomized: the mirror follows the reference from its compaction revision (or
/// from revision 2 when it is never compacted), through compactions of both, and
/// answers every read and watch as the reference does. `ARGUS_SEED` replays a run.
#[test]
fn a_mirror_store_answers_as_the_store_it_follows() {
    let seed = common::seed("a_mirror_store_answers_as_the_store_it_follows");
    let mut rng = StdRng::seed_from_u64(seed);
    for round in 0..20 {
        let ctx = format!("seed {seed} round {round}");
        let reference = reference();
        let mut leases: Vec<i64> = (0..3).map(|_| reference.grant_lease(0, 600).expect("grant").id).collect();
        for _ in 0..rng.random_range(0..60) {
            random_write(&mut rng, &reference, &mut leases);
        }
        let storage = MemStorage::new();
        let mirror = mirror_on(&storage);
        // Bootstrap at a compaction revision of the reference (as at etcd's), or
        // follow from revision 2 (a cluster never compacted).
        let current = reference.current_revision();
        if current >= 2 && rng.random_bool(0.7) {
            let base = rng.random_range(2..=current);
            reference.compact(base).expect("compact the reference");
            install(&reference, &mirror, base);
            assert_eq!((mirror.current_revision(), mirror.compact_revision()), (base, base), "{ctx}");
        }
        catch_up(&reference, &mirror);
        let ref_hub = WatchHub::new(reference.clone(), WatchOptions::default());
        let mirror_hub = WatchHub::new(mirror.clone(), WatchOptions::default());
        let mid = rng.random_range(1..=reference.current_revision());
        check_equal(&reference, &mirror, &ref_hub, &mirror_hub, &[mid], &format!("{ctx}, after the bootstrap"));

        // Live: watchers from the next revision on both, then writes copied one
        // revision at a time, with compactions of both at the same revisions.
        // Live: watchers from the next revision on both, while writes are copied one
        // revision at a time (no compaction meanwhile: a watcher that lags behind
        // one is canceled, and whether it lags depends on the scheduler).
        let live_from = reference.current_revision() + 1;
        let (_ref_ctl, mut ref_live) = start_watch(&ref_hub, 0);
        let (_mirror_ctl, mut mirror_live) = start_watch(&mirror_hub, 0);
        for _ in 0..rng.random_range(5..40) {
            random_write(&mut rng, &reference, &mut leases);
            catch_up(&reference, &mirror);
        }
        let current = reference.current_revision();
        if current >= live_from {
            let want = collect(&mut ref_live, 0, current);
            assert_eq!(collect(&mut mirror_live, 0, current), want, "{ctx}: live watchers from {live_from}");
        }
        drop((ref_live, mirror_live));
        // Then with compactions of both at the same revisions.
        for _ in 0..rng.random_range(5..40) {
            random_write(&mut rng, &reference, &mut leases);
            catch_up(&reference, &mirror);
            if rng.random_bool(0.1) {
                let c = reference.compact_revision();
                let target = rng.random_range(c.max(1)..=reference.current_revision());
                assert_eq!(k(mirror.compact(target)), k(reference.compact(target)), "{ctx}: compact at {target}");
            }
        }
        let current = reference.current_revision();
        let mid = rng.random_range(1..=current);
        check_equal(&reference, &mirror, &ref_hub, &mirror_hub, &[mid, live_from], &format!("{ctx}, after following"));
        // Keys keep their leases; the mirror has no lease table.
        assert!(mirror.lease_ids().is_empty(), "{ctx}");
        drop((ref_hub, mirror_hub));

        // A reopen finds the same state and continues.
        drop(mirror);
        let mirror = mirror_on(&storage.crash(CrashMode::DropUnsynced));
        let reopened = mirror.current_revision();
        assert!(reopened >= reference.compact_revision().max(1), "{ctx}: reopened at {reopened}");
        for rev in mirror.compact_revision().max(1)..=reopened {
            assert_eq!(all(&mirror, rev), all(&reference, rev).map(|r| RangeResult { revision: reopened, ..r }));
        }
        catch_up(&reference, &mirror);
        assert_eq!(all(&mirror, 0), all(&reference, 0), "{ctx}: after the crash and catching up");
    }
}

/// A store bootstrapped at `K` with revision K's events: a watch from `K` gets them
/// (in their order, with no prev_kv: K - 1 is compacted), from `K + 1` the next
/// revision's, and from `K - 1` it is canceled as compacted at `K`: as on the store
/// it follows, compacted at `K`.
#[test]
fn a_watch_from_the_base_revision_gets_its_events() {
    let reference = reference();
    let lease = reference.grant_lease(0, 600).expect("grant").id;
    reference.put(b"/a", b"1").unwrap(); // 2
    reference.put(b"/b", b"1").unwrap(); // 3
    reference.put(b"/a", b"2").unwrap(); // 4
    let ops = [
        TxnOp::Put { key: b"/c".to_vec(), value: b"1".to_vec(), prev_kv: false, lease: PutLease::Attach(lease) },
        TxnOp::DeleteRange { key: b"/b".to_vec(), range_end: Vec::new(), prev_kv: false },
        TxnOp::Put { key: b"/a".to_vec(), value: b"3".to_vec(), prev_kv: false, lease: PutLease::None },
    ];
    reference.txn(&[], &ops, &[]).unwrap(); // 5
    let base = 5;
    reference.compact(base).unwrap();
    let evs = events_of(&reference, base);
    assert_eq!(
        evs,
        vec![Ev::put("/c", "1", 5, 1, lease), Ev::delete("/b"), Ev::put("/a", "3", 2, 3, 0)],
        "the reference's events at the base"
    );

    let storage = MemStorage::new();
    let mirror = mirror_on(&storage);
    install(&reference, &mirror, base);
    assert_eq!((mirror.current_revision(), mirror.compact_revision()), (base, base));
    let at_base = all(&mirror, base).unwrap();
    let kv = |key: &str, value: &str, create_revision, mod_revision, version, lease| KeyValue {
        key: key.into(),
        value: value.into(),
        create_revision,
        mod_revision,
        version,
        lease,
    };
    assert_eq!(at_base.kvs, vec![kv("/a", "3", 2, 5, 3, 0), kv("/c", "1", 5, 5, 1, lease)]);
    assert_eq!(all(&mirror, base - 1), Err(ErrKind::Compacted { requested: base - 1, compact_revision: base }));

    reference.put(b"/c", b"2").unwrap(); // 6: detaches /c from the lease
    catch_up(&reference, &mirror);
    let hub = WatchHub::new(mirror.clone(), WatchOptions::default());
    let ref_hub = WatchHub::new(reference.clone(), WatchOptions::default());

    let from_base = watch_all(&hub, base as i64, 6).expect("a watch from the base is not compacted");
    let got: Vec<(u64, u32, Vec<u8>, bool)> =
        from_base.iter().map(|e| (e.kv.mod_revision, e.sub, e.kv.key.clone(), e.prev_kv.is_some())).collect();
    assert_eq!(
        got,
        vec![
            (5, 0, b"/c".to_vec(), false),
            (5, 1, b"/b".to_vec(), false),
            (5, 2, b"/a".to_vec(), false),
            (6, 0, b"/c".to_vec(), true)
        ]
    );
    assert_eq!(from_base, watch_all(&ref_hub, base as i64, 6).unwrap());
    assert_eq!(from_base[3].prev_kv.as_ref().map(|p| p.lease), Some(lease), "prev_kv of /c at 6");
    assert_eq!(from_base[3].kv.lease, 0);
    assert_eq!(watch_all(&hub, base as i64 + 1, 6), watch_all(&ref_hub, base as i64 + 1, 6));
    assert_eq!(watch_all(&hub, base as i64 + 1, 6).unwrap().len(), 1);
    assert_eq!(watch_all(&hub, base as i64 - 1, 6), Err(base), "a watch from below the base");
    assert_eq!(watch_all(&ref_hub, base as i64 - 1, 6), Err(base));
}

/// Without revision K's events the log simply continues at K + 1: reads at K see
/// the base, a watch from K gets the revisions after it, and a reopen (a snapshot
/// and no segment with a revision) finds the same.
#[test]
fn a_base_without_its_events_continues_at_the_next_revision() {
    let storage = MemStorage::new();
    let mirror = mirror_on(&storage);
    let kvs = vec![
        KeyValue {
            key: b"/y".to_vec(),
            value: b"y".to_vec(),
            create_revision: 7,
            mod_revision: 9,
            version: 2,
            lease: 0,
        },
        KeyValue {
            key: b"/x".to_vec(),
            value: b"x".to_vec(),
            create_revision: 3,
            mod_revision: 3,
            version: 1,
            lease: 77,
        },
    ];
    mirror.install_base(10, &kvs, &[]).unwrap();
    assert_eq!((mirror.current_revision(), mirror.compact_revision()), (10, 10));
    let check_base = |mirror: &Store| {
        let r = all(mirror, 10).unwrap();
        assert_eq!(r.kvs, vec![kvs[1].clone(), kvs[0].clone()], "the base, in key order");
    };
    check_base(&mirror);
    drop(mirror);
    let mirror = mirror_on(&storage.crash(CrashMode::DropUnsynced));
    assert_eq!((mirror.current_revision(), mirror.compact_revision()), (10, 10));
    check_base(&mirror);
    assert!(mirror.install_base(10, &kvs, &[]).is_err(), "a second base");
    apply(&mirror, 11, &[Ev::put("/x", "x2", 3, 2, 0), Ev::put("/z", "z", 11, 1, 5)]);
    let hub = WatchHub::new(mirror.clone(), WatchOptions::default());
    let evs = watch_all(&hub, 10, 11).unwrap();
    let got: Vec<(u64, Vec<u8>, Option<i64>)> =
        evs.iter().map(|e| (e.kv.mod_revision, e.kv.key.clone(), e.prev_kv.as_ref().map(|p| p.lease))).collect();
    assert_eq!(got, vec![(11, b"/x".to_vec(), Some(77)), (11, b"/z".to_vec(), None)]);
    assert_eq!(watch_all(&hub, 9, 11), Err(10));
}

fn err_kind(r: argus_engine::Result<()>) -> String {
    match r {
        Ok(()) => "ok".to_string(),
        Err(Error::UpstreamOrder { expected, got }) => format!("order {expected} {got}"),
        Err(Error::InvalidUpstream(m)) => format!("invalid: {m}"),
        Err(e) => format!("other: {e}"),
    }
}

/// Every bad revision is refused with a clear error and changes nothing: the
/// revision, the reads, the log, and the next valid revision still applies.
#[test]
fn bad_upstream_revisions_are_refused_and_change_nothing() {
    let storage = MemStorage::new();
    let mirror = mirror_on(&storage);
    apply(&mirror, 2, &[Ev::put("/a", "1", 2, 1, 0), Ev::put("/b", "1", 2, 1, 9)]);
    apply(&mirror, 3, &[Ev::put("/a", "2", 2, 2, 0)]);
    let before = (mirror.current_revision(), all(&mirror, 0), all(&mirror, 2), events_of(&mirror, 3));
    let long = "k".repeat(257);
    let cases: Vec<(u64, Vec<Ev>, &str)> = vec![
        (5, vec![Ev::put("/c", "1", 5, 1, 0)], "order 4 5"),
        (3, vec![Ev::put("/c", "1", 3, 1, 0)], "order 4 3"),
        (0, vec![Ev::put("/c", "1", 0, 1, 0)], "order 4 0"),
        (4, vec![], "has no events"),
        (4, vec![Ev::put("", "1", 4, 1, 0)], "empty key"),
        (4, vec![Ev::put(&long, "1", 4, 1, 0)], "above the limit of 256 bytes"),
        (4, vec![Ev::put("/a", "3", 2, 4, 0)], "expected create revision 2 and version 3"),
        (4, vec![Ev::put("/a", "3", 4, 3, 0)], "expected create revision 2 and version 3"),
        (4, vec![Ev::put("/a", "3", 4, 1, 0)], "expected create revision 2 and version 3"),
        (4, vec![Ev::put("/c", "1", 3, 1, 0)], "expected create revision 4 and version 1"),
        (4, vec![Ev::put("/c", "1", 4, 2, 0)], "expected create revision 4 and version 1"),
        (4, vec![Ev::delete("/c")], "delete of key \"/c\" at revision 4, which does not exist"),
        (4, vec![Ev::put("/c", "1", 4, 1, 0), Ev::put("/c", "2", 4, 2, 0)], "appears twice"),
        (4, vec![Ev::delete("/a"), Ev::put("/a", "x", 4, 1, 0)], "appears twice"),
        // A valid first event does not get written when a later one is bad.
        (4, vec![Ev::put("/c", "1", 4, 1, 0), Ev::put("/a", "3", 2, 9, 0)], "expected create revision 2"),
        (4, vec![Ev { kind: RecordKind::LeaseGrant, ..Ev::put("/c", "1", 4, 1, 0) }], "not a PUT or a DELETE"),
    ];
    for (rev, evs, want) in &cases {
        let got = err_kind(mirror.apply_upstream(*rev, &upstream(evs)));
        assert!(got.contains(want), "revision {rev} {evs:?}: got {got:?}, want {want:?}");
        let after = (mirror.current_revision(), all(&mirror, 0), all(&mirror, 2), events_of(&mirror, 3));
        assert_eq!(after, before, "revision {rev} {evs:?} changed the store");
        assert!(events_of(&mirror, 4).is_empty());
    }
    // The next valid revision applies, and survives a reopen like the others.
    apply(&mirror, 4, &[Ev::delete("/a"), Ev::put("/b", "2", 2, 2, 9), Ev::put("/c", "1", 4, 1, 0)]);
    let state = all(&mirror, 0).unwrap();
    mirror.flush().unwrap(); // fsync=never: nothing is durable before
    drop(mirror);
    let mirror = mirror_on(&storage.crash(CrashMode::DropUnsynced));
    assert_eq!(all(&mirror, 0).unwrap().kvs, state.kvs);
    assert_eq!(mirror.current_revision(), 4);
    apply(&mirror, 5, &[Ev::put("/a", "new", 5, 1, 0)]);

    // A store with leases of its own refuses upstream revisions.
    let own = Store::open_storage(Arc::new(MemStorage::new()), options(false)).unwrap();
    let got = err_kind(own.apply_upstream(2, &upstream(&[Ev::put("/a", "1", 2, 1, 0)])));
    assert!(got.contains("foreign_leases"), "{got}");
    let got = err_kind(own.install_base(5, &[], &[]));
    assert!(got.contains("foreign_leases"), "{got}");
    assert_eq!(own.current_revision(), 1);
}

/// A bad base is refused with nothing written: the store can still take a good one.
#[test]
fn bad_bases_are_refused_and_change_nothing() {
    let storage = MemStorage::new();
    let mirror = mirror_on(&storage);
    let kv = |key: &str, value: &str, create: u64, m: u64, version: u64| KeyValue {
        key: key.into(),
        value: value.into(),
        create_revision: create,
        mod_revision: m,
        version,
        lease: 0,
    };
    let good = vec![kv("/a", "1", 2, 8, 4), kv("/b", "2", 10, 10, 1)];
    let good_events = vec![Ev::put("/b", "2", 10, 1, 0), Ev::delete("/c")];
    let long = "k".repeat(257);
    let cases: Vec<(u64, Vec<KeyValue>, Vec<Ev>, &str)> = vec![
        (0, vec![], vec![], "at least 1"),
        (10, vec![kv("/a", "1", 2, 8, 4), kv("/a", "1", 2, 8, 4)], vec![], "appears twice in the base"),
        (10, vec![kv("", "1", 2, 8, 4)], vec![], "empty key"),
        (10, vec![kv(&long, "1", 2, 8, 4)], vec![], "above the limit"),
        (10, vec![kv("/a", "1", 2, 11, 4)], vec![], "create <= mod <= 10"),
        (10, vec![kv("/a", "1", 9, 8, 4)], vec![], "create <= mod"),
        (10, vec![kv("/a", "1", 1, 8, 4)], vec![], "2 <= create"),
        (10, vec![kv("/a", "1", 2, 8, 1)], vec![], "version 1 exactly when create == mod"),
        (10, vec![kv("/a", "1", 8, 8, 2)], vec![], "version 1 exactly when create == mod"),
        (10, vec![kv("/a", "1", 2, 8, 0)], vec![], "version 1 exactly"),
        (10, good.clone(), vec![Ev::put("/b", "other", 10, 1, 0)], "not the key's state in the base"),
        (10, good.clone(), vec![Ev::put("/b", "2", 10, 1, 3)], "not the key's state in the base"),
        (10, good.clone(), vec![Ev::put("/a", "1", 2, 4, 0)], "not the key's state in the base"),
        (10, good.clone(), vec![Ev::put("/z", "1", 10, 1, 0)], "not the key's state in the base"),
        (10, good.clone(), vec![Ev::delete("/a")], "which is live in the base"),
        (10, good.clone(), vec![Ev::delete("/c")], "no event of revision 10 puts it"),
        (10, good.clone(), vec![Ev::delete("/c"), Ev::delete("/c")], "appears twice in revision 10"),
        (1, vec![], vec![Ev::delete("/c")], "revision 1 has no events"),
    ];
    for (rev, kvs, evs, want) in &cases {
        let got = err_kind(mirror.install_base(*rev, kvs, &upstream(evs)));
        assert!(got.contains(want), "base at {rev} {kvs:?} {evs:?}: got {got:?}, want {want:?}");
        assert_eq!((mirror.current_revision(), mirror.compact_revision()), (1, 0), "{want}");
        assert_eq!(storage.list().unwrap().iter().filter(|n| n.starts_with("snap-")).count(), 0, "{want}");
    }
    mirror.install_base(10, &good, &upstream(&good_events)).expect("the good base");
    assert_eq!((mirror.current_revision(), mirror.compact_revision()), (10, 10));
    assert_eq!(events_of(&mirror, 10), good_events);
    assert_eq!(all(&mirror, 10).unwrap().kvs, good);
    // Only on a store never written.
    let got = err_kind(mirror.install_base(12, &[], &[]));
    assert!(got.contains("never written"), "{got}");
    let fresh = mirror_on(&MemStorage::new());
    apply(&fresh, 2, &[Ev::put("/a", "1", 2, 1, 0)]);
    let got = err_kind(fresh.install_base(12, &[], &[]));
    assert!(got.contains("never written"), "{got}");
    assert_eq!(fresh.current_revision(), 2);
}

/// The log's `start_at` is allowed only while the log holds no revision and no
/// lease record.
#[test]
fn a_log_starts_at_a_revision_only_while_empty() {
    let (log, _) = RevisionLog::open(Arc::new(MemStorage::new()), LogOptions::default()).unwrap();
    let written = log.append_lease(7, Some(60)).unwrap();
    log.sync_lease_record(written).unwrap();
    assert!(matches!(log.start_at(10), Err(Error::InvalidUpstream(_))), "after a lease record");

    let storage = MemStorage::new();
    let (log, _) = RevisionLog::open(Arc::new(storage.clone()), LogOptions::default()).unwrap();
    log.start_at(10).unwrap();
    assert_eq!(log.committed_rev(), 9);
    assert!(matches!(log.start_at(9), Err(Error::InvalidUpstream(_))), "not after the last revision");
    let names: Vec<String> = storage.list().unwrap().into_iter().filter(|n| n.starts_with("seg-")).collect();
    assert_eq!(names, vec![format!("seg-{:020}.log", 10)], "the empty segment was replaced");
    let event = argus_engine::log::Event {
        kind: RecordKind::Put,
        key: b"/a",
        value: b"1",
        create_revision: 10,
        version: 1,
        lease: 0,
    };
    let ticket = log.append(10, &[event], |_| {}).unwrap();
    log.wait_durable(ticket).unwrap();
    assert!(matches!(log.start_at(20), Err(Error::InvalidUpstream(_))), "after a revision");
    assert_eq!(log.committed_rev(), 10);
}

/// A reopen of the directory (the file system's) after a base, revisions and a
/// compaction finds the same revisions, values and keys' leases, ignores a file of
/// the mirror's own (`mirror.state`) and leaves it as it was, and continues.
#[test]
fn a_reopen_keeps_revisions_values_and_leases_and_ignores_the_mirror_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(true);
    opts.log.fsync = FsyncPolicy::Always;
    let state_file = dir.path().join("mirror.state");
    std::fs::write(&state_file, b"cluster 42, bootstrapped at 10\n").unwrap();
    let kvs = vec![
        KeyValue {
            key: b"/a".to_vec(),
            value: b"a".to_vec(),
            create_revision: 4,
            mod_revision: 10,
            version: 3,
            lease: 7,
        },
        KeyValue {
            key: b"/b".to_vec(),
            value: b"b".to_vec(),
            create_revision: 6,
            mod_revision: 6,
            version: 1,
            lease: 0,
        },
    ];
    let at_10 = [Ev::put("/a", "a", 4, 3, 7), Ev::delete("/gone")];
    let snapshot = |store: &Store| -> Vec<Result<RangeResult, ErrKind>> {
        (9..=14).map(|rev| all(store, rev).map(|r| RangeResult { revision: 0, ..r })).collect()
    };
    let before;
    {
        let mirror = Store::open(dir.path(), opts.clone()).unwrap();
        mirror.install_base(10, &kvs, &upstream(&at_10)).unwrap();
        apply(&mirror, 11, &[Ev::put("/b", "b2", 6, 2, 8), Ev::put("/c", "c", 11, 1, 7)]);
        apply(&mirror, 12, &[Ev::delete("/a")]);
        apply(&mirror, 13, &[Ev::put("/a", "new", 13, 1, 0)]);
        before = snapshot(&mirror);
        assert_eq!(all(&mirror, 11).unwrap().kvs.iter().map(|kv| kv.lease).collect::<Vec<_>>(), vec![7, 8, 7]);
    }
    for round in 0..2 {
        let mirror = Store::open(dir.path(), opts.clone()).unwrap();
        assert_eq!(mirror.current_revision(), 13 + round);
        assert_eq!(mirror.compact_revision(), 10 + round);
        let after = snapshot(&mirror);
        if round == 0 {
            assert_eq!(after, before, "after a reopen");
            let hub = WatchHub::new(mirror.clone(), WatchOptions::default());
            let evs = watch_all(&hub, 10, 13).unwrap();
            let got: Vec<(u64, u32, Vec<u8>)> =
                evs.iter().map(|e| (e.kv.mod_revision, e.sub, e.kv.key.clone())).collect();
            assert_eq!(got[..2], [(10, 0, b"/a".to_vec()), (10, 1, b"/gone".to_vec())], "revision 10's events");
            assert_eq!(evs.len(), 6);
            drop(hub);
            // A compaction keeps the keys' leases in its snapshot.
            mirror.compact(11).unwrap();
            apply(&mirror, 14, &[Ev::put("/d", "d", 14, 1, 9)]);
        } else {
            let leases: Vec<(Vec<u8>, i64)> =
                all(&mirror, 11).unwrap().kvs.into_iter().map(|kv| (kv.key, kv.lease)).collect();
            assert_eq!(leases, vec![(b"/a".to_vec(), 7), (b"/b".to_vec(), 8), (b"/c".to_vec(), 7)]);
            let now: Vec<(Vec<u8>, i64)> =
                all(&mirror, 0).unwrap().kvs.into_iter().map(|kv| (kv.key, kv.lease)).collect();
            assert_eq!(now, vec![(b"/a".to_vec(), 0), (b"/b".to_vec(), 8), (b"/c".to_vec(), 7), (b"/d".to_vec(), 9)]);
            assert_eq!(after[2..5], before[2..5], "revisions 11..=13 after the compaction");
            assert!(mirror.lease_ids().is_empty());
        }
    }
    assert_eq!(std::fs::read(&state_file).unwrap(), b"cluster 42, bootstrapped at 10\n");
}

/// `fsync=never`, then a power cut (torn or reordered unsynced writes) at a random
/// point: the reopened mirror holds a prefix of what it applied, at least up to its
/// base (install_base returns once durable), with every read equal to the
/// reference's, and continues from its last revision + 1. `ARGUS_SEED` replays.
#[test]
fn a_crash_under_fsync_never_leaves_a_prefix_the_mirror_continues_from() {
    let seed = common::seed("a_crash_under_fsync_never_leaves_a_prefix_the_mirror_continues_from");
    let mut rng = StdRng::seed_from_u64(seed);
    for round in 0..30 {
        let ctx = format!("seed {seed} round {round}");
        let reference = reference();
        let mut leases: Vec<i64> = (0..3).map(|_| reference.grant_lease(0, 600).expect("grant").id).collect();
        for _ in 0..rng.random_range(1..40) {
            random_write(&mut rng, &reference, &mut leases);
        }
        let storage = MemStorage::new();
        let mirror = mirror_on(&storage);
        let mut durable_at_least = 1;
        let mut base = 0;
        if reference.current_revision() >= 2 && rng.random_bool(0.7) {
            base = rng.random_range(2..=reference.current_revision());
            reference.compact(base).unwrap();
            install(&reference, &mirror, base);
            durable_at_least = base;
        }
        for _ in 0..rng.random_range(0..60) {
            random_write(&mut rng, &reference, &mut leases);
        }
        let target = rng.random_range(mirror.current_revision()..=reference.current_revision());
        for rev in mirror.current_revision() + 1..=target {
            apply(&mirror, rev, &events_of(&reference, rev));
            if rng.random_bool(0.05) {
                mirror.flush().unwrap();
                durable_at_least = rev;
            }
        }
        let mode = if rng.random_bool(0.5) {
            CrashMode::Torn { seed: rng.random() }
        } else {
            CrashMode::Reordered { seed: rng.random() }
        };
        drop(mirror);
        let crashed = storage.crash(mode);
        let mirror = mirror_on(&crashed);
        let at = mirror.current_revision();
        assert!(
            (durable_at_least..=target).contains(&at),
            "{ctx}: reopened at {at}, durable {durable_at_least}..={target}"
        );
        assert_eq!(mirror.compact_revision(), base, "{ctx}: the base is durable");
        for rev in mirror.compact_revision().max(1)..=at {
            let want = all(&reference, rev).map(|r| RangeResult { revision: at, ..r });
            assert_eq!(all(&mirror, rev), want, "{ctx}: range at {rev}");
        }
        catch_up(&reference, &mirror);
        let hub = WatchHub::new(mirror.clone(), WatchOptions::default());
        let ref_hub = WatchHub::new(reference.clone(), WatchOptions::default());
        let from = mirror.compact_revision().max(1);
        if reference.current_revision() >= 2 {
            let current = reference.current_revision();
            assert_eq!(watch_all(&hub, from as i64, current), watch_all(&ref_hub, from as i64, current), "{ctx}");
        }
    }
}

/// Leases belong upstream: a foreign-lease store refuses lease calls without
/// writing anything, and a put naming a lease finds none.
#[test]
fn a_store_with_foreign_leases_refuses_lease_calls() {
    let storage = MemStorage::new();
    let mirror = mirror_on(&storage);
    apply(&mirror, 2, &[Ev::put("/a", "1", 2, 1, 7)]);
    let refused = |r: argus_engine::Result<()>| matches!(r, Err(Error::LeasesUpstream));
    assert!(refused(mirror.grant_lease(7, 60).map(drop)));
    assert!(refused(mirror.grant_lease(0, 60).map(drop)));
    assert!(refused(mirror.revoke_lease(7).map(drop)));
    assert!(refused(mirror.keep_alive(7).map(drop)));
    assert!(refused(mirror.lease_time_to_live(7, true).map(drop)));
    assert!(mirror.lease_ids().is_empty());
    assert_eq!(mirror.expire_leases(Instant::now() + Duration::from_secs(3600)).unwrap(), 0);
    let op = TxnOp::Put { key: b"/b".to_vec(), value: b"1".to_vec(), prev_kv: false, lease: PutLease::Attach(7) };
    assert!(matches!(mirror.txn(&[], &[op], &[]), Err(Error::LeaseNotFound)));
    assert_eq!(mirror.current_revision(), 2);
    assert_eq!(all(&mirror, 0).unwrap().kvs[0].lease, 7, "the key keeps its lease");
    assert_eq!(events_of(&mirror, 2), vec![Ev::put("/a", "1", 2, 1, 7)]);
    // Nothing about leases was written: a reopen (of the flushed log) finds none.
    mirror.flush().unwrap();
    drop(mirror);
    let mirror = mirror_on(&storage.crash(CrashMode::DropUnsynced));
    assert!(mirror.lease_ids().is_empty());
    assert_eq!(all(&mirror, 0).unwrap().kvs[0].lease, 7);
}

/// `apply_upstream_all` (a watch response of many revisions, one fsync): the same
/// state and history as one revision at a time; revisions already applied are
/// skipped, a gap stops it after the revisions before the gap.
#[test]
fn many_revisions_apply_in_one_call_with_one_wait() {
    let reference = reference();
    for i in 0..40u32 {
        reference.put(format!("/k{}", i % 7).as_bytes(), format!("v{i}").as_bytes()).unwrap();
        if i % 9 == 4 {
            reference.delete_range(format!("/k{}", i % 7).as_bytes(), b"", false).unwrap();
        }
    }
    let storage = MemStorage::new();
    let mut opts = options(true);
    opts.log.fsync = FsyncPolicy::Always;
    let open = |s: &MemStorage| Store::open_storage(Arc::new(s.clone()), opts.clone()).expect("open the mirror");
    let mirror = open(&storage);
    let last = reference.current_revision();
    let revs: Vec<(u64, Vec<Ev>)> = (2..=last).map(|r| (r, events_of(&reference, r))).collect();
    let ups: Vec<(u64, Vec<UpstreamEvent<'_>>)> = revs.iter().map(|(r, e)| (*r, upstream(e))).collect();
    let as_slices = |from: usize, to: usize| ups[from..to].iter().map(|(r, e)| (*r, e.as_slice()));
    // The first half in one call.
    let half = ups.len() / 2;
    assert_eq!(mirror.apply_upstream_all(as_slices(0, half)).unwrap(), half);
    assert_eq!(mirror.current_revision(), ups[half - 1].0);
    // Again from the start (a member sending what the mirror has): only the new
    // ones count; then a gap after two new ones stops it there.
    let n = mirror.apply_upstream_all(as_slices(0, half + 2)).unwrap();
    assert_eq!(n, 2);
    let gap = ups[half + 3..].iter().map(|(r, e)| (*r, e.as_slice()));
    match mirror.apply_upstream_all(gap) {
        Err(Error::UpstreamOrder { expected, got }) => {
            assert_eq!((expected, got), (ups[half + 2].0, ups[half + 3].0));
        }
        other => panic!("a gap must be refused, got {other:?}"),
    }
    assert_eq!(mirror.current_revision(), ups[half + 1].0, "nothing after the gap was written");
    assert_eq!(mirror.apply_upstream_all(as_slices(half + 2, ups.len())).unwrap(), ups.len() - half - 2);
    assert_eq!(mirror.current_revision(), last);
    for rev in [2, last / 2, last] {
        assert_eq!(all(&mirror, rev), all(&reference, rev), "range at {rev}");
        assert_eq!(events_of(&mirror, rev), events_of(&reference, rev), "events of {rev}");
    }
    // Durable (`fsync=always`): a crash that drops what was not synced keeps every
    // revision the calls returned.
    drop(mirror);
    let mirror = open(&storage.crash(CrashMode::DropUnsynced));
    assert_eq!(mirror.current_revision(), last);
}
