//! Maintenance.Status, and every etcd method Argus does not implement: those answer
//! `Unimplemented` with a message naming the method, so a client learns at once
//! what it called rather than seeing a bare status.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use argus_engine::store::Store;
use argus_engine::watch::WatchHub;
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::proto::etcdserverpb as pb;
use crate::proto::etcdserverpb::{auth_server, cluster_server, maintenance_server};
use crate::Header;

fn unimplemented(method: &str) -> Status {
    Status::unimplemented(format!(
        "argus does not implement {method}: it serves etcd's KV, Watch and Maintenance.Status only"
    ))
}

type Unary = Result<Response<pb::HeaderOnly>, Status>;
type Out = Pin<Box<dyn Stream<Item = Result<pb::HeaderOnly, Status>> + Send + 'static>>;

/// Implements a service trait for `$ty` with every listed unary method answering
/// `Unimplemented`, plus the extra items given after `;`.
macro_rules! unimplemented_service {
    ($trait_:path, $ty:ty, [$($name:ident => $label:literal),* $(,)?]; $($extra:item)*) => {
        #[tonic::async_trait]
        impl $trait_ for $ty {
            $(
                async fn $name(&self, _: Request<pb::Empty>) -> Unary {
                    Err(unimplemented($label))
                }
            )*
            $($extra)*
        }
    };
}

/// Cluster and Auth: not implemented.
pub struct Unimplemented;

unimplemented_service!(cluster_server::Cluster, Unimplemented, [
    member_add => "Cluster.MemberAdd",
    member_remove => "Cluster.MemberRemove",
    member_update => "Cluster.MemberUpdate",
    member_list => "Cluster.MemberList",
    member_promote => "Cluster.MemberPromote",
];);

unimplemented_service!(auth_server::Auth, Unimplemented, [
    auth_enable => "Auth.AuthEnable",
    auth_disable => "Auth.AuthDisable",
    auth_status => "Auth.AuthStatus",
    authenticate => "Auth.Authenticate",
    user_add => "Auth.UserAdd",
    user_get => "Auth.UserGet",
    user_list => "Auth.UserList",
    user_delete => "Auth.UserDelete",
    user_change_password => "Auth.UserChangePassword",
    user_grant_role => "Auth.UserGrantRole",
    user_revoke_role => "Auth.UserRevokeRole",
    role_add => "Auth.RoleAdd",
    role_get => "Auth.RoleGet",
    role_list => "Auth.RoleList",
    role_delete => "Auth.RoleDelete",
    role_grant_permission => "Auth.RoleGrantPermission",
    role_revoke_permission => "Auth.RoleRevokePermission",
];);

/// Maintenance: `Status` (enough for `etcdctl endpoint status`); the rest is not
/// implemented.
pub struct MaintenanceService {
    store: Store,
    header: Header,
    data_dir: PathBuf,
    hub: Arc<WatchHub>,
}

impl MaintenanceService {
    /// The Maintenance service of `store` in `data_dir`, watched by `hub` (whose
    /// failure `Status` reports in its `errors`).
    pub fn new(store: Store, header: Header, data_dir: PathBuf, hub: Arc<WatchHub>) -> Self {
        MaintenanceService { store, header, data_dir, hub }
    }
}

/// Bytes of disk allocated to the files in `dir` (segments are preallocated sparse
/// files, so this counts what is really used, not their nominal length).
pub fn dir_size(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()?.metadata().ok()).filter(|m| m.is_file()).map(|m| m.blocks() * 512).sum())
        .unwrap_or(0)
}

unimplemented_service!(maintenance_server::Maintenance, MaintenanceService, [
    alarm => "Maintenance.Alarm",
    defragment => "Maintenance.Defragment",
    hash => "Maintenance.Hash",
    hash_kv => "Maintenance.HashKV",
    move_leader => "Maintenance.MoveLeader",
    downgrade => "Maintenance.Downgrade",
];
    type SnapshotStream = Out;

    async fn status(&self, _: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let rev = self.store.current_revision();
        let size = dir_size(&self.data_dir) as i64;
        Ok(Response::new(pb::StatusResponse {
            header: Some(self.header.at(rev)),
            version: crate::ETCD_VERSION.to_string(),
            db_size: size,
            leader: self.header.member_id,
            raft_index: rev,
            raft_term: self.header.raft_term,
            raft_applied_index: rev,
            errors: self.hub.failure().map(|why| format!("watch engine failed: {why}")).into_iter().collect(),
            db_size_in_use: size,
            is_learner: false,
        }))
    }

    async fn snapshot(&self, _: Request<pb::Empty>) -> Result<Response<Out>, Status> {
        Err(unimplemented("Maintenance.Snapshot"))
    }
);
