//! The `argus mirror` figures (issue 12): the same watchers either on the members of
//! a 3-member etcd cluster directly or on `argus mirror`s in front of it, the same
//! puts into the cluster in both setups, the same client code as every other
//! scenario ([`super::watchers`], [`super::client`]).
//!
//! - `mirror-fanout`: W watchers spread over the watch endpoints (the mirrors, or
//!   the members), P puts at R puts/s into the cluster (put client i on member
//!   i % members); event latency, every watcher checked, and what the cluster paid:
//!   the members' CPU over the measured phase (`/proc/<pid>/stat`, summed), the
//!   mirrors' own CPU, and the watchers the members hold
//!   (`etcd_debugging_mvcc_watcher_total` of each member's `/metrics`, summed).
//!   With one watcher it is the added-hop figure.
//! - `mirror-history`: writes H revisions into the cluster once, waits until every
//!   mirror has applied them, and keeps what was written in a file;
//! - `mirror-catchup`: W watchers from revision 1 over that history on one watch
//!   endpoint (a mirror, or a member): time until all have everything.
//!
//! The record's `server_cpu_s` is the CPU of the processes serving the watchers
//! (the mirrors, or the members); [`MirrorFigures`] has the members' and the
//! mirrors' separately.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::Channel;
use serde::{Deserialize, Serialize};

use super::client::{connect, status, wait_ready, Ack, Writer};
use super::scenario::{
    bar, fanout_specs, finish_check, key_set, namespace, put_figures, sample, sleep, verify, warm_put, write_puts,
    Common, Mode, RunRecord,
};
use super::stats::{cpu_seconds, histogram, loadavg, record, Cpu, CpuUsed, Latency};
use super::watchers::{WatchSet, WatcherSpec};
use super::{now_ns, prefix_end};

/// The etcd metric counting the watchers a member holds (a gauge of its
/// `watchableStore`, in `mvcc/metrics.go` of etcd 3.4).
pub const WATCHER_METRIC: &str = "etcd_debugging_mvcc_watcher_total";

/// Where the watchers and the puts go, and whose CPU is read.
#[derive(Clone, Debug, Default)]
pub struct Topology {
    /// Where the watchers go (mirrors, or members): watch stream s on endpoint
    /// s % endpoints.
    pub watch_endpoints: Vec<SocketAddr>,
    /// Pids of the processes serving the watchers, in the same order.
    pub watch_pids: Vec<u32>,
    /// The cluster's members (client addresses): the puts go there, round-robin,
    /// and their `/metrics` (served on the client address) is read.
    pub members: Vec<SocketAddr>,
    /// The members' pids.
    pub member_pids: Vec<u32>,
    /// The mirrors' pids (none when the watchers are on the members).
    pub mirror_pids: Vec<u32>,
}

/// The mirror figures of a run (the rest is in the [`RunRecord`]: event latency,
/// catch-up time, the checks).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MirrorFigures {
    /// Endpoints the watchers were spread over.
    pub watch_endpoints: Vec<String>,
    /// The cluster's members.
    pub members: Vec<String>,
    /// Mirrors running in front of the cluster (whether or not they served the watchers).
    pub mirrors: u64,
    /// CPU seconds of the members over the measured phase, summed (`None` if a
    /// member's could not be read).
    pub member_cpu_s: Option<f64>,
    /// Each member's CPU seconds over the measured phase.
    pub member_cpu_each_s: Vec<Option<f64>>,
    /// CPU seconds of the mirrors over the measured phase, summed.
    pub mirror_cpu_s: Option<f64>,
    /// Each mirror's.
    pub mirror_cpu_each_s: Vec<Option<f64>>,
    /// Watchers the members held before the run's watchers were opened (the
    /// mirrors' upstream watches, if any), summed over the members.
    pub member_watchers_before: Option<u64>,
    /// Watchers the members held with the run's watchers open, summed.
    pub member_watchers: Option<u64>,
    /// Each member's, with the run's watchers open.
    pub member_watchers_each: Vec<Option<u64>>,
    /// Catch-up: the last revision of the history.
    pub history_last_revision: Option<i64>,
}

/// CPU seconds of each of `pids` now.
fn cpu_each(pids: &[u32]) -> Vec<Option<f64>> {
    pids.iter().map(|&p| cpu_seconds(p)).collect()
}

