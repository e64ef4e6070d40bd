//! Generates the etcd v3 API types and services from `proto/` with protox (a pure
//! Rust protobuf compiler, so the build needs no system `protoc`).
//!
//! `rpc.proto` and `maintenance.proto` give every message, the client stubs and the
//! servers of KV, Lease, Cluster, Maintenance and Auth with the prost codec. The Watch method has no
//! generated server: `src/watch.rs` serves it by hand and writes its responses
//! pre-framed (`src/wire/`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["rpc.proto", "kv.proto", "maintenance.proto"], ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
