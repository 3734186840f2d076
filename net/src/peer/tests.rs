//! In-process networks on 127.0.0.1. Every test runs under one overall
//! deadline and every wait has its own, so a failure ends instead of hanging.

use super::*;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use std::future::Future;
use std::net::UdpSocket;

/// Whole-test bound: generous for a loaded 2-core machine.
const TEST_DEADLINE: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(15);

async fn bounded<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_DEADLINE, f)
        .await
        .expect("test exceeded its deadline");
}

fn key(seed: u8) -> (Vec<u8>, [u8; 32]) {
    let sk = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    (
        sk.to_pkcs8_der().unwrap().as_bytes().to_vec(),
        sk.verifying_key().to_bytes(),
    )
}

fn bind() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").unwrap()
}

/// A committee of `n` with fresh loopback sockets: (keys, infos, sockets).
fn committee(n: u8, seed: u8) -> (Vec<Vec<u8>>, Vec<PeerInfo>, Vec<UdpSocket>) {
    let mut pkcs8s = Vec::new();
    let mut infos = Vec::new();
    let mut sockets = Vec::new();
    for i in 0..n {
        let (pkcs8, public_key) = key(seed + i);
        let socket = bind();
        infos.push(PeerInfo {
            index: i as u32,
            public_key,
            addr: socket.local_addr().unwrap(),
        });
        pkcs8s.push(pkcs8);
        sockets.push(socket);
    }
    (pkcs8s, infos, sockets)
}

fn config(me: u32, committee: &[PeerInfo], pkcs8_der: &[u8]) -> PeerConfig {
    PeerConfig {
        me,
        committee: committee.to_vec(),
        pkcs8_der: pkcs8_der.to_vec(),
        heartbeat_ms: 100,
        dead_after_ms: 1_000,
        reconnect_min_ms: 50,
        reconnect_max_ms: 400,
        outbound_queue_max: 1024,
        inbound_msgs_per_peer_max: 1024,
        inbound_bytes_per_peer_max: 32 << 20,
        outbound_bytes_per_peer_max: 64 << 20,
        limits: WireLimits::default(),
    }
}

struct Node {
    handle: PeerHandle,
    inbound: Arc<Ring<Inbound>>,
    outbound: Arc<Ring<Outbound>>,
    task: tokio::task::JoinHandle<()>,
}

impl Node {
    fn start(cfg: PeerConfig, socket: UdpSocket) -> Node {
        let net = PeerNetwork::new(cfg, socket).unwrap();
        let handle = net.handle();
        let inbound = Ring::new("peer-in", 4096);
        let outbound = Ring::new("peer-out", 4096);
        let task = tokio::spawn(net.run(inbound.clone(), outbound.clone()));
        Node {
            handle,
            inbound,
            outbound,
            task,
        }
    }

    fn send(&self, to: Dest, msg: PeerMessage) {
        self.outbound
            .try_push(Outbound { to, msg })
            .expect("test outbound ring has room");
    }

    fn counter(&self, f: impl Fn(&PeerCounters) -> &AtomicU64) -> u64 {
        f(&self.handle.counters()).load(Ordering::Relaxed)
    }

    /// Receives exactly `n` messages (fails after `WAIT`).
    async fn recv(&self, n: usize) -> Vec<Inbound> {
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            match self.inbound.pop_timeout(WAIT).await {
                Ok(Some(m)) => got.push(m),
                other => panic!(
                    "expected {n} messages, got {} then {:?}",
                    got.len(),
                    other.map(|_| ())
                ),
            }
        }
        got
    }

    /// Asserts nothing arrives for `d`.
    async fn silent_for(&self, d: Duration) {
        if let Ok(m) = self.inbound.pop_timeout(d).await {
            panic!("unexpected inbound message {m:?}");
        }
    }

    async fn stop(self) {
        self.outbound.close();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("network stops once its outbound ring closes")
            .unwrap();
    }
}

async fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn four_nodes_exchange_broadcast_and_unicast() {
    bounded(async {
        const PER: u8 = 20;
        let (keys, infos, sockets) = committee(4, 10);
        let nodes: Vec<Node> = sockets
            .into_iter()
            .enumerate()
            .map(|(i, s)| Node::start(config(i as u32, &infos, &keys[i]), s))
            .collect();
        for (i, n) in nodes.iter().enumerate() {
            n.handle.set_heartbeat(100 + i as u64, 10 + i as u64);
            for k in 0..PER {
                n.send(Dest::All, PeerMessage::Block(vec![i as u8, k]));
                n.send(
                    Dest::One(((i + 1) % 4) as u32),
                    PeerMessage::Batch(vec![i as u8, k, 0xba]),
                );
            }
        }
        for (i, n) in nodes.iter().enumerate() {
            let got = n.recv(3 * PER as usize + PER as usize).await;
            for j in 0..4u32 {
                let from_j: Vec<&PeerMessage> =
                    got.iter().filter(|m| m.from == j).map(|m| &m.msg).collect();
                let mut want: Vec<PeerMessage> = Vec::new();
                if j as usize != i {
                    for k in 0..PER {
                        want.push(PeerMessage::Block(vec![j as u8, k]));
                    }
                }
                if (j as usize + 1) % 4 == i {
                    for k in 0..PER {
                        want.push(PeerMessage::Batch(vec![j as u8, k, 0xba]));
                    }
                }
                // One stream per sender: its messages arrive in order.
                let blocks: Vec<_> = from_j
                    .iter()
                    .filter(|m| matches!(m, PeerMessage::Block(_)))
                    .collect();
                let batches: Vec<_> = from_j
                    .iter()
                    .filter(|m| matches!(m, PeerMessage::Batch(_)))
                    .collect();
                assert_eq!(
                    blocks.len() + batches.len(),
                    want.len(),
                    "node {i} from {j}"
                );
                for (a, b) in blocks.iter().chain(&batches).zip(&want) {
                    assert_eq!(**a, b, "node {i} from {j}");
                }
            }
            n.silent_for(Duration::from_millis(200)).await;
        }
        for (i, n) in nodes.iter().enumerate() {
            let h = n.handle.clone();
            wait_until("every peer is alive and its heights known", || {
                h.alive().iter().all(|a| *a)
                    && h.peer_heights() == (0..4u64).map(|j| (100 + j, 10 + j)).collect::<Vec<_>>()
            })
            .await;
            assert_eq!(
                n.counter(|c| &c.handshakes_rejected_unknown_key),
                0,
                "node {i}"
            );
            assert_eq!(
                n.counter(|c| &c.handshakes_rejected_wrong_key),
                0,
                "node {i}"
            );
            assert_eq!(n.counter(|c| &c.frames_dropped_queue_full), 0);
            assert!(n.counter(|c| &c.frames_in) >= 80);
            assert!(n.counter(|c| &c.frames_out) >= 80);
            assert_eq!(
                n.handle
                    .counters()
                    .snapshot()
                    .frames_rejected
                    .iter()
                    .map(|x| x.1)
                    .sum::<u64>(),
                0
            );
        }
        for n in nodes {
            n.stop().await;
        }
    })
    .await;
}

#[tokio::test]
async fn key_outside_the_committee_cannot_connect() {
    bounded(async {
        let (keys, infos, mut sockets) = committee(3, 30);
        // Member 2 never runs; its socket stays bound and unread.
        let _absent = sockets.pop().unwrap();
        let node1 = Node::start(config(1, &infos, &keys[1]), sockets.pop().unwrap());
        let node0 = Node::start(config(0, &infos, &keys[0]), sockets.pop().unwrap());
        // The outsider believes it is member 2, with a key nobody else lists.
        let (out_key, out_pub) = key(99);
        let out_socket = bind();
        let mut view = infos.clone();
        view[2] = PeerInfo {
            index: 2,
            public_key: out_pub,
            addr: out_socket.local_addr().unwrap(),
        };
        let outsider = Node::start(config(2, &view, &out_key), out_socket);
        for k in 0..5 {
            outsider.send(Dest::All, PeerMessage::Block(vec![0xee, k]));
        }
        wait_until("both members refused the outsider's key", || {
            node0.counter(|c| &c.handshakes_rejected_unknown_key) >= 1
                && node1.counter(|c| &c.handshakes_rejected_unknown_key) >= 1
        })
        .await;
        // Members still talk to each other, and only to each other.
        node1.send(Dest::One(0), PeerMessage::BatchAck([1; 32]));
        let got = node0.recv(1).await;
        assert_eq!(got, vec![Inbound::new(1, PeerMessage::BatchAck([1; 32]))]);
        node0.silent_for(Duration::from_millis(1_500)).await;
        node1.silent_for(Duration::from_millis(200)).await;
        assert!(!node0.handle.alive()[2] && !node1.handle.alive()[2]);
        for n in [node0, node1, outsider] {
            n.stop().await;
        }
    })
    .await;
}

