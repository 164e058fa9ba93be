//! Driving Chromium: the steps of the plan (one page, SDK bundle and scenario each) and
//! tests/browser/run.mjs, which runs them in headless Chromium and reports what each page
//! got.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::Command;

use super::{
    BAD_CARD, BAD_CARD_ORDER, CARD, CHROMIUM, DECLINED_CARD, DECLINED_ORDER, EXPIRED_ORDER,
    FOREIGN_ORDER, MOLTIN_ORDER, PAY_ORDER, STALE_ORDER,
};
use crate::support;
use support::node::{ensure_packages, require_tool};

fn require_chromium() {
    let out = std::process::Command::new(CHROMIUM)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("{CHROMIUM} is required for the browser test ({e}); `apt-get install chromium` (scripts/test.sh does)")
        });
    assert!(out.status.success(), "{CHROMIUM} --version failed");
}

/// Runs tests/browser/run.mjs on `plan` and returns its results (step name to result).
pub(super) async fn run_browser(plan: &Value) -> (Value, String) {
    let node = require_tool("node").await;
    ensure_packages().await;
    require_chromium();
    let scratch = tempfile::tempdir().unwrap();
    let plan_path = scratch.path().join("plan.json");
    std::fs::write(&plan_path, plan.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/run.mjs");
    let run = Command::new("node")
        .arg(script)
        .arg(&plan_path)
        .current_dir(scratch.path())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the browser run finished within 240 s")
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = format!("node {node}\n--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert!(
        out.status.success(),
        "run.mjs failed: {}\n{report}",
        out.status
    );
    let results = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON result on stdout\n{report}"));
    (results, report)
}

/// The steps run.mjs runs, in order: `(name, page origin, SDK bundle, scenario, args)`.
pub(super) fn steps(
    shop: &str,
    foreign: &str,
    args: impl Fn(&str, &str) -> Value,
    stale: Value,
    expired: Value,
) -> Value {
    let seeded = |order: &str, token: Value| {
        let mut a = args(order, CARD);
        a["stale"] = token;
        a["storageKey"] = json!("epCredentials");
        a
    };
    let steps = [
        ("pay", shop, "elasticpath", "pay", args(PAY_ORDER, CARD)),
        (
            "pay_moltin",
            shop,
            "moltin",
            "pay",
            args(MOLTIN_ORDER, CARD),
        ),
        (
            "bad_card",
            shop,
            "elasticpath",
            "pay",
            args(BAD_CARD_ORDER, BAD_CARD),
        ),
        (
            "declined",
            shop,
            "elasticpath",
            "pay",
            args(DECLINED_ORDER, DECLINED_CARD),
        ),
        (
            "stale",
            shop,
            "elasticpath",
            "staleToken",
            seeded(STALE_ORDER, stale),
        ),
        (
            "expired",
            shop,
            "elasticpath",
            "staleToken",
            seeded(EXPIRED_ORDER, expired),
        ),
        (
            "foreign",
            foreign,
            "elasticpath",
            "foreign",
            args(FOREIGN_ORDER, CARD),
        ),
    ];
    steps
        .into_iter()
        .map(|(name, origin, sdk, scenario, args)| {
            json!({
                "name": name,
                "page": format!("{origin}/storefront.html?sdk={sdk}"),
                "scenario": scenario,
                "args": args,
            })
        })
        .collect()
}
