//! Maintenance and Cluster through `etcdctl` 3.4, side by side with real etcd 3.4:
//! `member list`, `endpoint health`, `endpoint status`, `endpoint hashkv`, `alarm
//! list` / `disarm`, `defrag` and `snapshot save` print the same on both, after
//! normalizing what must differ (each normalization is documented where it is
//! made: identities, sizes, versions, hashes, paths). Then Argus's own round trip:
//! `etcdctl snapshot save` taken under load, `argus restore`, and the restored
//! server holds the same keys, history and watch events; damaged and foreign
//! files are refused, writing nothing.
//!
//! A known difference not exercised here: `etcdctl endpoint status --cluster` (and
//! the other `--cluster` commands) dial the member's client URL, and etcdctl 3.4's
//! gRPC client then sends the whole URL (`http://127.0.0.1:port`) as the HTTP/2
//! `:authority`; etcd's server accepts it, Argus's HTTP/2 layer (the `h2` crate)
//! resets the stream as malformed.

use std::path::{Path, PathBuf};
use std::process::Command;

use etcd_client::{Client, GetOptions, TxnOp};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::common::{connect, etcdctl, Argus, ArgusProcess, Collected, CtlOutput, Etcd, Spec, PATIENCE};
use crate::etcdctl::assert_same;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// One server under test: its endpoint, and a directory for its snapshot files.
struct Side {
    endpoint: String,
    dir: PathBuf,
}

/// The placeholder for a value checked to be a `u32` hash.
fn hash_placeholder(v: &Value) -> Value {
    assert!(v.as_u64().is_some_and(|h| h <= u64::from(u32::MAX)), "not a 32-bit hash: {v}");
    Value::String("<hash>".into())
}

/// Normalizes JSON printed by etcdctl: the header's identities (`cluster_id`,
/// `member_id`, `raft_term`: each etcd cluster has its own, Argus fixed ones), a
/// member's `ID` (its member id, checked to be the header's), its `peerURLs` (etcd
/// lists its peer listener; Argus has none and lists none), its `clientURLs`
/// (checked to be exactly `http://<endpoint>`), HashKV's `hash` (the two servers
/// hash different bytes: etcd its bbolt keys, Argus its records; checked to be a
/// 32-bit number), `endpoint health`'s probe duration (`took`), and the endpoint.
fn normalize_json(v: &mut Value, side: &Side) {
    if let Some(members) = v.get_mut("members").and_then(Value::as_array_mut) {
        for m in members.iter_mut() {
            let o = m.as_object_mut().expect("a member object");
            o.insert("ID".into(), "<member id>".into());
            o.remove("peerURLs");
            let urls = o.get("clientURLs").cloned().unwrap_or(Value::Null);
            assert_eq!(urls, serde_json::json!([format!("http://{}", side.endpoint)]), "client URLs");
            o.insert("clientURLs".into(), serde_json::json!(["http://<endpoint>"]));
        }
    }
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                match k.as_str() {
                    "cluster_id" | "member_id" | "raft_term" => *x = Value::String(format!("<{k}>")),
                    "hash" => *x = hash_placeholder(x),
                    "took" => *x = Value::String("<duration>".into()),
                    _ if x.as_str() == Some(side.endpoint.as_str()) => *x = Value::String("<endpoint>".into()),
                    _ => normalize_json(x, side),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| normalize_json(x, side)),
        _ => {}
    }
}

/// Normalizes one etcdctl output (see [`normalize_json`]); in plain output: the
/// endpoint and snapshot directory become placeholders, `member list`'s ID and
/// peer-URL columns are masked (the client-URL column is checked), `endpoint
/// hashkv`'s hash is masked, and `endpoint health`'s probe duration.
fn normalize(out: &str, side: &Side) -> String {
    let member_hex = |s: &str| s.len() <= 16 && u64::from_str_radix(s, 16).is_ok();
    out.lines()
        .map(|l| {
            if let Ok(mut v) = serde_json::from_str::<Value>(l) {
                if v.is_object() || v.is_array() {
                    normalize_json(&mut v, side);
                    return format!("{v}\n");
                }
            }
            let cols: Vec<&str> = l.split(", ").collect();
            if cols.len() == 6 && member_hex(cols[0]) && cols[1] == "started" {
                assert_eq!(cols[4], format!("http://{}", side.endpoint), "client URL column of {l:?}");
                return format!("<member id>, started, {}, <peer urls>, http://<endpoint>, {}\n", cols[2], cols[5]);
            }
            if cols.len() == 2 && cols[0] == side.endpoint {
                hash_placeholder(&cols[1].parse::<u64>().map(Value::from).unwrap_or(Value::Null));
                return "<endpoint>, <hash>\n".to_string();
            }
            let l = match l.find("took = ") {
                Some(i) => format!("{}took = <duration>", &l[..i]),
                None => l.to_string(),
            };
            format!("{}\n", l.replace(&side.endpoint, "<endpoint>").replace(&*side.dir.to_string_lossy(), "<dir>"))
        })
        .collect()
}

