//! A real three-member etcd cluster on 127.0.0.1 for the tests: an
//! [`EtcdCluster`] of `atoll_etcd::testing` on fixed ports, and the probes
//! these tests ask it with (clients of the crate's client library).
//!
//! Also the claims storm the fault tests share ([`storm`], [`check_storm`],
//! [`storm_with_a_member_killed`]).
//!
//! Base ports in use: 23790 to 23830 (contract), 23840 (concurrency), 23850
//! (follower killed), 23860 (leader killed), 23870 (quorum lost), 23880 and
//! 23890 (auth and TLS).

#![allow(dead_code)] // Each test binary uses a part of this module.

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::Once;
use std::time::Duration;

use atoll_etcd::testing::{EtcdCluster, Ports, MEMBERS};
use atoll_store::{Attachment, Claim, Store};
use etcd_client::{Client, ConnectOptions};
use tokio::time::{sleep, Instant};

/// Logs of the crate under test, to stderr, when `RUST_LOG` asks for them.
pub fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    });
}

/// A running three-member cluster on fixed ports (see the module docs),
/// with the probes of these tests: clients of the crate's own client
/// library. Starting, killing and the logs are [`EtcdCluster`]'s.
pub struct TestCluster {
    cluster: EtcdCluster,
}

impl Deref for TestCluster {
    type Target = EtcdCluster;

    fn deref(&self) -> &EtcdCluster {
        &self.cluster
    }
}

impl DerefMut for TestCluster {
    fn deref_mut(&mut self) -> &mut EtcdCluster {
        &mut self.cluster
    }
}

impl TestCluster {
    /// Starts three members on ports `base..base + 6` and waits until the
    /// cluster answers linearizable reads on every member.
    pub async fn start(base: u16) -> TestCluster {
        TestCluster::start_with(base, false).await
    }

    /// Like [`TestCluster::start`], serving clients over TLS with client
    /// certificates required (certificates made with `openssl`).
    pub async fn start_tls(base: u16) -> TestCluster {
        TestCluster::start_with(base, true).await
    }

    async fn start_with(base: u16, tls: bool) -> TestCluster {
        init_logging();
        let cluster = TestCluster {
            cluster: EtcdCluster::launch(Ports::Fixed(base), tls),
        };
        for n in 0..MEMBERS {
            cluster.wait_member_ready(n, Duration::from_secs(30)).await;
        }
        cluster
    }

    /// Starts member `n` again on its data directory.
    pub fn restart(&mut self, n: usize) {
        self.cluster.spawn(n);
    }

