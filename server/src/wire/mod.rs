//! How the Watch method is spelled on the wire: requests decode with prost (with
//! etcd's receive limit); responses are written straight into gRPC framing, many
//! complete messages to a buffer, by a [`Framer`] that encodes once what every
//! watcher of a response shares and per watcher only what differs.
//!
//! A gRPC message is `[0][u32 BE length][protobuf bytes]`. For an event response,
//! fields 3–7 of `WatchResponse` are zero and prost writes fields in number order,
//! so the protobuf bytes are `[field 1: header][field 2: watch id][field 11 events…]`
//! (`events` is field 11, the last). The header depends only on the revision
//! (cached once per header revision); each event's field-11 bytes are encoded once
//! per revision in the revision's memo ([`RevisionBatch::encoded`], see [`memo`]),
//! and a watcher that receives only some of a revision's events gets slices of the
//! memo. Per watcher the framer writes the 5-byte prefix, the header bytes, the
//! watch id and the event bytes: byte for byte what prost writes for the whole
//! message, which the unit tests check for every kind of response.
//!
//! Event bytes of at least [`SHARE_MIN_BYTES`] are not copied: the buffer so far
//! becomes a frame and the memo slice (a [`Bytes`] sharing the memo) the next one.
//! A part made of many small slices that add up to that much (a catch-up response
//! of many revisions) is joined once into one buffer shared by all its watchers.
//! Rare responses (created, canceled, per-watcher progress and stream-wide
//! progress, refused creates) are encoded with prost.

use std::collections::{HashSet, VecDeque};
use std::ops::Range;

use argus_engine::watch::{
    EncodedEvents, EventKind, EventRef, Item, KvRef, Part, RevisionBatch, RevisionEvents, WatchId, WatchResponse,
};
use bytes::{Bytes, BytesMut};
use prost::Message;
use tonic::codec::{BufferSettings, DecodeBuf, Decoder};
use tonic::Status;

use crate::convert;
use crate::proto::etcdserverpb as pb;
use crate::proto::mvccpb;
use crate::Header;

#[cfg(test)]
mod tests;

/// Bytes a [`Framer`] writes before it stops taking items (a poll of the Watch body
/// returns once it has this much): large enough that a fan-out of small responses
/// goes out in few frames, small enough that a stream holds little when its client
/// reads slowly.
pub const TARGET_BYTES: usize = 64 * 1024;

/// Event bytes from this size on go out as a shared slice of the memo rather than a
/// copy. 16 KiB is HTTP/2's default (and etcd clients' usual) maximum DATA frame
/// size: h2 writes every DATA frame of 256 bytes or more with a write call of its
/// own, so a slice shorter than a frame would cost an extra write (several µs), more
/// than copying it; a slice of a frame or more costs no extra write, and the copy
/// it saves (a µs or more per 16 KiB, per watcher) grows with the event.
pub const SHARE_MIN_BYTES: usize = 16 * 1024;

/// Smallest buffer the framer allocates.
const MIN_ALLOC: usize = 512;

/// The gRPC message prefix: compression flag and big-endian length.
const PREFIX: usize = 5;

/// Field 2 (`watch_id`), wire type varint.
const WATCH_ID_TAG: u8 = 2 << 3;

/// Field 7 (`fragment`) set: tag, wire type varint, then `true`.
const FRAGMENT_FIELD: [u8; 2] = [7 << 3, 1];

/// Initial capacity of a stream's request buffer (tonic's default is 8 KiB per
/// stream); Watch requests are a key range and flags, and the buffer grows for a
/// larger one.
const REQUEST_BUFFER_BYTES: usize = 256;

