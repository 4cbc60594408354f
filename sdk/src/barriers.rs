//! Barriers from a client or an agent: create, arrive (single), enter and leave (double),
//! read and delete. Waiting calls block until their generation's outcome and survive leader
//! changes: the arrival names its generation, so re-sending it resumes the same wait and is
//! never counted twice.

use synod_proto::v1 as pb;

use crate::{Client, ClientError};

/// A step at a barrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Arrive,
    Enter,
    Leave,
}

impl Client {
    /// Creates a barrier.
    pub async fn create_barrier(
        &self,
        request: pb::CreateBarrierRequest,
    ) -> Result<pb::Barrier, ClientError> {
        let response = self
            .coordination(request, |mut c, r| async move { c.create_barrier(r).await })
            .await?;
        Ok(response.barrier.unwrap_or_default())
    }

    /// Reads a barrier (linearizable).
    pub async fn get_barrier(&self, name: &str) -> Result<pb::Barrier, ClientError> {
        let request = pb::GetBarrierRequest {
            name: name.to_owned(),
            consistency: pb::Consistency::Linearizable as i32,
        };
        let response = self
            .coordination(request, |mut c, r| async move { c.get_barrier(r).await })
            .await?;
        Ok(response.barrier.unwrap_or_default())
    }

    /// Deletes a barrier (its waiting parties see it broken); true when it existed.
    pub async fn delete_barrier(&self, name: &str) -> Result<bool, ClientError> {
        let request = pb::DeleteBarrierRequest {
            name: name.to_owned(),
        };
        let response = self
            .coordination(request, |mut c, r| async move { c.delete_barrier(r).await })
            .await?;
        Ok(response.deleted)
    }

    /// Arrives at the current generation of a single barrier as `party` and waits until every
    /// party arrived (released) or the generation broke.
    pub async fn arrive_barrier(
        &self,
        name: &str,
        party: &str,
    ) -> Result<pb::BarrierWaitResult, ClientError> {
        self.barrier_step(name, party, None, Step::Arrive).await
    }

    /// Enters the current generation of a double barrier and waits until every party entered.
    pub async fn enter_barrier(
        &self,
        name: &str,
        party: &str,
    ) -> Result<pb::BarrierWaitResult, ClientError> {
        self.barrier_step(name, party, None, Step::Enter).await
    }

    /// Leaves generation `generation` of a double barrier (the one entered) and waits until
    /// every party left.
    pub async fn leave_barrier(
        &self,
        name: &str,
        party: &str,
        generation: u64,
    ) -> Result<pb::BarrierWaitResult, ClientError> {
        self.barrier_step(name, party, Some(generation), Step::Leave)
            .await
    }

    async fn barrier_step(
        &self,
        name: &str,
        party: &str,
        generation: Option<u64>,
        step: Step,
    ) -> Result<pb::BarrierWaitResult, ClientError> {
        let generation = match generation {
            Some(generation) => generation,
            None => self.get_barrier(name).await?.generation,
        };
        loop {
            let (name, party_id) = (name.to_owned(), party.to_owned());
            let sent = match step {
                Step::Arrive => {
                    let request = pb::ArriveBarrierRequest {
                        name,
                        party_id,
                        generation,
                    };
                    self.coordination(request, |mut c, r| async move { c.arrive_barrier(r).await })
                        .await
                        .map(|r| r.result)
                }
                Step::Enter => {
                    let request = pb::EnterBarrierRequest {
                        name,
                        party_id,
                        generation,
                    };
                    self.coordination(request, |mut c, r| async move { c.enter_barrier(r).await })
                        .await
                        .map(|r| r.result)
                }
                Step::Leave => {
                    let request = pb::LeaveBarrierRequest {
                        name,
                        party_id,
                        generation,
                    };
                    self.coordination(request, |mut c, r| async move { c.leave_barrier(r).await })
                        .await
                        .map(|r| r.result)
                }
            };
            match sent {
                Ok(result) => return Ok(result.unwrap_or_default()),
                // Still waiting when the attempt timed out, or no leader for a while: the
                // same arrival again resumes the wait.
                Err(ClientError::Unavailable { .. }) => continue,
                Err(error) => return Err(error),
            }
        }
    }
}
