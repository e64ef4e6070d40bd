//! etcd's KV service (Range, Put, DeleteRange, Txn, Compact) on the store.
//!
//! Store calls may wait for an fsync, so each runs on a blocking pool of its own
//! ([`KvPool`], threads named `argus-kv`); the store itself lets concurrent writers
//! share one fsync (group commit).

use argus_engine::store::{
    Compare, CompareOp, CompareTarget, PutLease, RangeOptions, RangeResult, Store, TxnOp, TxnOpResult, TxnResult,
};
use argus_engine::KeySpan;
use std::sync::Arc;
use tonic::{Request, Response, Status};

use crate::auth::engine::Access;
use crate::auth::{self, AuthGate, Caller};
use crate::convert;
use crate::mirror::barrier::Barrier;
use crate::mirror::{forward, Mirror};
use crate::proto::etcdserverpb as pb;
use crate::proto::etcdserverpb::kv_server::Kv;
use crate::Header;

/// Most threads of the KV pool (tokio's default for a blocking pool, which the KV
/// calls used before they had a pool of their own). A write waiting for an fsync
/// holds one.
pub const KV_MAX_THREADS: usize = 512;

/// The blocking pool that KV calls run on, apart from the runtime that serves the
/// connections (whose workers are `argus-io`): its threads are named `argus-kv`, so
/// a CPU profile or `/proc/<pid>/task/*/comm` tells store work from wire work.
///
/// It is the blocking pool of a current-thread tokio runtime that is never driven:
/// blocking tasks need no scheduler, and their join handles are awaited from the
/// serving runtime.
pub struct KvPool {
    rt: Option<tokio::runtime::Runtime>,
}

impl KvPool {
    /// Starts the pool (threads are spawned on demand).
    ///
    /// # Errors
    ///
    /// When the runtime cannot be built.
    pub fn new() -> std::io::Result<KvPool> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .thread_name("argus-kv")
            .max_blocking_threads(KV_MAX_THREADS)
            .build()?;
        Ok(KvPool { rt: Some(rt) })
    }

    /// A handle to spawn blocking calls with (`handle.spawn_blocking`).
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.rt.as_ref().expect("the pool is running until dropped").handle().clone()
    }

    /// Opens (recovering) the store in `dir` on the pool.
    ///
    /// # Errors
    ///
    /// A sentence naming the directory and what failed.
    pub async fn open_store(
        &self,
        dir: &std::path::Path,
        opts: argus_engine::store::StoreOptions,
    ) -> Result<Store, String> {
        let d = dir.to_path_buf();
        self.handle()
            .spawn_blocking(move || Store::open(&d, opts))
            .await
            .map_err(|e| format!("open task failed: {e}"))?
            .map_err(|e| format!("cannot open data directory {}: {e}", dir.display()))
    }
}

