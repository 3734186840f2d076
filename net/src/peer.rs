//! Validator-to-validator networking: one QUIC endpoint per node, mutual TLS
//! bound to committee keys, one long-lived unidirectional stream per ordered
//! pair of validators.
//!
//! ```text
//!                      ┌──────────────── PeerNetwork::run ────────────────┐
//!  Ring<Outbound> ──▶ pump: limits check, encode once ──try_send──▶ queue[j] (bounded,
//!   (consensus,          │                                          │   full → drop newest,
//!    mempool)            │                                          │   counted)
//!                        │                                          ▼
//!                        │          dialer[j]: connect (mTLS, key must be j's) ─▶ open_uni
//!                        │             │  write frames + Heartbeat every heartbeat_ms
//!                        │             └─ error/close ─▶ backoff min..max (jitter) ─▶ redial
//!                        │
//!  Ring<Inbound>  ◀── reader (per accepted connection; client key ⇒ `from`)
//!                        │  u32 LE len ‖ rkyv body ─▶ decode_message (validate once)
//!                        │     ├─ Heartbeat ─▶ peer_heights[from] (not forwarded)
//!                        │     └─ bad frame ─▶ counter by reason, close connection
//!                        │
//!                     liveness: nothing from j for dead_after_ms ─▶ alive[j] = false
//!                      └──────────────────────────────────────────────────┘
//! ```
//!
//! Each node sends only on connections it dialed and only reads connections
//! it accepted, so there is never a duplicate connection to break ties over;
//! the sender's identity is the key in its client certificate, never a field
//! of the message. Consensus tolerates loss (it retransmits and fetches), so
//! the network drops rather than blocks: a full per-peer queue drops the
//! newest frame, a broken connection loses the frame in flight.

mod tls;
mod wire;

#[cfg(test)]
mod tests;

pub use tls::ed25519_key_of_cert;
pub use wire::{
    check_frame_len, check_limits, decode_message, encode_frame, encode_message, PeerMessage,
    WireBlockRef, WireError, WireLimits, ALPN_PEER, ARCHIVE_ALIGN_BYTES, FRAME_BYTES_MAX_DEFAULT,
    PEER_FRAME_PREFIX_BYTES, WIRE_ERROR_KINDS, WIRE_ERROR_LABELS,
};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use rkyv::util::AlignedVec;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use velox_io::{Ring, TileStats};

use crate::tls::TlsError;

/// Extra idle time past `dead_after_ms` before QUIC drops a silent
/// connection: the liveness verdict comes from heartbeats first.
pub const IDLE_TIMEOUT_EXTRA_MS: u64 = 3_000;
/// Per-stream receive window: one 8 MiB frame (the default
/// `frame_bytes_max`) plus its prefix fits without waiting for the reader.
pub const STREAM_WINDOW_BYTES: u32 = 9 << 20;
/// Per-connection receive window and send window: two full streams' worth.
pub const CONNECTION_WINDOW_BYTES: u32 = 18 << 20;
const _: () =
    assert!(STREAM_WINDOW_BYTES as usize >= FRAME_BYTES_MAX_DEFAULT + PEER_FRAME_PREFIX_BYTES);
const _: () = assert!(CONNECTION_WINDOW_BYTES >= 2 * STREAM_WINDOW_BYTES);
/// Concurrent unidirectional streams a peer may open on one connection. The
/// dialer opens exactly one; the reader reads streams one after another.
pub const PEER_STREAMS_PER_CONN_MAX: u32 = 1;
/// How long shutdown waits for close frames to reach peers.
pub const SHUTDOWN_DRAIN_MS: u64 = 500;
/// QUIC application close codes.
const CLOSE_SHUTDOWN: u32 = 0;
const CLOSE_BAD_FRAME: u32 = 1;
const CLOSE_UNKNOWN_PEER: u32 = 2;
/// A member opened a newer connection: the older one is closed (one
/// inbound connection per member).
const CLOSE_REPLACED: u32 = 3;

/// One committee member as the network sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    pub index: u32,
    /// ed25519 public key; its certificate must carry exactly this key.
    pub public_key: [u8; 32],
    pub addr: SocketAddr,
}

