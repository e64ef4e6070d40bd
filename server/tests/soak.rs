//! Soak test: the built `argus` binary (`--fsync always`) under a mixed, seeded load
//! of writers, compactions and watch streams with fast, slow and stalling consumers
//! (cancels and re-creates, floods of progress requests), `kill -9`ed at a random
//! moment of every round and restarted on the same data directory, every watcher
//! resumed at its last seen revision + 1.
//!
//! Between rounds (server down) the test opens the data directory itself and reads
//! the revisions the server recovered, and checks:
//! * every acknowledged write is there, at the revision it was acknowledged with,
//!   with exactly the events it makes on the state before it (deletes expanded);
//! * every other new revision is exactly one of the writes in flight at the kill,
//!   none twice (values are unique, so a revision identifies its write);
//! * what each watcher of the round received passes the engine's guarantee checker
//!   (`argus_engine::check`) against the history of the recovered log (every
//!   revision since its compaction, which is never above the revisions already
//!   checked): every matching event in order, exactly once, nothing invented,
//!   prev_kv right.
//!
//! Each incarnation of a watcher (a create on a stream) is checked from its own
//! start; the next incarnation starts at the revision after the last one the
//! previous one proved it reached (an event or a progress notification), or at the
//! compaction revision it was canceled with: so across cancels, re-creates and
//! restarts each watcher receives every event once, with no gap but a reported
//! compaction. The last round ends with every watcher proving it reached the last
//! revision, and the recovered state must be the state the history leads to.
//!
//! The server's anonymous resident memory (`RssAnon` of `/proc/<pid>/status`) is
//! sampled throughout and must stay under [`RSS_LIMIT`].
//!
//! Length: `ARGUS_SOAK_SECS` (default 45 s of load; rounds last an eighth of it,
//! between 4 s and 2 min: a long soak keeps one server up for minutes at a time). Seed: printed at the start; `ARGUS_SEED=<n>` replays its choices
//! (watchers, modes, writes, kill points), though not the threads' interleaving.
//! `scripts/soak.sh` runs it alone, in release, for as long as asked.

#[path = "conformance/common.rs"]
#[allow(dead_code)]
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argus_engine::check::{self, History, Observed};
use argus_engine::store::{prefix_end, RangeOptions, Store, StoreOptions};
use argus_engine::watch::EventKind;
use etcd_client::proto::PbWatchResponse;

use common::{apply_recorded, connect, observed, ArgusProcess, Load, Op, Spec, PATIENCE};

/// Writer tasks.
const WRITERS: usize = 2;
/// Keys per writer (`/s/<w>/<i>`).
const KEYS: usize = 12;
/// The server's anonymous resident memory (`RssAnon`: its heap, not the mapped log,
/// whose pages count in `VmRSS` and grow with the log) must stay below this. This
/// load needs under 20 MiB of it; a leak of a response, a batch or a watcher per
/// event would cross the bound within a round of a long soak.
const RSS_LIMIT: u64 = 256 << 20;

// ---------------------------------------------------------------------------------
// Seeded choices
// ---------------------------------------------------------------------------------

/// splitmix64: small, seedable, good enough to pick test actions.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn fork(&mut self) -> Rng {
        Rng(self.next())
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.trim().parse().unwrap_or_else(|_| panic!("{name}={v}: not a number")))
}

// ---------------------------------------------------------------------------------
// Writes
// ---------------------------------------------------------------------------------

fn key(w: usize, i: u64) -> Vec<u8> {
    format!("/s/{w}/{:02}", i % KEYS as u64).into_bytes()
}

/// A write of writer `w`: always at least one put (so it makes a revision, and its
/// unique values identify it), sometimes a large value (so stalled consumers fill
/// their streams), sometimes a txn with a delete or a prefix delete. Keys within one
/// write are distinct.
fn write_op(rng: &mut Rng, w: usize, round: usize, seq: usize) -> Vec<Op> {
    let tag = format!("w{w}-r{round}-s{seq}");
    let val = |t: &str, rng: &mut Rng| {
        let mut v = format!("{t}-{tag}").into_bytes();
        if rng.chance(5) {
            v.resize(v.len() + 4096, b'.');
        }
        v
    };
    let k = rng.below(KEYS as u64);
    match rng.below(10) {
        0..=5 => vec![Op::Put(key(w, k), val("p", rng))],
        6 | 7 => vec![
            Op::Put(key(w, k), val("t1", rng)),
            Op::Put(key(w, k + 1), val("t2", rng)),
            Op::Delete(key(w, k + 2), Vec::new()),
        ],
        8 => vec![Op::Delete(key(w, k), Vec::new()), Op::Put(format!("/s/m/{w}").into_bytes(), val("m", rng))],
        _ => {
            let p = format!("/s/{w}/0").into_bytes();
            let end = prefix_end(&p);
            vec![Op::Delete(p, end), Op::Put(format!("/s/d/{w}").into_bytes(), val("d", rng))]
        }
    }
}