/// `etcdctl <args>` on `side`, as transcript text.
fn ctl(side: &Side, args: &[&str]) -> (String, CtlOutput) {
    let o = etcdctl(&side.endpoint, args, "");
    let args_text = args.join(" ").replace(&*side.dir.to_string_lossy(), "<dir>");
    let text =
        format!("$ etcdctl {args_text}\n{}{}exit {}\n", normalize(&o.stdout, side), normalize(&o.stderr, side), o.code);
    (text, o)
}

/// The JSON of `etcdctl endpoint hashkv --rev=<rev> -w json`: (hash, compact revision).
fn hashkv(side: &Side, rev: i64) -> (u64, i64) {
    let o = etcdctl(&side.endpoint, &["endpoint", "hashkv", &format!("--rev={rev}"), "-w", "json"], "");
    assert_eq!(o.code, 0, "{o:?}");
    let v: Value = serde_json::from_str(&o.stdout).expect("hashkv json");
    let h = &v[0]["HashKV"];
    (h["hash"].as_u64().expect("hash"), h["compact_revision"].as_i64().expect("compact revision"))
}

/// The maintenance script on one server (both start empty at revision 1).
fn transcript(side: &Side) -> String {
    let mut out = String::new();
    // Revisions 2..=6.
    for args in [
        &["put", "/m/a", "1"][..],
        &["put", "/m/b", "2"],
        &["put", "/m/a", "3"],
        &["del", "/m/b"],
        &["put", "/m/c", "4"],
    ] {
        out += &ctl(side, args).0;
    }
    for args in [
        &["member", "list"][..],
        &["member", "list", "-w", "json"],
        &["endpoint", "health"],
        &["endpoint", "health", "-w", "json"],
        &["endpoint", "hashkv"],
        &["endpoint", "hashkv", "-w", "json"],
        &["endpoint", "hashkv", "--rev=3", "-w", "json"],
        &["endpoint", "hashkv", "--rev=7"],
        &["alarm", "list"],
        &["alarm", "list", "-w", "json"],
        &["alarm", "disarm"],
        &["alarm", "disarm", "-w", "json"],
        &["defrag"],
    ] {
        out += &ctl(side, args).0;
    }
    // HashKV at a revision is a function of the history up to it: later writes do
    // not change it (on either server).
    let before = hashkv(side, 4);
    out += &ctl(side, &["put", "/m/d", "5"]).0; // revision 7
    out += &format!("hashkv at 4 unchanged by a later write: {}\n", hashkv(side, 4) == before);
    assert_ne!(hashkv(side, 7).0, hashkv(side, 6).0, "a write changes the hash");
    // Compaction: at or below it, HashKV is refused; above it, it answers with it.
    out += &ctl(side, &["compaction", "4"]).0;
    for args in [
        &["endpoint", "hashkv", "--rev=3"][..],
        &["endpoint", "hashkv", "--rev=4"],
        &["endpoint", "hashkv", "--rev=5", "-w", "json"],
        &["endpoint", "hashkv", "-w", "json"],
    ] {
        out += &ctl(side, args).0;
    }
    let snap = side.dir.join("snap.db");
    let snap_arg = snap.to_string_lossy().into_owned();
    let (text, o) = ctl(side, &["snapshot", "save", &snap_arg]);
    assert_eq!(o.code, 0, "{o:?}");
    out += &text;
    // What etcdctl checks and what both servers send: whole 512-byte blocks and
    // then the SHA-256 of them.
    let bytes = std::fs::read(&snap).expect("the saved snapshot");
    let n = bytes.len();
    out += &format!(
        "snapshot: {} bytes mod 512, SHA-256 trailer matches: {}, no .part left: {}\n",
        n % 512,
        bytes[n - 32..] == Sha256::digest(&bytes[..n - 32])[..],
        !side.dir.join("snap.db.part").exists()
    );
    let missing = side.dir.join("no/such/dir/snap.db").to_string_lossy().into_owned();
    out += &ctl(side, &["snapshot", "save", &missing]).0;
    out
}

