//! `velox node`: start-up, wiring and supervision.

use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use velox_exec::reason::RejectCounters;
use velox_exec::{execute_sequential, ExecContext, State};
use velox_io::{spawn_reactor, spawn_reactor_with, ReactorHandle, Ring, TileRegistry, TileStats};
use velox_mempool::PoolConfig;
use velox_net::{IngressCounters, IngressLimits};
use velox_storage::rocks::RocksConfig;
use velox_storage::{BlockRecord, ChainStore, RocksStore};
use velox_tuning::TileKind;

use crate::config::Config;
use crate::pipeline::{self, *};

/// File in the data directory holding the node's TLS certificate (DER), for
/// clients to pin.
pub const TLS_CERT_FILE: &str = "tls-cert.der";

/// Everything the API needs from a running node.
pub struct NodeHandle {
    pub shared: Arc<Shared>,
    pub registry: TileRegistry,
    pub ingress: Arc<IngressCounters>,
    pub queries: Arc<Ring<PoolQuery>>,
    pub validator: String,
    pub reactor_flavor: &'static str,
    pub layout: velox_tuning::Layout,
    pub started: std::time::Instant,
}

/// Opens the chain, creating genesis on first start, and returns the chain
/// store with the state after the last commit.
pub fn open_chain(cfg: &Config) -> anyhow::Result<(ChainStore, State, velox_storage::CommitMeta)> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("data_dir {}: cannot create", cfg.data_dir.display()))?;
    let db_path = cfg.data_dir.join("db");
    let store = RocksStore::open(
        &db_path,
        RocksConfig { sync_writes: cfg.storage.sync_writes, block_cache_bytes: cfg.storage.block_cache_bytes },
    )
    .with_context(|| {
        format!(
            "opening the database in {} failed; if it is corrupt, move it aside and restore from a snapshot or resync",
            db_path.display()
        )
    })?;
    let chain = ChainStore::new(Arc::new(store));
    let genesis = crate::genesis::build(cfg.chain_id, &cfg.genesis);
    chain.check_genesis(&genesis.hash, &cfg.data_dir.display().to_string())?;
    let meta = match chain.last_commit()? {
        Some(m) => m,
        None => {
            let mut state = State::new();
            let out = execute_sequential(&mut state, &genesis.txs, ExecContext { genesis: true });
            let record = BlockRecord {
                index: 0,
                timestamp_ms: genesis.timestamp_ms,
                txs: genesis.txs.iter().map(|t| t.bytes().to_vec()).collect(),
            };
            let m = chain.commit(&record, &out)?;
            tracing::info!(accounts = state.len(), root = %m.root.to_hex(), "genesis committed");
            m
        }
    };
    let state = chain.load_state()?;
    if state.root() != meta.root {
        bail!(
            "the state in {} does not match the root of commit {} ({} != {}): the data is corrupt; \
             move the data directory aside and restore from a snapshot or resync",
            db_path.display(),
            meta.index,
            state.root().to_hex(),
            meta.root.to_hex()
        );
    }
    Ok((chain, state, meta))
}