/// Configuration of a [`PeerNetwork`].
#[derive(Clone, Debug)]
pub struct PeerConfig {
    pub me: u32,
    /// The whole committee including this node; `committee[i].index == i`.
    pub committee: Vec<PeerInfo>,
    /// This node's ed25519 key, PKCS#8 DER; its public key must be
    /// `committee[me].public_key`.
    pub pkcs8_der: Vec<u8>,
    /// A heartbeat goes to every connected peer this often.
    pub heartbeat_ms: u64,
    /// A peer heard nothing from for this long is dead; must exceed
    /// `heartbeat_ms` (several heartbeats may be lost before a verdict).
    pub dead_after_ms: u64,
    /// Redial backoff starts here and doubles up to `reconnect_max_ms`; each
    /// wait is jittered down to half to spread a committee's redials.
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// Frames queued per peer; beyond it the newest frame is dropped. Costs
    /// up to this many frames of memory per peer while a peer is slow.
    pub outbound_queue_max: usize,
    /// What one member's messages waiting in the inbound ring (read, not
    /// yet consumed) may hold: at most this many messages and this many
    /// frame bytes (one message is always let through, whatever its size).
    /// Its reader stops reading meanwhile, so QUIC flow control slows that
    /// member alone; the ring's memory is bounded per sender, and one member
    /// cannot fill the ring the others' messages need.
    pub inbound_msgs_per_peer_max: usize,
    pub inbound_bytes_per_peer_max: usize,
    /// Frame bytes queued for one peer (besides `outbound_queue_max`
    /// frames); beyond it the newest frame is dropped, so a peer that reads
    /// slowly holds at most this much of this node's memory.
    pub outbound_bytes_per_peer_max: usize,
    pub limits: WireLimits,
}

/// A message received from committee member `from` (authenticated by TLS).
/// It holds its share of the member's inbound budget
/// ([`PeerConfig::inbound_bytes_per_peer_max`]) until dropped: a consumer
/// drops it once handled (moving `msg` out is fine).
#[derive(Debug)]
pub struct Inbound {
    pub from: u32,
    pub msg: PeerMessage,
    /// Held for its `Drop`, which gives the budget back.
    #[allow(dead_code)]
    charge: Charge,
}

impl Inbound {
    /// A message that holds no budget (tests, messages made locally).
    pub fn new(from: u32, msg: PeerMessage) -> Inbound {
        Inbound {
            from,
            msg,
            charge: Charge::default(),
        }
    }
}

impl PartialEq for Inbound {
    fn eq(&self, other: &Inbound) -> bool {
        self.from == other.from && self.msg == other.msg
    }
}

impl Eq for Inbound {}

/// Messages and bytes each member has waiting in the inbound ring.
#[derive(Debug)]
struct InboundBudget {
    msgs_max: usize,
    bytes_max: usize,
    /// Per member: (messages, bytes) read and not yet dropped.
    used: std::sync::Mutex<Vec<(usize, usize)>>,
    freed: tokio::sync::Notify,
}

impl InboundBudget {
    fn new(members: usize, msgs_max: usize, bytes_max: usize) -> InboundBudget {
        InboundBudget {
            msgs_max,
            bytes_max,
            used: std::sync::Mutex::new(vec![(0, 0); members]),
            freed: tokio::sync::Notify::new(),
        }
    }

    fn try_take(&self, from: u32, bytes: usize) -> bool {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let Some((m, b)) = used.get_mut(from as usize) else {
            return false;
        };
        if *m > 0 && (*m >= self.msgs_max || *b + bytes > self.bytes_max) {
            return false;
        }
        *m += 1;
        *b += bytes;
        true
    }

    fn release(&self, from: u32, bytes: usize) {
        {
            let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((m, b)) = used.get_mut(from as usize) {
                *m = m.saturating_sub(1);
                *b = b.saturating_sub(bytes);
            }
        }
        self.freed.notify_waiters();
    }

    /// Waits until member `from` may queue `bytes` more, then takes them;
    /// `None` once `ring` closes (shutting down).
    async fn acquire(
        self: &Arc<Self>,
        from: u32,
        bytes: usize,
        ring: &Ring<Inbound>,
        counters: &PeerCounters,
    ) -> Option<Charge> {
        let mut waited = false;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.try_take(from, bytes) {
                return Some(Charge {
                    budget: Some(self.clone()),
                    from,
                    bytes,
                });
            }
            if ring.is_closed() {
                return None;
            }
            if !waited {
                waited = true;
                PeerCounters::add(&counters.inbound_budget_waits, 1);
            }
            // Woken by a release; the timeout only notices a closed ring.
            let _ = tokio::time::timeout(Duration::from_millis(100), freed).await;
        }
    }
}

/// A message's share of its sender's inbound budget, given back on drop.
#[derive(Debug, Default)]
struct Charge {
    budget: Option<Arc<InboundBudget>>,
    from: u32,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some(b) = self.budget.take() {
            b.release(self.from, self.bytes);
        }
    }
}

/// Where an outbound message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    One(u32),
    /// Every other committee member (encoded once, shared).
    All,
}

/// A message to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outbound {
    pub to: Dest,
    pub msg: PeerMessage,
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("invalid peer configuration: {0}")]
    Config(String),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("PeerNetwork::new must be called inside a tokio runtime")]
    NoRuntime,
}

