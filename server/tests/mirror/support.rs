//! What the mirror tests share: a runtime, Range answers made comparable across
//! servers, a seeded mix of writes through the mirrors and directly, waiting for a
//! mirror to catch up, and watch output as per-revision groups of event texts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use etcd_client::proto::{PbEvent, PbKeyValue, PbRangeResponse, PbResponseHeader, PbWatchResponse};
use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};

use crate::cluster::Rng;
use crate::common::{connect, describe_wire, reached, reassemble, Collected, Spec, PATIENCE};

/// The runtime of a test (its clients and collectors).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// A failed call as its gRPC code and message (what etcd's clients branch on).
pub fn grpc_error(e: &etcd_client::Error) -> (tonic::Code, String) {
    match e {
        etcd_client::Error::GRpcStatus(s) => (s.code(), s.message().to_string()),
        other => (tonic::Code::Unknown, format!("not a gRPC status: {other}")),
    }
}

/// Blanks what differs between members and servers of one cluster by design: the
/// cluster and member ids and the raft term. The revision stays.
pub fn blank(h: &mut Option<PbResponseHeader>) {
    if let Some(h) = h {
        h.cluster_id = 0;
        h.member_id = 0;
        h.raft_term = 0;
    }
}

/// A Range answer, comparable between etcd and a mirror: the whole response with
/// [`blank`]ed header, or the error's code and message.
pub type RangeAnswer = Result<PbRangeResponse, (tonic::Code, String)>;

/// Range `key` with `opts` through `client`, as a [`RangeAnswer`].
pub async fn range(client: &mut Client, key: &[u8], opts: GetOptions) -> RangeAnswer {
    match client.get(key.to_vec(), Some(opts)).await {
        Ok(r) => {
            let mut r = r.0;
            blank(&mut r.header);
            Ok(r)
        }
        Err(e) => Err(grpc_error(&e)),
    }
}

/// The revision etcd (or a mirror, linearizably) is at: the header of a Range.
pub async fn current_revision(client: &mut Client) -> i64 {
    client
        .get("\0", Some(GetOptions::new().with_count_only()))
        .await
        .expect("a Range")
        .0
        .header
        .expect("header")
        .revision
}