/// What each process used between two [`cpu_each`] samples, and the sum (`None`
/// if any is unknown, or there are none).
fn cpu_used(before: &[Option<f64>], after: &[Option<f64>]) -> (Option<f64>, Vec<Option<f64>>) {
    let each: Vec<Option<f64>> = before.iter().zip(after).map(|(a, b)| Some(b.as_ref()? - a.as_ref()?)).collect();
    let sum = if each.is_empty() { None } else { each.iter().copied().sum::<Option<f64>>() };
    (sum, each)
}

/// CPU of several processes and of this client at one moment.
struct Sample {
    members: Vec<Option<f64>>,
    mirrors: Vec<Option<f64>>,
    /// The serving processes: with one, its threads too (the split of an Argus server).
    serving: Cpu,
    serving_each: Vec<Option<f64>>,
}

impl Sample {
    fn now(t: &Topology) -> Sample {
        Sample {
            members: cpu_each(&t.member_pids),
            mirrors: cpu_each(&t.mirror_pids),
            serving: Cpu::sample((t.watch_pids.len() == 1).then(|| t.watch_pids[0])),
            serving_each: cpu_each(&t.watch_pids),
        }
    }

    /// Fills the CPU figures of `rec` and `f` from `self` to `later`.
    fn until(&self, later: &Sample, rec: &mut RunRecord, f: &mut MirrorFigures) {
        (f.member_cpu_s, f.member_cpu_each_s) = cpu_used(&self.members, &later.members);
        (f.mirror_cpu_s, f.mirror_cpu_each_s) = cpu_used(&self.mirrors, &later.mirrors);
        let used = self.serving.until(&later.serving);
        let (serving, _) = cpu_used(&self.serving_each, &later.serving_each);
        rec.set_cpu(CpuUsed { server: serving, client: used.client, server_split: used.server_split });
    }
}

/// Sums the samples of metric `name` (any labels) in a Prometheus text exposition.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let Some(series) = parts.next() else { continue };
        if series.split('{').next() != Some(name) {
            continue;
        }
        if let Some(v) = parts.next().and_then(|v| v.parse::<f64>().ok()) {
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

/// `GET /metrics` of the HTTP server at `addr` (etcd serves it on its client
/// address), the body. HTTP/1.0, so the answer is neither chunked nor kept open.
fn get_metrics(addr: SocketAddr) -> Result<String, String> {
    use std::io::{Read, Write};
    super::client::check_loopback(addr)?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect to {addr} for /metrics: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| format!("GET {addr}/metrics: {e}"))?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| format!("GET {addr}/metrics: {e}"))?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("GET {addr}/metrics: no header end"))?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200") {
        return Err(format!("GET {addr}/metrics: {status}"));
    }
    Ok(body.to_string())
}

