//! The answer of every etcd method Argus does not implement (the rest of Cluster
//! and Maintenance in `cluster.rs` and `maintenance.rs`, Auth on a mirror in
//! `auth/service.rs`): `Unimplemented` with a message naming the method, so a
//! client learns at once what it called rather than seeing a bare status.

use tonic::Status;

/// The status of a method Argus does not implement, naming it.
pub(crate) fn unimplemented(method: &str) -> Status {
    Status::unimplemented(format!(
        "argus does not implement {method}: it serves etcd's KV, Watch, Lease, Maintenance and Cluster.MemberList"
    ))
}
