//! Many nodes on one store: one `atoll agent` process per node, the plugin
//! calls a runtime makes, and the runtime's book of what it was told.
//!
//! The layout is the one the SPEC describes: three zones, a subnet per zone
//! (a /22 of 198.18.0.0/15, the range set aside for benchmarks, which no
//! interface is given here: the plugin only decides addresses), a pool per
//! zone bound to its zone's nodes by the label `zone`, and an application
//! bound to the three pools. Node `i` is `node-<i+1>` in zone `z<i%3+1>`,
//! so every ADD must land in the subnet of its node's zone.
//!
//! A [`Ledger`] keeps what the runtime believes: the containers whose ADD
//! succeeded and were not deleted since, and the address each was given.
//! [`Ledger::verify`] holds the store (read with `atoll get allocations`)
//! against it and runs `atoll check`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::Deref;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use atoll_etcd::testing::temp_dir;
use atoll_store::Claim;
use serde_json::{json, Value};

use crate::common::{binaries, cni, Agent, Binaries, Cni};

/// CNI error code: the agent or the store cannot be reached; retry.
pub const TRY_AGAIN_LATER: u64 = 11;

/// Plugin processes running at once in a storm.
pub const PARALLEL: usize = 32;

/// The namespace and name of the application bound to the three pools.
pub const APP: &str = "storm/web";

/// The CNI network name of every call.
pub const NETWORK: &str = "atoll-e2e";

/// The zones: name, subnet, pool range. Three /22 subnets, about a
/// thousand addresses in each pool.
const ZONES: [(&str, [u8; 4], &str); 3] = [
    ("z1", [198, 18, 0, 0], "198.18.0.2-198.18.3.254"),
    ("z2", [198, 18, 4, 0], "198.18.4.2-198.18.7.254"),
    ("z3", [198, 18, 8, 0], "198.18.8.2-198.18.11.254"),
];

/// The prefix length of every zone's subnet.
const ZONE_PREFIX: u8 = 22;

/// One zone: its subnet and pool.
#[derive(Debug, Clone)]
pub struct Zone {
    /// `z1`, `z2`, `z3`: the value of the node label `zone`.
    pub name: String,
    /// The Subnet's name.
    pub subnet: String,
    /// The IPPool's name.
    pub pool: String,
    /// The subnet's network address.
    pub net: Ipv4Addr,
    /// The subnet's prefix length.
    pub len: u8,
}

impl Zone {
    /// Returns true if and only if `ip` lies in this zone's subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - u32::from(self.len));
        u32::from(self.net) & mask == u32::from(ip) & mask
    }
}

/// The zones of every fleet.
pub fn zones() -> Vec<Zone> {
    ZONES
        .iter()
        .map(|(name, net, _)| Zone {
            name: name.to_string(),
            subnet: format!("subnet-{name}"),
            pool: format!("pool-{name}"),
            net: Ipv4Addr::from(*net),
            len: ZONE_PREFIX,
        })
        .collect()
}

/// The zone (index into [`zones`]) of node `node`.
pub fn zone_of(node: usize) -> usize {
    node % ZONES.len()
}

/// The name of node `node`.
pub fn node_name(node: usize) -> String {
    format!("node-{:02}", node + 1)
}

/// The subnets, pools, and the application bound to the pools, as YAML for
/// `atoll apply`.
pub fn manifest() -> String {
    let pools: Vec<String> = zones().iter().map(|z| z.pool.clone()).collect();
    let (namespace, name) = APP.split_once('/').expect("APP is namespace/name");
    let mut out = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {namespace}}}\n---\n\
         apiVersion: apps/v1\nkind: Deployment\n\
         metadata: {{name: {name}, namespace: {namespace}}}\n\
         spec:\n  template:\n    metadata:\n      annotations:\n        \
         ipam.atoll.dev/ippools: \"{}\"\n---\n",
        pools.join(",")
    );
    for ((name, net, range), zone) in ZONES.iter().zip(zones()) {
        let [a, b, c, _] = *net;
        out.push_str(&format!(
            "apiVersion: ipam.atoll.dev/v1alpha1\nkind: Subnet\nmetadata: {{name: {subnet}}}\n\
             spec:\n  cidr: {net}/{len}\n  gateway: {a}.{b}.{c}.1\n  \
             routes: [{{dst: 0.0.0.0/0, gw: {a}.{b}.{c}.1}}]\n---\n\
             apiVersion: ipam.atoll.dev/v1alpha1\nkind: IPPool\nmetadata: {{name: {pool}}}\n\
             spec:\n  subnet: {subnet}\n  ips: [{range}]\n  nodeAffinity:\n    \
             nodeSelectorTerms:\n      - matchLabels: {{zone: {name}}}\n---\n",
            subnet = zone.subnet,
            pool = zone.pool,
            net = zone.net,
            len = zone.len,
        ));
    }
    out
}

