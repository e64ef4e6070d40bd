//! The connection to the etcd cluster a mirror follows: one gRPC channel to one
//! member at a time, moved to the next member (round robin over `--upstream`) when
//! that member fails. The follower's watch, the barrier's reads and every forwarded
//! call go to the current member.
//!
//! A forwarded call is retried on the next member only when it cannot have reached
//! the cluster (the connection was refused or could not be made): a write that
//! failed after it was sent may have been applied, and, as with etcd's own clients,
//! the caller decides what to do about it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use std::path::PathBuf;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Status;

use crate::proto::etcdserverpb as pb;
use crate::proto::etcdserverpb::{
    kv_client::KvClient, lease_client::LeaseClient, maintenance_client::MaintenanceClient,
};

/// Largest message accepted from the cluster: a watch response carries a whole
/// revision (a DeleteRange of many keys, a txn of large values), and a range page
/// up to its limit of values, so far more than tonic's 4 MiB default.
pub(crate) const MAX_UPSTREAM_MESSAGE: usize = 1 << 30;

/// How long connecting to a member may take before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The members of the upstream cluster and the channel to the one in use.
pub struct Upstream {
    endpoints: Vec<String>,
    /// TLS for the `https://` members.
    tls: Option<ClientTlsConfig>,
    current: Mutex<(usize, Channel)>,
    /// Times the channel moved to another member.
    switches: AtomicUsize,
}

impl Upstream {
    /// The cluster at `endpoints` (`http://host:port`, `https://host:port`, or
    /// `host:port`: https if `tls` names any file, else http), starting with the
    /// first.
    ///
    /// # Errors
    ///
    /// A sentence naming an endpoint that is not a valid URL, or none given; an
    /// `https://` member without a CA; a TLS file that cannot be read or used; TLS
    /// files given for `http://` members.
    pub fn new(endpoints: &[String], tls: &UpstreamTls) -> Result<Upstream, String> {
        if endpoints.is_empty() {
            return Err("--upstream names no etcd member".to_string());
        }
        let scheme = if tls.is_empty() { "http" } else { "https" };
        let endpoints: Vec<String> =
            endpoints.iter().map(|e| if e.contains("://") { e.clone() } else { format!("{scheme}://{e}") }).collect();
        let any_https = endpoints.iter().any(|e| e.starts_with("https://"));
        let tls_config = if any_https { Some(tls.client_config()?) } else { None };
        if !any_https && !tls.is_empty() {
            return Err(format!(
                "--upstream-cacert/--upstream-cert/--upstream-key are given but no member is https:// ({})",
                endpoints.join(",")
            ));
        }
        for e in &endpoints {
            let endpoint =
                Endpoint::from_shared(e.clone()).map_err(|err| format!("upstream {e} is not a valid URL: {err}"))?;
            if let (true, Some(t)) = (e.starts_with("https://"), &tls_config) {
                endpoint.tls_config(t.clone()).map_err(|err| format!("upstream {e}: TLS: {err}"))?;
            }
        }
        let first = channel(&endpoints[0], tls_config.as_ref());
        Ok(Upstream { endpoints, tls: tls_config, current: Mutex::new((0, first)), switches: AtomicUsize::new(0) })
    }

    /// The member in use now.
    pub fn member(&self) -> String {
        let i = self.current.lock().expect("upstream lock").0;
        self.endpoints[i].clone()
    }

    /// Every member given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The channel to the member in use, and its index (pass it to [`Upstream::failed`]).
    pub fn channel(&self) -> (usize, Channel) {
        let c = self.current.lock().expect("upstream lock");
        (c.0, c.1.clone())
    }

