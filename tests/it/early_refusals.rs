//! Every early refusal reaches the client as the API's JSON error, with the clients people
//! use: Debian's curl 7.88 over HTTP/2 (which reports a stream reset after the answer as
//! "(92) Stream error" instead of the answer) and over HTTP/1.1, and an HTTP/1.1 client
//! that sends its whole body before it reads (as Python's http.client and most server-side
//! clients do), which a close under a still-arriving body would leave with a reset.
//!
//! Each refusal kind is answered before payshim reads the body: 401, 403, 404, 413, 415,
//! 429 and 503.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::client::StreamedBody;
use crate::support::load::{ALPN_H2, tls_connect};
use crate::support::payshim::{Payshim, STOREFRONT_KEY, set_key};
use crate::support::{Reply, World, closed_port, handler};

const PAYMENT_PATH: &str = "/v2/orders/0a1b2c3d-0000-4000-8000-00000000abcd/payments";
/// Tries per refusal kind and client: the lost answers came on about half the tries.
const TRIES: usize = 12;

/// One kind of early refusal: what is sent, and the status it must get.
struct Case {
    name: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// Accepted statuses (a per-IP limit answers its first try 401, then 429).
    status: &'static [u16],
}

fn small_body() -> Vec<u8> {
    br#"{"data":{"gateway":"card_connect","method":"purchase","first_name":"Ada","last_name":"Lovelace","number":"4111111111111111","month":"08","year":"2031","verification_value":"123"}}"#.to_vec()
}

fn bearer() -> (&'static str, String) {
    ("authorization", format!("Bearer {STOREFRONT_KEY}"))
}

fn json() -> (&'static str, String) {
    ("content-type", "application/json".into())
}

/// The refusals the base config gives.
fn base_cases() -> Vec<Case> {
    vec![
        Case {
            name: "401 no credential",
            path: PAYMENT_PATH,
            headers: vec![json()],
            body: small_body(),
            status: &[401],
        },
        Case {
            name: "403 origin not allowed",
            path: PAYMENT_PATH,
            headers: vec![bearer(), json(), ("origin", "https://evil.example".into())],
            body: small_body(),
            status: &[403],
        },
        Case {
            name: "404 unknown route",
            path: "/v2/carts/abc/items",
            headers: vec![bearer(), json()],
            body: small_body(),
            status: &[404],
        },
        Case {
            name: "413 2 MB body",
            path: PAYMENT_PATH,
            headers: vec![bearer(), json()],
            body: vec![b'a'; 2_000_000],
            status: &[413],
        },
        Case {
            name: "413 20 KB body",
            path: PAYMENT_PATH,
            headers: vec![bearer(), json()],
            body: vec![b'a'; 20_000],
            status: &[413],
        },
        Case {
            name: "415 text/plain",
            path: PAYMENT_PATH,
            headers: vec![bearer(), ("content-type", "text/plain".into())],
            body: small_body(),
            status: &[415],
        },
    ]
}

fn bad_credential_case() -> Case {
    Case {
        name: "429 per-IP limit after a bad credential",
        path: PAYMENT_PATH,
        headers: vec![("authorization", "Bearer wrong-key".into()), json()],
        body: small_body(),
        status: &[401, 429],
    }
}

fn store_down_case() -> Case {
    Case {
        name: "503 limits store down",
        path: PAYMENT_PATH,
        headers: vec![bearer(), json()],
        body: small_body(),
        status: &[503],
    }
}

/// The JSON error's status, or why the answer is not one.
fn error_status(body: &[u8]) -> Result<u16, String> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("not JSON ({e}): {}", String::from_utf8_lossy(body)))?;
    v["errors"][0]["status"]
        .as_u64()
        .map(|s| s as u16)
        .ok_or_else(|| format!("not an API error: {v}"))
}

/// `curl` as Debian ships it, `--http2` or `--http1.1`; the body from a file.
fn curl(
    payshim: &Payshim,
    ca: &Path,
    http: &str,
    case: &Case,
    body_file: &Path,
) -> Result<u16, String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", http, "--cacert"])
        .arg(ca)
        .arg("--data-binary")
        .arg(format!("@{}", body_file.display()));
    for (k, v) in &case.headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    cmd.arg(payshim.url(case.path));
    let out = cmd.output().map_err(|e| format!("curl did not run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "curl failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    error_status(&out.stdout)
}

/// An HTTP/1.1 client that writes the head and the whole body before reading anything.
async fn send_all_then_read(payshim: &Payshim, case: &Case) -> Result<u16, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(&payshim.ca_pem) {
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(payshim.addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let mut head = format!(
        "POST {} HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\n",
        case.path,
        case.body.len()
    );
    for (k, v) in &case.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    tls.write_all(head.as_bytes())
        .await
        .map_err(|e| format!("writing the head: {e}"))?;
    tls.write_all(&case.body)
        .await
        .map_err(|e| format!("writing the body: {e}"))?;
    tls.flush().await.map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = tls.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            answer.extend_from_slice(&buf[..n]);
            if complete(&answer) {
                return Ok(());
            }
        }
    })
    .await;
    match read {
        Err(_) => return Err("no complete answer within 10 s".into()),
        Ok(Err(e)) if !complete(&answer) => return Err(format!("reading the answer: {e}")),
        _ => {}
    }
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no answer head: {text:?}"))?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {head}"))?;
    let json = error_status(body.as_bytes())?;
    if json != status {
        return Err(format!("status {status} but JSON says {json}"));
    }
    Ok(status)
}

