//! `verify`: the chain's signature rule (`velox_exec::sig`, ZIP-215 with the
//! key rule) on signed transfers, batched as the verify tile runs it,
//! against the same rule one signature at a time. ed25519-dalek's
//! `verify_strict` and `verify_batch` (the paths before the rule, whose
//! answers differ from it on crafted signatures) are measured in the same
//! run for comparison only.

use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
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

fn dalek_parts(txs: &[Tx]) -> Vec<([u8; 32], [u8; 32], Signature)> {
    txs.iter()
        .map(|t| {
            (
                t.sender().0,
                t.digest().0,
                Signature::from_bytes(t.signature()),
            )
        })
        .collect()
}

/// R: signed transfers verified per second with the chain's rule, batched
/// as the verify tile runs it, on `cores` threads for about `time` (what
/// `velox devnet` reports beside its figures, measured before it starts).
pub fn batch_rate(cores: usize, time: std::time::Duration) -> f64 {
    measure_parallel(cores.max(1), time, BATCH as u64, |i| {
        let txs = signed_txs(BATCH, i as u64);
        move || {
            let r = verify_batch(txs.clone(), CHAIN);
            assert!(r.iter().all(|x| x.is_ok()));
        }
    })
}

pub fn run(opts: &BenchOpts) -> SuiteReport {
    let time = opts.measure_time();
    let mut per_cores = Vec::new();
    let (mut best, mut best_base) = (0.0, 0.0);
    for &c in &opts.core_counts {
        let batch = batch_rate(c, time);
        let single = measure_parallel(c, time, BATCH as u64, |i| {
            let txs = signed_txs(BATCH, i as u64);
            move || {
                for t in &txs {
                    assert!(verify_one(t.clone(), CHAIN).is_ok());
                }
            }
        });
        // The previous paths, for comparison in the same run. Each decodes
        // the sender's key per transaction inside the timed loop, as the
        // node's previous path did (and as the rule's path does).
        let dalek_strict = measure_parallel(c, time, BATCH as u64, |i| {
            let parts = dalek_parts(&signed_txs(BATCH, i as u64));
            move || {
                for (k, m, s) in &parts {
                    let k = VerifyingKey::from_bytes(k).expect("valid key");
                    assert!(k.verify_strict(m, s).is_ok());
                }
            }
        });
        let dalek_batch = measure_parallel(c, time, BATCH as u64, |i| {
            let parts = dalek_parts(&signed_txs(BATCH, i as u64));
            move || {
                let keys: Vec<VerifyingKey> = parts
                    .iter()
                    .map(|p| VerifyingKey::from_bytes(&p.0).expect("valid key"))
                    .collect();
                let msgs: Vec<&[u8]> = parts.iter().map(|p| &p.1[..]).collect();
                let sigs: Vec<Signature> = parts.iter().map(|p| p.2).collect();
                assert!(ed25519_dalek::verify_batch(&msgs, &sigs, &keys).is_ok());
            }
        });
        per_cores.push(json!({
            "cores": c,
            "batch_ops_per_s": batch.round(),
            "single_ops_per_s": single.round(),
            "ratio": (batch / single * 1000.0).round() / 1000.0,
            "dalek_verify_strict_ops_per_s": dalek_strict.round(),
            "dalek_verify_batch_ops_per_s": dalek_batch.round(),
        }));
        best = batch;
        best_base = single;
    }
    let mut extra = serde_json::Map::new();
    extra.insert("batch_txs".into(), json!(BATCH));
    extra.insert("backend".into(), json!(velox_exec::sig::backend()));
    extra.insert("verify_backend".into(), json!(velox_exec::sig::backend()));
    extra.insert(
        "rule".into(),
        json!("ZIP-215 (cofactored) with canonical, large-order keys; docs/protocol.md"),
    );
    extra.insert("per_core_count".into(), json!(per_cores));
    SuiteReport {
        suite: "verify".into(),
        ops_per_s: best,
        baseline: "the chain's rule, one signature at a time (velox_exec::verify_one)".into(),
        baseline_ops_per_s: best_base,
        extra,
    }
}
