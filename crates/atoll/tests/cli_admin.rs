//! The inspection and admin commands, through the real `atoll` binary on a
//! real embedded (SQLite) store: `get`, `describe`, `check`, `release`, `gc`
//! and `delete`. Allocations are simulated by claiming through the store API,
//! as an agent would.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Output};

use atoll_store::{Attachment, Change, Claim, ClaimOutcome, Kind, SharedStore};
use serde_json::Value;

const MANIFEST: &str = "\
apiVersion: ipam.atoll.dev/v1alpha1
kind: Subnet
metadata: {name: rack-a}
spec: {cidr: 10.77.0.0/24, gateway: 10.77.0.1, excludeIPs: [10.77.0.2-10.77.0.9]}
---
apiVersion: ipam.atoll.dev/v1alpha1
kind: Subnet
metadata: {name: rack-b}
spec: {cidr: 10.78.0.0/24, gateway: 10.78.0.1}
---
apiVersion: ipam.atoll.dev/v1alpha1
kind: IPPool
metadata: {name: web-a}
spec:
  subnet: rack-a
  ips: [10.77.0.10-10.77.0.19]
  default: true
  autoExtend: {enabled: true, step: 1}
  nodeAffinity:
    nodeSelectorTerms:
      - matchExpressions: [{key: zone, operator: In, values: [zone1, zone2]}]
---
apiVersion: ipam.atoll.dev/v1alpha1
kind: IPPool
metadata: {name: web-b}
spec:
  subnet: rack-b
  ips: [10.78.0.10-10.78.0.29]
  nodeAffinity: {nodeNames: [node-b]}
---
apiVersion: ipam.atoll.dev/v1alpha1
kind: IPPool
metadata: {name: spare}
spec: {subnet: rack-a, ips: [10.77.0.100-10.77.0.109], disabled: true}
---
apiVersion: v1
kind: Node
metadata: {name: node-1, labels: {zone: zone1}}
---
apiVersion: v1
kind: Node
metadata: {name: node-b, labels: {zone: zone9}}
---
apiVersion: v1
kind: Node
metadata: {name: node-x, labels: {zone: zone3}}
";

/// A temporary embedded store with the manifest applied.
struct Fixture {
    dir: tempfile::TempDir,
    address: String,
    runtime: tokio::runtime::Runtime,
    store: SharedStore,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let address = format!("embedded:{}", dir.path().join("x.db").display());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = runtime
            .block_on(atoll_store::open_embedded(&address))
            .unwrap();
        let f = Fixture {
            dir,
            address,
            runtime,
            store,
        };
        let manifest = f.write("m.yaml", MANIFEST);
        let out = f.ok(&["apply", "-f", manifest.to_str().unwrap()]);
        assert!(out.contains("ippool/web-a created"), "{out}");
        f
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_atoll"))
            .args(args)
            .args(["--store", &self.address])
            .env_remove("ATOLL_STORE")
            .output()
            .unwrap()
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "atoll {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and expects failure; returns (stdout, stderr).
    fn fails(&self, args: &[&str]) -> (String, String) {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "atoll {args:?} should fail: {out:?}"
        );
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    fn claim(&self, subnet: &str, ip: &str, pool: &str, holder: &str, node: &str, borrowed: bool) {
        let (container, ifname) = holder.split_once('/').unwrap_or((holder, "eth0"));
        let claim = Claim {
            subnet: subnet.into(),
            ip: ip.parse().unwrap(),
            pool: pool.into(),
            attachment: Attachment {
                container_id: container.into(),
                ifname: ifname.into(),
            },
            node: node.into(),
            app: if holder == "ctr-1" {
                "default/web".into()
            } else {
                String::new()
            },
            network: String::new(),
            borrowed,
            created: 0,
        };
        let won = self.runtime.block_on(self.store.claim(&claim)).unwrap();
        assert_eq!(won, ClaimOutcome::Won, "{claim:?}");
    }

