//! Criterion benchmarks of the watch engine (`argus_engine::watch`), and the
//! side-by-side measurements whose figures are ratios.
//!
//! Every store here is a real data directory with fsync `never` (the watch engine
//! reads the log after the fact; durability is not measured). Groups:
//!
//! - `floor/push_100k`: the in-process floor of a fan-out. One `Arc` of a revision
//!   batch is cloned into each of 100,000 per-watcher queues (`Vec<VecDeque<Arc<_>>>`,
//!   capacity reserved beforehand, one thread): one atomic increment and one 8-byte
//!   store per watcher, no allocation, no synchronization. Nothing that hands every
//!   watcher its own reference can do less, so it is the cheapest honest floor. The
//!   queues are emptied outside the timing. `floor/push_pop_100k` also pops and
//!   drops every reference inside the timing (the round trip a consumer pays).
//! - `fanout/{key,prefix}/{1,100}_streams`: 100,000 synced watchers on one key (or
//!   one prefix), on 1 stream or on 100 streams of 1,000, one consumer thread per
//!   stream draining. One iteration: put the key, then wait until every watcher has
//!   received its response (each consumer reports when its stream's share has
//!   arrived). Throughput is 100,000 deliveries per iteration. The consumers read
//!   items (`WatchReceiver::recv_item`: one `Item::Events` per delivery, whose
//!   parts name their watchers and share their revisions) and, per watcher id of
//!   every part, find the watcher in their own table and add the part's events to
//!   its count, as a server writing one response per watcher would; the
//!   `…_streams_per_watcher` variants read the same rig through the per-watcher view
//!   (`WatchReceiver::recv`: one `WatchResponse` built per watcher) with the same
//!   accounting, so both costs show. At the end every watcher must have had one
//!   response of one event per round. Each criterion sample is paired with a floor
//!   sample of the same iteration count timed right before it, so the ratio
//!   (per-delivery cost / per-push floor) comes from measurements side by side; a
//!   breakdown pass then splits a round into the notifier's part (put until
//!   `notified_revision`, consumers held back) and the consumers' part (reading and
//!   accounting the responses).
//! - `etcd/*`, equivalents of etcd's `mvcc` watch benchmarks:
//!   `watchable_store_put` (BenchmarkWatchableStorePut: 10-byte keys and values, a
//!   hub with no watchers, each sample paired with as many puts on a store without a
//!   hub, and the notifier thread's CPU, `argus-notifier`, over the sample) and
//!   `store_put_no_hub` beside it; `watch_put_sync/10000`
//!   (BenchmarkWatchableStoreWatchPutSync: 10,000 watchers on one key on one stream
//!   from revision 0; one put, then drain the 10,000 responses); `watch_put_unsync/10000`
//!   (…WatchPutUnsync: the put is in the past; create 10,000 watchers from its
//!   revision and drain the 10,000 created and 10,000 event responses) with
//!   `watch_create/10000` (create 10,000 from revision 0 and drain the created
//!   responses) so the report can subtract the creation; `synced_cancel` and
//!   `unsynced_cancel` (BenchmarkWatchableStore{Synced,Unsynced}Cancel: a pool of
//!   100,000 watchers on one key; cancel watchers in random order and drain their
//!   canceled responses; time per cancel). Unsynced watchers are kept unsynced with
//!   `WatchOptions::catchup_paused` (no catch-up job runs), as etcd's benchmark
//!   keeps its sync loop from running.
//! - `isolation` (not criterion): put latency in an hdrhistogram on a store with
//!   100,000 synced watchers (100 streams of 1,000; each put reaches 100 of them, one
//!   per stream) of which 10 streams (10,000 watchers) are never read and become
//!   victims, against a store whose hub has no watchers, alternating between the two
//!   every 250 puts (paced, 2,000 puts/s; 80 rounds) or 1,000 puts (back to back; 40
//!   rounds), with the CPU time of the writer, the notifiers, the consumers (reading
//!   items, accounting per watcher as above) and the rest (rayon's pool) during each
//!   side's phases.
//!
//! Measurements that criterion does not keep go to `<target>/watch-results/*.json`
//! (see `watch_common::out_dir`); `watch-report` turns them and criterion's
//! estimates into `results/watch.{md,json}`. `scripts/bench-watch.sh` runs it all.

#[path = "../src/watch_common.rs"]
mod common;

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use argus_engine::store::{KeyValue, Store};
use argus_engine::watch::{
    Event, EventKind, Item, RevisionBatch, WatchController, WatchHub, WatchId, WatchOptions, WatchReceiver,
    WatchRequest, WatchStream,
};
use common::{open_store, wait_notified, wait_synced, wait_until, DataDir};
use criterion::{criterion_group, BenchmarkId, Criterion, SamplingMode, Throughput};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Watchers of the fan-out benchmarks.
const FANOUT_WATCHERS: usize = 100_000;
/// Watchers of the etcd-style put benchmarks.
const ETCD_WATCHERS: usize = 10_000;
/// Watchers in the pool of the cancel benchmarks.
const CANCEL_POOL: usize = 100_000;

