//! End to end on one host, with real network namespaces: three `atoll agent`
//! processes stand for three nodes in zones z1, z2 and z3, on one SQLite
//! file; Debian's `bridge` plugin attaches pods (namespaces made with
//! `ip netns add`) and execs the real `atoll-ipam` for their addresses, as a
//! container runtime would.
//!
//! The addresses live in a `10.x.0.0/16` that no address or route of the host
//! touches (picked at start), and only inside the test's namespaces: the
//! bridge gets no address (`isGateway: false`). Everything the test creates
//! (namespaces, the bridge, agents, the state directory) is removed by
//! `Drop`, so also when an assertion fails.
//!
//! Needs root and /usr/lib/cni/bridge; without them each test prints a
//! "skipped" line and passes. Needs `cargo build --bins` (for atoll-ipam).

mod common;

use std::net::Ipv4Addr;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::cni::Outcome;
use common::{Agent, Binaries, Cni, StateDir};
use serde_json::{json, Value};

/// CNI error code: the attachment does not hold the addresses of prevResult.
const ADDRESS_MISMATCH: u64 = 104;
/// CNI error code: the agent cannot be reached, retry.
const TRY_AGAIN_LATER: u64 = 11;
/// CNI error code of STATUS: ADDs cannot be served now.
const PLUGIN_NOT_AVAILABLE: u64 = 50;

/// The zones, one node (agent) each.
const ZONES: [&str; 3] = ["z1", "z2", "z3"];

/// Second octets tried for the test's `10.x.0.0/16`, first free one wins.
const RANGE_CANDIDATES: [u8; 6] = [231, 233, 237, 239, 241, 247];

/// Numbers the namespaces of this process, across the tests running in it.
static NEXT_NETNS: AtomicUsize = AtomicUsize::new(0);

/// A pod: a namespace attached to the bridge through one node's agent.
struct Pod {
    container_id: String,
    netns: String,
    node: usize,
    /// The ADD result, the `prevResult` of CHECK.
    result: Value,
    /// False once DEL went through the bridge.
    attached: bool,
}

impl Pod {
    fn netns_path(&self) -> String {
        format!("/run/netns/{}", self.netns)
    }

    /// The address of the ADD result.
    fn ip(&self) -> (Ipv4Addr, u8) {
        let cidr = self.result["ips"][0]["address"]
            .as_str()
            .unwrap_or_else(|| {
                panic!(
                    "{}: no ips[0].address in {}",
                    self.container_id, self.result
                )
            });
        common::parse_cidr(cidr)
    }
}

/// Three agents on one store, a bridge, the namespaces and pods of one test.
struct World {
    bins: Binaries,
    bridge: String,
    /// CNI_PATH: `bridge` and `atoll-ipam`, symlinked.
    cni_path: PathBuf,
    /// Per node: subnet, prefix length, gateway.
    subnets: Vec<(Ipv4Addr, u8, Ipv4Addr)>,
    pools: Vec<String>,
    namespaces: Vec<String>,
    pods: Vec<Pod>,
    agents: Vec<Agent>,
    state: StateDir,
}

