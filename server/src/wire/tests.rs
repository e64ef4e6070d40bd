//! The framer against prost: every response kind the engine produces, written by
//! [`Framer`], must be byte for byte what prost encodes for the same
//! `pb::WatchResponse` built the plain way (every event converted and encoded on its
//! own), and must decode back to it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use argus_engine::log::MemStorage;
use argus_engine::store::{PutLease, Store, StoreOptions, TxnOp};
use argus_engine::watch::{
    Item, WatchController, WatchError, WatchHub, WatchId, WatchOptions, WatchReceiver, WatchRequest, WatchResponse,
};
use bytes::Bytes;
use prost::Message;

use super::*;

const PATIENCE: Duration = Duration::from_secs(30);

fn header() -> Header {
    Header { cluster_id: 0x1234_5678_9abc, member_id: 77, raft_term: 3 }
}

/// The response the plain way: prost messages built from the per-watcher view.
fn plain(h: &Header, r: &WatchResponse) -> pb::WatchResponse {
    pb::WatchResponse {
        header: Some(h.at(r.revision)),
        watch_id: r.watch_id,
        created: r.created,
        canceled: r.canceled,
        compact_revision: r.compact_revision as i64,
        cancel_reason: r.cancel_reason.clone(),
        fragment: false,
        events: r.events().map(|e| convert::event(&e, r.prev_kv)).collect(),
    }
}

/// etcd's (and the old server's) split of a response for a `fragment` watcher, with
/// sizes from prost.
fn plain_fragments(whole: pb::WatchResponse, limit: usize) -> Vec<pb::WatchResponse> {
    if whole.events.len() < 2 || whole.encoded_len() <= limit {
        return vec![whole];
    }
    let mut head = whole.clone();
    head.events.clear();
    let base = head.encoded_len() + 2;
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut size = base;
    for e in whole.events {
        let n = prost::encoding::message::encoded_len(11, &e);
        if !cur.is_empty() && size + n > limit {
            out.push(pb::WatchResponse { fragment: true, events: std::mem::take(&mut cur), ..head.clone() });
            size = base;
        }
        size += n;
        cur.push(e);
    }
    out.push(pb::WatchResponse { events: cur, ..head });
    out
}

/// The per-watcher responses an item stands for, the plain way.
fn plain_item(h: &Header, item: &Item, fragmenting: &HashSet<WatchId>, limit: usize) -> Vec<pb::WatchResponse> {
    let split = |r: &WatchResponse| {
        let whole = plain(h, r);
        if fragmenting.contains(&r.watch_id) {
            plain_fragments(whole, limit)
        } else {
            vec![whole]
        }
    };
    match item {
        Item::Response(r) => split(r),
        Item::Events(d) => {
            d.parts().iter().flat_map(|p| p.ids().iter().flat_map(|&id| split(&p.response_for(id)))).collect()
        }
        Item::Progress { revision, ids } => ids
            .iter()
            .map(|&id| pb::WatchResponse { header: Some(h.at(*revision)), watch_id: id, ..Default::default() })
            .collect(),
    }
}

/// Splits gRPC framing into the messages' bytes.
fn messages(mut wire: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !wire.is_empty() {
        assert!(wire.len() >= PREFIX, "a truncated prefix");
        assert_eq!(wire[0], 0, "uncompressed");
        let len = u32::from_be_bytes(wire[1..5].try_into().expect("4 bytes")) as usize;
        assert!(wire.len() >= PREFIX + len, "a truncated message");
        out.push(&wire[PREFIX..PREFIX + len]);
        wire = &wire[PREFIX + len..];
    }
    out
}

/// Writes `item` whole (resuming as often as needed); returns the frames.
fn frames_of(f: &mut Framer, item: Item) -> Vec<Bytes> {
    let mut frames = Vec::new();
    let mut done = f.push_item(item);
    loop {
        while let Some(b) = f.next_frame() {
            frames.push(b);
        }
        if done {
            return frames;
        }
        done = f.resume();
    }
}

