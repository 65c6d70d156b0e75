//! A conformance suite for [`Store`](crate::Store) backends: the contract of the crate
//! documentation, checked through the trait alone, so that every backend
//! runs the same checks.
//!
//! Each check is a pub async function that takes a [`SharedStore`] and
//! returns a [`Failure`] naming the check and what was wrong; [`run_all`]
//! runs them in turn. They need a Tokio runtime (the concurrent checks spawn
//! tasks) but no test framework.
//!
//! The checks write only under names made unique per call (subnets, keys,
//! nodes, holders, with a `conf-` prefix), so they run against a store that
//! holds other data, and can run again against the same store. They release
//! the claims and delete the subnets and pools they made; nodes, namespaces
//! and workloads stay, since the trait has no call that deletes them outside
//! `apply`. Use a store made for tests: the generation checks expect that
//! nobody else applies while they run, and the documents they write are not
//! valid resources.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = atoll_store::open_embedded("embedded:/tmp/atoll-conformance.db").await?;
//! atoll_store::conformance::run_all(store).await?;
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;
use tokio::task::JoinSet;

use crate::{workload_key, Attachment, Change, Claim, ClaimOutcome, Kind, SharedStore, StoreError};

/// A failed check.
#[derive(Debug, thiserror::Error)]
#[error("store conformance check {check} failed: {message}")]
pub struct Failure {
    /// The check, as its function is named.
    pub check: &'static str,
    /// What was wrong.
    pub message: String,
}

/// Runs every check, in turn, stopping at the first failure.
///
/// # Errors
/// The first [`Failure`].
pub async fn run_all(store: SharedStore) -> Result<(), Failure> {
    claim_won_then_taken(store.clone()).await?;
    claim_keeps_fields(store.clone()).await?;
    concurrent_claims_one_winner(store.clone()).await?;
    release_only_by_holder(store.clone()).await?;
    claims_of_holder(store.clone()).await?;
    list_claims_by_node(store.clone()).await?;
    apply_stale_generation_conflicts(store.clone()).await?;
    apply_all_or_nothing(store.clone()).await?;
    concurrent_applies_all_or_nothing(store.clone()).await?;
    objects_put_get_list(store.clone()).await?;
    revisions_change_on_write(store.clone()).await?;
    put_refuses_resources(store).await
}

/// A claim is won once; a second claim of the address, by another holder or
/// the same one, is `Taken` and names the first holder. Addresses are keyed
/// by subnet and address, for both families.
///
/// # Errors
/// A [`Failure`] saying which answer was wrong.
pub async fn claim_won_then_taken(store: SharedStore) -> Result<(), Failure> {
    let s = Scope::new("claim_won_then_taken");
    let subnet = s.name("sn");
    let node = s.name("node");
    let (a, b) = (s.holder("a"), s.holder("b"));

    let first = s.claim(&subnet, "192.0.2.10", &a, &node);
    let outcome = store.claim(&first).await.during(&s, "the first claim")?;
    s.ensure(outcome == ClaimOutcome::Won, || {
        format!("first claim of {subnet}/192.0.2.10 answered {outcome:?}, expected Won")
    })?;

    let by_b = Claim {
        attachment: b.clone(),
        ..first.clone()
    };
    let outcome = store.claim(&by_b).await.during(&s, "the second claim")?;
    s.ensure(outcome == ClaimOutcome::Taken { holder: a.clone() }, || {
        format!(
            "claim of a held address by another holder answered {outcome:?}, expected Taken by {a}"
        )
    })?;

    let outcome = store.claim(&first).await.during(&s, "the repeated claim")?;
    s.ensure(outcome == ClaimOutcome::Taken { holder: a.clone() }, || {
        format!("repeated claim by the holder answered {outcome:?}, expected Taken by {a}")
    })?;

    let elsewhere = Claim {
        subnet: s.name("other-sn"),
        ..by_b.clone()
    };
    let outcome = store
        .claim(&elsewhere)
        .await
        .during(&s, "the claim in another subnet")?;
    s.ensure(outcome == ClaimOutcome::Won, || {
        format!("the same address in another subnet answered {outcome:?}, expected Won")
    })?;

    let v6 = s.claim(&subnet, "2001:db8::10", &b, &node);
    let outcome = store.claim(&v6).await.during(&s, "the IPv6 claim")?;
    s.ensure(outcome == ClaimOutcome::Won, || {
        format!("IPv6 claim answered {outcome:?}, expected Won")
    })?;
    let outcome = store
        .claim(&Claim {
            attachment: a.clone(),
            ..v6.clone()
        })
        .await
        .during(&s, "IPv6 again")?;
    s.ensure(outcome == ClaimOutcome::Taken { holder: b.clone() }, || {
        format!("second IPv6 claim answered {outcome:?}, expected Taken by {b}")
    })?;

    let held = store.claims_of(&a).await.during(&s, "claims_of")?;
    s.ensure(
        keys(&held) == BTreeSet::from([(subnet.clone(), ip("192.0.2.10"))]),
        || {
            format!(
                "{a} should hold only {subnet}/192.0.2.10, holds {:?}",
                keys(&held)
            )
        },
    )?;

    s.release_all(&store, &[first, elsewhere, v6]).await
}

