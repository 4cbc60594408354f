//! Compiles `synod/v1/*.proto` without `protoc`: protox parses the files into a descriptor
//! set, tonic-prost-build generates messages, clients and servers from it.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=synod");
    let mut files: Vec<PathBuf> = std::fs::read_dir("synod/v1")?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|path| path.extension().is_some_and(|ext| ext == "proto"));
    files.sort();
    let descriptors = protox::compile(&files, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("synod_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .bytes(".synod.v1.RaftPayload")
        .bytes(".synod.v1.Chunk")
        .compile_fds(descriptors)?;
    Ok(())
}