/// One container a runtime starts on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// `CNI_CONTAINERID`.
    pub container: String,
    /// The node (index of its agent).
    pub node: usize,
    /// Named by its application (`ATOLL_APP`, whose Deployment lists the
    /// pools) rather than by its pools (`ATOLL_POOLS`). Both reach the same
    /// pools; each path gets half of the calls.
    pub via_app: bool,
}

/// `count` containers `<prefix>-<n>`, spread round-robin over `nodes` nodes.
pub fn jobs(prefix: &str, count: usize, nodes: usize) -> Vec<Job> {
    (0..count)
        .map(|i| Job {
            container: format!("{prefix}-{i:04}"),
            node: i % nodes,
            via_app: (i / nodes) % 2 == 0,
        })
        .collect()
}

/// What one plugin call of a fleet answered: the plugin's answer (its
/// fields and checks reached through `Deref`), with the job and the time.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The call.
    pub job: Job,
    /// From exec to exit.
    pub took: Duration,
    /// What the plugin answered.
    pub plugin: cni::Outcome,
}

impl Deref for Outcome {
    type Target = cni::Outcome;

    fn deref(&self) -> &cni::Outcome {
        &self.plugin
    }
}

impl Outcome {
    /// Panics unless the call failed with "try again later", the only
    /// answer a fault of the store or of an agent may give.
    pub fn assert_try_again(&self) {
        assert_eq!(
            self.error_code(),
            TRY_AGAIN_LATER,
            "{} failed with another code than try-again-later: {}",
            self.what,
            self.stdout
        );
    }
}

/// How far a storm has come, for a test that acts in the middle of one.
pub struct Progress {
    done: Mutex<usize>,
    changed: Condvar,
    in_flight: Vec<AtomicUsize>,
    total: usize,
}

impl Progress {
    fn new(nodes: usize, total: usize) -> Progress {
        Progress {
            done: Mutex::new(0),
            changed: Condvar::new(),
            in_flight: (0..nodes).map(|_| AtomicUsize::new(0)).collect(),
            total,
        }
    }

    fn begin(&self, node: usize) {
        self.in_flight[node].fetch_add(1, Ordering::SeqCst);
    }

    fn end(&self, node: usize) {
        self.in_flight[node].fetch_sub(1, Ordering::SeqCst);
        *self.done.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.changed.notify_all();
    }

    /// Calls of the storm.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Calls finished so far.
    pub fn done(&self) -> usize {
        *self.done.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Calls to node `node`'s agent running now.
    pub fn in_flight(&self, node: usize) -> usize {
        self.in_flight[node].load(Ordering::SeqCst)
    }

    /// Waits until `n` calls have finished; false if they have not within
    /// `within`.
    pub fn wait_done(&self, n: usize, within: Duration) -> bool {
        let guard = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, within, |done| *done < n)
            .unwrap_or_else(PoisonError::into_inner);
        *guard >= n
    }

    /// Waits until a call to node `node`'s agent is running; false if none
    /// was seen within `within`.
    pub fn wait_in_flight(&self, node: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.in_flight(node) > 0 {
                return true;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        false
    }
}

/// One agent per node on one store.
pub struct Fleet {
    /// The binaries.
    pub bins: Binaries,
    /// `--store` of the agents and of the CLI.
    pub store: String,
    /// The agents; agent `i` serves node `i`.
    pub agents: Vec<Agent>,
    dir: tempfile::TempDir,
}

impl Fleet {
    /// Applies [`manifest`] to `store` and starts `nodes` agents on it, all
    /// at once, and waits until each serves.
    pub fn start(store: &str, nodes: usize) -> Fleet {
        let bins = binaries();
        let dir = temp_dir("atoll-e2e-fleet-");
        let mut fleet = Fleet {
            agents: Vec::new(),
            store: store.to_string(),
            bins,
            dir,
        };
        let file = fleet.dir.path().join("manifest.yaml");
        fs::write(&file, manifest()).expect("writing the manifest");
        let file = file.display().to_string();
        fleet.cli_ok(&["apply", "-f", &file]);

        fleet.agents = (0..nodes)
            .map(|n| {
                let labels = format!("zone={}", zones()[zone_of(n)].name);
                Agent::new(&fleet.bins, fleet.dir.path(), store, &node_name(n), &labels)
            })
            .collect();
        fleet.agents.iter().for_each(Agent::spawn);
        fleet.agents.iter().for_each(Agent::wait_serving);
        fleet
    }