/// A claim is stored as given, with `created` set by the store to the time
/// of the claim.
///
/// # Errors
/// A [`Failure`] naming the field that differs.
pub async fn claim_keeps_fields(store: SharedStore) -> Result<(), Failure> {
    let s = Scope::new("claim_keeps_fields");
    let holder = s.holder("a");
    let node = s.name("node");
    let claim = Claim {
        pool: s.name("pool"),
        app: "shop/web".into(),
        borrowed: true,
        created: 0,
        ..s.claim(&s.name("sn"), "2001:db8::1:2", &holder, &node)
    };

    let before = now();
    let outcome = store.claim(&claim).await.during(&s, "claiming")?;
    let after = now();
    s.ensure(outcome == ClaimOutcome::Won, || {
        format!("claim answered {outcome:?}, expected Won")
    })?;

    for (how, found) in [
        (
            "claims_of",
            store.claims_of(&holder).await.during(&s, "claims_of")?,
        ),
        (
            "list_claims",
            store
                .list_claims(Some(&node))
                .await
                .during(&s, "list_claims")?,
        ),
    ] {
        let [stored] = found.as_slice() else {
            return Err(s.fail(format!("{how} returned {} claims, expected 1", found.len())));
        };
        s.ensure(
            stored.created + 1 >= before && stored.created <= after + 1,
            || {
                format!(
                    "{how}: created is {}, expected between {before} and {after}",
                    stored.created
                )
            },
        )?;
        let expected = Claim {
            created: stored.created,
            ..claim.clone()
        };
        s.ensure(*stored == expected, || {
            format!("{how} returned {stored:?}, expected {expected:?}")
        })?;
    }

    s.release_all(&store, &[claim]).await
}

/// 64 tasks claim one address at once, for a few addresses: exactly one wins
/// each, every other is told the winner, and the store holds one record.
///
/// # Errors
/// A [`Failure`] listing the winners.
pub async fn concurrent_claims_one_winner(store: SharedStore) -> Result<(), Failure> {
    const TASKS: usize = 64;
    let s = Scope::new("concurrent_claims_one_winner");
    let subnet = s.name("sn");
    let node = s.name("node");
    let mut made = Vec::new();

    for address in ["192.0.2.20", "192.0.2.21", "2001:db8::20", "2001:db8::21"] {
        let mut tasks = JoinSet::new();
        for task in 0..TASKS {
            let claim = s.claim(&subnet, address, &s.holder(&format!("t{task}")), &node);
            let store = store.clone();
            tasks.spawn(async move {
                let outcome = store.claim(&claim).await;
                (claim, outcome)
            });
        }

        let mut winners = Vec::new();
        let mut holders_named = BTreeSet::new();
        while let Some(joined) = tasks.join_next().await {
            let (claim, outcome) =
                joined.map_err(|e| s.fail(format!("a claiming task failed: {e}")))?;
            match outcome.during(&s, "a concurrent claim")? {
                ClaimOutcome::Won => winners.push(claim),
                ClaimOutcome::Taken { holder } => {
                    holders_named.insert(holder);
                }
            }
        }

        let [winner] = winners.as_slice() else {
            let names: Vec<_> = winners.iter().map(|c| c.attachment.to_string()).collect();
            return Err(s.fail(format!(
                "{address}: {} claims won ({names:?}), expected 1",
                names.len()
            )));
        };
        s.ensure(
            holders_named == BTreeSet::from([winner.attachment.clone()]),
            || {
                format!(
                    "{address}: Taken answers named {holders_named:?}, expected only the winner {}",
                    winner.attachment
                )
            },
        )?;
        let stored: Vec<_> = store
            .list_claims(Some(&node))
            .await
            .during(&s, "list_claims")?
            .into_iter()
            .filter(|c| c.ip == ip(address))
            .collect();
        s.ensure(
            stored.len() == 1 && stored[0].attachment == winner.attachment,
            || {
                format!(
                    "{address}: the store holds {stored:?}, expected one record of {}",
                    winner.attachment
                )
            },
        )?;
        made.push(winner.clone());
    }

    s.release_all(&store, &made).await
}

