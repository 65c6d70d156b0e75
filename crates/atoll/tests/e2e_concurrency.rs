//! Storms of parallel ADDs through the real `atoll-ipam` binary, against
//! three `atoll agent` processes (three nodes in zones z1, z2, z3) that share
//! one SQLite file, and an agent killed with SIGKILL in the middle of one.
//!
//! Half of the pods are bound to their zone's pool, half to a pool that
//! serves every node, so that the three agents, each with its own cache,
//! race for the same addresses and only the store's atomic claim decides.
//!
//! What must hold whatever the interleaving: no address is handed out twice,
//! each address lies in the subnet of the pool that served it (the node's
//! zone subnet, or the shared one), and once the
//! runtime's view is re-asserted (retries, then GC with the attachments it
//! knows) the store holds exactly the live attachments, nothing leaked.
//!
//! No namespace is made: the plugin only forwards `CNI_NETNS`, so any path
//! does. The addresses are never configured on an interface. Needs
//! `cargo build --bins` (for atoll-ipam); runs as any user.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use common::cni::Outcome;
use common::{Agent, Binaries, Cni, StateDir};
use serde_json::{json, Value};

/// CNI error code: the agent cannot be reached, retry.
const TRY_AGAIN_LATER: u64 = 11;

/// ADDs per storm.
const STORM: usize = 300;

/// Plugin processes running at once.
const PARALLEL: usize = 32;

/// How long the storm with the kill may take before the test gives up on it.
const STORM_PATIENCE: Duration = Duration::from_secs(600);

/// The zones, one node (agent) each.
const ZONES: [&str; 3] = ["z1", "z2", "z3"];

/// Three agents on one store file, a subnet and pool per zone, and a
/// subnet whose pool serves every node.
struct Cluster {
    bins: Binaries,
    /// Per node: the subnet.
    subnets: Vec<(Ipv4Addr, u8)>,
    /// The subnet of the pool every node shares.
    shared_subnet: (Ipv4Addr, u8),
    /// `CNI_ARGS` of a pod bound to the shared pool.
    shared_args: String,
    /// Per node: the network config naming its agent's socket.
    configs: Vec<Value>,
    agents: Vec<Agent>,
    state: StateDir,
}

/// One plugin call of a storm.
#[derive(Debug, Clone)]
struct Job {
    container_id: String,
    node: usize,
    /// Bound to the shared pool (`ATOLL_POOLS` in `CNI_ARGS`), so that the
    /// three agents race for the same addresses; else to the zone's pool
    /// (the `pools` of the network config).
    shared: bool,
}

impl Cluster {
    /// Zone subnets `10.<octet>.{0,2,4}.0/23` and the shared
    /// `10.<octet>.8.0/23`, pools of about 500 addresses each.
    fn start(tag: &str, octet: u8) -> Cluster {
        let bins = common::binaries();
        let state = StateDir::new(tag);
        let mut zones = Vec::new();
        let mut subnets = Vec::new();
        for (n, zone) in ZONES.iter().enumerate() {
            let third = 2 * n as u8;
            let net = Ipv4Addr::new(10, octet, third, 0);
            zones.push((
                *zone,
                format!("{net}/23"),
                format!("10.{octet}.{third}.1"),
                format!("10.{octet}.{third}.2-10.{octet}.{}.245", third + 1),
            ));
            subnets.push((net, 23));
        }
        let zone_refs: Vec<(&str, &str, &str, &str)> = zones
            .iter()
            .map(|(z, c, g, r)| (*z, c.as_str(), g.as_str(), r.as_str()))
            .collect();
        let prefix = format!("storm{tag}");
        let mut manifest = common::zone_manifest(&prefix, &zone_refs);
        manifest.push_str(&format!(
            "apiVersion: ipam.atoll.dev/v1alpha1\n\
             kind: Subnet\n\
             metadata: {{name: {prefix}-shared}}\n\
             spec: {{cidr: 10.{octet}.8.0/23, gateway: 10.{octet}.8.1}}\n\
             ---\n\
             apiVersion: ipam.atoll.dev/v1alpha1\n\
             kind: IPPool\n\
             metadata: {{name: {prefix}-shared}}\n\
             spec: {{subnet: {prefix}-shared, ips: [10.{octet}.8.2-10.{octet}.9.245]}}\n"
        ));
        common::apply(&bins, &state.store(), state.dir.path(), &manifest);

        let agents: Vec<Agent> = ZONES
            .iter()
            .map(|z| Agent::start(&bins, &state, &format!("node-{z}"), &format!("zone={z}")))
            .collect();
        let pools: Vec<String> = ZONES.iter().map(|z| format!("{prefix}-{z}")).collect();
        let configs = agents
            .iter()
            .map(|a| {
                json!({
                    "cniVersion": "1.0.0",
                    "name": "atoll-storm",
                    "type": "bridge",
                    "ipam": {"type": "atoll-ipam", "socket": a.socket, "pools": pools},
                })
            })
            .collect();
        Cluster {
            bins,
            subnets,
            shared_subnet: (Ipv4Addr::new(10, octet, 8, 0), 23),
            shared_args: format!("IgnoreUnknown=1;ATOLL_POOLS={prefix}-shared"),
            configs,
            agents,
            state,
        }
    }

