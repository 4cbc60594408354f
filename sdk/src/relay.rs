//! Relaying a server stream to a caller's channel, shared by the watches and subscriptions that
//! resume after a broken stream.

use tokio::sync::mpsc;
use tonic::Streaming;

use crate::ClientError;

/// How relaying a stream ended.
pub(crate) enum Relayed {
    /// The caller went away, or `seen` marked the last item: stop for good.
    Done,
    /// The server ended the stream.
    Ended,
    /// The stream broke: open it again from where it stopped.
    Broke,
}

/// Forwards the items of the stream just `opened` to `sender`, calling `seen` on each first
/// (it returns true for the last item wanted). A stream that could not be opened hands its
/// error to `sender` and is done.
pub(crate) async fn relay<T>(
    opened: Result<Streaming<T>, ClientError>,
    sender: &mpsc::Sender<Result<T, ClientError>>,
    mut seen: impl FnMut(&T) -> bool,
) -> Relayed {
    let mut stream = match opened {
        Ok(stream) => stream,
        Err(error) => {
            let _ = sender.send(Err(error)).await;
            return Relayed::Done;
        }
    };
    loop {
        match stream.message().await {
            Ok(Some(item)) => {
                let last = seen(&item);
                if sender.send(Ok(item)).await.is_err() || last {
                    return Relayed::Done;
                }
            }
            Ok(None) => return Relayed::Ended,
            Err(status) => {
                tracing::debug!(code = ?status.code(), "stream broke; resuming");
                return Relayed::Broke;
            }
        }
    }
}
