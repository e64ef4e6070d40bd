//! The durable auth store (`argus_engine::auth`): every call and its etcd error,
//! the root user and role rules, permission checks (a table of cases), durability
//! through reopen, crashes (`MemStorage`) and compaction, a randomized sequence
//! of changes against a simple model (the seed is printed; `ARGUS_SEED=<seed>`
//! replays it), and corrupt auth records.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use argus_engine::auth::{
    hash_password, verify_password, Access, AuthError, AuthStore, PermKind, Permission, RoleInfo, UserInfo, ROOT_ROLE,
    ROOT_USER,
};
use argus_engine::log::record::{self, RecordData, RecordKind};
use argus_engine::log::{CrashMode, FsyncPolicy, MemStorage, Storage};
use argus_engine::store::{prefix_end, Store};
use argus_engine::Error;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const COST: u32 = 4;

mod common;

use common::{open_copy, small_opts};

fn auth_err<T: std::fmt::Debug>(r: argus_engine::Result<T>) -> AuthError {
    match r {
        Err(Error::Auth(e)) => e,
        other => panic!("expected an auth error, got {other:?}"),
    }
}

fn perm(kind: PermKind, key: &[u8], range_end: &[u8]) -> Permission {
    Permission { kind, key: key.to_vec(), range_end: range_end.to_vec() }
}

/// Everything the auth store shows, for comparing two stores.
#[derive(Debug, PartialEq, Eq)]
struct Dump {
    enabled: bool,
    revision: u64,
    users: Vec<(UserInfo, Option<String>)>,
    roles: Vec<RoleInfo>,
}

fn dump(a: &AuthStore) -> Dump {
    Dump {
        enabled: a.is_enabled(),
        revision: a.revision(),
        users: a.user_list().iter().map(|u| (a.user_get(u).unwrap(), a.password_hash(u))).collect(),
        roles: a.role_list().iter().map(|r| a.role_get(r).unwrap()).collect(),
    }
}

#[test]
fn every_call_and_its_error() {
    let storage = MemStorage::new();
    let o = small_opts(FsyncPolicy::Always, 1 << 20);
    let s = open_copy(&storage, &o);
    let a = s.auth();
    assert_eq!((a.is_enabled(), a.revision()), (false, 1), "a fresh store: disabled, auth revision 1");
    assert!(a.user_list().is_empty() && a.role_list().is_empty());

    // Users.
    let hash = hash_password("secret", COST);
    assert!(verify_password("secret", &hash) && !verify_password("Secret", &hash) && !verify_password("x", "junk"));
    a.user_add("alice", Some(hash.clone())).unwrap();
    assert_eq!(a.revision(), 2);
    assert_eq!(auth_err(a.user_add("alice", None)), AuthError::UserAlreadyExists);
    assert_eq!(auth_err(a.user_add("", None)), AuthError::UserEmpty);
    a.user_add("bob", None).unwrap();
    assert_eq!(a.password_hash("alice"), Some(hash));
    assert_eq!(a.password_hash("bob"), None, "a user without password");
    assert_eq!(a.password_hash("nobody"), None);
    assert_eq!(a.user_list(), ["alice", "bob"]);
    assert_eq!(a.user_get("bob").unwrap(), UserInfo { name: "bob".into(), roles: vec![] });
    assert_eq!(auth_err(a.user_get("carol")), AuthError::UserNotFound);
    let h2 = hash_password("other", COST);
    a.user_change_password("bob", h2.clone()).unwrap();
    assert!(verify_password("other", &a.password_hash("bob").unwrap()));
    assert_eq!(auth_err(a.user_change_password("carol", h2)), AuthError::UserNotFound);

    // Roles.
    a.role_add("r1").unwrap();
    a.role_add("r0").unwrap();
    assert_eq!(auth_err(a.role_add("r1")), AuthError::RoleAlreadyExists);
    assert_eq!(auth_err(a.role_add("")), AuthError::RoleEmpty);
    assert_eq!(a.role_list(), ["r0", "r1"]);
    assert_eq!(auth_err(a.role_get("rx")), AuthError::RoleNotFound);
    a.role_grant_permission("r1", perm(PermKind::Read, b"/b", b"")).unwrap();
    a.role_grant_permission("r1", perm(PermKind::Write, b"/a", b"/c")).unwrap();
    a.role_grant_permission("r1", perm(PermKind::Read, b"/a", b"\0")).unwrap();
    let before = a.revision();
    // The same (key, range_end) again replaces the kind (and is a change, as etcd).
    a.role_grant_permission("r1", perm(PermKind::ReadWrite, b"/b", b"")).unwrap();
    assert_eq!(a.revision(), before + 1);
    assert_eq!(
        a.role_get("r1").unwrap().permissions,
        [
            perm(PermKind::Read, b"/a", b"\0"),
            perm(PermKind::Write, b"/a", b"/c"),
            perm(PermKind::ReadWrite, b"/b", b"")
        ],
        "sorted by (key, range_end)"
    );
    assert_eq!(auth_err(a.role_grant_permission("rx", perm(PermKind::Read, b"/a", b""))), AuthError::RoleNotFound);
    for (key, end) in [(&b""[..], &b""[..]), (b"/b", b"/a"), (b"/b", b"/b"), (b"", b"\0")] {
        assert_eq!(
            auth_err(a.role_grant_permission("r1", perm(PermKind::Read, key, end))),
            AuthError::InvalidAuthManagement,
            "invalid range {key:?}..{end:?}"
        );
    }
    // etcd checks the range before the role.
    assert_eq!(
        auth_err(a.role_grant_permission("rx", perm(PermKind::Read, b"", b""))),
        AuthError::InvalidAuthManagement
    );
    assert_eq!(auth_err(a.role_revoke_permission("r1", b"/a", b"")), AuthError::PermissionNotGranted);
    assert_eq!(auth_err(a.role_revoke_permission("rx", b"/a", b"")), AuthError::RoleNotFound);
    a.role_revoke_permission("r1", b"/a", b"/c").unwrap();
    assert_eq!(a.role_get("r1").unwrap().permissions.len(), 2);

    // Grants.
    a.user_grant_role("alice", "r1").unwrap();
    a.user_grant_role("alice", "r0").unwrap();
    let before = a.revision();
    a.user_grant_role("alice", "r1").unwrap();
    assert_eq!(a.revision(), before, "granting a role the user has changes nothing (etcd)");
    assert_eq!(a.user_get("alice").unwrap().roles, ["r0", "r1"]);
    assert_eq!(auth_err(a.user_grant_role("carol", "r1")), AuthError::UserNotFound);
    assert_eq!(auth_err(a.user_grant_role("alice", "rx")), AuthError::RoleNotFound);
    assert_eq!(auth_err(a.user_revoke_role("alice", "rx")), AuthError::RoleNotGranted);
    assert_eq!(auth_err(a.user_revoke_role("carol", "r1")), AuthError::UserNotFound);
    a.user_revoke_role("alice", "r0").unwrap();
    assert_eq!(a.user_get("alice").unwrap().roles, ["r1"]);
    // Deleting a role revokes it from its users.
    a.user_grant_role("bob", "r1").unwrap();
    a.role_delete("r1").unwrap();
    assert_eq!(auth_err(a.role_delete("r1")), AuthError::RoleNotFound);
    assert!(a.user_get("alice").unwrap().roles.is_empty() && a.user_get("bob").unwrap().roles.is_empty());
    a.user_delete("bob").unwrap();
    assert_eq!(auth_err(a.user_delete("bob")), AuthError::UserNotFound);
    assert_eq!(a.user_list(), ["alice"]);

    // Messages are etcd's.
    assert_eq!(Error::Auth(AuthError::PermissionDenied).to_string(), "etcdserver: permission denied");
    assert_eq!(AuthError::RootRoleNotGranted.to_string(), "etcdserver: root user does not have root role");
    assert_eq!(AuthError::OldRevision.to_string(), "etcdserver: revision of auth store is old");
    assert_eq!(AuthError::AuthFailed.to_string(), "etcdserver: authentication failed, invalid user ID or password");
    // Refused calls wrote nothing: a reopen shows the same.
    let d = dump(a);
    drop(s);
    assert_eq!(dump(open_copy(&storage, &o).auth()), d);
}

