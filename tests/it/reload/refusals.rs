//! A reload that cannot be applied is refused whole: a broken certificate, a certificate
//! with another's key, an invalid value or a key that needs a restart is counted, logged
//! at ERROR with the key named, and the old certificate and config are kept.

use std::time::Duration;

use super::{
    OK, REFUSED, Scene, metric, pem_fingerprint, rewrite_config, served_fingerprint, wait_metric,
};
use crate::support::cards::Binary;
use crate::support::payshim::{admin_get, set_key};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_certificate_invalid_config_and_restart_only_keys_are_refused() {
    let scene = Scene::new(Duration::ZERO).await;
    let config = scene.config("\"off\"");
    let mut binary = scene.start(&config).await;
    let ca = scene.pki.ca_pem.clone();
    let served = pem_fingerprint(&scene.cert);
    let good_cert = std::fs::read(&scene.cert).unwrap();

    // Each refusal: counted, the ERROR names the key, the old certificate is served,
    // and payshim stays ready.
    let mut refusals = 0.0;
    let mut refused = async |binary: &mut Binary, key: &str| {
        binary.signal("HUP");
        refusals += 1.0;
        wait_metric(binary, REFUSED, refusals).await;
        let log = std::fs::read_to_string(&binary.stdout).unwrap();
        let line = log
            .lines()
            .rfind(|l| l.contains("reload refused"))
            .unwrap_or_else(|| panic!("no refusal logged\n{}", binary.output()));
        assert!(line.contains("\"ERROR\""), "{line}");
        assert!(line.contains(key), "the refusal names {key}: {line}");
        assert_eq!(served_fingerprint(binary, &ca).await, served);
        assert_eq!(admin_get(binary.admin, "/readyz").await.0, 200);
    };

    std::fs::write(&scene.cert, "-----BEGIN CERTIFICATE-----\nbroken\n").unwrap();
    refused(&mut binary, "server.cert").await;

    // A certificate with another certificate's key.
    let (other_cert, _) = scene.pki.server_cert();
    std::fs::copy(&other_cert, &scene.cert).unwrap();
    refused(&mut binary, "server.key").await;
    std::fs::write(&scene.cert, &good_cert).unwrap();

    rewrite_config(
        &binary,
        &set_key(&config, "limits", "per_client", Some("\"lots\"")),
    );
    refused(&mut binary, "limits.per_client").await;

    rewrite_config(
        &binary,
        &set_key(&config, "upstream", "timeout", Some("\"9s\"")),
    );
    refused(&mut binary, "upstream.timeout").await;
    rewrite_config(&binary, &set_key(&config, "server", "workers", Some("3")));
    refused(&mut binary, "server.workers").await;

    // Put back, the next reload goes through.
    rewrite_config(&binary, &config);
    binary.signal("HUP");
    wait_metric(&binary, OK, 1.0).await;
    assert_eq!(metric(&binary, REFUSED).await, refusals);
    binary.stop().await;
}
