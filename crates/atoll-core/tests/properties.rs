//! Property tests: random subnets, pools, nodes, bindings and sequences of
//! allocate / release / borrow / affinity edits, checked against a plain
//! model of the rules.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};

use atoll_core::resource::{
    AutoExtend, IPPool, IPPoolSpec, Node, NodeAffinity, ObjectMeta, Requirement, SelectorTerm,
    StringMap, Subnet, SubnetSpec, API_VERSION,
};
use atoll_core::selector::{Affinity, NodeRef};
use atoll_core::{AllocError, Catalog, Engine, Family, Hold, Request};
use proptest::prelude::*;

const ZONES: [&str; 3] = ["z1", "z2", "z3"];

/// Kubernetes' rules, written out directly on the spec as written.
fn k8s_matches(spec: Option<&NodeAffinity>, name: &str, labels: &StringMap) -> bool {
    let Some(spec) = spec else { return true };
    if spec.node_names.is_empty() && spec.node_selector_terms.is_empty() {
        return true;
    }
    if spec.node_names.iter().any(|n| n == name) {
        return true;
    }
    spec.node_selector_terms.iter().any(|t| {
        t.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && t.match_expressions.iter().all(|r| {
                let has = labels.get(&r.key);
                match r.operator.as_str() {
                    "In" => has.is_some_and(|v| r.values.contains(v)),
                    "NotIn" => match has {
                        None => true,
                        Some(v) => !r.values.contains(v),
                    },
                    "Exists" => has.is_some(),
                    "DoesNotExist" => has.is_none(),
                    _ => unreachable!(),
                }
            })
    })
}

fn requirement() -> impl Strategy<Value = Requirement> {
    let keys = prop::sample::select(vec!["zone", "rack", "disk"]);
    let vals = prop::collection::vec(prop::sample::select(vec!["z1", "z2", "z3", "a", "b"]), 1..3);
    (keys, 0..4usize, vals).prop_map(|(k, op, values)| {
        let op = ["In", "NotIn", "Exists", "DoesNotExist"][op];
        Requirement {
            key: k.into(),
            operator: op.into(),
            values: if op == "In" || op == "NotIn" {
                values.into_iter().map(String::from).collect()
            } else {
                vec![]
            },
        }
    })
}

fn affinity() -> impl Strategy<Value = Option<NodeAffinity>> {
    let label_pairs = prop::collection::btree_map(
        prop::sample::select(vec!["zone", "rack"]).prop_map(String::from),
        prop::sample::select(vec!["z1", "z2", "z3", "a"]).prop_map(String::from),
        0..2,
    );
    let term = (label_pairs, prop::collection::vec(requirement(), 0..3))
        .prop_filter("non-empty term", |(l, e)| !l.is_empty() || !e.is_empty())
        .prop_map(|(match_labels, match_expressions)| SelectorTerm {
            match_labels,
            match_expressions,
        });
    let names = prop::collection::vec(
        prop::sample::select(vec!["n0", "n1", "n5"]).prop_map(String::from),
        0..2,
    );
    prop::option::of((names, prop::collection::vec(term, 0..3)).prop_map(
        |(node_names, node_selector_terms)| NodeAffinity {
            node_names,
            node_selector_terms,
        },
    ))
}