/// Only the holder releases a record; releasing what is not held deletes
/// nothing and says so; a released address can be claimed again.
///
/// # Errors
/// A [`Failure`] saying which release misbehaved.
pub async fn release_only_by_holder(store: SharedStore) -> Result<(), Failure> {
    let s = Scope::new("release_only_by_holder");
    let subnet = s.name("sn");
    let node = s.name("node");
    let (a, b) = (s.holder("a"), s.holder("b"));
    let claim = s.claim(&subnet, "192.0.2.30", &a, &node);
    let address = claim.ip;
    store.claim(&claim).await.during(&s, "claiming")?;

    let released = store
        .release(&subnet, address, &b)
        .await
        .during(&s, "release by another")?;
    s.ensure(!released, || {
        format!("{b} released {subnet}/{address}, which {a} holds")
    })?;
    let other_if = Attachment {
        ifname: "net1".into(),
        ..a.clone()
    };
    let released = store
        .release(&subnet, address, &other_if)
        .await
        .during(&s, "release by another interface")?;
    s.ensure(!released, || {
        format!("{other_if} released {subnet}/{address}, which {a} holds")
    })?;
    let released = store
        .release(&s.name("other-sn"), address, &a)
        .await
        .during(&s, "release in another subnet")?;
    s.ensure(!released, || {
        format!("release of {address} in another subnet said it deleted")
    })?;
    let held = store.claims_of(&a).await.during(&s, "claims_of")?;
    s.ensure(held.len() == 1, || {
        format!("after refused releases {a} holds {held:?}, expected the claim")
    })?;

    let released = store
        .release(&subnet, address, &a)
        .await
        .during(&s, "release by the holder")?;
    s.ensure(released, || {
        format!("the holder {a} could not release {subnet}/{address}")
    })?;
    let held = store.claims_of(&a).await.during(&s, "claims_of")?;
    s.ensure(held.is_empty(), || {
        format!("after release {a} still holds {held:?}")
    })?;
    let released = store
        .release(&subnet, address, &a)
        .await
        .during(&s, "second release")?;
    s.ensure(!released, || "a second release said it deleted".to_string())?;
    let released = store
        .release(&subnet, ip("192.0.2.31"), &a)
        .await
        .during(&s, "release of an unclaimed")?;
    s.ensure(!released, || {
        "release of a never claimed address said it deleted".to_string()
    })?;

    let again = Claim {
        attachment: b.clone(),
        ..claim
    };
    let outcome = store
        .claim(&again)
        .await
        .during(&s, "claim after release")?;
    s.ensure(outcome == ClaimOutcome::Won, || {
        format!("claim of a released address answered {outcome:?}, expected Won")
    })?;

    s.release_all(&store, &[again]).await
}

