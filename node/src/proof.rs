//! `velox proof`: fetch a state proof from a node and check it locally, or
//! check one offline. The check is `velox_exec::smt::verify`: the client
//! trusts a root (here: the one the node's `GET /commit/{index}` reports,
//! e.g. after comparing it with other validators') and nothing else the
//! node says.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use velox_exec::smt::{verify, Terminal};
use velox_exec::{Account, AccountId, Proof, StateKey, StateRoot, StateValue};

/// What a proof showed, for printing.
pub struct Checked {
    pub key: StateKey,
    pub value: Option<StateValue>,
    pub root: StateRoot,
    pub proof: Proof,
    pub commit_index: Option<u64>,
    /// Why it failed; `None` when it verified.
    pub failure: Option<String>,
}

impl Checked {
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }

    /// Human-readable lines.
    pub fn render(&self) -> String {
        let mut o = String::new();
        match self.key {
            StateKey::Account(id) => o.push_str(&format!("account      {}\n", id.to_hex())),
            StateKey::Kv(k) => o.push_str(&format!("kv           {}\n", hex::encode(k))),
        }
        if let Some(i) = self.commit_index {
            o.push_str(&format!("commit       {i}\n"));
        }
        o.push_str(&format!("state root   {}\n", self.root.to_hex()));
        o.push_str(&format!(
            "value        {}\n",
            describe_value(self.value.as_ref())
        ));
        let kind = match self.proof.terminal {
            Terminal::Leaf => "inclusion",
            Terminal::Empty => "absence (empty subtree)",
            Terminal::OtherLeaf { .. } => "absence (another key's leaf)",
        };
        o.push_str(&format!(
            "proof        {} bytes, depth {}, {kind}\n",
            self.proof.encode().len(),
            self.proof.depth()
        ));
        match &self.failure {
            None => o.push_str("verified     OK\n"),
            Some(e) => o.push_str(&format!("verified     FAILED: {e}\n")),
        }
        o
    }
}

fn describe_value(v: Option<&StateValue>) -> String {
    match v {
        None => "absent".into(),
        Some(StateValue::Account(a)) => format!("balance {}, nonce {}", a.balance, a.nonce),
        Some(StateValue::Kv(x)) => format!("counter {x}"),
    }
}

/// The key named by `--account` or `--kv` (exactly one).
pub fn parse_key(account: Option<&str>, kv: Option<&str>) -> anyhow::Result<StateKey> {
    match (account, kv) {
        (Some(a), None) => Ok(StateKey::Account(AccountId::from_hex(a).map_err(|_| {
            anyhow::anyhow!("--account must be 64 hex characters (an ed25519 public key)")
        })?)),
        (None, Some(k)) => {
            let b = hex::decode(k)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .context("--kv must be 64 hex characters")?;
            Ok(StateKey::Kv(b))
        }
        _ => bail!("name the key: --account HEX or --kv HEX"),
    }
}