/// Runs a validator until SIGINT/SIGTERM or a tile dies.
pub fn run_node(cfg: Config) -> anyhow::Result<()> {
    // Configured layouts were validated by `Config::parse`; planned ones
    // only name cores the planner found.
    let layout = cfg.layout()?;
    log_host_check(&layout);

    let key = crate::keys::read_key(&cfg.key_file)?;
    let validator = crate::keys::account_of(&key).to_hex();
    let (chain, state, meta) = open_chain(&cfg)?;

    let pkcs8 = crate::keys::pkcs8_der(&key)?;
    let cert = velox_net::tls::self_signed_cert(&pkcs8)?;
    std::fs::write(cfg.data_dir.join(TLS_CERT_FILE), &cert)?;
    let server_config = velox_net::tls::server_config(&cert, &pkcs8, velox_net::ALPN_CLIENT)?;

    let udp = UdpSocket::bind(cfg.network.ingress_addr).with_context(|| {
        format!(
            "network.ingress_addr {}: cannot bind (in use?)",
            cfg.network.ingress_addr
        )
    })?;
    let api_listener = TcpListener::bind(cfg.api.addr)
        .with_context(|| format!("api.addr {}: cannot bind (in use?)", cfg.api.addr))?;
    api_listener.set_nonblocking(true)?;

    let executor = Arc::new(velox_exec::ParallelExecutor::new(velox_exec::ExecConfig {
        exec_workers: layout.exec.len(),
        ..Default::default()
    }));
    let shared = Arc::new(Shared {
        executor: executor.clone(),
        chain_id: cfg.chain_id,
        chain: chain.clone(),
        status: ChainStatus::default(),
        rejects: Arc::new(RejectCounters::default()),
        recent_rejects: RecentRejects::default(),
        pool: PoolGauges::default(),
        commit_latency_ns: AtomicU64::new(0),
        commit_latency_count: AtomicU64::new(0),
    });
    shared.status.update(&meta);

    let ingress_ring = Ring::new("ingress", INGRESS_RING_DEPTH);
    let verified_ring = Ring::new("verified", VERIFIED_RING_DEPTH);
    let batch_ring = Ring::new("batches", BATCH_RING_DEPTH);
    let block_ring = Ring::new("blocks", BLOCK_RING_DEPTH);
    let executed_ring = Ring::new("executed", BLOCK_RING_DEPTH);
    let feedback_ring = Ring::new("finalized", FEEDBACK_RING_DEPTH);
    let query_ring = Ring::new("pool-queries", QUERY_RING_DEPTH);

    let registry = TileRegistry::default();
    let ingress_counters = Arc::new(IngressCounters::default());
    let mut reactors: Vec<ReactorHandle> = Vec::new();
    let tile = |kind: TileKind, i: usize, core: usize| {
        let s = TileStats::new(kind.name(), i, core);
        registry.register(s.clone());
        s
    };

    // Net: one endpoint on the bound socket.
    {
        let core = layout.net[0];
        let stats = tile(TileKind::Net, 0, core);
        let (ring, counters, rejects) = (
            ingress_ring.clone(),
            ingress_counters.clone(),
            shared.rejects.clone(),
        );
        let limits = IngressLimits {
            connections_max: cfg.network.ingress_connections_max,
        };
        // The net tile always runs on tokio's epoll reactor (decision 0003).
        reactors.push(spawn_reactor_with(
            velox_io::ReactorFlavor::Tokio,
            "net-0",
            Some(core),
            move || async move {
                let runtime = Arc::new(quinn::TokioRuntime);
                let endpoint = match quinn::Endpoint::new(
                    quinn::EndpointConfig::default(),
                    Some(server_config),
                    udp,
                    runtime,
                ) {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::error!(error = %e, "creating the QUIC endpoint failed");
                        return;
                    }
                };
                velox_net::ingress::serve(endpoint, ring, limits, counters, rejects, stats).await;
            },
        )?);
        if layout.net.len() > 1 {
            tracing::warn!(
                extra = layout.net.len() - 1,
                "only one net tile is supported yet; extra net cores are unused"
            );
        }
    }
    for (i, &core) in layout.verify.iter().enumerate() {
        let stats = tile(TileKind::Verify, i, core);
        let (input, output, shared) = (ingress_ring.clone(), verified_ring.clone(), shared.clone());
        reactors.push(spawn_reactor(
            &format!("verify-{i}"),
            Some(core),
            move || pipeline::verify_tile(input, output, shared, stats),
        )?);
    }
    {
        let core = layout.mempool[0];
        let stats = tile(TileKind::Mempool, 0, core);
        let tile_cfg = MempoolTileConfig {
            pool: PoolConfig {
                txs_max: cfg.mempool.txs_max,
                bytes_max: cfg.mempool.bytes_max,
                nonce_ahead_max: cfg.mempool.nonce_ahead_max,
                ..PoolConfig::default()
            },
            batch_txs_max: cfg.mempool.batch_txs_max,
            batch_bytes_max: cfg.mempool.batch_txs_max * velox_exec::tx::TX_BYTES_MAX,
        };
        let (v, f, q, b, shared) = (
            verified_ring.clone(),
            feedback_ring.clone(),
            query_ring.clone(),
            batch_ring.clone(),
            shared.clone(),
        );
        reactors.push(spawn_reactor("mempool-0", Some(core), move || {
            pipeline::mempool_tile(v, f, q, b, tile_cfg, shared, stats)
        })?);
    }
    {
        let core = layout.consensus[0];
        let stats = tile(TileKind::Consensus, 0, core);
        let (b, out) = (batch_ring.clone(), block_ring.clone());
        let interval = Duration::from_millis(cfg.consensus.block_interval_ms);
        let block_txs_max = cfg.consensus.block_txs_max;
        let (next, ts) = (meta.index + 1, meta.timestamp_ms);
        reactors.push(spawn_reactor("consensus-0", Some(core), move || {
            pipeline::sequencer_tile(b, out, next, ts, interval, block_txs_max, stats)
        })?);
    }
    {
        let core = layout.exec[0];
        let stats = tile(TileKind::Exec, 0, core);
        let (input, out) = (block_ring.clone(), executed_ring.clone());
        let executor = executor.clone();
        reactors.push(spawn_reactor("exec-0", Some(core), move || {
            pipeline::exec_tile(input, out, state, executor, stats)
        })?);
    }
    {
        let core = layout.storage[0];
        let stats = tile(TileKind::Storage, 0, core);
        let (input, f, shared) = (executed_ring.clone(), feedback_ring.clone(), shared.clone());
        reactors.push(spawn_reactor("storage-0", Some(core), move || {
            pipeline::storage_tile(input, f, shared, stats)
        })?);
    }

    let handle = Arc::new(NodeHandle {
        shared: shared.clone(),
        registry,
        ingress: ingress_counters,
        queries: query_ring,
        validator: validator.clone(),
        reactor_flavor: velox_io::reactor::default_flavor().name(),
        layout: layout.clone(),
        started: std::time::Instant::now(),
    });

    tracing::info!(
        %validator,
        ingress = %cfg.network.ingress_addr,
        api = %cfg.api.addr,
        commit_index = meta.index,
        tiles = reactors.len(),
        reactor = handle.reactor_flavor,
        "velox node ready"
    );

    // The API and supervision run on the main thread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(api_listener)?;
        let app = crate::api::router(handle.clone());
        let api = tokio::spawn(async move { axum::serve(listener, app).await });
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: stopping"); break; }
                _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
                _ = tick.tick() => {
                    if let Some(r) = reactors.iter().find(|r| r.is_finished()) {
                        bail!("tile {} stopped unexpectedly; see the log above", r.name);
                    }
                    if api.is_finished() {
                        bail!("the HTTP API stopped unexpectedly");
                    }
                }
            }
        }
        // Every acknowledged commit is already durable (one atomic write per
        // commit); pending transactions were never acknowledged as committed.
        Ok(())
    })
}

fn log_host_check(layout: &velox_tuning::Layout) {
    let fs = velox_tuning::RealFs::new();
    let report = velox_tuning::run_check_layout(&fs, layout);
    for s in &report.stages {
        if s.status != velox_tuning::Status::Ok && s.status != velox_tuning::Status::Skipped {
            tracing::warn!(stage = %s.stage, status = ?s.status, current = %s.current, wanted = %s.wanted, fix = %s.fix, "host check");
        }
    }
}