#[test]
fn root_user_and_role_rules() {
    let s = open_copy(&MemStorage::new(), &small_opts(FsyncPolicy::Always, 1 << 20));
    let a = s.auth();
    assert_eq!(auth_err(a.enable()), AuthError::RootUserNotExist);
    a.user_add(ROOT_USER, Some(hash_password("pw", COST))).unwrap();
    assert_eq!(auth_err(a.enable()), AuthError::RootRoleNotGranted);
    assert!(!a.is_enabled());
    // The root role need not exist to be granted (etcd); it is then not listed.
    a.user_grant_role(ROOT_USER, ROOT_ROLE).unwrap();
    assert!(a.role_list().is_empty());
    assert_eq!(auth_err(a.role_get(ROOT_ROLE)), AuthError::RoleNotFound);
    assert!(a.is_root(ROOT_USER) && !a.is_root("nobody"));
    let before = a.revision();
    a.enable().unwrap();
    assert!(a.is_enabled());
    assert_eq!(a.revision(), before + 1);
    a.enable().unwrap();
    assert_eq!(a.revision(), before + 1, "enabling when enabled changes nothing");
    assert_eq!(auth_err(a.user_delete(ROOT_USER)), AuthError::InvalidAuthManagement);
    assert_eq!(auth_err(a.user_revoke_role(ROOT_USER, ROOT_ROLE)), AuthError::InvalidAuthManagement);
    assert_eq!(auth_err(a.role_delete(ROOT_ROLE)), AuthError::InvalidAuthManagement);
    // The root role may be added explicitly (etcdctl's `auth enable` does).
    a.role_add(ROOT_ROLE).unwrap();
    assert_eq!(a.role_get(ROOT_ROLE).unwrap().permissions, []);
    // Another user with the root role may do everything.
    a.user_add("admin", None).unwrap();
    a.user_grant_role("admin", ROOT_ROLE).unwrap();
    assert!(a.is_root("admin"));
    assert!(a.check("admin", b"", b"\0", Access::Write) && a.check(ROOT_USER, b"x", b"", Access::Read));
    a.disable().unwrap();
    assert!(!a.is_enabled());
    let before = a.revision();
    a.disable().unwrap();
    assert_eq!(a.revision(), before, "disabling when disabled changes nothing");
    // Disabled: root may be changed.
    a.user_revoke_role(ROOT_USER, ROOT_ROLE).unwrap();
    assert!(!a.is_root(ROOT_USER));
    a.role_delete(ROOT_ROLE).unwrap();
    assert!(!a.is_root("admin"), "deleting the role revokes it");
    a.user_delete(ROOT_USER).unwrap();
}