impl World {
    /// Applies a subnet and pool per zone (`10.<octet>.<third>.0/24` for
    /// each of `thirds`) and starts one agent per zone. `None` when the host
    /// cannot run the test.
    fn start(tag: &str, thirds: [u8; 3]) -> Option<World> {
        if let Some(why) = common::netns_unavailable() {
            println!("{why}");
            return None;
        }
        let bins = common::binaries();
        sweep_stale_namespaces();
        let octet = common::free_ten_slash_16(&RANGE_CANDIDATES);

        let bridge = format!("atl{}{tag}", std::process::id() % 10000);
        let probe = std::process::Command::new("ip")
            .args(["link", "show", &bridge])
            .output()
            .expect("running ip");
        assert!(
            !probe.status.success(),
            "a link named {bridge} exists already on this host"
        );

        let state = StateDir::new(tag);
        let cni_path = state.path("cni-bin");
        std::fs::create_dir(&cni_path).expect("creating CNI_PATH");
        symlink(
            PathBuf::from(common::HOST_CNI_DIR).join("bridge"),
            cni_path.join("bridge"),
        )
        .expect("linking bridge");
        symlink(&bins.ipam, cni_path.join("atoll-ipam")).expect("linking atoll-ipam");

        let mut zones = Vec::new();
        let mut subnets = Vec::new();
        for (zone, third) in ZONES.iter().zip(thirds) {
            let net = Ipv4Addr::new(10, octet, third, 0);
            let gateway = Ipv4Addr::new(10, octet, third, 1);
            let range = format!("10.{octet}.{third}.10-10.{octet}.{third}.250");
            zones.push((*zone, format!("{net}/24"), gateway.to_string(), range));
            subnets.push((net, 24, gateway));
        }
        let zone_refs: Vec<(&str, &str, &str, &str)> = zones
            .iter()
            .map(|(z, c, g, r)| (*z, c.as_str(), g.as_str(), r.as_str()))
            .collect();
        let prefix = format!("e2e{tag}");
        common::apply(
            &bins,
            &state.store(),
            state.dir.path(),
            &common::zone_manifest(&prefix, &zone_refs),
        );

        let agents = ZONES
            .iter()
            .map(|zone| {
                Agent::start(
                    &bins,
                    &state,
                    &format!("node-{zone}"),
                    &format!("zone={zone}"),
                )
            })
            .collect();
        let world = World {
            bins,
            bridge,
            cni_path,
            subnets,
            pools: ZONES.iter().map(|z| format!("{prefix}-{z}")).collect(),
            namespaces: Vec::new(),
            pods: Vec::new(),
            agents,
            state,
        };
        world.create_bridge(tag);
        Some(world)
    }

    /// Creates the bridge with a fixed MAC address. The bridge plugin would
    /// create it on the first ADD, but then the kernel gives it the lowest
    /// MAC of its ports, which changes as veths join, and the plugin's CHECK
    /// compares the bridge's MAC with the one in `prevResult`.
    fn create_bridge(&self, tag: &str) {
        let pid = std::process::id();
        let mac = format!(
            "02:a7:0e:{:02x}:{:02x}:{:02x}",
            tag.bytes().next().unwrap_or(0),
            (pid >> 8) & 0xff,
            pid & 0xff
        );
        common::run_ok(
            "ip",
            &["link", "add", "name", &self.bridge, "type", "bridge"],
        );
        common::run_ok("ip", &["link", "set", "dev", &self.bridge, "address", &mac]);
        common::run_ok("ip", &["link", "set", "dev", &self.bridge, "up"]);
    }