/// The `endpoint status -w json` fields, compared one by one: the same fields
/// present on both; `leader` is the header's member (a single member leads);
/// `raftTerm` is the header's term; the raft indexes are numbers at or above the
/// header revision (etcd's count raft entries, Argus's are its revision); the
/// database sizes are positive with `dbSizeInUse <= dbSize` (etcd's are bbolt's
/// file and pages in use, Argus's the data directory's allocated bytes and the
/// bytes of records in its files); the version is a 3.4 one; no errors, not a
/// learner (both omitted when empty, as etcd prints them).
fn status_fields(side: &Side) -> String {
    let o = etcdctl(&side.endpoint, &["endpoint", "status", "-w", "json"], "");
    assert_eq!(o.code, 0, "{o:?}");
    let v: Value = serde_json::from_str(&o.stdout).expect("status json");
    let st = &v[0]["Status"];
    let h = &st["header"];
    let rev = h["revision"].as_u64().expect("header revision");
    assert_eq!(st["leader"], h["member_id"], "{st}");
    assert_eq!(st["raftTerm"], h["raft_term"], "{st}");
    for k in ["raftIndex", "raftAppliedIndex"] {
        assert!(st[k].as_u64().is_some_and(|i| i >= rev), "{k} in {st}");
    }
    let (size, used) = (st["dbSize"].as_i64().expect("dbSize"), st["dbSizeInUse"].as_i64().expect("dbSizeInUse"));
    assert!(0 < used && used <= size, "{st}");
    assert!(st["version"].as_str().is_some_and(|v| v.starts_with("3.4.")), "{st}");
    let mut keys: Vec<String> = st.as_object().expect("status object").keys().cloned().collect();
    keys.sort();
    format!("endpoint {}; status fields {keys:?}; header revision {rev}\n", v[0]["Endpoint"] == side.endpoint.as_str())
}

fn start_both() -> (Etcd, Argus) {
    let etcd = std::thread::spawn(Etcd::start);
    let argus = Argus::start();
    (etcd.join().expect("etcd start"), argus)
}

/// member list, endpoint health / status / hashkv, alarm list / disarm, defrag,
/// compaction and HashKV around it, snapshot save (and its error): the same as on
/// etcd.
#[test]
fn etcdctl_maintenance_commands_match_etcd() {
    let (etcd, argus) = start_both();
    let dirs = (tempfile::tempdir().expect("temp dir"), tempfile::tempdir().expect("temp dir"));
    let e = Side { endpoint: etcd.endpoint.clone(), dir: dirs.0.path().to_path_buf() };
    let a = Side { endpoint: argus.endpoint().to_string(), dir: dirs.1.path().to_path_buf() };
    let (te, ta) = std::thread::scope(|s| {
        let he = s.spawn(|| transcript(&e) + &status_fields(&e));
        let ha = s.spawn(|| transcript(&a) + &status_fields(&a));
        (he.join().expect("etcd side"), ha.join().expect("argus side"))
    });
    assert_same("etcdctl maintenance script", &te, &ta);
    // The script ran what it should have.
    for expect in [
        "<member id>, started, default, <peer urls>, http://<endpoint>, false",
        "Finished defragmenting etcd member[<endpoint>]",
        "required revision has been compacted",
        "\"compact_revision\":4",
        "Snapshot saved at <dir>/snap.db",
        "snapshot: 32 bytes mod 512, SHA-256 trailer matches: true",
        "hashkv at 4 unchanged by a later write: true",
    ] {
        assert!(ta.contains(expect), "{expect:?} not in\n{ta}");
    }

    // argus restore: etcd's snapshot is refused, writing nothing; Argus's restores.
    let target = dirs.0.path().join("restored");
    let r = restore(&e.dir.join("snap.db"), &target);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("not a valid Argus backup") && r.stderr.contains("ARGUSBAK"), "{r:?}");
    assert!(!target.exists(), "restore of a foreign file created {}", target.display());
    let r = restore(&a.dir.join("snap.db"), &target);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("revision 7, compaction revision 4, 3 keys"), "{r:?}");
}

/// What `argus restore` printed.
#[derive(Debug)]
struct Restore {
    stdout: String,
    stderr: String,
    code: i32,
}