/// `claims_of` returns the claims of one attachment (container and
/// interface), in every subnet and family, and no others.
///
/// # Errors
/// A [`Failure`] with the claims found.
pub async fn claims_of_holder(store: SharedStore) -> Result<(), Failure> {
    let s = Scope::new("claims_of_holder");
    let (v4, v6) = (s.name("sn4"), s.name("sn6"));
    let node = s.name("node");
    let a = s.holder("a");
    let a_net1 = Attachment {
        ifname: "net1".into(),
        ..a.clone()
    };
    let b = s.holder("b");
    let claims = [
        s.claim(&v4, "192.0.2.40", &a, &node),
        s.claim(&v6, "2001:db8::40", &a, &node),
        s.claim(&v4, "192.0.2.41", &a_net1, &node),
        s.claim(&v4, "192.0.2.42", &b, &node),
    ];
    for claim in &claims {
        let outcome = store.claim(claim).await.during(&s, "claiming")?;
        s.ensure(outcome == ClaimOutcome::Won, || {
            format!("claim answered {outcome:?}, expected Won")
        })?;
    }

    for (holder, expected) in [
        (
            &a,
            BTreeSet::from([
                (v4.clone(), ip("192.0.2.40")),
                (v6.clone(), ip("2001:db8::40")),
            ]),
        ),
        (&a_net1, BTreeSet::from([(v4.clone(), ip("192.0.2.41"))])),
        (&b, BTreeSet::from([(v4.clone(), ip("192.0.2.42"))])),
        (&s.holder("nobody"), BTreeSet::new()),
    ] {
        let found = store.claims_of(holder).await.during(&s, "claims_of")?;
        s.ensure(
            keys(&found) == expected && found.len() == expected.len(),
            || {
                format!(
                    "claims_of({holder}) returned {:?}, expected {expected:?}",
                    keys(&found)
                )
            },
        )?;
    }

    s.release_all(&store, &claims).await
}

/// `list_claims` with a node returns that node's claims only; without, it
/// returns every claim.
///
/// # Errors
/// A [`Failure`] with the claims found.
pub async fn list_claims_by_node(store: SharedStore) -> Result<(), Failure> {
    let s = Scope::new("list_claims_by_node");
    let subnet = s.name("sn");
    let (n1, n2) = (s.name("n1"), s.name("n2"));
    let claims = [
        s.claim(&subnet, "192.0.2.50", &s.holder("a"), &n1),
        s.claim(&subnet, "2001:db8::50", &s.holder("a"), &n1),
        s.claim(&subnet, "192.0.2.51", &s.holder("b"), &n2),
    ];
    for claim in &claims {
        store.claim(claim).await.during(&s, "claiming")?;
    }

    let on_n1 = store
        .list_claims(Some(&n1))
        .await
        .during(&s, "list_claims(n1)")?;
    let expected = BTreeSet::from([
        (subnet.clone(), ip("192.0.2.50")),
        (subnet.clone(), ip("2001:db8::50")),
    ]);
    s.ensure(keys(&on_n1) == expected && on_n1.len() == 2, || {
        format!(
            "list_claims({n1}) returned {:?}, expected {expected:?}",
            keys(&on_n1)
        )
    })?;
    let on_n2 = store
        .list_claims(Some(&n2))
        .await
        .during(&s, "list_claims(n2)")?;
    s.ensure(
        keys(&on_n2) == BTreeSet::from([(subnet.clone(), ip("192.0.2.51"))]),
        || format!("list_claims({n2}) returned {:?}", keys(&on_n2)),
    )?;
    let nowhere = store
        .list_claims(Some(&s.name("n3")))
        .await
        .during(&s, "list_claims(n3)")?;
    s.ensure(nowhere.is_empty(), || {
        format!("a node without claims has {nowhere:?}")
    })?;

    let all = store
        .list_claims(None)
        .await
        .during(&s, "list_claims(None)")?;
    let ours: Vec<_> = all.iter().filter(|c| c.subnet == subnet).cloned().collect();
    s.ensure(keys(&ours) == keys(&claims) && ours.len() == 3, || {
        format!(
            "list_claims(None) has {:?} of ours, expected {:?}",
            keys(&ours),
            keys(&claims)
        )
    })?;

    s.release_all(&store, &claims).await
}

