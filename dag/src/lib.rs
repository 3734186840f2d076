//! velox-dag: the consensus core of Velox.
//!
//! Validators build a DAG of blocks: each block of round r references at
//! least 2f+1 stake of blocks of round r-1 (its author's previous block among
//! them) and carries batch digests made available by the mempool. Blocks are
//! not certified (Mysticeti's "uncertified DAG"): a leader per round is
//! committed once 2f+1 blocks of round r+2 each see 2f+1 round-r+1 votes for
//! it, skipped when 2f+1 round-r+1 blocks blame it, and otherwise decided
//! through a later committed leader ([`commit`]). Each committed leader's
//! causal history is linearized by (round, HashTimer timestamp, digest) and
//! handed to execution.
//!
//! The [`Core`] is a sans-IO state machine (STYLE §1): it is fed inputs with
//! the current time and emits intents; the node's consensus tile and the
//! deterministic simulator ([`sim`]) are its two drivers.
//!
//! ```text
//!                       +----------------------------------------+
//!  peer block bytes --->| handle_block_bytes / handle_block       |
//!  batch digests ------>| handle_payload                          |---> poll_output():
//!  timer fired -------->| handle_timeout(now)                     |      PersistBlock(block)
//!  peer fetch request ->| handle_block_request(refs) -> blocks    |      BroadcastBlock(block)
//!                       |                                         |      RequestBlocks{from, refs}
//!                       |  verify -> buffer until causally        |      Committed(CommittedSubDag)
//!                       |  complete -> DAG -> commit rule ->      |
//!                       |  linearizer -> GC; propose when 2f+1    |---> poll_timeout() -> Option<Time>
//!                       |  blocks + (leader or leader timeout)    |
//!                       +----------------------------------------+
//!  the driver: persist PersistBlock before carrying out later outputs;
//!  own blocks always come out as PersistBlock then BroadcastBlock.
//! ```
//!
//! See docs/consensus.md for the protocol, encoding and simulator.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod block;
pub mod commit;
pub mod core;
pub mod dag;
pub mod node;
pub mod sim;
pub mod text;
pub mod types;

pub use crate::block::{
    Block, BlockError, BlockRef, DecodeError, Ed25519Verifier, HashTimer, SignatureVerifier,
    UnsignedBlock, BLOCK_BYTES_MAX, BLOCK_PARENTS_MAX, BLOCK_PAYLOAD_DIGESTS_MAX,
};
pub use crate::commit::{CommitRuleConfig, CommittedSubDag, Committer, LeaderStatus, Linearizer};
pub use crate::core::{
    BlockStatus, Core, CoreConfig, CoreMetrics, Output, ResumeError, ResumePoint,
};
pub use crate::dag::DagState;
pub use crate::node::join::{Join, JoinFailure, JoinStats, Joined};
pub use crate::node::{
    CheckRequest, ConsensusNode, Intent, NodeConfig, NodeGauges, NodeMetrics, NodeStore,
    ReadyCommit, TxChecker,
};
pub use crate::sim::cli::{parse_seed_range, run_cli, SeedRangeError, SimArgs};
pub use crate::types::{Authority, Committee, Digest, Epoch, Round, Stake, Time, ValidatorIndex};
