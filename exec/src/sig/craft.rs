//! Signatures made on purpose at the edges of the rule, for tests, for the
//! vectors in docs/protocol.md and for load generators that play a
//! Byzantine client. Each [`Case`] names one kind of edge and says what the
//! chain's rule answers for it ([`Case::expected`]).
//!
//! A crafted signature is made by someone who knows the secret scalar `a`:
//! for a chosen `R` (encoded as `r_bytes`, decoding to `[r]B + T` with `T`
//! of small order), `S = r + k·a` where `k = H(r_bytes || key || message)`.
//! The cofactored equation holds whatever `T` is; the cofactorless one
//! (RFC 8032's `verify_strict`, dalek's batch) fails for most `T`.

use curve25519_dalek::constants::EIGHT_TORSION;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::SigningKey;
use sha2::{Digest as _, Sha512};

use super::SigError;

/// `L`, the order of the prime subgroup, little-endian.
const L_BYTES: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// `p + y` little-endian, with the sign bit `sign`: a non-canonical
/// encoding of a point with `y` coordinate `y` (for `y < 19`).
fn above_p(y: u8, sign: bool) -> [u8; 32] {
    let mut b = [0xffu8; 32];
    b[0] = 0xed + y;
    b[31] = 0x7f | if sign { 0x80 } else { 0 };
    b
}

/// Every 32-byte string that decodes to a point of small order: the eight
/// canonical encodings (in `EIGHT_TORSION` order), then the six
/// non-canonical ones (y = p and y = p + 1 with either sign bit, and
/// x = 0 with the sign bit set for y = 1 and y = −1).
pub fn small_order_encodings() -> Vec<[u8; 32]> {
    let mut out: Vec<[u8; 32]> = EIGHT_TORSION.iter().map(|t| t.compress().0).collect();
    let mut identity_neg = EdwardsPoint::default().compress().0;
    identity_neg[31] |= 0x80;
    let mut minus_one_neg = EIGHT_TORSION[4].compress().0;
    minus_one_neg[31] |= 0x80;
    for b in [
        above_p(0, false),
        above_p(0, true),
        above_p(1, false),
        above_p(1, true),
        identity_neg,
        minus_one_neg,
    ] {
        out.push(b);
    }
    out
}

/// Non-canonical encodings (`y ≥ p`) of points of large order. Nobody knows
/// their discrete logarithms, so no valid signature exists for them; the
/// rule refuses them as keys before looking at a signature.
pub fn non_canonical_large_order_encodings() -> Vec<[u8; 32]> {
    (0u8..19)
        .flat_map(|y| [above_p(y, false), above_p(y, true)])
        .filter(|b| {
            CompressedEdwardsY(*b)
                .decompress()
                .is_some_and(|p| !p.is_small_order())
        })
        .collect()
}

/// One kind of edge case. Indices into [`small_order_encodings`] are `0..14`;
/// torsion indices into `EIGHT_TORSION` are `1..8` (0 is the identity).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    /// An ordinary RFC 8032 signature.
    Valid,
    /// `R = [r]B + T`: valid under the cofactored equation only.
    MixedOrderR(usize),
    /// `R` of small order (any of its encodings), `S = k·a`.
    SmallOrderR(usize),
    /// `R` of small order and `S = 0` with a real key: the equation fails.
    SmallOrderRZeroS(usize),
    /// The key is `A + T`, `R = [r]B`: a key of mixed order, valid.
    MixedOrderKey(usize),
    /// Key `A + T` and `R = [r]B + T'`.
    MixedOrderKeyAndR(usize, usize),
    /// A valid signature with `L` added to `S` (S ≥ L).
    SPlusL,
    /// A valid signature with the top bit of `S` set.
    SHighBit,
    /// `R` is not the encoding of a curve point.
    RNotOnCurve,
    /// A valid signature on another message.
    WrongMessage,
    /// The key is a small-order encoding, `R` small-order, `S = 0`: the
    /// cofactored equation holds for every message, so the rule refuses the
    /// key.
    SmallOrderKey(usize, usize),
    /// The key is a non-canonical encoding of a large-order point.
    NonCanonicalKey(usize),
    /// The key is not the encoding of a curve point.
    KeyNotOnCurve,
}

