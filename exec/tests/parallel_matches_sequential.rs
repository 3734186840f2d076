//! The parallel executor against the sequential oracle (STYLE.md §8).
//!
//! Random blocks of real ed25519-signed transactions (signed once, cached and
//! reused across cases) over a small key set (to force conflicts) and a large
//! one, including transactions that fail (bad nonce, insufficient balance,
//! balance and counter overflow). Each block runs sequentially once and in
//! parallel several times with 1, 2, 4 and 8 workers; receipts, diff and root
//! must be identical every time.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Mutex, OnceLock};

use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use velox_exec::parallel::ADAPTIVE_SETTLE_SAMPLES;
use velox_exec::{
    execute_parallel, execute_sequential, verify_one, AccountId, BlockOutput, ExecConfig,
    ExecContext, ExecPath, ParallelExecutor, SequentialReason, State, Tx, TxBody, TxBuilder,
    VerifiedTx,
};

const CHAIN: u64 = 3;
const WORKER_COUNTS: [usize; 4] = [1, 2, 4, 8];
/// Parallel runs per worker count and block.
const REPEATS: usize = if cfg!(debug_assertions) { 1 } else { 3 };

fn signing_key(set: u8, i: u32) -> SigningKey {
    let mut b = [0x5eu8; 32];
    b[0] = set;
    b[1..5].copy_from_slice(&i.to_le_bytes());
    SigningKey::from_bytes(&b)
}

/// Account ids by (set, index), derived once.
fn account(set: u8, i: u32) -> AccountId {
    static IDS: OnceLock<Mutex<HashMap<(u8, u32), AccountId>>> = OnceLock::new();
    let ids = IDS.get_or_init(Default::default);
    *ids.lock()
        .unwrap()
        .entry((set, i))
        .or_insert_with(|| AccountId(signing_key(set, i).verifying_key().to_bytes()))
}

/// Signs and verifies once per distinct transaction; later uses clone.
fn signed(set: u8, sender: u32, nonce: u64, fee: u64, body: TxBody) -> VerifiedTx {
    type Cache = Mutex<HashMap<(u8, u32, u64, u64, [u8; 48]), VerifiedTx>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let mut body_key = [0u8; 48];
    match body {
        TxBody::Transfer { to, amount } => {
            body_key[..32].copy_from_slice(&to.0);
            body_key[32..40].copy_from_slice(&amount.to_le_bytes());
        }
        TxBody::KvAdd { key, delta } => {
            body_key[..32].copy_from_slice(&key);
            body_key[32..40].copy_from_slice(&delta.to_le_bytes());
            body_key[40] = 1;
        }
        TxBody::Opaque { len } => {
            body_key[..4].copy_from_slice(&len.to_le_bytes());
            body_key[40] = 2;
        }
        TxBody::GenesisAlloc { .. } => unreachable!(),
    }
    let cache = CACHE.get_or_init(Default::default);
    if let Some(tx) = cache
        .lock()
        .unwrap()
        .get(&(set, sender, nonce, fee, body_key))
    {
        return tx.clone();
    }
    let b = TxBuilder {
        chain_id: CHAIN,
        nonce,
        fee,
        body,
    };
    let tx = verify_one(
        Tx::decode(&b.sign(&signing_key(set, sender))).unwrap(),
        CHAIN,
    )
    .unwrap();
    cache
        .lock()
        .unwrap()
        .insert((set, sender, nonce, fee, body_key), tx.clone());
    tx
}

fn genesis_tx(to: AccountId, amount: u64) -> VerifiedTx {
    VerifiedTx::genesis_alloc(CHAIN, to, amount)
}

fn state_with(allocs: &[(AccountId, u64)]) -> State {
    let mut s = State::new();
    let txs: Vec<_> = allocs.iter().map(|&(a, v)| genesis_tx(a, v)).collect();
    let out = execute_sequential(&mut s, &txs, ExecContext { genesis: true });
    assert_eq!(out.accepted(), txs.len());
    s
}

