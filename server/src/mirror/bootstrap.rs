//! Opening a mirror's data directory, or filling a new one from the cluster (see
//! the module documentation of [`crate::mirror`] and `mirror.state` in [`state`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use argus_engine::log::record::RecordKind;
use argus_engine::store::{KeyValue, Store, UpstreamEvent};
use tokio::sync::watch;
use tonic::Status;

use super::state::{self, Found, MirrorState, Phase};
use super::upstream::{create_request, open_watch};
use super::Mirror;
use crate::kv::KvPool;
use crate::proto::etcdserverpb as pb;
use crate::proto::etcdserverpb::kv_client::KvClient;
use crate::proto::mvccpb;
use crate::ServerConfig;

/// The key the bootstrap's probes read and watch: any key works, one that nobody
/// writes costs etcd least.
pub(crate) const PROBE_KEY: &[u8] = b"\0argus-mirror-probe";

/// Keys per page of the bootstrap's Range.
const PAGE: i64 = 1000;

/// How long the bootstrap waits for the events of the base revision.
const EVENTS_WAIT: Duration = Duration::from_secs(10);

/// How long one step of a bootstrap may wait for the cluster.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a bootstrap attempt failed.
enum Failed {
    /// The cluster did not answer as needed (unreachable, no leader, a compaction
    /// raced the bootstrap): try again.
    Upstream(String),
    /// The data directory: give up.
    Local(String),
}

