//! `velox node`: start-up, wiring and supervision.

use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use velox_exec::reason::RejectCounters;
use velox_exec::State;
use velox_io::{spawn_reactor, spawn_reactor_with, ReactorHandle, Ring, TileRegistry, TileStats};
use velox_mempool::{ShardedPool, ShardedPoolConfig};
use velox_net::{IngressCounters, IngressLimits};
use velox_storage::rocks::RocksConfig;
use velox_storage::{BlockRecord, ChainStore, RocksStore};
use velox_tuning::TileKind;

use crate::committee::{CommitteeFile, CommitteeInfo};
use crate::config::Config;
use crate::consensus::Recovered;
use crate::consensus::{ConsensusCounters, ConsensusParams, ConsensusRings, ConsensusTile};
use crate::pipeline::{self, *};

/// Ring depths between the net tile and the consensus tile (messages).
pub const PEER_RING_DEPTH: usize = 4096;
/// Frame bytes one validator's messages waiting in the inbound ring may
/// hold (four frames of the largest size): the ring's memory is bounded per
/// sender, at most (committee size - 1) x this.
pub const PEER_IN_BYTES_PER_PEER_MAX: usize = 32 << 20;
/// Frame bytes queued to send to one validator (besides 4096 frames): a
/// validator that reads slowly holds at most this much of this node's
/// memory; beyond it the newest frame to it is dropped (its fetches and the
/// retransmits recover what it missed).
pub const PEER_OUT_BYTES_PER_PEER_MAX: usize = 64 << 20;
/// Messages one validator may have waiting in the inbound ring: its share
/// of the ring (at least 64), so that one member cannot fill it.
pub fn peer_in_msgs_per_peer_max(committee_size: usize) -> usize {
    (PEER_RING_DEPTH / committee_size.saturating_sub(1).max(1)).max(64)
}
/// Validator-network timing: heartbeat when idle, and silence after which
/// a peer counts as dead.
pub const PEER_HEARTBEAT_MS: u64 = 500;
pub const PEER_DEAD_AFTER_MS: u64 = 3_000;
/// Peers' batches held in memory before commits take them.
pub const BATCHES_HELD_MAX: usize = 20_000;

/// File in the data directory holding the node's TLS certificate (DER), for
/// clients to pin.
pub const TLS_CERT_FILE: &str = "tls-cert.der";

/// Everything the API needs from a running node.
pub struct NodeHandle {
    pub shared: Arc<Shared>,
    pub registry: TileRegistry,
    pub ingress: Arc<IngressCounters>,
    pub queries: Arc<Ring<PoolQuery>>,
    /// Proof requests to the exec tile.
    pub proofs: Arc<Ring<ProofQuery>>,
    pub validator: String,
    pub validators: usize,
    pub validator_index: u32,
    pub consensus: Arc<ConsensusCounters>,
    /// Snapshot and pruning counters.
    pub durability: Arc<crate::maintenance::DurabilityCounters>,
    pub peers: Option<velox_net::peer::PeerHandle>,
    pub reactor_flavor: &'static str,
    pub layout: velox_tuning::Layout,
    pub started: std::time::Instant,
    /// What the HTTP API's request limits did.
    pub api: Arc<crate::api::ApiCounters>,
}

impl NodeHandle {
    /// Committee members this validator currently hears from (itself
    /// included).
    pub fn peers_alive(&self) -> usize {
        match &self.peers {
            Some(p) => {
                let me = self.validator_index as usize;
                1 + p
                    .alive()
                    .iter()
                    .enumerate()
                    .filter(|(i, a)| *i != me && **a)
                    .count()
            }
            None => 1,
        }
    }
}

/// The committee this node runs in: the configured file, or itself alone.
pub fn load_committee(
    cfg: &Config,
    key: &ed25519_dalek::SigningKey,
) -> anyhow::Result<CommitteeInfo> {
    let mine = key.verifying_key().to_bytes();
    let file = match &cfg.committee_file {
        Some(path) => CommitteeFile::load(path)?.resolve(&path.display().to_string(), &mine)?,
        None => CommitteeFile {
            epoch: 0,
            validators: vec![crate::committee::ValidatorEntry {
                public_key: hex::encode(mine),
                peer_addr: "127.0.0.1:0".parse().expect("an address"),
                stake: 1,
            }],
        }
        .resolve("(single-validator committee)", &mine)?,
    };
    Ok(file)
}

