//! The `synod` binary: see `synod --help`.

/// mimalloc: the coordinator allocates many small buffers per request (HTTP/2 frames, protobuf
/// messages, log entries); glibc's allocator showed up as the largest single cost in profiles.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Transparent huge pages make the allocator zero 2 MiB pages on first touch: tens of
    // milliseconds of stall on the request path. Synod's heap does not need them.
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_thp_disable(true);
    synod_coordinator::cli::main()
}
