//! The follower: one watch over the cluster's whole key space, each revision
//! applied to the mirror's log as it arrives, resumed on another member from the
//! applied revision + 1 when the member fails; and the compactions: the cluster's
//! (found by a probe every [`COMPACTION_CHECK`]) and the mirror's own retention.
//!
//! Invariant: the log holds every revision of the cluster from its base on, each
//! whole and once. etcd sends whole revisions in one watch response, in order; the
//! follower applies a response's revisions in order and, after a break, asks for
//! exactly the next one. A revision already applied (it cannot come, but a member
//! that sends it again must not make a duplicate) is skipped; a gap is refused by
//! the store (`Error::UpstreamOrder`) and the watch starts again after the applied
//! revision.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use argus_engine::store::{Store, UpstreamEvent};
use tokio::sync::{mpsc, watch};

use super::bootstrap::{upstream_event, PROBE_KEY};
use super::upstream::{create_request, open_watch};
use super::{Mirror, Retain};
use crate::proto::etcdserverpb as pb;
use crate::proto::etcdserverpb::kv_client::KvClient;
use crate::proto::mvccpb;

/// How often the follower looks for a compaction of the cluster (the issue allows
/// 10 s to follow one; a probe costs etcd one one-key read).
pub const COMPACTION_CHECK: Duration = Duration::from_secs(3);

/// How often the follower asks for a progress notification (the cluster's
/// revision, for the lag figures).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// How long a probe watch that etcd did not cancel is left before the follower
/// cancels it.
const PROBE_LINGER: Duration = Duration::from_secs(2);

/// The watch id of the follower's watch on its stream.
const MAIN: i64 = 1;
/// The watch id of the compaction probe.
const PROBE: i64 = 2;

/// Why the follower stopped.
#[derive(Debug)]
pub enum FollowEnd {
    /// The mirror is stopping.
    Stopped,
    /// The cluster compacted past the applied revision: bootstrap again.
    Rebootstrap {
        /// The cluster's compaction revision.
        compact_revision: u64,
    },
    /// The mirror cannot go on (the log refuses writes, another cluster answers).
    Fatal(String),
}

/// Why one watch stream ended.
enum StreamEnd {
    Broken(String),
    End(FollowEnd),
}