/// One case of the permission table: the grants of the user's roles, then
/// (key, range_end, access, permitted).
type Case = (
    &'static [&'static [(PermKind, &'static [u8], &'static [u8])]],
    &'static [(&'static [u8], &'static [u8], Access, bool)],
);

#[test]
fn permission_checks() {
    use Access::{Read as R, Write as W};
    use PermKind::{Read, ReadWrite, Write};
    // A prefix's end as a client computes it.
    assert_eq!(prefix_end(b"foo"), b"fop");
    let cases: Vec<(&str, Case)> = vec![
        (
            "single key",
            (
                &[&[(Read, b"k", b"")]],
                &[
                    (b"k", b"", R, true),
                    (b"k", b"", W, false),
                    (b"k0", b"", R, false),
                    (b"j", b"", R, false),
                    (b"k", b"k\0", R, true),
                    (b"k", b"k\0\0", R, false),
                    (b"k", b"l", R, false),
                    (b"k", b"\0", R, false),
                ],
            ),
        ),
        (
            "prefix",
            (
                &[&[(ReadWrite, b"foo", b"fop")]],
                &[
                    (b"foo", b"fop", R, true),
                    (b"foo", b"fop", W, true),
                    (b"foo/a", b"", W, true),
                    (b"foo", b"", R, true),
                    (b"fop", b"", R, false),
                    (b"fo", b"", R, false),
                    (b"foo/a", b"foo/b", R, true),
                    // A request extending past the prefix, or starting before it.
                    (b"foo", b"fop\0", R, false),
                    (b"foo", b"foq", R, false),
                    (b"fo", b"fop", R, false),
                    (b"foo", b"\0", R, false),
                    (b"", b"\0", R, false),
                ],
            ),
        ),
        (
            "from key on",
            (
                &[&[(Write, b"m", b"\0")]],
                &[
                    (b"m", b"\0", W, true),
                    (b"z", b"\0", W, true),
                    (b"m", b"", W, true),
                    (b"\xff\xff", b"", W, true),
                    (b"m", b"zz", W, true),
                    (b"l", b"\0", W, false),
                    (b"l", b"n", W, false),
                    (b"m", b"\0", R, false),
                ],
            ),
        ),
        (
            // As etcd 3.4.23 answered `get b a`, `get b b`, `get a a` (permitted)
            // and `get c b`, `get c c` (refused) for READ [a, c): an empty span is
            // permitted iff its key is.
            "empty spans",
            (
                &[&[(Read, b"a", b"c")]],
                &[
                    (b"b", b"a", R, true),
                    (b"b", b"b", R, true),
                    (b"a", b"a", R, true),
                    (b"c", b"b", R, false),
                    (b"c", b"c", R, false),
                    (b"b", b"a", W, false),
                    (b"d", b"", R, false),
                    (b"\0", b"\0", R, false),
                ],
            ),
        ),
        (
            "read, write, readwrite",
            (
                &[&[(Read, b"a", b"c"), (Write, b"b", b"d"), (ReadWrite, b"x", b"")]],
                &[
                    (b"a", b"c", R, true),
                    (b"a", b"c", W, false),
                    (b"b", b"d", W, true),
                    (b"b", b"d", R, false),
                    (b"b", b"c", R, true),
                    (b"b", b"c", W, true),
                    (b"x", b"", R, true),
                    (b"x", b"", W, true),
                    (b"a", b"d", R, false),
                ],
            ),
        ),
        (
            "several roles merged, adjacent ranges",
            (
                &[&[(Read, b"a", b"b"), (Read, b"c", b"d")], &[(Read, b"b", b"c"), (ReadWrite, b"d", b"")]],
                &[
                    (b"a", b"d", R, true),
                    (b"a", b"d\0", R, true),
                    (b"a", b"d\0\0", R, false),
                    (b"a", b"e", R, false),
                    (b"bz", b"c\xff", R, true),
                    (b"a", b"d", W, false),
                    (b"d", b"", W, true),
                ],
            ),
        ),
        (
            "overlapping ranges and a key inside",
            (
                &[&[(Read, b"a", b"m"), (Read, b"f", b"q"), (Read, b"g", b"")]],
                &[(b"a", b"q", R, true), (b"a", b"q\0", R, false), (b"p", b"", R, true), (b"q", b"", R, false)],
            ),
        ),
        (
            "everything",
            (&[&[(Read, b"\0", b"\0")]], &[(b"\0", b"\0", R, true), (b"", b"\0", R, false), (b"a", b"", R, true)]),
        ),
    ];
    let s = open_copy(&MemStorage::new(), &small_opts(FsyncPolicy::Always, 1 << 20));
    let a = s.auth();
    for (i, (name, (roles, checks))) in cases.iter().enumerate() {
        let user = format!("user{i}");
        a.user_add(&user, None).unwrap();
        for (j, grants) in roles.iter().enumerate() {
            let role = format!("role{i}.{j}");
            a.role_add(&role).unwrap();
            for &(kind, key, end) in grants.iter() {
                a.role_grant_permission(&role, perm(kind, key, end)).unwrap();
            }
            a.user_grant_role(&user, &role).unwrap();
        }
        for &(key, end, access, want) in checks.iter() {
            assert_eq!(
                a.check(&user, key, end, access),
                want,
                "{name}: {access:?} {:?}..{:?}",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(end)
            );
        }
    }
    assert!(!a.check("nobody", b"a", b"", Access::Read), "an unknown user may do nothing");
    // A revocation takes effect at once.
    a.role_revoke_permission("role1.0", b"foo", b"fop").unwrap();
    assert!(!a.check("user1", b"foo", b"", Access::Read));
    a.user_revoke_role("user5", "role5.1").unwrap();
    assert!(!a.check("user5", b"a", b"d", Access::Read) && a.check("user5", b"a", b"b", Access::Read));
}

