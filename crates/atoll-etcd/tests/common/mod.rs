//! A real three-member etcd cluster on 127.0.0.1 for the tests.
//!
//! Each member runs `/usr/bin/etcd` with its own data directory (under one
//! temporary directory, on tmpfs when there is one) and its own ports:
//! member `n` listens for clients on `base + 2n` and for peers on
//! `base + 2n + 1`. Dropping the [`TestCluster`] kills every member and
//! removes the data, also when the test panics; a panicking test prints the
//! end of each member's log first.
//!
//! Also the claims storm the fault tests share ([`storm`], [`check_storm`],
//! [`storm_with_a_member_killed`]).
//!
//! Base ports in use: 23790 to 23830 (contract), 23840 (concurrency), 23850
//! (follower killed), 23860 (leader killed), 23870 (quorum lost), 23880 and
//! 23890 (auth and TLS).

#![allow(dead_code)] // Each test binary uses a part of this module.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::Duration;

use atoll_store::{Attachment, Claim, Store};
use etcd_client::{Client, ConnectOptions};
use tokio::time::{sleep, Instant};

const ETCD: &str = "/usr/bin/etcd";
const MEMBERS: usize = 3;

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

/// PEM files of a cluster serving TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA of every certificate.
    pub ca: PathBuf,
    /// The members' certificate and key (for 127.0.0.1).
    pub server_cert: PathBuf,
    /// The members' key.
    pub server_key: PathBuf,
    /// A client certificate signed by the CA.
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
}

/// A running three-member cluster.
pub struct TestCluster {
    dir: tempfile::TempDir,
    base: u16,
    children: Vec<Option<Child>>,
    tls: Option<TlsFiles>,
    /// Credentials of the helper's own clients, once auth is enabled.
    pub user: Option<(String, String)>,
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
        assert!(
            Path::new(ETCD).exists(),
            "{ETCD} is missing: apt-get install etcd-server"
        );
        for port in base..base + 2 * MEMBERS as u16 {
            assert!(
                TcpListener::bind(("127.0.0.1", port)).is_ok(),
                "port {port} is in use: a stale etcd from an earlier run? (ports {base}..{})",
                base + 2 * MEMBERS as u16
            );
        }
        let shm = Path::new("/dev/shm");
        let mut builder = tempfile::Builder::new();
        builder.prefix("atoll-etcd-test-");
        let dir = if shm.is_dir() {
            builder.tempdir_in(shm)
        } else {
            builder.tempdir()
        }
        .expect("temporary directory");

        let tls = tls.then(|| make_certificates(dir.path()));
        let children = (0..MEMBERS).map(|_| None).collect();
        let mut cluster = TestCluster {
            dir,
            base,
            children,
            tls,
            user: None,
        };
        for n in 0..MEMBERS {
            cluster.spawn(n);
        }
        for n in 0..MEMBERS {
            cluster.wait_member_ready(n, Duration::from_secs(30)).await;
        }
        cluster
    }

    fn client_port(&self, n: usize) -> u16 {
        self.base + 2 * n as u16
    }

    fn peer_url(&self, n: usize) -> String {
        format!("http://127.0.0.1:{}", self.base + 2 * n as u16 + 1)
    }

    /// The client URL of member `n`.
    pub fn endpoint(&self, n: usize) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port(n))
    }

    /// The certificates, for a cluster started with TLS.
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// Every client URL.
    pub fn endpoints(&self) -> Vec<String> {
        (0..MEMBERS).map(|n| self.endpoint(n)).collect()
    }

    /// `etcd:<every endpoint>`.
    pub fn address(&self) -> String {
        format!("etcd:{}", self.endpoints().join(","))
    }

    /// `etcd:<every endpoint>`, starting with member `first`, so that a
    /// store opened on it prefers that member.
    pub fn address_from(&self, first: usize) -> String {
        let endpoints: Vec<String> = (0..MEMBERS)
            .map(|n| self.endpoint((first + n) % MEMBERS))
            .collect();
        format!("etcd:{}", endpoints.join(","))
    }

    fn log_path(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("m{n}.log"))
    }

    fn spawn(&mut self, n: usize) {
        assert!(self.children[n].is_none(), "member {n} is running");
        let initial: Vec<String> = (0..MEMBERS)
            .map(|m| format!("m{m}={}", self.peer_url(m)))
            .collect();
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path(n))
            .expect("log file");
        let mut command = Command::new(ETCD);
        if let Some(tls) = &self.tls {
            command
                .arg(format!("--cert-file={}", tls.server_cert.display()))
                .arg(format!("--key-file={}", tls.server_key.display()))
                .arg(format!("--trusted-ca-file={}", tls.ca.display()))
                .arg("--client-cert-auth");
        }
        let child = command
            .arg(format!("--name=m{n}"))
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join(format!("m{n}")).display()
            ))
            .arg(format!("--listen-client-urls={}", self.endpoint(n)))
            .arg(format!("--advertise-client-urls={}", self.endpoint(n)))
            .arg(format!("--listen-peer-urls={}", self.peer_url(n)))
            .arg(format!(
                "--initial-advertise-peer-urls={}",
                self.peer_url(n)
            ))
            .arg(format!("--initial-cluster={}", initial.join(",")))
            .arg(format!("--initial-cluster-token=atoll-test-{}", self.base))
            .arg("--initial-cluster-state=new")
            .arg("--logger=zap")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.children[n] = Some(child);
    }

    /// Kills member `n` (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self, n: usize) {
        let mut child = self.children[n]
            .take()
            .unwrap_or_else(|| panic!("member {n} is not running"));
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts member `n` again on its data directory.
    pub fn restart(&mut self, n: usize) {
        self.spawn(n);
    }

    /// A plain client of member `n`: no failover, no leader required.
    pub async fn member_client(&self, n: usize) -> Client {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_millis(500))
            .with_timeout(Duration::from_secs(1));
        if let Some(tls) = &self.tls {
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
            for n in (0..MEMBERS).filter(|n| self.children[*n].is_some()) {
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

    fn log_tail(&self, n: usize) -> String {
        let Ok(mut file) = File::open(self.log_path(n)) else {
            return String::new();
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(3000)));
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        text
    }
}

/// Makes a CA, a certificate for the members (IP 127.0.0.1) and a client
/// certificate, with `openssl`, in `dir`.
fn make_certificates(dir: &Path) -> TlsFiles {
    let path = |name: &str| dir.join(name);
    let run = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run openssl (apt-get install openssl)");
        assert!(status.success(), "openssl {args:?} failed");
    };
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"],
        &key[..],
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=atoll test CA",
        ],
    ]
    .concat());
    std::fs::write(
        path("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .expect("write server.ext");
    std::fs::write(path("client.ext"), "extendedKeyUsage=clientAuth\n").expect("write client.ext");
    for who in ["server", "client"] {
        let (key_file, csr, pem, ext) = (
            format!("{who}.key"),
            format!("{who}.csr"),
            format!("{who}.pem"),
            format!("{who}.ext"),
        );
        run(&[
            &["req"],
            &key[..],
            &[
                "-keyout",
                &key_file,
                "-out",
                &csr,
                "-subj",
                &format!("/CN=atoll-{who}"),
            ],
        ]
        .concat());
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }
    TlsFiles {
        ca: path("ca.pem"),
        server_cert: path("server.pem"),
        server_key: path("server.key"),
        client_cert: path("client.pem"),
        client_key: path("client.key"),
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for n in 0..MEMBERS {
                eprintln!("--- end of etcd member {n} log ---\n{}", self.log_tail(n));
            }
        }
        for child in self.children.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        // The TempDir removes the data directories after this.
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
