//! Transactions and their execution.
//!
//! This crate owns what a transaction *is* and what it *does*:
//!
//! - [`tx`]: the wire format (a zerocopy header, a payload, an ed25519
//!   signature over the blake3 digest of header and payload) and its decoder.
//! - [`verify`]: signature checks, single and batched; the only way to make a
//!   [`verify::VerifiedTx`], the type every later stage takes.
//! - [`state`]: the account map and its state commitment.
//! - [`seq`]: the sequential executor, the reference semantics.
//!
//! In the pipeline it sits after consensus: the node hands each committed
//! block's verified transactions to an executor, which returns receipts, the
//! state diff and the new state root for storage to persist atomically.

pub mod reason;
pub mod seq;
pub mod state;
pub mod tx;
pub mod verify;

pub use reason::RejectReason;
pub use seq::{execute_sequential, BlockOutput, ExecContext, Receipt};
pub use state::{Account, State, StateDiff, StateKey, StateRoot, StateValue};
pub use tx::{AccountId, Tx, TxBody, TxBuilder, TxDecodeError, TxDigest};
pub use verify::{verify_batch, verify_one, VerifiedTx};
