//! Watchers over streams over connections, and what each of them received.
//!
//! Watcher `i` of `W` goes on stream `i % S`, stream `s` on connection `s % C`.
//! Each stream is read by one task that parses responses with [`super::wire`] and
//! keeps per watcher: created or not, the count of events, the last revision (every
//! event must be above it: in order, none twice) and the fingerprint of the
//! (revision, key) pairs received ([`super::event_fp`]), which the scenario compares
//! with what was written. Event latency (receive time minus the send time in the
//! value) is recorded per event. The responses of a small sample of watchers are
//! kept whole for the engine's guarantee checker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::Channel;
use bytes::Bytes;
use futures::channel::mpsc;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use tokio::task::JoinHandle;

use super::client::{create_request, open_watch, sent_ns_of};
use super::stats::{histogram, record};
use super::{event_fp, key_hash, now_ns, wire};

/// What one watcher watches and how many events it must get.
#[derive(Clone, Debug)]
pub struct WatcherSpec {
    /// Key or range start.
    pub key: Vec<u8>,
    /// Range end (empty: the key alone).
    pub range_end: Vec<u8>,
    /// 0: from the next revision.
    pub start_revision: i64,
    /// Events it must receive to be done.
    pub expected: u64,
}

/// Counters shared by the stream tasks and the waiting scenario.
pub struct Shared {
    /// Events received, all watchers.
    pub events: AtomicU64,
    /// Watchers whose `created` response arrived.
    pub created: AtomicU64,
    /// Creates the server refused (`created` and `canceled`, watch id -1).
    pub refused: AtomicU64,
    /// Watchers that received all their events (or were canceled).
    pub done: AtomicU64,
    /// Receive time ([`now_ns`]) of the latest event.
    pub last_event_ns: AtomicU64,
    /// Streams that failed or ended early.
    pub broken: AtomicU64,
    /// Events received, per watcher (global index).
    pub counts: Vec<AtomicU64>,
    /// Events each watcher must receive; lowered when the writes stop early.
    pub expected: Vec<AtomicU64>,
}

impl Shared {
    /// Whether every watcher has received its expected events.
    pub fn all_done(&self) -> bool {
        self.counts.iter().zip(&self.expected).all(|(c, e)| c.load(Ordering::Relaxed) >= e.load(Ordering::Relaxed))
    }
}

/// What one watcher received.
#[derive(Clone, Debug, Default)]
pub struct WatcherOut {
    /// Its `created` response arrived.
    pub created: bool,
    /// Header revision of the `created` response.
    pub created_rev: i64,
    /// Events received.
    pub count: u64,
    /// Revision of the last event.
    pub last_rev: i64,
    /// Sum of [`event_fp`] over its events.
    pub fp: u64,
    /// The first thing that went wrong.
    pub problem: Option<String>,
    /// Whether it got all its expected events.
    pub done: bool,
    /// When it got its last expected event ([`now_ns`]).
    pub done_ns: u64,
}

struct StreamOut {
    members: Vec<usize>,
    watchers: Vec<WatcherOut>,
    latency: Histogram<u64>,
    sampled: Vec<(usize, Vec<Bytes>)>,
    errors: Vec<String>,
}

/// Everything the watchers received, once the set is closed.
pub struct Collected {
    /// Per watcher, by global index.
    pub watchers: Vec<WatcherOut>,
    /// Event latency, all watchers.
    pub latency: Histogram<u64>,
    /// Whole responses of the sampled watchers, by global index.
    pub sampled: HashMap<usize, Vec<Bytes>>,
    /// Stream errors and protocol surprises.
    pub errors: Vec<String>,
    /// Events each watcher had to receive.
    pub expected: Vec<u64>,
}

/// Open watchers.
pub struct WatchSet {
    shared: Arc<Shared>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<JoinHandle<StreamOut>>,
    n: usize,
    /// When the first create request was queued ([`now_ns`]).
    pub create_started_ns: u64,
}

fn note(w: &mut WatcherOut, problem: impl FnOnce() -> String) {
    if w.problem.is_none() {
        w.problem = Some(problem());
    }
}

