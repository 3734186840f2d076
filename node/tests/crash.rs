//! Crash safety (docs/storage.md, "Crash safety"): one of four validators
//! is SIGKILLed at random moments while commit-mode load flows through it
//! and through a peer, and restarted on the same data directory, many
//! times (and, in some cycles, once more while it catches up). After every
//! restart:
//!
//! * the commit the victim recovers from its own disk, before it fetches
//!   anything from its peers, is at least the highest it acknowledged;
//! * every transaction a client saw acknowledged (`Committed` with commit
//!   index i: the commit's write batch returned with the WAL on) is
//!   `committed` at exactly index i on the victim and on a peer;
//! * the victim serves `/health`, reaches the others' commit index and its
//!   root agrees with theirs.
//!
//! At the end `velox replay` recomputes every stored root of the victim.
//!
//! The kill moments come from a seeded RNG: the seed is printed, and
//! `VELOX_CRASH_SEED=<seed>` reruns the same schedule (the processes'
//! own timing still varies). `VELOX_CRASH_CYCLES` overrides the number of
//! kills (default [`CYCLES`]).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::net::{assert_same_history, index_of, Net};
use common::{dev, id, plain, transfer, EXE};
use ed25519_dalek::SigningKey;
use rand::{Rng, SeedableRng};
use velox_exec::TxDigest;
use velox_net::{AckMode, IngressClient, Status};
use velox_node::devnet::{roots_agree, stop_child, wait_commit_index};

/// Kills (and restarts) of the victim; the issue asks for at least 20.
const CYCLES: usize = 20;
/// The validator that is killed.
const VICTIM: usize = 3;
/// Receives load too, and keeps committing while the victim is down, so the
/// victim has commits to catch up on.
const PEER_LOADED: usize = 1;
/// Answers the per-cycle checks and the nonce look-ups: never killed, never
/// loaded directly.
const PEER_CHECKED: usize = 2;
/// Senders per lane (disjoint between lanes, so each sender's nonces go to
/// one validator in order).
const LANE_SENDERS: u32 = 12;
/// Offered load, transactions per second, into the victim and the peer.
const VICTIM_RATE_TPS: u64 = 300;
const PEER_RATE_TPS: u64 = 150;
/// The victim is killed this long after its load started (uniform).
const KILL_AFTER_MS: std::ops::Range<u64> = 150..2_500;
/// The peer's load goes on this long after the kill.
const PEER_LOAD_AFTER_KILL_MS: u64 = 400;
/// How long the peer lane waits for outstanding answers after sending stops.
const PEER_DRAIN: Duration = Duration::from_secs(5);
/// How long the restarted victim may take to reach the others' index.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a lane sends what is due, and the most per stream.
const LANE_TICK: Duration = Duration::from_millis(20);
const LANE_STREAM_TXS_MAX: usize = 64;

/// A commit acknowledgement a client received.
#[derive(Clone, Copy, Debug)]
struct Ack {
    digest: TxDigest,
    index: u64,
    /// The validator that answered.
    via: usize,
    cycle: usize,
}

/// One client lane: signed transfers among `keys` into one validator, in
/// commit mode, at `rate_tps`, until `stop`.
struct Lane {
    via: usize,
    ingress: SocketAddr,
    cert: Vec<u8>,
    keys: Vec<SigningKey>,
    /// Next nonce of each key (resynchronised from a live validator before
    /// every cycle: after a kill, unanswered transactions may or may not
    /// have committed).
    nonces: Vec<u64>,
    rate_tps: u64,
    /// Makes every signed transfer distinct (the amount), so a resent nonce
    /// never repeats an earlier digest.
    amount_next: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct LaneReport {
    sent: u64,
    committed: u64,
    rejected: u64,
    /// Streams that ended in an error (the victim's are abandoned at the
    /// kill instead).
    stream_errors: u64,
}

impl Lane {
    fn new(net: &Net, via: usize, first_key: u32, rate_tps: u64) -> Lane {
        let keys: Vec<SigningKey> = (first_key..first_key + LANE_SENDERS).map(dev).collect();
        let p = &net.nodes[via];
        Lane {
            via,
            ingress: p.ingress,
            cert: std::fs::read(velox_node::devnet::node_cert(&p.dir)).unwrap(),
            nonces: vec![0; keys.len()],
            keys,
            rate_tps,
            amount_next: 1,
        }
    }

