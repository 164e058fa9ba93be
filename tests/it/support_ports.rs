//! Self-tests of how `support` gets ports: never by binding port 0 and releasing it (a test
//! running in parallel could take the port in between), always from the kernel or a range
//! the kernel never hands out, read back from what actually listens.

use crate::support;

use bytes::Bytes;
use http::Request;

use support::cards::Binary;
use support::payshim::{admin_get, base_config, set_key, toml_str};
use support::redis::{RedisServer, candidate_ports};
use support::serving::{Bound, bound_addrs};
use support::{HttpVersion, TestClient, TestPki, Upstream, moltin_like};

/// The real binary on port 0, in either log format: its serving line names two distinct
/// addresses, and it serves on them (TLS on the public one, `/healthz` on the admin one).
#[tokio::test]
async fn the_binary_names_the_addresses_it_bound_in_either_log_format() {
    let pki = TestPki::new();
    let upstream = Upstream::start(&pki, moltin_like()).await;
    let dir = tempfile::tempdir().unwrap();
    let client = TestClient::new(&pki.ca_pem, HttpVersion::Http1);
    for format in ["json", "pretty"] {
        let config = base_config(&pki, &upstream.url(), &dir.path().join(format));
        let config = set_key(&config, "log", "level", Some("\"info\""));
        let config = set_key(&config, "log", "format", Some(&toml_str(format)));
        let mut binary = Binary::start(dir.path(), format, &config).await;
        assert_ne!(binary.public, binary.admin, "{format}");
        assert_ne!(binary.public.port(), 0, "{format}");
        let (status, body) = admin_get(binary.admin, "/healthz").await;
        assert_eq!(status, 200, "{format}: {body}");
        let resp = client
            .send(
                Request::get(binary.url("/v2/not-a-route"))
                    .body(Bytes::new())
                    .unwrap(),
            )
            .await
            .unwrap_or_else(|e| panic!("{format}: {e}\n{}", binary.output()));
        assert_eq!(resp.status, 404, "{format}");
        binary.stop().await;
    }
}

/// Only a complete serving line counts (a line still being written could hold half a
/// port), and only the serving line itself, not one that merely mentions it.
#[test]
fn only_a_complete_serving_line_names_the_addresses() {
    let json = r#"{"level":"INFO","message":"payshim serving","listen":"127.0.0.1:41017","admin":"127.0.0.1:39121","target":"payshim"}"#;
    let pretty = "2026-12-05T20:53:02.197418Z  INFO payshim: payshim serving \
                  listen=127.0.0.1:41017 admin=127.0.0.1:39121 upstream=\"sandbox\"";
    let want = Bound {
        public: "127.0.0.1:41017".parse().unwrap(),
        admin: "127.0.0.1:39121".parse().unwrap(),
    };
    for line in [json, pretty] {
        assert_eq!(bound_addrs(&format!("{line}\n")), Some(want), "{line}");
        assert_eq!(bound_addrs(line), None, "incomplete: {line}");
        let half = format!(
            "{{\"message\":\"audit log open\"}}\n{}",
            &line[..line.len() - 22]
        );
        assert_eq!(bound_addrs(&half), None, "half written: {half}");
    }
    let mention = r#"{"message":"request","path":"/payshim serving","listen":"127.0.0.1:1","admin":"127.0.0.1:2"}"#;
    assert_eq!(bound_addrs(&format!("{mention}\n")), None);
    let later = format!("{mention}\n{json}\n");
    assert_eq!(bound_addrs(&later), Some(want));
}

/// Redis servers get distinct ports below the kernel's ephemeral range, where no port-0
/// listener and no outgoing connection can take them, and a stopped server keeps its port.
#[test]
fn redis_servers_get_distinct_ports_the_kernel_never_hands_out() {
    let range = candidate_ports();
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let first_ephemeral: u16 = ephemeral
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(range.end <= first_ephemeral, "{range:?} vs {ephemeral}");
    let mut a = RedisServer::start();
    let b = RedisServer::start();
    assert_ne!(a.port(), b.port());
    for port in [a.port(), b.port()] {
        assert!(range.contains(&port), "{port} not in {range:?}");
    }
    let port = a.port();
    a.stop();
    let c = RedisServer::start();
    assert_ne!(c.port(), port, "a stopped server's port is still reserved");
    a.start_again();
    assert_eq!(a.port(), port);
}