    /// The usual allocations: three in web-a (one borrowed), one in web-b.
    fn claim_usual(&self) {
        self.claim("rack-a", "10.77.0.10", "web-a", "ctr-1", "node-1", false);
        self.claim("rack-a", "10.77.0.11", "web-a", "ctr-2", "node-1", false);
        self.claim("rack-a", "10.77.0.50", "web-a", "ctr-4", "node-1", true);
        self.claim("rack-b", "10.78.0.10", "web-b", "ctr-3", "node-b", false);
    }

    /// Held addresses, as `ip holder`, sorted.
    fn held(&self, node: Option<&str>) -> Vec<String> {
        let claims = self.runtime.block_on(self.store.list_claims(node)).unwrap();
        let mut v: Vec<(IpAddr, String)> = claims
            .into_iter()
            .map(|c| (c.ip, c.attachment.to_string()))
            .collect();
        v.sort();
        v.into_iter().map(|(ip, h)| format!("{ip} {h}")).collect()
    }
}

fn tokens(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

fn row<'a>(table: &'a [Vec<String>], first: &str) -> &'a [String] {
    table
        .iter()
        .find(|r| r.first().is_some_and(|c| c == first))
        .unwrap_or_else(|| panic!("no row {first}"))
}

#[test]
fn get_tables_count_every_claim() {
    let f = Fixture::new();
    f.claim_usual();

    // rack-a: 256 minus network, broadcast, gateway and 8 excluded = 245;
    // three held, one of them borrowed into web-a.
    assert_eq!(
        f.ok(&["get", "subnets"]),
        "\
NAME     CIDR           GATEWAY     TOTAL   USED   FREE   BORROWED   POOLS
rack-a   10.77.0.0/24   10.77.0.1   245     3      242    1          spare,web-a
rack-b   10.78.0.0/24   10.78.0.1   253     1      252    0          web-b
"
    );

    let pools = f.ok(&["get", "pools"]);
    let header = pools.lines().next().unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["NAME", "SUBNET", "IPS", "TOTAL", "USED", "FREE", "BORROWED", "DEFAULT", "AFFINITY"]
    );
    // Columns are aligned: every row's AFFINITY starts under the header.
    let col = header.find("AFFINITY").unwrap();
    for line in pools.lines().skip(1) {
        assert_ne!(line.as_bytes()[col], b' ', "{line:?} misaligned");
        assert_eq!(line.as_bytes()[col - 1], b' ', "{line:?} misaligned");
    }
    let t = tokens(&pools);
    assert_eq!(
        row(&t, "web-a"),
        [
            "web-a",
            "rack-a",
            "10.77.0.10-10.77.0.19",
            "11",
            "3",
            "8",
            "1",
            "true",
            "zone",
            "in",
            "(zone1,zone2)"
        ]
    );
    assert_eq!(
        row(&t, "web-b"),
        [
            "web-b",
            "rack-b",
            "10.78.0.10-10.78.0.29",
            "20",
            "1",
            "19",
            "0",
            "false",
            "nodes:",
            "node-b"
        ]
    );
    assert_eq!(
        row(&t, "spare"),
        [
            "spare",
            "rack-a",
            "10.77.0.100-10.77.0.109",
            "10",
            "0",
            "10",
            "0",
            "false",
            "<all>"
        ]
    );

    let t = tokens(&f.ok(&["get", "nodes"]));
    assert_eq!(t[0], ["NAME", "LABELS", "POOLS", "SUBNETS"]);
    assert_eq!(
        row(&t, "node-1"),
        ["node-1", "zone=zone1", "web-a", "rack-a"]
    );
    assert_eq!(
        row(&t, "node-b"),
        ["node-b", "zone=zone9", "web-b", "rack-b"]
    );
    // spare would match every node but is disabled.
    assert_eq!(
        row(&t, "node-x"),
        ["node-x", "zone=zone3", "<none>", "<none>"]
    );

    let t = tokens(&f.ok(&["get", "allocations"]));
    assert_eq!(
        t[0],
        [
            "ADDRESS",
            "SUBNET",
            "POOL",
            "NODE",
            "CONTAINER",
            "IFNAME",
            "APP",
            "BORROWED"
        ]
    );
    assert_eq!(t.len(), 5);
    assert_eq!(
        row(&t, "10.77.0.10"),
        [
            "10.77.0.10",
            "rack-a",
            "web-a",
            "node-1",
            "ctr-1",
            "eth0",
            "default/web",
            "false"
        ]
    );
    assert_eq!(
        row(&t, "10.77.0.50"),
        [
            "10.77.0.50",
            "rack-a",
            "web-a",
            "node-1",
            "ctr-4",
            "eth0",
            "<none>",
            "true"
        ]
    );
}