/// Runs `argus restore <file> --data-dir <dir>` (the built binary).
fn restore(file: &Path, dir: &Path) -> Restore {
    let out = Command::new(env!("CARGO_BIN_EXE_argus"))
        .arg("restore")
        .arg(file)
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run argus restore");
    Restore {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code().unwrap_or(-1),
    }
}

/// `etcdctl snapshot save <file>` against `endpoint`, checked to succeed.
fn snapshot_save(endpoint: &str, file: &Path) {
    let o = etcdctl(endpoint, &["snapshot", "save", &file.to_string_lossy()], "");
    assert_eq!((o.code, o.stdout.clone()), (0, format!("Snapshot saved at {}\n", file.display())), "{o:?}");
}

/// Every key at `rev` as (key, value, create, mod, version), and the count; or the
/// error's text.
async fn keys_at(c: &mut Client, rev: i64) -> Result<(Vec<(String, String, i64, i64, i64)>, i64), String> {
    let r = c.get("", Some(GetOptions::new().with_from_key().with_revision(rev))).await.map_err(|e| e.to_string())?;
    let kvs = r
        .kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                String::from_utf8_lossy(kv.value()).into_owned(),
                kv.create_revision(),
                kv.mod_revision(),
                kv.version(),
            )
        })
        .collect();
    Ok((kvs, r.count()))
}

/// The events a watcher of everything from `from` received, up to revision `to`:
/// (type, key, value, create, mod, version, prev value).
fn events_upto(c: &Collected, to: i64) -> Vec<String> {
    let (whole, _) = crate::common::reassemble(&c.snapshot());
    whole
        .iter()
        .flat_map(|r| r.events.iter())
        .filter_map(|e| {
            let kv = e.kv.as_ref()?;
            (kv.mod_revision <= to).then(|| {
                format!(
                    "{} {}={} {}/{}/{} prev={:?}",
                    e.r#type,
                    String::from_utf8_lossy(&kv.key),
                    String::from_utf8_lossy(&kv.value),
                    kv.create_revision,
                    kv.mod_revision,
                    kv.version,
                    e.prev_kv.as_ref().map(|p| String::from_utf8_lossy(&p.value).into_owned())
                )
            })
        })
        .collect()
}

/// The restore line's numbers: (revision, compaction revision, keys).
fn restored_numbers(line: &str) -> (i64, i64, i64) {
    let num_after = |tag: &str| -> i64 {
        let i = line.find(tag).unwrap_or_else(|| panic!("{tag:?} not in {line:?}")) + tag.len();
        line[i..].split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok()).expect("a number")
    };
    let keys_at = line.find(" keys (").or_else(|| line.find(" key (")).expect("a key count");
    let keys = line[..keys_at].rsplit(' ').next().and_then(|n| n.parse().ok()).expect("key count");
    (num_after(": revision "), num_after("compaction revision "), keys)
}

