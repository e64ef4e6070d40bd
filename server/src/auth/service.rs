//! etcd's Auth service: enable/disable/status, authenticate, users and roles.
//! Passwords are bcrypt-hashed and verified on the KV pool, never on an io thread.
//! Once auth is enabled only root may call the management methods (etcd's
//! `needAdminPermission`); a user may get itself and the roles it has; Authenticate
//! and AuthStatus are open.

use std::sync::Arc;

use argus_engine::store::Store;
use tonic::{Request, Response, Status};

use super::engine::{self, AuthError, PermKind, Permission};
use super::{engine_status, status, AuthGate, EngineError};
use crate::proto::authpb;
use crate::proto::etcdserverpb as pb;
use crate::proto::etcdserverpb::auth_server::Auth;
use crate::Header;

/// The Auth service.
pub struct AuthService {
    /// `None` on a mirror: every call answers Unimplemented (README).
    gate: Option<Arc<AuthGate>>,
    store: Store,
    header: Header,
    pool: tokio::runtime::Handle,
}

type Answer<T> = Result<Response<T>, Status>;

impl AuthService {
    /// The Auth service of `gate`, answering with `store`'s revision in its
    /// headers and hashing on `pool` (the KV pool).
    pub fn new(gate: Option<Arc<AuthGate>>, store: Store, header: Header, pool: tokio::runtime::Handle) -> Self {
        AuthService { gate, store, header, pool }
    }

    /// The gate, or Unimplemented on a mirror.
    fn g(&self) -> Result<&Arc<AuthGate>, Status> {
        self.gate.as_ref().ok_or_else(|| crate::other::unimplemented("the Auth service on a mirror (argus mirror)"))
    }

    fn header(&self) -> Option<pb::ResponseHeader> {
        Some(self.header.at(self.store.current_revision()))
    }

    /// Runs an auth store call on the KV pool (it writes to the log).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&engine::AuthStore) -> Result<T, EngineError> + Send + 'static,
    ) -> Result<T, Status> {
        let gate = Arc::clone(self.g()?);
        crate::kv::run_blocking(&self.pool, move || f(gate.db()).map_err(engine_status)).await
    }
}

fn kind(t: i32) -> Result<PermKind, Status> {
    match authpb::permission::Type::try_from(t) {
        Ok(authpb::permission::Type::Read) => Ok(PermKind::Read),
        Ok(authpb::permission::Type::Write) => Ok(PermKind::Write),
        Ok(authpb::permission::Type::Readwrite) => Ok(PermKind::ReadWrite),
        Err(_) => Err(Status::invalid_argument(format!("argus: unknown permission type {t}"))),
    }
}

