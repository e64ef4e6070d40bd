//! The calls a mirror forwards to the cluster and answers with the cluster's
//! response, unchanged: KV writes (Put, DeleteRange, Txn, Compact) and every Lease
//! call. The KV and Lease services call these when they serve a mirror.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Response, Status, Streaming};

use super::upstream::MAX_UPSTREAM_MESSAGE;
use super::Mirror;
use crate::proto::etcdserverpb as pb;
use crate::proto::etcdserverpb::{kv_client::KvClient, lease_client::LeaseClient};

/// Forwards a unary KV call: `$method` of `KvClient` with request `$req`.
macro_rules! kv_call {
    ($m:expr, $method:ident, $req:expr) => {{
        let req = $req;
        let r = $m
            .upstream
            .call(|ch| {
                let req = req.clone();
                async move { KvClient::new(ch).max_decoding_message_size(MAX_UPSTREAM_MESSAGE).$method(req).await }
            })
            .await?;
        Ok(Response::new(r.into_inner()))
    }};
}

/// Forwards a unary Lease call.
macro_rules! lease_call {
    ($m:expr, $method:ident, $req:expr) => {{
        let req = $req;
        let r = $m
            .upstream
            .call(|ch| {
                let req = req.clone();
                async move { LeaseClient::new(ch).max_decoding_message_size(MAX_UPSTREAM_MESSAGE).$method(req).await }
            })
            .await?;
        Ok(Response::new(r.into_inner()))
    }};
}

/// Put, on the cluster.
pub(crate) async fn put(m: &Mirror, r: pb::PutRequest) -> Result<Response<pb::PutResponse>, Status> {
    kv_call!(m, put, r)
}

/// DeleteRange, on the cluster.
pub(crate) async fn delete_range(
    m: &Mirror,
    r: pb::DeleteRangeRequest,
) -> Result<Response<pb::DeleteRangeResponse>, Status> {
    kv_call!(m, delete_range, r)
}

/// Txn, on the cluster (its compares must be decided where the writes are).
pub(crate) async fn txn(m: &Mirror, r: pb::TxnRequest) -> Result<Response<pb::TxnResponse>, Status> {
    kv_call!(m, txn, r)
}

/// Compact, on the cluster.
pub(crate) async fn compact(m: &Mirror, r: pb::CompactionRequest) -> Result<Response<pb::CompactionResponse>, Status> {
    kv_call!(m, compact, r)
}

/// LeaseGrant, on the cluster.
pub(crate) async fn lease_grant(
    m: &Mirror,
    r: pb::LeaseGrantRequest,
) -> Result<Response<pb::LeaseGrantResponse>, Status> {
    lease_call!(m, lease_grant, r)
}

/// LeaseRevoke, on the cluster.
pub(crate) async fn lease_revoke(
    m: &Mirror,
    r: pb::LeaseRevokeRequest,
) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
    lease_call!(m, lease_revoke, r)
}

/// LeaseTimeToLive, on the cluster.
pub(crate) async fn lease_time_to_live(
    m: &Mirror,
    r: pb::LeaseTimeToLiveRequest,
) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
    lease_call!(m, lease_time_to_live, r)
}

/// LeaseLeases, on the cluster.
pub(crate) async fn lease_leases(
    m: &Mirror,
    r: pb::LeaseLeasesRequest,
) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
    lease_call!(m, lease_leases, r)
}

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
