//! The slowest allocations in a /8 pool holding 1,000,000 scattered
//! addresses: each of 200,000 allocations timed alone, twice over on copies
//! of the engine, with the percentiles and the slowest printed.
//! `cargo run --release -p atoll-core --example worst`.

use std::time::Instant;

#[path = "../benches/support/mod.rs"]
mod support;

fn main() {
    let (e, ids) = support::filled("10.0.0.0/8", 1_000_000);

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
                .allocate(&support::request(&ids))
                .expect("free address");
            times.push(t.elapsed().as_nanos());
            std::hint::black_box(a);
        }
        runs.push(times);
    }
    let slow_both = runs[0]
        .iter()
        .zip(&runs[1])
        .filter(|(a, b)| *(*a).min(*b) > 10_000)
        .count();
    println!("allocations slower than 10 us in both runs: {slow_both}");

    let mut times = runs.swap_remove(0);
    times.sort_unstable();
    let p = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    println!(
        "/8 pool, 1,000,000 held, 200,000 allocations: p50 {} ns, p99 {} ns, p99.99 {} ns, \
         max {} ns; {} blocks stored",
        p(0.5),
        p(0.99),
        p(0.9999),
        times[times.len() - 1],
        e.pool_blocks(0)
    );
    println!("slowest ten (ns): {:?}", &times[times.len() - 10..]);
}