fn node_labels() -> impl Strategy<Value = StringMap> {
    prop::collection::btree_map(
        prop::sample::select(vec!["zone", "rack", "disk", "os"]).prop_map(String::from),
        prop::sample::select(vec!["z1", "z2", "z3", "a", "b"]).prop_map(String::from),
        0..4,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn selector_agrees_with_kubernetes_rules(spec in affinity(), labels in node_labels(), idx in 0..8usize) {
        let name = format!("n{idx}");
        let compiled = Affinity::compile(spec.as_ref()).unwrap();
        let node = NodeRef { name: &name, uid: None, labels: &labels };
        prop_assert_eq!(compiled.matches(&node), k8s_matches(spec.as_ref(), &name, &labels));
    }
}

/// One generated world: subnets 10.<s>.0.0/27, each cut into pools.
#[derive(Debug, Clone)]
struct World {
    subnets: Vec<Subnet>,
    pools: Vec<IPPool>,
    nodes: Vec<Node>,
}

fn ip(s: u8, host: u8) -> String {
    Ipv4Addr::new(10, s, 0, host).to_string()
}

fn world() -> impl Strategy<Value = World> {
    let subnet_count = 1..4usize;
    subnet_count
        .prop_flat_map(|n| {
            let per_subnet = prop::collection::vec(
                (
                    prop::collection::vec((0u8..4, 1u8..6), 1..4), // (gap, len) of each pool
                    prop::option::of(2u8..30),                     // an excluded address
                ),
                n,
            );
            let affinities = prop::collection::vec(affinity(), 12);
            let extend = prop::collection::vec((any::<bool>(), 1u32..4), 12);
            let nodes = prop::collection::vec(node_labels(), 1..6);
            (per_subnet, affinities, extend, nodes)
        })
        .prop_map(|(per_subnet, affinities, extend, nodes)| {
            let mut subnets = vec![];
            let mut pools = vec![];
            for (s, (cuts, excluded)) in per_subnet.into_iter().enumerate() {
                let s8 = s as u8 + 1;
                subnets.push(Subnet {
                    api_version: API_VERSION.into(),
                    kind: "Subnet".into(),
                    metadata: ObjectMeta {
                        name: format!("s{s}"),
                        ..Default::default()
                    },
                    spec: SubnetSpec {
                        cidr: format!("10.{s8}.0.0/27"),
                        gateway: Some(ip(s8, 1).parse().unwrap()),
                        exclude_ips: excluded.map(|e| ip(s8, e)).into_iter().collect(),
                        ..Default::default()
                    },
                    status: None,
                });
                let mut at = 2u8;
                for (gap, len) in cuts {
                    let start = at + gap;
                    let end = start + len - 1;
                    if end > 30 {
                        break;
                    }
                    let k = pools.len();
                    let (on, step) = extend[k % extend.len()];
                    pools.push(IPPool {
                        api_version: API_VERSION.into(),
                        kind: "IPPool".into(),
                        metadata: ObjectMeta {
                            name: format!("p{k}"),
                            ..Default::default()
                        },
                        spec: IPPoolSpec {
                            subnet: format!("s{s}"),
                            ips: vec![format!("{}-{}", ip(s8, start), ip(s8, end))],
                            node_affinity: affinities[k % affinities.len()].clone(),
                            auto_extend: Some(AutoExtend { enabled: on, step }),
                            ..Default::default()
                        },
                        status: None,
                    });
                    at = end + 1;
                }
            }
            let nodes = nodes
                .into_iter()
                .enumerate()
                .map(|(i, labels)| Node {
                    metadata: ObjectMeta {
                        name: format!("n{i}"),
                        labels,
                        ..Default::default()
                    },
                })
                .collect();
            World {
                subnets,
                pools,
                nodes,
            }
        })
}

#[derive(Debug, Clone)]
enum Op {
    Allocate { node: usize, pools: Vec<usize> },
    Release { which: usize },
    EditAffinity { pool: usize, zone: usize },
    Jump { pool: usize },
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        6 => (0..6usize, prop::collection::vec(0..12usize, 0..4)).prop_map(|(node, pools)| Op::Allocate { node, pools }),
        3 => (0..64usize).prop_map(|which| Op::Release { which }),
        1 => (0..12usize, 0..4usize).prop_map(|(pool, zone)| Op::EditAffinity { pool, zone }),
        1 => (0..12usize).prop_map(|pool| Op::Jump { pool }),
    ];
    prop::collection::vec(op, 1..120)
}

/// Everything the model knows of the world, computed by brute force over
/// the (small) address space.
struct Model {
    world: World,
    /// ip -> (pool name, node)
    held: BTreeMap<IpAddr, (String, String)>,
}

impl Model {
    fn subnet_of(&self, ip: IpAddr) -> Option<&Subnet> {
        self.world.subnets.iter().find(|s| {
            let net: ipnet::IpNet = s.spec.cidr.parse().unwrap();
            net.contains(&ip)
        })
    }

    fn in_range(text: &str, ip: IpAddr) -> bool {
        let r: atoll_core::range::IpRange = text.parse().unwrap();
        r.contains_ip(ip)
    }

    fn never_allocatable(&self, ip: IpAddr) -> bool {
        let Some(s) = self.subnet_of(ip) else {
            return true;
        };
        let net: ipnet::IpNet = s.spec.cidr.parse().unwrap();
        ip == net.network()
            || ip == net.broadcast()
            || Some(ip) == s.spec.gateway
            || s.spec.exclude_ips.iter().any(|e| Model::in_range(e, ip))
    }

    fn pool_ips_hold(&self, ip: IpAddr) -> Option<&IPPool> {
        self.world
            .pools
            .iter()
            .find(|p| p.spec.ips.iter().any(|r| Model::in_range(r, ip)))
    }
}