    fn plugin_dir(&self) -> PathBuf {
        self.bins.ipam.parent().expect("a directory").to_path_buf()
    }

    /// One verb of atoll-ipam for a container.
    fn call(&self, command: &str, job: &Job) -> Outcome {
        let netns = format!("/run/netns/{}", job.container_id);
        let dir = self.plugin_dir();
        let mut cni = Cni::new(command, &job.container_id, &netns, &dir);
        if job.shared {
            cni.args = &self.shared_args;
        }
        cni.exec(&self.bins.ipam, &self.configs[job.node])
    }

    /// GC (CNI 1.1.0) on one node, keeping `valid`.
    fn gc(&self, node: usize, valid: &[&str]) {
        let mut config = self.configs[node].clone();
        config["cniVersion"] = json!("1.1.0");
        config["cni.dev/valid-attachments"] = valid
            .iter()
            .map(|id| json!({"containerID": id, "ifname": "eth0"}))
            .collect();
        let dir = self.plugin_dir();
        Cni::new("GC", "", "", &dir)
            .exec(&self.bins.ipam, &config)
            .ok();
    }

    /// Runs `command` for every job, `PARALLEL` at a time; `progress` is
    /// called with the number of calls finished so far after each one.
    fn storm(
        &self,
        command: &str,
        jobs: &[Job],
        progress: &(dyn Fn(usize) + Sync),
    ) -> Vec<Outcome> {
        let next = AtomicUsize::new(0);
        let done = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<Outcome>>> = Mutex::new(vec![None; jobs.len()]);
        std::thread::scope(|s| {
            for _ in 0..PARALLEL.min(jobs.len()) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    let out = self.call(command, job);
                    results.lock().expect("no worker panics holding it")[i] = Some(out);
                    progress(done.fetch_add(1, Ordering::Relaxed) + 1);
                });
            }
        });
        results
            .into_inner()
            .expect("workers finished")
            .into_iter()
            .map(|o| o.expect("every job ran"))
            .collect()
    }

    /// Claims in the store: container ID to (node, address).
    fn held(&self) -> BTreeMap<String, (String, Ipv4Addr)> {
        let mut out = BTreeMap::new();
        for c in common::claims(&self.state.store()) {
            let ip = match c.ip {
                std::net::IpAddr::V4(ip) => ip,
                other => panic!("IPv6 address {other} from IPv4 pools"),
            };
            let before = out.insert(c.attachment.container_id.clone(), (c.node.clone(), ip));
            assert!(before.is_none(), "{} holds two addresses", c.attachment);
        }
        out
    }

    /// The address of a successful ADD, checked against the subnet of the
    /// job's pool: its node's, or the shared one.
    fn address_of(&self, job: &Job, out: &Outcome) -> Ipv4Addr {
        let (ip, len) = out.first_ip();
        let (net, net_len) = if job.shared {
            self.shared_subnet
        } else {
            self.subnets[job.node]
        };
        assert!(
            common::contains(net, net_len, ip) && len == net_len,
            "{} on node {} got {ip}/{len}, outside {net}/{net_len}",
            job.container_id,
            self.agents[job.node].node
        );
        ip
    }

    /// `atoll check` on the store must find nothing.
    fn audit(&self) {
        let out = Command::new(&self.bins.atoll)
            .args(["check", "--store", &self.state.store()])
            .output()
            .expect("running atoll check");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "atoll check found problems: {}{stderr}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

fn jobs(prefix: &str, count: usize) -> Vec<Job> {
    (0..count)
        .map(|i| Job {
            container_id: format!("{prefix}-{i:04}"),
            node: i % ZONES.len(),
            shared: i % 2 == 1,
        })
        .collect()
}

/// Asserts that no address appears twice among `(container, address)`.
fn assert_distinct<'a>(held: impl IntoIterator<Item = (&'a str, Ipv4Addr)>) {
    let mut by_ip: BTreeMap<Ipv4Addr, &str> = BTreeMap::new();
    for (container, ip) in held {
        if let Some(other) = by_ip.insert(ip, container) {
            panic!("{ip} handed out twice: to {other} and to {container}");
        }
    }
}

