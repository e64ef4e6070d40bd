//! The value of an AUTH record (`engine/FORMAT.md`, Auth records): the auth
//! revision a change produces, an operation byte and its fields; or, in a
//! snapshot, the whole state (STATE).
//!
//! The decoders are total: any byte string gives a value or a sentence saying why
//! not, never a panic.

use std::collections::BTreeMap;

use super::state::{AuthState, Change, User};
use super::{PermKind, Permission};

const OP_ENABLE: u8 = 1;
const OP_DISABLE: u8 = 2;
const OP_USER_ADD: u8 = 3;
const OP_USER_DELETE: u8 = 4;
const OP_USER_PASSWORD: u8 = 5;
const OP_USER_GRANT_ROLE: u8 = 6;
const OP_USER_REVOKE_ROLE: u8 = 7;
const OP_ROLE_ADD: u8 = 8;
const OP_ROLE_DELETE: u8 = 9;
const OP_ROLE_GRANT_PERMISSION: u8 = 10;
const OP_ROLE_REVOKE_PERMISSION: u8 = 11;
const OP_STATE: u8 = 12;

struct Writer(Vec<u8>);

impl Writer {
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.0.extend_from_slice(b);
    }
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    fn byte(&mut self, b: u8) {
        self.0.push(b);
    }
    fn count(&mut self, n: usize) {
        self.0.extend_from_slice(&(n as u32).to_le_bytes());
    }
    fn hash(&mut self, h: &Option<String>) {
        match h {
            None => self.byte(0),
            Some(h) => {
                self.byte(1);
                self.str(h);
            }
        }
    }
    fn perm(&mut self, p: &Permission) {
        self.byte(kind_byte(p.kind));
        self.bytes(&p.key);
        self.bytes(&p.range_end);
    }
}

fn kind_byte(k: PermKind) -> u8 {
    match k {
        PermKind::Read => 0,
        PermKind::Write => 1,
        PermKind::ReadWrite => 2,
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!("{n} bytes needed, {} left", self.0.len()));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, String> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn str(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?).map_err(|_| "a name is not UTF-8".to_string())
    }
    fn flag(&mut self) -> Result<bool, String> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(format!("flag {b} is neither 0 nor 1")),
        }
    }
    fn hash(&mut self) -> Result<Option<String>, String> {
        if self.flag()? {
            Ok(Some(self.str()?))
        } else {
            Ok(None)
        }
    }
    fn kind(&mut self) -> Result<PermKind, String> {
        match self.byte()? {
            0 => Ok(PermKind::Read),
            1 => Ok(PermKind::Write),
            2 => Ok(PermKind::ReadWrite),
            b => Err(format!("unknown permission type {b}")),
        }
    }
    fn perm(&mut self) -> Result<Permission, String> {
        Ok(Permission { kind: self.kind()?, key: self.bytes()?, range_end: self.bytes()? })
    }
    /// A count of items, each at least `min` bytes: refuses counts the rest of the
    /// value cannot hold (so a corrupt count allocates nothing large).
    fn count(&mut self, min: usize) -> Result<usize, String> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min) > self.0.len() {
            return Err(format!("count {n} exceeds the value"));
        }
        Ok(n)
    }
    fn end(&self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(format!("{} trailing bytes", self.0.len()))
        }
    }
}

/// The value of the AUTH record of `change`, which produces auth revision `revision`.
pub fn encode_change(revision: u64, change: &Change) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(64));
    w.0.extend_from_slice(&revision.to_le_bytes());
    match change {
        Change::Enable => w.byte(OP_ENABLE),
        Change::Disable => w.byte(OP_DISABLE),
        Change::UserAdd { name, hash } => {
            w.byte(OP_USER_ADD);
            w.str(name);
            w.hash(hash);
        }
        Change::UserDelete { name } => {
            w.byte(OP_USER_DELETE);
            w.str(name);
        }
        Change::UserPassword { name, hash } => {
            w.byte(OP_USER_PASSWORD);
            w.str(name);
            w.str(hash);
        }
        Change::UserGrantRole { user, role } => {
            w.byte(OP_USER_GRANT_ROLE);
            w.str(user);
            w.str(role);
        }
        Change::UserRevokeRole { user, role } => {
            w.byte(OP_USER_REVOKE_ROLE);
            w.str(user);
            w.str(role);
        }
        Change::RoleAdd { name } => {
            w.byte(OP_ROLE_ADD);
            w.str(name);
        }
        Change::RoleDelete { name } => {
            w.byte(OP_ROLE_DELETE);
            w.str(name);
        }
        Change::RoleGrantPermission { role, perm } => {
            w.byte(OP_ROLE_GRANT_PERMISSION);
            w.str(role);
            w.perm(perm);
        }
        Change::RoleRevokePermission { role, key, range_end } => {
            w.byte(OP_ROLE_REVOKE_PERMISSION);
            w.str(role);
            w.bytes(key);
            w.bytes(range_end);
        }
    }
    w.0
}

