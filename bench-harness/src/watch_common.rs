//! Helpers shared by the watch benchmarks (`benches/watch.rs`) and their separate
//! processes (`bin/watch-memory.rs`, `bin/watch-catchup.rs`, `bin/watch-report.rs`).
//!
//! Included with `#[path]` rather than through the library, so that the library
//! stays the store benchmarks' and every user compiles only what it needs.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use argus_engine::log::FsyncPolicy;
use argus_engine::store::{Store, StoreOptions};
use argus_engine::watch::WatchHub;

/// A data directory removed when dropped.
pub struct DataDir {
    path: PathBuf,
}

impl DataDir {
    /// A new empty directory under `$ARGUS_BENCH_DIR` or the system temporary
    /// directory (the watch benchmarks never fsync, so tmpfs would do as well).
    pub fn new(tag: &str) -> DataDir {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let base = std::env::var_os("ARGUS_BENCH_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = base.join(format!("argus-watch-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        DataDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Opens a store in `dir` with fsync `never` (the watch engine reads the log after
/// the fact; durability is not what these benchmarks measure).
pub fn open_store(dir: &DataDir) -> Store {
    let mut opts = StoreOptions::default();
    opts.log.fsync = FsyncPolicy::Never;
    Store::open(dir.path(), opts).expect("open the store")
}

/// Polls `f` (sleeping `step` between tries) until it holds; panics with `what`
/// after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, step: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(step);
    }
}

/// Waits until the hub has `n` live watchers, all synced.
pub fn wait_synced(hub: &WatchHub, n: u64) {
    wait_until(&format!("{n} synced watchers"), Duration::from_secs(600), Duration::from_millis(1), || {
        let m = hub.metrics();
        m.watchers == n && m.synced == n
    });
}

/// Waits until the notifier has processed revision `rev`.
pub fn wait_notified(hub: &WatchHub, rev: u64) {
    wait_until(&format!("notified revision {rev}"), Duration::from_secs(600), Duration::from_micros(50), || {
        hub.metrics().notified_revision >= rev
    });
}

/// Where the watch benchmarks' measurements go: `$ARGUS_WATCH_OUT`, else
/// `<cargo target dir>/watch-results`.
pub fn out_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ARGUS_WATCH_OUT") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d).join("watch-results");
    }
    // <target>/<profile>/deps/<bench> or <target>/<profile>/<bin>
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir.parent().map_or_else(|| PathBuf::from("target"), Path::to_path_buf).join("watch-results")
}

/// Writes one measurement file `<out_dir>/<name>.json` (whole, via a rename).
pub fn save(name: &str, value: &serde_json::Value) {
    let dir = out_dir();
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let path = dir.join(format!("{name}.json"));
    let tmp = dir.join(format!("{name}.json.tmp"));
    std::fs::write(&tmp, serde_json::to_string_pretty(value).expect("serialize")).expect("write a result file");
    std::fs::rename(&tmp, &path).expect("rename a result file");
    eprintln!("[watch] wrote {}", path.display());
}

/// Merges the keys of `value` (an object) into `<out_dir>/<name>.json`, so that a
/// filtered rerun updates its own entries and keeps the others.
pub fn save_merged(name: &str, value: serde_json::Value) {
    let path = out_dir().join(format!("{name}.json"));
    let mut old = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    if let serde_json::Value::Object(m) = value {
        old.extend(m);
    }
    save(name, &serde_json::Value::Object(old));
}

/// `/proc/loadavg`, to show how busy the shared machine was.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(|e| format!("({e})"), |s| s.trim().to_string())
}

/// `VmRSS` of this process in bytes, from `/proc/self/status`.
pub fn rss_bytes() -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        .map_or(0, |kib| kib * 1024)
}

/// CPU seconds of thread `tid` of this process: its run time in nanoseconds from
/// `/proc/self/task/<tid>/schedstat`, else user + system ticks from `stat`.
pub fn thread_cpu(tid: u32) -> f64 {
    schedstat_cpu(&format!("/proc/self/task/{tid}/schedstat"))
        .unwrap_or_else(|| stat_cpu(&format!("/proc/self/task/{tid}/stat")))
}

/// CPU seconds of this process, all threads (as [`thread_cpu`]).
pub fn process_cpu() -> f64 {
    schedstat_cpu("/proc/self/schedstat").map_or_else(
        || stat_cpu("/proc/self/stat"),
        |_| {
            // The process's schedstat is its main thread's; sum the threads'.
            std::fs::read_dir("/proc/self/task")
                .map(|rd| {
                    rd.flatten().filter_map(|e| schedstat_cpu(&e.path().join("schedstat").to_string_lossy())).sum()
                })
                .unwrap_or(0.0)
        },
    )
}

fn schedstat_cpu(path: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let ns: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

fn stat_cpu(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // After the command (in parentheses) come the state (field 3) ... utime and
    // stime (fields 14 and 15), in clock ticks of 1/100 s (USER_HZ).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Thread ids of this process's notifier threads (named `argus-notifier`).
pub fn notifier_tids() -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc/self/task") {
        for e in rd.flatten() {
            let tid: u32 = e.file_name().to_string_lossy().parse().unwrap_or(0);
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            if comm.trim() == "argus-notifier" {
                out.push(tid);
            }
        }
    }
    out
}

/// Starts a hub on `store` and returns it with its notifier's thread id (0 if it
/// cannot be told apart).
pub fn hub_with_tid(store: &argus_engine::store::Store, opts: argus_engine::watch::WatchOptions) -> (WatchHub, u32) {
    let before = notifier_tids();
    let hub = WatchHub::new(store.clone(), opts);
    let mut tid = 0;
    for _ in 0..100 {
        if let Some(t) = notifier_tids().into_iter().find(|t| !before.contains(t)) {
            tid = t;
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    (hub, tid)
}

/// The median of `xs` (sorted in place); 0 when empty.
pub fn median(xs: &mut [f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}