/// An apply with the generation of before another apply is refused with
/// [`StoreError::Conflict`] and writes nothing.
///
/// # Errors
/// A [`Failure`] with the answer or the object that was written.
pub async fn apply_stale_generation_conflicts(store: SharedStore) -> Result<(), Failure> {
    let s = Scope::new("apply_stale_generation_conflicts");
    let (a, b, c) = (s.name("a"), s.name("b"), s.name("c"));

    let g0 = store.generation().await.during(&s, "generation")?;
    let g1 = store
        .apply(&[put(Kind::Subnet, &a, 1)], g0)
        .await
        .during(&s, "the first apply")?;
    s.ensure(g1 > g0, || {
        format!("apply at generation {g0} returned generation {g1}")
    })?;
    let now_at = store.generation().await.during(&s, "generation")?;
    s.ensure(now_at == g1, || {
        format!("generation is {now_at} after an apply that returned {g1}")
    })?;

    let stale = [
        put(Kind::Subnet, &b, 1),
        put(Kind::IPPool, &c, 1),
        delete(Kind::Subnet, &a),
    ];
    match store.apply(&stale, g0).await {
        Err(StoreError::Conflict {
            expected, found, ..
        }) => {
            s.ensure(expected == g0 && found == g1, || {
                format!("conflict said expected {expected}, found {found}; should be {g0} and {g1}")
            })?;
        }
        other => {
            return Err(s.fail(format!(
                "stale apply answered {other:?}, expected a conflict"
            )))
        }
    }
    s.absent(&store, Kind::Subnet, &b).await?;
    s.absent(&store, Kind::IPPool, &c).await?;
    s.present(&store, Kind::Subnet, &a, 1).await?;
    let after = store.generation().await.during(&s, "generation")?;
    s.ensure(after == g1, || {
        format!("a refused apply moved the generation from {g1} to {after}")
    })?;

    s.delete_resources(&store, &[(Kind::Subnet, &a)]).await
}

/// An apply writes all its changes or none: puts and deletes of several
/// kinds appear together, and a refused batch leaves every object as it
/// was, revision included.
///
/// # Errors
/// A [`Failure`] naming the object out of place.
pub async fn apply_all_or_nothing(store: SharedStore) -> Result<(), Failure> {
    let s = Scope::new("apply_all_or_nothing");
    let (a, b, c) = (s.name("a"), s.name("b"), s.name("c"));

    let g0 = store.generation().await.during(&s, "generation")?;
    let g1 = store
        .apply(&[put(Kind::Subnet, &a, 1), put(Kind::IPPool, &b, 1)], g0)
        .await
        .during(&s, "the first apply")?;
    s.present(&store, Kind::Subnet, &a, 1).await?;
    let b1 = s.present(&store, Kind::IPPool, &b, 1).await?;

    let batch = [
        delete(Kind::Subnet, &a),
        put(Kind::IPPool, &b, 2),
        put(Kind::IPPool, &c, 1),
    ];
    let refused = store.apply(&batch, g0).await;
    s.ensure(matches!(refused, Err(StoreError::Conflict { .. })), || {
        format!("stale apply answered {refused:?}, expected a conflict")
    })?;
    s.present(&store, Kind::Subnet, &a, 1).await?;
    let b_now = s.present(&store, Kind::IPPool, &b, 1).await?;
    s.ensure(b_now == b1, || {
        format!("a refused apply moved the revision of {b} from {b1} to {b_now}")
    })?;
    s.absent(&store, Kind::IPPool, &c).await?;

    let g2 = store
        .apply(&batch, g1)
        .await
        .during(&s, "the second apply")?;
    s.ensure(g2 > g1, || {
        format!("apply at generation {g1} returned generation {g2}")
    })?;
    s.absent(&store, Kind::Subnet, &a).await?;
    s.present(&store, Kind::IPPool, &b, 2).await?;
    s.present(&store, Kind::IPPool, &c, 1).await?;

    // Deleting what is absent is no error.
    let g3 = store
        .apply(&[delete(Kind::Subnet, &a)], g2)
        .await
        .during(&s, "deleting an absent")?;
    s.ensure(g3 > g2, || {
        format!("apply at generation {g2} returned generation {g3}")
    })?;

    s.delete_resources(&store, &[(Kind::IPPool, &b), (Kind::IPPool, &c)])
        .await
}