    /// Runs `atoll <args> --store <store>`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(&self.bins.atoll)
            .args(args)
            .args(["--store", &self.store])
            .env("ATOLL_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .expect("running atoll")
    }

    /// Runs `atoll <args> --store <store>`; its stdout, panicking when it
    /// fails.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "atoll {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The network config of node `node`: the socket of its agent.
    fn config(&self, node: usize, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": NETWORK,
            "type": "bridge",
            "ipam": {"type": "atoll-ipam", "socket": self.agents[node].socket},
        })
    }

    /// Executes the plugin as a runtime does.
    fn exec(&self, command: &str, job: &Job, args: &str, config: &Value) -> Outcome {
        let netns = format!("/run/netns/{}", job.container);
        let cni_path = self.bins.ipam.parent().unwrap_or(Path::new("/"));
        let call = Cni {
            args,
            ..Cni::new(command, &job.container, &netns, cni_path)
        };
        let started = Instant::now();
        let mut plugin = call.exec(&self.bins.ipam, config);
        let took = started.elapsed();
        plugin.what = format!("{command} {} on {}", job.container, node_name(job.node));
        Outcome {
            job: job.clone(),
            took,
            plugin,
        }
    }

    /// ADD, DEL or CHECK of one container on its node.
    pub fn call(&self, command: &str, job: &Job) -> Outcome {
        let args = if job.via_app {
            format!("IgnoreUnknown=1;ATOLL_APP={APP}")
        } else {
            let pools: Vec<String> = zones().into_iter().map(|z| z.pool).collect();
            format!("IgnoreUnknown=1;ATOLL_POOLS={}", pools.join(","))
        };
        self.exec(command, job, &args, &self.config(job.node, "1.0.0"))
    }

    /// GC (CNI 1.1.0) on node `node`: every attachment of the node not in
    /// `valid` is released.
    pub fn gc(&self, node: usize, valid: &[&str]) -> Outcome {
        let mut config = self.config(node, "1.1.0");
        config["cni.dev/valid-attachments"] = valid
            .iter()
            .map(|id| json!({"containerID": id, "ifname": "eth0"}))
            .collect();
        let job = Job {
            container: String::new(),
            node,
            via_app: false,
        };
        self.exec("GC", &job, "IgnoreUnknown=1", &config)
    }

    /// Runs `command` for every job, [`PARALLEL`] plugin processes at a
    /// time, and `fault` beside them on its own thread with the storm's
    /// [`Progress`]. Returns the outcomes in the order of `jobs`.
    pub fn storm<F>(&self, command: &str, jobs: &[Job], fault: F) -> Vec<Outcome>
    where
        F: FnOnce(&Progress) + Send,
    {
        let progress = Progress::new(self.agents.len(), jobs.len());
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<Outcome>>> = Mutex::new(vec![None; jobs.len()]);
        std::thread::scope(|s| {
            s.spawn(|| fault(&progress));
            for _ in 0..PARALLEL.min(jobs.len()) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    progress.begin(job.node);
                    let out = self.call(command, job);
                    progress.end(job.node);
                    results.lock().unwrap_or_else(PoisonError::into_inner)[i] = Some(out);
                });
            }
        });
        results
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
            .into_iter()
            .map(|o| o.expect("every job ran"))
            .collect()
    }

    /// Every claim in the store, as `atoll get allocations -o json` lists
    /// them.
    pub fn allocations(&self) -> Vec<Claim> {
        let out = self.cli_ok(&["get", "allocations", "-o", "json"]);
        serde_json::from_str(&out).unwrap_or_else(|e| {
            panic!("`atoll get allocations -o json` printed no claims ({e}): {out}")
        })
    }

    /// `atoll check` must find nothing wrong.
    pub fn audit(&self) {
        self.cli_ok(&["check"]);
    }
}

/// What the runtime believes: the containers whose ADD succeeded and that
/// were not deleted since, each with its node and address.
#[derive(Debug, Default)]
pub struct Ledger {
    live: BTreeMap<String, (usize, Ipv4Addr)>,
}

impl Ledger {
    /// Containers held live.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// The address given to a live container.
    pub fn address(&self, container: &str) -> Option<Ipv4Addr> {
        self.live.get(container).map(|(_, ip)| *ip)
    }

    /// The live containers of node `node`.
    pub fn on_node(&self, node: usize) -> Vec<String> {
        self.live
            .iter()
            .filter(|(_, (n, _))| *n == node)
            .map(|(c, _)| c.clone())
            .collect()
    }

