//! Memory of idle watchers, counted with a counting global allocator (so the
//! criterion benchmarks are not slowed by it), and the notifier's costs that grow
//! with the number of idle watchers.
//!
//! ```text
//! watch-memory [--watchers N] [--per-stream M] [--kind key|prefix] [--probes] [--name NAME]
//! ```
//!
//! Opens a store (fsync `never`) and a hub, then `N` watchers on distinct keys
//! (`--kind key`, the etcd `KVWatcherMemoryUsage` shape) or distinct prefixes, `M`
//! per stream, draining every `created` response. Three snapshots of the
//! allocator and of `VmRSS`:
//!
//! - `base`: store and hub open, no stream;
//! - `registered`: `hub.metrics()` shows `N` watchers, all synced (the index
//!   changes are still queued: the notifier applies them before the next revision);
//! - `indexed`: after one put on an unwatched key has been notified, so the index
//!   snapshot is built. `indexed - base` over `N` is the bytes per idle watcher,
//!   the notifier's state, streams and index included.
//!
//! The difference `base → indexed` is broken down by allocation size. With
//! `--probes` it then measures, with the `N` watchers in place and on a second hub
//! with none: the notifier's CPU time per revision that reaches no watcher, the
//! latency from a put to its delivery, and the same when one or sixteen new
//! watchers were registered since the previous revision (the index rebuild).
//! If memory runs short (`MemAvailable` under 3 GiB) it stops creating watchers and
//! reports how many it has. Results go to `<target>/watch-results/NAME.json`.

#[path = "../watch_common.rs"]
mod common;
#[path = "../counting_alloc.rs"]
mod counting_alloc;

use std::time::{Duration, Instant};

use argus_engine::store::Store;
use argus_engine::watch::{WatchHub, WatchOptions, WatchRequest, WatchStream};
use common::{hub_with_tid, open_store, rss_bytes, thread_cpu, wait_notified, wait_until, DataDir};
use counting_alloc::{snapshot, Snapshot, SMALL_MAX};
use serde_json::{json, Value};

#[global_allocator]
static ALLOC: counting_alloc::Counting = counting_alloc::Counting;

