//! `kill -9` of the `argus` binary (`--fsync always`) under load, twice, each time
//! restarted on the same data directory with every watch resumed from its last
//! revision + 1.
//!
//! Checked after the last restart:
//! * every acknowledged write is there, at the revision it was acknowledged with;
//! * every other revision is exactly one of the writes in flight at a kill (each
//!   write carries unique values, so a revision identifies its write), none twice;
//! * the store's state is the state the history of those writes leads to;
//! * the resumed watchers' combined responses (every round, fragments joined,
//!   the re-created responses dropped) pass the guarantee checker against that
//!   history: nothing lost, nothing duplicated, prev_kv right across restarts; and
//!   so does a watch of everything from revision 1 on the restarted server.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use argus_engine::check::History;
use etcd_client::proto::PbWatchResponse;
use etcd_client::GetOptions;

use crate::common::{
    apply_recorded, assert_watch_guarantees, connect, engine_kv, reassemble, record, ArgusProcess, Collected, Load, Op,
    Spec, PATIENCE,
};

const WRITERS: usize = 3;
const KILLS: usize = 2;

/// Writer `w`'s `seq`-th write in `round`: puts with values unique to (w, round,
/// seq), sometimes a txn that also deletes, sometimes a delete with a marker put.
fn op(w: usize, round: usize, seq: usize) -> Vec<Op> {
    let key = |i: usize| format!("/r/{w}/{}", i % 6).into_bytes();
    let val = |tag: &str| format!("{tag}-w{w}-r{round}-s{seq}").into_bytes();
    match seq % 10 {
        0..=6 => vec![Op::Put(key(seq), val("p"))],
        7 => vec![Op::Put(key(seq), val("t1")), Op::Put(key(seq + 1), val("t2")), Op::Delete(key(seq + 3), Vec::new())],
        8 => vec![Op::Delete(key(seq), Vec::new()), Op::Put(format!("/r/marker/{w}").into_bytes(), val("m"))],
        _ => vec![
            Op::Delete(format!("/r/{w}/").into_bytes(), argus_engine::store::prefix_end(format!("/r/{w}/").as_bytes())),
            Op::Put(format!("/r/d/{w}").into_bytes(), val("d")),
        ],
    }
}

/// Key-value pairs put.
type Puts = BTreeSet<(Vec<u8>, Vec<u8>)>;

/// The puts of a write (its identity: values are unique).
fn puts_of(ops: &[Op]) -> Puts {
    ops.iter()
        .filter_map(|o| match o {
            Op::Put(k, v) => Some((k.clone(), v.clone())),
            Op::Delete(..) => None,
        })
        .collect()
}

/// Writes until a write fails (the kill) or `stop`, recording acknowledged writes
/// and the one that failed (in flight: it may or may not have been applied).
async fn writer(endpoint: String, w: usize, round: usize, load: Arc<Load>) {
    let mut client = connect(&endpoint).await;
    for seq in 0.. {
        if load.stop.load(Ordering::SeqCst) {
            return;
        }
        if !apply_recorded(&mut client, op(w, round, seq), Duration::from_secs(5), &load).await {
            return;
        }
    }
}

/// The watchers kept across restarts (one stream each), by id.
fn watchers() -> Vec<Spec> {
    vec![
        Spec::prefix(1, "/r/").from(1).prev(),
        Spec::prefix(2, "/r/0/").prev(),
        Spec { no_put: true, ..Spec::prefix(3, "/r/") },
        Spec::key(4, "/r/marker/1").from(1),
        Spec::range(5, "/r/1/", "/r/2/3").from(1),
    ]
}

/// Where a watcher resumes: after the last revision it received an event of, or a
/// progress notification at (whichever is later); its own start if none.
fn resume_from(spec: &Spec, wire: &[PbWatchResponse]) -> i64 {
    let (whole, _) = reassemble(wire);
    let last = whole
        .iter()
        .filter(|r| r.watch_id == spec.id || (r.watch_id == -1 && !r.created))
        .filter_map(|r| {
            let ev = r.events.iter().filter_map(|e| e.kv.as_ref()).map(|kv| kv.mod_revision).max();
            let progress =
                (r.events.is_empty() && !r.created && !r.canceled).then(|| r.header.as_ref().map_or(0, |h| h.revision));
            ev.or(progress)
        })
        .max();
    match last {
        Some(rev) => rev + 1,
        None => spec.start,
    }
}

