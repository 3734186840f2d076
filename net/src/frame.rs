//! Client ingress framing (docs/protocol.md is the normative description).
//!
//! ```text
//! client → node, one bidirectional QUIC stream:
//!   mode        u8            0 = answer on admission, 1 = answer on commit
//!   frame*      u32 LE len ‖ len bytes (one encoded transaction)
//!   FIN
//! node → client, same stream:
//!   record*     48 bytes each, one per frame, in any order
//!   FIN         after the last record
//! ```

use velox_exec::tx::{TxDigest, TX_BYTES_MAX};
use velox_exec::RejectReason;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// ALPN of the client transaction ingress protocol.
pub const ALPN_CLIENT: &[u8] = b"velox-tx/1";
/// Bytes of the length prefix of a frame.
pub const FRAME_PREFIX_BYTES: usize = 4;
/// Largest frame body: one transaction of the largest allowed size.
pub const FRAME_BYTES_MAX: usize = TX_BYTES_MAX;
/// Most frames one stream may carry. Bounds the responses the node holds for
/// a stream (48 B each) and the work one stream can queue: 1024 frames of the
/// largest size are 1.2 MiB.
pub const STREAM_TXS_MAX: usize = 1024;
/// Size of one response record.
pub const RESPONSE_BYTES: usize = 48;

/// When the node answers for a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum AckMode {
    /// As soon as the transaction is verified and admitted to the pool (or
    /// rejected).
    Admission = 0,
    /// Once the transaction's commit is durable (or it was rejected).
    Commit = 1,
}

impl AckMode {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Admission),
            1 => Some(Self::Commit),
            _ => None,
        }
    }
}

/// Status byte of a response record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// Verified and admitted to the pool; not yet committed.
    Accepted = 0,
    /// Included in a durable commit and executed successfully.
    Committed = 1,
    /// Rejected; `reason` says why. Rejected at execution still carries the
    /// commit index of the block that held it.
    Rejected = 2,
}

impl Status {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Accepted),
            1 => Some(Self::Committed),
            2 => Some(Self::Rejected),
            _ => None,
        }
    }
}

/// One response record as laid out on the wire.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct ResponseWire {
    /// Position of the frame on its stream, from 0.
    pub index: U32,
    pub status: u8,
    pub reserved: u8,
    /// `RejectReason` code, 0 unless rejected.
    pub reason: U16,
    /// Commit index holding the transaction, 0 if none.
    pub commit_index: U64,
    /// The transaction digest; zero if the frame could not be decoded.
    pub digest: [u8; 32],
}

const _: () = assert!(std::mem::size_of::<ResponseWire>() == RESPONSE_BYTES);

/// A decoded response record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Response {
    pub index: u32,
    pub status: Status,
    pub reason: Option<RejectReason>,
    pub commit_index: u64,
    pub digest: TxDigest,
}

impl Response {
    pub fn rejected(index: u32, digest: TxDigest, reason: RejectReason, commit_index: u64) -> Self {
        Self {
            index,
            status: Status::Rejected,
            reason: Some(reason),
            commit_index,
            digest,
        }
    }

    pub fn encode(&self) -> [u8; RESPONSE_BYTES] {
        let w = ResponseWire {
            index: U32::new(self.index),
            status: self.status as u8,
            reserved: 0,
            reason: U16::new(self.reason.map(|r| r.code()).unwrap_or(0)),
            commit_index: U64::new(self.commit_index),
            digest: self.digest.0,
        };
        let mut out = [0u8; RESPONSE_BYTES];
        out.copy_from_slice(w.as_bytes());
        out
    }

    pub fn decode(b: &[u8]) -> Result<Self, FrameError> {
        let w = ResponseWire::read_from_bytes(b).map_err(|_| FrameError::BadResponse)?;
        let status = Status::from_u8(w.status).ok_or(FrameError::BadResponse)?;
        let reason = match w.reason.get() {
            0 => None,
            c => Some(RejectReason::from_code(c).ok_or(FrameError::BadResponse)?),
        };
        Ok(Self {
            index: w.index.get(),
            status,
            reason,
            commit_index: w.commit_index.get(),
            digest: TxDigest(w.digest),
        })
    }
}

