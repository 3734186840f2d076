//! Unit tests per handler of [`ConsensusNode`], and small clusters of
//! machines wired together in memory.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ed25519_dalek::VerifyingKey;

use velox_exec::{AccountId, Tx, TxBody, TxBuilder, VerifiedTx};
use velox_mempool::batch::{batch_digest, encode_batch, BatchOrigin};
use velox_net::peer::{check_limits, Dest, PeerMessage, WireLimits};

use super::*;
use crate::block::{Ed25519Verifier, UnsignedBlock};
use crate::types::Epoch;

/// The store a machine reads, written by the harness from `Persist`
/// intents (shared between the harness and the machine).
#[derive(Clone, Default)]
struct MemStore(Arc<Mutex<MemInner>>);

#[derive(Default)]
struct MemInner {
    blocks: BTreeMap<[u8; DAG_KEY_LEN], Vec<u8>>,
    batches: HashMap<BatchDigest, Vec<u8>>,
    writes: usize,
    /// Batch lookups by the machine.
    batch_reads: usize,
}

impl MemStore {
    fn write(&self, blocks: &[([u8; DAG_KEY_LEN], Vec<u8>)], batches: &[(BatchDigest, Arc<[u8]>)]) {
        let mut g = self.0.lock().unwrap();
        g.writes += 1;
        for (k, b) in blocks {
            g.blocks.insert(*k, b.clone());
        }
        for (d, b) in batches {
            g.batches.insert(*d, b.to_vec());
        }
    }
    fn has_batch(&self, d: &BatchDigest) -> bool {
        self.0.lock().unwrap().batches.contains_key(d)
    }
    fn blocks(&self) -> usize {
        self.0.lock().unwrap().blocks.len()
    }
}

impl NodeStore for MemStore {
    fn batch(&self, d: &BatchDigest) -> Option<Vec<u8>> {
        let mut g = self.0.lock().unwrap();
        g.batch_reads += 1;
        g.batches.get(d).cloned()
    }
    fn block(&self, key: &[u8; DAG_KEY_LEN]) -> Option<Vec<u8>> {
        self.0.lock().unwrap().blocks.get(key).cloned()
    }
    fn latest_block_by(&self, author: ValidatorIndex) -> Option<Vec<u8>> {
        let g = self.0.lock().unwrap();
        g.blocks
            .iter()
            .rev()
            .find(|(k, _)| k[8..12] == author.0.to_be_bytes())
            .map(|(_, b)| b.clone())
    }
    fn blocks_in_rounds(
        &self,
        from: u64,
        to: u64,
        each: &mut dyn FnMut(&[u8]),
    ) -> Result<(), String> {
        let g = self.0.lock().unwrap();
        for (k, b) in &g.blocks {
            let r = u64::from_be_bytes(k[..8].try_into().unwrap());
            if (from..=to).contains(&r) {
                each(b);
            }
        }
        Ok(())
    }
}

/// Trusts what decodes, except transactions with fee 666 (the tests'
/// "invalid signature"); counts the transactions it checked.
#[derive(Clone, Default)]
struct Trusting(Arc<AtomicUsize>);

const BAD_FEE: u64 = 666;

impl TxChecker for Trusting {
    fn check(&self, txs: Vec<&[u8]>) -> Vec<Option<VerifiedTx>> {
        self.0.fetch_add(txs.len(), Ordering::Relaxed);
        txs.into_iter()
            .map(|b| {
                Tx::decode(b)
                    .ok()
                    .filter(|t| t.fee() != BAD_FEE)
                    .map(VerifiedTx::from_trusted)
            })
            .collect()
    }
}

/// The real block signature check, counting how often each block digest
/// was verified (core and machine share one count per node).
#[derive(Clone, Default)]
struct Counting(Arc<Mutex<HashMap<Digest, u32>>>);

impl SignatureVerifier for Counting {
    fn verify(&self, key: &VerifyingKey, digest: &Digest, signature: &[u8; 64]) -> bool {
        *self.0.lock().unwrap().entry(*digest).or_default() += 1;
        Ed25519Verifier.verify(key, digest, signature)
    }
}

fn tx(sender: u8, nonce: u64, fee: u64) -> VerifiedTx {
    let b = TxBuilder {
        chain_id: 1,
        nonce,
        fee,
        body: TxBody::Transfer {
            to: AccountId([9; 32]),
            amount: 1,
        },
    };
    let bytes = b.encode_with_zero_signature(AccountId([sender; 32]));
    VerifiedTx::from_trusted(Tx::decode(&bytes).unwrap())
}

fn txs(sender: u8, n: u64) -> Vec<VerifiedTx> {
    (0..n).map(|i| tx(sender, i, 1)).collect()
}

fn config() -> NodeConfig {
    NodeConfig {
        core: CoreConfig {
            min_round_delay_ms: 10,
            ..CoreConfig::default()
        },
        batch_txs_max: 4,
        batch_age_ms: 20,
        batch_resend_ms: 500,
        batch_fetch_retry_ms: 100,
        batches_held_max: 64,
        batch_available_timeout_ms: 2_000,
    }
}

/// A batch authored by validator `author`, as its machine would seal it.
fn peer_batch(author: u32, nonce: u64, txs: &[VerifiedTx]) -> Vec<u8> {
    encode_batch(BatchOrigin { author, nonce }, txs.iter().map(|t| t.bytes()))
}

