//! Fuzz target: the server's request handling (`server/src/kv.rs`,
//! `server/src/watch.rs`, `server/src/wire`): arbitrary bytes decoded as etcd's
//! protobuf requests and handed to the real services, as tonic hands them, on a
//! fresh in-memory store (`MemStorage`) per input.
//!
//! The input is a sequence of operations, each `tag: u8, len: u16 LE, payload`:
//!
//! | `tag % 6` | payload |
//! |---|---|
//! | 0 | a `RangeRequest` → `Kv::range` |
//! | 1 | a `PutRequest` → `Kv::put` |
//! | 2 | a `DeleteRangeRequest` → `Kv::delete_range` |
//! | 3 | a `TxnRequest` → `Kv::txn` |
//! | 4 | a `CompactionRequest` → `Kv::compact` |
//! | 5 | a Watch stream: the payload is `len: u8, WatchRequest` messages, each sent as a gRPC message (with `tag & 0x80`: the payload is the raw request body, unframed) |
//!
//! Payloads that do not decode as their message are skipped (prost's decoder is not
//! what is under test; the Watch stream's own decoding is, through the raw body).
//!
//! What must hold:
//! * no panic, no hang: a Watch stream whose client half-closed ends (trailers)
//!   within 20 s, whatever it was asked;
//! * a KV call answers OK or one of the statuses etcd gives for a bad request
//!   (InvalidArgument, OutOfRange, NotFound, Unimplemented, ResourceExhausted),
//!   never Internal, Unknown, Unavailable or DataLoss (the store is in memory and
//!   healthy);
//! * a successful write's header revision is the store's revision after it, and the
//!   revision never goes back; a range answers only keys in its range, at most
//!   `limit` of them;
//! * every Watch response decodes, names a watch id, and a watcher's events never
//!   go back in revision nor lie beyond the store's revision.

#![no_main]
// Options structs are built as `let mut o = X::default(); o.a = ..;`, as in the root
// workspace (whose lints this separate workspace does not inherit).
#![allow(clippy::field_reassign_with_default)]

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use argus_engine::log::MemStorage;
use argus_engine::store::{Store, StoreOptions};
use argus_engine::watch::{WatchHub, WatchOptions};
use argus_server::kv::{KvPool, KvService};
use argus_server::proto::etcdserverpb as pb;
use argus_server::proto::etcdserverpb::kv_server::Kv;
use argus_server::watch::{WatchLimits, WatchService, WATCH_PATH};
use argus_server::Header;
use bytes::Bytes;
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::{Code, Request};
use tower_service::Service;

/// Largest request, as the server's default (etcd's 1.5 MiB), and its receive limit.
const MAX_REQUEST: usize = 1536 * 1024;
const MAX_RECV: usize = MAX_REQUEST + 512 * 1024;

struct Shared {
    rt: tokio::runtime::Runtime,
    pool: KvPool,
}

/// The runtime and KV pool, shared by every input (they hold no state of a store).
fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| Shared {
        rt: tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime"),
        pool: KvPool::new().expect("KV pool"),
    })
}

/// One input's server: a fresh store, and a watch hub once a Watch stream needs it.
struct Server {
    store: Store,
    kv: KvService,
    hub: Option<Arc<WatchHub>>,
    last_rev: u64,
}

impl Server {
    fn new() -> Server {
        let mut opts = StoreOptions::default();
        opts.max_request_bytes = MAX_REQUEST;
        opts.max_key_bytes = MAX_REQUEST;
        opts.max_value_bytes = MAX_REQUEST;
        // Segments of 4 MiB, not 64: a fresh store per input stays cheap.
        opts.log.segment_size = 4 << 20;
        let store = Store::open_storage(Arc::new(MemStorage::new()), opts).expect("open a store in memory");
        let kv = KvService::new(store.clone(), Header::default(), shared().pool.handle());
        let last_rev = store.current_revision();
        Server { store, kv, hub: None, last_rev }
    }

    fn hub(&mut self) -> Arc<WatchHub> {
        let store = self.store.clone();
        Arc::clone(self.hub.get_or_insert_with(|| {
            let mut o = WatchOptions::default();
            o.engine_threads = 1;
            Arc::new(WatchHub::new(store, o))
        }))
    }

    /// The revision never goes back; returns it.
    fn revision(&mut self) -> u64 {
        let rev = self.store.current_revision();
        assert!(rev >= self.last_rev, "revision went back from {} to {rev}", self.last_rev);
        assert!(self.store.compact_revision() <= rev, "compacted beyond the revision");
        self.last_rev = rev;
        rev
    }
}

/// A KV call's outcome: OK, or one of the statuses a bad request gets.
fn check_status<T>(what: &str, r: &Result<T, tonic::Status>) {
    if let Err(s) = r {
        assert!(
            matches!(
                s.code(),
                Code::InvalidArgument
                    | Code::OutOfRange
                    | Code::NotFound
                    | Code::Unimplemented
                    | Code::ResourceExhausted
                    | Code::FailedPrecondition
            ),
            "{what}: unexpected status {s:?}"
        );
    }
}

fn header_rev(h: &Option<pb::ResponseHeader>) -> u64 {
    h.as_ref().expect("a response header").revision as u64
}

fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    match end {
        [] => key == start,
        [0] => key >= start,
        _ => key >= start && key < end,
    }
}