#[test]
fn parallel_adds_never_share_an_address() {
    let cluster = Cluster::start("par", 226);
    let storm = jobs("par", STORM);

    let outcomes = cluster.storm("ADD", &storm, &|_| {});
    let got: Vec<(&str, Ipv4Addr)> = storm
        .iter()
        .zip(&outcomes)
        .map(|(job, out)| (job.container_id.as_str(), cluster.address_of(job, out)))
        .collect();
    assert_distinct(got.iter().copied());

    // The store holds exactly what the plugin answered, for the right node.
    let held = cluster.held();
    assert_eq!(held.len(), STORM, "claims in the store");
    for (job, (id, ip)) in storm.iter().zip(&got) {
        let (node, stored) = &held[*id];
        assert_eq!(
            (node.as_str(), stored),
            (cluster.agents[job.node].node.as_str(), ip)
        );
    }

    // ADD again, in parallel: the same addresses (ADD is idempotent).
    let again: Vec<Job> = storm.iter().step_by(7).cloned().collect();
    let outcomes = cluster.storm("ADD", &again, &|_| {});
    for (job, out) in again.iter().zip(&outcomes) {
        assert_eq!(
            cluster.address_of(job, out),
            held[&job.container_id].1,
            "{job:?}"
        );
    }

    // DEL a fifth in parallel: exactly those are freed.
    let gone: Vec<Job> = storm.iter().step_by(5).cloned().collect();
    for out in cluster.storm("DEL", &gone, &|_| {}) {
        out.ok();
    }
    let after = cluster.held();
    let expected: BTreeSet<&str> = storm
        .iter()
        .map(|j| j.container_id.as_str())
        .filter(|id| !gone.iter().any(|g| g.container_id == *id))
        .collect();
    assert_eq!(
        after.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        expected
    );
    cluster.audit();
}