/// Eight tasks apply batches at once from the generation they read: each
/// batch is written whole if its apply succeeded and not at all if it
/// conflicted, at least one succeeds, and no two succeed at one generation.
///
/// # Errors
/// A [`Failure`] naming the batch found half written.
pub async fn concurrent_applies_all_or_nothing(store: SharedStore) -> Result<(), Failure> {
    const TASKS: usize = 8;
    const CHANGES: usize = 4;
    let s = Scope::new("concurrent_applies_all_or_nothing");

    let mut tasks = JoinSet::new();
    for task in 0..TASKS {
        let names: Vec<String> = (0..CHANGES)
            .map(|i| s.name(&format!("t{task}-{i}")))
            .collect();
        let store = store.clone();
        tasks.spawn(async move {
            let changes: Vec<Change> = names.iter().map(|n| put(Kind::IPPool, n, 1)).collect();
            let result = match store.generation().await {
                Ok(generation) => store.apply(&changes, generation).await,
                Err(e) => Err(e),
            };
            (names, result)
        });
    }

    let mut generations = BTreeSet::new();
    let mut written = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (names, result) =
            joined.map_err(|e| s.fail(format!("an applying task failed: {e}")))?;
        let mut present = 0;
        for name in &names {
            if store
                .get(Kind::IPPool, name)
                .await
                .during(&s, "get")?
                .is_some()
            {
                present += 1;
            }
        }
        match result {
            Ok(generation) => {
                s.ensure(present == CHANGES, || {
                    format!("an apply that succeeded wrote {present} of {CHANGES} changes")
                })?;
                s.ensure(generations.insert(generation), || {
                    format!("two applies both returned generation {generation}")
                })?;
                written.extend(names);
            }
            Err(StoreError::Conflict { .. }) => {
                s.ensure(present == 0, || {
                    format!("an apply that conflicted wrote {present} of {CHANGES} changes")
                })?;
            }
            Err(e) => return Err(s.fail(format!("an apply failed: {e}"))),
        }
    }
    s.ensure(!generations.is_empty(), || {
        format!("none of {TASKS} concurrent applies succeeded")
    })?;

    let made: Vec<_> = written.iter().map(|n| (Kind::IPPool, n.as_str())).collect();
    s.delete_resources(&store, &made).await
}

/// Nodes, namespaces and workloads are put and read back whole, each kind
/// apart; `list` returns a kind sorted by key.
///
/// # Errors
/// A [`Failure`] with the object that differs.
pub async fn objects_put_get_list(store: SharedStore) -> Result<(), Failure> {
    let s = Scope::new("objects_put_get_list");
    let (n1, n2) = (s.name("n1"), s.name("n2"));
    let namespace = s.name("ns");
    let workload = workload_key(&namespace, "Deployment", "web");
    let node_doc = |name: &str| json!({"metadata": {"name": name, "labels": {"zone": "z1"}}});
    let workload_doc = json!({
        "metadata": {"name": "web", "namespace": namespace,
                     "annotations": {"ipam.atoll.dev/ippools": "a,b"}},
        "ratio": 0.5, "list": [1, "two", null, true],
    });

    let written = [
        (Kind::Node, n2.clone(), node_doc(&n2)),
        (Kind::Node, n1.clone(), node_doc(&n1)),
        (
            Kind::Namespace,
            namespace.clone(),
            json!({"metadata": {"name": namespace}}),
        ),
        (Kind::Workload, workload.clone(), workload_doc),
    ];
    let mut revisions = Vec::new();
    for (kind, key, value) in &written {
        revisions.push(store.put(*kind, key, value).await.during(&s, "put")?);
    }

    for ((kind, key, value), revision) in written.iter().zip(&revisions) {
        let found = store.get(*kind, key).await.during(&s, "get")?;
        let Some(found) = found else {
            return Err(s.fail(format!("{kind}/{key} was put but get found nothing")));
        };
        s.ensure(
            found.kind == *kind && found.key == *key && found.value == *value,
            || format!("get({kind}, {key}) returned {found:?}, expected the value put"),
        )?;
        s.ensure(found.revision == *revision, || {
            format!(
                "{kind}/{key}: put returned revision {revision}, get has {}",
                found.revision
            )
        })?;

        let listed = store.list(*kind).await.during(&s, "list")?;
        let listed_keys: Vec<&str> = listed.iter().map(|o| o.key.as_str()).collect();
        s.ensure(listed_keys.windows(2).all(|w| w[0] < w[1]), || {
            format!("list({kind}) is not sorted by key: {listed_keys:?}")
        })?;
        s.ensure(listed.iter().all(|o| o.kind == *kind), || {
            format!("list({kind}) has other kinds")
        })?;
        s.ensure(listed.contains(&found), || {
            format!("list({kind}) lacks {key} as get returned it")
        })?;
    }

    let ours: Vec<String> = store
        .list(Kind::Node)
        .await
        .during(&s, "list")?
        .into_iter()
        .filter(|o| o.key.starts_with(&s.prefix))
        .map(|o| o.key)
        .collect();
    s.ensure(ours == [n1.clone(), n2.clone()], || {
        format!("list(nodes) has {ours:?} of ours")
    })?;

    s.absent(&store, Kind::Node, &s.name("missing")).await?;
    s.absent(&store, Kind::Workload, &n1).await?;
    s.absent(&store, Kind::Node, &workload).await
}