impl Case {
    /// Every case, each index range in full.
    pub fn all() -> Vec<Case> {
        let small = small_order_encodings().len();
        let mut v = vec![Case::Valid];
        v.extend((1..8).map(Case::MixedOrderR));
        v.extend((0..small).map(Case::SmallOrderR));
        v.extend((0..small).map(Case::SmallOrderRZeroS));
        v.extend((1..8).map(Case::MixedOrderKey));
        v.extend((1..8).map(|i| Case::MixedOrderKeyAndR(i, 8 - i)));
        v.extend([
            Case::SPlusL,
            Case::SHighBit,
            Case::RNotOnCurve,
            Case::WrongMessage,
        ]);
        for a in 0..small {
            v.extend((0..small).map(|r| Case::SmallOrderKey(a, r)));
        }
        v.extend((0..non_canonical_large_order_encodings().len()).map(Case::NonCanonicalKey));
        v.push(Case::KeyNotOnCurve);
        v
    }

    /// One representative of each kind (for the sweeps that try every batch
    /// size and position).
    pub fn kinds() -> Vec<Case> {
        vec![
            Case::Valid,
            Case::MixedOrderR(1),
            Case::SmallOrderR(0),
            Case::SmallOrderR(9),
            Case::SmallOrderRZeroS(3),
            Case::MixedOrderKey(2),
            Case::MixedOrderKeyAndR(3, 5),
            Case::SPlusL,
            Case::SHighBit,
            Case::RNotOnCurve,
            Case::WrongMessage,
            Case::SmallOrderKey(0, 0),
            Case::SmallOrderKey(12, 5),
            Case::NonCanonicalKey(0),
            Case::KeyNotOnCurve,
        ]
    }

    /// A short stable name (for the vector table and test output).
    pub fn name(self) -> String {
        match self {
            Case::Valid => "valid".into(),
            Case::MixedOrderR(i) => format!("mixed_order_r_{i}"),
            Case::SmallOrderR(i) => format!("small_order_r_{i}"),
            Case::SmallOrderRZeroS(i) => format!("small_order_r_zero_s_{i}"),
            Case::MixedOrderKey(i) => format!("mixed_order_key_{i}"),
            Case::MixedOrderKeyAndR(i, j) => format!("mixed_order_key_{i}_and_r_{j}"),
            Case::SPlusL => "s_plus_l".into(),
            Case::SHighBit => "s_high_bit".into(),
            Case::RNotOnCurve => "r_not_on_curve".into(),
            Case::WrongMessage => "wrong_message".into(),
            Case::SmallOrderKey(a, r) => format!("small_order_key_{a}_r_{r}"),
            Case::NonCanonicalKey(i) => format!("non_canonical_key_{i}"),
            Case::KeyNotOnCurve => "key_not_on_curve".into(),
        }
    }

    /// The chain rule's answer for this case.
    pub fn expected(self) -> Result<(), SigError> {
        match self {
            Case::Valid
            | Case::MixedOrderR(_)
            | Case::SmallOrderR(_)
            | Case::MixedOrderKey(_)
            | Case::MixedOrderKeyAndR(..) => Ok(()),
            Case::SmallOrderRZeroS(_)
            | Case::SPlusL
            | Case::SHighBit
            | Case::RNotOnCurve
            | Case::WrongMessage => Err(SigError::BadSignature),
            Case::SmallOrderKey(..) | Case::NonCanonicalKey(_) | Case::KeyNotOnCurve => {
                Err(SigError::BadPublicKey)
            }
        }
    }

    /// Whether the key of this case is the signer's own public key (so a
    /// funded account can send it); the others sign for a derived key.
    pub fn uses_signer_key(self) -> bool {
        !matches!(
            self,
            Case::MixedOrderKey(_)
                | Case::MixedOrderKeyAndR(..)
                | Case::SmallOrderKey(..)
                | Case::NonCanonicalKey(_)
                | Case::KeyNotOnCurve
        )
    }
}

/// Makes the signatures of every [`Case`] for one secret key.
pub struct Crafter {
    a: Scalar,
    key: [u8; 32],
    nonce_seed: [u8; 32],
}

impl Crafter {
    pub fn new(signer: &SigningKey) -> Self {
        let nonce_seed = Sha512::digest(signer.to_bytes())[32..]
            .try_into()
            .expect("64 = 32 + 32");
        Self {
            a: signer.to_scalar(),
            key: signer.verifying_key().to_bytes(),
            nonce_seed,
        }
    }