/// Follows the cluster until the mirror stops or must bootstrap again.
pub(crate) async fn follow(
    m: Arc<Mirror>,
    store: Store,
    pool: tokio::runtime::Handle,
    mut stop: watch::Receiver<bool>,
) -> FollowEnd {
    let mut f = Follower { m, store, pool, samples: VecDeque::new(), compacting: None };
    let mut opened = 0u64;
    let mut backoff = Duration::from_millis(100);
    loop {
        if *stop.borrow() {
            return FollowEnd::Stopped;
        }
        let (idx, ch) = f.m.upstream.channel();
        *f.m.status.member.lock().expect("status lock") = f.m.upstream.member();
        if opened > 0 {
            f.m.status.resumes.fetch_add(1, Ordering::Relaxed);
        }
        opened += 1;
        let began = Instant::now();
        match f.stream(ch, &mut stop).await {
            StreamEnd::End(e) => {
                f.m.status.up.store(false, Ordering::Release);
                return e;
            }
            StreamEnd::Broken(why) => {
                f.m.status.up.store(false, Ordering::Release);
                tracing::warn!(member = %f.m.upstream.member(), reason = %why, applied = f.store.current_revision(),
                    "mirror: upstream watch broke; resuming on the next member");
                f.m.upstream.failed(idx);
                if began.elapsed() > Duration::from_secs(10) {
                    backoff = Duration::from_millis(100);
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

struct Follower {
    m: Arc<Mirror>,
    store: Store,
    pool: tokio::runtime::Handle,
    /// (when, applied revision) every compaction check, for `--retain <duration>`.
    samples: VecDeque<(Instant, u64)>,
    /// A local compaction running on the pool.
    compacting: Option<tokio::task::JoinHandle<()>>,
}

impl Follower {
    /// Runs one watch stream on `ch` from the applied revision + 1.
    async fn stream(&mut self, ch: tonic::transport::Channel, stop: &mut watch::Receiver<bool>) -> StreamEnd {
        let start = self.store.current_revision() + 1;
        let (tx, mut stream) = match open_watch(ch.clone(), create_request(MAIN, vec![0], vec![0], start, true)).await {
            Ok(opened) => opened,
            Err(s) => return StreamEnd::Broken(format!("{}: {}", s.code(), s.message())),
        };
        let mut progress = tokio::time::interval(PROGRESS_EVERY);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut check = tokio::time::interval(COMPACTION_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut compact_now = self.m.compact_now.subscribe();
        loop {
            tokio::select! {
                msg = stream.message() => {
                    let r = match msg {
                        Ok(Some(r)) => r,
                        Ok(None) => return StreamEnd::Broken("the member closed the watch stream".into()),
                        Err(s) => return StreamEnd::Broken(format!("{}: {}", s.code(), s.message())),
                    };
                    if let Some(end) = self.response(r, &tx).await {
                        return end;
                    }
                }
                _ = progress.tick() => {
                    let req = pb::WatchRequest {
                        request_union: Some(pb::watch_request::RequestUnion::ProgressRequest(pb::WatchProgressRequest {})),
                    };
                    let _ = tx.send(req).await;
                }
                _ = check.tick() => {
                    let probe = self.compaction_check(&ch).await;
                    if let Err(why) = probe {
                        return StreamEnd::End(FollowEnd::Fatal(why));
                    }
                    if let Ok(Some(from)) = probe {
                        let _ = tx.send(create_request(PROBE, PROBE_KEY.to_vec(), Vec::new(), from, false)).await;
                    }
                    self.retain();
                }
                _ = compact_now.changed() => {
                    let rev = *compact_now.borrow_and_update();
                    self.compact_to(rev);
                }
                _ = stop.changed() => return StreamEnd::End(FollowEnd::Stopped),
            }
        }
    }

    /// Handles one response of the stream.
    async fn response(&mut self, r: pb::WatchResponse, tx: &mpsc::Sender<pb::WatchRequest>) -> Option<StreamEnd> {
        let m = Arc::clone(&self.m);
        let status = &m.status;
        if let Some(h) = &r.header {
            let cluster = status.cluster_id.load(Ordering::Acquire);
            if cluster != 0 && h.cluster_id != 0 && h.cluster_id != cluster {
                return Some(StreamEnd::End(FollowEnd::Fatal(format!(
                    "the upstream member answers for etcd cluster {:x}, but this mirror follows cluster {cluster:x}",
                    h.cluster_id
                ))));
            }
        }
        status.saw_header(r.header.as_ref());
        if r.watch_id != MAIN {
            // Progress notifications (etcd 3.4 sends them with watch id -1) move
            // the cluster's revision; is the mirror still in step with it?
            status.applied(self.store.current_revision());
        }
        if r.watch_id == PROBE {
            if r.canceled && r.compact_revision > 0 {
                let k = r.compact_revision as u64;
                status.upstream_compact_revision.fetch_max(k, Ordering::AcqRel);
                tracing::debug!(compact_revision = k, "mirror: the cluster has compacted");
                if self.m.retain == Retain::Cluster {
                    self.compact_to(k);
                }
            } else if r.created && !r.canceled {
                // etcd answers `created` first and cancels a watch from a compacted
                // revision only when its sync loop reaches it (about 100 ms later):
                // a cancel sent now would win that race and hide the compaction.
                // The probe is sent only after a read found its start compacted, so
                // etcd cancels it; the cancel below only keeps a probe that somehow
                // was not from lingering.
                let cancel = pb::WatchRequest {
                    request_union: Some(pb::watch_request::RequestUnion::CancelRequest(pb::WatchCancelRequest {
                        watch_id: PROBE,
                    })),
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(PROBE_LINGER).await;
                    let _ = tx.send(cancel).await;
                });
            }
            return None;
        }
        if r.watch_id != MAIN {
            return None;
        }
        if r.canceled {
            if r.compact_revision > 0 {
                return Some(StreamEnd::End(FollowEnd::Rebootstrap { compact_revision: r.compact_revision as u64 }));
            }
            return Some(StreamEnd::Broken(format!("the member canceled the watch: {}", r.cancel_reason)));
        }
        if r.created {
            status.up.store(true, Ordering::Release);
            tracing::info!(member = %self.m.upstream.member(), from = self.store.current_revision() + 1,
                "mirror: following the cluster");
        }
        if !r.events.is_empty() {
            if let Err(end) = self.apply(r.events).await {
                return Some(end);
            }
        }
        let applied = self.store.current_revision();
        self.m.barrier.set_applied(applied);
        status.applied(applied);
        None
    }

    /// Applies the revisions of one response, in order, on the KV pool.
    async fn apply(&mut self, events: Vec<mvccpb::Event>) -> Result<(), StreamEnd> {
        let store = self.store.clone();
        let apply = move || -> Result<usize, argus_engine::Error> {
            // Whole revisions, in order: consecutive events of one mod revision.
            let mut revisions: Vec<(u64, Vec<UpstreamEvent<'_>>)> = Vec::new();
            for e in &events {
                let Some(ev) = upstream_event(e) else { continue };
                let rev = e.kv.as_ref().map_or(0, |kv| kv.mod_revision.max(0) as u64);
                match revisions.last_mut() {
                    Some((r, evs)) if *r == rev => evs.push(ev),
                    _ => revisions.push((rev, vec![ev])),
                }
            }
            // One wait for durability for the response, however many revisions.
            store.apply_upstream_all(revisions.iter().map(|(r, evs)| (*r, evs.as_slice())))
        };
        // Without fsync (a mirror's default) applying is memory work of a few
        // microseconds per event: done here, it saves the hand-off to the KV pool
        // and back on every event's path. With fsync it waits for the disk, which
        // must not hold an io thread.
        let done = if self.store.options().log.fsync == argus_engine::log::FsyncPolicy::Never {
            Ok(apply())
        } else {
            self.pool.spawn_blocking(apply).await
        };
        match done {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e @ argus_engine::Error::UpstreamOrder { .. })) => {
                Err(StreamEnd::Broken(format!("the cluster's revisions did not follow on: {e}")))
            }
            Ok(Err(e)) if self.store.log().is_poisoned() => {
                Err(StreamEnd::End(FollowEnd::Fatal(format!("the mirror's log refuses writes: {e}"))))
            }
            Ok(Err(e)) => Err(StreamEnd::Broken(format!("cannot apply the cluster's revision: {e}"))),
            Err(e) => Err(StreamEnd::End(FollowEnd::Fatal(format!("apply task failed: {e}")))),
        }
    }

    /// Whether the cluster compacted past what the mirror knows of: a serializable
    /// one-key read at that revision fails if it did. Returns the revision to start
    /// the probe watch from (it is canceled with the cluster's compaction revision).
    ///
    /// # Errors
    ///
    /// The cluster turned authentication on (see [`super::upstream::auth_refused`]).
    async fn compaction_check(&mut self, ch: &tonic::transport::Channel) -> Result<Option<u64>, String> {
        let known =
            self.m.status.upstream_compact_revision.load(Ordering::Acquire).max(self.store.compact_revision()).max(1);
        let req = pb::RangeRequest {
            key: PROBE_KEY.to_vec(),
            revision: known as i64,
            serializable: true,
            count_only: true,
            ..Default::default()
        };
        // The cluster's leader, for Status (one cheap call to the member).
        let mut mc = crate::proto::etcdserverpb::maintenance_client::MaintenanceClient::new(ch.clone());
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(2), mc.status(pb::StatusRequest {})).await {
            self.m.status.leader_id.store(s.get_ref().leader, Ordering::Release);
        }
        let mut kv = KvClient::new(ch.clone());
        match tokio::time::timeout(Duration::from_secs(2), kv.range(req)).await {
            Ok(Err(s)) if s.code() == tonic::Code::OutOfRange => Ok(Some(known)),
            Ok(Err(s)) if super::upstream::auth_refused(&s) => {
                Err(format!("{} ({}: {})", super::upstream::AUTH_REFUSED, s.code(), s.message()))
            }
            _ => Ok(None),
        }
    }

    /// Compacts the mirror's log to `rev` (on the KV pool, one at a time) once it
    /// has applied `rev`; later checks retry what is not possible yet.
    fn compact_to(&mut self, rev: u64) {
        if self.compacting.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let store = self.store.clone();
        if rev <= store.compact_revision() || rev > store.current_revision() {
            return;
        }
        let m = Arc::clone(&self.m);
        self.compacting = Some(self.pool.spawn_blocking(move || match store.compact(rev) {
            Ok(()) => {
                m.status.compactions_followed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(revision = rev, "mirror: compacted");
            }
            Err(e) => tracing::warn!(revision = rev, error = %e, "mirror: compaction failed"),
        }));
    }

    /// Applies the retention: the cluster's compaction (without `--retain`), or
    /// the mirror's own.
    fn retain(&mut self) {
        let applied = self.store.current_revision();
        match self.m.retain {
            Retain::Cluster => {
                let k = self.m.status.upstream_compact_revision.load(Ordering::Acquire);
                self.compact_to(k);
            }
            Retain::Revisions(n) => {
                let target = applied.saturating_sub(n);
                // Not every check: compaction rewrites the live keys, so let a
                // tenth of the retention pass between two.
                if target > self.store.compact_revision() + (n / 10).max(1) {
                    self.compact_to(target);
                }
            }
            Retain::For(d) => {
                let now = Instant::now();
                self.samples.push_back((now, applied));
                let mut target = None;
                while let Some(&(t, rev)) = self.samples.front() {
                    if now.duration_since(t) < d {
                        break;
                    }
                    target = Some(rev);
                    self.samples.pop_front();
                }
                if let Some(rev) = target {
                    self.compact_to(rev);
                }
            }
        }
    }
}