/// Decodes the value of an AUTH record in a segment: the auth revision it produces
/// and the change.
///
/// # Errors
///
/// A sentence saying why the value does not decode.
pub fn decode_change(value: &[u8]) -> Result<(u64, Change), String> {
    let mut r = Reader(value);
    let revision = r.u64()?;
    let change = match r.byte()? {
        OP_ENABLE => Change::Enable,
        OP_DISABLE => Change::Disable,
        OP_USER_ADD => Change::UserAdd { name: r.str()?, hash: r.hash()? },
        OP_USER_DELETE => Change::UserDelete { name: r.str()? },
        OP_USER_PASSWORD => Change::UserPassword { name: r.str()?, hash: r.str()? },
        OP_USER_GRANT_ROLE => Change::UserGrantRole { user: r.str()?, role: r.str()? },
        OP_USER_REVOKE_ROLE => Change::UserRevokeRole { user: r.str()?, role: r.str()? },
        OP_ROLE_ADD => Change::RoleAdd { name: r.str()? },
        OP_ROLE_DELETE => Change::RoleDelete { name: r.str()? },
        OP_ROLE_GRANT_PERMISSION => Change::RoleGrantPermission { role: r.str()?, perm: r.perm()? },
        OP_ROLE_REVOKE_PERMISSION => {
            Change::RoleRevokePermission { role: r.str()?, key: r.bytes()?, range_end: r.bytes()? }
        }
        OP_STATE => return Err("a STATE operation outside a snapshot".into()),
        op => return Err(format!("unknown operation {op}")),
    };
    r.end()?;
    Ok((revision, change))
}

/// The value of a snapshot's AUTH record: the whole state (STATE).
pub fn encode_state(s: &AuthState) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(256));
    w.0.extend_from_slice(&s.revision.to_le_bytes());
    w.byte(OP_STATE);
    w.byte(u8::from(s.enabled));
    w.count(s.users.len());
    for (name, u) in &s.users {
        w.str(name);
        w.hash(&u.hash);
        w.count(u.roles.len());
        for role in &u.roles {
            w.str(role);
        }
    }
    w.count(s.roles.len());
    for (name, perms) in &s.roles {
        w.str(name);
        w.count(perms.len());
        for p in perms {
            w.perm(p);
        }
    }
    w.0
}

