//! `velox load`: pre-signed transfers over QUIC at a fixed rate, with
//! submit-to-commit latency.
//!
//! Transfers come from `accounts` development keys (the genesis funds the same
//! keys): transaction i is sent by account i mod K with that account's next
//! nonce, to account i+1 mod K. Everything is signed before the clock starts,
//! on every core, so signing never limits the offered rate. Each stream asks
//! for answers on commit; a record's latency is the time from writing its
//! stream to receiving its record.
//!
//! With several targets (validators), account a always sends to target
//! a mod T, so each sender's nonces reach one validator in order, and the
//! offered rate is split between the targets.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use velox_exec::{AccountId, TxBody, TxBuilder};
use velox_net::{AckMode, IngressClient, Status};

use crate::keys::{account_of, dev_key};
use crate::progress::{Progress, RateUnit, Style, Unit};

/// Transactions per stream at most: big enough to amortise stream set-up,
/// small enough that one stream's wait for commit is one block.
pub const LOAD_STREAM_TXS_MAX: usize = 256;
/// How often the sender wakes to send what is due.
pub const LOAD_TICK: Duration = Duration::from_millis(5);

/// A node to send to.
#[derive(Clone, Debug)]
pub struct Target {
    /// QUIC ingress address.
    pub addr: SocketAddr,
    /// Node certificate to pin (the node writes `tls-cert.der` in its data dir).
    pub cert: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct LoadArgs {
    pub targets: Vec<Target>,
    pub rate: u64,
    pub duration: Duration,
    pub accounts: u32,
    pub chain_id: u64,
    pub dev_seed: String,
    /// Node HTTP API, to read the accounts' starting nonces.
    pub api: Option<SocketAddr>,
    /// Connections per target.
    pub connections: usize,
    /// After sending stops, how long to wait for outstanding answers.
    pub grace: Duration,
    /// Show progress on stderr (`crate::progress`): the load's seconds,
    /// what was sent and answered, the commit rate and the time left; then
    /// the wait for the last answers.
    pub progress: bool,
    /// Benchmark load: unsigned opaque transactions of this many bytes, each
    /// from a fresh sender (nonce 0), instead of signed transfers. Only a
    /// node in benchmark mode (`[benchmark] skip_signature_checks`) accepts
    /// them.
    pub opaque_bytes: Option<usize>,
    /// This share (0..=0.5) of extra transactions are transfers from
    /// never-funded accounts, which fail at execution (301), each sent
    /// again with the same bytes [`RESEND_AFTER`] later, as a wallet
    /// retrying would: every one of them must still get an answer.
    pub resend_failed_share: f64,
}

/// How long after a failing transfer its identical resend is sent.
pub const RESEND_AFTER: Duration = Duration::from_secs(1);

/// Size of an opaque transaction's fixed parts (header and signature).
pub const OPAQUE_OVERHEAD_BYTES: usize =
    velox_exec::tx::TX_HEADER_BYTES + velox_exec::tx::TX_SIGNATURE_BYTES;

/// `n` unsigned opaque transactions of `bytes` bytes, each from its own
/// sender (derived from `seed` and its index).
pub fn opaque_unsigned(n: usize, bytes: usize, seed: &str, chain_id: u64) -> Vec<Vec<u8>> {
    let len = bytes.saturating_sub(OPAQUE_OVERHEAD_BYTES) as u32;
    (0..n)
        .map(|i| {
            let mut h = blake3::Hasher::new();
            h.update(seed.as_bytes());
            h.update(&(i as u64).to_le_bytes());
            TxBuilder {
                chain_id,
                nonce: 0,
                fee: 0,
                body: TxBody::Opaque { len },
            }
            .encode_with_zero_signature(AccountId(*h.finalize().as_bytes()))
        })
        .collect()
}

#[derive(Clone, Debug, Serialize)]
pub struct LoadReport {
    pub submitted: u64,
    pub committed: u64,
    pub rejected: u64,
    /// Submitted but never answered (connection lost, grace expired).
    pub unanswered: u64,
    pub rejected_by_reason: BTreeMap<String, u64>,
    pub tps: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
    pub duration_s: f64,
    pub rate_target: u64,
    pub accounts: u32,
}

#[derive(Default)]
struct Tally {
    committed: u64,
    rejected: u64,
    reasons: BTreeMap<String, u64>,
    last_answer: Option<Instant>,
}

/// The load's progress fields besides its seconds.
fn progress_extra(sent: usize, t: &Tally) -> String {
    format!(
        "sent {sent}  committed {}  rejected {}",
        t.committed, t.rejected
    )
}

/// Signs `n` transfers spread over the accounts, starting at `nonces`.
pub fn presign(n: usize, accounts: u32, seed: &str, chain_id: u64, nonces: &[u64]) -> Vec<Vec<u8>> {
    let k = accounts as usize;
    let keys: Vec<_> = (0..accounts).map(|i| dev_key(seed, i)).collect();
    let ids: Vec<AccountId> = keys.iter().map(account_of).collect();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(16);
    let chunk = n.div_ceil(threads).max(1);
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|start| {
                let (keys, ids) = (&keys, &ids);
                s.spawn(move || {
                    (start..(start + chunk).min(n))
                        .map(|i| {
                            let a = i % k;
                            let b = TxBuilder {
                                chain_id,
                                nonce: nonces[a] + (i / k) as u64,
                                fee: 1,
                                body: TxBody::Transfer {
                                    to: ids[(a + 1) % k],
                                    amount: 1,
                                },
                            };
                            b.sign(&keys[a])
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            out.extend(h.join().expect("signing thread panicked"));
        }
    });
    out
}

fn percentile(h: &hdrhistogram::Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Runs the load and returns its report.
pub fn run_load(args: &LoadArgs) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(args.accounts > 0, "--accounts must be at least 1");
    anyhow::ensure!(args.rate > 0, "--rate must be at least 1");
    anyhow::ensure!(!args.targets.is_empty(), "give at least one --target");
    let total = (args.rate as f64 * args.duration.as_secs_f64()).ceil() as usize;
    if let Some(bytes) = args.opaque_bytes {
        anyhow::ensure!(
            (OPAQUE_OVERHEAD_BYTES..=velox_exec::tx::TX_BYTES_MAX).contains(&bytes),
            "opaque transactions are {OPAQUE_OVERHEAD_BYTES}..={} bytes",
            velox_exec::tx::TX_BYTES_MAX
        );
    }
    let nonces: Vec<u64> = match (args.api, args.opaque_bytes) {
        (_, Some(_)) => vec![0; args.accounts as usize],
        (api, None) => match api {
            Some(api) => (0..args.accounts)
                .map(|i| {
                    let id = account_of(&dev_key(&args.dev_seed, i));
                    let v = crate::httpc::get_json(api, &format!("/account/{}", id.to_hex()))?;
                    Ok(v["nonce"].as_u64().unwrap_or(0))
                })
                .collect::<anyhow::Result<_>>()?,
            None => vec![0; args.accounts as usize],
        },
    };
    anyhow::ensure!(
        (0.0..=0.5).contains(&args.resend_failed_share),
        "the share of failing transfers to resend is 0..=0.5"
    );
    anyhow::ensure!(
        args.resend_failed_share == 0.0 || args.opaque_bytes.is_none(),
        "failing transfers to resend are signed: not with unsigned opaque load"
    );
    let t = Instant::now();
    let txs = match args.opaque_bytes {
        Some(bytes) => opaque_unsigned(total, bytes, &args.dev_seed, args.chain_id),
        None => presign(total, args.accounts, &args.dev_seed, args.chain_id, &nonces),
    };
    // Account a's transfers always go to target a mod T (its nonces in
    // order through one validator); extra failing ones spread round robin.
    let k = args.accounts as usize;
    let mut lane_of: Vec<usize> = (0..txs.len())
        .map(|i| (i % k) % args.targets.len())
        .collect();
    let txs = if args.resend_failed_share > 0.0 {
        let (txs, lanes) = with_failing_resends(txs, lane_of, args);
        lane_of = lanes;
        txs
    } else {
        txs
    };
    if args.progress {
        eprintln!(
            "load: signed {} transfers over {} accounts in {:.1}s",
            txs.len(),
            args.accounts,
            t.elapsed().as_secs_f64()
        );
    }
    let mut certs = Vec::new();
    for t in &args.targets {
        certs.push(match &t.cert {
            Some(p) => {
                Some(std::fs::read(p).with_context(|| format!("reading --cert {}", p.display()))?)
            }
            None => None,
        });
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, drive(args, txs, lane_of, certs))
}

/// Interleaves failing transfers (from never-funded keys, nonce 0) into
/// `txs`, `args.resend_failed_share` of the funded count, each followed by
/// the identical bytes `RESEND_AFTER` later (by send position at the offered
/// rate). Returns the new sequence and each transaction's target lane.
fn with_failing_resends(
    txs: Vec<Vec<u8>>,
    lane_of: Vec<usize>,
    args: &LoadArgs,
) -> (Vec<Vec<u8>>, Vec<usize>) {
    let every = (1.0 / args.resend_failed_share).round().max(1.0) as usize;
    let gap = ((args.rate as f64 * RESEND_AFTER.as_secs_f64()) as usize).max(1);
    let targets = args.targets.len();
    let mut out = Vec::with_capacity(txs.len() * (every + 2) / every);
    let mut lanes = Vec::with_capacity(out.capacity());
    // (send at or after this output position, bytes, lane)
    let mut resends: std::collections::VecDeque<(usize, Vec<u8>, usize)> = Default::default();
    let mut failing = 0usize;
    for (i, (tx, lane)) in txs.into_iter().zip(lane_of).enumerate() {
        while resends.front().is_some_and(|r| r.0 <= out.len()) {
            let (_, b, l) = resends.pop_front().expect("front exists");
            out.push(b);
            lanes.push(l);
        }
        out.push(tx);
        lanes.push(lane);
        if i % every == every - 1 {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(b"unfunded");
            seed[8..16].copy_from_slice(&(failing as u64).to_le_bytes());
            seed[16..24].copy_from_slice(&args.chain_id.to_le_bytes());
            let key = ed25519_dalek::SigningKey::from_bytes(&blake3::hash(&seed).into());
            let b = TxBuilder {
                chain_id: args.chain_id,
                nonce: 0,
                fee: 1,
                body: TxBody::Transfer {
                    to: AccountId([0xFA; 32]),
                    amount: 1,
                },
            }
            .sign(&key);
            let lane = failing % targets;
            failing += 1;
            out.push(b.clone());
            lanes.push(lane);
            resends.push_back((out.len() + gap, b, lane));
        }
    }
    for (_, b, l) in resends {
        out.push(b);
        lanes.push(l);
    }
    (out, lanes)
}

/// One target's connections and its share of the transactions.
struct Lane {
    conns: Vec<Rc<IngressClient>>,
    /// Global transaction indices for this target, increasing.
    order: Vec<usize>,
    /// How many of `order` were sent.
    sent: usize,
    endpoint: quinn::Endpoint,
    /// Streams to this target open in submission order (one sender's nonces
    /// spread over several streams; see `submit_streaming_gated`).
    open_order: std::sync::Arc<tokio::sync::Mutex<()>>,
}

async fn drive(
    args: &LoadArgs,
    txs: Vec<Vec<u8>>,
    lane_of: Vec<usize>,
    certs: Vec<Option<Vec<u8>>>,
) -> anyhow::Result<LoadReport> {
    let mut lanes = Vec::new();
    for (t, cert) in args.targets.iter().zip(certs) {
        let endpoint =
            velox_net::ingress::client_endpoint(cert).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut conns = Vec::new();
        for _ in 0..args.connections.max(1) {
            conns.push(Rc::new(
                IngressClient::connect(&endpoint, t.addr)
                    .await
                    .with_context(|| format!("connecting to {}", t.addr))?,
            ));
        }
        lanes.push(Lane {
            conns,
            order: Vec::new(),
            sent: 0,
            endpoint,
            open_order: Default::default(),
        });
    }
    for (i, lane) in lane_of.into_iter().enumerate() {
        lanes[lane].order.push(i);
    }
    let txs = Rc::new(txs);
    let tally = Rc::new(RefCell::new(Tally::default()));
    let hist = Rc::new(RefCell::new(
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?,
    ));
    let mut tasks = Vec::new();
    let style = if args.progress {
        Style::for_stderr()
    } else {
        Style::Off
    };
    let mut bar = Progress::writer(
        Box::new(std::io::stderr()),
        style,
        "load:",
        Some(args.duration.as_secs()),
        Unit::Seconds,
    )
    .rate_of(RateUnit::Per("tx"));
    let start = Instant::now();
    let mut sent = 0usize;
    let mut tick = tokio::time::interval(LOAD_TICK);
    let mut conn_i = 0usize;
    while sent < txs.len() {
        tick.tick().await;
        let elapsed = start.elapsed();
        let due = ((args.rate as f64 * elapsed.as_secs_f64()) as usize).min(txs.len());
        for lane in lanes.iter_mut() {
            // This lane's transactions with a global index below `due`.
            let lane_due = lane.order.partition_point(|&i| i < due);
            while lane.sent < lane_due {
                let end = (lane.sent + LOAD_STREAM_TXS_MAX).min(lane_due);
                let idx: Vec<usize> = lane.order[lane.sent..end].to_vec();
                lane.sent = end;
                let (conn, txs, tally, hist, order) = (
                    lane.conns[conn_i % lane.conns.len()].clone(),
                    txs.clone(),
                    tally.clone(),
                    hist.clone(),
                    lane.open_order.clone(),
                );
                conn_i += 1;
                tasks.push(tokio::task::spawn_local(async move {
                    let slice: Vec<&[u8]> = idx.iter().map(|&i| txs[i].as_slice()).collect();
                    // Tasks start in spawn order, so the FIFO lock is taken
                    // in submission order and held until the stream is open.
                    let gate = order.lock_owned().await;
                    let t0 = Instant::now();
                    let r = conn
                        .submit_streaming_gated(gate, AckMode::Commit, &slice, |resp| {
                            let mut t = tally.borrow_mut();
                            t.last_answer = Some(Instant::now());
                            match resp.status {
                                Status::Committed => {
                                    t.committed += 1;
                                    let us = t0.elapsed().as_micros().max(1) as u64;
                                    let _ = hist.borrow_mut().record(us);
                                }
                                Status::Rejected => {
                                    t.rejected += 1;
                                    let label = resp.reason.map(|r| r.label()).unwrap_or("unknown");
                                    *t.reasons.entry(label.to_string()).or_default() += 1;
                                }
                                Status::Accepted => {}
                            }
                        })
                        .await;
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "load stream failed");
                    }
                }));
            }
        }
        sent = due;
        let t = tally.borrow();
        bar.update_with(elapsed.as_secs_f64(), t.committed as f64, || {
            progress_extra(sent, &t)
        });
    }
    {
        let t = tally.borrow();
        let secs = start.elapsed().as_secs_f64();
        bar.finish_with(secs, t.committed as f64, || progress_extra(sent, &t));
    }
    drop(bar);
    // The wait for the last answers (up to the grace period).
    let mut bar = Progress::writer(
        Box::new(std::io::stderr()),
        style,
        "load: waiting for answers",
        Some(sent as u64),
        Unit::Count("answered"),
    );
    let answered = || {
        let t = tally.borrow();
        t.committed + t.rejected
    };
    let deadline = tokio::time::Instant::now() + args.grace;
    let mut progress_tick = tokio::time::interval(Duration::from_millis(250));
    'answers: for mut t in tasks {
        loop {
            tokio::select! {
                r = tokio::time::timeout_at(deadline, &mut t) => {
                    if r.is_err() {
                        break 'answers;
                    }
                    break;
                }
                _ = progress_tick.tick() => bar.update(answered()),
            }
        }
    }
    bar.finish(answered());
    drop(bar);
    let end = tally.borrow().last_answer.unwrap_or_else(Instant::now);
    // Never zero, so tps stays finite on an empty run.
    let duration_s = end.duration_since(start).as_secs_f64().max(1e-3);
    let report = {
        let (t, h) = (tally.borrow(), hist.borrow());
        LoadReport {
            submitted: sent as u64,
            committed: t.committed,
            rejected: t.rejected,
            unanswered: (sent as u64).saturating_sub(t.committed + t.rejected),
            rejected_by_reason: t.reasons.clone(),
            tps: t.committed as f64 / duration_s,
            latency_ms_p50: percentile(&h, 0.50),
            latency_ms_p99: percentile(&h, 0.99),
            latency_ms_max: h.max() as f64 / 1000.0,
            duration_s,
            rate_target: args.rate,
            accounts: args.accounts,
        }
    };
    for lane in &lanes {
        for c in &lane.conns {
            c.connection().close(0u32.into(), b"done");
        }
    }
    for lane in &lanes {
        lane.endpoint.wait_idle().await;
    }
    Ok(report)
}
