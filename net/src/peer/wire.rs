//! Validator-to-validator wire messages (docs/protocol.md, "Validator
//! protocol", is the normative description).
//!
//! A frame is `u32 LE length ‖ body`; the body is one rkyv 0.8 archive of a
//! [`PeerMessage`]. [`decode_message`] is the boundary: it checks the frame
//! size, validates the archive with bytecheck, checks the element limits on
//! the archived view (so nothing is allocated for an over-limit message), and
//! only then deserializes. Nothing past it asks "is this well-formed?" again.

use rkyv::rancor;
use rkyv::util::AlignedVec;

/// ALPN of the validator-to-validator protocol.
/// Version 2 added `RoundsRequest` / `RoundsResponse` (the root grew from
/// 40 to 48 bytes); version 3 added `RoundsResponse::parts`.
pub const ALPN_PEER: &[u8] = b"velox-peer/3";
/// Bytes of a frame's length prefix.
pub const PEER_FRAME_PREFIX_BYTES: usize = 4;
/// Default `frame_bytes_max`.
pub const FRAME_BYTES_MAX_DEFAULT: usize = 8 << 20;
/// Alignment rkyv needs for an archive it accesses in place (its
/// `AlignedVec` default); frames are read into buffers of this alignment.
pub const ARCHIVE_ALIGN_BYTES: usize = 16;

/// A reference to a consensus block, as the network carries it. The network
/// does not interpret it; the consensus core maps it to its own types.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WireBlockRef {
    pub round: u64,
    pub author: u32,
    pub digest: [u8; 32],
}

/// One validator-to-validator message. Payloads stay opaque bytes here: the
/// receiver's consensus core (blocks) or mempool (batches) validates them.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum PeerMessage {
    /// An encoded consensus block.
    Block(Vec<u8>),
    /// Asks the receiver for these blocks.
    BlockRequest(Vec<WireBlockRef>),
    /// Encoded blocks answering a request (those the sender has).
    BlockResponse(Vec<Vec<u8>>),
    /// An encoded transaction batch.
    Batch(Vec<u8>),
    /// The sender stored the batch with this digest.
    BatchAck([u8; 32]),
    /// Asks the receiver for the batches with these digests.
    BatchRequest(Vec<[u8; 32]>),
    /// Encoded batches answering a request.
    BatchResponse(Vec<Vec<u8>>),
    /// Liveness and progress; consumed by the network, never forwarded.
    Heartbeat { round: u64, commit_index: u64 },
    /// Asks the receiver for every block it holds of rounds
    /// `from_round..=to_round` (a validator joining from a snapshot).
    RoundsRequest { from_round: u64, to_round: u64 },
    /// One part of the answer to a `RoundsRequest` (encoded blocks, lowest
    /// rounds first). The last part has `done`; every part carries how many
    /// parts the answer has (`parts`), so that a receiver knows it holds
    /// the whole answer whatever order the parts arrived in; `head_round`
    /// is the sender's highest block round when it answered.
    RoundsResponse {
        from_round: u64,
        to_round: u64,
        head_round: u64,
        done: bool,
        parts: u32,
        blocks: Vec<Vec<u8>>,
    },
}

impl PeerMessage {
    /// Short name of the variant, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Block(_) => "block",
            Self::BlockRequest(_) => "block_request",
            Self::BlockResponse(_) => "block_response",
            Self::Batch(_) => "batch",
            Self::BatchAck(_) => "batch_ack",
            Self::BatchRequest(_) => "batch_request",
            Self::BatchResponse(_) => "batch_response",
            Self::Heartbeat { .. } => "heartbeat",
            Self::RoundsRequest { .. } => "rounds_request",
            Self::RoundsResponse { .. } => "rounds_response",
        }
    }
}

/// Size limits every received frame is checked against (and every sent
/// message, so a node never sends what its peers would refuse).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireLimits {
    /// Largest frame body. A reader buffers at most one frame per inbound
    /// connection, so this bounds that memory: committee × 8 MiB by default.
    pub frame_bytes_max: usize,
    /// Most references in a `BlockRequest` or digests in a `BatchRequest`.
    pub refs_per_request_max: usize,
    /// Most blocks in a `BlockResponse` or batches in a `BatchResponse`.
    pub items_per_response_max: usize,
    /// Largest single block or batch (in `Block`, `Batch` or a response).
    pub element_bytes_max: usize,
}

