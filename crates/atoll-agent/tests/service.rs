//! The agent's service against a real SQLite file: binding resolution from
//! stored workloads and namespaces, idempotent ADD, DEL, CHECK, GC,
//! dual stack, errors with codes, and concurrent ADDs of two agents.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use atoll_agent::{AddRequest, Service};
use atoll_core::manifest::{parse_manifests, Manifest};
use atoll_store::{workload_key, Attachment, Change, Kind, SharedStore};

const WORLD: &str = r#"
apiVersion: ipam.atoll.dev/v1alpha1
kind: Subnet
metadata: {name: a}
spec: {cidr: 10.71.0.0/24, gateway: 10.71.0.1, routes: [{dst: 0.0.0.0/0}], dns: {nameservers: [10.71.0.53]}}
---
apiVersion: ipam.atoll.dev/v1alpha1
kind: Subnet
metadata: {name: b}
spec: {cidr: 10.72.0.0/24, gateway: 10.72.0.1}
---
apiVersion: ipam.atoll.dev/v1alpha1
kind: Subnet
metadata: {name: a6}
spec: {cidr: "fd71::/64", gateway: "fd71::1"}
---
apiVersion: ipam.atoll.dev/v1alpha1
kind: IPPool
metadata: {name: pa}
spec: {subnet: a, ips: [10.71.0.10-10.71.0.250], nodeAffinity: {nodeSelectorTerms: [{matchLabels: {zone: z1}}]}}
---
apiVersion: ipam.atoll.dev/v1alpha1
kind: IPPool
metadata: {name: pa6}
spec: {subnet: a6, ips: ["fd71::10-fd71::ff"], nodeAffinity: {nodeSelectorTerms: [{matchLabels: {zone: z1}}]}}
---
apiVersion: ipam.atoll.dev/v1alpha1
kind: IPPool
metadata: {name: pb}
spec: {subnet: b, ips: [10.72.0.10-10.72.0.250], nodeAffinity: {nodeSelectorTerms: [{matchLabels: {zone: z2}}]}, default: true}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, annotations: {ipam.atoll.dev/ippools: "pb"}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  template:
    metadata:
      annotations: {ipam.atoll.dev/ippools: "pa,pb"}
"#;

async fn world() -> (tempfile::TempDir, SharedStore) {
    let dir = tempfile::tempdir().unwrap();
    let store =
        atoll_store::open_embedded(&format!("embedded:{}", dir.path().join("s.db").display()))
            .await
            .unwrap();
    let mut changes = vec![];
    for m in parse_manifests(WORLD).unwrap() {
        match m {
            Manifest::Subnet(s) => changes.push(Change::Put {
                kind: Kind::Subnet,
                key: s.metadata.name.clone(),
                value: serde_json::to_value(&s).unwrap(),
            }),
            Manifest::IPPool(p) => changes.push(Change::Put {
                kind: Kind::IPPool,
                key: p.metadata.name.clone(),
                value: serde_json::to_value(&p).unwrap(),
            }),
            Manifest::Namespace(n) => {
                store
                    .put(
                        Kind::Namespace,
                        &n.metadata.name,
                        &serde_json::to_value(&n).unwrap(),
                    )
                    .await
                    .unwrap();
            }
            Manifest::Workload(w) => {
                let key = workload_key("shop", &w.kind, &w.metadata.name);
                store
                    .put(Kind::Workload, &key, &serde_json::to_value(&w).unwrap())
                    .await
                    .unwrap();
            }
            _ => {}
        }
    }
    let generation = store.generation().await.unwrap();
    store.apply(&changes, generation).await.unwrap();
    (dir, store)
}

fn labels(zone: &str) -> Option<BTreeMap<String, String>> {
    Some(
        [("zone".to_string(), zone.to_string())]
            .into_iter()
            .collect(),
    )
}

