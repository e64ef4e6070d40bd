//! `argus`: the Argus server. Speaks etcd's v3 gRPC API, so `etcdctl` and the etcd
//! client libraries work against it unchanged, and etcd's HTTP/JSON gateway on the
//! same port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use argus_engine::log::FsyncPolicy;
use argus_server::{serve, ServerConfig};
use clap::{Parser, Subcommand};

/// mimalloc: revision batches are allocated by the engine's threads and freed by
/// the io threads that sent them; glibc's allocator spent about a third of the io
/// threads' time on such frees (arena locks, consolidation) in the catch-up and
/// fan-out benchmarks, mimalloc frees them to their thread's heap without a lock.
/// Built with `no_thp` (Cargo.toml): with transparent huge pages its arenas were
/// resident 2 MiB at a time (12 MB more at start and about 0.8 KiB more per watcher
/// in the 10k-watcher comparison than glibc).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Argus: a watch engine with etcd v3 semantics.
///
/// Run `argus serve` (the default), then use any etcd v3 client against it, for
/// example `etcdctl --endpoints=127.0.0.1:2379 watch --prefix /` in one terminal and
/// `etcdctl put /a 1` in another.
#[derive(Parser, Debug)]
#[command(name = "argus", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve etcd's v3 gRPC API (KV, Watch, Lease, Maintenance, Cluster.MemberList)
    /// and its HTTP/JSON gateway from a data directory.
    Serve(ServeArgs),
    /// Rebuild a data directory from a backup saved with `etcdctl snapshot save`
    /// from Argus: verifies the whole file first (nothing is written if it is
    /// damaged), refuses a directory that is not empty, then checks that the store
    /// opens at the backup's revision.
    Restore(RestoreArgs),
    /// Serve etcd's v3 API as a watch tier in front of an etcd cluster: follow the
    /// cluster with one watch into a local revision log with the cluster's own
    /// revisions, serve Watch and Range from it (linearizable reads after a
    /// barrier), and forward writes, Compact and the Lease calls to the cluster.
    Mirror(MirrorArgs),
}

#[derive(clap::Args, Debug)]
struct MirrorArgs {
    /// The cluster's members, comma-separated client URLs
    /// (`http://127.0.0.1:2379,http://127.0.0.1:22379`).
    #[arg(long, value_delimiter = ',', required = true)]
    upstream: Vec<String>,
    /// History to keep: without it, as the cluster (compact when it compacts);
    /// a duration (`24h`) or a revision count (`100000`) keeps at least that much,
    /// also revisions the cluster has compacted.
    #[arg(long)]
    retain: Option<argus_server::mirror::Retain>,
    /// TLS to the cluster: the CA that signed the members' certificates, PEM
    /// (etcdctl's --cacert). Needed for `https://` members; members given as
    /// `host:port` are then reached over https.
    #[arg(long)]
    upstream_cacert: Option<PathBuf>,
    /// TLS to the cluster: the client certificate the mirror presents, PEM (for
    /// members started with --client-cert-auth; etcdctl's --cert).
    #[arg(long, requires = "upstream_key")]
    upstream_cert: Option<PathBuf>,
    /// TLS to the cluster: the client certificate's private key, PEM (etcdctl's
    /// --key).
    #[arg(long, requires = "upstream_cert")]
    upstream_key: Option<PathBuf>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(clap::Args, Debug)]
