//! The lease workloads, the same client for Argus and etcd (the generated tonic
//! Lease and KV clients):
//!
//! - `lease-keepalive`: `L` leases granted (with `--keys`, one key put with each),
//!   then `C` connections each carrying one
//!   LeaseKeepAlive stream that renews its share of the leases round-robin, as fast
//!   as the server answers, with a window of requests outstanding per stream (both
//!   servers answer a stream's requests in order, so the send time of a response's
//!   request is the front of the stream's queue); renewals per second over a fixed
//!   time, and the latency of each renewal.
//! - `lease-expiry`: `P` clients put in a closed loop the whole run. First with no
//!   lease (the idle window); then, the puts paused, `L` leases are granted with the
//!   same TTL and one key put with each (in transactions of 100 puts); a watcher of
//!   those keys is opened; then one keep-alive each, in one burst, so all deadlines
//!   fall within the burst's span (the grants' own span would spread them); the puts
//!   resume. The expiry window runs from the first possible deadline to the arrival
//!   of the last key's DELETE at the watcher (the server pushes them: counting the
//!   keys instead would scan them on the server, work the puts would feel). Its put
//!   latency against the idle window's, how long the expiry took, and that it
//!   completed (no key and no lease left).
//! - `lease-memory`: the server's RSS before and after granting `L` leases with one
//!   key each, per lease.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::Channel;
use argus_server::proto::etcdserverpb as pb;
use argus_server::proto::etcdserverpb::kv_client::KvClient;
use argus_server::proto::etcdserverpb::lease_client::LeaseClient;
use futures::channel::mpsc;
use futures::StreamExt;
use hdrhistogram::Histogram;
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use super::client::{connect, create_request, open_watch, value_of, wait_ready, MAX_MESSAGE};
use super::scenario::{bar, namespace, sleep, Common, RunRecord};
use super::stats::{histogram, loadavg, record, rss_bytes, Cpu, Latency};
use super::{now_ns, prefix_end};

/// Concurrent grant clients (each grants a lease, then puts its key, then the next).
pub const GRANT_CLIENTS: usize = 64;

/// The lease figures of a run (the other figures of a [`RunRecord`] that apply:
/// wall time, server and client CPU and its split).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LeaseFigures {
    /// Leases granted.
    pub leases: u64,
    /// TTL asked for, seconds.
    pub ttl_s: i64,
    /// Seconds to grant them (and put their keys).
    pub grant_s: Option<f64>,
    /// Leases granted (and keys put) per second, [`GRANT_CLIENTS`] clients.
    pub grants_per_s: Option<f64>,
    /// `lease-keepalive`: renewals answered in the measured window.
    pub renewals: u64,
    /// Renewals per second of the measured window.
    pub renewals_per_s: Option<f64>,
    /// Renewal latency: request queued to its response received.
    pub renew_latency: Option<Latency>,
    /// `lease-expiry`: put-ack latency of the idle window (no lease yet).
    pub idle_put_ack: Option<Latency>,
    /// Puts per second of the idle window.
    pub idle_puts_per_s: Option<f64>,
    /// Put-ack latency with the leases live, before the first deadline.
    pub live_put_ack: Option<Latency>,
    /// Puts per second with the leases live.
    pub live_puts_per_s: Option<f64>,
    /// Put-ack latency of the puts sent in the expiry window.
    pub expiry_put_ack: Option<Latency>,
    /// Puts per second of the expiry window.
    pub expiry_puts_per_s: Option<f64>,
    /// Seconds the keep-alive burst took: every deadline is within this of the first.
    pub renew_burst_s: Option<f64>,
    /// Seconds from the first deadline to the first key's DELETE at the watcher.
    pub first_revoke_s: Option<f64>,
    /// Seconds from the first deadline to the last key's DELETE at the watcher
    /// (`None`: keys were left when the wait was given up).
    pub expiry_s: Option<f64>,
    /// Leases revoked per second over `expiry_s`.
    pub revoked_per_s: Option<f64>,
    /// Keys of the leases left at the end.
    pub keys_left: Option<u64>,
    /// Leases the server still listed at the end.
    pub leases_left: Option<u64>,
    /// `[seconds since the first deadline, keys left]`, every 0.5% of the keys.
    pub keys_over_time: Vec<[f64; 2]>,
    /// `lease-memory`: server RSS before the grants; `lease-keepalive`: after the
    /// grants, before the renewals.
    pub rss_before: Option<u64>,
    /// `lease-memory`: server RSS with the leases (and their keys) in place;
    /// `lease-keepalive`: at the end of the renewals.
    pub rss_after: Option<u64>,
    /// `(rss_after - rss_before) / leases`.
    pub rss_per_lease: Option<f64>,
    /// Checks made (answers, counts, what was left).
    pub checks: u64,
    /// Checks passed.
    pub checks_ok: u64,
}

impl LeaseFigures {
    /// Records one check; a failed one also fails the run with `what`.
    fn check(&mut self, rec_errors: &mut Vec<String>, ok: bool, what: impl FnOnce() -> String) {
        self.checks += 1;
        if ok {
            self.checks_ok += 1;
        } else {
            rec_errors.push(what());
        }
    }
}

