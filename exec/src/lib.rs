//! Transactions and their execution.
//!
//! This crate owns what a transaction *is* and what it *does*:
//!
//! - [`tx`]: the wire format (a zerocopy header, a payload, an ed25519
//!   signature over the blake3 digest of header and payload) and its decoder.
//! - [`sig`]: the chain's one ed25519 acceptance rule (ZIP-215 and a key
//!   rule), single and batched, and crafted edge cases of it.
//! - [`verify`]: transaction checks, single and batched; the only way to make a
//!   [`verify::VerifiedTx`], the type every later stage takes.
//! - [`state`]: the account map; its commitment is the root of
//! - [`smt`]: a sparse Merkle tree over the state, with inclusion and
//!   absence proofs.
//! - [`effects`]: what each transaction kind does, defined once.
//! - [`seq`]: the sequential executor, the oracle.
//! - [`parallel`]: the Block-STM parallel executor, checked against the oracle,
//!   on a [`pool`] of pinned worker threads.
//!
//! In the pipeline it sits after consensus: the node hands each committed
//! block's verified transactions to an executor, which returns receipts, the
//! state diff and the new state root for storage to persist atomically.

pub mod effects;
pub mod hash;
mod key_index;
pub mod parallel;
pub mod pool;
pub mod reason;
pub mod seq;
pub mod sig;
pub mod smt;
pub mod state;
pub mod tx;
pub mod verify;

pub use effects::{declared_keys, tx_effects, TxKeys, Writes, TX_KEYS_MAX};
pub use parallel::{
    execute_parallel, ExecConfig, ExecMetrics, ExecPath, ParallelExecutor, SequentialReason,
    PARALLEL_PHASES,
};
pub use pool::{Fanout, WorkerPool};
pub use reason::RejectReason;
pub use seq::{apply_sequential, execute_sequential, BlockOutput, ExecContext, Receipt};
pub use smt::{verify as verify_proof, Proof, ProofError};
pub use state::{Account, State, StateDiff, StateKey, StateRoot, StateValue};
pub use tx::{AccountId, Tx, TxBody, TxBuilder, TxDecodeError, TxDigest, TxKind};
pub use verify::{verify_batch, verify_one, VerifiedTx};
