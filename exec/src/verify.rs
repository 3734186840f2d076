//! Transaction verification: the only way to obtain a [`VerifiedTx`].
//!
//! A transaction is valid when its stateless checks pass and its signature
//! passes the chain's rule ([`crate::sig`]): the sender's key over the
//! transaction digest. [`verify_batch`] uses the rule's batch fast path and
//! returns, for every input, exactly what [`verify_one`] returns.

use crate::reason::RejectReason;
use crate::sig::{self, Item};
use crate::tx::{Tx, TxKind};

/// Largest batch handed to the batch equation (the rule's own chunk size).
pub const VERIFY_BATCH_TXS_MAX: usize = sig::SIG_BATCH_MAX;

/// A transaction whose signature, chain and kind have been checked. Only this
/// module and [`VerifiedTx::from_trusted`] construct it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedTx(Tx);

impl VerifiedTx {
    /// Wraps a transaction that was verified before it was stored (read back
    /// from our own database, or built locally for genesis).
    pub fn from_trusted(tx: Tx) -> Self {
        Self(tx)
    }
    /// A genesis allocation crediting `to` with `amount`: built locally from
    /// the genesis configuration, never received, so there is nothing to
    /// verify (sender and signature are zero; see `TxBuilder::encode_genesis`).
    pub fn genesis_alloc(chain_id: u64, to: crate::tx::AccountId, amount: u64) -> Self {
        let b = crate::tx::TxBuilder {
            chain_id,
            nonce: 0,
            fee: 0,
            body: crate::tx::TxBody::GenesisAlloc { to, amount },
        };
        Self(Tx::decode(&b.encode_genesis()).expect("a genesis allocation encodes validly"))
    }
    pub fn tx(&self) -> &Tx {
        &self.0
    }
    pub fn into_tx(self) -> Tx {
        self.0
    }
}

impl std::ops::Deref for VerifiedTx {
    type Target = Tx;
    fn deref(&self) -> &Tx {
        &self.0
    }
}

/// Checks that cost no signature work: kind allowed from the network, chain.
pub fn check_stateless(tx: &Tx, chain_id: u64) -> Result<(), RejectReason> {
    if tx.kind() == TxKind::GenesisAlloc {
        return Err(RejectReason::GenesisKindNotAllowed);
    }
    if tx.chain_id() != chain_id {
        return Err(RejectReason::WrongChain);
    }
    Ok(())
}

/// Verifies one transaction: the chain's rule for a single signature.
pub fn verify_one(tx: Tx, chain_id: u64) -> Result<VerifiedTx, RejectReason> {
    check_stateless(&tx, chain_id)?;
    sig::verify(&tx.sender().0, &tx.digest().0, tx.signature())?;
    Ok(VerifiedTx(tx))
}

/// Verifies a batch, returning one result per input in input order: for
/// each, exactly the answer of [`verify_one`].
pub fn verify_batch(txs: Vec<Tx>, chain_id: u64) -> Vec<Result<VerifiedTx, RejectReason>> {
    let stateless: Vec<Result<(), RejectReason>> =
        txs.iter().map(|t| check_stateless(t, chain_id)).collect();
    let candidates: Vec<&Tx> = txs
        .iter()
        .zip(&stateless)
        .filter(|(_, s)| s.is_ok())
        .map(|(t, _)| t)
        .collect();
    let mut answers = check_signatures(&candidates).into_iter();
    let out: Vec<Result<VerifiedTx, RejectReason>> = txs
        .into_iter()
        .zip(stateless)
        .map(|(tx, s)| {
            s?;
            answers.next().expect("one answer per candidate")?;
            Ok(VerifiedTx(tx))
        })
        .collect();
    debug_assert!(answers.next().is_none());
    out
}

/// The chain's signature rule for each transaction (its sender's key over
/// its digest), in input order, through the rule's batch fast path: the
/// signature part of [`verify_batch`], for callers that check stored
/// transactions (`velox replay`).
pub fn check_signatures(txs: &[&Tx]) -> Vec<Result<(), sig::SigError>> {
    let senders: Vec<[u8; 32]> = txs.iter().map(|t| t.sender().0).collect();
    let digests: Vec<[u8; 32]> = txs.iter().map(|t| t.digest().0).collect();
    let items: Vec<Item<'_>> = txs
        .iter()
        .enumerate()
        .map(|(i, t)| Item {
            key: &senders[i],
            message: &digests[i],
            signature: t.signature(),
        })
        .collect();
    sig::verify_many(&items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tx::{AccountId, TxBody, TxBuilder};
    use ed25519_dalek::SigningKey;

    fn signed(seed: u8, nonce: u64, chain: u64) -> Tx {
        let b = TxBuilder {
            chain_id: chain,
            nonce,
            fee: 0,
            body: TxBody::Transfer {
                to: AccountId([1; 32]),
                amount: 1,
            },
        };
        Tx::decode(&b.sign(&SigningKey::from_bytes(&[seed; 32]))).unwrap()
    }

    #[test]
    fn batch_isolates_bad_signatures() {
        let mut txs: Vec<Tx> = (0..150).map(|i| signed((i % 7) as u8 + 1, i, 5)).collect();
        // Corrupt signatures of #3 and #100 and put one on the wrong chain.
        for i in [3usize, 100] {
            let mut b = txs[i].bytes().to_vec();
            let n = b.len();
            b[n - 1] ^= 0x55;
            txs[i] = Tx::decode(&b).unwrap();
        }
        txs[77] = signed(2, 77, 6);
        let res = verify_batch(txs, 5);
        assert_eq!(res.len(), 150);
        for (i, r) in res.iter().enumerate() {
            match i {
                3 | 100 => assert_eq!(r.as_ref().unwrap_err(), &RejectReason::BadSignature),
                77 => assert_eq!(r.as_ref().unwrap_err(), &RejectReason::WrongChain),
                _ => assert_eq!(r.as_ref().unwrap().nonce(), i as u64),
            }
        }
    }

    #[test]
    fn genesis_kind_is_refused_from_network() {
        let b = TxBuilder {
            chain_id: 5,
            nonce: 0,
            fee: 0,
            body: TxBody::GenesisAlloc {
                to: AccountId([1; 32]),
                amount: 1,
            },
        };
        let tx = Tx::decode(&b.encode_genesis()).unwrap();
        assert_eq!(
            verify_one(tx, 5).unwrap_err(),
            RejectReason::GenesisKindNotAllowed
        );
    }
}