/// `lease-keepalive` parameters.
#[derive(Clone, Debug)]
pub struct KeepAlive {
    /// Leases granted and renewed.
    pub leases: usize,
    /// Their TTL (long enough that none expires during the run).
    pub ttl: i64,
    /// Requests outstanding per stream.
    pub window: usize,
    /// Seconds of the measured window.
    pub secs: f64,
    /// Seconds of renewals before the measured window.
    pub warmup_secs: f64,
    /// Put one key with each lease (100 per txn) before the renewals.
    pub keys: bool,
}

/// `lease-expiry` parameters.
#[derive(Clone, Debug)]
pub struct Expiry {
    /// Leases, each with one key.
    pub leases: usize,
    /// Their TTL, seconds: more than the grants take, as the deadlines are set by
    /// one keep-alive burst after the last grant.
    pub ttl: i64,
    /// Closed-loop put clients.
    pub put_clients: usize,
    /// Seconds of the idle window.
    pub idle_secs: f64,
    /// Give up waiting for the expiry this long after the first deadline.
    pub max_wait_secs: f64,
}

/// `lease-memory` parameters.
#[derive(Clone, Debug)]
pub struct Memory {
    /// Leases, each with one key.
    pub leases: usize,
    /// Their TTL (long: none expires during the run).
    pub ttl: i64,
}

fn start(c: &Common, kind: &str) -> RunRecord {
    let mut rec = RunRecord::new(c, kind);
    rec.param("connections", c.connections);
    rec
}

/// What one task of [`for_each_concurrently`] did: `(i, result)` pairs, or an error.
type Indexed<T> = Result<Vec<(usize, T)>, String>;

/// Runs `job(client, i)` for every `i` in `0..n` with `clients` concurrent tasks
/// (task `t` on `chans[t % len]`), a progress bar counting `what`; the results in
/// order of `i`, or the first error.
async fn for_each_concurrently<T, F, Fut>(
    c: &Common,
    chans: &[Channel],
    n: usize,
    clients: usize,
    what: &str,
    deadline: Instant,
    job: F,
) -> Result<Vec<T>, String>
where
    T: Send + Default + Clone + 'static,
    F: Fn(Channel, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<T, String>> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let job = Arc::new(job);
    let mut tasks: Vec<JoinHandle<Indexed<T>>> = Vec::new();
    for t in 0..clients.min(n).max(1) {
        let ch = chans[t % chans.len()].clone();
        let (next, done, job) = (Arc::clone(&next), Arc::clone(&done), Arc::clone(&job));
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= n {
                    return Ok(out);
                }
                if Instant::now() >= deadline {
                    return Err(format!("timed out after {i} of {n}"));
                }
                out.push((i, job(ch.clone(), i).await?));
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let b = bar(c, n as u64, what);
    while !tasks.iter().all(|t| t.is_finished()) {
        b.set_position(done.load(Ordering::Relaxed));
        sleep(20).await;
    }
    b.finish_and_clear();
    let mut results = vec![T::default(); n];
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok(Ok(v)) => {
                for (i, r) in v {
                    results[i] = r;
                }
            }
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(format!("task failed: {e}"));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(results),
    }
}

/// Keys put with their lease per transaction (etcd's and Argus's limit is 128 operations).
const KEYS_PER_TXN: usize = 100;

/// Grants `n` leases of `ttl` seconds with [`GRANT_CLIENTS`] clients over `chans`;
/// then, with `key_prefix`, puts key `{key_prefix}{i}` with lease `i`, [`KEYS_PER_TXN`]
/// keys per transaction. Returns the IDs (index `i` is lease `i`) and the seconds it
/// took.
async fn grant(
    c: &Common,
    chans: &[Channel],
    n: usize,
    ttl: i64,
    key_prefix: Option<&str>,
    deadline: Instant,
) -> Result<(Vec<i64>, f64), String> {
    let t0 = now_ns();
    let ids = for_each_concurrently(c, chans, n, GRANT_CLIENTS, "leases", deadline, move |ch, _| async move {
        let mut lease = LeaseClient::new(ch).max_decoding_message_size(MAX_MESSAGE);
        let r = lease
            .lease_grant(pb::LeaseGrantRequest { ttl, id: 0 })
            .await
            .map_err(|e| format!("lease grant: {e}"))?
            .into_inner();
        if !r.error.is_empty() || r.id == 0 || r.ttl != ttl {
            return Err(format!("lease grant of TTL {ttl} answered ID {} TTL {} error {:?}", r.id, r.ttl, r.error));
        }
        Ok(r.id)
    })
    .await?;
    if let Some(prefix) = key_prefix {
        let (ids, prefix, value_size) = (Arc::new(ids.clone()), prefix.to_string(), c.value_size);
        let txns = n.div_ceil(KEYS_PER_TXN);
        for_each_concurrently(c, chans, txns, 16, "keys (txns)", deadline, move |ch, t| {
            let ops: Vec<pb::RequestOp> = (t * KEYS_PER_TXN..((t + 1) * KEYS_PER_TXN).min(ids.len()))
                .map(|i| pb::RequestOp {
                    request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                        key: format!("{prefix}{i:07}").into_bytes(),
                        value: value_of(now_ns(), value_size),
                        lease: ids[i],
                        ..Default::default()
                    })),
                })
                .collect();
            async move {
                let mut kv = KvClient::new(ch).max_decoding_message_size(MAX_MESSAGE);
                let r = kv
                    .txn(pb::TxnRequest { success: ops, ..Default::default() })
                    .await
                    .map_err(|e| format!("txn of puts with leases: {e}"))?;
                if r.into_inner().succeeded {
                    Ok(())
                } else {
                    Err("a txn of puts with leases did not succeed".to_string())
                }
            }
        })
        .await?;
    }
    Ok((ids, now_ns().saturating_sub(t0) as f64 / 1e9))
}