    /// The network config for a pod on `node`, at `version`.
    fn config(&self, node: usize, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": "atoll-e2e",
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": false,
            "ipMasq": false,
            "ipam": {
                "type": "atoll-ipam",
                "socket": self.agents[node].socket,
                "pools": self.pools,
            },
        })
    }

    /// The config of CHECK: the ADD result as `prevResult`.
    fn check_config(&self, pod: usize) -> Value {
        let p = &self.pods[pod];
        let mut config = self.config(p.node, "1.0.0");
        config["prevResult"] = p.result.clone();
        config
    }

    /// Runs a verb of the bridge plugin (which execs atoll-ipam) for a pod.
    fn bridge_call(&self, command: &str, pod: usize, config: &Value) -> Outcome {
        let p = &self.pods[pod];
        let netns = p.netns_path();
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=e2e;K8S_POD_NAME={}",
            p.container_id
        );
        let mut cni = Cni::new(command, &p.container_id, &netns, &self.cni_path);
        cni.args = &args;
        cni.exec(&self.cni_path.join("bridge"), config)
    }

    /// Runs a verb of atoll-ipam alone for a pod, as a main plugin would.
    fn ipam_call(&self, command: &str, pod: usize, config: &Value) -> Outcome {
        let p = &self.pods[pod];
        let netns = p.netns_path();
        Cni::new(command, &p.container_id, &netns, &self.cni_path).exec(&self.bins.ipam, config)
    }

    /// Runs GC or STATUS (CNI 1.1.0) of atoll-ipam against one node's agent.
    fn ipam_node_call(&self, command: &str, node: usize, config: &Value) -> Outcome {
        let mut out = Cni::new(command, "", "", &self.cni_path).exec(&self.bins.ipam, config);
        out.what = format!("{command} on node {}", self.agents[node].node);
        out
    }

    /// Creates a namespace and attaches it through the agent of `node`.
    /// Returns the pod's index.
    fn add_pod(&mut self, node: usize) -> usize {
        let n = NEXT_NETNS.fetch_add(1, Ordering::Relaxed);
        let netns = format!("atoll-e2e-{}-{n}", std::process::id());
        common::run_ok("ip", &["netns", "add", &netns]);
        self.namespaces.push(netns.clone());
        self.pods.push(Pod {
            container_id: format!("ctr-{netns}"),
            netns,
            node,
            result: Value::Null,
            attached: false,
        });
        let pod = self.pods.len() - 1;

        let out = self.bridge_call("ADD", pod, &self.config(node, "1.0.0"));
        let result = out.ok();
        let p = &mut self.pods[pod];
        p.result = result;
        p.attached = true;
        pod
    }

    /// DEL through the bridge: the veth goes, atoll-ipam releases.
    fn del_pod(&mut self, pod: usize) {
        let config = self.config(self.pods[pod].node, "1.0.0");
        self.bridge_call("DEL", pod, &config).ok();
        self.pods[pod].attached = false;
    }

    /// Every claim in the store.
    fn claims(&self) -> Vec<atoll_store::Claim> {
        common::claims(&self.state.store())
    }

    fn claim_of(&self, pod: usize) -> Option<atoll_store::Claim> {
        let id = &self.pods[pod].container_id;
        let mut held: Vec<_> = self
            .claims()
            .into_iter()
            .filter(|c| &c.attachment.container_id == id)
            .collect();
        assert!(
            held.len() <= 1,
            "{id} holds {} addresses: {held:?}",
            held.len()
        );
        held.pop()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // DEL what is attached while the agents still run, then remove the
        // namespaces (their veths go with them) and the bridge; the agents
        // and the state directory go when the fields drop.
        for pod in 0..self.pods.len() {
            if self.pods[pod].attached {
                let config = self.config(self.pods[pod].node, "1.0.0");
                let out = self.bridge_call("DEL", pod, &config);
                if !out.success {
                    eprintln!("cleanup: {} failed: {}{}", out.what, out.stdout, out.stderr);
                }
            }
        }
        for ns in &self.namespaces {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .status();
        }
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Removes namespaces left by an earlier run of these tests that was killed
/// before its `Drop` ran (their process is gone).
fn sweep_stale_namespaces() {
    let list = common::run_ok("ip", &["netns", "list"]);
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix("atoll-e2e-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !PathBuf::from(format!("/proc/{pid}")).exists() {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", name])
                .status();
        }
    }
}