/// Every write changes the revision of what it wrote, even when the value is
/// the same, through `put` and through `apply`.
///
/// # Errors
/// A [`Failure`] with the revisions seen.
pub async fn revisions_change_on_write(store: SharedStore) -> Result<(), Failure> {
    let s = Scope::new("revisions_change_on_write");
    let node = s.name("node");
    let value = json!({"metadata": {"name": node}});

    let r1 = store
        .put(Kind::Node, &node, &value)
        .await
        .during(&s, "put")?;
    let r2 = store
        .put(Kind::Node, &node, &value)
        .await
        .during(&s, "put again")?;
    let r3 = store
        .put(Kind::Node, &node, &json!({"changed": true}))
        .await
        .during(&s, "put")?;
    s.ensure(r1 != r2 && r2 != r3 && r1 != r3, || {
        format!("three puts returned revisions {r1}, {r2}, {r3}")
    })?;
    let found = store
        .get(Kind::Node, &node)
        .await
        .during(&s, "get")?
        .map(|o| o.revision);
    s.ensure(found == Some(r3), || {
        format!("get has revision {found:?}, the last put returned {r3}")
    })?;

    let subnet = s.name("sn");
    let g = store.generation().await.during(&s, "generation")?;
    let g = store
        .apply(&[put(Kind::Subnet, &subnet, 1)], g)
        .await
        .during(&s, "apply")?;
    let s1 = s.present(&store, Kind::Subnet, &subnet, 1).await?;
    store
        .apply(&[put(Kind::Subnet, &subnet, 1)], g)
        .await
        .during(&s, "apply again")?;
    let s2 = s.present(&store, Kind::Subnet, &subnet, 1).await?;
    s.ensure(s1 != s2, || {
        format!("re-applying {subnet} kept revision {s1}")
    })?;

    s.delete_resources(&store, &[(Kind::Subnet, &subnet)]).await
}