/// Opens the chain, creating genesis on first start, and returns the chain
/// store with the state after the last commit.
pub fn open_chain(cfg: &Config) -> anyhow::Result<(ChainStore, State, velox_storage::CommitMeta)> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("data_dir {}: cannot create", cfg.data_dir.display()))?;
    let db_path = cfg.data_dir.join("db");
    // Corrupt, locked or unreadable databases come back as typed errors
    // that name the file and the way out (docs/storage.md).
    let store = RocksStore::open(&db_path, rocks_config(cfg))?;
    let chain = ChainStore::with_account_cache(Arc::new(store), cfg.storage.account_cache_entries);
    let genesis = crate::genesis::build(cfg.chain_id, &cfg.genesis);
    chain.check_genesis(&genesis.hash, &cfg.data_dir.display().to_string())?;
    let meta = match chain.last_commit()? {
        Some(m) => m,
        None => {
            let mut state = State::new();
            let out = pipeline::execute_genesis(&mut state, &genesis.txs);
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
    let mut state = chain.load_state()?;
    if state.root() != meta.root {
        bail!(
            "the state in {} does not match the root of commit {} ({} != {}): the data is corrupt; \
             move the data directory aside and restore from a snapshot \
             (`velox snapshot restore --file {}/<newest>.vsnap --data-dir <new dir> --config <config>`) or resync \
             (docs/storage.md, \"Recovery procedures\")",
            db_path.display(),
            meta.index,
            state.root().to_hex(),
            meta.root.to_hex(),
            cfg.data_dir.join(crate::maintenance::SNAPSHOT_DIR).display(),
        );
    }
    Ok((chain, state, meta))
}

/// The RocksDB settings of `[storage]`.
pub fn rocks_config(cfg: &Config) -> RocksConfig {
    RocksConfig {
        sync_writes: cfg.storage.sync_writes,
        block_cache_bytes: cfg.storage.block_cache_bytes,
    }
}

/// Runs a validator until SIGINT/SIGTERM or a tile dies.
pub fn run_node(cfg: Config) -> anyhow::Result<()> {
    // Configured layouts were validated by `Config::parse`; planned ones
    // only name cores the planner found.
    let layout = cfg.layout()?;
    log_host_check(&layout);
    if cfg.benchmark.any() {
        tracing::warn!(
            skip_signature_checks = cfg.benchmark.skip_signature_checks,
            skip_execution = cfg.benchmark.skip_execution,
            "BENCHMARK MODE: this node does not check what it is sent and/or does not execute it; never use it for a real network"
        );
    }

    let key = crate::keys::read_key(&cfg.key_file)?;
    let validator = crate::keys::account_of(&key).to_hex();
    let committee = load_committee(&cfg, &key)?;
    let multi = committee.committee.size() > 1;
    let (chain, state, meta) = open_chain(&cfg)?;
    let params = ConsensusParams {
        core: velox_dag::CoreConfig {
            leader_timeout_ms: cfg.consensus.leader_timeout_ms,
            min_round_delay_ms: cfg.consensus.min_round_delay_ms,
            gc_depth_rounds: cfg.consensus.gc_depth_rounds,
            ..Default::default()
        },
        batch_txs_max: cfg.mempool.batch_txs_max,
        batch_age_ms: cfg.mempool.batch_age_ms,
        batch_resend_ms: 1_000,
        batch_fetch_retry_ms: 300,
        batches_held_max: BATCHES_HELD_MAX,
        batch_available_timeout_ms: cfg.mempool.batch_available_timeout_ms,
    };
    let recovered = crate::consensus::recover_core(
        &chain,
        &params,
        committee.committee.clone(),
        committee.me,
        key.clone(),
        multi,
    )?;
    // A core resumed after the last commit (or joining from peers there)
    // does not re-emit earlier commits: seed the tile's duplicate-batch
    // window from the stored ones.
    let (resumed, recovered_blocks) = match &recovered {
        Recovered::Ready {
            blocks, resumed, ..
        } => (*resumed, *blocks),
        Recovered::Join(_) => (true, 0),
    };
    let included = if resumed {
        chain.included_batches(crate::consensus::INCLUDED_WINDOW)?
    } else {
        Vec::new()
    };
    tracing::info!(
        validators = committee.committee.size(),
        me = committee.me.0,
        recovered_blocks,
        resumed_after_commit = resumed,
        joining_from_peers = matches!(recovered, Recovered::Join(_)),
        included_window = included.len(),
        commit_index = meta.index,
        "consensus core ready"
    );

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
    let peer_addr = committee.addrs[committee.me.as_usize()];
    let peer_net = if multi {
        let socket = UdpSocket::bind(peer_addr).with_context(|| {
            format!(
                "this validator's peer_addr {peer_addr} (committee file): cannot bind (in use?)"
            )
        })?;
        let peer_cfg = velox_net::peer::PeerConfig {
            me: committee.me.0,
            committee: committee
                .keys
                .iter()
                .zip(&committee.addrs)
                .enumerate()
                .map(|(i, (k, a))| velox_net::peer::PeerInfo {
                    index: i as u32,
                    public_key: *k,
                    addr: *a,
                })
                .collect(),
            pkcs8_der: pkcs8.clone(),
            heartbeat_ms: PEER_HEARTBEAT_MS,
            dead_after_ms: PEER_DEAD_AFTER_MS,
            reconnect_min_ms: 50,
            reconnect_max_ms: 2_000,
            outbound_queue_max: 4096,
            inbound_msgs_per_peer_max: peer_in_msgs_per_peer_max(committee.keys.len()),
            inbound_bytes_per_peer_max: PEER_IN_BYTES_PER_PEER_MAX,
            outbound_bytes_per_peer_max: PEER_OUT_BYTES_PER_PEER_MAX,
            limits: velox_net::peer::WireLimits::default(),
        };
        Some((peer_cfg, socket))
    } else {
        None
    };
    // The peer network is created on the net tile's reactor (its endpoint
    // belongs to that runtime), which hands its handle back here.
    let (peer_tx, peer_rx) =
        std::sync::mpsc::channel::<Result<velox_net::peer::PeerHandle, String>>();
    let api_listener = TcpListener::bind(cfg.api.addr)
        .with_context(|| format!("api.addr {}: cannot bind (in use?)", cfg.api.addr))?;
    api_listener.set_nonblocking(true)?;

    let executor = Arc::new(velox_exec::ParallelExecutor::new(
        cfg.exec.executor_config(&layout.exec),
    ));
    let shared = Arc::new(Shared {
        executor: executor.clone(),
        chain_id: cfg.chain_id,
        benchmark: cfg.benchmark,
        chain: chain.clone(),
        status: ChainStatus::default(),
        rejects: Arc::new(RejectCounters::default()),
        recent_rejects: RecentRejects::default(),
        pool: Arc::new(ShardedPool::new(
            ShardedPoolConfig {
                shards: cfg.mempool.shards,
                txs_max: cfg.mempool.txs_max,
                bytes_max: cfg.mempool.bytes_max,
                nonce_ahead_max: cfg.mempool.nonce_ahead_max,
                age_max_ms: cfg.mempool.expiry_ms,
                hash_seed: rand::random(),
                ..ShardedPoolConfig::default()
            },
            {
                let chain = chain.clone();
                Box::new(move |id| pipeline::committed_nonce(&chain, id))
            },
        )),
        pool_room: tokio::sync::Notify::new(),
        pool_work: tokio::sync::Notify::new(),
        pool_full_wait: Duration::from_millis(cfg.mempool.full_wait_ms),
        pool_pressure: Default::default(),
        clock: Instant::now(),
        commit_latency_ns: AtomicU64::new(0),
        commit_latency_count: AtomicU64::new(0),
        storage_write_ns: AtomicU64::new(0),
        storage_writes: AtomicU64::new(0),
    });
    shared.status.update(&meta);

    let ingress_ring = Ring::new("ingress", INGRESS_RING_DEPTH);
    let batch_ring = Ring::new("batches", BATCH_RING_DEPTH);
    let peer_in_ring = Ring::new("peer-in", PEER_RING_DEPTH);
    let check_ring = Ring::new("batch-checks", pipeline::CHECK_RING_DEPTH);
    let checked_ring = Ring::new("batches-checked", pipeline::CHECK_RING_DEPTH);
    let peer_out_ring = Ring::new("peer-out", PEER_RING_DEPTH);
    let consensus_counters = Arc::new(ConsensusCounters::default());
    let block_ring = Ring::new("blocks", BLOCK_RING_DEPTH);
    let executed_ring = Ring::new("executed", BLOCK_RING_DEPTH);
    let feedback_ring = Ring::new("finalized", FEEDBACK_RING_DEPTH);
    let query_ring = Ring::new("pool-queries", QUERY_RING_DEPTH);
    let proof_ring = Ring::new("proof-queries", PROOF_QUERY_RING_DEPTH);

    let registry = TileRegistry::default();
    let ingress_counters = Arc::new(IngressCounters::default());
    let mut reactors: Vec<ReactorHandle> = Vec::new();
    let tile = |kind: TileKind, i: usize, core: usize| {
        let s = TileStats::new(kind.name(), i, core);
        registry.register(s.clone());
        s
    };

    // Net: one endpoint on the bound socket.
    let (ingress_stopper, ingress_stop) = velox_net::ingress::stop_channel();
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
            connections_per_ip_max: cfg.network.ingress_connections_per_ip_max,
        };
        let (peer_in, peer_out) = (peer_in_ring.clone(), peer_out_ring.clone());
        let peer_stats = multi.then(|| tile(TileKind::Net, 1, core));
        let ingress_secret = pkcs8.clone();
        // The net tile always runs on tokio's epoll reactor (decision 0003).
        reactors.push(spawn_reactor_with(
            velox_io::ReactorFlavor::Tokio,
            "net-0",
            Some(core),
            move || async move {
                let runtime = Arc::new(quinn::TokioRuntime);
                // Restart-stable keys: clients of a killed node's previous
                // life learn at their next packet that it is gone.
                let endpoint = match quinn::Endpoint::new(
                    velox_net::endpoint::restart_stable_config(&ingress_secret, "ingress"),
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
                let ingress = velox_net::ingress::serve(
                    endpoint,
                    ring,
                    limits,
                    counters,
                    rejects,
                    stats,
                    ingress_stop,
                );
                let peer_net = match peer_net {
                    Some((cfg, socket)) => match velox_net::peer::PeerNetwork::new(cfg, socket) {
                        Ok(p) => {
                            let _ = peer_tx.send(Ok(p.handle()));
                            Some(match peer_stats {
                                Some(s) => p.with_tile_stats(s),
                                None => p,
                            })
                        }
                        Err(e) => {
                            let _ = peer_tx.send(Err(e.to_string()));
                            return;
                        }
                    },
                    None => None,
                };
                match peer_net {
                    // Both endpoints share the net tile's reactor.
                    Some(p) => {
                        tokio::join!(ingress, p.run(peer_in, peer_out));
                    }
                    None => ingress.await,
                }
            },
        )?);
        // One net tile: the config refuses a layout listing more
        // (velox_tuning::NET_TILES_MAX), and the planner gives it one.
        debug_assert!(layout.net.len() <= velox_tuning::NET_TILES_MAX);
    }
    for (i, &core) in layout.verify.iter().enumerate() {
        let stats = tile(TileKind::Verify, i, core);
        let rings = pipeline::VerifyRings {
            ingress: ingress_ring.clone(),
            checks: check_ring.clone(),
            checked: checked_ring.clone(),
        };
        let shared = shared.clone();
        reactors.push(spawn_reactor(
            &format!("verify-{i}"),
            Some(core),
            move || pipeline::verify_tile(rings, shared, stats),
        )?);
    }
    {
        let core = layout.mempool[0];
        let stats = tile(TileKind::Mempool, 0, core);
        let tile_cfg = MempoolTileConfig {
            batch_txs_max: cfg.mempool.batch_txs_max,
            batch_bytes_max: cfg.mempool.batch_txs_max * velox_exec::tx::TX_BYTES_MAX,
            expiry_every: Duration::from_millis((cfg.mempool.expiry_ms / 10).clamp(10, 1000)),
        };
        let (f, q, b, shared) = (
            feedback_ring.clone(),
            query_ring.clone(),
            batch_ring.clone(),
            shared.clone(),
        );
        reactors.push(spawn_reactor("mempool-0", Some(core), move || {
            pipeline::mempool_tile(f, q, b, tile_cfg, shared, stats)
        })?);
    }
    {
        let cpu = layout.consensus[0];
        let stats = tile(TileKind::Consensus, 0, cpu);
        let rings = ConsensusRings {
            own: batch_ring.clone(),
            peer_in: peer_in_ring.clone(),
            peer_out: peer_out_ring.clone(),
            blocks: block_ring.clone(),
            checks: check_ring.clone(),
            checked: checked_ring.clone(),
        };
        let (chain, shared, counters, committee, me, key) = (
            chain.clone(),
            shared.clone(),
            consensus_counters.clone(),
            committee.committee.clone(),
            committee.me,
            key.clone(),
        );
        let applied = meta.index;
        reactors.push(spawn_reactor(
            "consensus-0",
            Some(cpu),
            move || async move {
                let core = match recovered {
                    Recovered::Ready { core, .. } => *core,
                    Recovered::Join(plan) => {
                        match crate::join::join_from_peers(
                            plan, &params, committee, me, key, &chain, &rings, &stats, &counters,
                        )
                        .await
                        {
                            Ok(core) => core,
                            Err(e) => {
                                // The tile ends, and with it the node.
                                tracing::error!(error = %e, "cannot join consensus");
                                return;
                            }
                        }
                    }
                };
                ConsensusTile::new(core, params, chain, applied, shared, stats, counters, rings)
                    .with_included(included)
                    .run()
                    .await
            },
        )?);
    }
    {
        let core = layout.exec[0];
        let stats = tile(TileKind::Exec, 0, core);
        let (input, out, proofs) = (
            block_ring.clone(),
            executed_ring.clone(),
            proof_ring.clone(),
        );
        let executor = executor.clone();
        let skip_execution = cfg.benchmark.skip_execution;
        let mut state = state;
        // The tree update at the end of a large block may use the exec
        // cores too.
        state.set_root_workers(layout.exec.len());
        let index = meta.index;
        reactors.push(spawn_reactor("exec-0", Some(core), move || {
            pipeline::exec_tile(
                input,
                out,
                proofs,
                state,
                index,
                executor,
                skip_execution,
                stats,
            )
        })?);
    }
    let durability = Arc::new(crate::maintenance::DurabilityCounters::default());
    {
        let core = layout.storage[0];
        let stats = tile(TileKind::Storage, 0, core);
        let (input, f, shared) = (executed_ring.clone(), feedback_ring.clone(), shared.clone());
        let round = consensus_counters.clone();
        let maintenance = crate::maintenance::Maintenance::start(
            chain.clone(),
            crate::maintenance::MaintenanceConfig {
                snapshot_every_commits: cfg.storage.snapshot_every_commits,
                snapshots_kept: cfg.storage.snapshots_kept,
                snapshot_dir: cfg.data_dir.join(crate::maintenance::SNAPSHOT_DIR),
                retention_commits: cfg.storage.retention_commits,
                consensus_log_margin_rounds: cfg.storage.consensus_log_margin_rounds,
                gc_depth_rounds: cfg.consensus.gc_depth_rounds,
                included_window: crate::consensus::INCLUDED_WINDOW as u64,
            },
            durability.clone(),
            Arc::new(move || round.round.load(std::sync::atomic::Ordering::Relaxed)),
        )
        .context("starting the snapshot and pruning threads")?;
        reactors.push(spawn_reactor("storage-0", Some(core), move || {
            pipeline::storage_tile(input, f, shared, stats, maintenance)
        })?);
    }

    let peer_handle = if multi {
        match peer_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(h)) => Some(h),
            Ok(Err(e)) => bail!("starting the validator network on {peer_addr} failed: {e}"),
            Err(_) => bail!("the net tile did not start the validator network within 30s"),
        }
    } else {
        None
    };
    let handle = Arc::new(NodeHandle {
        shared: shared.clone(),
        registry,
        ingress: ingress_counters,
        queries: query_ring,
        proofs: proof_ring,
        validator: validator.clone(),
        validators: committee.committee.size(),
        validator_index: committee.me.0,
        consensus: consensus_counters,
        durability,
        peers: peer_handle,
        reactor_flavor: velox_io::reactor::default_flavor().name(),
        layout: layout.clone(),
        started: std::time::Instant::now(),
        api: Arc::default(),
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
        // Clients first: every open stream answers what it owes with
        // shutting_down (204) and the connections close with an application
        // code, so no client waits out its idle timeout.
        if !ingress_stopper.stop(Duration::from_secs(2)).await {
            tracing::warn!("client connections did not all close within 2 s");
        }
        // Every acknowledged commit is already durable (one atomic write per
        // commit); pending transactions were never acknowledged as committed.
        // Flushing the memtables only spares the next start a log replay.
        if let Err(e) = chain.store().flush() {
            tracing::warn!(error = %e, "flushing the database at stop failed (the log still holds everything)");
        }
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
