//! TLS versions on the public listener: a TLS 1.1-only client is refused with an alert, a
//! TLS 1.2-only client is served over HTTP/1.1 and HTTP/2.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use super::{WorldExt, assert_request_id, bearer, send};
use support::load::{ALPN_H1, ALPN_H2, complete, conn_request, h1_over, h2_over, tcp_connect};
use support::payshim::{ORDER, Payshim, payment_body, payment_request};
use support::{HttpVersion, World, moltin_like, tls11_client_hello};

#[tokio::test]
async fn tls11_only_client_is_refused() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config()).await;
    let answer = tls11_client_hello(payshim.addr)
        .await
        .expect("payshim answers a TLS 1.1 hello");
    assert_eq!(
        answer[0], 0x15,
        "expected a TLS alert record, got {answer:02x?}"
    );
    // payshim keeps serving TLS 1.2+ clients.
    let resp = send(
        &payshim.client(HttpVersion::Http2),
        payment_request(&payshim, &[("authorization", &bearer())], &payment_body()),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 201, "{}", resp.text());
    assert_eq!(world.upstream.count(), 1);
    payshim.stop().await;
}

/// A client config offering only TLS 1.2 (aws-lc-rs), trusting `ca_pem`, offering `alpn`.
fn tls12_only_config(ca_pem: &str, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("parse CA PEM")).expect("add CA");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .expect("TLS 1.2 with aws-lc-rs")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

#[tokio::test]
async fn tls12_only_client_is_served() {
    let world = World::new(moltin_like()).await;
    let payshim = Payshim::start(&world.config()).await;
    let port = payshim.addr.port();
    for (version, alpn) in [(HttpVersion::Http1, ALPN_H1), (HttpVersion::Http2, ALPN_H2)] {
        let connector = tokio_rustls::TlsConnector::from(tls12_only_config(&payshim.ca_pem, alpn));
        let tcp = tcp_connect(payshim.addr, None).await.expect("TCP connect");
        let tls = tokio::time::timeout(
            Duration::from_secs(5),
            connector.connect(ServerName::try_from("localhost").unwrap(), tcp),
        )
        .await
        .expect("TLS 1.2 handshake within 5 s")
        .unwrap_or_else(|e| panic!("{version:?}: payshim refused a TLS 1.2-only client: {e}"));
        let session = tls.get_ref().1;
        assert_eq!(
            session.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2),
            "{version:?}: negotiated version"
        );
        assert_eq!(session.alpn_protocol(), Some(alpn), "{version:?}: ALPN");
        let suite = session
            .negotiated_cipher_suite()
            .expect("a negotiated cipher suite");
        assert_eq!(suite.version(), &rustls::version::TLS12, "{suite:?}");

        let req = conn_request(
            version,
            port,
            Method::POST,
            &format!("/v2/orders/{ORDER}/payments"),
            &[
                ("authorization", &bearer()),
                ("content-type", "application/json"),
            ],
            &payment_body(),
        );
        let resp = match version {
            HttpVersion::Http1 => {
                let mut sender = h1_over(tls).await.expect("HTTP/1.1 over TLS 1.2");
                complete(sender.send_request(req)).await
            }
            HttpVersion::Http2 => {
                let mut sender = h2_over(tls).await.expect("HTTP/2 over TLS 1.2");
                complete(sender.send_request(req)).await
            }
        }
        .unwrap_or_else(|e| panic!("{version:?}: payment over TLS 1.2: {e}"));
        assert_eq!(resp.status, 201, "{version:?}: {}", resp.text());
        assert_eq!(resp.json()["data"]["type"], "transaction", "{version:?}");
        assert_request_id(&resp);
    }
    assert_eq!(world.upstream.count(), 2, "{:?}", world.upstream.requests());
    payshim.stop().await;
}
