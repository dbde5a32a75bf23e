//! TLS for the registry client: rustls verifying against the system's root certificates, which
//! are read on the first certificate check instead of when the client is built. Pulls from
//! plain-HTTP registries (loopback, `--insecure-registry`) then never read `/etc/ssl/certs`:
//! about 150 files, which on a cold page cache (the first pull after boot) cost ~0.4 s before
//! the first request, and a parsed root store the daemon would keep for its whole life.

use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Where the root certificates come from: the system's store, or a test's.
type Loader = Box<dyn Fn() -> Vec<CertificateDer<'static>> + Send + Sync>;

/// A [`WebPkiServerVerifier`] built from the roots on first use.
struct LazyRoots {
    provider: Arc<CryptoProvider>,
    load: Loader,
    verifier: OnceLock<Result<Arc<WebPkiServerVerifier>, String>>,
}

impl std::fmt::Debug for LazyRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyRoots")
            .field("loaded", &self.verifier.get().is_some())
            .finish_non_exhaustive()
    }
}

impl LazyRoots {
    fn verifier(&self) -> Result<&Arc<WebPkiServerVerifier>, rustls::Error> {
        self.verifier
            .get_or_init(|| {
                let mut roots = RootCertStore::empty();
                // Stores often hold a few certificates rustls cannot parse; skip those.
                let (added, _) = roots.add_parsable_certificates((self.load)());
                if added == 0 {
                    return Err("no usable root certificate in the system's store \
                                (/etc/ssl/certs, or SSL_CERT_FILE / SSL_CERT_DIR): install \
                                Debian's ca-certificates"
                        .to_owned());
                }
                WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&self.provider),
                )
                .build()
                .map_err(|e| format!("cannot use the system's root certificates: {e}"))
            })
            .as_ref()
            .map_err(|e| rustls::Error::General(e.clone()))
    }

    fn algorithms(&self) -> &WebPkiSupportedAlgorithms {
        &self.provider.signature_verification_algorithms
    }
}

impl ServerCertVerifier for LazyRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, self.algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, self.algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms().supported_schemes()
    }
}

/// The system's root certificates (`SSL_CERT_FILE` / `SSL_CERT_DIR` honoured).
fn system_roots() -> Vec<CertificateDer<'static>> {
    let loaded = rustls_native_certs::load_native_certs();
    for e in &loaded.errors {
        tracing::debug!("reading the system's root certificates: {e}");
    }
    loaded.certs
}

/// The client TLS configuration of the registry client (HTTP/2 and HTTP/1.1 offered).
pub(crate) fn client_config() -> rustls::ClientConfig {
    config_with(Box::new(system_roots))
}

fn config_with(load: Loader) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(LazyRoots {
        provider: Arc::clone(&provider),
        load,
        verifier: OnceLock::new(),
    });
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A certificate authority and a certificate for 127.0.0.1 signed by it.
    struct Pki {
        ca: CertificateDer<'static>,
        leaf: CertificateDer<'static>,
        key: rustls::pki_types::PrivateKeyDer<'static>,
    }

    fn pki(name: &str) -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, format!("berth test CA {name}"));
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        Pki {
            ca: ca.der().clone(),
            leaf: leaf.der().clone(),
            key: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        }
    }

    /// An HTTPS server on loopback answering one request with "ok"; its port.
    fn serve_once(p: &Pki) -> u16 {
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![p.leaf.clone()], p.key.clone_key())
        .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let Ok((mut tcp, _)) = listener.accept() else {
                return;
            };
            let mut conn = rustls::ServerConnection::new(Arc::new(cfg)).unwrap();
            let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
            let mut buf = [0u8; 4096];
            if tls.read(&mut buf).is_ok() {
                let _ = tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
            }
        });
        port
    }

    fn client(roots: Vec<CertificateDer<'static>>, loads: &Arc<AtomicUsize>) -> reqwest::Client {
        let loads = Arc::clone(loads);
        let cfg = config_with(Box::new(move || {
            loads.fetch_add(1, Ordering::SeqCst);
            roots.clone()
        }));
        reqwest::Client::builder()
            .use_preconfigured_tls(cfg)
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn roots_are_read_on_the_first_handshake_and_verify_the_server() {
        let p = pki("server's");
        let loads = Arc::new(AtomicUsize::new(0));
        let c = client(vec![p.ca.clone()], &loads);
        assert_eq!(loads.load(Ordering::SeqCst), 0, "read before any handshake");
        let port = serve_once(&p);
        let body = c
            .get(format!("https://127.0.0.1:{port}/v2/"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "ok");
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_server_whose_certificate_no_root_signed_is_refused() {
        let (p, other) = (pki("server's"), pki("another"));
        let loads = Arc::new(AtomicUsize::new(0));
        let c = client(vec![other.ca], &loads);
        let port = serve_once(&p);
        let err = c
            .get(format!("https://127.0.0.1:{port}/v2/"))
            .send()
            .await
            .unwrap_err();
        let chain = error_chain(&err);
        assert!(
            chain.contains("invalid peer certificate: UnknownIssuer"),
            "{chain}"
        );
    }

    #[tokio::test]
    async fn no_usable_root_is_a_clear_error() {
        let p = pki("server's");
        let loads = Arc::new(AtomicUsize::new(0));
        let c = client(Vec::new(), &loads);
        let port = serve_once(&p);
        let err = c
            .get(format!("https://127.0.0.1:{port}/v2/"))
            .send()
            .await
            .unwrap_err();
        let chain = error_chain(&err);
        assert!(chain.contains("no usable root certificate"), "{chain}");
    }

    #[test]
    fn the_system_store_has_roots() {
        // ca-certificates is among the packages scripts/deps.sh installs.
        assert!(!system_roots().is_empty());
    }

    /// An error and all its sources, for matching.
    fn error_chain(e: &dyn std::error::Error) -> String {
        let mut s = format!("{e} / {e:?}");
        let mut cur = e.source();
        while let Some(c) = cur {
            s.push_str(&format!(" / {c} / {c:?}"));
            cur = c.source();
        }
        s
    }
}