/// `n` machines (stakes given) wired through an in-memory network that
/// delivers in order, with a filter that may drop messages.
struct Cluster {
    nodes: Vec<ConsensusNode>,
    stores: Vec<MemStore>,
    now: Time,
    wire: VecDeque<(u32, u32, PeerMessage)>,
    /// Dropped when it returns false: (from, to, message).
    #[allow(clippy::type_complexity)]
    pass: Box<dyn FnMut(u32, u32, &PeerMessage) -> bool>,
    delivered: Vec<Vec<ReadyCommit>>,
    returned: Vec<Vec<(AccountId, velox_exec::TxDigest)>>,
    /// Every intent kind in order, per node: 'P'ersist, 'S'end, 'R'eturn.
    trace: Vec<String>,
    /// Per node: transactions checked, block verifications by digest.
    checked: Vec<Trusting>,
    verified: Vec<Counting>,
    keys: Vec<ed25519_dalek::SigningKey>,
}

impl Cluster {
    fn new(stakes: &[u64], config: NodeConfig) -> Cluster {
        let (committee, keys) = Committee::new_for_test_with_stakes(Epoch(0), stakes, 7);
        let committee = Arc::new(committee);
        let now = Time(1_000);
        let mut nodes = Vec::new();
        let mut stores = Vec::new();
        let mut checked = Vec::new();
        let mut verified = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let counting = Counting::default();
            let trusting = Trusting::default();
            let core = Core::new(
                config.core,
                committee.clone(),
                ValidatorIndex(i as u32),
                key.clone(),
                Box::new(counting.clone()),
                now,
            );
            let store = MemStore::default();
            let mut node = ConsensusNode::new(
                core,
                config,
                Box::new(store.clone()),
                Box::new(counting.clone()),
                0,
                (i as u64) << 32,
            )
            .with_invariant_checks(true);
            node.start(now);
            nodes.push(node);
            stores.push(store);
            checked.push(trusting);
            verified.push(counting);
        }
        let n = nodes.len();
        Cluster {
            nodes,
            stores,
            now,
            wire: VecDeque::new(),
            pass: Box::new(|_, _, _| true),
            delivered: (0..n).map(|_| Vec::new()).collect(),
            returned: (0..n).map(|_| Vec::new()).collect(),
            trace: vec![String::new(); n],
            checked,
            verified,
            keys,
        }
    }

    /// Carries out every node's intents, then delivers the wire, until
    /// nothing moves.
    fn settle(&mut self) {
        loop {
            for i in 0..self.nodes.len() {
                self.drain(i);
            }
            let Some((from, to, msg)) = self.wire.pop_front() else {
                break;
            };
            if (self.pass)(from, to, &msg) {
                self.nodes[to as usize].handle_peer(self.now, from, msg);
            }
        }
    }

    fn drain(&mut self, i: usize) {
        while let Some(intent) = self.nodes[i].poll_intent() {
            match intent {
                Intent::Persist {
                    blocks,
                    batches,
                    sync,
                    ..
                } => {
                    assert!(sync);
                    self.trace[i].push('P');
                    self.stores[i].write(&blocks, &batches);
                }
                Intent::Send(m) => {
                    self.trace[i].push('S');
                    let limits = WireLimits::default();
                    assert!(check_limits(&m.msg, &limits).is_ok(), "sent within limits");
                    match m.to {
                        Dest::One(to) => self.wire.push_back((i as u32, to, m.msg)),
                        Dest::All => {
                            for to in 0..self.nodes.len() as u32 {
                                if to != i as u32 {
                                    self.wire.push_back((i as u32, to, m.msg.clone()));
                                }
                            }
                        }
                    }
                }
                Intent::ReturnToPool(t) => {
                    self.trace[i].push('R');
                    self.returned[i].extend(t);
                }
                // Answered at once (not traced: checks need no order).
                Intent::Check(r) => self.answer(i, r),
            }
        }
        while let Some(c) = self.nodes[i].poll_commit() {
            self.delivered[i].push(c);
        }
    }

    /// Answers a check request of node `i` with its checker.
    fn answer(&mut self, i: usize, r: CheckRequest) {
        let txs = r.answer(&self.checked[i]);
        self.nodes[i].handle_checked(self.now, r.digest, txs);
    }

    /// The next intent of node `i` must be a check request: answers it.
    fn answer_next_check(&mut self, i: usize) {
        match self.nodes[i].poll_intent() {
            Some(Intent::Check(r)) => self.answer(i, r),
            o => panic!("expected a check, got {o:?}"),
        }
    }

    /// Advances time by `ms` in steps of 5 ms, running timers and the wire.
    fn run_for(&mut self, ms: u64) {
        let end = self.now.plus_ms(ms);
        while self.now < end {
            self.now = self.now.plus_ms(5);
            for i in 0..self.nodes.len() {
                self.nodes[i].handle_timeout(self.now);
            }
            self.settle();
        }
    }

    fn committed_txs(&self, i: usize) -> Vec<velox_exec::TxDigest> {
        self.delivered[i]
            .iter()
            .flat_map(|c| c.txs.iter().map(|t| t.digest()))
            .collect()
    }
}

#[test]
fn a_single_validator_seals_by_size_and_age_and_commits_in_order() {
    let mut c = Cluster::new(&[1], config());
    // Six transactions: one full batch of four at once, two waiting.
    c.nodes[0].handle_local_txs(c.now, txs(1, 6));
    assert_eq!(c.nodes[0].metrics().batches_sealed, 1);
    assert_eq!(c.nodes[0].gauges().sealing_txs, 2);
    c.run_for(10);
    assert_eq!(
        c.nodes[0].metrics().batches_sealed,
        1,
        "younger than the age"
    );
    c.run_for(20);
    assert_eq!(c.nodes[0].metrics().batches_sealed, 2, "sealed by age");
    c.run_for(200);
    let want: Vec<_> = txs(1, 6).iter().map(|t| t.digest()).collect();
    assert_eq!(c.committed_txs(0), want);
    // Indices count up from 1 without gaps; each batch is stored.
    for (i, d) in c.delivered[0].iter().enumerate() {
        assert_eq!(d.index, i as u64 + 1);
        for b in &d.batches {
            assert!(c.stores[0].has_batch(b));
        }
    }
    // A committee of one sends nothing.
    assert!(!c.trace[0].contains('S'));
}

