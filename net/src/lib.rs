//! Networking: QUIC endpoints, wire framing, ingress limits.
//!
//! ```text
//! client ──QUIC (ALPN velox-tx/1)──▶ ingress::serve ──▶ per stream:
//!     mode byte, then u32-length frames ──FrameDecoder──▶ Tx::decode
//!        ├─ bad frame / bad tx ─▶ response record (Rejected, reason) + counter
//!        └─ good tx + Ticket ──Ring<Vec<IngressTx>>──▶ verify tile
//!   ◀── 48-byte response records, one per frame, answered through Tickets
//! ```
//!
//! The byte layouts are in [`frame`] and docs/protocol.md. TLS setup (rustls,
//! ring provider, node certificates self-signed with the node's ed25519 key)
//! is in [`tls`]. Endpoints derive their stateless-reset and connection-ID
//! keys from the node's key ([`endpoint`]), so a restarted node resets the
//! connections of its previous life instead of leaving them to time out.
//!
//! Validators talk to each other through [`peer`] (ALPN `velox-peer/3`):
//! mutual TLS bound to committee keys, one unidirectional stream of
//! length-prefixed rkyv [`PeerMessage`]s per ordered pair of validators,
//! bounded per-peer queues, heartbeats, liveness and redial with backoff.

pub mod endpoint;
pub mod frame;
pub mod ingress;
pub mod peer;
pub mod tls;

pub use frame::{AckMode, Response, Status, ALPN_CLIENT};
pub use ingress::{IngressClient, IngressCounters, IngressLimits, IngressTx, Ticket};
pub use peer::{
    decode_message, encode_message, Dest, Inbound, Outbound, PeerConfig, PeerCounters,
    PeerCountersSnapshot, PeerError, PeerHandle, PeerInfo, PeerMessage, PeerNetwork, WireBlockRef,
    WireError, WireLimits, ALPN_PEER, PEER_COUNTER_LABELS, WIRE_ERROR_LABELS,
};
