//! The node's TOML configuration, validated at start.
//!
//! `velox node --print-default-config` prints the documented default file
//! (docs/config.md explains every field). Every validation error names the
//! field and says how to fix it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use velox_tuning::Layout;

/// The documented default configuration.
pub const DEFAULT_CONFIG: &str = include_str!("../default-config.toml");

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Chain identifier: transactions for another chain are rejected.
    pub chain_id: u64,
    /// Where RocksDB keeps the chain. Relative paths are relative to the
    /// config file.
    pub data_dir: PathBuf,
    /// The validator key written by `velox keygen`. Relative to the config
    /// file when relative.
    pub key_file: PathBuf,
    /// The validator set (`velox devnet` writes one; docs/config.md shows
    /// the format). Absent: a committee of this validator alone. Relative to
    /// the config file when relative.
    #[serde(default)]
    pub committee_file: Option<PathBuf>,
    pub network: NetworkConfig,
    pub api: ApiConfig,
    #[serde(default)]
    pub mempool: MempoolConfig,
    #[serde(default)]
    pub consensus: ConsensusConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub exec: ExecSection,
    #[serde(default)]
    pub genesis: GenesisConfig,
    /// Benchmark-only switches (off by default; a node with any of them on
    /// says so loudly in its log and in /status).
    #[serde(default)]
    pub benchmark: BenchmarkConfig,
    /// Which tiles run on which cores. Absent: a layout for this machine.
    pub layout: Option<Layout>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// UDP address of the client transaction ingress (QUIC).
    pub ingress_addr: SocketAddr,
    /// Open client connections at most.
    #[serde(default = "d_conn_max")]
    pub ingress_connections_max: usize,
    /// Open client connections from one IP address at most.
    #[serde(default = "d_conn_per_ip_max")]
    pub ingress_connections_per_ip_max: usize,
}
fn d_conn_max() -> usize {
    1024
}
fn d_conn_per_ip_max() -> usize {
    64
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// TCP address of the HTTP query API and /metrics.
    pub addr: SocketAddr,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MempoolConfig {
    /// Most transactions held (waiting to be admitted, pending, in flight).
    pub txs_max: usize,
    /// Most bytes held, counted per entry with its bookkeeping.
    pub bytes_max: usize,
    pub nonce_ahead_max: u64,
    /// Pool shards (a power of two); a sender always maps to one shard.
    pub shards: usize,
    /// A pending transaction older than this (ms) is evicted, `Expired`.
    pub expiry_ms: u64,
    /// When the pool is full, how long ingress holds a transaction (and,
    /// through flow control, its client) waiting for room before rejecting
    /// it `PoolFull` (ms).
    pub full_wait_ms: u64,
    /// A batch is sealed at this many transactions...
    pub batch_txs_max: usize,
    /// ...or when its first transaction has waited this long (ms).
    pub batch_age_ms: u64,
    /// An own batch that f+1 validators did not store this long after it
    /// was sealed (ms) is abandoned and its transactions return to the pool
    /// (docs/mempool.md, "One final answer").
    pub batch_available_timeout_ms: u64,
}
impl Default for MempoolConfig {
    fn default() -> Self {
        Self {
            txs_max: 200_000,
            bytes_max: 128 << 20,
            nonce_ahead_max: 1024,
            shards: 16,
            expiry_ms: 600_000,
            full_wait_ms: 2_000,
            batch_txs_max: 1000,
            batch_age_ms: 10,
            batch_available_timeout_ms: 20_000,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsensusConfig {
    /// Least time between two own blocks (ms): bounds the block rate when
    /// quorums form faster (one validator, a LAN).
    pub min_round_delay_ms: u64,
    /// How long to wait for a round's leader block before moving on (ms).
    pub leader_timeout_ms: u64,
    /// Rounds of the DAG kept in memory below the last commit; older blocks
    /// are served to lagging peers from the consensus log on disk.
    pub gc_depth_rounds: u64,
}
impl Default for ConsensusConfig {
    fn default() -> Self {
        Self {
            min_round_delay_ms: 20,
            leader_timeout_ms: 300,
            gc_depth_rounds: 100,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// fsync every commit (survives power loss; costs latency).
    pub sync_writes: bool,
    pub block_cache_bytes: usize,
    /// Committed accounts cached in front of the state column for
    /// admission's nonce reads (~110 bytes each); 0 turns the cache off.
    pub account_cache_entries: usize,
    /// Write a state snapshot to DATA_DIR/snapshots every this many commits
    /// (0: never). A snapshot costs one pass over the state on a
    /// background thread and about 80 bytes of disk per state entry.
    pub snapshot_every_commits: u64,
    /// Snapshots kept (the newest); older ones are deleted.
    pub snapshots_kept: usize,
    /// Commits whose blocks, transaction index and commit record are kept
    /// (0: keep everything, and never prune the consensus log). Older ones
    /// are deleted once they are also older than the oldest kept snapshot.
    pub retention_commits: u64,
    /// Consensus-log rounds kept below what a restart needs (the last
    /// commit's leader round minus `consensus.gc_depth_rounds`), for peers
    /// that fall behind. Only with `retention_commits` > 0.
    pub consensus_log_margin_rounds: u64,
}
impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            sync_writes: false,
            block_cache_bytes: 64 << 20,
            account_cache_entries: velox_storage::ACCOUNT_CACHE_ENTRIES_DEFAULT,
            snapshot_every_commits: 1000,
            snapshots_kept: 2,
            retention_commits: 10_000,
            consensus_log_margin_rounds: 1000,
        }
    }
}

/// The parallel executor (docs/execution.md, "Fallback rules").
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ExecSection {
    /// Workers per block, the exec tile's thread included; 0: one per
    /// `[layout] exec` core. 1 runs every block on the sequential executor.
    pub workers: usize,
    /// Blocks with fewer transactions run sequentially.
    pub parallel_min_txs: usize,
    /// Run a block sequentially when more than this share of its
    /// transactions touch one key (1.0 or more: never for that reason).
    pub hot_key_share_max: f64,
    /// The adaptive guard: eligible blocks take the path measured cheaper,
    /// and every this-many the other one; 0 turns it off (every eligible
    /// block runs in parallel).
    pub adaptive_probe_every_blocks: u64,
}

impl Default for ExecSection {
    fn default() -> Self {
        let d = velox_exec::ExecConfig::default();
        Self {
            workers: 0,
            parallel_min_txs: d.parallel_min_txs,
            hot_key_share_max: d.hot_key_share_max,
            adaptive_probe_every_blocks: d.adaptive_probe_every_blocks,
        }
    }
}

impl ExecSection {
    /// The executor's configuration on `exec_cores` (the layout's).
    pub fn executor_config(&self, exec_cores: &[usize]) -> velox_exec::ExecConfig {
        velox_exec::ExecConfig {
            exec_workers: if self.workers == 0 {
                exec_cores.len().max(1)
            } else {
                self.workers
            },
            worker_cores: exec_cores.to_vec(),
            parallel_min_txs: self.parallel_min_txs,
            hot_key_share_max: self.hot_key_share_max,
            adaptive_probe_every_blocks: self.adaptive_probe_every_blocks,
            ..velox_exec::ExecConfig::default()
        }
    }
}

/// Switches for like-for-like comparison with published DAG-BFT benchmarks
/// (unsigned dummy transactions, no execution). Never for a real network:
/// with `skip_signature_checks` anyone can send as anyone.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BenchmarkConfig {
    /// Accept transactions without checking their signatures (ingress and
    /// peers' batches).
    pub skip_signature_checks: bool,
    /// Order and store transactions without executing them: every receipt
    /// is success and the state (and its root) never changes.
    pub skip_execution: bool,
}

impl BenchmarkConfig {
    pub fn any(&self) -> bool {
        self.skip_signature_checks || self.skip_execution
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenesisConfig {
    /// Explicit allocations.
    pub allocations: Vec<Allocation>,
    /// Also fund this many development accounts derived from `dev_seed`
    /// (the load generator derives the same keys).
    pub dev_accounts: u32,
    pub dev_seed: String,
    pub dev_balance: u64,
    /// Wall-clock timestamp of the genesis block.
    pub timestamp_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allocation {
    /// Hex of the account's ed25519 public key (64 characters).
    pub account: String,
    pub balance: u64,
}

/// A configuration problem, naming the field and the fix.
#[derive(Debug, thiserror::Error)]
#[error("config {file}: {field}: {problem}; fix: {fix}")]
pub struct ConfigError {
    pub file: String,
    pub field: String,
    pub problem: String,
    pub fix: String,
}

impl Config {
    /// Reads, parses and validates `path`; relative paths inside are resolved
    /// against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            field: "(file)".into(),
            problem: format!("cannot read: {e}"),
            fix: "pass an existing file to --config (`velox node --print-default-config > velox.toml` writes one)".into(),
        })?;
        let mut cfg = Self::parse(&text, &file)?;
        let base = path.parent().unwrap_or(Path::new("."));
        if cfg.data_dir.is_relative() {
            cfg.data_dir = base.join(&cfg.data_dir);
        }
        if cfg.key_file.is_relative() {
            cfg.key_file = base.join(&cfg.key_file);
        }
        if let Some(c) = &cfg.committee_file {
            if c.is_relative() {
                cfg.committee_file = Some(base.join(c));
            }
        }
        Ok(cfg)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let field = e
                .span()
                .map(|s| locate_field(text, s.start))
                .unwrap_or_else(|| "(syntax)".into());
            ConfigError {
                file: file.to_string(),
                field,
                problem: e.message().to_string(),
                fix:
                    "see `velox node --print-default-config` for every field, its type and default"
                        .into(),
            }
        })?;
        cfg.validate(file)?;
        Ok(cfg)
    }

    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let err = |field: &str, problem: String, fix: &str| ConfigError {
            file: file.to_string(),
            field: field.to_string(),
            problem,
            fix: fix.to_string(),
        };
        if self.network.ingress_connections_max == 0 {
            return Err(err(
                "network.ingress_connections_max",
                "is 0".into(),
                "set it to at least 1 (default 1024)",
            ));
        }
        if self.network.ingress_connections_per_ip_max == 0 {
            return Err(err(
                "network.ingress_connections_per_ip_max",
                "is 0".into(),
                "set it to at least 1 (default 64)",
            ));
        }
        if self.network.ingress_addr == self.api.addr {
            return Err(err(
                "api.addr",
                "equals network.ingress_addr".into(),
                "give the HTTP API its own port",
            ));
        }
        if self.mempool.txs_max == 0 || self.mempool.bytes_max < velox_exec::tx::TX_BYTES_MAX * 16 {
            return Err(err(
                "mempool.txs_max / mempool.bytes_max",
                format!(
                    "too small ({} txs, {} bytes)",
                    self.mempool.txs_max, self.mempool.bytes_max
                ),
                "allow at least 1 transaction and 16 maximum-size transactions' bytes",
            ));
        }
        use velox_mempool::budget::{BUDGET_BYTES_LIMIT, BUDGET_TXS_LIMIT};
        if self.mempool.txs_max as u64 > BUDGET_TXS_LIMIT
            || self.mempool.bytes_max as u64 > BUDGET_BYTES_LIMIT
        {
            return Err(err(
                "mempool.txs_max / mempool.bytes_max",
                format!(
                    "too large ({} txs, {} bytes)",
                    self.mempool.txs_max, self.mempool.bytes_max
                ),
                &format!(
                    "stay within {BUDGET_TXS_LIMIT} transactions and {BUDGET_BYTES_LIMIT} bytes"
                ),
            ));
        }
        if self.mempool.nonce_ahead_max == 0 {
            return Err(err(
                "mempool.nonce_ahead_max",
                "is 0".into(),
                "set it to at least 1 (default 1024)",
            ));
        }
        if !self.mempool.shards.is_power_of_two() || self.mempool.shards > 1024 {
            return Err(err(
                "mempool.shards",
                format!("is {}", self.mempool.shards),
                "use a power of two from 1 to 1024 (default 16)",
            ));
        }
        if self.mempool.expiry_ms == 0 || self.mempool.expiry_ms >= 1 << 31 {
            return Err(err(
                "mempool.expiry_ms",
                format!("is {}", self.mempool.expiry_ms),
                "use 1..2147483648 ms (default 600000, ten minutes)",
            ));
        }
        if self.mempool.full_wait_ms > 60_000 {
            return Err(err(
                "mempool.full_wait_ms",
                format!("is {}", self.mempool.full_wait_ms),
                "use at most 60000 ms (default 2000); 0 rejects at once when full",
            ));
        }
        if self.mempool.batch_txs_max == 0
            || self.mempool.batch_txs_max > velox_net::frame::STREAM_TXS_MAX * 64
        {
            return Err(err(
                "mempool.batch_txs_max",
                format!("is {}", self.mempool.batch_txs_max),
                "use 1..=65536 (default 1000)",
            ));
        }
        if self.mempool.batch_age_ms == 0 || self.mempool.batch_age_ms > 10_000 {
            return Err(err(
                "mempool.batch_age_ms",
                format!("is {}", self.mempool.batch_age_ms),
                "use 1..=10000 milliseconds (default 10)",
            ));
        }
        if self.mempool.batch_available_timeout_ms < 1_000
            || self.mempool.batch_available_timeout_ms > 600_000
        {
            return Err(err(
                "mempool.batch_available_timeout_ms",
                format!("is {}", self.mempool.batch_available_timeout_ms),
                "use 1000..=600000 milliseconds (default 20000)",
            ));
        }
        if self.consensus.min_round_delay_ms == 0 || self.consensus.min_round_delay_ms > 10_000 {
            return Err(err(
                "consensus.min_round_delay_ms",
                format!("is {}", self.consensus.min_round_delay_ms),
                "use 1..=10000 milliseconds (default 20)",
            ));
        }
        if self.consensus.leader_timeout_ms < 10 || self.consensus.leader_timeout_ms > 60_000 {
            return Err(err(
                "consensus.leader_timeout_ms",
                format!("is {}", self.consensus.leader_timeout_ms),
                "use 10..=60000 milliseconds (default 300)",
            ));
        }
        if self.storage.account_cache_entries > velox_storage::cache::ACCOUNT_CACHE_ENTRIES_MAX {
            return Err(err(
                "storage.account_cache_entries",
                format!("is {}", self.storage.account_cache_entries),
                "use 0 (off) to 16777216 accounts (default 65536)",
            ));
        }
        if self.exec.workers > velox_exec::parallel::EXEC_WORKERS_MAX {
            return Err(err(
                "exec.workers",
                format!("is {}", self.exec.workers),
                &format!(
                    "use 0 (one per exec core) to {}",
                    velox_exec::parallel::EXEC_WORKERS_MAX
                ),
            ));
        }
        if self.exec.parallel_min_txs == 0 {
            return Err(err(
                "exec.parallel_min_txs",
                "is 0".into(),
                "set it to at least 1 (default 512)",
            ));
        }
        if self.exec.hot_key_share_max.is_nan() || self.exec.hot_key_share_max <= 0.0 {
            return Err(err(
                "exec.hot_key_share_max",
                format!("is {}", self.exec.hot_key_share_max),
                "use a share above 0 (default 0.75; 1.0 or more turns the check off)",
            ));
        }
        if self.consensus.gc_depth_rounds < 10 {
            return Err(err(
                "consensus.gc_depth_rounds",
                format!("is {}", self.consensus.gc_depth_rounds),
                "use at least 10 (default 100)",
            ));
        }
        if self.storage.snapshot_every_commits > 0 && self.storage.snapshots_kept == 0 {
            return Err(err(
                "storage.snapshots_kept",
                "is 0 while snapshot_every_commits > 0".into(),
                "keep at least 1 snapshot (default 2), or set snapshot_every_commits = 0",
            ));
        }
        if self.storage.retention_commits > 0
            && self.storage.retention_commits <= self.consensus.gc_depth_rounds
        {
            return Err(err(
                "storage.retention_commits",
                format!(
                    "is {}, not above consensus.gc_depth_rounds ({}): a restart needs the commit records of the last gc_depth_rounds rounds",
                    self.storage.retention_commits, self.consensus.gc_depth_rounds
                ),
                "set it above consensus.gc_depth_rounds (default 10000), or 0 to keep everything",
            ));
        }
        for (i, a) in self.genesis.allocations.iter().enumerate() {
            if velox_exec::AccountId::from_hex(&a.account).is_err() {
                return Err(err(
                    &format!("genesis.allocations[{i}].account"),
                    format!("'{}' is not 64 hex characters", a.account),
                    "use the public key printed by `velox keygen`",
                ));
            }
        }
        if self.genesis.dev_accounts > 0 && self.genesis.dev_seed.is_empty() {
            return Err(err(
                "genesis.dev_seed",
                "is empty while dev_accounts > 0".into(),
                "set a seed string, e.g. \"velox-devnet\"",
            ));
        }
        if let Some(layout) = &self.layout {
            let topo = velox_tuning::Topology::detect(&velox_tuning::RealFs::new());
            velox_tuning::validate_layout(layout, &topo)
                .map_err(|e| err("layout", e.to_string(), "edit the [layout] section"))?;
            // Tiles the node runs one of: a second core listed would sit
            // idle (verify and exec use every core they are given).
            for (kind, cores, max) in [
                ("net", &layout.net, velox_tuning::NET_TILES_MAX),
                ("mempool", &layout.mempool, 1),
                ("consensus", &layout.consensus, 1),
                ("storage", &layout.storage, 1),
            ] {
                if cores.len() > max {
                    return Err(err(
                        &format!("layout.{kind}"),
                        format!(
                            "lists {} cores {cores:?}; the node runs {max} {kind} tile{}, so the others would sit idle",
                            cores.len(),
                            if max == 1 { "" } else { "s" }
                        ),
                        &format!(
                            "list one core for {kind} and give the others to verify or exec (`velox tune plan` does)"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The layout in force: the configured one, or the planner's for every
    /// core of this machine.
    pub fn layout(&self) -> anyhow::Result<Layout> {
        if let Some(l) = &self.layout {
            return Ok(l.clone());
        }
        planned_layout()
    }
}

/// The planner's layout for every core of this machine.
pub fn planned_layout() -> anyhow::Result<Layout> {
    {
        let topo = velox_tuning::Topology::detect(&velox_tuning::RealFs::new());
        let cores = topo.physical_cores().len().clamp(1, available_cores());
        let plan = velox_tuning::plan(&topo, cores)
            .map_err(|e| anyhow::anyhow!("planning a layout for {cores} cores: {e}"))?;
        Ok(plan.layout)
    }
}

/// `layout` with every core moved `by` places along the sorted list of the
/// cores it uses: local validators sharing a machine then put their hot
/// tiles on different cores instead of all on the same one.
pub fn rotate_layout(layout: &Layout, by: usize) -> Layout {
    let mut cores: Vec<usize> = [
        &layout.net,
        &layout.verify,
        &layout.mempool,
        &layout.consensus,
        &layout.exec,
        &layout.storage,
    ]
    .iter()
    .flat_map(|v| v.iter().copied())
    .collect();
    cores.sort_unstable();
    cores.dedup();
    let map = |v: &Vec<usize>| -> Vec<usize> {
        v.iter()
            .map(|c| {
                let i = cores.iter().position(|x| x == c).unwrap_or(0);
                cores[(i + by) % cores.len()]
            })
            .collect()
    };
    Layout {
        net: map(&layout.net),
        verify: map(&layout.verify),
        mempool: map(&layout.mempool),
        consensus: map(&layout.consensus),
        exec: map(&layout.exec),
        storage: map(&layout.storage),
    }
}

/// Cores this process may use.
pub fn available_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Names the `section.key` at byte `offset` of `text` (best effort).
fn locate_field(text: &str, offset: usize) -> String {
    let upto = &text[..offset.min(text.len())];
    let mut section = String::new();
    for line in upto.lines() {
        let t = line.trim();
        if t.starts_with('[') && t.ends_with(']') {
            section = t.trim_matches(|c| c == '[' || c == ']').to_string();
        }
    }
    let line = upto.lines().last().unwrap_or("");
    let key = line.split('=').next().unwrap_or("").trim();
    match (section.is_empty(), key.is_empty()) {
        (true, true) => "(top level)".into(),
        (true, false) => key.to_string(),
        (false, true) => section,
        (false, false) => format!("{section}.{key}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_moves_tiles_to_the_next_cores() {
        let l = Layout {
            net: vec![0],
            verify: vec![1, 2],
            mempool: vec![0],
            consensus: vec![0],
            exec: vec![3],
            storage: vec![3],
        };
        let r = rotate_layout(&l, 1);
        assert_eq!((r.net, r.verify, r.exec), (vec![1], vec![2, 3], vec![0]));
        assert_eq!(rotate_layout(&l, 4).verify, l.verify);
    }

    #[test]
    fn default_config_parses_and_validates() {
        let c = Config::parse(DEFAULT_CONFIG, "default").unwrap();
        assert_eq!(c.consensus.min_round_delay_ms, 20);
        assert_eq!(c.committee_file, None);
    }

    #[test]
    fn storage_retention_and_snapshot_keys_are_checked() {
        let c = Config::parse(DEFAULT_CONFIG, "default").unwrap();
        assert_eq!(c.storage.snapshot_every_commits, 1000);
        assert_eq!(c.storage.snapshots_kept, 2);
        assert_eq!(c.storage.retention_commits, 10_000);
        let bad = DEFAULT_CONFIG.replace("retention_commits = 10000", "retention_commits = 50");
        let e = Config::parse(&bad, "f.toml").unwrap_err().to_string();
        assert!(
            e.contains("storage.retention_commits") && e.contains("fix:"),
            "{e}"
        );
        let bad = DEFAULT_CONFIG.replace("snapshots_kept = 2", "snapshots_kept = 0");
        let e = Config::parse(&bad, "f.toml").unwrap_err().to_string();
        assert!(e.contains("storage.snapshots_kept"), "{e}");
        let off = DEFAULT_CONFIG.replace("retention_commits = 10000", "retention_commits = 0");
        assert_eq!(
            Config::parse(&off, "f").unwrap().storage.retention_commits,
            0
        );
    }

    #[test]
    fn exec_keys_map_to_the_executor_and_are_checked() {
        let c = Config::parse(DEFAULT_CONFIG, "default").unwrap();
        assert_eq!(c.exec, ExecSection::default());
        // 0 workers: one per exec core, pinned to them.
        let e = c.exec.executor_config(&[3, 5]);
        assert_eq!((e.exec_workers, e.worker_cores), (2, vec![3, 5]));
        let one = DEFAULT_CONFIG.replace("workers = 0", "workers = 1");
        let e = Config::parse(&one, "f")
            .unwrap()
            .exec
            .executor_config(&[3, 5]);
        assert_eq!(e.exec_workers, 1);
        for (from, to, field) in [
            ("workers = 0", "workers = 65", "exec.workers"),
            (
                "parallel_min_txs = 512",
                "parallel_min_txs = 0",
                "exec.parallel_min_txs",
            ),
            (
                "hot_key_share_max = 0.75",
                "hot_key_share_max = 0.0",
                "exec.hot_key_share_max",
            ),
            (
                "hot_key_share_max = 0.75",
                "hot_key_share_max = nan",
                "exec.hot_key_share_max",
            ),
        ] {
            let bad = DEFAULT_CONFIG.replace(from, to);
            assert_ne!(bad, DEFAULT_CONFIG, "{from}");
            let e = Config::parse(&bad, "f.toml").unwrap_err().to_string();
            assert!(e.contains(field) && e.contains("fix:"), "{e}");
        }
    }

    #[test]
    fn errors_name_field_and_fix() {
        let bad = DEFAULT_CONFIG.replace("min_round_delay_ms = 20", "min_round_delay_ms = 0");
        let e = Config::parse(&bad, "f.toml").unwrap_err().to_string();
        assert!(
            e.contains("consensus.min_round_delay_ms") && e.contains("fix:"),
            "{e}"
        );

        let bad =
            DEFAULT_CONFIG.replace("min_round_delay_ms = 20", "min_round_delay_ms = \"fast\"");
        let e = Config::parse(&bad, "f.toml").unwrap_err().to_string();
        assert!(e.contains("min_round_delay_ms"), "{e}");

        let bad = format!("{DEFAULT_CONFIG}\n[bogus]\nx = 1\n");
        let e = Config::parse(&bad, "f.toml").unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");

        let bad = DEFAULT_CONFIG.replace("[consensus]", "[layout]\nnet=[0]\nverify=[999]\nmempool=[0]\nconsensus=[0]\nexec=[0]\nstorage=[0]\n\n[consensus]");
        let e = Config::parse(&bad, "f.toml").unwrap_err().to_string();
        assert!(e.contains("layout") && e.contains("999"), "{e}");

        // Two cores for a tile the node runs one of: refused, not idle.
        let bad = DEFAULT_CONFIG.replace("[consensus]", "[layout]\nnet=[0, 1]\nverify=[1]\nmempool=[0]\nconsensus=[0]\nexec=[0]\nstorage=[0]\n\n[consensus]");
        let e = Config::parse(&bad, "f.toml").unwrap_err().to_string();
        assert!(
            e.contains("layout.net") && e.contains("sit idle") && e.contains("fix:"),
            "{e}"
        );
        let bad = DEFAULT_CONFIG.replace("[consensus]", "[layout]\nnet=[0]\nverify=[1]\nmempool=[0]\nconsensus=[0, 1]\nexec=[0]\nstorage=[0]\n\n[consensus]");
        let e = Config::parse(&bad, "f.toml").unwrap_err().to_string();
        assert!(e.contains("layout.consensus"), "{e}");
    }
}
