//! Calls through the gateway: unary ones, and streaming ones as etcd's gateway
//! (grpc-gateway v1.9) streams them.
//!
//! A unary call reads the whole body (bounded), takes its first JSON value as the
//! request (none: the empty message; one that does not decode: 400, code
//! INVALID_ARGUMENT, as etcd's), calls the service and writes its response as one
//! JSON object. A call with one request and a stream of responses
//! (Maintenance.Snapshot) reads its request the same way.
//!
//! A streaming request body holds JSON messages one after another. The first is read
//! before anything is answered: if it does not decode, the answer is 500 with the
//! error body (code UNKNOWN), as etcd's. The call then gets the messages as a gRPC
//! request stream ([`Framed`]: each message is encoded with prost and framed, so
//! the service reads them through tonic's `Streaming`, with its decoder and its
//! limits, exactly as it reads a gRPC client's). When the body ends, or a later
//! message does not decode, the request stream ends ([`AtEnd::Close`], Lease
//! keep-alives) or stays open without more requests ([`AtEnd::Hold`], Watch:
//! etcd's watch stream outlives its client's half-close, so `curl -d` watches until
//! it is stopped).
//!
//! The answer is written when the call's first response (or error) is there, as
//! etcd's gateway waits for the stream's header: an error first is the answer's
//! status with an error chunk; otherwise 200, then one chunk `{"result":...}` and a
//! newline per response, and an error chunk ([`super::errors::stream_chunk`]) if
//! the call fails later ([`Chunks`], [`respond`]).

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
#[cfg(test)]
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::Stream;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body::{Body as _, Frame};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::body::Body;
use tonic::Status;

use super::errors;
use super::json::{self, Next, Values};

/// The gRPC message prefix: compression flag and big-endian length.
const PREFIX: usize = 5;

/// The most bytes of JSON a request message may take: twice the gRPC receive
/// limit and some (base64 makes bytes a third longer, and names, quotes and white
/// space add some). Past it the request is refused (RESOURCE_EXHAUSTED) before it
/// is parsed; below it, a message whose encoding exceeds the receive limit is
/// refused as gRPC refuses it ([`too_large`]).
pub fn json_limit(max_recv: usize) -> usize {
    max_recv.saturating_mul(2).saturating_add(64 * 1024)
}

/// etcd's status for a request message above the receive limit (grpc-go's).
pub fn too_large(len: usize, max: usize) -> Status {
    Status::resource_exhausted(format!("grpc: received message larger than max ({len} vs. {max})"))
}

/// A service's request carrying `message`, with what etcd's gateway passes on from
/// the HTTP request as gRPC metadata (its `Authorization`, and every
/// `Grpc-Metadata-<key>` header as `<key>`) and the connection's extensions (so
/// `remote_addr` is the client's, as for a gRPC call).
pub fn request<T>(parts: http::request::Parts, message: T) -> tonic::Request<T> {
    let mut req = http::Request::new(message);
    for (name, value) in &parts.headers {
        let key = match name.as_str() {
            "authorization" => "authorization",
            n => match n.strip_prefix("grpc-metadata-") {
                Some(k) if !k.is_empty() => k,
                _ => continue,
            },
        };
        if let Ok(k) = http::HeaderName::from_bytes(key.as_bytes()) {
            req.headers_mut().append(k, value.clone());
        }
    }
    *req.extensions_mut() = parts.extensions;
    tonic::Request::from_http(req)
}

/// Headers of a 200 answer carrying a service's response: JSON, and the gRPC
/// response header etcd's gateway passes on (`Grpc-Metadata-Content-Type`).
fn ok_headers(resp: &mut Response<Body>) {
    let h = resp.headers_mut();
    errors::cors(h);
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert("grpc-metadata-content-type", HeaderValue::from_static("application/grpc"));
}

/// Reads a whole request body of at most `limit` bytes.
async fn read_body(mut body: Body, limit: usize) -> Result<Bytes, Status> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(Status::resource_exhausted(format!(
                    "argus: a JSON request larger than max ({limit} bytes)"
                )));
            }
            buf.put(data);
        }
    }
    Ok(buf.freeze())
}

