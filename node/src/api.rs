//! HTTP query API, health and Prometheus metrics.
//!
//! | route | answer |
//! |---|---|
//! | `GET /health` | `{"status":"ok"}` |
//! | `GET /status` | chain head, pool gauges, tiles |
//! | `GET /account/{hex}` | committed balance and nonce |
//! | `GET /tx/{hex}` | pending / committed in block N / rejected: reason / unknown |
//! | `GET /commit/{index}` | that commit's state root, timestamp and running tx count |
//! | `GET /proof/account/{hex}` | the account's value with an inclusion or absence proof against a durable commit's root |
//! | `GET /proof/kv/{hex}` | the same for a kv counter |
//! | `GET /metrics` | Prometheus text exposition (docs/metrics.md) |
//!
//! At most [`API_REQUESTS_MAX`] requests are handled at once (more are
//! answered 503 at once) and each gets [`API_REQUEST_TIMEOUT`] (then 503):
//! a flood of slow queries cannot pile up work or memory on the node.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use velox_exec::{AccountId, StateKey, StateValue, TxDigest};

use crate::pipeline::{PoolQuery, ProofQuery};
use crate::run::NodeHandle;

/// Requests the API handles at once; more are answered 503 at once.
pub const API_REQUESTS_MAX: usize = 256;
/// A request not answered within this is answered 503 (its work dropped).
pub const API_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the API's limits did (exported in /metrics).
#[derive(Debug, Default)]
pub struct ApiCounters {
    /// Requests answered 503 because [`API_REQUESTS_MAX`] were in progress.
    pub refused_busy: AtomicU64,
    /// Requests answered 503 after [`API_REQUEST_TIMEOUT`].
    pub timeouts: AtomicU64,
}

/// The limits every request passes.
struct ApiGuard {
    permits: tokio::sync::Semaphore,
    timeout: Duration,
    counters: Arc<ApiCounters>,
}

async fn guard(
    State(g): State<Arc<ApiGuard>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Ok(_permit) = g.permits.try_acquire() else {
        g.counters.refused_busy.fetch_add(1, Ordering::Relaxed);
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("busy: {API_REQUESTS_MAX} requests in progress; retry shortly"),
        );
    };
    match tokio::time::timeout(g.timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            g.counters.timeouts.fetch_add(1, Ordering::Relaxed);
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not answered within {} s; retry", g.timeout.as_secs()),
            )
        }
    }
}

pub fn router(node: Arc<NodeHandle>) -> Router {
    router_with_limits(node, API_REQUESTS_MAX, API_REQUEST_TIMEOUT)
}

/// [`router`] with other limits.
pub fn router_with_limits(node: Arc<NodeHandle>, requests_max: usize, timeout: Duration) -> Router {
    let counters = node.api.clone();
    limited(routes(node), requests_max, timeout, counters)
}

/// `app` behind the request limits.
fn limited(
    app: Router,
    requests_max: usize,
    timeout: Duration,
    counters: Arc<ApiCounters>,
) -> Router {
    let guard_state = Arc::new(ApiGuard {
        permits: tokio::sync::Semaphore::new(requests_max),
        timeout,
        counters,
    });
    app.layer(axum::middleware::from_fn_with_state(guard_state, guard))
}

fn routes(node: Arc<NodeHandle>) -> Router {
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/status", get(status))
        .route("/account/{id}", get(account))
        .route("/tx/{digest}", get(tx_status))
        .route("/commit/{index}", get(commit))
        .route("/proof/account/{id}", get(proof_account))
        .route("/proof/kv/{key}", get(proof_kv))
        .route("/metrics", get(metrics))
        .fallback(|uri: axum::http::Uri| async move {
            error(
                StatusCode::NOT_FOUND,
                format!(
                    "no route {}: see docs/protocol.md §5 for the API",
                    uri.path()
                ),
            )
        })
        .with_state(node)
}

fn error(code: StatusCode, msg: String) -> Response {
    (code, Json(json!({"error": msg}))).into_response()
}

async fn status(State(n): State<Arc<NodeHandle>>) -> Json<serde_json::Value> {
    let (index, root) = n.shared.status.head();
    let p = &n.shared.pool;
    let (held_txs, held_bytes) = p.held();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "chain_id": n.shared.chain_id,
        "validator": n.validator,
        "commit_index": index,
        "state_root": root.to_hex(),
        "txs_committed": n.shared.status.txs_total.load(Ordering::Relaxed),
        "mempool_txs": p.len(),
        "mempool_held_txs": held_txs,
        "mempool_bytes": held_bytes,
        "in_flight_txs": p.in_flight(),
        "uptime_s": n.started.elapsed().as_secs_f64(),
        "validators": n.validators,
        "benchmark": serde_json::to_value(n.shared.benchmark).unwrap_or_default(),
        "validator_index": n.validator_index,
        "round": n.consensus.round.load(Ordering::Relaxed),
        "peers_alive": n.peers_alive(),
        "reactor": n.reactor_flavor,
        "net_reactor": velox_io::ReactorFlavor::Tokio.name(),
        "layout": serde_json::to_value(&n.layout).unwrap_or_default(),
    }))
}