struct RestoreArgs {
    /// The backup file.
    file: PathBuf,
    /// The directory to restore into: new, or empty.
    #[arg(long)]
    data_dir: PathBuf,
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address of the listener: gRPC, and etcd's HTTP/JSON gateway (`curl`).
    #[arg(long, default_value = "127.0.0.1:2379")]
    listen: SocketAddr,
    /// Directory of the revision log and snapshots; created if missing.
    #[arg(long, default_value = "./argus-data")]
    data_dir: PathBuf,
    /// The member name `etcdctl member list` shows (etcd's --name).
    #[arg(long, default_value = "default")]
    name: String,
    /// When a write is made durable before it is acknowledged: `always` (fsync,
    /// shared by concurrent writers, as etcd), `batch` (fsync after up to 2 ms of
    /// gathering), or `never` (page cache only; a crash may lose recent writes).
    /// Default: `always` for `argus serve`; `never` for `argus mirror`, whose
    /// revisions the cluster keeps: a tail lost in a crash is fetched again from the
    /// cluster on restart, and every revision is the cluster's, so a watcher that
    /// saw it before the crash sees the same again.
    #[arg(long)]
    fsync: Option<FsyncPolicy>,
    /// Interval of progress notifications for watchers that asked for them
    /// (`progress_notify`), e.g. `10m`, `30s`, `500ms`.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    progress_interval: Duration,
    /// Address of a Prometheus `/metrics` endpoint (off unless given).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Largest request in bytes (etcd's --max-request-bytes).
    #[arg(long, default_value_t = 1536 * 1024)]
    max_request_bytes: usize,
    /// Most watchers on one Watch stream.
    #[arg(long, default_value_t = 100_000)]
    max_watchers_per_stream: usize,
    /// Most concurrent gRPC streams on one connection.
    #[arg(long, default_value_t = 10_000)]
    max_streams_per_connection: u32,
    /// Most Watch streams open at once, server-wide; past it a new one is refused
    /// with RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 100_000)]
    max_streams: usize,
    /// Most watchers at once, server-wide; past it a create is refused (created and
    /// canceled, watch id -1, with the reason).
    #[arg(long, default_value_t = 1_000_000)]
    max_watchers: usize,
    /// Seconds an auth token stays valid after its last use (etcd's flag).
    #[arg(long, default_value_t = 300)]
    auth_token_ttl: u64,
    /// TLS: the server's certificate, PEM (etcd's --cert-file). gRPC and the
    /// HTTP/JSON gateway are then served over TLS only; /metrics stays plain HTTP.
    #[arg(long, requires = "key_file")]
    cert_file: Option<PathBuf>,
    /// TLS: the server's private key, PEM (etcd's --key-file).
    #[arg(long, requires = "cert_file")]
    key_file: Option<PathBuf>,
    /// TLS: the CA certificates that client certificates must be signed by, PEM
    /// (etcd's --trusted-ca-file).
    #[arg(long, requires = "cert_file")]
    trusted_ca_file: Option<PathBuf>,
    /// TLS: require a client certificate signed by --trusted-ca-file on every
    /// connection, refused in the handshake otherwise (etcd's --client-cert-auth).
    #[arg(long, requires = "cert_file")]
    client_cert_auth: bool,
}

