//! etcd's Lease service on the store's leases (`argus_engine::store::Store`'s
//! lease calls; expiry runs in the engine's `argus-lease` thread).
//!
//! Grant and revoke write to the log (and wait for its fsync), so they run on the
//! KV pool; keep-alives, time-to-live and listing only touch the lease table and
//! answer on the io thread. A keep-alive stream answers each request in order; a
//! lease that does not exist (or has expired) is answered with TTL 0, as etcd
//! does, and the stream goes on.

use std::pin::Pin;
use std::sync::Arc;

use argus_engine::store::Store;
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::engine::Access;
use crate::auth::{AuthGate, Caller};
use crate::convert;
use crate::mirror::{forward, Mirror};
use crate::proto::etcdserverpb as pb;
use crate::proto::etcdserverpb::lease_server::Lease;
use crate::Header;

/// The Lease service.
pub struct LeaseService {
    store: Store,
    header: Header,
    pool: tokio::runtime::Handle,
    /// Set on a mirror: every call goes to the cluster, whose leases they are.
    mirror: Option<Arc<Mirror>>,
    /// The permission gate (`None`: no auth).
    auth: Option<Arc<AuthGate>>,
}

impl LeaseService {
    /// A Lease service on `store`, running grants and revokes on `pool` (the KV pool).
    pub fn new(store: Store, header: Header, pool: tokio::runtime::Handle) -> Self {
        LeaseService { store, header, pool, mirror: None, auth: None }
    }

    /// The Lease service of a mirror (`Some`): every call is forwarded to the
    /// cluster and answered with its response.
    #[must_use]
    pub fn mirror(mut self, mirror: Option<Arc<Mirror>>) -> Self {
        self.mirror = mirror;
        self
    }

    /// The Lease service checking every call with `gate`: with auth on, each
    /// needs an authenticated user (etcd 3.4 asks for none: Argus is stricter).
    #[must_use]
    pub fn auth(mut self, gate: Option<Arc<AuthGate>>) -> Self {
        self.auth = gate;
        self
    }

    /// The caller of `req` (`None`: auth off); refused without one.
    fn caller<T>(&self, req: &Request<T>) -> Result<Option<Caller>, Status> {
        match &self.auth {
            Some(g) => g.caller(req.metadata(), req.extensions()),
            None => Ok(None),
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        crate::kv::run_blocking(&self.pool, f).await
    }

    fn header(&self) -> Option<pb::ResponseHeader> {
        Some(self.header.at(self.store.current_revision()))
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        self.caller(&req)?;
        let r = req.into_inner();
        if let Some(m) = &self.mirror {
            return forward::lease_grant(m, r).await;
        }
        let store = self.store.clone();
        let g = self.blocking(move || store.grant_lease(r.id, r.ttl).map_err(convert::status)).await?;
        Ok(Response::new(pb::LeaseGrantResponse { header: self.header(), id: g.id, ttl: g.ttl, error: String::new() }))
    }

    async fn lease_revoke(
        &self,
        req: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let caller = self.caller(&req)?;
        if let Some(m) = &self.mirror {
            return forward::lease_revoke(m, req.into_inner()).await;
        }
        let id = req.into_inner().id;
        if let (Some(g), Some(c)) = (&self.auth, &caller) {
            // Revoking deletes the lease's keys: write on every one (as etcd).
            if let Ok(s) = self.store.lease_time_to_live(id, true) {
                for k in &s.keys {
                    g.require(Some(c), k, &[], Access::Write)?;
                }
            }
        }
        let store = self.store.clone();
        let rev = self.blocking(move || store.revoke_lease(id).map_err(convert::status)).await?;
        Ok(Response::new(pb::LeaseRevokeResponse { header: Some(self.header.at(rev)) }))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        self.caller(&req)?;
        if let Some(m) = &self.mirror {
            return Ok(Response::new(forward::lease_keep_alive(m, req.into_inner()).await?));
        }
        // Checked again on every request: a token revoked since (password change,
        // user deleted, auth disabled and enabled again), or auth enabled on a
        // stream opened without credentials, ends the stream with etcd's status.
        let recheck = self.auth.clone().map(|g| {
            let creds = g.credentials(req.metadata(), req.extensions());
            (g, creds)
        });
        let store = self.store.clone();
        let header = self.header;
        let out = req.into_inner().map(move |r| {
            let r = r?;
            if let Some((g, creds)) = &recheck {
                g.caller_of(creds)?;
            }
            // etcd: a lease that is not found is answered with TTL 0, not an error.
            let ttl = store.keep_alive(r.id).unwrap_or(0);
            Ok(pb::LeaseKeepAliveResponse { header: Some(header.at(store.current_revision())), id: r.id, ttl })
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let caller = self.caller(&req)?;
        let r = req.into_inner();
        if let Some(m) = &self.mirror {
            return forward::lease_time_to_live(m, r).await;
        }
        if let (Some(g), Some(c), true) = (&self.auth, &caller, r.keys) {
            // The keys are listed only to a caller that may read every one (etcd
            // 3.4 lists them to anyone: Argus is stricter).
            if let Ok(s) = self.store.lease_time_to_live(r.id, true) {
                for k in &s.keys {
                    g.require(Some(c), k, &[], Access::Read)?;
                }
            }
        }
        // etcd answers a lease that is not found with TTL -1, not an error.
        let resp = match self.store.lease_time_to_live(r.id, r.keys) {
            Ok(s) => pb::LeaseTimeToLiveResponse {
                header: self.header(),
                id: r.id,
                ttl: s.remaining,
                granted_ttl: s.granted,
                keys: s.keys,
            },
            Err(_) => pb::LeaseTimeToLiveResponse { header: self.header(), id: r.id, ttl: -1, ..Default::default() },
        };
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        req: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        self.caller(&req)?;
        if let Some(m) = &self.mirror {
            return forward::lease_leases(m, req.into_inner()).await;
        }
        let leases = self.store.lease_ids().into_iter().map(|id| pb::LeaseStatus { id }).collect();
        Ok(Response::new(pb::LeaseLeasesResponse { header: self.header(), leases }))
    }
}