/// Whether `answer` holds a head and the whole body its `content-length` announces.
fn complete(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    body.len() >= length
}

fn rustls_pemfile_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.expect("PEM certificate"))
        .collect()
}

/// Runs every client `TRIES` times on each case and fails with every lost answer.
async fn check(payshim: &Payshim, cases: &[Case]) {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &payshim.ca_pem).unwrap();
    let mut lost = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let body_file: PathBuf = dir.path().join(format!("body-{i}"));
        std::fs::write(&body_file, &case.body).unwrap();
        for attempt in 0..TRIES {
            for client in ["curl --http2", "curl --http1.1", "send-all-then-read"] {
                let got = match client {
                    "curl --http2" => curl(payshim, &ca, "--http2", case, &body_file),
                    "curl --http1.1" => curl(payshim, &ca, "--http1.1", case, &body_file),
                    _ => send_all_then_read(payshim, case).await,
                };
                match got {
                    Ok(s) if case.status.contains(&s) => {}
                    Ok(s) => lost.push(format!(
                        "{}, {client}, try {attempt}: status {s}",
                        case.name
                    )),
                    Err(e) => lost.push(format!("{}, {client}, try {attempt}: {e}", case.name)),
                }
            }
        }
    }
    assert!(
        lost.is_empty(),
        "{} answers lost:\n{}",
        lost.len(),
        lost.join("\n")
    );
}

fn unreachable() -> crate::support::Handler {
    handler(|_| Reply::status(500))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_before_the_body_reach_every_client() {
    let world = World::new(unreachable()).await;
    let payshim = Payshim::start(&world.base_config()).await;
    check(&payshim, &base_cases()).await;
    assert_eq!(world.upstream.count(), 0, "nothing refused was forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_refusals_reach_every_client() {
    let world = World::new(unreachable()).await;
    let config = set_key(&world.base_config(), "limits", "per_ip", Some("\"1/h\""));
    let payshim = Payshim::start(&config).await;
    check(&payshim, &[bad_credential_case()]).await;
    assert_eq!(world.upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_down_refusals_reach_every_client() {
    let world = World::new(unreachable()).await;
    let closed = closed_port();
    let config = set_key(
        &world.base_config(),
        "limits",
        "redis_url",
        Some(&format!("\"redis://127.0.0.1:{}\"", closed.port())),
    );
    let config = set_key(&config, "limits", "per_client", Some("\"100/s\""));
    let payshim = Payshim::start(&config).await;
    check(&payshim, &[store_down_case()]).await;
    assert_eq!(world.upstream.count(), 0);
}

/// A refused body that fits the linger budget (8 MiB within a second) is read to its end
/// before the answer leaves. curl 7.88 stops sending when the answer's head arrives and ends
/// the HTTP/2 stream short of its content-length; h2 must reset such a stream
/// (PROTOCOL_ERROR), and when the answer's DATA frame had not left yet curl got the reset
/// instead of the 413: about one run in thirty of the test above failed so. Checked here
/// without curl's timing: when the answer's head arrives, the client has handed over every
/// piece of its 2 MB body (before the fix, payshim answered after 16 KiB, with about 1 MiB
/// of the body still to come).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_http2_body_is_read_to_its_end_before_the_answer() {
    const TOTAL: usize = 2_000_000;
    const PIECE: usize = 16 * 1024;
    let world = World::new(unreachable()).await;
    let payshim = Payshim::start(&world.base_config()).await;
    let taken = Arc::new(AtomicUsize::new(0));
    let body = StreamedBody::new(b'a', TOTAL, PIECE).counted(taken.clone());
    let tls = tls_connect(
        payshim.addr,
        &payshim.ca_pem,
        ALPN_H2,
        None,
        Duration::from_secs(5),
    )
    .await
    .expect("TLS");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    let (name, value) = bearer();
    let (ct_name, ct_value) = json();
    let request = Request::post(payshim.url(PAYMENT_PATH))
        .version(Version::HTTP_2)
        .header(name, value)
        .header(ct_name, ct_value)
        .body(body)
        .unwrap();
    let answer = sender.send_request(request).await.expect("an answer");
    assert_eq!(answer.status(), 413);
    assert_eq!(
        taken.load(Ordering::SeqCst),
        TOTAL.div_ceil(PIECE),
        "the answer came before the body was read to its end"
    );
    assert_eq!(world.upstream.count(), 0);
}