/// `put` refuses subnets and pools, which only `apply` writes, and writes
/// nothing.
///
/// # Errors
/// A [`Failure`] if a put of a resource succeeded.
pub async fn put_refuses_resources(store: SharedStore) -> Result<(), Failure> {
    let s = Scope::new("put_refuses_resources");
    for kind in [Kind::Subnet, Kind::IPPool] {
        let key = s.name(kind.as_str());
        let answer = store
            .put(kind, &key, &json!({"metadata": {"name": key}}))
            .await;
        s.ensure(answer.is_err(), || {
            format!("put({kind}, {key}) answered {answer:?}, expected an error")
        })?;
        s.absent(&store, kind, &key).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Helpers.

/// One check's names and messages.
struct Scope {
    check: &'static str,
    prefix: String,
}

impl Scope {
    fn new(check: &'static str) -> Scope {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("conf-{:x}-{nanos:x}-{sequence}", std::process::id());
        Scope { check, prefix }
    }

    /// A name unique to this call of the check.
    fn name(&self, what: &str) -> String {
        format!("{}-{what}", self.prefix)
    }

    fn holder(&self, what: &str) -> Attachment {
        Attachment {
            container_id: self.name(what),
            ifname: "eth0".into(),
        }
    }

    fn claim(&self, subnet: &str, address: &str, holder: &Attachment, node: &str) -> Claim {
        Claim {
            subnet: subnet.to_string(),
            ip: ip(address),
            pool: format!("{subnet}-pool"),
            attachment: holder.clone(),
            node: node.to_string(),
            app: String::new(),
            network: "conformance-net".into(),
            borrowed: false,
            created: 0,
        }
    }

    fn fail(&self, message: String) -> Failure {
        Failure {
            check: self.check,
            message,
        }
    }

    fn ensure(&self, holds: bool, message: impl FnOnce() -> String) -> Result<(), Failure> {
        if holds {
            Ok(())
        } else {
            Err(self.fail(message()))
        }
    }

    async fn absent(&self, store: &SharedStore, kind: Kind, key: &str) -> Result<(), Failure> {
        let found = store.get(kind, key).await.during(self, "get")?;
        self.ensure(found.is_none(), || {
            format!("{kind}/{key} should be absent, found {found:?}")
        })
    }

    /// Checks that the object holds the document `put` made with `version`;
    /// returns its revision.
    async fn present(
        &self,
        store: &SharedStore,
        kind: Kind,
        key: &str,
        version: u32,
    ) -> Result<u64, Failure> {
        let found = store.get(kind, key).await.during(self, "get")?;
        let Some(found) = found else {
            return Err(self.fail(format!("{kind}/{key} should be present, found nothing")));
        };
        let expected = document(kind, key, version);
        self.ensure(found.value == expected, || {
            format!("{kind}/{key} holds {}, expected {expected}", found.value)
        })?;
        Ok(found.revision)
    }

    async fn release_all(&self, store: &SharedStore, claims: &[Claim]) -> Result<(), Failure> {
        for claim in claims {
            let released = store
                .release(&claim.subnet, claim.ip, &claim.attachment)
                .await
                .during(self, "cleaning up")?;
            self.ensure(released, || {
                format!(
                    "cleaning up: {} could not release {}/{}",
                    claim.attachment, claim.subnet, claim.ip
                )
            })?;
        }
        Ok(())
    }

    async fn delete_resources(
        &self,
        store: &SharedStore,
        made: &[(Kind, &str)],
    ) -> Result<(), Failure> {
        if made.is_empty() {
            return Ok(());
        }
        let changes: Vec<Change> = made.iter().map(|(kind, key)| delete(*kind, key)).collect();
        let generation = store.generation().await.during(self, "cleaning up")?;
        store
            .apply(&changes, generation)
            .await
            .during(self, "cleaning up")?;
        Ok(())
    }
}

/// Turns a store error into a failure of the check.
trait During<T> {
    fn during(self, scope: &Scope, what: &str) -> Result<T, Failure>;
}

impl<T> During<T> for Result<T, StoreError> {
    fn during(self, scope: &Scope, what: &str) -> Result<T, Failure> {
        self.map_err(|e| scope.fail(format!("{what}: {e}")))
    }
}

fn ip(text: &str) -> IpAddr {
    // The checks pass literals only.
    text.parse()
        .unwrap_or_else(|e| panic!("bad address literal {text:?} in the checks: {e}"))
}

fn keys(claims: &[Claim]) -> BTreeSet<(String, IpAddr)> {
    claims.iter().map(|c| (c.subnet.clone(), c.ip)).collect()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A document standing for a subnet or pool; `version` tells versions of it
/// apart.
fn document(kind: Kind, key: &str, version: u32) -> serde_json::Value {
    json!({
        "apiVersion": "ipam.atoll.dev/v1alpha1",
        "kind": kind.as_str(),
        "metadata": {"name": key},
        "spec": {"conformance": version},
    })
}

fn put(kind: Kind, key: &str, version: u32) -> Change {
    Change::Put {
        kind,
        key: key.to_string(),
        value: document(kind, key, version),
    }
}

fn delete(kind: Kind, key: &str) -> Change {
    Change::Delete {
        kind,
        key: key.to_string(),
    }
}
