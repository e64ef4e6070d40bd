//! Conversions between the engine's types and etcd's protobuf messages, and the
//! mapping of engine errors to the gRPC statuses and messages etcd clients expect
//! (etcd's `rpctypes`).

use argus_engine::store::KeyValue;
use argus_engine::watch::{EventKind, EventRef, KvRef};
use argus_engine::Error;
use tonic::{Code, Status};

use crate::proto::mvccpb;

/// An engine key-value as etcd's `mvccpb.KeyValue`.
pub fn kv(kv: &KeyValue) -> mvccpb::KeyValue {
    kv_ref(&KvRef::from(kv))
}

/// An engine event (owned, or borrowed from a revision batch) as etcd's
/// `mvccpb.Event`, with `prev_kv` only when asked for.
pub fn event<'a>(e: impl Into<EventRef<'a>>, prev_kv: bool) -> mvccpb::Event {
    let e = e.into();
    mvccpb::Event {
        r#type: match e.kind {
            EventKind::Put => mvccpb::event::EventType::Put as i32,
            EventKind::Delete => mvccpb::event::EventType::Delete as i32,
        },
        kv: Some(kv_ref(&e.kv)),
        prev_kv: if prev_kv { e.prev_kv.as_ref().map(kv_ref) } else { None },
    }
}

/// A borrowed key-value of a revision batch as etcd's `mvccpb.KeyValue`.
pub fn kv_ref(kv: &KvRef<'_>) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key.to_vec(),
        create_revision: kv.create_revision as i64,
        mod_revision: kv.mod_revision as i64,
        version: kv.version as i64,
        value: kv.value.to_vec(),
        lease: kv.lease,
    }
}

/// The gRPC status etcd answers for an engine error, with etcd's message.
pub fn status(e: Error) -> Status {
    let (code, msg) = match &e {
        Error::EmptyKey => (Code::InvalidArgument, "etcdserver: key is not provided".to_string()),
        Error::KeyNotFound => (Code::InvalidArgument, "etcdserver: key not found".to_string()),
        // etcd's exact message: its Go client recognizes server errors by it.
        Error::KeyTooLarge { .. } | Error::ValueTooLarge { .. } | Error::RequestTooLarge { .. } => {
            (Code::InvalidArgument, "etcdserver: request is too large".to_string())
        }
        Error::TooManyOps { .. } => {
            (Code::InvalidArgument, "etcdserver: too many operations in txn request".to_string())
        }
        Error::LeaseNotFound => (Code::NotFound, "etcdserver: requested lease not found".to_string()),
        Error::LeaseExists => (Code::FailedPrecondition, "etcdserver: lease already exists".to_string()),
        Error::LeaseTtlTooLarge { .. } => (Code::OutOfRange, "etcdserver: too large lease TTL".to_string()),
        Error::DuplicateKey => (Code::InvalidArgument, "etcdserver: duplicate key given in txn request".to_string()),
        Error::InvalidRange => (Code::InvalidArgument, format!("etcdserver: {e}")),
        Error::Compacted { .. } => {
            (Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted".to_string())
        }
        Error::FutureRevision { .. } => {
            (Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision".to_string())
        }
        Error::NoSpace(detail) => {
            // etcd's NOSPACE answer, word for word (its clients match it); unlike
            // etcd's alarm, writes resume by themselves once space is freed.
            tracing::warn!(%detail, "write refused: disk full");
            (Code::ResourceExhausted, "etcdserver: mvcc: database space exceeded".to_string())
        }
        Error::Poisoned(_) | Error::Io { .. } | Error::Locked(_) => (Code::Unavailable, format!("argus: {e}")),
        Error::Corrupt { .. } => (Code::DataLoss, format!("argus: {e}")),
        Error::Auth(a) => return crate::auth::status(a),
        _ => (Code::Internal, format!("argus: {e}")),
    };
    Status::new(code, msg)
}
