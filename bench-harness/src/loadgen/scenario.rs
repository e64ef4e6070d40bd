//! The workloads: `fanout`, `light` and `put` (writes while watchers watch),
//! `catchup` (write a history, then watchers from revision 1) and `watch-create`
//! (open many idle watchers). Each returns one [`RunRecord`], the JSON the tool
//! prints.
//!
//! Every run is bounded by [`Common::timeout`]: a run that does not finish in time
//! stops where it is and says so (`ok: false`, `errors`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use argus_engine::check::{self, History, Observed};
use argus_engine::store::KeyValue;
use argus_engine::watch::{Event, EventKind, RevisionBatch, RevisionEvents, WatchRequest, WatchResponse};
use argus_server::proto::etcdserverpb as pb;
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use prost::Message;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::client::{connect, value_of, wait_ready, Ack, Writer};
use super::lease::LeaseFigures;
use super::mirror::MirrorFigures;
use super::stats::{histogram, loadavg, record, rss_bytes, Cpu, CpuSplit, CpuUsed, Latency};
use super::watchers::{Collected, WatchSet, WatcherSpec};
use super::{event_fp, key_hash, now_ns, prefix_end};

/// Settings every workload shares.
#[derive(Clone, Debug)]
pub struct Common {
    /// The server (loopback only).
    pub endpoint: SocketAddr,
    /// The server's pid, for its CPU time and memory (`/proc/<pid>`).
    pub server_pid: Option<u32>,
    /// Name of the system under test, for the report (`etcd`, `argus-always`, ...).
    pub system: String,
    /// Name of the scenario, for the report.
    pub scenario: String,
    /// Repetition number, for the report.
    pub rep: u32,
    /// Bound of the whole run.
    pub timeout: Duration,
    /// HTTP/2 connections.
    pub connections: usize,
    /// Bytes per value (at least 8: the send time).
    pub value_size: usize,
    /// Watchers whose responses are kept whole and judged by the guarantee checker.
    pub check_watchers: usize,
    /// Show progress bars (on a terminal).
    pub progress: bool,
}

/// What watchers watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// All on one prefix, which every put is under.
    Prefix,
    /// Each on one key; the puts cycle over the keys.
    Keys,
}

/// How the watchers fared, checked against what was written.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CheckSummary {
    /// Watchers checked (all of them): created, count, order, fingerprint.
    pub watchers: u64,
    /// Watchers that got every event written for them once and in order.
    pub watchers_ok: u64,
    /// The first problems found, one line each.
    pub problems: Vec<String>,
    /// Watchers judged by the engine's guarantee checker (`argus_engine::check`).
    pub full_checked: u64,
    /// Violations the checker found.
    pub violations: u64,
    /// The first violations.
    pub violation_examples: Vec<String>,
}

/// One run's results.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunRecord {
    /// Scenario name (the script's matrix entry).
    pub scenario: String,
    /// `fanout`, `light`, `catchup`, `put` or `watch-create`.
    pub kind: String,
    /// System under test.
    pub system: String,
    /// Repetition.
    pub rep: u32,
    /// Server address.
    pub endpoint: String,
    /// Version the server reported.
    pub server_version: String,
    /// Workload parameters.
    pub params: BTreeMap<String, Value>,
    /// Whether the run finished and every check passed.
    pub ok: bool,
    /// What went wrong.
    pub errors: Vec<String>,
    /// Unix seconds at the start.
    pub started_unix: f64,
    /// `/proc/loadavg` at the start.
    pub loadavg_start: String,
    /// `/proc/loadavg` at the end.
    pub loadavg_end: String,
    /// Seconds of the measured phase.
    pub wall_s: f64,
    /// Watchers.
    pub watchers: u64,
    /// Puts of the measured phase.
    pub puts: u64,
    /// Puts per second (measured phase).
    pub puts_per_s: Option<f64>,
    /// Put latency, send to response.
    pub put_ack: Option<Latency>,
    /// Events received, all watchers.
    pub events: u64,
    /// Events that should have been received.
    pub events_expected: u64,
    /// Events received per second of the measured phase.
    pub events_per_s: Option<f64>,
    /// Event latency: receive time minus the send time in the value.
    pub event_latency: Option<Latency>,
    /// Catch-up: time from the first create to each watcher having everything.
    pub watcher_done: Option<Latency>,
    /// Server CPU seconds of the measured phase.
    pub server_cpu_s: Option<f64>,
    /// This client's CPU seconds of the measured phase.
    pub client_cpu_s: Option<f64>,
    /// Server CPU per delivered event, µs.
    pub server_cpu_per_event_us: Option<f64>,
    /// Client CPU per delivered event, µs.
    pub client_cpu_per_event_us: Option<f64>,
    /// Server CPU per put, µs.
    pub server_cpu_per_put_us: Option<f64>,
    /// Server CPU of the measured phase by the part of the server its threads work
    /// for (`/proc/<pid>/task/*/stat`; see [`CpuSplit`]).
    #[serde(default)]
    pub server_cpu_split: Option<CpuSplit>,
    /// Server RSS before the watchers were opened.
    pub rss_before: Option<u64>,
    /// Server RSS with the watchers open (after one more revision was notified).
    pub rss_after: Option<u64>,
    /// `(rss_after - rss_before) / watchers`.
    pub rss_per_watcher: Option<f64>,
    /// Seconds from the first create request to the last `created` response.
    pub create_s: Option<f64>,
    /// Watchers created per second.
    pub watchers_per_s: Option<f64>,
    /// Server CPU seconds while the watchers were created.
    pub create_server_cpu_s: Option<f64>,
    /// Catch-up: seconds spent writing the history (not measured).
    pub write_s: Option<f64>,
    /// Checks of what the watchers received.
    pub check: CheckSummary,
    /// The lease workloads' figures (`lease-keepalive`, `lease-expiry`,
    /// `lease-memory`; see [`super::lease`]).
    #[serde(default)]
    pub lease: Option<LeaseFigures>,
    /// The `argus mirror` figures (`mirror-fanout`, `mirror-catchup`; see
    /// [`super::mirror`]): the etcd members' and the mirrors' CPU, the watchers
    /// the members hold.
    #[serde(default)]
    pub mirror: Option<MirrorFigures>,
}

