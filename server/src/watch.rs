//! etcd's Watch service, served by hand beside tonic's generated services: one
//! engine [`WatchStream`](argus_engine::watch::WatchStream) per gRPC stream, and no
//! task or channel of its own.
//!
//! [`WatchService`] answers `POST /etcdserverpb.Watch/Watch` with a response whose
//! body, a [`WatchBody`], does all of the stream's work when hyper polls it: it
//! takes every request that has arrived (create, cancel, progress: engine calls; a
//! refused create is answered at once, as etcd does, with `created` and `canceled`
//! set and watch id -1), then writes what the engine stream has for it, many
//! responses per frame (see [`crate::wire`]), up to
//! [`TARGET_BYTES`](crate::wire::TARGET_BYTES) per poll.
//! hyper polls a body only when HTTP/2 flow control lets it send, so a client that
//! stops reading stops the draining: the engine stream fills and the client's
//! watchers become victims that hold only a cursor. Nothing is buffered without
//! bound, and an idle stream keeps no buffer.
//!
//! Requests are taken only while the stream owes its client fewer than
//! [`WatchLimits::max_owed`] control responses (created, canceled, progress:
//! requested and not yet written, see
//! [`WatchReceiver::owed_responses`](argus_engine::watch::WatchReceiver::owed_responses))
//! and the framer is below its byte target: past that, the client's requests wait
//! in HTTP/2 flow control, so a client that sends requests and never reads is pushed
//! back as etcd pushes it back, and what the server holds for it stays bounded. The
//! engine closes a stream that owes more than [`WatchLimits::overflow`] anyway
//! (responses it makes without a request pile up for a client that reads nothing):
//! it ends with RESOURCE_EXHAUSTED.
//!
//! Server-wide, at most [`WatchLimits::max_streams`] Watch streams are open (past it
//! a new one is answered RESOURCE_EXHAUSTED at once) and at most
//! [`WatchLimits::max_watchers`] watchers live on them (past it a create is refused
//! as other creates are: `created` and `canceled`, watch id -1, with the reason);
//! [`WatchStats`] counts them for `/metrics`.
//!
//! The stream ends when the client half-closes (the engine stream is closed, what it
//! still holds is sent, then `grpc-status: 0`), or on a request that does not decode
//! (etcd's status: see [`crate::limit`] and [`RequestDecoder`]), or when the engine
//! shuts down (UNAVAILABLE) or the stream overflows (RESOURCE_EXHAUSTED), or when the
//! body is dropped (client reset, connection gone): the engine stream closes when
//! its halves, owned by the body, are dropped.
//!
//! The HTTP/JSON gateway's `/v3/watch` opens the same stream
//! ([`WatchService::open`]) on its JSON requests, framed, and writes its output as
//! JSON ([`crate::gateway`]).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use argus_engine::watch::{Filters, Item, WatchController, WatchError, WatchHub, WatchReceiver, WatchRequest};
use bytes::Bytes;
use futures::Stream;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Method};
use http_body::Frame;
use tonic::metadata::{MetadataValue, GRPC_CONTENT_TYPE};
use tonic::{Status, Streaming};

use crate::auth::engine::{Access, AuthError};
use crate::auth::{self, AuthGate, Caller, StreamAuth};
use crate::proto::etcdserverpb as pb;
use crate::wire::{Framer, RequestDecoder};
use crate::Header;

/// The gRPC path of the Watch method.
pub const WATCH_PATH: &str = "/etcdserverpb.Watch/Watch";

/// The message of the UNAVAILABLE status that ends Watch streams at shutdown.
pub const SHUTTING_DOWN: &str = "argus: the server is shutting down";

/// The Watch service's limits.
#[derive(Clone, Copy, Debug)]
pub struct WatchLimits {
    /// Most Watch streams open at once, server-wide.
    pub max_streams: usize,
    /// Most watchers on the open streams, server-wide.
    pub max_watchers: usize,
    /// Control responses a stream may owe its client before its requests are left
    /// unread.
    pub max_owed: usize,
    /// Control responses a stream may owe before the engine closes it.
    pub overflow: usize,
}

