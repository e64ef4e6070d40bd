//! etcd's authentication and permissions in the server: the Auth service
//! ([`AuthService`]), etcd's simple tokens ([`TokenStore`]), and the gate
//! ([`AuthGate`]) that the KV, Watch, Lease and Maintenance services ask before
//! they do anything.
//!
//! The users, roles, permissions and the enabled flag live in the engine's durable
//! auth store (`argus_engine::auth`); tokens live here, in memory, as etcd's simple
//! tokens do (a restart invalidates them). With auth disabled every check is one
//! atomic load.
//!
//! Checks are made on the raw `key` / `range_end` a client sent (empty: one key,
//! `"\0"`: every key from `key` on, `range_end <= key`: nothing), never on a
//! rewritten range. Where etcd 3.4 is lax Argus is stricter: every op of a nested
//! txn is checked, `Compact` needs root, the lease calls need a user when auth is
//! on, `LeaseTimeToLive` with keys needs read on each key, and watchers are
//! re-checked (and canceled) when the auth state changes.

mod service;
mod tokens;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use futures::task::AtomicWaker;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

pub use service::AuthService;
pub use tokens::TokenStore;

/// The engine's durable auth store.
pub(crate) use argus_engine::auth as engine;

use engine::{Access, AuthError};

/// The error of the engine's auth calls (its `Auth` variant holds an [`AuthError`]).
pub(crate) type EngineError = argus_engine::Error;

/// The gRPC status of an engine auth call's error.
pub(crate) fn engine_status(e: EngineError) -> Status {
    crate::convert::status(e)
}

/// The gRPC status etcd answers for an auth error, with etcd's message and code
/// (etcd 3.4's `rpctypes`).
pub fn status(e: &AuthError) -> Status {
    let code = match e {
        AuthError::UserEmpty
        | AuthError::RoleEmpty
        | AuthError::AuthFailed
        | AuthError::InvalidAuthManagement
        | AuthError::OldRevision => Code::InvalidArgument,
        AuthError::PermissionDenied => Code::PermissionDenied,
        AuthError::InvalidToken => Code::Unauthenticated,
        _ => Code::FailedPrecondition,
    };
    Status::new(code, e.to_string())
}

/// An auth error as etcd 3.4 puts it in a watch's `cancel_reason`: the Go
/// string of its gRPC error (`rpc error: code = PermissionDenied desc = ...`).
pub fn cancel_reason(e: &AuthError) -> String {
    let s = status(e);
    let code = match s.code() {
        Code::PermissionDenied => "PermissionDenied",
        Code::Unauthenticated => "Unauthenticated",
        Code::InvalidArgument => "InvalidArgument",
        _ => "FailedPrecondition",
    };
    format!("rpc error: code = {code} desc = {}", s.message())
}

/// The metadata keys a token may come in: gRPC clients send `token`; etcd's HTTP
/// gateway passes the `Authorization` header on as `authorization`.
const TOKEN_KEYS: [&str; 2] = ["token", "authorization"];

/// The token `metadata` carries, if any.
fn token_in(metadata: &MetadataMap) -> Option<&str> {
    TOKEN_KEYS.iter().find_map(|k| metadata.get(*k)).map(|v| v.to_str().unwrap_or(""))
}

/// A request's credentials, as a stream keeps them to check again later.
pub(crate) struct Credentials {
    token: Option<String>,
    cert: Option<Caller>,
}

/// A request extension marking a call the server makes itself (the gateway's
/// `/health` read): not checked, as etcd's health check is not.
#[derive(Clone, Copy, Debug)]
pub struct Internal;

/// Who a request comes from, when auth is on.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The user name.
    pub user: String,
    /// The user's token generation when the request was authenticated (see
    /// [`TokenStore::generation`]); `None`: authenticated by certificate.
    generation: Option<u64>,
}

impl Caller {
    /// No user: the owner of a Watch stream's registration for wake-ups only
    /// (watchers created while auth was off).
    pub(crate) fn nobody() -> Caller {
        Caller { user: String::new(), generation: None }
    }
}

/// The permission gate shared by the services.
pub struct AuthGate {
    /// The store whose auth state this is (`Store::auth`).
    store: argus_engine::store::Store,
    /// `--client-cert-auth`: a request without a token is the user its client
    /// certificate's common name names (as etcd).
    client_cert_auth: bool,
    tokens: TokenStore,
    /// Watch streams with watchers to re-check when the auth state changes.
    streams: Mutex<Vec<Weak<StreamAuth>>>,
}

