//! Votes between proto and domain: an `OpenVoteRequest`'s rule and voters into the state's
//! `VoteRule`, and vote records into `synod.v1.Vote`.

use std::collections::BTreeMap;

use synod_proto::v1 as pb;

use super::ApiError;
use crate::runtime::AgentSelector;
use crate::state::votes::{VoteRecord, VoteRule, VoteState};

/// Who may vote, as the request says: explicit agents or a selector.
pub enum Voters {
    /// These agents.
    Listed(Vec<String>),
    /// The connected agents matching this selector when the vote opens.
    Selected(AgentSelector),
}

/// A selector from the wire.
pub fn domain_selector(selector: pb::AgentSelector) -> AgentSelector {
    AgentSelector {
        capabilities: selector.capabilities.into_iter().collect(),
        labels: selector.labels.into_iter().collect(),
    }
}

/// A selector on the wire.
pub fn proto_selector(selector: &AgentSelector) -> pb::AgentSelector {
    pb::AgentSelector {
        capabilities: selector.capabilities.iter().cloned().collect(),
        labels: selector.labels.clone().into_iter().collect(),
    }
}

/// The request's voters.
pub fn voters(voters: Option<pb::open_vote_request::Voters>) -> Result<Voters, ApiError> {
    match voters {
        Some(pb::open_vote_request::Voters::AgentIds(list)) if !list.agent_ids.is_empty() => {
            Ok(Voters::Listed(list.agent_ids))
        }
        Some(pb::open_vote_request::Voters::AgentIds(_)) => Err(ApiError::invalid(
            "agent_ids",
            "at least one agent id is needed",
        )),
        Some(pb::open_vote_request::Voters::Selector(selector)) => {
            Ok(Voters::Selected(domain_selector(selector)))
        }
        None => Err(ApiError::invalid("voters", "set agent_ids or selector")),
    }
}

/// The request's decision rule (ranges are checked by the state's `validate`).
pub fn rule(rule: Option<pb::VoteRule>) -> Result<VoteRule, ApiError> {
    use pb::vote_rule::Rule;
    match rule.and_then(|rule| rule.rule) {
        Some(Rule::Majority(_)) => Ok(VoteRule::Majority),
        Some(Rule::Supermajority(rule)) => Ok(VoteRule::Supermajority {
            threshold: rule.threshold,
        }),
        Some(Rule::Unanimous(_)) => Ok(VoteRule::Unanimous),
        Some(Rule::Weighted(rule)) => Ok(VoteRule::Weighted {
            weights: rule.weights.into_iter().collect(),
            threshold: if rule.threshold == 0.0 {
                0.5
            } else {
                rule.threshold
            },
        }),
        Some(Rule::Byzantine(rule)) => Ok(VoteRule::Byzantine { f: rule.f }),
        None => Err(ApiError::invalid(
            "rule",
            "one of majority, supermajority, unanimous, weighted, byzantine is required",
        )),
    }
}

/// A vote's proto form; ballots only when `with_ballots`.
pub fn vote(record: &VoteRecord, with_ballots: bool) -> pb::Vote {
    pb::Vote {
        vote_id: record.id.clone(),
        question: record.spec.question.clone(),
        options: record.spec.options.clone(),
        eligible_agent_ids: record.spec.voters.clone(),
        rule: Some(vote_rule(&record.spec.rule)),
        state: vote_state(record.state) as i32,
        decided_option: record.decided.clone().unwrap_or_default(),
        state_reason: record.reason.clone().unwrap_or_default(),
        tallies: record
            .tallies()
            .into_iter()
            .map(|(option, ballots, weight)| pb::OptionTally {
                option,
                ballots,
                weight,
            })
            .collect(),
        ballots: match with_ballots {
            true => record
                .ballots
                .iter()
                .map(|b| pb::BallotRecord {
                    agent_id: b.agent_id.clone(),
                    option: b.option.clone(),
                    cast_at_ms: b.cast_at_ms,
                })
                .collect(),
            false => Vec::new(),
        },
        opened_by: record.spec.opened_by.clone(),
        opened_at_ms: record.opened_at_ms,
        deadline_at_ms: record.deadline_at_ms,
        closed_at_ms: record.closed_at_ms.unwrap_or(0),
    }
}

/// A vote state's proto form.
pub fn vote_state(state: VoteState) -> pb::VoteState {
    match state {
        VoteState::Open => pb::VoteState::Open,
        VoteState::Decided => pb::VoteState::Decided,
        VoteState::Failed => pb::VoteState::Failed,
    }
}

fn vote_rule(rule: &VoteRule) -> pb::VoteRule {
    use pb::vote_rule::Rule;
    let rule = match rule {
        VoteRule::Majority => Rule::Majority(pb::MajorityRule {}),
        VoteRule::Supermajority { threshold } => Rule::Supermajority(pb::SupermajorityRule {
            threshold: *threshold,
        }),
        VoteRule::Unanimous => Rule::Unanimous(pb::UnanimousRule {}),
        VoteRule::Weighted { weights, threshold } => Rule::Weighted(pb::WeightedRule {
            weights: weights
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .collect(),
            threshold: *threshold,
        }),
        VoteRule::Byzantine { f } => Rule::Byzantine(pb::ByzantineRule { f: *f }),
    };
    pb::VoteRule { rule: Some(rule) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_converts_and_a_missing_one_is_named() {
        use pb::vote_rule::Rule;
        let weighted = pb::WeightedRule {
            weights: [("a".to_owned(), 2.0)].into_iter().collect(),
            threshold: 0.0,
        };
        let rules = [
            (Rule::Majority(pb::MajorityRule {}), VoteRule::Majority),
            (
                Rule::Supermajority(pb::SupermajorityRule { threshold: 0.7 }),
                VoteRule::Supermajority { threshold: 0.7 },
            ),
            (Rule::Unanimous(pb::UnanimousRule {}), VoteRule::Unanimous),
            (
                Rule::Weighted(weighted),
                VoteRule::Weighted {
                    weights: [("a".to_owned(), 2.0)].into(),
                    threshold: 0.5,
                },
            ),
            (
                Rule::Byzantine(pb::ByzantineRule { f: 2 }),
                VoteRule::Byzantine { f: 2 },
            ),
        ];
        for (proto, domain) in rules {
            let converted = rule(Some(pb::VoteRule { rule: Some(proto) })).unwrap();
            assert_eq!(converted, domain);
            assert_eq!(rule(Some(vote_rule(&converted))).unwrap(), domain);
        }
        let missing = rule(None).err().unwrap().to_string();
        assert!(missing.starts_with("rule: one of majority"), "{missing}");
        let nobody = voters(None).err().unwrap().to_string();
        assert_eq!(nobody, "voters: set agent_ids or selector");
    }
}