/// Asserts that `frames` are exactly `expected`, message for message, byte for
/// byte, and decode to it.
fn assert_frames(frames: &[Bytes], expected: &[pb::WatchResponse], what: &str) {
    let wire: Vec<u8> = frames.iter().flat_map(|b| b.iter().copied()).collect();
    let got = messages(&wire);
    assert_eq!(got.len(), expected.len(), "{what}: message count");
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert_eq!(*g, e.encode_to_vec().as_slice(), "{what}: bytes of message {i}");
        assert_eq!(&pb::WatchResponse::decode(*g).expect("decodes"), e, "{what}: message {i}");
    }
}

/// Which kinds of response the checked items covered.
#[derive(Default, Debug)]
struct Seen {
    created: bool,
    canceled: bool,
    compacted: bool,
    progress_one: bool,
    progress_all: bool,
    events_whole: bool,
    events_selected: bool,
    prev_kv: bool,
    multi_revision: bool,
    many_ids: bool,
    fragmented: bool,
}

/// A hub on an in-memory store, one stream, and a framer checked against prost on
/// every item the stream yields.
struct Bench {
    store: Store,
    hub: WatchHub,
    ctl: WatchController,
    rx: WatchReceiver,
    framer: Framer,
    limit: usize,
    fragmenting: HashSet<WatchId>,
    seen: Seen,
    /// Every response checked, the plain way.
    got: Vec<pb::WatchResponse>,
}

impl Bench {
    fn new(limit: usize) -> Bench {
        let store = Store::open_storage(Arc::new(MemStorage::new()), StoreOptions::default()).expect("store");
        let hub = WatchHub::new(store.clone(), WatchOptions::default());
        let (ctl, rx) = hub.stream().split();
        Bench {
            store,
            hub,
            ctl,
            rx,
            framer: Framer::new(header(), limit),
            limit,
            fragmenting: HashSet::new(),
            seen: Seen::default(),
            got: Vec::new(),
        }
    }

    fn watch(&mut self, req: WatchRequest, fragment: bool) -> WatchId {
        let id = self.ctl.watch(req).expect("watch");
        if fragment {
            self.framer.expect_fragment(id);
            self.fragmenting.insert(id);
        }
        id
    }

    fn check(&mut self, item: Item) {
        let expected = plain_item(&header(), &item, &self.fragmenting, self.limit);
        match &item {
            Item::Response(r) => {
                self.seen.created |= r.created;
                self.seen.canceled |= r.canceled && r.compact_revision == 0;
                self.seen.compacted |= r.canceled && r.compact_revision > 0 && r.cancel_reason.is_empty();
                self.seen.progress_one |= r.is_progress() && r.watch_id >= 0;
                self.seen.progress_all |= r.is_progress() && r.watch_id == -1;
            }
            Item::Events(d) => {
                for p in d.parts() {
                    let revs = p.revisions();
                    self.seen.events_whole |= revs.iter().any(|r| r.selection.is_none());
                    self.seen.events_selected |= revs.iter().any(|r| r.selection.is_some());
                    self.seen.prev_kv |= p.prev_kv();
                    self.seen.multi_revision |= revs.len() > 1;
                    self.seen.many_ids |= p.ids().len() > 1;
                }
            }
            // The engine answers a progress request of synced watchers with a
            // grouped bookmark.
            Item::Progress { ids, .. } => self.seen.progress_one |= !ids.is_empty(),
        }
        self.seen.fragmented |= expected.iter().any(|r| r.fragment);
        let frames = frames_of(&mut self.framer, item);
        assert_frames(&frames, &expected, "item");
        self.got.extend(expected);
    }

