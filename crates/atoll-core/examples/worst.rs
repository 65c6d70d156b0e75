//! The slowest allocations in a /8 pool holding 1,000,000 scattered
//! addresses: each of 200,000 allocations timed alone, with the percentiles
//! and the slowest printed. `cargo run --release -p atoll-core --example worst`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use atoll_core::resource::{IPPool, IPPoolSpec, Node, ObjectMeta, Subnet, SubnetSpec, API_VERSION};
use atoll_core::{Catalog, Engine, Family, Hold, Request};

fn main() {
    let subnet = Subnet {
        api_version: API_VERSION.into(),
        kind: "Subnet".into(),
        metadata: ObjectMeta {
            name: "s".into(),
            ..Default::default()
        },
        spec: SubnetSpec {
            cidr: "10.0.0.0/8".into(),
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
            ips: vec!["10.0.0.0/8".into()],
            ..Default::default()
        },
        status: None,
    };
    let mut e = Engine::new(Catalog::build(vec![subnet], vec![pool]).expect("valid"));
    e.upsert_node(&Node::new("n", &[]));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut held = 0;
    while held < 1_000_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0001 + (x % 16_777_214) as u32));
        if matches!(e.hold(ip, None), Hold::Held { .. }) {
            held += 1;
        }
    }
    let ids = [0];
    // The same 200,000 allocations twice, on two copies of the engine: an
    // allocation slow in both runs is slow by the algorithm; one slow in a
    // single run was interrupted by the machine.
    let mut runs = Vec::new();
    for _ in 0..2 {
        let mut engine = e.clone();
        let mut times = Vec::with_capacity(200_000);
        for _ in 0..200_000 {
            let t = Instant::now();
            let a = engine
                .allocate(&Request {
                    app: "bench",
                    node: "n",
                    pools: &ids,
                    family: Family::V4,
                })
                .expect("free address");
            times.push(t.elapsed().as_nanos());
            std::hint::black_box(a);
        }
        runs.push(times);
    }
    let both: Vec<u128> = runs[0]
        .iter()
        .zip(&runs[1])
        .map(|(a, b)| *a.min(b))
        .collect();
    let mut slow_both: Vec<(usize, u128)> = both
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, t)| *t > 10_000)
        .collect();
    slow_both.sort_by_key(|(_, t)| *t);
    println!(
        "allocations slower than 10 us in both runs: {}",
        slow_both.len()
    );
    let mut times = runs.swap_remove(0);
    times.sort_unstable();
    let p = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    println!(
        "/8 pool, 1,000,000 held, 200,000 allocations: p50 {} ns, p99 {} ns, p99.99 {} ns, max {} ns; {} blocks stored",
        p(0.5),
        p(0.99),
        p(0.9999),
        times[times.len() - 1],
        e.pool_blocks(0)
    );
    println!("slowest ten (ns): {:?}", &times[times.len() - 10..]);
}
