//! Behaviour of the embedded backend beyond the shared contract: the file it
//! makes, what it refuses to open, corrupt rows, failures inside a batch,
//! and several stores on one file.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use atoll_store::embedded::{EmbeddedStore, Options, SCHEMA_VERSION};
use atoll_store::{
    open_embedded, Attachment, Change, Claim, ClaimOutcome, Kind, SharedStore, StoreError,
};
use serde_json::json;
use tokio::task::JoinSet;

fn open(path: &Path) -> SharedStore {
    match EmbeddedStore::open(path) {
        Ok(store) => Arc::new(store),
        Err(e) => panic!("cannot open {}: {e}", path.display()),
    }
}

/// A connection of our own, as another program (or a disk fault) would
/// have.
fn raw(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).expect("raw connection");
    conn.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    conn
}

fn holder(name: &str) -> Attachment {
    Attachment {
        container_id: name.into(),
        ifname: "eth0".into(),
    }
}

fn claim(subnet: &str, ip: IpAddr, by: &str) -> Claim {
    Claim {
        subnet: subnet.into(),
        ip,
        pool: "pool".into(),
        attachment: holder(by),
        node: "node-1".into(),
        app: String::new(),
        network: "net".into(),
        borrowed: false,
        created: 0,
    }
}

fn v4(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0xC612_0000 + n))
}

#[tokio::test]
async fn open_creates_directories_wal_file_and_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("var/lib/atoll/atoll.db");
    let store = open(&path);
    assert_eq!(store.describe(), format!("embedded:{}", path.display()));
    assert_eq!(
        store.generation().await.unwrap(),
        0,
        "a new store starts at generation 0"
    );

    let conn = raw(&path);
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let mut names: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type IN ('table', 'index') ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    names.retain(|n| !n.starts_with("sqlite_"));
    assert_eq!(names, ["claims", "claims_by_holder", "meta", "objects"]);
}

#[tokio::test]
async fn open_embedded_parses_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let store = open_embedded(&format!("embedded:{}", path.display()))
        .await
        .unwrap();
    assert_eq!(store.describe(), format!("embedded:{}", path.display()));

    for bad in [
        "etcd:127.0.0.1:2379",
        "kubernetes",
        "/var/lib/atoll/atoll.db",
    ] {
        let err = open_embedded(bad).await.unwrap_err();
        assert!(matches!(err, StoreError::BadAddress { .. }), "{bad}: {err}");
    }
}

#[test]
fn paths_that_are_not_files_are_refused() {
    for bad in ["", ":memory:"] {
        let err = EmbeddedStore::open(bad).unwrap_err();
        assert!(
            matches!(err, StoreError::BadAddress { .. }),
            "{bad:?}: {err}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let err = EmbeddedStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable { .. }),
        "a directory: {err}"
    );
}

#[test]
fn other_files_are_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();

    let text = dir.path().join("notes.txt");
    let content = "these are notes, not a database; they must survive an open attempt\n".repeat(20);
    std::fs::write(&text, &content).unwrap();
    let err = EmbeddedStore::open(&text).unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt { .. }),
        "a text file: {err}"
    );
    assert_eq!(std::fs::read_to_string(&text).unwrap(), content);

    let foreign = dir.path().join("foreign.db");
    raw(&foreign)
        .execute_batch("CREATE TABLE songs (title TEXT); INSERT INTO songs VALUES ('x');")
        .unwrap();
    let err = EmbeddedStore::open(&foreign).unwrap_err();
    assert!(
        err.to_string().contains("not an atoll store"),
        "a foreign database: {err}"
    );
    let titles: i64 = raw(&foreign)
        .query_row("SELECT count(*) FROM songs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(titles, 1);
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("atoll.db");
    drop(EmbeddedStore::open(&path).unwrap());
    raw(&path)
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();

    let err = EmbeddedStore::open(&path).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Backend { .. }), "{text}");
    assert!(
        text.contains(&format!("schema version {}", SCHEMA_VERSION + 1)),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("atoll.db");
    let store = open(&path);
    let node = json!({"metadata": {"name": "node-1", "labels": {"zone": "z1"}}});
    let r1 = store.put(Kind::Node, "node-1", &node).await.unwrap();
    let subnet = json!({"kind": "Subnet", "spec": {"cidr": "198.18.0.0/15"}});
    let put = Change::Put {
        kind: Kind::Subnet,
        key: "rack-a".into(),
        value: subnet.clone(),
    };
    let generation = store.apply(&[put], 0).await.unwrap();
    assert_eq!(
        store.claim(&claim("rack-a", v4(1), "c1")).await.unwrap(),
        ClaimOutcome::Won
    );
    let claims = store.list_claims(None).await.unwrap();
    drop(store);

    let store = open(&path);
    assert_eq!(
        store
            .get(Kind::Node, "node-1")
            .await
            .unwrap()
            .map(|o| (o.value, o.revision)),
        Some((node, r1))
    );
    assert_eq!(
        store
            .get(Kind::Subnet, "rack-a")
            .await
            .unwrap()
            .map(|o| o.value),
        Some(subnet)
    );
    assert_eq!(store.generation().await.unwrap(), generation);
    assert_eq!(store.list_claims(None).await.unwrap(), claims);
    let r2 = store.put(Kind::Node, "node-2", &json!({})).await.unwrap();
    assert!(
        r2 > r1,
        "revisions went back after reopening: {r1} then {r2}"
    );
    assert_eq!(
        store.claim(&claim("rack-a", v4(1), "c2")).await.unwrap(),
        ClaimOutcome::Taken {
            holder: holder("c1")
        }
    );
}

