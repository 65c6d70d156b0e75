//! Throughput at the agent's socket: ADDs and DELs over the real unix socket
//! and wire protocol, 32 clients at once, every claim durable (SQLite with
//! `synchronous=FULL`, several claims per disk sync by group commit).
//!
//! Run: `cargo bench -p atoll-agent --bench socket`. Prints allocations per
//! second and ADD latency percentiles; the issue's goal is >= 20,000/s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll_cni::wire::{AgentRequest, AgentResponse, Command};
use atoll_store::{Change, Kind};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Clients at once; `ATOLL_BENCH_CLIENTS` overrides.
const CLIENTS: usize = 32;

// The allocator the `atoll` binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
/// Requests per client and verb.
const PER_CLIENT: usize = 500;

const WORLD: &str = r#"
apiVersion: ipam.atoll.dev/v1alpha1
kind: Subnet
metadata: {name: bench}
spec: {cidr: 10.199.0.0/16, gateway: 10.199.0.1}
---
apiVersion: ipam.atoll.dev/v1alpha1
kind: IPPool
metadata: {name: bench}
spec: {subnet: bench, ips: [10.199.0.0/16]}
"#;

async fn call(socket: &std::path::Path, req: &AgentRequest) -> AgentResponse {
    let mut stream = UnixStream::connect(socket).await.expect("connect");
    stream
        .write_all(&req.to_line().expect("encode"))
        .await
        .expect("write");
    let mut line = Vec::new();
    BufReader::new(stream)
        .read_until(b'\n', &mut line)
        .await
        .expect("read");
    AgentResponse::from_line(&line).expect("answer")
}

fn request(command: Command, container: String) -> AgentRequest {
    let mut r = AgentRequest::new(command);
    r.container_id = container;
    r.ifname = "eth0".into();
    r.netns = Some("/var/run/netns/bench".into());
    r.network = "bench".into();
    r.args.insert("ATOLL_POOLS".into(), "bench".into());
    r
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        atoll_store::open_embedded(&format!("embedded:{}", dir.path().join("b.db").display()))
            .await
            .expect("store");
    let mut changes = Vec::new();
    for m in atoll_core::manifest::parse_manifests(WORLD).expect("manifest") {
        if let atoll_core::manifest::Manifest::Subnet(s) = &m {
            changes.push(Change::Put {
                kind: Kind::Subnet,
                key: s.metadata.name.clone(),
                value: serde_json::to_value(s).expect("json"),
            });
        }
        if let atoll_core::manifest::Manifest::IPPool(p) = &m {
            changes.push(Change::Put {
                kind: Kind::IPPool,
                key: p.metadata.name.clone(),
                value: serde_json::to_value(p).expect("json"),
            });
        }
    }
    store.apply(&changes, 0).await.expect("apply");

    let socket = dir.path().join("agent.sock");
    let service = Arc::new(
        atoll_agent::Service::start(store.clone(), "bench-node", None)
            .await
            .expect("agent"),
    );
    let listener = atoll_agent::bind(&socket).await.expect("bind");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(atoll_agent::serve(
        service,
        listener,
        socket.clone(),
        async {
            let _ = stop_rx.await;
        },
    ));

    let clients: usize = std::env::var("ATOLL_BENCH_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CLIENTS);
    for (label, command) in [("ADD", Command::Add), ("DEL", Command::Del)] {
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..clients {
            let socket = socket.clone();
            tasks.spawn(async move {
                let mut lat = Vec::with_capacity(PER_CLIENT);
                for i in 0..PER_CLIENT {
                    let t = Instant::now();
                    let r = call(&socket, &request(command, format!("c{c}-{i}"))).await;
                    assert!(matches!(r, AgentResponse::Ok(_)), "{r:?}");
                    lat.push(t.elapsed());
                }
                lat
            });
        }
        let mut lat = Vec::new();
        while let Some(l) = tasks.join_next().await {
            lat.extend(l.expect("client"));
        }
        let elapsed = started.elapsed();
        lat.sort();
        println!(
            "{label} at the socket, {clients} clients, {} requests: {:.0}/s, p50 {:?}, p99 {:?}",
            lat.len(),
            lat.len() as f64 / elapsed.as_secs_f64(),
            percentile(&lat, 0.5),
            percentile(&lat, 0.99)
        );
    }
    assert!(
        store.list_claims(None).await.expect("claims").is_empty(),
        "every DEL released"
    );
    let _ = stop_tx.send(());
    server.await.expect("server");
}