/// The watchers each member holds ([`WATCHER_METRIC`]), and their sum (`None` if
/// a member's could not be read).
async fn member_watchers(members: &[SocketAddr]) -> (Option<u64>, Vec<Option<u64>>, Vec<String>) {
    let members = members.to_vec();
    let got = tokio::task::spawn_blocking(move || {
        members
            .iter()
            .map(|&m| {
                get_metrics(m).and_then(|b| {
                    metric_sum(&b, WATCHER_METRIC).ok_or_else(|| format!("{m}/metrics has no {WATCHER_METRIC}"))
                })
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let mut errors = Vec::new();
    let each: Vec<Option<u64>> = got
        .into_iter()
        .map(|r| match r {
            Ok(v) => Some(v.round() as u64),
            Err(e) => {
                errors.push(e);
                None
            }
        })
        .collect();
    let sum = if each.is_empty() { None } else { each.iter().copied().sum::<Option<u64>>() };
    (sum, each, errors)
}

/// Waits until every endpoint answers; the first one's version.
async fn ready(rec: &mut RunRecord, endpoints: &[SocketAddr]) -> Result<(), String> {
    for (i, &ep) in endpoints.iter().enumerate() {
        let s = wait_ready(ep, Duration::from_secs(60)).await?;
        if i == 0 {
            rec.server_version = s.version;
        }
    }
    Ok(())
}

/// `per` connections to each endpoint, interleaved (endpoint order first), so that
/// stream s of a [`WatchSet`] goes to endpoint s % endpoints.
async fn connect_all(endpoints: &[SocketAddr], per: usize) -> Result<Vec<Channel>, String> {
    let mut each = Vec::with_capacity(endpoints.len());
    for &ep in endpoints {
        each.push(connect(ep, per).await?);
    }
    let per = per.max(1);
    Ok((0..per).flat_map(|i| each.iter().map(move |chans| chans[i].clone())).collect())
}

/// Waits until each endpoint's `Maintenance.Status` header revision is at least
/// `revision` (a mirror's is the revision it has applied).
async fn wait_revision(endpoints: &[SocketAddr], revision: i64, deadline: Instant) -> Result<(), String> {
    for &ep in endpoints {
        let chans = connect(ep, 1).await?;
        loop {
            let at = status(&chans[0]).await?.revision;
            if at >= revision {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!("{ep} at revision {at}, not {revision}, when the time was up"));
            }
            sleep(100).await;
        }
    }
    Ok(())
}

fn figures_of(t: &Topology) -> MirrorFigures {
    MirrorFigures {
        watch_endpoints: t.watch_endpoints.iter().map(ToString::to_string).collect(),
        members: t.members.iter().map(ToString::to_string).collect(),
        mirrors: t.mirror_pids.len() as u64,
        ..Default::default()
    }
}

fn topology_params(rec: &mut RunRecord, t: &Topology, c: &Common) {
    rec.param("watch_endpoints", t.watch_endpoints.len());
    rec.param("members", t.members.len());
    rec.param("mirrors", t.mirror_pids.len());
    rec.param("connections", c.connections);
    rec.param("value_size", c.value_size);
}

/// `mirror-fanout` parameters.
#[derive(Clone, Debug)]
pub struct Fanout {
    /// What the watchers watch.
    pub mode: Mode,
    /// Watchers, over every watch endpoint.
    pub watchers: usize,
    /// Watch streams, over every watch endpoint.
    pub streams: usize,
    /// Keys the puts cycle over.
    pub keys: usize,
    /// Puts.
    pub puts: u64,
    /// Puts per second (0: as fast as the clients go).
    pub rate: f64,
    /// Concurrent put clients (client i on member i % members).
    pub put_clients: usize,
}

/// `mirror-fanout`: open the watchers on the watch endpoints, read what the members
/// hold, then put into the cluster and wait until every watcher has every event.
pub async fn fanout(c: &Common, t: &Topology, p: &Fanout) -> RunRecord {
    let mut rec = RunRecord::new(c, "mirror-fanout");
    topology_params(&mut rec, t, c);
    rec.param("mode", p.mode);
    rec.param("watchers", p.watchers);
    rec.param("streams", p.streams);
    rec.param("keys", p.keys);
    rec.param("puts", p.puts);
    rec.param("rate", p.rate);
    rec.param("put_clients", p.put_clients);
    rec.watchers = p.watchers as u64;
    let mut f = figures_of(t);
    let deadline = Instant::now() + c.timeout;
    let all: Vec<SocketAddr> = t.watch_endpoints.iter().chain(&t.members).copied().collect();
    if let Err(e) = ready(&mut rec, &all).await {
        return rec.fail(e);
    }
    let chans = match connect_all(&t.watch_endpoints, c.connections).await {
        Ok(ch) => ch,
        Err(e) => return rec.fail(e),
    };
    let put_chans = match connect_all(&t.members, 1).await {
        Ok(ch) => ch,
        Err(e) => return rec.fail(e),
    };
    let writer = Writer::new(&put_chans, c.value_size);
    let ns = namespace(c);
    let nkeys = p.keys.max(1);
    let keys = key_set(&ns, nkeys);
    let mut acks = Vec::new();
    match warm_put(&writer, &keys).await {
        Ok(a) => acks.push(a),
        Err(e) => return rec.fail(e),
    }
    sleep(300).await;
    let (before, _, errs) = member_watchers(&t.members).await;
    f.member_watchers_before = before;
    rec.errors.extend(errs);

    let (specs, key_of) = fanout_specs(p.mode, p.watchers, p.puts, &ns, &keys);
    let specs = Arc::new(specs);
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
    if p.watchers > 0 {
        let secs = created_ns.saturating_sub(set.create_started_ns) as f64 / 1e9;
        rec.create_s = Some(secs);
        rec.watchers_per_s = (secs > 0.0).then(|| w as f64 / secs);
    }
    // One more revision, through every watch endpoint, before the figures: every
    // watcher is then synced (etcd moves a new watcher to its synced group on its
    // next sync round), and the members count them.
    match warm_put(&writer, &keys).await {
        Ok(a) => acks.push(a),
        Err(e) => return rec.fail(e),
    }
    sleep(500).await;
    let (held, each, errs) = member_watchers(&t.members).await;
    (f.member_watchers, f.member_watchers_each) = (held, each);
    rec.errors.extend(errs);

    // The measured phase: puts into the cluster, and every event delivered.
    let cpu0 = Sample::now(t);
    let t0 = now_ns();
    let b = bar(c, p.puts, "puts");
    let (put_acks, errors) = write_puts(&writer, &keys, p.puts, p.put_clients, p.rate, 0.0, deadline, &b).await;
    b.finish_and_clear();
    let expected_total: u64 = set.shared().expected.iter().map(|e| e.load(Ordering::Relaxed)).sum();
    rec.events_expected = expected_total;
    let b = bar(c, expected_total, "events");
    let all = set.wait(|s| s.all_done(), |s| s.events.load(Ordering::Relaxed).min(expected_total), &b, deadline).await;
    b.finish_and_clear();
    let t_end = now_ns();
    let cpu1 = Sample::now(t);
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
    cpu0.until(&cpu1, &mut rec, &mut f);
    if !rec.errors.is_empty() || !errors.is_empty() {
        rec.ok = false;
    }
    rec.errors.extend(errors.iter().cloned());
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
    rec.mirror = Some(f);
    rec
}

/// What `mirror-history` wrote, for `mirror-catchup` to check the watchers against.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HistoryFile {
    /// The prefix of every key written.
    pub namespace: String,
    /// Keys the puts cycled over (key i is `{namespace}k{i:06}`).
    pub keys: usize,
    /// Bytes per value.
    pub value_size: usize,
    /// Seconds the writing took.
    pub write_s: f64,
    /// Every acknowledged put, by revision: `[key index, revision, send time]`.
    pub acks: Vec<[u64; 3]>,
}

impl HistoryFile {
    /// The acknowledged puts as the checker takes them.
    pub fn acks(&self) -> Vec<Ack> {
        self.acks
            .iter()
            .map(|&[key, revision, sent_ns]| Ack { key: key as u32, revision: revision as i64, sent_ns, acked_ns: 0 })
            .collect()
    }

    /// Reads a history file.
    ///
    /// # Errors
    ///
    /// Reading or parsing, as text.
    pub fn read(path: &Path) -> Result<HistoryFile, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("parse {}: {e}", path.display()))
    }
}

