//! The client ingress endpoint: QUIC streams of framed transactions in,
//! response records out.
//!
//! Every decoded frame becomes an [`IngressTx`] carrying a [`Ticket`]. A
//! ticket yields exactly one response record: whoever finishes with the
//! transaction (verify, pool, commit) calls [`Ticket::respond`]; a ticket
//! dropped without an answer answers `Rejected(ShuttingDown)` from its
//! destructor, so a stream never waits forever and nothing is lost silently.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use velox_exec::reason::RejectCounters;
use velox_exec::tx::{Tx, TxDigest};
use velox_exec::RejectReason;
use velox_io::{Ring, TileStats};

use crate::frame::{AckMode, FrameDecoder, FrameError, Response, Status, STREAM_TXS_MAX};

/// Transactions handed to the verify stage per ring item: amortises the ring
/// hand-off and fills one signature batch.
pub const INGRESS_BATCH_TXS: usize = 64;
/// Bytes read from a stream per read call.
pub const STREAM_READ_BYTES: usize = 64 * 1024;
/// Application code client connections are closed with when the node
/// stops (after every stream got a record for each of its transactions).
pub const CLOSE_SHUTTING_DOWN: u32 = 0x204;
/// Time streams have, once the node stops, to write their last records
/// before the connections close.
pub const SHUTDOWN_ANSWER_MS: u64 = 300;

/// Stops the ingress ([`serve`]): every open stream answers each of its
/// transactions not answered yet with `shutting_down` (204) and ends; the
/// connections then close with [`CLOSE_SHUTTING_DOWN`].
pub struct IngressStopper {
    stop: watch::Sender<bool>,
    done: watch::Receiver<bool>,
}

/// [`serve`]'s end of an [`IngressStopper`].
pub struct IngressStopSignal {
    stop: watch::Receiver<bool>,
    done: watch::Sender<bool>,
}

/// A stopper and the signal [`serve`] watches.
pub fn stop_channel() -> (IngressStopper, IngressStopSignal) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(false);
    (
        IngressStopper {
            stop: stop_tx,
            done: done_rx,
        },
        IngressStopSignal {
            stop: stop_rx,
            done: done_tx,
        },
    )
}