impl Default for WireLimits {
    /// 8 MiB frames hold a response of several full batches; 4 MiB elements
    /// hold a batch of thousands of transactions; 1024 references is a
    /// generous catch-up request (44 KiB archived) and 256 items a response.
    fn default() -> Self {
        Self {
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            refs_per_request_max: 1024,
            items_per_response_max: 256,
            element_bytes_max: 4 << 20,
        }
    }
}

impl WireLimits {
    /// Checks that the limits are usable: positive, and a frame fits its
    /// `u32` length prefix.
    pub fn check(&self) -> Result<(), String> {
        if self.frame_bytes_max == 0 || self.frame_bytes_max > u32::MAX as usize {
            return Err(format!(
                "frame_bytes_max {} must be in 1..=u32::MAX",
                self.frame_bytes_max
            ));
        }
        if self.refs_per_request_max == 0
            || self.items_per_response_max == 0
            || self.element_bytes_max == 0
        {
            return Err("wire limits must be positive".into());
        }
        Ok(())
    }
}

/// Why a received frame was refused. The connection it came on is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge { len: usize, max: usize },
    #[error("empty frame")]
    EmptyFrame,
    #[error("stream ended inside a frame")]
    Truncated,
    #[error("archive failed validation")]
    Malformed,
    #[error("{len} references exceed the maximum of {max}")]
    TooManyRefs { len: usize, max: usize },
    #[error("{len} response items exceed the maximum of {max}")]
    TooManyItems { len: usize, max: usize },
    #[error("element of {len} bytes exceeds the maximum of {max}")]
    ElementTooLarge { len: usize, max: usize },
}

/// Number of [`WireError`] kinds; the length of per-reason counter arrays.
pub const WIRE_ERROR_KINDS: usize = 7;
/// Counter labels, indexed by [`WireError::index`]. Stable: dashboards use them.
pub const WIRE_ERROR_LABELS: [&str; WIRE_ERROR_KINDS] = [
    "frame_too_large",
    "empty_frame",
    "truncated",
    "malformed",
    "too_many_refs",
    "too_many_items",
    "element_too_large",
];

impl WireError {
    /// Position of this kind in [`WIRE_ERROR_LABELS`].
    pub fn index(&self) -> usize {
        match self {
            Self::FrameTooLarge { .. } => 0,
            Self::EmptyFrame => 1,
            Self::Truncated => 2,
            Self::Malformed => 3,
            Self::TooManyRefs { .. } => 4,
            Self::TooManyItems { .. } => 5,
            Self::ElementTooLarge { .. } => 6,
        }
    }

    /// Stable counter label.
    pub fn reason(&self) -> &'static str {
        WIRE_ERROR_LABELS[self.index()]
    }
}

/// Encodes a message as a frame body (no length prefix).
pub fn encode_message(m: &PeerMessage) -> Vec<u8> {
    rkyv::to_bytes::<rancor::Error>(m)
        .expect("serializing owned plain data into a growable buffer cannot fail")
        .into_vec()
}