fn build(world: &World) -> Catalog {
    Catalog::build(world.subnets.clone(), world.pools.clone())
        .unwrap_or_else(|e| panic!("generated world invalid: {e}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn engine_keeps_every_invariant(w in world(), ops in ops(), seed in any::<u64>()) {
        let mut model = Model { world: w.clone(), held: BTreeMap::new() };
        let mut engine = Engine::with_seed(build(&w), seed);
        for n in &w.nodes {
            engine.upsert_node(n);
        }
        let pool_count = model.world.pools.len();

        for op in ops {
            match op {
                Op::Allocate { node, pools } => {
                    let node = &model.world.nodes[node % model.world.nodes.len()];
                    let names: Vec<String> = pools.iter().map(|p| format!("p{}", p % pool_count)).collect();
                    let ids = engine.resolve("app", "test", &names).unwrap();
                    let req = Request { app: "app", node: &node.metadata.name, pools: &ids, family: Family::V4 };
                    match engine.allocate(&req) {
                        Ok(a) => {
                            let pool = &model.world.pools[a.pool];
                            prop_assert!(names.contains(&pool.metadata.name), "pool was bound");
                            prop_assert!(
                                k8s_matches(pool.spec.node_affinity.as_ref(), &node.metadata.name, &node.metadata.labels),
                                "pool {} does not serve {}", pool.metadata.name, node.metadata.name
                            );
                            prop_assert!(!model.held.contains_key(&a.ip), "{} handed out twice", a.ip);
                            prop_assert!(!model.never_allocatable(a.ip), "{} is reserved", a.ip);
                            let in_pool = pool.spec.ips.iter().any(|r| Model::in_range(r, a.ip));
                            let subnet = model.subnet_of(a.ip).unwrap();
                            prop_assert_eq!(&subnet.metadata.name, &pool.spec.subnet);
                            if !in_pool {
                                prop_assert!(a.borrowed);
                                prop_assert!(model.pool_ips_hold(a.ip).is_none(), "borrowed from another pool");
                                prop_assert!(pool.spec.auto_extend.as_ref().is_some_and(|x| x.enabled));
                            }
                            prop_assert!(!engine.is_free(a.ip), "{} still offered", a.ip);
                            model.held.insert(a.ip, (pool.metadata.name.clone(), node.metadata.name.clone()));
                        }
                        Err(AllocError::Exhausted { .. }) | Err(AllocError::NoPoolMatches { .. }) | Err(AllocError::NoPools { .. }) => {
                            // Completeness: no serving pool had a free address in its own range.
                            for name in &names {
                                let pool = model.world.pools.iter().find(|p| &p.metadata.name == name).unwrap();
                                if !k8s_matches(pool.spec.node_affinity.as_ref(), &node.metadata.name, &node.metadata.labels) {
                                    continue;
                                }
                                for r in &pool.spec.ips {
                                    let r: atoll_core::range::IpRange = r.parse().unwrap();
                                    for v in r.start()..=r.end() {
                                        let ip = atoll_core::range::u128_to_ip(Family::V4, v);
                                        let excluded = model.never_allocatable(ip);
                                        prop_assert!(excluded || model.held.contains_key(&ip), "{} was free in {}", ip, name);
                                    }
                                }
                            }
                        }
                        Err(e) => prop_assert!(false, "unexpected error {}", e),
                    }
                }
                Op::Release { which } => {
                    if model.held.is_empty() { continue; }
                    let ip = *model.held.keys().nth(which % model.held.len()).unwrap();
                    model.held.remove(&ip);
                    prop_assert!(engine.release(ip), "{} was held", ip);
                    prop_assert!(engine.is_free(ip), "{} not offered again", ip);
                    prop_assert!(!engine.release(ip), "{} released twice", ip);
                }
                Op::Jump { pool } => engine.jump(pool % pool_count),
                Op::EditAffinity { pool, zone } => {
                    let p = &mut model.world.pools[pool % pool_count];
                    p.spec.node_affinity = ZONES.get(zone).map(|z| NodeAffinity {
                        node_names: vec![],
                        node_selector_terms: vec![SelectorTerm {
                            match_labels: [("zone".to_string(), z.to_string())].into_iter().collect(),
                            match_expressions: vec![],
                        }],
                    });
                    engine = engine.rebuild(build(&model.world));
                    for (ip, (pool, _)) in &model.held {
                        let h = engine.hold(*ip, Some(pool));
                        prop_assert!(matches!(h, Hold::Held { .. }), "{} re-held: {:?}", ip, h);
                    }
                }
            }
        }

        // Counters agree with the model, pool by pool.
        let mut per_pool: HashMap<String, u128> = HashMap::new();
        for (pool, _) in model.held.values() {
            *per_pool.entry(pool.clone()).or_default() += 1;
        }
        for (id, p) in model.world.pools.iter().enumerate() {
            let want = per_pool.get(&p.metadata.name).copied().unwrap_or(0);
            prop_assert_eq!(engine.pool_usage(id).allocated, want, "pool {}", p.metadata.name);
        }
        let total_allocated: u128 = (0..model.world.subnets.len()).map(|s| engine.subnet_usage(s).allocated).sum();
        prop_assert_eq!(total_allocated, model.held.len() as u128);
    }
}