fn req(container: &str, args: &[(&str, &str)]) -> AddRequest {
    AddRequest {
        attachment: Attachment {
            container_id: container.into(),
            ifname: "eth0".into(),
        },
        network: "net".into(),
        cni_pools: vec![],
        args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

#[tokio::test]
async fn add_follows_binding_precedence_and_is_idempotent() {
    let (_dir, store) = world().await;
    let n1 = Service::start(store.clone(), "n1", labels("z1"))
        .await
        .unwrap();
    let n2 = Service::start(store.clone(), "n2", labels("z2"))
        .await
        .unwrap();

    // ATOLL_APP -> the Deployment's template annotation "pa,pb": n1 gets pa (+ nothing v6), n2 gets pb.
    let r1 = n1
        .add(&req("c1", &[("ATOLL_APP", "shop/web")]))
        .await
        .unwrap();
    assert_eq!(r1.ips.len(), 1);
    assert_eq!(r1.ips[0].subnet, "a");
    assert_eq!(r1.ips[0].prefix_len, 24);
    assert_eq!(r1.ips[0].gateway.unwrap().to_string(), "10.71.0.1");
    assert_eq!(r1.dns.as_ref().unwrap().nameservers, ["10.71.0.53"]);
    let r2 = n2
        .add(&req("c2", &[("ATOLL_APP", "shop/web")]))
        .await
        .unwrap();
    assert_eq!(r2.ips[0].subnet, "b");

    // Same attachment again: same address.
    let again = n1
        .add(&req("c1", &[("ATOLL_APP", "shop/web")]))
        .await
        .unwrap();
    assert_eq!(again.ips, r1.ips);

    // Explicit pools: dual stack on z1.
    let ds = n1
        .add(&req("c3", &[("ATOLL_POOLS", "pa,pa6")]))
        .await
        .unwrap();
    let fams: Vec<bool> = ds.ips.iter().map(|i| i.address.is_ipv6()).collect();
    assert_eq!(fams, [false, true]);
    assert_eq!(ds.ips[1].prefix_len, 64);

    // A pod in namespace shop without its own binding: the namespace's "pb" serves n2.
    let ns = n2
        .add(&req(
            "c4",
            &[("K8S_POD_NAMESPACE", "shop"), ("K8S_POD_NAME", "p")],
        ))
        .await
        .unwrap();
    assert_eq!(ns.ips[0].pool, "pb");

    // Nothing at all: default pools; pb does not serve z1.
    let err = n1.add(&req("c5", &[])).await.unwrap_err();
    assert_eq!(err.code(), atoll_cni::codes::NO_POOL_MATCHES);
    assert!(
        err.to_string().contains("pb: affinity did not match"),
        "{err}"
    );
    assert!(store
        .claims_of(&req("c5", &[]).attachment)
        .await
        .unwrap()
        .is_empty());

    // Unknown pool and unknown app.
    let err = n1
        .add(&req("c6", &[("ATOLL_POOLS", "nope")]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), atoll_cni::codes::UNKNOWN_POOL);
    let err = n1
        .add(&req("c7", &[("ATOLL_APP", "shop/absent")]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), atoll_cni::codes::UNKNOWN_POOL);
    assert!(
        err.to_string()
            .contains("no workload absent in namespace shop"),
        "{err}"
    );
}

#[tokio::test]
async fn del_check_gc() {
    let (_dir, store) = world().await;
    let n1 = Service::start(store.clone(), "n1", labels("z1"))
        .await
        .unwrap();
    let a = n1.add(&req("c1", &[("ATOLL_POOLS", "pa")])).await.unwrap();
    let b = n1.add(&req("c2", &[("ATOLL_POOLS", "pa")])).await.unwrap();
    let att = |c: &str| Attachment {
        container_id: c.into(),
        ifname: "eth0".into(),
    };

    n1.check(&att("c1"), &[a.ips[0].address]).await.unwrap();
    let err = n1.check(&att("c1"), &[b.ips[0].address]).await.unwrap_err();
    assert_eq!(err.code(), atoll_cni::codes::ADDRESS_MISMATCH);

    n1.del(&att("c1")).await.unwrap();
    n1.del(&att("c1")).await.unwrap();
    n1.del(&att("never")).await.unwrap();
    assert!(n1.check(&att("c1"), &[a.ips[0].address]).await.is_err());

    // Next-fit: the released address is not handed out next.
    let c = n1.add(&req("c3", &[("ATOLL_POOLS", "pa")])).await.unwrap();
    assert_ne!(c.ips[0].address, a.ips[0].address);

    // GC of another network leaves this one's claims alone.
    assert!(n1.gc("other-net", &[]).await.unwrap().is_empty());
    let released = n1.gc("net", &[att("c3")]).await.unwrap();
    let gone: Vec<String> = released
        .iter()
        .map(|c| c.attachment.container_id.clone())
        .collect();
    assert_eq!(gone, ["c2"]);
    let left: Vec<String> = store
        .list_claims(None)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.attachment.container_id)
        .collect();
    assert_eq!(left, ["c3"]);

    // Released behind the agent's back (the CLI): a repeated ADD does not
    // answer the stale address from its cache, it claims again.
    let held = store.claims_of(&att("c3")).await.unwrap();
    assert!(store
        .release(&held[0].subnet, held[0].ip, &att("c3"))
        .await
        .unwrap());
    let again = n1.add(&req("c3", &[("ATOLL_POOLS", "pa")])).await.unwrap();
    let now = store.claims_of(&att("c3")).await.unwrap();
    assert_eq!(now.len(), 1, "claimed again");
    assert_eq!(now[0].ip, again.ips[0].address);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_agents_on_one_pool_never_share_an_address() {
    let (_dir, store) = world().await;
    let a = Arc::new(
        Service::start(store.clone(), "n1", labels("z1"))
            .await
            .unwrap(),
    );
    let b = Arc::new(
        Service::start(store.clone(), "n1b", labels("z1"))
            .await
            .unwrap(),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move {
            s.add(&req(&format!("c{i}"), &[("ATOLL_POOLS", "pa")]))
                .await
        });
    }
    let mut seen = BTreeSet::new();
    while let Some(r) = tasks.join_next().await {
        let r = r.unwrap().unwrap();
        assert!(
            seen.insert(r.ips[0].address),
            "{} handed out twice",
            r.ips[0].address
        );
    }
    assert_eq!(seen.len(), 200);
    assert_eq!(store.list_claims(None).await.unwrap().len(), 200);
}

#[tokio::test]
async fn applied_edits_reach_a_running_agent() {
    let (_dir, store) = world().await;
    let n1 = Service::start(store.clone(), "n1", labels("z1"))
        .await
        .unwrap();
    assert!(n1.add(&req("c1", &[("ATOLL_POOLS", "pb")])).await.is_err());

    // Bind pb to z1 as well.
    let mut pb: atoll_core::resource::IPPool =
        serde_json::from_value(store.get(Kind::IPPool, "pb").await.unwrap().unwrap().value)
            .unwrap();
    pb.spec.node_affinity.as_mut().unwrap().node_selector_terms[0]
        .match_labels
        .insert("zone".into(), "z1".into());
    let generation = store.generation().await.unwrap();
    store
        .apply(
            &[Change::Put {
                kind: Kind::IPPool,
                key: "pb".into(),
                value: serde_json::to_value(&pb).unwrap(),
            }],
            generation,
        )
        .await
        .unwrap();
    let r = n1.add(&req("c1", &[("ATOLL_POOLS", "pb")])).await.unwrap();
    assert_eq!(r.ips[0].subnet, "b");
}

/// The real SQLite store, except that one claim's answer is lost after the
/// claim was written: what etcd does when a request commits after the
/// client gave up on it.
#[derive(Debug)]
struct LostAnswer {
    inner: SharedStore,
    lose_next: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl atoll_store::Store for LostAnswer {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn list(&self, kind: Kind) -> Result<Vec<atoll_store::Object>, atoll_store::StoreError> {
        self.inner.list(kind).await
    }
    async fn get(
        &self,
        kind: Kind,
        key: &str,
    ) -> Result<Option<atoll_store::Object>, atoll_store::StoreError> {
        self.inner.get(kind, key).await
    }
    async fn put(
        &self,
        kind: Kind,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<u64, atoll_store::StoreError> {
        self.inner.put(kind, key, value).await
    }
    async fn generation(&self) -> Result<u64, atoll_store::StoreError> {
        self.inner.generation().await
    }
    async fn apply(
        &self,
        changes: &[Change],
        expected: u64,
    ) -> Result<u64, atoll_store::StoreError> {
        self.inner.apply(changes, expected).await
    }
    async fn claim(
        &self,
        claim: &atoll_store::Claim,
    ) -> Result<atoll_store::ClaimOutcome, atoll_store::StoreError> {
        let outcome = self.inner.claim(claim).await?;
        if self
            .lose_next
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(atoll_store::StoreError::Unavailable {
                store: self.describe(),
                reason: "answer lost".into(),
            });
        }
        Ok(outcome)
    }
    async fn release(
        &self,
        subnet: &str,
        ip: std::net::IpAddr,
        holder: &Attachment,
    ) -> Result<bool, atoll_store::StoreError> {
        self.inner.release(subnet, ip, holder).await
    }
    async fn claims_of(
        &self,
        holder: &Attachment,
    ) -> Result<Vec<atoll_store::Claim>, atoll_store::StoreError> {
        self.inner.claims_of(holder).await
    }
    async fn list_claims(
        &self,
        node: Option<&str>,
    ) -> Result<Vec<atoll_store::Claim>, atoll_store::StoreError> {
        self.inner.list_claims(node).await
    }
}

#[tokio::test]
async fn a_retried_add_after_a_lost_answer_gets_the_written_address_not_a_second_one() {
    let (_dir, inner) = world().await;
    let lost = Arc::new(LostAnswer {
        inner: inner.clone(),
        lose_next: std::sync::atomic::AtomicBool::new(false),
    });
    let store: SharedStore = lost.clone();
    let n1 = Service::start(store.clone(), "n1", labels("z1"))
        .await
        .unwrap();
    let att = Attachment {
        container_id: "c1".into(),
        ifname: "eth0".into(),
    };

    lost.lose_next
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let err = n1
        .add(&req("c1", &[("ATOLL_POOLS", "pa")]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), atoll_cni::codes::TRY_AGAIN_LATER);
    let written = inner.claims_of(&att).await.unwrap();
    assert_eq!(
        written.len(),
        1,
        "the claim landed although its answer was lost"
    );

    // Another container's ADD between the two: a second claim for c1 would
    // get yet another address.
    n1.add(&req("c2", &[("ATOLL_POOLS", "pa")])).await.unwrap();
    let retried = n1.add(&req("c1", &[("ATOLL_POOLS", "pa")])).await.unwrap();
    assert_eq!(retried.ips[0].address, written[0].ip);
    assert_eq!(
        inner.claims_of(&att).await.unwrap().len(),
        1,
        "no second address"
    );
}