/// The IPv4 addresses of eth0 in a namespace, or `None` when it has no eth0.
fn eth0_addresses(netns: &str) -> Option<Vec<(Ipv4Addr, u8)>> {
    let out = std::process::Command::new("ip")
        .args(["-n", netns, "-j", "addr", "show", "eth0"])
        .output()
        .expect("running ip");
    if !out.status.success() {
        return None;
    }
    let links: Value = serde_json::from_slice(&out.stdout).expect("ip -j prints JSON");
    let addrs = links[0]["addr_info"]
        .as_array()
        .map(|infos| {
            infos
                .iter()
                .filter(|a| a["family"] == "inet")
                .map(|a| {
                    let ip = a["local"].as_str().and_then(|s| s.parse().ok());
                    (
                        ip.expect("an inet address"),
                        a["prefixlen"].as_u64().unwrap_or(0) as u8,
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Some(addrs)
}

/// The gateway of the default route in a namespace.
fn default_gateway(netns: &str) -> Option<Ipv4Addr> {
    let routes: Value =
        serde_json::from_str(&common::run_ok("ip", &["-n", netns, "-j", "-4", "route"])).ok()?;
    routes
        .as_array()?
        .iter()
        .find(|r| r["dst"] == "default")
        .and_then(|r| r["gateway"].as_str())
        .and_then(|g| g.parse().ok())
}

#[test]
fn pods_get_their_nodes_subnet_and_give_the_address_back() {
    let Some(mut w) = World::start("a", [1, 2, 3]) else {
        return;
    };

    // Two pods per node.
    let pods: Vec<usize> = (0..6).map(|k| w.add_pod(k % 3)).collect();

    // Each pod's eth0 carries an address of its node's subnet with the
    // subnet's prefix length, and the subnet's route.
    let mut seen = Vec::new();
    for &pod in &pods {
        let p = &w.pods[pod];
        let (net, len, gateway) = w.subnets[p.node];
        let (ip, plen) = p.ip();
        assert!(
            common::contains(net, len, ip) && plen == len,
            "{} on node {} got {ip}/{plen}, expected an address of {net}/{len}",
            p.container_id,
            w.agents[p.node].node
        );
        assert_ne!(ip, gateway, "{} got the gateway", p.container_id);
        assert_eq!(
            eth0_addresses(&p.netns),
            Some(vec![(ip, len)]),
            "eth0 of {} does not carry the allocated address",
            p.netns
        );
        assert_eq!(
            default_gateway(&p.netns),
            Some(gateway),
            "default route of {}",
            p.netns
        );
        assert!(!seen.contains(&ip), "{ip} handed out twice");
        seen.push(ip);

        let claim = w
            .claim_of(pod)
            .unwrap_or_else(|| panic!("no claim for {}", p.container_id));
        assert_eq!(claim.ip.to_string(), ip.to_string());
        assert_eq!(claim.node, w.agents[p.node].node);
        assert_eq!(claim.attachment.ifname, "eth0");
    }
    assert_eq!(w.claims().len(), pods.len());

    // CHECK passes for every live pod (the bridge asks atoll-ipam first).
    for &pod in &pods {
        let config = w.check_config(pod);
        w.bridge_call("CHECK", pod, &config).ok();
    }

    // DEL removes the interface and frees the address.
    let gone = pods[1];
    let (freed, _) = w.pods[gone].ip();
    w.del_pod(gone);
    assert_eq!(
        eth0_addresses(&w.pods[gone].netns),
        None,
        "eth0 still exists after DEL"
    );
    assert!(w.claim_of(gone).is_none(), "DEL left the claim of {freed}");
    assert_eq!(w.claims().len(), pods.len() - 1);

    // CHECK of the released pod fails with a mismatch, through the bridge
    // and from atoll-ipam alone; DEL again succeeds (it may repeat).
    let config = w.check_config(gone);
    assert_eq!(
        w.bridge_call("CHECK", gone, &config).error_code(),
        ADDRESS_MISMATCH
    );
    assert_eq!(
        w.ipam_call("CHECK", gone, &config).error_code(),
        ADDRESS_MISMATCH
    );
    w.del_pod(gone);

    // A new pod on that node gets another address of the same subnet: a
    // released address is not handed out again at once.
    let node = w.pods[gone].node;
    let fresh = w.add_pod(node);
    let (ip, _) = w.pods[fresh].ip();
    let (net, len, _) = w.subnets[node];
    assert!(common::contains(net, len, ip), "{ip} is not in {net}/{len}");
    assert_ne!(
        ip, freed,
        "the address released a moment ago was handed out again"
    );
    assert!(!seen.contains(&ip), "{ip} is held by another pod");

    // An address released behind a live pod's back (atoll-ipam DEL alone)
    // makes the pod's CHECK fail, though its eth0 is intact.
    let victim = pods[0];
    let config = w.config(w.pods[victim].node, "1.0.0");
    w.ipam_call("DEL", victim, &config).ok();
    assert!(eth0_addresses(&w.pods[victim].netns).is_some_and(|a| !a.is_empty()));
    let config = w.check_config(victim);
    assert_eq!(
        w.bridge_call("CHECK", victim, &config).error_code(),
        ADDRESS_MISMATCH
    );

    // DEL of every pod leaves nothing held.
    let live: Vec<usize> = (0..w.pods.len()).filter(|&p| w.pods[p].attached).collect();
    for pod in live {
        w.del_pod(pod);
        assert_eq!(eth0_addresses(&w.pods[pod].netns), None);
    }
    assert_eq!(
        w.claims(),
        vec![],
        "addresses still held after DEL of every pod"
    );
}

#[test]
fn gc_and_status_over_cni_1_1() {
    let Some(mut w) = World::start("b", [11, 12, 13]) else {
        return;
    };
    let pods: Vec<usize> = (0..6).map(|k| w.add_pod(k % 3)).collect();
    let holders = |w: &World| {
        let mut ids: Vec<String> = w
            .claims()
            .into_iter()
            .map(|c| c.attachment.container_id)
            .collect();
        ids.sort();
        ids
    };
    let ids = |w: &World, pods: &[usize]| {
        let mut ids: Vec<String> = pods
            .iter()
            .map(|&p| w.pods[p].container_id.clone())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(holders(&w), ids(&w, &pods));

    // STATUS: every agent serves ADDs.
    for node in 0..3 {
        let out = w.ipam_node_call("STATUS", node, &w.config(node, "1.1.0"));
        assert_eq!(out.ok(), Value::Null, "STATUS prints nothing on success");
    }

    // GC on node z1 listing only pods[0]: pods[3] (also on z1) is freed;
    // the pods of other nodes are not this node's business and stay.
    let mut config = w.config(0, "1.1.0");
    config["cni.dev/valid-attachments"] =
        json!([{"containerID": w.pods[pods[0]].container_id, "ifname": "eth0"}]);
    w.ipam_node_call("GC", 0, &config).ok();
    let kept = [pods[0], pods[1], pods[2], pods[4], pods[5]];
    assert_eq!(
        holders(&w),
        ids(&w, &kept),
        "GC on z1 kept the wrong claims"
    );

    // GC on node z2 with an empty list frees both of its pods.
    let mut config = w.config(1, "1.1.0");
    config["cni.dev/valid-attachments"] = json!([]);
    w.ipam_node_call("GC", 1, &config).ok();
    let kept = [pods[0], pods[2], pods[5]];
    assert_eq!(
        holders(&w),
        ids(&w, &kept),
        "GC on z2 kept the wrong claims"
    );

    // GC with the pod listed twice and a foreign attachment changes nothing.
    let mut config = w.config(0, "1.1.0");
    config["cni.dev/valid-attachments"] = json!([
        {"containerID": w.pods[pods[0]].container_id, "ifname": "eth0"},
        {"containerID": w.pods[pods[0]].container_id, "ifname": "eth0"},
        {"containerID": "not-a-pod", "ifname": "eth0"},
    ]);
    w.ipam_node_call("GC", 0, &config).ok();
    assert_eq!(holders(&w), ids(&w, &kept));

    // An agent that is down: STATUS says the plugin is not available, ADD
    // asks to retry. After a restart STATUS passes and its claims are there.
    w.agents[2].kill9();
    let out = w.ipam_node_call("STATUS", 2, &w.config(2, "1.1.0"));
    assert_eq!(out.error_code(), PLUGIN_NOT_AVAILABLE, "{}", out.stdout);
    let config = w.config(2, "1.0.0");
    assert_eq!(
        w.ipam_call("ADD", pods[2], &config).error_code(),
        TRY_AGAIN_LATER
    );
    w.agents[2].restart();
    assert_eq!(
        w.ipam_node_call("STATUS", 2, &w.config(2, "1.1.0")).ok(),
        Value::Null
    );
    assert_eq!(holders(&w), ids(&w, &kept));

    // The pods freed by GC still have their interfaces; DEL through the
    // bridge works for them (nothing to release) and for the others.
    for pod in pods {
        w.del_pod(pod);
    }
    assert_eq!(w.claims(), vec![]);
}