#[test]
fn kill9_under_load_loses_nothing_and_watches_resume() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let specs = watchers();
    // Per watcher: every response received in every round (re-creates dropped).
    let mut received: Vec<Vec<PbWatchResponse>> = vec![Vec::new(); specs.len()];
    let load = Arc::new(Load::default());
    for round in 0..=KILLS {
        let mut server = Some(ArgusProcess::start(&data, &["--fsync", "always"]));
        let endpoint = server.as_ref().expect("server").endpoint();
        let final_round = round == KILLS;
        let (server, wires) = rt.block_on(async {
            let client = connect(&endpoint).await;
            let mut streams = Vec::new();
            for (spec, got) in specs.iter().zip(&received) {
                let resumed = Spec { start: resume_from(spec, got), ..spec.clone() };
                let c = Collected::open(&client, std::slice::from_ref(&resumed)).await;
                c.wait("created", |rs| rs.iter().any(|r| r.created)).await;
                streams.push(c);
            }
            let tasks: Vec<_> =
                (0..WRITERS).map(|w| tokio::spawn(writer(endpoint.clone(), w, round, Arc::clone(&load)))).collect();
            let target = load.acks.load(Ordering::SeqCst) + 150;
            let start = Instant::now();
            while load.acks.load(Ordering::SeqCst) < target && start.elapsed() < Duration::from_secs(3) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if final_round {
                load.stop.store(true, Ordering::SeqCst);
            } else {
                // kill -9 while the writers are writing.
                if let Some(s) = server.take() {
                    s.kill9();
                }
            }
            for t in tasks {
                let _ = t.await;
            }
            let wires: Vec<Vec<PbWatchResponse>> = if final_round {
                // Everything acknowledged, then progress: each watcher vouches for
                // every revision (the checker then requires every event).
                let mut client = client;
                let rev = client.get("/", None).await.expect("get").header().expect("header").revision() as u64;
                for c in &mut streams {
                    c.sender.request_progress().await.expect("progress");
                    c.wait(&format!("progress at {rev}"), |rs| {
                        rs.iter().any(|r| {
                            r.watch_id == -1
                                && !r.created
                                && r.header.as_ref().is_some_and(|h| h.revision as u64 >= rev)
                        })
                    })
                    .await;
                }
                streams.iter().map(Collected::snapshot).collect()
            } else {
                // Wait for the streams to end with the server.
                for c in &streams {
                    let deadline = Instant::now() + PATIENCE;
                    while !c.finished() && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                streams.iter().map(Collected::snapshot).collect()
            };
            (server, wires)
        });
        for (got, wire) in received.iter_mut().zip(wires) {
            let mut created_seen = got.iter().any(|r| r.created);
            for r in wire {
                if r.created {
                    if created_seen {
                        continue; // the re-created watcher: the same watcher resumed
                    }
                    created_seen = true;
                }
                got.push(r);
            }
        }
        if let Some(server) = server {
            verify(&rt, &server.endpoint(), &load, &specs, &received);
        }
    }
}