    /// Records a successful ADD: its address must lie in the subnet of its
    /// node's zone, and a container added before must get the same address
    /// again (ADD is idempotent).
    pub fn added(&mut self, out: &Outcome) {
        let (ip, len) = out.first_ip();
        let zone = &zones()[zone_of(out.job.node)];
        assert!(
            zone.contains(ip) && len == zone.len,
            "{} on {} (zone {}) got {ip}/{len}, outside {}/{}",
            out.job.container,
            node_name(out.job.node),
            zone.name,
            zone.net,
            zone.len
        );
        let before = self
            .live
            .insert(out.job.container.clone(), (out.job.node, ip));
        if let Some((_, earlier)) = before {
            assert_eq!(
                earlier, ip,
                "{} was given {earlier}, and {ip} by a repeated ADD",
                out.job.container
            );
        }
    }

    /// Records the ADDs of a storm: the successes, and every failure must
    /// be "try again later". Returns the jobs that failed.
    pub fn settle(&mut self, outcomes: &[Outcome]) -> Vec<Job> {
        let mut failed = Vec::new();
        for out in outcomes {
            if out.success {
                self.added(out);
            } else {
                out.assert_try_again();
                failed.push(out.job.clone());
            }
        }
        failed
    }

    /// Records that a container was deleted (or collected).
    pub fn deleted(&mut self, container: &str) {
        self.live.remove(container);
    }

    /// Does what a runtime does after a fault: calls ADD again for the
    /// containers whose ADD failed, up to `rounds` times, until each one
    /// succeeds. Every failure on the way must be "try again later".
    pub fn retry(&mut self, fleet: &Fleet, mut failed: Vec<Job>, rounds: usize) {
        for _ in 0..rounds {
            if failed.is_empty() {
                return;
            }
            let outcomes = fleet.storm("ADD", &failed, |_| {});
            failed = self.settle(&outcomes);
        }
        assert!(
            failed.is_empty(),
            "{} ADDs still fail after {rounds} retries: {:?}",
            failed.len(),
            failed.iter().take(10).collect::<Vec<_>>()
        );
    }

    /// Holds the store against the ledger: every address held once; each
    /// container holds one address, the one its ADD returned, on its node,
    /// in its zone's pool and subnet; no claim without a live ADD and no
    /// live ADD without a claim; and `atoll check` finds nothing.
    pub fn verify(&self, fleet: &Fleet) {
        let claims = fleet.allocations();
        let zones = zones();
        let mut by_ip: BTreeMap<IpAddr, &Claim> = BTreeMap::new();
        let mut by_container: BTreeMap<&str, &Claim> = BTreeMap::new();
        for c in &claims {
            if let Some(other) = by_ip.insert(c.ip, c) {
                panic!(
                    "{} is held twice: by {} and by {}",
                    c.ip, other.attachment, c.attachment
                );
            }
            if let Some(other) = by_container.insert(&c.attachment.container_id, c) {
                panic!(
                    "{} holds two addresses: {} (claimed at {} s) and {} (at {} s); the runtime \
                     was given {:?}",
                    c.attachment,
                    other.ip,
                    other.created,
                    c.ip,
                    c.created,
                    self.address(&c.attachment.container_id)
                );
            }
            assert_eq!(
                (c.attachment.ifname.as_str(), c.network.as_str()),
                ("eth0", NETWORK),
                "{c:?}"
            );
        }

        let held: BTreeSet<&str> = by_container.keys().copied().collect();
        let live: BTreeSet<&str> = self.live.keys().map(String::as_str).collect();
        let stray: Vec<&&str> = held.difference(&live).take(10).collect();
        let lost: Vec<&&str> = live.difference(&held).take(10).collect();
        assert!(
            stray.is_empty() && lost.is_empty(),
            "the store holds {} claims for {} live ADDs; held without a live ADD: {stray:?}; \
             live without a claim: {lost:?}",
            claims.len(),
            self.live.len()
        );

        for (container, (node, ip)) in &self.live {
            let c = by_container[container.as_str()];
            let zone = &zones[zone_of(*node)];
            assert_eq!(
                c.ip,
                IpAddr::V4(*ip),
                "{container}: store and ADD result differ"
            );
            assert_eq!(c.node, node_name(*node), "{container}: node");
            assert_eq!(
                (c.subnet.as_str(), c.pool.as_str()),
                (zone.subnet.as_str(), zone.pool.as_str()),
                "{container} on {}",
                c.node
            );
            assert!(
                zone.contains(*ip),
                "{container}: {ip} outside {}",
                zone.subnet
            );
        }
        assert_eq!(claims.len(), self.live.len(), "claims against live ADDs");
        fleet.audit();
    }
}