fn parse_root(s: &str) -> anyhow::Result<StateRoot> {
    let b = hex::decode(s.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .context("a state root is 64 hex characters")?;
    Ok(StateRoot(b))
}

/// The value claimed on the command line: `--absent`, or the account's
/// `--balance`/`--nonce` (missing ones 0), or the counter's `--value`.
pub fn claimed_value(
    key: &StateKey,
    absent: bool,
    balance: Option<u64>,
    nonce: Option<u64>,
    value: Option<u64>,
) -> anyhow::Result<Option<StateValue>> {
    if absent {
        if balance.is_some() || nonce.is_some() || value.is_some() {
            bail!("--absent takes no value");
        }
        return Ok(None);
    }
    match key {
        StateKey::Account(_) => {
            if value.is_some() {
                bail!("--value is for --kv keys; an account has --balance and --nonce");
            }
            if balance.is_none() && nonce.is_none() {
                bail!("give the account's --balance and --nonce, or --absent");
            }
            Ok(StateValue::normalize(Some(StateValue::Account(Account {
                balance: balance.unwrap_or(0),
                nonce: nonce.unwrap_or(0),
            }))))
        }
        StateKey::Kv(_) => {
            if balance.is_some() || nonce.is_some() {
                bail!("--balance and --nonce are for --account keys; a counter has --value");
            }
            let Some(v) = value else {
                bail!("give the counter's --value, or --absent");
            };
            Ok(StateValue::normalize(Some(StateValue::Kv(v))))
        }
    }
}

/// Checks `proof_hex` offline.
pub fn check_offline(
    root_hex: &str,
    key: StateKey,
    value: Option<StateValue>,
    proof_hex: &str,
) -> anyhow::Result<Checked> {
    let root = parse_root(root_hex).context("--root")?;
    let proof = Proof::from_hex(proof_hex).context("--proof")?;
    let failure = verify(&root, &key, value.as_ref(), &proof)
        .err()
        .map(|e| e.to_string());
    Ok(Checked {
        key,
        value,
        root,
        proof,
        commit_index: None,
        failure,
    })
}

/// Fetches the proof of `key` from the node's API, the root of the commit
/// it was read at from `GET /commit/{index}`, and checks it against that
/// root. Errors are transport or format problems; a proof that does not
/// verify is a [`Checked`] with a failure.
pub fn fetch_and_check(node: SocketAddr, key: StateKey) -> anyhow::Result<Checked> {
    let path = match key {
        StateKey::Account(id) => format!("/proof/account/{}", id.to_hex()),
        StateKey::Kv(k) => format!("/proof/kv/{}", hex::encode(k)),
    };
    let p = crate::httpc::get_json(node, &path)
        .with_context(|| format!("is a node's API at {node} (--node)?"))?;
    let index = p["commit_index"]
        .as_u64()
        .context("answer lacks commit_index")?;
    let field = |name: &str| -> anyhow::Result<&str> {
        p[name]
            .as_str()
            .with_context(|| format!("answer lacks {name}"))
    };
    let present = p["present"].as_bool().context("answer lacks present")?;
    let value = if !present {
        None
    } else {
        match key {
            StateKey::Account(_) => Some(StateValue::Account(Account {
                balance: p["balance"].as_u64().context("answer lacks balance")?,
                nonce: p["nonce"].as_u64().context("answer lacks nonce")?,
            })),
            StateKey::Kv(_) => Some(StateValue::Kv(
                p["value"].as_u64().context("answer lacks value")?,
            )),
        }
    };
    let commit = crate::httpc::get_json(node, &format!("/commit/{index}"))?;
    let root = parse_root(
        commit["state_root"]
            .as_str()
            .context("commit answer lacks state_root")?,
    )?;
    let proof = Proof::from_hex(field("proof")?).context("the node's proof")?;
    let mut failure = verify(&root, &key, value.as_ref(), &proof)
        .err()
        .map(|e| e.to_string());
    if failure.is_none() && field("state_root")? != root.to_hex() {
        failure = Some(format!(
            "the proof answer names root {}, commit {index} has {}",
            field("state_root")?,
            root.to_hex()
        ));
    }
    Ok(Checked {
        key,
        value,
        root,
        proof,
        commit_index: Some(index),
        failure,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claimed_values_parse() {
        let a = StateKey::Account(AccountId([1; 32]));
        let k = StateKey::Kv([2; 32]);
        assert_eq!(claimed_value(&a, true, None, None, None).unwrap(), None);
        assert_eq!(
            claimed_value(&a, false, Some(5), None, None).unwrap(),
            Some(StateValue::Account(Account {
                balance: 5,
                nonce: 0
            }))
        );
        // An empty account is absent.
        assert_eq!(
            claimed_value(&a, false, Some(0), Some(0), None).unwrap(),
            None
        );
        assert!(claimed_value(&a, false, None, None, None).is_err());
        assert!(claimed_value(&a, false, None, None, Some(1)).is_err());
        assert!(claimed_value(&a, true, Some(1), None, None).is_err());
        assert_eq!(
            claimed_value(&k, false, None, None, Some(3)).unwrap(),
            Some(StateValue::Kv(3))
        );
        assert!(claimed_value(&k, false, Some(1), None, None).is_err());
        assert!(parse_key(None, None).is_err());
        assert!(parse_key(Some("zz"), None).is_err());
        assert_eq!(parse_key(None, Some(&"02".repeat(32))).unwrap(), k);
    }

    #[test]
    fn offline_check_of_an_empty_state() {
        let key = StateKey::Account(AccountId([1; 32]));
        let empty = velox_exec::State::new().prove(&key).to_hex();
        let c = check_offline(&"00".repeat(32), key, None, &empty).unwrap();
        assert!(c.ok(), "{}", c.render());
        assert!(c.render().contains("verified     OK"));
        let c = check_offline(&"11".repeat(32), key, None, &empty).unwrap();
        assert!(!c.ok());
        assert!(c.render().contains("FAILED"));
        assert!(check_offline("xx", key, None, &empty).is_err());
        assert!(check_offline(&"00".repeat(32), key, None, "0102").is_err());
    }
}
