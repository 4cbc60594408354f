//! The `synod` binary: see `synod --help`.

fn main() -> std::process::ExitCode {
    synod_coordinator::cli::main()
}
