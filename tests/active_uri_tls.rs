//! Active URI over HTTPS: a phone's self-signed certificate is accepted only for a phone
//! configured with `tls_insecure = true`, never for the others.
//!
//! The fake phone is a raw TLS server on loopback with a certificate generated for this run
//! (rcgen): nothing on the machine trusts it, exactly like a desk phone's factory certificate.
//! It records every request line it manages to read, so the refused case proves that no HTTP
//! request (and so no credentials) went over an unverified connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ctibridge::config::{ActiveUriSettings, PhoneSettings, PhoneVendor};
use ctibridge::phone::client::{ActiveUriClient, PhoneCommand, Transport};
use ctibridge::phone::registry::PhoneRegistry;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A phone answering HTTPS with a self-signed certificate.
#[derive(Clone)]
struct TlsPhone {
    addr: SocketAddr,
    /// TCP connections accepted.
    accepts: Arc<AtomicUsize>,
    /// TLS handshakes that failed (the client refused our certificate).
    failed_handshakes: Arc<AtomicUsize>,
    /// Request lines read after a successful handshake.
    requests: Arc<Mutex<Vec<String>>>,
}

impl TlsPhone {
    async fn start() -> TlsPhone {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
            .expect("generate a self-signed certificate");
        let cert: CertificateDer<'static> = certified.cert.der().clone();
        let key =
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("server certificate");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let phone = TlsPhone {
            addr: listener.local_addr().unwrap(),
            accepts: Arc::default(),
            failed_handshakes: Arc::default(),
            requests: Arc::default(),
        };
        let p = phone.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                p.accepts.fetch_add(1, Ordering::SeqCst);
                let p = p.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let mut tls = match acceptor.accept(stream).await {
                        Ok(tls) => tls,
                        Err(_) => {
                            p.failed_handshakes.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    };
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf);
                    let line = head.split("\r\n").next().unwrap_or_default().to_owned();
                    p.requests.lock().unwrap().push(line);
                    let _ = tls
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK",
                        )
                        .await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        phone
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn https_phone(ext: &str, addr: SocketAddr, tls_insecure: bool) -> PhoneSettings {
    PhoneSettings {
        extension: ext.into(),
        address: addr.to_string(),
        vendor: PhoneVendor::Yealink,
        username: "admin".into(),
        password: "admin".into(),
        tls: true,
        tls_insecure,
        ..PhoneSettings::default()
    }
}

fn client(phones: &[PhoneSettings]) -> (ActiveUriClient, PhoneRegistry) {
    let registry = PhoneRegistry::from_settings(phones);
    let settings = ActiveUriSettings {
        allowed_networks: vec!["127.0.0.0/8".parse().unwrap()],
        timeout: Duration::from_secs(5),
    };
    let client = ActiveUriClient::new(registry.clone(), &settings, "10.0.0.1".into());
    (client, registry)
}

#[tokio::test]
async fn a_self_signed_phone_is_reached_only_with_tls_insecure() {
    let phone = TlsPhone::start().await;
    let (client, _registry) = client(&[
        https_phone("101", phone.addr, true),
        https_phone("102", phone.addr, false),
    ]);

    // tls_insecure = true: the self-signed certificate is accepted and the command arrives.
    let outcome = client
        .execute("101", PhoneCommand::DndOn)
        .await
        .expect("an insecure-TLS phone accepts the command");
    assert_eq!(outcome.transport, Transport::Http);
    assert_eq!(outcome.status, Some(200));
    assert_eq!(phone.requests(), vec!["GET /servlet?key=DNDOn HTTP/1.1"]);

    // tls_insecure = false: the same certificate is refused during the handshake, so no
    // request line (and no credentials) ever crosses the connection.
    let err = client
        .execute("102", PhoneCommand::DndOn)
        .await
        .expect_err("an unverifiable certificate must be refused");
    assert_eq!(phone.requests().len(), 1, "no second request: {err}");
    assert!(
        phone.failed_handshakes.load(Ordering::SeqCst) >= 1,
        "the refusal happened in the TLS handshake ({err})"
    );
    assert!(phone.accepts.load(Ordering::SeqCst) >= 2);
}
