//! FedAvgM: server momentum carried between rounds in [`ServerState`].

use super::*;

const FEDAVGM: Strategy = Strategy::FedAvgM {
    server_learning_rate: 0.5,
    momentum: 0.9,
};

#[test]
fn two_rounds_carry_the_momentum() {
    let mut state = ServerState::default();
    // Round 1: Δ = ([2, 4] + [4, 0]) / 2 = [3, 2]; u = 0.9·0 + [3, 2] = [3, 2]
    //          x = [0, 0] + 0.5·[3, 2] = [1.5, 1]
    let r1: [(&[f32], u64); 2] = [(&[2.0, 4.0], 1), (&[4.0, 0.0], 1)];
    let x1 = round(&FEDAVGM, None, &r1, &[0.0, 0.0], &mut state).unwrap();
    assert_eq!(x1, vec![1.5, 1.0]);
    assert_eq!(state.momentum, vec![3.0, 2.0]);
    assert_eq!(state.steps, 1);

    // Round 2: Δ = (3·[1, −1] + 1·[5, 3]) / 4 = [8, 0] / 4 = [2, 0]
    //          u = 0.9·[3, 2] + [2, 0] = [4.7, 1.8]
    //          x = [1.5, 1] + 0.5·[4.7, 1.8] = [3.85, 1.9]
    let r2: [(&[f32], u64); 2] = [(&[1.0, -1.0], 3), (&[5.0, 3.0], 1)];
    let x2 = round(&FEDAVGM, None, &r2, &x1, &mut state).unwrap();
    assert_close(&x2, &[3.85, 1.9], 1e-6);
    assert_close(&state.momentum, &[4.7, 1.8], 1e-6);
    assert_eq!(state.steps, 2);
    assert!(state.m.is_empty() && state.v.is_empty());
}

#[test]
fn zero_momentum_and_unit_rate_is_fedavg() {
    let plain = Strategy::FedAvgM {
        server_learning_rate: 1.0,
        momentum: 0.0,
    };
    let updates: [(&[f32], u64); 2] = [(&[1.0, 3.0], 1), (&[3.0, 5.0], 3)];
    // (1·[1, 3] + 3·[3, 5]) / 4 = [10, 18] / 4 = [2.5, 4.5]
    let got = round(
        &plain,
        None,
        &updates,
        &[1.0, 1.0],
        &mut ServerState::default(),
    )
    .unwrap();
    assert_eq!(got, vec![3.5, 5.5]);
    assert_eq!(got, run(&Strategy::FedAvg, &updates, &[1.0, 1.0]));
}

#[test]
fn state_survives_a_blob_round_trip_between_rounds() {
    let r1: [(&[f32], u64); 1] = [(&[1.0, -1.0], 1)];
    let r2: [(&[f32], u64); 1] = [(&[0.5, 2.0], 1)];
    let mut kept = ServerState::default();
    let x1 = round(&FEDAVGM, None, &r1, &[0.0, 0.0], &mut kept).unwrap();
    let mut restored = ServerState::from_bytes(&kept.to_bytes()).unwrap();
    let a = round(&FEDAVGM, None, &r2, &x1, &mut kept).unwrap();
    let b = round(&FEDAVGM, None, &r2, &x1, &mut restored).unwrap();
    assert_eq!(a, b);
    assert_eq!(kept, restored);
}