/// Counters of the validator network. All monotonic except `alive`.
#[derive(Default)]
pub struct PeerCounters {
    /// Connections up (dialed and accepted, after the handshake).
    pub connections_established: AtomicU64,
    pub connections_closed: AtomicU64,
    /// Inbound connections closed because the same member opened a newer one.
    pub connections_replaced: AtomicU64,
    /// Dial attempts that did not produce a connection (any reason).
    pub dials_failed: AtomicU64,
    /// Dial attempts after the first, per peer.
    pub reconnects: AtomicU64,
    /// Incoming handshakes that did not complete, for any reason (the two
    /// key refusals below are also counted here).
    pub handshakes_failed: AtomicU64,
    pub handshakes_rejected_unknown_key: AtomicU64,
    pub handshakes_rejected_wrong_key: AtomicU64,
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Received frames refused, indexed by [`WireError::index`].
    pub frames_rejected_by_reason: [AtomicU64; WIRE_ERROR_KINDS],
    pub frames_dropped_queue_full: AtomicU64,
    /// Outbound messages over the limits (never sent: the peer would refuse).
    pub frames_dropped_over_limits: AtomicU64,
    /// Outbound messages to an index that is not another committee member.
    pub frames_dropped_unknown_dest: AtomicU64,
    /// alive → dead transitions.
    pub peers_dead_events: AtomicU64,
    /// Gauge: other members currently alive.
    pub alive: AtomicU64,
    /// Times a member's reader waited because its messages in the inbound
    /// ring held its whole budget (messages or bytes).
    pub inbound_budget_waits: AtomicU64,
}

/// Names of the scalar counters, in [`PeerCountersSnapshot::counters`] order.
pub const PEER_COUNTER_LABELS: [&str; 18] = [
    "connections_established",
    "connections_closed",
    "connections_replaced",
    "dials_failed",
    "reconnects",
    "handshakes_failed",
    "handshakes_rejected_unknown_key",
    "handshakes_rejected_wrong_key",
    "frames_in",
    "frames_out",
    "bytes_in",
    "bytes_out",
    "frames_dropped_queue_full",
    "frames_dropped_over_limits",
    "frames_dropped_unknown_dest",
    "peers_dead_events",
    "alive",
    "inbound_budget_waits",
];

