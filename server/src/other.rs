//! Every etcd method Argus does not implement (Auth here; the rest of
//! Cluster and Maintenance in `cluster.rs` and `maintenance.rs`): those answer
//! `Unimplemented` with a message naming the method, so a client learns at once
//! what it called rather than seeing a bare status.

use tonic::{Request, Response, Status};

use crate::proto::etcdserverpb as pb;
use crate::proto::etcdserverpb::auth_server;

/// The status of a method Argus does not implement, naming it.
pub(crate) fn unimplemented(method: &str) -> Status {
    Status::unimplemented(format!(
        "argus does not implement {method}: it serves etcd's KV, Watch, Lease, Maintenance and Cluster.MemberList"
    ))
}

type Unary = Result<Response<pb::HeaderOnly>, Status>;

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

/// Auth: not implemented.
pub struct Unimplemented;

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