/// Encodes a message as a whole frame, length prefix included.
pub fn encode_frame(m: &PeerMessage) -> Vec<u8> {
    let body = rkyv::to_bytes::<rancor::Error>(m)
        .expect("serializing owned plain data into a growable buffer cannot fail");
    assert!(body.len() <= u32::MAX as usize);
    let mut out = Vec::with_capacity(PEER_FRAME_PREFIX_BYTES + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Checks a frame's announced length before its body is read.
pub fn check_frame_len(len: usize, limits: &WireLimits) -> Result<(), WireError> {
    if len == 0 {
        return Err(WireError::EmptyFrame);
    }
    if len > limits.frame_bytes_max {
        return Err(WireError::FrameTooLarge {
            len,
            max: limits.frame_bytes_max,
        });
    }
    Ok(())
}

/// Decodes and validates one frame body. Never panics; allocates at most
/// one copy of `bytes` (when they are not aligned) plus the decoded message,
/// whose size the limits bound.
pub fn decode_message(bytes: &[u8], limits: &WireLimits) -> Result<PeerMessage, WireError> {
    check_frame_len(bytes.len(), limits)?;
    if (bytes.as_ptr() as usize) % ARCHIVE_ALIGN_BYTES == 0 {
        decode_aligned(bytes, limits)
    } else {
        let mut copy = AlignedVec::<ARCHIVE_ALIGN_BYTES>::with_capacity(bytes.len());
        copy.extend_from_slice(bytes);
        decode_aligned(&copy, limits)
    }
}

fn decode_aligned(bytes: &[u8], limits: &WireLimits) -> Result<PeerMessage, WireError> {
    debug_assert_eq!((bytes.as_ptr() as usize) % ARCHIVE_ALIGN_BYTES, 0);
    let archived = rkyv::access::<ArchivedPeerMessage, rancor::Failure>(bytes)
        .map_err(|_| WireError::Malformed)?;
    check_archived(archived, limits)?;
    rkyv::deserialize::<PeerMessage, rancor::Failure>(archived).map_err(|_| WireError::Malformed)
}

fn check_count(
    len: usize,
    max: usize,
    err: fn(usize, usize) -> WireError,
) -> Result<(), WireError> {
    if len > max {
        Err(err(len, max))
    } else {
        Ok(())
    }
}

fn too_many_refs(len: usize, max: usize) -> WireError {
    WireError::TooManyRefs { len, max }
}
fn too_many_items(len: usize, max: usize) -> WireError {
    WireError::TooManyItems { len, max }
}
fn element_too_large(len: usize, max: usize) -> WireError {
    WireError::ElementTooLarge { len, max }
}

fn check_archived(m: &ArchivedPeerMessage, l: &WireLimits) -> Result<(), WireError> {
    match m {
        ArchivedPeerMessage::Block(b) | ArchivedPeerMessage::Batch(b) => {
            check_count(b.len(), l.element_bytes_max, element_too_large)
        }
        ArchivedPeerMessage::BlockRequest(refs) => {
            check_count(refs.len(), l.refs_per_request_max, too_many_refs)
        }
        ArchivedPeerMessage::BatchRequest(refs) => {
            check_count(refs.len(), l.refs_per_request_max, too_many_refs)
        }
        ArchivedPeerMessage::BlockResponse(items)
        | ArchivedPeerMessage::BatchResponse(items)
        | ArchivedPeerMessage::RoundsResponse { blocks: items, .. } => {
            check_count(items.len(), l.items_per_response_max, too_many_items)?;
            items
                .iter()
                .try_for_each(|b| check_count(b.len(), l.element_bytes_max, element_too_large))
        }
        ArchivedPeerMessage::BatchAck(_)
        | ArchivedPeerMessage::Heartbeat { .. }
        | ArchivedPeerMessage::RoundsRequest { .. } => Ok(()),
    }
}

/// The same limits on an owned message, checked before sending.
pub fn check_limits(m: &PeerMessage, l: &WireLimits) -> Result<(), WireError> {
    match m {
        PeerMessage::Block(b) | PeerMessage::Batch(b) => {
            check_count(b.len(), l.element_bytes_max, element_too_large)
        }
        PeerMessage::BlockRequest(refs) => {
            check_count(refs.len(), l.refs_per_request_max, too_many_refs)
        }
        PeerMessage::BatchRequest(refs) => {
            check_count(refs.len(), l.refs_per_request_max, too_many_refs)
        }
        PeerMessage::BlockResponse(items)
        | PeerMessage::BatchResponse(items)
        | PeerMessage::RoundsResponse { blocks: items, .. } => {
            check_count(items.len(), l.items_per_response_max, too_many_items)?;
            items
                .iter()
                .try_for_each(|b| check_count(b.len(), l.element_bytes_max, element_too_large))
        }
        PeerMessage::BatchAck(_)
        | PeerMessage::Heartbeat { .. }
        | PeerMessage::RoundsRequest { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<PeerMessage> {
        vec![
            PeerMessage::Block(vec![1, 2, 3]),
            PeerMessage::Block(vec![]),
            PeerMessage::BlockRequest(vec![
                WireBlockRef {
                    round: 7,
                    author: 3,
                    digest: [9; 32],
                },
                WireBlockRef {
                    round: u64::MAX,
                    author: 0,
                    digest: [0; 32],
                },
            ]),
            PeerMessage::BlockResponse(vec![vec![5; 100], vec![]]),
            PeerMessage::Batch(vec![7; 1000]),
            PeerMessage::BatchAck([4; 32]),
            PeerMessage::BatchRequest(vec![[1; 32], [2; 32]]),
            PeerMessage::BatchResponse(vec![vec![8; 33]]),
            PeerMessage::Heartbeat {
                round: 12,
                commit_index: 34,
            },
            PeerMessage::RoundsRequest {
                from_round: 5,
                to_round: 69,
            },
            PeerMessage::RoundsResponse {
                from_round: 5,
                to_round: 69,
                head_round: 80,
                done: true,
                parts: 3,
                blocks: vec![vec![3; 40], vec![]],
            },
        ]
    }

    #[test]
    fn every_variant_roundtrips() {
        let l = WireLimits::default();
        for m in samples() {
            let b = encode_message(&m);
            assert_eq!(decode_message(&b, &l), Ok(m.clone()));
            let f = encode_frame(&m);
            assert_eq!(&f[4..], &b[..]);
            assert_eq!(
                u32::from_le_bytes(f[..4].try_into().unwrap()) as usize,
                b.len()
            );
        }
    }

    /// docs/protocol.md shows these bytes; a change here is a wire break.
    #[test]
    fn encodings_match_the_documented_layout() {
        let hb = encode_message(&PeerMessage::Heartbeat {
            round: 1,
            commit_index: 2,
        });
        let mut want = [0u8; 48];
        want[0] = 7;
        want[8] = 1;
        want[16] = 2;
        assert_eq!(hb, want);
        let block = encode_message(&PeerMessage::Block(vec![0xaa, 0xbb, 0xcc]));
        let mut want = vec![0xaa, 0xbb, 0xcc, 0, 0, 0, 0, 0];
        want.extend_from_slice(&[0, 0, 0, 0]); // tag 0 + padding
        want.extend_from_slice(&(-12i32).to_le_bytes()); // to offset 0
        want.extend_from_slice(&3u32.to_le_bytes());
        want.resize(56, 0);
        assert_eq!(block, want);
        let req = encode_message(&PeerMessage::RoundsRequest {
            from_round: 3,
            to_round: 4,
        });
        let mut want = [0u8; 48];
        want[0] = 8;
        want[8] = 3;
        want[16] = 4;
        assert_eq!(req, want);
    }

    #[test]
    fn unaligned_input_is_copied_not_refused() {
        let m = PeerMessage::BlockResponse(vec![vec![1; 10], vec![2; 20]]);
        let b = encode_message(&m);
        let mut shifted = vec![0u8; b.len() + 1];
        shifted[1..].copy_from_slice(&b);
        assert_eq!(decode_message(&shifted[1..], &WireLimits::default()), Ok(m));
    }

    #[test]
    fn limits_are_enforced_with_typed_errors() {
        let l = WireLimits {
            frame_bytes_max: 4096,
            refs_per_request_max: 2,
            items_per_response_max: 2,
            element_bytes_max: 100,
        };
        let cases = [
            (PeerMessage::Block(vec![0; 101]), "element_too_large"),
            (PeerMessage::Batch(vec![0; 101]), "element_too_large"),
            (PeerMessage::BatchRequest(vec![[0; 32]; 3]), "too_many_refs"),
            (
                PeerMessage::BlockRequest(vec![
                    WireBlockRef {
                        round: 1,
                        author: 1,
                        digest: [0; 32]
                    };
                    3
                ]),
                "too_many_refs",
            ),
            (
                PeerMessage::BlockResponse(vec![vec![]; 3]),
                "too_many_items",
            ),
            (
                PeerMessage::BatchResponse(vec![vec![0; 101]]),
                "element_too_large",
            ),
            (PeerMessage::Block(vec![0; 5000]), "frame_too_large"),
        ];
        for (m, reason) in cases {
            let b = encode_message(&m);
            let e = decode_message(&b, &l).unwrap_err();
            assert_eq!(e.reason(), reason, "{m:?}");
            if reason != "frame_too_large" {
                assert_eq!(check_limits(&m, &l), Err(e));
            }
        }
        assert_eq!(decode_message(&[], &l), Err(WireError::EmptyFrame));
        assert_eq!(decode_message(&[0xff; 64], &l), Err(WireError::Malformed));
        for m in samples() {
            assert_eq!(check_limits(&m, &WireLimits::default()), Ok(()));
        }
    }

    #[test]
    fn labels_are_distinct_and_indexed() {
        let all = [
            WireError::FrameTooLarge { len: 0, max: 0 },
            WireError::EmptyFrame,
            WireError::Truncated,
            WireError::Malformed,
            WireError::TooManyRefs { len: 0, max: 0 },
            WireError::TooManyItems { len: 0, max: 0 },
            WireError::ElementTooLarge { len: 0, max: 0 },
        ];
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e.index(), i);
            assert_eq!(e.reason(), WIRE_ERROR_LABELS[i]);
        }
        let mut labels = WIRE_ERROR_LABELS.to_vec();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), WIRE_ERROR_KINDS);
    }

    fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..max)
    }

    fn message() -> impl Strategy<Value = PeerMessage> {
        prop_oneof![
            bytes(300).prop_map(PeerMessage::Block),
            proptest::collection::vec(
                (any::<u64>(), any::<u32>(), any::<[u8; 32]>()).prop_map(
                    |(round, author, digest)| WireBlockRef {
                        round,
                        author,
                        digest
                    }
                ),
                0..8
            )
            .prop_map(PeerMessage::BlockRequest),
            proptest::collection::vec(bytes(64), 0..6).prop_map(PeerMessage::BlockResponse),
            bytes(300).prop_map(PeerMessage::Batch),
            any::<[u8; 32]>().prop_map(PeerMessage::BatchAck),
            proptest::collection::vec(any::<[u8; 32]>(), 0..8).prop_map(PeerMessage::BatchRequest),
            proptest::collection::vec(bytes(64), 0..6).prop_map(PeerMessage::BatchResponse),
            (any::<u64>(), any::<u64>()).prop_map(|(round, commit_index)| {
                PeerMessage::Heartbeat {
                    round,
                    commit_index,
                }
            }),
            (any::<u64>(), any::<u64>()).prop_map(|(from_round, to_round)| {
                PeerMessage::RoundsRequest {
                    from_round,
                    to_round,
                }
            }),
            (
                any::<u64>(),
                any::<bool>(),
                any::<u32>(),
                proptest::collection::vec(bytes(64), 0..6)
            )
                .prop_map(|(head_round, done, parts, blocks)| {
                    PeerMessage::RoundsResponse {
                        from_round: 1,
                        to_round: 2,
                        head_round,
                        done,
                        parts,
                        blocks,
                    }
                }),
        ]
    }

    proptest! {
        #[test]
        fn roundtrip(m in message()) {
            let b = encode_message(&m);
            prop_assert_eq!(decode_message(&b, &WireLimits::default()), Ok(m));
        }

        #[test]
        fn random_bytes_never_panic(b in bytes(2000)) {
            let _ = decode_message(&b, &WireLimits::default());
        }

        #[test]
        fn truncations_never_panic(m in message(), cut in any::<prop::sample::Index>()) {
            let b = encode_message(&m);
            let n = cut.index(b.len());
            let _ = decode_message(&b[..n], &WireLimits::default());
            let _ = decode_message(&b[b.len() - n..], &WireLimits::default());
        }

        #[test]
        fn bit_flips_never_panic(
            m in message(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4),
        ) {
            let mut b = encode_message(&m);
            for (at, bit) in flips {
                let i = at.index(b.len());
                b[i] ^= 1 << bit;
            }
            let tight = WireLimits {
                frame_bytes_max: 4096,
                refs_per_request_max: 4,
                items_per_response_max: 4,
                element_bytes_max: 128,
            };
            let _ = decode_message(&b, &WireLimits::default());
            let _ = decode_message(&b, &tight);
        }
    }
}
