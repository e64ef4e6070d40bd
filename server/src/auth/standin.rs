//! TEMPORARY STAND-IN for `argus_engine::auth` (engine branch i13-authe), written
//! from the contract in /tmp/i13-api.md so that the server side compiles and can be
//! tested before the engine's durable auth store lands on main. In memory only (not
//! durable), and its "hash" is NOT bcrypt. Delete this file, and point
//! `super::engine` at `argus_engine::auth`, once the real module is on main.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

pub const ROOT_USER: &str = "root";
pub const ROOT_ROLE: &str = "root";
pub const BCRYPT_COST: u32 = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PermKind {
    Read,
    Write,
    ReadWrite,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permission {
    pub kind: PermKind,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub roles: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleInfo {
    pub name: String,
    pub permissions: Vec<Permission>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    UserEmpty,
    UserAlreadyExists,
    UserNotFound,
    RoleEmpty,
    RoleAlreadyExists,
    RoleNotFound,
    RoleNotGranted,
    PermissionNotGranted,
    RootUserNotExist,
    RootRoleNotGranted,
    InvalidAuthManagement,
    AuthFailed,
    PermissionDenied,
    NotEnabled,
    InvalidToken,
    OldRevision,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

pub type Result<T> = std::result::Result<T, AuthError>;

#[derive(Default)]
struct State {
    users: BTreeMap<String, (Option<String>, BTreeSet<String>)>,
    roles: BTreeMap<String, Vec<Permission>>,
}

type Callback = Box<dyn Fn(u64) + Send + Sync>;

pub struct AuthStore {
    enabled: AtomicBool,
    revision: AtomicU64,
    state: RwLock<State>,
    callbacks: Mutex<Vec<Callback>>,
}

impl Default for AuthStore {
    fn default() -> Self {
        AuthStore {
            enabled: AtomicBool::new(false),
            revision: AtomicU64::new(1),
            state: RwLock::default(),
            callbacks: Mutex::default(),
        }
    }
}

/// The span of keys a (key, range_end) pair names, as [start, end) with `None` as
/// "no end"; `None` for an empty span.
fn span(key: &[u8], range_end: &[u8]) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    if range_end.is_empty() {
        let mut end = key.to_vec();
        end.push(0);
        return Some((key.to_vec(), Some(end)));
    }
    if range_end == [0] {
        return Some((key.to_vec(), None));
    }
    if range_end <= key {
        return None;
    }
    Some((key.to_vec(), Some(range_end.to_vec())))
}

impl AuthStore {
    fn changed<T>(&self, r: Result<T>) -> Result<T> {
        if r.is_ok() {
            let rev = self.revision.fetch_add(1, Ordering::AcqRel) + 1;
            for f in self.callbacks.lock().unwrap().iter() {
                f(rev);
            }
        }
        r
    }
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }
    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }
    pub fn enable(&self) -> Result<()> {
        if self.is_enabled() {
            return Ok(());
        }
        let r = {
            let s = self.state.read().unwrap();
            match s.users.get(ROOT_USER) {
                None => Err(AuthError::RootUserNotExist),
                Some((_, roles)) if !roles.contains(ROOT_ROLE) => Err(AuthError::RootRoleNotGranted),
                Some(_) => Ok(()),
            }
        };
        if r.is_ok() {
            self.enabled.store(true, Ordering::Release);
        }
        self.changed(r)
    }
    pub fn disable(&self) -> Result<()> {
        let was = self.enabled.swap(false, Ordering::AcqRel);
        if was {
            self.changed(Ok(()))
        } else {
            Ok(())
        }
    }
    pub fn user_add(&self, name: &str, hash: Option<String>) -> Result<()> {
        let r = (|| {
            if name.is_empty() {
                return Err(AuthError::UserEmpty);
            }
            let mut s = self.state.write().unwrap();
            if s.users.contains_key(name) {
                return Err(AuthError::UserAlreadyExists);
            }
            s.users.insert(name.to_string(), (hash, BTreeSet::new()));
            Ok(())
        })();
        self.changed(r)
    }
    pub fn user_delete(&self, name: &str) -> Result<()> {
        let r = (|| {
            if self.is_enabled() && name == ROOT_USER {
                return Err(AuthError::InvalidAuthManagement);
            }
            let mut s = self.state.write().unwrap();
            s.users.remove(name).map(|_| ()).ok_or(AuthError::UserNotFound)
        })();
        self.changed(r)
    }
    pub fn user_change_password(&self, name: &str, hash: String) -> Result<()> {
        let r = (|| {
            let mut s = self.state.write().unwrap();
            let u = s.users.get_mut(name).ok_or(AuthError::UserNotFound)?;
            u.0 = Some(hash);
            Ok(())
        })();
        self.changed(r)
    }
    pub fn user_grant_role(&self, user: &str, role: &str) -> Result<()> {
        let r = (|| {
            let mut s = self.state.write().unwrap();
            if role != ROOT_ROLE && !s.roles.contains_key(role) {
                if !s.users.contains_key(user) {
                    return Err(AuthError::UserNotFound);
                }
                return Err(AuthError::RoleNotFound);
            }
            let u = s.users.get_mut(user).ok_or(AuthError::UserNotFound)?;
            u.1.insert(role.to_string());
            Ok(())
        })();
        self.changed(r)
    }
    pub fn user_revoke_role(&self, user: &str, role: &str) -> Result<()> {
        let r = (|| {
            if self.is_enabled() && user == ROOT_USER && role == ROOT_ROLE {
                return Err(AuthError::InvalidAuthManagement);
            }
            let mut s = self.state.write().unwrap();
            let u = s.users.get_mut(user).ok_or(AuthError::UserNotFound)?;
            if !u.1.remove(role) {
                return Err(AuthError::RoleNotGranted);
            }
            Ok(())
        })();
        self.changed(r)
    }
    pub fn user_get(&self, name: &str) -> Result<UserInfo> {
        let s = self.state.read().unwrap();
        let u = s.users.get(name).ok_or(AuthError::UserNotFound)?;
        Ok(UserInfo { name: name.to_string(), roles: u.1.iter().cloned().collect() })
    }
    pub fn user_list(&self) -> Vec<String> {
        self.state.read().unwrap().users.keys().cloned().collect()
    }
    pub fn role_add(&self, name: &str) -> Result<()> {
        let r = (|| {
            if name.is_empty() {
                return Err(AuthError::RoleEmpty);
            }
            let mut s = self.state.write().unwrap();
            if s.roles.contains_key(name) {
                return Err(AuthError::RoleAlreadyExists);
            }
            s.roles.insert(name.to_string(), Vec::new());
            Ok(())
        })();
        self.changed(r)
    }
    pub fn role_delete(&self, name: &str) -> Result<()> {
        let r = (|| {
            if self.is_enabled() && name == ROOT_ROLE {
                return Err(AuthError::InvalidAuthManagement);
            }
            let mut s = self.state.write().unwrap();
            s.roles.remove(name).ok_or(AuthError::RoleNotFound)?;
            for u in s.users.values_mut() {
                u.1.remove(name);
            }
            Ok(())
        })();
        self.changed(r)
    }
    pub fn role_get(&self, name: &str) -> Result<RoleInfo> {
        let s = self.state.read().unwrap();
        let p = s.roles.get(name).ok_or(AuthError::RoleNotFound)?;
        Ok(RoleInfo { name: name.to_string(), permissions: p.clone() })
    }
    pub fn role_list(&self) -> Vec<String> {
        self.state.read().unwrap().roles.keys().cloned().collect()
    }
    pub fn role_grant_permission(&self, role: &str, perm: Permission) -> Result<()> {
        let r = (|| {
            let mut s = self.state.write().unwrap();
            let ps = s.roles.get_mut(role).ok_or(AuthError::RoleNotFound)?;
            match ps.iter_mut().find(|p| p.key == perm.key && p.range_end == perm.range_end) {
                Some(p) => p.kind = perm.kind,
                None => ps.push(perm),
            }
            ps.sort_by(|a, b| (&a.key, &a.range_end).cmp(&(&b.key, &b.range_end)));
            Ok(())
        })();
        self.changed(r)
    }
    pub fn role_revoke_permission(&self, role: &str, key: &[u8], range_end: &[u8]) -> Result<()> {
        let r = (|| {
            let mut s = self.state.write().unwrap();
            let ps = s.roles.get_mut(role).ok_or(AuthError::RoleNotFound)?;
            let before = ps.len();
            ps.retain(|p| !(p.key == key && p.range_end == range_end));
            if ps.len() == before {
                return Err(AuthError::PermissionNotGranted);
            }
            Ok(())
        })();
        self.changed(r)
    }
    pub fn password_hash(&self, user: &str) -> Option<String> {
        self.state.read().unwrap().users.get(user).and_then(|u| u.0.clone())
    }
    pub fn is_root(&self, user: &str) -> bool {
        self.state.read().unwrap().users.get(user).is_some_and(|u| u.1.contains(ROOT_ROLE))
    }
    pub fn check(&self, user: &str, key: &[u8], range_end: &[u8], access: Access) -> bool {
        let s = self.state.read().unwrap();
        let Some(u) = s.users.get(user) else { return false };
        if u.1.contains(ROOT_ROLE) {
            return true;
        }
        let Some((start, end)) = span(key, range_end) else { return true };
        let mut ivs: Vec<(Vec<u8>, Option<Vec<u8>>)> =
            u.1.iter()
                .filter_map(|r| s.roles.get(r))
                .flatten()
                .filter(|p| match access {
                    Access::Read => p.kind != PermKind::Write,
                    Access::Write => p.kind != PermKind::Read,
                })
                .filter_map(|p| span(&p.key, &p.range_end))
                .collect();
        ivs.sort();
        // Walk the sorted intervals, extending the covered prefix from `start`.
        let mut covered = start;
        for (s0, e0) in ivs {
            if s0 > covered {
                break;
            }
            match e0 {
                None => return true,
                Some(e) if e > covered => covered = e,
                Some(_) => {}
            }
            if let Some(end) = &end {
                if &covered >= end {
                    return true;
                }
            }
        }
        false
    }
    pub fn on_change(&self, f: Box<dyn Fn(u64) + Send + Sync>) {
        self.callbacks.lock().unwrap().push(f);
    }
}

pub fn hash_password(password: &str, _cost: u32) -> String {
    format!("standin-not-bcrypt${password}")
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    hash.strip_prefix("standin-not-bcrypt$") == Some(password)
}
