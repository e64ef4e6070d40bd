//! # argus-server
//!
//! etcd's v3 gRPC API (KV, Watch, Lease, Maintenance, Cluster.MemberList) on the
//! Argus engine, so that `etcdctl` and the etcd client libraries work against it
//! unchanged, and etcd's HTTP/JSON gateway on the same port ([`gateway`]). The
//! binary `argus` (`src/main.rs`) is a thin CLI over [`serve`] and [`restore::run`].

#![deny(missing_docs)]

pub mod auth;
pub mod cluster;
pub mod conn;
pub mod convert;
pub mod gateway;
pub mod kv;
pub mod lease;
pub mod limit;
pub mod maintenance;
pub mod metrics;
pub mod mirror;
pub mod other;
pub mod restore;
pub mod tls;
pub mod watch;
pub mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use argus_engine::log::FsyncPolicy;
use argus_engine::store::{Store, StoreOptions};
use argus_engine::watch::{WatchHub, WatchOptions};

/// Generated etcd v3 API types and services, and the messages' serde
/// implementations (the protobuf JSON mapping, for [`gateway`]).
#[allow(missing_docs, clippy::all)]
pub mod proto {
    /// `mvccpb`: KeyValue and Event.
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
        include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
    }
    /// `authpb`: users, permissions and roles of the Auth service.
    pub mod authpb {
        tonic::include_proto!("authpb");
        include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
    }
    /// `etcdserverpb`: every message, the KV / Lease / Cluster / Maintenance / Auth
    /// services and their clients (Watch is served by hand: [`crate::watch`]).
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
        include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
    }
}

/// The etcd API version Argus serves, as a literal (for `concat!`).
macro_rules! etcd_api_version {
    () => {
        "3.4.0"
    };
}

/// The etcd API version Argus serves, dotted: what `GET /version` reports as the
/// server's and the cluster's version.
pub const ETCD_API_VERSION: &str = etcd_api_version!();

/// The etcd API version Argus reports in `Maintenance.Status` (the 3.4 API it
/// serves), with Argus's own version as build metadata.
pub const ETCD_VERSION: &str = concat!(etcd_api_version!(), "+argus.", env!("CARGO_PKG_VERSION"));

/// The fixed identity put in every response header (a single-member "cluster").
#[derive(Clone, Copy, Debug)]
pub struct Header {
    /// Cluster id.
    pub cluster_id: u64,
    /// Member id (also reported as the leader).
    pub member_id: u64,
    /// Raft term (constant: there is no raft).
    pub raft_term: u64,
}

impl Default for Header {
    fn default() -> Self {
        Header { cluster_id: 0xa5a5_0a9d_5e70_0001, member_id: 0x8e9e_05c5_2164_694d, raft_term: 2 }
    }
}

impl Header {
    /// The response header at `revision`.
    pub fn at(&self, revision: u64) -> proto::etcdserverpb::ResponseHeader {
        proto::etcdserverpb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision: revision as i64,
            raft_term: self.raft_term,
        }
    }
}