    /// Each sender's committed nonce as `api` has it.
    fn resync(&mut self, api: SocketAddr) {
        for (k, n) in self.keys.iter().zip(self.nonces.iter_mut()) {
            let v =
                velox_node::httpc::get_json(api, &format!("/account/{}", id(k).to_hex())).unwrap();
            *n = v["nonce"].as_u64().expect("nonce");
        }
    }

    /// Sends until `stop`, then waits up to `drain` for outstanding answers
    /// (zero: abandon them). Every `Committed` answer is pushed to `acks`
    /// the moment it arrives.
    fn run(
        &mut self,
        cycle: usize,
        stop: &AtomicBool,
        drain: Duration,
        acks: &Arc<Mutex<Vec<Ack>>>,
    ) -> LaneReport {
        let rt = common::rt();
        let local = tokio::task::LocalSet::new();
        let report = Rc::new(std::cell::RefCell::new(LaneReport::default()));
        local.block_on(&rt, async {
            let ep = velox_net::ingress::client_endpoint(Some(self.cert.clone())).unwrap();
            let client = Rc::new(IngressClient::connect(&ep, self.ingress).await.unwrap());
            // Streams open in submission order (one sender's nonces span
            // several streams; see `submit_streaming_gated`).
            let order = Arc::new(tokio::sync::Mutex::new(()));
            let k = self.keys.len();
            let mut next_sender = 0usize;
            let mut tasks = Vec::new();
            let start = Instant::now();
            let mut tick = tokio::time::interval(LANE_TICK);
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let due = (self.rate_tps as f64 * start.elapsed().as_secs_f64()) as u64;
                while sent < due {
                    let n = ((due - sent) as usize).min(LANE_STREAM_TXS_MAX);
                    let txs: Vec<Vec<u8>> = (0..n)
                        .map(|_| {
                            let a = next_sender % k;
                            next_sender += 1;
                            let to = id(&self.keys[(a + 1) % k]);
                            let t = transfer(&self.keys[a], self.nonces[a], to, self.amount_next);
                            self.nonces[a] += 1;
                            self.amount_next += 1;
                            t
                        })
                        .collect();
                    sent += n as u64;
                    let (client, order, report, acks) =
                        (client.clone(), order.clone(), report.clone(), acks.clone());
                    let via = self.via;
                    tasks.push(tokio::task::spawn_local(async move {
                        let refs: Vec<&[u8]> = txs.iter().map(|t| t.as_slice()).collect();
                        let gate = order.lock_owned().await;
                        let r = client
                            .submit_streaming_gated(gate, AckMode::Commit, &refs, |r| {
                                match r.status {
                                    Status::Committed => {
                                        acks.lock().unwrap().push(Ack {
                                            digest: r.digest,
                                            index: r.commit_index,
                                            via,
                                            cycle,
                                        });
                                        report.borrow_mut().committed += 1;
                                    }
                                    Status::Rejected => report.borrow_mut().rejected += 1,
                                    Status::Accepted => {}
                                }
                            })
                            .await;
                        if r.is_err() {
                            report.borrow_mut().stream_errors += 1;
                        }
                    }));
                }
            }
            report.borrow_mut().sent = sent;
            let deadline = tokio::time::Instant::now() + drain;
            for t in tasks {
                if tokio::time::timeout_at(deadline, t).await.is_err() {
                    break;
                }
            }
            client.connection().close(0u32.into(), b"cycle over");
        });
        let r = *report.borrow();
        r
    }
}

/// The commit index a validator recovered from its database at its last
/// start (before it fetched anything from its peers): the
/// `consensus core ready` line of its log.
fn recovered_index(log: &str) -> u64 {
    let line = plain(log)
        .lines()
        .rev()
        .find(|l| l.contains("consensus core ready"))
        .expect("no start in the log")
        .to_string();
    let at = line
        .find("commit_index=")
        .expect("commit_index in the start line")
        + 13;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|d| d.parse().ok())
        .expect("a number after commit_index=")
}

/// `GET /tx/{digest}` on `api` says `committed` at `index`.
fn check_committed_at(api: SocketAddr, who: &str, a: &Ack, seed: u64) {
    let v = velox_node::httpc::get_json(api, &format!("/tx/{}", a.digest.to_hex())).unwrap();
    assert!(
        v["status"] == "committed" && v["commit_index"].as_u64() == Some(a.index),
        "seed {seed}: transaction {} acknowledged by v{} at commit {} in cycle {} is not \
         committed there on {who}: {v}",
        a.digest.to_hex(),
        a.via,
        a.index,
        a.cycle
    );
}

