//! The genesis block: commit 0, built from the configuration.

use velox_exec::{AccountId, Tx, TxBody, TxBuilder, VerifiedTx};

use crate::config::GenesisConfig;
use crate::keys::{account_of, dev_key};

/// The genesis transactions and the hash that identifies the chain.
pub struct Genesis {
    pub txs: Vec<VerifiedTx>,
    pub encoded: Vec<Vec<u8>>,
    pub hash: [u8; 32],
    pub timestamp_ms: u64,
}

pub fn build(chain_id: u64, g: &GenesisConfig) -> Genesis {
    let mut allocs: Vec<(AccountId, u64)> = g
        .allocations
        .iter()
        .map(|a| {
            (
                AccountId::from_hex(&a.account).expect("validated at config load"),
                a.balance,
            )
        })
        .collect();
    for i in 0..g.dev_accounts {
        allocs.push((account_of(&dev_key(&g.dev_seed, i)), g.dev_balance));
    }
    let mut h = blake3::Hasher::new();
    h.update(b"velox-genesis");
    h.update(&chain_id.to_le_bytes());
    h.update(&g.timestamp_ms.to_le_bytes());
    let mut txs = Vec::with_capacity(allocs.len());
    let mut encoded = Vec::with_capacity(allocs.len());
    for (to, amount) in allocs {
        let b = TxBuilder {
            chain_id,
            nonce: 0,
            fee: 0,
            body: TxBody::GenesisAlloc { to, amount },
        };
        let bytes = b.encode_genesis();
        h.update(&bytes);
        txs.push(VerifiedTx::from_trusted(
            Tx::decode(&bytes).expect("genesis encodes validly"),
        ));
        encoded.push(bytes);
    }
    Genesis {
        txs,
        encoded,
        hash: *h.finalize().as_bytes(),
        timestamp_ms: g.timestamp_ms,
    }
}
