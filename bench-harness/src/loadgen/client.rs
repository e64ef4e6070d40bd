//! The gRPC side of the load generator: connections, the KV writer and a raw
//! Watch client. The same code drives Argus and etcd.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use argus_server::proto::etcdserverpb as pb;
use argus_server::proto::etcdserverpb::auth_client::AuthClient;
use argus_server::proto::etcdserverpb::kv_client::KvClient;
use argus_server::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use bytes::{Buf, Bytes};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder, Streaming};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::{InterceptedService, Interceptor};
use tonic::transport::Endpoint;
use tonic::Status;

use super::now_ns;

/// Largest response the client accepts (etcd sends catch-up batches of up to 1000
/// revisions in one response; Argus up to 2 MiB).
pub const MAX_MESSAGE: usize = 256 << 20;

/// Refuses anything but a loopback address: this tool only loads servers on the
/// same machine.
///
/// # Errors
///
/// A sentence if `addr` is not loopback.
pub fn check_loopback(addr: SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!("refusing endpoint {addr}: only loopback addresses (127.0.0.0/8, ::1) may be loaded"))
    }
}

/// One connection to the server: an HTTP/2 channel whose every call (the Watch
/// stream included) carries the connection's auth token, if it has one.
pub type Channel = InterceptedService<tonic::transport::Channel, TokenInterceptor>;

/// Puts the `token` metadata etcd's servers read on every request of a connection.
#[derive(Clone, Debug, Default)]
pub struct TokenInterceptor {
    token: Option<MetadataValue<Ascii>>,
}

impl Interceptor for TokenInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(t) = &self.token {
            req.metadata_mut().insert("token", t.clone());
        }
        Ok(req)
    }
}

/// The user the load generator connects as when the server has auth enabled.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
}

/// Set once, by `main`, before any connection: every connection [`connect`] opens
/// then authenticates as this user (one `Auth.Authenticate` per connection).
static CREDENTIALS: OnceLock<Credentials> = OnceLock::new();

/// Makes every later [`connect`] authenticate as `c`.
///
/// # Errors
///
/// A sentence if credentials were set already.
pub fn set_credentials(c: Credentials) -> Result<(), String> {
    CREDENTIALS.set(c).map_err(|_| "credentials set twice".to_string())
}

/// `Auth.Authenticate` on `ch`: the token.
///
/// # Errors
///
/// The gRPC status, as text.
pub async fn authenticate(ch: &tonic::transport::Channel, c: &Credentials) -> Result<String, String> {
    let r = AuthClient::new(ch.clone())
        .authenticate(pb::AuthenticateRequest { name: c.user.clone(), password: c.password.clone() })
        .await
        .map_err(|e| format!("authenticate as {}: {e}", c.user))?;
    Ok(r.into_inner().token)
}

/// Opens `n` HTTP/2 connections to `addr`, each authenticated as the user given
/// to [`set_credentials`], if any.
///
/// # Errors
///
/// The connection or authentication error, as text.
pub async fn connect(addr: SocketAddr, n: usize) -> Result<Vec<Channel>, String> {
    connect_as(addr, n, CREDENTIALS.get()).await
}

/// Opens `n` HTTP/2 connections to `addr`, each authenticated as `creds` (if given)
/// with a token of its own.
///
/// # Errors
///
/// The connection or authentication error, as text.
pub async fn connect_as(addr: SocketAddr, n: usize, creds: Option<&Credentials>) -> Result<Vec<Channel>, String> {
    check_loopback(addr)?;
    let ep = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(32 << 20));
    let mut out = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let ch = ep.connect().await.map_err(|e| format!("connect to {addr}: {e}"))?;
        let token = match creds {
            Some(c) => {
                let t = authenticate(&ch, c).await?;
                Some(MetadataValue::try_from(t).map_err(|e| format!("token is not ASCII metadata: {e}"))?)
            }
            None => None,
        };
        out.push(InterceptedService::new(ch, TokenInterceptor { token }));
    }
    Ok(out)
}

/// What `Maintenance.Status` said.
#[derive(Clone, Debug)]
pub struct ServerStatus {
    /// `version`.
    pub version: String,
    /// The response header's revision (a mirror's: the revision it has applied).
    pub revision: i64,
}