struct Args {
    watchers: usize,
    per_stream: usize,
    prefix: bool,
    probes: bool,
    name: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args { watchers: 1_000_000, per_stream: 1000, prefix: false, probes: false, name: None };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |n: &str| it.next().ok_or_else(|| format!("{n} needs a value"));
        match arg.as_str() {
            "--watchers" => a.watchers = val("--watchers")?.parse().map_err(|e| format!("--watchers: {e}"))?,
            "--per-stream" => a.per_stream = val("--per-stream")?.parse().map_err(|e| format!("--per-stream: {e}"))?,
            "--kind" => {
                a.prefix = match val("--kind")?.as_str() {
                    "key" => false,
                    "prefix" => true,
                    k => return Err(format!("unknown kind {k:?} (key or prefix)")),
                }
            }
            "--probes" => a.probes = true,
            "--name" => a.name = Some(val("--name")?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.per_stream == 0 || a.watchers == 0 {
        return Err("--watchers and --per-stream must be positive".into());
    }
    Ok(a)
}

fn mem_available() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        .map_or(u64::MAX, |kib| kib * 1024)
}

struct Phase {
    snap: Snapshot,
    rss: u64,
    at: Instant,
}

fn phase() -> Phase {
    Phase { snap: snapshot(), rss: rss_bytes(), at: Instant::now() }
}

/// The difference of two snapshots, per watcher, by allocation size.
fn breakdown(a: &Snapshot, b: &Snapshot, n: f64) -> Value {
    let mut rows: Vec<(String, f64, f64)> = Vec::new(); // (size class, allocations, bytes) per watcher
    for size in 0..=SMALL_MAX {
        let d = b.small[size] - a.small[size];
        if d != 0 {
            rows.push((size.to_string(), d as f64 / n, (d * size as i64) as f64 / n));
        }
    }
    for bit in 0..64 {
        let d = b.large_bytes[bit] - a.large_bytes[bit];
        let c = b.large_count[bit] - a.large_count[bit];
        if d != 0 || c != 0 {
            rows.push((
                format!("{}..{} KiB", (1u64 << bit) / 1024, (1u64 << (bit + 1)) / 1024),
                c as f64 / n,
                d as f64 / n,
            ));
        }
    }
    rows.sort_by(|x, y| y.2.abs().total_cmp(&x.2.abs()));
    let small_bytes: f64 = rows.iter().filter(|r| !r.0.contains("KiB")).map(|r| r.2).sum();
    let large_bytes: f64 = rows.iter().filter(|r| r.0.contains("KiB")).map(|r| r.2).sum();
    json!({
        "small_allocations_bytes_per_watcher": small_bytes,
        "large_allocations_bytes_per_watcher": large_bytes,
        "by_size": rows.iter().filter(|r| r.2.abs() >= 0.05).map(|(s, c, b)| json!({
            "size": s, "allocations_per_watcher": c, "bytes_per_watcher": b,
        })).collect::<Vec<_>>(),
    })
}

fn delta(a: &Phase, b: &Phase, n: f64) -> Value {
    json!({
        "bytes_per_watcher": (b.snap.live - a.snap.live) as f64 / n,
        "rss_bytes_per_watcher": (b.rss as f64 - a.rss as f64) / n,
        "allocations_per_watcher": (b.snap.allocs - a.snap.allocs) as f64 / n,
        "frees_per_watcher": (b.snap.frees - a.snap.frees) as f64 / n,
        "live_allocations_per_watcher": ((b.snap.allocs - a.snap.allocs) as f64 - (b.snap.frees - a.snap.frees) as f64) / n,
        "seconds": (b.at - a.at).as_secs_f64(),
    })
}

/// Most `created` responses left unread while creating watchers.
const WINDOW: usize = 16;

/// Rounds of each latency probe.
const ROUNDS: usize = 11;

/// Latency and notifier CPU probes on `hub` (whose notifier thread is `tid`).
fn probes(store: &Store, hub: &WatchHub, tid: u32, tag: &str) -> Value {
    let mut probe = hub.stream();
    probe.watch(WatchRequest::key("/probe")).expect("watch");
    assert!(probe.recv().expect("created").created);
    let base = hub.metrics().watchers;
    wait_until("the probe synced", Duration::from_secs(60), Duration::from_millis(1), || hub.metrics().synced == base);
    let rev = store.put(b"/unwatched", b"x").expect("put").revision;
    wait_notified(hub, rev);

    // Notifier CPU per revision that reaches no watcher.
    let revs = 200;
    std::thread::sleep(Duration::from_millis(300));
    let c0 = thread_cpu(tid);
    let t0 = Instant::now();
    let mut last = 0;
    for i in 0..revs {
        last = store.put(format!("/unwatched/{i}").as_bytes(), b"x").expect("put").revision;
        std::thread::sleep(Duration::from_millis(5));
    }
    wait_notified(hub, last);
    let wall = t0.elapsed().as_secs_f64();
    let cpu_per_rev = (thread_cpu(tid) - c0) / revs as f64;

    // Put-to-delivery latency, with and without new watchers since the last revision.
    let mut spare = hub.stream();
    let mut churn_n = 0u64;
    let mut lat = |new_watchers: usize| -> f64 {
        let mut xs = Vec::new();
        for _ in 0..ROUNDS {
            if new_watchers > 0 {
                let before = hub.metrics().watchers;
                for _ in 0..new_watchers {
                    churn_n += 1;
                    spare.watch(WatchRequest::key(format!("/churn/{churn_n:012}"))).expect("watch");
                }
                for _ in 0..new_watchers {
                    spare.recv().expect("created");
                }
                wait_until("churn registered", Duration::from_secs(60), Duration::from_micros(100), || {
                    hub.metrics().watchers == before + new_watchers as u64
                });
            }
            // Let the notifier finish whatever it does after a control request (37 ms:
            // not in step with its 100 ms idle wake-up).
            std::thread::sleep(Duration::from_millis(37));
            let t0 = Instant::now();
            store.put(b"/probe", b"v").expect("put");
            let r = probe.recv_timeout(Duration::from_secs(120)).expect("the probe's event");
            assert!(!r.events.is_empty());
            xs.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        common::median(&mut xs)
    };
    let idle = lat(0);
    let churn1 = lat(1);
    let churn16 = lat(16);
    eprintln!(
        "[watch-memory] {tag}: notifier CPU {:.1} us per revision; put-to-delivery median {idle:.0} us, \
         after 1 new watcher {churn1:.0} us, after 16 {churn16:.0} us",
        cpu_per_rev * 1e6
    );
    json!({
        "watchers": base,
        "notifier_cpu_us_per_unwatched_revision": cpu_per_rev * 1e6,
        "unwatched_revisions": revs,
        "unwatched_wall_s": wall,
        "delivery_latency_us_median": idle,
        "delivery_latency_after_1_new_watcher_us_median": churn1,
        "delivery_latency_after_16_new_watchers_us_median": churn16,
        "rounds": ROUNDS,
    })
}

fn run(a: &Args) -> Value {
    let dir = DataDir::new("memory");
    let store = open_store(&dir);
    let (hub, tid) = hub_with_tid(&store, WatchOptions::default());
    let streams_needed = a.watchers.div_ceil(a.per_stream);
    let mut streams: Vec<WatchStream> = Vec::with_capacity(streams_needed);
    let rss_start = rss_bytes();
    std::thread::sleep(Duration::from_millis(200));
    let p0 = phase();
    let mut made = 0usize;
    let mut stopped = None;
    let t0 = Instant::now();
    'outer: while made < a.watchers {
        let mut s = hub.stream();
        let n = a.per_stream.min(a.watchers - made);
        // 15-byte keys; a prefix watcher gets the key as its prefix. `created`
        // responses are read as they come, at most `WINDOW` outstanding, as a client
        // would: the stream's queue (which keeps its largest capacity) stays short.
        let mut outstanding = 0;
        for i in made..made + n {
            let key = format!("/w/{i:012}").into_bytes();
            let req = if a.prefix { WatchRequest::prefix(key) } else { WatchRequest::key(key) };
            s.watch(req).expect("watch");
            outstanding += 1;
            while let Some(r) = s.try_recv() {
                assert!(r.created);
                outstanding -= 1;
            }
            while outstanding >= WINDOW {
                assert!(s.recv().expect("created").created);
                outstanding -= 1;
            }
        }
        while outstanding > 0 {
            assert!(s.recv().expect("created").created);
            outstanding -= 1;
        }
        streams.push(s);
        made += n;
        if made.is_multiple_of(1_000_000) {
            let m = hub.metrics();
            eprintln!(
                "[watch-memory] {made} watchers created in {:.1?} ({} registered), RSS {:.2} GiB",
                t0.elapsed(),
                m.watchers,
                rss_bytes() as f64 / (1u64 << 30) as f64
            );
            if mem_available() < 3 << 30 {
                stopped = Some(format!("MemAvailable under 3 GiB after {made} watchers"));
                break 'outer;
            }
        }
    }
    let create_s = t0.elapsed().as_secs_f64();
    let n = made as u64;
    common::wait_synced(&hub, n);
    let register_s = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(200));
    let p1 = phase();
    let t1 = Instant::now();
    let rev = store.put(b"/unwatched", b"x").expect("put").revision;
    wait_notified(&hub, rev);
    let index_build_s = t1.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(200));
    let p2 = phase();
    let nf = n as f64;
    let m = hub.metrics();
    eprintln!(
        "[watch-memory] {made} {} watchers: {:.1} bytes each counted, {:.1} bytes each of RSS (RSS {:.2} GiB)",
        if a.prefix { "prefix" } else { "key" },
        (p2.snap.live - p0.snap.live) as f64 / nf,
        (p2.rss as f64 - p0.rss as f64) / nf,
        p2.rss as f64 / (1u64 << 30) as f64
    );
    let mut out = json!({
        "watchers": made,
        "watchers_requested": a.watchers,
        "stopped": stopped,
        "kind": if a.prefix { "prefix" } else { "key" },
        "key_bytes": 15,
        "per_stream": a.per_stream,
        "streams": streams.len(),
        "metrics": {"watchers": m.watchers, "synced": m.synced, "streams": m.streams},
        "create_s": create_s,
        "register_s": register_s,
        "index_build_s": index_build_s,
        "rss_at_start_bytes": rss_start,
        "rss_base_bytes": p0.rss,
        "rss_registered_bytes": p1.rss,
        "rss_indexed_bytes": p2.rss,
        "live_base_bytes": p0.snap.live,
        "live_indexed_bytes": p2.snap.live,
        "base_to_registered": delta(&p0, &p1, nf),
        "registered_to_indexed": delta(&p1, &p2, nf),
        "base_to_indexed": delta(&p0, &p2, nf),
        "breakdown_base_to_registered": breakdown(&p0.snap, &p1.snap, nf),
        "breakdown_base_to_indexed": breakdown(&p0.snap, &p2.snap, nf),
    });
    if a.probes {
        out["probes"] = probes(&store, &hub, tid, &format!("{made} watchers"));
        drop(streams);
        drop(hub);
        let dir2 = DataDir::new("memory-empty");
        let store2 = open_store(&dir2);
        let (hub2, tid2) = hub_with_tid(&store2, WatchOptions::default());
        out["probes_no_watchers"] = probes(&store2, &hub2, tid2, "no other watchers");
    }
    out
}

fn main() -> std::process::ExitCode {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("watch-memory: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let name =
        a.name.clone().unwrap_or_else(|| format!("memory-{}-{}", if a.prefix { "prefix" } else { "key" }, a.watchers));
    let mut v = run(&a);
    v["loadavg"] = json!(common::loadavg());
    v["measured_unix"] = json!(argus_bench::unix_now());
    common::save(&name, &v);
    std::process::ExitCode::SUCCESS
}