async fn account(State(n): State<Arc<NodeHandle>>, Path(id): Path<String>) -> Response {
    let Ok(id) = AccountId::from_hex(&id) else {
        return error(
            StatusCode::BAD_REQUEST,
            "account must be 64 hex characters (an ed25519 public key)".into(),
        );
    };
    let chain = n.shared.chain.clone();
    let head = n.shared.status.index.load(Ordering::Acquire);
    match tokio::task::spawn_blocking(move || chain.account(&id)).await {
        Ok(Ok(a)) => Json(json!({
            "account": id.to_hex(), "balance": a.balance, "nonce": a.nonce, "commit_index": head
        }))
        .into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn commit(State(n): State<Arc<NodeHandle>>, Path(index): Path<String>) -> Response {
    let Ok(index) = index.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("commit index must be a decimal number in 0..2^64, not '{index}'"),
        );
    };
    let chain = n.shared.chain.clone();
    let pruned_below = n.durability.commits_pruned_below.load(Ordering::Relaxed);
    match tokio::task::spawn_blocking(move || chain.commit_meta(index)).await {
        Ok(Ok(Some(m))) => Json(json!({
            "commit_index": m.index,
            "state_root": m.root.to_hex(),
            "timestamp_ms": m.timestamp_ms,
            "txs_committed": m.txs_total,
        }))
        .into_response(),
        Ok(Ok(None)) if index < pruned_below => error(
            StatusCode::NOT_FOUND,
            format!(
                "commit {index} was pruned here (commits below {pruned_below} are; storage.retention_commits)"
            ),
        ),
        Ok(Ok(None)) => error(
            StatusCode::NOT_FOUND,
            format!("commit {index} is not stored here (yet)"),
        ),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// How long a proof answer waits for the commit it was read at to become
/// durable (storage trails execution by at most a few commits).
pub const PROOF_DURABLE_WAIT_MS: u64 = 5_000;

async fn proof_account(State(n): State<Arc<NodeHandle>>, Path(id): Path<String>) -> Response {
    let Ok(id) = AccountId::from_hex(&id) else {
        return error(
            StatusCode::BAD_REQUEST,
            "account must be 64 hex characters (an ed25519 public key)".into(),
        );
    };
    proof(&n, StateKey::Account(id)).await
}

async fn proof_kv(State(n): State<Arc<NodeHandle>>, Path(key): Path<String>) -> Response {
    let key = match hex::decode(&key)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
    {
        Some(k) => k,
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                "kv key must be 64 hex characters".into(),
            )
        }
    };
    proof(&n, StateKey::Kv(key)).await
}

/// Asks the exec tile for the proof, waits until the commit it describes is
/// durable, and checks the root against the stored one: the answer is
/// always about a commit `GET /commit/{index}` shows.
async fn proof(n: &NodeHandle, key: StateKey) -> Response {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if n.proofs.try_push(ProofQuery { key, reply: tx }).is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "proof query queue full; retry".into(),
        );
    }
    let Ok(a) = rx.await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the exec tile stopped".into(),
        );
    };
    let deadline = Instant::now() + Duration::from_millis(PROOF_DURABLE_WAIT_MS);
    while n.shared.status.index.load(Ordering::Acquire) < a.index {
        if Instant::now() > deadline {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("commit {} is not durable yet; retry", a.index),
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let chain = n.shared.chain.clone();
    let index = a.index;
    match tokio::task::spawn_blocking(move || chain.commit_meta(index)).await {
        Ok(Ok(Some(m))) if m.root == a.root => {}
        Ok(Ok(Some(m))) => {
            tracing::error!(index, stored = %m.root.to_hex(), executed = %a.root.to_hex(), "proof root differs from the stored commit root");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "internal: the executed root of commit {index} differs from the stored one"
                ),
            );
        }
        Ok(Ok(None)) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("internal: commit {index} is durable but not stored"),
            )
        }
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
    let mut body = json!({
        "commit_index": a.index,
        "state_root": a.root.to_hex(),
        "key": hex::encode(key.to_bytes()),
        "present": a.value.is_some(),
        "proof": a.proof.to_hex(),
        "proof_depth": a.proof.depth(),
    });
    match (key, a.value) {
        (StateKey::Account(id), v) => {
            let acct = match v {
                Some(StateValue::Account(x)) => x,
                _ => velox_exec::Account::default(),
            };
            body["account"] = json!(id.to_hex());
            body["balance"] = json!(acct.balance);
            body["nonce"] = json!(acct.nonce);
        }
        (StateKey::Kv(k), v) => {
            body["kv"] = json!(hex::encode(k));
            body["value"] = json!(match v {
                Some(StateValue::Kv(x)) => x,
                _ => 0,
            });
        }
    }
    Json(body).into_response()
}

