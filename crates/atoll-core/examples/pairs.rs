//! Allocate+release pairs on a /16 pool 90% full, for profilers
//! (`valgrind --tool=callgrind`, `perf`): `cargo run --release -p atoll-core --example pairs`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use atoll_core::resource::{IPPool, IPPoolSpec, Node, ObjectMeta, Subnet, SubnetSpec, API_VERSION};
use atoll_core::{Catalog, Engine, Family, Hold, Request};

fn main() {
    let pairs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let subnet = Subnet {
        api_version: API_VERSION.into(),
        kind: "Subnet".into(),
        metadata: ObjectMeta {
            name: "s".into(),
            ..Default::default()
        },
        spec: SubnetSpec {
            cidr: "10.0.0.0/16".into(),
            ..Default::default()
        },
        status: None,
    };
    let pool = IPPool {
        api_version: API_VERSION.into(),
        kind: "IPPool".into(),
        metadata: ObjectMeta {
            name: "p".into(),
            ..Default::default()
        },
        spec: IPPoolSpec {
            subnet: "s".into(),
            ips: vec!["10.0.0.0/16".into()],
            ..Default::default()
        },
        status: None,
    };
    let mut e = Engine::new(Catalog::build(vec![subnet], vec![pool]).expect("valid"));
    e.upsert_node(&Node::new("n", &[]));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut held = 0;
    while held < 65534 * 9 / 10 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0001 + (x % 65534) as u32));
        if matches!(e.hold(ip, None), Hold::Held { .. }) {
            held += 1;
        }
    }
    let ids = [0];
    let started = std::time::Instant::now();
    for _ in 0..pairs {
        let a = e
            .allocate(&Request {
                app: "bench",
                node: "n",
                pools: &ids,
                family: Family::V4,
            })
            .expect("free address");
        e.release(black_box(a.ip));
    }
    let per = started.elapsed().as_nanos() as f64 / pairs as f64;
    println!(
        "{pairs} pairs, {per:.0} ns per pair, {} stored blocks",
        e.pool_blocks(0)
    );
}
