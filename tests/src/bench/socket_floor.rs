//! The host's floor for a federated round: the bytes every FedAvg round must move (the model
//! to each participant, an update of the same size back from each) over plain loopback TCP,
//! with no framing, checksums, parsing, arithmetic, disk or replication. No coordinator on the
//! same host, Synod or Flower, can run a round faster than this.
//!
//! ```text
//!   per participant: a server thread ─ write model ─► client thread (read, write back)
//!                    server thread ◄─ read update ─┘
//!   a round = from the barrier that starts every server thread to the one all reach after
//!   their update is read; s/round = median after the warm-up
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Instant;

use anyhow::Context;

use super::coordination::median;

/// Median seconds per round, after `warmup` rounds, for `participants` exchanging a model of
/// `params` f32 parameters with one server over loopback TCP.
pub fn round_seconds(
    participants: usize,
    params: usize,
    rounds: usize,
    warmup: usize,
) -> anyhow::Result<f64> {
    let bytes = params * std::mem::size_of::<f32>();
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let clients: Vec<_> = (0..participants)
        .map(|_| {
            thread::spawn(move || -> std::io::Result<()> {
                let mut stream = TcpStream::connect(addr)?;
                stream.set_nodelay(true)?;
                let mut update = vec![0u8; bytes];
                for _ in 0..rounds {
                    stream.read_exact(&mut update)?;
                    stream.write_all(&update)?;
                }
                Ok(())
            })
        })
        .collect();
    let model = Arc::new(vec![1u8; bytes]);
    let barrier = Arc::new(Barrier::new(participants + 1));
    let failure: Arc<Mutex<Option<std::io::Error>>> = Arc::default();
    let mut servers = Vec::with_capacity(participants);
    for _ in 0..participants {
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let (model, barrier, failure) = (model.clone(), barrier.clone(), failure.clone());
        servers.push(thread::spawn(move || {
            let mut update = vec![0u8; bytes];
            for _ in 0..rounds {
                barrier.wait();
                // Every thread reaches both barriers of every round, failed or not, so the
                // timing thread never waits forever.
                if failure.lock().expect("failure lock").is_none() {
                    if let Err(error) = stream
                        .write_all(&model)
                        .and_then(|()| stream.read_exact(&mut update))
                    {
                        failure.lock().expect("failure lock").get_or_insert(error);
                        let _ = stream.shutdown(std::net::Shutdown::Both);
                    }
                }
                barrier.wait();
            }
        }));
    }
    let mut intervals = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        barrier.wait();
        let started = Instant::now();
        barrier.wait();
        intervals.push(started.elapsed().as_secs_f64());
    }
    for server in servers {
        server
            .join()
            .map_err(|_| anyhow::anyhow!("a server thread panicked"))?;
    }
    if let Some(error) = failure.lock().expect("failure lock").take() {
        return Err(error).context("loopback exchange");
    }
    for client in clients {
        client
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))?
            .context("loopback client")?;
    }
    Ok(median(&intervals[warmup.min(rounds.saturating_sub(1))..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_moves_every_model_and_update_and_takes_measurable_time() {
        let seconds = round_seconds(3, 100_000, 4, 1).unwrap();
        assert!(seconds > 0.0 && seconds < 10.0, "{seconds}");
    }
}