/// The request of a call with one request message: the body's first JSON value
/// (none: the empty message), with the metadata of the HTTP request; or the error
/// answer (INVALID_ARGUMENT with the decoder's words, as etcd's).
async fn read_request<Req>(req: http::Request<Body>, max_recv: usize) -> Result<tonic::Request<Req>, Response<Body>>
where
    Req: DeserializeOwned + prost::Message + Default,
{
    let (parts, body) = req.into_parts();
    let bytes = read_body(body, json_limit(max_recv)).await.map_err(|s| errors::response(&s))?;
    let msg: Req = json::first_value(&bytes)
        .and_then(|v| v.map_or_else(|| Ok(Req::default()), json::message))
        .map_err(|e| errors::response(&Status::invalid_argument(e)))?;
    let len = msg.encoded_len();
    if len > max_recv {
        return Err(errors::response(&too_large(len, max_recv)));
    }
    Ok(request(parts, msg))
}

/// A unary call: the request message from the body's first JSON value, the
/// service's response as JSON, or the error body.
pub async fn unary<Req, Resp, F, Fut>(req: http::Request<Body>, max_recv: usize, call: F) -> Response<Body>
where
    Req: DeserializeOwned + prost::Message + Default,
    Resp: Serialize,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let request = match read_request(req, max_recv).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let resp = match call(request).await {
        Ok(r) => r.into_inner(),
        Err(s) => return errors::response(&s),
    };
    match json::to_vec(&resp) {
        Ok(bytes) => {
            let mut r = Response::new(Body::new(http_body_util::Full::new(Bytes::from(bytes))));
            ok_headers(&mut r);
            r
        }
        Err(e) => errors::response(&Status::internal(e)),
    }
}

/// What a streaming request does when its body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtEnd {
    /// The request stream ends.
    Close,
    /// The request stream stays open, with no more requests.
    Hold,
}

/// A streaming request body of JSON messages as a gRPC-framed request body (see the
/// module documentation): each message is encoded with prost behind a gRPC prefix.
/// A message above the receive limit fails the body with etcd's status, as a gRPC
/// client's would be refused.
pub struct Framed<M> {
    body: Body,
    values: Values,
    max_recv: usize,
    /// The body has ended.
    body_done: bool,
    /// No more requests: the body ended, or a message did not decode.
    done: bool,
    at_end: AtEnd,
    /// The first message, read before the answer, framed.
    first: Option<Bytes>,
    _message: PhantomData<fn() -> M>,
}

impl<M: DeserializeOwned + prost::Message + Default + 'static> Framed<M> {
    /// Reads the body up to its first message, which must decode (else the error
    /// answer, etcd's: 500, code UNKNOWN); an empty body is no requests at all.
    pub async fn start(body: Body, max_recv: usize, at_end: AtEnd) -> Result<Framed<M>, Response<Body>> {
        let mut f = Framed {
            body,
            values: Values::new(json_limit(max_recv)),
            max_recv,
            body_done: false,
            done: false,
            at_end,
            first: None,
            _message: PhantomData,
        };
        let first = std::future::poll_fn(|cx| f.poll_message(cx)).await;
        match first {
            Some(Ok(frame)) => f.first = Some(frame),
            Some(Err(s)) => return Err(errors::response(&s)),
            None => f.done = true,
        }
        Ok(f)
    }

    /// The next message, framed; `None` at the end of the requests. An error is a
    /// message that does not decode (code UNKNOWN, as etcd's gateway reports its
    /// decoder's error) or is too large.
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Status>>> {
        loop {
            match self.values.next(self.body_done) {
                Ok(Next::Value(v)) => {
                    let msg: M = match json::message(v) {
                        Ok(m) => m,
                        Err(e) => return Poll::Ready(Some(Err(Status::unknown(e)))),
                    };
                    let len = msg.encoded_len();
                    if len > self.max_recv {
                        return Poll::Ready(Some(Err(too_large(len, self.max_recv))));
                    }
                    let mut buf = BytesMut::with_capacity(PREFIX + len);
                    buf.put_u8(0);
                    buf.put_u32(u32::try_from(len).expect("below the receive limit"));
                    msg.encode(&mut buf).expect("the buffer has room for the message");
                    return Poll::Ready(Some(Ok(buf.freeze())));
                }
                Ok(Next::End) => return Poll::Ready(None),
                Ok(Next::More) => {}
                Err(e) if self.values.held() > json_limit(self.max_recv) => {
                    return Poll::Ready(Some(Err(Status::resource_exhausted(e))))
                }
                Err(e) => return Poll::Ready(Some(Err(Status::unknown(e)))),
            }
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.values.push(&data);
                    }
                }
                // The client is gone or the body ended: what is held is all there is.
                Poll::Ready(Some(Err(_))) | Poll::Ready(None) => self.body_done = true,
            }
        }
    }
}