fn keep_alive_request(id: i64) -> pb::LeaseKeepAliveRequest {
    pb::LeaseKeepAliveRequest { id }
}

/// Opens a LeaseKeepAlive stream on `ch` with `first` already queued.
async fn open_keep_alive(
    ch: &Channel,
    first: impl IntoIterator<Item = i64>,
) -> Result<(mpsc::UnboundedSender<pb::LeaseKeepAliveRequest>, tonic::Streaming<pb::LeaseKeepAliveResponse>), String> {
    let (tx, rx) = mpsc::unbounded();
    for id in first {
        tx.unbounded_send(keep_alive_request(id)).map_err(|e| e.to_string())?;
    }
    // etcd sends the response headers with its first answer, so the requests are
    // queued before the call waits for them.
    let mut client = LeaseClient::new(ch.clone()).max_decoding_message_size(MAX_MESSAGE);
    let resp = client.lease_keep_alive(rx).await.map_err(|e| format!("lease keep-alive: {e}"))?;
    Ok((tx, resp.into_inner()))
}

/// What one keep-alive stream did.
struct Renewed {
    /// Answers received inside the measured window.
    in_window: u64,
    /// Their latency.
    latency: Histogram<u64>,
    /// Answers received in all.
    answered: u64,
    /// Answers whose ID was not the request's (out of order) or whose TTL was not
    /// the granted one (not found, expired).
    wrong: u64,
    /// The first wrong answer, or the stream's error.
    problem: Option<String>,
}

/// One stream's renewals: `ids` round-robin, `window` outstanding, a new batch of
/// requests whenever an eighth of the window has been answered, until `end_ns`;
/// answers inside `[from_ns, end_ns)` are counted.
async fn renew_stream(
    ch: Channel,
    ids: Vec<i64>,
    ttl: i64,
    window: usize,
    from_ns: u64,
    end_ns: u64,
    deadline: Instant,
) -> Renewed {
    let mut out = Renewed { in_window: 0, latency: histogram(), answered: 0, wrong: 0, problem: None };
    if ids.is_empty() {
        return out;
    }
    let window = window.max(1);
    let batch = (window / 8).max(1);
    let mut next = 0usize;
    let mut inflight: VecDeque<(i64, u64)> = VecDeque::with_capacity(window + batch);
    let mut take = |inflight: &mut VecDeque<(i64, u64)>| {
        let id = ids[next % ids.len()];
        next += 1;
        inflight.push_back((id, now_ns()));
        id
    };
    let first: Vec<i64> = (0..window).map(|_| take(&mut inflight)).collect();
    let (tx, mut rx) = match open_keep_alive(&ch, first).await {
        Ok(s) => s,
        Err(e) => {
            out.problem = Some(e);
            return out;
        }
    };
    let mut owed = 0usize;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = match tokio::time::timeout(left, rx.message()).await {
            Ok(Ok(Some(m))) => m,
            Ok(Ok(None)) => {
                out.problem = Some("keep-alive stream ended early".into());
                break;
            }
            Ok(Err(e)) => {
                out.problem = Some(format!("keep-alive stream: {e}"));
                break;
            }
            Err(_) => {
                out.problem = Some(format!("timed out with {} keep-alives unanswered", inflight.len()));
                break;
            }
        };
        let now = now_ns();
        out.answered += 1;
        let Some((id, sent)) = inflight.pop_front() else {
            out.problem = Some("an answer without a request".into());
            break;
        };
        if msg.id != id || msg.ttl != ttl {
            out.wrong += 1;
            out.problem.get_or_insert_with(|| {
                format!("keep-alive of lease {id} answered ID {} TTL {} (granted TTL {ttl})", msg.id, msg.ttl)
            });
        }
        if now >= from_ns && now < end_ns {
            out.in_window += 1;
            record(&mut out.latency, now.saturating_sub(sent));
        }
        if now < end_ns {
            owed += 1;
            if owed >= batch {
                for _ in 0..owed {
                    let id = take(&mut inflight);
                    if tx.unbounded_send(keep_alive_request(id)).is_err() {
                        out.problem.get_or_insert_with(|| "keep-alive request stream closed".into());
                    }
                }
                owed = 0;
            }
        } else if inflight.is_empty() {
            break;
        }
    }
    out
}

