//! A new certificate without a restart: SIGHUP serves it to new handshakes while the
//! connections and payments already open carry on, and with a check interval a file
//! change alone reloads it, overwritten in place or swapped in a Kubernetes Secret volume.

use std::time::Duration;

use bytes::Bytes;
use http::Request;

use super::{
    OK, REFUSED, Scene, WAIT, connect, metric, pem_fingerprint, served_fingerprint, status_on,
    transactions_path, wait_metric, wait_served,
};
use crate::support::payshim::{ORDER, STOREFRONT_KEY, payment_body, set_key, toml_path};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_serves_the_new_certificate_and_keeps_connections_and_payments() {
    let scene = Scene::new(Duration::from_millis(1500)).await;
    let mut binary = scene.start(&scene.config("\"off\"")).await;
    let ca = scene.pki.ca_pem.clone();
    let first = pem_fingerprint(&scene.cert);
    assert_eq!(served_fingerprint(&binary, &ca).await, first);
    assert!(
        metric(
            &binary,
            "payshim_tls_certificate_not_after_timestamp_seconds"
        )
        .await
            > 0.0
    );

    let mut open = connect(&binary, &ca).await;
    let client = scene.client();
    let request = Request::post(binary.url(&format!("/v2/orders/{ORDER}/payments")))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {STOREFRONT_KEY}"))
        .body(Bytes::from(payment_body()))
        .unwrap();
    let payment = tokio::spawn(async move { client.send(request).await });
    assert!(
        scene.upstream.wait_for_requests(1, WAIT).await,
        "payment never forwarded"
    );

    let second = scene.install_new_pair(&scene.cert, &scene.key);
    assert_ne!(first, second);
    binary.signal("HUP");
    wait_metric(&binary, OK, 1.0).await;
    assert_eq!(served_fingerprint(&binary, &ca).await, second);

    let answer = payment
        .await
        .unwrap()
        .expect("the payment in flight is answered");
    assert_eq!(answer.status, 201, "{}", answer.text());
    let status = status_on(&mut open, &transactions_path(), STOREFRONT_KEY).await;
    assert_eq!(
        status, 200,
        "the connection opened before the reload still serves"
    );
    assert_eq!(metric(&binary, REFUSED).await, 0.0);
    binary.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_changes_alone_reload_overwritten_files_and_a_swapped_secret_volume() {
    let scene = Scene::new(Duration::ZERO).await;
    // A mounted Kubernetes Secret: the visible files are symlinks through `..data`,
    // which the kubelet points at a new timestamped directory.
    let volume = scene.dir.path().join("secret");
    let first_dir = volume.join("..2026_12_05_first");
    std::fs::create_dir_all(&first_dir).unwrap();
    std::fs::copy(&scene.cert, first_dir.join("tls.crt")).unwrap();
    std::fs::copy(&scene.key, first_dir.join("tls.key")).unwrap();
    std::os::unix::fs::symlink("..2026_12_05_first", volume.join("..data")).unwrap();
    for name in ["tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(format!("..data/{name}"), volume.join(name)).unwrap();
    }
    let (cert, key) = (volume.join("tls.crt"), volume.join("tls.key"));
    let config = scene.config("\"200ms\"");
    let config = set_key(&config, "server", "cert", Some(&toml_path(&cert)));
    let config = set_key(&config, "server", "key", Some(&toml_path(&key)));
    let mut binary = scene.start(&config).await;
    let ca = scene.pki.ca_pem.clone();
    assert_eq!(
        served_fingerprint(&binary, &ca).await,
        pem_fingerprint(&cert)
    );

    // Overwritten in place, no signal.
    let overwritten =
        scene.install_new_pair(&first_dir.join("tls.crt"), &first_dir.join("tls.key"));
    wait_served(&binary, &ca, overwritten).await;

    // The kubelet's swap: a new directory, `..data` replaced by a rename.
    let second_dir = volume.join("..2026_12_05_second");
    std::fs::create_dir_all(&second_dir).unwrap();
    let swapped = scene.install_new_pair(&second_dir.join("tls.crt"), &second_dir.join("tls.key"));
    std::os::unix::fs::symlink("..2026_12_05_second", volume.join("..data_tmp")).unwrap();
    std::fs::rename(volume.join("..data_tmp"), volume.join("..data")).unwrap();
    wait_served(&binary, &ca, swapped).await;
    assert!(metric(&binary, OK).await >= 2.0);
    binary.stop().await;
}
