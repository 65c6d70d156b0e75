//! The method of SPEC section 2, end to end through the engine: nodes in
//! zones, pools bound by label, an application bound to several pools,
//! allocation that follows the node, moving a zone between subnets, and
//! borrowing when a pool is full.

use std::net::IpAddr;

use atoll_core::drift::{drift, HeldRef};
use atoll_core::manifest::{parse_manifests, Manifest};
use atoll_core::resource::Node;
use atoll_core::{AllocError, Catalog, Engine, Family, Request};

fn catalog(yaml: &str) -> Catalog {
    let (mut subnets, mut pools) = (vec![], vec![]);
    for m in parse_manifests(yaml).unwrap() {
        match m {
            Manifest::Subnet(s) => subnets.push(s),
            Manifest::IPPool(p) => pools.push(p),
            _ => {}
        }
    }
    Catalog::build(subnets, pools).unwrap_or_else(|e| panic!("{e}"))
}

fn nodes() -> Vec<Node> {
    (1..=6)
        .map(|i| {
            Node::new(
                &format!("node-{i}"),
                &[("zone", if i <= 3 { "zone1" } else { "zone2" })],
            )
        })
        .collect()
}

fn subnet(name: &str, cidr: &str, gw: &str) -> String {
    format!(
        "---\napiVersion: ipam.atoll.dev/v1alpha1\nkind: Subnet\nmetadata: {{name: {name}}}\nspec: {{cidr: {cidr}, gateway: {gw}}}\n"
    )
}

fn pool(name: &str, subnet: &str, ips: &str, zones: &str, extra: &str) -> String {
    format!(
        "---\napiVersion: ipam.atoll.dev/v1alpha1\nkind: IPPool\nmetadata: {{name: {name}}}\nspec:\n  subnet: {subnet}\n  ips: [{ips}]\n  nodeAffinity: {{nodeSelectorTerms: [{{matchExpressions: [{{key: zone, operator: In, values: [{zones}]}}]}}]}}\n{extra}"
    )
}

fn engine(cat: Catalog) -> Engine {
    let mut e = Engine::new(cat);
    for n in nodes() {
        e.upsert_node(&n);
    }
    e
}

fn alloc(e: &mut Engine, node: &str, pools: &[&str]) -> Result<(IpAddr, String), AllocError> {
    let names: Vec<String> = pools.iter().map(|s| s.to_string()).collect();
    let ids = e.resolve("shop/web", "test", &names)?;
    let a = e.allocate(&Request {
        app: "shop/web",
        node,
        pools: &ids,
        family: Family::V4,
    })?;
    Ok((a.ip, e.catalog().subnets()[a.subnet].name.clone()))
}

#[test]
fn allocation_follows_the_node_and_moves_with_its_zone() {
    // Two subnets, one pool each, bound by zone label; the application is
    // bound to both pools.
    let before = subnet("subnet1", "10.1.0.0/24", "10.1.0.1")
        + &subnet("subnet2", "10.2.0.0/24", "10.2.0.1")
        + &pool("pool1", "subnet1", "10.1.0.10-10.1.0.100", "zone1", "")
        + &pool("pool2", "subnet2", "10.2.0.10-10.2.0.100", "zone2", "");
    let mut e = engine(catalog(&before));
    let app = ["pool1", "pool2"];

    let mut held = Vec::new();
    for i in 1..=6 {
        let node = format!("node-{i}");
        let (ip, sub) = alloc(&mut e, &node, &app).unwrap();
        assert_eq!(
            sub,
            if i <= 3 { "subnet1" } else { "subnet2" },
            "{node} got {ip}"
        );
        held.push((ip, node));
    }

    // Move zone2 to subnet 1: pool1 now serves zone1 and zone2, pool2 serves nobody.
    let moved = subnet("subnet1", "10.1.0.0/24", "10.1.0.1")
        + &subnet("subnet2", "10.2.0.0/24", "10.2.0.1")
        + &pool(
            "pool1",
            "subnet1",
            "10.1.0.10-10.1.0.100",
            "zone1, zone2",
            "",
        )
        + &pool("pool2", "subnet2", "10.2.0.10-10.2.0.100", "zone9", "");
    let moved_cat = catalog(&moved);
    let holders: Vec<String> = (1..=6).map(|i| format!("ctr-{i}/eth0")).collect();
    let refs: Vec<HeldRef> = held
        .iter()
        .zip(&holders)
        .map(|((ip, node), h)| HeldRef {
            ip: *ip,
            holder: h,
            node,
        })
        .collect();
    let report = drift(e.catalog(), &moved_cat, &nodes(), &refs);
    let moved_nodes: Vec<&str> = report.moved.iter().map(|m| m.node.as_str()).collect();
    assert_eq!(moved_nodes, ["node-4", "node-5", "node-6"]);
    assert_eq!(report.moved[0].before, ["pool2"]);
    assert_eq!(report.moved[0].after, ["pool1"]);
    let drifted: Vec<&str> = report.drifted.iter().map(|d| d.node.as_str()).collect();
    assert_eq!(
        drifted,
        ["node-4", "node-5", "node-6"],
        "running pods keep their old subnet"
    );
    assert!(report
        .drifted
        .iter()
        .all(|d| d.subnet.as_deref() == Some("subnet2")));

    let mut e = e.rebuild(moved_cat);
    for (ip, _) in &held {
        assert!(matches!(e.hold(*ip, None), atoll_core::Hold::Held { .. }));
    }
    for i in 1..=6 {
        let (_, sub) = alloc(&mut e, &format!("node-{i}"), &app).unwrap();
        assert_eq!(sub, "subnet1", "new pods of every zone land in subnet 1");
    }

    // Then move zone2 out to a third subnet.
    let out = subnet("subnet1", "10.1.0.0/24", "10.1.0.1")
        + &subnet("subnet2", "10.2.0.0/24", "10.2.0.1")
        + &subnet("subnet3", "10.3.0.0/24", "10.3.0.1")
        + &pool("pool1", "subnet1", "10.1.0.10-10.1.0.100", "zone1", "")
        + &pool("pool2", "subnet2", "10.2.0.10-10.2.0.100", "zone9", "")
        + &pool("pool3", "subnet3", "10.3.0.10-10.3.0.100", "zone2", "");
    let mut e = e.rebuild(catalog(&out));
    let app3 = ["pool1", "pool2", "pool3"];
    for i in 1..=6 {
        let (_, sub) = alloc(&mut e, &format!("node-{i}"), &app3).unwrap();
        assert_eq!(sub, if i <= 3 { "subnet1" } else { "subnet3" });
    }
}