/// `ARGUS_WATCH_QUICK=1` (`QUICK=1 scripts/bench-watch.sh`): a smoke run, every
/// criterion time and the isolation rounds cut to a tenth. Its figures are no
/// results; it shows that every part runs and the report can be made.
fn quick() -> bool {
    std::env::var_os("ARGUS_WATCH_QUICK").is_some_and(|v| v == "1")
}

/// A criterion warm-up or measurement time of `ms` milliseconds (a tenth in a quick run).
fn span(ms: u64) -> Duration {
    Duration::from_millis(if quick() { ms / 10 } else { ms })
}

/// `n` rounds (a tenth in a quick run, at least 2).
fn rounds(n: usize) -> usize {
    if quick() {
        (n / 10).max(2)
    } else {
        n
    }
}

/// Measurements kept beside criterion's, saved by `main` at the end.
static EXTRA: Mutex<Vec<(String, Value)>> = Mutex::new(Vec::new());

fn record(name: &str, v: Value) {
    EXTRA.lock().unwrap_or_else(|p| p.into_inner()).push((name.to_string(), v));
}

/// A tiny deterministic generator (xorshift64*), for shuffles and keys.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

// ---------------------------------------------------------------------------
// The floor

/// The batch every floor push shares: one event, like a one-key put.
fn sample_batch() -> Arc<RevisionBatch> {
    let kv = KeyValue {
        key: b"/fan/key".to_vec(),
        value: vec![b'v'; 64],
        create_revision: 2,
        mod_revision: 2,
        version: 1,
        lease: 0,
    };
    Arc::new(RevisionBatch::new(2, vec![Event { kind: EventKind::Put, kv, prev_kv: None, sub: 0 }], false))
}

struct Floor {
    queues: Vec<VecDeque<Arc<RevisionBatch>>>,
    item: Arc<RevisionBatch>,
}

impl Floor {
    fn new(n: usize) -> Floor {
        Floor { queues: (0..n).map(|_| VecDeque::with_capacity(4)).collect(), item: sample_batch() }
    }

    /// Times one push into every queue; empties them untimed.
    fn push_round(&mut self) -> Duration {
        let item = black_box(&self.item);
        let t0 = Instant::now();
        for q in &mut self.queues {
            q.push_back(Arc::clone(item));
        }
        let d = t0.elapsed();
        black_box(&self.queues);
        for q in &mut self.queues {
            q.clear();
        }
        d
    }

    /// Times one push into every queue, then popping and dropping them all.
    fn push_pop_round(&mut self) -> Duration {
        let item = black_box(&self.item);
        let t0 = Instant::now();
        for q in &mut self.queues {
            q.push_back(Arc::clone(item));
        }
        for q in &mut self.queues {
            black_box(q.pop_front());
        }
        t0.elapsed()
    }
}

fn bench_floor(c: &mut Criterion) {
    let mut floor = Floor::new(FANOUT_WATCHERS);
    let mut g = c.benchmark_group("floor");
    g.sample_size(20).warm_up_time(span(500)).measurement_time(span(2000));
    g.throughput(Throughput::Elements(FANOUT_WATCHERS as u64));
    g.bench_function("push_100k", |b| b.iter_custom(|iters| (0..iters).map(|_| floor.push_round()).sum()));
    g.bench_function("push_pop_100k", |b| b.iter_custom(|iters| (0..iters).map(|_| floor.push_pop_round()).sum()));
    g.finish();
}

// ---------------------------------------------------------------------------
// Fan-out

/// Lets consumer threads start round `r` only once it is opened.
#[derive(Default)]
struct Gate {
    round: Mutex<u64>,
    cv: Condvar,
}

impl Gate {
    fn open(&self, r: u64) {
        let mut g = self.round.lock().unwrap_or_else(|p| p.into_inner());
        *g = (*g).max(r);
        self.cv.notify_all();
    }