#[test]
fn get_json_and_yaml_fill_status() {
    let f = Fixture::new();
    f.claim_usual();

    let pools: Value = serde_json::from_str(&f.ok(&["get", "pools", "-o", "json"])).unwrap();
    let web_a = pools
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["metadata"]["name"] == "web-a")
        .unwrap();
    assert_eq!(web_a["kind"], "IPPool");
    assert_eq!(web_a["status"]["total"], 11);
    assert_eq!(web_a["status"]["allocated"], 3);
    assert_eq!(web_a["status"]["free"], 8);
    assert_eq!(web_a["status"]["borrowed"], 1);
    assert_eq!(web_a["status"]["conditions"][0]["type"], "Valid");
    assert_eq!(web_a["status"]["conditions"][0]["status"], "True");

    let subnets: Value = serde_json::from_str(&f.ok(&["get", "subnets", "-o", "json"])).unwrap();
    let names: Vec<&str> = subnets
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["rack-a", "rack-b"]);
    assert_eq!(subnets[1]["status"]["allocated"], 1);
    assert_eq!(subnets[1]["status"]["free"], 252);

    let nodes: Value = serde_json::from_str(&f.ok(&["get", "nodes", "-o", "json"])).unwrap();
    assert_eq!(nodes[0]["metadata"]["name"], "node-1");
    assert_eq!(nodes[0]["status"]["pools"], serde_json::json!(["web-a"]));
    assert_eq!(nodes[2]["status"]["pools"], serde_json::json!([]));

    let claims: Value = serde_json::from_str(&f.ok(&["get", "allocations", "-o", "json"])).unwrap();
    let claims = claims.as_array().unwrap();
    assert_eq!(claims.len(), 4);
    let borrowed = claims.iter().find(|c| c["ip"] == "10.77.0.50").unwrap();
    assert_eq!(borrowed["borrowed"], true);
    assert_eq!(borrowed["attachment"]["container_id"], "ctr-4");
    assert_eq!(borrowed["node"], "node-1");

    // The YAML is the resources again: applying it changes nothing.
    let yaml = f.ok(&["get", "pools", "-o", "yaml"]);
    assert!(yaml.contains("allocated: 3"), "{yaml}");
    let path = f.write("pools.yaml", &yaml);
    let out = f.ok(&["apply", "-f", path.to_str().unwrap()]);
    assert_eq!(
        out.lines().filter(|l| l.ends_with(" unchanged")).count(),
        3,
        "{out}"
    );
}

