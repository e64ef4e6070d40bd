//! Catch-up from the log: watchers started at revision 1 over a long history.
//!
//! ```text
//! RAYON_NUM_THREADS=<n> watch-catchup [--watchers 100] [--revisions 100000] [--streams 10] [--name NAME]
//! ```
//!
//! Writes a history of `--revisions` puts (1,000 keys under `/h/`, 32-byte values)
//! into a fresh store (fsync `never`), then opens a hub and `--watchers` prefix
//! watchers on `/h/` from revision 1, spread over `--streams` streams with one
//! consumer thread each, and times from the first `watch` call until every watcher
//! has received every one of the events. Catch-up runs on rayon's global pool,
//! which can be sized only once per process, so the two pool sizes are two runs
//! of this program (`scripts/bench-watch.sh` sets `RAYON_NUM_THREADS`). Results go
//! to `<target>/watch-results/NAME.json`.

#[path = "../watch_common.rs"]
mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use argus_engine::watch::{WatchHub, WatchOptions, WatchRequest};
use common::{open_store, DataDir};
use serde_json::json;

struct Args {
    watchers: usize,
    revisions: usize,
    streams: usize,
    name: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args { watchers: 100, revisions: 100_000, streams: 10, name: None };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = |n: &str| -> Result<usize, String> {
            it.next().ok_or_else(|| format!("{n} needs a value"))?.parse().map_err(|e| format!("{n}: {e}"))
        };
        match arg.as_str() {
            "--watchers" => a.watchers = num("--watchers")?,
            "--revisions" => a.revisions = num("--revisions")?,
            "--streams" => a.streams = num("--streams")?,
            "--name" => a.name = Some(it.next().ok_or("--name needs a value")?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.watchers == 0 || a.streams == 0 || !a.watchers.is_multiple_of(a.streams) {
        return Err("--watchers must be a positive multiple of --streams".into());
    }
    Ok(a)
}

fn main() -> std::process::ExitCode {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("watch-catchup: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "(default)".into());
    let dir = DataDir::new("catchup");
    let store = open_store(&dir);
    let value = [b'v'; 32];
    let keys: Vec<Vec<u8>> = (0..1000).map(|i| format!("/h/{i:04}").into_bytes()).collect();
    let first = store.current_revision() + 1;
    let th = Instant::now();
    for i in 0..a.revisions {
        store.put(&keys[i % keys.len()], &value).expect("put");
    }
    let history_s = th.elapsed().as_secs_f64();
    let last = store.current_revision();
    let expected = (last - first + 1) as usize;
    assert_eq!(expected, a.revisions);

    let hub = WatchHub::new(store.clone(), WatchOptions::default());
    let per = a.watchers / a.streams;
    let (done_tx, done_rx) = mpsc::channel::<(usize, Instant)>();
    let cpu0 = common::process_cpu();
    let t0 = Instant::now();
    let mut consumers = Vec::new();
    let mut ctls = Vec::new();
    for s_i in 0..a.streams {
        let s = hub.stream();
        for _ in 0..per {
            s.watch(WatchRequest::prefix("/h/").from_revision(1)).expect("watch");
        }
        let (ctl, mut rx) = s.split();
        ctls.push(ctl);
        let tx = done_tx.clone();
        consumers.push(std::thread::spawn(move || {
            // Watch ids of a stream are 1..=per.
            let mut got = vec![0usize; per + 1];
            let mut complete = 0;
            while complete < per {
                let Some(r) = rx.recv() else { return };
                let n = r.event_count();
                if n == 0 {
                    continue;
                }
                let slot = &mut got[r.watch_id as usize];
                *slot += n;
                if *slot == expected {
                    complete += 1;
                }
            }
            let _ = tx.send((s_i, Instant::now()));
        }));
    }
    drop(done_tx);
    let mut victims_max = 0;
    let mut finished = 0;
    let mut end = t0;
    while finished < a.streams {
        match done_rx.recv_timeout(Duration::from_millis(5)) {
            Ok((_, at)) => {
                finished += 1;
                end = end.max(at);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let m = hub.metrics();
                victims_max = victims_max.max(m.victims);
                if std::env::var_os("ARGUS_DEBUG").is_some() {
                    eprintln!("{:?} {m:?}", t0.elapsed());
                }
                assert!(t0.elapsed() < Duration::from_secs(600), "catch-up did not finish in 10 minutes");
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("a consumer ended early"),
        }
    }
    let secs = (end - t0).as_secs_f64();
    let cpu = common::process_cpu() - cpu0;
    let events = (a.watchers * expected) as f64;
    eprintln!(
        "[watch-catchup] RAYON_NUM_THREADS={threads}: {} watchers x {expected} events in {secs:.3} s \
         ({:.1} M events/s, {cpu:.2} CPU s)",
        a.watchers,
        events / secs / 1e6
    );
    for c in &ctls {
        c.close();
    }
    for c in consumers {
        let _ = c.join();
    }
    let name = a.name.unwrap_or_else(|| format!("catchup-{threads}"));
    common::save(
        &name,
        &json!({
            "rayon_num_threads": threads,
            "watchers": a.watchers,
            "streams": a.streams,
            "revisions": expected,
            "events_per_watcher": expected,
            "seconds": secs,
            "events_per_second": events / secs,
            "process_cpu_seconds": cpu,
            "victims_max_seen": victims_max,
            "history_write_s": history_s,
            "loadavg": common::loadavg(),
            "measured_unix": argus_bench::unix_now(),
        }),
    );
    std::process::ExitCode::SUCCESS
}