fn perm_type(k: PermKind) -> i32 {
    (match k {
        PermKind::Read => authpb::permission::Type::Read,
        PermKind::Write => authpb::permission::Type::Write,
        PermKind::ReadWrite => authpb::permission::Type::Readwrite,
    }) as i32
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(&self, req: Request<pb::AuthEnableRequest>) -> Answer<pb::AuthEnableResponse> {
        self.g()?.require_root(req.metadata(), req.extensions())?;
        self.blocking(|db| db.enable()).await?;
        Ok(Response::new(pb::AuthEnableResponse { header: self.header() }))
    }

    async fn auth_disable(&self, req: Request<pb::AuthDisableRequest>) -> Answer<pb::AuthDisableResponse> {
        self.g()?.require_root(req.metadata(), req.extensions())?;
        self.blocking(|db| db.disable()).await?;
        self.g()?.clear_tokens();
        Ok(Response::new(pb::AuthDisableResponse { header: self.header() }))
    }

    async fn auth_status(&self, _: Request<pb::AuthStatusRequest>) -> Answer<pb::AuthStatusResponse> {
        let db = self.g()?.db();
        Ok(Response::new(pb::AuthStatusResponse {
            header: self.header(),
            enabled: db.is_enabled(),
            auth_revision: db.revision(),
        }))
    }

    async fn authenticate(&self, req: Request<pb::AuthenticateRequest>) -> Answer<pb::AuthenticateResponse> {
        let r = req.into_inner();
        let gate = Arc::clone(self.g()?);
        let user = r.name.clone();
        // bcrypt takes tens of milliseconds: on the KV pool.
        crate::kv::run_blocking(&self.pool, move || {
            let db = gate.db();
            if !db.is_enabled() {
                return Err(status(&AuthError::NotEnabled));
            }
            let ok = db.password_hash(&r.name).is_some_and(|h| engine::verify_password(&r.password, &h));
            if !ok {
                return Err(status(&AuthError::AuthFailed));
            }
            Ok(())
        })
        .await?;
        let token = self.g()?.tokens().issue(&user);
        Ok(Response::new(pb::AuthenticateResponse { header: self.header(), token }))
    }

    async fn user_add(&self, req: Request<pb::AuthUserAddRequest>) -> Answer<pb::AuthUserAddResponse> {
        self.g()?.require_root(req.metadata(), req.extensions())?;
        let r = req.into_inner();
        let no_password = r.options.is_some_and(|o| o.no_password);
        self.blocking(move |db| {
            if r.name.is_empty() {
                return Err(AuthError::UserEmpty.into());
            }
            let hash = (!no_password).then(|| engine::hash_password(&r.password, engine::BCRYPT_COST));
            db.user_add(&r.name, hash)
        })
        .await?;
        Ok(Response::new(pb::AuthUserAddResponse { header: self.header() }))
    }

    async fn user_get(&self, req: Request<pb::AuthUserGetRequest>) -> Answer<pb::AuthUserGetResponse> {
        // etcd: root, or the user itself.
        let name = req.get_ref().name.clone();
        if let Err(e) = self.g()?.require_root(req.metadata(), req.extensions()) {
            match self.g()?.caller_if_any(req.metadata(), req.extensions()) {
                Ok(Some(c)) if c.user == name => {}
                _ => return Err(e),
            }
        }
        let u = self.g()?.db().user_get(&name).map_err(engine_status)?;
        Ok(Response::new(pb::AuthUserGetResponse { header: self.header(), roles: u.roles }))
    }

    async fn user_list(&self, req: Request<pb::AuthUserListRequest>) -> Answer<pb::AuthUserListResponse> {
        self.g()?.require_root(req.metadata(), req.extensions())?;
        Ok(Response::new(pb::AuthUserListResponse { header: self.header(), users: self.g()?.db().user_list() }))
    }

    async fn user_delete(&self, req: Request<pb::AuthUserDeleteRequest>) -> Answer<pb::AuthUserDeleteResponse> {
        self.g()?.require_root(req.metadata(), req.extensions())?;
        let name = req.into_inner().name;
        let n = name.clone();
        self.blocking(move |db| db.user_delete(&n)).await?;
        self.g()?.revoke_tokens_of(&name);
        Ok(Response::new(pb::AuthUserDeleteResponse { header: self.header() }))
    }

    async fn user_change_password(
        &self,
        req: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Answer<pb::AuthUserChangePasswordResponse> {
        self.g()?.require_root(req.metadata(), req.extensions())?;
        let r = req.into_inner();
        let name = r.name.clone();
        self.blocking(move |db| {
            // etcd looks the user up before it hashes.
            db.user_get(&r.name)?;
            db.user_change_password(&r.name, engine::hash_password(&r.password, engine::BCRYPT_COST))
        })
        .await?;
        self.g()?.revoke_tokens_of(&name);
        Ok(Response::new(pb::AuthUserChangePasswordResponse { header: self.header() }))
    }

    async fn user_grant_role(
        &self,
        req: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Answer<pb::AuthUserGrantRoleResponse> {
        self.g()?.require_root(req.metadata(), req.extensions())?;
        let r = req.into_inner();
        self.blocking(move |db| db.user_grant_role(&r.user, &r.role)).await?;
        Ok(Response::new(pb::AuthUserGrantRoleResponse { header: self.header() }))
    }

    async fn user_revoke_role(
        &self,
        req: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Answer<pb::AuthUserRevokeRoleResponse> {
        self.g()?.require_root(req.metadata(), req.extensions())?;
        let r = req.into_inner();
        self.blocking(move |db| db.user_revoke_role(&r.name, &r.role)).await?;
        Ok(Response::new(pb::AuthUserRevokeRoleResponse { header: self.header() }))
    }

    async fn role_add(&self, req: Request<pb::AuthRoleAddRequest>) -> Answer<pb::AuthRoleAddResponse> {
        self.g()?.require_root(req.metadata(), req.extensions())?;
        let r = req.into_inner();
        self.blocking(move |db| db.role_add(&r.name)).await?;
        Ok(Response::new(pb::AuthRoleAddResponse { header: self.header() }))
    }

    async fn role_get(&self, req: Request<pb::AuthRoleGetRequest>) -> Answer<pb::AuthRoleGetResponse> {
        // etcd: root, or a user with the role.
        let role = req.get_ref().role.clone();
        if let Err(e) = self.g()?.require_root(req.metadata(), req.extensions()) {
            match self.g()?.caller_if_any(req.metadata(), req.extensions()) {
                Ok(Some(c)) if self.g()?.db().user_get(&c.user).is_ok_and(|u| u.roles.contains(&role)) => {}
                _ => return Err(e),
            }
        }
        let info = self.g()?.db().role_get(&role).map_err(engine_status)?;
        let perm = info
            .permissions
            .into_iter()
            .map(|p| authpb::Permission { perm_type: perm_type(p.kind), key: p.key, range_end: p.range_end })
            .collect();
        Ok(Response::new(pb::AuthRoleGetResponse { header: self.header(), perm }))
    }

    async fn role_list(&self, req: Request<pb::AuthRoleListRequest>) -> Answer<pb::AuthRoleListResponse> {
        self.g()?.require_root(req.metadata(), req.extensions())?;
        Ok(Response::new(pb::AuthRoleListResponse { header: self.header(), roles: self.g()?.db().role_list() }))
    }

    async fn role_delete(&self, req: Request<pb::AuthRoleDeleteRequest>) -> Answer<pb::AuthRoleDeleteResponse> {
        self.g()?.require_root(req.metadata(), req.extensions())?;
        let r = req.into_inner();
        self.blocking(move |db| db.role_delete(&r.role)).await?;
        Ok(Response::new(pb::AuthRoleDeleteResponse { header: self.header() }))
    }

    async fn role_grant_permission(
        &self,
        req: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Answer<pb::AuthRoleGrantPermissionResponse> {
        self.g()?.require_root(req.metadata(), req.extensions())?;
        let r = req.into_inner();
        // etcd 3.4: a request without a permission is refused with this message.
        let p = r.perm.ok_or_else(|| Status::invalid_argument("etcdserver: permission not given"))?;
        let perm = Permission { kind: kind(p.perm_type)?, key: p.key, range_end: p.range_end };
        self.blocking(move |db| db.role_grant_permission(&r.name, perm)).await?;
        Ok(Response::new(pb::AuthRoleGrantPermissionResponse { header: self.header() }))
    }

    async fn role_revoke_permission(
        &self,
        req: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Answer<pb::AuthRoleRevokePermissionResponse> {
        self.g()?.require_root(req.metadata(), req.extensions())?;
        let r = req.into_inner();
        self.blocking(move |db| db.role_revoke_permission(&r.role, &r.key, &r.range_end)).await?;
        Ok(Response::new(pb::AuthRoleRevokePermissionResponse { header: self.header() }))
    }
}
