//! `argus`: the Argus server. This build serves the store from the command line; the
//! etcd v3 gRPC API comes with issue #5 (see the README's roadmap).

use std::path::PathBuf;
use std::process::ExitCode;

use argus_engine::log::FsyncPolicy;
use argus_engine::store::{prefix_end, RangeOptions, Store, StoreOptions};
use clap::{Parser, Subcommand};

/// Argus: a watch engine with etcd v3 semantics.
#[derive(Parser, Debug)]
#[command(name = "argus", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Open (or create) a data directory, recover it and report its state.
    /// Serving the etcd v3 API over gRPC lands with the server issue.
    Serve {
        /// Address to listen on (loopback by default).
        #[arg(long, default_value = "127.0.0.1:2379")]
        listen: String,
        /// Directory holding the revision log and snapshots.
        #[arg(long, default_value = "./argus-data")]
        data_dir: PathBuf,
        /// When writes are fsynced: always, batch (group commit) or never.
        #[arg(long, default_value = "always")]
        fsync: FsyncPolicy,
    },
    /// Put a key into a data directory (for trying the store by hand).
    Put {
        /// Data directory.
        #[arg(long, default_value = "./argus-data")]
        data_dir: PathBuf,
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
    /// Read a key, or every key under a prefix, from a data directory.
    Get {
        /// Data directory.
        #[arg(long, default_value = "./argus-data")]
        data_dir: PathBuf,
        /// Key (or prefix with --prefix).
        key: String,
        /// Treat the key as a prefix.
        #[arg(long)]
        prefix: bool,
        /// Revision to read at (0: current).
        #[arg(long, default_value_t = 0)]
        rev: u64,
    },
}

fn open(data_dir: &PathBuf, fsync: FsyncPolicy) -> Result<Store, String> {
    let mut opts = StoreOptions::default();
    opts.log.fsync = fsync;
    Store::open(data_dir, opts).map_err(|e| format!("cannot open {}: {e}", data_dir.display()))
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command.unwrap_or(Command::Serve {
        listen: "127.0.0.1:2379".into(),
        data_dir: "./argus-data".into(),
        fsync: FsyncPolicy::Always,
    }) {
        Command::Serve { listen, data_dir, fsync } => {
            let store = open(&data_dir, fsync)?;
            tracing::info!(
                data_dir = %data_dir.display(),
                %listen,
                %fsync,
                revision = store.current_revision(),
                compact_revision = store.compact_revision(),
                "store recovered"
            );
            println!(
                "argus: data directory {} recovered at revision {} (compacted at {}); \
                 the etcd v3 gRPC listener on {listen} is not built yet",
                data_dir.display(),
                store.current_revision(),
                store.compact_revision()
            );
            Ok(())
        }
        Command::Put { data_dir, key, value } => {
            let store = open(&data_dir, FsyncPolicy::Always)?;
            let r = store.put(key.as_bytes(), value.as_bytes()).map_err(|e| e.to_string())?;
            println!("OK (revision {})", r.revision);
            Ok(())
        }
        Command::Get { data_dir, key, prefix, rev } => {
            let store = open(&data_dir, FsyncPolicy::Always)?;
            let end = if prefix { prefix_end(key.as_bytes()) } else { Vec::new() };
            let r = store
                .range(key.as_bytes(), &end, RangeOptions { revision: rev, ..Default::default() })
                .map_err(|e| e.to_string())?;
            for kv in r.kvs {
                println!("{}", String::from_utf8_lossy(&kv.key));
                println!("{}", String::from_utf8_lossy(&kv.value));
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("argus: {e}");
            ExitCode::FAILURE
        }
    }
}