fn seed() -> u64 {
    match std::env::var("VELOX_CRASH_SEED") {
        Ok(s) => s.parse().expect("VELOX_CRASH_SEED must be a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

fn percentile_ms(sorted: &[Duration], q: f64) -> u128 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize].as_millis()
}

#[test]
fn acknowledged_commits_survive_repeated_sigkill_under_load() {
    let seed = seed();
    let cycles: usize = std::env::var("VELOX_CRASH_CYCLES")
        .map(|s| s.parse().expect("VELOX_CRASH_CYCLES must be a number"))
        .unwrap_or(CYCLES);
    eprintln!("crash: seed {seed} (rerun with VELOX_CRASH_SEED={seed}), {cycles} cycles");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let started = Instant::now();

    // Everything is kept (every acknowledged transaction stays in the
    // index; replay runs from genesis); snapshots every 200 commits, so
    // some kills land while one is being written.
    let extra = "\n[storage]\nretention_commits = 0\nsnapshot_every_commits = 200\n";
    let mut net = Net::prepare_with(4, 2 * LANE_SENDERS, extra);
    for i in 0..4 {
        net.start(i);
    }
    let all = net.apis(&[0, 1, 2, 3]);
    let others = net.apis(&[0, 1, 2]);
    assert!(
        wait_commit_index(&all, 1, Duration::from_secs(60)),
        "no commit on every validator; log of v0:\n{}",
        net.log(0)
    );
    let checked = net.nodes[PEER_CHECKED].api;
    let victim_api = net.nodes[VICTIM].api;
    let mut victim_lane = Lane::new(&net, VICTIM, 0, VICTIM_RATE_TPS);
    let mut peer_lane = Lane::new(&net, PEER_LOADED, LANE_SENDERS, PEER_RATE_TPS);
    let acks: Arc<Mutex<Vec<Ack>>> = Default::default();
    let mut checked_upto = 0usize;
    let mut kills_in_catch_up = 0usize;
    let mut restarts: Vec<Duration> = Vec::new();
    let mut catch_ups: Vec<Duration> = Vec::new();
    let (mut victim_total, mut peer_total) = (LaneReport::default(), LaneReport::default());

    for cycle in 0..cycles {
        victim_lane.resync(checked);
        peer_lane.resync(checked);
        // The node writes its certificate at start: read it after each.
        victim_lane.cert =
            std::fs::read(velox_node::devnet::node_cert(&net.nodes[VICTIM].dir)).unwrap();
        let kill_after = Duration::from_millis(rng.gen_range(KILL_AFTER_MS));
        let (stop_victim, stop_peer) = (AtomicBool::new(false), AtomicBool::new(false));
        let (index_at_kill, v, p) = std::thread::scope(|s| {
            let v = s.spawn(|| victim_lane.run(cycle, &stop_victim, Duration::ZERO, &acks));
            let p = s.spawn(|| peer_lane.run(cycle, &stop_peer, PEER_DRAIN, &acks));
            std::thread::sleep(kill_after);
            let index_at_kill = index_of(victim_api);
            net.sigkill(VICTIM);
            stop_victim.store(true, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(PEER_LOAD_AFTER_KILL_MS));
            stop_peer.store(true, Ordering::Relaxed);
            (index_at_kill, v.join().unwrap(), p.join().unwrap())
        });
        for (t, r) in [(&mut victim_total, v), (&mut peer_total, p)] {
            t.sent += r.sent;
            t.committed += r.committed;
            t.rejected += r.rejected;
            t.stream_errors += r.stream_errors;
        }

        // Restart on the same directory: it must serve /health and reach
        // the others' commit index. Some cycles kill it once more while it
        // catches up (commit writes back to back).
        if rng.gen_ratio(1, 4) {
            net.start(VICTIM);
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..300)));
            net.sigkill(VICTIM);
            kills_in_catch_up += 1;
        }
        let t = Instant::now();
        net.start(VICTIM);
        let restart = t.elapsed();
        // What it acknowledged before the kill was durable: the commit it
        // recovered from disk, before fetching anything, is at least the
        // highest it acknowledged. (Caught up, a lost commit would be
        // re-fetched and hide the loss from the checks below.)
        let recovered = recovered_index(&net.log(VICTIM));
        let victim_top_ack = acks.lock().unwrap()[checked_upto..]
            .iter()
            .filter(|a| a.via == VICTIM)
            .map(|a| a.index)
            .max()
            .unwrap_or(0);
        assert!(
            recovered >= victim_top_ack,
            "seed {seed}: cycle {cycle}: the victim acknowledged commit {victim_top_ack} \
             before it was killed but recovered only up to commit {recovered}"
        );
        let top = others.iter().map(|a| index_of(*a)).max().unwrap();
        assert!(
            wait_commit_index(&all, top, CATCH_UP_TIMEOUT),
            "seed {seed}: cycle {cycle}: the victim did not catch up to {top} (at {}); its \
             log:\n{}",
            index_of(victim_api),
            net.log(VICTIM)
        );
        let catch_up = t.elapsed();
        restarts.push(restart);
        catch_ups.push(catch_up);

        // Every acknowledgement so far is in the victim's transaction index
        // at its commit; this cycle's also on a peer.
        let acked = acks.lock().unwrap().clone();
        let top_ack = acked.iter().map(|a| a.index).max().unwrap_or(0);
        assert!(wait_commit_index(&all, top_ack, CATCH_UP_TIMEOUT));
        for a in &acked[checked_upto..] {
            check_committed_at(victim_api, "the restarted victim", a, seed);
            check_committed_at(checked, "a peer", a, seed);
        }
        checked_upto = acked.len();
        let (agree, at, roots) = roots_agree(&all).unwrap();
        assert!(
            agree,
            "seed {seed}: cycle {cycle}: roots differ at commit {at}: {roots:?}"
        );
        eprintln!(
            "crash: cycle {cycle:>2}: killed {kill_after:?} into the load at commit \
             ~{index_at_kill}; acks victim {} (highest {victim_top_ack}) peer {}; recovered \
             commit {recovered} from disk; healthy after {restart:?}, caught up to {top} after \
             {catch_up:?}; roots agree at {at}",
            v.committed, p.committed
        );
    }

    // Once more over everything acknowledged, on the victim after its last
    // restart (a later crash must not lose an earlier commit).
    let acked = acks.lock().unwrap().clone();
    for a in &acked {
        check_committed_at(victim_api, "the victim at the end", a, seed);
    }
    let at = assert_same_history(&all);
    let log = plain(&net.log(VICTIM));
    assert!(!log.contains("panicked"), "the victim panicked:\n{log}");
    for i in 0..3 {
        assert!(!net.log(i).contains("panicked"), "v{i} panicked");
    }

    // Stopped cleanly, the victim's whole history replays: every stored
    // root is recomputed from its stored transactions.
    stop_child(net.children[VICTIM].as_mut().unwrap());
    net.children[VICTIM] = None;
    let data: PathBuf = net.nodes[VICTIM].dir.join("data");
    let t = Instant::now();
    let out = std::process::Command::new(EXE)
        .args(["replay", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "seed {seed}: replay of the victim failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("replay OK: commits 0..="), "{stdout}");
    let replay = t.elapsed();
    // The others keep agreeing without it.
    let before = others.iter().map(|a| index_of(*a)).max().unwrap();
    assert!(wait_commit_index(
        &others,
        before + 5,
        Duration::from_secs(30)
    ));
    let (agree, at_end, roots) = roots_agree(&others).unwrap();
    assert!(agree, "roots differ at commit {at_end}: {roots:?}");

    restarts.sort();
    catch_ups.sort();
    let victim_acks = acked.iter().filter(|a| a.via == VICTIM).count();
    eprintln!(
        "crash: seed {seed}: {cycles} kills under load and {kills_in_catch_up} during catch-up \
         in {:.0?}; acknowledged {} transactions ({} by the \
         victim, {} by v{PEER_LOADED}), all committed at their index after every restart; \
         victim lane sent {} (rejected {}, unanswered at the kills {}), peer lane sent {} \
         (rejected {}, unanswered {}); \
         restart to /health p50 {} ms max {} ms; to caught up p50 {} ms max {} ms; same \
         history up to {at}; replay of {} in {replay:.1?}: {}",
        started.elapsed(),
        acked.len(),
        victim_acks,
        acked.len() - victim_acks,
        victim_total.sent,
        victim_total.rejected,
        victim_total.sent - victim_total.committed - victim_total.rejected,
        peer_total.sent,
        peer_total.rejected,
        peer_total.sent - peer_total.committed - peer_total.rejected,
        percentile_ms(&restarts, 0.5),
        percentile_ms(&restarts, 1.0),
        percentile_ms(&catch_ups, 0.5),
        percentile_ms(&catch_ups, 1.0),
        data.display(),
        stdout.trim()
    );
    assert_eq!(
        peer_total.stream_errors, 0,
        "the live peer's streams failed"
    );
    assert!(
        victim_acks > 0 && acked.len() > victim_acks,
        "no load was acknowledged: {victim_total:?} {peer_total:?}"
    );
}
