//! Loom models of the engine's concurrent hand-offs, on the engine's own code.
//!
//! Run with `scripts/loom.sh` (`RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2
//! cargo test -p argus-loom-tests --release`). Every model has a twin: built with
//! `ARGUS_BUG=<name>` (`--cfg argus_bug="<name>"`, the name in its `cfg_attr`; see
//! `engine/build.rs`), the engine carries one realistic seeded bug and the same model
//! must fail (`should_panic`). `scripts/loom.sh` runs each model plain and each twin
//! with its bug.
#![cfg(loom)]

use std::sync::Arc;

use argus_engine::log::record::RecordKind;
use argus_engine::log::{Event, FsyncPolicy, LogOptions, MemStorage, RevisionLog};
use argus_engine::store::{Store, StoreOptions};
use argus_engine::watch::{
    Item, ManualNotifier, WatchController, WatchHub, WatchOptions, WatchReceiver, WatchRequest, WatchResponse,
};
use loom::thread;

mod common;
use common::model;

fn store() -> Store {
    let mut opts = StoreOptions::default();
    opts.log.fsync = FsyncPolicy::Never;
    opts.log.segment_size = 64 * 1024;
    opts.max_request_bytes = 1024;
    opts.max_key_bytes = 64;
    opts.max_value_bytes = 512;
    opts.max_txn_ops = 4;
    Store::open_storage(Arc::new(MemStorage::new()), opts).unwrap()
}

fn hub(store: &Store, capacity: usize) -> (WatchHub, ManualNotifier) {
    let mut o = WatchOptions::default();
    o.stream_capacity = capacity;
    o.index_shards = 2;
    WatchHub::manual(store.clone(), o)
}

/// Drains `rx` while stepping the notifier until nothing moves; returns all
/// responses received.
fn drain(rx: &mut WatchReceiver, n: &mut ManualNotifier) -> Vec<WatchResponse> {
    let mut out = Vec::new();
    for _ in 0..12 {
        let mut moved = n.step();
        while let Some(r) = rx.try_recv() {
            out.push(r);
            moved = true;
        }
        if !moved {
            break;
        }
    }
    out
}

fn event_revs(rs: &[WatchResponse]) -> Vec<u64> {
    rs.iter().flat_map(|r| r.events().map(|e| e.kv.mod_revision).collect::<Vec<_>>()).collect()
}

/// Model 1: the writer appends and publishes `committed_rev` while a reader reads
/// everything up to the committed revision: the reader never sees a committed
/// revision whose records are missing or incomplete.
#[test]
#[cfg_attr(argus_bug = "publish-before-write", should_panic(expected = "committed"))]
fn log_append_and_publish_race_a_reader() {
    model(|| {
        let opts = LogOptions { fsync: FsyncPolicy::Never, segment_size: 4096, ..LogOptions::default() };
        let (log, _) = RevisionLog::open(Arc::new(MemStorage::new()), opts).unwrap();
        let writer = log.clone();
        let t = thread::spawn(move || {
            for rev in 2..=3u64 {
                let v = rev.to_le_bytes();
                let ev = [Event {
                    kind: RecordKind::Put,
                    key: b"k",
                    value: &v,
                    create_revision: 2,
                    version: rev - 1,
                    lease: 0,
                }];
                let ticket = writer.append(rev, &ev, |_| {}).unwrap();
                writer.wait_durable(ticket).unwrap();
            }
        });
        let mut last = 1;
        for _ in 0..2 {
            let r = log.reader();
            let c = r.committed_rev();
            assert!(c >= last, "committed_rev went back");
            last = c;
            let got: Vec<(u64, u64)> = r
                .records(2, c)
                .map(|x| {
                    let (_, rec) = x.expect("a committed record decodes");
                    assert!(rec.last, "each revision here has one record");
                    (rec.main, u64::from_le_bytes(rec.value.try_into().unwrap()))
                })
                .collect();
            let want: Vec<(u64, u64)> = (2..=c).map(|r| (r, r)).collect();
            assert_eq!(got, want, "every committed revision is readable, whole");
        }
        t.join().unwrap();
    });
}

