//! Generates the etcd v3 API types and services from `proto/` with protox (a pure
//! Rust protobuf compiler, so the build needs no system `protoc`).
//!
//! Two passes: `rpc.proto` gives every message, the client stubs and the servers of
//! KV, Lease, Cluster, Maintenance and Auth with the prost codec; `watch.proto`
//! gives only the Watch server, with Argus's own codec (`crate::codec::WatchCodec`)
//! whose response type is `crate::codec::WatchFrame`: a response head encoded per
//! watcher followed by event bytes encoded once per revision.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["rpc.proto", "kv.proto"], ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;

    let mut fds = protox::compile(["watch.proto"], ["proto"])?;
    fds.file.retain(|f| f.name() == "watch.proto");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("watch");
    std::fs::create_dir_all(&out)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .codec_path("crate::codec::WatchCodec")
        .extern_path(".etcdserverpb.WatchResponse", "crate::codec::WatchFrame")
        .extern_path(".etcdserverpb", "crate::proto::etcdserverpb")
        .extern_path(".mvccpb", "crate::proto::mvccpb")
        .out_dir(out)
        .compile_fds(fds)?;
    Ok(())
}