    fn wait(&self, r: u64) {
        let mut g = self.round.lock().unwrap_or_else(|p| p.into_inner());
        while *g < r {
            g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Target {
    Key,
    Prefix,
}

/// How a consumer reads its stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum View {
    /// `recv_item`: one [`Item::Events`] per delivery, its parts naming the watchers
    /// (what a server that writes bytes reads).
    Items = 0,
    /// `recv`: one etcd-style `WatchResponse` per watcher, built from the items.
    PerWatcher = 1,
}

impl View {
    fn from_u8(v: u8) -> View {
        if v == View::PerWatcher as u8 {
            View::PerWatcher
        } else {
            View::Items
        }
    }
}

/// A consumer's own watchers and what each has received: the per-watcher work a
/// real consumer does for every response (find the watcher, account its events).
struct Mine {
    base: WatchId,
    /// Watch id − `base` → slot; `u32::MAX` for ids that are not ours.
    slot: Vec<u32>,
    /// Events received, per slot.
    events: Vec<u64>,
    /// Responses accounted, all watchers.
    responses: u64,
}

impl Mine {
    fn new(ids: &[WatchId]) -> Mine {
        let base = ids.iter().copied().min().unwrap_or(0);
        let span = ids.iter().map(|&id| (id - base) as usize + 1).max().unwrap_or(0);
        let mut slot = vec![u32::MAX; span];
        for (i, &id) in ids.iter().enumerate() {
            slot[(id - base) as usize] = i as u32;
        }
        Mine { base, slot, events: vec![0; ids.len()], responses: 0 }
    }

    /// One response of `n` events for watcher `id`; panics if `id` is not ours.
    #[inline]
    fn account(&mut self, id: WatchId, n: u64) {
        let s = usize::try_from(id - self.base).ok().and_then(|i| self.slot.get(i).copied()).unwrap_or(u32::MAX);
        assert!(s != u32::MAX, "a response for watch id {id}, not one of this consumer's watchers");
        self.events[s as usize] += n;
        self.responses += 1;
    }

    /// Reads one item or response from `rx` and accounts every watcher response it
    /// carries; returns how many (0 for a response without events), or `None` once
    /// the stream is closed. `wait`: block for it, else only take what is queued.
    fn take(&mut self, rx: &mut WatchReceiver, view: View, wait: bool) -> Option<u64> {
        let before = self.responses;
        match view {
            View::Items => {
                let item = if wait { rx.recv_item()? } else { rx.try_recv_item()? };
                if let Item::Events(d) = item {
                    for part in d.parts() {
                        // A part's events are shared by all its watchers: count them once.
                        let n = part.revisions().iter().map(|r| r.len() as u64).sum();
                        for &id in part.ids().iter() {
                            self.account(id, n);
                        }
                    }
                }
            }
            View::PerWatcher => {
                let r = if wait { rx.recv()? } else { rx.try_recv()? };
                let n = r.event_count() as u64;
                if n > 0 {
                    self.account(r.watch_id, n);
                }
            }
        }
        Some(self.responses - before)
    }

    fn events(&self) -> u64 {
        self.events.iter().sum()
    }
}

/// A store, its hub, and `streams` streams of synced watchers on one key or
/// prefix, each drained by its own consumer thread.
struct FanoutRig {
    store: Store,
    hub: WatchHub,
    ctls: Vec<WatchController>,
    gate: Arc<Gate>,
    stop: Arc<AtomicBool>,
    /// The [`View`] the consumers read the next round with.
    view: Arc<AtomicU8>,
    done_rx: mpsc::Receiver<u64>,
    /// Each consumer's responses and events accounted, when it ends.
    threads: Vec<JoinHandle<(u64, u64)>>,
    round: u64,
    watchers: usize,
    /// Latency of the first put after the watchers were registered (it builds the
    /// index snapshot).
    first_put: Duration,
    setup: Duration,
    _dir: DataDir,
}

/// A consumer thread: in each round, reads its stream (with the round's view)
/// until each of its `per_round` watchers has had its response, then reports.
fn consume(
    mut rx: WatchReceiver,
    mut mine: Mine,
    per_round: u64,
    gate: Arc<Gate>,
    view: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    done: mpsc::Sender<u64>,
) -> (u64, u64) {
    let mut round = 0;
    loop {
        round += 1;
        gate.wait(round);
        if stop.load(Ordering::Acquire) {
            return (mine.responses, mine.events());
        }
        let v = View::from_u8(view.load(Ordering::Acquire));
        let mut got = 0;
        while got < per_round {
            match mine.take(&mut rx, v, true) {
                Some(n) => got += n,
                None => return (mine.responses, mine.events()),
            }
        }
        if done.send(round).is_err() {
            return (mine.responses, mine.events());
        }
    }
}

impl FanoutRig {
    fn new(target: Target, watchers: usize, streams: usize) -> FanoutRig {
        let t0 = Instant::now();
        let dir = DataDir::new("fanout");
        let store = open_store(&dir);
        let hub = WatchHub::new(store.clone(), WatchOptions::default());
        let per = watchers / streams;
        let gate = Arc::new(Gate::default());
        let stop = Arc::new(AtomicBool::new(false));
        let view = Arc::new(AtomicU8::new(View::Items as u8));
        let (done_tx, done_rx) = mpsc::channel();
        let mut ctls = Vec::new();
        let mut threads = Vec::new();
        for _ in 0..streams {
            let mut s = hub.stream();
            let mut ids = Vec::with_capacity(per);
            for _ in 0..per {
                let req = match target {
                    Target::Key => WatchRequest::key("/fan/key"),
                    Target::Prefix => WatchRequest::prefix("/fan/"),
                };
                ids.push(s.watch(req).expect("watch"));
            }
            for _ in 0..per {
                assert!(s.recv().expect("created").created);
            }
            let (ctl, rx) = s.split();
            ctls.push(ctl);
            let (g, v, st, tx) = (Arc::clone(&gate), Arc::clone(&view), Arc::clone(&stop), done_tx.clone());
            let mine = Mine::new(&ids);
            threads.push(std::thread::spawn(move || consume(rx, mine, per as u64, g, v, st, tx)));
        }
        wait_synced(&hub, (per * streams) as u64);
        let setup = t0.elapsed();
        let mut rig = FanoutRig {
            store,
            hub,
            ctls,
            gate,
            stop,
            view,
            done_rx,
            threads,
            round: 0,
            watchers: per * streams,
            first_put: Duration::ZERO,
            setup,
            _dir: dir,
        };
        rig.first_put = rig.round();
        rig
    }

    /// The consumers read the rounds from now on with `view`.
    fn set_view(&self, view: View) {
        self.view.store(view as u8, Ordering::Release);
    }

    /// One put, then wait until every watcher has its response.
    fn round(&mut self) -> Duration {
        self.round += 1;
        self.gate.open(self.round);
        let t0 = Instant::now();
        self.store.put(b"/fan/key", b"v").expect("put");
        for _ in 0..self.ctls.len() {
            let r = self.done_rx.recv().expect("a consumer died");
            debug_assert_eq!(r, self.round);
        }
        t0.elapsed()
    }

    /// One round in two sequential parts: the notifier's (put until it has
    /// processed the revision, consumers held back), then the consumers'.
    fn split_round(&mut self) -> (Duration, Duration) {
        self.round += 1;
        let t0 = Instant::now();
        let rev = self.store.put(b"/fan/key", b"v").expect("put").revision;
        // Coarse polling (every 250 µs, under 1% of a round): finer polling would
        // take a core from the notifier on a 2-core machine.
        while self.hub.metrics().notified_revision < rev {
            std::thread::sleep(Duration::from_micros(250));
        }
        let t1 = Instant::now();
        self.gate.open(self.round);
        for _ in 0..self.ctls.len() {
            self.done_rx.recv().expect("a consumer died");
        }
        (t1 - t0, t1.elapsed())
    }

    /// Stops the consumers and checks their accounts: every watcher had one response
    /// of one event in every round.
    fn finish(mut self) {
        let want = self.round * self.watchers as u64;
        let (responses, events) = self.stop_consumers();
        assert_eq!((responses, events), (want, want), "responses and events accounted over {} rounds", self.round);
    }

    fn stop_consumers(&mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Release);
        self.gate.open(u64::MAX);
        for c in &self.ctls {
            c.close();
        }
        let mut sum = (0, 0);
        for t in self.threads.drain(..) {
            if let Ok((r, e)) = t.join() {
                sum.0 += r;
                sum.1 += e;
            }
        }
        sum
    }
}

impl Drop for FanoutRig {
    fn drop(&mut self) {
        self.stop_consumers();
    }
}

fn bench_fanout(c: &mut Criterion) {
    let mut floor = Floor::new(FANOUT_WATCHERS);
    let mut g = c.benchmark_group("fanout");
    g.sample_size(10)
        .warm_up_time(span(1000))
        .measurement_time(span(6000))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(FANOUT_WATCHERS as u64));
    for (target, tname) in [(Target::Key, "key"), (Target::Prefix, "prefix")] {
        for streams in [1, 100] {
            let base = format!("{streams}_streams");
            let views: Vec<(View, String)> =
                [(View::Items, base.clone()), (View::PerWatcher, format!("{base}_per_watcher"))]
                    .into_iter()
                    .filter(|(_, name)| selected(&format!("fanout/{tname}/{name}")))
                    .collect();
            if views.is_empty() {
                continue;
            }
            eprintln!("[watch] fanout {tname}/{base}: registering {FANOUT_WATCHERS} watchers");
            let mut rig = FanoutRig::new(target, FANOUT_WATCHERS, streams);
            eprintln!(
                "[watch] fanout {tname}/{base}: setup {:.2?}, first put (index build) {:.2?}",
                rig.setup, rig.first_put
            );
            for (view, name) in views {
                rig.set_view(view);
                let id = format!("{tname}/{name}");
                let mut pairs: Vec<(u64, f64, f64)> = Vec::new();
                g.bench_function(BenchmarkId::new(tname, &name), |b| {
                    b.iter_custom(|iters| {
                        let fl: Duration = (0..iters).map(|_| floor.push_round()).sum();
                        let fan: Duration = (0..iters).map(|_| rig.round()).sum();
                        pairs.push((iters, fl.as_nanos() as f64, fan.as_nanos() as f64));
                        fan
                    })
                });
                let mut notif = Vec::new();
                let mut recv = Vec::new();
                for _ in 0..7 {
                    let (a, b) = rig.split_round();
                    notif.push(a.as_nanos() as f64);
                    recv.push(b.as_nanos() as f64);
                }
                if pairs.is_empty() {
                    continue;
                }
                let rounds: u64 = pairs.iter().map(|p| p.0).sum();
                let floor_ns: f64 = pairs.iter().map(|p| p.1).sum();
                let fan_ns: f64 = pairs.iter().map(|p| p.2).sum();
                let mut per_sample: Vec<f64> = pairs.iter().map(|p| p.2 / p.1).collect();
                let n = FANOUT_WATCHERS as f64;
                record(
                    &format!("fanout/{id}"),
                    json!({
                        "watchers": FANOUT_WATCHERS,
                        "streams": streams,
                        "target": tname,
                        "view": match view { View::Items => "items", View::PerWatcher => "per_watcher" },
                        "setup_s": rig.setup.as_secs_f64(),
                        "first_put_s": rig.first_put.as_secs_f64(),
                        "paired_rounds": rounds,
                        "paired_samples": pairs.len(),
                        "floor_ns_per_push": floor_ns / rounds as f64 / n,
                        "fanout_ns_per_delivery": fan_ns / rounds as f64 / n,
                        "ratio": fan_ns / floor_ns,
                        "ratio_median_of_samples": common::median(&mut per_sample),
                        "split_notifier_ns_per_delivery": common::median(&mut notif) / n,
                        "split_consumers_ns_per_delivery": common::median(&mut recv) / n,
                    }),
                );
            }
            rig.finish();
        }
    }
    g.finish();
}