/// Framing errors. Each closes the stream after the responses owed so far.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unknown ack mode byte {0}")]
    BadMode(u8),
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("empty frame")]
    Empty,
    #[error("stream ended inside a frame")]
    Truncated,
    #[error("more than {STREAM_TXS_MAX} frames on one stream")]
    TooManyFrames,
    #[error("malformed response record")]
    BadResponse,
}

/// Incremental frame decoder: feed bytes as they arrive, take frames out.
/// Holds at most one partial frame (≤ `FRAME_BYTES_MAX` + prefix bytes).
#[derive(Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    frames: usize,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Frames decoded so far.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Takes the next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if self.buf.len() < FRAME_PREFIX_BYTES {
            return Ok(None);
        }
        let len = u32::from_le_bytes(self.buf[..4].try_into().expect("4 bytes")) as usize;
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > FRAME_BYTES_MAX {
            return Err(FrameError::TooLarge {
                len,
                max: FRAME_BYTES_MAX,
            });
        }
        if self.buf.len() < FRAME_PREFIX_BYTES + len {
            return Ok(None);
        }
        if self.frames >= STREAM_TXS_MAX {
            return Err(FrameError::TooManyFrames);
        }
        self.frames += 1;
        let frame = self.buf[FRAME_PREFIX_BYTES..FRAME_PREFIX_BYTES + len].to_vec();
        self.buf.drain(..FRAME_PREFIX_BYTES + len);
        Ok(Some(frame))
    }

    /// Call at end of stream: an incomplete frame left over is an error.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated)
        }
    }
}

/// Appends one length-prefixed frame to `out`.
pub fn encode_frame(body: &[u8], out: &mut Vec<u8>) {
    assert!(body.len() <= u32::MAX as usize);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_anywhere() {
        let bodies: Vec<Vec<u8>> = (1..20u8).map(|i| vec![i; i as usize * 7]).collect();
        let mut wire = Vec::new();
        for b in &bodies {
            encode_frame(b, &mut wire);
        }
        for chunk in [1usize, 3, 17, 1000] {
            let mut d = FrameDecoder::new();
            let mut got = Vec::new();
            for c in wire.chunks(chunk) {
                d.extend(c);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            d.finish().unwrap();
            assert_eq!(got, bodies);
        }
    }

    #[test]
    fn framing_errors() {
        let mut d = FrameDecoder::new();
        d.extend(&((FRAME_BYTES_MAX as u32) + 1).to_le_bytes());
        assert!(matches!(d.next_frame(), Err(FrameError::TooLarge { .. })));
        let mut d = FrameDecoder::new();
        d.extend(&0u32.to_le_bytes());
        assert_eq!(d.next_frame(), Err(FrameError::Empty));
        let mut d = FrameDecoder::new();
        d.extend(&[5, 0, 0, 0, 1, 2]);
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.finish(), Err(FrameError::Truncated));
        let mut d = FrameDecoder::new();
        let mut wire = Vec::new();
        for _ in 0..=STREAM_TXS_MAX {
            encode_frame(&[1], &mut wire);
        }
        d.extend(&wire);
        for _ in 0..STREAM_TXS_MAX {
            assert!(d.next_frame().unwrap().is_some());
        }
        assert_eq!(d.next_frame(), Err(FrameError::TooManyFrames));
    }

    #[test]
    fn response_roundtrip_and_errors() {
        let r = Response::rejected(9, TxDigest([3; 32]), RejectReason::BadNonce, 44);
        assert_eq!(Response::decode(&r.encode()), Ok(r));
        let ok = Response {
            index: 1,
            status: Status::Committed,
            reason: None,
            commit_index: 2,
            digest: TxDigest([1; 32]),
        };
        assert_eq!(Response::decode(&ok.encode()), Ok(ok));
        let mut b = ok.encode();
        b[4] = 9;
        assert_eq!(Response::decode(&b), Err(FrameError::BadResponse));
        assert_eq!(Response::decode(&b[..10]), Err(FrameError::BadResponse));
    }

    proptest::proptest! {
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..5000)) {
            let mut d = FrameDecoder::new();
            d.extend(&bytes);
            while let Ok(Some(_)) = d.next_frame() {}
        }
    }
}
