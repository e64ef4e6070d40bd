//! etcd's authentication state, durable in the revision log: users with bcrypt
//! password hashes, roles with key-range permissions, the `root` user and role,
//! the enabled flag and the auth revision (etcd 3.4's `auth/store.go`).
//!
//! Every change is checked as etcd checks it, written as one AUTH record between
//! revisions (`engine/FORMAT.md`, Auth records) and fsynced before it returns,
//! whatever the fsync policy; compaction carries the whole state in the base
//! snapshot. Reads ([`AuthStore::check`], [`AuthStore::is_enabled`], ...) take
//! no lock: every change publishes a new immutable view with each user's
//! permissions merged into interval sets (etcd's range_perm_cache.go), so a check
//! is a hash lookup and a binary search.

pub(crate) mod perms;
pub mod record;
pub(crate) mod state;

use std::collections::HashMap;

use arc_swap::ArcSwap;

use crate::error::{Error, Result};
use crate::log::RevisionLog;
use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use crate::sync::{lock, Arc, Mutex};
use perms::UserPerms;
pub use state::{AuthState, Change};

/// The name of etcd's root user.
pub const ROOT_USER: &str = "root";
/// The name of etcd's root role (may do everything).
pub const ROOT_ROLE: &str = "root";
/// etcd's bcrypt cost (`bcrypt.DefaultCost`).
pub const BCRYPT_COST: u32 = 10;

/// The access a permission grants (etcd's `authpb.Permission.Type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PermKind {
    /// READ (0).
    Read,
    /// WRITE (1).
    Write,
    /// READWRITE (2).
    ReadWrite,
}

/// A permission of a role over a key, a range or everything from a key on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permission {
    /// What it permits.
    pub kind: PermKind,
    /// The first key.
    pub key: Vec<u8>,
    /// As the client sent it: empty for the one key `key`, `"\0"` for every key
    /// from `key` on, else the exclusive end.
    pub range_end: Vec<u8>,
}

/// A user as `UserGet` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    /// The user's name.
    pub name: String,
    /// Its roles, sorted.
    pub roles: Vec<String>,
}

/// A role as `RoleGet` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleInfo {
    /// The role's name.
    pub name: String,
    /// Its permissions, sorted by (key, range_end).
    pub permissions: Vec<Permission>,
}

/// What an access needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Reading keys (Range, Watch, compares of a Txn).
    Read,
    /// Writing keys (Put, DeleteRange, Lease revoke).
    Write,
}

/// The auth errors, each displayed with etcd's exact message (rpctypes/error.go
/// of etcd 3.4).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// An empty user name.
    UserEmpty,
    /// `UserAdd` of a name in use.
    UserAlreadyExists,
    /// No such user.
    UserNotFound,
    /// An empty role name.
    RoleEmpty,
    /// `RoleAdd` of a name in use.
    RoleAlreadyExists,
    /// No such role.
    RoleNotFound,
    /// `UserRevokeRole` of a role the user does not have.
    RoleNotGranted,
    /// `RoleRevokePermission` of a permission the role does not have.
    PermissionNotGranted,
    /// `AuthEnable` without a root user.
    RootUserNotExist,
    /// `AuthEnable` with a root user that lacks the root role.
    RootRoleNotGranted,
    /// Deleting root (user or role) or revoking root's root role while auth is
    /// enabled, or a permission over an invalid range.
    InvalidAuthManagement,
    /// Wrong user or password.
    AuthFailed,
    /// The user may not do this.
    PermissionDenied,
    /// Auth is not enabled.
    NotEnabled,
    /// The token is unknown or expired.
    InvalidToken,
    /// The token was issued before the auth state changed.
    OldRevision,
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AuthError::UserEmpty => "etcdserver: user name is empty",
            AuthError::UserAlreadyExists => "etcdserver: user name already exists",
            AuthError::UserNotFound => "etcdserver: user name not found",
            AuthError::RoleEmpty => "etcdserver: role name is empty",
            AuthError::RoleAlreadyExists => "etcdserver: role name already exists",
            AuthError::RoleNotFound => "etcdserver: role name not found",
            AuthError::RoleNotGranted => "etcdserver: role is not granted to the user",
            AuthError::PermissionNotGranted => "etcdserver: permission is not granted to the role",
            AuthError::RootUserNotExist => "etcdserver: root user does not exist",
            AuthError::RootRoleNotGranted => "etcdserver: root user does not have root role",
            AuthError::InvalidAuthManagement => "etcdserver: invalid auth management",
            AuthError::AuthFailed => "etcdserver: authentication failed, invalid user ID or password",
            AuthError::PermissionDenied => "etcdserver: permission denied",
            AuthError::NotEnabled => "etcdserver: authentication is not enabled",
            AuthError::InvalidToken => "etcdserver: invalid auth token",
            AuthError::OldRevision => "etcdserver: revision of auth store is old",
        })
    }
}