#[tokio::test]
async fn corrupt_json_is_reported_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("atoll.db");
    let store = open(&path);
    store
        .put(Kind::Node, "node-1", &json!({"ok": true}))
        .await
        .unwrap();
    store
        .put(Kind::Node, "node-2", &json!({"ok": true}))
        .await
        .unwrap();
    store
        .put(
            Kind::Workload,
            "default/Deployment/web",
            &json!({"ok": true}),
        )
        .await
        .unwrap();
    let changed = raw(&path)
        .execute(
            "UPDATE objects SET value = '{\"ok\": tru' WHERE kind = 'nodes' AND key = 'node-2'",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);

    for err in [
        store.get(Kind::Node, "node-2").await.unwrap_err(),
        store.list(Kind::Node).await.unwrap_err(),
    ] {
        match &err {
            StoreError::Corrupt { key, reason } => {
                assert_eq!(key, "nodes/node-2");
                assert!(reason.contains("invalid JSON"), "{reason}");
            }
            other => panic!("expected a corrupt record, got {other}"),
        }
        assert!(err.to_string().contains("nodes/node-2"), "{err}");
    }

    // The other records are still readable.
    assert!(store.get(Kind::Node, "node-1").await.unwrap().is_some());
    assert_eq!(store.list(Kind::Workload).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_corrupt_claim_is_reported_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("atoll.db");
    let store = open(&path);
    store.claim(&claim("rack-a", v4(7), "c1")).await.unwrap();
    raw(&path)
        .execute(
            "UPDATE claims SET ip = '198.18.0.300' WHERE subnet = 'rack-a'",
            [],
        )
        .unwrap();

    let err = store.list_claims(None).await.unwrap_err();
    match &err {
        StoreError::Corrupt { key, .. } => assert_eq!(key, "claims/rack-a/198.18.0.300"),
        other => panic!("expected a corrupt record, got {other}"),
    }
    let err = store.claims_of(&holder("c1")).await.unwrap_err();
    assert!(
        err.to_string().contains("claims/rack-a/198.18.0.300"),
        "{err}"
    );
}

#[tokio::test]
async fn put_of_a_resource_names_apply() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("atoll.db"));
    let err = store
        .put(Kind::IPPool, "web", &json!({}))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("ippools are written with apply"),
        "{err}"
    );
}

/// A change that fails half way through an apply (here a trigger refuses
/// one key, standing for a disk error) leaves nothing of the batch.
#[tokio::test]
async fn an_apply_failing_half_way_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("atoll.db");
    let store = open(&path);
    let before = store.generation().await.unwrap();
    raw(&path)
        .execute_batch(
            "CREATE TRIGGER poison BEFORE INSERT ON objects WHEN NEW.key = 'poison' \
             BEGIN SELECT RAISE(ABORT, 'poisoned by the test'); END;",
        )
        .unwrap();

    let changes: Vec<Change> = ["first", "poison", "last"]
        .into_iter()
        .map(|key| Change::Put {
            kind: Kind::Subnet,
            key: key.into(),
            value: json!({}),
        })
        .collect();
    let err = store.apply(&changes, before).await.unwrap_err();
    assert!(err.to_string().contains("poisoned by the test"), "{err}");

    assert!(
        store.list(Kind::Subnet).await.unwrap().is_empty(),
        "a failed apply wrote something"
    );
    assert_eq!(store.generation().await.unwrap(), before);

    // The store goes on working.
    let ok = store.apply(&[changes[0].clone()], before).await.unwrap();
    assert_eq!(ok, before + 1);
}

