//! The Rust `etcd-client` crate's watches against Argus and against real etcd 3.4:
//! start revisions, prefixes and ranges, NOPUT/NODELETE filters, prev_kv, progress
//! requests, cancel, compaction cancel, refused creates, fragments, many watchers on
//! one stream. Each scenario runs on both servers; what every watcher received is
//! compared between them (see [`watcher_lines`] for what is compared), and the
//! engine's guarantee checker is run on what each received, against a history built
//! from the writes the test made (not from the server's log).

use std::time::Duration;

use argus_engine::check::History;
use etcd_client::proto::PbWatchResponse;
use etcd_client::{Client, CompactionOptions};

use crate::common::{
    assert_watch_guarantees, connect, del, del_prefix, describe_wire, event_lines, put, reassemble, write, Argus,
    Collected, Etcd, Op, Spec,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn start_both() -> (Etcd, Argus) {
    let etcd = std::thread::spawn(Etcd::start);
    let argus = Argus::start();
    (etcd.join().expect("etcd start"), argus)
}

/// What a watcher received, as comparable lines, in order: `created rev=R` (the
/// header revision of the created response: the store revision when it was
/// created), every event (fragments joined, response boundaries dropped: how a
/// catch-up groups revisions into responses depends on timing on both servers), and
/// `canceled ...`: with the header revision for a cancel the client asked for, with
/// `compact_revision` for a compaction cancel (whose header revision etcd 3.4 leaves
/// at 0). Stream-wide responses (watch id -1) are listed under id -1: progress
/// responses with their revision, refused creates with their reason.
pub fn watcher_lines(wire: &[PbWatchResponse], id: i64) -> Vec<String> {
    let (whole, _) = reassemble(wire);
    let mut out = Vec::new();
    for r in whole.iter().filter(|r| r.watch_id == id) {
        let rev = r.header.as_ref().map_or(0, |h| h.revision);
        if id == -1 {
            if r.created {
                out.push(format!("refused canceled={} reason={:?}", r.canceled, r.cancel_reason));
            } else {
                out.push(format!("progress rev={rev} events={}", r.events.len()));
            }
            continue;
        }
        if r.created {
            out.push(format!("created rev={rev}"));
        }
        if !r.events.is_empty() {
            out.extend(event_lines(std::slice::from_ref(r), id));
        }
        if r.canceled {
            if r.compact_revision != 0 {
                out.push(format!("canceled compact_revision={}", r.compact_revision));
            } else {
                out.push(format!("canceled rev={rev} reason={:?}", r.cancel_reason));
            }
        }
    }
    out
}

/// Compares what every watcher of `ids` received on etcd and on Argus.
fn assert_same_watchers(what: &str, ids: &[i64], etcd: &[PbWatchResponse], argus: &[PbWatchResponse]) {
    for &id in ids {
        let (e, a) = (watcher_lines(etcd, id), watcher_lines(argus, id));
        assert!(
            e == a,
            "{what}: watcher {id} received differently\n---- etcd ----\n{}\n---- argus ----\n{}\n\
             ---- etcd wire ----\n{}---- argus wire ----\n{}",
            e.join("\n"),
            a.join("\n"),
            describe_wire(etcd),
            describe_wire(argus)
        );
    }
}

/// The wire responses without refused creates (watch id -1, created and canceled:
/// an answer to a create request, not a stream-wide response, which is all the
/// checker expects under id -1).
fn without_refusals(wire: &[PbWatchResponse]) -> Vec<PbWatchResponse> {
    wire.iter().filter(|r| !(r.watch_id == -1 && r.created)).cloned().collect()
}

/// The last revision at which `history` has an event `spec` matches (from its start
/// revision), if any.
fn last_matching(history: &History, spec: &Spec, from: u64, to: u64) -> Option<u64> {
    history.events_matching(&spec.request(), from.max(spec.start.max(1) as u64), to).last().map(|e| e.kv.mod_revision)
}

/// Waits until every watcher of `specs` created at `created` has received its last
/// matching event up to `to`.
async fn wait_delivered(c: &Collected, history: &History, specs: &[Spec], created: u64, to: u64) {
    for s in specs {
        let from = if s.start > 0 { s.start as u64 } else { created + 1 };
        if let Some(rev) = last_matching(history, s, from, to) {
            c.wait_rev(&[s.id], rev).await;
        }
    }
}

/// Requests progress and waits for the stream-wide answer at or above `rev`.
async fn progress(c: &mut Collected, rev: u64) {
    c.sender.request_progress().await.expect("request progress");
    c.wait(&format!("a progress response at revision {rev}"), |rs| {
        rs.iter().any(|r| {
            r.watch_id == -1
                && !r.created
                && r.events.is_empty()
                && r.header.as_ref().is_some_and(|h| h.revision as u64 >= rev)
        })
    })
    .await;
}

/// The scenario of [`watch_features_match_etcd_and_keep_guarantees`] on one server:
/// returns the stream's wire responses and the history of the writes.
async fn features_scenario(endpoint: &str) -> (Vec<PbWatchResponse>, History, Vec<Spec>) {
    let mut client = connect(endpoint).await;
    let mut h = History::new();
    // Revisions 2..=7.
    let phase1: Vec<Vec<Op>> = vec![
        vec![put("/p/a", "1")],
        vec![put("/p/b", "1")],
        vec![put("/q/a", "1")],
        vec![put("/p/c", "1"), put("/q/b", "1")],
        vec![del("/p/b")],
        vec![put("/p/a", "2")],
    ];
    for ops in &phase1 {
        write(&mut client, &mut h, ops).await;
    }
    assert_eq!(h.last_revision(), 7);
    let mut specs = vec![
        Spec::key(1, "/p/a"),
        Spec::prefix(2, "/p/").from(2).prev(),
        Spec { no_put: true, ..Spec::prefix(3, "/p/").from(1) },
        Spec { no_delete: true, ..Spec::prefix(4, "/p/").prev() },
        Spec::range(5, "/p/b", "/q/b").from(3),
        Spec::range(6, "/q/", "\0").prev(),
        Spec::range(7, "\0", "\0").from(1).prev(),
        Spec::key(8, "/p/never"),
        Spec { no_put: true, no_delete: true, ..Spec::prefix(9, "/") },
    ];
    let mut c = Collected::open(&client, &specs).await;
    c.wait("every watcher created", |rs| (1..=9).all(|id| rs.iter().any(|r| r.watch_id == id && r.created))).await;
    wait_delivered(&c, &h, &specs, 7, 7).await;
    // Revisions 8..=13.
    let phase2: Vec<Vec<Op>> = vec![
        vec![put("/p/a", "3")],
        vec![put("/p/d", "1")],
        vec![del_prefix("/p/")],
        vec![put("/p/a", "4"), put("/q/c", "1"), del("/q/a")],
        vec![put("/r/x", "1")],
        vec![put("/p/b", "2"), del("/nothing")],
    ];
    for ops in &phase2 {
        write(&mut client, &mut h, ops).await;
    }
    assert_eq!(h.last_revision(), 13);
    wait_delivered(&c, &h, &specs, 7, 13).await;
    progress(&mut c, 13).await;

    // Cancel: watcher 1 gets its canceled response and nothing after.
    c.sender.cancel(1).await.expect("cancel");
    c.wait("the cancel of watcher 1", |rs| rs.iter().any(|r| r.watch_id == 1 && r.canceled)).await;
    write(&mut client, &mut h, &[put("/p/a", "5")]).await; // 14
    wait_delivered(&c, &h, &specs[1..], 7, 14).await;

    // Compaction cancel: a watcher from a compacted revision is created, then
    // canceled with the compaction revision; one from the compaction revision
    // itself is served. (Compacting at 11, not 10: etcd 3.4.23 drops the tombstones
    // of revision 10 when compacting at 10, so its watch from 10 would miss the
    // DELETEs of revision 10, a bug of etcd fixed in later releases. Argus keeps them.)
    client.compact(11, Some(CompactionOptions::new().with_physical())).await.expect("compact");
    h.set_compacted(11);
    let late = vec![Spec::prefix(10, "/p/").from(3), Spec::prefix(11, "/p/").from(11).prev()];
    for s in &late {
        c.sender.watch(s.key.clone(), Some(s.options())).await.expect("create");
    }
    c.wait("the compaction cancel of watcher 10", |rs| rs.iter().any(|r| r.watch_id == 10 && r.canceled)).await;
    c.wait_rev(&[11], 14).await;
    // Refused creates: a duplicate id and an empty range.
    for s in [Spec::key(2, "/dup"), Spec::range(12, "/z", "/a")] {
        c.sender.watch(s.key.clone(), Some(s.options())).await.expect("create");
    }
    c.wait("two refused creates", |rs| rs.iter().filter(|r| r.watch_id == -1 && r.created).count() == 2).await;
    write(&mut client, &mut h, &[put("/p/z", "1")]).await; // 15
    wait_delivered(&c, &h, &specs[1..], 7, 15).await;
    wait_delivered(&c, &h, &late[1..], 7, 15).await;
    specs.extend(late);
    progress(&mut c, 15).await;
    let wire = c.snapshot();
    (wire, h, specs)
}

/// Watch features through `etcd-client`, on etcd and on Argus: every watcher
/// receives the same on both, and Argus's (and etcd's) responses keep every
/// guarantee of the checker.
#[test]
fn watch_features_match_etcd_and_keep_guarantees() {
    let (etcd, argus) = start_both();
    let rt = runtime();
    let argus_ep = argus.endpoint().to_string();
    let ((we, he, specs), (wa, ha, _)) =
        rt.block_on(async { tokio::join!(features_scenario(&etcd.endpoint), features_scenario(&argus_ep)) });
    assert_eq!(he.last_revision(), ha.last_revision());
    let ids: Vec<i64> = (-1..=12).filter(|&i| i != 0).collect();
    assert_same_watchers("watch features", &ids, &we, &wa);
    // Watcher 10 was canceled for compaction at 11, with etcd's reason-less response.
    assert!(watcher_lines(&wa, 10).contains(&"canceled compact_revision=11".to_string()));
    for (name, wire, history) in [("argus", &wa, &ha), ("etcd", &we, &he)] {
        let wire = without_refusals(wire);
        eprintln!("checking {name}'s responses");
        assert_watch_guarantees(history, &[(&specs, wire)]);
    }
    // Argus's log (after the compaction: from its snapshot on) holds the same
    // revisions as the history of the writes made.
    let log = argus.history();
    assert!(log.first_revision() <= 12 && log.last_revision() == ha.last_revision());
    for rev in log.first_revision()..=ha.last_revision() {
        assert_eq!(log.events_at(rev), ha.events_at(rev), "revision {rev} in Argus's log");
    }
}

/// The scenario of the fragment test on one server: returns the wire responses of
/// the fragmenting stream and of the non-fragmenting one.
async fn fragment_scenario(endpoint: &str) -> (Vec<PbWatchResponse>, Vec<PbWatchResponse>, History) {
    let mut client = connect(endpoint).await;
    let mut h = History::new();
    let value = |i: usize| -> String { (0..MIB).map(|j| char::from(b'a' + ((i * 7 + j / 4096) % 26) as u8)).collect() };
    // Revisions 2..=7: six 1 MiB values.
    for i in 0..6 {
        write(&mut client, &mut h, &[Op::Put(format!("/f/{i}").into_bytes(), value(i).into_bytes())]).await;
    }
    let frag = vec![
        Spec { fragment: true, ..Spec::prefix(1, "/f/").prev() },
        Spec { fragment: true, ..Spec::prefix(2, "/f/").from(2).prev() },
    ];
    let c1 = Collected::open(&client, &frag).await;
    // Without fragment, the client must accept a message of the whole revision.
    let wc = client.watch_client().max_decoding_message_size(64 << 20);
    let whole = vec![Spec::prefix(3, "/f/").prev()];
    let c2 = Collected::open_on(wc, &whole).await;
    c1.wait("created", |rs| (1..=2).all(|id| rs.iter().any(|r| r.watch_id == id && r.created))).await;
    c2.wait("created", |rs| rs.iter().any(|r| r.watch_id == 3 && r.created)).await;
    c1.wait_rev(&[2], 7).await;
    // Revision 8: one delete of six keys, whose prev_kvs make a ~6 MiB response.
    write(&mut client, &mut h, &[del_prefix("/f/")]).await;
    c1.wait_rev(&[1, 2], 8).await;
    c2.wait_rev(&[3], 8).await;
    (c1.snapshot(), c2.snapshot(), h)
}

const MIB: usize = 1 << 20;

/// A revision whose events exceed the fragment threshold (max request bytes + 512
/// KiB = 2 MiB): a `fragment` watcher gets it in frames of at most the threshold
/// (etcd and Argus split the same way here: one 1 MiB event per frame), all but the
/// last flagged; reassembled it is the whole revision, as a watcher without
/// `fragment` gets it in one message; the same as etcd, and clean for the checker.
#[test]
fn fragmented_revision_is_reassembled() {
    let (etcd, argus) = start_both();
    let rt = runtime();
    let argus_ep = argus.endpoint().to_string();
    let ((fe, we, he), (fa, wa, ha)) =
        rt.block_on(async { tokio::join!(fragment_scenario(&etcd.endpoint), fragment_scenario(&argus_ep)) });
    let limit = 2 * MIB;
    for (name, frag, whole) in [("etcd", &fe, &we), ("argus", &fa, &wa)] {
        let delete_frames: Vec<&PbWatchResponse> =
            frag.iter().filter(|r| r.watch_id == 1 && !r.events.is_empty()).collect();
        assert_eq!(delete_frames.len(), 6, "{name}: frames of the delete revision:\n{}", describe_wire(frag));
        for (i, f) in delete_frames.iter().enumerate() {
            assert_eq!(f.fragment, i < 5, "{name}: fragment flag of frame {i}");
            assert_eq!(f.events.len(), 1, "{name}: events of frame {i}");
            let size = prost::Message::encoded_len(*f);
            assert!(size <= limit, "{name}: frame {i} is {size} bytes, above the threshold {limit}");
        }
        let (_, n) = reassemble(frag);
        assert!(n >= 5, "{name}: {n} fragments");
        let big: Vec<&PbWatchResponse> = whole.iter().filter(|r| r.watch_id == 3 && !r.events.is_empty()).collect();
        assert_eq!(big.len(), 1, "{name}: the watcher without fragment gets the revision in one message");
        assert_eq!(big[0].events.len(), 6);
        assert!(!big[0].fragment);
        assert!(prost::Message::encoded_len(big[0]) > 6 * MIB);
        // Reassembled, the fragmenting watcher got what the whole one got.
        let joined: Vec<String> = crate::common::event_lines(frag, 1);
        assert_eq!(joined, crate::common::event_lines(whole, 3), "{name}");
    }
    assert_same_watchers("fragment", &[1, 2], &fe, &fa);
    assert_same_watchers("whole", &[3], &we, &wa);
    let frag_specs = vec![
        Spec { fragment: true, ..Spec::prefix(1, "/f/").prev() },
        Spec { fragment: true, ..Spec::prefix(2, "/f/").from(2).prev() },
    ];
    let whole_specs = vec![Spec::prefix(3, "/f/").prev()];
    assert_watch_guarantees(&ha, &[(&frag_specs, fa.clone()), (&whole_specs, wa)]);
    assert_watch_guarantees(&he, &[(&frag_specs, fe), (&whole_specs, we)]);
    // Without reassembly the frames split a revision: the checker must notice (this
    // shows the fragments really were the parts of one revision).
    let raw: Vec<PbWatchResponse> = fa.iter().map(|r| PbWatchResponse { fragment: false, ..r.clone() }).collect();
    let obs = crate::common::observed(&ha, &frag_specs, &raw);
    let v = argus_engine::check::check_all(&ha, &obs);
    assert!(v.iter().any(|v| v.check == argus_engine::check::Check::Atomic), "{v:?}");
}

/// The writes of the many-watchers test: 120 revisions over 40 keys in 4 prefixes,
/// puts, deletes and multi-key txns (deterministic).
fn many_writes() -> Vec<Vec<Op>> {
    (0..120u32)
        .map(|i| {
            let key = |j: u32| format!("/m/{}/{}", j % 4, j % 10);
            match i % 8 {
                0..=4 => vec![put(&key(i * 7), &format!("v{i}"))],
                5 => vec![del(&key(i / 3))],
                6 => vec![put(&key(i), &format!("t{i}")), put(&key(i + 5), &format!("u{i}")), del(&key(i + 13))],
                _ => vec![del_prefix(&format!("/m/{}/", (i / 8) % 4))],
            }
        })
        .collect()
}

/// 300 watchers on one stream (keys, prefixes, ranges, filters, prev_kv, from now and
/// from the past), 120 writes: every watcher gets exactly its events (checker), the
/// same as on etcd.
#[test]
fn many_watchers_on_one_stream() {
    let (etcd, argus) = start_both();
    let rt = runtime();
    let specs: Vec<Spec> = (1..=300i64)
        .map(|id| {
            let s = match id % 5 {
                0 => Spec::key(id, &format!("/m/{}/{}", id % 4, id % 10)),
                1 => Spec::prefix(id, &format!("/m/{}/", id % 4)),
                2 => Spec::range(id, &format!("/m/{}/", id % 4), &format!("/m/{}/5", id % 4)),
                3 => Spec { no_delete: true, ..Spec::prefix(id, "/m/") },
                _ => Spec { no_put: true, ..Spec::prefix(id, &format!("/m/{}/", id % 4)) },
            };
            let s = if id % 3 == 0 { s.prev() } else { s };
            if id % 7 == 0 {
                s.from(2 + id % 20)
            } else {
                s
            }
        })
        .collect();
    let scenario = |endpoint: String, specs: Vec<Spec>| async move {
        let mut client = connect(&endpoint).await;
        let mut h = History::new();
        let writes = many_writes();
        for ops in &writes[..30] {
            write(&mut client, &mut h, ops).await;
        }
        let created_at = h.last_revision();
        let mut c = Collected::open(&client, &specs).await;
        c.wait("300 watchers created", |rs| rs.iter().filter(|r| r.created).count() == 300).await;
        for ops in &writes[30..] {
            write(&mut client, &mut h, ops).await;
        }
        let last = h.last_revision();
        wait_delivered(&c, &h, &specs, created_at, last).await;
        progress(&mut c, last).await;
        (c.snapshot(), h, created_at)
    };
    let ((we, he, ce), (wa, ha, ca)) = rt.block_on(async {
        tokio::join!(
            scenario(etcd.endpoint.clone(), specs.clone()),
            scenario(argus.endpoint().to_string(), specs.clone())
        )
    });
    assert_eq!((he.last_revision(), ce), (ha.last_revision(), ca));
    crate::common::poll("the stream to close with the scenario", || (argus.hub.metrics().watchers == 0).then_some(()));
    let ids: Vec<i64> = (1..=300).collect();
    assert_same_watchers("many watchers", &ids, &we, &wa);
    assert_watch_guarantees(&ha, &[(&specs, wa.clone())]);
    // Every watcher got events (the specs are not vacuous).
    let silent: Vec<i64> = ids.iter().copied().filter(|&id| event_lines(&wa, id).is_empty()).collect();
    assert!(silent.is_empty(), "watchers that got no event: {silent:?}");
}

/// Progress: a `progress_notify` watcher gets periodic notifications when idle (at
/// the server's progress interval) and one without does not; a progress request is
/// answered on the stream at the current revision, after the events before it.
#[test]
fn progress_notifications() {
    let argus = Argus::start_with(|c| c.progress_interval = Duration::from_millis(200));
    let rt = runtime();
    rt.block_on(async {
        let mut client: Client = connect(argus.endpoint()).await;
        let mut h = History::new();
        write(&mut client, &mut h, &[put("/g/a", "1")]).await;
        let specs = vec![Spec { progress_notify: true, ..Spec::prefix(1, "/g/") }, Spec::prefix(2, "/g/")];
        let mut c = Collected::open(&client, &specs).await;
        c.wait("created", |rs| rs.iter().filter(|r| r.created).count() == 2).await;
        for i in 0..20 {
            write(&mut client, &mut h, &[put("/g/a", &format!("{i}"))]).await;
        }
        let last = h.last_revision();
        c.wait("two periodic progress notifications of watcher 1 at the last revision", |rs| {
            rs.iter()
                .filter(|r| {
                    r.watch_id == 1
                        && r.events.is_empty()
                        && !r.created
                        && r.header.as_ref().unwrap().revision as u64 == last
                })
                .count()
                >= 2
        })
        .await;
        progress(&mut c, last).await;
        let wire = c.snapshot();
        assert!(
            !wire.iter().any(|r| r.watch_id == 2 && r.events.is_empty() && !r.created),
            "watcher 2 did not ask for progress notifications:\n{}",
            describe_wire(&wire)
        );
        assert_watch_guarantees(&h, &[(&specs, wire)]);
    });
}

/// A watch from the compaction revision itself gets every event of that revision,
/// DELETEs included (etcd 3.4.23 loses the tombstones at the compaction revision, so
/// its watch misses them, a bug fixed in later etcd releases; Argus keeps them), and
/// one from below it is canceled with the compaction revision.
#[test]
fn watch_from_the_compaction_revision_keeps_its_deletes() {
    let argus = Argus::start();
    let rt = runtime();
    rt.block_on(async {
        let mut client = connect(argus.endpoint()).await;
        let mut h = History::new();
        write(&mut client, &mut h, &[put("/c/a", "1")]).await; // 2
        write(&mut client, &mut h, &[put("/c/b", "1")]).await; // 3
        write(&mut client, &mut h, &[del_prefix("/c/")]).await; // 4
        write(&mut client, &mut h, &[put("/c/a", "2")]).await; // 5
        client.compact(4, Some(CompactionOptions::new().with_physical())).await.expect("compact");
        h.set_compacted(4);
        let specs = vec![Spec::prefix(1, "/c/").from(4).prev(), Spec::prefix(2, "/c/").from(3)];
        let c = Collected::open(&client, &specs).await;
        c.wait_rev(&[1], 5).await;
        c.wait("the compaction cancel", |rs| rs.iter().any(|r| r.watch_id == 2 && r.canceled)).await;
        let wire = c.snapshot();
        let lines: Vec<String> = event_lines(&wire, 1)
            .into_iter()
            .map(|l| l.split(" prev=").next().unwrap_or_default().to_string())
            .collect();
        assert_eq!(lines, ["DELETE /c/a= 0/4/0", "DELETE /c/b= 0/4/0", "PUT /c/a=2 5/5/1"], "{}", describe_wire(&wire));
        assert_eq!(watcher_lines(&wire, 2), ["created rev=5", "canceled compact_revision=4"]);
        assert_watch_guarantees(&h, &[(&specs, wire)]);
    });
}

/// The scenario of [`negative_start_revisions_match_etcd`] on one server: the wire
/// responses of a stream of watchers with negative starts on a store never compacted,
/// then of one on a compacted store.
async fn negative_starts(endpoint: &str) -> (Vec<PbWatchResponse>, Vec<PbWatchResponse>) {
    let mut client = connect(endpoint).await;
    let specs = [Spec::prefix(1, "/n/").from(-1), Spec::prefix(2, "/n/").from(-2), Spec::prefix(3, "/n/").from(-100)];
    let fresh = Collected::open(&client, &specs).await;
    fresh
        .wait("created 1-3 and canceled 2, 3", |rs| {
            (1..=3).all(|id| rs.iter().any(|r| r.watch_id == id && r.created))
                && (2..=3).all(|id| rs.iter().any(|r| r.watch_id == id && r.canceled))
        })
        .await;
    // etcd's watcher from -1 is unsynced until its first sync (every 100 ms), and
    // misses what is written before it: write after that.
    tokio::time::sleep(Duration::from_millis(500)).await;
    client.put("/n/a", "1", None).await.expect("put");
    fresh.wait_rev(&[1], 2).await;
    for i in 0..4 {
        client.put(format!("/n/{i}"), "2", None).await.expect("put");
    }
    client.compact(4, None).await.expect("compact");
    let specs = [Spec::prefix(11, "/n/").from(-1), Spec::prefix(12, "/n/").from(-7), Spec::prefix(13, "/n/").from(5)];
    let compacted = Collected::open(&client, &specs).await;
    compacted
        .wait("created 11-13 and canceled 11, 12", |rs| {
            (11..=13).all(|id| rs.iter().any(|r| r.watch_id == id && r.created))
                && (11..=12).all(|id| rs.iter().any(|r| r.watch_id == id && r.canceled))
        })
        .await;
    client.put("/n/b", "3", None).await.expect("put");
    // Both streams, not just one: each is delivered on its own (etcd's watcher 1
    // was seen one revision behind watcher 13 on a busy machine).
    compacted.wait_rev(&[13], 7).await;
    fresh.wait_rev(&[1], 7).await;
    (fresh.snapshot(), compacted.snapshot())
}

/// A negative start revision, as etcd 3.4 answers it: the watcher is created (its
/// own id, the header at the store's revision) and then canceled as compacted, with
/// `compact_revision` -1 on a store never compacted and the compaction revision
/// otherwise; except -1 on a store never compacted, which etcd does not cancel (-1
/// is its "never compacted" revision) and which then watches from the next revision.
#[test]
fn negative_start_revisions_match_etcd() {
    let (etcd, argus) = start_both();
    let rt = runtime();
    let ((ef, ec), (af, ac)) =
        rt.block_on(async { tokio::join!(negative_starts(&etcd.endpoint), negative_starts(argus.endpoint())) });
    assert_same_watchers("never compacted", &[1, 2, 3], &ef, &af);
    assert_same_watchers("compacted at 4", &[11, 12, 13], &ec, &ac);
    assert_eq!(watcher_lines(&af, 2), ["created rev=1", "canceled compact_revision=-1"]);
    assert_eq!(watcher_lines(&ac, 12), ["created rev=6", "canceled compact_revision=4"]);
    assert_eq!(watcher_lines(&af, 1)[0], "created rev=1");
    assert_eq!(watcher_lines(&af, 1).len(), 1 + 6, "{:?}", watcher_lines(&af, 1));
}