impl RunRecord {
    pub(crate) fn new(c: &Common, kind: &str) -> RunRecord {
        RunRecord {
            scenario: c.scenario.clone(),
            kind: kind.to_string(),
            system: c.system.clone(),
            rep: c.rep,
            endpoint: c.endpoint.to_string(),
            started_unix: argus_bench::unix_now(),
            loadavg_start: loadavg(),
            ok: true,
            ..Default::default()
        }
    }

    pub(crate) fn param(&mut self, k: &str, v: impl Serialize) {
        self.params.insert(k.to_string(), json!(v));
    }

    pub(crate) fn fail(mut self, e: impl Into<String>) -> RunRecord {
        self.ok = false;
        self.errors.push(e.into());
        self.loadavg_end = loadavg();
        self
    }

    pub(crate) fn set_cpu(&mut self, cpu: CpuUsed) {
        self.server_cpu_s = cpu.server;
        self.client_cpu_s = cpu.client;
        self.server_cpu_split = cpu.server_split;
        let per = |s: Option<f64>, n: u64| s.filter(|_| n > 0).map(|s| s / n as f64 * 1e6);
        self.server_cpu_per_event_us = per(cpu.server, self.events);
        self.client_cpu_per_event_us = per(cpu.client, self.events);
        self.server_cpu_per_put_us = per(cpu.server, self.puts);
    }
}

pub(crate) fn bar(c: &Common, len: u64, what: &str) -> ProgressBar {
    if !c.progress {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{prefix} {msg:>12} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec})")
    {
        b.set_style(style);
    }
    b.set_prefix(format!("{} {}", c.system, c.scenario));
    b.set_message(what.to_string());
    b
}

/// A prefix of keys no earlier run wrote (so the checker's history, which starts
/// empty, knows every key it sees).
pub(crate) fn namespace(c: &Common) -> String {
    format!("/argus-bench/{}-{}-{}/", c.scenario, std::process::id(), now_ns())
}

/// The key set of a run: `keys` keys under `ns`, then one key outside it for the
/// warm-up puts.
pub(crate) fn key_set(ns: &str, keys: usize) -> Arc<Vec<Vec<u8>>> {
    let mut v: Vec<Vec<u8>> = (0..keys).map(|i| format!("{ns}k{i:06}").into_bytes()).collect();
    v.push(format!("/argus-bench-warm/{}", now_ns()).into_bytes());
    Arc::new(v)
}