/// A point-in-time copy of [`PeerCounters`], labelled for export.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerCountersSnapshot {
    /// `(label, value)` in [`PEER_COUNTER_LABELS`] order; `alive` is a gauge.
    pub counters: Vec<(&'static str, u64)>,
    /// `(reason, value)` in [`WIRE_ERROR_LABELS`] order.
    pub frames_rejected: Vec<(&'static str, u64)>,
}

impl PeerCounters {
    fn scalars(&self) -> [&AtomicU64; 18] {
        [
            &self.connections_established,
            &self.connections_closed,
            &self.connections_replaced,
            &self.dials_failed,
            &self.reconnects,
            &self.handshakes_failed,
            &self.handshakes_rejected_unknown_key,
            &self.handshakes_rejected_wrong_key,
            &self.frames_in,
            &self.frames_out,
            &self.bytes_in,
            &self.bytes_out,
            &self.frames_dropped_queue_full,
            &self.frames_dropped_over_limits,
            &self.frames_dropped_unknown_dest,
            &self.peers_dead_events,
            &self.alive,
            &self.inbound_budget_waits,
        ]
    }

    pub fn snapshot(&self) -> PeerCountersSnapshot {
        PeerCountersSnapshot {
            counters: PEER_COUNTER_LABELS
                .iter()
                .zip(self.scalars())
                .map(|(l, c)| (*l, c.load(Ordering::Relaxed)))
                .collect(),
            frames_rejected: WIRE_ERROR_LABELS
                .iter()
                .zip(&self.frames_rejected_by_reason)
                .map(|(l, c)| (*l, c.load(Ordering::Relaxed)))
                .collect(),
        }
    }

    /// Received frames refused for `reason` (a [`WIRE_ERROR_LABELS`] entry).
    pub fn rejected(&self, reason: &str) -> u64 {
        WIRE_ERROR_LABELS
            .iter()
            .position(|l| *l == reason)
            .map(|i| self.frames_rejected_by_reason[i].load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// State shared by the network's tasks and its [`PeerHandle`]s.
struct Shared {
    me: u32,
    /// Committee keys by index.
    keys: Vec<[u8; 32]>,
    dead_after_ms: u64,
    counters: Arc<PeerCounters>,
    started: Instant,
    /// Per member: 1 + milliseconds since `started` of the last frame
    /// received from it; 0 = never.
    last_heard_ms: Vec<AtomicU64>,
    /// Per member: (round, commit_index) of its last heartbeat.
    heights: Vec<(AtomicU64, AtomicU64)>,
    /// What this node's heartbeats say.
    my_round: AtomicU64,
    my_commit_index: AtomicU64,
    /// Per member: its inbound connection (one at a time; a newer one
    /// replaces it).
    inbound_conns: Vec<std::sync::Mutex<Option<quinn::Connection>>>,
    /// What each member's messages in the inbound ring may hold.
    inbound_budget: Arc<InboundBudget>,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn heard_from(&self, from: u32) {
        self.last_heard_ms[from as usize].store(self.now_ms() + 1, Ordering::Relaxed);
    }

    /// Heard from member `i` within `dead_after_ms` (always true for `me`).
    fn is_alive(&self, i: usize, now_ms: u64) -> bool {
        if i == self.me as usize {
            return true;
        }
        let last = self.last_heard_ms[i].load(Ordering::Relaxed);
        last != 0 && now_ms.saturating_sub(last - 1) < self.dead_after_ms
    }

    fn committee_index(&self, key: &[u8; 32]) -> Option<u32> {
        self.keys.iter().position(|k| k == key).map(|i| i as u32)
    }

    fn reject(&self, e: WireError) {
        PeerCounters::add(&self.counters.frames_rejected_by_reason[e.index()], 1);
    }
}

/// A cheap, cloneable view of a running network: liveness, peer heights,
/// counters, and the values this node's heartbeats carry.
#[derive(Clone)]
pub struct PeerHandle {
    shared: Arc<Shared>,
}

impl PeerHandle {
    pub fn counters(&self) -> Arc<PeerCounters> {
        self.shared.counters.clone()
    }

    /// Per committee index: heard from within `dead_after_ms` (always true
    /// for this node itself).
    pub fn alive(&self) -> Vec<bool> {
        let now = self.shared.now_ms();
        (0..self.shared.keys.len())
            .map(|i| self.shared.is_alive(i, now))
            .collect()
    }

    /// Per committee index: `(round, commit_index)` of the last heartbeat
    /// received from it (this node's own values at `me`; `(0, 0)` if none).
    pub fn peer_heights(&self) -> Vec<(u64, u64)> {
        let me = self.shared.me as usize;
        self.shared
            .heights
            .iter()
            .enumerate()
            .map(|(i, (r, c))| {
                if i == me {
                    (
                        self.shared.my_round.load(Ordering::Relaxed),
                        self.shared.my_commit_index.load(Ordering::Relaxed),
                    )
                } else {
                    (r.load(Ordering::Relaxed), c.load(Ordering::Relaxed))
                }
            })
            .collect()
    }

    /// Sets what the next heartbeats say.
    pub fn set_heartbeat(&self, round: u64, commit_index: u64) {
        self.shared.my_round.store(round, Ordering::Relaxed);
        self.shared
            .my_commit_index
            .store(commit_index, Ordering::Relaxed);
    }
}

/// Durations derived once from the configuration.
#[derive(Clone, Copy)]
struct Timing {
    heartbeat: Duration,
    dead_after: Duration,
    reconnect_min: Duration,
    reconnect_max: Duration,
}

/// The validator network of one node. Build with [`PeerNetwork::new`], then
/// drive with [`PeerNetwork::run`].
pub struct PeerNetwork {
    cfg: PeerConfig,
    endpoint: quinn::Endpoint,
    /// Per member: the client config for dialing it (`None` at `me`).
    dial_configs: Vec<Option<quinn::ClientConfig>>,
    shared: Arc<Shared>,
    stats: Arc<TileStats>,
}

fn check_config(cfg: &PeerConfig) -> Result<(), String> {
    let n = cfg.committee.len();
    if (cfg.me as usize) >= n {
        return Err(format!("me = {} but the committee has {n} members", cfg.me));
    }
    for (i, p) in cfg.committee.iter().enumerate() {
        if p.index as usize != i {
            return Err(format!("committee[{i}] has index {}", p.index));
        }
        if cfg.committee[..i]
            .iter()
            .any(|q| q.public_key == p.public_key)
        {
            return Err(format!("committee[{i}] repeats an earlier member's key"));
        }
    }
    if cfg.heartbeat_ms == 0 || cfg.dead_after_ms <= cfg.heartbeat_ms {
        return Err(format!(
            "need 0 < heartbeat_ms ({}) < dead_after_ms ({})",
            cfg.heartbeat_ms, cfg.dead_after_ms
        ));
    }
    if cfg.reconnect_min_ms == 0 || cfg.reconnect_max_ms < cfg.reconnect_min_ms {
        return Err(format!(
            "need 0 < reconnect_min_ms ({}) <= reconnect_max_ms ({})",
            cfg.reconnect_min_ms, cfg.reconnect_max_ms
        ));
    }
    if cfg.outbound_queue_max == 0 {
        return Err("outbound_queue_max must be positive".into());
    }
    if cfg.inbound_msgs_per_peer_max == 0
        || cfg.inbound_bytes_per_peer_max == 0
        || cfg.outbound_bytes_per_peer_max == 0
    {
        return Err(
            "inbound_msgs_per_peer_max and inbound_bytes_per_peer_max must be positive".into(),
        );
    }
    cfg.limits.check()
}

/// Transport for accepted (`server`: the peer may open one stream) or
/// dialed connections (the peer may open none: nothing reads them).
fn transport(cfg: &PeerConfig, server: bool) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(0u32.into());
    let uni = if server { PEER_STREAMS_PER_CONN_MAX } else { 0 };
    t.max_concurrent_uni_streams(uni.into());
    let idle_ms = cfg.dead_after_ms.saturating_add(IDLE_TIMEOUT_EXTRA_MS);
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_millis(idle_ms))
            .unwrap_or(quinn::IdleTimeout::from(quinn::VarInt::MAX)),
    ));
    t.keep_alive_interval(Some(Duration::from_millis(cfg.heartbeat_ms)));
    t.stream_receive_window(STREAM_WINDOW_BYTES.into());
    t.receive_window(CONNECTION_WINDOW_BYTES.into());
    t.send_window(CONNECTION_WINDOW_BYTES.into());
    Arc::new(t)
}