/// Waits until the server at `addr` answers `Maintenance.Status` (at most `timeout`).
///
/// # Errors
///
/// The last error, once `timeout` has passed.
pub async fn wait_ready(addr: SocketAddr, timeout: Duration) -> Result<ServerStatus, String> {
    check_loopback(addr)?;
    let deadline = Instant::now() + timeout;
    loop {
        let err = match connect(addr, 1).await {
            Ok(ch) => match status(&ch[0]).await {
                Ok(s) => return Ok(s),
                Err(e) => e,
            },
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(format!("server at {addr} not ready after {timeout:?}: {err}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `Maintenance.Status` on `ch`.
///
/// # Errors
///
/// The gRPC status, as text.
pub async fn status(ch: &Channel) -> Result<ServerStatus, String> {
    let r = MaintenanceClient::new(ch.clone()).status(pb::StatusRequest {}).await.map_err(|e| e.to_string())?;
    let r = r.into_inner();
    Ok(ServerStatus { version: r.version, revision: r.header.map_or(0, |h| h.revision) })
}

/// Puts keys whose values start with the send time ([`now_ns`], 8 bytes little
/// endian) and are padded to a fixed size.
#[derive(Clone)]
pub struct Writer {
    clients: Vec<KvClient<Channel>>,
    value_size: usize,
}

/// One acknowledged put.
#[derive(Clone, Copy, Debug)]
pub struct Ack {
    /// Index of the key in the writer's key set.
    pub key: u32,
    /// Revision of the put.
    pub revision: i64,
    /// Send time ([`now_ns`]); also the value's first 8 bytes.
    pub sent_ns: u64,
    /// Time the response arrived ([`now_ns`]).
    pub acked_ns: u64,
}

impl Writer {
    /// A writer over `channels` (clients take them round-robin).
    pub fn new(channels: &[Channel], value_size: usize) -> Self {
        let clients =
            channels.iter().map(|c| KvClient::new(c.clone()).max_decoding_message_size(MAX_MESSAGE)).collect();
        Writer { clients, value_size: value_size.max(8) }
    }

    /// The value a put sent at `sent_ns` carries.
    pub fn value(&self, sent_ns: u64) -> Vec<u8> {
        value_of(sent_ns, self.value_size)
    }

    /// The client of put client number `i`.
    pub fn client(&self, i: usize) -> KvClient<Channel> {
        self.clients[i % self.clients.len()].clone()
    }

    /// Puts `key` (the key's index in the caller's key set is `key_index`).
    ///
    /// # Errors
    ///
    /// The gRPC status, as text.
    pub async fn put(&self, client: &mut KvClient<Channel>, key_index: u32, key: &[u8]) -> Result<Ack, String> {
        let sent_ns = now_ns();
        let req = pb::PutRequest { key: key.to_vec(), value: self.value(sent_ns), ..Default::default() };
        let r = client.put(req).await.map_err(|e| format!("put: {e}"))?;
        let acked_ns = now_ns();
        let revision = r.into_inner().header.map_or(0, |h| h.revision);
        Ok(Ack { key: key_index, revision, sent_ns, acked_ns })
    }
}

/// A value of `size` bytes (at least 8) starting with `sent_ns`.
pub fn value_of(sent_ns: u64, size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(size.max(8));
    v.extend_from_slice(&sent_ns.to_le_bytes());
    v.resize(size.max(8), b'v');
    v
}

/// The send time a value starts with, if it is long enough.
pub fn sent_ns_of(value: &[u8]) -> Option<u64> {
    value.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
}

/// Encodes `WatchRequest`s with prost.
pub struct RequestEncoder;

impl Encoder for RequestEncoder {
    type Item = pb::WatchRequest;
    type Error = Status;

    fn encode(&mut self, item: pb::WatchRequest, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst).map_err(|e| Status::internal(format!("encode WatchRequest: {e}")))
    }
}

/// Hands back each response's bytes undecoded.
pub struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

/// The client codec of `/etcdserverpb.Watch/Watch`: prost requests, raw responses
/// (read with [`super::wire`], or decoded with prost for the checked sample).
#[derive(Default)]
pub struct RawWatchCodec;

impl Codec for RawWatchCodec {
    type Encode = pb::WatchRequest;
    type Decode = Bytes;
    type Encoder = RequestEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RequestEncoder {
        RequestEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// Opens one Watch stream on `ch`, sending `requests` as they come.
///
/// # Errors
///
/// The gRPC status of the call.
pub async fn open_watch(
    ch: &Channel,
    requests: impl futures::Stream<Item = pb::WatchRequest> + Send + 'static,
) -> Result<Streaming<Bytes>, Status> {
    let mut grpc = tonic::client::Grpc::new(ch.clone()).max_decoding_message_size(MAX_MESSAGE);
    grpc.ready().await.map_err(|e| Status::unknown(format!("watch service not ready: {e}")))?;
    let path = PathAndQuery::from_static("/etcdserverpb.Watch/Watch");
    let resp = grpc.streaming(tonic::Request::new(requests), path, RawWatchCodec).await?;
    Ok(resp.into_inner())
}

/// A create request.
pub fn create_request(key: Vec<u8>, range_end: Vec<u8>, start_revision: i64, watch_id: i64) -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(pb::WatchCreateRequest {
            key,
            range_end,
            start_revision,
            watch_id,
            ..Default::default()
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interceptor_sends_the_token_only_when_it_has_one() {
        let mut with = TokenInterceptor { token: Some(MetadataValue::from_static("tok.1")) };
        let req = with.call(tonic::Request::new(())).unwrap();
        assert_eq!(req.metadata().get("token").and_then(|v| v.to_str().ok()), Some("tok.1"));
        let req = TokenInterceptor::default().call(tonic::Request::new(())).unwrap();
        assert!(req.metadata().get("token").is_none());
    }
}