/// Sleeps until [`now_ns`] reaches `t`.
async fn sleep_until_ns(t: u64) {
    let now = now_ns();
    if t > now {
        tokio::time::sleep(Duration::from_nanos(t - now)).await;
    }
}

/// `lease-keepalive`: grant the leases, then renew them over one stream per
/// connection for `warmup_secs + secs`, counting the last `secs`.
pub async fn keep_alive(c: &Common, p: &KeepAlive) -> RunRecord {
    let mut rec = start(c, "lease-keepalive");
    rec.param("leases", p.leases);
    rec.param("ttl", p.ttl);
    rec.param("streams", c.connections);
    rec.param("window", p.window);
    rec.param("secs", p.secs);
    rec.param("warmup_secs", p.warmup_secs);
    rec.param("keys", p.keys);
    let deadline = Instant::now() + c.timeout;
    let mut f = LeaseFigures { leases: p.leases as u64, ttl_s: p.ttl, ..Default::default() };
    match wait_ready(c.endpoint, Duration::from_secs(30)).await {
        Ok(s) => rec.server_version = s.version,
        Err(e) => return rec.fail(e),
    }
    let chans = match connect(c.endpoint, c.connections).await {
        Ok(ch) => ch,
        Err(e) => return rec.fail(e),
    };
    let key_prefix = p.keys.then(|| format!("{}l/", namespace(c)));
    let ids = match grant(c, &chans, p.leases, p.ttl, key_prefix.as_deref(), deadline).await {
        Ok((ids, secs)) => {
            f.grant_s = Some(secs);
            f.grants_per_s = (secs > 0.0).then(|| p.leases as f64 / secs);
            ids
        }
        Err(e) => return rec.fail(e),
    };
    // Stream s renews leases s, s + C, s + 2C, ...
    let n = chans.len();
    sleep(300).await;
    f.rss_before = c.server_pid.and_then(rss_bytes);
    let from_ns = now_ns() + (p.warmup_secs * 1e9) as u64;
    let end_ns = from_ns + (p.secs * 1e9) as u64;
    let tasks: Vec<JoinHandle<Renewed>> = chans
        .iter()
        .enumerate()
        .map(|(s, ch)| {
            let mine: Vec<i64> = ids.iter().skip(s).step_by(n).copied().collect();
            tokio::spawn(renew_stream(ch.clone(), mine, p.ttl, p.window, from_ns, end_ns, deadline))
        })
        .collect();
    sleep_until_ns(from_ns).await;
    let cpu0 = Cpu::sample(c.server_pid);
    sleep_until_ns(end_ns).await;
    let cpu1 = Cpu::sample(c.server_pid);
    f.rss_after = c.server_pid.and_then(rss_bytes);
    let mut latency = histogram();
    let (mut answered, mut wrong) = (0u64, 0u64);
    for t in tasks {
        match t.await {
            Ok(r) => {
                f.renewals += r.in_window;
                answered += r.answered;
                wrong += r.wrong;
                let _ = latency.add(&r.latency);
                if let Some(e) = r.problem {
                    rec.errors.push(e);
                }
            }
            Err(e) => rec.errors.push(format!("keep-alive task failed: {e}")),
        }
    }
    rec.wall_s = p.secs;
    f.renewals_per_s = (p.secs > 0.0).then(|| f.renewals as f64 / p.secs);
    f.renew_latency = Some(Latency::of(&latency));
    rec.set_cpu(cpu0.until(&cpu1));
    let mut errors = std::mem::take(&mut rec.errors);
    let streams_ok = errors.is_empty();
    f.check(&mut errors, streams_ok, || "a keep-alive stream failed".into());
    f.check(&mut errors, wrong == 0, || {
        format!("{wrong} of {answered} keep-alives answered with another ID or TTL than the lease's")
    });
    f.check(&mut errors, f.renewals > 0, || "no keep-alive answered in the measured window".into());
    // The leases are all still there, with their TTL.
    if let Some(ch) = chans.first() {
        let mut lease = LeaseClient::new(ch.clone()).max_decoding_message_size(MAX_MESSAGE);
        let listed = lease.lease_leases(pb::LeaseLeasesRequest {}).await.map(|r| r.into_inner().leases.len());
        f.check(&mut errors, matches!(listed, Ok(l) if l == p.leases), || {
            format!("the server lists {listed:?} leases after the run, {} granted", p.leases)
        });
    }
    finish(rec, f, errors)
}

fn finish(mut rec: RunRecord, f: LeaseFigures, errors: Vec<String>) -> RunRecord {
    if !errors.is_empty() || f.checks_ok != f.checks {
        rec.ok = false;
    }
    rec.errors = errors;
    rec.lease = Some(f);
    rec.loadavg_end = loadavg();
    rec
}

/// One put client's `(sent, acked)` times ([`now_ns`]) and the error that stopped it.
type PutSamples = (Vec<(u64, u64)>, Option<String>);

