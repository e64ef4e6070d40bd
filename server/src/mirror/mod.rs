//! `argus mirror`: a watch tier in front of an etcd cluster. etcd keeps consensus;
//! the mirror keeps the cluster's history in its own revision log, with the
//! cluster's revisions, and serves the watchers, the catch-ups and the reads from
//! it.
//!
//! The data flow:
//!
//! - **Bootstrap** ([`bootstrap`]): a new mirror learns the cluster's compaction
//!   revision `K` (a one-key watch from revision 1 is canceled with it), reads
//!   every live key at `K` (a paginated Range) and revision `K`'s own events (a
//!   watch from `K`), and installs them as a store compacted at `K`
//!   (`Store::install_base`), so its watchers can start from any revision etcd
//!   itself could serve. A cluster never compacted needs no Range: the follower's
//!   watch from revision 2 brings its whole history.
//! - **Follow** ([`follow`]): one watch over the whole key space from the applied
//!   revision + 1, each revision applied as it comes (`Store::apply_upstream`), on
//!   one member at a time; when the member fails the watch resumes on the next
//!   from the applied revision + 1. Every 5 s a serializable one-key Range at the
//!   mirror's compaction revision tells whether the cluster compacted past it, and
//!   a one-key watch from there says where to: without `--retain` the mirror
//!   compacts there too; with it, it keeps its own retention. If the cluster
//!   compacted past what the mirror has applied (it was away too long), the
//!   follower asks for a new bootstrap: the server stops (its watch streams end
//!   with `UNAVAILABLE`), the log is replaced, the server starts again on the same
//!   address, and clients that resume a watch from a revision in the lost range are
//!   canceled with `compact_revision`, as etcd cancels them: never a silent gap.
//! - **Serve**: Watch and Range from the log (`crate::kv`, `crate::watch`); a
//!   linearizable Range first waits for [`barrier::Barrier`]; writes, Compact and
//!   the Lease calls are forwarded ([`upstream::Upstream::call`]) and answered with
//!   the cluster's response, and the mirror's watchers see those writes through
//!   the follower's watch, in order.

pub mod barrier;
pub mod bootstrap;
pub mod follow;
pub(crate) mod forward;
pub mod state;
pub mod upstream;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argus_engine::store::{Store, StoreOptions};
use tonic::Status;

use crate::{Header, Running, ServerConfig};

/// How much history a mirror keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retain {
    /// As the cluster: compact when it compacts.
    Cluster,
    /// At least this long: compact only revisions applied longer ago.
    For(Duration),
    /// At least this many revisions behind the applied one.
    Revisions(u64),
}

impl std::str::FromStr for Retain {
    type Err = String;

    /// `24h`, `90m`, `30s` (a duration) or `100000` (a revision count).
    fn from_str(s: &str) -> Result<Retain, String> {
        if let Ok(n) = s.parse::<u64>() {
            return if n == 0 {
                Err("--retain 0: give a revision count above 0 or a duration".into())
            } else {
                Ok(Retain::Revisions(n))
            };
        }
        humantime::parse_duration(s)
            .map(Retain::For)
            .map_err(|e| format!("--retain {s}: neither a revision count nor a duration ({e})"))
    }
}

/// Settings of a mirror.
#[derive(Clone, Debug)]
pub struct MirrorConfig {
    /// The server's own settings (listener, data directory, limits).
    pub server: ServerConfig,
    /// The cluster's members (`http://host:port`).
    pub upstream: Vec<String>,
    /// History kept.
    pub retain: Retain,
    /// TLS to the cluster (CA, client certificate).
    pub upstream_tls: upstream::UpstreamTls,
}