impl IngressStopper {
    /// Stops the ingress and waits until its connections are closed, at
    /// most `timeout`; whether they were.
    pub async fn stop(mut self, timeout: std::time::Duration) -> bool {
        let _ = self.stop.send(true);
        tokio::time::timeout(timeout, self.done.wait_for(|d| *d))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// A decoded transaction and the ticket that answers for it.
pub struct IngressTx {
    pub tx: Tx,
    pub ticket: Ticket,
}

struct StreamReply {
    mode: AckMode,
    out: mpsc::UnboundedSender<Response>,
}

/// The right (and duty) to answer for one frame of one stream.
pub struct Ticket {
    index: u32,
    digest: TxDigest,
    reply: Option<Arc<StreamReply>>,
}

impl Ticket {
    pub fn mode(&self) -> AckMode {
        self.reply
            .as_ref()
            .map(|r| r.mode)
            .unwrap_or(AckMode::Admission)
    }
    pub fn digest(&self) -> TxDigest {
        self.digest
    }

    /// A ticket nobody waits for (transactions that did not come from a
    /// client stream).
    pub fn detached(digest: TxDigest) -> Self {
        Self {
            index: 0,
            digest,
            reply: None,
        }
    }

    /// Sends this frame's response. The stream may be gone; that is fine.
    pub fn respond(mut self, status: Status, reason: Option<RejectReason>, commit_index: u64) {
        if let Some(r) = self.reply.take() {
            let _ = r.out.send(Response {
                index: self.index,
                status,
                reason,
                commit_index,
                digest: self.digest,
            });
        }
    }

    pub fn reject(self, reason: RejectReason) {
        self.respond(Status::Rejected, Some(reason), 0)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(r) = self.reply.take() {
            let _ = r.out.send(Response::rejected(
                self.index,
                self.digest,
                RejectReason::ShuttingDown,
                0,
            ));
        }
    }
}

/// Counters of the ingress endpoint.
#[derive(Default)]
pub struct IngressCounters {
    pub connections_accepted: AtomicU64,
    pub connections_refused: AtomicU64,
    /// Of those, refused for their IP address's share.
    pub connections_refused_per_ip: AtomicU64,
    /// Connections open or in their handshake: a slot is taken at accept,
    /// so that handshakes started together cannot pass the limit.
    pub connections_open: AtomicU64,
    pub streams: AtomicU64,
    pub frames: AtomicU64,
    pub bytes: AtomicU64,
    pub frame_errors: AtomicU64,
}

/// Limits of the ingress endpoint.
#[derive(Clone, Copy, Debug)]
pub struct IngressLimits {
    /// Client connections open or in their handshake at most; more are
    /// refused at accept (before any handshake work) and counted.
    pub connections_max: usize,
    /// The same, from one IP address: one host cannot take every place.
    pub connections_per_ip_max: usize,
}

/// Open connections per client IP address (the accept loop and its
/// connection tasks share one thread).
type PerIp = std::rc::Rc<std::cell::RefCell<std::collections::HashMap<std::net::IpAddr, usize>>>;

/// One connection's place under [`IngressLimits::connections_max`] and
/// its address's under `connections_per_ip_max`, taken at accept and given
/// back when the connection (or its failed handshake) ends.
struct ConnectionSlot {
    counters: Arc<IngressCounters>,
    per_ip: PerIp,
    ip: std::net::IpAddr,
}

impl ConnectionSlot {
    fn take(
        counters: &Arc<IngressCounters>,
        per_ip: &PerIp,
        ip: std::net::IpAddr,
        limits: &IngressLimits,
    ) -> Option<ConnectionSlot> {
        {
            let mut m = per_ip.borrow_mut();
            let n = m.entry(ip).or_default();
            if *n >= limits.connections_per_ip_max {
                counters
                    .connections_refused_per_ip
                    .fetch_add(1, Ordering::Relaxed);
                return None;
            }
            *n += 1;
        }
        let slot = ConnectionSlot {
            counters: counters.clone(),
            per_ip: per_ip.clone(),
            ip,
        };
        let before = counters.connections_open.fetch_add(1, Ordering::AcqRel);
        if before as usize >= limits.connections_max {
            // Dropping the slot gives both places back.
            return None;
        }
        Some(slot)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.counters
            .connections_open
            .fetch_sub(1, Ordering::AcqRel);
        let mut m = self.per_ip.borrow_mut();
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// Accepts client connections on `endpoint` until it is closed, sending
/// decoded transactions into `out`.
pub async fn serve(
    endpoint: quinn::Endpoint,
    out: Arc<Ring<Vec<IngressTx>>>,
    limits: IngressLimits,
    counters: Arc<IngressCounters>,
    rejects: Arc<RejectCounters>,
    stats: Arc<TileStats>,
    signal: IngressStopSignal,
) {
    let mut stopping = signal.stop.clone();
    let per_ip = PerIp::default();
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
            _ = stopping.wait_for(|s| *s) => break,
        };
        let ip = incoming.remote_address().ip();
        let Some(slot) = ConnectionSlot::take(&counters, &per_ip, ip, &limits) else {
            counters.connections_refused.fetch_add(1, Ordering::Relaxed);
            incoming.refuse();
            continue;
        };
        let (out, counters, rejects, stats) = (
            out.clone(),
            counters.clone(),
            rejects.clone(),
            stats.clone(),
        );
        let stop = signal.stop.clone();
        tokio::task::spawn_local(async move {
            let _slot = slot;
            let mut stopping = stop.clone();
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "client handshake failed");
                    return;
                }
            };
            counters
                .connections_accepted
                .fetch_add(1, Ordering::Relaxed);
            let remote = conn.remote_address();
            loop {
                let (send, recv) = tokio::select! {
                    s = conn.accept_bi() => match s {
                        Ok(s) => s,
                        Err(_) => break,
                    },
                    _ = stopping.wait_for(|s| *s) => {
                        // Held open (dropping the last handle would close
                        // it with code 0) while its streams write their
                        // last records; the endpoint closes it.
                        conn.closed().await;
                        break;
                    }
                };
                counters.streams.fetch_add(1, Ordering::Relaxed);
                let (out, counters, rejects, stats) = (
                    out.clone(),
                    counters.clone(),
                    rejects.clone(),
                    stats.clone(),
                );
                let stop = stop.clone();
                tokio::task::spawn_local(async move {
                    if let Err(e) =
                        handle_stream(send, recv, &out, &counters, &rejects, &stats, stop).await
                    {
                        tracing::debug!(%remote, error = %e, "client stream ended with an error");
                    }
                });
            }
        });
    }
    if *signal.stop.borrow() {
        // The streams saw the same signal and answer what they owe: give
        // them a moment to write it, then close every connection with an
        // application code (the client learns at once, not at its idle
        // timeout).
        tokio::time::sleep(std::time::Duration::from_millis(SHUTDOWN_ANSWER_MS)).await;
        endpoint.close(CLOSE_SHUTTING_DOWN.into(), b"shutting down");
        let _ =
            tokio::time::timeout(std::time::Duration::from_millis(500), endpoint.wait_idle()).await;
    }
    let _ = signal.done.send(true);
}