#[test]
fn a_sealed_batch_is_written_before_it_is_sent_and_acknowledged_before_available() {
    let mut c = Cluster::new(&[1, 1, 1, 1], config());
    c.settle();
    c.trace.iter_mut().for_each(String::clear);
    c.nodes[0].handle_local_txs(c.now, txs(1, 4));
    let first = c.nodes[0].poll_intent().unwrap();
    let Intent::Persist { batches, .. } = first else {
        panic!("the write comes first, got {first:?}")
    };
    assert_eq!(batches.len(), 1);
    let d = batches[0].0;
    c.stores[0].write(&[], &batches);
    let Some(Intent::Send(m)) = c.nodes[0].poll_intent() else {
        panic!("then the broadcast")
    };
    assert_eq!(m.to, Dest::All);
    assert!(matches!(m.msg, PeerMessage::Batch(_)));
    assert_eq!(c.nodes[0].gauges().batches_waiting_acks, 1);
    // Peers store it, then acknowledge: every node writes before it sends.
    for to in 1..4 {
        c.nodes[to].handle_peer(c.now, 0, m.msg.clone());
        c.drain(to);
        assert!(c.stores[to].has_batch(&d));
        assert!(c.trace[to].starts_with("PS"), "{}", c.trace[to]);
    }
    // f+1 = 2 of 4: one acknowledgement makes it available, once.
    c.nodes[0].handle_peer(c.now, 1, PeerMessage::BatchAck(d));
    assert_eq!(c.nodes[0].metrics().batches_available, 1);
    c.nodes[0].handle_peer(c.now, 2, PeerMessage::BatchAck(d));
    assert_eq!(c.nodes[0].metrics().batches_available, 1);
    assert_eq!(c.nodes[0].gauges().batches_waiting_acks, 0);
}

#[test]
fn peers_batches_are_checked_once_and_only_from_their_author() {
    let mut c = Cluster::new(&[1, 1, 1, 1], config());
    c.settle();
    let good = peer_batch(1, 5, &txs(3, 2));
    let d = batch_digest(&good);
    assert_eq!(
        c.nodes[0].metrics().peer_penalties,
        0,
        "{:?}",
        c.nodes[0].metrics()
    );
    // From someone else than its author: refused, not acknowledged.
    c.nodes[0].handle_peer(c.now, 2, PeerMessage::Batch(good.clone()));
    assert_eq!(c.nodes[0].metrics().batches_rejected, 1);
    assert_eq!(c.nodes[0].metrics().peer_penalties, 1);
    assert!(c.nodes[0].poll_intent().is_none());
    // From its author: checked by the driver, stored, then acknowledged
    // to it.
    c.nodes[0].handle_peer(c.now, 1, PeerMessage::Batch(good.clone()));
    assert_eq!(c.nodes[0].gauges().batches_checking, 1);
    c.answer_next_check(0);
    assert_eq!(c.nodes[0].gauges().batches_checking, 0);
    assert!(matches!(
        c.nodes[0].poll_intent(),
        Some(Intent::Persist { .. })
    ));
    match c.nodes[0].poll_intent() {
        Some(Intent::Send(m)) => {
            assert_eq!(m.to, Dest::One(1));
            assert_eq!(m.msg, PeerMessage::BatchAck(d));
        }
        o => panic!("{o:?}"),
    }
    // Both were checked (the first refused).
    assert_eq!(c.nodes[0].metrics().batches_received, 2);
    // Resent: acknowledged again without being checked again.
    c.nodes[0].handle_peer(c.now, 1, PeerMessage::Batch(good));
    assert_eq!(c.nodes[0].metrics().batches_received, 2);
    assert!(matches!(c.nodes[0].poll_intent(), Some(Intent::Send(_))));
    // One invalid transaction refuses the whole fresh batch.
    let mut bad_txs = txs(4, 2);
    bad_txs.push(tx(4, 2, BAD_FEE));
    c.nodes[0].handle_peer(c.now, 1, PeerMessage::Batch(peer_batch(1, 6, &bad_txs)));
    c.answer_next_check(0);
    assert_eq!(c.nodes[0].metrics().batches_rejected, 2);
    assert_eq!(c.nodes[0].metrics().txs_invalid_in_batches, 1);
    // Undecodable bytes.
    c.nodes[0].handle_peer(c.now, 1, PeerMessage::Batch(vec![1, 2, 3]));
    assert_eq!(c.nodes[0].metrics().batches_rejected, 3);
    assert!(c.nodes[0].poll_intent().is_none());
}

/// Issue 17, fault 4 (the machine's part): one peer may fill only its
/// share (`batches_held_max / n`) of the held batches; when it is full, the
/// peer's oldest batch nothing waits for leaves memory (it stays in the
/// store), so batches that never commit cannot keep the share full.
#[test]
fn the_held_set_is_bounded_per_peer() {
    let cfg = NodeConfig {
        batches_held_max: 8,
        ..config()
    };
    let mut c = Cluster::new(&[1, 1, 1, 1], cfg);
    c.settle();
    let mut digests = Vec::new();
    for nonce in 0..5 {
        let b = peer_batch(1, nonce, &[tx(5, nonce, 1)]);
        digests.push(batch_digest(&b));
        c.nodes[0].handle_peer(c.now.plus_ms(nonce), 1, PeerMessage::Batch(b));
        c.drain(0);
    }
    assert_eq!(c.nodes[0].gauges().batches_held, 2, "8 / 4 for validator 1");
    assert_eq!(c.nodes[0].gauges().batches_held_pushed, 2);
    assert_eq!(c.nodes[0].metrics().batches_released, 3);
    assert_eq!(c.nodes[0].metrics().batches_refused_full, 0);
    // Released from memory, not from the store.
    for d in &digests {
        assert!(c.stores[0].has_batch(d));
    }
    // Another peer has its own share.
    for nonce in 0..2 {
        let b = peer_batch(2, nonce, &[tx(6, nonce, 1)]);
        c.nodes[0].handle_peer(c.now, 2, PeerMessage::Batch(b));
        c.drain(0);
    }
    assert_eq!(c.nodes[0].gauges().batches_held, 4);
    assert_eq!(c.nodes[0].metrics().batches_released, 3);
}

