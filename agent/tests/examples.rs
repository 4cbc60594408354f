//! Every example agents file and job file in `examples/` loads and converts cleanly.

use std::path::{Path, PathBuf};

use synod_agent::config::AgentFile;
use synod_sdk::job_file::parse_job_file;

fn examples(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no examples in {}", root.display());
    files
}

#[test]
fn example_agents_files_load() {
    for path in examples("agents") {
        let file = AgentFile::load(&path).unwrap_or_else(|e| panic!("{e}"));
        for agent in &file.agents {
            agent.builder(0, &["127.0.0.1:7100".into()]).unwrap();
        }
    }
}

#[test]
fn example_job_files_convert() {
    for path in examples("jobs") {
        let text = std::fs::read_to_string(&path).unwrap();
        let spec = parse_job_file(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!spec.tasks.is_empty(), "{}", path.display());
    }
}