impl PeerNetwork {
    /// Checks the configuration, builds the TLS configurations and opens the
    /// QUIC endpoint on `socket` (already bound to `committee[me].addr` or a
    /// port the others know). Must be called inside a tokio runtime: the
    /// endpoint registers with the reactor at once, so peers' handshakes
    /// queue up even before [`PeerNetwork::run`] starts.
    pub fn new(cfg: PeerConfig, socket: std::net::UdpSocket) -> Result<PeerNetwork, PeerError> {
        check_config(&cfg).map_err(PeerError::Config)?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(PeerError::NoRuntime);
        }
        let me = cfg.me as usize;
        let n = cfg.committee.len();
        let cert = crate::tls::self_signed_cert(&cfg.pkcs8_der)?;
        if ed25519_key_of_cert(&cert) != Some(cfg.committee[me].public_key) {
            return Err(PeerError::Config(format!(
                "pkcs8_der is not the key of committee member {me}"
            )));
        }
        let counters = Arc::new(PeerCounters::default());
        let server_transport = transport(&cfg, true);
        let dial_transport = transport(&cfg, false);
        let others: Vec<[u8; 32]> = cfg
            .committee
            .iter()
            .filter(|p| p.index != cfg.me)
            .map(|p| p.public_key)
            .collect();
        let server = tls::server_config(
            &cert,
            &cfg.pkcs8_der,
            others,
            counters.clone(),
            server_transport,
        )?;
        let dial_configs = cfg
            .committee
            .iter()
            .map(|p| {
                if p.index == cfg.me {
                    Ok(None)
                } else {
                    tls::client_config(
                        &cert,
                        &cfg.pkcs8_der,
                        p.public_key,
                        counters.clone(),
                        dial_transport.clone(),
                    )
                    .map(Some)
                }
            })
            .collect::<Result<Vec<_>, TlsError>>()?;
        socket.set_nonblocking(true)?;
        // Restart-stable keys: a restarted validator resets its peers'
        // connections to its previous life, so they redial at once instead
        // of writing into a dead connection until the idle timeout.
        let endpoint = quinn::Endpoint::new(
            crate::endpoint::restart_stable_config(&cfg.pkcs8_der, "peer"),
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        let shared = Arc::new(Shared {
            me: cfg.me,
            keys: cfg.committee.iter().map(|p| p.public_key).collect(),
            dead_after_ms: cfg.dead_after_ms,
            counters,
            started: Instant::now(),
            last_heard_ms: (0..n).map(|_| AtomicU64::new(0)).collect(),
            heights: (0..n)
                .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
                .collect(),
            my_round: AtomicU64::new(0),
            my_commit_index: AtomicU64::new(0),
            inbound_conns: (0..n).map(|_| std::sync::Mutex::new(None)).collect(),
            inbound_budget: Arc::new(InboundBudget::new(
                n,
                cfg.inbound_msgs_per_peer_max,
                cfg.inbound_bytes_per_peer_max,
            )),
        });
        let stats = TileStats::new("net-peer", me, 0);
        Ok(PeerNetwork {
            cfg,
            endpoint,
            dial_configs,
            shared,
            stats,
        })
    }