#[test]
fn messages_from_outside_the_committee_or_from_ourselves_are_penalised() {
    let mut c = Cluster::new(&[1, 1, 1, 1], config());
    c.settle();
    let held_before = c.nodes[0].gauges().batches_held;
    c.nodes[0].handle_peer(c.now, 9, PeerMessage::Batch(peer_batch(9, 0, &txs(1, 1))));
    c.nodes[0].handle_peer(c.now, 0, PeerMessage::BatchRequest(vec![[0; 32]]));
    assert_eq!(c.nodes[0].metrics().peer_penalties, 2);
    assert_eq!(c.nodes[0].gauges().batches_held, held_before);
    assert!(c.nodes[0].poll_intent().is_none());
}

#[test]
fn an_own_batch_not_available_in_time_returns_to_the_pool_once() {
    let mut c = Cluster::new(&[1, 1, 1, 1], config());
    // Nobody acknowledges node 0's batches.
    c.pass = Box::new(|from, _, m| !(from != 0 && matches!(m, PeerMessage::BatchAck(_))));
    c.nodes[0].handle_local_txs(c.now, txs(1, 4));
    c.run_for(1_000);
    // Resent to those that did not acknowledge, after batch_resend_ms.
    assert!(c.nodes[1].metrics().batches_received == 1);
    assert!(c.returned[0].is_empty());
    c.run_for(1_100);
    assert_eq!(c.nodes[0].metrics().batches_abandoned, 1);
    assert_eq!(c.returned[0].len(), 4);
    assert_eq!(c.nodes[0].gauges().own_batches, 0);
    // Late acknowledgements never make it available.
    c.pass = Box::new(|_, _, _| true);
    let d = *c.stores[0].0.lock().unwrap().batches.keys().next().unwrap();
    c.nodes[0].handle_peer(c.now, 1, PeerMessage::BatchAck(d));
    c.nodes[0].handle_peer(c.now, 2, PeerMessage::BatchAck(d));
    assert_eq!(c.nodes[0].metrics().batches_available, 0);
    c.run_for(500);
    assert_eq!(c.returned[0].len(), 4, "returned once");
    assert!(c.committed_txs(0).is_empty());
}

#[test]
fn four_validators_deliver_the_same_commits_with_every_transaction_once() {
    let mut c = Cluster::new(&[1, 1, 1, 1], config());
    for i in 0..4u8 {
        c.nodes[i as usize].handle_local_txs(c.now, txs(i + 1, 6));
    }
    c.run_for(1_500);
    let reference = c.committed_txs(0);
    assert_eq!(reference.len(), 24, "every transaction committed");
    let mut unique = reference.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 24, "each once");
    for i in 1..4 {
        assert_eq!(c.committed_txs(i), reference, "node {i} delivers the same");
        let idx: Vec<u64> = c.delivered[i].iter().map(|d| d.index).collect();
        let want: Vec<u64> = c.delivered[0].iter().map(|d| d.index).collect();
        assert_eq!(idx, want);
    }
    for i in 0..4 {
        assert!(c.stores[i].blocks() > 0);
        assert!(c.trace[i].starts_with('P'), "{}", c.trace[i]);
    }
}

#[test]
fn unequal_stakes_commit_too() {
    let mut c = Cluster::new(&[3, 1, 1, 2, 1], config());
    c.nodes[1].handle_local_txs(c.now, txs(1, 8));
    c.run_for(1_500);
    assert_eq!(c.committed_txs(0).len(), 8);
    for i in 1..5 {
        assert_eq!(c.committed_txs(i), c.committed_txs(0));
    }
}

#[test]
fn a_block_waits_parked_for_its_batch_which_is_fetched_from_its_author() {
    let mut c = Cluster::new(&[1, 1, 1, 1], config());
    // Node 3 never receives batches pushed to it: it must fetch them.
    c.pass = Box::new(|_, to, m| !(to == 3 && matches!(m, PeerMessage::Batch(_))));
    c.nodes[1].handle_local_txs(c.now, txs(2, 4));
    c.settle();
    c.run_for(30);
    let g = c.nodes[3].gauges();
    assert!(
        g.blocks_parked >= 1 || c.nodes[3].metrics().batches_fetched >= 1,
        "node 3 parked node 1's block or already fetched its batch"
    );
    c.run_for(1_000);
    assert!(c.nodes[3].metrics().batch_fetch_requests >= 1);
    assert!(c.nodes[3].metrics().batches_fetched >= 1);
    assert_eq!(c.nodes[3].gauges().blocks_parked, 0);
    assert_eq!(c.committed_txs(3), c.committed_txs(0));
    assert_eq!(c.committed_txs(3).len(), 4);
}