#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("read: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("read: {0}")]
    ReadExact(#[from] quinn::ReadExactError),
    #[error("write: {0:?}")]
    Write(#[from] quinn::WriteError),
    #[error("framing: {0}")]
    Frame(#[from] FrameError),
    #[error("node is shutting down")]
    Closed,
}

async fn handle_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    out: &Ring<Vec<IngressTx>>,
    counters: &IngressCounters,
    rejects: &RejectCounters,
    stats: &TileStats,
    mut stop: watch::Receiver<bool>,
) -> Result<(), StreamError> {
    let mut mode = [0u8; 1];
    recv.read_exact(&mut mode).await?;
    let Some(mode) = AckMode::from_u8(mode[0]) else {
        counters.frame_errors.fetch_add(1, Ordering::Relaxed);
        let _ = recv.stop(quinn::VarInt::from_u32(1));
        let _ = send.reset(quinn::VarInt::from_u32(1));
        return Err(FrameError::BadMode(mode[0]).into());
    };
    let (tx_out, mut rx) = mpsc::unbounded_channel();
    let reply = Arc::new(StreamReply { mode, out: tx_out });
    let mut decoder = FrameDecoder::new();
    let mut expected = 0usize;
    let mut batch: Vec<IngressTx> = Vec::with_capacity(INGRESS_BATCH_TXS);
    let mut frame_error = None;
    let mut stopped = false;
    'read: loop {
        let chunk = tokio::select! {
            c = recv.read_chunk(STREAM_READ_BYTES, true) => c?,
            _ = stop.wait_for(|s| *s) => {
                stopped = true;
                break 'read;
            }
        };
        let Some(chunk) = chunk else { break };
        counters
            .bytes
            .fetch_add(chunk.bytes.len() as u64, Ordering::Relaxed);
        decoder.extend(&chunk.bytes);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    let index = expected as u32;
                    expected += 1;
                    counters.frames.fetch_add(1, Ordering::Relaxed);
                    match Tx::decode(&frame) {
                        Ok(tx) => {
                            let ticket = Ticket {
                                index,
                                digest: tx.digest(),
                                reply: Some(reply.clone()),
                            };
                            batch.push(IngressTx { tx, ticket });
                            if batch.len() >= INGRESS_BATCH_TXS {
                                flush(&mut batch, out, stats).await?;
                            }
                        }
                        Err(e) => {
                            let reason = RejectReason::from(&e);
                            rejects.add(reason);
                            let _ = reply.out.send(Response::rejected(
                                index,
                                TxDigest::default(),
                                reason,
                                0,
                            ));
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    frame_error = Some(e);
                    break 'read;
                }
            }
        }
        flush(&mut batch, out, stats).await?;
    }
    if stopped {
        // Stopping: what was not handed on is answered by its dropped
        // tickets (204); nothing more is read.
        batch.clear();
        let _ = recv.stop(quinn::VarInt::from_u32(CLOSE_SHUTTING_DOWN));
    } else {
        // Frames decoded before a framing error still go on.
        flush(&mut batch, out, stats).await?;
    }
    if frame_error.is_none() && !stopped {
        if let Err(e) = decoder.finish() {
            frame_error = Some(e);
        }
    }
    if let Some(e) = &frame_error {
        // One record for the offending frame, then stop reading.
        counters.frame_errors.fetch_add(1, Ordering::Relaxed);
        let reason = match e {
            FrameError::TooLarge { .. } => RejectReason::TooLarge,
            FrameError::TooManyFrames => RejectReason::TooManyOnStream,
            _ => RejectReason::Malformed,
        };
        rejects.add(reason);
        let _ = reply.out.send(Response::rejected(
            expected as u32,
            TxDigest::default(),
            reason,
            0,
        ));
        expected += 1;
        let _ = recv.stop(quinn::VarInt::from_u32(2));
    }
    debug_assert!(expected <= STREAM_TXS_MAX + 1);
    drop(reply);
    let mut written = 0usize;
    let mut answered = vec![false; expected];
    let mut buf = Vec::with_capacity(64 * crate::frame::RESPONSE_BYTES);
    let mut take = |r: Response, buf: &mut Vec<u8>, written: &mut usize| {
        if let Some(a) = answered.get_mut(r.index as usize) {
            *a = true;
        }
        buf.extend_from_slice(&r.encode());
        *written += 1;
    };
    while written < expected {
        let r = tokio::select! {
            biased;
            r = rx.recv() => r,
            _ = stop.wait_for(|s| *s) => {
                stopped = true;
                None
            }
        };
        let Some(r) = r else { break };
        take(r, &mut buf, &mut written);
        while let Ok(r) = rx.try_recv() {
            take(r, &mut buf, &mut written);
        }
        send.write_all(&buf).await?;
        buf.clear();
    }
    if stopped && written < expected {
        // The node stops: what arrived is written, and every transaction
        // still unanswered gets shutting_down (204), so that the client
        // learns now rather than at its idle timeout (its fate: GET /tx
        // once the node is back).
        while let Ok(r) = rx.try_recv() {
            take(r, &mut buf, &mut written);
        }
        for (i, a) in answered.iter().enumerate() {
            if !a {
                buf.extend_from_slice(
                    &Response::rejected(
                        i as u32,
                        TxDigest::default(),
                        RejectReason::ShuttingDown,
                        0,
                    )
                    .encode(),
                );
            }
        }
        send.write_all(&buf).await?;
    }
    let _ = send.finish();
    match frame_error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Hands the decoded transactions to verify, waiting (backpressure) while
