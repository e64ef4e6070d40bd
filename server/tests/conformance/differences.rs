//! Differences from etcd 3.4 found by using Argus as a new etcd user would, each
//! fixed and run side by side with real etcd 3.4.23 (fresh servers, the same
//! requests, answers compared whole):
//!
//! * `Compact`: at revision 0 on a store never compacted (a success in etcd, whose
//!   compaction revision starts at -1), again at it, below, at a negative revision,
//!   above the current revision ([`compact_answers_match_etcd`]).
//! * Nested txns (`RequestOp.request_txn`): branches, two levels, compares that see
//!   the state before the txn while ops see earlier writes, answers' revisions,
//!   duplicate keys across levels, the op limit, empty ops, and the watch events of
//!   such revisions ([`nested_txns_match_etcd`]).
//! * A watch canceled by compaction: `canceled` with `compact_revision` and no
//!   `cancel_reason` ([`compaction_cancel_matches_etcd`]), and the one difference
//!   kept on purpose, the DELETE events at the compaction revision (documented in
//!   README.md).

use argus_server::proto::etcdserverpb as raw;
use etcd_client::proto::{PbResponseHeader, PbResponseOp, PbTxnOpResponse, PbTxnResponse, PbWatchResponse};
use etcd_client::{Client, CompactionOptions, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp};

use crate::client::watcher_lines;
use crate::common::{connect, describe_wire, etcdctl, Argus, Collected, Etcd, Spec};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn start_both() -> (Etcd, Argus) {
    let etcd = std::thread::spawn(Etcd::start);
    let argus = Argus::start();
    (etcd.join().expect("etcd start"), argus)
}

/// Fails with both transcripts and the first differing line unless they are equal.
fn assert_same(what: &str, etcd: &[String], argus: &[String]) {
    if etcd == argus {
        return;
    }
    let i = etcd.iter().zip(argus).position(|(e, a)| e != a).unwrap_or(etcd.len().min(argus.len()));
    panic!(
        "{what}: Argus differs from etcd at line {}:\n  etcd : {:?}\n  argus: {:?}\n---- etcd ----\n{}\n---- argus ----\n{}",
        i + 1,
        etcd.get(i),
        argus.get(i),
        etcd.join("\n"),
        argus.join("\n")
    );
}

