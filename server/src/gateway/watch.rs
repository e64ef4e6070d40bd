//! `POST /v3/watch`: the Watch service's own stream ([`crate::watch::WatchBody`])
//! under JSON.
//!
//! The body's JSON `WatchRequest`s (create, cancel, progress) become a gRPC request
//! stream ([`Framed`], which holds the stream open when the body ends, as etcd
//! does), and [`WatchService::open`] opens a Watch stream on it exactly as for a
//! gRPC client: the same engine stream, limits (streams, watchers, control
//! responses owed), push-back, fragmenting, refusals and shutdown. What that
//! stream writes, gRPC-framed `WatchResponse`s, is decoded here and written as
//! JSON chunks, one `{"result":...}` line per response; the status that ends it,
//! if not OK, as the error chunk. The Watch stream's body is polled only when the
//! answer's is, so a client that stops reading stops the stream as a gRPC client
//! would (its watchers become victims).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::Response;
use http_body::Body as _;
use prost::Message;
use tonic::body::Body;
use tonic::Status;

use super::errors;
use super::stream::{self, AtEnd, Chunks, Framed};
use crate::proto::etcdserverpb as pb;
use crate::watch::{WatchBody, WatchService};

/// The gRPC message prefix: compression flag and big-endian length.
const PREFIX: usize = 5;

/// Answers `POST /v3/watch`.
pub async fn watch(service: WatchService, req: http::Request<Body>, max_recv: usize) -> Response<Body> {
    let token = crate::watch::token_of(req.headers());
    let cert = service.certificate_caller(req.extensions());
    let framed = match Framed::<pb::WatchRequest>::start(req.into_body(), max_recv, AtEnd::Hold).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    match service.open_with_token(Body::new(framed), token, cert) {
        Ok(body) => stream::respond(WatchJson { body, pending: BytesMut::new(), done: false }).await,
        Err(s) => errors::response(&s),
    }
}

/// A Watch stream's gRPC output as JSON chunks.
struct WatchJson {
    body: WatchBody,
    /// Bytes of a message not complete yet (a large event's bytes come in frames of
    /// their own).
    pending: BytesMut,
    done: bool,
}

impl WatchJson {
    /// The complete messages in `pending`, as JSON lines.
    fn convert(&mut self) -> Result<Vec<u8>, Status> {
        let mut out = Vec::new();
        while self.pending.len() >= PREFIX {
            let len = u32::from_be_bytes([self.pending[1], self.pending[2], self.pending[3], self.pending[4]]) as usize;
            if self.pending.len() < PREFIX + len {
                break;
            }
            self.pending.advance(PREFIX);
            let msg = self.pending.split_to(len);
            let resp = pb::WatchResponse::decode(msg.freeze())
                .map_err(|e| Status::internal(format!("argus: a watch response does not decode: {e}")))?;
            stream::push_result(&resp, &mut out).map_err(Status::internal)?;
        }
        Ok(out)
    }
}

impl Chunks for WatchJson {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Status>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            let frame = match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Ok(f))) => f,
                Poll::Ready(Some(Err(never))) => match never {},
            };
            let frame = match frame.into_data() {
                Ok(data) => {
                    self.pending.extend_from_slice(&data);
                    match self.convert() {
                        Ok(out) if out.is_empty() => continue,
                        Ok(out) => return Poll::Ready(Some(Ok(Bytes::from(out)))),
                        Err(s) => {
                            self.done = true;
                            return Poll::Ready(Some(Err(s)));
                        }
                    }
                }
                Err(f) => f,
            };
            // The trailers: the stream's status.
            self.done = true;
            let Ok(trailers) = frame.into_trailers() else { return Poll::Ready(None) };
            return match Status::from_header_map(&trailers) {
                Some(s) if s.code() != tonic::Code::Ok => Poll::Ready(Some(Err(s))),
                _ => Poll::Ready(None),
            };
        }
    }
}