    /// Waits until `n` watchers are synced (new watchers are caught up first, one
    /// response each; synced ones share fan-out parts).
    fn synced(&self, n: u64) {
        let deadline = Instant::now() + PATIENCE;
        while self.hub.metrics().synced < n {
            assert!(Instant::now() < deadline, "timed out waiting for {n} synced watchers");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Checks items until `done` holds for the responses so far.
    fn until(&mut self, what: &str, done: impl Fn(&[pb::WatchResponse]) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done(&self.got) {
            let left = deadline.saturating_duration_since(Instant::now());
            let item = self.rx.recv_item_timeout(left).unwrap_or_else(|| panic!("timed out waiting for {what}"));
            self.check(item);
        }
    }
}

fn has(rs: &[pb::WatchResponse], pred: impl Fn(&pb::WatchResponse) -> bool) -> bool {
    rs.iter().any(pred)
}

fn events_at(rs: &[pb::WatchResponse], id: WatchId, rev: i64) -> bool {
    has(rs, |r| r.watch_id == id && r.events.iter().any(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision >= rev)))
}

fn put(key: &str, value: &[u8], prev_kv: bool) -> TxnOp {
    TxnOp::Put { key: key.into(), value: value.to_vec(), prev_kv, lease: PutLease::None }
}

/// Every kind of response the engine yields today, through the framer.
#[test]
fn every_response_kind_is_what_prost_encodes() {
    let mut b = Bench::new(1 << 20);
    // Created, then events for several watchers of one prefix (one part, many ids),
    // with and without prev_kv, whole revisions.
    let a = b.watch(WatchRequest::prefix("/p/"), false);
    let a2 = b.watch(WatchRequest::prefix("/p/"), false);
    let pv = b.watch(WatchRequest::prefix("/p/").with_prev_kv(), false);
    // A watcher of one key: a selection of a revision's events.
    let one = b.watch(WatchRequest::key("/p/b").with_prev_kv(), false);
    let one_plain = b.watch(WatchRequest::key("/p/a"), false);
    // Enough watchers of one range that some share an index shard (the index is
    // sharded by watcher): their deliveries are parts of many ids.
    let crowd: Vec<WatchId> = (0..40).map(|_| b.watch(WatchRequest::prefix("/p/"), false)).collect();
    b.until("created", |rs| rs.iter().filter(|r| r.created).count() == 45);
    b.synced(45);
    b.store.put(b"/p/a", b"1").expect("put");
    b.store
        .txn(&[], &[put("/p/a", b"2", false), put("/p/b", b"3", false), put("/p/c", b"4", false)], &[])
        .expect("txn");
    b.store.delete_range(b"/p/b", b"", false).expect("delete");
    let last = b.store.current_revision() as i64;
    b.until("events", |rs| {
        [a, a2, pv, one].iter().chain(&crowd).all(|&id| events_at(rs, id, last)) && events_at(rs, one_plain, 3)
    });
    // Progress: of one watcher, then of the whole stream.
    b.ctl.request_progress(a);
    b.until("a progress response", |rs| has(rs, |r| r.watch_id == a && r.events.is_empty() && !r.created));
    // Stream-wide (-1) only when every watcher is synced.
    b.synced(45);
    b.ctl.request_progress_all();
    b.until("a stream-wide progress response", |rs| has(rs, |r| r.watch_id == -1));
    // A watcher from the past: its catch-up response carries several revisions.
    let past = b.watch(WatchRequest::prefix("/p/").from_revision(2).with_prev_kv(), false);
    b.until("catch-up", |rs| events_at(rs, past, last));
    // Canceled.
    b.ctl.cancel(a2).expect("cancel");
    b.until("canceled", |rs| has(rs, |r| r.watch_id == a2 && r.canceled));
    // Compacted: created, then canceled with compact_revision and a reason.
    b.store.compact(3).expect("compact");
    let old = b.watch(WatchRequest::prefix("/p/").from_revision(1), false);
    b.until("compacted", |rs| has(rs, |r| r.watch_id == old && r.canceled));
    let s = &b.seen;
    assert!(
        s.created
            && s.canceled
            && s.compacted
            && s.progress_one
            && s.progress_all
            && s.events_whole
            && s.events_selected
            && s.prev_kv
            && s.multi_revision
            && s.many_ids,
        "not every kind was checked: {s:?}"
    );
}

/// A refused create (prost, watch id -1, `created` and `canceled`, etcd's reason).
#[test]
fn a_refused_create_is_what_prost_encodes() {
    let mut f = Framer::new(header(), 1 << 20);
    for e in [WatchError::DuplicateId(3), WatchError::EmptyRange, WatchError::TooManyWatchers(5)] {
        let msg = crate::watch::refused(&header(), 9, &e);
        assert!(msg.created && msg.canceled && msg.watch_id == -1 && !msg.cancel_reason.is_empty());
        f.push_message(&msg);
        let frames: Vec<Bytes> = std::iter::from_fn(|| f.next_frame()).collect();
        assert_frames(&frames, &[msg], "refused");
    }
}

/// `Item::Progress` for several ids (the engine's grouped bookmarks), including ids
/// whose varints take one, three and ten bytes (negative) and id 0, which prost
/// leaves out.
#[test]
fn grouped_progress_is_one_response_per_id() {
    let ids: Vec<WatchId> = vec![1, 2, 70_000, -5, 0, i64::MAX];
    let item = Item::Progress { revision: 1234, ids: ids.clone().into() };
    let expected = plain_item(&header(), &item, &HashSet::new(), 1 << 20);
    assert_eq!(expected.len(), ids.len());
    let mut f = Framer::new(header(), 1 << 20);
    let frames = frames_of(&mut f, item);
    assert_frames(&frames, &expected, "progress");
    // Revision 0 is left out of the header by prost too.
    let item = Item::Progress { revision: 0, ids: vec![4].into() };
    let expected = plain_item(&header(), &item, &HashSet::new(), 1 << 20);
    assert_frames(&frames_of(&mut f, item), &expected, "progress at 0");
}

/// A watcher that asked for `fragment` gets a response above the limit split at
/// event boundaries, `fragment` on all but the last; one that did not gets it whole,
/// from the same part; a single event above the limit goes alone.
#[test]
fn fragments_split_as_before() {
    let limit = 400;
    let mut b = Bench::new(limit);
    let frag = b.watch(WatchRequest::prefix("/f/"), true);
    let whole = b.watch(WatchRequest::prefix("/f/"), false);
    let frag_prev = b.watch(WatchRequest::prefix("/f/").with_prev_kv(), true);
    b.until("created", |rs| rs.iter().filter(|r| r.created).count() == 3);
    b.synced(3);
    let v = vec![b'v'; 100];
    let ops: Vec<TxnOp> = (0..6).map(|i| put(&format!("/f/{i}"), &v, false)).collect();
    b.store.txn(&[], &ops, &[]).expect("txn");
    // One event above the limit among small ones.
    let big = vec![b'x'; 2 * limit];
    b.store
        .txn(&[], &[put("/f/0", b"s", false), put("/f/1", &big, false), put("/f/2", b"t", false)], &[])
        .expect("txn");
    let last = b.store.current_revision() as i64;
    b.until("events", |rs| [frag, whole, frag_prev].iter().all(|&id| events_at(rs, id, last)));
    assert!(b.seen.fragmented, "nothing was fragmented");
    let of = |id| b.got.iter().filter(move |r| r.watch_id == id && !r.events.is_empty()).collect::<Vec<_>>();
    assert_eq!(of(whole).len(), 2, "the watcher without fragment gets each revision whole");
    // (events, fragment) of each response: revision 2's six ~120-byte events three
    // to a message, revision 3's large event alone between the small ones.
    let sizes = |id| of(id).iter().map(|r| (r.events.len(), r.fragment)).collect::<Vec<_>>();
    let want = vec![(3, true), (3, false), (1, true), (1, true), (1, false)];
    assert_eq!(sizes(frag), want);
    assert_eq!(sizes(frag_prev), want);
    // Canceled, the watcher's fragment setting is gone; a new watcher reusing its id
    // without fragment gets whole responses.
    b.ctl.cancel(frag).expect("cancel");
    b.until("canceled", |rs| has(rs, |r| r.watch_id == frag && r.canceled));
    b.fragmenting.remove(&frag);
    let again = b.watch(WatchRequest { watch_id: frag, ..WatchRequest::prefix("/f/") }, false);
    assert_eq!(again, frag);
    b.until("created again", |rs| rs.iter().filter(|r| r.watch_id == frag && r.created).count() == 2);
    b.store.txn(&[], &ops, &[]).expect("txn");
    let last = b.store.current_revision() as i64;
    b.until("whole again", |rs| events_at(rs, frag, last));
    let resp: Vec<_> = b.got.iter().filter(|r| r.watch_id == frag && !r.events.is_empty()).collect();
    assert!(!resp.last().expect("a response").fragment && resp.last().expect("a response").events.len() == 6);
}

/// Events of at least `SHARE_MIN_BYTES` go out as slices of the revision's memo,
/// not copies, and the bytes are still exactly prost's.
#[test]
fn a_large_event_is_a_shared_slice_of_the_memo() {
    let mut b = Bench::new(16 << 20);
    let w1 = b.watch(WatchRequest::prefix("/l/"), false);
    let w2 = b.watch(WatchRequest::prefix("/l/"), false);
    let w3 = b.watch(WatchRequest::key("/l/big").with_prev_kv(), false);
    b.until("created", |rs| rs.iter().filter(|r| r.created).count() == 3);
    b.synced(3);
    let big = vec![b'b'; 3 * SHARE_MIN_BYTES];
    b.store.txn(&[], &[put("/l/small", b"s", false), put("/l/big", &big, false)], &[]).expect("txn");
    let deadline = Instant::now() + PATIENCE;
    let mut shared_frames = 0;
    let mut seen = HashSet::new();
    while seen.len() < 3 {
        let item = b.rx.recv_item_timeout(deadline.saturating_duration_since(Instant::now())).expect("the events");
        let Item::Events(d) = &item else { continue };
        // Where each part's memo lives.
        let memos: Vec<(usize, usize)> = d
            .parts()
            .iter()
            .flat_map(|p| p.revisions().iter().map(|r| memo(&r.batch, p.prev_kv())).collect::<Vec<_>>())
            .map(|m| (m.bytes.as_ptr() as usize, m.bytes.len()))
            .collect();
        for p in d.parts() {
            seen.extend(p.ids().iter().copied());
        }
        let expected = plain_item(&header(), &item, &HashSet::new(), 16 << 20);
        let frames = frames_of(&mut b.framer, item);
        assert_frames(&frames, &expected, "large");
        for f in &frames {
            let at = f.as_ptr() as usize;
            if memos.iter().any(|&(start, len)| at >= start && at + f.len() <= start + len) {
                assert!(f.len() >= SHARE_MIN_BYTES, "a short slice shared: {} bytes", f.len());
                shared_frames += 1;
            }
        }
    }
    assert_eq!(seen, HashSet::from([w1, w2, w3]));
    // One shared slice per watcher (the small event is copied).
    assert_eq!(shared_frames, 3);
}

/// An item larger than the byte target is written in rounds of about the target,
/// resumed where it stopped, and an idle framer holds no buffer.
#[test]
fn a_large_item_is_written_in_rounds_and_the_buffer_is_released() {
    let ids: Vec<WatchId> = (1..=20_000).collect();
    let item = Item::Progress { revision: 99, ids: ids.into() };
    let expected = plain_item(&header(), &item, &HashSet::new(), 1 << 20);
    let largest = expected.iter().map(|r| PREFIX + r.encoded_len()).max().expect("responses");
    let mut f = Framer::new(header(), 1 << 20);
    assert_eq!(f.held_capacity(), 0, "a new framer allocates nothing");
    let mut frames = Vec::new();
    let mut rounds = 0;
    let mut done = f.push_item(item);
    loop {
        rounds += 1;
        let round: usize = std::iter::from_fn(|| f.next_frame())
            .map(|b| {
                let n = b.len();
                frames.push(b);
                n
            })
            .sum();
        assert!(round <= TARGET_BYTES + largest, "a round of {round} bytes");
        if done {
            break;
        }
        assert!(round >= TARGET_BYTES, "a round stopped early at {round} bytes");
        done = f.resume();
    }
    let total: usize = expected.iter().map(|r| PREFIX + r.encoded_len()).sum();
    assert!(rounds >= total / (TARGET_BYTES + largest), "{rounds} rounds for {total} bytes");
    assert_frames(&frames, &expected, "rounds");
    f.release_idle();
    assert_eq!(f.held_capacity(), 0, "an idle framer keeps no buffer");
}

/// Many small items written in one round (what a body poll drains while the
/// engine has them) make one frame, not one per item: h2 gives every DATA frame of
/// 256 bytes or more a write call of its own. A longer round makes frames of at
/// least an HTTP/2 frame's worth.
#[test]
fn a_round_of_small_items_is_one_frame() {
    let mut f = Framer::new(header(), 1 << 20);
    let item = |i: u64| Item::Progress { revision: 10 + i, ids: vec![i as i64 + 1].into() };
    let mut expected = Vec::new();
    for i in 0..200 {
        expected.extend(plain_item(&header(), &item(i), &HashSet::new(), 1 << 20));
        assert!(f.push_item(item(i)));
    }
    let frames: Vec<Bytes> = std::iter::from_fn(|| f.next_frame()).collect();
    assert_eq!(frames.len(), 1, "sizes {:?}", frames.iter().map(Bytes::len).collect::<Vec<_>>());
    assert_frames(&frames, &expected, "small items");

    let mut expected = Vec::new();
    let mut i = 0;
    while !f.is_full() {
        expected.extend(plain_item(&header(), &item(i), &HashSet::new(), 1 << 20));
        assert!(f.push_item(item(i)));
        i += 1;
    }
    let frames: Vec<Bytes> = std::iter::from_fn(|| f.next_frame()).collect();
    let sizes: Vec<usize> = frames.iter().map(Bytes::len).collect();
    assert!(sizes[..sizes.len() - 1].iter().all(|&n| n >= SHARE_MIN_BYTES), "sizes {sizes:?}");
    assert!(sizes.len() <= 1 + TARGET_BYTES / SHARE_MIN_BYTES, "sizes {sizes:?}");
    assert_frames(&frames, &expected, "a full round");
}

/// A request body of the given bytes (one frame).
struct OneFrame(Option<Bytes>);

impl http_body::Body for OneFrame {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.take().map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// Decodes `wire` as a request stream with a receive limit of `max` (and tonic's
/// own limit at 4 times that, as the server sets it), up to the first error (where
/// the Watch body stops reading: tonic's stream would repeat a decoder's error).
fn decode_requests(wire: Vec<u8>, max: usize) -> Vec<Result<pb::WatchRequest, tonic::Status>> {
    use futures::StreamExt;
    let body = OneFrame(Some(wire.into()));
    let mut s = tonic::Streaming::new_request(RequestDecoder::new(max), body, None, Some(4 * max));
    futures::executor::block_on(async {
        let mut out = Vec::new();
        while let Some(r) = s.next().await {
            let failed = r.is_err();
            out.push(r);
            if failed {
                break;
            }
        }
        out
    })
}

fn create(key_len: usize) -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(pb::WatchCreateRequest {
            key: vec![b'k'; key_len],
            ..Default::default()
        })),
    }
}

