//! The auth state (users, roles, permissions, the enabled flag, the auth
//! revision) and the one function that changes it, [`AuthState::apply`]: the live
//! calls and the replay on open run the same checks, so a log holds only changes
//! the state accepted and replays them to the same result.

use std::collections::BTreeMap;

use super::{AuthError, Permission, ROOT_ROLE, ROOT_USER};

/// A user: its password hash (None: no password, etcd's `no_password`) and its
/// roles, sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct User {
    pub(crate) hash: Option<String>,
    pub(crate) roles: Vec<String>,
}

impl User {
    pub(crate) fn has_role(&self, role: &str) -> bool {
        self.roles.binary_search_by(|r| r.as_str().cmp(role)).is_ok()
    }
}

/// The whole auth state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthState {
    /// The auth revision (etcd's authRevision): 1 on a fresh store, +1 per change.
    pub(crate) revision: u64,
    pub(crate) enabled: bool,
    pub(crate) users: BTreeMap<String, User>,
    /// Roles and their permissions, sorted by (key, range_end).
    pub(crate) roles: BTreeMap<String, Vec<Permission>>,
}

impl Default for AuthState {
    fn default() -> Self {
        AuthState { revision: 1, enabled: false, users: BTreeMap::new(), roles: BTreeMap::new() }
    }
}

/// One change of the auth state: what an AUTH record holds.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Change {
    Enable,
    Disable,
    UserAdd { name: String, hash: Option<String> },
    UserDelete { name: String },
    UserPassword { name: String, hash: String },
    UserGrantRole { user: String, role: String },
    UserRevokeRole { user: String, role: String },
    RoleAdd { name: String },
    RoleDelete { name: String },
    RoleGrantPermission { role: String, perm: Permission },
    RoleRevokePermission { role: String, key: Vec<u8>, range_end: Vec<u8> },
}

/// etcd's `isValidPermissionRange`: a key, and a range end that is empty (one
/// key), `"\0"` (from the key on) or above the key.
pub(crate) fn valid_permission_range(key: &[u8], range_end: &[u8]) -> bool {
    !key.is_empty() && (range_end.is_empty() || range_end == [0] || key < range_end)
}

impl AuthState {
    /// Whether the state is still that of a fresh store (nothing to snapshot).
    pub(crate) fn is_initial(&self) -> bool {
        *self == AuthState::default()
    }

    /// Applies `change` with etcd 3.4's checks (auth/store.go), in etcd's order.
    /// Returns whether anything changed (`false`: a no-op that etcd acknowledges
    /// without a new auth revision: enabling when enabled, disabling when
    /// disabled, granting a role the user has). Leaves the state untouched on an
    /// error. Does not move the revision.
    pub(crate) fn apply(&mut self, change: &Change) -> Result<bool, AuthError> {
        match change {
            Change::Enable => {
                if self.enabled {
                    return Ok(false);
                }
                let root = self.users.get(ROOT_USER).ok_or(AuthError::RootUserNotExist)?;
                if !root.has_role(ROOT_ROLE) {
                    return Err(AuthError::RootRoleNotGranted);
                }
                self.enabled = true;
            }
            Change::Disable => {
                if !self.enabled {
                    return Ok(false);
                }
                self.enabled = false;
            }
            Change::UserAdd { name, hash } => {
                if name.is_empty() {
                    return Err(AuthError::UserEmpty);
                }
                if self.users.contains_key(name) {
                    return Err(AuthError::UserAlreadyExists);
                }
                self.users.insert(name.clone(), User { hash: hash.clone(), roles: Vec::new() });
            }
            Change::UserDelete { name } => {
                if self.enabled && name == ROOT_USER {
                    return Err(AuthError::InvalidAuthManagement);
                }
                self.users.remove(name).ok_or(AuthError::UserNotFound)?;
            }
            Change::UserPassword { name, hash } => {
                let u = self.users.get_mut(name).ok_or(AuthError::UserNotFound)?;
                u.hash = Some(hash.clone());
            }
            Change::UserGrantRole { user, role } => {
                if !self.users.contains_key(user) {
                    return Err(AuthError::UserNotFound);
                }
                // The root role need not exist to be granted (etcd).
                if role != ROOT_ROLE && !self.roles.contains_key(role) {
                    return Err(AuthError::RoleNotFound);
                }
                let u = self.users.get_mut(user).expect("checked above");
                match u.roles.binary_search(role) {
                    Ok(_) => return Ok(false),
                    Err(at) => u.roles.insert(at, role.clone()),
                }
            }
            Change::UserRevokeRole { user, role } => {
                if self.enabled && user == ROOT_USER && role == ROOT_ROLE {
                    return Err(AuthError::InvalidAuthManagement);
                }
                let u = self.users.get_mut(user).ok_or(AuthError::UserNotFound)?;
                let at = u.roles.binary_search(role).map_err(|_| AuthError::RoleNotGranted)?;
                u.roles.remove(at);
            }
            Change::RoleAdd { name } => {
                if name.is_empty() {
                    return Err(AuthError::RoleEmpty);
                }
                if self.roles.contains_key(name) {
                    return Err(AuthError::RoleAlreadyExists);
                }
                self.roles.insert(name.clone(), Vec::new());
            }
            Change::RoleDelete { name } => {
                if self.enabled && name == ROOT_ROLE {
                    return Err(AuthError::InvalidAuthManagement);
                }
                self.roles.remove(name).ok_or(AuthError::RoleNotFound)?;
                // etcd revokes the role from every user that has it.
                for u in self.users.values_mut() {
                    if let Ok(at) = u.roles.binary_search(name) {
                        u.roles.remove(at);
                    }
                }
            }
            Change::RoleGrantPermission { role, perm } => {
                if !valid_permission_range(&perm.key, &perm.range_end) {
                    return Err(AuthError::InvalidAuthManagement);
                }
                let perms = self.roles.get_mut(role).ok_or(AuthError::RoleNotFound)?;
                match perms.binary_search_by(|p| (&p.key, &p.range_end).cmp(&(&perm.key, &perm.range_end))) {
                    Ok(at) => perms[at].kind = perm.kind,
                    Err(at) => perms.insert(at, perm.clone()),
                }
            }
            Change::RoleRevokePermission { role, key, range_end } => {
                let perms = self.roles.get_mut(role).ok_or(AuthError::RoleNotFound)?;
                let at = perms
                    .binary_search_by(|p| (&p.key, &p.range_end).cmp(&(key, range_end)))
                    .map_err(|_| AuthError::PermissionNotGranted)?;
                perms.remove(at);
            }
        }
        Ok(true)
    }
}