#[test]
fn describe_explains_why_a_node_has_no_pool() {
    let f = Fixture::new();
    f.claim_usual();

    let out = f.ok(&["describe", "node", "node-x"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.contains(&"Labels:   zone=zone3"), "{out}");
    assert!(lines.contains(&"Served by (0, in order):"), "{out}");
    assert!(
        lines.contains(&"  no pool serves this node: it can get no address (reasons below)"),
        "{out}"
    );
    assert!(lines.contains(&"Not served by (3):"), "{out}");
    assert!(lines.contains(&"  spare: disabled"), "{out}");
    assert!(
        lines.contains(&"  web-a: affinity did not match (zone in (zone1,zone2))"),
        "{out}"
    );
    assert!(
        lines.contains(&"  web-b: affinity did not match (nodes: node-b)"),
        "{out}"
    );
    assert!(lines.contains(&"Holds (0):"), "{out}");

    let out = f.ok(&["describe", "node", "node-1"]);
    assert!(
        out.contains("Served by (1, in order):\n  web-a  subnet rack-a, 8 free of 11\n"),
        "{out}"
    );
    assert!(out.contains("Holds (3):"), "{out}");

    let out = f.ok(&["describe", "pool", "web-a"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.contains(&"Counters:     total 11, used 3, free 8, borrowed 1"),
        "{out}"
    );
    assert!(lines.contains(&"Serves nodes (1):"), "{out}");
    assert!(lines.contains(&"  node-1 (zone=zone1)"), "{out}");
    assert!(
        lines.contains(&"  node-x: affinity did not match (zone=zone3)"),
        "{out}"
    );
    assert!(lines.contains(&"Holders (3):"), "{out}");
    assert!(
        lines
            .iter()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["10.77.0.50", "node-1", "ctr-4", "eth0", "<none>", "true"]),
        "{out}"
    );

    let out = f.ok(&["describe", "subnet", "rack-a"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.contains(&"Reserved:  10.77.0.0-10.77.0.9, 10.77.0.255"),
        "{out}"
    );
    // 245 allocatable, 20 in pools, one borrowed and held.
    assert!(
        lines.contains(&"Lendable:  224 (free, in no pool: what full pools may borrow)"),
        "{out}"
    );
    assert!(lines.contains(&"Pools (2):"), "{out}");

    let (_, err) = f.fails(&["describe", "pool", "nope"]);
    assert!(
        err.contains("pool \"nope\" not found in embedded:"),
        "{err}"
    );
    let (_, err) = f.fails(&["describe", "node", "ghost"]);
    assert!(err.contains("node \"ghost\" not found"), "{err}");
}

#[test]
fn check_is_clean_then_finds_each_problem() {
    let f = Fixture::new();
    f.claim_usual();
    assert_eq!(f.ok(&["check"]), "4 claims checked, 0 problem(s)\n");

    // A pool deleted around the CLI while one of its claims survives.
    let temp = "apiVersion: ipam.atoll.dev/v1alpha1\nkind: IPPool\nmetadata: {name: temp}\n\
                spec: {subnet: rack-b, ips: [10.78.0.100-10.78.0.101]}\n";
    let path = f.write("temp.yaml", temp);
    f.ok(&["apply", "-f", path.to_str().unwrap()]);
    f.claim("rack-b", "10.78.0.100", "temp", "ctr-7", "node-b", false);
    let generation = f.runtime.block_on(f.store.generation()).unwrap();
    let delete = Change::Delete {
        kind: Kind::IPPool,
        key: "temp".into(),
    };
    f.runtime
        .block_on(f.store.apply(&[delete], generation))
        .unwrap();

    // Outside its pool, not borrowed; on a gateway; one holder, two IPv4 addresses.
    f.claim("rack-b", "10.78.0.200", "web-b", "ctr-8", "node-b", false);
    f.claim("rack-a", "10.77.0.1", "web-a", "ctr-9", "node-1", true);
    f.claim("rack-a", "10.77.0.12", "web-a", "ctr-1", "node-1", false);

    let (out, err) = f.fails(&["check"]);
    let expected = [
        "ctr-1/eth0 holds 2 IPv4 addresses (10.77.0.10, 10.77.0.12); one per family is allowed",
        "10.77.0.1 (subnet rack-a, pool web-a, borrowed) held by ctr-9/eth0 on node node-1: the address is the gateway of subnet rack-a",
        "10.78.0.100 (subnet rack-b, pool temp) held by ctr-7/eth0 on node node-b: pool temp no longer exists",
        "10.78.0.200 (subnet rack-b, pool web-b) held by ctr-8/eth0 on node node-b: the address is outside pool web-b (10.78.0.10-10.78.0.29) and not marked borrowed",
        "8 claims checked, 4 problem(s)",
    ];
    let mut got: Vec<&str> = out.lines().collect();
    got.sort();
    let mut want = expected.to_vec();
    want.sort();
    assert_eq!(got, want);
    assert!(err.contains("4 problem(s) found"), "{err}");

    // Released, the store is clean again.
    for ip in ["10.78.0.100", "10.78.0.200", "10.77.0.1", "10.77.0.12"] {
        f.ok(&["release", ip]);
    }
    assert_eq!(f.ok(&["check"]), "4 claims checked, 0 problem(s)\n");
}

#[test]
fn release_by_address_and_by_container() {
    let f = Fixture::new();
    f.claim_usual();
    f.claim(
        "rack-b",
        "10.78.0.11",
        "web-b",
        "ctr-5/eth0",
        "node-b",
        false,
    );
    f.claim(
        "rack-a",
        "10.77.0.13",
        "web-a",
        "ctr-5/net1",
        "node-b",
        false,
    );

    assert_eq!(
        f.ok(&["release", "10.77.0.11"]),
        "released 10.77.0.11 (subnet rack-a, pool web-a) held by ctr-2/eth0 on node node-1\n"
    );
    assert!(!f.held(None).contains(&"10.77.0.11 ctr-2/eth0".to_string()));
    assert_eq!(
        f.ok(&["release", "10.77.0.11"]),
        "10.77.0.11 is not held; nothing to release\n"
    );

    // A container ID releases its eth0 claim only; --ifname picks another.
    assert_eq!(
        f.ok(&["release", "ctr-5"]),
        "released 10.78.0.11 (subnet rack-b, pool web-b) held by ctr-5/eth0 on node node-b\n"
    );
    assert_eq!(
        f.ok(&["release", "ctr-5"]),
        "container ctr-5/eth0 holds nothing; it holds addresses on net1: use --ifname\n"
    );
    assert_eq!(
        f.ok(&["release", "ctr-5", "--ifname", "net1"]),
        "released 10.77.0.13 (subnet rack-a, pool web-a) held by ctr-5/net1 on node node-b\n"
    );
    assert_eq!(
        f.ok(&["release", "no-such-ctr"]),
        "container no-such-ctr/eth0 holds nothing; nothing to release\n"
    );

    assert_eq!(
        f.held(None),
        [
            "10.77.0.10 ctr-1/eth0",
            "10.77.0.50 ctr-4/eth0",
            "10.78.0.10 ctr-3/eth0"
        ]
    );
}

#[test]
fn gc_releases_what_is_not_kept() {
    let f = Fixture::new();
    f.claim_usual();
    f.claim(
        "rack-a",
        "10.77.0.14",
        "web-a",
        "ctr-6/net1",
        "node-1",
        false,
    );

    // A malformed entry releases nothing.
    let (_, err) = f.fails(&["gc", "--node", "node-1", "--keep", "ctr-1,/net1"]);
    assert!(
        err.contains("--keep \"/net1\": expected container[/ifname]; nothing released"),
        "{err}"
    );
    assert_eq!(f.held(Some("node-1")).len(), 4);

    let out = f.ok(&["gc", "--node", "node-1", "--keep", "ctr-1,ctr-6/net1"]);
    assert_eq!(
        out,
        "released 10.77.0.11 (subnet rack-a, pool web-a) held by ctr-2/eth0 on node node-1\n\
         released 10.77.0.50 (subnet rack-a, pool web-a, borrowed) held by ctr-4/eth0 on node node-1\n\
         node node-1: 2 released, 2 kept\n"
    );
    assert_eq!(
        f.held(Some("node-1")),
        ["10.77.0.10 ctr-1/eth0", "10.77.0.14 ctr-6/net1"]
    );
    // Other nodes are untouched.
    assert_eq!(f.held(Some("node-b")), ["10.78.0.10 ctr-3/eth0"]);

    assert_eq!(
        f.ok(&["gc", "--node", "node-1", "--keep", "ctr-1,ctr-6/net1"]),
        "node node-1: nothing to release, 2 kept\n"
    );
}

#[test]
fn delete_refuses_what_is_in_use() {
    let f = Fixture::new();
    f.claim_usual();

    let (_, err) = f.fails(&["delete", "subnet", "rack-a"]);
    assert!(
        err.contains("refused: subnet rack-a is used by pool(s) spare, web-a"),
        "{err}"
    );
    let (_, err) = f.fails(&["delete", "pool", "web-a"]);
    assert!(
        err.contains("refused: pool web-a still has 3 holder(s): 10.77.0.10 (ctr-1/eth0), 10.77.0.11 (ctr-2/eth0), 10.77.0.50 (ctr-4/eth0); release them first"),
        "{err}"
    );
    let (_, err) = f.fails(&["delete", "node", "node-1"]);
    assert!(
        err.contains("refused: node node-1 still holds 3 address(es)"),
        "{err}"
    );
    assert!(err.contains("atoll gc --node node-1"), "{err}");
    let (_, err) = f.fails(&["delete", "pool", "nope"]);
    assert!(err.contains("pool \"nope\" not found"), "{err}");

    // Nothing refused was deleted.
    let t = tokens(&f.ok(&["get", "pools"]));
    assert_eq!(t.len(), 4);

    assert_eq!(f.ok(&["delete", "pool", "spare"]), "ippool/spare deleted\n");
    assert_eq!(f.ok(&["delete", "node", "node-x"]), "node/node-x deleted\n");
    let t = tokens(&f.ok(&["get", "nodes"]));
    assert!(t.iter().all(|r| r[0] != "node-x"));

    // A subnet goes once its pools and their holders are gone.
    let (_, err) = f.fails(&["delete", "subnet", "rack-b"]);
    assert!(err.contains("used by pool(s) web-b"), "{err}");
    f.ok(&["release", "10.78.0.10"]);
    assert_eq!(f.ok(&["delete", "pool", "web-b"]), "ippool/web-b deleted\n");
    assert_eq!(
        f.ok(&["delete", "subnet", "rack-b"]),
        "subnet/rack-b deleted\n"
    );
    let t = tokens(&f.ok(&["get", "subnets"]));
    assert_eq!(t.len(), 2);
    assert_eq!(t[1][0], "rack-a");
    assert_eq!(row(&t, "rack-a")[7], "web-a");
}

#[test]
fn invalid_stored_pool_is_shown_and_reported() {
    let f = Fixture::new();
    f.claim_usual();

    // Written around `apply`, as etcdctl could: a pool overlapping web-a.
    let bad = serde_json::json!({
        "apiVersion": "ipam.atoll.dev/v1alpha1",
        "kind": "IPPool",
        "metadata": {"name": "zz-overlap"},
        "spec": {"subnet": "rack-a", "ips": ["10.77.0.15-10.77.0.30"]}
    });
    let generation = f.runtime.block_on(f.store.generation()).unwrap();
    let put = Change::Put {
        kind: Kind::IPPool,
        key: "zz-overlap".into(),
        value: bad,
    };
    f.runtime
        .block_on(f.store.apply(&[put], generation))
        .unwrap();

    // The others keep their counters; the refused one has none and says why.
    let t = tokens(&f.ok(&["get", "pools"]));
    assert_eq!(row(&t, "web-a")[3..7], ["11", "3", "8", "1"]);
    assert_eq!(row(&t, "zz-overlap")[3..7], ["-", "-", "-", "-"]);
    let pools: Value = serde_json::from_str(&f.ok(&["get", "pools", "-o", "json"])).unwrap();
    let bad = pools
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["metadata"]["name"] == "zz-overlap")
        .unwrap();
    assert_eq!(bad["status"]["conditions"][0]["status"], "False");
    assert_eq!(
        bad["status"]["conditions"][0]["message"],
        "spec.ips: overlaps IPPool/web-a at 10.77.0.15-10.77.0.19"
    );

    let (out, _) = f.fails(&["check"]);
    assert_eq!(
        out,
        "IPPool/zz-overlap is not valid: spec.ips: overlaps IPPool/web-a at 10.77.0.15-10.77.0.19\n\
         4 claims checked, 1 problem(s)\n"
    );
    let out = f.ok(&["describe", "node", "node-1"]);
    assert!(
        out.contains("  zz-overlap: not valid: spec.ips: overlaps IPPool/web-a"),
        "{out}"
    );

    // Deleting the culprit is allowed: it removes a refusal, adds none.
    assert_eq!(
        f.ok(&["delete", "pool", "zz-overlap"]),
        "ippool/zz-overlap deleted\n"
    );
    assert_eq!(f.ok(&["check"]), "4 claims checked, 0 problem(s)\n");
}
