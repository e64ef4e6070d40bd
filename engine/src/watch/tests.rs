//! Behaviour tests of the watch engine, one etcd semantic each. The randomized
//! guarantee tests live in `engine/tests/watch_random.rs`.

use std::time::Duration;

use super::*;
use crate::log::{FsyncPolicy, MemStorage};
use crate::store::{Store, StoreOptions};
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
