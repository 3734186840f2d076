//! The rule against known vectors, against ZIP-215's reference
//! implementation (ed25519-zebra), and the batch path against the single
//! rule at every batch size and position.

use super::craft::{self, Case, Crafter};
use super::*;
use ed25519_dalek::{Signer, SigningKey};
use proptest::prelude::*;

fn h32(s: &str) -> [u8; 32] {
    hex::decode(s).unwrap().try_into().unwrap()
}
fn h64(s: &str) -> [u8; 64] {
    hex::decode(s).unwrap().try_into().unwrap()
}

/// ed25519-zebra's answer: ZIP-215 without our key rule.
fn zip215(key: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> bool {
    ed25519_zebra::VerificationKey::try_from(*key)
        .and_then(|vk| vk.verify(&ed25519_zebra::Signature::from_bytes(sig), msg))
        .is_ok()
}

/// What the chain's rule must answer given ZIP-215's answer: ZIP-215's,
/// except that keys outside rule 1 are refused first.
fn expected_from_zip215(key: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> Result<(), SigError> {
    let non_canonical = CompressedEdwardsY(*key)
        .decompress()
        .is_some_and(|p| p.compress().0 != *key);
    let on_curve = CompressedEdwardsY(*key).decompress().is_some();
    if !on_curve || non_canonical || craft::is_small_order_encoding(key) {
        return Err(SigError::BadPublicKey);
    }
    if zip215(key, msg, sig) {
        Ok(())
    } else {
        Err(SigError::BadSignature)
    }
}

/// Message, key, signature (hex), ZIP-215's published answer, the chain
/// rule's answer.
type SpecCase = (
    &'static str,
    &'static str,
    &'static str,
    bool,
    Result<(), SigError>,
);

/// The ed25519-speccheck vectors ("Taming the many EdDSAs"), cases 0–11,
/// with ZIP-215's answers from the Zebra row of the speccheck results.
const SPECCHECK: [SpecCase; 12] = [
    ("8c93255d71dcab10e8f379c26200f3c7bd5f09d9bc3068d3ef4edeb4853022b6", "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa", "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a0000000000000000000000000000000000000000000000000000000000000000", true, Err(SigError::BadPublicKey)),
    ("9bd9f44f4dcc75bd531b56b2cd280b0bb38fc1cd6d1230e14861d861de092e79", "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa", "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43a5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04", true, Err(SigError::BadPublicKey)),
    ("aebf3f2601a0c8c5d39cc7d8911642f740b78168218da8471772b35f9d35b9ab", "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43", "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa8c4bd45aecaca5b24fb97bc10ac27ac8751a7dfe1baff8b953ec9f5833ca260e", true, Ok(())),
    ("9bd9f44f4dcc75bd531b56b2cd280b0bb38fc1cd6d1230e14861d861de092e79", "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d", "9046a64750444938de19f227bb80485e92b83fdb4b6506c160484c016cc1852f87909e14428a7a1d62e9f22f3d3ad7802db02eb2e688b6c52fcd6648a98bd009", true, Ok(())),
    ("e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec4011eaccd55b53f56c", "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d", "160a1cb0dc9c0258cd0a7d23e94d8fa878bcb1925f2c64246b2dee1796bed5125ec6bc982a269b723e0668e540911a9a6a58921d6925e434ab10aa7940551a09", true, Ok(())),
    ("e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec4011eaccd55b53f56c", "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d", "21122a84e0b5fca4052f5b1235c80a537878b38f3142356b2c2384ebad4668b7e40bc836dac0f71076f9abe3a53f9c03c1ceeeddb658d0030494ace586687405", true, Ok(())),
    ("85e241a07d148b41e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec40", "442aad9f089ad9e14647b1ef9099a1ff4798d78589e66f28eca69c11f582a623", "e96f66be976d82e60150baecff9906684aebb1ef181f67a7189ac78ea23b6c0e547f7690a0e2ddcd04d87dbc3490dc19b3b3052f7ff0538cb68afb369ba3a514", false, Err(SigError::BadSignature)),
    ("85e241a07d148b41e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec40", "442aad9f089ad9e14647b1ef9099a1ff4798d78589e66f28eca69c11f582a623", "8ce5b96c8f26d0ab6c47958c9e68b937104cd36e13c33566acd2fe8d38aa19427e71f98a473474f2f13f06f97c20d58cc3f54b8bd0d272f42b695dd7e89a8c22", false, Err(SigError::BadSignature)),
    ("9bedc267423725d473888631ebf45988bad3db83851ee85c85e241a07d148b41", "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43", "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff03be9678ac102edcd92b0210bb34d7428d12ffc5df5f37e359941266a4e35f0f", false, Err(SigError::BadSignature)),
    ("9bedc267423725d473888631ebf45988bad3db83851ee85c85e241a07d148b41", "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43", "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffca8c5b64cd208982aa38d4936621a4775aa233aa0505711d8fdcfdaa943d4908", true, Ok(())),
    ("e96b7021eb39c1a163b6da4e3093dcd3f21387da4cc4572be588fafae23c155b", "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", "a9d55260f765261eb9b84e106f665e00b867287a761990d7135963ee0a7d59dca5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04", true, Err(SigError::BadPublicKey)),
    ("39a591f5321bbe07fd5a23dc2f39d025d74526615746727ceefd6e82ae65c06f", "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", "a9d55260f765261eb9b84e106f665e00b867287a761990d7135963ee0a7d59dca5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04", true, Err(SigError::BadPublicKey)),
];

/// RFC 8032 §7.1 tests 1–3: secret, public key, message, signature.
const RFC8032: [(&str, &str, &str, &str); 3] = [
    ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60", "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "", "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb", "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72", "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
    ("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7", "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82", "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"),
];

/// One owned vector: key, message, signature.
#[derive(Clone, Debug)]
struct Vector {
    key: [u8; 32],
    msg: Vec<u8>,
    sig: [u8; 64],
}

impl Vector {
    fn item(&self) -> Item<'_> {
        Item {
            key: &self.key,
            message: &self.msg,
            signature: &self.sig,
        }
    }
    fn single(&self) -> Result<(), SigError> {
        verify(&self.key, &self.msg, &self.sig)
    }
}

fn signer(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn crafted(case: Case, seed: u8, msg: &[u8]) -> Vector {
    let (key, sig) = Crafter::new(&signer(seed)).sign(case, msg);
    Vector {
        key,
        msg: msg.to_vec(),
        sig,
    }
}

fn valid(seed: u8, msg: &[u8]) -> Vector {
    crafted(Case::Valid, seed, msg)
}

fn speccheck_vectors() -> Vec<(Vector, Result<(), SigError>)> {
    SPECCHECK
        .iter()
        .map(|(m, k, s, _, want)| {
            (
                Vector {
                    key: h32(k),
                    msg: hex::decode(m).unwrap(),
                    sig: h64(s),
                },
                *want,
            )
        })
        .collect()
}

/// Every vector with a known answer: speccheck, RFC 8032, every crafted case.
fn all_vectors() -> Vec<(Vector, Result<(), SigError>)> {
    let mut v = speccheck_vectors();
    for (_, pk, m, s) in RFC8032 {
        v.push((
            Vector {
                key: h32(pk),
                msg: hex::decode(m).unwrap(),
                sig: h64(s),
            },
            Ok(()),
        ));
    }
    for case in Case::all() {
        v.push((crafted(case, 7, b"velox vector"), case.expected()));
    }
    v
}

#[test]
fn speccheck_vectors_get_the_documented_answers() {
    for (i, (m, k, s, zebra, want)) in SPECCHECK.iter().enumerate() {
        let (key, msg, sig) = (h32(k), hex::decode(m).unwrap(), h64(s));
        assert_eq!(zip215(&key, &msg, &sig), *zebra, "speccheck {i}: oracle");
        assert_eq!(verify(&key, &msg, &sig), *want, "speccheck {i}");
        assert_eq!(
            expected_from_zip215(&key, &msg, &sig),
            *want,
            "speccheck {i}"
        );
    }
}

#[test]
fn rfc8032_vectors_verify_and_are_what_dalek_signs() {
    for (sk, pk, m, s) in RFC8032 {
        let key = SigningKey::from_bytes(&h32(sk));
        let msg = hex::decode(m).unwrap();
        assert_eq!(key.verifying_key().to_bytes(), h32(pk));
        assert_eq!(key.sign(&msg).to_bytes(), h64(s));
        assert_eq!(verify(&h32(pk), &msg, &h64(s)), Ok(()));
        let mut other = msg.clone();
        other.push(1);
        assert_eq!(
            verify(&h32(pk), &other, &h64(s)),
            Err(SigError::BadSignature)
        );
    }
}

#[test]
fn crafted_cases_get_their_answers_and_agree_with_zip215() {
    let small = craft::small_order_encodings();
    assert_eq!(small.len(), 14, "8 canonical + 6 non-canonical");
    for b in &small {
        assert!(craft::is_small_order_encoding(b));
    }
    assert!(!craft::non_canonical_large_order_encodings().is_empty());
    let cases = Case::all();
    for case in &cases {
        for seed in [1u8, 2, 3] {
            let v = crafted(*case, seed, format!("msg {seed}").as_bytes());
            assert_eq!(v.single(), case.expected(), "{}", case.name());
            assert_eq!(
                expected_from_zip215(&v.key, &v.msg, &v.sig),
                case.expected(),
                "{} vs ZIP-215",
                case.name()
            );
        }
    }
    // The cases cofactorless verification gets wrong are there: strict
    // verification refuses these valid ones.
    for case in [
        Case::MixedOrderR(1),
        Case::SmallOrderR(1),
        Case::MixedOrderKey(1),
    ] {
        let v = crafted(case, 1, b"m");
        let strict = ed25519_dalek::VerifyingKey::from_bytes(&v.key)
            .and_then(|k| k.verify_strict(&v.msg, &ed25519_dalek::Signature::from_bytes(&v.sig)));
        assert!(strict.is_err(), "{}", case.name());
        assert_eq!(v.single(), Ok(()));
    }
}

/// `verify_many` on `batch` answers each member as `verify` does.
fn assert_batch_matches(batch: &[Vector], what: &str) {
    let items: Vec<Item<'_>> = batch.iter().map(Vector::item).collect();
    let got = verify_many(&items);
    assert_eq!(got.len(), batch.len());
    for (i, (g, v)) in got.iter().zip(batch).enumerate() {
        assert_eq!(*g, v.single(), "{what}: member {i} of {}", batch.len());
    }
}

/// Each kind of case in batches of every size from 1 to 64, among valid
/// neighbours and next to an invalid one: at every position for the kinds
/// where cofactorless and cofactored verification disagree or the batch
/// must fail (one accepted, one refused by each rule), at the first, middle
/// and last position for the others (every position of every size for all
/// fifteen kinds is ~4x the time for the same code paths).
#[test]
fn every_kind_answers_alike_at_every_batch_size_and_position() {
    let neighbours: Vec<Vector> = (0..64)
        .map(|i| valid(100 + (i % 20) as u8, format!("n{i}").as_bytes()))
        .collect();
    let bad_neighbour = crafted(Case::SPlusL, 99, b"bad neighbour");
    let every_position = [
        Case::MixedOrderR(1),
        Case::SmallOrderR(9),
        Case::SmallOrderRZeroS(3),
        Case::SmallOrderKey(12, 5),
    ];
    for case in Case::kinds() {
        let v = crafted(case, 5, b"edge");
        assert_eq!(v.single(), case.expected(), "{}", case.name());
        for size in 1..=64usize {
            let positions: Vec<usize> = if every_position.contains(&case) {
                (0..size).collect()
            } else {
                vec![0, size / 2, size - 1]
            };
            for at in positions {
                let mut batch: Vec<Vector> = neighbours[..size - 1].to_vec();
                batch.insert(at, v.clone());
                assert_batch_matches(&batch, &case.name());
            }
            if size >= 2 {
                for at in [0, size / 2, size - 1] {
                    let mut batch: Vec<Vector> = neighbours[..size - 2].to_vec();
                    batch.insert(0, bad_neighbour.clone());
                    batch.insert(at, v.clone());
                    assert_batch_matches(&batch, &format!("{} + invalid", case.name()));
                }
            }
        }
    }
}

/// Every known vector at the first, middle and last position of batches
/// of several sizes, among valid neighbours.
#[test]
fn every_vector_answers_alike_in_batches() {
    let neighbours: Vec<Vector> = (0..64)
        .map(|i| valid(40 + (i % 9) as u8, format!("n{i}").as_bytes()))
        .collect();
    for (v, want) in all_vectors() {
        assert_eq!(v.single(), want, "{v:?}");
        for size in [1usize, 2, 3, 8, 31, 64] {
            for at in [0, size / 2, size - 1] {
                let mut batch: Vec<Vector> = neighbours[..size - 1].to_vec();
                batch.insert(at, v.clone());
                assert_batch_matches(&batch, &format!("{v:?}"));
            }
        }
    }
}

/// Longer inputs are split into chunks; answers stay in input order.
#[test]
fn long_inputs_keep_order_across_chunks() {
    let mut batch: Vec<Vector> = (0..150).map(|i| valid(i as u8, &[i as u8])).collect();
    for at in [3usize, 64, 100, 149] {
        batch[at] = crafted(Case::WrongMessage, at as u8, &[at as u8]);
    }
    batch[77] = crafted(Case::KeyNotOnCurve, 1, b"x");
    let items: Vec<Item<'_>> = batch.iter().map(Vector::item).collect();
    let got = verify_many(&items);
    for (i, g) in got.iter().enumerate() {
        let want = match i {
            3 | 64 | 100 | 149 => Err(SigError::BadSignature),
            77 => Err(SigError::BadPublicKey),
            _ => Ok(()),
        };
        assert_eq!(*g, want, "{i}");
    }
}

/// A random mutation of a valid signature (`kind` picks which).
fn mutate(v: &mut Vector, kind: u8, bit: usize, pick: usize) {
    let small = craft::small_order_encodings();
    let torsion = curve25519_dalek::constants::EIGHT_TORSION;
    match kind % 7 {
        0 => v.sig[bit % 256 / 8] ^= 1 << (bit % 8), // a bit of R
        1 => v.sig[32 + bit % 256 / 8] ^= 1 << (bit % 8), // a bit of S
        2 => v.key[bit % 256 / 8] ^= 1 << (bit % 8), // a bit of A
        3 => v.sig[..32].copy_from_slice(&small[pick % small.len()]), // R small
        4 => v.key = small[pick % small.len()],      // A small
        5 => {
            // R replaced by itself plus a torsion point (mixed order)
            let r = CompressedEdwardsY(v.sig[..32].try_into().unwrap())
                .decompress()
                .unwrap();
            v.sig[..32].copy_from_slice(&(r + torsion[1 + pick % 7]).compress().0);
        }
        _ => {
            // A replaced by itself plus a torsion point
            let a = CompressedEdwardsY(v.key).decompress().unwrap();
            v.key = (a + torsion[1 + pick % 7]).compress().0;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Random mutations of valid signatures get ZIP-215's answer (with the
    /// key rule), alone and inside a random batch of mutated and valid
    /// signatures.
    #[test]
    fn random_batches_answer_as_single(
        members in proptest::collection::vec(
            (any::<u8>(), any::<bool>(), any::<u8>(), 0usize..256, 0usize..14),
            1..=64,
        )
    ) {
        let batch: Vec<Vector> = members
            .iter()
            .enumerate()
            .map(|(i, (seed, mutated, kind, bit, pick))| {
                let mut v = valid(*seed, format!("p{i}").as_bytes());
                if *mutated {
                    mutate(&mut v, *kind, *bit, *pick);
                }
                v
            })
            .collect();
        for v in &batch {
            prop_assert_eq!(v.single(), expected_from_zip215(&v.key, &v.msg, &v.sig));
        }
        let items: Vec<Item<'_>> = batch.iter().map(Vector::item).collect();
        let got = verify_many(&items);
        for (g, v) in got.iter().zip(&batch) {
            prop_assert_eq!(*g, v.single());
        }
    }
}

#[test]
fn adding_l_to_s_is_refused_where_the_plain_signature_passes() {
    let v = valid(3, b"m");
    assert_eq!(v.single(), Ok(()));
    let w = crafted(Case::SPlusL, 3, b"m");
    assert_eq!(w.key, v.key);
    assert_eq!(w.sig[..32], v.sig[..32]);
    assert_eq!(w.single(), Err(SigError::BadSignature));
}

/// The vector list published in docs/protocol.md, one block per vector.
fn doc_vectors() -> String {
    let mut out = String::new();
    let answer = |r: Result<(), SigError>| match r {
        Ok(()) => "accept".to_string(),
        Err(e) => {
            let r = RejectReason::from(e);
            format!("reject {} {}", r.code(), r.label())
        }
    };
    let mut push = |name: &str, v: &Vector, want: Result<(), SigError>| {
        assert_eq!(v.single(), want, "{name}");
        out.push_str(&format!(
            "name:   {name}\nkey:    {}\nmsg:    {}\nsig:    {}\nanswer: {}\n\n",
            hex::encode(v.key),
            if v.msg.is_empty() {
                "(empty)".to_string()
            } else {
                hex::encode(&v.msg)
            },
            hex::encode(v.sig),
            answer(want)
        ));
    };
    let (_, pk, m, s) = RFC8032[0];
    push(
        "rfc8032_test_1",
        &Vector {
            key: h32(pk),
            msg: hex::decode(m).unwrap(),
            sig: h64(s),
        },
        Ok(()),
    );
    for (i, (v, want)) in speccheck_vectors().into_iter().enumerate() {
        push(&format!("speccheck_{i}"), &v, want);
    }
    for case in Case::kinds() {
        push(
            &case.name(),
            &crafted(case, 7, b"velox vector"),
            case.expected(),
        );
    }
    out
}

/// docs/protocol.md lists exactly these vectors between its markers. With
/// `VELOX_UPDATE_DOCS=1` the test writes them there instead.
#[test]
fn protocol_doc_lists_the_vectors() {
    let path = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap())
        .join("../docs/protocol.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let (begin, end) = (
        "<!-- sig-vectors:begin -->\n```text\n",
        "```\n<!-- sig-vectors:end -->",
    );
    let from = doc.find(begin).expect("begin marker") + begin.len();
    let to = doc.find(end).expect("end marker");
    let want = doc_vectors();
    if std::env::var("VELOX_UPDATE_DOCS").is_ok() {
        let new = format!("{}{}{}", &doc[..from], want, &doc[to..]);
        std::fs::write(&path, new).unwrap();
        return;
    }
    assert_eq!(
        &doc[from..to],
        want,
        "run with VELOX_UPDATE_DOCS=1 to rewrite"
    );
}

/// `velox tune check`'s verification line: the backend that runs, and
/// what the CPU could use beyond it, for each kind of CPU.
#[test]
fn the_backend_report_says_what_runs_and_what_the_cpu_could_use() {
    let ifma = CpuSupport {
        avx2: true,
        avx512ifma: true,
    };
    let r = backend_report("zip215-dalek4-avx2", ifma);
    assert!(r.starts_with("zip215-dalek4-avx2 runs; "), "{r}");
    assert!(
        r.contains("AVX-512 IFMA") && r.contains("this build has none"),
        "{r}"
    );
    let avx2 = CpuSupport {
        avx2: true,
        avx512ifma: false,
    };
    assert!(backend_report("zip215-dalek4-avx2", avx2).contains("AVX2 is the most"));
    let none = CpuSupport {
        avx2: false,
        avx512ifma: false,
    };
    assert!(backend_report("zip215-dalek4-serial", none).contains("no AVX2"));
    // The backend named is the one this CPU's detection picks.
    assert_eq!(backend().ends_with("avx2"), cpu_support().avx2);
}
