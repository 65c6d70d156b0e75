//! `atoll demo`: the quick start.
//!
//! In a temporary directory, on the embedded store: apply `examples/`
//! (six nodes in three zones, three subnets, a pool per zone bound by label,
//! a Deployment bound to the three pools), start one real agent per node,
//! and ask for each replica's address through the real `atoll-ipam` binary
//! exactly as a container runtime does (CNI_* environment, network config
//! on stdin). Then move zone2 to another subnet by applying edited pools,
//! fill zone3's small pool to show borrowing from its subnet, release
//! everything and stop the agents.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use atoll_store::{Attachment, SharedStore};

use crate::cli::DemoArgs;

/// The agents of the demo; killed on drop so that nothing outlives it.
struct Agents {
    children: Vec<(String, Child)>,
}

impl Agents {
    fn stop(&mut self) {
        for (_, child) in &mut self.children {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        for (_, child) in &mut self.children {
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Pod {
    name: String,
    node: String,
}

fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("locating the atoll binary")?;
    let p = me.with_file_name(name);
    anyhow::ensure!(
        p.exists(),
        "{} not found beside {}; build it with `cargo build --release --bins`",
        name,
        me.display()
    );
    Ok(p)
}

fn wait_for_socket(path: &Path, agent: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Ok(());
        }
        if let Some(status) = agent.try_wait()? {
            anyhow::bail!("agent for {} exited: {status}", path.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    anyhow::bail!("agent socket {} did not appear within 20 s", path.display())
}

/// Calls the plugin as a runtime does. Returns its stdout as JSON.
fn cni(
    plugin: &Path,
    command: &str,
    pod: &str,
    socket: &Path,
    extra_args: &str,
) -> anyhow::Result<serde_json::Value> {
    let config = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "demo",
        "type": "bridge",
        "ipam": {"type": "atoll-ipam", "socket": socket},
    });
    let mut child = Command::new(plugin)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", pod)
        .env("CNI_NETNS", format!("/var/run/netns/{pod}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", plugin.parent().unwrap_or(Path::new("/")))
        .env(
            "CNI_ARGS",
            format!("IgnoreUnknown=1;ATOLL_APP=shop/web{extra_args}"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("running {}", plugin.display()))?;
    child
        .stdin
        .take()
        .context("plugin stdin")?
        .write_all(config.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        match (err.get("code"), err.get("msg").and_then(|m| m.as_str())) {
            (Some(code), Some(msg)) => anyhow::bail!("{command} {pod}: CNI error {code}: {msg}"),
            _ => anyhow::bail!("{command} {pod}: {}", text.trim()),
        }
    }
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(&text).with_context(|| format!("{command} {pod}: not JSON: {text}"))
}

async fn placement(
    store: &SharedStore,
    pods: &[Pod],
    zones: &BTreeMap<String, String>,
) -> anyhow::Result<String> {
    let mut rows = Vec::new();
    for p in pods {
        let claims = store
            .claims_of(&Attachment {
                container_id: p.name.clone(),
                ifname: "eth0".into(),
            })
            .await?;
        for c in claims {
            rows.push(vec![
                p.name.clone(),
                p.node.clone(),
                zones.get(&p.node).cloned().unwrap_or_default(),
                c.pool.clone(),
                c.subnet.clone(),
                c.ip.to_string(),
                if c.borrowed {
                    "yes".into()
                } else {
                    String::new()
                },
            ]);
        }
    }
    Ok(crate::inspect::table(
        &[
            "POD", "NODE", "ZONE", "POOL", "SUBNET", "ADDRESS", "BORROWED",
        ],
        &rows,
    ))
}

/// Runs the demo.
///
/// # Errors
/// Any step that fails; the agents are stopped and the directory removed anyway.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let plugin = match &args.plugin {
        Some(p) => p.clone(),
        None => sibling_binary("atoll-ipam")?,
    };
    let me = std::env::current_exe()?;
    let dir = tempfile::Builder::new().prefix("atoll-demo-").tempdir()?;
    let db = dir.path().join("atoll.db");
    let store_addr = format!("embedded:{}", db.display());
    println!(
        "== atoll quick start in {} (store {store_addr})\n",
        dir.path().display()
    );

    let store = atoll_store::open_embedded(&store_addr).await?;
    println!("$ atoll apply -f {}", args.examples.display());
    print!(
        "{}",
        crate::apply::apply_path(&store, &args.examples).await?
    );

    let nodes = crate::apply::load_nodes(&store).await?;
    let zones: BTreeMap<String, String> = nodes
        .iter()
        .map(|n| {
            (
                n.metadata.name.clone(),
                n.metadata.labels.get("zone").cloned().unwrap_or_default(),
            )
        })
        .collect();
    anyhow::ensure!(
        !nodes.is_empty(),
        "{} holds no v1/Node",
        args.examples.display()
    );

    // One agent per node, each on its own socket, all on one store file.
    let mut agents = Agents { children: vec![] };
    let mut sockets = BTreeMap::new();
    for n in &nodes {
        let name = &n.metadata.name;
        let socket = dir.path().join(format!("{name}.sock"));
        let child = Command::new(&me)
            .args([
                "agent",
                "--node-name",
                name,
                "--store",
                &store_addr,
                "--socket",
            ])
            .arg(&socket)
            .env(
                "ATOLL_LOG",
                std::env::var("ATOLL_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting an agent")?;
        agents.children.push((name.clone(), child));
        sockets.insert(name.clone(), socket);
    }
    for ((_, child), socket) in agents.children.iter_mut().zip(sockets.values()) {
        wait_for_socket(socket, child)?;
    }
    println!("\nstarted {} agents, one per node\n", agents.children.len());

    let node_names: Vec<String> = nodes.iter().map(|n| n.metadata.name.clone()).collect();
    let mut pods: Vec<Pod> = Vec::new();
    let add = |pods: &mut Vec<Pod>, node: &str| -> anyhow::Result<()> {
        let name = format!("web-{}", pods.len() + 1);
        cni(&plugin, "ADD", &name, &sockets[node], "")?;
        pods.push(Pod {
            name,
            node: node.to_string(),
        });
        Ok(())
    };

    println!("== 1. shop/web is bound to zone1-web, zone2-web, zone3-web; one replica per node");
    for n in &node_names {
        add(&mut pods, n)?;
    }
    print!("{}", placement(&store, &pods, &zones).await?);

    println!("\n== 2. move zone2 to subnet-c: apply edited pools");
    let moves = args.examples.join("moves");
    println!("$ atoll apply -f {}", moves.display());
    print!("{}", crate::apply::apply_path(&store, &moves).await?);
    println!("new replicas on zone2 nodes land in subnet-c:");
    let first_new = pods.len();
    for n in node_names.iter().filter(|n| zones[*n] == "zone2") {
        add(&mut pods, n)?;
    }
    print!("{}", placement(&store, &pods[first_new..], &zones).await?);

    println!("\n== 3. fill zone3-web: when it is full it borrows free addresses of subnet-c");
    let first_new = pods.len();
    let zone3: Vec<String> = node_names
        .iter()
        .filter(|n| zones[*n] == "zone3")
        .cloned()
        .collect();
    let mut failure = None;
    for i in 0..16 {
        if let Err(e) = add(&mut pods, &zone3[i % zone3.len()]) {
            failure = Some(e);
            break;
        }
    }
    print!("{}", placement(&store, &pods[first_new..], &zones).await?);
    if let Some(e) = failure {
        println!("then subnet-c is full, and the next ADD fails with the reason:\n  {e}");
    }

    println!("\n== 4. DEL every replica, stop the agents");
    for p in &pods {
        cni(&plugin, "DEL", &p.name, &sockets[&p.node], "")?;
    }
    agents.stop();
    let left = store.list_claims(None).await?.len();
    println!(
        "{} replicas released, {left} addresses still held, agents stopped",
        pods.len()
    );
    anyhow::ensure!(left == 0, "{left} addresses still held after DEL");

    if args.keep {
        let kept = dir.keep();
        println!("kept {}", kept.display());
    }
    println!("\ndone in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
