//! The gateway's paths: etcd 3.4's, each under `/v3/` and `/v3beta/` (3.4 serves
//! both; `/v3alpha/` is gone), POST only, plus `GET /version` and `GET /health`.
//!
//! A path is routed to a call of the service implementation given to the
//! [`Gateway`] for it, by the same trait method a gRPC client reaches:
//!
//! | path (after `/v3/`) | call |
//! | --- | --- |
//! | `kv/range`, `kv/put`, `kv/deleterange`, `kv/txn`, `kv/compaction` | `Kv` |
//! | `watch` | the Watch service's stream ([`super::watch`]) |
//! | `lease/grant`, `lease/revoke`, `lease/keepalive`, `lease/timetolive`, `lease/leases`; `kv/lease/revoke`, `kv/lease/timetolive`, `kv/lease/leases` | `Lease` |
//! | `cluster/member/add`, `…/remove`, `…/update`, `…/list`, `…/promote` | `Cluster` |
//! | `maintenance/alarm`, `…/status`, `…/defragment`, `…/hash`, `…/snapshot`, `…/transfer-leadership` | `Maintenance` |
//! | `auth/enable`, `auth/disable`, `auth/authenticate`, `auth/user/{add,get,list,delete,changepw,grant,revoke}`, `auth/role/{add,get,list,delete,grant,revoke}` | `Auth` |
//!
//! As in etcd 3.4, `maintenance/hash` is `Hash` (its `HashKV` was declared on the
//! same path, so the gateway never reached it) and there is no `auth/status` or
//! `maintenance/downgrade`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use argus_engine::watch::WatchHub;
use futures::future::BoxFuture;
use http::header::HeaderValue;
use http::{Method, Response, StatusCode};
use tonic::body::Body;

use super::errors;
use super::stream;
use crate::proto::etcdserverpb as pb;
use crate::proto::etcdserverpb::{auth_server, cluster_server, kv_server, lease_server, maintenance_server};
use crate::watch::WatchService;

type Handler = Box<dyn Fn(http::Request<Body>) -> BoxFuture<'static, Response<Body>> + Send + Sync>;
type Check = Box<dyn Fn() -> BoxFuture<'static, bool> + Send + Sync>;

/// The HTTP/JSON gateway: answers every request that is not gRPC (see the
/// [module documentation](super)). Built with the Watch service, then given each
/// service implementation the gRPC server registers (a path whose service it was
/// not given is not found).
pub struct Gateway {
    routes: HashMap<&'static str, Handler>,
    hub: Arc<WatchHub>,
    /// A request that must succeed for `/health` (a KV range).
    health: Option<Check>,
    max_recv: usize,
}

/// How long `/health` waits for its range request.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Registers unary calls of `$svc` (an `Arc` of a service implementation).
macro_rules! unary {
    ($gw:ident, $svc:ident, [$($path:literal => $method:ident),* $(,)?]) => {
        $(
            let svc = Arc::clone(&$svc);
            let max = $gw.max_recv;
            $gw.add($path, move |req| {
                let svc = Arc::clone(&svc);
                Box::pin(async move { stream::unary(req, max, |r| async move { svc.$method(r).await }).await })
            });
        )*
    };
}

impl Gateway {
    /// A gateway with the Watch service `watch` (whose engine `hub` also tells
    /// `/health`); requests above `max_recv_bytes` encoded are refused with etcd's
    /// status, as the gRPC server refuses them.
    pub fn new(watch: WatchService, hub: Arc<WatchHub>, max_recv_bytes: usize) -> Gateway {
        let mut gw = Gateway { routes: HashMap::new(), hub, health: None, max_recv: max_recv_bytes };
        let max = gw.max_recv;
        gw.add("watch", move |req| Box::pin(super::watch::watch(watch.clone(), req, max)));
        gw
    }

    fn add(
        &mut self,
        path: &'static str,
        handler: impl Fn(http::Request<Body>) -> BoxFuture<'static, Response<Body>> + Send + Sync + 'static,
    ) {
        self.routes.insert(path, Box::new(handler));
    }

    /// Routes `kv/*` to `kv`, which `/health` also asks.
    pub fn kv<K: kv_server::Kv>(mut self, kv: Arc<K>) -> Self {
        let gw = &mut self;
        unary!(gw, kv, [
            "kv/range" => range,
            "kv/put" => put,
            "kv/deleterange" => delete_range,
            "kv/txn" => txn,
            "kv/compaction" => compact,
        ]);
        // etcd's check is a read through consensus; here, a read of the store.
        gw.health = Some(Box::new(move || {
            let kv = Arc::clone(&kv);
            Box::pin(async move {
                let req = pb::RangeRequest { key: b"health".to_vec(), keys_only: true, limit: 1, ..Default::default() };
                let mut req = tonic::Request::new(req);
                req.extensions_mut().insert(crate::auth::Internal);
                matches!(tokio::time::timeout(HEALTH_TIMEOUT, kv.range(req)).await, Ok(Ok(_)))
            })
        }));
        self
    }