impl Drop for KvPool {
    fn drop(&mut self) {
        // Not waiting: the pool may be dropped on an async task, and a call still
        // running finishes on its own.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// The KV service.
///
/// Requests above the receive limit never reach it: [`crate::limit`] refuses them
/// with etcd's status before they are read.
pub struct KvService {
    store: Store,
    header: Header,
    pool: tokio::runtime::Handle,
    /// Set on a mirror: writes go to the cluster, linearizable reads wait for it.
    mirror: Option<Arc<Mirror>>,
    /// The permission gate (`None`: no auth, as a mirror's).
    auth: Option<Arc<AuthGate>>,
}

impl KvService {
    /// A KV service on `store`, running its store calls on `pool` (see [`KvPool`]).
    pub fn new(store: Store, header: Header, pool: tokio::runtime::Handle) -> Self {
        KvService { store, header, pool, mirror: None, auth: None }
    }

    /// The KV service of a mirror (`Some`): Put, DeleteRange, Txn and Compact are
    /// forwarded to the cluster, and a linearizable Range is answered from the log
    /// once it holds the cluster's current revision ([`crate::mirror::barrier`]).
    #[must_use]
    pub fn mirror(mut self, mirror: Option<Arc<Mirror>>) -> Self {
        self.mirror = mirror;
        self
    }

    /// The KV service checking every call with `gate` before it does anything.
    #[must_use]
    pub fn auth(mut self, gate: Option<Arc<AuthGate>>) -> Self {
        self.auth = gate;
        self
    }

    /// The caller of `req` (`None`: auth is off), refused as etcd refuses it.
    fn caller<T>(&self, req: &Request<T>) -> Result<Option<Caller>, Status> {
        match &self.auth {
            Some(_) if req.extensions().get::<auth::Internal>().is_some() => Ok(None),
            Some(g) => g.caller(req.metadata(), req.extensions()),
            None => Ok(None),
        }
    }

    /// Checks `access` on the span as sent, when auth is on.
    fn check(&self, caller: Option<&Caller>, key: &[u8], end: &[u8], access: Access) -> Result<(), Status> {
        match &self.auth {
            Some(g) => auth::check_span(g, caller, key, end, access),
            None => Ok(()),
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        run_blocking(&self.pool, f).await
    }
}

/// Runs a store call `f` on `pool` (see [`KvPool`]) and awaits its answer.
pub(crate) async fn run_blocking<T: Send + 'static>(
    pool: &tokio::runtime::Handle,
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    pool.spawn_blocking(f).await.map_err(|e| Status::internal(format!("argus: task failed: {e}")))?
}

/// Whether a non-empty key's range end lies at or below it (etcd answers such a
/// range with nothing rather than an error); see [`KeySpan::parse`].
fn empty_range(key: &[u8], end: &[u8]) -> bool {
    matches!(KeySpan::parse(key, end), Ok(KeySpan::Empty))
}

fn range_options(r: &pb::RangeRequest) -> RangeOptions {
    RangeOptions {
        revision: r.revision.max(0) as u64,
        limit: r.limit.max(0) as usize,
        keys_only: r.keys_only,
        count_only: r.count_only,
    }
}

fn needs_post_processing(r: &pb::RangeRequest) -> bool {
    let sorted_by_key = r.sort_order() == pb::range_request::SortOrder::None
        || (r.sort_target() == pb::range_request::SortTarget::Key
            && r.sort_order() == pb::range_request::SortOrder::Ascend);
    !sorted_by_key
        || r.min_mod_revision > 0
        || r.max_mod_revision > 0
        || r.min_create_revision > 0
        || r.max_create_revision > 0
}

/// Applies sort and the revision filters of a range request, then its limit.
fn post_process(r: &pb::RangeRequest, mut res: RangeResult) -> RangeResult {
    use pb::range_request::{SortOrder, SortTarget};
    res.kvs.retain(|kv| {
        (r.min_mod_revision <= 0 || kv.mod_revision as i64 >= r.min_mod_revision)
            && (r.max_mod_revision <= 0 || kv.mod_revision as i64 <= r.max_mod_revision)
            && (r.min_create_revision <= 0 || kv.create_revision as i64 >= r.min_create_revision)
            && (r.max_create_revision <= 0 || kv.create_revision as i64 <= r.max_create_revision)
    });
    if r.sort_order() != SortOrder::None {
        let desc = r.sort_order() == SortOrder::Descend;
        let target = r.sort_target();
        // Ties keep key order either way, as etcd's output does.
        res.kvs.sort_by(|a, b| {
            let ord = match target {
                SortTarget::Key => a.key.cmp(&b.key),
                SortTarget::Version => a.version.cmp(&b.version),
                SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                SortTarget::Value => a.value.cmp(&b.value),
            };
            (if desc { ord.reverse() } else { ord }).then_with(|| a.key.cmp(&b.key))
        });
    }
    if r.limit > 0 && res.kvs.len() > r.limit as usize {
        res.kvs.truncate(r.limit as usize);
        res.more = true;
    }
    res
}

fn do_range(store: &Store, r: &pb::RangeRequest) -> Result<RangeResult, Status> {
    if empty_range(&r.key, &r.range_end) {
        if r.key.is_empty() {
            return Err(convert::status(argus_engine::Error::EmptyKey));
        }
        return Ok(RangeResult { revision: store.current_revision(), ..Default::default() });
    }
    if !needs_post_processing(r) {
        return store.range(&r.key, &r.range_end, range_options(r)).map_err(convert::status);
    }
    let mut opts = range_options(r);
    opts.limit = 0;
    let res = store.range(&r.key, &r.range_end, opts).map_err(convert::status)?;
    Ok(post_process(r, res))
}

fn range_response(h: &Header, res: RangeResult) -> pb::RangeResponse {
    range_response_with(Some(h.at(res.revision)), res)
}

/// The header of a response inside a txn: etcd fills in only the revision.
fn sub_header(revision: u64) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader { revision: revision as i64, ..Default::default() })
}

fn range_response_with(header: Option<pb::ResponseHeader>, res: RangeResult) -> pb::RangeResponse {
    pb::RangeResponse {
        header,
        kvs: res.kvs.iter().map(convert::kv).collect(),
        more: res.more,
        count: res.count as i64,
    }
}