#[test]
fn on_change_is_called_after_each_change() {
    let s = open_copy(&MemStorage::new(), &small_opts(FsyncPolicy::Never, 1 << 20));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let last = Arc::new(AtomicU64::new(0));
    {
        let seen = Arc::clone(&seen);
        let last = Arc::clone(&last);
        let store = s.clone();
        s.auth().on_change(Box::new(move |rev| {
            // Called outside the locks: the store answers, with the new state.
            assert_eq!(store.auth().revision(), rev);
            last.store(rev, Ordering::SeqCst);
            seen.lock().unwrap().push(rev);
        }));
    }
    let a = s.auth();
    a.user_add("u", None).unwrap();
    a.role_add("r").unwrap();
    a.user_grant_role("u", "r").unwrap();
    a.user_grant_role("u", "r").unwrap(); // no change: no call
    assert!(a.role_add("r").is_err()); // refused: no call
    assert_eq!(*seen.lock().unwrap(), [2, 3, 4]);
    assert_eq!(last.load(Ordering::SeqCst), 4);
}

/// A few changes of every kind, leaving auth enabled.
fn populate(a: &AuthStore) {
    a.user_add(ROOT_USER, Some(hash_password("rootpw", COST))).unwrap();
    a.user_add("alice", Some(hash_password("a", COST))).unwrap();
    a.user_add("nopw", None).unwrap();
    a.user_add("gone", None).unwrap();
    a.role_add("reader").unwrap();
    a.role_add("writer").unwrap();
    a.role_add("tmp").unwrap();
    a.role_grant_permission("reader", perm(PermKind::Read, b"/app/", &prefix_end(b"/app/"))).unwrap();
    a.role_grant_permission("writer", perm(PermKind::ReadWrite, b"/w", b"\0")).unwrap();
    a.role_grant_permission("writer", perm(PermKind::Write, b"/x", b"")).unwrap();
    a.role_revoke_permission("writer", b"/x", b"").unwrap();
    a.user_grant_role("alice", "reader").unwrap();
    a.user_grant_role("alice", "writer").unwrap();
    a.user_grant_role("alice", "tmp").unwrap();
    a.user_revoke_role("alice", "writer").unwrap();
    a.role_delete("tmp").unwrap();
    a.user_delete("gone").unwrap();
    a.user_change_password("nopw", hash_password("now", COST)).unwrap();
    a.user_grant_role(ROOT_USER, ROOT_ROLE).unwrap();
    a.enable().unwrap();
}

#[test]
fn every_change_survives_reopen_and_a_crash() {
    // Under fsync=never too: auth changes are fsynced whatever the policy.
    for policy in [FsyncPolicy::Never, FsyncPolicy::Batch, FsyncPolicy::Always] {
        let storage = MemStorage::new();
        let o = small_opts(policy, 1 << 20);
        let s = open_copy(&storage, &o);
        s.put(b"/a", b"1").unwrap();
        populate(s.auth());
        s.put(b"/b", b"1").unwrap();
        let want = dump(s.auth());
        assert_eq!(want.revision, 21);
        assert!(want.enabled);
        // A crash that loses every unsynced write keeps every acknowledged change.
        let crashed = storage.crash(CrashMode::DropUnsynced);
        drop(s);
        let s = open_copy(&crashed, &o);
        assert_eq!(dump(s.auth()), want, "{policy:?} after a crash");
        assert!(s.auth().check("alice", b"/app/x", b"", Access::Read));
        assert!(!s.auth().check("alice", b"/w", b"", Access::Read));
        // Changes go on from there, and a plain reopen keeps them too.
        s.auth().disable().unwrap();
        s.auth().user_delete(ROOT_USER).unwrap();
        let want = dump(s.auth());
        drop(s);
        let s = open_copy(&crashed, &o);
        assert_eq!(dump(s.auth()), want, "{policy:?} after a reopen");
        assert_eq!(s.auth().revision(), 23);
    }
}

