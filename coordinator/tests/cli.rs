//! The `synod` binary's command line: bad configurations fail before anything is bound, with a
//! message that names the key (and the line, for a file).

use std::process::{Command, Output};

fn synod(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_synod"))
        .args(args)
        .env_remove("SYNOD_ADDR")
        .output()
        .expect("run synod")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_malformed_config_file_names_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(&path, "id = 1\nlisten = \"127.0.0.1:7101\"\ndata_dir = \"x\"\n\n[raft]\nheartbeat_ms = \"fast\"\n").unwrap();
    let output = synod(&["server", "--config", path.to_str().unwrap()]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("line 6"), "{message}");
    assert!(message.contains("heartbeat_ms"), "{message}");
}

#[test]
fn an_unknown_config_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(&path, "id = 1\nlisten_addr = \"127.0.0.1:7101\"\n").unwrap();
    let message = stderr(&synod(&["server", "--config", path.to_str().unwrap()]));
    assert!(
        message.contains("unknown field `listen_addr`") && message.contains("line 2"),
        "{message}"
    );
}

#[test]
fn missing_and_invalid_settings_are_named() {
    let cases: [(&[&str], &str); 4] = [
        (
            &["server", "--listen", "127.0.0.1:1", "--data-dir", "d"],
            "id: required",
        ),
        (
            &["server", "--id", "1", "--data-dir", "d"],
            "listen: '' is not an IP:port address",
        ),
        (
            &["server", "--id", "1", "--listen", "127.0.0.1:1"],
            "data_dir: required",
        ),
        (
            &[
                "server",
                "--id",
                "4",
                "--listen",
                "127.0.0.1:1",
                "--data-dir",
                "d",
                "--initial-members",
                "1=127.0.0.1:1",
            ],
            "initial_members: does not include this node (4)",
        ),
    ];
    for (args, expected) in cases {
        let output = synod(args);
        assert!(!output.status.success(), "{args:?}");
        assert!(
            stderr(&output).contains(expected),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn environment_variables_configure_the_server() {
    let output = Command::new(env!("CARGO_BIN_EXE_synod"))
        .args(["server", "--listen", "127.0.0.1:1", "--data-dir", "d"])
        .env("SYNOD_ID", "0")
        .output()
        .unwrap();
    assert!(
        stderr(&output).contains("id: required"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_client_command_against_no_cluster_fails_clearly() {
    let output = synod(&["cluster", "status", "--addr", "127.0.0.1:1"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("cluster unavailable"),
        "{}",
        stderr(&output)
    );
}
