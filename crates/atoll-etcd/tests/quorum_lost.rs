//! Two of three members stopped: operations fail fast with Unavailable
//! naming the endpoints and write nothing; when the members return, the
//! same store works again.

mod common;

use std::sync::Arc;
use std::time::Duration;

use atoll_etcd::{open, EtcdOptions};
use atoll_store::{Change, ClaimOutcome, Kind, Store, StoreError};
use common::{claim, prefix, TestCluster};
use tokio::time::{sleep, Instant};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

fn is_unavailable_naming(answer: &StoreError, cluster: &TestCluster) -> bool {
    let text = answer.to_string();
    matches!(answer, StoreError::Unavailable { .. })
        && cluster
            .endpoints()
            .iter()
            .all(|e| text.contains(&format!("{e}: ")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_quorum_claims_fail_fast_and_resume_after() {
    let mut cluster = TestCluster::start(23870).await;
    let p = prefix("quorum");
    let opts = EtcdOptions {
        prefix: p.clone(),
        request_timeout: REQUEST_TIMEOUT,
        ..EtcdOptions::default()
    };
    let store = open(&cluster.address(), opts.clone()).await.expect("open");
    let other = Arc::new(open(&cluster.address(), opts).await.expect("open"));
    let before = claim("sn", "10.0.0.1", "c1", "n1");
    assert_eq!(store.claim(&before).await.unwrap(), ClaimOutcome::Won);
    let change = Change::Put {
        kind: Kind::Subnet,
        key: "sn".into(),
        value: serde_json::json!({}),
    };
    assert_eq!(
        store.apply(std::slice::from_ref(&change), 0).await.unwrap(),
        1
    );

    // Stop two members; wait until the third knows it has no leader.
    cluster.kill(1);
    cluster.kill(2);
    cluster.wait_leaderless(0, Duration::from_secs(15)).await;

    let during = claim("sn", "10.0.0.2", "c2", "n1");
    let started = Instant::now();
    let answer = store.claim(&during).await;
    let took = started.elapsed();
    match &answer {
        Err(e) => assert!(is_unavailable_naming(e, &cluster), "claim answered {e}"),
        Ok(outcome) => panic!("claim without quorum answered {outcome:?}"),
    }
    // Bounded by the request timeout (plus scheduling slack).
    assert!(
        took <= REQUEST_TIMEOUT + Duration::from_secs(1),
        "claim took {took:?}"
    );

    for (what, answer) in [
        (
            "release",
            store
                .release("sn", before.ip, &before.attachment)
                .await
                .err(),
        ),
        ("list_claims", store.list_claims(None).await.err()),
        ("claims_of", store.claims_of(&before.attachment).await.err()),
        (
            "put",
            store
                .put(Kind::Node, "n1", &serde_json::json!({}))
                .await
                .err(),
        ),
        (
            "apply",
            store.apply(std::slice::from_ref(&change), 1).await.err(),
        ),
    ] {
        let e = answer.unwrap_or_else(|| panic!("{what} succeeded without quorum"));
        assert!(is_unavailable_naming(&e, &cluster), "{what} answered {e}");
    }

    // The generation is served from the watch until etcd cancels it (it
    // cancels the watches of a member without a leader); then it fails too.
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.watching_generation() {
        assert_eq!(
            store.generation().await.unwrap(),
            1,
            "generation while the watch lasts"
        );
        assert!(Instant::now() < deadline, "the watch outlived the quorum");
        sleep(Duration::from_millis(100)).await;
    }
    loop {
        match store.generation().await {
            Err(e) => {
                assert!(
                    is_unavailable_naming(&e, &cluster),
                    "generation answered {e}"
                );
                break;
            }
            Ok(g) => assert_eq!(g, 1, "generation while the watch lasts"),
        }
        assert!(
            Instant::now() < deadline,
            "generation kept answering without quorum"
        );
        sleep(Duration::from_millis(100)).await;
    }

    // Nothing was written: the member's own data holds only what came before.
    let mut claims = cluster.keys(0, &format!("{p}claims/")).await;
    claims.sort();
    assert_eq!(claims, [format!("{p}claims/sn/10.0.0.1")]);

    // The members return; the same store works again without reopening.
    // (Waiting for the cluster first: a claim sent while it elects a leader
    // may time out and still be committed, and a later claim would then
    // find it.)
    cluster.restart(1);
    cluster.restart(2);
    for n in 0..3 {
        cluster.wait_member_ready(n, Duration::from_secs(30)).await;
    }
    let outcome = store
        .claim(&during)
        .await
        .expect("claim after quorum returned");
    // Won, not Taken: the claim made without quorum left no record.
    assert_eq!(outcome, ClaimOutcome::Won);

    let held: Vec<_> = store
        .list_claims(None)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.ip)
        .collect();
    assert_eq!(held, [before.ip, during.ip]);
    // The watch is set up again: another store's apply reaches this one.
    assert_eq!(
        other.apply(std::slice::from_ref(&change), 1).await.unwrap(),
        2
    );
    let store = Arc::new(store);
    common::wait_generation(&[store, other], 2).await;
}
