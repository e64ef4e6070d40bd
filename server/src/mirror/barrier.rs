//! The read barrier of a mirror: a linearizable Range is answered from the
//! mirror's own log once it has applied the cluster's current revision, so the
//! answer is as fresh as etcd's own linearizable read.
//!
//! The cluster's current revision comes from a linearizable one-key `count_only`
//! Range sent to the member the mirror follows: etcd answers it after a ReadIndex
//! round, so its header revision is at least that of every write any member had
//! acknowledged when the barrier began. (A progress request on the follower's
//! watch, which DESIGN.md suggested, answers with the followed member's *own*
//! applied revision, which may be behind a write another member has already
//! acknowledged: not linearizable.)
//!
//! Barriers are shared: at most one such Range is in flight per mirror, and every
//! read that arrives while it is in flight waits for the next one (which starts
//! after the read arrived, as it must). A thousand linearizable reads a second cost
//! the cluster at most one tiny read per round trip.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tonic::Status;

use super::Mirror;
use crate::proto::etcdserverpb as pb;
use crate::proto::etcdserverpb::kv_client::KvClient;

/// How long a linearizable read waits for the mirror to apply the cluster's
/// revision before it fails (as etcd's own read fails after its request timeout).
pub const BARRIER_TIMEOUT: Duration = Duration::from_secs(7);

type Waiter = oneshot::Sender<Result<u64, Status>>;

/// See the module documentation.
pub struct Barrier {
    applied: watch::Sender<u64>,
    /// Reads waiting for a barrier that has not started; whether one runs now.
    queue: Mutex<(Vec<Waiter>, bool)>,
}

impl Default for Barrier {
    fn default() -> Self {
        Self::new()
    }
}

impl Barrier {
    /// A barrier with nothing applied yet.
    pub fn new() -> Barrier {
        Barrier { applied: watch::channel(0).0, queue: Mutex::new((Vec::new(), false)) }
    }

    /// Publishes the applied revision (the follower, after each apply).
    pub fn set_applied(&self, rev: u64) {
        self.applied.send_if_modified(|a| {
            let moved = rev != *a;
            *a = rev;
            moved
        });
    }

    /// A receiver of the applied revision.
    pub fn applied_receiver(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Waits until the mirror has applied the cluster's current revision, and
    /// returns that revision.
    ///
    /// # Errors
    ///
    /// The cluster's status when it cannot answer the barrier read (no leader, no
    /// member reachable), or `UNAVAILABLE` when the mirror does not apply that
    /// revision within [`BARRIER_TIMEOUT`].
    pub async fn wait(mirror: &Arc<Mirror>) -> Result<u64, Status> {
        let rev = Self::cluster_revision(mirror).await?;
        let mut rx = mirror.barrier.applied_receiver();
        let waited = tokio::time::timeout(BARRIER_TIMEOUT, async { rx.wait_for(|a| *a >= rev).await.is_ok() }).await;
        match waited {
            Ok(true) => Ok(rev),
            Ok(false) => Err(Status::unavailable("argus mirror: stopping")),
            Err(_) => Err(Status::unavailable(format!(
                "argus mirror: not caught up with the cluster's revision {rev} (applied {}) within {BARRIER_TIMEOUT:?}",
                *mirror.barrier.applied_receiver().borrow()
            ))),
        }
    }

    /// The cluster's current revision, from a barrier read started after this call.
    async fn cluster_revision(mirror: &Arc<Mirror>) -> Result<u64, Status> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut q = mirror.barrier.queue.lock().expect("barrier lock");
            q.0.push(tx);
            !std::mem::replace(&mut q.1, true)
        };
        if start {
            // A task of its own: a read whose client goes away must not take the
            // round the other reads wait for with it.
            let m = Arc::clone(mirror);
            tokio::spawn(async move {
                loop {
                    let waiting = {
                        let mut q = m.barrier.queue.lock().expect("barrier lock");
                        if q.0.is_empty() {
                            q.1 = false;
                            return;
                        }
                        std::mem::take(&mut q.0)
                    };
                    let r = read_index(&m).await;
                    for w in waiting {
                        let _ = w.send(r.clone());
                    }
                }
            });
        }
        rx.await.map_err(|_| Status::unavailable("argus mirror: barrier abandoned"))?
    }
}

/// One linearizable read of one key, counting only: its header carries the
/// cluster's revision after a ReadIndex round.
async fn read_index(m: &Mirror) -> Result<u64, Status> {
    let req = pb::RangeRequest { key: b"\0argus-barrier".to_vec(), count_only: true, ..Default::default() };
    let resp = m
        .upstream
        .call(|ch| {
            let req = req.clone();
            async move { KvClient::new(ch).range(req).await }
        })
        .await
        .map(tonic::Response::into_inner)?;
    m.status.saw_header(resp.header.as_ref());
    Ok(resp.header.map_or(0, |h| h.revision.max(0) as u64))
}
