//! etcd's Watch service: one engine [`WatchStream`](argus_engine::watch::WatchStream)
//! per gRPC stream.
//!
//! Two tasks per stream. The receive task turns create / cancel / progress requests
//! into engine calls (a refused create is answered at once, as etcd does, with
//! `created` and `canceled` set and watch id -1). The send task turns engine
//! responses into [`WatchFrame`]s and hands them to tonic through a small bounded
//! channel: a client that stops reading fills it, the send task waits, the engine
//! stream fills, and the client's watchers become victims that hold only a cursor.
//! Nothing is buffered without bound.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use argus_engine::watch::{Filters, WatchError, WatchHub, WatchRequest, WatchResponse};
use futures::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::codec::{EventsPart, WatchFrame};
use crate::convert;
use crate::proto::etcdserverpb as pb;
use crate::proto::watch::watch_server::Watch;
use crate::Header;

/// The Watch service.
pub struct WatchService {
    hub: Arc<WatchHub>,
    header: Header,
    /// Responses above this many bytes are split for watchers that asked for
    /// `fragment` (etcd: max request bytes + 512 KiB).
    fragment_bytes: usize,
}

impl WatchService {
    /// A Watch service on `hub`.
    pub fn new(hub: Arc<WatchHub>, header: Header, fragment_bytes: usize) -> Self {
        WatchService { hub, header, fragment_bytes }
    }
}

type Fragmenting = Arc<Mutex<HashMap<i64, bool>>>;

fn refused(h: &Header, rev: u64, e: &WatchError) -> WatchFrame {
    let reason = match e {
        WatchError::DuplicateId(_) => "mvcc: duplicate watch ID provided on the WatchStream".to_string(),
        WatchError::EmptyRange => "mvcc: watcher range is empty".to_string(),
        WatchError::NegativeRevision(_) => "mvcc: required revision has been compacted".to_string(),
        other => other.to_string(),
    };
    WatchFrame::control(pb::WatchResponse {
        header: Some(h.at(rev)),
        watch_id: -1,
        created: true,
        canceled: true,
        cancel_reason: reason,
        ..Default::default()
    })
}

fn engine_request(c: pb::WatchCreateRequest) -> WatchRequest {
    let mut filters = Filters::default();
    for f in &c.filters {
        match pb::watch_create_request::FilterType::try_from(*f) {
            Ok(pb::watch_create_request::FilterType::Noput) => filters.no_put = true,
            Ok(pb::watch_create_request::FilterType::Nodelete) => filters.no_delete = true,
            Err(_) => {}
        }
    }
    // As etcd: an empty key means the smallest key, "\0".
    let key = if c.key.is_empty() { vec![0] } else { c.key };
    WatchRequest {
        key,
        range_end: c.range_end,
        start_revision: c.start_revision,
        filters,
        prev_kv: c.prev_kv,
        progress_notify: c.progress_notify,
        watch_id: c.watch_id,
    }
}

/// Turns one engine response into the frames to send (more than one only when the
/// watcher asked for `fragment` and the response is too large).
fn frames(h: &Header, r: WatchResponse, fragment: bool, limit: usize) -> Vec<WatchFrame> {
    let head = pb::WatchResponse {
        header: Some(h.at(r.revision)),
        watch_id: r.watch_id,
        created: r.created,
        canceled: r.canceled,
        compact_revision: r.compact_revision as i64,
        cancel_reason: r.cancel_reason.clone(),
        fragment: false,
        events: Vec::new(),
    };
    let parts: Vec<EventsPart> = r
        .events
        .iter()
        .map(|re| match &re.selection {
            None => EventsPart::Whole { batch: Arc::clone(&re.batch), prev_kv: r.prev_kv },
            Some(_) => EventsPart::Events(re.iter().map(|e| convert::event(e, r.prev_kv)).collect()),
        })
        .collect();
    let frame = WatchFrame { head, parts };
    if !fragment || r.event_count() < 2 || frame.encoded_len() <= limit {
        return vec![frame];
    }
    // Fragment: split at event boundaries into frames of at most `limit` bytes (a
    // single larger event goes alone), all but the last flagged `fragment`.
    let events: Vec<_> = r.events().map(|e| convert::event(&e, r.prev_kv)).collect();
    let head = frame.head;
    let base = prost::Message::encoded_len(&head) + 2;
    let mut out = Vec::new();
    let mut cur: Vec<crate::proto::mvccpb::Event> = Vec::new();
    let mut size = base;
    for e in events {
        let n = prost::encoding::message::encoded_len(11, &e);
        if !cur.is_empty() && size + n > limit {
            let mut h = head.clone();
            h.fragment = true;
            out.push(WatchFrame { head: h, parts: vec![EventsPart::Events(std::mem::take(&mut cur))] });
            size = base;
        }
        size += n;
        cur.push(e);
    }
    out.push(WatchFrame { head, parts: vec![EventsPart::Events(cur)] });
    out
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchFrame, Status>> + Send + 'static>>;

    async fn watch(&self, req: Request<Streaming<pb::WatchRequest>>) -> Result<Response<Self::WatchStream>, Status> {
        let mut incoming = req.into_inner();
        let (ctl, mut rx) = self.hub.stream().split();
        let (tx, out) = tokio::sync::mpsc::channel::<Result<WatchFrame, Status>>(16);
        let fragmenting: Fragmenting = Arc::default();
        let header = self.header;
        let store = self.hub.store().clone();

        let (ctl_r, tx_r, frag_r) = (ctl.clone(), tx.clone(), Arc::clone(&fragmenting));
        tokio::spawn(async move {
            use pb::watch_request::RequestUnion as U;
            loop {
                let msg = match incoming.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(%status, "watch stream receive ended");
                        break;
                    }
                };
                match msg.request_union {
                    Some(U::CreateRequest(c)) => {
                        let fragment = c.fragment;
                        match ctl_r.watch(engine_request(c)) {
                            Ok(id) => {
                                if fragment {
                                    frag_r.lock().unwrap_or_else(|p| p.into_inner()).insert(id, true);
                                }
                            }
                            Err(e) => {
                                let f = refused(&header, store.current_revision(), &e);
                                if tx_r.send(Ok(f)).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    Some(U::CancelRequest(c)) => {
                        // Canceling an unknown id gets no answer, as in etcd.
                        let _ = ctl_r.cancel(c.watch_id);
                    }
                    Some(U::ProgressRequest(_)) => ctl_r.request_progress_all(),
                    None => {}
                }
            }
            ctl_r.close();
        });

        let limit = self.fragment_bytes;
        tokio::spawn(async move {
            while let Some(r) = rx.recv_async().await {
                let fragment = {
                    let mut f = fragmenting.lock().unwrap_or_else(|p| p.into_inner());
                    if r.canceled {
                        f.remove(&r.watch_id).unwrap_or(false)
                    } else {
                        f.get(&r.watch_id).copied().unwrap_or(false)
                    }
                };
                for frame in frames(&header, r, fragment, limit) {
                    if tx.send(Ok(frame)).await.is_err() {
                        ctl.close(); // the client went away
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }
}
