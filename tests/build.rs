//! Compiles the etcd API subset in `proto/etcdserverpb` (used by `bench` to drive etcd) without
//! `protoc`: protox parses it into a descriptor set, tonic-prost-build generates clients.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = [PathBuf::from("proto/etcdserverpb/rpc.proto")];
    let descriptors = protox::compile(&files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(descriptors)?;
    Ok(())
}