    /// Moves to the member after `index` if `index` is still the one in use (so that
    /// many callers seeing one failure move only once).
    pub fn failed(&self, index: usize) {
        let mut c = self.current.lock().expect("upstream lock");
        if c.0 == index {
            let next = (index + 1) % self.endpoints.len();
            tracing::warn!(from = %self.endpoints[index], to = %self.endpoints[next], "mirror: moving to another etcd member");
            *c = (next, channel(&self.endpoints[next], self.tls.as_ref()));
            self.switches.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A KV client on the member in use.
    pub fn kv(&self) -> (usize, KvClient<Channel>) {
        let (i, ch) = self.channel();
        (i, KvClient::new(ch).max_decoding_message_size(MAX_UPSTREAM_MESSAGE))
    }

    /// A Lease client on the member in use.
    pub fn lease(&self) -> (usize, LeaseClient<Channel>) {
        let (i, ch) = self.channel();
        (i, LeaseClient::new(ch).max_decoding_message_size(MAX_UPSTREAM_MESSAGE))
    }

    /// A Maintenance client on the member in use.
    pub fn maintenance(&self) -> (usize, MaintenanceClient<Channel>) {
        let (i, ch) = self.channel();
        (i, MaintenanceClient::new(ch).max_decoding_message_size(MAX_UPSTREAM_MESSAGE))
    }

    /// Runs a unary call `f` on the member in use; if the call could not reach it
    /// (see [`never_sent`]), moves to the next member and tries again, once per
    /// member.
    ///
    /// # Errors
    ///
    /// The cluster's status, passed on unchanged (etcd's message and code), or
    /// `UNAVAILABLE` naming the members when none could be reached.
    pub async fn call<T, F, Fut>(&self, mut f: F) -> Result<T, Status>
    where
        F: FnMut(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let mut last = None;
        for _ in 0..self.endpoints.len() {
            let (i, ch) = self.channel();
            match f(ch).await {
                Err(s) if never_sent(&s) => {
                    self.failed(i);
                    last = Some(s);
                }
                r => return r,
            }
        }
        let why = last.map(|s| s.message().to_string()).unwrap_or_default();
        Err(Status::unavailable(format!(
            "argus mirror: no etcd member reachable ({}): {why}",
            self.endpoints.join(",")
        )))
    }
}

/// A lazily connected channel to `url` (checked by [`Upstream::new`]), with `tls`
/// if it is an `https://` URL.
fn channel(url: &str, tls: Option<&ClientTlsConfig>) -> Channel {
    let mut endpoint = Endpoint::from_shared(url.to_string()).expect("checked when the upstream was built");
    if let (true, Some(t)) = (url.starts_with("https://"), tls) {
        endpoint = endpoint.tls_config(t.clone()).expect("checked when the upstream was built");
    }
    endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .connect_lazy()
}

/// TLS to the cluster's members (`argus mirror --upstream-cacert --upstream-cert
/// --upstream-key`, as etcdctl's `--cacert --cert --key`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamTls {
    /// The CA that signed the members' certificates, PEM.
    pub ca_file: Option<PathBuf>,
    /// The client certificate presented to the members, PEM.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key, PEM.
    pub key_file: Option<PathBuf>,
}

impl UpstreamTls {
    /// Whether no TLS file is given.
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.cert_file.is_none() && self.key_file.is_none()
    }

    /// Tonic's (rustls) configuration: the CA as the only trust anchor, and the
    /// client certificate if given. Every file is read and parsed here, so that a
    /// bad one is reported at start.
    fn client_config(&self) -> Result<ClientTlsConfig, String> {
        let Some(ca) = &self.ca_file else {
            return Err("an https:// upstream needs --upstream-cacert (the CA that signed the members' certificates)"
                .to_string());
        };
        crate::tls::load_certs("--upstream-cacert", ca)?;
        let ca_pem = std::fs::read(ca).map_err(|e| format!("--upstream-cacert {}: {e}", ca.display()))?;
        let mut cfg = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                crate::tls::load_certs("--upstream-cert", cert)?;
                crate::tls::load_key("--upstream-key", key)?;
                let cert_pem = std::fs::read(cert).map_err(|e| format!("--upstream-cert {}: {e}", cert.display()))?;
                let key_pem = std::fs::read(key).map_err(|e| format!("--upstream-key {}: {e}", key.display()))?;
                cfg = cfg.identity(Identity::from_pem(cert_pem, key_pem));
            }
            (None, None) => {}
            _ => return Err("--upstream-cert and --upstream-key go together".to_string()),
        }
        Ok(cfg)
    }
}