/// The field-11 bytes of every event of `batch` (with or without prev_kv), encoded
/// on first use and shared by every stream, with each event's end offset. The
/// buffer is allocated once at its exact size (a huge revision's memo is not grown
/// by doubling, which would hold up to three times its size while it copies).
pub fn memo(batch: &RevisionBatch, prev_kv: bool) -> &EncodedEvents {
    batch.encoded[usize::from(prev_kv)].get_or_init(|| {
        let total = batch.events().map(|e| event_field_len(&e, prev_kv)).sum();
        let mut out = Vec::with_capacity(total);
        let mut ends = Vec::with_capacity(batch.len());
        for e in batch.events() {
            prost::encoding::message::encode(11, &convert::event(e, prev_kv), &mut out);
            ends.push(u32::try_from(out.len()).expect("a revision's events encode to less than 4 GiB"));
        }
        debug_assert_eq!(out.len(), total, "event_field_len agrees with prost");
        EncodedEvents { bytes: out.into(), ends: ends.into() }
    })
}

/// Bytes of `e` as a field-11 entry of `WatchResponse` (what prost writes for
/// `convert::event(e, prev_kv)`; proto3 leaves zero and empty fields out).
fn event_field_len(e: &EventRef<'_>, prev_kv: bool) -> usize {
    use prost::encoding::{encoded_len_varint, key_len};
    let message = |tag: u32, n: usize| key_len(tag) + encoded_len_varint(n as u64) + n;
    let bytes = |tag: u32, n: usize| if n == 0 { 0 } else { message(tag, n) };
    let int = |tag: u32, v: u64| if v == 0 { 0 } else { key_len(tag) + encoded_len_varint(v) };
    let kv = |kv: &KvRef<'_>| {
        bytes(1, kv.key.len())
            + int(2, kv.create_revision)
            + int(3, kv.mod_revision)
            + int(4, kv.version)
            + bytes(5, kv.value.len())
            + int(6, kv.lease as u64)
    };
    let kind = match e.kind {
        EventKind::Put => 0,
        EventKind::Delete => int(1, mvccpb::event::EventType::Delete as u64),
    };
    let prev = match (&e.prev_kv, prev_kv) {
        (Some(p), true) => message(3, kv(p)),
        _ => 0,
    };
    message(11, kind + message(2, kv(&e.kv)) + prev)
}

/// One response's events: byte ranges of revision memos, in order (adjacent events
/// of a memo merged into one range).
#[derive(Default)]
struct Events<'a> {
    segments: Vec<(&'a EncodedEvents, Range<usize>)>,
    /// Total bytes.
    len: usize,
    /// Bytes in ranges shorter than [`SHARE_MIN_BYTES`] (copied into the buffer).
    copied: usize,
    /// Events.
    count: usize,
}