impl std::error::Error for AuthError {}

/// bcrypt hash of `password` at `cost` (etcd: [`BCRYPT_COST`]; tests use 4).
/// Slow on purpose: call it outside any lock.
///
/// # Panics
///
/// If `cost` is outside bcrypt's 4..=31.
pub fn hash_password(password: &str, cost: u32) -> String {
    bcrypt::hash(password, cost).expect("bcrypt cost within 4..=31")
}

/// Whether `password` matches bcrypt `hash` (false for a malformed hash).
pub fn verify_password(password: &str, hash: &str) -> bool {
    bcrypt::verify(password, hash).unwrap_or(false)
}

/// What readers see: one published, immutable view per auth revision.
struct View {
    perms: HashMap<String, UserPerms>,
}

type Callback = Arc<dyn Fn(u64) + Send + Sync>;

/// The durable auth state of a store; reached through `Store::auth`.
pub struct AuthStore {
    log: RevisionLog,
    /// The state; held from a change's checks until it is durable and published,
    /// so changes are serialized and a snapshot taken under it holds every change
    /// whose record is in the log.
    state: Mutex<AuthState>,
    enabled: AtomicBool,
    revision: AtomicU64,
    view: ArcSwap<View>,
    callbacks: Mutex<Vec<Callback>>,
}

impl AuthStore {
    /// The auth store over `log`, with the state recovered on open.
    pub(crate) fn new(log: RevisionLog, state: AuthState) -> AuthStore {
        AuthStore {
            log,
            enabled: AtomicBool::new(state.enabled),
            revision: AtomicU64::new(state.revision),
            view: ArcSwap::from_pointee(View { perms: perms::merged(&state) }),
            state: Mutex::new(state),
            callbacks: Mutex::new(Vec::new()),
        }
    }

