//! The `[layout]` section: which tiles run on which cores.

use serde::{Deserialize, Serialize};

/// The tile kinds a node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TileKind {
    Net,
    Verify,
    Mempool,
    Consensus,
    Exec,
    Storage,
}

impl TileKind {
    pub const ALL: [TileKind; 6] = [
        TileKind::Net,
        TileKind::Verify,
        TileKind::Mempool,
        TileKind::Consensus,
        TileKind::Exec,
        TileKind::Storage,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TileKind::Net => "net",
            TileKind::Verify => "verify",
            TileKind::Mempool => "mempool",
            TileKind::Consensus => "consensus",
            TileKind::Exec => "exec",
            TileKind::Storage => "storage",
        }
    }

    /// How many tiles of this kind the node can use: the pipeline stages that
    /// own single-writer state run exactly one tile.
    pub fn count_range(self) -> (usize, usize) {
        match self {
            TileKind::Net => (1, TILES_PER_KIND_MAX),
            TileKind::Verify => (1, TILES_PER_KIND_MAX),
            TileKind::Exec => (1, TILES_PER_KIND_MAX),
            TileKind::Mempool | TileKind::Consensus | TileKind::Storage => (1, 1),
        }
    }
}

/// Upper bound on tiles of one kind: one per core of the largest machines we
/// plan for, so that a typo like `verify = [0,0,0,...]` is caught.
pub const TILES_PER_KIND_MAX: usize = 256;

/// Cores per tile kind; one tile per listed core. A core may appear under
/// several kinds (those tiles share the core).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    pub net: Vec<usize>,
    pub verify: Vec<usize>,
    pub mempool: Vec<usize>,
    pub consensus: Vec<usize>,
    pub exec: Vec<usize>,
    pub storage: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "layout.{kind} names core {core}, but this machine has cores 0..{available} only; \
         use cores below {available} (run `velox tune plan --cores {available}` for a suggestion)"
    )]
    AbsentCore { kind: &'static str, core: usize, available: usize },
    #[error("layout.{kind} lists {count} cores; it must list between {min} and {max}")]
    Count { kind: &'static str, count: usize, min: usize, max: usize },
}

impl Layout {
    /// A layout for a machine with `cores` cores: everything shares what there
    /// is, with the signature-verification and execution work (the CPU hogs)
    /// away from the network and consensus tiles when there are two cores or
    /// more.
    pub fn for_cores(cores: usize) -> Layout {
        let cores = cores.max(1);
        let last = cores - 1;
        let verify: Vec<usize> = if cores <= 2 { vec![last] } else { (1..cores - 1).collect() };
        Layout {
            net: vec![0],
            verify,
            mempool: vec![0],
            consensus: vec![0],
            exec: vec![last],
            storage: vec![last],
        }
    }

    pub fn cores_of(&self, kind: TileKind) -> &[usize] {
        match kind {
            TileKind::Net => &self.net,
            TileKind::Verify => &self.verify,
            TileKind::Mempool => &self.mempool,
            TileKind::Consensus => &self.consensus,
            TileKind::Exec => &self.exec,
            TileKind::Storage => &self.storage,
        }
    }

    /// Checks tile counts and that every named core exists on a machine with
    /// `available` cores.
    pub fn validate(&self, available: usize) -> Result<(), LayoutError> {
        for kind in TileKind::ALL {
            let cores = self.cores_of(kind);
            let (min, max) = kind.count_range();
            if cores.len() < min || cores.len() > max {
                return Err(LayoutError::Count { kind: kind.name(), count: cores.len(), min, max });
            }
            if let Some(&core) = cores.iter().find(|&&c| c >= available) {
                return Err(LayoutError::AbsentCore { kind: kind.name(), core, available });
            }
        }
        Ok(())
    }

    /// The number of tiles sharing each core, indexed by core.
    pub fn tiles_per_core(&self, available: usize) -> Vec<usize> {
        let mut per = vec![0; available];
        for kind in TileKind::ALL {
            for &c in self.cores_of(kind) {
                if c < available {
                    per[c] += 1;
                }
            }
        }
        per
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_layouts_validate() {
        for cores in [1, 2, 3, 4, 16, 64] {
            let l = Layout::for_cores(cores);
            l.validate(cores).unwrap();
            assert_eq!(l.tiles_per_core(cores).iter().sum::<usize>(), 5 + l.verify.len());
        }
        assert_eq!(Layout::for_cores(16).verify.len(), 14);
    }

    #[test]
    fn absent_core_is_named_with_the_fix() {
        let mut l = Layout::for_cores(2);
        l.exec = vec![5];
        let err = l.validate(2).unwrap_err();
        assert_eq!(err, LayoutError::AbsentCore { kind: "exec", core: 5, available: 2 });
        let msg = err.to_string();
        assert!(msg.contains("layout.exec") && msg.contains("core 5") && msg.contains("velox tune plan"), "{msg}");
    }

    #[test]
    fn counts_are_checked() {
        let mut l = Layout::for_cores(2);
        l.storage = vec![0, 1];
        assert!(matches!(l.validate(2), Err(LayoutError::Count { kind: "storage", .. })));
        l.storage = vec![];
        assert!(matches!(l.validate(2), Err(LayoutError::Count { kind: "storage", .. })));
    }

    #[test]
    fn parses_from_toml_and_rejects_unknown_kinds() {
        let l: Layout = toml::from_str(
            "net=[0]\nverify=[1]\nmempool=[0]\nconsensus=[0]\nexec=[1]\nstorage=[1]\n",
        )
        .unwrap();
        assert_eq!(l, Layout::for_cores(2));
        let e = toml::from_str::<Layout>(
            "net=[0]\nverify=[1]\nmempool=[0]\nconsensus=[0]\nexec=[1]\nstorage=[1]\ngpu=[0]\n",
        );
        assert!(e.is_err());
    }
}