/// Whether a call failed before its request could reach the member: no connection
/// could be made. Only then may a write be sent to another member.
pub fn never_sent(s: &Status) -> bool {
    if s.code() != tonic::Code::Unavailable {
        return false;
    }
    let mut text = s.message().to_lowercase();
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
    while let Some(e) = src {
        text.push(' ');
        text.push_str(&e.to_string().to_lowercase());
        src = e.source();
    }
    text.contains("connect") || text.contains("connection refused") || text.contains("dns error")
}

/// Whether the cluster refused a call for want of credentials: it has
/// authentication on. A mirror holds no credentials for the cluster, and serving
/// the cluster's keys to clients it cannot check would give them away: it stops
/// instead.
pub fn auth_refused(s: &Status) -> bool {
    matches!(s.code(), tonic::Code::Unauthenticated | tonic::Code::PermissionDenied)
        || (s.code() == tonic::Code::InvalidArgument && s.message().contains("user name is empty"))
}

/// What a mirror says when the cluster has authentication on.
pub const AUTH_REFUSED: &str = "the etcd cluster has authentication enabled; argus mirror has no credentials for \
    it yet and will not serve the cluster's keys to clients it cannot check";

/// A watch create request (`watch_id` 0: etcd picks the id).
pub fn create_request(
    watch_id: i64,
    key: Vec<u8>,
    range_end: Vec<u8>,
    start_revision: u64,
    progress_notify: bool,
) -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(pb::WatchCreateRequest {
            key,
            range_end,
            start_revision: start_revision as i64,
            progress_notify,
            watch_id,
            ..Default::default()
        })),
    }
}

/// Opens a Watch stream on `ch` whose first request is `create`: the sender for
/// the stream's later requests, and its responses.
///
/// # Errors
///
/// The status of a stream that could not be opened.
pub async fn open_watch(
    ch: Channel,
    create: pb::WatchRequest,
) -> Result<(tokio::sync::mpsc::Sender<pb::WatchRequest>, tonic::Streaming<pb::WatchResponse>), Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tx.send(create).await.expect("the receiver is held just below");
    let stream = watch_stream(ch, tokio_stream::wrappers::ReceiverStream::new(rx)).await?;
    Ok((tx, stream))
}

/// Opens etcd's bidirectional Watch stream on `ch`: `requests` go up, responses
/// come back. Written by hand because the Watch service is not generated (the
/// server serves it itself, `crate::watch`).
///
/// # Errors
///
/// The status of a stream that could not be opened.
async fn watch_stream(
    ch: Channel,
    requests: impl tokio_stream::Stream<Item = pb::WatchRequest> + Send + 'static,
) -> Result<tonic::Streaming<pb::WatchResponse>, Status> {
    let mut grpc = tonic::client::Grpc::new(ch).max_decoding_message_size(MAX_UPSTREAM_MESSAGE);
    grpc.ready().await.map_err(|e| Status::unavailable(format!("argus mirror: etcd member not ready: {e}")))?;
    let codec = tonic_prost::ProstCodec::<pb::WatchRequest, pb::WatchResponse>::default();
    let path = http::uri::PathAndQuery::from_static("/etcdserverpb.Watch/Watch");
    let mut req = tonic::Request::new(requests);
    // etcd closes a watch stream whose member has lost its leader only when the
    // client asks for it (clientv3's WithRequireLeader): a member cut off from the
    // others must not keep the mirror waiting for revisions it will never get.
    req.metadata_mut().insert("hasleader", tonic::metadata::MetadataValue::from_static("true"));
    let resp = grpc.streaming(req, path, codec).await?;
    Ok(resp.into_inner())
}