/// A store, a hub whose streams hold `capacity` deliveries, and one stream with a
/// synced watcher on `k` (its `created` response queued, not yet received).
fn watcher_on_k(capacity: usize) -> (Store, WatchHub, ManualNotifier, WatchController, WatchReceiver, i64) {
    let store = store();
    let (hub, mut n) = hub(&store, capacity);
    let (ctl, rx) = hub.stream().split();
    let id = ctl.watch(WatchRequest::key("k")).unwrap();
    n.settle(8);
    (store, hub, n, ctl, rx, id)
}

/// A hub whose one stream holds one delivery, a watcher on `k` (its `created`
/// received), and revisions 2 and 3 written but not yet fanned out.
fn one_watcher_two_puts() -> (WatchHub, ManualNotifier, WatchController, WatchReceiver, i64) {
    let (store, hub, n, ctl, mut rx, id) = watcher_on_k(1);
    assert!(rx.try_recv().unwrap().created);
    store.put(b"k", b"2").unwrap();
    store.put(b"k", b"3").unwrap();
    (hub, n, ctl, rx, id)
}

/// Model 2a: a delivery finds the stream full (the watcher becomes a victim) while
/// the consumer drains it: the victim is retried and gets every revision exactly
/// once, in order.
#[test]
#[cfg_attr(argus_bug = "lost-victim-retry", should_panic(expected = "none lost"))]
fn victim_retry_races_the_consumer_draining() {
    model(|| {
        let (hub, mut n, ctl, mut rx, id) = one_watcher_two_puts();
        let consumer = thread::spawn(move || {
            let mut got = Vec::new();
            for _ in 0..2 {
                if let Some(r) = rx.try_recv() {
                    got.push(r);
                }
                thread::yield_now();
            }
            (rx, got)
        });
        n.step(); // delivers 2 (filling the stream); 3 finds it full: a victim
        let (mut rx, mut got) = consumer.join().unwrap();
        got.extend(drain(&mut rx, &mut n));
        assert!(got.iter().all(|r| r.watch_id == id));
        assert_eq!(event_revs(&got), vec![2, 3], "each revision once, in order, none lost: {:?}", hub.metrics());
        drop(ctl);
    });
}

/// Model 2b: a victim's retry races a cancel: no event is delivered after the
/// canceled response, and what was delivered has no gap or duplicate.
#[test]
fn victim_retry_races_cancel() {
    model(|| {
        let (_hub, mut n, ctl, mut rx, id) = one_watcher_two_puts();
        n.step(); // 2 queued, the watcher is a victim at 3
        let canceller = thread::spawn(move || {
            ctl.cancel(id).unwrap();
            ctl
        });
        let mut got = Vec::new();
        for _ in 0..3 {
            n.step();
            if let Some(r) = rx.try_recv() {
                got.push(r);
            }
        }
        let ctl = canceller.join().unwrap();
        got.extend(drain(&mut rx, &mut n));
        let cancel_at = got.iter().position(|r| r.canceled).expect("the cancel is answered");
        assert!(got[cancel_at + 1..].iter().all(|r| r.events.is_empty()), "no event after the cancel: {got:?}");
        let revs = event_revs(&got);
        assert!(revs == [2] || revs == [2, 3], "a prefix of the history, no gap: {revs:?}");
        drop(ctl);
    });
}

/// Model 3: a watcher started in the past is caught up while a writer commits and
/// the notifier moves on: it joins the synced index exactly at the notifier's
/// position, so it gets every revision once.
#[test]
#[cfg_attr(argus_bug = "early-handoff", should_panic(expected = "no revision skipped"))]
fn unsynced_to_synced_handoff_races_the_notifier() {
    model(|| {
        let store = store();
        store.put(b"k", b"2").unwrap();
        let (hub, mut n) = hub(&store, 8);
        let (ctl, mut rx) = hub.stream().split();
        ctl.watch(WatchRequest::key("k").from_revision(2)).unwrap();
        let writer = {
            let store = store.clone();
            thread::spawn(move || {
                store.put(b"k", b"3").unwrap();
            })
        };
        for _ in 0..3 {
            n.step();
        }
        writer.join().unwrap();
        let got = drain(&mut rx, &mut n);
        assert!(got[0].created);
        assert_eq!(event_revs(&got), vec![2, 3], "no revision skipped or repeated at the hand-off");
        drop(ctl);
    });
}

