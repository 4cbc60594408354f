//! Leader election for groups of agents: campaign (waits until elected), resign, read and
//! follow the leader. Leadership ends when the leader resigns or its agent is lost; the
//! leadership's `term` strictly increases and fences what the leader guards.

use synod_proto::v1 as pb;

use crate::{Client, ClientError};

impl Client {
    /// Campaigns as `agent_id` (a live agent) and waits until it leads. Safe to repeat after
    /// an error: a candidate already queued or leading is not queued twice.
    pub async fn campaign(
        &self,
        election: &str,
        agent_id: &str,
        value: &[u8],
    ) -> Result<pb::Leadership, ClientError> {
        let request = pb::CampaignRequest {
            election: election.to_owned(),
            agent_id: agent_id.to_owned(),
            value: value.to_vec(),
        };
        loop {
            let sent = self
                .coordination(
                    request.clone(),
                    |mut c, r| async move { c.campaign(r).await },
                )
                .await;
            match sent {
                Ok(response) => return Ok(response.leadership.unwrap_or_default()),
                // Still waiting when the attempt timed out, or no leader for a while.
                Err(ClientError::Unavailable { .. }) => continue,
                Err(error) => return Err(error),
            }
        }
    }

    /// Gives up leadership term `term` of `election`.
    pub async fn resign(
        &self,
        election: &str,
        agent_id: &str,
        term: u64,
    ) -> Result<(), ClientError> {
        let request = pb::ResignRequest {
            election: election.to_owned(),
            agent_id: agent_id.to_owned(),
            term,
        };
        self.coordination(request, |mut c, r| async move { c.resign(r).await })
            .await
            .map(|_| ())
    }

    /// The election's current leader, if any (linearizable).
    pub async fn get_leader(&self, election: &str) -> Result<Option<pb::Leadership>, ClientError> {
        let request = pb::GetLeaderRequest {
            election: election.to_owned(),
            consistency: pb::Consistency::Linearizable as i32,
        };
        let response = self
            .coordination(request, |mut c, r| async move { c.get_leader(r).await })
            .await?;
        Ok(response.leader)
    }

    /// Follows the election's leader, calling `seen` with it now and at every change, until
    /// `seen` returns true (resuming after a broken stream); returns that leader.
    pub async fn observe_leader(
        &self,
        election: &str,
        mut seen: impl FnMut(Option<&pb::Leadership>) -> bool,
    ) -> Result<Option<pb::Leadership>, ClientError> {
        loop {
            let request = pb::ObserveRequest {
                election: election.to_owned(),
                consistency: pb::Consistency::Linearizable as i32,
            };
            let mut stream = self
                .coordination(request, |mut c, r| async move { c.observe(r).await })
                .await?;
            while let Ok(Some(observed)) = stream.message().await {
                if seen(observed.leader.as_ref()) {
                    return Ok(observed.leader);
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}