    /// Counts inbound ring items and backpressure in `stats` instead of a
    /// private `TileStats`.
    pub fn with_tile_stats(mut self, stats: Arc<TileStats>) -> Self {
        self.stats = stats;
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    pub fn handle(&self) -> PeerHandle {
        PeerHandle {
            shared: self.shared.clone(),
        }
    }

    pub fn counters(&self) -> Arc<PeerCounters> {
        self.shared.counters.clone()
    }

    /// See [`PeerHandle::alive`].
    pub fn alive(&self) -> Vec<bool> {
        self.handle().alive()
    }

    /// See [`PeerHandle::peer_heights`].
    pub fn peer_heights(&self) -> Vec<(u64, u64)> {
        self.handle().peer_heights()
    }

    /// See [`PeerHandle::set_heartbeat`].
    pub fn set_heartbeat(&self, round: u64, commit_index: u64) {
        self.handle().set_heartbeat(round, commit_index)
    }

    /// Runs until `outbound` is closed (and drained): accepts and reads
    /// peers' connections into `inbound`, dials every other member, redials
    /// with backoff, sends heartbeats and tracks liveness. On return the
    /// endpoint is closed and every task it started has ended.
    pub async fn run(self, inbound: Arc<Ring<Inbound>>, outbound: Arc<Ring<Outbound>>) {
        let PeerNetwork {
            cfg,
            endpoint,
            dial_configs,
            shared,
            stats,
        } = self;
        let timing = Timing {
            heartbeat: Duration::from_millis(cfg.heartbeat_ms),
            dead_after: Duration::from_millis(cfg.dead_after_ms),
            reconnect_min: Duration::from_millis(cfg.reconnect_min_ms),
            reconnect_max: Duration::from_millis(cfg.reconnect_max_ms),
        };
        let mut tasks = JoinSet::new();
        tasks.spawn(accept_loop(
            endpoint.clone(),
            shared.clone(),
            inbound,
            cfg.limits,
            stats,
        ));
        let mut queues: Vec<Option<PeerQueue>> = Vec::with_capacity(dial_configs.len());
        for (peer, client) in cfg.committee.iter().zip(dial_configs) {
            let Some(client) = client else {
                queues.push(None);
                continue;
            };
            let (tx, rx) = mpsc::channel(cfg.outbound_queue_max);
            let bytes = Arc::new(AtomicUsize::new(0));
            queues.push(Some(PeerQueue {
                tx,
                bytes: bytes.clone(),
                bytes_max: cfg.outbound_bytes_per_peer_max,
            }));
            tasks.spawn(dial_loop(
                endpoint.clone(),
                peer.clone(),
                client,
                (rx, bytes),
                shared.clone(),
                timing,
            ));
        }
        tasks.spawn(liveness_loop(shared.clone(), timing));

        while let Some(out) = outbound.pop().await {
            dispatch(out, &queues, &cfg.limits, &shared.counters);
        }

        tasks.shutdown().await;
        endpoint.close(CLOSE_SHUTDOWN.into(), b"shutdown");
        let _ = tokio::time::timeout(
            Duration::from_millis(SHUTDOWN_DRAIN_MS),
            endpoint.wait_idle(),
        )
        .await;
    }
}

/// One peer's send queue: frames (bounded in count by the channel) and
/// the bytes they hold (bounded by `bytes_max`).
struct PeerQueue {
    tx: mpsc::Sender<Arc<[u8]>>,
    bytes: Arc<AtomicUsize>,
    bytes_max: usize,
}

/// The receiving end of a [`PeerQueue`].
type QueueRx = (mpsc::Receiver<Arc<[u8]>>, Arc<AtomicUsize>);

/// Encodes once and queues the frame for each destination without waiting.
fn dispatch(
    out: Outbound,
    queues: &[Option<PeerQueue>],
    limits: &WireLimits,
    counters: &PeerCounters,
) {
    if check_limits(&out.msg, limits).is_err() {
        PeerCounters::add(&counters.frames_dropped_over_limits, 1);
        tracing::warn!(
            kind = out.msg.kind(),
            "outbound message over the wire limits dropped"
        );
        return;
    }
    let frame: Arc<[u8]> = encode_frame(&out.msg).into();
    if frame.len() - PEER_FRAME_PREFIX_BYTES > limits.frame_bytes_max {
        PeerCounters::add(&counters.frames_dropped_over_limits, 1);
        tracing::warn!(
            kind = out.msg.kind(),
            "outbound frame over frame_bytes_max dropped"
        );
        return;
    }
    let len = frame.len();
    let mut enqueue = |q: &PeerQueue| {
        let queued = q.bytes.load(Ordering::Relaxed);
        if queued > 0 && queued + len > q.bytes_max {
            PeerCounters::add(&counters.frames_dropped_queue_full, 1);
            return;
        }
        // Counted before the send: the writer subtracts once it took it.
        q.bytes.fetch_add(len, Ordering::Relaxed);
        match q.tx.try_send(frame.clone()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                q.bytes.fetch_sub(len, Ordering::Relaxed);
                PeerCounters::add(&counters.frames_dropped_queue_full, 1)
            }
            // The dialer only ends at shutdown.
            Err(mpsc::error::TrySendError::Closed(_)) => {
                q.bytes.fetch_sub(len, Ordering::Relaxed);
            }
        }
    };
    match out.to {
        Dest::All => queues.iter().flatten().for_each(&mut enqueue),
        Dest::One(i) => match queues.get(i as usize) {
            Some(Some(q)) => enqueue(q),
            _ => PeerCounters::add(&counters.frames_dropped_unknown_dest, 1),
        },
    }
}

/// Jittered wait in `[d/2, d]`.
fn jitter(d: Duration) -> Duration {
    let ms = d.as_millis() as u64;
    Duration::from_millis(rand::thread_rng().gen_range(ms / 2..=ms))
}