/// Puts `n` keys (put `i` on key `i % keys`, `keys` = all but the last of `keys`)
/// with `clients` concurrent clients, closed loop, or open loop at `rate` puts per
/// second when `rate > 0`. No put is started after `max_secs` (0: no bound), nor
/// after `deadline` (an error).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn write_puts(
    writer: &Writer,
    keys: &Arc<Vec<Vec<u8>>>,
    n: u64,
    clients: usize,
    rate: f64,
    max_secs: f64,
    deadline: Instant,
    bar: &ProgressBar,
) -> (Vec<Ack>, Vec<String>) {
    let stop_at = (max_secs > 0.0).then(|| Instant::now() + Duration::from_secs_f64(max_secs));
    let span = (keys.len() - 1).max(1) as u64;
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients.max(1) {
        let (writer, keys, next, done) = (writer.clone(), Arc::clone(keys), Arc::clone(&next), Arc::clone(&done));
        tasks.push(tokio::spawn(async move {
            let mut kv = writer.client(c);
            let mut acks = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return (acks, None);
                }
                if rate > 0.0 {
                    tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
                }
                if stop_at.is_some_and(|t| Instant::now() >= t) {
                    return (acks, None);
                }
                if Instant::now() >= deadline {
                    return (acks, Some(format!("timed out after {i} of {n} puts")));
                }
                let k = (i % span) as usize;
                match writer.put(&mut kv, k as u32, &keys[k]).await {
                    Ok(a) => acks.push(a),
                    Err(e) => return (acks, Some(e)),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    while !tasks.iter().all(|t| t.is_finished()) {
        bar.set_position(done.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bar.set_position(done.load(Ordering::Relaxed));
    let mut acks = Vec::with_capacity(n as usize);
    let mut errors = Vec::new();
    for t in tasks {
        match t.await {
            Ok((a, e)) => {
                acks.extend(a);
                errors.extend(e);
            }
            Err(e) => errors.push(format!("put task failed: {e}")),
        }
    }
    acks.sort_by_key(|a| a.revision);
    (acks, errors)
}

/// One warm-up put on the key outside the watched range.
pub(crate) async fn warm_put(writer: &Writer, keys: &Arc<Vec<Vec<u8>>>) -> Result<Ack, String> {
    let k = keys.len() - 1;
    writer.put(&mut writer.client(0), k as u32, &keys[k]).await
}

/// Puts per second and the ack latency of `acks`.
pub(crate) fn put_figures(rec: &mut RunRecord, acks: &[Ack]) {
    rec.puts = acks.len() as u64;
    if acks.is_empty() {
        return;
    }
    let first = acks.iter().map(|a| a.sent_ns).min().unwrap_or(0);
    let last = acks.iter().map(|a| a.acked_ns).max().unwrap_or(0);
    let mut h = histogram();
    for a in acks {
        record(&mut h, a.acked_ns.saturating_sub(a.sent_ns));
    }
    rec.put_ack = Some(Latency::of(&h));
    let secs = last.saturating_sub(first) as f64 / 1e9;
    rec.puts_per_s = (secs > 0.0).then(|| acks.len() as f64 / secs);
}

/// `k` watcher indices spread evenly over `0..n`.
pub(crate) fn sample(n: usize, k: usize) -> Vec<bool> {
    let mut s = vec![false; n];
    let k = k.min(n);
    for i in 0..k {
        s[i * n / k] = true;
    }
    if k > 0 && n > 0 {
        s[n - 1] = true;
    }
    s
}

/// Per watcher: created, every expected event once and in order (count, order and
/// fingerprint against the acknowledged puts). Then the guarantee checker on the
/// sampled watchers, against the history of every acknowledged put.
pub(crate) fn verify(
    specs: &[WatcherSpec],
    key_of: &[Option<usize>],
    col: &Collected,
    acks: &[Ack],
    keys: &[Vec<u8>],
    value_size: usize,
) -> CheckSummary {
    let mut sum = CheckSummary { watchers: specs.len() as u64, ..Default::default() };
    let hashes: Vec<u64> = keys.iter().map(|k| key_hash(k)).collect();
    // Expected fingerprints: per key, and over every key of the prefix.
    let mut fp_key = vec![0u64; keys.len()];
    let mut fp_all = 0u64;
    for a in acks {
        let f = event_fp(a.revision, hashes[a.key as usize]);
        fp_key[a.key as usize] = fp_key[a.key as usize].wrapping_add(f);
        if (a.key as usize) < keys.len() - 1 {
            fp_all = fp_all.wrapping_add(f);
        }
    }
    let problem = |sum: &mut CheckSummary, s: String| {
        if sum.problems.len() < 10 {
            sum.problems.push(s);
        }
    };
    for (i, w) in col.watchers.iter().enumerate() {
        let want_fp = match key_of[i] {
            Some(k) => fp_key[k],
            None => fp_all,
        };
        let p = if !w.created {
            Some("never created".to_string())
        } else if let Some(p) = &w.problem {
            Some(p.clone())
        } else if w.count != col.expected[i] {
            Some(format!("{} events of {}", w.count, col.expected[i]))
        } else if w.fp != want_fp {
            Some("received events differ from those written (fingerprint)".to_string())
        } else {
            None
        };
        match p {
            None => sum.watchers_ok += 1,
            Some(p) => problem(&mut sum, format!("watcher {i}: {p}")),
        }
    }
    // The guarantee checker.
    let mut history = History::new();
    let mut last = 0i64;
    for a in acks {
        if a.revision <= last {
            problem(&mut sum, format!("two puts acknowledged at revision {}", a.revision));
            return sum;
        }
        last = a.revision;
        let value = value_of(a.sent_ns, value_size);
        history.record_writes(a.revision as u64, &[(keys[a.key as usize].as_slice(), Some(value.as_slice()))]);
    }
    let mut sampled: Vec<(&usize, &Vec<Bytes>)> = col.sampled.iter().collect();
    sampled.sort_by_key(|(i, _)| **i);
    for (&g, responses) in sampled {
        let spec = &specs[g];
        let request = WatchRequest {
            key: spec.key.clone(),
            range_end: spec.range_end.clone(),
            start_revision: spec.start_revision,
            ..Default::default()
        };
        let mut decoded = Vec::with_capacity(responses.len());
        let mut watch_id = 0;
        for b in responses {
            match pb::WatchResponse::decode(b.as_ref()) {
                Ok(r) => {
                    watch_id = r.watch_id;
                    decoded.push(to_engine(r));
                }
                Err(e) => problem(&mut sum, format!("watcher {g}: undecodable response: {e}")),
            }
        }
        let observed = Observed { request, watch_id, responses: decoded };
        let v = check::check(&history, &observed);
        sum.full_checked += 1;
        sum.violations += v.len() as u64;
        for x in v.iter().take(5usize.saturating_sub(sum.violation_examples.len())) {
            sum.violation_examples.push(format!("watcher {g}: {x}"));
        }
    }
    sum
}

/// A decoded etcd response as the engine's type, for the checker: consecutive
/// events of one revision form one [`RevisionEvents`].
fn to_engine(r: pb::WatchResponse) -> WatchResponse {
    let kv_of = |kv: argus_server::proto::mvccpb::KeyValue| KeyValue {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision as u64,
        mod_revision: kv.mod_revision as u64,
        version: kv.version as u64,
        lease: kv.lease,
    };
    let mut groups: Vec<RevisionEvents> = Vec::new();
    let mut cur: Vec<Event> = Vec::new();
    let mut cur_rev = 0u64;
    let flush = |groups: &mut Vec<RevisionEvents>, cur: &mut Vec<Event>, rev: u64| {
        if !cur.is_empty() {
            let batch = Arc::new(RevisionBatch::new(rev, std::mem::take(cur), false));
            groups.push(RevisionEvents { batch, selection: None });
        }
    };
    for e in r.events {
        let kv = kv_of(e.kv.unwrap_or_default());
        if kv.mod_revision != cur_rev {
            flush(&mut groups, &mut cur, cur_rev);
            cur_rev = kv.mod_revision;
        }
        let kind = if e.r#type == 1 { EventKind::Delete } else { EventKind::Put };
        let sub = cur.len() as u32;
        cur.push(Event { kind, kv, prev_kv: e.prev_kv.map(kv_of), sub });
    }
    flush(&mut groups, &mut cur, cur_rev);
    WatchResponse {
        watch_id: r.watch_id,
        revision: r.header.map_or(0, |h| h.revision as u64),
        created: r.created,
        canceled: r.canceled,
        compact_revision: r.compact_revision as u64,
        cancel_reason: r.cancel_reason,
        events: groups,
        prev_kv: false,
    }
}

pub(crate) fn finish_check(rec: &mut RunRecord, sum: CheckSummary, col_errors: &[String]) {
    if sum.watchers_ok != sum.watchers || sum.violations > 0 {
        rec.ok = false;
    }
    for e in col_errors.iter().take(10) {
        rec.errors.push(e.clone());
    }
    if !col_errors.is_empty() {
        rec.ok = false;
    }
    rec.check = sum;
    rec.loadavg_end = loadavg();
}

/// Watchers and the writes they see.
#[derive(Clone, Debug)]
pub struct WriteWatch {
    /// What the watchers watch.
    pub mode: Mode,
    /// Watchers.
    pub watchers: usize,
    /// Watch streams they are spread over.
    pub streams: usize,
    /// Keys the puts cycle over.
    pub keys: usize,
    /// Puts.
    pub puts: u64,
    /// Puts per second (0: as fast as the clients go).
    pub rate: f64,
    /// Concurrent put clients.
    pub put_clients: usize,
    /// No put is started after this many seconds (0: no bound); the watchers then
    /// expect what was written.
    pub max_put_secs: f64,
}

pub(crate) async fn sleep(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// The watchers of a fan-out: `watchers` on the namespace's prefix, or each on key
/// `i % n` of the `n` written keys of `keys` (a [`key_set`]: all but its last, the
/// warm-up key, as in [`write_puts`]), expecting that key's share of `puts`, which
/// cycle over them; and each watcher's key index (`None` for a prefix watcher).
pub(crate) fn fanout_specs(
    mode: Mode,
    watchers: usize,
    puts: u64,
    ns: &str,
    keys: &[Vec<u8>],
) -> (Vec<WatcherSpec>, Vec<Option<usize>>) {
    let nkeys = keys.len().saturating_sub(1).max(1);
    // Puts per key, for the expected counts of key watchers.
    let per_key = |k: usize| puts / nkeys as u64 + u64::from((k as u64) < puts % nkeys as u64);
    let mut key_of = Vec::with_capacity(watchers);
    let specs: Vec<WatcherSpec> = (0..watchers)
        .map(|i| match mode {
            Mode::Prefix => {
                key_of.push(None);
                let key = ns.as_bytes().to_vec();
                WatcherSpec { range_end: prefix_end(&key), key, start_revision: 0, expected: puts }
            }
            Mode::Keys => {
                let k = i % nkeys;
                key_of.push(Some(k));
                WatcherSpec { key: keys[k].clone(), range_end: Vec::new(), start_revision: 0, expected: per_key(k) }
            }
        })
        .collect();
    (specs, key_of)
}

/// `fanout`, `light` and `put`: open the watchers, measure the server's memory,
/// then write and wait until every watcher has every event.
pub async fn write_watch(c: &Common, kind: &str, p: &WriteWatch) -> RunRecord {
    let mut rec = RunRecord::new(c, kind);
    rec.param("mode", p.mode);
    rec.param("watchers", p.watchers);
    rec.param("streams", p.streams);
    rec.param("connections", c.connections);
    rec.param("keys", p.keys);
    rec.param("puts", p.puts);
    rec.param("rate", p.rate);
    rec.param("put_clients", p.put_clients);
    rec.param("max_put_secs", p.max_put_secs);
    rec.param("value_size", c.value_size);
    rec.watchers = p.watchers as u64;
    let deadline = Instant::now() + c.timeout;
    match wait_ready(c.endpoint, Duration::from_secs(30)).await {
        Ok(s) => rec.server_version = s.version,
        Err(e) => return rec.fail(e),
    }
    let chans = match connect(c.endpoint, c.connections).await {
        Ok(ch) => ch,
        Err(e) => return rec.fail(e),
    };
    let ns = namespace(c);
    let nkeys = p.keys.max(1);
    let keys = key_set(&ns, nkeys);
    let writer = Writer::new(&chans, c.value_size);
    let mut acks = Vec::new();
    match warm_put(&writer, &keys).await {
        Ok(a) => acks.push(a),
        Err(e) => return rec.fail(e),
    }
    sleep(300).await;
    rec.rss_before = c.server_pid.and_then(rss_bytes);

    let (specs, key_of) = fanout_specs(p.mode, p.watchers, p.puts, &ns, &keys);
    let specs = Arc::new(specs);
    let cpu_c0 = Cpu::sample(c.server_pid);
    let set = WatchSet::open(&chans, &specs, p.streams, &sample(p.watchers, c.check_watchers), true);
    let w = p.watchers as u64;
    let b = bar(c, w, "watchers");
    if !set.wait(|_| set.settled() >= w, |_| set.settled(), &b, deadline).await {
        b.abandon();
        let got = set.settled();
        let col = set.finish(Duration::ZERO).await;
        let mut rec = rec.fail(format!("only {got} of {w} watchers created in time"));
        rec.errors.extend(col.errors.into_iter().take(5));
        return rec;
    }
    b.finish_and_clear();
    let created_ns = now_ns();
    let cpu_c1 = Cpu::sample(c.server_pid);
    rec.create_server_cpu_s = cpu_c0.until(&cpu_c1).server;
    if p.watchers > 0 {
        let secs = created_ns.saturating_sub(set.create_started_ns) as f64 / 1e9;
        rec.create_s = Some(secs);
        rec.watchers_per_s = (secs > 0.0).then(|| w as f64 / secs);
    }
    match warm_put(&writer, &keys).await {
        Ok(a) => acks.push(a),
        Err(e) => return rec.fail(e),
    }
    sleep(500).await;
    rec.rss_after = c.server_pid.and_then(rss_bytes);
    if let (Some(a), Some(b), true) = (rec.rss_before, rec.rss_after, p.watchers > 0) {
        rec.rss_per_watcher = Some((b as f64 - a as f64) / p.watchers as f64);
    }

    // The measured phase: puts, and every event delivered.
    let cpu0 = Cpu::sample(c.server_pid);
    let t0 = now_ns();
    let b = bar(c, p.puts, "puts");
    let (put_acks, errors) =
        write_puts(&writer, &keys, p.puts, p.put_clients, p.rate, p.max_put_secs, deadline, &b).await;
    b.finish_and_clear();
    if (put_acks.len() as u64) < p.puts && errors.is_empty() {
        // Stopped by the time bound: every watcher now expects what was written.
        rec.param("puts_stopped_after_s", p.max_put_secs);
        let mut per_key = vec![0u64; keys.len()];
        for a in &put_acks {
            per_key[a.key as usize] += 1;
        }
        for (i, e) in set.shared().expected.iter().enumerate() {
            let n = match key_of[i] {
                Some(k) => per_key[k],
                None => put_acks.len() as u64,
            };
            e.store(n, Ordering::Relaxed);
        }
    }
    let expected_total: u64 = set.shared().expected.iter().map(|e| e.load(Ordering::Relaxed)).sum();
    rec.events_expected = expected_total;
    let b = bar(c, expected_total, "events");
    let all = set.wait(|s| s.all_done(), |s| s.events.load(Ordering::Relaxed).min(expected_total), &b, deadline).await;
    b.finish_and_clear();
    let t_end = now_ns();
    let cpu1 = Cpu::sample(c.server_pid);
    let events = set.shared().events.load(Ordering::Relaxed);
    let last_event = set.shared().last_event_ns.load(Ordering::Relaxed);
    let col = set.finish(Duration::from_millis(200)).await;

    put_figures(&mut rec, &put_acks);
    rec.events = events;
    let end = if p.watchers > 0 && events > 0 { last_event.max(t0) } else { t_end };
    rec.wall_s = end.saturating_sub(t0) as f64 / 1e9;
    rec.events_per_s = (rec.wall_s > 0.0 && p.watchers > 0).then(|| events as f64 / rec.wall_s);
    if p.watchers > 0 {
        rec.event_latency = Some(Latency::of(&col.latency));
    }
    rec.set_cpu(cpu0.until(&cpu1));
    rec.errors.extend(errors.iter().cloned());
    if !errors.is_empty() {
        rec.ok = false;
    }
    if !all {
        rec.ok = false;
        rec.errors.push(format!(
            "not every watcher got every event: {} of {w} done, {events} of {expected_total} events",
            col.watchers.iter().filter(|w| w.done).count()
        ));
    }
    acks.extend(put_acks);
    acks.sort_by_key(|a| a.revision);
    let sum = verify(&specs, &key_of, &col, &acks, &keys, c.value_size);
    finish_check(&mut rec, sum, &col.errors);
    rec
}

/// A history and the watchers that replay it.
#[derive(Clone, Debug)]
pub struct Catchup {
    /// Revisions written first (one put each).
    pub history: u64,
    /// Watchers from revision 1.
    pub watchers: usize,
    /// Streams.
    pub streams: usize,
    /// Concurrent clients writing the history.
    pub write_clients: usize,
    /// Keys the history cycles over.
    pub keys: usize,
}

/// `catchup`: write the history, then open every watcher from revision 1 at once
/// and time until all have every event.
pub async fn catchup(c: &Common, p: &Catchup) -> RunRecord {
    let mut rec = RunRecord::new(c, "catchup");
    rec.param("history", p.history);
    rec.param("watchers", p.watchers);
    rec.param("streams", p.streams);
    rec.param("connections", c.connections);
    rec.param("write_clients", p.write_clients);
    rec.param("keys", p.keys);
    rec.param("value_size", c.value_size);
    rec.watchers = p.watchers as u64;
    let deadline = Instant::now() + c.timeout;
    match wait_ready(c.endpoint, Duration::from_secs(30)).await {
        Ok(s) => rec.server_version = s.version,
        Err(e) => return rec.fail(e),
    }
    let chans = match connect(c.endpoint, c.connections).await {
        Ok(ch) => ch,
        Err(e) => return rec.fail(e),
    };
    let ns = namespace(c);
    let keys = key_set(&ns, p.keys.max(1));
    let writer = Writer::new(&chans, c.value_size);
    let b = bar(c, p.history, "history");
    let t = now_ns();
    let (acks, errors) = write_puts(&writer, &keys, p.history, p.write_clients, 0.0, 0.0, deadline, &b).await;
    b.finish_and_clear();
    rec.write_s = Some(now_ns().saturating_sub(t) as f64 / 1e9);
    if !errors.is_empty() {
        let mut rec = rec.fail(format!("writing the history failed after {} puts", acks.len()));
        rec.errors.extend(errors);
        return rec;
    }
    sleep(500).await;

    let key = ns.as_bytes().to_vec();
    let spec = WatcherSpec { range_end: prefix_end(&key), key, start_revision: 1, expected: p.history };
    let specs = Arc::new(vec![spec; p.watchers]);
    let key_of = vec![None; p.watchers];
    let expected_total = p.history * p.watchers as u64;
    rec.events_expected = expected_total;
    let w = p.watchers as u64;
    let cpu0 = Cpu::sample(c.server_pid);
    let set = WatchSet::open(&chans, &specs, p.streams, &sample(p.watchers, c.check_watchers), false);
    let t0 = set.create_started_ns;
    let b = bar(c, expected_total, "events");
    let all = set.wait(|s| s.all_done(), |s| s.events.load(Ordering::Relaxed).min(expected_total), &b, deadline).await;
    b.finish_and_clear();
    let cpu1 = Cpu::sample(c.server_pid);
    let events = set.shared().events.load(Ordering::Relaxed);
    let col = set.finish(Duration::from_millis(200)).await;
    rec.events = events;
    let end = col.watchers.iter().map(|w| w.done_ns).max().unwrap_or(t0).max(t0);
    rec.wall_s = end.saturating_sub(t0) as f64 / 1e9;
    rec.events_per_s = (rec.wall_s > 0.0).then(|| events as f64 / rec.wall_s);
    let mut h = histogram();
    for w in col.watchers.iter().filter(|w| w.done) {
        record(&mut h, w.done_ns.saturating_sub(t0));
    }
    rec.watcher_done = Some(Latency::of(&h));
    rec.set_cpu(cpu0.until(&cpu1));
    if !all {
        rec.ok = false;
        rec.errors.push(format!(
            "not every watcher caught up in time: {} of {w} done, {events} of {expected_total} events",
            col.watchers.iter().filter(|w| w.done).count()
        ));
    }
    let sum = verify(&specs, &key_of, &col, &acks, &keys, c.value_size);
    finish_check(&mut rec, sum, &col.errors);
    rec
}

/// `watch-create`: open `watchers` idle watchers over `streams` streams; creation
/// rate and the server's memory per watcher.
pub async fn watch_create(c: &Common, mode: Mode, watchers: usize, streams: usize) -> RunRecord {
    let mut rec = RunRecord::new(c, "watch-create");
    rec.param("mode", mode);
    rec.param("watchers", watchers);
    rec.param("streams", streams);
    rec.param("connections", c.connections);
    rec.watchers = watchers as u64;
    let deadline = Instant::now() + c.timeout;
    match wait_ready(c.endpoint, Duration::from_secs(30)).await {
        Ok(s) => rec.server_version = s.version,
        Err(e) => return rec.fail(e),
    }
    let chans = match connect(c.endpoint, c.connections).await {
        Ok(ch) => ch,
        Err(e) => return rec.fail(e),
    };
    let ns = namespace(c);
    let keys = key_set(&ns, 1);
    let writer = Writer::new(&chans, c.value_size);
    if let Err(e) = warm_put(&writer, &keys).await {
        return rec.fail(e);
    }
    sleep(300).await;
    rec.rss_before = c.server_pid.and_then(rss_bytes);
    let specs: Vec<WatcherSpec> = (0..watchers)
        .map(|i| match mode {
            Mode::Prefix => {
                let key = ns.as_bytes().to_vec();
                WatcherSpec { range_end: prefix_end(&key), key, start_revision: 0, expected: 0 }
            }
            Mode::Keys => WatcherSpec {
                key: format!("{ns}w{i:07}").into_bytes(),
                range_end: Vec::new(),
                start_revision: 0,
                expected: 0,
            },
        })
        .collect();
    let specs = Arc::new(specs);
    let w = watchers as u64;
    let cpu0 = Cpu::sample(c.server_pid);
    let set = WatchSet::open(&chans, &specs, streams, &[], false);
    let b = bar(c, w, "watchers");
    let ok = set.wait(|_| set.settled() >= w, |_| set.settled(), &b, deadline).await;
    b.finish_and_clear();
    let created_ns = now_ns();
    let cpu1 = Cpu::sample(c.server_pid);
    let secs = created_ns.saturating_sub(set.create_started_ns) as f64 / 1e9;
    rec.wall_s = secs;
    rec.create_s = Some(secs);
    rec.watchers_per_s = (secs > 0.0).then(|| set.settled() as f64 / secs);
    rec.set_cpu(cpu0.until(&cpu1));
    rec.create_server_cpu_s = rec.server_cpu_s;
    if ok {
        if let Err(e) = warm_put(&writer, &keys).await {
            rec.ok = false;
            rec.errors.push(e);
        }
        sleep(500).await;
        rec.rss_after = c.server_pid.and_then(rss_bytes);
        if let (Some(a), Some(b), true) = (rec.rss_before, rec.rss_after, watchers > 0) {
            rec.rss_per_watcher = Some((b as f64 - a as f64) / watchers as f64);
        }
    } else {
        rec.ok = false;
        rec.errors.push(format!("only {} of {w} watchers created in time", set.settled()));
    }
    let refused = set.shared().refused.load(Ordering::Relaxed);
    let col = set.finish(Duration::ZERO).await;
    let created = col.watchers.iter().filter(|w| w.created).count() as u64;
    let bad: Vec<String> = col
        .watchers
        .iter()
        .enumerate()
        .filter_map(|(i, w)| w.problem.as_ref().map(|p| format!("watcher {i}: {p}")))
        .take(10)
        .collect();
    rec.check = CheckSummary {
        watchers: w,
        watchers_ok: created - bad.len().min(created as usize) as u64,
        problems: bad,
        ..Default::default()
    };
    if refused > 0 || rec.check.watchers_ok != w {
        rec.ok = false;
    }
    rec.errors.extend(col.errors.into_iter().take(10));
    rec.loadavg_end = loadavg();
    rec
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::watchers::WatcherOut;
    use argus_server::proto::mvccpb;

    /// Key watchers are spread over the written keys only, never the warm-up key
    /// `key_set` appends, and expect what `write_puts` puts on their key (put `i`
    /// on key `i % n`).
    #[test]
    fn fanout_specs_spread_key_watchers_over_the_written_keys() {
        for (n, puts) in [(1usize, 200u64), (3, 10)] {
            let keys = key_set("/ns/", n);
            let (specs, key_of) = fanout_specs(Mode::Keys, 7, puts, "/ns/", &keys);
            let warm = keys.last().unwrap();
            for (i, (s, k)) in specs.iter().zip(&key_of).enumerate() {
                assert_eq!(*k, Some(i % n), "watcher {i} of {n} keys");
                assert_ne!(&s.key, warm, "watcher {i} watches the warm-up key");
                let written = (0..puts).filter(|p| (*p as usize) % n == i % n).count() as u64;
                assert_eq!(s.expected, written, "watcher {i} of {n} keys");
            }
        }
        let (specs, key_of) = fanout_specs(Mode::Prefix, 2, 9, "/ns/", &key_set("/ns/", 4));
        assert!(key_of.iter().all(Option::is_none) && specs.iter().all(|s| s.expected == 9 && s.key == b"/ns/"));
    }

    /// Two watchers of one prefix, three puts: watcher 0 got everything, watcher 1
    /// missed the middle event. Both the per-watcher check and the guarantee
    /// checker must say so.
    #[test]
    fn verify_catches_a_missed_event() {
        let keys: Vec<Vec<u8>> = vec![b"/p/k0".to_vec(), b"/p/k1".to_vec(), b"/warm".to_vec()];
        let acks: Vec<Ack> = (0..3)
            .map(|i| Ack { key: (i % 2) as u32, revision: 2 + i as i64, sent_ns: 100 + i, acked_ns: 200 + i })
            .collect();
        let spec = WatcherSpec { key: b"/p/".to_vec(), range_end: prefix_end(b"/p/"), start_revision: 0, expected: 3 };
        let specs = vec![spec.clone(), spec];
        let event = |a: &Ack| mvccpb::Event {
            r#type: 0,
            kv: Some(mvccpb::KeyValue {
                key: keys[a.key as usize].clone(),
                create_revision: if a.revision == 4 { 2 } else { a.revision },
                mod_revision: a.revision,
                version: if a.revision == 4 { 2 } else { 1 },
                value: value_of(a.sent_ns, 32),
                lease: 0,
            }),
            prev_kv: None,
        };
        let resp = |id: i64, created: bool, evs: Vec<mvccpb::Event>| {
            let r = pb::WatchResponse {
                header: Some(pb::ResponseHeader {
                    revision: if created { 1 } else { evs[0].kv.as_ref().unwrap().mod_revision },
                    ..Default::default()
                }),
                watch_id: id,
                created,
                events: evs,
                ..Default::default()
            };
            Bytes::from(r.encode_to_vec())
        };
        let full = |id, skip: Option<usize>| {
            let mut v = vec![resp(id, true, vec![])];
            for (i, a) in acks.iter().enumerate() {
                if Some(i) != skip {
                    v.push(resp(id, false, vec![event(a)]));
                }
            }
            v
        };
        let fp = |skip: Option<usize>| {
            acks.iter()
                .enumerate()
                .filter(|(i, _)| Some(*i) != skip)
                .fold(0u64, |s, (_, a)| s.wrapping_add(event_fp(a.revision, key_hash(&keys[a.key as usize]))))
        };
        let out = |skip: Option<usize>| WatcherOut {
            created: true,
            created_rev: 1,
            count: if skip.is_some() { 2 } else { 3 },
            last_rev: 4,
            fp: fp(skip),
            problem: None,
            done: skip.is_none(),
            done_ns: 0,
        };
        let col = Collected {
            watchers: vec![out(None), out(Some(1))],
            latency: histogram(),
            sampled: [(0, full(1, None)), (1, full(1, Some(1)))].into_iter().collect(),
            errors: Vec::new(),
            expected: vec![3, 3],
        };
        let sum = verify(&specs, &[None, None], &col, &acks, &keys, 32);
        assert_eq!(sum.watchers_ok, 1, "{sum:?}");
        assert_eq!(sum.full_checked, 2);
        assert!(sum.violations > 0, "{sum:?}");
        assert!(sum.violation_examples.iter().all(|v| v.starts_with("watcher 1:")), "{sum:?}");
    }
}