#[test]
fn an_unrequested_batch_response_is_counted_not_held_and_not_a_fault() {
    let mut c = Cluster::new(&[1, 1, 1, 1], config());
    c.settle();
    let b = peer_batch(1, 1, &txs(1, 2));
    c.nodes[0].handle_peer(c.now, 1, PeerMessage::BatchResponse(vec![b.clone()]));
    // A late answer to a request already served elsewhere looks the same.
    assert_eq!(c.nodes[0].metrics().peer_penalties, 0);
    assert_eq!(c.nodes[0].metrics().batches_unrequested, 1);
    assert!(!c.stores[0].has_batch(&batch_digest(&b)));
    c.drain(0);
    assert!(!c.stores[0].has_batch(&batch_digest(&b)));
}

#[test]
fn batch_requests_are_answered_from_memory_or_the_store_within_limits() {
    let mut c = Cluster::new(&[1, 1, 1, 1], config());
    c.nodes[1].handle_local_txs(c.now, txs(2, 4));
    c.settle();
    let d = *c.stores[1].0.lock().unwrap().batches.keys().next().unwrap();
    // 100 digests asked: only BATCH_REQUEST_DIGESTS_MAX are looked at.
    let mut ask = vec![[7u8; 32]; 99];
    ask.insert(0, d);
    c.nodes[1].handle_peer(c.now, 2, PeerMessage::BatchRequest(ask));
    let mut answered = Vec::new();
    while let Some(i) = c.nodes[1].poll_intent() {
        if let Intent::Send(m) = i {
            assert_eq!(m.to, Dest::One(2));
            if let PeerMessage::BatchResponse(list) = m.msg {
                answered.extend(list);
            }
        }
    }
    assert_eq!(answered.len(), 1);
    assert_eq!(batch_digest(&answered[0]), d);
}

#[test]
fn rounds_requests_are_answered_in_parts_with_the_requesters_latest_block() {
    let mut c = Cluster::new(&[1, 1, 1, 1], config());
    c.run_for(100);
    // A validator that proposes now may have lost its log a moment ago
    // (and its stake may be needed for a quorum): answered.
    c.nodes[0].handle_peer(
        c.now,
        2,
        PeerMessage::RoundsRequest {
            from_round: 1,
            to_round: 10,
        },
    );
    let mut answered = false;
    while let Some(i) = c.nodes[0].poll_intent() {
        answered |= matches!(
            i,
            Intent::Send(Outbound {
                msg: PeerMessage::RoundsResponse { .. },
                ..
            })
        );
    }
    assert!(answered);
    assert_eq!(c.nodes[0].metrics().rounds_requests_served, 1);
    // Validator 2 goes silent (lost its data, say); the others go on.
    c.pass = Box::new(|from, to, _| from != 2 && to != 2);
    c.run_for(2_000);
    let head = c.nodes[0].core().dag().highest_round().0;
    assert!(head > 10);
    c.nodes[0].handle_peer(
        c.now,
        2,
        PeerMessage::RoundsRequest {
            from_round: 1,
            to_round: u64::MAX,
        },
    );
    let mut parts = Vec::new();
    while let Some(i) = c.nodes[0].poll_intent() {
        if let Intent::Send(m) = i {
            parts.push(m.msg);
        }
    }
    assert!(!parts.is_empty());
    let mut rounds = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let PeerMessage::RoundsResponse {
            done,
            parts: n,
            blocks,
            head_round,
            to_round,
            ..
        } = p
        else {
            panic!("{p:?}")
        };
        assert_eq!(*done, i + 1 == parts.len());
        assert_eq!(*n as usize, parts.len(), "every part says how many");
        assert_eq!(*head_round, head);
        assert_eq!(*to_round, ROUNDS_PER_REQUEST_MAX, "capped");
        for b in blocks {
            rounds.push(Block::decode(b).unwrap());
        }
    }
    // First the requester's own latest block, then the log from round 1.
    assert_eq!(rounds[0].author(), ValidatorIndex(2));
    assert!(rounds[1..].windows(2).all(|w| w[0].round() <= w[1].round()));
    assert_eq!(c.nodes[0].metrics().rounds_requests_served, 2);
}

#[test]
fn response_chunks_respect_the_wire_limits() {
    // Small blocks: the item limit splits (a 1000-block answer sent as one
    // frame would be refused by the sender's own limit check).
    let parts = chunk_items((0..1000).map(|i| vec![i as u8; 100]));
    assert_eq!(
        parts.iter().map(Vec::len).collect::<Vec<_>>(),
        [256, 256, 256, 232]
    );
    let l = WireLimits::default();
    assert_eq!(RESPONSE_ITEMS_MAX, l.items_per_response_max);
    for p in &parts {
        let m = PeerMessage::BlockResponse(p.clone());
        assert!(check_limits(&m, &l).is_ok());
    }
    // Large ones: the byte budget splits; one oversized item goes alone.
    let parts = chunk_items((0..5).map(|_| vec![0u8; 3 << 20]));
    assert_eq!(parts.len(), 5);
    assert!(chunk_items(std::iter::empty()).is_empty());
    let flat: Vec<Vec<u8>> = chunk_items((0..600).map(|i| vec![(i % 251) as u8; 10]))
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(flat.len(), 600);
    assert!(flat
        .iter()
        .enumerate()
        .all(|(i, b)| b[0] == (i % 251) as u8));
}

#[test]
fn dag_keys_sort_by_round_then_author() {
    let r = |round, author, d| BlockRef {
        round: Round(round),
        author: ValidatorIndex(author),
        digest: Digest([d; 32]),
    };
    let mut keys = [
        dag_key(&r(2, 0, 0)),
        dag_key(&r(1, 3, 9)),
        dag_key(&r(1, 0, 5)),
        dag_key(&r(256, 0, 0)),
    ];
    keys.sort();
    assert_eq!(keys[0], dag_key(&r(1, 0, 5)));
    assert_eq!(keys[1], dag_key(&r(1, 3, 9)));
    assert_eq!(keys[2], dag_key(&r(2, 0, 0)));
    assert_eq!(keys[3], dag_key(&r(256, 0, 0)));
    let w = to_wire(&r(7, 2, 4));
    assert_eq!(from_wire(&w), r(7, 2, 4));
}