/// Keeps one outgoing connection to `peer` up and feeds it from `queue`.
async fn dial_loop(
    endpoint: quinn::Endpoint,
    peer: PeerInfo,
    client: quinn::ClientConfig,
    mut queue: QueueRx,
    shared: Arc<Shared>,
    t: Timing,
) {
    let c = &shared.counters;
    let mut backoff = t.reconnect_min;
    let mut first = true;
    loop {
        if !first {
            PeerCounters::add(&c.reconnects, 1);
        }
        first = false;
        match connect(&endpoint, &peer, client.clone(), t.dead_after).await {
            Ok(conn) => {
                PeerCounters::add(&c.connections_established, 1);
                let up = Instant::now();
                let ended = send_loop(&conn, &mut queue, &shared, t.heartbeat).await;
                PeerCounters::add(&c.connections_closed, 1);
                match ended {
                    SendEnd::QueueClosed => return,
                    SendEnd::Failed(e) => {
                        tracing::debug!(peer = peer.index, error = %e, "peer connection ended")
                    }
                }
                // A connection that stayed up a while resets the backoff; one
                // that dies at once keeps backing off.
                if up.elapsed() >= t.reconnect_max {
                    backoff = t.reconnect_min;
                }
            }
            Err(e) => {
                PeerCounters::add(&c.dials_failed, 1);
                tracing::debug!(peer = peer.index, addr = %peer.addr, error = %e, "dial failed");
            }
        }
        tokio::time::sleep(jitter(backoff)).await;
        backoff = (backoff * 2).min(t.reconnect_max);
    }
}

async fn connect(
    endpoint: &quinn::Endpoint,
    peer: &PeerInfo,
    client: quinn::ClientConfig,
    timeout: Duration,
) -> Result<quinn::Connection, String> {
    let connecting = endpoint
        .connect_with(client, peer.addr, "velox")
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("handshake timed out".into()),
    }
}

enum SendEnd {
    QueueClosed,
    Failed(String),
}

/// Writes queued frames, and a heartbeat every `heartbeat`, on one stream.
async fn send_loop(
    conn: &quinn::Connection,
    (queue, queued_bytes): &mut QueueRx,
    shared: &Shared,
    heartbeat: Duration,
) -> SendEnd {
    let c = &shared.counters;
    let mut send = match conn.open_uni().await {
        Ok(s) => s,
        Err(e) => return SendEnd::Failed(e.to_string()),
    };
    // The first heartbeat goes at once: the peer learns we are alive and
    // where we are without waiting a period.
    let mut ticker = tokio::time::interval(heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let frame: Arc<[u8]> = tokio::select! {
            biased;
            e = conn.closed() => return SendEnd::Failed(e.to_string()),
            _ = ticker.tick() => encode_frame(&PeerMessage::Heartbeat {
                round: shared.my_round.load(Ordering::Relaxed),
                commit_index: shared.my_commit_index.load(Ordering::Relaxed),
            })
            .into(),
            f = queue.recv() => match f {
                Some(f) => {
                    queued_bytes.fetch_sub(f.len(), Ordering::Relaxed);
                    f
                }
                None => {
                    let _ = send.finish();
                    return SendEnd::QueueClosed;
                }
            },
        };
        if let Err(e) = send.write_all(&frame).await {
            return SendEnd::Failed(e.to_string());
        }
        PeerCounters::add(&c.frames_out, 1);
        PeerCounters::add(&c.bytes_out, frame.len() as u64);
    }
}

/// Accepts connections until the endpoint closes; one reader task each.
async fn accept_loop(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    inbound: Arc<Ring<Inbound>>,
    limits: WireLimits,
    stats: Arc<TileStats>,
) {
    // Dropping this set (when the network stops) aborts every reader.
    let mut readers = JoinSet::new();
    while let Some(incoming) = endpoint.accept().await {
        while readers.try_join_next().is_some() {}
        readers.spawn(serve_connection(
            incoming,
            shared.clone(),
            inbound.clone(),
            limits,
            stats.clone(),
        ));
    }
}

async fn serve_connection(
    incoming: quinn::Incoming,
    shared: Arc<Shared>,
    inbound: Arc<Ring<Inbound>>,
    limits: WireLimits,
    stats: Arc<TileStats>,
) {
    let c = &shared.counters;
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            PeerCounters::add(&c.handshakes_failed, 1);
            tracing::debug!(error = %e, "peer handshake failed");
            return;
        }
    };
    // The verifier admitted only other members' keys, so this finds one.
    let from =
        tls::peer_key(&conn).and_then(|k| shared.committee_index(&k).filter(|&i| i != shared.me));
    let Some(from) = from else {
        PeerCounters::add(&c.handshakes_failed, 1);
        conn.close(CLOSE_UNKNOWN_PEER.into(), b"unknown peer");
        return;
    };
    PeerCounters::add(&c.connections_established, 1);
    // One inbound connection per member: the newest (a restarted peer
    // redials) replaces the older, so one member cannot hold many readers
    // and their frame buffers.
    let older = shared.inbound_conns[from as usize]
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .replace(conn.clone());
    if let Some(older) = older {
        PeerCounters::add(&c.connections_replaced, 1);
        older.close(CLOSE_REPLACED.into(), b"replaced");
    }
    let result = read_connection(&conn, from, &shared, &inbound, &limits, &stats).await;
    PeerCounters::add(&c.connections_closed, 1);
    {
        let mut slot = shared.inbound_conns[from as usize]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if slot
            .as_ref()
            .is_some_and(|k| k.stable_id() == conn.stable_id())
        {
            *slot = None;
        }
    }
    match result {
        Ok(()) => {}
        Err(ReadEnd::Bad(e)) => {
            shared.reject(e);
            tracing::warn!(peer = from, reason = e.reason(), error = %e, "bad frame from peer; closing its connection");
            conn.close(CLOSE_BAD_FRAME.into(), e.reason().as_bytes());
        }
        Err(ReadEnd::Gone(e)) => tracing::debug!(peer = from, error = %e, "peer connection ended"),
        Err(ReadEnd::Shutdown) => conn.close(CLOSE_SHUTDOWN.into(), b"shutdown"),
    }
}