/// `etcdctl snapshot save` while writers run, `argus restore`, the restored
/// directory served by the `argus` binary: every key, with its revisions and
/// versions, at every revision from the compaction revision to the snapshot's, is
/// the same as on the original server; below it, both say compacted; a watch from
/// the compaction revision delivers the same events (prev_kv included); HashKV
/// agrees at every revision; and the restored server goes on from the snapshot's
/// revision.
#[test]
fn snapshot_save_and_restore_round_trip() {
    let argus = Argus::start();
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let compact_at = 20;
    let (mut client, leases) = rt.block_on(async {
        let mut c = connect(argus.endpoint()).await;
        // Leases: one granted before the compaction, one after, one revoked; keys on
        // the first two (the snapshot must carry the leases and the attachments).
        let before = c.lease_grant(600, None).await.expect("grant").id();
        c.put("/rt/l1", "leased", Some(etcd_client::PutOptions::new().with_lease(before))).await.expect("put");
        for i in 0..40 {
            let key = format!("/rt/{}", i % 6);
            match i % 8 {
                5 => drop(c.delete(key, None).await.expect("delete")),
                6 => {
                    let ops = vec![
                        TxnOp::put(format!("/rt/t{}", i % 3), format!("t{i}"), None),
                        TxnOp::delete(format!("/rt/{}", (i + 1) % 6), None),
                    ];
                    c.txn(etcd_client::Txn::new().and_then(ops)).await.expect("txn");
                }
                _ => drop(c.put(key, format!("v{i}"), None).await.expect("put")),
            }
            if i == 25 {
                c.compact(compact_at, None).await.expect("compact");
            }
        }
        let after = c.lease_grant(700, None).await.expect("grant").id();
        c.put("/rt/l2", "leased", Some(etcd_client::PutOptions::new().with_lease(after))).await.expect("put");
        let gone = c.lease_grant(800, None).await.expect("grant").id();
        c.lease_revoke(gone).await.expect("revoke");
        (c, [(before, 600, "/rt/l1"), (after, 700, "/rt/l2")])
    });
    // Writers keep writing while the snapshot is taken: its cut lands among them.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (endpoint, stop) = (argus.endpoint().to_string(), std::sync::Arc::clone(&stop));
        rt.spawn(async move {
            let mut c = connect(&endpoint).await;
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                c.put(format!("/rt/w{}", i % 4), format!("w{i}"), None).await.expect("background put");
                i += 1;
            }
            i
        })
    };
    let file = dir.path().join("backup.db");
    snapshot_save(argus.endpoint(), &file);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let background = rt.block_on(writer).expect("writer");

    let target = dir.path().join("restored");
    let r = restore(&file, &target);
    assert_eq!(r.code, 0, "{r:?}");
    let (rev, compact, keys) = restored_numbers(r.stdout.trim());
    assert_eq!(compact, compact_at, "{r:?}");
    let current = argus.store.current_revision() as i64;
    assert!(rev > 40 && rev <= current, "snapshot revision {rev}, server at {current}, {background} background puts");
    let restored = ArgusProcess::start(&target, &["--name", "restored"]);

    rt.block_on(async {
        let mut copy = connect(&restored.endpoint()).await;
        let now = copy.get("/rt/0", None).await.expect("get");
        assert_eq!(now.header().expect("header").revision(), rev, "the restored server is at the snapshot's revision");
        assert_eq!(keys_at(&mut client, rev).await.expect("keys").1, keys, "the key count printed");
        for at in compact..=rev {
            assert_eq!(keys_at(&mut client, at).await, keys_at(&mut copy, at).await, "keys at revision {at}");
        }
        let below = keys_at(&mut copy, compact - 1).await.expect_err("compacted");
        assert_eq!(Err(below.clone()), keys_at(&mut client, compact - 1).await.map(|_| ()), "{below}");
        assert!(below.contains("required revision has been compacted"), "{below}");
        for at in compact + 1..=rev {
            let (h1, h2) = (client.hash_kv(at).await.expect("hashkv"), copy.hash_kv(at).await.expect("hashkv"));
            assert_eq!((h1.hash(), h1.compact_version()), (h2.hash(), h2.compact_version()), "HashKV at {at}");
        }

        // A watch of everything from the compaction revision, with prev_kv.
        let spec = [Spec::prefix(1, "/rt/").from(compact).prev()];
        let (w1, w2) = (Collected::open(&client, &spec).await, Collected::open(&copy, &spec).await);
        w1.wait_rev(&[1], rev as u64).await;
        w2.wait_rev(&[1], rev as u64).await;
        let (e1, e2) = (events_upto(&w1, rev), events_upto(&w2, rev));
        assert!(e1.len() as i64 > rev - compact, "{e1:#?}");
        assert_eq!(e1, e2);

        // The leases and their keys came back (with their full TTL).
        let mut ids: Vec<i64> = copy.leases().await.expect("leases").leases().iter().map(|l| l.id()).collect();
        ids.sort();
        let mut want: Vec<i64> = leases.iter().map(|l| l.0).collect();
        want.sort();
        assert_eq!(ids, want);
        for (id, ttl, key) in leases {
            let opts = etcd_client::LeaseTimeToLiveOptions::new().with_keys();
            let t = copy.lease_time_to_live(id, Some(opts)).await.expect("time to live");
            assert_eq!((t.granted_ttl(), t.keys()), (ttl, &[key.as_bytes().to_vec()][..]));
            let kv = copy.get(key, None).await.expect("get");
            assert_eq!(kv.kvs()[0].lease(), id);
        }

        // The restored server is itself: its name, and it goes on writing.
        let members = copy.member_list().await.expect("member list");
        let m = &members.members()[0];
        assert_eq!((m.name(), m.client_urls()), ("restored", &[format!("http://{}", restored.endpoint())][..]));
        let next = copy.put("/rt/after", "restore", None).await.expect("put on the restored server");
        assert_eq!(next.header().expect("header").revision(), rev + 1);
        tokio::time::timeout(PATIENCE, w2.wait_rev(&[1], rev as u64 + 1)).await.expect("the new write is watched");
    });
    drop(restored);
}