    /// The key field of `case` for this signer.
    pub fn key_for(&self, case: Case) -> [u8; 32] {
        let a_point = EdwardsPoint::mul_base(&self.a);
        match case {
            Case::MixedOrderKey(i) | Case::MixedOrderKeyAndR(i, _) => {
                (a_point + EIGHT_TORSION[i]).compress().0
            }
            Case::SmallOrderKey(i, _) => small_order_encodings()[i],
            Case::NonCanonicalKey(i) => non_canonical_large_order_encodings()[i],
            Case::KeyNotOnCurve => not_on_curve(),
            _ => self.key,
        }
    }

    /// `(key, signature)` of `case` over `message`. Deterministic.
    pub fn sign(&self, case: Case, message: &[u8]) -> ([u8; 32], [u8; 64]) {
        let key = self.key_for(case);
        let r = self.nonce(message);
        let r_point = EdwardsPoint::mul_base(&r);
        let sig = match case {
            Case::Valid
            | Case::MixedOrderKey(_)
            | Case::NonCanonicalKey(_)
            | Case::KeyNotOnCurve
            | Case::SPlusL
            | Case::SHighBit => {
                let mut s = self.sign_parts(&key, r_point.compress().0, r, message);
                match case {
                    Case::SPlusL => add_l(&mut s),
                    Case::SHighBit => s[63] |= 0x80,
                    _ => {}
                }
                s
            }
            Case::MixedOrderR(t) | Case::MixedOrderKeyAndR(_, t) => {
                let rb = (r_point + EIGHT_TORSION[t]).compress().0;
                self.sign_parts(&key, rb, r, message)
            }
            Case::SmallOrderR(i) => {
                self.sign_parts(&key, small_order_encodings()[i], Scalar::ZERO, message)
            }
            Case::SmallOrderRZeroS(i) | Case::SmallOrderKey(_, i) => {
                let mut s = [0u8; 64];
                s[..32].copy_from_slice(&small_order_encodings()[i]);
                s
            }
            Case::RNotOnCurve => {
                let mut s = self.sign_parts(&key, r_point.compress().0, r, message);
                s[..32].copy_from_slice(&not_on_curve());
                s
            }
            Case::WrongMessage => {
                let mut other = message.to_vec();
                other.push(0);
                self.sign_parts(&key, r_point.compress().0, r, &other)
            }
        };
        (key, sig)
    }

    /// `r_bytes || (r + k·a)` with `k = H(r_bytes || key || message)`.
    fn sign_parts(&self, key: &[u8; 32], r_bytes: [u8; 32], r: Scalar, message: &[u8]) -> [u8; 64] {
        let k = Scalar::from_bytes_mod_order_wide(
            &Sha512::new()
                .chain_update(r_bytes)
                .chain_update(key)
                .chain_update(message)
                .finalize()
                .into(),
        );
        let s = r + k * self.a;
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&r_bytes);
        out[32..].copy_from_slice(s.as_bytes());
        out
    }

    fn nonce(&self, message: &[u8]) -> Scalar {
        Scalar::from_bytes_mod_order_wide(
            &Sha512::new()
                .chain_update(self.nonce_seed)
                .chain_update(message)
                .finalize()
                .into(),
        )
    }
}

/// Adds `L` to the little-endian `S` in `sig[32..]` (S < L < 2^253, so the
/// sum fits in 32 bytes).
fn add_l(sig: &mut [u8; 64]) {
    let mut carry = 0u16;
    for (b, l) in sig[32..].iter_mut().zip(L_BYTES) {
        let v = *b as u16 + l as u16 + carry;
        *b = v as u8;
        carry = v >> 8;
    }
    debug_assert_eq!(carry, 0);
}

/// The first `y` (from 2 up) that is not the `y` of a curve point: 32 bytes
/// that decode to nothing.
fn not_on_curve() -> [u8; 32] {
    (2u8..)
        .map(|y| {
            let mut b = [0u8; 32];
            b[0] = y;
            b
        })
        .find(|b| CompressedEdwardsY(*b).decompress().is_none())
        .expect("half of all y are not on the curve")
}

/// `[8]P = identity` for the point `bytes` decodes to (for tests).
pub fn is_small_order_encoding(bytes: &[u8; 32]) -> bool {
    CompressedEdwardsY(*bytes)
        .decompress()
        .is_some_and(|p| p.is_small_order())
}