async fn tx_status(State(n): State<Arc<NodeHandle>>, Path(d): Path<String>) -> Response {
    let Ok(digest) = TxDigest::from_hex(&d) else {
        return error(
            StatusCode::BAD_REQUEST,
            "digest must be 64 hex characters".into(),
        );
    };
    let chain = n.shared.chain.clone();
    let stored = match tokio::task::spawn_blocking(move || chain.tx_location(&digest)).await {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    if let Some(l) = stored {
        return match l.outcome {
            Ok(()) => Json(json!({"digest": d, "status": "committed", "commit_index": l.index, "position": l.position})),
            Err(r) => Json(json!({"digest": d, "status": "rejected", "reason": r.label(), "code": r.code(),
                "commit_index": l.index, "position": l.position})),
        }
        .into_response();
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let pending = match n.queries.try_push(PoolQuery { digest, reply: tx }) {
        Ok(()) => rx.await.unwrap_or(false),
        Err(_) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "mempool query queue full; retry".into(),
            )
        }
    };
    if pending {
        return Json(json!({"digest": d, "status": "pending"})).into_response();
    }
    if let Some(r) = n.shared.recent_rejects.get(&digest) {
        return Json(
            json!({"digest": d, "status": "rejected", "reason": r.label(), "code": r.code()}),
        )
        .into_response();
    }
    (
        StatusCode::NOT_FOUND,
        Json(json!({"digest": d, "status": "unknown"})),
    )
        .into_response()
}