enum ReadEnd {
    Bad(WireError),
    Gone(String),
    Shutdown,
}

/// Reads the peer's streams one after another until the connection ends.
async fn read_connection(
    conn: &quinn::Connection,
    from: u32,
    shared: &Shared,
    inbound: &Ring<Inbound>,
    limits: &WireLimits,
    stats: &TileStats,
) -> Result<(), ReadEnd> {
    let c = &shared.counters;
    loop {
        let mut recv = match conn.accept_uni().await {
            Ok(r) => r,
            Err(e) => return Err(ReadEnd::Gone(e.to_string())),
        };
        while let Some(frame) = read_frame(&mut recv, limits).await? {
            PeerCounters::add(&c.frames_in, 1);
            PeerCounters::add(&c.bytes_in, (PEER_FRAME_PREFIX_BYTES + frame.len()) as u64);
            let msg = decode_message(&frame, limits).map_err(ReadEnd::Bad)?;
            shared.heard_from(from);
            match msg {
                PeerMessage::Heartbeat {
                    round,
                    commit_index,
                } => {
                    let (r, ci) = &shared.heights[from as usize];
                    r.store(round, Ordering::Relaxed);
                    ci.store(commit_index, Ordering::Relaxed);
                }
                msg => {
                    stats.add_in(1);
                    // Waiting here (this member's budget spent, or a full
                    // ring) stops reading this stream: QUIC flow control
                    // then slows the sender.
                    let Some(charge) = shared
                        .inbound_budget
                        .acquire(from, frame.len(), inbound, c)
                        .await
                    else {
                        return Err(ReadEnd::Shutdown);
                    };
                    if inbound
                        .push(Inbound { from, msg, charge }, stats)
                        .await
                        .is_err()
                    {
                        return Err(ReadEnd::Shutdown);
                    }
                    stats.add_out(1);
                }
            }
        }
    }
}

/// Reads one frame into an aligned buffer; `Ok(None)` at a clean end of
/// stream (between frames).
async fn read_frame(
    recv: &mut quinn::RecvStream,
    limits: &WireLimits,
) -> Result<Option<AlignedVec<ARCHIVE_ALIGN_BYTES>>, ReadEnd> {
    let mut prefix = [0u8; PEER_FRAME_PREFIX_BYTES];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(quinn::ReadExactError::FinishedEarly(_)) => {
            return Err(ReadEnd::Bad(WireError::Truncated))
        }
        Err(quinn::ReadExactError::ReadError(e)) => return Err(ReadEnd::Gone(e.to_string())),
    }
    let len = u32::from_le_bytes(prefix) as usize;
    check_frame_len(len, limits).map_err(ReadEnd::Bad)?;
    // The body grows with the bytes that actually arrive: a prefix that
    // announces 8 MiB costs nothing until 8 MiB are sent (and flow control
    // bounds how much may be in flight).
    let mut body = AlignedVec::<ARCHIVE_ALIGN_BYTES>::with_capacity(len.min(FRAME_INITIAL_BYTES));
    while body.len() < len {
        match recv.read_chunk(len - body.len(), true).await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk.bytes),
            Ok(None) => return Err(ReadEnd::Bad(WireError::Truncated)),
            Err(e) => return Err(ReadEnd::Gone(e.to_string())),
        }
    }
    Ok(Some(body))
}

/// A frame's buffer starts at most this large; it grows as bytes arrive.
const FRAME_INITIAL_BYTES: usize = 64 << 10;

/// Counts alive → dead transitions and keeps the `alive` gauge. Liveness
/// itself is computed on read from `last_heard_ms`, so it is never stale.
async fn liveness_loop(shared: Arc<Shared>, t: Timing) {
    let tick = (t.heartbeat.min(t.dead_after / 4)).max(Duration::from_millis(10));
    let me = shared.me as usize;
    let mut was_alive = vec![false; shared.keys.len()];
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let now = shared.now_ms();
        let mut alive = 0u64;
        for (i, was) in was_alive.iter_mut().enumerate() {
            if i == me {
                continue;
            }
            let is = shared.is_alive(i, now);
            if *was && !is {
                PeerCounters::add(&shared.counters.peers_dead_events, 1);
                tracing::info!(peer = i, "peer silent for dead_after_ms: marked dead");
            }
            *was = is;
            alive += u64::from(is);
        }
        shared.counters.alive.store(alive, Ordering::Relaxed);
    }
}