/// What the Watch service counts, for `/metrics`.
#[derive(Debug, Default)]
pub struct WatchStats {
    /// Watch streams open.
    pub streams: AtomicUsize,
    /// Watchers on them (from an accepted create to the `canceled` written, or the
    /// stream's end).
    pub watchers: AtomicUsize,
    /// Watch streams refused for `max_streams`.
    pub streams_refused: AtomicU64,
    /// Creates refused for `max_watchers`.
    pub watchers_refused: AtomicU64,
    /// Streams closed for owing more than `overflow` control responses.
    pub overflowed: AtomicU64,
}

/// Takes one of `limit` places counted by `n`; false (nothing taken) when none is free.
fn take_place(n: &AtomicUsize, limit: usize) -> bool {
    n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| (v < limit).then_some(v + 1)).is_ok()
}

/// A Watch stream's places in [`WatchStats`]: the stream's and its watchers',
/// given back when it ends.
struct Places {
    stats: Arc<WatchStats>,
    watchers: usize,
}

impl Places {
    fn take_watcher(&mut self, limit: usize) -> bool {
        let ok = take_place(&self.stats.watchers, limit);
        self.watchers += usize::from(ok);
        ok
    }

    fn release_watcher(&mut self) {
        if self.watchers > 0 {
            self.watchers -= 1;
            self.stats.watchers.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Places {
    fn drop(&mut self) {
        self.stats.watchers.fetch_sub(self.watchers, Ordering::AcqRel);
        self.stats.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The Watch service (cheap to clone: one per connection).
#[derive(Clone)]
pub struct WatchService {
    shared: Arc<Shared>,
}

struct Shared {
    hub: Arc<WatchHub>,
    header: Header,
    fragment_bytes: usize,
    max_recv_bytes: usize,
    limits: WatchLimits,
    stats: Arc<WatchStats>,
    /// The permission gate (`None`: no auth).
    auth: Option<Arc<AuthGate>>,
}

impl WatchService {
    /// A Watch service on `hub`. Responses of watchers that asked for `fragment` are
    /// split above `fragment_bytes` (etcd: max request bytes + 512 KiB); requests
    /// above `max_recv_bytes` are refused with etcd's ResourceExhausted status (by
    /// [`crate::limit`] before they are read, and by the decoder).
    pub fn new(
        hub: Arc<WatchHub>,
        header: Header,
        fragment_bytes: usize,
        max_recv_bytes: usize,
        limits: WatchLimits,
        stats: Arc<WatchStats>,
    ) -> Self {
        WatchService {
            shared: Arc::new(Shared { hub, header, fragment_bytes, max_recv_bytes, limits, stats, auth: None }),
        }
    }

    /// The Watch service checking each create with `gate` (read on the range as
    /// sent), and canceling watchers whose permission is gone when the auth state
    /// changes. Call before the service is cloned.
    #[must_use]
    pub fn auth(mut self, gate: Option<Arc<AuthGate>>) -> Self {
        if let Some(s) = Arc::get_mut(&mut self.shared) {
            s.auth = gate;
        }
        self
    }

    fn respond(&self, req: http::Request<tonic::body::Body>) -> http::Response<tonic::body::Body> {
        if req.uri().path() != WATCH_PATH || req.method() != Method::POST {
            return unimplemented();
        }
        if let Err(status) = request_encoding(req.headers()) {
            return status.into_http();
        }
        let token = token_of(req.headers());
        let cert = self.certificate_caller(req.extensions());
        match self.open_with_token(req.into_body(), token, cert) {
            Ok(body) => {
                let mut resp = http::Response::new(tonic::body::Body::new(body));
                resp.headers_mut().insert(CONTENT_TYPE, GRPC_CONTENT_TYPE);
                resp
            }
            Err(status) => status.into_http(),
        }
    }

    /// Opens a Watch stream whose requests are the gRPC messages of `requests`, or
    /// the status that refuses it (the server is shutting down, or too many streams
    /// are open). The gRPC method answers with it, and so does the HTTP gateway
    /// ([`crate::gateway`]), whose JSON requests come framed.
    pub fn open(&self, requests: tonic::body::Body) -> Result<WatchBody, Status> {
        self.open_with_token(requests, None, None)
    }

    /// Under `--client-cert-auth`, the user named by the client certificate of the
    /// connection with `ext`.
    pub(crate) fn certificate_caller(&self, ext: &http::Extensions) -> Option<Caller> {
        self.shared.auth.as_ref().and_then(|g| g.caller_of_certificate(ext))
    }

    /// [`WatchService::open`] for a client that sent `token` (its `token` metadata,
    /// or the gateway's `Authorization` header), or whose client certificate names
    /// `cert` (used when there is no token, as etcd).
    pub(crate) fn open_with_token(
        &self,
        requests: tonic::body::Body,
        token: Option<String>,
        cert: Option<Caller>,
    ) -> Result<WatchBody, Status> {
        let s = &self.shared;
        if s.hub.is_shut_down() {
            return Err(Status::unavailable(SHUTTING_DOWN));
        }
        if !take_place(&s.stats.streams, s.limits.max_streams) {
            s.stats.streams_refused.fetch_add(1, Ordering::Relaxed);
            let msg = format!("argus: too many watch streams (limit {})", s.limits.max_streams);
            return Err(Status::resource_exhausted(msg));
        }
        let places = Places { stats: Arc::clone(&s.stats), watchers: 0 };
        let requests =
            Streaming::new_request(RequestDecoder::new(s.max_recv_bytes), requests, None, Some(s.max_recv_bytes));
        let (ctl, rx) = s.hub.stream().split();
        ctl.set_max_owed_responses(s.limits.overflow);
        let body = WatchBody {
            requests: Some(requests),
            ctl: Some(ctl),
            rx,
            shared: Arc::clone(s),
            framer: Framer::new(s.header, s.fragment_bytes),
            places,
            paused: false,
            engine_done: false,
            error: None,
            finished: false,
            token,
            cert,
            auth_stream: None,
            unchecked: None,
        };
        Ok(body)
    }
}

impl tonic::server::NamedService for WatchService {
    const NAME: &'static str = "etcdserverpb.Watch";
}

impl tower_service::Service<http::Request<tonic::body::Body>> for WatchService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        std::future::ready(Ok(self.respond(req)))
    }
}

/// What tonic's generated services answer for a method they do not have: HTTP 200,
/// `grpc-status: 12` (Unimplemented), no body.
fn unimplemented() -> http::Response<tonic::body::Body> {
    let mut resp = http::Response::new(tonic::body::Body::empty());
    let h = resp.headers_mut();
    h.insert("grpc-status", HeaderValue::from(tonic::Code::Unimplemented as i32));
    h.insert(CONTENT_TYPE, GRPC_CONTENT_TYPE);
    resp
}

/// The request's `grpc-encoding`, which must be absent or `identity`: no
/// compression is enabled, and tonic's generated server refuses any other with this
/// status (and ignores `grpc-accept-encoding`: responses are never compressed).
/// `grpc-timeout` is the transport's business (it bounds the time to the response
/// head, which this service answers at once), as for every tonic service.
fn request_encoding(headers: &HeaderMap) -> Result<(), Status> {
    let Some(v) = headers.get("grpc-encoding") else { return Ok(()) };
    if v.as_bytes() == b"identity" {
        return Ok(());
    }
    let name = match std::str::from_utf8(v.as_bytes()) {
        Ok(s) => s.to_string(),
        Err(_) => format!("{:?}", v.as_bytes()),
    };
    let mut status = Status::unimplemented(format!("Content is compressed with `{name}` which isn't supported"));
    status.metadata_mut().insert("grpc-accept-encoding", MetadataValue::from_static("identity"));
    Err(status)
}

pub(crate) fn refused(h: &Header, rev: u64, e: &WatchError) -> pb::WatchResponse {
    let reason = match e {
        WatchError::DuplicateId(_) => "mvcc: duplicate watch ID provided on the WatchStream".to_string(),
        WatchError::EmptyRange => "mvcc: watcher range is empty".to_string(),
        other => other.to_string(),
    };
    refusal(h, rev, reason)
}

/// A refused create's response: `created` and `canceled`, watch id -1, the reason.
fn refusal(h: &Header, rev: u64, reason: String) -> pb::WatchResponse {
    pb::WatchResponse {
        header: Some(h.at(rev)),
        watch_id: -1,
        created: true,
        canceled: true,
        cancel_reason: reason,
        ..Default::default()
    }
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

/// The token a request carries: `token` metadata (etcd's clients), or the
/// `Authorization` header (etcd's HTTP gateway passes it on as metadata).
pub(crate) fn token_of(headers: &HeaderMap) -> Option<String> {
    ["token", "authorization"].iter().find_map(|k| headers.get(*k)).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// The response body of one Watch stream: owns the request stream, both halves of
/// the engine stream and the framer.
pub struct WatchBody {
    /// `None` once the client half-closed or a request failed to decode.
    requests: Option<Streaming<pb::WatchRequest>>,
    /// `None` once the engine stream was closed.
    ctl: Option<WatchController>,
    rx: WatchReceiver,
    shared: Arc<Shared>,
    framer: Framer,
    places: Places,
    /// Requests are left unread: the stream owes too much, or the framer is full.
    paused: bool,
    /// The engine stream is closed and drained.
    engine_done: bool,
    /// The status the stream ends with, if not OK.
    error: Option<Status>,
    /// Trailers were returned.
    finished: bool,
    /// The client's token, if it sent one.
    token: Option<String>,
    /// The user its client certificate names (under `--client-cert-auth`).
    cert: Option<Caller>,
    /// Set when it created watchers under auth: their caller, whose watchers are
    /// re-checked when the auth state changes.
    auth_stream: Option<Arc<StreamAuth>>,
    /// Set when a watcher was created while auth was off (no credentials
    /// checked): wakes the stream when the auth state changes, and once auth is on
    /// the stream ends (etcd keeps such watchers streaming). One registration per
    /// stream, nothing per watcher: auth off costs creation nothing more.
    unchecked: Option<Arc<StreamAuth>>,
}

impl WatchBody {
    fn close_engine(&mut self) {
        if let Some(ctl) = self.ctl.take() {
            ctl.close();
        }
    }

    /// Whether requests may be taken: the stream owes fewer control responses than
    /// its bound, and the framer is below its target (refused creates go there).
    fn may_take_requests(&self) -> bool {
        !self.framer.is_full() && self.rx.owed_responses() < self.shared.limits.max_owed
    }

    /// Takes the requests that have arrived, as long as it may (see
    /// [`WatchBody::may_take_requests`]).
    fn poll_requests(&mut self, cx: &mut Context<'_>) {
        use pb::watch_request::RequestUnion as U;
        while self.requests.is_some() {
            self.paused = !self.may_take_requests();
            if self.paused {
                return;
            }
            let Some(requests) = self.requests.as_mut() else { return };
            let msg = match Pin::new(requests).poll_next(cx) {
                Poll::Pending => return,
                Poll::Ready(Some(Ok(m))) => m,
                Poll::Ready(None) => {
                    // Half-closed: what the engine still holds is sent, then trailers.
                    self.requests = None;
                    self.close_engine();
                    return;
                }
                Poll::Ready(Some(Err(status))) => {
                    tracing::debug!(%status, "watch stream receive failed");
                    self.requests = None;
                    self.close_engine();
                    self.framer.abandon();
                    self.error = Some(status);
                    return;
                }
            };
            let Some(ctl) = self.ctl.as_ref() else { continue };
            match msg.request_union {
                Some(U::CreateRequest(c)) => {
                    let fragment = c.fragment;
                    let max = self.shared.limits.max_watchers;
                    if !self.places.take_watcher(max) {
                        self.shared.stats.watchers_refused.fetch_add(1, Ordering::Relaxed);
                        let rev = self.shared.hub.store().current_revision();
                        let reason = format!("argus: too many watchers (limit {max})");
                        self.framer.push_message(&refusal(&self.shared.header, rev, reason));
                        continue;
                    }
                    let (key, range_end) = (c.key.clone(), c.range_end.clone());
                    let caller = match self.authorize_create(&key, &range_end) {
                        Ok(caller) => caller,
                        Err(reason) => {
                            self.places.release_watcher();
                            let rev = self.shared.hub.store().current_revision();
                            self.framer.push_message(&refusal(&self.shared.header, rev, reason));
                            continue;
                        }
                    };
                    let Some(ctl) = self.ctl.as_ref() else { continue };
                    let created = ctl.watch(engine_request(c));
                    match (&created, caller) {
                        (Ok(_), Some(caller)) => self.track(caller),
                        (Ok(_), None) => self.track_unchecked(),
                        _ => {}
                    }
                    match created {
                        Ok(id) if fragment => self.framer.expect_fragment(id),
                        Ok(_) => {}
                        Err(e) => {
                            self.places.release_watcher();
                            let rev = self.shared.hub.store().current_revision();
                            self.framer.push_message(&refused(&self.shared.header, rev, &e));
                        }
                    }
                }
                Some(U::CancelRequest(c)) => {
                    // Canceling an unknown id gets no answer, as in etcd.
                    let _ = ctl.cancel(c.watch_id);
                }
                Some(U::ProgressRequest(_)) => ctl.request_progress_all(),
                None => {}
            }
        }
    }

    /// With auth on, who may create a watcher on (`key`, `range_end`) as sent (an
    /// empty key is the smallest key, `"\0"`, as for the watch itself): `Ok(None)`
    /// with auth off; else the caller, or etcd's cancel reason (no user, a bad
    /// token, no read permission on the range).
    fn authorize_create(&self, key: &[u8], range_end: &[u8]) -> Result<Option<Caller>, String> {
        let Some(gate) = self.shared.auth.as_ref().filter(|g| g.enabled()) else { return Ok(None) };
        let caller = match &self.token {
            None => self.cert.clone().ok_or_else(|| auth::cancel_reason(&AuthError::UserEmpty))?,
            Some(t) => gate.caller_of_token(t).ok_or_else(|| auth::cancel_reason(&AuthError::InvalidToken))?,
        };
        let key: &[u8] = if key.is_empty() { &[0] } else { key };
        if gate.require(Some(&caller), key, range_end, Access::Read).is_err() {
            return Err(auth::cancel_reason(&AuthError::PermissionDenied));
        }
        Ok(Some(caller))
    }

    /// Notes that a watcher was created under auth, for re-checks: one
    /// registration per stream, nothing per watcher.
    fn track(&mut self, caller: Caller) {
        let Some(gate) = &self.shared.auth else { return };
        if self.auth_stream.is_none() {
            self.auth_stream = Some(gate.watch_stream(caller));
        }
    }

    /// Notes that a watcher was created while auth was off, on a server with auth.
    fn track_unchecked(&mut self) {
        let Some(gate) = &self.shared.auth else { return };
        if self.unchecked.is_none() {
            self.unchecked = Some(gate.watch_stream(Caller::nobody()));
        }
    }

    /// Once auth is on, ends a stream with watchers created while it was off:
    /// their client was never asked who it is, and opens the stream again with
    /// credentials (watchers resume from their revisions, as after any break).
    fn recheck_unchecked(&mut self, cx: &mut Context<'_>) {
        let (Some(w), Some(gate)) = (&self.unchecked, &self.shared.auth) else { return };
        w.waker.register(cx.waker());
        if !w.stale.swap(false, Ordering::AcqRel) || !gate.enabled() {
            return;
        }
        self.unchecked = None;
        if self.error.is_none() {
            self.error = Some(Status::unauthenticated(
                "argus: authentication was enabled; this watch stream's watchers were created without \
                 credentials: watch again with a token",
            ));
        }
        self.close_engine();
    }

    /// When the auth state changed since the last look: cancels every watcher of
    /// this stream that its user may no longer create (user deleted, password
    /// changed, role or permission revoked), with etcd's permission-denied reason.
    /// Events are never checked one by one: watchers are checked here and at
    /// creation only.
    fn recheck_auth(&mut self, cx: &mut Context<'_>) {
        let (Some(a), Some(gate), Some(ctl)) = (&self.auth_stream, &self.shared.auth, &self.ctl) else { return };
        a.waker.register(cx.waker());
        if !a.stale.swap(false, Ordering::AcqRel) {
            return;
        }
        // The engine judges each watcher on the range its client sent (the key
        // already made "\0" if it was empty, as the check at creation had it), on
        // its own thread, and cancels the refused with the reason.
        let (gate, caller) = (Arc::clone(gate), a.caller.clone());
        ctl.retain(auth::cancel_reason(&AuthError::PermissionDenied), move |_, key, end| {
            gate.watcher_still_permitted(&caller, key, end)
        });
    }

    /// Writes what the engine stream holds until the byte target.
    fn poll_engine(&mut self, cx: &mut Context<'_>) {
        while !self.engine_done && !self.framer.is_full() {
            if !self.framer.resume() {
                return;
            }
            match self.rx.poll_recv_item(cx) {
                Poll::Pending => return,
                Poll::Ready(Some(mut item)) => {
                    // A watcher's last response gives its place back.
                    if let Item::Response(r) = &mut item {
                        if r.canceled {
                            self.places.release_watcher();
                        }
                    }
                    self.framer.push_item(item);
                }
                Poll::Ready(None) => self.engine_done = true,
            }
        }
    }

    fn next_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Frame<Bytes>>> {
        if self.finished {
            return Poll::Ready(None);
        }
        // Frames already made go first (they hold at most about a target's worth).
        if self.framer.has_frame() {
            return Poll::Ready(self.framer.next_frame().map(Frame::data));
        }
        loop {
            self.recheck_auth(cx);
            self.recheck_unchecked(cx);
            self.poll_requests(cx);
            if self.error.is_none() {
                self.poll_engine(cx);
            }
            if let Some(f) = self.framer.next_frame() {
                return Poll::Ready(Some(Frame::data(f)));
            }
            if self.error.is_some() || self.engine_done {
                self.finished = true;
                if self.error.is_none() {
                    if self.rx.overflowed() {
                        self.error = Some(Status::resource_exhausted(format!(
                            "argus: the client does not read its watch responses: it was owed more than {} \
                             control responses",
                            self.shared.limits.overflow
                        )));
                    } else if self.rx.engine_shut_down() {
                        self.error = Some(Status::unavailable(SHUTTING_DOWN));
                    }
                }
                return Poll::Ready(Some(Frame::trailers(trailers(self.error.take()))));
            }
            // Requests left unread while the stream owed too much: read on if what it
            // owes was received meanwhile (the receive registered this task's waker
            // before, so a later decrease wakes it, and nothing else would).
            if self.paused && self.requests.is_some() && self.may_take_requests() {
                continue;
            }
            // Every source polled above is pending and will wake this task.
            self.framer.release_idle();
            return Poll::Pending;
        }
    }
}

impl Drop for WatchBody {
    fn drop(&mut self) {
        // Counted when the stream is gone: its client may never read to its end.
        if self.rx.overflowed() {
            self.shared.stats.overflowed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The trailers that end a stream: `grpc-status` (and message) of `error`, or 0.
fn trailers(error: Option<Status>) -> HeaderMap {
    let status = error.unwrap_or_else(|| Status::new(tonic::Code::Ok, ""));
    let mut h = HeaderMap::new();
    if status.add_header(&mut h).is_err() {
        h.insert("grpc-status", HeaderValue::from(status.code() as i32));
    }
    h
}

impl http_body::Body for WatchBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut().next_frame(cx).map(|f| f.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compressed_request_gets_tonics_unimplemented_status() {
        let mut h = HeaderMap::new();
        assert!(request_encoding(&h).is_ok());
        h.insert("grpc-encoding", HeaderValue::from_static("identity"));
        assert!(request_encoding(&h).is_ok());
        h.insert("grpc-encoding", HeaderValue::from_static("gzip"));
        let s = request_encoding(&h).expect_err("gzip is not enabled");
        assert_eq!(s.code(), tonic::Code::Unimplemented);
        assert_eq!(s.message(), "Content is compressed with `gzip` which isn't supported");
        assert_eq!(s.metadata().get("grpc-accept-encoding").map(|v| v.to_str().unwrap()), Some("identity"));
    }

    #[test]
    fn trailers_carry_the_status() {
        let ok = trailers(None);
        assert_eq!(ok.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]));
        assert!(ok.get("grpc-message").is_none());
        let err = trailers(Some(Status::resource_exhausted("too big")));
        assert_eq!(err.get("grpc-status").map(|v| v.as_bytes()), Some(&b"8"[..]));
        // Percent-encoded, as gRPC wants it.
        assert_eq!(err.get("grpc-message").map(|v| v.as_bytes()), Some(&b"too%20big"[..]));
    }
}
