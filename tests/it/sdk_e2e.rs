//! End to end with the real official SDK (issue 4): `@moltin/sdk` (pinned by
//! tests/sdk/package-lock.json) pays through payshim exactly as its documentation shows,
//! `gateway({ client_id, host })` then `Orders.Payment(orderId, {...})`, with only `host`
//! changed and the test CA trusted through `NODE_EXTRA_CA_CERTS`.
//!
//! Needs node and npm (never skipped: the test fails with a message if they are missing).
//! It runs `npm ci` in tests/sdk when node_modules is not there yet; CI runs
//! `npm ci --prefix tests/sdk` first.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use http::Method;
use serde_json::{Value, json};
use tokio::process::Command;

use support::payshim::{ORDER, Payshim, SESSION_KEY, UPSTREAM_TOKEN, base_config, toml_str};
use support::{TestPki, Upstream, moltin_like};

/// The pinned SDK version (tests/sdk/package.json).
const SDK_VERSION: &str = "36.0.0";
const PUBLIC_ID: &str = "pk-sdk-e2e-6a5b4c3d2e1f";

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("sdk")
}

/// `program --version`, or a clear failure when it is not installed.
async fn require_tool(program: &str) -> String {
    let out = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "`{program}` is required for the SDK end-to-end test and could not be run ({e}); \
                 install Node.js 18+ with npm"
            )
        });
    assert!(
        out.status.success(),
        "`{program} --version` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Installs the locked SDK (`npm ci`) unless it is already there. Serialized: the tests of
/// this file run in parallel and must not run two installs in the same folder.
async fn ensure_sdk_installed() {
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = sdk_dir();
    let installed = dir
        .join("node_modules")
        .join("@moltin")
        .join("sdk")
        .join("package.json");
    if !installed.exists() {
        // Blocking on purpose (under the lock); nothing else runs on this test's runtime yet.
        let out = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .expect("run npm ci");
        assert!(
            out.status.success(),
            "`npm ci` in {} failed:\n{}\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let package: Value = serde_json::from_str(
        &std::fs::read_to_string(&installed).expect("read the installed SDK's package.json"),
    )
    .expect("SDK package.json is JSON");
    assert_eq!(
        package["version"], SDK_VERSION,
        "installed @moltin/sdk is not the pinned version; run `npm ci` in tests/sdk"
    );
}

/// The `sdk-request {json}` trace lines pay.mjs writes to stderr.
fn sdk_requests(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("sdk-request "))
        .map(|j| serde_json::from_str(j).expect("trace line is JSON"))
        .collect()
}

/// What one run of pay.mjs against payshim produced.
struct SdkRun {
    /// node's stdout and stderr, for failure messages.
    report: String,
    /// The last JSON line on stdout: the SDK's result.
    result: Value,
    /// The requests the SDK made (pay.mjs's trace).
    sent: Vec<Value>,
    /// `localhost:PORT` of payshim.
    host: String,
}

/// Installs the SDK if needed, starts payshim (client `web-sdk` with `PUBLIC_ID`, may only
/// pay) in front of `upstream`, runs pay.mjs with only the host changed and the test CA
/// trusted, in a fresh scratch directory, and asserts it succeeded.
async fn pay_with_sdk(pki: &TestPki, upstream: &Upstream, audit: &Path) -> SdkRun {
    let scratch = tempfile::tempdir().unwrap();
    pay_with_sdk_in(pki, upstream, audit, SESSION_KEY, scratch.path()).await
}

/// `pay_with_sdk` with a given session key, running node in `workdir` (where the SDK
/// keeps its token between runs, in ./localStorage).
async fn pay_with_sdk_in(
    pki: &TestPki,
    upstream: &Upstream,
    audit: &Path,
    session_key: &str,
    workdir: &Path,
) -> SdkRun {
    let node = require_tool("node").await;
    require_tool("npm").await;
    ensure_sdk_installed().await;

    let mut toml = base_config(pki, &upstream.url(), audit);
    toml.push_str(&format!(
        r#"
[auth]
session_key = {key}

[[clients]]
id = "web-sdk"
public_id = "{PUBLIC_ID}"
routes = ["payments"]
"#,
        key = toml_str(session_key)
    ));
    let payshim = Payshim::start(&toml).await;
    let host = format!("localhost:{}", payshim.addr.port());

    let run = Command::new("node")
        .arg(sdk_dir().join("pay.mjs"))
        .args([host.as_str(), PUBLIC_ID, ORDER])
        .current_dir(workdir)
        .env("NODE_EXTRA_CA_CERTS", &pki.ca_path)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("node pay.mjs finished within 60 s")
        .expect("run node");
    payshim.stop().await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = format!("node {node}\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert!(
        out.status.success(),
        "pay.mjs failed: {}\n{report}",
        out.status
    );
    let result: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON result on stdout\n{report}"));
    SdkRun {
        sent: sdk_requests(&stderr),
        report,
        result,
        host,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdk_pays_through_payshim() {
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, moltin_like()).await;
    let audit = tempfile::tempdir().unwrap();
    let SdkRun {
        report,
        result,
        sent,
        host,
    } = pay_with_sdk(&pki, &upstream, audit.path()).await;

    // The SDK resolved with the transaction the upstream created.
    assert_eq!(result["data"]["type"], "transaction", "{report}");
    assert_eq!(result["data"]["gateway"], "card_connect");
    assert_eq!(result["data"]["transaction-type"], "purchase");
    assert_eq!(
        result["data"]["relationships"]["order"]["data"]["id"], ORDER,
        "{report}"
    );

    // What the SDK sent to payshim: its token exchange (implicit grant), then the payment
    // with payshim's session token.
    assert_eq!(sent.len(), 2, "SDK requests: {sent:#?}\n{report}");
    assert_eq!(sent[0]["method"], "POST");
    assert_eq!(sent[0]["url"], format!("https://{host}/oauth/access_token"));
    assert_eq!(sent[0]["grant_type"], "implicit");
    assert_eq!(
        sent[0]["headers"]["content-type"],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(
        sent[1]["url"],
        format!("https://{host}/v2/orders/{ORDER}/payments")
    );
    assert_eq!(sent[1]["method"], "POST");
    let auth = sent[1]["headers"]["authorization"]
        .as_str()
        .unwrap_or_default();
    assert!(
        auth.starts_with("Bearer ps1."),
        "the SDK did not use payshim's session token: {auth}"
    );
    for request in &sent {
        assert_eq!(request["headers"]["x-moltin-sdk-language"], "JS");
        assert_eq!(request["headers"]["x-moltin-sdk-version"], SDK_VERSION);
    }
    assert_eq!(sent[1]["headers"]["x-moltin-application"], "epcc sdk");
    assert_eq!(sent[1]["headers"]["content-type"], "application/json");

    // What reached the upstream: exactly the payment, with the store's token and the
    // canonical card body, never the token exchange.
    let recorded = upstream.requests();
    let paths: Vec<String> = recorded
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        paths,
        vec![format!("POST /v2/orders/{ORDER}/payments")],
        "{report}"
    );
    assert!(
        recorded.iter().all(|r| !r.path.starts_with("/oauth")),
        "the SDK's token exchange reached the upstream"
    );
    let req = &recorded[0];
    assert_eq!(req.method, Method::POST);
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {UPSTREAM_TOKEN}"))
    );
    assert_eq!(req.headers.get_all("authorization").iter().count(), 1);
    for (name, value) in &req.headers {
        assert!(
            !String::from_utf8_lossy(value.as_bytes()).contains("ps1."),
            "payshim's session token reached the upstream in {name}"
        );
    }
    assert_eq!(
        req.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        req.json(),
        json!({
            "data": {
                "gateway": "card_connect",
                "method": "purchase",
                "first_name": "Ada",
                "last_name": "Lovelace",
                "number": "4111111111111111",
                "month": "12",
                "year": "2031",
                "verification_value": "123"
            }
        })
    );
    // The SDK's own headers travel on to the API.
    assert_eq!(req.header("x-moltin-sdk-language").as_deref(), Some("JS"));
    assert_eq!(
        req.header("x-moltin-sdk-version").as_deref(),
        Some(SDK_VERSION)
    );
    assert_eq!(
        req.header("x-moltin-application").as_deref(),
        Some("epcc sdk")
    );
    println!(
        "SDK {SDK_VERSION} sent: {}\nupstream received headers: {:?}",
        serde_json::to_string_pretty(&sent).unwrap(),
        req.headers
            .iter()
            .filter(|(n, _)| n.as_str() != "authorization")
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_resends_after_payshims_401_and_the_payment_is_made_once() {
    // The SDK keeps its token between runs. A token from another deployment (another
    // session key) is refused with 401 before anything goes upstream; the SDK then fetches
    // a new token and resends, and the store is charged exactly once.
    const OTHER_SESSION_KEY: &str = "other-session-key-sdk-9f8e7d6c5b4a39281706f5e4d3c2b1a0";
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, moltin_like()).await;
    let audit = tempfile::tempdir().unwrap();
    let workdir = tempfile::tempdir().unwrap();
    let first = pay_with_sdk_in(
        &pki,
        &upstream,
        audit.path(),
        OTHER_SESSION_KEY,
        workdir.path(),
    )
    .await;
    assert_eq!(first.sent.len(), 2, "{}", first.report);
    assert_eq!(upstream.count(), 1);

    let second = pay_with_sdk_in(&pki, &upstream, audit.path(), SESSION_KEY, workdir.path()).await;
    let report = &second.report;
    let calls: Vec<String> = second
        .sent
        .iter()
        .map(|r| {
            let url = r["url"].as_str().unwrap_or_default();
            let path = url.split_once(&second.host).map_or(url, |(_, p)| p);
            format!("{} {path}", r["method"].as_str().unwrap_or_default())
        })
        .collect();
    let payment = format!("POST /v2/orders/{ORDER}/payments");
    assert_eq!(
        calls,
        vec![
            payment.clone(),
            "POST /oauth/access_token".to_string(),
            payment.clone()
        ],
        "stored token, 401, new token, resend\n{report}"
    );
    assert_eq!(second.result["data"]["type"], "transaction", "{report}");
    // One payment upstream per run: the refused attempt never left payshim.
    let paths: Vec<String> = upstream
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(paths, vec![payment.clone(), payment], "{report}");
}

/// CRC-32 (IEEE), for the gzip trailer.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// `data` as a valid gzip stream (one stored deflate block; `data` under 64 KiB).
fn gzip(data: &[u8]) -> Vec<u8> {
    let len = u16::try_from(data.len()).expect("under 64 KiB");
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.push(0x01); // final block, stored
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// The audit records of `event`, waiting (at most 5 s) until there are `n`.
async fn audit_records(dir: &Path, event: &str, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(dir.join("payshim.jsonl")).unwrap_or_default();
        let records: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| r["event"] == event)
            .collect();
        if records.len() >= n || std::time::Instant::now() > deadline {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_payment_with_a_compressing_upstream_is_audited_with_its_transaction() {
    // Under Node the SDK asks for compressed answers (`accept-encoding: br, gzip, deflate`),
    // and the real API (like most HTTP servers) honours that when asked. payshim must still
    // be able to read the answer it audits: the transaction id and a decline.
    const DECLINED_ID: &str = "9b8a7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
    let pki = TestPki::new();
    let upstream = Upstream::start(
        &pki,
        support::handler(|req| {
            let body = json!({ "data": {
                "id": DECLINED_ID,
                "type": "transaction",
                "gateway": "card_connect",
                "transaction-type": "purchase",
                "status": "failed",
                "amount": 4999,
                "currency": "USD",
                "relationships": { "order": { "data": { "type": "order", "id": ORDER } } }
            }})
            .to_string();
            let gzip_ok = req
                .header("accept-encoding")
                .is_some_and(|v| v.contains("gzip"));
            let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
            let body = if gzip_ok {
                headers.push(("content-encoding".into(), "gzip".into()));
                gzip(body.as_bytes())
            } else {
                body.into_bytes()
            };
            support::Reply::Respond {
                status: 201,
                headers,
                body,
            }
        }),
    )
    .await;
    let audit = tempfile::tempdir().unwrap();
    let run = pay_with_sdk(&pki, &upstream, audit.path()).await;
    // The SDK itself decodes the answer either way.
    assert_eq!(run.result["data"]["id"], DECLINED_ID, "{}", run.report);
    assert_eq!(upstream.count(), 1);
    let completed = audit_records(audit.path(), "payment.completed", 1).await;
    assert_eq!(completed.len(), 1, "{completed:?}");
    assert_eq!(
        completed[0]["transaction_id"], DECLINED_ID,
        "the audit record lacks the transaction: {}",
        completed[0]
    );
    assert_eq!(
        completed[0]["outcome"], "declined",
        "a declined payment audited as {}",
        completed[0]["outcome"]
    );
}