#[test]
fn a_refused_batch_sent_again_is_not_checked_again() {
    let mut c = Cluster::new(&[1, 1, 1, 1], config());
    c.settle();
    let mut bad = txs(4, 2);
    bad.push(tx(4, 2, BAD_FEE));
    let bytes = peer_batch(1, 9, &bad);
    c.nodes[0].handle_peer(c.now, 1, PeerMessage::Batch(bytes.clone()));
    c.answer_next_check(0);
    let checked = c.checked[0].0.load(Ordering::Relaxed);
    assert_eq!(checked, 3);
    for _ in 0..5 {
        c.nodes[0].handle_peer(c.now, 1, PeerMessage::Batch(bytes.clone()));
    }
    assert_eq!(
        c.checked[0].0.load(Ordering::Relaxed),
        checked,
        "not checked again"
    );
    assert_eq!(c.nodes[0].metrics().batches_rejected_again, 5);
    assert_eq!(c.nodes[0].metrics().batches_received, 1);
    // A copy refused only because another validator relayed it is not
    // remembered: its author's copy is taken.
    let good = peer_batch(1, 10, &txs(5, 2));
    c.nodes[0].handle_peer(c.now, 2, PeerMessage::Batch(good.clone()));
    c.nodes[0].handle_peer(c.now, 1, PeerMessage::Batch(good.clone()));
    c.drain(0);
    assert!(c.stores[0].has_batch(&batch_digest(&good)));
}

/// A block with a broken signature naming many unknown batches: refused
/// before a single batch is looked up (or fetched, or parked).
#[test]
fn an_invalid_block_is_refused_before_its_batches_are_looked_up() {
    let mut c = Cluster::new(&[1, 1, 1, 1], config());
    c.settle();
    let own = c.nodes[1].core().dag().slot(Round(1), ValidatorIndex(1))[0].clone();
    let mut u: UnsignedBlock = own.unsigned().clone();
    u.round = Round(2);
    u.parents = (0..4u32)
        .map(|v| c.nodes[0].core().dag().slot(Round(1), ValidatorIndex(v))[0].reference())
        .collect();
    u.payload = (0..1000u32)
        .map(|i| {
            let mut d = [0u8; 32];
            d[..4].copy_from_slice(&i.to_le_bytes());
            Digest(d)
        })
        .collect();
    let signed = u.clone().sign(&c.keys[1]);
    let mut sig = *signed.signature();
    sig[7] ^= 1;
    let forged = u.clone().with_signature(sig);
    let reads = c.stores[0].0.lock().unwrap().batch_reads;
    c.nodes[0].handle_peer(c.now, 1, PeerMessage::Block(forged.encode()));
    assert_eq!(
        c.stores[0].0.lock().unwrap().batch_reads,
        reads,
        "no lookups"
    );
    assert_eq!(c.nodes[0].gauges().blocks_parked, 0);
    assert_eq!(c.nodes[0].gauges().batches_wanted, 0);
    assert_eq!(c.nodes[0].metrics().peer_penalties, 1);
    // The same block correctly signed is looked up, parked and fetched.
    c.nodes[0].handle_peer(c.now, 1, PeerMessage::Block(signed.encode()));
    assert_eq!(c.stores[0].0.lock().unwrap().batch_reads, reads + 1000);
    assert_eq!(c.nodes[0].gauges().blocks_parked, 1);
    assert_eq!(c.nodes[0].gauges().batches_wanted, 1000);
}

/// One author's blocks cannot fill the parked set: copies of one slot,
/// each naming a batch nobody serves, park up to the author's share
/// ([`parked_quota`]) and no further, while another author's block still
/// parks (fault 4).
#[test]
fn one_author_cannot_fill_the_parked_blocks() {
    let mut c = Cluster::new(&[1, 1, 1, 1], config());
    c.settle();
    let quota = parked_quota(4);
    let parents: Vec<BlockRef> = (0..4u32)
        .map(|v| c.nodes[0].core().dag().slot(Round(1), ValidatorIndex(v))[0].reference())
        .collect();
    let own: Vec<UnsignedBlock> = (0..4u32)
        .map(|v| {
            c.nodes[0].core().dag().slot(Round(1), ValidatorIndex(v))[0]
                .unsigned()
                .clone()
        })
        .collect();
    let keys = c.keys.clone();
    let block_by = |author: u32, i: u32| {
        let mut u = own[author as usize].clone();
        u.round = Round(2);
        u.parents = parents.clone();
        let mut d = [0xee; 32];
        d[..4].copy_from_slice(&i.to_le_bytes());
        d[4] = author as u8;
        u.payload = vec![Digest(d)];
        u.sign(&keys[author as usize])
    };
    for i in 0..(quota as u32 + 40) {
        let b = block_by(1, i);
        c.nodes[0].handle_peer(c.now, 1, PeerMessage::Block(b.encode()));
    }
    assert_eq!(c.nodes[0].gauges().blocks_parked, quota);
    assert_eq!(c.nodes[0].metrics().blocks_parked_dropped, 40);
    let other = block_by(2, 0);
    c.nodes[0].handle_peer(c.now, 2, PeerMessage::Block(other.encode()));
    assert_eq!(
        c.nodes[0].gauges().blocks_parked,
        quota + 1,
        "another author still parks"
    );
}