    /// A plain client of member `n`: no failover, no leader required.
    pub async fn member_client(&self, n: usize) -> Client {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_millis(500))
            .with_timeout(Duration::from_secs(1));
        if let Some(tls) = self.tls() {
            let read = |path: &Path| std::fs::read(path).expect("certificate file");
            options = options.with_tls(
                etcd_client::TlsOptions::new()
                    .ca_certificate(etcd_client::Certificate::from_pem(read(&tls.ca)))
                    .identity(etcd_client::Identity::from_pem(
                        read(&tls.client_cert),
                        read(&tls.client_key),
                    )),
            );
        }
        if let Some((user, password)) = &self.user {
            options = options.with_user(user, password);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Connecting authenticates when there is a user, which needs a
            // member that answers.
            match Client::connect([self.endpoint(n)], Some(options.clone())).await {
                Ok(client) => return client,
                Err(e) if Instant::now() > deadline => panic!("client of member {n}: {e}"),
                Err(_) => sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Waits until member `n` serves a linearizable read.
    pub async fn wait_member_ready(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        let mut client = self.member_client(n).await;
        loop {
            match client.get("/readiness-probe", None).await {
                Ok(_) => return,
                Err(e) if Instant::now() > deadline => {
                    panic!("member {n} not ready within {within:?}: {e}")
                }
                Err(_) => sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// The index of the leader, as reported by the running members.
    pub async fn leader(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            for n in (0..MEMBERS).filter(|n| self.is_running(*n)) {
                let mut client = self.member_client(n).await;
                if let Ok(status) = client.status().await {
                    let me = status.header().map(|h| h.member_id()).unwrap_or_default();
                    if status.leader() != 0 && status.leader() == me {
                        return n;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no leader within {within:?}");
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until member `n` reports that it has no leader.
    pub async fn wait_leaderless(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        let mut client = self.member_client(n).await;
        loop {
            if let Ok(status) = client.status().await {
                if status.leader() == 0 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "member {n} still has a leader after {within:?}"
            );
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every key under `prefix`, straight from member `n`'s local data
    /// (serializable read: works without quorum too).
    pub async fn keys(&self, n: usize, prefix: &str) -> Vec<String> {
        let mut client = self.member_client(n).await;
        let options = etcd_client::GetOptions::new()
            .with_prefix()
            .with_keys_only()
            .with_serializable();
        let response = client.get(prefix, Some(options)).await.expect("read keys");
        response
            .kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
            .collect()
    }
}

/// A unique key prefix, so that tests sharing a cluster do not meet.
pub fn prefix(test: &str) -> String {
    format!("/atoll-test/{test}/")
}

/// A claim of `ip` in `subnet` by container `container`, interface eth0.
pub fn claim(subnet: &str, ip: &str, container: &str, node: &str) -> Claim {
    Claim {
        subnet: subnet.into(),
        ip: ip.parse().expect("test address"),
        pool: format!("{subnet}-pool"),
        attachment: Attachment {
            container_id: container.into(),
            ifname: "eth0".into(),
        },
        node: node.into(),
        app: "default/web".into(),
        network: "net".into(),
        borrowed: false,
        created: 0,
    }
}

/// What every claimer of a [`storm`] was told.
#[derive(Debug, Default)]
pub struct StormOutcome {
    /// Per address, the claimers told `Won`.
    pub won: std::collections::BTreeMap<std::net::IpAddr, Vec<Attachment>>,
    /// (address, claimer, holder named) of every `Taken`.
    pub taken: Vec<(std::net::IpAddr, Attachment, Attachment)>,
    /// Every error, as text.
    pub errors: Vec<String>,
}

/// The attachment of claimer `k` of a storm.
pub fn claimer(k: usize) -> Attachment {
    Attachment {
        container_id: format!("storm-{k}"),
        ifname: "eth0".into(),
    }
}

/// The node of claimer `k` of a storm.
pub fn claimer_node(k: usize) -> String {
    format!("node-{}", k % 4)
}

/// The `i`th address of a storm: 10.77.x.y.
pub fn storm_address(i: usize) -> std::net::IpAddr {
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(
        10,
        77,
        (i / 250) as u8,
        (i % 250 + 1) as u8,
    ))
}

/// `claimers` tasks each claim every one of `addresses` addresses of subnet
/// `storm`, each starting at its own place in the list so that they meet on
/// every address at different times. Claimer `k` uses `stores[k %
/// stores.len()]`. `done` counts finished claims, for a test that acts
/// midway.
pub async fn storm<S: atoll_store::Store + 'static>(
    stores: &[std::sync::Arc<S>],
    claimers: usize,
    addresses: usize,
    done: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> StormOutcome {
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..claimers {
        let store = stores[k % stores.len()].clone();
        let done = done.clone();
        tasks.spawn(async move {
            let mut told = Vec::new();
            let start = k * addresses / claimers;
            for step in 0..addresses {
                let i = (start + step) % addresses;
                let mut c = claim("storm", "0.0.0.0", "", &claimer_node(k));
                c.ip = storm_address(i);
                c.attachment = claimer(k);
                told.push((c.ip, store.claim(&c).await));
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            (k, told)
        });
    }

    let mut outcome = StormOutcome::default();
    while let Some(joined) = tasks.join_next().await {
        let (k, told) = joined.expect("a claimer panicked");
        for (ip, answer) in told {
            match answer {
                Ok(atoll_store::ClaimOutcome::Won) => {
                    outcome.won.entry(ip).or_default().push(claimer(k))
                }
                Ok(atoll_store::ClaimOutcome::Taken { holder }) => {
                    outcome.taken.push((ip, claimer(k), holder))
                }
                Err(e) => outcome
                    .errors
                    .push(format!("{} claiming {ip}: {e}", claimer(k))),
            }
        }
    }
    outcome
}

/// Checks a storm's answers against each other and against the store: no
/// error, one winner per address, every `Taken` naming the winner, and the
/// claims and both indexes holding exactly the winners.
pub async fn check_storm<S: atoll_store::Store>(
    store: &S,
    outcome: &StormOutcome,
    claimers: usize,
    addresses: usize,
) {
    assert!(
        outcome.errors.is_empty(),
        "{} claims failed: {:?}",
        outcome.errors.len(),
        outcome.errors
    );
    assert_eq!(outcome.won.len(), addresses, "addresses won");
    for (ip, winners) in &outcome.won {
        assert_eq!(winners.len(), 1, "{ip} was won by {winners:?}");
    }
    for (ip, by, holder) in &outcome.taken {
        assert_eq!(
            holder, &outcome.won[ip][0],
            "{by} was told {ip} is held by {holder}"
        );
    }
    assert_eq!(
        outcome.taken.len(),
        addresses * (claimers - 1),
        "answers of Taken"
    );

    let stored = store.list_claims(None).await.expect("list claims");
    let stored: Vec<_> = stored.into_iter().filter(|c| c.subnet == "storm").collect();
    assert_eq!(stored.len(), addresses, "records stored");
    for c in &stored {
        assert_eq!(c.attachment, outcome.won[&c.ip][0], "record of {}", c.ip);
    }
    for k in 0..claimers {
        let mut held: Vec<_> = store
            .claims_of(&claimer(k))
            .await
            .expect("claims of")
            .iter()
            .map(|c| c.ip)
            .collect();
        held.sort();
        let won: Vec<_> = outcome
            .won
            .iter()
            .filter(|(_, w)| w[0] == claimer(k))
            .map(|(ip, _)| *ip)
            .collect();
        assert_eq!(held, won, "claims of {}", claimer(k));
    }
    let mut by_node = 0;
    for node in 0..4 {
        for c in store
            .list_claims(Some(&format!("node-{node}")))
            .await
            .expect("claims of node")
        {
            assert_eq!(
                claimer_node(c.attachment.container_id[6..].parse().unwrap()),
                c.node
            );
            by_node += 1;
        }
    }
    assert_eq!(by_node, addresses, "node index entries");
}

/// Which member a fault test kills.
#[derive(Debug, Clone, Copy)]
pub enum Victim {
    /// A member that is not the leader.
    Follower,
    /// The leader.
    Leader,
}

/// Runs a claims storm through three stores (each preferring another
/// member), kills a member when a quarter of the claims are done, and
/// checks that every claim was answered once and rightly. Then starts the
/// member again and checks that it caught up and the stores go on working.
pub async fn storm_with_a_member_killed(base: u16, victim: Victim) {
    const CLAIMERS: usize = 32;
    const ADDRESSES: usize = 120;
    let mut cluster = TestCluster::start(base).await;
    let test = format!("killed-{victim:?}");
    let mut stores = Vec::new();
    for first in 0..MEMBERS {
        // Room for an election (one to two seconds) within one operation.
        let opts = atoll_etcd::EtcdOptions {
            prefix: prefix(&test),
            request_timeout: Duration::from_secs(10),
            ..atoll_etcd::EtcdOptions::default()
        };
        stores.push(std::sync::Arc::new(
            atoll_etcd::open(&cluster.address_from(first), opts)
                .await
                .expect("open"),
        ));
    }
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let killed = match victim {
        Victim::Leader => leader,
        Victim::Follower => (leader + 1) % MEMBERS,
    };

    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let running = {
        let (stores, done) = (stores.clone(), done.clone());
        tokio::spawn(async move { storm(&stores, CLAIMERS, ADDRESSES, done).await })
    };
    let total = CLAIMERS * ADDRESSES;
    let deadline = Instant::now() + Duration::from_secs(120);
    while done.load(std::sync::atomic::Ordering::Relaxed) < total / 4 {
        assert!(Instant::now() < deadline, "the storm made no progress");
        sleep(Duration::from_millis(5)).await;
    }
    cluster.kill(killed);
    let at_kill = done.load(std::sync::atomic::Ordering::Relaxed);
    let outcome = running.await.expect("storm");
    assert!(
        at_kill < total,
        "the member was killed after the storm ended"
    );

    // Checked through the store that prefers a surviving member.
    let survivor = (killed + 1) % MEMBERS;
    check_storm(stores[survivor].as_ref(), &outcome, CLAIMERS, ADDRESSES).await;
    if let Victim::Leader = victim {
        let new_leader = cluster.leader(Duration::from_secs(10)).await;
        assert_ne!(new_leader, killed);
    }

    // Every store, the one whose watch was on the killed member included,
    // watches the generation again and sees another store's apply.
    stores[survivor].apply(&[], 0).await.expect("apply");
    wait_generation(&stores, 1).await;

    // The member comes back, catches up, and the store preferring it works.
    cluster.restart(killed);
    cluster
        .wait_member_ready(killed, Duration::from_secs(30))
        .await;
    let keys = cluster
        .keys(killed, &format!("{}claims/", prefix(&test)))
        .await;
    assert_eq!(keys.len(), ADDRESSES, "claims on the restarted member");
    check_storm(stores[killed].as_ref(), &outcome, CLAIMERS, ADDRESSES).await;
    for (ip, winners) in &outcome.won {
        let released = stores[killed]
            .release("storm", *ip, &winners[0])
            .await
            .expect("release");
        assert!(released, "release of {ip}");
    }
    assert!(stores[killed]
        .list_claims(None)
        .await
        .expect("list")
        .is_empty());
}

/// Waits until every store serves generation `expected` from its watch.
pub async fn wait_generation(stores: &[std::sync::Arc<atoll_etcd::EtcdStore>], expected: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for (n, store) in stores.iter().enumerate() {
        loop {
            let generation = store.generation().await;
            if store.watching_generation() && matches!(generation, Ok(g) if g == expected) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "store {n} answers {generation:?} (watching: {}), expected {expected} from a watch",
                store.watching_generation()
            );
            sleep(Duration::from_millis(20)).await;
        }
    }
}