#[test]
fn a_torn_auth_record_at_the_tail_is_dropped() {
    let storage = MemStorage::new();
    let o = small_opts(FsyncPolicy::Never, 1 << 20);
    let s = open_copy(&storage, &o);
    s.auth().user_add("a", None).unwrap();
    let want = dump(s.auth());
    s.auth().role_add("r").unwrap();
    // Cut the last auth record in half.
    let seg = storage.list().unwrap().into_iter().find(|n| n.starts_with("seg-")).unwrap();
    let bytes = storage.read_file(&seg).unwrap();
    let records = scan(&bytes);
    let (off, len) = *records.last().unwrap();
    let crashed = storage.crash(CrashMode::DropUnsynced);
    drop(s);
    let f = crashed.open(&seg).unwrap();
    f.write_at((off + len / 2) as u64, &vec![0u8; len - len / 2]).unwrap();
    f.sync().unwrap();
    let (s, report) = Store::open_with_report(Arc::new(crashed.clone()), o.clone()).unwrap();
    assert!(report.dropped.is_some(), "the torn record is reported as a dropped tail");
    assert_eq!(dump(s.auth()), want);
}

/// (offset, length) of every record of a segment's bytes.
fn scan(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut off = record::FILE_HEADER;
    let mut out = Vec::new();
    while let Ok((_, n)) = record::decode(&bytes[off..]) {
        out.push((off, n));
        off += n;
    }
    out
}

#[test]
fn a_corrupt_auth_record_is_reported() {
    let o = small_opts(FsyncPolicy::Always, 1 << 20);
    // (what the record's value is, a word for the message)
    let values: Vec<(Vec<u8>, &str)> = vec![
        // Does not decode: an unknown operation.
        (
            {
                let mut v = 3u64.to_le_bytes().to_vec();
                v.push(99);
                v
            },
            "does not decode",
        ),
        // Trailing bytes after a valid ROLE_ADD.
        (
            {
                let mut v = 3u64.to_le_bytes().to_vec();
                v.extend_from_slice(&[8, 1, 0, 0, 0, b'r', 7]);
                v
            },
            "does not decode",
        ),
        // Decodes, but skips auth revision 3.
        (
            {
                let mut v = 4u64.to_le_bytes().to_vec();
                v.extend_from_slice(&[8, 1, 0, 0, 0, b'r']);
                v
            },
            "follows",
        ),
        // Decodes, but the state refuses it (the user exists).
        (
            {
                let mut v = 3u64.to_le_bytes().to_vec();
                v.extend_from_slice(&[3, 1, 0, 0, 0, b'a', 0]);
                v
            },
            "refused",
        ),
    ];
    for (value, word) in values {
        let storage = MemStorage::new();
        let s = open_copy(&storage, &o);
        s.put(b"/k", b"v").unwrap();
        s.auth().user_add("a", None).unwrap();
        let seg = storage.list().unwrap().into_iter().find(|n| n.starts_with("seg-")).unwrap();
        let image = storage.crash(CrashMode::DropUnsynced);
        drop(s);
        let bytes = image.read_file(&seg).unwrap();
        let (off, len) = *scan(&bytes).last().unwrap();
        // A CRC-valid AUTH record after the last one, where the next would go.
        let mut rec = Vec::new();
        record::encode(&RecordData::lease_record(2, RecordKind::Auth, &value), &mut rec);
        let f = image.open(&seg).unwrap();
        f.write_at((off + len) as u64, &rec).unwrap();
        f.sync().unwrap();
        match Store::open_storage(Arc::new(image), o.clone()) {
            Err(Error::Corrupt { file, offset, reason }) => {
                assert!(file.to_string_lossy().ends_with(&seg), "{file:?}");
                assert_eq!(offset, (off + len) as u64);
                assert!(reason.contains(word), "{reason}");
            }
            Err(e) => panic!("expected Corrupt, got {e}"),
            Ok(_) => panic!("expected Corrupt, the store opened"),
        }
    }
}

