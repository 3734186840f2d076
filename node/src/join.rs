//! The driver of a join ([`velox_dag::Join`], the sans-IO machine that
//! decides what to ask and what to keep: see its docs for the protocol and
//! its bounds): it moves the machine's requests to the peer ring and the
//! peers' answers back, runs its timer on the monotonic clock, then writes
//! the kept blocks to the consensus log, persists the signed-round floor
//! (fsynced before anything is signed) and resumes the core from them.
//!
//! The core then runs as after any restart: blocks newer than those
//! fetched arrive by broadcast and fetch, and the commits after the
//! snapshot are decided again from the blocks and executed from batches
//! fetched from the peers (which keep their consensus log and batches back
//! to their oldest kept snapshot's GC round).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use velox_dag::{
    Block, Committee, Core, Ed25519Verifier, Join, JoinFailure, ResumePoint, Round, Time,
    ValidatorIndex,
};
use velox_io::TileStats;
use velox_storage::ChainStore;

use crate::consensus::{
    dag_key, mono_ms, now_ms, ConsensusCounters, ConsensusParams, ConsensusRings,
};

/// Blocks written to the consensus log per write batch.
const JOIN_WRITE_BLOCKS_PER_BATCH: usize = 512;

/// Where consensus stands and what the own log holds.
pub struct JoinPlan {
    /// Resume point of the last commit (its `signed_round_floor` is set by
    /// the join).
    pub point: ResumePoint,
    /// Blocks below this round are not needed (GC round of the last commit).
    pub gc_round: u64,
    /// What this node's own log holds of the rounds `>= gc_round`.
    pub own_log: Vec<Block>,
    pub commit_index: u64,
    /// Why the own log was not enough.
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("joining consensus from peers failed: {0}")]
    Failed(#[from] JoinFailure),
    #[error(
        "joining consensus from peers failed: the peers' blocks do not reach the resume point ({0}). \
         Peers keep their consensus log back to their oldest kept snapshot's GC round: restore a newer \
         snapshot (the newest one of a peer) and start again"
    )]
    Resume(String),
    #[error("joining consensus from peers failed: writing the fetched blocks: {0}")]
    Store(#[from] velox_storage::StoreError),
    #[error("joining consensus from peers failed: the peer rings closed (shutting down)")]
    Closed,
}

/// Runs the join machine against the peer rings, then writes what it kept
/// and builds the core (module docs).
#[allow(clippy::too_many_arguments)]
pub async fn join_from_peers(
    plan: JoinPlan,
    params: &ConsensusParams,
    committee: Arc<Committee>,
    me: ValidatorIndex,
    key: SigningKey,
    chain: &ChainStore,
    rings: &ConsensusRings,
    stats: &TileStats,
    counters: &ConsensusCounters,
) -> Result<Core, JoinError> {
    counters.joining.store(1, Ordering::Relaxed);
    let started = Instant::now();
    tracing::warn!(
        commit_index = plan.commit_index,
        from_round = plan.gc_round,
        reason = %plan.reason,
        "the consensus log lacks the blocks to resume after the last commit: joining from the peers' blocks"
    );
    let mut join = Join::new(
        Time(mono_ms()),
        committee.clone(),
        me,
        Box::new(Ed25519Verifier),
        (plan.gc_round, plan.point.last_leader.round.0),
        plan.own_log,
    );
    let mut rejected = 0;
    let joined = loop {
        while let Some(o) = join.poll_send() {
            if rings.peer_out.push(o, stats).await.is_err() {
                return Err(JoinError::Closed);
            }
        }
        if let Some(done) = join.poll_done() {
            break done?;
        }
        let wake = join.poll_timeout().map_or(0, |t| t.0);
        let left = Duration::from_millis(wake.saturating_sub(mono_ms()));
        match rings.peer_in.pop_timeout(left).await {
            Ok(Some(m)) => join.handle_peer(Time(mono_ms()), m.from, m.msg),
            Ok(None) => return Err(JoinError::Closed),
            Err(()) => join.handle_timeout(Time(mono_ms())),
        }
        // Bad bytes or signatures count as their senders' misbehaviour.
        let now_rejected = join.stats().rejected;
        counters
            .peer_penalties
            .fetch_add((now_rejected - rejected) as u64, Ordering::Relaxed);
        rejected = now_rejected;
    };
    let js = joined.stats;
    let highest = joined.highest;
    let blocks: Vec<Block> = joined.blocks;
    // The log then holds what the core starts from: a restart after the
    // join resumes from this node's own log like any other.
    for chunk in blocks.chunks(JOIN_WRITE_BLOCKS_PER_BATCH) {
        let entries: Vec<_> = chunk
            .iter()
            .map(|b| (dag_key(&b.reference()), b.encode()))
            .collect();
        chain.write_consensus(&entries, &[], highest)?;
    }
    counters
        .join_blocks
        .store(blocks.len() as u64, Ordering::Relaxed);
    // Durable before anything is signed: a restart right after the join
    // keeps the floor.
    chain.raise_signed_round_floor(highest)?;
    let mut point: ResumePoint = plan.point;
    point.signed_round_floor = Round(highest);
    let core = Core::recover_from(
        params.core,
        committee,
        me,
        key,
        Box::new(Ed25519Verifier),
        blocks,
        &point,
        Time(mono_ms()),
        Some(now_ms()),
    )
    .map_err(|e| JoinError::Resume(e.to_string()))?;
    counters.joining.store(0, Ordering::Relaxed);
    tracing::info!(
        blocks = js.blocks,
        dropped_incomplete = js.dropped_incomplete,
        rejected = js.rejected,
        refused = js.refused,
        requests = js.requests,
        head_round = js.head_round,
        signed_round_floor = highest,
        seconds = started.elapsed().as_secs_f64(),
        "joined consensus from the peers' blocks"
    );
    Ok(core)
}