/// its ring is full; while this waits the stream is not read, so QUIC flow
/// control slows the client.
async fn flush(
    batch: &mut Vec<IngressTx>,
    out: &Ring<Vec<IngressTx>>,
    stats: &TileStats,
) -> Result<(), StreamError> {
    if batch.is_empty() {
        return Ok(());
    }
    let full = std::mem::replace(batch, Vec::with_capacity(INGRESS_BATCH_TXS));
    let n = full.len() as u64;
    stats.add_in(n);
    out.push(full, stats)
        .await
        .map_err(|_| StreamError::Closed)?;
    stats.add_out(n);
    Ok(())
}

/// A client of the ingress protocol (used by the load generator and tests).
pub struct IngressClient {
    conn: quinn::Connection,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("write: {0:?}")]
    Write(#[from] quinn::WriteError),
    #[error("read: {0:?}")]
    Read(#[from] quinn::ReadToEndError),
    // Debug shows why a connection was lost (timed out, reset, closed by
    // the peer with a code), which Display hides.
    #[error("read: {0:?}")]
    ReadChunk(#[from] quinn::ReadError),
    #[error("stream closed: {0}")]
    Closed(#[from] quinn::ClosedStream),
    #[error("bad response: {0}")]
    Frame(#[from] FrameError),
}

impl IngressClient {
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
    ) -> Result<Self, ClientError> {
        let conn = endpoint.connect(addr, "velox")?.await?;
        Ok(Self { conn })
    }

    pub fn connection(&self) -> &quinn::Connection {
        &self.conn
    }

    /// Sends raw stream bytes (mode byte and frames, possibly malformed) and
    /// returns the decoded response records.
    pub async fn send_raw(&self, bytes: &[u8]) -> Result<Vec<Response>, ClientError> {
        let (mut send, mut recv) = self.conn.open_bi().await?;
        send.write_all(bytes).await?;
        send.finish()?;
        let data = recv
            .read_to_end((STREAM_TXS_MAX + 1) * crate::frame::RESPONSE_BYTES)
            .await?;
        data.chunks(crate::frame::RESPONSE_BYTES)
            .map(|c| Response::decode(c).map_err(Into::into))
            .collect()
    }

    /// Submits on one stream and calls `on_response` for each record as it
    /// arrives (records come in commit order, not frame order). Returns the
    /// number of records received.
    pub async fn submit_streaming(
        &self,
        mode: AckMode,
        txs: &[&[u8]],
        on_response: impl FnMut(Response),
    ) -> Result<usize, ClientError> {
        self.submit_streaming_gated((), mode, txs, on_response)
            .await
    }

    /// [`Self::submit_streaming`], holding `gate` until the stream is open.
    ///
    /// A client that pipelines several streams with dependent transactions
    /// (one sender's consecutive nonces) must open them in nonce order: a
    /// stream is answered only when all its transactions are, a transaction
    /// waits in the pool for its sender's earlier nonces, and a connection
    /// has at most 64 open streams. Opening later nonces first can use up the
    /// stream credit that the earlier ones need. Passing a guard of a FIFO
    /// lock taken in submission order as `gate` orders the openings.
    pub async fn submit_streaming_gated<G>(
        &self,
        gate: G,
        mode: AckMode,
        txs: &[&[u8]],
        mut on_response: impl FnMut(Response),
    ) -> Result<usize, ClientError> {
        assert!(txs.len() <= STREAM_TXS_MAX);
        let mut wire = Vec::with_capacity(1 + txs.iter().map(|t| t.len() + 4).sum::<usize>());
        wire.push(mode as u8);
        for t in txs {
            crate::frame::encode_frame(t, &mut wire);
        }
        let (mut send, mut recv) = self.conn.open_bi().await?;
        drop(gate);
        send.write_all(&wire).await?;
        send.finish()?;
        let mut buf: Vec<u8> = Vec::with_capacity(crate::frame::RESPONSE_BYTES * 64);
        let mut n = 0;
        loop {
            let chunk = recv.read_chunk(64 * 1024, true).await?;
            let Some(chunk) = chunk else { break };
            buf.extend_from_slice(&chunk.bytes);
            let whole = buf.len() / crate::frame::RESPONSE_BYTES * crate::frame::RESPONSE_BYTES;
            for rec in buf[..whole].chunks(crate::frame::RESPONSE_BYTES) {
                on_response(Response::decode(rec)?);
                n += 1;
            }
            buf.drain(..whole);
        }
        if !buf.is_empty() {
            return Err(FrameError::BadResponse.into());
        }
        Ok(n)
    }

    /// Submits encoded transactions on one stream; responses sorted by index.
    pub async fn submit(&self, mode: AckMode, txs: &[&[u8]]) -> Result<Vec<Response>, ClientError> {
        let mut out = Vec::with_capacity(txs.len());
        self.submit_streaming(mode, txs, |r| out.push(r)).await?;
        out.sort_by_key(|x| x.index);
        Ok(out)
    }
}

/// A client endpoint bound to an ephemeral loopback-or-any port.
pub fn client_endpoint(
    pinned_cert: Option<Vec<u8>>,
) -> Result<quinn::Endpoint, Box<dyn std::error::Error + Send + Sync>> {
    let mut ep = quinn::Endpoint::client("0.0.0.0:0".parse().expect("valid addr"))?;
    ep.set_default_client_config(crate::tls::client_config(
        pinned_cert,
        crate::frame::ALPN_CLIENT,
    )?);
    Ok(ep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use std::time::Duration;

    /// A served ingress endpoint on loopback (inside a `LocalSet`), with a
    /// ring nobody reads.
    struct Served {
        addr: SocketAddr,
        counters: Arc<IngressCounters>,
        ring: Arc<Ring<Vec<IngressTx>>>,
        stopper: Option<IngressStopper>,
        client: quinn::Endpoint,
        key: ed25519_dalek::SigningKey,
    }

    /// The server side of a client connection with this crate's transport.
    fn server_endpoint(seed: u8) -> (quinn::Endpoint, Vec<u8>, ed25519_dalek::SigningKey) {
        let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let pkcs8 = key.to_pkcs8_der().unwrap().as_bytes().to_vec();
        let cert = crate::tls::self_signed_cert(&pkcs8).unwrap();
        let server = crate::tls::server_config(&cert, &pkcs8, crate::frame::ALPN_CLIENT).unwrap();
        let endpoint = quinn::Endpoint::server(server, "127.0.0.1:0".parse().unwrap()).unwrap();
        (endpoint, cert, key)
    }

    fn serve_local(seed: u8, connections_max: usize, connections_per_ip_max: usize) -> Served {
        let (endpoint, cert, key) = server_endpoint(seed);
        let addr = endpoint.local_addr().unwrap();
        let counters = Arc::new(IngressCounters::default());
        let ring = Ring::new("ingress", 16);
        let (stopper, signal) = stop_channel();
        tokio::task::spawn_local(serve(
            endpoint,
            ring.clone(),
            IngressLimits {
                connections_max,
                connections_per_ip_max,
            },
            counters.clone(),
            Arc::new(RejectCounters::default()),
            TileStats::new("net", 0, 0),
            signal,
        ));
        Served {
            addr,
            counters,
            ring,
            stopper: Some(stopper),
            client: client_endpoint(Some(cert)).unwrap(),
            key,
        }
    }

    /// Runs `f` on a current-thread runtime inside a `LocalSet` (the
    /// ingress spawns its tasks locally).
    fn local<F: std::future::Future>(f: F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&rt, f)
    }

    /// Waits (at most 10 s) until `f` holds.
    async fn until(what: &str, f: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Issue 22: with `connections_max = 4`, 12 handshakes started together
    /// get 4 connections; the rest are refused at accept (counted), because
    /// a slot is taken before the handshake, not after it.
    #[test]
    fn concurrent_handshakes_cannot_pass_the_connection_limit() {
        local(async {
            let s = serve_local(5, 4, 64);
            let attempts: Vec<_> = (0..12)
                .map(|_| s.client.connect(s.addr, "velox").unwrap())
                .collect();
            let mut up = Vec::new();
            let mut refused = 0;
            for a in attempts {
                match tokio::time::timeout(Duration::from_secs(10), a).await {
                    Ok(Ok(c)) => up.push(c),
                    Ok(Err(_)) => refused += 1,
                    Err(_) => panic!("a handshake neither completed nor was refused"),
                }
            }
            assert_eq!(up.len(), 4, "connections established");
            assert_eq!(refused, 8);
            assert_eq!(s.counters.connections_refused.load(Ordering::Relaxed), 8);
            assert_eq!(s.counters.connections_open.load(Ordering::Relaxed), 4);
            // A closed connection gives its slot back.
            up.pop().unwrap().close(0u32.into(), b"bye");
            until("the slot is given back", || {
                s.counters.connections_open.load(Ordering::Relaxed) == 3
            })
            .await;
            let again = s.client.connect(s.addr, "velox").unwrap().await;
            assert!(again.is_ok(), "a freed slot admits a new connection");
        });
    }

    /// A client cannot make the node buffer more than the named windows:
    /// against a server that reads nothing, a stream takes about
    /// `CLIENT_STREAM_WINDOW_BYTES` and a connection about
    /// `CLIENT_CONNECTION_WINDOW_BYTES` (quinn's defaults: 1.25 MB per
    /// stream, unbounded per connection).
    #[test]
    fn client_flow_control_windows_bound_what_a_client_can_send_unread() {
        use crate::tls::{CLIENT_CONNECTION_WINDOW_BYTES, CLIENT_STREAM_WINDOW_BYTES};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (endpoint, cert, _) = server_endpoint(6);
            let addr = endpoint.local_addr().unwrap();
            // Accepts the connection and its streams, reads nothing.
            tokio::spawn(async move {
                let conn = endpoint.accept().await.unwrap().await.unwrap();
                let mut held = Vec::new();
                while let Ok(s) = conn.accept_bi().await {
                    held.push(s);
                }
            });
            let client = client_endpoint(Some(cert)).unwrap();
            let conn = client.connect(addr, "velox").unwrap().await.unwrap();
            // How much `streams` streams get through before they block.
            let sent = |streams: usize| {
                let conn = conn.clone();
                async move {
                    let mut total = 0usize;
                    let mut open = Vec::new();
                    for _ in 0..streams {
                        let (mut s, r) = conn.open_bi().await.unwrap();
                        let chunk = vec![0u8; 16 << 10];
                        loop {
                            match tokio::time::timeout(Duration::from_millis(300), s.write(&chunk))
                                .await
                            {
                                Ok(Ok(n)) => total += n,
                                Ok(Err(e)) => panic!("{e}"),
                                Err(_) => break,
                            }
                        }
                        open.push((s, r));
                    }
                    total
                }
            };
            let one = sent(1).await;
            let stream = CLIENT_STREAM_WINDOW_BYTES as usize;
            assert!(
                one <= stream + (16 << 10),
                "one stream sent {one} unread bytes"
            );
            assert!(one >= stream / 2, "one stream sent only {one}");
            let many = one + sent(8).await;
            let connection = CLIENT_CONNECTION_WINDOW_BYTES as usize;
            assert!(
                many <= connection + (16 << 10),
                "nine streams sent {many} unread bytes"
            );
        });
    }

    /// Issue 22: when the node stops, a commit-mode stream whose
    /// transactions wait (here in a ring nobody reads) gets one
    /// `shutting_down` (204) record per transaction at once, and its
    /// connection closes with `CLOSE_SHUTTING_DOWN`, instead of the client
    /// learning nothing until its idle timeout.
    #[test]
    fn stopping_answers_every_open_ticket_with_204_and_closes_connections() {
        use velox_exec::tx::{TxBody, TxBuilder};
        use velox_exec::AccountId;
        local(async {
            let mut s = serve_local(7, 4, 64);
            let key = s.key.clone();
            let (counters, ring) = (s.counters.clone(), s.ring.clone());
            let stopper = s.stopper.take().unwrap();
            let (client, addr) = (s.client.clone(), s.addr);
            let conn = client.connect(addr, "velox").unwrap().await.unwrap();
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            let mut bytes = vec![AckMode::Commit as u8];
            for nonce in 0..3 {
                let tx = TxBuilder {
                    chain_id: 7,
                    nonce,
                    fee: 1,
                    body: TxBody::Transfer {
                        to: AccountId([9; 32]),
                        amount: 5,
                    },
                }
                .sign(&key);
                crate::frame::encode_frame(&tx, &mut bytes);
            }
            send.write_all(&bytes).await.unwrap();
            until("the frames are read and waiting", || {
                counters.frames.load(Ordering::Relaxed) >= 3 && !ring.is_empty()
            })
            .await;
            let stopped = tokio::task::spawn_local(stopper.stop(Duration::from_secs(5)));
            let mut records = vec![0u8; 3 * crate::frame::RESPONSE_BYTES];
            tokio::time::timeout(Duration::from_secs(5), recv.read_exact(&mut records))
                .await
                .expect("answered at once, not at the idle timeout")
                .unwrap();
            let mut indices = Vec::new();
            for r in records.chunks(crate::frame::RESPONSE_BYTES) {
                let r = Response::decode(r).unwrap();
                assert_eq!(r.status, Status::Rejected);
                assert_eq!(r.reason, Some(RejectReason::ShuttingDown));
                indices.push(r.index);
            }
            indices.sort_unstable();
            assert_eq!(indices, [0, 1, 2]);
            let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed())
                .await
                .expect("the connection closes");
            match closed {
                quinn::ConnectionError::ApplicationClosed(c) => {
                    assert_eq!(c.error_code, quinn::VarInt::from_u32(CLOSE_SHUTTING_DOWN));
                }
                other => panic!("closed with {other:?}"),
            }
            assert!(stopped.await.unwrap(), "serve reported its end");
        });
    }

    /// One IP address gets at most `connections_per_ip_max` connections
    /// (here 3 of 8 places); its further attempts are refused and counted
    /// as such, and a closed one frees its address's place.
    #[test]
    fn one_address_gets_at_most_its_share_of_connections() {
        local(async {
            let s = serve_local(8, 8, 3);
            let (client, addr, counters) = (s.client.clone(), s.addr, s.counters.clone());
            let mut up = Vec::new();
            let mut refused = 0;
            for _ in 0..5 {
                match client.connect(addr, "velox").unwrap().await {
                    Ok(c) => up.push(c),
                    Err(_) => refused += 1,
                }
            }
            assert_eq!((up.len(), refused), (3, 2));
            assert_eq!(
                counters.connections_refused_per_ip.load(Ordering::Relaxed),
                2
            );
            up.pop().unwrap().close(0u32.into(), b"bye");
            until("the place is given back", || {
                counters.connections_open.load(Ordering::Relaxed) == 2
            })
            .await;
            assert!(client.connect(addr, "velox").unwrap().await.is_ok());
        });
    }
}