impl<'a> Events<'a> {
    fn of(revisions: &'a [RevisionEvents], prev_kv: bool) -> Events<'a> {
        let mut ev = Events { segments: Vec::with_capacity(revisions.len()), ..Default::default() };
        for re in revisions {
            let m = memo(&re.batch, prev_kv);
            match &re.selection {
                None => {
                    ev.count += m.ends.len();
                    ev.push(m, 0..m.bytes.len());
                }
                Some(sel) => {
                    ev.count += sel.len();
                    for &i in sel.iter() {
                        ev.push(m, m.range(i as usize));
                    }
                }
            }
        }
        ev.copied = ev.segments.iter().map(|(_, r)| r.len()).filter(|&n| n < SHARE_MIN_BYTES).sum();
        ev
    }

    /// Each event on its own (for fragmenting).
    fn each(revisions: &'a [RevisionEvents], prev_kv: bool) -> Vec<(&'a EncodedEvents, Range<usize>)> {
        let mut out = Vec::new();
        for re in revisions {
            let m = memo(&re.batch, prev_kv);
            match &re.selection {
                None => out.extend((0..m.ends.len()).map(|i| (m, m.range(i)))),
                Some(sel) => out.extend(sel.iter().map(|&i| (m, m.range(i as usize)))),
            }
        }
        out
    }

    fn from_segments(list: &[(&'a EncodedEvents, Range<usize>)]) -> Events<'a> {
        let mut ev = Events::default();
        for (m, r) in list {
            ev.count += 1;
            ev.push(m, r.clone());
        }
        ev.copied = ev.segments.iter().map(|(_, r)| r.len()).filter(|&n| n < SHARE_MIN_BYTES).sum();
        ev
    }

    fn push(&mut self, m: &'a EncodedEvents, r: Range<usize>) {
        self.len += r.len();
        if let Some((last, lr)) = self.segments.last_mut() {
            if std::ptr::eq(*last, m) && lr.end == r.start {
                lr.end = r.end;
                return;
            }
        }
        self.segments.push((m, r));
    }
}

/// The output: complete frames waiting to be sent, then the buffer being filled.
#[derive(Default)]
struct Out {
    buf: BytesMut,
    frames: VecDeque<Bytes>,
    /// Bytes in `frames` and `buf`.
    queued: usize,
    /// Bytes the current item is expected to add (the size of the next allocation).
    hint: usize,
}

impl Out {
    /// Ends the buffer's frame (without copying: the frame shares its allocation).
    fn flush(&mut self) {
        if !self.buf.is_empty() {
            let f = self.buf.split().freeze();
            self.frames.push_back(f);
        }
    }

    /// Room for at least `need` more bytes. An empty buffer is allocated for what
    /// the current item is expected to add; a buffer that fills up while a round
    /// goes on is grown to a whole target (copying what it holds, less than one
    /// HTTP/2 frame), so that a round of many small items is one frame rather than
    /// one per item; one that holds a frame's worth already is sent as it is.
    fn grow(&mut self, need: usize) {
        if self.buf.len() >= SHARE_MIN_BYTES {
            self.flush();
        }
        let additional = if self.buf.is_empty() {
            need.max(self.hint).clamp(MIN_ALLOC, TARGET_BYTES)
        } else {
            need.max(TARGET_BYTES.saturating_sub(self.buf.len()))
        };
        self.buf.reserve(additional);
    }

    fn spare(&self) -> usize {
        self.buf.capacity() - self.buf.len()
    }

    /// Copies `data` into the buffer (across buffers if it is full).
    fn put(&mut self, mut data: &[u8]) {
        self.queued += data.len();
        while !data.is_empty() {
            if self.spare() == 0 {
                self.grow(data.len());
            }
            let n = self.spare().min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
    }

    /// Sends `b` as a frame of its own, after what is buffered.
    fn share(&mut self, b: Bytes) {
        self.flush();
        self.queued += b.len();
        self.frames.push_back(b);
    }

    /// One gRPC message: `head` (its parts back to back), then the events.
    fn message(&mut self, head: &[&[u8]], events: &Events<'_>) {
        let head_len: usize = head.iter().map(|h| h.len()).sum();
        let len = head_len + events.len;
        // A message whose copied bytes fit in a buffer starts in one that holds them.
        let copied = PREFIX + head_len + events.copied;
        if self.spare() < copied.min(TARGET_BYTES) {
            self.grow(copied);
        }
        let mut prefix = [0u8; PREFIX];
        prefix[1..].copy_from_slice(&u32::try_from(len).expect("a Watch response below 4 GiB").to_be_bytes());
        self.put(&prefix);
        for h in head {
            self.put(h);
        }
        for (m, r) in &events.segments {
            if r.len() >= SHARE_MIN_BYTES {
                self.share(m.bytes.slice(r.clone()));
            } else {
                self.put(&m.bytes[r.clone()]);
            }
        }
    }
}

impl Out {
    /// One gRPC message: `head`, then `body` (a part's event bytes joined once and
    /// shared by every watcher of the part: nothing of it is copied here).
    fn message_joined(&mut self, head: &[&[u8]], body: &Bytes) {
        let head_len: usize = head.iter().map(|h| h.len()).sum();
        if self.spare() < PREFIX + head_len {
            self.grow(PREFIX + head_len);
        }
        let mut prefix = [0u8; PREFIX];
        let len = u32::try_from(head_len + body.len()).expect("a Watch response below 4 GiB");
        prefix[1..].copy_from_slice(&len.to_be_bytes());
        self.put(&prefix);
        for h in head {
            self.put(h);
        }
        self.share(body.clone());
    }
}

/// The event bytes of a part as the framer writes them.
enum Body<'a> {
    /// Joined once into one buffer (with its event count), shared by every message.
    Joined(Bytes, usize),
    /// Memo slices, copied (or shared, if large) into each message.
    Slices(Events<'a>),
}

/// A part's event bytes joined into one buffer, for the part they were made for.
struct Joined {
    /// The part's revisions (their address and count, valid while the item that
    /// holds them is being written) and `prev_kv`.
    key: (usize, usize, bool),
    body: Bytes,
    /// Events in the body.
    count: usize,
}

/// Field 2 (`watch_id`) as prost writes it: nothing for 0, else tag and varint.
fn watch_id_field(id: WatchId) -> ([u8; 11], usize) {
    let mut b = [0u8; 11];
    if id == 0 {
        return (b, 0);
    }
    b[0] = WATCH_ID_TAG;
    let mut rest = &mut b[1..];
    prost::encoding::encode_varint(id as u64, &mut rest);
    let n = 1 + prost::encoding::encoded_len_varint(id as u64);
    (b, n)
}

/// An item partly written (the framer stopped at its byte target).
struct Cursor {
    item: Item,
    part: usize,
    at: usize,
}

/// Writes a Watch stream's responses as gRPC messages into frames (see the module
/// documentation). Items are taken one at a time and written until
/// [`TARGET_BYTES`] are queued; the rest of an item waits for [`Framer::resume`].
pub struct Framer {
    header: Header,
    fragment_bytes: usize,
    /// Field 1 (the header) at `head_rev`; empty until first needed.
    head: Vec<u8>,
    head_rev: u64,
    out: Out,
    current: Option<Cursor>,
    /// The joined body of the part being written, if it has one (see `part`).
    joined: Option<Joined>,
    /// Watchers created with `fragment` whose `created` response has not been
    /// written yet.
    fragment_asked: HashSet<WatchId>,
    /// Watchers whose responses above `fragment_bytes` are split.
    fragmenting: HashSet<WatchId>,
}

impl Framer {
    /// A framer for responses with `header`'s identity; responses of watchers that
    /// asked for `fragment` are split above `fragment_bytes`.
    pub fn new(header: Header, fragment_bytes: usize) -> Framer {
        Framer {
            header,
            fragment_bytes,
            head: Vec::new(),
            head_rev: 0,
            out: Out::default(),
            current: None,
            joined: None,
            fragment_asked: HashSet::new(),
            fragmenting: HashSet::new(),
        }
    }

    /// Watcher `id` was created with `fragment`: its responses are split from its
    /// `created` response on (so a reused id's old watcher is not affected).
    pub fn expect_fragment(&mut self, id: WatchId) {
        self.fragment_asked.insert(id);
    }

    /// Writes a response encoded by prost (a refused create).
    pub fn push_message(&mut self, msg: &pb::WatchResponse) {
        let bytes = msg.encode_to_vec();
        self.out.hint = PREFIX + bytes.len();
        self.out.message(&[&bytes], &Events::default());
    }

    /// Starts writing `item`; returns whether it was written whole (else the rest
    /// waits for [`Framer::resume`]).
    ///
    /// # Panics
    ///
    /// If an item is still partly written.
    pub fn push_item(&mut self, item: Item) -> bool {
        assert!(self.current.is_none(), "an item is still partly written");
        self.current = Some(Cursor { item, part: 0, at: 0 });
        self.resume()
    }

    /// Writes more of a partly written item; returns whether none is left.
    pub fn resume(&mut self) -> bool {
        let Some(mut c) = self.current.take() else { return true };
        let Cursor { item, part, at } = &mut c;
        let done = match item {
            Item::Response(r) => {
                self.response(r);
                true
            }
            Item::Progress { revision, ids } => self.progress(*revision, ids, at),
            Item::Events(d) => self.delivery(d.parts(), part, at),
        };
        if !done {
            self.current = Some(c);
        } else {
            // The joined body's key names memory of the item just finished.
            self.joined = None;
        }
        done
    }

    /// Drops the rest of a partly written item (the stream is ending in error).
    pub fn abandon(&mut self) {
        self.current = None;
        self.joined = None;
    }

    /// Whether the byte target is reached.
    pub fn is_full(&self) -> bool {
        self.out.queued >= TARGET_BYTES
    }

    /// Whether a complete frame (not just the buffer) is waiting.
    pub fn has_frame(&self) -> bool {
        !self.out.frames.is_empty()
    }

    /// The next frame to send: complete frames first, then the buffer.
    pub fn next_frame(&mut self) -> Option<Bytes> {
        let f = match self.out.frames.pop_front() {
            Some(f) => f,
            None if self.out.buf.is_empty() => return None,
            None => self.out.buf.split().freeze(),
        };
        self.out.queued -= f.len();
        Some(f)
    }

    /// Releases the buffer if nothing is waiting in it (an idle stream keeps none).
    pub fn release_idle(&mut self) {
        if self.out.queued == 0 && self.current.is_none() {
            self.out.buf = BytesMut::new();
            self.out.frames = VecDeque::new();
        }
    }

    /// Bytes held by the framer's own buffers (tests of idle streams).
    pub fn held_capacity(&self) -> usize {
        self.out.buf.capacity() + self.out.frames.capacity() * std::mem::size_of::<Bytes>()
    }

    /// Field 1 at `revision` in `self.head`.
    fn set_head(&mut self, revision: u64) {
        if self.head.is_empty() || self.head_rev != revision {
            self.head.clear();
            prost::encoding::message::encode(1, &self.header.at(revision), &mut self.head);
            self.head_rev = revision;
        }
    }

    /// One ordinary response, encoded with prost but for the events (memo bytes).
    fn response(&mut self, r: &WatchResponse) {
        if r.created && self.fragment_asked.remove(&r.watch_id) {
            self.fragmenting.insert(r.watch_id);
        }
        let fragment =
            if r.canceled { self.fragmenting.remove(&r.watch_id) } else { self.fragmenting.contains(&r.watch_id) };
        let head = pb::WatchResponse {
            header: Some(self.header.at(r.revision)),
            watch_id: r.watch_id,
            created: r.created,
            canceled: r.canceled,
            compact_revision: r.compact_revision as i64,
            cancel_reason: r.cancel_reason.clone(),
            fragment: false,
            events: Vec::new(),
        }
        .encode_to_vec();
        let events = Events::of(&r.events, r.prev_kv);
        self.out.hint = PREFIX + head.len() + events.copied;
        if fragment && events.count >= 2 && head.len() + events.len > self.fragment_bytes {
            self.fragments(&head, &r.events, r.prev_kv);
        } else {
            self.out.message(&[&head], &events);
        }
    }

    /// A progress response (no events) for each of `ids[*at..]`.
    fn progress(&mut self, revision: u64, ids: &[WatchId], at: &mut usize) -> bool {
        self.set_head(revision);
        self.out.hint = (ids.len() - *at).saturating_mul(PREFIX + self.head.len() + 11);
        let none = Events::default();
        while let Some(&id) = ids.get(*at) {
            *at += 1;
            let (idb, n) = watch_id_field(id);
            self.out.message(&[&self.head, &idb[..n]], &none);
            if *at < ids.len() && self.is_full() {
                return false;
            }
        }
        true
    }

    fn delivery(&mut self, parts: &[Part], part: &mut usize, at: &mut usize) -> bool {
        while let Some(p) = parts.get(*part) {
            if !self.part(p, at) {
                return false;
            }
            *part += 1;
            *at = 0;
            if *part < parts.len() && self.is_full() {
                return false;
            }
        }
        true
    }

    /// The response of part `p` for each of its ids from `*at` on.
    ///
    /// A part whose events are many small memo slices adding up to a frame or more
    /// (a catch-up response of up to 1000 revisions) has them joined once into one
    /// buffer that every watcher of the part shares: one copy per part instead of one
    /// per watcher, and no per-watcher walk of the revisions.
    fn part(&mut self, p: &Part, at: &mut usize) -> bool {
        let ids = p.ids();
        self.set_head(p.revision());
        let key = (p.revisions().as_ptr() as usize, p.revisions().len(), p.prev_kv());
        let body = match &self.joined {
            Some(j) if j.key == key => Body::Joined(j.body.clone(), j.count),
            _ => {
                self.joined = None;
                let events = Events::of(p.revisions(), p.prev_kv());
                if events.segments.len() > 1 && events.copied >= SHARE_MIN_BYTES && ids.len() - *at > 1 {
                    let mut joined = BytesMut::with_capacity(events.len);
                    for (m, r) in &events.segments {
                        joined.extend_from_slice(&m.bytes[r.clone()]);
                    }
                    let (body, count) = (joined.freeze(), events.count);
                    self.joined = Some(Joined { key, body: body.clone(), count });
                    Body::Joined(body, count)
                } else {
                    Body::Slices(events)
                }
            }
        };
        let (count, len, copied) = match &body {
            Body::Joined(b, count) => (*count, b.len(), 0),
            Body::Slices(e) => (e.count, e.len, e.copied),
        };
        let base = self.head.len() + len;
        self.out.hint = (ids.len() - *at).saturating_mul(PREFIX + self.head.len() + 11 + copied);
        let may_fragment = count >= 2 && !self.fragmenting.is_empty();
        while let Some(&id) = ids.get(*at) {
            *at += 1;
            let (idb, n) = watch_id_field(id);
            if may_fragment && base + n > self.fragment_bytes && self.fragmenting.contains(&id) {
                let mut head = self.head.clone();
                head.extend_from_slice(&idb[..n]);
                self.fragments(&head, p.revisions(), p.prev_kv());
            } else {
                match &body {
                    Body::Joined(b, _) => self.out.message_joined(&[&self.head, &idb[..n]], b),
                    Body::Slices(e) => self.out.message(&[&self.head, &idb[..n]], e),
                }
            }
            if *at < ids.len() && self.is_full() {
                return false;
            }
        }
        true
    }

    /// A response split at event boundaries into messages of at most
    /// `fragment_bytes` (a single larger event goes alone), all but the last with
    /// `fragment` set: the split etcd makes, and the server made before.
    fn fragments(&mut self, head: &[u8], revisions: &[RevisionEvents], prev_kv: bool) {
        let each = Events::each(revisions, prev_kv);
        let base = head.len() + FRAGMENT_FIELD.len();
        let mut groups = Vec::new();
        let (mut start, mut size) = (0, base);
        for (i, (_, r)) in each.iter().enumerate() {
            if i > start && size + r.len() > self.fragment_bytes {
                groups.push(start..i);
                start = i;
                size = base;
            }
            size += r.len();
        }
        groups.push(start..each.len());
        let last = groups.len() - 1;
        for (g, range) in groups.into_iter().enumerate() {
            let events = Events::from_segments(&each[range]);
            let flag: &[u8] = if g < last { &FRAGMENT_FIELD } else { &[] };
            self.out.message(&[head, flag], &events);
        }
    }
}

/// Decoder of `WatchRequest`s (prost), refusing messages above the receive limit
/// with etcd's status, and answering one that does not decode as etcd (grpc-go)
/// does: INTERNAL, "grpc: failed to unmarshal the received message" and the
/// decoder's own words.
pub struct RequestDecoder {
    max_bytes: usize,
}

impl RequestDecoder {
    /// A decoder refusing requests above `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        RequestDecoder { max_bytes }
    }
}

impl Decoder for RequestDecoder {
    type Item = pb::WatchRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<pb::WatchRequest>, Status> {
        use bytes::Buf;
        if src.remaining() > self.max_bytes {
            return Err(Status::resource_exhausted(format!(
                "grpc: received message larger than max ({} vs. {})",
                src.remaining(),
                self.max_bytes
            )));
        }
        pb::WatchRequest::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("grpc: failed to unmarshal the received message {e}")))
    }

    fn buffer_settings(&self) -> BufferSettings {
        // The yield threshold is tonic's default (32 KiB).
        BufferSettings::new(REQUEST_BUFFER_BYTES, 32 * 1024)
    }
}
