//! A tiny text form for test DAGs.
//!
//! One line per round; validators are letters `A`, `B`, ... (index 0, 1, ...):
//!
//! ```text
//! R1: *                      every validator, no parents
//! R2: A->[*], B->[*], C      `*` = every (first) block of the previous round;
//!                            a bare name means `->[*]`
//! R3: A->[A2,B2,C2], D->[*]  explicit parents: name + round
//! R4: B'->[A3,B3,C3]         a second (equivocating) block of B at round 4;
//!                            reference it as `B4'`
//! ```
//!
//! Blocks are signed with [`Committee::new_for_test`] keys. Parent rules are
//! not enforced, so commit-rule edge cases can be written directly.

use std::collections::BTreeMap;
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use thiserror::Error;

use crate::block::{Block, BlockRef, UnsignedBlock};
use crate::types::{Committee, Digest, Round, ValidatorIndex};

/// Why a test DAG does not parse.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParseError {
    /// Bad syntax on a line.
    #[error("line {line}: {msg}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// What is wrong.
        msg: String,
    },
}

/// Parses `text` into signed blocks, lowest round first.
pub fn parse_dag(
    committee: &Committee,
    keys: &[SigningKey],
    text: &str,
) -> Result<Vec<Arc<Block>>, ParseError> {
    // (author, round, variant) -> block
    let mut made: BTreeMap<(u32, u64, bool), Arc<Block>> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let err = |msg: &str| ParseError::Syntax {
            line: line_no,
            msg: msg.to_string(),
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (head, rest) = line.split_once(':').ok_or_else(|| err("missing ':'"))?;
        let round: u64 = head
            .trim()
            .strip_prefix('R')
            .and_then(|r| r.parse().ok())
            .filter(|r| *r >= 1)
            .ok_or_else(|| err("expected R<round>"))?;
        for entry in split_entries(rest) {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            if entry == "*" {
                for v in 0..committee.size() as u32 {
                    let parents = star(&made, committee, round)?;
                    let b = make(committee, keys, v, round, false, parents);
                    made.insert((v, round, false), b.clone());
                    out.push(b);
                }
                continue;
            }
            let (name, parents_text) = match entry.split_once("->") {
                Some((n, p)) => (n.trim(), p.trim()),
                None => (entry, "[*]"),
            };
            let (v, variant) = parse_name(name, committee).ok_or_else(|| err("bad author"))?;
            let inner = parents_text
                .strip_prefix('[')
                .and_then(|p| p.strip_suffix(']'))
                .ok_or_else(|| err("parents must be [..]"))?;
            let mut parents = Vec::new();
            for p in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                if p == "*" {
                    parents.extend(star(&made, committee, round)?);
                    continue;
                }
                let variant = p.ends_with('\'');
                let p = p.trim_end_matches('\'');
                let (pv, _) = parse_name(&p[..1], committee).ok_or_else(|| err("bad parent"))?;
                let pr: u64 = p[1..].parse().map_err(|_| err("bad parent round"))?;
                let b = made
                    .get(&(pv, pr, variant))
                    .ok_or_else(|| err(&format!("unknown parent {p}")))?;
                parents.push(b.reference());
            }
            let b = make(committee, keys, v, round, variant, parents);
            made.insert((v, round, variant), b.clone());
            out.push(b);
        }
    }
    Ok(out)
}

fn split_entries(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_name(name: &str, committee: &Committee) -> Option<(u32, bool)> {
    let variant = name.ends_with('\'');
    let name = name.trim_end_matches('\'');
    let mut chars = name.chars();
    let c = chars.next()?;
    if chars.next().is_some() || !c.is_ascii_uppercase() {
        return None;
    }
    let v = c as u32 - 'A' as u32;
    (v < committee.size() as u32).then_some((v, variant))
}

fn star(
    made: &BTreeMap<(u32, u64, bool), Arc<Block>>,
    committee: &Committee,
    round: u64,
) -> Result<Vec<BlockRef>, ParseError> {
    if round == 1 {
        return Ok(Vec::new());
    }
    Ok((0..committee.size() as u32)
        .filter_map(|v| made.get(&(v, round - 1, false)))
        .map(|b| b.reference())
        .collect())
}

fn make(
    committee: &Committee,
    keys: &[SigningKey],
    v: u32,
    round: u64,
    variant: bool,
    parents: Vec<BlockRef>,
) -> Arc<Block> {
    Arc::new(
        UnsignedBlock {
            epoch: committee.epoch(),
            author: ValidatorIndex(v),
            round: Round(round),
            parents,
            payload: vec![Digest([variant as u8; 32])],
            timestamp_ms: round * 100 + v as u64,
        }
        .sign(&keys[v as usize]),
    )
}

/// Letter name of a validator ("A" for 0).
pub fn name(v: ValidatorIndex) -> String {
    char::from(b'A' + v.0 as u8).to_string()
}
