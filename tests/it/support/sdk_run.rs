//! The official JS SDKs run against payshim under Node (tests/sdk/pay.mjs), for the SDK
//! end-to-end and retry tests: payshim started in process with a browser client, one run
//! of pay.mjs with a chosen SDK and scenario, and what the SDK sent and got back (its
//! trace on stderr) and resolved with.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use super::node::{Sdk, ensure_packages, require_tool, sdk_dir};
use super::payshim::{ORDER, Payshim, SESSION_KEY, base_config, toml_str};
use super::pki::TestPki;
use super::upstream::Upstream;

pub const PUBLIC_ID: &str = "pk-sdk-e2e-6a5b4c3d2e1f";

/// The `sdk-request {json}` / `sdk-response {json}` trace lines pay.mjs writes to stderr.
fn traced(stderr: &str, prefix: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(|j| serde_json::from_str(j).expect("trace line is JSON"))
        .collect()
}

/// What one run of pay.mjs against payshim produced.
pub struct SdkRun {
    /// node's stdout and stderr, for failure messages.
    pub report: String,
    /// The last JSON line on stdout: the SDK's result.
    pub result: Value,
    /// The requests the SDK made (pay.mjs's trace).
    pub sent: Vec<Value>,
    /// The status of each answer the SDK got, in order.
    pub statuses: Vec<u16>,
    /// `localhost:PORT` of payshim.
    pub host: String,
}

impl SdkRun {
    /// Each request as `METHOD /path`.
    pub fn calls(&self) -> Vec<String> {
        self.sent
            .iter()
            .map(|r| {
                let url = r["url"].as_str().unwrap_or_default();
                let path = url.split_once(&self.host).map_or(url, |(_, p)| p);
                format!("{} {path}", r["method"].as_str().unwrap_or_default())
            })
            .collect()
    }
}

/// A payshim config in front of `upstream` with the browser client `web-sdk`
/// (`PUBLIC_ID`, implicit grant), allowed `routes` (a TOML list).
pub fn sdk_config(
    pki: &TestPki,
    upstream: &Upstream,
    audit: &Path,
    session_key: &str,
    routes: &str,
) -> String {
    let mut toml = base_config(pki, &upstream.url(), audit);
    toml.push_str(&format!(
        r#"
[auth]
session_key = {key}

[[clients]]
id = "web-sdk"
public_id = "{PUBLIC_ID}"
routes = {routes}
"#,
        key = toml_str(session_key)
    ));
    toml
}

/// Installs the SDKs if needed, starts payshim on `toml`, runs pay.mjs with `sdk` and
/// `scenario`, only the host changed and the test CA trusted, in `workdir` (where the SDK
/// keeps its token between runs, in ./localStorage), and asserts node exited 0.
pub async fn run_sdk(
    pki: &TestPki,
    toml: &str,
    sdk: Sdk,
    scenario: &str,
    workdir: &Path,
) -> SdkRun {
    let node = require_tool("node").await;
    ensure_packages().await;
    let payshim = Payshim::start(toml).await;
    let host = format!("localhost:{}", payshim.addr.port());
    let run = Command::new("node")
        .arg(sdk_dir().join("pay.mjs"))
        .args([host.as_str(), PUBLIC_ID, ORDER, sdk.package(), scenario])
        .current_dir(workdir)
        .env("NODE_EXTRA_CA_CERTS", &pki.ca_path)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("node pay.mjs finished within 90 s")
        .expect("run node");
    payshim.stop().await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = format!(
        "node {node}, {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        sdk.package()
    );
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
    let statuses = traced(&stderr, "sdk-response ")
        .iter()
        .map(|r| r["status"].as_u64().expect("status") as u16)
        .collect();
    SdkRun {
        sent: traced(&stderr, "sdk-request "),
        statuses,
        report,
        result,
        host,
    }
}

/// `run_sdk` for one card_connect purchase (scenario `pay`) by a client that may only
/// pay, in a fresh scratch directory.
pub async fn pay_with_sdk(pki: &TestPki, upstream: &Upstream, audit: &Path, sdk: Sdk) -> SdkRun {
    let scratch = tempfile::tempdir().unwrap();
    let toml = sdk_config(pki, upstream, audit, SESSION_KEY, r#"["payments"]"#);
    run_sdk(pki, &toml, sdk, "pay", scratch.path()).await
}

/// `METHOD path` of every request the upstream received.
pub fn upstream_calls(upstream: &Upstream) -> Vec<String> {
    upstream
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}
