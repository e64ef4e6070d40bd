//! The Watch method's codec: requests decode with prost as usual; responses are
//! [`WatchFrame`]s, encoded as the per-watcher head (header, watch id, flags) followed
//! by event bytes that are encoded once per revision and reused for every watcher.
//!
//! Why this is byte-identical to prost encoding the whole `WatchResponse`: `events`
//! is field 11, the highest field number, and prost writes fields in number order,
//! so a message's bytes are its fields 1–7 followed by one length-delimited field-11
//! entry per event. The frame writes exactly that: the head (its `events` empty),
//! then the entries. A revision's entries live in its `RevisionBatch::encoded` memo.

use std::sync::Arc;

use argus_engine::watch::RevisionBatch;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

use crate::convert;
use crate::proto::etcdserverpb::{WatchRequest, WatchResponse};
use crate::proto::mvccpb;

/// Events of one frame, as shared memo bytes or as messages.
pub enum EventsPart {
    /// Every event of a revision, from its memo (`prev_kv` chooses the memo).
    Whole {
        /// The shared batch.
        batch: Arc<RevisionBatch>,
        /// Whether events carry `prev_kv`.
        prev_kv: bool,
    },
    /// Individual events, encoded for this frame only.
    Events(Vec<mvccpb::Event>),
}

/// One Watch response on the wire.
pub struct WatchFrame {
    /// Fields 1–7 (its `events` are empty).
    pub head: WatchResponse,
    /// The events, in order.
    pub parts: Vec<EventsPart>,
}

impl WatchFrame {
    /// A frame with no events.
    pub fn control(head: WatchResponse) -> Self {
        WatchFrame { head, parts: Vec::new() }
    }

    /// Bytes this frame encodes to.
    pub fn encoded_len(&self) -> usize {
        self.head.encoded_len() + self.parts.iter().map(part_len).sum::<usize>()
    }

    /// Decodes the frame back into a `WatchResponse` (tests and size checks).
    pub fn to_message(&self) -> WatchResponse {
        let mut buf = Vec::with_capacity(self.encoded_len());
        self.write(&mut buf);
        WatchResponse::decode(buf.as_slice()).expect("a frame encodes a valid WatchResponse")
    }

    fn write(&self, buf: &mut impl bytes::BufMut) {
        self.head.encode_raw(buf);
        for p in &self.parts {
            match p {
                EventsPart::Whole { batch, prev_kv } => buf.put_slice(memo(batch, *prev_kv)),
                EventsPart::Events(evs) => {
                    for e in evs {
                        prost::encoding::message::encode(11, e, buf);
                    }
                }
            }
        }
    }
}

/// The field-11 bytes of every event of `batch`, encoded on first use.
pub fn memo(batch: &RevisionBatch, prev_kv: bool) -> &[u8] {
    &batch.encoded[usize::from(prev_kv)]
        .get_or_init(|| {
            let mut out = Vec::new();
            let mut ends = Vec::with_capacity(batch.events.len());
            for e in &batch.events {
                prost::encoding::message::encode(11, &convert::event(e, prev_kv), &mut out);
                ends.push(out.len() as u32);
            }
            argus_engine::watch::EncodedEvents { bytes: out.into(), ends: ends.into() }
        })
        .bytes
}

fn part_len(p: &EventsPart) -> usize {
    match p {
        EventsPart::Whole { batch, prev_kv } => memo(batch, *prev_kv).len(),
        EventsPart::Events(evs) => evs.iter().map(|e| prost::encoding::message::encoded_len(11, e)).sum(),
    }
}

/// Encoder of [`WatchFrame`]s.
#[derive(Default)]
pub struct FrameEncoder;

impl Encoder for FrameEncoder {
    type Item = WatchFrame;
    type Error = Status;

    fn encode(&mut self, item: WatchFrame, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.write(dst);
        Ok(())
    }
}

/// Decoder of `WatchRequest`s (prost), refusing messages above the receive limit
/// with etcd's status.
pub struct RequestDecoder {
    max_bytes: usize,
}

impl Decoder for RequestDecoder {
    type Item = WatchRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<WatchRequest>, Status> {
        use bytes::Buf;
        if src.remaining() > self.max_bytes {
            return Err(Status::resource_exhausted(format!(
                "grpc: received message larger than max ({} vs. {})",
                src.remaining(),
                self.max_bytes
            )));
        }
        WatchRequest::decode(src)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("malformed WatchRequest: {e}")))
    }
}

/// Receive limit of Watch requests: etcd's default (1.5 MiB + 512 KiB). A Watch
/// request is small (a key range and flags), so the default serves every server.
pub const WATCH_REQUEST_MAX_BYTES: usize = 1536 * 1024 + 512 * 1024;

/// The Watch method's codec (named in `build.rs`).
#[derive(Default)]
pub struct WatchCodec;

impl Codec for WatchCodec {
    type Encode = WatchFrame;
    type Decode = WatchRequest;
    type Encoder = FrameEncoder;
    type Decoder = RequestDecoder;

    fn encoder(&mut self) -> FrameEncoder {
        FrameEncoder
    }

    fn decoder(&mut self) -> RequestDecoder {
        RequestDecoder { max_bytes: WATCH_REQUEST_MAX_BYTES }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argus_engine::store::KeyValue;
    use argus_engine::watch::{Event, EventKind};

    #[test]
    fn a_frame_encodes_exactly_as_prost_encodes_the_whole_response() {
        let kv = |k: &str, v: &str, rev| KeyValue {
            key: k.into(),
            value: v.into(),
            create_revision: 2,
            mod_revision: rev,
            version: rev - 1,
        };
        let events = vec![
            Event { kind: EventKind::Put, kv: kv("/a", "1", 5), prev_kv: Some(kv("/a", "0", 4)), sub: 0 },
            Event {
                kind: EventKind::Delete,
                kv: KeyValue { key: b"/b".to_vec(), mod_revision: 5, ..Default::default() },
                prev_kv: Some(kv("/b", "x", 3)),
                sub: 1,
            },
        ];
        let batch = Arc::new(RevisionBatch::new(5, events, true));
        for prev in [false, true] {
            let head = WatchResponse {
                header: Some(crate::proto::etcdserverpb::ResponseHeader {
                    cluster_id: 1,
                    member_id: 2,
                    revision: 5,
                    raft_term: 3,
                }),
                watch_id: 7,
                ..Default::default()
            };
            let frame = WatchFrame {
                head: head.clone(),
                parts: vec![EventsPart::Whole { batch: Arc::clone(&batch), prev_kv: prev }],
            };
            let mut got = Vec::new();
            frame.write(&mut got);
            let mut whole = head;
            whole.events = batch.events.iter().map(|e| convert::event(e, prev)).collect();
            assert_eq!(got, whole.encode_to_vec(), "prev_kv {prev}");
            assert_eq!(frame.encoded_len(), got.len());
            assert_eq!(frame.to_message(), whole);
        }
    }
}