/// An error as etcd's clients see it: the gRPC code and message.
fn error_line(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => format!("error {:?} {:?}", s.code(), s.message()),
        other => format!("error (not a status) {other}"),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn kv_line(kv: &etcd_client::proto::PbKeyValue) -> String {
    format!(
        "{}={} c{} m{} v{} lease{}",
        text(&kv.key),
        text(&kv.value),
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        kv.lease
    )
}

/// Every field of a header, except the cluster's identities in a top-level one
/// (`top`): cluster id, member id and raft term differ for every etcd cluster (and
/// are fixed in Argus). Headers inside a txn are compared whole.
fn header_line(h: Option<&PbResponseHeader>, top: bool) -> String {
    match h {
        None => "header none".into(),
        Some(h) if top => format!("header rev {}", h.revision),
        Some(h) => {
            format!("header rev {} cluster {} member {} term {}", h.revision, h.cluster_id, h.member_id, h.raft_term)
        }
    }
}

/// A txn response, whole, as indented lines (nested txns indented further).
fn txn_lines(r: &PbTxnResponse, top: bool, indent: usize, out: &mut Vec<String>) {
    let pad = "  ".repeat(indent);
    out.push(format!("{pad}txn succeeded={} {}", r.succeeded, header_line(r.header.as_ref(), top)));
    for PbResponseOp { response } in &r.responses {
        let pad = "  ".repeat(indent + 1);
        match response {
            Some(PbTxnOpResponse::ResponseRange(g)) => {
                let kvs: Vec<String> = g.kvs.iter().map(kv_line).collect();
                out.push(format!(
                    "{pad}range {} count={} more={} kvs=[{}]",
                    header_line(g.header.as_ref(), false),
                    g.count,
                    g.more,
                    kvs.join(", ")
                ));
            }
            Some(PbTxnOpResponse::ResponsePut(p)) => out.push(format!(
                "{pad}put {} prev={}",
                header_line(p.header.as_ref(), false),
                p.prev_kv.as_ref().map_or("-".into(), kv_line)
            )),
            Some(PbTxnOpResponse::ResponseDeleteRange(d)) => {
                let prev: Vec<String> = d.prev_kvs.iter().map(kv_line).collect();
                out.push(format!(
                    "{pad}delete {} deleted={} prev=[{}]",
                    header_line(d.header.as_ref(), false),
                    d.deleted,
                    prev.join(", ")
                ));
            }
            Some(PbTxnOpResponse::ResponseTxn(t)) => txn_lines(t, false, indent + 1, out),
            None => out.push(format!("{pad}empty response op")),
        }
    }
}

/// Runs `txn` and appends its answer (or error) to `out` under `name`, a run of
/// equal lines as one line with its count.
async fn run_txn(client: &mut Client, name: &str, txn: Txn, out: &mut Vec<String>) {
    out.push(format!("== {name}"));
    let mut lines = Vec::new();
    match client.txn(txn).await {
        Ok(r) => txn_lines(&r.0, true, 0, &mut lines),
        Err(e) => lines.push(error_line(&e)),
    }
    let mut i = 0;
    while i < lines.len() {
        let n = lines[i..].iter().take_while(|l| **l == lines[i]).count();
        out.push(if n > 1 { format!("{} (x{n})", lines[i]) } else { lines[i].clone() });
        i += n;
    }
}

// ---------------------------------------------------------------------------------
// Compact
// ---------------------------------------------------------------------------------

/// The compaction script on one server (fresh, at revision 1).
async fn compactions(endpoint: &str) -> Vec<String> {
    let mut out = Vec::new();
    // etcdctl's view of the first one: "compacted revision 0".
    let o = etcdctl(endpoint, &["compaction", "0"], "");
    out.push(format!("$ etcdctl compaction 0: {:?} {:?} exit {}", o.stdout, o.stderr, o.code));
    let mut client = connect(endpoint).await;
    let compact = async |client: &mut Client, rev: i64, out: &mut Vec<String>| {
        let line = match client.compact(rev, Some(CompactionOptions::new().with_physical())).await {
            Ok(r) => format!("ok {}", header_line(r.header().map(|h| &h.0), true)),
            Err(e) => error_line(&e),
        };
        out.push(format!("compact {rev}: {line}"));
    };
    // Again at 0 (now the compaction revision), below it, at the current revision.
    for rev in [0, -1, 1, 1, 0] {
        compact(&mut client, rev, &mut out).await;
    }
    for i in 0..4 {
        client.put(format!("/c/{i}"), "v", None).await.expect("put"); // 2..=5
    }
    for rev in [6, 100, 3, 3, 2, 0, -5, 5, 5, 4] {
        compact(&mut client, rev, &mut out).await;
    }
    out
}

/// `Compact` at 0 on a store never compacted succeeds (etcdctl prints "compacted
/// revision 0"), and a second one is refused as compacted: etcd's compaction
/// revision starts at -1. The other bounds (again at the compaction revision,
/// below it, negative, above the current revision) answer as etcd does, code and
/// message.
#[test]
fn compact_answers_match_etcd() {
    let (etcd, argus) = start_both();
    let rt = runtime();
    let (e, a) = rt.block_on(async { tokio::join!(compactions(&etcd.endpoint), compactions(argus.endpoint())) });
    assert_same("compactions", &e, &a);
    assert!(a[0].contains("compacted revision 0") && a[0].contains("exit 0"), "{a:?}");
    assert_eq!(a[1], "compact 0: error OutOfRange \"etcdserver: mvcc: required revision has been compacted\"");
    assert!(a.iter().any(|l| l.contains("required revision is a future revision")), "{a:?}");
    assert_eq!(argus.store.compact_revision(), 5);
}

// ---------------------------------------------------------------------------------
// Nested txns
// ---------------------------------------------------------------------------------

fn get(k: &str) -> TxnOp {
    TxnOp::get(k, None)
}

fn put(k: &str, v: &str) -> TxnOp {
    TxnOp::put(k, v, None)
}

fn put_prev(k: &str, v: &str) -> TxnOp {
    TxnOp::put(k, v, Some(PutOptions::new().with_prev_key()))
}

fn del(k: &str) -> TxnOp {
    TxnOp::delete(k, None)
}

fn nested(t: Txn) -> TxnOp {
    TxnOp::txn(t)
}

/// The nested-txn script on one server (fresh, at revision 1); every answer whole.
async fn nested_script(endpoint: &str) -> Vec<String> {
    let mut client = connect(endpoint).await;
    let mut out = Vec::new();
    client.put("/n/a", "1", None).await.expect("put"); // 2
                                                       // Revision 3. The nested compare sees the state before the txn (version 1, not
                                                       // the 2 the outer put made), its ops see the outer put. A range or an empty
                                                       // delete before any write answers with the old revision.
    let inner = |v: i64, tag: &str| {
        Txn::new()
            .when([Compare::version("/n/a", CompareOp::Equal, v)])
            .and_then([get("/n/a"), put("/n/in", &format!("{tag} success"))])
            .or_else([get("/n/a"), put("/n/in", &format!("{tag} failure"))])
    };
    let t = Txn::new().and_then([
        get("/n/a"),
        del("/n/none"),
        put("/n/a", "2"),
        nested(inner(1, "first")),
        del("/n/none"),
        get("/n/in"),
        nested(Txn::new()),
    ]);
    run_txn(&mut client, "compare before the outer put", t, &mut out).await;
    // Revision 4: a compare on what the outer put makes fails (failure branch).
    let t = Txn::new().and_then([put("/n/a", "3"), nested(inner(3, "second")), get("/n/in")]);
    run_txn(&mut client, "compare on the outer put", t, &mut out).await;
    // Revision 5: two levels, in the outer failure branch, with prev_kv.
    let deep = Txn::new()
        .when([Compare::mod_revision("/n/a", CompareOp::Greater, 0)])
        .and_then([nested(Txn::new().and_then([put_prev("/n/in", "deep"), get("/n/in")])), get("/n/in")])
        .or_else([put("/n/wrong", "1")]);
    let t = Txn::new()
        .when([Compare::value("/n/a", CompareOp::Equal, "nope")])
        .and_then([put("/n/wrong", "1")])
        .or_else([nested(deep), TxnOp::get("/n/", Some(GetOptions::new().with_prefix()))]);
    run_txn(&mut client, "two levels", t, &mut out).await;
    // Revision 6: a nested txn puts a key that a later sibling deletes (etcd allows
    // this order); the delete sees the put, and the revision changes the key twice.
    let t = Txn::new().and_then([
        nested(Txn::new().and_then([put("/n/x", "new")])),
        nested(Txn::new().and_then([TxnOp::delete("/n/", Some(DeleteOptions::new().with_prefix().with_prev_key()))])),
        TxnOp::get("/n/", Some(GetOptions::new().with_prefix().with_count_only())),
    ]);
    run_txn(&mut client, "put then a sibling's delete", t, &mut out).await;
    // Refused: duplicate keys across levels, the op limit.
    let refused = [
        (
            "outer put, nested put",
            Txn::new().and_then([put("/n/y", "1"), nested(Txn::new().and_then([put("/n/y", "2")]))]),
        ),
        (
            "nested put, outer put",
            Txn::new().and_then([nested(Txn::new().or_else([put("/n/y", "2")])), put("/n/y", "1")]),
        ),
        (
            "outer delete, nested put",
            Txn::new().and_then([nested(Txn::new().and_then([put("/n/y", "2")])), del("/n/y")]),
        ),
        (
            "sibling delete then put",
            Txn::new().and_then([
                nested(Txn::new().and_then([del("/n/y")])),
                nested(Txn::new().and_then([put("/n/y", "2")])),
            ]),
        ),
        (
            "nested put twice",
            Txn::new().and_then([
                nested(Txn::new().and_then([put("/n/y", "1")])),
                nested(Txn::new().and_then([put("/n/y", "2")])),
            ]),
        ),
        (
            "nested in the failure branch",
            Txn::new().or_else([put("/n/y", "1"), nested(Txn::new().and_then([put("/n/y", "2")]))]),
        ),
    ];
    for (name, t) in refused {
        run_txn(&mut client, name, t, &mut out).await;
    }
    // Allowed: the two branches of one nested txn putting the same key (revision 7).
    let t = Txn::new().and_then([nested(
        Txn::new()
            .when([Compare::version("/n/y", CompareOp::Equal, 0)])
            .and_then([put("/n/y", "then")])
            .or_else([put("/n/y", "else")]),
    )]);
    run_txn(&mut client, "both branches put one key", t, &mut out).await;
    // The op limit: what the outer txn leaves (128 - 100).
    for n in [28, 29] {
        let mut ops: Vec<TxnOp> = (0..99).map(|_| get("/n/y")).collect();
        ops.push(nested(Txn::new().and_then((0..n).map(|_| get("/n/y")).collect::<Vec<_>>())));
        run_txn(&mut client, &format!("99 ops and a nested txn of {n}"), Txn::new().and_then(ops), &mut out).await;
    }
    // Revision 8..=10: a delete with range end "\0" conflicts with no put; the put
    // after it starts a new generation of the key it deleted.
    client.put("/n/c", "1", None).await.expect("put"); // 8
    client.put("/n/c", "2", None).await.expect("put"); // 9
    let t = Txn::new().and_then([
        TxnOp::delete("/n/", Some(DeleteOptions::new().with_from_key().with_prev_key())),
        put_prev("/n/c", "3"),
        get("/n/c"),
    ]);
    run_txn(&mut client, "from-key delete then put", t, &mut out).await;
    // Ops with no request, at the top and nested (a raw client: etcd-client cannot
    // send one).
    let mut raw = raw::kv_client::KvClient::connect(format!("http://{endpoint}")).await.expect("raw KV client");
    let empty = raw::RequestOp { request: None };
    let nested_empty = raw::RequestOp {
        request: Some(raw::request_op::Request::RequestTxn(raw::TxnRequest {
            success: vec![empty.clone()],
            ..Default::default()
        })),
    };
    for (name, op) in [("empty op", empty), ("nested empty op", nested_empty)] {
        let r = raw.txn(raw::TxnRequest { success: vec![op], ..Default::default() }).await;
        out.push(format!("== {name}"));
        out.push(match r {
            Ok(r) => format!("ok {:?}", r.into_inner().succeeded),
            Err(s) => format!("error {:?} {:?}", s.code(), s.message()),
        });
    }
    // The watch events of these revisions, with prev_kv, from a watch started after
    // them (catch-up) and compared event by event.
    let spec = Spec::prefix(1, "/n/").from(2).prev();
    let c = Collected::open(&client, std::slice::from_ref(&spec)).await;
    c.wait_rev(&[1], 10).await;
    out.push("== watch from 2".into());
    out.extend(watcher_lines(&c.snapshot(), 1));
    out
}

/// Nested txns (`RequestOp.request_txn`), as etcd 3.4.23 answers them: see the
/// comments of [`nested_script`] for what each step shows; every answer is compared
/// whole (headers inside the txn included, a nested txn's empty), then the watch
/// events of the revisions made.
#[test]
fn nested_txns_match_etcd() {
    let (etcd, argus) = start_both();
    let rt = runtime();
    let (e, a) = rt.block_on(async { tokio::join!(nested_script(&etcd.endpoint), nested_script(argus.endpoint())) });
    assert_same("nested txns", &e, &a);
    // What the comparison rests on, stated outright.
    let joined = a.join("\n");
    // The first nested compare held on the state before the txn; the second failed
    // on it (it would have held on the outer put's result).
    assert!(joined.contains("kvs=[/n/in=first success c3 m3 v1"), "{joined}");
    assert!(joined.contains("kvs=[/n/in=second failure c3 m4 v2"), "{joined}");
    assert!(joined.contains("txn succeeded=true header rev 0 cluster 0 member 0 term 0"), "{joined}");
    assert!(joined.contains("range header rev 2 cluster 0 member 0 term 0 count=1"), "{joined}");
    assert_eq!(a.iter().filter(|l| l.contains("duplicate key given in txn request")).count(), 6, "{joined}");
    assert!(joined.contains("99 ops and a nested txn of 29\nerror InvalidArgument \"etcdserver: too many operations"));
    assert!(joined.contains("== empty op\nerror InvalidArgument \"etcdserver: key not found\""), "{joined}");
    assert!(joined.contains("DELETE /n/x= 0/6/0"), "{joined}");
    assert_eq!(argus.store.current_revision(), 10);
}

// ---------------------------------------------------------------------------------
// Watch canceled by compaction
// ---------------------------------------------------------------------------------

/// Every field of a watcher's responses, except the header revision of a
/// compaction cancel, returned apart (see [`compaction_cancel_matches_etcd`]).
fn full_lines(wire: &[PbWatchResponse], id: i64) -> (Vec<String>, Vec<i64>) {
    let mut cancel_revs = Vec::new();
    let lines = wire
        .iter()
        .filter(|r| r.watch_id == id)
        .map(|r| {
            let rev = r.header.as_ref().map_or(-1, |h| h.revision);
            let rev = if r.canceled && r.compact_revision != 0 {
                cancel_revs.push(rev);
                "<compaction cancel>".to_string()
            } else {
                rev.to_string()
            };
            let events: Vec<String> = r
                .events
                .iter()
                .map(|e| format!("{} {}", e.r#type, e.kv.as_ref().map_or("-".into(), kv_line)))
                .collect();
            format!(
                "rev {rev} created {} canceled {} compact_revision {} cancel_reason {:?} fragment {} events [{}]",
                r.created,
                r.canceled,
                r.compact_revision,
                r.cancel_reason,
                r.fragment,
                events.join(", ")
            )
        })
        .collect();
    (lines, cancel_revs)
}

/// The compaction scenario on one server: revisions 2..=5, compaction at 4, then
/// watchers from 4 (the compaction revision), 3 and 2 (compacted).
async fn compaction_cancel(endpoint: &str) -> Vec<PbWatchResponse> {
    let mut client = connect(endpoint).await;
    client.put("/c/a", "1", None).await.expect("put"); // 2
    client.put("/c/b", "1", None).await.expect("put"); // 3
    client.delete("/c/", Some(DeleteOptions::new().with_prefix())).await.expect("delete"); // 4
    client.put("/c/a", "2", None).await.expect("put"); // 5
    client.compact(4, Some(CompactionOptions::new().with_physical())).await.expect("compact");
    let specs = [Spec::prefix(1, "/c/").from(4), Spec::prefix(2, "/c/").from(3).prev(), Spec::key(3, "/c/a").from(2)];
    let c = Collected::open(&client, &specs).await;
    c.wait_rev(&[1], 5).await;
    c.wait("the compaction cancels", |rs| [2, 3].iter().all(|id| rs.iter().any(|r| r.watch_id == *id && r.canceled)))
        .await;
    c.snapshot()
}

/// A watcher from a compacted revision: `created`, then `canceled` with
/// `compact_revision` and no `cancel_reason` (etcd 3.4's `sendLoop` sets
/// `canceled` from `compact_revision` and no reason), compared field by field. Two
/// differences are kept and asserted here: the cancel's header revision (etcd 3.4
/// leaves it 0, its watchable store makes the response without one; Argus sends the
/// store's revision), and the DELETE events at the compaction revision, which a
/// watcher from that revision receives from Argus and not from etcd 3.4.23 (it
/// drops the tombstones at the compaction revision, a bug fixed in later etcd
/// releases: README.md, "Differences from etcd 3.4").
#[test]
fn compaction_cancel_matches_etcd() {
    let (etcd, argus) = start_both();
    let rt = runtime();
    let (e, a) =
        rt.block_on(async { tokio::join!(compaction_cancel(&etcd.endpoint), compaction_cancel(argus.endpoint())) });
    for id in [2, 3] {
        let ((el, erevs), (al, arevs)) = (full_lines(&e, id), full_lines(&a, id));
        assert_same(&format!("watcher {id}"), &el, &al);
        assert_eq!(
            al,
            [
                "rev 5 created true canceled false compact_revision 0 cancel_reason \"\" fragment false events []",
                "rev <compaction cancel> created false canceled true compact_revision 4 cancel_reason \"\" fragment false events []",
            ],
            "{}",
            describe_wire(&a)
        );
        assert_eq!((erevs, arevs), (vec![0], vec![5]), "the compaction cancel's header revision");
    }
    // The kept difference: the DELETEs at the compaction revision.
    let events = |wire: &[PbWatchResponse]| watcher_lines(wire, 1);
    assert_eq!(events(&e), ["created rev=5", "PUT /c/a=2 5/5/1 prev=-"], "etcd 3.4.23 drops them");
    assert_eq!(
        events(&a),
        ["created rev=5", "DELETE /c/a= 0/4/0 prev=-", "DELETE /c/b= 0/4/0 prev=-", "PUT /c/a=2 5/5/1 prev=-"],
        "Argus keeps them"
    );
}