impl AuthGate {
    /// A gate on `store`'s auth state issuing tokens valid `token_ttl` after
    /// their last use (etcd's `--auth-token-ttl`).
    /// `client_cert_auth`: etcd's `--client-cert-auth` (the certificate's common name
    /// is the user of a request without a token).
    pub fn new(
        store: argus_engine::store::Store,
        token_ttl: std::time::Duration,
        client_cert_auth: bool,
    ) -> Arc<AuthGate> {
        let gate = Arc::new(AuthGate {
            store,
            client_cert_auth,
            tokens: TokenStore::new(token_ttl),
            streams: Mutex::default(),
        });
        let weak = Arc::downgrade(&gate);
        gate.db().on_change(Box::new(move |_rev| {
            if let Some(g) = weak.upgrade() {
                g.auth_changed();
            }
        }));
        gate
    }

    /// The auth store.
    pub(crate) fn db(&self) -> &engine::AuthStore {
        self.store.auth()
    }

    /// The token store.
    pub fn tokens(&self) -> &TokenStore {
        &self.tokens
    }

    /// Whether auth is enabled (one atomic load).
    pub fn enabled(&self) -> bool {
        self.db().is_enabled()
    }

    /// The caller of a request with `metadata`: `None` when auth is disabled; the
    /// token's user; refused with etcd's status for a token that is unknown or
    /// expired ("invalid auth token") or no credentials ("user name is empty").
    pub fn caller(&self, metadata: &MetadataMap, ext: &http::Extensions) -> Result<Option<Caller>, Status> {
        self.caller_from(token_in(metadata), || self.caller_of_certificate(ext))
    }

    /// As [`AuthGate::caller`], on credentials a stream kept from its opening
    /// request (a keep-alive stream checks them again on each request).
    pub(crate) fn caller_of(&self, c: &Credentials) -> Result<Option<Caller>, Status> {
        self.caller_from(c.token.as_deref(), || c.cert.clone())
    }

    /// The credentials of a request with `metadata` on a connection with `ext`.
    pub(crate) fn credentials(&self, metadata: &MetadataMap, ext: &http::Extensions) -> Credentials {
        Credentials { token: token_in(metadata).map(str::to_string), cert: self.caller_of_certificate(ext) }
    }

    fn caller_from(
        &self,
        token: Option<&str>,
        cert: impl FnOnce() -> Option<Caller>,
    ) -> Result<Option<Caller>, Status> {
        if !self.enabled() {
            return Ok(None);
        }
        match self.caller_if_any_from(token, cert)? {
            Some(c) => Ok(Some(c)),
            None => Err(status(&AuthError::UserEmpty)),
        }
    }

    /// The caller of a request with `metadata` on a connection with `ext`
    /// (`tls::ConnInfo`): its token's user, else under `--client-cert-auth` its
    /// certificate's common name; `None` when it has neither.
    pub fn caller_if_any(&self, metadata: &MetadataMap, ext: &http::Extensions) -> Result<Option<Caller>, Status> {
        self.caller_if_any_from(token_in(metadata), || self.caller_of_certificate(ext))
    }

    fn caller_if_any_from(
        &self,
        token: Option<&str>,
        cert: impl FnOnce() -> Option<Caller>,
    ) -> Result<Option<Caller>, Status> {
        let Some(token) = token else {
            return Ok(cert());
        };
        self.caller_of_token(token).map(Some).ok_or_else(|| status(&AuthError::InvalidToken))
    }

    /// Under `--client-cert-auth`, the user its verified client certificate's
    /// common name names.
    pub fn caller_of_certificate(&self, ext: &http::Extensions) -> Option<Caller> {
        if !self.client_cert_auth {
            return None;
        }
        let cn = crate::tls::peer_identity(ext)?.common_name.clone()?;
        Some(Caller { user: cn, generation: None })
    }

    /// The caller a live `token` names (its TTL renewed), `None` for an unknown or
    /// expired one.
    pub fn caller_of_token(&self, token: &str) -> Option<Caller> {
        let (user, generation) = self.tokens.lookup(token)?;
        Some(Caller { user, generation: Some(generation) })
    }

    /// Refuses (etcd's "permission denied") unless `caller` may `access` the span
    /// (`key`, `range_end`) as sent; `None` (auth disabled) may do anything.
    pub fn require(&self, caller: Option<&Caller>, key: &[u8], range_end: &[u8], access: Access) -> Result<(), Status> {
        match caller {
            Some(c) if !self.db().check(&c.user, key, range_end, access) => Err(status(&AuthError::PermissionDenied)),
            _ => Ok(()),
        }
    }