#[test]
fn every_block_is_verified_once_per_node_even_when_parked() {
    let mut c = Cluster::new(&[1, 1, 1, 1], config());
    // Node 3 fetches every batch: each peer block waits parked first.
    c.pass = Box::new(|_, to, m| !(to == 3 && matches!(m, PeerMessage::Batch(_))));
    for i in 0..3u8 {
        c.nodes[i as usize].handle_local_txs(c.now, txs(i + 1, 4));
    }
    c.run_for(1_000);
    assert!(c.nodes[3].metrics().batches_fetched >= 3);
    assert_eq!(c.committed_txs(3).len(), 12);
    for (i, v) in c.verified.iter().enumerate() {
        let counts = v.0.lock().unwrap();
        assert!(!counts.is_empty());
        let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.is_empty(),
            "node {i} verified {} blocks more than once",
            twice.len()
        );
    }
}

#[test]
fn a_repeat_offender_is_ignored_for_a_while_then_heard_again() {
    let mut c = Cluster::new(&[1, 1, 1, 1], config());
    c.settle();
    for k in 0..PEER_STRIKES_MAX {
        c.nodes[0].handle_peer(c.now, 2, PeerMessage::Block(vec![k as u8; 40]));
    }
    assert_eq!(c.nodes[0].metrics().peer_backoffs, 1);
    assert!(c.nodes[0].poll_intent().is_none());
    // Its valid batch is ignored meanwhile: no write, no acknowledgement.
    let b = peer_batch(2, 1, &txs(6, 2));
    c.nodes[0].handle_peer(c.now, 2, PeerMessage::Batch(b.clone()));
    assert_eq!(c.nodes[0].metrics().peer_messages_ignored, 1);
    assert!(c.nodes[0].poll_intent().is_none());
    // Other peers are heard.
    c.nodes[0].handle_peer(c.now, 1, PeerMessage::Batch(peer_batch(1, 1, &txs(7, 1))));
    assert!(c.nodes[0].poll_intent().is_some());
    while c.nodes[0].poll_intent().is_some() {}
    // After the backoff, heard again.
    let later = c.now.plus_ms(PEER_BACKOFF_MS);
    c.nodes[0].handle_peer(later, 2, PeerMessage::Batch(b.clone()));
    c.answer_next_check(0);
    assert!(matches!(
        c.nodes[0].poll_intent(),
        Some(Intent::Persist { .. })
    ));
    // Faults spread over time never add up to a backoff.
    let mut t = later;
    for k in 0..3 * PEER_STRIKES_MAX {
        t = t.plus_ms(PEER_STRIKE_WINDOW_MS / u64::from(PEER_STRIKES_MAX / 2));
        c.nodes[0].handle_peer(t, 3, PeerMessage::Block(vec![k as u8; 40]));
    }
    assert_eq!(c.nodes[0].metrics().peer_backoffs, 1);
}

/// Issue 17, fault 6: one peer asking for everything, fast, draws at most
/// its budget: the burst, then the refill rate.
#[test]
fn a_fetch_flood_draws_at_most_the_peers_serving_budget() {
    let mut c = Cluster::new(&[1, 1, 1, 1], config());
    c.run_for(300);
    let head = c.nodes[0].core().dag().highest_round().0;
    // Every block of the window, asked 5,000 times within one second by
    // validator 3.
    let refs: Vec<WireBlockRef> = (1..=head)
        .flat_map(|r| (0..4u32).map(move |v| (r, v)))
        .filter_map(|(r, v)| {
            c.nodes[0]
                .core()
                .dag()
                .slot(Round(r), ValidatorIndex(v))
                .first()
                .map(|b| to_wire(&b.reference()))
        })
        .take(crate::core::REQUEST_REFS_MAX)
        .collect();
    assert!(refs.len() > 20);
    let served_before = c.nodes[0].metrics().served_bytes;
    let start = c.now;
    let mut one = 0;
    for k in 0..5_000u64 {
        let now = start.plus_ms(k / 5);
        c.nodes[0].handle_peer(now, 3, PeerMessage::BlockRequest(refs.clone()));
        while let Some(i) = c.nodes[0].poll_intent() {
            if let Intent::Send(m) = i {
                if let PeerMessage::BlockResponse(list) = m.msg {
                    if one == 0 {
                        one = list.iter().map(Vec::len).sum::<usize>();
                    }
                }
            }
        }
    }
    let served = c.nodes[0].metrics().served_bytes - served_before;
    let bound = SERVE_BURST_BYTES + SERVE_BYTES_PER_SEC + one as u64;
    assert!(one > 0);
    assert!(
        served <= bound,
        "served {served} bytes in one second (bound {bound})"
    );
    assert!(c.nodes[0].metrics().serve_refused_budget > 0);
    // Another peer is still served.
    c.nodes[0].handle_peer(start.plus_ms(1_000), 1, PeerMessage::BlockRequest(refs));
    assert!(matches!(c.nodes[0].poll_intent(), Some(Intent::Send(_))));
}

#[test]
fn one_batch_request_is_answered_with_at_most_its_byte_cap() {
    let mut c = Cluster::new(&[1, 1, 1, 1], config());
    c.settle();
    let mut ds = Vec::new();
    for i in 0..BATCH_REQUEST_DIGESTS_MAX as u32 {
        let mut d = [0u8; 32];
        d[..4].copy_from_slice(&i.to_le_bytes());
        let big: Arc<[u8]> = vec![i as u8; 1 << 20].into();
        c.stores[0].write(&[], &[(d, big)]);
        ds.push(d);
    }
    c.nodes[0].handle_peer(c.now, 2, PeerMessage::BatchRequest(ds));
    let mut bytes = 0;
    while let Some(i) = c.nodes[0].poll_intent() {
        if let Intent::Send(m) = i {
            if let PeerMessage::BatchResponse(list) = m.msg {
                bytes += list.iter().map(Vec::len).sum::<usize>();
            }
        }
    }
    assert_eq!(bytes, SERVE_REQUEST_BYTES_MAX, "16 of the 64 MiB asked");
}