// ---------------------------------------------------------------------------
// etcd equivalents

/// Drains responses from `s` until `n` of them satisfy `want`.
fn drain(s: &mut WatchStream, n: usize, mut want: impl FnMut(&argus_engine::watch::WatchResponse) -> bool) {
    let mut got = 0;
    while got < n {
        let r = s.recv_timeout(Duration::from_secs(60)).expect("a response within a minute");
        if want(&r) {
            got += 1;
        }
    }
}

fn bench_etcd(c: &mut Criterion) {
    let mut g = c.benchmark_group("etcd");
    g.sample_size(10).warm_up_time(span(1000)).measurement_time(span(4000));

    // BenchmarkWatchableStorePut, and the same store without a hub. Each sample of
    // the first is paired with as many puts on the store without a hub, timed just
    // before, for a side-by-side ratio.
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let keys: Vec<Vec<u8>> =
        (0..100_000).map(|_| rng.next().to_le_bytes().iter().chain(b"kk").copied().collect()).collect();
    let val = vec![b'v'; 10];
    if selected("etcd/watchable_store_put") || selected("etcd/store_put_no_hub") {
        let dir_h = DataDir::new("put-hub");
        let with_hub = open_store(&dir_h);
        let (hub, tid) = common::hub_with_tid(&with_hub, WatchOptions::default());
        let dir_b = DataDir::new("put-bare");
        let bare = open_store(&dir_b);
        let mut i = 0;
        let mut put = |s: &Store| {
            i = (i + 1) % keys.len();
            s.put(&keys[i], &val).expect("put")
        };
        g.throughput(Throughput::Elements(1));
        let (mut paired_bare, mut paired_hub, mut paired_n) = (0.0, 0.0, 0u64);
        // The notifier's CPU over the whole benchmark (its idle wake-ups during the
        // bare puts included), per put on the hub's store. A hub that nobody watches
        // is not woken per commit, so there is no per-put work to wait for.
        let cpu0 = (tid != 0).then(|| common::thread_cpu(tid));
        g.bench_function("watchable_store_put", |b| {
            b.iter_custom(|iters| {
                let t0 = Instant::now();
                for _ in 0..iters {
                    black_box(put(&bare));
                }
                paired_bare += t0.elapsed().as_nanos() as f64;
                let t0 = Instant::now();
                for _ in 0..iters {
                    black_box(put(&with_hub));
                }
                let d = t0.elapsed();
                paired_hub += d.as_nanos() as f64;
                paired_n += iters;
                d
            })
        });
        let notifier_cpu = cpu0.map(|c0| common::thread_cpu(tid) - c0);
        g.bench_function("store_put_no_hub", |b| b.iter(|| put(&bare)));
        record(
            "etcd/watchable_store_put",
            json!({
                "paired_puts": paired_n,
                "paired_ns_per_put_with_hub": paired_hub / paired_n as f64,
                "paired_ns_per_put_without_hub": paired_bare / paired_n as f64,
                "paired_ratio": paired_hub / paired_bare,
                // Thread id 0: no thread named `argus-notifier` appeared with the hub,
                // so its CPU was not measured.
                "notifier_thread": tid,
                "notifier_cpu_ns_per_put": notifier_cpu.map(|c| c * 1e9 / paired_n as f64),
            }),
        );
        drop(hub);
    }

    // WatchPutSync: watchers from revision 0 on one key, one stream.
    if selected(&format!("etcd/watch_put_sync/{ETCD_WATCHERS}")) {
        let dir = DataDir::new("putsync");
        let store = open_store(&dir);
        let hub = WatchHub::new(store.clone(), WatchOptions::default());
        let mut s = hub.stream();
        for _ in 0..ETCD_WATCHERS {
            s.watch(WatchRequest::key("testkey")).expect("watch");
        }
        drain(&mut s, ETCD_WATCHERS, |r| r.created);
        wait_synced(&hub, ETCD_WATCHERS as u64);
        store.put(b"testkey", b"testval").expect("put"); // builds the index
        drain(&mut s, ETCD_WATCHERS, |r| !r.events.is_empty());
        g.throughput(Throughput::Elements(ETCD_WATCHERS as u64));
        g.bench_function(BenchmarkId::new("watch_put_sync", ETCD_WATCHERS), |b| {
            b.iter_custom(|iters| {
                let t0 = Instant::now();
                for _ in 0..iters {
                    store.put(b"testkey", b"testval").expect("put");
                    drain(&mut s, ETCD_WATCHERS, |r| !r.events.is_empty());
                }
                t0.elapsed()
            })
        });
    }

    // WatchPutUnsync (the put is in the past: catch-up delivers it) and the bare
    // creation of as many watchers, to subtract.
    if selected(&format!("etcd/watch_put_unsync/{ETCD_WATCHERS}"))
        || selected(&format!("etcd/watch_create/{ETCD_WATCHERS}"))
    {
        let dir = DataDir::new("putunsync");
        let store = open_store(&dir);
        let hub = WatchHub::new(store.clone(), WatchOptions::default());
        let past = store.put(b"testkey", b"testval").expect("put").revision;
        for (name, from) in [("watch_put_unsync", past as i64), ("watch_create", 0)] {
            g.throughput(Throughput::Elements(ETCD_WATCHERS as u64));
            let mut victims_max = 0;
            let mut rounds = 0u64;
            g.bench_function(BenchmarkId::new(name, ETCD_WATCHERS), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let mut s = hub.stream();
                        let t0 = Instant::now();
                        for _ in 0..ETCD_WATCHERS {
                            s.watch(WatchRequest::key("testkey").from_revision(from)).expect("watch");
                        }
                        if from == 0 {
                            drain(&mut s, ETCD_WATCHERS, |r| r.created);
                        } else {
                            drain(&mut s, ETCD_WATCHERS, |r| {
                                victims_max = victims_max.max(hub.metrics().victims);
                                !r.events.is_empty()
                            });
                        }
                        total += t0.elapsed();
                        rounds += 1;
                        s.close();
                        drop(s);
                        // A revision makes the notifier apply the index changes (the
                        // adds and removes above) instead of piling them up.
                        let rev = store.put(b"other", b"x").expect("put").revision;
                        wait_notified(&hub, rev);
                        wait_until("watchers removed", Duration::from_secs(60), Duration::from_micros(200), || {
                            hub.metrics().watchers == 0
                        });
                    }
                    total
                })
            });
            record(&format!("etcd/{name}"), json!({"rounds": rounds, "victims_max_seen": victims_max}));
        }
    }

    // SyncedCancel / UnsyncedCancel.
    for synced in [true, false] {
        let name = if synced { "synced_cancel" } else { "unsynced_cancel" };
        if !selected(&format!("etcd/{name}")) {
            continue;
        }
        let dir = DataDir::new("cancel");
        let store = open_store(&dir);
        // Unsynced: no catch-up job runs, so the watchers stay unsynced (etcd's
        // benchmark likewise keeps its sync loop off).
        let mut opts = WatchOptions::default();
        opts.catchup_paused = !synced;
        let hub = WatchHub::new(store.clone(), opts);
        let past = store.put(b"foo", b"bar").expect("put").revision;
        let from = if synced { 0 } else { past as i64 };
        let mut s = hub.stream();
        let mut pool: Vec<WatchId> = Vec::new();
        let mut rng = Rng(42);
        let refill = |s: &mut WatchStream, pool: &mut Vec<WatchId>, rng: &mut Rng, want: usize| {
            if pool.len() >= want {
                return;
            }
            let n = want - pool.len();
            for _ in 0..n {
                pool.push(s.watch(WatchRequest::key("foo").from_revision(from)).expect("watch"));
            }
            drain(s, n, |r| r.created);
            rng.shuffle(pool);
            let live = pool.len() as u64;
            wait_until("the pool registered", Duration::from_secs(120), Duration::from_millis(1), || {
                let m = hub.metrics();
                m.watchers == live && if synced { m.synced == live } else { m.unsynced == live }
            });
        };
        refill(&mut s, &mut pool, &mut rng, CANCEL_POOL);
        g.throughput(Throughput::Elements(1));
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let iters = iters as usize;
                refill(&mut s, &mut pool, &mut rng, CANCEL_POOL.max(iters + 1));
                let victims: Vec<WatchId> = pool.split_off(pool.len() - iters);
                let t0 = Instant::now();
                for id in &victims {
                    s.cancel(*id).expect("cancel");
                }
                drain(&mut s, iters, |r| r.canceled);
                t0.elapsed()
            })
        });
        let m = hub.metrics();
        record(
            &format!("etcd/{name}"),
            json!({"pool": CANCEL_POOL, "watchers_left": m.watchers, "synced_left": m.synced, "unsynced_left": m.unsynced, "catchup_paused": !synced}),
        );
        s.close();
    }
    g.finish();
}