/// The checks of the module doc, on the server after the last restart.
fn verify(
    rt: &tokio::runtime::Runtime,
    endpoint: &str,
    load: &Load,
    specs: &[Spec],
    received: &[Vec<PbWatchResponse>],
) {
    rt.block_on(async {
        let mut client = connect(endpoint).await;
        // Every revision as the server has it: a watch of everything from 1.
        let everything = Spec::range(100, "\0", "\0").from(1).prev();
        let all = Collected::open(&client, std::slice::from_ref(&everything)).await;
        let state = client.get("\0", Some(GetOptions::new().with_from_key())).await.expect("get everything");
        let last = state.header().expect("header").revision() as u64;
        all.wait_rev(&[100], last).await;
        let (all_wire, _) = reassemble(&all.snapshot());
        let mut server_puts: BTreeMap<u64, Puts> = BTreeMap::new();
        for e in all_wire.iter().flat_map(|r| r.events.iter()) {
            let kv = e.kv.as_ref().expect("kv");
            let set = server_puts.entry(kv.mod_revision as u64).or_default();
            if e.r#type == 0 {
                set.insert((kv.key.clone(), kv.value.clone()));
            }
        }
        let refused = load.refused.lock().unwrap().clone();
        assert!(refused.is_empty(), "writes refused: {refused:?}");
        // Revisions: acknowledged ones where acknowledged, the rest from writes in
        // flight, each at most once.
        let acked: BTreeMap<u64, Vec<Op>> = load.acked.lock().unwrap().iter().cloned().collect();
        assert_eq!(acked.len(), load.acked.lock().unwrap().len(), "two acknowledgements of one revision");
        let in_flight = load.in_flight.lock().unwrap().clone();
        let mut used = vec![false; in_flight.len()];
        let mut writes: BTreeMap<u64, Vec<Op>> = BTreeMap::new();
        for rev in 2..=last {
            let got = server_puts.get(&rev).cloned().unwrap_or_default();
            if let Some(ops) = acked.get(&rev) {
                assert_eq!(got, puts_of(ops), "revision {rev}: the server's puts differ from the acknowledged write");
                writes.insert(rev, ops.clone());
                continue;
            }
            let i = in_flight
                .iter()
                .position(|ops| puts_of(ops) == got)
                .unwrap_or_else(|| panic!("revision {rev} ({got:?}) is no write that was made"));
            assert!(!used[i], "the write in flight {:?} was applied twice (again at {rev})", in_flight[i]);
            used[i] = true;
            writes.insert(rev, in_flight[i].clone());
        }
        let max_acked = acked.keys().max().copied().unwrap_or(1);
        assert!(max_acked <= last, "acknowledged revision {max_acked} is beyond the recovered revision {last}");
        let mut history = History::new();
        for (rev, ops) in &writes {
            record(&mut history, *rev, ops);
        }
        // The state: every key as the history has it.
        let want: Vec<_> = history.state_at(last).into_values().collect();
        let got: Vec<_> = state.kvs().iter().map(|kv| engine_kv(&kv.0)).collect();
        assert_eq!(got, want, "the state after the restarts");
        // The watches.
        let mut streams: Vec<(&[Spec], Vec<PbWatchResponse>)> =
            specs.iter().zip(received).map(|(s, w)| (std::slice::from_ref(s), w.clone())).collect();
        streams.push((std::slice::from_ref(&everything), all.snapshot()));
        assert_watch_guarantees(&history, &streams);
        let acks = acked.len();
        let applied_in_flight = used.iter().filter(|u| **u).count();
        eprintln!(
            "kill -9 x{KILLS}: {acks} acknowledged writes, {} in flight at kills ({applied_in_flight} applied), \
             last revision {last}",
            in_flight.len()
        );
        assert!(acks >= 200, "too little load to mean anything: {acks} acknowledged writes");
    });
}

/// SIGTERM with watch streams open: the server ends every stream (UNAVAILABLE, so a
/// client reconnects elsewhere) after what it had queued, flushes the log and exits,
/// rather than waiting for streams that never end by themselves.
#[test]
fn sigterm_with_watches_open_ends_them_and_exits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = ArgusProcess::start(&dir.path().join("data"), &[]);
    let endpoint = server.endpoint();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let (mut client, mut stream) = rt.block_on(async {
        let mut client = connect(&endpoint).await;
        let stream = client.watch("/t/", Some(etcd_client::WatchOptions::new().with_prefix())).await.expect("watch");
        (client, stream)
    });
    rt.block_on(async {
        let created = stream.message().await.expect("a response").expect("created");
        assert!(created.created());
        client.put("/t/a", "1", None).await.expect("put");
        let r = stream.message().await.expect("a response").expect("an event");
        assert_eq!(r.events().len(), 1);
    });
    let status = server.terminate(Duration::from_secs(20)).expect("argus exits within 20 s of SIGTERM");
    assert!(status.success(), "a graceful stop exits 0: {status:?}");
    let end = rt.block_on(async { tokio::time::timeout(PATIENCE, stream.message()).await.expect("the stream ends") });
    match end {
        Err(etcd_client::Error::GRpcStatus(s)) => assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}"),
        other => panic!("the stream ends with UNAVAILABLE, got {other:?}"),
    }
}
