//! Leases side by side with real etcd 3.4: `etcdctl lease grant|revoke|timetolive
//! [--keys]|list|keep-alive` and `put --lease|--ignore-lease` (outputs compared
//! after the normalizations below), a watch seeing the DELETEs of an expiry (one
//! revision, with prev_kv), many leases kept alive on one stream, and leases
//! through a restart and `kill -9` (nothing attached is lost, nothing expires
//! early, and the TTL starts again when the server is ready).
//!
//! Normalizations, each because the two servers must differ there:
//! * lease IDs: etcd makes them from its member ID and a clock, Argus at random;
//!   each ID a script was granted becomes `$L1`, `$L2`, … (hex and decimal forms);
//! * `remaining(Ns)` / `"ttl":N` of a live lease: seconds left depend on when the
//!   command ran; they are checked to lie within 5 s of the granted TTL, then
//!   masked;
//! * `lease list`: etcd lists leases in map order, so the ID lines are sorted;
//! * JSON headers: cluster and member IDs and the raft term (as in `etcdctl.rs`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use etcd_client::{EventType, GetOptions, LeaseGrantOptions, PutOptions, WatchOptions};
use serde_json::Value;

use crate::common::{connect, etcdctl, http_get, metric, Argus, ArgusProcess, Etcd, PATIENCE};

