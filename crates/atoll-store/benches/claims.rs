//! Claims per second of the embedded store: one file on the disk of the
//! build directory, WAL with `synchronous=FULL`, so every answered claim is
//! synced. With one claimer each claim waits for its own sync; with many,
//! group commit shares one sync among the claims queued meanwhile.
//!
//! Each iteration is one won claim of a fresh address; criterion reports
//! claims per second as elements per second.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll_store::embedded::EmbeddedStore;
use atoll_store::{Attachment, Claim, ClaimOutcome, SharedStore};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tokio::task::JoinSet;

fn claims(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // The build directory is on a real disk, unlike a tmpfs /tmp may be.
    let dir = tempfile::Builder::new()
        .prefix("atoll-bench-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temporary directory");
    let store: SharedStore =
        Arc::new(EmbeddedStore::open(dir.path().join("claims.db")).expect("open the store"));
    let next = Arc::new(AtomicU64::new(0));

    let mut group = c.benchmark_group("embedded_claim");
    group.throughput(Throughput::Elements(1));
    for claimers in [1u64, 8, 32] {
        group.bench_with_input(
            BenchmarkId::new("claimers", claimers),
            &claimers,
            |b, &claimers| {
                b.iter_custom(|iters| {
                    runtime.block_on(claim_fresh(store.clone(), next.clone(), claimers, iters))
                });
            },
        );
    }
    group.finish();
}

/// Runs `iters` claims of fresh addresses over `claimers` tasks; returns the
/// time they took.
async fn claim_fresh(
    store: SharedStore,
    next: Arc<AtomicU64>,
    claimers: u64,
    iters: u64,
) -> Duration {
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for claimer in 0..claimers {
        let share = iters / claimers + u64::from(claimer < iters % claimers);
        let (store, next) = (store.clone(), next.clone());
        tasks.spawn(async move {
            for _ in 0..share {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let claim = Claim {
                    subnet: "bench".into(),
                    ip: IpAddr::V6(Ipv6Addr::from((0xfd00_u128 << 112) | u128::from(n))),
                    pool: "bench".into(),
                    attachment: Attachment {
                        container_id: format!("bench-{n}"),
                        ifname: "eth0".into(),
                    },
                    node: "node-1".into(),
                    app: String::new(),
                    network: "net".into(),
                    borrowed: false,
                    created: 0,
                };
                let outcome = store.claim(&claim).await.expect("claim");
                assert_eq!(outcome, ClaimOutcome::Won, "a fresh address was not won");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("claiming task");
    }
    started.elapsed()
}

criterion_group!(benches, claims);
criterion_main!(benches);