impl Default for ServeArgs {
    fn default() -> Self {
        let d = ServerConfig::default();
        ServeArgs {
            listen: d.listen,
            data_dir: d.data_dir,
            name: d.name,
            fsync: Some(d.fsync),
            progress_interval: d.progress_interval,
            metrics_listen: None,
            max_request_bytes: d.max_request_bytes,
            max_watchers_per_stream: d.max_watchers_per_stream,
            max_streams_per_connection: d.max_streams_per_connection,
            max_streams: d.max_streams,
            max_watchers: d.max_watchers,
            auth_token_ttl: d.auth_token_ttl.as_secs(),
            cert_file: None,
            key_file: None,
            trusted_ca_file: None,
            client_cert_auth: false,
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: not in a log file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let args = match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(args) => args,
        Command::Mirror(m) => return run_mirror(m),
        Command::Restore(r) => {
            return match argus_server::restore::run(&r.file, &r.data_dir) {
                Ok(done) => {
                    println!("argus: {done}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("argus: restore failed: {e}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    let cfg = server_config(args);
    if !tls_ok(&cfg) {
        return ExitCode::FAILURE;
    }
    let Some(rt) = runtime() else { return ExitCode::FAILURE };
    let served = rt.block_on(serve(cfg, shutdown_signal(), |r| {
        eprintln!("argus: serving etcd v3 API on {} (revision {})", r.addr, r.store.current_revision());
        if let Some(m) = r.metrics_addr {
            eprintln!("argus: metrics on http://{m}/metrics");
        }
    }));
    finish(rt, served)
}

/// `argus mirror`.
fn run_mirror(args: MirrorArgs) -> ExitCode {
    let cfg = argus_server::mirror::MirrorConfig {
        server: {
            let never = args.serve.fsync.is_none();
            let mut c = server_config(args.serve);
            if never {
                c.fsync = FsyncPolicy::Never;
            }
            c
        },
        upstream: args.upstream,
        retain: args.retain.unwrap_or(argus_server::mirror::Retain::Cluster),
        upstream_tls: argus_server::mirror::upstream::UpstreamTls {
            ca_file: args.upstream_cacert,
            cert_file: args.upstream_cert,
            key_file: args.upstream_key,
        },
    };
    if !tls_ok(&cfg.server) {
        return ExitCode::FAILURE;
    }
    let Some(rt) = runtime() else { return ExitCode::FAILURE };
    let served = rt.block_on(argus_server::mirror::run(cfg, shutdown_signal(), |r, m| {
        eprintln!(
            "argus: serving etcd v3 API on {} (revision {}, mirror of {})",
            r.addr,
            r.store.current_revision(),
            m.upstream.endpoints().join(",")
        );
        if let Some(a) = r.metrics_addr {
            eprintln!("argus: metrics on http://{a}/metrics");
        }
    }));
    finish(rt, served)
}

/// Checks the listener's TLS files before anything starts (a mirror would
/// otherwise bootstrap from its cluster first); reports and answers `false` if they
/// are unusable.
fn tls_ok(cfg: &ServerConfig) -> bool {
    match cfg.tls.as_ref().map(argus_server::tls::server_config).transpose() {
        Ok(_) => true,
        Err(e) => {
            eprintln!("argus: {e}");
            false
        }
    }
}

fn server_config(args: ServeArgs) -> ServerConfig {
    ServerConfig {
        listen: args.listen,
        data_dir: args.data_dir,
        name: args.name,
        fsync: args.fsync.unwrap_or(FsyncPolicy::Always),
        progress_interval: args.progress_interval,
        metrics_listen: args.metrics_listen,
        max_request_bytes: args.max_request_bytes,
        max_recv_bytes: args.max_request_bytes + 512 * 1024,
        max_watchers_per_stream: args.max_watchers_per_stream,
        max_streams_per_connection: args.max_streams_per_connection,
        max_streams: args.max_streams,
        max_watchers: args.max_watchers,
        auth_token_ttl: std::time::Duration::from_secs(args.auth_token_ttl),
        tls: match (args.cert_file, args.key_file) {
            (Some(cert_file), Some(key_file)) => Some(argus_server::tls::TlsFiles {
                cert_file,
                key_file,
                trusted_ca_file: args.trusted_ca_file,
                client_cert_auth: args.client_cert_auth,
            }),
            _ => None,
        },
        ..ServerConfig::default()
    }
}

/// The server's runtime (`None`, reported, if it cannot start).
fn runtime() -> Option<tokio::runtime::Runtime> {
    // Connections, gRPC framing and the Watch streams run on these workers; KV calls
    // run on the `argus-kv` pool (`argus_server::kv::KvPool`) and the watch engine on
    // its own threads (`argus-notifier`, rayon's), so that thread names split the
    // server's CPU into wire, store and engine.
    match tokio::runtime::Builder::new_multi_thread().thread_name("argus-io").enable_all().build() {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("argus: cannot start the runtime: {e}");
            None
        }
    }
}

fn finish(rt: tokio::runtime::Runtime, served: Result<(), String>) -> ExitCode {
    // The server has stopped and flushed its log; nothing left on the runtime may
    // hold the exit.
    rt.shutdown_timeout(Duration::from_millis(500));
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("argus: {e}");
            ExitCode::FAILURE
        }
    }
}
