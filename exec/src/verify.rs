//! Signature verification: the only way to obtain a [`VerifiedTx`].
//!
//! Batches use ed25519-dalek's batch equation (one multiscalar
//! multiplication for the whole batch, ~2x the single-verify rate). A batch
//! that fails is re-checked one by one with `verify_strict`, so one bad
//! signature costs its batch a second pass but never rejects a good one.

use ed25519_dalek::{Signature, VerifyingKey};

use crate::reason::RejectReason;
use crate::tx::{Tx, TxKind};

/// Largest batch handed to the batch equation. Larger batches amortise less
/// and make the fallback pass after one bad signature more expensive.
pub const VERIFY_BATCH_TXS_MAX: usize = 64;

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

fn parts(tx: &Tx) -> Result<(VerifyingKey, Signature), RejectReason> {
    let key = VerifyingKey::from_bytes(&tx.sender().0).map_err(|_| RejectReason::BadPublicKey)?;
    if key.is_weak() {
        return Err(RejectReason::BadPublicKey);
    }
    Ok((key, Signature::from_bytes(tx.signature())))
}

/// Verifies one transaction.
pub fn verify_one(tx: Tx, chain_id: u64) -> Result<VerifiedTx, RejectReason> {
    check_stateless(&tx, chain_id)?;
    let (key, sig) = parts(&tx)?;
    key.verify_strict(&tx.digest().0, &sig)
        .map_err(|_| RejectReason::BadSignature)?;
    Ok(VerifiedTx(tx))
}

/// Verifies a batch, returning one result per input in input order.
pub fn verify_batch(txs: Vec<Tx>, chain_id: u64) -> Vec<Result<VerifiedTx, RejectReason>> {
    let mut out: Vec<Result<VerifiedTx, RejectReason>> = Vec::with_capacity(txs.len());
    let mut chunk: Vec<Tx> = Vec::with_capacity(VERIFY_BATCH_TXS_MAX);
    let mut iter = txs.into_iter().peekable();
    while iter.peek().is_some() {
        chunk.clear();
        chunk.extend(iter.by_ref().take(VERIFY_BATCH_TXS_MAX));
        verify_chunk(&mut chunk, chain_id, &mut out);
    }
    out
}

fn verify_chunk(
    chunk: &mut Vec<Tx>,
    chain_id: u64,
    out: &mut Vec<Result<VerifiedTx, RejectReason>>,
) {
    // Pre-screen: stateless checks and key decoding. Only candidates that pass
    // go into the batch equation.
    let mut keys = Vec::with_capacity(chunk.len());
    let mut sigs = Vec::with_capacity(chunk.len());
    let mut msgs: Vec<[u8; 32]> = Vec::with_capacity(chunk.len());
    let mut screened: Vec<Result<(), RejectReason>> = Vec::with_capacity(chunk.len());
    for tx in chunk.iter() {
        let r = check_stateless(tx, chain_id).and_then(|_| parts(tx));
        match r {
            Ok((k, s)) => {
                keys.push(k);
                sigs.push(s);
                msgs.push(tx.digest().0);
                screened.push(Ok(()));
            }
            Err(e) => screened.push(Err(e)),
        }
    }
    let msg_refs: Vec<&[u8]> = msgs.iter().map(|m| &m[..]).collect();
    let batch_ok = !keys.is_empty() && ed25519_dalek::verify_batch(&msg_refs, &sigs, &keys).is_ok();
    for (tx, s) in chunk.drain(..).zip(screened) {
        out.push(match s {
            Err(e) => Err(e),
            Ok(()) if batch_ok => Ok(VerifiedTx(tx)),
            Ok(()) => verify_one(tx, chain_id),
        });
    }
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