/// Replaces lease IDs (hex and decimal) with their names, masks the seconds left
/// of a live lease (checking them), sorts `lease list` lines and normalizes JSON
/// headers.
fn normalize(out: &str, ids: &HashMap<String, String>) -> String {
    let mut lines: Vec<String> = Vec::new();
    for l in out.lines() {
        let mut l = l.to_string();
        if l.starts_with('{') {
            if let Ok(mut v) = serde_json::from_str::<Value>(&l) {
                normalize_json(&mut v, out);
                l = v.to_string();
            }
        }
        for (hex, name) in ids {
            let dec = i64::from_str_radix(hex, 16).expect("hex id").to_string();
            l = l.replace(hex.as_str(), name).replace(&dec, name);
        }
        if let Some(at) = l.find("remaining(") {
            let rest = &l[at + "remaining(".len()..];
            let end = rest.find("s)").expect("remaining(Ns)");
            let left: i64 = rest[..end].parse().expect("seconds");
            let granted: i64 = l[l.find("TTL(").expect("TTL") + 4..].split('s').next().unwrap().parse().unwrap();
            assert!(left <= granted && left >= granted - 5, "remaining {left}s of {granted}s: {out}");
            l = format!("{}remaining(<left>s){}", &l[..at], &rest[end + 2..]);
        }
        lines.push(l);
    }
    // `lease list`: the ID lines after "found N leases", in any order.
    if let Some(i) = lines.iter().position(|l| l.starts_with("found ")) {
        lines[i + 1..].sort();
    }
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// Masks identity fields (at any depth) and the seconds left of a live lease.
fn normalize_json(v: &mut Value, out: &str) {
    match v {
        Value::Object(o) => {
            for k in ["cluster_id", "member_id", "raft_term"] {
                if o.contains_key(k) {
                    o.insert(k.into(), Value::String(format!("<{k}>")));
                }
            }
            if let (Some(t), Some(g)) = (o.get("ttl").and_then(Value::as_i64), o.get("granted-ttl")) {
                let g = g.as_i64().unwrap_or(0);
                if t > 0 {
                    assert!(t <= g && t >= g - 5, "ttl {t} of {g}: {out}");
                    o.insert("ttl".into(), Value::String("<left>".into()));
                }
            }
            o.values_mut().for_each(|x| normalize_json(x, out));
        }
        Value::Array(a) => a.iter_mut().for_each(|x| normalize_json(x, out)),
        _ => {}
    }
}

/// Runs the script against `endpoint`: `$Ln` in an argument is the n-th lease this
/// server granted in the script.
fn transcript(endpoint: &str, script: &[Vec<&str>]) -> String {
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut by_name: HashMap<String, String> = HashMap::new();
    let mut out = String::new();
    for args in script {
        let args: Vec<String> =
            args.iter().map(|a| by_name.iter().fold(a.to_string(), |a, (name, hex)| a.replace(name, hex))).collect();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = etcdctl(endpoint, &refs, "");
        if let Some(rest) = o.stdout.strip_prefix("lease ").filter(|_| refs[..2] == ["lease", "grant"]) {
            if o.stdout.contains(" granted with TTL(") {
                let hex = rest.split(' ').next().expect("id").to_string();
                let name = format!("$L{}", ids.len() + 1);
                ids.insert(hex.clone(), name.clone());
                by_name.insert(name, hex);
            }
        }
        let shown = script_line(&args, &ids);
        out.push_str(&format!("$ etcdctl {shown}\n{}{}exit {}\n", normalize(&o.stdout, &ids), o.stderr, o.code));
    }
    out
}

fn script_line(args: &[String], ids: &HashMap<String, String>) -> String {
    normalize(&args.join(" "), ids).trim_end().to_string()
}

fn start_both() -> (Etcd, Argus) {
    let etcd = std::thread::spawn(Etcd::start);
    let argus = Argus::start();
    (etcd.join().expect("etcd start"), argus)
}

/// lease grant (TTLs below the minimum, too large), put --lease (existing, missing),
/// --ignore-lease (with and without a lease, on a missing key), get -w json,
/// timetolive (--keys, -w json), list, keep-alive --once (existing, missing),
/// revoke (twice), and what is left: the same as etcd prints.
#[test]
fn etcdctl_lease_commands_match_etcd() {
    let (etcd, argus) = start_both();
    let script: Vec<Vec<&str>> = vec![
        vec!["lease", "grant", "600"],
        vec!["lease", "grant", "1"],
        vec!["lease", "grant", "0"],
        vec!["lease", "grant", "9000000001"],
        vec!["put", "--lease=$L1", "/l/a", "1"],
        vec!["put", "--lease=$L1", "/l/b", "2"],
        vec!["put", "--lease=$L2", "/l/c", "3"],
        vec!["put", "--lease=1234", "/l/d", "4"],
        vec!["put", "/plain", "x"],
        vec!["put", "--ignore-lease", "/plain", "y"],
        vec!["put", "--ignore-lease", "/l/a", "11"],
        vec!["put", "--ignore-lease", "/missing", "z"],
        vec!["get", "/l/", "--prefix", "-w", "json"],
        vec!["get", "/plain", "-w", "json"],
        vec!["put", "--lease=$L2", "/l/b", "moved"],
        vec!["lease", "timetolive", "$L1"],
        vec!["lease", "timetolive", "--keys", "$L1"],
        vec!["lease", "timetolive", "--keys", "$L1", "-w", "json"],
        vec!["lease", "timetolive", "1234"],
        vec!["lease", "keep-alive", "--once", "$L1"],
        vec!["lease", "keep-alive", "--once", "1234"],
        vec!["lease", "revoke", "$L1"],
        vec!["lease", "revoke", "$L1"],
        vec!["lease", "timetolive", "$L1"],
        vec!["lease", "timetolive", "$L1", "-w", "json"],
        vec!["get", "/l/", "--prefix"],
        vec!["lease", "revoke", "$L2"],
        vec!["get", "", "--prefix"],
    ];
    let (te, ta) = std::thread::scope(|s| {
        let he = s.spawn(|| transcript(&etcd.endpoint, &script));
        let ha = s.spawn(|| transcript(argus.endpoint(), &script));
        (he.join().expect("etcd side"), ha.join().expect("argus side"))
    });
    crate::etcdctl::assert_same("etcdctl lease script", &te, &ta);
    assert!(ta.contains("granted with TTL(2s)") && ta.contains("already expired"), "{ta}");
    assert!(ta.contains("attached keys([/l/a])"), "{ta}");
}

/// `lease list` with several live leases, sorted (etcd lists them in map order).
#[test]
fn etcdctl_lease_list_matches_etcd() {
    let (etcd, argus) = start_both();
    let script: Vec<Vec<&str>> = vec![
        vec!["lease", "grant", "300"],
        vec!["lease", "grant", "400"],
        vec!["lease", "grant", "500"],
        vec!["lease", "list"],
        vec!["lease", "revoke", "$L2"],
        vec!["lease", "list"],
    ];
    let (te, ta) = std::thread::scope(|s| {
        let he = s.spawn(|| transcript(&etcd.endpoint, &script));
        let ha = s.spawn(|| transcript(argus.endpoint(), &script));
        (he.join().expect("etcd side"), ha.join().expect("argus side"))
    });
    crate::etcdctl::assert_same("etcdctl lease list", &te, &ta);
    assert!(ta.contains("found 3 leases") && ta.contains("found 2 leases"), "{ta}");
}

/// What a watcher sees of an expiry, as comparable lines: one line per response
/// with its events (type, key, value, prev value, whether the prev_kv carried the
/// lease), and the number of revisions the DELETEs took.
async fn expiry_seen(endpoint: &str) -> (Vec<String>, Duration, Duration) {
    let mut c = connect(endpoint).await;
    let mut stream = c.watch("/exp/", Some(WatchOptions::new().with_prefix().with_prev_key())).await.unwrap();
    let granted = Instant::now();
    let lease = c.lease_grant(2, None).await.unwrap();
    for k in ["/exp/a", "/exp/b", "/exp/c"] {
        c.put(k, "v", Some(PutOptions::new().with_lease(lease.id()))).await.unwrap();
    }
    let mut lines = Vec::new();
    let mut deletes = 0;
    let deadline = Instant::now() + PATIENCE;
    let mut expired_after = Duration::ZERO;
    while deletes < 3 {
        let msg = tokio::time::timeout_at(deadline.into(), stream.message()).await;
        let r = msg.expect("the expiry's DELETEs within the patience").unwrap().expect("a response");
        if r.events().iter().any(|e| e.event_type() == EventType::Delete) {
            expired_after = granted.elapsed();
        }
        let mut line = String::new();
        for e in r.events() {
            let kv = e.kv().unwrap();
            deletes += usize::from(e.event_type() == EventType::Delete);
            let prev = e.prev_kv().map(|p| (p.value_str().unwrap().to_string(), p.lease() == lease.id()));
            line.push_str(&format!(
                "{:?} {} prev={prev:?} lease_set={}; ",
                e.event_type(),
                kv.key_str().unwrap(),
                kv.lease() != 0
            ));
        }
        lines.push(line);
    }
    let left = c.lease_time_to_live(lease.id(), None).await.unwrap().ttl();
    assert_eq!(left, -1, "the lease is gone after its expiry");
    assert!(c.get("/exp/", Some(GetOptions::new().with_prefix())).await.unwrap().kvs().is_empty());
    (lines, expired_after, Duration::from_secs(2))
}

/// A lease that expires deletes its keys in one revision, which every watcher gets
/// with prev_kv, as etcd; never before its TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_is_one_revision_of_deletes_as_in_etcd() {
    let etcd = tokio::task::spawn_blocking(Etcd::start);
    let argus = Argus::start();
    let etcd = etcd.await.unwrap();
    let ((le, _, _), (la, after, ttl)) = tokio::join!(expiry_seen(&etcd.endpoint), expiry_seen(argus.endpoint()));
    assert_eq!(le, la, "etcd's watch lines, then Argus's");
    assert_eq!(la.len(), 5, "created, three PUT responses, then one with all three DELETEs: {la:?}");
    assert!(after >= ttl, "expired after {after:?}, before its TTL of {ttl:?}");
}