#[tokio::test]
async fn member_with_the_wrong_key_is_refused_both_ways() {
    bounded(async {
        let (keys, infos, mut sockets) = committee(3, 50);
        // An impostor holds member 2's address but not member 2's key.
        let impostor_socket = sockets.pop().unwrap();
        let node1 = Node::start(config(1, &infos, &keys[1]), sockets.pop().unwrap());
        let node0 = Node::start(config(0, &infos, &keys[0]), sockets.pop().unwrap());
        let (bad_key, bad_pub) = key(77);
        let mut view = infos.clone();
        view[2].public_key = bad_pub;
        let impostor = Node::start(config(2, &view, &bad_key), impostor_socket);
        impostor.send(Dest::All, PeerMessage::Batch(vec![6; 6]));
        node0.send(Dest::One(2), PeerMessage::Batch(vec![1]));
        wait_until(
            "members refused the impostor as server and as client",
            || {
                [&node0, &node1].iter().all(|n| {
                    n.counter(|c| &c.handshakes_rejected_wrong_key) >= 1
                        && n.counter(|c| &c.handshakes_rejected_unknown_key) >= 1
                })
            },
        )
        .await;
        node0.silent_for(Duration::from_millis(1_000)).await;
        node1.silent_for(Duration::from_millis(200)).await;
        impostor.silent_for(Duration::from_millis(200)).await;
        assert!(!node0.handle.alive()[2] && !node1.handle.alive()[2]);
        for n in [node0, node1, impostor] {
            n.stop().await;
        }
    })
    .await;
}

/// A raw connection authenticated as member `as_member`, dialing `to`.
async fn raw_connection(
    endpoint: &quinn::Endpoint,
    pkcs8: &[u8],
    to: &PeerInfo,
    cfg: &PeerConfig,
) -> quinn::Connection {
    let cert = crate::tls::self_signed_cert(pkcs8).unwrap();
    let client = tls::client_config(
        &cert,
        pkcs8,
        to.public_key,
        Arc::new(PeerCounters::default()),
        transport(cfg, false),
    )
    .unwrap();
    endpoint
        .connect_with(client, to.addr, "velox")
        .unwrap()
        .await
        .unwrap()
}

/// Writes `bytes` on a fresh stream and waits for the node to close the
/// connection with the bad-frame code.
async fn send_raw_and_expect_close(conn: &quinn::Connection, bytes: &[u8]) -> String {
    let mut s = conn.open_uni().await.unwrap();
    // The node may close before everything is written; that is the point.
    let _ = s.write_all(bytes).await;
    let _ = s.finish();
    let e = tokio::time::timeout(WAIT, conn.closed())
        .await
        .expect("node closes a connection that sent a bad frame");
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code, quinn::VarInt::from_u32(CLOSE_BAD_FRAME));
            String::from_utf8(c.reason.to_vec()).unwrap()
        }
        other => panic!("unexpected close: {other}"),
    }
}

