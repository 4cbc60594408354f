//! The parts of the `bench` program (`src/bin/bench.rs`), which measures committed commands/s,
//! latency and leader fail-over of a 3-node Synod cluster and, in the same run, of a 3-member
//! etcd cluster driven with the same workload.
//!
//! ```text
//!   bin/bench.rs ─► level (one writer count) ─► load (closed-loop writers, histogram)
//!        │                 └─► cpu (/proc sampling)
//!        ├──────► failover (kill -9 the leader, time the first write)
//!        ├──────► synod | etcd  (a `System`: start, connect, kill, restart)
//!        ├──────► report (table, ratios, JSON)
//!        ├──────► tasks (agents and jobs end to end)
//!        ├──────► schedule (one scheduling pass over a large state, in process)
//!        ├──────► coordination (a large vote and barrier)
//!        ├──────► messaging (direct messages and channels with many agents)
//!        └──────► federated (FedAvg rounds, memory, aggregation; Flower side by side)
//!                     └─► socket_floor (a round's bytes over plain loopback TCP)
//! ```
//! Everything talks to 127.0.0.1 only; the bench never installs anything.

pub mod coordination;
pub mod cpu;
pub mod etcd;
pub mod etcd_client;
pub mod etcd_proto;
pub mod failover;
pub mod federated;
pub mod flower;
pub mod level;
pub mod load;
pub mod messaging;
pub mod participant_heap;
pub mod report;
pub mod schedule;
pub mod socket_floor;
pub mod synod;
pub mod system;
pub mod tasks;