/// Settings of a server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address of the gRPC listener, which also serves the HTTP/JSON gateway
    /// (loopback by default).
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// The member's name in `Cluster.MemberList` (etcd's `--name`).
    pub name: String,
    /// fsync policy of the log.
    pub fsync: FsyncPolicy,
    /// Interval of progress notifications for `progress_notify` watchers.
    pub progress_interval: Duration,
    /// Prometheus `/metrics` address, if any.
    pub metrics_listen: Option<SocketAddr>,
    /// Largest request (etcd's `--max-request-bytes`).
    pub max_request_bytes: usize,
    /// Largest gRPC message the server decodes (etcd: max request bytes + 512 KiB).
    pub max_recv_bytes: usize,
    /// Most watchers on one Watch stream.
    pub max_watchers_per_stream: usize,
    /// Most concurrent gRPC streams on one connection (HTTP/2 setting).
    pub max_streams_per_connection: u32,
    /// Most Watch streams open at once, server-wide (past it: RESOURCE_EXHAUSTED).
    pub max_streams: usize,
    /// Most watchers, server-wide (past it a create is refused).
    pub max_watchers: usize,
    /// Control responses (created, canceled, progress) a Watch stream may owe its
    /// client before the server stops reading its requests; the engine closes a
    /// stream that owes more than this plus twice `max_watchers_per_stream`.
    pub max_owed_responses: usize,
    /// Event deliveries one Watch stream may hold before its watchers become victims.
    pub watch_stream_capacity: usize,
    /// How long a graceful stop waits for connections to finish before it closes
    /// them.
    pub shutdown_grace: Duration,
    /// How long an auth token stays valid after its last use (etcd's
    /// `--auth-token-ttl`).
    pub auth_token_ttl: Duration,
    /// TLS on the listener (gRPC and the gateway; not `/metrics`), if any.
    pub tls: Option<tls::TlsFiles>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:2379".parse().expect("a literal address"),
            data_dir: PathBuf::from("./argus-data"),
            name: "default".to_string(),
            fsync: FsyncPolicy::Always,
            progress_interval: Duration::from_secs(600),
            metrics_listen: None,
            max_request_bytes: 1536 * 1024,
            max_recv_bytes: 1536 * 1024 + 512 * 1024,
            max_watchers_per_stream: 100_000,
            max_streams_per_connection: 10_000,
            max_streams: 100_000,
            max_watchers: 1_000_000,
            max_owed_responses: 256,
            watch_stream_capacity: 128,
            shutdown_grace: Duration::from_secs(2),
            auth_token_ttl: Duration::from_secs(300),
            tls: None,
        }
    }
}

/// A running server's handles (for the CLI and tests).
pub struct Running {
    /// The store served.
    pub store: Store,
    /// The watch engine.
    pub hub: Arc<WatchHub>,
    /// The address the gRPC listener is bound to.
    pub addr: SocketAddr,
    /// The address of `/metrics`, if enabled.
    pub metrics_addr: Option<SocketAddr>,
}

/// Opens the store, binds the listeners and serves until `shutdown` completes; then
/// ends every Watch stream (UNAVAILABLE), stops accepting, lets the connections
/// finish for up to [`ServerConfig::shutdown_grace`], closes those still open (a
/// Watch stream whose client does not read cannot even be sent its end), and flushes
/// the log.
///
/// `on_ready` is called once the listeners are bound.
///
/// # Errors
///
/// A sentence saying what failed (opening the data directory, binding an address).
pub async fn serve(
    cfg: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(&Running),
) -> Result<(), String> {
    let opts = store_options(&cfg);
    let kv_pool = kv::KvPool::new().map_err(|e| format!("cannot start the KV thread pool: {e}"))?;
    let store = kv_pool.open_store(&cfg.data_dir, opts).await?;
    serve_store(cfg, store, &kv_pool, Mode::Standalone, Header::default(), shutdown, on_ready).await
}

/// The store options a server's settings give.
pub(crate) fn store_options(cfg: &ServerConfig) -> StoreOptions {
    let mut opts = StoreOptions::default();
    opts.log.fsync = cfg.fsync;
    opts.max_request_bytes = cfg.max_request_bytes;
    opts.max_key_bytes = cfg.max_request_bytes;
    opts.max_value_bytes = cfg.max_request_bytes;
    opts
}

