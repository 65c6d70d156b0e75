//! Allocate+release pairs on a /16 pool 90% full, for profilers
//! (`valgrind --tool=callgrind`, `perf`):
//! `cargo run --release -p atoll-core --example pairs [PAIRS]`.

use std::hint::black_box;

#[path = "../benches/support/mod.rs"]
mod support;

fn main() {
    let pairs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let (mut e, ids) = support::filled("10.0.0.0/16", 65534 * 9 / 10);

    let started = std::time::Instant::now();
    for _ in 0..pairs {
        let a = e.allocate(&support::request(&ids)).expect("free address");
        e.release(black_box(a.ip));
    }
    let per = started.elapsed().as_nanos() as f64 / pairs as f64;
    println!(
        "{pairs} pairs, {per:.0} ns per pair, {} stored blocks",
        e.pool_blocks(0)
    );
}
