//! etcd's Maintenance service: `Status` with the store's figures, `Alarm` (Argus
//! raises none), `Defragment` (nothing to do), `Hash` and `HashKV` (the engine's
//! CRC-32C of the MVCC state, `argus_engine::store::KvHash`) and `Snapshot` (the
//! engine's backup stream, `argus_engine::backup`, which `etcdctl snapshot save`
//! writes to a file and `argus restore` reads). `MoveLeader` succeeds to this
//! member itself (the one member is the leader) and is refused for any other, as
//! etcd refuses a target that is not a member; `Downgrade` answers `Unimplemented`.
//!
//! Where etcd 3.4 sends a response without a header (Alarm, Defragment, every
//! Snapshot message), so does Argus: `etcdctl alarm list -w json` prints `{}` on
//! both.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use argus_engine::store::Store;
use argus_engine::watch::WatchHub;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::proto::etcdserverpb as pb;
use crate::proto::etcdserverpb::maintenance_server;
use crate::{convert, other, Header};

/// Bytes of backup in one `SnapshotResponse` (etcd sends 32 KiB).
const SNAPSHOT_CHUNK: usize = 64 << 10;

/// Chunks of a snapshot read ahead of the client.
const SNAPSHOT_QUEUE: usize = 4;

/// The Maintenance service of one store.
pub struct MaintenanceService {
    store: Store,
    header: Header,
    data_dir: PathBuf,
    hub: Arc<WatchHub>,
    /// Set on a mirror: Status shows the cluster's leader and the mirror's lag;
    /// Alarm and MoveLeader go to the cluster.
    mirror: Option<Arc<crate::mirror::Mirror>>,
    /// The permission gate (`None`: no auth).
    auth: Option<Arc<crate::auth::AuthGate>>,
}

impl MaintenanceService {
    /// The Maintenance service of `store` in `data_dir`, watched by `hub` (whose
    /// failure `Status` reports in its `errors`).
    pub fn new(store: Store, header: Header, data_dir: PathBuf, hub: Arc<WatchHub>) -> Self {
        MaintenanceService { store, header, data_dir, hub, mirror: None, auth: None }
    }

    /// The Maintenance service of a mirror (`Some`).
    #[must_use]
    pub fn mirror(mut self, mirror: Option<Arc<crate::mirror::Mirror>>) -> Self {
        self.mirror = mirror;
        self
    }

    /// The Maintenance service checking with `gate`: Defragment, Hash, HashKV,
    /// Snapshot and MoveLeader need root once auth is on (etcd's
    /// `authMaintenanceServer`); Status and Alarm are open, as in etcd.
    #[must_use]
    pub fn auth(mut self, gate: Option<Arc<crate::auth::AuthGate>>) -> Self {
        self.auth = gate;
        self
    }

    /// Refuses a caller without the root role while auth is on.
    fn admin<T>(&self, req: &Request<T>) -> Result<(), Status> {
        match &self.auth {
            Some(g) => g.require_root(req.metadata(), req.extensions()).map(|_| ()),
            None => Ok(()),
        }
    }

    /// Runs `f` on the store on a blocking thread (hashes read the whole log).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(Store) -> argus_engine::Result<T> + Send + 'static,
    ) -> Result<T, Status> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store))
            .await
            .map_err(|e| Status::internal(format!("argus: task failed: {e}")))?
            .map_err(convert::status)
    }
}

/// Bytes of disk allocated to the files in `dir` (segments are preallocated, or
/// sparse where the file system cannot preallocate, so this counts what is really
/// used, not their nominal length).
pub fn dir_size(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()?.metadata().ok()).filter(|m| m.is_file()).map(|m| m.blocks() * 512).sum())
        .unwrap_or(0)
}

/// Produces the backup stream of `store` into `tx` as `SnapshotResponse`s (on a
/// blocking thread: the stream reads files). Stops when the client goes away.
fn send_snapshot(store: Store, tx: tokio::sync::mpsc::Sender<Result<pb::SnapshotResponse, Status>>) {
    let fail = |why: String| {
        tracing::warn!(reason = %why, "snapshot failed");
        let _ = tx.blocking_send(Err(Status::unavailable(format!("argus: snapshot failed: {why}"))));
    };
    let mut backup = match store.backup() {
        Ok(b) => b,
        Err(e) => return fail(e.to_string()),
    };
    let summary = backup.summary().clone();
    tracing::info!(
        revision = summary.revision,
        compact_revision = summary.compact_revision,
        files = summary.files.len(),
        bytes = backup.total_len(),
        "sending a snapshot"
    );
    // As etcd: the body in chunks, each with the bytes of body still to come, then
    // the SHA-256 trailer alone with 0 remaining.
    let mut left = backup.body_len();
    while left > 0 {
        let mut blob = vec![0u8; (left as usize).min(SNAPSHOT_CHUNK)];
        if let Err(e) = backup.read_exact(&mut blob) {
            return fail(format!("reading the store's files: {e}"));
        }
        left -= blob.len() as u64;
        if tx.blocking_send(Ok(pb::SnapshotResponse { header: None, remaining_bytes: left, blob })).is_err() {
            tracing::info!("snapshot abandoned by the client");
            return;
        }
    }
    let mut blob = Vec::with_capacity(argus_engine::backup::TRAILER);
    if let Err(e) = backup.read_to_end(&mut blob) {
        return fail(format!("computing the checksum: {e}"));
    }
    let _ = tx.blocking_send(Ok(pb::SnapshotResponse { header: None, remaining_bytes: 0, blob }));
}