fn forced(workers: usize) -> ParallelExecutor {
    ParallelExecutor::new(ExecConfig {
        exec_workers: workers,
        parallel_min_txs: 1,
        hot_key_share_max: f64::INFINITY,
        pin_workers: false,
        worker_cores: Vec::new(),
        parallel_with_one_worker: true,
        adaptive_probe_every_blocks: 0,
        reexecutions_per_tx_max: 1_000,
    })
}

/// Runs `txs` on the oracle and on the parallel executor with every worker
/// count, several times, and requires identical outputs and post-states.
/// Returns the (re-executions, validation failures, dependency waits) seen.
fn check_block(
    base: &State,
    txs: &[VerifiedTx],
    ctx: ExecContext,
) -> Result<(u64, u64, u64), TestCaseError> {
    let mut conflicts = (0, 0, 0);
    let mut seq_state = base.clone();
    let expected: BlockOutput = execute_sequential(&mut seq_state, txs, ctx);
    prop_assert_eq!(expected.root, seq_state.recompute_root());
    for workers in WORKER_COUNTS {
        let exec = forced(workers);
        for rep in 0..REPEATS {
            let mut st = base.clone();
            let (out, path) = exec.execute_with_path(&mut st, txs, ctx);
            prop_assert_eq!(
                path,
                ExecPath::Parallel {
                    workers: workers.min(txs.len())
                },
                "workers {} rep {}",
                workers,
                rep
            );
            prop_assert_eq!(
                &out.receipts,
                &expected.receipts,
                "receipts, workers {} rep {}",
                workers,
                rep
            );
            prop_assert_eq!(
                &out.diff,
                &expected.diff,
                "diff, workers {} rep {}",
                workers,
                rep
            );
            prop_assert_eq!(
                out.root,
                expected.root,
                "root, workers {} rep {}",
                workers,
                rep
            );
            prop_assert_eq!(st.root(), st.recompute_root());
            prop_assert_eq!(st.len(), seq_state.len());
        }
        let m = &exec.metrics;
        conflicts.0 += m.reexecutions.load(Relaxed);
        conflicts.1 += m.validation_failures.load(Relaxed);
        conflicts.2 += m.dependency_waits.load(Relaxed);
    }
    Ok(conflicts)
}

// ---- Small key set: 6 senders, one hot recipient, three shared counters.

const SMALL: u8 = 1;
const SMALL_SENDERS: u32 = 6;
const HOT: u32 = 6;
const SMALL_VARIANTS: u8 = 8;
const NONCE_MAX: u64 = 400;

fn small_state() -> State {
    state_with(&[
        (account(SMALL, 0), u64::MAX - 5_000), // receiving too much overflows
        (account(SMALL, 1), 1_000_000),
        (account(SMALL, 2), 1_000_000),
        (account(SMALL, 3), 1_000_000),
        (account(SMALL, 4), 1_000_000),
        (account(SMALL, 5), 50), // poor: insufficient balance soon
        (account(SMALL, HOT), u64::MAX - 100),
    ])
}

