//! State proofs from a real validator process: `GET /proof/...` and
//! `velox proof` (fetch and verify, and offline verify), including proofs
//! that must fail.

mod common;

use common::*;
use velox_exec::AccountId;
use velox_net::{AckMode, IngressClient, Status};

fn velox(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(EXE).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn commit_transfers(node: &TestNode, txs: &[Vec<u8>]) {
    let r = rt().block_on(async {
        let ep = velox_net::ingress::client_endpoint(Some(node.cert())).unwrap();
        let c = IngressClient::connect(&ep, node.ingress).await.unwrap();
        let refs: Vec<&[u8]> = txs.iter().map(|t| t.as_slice()).collect();
        c.submit(AckMode::Commit, &refs).await.unwrap()
    });
    assert!(r.iter().all(|x| x.status == Status::Committed), "{r:?}");
}

#[test]
fn proofs_from_a_live_node_verify_and_tampered_ones_fail() {
    let node = TestNode::start(3, "");
    let api = node.api.to_string();
    let sender = dev(0);
    let to = AccountId([0xAB; 32]);
    let txs: Vec<Vec<u8>> = (0..5).map(|n| transfer(&sender, n, to, 7)).collect();
    commit_transfers(&node, &txs);

    // Fetched and verified end to end by the CLI: a present account...
    let (ok, out, err) = velox(&["proof", "--node", &api, "--account", &to.to_hex()]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("balance 35, nonce 0"), "{out}");
    assert!(out.contains("inclusion"), "{out}");
    assert!(out.contains("verified     OK"), "{out}");
    // ...an absent one, and an absent counter.
    let nobody = AccountId([0xEE; 32]);
    let (ok, out, err) = velox(&["proof", "--node", &api, "--account", &nobody.to_hex()]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("value        absent"), "{out}");
    assert!(out.contains("absence"), "{out}");
    let (ok, out, err) = velox(&["proof", "--node", &api, "--kv", &"09".repeat(32)]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("verified     OK"), "{out}");

    // The API's answer: consistent with the stored commit.
    let p = node.get(&format!("/proof/account/{}", id(&sender).to_hex()));
    let index = p["commit_index"].as_u64().unwrap();
    assert!(index >= 1, "{p}");
    let root = node.get(&format!("/commit/{index}"))["state_root"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(p["state_root"], root.as_str());
    assert_eq!(p["present"], true);
    assert_eq!(p["nonce"], 5);
    let proof = p["proof"].as_str().unwrap().to_string();
    let balance = p["balance"].as_u64().unwrap().to_string();
    let account = id(&sender).to_hex();
    let verify = |root: &str, proof: &str, claim: &[&str]| {
        let mut args = vec![
            "proof",
            "verify",
            "--root",
            root,
            "--account",
            &account,
            "--proof",
            proof,
        ];
        args.extend_from_slice(claim);
        velox(&args)
    };
    let honest = ["--balance", balance.as_str(), "--nonce", "5"];
    let (ok, out, err) = verify(&root, &proof, &honest);
    assert!(ok, "{out}{err}");
    assert!(out.contains("verified     OK"), "{out}");

    // Tampered: the last byte belongs to the deepest sibling hash (an
    // inclusion proof ends there), which is never empty.
    let mut bytes = hex::decode(&proof).unwrap();
    assert!(bytes.len() > 4 + 32, "a proof with siblings: {proof}");
    *bytes.last_mut().unwrap() ^= 0x01;
    let tampered = hex::encode(&bytes);
    let (ok, out, err) = verify(&root, &tampered, &honest);
    assert!(!ok, "a tampered proof verified: {out}");
    assert!(out.contains("FAILED"), "{out}");
    assert!(err.contains("FAILED"), "{err}");
    // A wrong balance, a claim of absence, another root: all fail.
    let (ok, out, _) = verify(&root, &proof, &["--balance", "1", "--nonce", "5"]);
    assert!(!ok, "{out}");
    let (ok, out, _) = verify(&root, &proof, &["--absent"]);
    assert!(!ok, "{out}");
    let genesis_root = node.get("/commit/0")["state_root"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(genesis_root, root);
    let (ok, out, _) = verify(&genesis_root, &proof, &honest);
    assert!(!ok, "{out}");
    // Malformed input is an error, not a panic.
    let (ok, _, err) = verify(&root, "00ff", &honest);
    assert!(!ok);
    assert!(err.contains("--proof"), "{err}");

    // After another commit, the node proves against the new root.
    commit_transfers(&node, &[transfer(&sender, 5, to, 1)]);
    let (ok, out, err) = velox(&["proof", "--node", &api, "--account", &to.to_hex()]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("balance 36, nonce 0"), "{out}");
    // Bad requests get typed HTTP errors.
    let (code, _) = velox_node::httpc::get(node.api, "/proof/account/xyz").unwrap();
    assert_eq!(code, 400);
    let (code, _) = velox_node::httpc::get(node.api, "/proof/kv/00").unwrap();
    assert_eq!(code, 400);
}