#[test]
fn an_agent_killed_mid_storm_leaks_nothing() {
    let mut cluster = Cluster::start("kill", 227);

    // Pods that live through everything: GC must keep them.
    let early = jobs("early", 30);
    for (job, out) in early.iter().zip(cluster.storm("ADD", &early, &|_| {})) {
        cluster.address_of(job, &out);
    }

    // The storm: the agent of z2 is killed once a third of the calls have
    // finished, and started again on the same socket at two thirds.
    const VICTIM: usize = 1;
    let storm = jobs("crash", STORM);
    let finished = (Mutex::new(0usize), Condvar::new());
    let wait_for = |n: usize| {
        let (count, cv) = &finished;
        let guard = count.lock().expect("no panic holding it");
        let (guard, timeout) = cv
            .wait_timeout_while(guard, STORM_PATIENCE, |c| *c < n)
            .expect("no panic holding it");
        assert!(
            !timeout.timed_out(),
            "only {} of {STORM} calls finished",
            *guard
        );
    };
    let progress = |n: usize| {
        let (count, cv) = &finished;
        let mut count = count.lock().expect("no panic holding it");
        *count = (*count).max(n);
        cv.notify_all();
    };

    let outcomes = {
        let mut agents = std::mem::take(&mut cluster.agents);
        let victim = agents.remove(VICTIM);
        // The cluster's calls need only the configs; the agents are held
        // here so that one can be killed while the others keep serving.
        let outcomes = std::thread::scope(|s| {
            s.spawn(|| {
                wait_for(STORM / 3);
                victim.kill9();
                wait_for(2 * STORM / 3);
                victim.restart();
            });
            cluster.storm("ADD", &storm, &progress)
        });
        agents.insert(VICTIM, victim);
        cluster.agents = agents;
        outcomes
    };

    // Only the killed agent's calls failed, each with "try again later".
    let failed: Vec<&Job> = storm
        .iter()
        .zip(&outcomes)
        .filter(|(_, out)| !out.success)
        .map(|(job, _)| job)
        .collect();
    for (job, out) in storm.iter().zip(&outcomes).filter(|(_, out)| !out.success) {
        assert_eq!(
            job.node, VICTIM,
            "{} failed on a live agent: {}",
            out.what, out.stdout
        );
        assert_eq!(out.error_code(), TRY_AGAIN_LATER, "{}", out.stdout);
    }
    assert!(
        !failed.is_empty(),
        "no ADD failed: the agent was not killed in the storm"
    );
    println!(
        "{} of {STORM} ADDs failed while the agent of z2 was down",
        failed.len()
    );

    // The runtime retries the failed ADDs; the agent answers again.
    let retry: Vec<Job> = failed.into_iter().cloned().collect();
    let retried = cluster.storm("ADD", &retry, &|_| {});
    let mut results: BTreeMap<&str, Ipv4Addr> = BTreeMap::new();
    for (job, out) in storm.iter().zip(&outcomes).filter(|(_, o)| o.success) {
        results.insert(&job.container_id, cluster.address_of(job, out));
    }
    for (job, out) in retry.iter().zip(&retried) {
        results.insert(&job.container_id, cluster.address_of(job, out));
    }
    assert_eq!(results.len(), STORM);
    assert_distinct(results.iter().map(|(id, ip)| (*id, *ip)));

    // Every tenth pod is deleted properly; every tenth other one is gone
    // without its DEL reaching atoll (the runtime lost it): only GC frees it.
    let deleted: Vec<Job> = storm.iter().skip(4).step_by(10).cloned().collect();
    for out in cluster.storm("DEL", &deleted, &|_| {}) {
        out.ok();
    }
    let abandoned: BTreeSet<&str> = storm
        .iter()
        .skip(9)
        .step_by(10)
        .map(|j| j.container_id.as_str())
        .collect();
    let live: Vec<&Job> = early
        .iter()
        .chain(&storm)
        .filter(|j| !deleted.iter().any(|d| d.container_id == j.container_id))
        .filter(|j| !abandoned.contains(j.container_id.as_str()))
        .collect();

    // Before GC the store holds the live pods and the abandoned ones.
    let held = cluster.held();
    assert_eq!(held.len(), live.len() + abandoned.len(), "claims before GC");
    for (id, ip) in &results {
        if !deleted.iter().any(|d| d.container_id == *id) {
            assert_eq!(
                held.get(*id).map(|h| h.1),
                Some(*ip),
                "{id}: store and ADD result differ"
            );
        }
    }

    // GC per node with the attachments the runtime knows are live.
    for node in 0..ZONES.len() {
        let valid: Vec<&str> = live
            .iter()
            .filter(|j| j.node == node)
            .map(|j| j.container_id.as_str())
            .collect();
        cluster.gc(node, &valid);
    }
    let held = cluster.held();
    let want: BTreeSet<&str> = live.iter().map(|j| j.container_id.as_str()).collect();
    assert_eq!(
        held.len(),
        live.len(),
        "claims after GC: something leaked or was lost"
    );
    assert_eq!(
        held.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        want
    );
    for job in &live {
        let (node, _) = &held[&job.container_id];
        assert_eq!(node, &cluster.agents[job.node].node, "{}", job.container_id);
    }
    cluster.audit();
}