fn small_tx(s: u32, nonce: u64, variant: u8) -> VerifiedTx {
    let n = nonce;
    let (fee, body) = match variant {
        0 => (
            1,
            TxBody::Transfer {
                to: account(SMALL, HOT),
                amount: 1 + n % 7,
            },
        ),
        1 => (
            1,
            TxBody::Transfer {
                to: account(SMALL, (s + 1 + n as u32) % SMALL_SENDERS),
                amount: 10 + n % 13,
            },
        ),
        2 => (
            2,
            TxBody::Transfer {
                to: account(SMALL, (s + 2) % SMALL_SENDERS),
                amount: 900_000,
            },
        ),
        3 => (
            1,
            TxBody::KvAdd {
                key: [0xaa; 32],
                delta: n + 1,
            },
        ),
        4 => (
            1,
            TxBody::KvAdd {
                key: [0xbb; 32],
                delta: u64::MAX / 3,
            },
        ),
        5 => (
            3,
            TxBody::Transfer {
                to: account(SMALL, s),
                amount: 5,
            },
        ),
        6 => (
            1,
            TxBody::Transfer {
                to: account(SMALL, 1_000 + s * 1_000 + n as u32 % 50),
                amount: 2,
            },
        ),
        7 => (
            1 + n % 2,
            TxBody::Opaque {
                len: 100 + (n % 3) as u32,
            },
        ),
        _ => (
            0,
            TxBody::KvAdd {
                key: [0xcc; 32],
                delta: 0,
            },
        ),
    };
    signed(SMALL, s, nonce, fee, body)
}

/// Turns (sender, variant, nonce skew) choices into a block: skew 0 uses the
/// sender's next nonce (as if every earlier one were accepted), others make
/// stale or future nonces.
fn small_block(ops: &[(u32, u8, u8)]) -> Vec<VerifiedTx> {
    let mut next = [0u64; SMALL_SENDERS as usize];
    ops.iter()
        .map(|&(s, v, skew)| {
            let issued = &mut next[s as usize];
            let nonce = match skew {
                0..=5 => {
                    *issued += 1;
                    *issued - 1
                }
                6 => issued.saturating_sub(1),
                _ => *issued + 1,
            }
            .min(NONCE_MAX);
            small_tx(s, nonce, v)
        })
        .collect()
}

// ---- Large key set: 512 senders with a few transactions each, 64 counters.

const LARGE: u8 = 2;
const LARGE_SENDERS: u32 = 512;

fn large_state() -> &'static State {
    static S: OnceLock<State> = OnceLock::new();
    S.get_or_init(|| {
        let allocs: Vec<_> = (0..LARGE_SENDERS)
            .map(|i| (account(LARGE, i), 200 + u64::from(i % 7) * 100))
            .collect();
        state_with(&allocs)
    })
}

fn large_block(ops: &[(u32, u32, u8)]) -> Vec<VerifiedTx> {
    let mut next = vec![0u64; LARGE_SENDERS as usize];
    ops.iter()
        .map(|&(s, target, kind)| {
            let nonce = next[s as usize].min(3);
            next[s as usize] += 1;
            let (fee, body) = if kind < 3 {
                (
                    1,
                    TxBody::Transfer {
                        to: account(LARGE, target),
                        amount: 40 + u64::from(kind) * 30,
                    },
                )
            } else {
                let mut key = [0x11u8; 32];
                key[0] = (target % 64) as u8;
                (
                    1,
                    TxBody::KvAdd {
                        key,
                        delta: u64::from(target),
                    },
                )
            };
            signed(LARGE, s, nonce, fee, body)
        })
        .collect()
}