/// The closed-loop put clients of `lease-expiry`.
struct PutLoad {
    phase: Arc<AtomicU8>,
    tasks: Vec<JoinHandle<PutSamples>>,
}

const PUT: u8 = 0;
const PAUSE: u8 = 1;
const STOP: u8 = 2;

impl PutLoad {
    /// `clients` clients on `ch`, client `i` putting keys `i`, `i + clients`, ... of
    /// `keys` in turn, each put recorded as `(sent, acked)` ([`now_ns`]).
    fn start(ch: &Channel, clients: usize, keys: Arc<Vec<Vec<u8>>>, value_size: usize, deadline: Instant) -> PutLoad {
        let phase = Arc::new(AtomicU8::new(PUT));
        let tasks = (0..clients.max(1))
            .map(|i| {
                let (phase, keys) = (Arc::clone(&phase), Arc::clone(&keys));
                let mut kv = KvClient::new(ch.clone()).max_decoding_message_size(MAX_MESSAGE);
                tokio::spawn(async move {
                    let mut samples = Vec::new();
                    let mut k = i;
                    loop {
                        match phase.load(Ordering::Acquire) {
                            STOP => return (samples, None),
                            PAUSE => {
                                sleep(2).await;
                                continue;
                            }
                            _ => {}
                        }
                        if Instant::now() >= deadline {
                            return (samples, Some("timed out".to_string()));
                        }
                        let sent = now_ns();
                        let req = pb::PutRequest {
                            key: keys[k % keys.len()].clone(),
                            value: value_of(sent, value_size),
                            ..Default::default()
                        };
                        if let Err(e) = kv.put(req).await {
                            return (samples, Some(format!("put: {e}")));
                        }
                        samples.push((sent, now_ns()));
                        k += clients;
                    }
                })
            })
            .collect();
        PutLoad { phase, tasks }
    }

    fn set(&self, phase: u8) {
        self.phase.store(phase, Ordering::Release);
    }

    /// Stops the clients; every put, sorted by send time, and the first error.
    async fn stop(self) -> (Vec<(u64, u64)>, Option<String>) {
        self.set(STOP);
        let mut all = Vec::new();
        let mut err = None;
        for t in self.tasks {
            match t.await {
                Ok((s, e)) => {
                    all.extend(s);
                    if err.is_none() {
                        err = e;
                    }
                }
                Err(e) => {
                    err.get_or_insert(format!("put task failed: {e}"));
                }
            }
        }
        all.sort_unstable();
        (all, err)
    }
}

/// The put-ack latency and puts per second of the puts sent in `[from, to)`.
fn window(puts: &[(u64, u64)], from: u64, to: u64) -> (Option<Latency>, Option<f64>, u64) {
    let mut h = histogram();
    let mut n = 0u64;
    for &(sent, acked) in puts.iter().filter(|(s, _)| *s >= from && *s < to) {
        record(&mut h, acked.saturating_sub(sent));
        n += 1;
    }
    if n == 0 || to <= from {
        return (None, None, 0);
    }
    (Some(Latency::of(&h)), Some(n as f64 / ((to - from) as f64 / 1e9)), n)
}

/// Keys under `prefix` (count only).
async fn count_keys(kv: &mut KvClient<Channel>, prefix: &[u8]) -> Result<u64, String> {
    let req = pb::RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        count_only: true,
        ..Default::default()
    };
    let r = kv.range(req).await.map_err(|e| format!("range count: {e}"))?;
    Ok(r.into_inner().count.max(0) as u64)
}

/// Leases the server lists.
async fn count_leases(ch: &Channel) -> Result<u64, String> {
    let mut lease = LeaseClient::new(ch.clone()).max_decoding_message_size(MAX_MESSAGE);
    let r = lease.lease_leases(pb::LeaseLeasesRequest {}).await.map_err(|e| format!("lease leases: {e}"))?;
    Ok(r.into_inner().leases.len() as u64)
}

/// One keep-alive for each of `ids` over `streams` streams on `ch`, all queued at
/// once. Returns the time the first was queued and the last answered ([`now_ns`]),
/// or the first answer that was not the lease's TTL.
async fn renew_all(
    ch: &Channel,
    ids: &[i64],
    ttl: i64,
    streams: usize,
    deadline: Instant,
) -> Result<(u64, u64), String> {
    let t0 = now_ns();
    let mut tasks = Vec::new();
    for s in 0..streams.max(1) {
        let mine: Vec<i64> = ids.iter().skip(s).step_by(streams.max(1)).copied().collect();
        let ch = ch.clone();
        tasks.push(tokio::spawn(async move {
            let expect = mine.len();
            let (tx, mut rx) = open_keep_alive(&ch, mine.iter().copied()).await?;
            for (i, &id) in mine.iter().enumerate() {
                let left = deadline.saturating_duration_since(Instant::now());
                let m = match tokio::time::timeout(left, rx.message()).await {
                    Ok(Ok(Some(m))) => m,
                    Ok(Ok(None)) => return Err(format!("keep-alive stream ended after {i} of {expect}")),
                    Ok(Err(e)) => return Err(format!("keep-alive stream: {e}")),
                    Err(_) => return Err(format!("timed out after {i} of {expect} keep-alives")),
                };
                if m.id != id || m.ttl != ttl {
                    return Err(format!(
                        "keep-alive of lease {id} answered ID {} TTL {} (granted TTL {ttl}): did the lease expire \
                         before the burst? (a TTL longer than the grants take is needed)",
                        m.id, m.ttl
                    ));
                }
            }
            drop(tx);
            Ok::<u64, String>(now_ns())
        }));
    }
    let mut last = t0;
    for t in tasks {
        last = last.max(t.await.map_err(|e| format!("keep-alive task failed: {e}"))??);
    }
    Ok((t0, last))
}