/// `mirror-history` parameters.
#[derive(Clone, Debug)]
pub struct History {
    /// Revisions to write (one put each).
    pub history: u64,
    /// Concurrent writers (writer i on member i % members).
    pub write_clients: usize,
    /// Keys the puts cycle over.
    pub keys: usize,
    /// Endpoints that must have applied the history before this returns (the mirrors).
    pub wait_for: Vec<SocketAddr>,
}

/// `mirror-history`: writes the history into the cluster through `members`, waits
/// until every `wait_for` endpoint has applied it, and returns what was written.
///
/// # Errors
///
/// A put failing, or an endpoint not catching up within `c.timeout`.
pub async fn write_history(c: &Common, members: &[SocketAddr], p: &History) -> Result<HistoryFile, String> {
    let deadline = Instant::now() + c.timeout;
    for &m in members {
        wait_ready(m, Duration::from_secs(60)).await?;
    }
    let chans = connect_all(members, 1).await?;
    let writer = Writer::new(&chans, c.value_size);
    let ns = namespace(c);
    let keys = key_set(&ns, p.keys.max(1));
    let b = bar(c, p.history, "history");
    let t = now_ns();
    let (acks, errors) = write_puts(&writer, &keys, p.history, p.write_clients, 0.0, 0.0, deadline, &b).await;
    b.finish_and_clear();
    let write_s = now_ns().saturating_sub(t) as f64 / 1e9;
    if !errors.is_empty() {
        return Err(format!("writing the history failed after {} puts: {}", acks.len(), errors.join("; ")));
    }
    let last = acks.last().map_or(0, |a| a.revision);
    wait_revision(&p.wait_for, last, deadline).await?;
    Ok(HistoryFile {
        namespace: ns,
        keys: p.keys.max(1),
        value_size: c.value_size,
        write_s,
        acks: acks.iter().map(|a| [u64::from(a.key), a.revision as u64, a.sent_ns]).collect(),
    })
}

/// `mirror-catchup` parameters.
#[derive(Clone, Debug)]
pub struct Catchup {
    /// Watchers from revision 1.
    pub watchers: usize,
    /// Watch streams.
    pub streams: usize,
}

