//! The chain's ed25519 acceptance rule: one function decides, for every
//! input, whether a signature is valid. Every path of the node (client
//! ingress, peers' batches, block signatures, replay) asks this module, and
//! the batched fast path can only return the single rule's answers.
//!
//! The rule (docs/protocol.md "Signature rule", decision 0006) is ZIP-215
//! for the signature and the equation, plus a key rule of our own:
//!
//! 1. The public key `A` (32 bytes) must be the canonical encoding of a curve
//!    point (`y < p`), must decode, and must not be of small order (all eight
//!    small-order points are rejected, whatever their encoding). Otherwise:
//!    [`SigError::BadPublicKey`].
//! 2. `S` (signature bytes 32..64, little-endian) must be `< L`, the order of
//!    the prime subgroup. Otherwise: [`SigError::BadSignature`].
//! 3. `R` (signature bytes 0..32) must decode to a curve point; non-canonical
//!    encodings and small-order points are accepted (ZIP-215). Otherwise:
//!    [`SigError::BadSignature`].
//! 4. `k = SHA-512(R_bytes || A_bytes || message) mod L`, over the bytes as
//!    received, and the cofactored equation `[8][S]B = [8]R + [8][k]A` must
//!    hold. Otherwise: [`SigError::BadSignature`].
//!
//! Checks run in that order; the first failure is the answer. Each depends
//! on the one signature alone, so a batch cannot change an answer.
//!
//! ## The batch fast path
//!
//! [`verify_many`] checks 1–3 per signature (their failures are single
//! answers), then tests the remaining equations together with one
//! multiscalar multiplication:
//!
//! ```text
//! [8]( Σ z_i·R_i + Σ (z_i·k_i)·A_i − (Σ z_i·S_i)·B ) = identity
//! ```
//!
//! with independent 128-bit `z_i` from a CSPRNG (`rand::thread_rng`, never
//! derived from the batch's bytes, so an attacker cannot search offline for a
//! batch that passes). Every valid signature satisfies its cofactored
//! equation, so a batch of valid signatures always passes; a batch with an
//! invalid one passes with probability below 2^-120. When the batch fails,
//! each signature gets the answer of the single equation.

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use rand::RngCore;
use sha2::{Digest as _, Sha512};

use crate::reason::RejectReason;

pub mod craft;

/// Why a signature is refused under the chain's rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum SigError {
    /// The key is not the canonical encoding of a point outside the
    /// small-order subgroup (rule 1).
    #[error("public key is not a canonical ed25519 point of large order")]
    BadPublicKey,
    /// `S ≥ L`, `R` does not decode, or the equation fails (rules 2–4).
    #[error("signature does not verify")]
    BadSignature,
}

impl From<SigError> for RejectReason {
    fn from(e: SigError) -> Self {
        match e {
            SigError::BadPublicKey => RejectReason::BadPublicKey,
            SigError::BadSignature => RejectReason::BadSignature,
        }
    }
}

/// The verification backend the node runs: the rule above on
/// curve25519-dalek 4, whose field arithmetic picks AVX2 at run time where
/// the CPU has it and the portable 64-bit code elsewhere.
pub fn backend() -> &'static str {
    if cpu_support().avx2 {
        "zip215-dalek4-avx2"
    } else {
        "zip215-dalek4-serial"
    }
}

/// What this CPU offers a verification backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuSupport {
    /// AVX2: curve25519-dalek's field arithmetic uses it (picked at run
    /// time), so [`backend`] runs on it.
    pub avx2: bool,
    /// AVX-512 IFMA (52-bit multiply-add): what the fastest ed25519
    /// backends use (curve25519-dalek's AVX-512 backend, which needs a
    /// nightly compiler; ed25519-simd). No backend of this build uses it.
    pub avx512ifma: bool,
}