/// What a mirror knows about itself and the cluster (`/metrics`, `Status`).
#[derive(Default)]
pub struct MirrorStatus {
    /// The member followed now.
    pub member: Mutex<String>,
    /// The cluster's id (response headers).
    pub cluster_id: AtomicU64,
    /// The followed member's id.
    pub member_id: AtomicU64,
    /// The cluster's leader, as the followed member last reported it.
    pub leader_id: AtomicU64,
    /// The cluster's raft term, as last seen.
    pub raft_term: AtomicU64,
    /// The newest revision the cluster reported (response headers, progress).
    pub upstream_revision: AtomicU64,
    /// The cluster's compaction revision, as last learned.
    pub upstream_compact_revision: AtomicU64,
    /// Whether the follower's watch is open now.
    pub up: AtomicBool,
    /// Times the follower's watch was opened again after it broke.
    pub resumes: AtomicU64,
    /// Bootstraps after the first (the cluster compacted past the mirror).
    pub rebootstraps: AtomicU64,
    /// Local compactions that followed the cluster's.
    pub compactions_followed: AtomicU64,
    /// When the mirror last had applied every revision the cluster reported.
    pub in_sync_at: Mutex<Option<Instant>>,
}

impl MirrorStatus {
    /// Seconds since the mirror last had every revision the cluster reported (0
    /// while it has).
    pub fn lag_seconds(&self, applied: u64) -> f64 {
        if applied >= self.upstream_revision.load(Ordering::Acquire) {
            return 0.0;
        }
        self.in_sync_at.lock().expect("status lock").map_or(0.0, |t| t.elapsed().as_secs_f64())
    }

    /// Records what a response header from the cluster says.
    pub(crate) fn saw_header(&self, h: Option<&crate::proto::etcdserverpb::ResponseHeader>) {
        if let Some(h) = h {
            self.upstream_revision.fetch_max(h.revision.max(0) as u64, Ordering::AcqRel);
            self.member_id.store(h.member_id, Ordering::Release);
            self.raft_term.store(h.raft_term, Ordering::Release);
        }
    }

    /// Records that revisions up to `applied` are applied.
    pub(crate) fn applied(&self, applied: u64) {
        if applied >= self.upstream_revision.load(Ordering::Acquire) {
            *self.in_sync_at.lock().expect("status lock") = Some(Instant::now());
        }
    }
}

/// The handle the services of a mirror share: where writes go, how a read waits
/// for the cluster's revision, and the mirror's state.
pub struct Mirror {
    /// The cluster.
    pub upstream: upstream::Upstream,
    /// The state shown in `/metrics` and `Status`.
    pub status: MirrorStatus,
    /// History kept.
    pub retain: Retain,
    /// Linearizable reads wait here.
    pub barrier: barrier::Barrier,
    /// Compaction revisions of forwarded `Compact` calls for the follower to follow
    /// at once (without `--retain`), so that the mirror answers as etcd does right
    /// after the call returns.
    pub(crate) compact_now: tokio::sync::watch::Sender<u64>,
}

impl Mirror {
    /// A mirror of the cluster at `endpoints`.
    ///
    /// # Errors
    ///
    /// As [`upstream::Upstream::new`].
    pub fn new(endpoints: &[String], tls: &upstream::UpstreamTls, retain: Retain) -> Result<Arc<Mirror>, String> {
        let upstream = upstream::Upstream::new(endpoints, tls)?;
        let (compact_now, _) = tokio::sync::watch::channel(0);
        Ok(Arc::new(Mirror {
            upstream,
            status: MirrorStatus::default(),
            retain,
            barrier: barrier::Barrier::new(),
            compact_now,
        }))
    }