/// One keep-alive stream renewing many leases keeps all of them (and their keys)
/// alive past their TTL; leases it does not renew expire; a keep-alive for a lease
/// that is gone is answered with TTL 0 and the stream goes on. (The raw gRPC client:
/// etcd-client's keeper holds one lease per stream.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_stream_keeps_many_leases_alive() {
    use argus_server::proto::etcdserverpb::{lease_client::LeaseClient, LeaseKeepAliveRequest};
    let argus = Argus::start_with(|c| c.metrics_listen = Some("127.0.0.1:0".parse().expect("address")));
    let mut c = connect(argus.endpoint()).await;
    let mut kept = Vec::new();
    for i in 0..50 {
        let l = c.lease_grant(2, None).await.unwrap().id();
        c.put(format!("/ka/{i}"), "v", Some(PutOptions::new().with_lease(l))).await.unwrap();
        kept.push(l);
    }
    let dropped = c.lease_grant(2, Some(LeaseGrantOptions::new().with_id(77))).await.unwrap().id();
    c.put("/ka/dropped", "v", Some(PutOptions::new().with_lease(dropped))).await.unwrap();
    let mut raw = LeaseClient::connect(format!("http://{}", argus.endpoint())).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<LeaseKeepAliveRequest>(128);
    let mut responses =
        raw.lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        for &id in &kept {
            tx.send(LeaseKeepAliveRequest { id }).await.unwrap();
        }
        for &id in &kept {
            let r = tokio::time::timeout(PATIENCE, responses.message()).await.unwrap().unwrap().unwrap();
            assert_eq!((r.id, r.ttl), (id, 2), "answered in order, renewed with its TTL");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Past 2.5 TTLs: the renewed leases and keys are all there, the other is gone.
    let keys = c.get("/ka/", Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap().count();
    assert_eq!(keys, 50);
    assert_eq!(c.lease_time_to_live(dropped, None).await.unwrap().ttl(), -1);
    let page = http_get(&argus.metrics_addr.expect("metrics").to_string(), "/metrics").expect("/metrics");
    assert_eq!(metric(&page, "argus_lease_leases"), Some(50.0));
    assert_eq!(metric(&page, "argus_lease_attached_keys"), Some(50.0));
    tx.send(LeaseKeepAliveRequest { id: dropped }).await.unwrap();
    tx.send(LeaseKeepAliveRequest { id: kept[3] }).await.unwrap();
    let r = tokio::time::timeout(PATIENCE, responses.message()).await.unwrap().unwrap().unwrap();
    assert_eq!((r.id, r.ttl), (dropped, 0));
    let r = tokio::time::timeout(PATIENCE, responses.message()).await.unwrap().unwrap().unwrap();
    assert_eq!((r.id, r.ttl), (kept[3], 2));
}

/// Leases through `kill -9` and a restart: every lease and attached key is back,
/// with its full TTL from when the server is ready (none expires early, however
/// long the server was down), and expires on time after that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_survive_kill9_and_get_their_full_ttl_again() {
    let dir = tempfile::tempdir().unwrap();
    let server = ArgusProcess::start(dir.path(), &[]);
    let mut c = connect(&server.endpoint()).await;
    let long = c.lease_grant(600, None).await.unwrap().id();
    let short = c.lease_grant(4, None).await.unwrap().id();
    for i in 0..20 {
        let l = if i % 2 == 0 { long } else { short };
        c.put(format!("/r/{i:02}"), format!("{i}"), Some(PutOptions::new().with_lease(l))).await.unwrap();
    }
    c.put("/r/plain", "p", None).await.unwrap();
    let rev = c.get("/r/", None).await.unwrap().header().unwrap().revision();
    drop(c);
    server.kill9();
    // Down for longer than the short lease's TTL.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let server = ArgusProcess::start(dir.path(), &[]);
    let ready = Instant::now();
    let mut c = connect(&server.endpoint()).await;
    let r = c.get("/r/", Some(GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(r.header().unwrap().revision(), rev, "nothing acknowledged lost");
    assert_eq!(r.kvs().len(), 21);
    for kv in r.kvs() {
        let i: Option<usize> = kv.key_str().unwrap()[3..].parse().ok();
        let want = i.map_or(0, |i| if i % 2 == 0 { long } else { short });
        assert_eq!(kv.lease(), want, "{}", kv.key_str().unwrap());
    }
    let t = c.lease_time_to_live(short, Some(etcd_client::LeaseTimeToLiveOptions::new().with_keys())).await.unwrap();
    assert!(t.ttl() >= 3 && t.ttl() <= 4, "the short lease got its full TTL again: {}", t.ttl());
    assert_eq!(t.keys().len(), 10);
    let mut ids: Vec<i64> = c.leases().await.unwrap().leases().iter().map(|l| l.id()).collect();
    ids.sort();
    let mut want = vec![long, short];
    want.sort();
    assert_eq!(ids, want);
    // The short lease expires 4 s after the restart (not before), deleting its keys.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let n = c.get("/r/", Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap().count();
        if n == 11 {
            break;
        }
        assert!(Instant::now() < deadline, "the short lease's keys were not deleted ({n} keys left)");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready.elapsed() >= Duration::from_secs(4), "expired {:?} after the restart", ready.elapsed());
    let _ = server.terminate(Duration::from_secs(10));
}