    /// Whether auth is enabled (one atomic load).
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// The auth revision (etcd's authRevision): 1 on a fresh store, one more after
    /// every change.
    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }

    /// The value of the AUTH record a snapshot carries (None: the state is still
    /// the initial one). Taken under the state's lock, so it holds every change
    /// whose record is in the log (FORMAT.md, Snapshot).
    pub(crate) fn snapshot_value(&self) -> Option<Vec<u8>> {
        let st = lock(&self.state);
        (!st.is_initial()).then(|| record::encode_state(&st))
    }

    /// Checks `change`, writes its record, makes it durable, publishes the new
    /// state and then tells the callbacks. A no-op (as etcd acknowledges some)
    /// writes nothing.
    fn change(&self, change: Change) -> Result<()> {
        let mut st = lock(&self.state);
        let mut next = st.clone();
        if !next.apply(&change).map_err(Error::Auth)? {
            return Ok(());
        }
        next.revision += 1;
        let value = record::encode_change(next.revision, &change);
        let written = self.log.append_auth(&value)?;
        self.log.sync_auth_record(written)?;
        self.view.store(Arc::new(View { perms: perms::merged(&next) }));
        self.enabled.store(next.enabled, Ordering::Release);
        self.revision.store(next.revision, Ordering::Release);
        let revision = next.revision;
        *st = next;
        drop(st);
        let callbacks: Vec<Callback> = lock(&self.callbacks).clone();
        for f in callbacks {
            f(revision);
        }
        Ok(())
    }

    /// Enables auth (etcd's AuthEnable); Ok if it is enabled already.
    ///
    /// # Errors
    ///
    /// `Error::Auth` with [`AuthError::RootUserNotExist`] or
    /// [`AuthError::RootRoleNotGranted`]; log errors.
    pub fn enable(&self) -> Result<()> {
        self.change(Change::Enable)
    }

    /// Disables auth (etcd's AuthDisable); Ok if it is disabled already.
    ///
    /// # Errors
    ///
    /// Log errors.
    pub fn disable(&self) -> Result<()> {
        self.change(Change::Disable)
    }

    /// Adds user `name` with bcrypt `hash` (made by [`hash_password`] outside any
    /// lock), or without a password (`None`, etcd 3.4's `no_password`).
    ///
    /// # Errors
    ///
    /// [`AuthError::UserEmpty`], [`AuthError::UserAlreadyExists`]; log errors.
    pub fn user_add(&self, name: &str, hash: Option<String>) -> Result<()> {
        self.change(Change::UserAdd { name: name.to_string(), hash })
    }

    /// Deletes user `name`.
    ///
    /// # Errors
    ///
    /// [`AuthError::InvalidAuthManagement`] for root while enabled,
    /// [`AuthError::UserNotFound`]; log errors.
    pub fn user_delete(&self, name: &str) -> Result<()> {
        self.change(Change::UserDelete { name: name.to_string() })
    }

    /// Sets the password hash of user `name`.
    ///
    /// # Errors
    ///
    /// [`AuthError::UserNotFound`]; log errors.
    pub fn user_change_password(&self, name: &str, hash: String) -> Result<()> {
        self.change(Change::UserPassword { name: name.to_string(), hash })
    }

    /// Grants `role` to `user`; the root role need not exist (as etcd). Granting a
    /// role the user has is Ok and changes nothing.
    ///
    /// # Errors
    ///
    /// [`AuthError::UserNotFound`], [`AuthError::RoleNotFound`]; log errors.
    pub fn user_grant_role(&self, user: &str, role: &str) -> Result<()> {
        self.change(Change::UserGrantRole { user: user.to_string(), role: role.to_string() })
    }

    /// Revokes `role` from `user`.
    ///
    /// # Errors
    ///
    /// [`AuthError::InvalidAuthManagement`] for root's root role while enabled,
    /// [`AuthError::UserNotFound`], [`AuthError::RoleNotGranted`]; log errors.
    pub fn user_revoke_role(&self, user: &str, role: &str) -> Result<()> {
        self.change(Change::UserRevokeRole { user: user.to_string(), role: role.to_string() })
    }

    /// User `name` and its roles.
    ///
    /// # Errors
    ///
    /// [`AuthError::UserNotFound`].
    pub fn user_get(&self, name: &str) -> Result<UserInfo> {
        let st = lock(&self.state);
        let u = st.users.get(name).ok_or(Error::Auth(AuthError::UserNotFound))?;
        Ok(UserInfo { name: name.to_string(), roles: u.roles.clone() })
    }

    /// Every user's name, sorted.
    pub fn user_list(&self) -> Vec<String> {
        lock(&self.state).users.keys().cloned().collect()
    }

    /// Adds role `name` (the root role too: etcdctl's `auth enable` adds it).
    ///
    /// # Errors
    ///
    /// [`AuthError::RoleEmpty`], [`AuthError::RoleAlreadyExists`]; log errors.
    pub fn role_add(&self, name: &str) -> Result<()> {
        self.change(Change::RoleAdd { name: name.to_string() })
    }

    /// Deletes role `name` and revokes it from every user (as etcd).
    ///
    /// # Errors
    ///
    /// [`AuthError::InvalidAuthManagement`] for root while enabled,
    /// [`AuthError::RoleNotFound`]; log errors.
    pub fn role_delete(&self, name: &str) -> Result<()> {
        self.change(Change::RoleDelete { name: name.to_string() })
    }

    /// Role `name` and its permissions. The root role is found only once it was
    /// added, and lists the permissions granted to it (as etcd 3.4: root may do
    /// everything whatever it lists).
    ///
    /// # Errors
    ///
    /// [`AuthError::RoleNotFound`].
    pub fn role_get(&self, name: &str) -> Result<RoleInfo> {
        let st = lock(&self.state);
        let perms = st.roles.get(name).ok_or(Error::Auth(AuthError::RoleNotFound))?;
        Ok(RoleInfo { name: name.to_string(), permissions: perms.clone() })
    }

    /// Every role's name, sorted.
    pub fn role_list(&self) -> Vec<String> {
        lock(&self.state).roles.keys().cloned().collect()
    }

    /// Grants `perm` to `role`; a permission with the same (key, range_end) has
    /// its kind replaced (as etcd).
    ///
    /// # Errors
    ///
    /// [`AuthError::InvalidAuthManagement`] for an empty key or a range end that
    /// is not empty, `"\0"` or above the key (etcd's `isValidPermissionRange`,
    /// checked first); [`AuthError::RoleNotFound`]; log errors.
    pub fn role_grant_permission(&self, role: &str, perm: Permission) -> Result<()> {
        self.change(Change::RoleGrantPermission { role: role.to_string(), perm })
    }

    /// Revokes the permission of `role` over exactly (`key`, `range_end`).
    ///
    /// # Errors
    ///
    /// [`AuthError::RoleNotFound`], [`AuthError::PermissionNotGranted`]; log errors.
    pub fn role_revoke_permission(&self, role: &str, key: &[u8], range_end: &[u8]) -> Result<()> {
        self.change(Change::RoleRevokePermission {
            role: role.to_string(),
            key: key.to_vec(),
            range_end: range_end.to_vec(),
        })
    }

    /// The stored password hash of `user` (None: no password, or no such user).
    /// Verify it with [`verify_password`] outside any lock.
    pub fn password_hash(&self, user: &str) -> Option<String> {
        lock(&self.state).users.get(user).and_then(|u| u.hash.clone())
    }

    /// Whether `user` exists and has the root role (may do everything, Compact and
    /// auth management included).
    pub fn is_root(&self, user: &str) -> bool {
        self.view.load().perms.get(user).is_some_and(|p| p.root)
    }

    /// Whether `user` may `access` every key of the span exactly as the client
    /// sent it: an empty `range_end` is the one key `key`, `"\0"` every key from
    /// `key` on, a `range_end` at or below `key` an empty span, permitted iff the
    /// one key `key` is (as etcd 3.4 decides in all but its tree-shape flaw; see
    /// `perms.rs`). The
    /// root role may do everything; otherwise the span must lie inside the union
    /// of the user's permissions for `access` (READWRITE counts for both). An
    /// unknown user may do nothing. Takes no lock and allocates nothing.
    pub fn check(&self, user: &str, key: &[u8], range_end: &[u8], access: Access) -> bool {
        let view = self.view.load();
        view.perms.get(user).is_some_and(|p| p.permits(key, range_end, access))
    }

    /// Registers `f`, called after every change (once it is durable, outside the
    /// store's locks) with the new auth revision. It must be quick and must not
    /// block: the server re-checks its watchers from it.
    pub fn on_change(&self, f: Box<dyn Fn(u64) + Send + Sync>) {
        lock(&self.callbacks).push(Arc::from(f));
    }
}

/// Replays the AUTH records of the log on top of the snapshot's state (FORMAT.md,
/// Auth records): skips those the state already holds, applies the next one.
pub(crate) struct Replay {
    pub(crate) state: AuthState,
}

impl Replay {
    /// Starts from the base snapshot's AUTH value, if any.
    pub(crate) fn new(snapshot: Option<&[u8]>) -> std::result::Result<Replay, String> {
        let state = match snapshot {
            Some(v) => record::decode_state(v)?,
            None => AuthState::default(),
        };
        Ok(Replay { state })
    }

    /// Applies one AUTH record's value.
    pub(crate) fn apply(&mut self, value: &[u8]) -> std::result::Result<(), String> {
        let (revision, change) = record::decode_change(value)?;
        if revision <= self.state.revision {
            return Ok(());
        }
        if revision != self.state.revision + 1 {
            return Err(format!("auth revision {revision} follows {}", self.state.revision));
        }
        match self.state.apply(&change) {
            Ok(true) => {
                self.state.revision = revision;
                Ok(())
            }
            Ok(false) => Err(format!("auth revision {revision}: {change:?} changes nothing")),
            Err(e) => Err(format!("auth revision {revision}: {change:?} refused: {e}")),
        }
    }
}
