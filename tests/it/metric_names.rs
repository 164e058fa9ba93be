//! Every metric the alert rules (`deploy/prometheus/payshim-rules.yml`) or the dashboard
//! (`deploy/grafana/payshim.json`) use is exported (issue 16, item 7): the real binary
//! serves a payment, its idempotent replay, a passthrough and a refused request, then its
//! `/metrics` must hold every name the PromQL expressions read, and every label their
//! selectors match on.
//!
//! prometheus-client prints a labelled family (`# TYPE` line included) only once it has a
//! sample, so the requests above are what makes those families appear.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};

use crate::support::cards::Binary;
use crate::support::payshim::{ORDER, STOREFRONT_KEY, admin_get, payment_body, set_key};
use crate::support::promql::{
    DASHBOARD, RULES, dashboard_exprs, read_repo_file, rule_exprs, selectors,
};
use crate::support::{HttpVersion, TestClient, World, moltin_like};

/// Exported sample names with the label names seen on them, from the text format. The
/// `# TYPE` lines add their family's sample names (`_total`, `_bucket`/`_sum`/`_count`,
/// `_info`) in case a family is declared without the sample a file reads.
fn exported(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(decl) = line.strip_prefix("# TYPE ") {
            let mut parts = decl.split_whitespace();
            let (Some(family), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            for suffix in suffixes {
                names.entry(format!("{family}{suffix}")).or_default();
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            let labels = names.entry(line[..end].to_string()).or_default();
            if let Some(inner) = line[end..]
                .strip_prefix('{')
                .and_then(|r| r.split('}').next())
            {
                for pair in inner.split(',') {
                    if let Some((label, _)) = pair.split_once('=') {
                        labels.insert(label.trim().to_string());
                    }
                }
            }
        }
    }
    names
}

/// Every metric the rules and the dashboard read: name -> (label names, where used).
fn used() -> BTreeMap<String, (BTreeSet<String>, BTreeSet<&'static str>)> {
    let mut used: BTreeMap<String, (BTreeSet<String>, BTreeSet<&'static str>)> = BTreeMap::new();
    let sources = [
        (RULES, rule_exprs(&read_repo_file(RULES))),
        (DASHBOARD, dashboard_exprs(&read_repo_file(DASHBOARD))),
    ];
    for (file, exprs) in sources {
        assert!(exprs.len() >= 9, "{file}: only {} expressions", exprs.len());
        for selector in exprs.iter().flat_map(|e| selectors(e)) {
            let entry = used.entry(selector.name).or_default();
            entry.0.extend(selector.labels);
            entry.1.insert(file);
        }
    }
    used
}

/// The labels every series gets from Prometheus itself (the scrape target), or that a
/// histogram bucket carries.
const TARGET_LABELS: &[&str] = &["job", "instance", "le"];

fn request(method: Method, url: String, bearer: &str, headers: &[(&str, &str)]) -> Request<Bytes> {
    let mut req = Request::builder()
        .method(method.clone())
        .uri(url)
        .header("authorization", format!("Bearer {bearer}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let body = if method == Method::POST {
        Bytes::from(payment_body())
    } else {
        Bytes::new()
    };
    req.body(body).expect("request")
}

/// Sends what makes the labelled families appear: a payment and its replay (requests,
/// latencies, outcomes, idempotency), a passthrough and a refused request (rejections).
async fn drive(payshim: &Binary, ca_pem: &str) {
    let client = TestClient::new(ca_pem, HttpVersion::Http1);
    let payments = payshim.url(&format!("/v2/orders/{ORDER}/payments"));
    let keyed = [
        ("content-type", "application/json"),
        ("idempotency-key", "metric-names-1"),
    ];
    let cases = [
        (
            Method::POST,
            payments.clone(),
            STOREFRONT_KEY,
            &keyed[..],
            201,
        ),
        (Method::POST, payments, STOREFRONT_KEY, &keyed[..], 201),
        (
            Method::GET,
            payshim.url(&format!("/v2/orders/{ORDER}")),
            STOREFRONT_KEY,
            &[][..],
            200,
        ),
        (
            Method::GET,
            payshim.url(&format!("/v2/orders/{ORDER}")),
            "not-a-key",
            &[][..],
            401,
        ),
    ];
    for (method, url, bearer, headers, status) in cases {
        let sent = client.send(request(method.clone(), url.clone(), bearer, headers));
        let resp = tokio::time::timeout(Duration::from_secs(20), sent)
            .await
            .unwrap_or_else(|_| panic!("{method} {url}: no answer in 20 s\n{}", payshim.output()))
            .unwrap_or_else(|e| panic!("{method} {url}: {e}\n{}", payshim.output()));
        assert_eq!(resp.status, status, "{method} {url}: {}", resp.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_and_the_dashboard_use_is_exported() {
    let world = World::new(moltin_like()).await;
    let config = set_key(&world.base_config(), "log", "level", Some("\"info\""));
    let config =
        format!("{config}\n[[routes]]\nmethod = \"GET\"\npath = \"/v2/orders/{{uuid}}\"\n");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut payshim = Binary::start(dir.path(), "metric-names", &config).await;
    drive(&payshim, &world.pki.ca_pem).await;
    let (status, text) = admin_get(payshim.admin, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    payshim.stop().await;

    let exported = exported(&text);
    let mut problems = Vec::new();
    for (name, (labels, files)) in used() {
        let files: Vec<&str> = files.into_iter().collect();
        let Some(seen) = exported.get(&name) else {
            problems.push(format!(
                "{name} (used in {}) is not exported",
                files.join(", ")
            ));
            continue;
        };
        for label in labels {
            if !seen.contains(&label) && !TARGET_LABELS.contains(&label.as_str()) {
                problems.push(format!(
                    "{name}: label {label} (used in {}) is not on its samples",
                    files.join(", ")
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n--- /metrics\n{text}",
        problems.join("\n")
    );
}

/// The values payshim itself gives the labels the files match on (never a client's).
fn known_values(label: &str) -> Option<Vec<&'static str>> {
    use payshim::limit::Scope;
    use payshim::outcome::Outcome;
    let scopes = [
        Scope::Client,
        Scope::Ip,
        Scope::Order,
        Scope::Card,
        Scope::CardAttempts,
        Scope::Breaker,
    ];
    match label {
        // Refusal reasons: the files name only the limits' (and patterns for the rest).
        "reason" => Some(scopes.iter().map(|s| s.as_str()).collect()),
        "outcome" => Some(Outcome::ALL.iter().map(|o| o.as_str()).collect()),
        "kind" => Some(vec!["payment", "transaction"]),
        "result" => Some(vec!["ok", "refused"]),
        _ => None,
    }
}

/// A label value the rules or the dashboard match exactly (or as one alternative of a
/// regular expression) is one payshim writes: a typo would silence an alert for good.
#[test]
fn label_values_the_files_match_are_payshims_own() {
    let sources = [
        (RULES, rule_exprs(&read_repo_file(RULES))),
        (DASHBOARD, dashboard_exprs(&read_repo_file(DASHBOARD))),
    ];
    let mut unknown = Vec::new();
    let mut checked = 0;
    for (file, exprs) in &sources {
        for selector in exprs.iter().flat_map(|e| selectors(e)) {
            for (label, value) in &selector.matched {
                let Some(known) = known_values(label) else {
                    continue;
                };
                for alternative in value.split('|') {
                    if alternative.contains(['.', '*', '+', '?', '[', '(', '^', '$', '\\']) {
                        continue; // A pattern, not a value.
                    }
                    checked += 1;
                    if !known.contains(&alternative) {
                        unknown.push(format!(
                            "{file}: {}{{{label}=~\"{alternative}\"}}",
                            selector.name
                        ));
                    }
                }
            }
        }
    }
    assert!(checked >= 10, "only {checked} label values checked");
    assert!(
        unknown.is_empty(),
        "values payshim never writes:\n{}",
        unknown.join("\n")
    );
}

#[test]
fn exported_names_come_from_samples_and_type_lines() {
    let text = "# TYPE payshim_x counter\n# TYPE payshim_h histogram\n\
                payshim_h_bucket{route=\"a\",le=\"0.1\"} 1\npayshim_g 3\n# EOF\n";
    let names = exported(text);
    for name in [
        "payshim_x_total",
        "payshim_h_bucket",
        "payshim_h_sum",
        "payshim_h_count",
        "payshim_g",
    ] {
        assert!(names.contains_key(name), "{name} in {names:?}");
    }
    assert!(names["payshim_h_bucket"].contains("route"));
    assert!(!names.contains_key("payshim_x"));
}
