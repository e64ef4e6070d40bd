//! Behaviour tests of the watch engine, one etcd semantic each. The randomized
//! guarantee tests live in `engine/tests/watch_random.rs`.

use std::time::Duration;

use super::*;
use crate::log::{FsyncPolicy, MemStorage};
use crate::store::{PutLease, Store, StoreOptions};
use crate::sync::Arc;

const T: Duration = Duration::from_secs(10);

fn store() -> Store {
    let mut opts = StoreOptions::default();
    opts.log.fsync = FsyncPolicy::Never;
    Store::open_storage(Arc::new(MemStorage::new()), opts).unwrap()
}

/// Waits until the notifier has `n` synced watchers (registration is asynchronous:
/// a watcher registered after some writes first catches up, which is correct but
/// not what a test of the synced path wants).
fn wait_synced(hub: &WatchHub, n: u64) {
    let deadline = std::time::Instant::now() + T;
    while hub.metrics().synced != n {
        assert!(std::time::Instant::now() < deadline, "{:?}", hub.metrics());
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn next(s: &mut WatchStream) -> WatchResponse {
    s.recv_timeout(T).expect("a response within 10 s")
}

/// Receives until `n` events arrived (skipping progress), returning (rev, key, value).
fn events(s: &mut WatchStream, n: usize) -> Vec<(u64, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    while out.len() < n {
        let r = next(s);
        assert!(!r.canceled, "unexpected cancel {r:?}");
        for e in r.events() {
            out.push((e.kv.mod_revision, e.kv.key.clone(), e.kv.value.clone()));
        }
    }
    out
}

#[test]
fn created_precedes_events_and_prefix_watch_sees_only_its_prefix() {
    let st = store();
    let hub = WatchHub::new(st.clone(), WatchOptions::default());
    let mut s = hub.stream();
    let id = s.watch(WatchRequest::prefix("/a/")).unwrap();
    let c = next(&mut s);
    assert!(c.created && c.watch_id == id && c.revision == 1);
    st.put(b"/b/x", b"no").unwrap();
    st.put(b"/a/1", b"yes").unwrap();
    let got = events(&mut s, 1);
    assert_eq!(got, vec![(3, b"/a/1".to_vec(), b"yes".to_vec())]);
}

#[test]
fn past_start_catches_up_then_follows_live() {
    let st = store();
    for i in 0..50u32 {
        st.put(format!("k{}", i % 5).as_bytes(), i.to_string().as_bytes()).unwrap();
    }
    let mut opts = WatchOptions::default();
    opts.response_max_revisions = 7; // several catch-up responses
    let hub = WatchHub::new(st.clone(), opts);
    let mut s = hub.stream();
    s.watch(WatchRequest { key: b"k".to_vec(), range_end: b"l".to_vec(), start_revision: 10, ..Default::default() })
        .unwrap();
    assert!(next(&mut s).created);
    let writer = {
        let st = st.clone();
        std::thread::spawn(move || {
            for i in 50..80u32 {
                st.put(format!("k{}", i % 5).as_bytes(), i.to_string().as_bytes()).unwrap();
            }
        })
    };
    let got = events(&mut s, 72); // revisions 10..=81
    writer.join().unwrap();
    let revs: Vec<u64> = got.iter().map(|e| e.0).collect();
    assert_eq!(revs, (10..=81).collect::<Vec<_>>());
    assert_eq!(got[0].2, b"8"); // revision 10 is the 9th put (value 8)
}

#[test]
fn duplicate_id_empty_range_and_compacted_start_are_refused_clearly() {
    let st = store();
    for _ in 0..10 {
        st.put(b"k", b"v").unwrap();
    }
    st.compact(8).unwrap();
    let hub = WatchHub::new(st.clone(), WatchOptions::default());
    let mut s = hub.stream();
    assert_eq!(s.watch(WatchRequest { watch_id: 7, ..WatchRequest::key("k") }).unwrap(), 7);
    assert_eq!(s.watch(WatchRequest { watch_id: 7, ..WatchRequest::key("k") }), Err(WatchError::DuplicateId(7)));
    let empty = WatchRequest { key: b"b".to_vec(), range_end: b"a".to_vec(), ..Default::default() };
    assert_eq!(s.watch(empty), Err(WatchError::EmptyRange));
    assert_eq!(s.watch(WatchRequest::key("")), Err(WatchError::EmptyKey));
    assert!(next(&mut s).created);
    let id = s.watch(WatchRequest::key("k").from_revision(3)).unwrap();
    let c = next(&mut s);
    assert!(c.created && c.watch_id == id);
    let x = next(&mut s);
    assert!(x.canceled && x.watch_id == id && x.compact_revision == 8, "{x:?}");
    assert_eq!((x.cancel_reason.as_str(), x.events.len()), ("", 0), "etcd 3.4 gives no reason");
    // The id is free again after the cancel.
    assert!(s.watch(WatchRequest { watch_id: id, ..WatchRequest::key("k") }).is_ok());
}

#[test]
fn filters_and_prev_kv() {
    let st = store();
    let hub = WatchHub::new(st.clone(), WatchOptions::default());
    let mut s = hub.stream();
    let puts_only = WatchRequest { filters: Filters { no_delete: true, no_put: false }, ..WatchRequest::key("k") };
    let a = s.watch(puts_only).unwrap();
    let b = s.watch(WatchRequest::key("k").with_prev_kv()).unwrap();
    next(&mut s);
    next(&mut s);
    st.put(b"k", b"1").unwrap();
    st.put(b"k", b"2").unwrap();
    st.delete_range(b"k", b"", false).unwrap();
    let mut seen_a = Vec::new();
    let mut seen_b = Vec::new();
    while seen_b.len() < 3 {
        let r = next(&mut s);
        for e in r.events() {
            if r.watch_id == a {
                assert!(e.prev_kv.is_none(), "prev_kv not asked for");
                seen_a.push(e.kind);
            } else {
                assert_eq!(r.watch_id, b);
                seen_b.push((e.kind, e.prev_kv.map(|p| p.value)));
            }
        }
    }
    assert_eq!(
        seen_b,
        vec![(EventKind::Put, None), (EventKind::Put, Some(b"1".to_vec())), (EventKind::Delete, Some(b"2".to_vec()))]
    );
    assert!(seen_a.iter().all(|k| *k == EventKind::Put));
}

/// etcd 3.4 sends no prev_kv with a create event (`isCreateEvent`: a PUT whose
/// create revision is its revision), even when the key existed before the revision:
/// a txn may delete a key (range end "\0") and put it again in one revision.
#[test]
fn a_create_event_has_no_prev_kv_even_after_a_delete_in_its_revision() {
    use crate::store::TxnOp;
    let st = store();
    st.put(b"k", b"old").unwrap(); // 2
    let hub = WatchHub::new(st.clone(), WatchOptions::default());
    let mut s = hub.stream();
    s.watch(WatchRequest::key("k").with_prev_kv()).unwrap();
    assert!(next(&mut s).created);
    let ops = [
        TxnOp::DeleteRange { key: b"a".to_vec(), range_end: b"\0".to_vec(), prev_kv: false },
        TxnOp::Put { key: b"k".to_vec(), value: b"new".to_vec(), prev_kv: false, lease: PutLease::None },
    ];
    assert_eq!(st.txn(&[], &ops, &[]).unwrap().revision, 3);
    let r = next(&mut s);
    let got: Vec<(EventKind, u64, Option<Vec<u8>>)> =
        r.events().map(|e| (e.kind, e.kv.version, e.prev_kv.map(|p| p.value))).collect();
    assert_eq!(got, [(EventKind::Delete, 0, Some(b"old".to_vec())), (EventKind::Put, 1, None)]);
}

#[test]
fn a_slow_stream_becomes_victim_and_loses_nothing() {
    let st = store();
    let mut opts = WatchOptions::default();
    opts.stream_capacity = 4;
    let hub = WatchHub::new(st.clone(), opts);
    let mut slow = hub.stream();
    let mut fast = hub.stream();
    slow.watch(WatchRequest::prefix("k")).unwrap();
    fast.watch(WatchRequest::prefix("k")).unwrap();
    next(&mut slow);
    next(&mut fast);
    wait_synced(&hub, 2);
    for i in 0..300u32 {
        st.put(b"k", i.to_string().as_bytes()).unwrap();
    }
    // The fast stream keeps up; the slow one reads nothing until the writes end.
    let f = events(&mut fast, 300);
    assert_eq!(f.len(), 300);
    assert!(hub.metrics().victims >= 1 || hub.metrics().unsynced >= 1, "{:?}", hub.metrics());
    let got = events(&mut slow, 300);
    let revs: Vec<u64> = got.iter().map(|e| e.0).collect();
    assert_eq!(revs, (2..=301).collect::<Vec<_>>(), "every revision once, in order");
    // Once drained and caught up it is synced again and follows live writes.
    st.put(b"k", b"live").unwrap();
    assert_eq!(events(&mut slow, 1)[0].2, b"live");
    let m = hub.metrics();
    assert_eq!((m.victims, m.unsynced, m.synced), (0, 0, 2), "{m:?}");
}

#[test]
fn cancel_ends_events_and_progress_marks_delivery() {
    let st = store();
    let hub = WatchHub::new(st.clone(), WatchOptions::default());
    let mut s = hub.stream();
    let id = s.watch(WatchRequest::key("k")).unwrap();
    next(&mut s);
    wait_synced(&hub, 1);
    st.put(b"k", b"1").unwrap();
    s.request_progress_all();
    let mut got_event = false;
    loop {
        let r = next(&mut s);
        if r.is_progress() {
            assert_eq!(r.watch_id, -1);
            if r.revision >= 2 {
                assert!(got_event, "a bookmark at 2 follows the event of revision 2");
                break;
            }
            s.request_progress_all(); // an earlier bookmark; ask again
            continue;
        }
        got_event = true;
    }
    s.cancel(id).unwrap();
    let c = next(&mut s);
    assert!(c.canceled && c.watch_id == id);
    st.put(b"k", b"2").unwrap();
    loop {
        s.request_progress_all();
        let r = next(&mut s);
        assert!(r.is_progress(), "no event after cancel: {r:?}");
        if r.revision == 3 {
            break;
        }
    }
    assert_eq!(s.cancel(id), Err(WatchError::UnknownId(id)));
}

#[test]
fn an_unsynced_watcher_does_not_withhold_the_others_bookmarks() {
    let st = store();
    for i in 0..2000u32 {
        st.put(b"old", i.to_string().as_bytes()).unwrap();
    }
    let mut opts = WatchOptions::default();
    opts.stream_capacity = 2;
    let hub = WatchHub::new(st.clone(), opts);
    let mut s = hub.stream();
    let live = s.watch(WatchRequest::key("new")).unwrap();
    let behind = s.watch(WatchRequest::key("old").from_revision(2)).unwrap();
    s.request_progress_all();
    let mut live_bookmark = false;
    let mut behind_events = 0;
    let mut behind_bookmark_after = None;
    while behind_bookmark_after.is_none() {
        let r = next(&mut s);
        if r.is_progress() && r.watch_id == live {
            live_bookmark = true;
        }
        if r.watch_id == behind {
            behind_events += r.event_count();
            if r.is_progress() {
                behind_bookmark_after = Some(behind_events);
            }
        }
        assert!(!(r.is_progress() && r.watch_id == -1), "stream-wide bookmark while one watcher is unsynced");
    }
    assert!(live_bookmark, "the synced watcher got its bookmark");
    assert_eq!(behind_bookmark_after, Some(2000), "the catching-up watcher's bookmark follows all its events");
}

#[test]
fn future_start_waits_and_periodic_progress_reports_idle_watchers() {
    let st = store();
    let mut opts = WatchOptions::default();
    opts.progress_interval = Duration::from_millis(50);
    let hub = WatchHub::new(st.clone(), opts);
    let mut s = hub.stream();
    let id = s.watch(WatchRequest { progress_notify: true, ..WatchRequest::key("k").from_revision(4) }).unwrap();
    next(&mut s);
    st.put(b"k", b"2").unwrap();
    st.put(b"k", b"3").unwrap();
    st.put(b"k", b"4").unwrap();
    let got = events(&mut s, 1);
    assert_eq!(got[0], (4, b"k".to_vec(), b"4".to_vec()), "events before the start are not sent");
    let r = next(&mut s);
    assert!(r.is_progress() && r.watch_id == id && r.revision >= 4, "{r:?}");
}

#[test]
fn closing_a_stream_frees_its_watchers() {
    let st = store();
    let hub = WatchHub::new(st.clone(), WatchOptions::default());
    let mut s = hub.stream();
    for i in 0..10 {
        s.watch(WatchRequest::key(format!("k{i}"))).unwrap();
    }
    for _ in 0..10 {
        next(&mut s);
    }
    s.close();
    while s.recv_timeout(T).is_some() {}
    let deadline = std::time::Instant::now() + T;
    while hub.metrics().watchers != 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!((hub.metrics().watchers, hub.metrics().streams), (0, 0));
}

/// Receives items until one carries events (skipping control responses).
fn next_delivery(rx: &mut WatchStream) -> Delivery {
    let deadline = std::time::Instant::now() + T;
    loop {
        assert!(std::time::Instant::now() < deadline, "no delivery within 10 s");
        match rx.recv_item_timeout(T) {
            Some(Item::Events(d)) => return d,
            Some(_) => {}
            None => panic!("stream ended"),
        }
    }
}

/// Every (id, prev_kv, event keys) a delivery stands for, sorted by id.
fn expand(d: &Delivery) -> Vec<(WatchId, bool, Vec<Vec<u8>>)> {
    let mut out = Vec::new();
    for p in d.parts() {
        let keys: Vec<Vec<u8>> = p.events().map(|e| e.kv.key).collect();
        for &id in p.ids().iter() {
            out.push((id, p.prev_kv(), keys.clone()));
        }
    }
    out.sort();
    out
}

#[test]
fn one_delivery_per_stream_per_revision_names_every_watcher_once() {
    let st = store();
    let hub = WatchHub::new(st.clone(), WatchOptions::default());
    let mut s = hub.stream();
    let mut plain = Vec::new();
    for _ in 0..1000 {
        plain.push(s.watch(WatchRequest::prefix("/p/")).unwrap());
    }
    let mut prev = Vec::new();
    for _ in 0..20 {
        prev.push(s.watch(WatchRequest::prefix("/p/").with_prev_kv()).unwrap());
    }
    let mut exact = Vec::new();
    for _ in 0..50 {
        exact.push(s.watch(WatchRequest::key("/p/a")).unwrap());
    }
    let mut no_put = Vec::new();
    for _ in 0..10 {
        let mut r = WatchRequest::prefix("/p/");
        r.filters.no_put = true;
        no_put.push(s.watch(r).unwrap());
    }
    wait_synced(&hub, 1080);
    st.put(b"/p/a", b"1").unwrap();
    let d = next_delivery(&mut s);
    // Groups, not watchers: the 1000 + 50 + 20 watchers are three parts.
    assert_eq!(d.parts().len(), 3, "{:?}", d.parts().iter().map(|p| p.ids().len()).collect::<Vec<_>>());
    assert_eq!(d.response_count(), 1070);
    let mut want: Vec<(WatchId, bool, Vec<Vec<u8>>)> = Vec::new();
    for &id in plain.iter().chain(&exact) {
        want.push((id, false, vec![b"/p/a".to_vec()]));
    }
    for &id in &prev {
        want.push((id, true, vec![b"/p/a".to_vec()]));
    }
    want.sort();
    assert_eq!(expand(&d), want);
    // A txn of a put and a delete under the prefix: NOPUT watchers get only the delete.
    use crate::store::TxnOp;
    st.put(b"/p/b", b"x").unwrap();
    let _ = next_delivery(&mut s);
    let put = TxnOp::Put { key: b"/p/c".to_vec(), value: b"2".to_vec(), prev_kv: false, lease: PutLease::None };
    let del = TxnOp::DeleteRange { key: b"/p/b".to_vec(), range_end: vec![], prev_kv: false };
    st.txn(&[], &[put, del], &[]).unwrap();
    let d = next_delivery(&mut s);
    let got = expand(&d);
    // Every prefix watcher, none of the exact ones (neither key is theirs).
    assert_eq!(got.len(), 1030);
    for (id, _, keys) in &got {
        assert!(!exact.contains(id));
        let want: Vec<Vec<u8>> =
            if no_put.contains(id) { vec![b"/p/b".to_vec()] } else { vec![b"/p/c".to_vec(), b"/p/b".to_vec()] };
        assert_eq!(keys, &want, "watcher {id}");
    }
}

#[test]
fn watchers_that_caught_up_separately_share_one_group_once_synced() {
    let st = store();
    for i in 0..200u32 {
        st.put(format!("/q/{}", i % 7).as_bytes(), b"v").unwrap();
    }
    let mut opts = WatchOptions::default();
    opts.catchup_batch = 3; // many small jobs
    opts.response_max_revisions = 17;
    let hub = WatchHub::new(st.clone(), opts);
    let mut s = hub.stream();
    let mut ids = Vec::new();
    for i in 0..100 {
        ids.push(s.watch(WatchRequest::prefix("/q/").from_revision(2 + i)).unwrap());
    }
    let last = st.put(b"/q/x", b"live").unwrap().revision;
    // Everything each watcher gets, in order, up to the live put.
    let mut got: std::collections::HashMap<WatchId, Vec<u64>> = std::collections::HashMap::new();
    let mut live_parts = None;
    while got.values().filter(|v| v.last() == Some(&last)).count() < 100 {
        let d = next_delivery(&mut s);
        for p in d.parts() {
            let revs: Vec<u64> = p.events().map(|e| e.kv.mod_revision).collect();
            for &id in p.ids().iter() {
                got.entry(id).or_default().extend(&revs);
            }
            if revs == [last] {
                live_parts = Some(d.parts().len());
            }
        }
    }
    for (i, id) in ids.iter().enumerate() {
        let want: Vec<u64> = (2 + i as u64..=last).collect();
        assert_eq!(got[id], want, "watcher {id}");
    }
    assert!(live_parts.is_some());
    // Once synced, the 100 watchers are one group again: one part for all.
    wait_synced(&hub, 100);
    st.put(b"/q/y", b"again").unwrap();
    let d = next_delivery(&mut s);
    assert_eq!((d.parts().len(), d.response_count()), (1, 100));
}

#[test]
fn a_canceled_member_leaves_its_group_and_gets_nothing_after_canceled() {
    let st = store();
    let hub = WatchHub::new(st.clone(), WatchOptions::default());
    let mut s = hub.stream();
    let a = s.watch(WatchRequest::key("k")).unwrap();
    let b = s.watch(WatchRequest::key("k")).unwrap();
    let c = s.watch(WatchRequest::key("k")).unwrap();
    wait_synced(&hub, 3);
    s.cancel(a).unwrap();
    let mut canceled = false;
    while !canceled {
        let r = next(&mut s);
        canceled = r.canceled && r.watch_id == a;
    }
    st.put(b"k", b"1").unwrap();
    let d = next_delivery(&mut s);
    let mut got: Vec<WatchId> = d.parts().iter().flat_map(|p| p.ids().to_vec()).collect();
    got.sort();
    assert_eq!(got, vec![b, c]);
    assert_eq!(hub.metrics().watchers, 2);
}

#[test]
fn a_future_start_is_parked_and_counts_from_its_revision() {
    let st = store();
    let hub = WatchHub::new(st.clone(), WatchOptions::default());
    let mut s = hub.stream();
    let now = st.current_revision();
    let id = s.watch(WatchRequest::key("f").from_revision(now as i64 + 3)).unwrap();
    let early = s.watch(WatchRequest::key("f")).unwrap();
    wait_synced(&hub, 2);
    for v in [b"1", b"2", b"3", b"4"] {
        st.put(b"f", v).unwrap();
    }
    let mut got: std::collections::HashMap<WatchId, Vec<u64>> = std::collections::HashMap::new();
    while got.get(&id).map_or(0, Vec::len) < 2 || got.get(&early).map_or(0, Vec::len) < 4 {
        let r = next(&mut s);
        got.entry(r.watch_id).or_default().extend(r.events().map(|e| e.kv.mod_revision));
    }
    assert_eq!(got[&early], vec![now + 1, now + 2, now + 3, now + 4]);
    assert_eq!(got[&id], vec![now + 3, now + 4]);
}

#[test]
fn items_and_per_watcher_responses_can_be_mixed() {
    let st = store();
    let hub = WatchHub::new(st.clone(), WatchOptions::default());
    let mut s = hub.stream();
    let ids: Vec<WatchId> = (0..5).map(|_| s.watch(WatchRequest::key("m")).unwrap()).collect();
    wait_synced(&hub, 5);
    for _ in 0..5 {
        assert!(next(&mut s).created);
    }
    st.put(b"m", b"1").unwrap();
    // Two per-watcher responses, then the rest of the same delivery as one item.
    let first: Vec<WatchId> = (0..2).map(|_| next(&mut s).watch_id).collect();
    let Some(Item::Events(rest)) = s.recv_item_timeout(T) else { panic!("the rest of the delivery") };
    let mut all: Vec<WatchId> = first.into_iter().chain(rest.parts().iter().flat_map(|p| p.ids().to_vec())).collect();
    all.sort();
    assert_eq!(all, ids);
    assert_eq!(rest.event_count(), 3);
}

#[test]
fn commits_do_not_wake_a_hub_that_nobody_watches() {
    let st = store();
    let hub = WatchHub::new(st.clone(), WatchOptions::default());
    let turns = hub.metrics().notifier_turns;
    for i in 0..2000u32 {
        st.put(b"x", i.to_string().as_bytes()).unwrap();
    }
    // Without watchers the notifier runs only on its idle timer (every 100 ms), not
    // per commit; 2000 puts take far less than 100 s even on a loaded machine.
    let woke = hub.metrics().notifier_turns - turns;
    assert!(woke < 200, "{woke} notifier turns for 2000 unwatched commits");
    // A watcher still sees the next write at once.
    let mut s = hub.stream();
    s.watch(WatchRequest::key("x")).unwrap();
    wait_synced(&hub, 1);
    st.put(b"x", b"seen").unwrap();
    assert_eq!(events(&mut s, 1)[0].2, b"seen");
}

#[test]
fn shutdown_ends_every_stream_after_what_it_queued() {
    let st = store();
    let hub = WatchHub::new(st.clone(), WatchOptions::default());
    let mut s = hub.stream();
    s.watch(WatchRequest::key("s")).unwrap();
    wait_synced(&hub, 1);
    st.put(b"s", b"1").unwrap();
    while hub.metrics().notified_revision < st.current_revision() {
        std::thread::sleep(Duration::from_millis(1));
    }
    hub.shutdown();
    assert!(hub.is_shut_down());
    let mut got = Vec::new();
    while let Some(r) = s.recv_timeout(T) {
        got.push(r);
    }
    assert!(got[0].created && got[1].events().next().is_some(), "{got:?}");
    assert_eq!(got.len(), 2, "then the stream ends: {got:?}");
    assert_eq!(s.watch(WatchRequest::key("t")), Err(WatchError::Closed));
}

#[test]
fn watchers_starting_where_a_group_waits_join_it() {
    let st = store();
    for i in 0..10u32 {
        st.put(b"w", i.to_string().as_bytes()).unwrap();
    }
    let mut opts = WatchOptions::default();
    opts.catchup_paused = true; // they stay where they start
    let hub = WatchHub::new(st.clone(), opts);
    let s = hub.stream();
    let wait_watchers = |n: u64| {
        let deadline = std::time::Instant::now() + T;
        while hub.metrics().watchers != n {
            assert!(std::time::Instant::now() < deadline, "{:?}", hub.metrics());
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    // One at a time (each registered in its own notifier turn), from one revision.
    for n in 1..=20 {
        s.watch(WatchRequest::key("w").from_revision(3)).unwrap();
        wait_watchers(n);
    }
    assert_eq!(hub.metrics().groups, 1, "{:?}", hub.metrics());
    // Other starts, filters or keys are other groups.
    s.watch(WatchRequest::key("w").from_revision(4)).unwrap();
    s.watch(WatchRequest::key("w").from_revision(3).with_prev_kv()).unwrap();
    s.watch(WatchRequest::key("v").from_revision(3)).unwrap();
    wait_watchers(23);
    let m = hub.metrics();
    assert_eq!((m.groups, m.unsynced), (4, 23), "{m:?}");
    // A cancel leaves the group; the last one takes it away.
    drop(s);
    let deadline = std::time::Instant::now() + T;
    while hub.metrics().groups != 0 {
        assert!(std::time::Instant::now() < deadline, "{:?}", hub.metrics());
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Receives until watcher `id`'s `canceled` response (skipping everything else).
fn until_canceled(s: &mut WatchStream, id: WatchId) -> WatchResponse {
    loop {
        let r = next(s);
        if r.canceled && r.watch_id == id {
            return r;
        }
    }
}

/// Watchers created and canceled (and streams closed) on a store nobody writes to
/// give back everything they cost: the index's ranges and pending changes, the
/// notifier's records and lists return to what they were before, with no write to
/// make the notifier apply them. (Before, these changes waited for the next
/// revision: 300k create/cancel cycles on an idle store kept about 52 MB.)
#[test]
fn watchers_created_and_canceled_without_writes_give_everything_back() {
    let st = store();
    let hub = WatchHub::new(st.clone(), WatchOptions::default());
    let mut s = hub.stream();
    // One long-lived watcher of each kind keeps the records' tables non-empty (an
    // empty table gives its memory back by itself).
    s.watch(WatchRequest::prefix("/keep/")).unwrap();
    s.watch(WatchRequest::key("keep")).unwrap();
    assert!(next(&mut s).created && next(&mut s).created);
    let base = hub.notifier_stats();
    let base_metrics = hub.metrics();
    assert_eq!(base.ranges, 2, "{base:?}");
    assert_eq!(base.pending_index_changes, 0, "{base:?}");

    let now = st.current_revision() as i64;
    for i in 0..500 {
        let reqs = [
            WatchRequest::prefix(format!("/p{i}/")),                        // synced range
            WatchRequest::key(format!("k{i}")),                             // synced key
            WatchRequest::prefix(format!("/f{i}/")).from_revision(now + 5), // parked
            WatchRequest::prefix(format!("/c{i}/")).from_revision(1),       // catch-up
            WatchRequest { progress_notify: true, ..WatchRequest::prefix(format!("/n{i}/")) },
        ];
        for req in reqs {
            let id = s.watch(req).unwrap();
            s.cancel(id).unwrap();
            until_canceled(&mut s, id);
        }
    }
    // A stream closed with its watchers in place.
    let mut other = hub.stream();
    for i in 0..200 {
        other.watch(WatchRequest::prefix(format!("/o{i}/"))).unwrap();
        other.watch(WatchRequest::prefix(format!("/of{i}/")).from_revision(now + 3)).unwrap();
    }
    for _ in 0..400 {
        assert!(next(&mut other).created);
    }
    other.close();
    while other.recv_timeout(T).is_some() {}

    assert_eq!(st.current_revision() as i64, now, "nothing was written");
    // Requests are answered in order: the stats come after every cancel and close.
    let after = hub.notifier_stats();
    assert_eq!(after, base, "the notifier gives back what the watchers cost");
    let m = hub.metrics();
    assert_eq!(
        (m.watchers, m.streams, m.groups, m.synced, m.unsynced),
        (base_metrics.watchers, base_metrics.streams, base_metrics.groups, base_metrics.synced, base_metrics.unsynced)
    );
}

/// A catch-up job that cannot read the log cancels the watchers it serves with the
/// reason; it never moves them past what it did not read (before, they skipped
/// the unreadable revisions silently and went on with later ones).
#[test]
fn a_catch_up_read_error_cancels_with_the_reason_and_skips_nothing() {
    let mem = Arc::new(MemStorage::new());
    let mut opts = StoreOptions::default();
    opts.log.fsync = FsyncPolicy::Never;
    let st = Store::open_storage(mem.clone(), opts).unwrap();
    for i in 0..20u32 {
        let value = if i == 10 { b"corrupt-this-value".to_vec() } else { format!("v{i}").into_bytes() };
        st.put(format!("/a/{i}").as_bytes(), &value).unwrap();
    }
    let bad_rev = st.current_revision() - 9; // the 11th put
                                             // Flip a bit inside the 11th put's value: its checksum no longer matches.
    let (name, offset) = crate::log::Storage::list(&*mem)
        .unwrap()
        .into_iter()
        .find_map(|n| {
            let bytes = mem.read_file(&n)?;
            let at = bytes.windows(18).position(|w| w == b"corrupt-this-value")?;
            Some((n, at))
        })
        .expect("the value is in a segment");
    // SAFETY: nothing reads the log now: no hub exists yet, and this thread holds
    // no slice of it.
    unsafe { mem.corrupt_mapped(&name, offset + 3, 1) };

    let hub = WatchHub::new(st.clone(), WatchOptions::default());
    let mut s = hub.stream();
    let id = s.watch(WatchRequest::prefix("/a/").from_revision(2)).unwrap();
    assert!(next(&mut s).created);
    // A later write, which a watcher moved past the bad revision would receive.
    st.put(b"/a/later", b"x").unwrap();
    loop {
        let r = next(&mut s);
        for e in r.events() {
            assert!(
                e.kv.mod_revision < bad_rev,
                "revision {} delivered past the unreadable {bad_rev}",
                e.kv.mod_revision
            );
        }
        if r.canceled {
            assert_eq!(r.watch_id, id);
            assert!(r.cancel_reason.contains("cannot read the log"), "{r:?}");
            break;
        }
    }
    assert_eq!(hub.metrics().watchers, 0);
}

/// A notifier that panics is loud: the hub reports it failed with the reason,
/// every watcher is canceled with that reason and its stream ends (nobody waits
/// for a notifier that is gone), and new watches are refused.
#[test]
fn a_notifier_panic_is_reported_and_ends_every_stream() {
    let st = store();
    let hub = WatchHub::new(st.clone(), WatchOptions::default());
    assert_eq!(hub.health(), WatchHealth::Healthy);
    let mut s = hub.stream();
    let a = s.watch(WatchRequest::key("a")).unwrap();
    let b = s.watch(WatchRequest::prefix("/b/").from_revision(1)).unwrap();
    assert!(next(&mut s).created && next(&mut s).created);
    hub.inject_notifier_panic();
    let mut canceled = Vec::new();
    let started = std::time::Instant::now();
    while let Some(r) = s.recv_timeout(T) {
        if r.canceled {
            assert!(r.cancel_reason.contains("injected notifier panic"), "{r:?}");
            canceled.push(r.watch_id);
        }
    }
    assert!(started.elapsed() < T, "the stream ended (it did not time out)");
    canceled.sort();
    assert_eq!(canceled, vec![a, b]);
    match hub.health() {
        WatchHealth::Failed(why) => assert!(why.contains("injected notifier panic"), "{why}"),
        h => panic!("health {h:?}"),
    }
    assert!(hub.failure().is_some());
    // New streams end at once; new watches are refused.
    let mut late = hub.stream();
    assert_eq!(late.watch(WatchRequest::key("a")), Err(WatchError::Closed));
    let started = std::time::Instant::now();
    assert!(late.recv_timeout(T).is_none());
    assert!(started.elapsed() < T, "a stream opened after the failure ends");
}

/// `retain` judges every registered watcher of the stream on its range as the
/// client sent it (one key, a prefix, from a key on, a range; synced, parked and
/// catching up alike), cancels those refused with the reason, and the others,
/// group mates of a refused one included, go on receiving.
#[test]
fn retain_judges_each_watcher_on_its_sent_range_and_cancels_the_refused() {
    let st = store();
    st.put(b"k", b"0").unwrap();
    st.put(b"k", b"1").unwrap();
    let hub = WatchHub::new(st.clone(), WatchOptions::default());
    let mut s = hub.stream();
    let req = |key: &str, end: &[u8], start: i64| WatchRequest {
        key: key.into(),
        range_end: end.to_vec(),
        start_revision: start,
        ..Default::default()
    };
    let k1 = s.watch(req("k", b"", 0)).unwrap();
    let k2 = s.watch(req("k", b"", 0)).unwrap(); // same group as k1
    let prefix = s.watch(WatchRequest::prefix("/a/")).unwrap();
    let from = s.watch(req("m", b"\0", 0)).unwrap();
    let between = s.watch(req("b", b"d", 0)).unwrap();
    let parked = s.watch(req("k", b"", 1000)).unwrap();
    let behind = s.watch(req("k", b"l", 1)).unwrap();
    let mut other = hub.stream();
    let elsewhere = other.watch(req("k", b"", 0)).unwrap();
    for _ in 0..7 {
        assert!(next(&mut s).created);
    }
    assert!(next(&mut other).created);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let refuse = [k2, from, parked, behind];
    let log = Arc::clone(&seen);
    s.controller().retain("gone", move |id, key, end| {
        log.lock().unwrap().push((id, key.to_vec(), end.to_vec()));
        !refuse.contains(&id)
    });
    let mut canceled = Vec::new();
    while canceled.len() < refuse.len() {
        let r = next(&mut s);
        if r.canceled {
            assert_eq!(r.cancel_reason, "gone", "{r:?}");
            canceled.push(r.watch_id);
        }
    }
    canceled.sort();
    let mut want = refuse.to_vec();
    want.sort();
    assert_eq!(canceled, want);
    let mut judged = seen.lock().unwrap().clone();
    judged.sort();
    let mut sent = vec![
        (k1, b"k".to_vec(), vec![]),
        (k2, b"k".to_vec(), vec![]),
        (prefix, b"/a/".to_vec(), b"/a0".to_vec()),
        (from, b"m".to_vec(), vec![0]),
        (between, b"b".to_vec(), b"d".to_vec()),
        (parked, b"k".to_vec(), vec![]),
        (behind, b"k".to_vec(), b"l".to_vec()),
    ];
    sent.sort();
    assert_eq!(judged, sent, "each watcher of this stream once, as sent");
    assert_eq!(hub.metrics().watchers, 4);
    st.put(b"k", b"2").unwrap();
    st.put(b"/a/x", b"3").unwrap();
    st.put(b"c", b"4").unwrap();
    st.put(b"z", b"5").unwrap();
    st.put(b"/a/end", b"6").unwrap(); // the last: every earlier event comes before it
    let mut got = Vec::new();
    while !got.contains(&(prefix, b"/a/end".to_vec())) {
        let r = next(&mut s);
        assert!(!r.canceled, "{r:?}");
        for e in r.events() {
            got.push((r.watch_id, e.kv.key.clone()));
        }
    }
    got.sort();
    let mut want =
        vec![(k1, b"k".to_vec()), (prefix, b"/a/x".to_vec()), (prefix, b"/a/end".to_vec()), (between, b"c".to_vec())];
    want.sort();
    assert_eq!(got, want, "the kept watchers go on; the refused get nothing");
    let r = next(&mut other);
    assert_eq!((r.watch_id, r.events().count()), (elsewhere, 1), "another stream is not judged");
}