#[tonic::async_trait]
impl maintenance_server::Maintenance for MaintenanceService {
    /// Argus raises no alarms: GET and DEACTIVATE answer an empty list (as etcd
    /// with none raised); ACTIVATE is refused.
    async fn alarm(&self, req: Request<pb::AlarmRequest>) -> Result<Response<pb::AlarmResponse>, Status> {
        if let Some(m) = &self.mirror {
            return crate::mirror::forward::alarm(m, req.into_inner()).await;
        }
        if req.get_ref().action == pb::alarm_request::AlarmAction::Activate as i32 {
            return Err(Status::unimplemented(
                "argus does not implement Maintenance.Alarm ACTIVATE: it has no alarms (a full disk refuses \
                 writes by itself, and they resume once space is freed)",
            ));
        }
        Ok(Response::new(pb::AlarmResponse { header: None, alarms: Vec::new() }))
    }

    async fn status(&self, _: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let rev = self.store.current_revision();
        let log = self.store.log();
        let mut errors = Vec::new();
        if log.is_poisoned() {
            errors.push("argus: the revision log refuses writes after a failed write or fsync".to_string());
        }
        if let Some(why) = self.hub.failure() {
            errors.push(format!("watch engine failed: {why}"));
        }
        if let Some(m) = &self.mirror {
            // A mirror: the cluster's leader and term; the raft index is the
            // cluster's newest revision known, the applied index the mirror's.
            use std::sync::atomic::Ordering::Acquire;
            let s = &m.status;
            let upstream = s.upstream_revision.load(Acquire).max(rev);
            if !s.up.load(Acquire) {
                errors.push(format!("argus mirror: not following the cluster (member {})", m.upstream.member()));
            }
            if upstream > rev {
                errors.push(format!(
                    "argus mirror: {} revisions ({:.1} s) behind the cluster",
                    upstream - rev,
                    s.lag_seconds(rev)
                ));
            }
            return Ok(Response::new(pb::StatusResponse {
                header: Some(self.header.at(rev)),
                version: crate::ETCD_VERSION.to_string(),
                db_size: dir_size(&self.data_dir) as i64,
                leader: s.leader_id.load(Acquire),
                raft_index: upstream,
                raft_term: s.raft_term.load(Acquire),
                raft_applied_index: rev,
                errors,
                db_size_in_use: log.bytes_in_use() as i64,
                is_learner: false,
            }));
        }
        Ok(Response::new(pb::StatusResponse {
            header: Some(self.header.at(rev)),
            version: crate::ETCD_VERSION.to_string(),
            db_size: dir_size(&self.data_dir) as i64,
            leader: self.header.member_id,
            // No raft: the log's revision is both the committed and the applied
            // index, and the header's term is the term.
            raft_index: rev,
            raft_term: self.header.raft_term,
            raft_applied_index: rev,
            errors,
            db_size_in_use: log.bytes_in_use() as i64,
            is_learner: false,
        }))
    }

    /// Nothing to defragment: the log is append-only and compaction deletes whole
    /// files, so no space is left free inside one. Succeeds, as etcd does.
    async fn defragment(
        &self,
        req: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        self.admin(&req)?;
        tracing::info!("defragment: nothing to do (compaction already deleted whole segments)");
        Ok(Response::new(pb::DefragmentResponse { header: None }))
    }

    async fn hash(&self, req: Request<pb::HashRequest>) -> Result<Response<pb::HashResponse>, Status> {
        self.admin(&req)?;
        let h = self.blocking(|s| s.hash()).await?;
        Ok(Response::new(pb::HashResponse { header: Some(self.header.at(h.current_revision)), hash: h.hash }))
    }

    async fn hash_kv(&self, req: Request<pb::HashKvRequest>) -> Result<Response<pb::HashKvResponse>, Status> {
        self.admin(&req)?;
        let rev = req.get_ref().revision;
        // (etcd hashes nothing for a negative revision and answers; Argus says so.)
        let rev = u64::try_from(rev).map_err(|_| {
            Status::invalid_argument(format!(
                "argus: HashKV revision {rev} is negative (0 asks for the current revision)"
            ))
        })?;
        let h = self.blocking(move |s| s.hash_kv(rev)).await?;
        Ok(Response::new(pb::HashKvResponse {
            header: Some(self.header.at(h.current_revision)),
            hash: h.hash,
            // As etcd: -1 when the store was never compacted.
            compact_revision: if h.compact_revision == 0 { -1 } else { h.compact_revision as i64 },
        }))
    }

    type SnapshotStream = ReceiverStream<Result<pb::SnapshotResponse, Status>>;

    async fn snapshot(&self, req: Request<pb::SnapshotRequest>) -> Result<Response<Self::SnapshotStream>, Status> {
        self.admin(&req)?;
        let (tx, rx) = tokio::sync::mpsc::channel(SNAPSHOT_QUEUE);
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || send_snapshot(store, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    /// As etcd's leader answers: moving the leadership to itself succeeds at once
    /// (with no header, as etcd's); any other target is not a member.
    async fn move_leader(
        &self,
        req: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        self.admin(&req)?;
        if let Some(m) = &self.mirror {
            return crate::mirror::forward::move_leader(m, req.into_inner()).await;
        }
        if req.into_inner().target_id != self.header.member_id {
            return Err(Status::failed_precondition("etcdserver: bad leader transferee"));
        }
        Ok(Response::new(pb::MoveLeaderResponse { header: None }))
    }

    async fn downgrade(&self, _: Request<pb::Empty>) -> Result<Response<pb::HeaderOnly>, Status> {
        Err(other::unimplemented("Maintenance.Downgrade"))
    }
}