fn range(s: &mut Server, r: pb::RangeRequest) {
    let res = shared().rt.block_on(s.kv.range(Request::new(r.clone())));
    check_status("range", &res);
    if let Ok(resp) = res {
        let resp = resp.into_inner();
        let rev = s.revision();
        assert!(header_rev(&resp.header) <= rev);
        // An empty key reads from "\0" only with a range end; etcd's rules.
        let start: &[u8] = if r.key.is_empty() { &[0] } else { &r.key };
        for kv in &resp.kvs {
            assert!(in_range(&kv.key, start, &r.range_end), "range answered key {:?} outside its range", kv.key);
        }
        if r.limit > 0 {
            assert!(resp.kvs.len() as i64 <= r.limit, "range answered more than its limit");
        }
        if !r.count_only {
            assert!(resp.count >= resp.kvs.len() as i64, "count below the keys answered");
        }
    }
}

/// A write (put, delete, txn): on success its header is the store's revision.
fn write<T>(s: &mut Server, what: &str, res: Result<tonic::Response<T>, tonic::Status>, header: impl Fn(&T) -> u64) {
    check_status(what, &res);
    let rev = s.revision();
    if let Ok(resp) = res {
        assert_eq!(header(resp.get_ref()), rev, "{what}: header revision is not the store's");
    }
}

/// A Watch stream with `body` as everything the client sends, then half-closed.
fn watch(s: &mut Server, body: Bytes) {
    let hub = s.hub();
    // The server's defaults for the stream limits (see argus_server::serve).
    let limits =
        WatchLimits { max_streams: 100_000, max_watchers: 1_000_000, max_owed: 256, overflow: 256 + 2 * 100_000 };
    let mut svc =
        WatchService::new(hub, Header::default(), MAX_REQUEST + 512 * 1024, MAX_RECV, limits, Default::default());
    let req = http::Request::builder()
        .method(http::Method::POST)
        .uri(WATCH_PATH)
        .header("content-type", "application/grpc")
        .body(tonic::body::Body::new(http_body_util::Full::new(body)))
        .expect("a request");
    let rt = &shared().rt;
    let resp = rt.block_on(async { svc.call(req).await }).expect("the service answers");
    let collected = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(20), resp.into_body().collect()).await })
        .expect("a half-closed Watch stream ends")
        .expect("the body does not fail");
    let trailers = collected.trailers().cloned();
    let data = collected.to_bytes();
    assert!(
        trailers.as_ref().is_some_and(|t| t.contains_key("grpc-status")),
        "the stream ends with a grpc-status trailer: {trailers:?}"
    );
    let rev = s.revision();
    let mut last: HashMap<i64, i64> = HashMap::new();
    let mut rest = &data[..];
    while !rest.is_empty() {
        assert!(rest.len() >= 5, "a truncated gRPC message header");
        assert_eq!(rest[0], 0, "responses are not compressed");
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        assert!(rest.len() >= 5 + len, "a truncated gRPC message");
        let r = pb::WatchResponse::decode(&rest[5..5 + len]).expect("a response that decodes");
        rest = &rest[5 + len..];
        for e in &r.events {
            let kv = e.kv.as_ref().expect("an event has a kv");
            assert!(kv.mod_revision as u64 <= rev, "an event beyond the store's revision");
            let prev = last.insert(r.watch_id, kv.mod_revision).unwrap_or(0);
            assert!(kv.mod_revision >= prev, "watch {}: events went back in revision", r.watch_id);
        }
    }
}

/// Frames each `len: u8, bytes` piece of `payload` as one gRPC message.
fn framed(mut payload: &[u8]) -> Bytes {
    let mut out = Vec::new();
    while let Some((&n, rest)) = payload.split_first() {
        let n = (n as usize).min(rest.len());
        let (msg, rest) = rest.split_at(n);
        if pb::WatchRequest::decode(msg).is_ok() {
            out.push(0);
            out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
            out.extend_from_slice(msg);
        }
        payload = rest;
    }
    Bytes::from(out)
}

fuzz_target!(|data: &[u8]| {
    let mut s = Server::new();
    let mut input = data;
    while input.len() >= 3 {
        let tag = input[0];
        let len = (u16::from_le_bytes([input[1], input[2]]) as usize).min(input.len() - 3);
        let payload = &input[3..3 + len];
        input = &input[3 + len..];
        let rt = &shared().rt;
        match tag % 6 {
            0 => {
                if let Ok(r) = pb::RangeRequest::decode(payload) {
                    range(&mut s, r);
                }
            }
            1 => {
                if let Ok(r) = pb::PutRequest::decode(payload) {
                    let res = rt.block_on(s.kv.put(Request::new(r)));
                    write(&mut s, "put", res, |r| header_rev(&r.header));
                }
            }
            2 => {
                if let Ok(r) = pb::DeleteRangeRequest::decode(payload) {
                    let res = rt.block_on(s.kv.delete_range(Request::new(r)));
                    write(&mut s, "delete", res, |r| header_rev(&r.header));
                }
            }
            3 => {
                if let Ok(r) = pb::TxnRequest::decode(payload) {
                    let res = rt.block_on(s.kv.txn(Request::new(r)));
                    write(&mut s, "txn", res, |r| header_rev(&r.header));
                }
            }
            4 => {
                if let Ok(r) = pb::CompactionRequest::decode(payload) {
                    let res = rt.block_on(s.kv.compact(Request::new(r)));
                    check_status("compact", &res);
                    s.revision();
                }
            }
            _ => {
                let body = if tag & 0x80 != 0 { Bytes::copy_from_slice(payload) } else { framed(payload) };
                watch(&mut s, body);
            }
        }
    }
});
