//! A task handler that runs a command: the payload goes to its stdin, its stdout becomes the
//! output. A fan-out instance gets its item on stdin instead, its index in `SYNOD_ITEM_INDEX`
//! and the payload (when UTF-8) in `SYNOD_PAYLOAD`. Exit status 0 succeeds; any other fails
//! (retryable unless the status is 2, the conventional "usage error"). Cancelling the attempt
//! kills the process.

use std::process::Stdio;
use std::sync::Arc;

use synod_sdk::agent::{Task, TaskOutcome};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Largest output kept (the API limit for task outputs).
const OUTPUT_BYTES_MAX: usize = 1024 * 1024;

/// Runs `program args...` for each task.
#[derive(Debug, Clone)]
pub struct ShellHandler {
    argv: Arc<Vec<String>>,
}

impl ShellHandler {
    /// A handler for the command line `argv` (program first).
    pub fn new(argv: Vec<String>) -> Self {
        Self {
            argv: Arc::new(argv),
        }
    }

    /// Runs one task.
    pub async fn run(&self, task: Task) -> TaskOutcome {
        let Some((program, args)) = self.argv.split_first() else {
            return TaskOutcome::fatal("empty command");
        };
        let mut command = Command::new(program);
        command
            .args(args)
            .env("SYNOD_JOB_ID", &task.task.job_id)
            .env("SYNOD_TASK_ID", &task.task.task_id)
            .env("SYNOD_ATTEMPT", task.task.attempt.to_string())
            .env("SYNOD_TASK_KIND", &task.kind)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let input = match task.item_index {
            Some(index) => {
                command.env("SYNOD_ITEM_INDEX", index.to_string());
                if let Ok(payload) = std::str::from_utf8(&task.payload) {
                    command.env("SYNOD_PAYLOAD", payload);
                }
                task.item.clone()
            }
            None => task.payload.clone(),
        };
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => return TaskOutcome::fatal(format!("cannot start {program}: {error}")),
        };
        if let Some(mut stdin) = child.stdin.take() {
            tokio::spawn(async move {
                let _ = stdin.write_all(&input).await;
            });
        }
        tokio::select! {
            output = child.wait_with_output() => outcome(output),
            _ = task.cancelled.cancelled() => TaskOutcome::fatal("cancelled"),
        }
    }
}

fn outcome(output: std::io::Result<std::process::Output>) -> TaskOutcome {
    let output = match output {
        Ok(output) => output,
        Err(error) => return TaskOutcome::retryable(format!("waiting for the command: {error}")),
    };
    if output.status.success() {
        if output.stdout.len() > OUTPUT_BYTES_MAX {
            return TaskOutcome::fatal(format!(
                "output of {} bytes exceeds {OUTPUT_BYTES_MAX}",
                output.stdout.len()
            ));
        }
        return TaskOutcome::Succeeded(output.stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let error = format!("{}: {}", output.status, stderr.trim());
    match output.status.code() {
        Some(2) => TaskOutcome::fatal(error),
        _ => TaskOutcome::retryable(error),
    }
}

#[cfg(test)]
mod tests {
    use synod_sdk::proto as pb;

    use super::*;

    fn task(payload: &str) -> Task {
        let task_ref = pb::TaskRef {
            job_id: "j".into(),
            task_id: "t".into(),
            attempt: 1,
        };
        Task::standalone(task_ref, "k", payload.as_bytes().to_vec())
    }

    fn shell(script: &str) -> ShellHandler {
        ShellHandler::new(vec!["sh".into(), "-c".into(), script.into()])
    }

    #[tokio::test]
    async fn payload_in_output_out_and_exit_codes_decide() {
        assert_eq!(
            shell("tr a-z A-Z").run(task("hello")).await,
            TaskOutcome::Succeeded(b"HELLO".to_vec())
        );
        let ids = shell("echo -n $SYNOD_TASK_ID/$SYNOD_ATTEMPT")
            .run(task(""))
            .await;
        assert_eq!(ids, TaskOutcome::Succeeded(b"t/1".to_vec()));
        let retryable = shell("echo boom >&2; exit 1").run(task("")).await;
        assert!(
            matches!(&retryable, TaskOutcome::Failed { retryable: true, error } if error.contains("boom")),
            "{retryable:?}"
        );
        assert!(matches!(
            shell("exit 2").run(task("")).await,
            TaskOutcome::Failed {
                retryable: false,
                ..
            }
        ));
        let missing = ShellHandler::new(vec!["/no/such/program".into()])
            .run(task(""))
            .await;
        assert!(matches!(
            missing,
            TaskOutcome::Failed {
                retryable: false,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn a_fan_out_instance_reads_its_item_and_index() {
        let mut instance = task("template");
        instance.item = b"item seven".to_vec();
        instance.item_index = Some(7);
        let output = shell("echo -n \"$SYNOD_ITEM_INDEX $SYNOD_PAYLOAD \"; cat")
            .run(instance)
            .await;
        assert_eq!(
            output,
            TaskOutcome::Succeeded(b"7 template item seven".to_vec())
        );
    }

    #[tokio::test]
    async fn cancelling_kills_the_command() {
        let task = task("");
        let cancel = task.cancelled.clone();
        let running = tokio::spawn(async move { shell("sleep 30").run(task).await });
        cancel.cancel();
        let outcome = tokio::time::timeout(std::time::Duration::from_secs(5), running)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(outcome, TaskOutcome::fatal("cancelled"));
    }
}