// ---------------------------------------------------------------------------
// Write isolation

struct Lat {
    hist: Histogram<u64>,
}

impl Lat {
    fn new() -> Lat {
        Lat { hist: Histogram::new_with_bounds(100, 60_000_000_000, 3).expect("histogram") }
    }

    fn summary(&self) -> Value {
        let h = &self.hist;
        json!({
            "count": h.len(),
            "p50_ns": h.value_at_quantile(0.50),
            "p90_ns": h.value_at_quantile(0.90),
            "p99_ns": h.value_at_quantile(0.99),
            "p999_ns": h.value_at_quantile(0.999),
            "max_ns": h.max(),
            "mean_ns": h.mean(),
        })
    }
}

/// Name of the isolation benchmark's consumer threads (to tell their CPU time apart).
const CONSUMER_THREAD: &str = "iso-consumer";

/// CPU seconds so far of this process's threads, by role: the writer (main thread),
/// each notifier, the isolation consumers, and everything else (rayon's pool).
fn cpu_by_role(notifiers: &[u32]) -> [f64; 4] {
    let main = std::process::id();
    let mut out = [0.0; 4];
    if let Ok(rd) = std::fs::read_dir("/proc/self/task") {
        for e in rd.flatten() {
            let tid: u32 = e.file_name().to_string_lossy().parse().unwrap_or(0);
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            let role = if tid == main {
                0
            } else if notifiers.contains(&tid) {
                1
            } else if comm.trim() == CONSUMER_THREAD {
                2
            } else {
                3
            };
            out[role] += common::thread_cpu(tid);
        }
    }
    out
}

