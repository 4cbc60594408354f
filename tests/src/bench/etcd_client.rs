//! The etcd side of the wire: connections to etcd members and [`EtcdWriter`], which puts
//! through etcd's KV service (the subset in [`super::etcd_proto`]). No process management here;
//! that is [`super::etcd`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use tonic::transport::{Channel, Endpoint};

use super::etcd_proto::kv_client::KvClient;
use super::etcd_proto::PutRequest;
use super::system::Writer;

/// Puts through etcd's KV service, on one connection per member it may use; after a failed
/// put it moves on to the next member.
#[derive(Clone)]
pub struct EtcdWriter {
    clients: Arc<Vec<KvClient<Channel>>>,
    current: Arc<AtomicUsize>,
}

impl EtcdWriter {
    /// A writer over `channels`, starting with the first.
    pub fn new(channels: Vec<Channel>) -> anyhow::Result<Self> {
        anyhow::ensure!(!channels.is_empty(), "no etcd members to write to");
        Ok(Self {
            clients: Arc::new(channels.into_iter().map(KvClient::new).collect()),
            current: Arc::new(AtomicUsize::new(0)),
        })
    }
}

/// A new lazily connected channel (its own HTTP/2 connection) to `addr`, with `timeout` per
/// call.
pub fn connection(addr: &str, timeout: Duration) -> anyhow::Result<Channel> {
    Ok(endpoint(addr, timeout)?.connect_lazy())
}

impl Writer for EtcdWriter {
    fn put(
        &self,
        key: String,
        value: Vec<u8>,
    ) -> impl std::future::Future<Output = anyhow::Result<()>> + Send {
        let turn = self.current.load(Ordering::Relaxed);
        let mut client = self.clients[turn % self.clients.len()].clone();
        let current = self.current.clone();
        async move {
            let request = PutRequest {
                key: key.into_bytes(),
                value,
                ..Default::default()
            };
            if let Err(status) = client.put(request).await {
                // Move on unless another put already did.
                let next = turn.wrapping_add(1);
                let _ = current.compare_exchange(turn, next, Ordering::Relaxed, Ordering::Relaxed);
                bail!("etcd put: {}: {}", status.code(), status.message());
            }
            Ok(())
        }
    }
}

fn endpoint(addr: &str, timeout: Duration) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_millis(300))
        .timeout(timeout)
        .tcp_nodelay(true))
}
