//! `WatchFederation` on this replica: the history after the requested point, then each new
//! event as it is applied, until `FederationCompleted` or the client leaves. A watcher that
//! does not read for [`WATCH_STALL_MS`] is dropped with `RESOURCE_EXHAUSTED`.

use std::time::Duration;

use synod_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::convert_federation::event;
use super::federations::BoxStream;
use super::{ApiError, LeaderRouter};

/// Events buffered per watcher.
const WATCH_BUFFER: usize = 64;
/// How long a watcher's buffer may stay full before its stream is dropped.
const WATCH_STALL_MS: u64 = 10_000;

/// Starts following a federation.
pub fn watch(
    router: LeaderRouter,
    request: pb::WatchFederationRequest,
) -> Result<BoxStream<pb::FederationEvent>, ApiError> {
    let id = request.federation_id;
    let (last, _) = router.read_local(false, |state| {
        state.federations.get(&id).map(|f| f.events.len() as u64)
    });
    let last =
        last.ok_or_else(|| ApiError::NotFound(format!("federation_id: no federation '{id}'")))?;
    let sent = match (request.from_start, request.after_sequence) {
        (true, _) => 0,
        (false, 0) => last,
        (false, after) => after,
    };
    let (sender, receiver) = mpsc::channel(WATCH_BUFFER);
    tokio::spawn(async move {
        if let Err(error) = follow(&router, &id, sent, &sender).await {
            let _ = sender.try_send(Err(error.into()));
        }
    });
    Ok(Box::pin(ReceiverStream::new(receiver)))
}

/// Sends events after `sent` until the federation completes.
async fn follow(
    router: &LeaderRouter,
    id: &str,
    mut sent: u64,
    sender: &mpsc::Sender<Result<pb::FederationEvent, Status>>,
) -> Result<(), ApiError> {
    let mut metrics = router.raft().metrics();
    loop {
        let seen = metrics.borrow_and_update().last_applied;
        let (found, _) = router.read_local(false, |state| {
            let f = state.federations.get(id)?;
            let events: Vec<pb::FederationEvent> = f
                .events
                .iter()
                .skip(sent as usize)
                .take(WATCH_BUFFER)
                .map(|e| event(id, e))
                .collect();
            let done = f.state.is_terminal() && sent + events.len() as u64 >= f.events.len() as u64;
            Some((events, done))
        });
        let (events, done) = found
            .ok_or_else(|| ApiError::NotFound(format!("federation_id: no federation '{id}'")))?;
        let more = events.len() == WATCH_BUFFER;
        for event in events {
            sent = event.sequence;
            let stall = Duration::from_millis(WATCH_STALL_MS);
            match tokio::time::timeout(stall, sender.send(Ok(event))).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Ok(()),
                Err(_) => {
                    return Err(ApiError::ResourceExhausted(format!(
                        "watcher did not read its events for {WATCH_STALL_MS} ms"
                    )))
                }
            }
        }
        if done {
            return Ok(());
        }
        if more {
            continue;
        }
        tokio::select! {
            changed = metrics.wait_for(|m| m.last_applied != seen) => {
                if changed.is_err() {
                    return Err(ApiError::Unavailable {
                        message: "this node is shutting down".into(),
                        leader: None,
                    });
                }
            }
            () = sender.closed() => return Ok(()),
        }
    }
}
