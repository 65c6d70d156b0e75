//! Concurrent claims against a real three-member etcd cluster, through
//! several store instances as several hosts would: one winner per address.

mod common;

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use atoll_etcd::{open, EtcdOptions};
use common::{check_storm, prefix, storm, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_claims_of_one_address_one_winner() {
    let cluster = TestCluster::start(23840).await;
    let mut stores = Vec::new();
    for _ in 0..4 {
        let opts = EtcdOptions {
            prefix: prefix("sixty-four"),
            ..EtcdOptions::default()
        };
        stores.push(Arc::new(
            open(&cluster.address(), opts).await.expect("open"),
        ));
    }

    // 64 claimers, one address: each claims it once, all at the same time.
    let outcome = storm(&stores, 64, 1, Arc::new(AtomicUsize::new(0))).await;
    check_storm(stores[0].as_ref(), &outcome, 64, 1).await;

    // The same over a few addresses, with the claimers meeting everywhere.
    let opts = EtcdOptions {
        prefix: prefix("sixty-four-many"),
        ..EtcdOptions::default()
    };
    let store = Arc::new(open(&cluster.address(), opts).await.expect("open"));
    let outcome = storm(
        std::slice::from_ref(&store),
        64,
        16,
        Arc::new(AtomicUsize::new(0)),
    )
    .await;
    check_storm(store.as_ref(), &outcome, 64, 16).await;
}
