//! Mutual TLS between validators, bound to committee keys.
//!
//! Every validator's certificate is self-signed with its ed25519 key
//! ([`crate::tls::self_signed_cert`]), so a certificate's
//! SubjectPublicKeyInfo *is* the validator's identity. Both sides parse that
//! key out of the presented certificate (rustls-webpki parses the DER) and
//! check it against the committee; the TLS 1.3 handshake signature, verified
//! with the ring provider, proves the peer holds the matching private key.
//!
//! - server: a client certificate is required; its key must be one of the
//!   other committee members' keys (else `handshakes_rejected_unknown_key`).
//! - client dialing member `i`: the server's key must be member `i`'s key
//!   (else `handshakes_rejected_wrong_key`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::PeerCounters;
use crate::tls::TlsError;

/// DER of an ed25519 SubjectPublicKeyInfo up to the key (RFC 8410 §4):
/// SEQUENCE(42) { SEQUENCE(5) { OID 1.3.101.112 }, BIT STRING(33) { 0 unused bits, key } }.
/// DER is canonical and RFC 8410 forbids parameters, so every ed25519 SPKI
/// is exactly these 12 bytes followed by the 32-byte key.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
const ED25519_SPKI_BYTES: usize = 44;

/// The ed25519 public key of a DER certificate, or `None` if the certificate
/// does not parse or its key is not ed25519.
pub fn ed25519_key_of_cert(cert_der: &[u8]) -> Option<[u8; 32]> {
    let der = CertificateDer::from(cert_der);
    let cert = webpki::EndEntityCert::try_from(&der).ok()?;
    let spki = cert.subject_public_key_info();
    let spki = spki.as_ref();
    if spki.len() != ED25519_SPKI_BYTES || spki[..12] != ED25519_SPKI_PREFIX {
        return None;
    }
    spki[12..].try_into().ok()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn refuse() -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure)
}

/// Verifies a TLS 1.3 handshake signature: ed25519 only.
fn verify_tls13(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(rustls::Error::PeerMisbehaved(
            rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
        ));
    }
    rustls::crypto::verify_tls13_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

/// The signature half of both verifiers: TLS 1.3 only (QUIC requires it),
/// ed25519 only, checked by the ring provider in `self.provider`.
macro_rules! tls13_ed25519_only {
    () => {
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::Tls13RequiredForQuic,
            ))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13(&self.provider, message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            vec![SignatureScheme::ED25519]
        }
    };
}

/// Server side: accepts a client certificate whose key is a committee key.
struct CommitteeClientVerifier {
    /// Keys of the other committee members (never this node's own).
    keys: Vec<[u8; 32]>,
    provider: Arc<CryptoProvider>,
    counters: Arc<PeerCounters>,
}

impl std::fmt::Debug for CommitteeClientVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitteeClientVerifier")
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl ClientCertVerifier for CommitteeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match ed25519_key_of_cert(end_entity) {
            Some(k) if self.keys.contains(&k) => Ok(ClientCertVerified::assertion()),
            _ => {
                self.counters
                    .handshakes_rejected_unknown_key
                    .fetch_add(1, Ordering::Relaxed);
                Err(refuse())
            }
        }
    }

    tls13_ed25519_only!();
}

/// Client side: accepts only the server certificate holding `expected`.
struct MemberServerVerifier {
    expected: [u8; 32],
    provider: Arc<CryptoProvider>,
    counters: Arc<PeerCounters>,
}

impl std::fmt::Debug for MemberServerVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberServerVerifier").finish()
    }
}

impl ServerCertVerifier for MemberServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if ed25519_key_of_cert(end_entity) == Some(self.expected) {
            Ok(ServerCertVerified::assertion())
        } else {
            self.counters
                .handshakes_rejected_wrong_key
                .fetch_add(1, Ordering::Relaxed);
            Err(refuse())
        }
    }

    tls13_ed25519_only!();
}

fn key_der(pkcs8_der: &[u8]) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8_der.to_vec()))
}

/// Server TLS for the peer ALPN: requires a client certificate with one of
/// `others` (the other members' keys).
pub(crate) fn server_config(
    cert_der: &[u8],
    pkcs8_der: &[u8],
    others: Vec<[u8; 32]>,
    counters: Arc<PeerCounters>,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ServerConfig, TlsError> {
    let verifier = Arc::new(CommitteeClientVerifier {
        keys: others,
        provider: provider(),
        counters,
    });
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from(cert_der.to_vec())],
            key_der(pkcs8_der),
        )?;
    tls.alpn_protocols = vec![super::ALPN_PEER.to_vec()];
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(transport);
    Ok(cfg)
}

/// Client TLS for dialing the member holding `expected`, presenting this
/// node's certificate.
pub(crate) fn client_config(
    cert_der: &[u8],
    pkcs8_der: &[u8],
    expected: [u8; 32],
    counters: Arc<PeerCounters>,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ClientConfig, TlsError> {
    let verifier = Arc::new(MemberServerVerifier {
        expected,
        provider: provider(),
        counters,
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(
            vec![CertificateDer::from(cert_der.to_vec())],
            key_der(pkcs8_der),
        )?;
    tls.alpn_protocols = vec![super::ALPN_PEER.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(transport);
    Ok(cfg)
}

/// The ed25519 key of the certificate a connection's peer presented.
pub(crate) fn peer_key(conn: &quinn::Connection) -> Option<[u8; 32]> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast_ref::<Vec<CertificateDer<'static>>>()?;
    ed25519_key_of_cert(certs.first()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use proptest::prelude::*;

    #[test]
    fn key_is_read_from_the_certificate() {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let pkcs8 = sk.to_pkcs8_der().unwrap();
        let cert = crate::tls::self_signed_cert(pkcs8.as_bytes()).unwrap();
        assert_eq!(
            ed25519_key_of_cert(&cert),
            Some(sk.verifying_key().to_bytes())
        );
        assert_eq!(ed25519_key_of_cert(&[]), None);
        assert_eq!(ed25519_key_of_cert(&cert[..cert.len() - 1]), None);
    }

    #[test]
    fn non_ed25519_certificate_has_no_key() {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["velox".to_string()])
            .unwrap()
            .self_signed(&kp)
            .unwrap();
        assert_eq!(ed25519_key_of_cert(cert.der()), None);
    }

    proptest! {
        #[test]
        fn garbage_certificates_never_panic(
            b in proptest::collection::vec(any::<u8>(), 0..600),
            flip in any::<prop::sample::Index>(),
        ) {
            let _ = ed25519_key_of_cert(&b);
            let sk = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
            let pkcs8 = sk.to_pkcs8_der().unwrap();
            let mut cert = crate::tls::self_signed_cert(pkcs8.as_bytes()).unwrap();
            let i = flip.index(cert.len());
            cert[i] ^= 0x41;
            let _ = ed25519_key_of_cert(&cert);
        }
    }
}
