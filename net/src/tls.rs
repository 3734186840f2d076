//! TLS for QUIC endpoints (rustls with the `ring` provider, TLS 1.3 only).
//!
//! A node's certificate is self-signed with its own ed25519 key, so a
//! certificate names the key that holds it. Clients pin the node's
//! certificate (`tls-cert.der` in the node's data directory); a client given
//! no pin accepts any certificate and says so in its log.

use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Most concurrent client streams per connection: bounds queued work per
/// connection to 64 × `STREAM_TXS_MAX` transactions.
pub const CLIENT_STREAMS_PER_CONN_MAX: u32 = 64;
/// Idle time after which a connection is closed.
pub const IDLE_TIMEOUT_MS: u32 = 30_000;
/// Bytes a client may send on one stream beyond what the node has read
/// (QUIC stream flow-control window; quinn's default is 1.25 MB): at least
/// one largest transaction frame.
pub const CLIENT_STREAM_WINDOW_BYTES: u32 = 256 << 10;
/// Bytes a client may send on one connection, all streams together, beyond
/// what the node has read (quinn's default is unbounded). With
/// `network.ingress_connections_max` (1024) this bounds what clients can
/// make the node buffer while it applies backpressure: 1024 x 1 MiB.
pub const CLIENT_CONNECTION_WINDOW_BYTES: u32 = 1 << 20;
/// Bytes of answers the node buffers per client connection before its
/// writes wait (quinn's default is 10 MB).
pub const CLIENT_SEND_WINDOW_BYTES: u64 = 1 << 20;
const _: () = assert!(
    CLIENT_STREAM_WINDOW_BYTES as usize > crate::frame::FRAME_BYTES_MAX + 4,
    "a stream's window must hold at least one largest frame"
);
/// Clients ping this often, so a connection whose streams wait longer than
/// the idle timeout for their commits (a validator catching up, a long
/// overload) stays open. Servers do not ping: an idle client is let go.
pub const CLIENT_KEEP_ALIVE_MS: u64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate generation failed: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("TLS configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("QUIC crypto configuration failed: {0}")]
    Quic(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes a self-signed certificate for the ed25519 key given as PKCS#8 DER.
pub fn self_signed_cert(pkcs8_der: &[u8]) -> Result<Vec<u8>, TlsError> {
    let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(pkcs8_der.to_vec()),
        &rcgen::PKCS_ED25519,
    )?;
    let params = rcgen::CertificateParams::new(vec!["velox".to_string()])?;
    Ok(params.self_signed(&key)?.der().to_vec())
}

fn client_transport() -> Arc<quinn::TransportConfig> {
    let mut t = transport_config();
    t.keep_alive_interval(Some(std::time::Duration::from_millis(CLIENT_KEEP_ALIVE_MS)));
    Arc::new(t)
}

/// The node's side of client connections: the transport every
/// connection shares, with flow-control windows from named bounds.
fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = transport_config();
    t.stream_receive_window(CLIENT_STREAM_WINDOW_BYTES.into());
    t.receive_window(CLIENT_CONNECTION_WINDOW_BYTES.into());
    t.send_window(CLIENT_SEND_WINDOW_BYTES);
    Arc::new(t)
}

fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(CLIENT_STREAMS_PER_CONN_MAX.into());
    t.max_concurrent_uni_streams(0u32.into());
    t.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
        IDLE_TIMEOUT_MS,
    ))));
    t
}

/// Server configuration for `alpn` with the given certificate and key.
pub fn server_config(
    cert_der: &[u8],
    pkcs8_der: &[u8],
    alpn: &[u8],
) -> Result<quinn::ServerConfig, TlsError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert_der.to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8_der.to_vec())),
        )?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(transport());
    Ok(cfg)
}

/// Client configuration for `alpn`; pins the server certificate when given.
pub fn client_config(
    pinned_cert: Option<Vec<u8>>,
    alpn: &[u8],
) -> Result<quinn::ClientConfig, TlsError> {
    if pinned_cert.is_none() {
        tracing::warn!("no server certificate pinned: accepting any certificate");
    }
    let verifier = Arc::new(PinnedVerifier {
        pinned: pinned_cert,
        provider: provider(),
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(client_transport());
    Ok(cfg)
}

/// Accepts exactly the pinned certificate (or any, without a pin), and checks
/// the handshake signature against the presented certificate either way.
#[derive(Debug)]
struct PinnedVerifier {
    pinned: Option<Vec<u8>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.pinned {
            Some(p) if p.as_slice() != end_entity.as_ref() => {
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ))
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
