//! Authentication as etcd deployments use it: user and password with role
//! permissions on the prefix, and TLS with client certificates.

mod common;

use std::sync::Arc;
use std::time::Duration;

use atoll_etcd::{open, EtcdOptions};
use atoll_store::{ClaimOutcome, Store, StoreError};
use common::{claim, prefix, TestCluster};
use etcd_client::Permission;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password() {
    let mut cluster = TestCluster::start(23880).await;
    let p = prefix("auth");

    // A root user, and a user that may use the store's prefix only.
    let mut admin = cluster.member_client(0).await;
    admin
        .user_add("root", "root-secret", None)
        .await
        .expect("add root");
    admin
        .user_grant_role("root", "root")
        .await
        .expect("grant root");
    admin.role_add("atoll").await.expect("add role");
    let permission = Permission::read_write(p.as_str()).with_prefix();
    admin
        .role_grant_permission("atoll", permission)
        .await
        .expect("grant permission");
    admin
        .user_add("atoll", "atoll-secret", None)
        .await
        .expect("add user");
    admin
        .user_grant_role("atoll", "atoll")
        .await
        .expect("grant role");
    admin.auth_enable().await.expect("enable auth");
    cluster.user = Some(("root".into(), "root-secret".into()));

    let as_user = |user: Option<(&str, &str)>, prefix: &str| EtcdOptions {
        prefix: prefix.to_string(),
        username: user.map(|u| u.0.to_string()),
        password: user.map(|u| u.1.to_string()),
        ..EtcdOptions::default()
    };

    let store = Arc::new(
        open(
            &cluster.address(),
            as_user(Some(("atoll", "atoll-secret")), &p),
        )
        .await
        .expect("open"),
    );
    atoll_store::conformance::run_all(store.clone())
        .await
        .expect("conformance with auth");

    // Tokens of etcd's simple kind die with the member that issued them: the
    // store authenticates again after a restart.
    let c = claim("sn", "10.0.0.1", "c1", "n1");
    assert_eq!(store.claim(&c).await.unwrap(), ClaimOutcome::Won);
    for n in 0..3 {
        cluster.kill(n);
        cluster.restart(n);
        cluster.wait_member_ready(n, Duration::from_secs(30)).await;
    }
    assert_eq!(
        store
            .claims_of(&c.attachment)
            .await
            .expect("claims after restarts")
            .len(),
        1
    );
    assert!(store.release("sn", c.ip, &c.attachment).await.unwrap());

    // Refusals are reported at once as what they are, not as an outage.
    let cases = [
        (
            "wrong password",
            as_user(Some(("atoll", "wrong")), &p),
            "authentication failed",
        ),
        ("no credentials", as_user(None, &p), "user name is empty"),
        (
            "outside its prefix",
            as_user(Some(("atoll", "atoll-secret")), "/other/"),
            "permission denied",
        ),
    ];
    for (name, opts, want) in cases {
        let store = open(&cluster.address(), opts).await.expect("open");
        let started = Instant::now();
        match store.claim(&c).await {
            Err(e @ StoreError::Backend { .. }) => {
                assert!(
                    e.to_string().contains(want),
                    "{name}: {e} should say {want:?}"
                )
            }
            other => panic!("{name}: claim answered {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{name}: not refused at once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() {
    let cluster = TestCluster::start_tls(23890).await;
    let tls = cluster.tls().expect("tls").clone();
    let p = prefix("tls");

    let opts = EtcdOptions {
        prefix: p.clone(),
        ca_file: Some(tls.ca.clone()),
        cert_file: Some(tls.client_cert.clone()),
        key_file: Some(tls.client_key.clone()),
        ..EtcdOptions::default()
    };
    assert!(cluster.address().starts_with("etcd:https://"));
    let store = Arc::new(open(&cluster.address(), opts.clone()).await.expect("open"));
    atoll_store::conformance::run_all(store.clone())
        .await
        .expect("conformance over TLS");

    // Bare host:port endpoints get https when a CA is given.
    let bare: Vec<String> = cluster
        .endpoints()
        .iter()
        .map(|e| e.trim_start_matches("https://").to_string())
        .collect();
    let store = open(&format!("etcd:{}", bare.join(",")), opts.clone())
        .await
        .expect("open bare");
    assert_eq!(
        store.list_claims(None).await.expect("list over TLS").len(),
        0
    );

    // Without a client certificate the members refuse the connection.
    let opts = EtcdOptions {
        cert_file: None,
        key_file: None,
        request_timeout: Duration::from_millis(500),
        ..opts
    };
    let store = open(&cluster.address(), opts).await.expect("open");
    match store.list_claims(None).await {
        Err(StoreError::Unavailable { .. }) => {}
        other => panic!("without a client certificate list_claims answered {other:?}"),
    }
}