async fn writer(endpoint: String, w: usize, round: usize, mut rng: Rng, load: Arc<Load>) {
    let mut client = connect(&endpoint).await;
    for seq in 0.. {
        if load.stop.load(Ordering::SeqCst) {
            return;
        }
        let ops = write_op(&mut rng, w, round, seq);
        // A pause of 0-3 ms: a release build would otherwise write thousands of
        // revisions a second, and the test reads each round's log back into memory.
        tokio::time::sleep(Duration::from_millis(rng.below(4))).await;
        if !apply_recorded(&mut client, ops, Duration::from_secs(10), &load).await {
            return;
        }
    }
}

/// Compacts now and then, never above `floor` (the revisions the test has already
/// read back, so the history never misses one) nor near the head.
async fn compactor(endpoint: String, floor: u64, mut rng: Rng, calm: Arc<AtomicBool>, compactions: Arc<AtomicU64>) {
    let mut client = connect(&endpoint).await;
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1500))).await;
        if calm.load(Ordering::SeqCst) {
            return;
        }
        let Ok(r) = client.get("/", None).await else { return };
        let head = r.header().map_or(0, |h| h.revision() as u64);
        let target = floor.min(head.saturating_sub(5 + rng.below(50)));
        if target > last {
            match client.compact(target as i64, None).await {
                Ok(_) => {
                    last = target;
                    compactions.fetch_add(1, Ordering::SeqCst);
                }
                Err(etcd_client::Error::GRpcStatus(s)) if s.code() == tonic::Code::OutOfRange => last = target,
                Err(_) => return,
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Watch streams
// ---------------------------------------------------------------------------------

/// A watcher kept across rounds.
#[derive(Clone, Debug)]
struct Logical {
    spec: Spec,
    /// The last revision it proved it reached (its start - 1 before anything).
    vouched: u64,
    incarnations: usize,
    /// Revisions skipped because a compaction canceled it (reported gaps).
    compacted_away: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Fast,
    /// Sleeps up to this many ms after each response.
    Slow(u64),
    /// Stops reading for 0.5-4 s now and then.
    Stalling,
}

/// One watcher of a stream in the round.
struct Live {
    logical: usize,
    w: Logical,
    /// The id of its current incarnation, until canceled.
    id: Option<i64>,
    open: bool,
    cancel_sent: bool,
}

/// What one stream did in a round.
#[derive(Default)]
struct StreamLog {
    /// Every incarnation created on it (id and start), for the checker.
    incarnations: Vec<Spec>,
    /// Every response, in arrival order.
    responses: Vec<PbWatchResponse>,
    /// The watchers as they ended the round.
    finished: Vec<(usize, Logical)>,
    progress_requests: usize,
    cancels: usize,
}

/// Shared with the test's main thread: the least revision any watcher of the
/// stream proved (and whether one is between incarnations).
#[derive(Default)]
struct StreamState {
    min_vouched: u64,
    settled: bool,
    ended: Option<String>,
}

fn incarnation(w: &mut Logical, id: i64) -> Spec {
    w.incarnations += 1;
    Spec { id, start: w.vouched as i64 + 1, ..w.spec.clone() }
}

#[allow(clippy::too_many_arguments)]
async fn stream_task(
    client: etcd_client::Client,
    mut live: Vec<Live>,
    mode: Mode,
    mut rng: Rng,
    calm: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<StreamState>>,
) -> StreamLog {
    let mut log = StreamLog::default();
    let mut next_id = 1i64;
    let mut wc = client.watch_client();
    let first = {
        let s = incarnation(&mut live[0].w, next_id);
        live[0].id = Some(next_id);
        next_id += 1;
        s
    };
    log.incarnations.push(first.clone());
    let stream = match wc.watch(first.key.clone(), Some(first.options())).await {
        Ok(s) => s,
        Err(e) => {
            // The server was killed before the stream opened: nothing happened.
            state.lock().unwrap().ended = Some(e.to_string());
            log.finished = live.into_iter().map(|l| (l.logical, l.w)).collect();
            return log;
        }
    };
    let (mut sender, mut receiver) = stream.split();
    for l in live.iter_mut().skip(1) {
        let s = incarnation(&mut l.w, next_id);
        l.id = Some(next_id);
        next_id += 1;
        log.incarnations.push(s.clone());
        if sender.watch(s.key.clone(), Some(s.options())).await.is_err() {
            break;
        }
    }
    let mut tick = tokio::time::interval(Duration::from_millis(100 + rng.below(200)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = loop {
        if stop.load(Ordering::SeqCst) {
            break "stopped".to_string();
        }
        tokio::select! {
            m = receiver.message() => {
                let m = match m {
                    Ok(Some(m)) => m.0,
                    Ok(None) => break "the server ended the stream".to_string(),
                    Err(e) => break e.to_string(),
                };
                let rev = m.header.as_ref().map_or(0, |h| h.revision as u64);
                if m.watch_id == -1 && !m.created && !m.canceled && m.events.is_empty() {
                    for l in live.iter_mut().filter(|l| l.open) {
                        l.w.vouched = l.w.vouched.max(rev);
                    }
                } else if let Some(l) = live.iter_mut().find(|l| l.id == Some(m.watch_id)) {
                    if m.created {
                        l.open = true;
                    }
                    let ev = m.events.iter().filter_map(|e| e.kv.as_ref()).map(|kv| kv.mod_revision as u64).max();
                    match ev {
                        Some(e) => l.w.vouched = l.w.vouched.max(e),
                        None if !m.created && !m.canceled => l.w.vouched = l.w.vouched.max(rev),
                        None => {}
                    }
                    if m.canceled {
                        l.open = false;
                        l.id = None;
                        l.cancel_sent = false;
                        let c = m.compact_revision.max(0) as u64;
                        if c > l.w.vouched + 1 {
                            l.w.compacted_away += c - 1 - l.w.vouched;
                            l.w.vouched = c - 1;
                        }
                        // Re-created at once, from where it got to.
                        let s = incarnation(&mut l.w, next_id);
                        l.id = Some(next_id);
                        next_id += 1;
                        log.incarnations.push(s.clone());
                        if let Err(e) = sender.watch(s.key.clone(), Some(s.options())).await {
                            log.responses.push(m);
                            break e.to_string();
                        }
                    }
                }
                log.responses.push(m);
                if let Mode::Slow(ms) = mode {
                    if !calm.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(rng.below(ms + 1))).await;
                    }
                }
            }
            _ = tick.tick() => {
                let calm_now = calm.load(Ordering::SeqCst);
                {
                    let mut st = state.lock().unwrap();
                    st.min_vouched = live.iter().map(|l| l.w.vouched).min().unwrap_or(0);
                    st.settled = live.iter().all(|l| l.open && !l.cancel_sent);
                }
                if calm_now {
                    // The last round's end: ask every watcher where it is.
                    if sender.request_progress().await.is_err() {
                        break "request failed".to_string();
                    }
                    log.progress_requests += 1;
                    continue;
                }
                if rng.chance(15) {
                    let open: Vec<usize> = (0..live.len()).filter(|&i| live[i].open && !live[i].cancel_sent).collect();
                    if !open.is_empty() {
                        let i = open[rng.below(open.len() as u64) as usize];
                        live[i].cancel_sent = true;
                        log.cancels += 1;
                        if sender.cancel(live[i].id.expect("an open watcher has an id")).await.is_err() {
                            break "cancel failed".to_string();
                        }
                    }
                }
                if rng.chance(10) {
                    let n = 1 + rng.below(60) as usize;
                    for _ in 0..n {
                        if sender.request_progress().await.is_err() {
                            break;
                        }
                    }
                    log.progress_requests += n;
                }
                if mode == Mode::Stalling && rng.chance(20) {
                    tokio::time::sleep(Duration::from_millis(500 + rng.below(3500))).await;
                }
            }
        }
    };
    state.lock().unwrap().ended = Some(end);
    log.finished = live.into_iter().map(|l| (l.logical, l.w)).collect();
    log
}

/// A new watcher: a prefix, a key, a range or everything, with random filters and
/// options, starting at `start`.
fn new_logical(rng: &mut Rng, start: u64) -> Logical {
    let w = rng.below(WRITERS as u64) as usize;
    let mut spec = match rng.below(5) {
        0 => Spec::prefix(0, "/s/"),
        1 => Spec::prefix(0, &format!("/s/{w}/")),
        2 => Spec { key: key(w, rng.below(KEYS as u64)), ..Spec::default() },
        3 => Spec::range(0, &format!("/s/{w}/03"), &format!("/s/{w}/09")),
        _ => Spec::range(0, "\0", "\0"),
    };
    spec.prev_kv = rng.chance(50);
    spec.progress_notify = rng.chance(30);
    match rng.below(8) {
        0 => spec.no_put = true,
        1 => spec.no_delete = true,
        _ => {}
    }
    Logical { spec, vouched: start.saturating_sub(1), incarnations: 0, compacted_away: 0 }
}

// ---------------------------------------------------------------------------------
// Reading back what the server recovered
// ---------------------------------------------------------------------------------

type Puts = Vec<(Vec<u8>, Vec<u8>)>;

fn puts_of(ops: &[Op]) -> Puts {
    ops.iter()
        .filter_map(|o| match o {
            Op::Put(k, v) => Some((k.clone(), v.clone())),
            Op::Delete(..) => None,
        })
        .collect()
}

fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    match end {
        [] => key == start,
        [0] => key >= start,
        _ => key >= start && key < end,
    }
}

/// The events `ops` make on the state at `rev - 1`, as (kind, key, value).
fn expected_events(history: &History, rev: u64, ops: &[Op]) -> Vec<(EventKind, Vec<u8>, Vec<u8>)> {
    let state = history.state_at(rev - 1);
    let mut out = Vec::new();
    for op in ops {
        match op {
            Op::Put(k, v) => out.push((EventKind::Put, k.clone(), v.clone())),
            Op::Delete(k, end) => out.extend(
                state
                    .keys()
                    .filter(|key| in_range(key, k, end))
                    .map(|key| (EventKind::Delete, key.clone(), Vec::new())),
            ),
        }
    }
    out
}

/// Opens the data directory (the server is down) and checks the revisions after
/// `prev_last` against the writes made. Returns the history of the log as
/// recovered: every revision since its compaction, which the compactor keeps at or
/// below `prev_last`, so every revision of the round is in it (and the test's
/// memory is bounded by the log the server keeps, not by the length of the soak).
fn absorb(data: &Path, prev_last: u64, load: &Load) -> History {
    let store = Store::open(data, StoreOptions::default()).expect("open the data directory the server left");
    let last = store.current_revision();
    let from = prev_last.max(1) + 1;
    let history = History::from_log(&store.log().reader(), 1, last).expect("read the log");
    let compact = store.compact_revision();
    assert!(compact <= prev_last.max(1), "compacted at {compact}, above the revisions already checked ({prev_last})");
    let refused = load.refused.lock().unwrap().clone();
    assert!(refused.is_empty(), "writes refused: {refused:?}");
    let acked: BTreeMap<u64, Vec<Op>> = std::mem::take(&mut *load.acked.lock().unwrap()).into_iter().collect();
    let in_flight = std::mem::take(&mut *load.in_flight.lock().unwrap());
    if let Some((&max, _)) = acked.last_key_value() {
        assert!(max <= last, "acknowledged revision {max} is not in the recovered log (it ends at {last})");
    }
    let mut used = vec![false; in_flight.len()];
    for rev in from..=last {
        let events = history.events_at(rev);
        assert!(!events.is_empty(), "revision {rev} has no events");
        let got: Vec<(EventKind, Vec<u8>, Vec<u8>)> =
            events.iter().map(|e| (e.kind, e.kv.key.clone(), e.kv.value.clone())).collect();
        let got_puts: Puts =
            got.iter().filter(|(k, ..)| *k == EventKind::Put).map(|(_, k, v)| (k.clone(), v.clone())).collect();
        let ops = match acked.get(&rev) {
            Some(ops) => ops,
            None => {
                let i = in_flight
                    .iter()
                    .position(|ops| puts_of(ops) == got_puts)
                    .unwrap_or_else(|| panic!("revision {rev} ({got_puts:?}) is no write that was made"));
                assert!(!used[i], "the write in flight {:?} was applied twice (again at {rev})", in_flight[i]);
                used[i] = true;
                &in_flight[i]
            }
        };
        assert_eq!(got, expected_events(&history, rev, ops), "revision {rev}: the events of the write {ops:?}");
    }
    for rev in acked.keys() {
        assert!(*rev >= from, "acknowledged revision {rev} was already taken by an earlier write");
    }
    history
}

/// The recovered state equals the state the history leads to.
fn assert_state(data: &Path, history: &History) {
    let store = Store::open(data, StoreOptions::default()).expect("open the data directory");
    let res = store.range(b"\0", b"\0", RangeOptions::default()).expect("read everything");
    let want: Vec<_> = history.state_at(store.current_revision()).into_values().collect();
    assert_eq!(res.kvs, want, "the recovered state");
}

// ---------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------

/// A `/proc/<pid>/status` field in bytes (`VmRSS`, `RssAnon`).
fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let v = s.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
    let kb: u64 = v.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// Samples the memory of `pid` every 100 ms until `stop`; the largest `RssAnon` and
/// `VmRSS` seen.
fn sample_rss(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u64, u64)> {
    std::thread::spawn(move || {
        let (mut anon, mut rss) = (0, 0);
        while !stop.load(Ordering::SeqCst) {
            anon = anon.max(status_bytes(pid, "RssAnon").unwrap_or(0));
            rss = rss.max(status_bytes(pid, "VmRSS").unwrap_or(0));
            std::thread::sleep(Duration::from_millis(100));
        }
        (anon, rss)
    })
}

// ---------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------

#[test]
fn soak_kill9_restarts_with_watchers_resuming() {
    let seed = env_u64("ARGUS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_nanos() as u64
    });
    let secs = env_u64("ARGUS_SOAK_SECS").unwrap_or(45);
    eprintln!("soak: ARGUS_SEED={seed} ARGUS_SOAK_SECS={secs}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let round_len = (secs / 8).clamp(4, 120);
    let deadline = Instant::now() + Duration::from_secs(secs);

    let mut last_rev = 1u64;
    let mut watchers: Vec<Logical> = (0..8).map(|_| new_logical(&mut rng, 1)).collect();
    let mut totals = (0usize, 0usize, 0usize, 0usize); // responses, progress requests, cancels, incarnations
    let mut max_rss = 0u64;
    let compactions = Arc::new(AtomicU64::new(0));
    let mut acks_total = 0usize;
    for round in 0.. {
        let last_round = Instant::now() >= deadline;
        let floor = last_rev;
        if round > 0 && rng.chance(40) {
            // A late joiner, from a recent revision or from the first (compacted by
            // now: canceled with the compaction revision, and resumed from there).
            let start = if rng.chance(50) { 1 } else { floor.saturating_sub(rng.below(100)).max(1) };
            watchers.push(new_logical(&mut rng, start));
        }
        let server = ArgusProcess::start(&data, &["--fsync", "always", "--progress-interval", "700ms"]);
        let endpoint = server.endpoint();
        let rss_stop = Arc::new(AtomicBool::new(false));
        let rss = sample_rss(server.pid(), Arc::clone(&rss_stop));
        let load = Arc::new(Load::default());
        let calm = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));

        // Streams: the watchers shuffled into 2-5 streams on 2 connections.
        let n_streams = 2 + rng.below(4) as usize;
        let mut groups: Vec<Vec<Live>> = (0..n_streams).map(|_| Vec::new()).collect();
        for (i, w) in watchers.iter().enumerate() {
            let g = rng.below(n_streams as u64) as usize;
            groups[g].push(Live { logical: i, w: w.clone(), id: None, open: false, cancel_sent: false });
        }
        groups.retain(|g| !g.is_empty());
        let modes: Vec<Mode> = groups
            .iter()
            .map(|_| match rng.below(3) {
                0 => Mode::Fast,
                1 => Mode::Slow(1 + rng.below(20)),
                _ => Mode::Stalling,
            })
            .collect();
        let kill_after = Duration::from_millis(round_len * 500 + rng.below(round_len * 1000));

        let (logs, states) = rt.block_on(async {
            let clients = [connect(&endpoint).await, connect(&endpoint).await];
            let mut tasks = Vec::new();
            let mut states = Vec::new();
            for (i, (g, mode)) in groups.into_iter().zip(modes.iter().copied()).enumerate() {
                let st = Arc::new(Mutex::new(StreamState::default()));
                states.push(Arc::clone(&st));
                tasks.push(tokio::spawn(stream_task(
                    clients[i % 2].clone(),
                    g,
                    mode,
                    rng.fork(),
                    Arc::clone(&calm),
                    Arc::clone(&stop),
                    st,
                )));
            }
            let mut writers: Vec<_> = (0..WRITERS)
                .map(|w| tokio::spawn(writer(endpoint.clone(), w, round, rng.fork(), Arc::clone(&load))))
                .collect();
            let comp = tokio::spawn(compactor(
                endpoint.clone(),
                floor,
                rng.fork(),
                Arc::clone(&calm),
                Arc::clone(&compactions),
            ));
            tokio::time::sleep(kill_after).await;
            let mut server = Some(server);
            if last_round {
                // Quiet the load, then wait until every watcher proves the last revision.
                calm.store(true, Ordering::SeqCst);
                load.stop.store(true, Ordering::SeqCst);
                for w in writers.drain(..) {
                    w.await.expect("writer task");
                }
                let mut c = connect(&endpoint).await;
                let head = c.get("/", None).await.expect("get").header().expect("header").revision() as u64;
                let wait = Instant::now() + PATIENCE * 2;
                loop {
                    let ready = states.iter().all(|s| {
                        let s = s.lock().unwrap();
                        s.settled && s.min_vouched >= head
                    });
                    if ready {
                        break;
                    }
                    for s in &states {
                        if let Some(e) = &s.lock().unwrap().ended {
                            panic!("a watch stream ended in the last round: {e}");
                        }
                    }
                    assert!(Instant::now() < wait, "the watchers did not all reach revision {head}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                stop.store(true, Ordering::SeqCst);
            }
            // kill -9, writers mid-write (or idle, in the last round).
            if let Some(s) = server.take() {
                s.kill9();
            }
            load.stop.store(true, Ordering::SeqCst);
            // Every writer has recorded its last write (acknowledged or in flight)
            // before the log is read back.
            for w in writers {
                tokio::time::timeout(PATIENCE, w).await.expect("a writer ends").expect("writer task");
            }
            tokio::time::timeout(PATIENCE, comp).await.expect("the compactor ends").expect("compactor task");
            let mut logs = Vec::new();
            for t in tasks {
                logs.push(tokio::time::timeout(PATIENCE, t).await.expect("a stream task ends").expect("stream task"));
            }
            (logs, states)
        });
        drop(states);
        rss_stop.store(true, Ordering::SeqCst);
        let (round_anon, round_rss) = rss.join().expect("rss sampler");
        max_rss = max_rss.max(round_anon);
        let acks = load.acks.load(Ordering::SeqCst);
        acks_total += acks;

        // Read back what the server kept; check it and what the watchers got.
        let history = absorb(&data, last_rev, &load);
        last_rev = history.last_revision().max(1);
        let compact = history.compacted();
        let mut all: Vec<Observed> = Vec::new();
        for log in &logs {
            all.extend(observed(&history, &log.incarnations, &log.responses));
            totals.0 += log.responses.len();
            totals.1 += log.progress_requests;
            totals.2 += log.cancels;
            totals.3 += log.incarnations.len();
            for (i, w) in &log.finished {
                watchers[*i] = w.clone();
            }
        }
        let violations = check::check_all(&history, &all);
        assert!(
            violations.is_empty(),
            "round {round} (ARGUS_SEED={seed}): {} violations, first: {:#?}",
            violations.len(),
            &violations[..violations.len().min(5)]
        );
        eprintln!(
            "soak round {round}: {acks} acks, log at {}, compacted at {compact}, {} streams {:?}, \
             RssAnon max {} MiB (VmRSS {} MiB){}",
            last_rev,
            logs.len(),
            modes,
            round_anon >> 20,
            round_rss >> 20,
            if last_round { " (last)" } else { "" }
        );
        assert!(round_anon > 0, "round {round}: no RssAnon in /proc/<pid>/status");
        assert!(round_anon < RSS_LIMIT, "round {round}: server RssAnon reached {round_anon} bytes (limit {RSS_LIMIT})");
        if last_round {
            let head = last_rev;
            for w in &watchers {
                assert!(w.vouched >= head, "watcher {:?} ended at {} < {head}", w.spec, w.vouched);
            }
            assert_state(&data, &history);
            break;
        }
    }
    let gaps: u64 = watchers.iter().map(|w| w.compacted_away).sum();
    eprintln!(
        "soak done (ARGUS_SEED={seed}): {acks_total} acknowledged writes, {} revisions, {} watchers, \
         {} incarnations, {} responses, {} progress requests, {} cancels, {} compactions \
         ({gaps} revisions skipped by reported compactions), server RssAnon max {} MiB",
        last_rev,
        watchers.len(),
        totals.3,
        totals.0,
        totals.1,
        totals.2,
        compactions.load(Ordering::SeqCst),
        max_rss >> 20
    );
    assert!(acks_total >= 100, "too little load to mean anything: {acks_total} acknowledged writes");
}