/// A round-2 block by `author` over the round-1 blocks node 0 holds,
/// carrying `payload`.
fn round2_block(c: &Cluster, author: u32, payload: Vec<Digest>) -> Block {
    let dag = c.nodes[0].core().dag();
    let mut u = dag.slot(Round(1), ValidatorIndex(author))[0]
        .unsigned()
        .clone();
    u.round = Round(2);
    u.parents = (0..4u32)
        .map(|v| dag.slot(Round(1), ValidatorIndex(v))[0].reference())
        .collect();
    u.payload = payload;
    u.sign(&c.keys[author as usize])
}

/// Intents of node `i` until none is left: (check requests, batch
/// requests sent, acknowledgements sent).
fn take_intents(c: &mut Cluster, i: usize) -> (Vec<CheckRequest>, usize, Vec<BatchDigest>) {
    let (mut checks, mut requests, mut acks) = (Vec::new(), 0, Vec::new());
    while let Some(intent) = c.nodes[i].poll_intent() {
        match intent {
            Intent::Check(r) => checks.push(r),
            Intent::Send(Outbound {
                msg: PeerMessage::BatchRequest(_),
                ..
            }) => requests += 1,
            Intent::Send(Outbound {
                msg: PeerMessage::BatchAck(d),
                ..
            }) => acks.push(d),
            Intent::Persist {
                batches, blocks, ..
            } => c.stores[i].write(&blocks, &batches),
            _ => {}
        }
    }
    (checks, requests, acks)
}

/// Issue 18: peers' batches are checked by the driver (the verify tiles),
/// not by the machine. While a check is under way the batch is neither
/// held nor acknowledged, a resent copy is not checked twice, and a block
/// that names it waits parked without fetching it; the answers may come in
/// any order. A failed check refuses the batch, and the parked block's
/// batch is then fetched.
#[test]
fn a_batch_being_checked_is_neither_held_nor_fetched_until_answered() {
    let mut c = Cluster::new(&[1, 1, 1, 1], config());
    c.settle();
    let good = [peer_batch(1, 40, &txs(7, 2)), peer_batch(1, 41, &txs(8, 2))];
    let ds: Vec<BatchDigest> = good.iter().map(|b| batch_digest(b)).collect();
    for b in &good {
        c.nodes[0].handle_peer(c.now, 1, PeerMessage::Batch(b.clone()));
    }
    let (checks, _, acks) = take_intents(&mut c, 0);
    assert_eq!(checks.len(), 2);
    assert!(acks.is_empty(), "nothing acknowledged before its check");
    assert_eq!(c.nodes[0].gauges().batches_checking, 2);
    // Resent while checked: no second check.
    c.nodes[0].handle_peer(c.now, 1, PeerMessage::Batch(good[0].clone()));
    assert!(take_intents(&mut c, 0).0.is_empty());
    assert_eq!(c.nodes[0].metrics().batch_checks, 2);
    // A block naming both parks, and its batches are not fetched while
    // they are checked, however long that takes.
    let block = round2_block(&c, 1, ds.iter().map(|d| Digest(*d)).collect());
    c.nodes[0].handle_peer(c.now, 1, PeerMessage::Block(block.encode()));
    assert_eq!(c.nodes[0].gauges().blocks_parked, 1);
    let fetches = c.nodes[0].metrics().batch_fetch_requests;
    for step in 1..=20 {
        c.nodes[0].handle_timeout(c.now.plus_ms(step * 100));
    }
    let (_, requests, _) = take_intents(&mut c, 0);
    assert_eq!(requests, 0);
    assert_eq!(c.nodes[0].metrics().batch_fetch_requests, fetches);
    // Answered in reverse order: each is stored and acknowledged, and the
    // block goes on once both are held.
    c.answer(0, checks[1].clone());
    assert_eq!(c.nodes[0].gauges().blocks_parked, 1);
    c.answer(0, checks[0].clone());
    assert_eq!(c.nodes[0].gauges().blocks_parked, 0);
    let (_, _, acks) = take_intents(&mut c, 0);
    assert_eq!(acks, vec![ds[1], ds[0]]);
    assert!(ds.iter().all(|d| c.stores[0].has_batch(d)));
    assert_eq!(c.nodes[0].gauges().batches_checking, 0);
    // An answer nobody asked for is counted and ignored.
    c.answer(0, checks[0].clone());
    assert_eq!(c.nodes[0].metrics().batch_checks_unexpected, 1);

    // A batch that fails its check: refused and its sender penalized; a
    // block naming it, parked meanwhile, has it fetched afterwards.
    let mut bad_txs = txs(9, 1);
    bad_txs.push(tx(9, 1, BAD_FEE));
    let bad = peer_batch(2, 50, &bad_txs);
    let bad_d = batch_digest(&bad);
    c.nodes[0].handle_peer(c.now, 2, PeerMessage::Batch(bad));
    let (checks, _, _) = take_intents(&mut c, 0);
    let block = round2_block(&c, 2, vec![Digest(bad_d)]);
    c.nodes[0].handle_peer(c.now, 2, PeerMessage::Block(block.encode()));
    assert_eq!(c.nodes[0].gauges().blocks_parked, 1);
    let penalties = c.nodes[0].metrics().peer_penalties;
    c.answer(0, checks[0].clone());
    assert_eq!(c.nodes[0].metrics().peer_penalties, penalties + 1);
    let (_, _, acks) = take_intents(&mut c, 0);
    assert!(acks.is_empty());
    assert!(!c.stores[0].has_batch(&bad_d));
    c.nodes[0].handle_timeout(c.now.plus_ms(10));
    let (_, requests, _) = take_intents(&mut c, 0);
    assert_eq!(requests, 1, "fetched once its check failed");
}
