//! Generates the etcd v3 API types and services from `proto/` with protox (a pure
//! Rust protobuf compiler, so the build needs no system `protoc`).
//!
//! `rpc.proto` and `maintenance.proto` give every message, the client stubs and the
//! servers of KV, Lease, Cluster, Maintenance and Auth with the prost codec. The Watch method has no
//! generated server: `src/watch.rs` serves it by hand and writes its responses
//! pre-framed (`src/wire/`).
//!
//! pbjson-build adds serde implementations of every message (`<package>.serde.rs`)
//! with the protobuf JSON mapping as etcd's HTTP gateway (grpc-gateway's `JSONPb`
//! with `OrigName`) writes it: the proto field names, zero fields left out, 64-bit
//! integers as strings, bytes as base64, enums by name; reading, it takes either
//! name of a field, integers as strings or numbers, enums by name or number, and
//! skips unknown fields, as etcd does (`src/gateway/`).

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["rpc.proto", "kv.proto", "auth.proto", "maintenance.proto"], ["proto"])?;
    let descriptors = fds.encode_to_vec();
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .build(&[".etcdserverpb", ".mvccpb", ".authpb"])?;
    Ok(())
}
