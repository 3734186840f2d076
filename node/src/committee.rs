//! The committee file: who the validators are, their keys, stakes and
//! validator-network addresses.
//!
//! ```toml
//! epoch = 0
//! [[validators]]
//! public_key = "<64 hex chars, from `velox keygen`>"
//! peer_addr = "127.0.0.1:7200"   # UDP, QUIC with mutual TLS (ALPN velox-peer/3)
//! stake = 1
//! ```
//!
//! Validator `i` is the i-th entry. Every validator must use the same file.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use velox_dag::{Authority, Committee, Epoch, ValidatorIndex};

use crate::config::ConfigError;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitteeFile {
    #[serde(default)]
    pub epoch: u64,
    pub validators: Vec<ValidatorEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatorEntry {
    pub public_key: String,
    pub peer_addr: SocketAddr,
    #[serde(default = "one")]
    pub stake: u64,
}
fn one() -> u64 {
    1
}

/// A checked committee and where this validator sits in it.
pub struct CommitteeInfo {
    pub committee: Arc<Committee>,
    pub me: ValidatorIndex,
    pub keys: Vec<[u8; 32]>,
    pub addrs: Vec<SocketAddr>,
}

impl CommitteeFile {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            field: "(file)".into(),
            problem: format!("cannot read the committee file: {e}"),
            fix: "point committee_file at the committee every validator shares".into(),
        })?;
        let c: CommitteeFile = toml::from_str(&text).map_err(|e| ConfigError {
            file: file.clone(),
            field: "(syntax)".into(),
            problem: e.message().to_string(),
            fix: "see docs/config.md for the committee file format".into(),
        })?;
        Ok(c)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a committee serializes")
    }

    /// Checks the entries and finds `my_key` among them.
    pub fn resolve(&self, file: &str, my_key: &[u8; 32]) -> Result<CommitteeInfo, ConfigError> {
        let err = |field: String, problem: String, fix: &str| ConfigError {
            file: file.to_string(),
            field,
            problem,
            fix: fix.to_string(),
        };
        if self.validators.is_empty() {
            return Err(err(
                "validators".into(),
                "is empty".into(),
                "list every validator as a [[validators]] entry",
            ));
        }
        if self.validators.len() > velox_dag::types::COMMITTEE_SIZE_MAX {
            return Err(err(
                "validators".into(),
                format!("{} entries", self.validators.len()),
                "at most 1024 validators",
            ));
        }
        let mut keys = Vec::new();
        let mut auths = Vec::new();
        let mut addrs = Vec::new();
        for (i, v) in self.validators.iter().enumerate() {
            let field = |f: &str| format!("validators[{i}].{f}");
            let bytes = velox_exec::AccountId::from_hex(&v.public_key).map_err(|_| {
                err(
                    field("public_key"),
                    format!("'{}' is not 64 hex characters", v.public_key),
                    "use the public key printed by `velox keygen`",
                )
            })?;
            // The chain's key rule (canonical, not of small order): a key
            // that fails it could never sign a block anyone accepts.
            velox_exec::sig::PublicKey::parse(&bytes.0).map_err(|e| {
                err(
                    field("public_key"),
                    format!("is not a valid ed25519 public key ({e})"),
                    "use the public key printed by `velox keygen`",
                )
            })?;
            let vk = VerifyingKey::from_bytes(&bytes.0).map_err(|_| {
                err(
                    field("public_key"),
                    "is not a valid ed25519 public key".into(),
                    "use the public key printed by `velox keygen`",
                )
            })?;
            if keys.contains(&bytes.0) {
                return Err(err(
                    field("public_key"),
                    "appears twice".into(),
                    "each validator has its own key",
                ));
            }
            if addrs.contains(&v.peer_addr) {
                return Err(err(
                    field("peer_addr"),
                    format!("{} appears twice", v.peer_addr),
                    "each validator has its own address",
                ));
            }
            if v.stake == 0 {
                return Err(err(
                    field("stake"),
                    "is 0".into(),
                    "use a stake of at least 1",
                ));
            }
            keys.push(bytes.0);
            addrs.push(v.peer_addr);
            auths.push(Authority {
                stake: v.stake,
                public_key: vk,
            });
        }
        let total: u128 = auths.iter().map(|a| a.stake as u128).sum();
        if total > u64::MAX as u128 {
            return Err(err(
                "validators[].stake".into(),
                "total stake overflows 64 bits".into(),
                "use smaller stakes",
            ));
        }
        let Some(me) = keys.iter().position(|k| k == my_key) else {
            return Err(err(
                "validators".into(),
                format!(
                    "this validator's key {} is not in the committee",
                    hex::encode(my_key)
                ),
                "add it (with its peer_addr) to the committee file every validator uses, or use this validator's own key_file",
            ));
        };
        Ok(CommitteeInfo {
            committee: Arc::new(Committee::new(Epoch(self.epoch), auths)),
            me: ValidatorIndex(me as u32),
            keys,
            addrs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> [u8; 32] {
        ed25519_dalek::SigningKey::from_bytes(&[i; 32])
            .verifying_key()
            .to_bytes()
    }

    fn file(n: u8) -> CommitteeFile {
        CommitteeFile {
            epoch: 0,
            validators: (0..n)
                .map(|i| ValidatorEntry {
                    public_key: hex::encode(key(i)),
                    peer_addr: format!("127.0.0.1:{}", 7200 + i as u16).parse().unwrap(),
                    stake: 1,
                })
                .collect(),
        }
    }

    #[test]
    fn roundtrip_and_resolve() {
        let f = file(4);
        let back: CommitteeFile = toml::from_str(&f.to_toml()).unwrap();
        let info = back.resolve("c.toml", &key(2)).unwrap();
        assert_eq!(info.me, ValidatorIndex(2));
        assert_eq!(info.committee.size(), 4);
        assert_eq!(info.committee.validity_threshold(), 2);
        assert_eq!(info.addrs[3].port(), 7203);
    }

    #[test]
    fn errors_name_the_entry() {
        let e = file(4)
            .resolve("c.toml", &key(9))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("not in the committee") && e.contains("fix:"),
            "{e}"
        );
        let mut f = file(4);
        f.validators[1].public_key = "zz".into();
        let e = f.resolve("c.toml", &key(0)).err().unwrap().to_string();
        assert!(e.contains("validators[1].public_key"), "{e}");
        let mut f = file(4);
        f.validators[3].peer_addr = f.validators[0].peer_addr;
        let e = f.resolve("c.toml", &key(0)).err().unwrap().to_string();
        assert!(e.contains("validators[3].peer_addr"), "{e}");
        let mut f = file(4);
        f.validators[2].stake = 0;
        let e = f.resolve("c.toml", &key(0)).err().unwrap().to_string();
        assert!(e.contains("validators[2].stake"), "{e}");
        let mut f = file(2);
        f.validators[1].public_key = f.validators[0].public_key.clone();
        let e = f.resolve("c.toml", &key(0)).err().unwrap().to_string();
        assert!(e.contains("appears twice"), "{e}");
    }
}
