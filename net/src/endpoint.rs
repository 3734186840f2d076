//! QUIC endpoint configuration that survives a restart of the process.
//!
//! A node killed without closing its connections (SIGKILL, crash, power
//! loss) leaves its peers with connections that look alive: they keep
//! writing into them until the idle timeout (`dead_after_ms` + 3 s for
//! validators, 30 s for clients), and since a validator only sends on
//! connections it dialed, a restarted validator hears nothing from a peer
//! until that peer's old connection times out.
//!
//! QUIC's stateless reset ends that early: the restarted endpoint answers a
//! packet for a connection it does not know with a reset carrying the
//! connection's reset token, and the peer closes the connection at once (and
//! redials). That only works if the new process computes the same tokens as
//! the old one and recognises the old connection IDs as its own, so both
//! keys are derived from the node's long-term secret instead of drawn at
//! random each start. They never leave the node: a reset token is only sent
//! inside the encrypted handshake, and without the secret nobody can forge
//! a reset.

use std::sync::Arc;

/// A stateless-reset key: keyed BLAKE3 over the connection ID.
struct ResetKey([u8; 32]);

/// Bytes of a signature of [`ResetKey`]; a reset token is its first 16.
const RESET_SIGNATURE_BYTES: usize = 32;

impl quinn::crypto::HmacKey for ResetKey {
    fn sign(&self, data: &[u8], signature_out: &mut [u8]) {
        let mac = blake3::keyed_hash(&self.0, data);
        let n = signature_out.len().min(RESET_SIGNATURE_BYTES);
        signature_out[..n].copy_from_slice(&mac.as_bytes()[..n]);
    }

    fn signature_len(&self) -> usize {
        RESET_SIGNATURE_BYTES
    }

    fn verify(&self, data: &[u8], signature: &[u8]) -> Result<(), quinn::crypto::CryptoError> {
        let Ok(signature) = <[u8; RESET_SIGNATURE_BYTES]>::try_from(signature) else {
            return Err(quinn::crypto::CryptoError);
        };
        // `blake3::Hash` compares in constant time.
        if blake3::keyed_hash(&self.0, data) == blake3::Hash::from(signature) {
            Ok(())
        } else {
            Err(quinn::crypto::CryptoError)
        }
    }
}

/// The stateless-reset key and the connection-ID key for `secret` and
/// `purpose`.
fn derive_keys(secret: &[u8], purpose: &str) -> (ResetKey, u64) {
    let context = format!("velox quic endpoint {purpose} v1");
    let reset = blake3::derive_key(&format!("{context} stateless reset"), secret);
    let cid = blake3::derive_key(&format!("{context} connection id"), secret);
    let cid_key = u64::from_le_bytes(cid[..8].try_into().expect("8 bytes"));
    (ResetKey(reset), cid_key)
}

/// An endpoint configuration whose stateless-reset key and connection-ID
/// key are derived from `secret` (the node's key, PKCS#8 DER) and `purpose`
/// (one per endpoint, e.g. `"peer"`, `"ingress"`), so they are the same
/// after every restart of the same node.
pub fn restart_stable_config(secret: &[u8], purpose: &str) -> quinn::EndpointConfig {
    let (reset, cid_key) = derive_keys(secret, purpose);
    let mut cfg = quinn::EndpointConfig::new(Arc::new(reset));
    cfg.cid_generator(move || {
        // quinn's default generator tags its IDs with a key drawn at each
        // start, so a restarted endpoint would drop the old IDs' packets
        // without answering them.
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
            as Box<dyn quinn::ConnectionIdGenerator>
    });
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;
    use quinn::crypto::HmacKey;
    use std::time::Duration;

    fn sign(k: &ResetKey) -> [u8; RESET_SIGNATURE_BYTES] {
        let mut out = [0u8; RESET_SIGNATURE_BYTES];
        k.sign(b"connection id", &mut out);
        out
    }

    #[test]
    fn keys_depend_on_the_secret_and_purpose_only() {
        let (a, cid_a) = derive_keys(b"secret a", "peer");
        let (a2, cid_a2) = derive_keys(b"secret a", "peer");
        assert_eq!((sign(&a), cid_a), (sign(&a2), cid_a2));
        assert_ne!(sign(&a), sign(&derive_keys(b"secret b", "peer").0));
        assert_ne!(sign(&a), sign(&derive_keys(b"secret a", "ingress").0));
        assert_ne!(cid_a, derive_keys(b"secret a", "ingress").1);
        assert!(a.verify(b"connection id", &sign(&a)).is_ok());
        assert!(a.verify(b"other id", &sign(&a)).is_err());
        assert!(a.verify(b"connection id", &sign(&a)[..16]).is_err());
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    /// Serves `alpn` "test" on `addr` with `secret`'s endpoint keys until
    /// `rt` is dropped.
    fn serve(rt: &tokio::runtime::Runtime, addr: std::net::SocketAddr, pkcs8: &[u8]) {
        let cert = crate::tls::self_signed_cert(pkcs8).unwrap();
        let server = crate::tls::server_config(&cert, pkcs8, b"test").unwrap();
        let config = restart_stable_config(pkcs8, "test");
        rt.block_on(async move {
            let socket = std::net::UdpSocket::bind(addr).unwrap();
            let ep =
                quinn::Endpoint::new(config, Some(server), socket, Arc::new(quinn::TokioRuntime))
                    .unwrap();
            tokio::spawn(async move {
                while let Some(i) = ep.accept().await {
                    tokio::spawn(async move {
                        if let Ok(c) = i.await {
                            c.closed().await;
                        }
                    });
                }
            });
        })
    }

    /// A server endpoint that dies without closing (its runtime dropped)
    /// and comes back on the same address with the same secret resets the
    /// client's old connection as soon as the client sends on it, instead
    /// of the client waiting out the idle timeout.
    #[test]
    fn a_restarted_endpoint_resets_connections_of_its_previous_life() {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let pkcs8 = key.to_pkcs8_der().unwrap().as_bytes().to_vec();
        let cert = crate::tls::self_signed_cert(&pkcs8).unwrap();
        let addr = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let first = runtime();
        serve(&first, addr, &pkcs8);
        let client_rt = runtime();
        let (_ep, conn) = client_rt.block_on(async {
            let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            ep.set_default_client_config(crate::tls::client_config(Some(cert), b"test").unwrap());
            let conn = ep.connect(addr, "velox").unwrap().await.unwrap();
            (ep, conn)
        });
        // The server process "dies": its tasks and socket go, no close
        // frame is sent. A new one binds the same address.
        drop(first);
        let second = runtime();
        serve(&second, addr, &pkcs8);
        client_rt.block_on(async {
            // Any packet on the old connection now draws a reset.
            if let Ok((mut s, _)) = conn.open_bi().await {
                let _ = s.write_all(b"hello").await;
            }
            let err = tokio::time::timeout(Duration::from_secs(5), conn.closed())
                .await
                .expect("the old connection was not reset within 5 s");
            assert!(matches!(err, quinn::ConnectionError::Reset), "{err:?}");
        });
    }
}
