//! Consensus core throughput: blocks per second one `Core` accepts and
//! orders on one core (signature check, DAG insert, commit rule,
//! linearizer, plus signing its own block each round).
//!
//! Run: `cargo bench -p velox-benches --features criterion --bench consensus -- --measurement-time 3`
//!
//! Blocks of validators 1..n are pre-generated and signed: each round-r block
//! references every round-(r-1) block of validators 1..n. The measured core
//! is validator 0; nobody references its blocks, so its leader slots are
//! skipped and the others committed.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ed25519_dalek::SigningKey;
use velox_dag::{
    Block, BlockRef, Committee, Core, CoreConfig, Digest, Ed25519Verifier, Epoch, Output, Round,
    SignatureVerifier, Time, UnsignedBlock, ValidatorIndex,
};

/// Accepts every signature: isolates the DAG, commit rule and linearizer
/// cost from ed25519 (as when a verify tile checked signatures upstream).
struct PreVerified;

impl SignatureVerifier for PreVerified {
    fn verify(&self, _: &ed25519_dalek::VerifyingKey, _: &Digest, _: &[u8; 64]) -> bool {
        true
    }
}

/// Rounds pre-generated per committee size (~1000 blocks per iteration).
fn rounds_for(n: usize) -> u64 {
    (1000 / (n as u64 - 1)).max(20)
}

/// Simulated ms between rounds fed to the core (above `min_round_delay_ms`).
const ROUND_MS: u64 = 20;

fn generate(n: usize, rounds: u64) -> (Arc<Committee>, Vec<SigningKey>, Vec<(Time, Block)>) {
    let (c, keys) = Committee::new_for_test(Epoch(0), n, 5);
    let mut out = Vec::new();
    let mut prev: Vec<BlockRef> = Vec::new();
    for r in 1..=rounds {
        let mut this = Vec::new();
        for v in 1..n as u32 {
            let b = UnsignedBlock {
                epoch: Epoch(0),
                author: ValidatorIndex(v),
                round: Round(r),
                parents: prev.clone(),
                payload: vec![Digest([v as u8; 32]); 4],
                timestamp_ms: r * ROUND_MS,
            }
            .sign(&keys[v as usize]);
            this.push(b.reference());
            out.push((Time(r * ROUND_MS), b));
        }
        prev = this;
    }
    (Arc::new(c), keys, out)
}

fn feed(
    c: &Arc<Committee>,
    key: &SigningKey,
    blocks: Vec<(Time, Block)>,
    verifier: Box<dyn SignatureVerifier>,
) -> u64 {
    let mut core = Core::new(
        CoreConfig::default(),
        c.clone(),
        ValidatorIndex(0),
        key.clone(),
        verifier,
        Time(0),
    );
    let mut commits = 0;
    for (t, b) in blocks {
        let from = b.author();
        core.handle_block(t, b, from).expect("valid block");
        core.handle_timeout(t);
        while let Some(o) = core.poll_output() {
            if let Output::Committed(s) = o {
                commits += s.blocks.len() as u64;
            }
        }
    }
    commits
}

fn bench(cr: &mut Criterion) {
    let mut g = cr.benchmark_group("consensus_core");
    g.sample_size(10);
    for n in [4usize, 10, 50] {
        let rounds = rounds_for(n);
        let (c, keys, blocks) = generate(n, rounds);
        // Sanity: the core orders most of what it receives.
        let ordered = feed(&c, &keys[0], blocks.clone(), Box::new(Ed25519Verifier));
        assert!(
            ordered as usize > blocks.len() / 2,
            "n={n}: ordered {ordered}"
        );
        g.throughput(Throughput::Elements(blocks.len() as u64));
        g.bench_function(format!("accept_and_order/n={n}"), |b| {
            b.iter_batched(
                || blocks.clone(),
                |blocks| feed(&c, &keys[0], blocks, Box::new(Ed25519Verifier)),
                BatchSize::LargeInput,
            )
        });
        g.bench_function(format!("order_only_preverified/n={n}"), |b| {
            b.iter_batched(
                || blocks.clone(),
                |blocks| feed(&c, &keys[0], blocks, Box::new(PreVerified)),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
