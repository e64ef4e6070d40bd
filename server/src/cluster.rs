//! etcd's Cluster service for a one-member "cluster": `MemberList` answers this
//! server, so that tools that discover endpoints through it (`etcdctl member list`,
//! `etcdctl endpoint status --cluster`, clients that sync their endpoints) find it.
//! Membership changes answer `Unimplemented`: Argus has no raft and no peers.

use std::net::SocketAddr;

use tonic::{Request, Response, Status};

use crate::proto::etcdserverpb as pb;
use crate::proto::etcdserverpb::cluster_server;
use crate::{other, Header};

/// The Cluster service: this server as the one member.
pub struct ClusterService {
    header: Header,
    member: pb::Member,
}

impl ClusterService {
    /// The service of a member called `name` (etcd's `--name`) whose clients reach
    /// it at `addr` (the address the gRPC listener is bound to).
    pub fn new(header: Header, name: String, addr: SocketAddr) -> Self {
        let member = pb::Member {
            id: header.member_id,
            name,
            // No peer listener: there are no peers to talk to.
            peer_ur_ls: Vec::new(),
            client_ur_ls: vec![format!("http://{addr}")],
            is_learner: false,
        };
        ClusterService { header, member }
    }
}

#[tonic::async_trait]
impl cluster_server::Cluster for ClusterService {
    async fn member_list(&self, _: Request<pb::MemberListRequest>) -> Result<Response<pb::MemberListResponse>, Status> {
        // As etcd 3.4: the header carries the identities and the term, no revision.
        Ok(Response::new(pb::MemberListResponse {
            header: Some(self.header.at(0)),
            members: vec![self.member.clone()],
        }))
    }

    async fn member_add(&self, _: Request<pb::Empty>) -> Result<Response<pb::HeaderOnly>, Status> {
        Err(other::unimplemented("Cluster.MemberAdd"))
    }

    async fn member_remove(&self, _: Request<pb::Empty>) -> Result<Response<pb::HeaderOnly>, Status> {
        Err(other::unimplemented("Cluster.MemberRemove"))
    }

    async fn member_update(&self, _: Request<pb::Empty>) -> Result<Response<pb::HeaderOnly>, Status> {
        Err(other::unimplemented("Cluster.MemberUpdate"))
    }

    async fn member_promote(&self, _: Request<pb::Empty>) -> Result<Response<pb::HeaderOnly>, Status> {
        Err(other::unimplemented("Cluster.MemberPromote"))
    }
}
