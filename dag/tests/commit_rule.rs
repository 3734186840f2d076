//! Commit-rule edge cases written in the text DAG form.
//!
//! n = 4 (f = 1, quorum 3), equal stakes: leader(r) = validator r % 4, so
//! leader(1)=B, leader(2)=C, leader(3)=D, leader(4)=A, leader(5)=B, ...

use std::sync::Arc;

use velox_dag::text::parse_dag;
use velox_dag::{
    Block, CommitRuleConfig, Committee, Committer, DagState, Epoch, LeaderStatus, Linearizer,
    Round, ValidatorIndex,
};

fn dag(text: &str) -> (DagState, Vec<Arc<Block>>) {
    let (c, keys) = Committee::new_for_test(Epoch(0), 4, 1);
    let blocks = parse_dag(&c, &keys, text).expect("parses");
    let mut d = DagState::new(Arc::new(c));
    for b in &blocks {
        d.insert(b.clone());
    }
    (d, blocks)
}

/// Decided sequence as "B1 C2 -3 D4" (`-r` = skipped).
fn sequence(d: &DagState) -> String {
    Committer::default()
        .try_decide(d, Round(1))
        .iter()
        .map(|s| match s {
            LeaderStatus::Commit(b) => {
                format!("{}{}", velox_dag::text::name(b.author()), b.round())
            }
            LeaderStatus::Skip(r) => format!("-{r}"),
            LeaderStatus::Undecided(r) => format!("?{r}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn leader_schedule_matches_comment() {
    let (c, _) = Committee::new_for_test(Epoch(0), 4, 1);
    let l: Vec<u32> = (1..=5).map(|r| c.leader(Round(r)).0).collect();
    assert_eq!(l, [1, 2, 3, 0, 1]);
}

#[test]
fn direct_commit_with_full_support() {
    let (d, _) = dag("R1: *\nR2: *\nR3: *\nR4: *");
    assert!(matches!(
        Committer::default().decide_direct(&d, Round(2)),
        LeaderStatus::Commit(b) if b.author() == ValidatorIndex(2)
    ));
    assert_eq!(sequence(&d), "B1 C2");
}

#[test]
fn skip_by_blame() {
    // Only C itself references C2 in round 3: A, B, D blame it (3 = 2f+1).
    let (d, _) = dag("R1: *
         R2: *
         R3: A->[A2,B2,D2], B->[A2,B2,D2], C->[*], D->[A2,B2,D2]
         R4: *");
    assert_eq!(
        Committer::default().decide_direct(&d, Round(2)),
        LeaderStatus::Skip(Round(2))
    );
    assert_eq!(sequence(&d), "B1 -2");
}

#[test]
fn undecided_with_split_votes() {
    // Two votes (B, C) and two blames (A, D): neither rule fires, and with
    // no later committed leader the slot stays undecided, so the sequence
    // stops before it.
    let (d, _) = dag("R1: *
         R2: *
         R3: A->[A2,B2,D2], B->[*], C->[*], D->[A2,B2,D2]
         R4: *");
    assert_eq!(
        Committer::default().decide_direct(&d, Round(2)),
        LeaderStatus::Undecided(Round(2))
    );
    assert_eq!(sequence(&d), "B1");
}

const INDIRECT: &str = "
R1: *
R2: *
R3: *
R4: A->[*], B->[*], C->[*], D->[A3,B3,C3]
R5: A->[A4,B4,C4], B->[A4,B4,D4], C->[B4,C4,D4], D->[A4,C4,D4]
";

#[test]
fn indirect_commit_through_anchor() {
    // D3 has 3 votes (A4 B4 C4) but only A5 sees all of them: one
    // certificate, so no direct decision. Leader C6 commits directly and its
    // history holds the certificate A5: D3 commits indirectly.
    let text = format!("{INDIRECT}R6: *\nR7: *\nR8: *");
    let (d, _) = dag(&text);
    assert_eq!(
        Committer::default().decide_direct(&d, Round(3)),
        LeaderStatus::Undecided(Round(3))
    );
    assert_eq!(sequence(&d), "B1 C2 D3 A4 B5 C6");
}

#[test]
fn indirect_skip_without_certified_link() {
    // Same, but the anchor C6 does not reference the certificate A5.
    let text = format!("{INDIRECT}R6: A->[*], B->[*], C->[B5,C5,D5], D->[*]\nR7: *\nR8: *");
    let (d, _) = dag(&text);
    assert_eq!(sequence(&d), "B1 C2 -3 A4 B5 C6");
}

#[test]
fn undecided_until_anchor_is_decided() {
    // Without rounds 7-8 the anchor C6 is not decided yet: D3 waits, and so
    // does everything after it.
    let text = format!("{INDIRECT}R6: *");
    let (d, _) = dag(&text);
    assert_eq!(sequence(&d), "B1 C2");
}

#[test]
fn equivocating_leader_commits_the_certified_twin() {
    let (d, _) = dag("R1: *
         R2: *, C'->[*]
         R3: A->[A2,B2,C2], B->[A2,B2,C2], C->[B2,C2',D2], D->[A2,B2,C2]
         R4: *");
    match Committer::default().decide_direct(&d, Round(2)) {
        LeaderStatus::Commit(b) => assert_eq!(b.payload()[0].0[0], 0, "the first twin"),
        s => panic!("expected commit, got {s:?}"),
    }
}

#[test]
fn broken_threshold_commits_what_the_real_rule_does_not() {
    // The test-only knob lowers 2f+1 to f+1: two votes now certify.
    let (d, _) = dag("R1: *
         R2: *
         R3: A->[A2,B2,D2], B->[*], C->[*], D->[A2,B2,D2]
         R4: B->[B3,C3,D3], C->[B3,C3,A3], A->[*], D->[*]");
    let broken = Committer::new(CommitRuleConfig {
        direct_support_threshold_override: Some(2),
    });
    assert!(matches!(
        broken.decide_direct(&d, Round(2)),
        LeaderStatus::Commit(_)
    ));
    assert_eq!(
        Committer::default().decide_direct(&d, Round(2)),
        LeaderStatus::Undecided(Round(2))
    );
}

#[test]
fn linearizer_orders_by_round_timestamp_digest() {
    let (d, blocks) = dag("R1: *\nR2: *\nR3: *\nR4: *");
    let leader = blocks
        .iter()
        .find(|b| b.round() == Round(2) && b.author() == ValidatorIndex(2))
        .unwrap();
    let mut lin = Linearizer::default();
    let sub = lin.commit(&d, leader, Round(0));
    assert_eq!(sub.index, 0);
    assert_eq!(sub.blocks.len(), 5, "4 round-1 blocks and the leader");
    assert_eq!(sub.blocks.last().unwrap().reference(), leader.reference());
    let keys: Vec<_> = sub.blocks.iter().map(|b| b.order_key()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    // Median of the parents' timestamps (101..=104 -> index 2 = 102).
    assert_eq!(sub.timestamp_ms, 102);
    // A later leader only gets what is not yet ordered.
    let l3 = blocks
        .iter()
        .find(|b| b.round() == Round(3) && b.author() == ValidatorIndex(3))
        .unwrap();
    let sub = lin.commit(&d, l3, Round(0));
    assert_eq!(sub.index, 1);
    assert_eq!(
        sub.blocks.len(),
        4,
        "three other round-2 blocks and the leader"
    );
    assert!(sub.timestamp_ms >= 102);
}

#[test]
fn text_form_errors() {
    let (c, keys) = Committee::new_for_test(Epoch(0), 4, 1);
    assert!(parse_dag(&c, &keys, "R1: *\nR2: A->[Z1]").is_err());
    assert!(parse_dag(&c, &keys, "X1: *").is_err());
    assert!(parse_dag(&c, &keys, "R2: A->[B1]").is_err());
}