/// Cases per property: `release` in release builds, a quarter in debug;
/// `VELOX_EXEC_CASES=N` overrides both (for longer sweeps).
fn cases(release: u32) -> ProptestConfig {
    let n = match std::env::var("VELOX_EXEC_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(n) => n,
        None if cfg!(debug_assertions) => (release / 4).max(2),
        None => release,
    };
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn max_len(release: usize) -> usize {
    if cfg!(debug_assertions) {
        release / 4
    } else {
        release
    }
}

proptest! {
    #![proptest_config(cases(24))]

    #[test]
    fn small_key_set_matches_sequential(
        ops in prop::collection::vec((0..SMALL_SENDERS, 0..SMALL_VARIANTS, 0u8..8), 1..max_len(2_000)),
    ) {
        let txs = small_block(&ops);
        let c = check_block(&small_state(), &txs, ExecContext { genesis: false })?;
        if std::env::var_os("VELOX_EXEC_TEST_VERBOSE").is_some() {
            eprintln!("{} txs: {c:?}", txs.len());
        }
    }

    #[test]
    fn large_key_set_matches_sequential(
        ops in prop::collection::vec((0..LARGE_SENDERS, 0..LARGE_SENDERS, 0u8..4), 1..max_len(3_000)),
    ) {
        let txs = large_block(&ops);
        let c = check_block(large_state(), &txs, ExecContext { genesis: false })?;
        if std::env::var_os("VELOX_EXEC_TEST_VERBOSE").is_some() {
            eprintln!("{} txs: {c:?}", txs.len());
        }
    }

    #[test]
    fn genesis_blocks_match_sequential(
        allocs in prop::collection::vec((0..8u32, prop_oneof![0..1_000u64, Just(u64::MAX - 10)]), 1..max_len(400)),
    ) {
        let txs: Vec<_> = allocs.iter().map(|&(i, v)| genesis_tx(account(SMALL, i), v)).collect();
        check_block(&State::new(), &txs, ExecContext { genesis: true })?;
        // Outside genesis every allocation is rejected, in parallel too.
        check_block(&State::new(), &txs, ExecContext { genesis: false })?;
    }
}

#[test]
fn one_hot_account_chain_matches_sequential() {
    // Every transaction of one sender, nonces in order: a pure dependency chain.
    let txs: Vec<_> = (0..NONCE_MAX)
        .map(|n| small_tx(1, n, (n % 8) as u8))
        .collect();
    let chain_txs = txs;
    // Everyone pays the same hot account.
    let hot_txs: Vec<_> = (0..LARGE_SENDERS)
        .map(|s| large_block(&[(s, 0, 0)]).remove(0))
        .collect();
    // Both must match every time. On a loaded machine workers may not overlap
    // in a given run (a whole block fits in one time slice), so repeat until
    // some read was stale: the conflict machinery must really have run.
    let mut seen = 0;
    for attempt in 0..50 {
        let chain =
            check_block(&small_state(), &chain_txs, ExecContext { genesis: false }).unwrap();
        let hot = check_block(large_state(), &hot_txs, ExecContext { genesis: false }).unwrap();
        eprintln!("attempt {attempt}: (reexecutions, validation failures, dependency waits): chain {chain:?}, hot {hot:?}");
        seen += chain.0 + hot.0;
        if seen > 0 {
            break;
        }
    }
    assert!(
        seen > 0,
        "no re-execution at all: the test does not exercise conflicts"
    );
}

#[test]
fn fallbacks_are_taken_and_counted() {
    let txs = small_block(
        &(0..600)
            .map(|i| (i % SMALL_SENDERS, 1, 0))
            .collect::<Vec<_>>(),
    );
    let mut expected_state = small_state();
    let expected = execute_sequential(&mut expected_state, &txs, ExecContext { genesis: false });
    let expected_root = expected_state.root();
    let run = |config: ExecConfig| {
        let exec = ParallelExecutor::new(config);
        let mut st = small_state();
        let (out, path) = exec.execute_with_path(&mut st, &txs, ExecContext { genesis: false });
        assert_eq!(out, expected);
        assert_eq!(st.root(), expected_root);
        (path, exec)
    };
    let base = ExecConfig {
        exec_workers: 2,
        pin_workers: false,
        ..ExecConfig::default()
    };

    let (path, exec) = run(ExecConfig {
        parallel_min_txs: 601,
        ..base.clone()
    });
    assert_eq!(path, ExecPath::Sequential(SequentialReason::SmallBlock));
    assert_eq!(exec.metrics.sequential(SequentialReason::SmallBlock), 1);
    assert_eq!(
        exec.metrics
            .executions
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    // Six senders share 600 transactions: 1/6 of the block on each key.
    let (path, exec) = run(ExecConfig {
        parallel_min_txs: 1,
        hot_key_share_max: 0.1,
        ..base.clone()
    });
    assert_eq!(path, ExecPath::Sequential(SequentialReason::HotKey));
    assert_eq!(exec.metrics.sequential(SequentialReason::HotKey), 1);

    let (path, _) = run(ExecConfig {
        parallel_min_txs: 1,
        exec_workers: 1,
        ..base.clone()
    });
    assert_eq!(path, ExecPath::Sequential(SequentialReason::SingleWorker));

    let (path, exec) = run(ExecConfig {
        parallel_min_txs: 1,
        hot_key_share_max: 1.0,
        reexecutions_per_tx_max: 0,
        ..base.clone()
    });
    assert_eq!(
        path,
        ExecPath::Sequential(SequentialReason::ReexecutionBudget)
    );
    assert_eq!(exec.metrics.sequential_total(), 1);
    assert_eq!(
        exec.metrics
            .parallel_blocks
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    let (path, exec) = run(ExecConfig {
        parallel_min_txs: 1,
        hot_key_share_max: 1.0,
        ..base.clone()
    });
    assert_eq!(path, ExecPath::Parallel { workers: 2 });
    let m = &exec.metrics;
    assert_eq!(
        m.parallel_blocks.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert!(m.executions.load(std::sync::atomic::Ordering::Relaxed) >= 600);
    assert!(m.validations.load(std::sync::atomic::Ordering::Relaxed) >= 600);
    assert_eq!(
        m.block_exec_count
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert!(
        m.block_exec_ns_sum
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );

    // The free function is the same executor.
    let mut st = small_state();
    assert_eq!(
        execute_parallel(&mut st, &txs, ExecContext { genesis: false }, &exec),
        expected
    );
}

#[test]
fn empty_block() {
    let mut st = small_state();
    let root = st.root();
    let out = forced(4).execute(&mut st, &[], ExecContext { genesis: false });
    assert!(out.receipts.is_empty() && out.diff.entries.is_empty());
    assert_eq!(out.root, root);
}

#[test]
fn adaptive_guard_measures_both_paths_and_probes() {
    let txs = small_block(
        &(0..600)
            .map(|i| (i % SMALL_SENDERS, 1, 0))
            .collect::<Vec<_>>(),
    );
    let mut expected_state = small_state();
    let expected = execute_sequential(&mut expected_state, &txs, ExecContext { genesis: false });
    let exec = ParallelExecutor::new(ExecConfig {
        exec_workers: 2,
        parallel_min_txs: 1,
        hot_key_share_max: 1.0,
        pin_workers: false,
        adaptive_probe_every_blocks: 4,
        ..ExecConfig::default()
    });
    let mut paths = Vec::new();
    for _ in 0..16 {
        let mut st = small_state();
        let (out, path) = exec.execute_with_path(&mut st, &txs, ExecContext { genesis: false });
        assert_eq!(out, expected);
        paths.push(path);
    }
    // First the paths alternate until each is timed on
    // ADAPTIVE_SETTLE_SAMPLES blocks, parallel first (the first parallel
    // block starts the worker pool and is not timed, so it takes one more);
    // after that the cheaper path runs, and every 4th block the other.
    let par = ExecPath::Parallel { workers: 2 };
    let seq = ExecPath::Sequential(SequentialReason::Adaptive);
    let settle = 1 + 2 * ADAPTIVE_SETTLE_SAMPLES;
    let mut want = vec![par];
    for _ in 0..ADAPTIVE_SETTLE_SAMPLES {
        want.extend([par, seq]);
    }
    assert_eq!(&paths[..settle], &want[..]);
    assert!(paths[settle..].contains(&par));
    assert!(paths[settle..].contains(&seq));
    let m = &exec.metrics;
    assert!(m.seq_ns_per_tx.load(Relaxed) > 0 && m.par_ns_per_tx.load(Relaxed) > 0);
    assert_eq!(
        m.parallel_blocks.load(Relaxed) + m.sequential(SequentialReason::Adaptive),
        16
    );
}