/// A watcher of the leases' keys: the receive time ([`now_ns`]) of each DELETE.
struct DeleteWatch {
    times: Arc<std::sync::Mutex<Vec<u64>>>,
    task: JoinHandle<Option<String>>,
}

impl DeleteWatch {
    /// Watches the keys under `prefix` from the next revision on `ch`, until
    /// `expect` deletions have come; returns once the watcher is created.
    async fn open(ch: &Channel, prefix: &[u8], expect: usize) -> Result<DeleteWatch, String> {
        let create = create_request(prefix.to_vec(), prefix_end(prefix), 0, 0);
        // The request stream stays open: etcd ends the watch stream when it closes.
        let requests = futures::stream::iter([create]).chain(futures::stream::pending());
        let mut stream = open_watch(ch, requests).await.map_err(|e| format!("watch of the leases' keys: {e}"))?;
        let first = tokio::time::timeout(Duration::from_secs(30), stream.message()).await;
        let created = match &first {
            Ok(Ok(Some(b))) => pb::WatchResponse::decode(b.as_ref()).map(|r| r.created && !r.canceled).unwrap_or(false),
            _ => false,
        };
        if !created {
            return Err(format!("watch of the leases' keys not created: {first:?}"));
        }
        let times = Arc::new(std::sync::Mutex::new(Vec::with_capacity(expect)));
        let out = Arc::clone(&times);
        let task = tokio::spawn(async move {
            let mut seen = 0usize;
            while seen < expect {
                let bytes = match stream.message().await {
                    Ok(Some(b)) => b,
                    Ok(None) => return Some("the watch of the leases' keys ended".to_string()),
                    Err(e) => return Some(format!("watch of the leases' keys: {e}")),
                };
                let now = now_ns();
                let r = match pb::WatchResponse::decode(bytes.as_ref()) {
                    Ok(r) => r,
                    Err(e) => return Some(format!("undecodable watch response: {e}")),
                };
                if r.canceled {
                    return Some(format!("the watch of the leases' keys was canceled: {}", r.cancel_reason));
                }
                let deletes = r.events.iter().filter(|e| e.r#type == 1).count();
                if deletes < r.events.len() {
                    return Some("a key of a lease was written during the expiry".to_string());
                }
                seen += deletes;
                let mut t = out.lock().unwrap_or_else(|p| p.into_inner());
                t.extend(std::iter::repeat_n(now, deletes));
            }
            (seen > expect).then(|| format!("{seen} deletions of {expect} keys"))
        });
        Ok(DeleteWatch { times, task })
    }

    /// Waits until every deletion has come, or until `give_up` ([`now_ns`]) or
    /// `deadline`; returns the deletions' receive times and what went wrong.
    async fn wait(self, give_up: u64, deadline: Instant) -> (Vec<u64>, Option<String>) {
        let mut error = None;
        loop {
            if self.task.is_finished() {
                match self.task.await {
                    Ok(e) => error = e,
                    Err(e) => error = Some(format!("watch task failed: {e}")),
                }
                break;
            }
            if now_ns() >= give_up || Instant::now() >= deadline {
                self.task.abort();
                break;
            }
            sleep(2).await;
        }
        let times = std::mem::take(&mut *self.times.lock().unwrap_or_else(|p| p.into_inner()));
        (times, error)
    }
}

/// `lease-expiry`: see the module note.
pub async fn expiry(c: &Common, p: &Expiry) -> RunRecord {
    let mut rec = start(c, "lease-expiry");
    rec.param("leases", p.leases);
    rec.param("ttl", p.ttl);
    rec.param("put_clients", p.put_clients);
    rec.param("idle_secs", p.idle_secs);
    rec.param("max_wait_secs", p.max_wait_secs);
    rec.param("value_size", c.value_size);
    let deadline = Instant::now() + c.timeout;
    let mut f = LeaseFigures { leases: p.leases as u64, ttl_s: p.ttl, ..Default::default() };
    match wait_ready(c.endpoint, Duration::from_secs(30)).await {
        Ok(s) => rec.server_version = s.version,
        Err(e) => return rec.fail(e),
    }
    // The puts on connection(s) of their own; grants, keep-alives and counts on another.
    let chans = match connect(c.endpoint, c.connections + 1).await {
        Ok(ch) => ch,
        Err(e) => return rec.fail(e),
    };
    let (control, put_chans) = chans.split_last().expect("at least two connections");
    let ns = namespace(c);
    let put_keys: Arc<Vec<Vec<u8>>> = Arc::new((0..1000).map(|i| format!("{ns}p{i:04}").into_bytes()).collect());
    let lease_prefix = format!("{ns}l/");
    let mut kv = KvClient::new(control.clone()).max_decoding_message_size(MAX_MESSAGE);
    let warm =
        pb::PutRequest { key: put_keys[0].clone(), value: value_of(now_ns(), c.value_size), ..Default::default() };
    if let Err(e) = kv.put(warm).await {
        return rec.fail(format!("warm-up put: {e}"));
    }
    sleep(300).await;

    // The idle window: puts, no lease.
    let load = PutLoad::start(&put_chans[0], p.put_clients, Arc::clone(&put_keys), c.value_size, deadline);
    sleep(500).await;
    let idle0 = now_ns();
    tokio::time::sleep(Duration::from_secs_f64(p.idle_secs)).await;
    let idle1 = now_ns();
    load.set(PAUSE);
    sleep(50).await;

    // The leases, each with one key; then one keep-alive each, so every deadline is
    // within the burst's span.
    let ids = match grant(c, std::slice::from_ref(control), p.leases, p.ttl, Some(&lease_prefix), deadline).await {
        Ok((ids, secs)) => {
            f.grant_s = Some(secs);
            f.grants_per_s = (secs > 0.0).then(|| p.leases as f64 / secs);
            ids
        }
        Err(e) => {
            let _ = load.stop().await;
            return rec.fail(e);
        }
    };
    let mut errors = Vec::new();
    let lease_key_prefix = lease_prefix.as_bytes();
    let before = count_keys(&mut kv, lease_key_prefix).await;
    f.check(&mut errors, matches!(before, Ok(n) if n == p.leases as u64), || {
        format!("{before:?} keys with leases after the grants, {} put", p.leases)
    });
    // The expiry is followed by a watcher of the leases' keys: the server pushes the
    // deletions. (Counting the keys every 100 ms instead scanned 20,000 keys on the
    // server each time: Argus's puts stalled for ~10 ms at every count.)
    let deletes = match DeleteWatch::open(control, lease_key_prefix, p.leases).await {
        Ok(w) => w,
        Err(e) => {
            let _ = load.stop().await;
            return rec.fail(e);
        }
    };
    let (burst0, burst1) = match renew_all(control, &ids, p.ttl, 4, deadline).await {
        Ok(t) => t,
        Err(e) => {
            let _ = load.stop().await;
            return rec.fail(e);
        }
    };
    f.renew_burst_s = Some(burst1.saturating_sub(burst0) as f64 / 1e9);
    load.set(PUT);

    // No deadline is before the first keep-alive was queued plus the TTL.
    let first_deadline = burst0 + p.ttl as u64 * 1_000_000_000;
    sleep_until_ns(first_deadline).await;
    let cpu0 = Cpu::sample(c.server_pid);
    let give_up = first_deadline + (p.max_wait_secs * 1e9) as u64;
    let (times, watch_error) = deletes.wait(give_up, deadline).await;
    let end = (times.len() >= p.leases).then(|| times.last().copied().unwrap_or(first_deadline));
    let since = |t: u64| t.saturating_sub(first_deadline) as f64 / 1e9;
    f.first_revoke_s = times.first().map(|&t| since(t));
    let step = (p.leases / 200).max(1);
    f.keys_over_time = std::iter::once([0.0, p.leases as f64])
        .chain(
            times
                .iter()
                .enumerate()
                .filter(|(i, _)| (i + 1) % step == 0 || i + 1 == times.len())
                .map(|(i, &t)| [since(t), (p.leases - (i + 1).min(p.leases)) as f64]),
        )
        .collect();
    let window_end = end.unwrap_or_else(now_ns);
    let cpu1 = Cpu::sample(c.server_pid);
    let (puts, put_error) = load.stop().await;
    if let Some(e) = watch_error {
        errors.push(e);
    }
    if let Some(e) = put_error {
        errors.push(e);
    }
    (f.idle_put_ack, f.idle_puts_per_s, _) = window(&puts, idle0, idle1);
    (f.live_put_ack, f.live_puts_per_s, _) = window(&puts, burst1, first_deadline);
    let (during, during_rate, n_during) = window(&puts, first_deadline, window_end);
    (f.expiry_put_ack, f.expiry_puts_per_s) = (during, during_rate);
    rec.puts = n_during;
    rec.wall_s = window_end.saturating_sub(first_deadline) as f64 / 1e9;
    f.expiry_s = end.map(|e| e.saturating_sub(first_deadline) as f64 / 1e9);
    f.revoked_per_s = f.expiry_s.filter(|s| *s > 0.0).map(|s| p.leases as f64 / s);
    rec.set_cpu(cpu0.until(&cpu1));
    rec.server_cpu_per_put_us = None;

    let keys_left = count_keys(&mut kv, lease_key_prefix).await;
    let leases_left = count_leases(control).await;
    f.keys_left = keys_left.as_ref().ok().copied();
    f.leases_left = leases_left.as_ref().ok().copied();
    f.check(&mut errors, matches!(keys_left, Ok(0)), || {
        format!(
            "expiry incomplete after {:.1} s: {keys_left:?} keys of the {} leases left",
            window_end.saturating_sub(first_deadline) as f64 / 1e9,
            p.leases
        )
    });
    f.check(&mut errors, matches!(leases_left, Ok(0)), || format!("{leases_left:?} leases still listed"));
    f.check(&mut errors, f.idle_put_ack.is_some() && f.expiry_put_ack.is_some(), || {
        "no put in the idle or the expiry window".into()
    });
    finish(rec, f, errors)
}

/// `lease-memory`: RSS before and after the leases, each with one key.
pub async fn memory(c: &Common, p: &Memory) -> RunRecord {
    let mut rec = start(c, "lease-memory");
    rec.param("leases", p.leases);
    rec.param("ttl", p.ttl);
    rec.param("value_size", c.value_size);
    let deadline = Instant::now() + c.timeout;
    let mut f = LeaseFigures { leases: p.leases as u64, ttl_s: p.ttl, ..Default::default() };
    match wait_ready(c.endpoint, Duration::from_secs(30)).await {
        Ok(s) => rec.server_version = s.version,
        Err(e) => return rec.fail(e),
    }
    let chans = match connect(c.endpoint, c.connections).await {
        Ok(ch) => ch,
        Err(e) => return rec.fail(e),
    };
    let ns = namespace(c);
    let prefix = format!("{ns}l/");
    let mut kv = KvClient::new(chans[0].clone()).max_decoding_message_size(MAX_MESSAGE);
    let warm =
        pb::PutRequest { key: format!("{ns}warm").into_bytes(), value: value_of(now_ns(), 8), ..Default::default() };
    if let Err(e) = kv.put(warm).await {
        return rec.fail(format!("warm-up put: {e}"));
    }
    sleep(300).await;
    f.rss_before = c.server_pid.and_then(rss_bytes);
    let cpu0 = Cpu::sample(c.server_pid);
    match grant(c, &chans, p.leases, p.ttl, Some(&prefix), deadline).await {
        Ok((_, secs)) => {
            f.grant_s = Some(secs);
            f.grants_per_s = (secs > 0.0).then(|| p.leases as f64 / secs);
            rec.wall_s = secs;
        }
        Err(e) => return rec.fail(e),
    }
    let cpu1 = Cpu::sample(c.server_pid);
    rec.set_cpu(cpu0.until(&cpu1));
    sleep(500).await;
    f.rss_after = c.server_pid.and_then(rss_bytes);
    if let (Some(a), Some(b), true) = (f.rss_before, f.rss_after, p.leases > 0) {
        f.rss_per_lease = Some((b as f64 - a as f64) / p.leases as f64);
    }
    let mut errors = Vec::new();
    let keys = count_keys(&mut kv, prefix.as_bytes()).await;
    f.check(&mut errors, matches!(keys, Ok(n) if n == p.leases as u64), || {
        format!("{keys:?} keys with leases, {} put", p.leases)
    });
    let leases = count_leases(&chans[0]).await;
    f.check(&mut errors, matches!(leases, Ok(n) if n == p.leases as u64), || {
        format!("the server lists {leases:?} leases, {} granted", p.leases)
    });
    finish(rec, f, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_take_the_puts_sent_inside() {
        // (sent, acked) in ns: 1 ms puts at 0..10 ms, one 50 ms put sent at 20 ms.
        let mut puts: Vec<(u64, u64)> = (0..10).map(|i| (i * 1_000_000, i * 1_000_000 + 1_000_000)).collect();
        puts.push((20_000_000, 70_000_000));
        let (lat, rate, n) = window(&puts, 0, 10_000_000);
        assert_eq!(n, 10);
        let lat = lat.unwrap();
        assert!((lat.p99_us - 1000.0).abs() < 2.0, "{lat:?}");
        assert!((rate.unwrap() - 1000.0).abs() < 1e-6);
        // The slow put was sent inside the second window: it counts there, however
        // late its ack came.
        let (lat, _, n) = window(&puts, 10_000_000, 30_000_000);
        assert_eq!(n, 1);
        assert!((lat.unwrap().max_us - 50_000.0).abs() < 50.0);
        assert_eq!(window(&puts, 30_000_000, 40_000_000).2, 0);
    }

    #[test]
    fn a_failed_check_fails_the_run() {
        let mut f = LeaseFigures::default();
        let mut errors = Vec::new();
        f.check(&mut errors, true, || unreachable!());
        f.check(&mut errors, false, || "keys left".into());
        assert_eq!((f.checks, f.checks_ok), (2, 1));
        let rec = finish(RunRecord { ok: true, ..Default::default() }, f, errors);
        assert!(!rec.ok);
        assert_eq!(rec.errors, vec!["keys left".to_string()]);
    }
}