    /// Routes `lease/*` (and etcd 3.4's `kv/lease/*` aliases) to `lease`.
    pub fn lease<L: lease_server::Lease>(mut self, lease: Arc<L>) -> Self {
        let gw = &mut self;
        unary!(gw, lease, [
            "lease/grant" => lease_grant,
            "lease/revoke" => lease_revoke,
            "kv/lease/revoke" => lease_revoke,
            "lease/timetolive" => lease_time_to_live,
            "kv/lease/timetolive" => lease_time_to_live,
            "lease/leases" => lease_leases,
            "kv/lease/leases" => lease_leases,
        ]);
        let max = gw.max_recv;
        gw.add("lease/keepalive", move |req| {
            let svc = Arc::clone(&lease);
            Box::pin(async move { stream::bidi(req, max, |r| async move { svc.lease_keep_alive(r).await }).await })
        });
        self
    }

    /// Routes `cluster/member/*` to `cluster`.
    pub fn cluster<C: cluster_server::Cluster>(mut self, cluster: Arc<C>) -> Self {
        let gw = &mut self;
        unary!(gw, cluster, [
            "cluster/member/add" => member_add,
            "cluster/member/remove" => member_remove,
            "cluster/member/update" => member_update,
            "cluster/member/list" => member_list,
            "cluster/member/promote" => member_promote,
        ]);
        self
    }

    /// Routes `maintenance/*` to `maintenance`.
    pub fn maintenance<M: maintenance_server::Maintenance>(mut self, maintenance: Arc<M>) -> Self {
        let gw = &mut self;
        unary!(gw, maintenance, [
            "maintenance/alarm" => alarm,
            "maintenance/status" => status,
            "maintenance/defragment" => defragment,
            "maintenance/hash" => hash,
            "maintenance/transfer-leadership" => move_leader,
        ]);
        let max = gw.max_recv;
        gw.add("maintenance/snapshot", move |req| {
            let svc = Arc::clone(&maintenance);
            Box::pin(async move { stream::server_streaming(req, max, |r| async move { svc.snapshot(r).await }).await })
        });
        self
    }

    /// Routes `auth/*` to `auth`.
    pub fn auth<A: auth_server::Auth>(mut self, auth: Arc<A>) -> Self {
        let gw = &mut self;
        unary!(gw, auth, [
            "auth/enable" => auth_enable,
            "auth/disable" => auth_disable,
            "auth/authenticate" => authenticate,
            "auth/user/add" => user_add,
            "auth/user/get" => user_get,
            "auth/user/list" => user_list,
            "auth/user/delete" => user_delete,
            "auth/user/changepw" => user_change_password,
            "auth/user/grant" => user_grant_role,
            "auth/user/revoke" => user_revoke_role,
            "auth/role/add" => role_add,
            "auth/role/get" => role_get,
            "auth/role/list" => role_list,
            "auth/role/delete" => role_delete,
            "auth/role/grant" => role_grant_permission,
            "auth/role/revoke" => role_revoke_permission,
        ]);
        self
    }

    /// The answer to `req` (anything but gRPC).
    pub fn handle(&self, req: http::Request<Body>) -> BoxFuture<'static, Response<Body>> {
        let ready = |r: Response<Body>| -> BoxFuture<'static, Response<Body>> { Box::pin(std::future::ready(r)) };
        // etcd's CORS handler answers every preflight itself.
        if req.method() == Method::OPTIONS {
            let mut r = Response::new(Body::empty());
            errors::cors(r.headers_mut());
            return ready(r);
        }
        let path = req.uri().path();
        match path {
            "/version" | "/health" if req.method() != Method::GET => {
                let mut r = errors::method_not_allowed();
                r.headers_mut().insert(http::header::ALLOW, HeaderValue::from_static("GET"));
                return ready(r);
            }
            "/version" => return ready(version()),
            "/health" => return self.health(),
            // Go's ServeMux redirects a subtree's root without its slash.
            "/v3" => {
                let mut r = Response::new(Body::empty());
                *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
                errors::cors(r.headers_mut());
                r.headers_mut().insert(http::header::LOCATION, HeaderValue::from_static("/v3/"));
                return ready(r);
            }
            _ => {}
        }
        let Some(rest) = path.strip_prefix("/v3/").or_else(|| path.strip_prefix("/v3beta/")) else {
            return ready(errors::no_page());
        };
        match self.routes.get(rest) {
            Some(handler) if req.method() == Method::POST => handler(req),
            Some(_) => ready(errors::method_not_allowed()),
            None => ready(errors::not_found()),
        }
    }

    /// `GET /health`: etcd 3.4's body; unhealthy (503) once the watch engine has
    /// failed or while a read of the store fails.
    fn health(&self) -> BoxFuture<'static, Response<Body>> {
        let failed = self.hub.failure().is_some();
        let check = self.health.as_ref().map(|c| c());
        Box::pin(async move {
            let ok = !failed
                && match check {
                    Some(c) => c.await,
                    None => true,
                };
            let (status, body) = if ok {
                (StatusCode::OK, r#"{"health":"true"}"#)
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, r#"{"health":"false"}"#)
            };
            errors::plain(status, "text/plain; charset=utf-8", body)
        })
    }
}

/// `GET /version`: the etcd API version Argus serves, dotted, as both the server's
/// and the cluster's (clients pick the `/v3/` paths from it).
fn version() -> Response<Body> {
    let body = format!(r#"{{"etcdserver":"{v}","etcdcluster":"{v}"}}"#, v = crate::ETCD_API_VERSION);
    errors::plain(StatusCode::OK, "application/json", body)
}
