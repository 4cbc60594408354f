//! Puts multiplexed over one long-lived `KvService.PutStream` to one member: each put is a
//! message on the stream instead of a unary call, which costs the client and the server far less
//! per write. Answers are matched to waiting callers by request id.
//!
//! A pipeline that breaks (member gone, stream reset) fails its waiting puts with
//! [`Broken`]; the client then falls back to unary calls, which follow the leader, and opens a
//! new pipeline later.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use synod_proto::v1 as pb;
use synod_proto::v1::kv_service_client::KvServiceClient;
use synod_proto::LEADER_ADDR_METADATA;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

/// Most puts waiting on one pipeline; further callers wait for room.
const IN_FLIGHT_MAX: usize = 4096;

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<pb::PutResponse, Status>>>>>;

/// The pipeline broke before the put was answered: it may or may not have been applied.
#[derive(Debug)]
pub(crate) struct Broken;

/// One open PutStream.
pub(crate) struct PutPipeline {
    addr: String,
    requests: mpsc::Sender<pb::PutStreamRequest>,
    waiters: Waiters,
    next_id: AtomicU64,
    closed: Arc<AtomicBool>,
}

impl PutPipeline {
    /// Opens a stream to the member at `addr` over `channel`.
    pub(crate) async fn open(
        channel: Channel,
        addr: String,
        message_max: usize,
    ) -> Result<Self, Status> {
        let (requests, outbound) = mpsc::channel(IN_FLIGHT_MAX);
        let inbound = KvServiceClient::new(channel)
            .max_decoding_message_size(message_max)
            .max_encoding_message_size(message_max)
            .put_stream(ReceiverStream::new(outbound))
            .await?
            .into_inner();
        let waiters = Waiters::default();
        let closed = Arc::new(AtomicBool::new(false));
        tokio::spawn(dispatch_answers(inbound, waiters.clone(), closed.clone()));
        Ok(Self {
            addr,
            requests,
            waiters,
            next_id: AtomicU64::new(1),
            closed,
        })
    }

    /// The member this pipeline talks to.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// True once the stream ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Sends one put and waits for its answer.
    pub(crate) async fn put(
        &self,
        put: pb::PutRequest,
    ) -> Result<Result<pb::PutResponse, Status>, Broken> {
        let request_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, wait) = oneshot::channel();
        self.waiters
            .lock()
            .expect("waiters lock")
            .insert(request_id, answer);
        let request = pb::PutStreamRequest {
            request_id,
            put: Some(put),
        };
        if self.requests.send(request).await.is_err() || self.is_closed() {
            self.waiters
                .lock()
                .expect("waiters lock")
                .remove(&request_id);
            return Err(Broken);
        }
        wait.await.map_err(|_| Broken)
    }
}

async fn dispatch_answers(
    mut inbound: Streaming<pb::PutStreamResponse>,
    waiters: Waiters,
    closed: Arc<AtomicBool>,
) {
    while let Ok(Some(answer)) = inbound.message().await {
        let waiter = waiters
            .lock()
            .expect("waiters lock")
            .remove(&answer.request_id);
        if let Some(waiter) = waiter {
            let _ = waiter.send(into_result(answer.result));
        }
    }
    closed.store(true, Ordering::Relaxed);
    // Dropping the senders wakes every waiter with `Broken`.
    waiters.lock().expect("waiters lock").clear();
}

fn into_result(result: Option<pb::put_stream_response::Result>) -> Result<pb::PutResponse, Status> {
    match result {
        Some(pb::put_stream_response::Result::Ok(response)) => Ok(response),
        Some(pb::put_stream_response::Result::Error(error)) => Err(status_of(error)),
        None => Err(Status::internal("put stream answer without a result")),
    }
}

/// Rebuilds the status a unary call would have returned, leader hint included.
fn status_of(error: pb::RequestError) -> Status {
    let mut status = Status::new(Code::from(error.code), error.message);
    if !error.leader_addr.is_empty() {
        if let Ok(value) = error.leader_addr.parse() {
            status.metadata_mut().insert(LEADER_ADDR_METADATA, value);
        }
    }
    status
}