    /// Forwards a `Compact` the cluster accepted at `revision`: without
    /// `--retain` the mirror compacts there too before the call is answered.
    pub(crate) async fn compacted_upstream(&self, store: &Store, revision: u64) -> Result<(), Status> {
        self.status.upstream_compact_revision.fetch_max(revision, Ordering::AcqRel);
        if self.retain != Retain::Cluster || revision <= store.compact_revision() {
            return Ok(());
        }
        self.compact_now.send_modify(|r| *r = (*r).max(revision));
        // The follower compacts once it has applied `revision` (at once: the
        // cluster had it before it could compact there); the compaction itself
        // runs on the KV pool, so look for its result.
        let waited = tokio::time::timeout(Duration::from_secs(5), async {
            while store.compact_revision() < revision {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        if waited.is_err() {
            tracing::warn!(revision, "mirror: the local compaction did not follow a forwarded Compact within 5 s");
        }
        Ok(())
    }
}

/// The store options of a mirror's log: leases belong to the cluster.
pub(crate) fn store_options(cfg: &ServerConfig) -> StoreOptions {
    let mut opts = crate::store_options(cfg);
    opts.foreign_leases = true;
    opts
}

/// Runs a mirror until `shutdown` completes: bootstraps or opens its data
/// directory, follows the cluster and serves; bootstraps again (serving stops
/// meanwhile) when the cluster compacted past it.
///
/// `on_ready` is called once, when the mirror first serves.
///
/// # Errors
///
/// A sentence saying what failed (the data directory, the cluster, a listener).
pub async fn run(
    cfg: MirrorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(&Running, &Mirror),
) -> Result<(), String> {
    let mirror = Mirror::new(&cfg.upstream, &cfg.upstream_tls, cfg.retain)?;
    let kv_pool = crate::kv::KvPool::new().map_err(|e| format!("cannot start the KV thread pool: {e}"))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut server_cfg = cfg.server.clone();
    let mut on_ready = Some(on_ready);
    let data_dir: PathBuf = server_cfg.data_dir.clone();
    loop {
        let store = bootstrap::open_or_bootstrap(&mirror, &server_cfg, &kv_pool, stop_rx.clone()).await?;
        let Some(store) = store else { return Ok(()) }; // stopped while bootstrapping
        let header = Header {
            cluster_id: mirror.status.cluster_id.load(Ordering::Acquire),
            member_id: crate::member_id(&server_cfg.name, &data_dir),
            raft_term: mirror.status.raft_term.load(Ordering::Acquire).max(1),
        };
        mirror.barrier.set_applied(store.current_revision());
        // The follower ends the serving when the cluster compacted past it.
        let (end_tx, end_rx) = tokio::sync::oneshot::channel();
        let follower = {
            let (mirror, store, pool, stop) = (Arc::clone(&mirror), store.clone(), kv_pool.handle(), stop_rx.clone());
            tokio::spawn(async move {
                let end = follow::follow(mirror, store, pool, stop).await;
                let _ = end_tx.send(end);
            })
        };
        let mut stop = stop_rx.clone();
        let ended: Arc<Mutex<Option<follow::FollowEnd>>> = Arc::default();
        let ended_w = Arc::clone(&ended);
        let serving_stop = async move {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {}
                end = end_rx => {
                    *ended_w.lock().expect("end lock") = end.ok();
                }
            }
        };
        let m = Arc::clone(&mirror);
        let mut first = on_ready.take();
        let listen_addr: Arc<Mutex<Option<std::net::SocketAddr>>> = Arc::default();
        let la = Arc::clone(&listen_addr);
        let served = crate::serve_store(
            server_cfg.clone(),
            store,
            &kv_pool,
            crate::Mode::Mirror(Arc::clone(&mirror)),
            header,
            serving_stop,
            move |r: &Running| {
                *la.lock().expect("addr lock") = Some(r.addr);
                if let Some(f) = first.take() {
                    f(r, &m);
                } else {
                    tracing::info!(addr = %r.addr, "mirror: serving again after a new bootstrap");
                }
            },
        )
        .await;
        follower.abort();
        let _ = follower.await;
        served?;
        // Serve again on the same address (a port 0 was resolved the first time).
        if let Some(a) = *listen_addr.lock().expect("addr lock") {
            server_cfg.listen = a;
        }
        let end = ended.lock().expect("end lock").take();
        match end {
            Some(follow::FollowEnd::Rebootstrap { compact_revision }) => {
                mirror.status.rebootstraps.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    compact_revision,
                    "mirror: the cluster compacted past the applied revision; bootstrapping again"
                );
                state::write(
                    &data_dir,
                    state::MirrorState {
                        cluster_id: mirror.status.cluster_id.load(Ordering::Acquire),
                        phase: state::Phase::Bootstrapping,
                        base: compact_revision,
                    },
                )?;
            }
            Some(follow::FollowEnd::Fatal(why)) => return Err(why),
            Some(follow::FollowEnd::Stopped) | None => return Ok(()),
        }
    }
}