fn framed(reqs: &[pb::WatchRequest]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in reqs {
        out.push(0);
        out.extend_from_slice(&(r.encoded_len() as u32).to_be_bytes());
        r.encode_raw(&mut out);
    }
    out
}

/// Requests decode with prost; one above the receive limit is refused with etcd's
/// status and message (ResourceExhausted), a malformed one with etcd's Internal
/// ("grpc: failed to unmarshal the received message ..."), and the stream ends at
/// the first error.
#[test]
fn requests_decode_and_the_receive_limit_is_etcds() {
    let small = create(10);
    let got = decode_requests(framed(&[small.clone(), small.clone()]), 64);
    assert_eq!(got.into_iter().map(|r| r.expect("decodes")).collect::<Vec<_>>(), vec![small.clone(), small.clone()]);

    let big = create(100);
    let n = big.encoded_len();
    let got = decode_requests(framed(&[small.clone(), big, small.clone()]), 64);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].as_ref().expect("the first decodes"), &small);
    let err = got[1].as_ref().expect_err("above the limit");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert_eq!(err.message(), format!("grpc: received message larger than max ({n} vs. 64)"));

    let mut bad = vec![0, 0, 0, 0, 3];
    bad.extend_from_slice(&[0x0a, 0x05, 0x01]);
    let got = decode_requests(bad, 64);
    let err = got[0].as_ref().expect_err("malformed");
    assert_eq!(err.code(), tonic::Code::Internal);
    assert!(err.message().starts_with("grpc: failed to unmarshal the received message "), "{err:?}");
}

