//! Measures claims per second against an etcd cluster, with 1 and with 32
//! concurrent claimers, each claim of a distinct address (all won).
//!
//! ```text
//! scripts/etcd-cluster.sh start /tmp/atoll-etcd 23790
//! cargo run --release -p atoll-etcd --example claim_rate -- \
//!     etcd:http://127.0.0.1:23790,http://127.0.0.1:23792,http://127.0.0.1:23794 [CLAIMS]
//! scripts/etcd-cluster.sh stop /tmp/atoll-etcd
//! ```
//!
//! Writes under `/atoll-bench/<pid>/` and deletes it afterwards.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll_etcd::{open, EtcdOptions};
use atoll_store::{Attachment, Claim, ClaimOutcome, Store};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let address = args
        .next()
        .ok_or("usage: claim_rate etcd:<endpoints> [CLAIMS]")?;
    let claims: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(4000);
    let prefix = format!("/atoll-bench/{}/", std::process::id());

    let opts = EtcdOptions {
        prefix: prefix.clone(),
        ..EtcdOptions::default()
    };
    let store = Arc::new(open(&address, opts).await?);
    println!("{claims} claims, then as many releases, per run; store {address}");

    for claimers in [1, 32] {
        let (claimed, mut latencies) = run(&store, claimers, claims, "claim").await?;
        report("claim", claimers, claims, claimed, &mut latencies);
        let (released, mut latencies) = run(&store, claimers, claims, "release").await?;
        report("release", claimers, claims, released, &mut latencies);
    }

    // Clean up what the runs left (the generation watch key is never written).
    let endpoints: Vec<&str> = address.trim_start_matches("etcd:").split(',').collect();
    let mut client = etcd_client::Client::connect(endpoints, None).await?;
    client
        .delete(
            prefix,
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await?;
    Ok(())
}

/// Claims (or releases) `count` addresses with `claimers` tasks; returns the
/// wall time and every call's latency.
async fn run(
    store: &Arc<atoll_etcd::EtcdStore>,
    claimers: usize,
    count: usize,
    what: &'static str,
) -> Result<(Duration, Vec<Duration>), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..claimers {
        let store = store.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            for i in (k..count).step_by(claimers) {
                let claim = claim_of(claimers, i);
                let call = Instant::now();
                if what == "claim" {
                    let outcome = store.claim(&claim).await.map_err(|e| e.to_string())?;
                    if outcome != ClaimOutcome::Won {
                        return Err(format!("claim of {} answered {outcome:?}", claim.ip));
                    }
                } else {
                    let released = store
                        .release(&claim.subnet, claim.ip, &claim.attachment)
                        .await
                        .map_err(|e| e.to_string())?;
                    if !released {
                        return Err(format!("release of {} deleted nothing", claim.ip));
                    }
                }
                latencies.push(call.elapsed());
            }
            Ok::<_, String>(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        latencies.extend(joined??);
    }
    Ok((started.elapsed(), latencies))
}

/// The `i`th claim of a run with `claimers` claimers: distinct addresses.
fn claim_of(claimers: usize, i: usize) -> Claim {
    let ip = IpAddr::V4(Ipv4Addr::new(10, 99, (i / 250) as u8, (i % 250) as u8 + 1));
    Claim {
        subnet: format!("bench-{claimers}"),
        ip,
        pool: "bench".into(),
        attachment: Attachment {
            container_id: format!("bench-{i}"),
            ifname: "eth0".into(),
        },
        node: format!("node-{}", i % 8),
        app: "bench/app".into(),
        network: "net".into(),
        borrowed: false,
        created: 0,
    }
}

fn report(what: &str, claimers: usize, count: usize, took: Duration, latencies: &mut [Duration]) {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "{what:>7} x{claimers:<2}: {:>7.0}/s  \
         ({count} in {:.2} s; latency p50 {:.2} ms, p99 {:.2} ms)",
        count as f64 / took.as_secs_f64(),
        took.as_secs_f64(),
        at(0.50).as_secs_f64() * 1000.0,
        at(0.99).as_secs_f64() * 1000.0,
    );
}