/// This CPU's support, detected at run time.
pub fn cpu_support() -> CpuSupport {
    #[cfg(target_arch = "x86_64")]
    {
        CpuSupport {
            avx2: std::arch::is_x86_feature_detected!("avx2"),
            avx512ifma: std::arch::is_x86_feature_detected!("avx512ifma"),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        CpuSupport {
            avx2: false,
            avx512ifma: false,
        }
    }
}

/// `velox tune check`'s line on verification: the backend that runs, and
/// what this CPU could use beyond it.
pub fn backend_report(backend: &str, cpu: CpuSupport) -> String {
    let could = if cpu.avx512ifma {
        "this CPU has AVX-512 IFMA: an IFMA backend (curve25519-dalek's AVX-512 \
         backend, which needs a nightly compiler, or ed25519-simd) would verify \
         faster; this build has none (issue 18)"
    } else if cpu.avx2 {
        "AVX2 is the most this CPU offers a backend, and it is used"
    } else {
        "this CPU has no AVX2: the portable 64-bit arithmetic runs"
    };
    format!("{backend} runs; {could}")
}

/// A public key that passed rule 1, decoded once.
#[derive(Clone, Copy, Debug)]
pub struct PublicKey {
    bytes: [u8; 32],
    /// `-A`: what the single equation multiplies by `k`.
    minus_a: EdwardsPoint,
}

impl PublicKey {
    /// Applies rule 1.
    pub fn parse(bytes: &[u8; 32]) -> Result<Self, SigError> {
        if !is_canonical_y(bytes) {
            return Err(SigError::BadPublicKey);
        }
        let a = CompressedEdwardsY(*bytes)
            .decompress()
            .ok_or(SigError::BadPublicKey)?;
        // Covers the remaining non-canonical encodings too: x = 0 with the
        // sign bit set only happens for y = ±1, both of small order.
        if a.is_small_order() {
            return Err(SigError::BadPublicKey);
        }
        Ok(Self {
            bytes: *bytes,
            minus_a: -a,
        })
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }
}

/// `y < p = 2^255 - 19`, the sign bit ignored: the field element of the
/// encoding is reduced.
fn is_canonical_y(bytes: &[u8; 32]) -> bool {
    let top = bytes[31] & 0x7f;
    if top != 0x7f || bytes[1..31].iter().any(|&b| b != 0xff) {
        return true;
    }
    // y ≥ 2^255 - 19 exactly when the lowest byte is ≥ 0xed.
    bytes[0] < 0xed
}

/// One signature with rules 1–3 passed and its challenge computed: only the
/// equation is left.
#[derive(Clone, Copy, Debug)]
struct Prepared {
    minus_a: EdwardsPoint,
    r: EdwardsPoint,
    s: Scalar,
    k: Scalar,
}

impl Prepared {
    fn new(key: &PublicKey, message: &[u8], signature: &[u8; 64]) -> Result<Self, SigError> {
        let r_bytes: [u8; 32] = signature[..32].try_into().expect("64 = 32 + 32");
        let s_bytes: [u8; 32] = signature[32..].try_into().expect("64 = 32 + 32");
        let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes))
            .ok_or(SigError::BadSignature)?;
        let r = CompressedEdwardsY(r_bytes)
            .decompress()
            .ok_or(SigError::BadSignature)?;
        let mut h = Sha512::new();
        h.update(r_bytes);
        h.update(key.bytes);
        h.update(message);
        let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
        Ok(Self {
            minus_a: key.minus_a,
            r,
            s,
            k,
        })
    }

    /// Rule 4 alone: `[8](R − ([S]B − [k]A)) = identity`.
    fn equation_holds(&self) -> bool {
        let r_prime =
            EdwardsPoint::vartime_double_scalar_mul_basepoint(&self.k, &self.minus_a, &self.s);
        (self.r - r_prime).mul_by_cofactor().is_identity()
    }
}

/// The rule: the answer for one signature.
pub fn verify(key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> Result<(), SigError> {
    verify_with_key(&PublicKey::parse(key)?, message, signature)
}

/// The rule with rule 1 already applied to the key.
pub fn verify_with_key(
    key: &PublicKey,
    message: &[u8],
    signature: &[u8; 64],
) -> Result<(), SigError> {
    if Prepared::new(key, message, signature)?.equation_holds() {
        Ok(())
    } else {
        Err(SigError::BadSignature)
    }
}

/// One signature for [`verify_many`].
#[derive(Clone, Copy, Debug)]
pub struct Item<'a> {
    pub key: &'a [u8; 32],
    pub message: &'a [u8],
    pub signature: &'a [u8; 64],
}

/// Largest number of equations tested in one multiscalar multiplication:
/// larger batches amortise little more and make the fallback after one bad
/// signature dearer. Longer inputs are split into chunks of this size.
pub const SIG_BATCH_MAX: usize = 64;

/// Answers every item exactly as [`verify`] would, in input order, using the
/// batch equation as a fast path (see the module docs).
pub fn verify_many(items: &[Item<'_>]) -> Vec<Result<(), SigError>> {
    let mut out = Vec::with_capacity(items.len());
    let mut rng = rand::thread_rng();
    for chunk in items.chunks(SIG_BATCH_MAX) {
        verify_chunk(chunk, &mut rng, &mut out);
    }
    debug_assert_eq!(out.len(), items.len());
    out
}

fn verify_chunk(items: &[Item<'_>], rng: &mut impl RngCore, out: &mut Vec<Result<(), SigError>>) {
    let first = out.len();
    let mut prepared: Vec<(usize, Prepared)> = Vec::with_capacity(items.len());
    for (i, it) in items.iter().enumerate() {
        match PublicKey::parse(it.key).and_then(|k| Prepared::new(&k, it.message, it.signature)) {
            Ok(p) => {
                prepared.push((first + i, p));
                out.push(Ok(()));
            }
            Err(e) => out.push(Err(e)),
        }
    }
    let batch_passed = match prepared.len() {
        0 => return,
        // A batch of one costs more than the single equation.
        1 => false,
        _ => batch_equation_holds(&prepared, rng),
    };
    if batch_passed {
        return;
    }
    for (at, p) in &prepared {
        if !p.equation_holds() {
            out[*at] = Err(SigError::BadSignature);
        }
    }
}

/// The cofactored batch equation over `prepared`, with fresh random
/// coefficients. True implies (except with probability < 2^-120) that every
/// single equation holds; every single equation holding implies true.
fn batch_equation_holds(prepared: &[(usize, Prepared)], rng: &mut impl RngCore) -> bool {
    let n = prepared.len();
    let mut scalars = Vec::with_capacity(1 + 2 * n);
    let mut points = Vec::with_capacity(1 + 2 * n);
    let mut b_coeff = Scalar::ZERO;
    scalars.push(Scalar::ZERO); // the basepoint's, filled in below
    points.push(ED25519_BASEPOINT_POINT);
    for (_, p) in prepared {
        let mut z = [0u8; 32];
        rng.fill_bytes(&mut z[..16]);
        let z = Scalar::from_bytes_mod_order(z);
        b_coeff -= z * p.s;
        scalars.push(z);
        points.push(p.r);
        // z·k·A = (−z·k)·(−A)
        scalars.push(-(z * p.k));
        points.push(p.minus_a);
    }
    scalars[0] = b_coeff;
    EdwardsPoint::vartime_multiscalar_mul(&scalars, &points)
        .mul_by_cofactor()
        .is_identity()
}

#[cfg(test)]
mod tests;