/// A catch-up response of many small revisions (above a frame in all) for several
/// watchers: its event bytes are joined once and shared (the same allocation in
/// every watcher's message), and every message is what prost writes.
#[test]
fn a_large_multi_revision_part_is_joined_once_and_shared() {
    use argus_engine::store::KeyValue;
    use argus_engine::watch::{Delivery, Event, EventKind, Ids, Part, RevisionBatch, RevisionEvents};
    use std::sync::Arc;
    let revs: Vec<RevisionEvents> = (2..400u64)
        .map(|rev| {
            let kv = KeyValue {
                key: format!("/k/{rev}").into_bytes(),
                value: vec![b'v'; 60],
                create_revision: 2,
                mod_revision: rev,
                version: rev - 1,
                // Some with a lease (the encoded length must count it), some without.
                lease: (rev % 3) as i64 * 0x694d_7c3b,
            };
            let batch = RevisionBatch::new(rev, vec![Event { kind: EventKind::Put, kv, prev_kv: None, sub: 0 }], false);
            RevisionEvents { batch: Arc::new(batch), selection: None }
        })
        .collect();
    let all: Arc<[RevisionEvents]> = revs.into();
    let ids = Ids::from(vec![3, 9, 1 << 40]);
    let part = Part::run(ids.clone(), false, Arc::clone(&all), 10, 390);
    let item = Item::Events(Delivery::new(vec![part]));
    let expected = plain_item(&header(), &item, &HashSet::new(), usize::MAX);
    assert!(expected.iter().all(|r| r.encoded_len() > SHARE_MIN_BYTES), "the test needs responses above a frame");
    let mut f = Framer::new(header(), usize::MAX);
    let frames = frames_of(&mut f, item);
    assert_frames(&frames, &expected, "joined part");
    // The joined body is one allocation shared by the three messages.
    let big: Vec<&Bytes> = frames.iter().filter(|b| b.len() > SHARE_MIN_BYTES).collect();
    assert_eq!(big.len(), 3, "one shared body frame per watcher");
    assert!(big.windows(2).all(|w| w[0].as_ptr() == w[1].as_ptr()), "the body is shared, not copied");
}