#[test]
fn next_fit_does_not_reuse_a_released_address_at_once() {
    let y = subnet("s", "10.1.0.0/24", "10.1.0.1")
        + &pool("p", "s", "10.1.0.10-10.1.0.13", "zone1", "");
    let mut e = engine(catalog(&y));
    let (a, _) = alloc(&mut e, "node-1", &["p"]).unwrap();
    assert_eq!(a.to_string(), "10.1.0.10");
    assert!(e.release(a));
    let got: Vec<String> = (0..4)
        .map(|_| alloc(&mut e, "node-1", &["p"]).unwrap().0.to_string())
        .collect();
    assert_eq!(
        got,
        ["10.1.0.11", "10.1.0.12", "10.1.0.13", "10.1.0.10"],
        "wraps only at the end"
    );
    assert!(alloc(&mut e, "node-1", &["p"]).is_err());
}

#[test]
fn full_pool_borrows_from_its_subnet_then_fails_naming_every_pool() {
    // A /29 subnet: .0 network, .7 broadcast, .1 gateway, .2 excluded;
    // the pool holds .3-.4; .5 and .6 are lendable.
    let y = "---\napiVersion: ipam.atoll.dev/v1alpha1\nkind: Subnet\nmetadata: {name: s}\nspec: {cidr: 10.9.0.0/29, gateway: 10.9.0.1, excludeIPs: [10.9.0.2]}\n".to_string()
        + &pool("p", "s", "10.9.0.3-10.9.0.4", "zone1", "  autoExtend: {enabled: true, step: 1}\n")
        + &pool("other", "s", "10.9.0.6", "zone2", "");
    let mut e = engine(catalog(&y));
    let got: Vec<String> = (0..3)
        .map(|_| alloc(&mut e, "node-1", &["p"]).unwrap().0.to_string())
        .collect();
    assert_eq!(
        got,
        ["10.9.0.3", "10.9.0.4", "10.9.0.5"],
        ".5 borrowed; .6 is another pool's"
    );
    let pid = e.catalog().pool_id("p").unwrap();
    assert_eq!(e.pool_usage(pid).borrowed, 1);

    let err = alloc(&mut e, "node-1", &["other", "p"])
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "application shop/web on node node-1 (zone=zone1): no free IPv4 address; pools tried: \
         other: affinity did not match; p: full, and its subnet has no free address to lend"
    );

    // A released borrowed address stays in the pool and comes back by next-fit.
    assert!(e.release("10.9.0.5".parse().unwrap()));
    assert_eq!(
        alloc(&mut e, "node-1", &["p"]).unwrap().0.to_string(),
        "10.9.0.5"
    );
}

