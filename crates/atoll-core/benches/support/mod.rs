//! What the engine's benchmarks and profiling examples share: resources
//! built in code, a repeatable pseudo-random sequence, and an engine with one
//! pool holding many scattered addresses. Benches include it with `mod
//! support;`, examples with `#[path = "../benches/support/mod.rs"]`.

#![allow(dead_code)] // each bench or example uses a different part

use atoll_core::resource::{
    IPPool, IPPoolSpec, Node, NodeAffinity, ObjectMeta, Subnet, SubnetSpec, API_VERSION,
};
use atoll_core::{Catalog, Engine, Family, Request};

/// An allocation of the one node `n` from the given pools.
pub fn request(pools: &[usize]) -> Request<'_> {
    Request {
        app: "bench",
        node: "n",
        pools,
        family: Family::V4,
    }
}

pub fn subnet(name: &str, cidr: &str) -> Subnet {
    Subnet {
        api_version: API_VERSION.into(),
        kind: "Subnet".into(),
        metadata: ObjectMeta {
            name: name.into(),
            ..Default::default()
        },
        spec: SubnetSpec {
            cidr: cidr.into(),
            ..Default::default()
        },
        status: None,
    }
}

pub fn pool(name: &str, subnet: &str, ips: &str, affinity: Option<NodeAffinity>) -> IPPool {
    IPPool {
        api_version: API_VERSION.into(),
        kind: "IPPool".into(),
        metadata: ObjectMeta {
            name: name.into(),
            ..Default::default()
        },
        spec: IPPoolSpec {
            subnet: subnet.into(),
            ips: vec![ips.into()],
            node_affinity: affinity,
            ..Default::default()
        },
        status: None,
    }
}

/// A deterministic pseudo-random sequence (xorshift), so runs compare.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// An engine with one pool of `cidr`, `held` addresses held at scattered places.
pub fn filled(cidr: &str, held: usize) -> (Engine, Vec<usize>) {
    let cat = Catalog::build(vec![subnet("s", cidr)], vec![pool("p", "s", cidr, None)]).unwrap();
    let mut e = Engine::new(cat);
    e.upsert_node(&Node::new("n", &[]));
    let ids = vec![0];
    let net: ipnet::Ipv4Net = cidr.parse().unwrap();
    let base = u32::from(net.network()) as u64;
    let size = 1u64 << (32 - net.prefix_len());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut n = 0;
    while n < held {
        let v = base + 1 + rng.next() % (size - 2);
        let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::from(v as u32));
        if matches!(e.hold(ip, None), atoll_core::Hold::Held { .. }) {
            n += 1;
        }
    }
    (e, ids)
}