/// Decodes a snapshot's AUTH record (STATE). Names must be in order and distinct,
/// as the encoder writes them, so every state has one encoding.
///
/// # Errors
///
/// A sentence saying why the value does not decode.
pub fn decode_state(value: &[u8]) -> Result<AuthState, String> {
    let mut r = Reader(value);
    let revision = r.u64()?;
    match r.byte()? {
        OP_STATE => {}
        op => return Err(format!("operation {op} where a snapshot holds STATE")),
    }
    let enabled = r.flag()?;
    let mut users = BTreeMap::new();
    for _ in 0..r.count(9)? {
        let name = r.str()?;
        let hash = r.hash()?;
        let mut roles: Vec<String> = Vec::new();
        for _ in 0..r.count(4)? {
            let role = r.str()?;
            if roles.last().is_some_and(|l| *l >= role) {
                return Err(format!("roles of user {name:?} out of order"));
            }
            roles.push(role);
        }
        if users.last_key_value().is_some_and(|(l, _): (&String, _)| *l >= name) {
            return Err("users out of order".into());
        }
        users.insert(name, User { hash, roles });
    }
    let mut roles = BTreeMap::new();
    for _ in 0..r.count(8)? {
        let name = r.str()?;
        let mut perms: Vec<Permission> = Vec::new();
        for _ in 0..r.count(9)? {
            let p = r.perm()?;
            if perms.last().is_some_and(|l| (&l.key, &l.range_end) >= (&p.key, &p.range_end)) {
                return Err(format!("permissions of role {name:?} out of order"));
            }
            perms.push(p);
        }
        if roles.last_key_value().is_some_and(|(l, _): (&String, _)| *l >= name) {
            return Err("roles out of order".into());
        }
        roles.insert(name, perms);
    }
    r.end()?;
    if revision == 0 {
        return Err("auth revision 0".into());
    }
    Ok(AuthState { revision, enabled, users, roles })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_round_trip_and_reject_garbage() {
        let changes = [
            Change::Enable,
            Change::Disable,
            Change::UserAdd { name: "u".into(), hash: None },
            Change::UserAdd { name: "u".into(), hash: Some("$2b$04$x".into()) },
            Change::UserDelete { name: "u".into() },
            Change::UserPassword { name: "u".into(), hash: "h".into() },
            Change::UserGrantRole { user: "u".into(), role: "r".into() },
            Change::UserRevokeRole { user: "u".into(), role: "r".into() },
            Change::RoleAdd { name: "r".into() },
            Change::RoleDelete { name: "r".into() },
            Change::RoleGrantPermission {
                role: "r".into(),
                perm: Permission { kind: PermKind::ReadWrite, key: b"a".to_vec(), range_end: vec![0] },
            },
            Change::RoleRevokePermission { role: "r".into(), key: b"a".to_vec(), range_end: b"b".to_vec() },
        ];
        for (i, c) in changes.iter().enumerate() {
            let v = encode_change(i as u64 + 2, c);
            assert_eq!(decode_change(&v).unwrap(), (i as u64 + 2, c.clone()));
            // Every strict prefix and any trailing byte is refused.
            for cut in 0..v.len() {
                assert!(decode_change(&v[..cut]).is_err(), "{c:?} cut at {cut}");
            }
            let mut longer = v.clone();
            longer.push(0);
            assert!(decode_change(&longer).is_err());
        }
        assert!(decode_change(&[1, 0, 0, 0, 0, 0, 0, 0, 99]).is_err());
    }

    #[test]
    fn state_round_trips() {
        let mut s = AuthState::default();
        s.revision = 9;
        s.enabled = true;
        s.users.insert("root".into(), User { hash: Some("h".into()), roles: vec!["a".into(), "root".into()] });
        s.users.insert("x".into(), User { hash: None, roles: vec![] });
        s.roles.insert(
            "a".into(),
            vec![
                Permission { kind: PermKind::Read, key: b"a".to_vec(), range_end: vec![] },
                Permission { kind: PermKind::Write, key: b"a".to_vec(), range_end: b"b".to_vec() },
            ],
        );
        let v = encode_state(&s);
        assert_eq!(decode_state(&v).unwrap(), s);
        for cut in 0..v.len() {
            assert!(decode_state(&v[..cut]).is_err());
        }
        assert!(decode_change(&v).is_err(), "STATE is no change");
    }
}

#[cfg(test)]
mod seed_tests {
    use super::*;
    use crate::log::record::{decode, RecordKind};

    /// The fuzz seed of AUTH records (fuzz/seeds/record_decode/auth-records) holds
    /// valid records whose values decode: two changes and a state.
    #[test]
    fn the_fuzz_seed_decodes() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/seeds/record_decode/auth-records");
        let bytes = std::fs::read(path).unwrap();
        let mut off = 0;
        let mut values = Vec::new();
        while off < bytes.len() {
            let (r, n) = decode(&bytes[off..]).unwrap();
            assert_eq!(r.kind, RecordKind::Auth);
            values.push(r.value.to_vec());
            off += n;
        }
        assert_eq!(values.len(), 3);
        assert_eq!(decode_change(&values[0]).unwrap().0, 2);
        assert!(matches!(decode_change(&values[1]).unwrap().1, Change::RoleGrantPermission { .. }));
        let state = decode_state(&values[2]).unwrap();
        assert_eq!(encode_state(&state), values[2]);
        assert!(state.enabled && state.users.contains_key("root"));
    }
}