    /// Refuses unless `caller` has the root role (etcd's `IsAdminPermitted`: no
    /// user, "user name is empty"; an unknown one, "user name not found"; else
    /// "permission denied"). Admits anyone while auth is disabled.
    pub fn require_root(&self, metadata: &MetadataMap, ext: &http::Extensions) -> Result<Option<Caller>, Status> {
        let caller = self.caller(metadata, ext)?;
        if let Some(c) = &caller {
            if self.db().user_get(&c.user).is_err() {
                return Err(status(&AuthError::UserNotFound));
            }
            if !self.db().is_root(&c.user) {
                return Err(status(&AuthError::PermissionDenied));
            }
        }
        Ok(caller)
    }

    /// Whether `caller` is root (auth disabled: `None`, yes).
    pub fn is_root(&self, caller: Option<&Caller>) -> bool {
        caller.is_none_or(|c| self.db().is_root(&c.user))
    }

    /// Registers a Watch stream's watchers for re-checks on auth changes.
    pub(crate) fn watch_stream(&self, caller: Caller) -> Arc<StreamAuth> {
        let s = Arc::new(StreamAuth { caller, stale: AtomicBool::new(false), waker: AtomicWaker::new() });
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams.retain(|w| w.strong_count() > 0);
        streams.push(Arc::downgrade(&s));
        s
    }

    /// Drops `user`'s tokens (password changed, user deleted), then has the Watch
    /// streams re-check their watchers: the re-check the auth store's change
    /// started may have run before the tokens were gone, and judged the user's
    /// watchers on a token generation still current.
    pub(crate) fn revoke_tokens_of(&self, user: &str) {
        self.tokens.revoke_user(user);
        self.auth_changed();
    }

    /// Drops every token (auth disabled), then has the Watch streams re-check (as
    /// [`AuthGate::revoke_tokens_of`]).
    pub(crate) fn clear_tokens(&self) {
        self.tokens.clear();
        self.auth_changed();
    }

    /// Marks every registered Watch stream for a re-check and wakes it.
    fn auth_changed(&self) {
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        for s in streams.iter().filter_map(Weak::upgrade) {
            s.stale.store(true, Ordering::Release);
            s.waker.wake();
        }
    }

    /// Whether a watcher of `caller` on (`key`, `range_end`) may go on: auth is
    /// off, or the user exists, its tokens were not revoked since (password change,
    /// deletion, auth disabled and enabled again) and it may still read the range.
    pub(crate) fn watcher_still_permitted(&self, caller: &Caller, key: &[u8], range_end: &[u8]) -> bool {
        if !self.enabled() {
            return true;
        }
        if let Some(g) = caller.generation {
            if self.tokens.generation(&caller.user) != g {
                return false;
            }
        }
        self.db().check(&caller.user, key, range_end, Access::Read)
    }
}

/// The auth side of one Watch stream that created watchers under auth: its
/// caller, re-checked by the stream when `stale` is set. Nothing per watcher: the
/// engine judges the stream's watchers on their ranges as sent
/// (`WatchController::retain`), so auth costs a watcher no memory.
pub(crate) struct StreamAuth {
    pub(crate) caller: Caller,
    pub(crate) stale: AtomicBool,
    pub(crate) waker: AtomicWaker,
}

/// Checks every compare and every op of both branches of a txn, nested txns
/// included (etcd 3.4 checks no nested txn: Argus is stricter).
pub(crate) fn check_txn(
    gate: &AuthGate,
    caller: Option<&Caller>,
    t: &crate::proto::etcdserverpb::TxnRequest,
) -> Result<(), Status> {
    use crate::proto::etcdserverpb::request_op::Request as R;
    for c in &t.compare {
        gate.require(caller, &c.key, &c.range_end, Access::Read)?;
    }
    for op in t.success.iter().chain(&t.failure) {
        match &op.request {
            Some(R::RequestRange(r)) => check_span(gate, caller, &r.key, &r.range_end, Access::Read)?,
            Some(R::RequestPut(p)) => {
                gate.require(caller, &p.key, &[], Access::Write)?;
                if p.prev_kv {
                    gate.require(caller, &p.key, &[], Access::Read)?;
                }
            }
            Some(R::RequestDeleteRange(d)) => {
                check_span(gate, caller, &d.key, &d.range_end, Access::Write)?;
                if d.prev_kv {
                    check_span(gate, caller, &d.key, &d.range_end, Access::Read)?;
                }
            }
            Some(R::RequestTxn(inner)) => check_txn(gate, caller, inner)?,
            None => {}
        }
    }
    Ok(())
}

/// [`AuthGate::require`], except for a request without a key, which the store
/// refuses ("key is not provided", as etcd answers before its permission check).
pub(crate) fn check_span(
    gate: &AuthGate,
    caller: Option<&Caller>,
    key: &[u8],
    range_end: &[u8],
    access: Access,
) -> Result<(), Status> {
    if key.is_empty() {
        return Ok(());
    }
    gate.require(caller, key, range_end, access)
}