fn put_op(p: &pb::PutRequest) -> Result<TxnOp, Status> {
    // etcd's checkRequestPut: `ignore_lease` with a lease is a contradiction; alone
    // it keeps the key's current lease (none is fine), and the key must exist.
    if p.ignore_lease && p.lease != 0 {
        return Err(Status::invalid_argument("etcdserver: lease is provided"));
    }
    let lease = match (p.ignore_lease, p.lease) {
        (true, _) => PutLease::Keep,
        (false, 0) => PutLease::None,
        (false, id) => PutLease::Attach(id),
    };
    if p.ignore_value {
        if !p.value.is_empty() {
            return Err(Status::invalid_argument("etcdserver: value is provided"));
        }
        return Ok(TxnOp::PutKeepValue { key: p.key.clone(), value: Vec::new(), prev_kv: p.prev_kv, lease });
    }
    Ok(TxnOp::Put { key: p.key.clone(), value: p.value.clone(), prev_kv: p.prev_kv, lease })
}

fn ops(list: &[pb::RequestOp]) -> Result<Vec<TxnOp>, Status> {
    use pb::request_op::Request as R;
    list.iter()
        .map(|op| match &op.request {
            Some(R::RequestRange(r)) => {
                Ok(TxnOp::Range { key: r.key.clone(), range_end: r.range_end.clone(), options: range_options(r) })
            }
            Some(R::RequestPut(p)) => put_op(p),
            Some(R::RequestDeleteRange(d)) => {
                Ok(TxnOp::DeleteRange { key: d.key.clone(), range_end: d.range_end.clone(), prev_kv: d.prev_kv })
            }
            Some(R::RequestTxn(t)) => {
                let (compares, success, failure) = txn_parts(t)?;
                Ok(TxnOp::Txn { compares, success, failure })
            }
            // etcd's answer to an op with no request (`checkRequestOp`).
            None => Err(Status::invalid_argument("etcdserver: key not found")),
        })
        .collect()
}

/// A txn's compares, success ops and failure ops, as the engine takes them.
type TxnParts = (Vec<Compare>, Vec<TxnOp>, Vec<TxnOp>);

/// The compares and branches of a txn request (nested or not) as the engine's.
fn txn_parts(t: &pb::TxnRequest) -> Result<TxnParts, Status> {
    let compares = t.compare.iter().map(compare).collect::<Result<Vec<_>, _>>()?;
    Ok((compares, ops(&t.success)?, ops(&t.failure)?))
}

fn compare(c: &pb::Compare) -> Result<Compare, Status> {
    use pb::compare::{CompareResult as R, CompareTarget as T, TargetUnion as U};
    let target = match (c.target(), &c.target_union) {
        (T::Version, Some(U::Version(v))) => CompareTarget::Version((*v).max(0) as u64),
        (T::Version, None) => CompareTarget::Version(0),
        (T::Create, Some(U::CreateRevision(v))) => CompareTarget::CreateRevision((*v).max(0) as u64),
        (T::Create, None) => CompareTarget::CreateRevision(0),
        (T::Mod, Some(U::ModRevision(v))) => CompareTarget::ModRevision((*v).max(0) as u64),
        (T::Mod, None) => CompareTarget::ModRevision(0),
        (T::Value, Some(U::Value(v))) => CompareTarget::Value(v.clone()),
        (T::Value, None) => CompareTarget::Value(Vec::new()),
        (T::Lease, Some(U::Lease(v))) => CompareTarget::Lease(*v),
        (T::Lease, None) => CompareTarget::Lease(0),
        _ => return Err(Status::invalid_argument("etcdserver: compare target does not match its value")),
    };
    let op = match c.result() {
        R::Equal => CompareOp::Equal,
        R::Greater => CompareOp::Greater,
        R::Less => CompareOp::Less,
        R::NotEqual => CompareOp::NotEqual,
    };
    Ok(Compare { key: c.key.clone(), range_end: c.range_end.clone(), target, op })
}

fn txn_response(h: &Header, t: TxnResult) -> pb::TxnResponse {
    txn_response_with(Some(h.at(t.revision)), t)
}