/// Model 4: a catch-up job runs on its own thread while its group is canceled and
/// the group's slot is reused by a new watcher's group, which has a job of its own:
/// the old job's result never reaches the new group (the generation of the slab
/// handle tells them apart), and the new watcher gets exactly its own events.
#[test]
#[cfg_attr(argus_bug = "stale-handle", should_panic(expected = "only its own key"))]
fn catchup_result_races_a_cancel_that_reuses_the_group_slot() {
    model(|| {
        let store = store();
        store.put(b"a", b"2").unwrap();
        store.put(b"b", b"3").unwrap();
        let (hub, mut n) = hub(&store, 8);
        let (ctl, mut rx) = hub.stream().split();
        let old = ctl.watch(WatchRequest::key("a").from_revision(2)).unwrap();
        n.step_without_jobs(); // registers it (unsynced) and starts its job
        let jobs = n.take_jobs();
        assert_eq!(jobs.len(), 1);
        let job = thread::spawn(move || {
            for j in jobs {
                j();
            }
        });
        ctl.cancel(old).unwrap();
        let new = ctl.watch(WatchRequest::key("b").from_revision(2)).unwrap();
        for _ in 0..3 {
            n.step_without_jobs();
            for j in n.take_jobs() {
                j();
            }
        }
        job.join().unwrap();
        let got = drain(&mut rx, &mut n);
        for r in &got {
            for e in r.events() {
                if r.watch_id == new {
                    assert_eq!(e.kv.key, b"b", "the new watcher gets only its own key: {got:?}");
                }
            }
        }
        let new_revs: Vec<u64> = got
            .iter()
            .filter(|r| r.watch_id == new)
            .flat_map(|r| r.events().map(|e| e.kv.mod_revision).collect::<Vec<_>>())
            .collect();
        assert_eq!(new_revs, vec![3], "its revision once");
        let cancel_at = got.iter().position(|r| r.canceled && r.watch_id == old).expect("the cancel is answered");
        assert!(got[cancel_at..].iter().all(|r| r.watch_id != old || r.events.is_empty()), "nothing after canceled");
        drop(ctl);
    });
}

/// Model 6: the consumer blocks for the next item while the notifier fans a
/// revision out to its stream: whatever the interleaving of the push and wake with
/// the consumer's pop, waker registration and park, the consumer wakes with the
/// delivery (a lost wake-up would leave it parked forever: loom reports a deadlock).
#[test]
#[cfg_attr(argus_bug = "lost-wakeup", should_panic(expected = "deadlock"))]
fn a_blocked_consumer_is_woken_by_a_delivery() {
    model(|| {
        let (store, hub, mut n, ctl, mut rx, _) = watcher_on_k(8);
        assert!(rx.try_recv().unwrap().created);
        store.put(b"k", b"2").unwrap();
        let consumer = thread::spawn(move || {
            let item = rx.recv_item();
            (rx, item)
        });
        n.step();
        let (rx, item) = consumer.join().unwrap();
        match item {
            Some(Item::Events(d)) => assert_eq!(d.event_count(), 1),
            other => panic!("expected the delivery, got {other:?}"),
        }
        drop((rx, ctl, hub));
    });
}

/// Model 5: a progress request races a write being notified: a bookmark at `R` is
/// never queued before an event at or below `R`.
#[test]
#[cfg_attr(argus_bug = "progress-ahead", should_panic(expected = "bookmark at"))]
fn progress_request_races_events() {
    model(|| {
        let (store, hub, mut n, ctl, mut rx, _) = watcher_on_k(8);
        let writer = {
            let store = store.clone();
            thread::spawn(move || {
                store.put(b"k", b"2").unwrap();
            })
        };
        let requester = thread::spawn(move || {
            ctl.request_progress_all();
            ctl
        });
        for _ in 0..2 {
            n.step();
        }
        writer.join().unwrap();
        let ctl = requester.join().unwrap();
        let got = drain(&mut rx, &mut n);
        let mut delivered = 0;
        for r in &got {
            if r.is_progress() {
                assert!(r.revision <= delivered.max(1), "bookmark at {} before its events were delivered", r.revision);
            }
            for e in r.events() {
                delivered = e.kv.mod_revision;
            }
        }
        assert_eq!(event_revs(&got), vec![2]);
        drop(ctl);
    });
}