impl<M: DeserializeOwned + prost::Message + Default + 'static> http_body::Body for Framed<M> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if let Some(f) = this.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(f))));
        }
        if !this.done {
            match this.poll_message(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(f))) => return Poll::Ready(Some(Ok(Frame::data(f)))),
                // Too large: the service's stream fails with it, as etcd's would.
                Poll::Ready(Some(Err(s))) if s.code() == tonic::Code::ResourceExhausted => {
                    this.done = true;
                    return Poll::Ready(Some(Err(s)));
                }
                // etcd's gateway stops sending at the first message that does not
                // decode, as at the end of the body.
                Poll::Ready(Some(Err(_))) | Poll::Ready(None) => this.done = true,
            }
        }
        match this.at_end {
            AtEnd::Close => Poll::Ready(None),
            // Nothing will wake this: the stream ends when the answer is dropped.
            AtEnd::Hold => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.done && self.at_end == AtEnd::Close
    }
}

/// The chunks of a streaming answer: each the JSON of one or more responses
/// (`{"result":...}` and a newline each), then the end, or the error that ends the
/// stream.
pub trait Chunks: Send + Unpin + 'static {
    /// The next chunk.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Status>>>;
}

/// Appends `{"result":<msg>}` and a newline.
///
/// # Errors
///
/// The serializer's (see [`json::write`]).
pub fn push_result<T: Serialize>(msg: &T, out: &mut Vec<u8>) -> Result<(), String> {
    out.extend_from_slice(br#"{"result":"#);
    json::write(msg, out)?;
    out.extend_from_slice(b"}\n");
    Ok(())
}

/// The responses of a service's response stream as chunks.
pub struct Responses<S, T> {
    stream: S,
    _item: PhantomData<fn() -> T>,
}

impl<S, T> Responses<S, T> {
    /// Chunks of `stream`.
    pub fn new(stream: S) -> Self {
        Responses { stream, _item: PhantomData }
    }
}

impl<S, T> Chunks for Responses<S, T>
where
    S: Stream<Item = Result<T, Status>> + Send + Unpin + 'static,
    T: Serialize + 'static,
{
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Status>>> {
        Pin::new(&mut self.stream).poll_next(cx).map(|item| {
            item.map(|r| {
                let msg = r?;
                let mut out = Vec::new();
                push_result(&msg, &mut out).map_err(Status::internal)?;
                Ok(Bytes::from(out))
            })
        })
    }
}

/// The answer of a streaming call, once its first chunk is there (see the module
/// documentation).
pub async fn respond<C: Chunks>(mut chunks: C) -> Response<Body> {
    let first = std::future::poll_fn(|cx| chunks.poll_chunk(cx)).await;
    let (status, first, done) = match first {
        None => (StatusCode::OK, Bytes::new(), true),
        Some(Ok(b)) => (StatusCode::OK, b, false),
        Some(Err(s)) => (errors::http_status(s.code()), Bytes::from(errors::stream_chunk(&s)), true),
    };
    let mut resp = Response::new(Body::new(ChunkBody { chunks, first: Some(first), done }));
    *resp.status_mut() = status;
    ok_headers(&mut resp);
    resp
}

/// The body of a streaming answer.
struct ChunkBody<C> {
    chunks: C,
    first: Option<Bytes>,
    done: bool,
}

impl<C: Chunks> http_body::Body for ChunkBody<C> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if let Some(b) = this.first.take() {
            if !b.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
        }
        if this.done {
            return Poll::Ready(None);
        }
        match this.chunks.poll_chunk(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Poll::Ready(Some(Err(s))) => {
                this.done = true;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(errors::stream_chunk(&s))))))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.first.as_ref().is_none_or(Bytes::is_empty)
    }
}