#[test]
fn errors_name_app_node_labels_and_pools() {
    let y = subnet("s", "10.1.0.0/24", "10.1.0.1")
        + &pool("p1", "s", "10.1.0.10", "zone1", "")
        + &pool("p6", "s", "'fd00::/64'", "zone1", "").replace("subnet: s", "subnet: s6")
        + &subnet("s6", "'fd00::/64'", "'fd00::1'");
    // s6 is defined after the pool that names it: build with subnets first.
    let y = {
        let (mut subnets, mut pools) = (vec![], vec![]);
        for m in parse_manifests(&y).unwrap() {
            match m {
                Manifest::Subnet(s) => subnets.push(s),
                Manifest::IPPool(p) => pools.push(p),
                _ => {}
            }
        }
        Catalog::build(subnets, pools).unwrap()
    };
    let mut e = engine(y);
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "node-4",
            vec!["p1", "p6"],
            "application shop/web on node node-4 (zone=zone2): no bound IPv4 pool serves this node; pools tried: p1: affinity did not match; p6: holds IPv6 addresses",
        ),
        ("node-x", vec!["p1"], "node \"node-x\" is unknown"),
        ("node-1", vec!["nope"], "application shop/web: pool \"nope\" (bound by test) does not exist"),
        ("node-1", vec![], "no pool is bound"),
    ];
    for (node, pools, want) in cases {
        let err = alloc(&mut e, node, &pools).unwrap_err().to_string();
        assert!(err.contains(want), "got {err:?}\nwant {want:?}");
    }
    let ids = e.resolve("a", "t", &["p1".into(), "p6".into()]).unwrap();
    assert_eq!(
        e.families("node-1", &ids).unwrap(),
        [Family::V4, Family::V6]
    );
    let v6 = e
        .allocate(&Request {
            app: "a",
            node: "node-1",
            pools: &ids,
            family: Family::V6,
        })
        .unwrap();
    assert_eq!(v6.ip.to_string(), "fd00::2", "network and gateway skipped");
}

#[test]
fn huge_pools_cost_what_small_ones_cost() {
    let y = subnet("big", "10.0.0.0/8", "10.0.0.1")
        + &pool("p", "big", "10.0.0.0/8", "zone1", "")
        + &subnet("big6", "'fd00::/48'", "'fd00::1'")
        + &pool("p6", "big6", "'fd00::/64'", "zone1", "");
    let mut e = engine(catalog(&y));
    for _ in 0..1000 {
        alloc(&mut e, "node-1", &["p"]).unwrap();
    }
    let id = e.catalog().pool_id("p").unwrap();
    assert_eq!(e.pool_usage(id).allocated, 1000);
    assert_eq!(e.pool_usage(id).total, (1 << 24) - 3);
    assert_eq!(
        e.pool_blocks(id),
        1,
        "1,000 sequential allocations touch one block"
    );
    let ids = e.resolve("a", "t", &["p6".into()]).unwrap();
    for _ in 0..3 {
        e.allocate(&Request {
            app: "a",
            node: "node-1",
            pools: &ids,
            family: Family::V6,
        })
        .unwrap();
    }
    let id6 = e.catalog().pool_id("p6").unwrap();
    assert_eq!(e.pool_usage(id6).allocated, 3);
    assert_eq!(e.pool_usage(id6).free, (1u128 << 64) - 5);
    assert_eq!(e.pool_blocks(id6), 1);
}

#[test]
fn agents_with_different_seeds_start_at_different_places() {
    let y = subnet("s", "10.1.0.0/24", "10.1.0.1")
        + &pool("p", "s", "10.1.0.10-10.1.0.109", "zone1", "");
    let first = |seed: u64| {
        let mut e = Engine::with_seed(catalog(&y), seed);
        for n in nodes() {
            e.upsert_node(&n);
        }
        alloc(&mut e, "node-1", &["p"]).unwrap().0.to_string()
    };
    assert_eq!(first(0), "10.1.0.10");
    assert_eq!(first(7), "10.1.0.17");
    assert_eq!(first(107), "10.1.0.17", "modulo the pool's 100 addresses");
}

#[test]
fn a_jump_moves_the_cursor_far_ahead_and_wraps() {
    let y = subnet("s", "10.1.0.0/24", "10.1.0.1")
        + &pool("p", "s", "10.1.0.10-10.1.0.109", "zone1", "");
    let mut e = engine(catalog(&y));
    let id = e.catalog().pool_id("p").unwrap();
    assert_eq!(
        alloc(&mut e, "node-1", &["p"]).unwrap().0.to_string(),
        "10.1.0.10"
    );
    e.jump(id);
    // The cursor was at offset 1; 61 of the 100 addresses further on.
    assert_eq!(
        alloc(&mut e, "node-1", &["p"]).unwrap().0.to_string(),
        "10.1.0.72"
    );
    e.jump(id);
    assert_eq!(
        alloc(&mut e, "node-1", &["p"]).unwrap().0.to_string(),
        "10.1.0.34",
        "wrapped"
    );
}

#[test]
fn a_claim_elsewhere_just_ahead_of_the_cursor_makes_it_jump() {
    let y = subnet("s", "10.1.0.0/24", "10.1.0.1")
        + &pool("p", "s", "10.1.0.10-10.1.0.109", "zone1", "");
    let mut e = engine(catalog(&y));
    assert_eq!(
        alloc(&mut e, "node-1", &["p"]).unwrap().0.to_string(),
        "10.1.0.10"
    );

    // Far from the cursor: held, no jump.
    e.hold_claimed_elsewhere("10.1.0.100".parse().unwrap(), "p");
    assert_eq!(
        alloc(&mut e, "node-1", &["p"]).unwrap().0.to_string(),
        "10.1.0.11"
    );

    // Right where this engine allocates next: it leaves.
    e.hold_claimed_elsewhere("10.1.0.12".parse().unwrap(), "p");
    let next = alloc(&mut e, "node-1", &["p"]).unwrap().0.to_string();
    assert_eq!(
        next, "10.1.0.73",
        "jumped 61 addresses on from the cursor at .12"
    );
}