/// Opens the mirror's data directory if its bootstrap finished, else bootstraps it
/// from the cluster (retrying while the cluster cannot answer). `None` if `stop`
/// was set first.
///
/// # Errors
///
/// A sentence saying why the directory cannot be used: it is not a mirror's, it
/// mirrors another cluster, or it cannot be read or written.
pub(crate) async fn open_or_bootstrap(
    m: &Arc<Mirror>,
    cfg: &ServerConfig,
    pool: &KvPool,
    mut stop: watch::Receiver<bool>,
) -> Result<Option<Store>, String> {
    let dir = cfg.data_dir.clone();
    let found = state::inspect(&dir)?;
    let known = match found {
        Found::NotAMirror => {
            return Err(format!(
                "{} holds a revision log but no {}: it is not a mirror's data directory (an `argus serve` one?); \
                 give `argus mirror` a new or empty directory",
                dir.display(),
                state::STATE_FILE
            ))
        }
        Found::Mirror(s) => Some(s),
        Found::Empty => None,
    };
    if let Some(s) = known.filter(|s| s.phase == Phase::Ready) {
        m.status.cluster_id.store(s.cluster_id, Ordering::Release);
        let store = pool.open_store(&dir, super::store_options(cfg)).await?;
        tracing::info!(
            revision = store.current_revision(),
            compact_revision = store.compact_revision(),
            cluster_id = format_args!("{:x}", s.cluster_id),
            "mirror: opened its data directory"
        );
        return Ok(Some(store));
    }
    let mut backoff = Duration::from_millis(200);
    loop {
        if *stop.borrow() {
            return Ok(None);
        }
        match bootstrap(m, cfg, pool, known.map(|s| s.cluster_id)).await {
            Ok(store) => return Ok(Some(store)),
            Err(Failed::Local(why)) => return Err(why),
            Err(Failed::Upstream(why)) => {
                tracing::warn!(member = %m.upstream.member(), reason = %why, retry_in = ?backoff, "mirror: bootstrap failed");
                let (i, _) = m.upstream.channel();
                m.upstream.failed(i);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn up(s: Status) -> Failed {
    Failed::Upstream(format!("{}: {}", s.code(), s.message()))
}

/// One bootstrap attempt on the member in use.
async fn bootstrap(m: &Arc<Mirror>, cfg: &ServerConfig, pool: &KvPool, cluster: Option<u64>) -> Result<Store, Failed> {
    let dir = cfg.data_dir.clone();
    let wiped = state::wipe_log(&dir).map_err(Failed::Local)?;
    if wiped > 0 {
        tracing::info!(files = wiped, "mirror: deleted the log of an unfinished or outdated bootstrap");
    }
    let (_, ch) = m.upstream.channel();
    let mut kv = KvClient::new(ch.clone()).max_decoding_message_size(super::upstream::MAX_UPSTREAM_MESSAGE);
    // Compacted at all? A read at revision 1 says (cheaply, one key).
    let probe = pb::RangeRequest {
        key: PROBE_KEY.to_vec(),
        revision: 1,
        serializable: true,
        count_only: true,
        ..Default::default()
    };
    let compacted = match tokio::time::timeout(STEP_TIMEOUT, kv.range(probe)).await {
        Err(_) => return Err(Failed::Upstream("no answer to the first read".into())),
        Ok(Ok(r)) => {
            note_header(m, r.get_ref().header.as_ref(), cluster)?;
            None
        }
        Ok(Err(s)) if s.code() == tonic::Code::OutOfRange => Some(compaction_revision(m, ch.clone(), cluster).await?),
        Ok(Err(s)) if super::upstream::auth_refused(&s) => {
            return Err(Failed::Local(format!("{} ({}: {})", super::upstream::AUTH_REFUSED, s.code(), s.message())))
        }
        Ok(Err(s)) => return Err(up(s)),
    };
    let cluster_id = m.status.cluster_id.load(Ordering::Acquire);
    let opts = super::store_options(cfg);
    let Some(base) = compacted else {
        // Never compacted: the follower's watch from revision 2 brings everything.
        let store = pool.open_store(&dir, opts).await.map_err(Failed::Local)?;
        state::write(&dir, MirrorState { cluster_id, phase: Phase::Ready, base: 1 }).map_err(Failed::Local)?;
        tracing::info!(
            cluster_id = format_args!("{cluster_id:x}"),
            "mirror: bootstrapped from the cluster's first revision"
        );
        return Ok(store);
    };
    state::write(&dir, MirrorState { cluster_id, phase: Phase::Bootstrapping, base }).map_err(Failed::Local)?;
    let kvs = read_all_at(m, &mut kv, base, cluster).await?;
    let events = events_of(m, ch, base, cluster).await?;
    let n = kvs.len();
    let store = pool.open_store(&dir, opts).await.map_err(Failed::Local)?;
    let installing = store.clone();
    pool.handle()
        .spawn_blocking(move || -> Result<(), String> {
            let evs: Vec<UpstreamEvent<'_>> = events.iter().filter_map(upstream_event).collect();
            installing
                .install_base(base, &kvs, &evs)
                .map_err(|e| format!("cannot install the cluster's state at {base}: {e}"))?;
            installing.flush().map_err(|e| format!("flush: {e}"))
        })
        .await
        .map_err(|e| Failed::Local(format!("bootstrap task failed: {e}")))?
        .map_err(Failed::Local)?;
    state::write(&dir, MirrorState { cluster_id, phase: Phase::Ready, base }).map_err(Failed::Local)?;
    tracing::info!(
        base,
        keys = n,
        cluster_id = format_args!("{cluster_id:x}"),
        "mirror: bootstrapped at the cluster's compaction revision"
    );
    Ok(store)
}

/// Checks a header's cluster against the directory's, and records it.
fn note_header(m: &Mirror, h: Option<&pb::ResponseHeader>, cluster: Option<u64>) -> Result<(), Failed> {
    let Some(h) = h else { return Ok(()) };
    if let Some(c) = cluster.filter(|&c| c != h.cluster_id) {
        return Err(Failed::Local(format!(
            "the data directory mirrors etcd cluster {c:x}, but the upstream is cluster {:x}",
            h.cluster_id
        )));
    }
    m.status.cluster_id.store(h.cluster_id, Ordering::Release);
    m.status.saw_header(Some(h));
    Ok(())
}

/// The cluster's compaction revision: a one-key watch from revision 1 is canceled
/// with it.
async fn compaction_revision(m: &Mirror, ch: tonic::transport::Channel, cluster: Option<u64>) -> Result<u64, Failed> {
    let (tx, mut stream) =
        open_watch(ch, create_request(0, PROBE_KEY.to_vec(), Vec::new(), 1, false)).await.map_err(up)?;
    let found = tokio::time::timeout(STEP_TIMEOUT, async {
        loop {
            match stream.message().await {
                Ok(Some(r)) => {
                    note_header(m, r.header.as_ref(), cluster)?;
                    if r.compact_revision > 0 {
                        return Ok(r.compact_revision as u64);
                    }
                }
                Ok(None) => return Err(Failed::Upstream("watch stream closed".into())),
                Err(s) => return Err(up(s)),
            }
        }
    })
    .await
    .map_err(|_| Failed::Upstream("no compaction revision from the probe watch".into()))??;
    drop(tx);
    m.status.upstream_compact_revision.fetch_max(found, Ordering::AcqRel);
    Ok(found)
}

/// Every key live at `rev`, page by page (each page a serializable read at `rev`:
/// the same on every member that has applied it).
async fn read_all_at(
    m: &Mirror,
    kv: &mut KvClient<tonic::transport::Channel>,
    rev: u64,
    cluster: Option<u64>,
) -> Result<Vec<KeyValue>, Failed> {
    let mut out = Vec::new();
    let mut key = vec![0u8];
    loop {
        let req = pb::RangeRequest {
            key: key.clone(),
            range_end: vec![0],
            revision: rev as i64,
            limit: PAGE,
            serializable: true,
            ..Default::default()
        };
        let r = tokio::time::timeout(STEP_TIMEOUT, kv.range(req))
            .await
            .map_err(|_| Failed::Upstream(format!("no answer to the range at {rev}")))?
            .map_err(up)?
            .into_inner();
        note_header(m, r.header.as_ref(), cluster)?;
        let last = r.kvs.last().map(|k| k.key.clone());
        out.extend(r.kvs.into_iter().map(engine_kv));
        match last {
            Some(mut k) if r.more => {
                k.push(0);
                key = k;
            }
            _ => return Ok(out),
        }
    }
}

/// Revision `rev`'s own events (a watch from `rev`): what the base snapshot cannot
/// hold, and a watch from `rev` must deliver.
async fn events_of(
    m: &Mirror,
    ch: tonic::transport::Channel,
    rev: u64,
    cluster: Option<u64>,
) -> Result<Vec<mvccpb::Event>, Failed> {
    let (tx, mut stream) = open_watch(ch, create_request(0, vec![0], vec![0], rev, false)).await.map_err(up)?;
    // Revision `rev`'s events come first and whole (etcd keeps every key's
    // newest event at or below its compaction revision, so all of `rev`'s). A
    // progress notification cannot say there are none: etcd 3.4.23 answers a
    // progress request at once, with its current revision, even while the
    // watcher still has older events to send.
    let got = tokio::time::timeout(EVENTS_WAIT, async {
        loop {
            match stream.message().await {
                Ok(Some(r)) => {
                    note_header(m, r.header.as_ref(), cluster)?;
                    if r.canceled {
                        return Err(Failed::Upstream(format!(
                            "the watch from {rev} was canceled (compact_revision {}, {})",
                            r.compact_revision, r.cancel_reason
                        )));
                    }
                    if !r.events.is_empty() {
                        let evs: Vec<mvccpb::Event> = r
                            .events
                            .into_iter()
                            .filter(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision as u64 == rev))
                            .collect();
                        return Ok(evs);
                    }
                }
                Ok(None) => return Err(Failed::Upstream("watch stream closed".into())),
                Err(s) => return Err(up(s)),
            }
        }
    })
    .await;
    drop(tx);
    let got = match got {
        Ok(r) => r?,
        Err(_) => {
            // Nothing at or after `rev` at all: the cluster kept no event of it.
            tracing::warn!(revision = rev, "mirror: no events of the base revision arrived; installing none");
            Vec::new()
        }
    };
    Ok(got)
}

/// An etcd key-value as the engine's.
pub(crate) fn engine_kv(kv: mvccpb::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision.max(0) as u64,
        mod_revision: kv.mod_revision.max(0) as u64,
        version: kv.version.max(0) as u64,
        lease: kv.lease,
    }
}

/// An etcd event as the engine's upstream event (`None` without its key-value).
pub(crate) fn upstream_event(e: &mvccpb::Event) -> Option<UpstreamEvent<'_>> {
    let kv = e.kv.as_ref()?;
    let delete = e.r#type == mvccpb::event::EventType::Delete as i32;
    Some(UpstreamEvent {
        kind: if delete { RecordKind::Delete } else { RecordKind::Put },
        key: &kv.key,
        value: if delete { &[] } else { &kv.value },
        create_revision: if delete { 0 } else { kv.create_revision.max(0) as u64 },
        version: if delete { 0 } else { kv.version.max(0) as u64 },
        lease: if delete { 0 } else { kv.lease },
    })
}