/// A call with a stream of requests (Lease keep-alives): the body's messages as the
/// request stream, which ends with the body.
pub async fn bidi<Req, Resp, St, F, Fut>(req: http::Request<Body>, max_recv: usize, call: F) -> Response<Body>
where
    Req: DeserializeOwned + prost::Message + Default + Send + 'static,
    Resp: Serialize + Send + 'static,
    St: Stream<Item = Result<Resp, Status>> + Send + 'static,
    F: FnOnce(tonic::Request<tonic::Streaming<Req>>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<St>, Status>>,
{
    let (parts, body) = req.into_parts();
    let framed = match Framed::<Req>::start(body, max_recv, AtEnd::Close).await {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let decoder = tonic_prost::ProstDecoder::<Req>::default();
    let requests = tonic::Streaming::new_request(decoder, Body::new(framed), None, Some(max_recv));
    match call(request(parts, requests)).await {
        Ok(r) => respond(Responses::new(Box::pin(r.into_inner()))).await,
        Err(s) => errors::response(&s),
    }
}

/// A call with one request and a stream of responses (Maintenance.Snapshot): the
/// request is read as a unary call's.
pub async fn server_streaming<Req, Resp, St, F, Fut>(
    req: http::Request<Body>,
    max_recv: usize,
    call: F,
) -> Response<Body>
where
    Req: DeserializeOwned + prost::Message + Default + Send + 'static,
    Resp: Serialize + Send + 'static,
    St: Stream<Item = Result<Resp, Status>> + Send + 'static,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<St>, Status>>,
{
    let request = match read_request(req, max_recv).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match call(request).await {
        Ok(r) => respond(Responses::new(Box::pin(r.into_inner()))).await,
        Err(s) => errors::response(&s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_carries_what_etcds_gateway_passes_on() {
        let http = http::Request::builder()
            .header("authorization", "token-1")
            .header("grpc-metadata-trace", "t")
            .header("content-type", "application/json")
            .header("user-agent", "curl")
            .body(())
            .expect("a request");
        let req = request(http.into_parts().0, 7u8);
        let md = req.metadata();
        assert_eq!(md.get("authorization").and_then(|v| v.to_str().ok()), Some("token-1"));
        assert_eq!(md.get("trace").and_then(|v| v.to_str().ok()), Some("t"));
        assert!(md.get("content-type").is_none() && md.get("user-agent").is_none());
        assert_eq!(req.into_inner(), 7);
    }

    #[test]
    fn a_streaming_body_becomes_grpc_frames_and_holds_or_ends() {
        use crate::proto::etcdserverpb as pb;
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        rt.block_on(async {
            let json = r#"{"create_request":{"key":"YQ=="}} {"cancel_request":{"watch_id":"3"}} x {"progress_request":{}}"#;
            for at_end in [AtEnd::Close, AtEnd::Hold] {
                let body = Body::new(http_body_util::Full::new(Bytes::from(json)));
                let mut f = Framed::<pb::WatchRequest>::start(body, 1 << 20, at_end).await.expect("a first message");
                let mut got = Vec::new();
                for _ in 0..2 {
                    let frame = f.frame().await.expect("a frame").expect("no error").into_data().expect("data");
                    assert_eq!(frame[0], 0);
                    assert_eq!(u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize, frame.len() - 5);
                    got.push(<pb::WatchRequest as prost::Message>::decode(&frame[5..]).expect("decodes"));
                }
                assert!(matches!(got[0].request_union, Some(pb::watch_request::RequestUnion::CreateRequest(ref c)) if c.key == b"a"));
                assert!(matches!(got[1].request_union, Some(pb::watch_request::RequestUnion::CancelRequest(ref c)) if c.watch_id == 3));
                // What follows the garbage is not read: the stream ends, or holds.
                let next = tokio::time::timeout(Duration::from_millis(50), f.frame()).await;
                match at_end {
                    AtEnd::Close => assert!(matches!(next, Ok(None)), "{next:?}"),
                    AtEnd::Hold => assert!(next.is_err(), "{next:?}"),
                }
            }
            // A first message that does not decode is answered at once: 500, UNKNOWN.
            let body = Body::new(http_body_util::Full::new(Bytes::from_static(b"{\"create_request\":")));
            let resp = Framed::<pb::WatchRequest>::start(body, 1 << 20, AtEnd::Hold).await.err().expect("refused");
            assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
            let body = resp.into_body().collect().await.expect("a body").to_bytes();
            assert_eq!(&body[..], br#"{"error":"unexpected EOF","message":"unexpected EOF","code":2}"#);
        });
    }
}
