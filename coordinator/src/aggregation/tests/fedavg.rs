//! FedAvg: weighted mean, streaming, and refusals that leave the aggregate untouched.

use super::*;

#[test]
fn weighted_mean_of_three_updates() {
    // Σw = 1 + 2 + 1 = 4.
    // coord 0: (1·1 + 2·4 + 1·(−2)) / 4 = 7/4 = 1.75   → 1 + 1.75 = 2.75
    // coord 1: (1·0 + 2·3 + 1·6) / 4    = 12/4 = 3     → 2 + 3    = 5
    // coord 2: (1·(−2) + 2·1 + 1·4) / 4 = 4/4 = 1      → 3 + 1    = 4
    let updates: [(&[f32], u64); 3] = [
        (&[1.0, 0.0, -2.0], 1),
        (&[4.0, 3.0, 1.0], 2),
        (&[-2.0, 6.0, 4.0], 1),
    ];
    let mut state = ServerState::default();
    let got = round(
        &Strategy::FedAvg,
        None,
        &updates,
        &[1.0, 2.0, 3.0],
        &mut state,
    )
    .unwrap();
    assert_eq!(got, vec![2.75, 5.0, 4.0]);
    assert_eq!(state, ServerState::default(), "FedAvg is stateless");
}

#[test]
fn refused_updates_leave_the_aggregate_unchanged() {
    let mut aggregator = RoundAggregator::new(&Strategy::FedAvg, 2, None).unwrap();
    aggregator.add(&[2.0, 4.0], 1).unwrap();
    let refusals: [(&[f32], u64, &str); 5] = [
        (&[1.0], 1, "update has 1 values, the model has 2"),
        (&[1.0, 2.0, 3.0], 1, "update has 3 values, the model has 2"),
        (&[1.0, f32::NAN], 1, "update value at index 1 is not finite"),
        (
            &[f32::NEG_INFINITY, 0.0],
            1,
            "update value at index 0 is not finite",
        ),
        (&[1.0, 1.0], 0, "num_examples must be at least 1"),
    ];
    for (update, n, message) in refusals {
        let err = aggregator.add(update, n).unwrap_err();
        assert_eq!(err.to_string(), message);
        assert!(!err.is_node_broken());
    }
    assert_eq!(aggregator.updates(), 1);
    let got = aggregator.finish(&[0.0, 0.0], &mut ServerState::default(), &mut rng(1));
    assert_eq!(
        got.unwrap(),
        vec![2.0, 4.0],
        "only the accepted update counts"
    );
}

#[test]
fn refusal_kinds() {
    let mut aggregator = RoundAggregator::new(&Strategy::FedAvg, 2, None).unwrap();
    assert!(matches!(
        aggregator.add(&[0.0, f32::INFINITY], 3),
        Err(AggregationError::NonFinite {
            what: "update",
            index: 1
        })
    ));
    assert!(matches!(
        aggregator.add(&[0.0], 3),
        Err(AggregationError::WrongLength {
            what: "update",
            expected: 2,
            actual: 1
        })
    ));
}

#[test]
fn streaming_holds_one_sum_whatever_the_number_of_updates() {
    let dim = 1000;
    let mut aggregator = RoundAggregator::new(&Strategy::FedAvg, dim, None).unwrap();
    let update: Vec<f32> = (0..dim).map(|j| j as f32).collect();
    for n in 1..=200 {
        aggregator.add(&update, n).unwrap();
        assert_eq!(aggregator.held_values(), dim);
    }
    let got = aggregator.finish(&vec![0.0; dim], &mut ServerState::default(), &mut rng(1));
    assert_eq!(
        got.unwrap(),
        update,
        "the weighted mean of identical updates is that update"
    );
}

#[test]
fn finish_needs_updates_and_a_matching_global_model() {
    let empty = RoundAggregator::new(&Strategy::FedAvg, 2, None).unwrap();
    let err = empty.finish(&[0.0, 0.0], &mut ServerState::default(), &mut rng(1));
    assert!(matches!(err, Err(AggregationError::NoUpdates)));

    let mut one = RoundAggregator::new(&Strategy::FedAvg, 2, None).unwrap();
    one.add(&[1.0, 1.0], 1).unwrap();
    let err = one.finish(&[0.0, 0.0, 0.0], &mut ServerState::default(), &mut rng(1));
    assert!(matches!(
        err,
        Err(AggregationError::WrongLength {
            what: "global model",
            expected: 2,
            actual: 3
        })
    ));
}

#[test]
fn configuration_errors() {
    assert!(matches!(
        RoundAggregator::new(&Strategy::FedAvg, 0, None),
        Err(AggregationError::ZeroDimension)
    ));
    let bad = Strategy::FedTrimmedAvg { beta: 0.7 };
    assert!(matches!(
        RoundAggregator::new(&bad, 3, None),
        Err(AggregationError::InvalidParameter { field: "beta", .. })
    ));
}