impl WatchSet {
    /// Opens `streams` Watch streams over `channels` and creates a watcher per spec
    /// on them; returns at once (see [`WatchSet::wait`]). `sample[i]` keeps watcher
    /// `i`'s responses whole; `record_latency` records each event's latency.
    pub fn open(
        channels: &[Channel],
        specs: &Arc<Vec<WatcherSpec>>,
        streams: usize,
        sample: &[bool],
        record_latency: bool,
    ) -> WatchSet {
        let shared = Arc::new(Shared {
            events: AtomicU64::new(0),
            created: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            done: AtomicU64::new(0),
            last_event_ns: AtomicU64::new(0),
            broken: AtomicU64::new(0),
            counts: specs.iter().map(|_| AtomicU64::new(0)).collect(),
            expected: specs.iter().map(|s| AtomicU64::new(s.expected)).collect(),
        });
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let streams = streams.clamp(1, specs.len().max(1));
        let create_started_ns = now_ns();
        let mut tasks = Vec::with_capacity(streams);
        let streams = if specs.is_empty() { 0 } else { streams };
        for s in 0..streams {
            let members: Vec<usize> = (s..specs.len()).step_by(streams).collect();
            let (tx, rx) = mpsc::unbounded();
            for (local, &g) in members.iter().enumerate() {
                let spec = &specs[g];
                let req =
                    create_request(spec.key.clone(), spec.range_end.clone(), spec.start_revision, local as i64 + 1);
                let _ = tx.unbounded_send(req);
            }
            let ch = channels[s % channels.len().max(1)].clone();
            let (shared, mut stop_rx) = (Arc::clone(&shared), stop_rx.clone());
            let sampled: Vec<bool> = members.iter().map(|&g| sample.get(g).copied().unwrap_or(false)).collect();
            tasks.push(tokio::spawn(async move {
                let n = members.len();
                let mut out = StreamOut {
                    watchers: vec![WatcherOut::default(); n],
                    latency: histogram(),
                    sampled: members.iter().zip(&sampled).filter(|(_, s)| **s).map(|(&g, _)| (g, Vec::new())).collect(),
                    errors: Vec::new(),
                    members,
                };
                let slot_of: HashMap<usize, usize> =
                    out.sampled.iter().enumerate().map(|(slot, (g, _))| (*g, slot)).collect();
                let opened = tokio::select! {
                    biased;
                    _ = stop_rx.changed() => return out,
                    s = open_watch(&ch, rx) => s,
                };
                let mut stream = match opened {
                    Ok(s) => s,
                    Err(e) => {
                        out.errors.push(format!("open watch stream: {e}"));
                        shared.broken.fetch_add(1, Ordering::Relaxed);
                        return out;
                    }
                };
                let _keep_requests_open = tx;
                let mut scratch: Vec<(i64, u64, Option<u64>)> = Vec::new();
                let mut malformed = 0u64;
                let mut foreign = 0u64;
                loop {
                    let msg = tokio::select! {
                        biased;
                        _ = stop_rx.changed() => break,
                        m = stream.message() => m,
                    };
                    let msg = match msg {
                        Ok(Some(m)) => m,
                        Ok(None) => {
                            out.errors.push("watch stream ended by the server".into());
                            shared.broken.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Err(e) => {
                            out.errors.push(format!("watch stream failed: {e}"));
                            shared.broken.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    };
                    scratch.clear();
                    let head = match wire::parse(&msg, |e| {
                        scratch.push((e.mod_revision, key_hash(e.key), sent_ns_of(e.value)));
                    }) {
                        Ok(h) => h,
                        Err(e) => {
                            malformed += 1;
                            if malformed == 1 {
                                out.errors.push(format!("malformed WatchResponse: {}", e.0));
                            }
                            continue;
                        }
                    };
                    let now = now_ns();
                    if head.watch_id == -1 {
                        if head.created && head.canceled {
                            shared.refused.fetch_add(1, Ordering::Relaxed);
                            out.errors.push("the server refused a watch create".into());
                        } else if head.events > 0 {
                            out.errors.push("events in a stream-wide (watch id -1) response".into());
                        }
                        continue;
                    }
                    let Some(i) = usize::try_from(head.watch_id - 1).ok().filter(|&i| i < n) else {
                        foreign += 1;
                        if foreign == 1 {
                            out.errors.push(format!("response for unknown watch id {}", head.watch_id));
                        }
                        continue;
                    };
                    if sampled[i] {
                        if let Some(&slot) = slot_of.get(&out.members[i]) {
                            out.sampled[slot].1.push(Bytes::copy_from_slice(&msg));
                        }
                    }
                    let g = out.members[i];
                    let expected = shared.expected[g].load(Ordering::Relaxed);
                    let w = &mut out.watchers[i];
                    if head.created {
                        if w.created {
                            note(w, || "a second created response".into());
                        } else {
                            w.created = true;
                            w.created_rev = head.revision;
                            shared.created.fetch_add(1, Ordering::Relaxed);
                        }
                    } else if !w.created {
                        note(w, || "a response before the created response".into());
                    }
                    for &(rev, kh, sent) in &scratch {
                        if rev <= w.last_rev {
                            let last = w.last_rev;
                            note(w, || format!("event at revision {rev} after one at {last}"));
                        }
                        w.last_rev = w.last_rev.max(rev);
                        w.count += 1;
                        w.fp = w.fp.wrapping_add(event_fp(rev, kh));
                        if record_latency {
                            if let Some(s) = sent {
                                record(&mut out.latency, now.saturating_sub(s));
                            }
                        }
                    }
                    if !scratch.is_empty() {
                        shared.counts[g].fetch_add(scratch.len() as u64, Ordering::Relaxed);
                        shared.events.fetch_add(scratch.len() as u64, Ordering::Relaxed);
                        shared.last_event_ns.fetch_max(now, Ordering::Relaxed);
                    }
                    if w.count > expected {
                        note(w, || format!("more events than written ({expected})"));
                    }
                    if head.canceled {
                        note(w, || format!("canceled by the server (compact revision {})", head.compact_revision));
                    }
                    if !w.done && w.created && (w.count >= expected || head.canceled) {
                        w.done = true;
                        w.done_ns = now;
                        shared.done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                out
            }));
        }
        WatchSet { shared, stop, tasks, n: specs.len(), create_started_ns }
    }

    /// The shared counters.
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Waits until `until` holds, a stream broke, or `deadline` passes; shows
    /// `progress` (of `bar`'s length) meanwhile. Returns whether `until` held.
    pub async fn wait(
        &self,
        until: impl Fn(&Shared) -> bool,
        progress: impl Fn(&Shared) -> u64,
        bar: &ProgressBar,
        deadline: Instant,
    ) -> bool {
        loop {
            bar.set_position(progress(&self.shared));
            if until(&self.shared) {
                return true;
            }
            if self.shared.broken.load(Ordering::Relaxed) > 0 || Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Watchers created or refused so far.
    pub fn settled(&self) -> u64 {
        self.shared.created.load(Ordering::Relaxed) + self.shared.refused.load(Ordering::Relaxed)
    }

    /// Waits `grace` for stray late responses, then closes every stream and
    /// gathers what each watcher received.
    pub async fn finish(self, grace: Duration) -> Collected {
        tokio::time::sleep(grace).await;
        let _ = self.stop.send(true);
        let mut c = Collected {
            watchers: vec![WatcherOut::default(); self.n],
            latency: histogram(),
            sampled: HashMap::new(),
            errors: Vec::new(),
            expected: self.shared.expected.iter().map(|e| e.load(Ordering::Relaxed)).collect(),
        };
        for t in self.tasks {
            match t.await {
                Ok(out) => {
                    for (g, w) in out.members.into_iter().zip(out.watchers) {
                        c.watchers[g] = w;
                    }
                    let _ = c.latency.add(&out.latency);
                    c.sampled.extend(out.sampled);
                    c.errors.extend(out.errors);
                }
                Err(e) => c.errors.push(format!("stream task failed: {e}")),
            }
        }
        c
    }
}
