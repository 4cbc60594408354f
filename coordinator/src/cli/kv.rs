//! `synod kv ...`: the replicated key-value namespace from the shell.

use clap::Subcommand;
use synod_sdk::proto as pb;

use super::ClientArgs;

/// Key-value commands.
#[derive(Subcommand)]
pub enum KvCommand {
    /// Set a key.
    Put {
        #[command(flatten)]
        client: ClientArgs,
        /// The key.
        key: String,
        /// The value (UTF-8).
        value: String,
    },
    /// Print a key's value.
    Get {
        #[command(flatten)]
        client: ClientArgs,
        /// The key.
        key: String,
        /// Read the answering member's state, which may lag, instead of a linearizable read.
        #[arg(long)]
        stale: bool,
    },
    /// List keys under a prefix.
    List {
        #[command(flatten)]
        client: ClientArgs,
        /// Only keys starting with this.
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Delete a key.
    Delete {
        #[command(flatten)]
        client: ClientArgs,
        /// The key.
        key: String,
    },
}

/// Runs a key-value command.
pub async fn run(command: KvCommand) -> anyhow::Result<()> {
    match command {
        KvCommand::Put { client, key, value } => {
            let response = client.client()?.put(key, value).await?;
            let index = response.write.map_or(0, |w| w.log_index);
            println!("ok (log index {index})");
        }
        KvCommand::Get { client, key, stale } => {
            let consistency = if stale {
                pb::Consistency::Stale
            } else {
                pb::Consistency::Linearizable
            };
            match client.client()?.get(key.clone(), consistency).await?.kv {
                Some(kv) => println!("{}", String::from_utf8_lossy(&kv.value)),
                None => anyhow::bail!("key '{key}' not found"),
            }
        }
        KvCommand::List { client, prefix } => {
            let client = client.client()?;
            let mut page_token = String::new();
            loop {
                let request = pb::ListRequest {
                    prefix: prefix.clone(),
                    page: Some(pb::PageRequest {
                        page_size: 1000,
                        page_token,
                    }),
                    consistency: pb::Consistency::Linearizable as i32,
                };
                let response = client.list(request).await?;
                for kv in &response.kvs {
                    println!("{}\t{}", kv.key, String::from_utf8_lossy(&kv.value));
                }
                if response.next_page_token.is_empty() {
                    break;
                }
                page_token = response.next_page_token;
            }
        }
        KvCommand::Delete { client, key } => {
            let deleted = client.client()?.delete(key).await?.deleted;
            println!("{}", if deleted { "deleted" } else { "no such key" });
        }
    }
    Ok(())
}
