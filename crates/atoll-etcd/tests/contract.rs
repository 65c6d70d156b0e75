//! The store contract against a real three-member etcd cluster: the shared
//! conformance suite, then what is particular to etcd (key layout, indexes,
//! prefixes, corrupt records, the generation watch, bad addresses).
//!
//! Each test starts its own cluster on its own ports (23790 and up).

mod common;

use std::sync::Arc;
use std::time::Duration;

use atoll_etcd::{open, EtcdOptions, EtcdStore};
use atoll_store::{Attachment, Change, ClaimOutcome, Kind, Store, StoreError};
use common::{claim, prefix, TestCluster};
use tokio::time::{sleep, Instant};

async fn open_store(cluster: &TestCluster, test: &str) -> EtcdStore {
    let opts = EtcdOptions {
        prefix: prefix(test),
        ..EtcdOptions::default()
    };
    open(&cluster.address(), opts)
        .await
        .expect("open the store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_conformance_suite() {
    let cluster = TestCluster::start(23790).await;
    let store = Arc::new(open_store(&cluster, "conformance").await);

    atoll_store::conformance::run_all(store.clone())
        .await
        .expect("first run");
    // The suite makes its names unique per call, so it runs again on the
    // same data; the second run meets the records the first one left.
    atoll_store::conformance::run_all(store.clone())
        .await
        .expect("second run");

    // A store opened later on the same prefix sees what the first wrote.
    let other = open_store(&cluster, "conformance").await;
    assert_eq!(
        other.generation().await.unwrap(),
        store.generation().await.unwrap()
    );
    assert_eq!(
        other.list(Kind::Node).await.unwrap(),
        store.list(Kind::Node).await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_the_documented_layout() {
    let cluster = TestCluster::start(23800).await;
    let store = open_store(&cluster, "layout").await;
    let p = prefix("layout");

    let c = claim("rack/a", "10.0.0.7", "c1", "node-1");
    assert_eq!(store.claim(&c).await.unwrap(), ClaimOutcome::Won);
    let g = store
        .apply(
            &[Change::Put {
                kind: Kind::Subnet,
                key: "rack-a".into(),
                value: serde_json::json!({}),
            }],
            0,
        )
        .await
        .unwrap();
    assert_eq!(g, 1);
    store
        .put(
            Kind::Workload,
            "ns/Deployment/web",
            &serde_json::json!({"a": 1}),
        )
        .await
        .unwrap();

    let mut keys = cluster.keys(0, &p).await;
    keys.sort();
    let applied_by = format!("{p}applied-by");
    let expected = [
        applied_by.as_str(),
        &format!("{p}claims/rack%2Fa/10.0.0.7"),
        &format!("{p}generation"),
        &format!("{p}holders/c1/eth0/rack%2Fa/10.0.0.7"),
        &format!("{p}nodes/node-1/rack%2Fa/10.0.0.7"),
        &format!("{p}objects/subnets/rack-a"),
        &format!("{p}objects/workloads/ns/Deployment/web"),
    ];
    assert_eq!(keys, expected);

    assert!(store.release("rack/a", c.ip, &c.attachment).await.unwrap());
    let keys = cluster.keys(0, &format!("{p}claims/")).await;
    assert!(keys.is_empty(), "claim left: {keys:?}");
    for index in ["holders/", "nodes/"] {
        let keys = cluster.keys(0, &format!("{p}{index}")).await;
        assert!(
            keys.is_empty(),
            "index entries left after release: {keys:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_prefixes_keep_apart() {
    let cluster = TestCluster::start(23810).await;
    let one = open_store(&cluster, "apart-one").await;
    let two = open_store(&cluster, "apart-two").await;

    // Holders whose names would meet without escaping: a/b + c and a + b/c.
    let mut ab_c = claim("sn", "10.0.0.1", "a/b", "n/1");
    ab_c.attachment.ifname = "c".into();
    let mut a_bc = claim("sn", "10.0.0.2", "a", "n");
    a_bc.attachment = Attachment {
        container_id: "a".into(),
        ifname: "b/c".into(),
    };
    assert_eq!(one.claim(&ab_c).await.unwrap(), ClaimOutcome::Won);
    assert_eq!(one.claim(&a_bc).await.unwrap(), ClaimOutcome::Won);
    let held = one.claims_of(&ab_c.attachment).await.unwrap();
    assert_eq!(held.iter().map(|c| c.ip).collect::<Vec<_>>(), [ab_c.ip]);
    let held = one.claims_of(&a_bc.attachment).await.unwrap();
    assert_eq!(held.iter().map(|c| c.ip).collect::<Vec<_>>(), [a_bc.ip]);
    assert_eq!(one.list_claims(Some("n/1")).await.unwrap().len(), 1);
    assert_eq!(one.list_claims(Some("n")).await.unwrap().len(), 1);

    // Another prefix is another store: same address, same holder, no meeting.
    assert_eq!(two.claim(&ab_c).await.unwrap(), ClaimOutcome::Won);
    assert_eq!(two.list_claims(None).await.unwrap().len(), 1);
    assert_eq!(one.list_claims(None).await.unwrap().len(), 2);
    assert_eq!(two.generation().await.unwrap(), 0);
    one.apply(&[], 0).await.unwrap();
    assert_eq!(two.generation().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_corrupt_records() {
    let cluster = TestCluster::start(23820).await;
    let store = open_store(&cluster, "corrupt").await;
    let p = prefix("corrupt");
    let mut raw = cluster.member_client(0).await;

    raw.put(format!("{p}claims/sn/10.0.0.9"), "{not json", None)
        .await
        .unwrap();
    match store.list_claims(None).await {
        Err(StoreError::Corrupt { key, .. }) => assert_eq!(key, format!("{p}claims/sn/10.0.0.9")),
        other => panic!("list_claims over a corrupt record answered {other:?}"),
    }
    // Claiming the corrupt address does not overwrite it.
    match store.claim(&claim("sn", "10.0.0.9", "c1", "n1")).await {
        Err(StoreError::Corrupt { .. }) => {}
        other => panic!("claiming over a corrupt record answered {other:?}"),
    }

    raw.put(format!("{p}objects/nodes/n1"), vec![0xff, 0xfe], None)
        .await
        .unwrap();
    assert!(matches!(
        store.get(Kind::Node, "n1").await,
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(
        store.list(Kind::Node).await,
        Err(StoreError::Corrupt { .. })
    ));

    raw.put(format!("{p}generation"), "seven", None)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // The watch drops the cache on a bad value; the read then reports it.
        match store.generation().await {
            Err(StoreError::Corrupt { key, .. }) => {
                assert_eq!(key, format!("{p}generation"));
                break;
            }
            other => assert!(Instant::now() < deadline, "generation answered {other:?}"),
        }
        sleep(Duration::from_millis(20)).await;
    }
    assert!(matches!(
        store.apply(&[], 7).await,
        Err(StoreError::Corrupt { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_follows_other_writers() {
    let cluster = TestCluster::start(23830).await;
    let reader = open_store(&cluster, "generation").await;
    let writer = open_store(&cluster, "generation").await;
    assert_eq!(reader.generation().await.unwrap(), 0);

    for expected in 1..=5u64 {
        let got = writer.apply(&[], expected - 1).await.unwrap();
        assert_eq!(got, expected);
        // The writer sees its own apply at once.
        assert_eq!(writer.generation().await.unwrap(), expected);
        // The reader learns it through its watch (or a read), soon.
        let deadline = Instant::now() + Duration::from_secs(5);
        while reader.generation().await.unwrap() != expected {
            assert!(
                Instant::now() < deadline,
                "reader never saw generation {expected}"
            );
            sleep(Duration::from_millis(10)).await;
        }
    }

    // A stale apply from the reader conflicts and names what it found.
    match reader.apply(&[], 2).await {
        Err(StoreError::Conflict {
            expected: 2,
            found: 5,
            ..
        }) => {}
        other => panic!("stale apply answered {other:?}"),
    }
}

#[tokio::test]
async fn refuses_bad_addresses_before_connecting() {
    let cases: &[(&str, EtcdOptions, &str)] = &[
        ("embedded:/x", EtcdOptions::default(), "expected etcd:"),
        ("etcd:", EtcdOptions::default(), "no endpoint"),
        (
            "etcd:https://127.0.0.1:1",
            EtcdOptions {
                ca_file: Some("/nonexistent/ca.pem".into()),
                ..EtcdOptions::default()
            },
            "cannot read ca_file /nonexistent/ca.pem",
        ),
    ];
    for (address, opts, want) in cases {
        match open(address, opts.clone()).await {
            Err(e @ StoreError::BadAddress { .. }) => {
                assert!(
                    e.to_string().contains(want),
                    "{address}: {e} should say {want:?}"
                )
            }
            other => panic!("{address} opened: {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_unreachable_cluster_fails_fast_naming_the_endpoints() {
    // Nothing listens on these ports (the tests use 23790 and up).
    let address = "etcd:http://127.0.0.1:23689,http://127.0.0.1:23691,http://127.0.0.1:23693";
    let opts = EtcdOptions {
        request_timeout: Duration::from_millis(500),
        ..EtcdOptions::default()
    };
    let store = open(address, opts)
        .await
        .expect("opening connects to nothing");

    let started = Instant::now();
    let answer = store.claim(&claim("sn", "10.0.0.1", "c1", "n1")).await;
    let took = started.elapsed();
    match answer {
        Err(e @ StoreError::Unavailable { .. }) => {
            let text = e.to_string();
            for port in ["23689", "23691", "23693"] {
                assert!(
                    text.contains(&format!("http://127.0.0.1:{port}: ")),
                    "{text}"
                );
            }
        }
        other => panic!("claim against nothing answered {other:?}"),
    }
    // Bounded by the request timeout, with room for a slow machine.
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(matches!(
        store.generation().await,
        Err(StoreError::Unavailable { .. })
    ));
}

async fn next(
    events: &mut tokio::sync::broadcast::Receiver<atoll_store::ClaimEvent>,
) -> atoll_store::ClaimEvent {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("an event within 10 s")
        .expect("the feed is open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_claims_and_releases_by_another_store() {
    let cluster = TestCluster::start(23900).await;
    let watcher = open_store(&cluster, "feed").await;
    let writer = open_store(&cluster, "feed").await;
    let mut events = watcher.claim_events().expect("etcd has a claim feed");

    // The first event says the watch is up: events before it are not replayed.
    assert_eq!(next(&mut events).await, atoll_store::ClaimEvent::Resync);

    let c = claim("rack-a", "10.0.0.9", "c9", "node-2");
    assert_eq!(writer.claim(&c).await.unwrap(), ClaimOutcome::Won);
    let atoll_store::ClaimEvent::Held(held) = next(&mut events).await else {
        panic!("expected Held");
    };
    assert_eq!(
        (held.ip, &held.attachment, &held.node),
        (c.ip, &c.attachment, &c.node)
    );

    assert!(writer
        .release(&c.subnet, c.ip, &c.attachment)
        .await
        .unwrap());
    let atoll_store::ClaimEvent::Released(gone) = next(&mut events).await else {
        panic!("expected Released");
    };
    assert_eq!((gone.ip, gone.attachment), (c.ip, c.attachment));
}