/// A member id for a mirror: stable for its name and data directory, and unlike
/// any etcd member's (FNV-1a of both).
pub(crate) fn member_id(name: &str, data_dir: &std::path::Path) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes().chain([0]).chain(data_dir.to_string_lossy().bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Where a server's revisions come from.
#[derive(Clone)]
pub enum Mode {
    /// Its own writes (`argus serve`).
    Standalone,
    /// An etcd cluster it follows (`argus mirror`): writes are forwarded there.
    Mirror(Arc<mirror::Mirror>),
}

impl Mode {
    /// The mirror, if this is one.
    pub fn mirror(&self) -> Option<&Arc<mirror::Mirror>> {
        match self {
            Mode::Standalone => None,
            Mode::Mirror(m) => Some(m),
        }
    }
}

/// Serves `store` as [`serve`] describes (the store is open; `mode` says where its
/// revisions come from).
pub(crate) async fn serve_store(
    cfg: ServerConfig,
    store: Store,
    kv_pool: &kv::KvPool,
    mode: Mode,
    header: Header,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(&Running),
) -> Result<(), String> {
    let mut wopts = WatchOptions::default();
    wopts.progress_interval = cfg.progress_interval;
    wopts.max_watchers_per_stream = cfg.max_watchers_per_stream;
    wopts.stream_capacity = cfg.watch_stream_capacity;
    let hub = Arc::new(WatchHub::new(store.clone(), wopts));

    let tls_config = cfg.tls.as_ref().map(tls::server_config).transpose()?;
    let listener =
        tokio::net::TcpListener::bind(cfg.listen).await.map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let metrics_listener = match cfg.metrics_listen {
        Some(a) => Some(tokio::net::TcpListener::bind(a).await.map_err(|e| format!("cannot listen on {a}: {e}"))?),
        None => None,
    };
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
    // Leases get their full TTL from now, when the server is ready (as etcd's
    // leader gives them when it takes over), and expire from here on.
    // (A mirror's leases are the cluster's: it keeps no lease clocks.)
    let _lease_expiry = match mode {
        Mode::Standalone => {
            store.restart_lease_clocks();
            Some(store.start_lease_expiry().map_err(|e| format!("cannot start the lease expiry thread: {e}"))?)
        }
        Mode::Mirror(_) => None,
    };
    let running = Running { store: store.clone(), hub: Arc::clone(&hub), addr, metrics_addr };
    on_ready(&running);
    tracing::info!(%addr, tls = tls_config.is_some(), client_cert_auth = cfg.tls.as_ref().is_some_and(|t| t.client_cert_auth),
        data_dir = %cfg.data_dir.display(), fsync = %cfg.fsync,
        revision = store.current_revision(), compact_revision = store.compact_revision(), "argus serving etcd v3 API");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let hub_stop = Arc::clone(&hub);
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown => {}
            why = engine_failure(Arc::clone(&hub_stop)) => {
                // The engine does not recover: report it (Status errors, /metrics
                // `argus_watch_engine_healthy`) for a while, then stop; `serve`
                // returns the failure, so the process exits non-zero.
                tracing::error!(reason = %why, "watch engine failed; stopping in {ENGINE_FAILURE_GRACE:?}");
                tokio::time::sleep(ENGINE_FAILURE_GRACE).await;
            }
        }
        // Watch streams never end by themselves: end them (each with UNAVAILABLE, so
        // clients reconnect elsewhere), or the graceful stop would wait for them.
        hub_stop.shutdown();
        let _ = stop_tx.send(true);
    });
    let wait_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let grace = cfg.shutdown_grace;
    let after_grace = |rx| async move {
        wait_stop(rx).await;
        tokio::time::sleep(grace).await;
    };

    let stats = Arc::new(watch::WatchStats::default());
    let limits = watch::WatchLimits {
        max_streams: cfg.max_streams,
        max_watchers: cfg.max_watchers,
        max_owed: cfg.max_owed_responses,
        overflow: cfg.max_owed_responses.saturating_add(cfg.max_watchers_per_stream.saturating_mul(2)),
    };
    let metrics_task = metrics_listener.map(|l| {
        let app = metrics::router(
            store.clone(),
            Arc::clone(&hub),
            cfg.data_dir.clone(),
            Arc::clone(&stats),
            limits,
            mode.mirror().cloned(),
        );
        let stop = wait_stop(stop_rx.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(l, app).with_graceful_shutdown(stop).await {
                tracing::error!(error = %e, "metrics listener failed");
            }
        })
    });

    // Auth: a standalone server's own (a mirror's stays unimplemented: README).
    let auth_gate = match mode {
        Mode::Standalone => Some(auth::AuthGate::new(
            store.clone(),
            cfg.auth_token_ttl,
            cfg.tls.as_ref().is_some_and(|t| t.client_cert_auth),
        )),
        Mode::Mirror(_) => None,
    };
    use proto::etcdserverpb::{auth_server, cluster_server, kv_server, lease_server, maintenance_server};
    // Every request message is checked against the receive limit (and its framing)
    // as it arrives, with etcd's statuses (`limit`); the decoders' own limit is the
    // same.
    let max = cfg.max_recv_bytes;
    // Each implementation is shared by its gRPC server and the HTTP gateway.
    let kv_impl = Arc::new(
        kv::KvService::new(store.clone(), header, kv_pool.handle())
            .mirror(mode.mirror().cloned())
            .auth(auth_gate.clone()),
    );
    let kv = kv_server::KvServer::from_arc(Arc::clone(&kv_impl)).max_decoding_message_size(max);
    let watch = watch::WatchService::new(
        Arc::clone(&hub),
        header,
        cfg.max_request_bytes + 512 * 1024,
        max,
        limits,
        Arc::clone(&stats),
    )
    .auth(auth_gate.clone());
    let maintenance_impl = Arc::new(
        maintenance::MaintenanceService::new(store.clone(), header, cfg.data_dir.clone(), Arc::clone(&hub))
            .mirror(mode.mirror().cloned())
            .auth(auth_gate.clone()),
    );
    let maintenance =
        maintenance_server::MaintenanceServer::from_arc(Arc::clone(&maintenance_impl)).max_decoding_message_size(max);
    let lease_impl = Arc::new(
        lease::LeaseService::new(store.clone(), header, kv_pool.handle())
            .mirror(mode.mirror().cloned())
            .auth(auth_gate.clone()),
    );
    let cluster_impl = Arc::new(cluster::ClusterService::new(header, cfg.name.clone(), addr));
    let auth_impl = Arc::new(auth::AuthService::new(auth_gate.clone(), store.clone(), header, kv_pool.handle()));
    let gateway = gateway::Gateway::new(watch.clone(), Arc::clone(&hub), max)
        .kv(kv_impl)
        .lease(Arc::clone(&lease_impl))
        .cluster(Arc::clone(&cluster_impl))
        .maintenance(maintenance_impl)
        .auth(Arc::clone(&auth_impl));
    // Every accepted connection gets TCP_NODELAY, is wrapped so that the end of the
    // shutdown grace can close it, and with TLS is handshaken in a task of its own
    // (`tls::incoming`).
    let conns = conn::Connections::new();
    let incoming = tls::incoming(listener, Arc::clone(&conns), tls_config);
    // HTTP/1.1 too, for the gateway (curl's default); gRPC requests, told apart by
    // their content type, go on to the request check and the services as before.
    let server = tonic::transport::Server::builder()
        .accept_http1(true)
        .max_concurrent_streams(Some(cfg.max_streams_per_connection))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .layer(gateway::GatewayLayer::new(gateway))
        .layer(limit::RequestCheckLayer::new(max))
        .add_service(kv)
        .add_service(watch)
        .add_service(maintenance)
        .add_service(lease_server::LeaseServer::from_arc(lease_impl).max_decoding_message_size(max))
        .add_service(cluster_server::ClusterServer::from_arc(cluster_impl))
        .add_service(auth_server::AuthServer::from_arc(auth_impl))
        .serve_with_incoming_shutdown(incoming, wait_stop(stop_rx.clone()));
    tokio::pin!(server);
    let result = tokio::select! {
        r = &mut server => r,
        () = after_grace(stop_rx.clone()) => {
            let open = conns.close_all();
            tracing::warn!(connections = open, grace = ?grace, "connections still open at the end of the shutdown grace: closed");
            match tokio::time::timeout(Duration::from_secs(1), &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::error!("connections did not close; stopping without them");
                    Ok(())
                }
            }
        }
    };
    if let Some(t) = metrics_task {
        // A scraper that keeps its connection open must not hold the stop either (it
        // has had the grace already, since the signal).
        let abort = t.abort_handle();
        if tokio::time::timeout(Duration::from_secs(1), t).await.is_err() {
            abort.abort();
        }
    }
    let flushed = kv_pool.handle().spawn_blocking(move || store.flush()).await;
    match flushed {
        Ok(Ok(())) => tracing::info!("log flushed; argus stopped"),
        Ok(Err(e)) => tracing::error!(error = %e, "flushing the log at shutdown failed"),
        Err(e) => tracing::error!(error = %e, "flush task failed"),
    }
    result.map_err(|e| format!("gRPC server failed: {e}"))?;
    match hub.failure() {
        Some(why) => Err(format!("watch engine failed: {why}")),
        None => Ok(()),
    }
}

/// How long a server whose watch engine failed keeps answering (KV, and the
/// failure in Status and /metrics) before it stops and exits non-zero.
const ENGINE_FAILURE_GRACE: Duration = Duration::from_secs(10);

/// Completes with the reason once the watch engine has failed.
async fn engine_failure(hub: Arc<WatchHub>) -> String {
    loop {
        if let Some(why) = hub.failure() {
            return why;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
