//! The calls a mirror forwards to the cluster and answers with the cluster's
//! response, unchanged: KV writes (Put, DeleteRange, Txn, Compact) and every Lease
//! call, Alarm and MoveLeader. The services call these when they serve a mirror.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Response, Status, Streaming};

use super::upstream::MAX_UPSTREAM_MESSAGE;
use super::Mirror;
use crate::proto::etcdserverpb as pb;
use crate::proto::etcdserverpb::{
    kv_client::KvClient, lease_client::LeaseClient, maintenance_client::MaintenanceClient,
};

/// Defines `$name`: the unary call `$method` of `$client` forwarded to the
/// cluster's member in use (see [`super::upstream::Upstream::call`]), its response
/// passed back unchanged.
macro_rules! forward {
    ($(#[$doc:meta])* $name:ident, $client:ident, $method:ident, $req:ty, $resp:ty) => {
        $(#[$doc])*
        pub(crate) async fn $name(m: &Mirror, r: $req) -> Result<Response<$resp>, Status> {
            let r = m
                .upstream
                .call(|ch| {
                    let r = r.clone();
                    async move { $client::new(ch).max_decoding_message_size(MAX_UPSTREAM_MESSAGE).$method(r).await }
                })
                .await?;
            Ok(Response::new(r.into_inner()))
        }
    };
}

forward!(/// Put, on the cluster.
    put, KvClient, put, pb::PutRequest, pb::PutResponse);
forward!(/// DeleteRange, on the cluster.
    delete_range, KvClient, delete_range, pb::DeleteRangeRequest, pb::DeleteRangeResponse);
forward!(/// Txn, on the cluster (its compares must be decided where the writes are).
    txn, KvClient, txn, pb::TxnRequest, pb::TxnResponse);
forward!(/// Compact, on the cluster.
    compact, KvClient, compact, pb::CompactionRequest, pb::CompactionResponse);
forward!(/// LeaseGrant, on the cluster.
    lease_grant, LeaseClient, lease_grant, pb::LeaseGrantRequest, pb::LeaseGrantResponse);
forward!(/// LeaseRevoke, on the cluster.
    lease_revoke, LeaseClient, lease_revoke, pb::LeaseRevokeRequest, pb::LeaseRevokeResponse);
forward!(/// LeaseTimeToLive, on the cluster.
    lease_time_to_live, LeaseClient, lease_time_to_live, pb::LeaseTimeToLiveRequest, pb::LeaseTimeToLiveResponse);
forward!(/// LeaseLeases, on the cluster.
    lease_leases, LeaseClient, lease_leases, pb::LeaseLeasesRequest, pb::LeaseLeasesResponse);
forward!(/// Alarm, on the cluster (a NOSPACE there stops the writes a mirror forwards).
    alarm, MaintenanceClient, alarm, pb::AlarmRequest, pb::AlarmResponse);
forward!(/// MoveLeader, on the cluster.
    move_leader, MaintenanceClient, move_leader, pb::MoveLeaderRequest, pb::MoveLeaderResponse);

/// The keep-alive stream a mirror answers: the client's stream relayed to one
/// keep-alive stream on the cluster, both ways. When the member fails the stream
/// ends with its error and the client opens another (as it would with etcd), which
/// goes to the member the mirror uses then.
pub(crate) type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send + 'static>>;

/// LeaseKeepAlive, relayed to the cluster.
pub(crate) async fn lease_keep_alive(
    m: &Mirror,
    mut incoming: Streaming<pb::LeaseKeepAliveRequest>,
) -> Result<KeepAliveStream, Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(Ok(r)) = incoming.next().await {
            if tx.send(r).await.is_err() {
                break;
            }
        }
    });
    let (_, ch) = m.upstream.channel();
    let resp = LeaseClient::new(ch)
        .max_decoding_message_size(MAX_UPSTREAM_MESSAGE)
        .lease_keep_alive(ReceiverStream::new(rx))
        .await?;
    Ok(Box::pin(resp.into_inner()))
}