/// A damaged backup (a flipped bit, a truncated copy) and a non-empty directory
/// are refused with a message that says so; nothing is written.
#[test]
fn restore_refuses_damaged_files_and_used_directories() {
    let argus = Argus::start();
    let rt = runtime();
    rt.block_on(async {
        let mut c = connect(argus.endpoint()).await;
        for i in 0..10 {
            c.put(format!("/d/{i}"), "x".repeat(300), None).await.expect("put");
        }
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("good.db");
    snapshot_save(argus.endpoint(), &file);
    let good = std::fs::read(&file).expect("backup");
    let n = good.len();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("a flipped bit in a record", flip(&good, n / 2), "SHA-256 trailer does not match"),
        ("a flipped bit in the trailer", flip(&good, n - 1), "SHA-256 trailer does not match"),
        ("a flipped bit in the header", flip(&good, 17), "header block fails its checksum"),
        ("a truncated copy", good[..n - 700].to_vec(), "truncated"),
        ("an empty file", Vec::new(), "truncated"),
    ];
    for (i, (what, bytes, expect)) in cases.into_iter().enumerate() {
        let bad = dir.path().join(format!("bad{i}.db"));
        std::fs::write(&bad, bytes).expect("write the damaged copy");
        let target = dir.path().join(format!("t{i}"));
        let r = restore(&bad, &target);
        assert_eq!(r.code, 1, "{what}: {r:?}");
        assert!(r.stderr.contains("restore failed") && r.stderr.contains(expect), "{what}: {r:?}");
        assert!(r.stdout.is_empty(), "{what}: {r:?}");
        assert!(!target.exists(), "{what}: {} was created", target.display());
    }
    // A directory with anything in it is refused, and left as it was.
    let used = dir.path().join("used");
    std::fs::create_dir(&used).expect("mkdir");
    std::fs::write(used.join("keep.txt"), "mine").expect("write");
    let r = restore(&file, &used);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("is not empty"), "{r:?}");
    assert_eq!(std::fs::read_dir(&used).expect("ls").count(), 1);
    // The good file still restores, into an existing empty directory too.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let r = restore(&file, &empty);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("never compacted, 10 keys"), "{r:?}");
}

fn flip(b: &[u8], at: usize) -> Vec<u8> {
    let mut v = b.to_vec();
    v[at] ^= 0x20;
    v
}

/// The shape of a `Maintenance.Snapshot` stream, through the `etcd-client` crate.
async fn snapshot_shape(endpoint: &str) -> String {
    let mut c = connect(endpoint).await;
    for i in 0..200 {
        c.put(format!("/s/{i}"), "v".repeat(500), None).await.expect("put");
    }
    let mut stream = c.snapshot().await.expect("snapshot");
    let mut messages = Vec::new();
    while let Some(m) = stream.message().await.expect("snapshot message") {
        messages.push((m.header().is_some(), m.remaining_bytes(), m.blob().to_vec()));
    }
    let (last, body) = messages.split_last().expect("at least the checksum");
    let total: u64 = body.iter().map(|(_, _, b)| b.len() as u64).sum();
    let mut sent = 0;
    let mut counts_down = true;
    for (_, remaining, blob) in body {
        sent += blob.len() as u64;
        counts_down &= *remaining == total - sent;
    }
    let all: Vec<u8> = body.iter().flat_map(|(_, _, b)| b.iter().copied()).collect();
    format!(
        "several messages: {}; any header: {}; remaining bytes count the body down to 0: {counts_down}; \
         body a whole number of 512-byte blocks: {}; last message: {} bytes, remaining {}, the SHA-256 of the body: {}\n",
        body.len() > 1,
        messages.iter().any(|(h, _, _)| *h),
        all.len().is_multiple_of(512),
        last.2.len(),
        last.1,
        last.2[..] == Sha256::digest(&all)[..],
    )
}

/// `Maintenance.Snapshot` on the wire: a stream of body chunks whose
/// `remaining_bytes` count down to 0, then the SHA-256 of the body alone, and no
/// header in any message: as etcd sends it.
#[test]
fn snapshot_stream_matches_etcd() {
    let (etcd, argus) = start_both();
    let rt = runtime();
    let (e, a) = rt.block_on(async { tokio::join!(snapshot_shape(&etcd.endpoint), snapshot_shape(argus.endpoint())) });
    assert_same("snapshot stream", &e, &a);
    assert!(
        a.contains("remaining bytes count the body down to 0: true") && a.contains("SHA-256 of the body: true"),
        "{a}"
    );
}
