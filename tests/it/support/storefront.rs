//! The test storefront's own HTTPS origin: a static server (the upstream test double with
//! a file-serving handler, so its requests are recorded too) for tests/browser's page and
//! the official SDKs' browser bundles, each under `/sdk/<name>.js`, read from
//! tests/sdk/node_modules.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::node::Sdk;
use super::pki::TestPki;
use super::upstream::{Recorded, Reply, Upstream, handler};

/// Starts a storefront origin on `https://localhost:PORT` (a certificate from the test CA).
pub async fn start(pki: &TestPki) -> Upstream {
    // The SDK bundles it serves come from the pinned packages: install them first.
    super::node::ensure_packages().await;
    let browser = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("browser");
    let html = "text/html; charset=utf-8";
    let js = "text/javascript; charset=utf-8";
    let mut files = HashMap::new();
    files.insert(
        "/storefront.html",
        (html, read(&browser.join("storefront.html"))),
    );
    files.insert("/storefront.js", (js, read(&browser.join("storefront.js"))));
    files.insert("/sdk/moltin.js", (js, read(&Sdk::Moltin.browser_bundle())));
    files.insert(
        "/sdk/elasticpath.js",
        (js, read(&Sdk::ElasticPath.browser_bundle())),
    );
    let files = Arc::new(files);
    Upstream::start(
        pki,
        handler(move |req: &Recorded| {
            let path = req.path.split('?').next().unwrap_or_default();
            match files.get(path) {
                Some((content_type, body)) if req.method == http::Method::GET => Reply::Respond {
                    status: 200,
                    headers: vec![
                        ("content-type".into(), (*content_type).into()),
                        ("cache-control".into(), "no-store".into()),
                    ],
                    body: body.clone(),
                },
                _ => Reply::status(404),
            }
        }),
    )
    .await
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}