/// Issue 17, fault 4: one inbound connection per member. A member that
/// opens more (a flood, or a restart) keeps only its newest; the older are
/// closed with the "replaced" code.
#[tokio::test]
async fn a_member_keeps_one_inbound_connection() {
    bounded(async {
        let (keys, infos, mut sockets) = committee(3, 71);
        drop(sockets.pop());
        drop(sockets.pop());
        let cfg0 = config(0, &infos, &keys[0]);
        let node0 = Node::start(cfg0.clone(), sockets.pop().unwrap());
        let raw = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut conns = Vec::new();
        for _ in 0..5 {
            let conn = raw_connection(&raw, &keys[2], &infos[0], &cfg0).await;
            // Established on the node's side once it reads a frame.
            let mut s = conn.open_uni().await.unwrap();
            s.write_all(&encode_frame(&PeerMessage::Block(vec![7])))
                .await
                .unwrap();
            s.finish().unwrap();
            node0.recv(1).await;
            conns.push(conn);
        }
        for old in &conns[..4] {
            let e = tokio::time::timeout(WAIT, old.closed())
                .await
                .expect("the older connection is closed");
            match e {
                quinn::ConnectionError::ApplicationClosed(c) => {
                    assert_eq!(c.error_code, quinn::VarInt::from_u32(CLOSE_REPLACED));
                }
                other => panic!("unexpected close: {other}"),
            }
        }
        assert!(conns[4].close_reason().is_none(), "the newest stays open");
        assert_eq!(node0.counter(|c| &c.connections_replaced), 4);
        raw.close(0u32.into(), b"done");
        node0.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bad_frames_are_counted_and_close_only_that_connection() {
    bounded(async {
        let (keys, infos, mut sockets) = committee(3, 70);
        // Member 2 speaks raw QUIC with its real key; its socket is a client.
        drop(sockets.pop());
        let node1 = Node::start(config(1, &infos, &keys[1]), sockets.pop().unwrap());
        let mut cfg0 = config(0, &infos, &keys[0]);
        cfg0.limits.refs_per_request_max = 4;
        let node0 = Node::start(cfg0.clone(), sockets.pop().unwrap());
        let raw = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();

        // A good frame then garbage: the good one is delivered, from 2.
        let conn = raw_connection(&raw, &keys[2], &infos[0], &cfg0).await;
        let mut wire = encode_frame(&PeerMessage::Block(vec![42]));
        wire.extend_from_slice(&16u32.to_le_bytes());
        wire.extend_from_slice(&[0xff; 16]);
        assert_eq!(send_raw_and_expect_close(&conn, &wire).await, "malformed");
        assert_eq!(
            node0.recv(1).await,
            vec![Inbound::new(2, PeerMessage::Block(vec![42]))]
        );

        // An oversized length prefix is refused before any body is read.
        let conn = raw_connection(&raw, &keys[2], &infos[0], &cfg0).await;
        let too_big = (cfg0.limits.frame_bytes_max as u32 + 1).to_le_bytes();
        assert_eq!(
            send_raw_and_expect_close(&conn, &too_big).await,
            "frame_too_large"
        );

        // A well-formed archive over a limit.
        let conn = raw_connection(&raw, &keys[2], &infos[0], &cfg0).await;
        let wire = encode_frame(&PeerMessage::BatchRequest(vec![[0; 32]; 5]));
        assert_eq!(
            send_raw_and_expect_close(&conn, &wire).await,
            "too_many_refs"
        );

        // A stream that ends inside a frame.
        let conn = raw_connection(&raw, &keys[2], &infos[0], &cfg0).await;
        let wire = encode_frame(&PeerMessage::Block(vec![1; 100]));
        assert_eq!(
            send_raw_and_expect_close(&conn, &wire[..50]).await,
            "truncated"
        );

        let c = node0.handle.counters();
        for reason in ["malformed", "frame_too_large", "too_many_refs", "truncated"] {
            assert_eq!(c.rejected(reason), 1, "{reason}");
        }
        // The victim keeps serving the others.
        node1.send(Dest::One(0), PeerMessage::Block(vec![1, 2, 3]));
        assert_eq!(
            node0.recv(1).await,
            vec![Inbound::new(1, PeerMessage::Block(vec![1, 2, 3]))]
        );
        node0.send(Dest::One(1), PeerMessage::Block(vec![3, 2, 1]));
        assert_eq!(node1.recv(1).await[0].from, 0);
        raw.close(0u32.into(), b"done");
        for n in [node0, node1] {
            n.stop().await;
        }
    })
    .await;
}

#[tokio::test]
async fn stopped_peer_is_marked_dead_and_reconnects_when_back() {
    bounded(async {
        let (keys, infos, mut sockets) = committee(2, 90);
        let node1 = Node::start(config(1, &infos, &keys[1]), sockets.pop().unwrap());
        let node0 = Node::start(config(0, &infos, &keys[0]), sockets.pop().unwrap());
        node1.handle.set_heartbeat(5, 4);
        node0.send(Dest::All, PeerMessage::Block(vec![1]));
        assert_eq!(node1.recv(1).await[0].from, 0);
        let h0 = node0.handle.clone();
        wait_until("node 0 sees node 1 alive at its height", || {
            h0.alive()[1] && h0.peer_heights()[1] == (5, 4)
        })
        .await;

        let stopped = Instant::now();
        node1.stop().await;
        wait_until("node 0 marks node 1 dead", || !h0.alive()[1]).await;
        // Its last heartbeat left at most `heartbeat_ms` before the stop.
        assert!(stopped.elapsed() >= Duration::from_millis(1_000 - 100 - 50));
        wait_until("the dead event is counted", || {
            node0.counter(|c| &c.peers_dead_events) == 1 && node0.counter(|c| &c.alive) == 0
        })
        .await;

        // Same key, same address: a new network.
        let deadline = Instant::now() + WAIT;
        let socket = loop {
            match UdpSocket::bind(infos[1].addr) {
                Ok(s) => break s,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "rebinding {}: {e}",
                        infos[1].addr
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        let node1 = Node::start(config(1, &infos, &keys[1]), socket);
        // A frame written into the dying connection may be lost (consensus
        // retransmits); resend until one arrives.
        let got = loop {
            node0.send(Dest::One(1), PeerMessage::Block(vec![2]));
            if let Ok(Some(m)) = node1.inbound.pop_timeout(Duration::from_millis(300)).await {
                break m;
            }
        };
        assert_eq!(got, Inbound::new(0, PeerMessage::Block(vec![2])));
        node1.send(Dest::One(0), PeerMessage::Block(vec![3]));
        let back = node0.recv(1).await;
        assert_eq!(back[0].from, 1);
        assert_eq!(back[0].msg, PeerMessage::Block(vec![3]));
        wait_until("node 1 alive again", || h0.alive()[1]).await;
        assert!(node0.counter(|c| &c.reconnects) >= 1);
        assert!(node0.counter(|c| &c.connections_closed) >= 1);
        for n in [node0, node1] {
            n.stop().await;
        }
    })
    .await;
}

/// Node 0 of a two-member committee whose node 1 is not running yet: node
/// 0 cannot connect, so its queue to node 1 only fills.
struct AbsentPeer {
    node0: Node,
    node1_config: PeerConfig,
    socket1: UdpSocket,
}

impl AbsentPeer {
    fn start(seed: u8, tweak: impl FnOnce(&mut PeerConfig)) -> AbsentPeer {
        let (keys, infos, mut sockets) = committee(2, seed);
        let socket1 = sockets.pop().unwrap();
        let mut cfg0 = config(0, &infos, &keys[0]);
        tweak(&mut cfg0);
        AbsentPeer {
            node0: Node::start(cfg0, sockets.pop().unwrap()),
            node1_config: config(1, &infos, &keys[1]),
            socket1,
        }
    }

    /// Starts node 1: exactly `want` arrive from node 0, in order, then
    /// nothing; both stop.
    async fn receives_only(self, want: Vec<PeerMessage>) {
        let node1 = Node::start(self.node1_config, self.socket1);
        let got = node1.recv(want.len()).await;
        let want: Vec<Inbound> = want.into_iter().map(|m| Inbound::new(0, m)).collect();
        assert_eq!(got, want);
        node1.silent_for(Duration::from_millis(300)).await;
        for n in [self.node0, node1] {
            n.stop().await;
        }
    }
}

#[tokio::test]
async fn full_outbound_queue_drops_newest_and_counts() {
    bounded(async {
        let absent = AbsentPeer::start(110, |c| c.outbound_queue_max = 4);
        let node0 = &absent.node0;
        for k in 0..10u8 {
            node0.send(Dest::One(1), PeerMessage::Block(vec![k]));
        }
        node0.send(Dest::One(7), PeerMessage::Block(vec![0]));
        node0.send(Dest::One(0), PeerMessage::Block(vec![0]));
        wait_until("the pump drained the outbound ring", || {
            node0.outbound.is_empty() && node0.counter(|c| &c.frames_dropped_unknown_dest) == 2
        })
        .await;
        assert_eq!(node0.counter(|c| &c.frames_dropped_queue_full), 6);

        absent
            .receives_only((0..4u8).map(|k| PeerMessage::Block(vec![k])).collect())
            .await;
    })
    .await;
}

#[tokio::test]
async fn oversized_outbound_is_dropped_not_sent() {
    bounded(async {
        let (keys, infos, mut sockets) = committee(2, 130);
        let mut cfg0 = config(0, &infos, &keys[0]);
        cfg0.limits.element_bytes_max = 16;
        let mut cfg1 = config(1, &infos, &keys[1]);
        cfg1.limits.element_bytes_max = 16;
        let node1 = Node::start(cfg1, sockets.pop().unwrap());
        let node0 = Node::start(cfg0, sockets.pop().unwrap());
        node0.send(Dest::All, PeerMessage::Block(vec![0; 17]));
        node0.send(Dest::All, PeerMessage::Block(vec![0; 16]));
        assert_eq!(node1.recv(1).await[0].msg, PeerMessage::Block(vec![0; 16]));
        assert_eq!(node0.counter(|c| &c.frames_dropped_over_limits), 1);
        assert_eq!(node1.handle.counters().rejected("element_too_large"), 0);
        for n in [node0, node1] {
            n.stop().await;
        }
    })
    .await;
}

#[tokio::test]
async fn bad_configurations_are_refused() {
    let (keys, infos, mut sockets) = committee(2, 150);
    let good = config(0, &infos, &keys[0]);
    let cases: Vec<(&str, PeerConfig)> = vec![
        (
            "me out of range",
            PeerConfig {
                me: 2,
                ..good.clone()
            },
        ),
        (
            "wrong key",
            PeerConfig {
                pkcs8_der: keys[1].clone(),
                ..good.clone()
            },
        ),
        (
            "heartbeat",
            PeerConfig {
                dead_after_ms: 100,
                ..good.clone()
            },
        ),
        (
            "backoff",
            PeerConfig {
                reconnect_min_ms: 500,
                ..good.clone()
            },
        ),
        (
            "queue",
            PeerConfig {
                outbound_queue_max: 0,
                ..good.clone()
            },
        ),
        ("index", {
            let mut c = good.clone();
            c.committee[1].index = 5;
            c
        }),
        ("duplicate key", {
            let mut c = good.clone();
            c.committee[1].public_key = c.committee[0].public_key;
            c
        }),
    ];
    for (what, cfg) in cases {
        let socket = bind();
        assert!(
            matches!(PeerNetwork::new(cfg, socket), Err(PeerError::Config(_))),
            "{what}"
        );
    }
    let net = PeerNetwork::new(good, sockets.remove(0)).unwrap();
    assert_eq!(net.alive(), vec![true, false]);
    assert_eq!(net.peer_heights(), vec![(0, 0), (0, 0)]);
    let snap = net.counters().snapshot();
    assert_eq!(snap.counters.len(), PEER_COUNTER_LABELS.len());
    assert_eq!(snap.frames_rejected.len(), WIRE_ERROR_KINDS);
}

/// What one member's messages waiting for consensus may hold is bounded per
/// member (here 4 messages, or 64 KiB): its reader stops reading beyond it
/// (counted), the other members' messages still get through, and every
/// held-back message arrives, in order, once the waiting ones are consumed.
#[tokio::test]
async fn a_members_inbound_budget_holds_it_back_alone() {
    bounded(async {
        let (keys, infos, mut sockets) = committee(3, 170);
        let mut cfg2 = config(2, &infos, &keys[2]);
        cfg2.inbound_msgs_per_peer_max = 4;
        cfg2.inbound_bytes_per_peer_max = 64 << 10;
        let node2 = Node::start(cfg2, sockets.pop().unwrap());
        let node1 = Node::start(config(1, &infos, &keys[1]), sockets.pop().unwrap());
        let node0 = Node::start(config(0, &infos, &keys[0]), sockets.pop().unwrap());
        for k in 0..20u8 {
            node0.send(Dest::One(2), PeerMessage::Block(vec![k; 100]));
        }
        wait_until("node 0's budget is full and its reader waits", || {
            node2.inbound.len() == 4 && node2.counter(|c| &c.inbound_budget_waits) >= 1
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            node2.inbound.len(),
            4,
            "no more of node 0's messages queued"
        );
        // Node 1 is not held back by node 0's budget.
        node1.send(Dest::One(2), PeerMessage::BatchAck([7; 32]));
        wait_until("node 1's message arrives", || node2.inbound.len() == 5).await;
        // Consumed one by one (each dropped before the next is popped).
        let mut got = consume(&node2.inbound, 20 + 1).await;
        let from1: Vec<&Inbound> = got.iter().filter(|m| m.from == 1).collect();
        assert_eq!(
            from1,
            vec![&Inbound::new(1, PeerMessage::BatchAck([7; 32]))]
        );
        got.retain(|m| m.from == 0);
        let want: Vec<Inbound> = (0..20u8)
            .map(|k| Inbound::new(0, PeerMessage::Block(vec![k; 100])))
            .collect();
        assert_eq!(got, want, "all of node 0's messages, in order");
        // Bytes count too: two 40 KiB messages would pass 64 KiB.
        for k in 0..3u8 {
            node1.send(Dest::One(2), PeerMessage::Block(vec![k; 40 << 10]));
        }
        wait_until("node 1's first big message arrives", || {
            !node2.inbound.is_empty()
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            node2.inbound.len(),
            1,
            "a second 40 KiB message would pass 64 KiB"
        );
        let rest = consume(&node2.inbound, 3).await;
        assert_eq!(rest.len(), 3);
        for n in [node0, node1, node2] {
            n.stop().await;
        }
    })
    .await;
}

/// A peer's send queue is bounded in bytes as well as frames: with 100 KiB
/// allowed, two 40 KiB frames queue for a peer that is not there yet,
/// the rest are dropped newest-first and counted; the queued ones arrive.
#[tokio::test]
async fn outbound_queue_is_bounded_in_bytes_per_peer() {
    bounded(async {
        let absent = AbsentPeer::start(190, |c| c.outbound_bytes_per_peer_max = 100 << 10);
        let node0 = &absent.node0;
        for k in 0..6u8 {
            node0.send(Dest::One(1), PeerMessage::Block(vec![k; 40 << 10]));
        }
        wait_until("the pump drained the outbound ring", || {
            node0.outbound.is_empty() && node0.counter(|c| &c.frames_dropped_queue_full) == 4
        })
        .await;
        absent
            .receives_only(
                (0..2u8)
                    .map(|k| PeerMessage::Block(vec![k; 40 << 10]))
                    .collect(),
            )
            .await;
    })
    .await;
}

/// Pops `n` messages, dropping each (and with it its budget) before the
/// next: what the consensus tile does.
async fn consume(ring: &Ring<Inbound>, n: usize) -> Vec<Inbound> {
    let mut got = Vec::new();
    while got.len() < n {
        let m = ring
            .pop_timeout(WAIT)
            .await
            .expect("in time")
            .expect("open");
        got.push(Inbound::new(m.from, m.msg));
    }
    got
}