fn isolation() {
    const STREAMS: usize = 100;
    const PER_STREAM: usize = 1000;
    const STALLED: usize = 10;
    const KEYS: usize = 1000;
    const CONSUMERS: usize = 2;
    let live_watchers = ((STREAMS - STALLED) * PER_STREAM) as u64;
    let stalled_watchers = (STALLED * PER_STREAM) as u64;
    let keys: Vec<Vec<u8>> = (0..KEYS).map(|i| format!("/iso/{i:04}").into_bytes()).collect();
    let value = vec![b'v'; 64];

    let dir_w = DataDir::new("iso-watched");
    let watched = open_store(&dir_w);
    let (hub_w, tid_w) = common::hub_with_tid(&watched, WatchOptions::default());
    let dir_b = DataDir::new("iso-bare");
    let bare = open_store(&dir_b);
    let (hub_b, tid_b) = common::hub_with_tid(&bare, WatchOptions::default());

    // 100 streams of 1,000 watchers; watcher i of every stream watches key i.
    let mut live: Vec<Vec<(WatchReceiver, Mine)>> = (0..CONSUMERS).map(|_| Vec::new()).collect();
    let mut stalled = Vec::new();
    let mut ctls = Vec::new();
    for s_i in 0..STREAMS {
        let mut s = hub_w.stream();
        let ids: Vec<WatchId> =
            keys.iter().take(PER_STREAM).map(|k| s.watch(WatchRequest::key(k.clone())).expect("watch")).collect();
        drain(&mut s, PER_STREAM, |r| r.created);
        let (ctl, rx) = s.split();
        ctls.push(ctl);
        if s_i < STALLED {
            stalled.push(rx);
        } else {
            live[s_i % CONSUMERS].push((rx, Mine::new(&ids)));
        }
    }
    wait_synced(&hub_w, (STREAMS * PER_STREAM) as u64);
    // Consumers: a couple of threads polling their streams, as an async runtime's
    // workers would (one thread per stream would mostly measure the scheduler),
    // reading items and accounting each watcher's response as a server would.
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let threads: Vec<_> = live
        .into_iter()
        .map(|mut rxs| {
            let (stop, received) = (Arc::clone(&stop), Arc::clone(&received));
            std::thread::Builder::new().name(CONSUMER_THREAD.into()).spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let mut any = 0;
                    for (rx, mine) in &mut rxs {
                        while let Some(n) = mine.take(rx, View::Items, false) {
                            any += n;
                        }
                    }
                    if any == 0 {
                        std::thread::sleep(Duration::from_micros(100));
                    } else {
                        received.fetch_add(any, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .expect("spawn a consumer");

    // Whether the watched hub is in the state under test: every drained watcher
    // synced, every stalled one a victim. Waits up to `limit` for it.
    let settle = |limit: Duration| -> bool {
        let t0 = Instant::now();
        loop {
            let m = hub_w.metrics();
            if m.synced == live_watchers && m.victims == stalled_watchers {
                return true;
            }
            if t0.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    };

    // Fill the stalled streams so that all their watchers become victims (puts
    // paced so that the drained streams keep up).
    let mut last = 0;
    for i in 0..(2 * KEYS + 200) {
        last = watched.put(&keys[i % KEYS], &value).expect("put").revision;
        std::thread::sleep(Duration::from_micros(200));
    }
    wait_notified(&hub_w, last);
    let settled_at_start = settle(Duration::from_secs(120));
    let before = hub_w.metrics();
    eprintln!("[watch] isolation: {} synced, {} victims (settled: {settled_at_start})", before.synced, before.victims);

    let mut out = serde_json::Map::new();
    // (mode, rounds, puts per phase, pacing)
    for (mode, rounds, per_phase, pace) in [
        ("paced_2000_per_s", rounds(80), 250usize, Some(Duration::from_micros(500))),
        ("back_to_back", rounds(40), 1000, None),
    ] {
        let mut lat_w = Lat::new();
        let mut lat_b = Lat::new();
        let mut k = 0usize;
        let mut unsettled = 0;
        // CPU by role (writer, notifiers, consumers, other) and wall time, during
        // each side's phases.
        let mut cpu = [[0.0f64; 5]; 2];
        for round in 0..rounds {
            for phase in 0..2 {
                let watched_phase = (round + phase) % 2 == 0;
                // Start each phase with both notifiers idle and the watched hub settled.
                wait_notified(&hub_w, watched.current_revision());
                wait_notified(&hub_b, bare.current_revision());
                if !settle(Duration::from_secs(5)) {
                    unsettled += 1;
                }
                let (store, lat, side) = if watched_phase { (&watched, &mut lat_w, 0) } else { (&bare, &mut lat_b, 1) };
                let c0 = cpu_by_role(&[tid_w, tid_b]);
                let start = Instant::now();
                for j in 0..per_phase {
                    if let Some(p) = pace {
                        let due = start + p * j as u32;
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                    }
                    k += 1;
                    let t0 = Instant::now();
                    store.put(&keys[k % KEYS], &value).expect("put");
                    lat.hist.saturating_record(t0.elapsed().as_nanos() as u64);
                }
                // Count the notifier's work on this phase's revisions too.
                wait_notified(if watched_phase { &hub_w } else { &hub_b }, store.current_revision());
                let c1 = cpu_by_role(&[tid_w, tid_b]);
                for r in 0..4 {
                    cpu[side][r] += c1[r] - c0[r];
                }
                cpu[side][4] += start.elapsed().as_secs_f64();
            }
        }
        let pw = lat_w.hist.value_at_quantile(0.99) as f64;
        let pb = lat_b.hist.value_at_quantile(0.99) as f64;
        eprintln!("[watch] isolation {mode}: put p99 watched {pw} ns, bare {pb} ns, ratio {:.2}", pw / pb);
        let puts = (rounds * per_phase) as f64;
        let side = |c: [f64; 5]| {
            let us = |x: f64| x / puts * 1e6;
            json!({
                "writer_cpu_us_per_put": us(c[0]),
                "notifier_cpu_us_per_put": us(c[1]),
                "consumer_cpu_us_per_put": us(c[2]),
                "other_cpu_us_per_put": us(c[3]),
                "process_cpu_us_per_put": us(c[0] + c[1] + c[2] + c[3]),
                "cores_busy": (c[0] + c[1] + c[2] + c[3]) / c[4],
                "wall_s": c[4],
            })
        };
        out.insert(
            mode.to_string(),
            json!({
                "rounds": rounds,
                "puts_per_phase": per_phase,
                "pace_us": pace.map(|p| p.as_micros() as u64),
                "watched": lat_w.summary(),
                "no_watchers": lat_b.summary(),
                "p99_ratio": pw / pb,
                "phases_started_unsettled": unsettled,
                "cpu_watched": side(cpu[0]),
                "cpu_no_watchers": side(cpu[1]),
            }),
        );
    }
    let after = hub_w.metrics();
    out.insert(
        "setup".into(),
        json!({
            "watchers": STREAMS * PER_STREAM,
            "streams": STREAMS,
            "stalled_streams": STALLED,
            "watchers_per_put": STREAMS,
            "consumer_threads": CONSUMERS,
            "settled_at_start": settled_at_start,
            "victims_before": before.victims,
            "synced_before": before.synced,
            "victims_after": after.victims,
            "synced_after": after.synced,
            "events_received": received.load(Ordering::Relaxed),
        }),
    );
    record("isolation", Value::Object(out));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    for c in &ctls {
        c.close();
    }
    drop(stalled);
}

// ---------------------------------------------------------------------------

/// Whether a non-criterion pass named `name` runs: not under `--test`/`--list`,
/// and only if no filter was given or `name` contains it.
fn custom_selected(name: &str) -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--test" || a == "--list") {
        return false;
    }
    selected(name)
}

/// Whether benchmark `id` passes the command line's filters (substrings; criterion
/// itself takes them as regular expressions), so that a filtered run skips the
/// setup of benchmarks it will not run.
fn selected(id: &str) -> bool {
    const WITH_VALUE: &[&str] = &[
        "--save-baseline",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--profile-time",
        "--plotting-backend",
        "--output-format",
        "--color",
        "--format",
        "-c",
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut filters = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if WITH_VALUE.contains(&a.as_str()) {
            i += 2;
            continue;
        }
        if !a.starts_with('-') {
            filters.push(a.clone());
        }
        i += 1;
    }
    filters.is_empty() || filters.iter().any(|f| id.contains(f.as_str()))
}

criterion_group!(benches, bench_floor, bench_fanout, bench_etcd);

fn main() {
    let started = argus_bench::unix_now();
    let load_start = common::loadavg();
    if quick() {
        eprintln!("[watch] ARGUS_WATCH_QUICK=1: a smoke run, times cut to a tenth; its figures are no results");
    }
    benches();
    if custom_selected("isolation") {
        isolation();
    }
    let extra = std::mem::take(&mut *EXTRA.lock().unwrap_or_else(|p| p.into_inner()));
    if !extra.is_empty() {
        let mut m = serde_json::Map::new();
        for (k, v) in extra {
            m.insert(k, v);
        }
        m.insert(
            "run".into(),
            json!({"started_unix": started, "loadavg_at_start": load_start, "loadavg_at_end": common::loadavg(), "quick": quick()}),
        );
        common::save_merged("bench", Value::Object(m));
    }
    criterion::Criterion::default().configure_from_args().final_summary();
}