#[test]
fn compaction_carries_the_auth_state() {
    let storage = MemStorage::new();
    let o = small_opts(FsyncPolicy::Batch, 4096);
    let s = open_copy(&storage, &o);
    let value = vec![b'v'; 300];
    // Changes spread over many segments, between revisions.
    let mut n = 0;
    let mut step = |s: &Store| {
        for _ in 0..12 {
            n += 1;
            s.put(format!("/k{}", n % 7).as_bytes(), &value).unwrap();
        }
    };
    step(&s);
    s.auth().user_add("u1", None).unwrap();
    step(&s);
    s.auth().role_add("r1").unwrap();
    step(&s);
    s.auth().role_grant_permission("r1", perm(PermKind::Read, b"/k", b"/l")).unwrap();
    step(&s);
    s.auth().user_grant_role("u1", "r1").unwrap();
    step(&s);
    let segments_before = storage.list().unwrap().iter().filter(|n| n.starts_with("seg-")).count();
    assert!(segments_before > 4, "{segments_before} segments");
    s.compact(s.current_revision() - 2).unwrap();
    // Changes after the snapshot, in the kept segments.
    s.auth().user_add("u2", None).unwrap();
    step(&s);
    let names = storage.list().unwrap();
    let segments_after = names.iter().filter(|n| n.starts_with("seg-")).count();
    assert!(segments_after < segments_before, "compaction deleted the old segments ({segments_after})");
    assert_eq!(names.iter().filter(|n| n.ends_with(".snap")).count(), 1);
    let want = dump(s.auth());
    assert_eq!(want.revision, 6);
    drop(s);
    let s = open_copy(&storage, &o);
    assert_eq!(dump(s.auth()), want);
    assert!(s.auth().check("u1", b"/k3", b"", Access::Read));
    // A second compaction, with no auth record left in any kept segment.
    step(&s);
    s.compact(s.current_revision()).unwrap();
    step(&s);
    drop(s);
    let s = open_copy(&storage, &o);
    assert_eq!(dump(s.auth()), want);
    // And one after a change made right after it, then a crash.
    s.auth().user_delete("u2").unwrap();
    let want = dump(s.auth());
    let crashed = storage.crash(CrashMode::DropUnsynced);
    drop(s);
    assert_eq!(dump(open_copy(&crashed, &o).auth()), want);
}

// ---------------------------------------------------------------------------
// The randomized test and its model.

/// A role's permissions in the model: (key, range_end) → kind.
type RolePerms = BTreeMap<(Vec<u8>, Vec<u8>), PermKind>;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Model {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, (Option<String>, BTreeSet<String>)>,
    roles: BTreeMap<String, RolePerms>,
}

impl Model {
    fn new() -> Model {
        Model { revision: 1, ..Default::default() }
    }

    fn dump(&self) -> Dump {
        Dump {
            enabled: self.enabled,
            revision: self.revision,
            users: self
                .users
                .iter()
                .map(|(n, (h, r))| (UserInfo { name: n.clone(), roles: r.iter().cloned().collect() }, h.clone()))
                .collect(),
            roles: self
                .roles
                .iter()
                .map(|(n, p)| RoleInfo {
                    name: n.clone(),
                    permissions: p.iter().map(|((k, e), kind)| perm(*kind, k, e)).collect(),
                })
                .collect(),
        }
    }

    /// Whether point `p` is in one of `user`'s permitted intervals for `access`.
    fn covers(&self, user: &str, p: &[u8], access: Access) -> bool {
        let Some((_, roles)) = self.users.get(user) else { return false };
        roles.iter().filter_map(|r| self.roles.get(r)).flatten().any(|((k, e), kind)| {
            let fits = match access {
                Access::Read => *kind != PermKind::Write,
                Access::Write => *kind != PermKind::Read,
            };
            let inside = if e.is_empty() {
                p == k.as_slice()
            } else if e.as_slice() == [0] {
                p >= k.as_slice()
            } else {
                p >= k.as_slice() && p < e.as_slice()
            };
            fits && inside
        })
    }

    /// The check, by brute force: coverage only changes at the boundaries of the
    /// intervals (the universe's keys and each with "\0" appended), so a span is
    /// covered iff every boundary in it, and its start, is.
    fn check(&self, user: &str, key: &[u8], end: &[u8], access: Access, universe: &[Vec<u8>]) -> bool {
        let Some((_, roles)) = self.users.get(user) else { return false };
        if roles.contains(ROOT_ROLE) {
            return true;
        }
        if end.is_empty() {
            return self.covers(user, key, access);
        }
        if end != [0] && end <= key {
            return self.covers(user, key, access);
        }
        let mut points: Vec<Vec<u8>> = vec![key.to_vec()];
        for u in universe {
            points.push(u.clone());
            let mut z = u.clone();
            z.push(0);
            points.push(z);
        }
        let in_span = |p: &[u8]| p >= key && (end == [0] || p < end);
        // To the end: also the keys past every boundary must be covered.
        let mut tail = universe.iter().max().cloned().unwrap_or_default();
        tail.extend_from_slice(b"\xff\xff");
        if end == [0] {
            points.push(tail);
        }
        points.iter().filter(|p| in_span(p)).all(|p| self.covers(user, p, access))
    }

