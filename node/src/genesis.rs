//! The genesis block: commit 0, built from the configuration.

use velox_exec::{AccountId, VerifiedTx};

use crate::config::GenesisConfig;
use crate::keys::{account_of, dev_key};

/// The genesis transactions and the hash that identifies the chain.
pub struct Genesis {
    pub txs: Vec<VerifiedTx>,
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
    let txs: Vec<VerifiedTx> = allocs
        .into_iter()
        .map(|(to, amount)| {
            let tx = VerifiedTx::genesis_alloc(chain_id, to, amount);
            h.update(tx.bytes());
            tx
        })
        .collect();
    Genesis {
        txs,
        hash: *h.finalize().as_bytes(),
        timestamp_ms: g.timestamp_ms,
    }
}