/// Waits until the mirror `client` talks to has applied `rev`: its serializable
/// Range answers at `rev` or later.
pub async fn settle(client: &mut Client, rev: i64) {
    let deadline = Instant::now() + PATIENCE * 2;
    loop {
        let got = client.get("\0", Some(GetOptions::new().with_count_only().with_serializable())).await;
        if let Ok(r) = &got {
            if r.header().is_some_and(|h| h.revision() >= rev) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the mirror did not apply revision {rev}; last answer {got:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `n` writes chosen by `rng`, each through the direct client or one of the
/// mirrors' (chosen by `rng` too), every key under `prefix`: puts (some with a
/// lease granted through a mirror or directly), single and prefix deletes, txns
/// with both branches; halfway, a lease with keys attached is revoked through a
/// mirror. A put through a mirror is checked right after its answer: etcd shows the
/// key with the value at the revision the mirror answered. Returns etcd's revision
/// after the last write.
pub async fn mixed_writes(rng: &mut Rng, direct: &mut Client, mirrors: &mut [Client], n: usize, prefix: &str) -> i64 {
    let mut leases: Vec<i64> = Vec::new();
    for via in 0..=mirrors.len() {
        let c = if via == 0 { &mut *direct } else { &mut mirrors[via - 1] };
        leases.push(c.lease_grant(600, None).await.expect("lease grant").id());
    }
    let salt = rng.next_u64() % 100_000;
    for i in 0..n {
        if i == n / 2 && !mirrors.is_empty() && leases.len() > 1 {
            // Revoking deletes the keys attached, in one revision.
            let id = leases.remove(0);
            mirrors[0].lease_revoke(id).await.expect("lease revoke through a mirror");
        }
        let via = rng.below(mirrors.len() as u64 + 1) as usize;
        let c = if via == 0 { &mut *direct } else { &mut mirrors[via - 1] };
        let j = rng.below(6);
        let value = format!("v{i}-{salt}");
        let a = format!("{prefix}a/{j}");
        let b = format!("{prefix}b/{j}");
        let mut put_key: Option<String> = None;
        // A leased put early and one after the revoke, whatever the draw: some keys
        // with a live lease are always left to compare.
        let what = if i == 1 || i == n / 2 + 1 { 5 } else { rng.below(10) };
        let rev = match what {
            0..=3 | 9 => {
                let opts = (what == 9).then(|| PutOptions::new().with_prev_key());
                put_key = Some(a.clone());
                c.put(a.clone(), value.clone(), opts).await.map(|r| r.0.header.expect("header").revision)
            }
            4 => {
                put_key = Some(b.clone());
                c.put(b.clone(), value.clone(), None).await.map(|r| r.0.header.expect("header").revision)
            }
            5 => {
                let lease = leases[rng.below(leases.len() as u64) as usize];
                let key = format!("{prefix}l/{j}");
                put_key = Some(key.clone());
                c.put(key, value.clone(), Some(PutOptions::new().with_lease(lease)))
                    .await
                    .map(|r| r.0.header.expect("header").revision)
            }
            6 => c.delete(a.clone(), None).await.map(|r| r.0.header.expect("header").revision),
            7 => c
                .delete(format!("{prefix}b/"), Some(etcd_client::DeleteOptions::new().with_prefix()))
                .await
                .map(|r| r.0.header.expect("header").revision),
            _ => {
                let txn = Txn::new()
                    .when([Compare::version(a.clone(), CompareOp::Greater, 0)])
                    .and_then([TxnOp::put(b.clone(), value.clone(), None), TxnOp::delete(a.clone(), None)])
                    .or_else([TxnOp::put(a.clone(), value.clone(), None)]);
                c.txn(txn).await.map(|r| r.0.header.expect("header").revision)
            }
        };
        let rev = rev.unwrap_or_else(|e| panic!("write {i} (kind {what}) through client {via} failed: {e}"));
        if let (true, Some(key)) = (via > 0, put_key) {
            let got = direct.get(key.clone(), None).await.expect("get from etcd");
            let kv = got.kvs().first().unwrap_or_else(|| panic!("etcd has no {key} after a put through a mirror"));
            assert_eq!(
                (kv.mod_revision(), kv.value()),
                (rev, value.as_bytes()),
                "the put of {key} through a mirror answered revision {rev}; etcd shows the key at another revision or value"
            );
        }
    }
    current_revision(direct).await
}

/// A key-value as text: `key=value create/mod/version lease`.
pub fn kv_text(kv: &PbKeyValue) -> String {
    format!(
        "{}={} {}/{}/{} lease={}",
        String::from_utf8_lossy(&kv.key),
        String::from_utf8_lossy(&kv.value),
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        kv.lease
    )
}

/// An event as text: `PUT kv prev=kv|-`.
pub fn event_text(e: &PbEvent) -> String {
    format!(
        "{} {} prev={}",
        if e.r#type == 1 { "DELETE" } else { "PUT" },
        e.kv.as_ref().map_or("-".to_string(), kv_text),
        e.prev_kv.as_ref().map_or("-".to_string(), kv_text)
    )
}

/// What watcher `id` received, as one group of event texts per revision, in the
/// order received (fragments joined; a revision whose events came in several
/// responses is one group).
pub fn revisions(wire: &[PbWatchResponse], id: i64) -> Vec<(i64, Vec<String>)> {
    let (whole, _) = reassemble(wire);
    let mut out: Vec<(i64, Vec<String>)> = Vec::new();
    for e in whole.iter().filter(|r| r.watch_id == id).flat_map(|r| r.events.iter()) {
        let rev = e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
        match out.last_mut() {
            Some((r, evs)) if *r == rev => evs.push(event_text(e)),
            _ => out.push((rev, vec![event_text(e)])),
        }
    }
    out
}

/// The revisions whose events watcher `id` received in more than one response
/// (fragments joined): Argus delivers a revision whole.
pub fn split_revisions(wire: &[PbWatchResponse], id: i64) -> Vec<i64> {
    let (whole, _) = reassemble(wire);
    let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
    for r in whole.iter().filter(|r| r.watch_id == id) {
        let mut revs: Vec<i64> = r.events.iter().filter_map(|e| e.kv.as_ref()).map(|kv| kv.mod_revision).collect();
        revs.dedup();
        for rev in revs {
            *seen.entry(rev).or_default() += 1;
        }
    }
    seen.into_iter().filter(|&(_, n)| n > 1).map(|(rev, _)| rev).collect()
}

/// The responses of watcher `id` that cancel it or report a compaction, as
/// `(canceled, compact_revision, cancel_reason)`.
pub fn cancels(wire: &[PbWatchResponse], id: i64) -> Vec<(bool, i64, String)> {
    wire.iter()
        .filter(|r| r.watch_id == id && (r.canceled || r.compact_revision != 0))
        .map(|r| (r.canceled, r.compact_revision, r.cancel_reason.clone()))
        .collect()
}

/// Whether watcher `id` was canceled.
pub fn canceled(wire: &[PbWatchResponse], id: i64) -> bool {
    wire.iter().any(|r| r.watch_id == id && r.canceled)
}

/// Opens one stream on `endpoint` with `specs`, waits until every watcher reached
/// `rev` (an event or progress at `rev` or later) or was canceled, and returns what
/// the stream received. `rev` <= 0: only waits for the creations.
pub async fn watch_until(endpoint: &str, specs: &[Spec], rev: i64) -> Vec<PbWatchResponse> {
    let client = connect(endpoint).await;
    let mut c = Collected::open(&client, specs).await;
    wait_reached(&mut c, &specs.iter().map(|s| s.id).collect::<Vec<_>>(), rev).await;
    c.snapshot()
}

/// Waits until every watcher of `ids` on `c` reached `rev` or was canceled; while
/// waiting, asks for progress now and then (a watcher whose range saw no event at
/// `rev` learns of it from a progress notification).
pub async fn wait_reached(c: &mut Collected, ids: &[i64], rev: i64) {
    let deadline = Instant::now() + PATIENCE * 2;
    let mut last_ask = Instant::now();
    loop {
        {
            let rs = c.responses.lock().unwrap();
            let created = ids.iter().all(|&id| rs.iter().any(|r| r.watch_id == id && (r.created || r.canceled)));
            if created && ids.iter().all(|&id| canceled(&rs, id) || rev <= 0 || reached(&rs, id, rev as u64)) {
                return;
            }
            if let Some(e) = c.error.lock().unwrap().clone() {
                panic!("watch stream failed while waiting for revision {rev}: {e}\nreceived:\n{}", describe_wire(&rs));
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for watchers {ids:?} to reach revision {rev}; received:\n{}",
                describe_wire(&rs)
            );
        }
        if last_ask.elapsed() > Duration::from_millis(500) {
            let _ = c.sender.request_progress().await;
            last_ask = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A watcher of every key (`"\0"` to `"\0"`).
pub fn everything(id: i64) -> Spec {
    Spec::range(id, "\0", "\0")
}

/// The events etcd holds at revision `rev` now (a watch from `rev` up to it, with
/// prev_kv, on `endpoint`): taken before a compaction at `rev`, they are what a
/// mirror that keeps the compaction revision's DELETEs may deliver there.
pub async fn events_at(endpoint: &str, rev: i64) -> Vec<String> {
    let wire = watch_until(endpoint, &[everything(9).from(rev).prev()], rev).await;
    revisions(&wire, 9).into_iter().find(|(r, _)| *r == rev).map(|(_, evs)| evs).unwrap_or_default()
}

/// Compares a mirror's watch from `compact` (the cluster's compaction revision)
/// with etcd's, per revision. One difference is allowed, at revision `compact`
/// only: etcd 3.4.23 drops the tombstones at its compaction revision, so its watch
/// from there misses that revision's DELETEs, which Argus keeps (README.md,
/// "Differences from etcd 3.4"; their prev_kv is compacted away). There the mirror
/// delivers either what etcd delivers or what etcd had before compacting
/// (`before`, from [`events_at`]), DELETEs compared without prev_kv.
pub fn assert_watch_from_compaction(
    got: &[(i64, Vec<String>)],
    want: &[(i64, Vec<String>)],
    compact: i64,
    before: &[String],
    what: &str,
) {
    let others = |v: &[(i64, Vec<String>)]| v.iter().filter(|(r, _)| *r != compact).cloned().collect::<Vec<_>>();
    assert_eq!(others(got), others(want), "{what}: the mirror (left) and etcd (right), after revision {compact}");
    let at =
        |v: &[(i64, Vec<String>)]| v.iter().find(|(r, _)| *r == compact).map(|(_, e)| e.clone()).unwrap_or_default();
    let no_delete_prev = |evs: &[String]| -> Vec<String> {
        evs.iter()
            .map(|e| match (e.starts_with("DELETE "), e.find(" prev=")) {
                (true, Some(i)) => format!("{} prev=?", &e[..i]),
                _ => e.clone(),
            })
            .collect()
    };
    let (g, w) = (at(got), at(want));
    assert!(
        g == w || no_delete_prev(&g) == no_delete_prev(before),
        "{what}: at the compaction revision {compact} the mirror delivered {g:?}; etcd delivers {w:?} and had {before:?}"
    );
}