    fn apply(&mut self, op: &Op) -> Result<(), AuthError> {
        let changed = match op {
            Op::Enable => {
                if self.enabled {
                    false
                } else {
                    let root = self.users.get(ROOT_USER).ok_or(AuthError::RootUserNotExist)?;
                    if !root.1.contains(ROOT_ROLE) {
                        return Err(AuthError::RootRoleNotGranted);
                    }
                    self.enabled = true;
                    true
                }
            }
            Op::Disable => std::mem::replace(&mut self.enabled, false),
            Op::UserAdd(n, h) => {
                if n.is_empty() {
                    return Err(AuthError::UserEmpty);
                }
                if self.users.contains_key(n) {
                    return Err(AuthError::UserAlreadyExists);
                }
                self.users.insert(n.clone(), (h.clone(), BTreeSet::new()));
                true
            }
            Op::UserDelete(n) => {
                if self.enabled && n == ROOT_USER {
                    return Err(AuthError::InvalidAuthManagement);
                }
                self.users.remove(n).ok_or(AuthError::UserNotFound)?;
                true
            }
            Op::Password(n, h) => {
                self.users.get_mut(n).ok_or(AuthError::UserNotFound)?.0 = Some(h.clone());
                true
            }
            Op::Grant(u, r) => {
                if !self.users.contains_key(u) {
                    return Err(AuthError::UserNotFound);
                }
                if r != ROOT_ROLE && !self.roles.contains_key(r) {
                    return Err(AuthError::RoleNotFound);
                }
                self.users.get_mut(u).unwrap().1.insert(r.clone())
            }
            Op::Revoke(u, r) => {
                if self.enabled && u == ROOT_USER && r == ROOT_ROLE {
                    return Err(AuthError::InvalidAuthManagement);
                }
                let user = self.users.get_mut(u).ok_or(AuthError::UserNotFound)?;
                if !user.1.remove(r) {
                    return Err(AuthError::RoleNotGranted);
                }
                true
            }
            Op::RoleAdd(r) => {
                if r.is_empty() {
                    return Err(AuthError::RoleEmpty);
                }
                if self.roles.contains_key(r) {
                    return Err(AuthError::RoleAlreadyExists);
                }
                self.roles.insert(r.clone(), BTreeMap::new());
                true
            }
            Op::RoleDelete(r) => {
                if self.enabled && r == ROOT_ROLE {
                    return Err(AuthError::InvalidAuthManagement);
                }
                self.roles.remove(r).ok_or(AuthError::RoleNotFound)?;
                for u in self.users.values_mut() {
                    u.1.remove(r);
                }
                true
            }
            Op::PermGrant(r, p) => {
                let valid = !p.key.is_empty() && (p.range_end.is_empty() || p.range_end == [0] || p.key < p.range_end);
                if !valid {
                    return Err(AuthError::InvalidAuthManagement);
                }
                self.roles
                    .get_mut(r)
                    .ok_or(AuthError::RoleNotFound)?
                    .insert((p.key.clone(), p.range_end.clone()), p.kind);
                true
            }
            Op::PermRevoke(r, k, e) => {
                let role = self.roles.get_mut(r).ok_or(AuthError::RoleNotFound)?;
                role.remove(&(k.clone(), e.clone())).ok_or(AuthError::PermissionNotGranted)?;
                true
            }
        };
        if changed {
            self.revision += 1;
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
enum Op {
    Enable,
    Disable,
    UserAdd(String, Option<String>),
    UserDelete(String),
    Password(String, String),
    Grant(String, String),
    Revoke(String, String),
    RoleAdd(String),
    RoleDelete(String),
    PermGrant(String, Permission),
    PermRevoke(String, Vec<u8>, Vec<u8>),
}

fn run(a: &AuthStore, op: &Op) -> Result<(), AuthError> {
    let r = match op {
        Op::Enable => a.enable(),
        Op::Disable => a.disable(),
        Op::UserAdd(n, h) => a.user_add(n, h.clone()),
        Op::UserDelete(n) => a.user_delete(n),
        Op::Password(n, h) => a.user_change_password(n, h.clone()),
        Op::Grant(u, r) => a.user_grant_role(u, r),
        Op::Revoke(u, r) => a.user_revoke_role(u, r),
        Op::RoleAdd(r) => a.role_add(r),
        Op::RoleDelete(r) => a.role_delete(r),
        Op::PermGrant(r, p) => a.role_grant_permission(r, p.clone()),
        Op::PermRevoke(r, k, e) => a.role_revoke_permission(r, k, e),
    };
    match r {
        Ok(()) => Ok(()),
        Err(Error::Auth(e)) => Err(e),
        Err(e) => panic!("{op:?}: {e}"),
    }
}

#[test]
fn random_changes_against_a_model() {
    let seed = common::seed("random_changes_against_a_model");
    let mut rng = StdRng::seed_from_u64(seed);
    let users = ["root", "u1", "u2", "u3", ""];
    let roles = ["root", "r1", "r2", "r3", ""];
    let keys: Vec<Vec<u8>> = [&b"a"[..], b"ab", b"b", b"c", b"ca", b"d"].iter().map(|k| k.to_vec()).collect();
    let ends: Vec<Vec<u8>> =
        [&b""[..], b"\0", b"ab", b"b", b"c", b"d", b"e", b"a"].iter().map(|k| k.to_vec()).collect();
    // Every key and range end used: the boundaries of every interval.
    let universe: Vec<Vec<u8>> =
        keys.iter().chain(&ends).filter(|k| !k.is_empty() && k.as_slice() != [0]).cloned().collect();
    let pick = |rng: &mut StdRng, xs: &[&str]| xs[rng.random_range(0..xs.len())].to_string();
    let o = small_opts(FsyncPolicy::Never, 4096);
    let mut storage = MemStorage::new();
    let mut s = open_copy(&storage, &o);
    let mut model = Model::new();
    for step in 0..600 {
        let u = pick(&mut rng, &users);
        let r = pick(&mut rng, &roles);
        let k = keys[rng.random_range(0..keys.len())].clone();
        let e = if rng.random_bool(0.1) { b"".to_vec() } else { ends[rng.random_range(0..ends.len())].clone() };
        let kind = [PermKind::Read, PermKind::Write, PermKind::ReadWrite][rng.random_range(0..3)];
        let op = match rng.random_range(0..20) {
            0 => Op::Enable,
            1 => Op::Disable,
            2 | 3 => Op::UserAdd(u, rng.random_bool(0.5).then(|| format!("hash{step}"))),
            4 => Op::UserDelete(u),
            5 => Op::Password(u, format!("pw{step}")),
            6..=8 => Op::Grant(u, r),
            9 => Op::Revoke(u, r),
            10 | 11 => Op::RoleAdd(r),
            12 => Op::RoleDelete(r),
            13..=16 => Op::PermGrant(r, perm(kind, if rng.random_bool(0.05) { b"" } else { &k }, &e)),
            _ => Op::PermRevoke(r, k, e),
        };
        let want = model.apply(&op);
        let got = run(s.auth(), &op);
        assert_eq!(got, want, "seed {seed} step {step}: {op:?}");
        // Revisions move between auth changes, sometimes compacted.
        if rng.random_bool(0.3) {
            s.put(format!("/k{}", rng.random_range(0..5)).as_bytes(), &[b'v'; 200]).unwrap();
        }
        if rng.random_bool(0.02) && s.current_revision() > s.compact_revision() + 1 {
            s.compact(s.current_revision() - 1).unwrap();
        }
        if step % 10 == 0 {
            assert_eq!(dump(s.auth()), model.dump(), "seed {seed} step {step}");
            for _ in 0..20 {
                let user = pick(&mut rng, &users[..4]);
                let key = keys[rng.random_range(0..keys.len())].clone();
                let end = ends[rng.random_range(0..ends.len())].clone();
                let access = if rng.random_bool(0.5) { Access::Read } else { Access::Write };
                assert_eq!(
                    s.auth().check(&user, &key, &end, access),
                    model.check(&user, &key, &end, access, &universe),
                    "seed {seed} step {step}: {user} {access:?} {:?}..{:?}",
                    String::from_utf8_lossy(&key),
                    String::from_utf8_lossy(&end)
                );
            }
        }
        // Reopen at random points: plainly, or after a crash (acknowledged auth
        // changes are durable whatever the fsync policy).
        if rng.random_bool(0.04) {
            if rng.random_bool(0.5) {
                storage = storage.crash(CrashMode::DropUnsynced);
            }
            drop(s);
            s = open_copy(&storage, &o);
            assert_eq!(dump(s.auth()), model.dump(), "seed {seed} after reopen at step {step}");
        }
    }
}

#[test]
fn changes_concurrent_with_writes_and_compactions_survive_a_crash() {
    let storage = MemStorage::new();
    let o = small_opts(FsyncPolicy::Batch, 4096);
    let s = open_copy(&storage, &o);
    let writer = {
        let s = s.clone();
        std::thread::spawn(move || {
            for i in 0..300u32 {
                s.put(format!("/k{}", i % 9).as_bytes(), &[b'v'; 150]).unwrap();
                if i % 25 == 24 {
                    s.compact(s.current_revision() - 3).unwrap();
                }
            }
        })
    };
    let a = s.auth();
    for i in 0..40 {
        a.user_add(&format!("u{i}"), None).unwrap();
        a.role_add(&format!("r{i}")).unwrap();
        a.role_grant_permission(&format!("r{i}"), perm(PermKind::Read, format!("/k{}", i % 9).as_bytes(), b""))
            .unwrap();
        a.user_grant_role(&format!("u{i}"), &format!("r{i}")).unwrap();
        if i % 3 == 0 {
            a.user_delete(&format!("u{i}")).unwrap();
        }
    }
    writer.join().unwrap();
    let want = dump(a);
    assert_eq!(want.revision, 1 + 40 * 4 + 14);
    let crashed = storage.crash(CrashMode::DropUnsynced);
    drop(s);
    let s = open_copy(&crashed, &o);
    assert_eq!(dump(s.auth()), want);
    assert!(s.auth().check("u1", b"/k1", b"", Access::Read) && !s.auth().check("u1", b"/k2", b"", Access::Read));
}

#[test]
fn a_backup_carries_the_auth_state() {
    let dir = tempfile::tempdir().unwrap();
    let o = small_opts(FsyncPolicy::Batch, 1 << 16);
    let s = Store::open(dir.path().join("data"), o.clone()).unwrap();
    populate(s.auth());
    for i in 0..50 {
        s.put(format!("/k{i}").as_bytes(), b"v").unwrap();
    }
    s.compact(s.current_revision() - 1).unwrap();
    s.auth().user_add("late", None).unwrap();
    s.put(b"/after", b"v").unwrap();
    let want = dump(s.auth());
    let mut stream = s.backup().unwrap();
    let file = dir.path().join("backup.db");
    std::io::copy(&mut stream, &mut std::fs::File::create(&file).unwrap()).unwrap();
    drop(s);
    argus_engine::backup::restore(&file, &dir.path().join("restored"), o.clone()).unwrap();
    let s = Store::open(dir.path().join("restored"), o).unwrap();
    assert_eq!(dump(s.auth()), want);
}