/// `mirror-catchup`: every watcher from revision 1 on the history's prefix at once,
/// on the watch endpoints; time until all have every event of the history.
pub async fn catchup(c: &Common, t: &Topology, h: &HistoryFile, p: &Catchup) -> RunRecord {
    let mut rec = RunRecord::new(c, "mirror-catchup");
    topology_params(&mut rec, t, c);
    let history = h.acks.len() as u64;
    rec.param("history", history);
    rec.param("watchers", p.watchers);
    rec.param("streams", p.streams);
    rec.param("keys", h.keys);
    rec.watchers = p.watchers as u64;
    rec.write_s = Some(h.write_s);
    let mut f = figures_of(t);
    let deadline = Instant::now() + c.timeout;
    let acks = h.acks();
    let last = acks.last().map_or(0, |a| a.revision);
    f.history_last_revision = Some(last);
    if let Err(e) = ready(&mut rec, &t.watch_endpoints).await {
        return rec.fail(e);
    }
    if let Err(e) = wait_revision(&t.watch_endpoints, last, deadline).await {
        return rec.fail(e);
    }
    let chans = match connect_all(&t.watch_endpoints, c.connections).await {
        Ok(ch) => ch,
        Err(e) => return rec.fail(e),
    };
    let keys = key_set(&h.namespace, h.keys);
    let key = h.namespace.as_bytes().to_vec();
    let spec = WatcherSpec { range_end: prefix_end(&key), key, start_revision: 1, expected: history };
    let specs = Arc::new(vec![spec; p.watchers]);
    let key_of = vec![None; p.watchers];
    let expected_total = history * p.watchers as u64;
    rec.events_expected = expected_total;
    let w = p.watchers as u64;
    let cpu0 = Sample::now(t);
    let set = WatchSet::open(&chans, &specs, p.streams, &sample(p.watchers, c.check_watchers), false);
    let t0 = set.create_started_ns;
    let b = bar(c, expected_total, "events");
    let all = set.wait(|s| s.all_done(), |s| s.events.load(Ordering::Relaxed).min(expected_total), &b, deadline).await;
    b.finish_and_clear();
    let cpu1 = Sample::now(t);
    let events = set.shared().events.load(Ordering::Relaxed);
    let col = set.finish(Duration::from_millis(200)).await;
    rec.events = events;
    let end = col.watchers.iter().map(|w| w.done_ns).max().unwrap_or(t0).max(t0);
    rec.wall_s = end.saturating_sub(t0) as f64 / 1e9;
    rec.events_per_s = (rec.wall_s > 0.0).then(|| events as f64 / rec.wall_s);
    let mut hist = histogram();
    for w in col.watchers.iter().filter(|w| w.done) {
        record(&mut hist, w.done_ns.saturating_sub(t0));
    }
    rec.watcher_done = Some(Latency::of(&hist));
    cpu0.until(&cpu1, &mut rec, &mut f);
    if !all {
        rec.ok = false;
        rec.errors.push(format!(
            "not every watcher caught up in time: {} of {w} done, {events} of {expected_total} events",
            col.watchers.iter().filter(|w| w.done).count()
        ));
    }
    let sum = verify(&specs, &key_of, &col, &acks, &keys, h.value_size);
    finish_check(&mut rec, sum, &col.errors);
    rec.mirror = Some(f);
    rec.loadavg_end = loadavg();
    rec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_a_metric_over_its_labels() {
        let text = "# HELP etcd_debugging_mvcc_watcher_total Total number of watchers.\n\
                    # TYPE etcd_debugging_mvcc_watcher_total gauge\n\
                    etcd_debugging_mvcc_watcher_total 5000\n\
                    etcd_debugging_mvcc_watcher_total_other 7\n\
                    etcd_debugging_mvcc_slow_watcher_total 3\n\
                    x{a=\"1\"} 1.5\nx{a=\"2\"} 2\n";
        assert_eq!(metric_sum(text, WATCHER_METRIC), Some(5000.0));
        assert_eq!(metric_sum(text, "x"), Some(3.5));
        assert_eq!(metric_sum(text, "etcd_debugging_mvcc_watch_stream_total"), None);
    }

    #[test]
    fn cpu_sums_only_when_every_process_was_read() {
        let (sum, each) = cpu_used(&[Some(1.0), Some(2.0)], &[Some(1.5), Some(4.0)]);
        assert_eq!(sum, Some(2.5));
        assert_eq!(each, vec![Some(0.5), Some(2.0)]);
        let (sum, _) = cpu_used(&[Some(1.0), None], &[Some(1.5), Some(4.0)]);
        assert_eq!(sum, None);
        assert_eq!(cpu_used(&[], &[]).0, None);
    }

    #[test]
    fn history_acks_round_trip() {
        let h = HistoryFile { acks: vec![[3, 10, 99], [0, 11, 100]], ..Default::default() };
        let a = h.acks();
        assert_eq!((a[0].key, a[0].revision, a[0].sent_ns), (3, 10, 99));
        assert_eq!(a[1].revision, 11);
    }
}
