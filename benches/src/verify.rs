//! `verify`: batched ed25519 verification of signed transfers (the path the
//! verify tile runs) against single `verify_strict` calls, the per-core
//! ceiling the brief names.

use ed25519_dalek::SigningKey;
use serde_json::json;
use velox_exec::{verify_batch, verify_one, AccountId, Tx, TxBody, TxBuilder};

use crate::{measure_parallel, BenchOpts, SuiteReport};

const CHAIN: u64 = 1;
const BATCH: usize = 64;

fn signed_txs(n: usize, seed: u64) -> Vec<Tx> {
    (0..n)
        .map(|i| {
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&(seed * 1_000_003 + i as u64).to_le_bytes());
            let key = SigningKey::from_bytes(&k);
            let b = TxBuilder {
                chain_id: CHAIN,
                nonce: i as u64,
                fee: 1,
                body: TxBody::Transfer {
                    to: AccountId([7; 32]),
                    amount: 1,
                },
            };
            Tx::decode(&b.sign(&key)).expect("valid")
        })
        .collect()
}

pub fn run(opts: &BenchOpts) -> SuiteReport {
    let time = opts.measure_time();
    let mut per_cores = Vec::new();
    let (mut best, mut best_base) = (0.0, 0.0);
    for &c in &opts.core_counts {
        let batch = measure_parallel(c, time, BATCH as u64, |i| {
            let txs = signed_txs(BATCH, i as u64);
            move || {
                let r = verify_batch(txs.clone(), CHAIN);
                assert!(r.iter().all(|x| x.is_ok()));
            }
        });
        let single = measure_parallel(c, time, BATCH as u64, |i| {
            let txs = signed_txs(BATCH, i as u64);
            move || {
                for t in &txs {
                    assert!(verify_one(t.clone(), CHAIN).is_ok());
                }
            }
        });
        per_cores.push(
            json!({"cores": c, "batch_ops_per_s": batch.round(), "single_ops_per_s": single.round(),
            "ratio": (batch / single * 1000.0).round() / 1000.0}),
        );
        best = batch;
        best_base = single;
    }
    let mut extra = serde_json::Map::new();
    extra.insert("batch_txs".into(), json!(BATCH));
    extra.insert("per_core_count".into(), json!(per_cores));
    SuiteReport {
        suite: "verify".into(),
        ops_per_s: best,
        baseline: "ed25519-dalek verify_strict, one signature at a time".into(),
        baseline_ops_per_s: best_base,
        extra,
    }
}