fn txn_response_with(header: Option<pb::ResponseHeader>, t: TxnResult) -> pb::TxnResponse {
    use pb::response_op::Response as R;
    let responses = t
        .responses
        .into_iter()
        .map(|r| pb::ResponseOp {
            response: Some(match r {
                TxnOpResult::Range(rr) => R::ResponseRange(range_response_with(sub_header(rr.revision), rr)),
                TxnOpResult::Put(p) => R::ResponsePut(pb::PutResponse {
                    header: sub_header(p.revision),
                    prev_kv: p.prev_kv.as_ref().map(convert::kv),
                }),
                TxnOpResult::DeleteRange(d) => R::ResponseDeleteRange(pb::DeleteRangeResponse {
                    header: sub_header(d.revision),
                    deleted: d.deleted as i64,
                    prev_kvs: d.prev_kvs.iter().map(convert::kv).collect(),
                }),
                // etcd 3.4 leaves a nested txn's header empty (revision 0): only the
                // answers inside it carry revisions.
                TxnOpResult::Txn(t) => R::ResponseTxn(txn_response_with(Some(pb::ResponseHeader::default()), t)),
            }),
        })
        .collect();
    pb::TxnResponse { header, succeeded: t.succeeded, responses }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, req: Request<pb::RangeRequest>) -> Result<Response<pb::RangeResponse>, Status> {
        let caller = self.caller(&req)?;
        let (store, h, r) = (self.store.clone(), self.header, req.into_inner());
        self.check(caller.as_ref(), &r.key, &r.range_end, Access::Read)?;
        if let Some(m) = self.mirror.as_ref().filter(|_| !r.serializable) {
            Barrier::wait(m).await?;
        }
        self.blocking(move || Ok(Response::new(range_response(&h, do_range(&store, &r)?)))).await
    }

    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let caller = self.caller(&req)?;
        let (store, h, p) = (self.store.clone(), self.header, req.into_inner());
        // A put names one key (its range end is empty); prev_kv reads it too.
        self.check(caller.as_ref(), &p.key, &[], Access::Write)?;
        if p.prev_kv {
            self.check(caller.as_ref(), &p.key, &[], Access::Read)?;
        }
        if let Some(m) = &self.mirror {
            return forward::put(m, p).await;
        }
        self.blocking(move || {
            let op = put_op(&p)?;
            let t = store.txn(&[], &[op], &[]).map_err(convert::status)?;
            let Some(TxnOpResult::Put(r)) = t.responses.into_iter().next() else {
                return Err(Status::internal("argus: a put answered without a put result"));
            };
            Ok(Response::new(pb::PutResponse {
                header: Some(h.at(r.revision)),
                prev_kv: r.prev_kv.as_ref().map(convert::kv),
            }))
        })
        .await
    }

    async fn delete_range(
        &self,
        req: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let caller = self.caller(&req)?;
        let (store, h, d) = (self.store.clone(), self.header, req.into_inner());
        self.check(caller.as_ref(), &d.key, &d.range_end, Access::Write)?;
        if d.prev_kv {
            self.check(caller.as_ref(), &d.key, &d.range_end, Access::Read)?;
        }
        if let Some(m) = &self.mirror {
            return forward::delete_range(m, d).await;
        }
        self.blocking(move || {
            if empty_range(&d.key, &d.range_end) && !d.key.is_empty() {
                return Ok(Response::new(pb::DeleteRangeResponse {
                    header: Some(h.at(store.current_revision())),
                    ..Default::default()
                }));
            }
            let r = store.delete_range(&d.key, &d.range_end, d.prev_kv).map_err(convert::status)?;
            Ok(Response::new(pb::DeleteRangeResponse {
                header: Some(h.at(r.revision)),
                deleted: r.deleted as i64,
                prev_kvs: r.prev_kvs.iter().map(convert::kv).collect(),
            }))
        })
        .await
    }

    async fn txn(&self, req: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let caller = self.caller(&req)?;
        let (store, h, t) = (self.store.clone(), self.header, req.into_inner());
        if let Some(g) = &self.auth {
            auth::check_txn(g, caller.as_ref(), &t)?;
        }
        if let Some(m) = &self.mirror {
            return forward::txn(m, t).await;
        }
        self.blocking(move || {
            let (compares, success, failure) = txn_parts(&t)?;
            let r = store.txn(&compares, &success, &failure).map_err(convert::status)?;
            Ok(Response::new(txn_response(&h, r)))
        })
        .await
    }

    async fn compact(&self, req: Request<pb::CompactionRequest>) -> Result<Response<pb::CompactionResponse>, Status> {
        // Root only (etcd 3.4 checks nothing here: Argus is stricter).
        let caller = self.caller(&req)?;
        if let Some(g) = &self.auth {
            if !g.is_root(caller.as_ref()) {
                return Err(auth::status(&auth::engine::AuthError::PermissionDenied));
            }
        }
        let (store, h, c) = (self.store.clone(), self.header, req.into_inner());
        if let Some(m) = &self.mirror {
            let answer = forward::compact(m, c).await?;
            m.compacted_upstream(&store, c.revision.max(0) as u64).await?;
            return Ok(answer);
        }
        self.blocking(move || {
            if c.revision < 0 {
                // Below etcd's lowest compaction revision (-1, a store never compacted).
                let compact_revision = store.compact_revision();
                return Err(convert::status(argus_engine::Error::Compacted { requested: 0, compact_revision }));
            }
            store.compact(c.revision as u64).map_err(convert::status)?;
            Ok(Response::new(pb::CompactionResponse { header: Some(h.at(store.current_revision())) }))
        })
        .await
    }
}