/// Writes queued together are committed together; when one of them fails,
/// the others are still done and answered, and the failed one is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_write_does_not_fail_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("atoll.db");
    let store = open(&path);
    raw(&path)
        .execute_batch(
            "CREATE TRIGGER poison BEFORE INSERT ON claims WHEN NEW.container_id = 'poison' \
             BEGIN SELECT RAISE(ABORT, 'poisoned by the test'); END;",
        )
        .unwrap();

    let mut tasks = JoinSet::new();
    for n in 0..400u32 {
        let by = if n % 100 == 50 {
            "poison".to_string()
        } else {
            format!("c{n}")
        };
        let store = store.clone();
        tasks.spawn(async move {
            (
                n,
                by.clone(),
                store.claim(&claim("rack-a", v4(n), &by)).await,
            )
        });
    }
    let mut answers = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (n, by, outcome) = joined.unwrap();
        answers.insert(n, (by, outcome));
    }

    for (n, (by, outcome)) in &answers {
        if by == "poison" {
            let err = outcome.as_ref().unwrap_err();
            assert!(
                err.to_string().contains("poisoned by the test"),
                "{n}: {err}"
            );
        } else {
            assert_eq!(
                outcome.as_ref().unwrap(),
                &ClaimOutcome::Won,
                "claim {n} by {by}"
            );
        }
    }
    let stored = store.list_claims(None).await.unwrap();
    assert_eq!(stored.len(), 396);
    for stored in &stored {
        let n = answers
            .iter()
            .find(|(n, _)| v4(**n) == stored.ip)
            .map(|(n, _)| *n);
        let expected = n.map(|n| format!("c{n}"));
        assert_eq!(
            Some(&stored.attachment.container_id),
            expected.as_ref(),
            "{stored:?}"
        );
    }
}

/// Two stores on one file (two connections, as two processes would have):
/// of claims of one address spread over both, exactly one wins, and a
/// stale apply through one is refused after an apply through the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_agree() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("atoll.db");
    let stores = [open(&path), open(&path)];

    for n in 0..8u32 {
        let mut tasks = JoinSet::new();
        for task in 0..32 {
            let store = stores[task % 2].clone();
            let by = format!("t{task}");
            tasks.spawn(async move {
                (
                    by.clone(),
                    store.claim(&claim("rack-a", v4(n), &by)).await.unwrap(),
                )
            });
        }
        let mut winners = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (by, outcome) = joined.unwrap();
            if outcome == ClaimOutcome::Won {
                winners.push(by);
            }
        }
        assert_eq!(winners.len(), 1, "address {n}: winners {winners:?}");
        for store in &stores {
            let held = store.claims_of(&holder(&winners[0])).await.unwrap();
            assert!(
                held.iter().any(|c| c.ip == v4(n)),
                "address {n} not held by {}",
                winners[0]
            );
        }
    }

    let g = stores[0].generation().await.unwrap();
    let put = |key: &str| Change::Put {
        kind: Kind::Subnet,
        key: key.into(),
        value: json!({}),
    };
    let g1 = stores[0].apply(&[put("a")], g).await.unwrap();
    assert_eq!(stores[1].generation().await.unwrap(), g1);
    let err = stores[1].apply(&[put("b")], g).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { expected, found, .. } if expected == g && found == g1),
        "{err}"
    );
    assert!(stores[0].get(Kind::Subnet, "b").await.unwrap().is_none());
}

/// While another connection holds the write lock past the busy timeout,
/// writes fail with `Unavailable` and write nothing, reads go on, and once
/// the lock is free the same writes succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_too_long_makes_writes_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("atoll.db");
    let options = Options {
        busy_timeout: Duration::from_millis(200),
    };
    let store: SharedStore = Arc::new(EmbeddedStore::open_with(&path, &options).unwrap());
    store.put(Kind::Node, "node-1", &json!({})).await.unwrap();

    let other = raw(&path);
    other.execute_batch("BEGIN IMMEDIATE").unwrap();

    let err = store
        .claim(&claim("rack-a", v4(1), "c1"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable { .. }),
        "claim: {err}"
    );
    let err = store
        .put(Kind::Node, "node-2", &json!({}))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "put: {err}");
    assert!(
        store.get(Kind::Node, "node-1").await.unwrap().is_some(),
        "reads must go on"
    );

    other.execute_batch("COMMIT").unwrap();
    assert!(
        store.list_claims(None).await.unwrap().is_empty(),
        "a failed claim wrote"
    );
    assert!(
        store.get(Kind::Node, "node-2").await.unwrap().is_none(),
        "a failed put wrote"
    );
    assert_eq!(
        store.claim(&claim("rack-a", v4(1), "c1")).await.unwrap(),
        ClaimOutcome::Won
    );
}
