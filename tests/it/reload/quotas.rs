//! Quotas reloaded: changing one quota keeps the counters of the others, and a changed
//! quota starts counting afresh.

use std::time::Duration;

use super::{OK, Scene, get_status, rewrite_config, wait_metric};
use crate::support::payshim::{STOREFRONT_KEY, set_key};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_reload_keeps_the_counters_of_the_quotas_it_did_not_change() {
    let scene = Scene::new(Duration::ZERO).await;
    let config = set_key(
        &scene.config("\"off\""),
        "limits",
        "per_client",
        Some("\"2/h\""),
    );
    let mut binary = scene.start(&config).await;
    let client = scene.client();
    for _ in 0..2 {
        assert_eq!(get_status(&client, &binary, STOREFRONT_KEY).await, 200);
    }
    assert_eq!(get_status(&client, &binary, STOREFRONT_KEY).await, 429);

    // Another quota changed: the storefront's allowance is still spent.
    rewrite_config(
        &binary,
        &set_key(&config, "limits", "per_order", Some("\"9/h\"")),
    );
    binary.signal("HUP");
    wait_metric(&binary, OK, 1.0).await;
    assert_eq!(get_status(&client, &binary, STOREFRONT_KEY).await, 429);

    // Its own quota changed: a new quota, counted afresh.
    rewrite_config(
        &binary,
        &set_key(&config, "limits", "per_client", Some("\"5/h\"")),
    );
    binary.signal("HUP");
    wait_metric(&binary, OK, 2.0).await;
    assert_eq!(get_status(&client, &binary, STOREFRONT_KEY).await, 200);
    binary.stop().await;
}