async fn metrics(State(n): State<Arc<NodeHandle>>) -> Response {
    let body = render_metrics(&n);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Writes one metric family header.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes unlabelled metrics: (name, type, help, value) each.
fn scalars(out: &mut String, metrics: &[(&str, &str, &str, f64)]) {
    for (name, kind, help, v) in metrics {
        family(out, name, kind, help);
        let _ = writeln!(out, "{name} {v}");
    }
}

/// The Prometheus text exposition of every node metric.
pub fn render_metrics(n: &NodeHandle) -> String {
    let mut o = String::with_capacity(8192);
    let tiles = n.registry.sample();
    let lbl = |t: &velox_io::stats::TileReport| {
        format!(
            "tile=\"{}\",index=\"{}\",core=\"{}\"",
            t.snap.kind, t.snap.index, t.snap.core
        )
    };
    type TileField = fn(&velox_io::stats::TileReport) -> f64;
    let tile_families: [(&str, &str, &str, TileField); 8] = [
        (
            "velox_tile_busy_ratio",
            "gauge",
            "Fraction of the last interval the tile spent working.",
            |t| t.busy_ratio,
        ),
        (
            "velox_tile_backpressure_ratio",
            "gauge",
            "Fraction of the last interval the tile waited on a full output ring.",
            |t| t.backpressure_ratio,
        ),
        (
            "velox_tile_busy_seconds_total",
            "counter",
            "Time the tile spent working.",
            |t| t.snap.busy_ns as f64 / 1e9,
        ),
        (
            "velox_tile_backpressure_seconds_total",
            "counter",
            "Time the tile waited on a full output ring.",
            |t| t.snap.backpressure_ns as f64 / 1e9,
        ),
        (
            "velox_tile_items_in_total",
            "counter",
            "Items (transactions) the tile took in.",
            |t| t.snap.items_in as f64,
        ),
        (
            "velox_tile_items_out_total",
            "counter",
            "Items (transactions) the tile passed on.",
            |t| t.snap.items_out as f64,
        ),
        (
            "velox_tile_drops_total",
            "counter",
            "Items the tile dropped without passing on or answering.",
            |t| t.snap.drops as f64,
        ),
        (
            "velox_tile_queue_depth",
            "gauge",
            "Items waiting in the tile's input ring.",
            |t| t.snap.queue_depth as f64,
        ),
    ];
    for (name, kind, help, f) in tile_families {
        family(&mut o, name, kind, help);
        for t in &tiles {
            let _ = writeln!(o, "{name}{{{}}} {}", lbl(t), f(t));
        }
    }
    let s = &n.shared;
    let (index, _) = s.status.head();
    let pc = s.pool.counters();
    let (held_txs, held_bytes) = s.pool.held();
    let gauges = [
        (
            "velox_storage_write_seconds_sum",
            "counter",
            "Time spent in commit writes (one RocksDB write batch each).",
            s.storage_write_ns.load(Ordering::Relaxed) as f64 / 1e9,
        ),
        (
            "velox_storage_write_seconds_count",
            "counter",
            "Commit writes in the sum.",
            s.storage_writes.load(Ordering::Relaxed) as f64,
        ),
        (
            "velox_commit_index",
            "gauge",
            "Index of the last durable commit.",
            index as f64,
        ),
        (
            "velox_committed_txs_total",
            "counter",
            "Transactions committed and executed successfully.",
            s.status.txs_total.load(Ordering::Relaxed) as f64,
        ),
        (
            "velox_blocks_committed_total",
            "counter",
            "Commits written since start.",
            s.status.blocks.load(Ordering::Relaxed) as f64,
        ),
        (
            "velox_mempool_txs",
            "gauge",
            "Transactions pending in the pool (admitted, not in flight).",
            s.pool.len() as f64,
        ),
        (
            "velox_mempool_queued_txs",
            "gauge",
            "Transactions inserted by verify tiles, waiting in the pool's inboxes for admission.",
            s.pool.queued() as f64,
        ),
        (
            "velox_mempool_held_txs",
            "gauge",
            "Transactions the pool's budget counts: queued, pending and in flight.",
            held_txs as f64,
        ),
        (
            "velox_mempool_bytes",
            "gauge",
            "Bytes the pool's budget counts (transactions and their bookkeeping).",
            held_bytes as f64,
        ),
        (
            "velox_mempool_in_flight_txs",
            "gauge",
            "Transactions handed to consensus and not settled yet.",
            s.pool.in_flight() as f64,
        ),
        (
            "velox_mempool_admitted_total",
            "counter",
            "Transactions admitted to the pool.",
            pc.admitted as f64,
        ),
        (
            "velox_mempool_replaced_total",
            "counter",
            "Pending transactions replaced by a higher fee for the same sender and nonce.",
            pc.replaced as f64,
        ),
        (
            "velox_mempool_expired_total",
            "counter",
            "Pending transactions evicted for age (mempool.expiry_ms).",
            pc.expired as f64,
        ),
        (
            "velox_mempool_returned_total",
            "counter",
            "In-flight transactions returned to pending (their batch could no longer commit).",
            pc.returned as f64,
        ),
        (
            "velox_mempool_gap_waits_total",
            "counter",
            "Transactions that failed bad_nonce only because an earlier nonce of their sender \
             was still in flight; the sender waits for that one before sending more.",
            pc.gap_waits as f64,
        ),
        (
            "velox_mempool_backpressure_waits_total",
            "counter",
            "Inserts that found the pool full and held ingress waiting for room.",
            s.pool_pressure.waits.load(Ordering::Relaxed) as f64,
        ),
        (
            "velox_mempool_backpressure_seconds_total",
            "counter",
            "Time verify tiles held ingress waiting for room in the pool.",
            s.pool_pressure.wait_ns.load(Ordering::Relaxed) as f64 / 1e9,
        ),
        (
            "velox_verify_duplicates_unverified_total",
            "counter",
            "Resent copies of transactions the pool holds, answered duplicate (201) before their \
             signature was checked.",
            s.pool_pressure
                .duplicates_unverified
                .load(Ordering::Relaxed) as f64,
        ),
        (
            "velox_commit_latency_seconds_sum",
            "counter",
            "Sum of block-cut-to-durable latencies.",
            s.commit_latency_ns.load(Ordering::Relaxed) as f64 / 1e9,
        ),
        (
            "velox_commit_latency_seconds_count",
            "counter",
            "Number of commits in the latency sum.",
            s.commit_latency_count.load(Ordering::Relaxed) as f64,
        ),
        (
            "velox_uptime_seconds",
            "gauge",
            "Seconds since the node started.",
            n.started.elapsed().as_secs_f64(),
        ),
    ];
    scalars(&mut o, &gauges);
    render_account_cache(&mut o, &s.chain);
    family(
        &mut o,
        "velox_mempool_full_total",
        "counter",
        "Inserts refused because the pool was full, by the bound that was hit \
         (each then waited for room or was rejected PoolFull).",
    );
    for (bound, v) in [
        ("txs", pc.full_txs),
        ("bytes", pc.full_bytes),
        ("inbox", pc.full_inbox),
    ] {
        let _ = writeln!(o, "velox_mempool_full_total{{bound=\"{bound}\"}} {v}");
    }
    family(
        &mut o,
        "velox_rejected_total",
        "counter",
        "Transactions rejected, by reason.",
    );
    for (r, c) in s.rejects.snapshot() {
        let _ = writeln!(o, "velox_rejected_total{{reason=\"{}\"}} {c}", r.label());
    }
    let d = &n.durability;
    let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
    let durability: [(&str, &str, &str, f64); 19] = [
        (
            "velox_storage_corruption_detected_total",
            "counter",
            "Damaged database files found by the integrity scan after start (see the log).",
            ld(&d.corruption_detected),
        ),
        (
            "velox_storage_integrity_scan_done",
            "gauge",
            "1 once the integrity scan after start has finished.",
            ld(&d.integrity_scan_done),
        ),
        (
            "velox_snapshots_written_total",
            "counter",
            "State snapshots written to DATA_DIR/snapshots.",
            ld(&d.snapshots_written),
        ),
        (
            "velox_snapshots_skipped_total",
            "counter",
            "Snapshots skipped because the previous one was still being written.",
            ld(&d.snapshots_skipped),
        ),
        (
            "velox_snapshot_failures_total",
            "counter",
            "Snapshot writes that failed (see the log).",
            ld(&d.snapshot_failures),
        ),
        (
            "velox_snapshot_last_index",
            "gauge",
            "Commit index of the newest snapshot written.",
            ld(&d.last_snapshot_index),
        ),
        (
            "velox_snapshot_last_bytes",
            "gauge",
            "Size of the newest snapshot written by this process.",
            ld(&d.last_snapshot_bytes),
        ),
        (
            "velox_snapshot_write_seconds_sum",
            "counter",
            "Time spent writing snapshots (background thread).",
            ld(&d.snapshot_write_ns) / 1e9,
        ),
        (
            "velox_snapshot_write_seconds_count",
            "counter",
            "Snapshots in the sum.",
            ld(&d.snapshots_written),
        ),
        (
            "velox_snapshot_last_write_seconds",
            "gauge",
            "Time the newest snapshot took to write.",
            ld(&d.last_snapshot_write_ns) / 1e9,
        ),
        (
            "velox_snapshot_view_wait_seconds_total",
            "counter",
            "Time the storage tile waited for snapshot views (its only snapshot cost).",
            ld(&d.snapshot_view_wait_ns) / 1e9,
        ),
        (
            "velox_prune_passes_total",
            "counter",
            "Pruning passes run.",
            ld(&d.prune_passes),
        ),
        (
            "velox_prune_failures_total",
            "counter",
            "Pruning passes that failed (see the log).",
            ld(&d.prune_failures),
        ),
        (
            "velox_prune_seconds_total",
            "counter",
            "Time spent pruning (background thread).",
            ld(&d.prune_ns) / 1e9,
        ),
        (
            "velox_pruned_commits_total",
            "counter",
            "Commits whose block, transaction index and record were pruned.",
            ld(&d.pruned_commits),
        ),
        (
            "velox_pruned_txs_total",
            "counter",
            "Transaction-index entries pruned.",
            ld(&d.pruned_txs),
        ),
        (
            "velox_pruned_batches_total",
            "counter",
            "Stored batches pruned from the consensus log.",
            ld(&d.pruned_batches),
        ),
        (
            "velox_commits_pruned_below",
            "gauge",
            "Commits below this index are pruned (0: none).",
            ld(&d.commits_pruned_below),
        ),
        (
            "velox_consensus_log_pruned_below_round",
            "gauge",
            "Consensus-log rounds below this are pruned (0: none).",
            ld(&d.consensus_pruned_below),
        ),
    ];
    scalars(&mut o, &durability);
    let x = &s.executor.metrics;
    let exec: [(&str, &str, &str, f64); 8] = [
        (
            "velox_exec_executions_total",
            "counter",
            "Transaction executions by the parallel executor, re-executions included.",
            x.executions.load(Ordering::Relaxed) as f64,
        ),
        (
            "velox_exec_reexecutions_total",
            "counter",
            "Re-executions after a failed validation (aborts).",
            x.reexecutions.load(Ordering::Relaxed) as f64,
        ),
        (
            "velox_exec_validation_failures_total",
            "counter",
            "Read-set validations that failed.",
            x.validation_failures.load(Ordering::Relaxed) as f64,
        ),
        (
            "velox_exec_parallel_blocks_total",
            "counter",
            "Blocks executed in parallel.",
            x.parallel_blocks.load(Ordering::Relaxed) as f64,
        ),
        (
            "velox_exec_block_seconds_sum",
            "counter",
            "Time spent executing blocks.",
            x.block_exec_ns_sum.load(Ordering::Relaxed) as f64 / 1e9,
        ),
        (
            "velox_exec_block_seconds_count",
            "counter",
            "Blocks in the execution time sum.",
            x.block_exec_count.load(Ordering::Relaxed) as f64,
        ),
        (
            "velox_exec_adaptive_blocks_total",
            "counter",
            "Blocks whose path the adaptive cost check chose.",
            x.adaptive_blocks.load(Ordering::Relaxed) as f64,
        ),
        (
            "velox_exec_adaptive_prefers_sequential",
            "gauge",
            "1 while the adaptive guard measures the sequential executor cheaper.",
            u8::from(x.adaptive_prefers_seq.load(Ordering::Relaxed)) as f64,
        ),
    ];
    scalars(&mut o, &exec);
    family(
        &mut o,
        "velox_exec_sequential_blocks_total",
        "counter",
        "Blocks executed sequentially, by reason.",
    );
    for (label, c) in velox_exec::SequentialReason::LABELS
        .iter()
        .zip(&x.sequential_blocks)
    {
        let _ = writeln!(
            o,
            "velox_exec_sequential_blocks_total{{reason=\"{label}\"}} {}",
            c.load(Ordering::Relaxed)
        );
    }
    family(
        &mut o,
        "velox_exec_parallel_phase_seconds_total",
        "counter",
        "Wall time of the parallel executor's phases, summed over parallel blocks.",
    );
    for (phase, ns) in velox_exec::PARALLEL_PHASES.iter().zip(&x.phase_ns) {
        let _ = writeln!(
            o,
            "velox_exec_parallel_phase_seconds_total{{phase=\"{phase}\"}} {}",
            ns.load(Ordering::Relaxed) as f64 / 1e9
        );
    }
    let i = &n.ingress;
    let net: [(&str, &str, &str, f64); 8] = [
        (
            "velox_net_connections_open",
            "gauge",
            "Client connections open or in their handshake (what ingress_connections_max bounds).",
            i.connections_open.load(Ordering::Relaxed) as f64,
        ),
        (
            "velox_net_connections_accepted_total",
            "counter",
            "Client connections accepted.",
            i.connections_accepted.load(Ordering::Relaxed) as f64,
        ),
        (
            "velox_net_connections_refused_total",
            "counter",
            "Client connections refused at the connection limit (all, or their IP address's).",
            i.connections_refused.load(Ordering::Relaxed) as f64,
        ),
        (
            "velox_net_connections_refused_per_ip_total",
            "counter",
            "Client connections refused because their IP address had ingress_connections_per_ip_max open.",
            i.connections_refused_per_ip.load(Ordering::Relaxed) as f64,
        ),
        (
            "velox_net_streams_total",
            "counter",
            "Client streams opened.",
            i.streams.load(Ordering::Relaxed) as f64,
        ),
        (
            "velox_net_frames_total",
            "counter",
            "Frames received.",
            i.frames.load(Ordering::Relaxed) as f64,
        ),
        (
            "velox_net_bytes_received_total",
            "counter",
            "Stream bytes received.",
            i.bytes.load(Ordering::Relaxed) as f64,
        ),
        (
            "velox_net_frame_errors_total",
            "counter",
            "Streams ended by a framing error.",
            i.frame_errors.load(Ordering::Relaxed) as f64,
        ),
    ];
    scalars(&mut o, &net);
    scalars(
        &mut o,
        &[
            (
                "velox_api_requests_refused_busy_total",
                "counter",
                "HTTP API requests answered 503 because API_REQUESTS_MAX (256) were in progress.",
                n.api.refused_busy.load(Ordering::Relaxed) as f64,
            ),
            (
                "velox_api_request_timeouts_total",
                "counter",
                "HTTP API requests answered 503 after API_REQUEST_TIMEOUT (10 s).",
                n.api.timeouts.load(Ordering::Relaxed) as f64,
            ),
        ],
    );
    render_consensus(&mut o, &n.consensus);
    if let Some(p) = &n.peers {
        render_peers(&mut o, &p.counters().snapshot());
    }
    o
}

/// The storage account cache's counters (all 0 when it is off).
fn render_account_cache(o: &mut String, chain: &velox_storage::ChainStore) {
    let c = chain.account_cache_stats().unwrap_or_default();
    scalars(
        o,
        &[
            (
                "velox_storage_account_cache_hits_total",
                "counter",
                "Committed-account reads answered by the account cache.",
                c.hits as f64,
            ),
            (
                "velox_storage_account_cache_misses_total",
                "counter",
                "Committed-account reads that went to the state column.",
                c.misses as f64,
            ),
            (
                "velox_storage_account_cache_entries",
                "gauge",
                "Accounts in the account cache.",
                c.entries as f64,
            ),
            (
                "velox_storage_account_cache_entries_max",
                "gauge",
                "Bound of the account cache ([storage] account_cache_entries; 0: off).",
                c.entries_max as f64,
            ),
        ],
    );
}

/// Validator-network metrics from the peer network's counters.
fn render_peers(o: &mut String, s: &velox_net::peer::PeerCountersSnapshot) {
    let get = |l: &str| {
        s.counters
            .iter()
            .find(|(k, _)| *k == l)
            .map(|(_, v)| *v as f64)
            .unwrap_or(0.0)
    };
    let m: [(&str, &str, &str, f64); 14] = [
        (
            "velox_peer_alive",
            "gauge",
            "Committee members heard from within the dead-peer timeout.",
            get("alive"),
        ),
        (
            "velox_peer_connections_established_total",
            "counter",
            "Validator connections established (both directions).",
            get("connections_established"),
        ),
        (
            "velox_peer_connections_closed_total",
            "counter",
            "Validator connections closed.",
            get("connections_closed"),
        ),
        (
            "velox_peer_connections_replaced_total",
            "counter",
            "Inbound validator connections closed because the same member opened a newer one.",
            get("connections_replaced"),
        ),
        (
            "velox_peer_dials_failed_total",
            "counter",
            "Dials to validators that failed.",
            get("dials_failed"),
        ),
        (
            "velox_peer_reconnects_total",
            "counter",
            "Re-dials after a lost connection.",
            get("reconnects"),
        ),
        (
            "velox_peer_handshakes_failed_total",
            "counter",
            "Incoming handshakes that did not complete (refusals included).",
            get("handshakes_failed"),
        ),
        (
            "velox_peer_frames_in_total",
            "counter",
            "Validator frames received.",
            get("frames_in"),
        ),
        (
            "velox_peer_frames_out_total",
            "counter",
            "Validator frames sent.",
            get("frames_out"),
        ),
        (
            "velox_peer_bytes_in_total",
            "counter",
            "Validator frame bytes received.",
            get("bytes_in"),
        ),
        (
            "velox_peer_bytes_out_total",
            "counter",
            "Validator frame bytes sent.",
            get("bytes_out"),
        ),
        (
            "velox_peer_frames_dropped_total",
            "counter",
            "Outbound frames dropped (queue full, over limits, unknown destination).",
            get("frames_dropped_queue_full")
                + get("frames_dropped_over_limits")
                + get("frames_dropped_unknown_dest"),
        ),
        (
            "velox_peer_dead_events_total",
            "counter",
            "Times a peer was marked dead.",
            get("peers_dead_events"),
        ),
        (
            "velox_peer_inbound_budget_waits_total",
            "counter",
            "Times a validator's reader stopped reading because that validator's messages waiting for consensus held its whole inbound budget (messages or bytes).",
            get("inbound_budget_waits"),
        ),
    ];
    scalars(o, &m);
    family(
        o,
        "velox_peer_handshakes_rejected_total",
        "counter",
        "Validator handshakes refused, by reason.",
    );
    let _ = writeln!(
        o,
        "velox_peer_handshakes_rejected_total{{reason=\"unknown_key\"}} {}",
        get("handshakes_rejected_unknown_key")
    );
    let _ = writeln!(
        o,
        "velox_peer_handshakes_rejected_total{{reason=\"wrong_key\"}} {}",
        get("handshakes_rejected_wrong_key")
    );
    family(
        o,
        "velox_peer_frames_rejected_total",
        "counter",
        "Inbound validator frames refused at the boundary, by reason.",
    );
    for (reason, v) in &s.frames_rejected {
        let _ = writeln!(
            o,
            "velox_peer_frames_rejected_total{{reason=\"{reason}\"}} {v}"
        );
    }
}

fn render_consensus(o: &mut String, c: &crate::consensus::ConsensusCounters) {
    let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
    let m: [(&str, &str, &str, f64); 49] = [
        (
            "velox_consensus_round",
            "gauge",
            "Highest round this validator proposed.",
            g(&c.round),
        ),
        (
            "velox_consensus_commits_total",
            "counter",
            "Commits handed to execution since start.",
            g(&c.commits),
        ),
        (
            "velox_consensus_leaders_committed_total",
            "counter",
            "Leader slots committed (since start, recovery included).",
            g(&c.leaders_committed),
        ),
        (
            "velox_consensus_leaders_skipped_total",
            "counter",
            "Leader slots skipped.",
            g(&c.leaders_skipped),
        ),
        (
            "velox_consensus_leader_timeouts_total",
            "counter",
            "Rounds proposed without the leader after the leader timeout.",
            g(&c.leader_timeouts),
        ),
        (
            "velox_consensus_blocks_accepted_total",
            "counter",
            "DAG blocks accepted (own included).",
            g(&c.blocks_accepted),
        ),
        (
            "velox_consensus_blocks_rejected_total",
            "counter",
            "DAG blocks refused (bad bytes, signature, parents).",
            g(&c.blocks_rejected),
        ),
        (
            "velox_consensus_blocks_proposed_total",
            "counter",
            "Own DAG blocks proposed.",
            g(&c.blocks_proposed),
        ),
        (
            "velox_consensus_equivocators",
            "gauge",
            "Validators seen signing two blocks for one round.",
            g(&c.equivocators),
        ),
        (
            "velox_consensus_pending_blocks",
            "gauge",
            "Blocks buffered while their ancestors are fetched.",
            g(&c.pending_blocks),
        ),
        (
            "velox_consensus_commits_waiting_batches",
            "gauge",
            "Commits waiting for batches to be fetched.",
            g(&c.commits_waiting_batches),
        ),
        (
            "velox_batches_sealed_total",
            "counter",
            "Own batches sealed.",
            g(&c.batches_sealed),
        ),
        (
            "velox_batches_available_total",
            "counter",
            "Own batches stored by f+1 stake and queued for a block.",
            g(&c.batches_available),
        ),
        (
            "velox_batches_returned_total",
            "counter",
            "Own batches that could no longer commit (their block fell below the GC round, \
             or consensus could not queue them); their transactions went back to the pool.",
            g(&c.batches_returned),
        ),
        (
            "velox_batches_abandoned_total",
            "counter",
            "Own batches not stored by f+1 stake within mempool.batch_available_timeout_ms; \
             their transactions went back to the pool.",
            g(&c.batches_abandoned),
        ),
        (
            "velox_batches_waiting_acks",
            "gauge",
            "Own batches short of f+1 acknowledgements.",
            g(&c.batches_waiting_acks),
        ),
        (
            "velox_batches_received_total",
            "counter",
            "Peers' batches received.",
            g(&c.batches_received),
        ),
        (
            "velox_batches_rejected_total",
            "counter",
            "Peers' batches refused as malformed or with invalid transactions.",
            g(&c.batches_rejected),
        ),
        (
            "velox_batches_refused_full_total",
            "counter",
            "Peers' batches refused because batches_held_max was reached.",
            g(&c.batches_refused_full),
        ),
        (
            "velox_batches_fetched_total",
            "counter",
            "Committed batches fetched from peers.",
            g(&c.batches_fetched),
        ),
        (
            "velox_batch_fetch_requests_total",
            "counter",
            "Batch fetch requests sent.",
            g(&c.batch_fetch_requests),
        ),
        (
            "velox_batches_held",
            "gauge",
            "Batches held in memory.",
            g(&c.batches_held),
        ),
        (
            "velox_batch_invalid_txs_total",
            "counter",
            "Transactions with an invalid signature or encoding found in peers' batches.",
            g(&c.txs_invalid_in_batches),
        ),
        (
            "velox_peer_penalties_total",
            "counter",
            "Hard faults seen from peers (undecodable or invalid blocks, invalid batches).",
            g(&c.peer_penalties),
        ),
        (
            "velox_consensus_blocks_refused_far_future_total",
            "counter",
            "Peers' blocks refused unverified: their round is too far above what the network reached.",
            g(&c.blocks_refused_far_future),
        ),
        (
            "velox_consensus_pending_dropped_total",
            "counter",
            "Blocks dropped from the ancestor-wait buffer (full, author's share full, or too old).",
            g(&c.pending_dropped),
        ),
        (
            "velox_consensus_fetches_abandoned_total",
            "counter",
            "Missing blocks no longer fetched: every buffered block waiting for them aged out.",
            g(&c.fetches_abandoned),
        ),
        (
            "velox_consensus_blocks_refused_future_timestamp_total",
            "counter",
            "Peers' blocks stamped more than 5 s ahead of this node's wall clock (refused for now).",
            g(&c.blocks_refused_future_timestamp),
        ),
        (
            "velox_consensus_blocks_refused_behind_parents_total",
            "counter",
            "Peers' blocks stamped below one of their parents (refused).",
            g(&c.blocks_refused_behind_parents),
        ),
        (
            "velox_consensus_equivocations_dropped_total",
            "counter",
            "Third and later copies of an equivocating slot refused unverified (two are kept as evidence).",
            g(&c.equivocations_dropped),
        ),
        (
            "velox_consensus_certified_equivocations_total",
            "counter",
            "ALARM: slots where two different blocks were both certified (more than f stake is Byzantine).",
            g(&c.certified_equivocations),
        ),
        (
            "velox_peer_serve_refused_budget_total",
            "counter",
            "Peer requests unanswered: the peer's serving budget (32 MiB/s, burst 64 MiB) was spent.",
            g(&c.serve_refused_budget),
        ),
        (
            "velox_consensus_rounds_requests_refused_total",
            "counter",
            "RoundsRequests unanswered: the requester's serving budget was spent.",
            g(&c.rounds_requests_refused),
        ),
        (
            "velox_batches_released_total",
            "counter",
            "Peers' batches dropped from memory (kept on disk) to make room in their peer's share.",
            g(&c.batches_released),
        ),
        (
            "velox_batch_checks_total",
            "counter",
            "Peers' batches the consensus tile handed to the verify tiles to check.",
            g(&c.batch_checks),
        ),
        (
            "velox_batches_checking",
            "gauge",
            "Peers' batches being checked by the verify tiles now.",
            g(&c.batches_checking),
        ),
        (
            "velox_peer_served_bytes_total",
            "counter",
            "Bytes of blocks, batches and rounds served to peers' requests.",
            g(&c.served_bytes),
        ),
        (
            "velox_batches_rejected_again_total",
            "counter",
            "Resent copies of refused batches, refused without being checked again.",
            g(&c.batches_rejected_again),
        ),
        (
            "velox_batches_unrequested_total",
            "counter",
            "Fetched batches nothing asked for any more (late answers) or matching no request.",
            g(&c.batches_unrequested),
        ),
        (
            "velox_peer_backoffs_total",
            "counter",
            "Times a peer was ignored for a while after repeated hard faults.",
            g(&c.peer_backoffs),
        ),
        (
            "velox_peer_messages_ignored_total",
            "counter",
            "Messages ignored from peers in backoff.",
            g(&c.peer_messages_ignored),
        ),
        (
            "velox_consensus_blocks_served_from_disk_total",
            "counter",
            "Blocks served to lagging peers from the consensus log.",
            g(&c.blocks_served_from_disk),
        ),
        (
            "velox_consensus_rounds_requests_served_total",
            "counter",
            "RoundsRequests answered (validators joining from a snapshot).",
            g(&c.rounds_requests_served),
        ),
        (
            "velox_consensus_joining",
            "gauge",
            "1 while this validator joins consensus from its peers' blocks.",
            g(&c.joining),
        ),
        (
            "velox_consensus_join_blocks",
            "gauge",
            "Blocks the last join took from the peers (verified, causally complete).",
            g(&c.join_blocks),
        ),
        (
            "velox_consensus_log_write_seconds_sum",
            "counter",
            "Time spent writing the consensus log (accepted blocks, stored batches).",
            g(&c.log_write_ns) / 1e9,
        ),
        (
            "velox_consensus_log_write_seconds_count",
            "counter",
            "Consensus log writes in the sum.",
            g(&c.log_writes),
        ),
        (
            "velox_consensus_blocks_parked",
            "gauge",
            "Peers' blocks waiting for their batches before the core sees them.",
            g(&c.blocks_parked),
        ),
        (
            "velox_consensus_blocks_parked_dropped_total",
            "counter",
            "Parked blocks dropped (bound or age).",
            g(&c.blocks_parked_dropped),
        ),
    ];
    scalars(o, &m);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 22: the API handles at most `requests_max` requests at once
    /// (the next is answered 503 at once, in JSON) and answers a request
    /// that runs past the timeout with 503; both are counted.
    #[test]
    fn requests_beyond_the_limit_or_the_timeout_get_503() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let counters = Arc::new(ApiCounters::default());
        let app = Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            )
            .route("/fast", get(|| async { "ok" }));
        let app = limited(app, 2, Duration::from_secs(3), counters.clone());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move { axum::serve(listener, app).await });
        assert_eq!(
            crate::httpc::get(addr, "/fast").unwrap(),
            (200, "ok".into())
        );
        // Two slow requests take both places; a third is refused at once.
        let slow: Vec<_> = (0..2)
            .map(|_| std::thread::spawn(move || crate::httpc::get(addr, "/slow").unwrap()))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (code, body) = crate::httpc::get(addr, "/fast").unwrap();
            if code == 503 {
                assert!(body.contains("\"error\""), "{body}");
                assert!(body.contains("busy"), "{body}");
                break;
            }
            assert!(Instant::now() < deadline, "never refused while busy");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(counters.refused_busy.load(Ordering::Relaxed) >= 1);
        // The slow ones end at the timeout, answered 503.
        for t in slow {
            let (code, body) = t.join().unwrap();
            assert_eq!(code, 503, "{body}");
            assert!(body.contains("not answered within"), "{body}");
        }
        assert_eq!(counters.timeouts.load(Ordering::Relaxed), 2);
        // And the places are free again.
        assert_eq!(
            crate::httpc::get(addr, "/fast").unwrap(),
            (200, "ok".into())
        );
    }
}
