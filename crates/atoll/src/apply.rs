//! `atoll apply -f`: validate manifests against what is stored, then write.
//!
//! Subnets and pools are validated as the whole set they will form (stored
//! resources with the new ones laid over them by name) and written in one
//! batch guarded by the resource generation: a concurrent apply makes this
//! one re-read and re-validate. Nodes, namespaces and workloads are written
//! one by one. After a pool edit, the nodes that moved and the running
//! holders left in a subnet their node no longer belongs to are reported.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use atoll_core::drift::{drift, HeldRef};
use atoll_core::manifest::{parse_manifests, Manifest};
use atoll_core::resource::{IPPool, Node, Subnet};
use atoll_core::Catalog;
use atoll_store::{workload_key, Change, Kind, SharedStore, StoreError};

/// Reads every manifest of a file, a directory (`*.yaml`, `*.yml`, `*.json`,
/// sorted by name) or stdin (`-`).
///
/// # Errors
/// An unreadable file, or a document that does not parse, naming the file.
pub fn read_manifests(path: &Path) -> anyhow::Result<Vec<Manifest>> {
    let mut files = Vec::new();
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).context("reading stdin")?;
        return parse_manifests(&text).context("stdin");
    }
    if path.is_dir() {
        for entry in
            std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))?
        {
            let p = entry?.path();
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or_default();
            if matches!(ext, "yaml" | "yml" | "json") {
                files.push(p);
            }
        }
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut out = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        out.extend(parse_manifests(&text).with_context(|| f.display().to_string())?);
    }
    Ok(out)
}

/// Loads the stored subnets and pools.
///
/// # Errors
/// The store's, or a stored document that does not decode.
pub async fn load_resources(store: &SharedStore) -> anyhow::Result<(Vec<Subnet>, Vec<IPPool>)> {
    let mut subnets = Vec::new();
    for o in store.list(Kind::Subnet).await? {
        subnets.push(
            serde_json::from_value(o.value).with_context(|| format!("stored subnet {}", o.key))?,
        );
    }
    let mut pools = Vec::new();
    for o in store.list(Kind::IPPool).await? {
        pools.push(
            serde_json::from_value(o.value).with_context(|| format!("stored pool {}", o.key))?,
        );
    }
    Ok((subnets, pools))
}

/// Loads the stored nodes.
///
/// # Errors
/// The store's, or a stored document that does not decode.
pub async fn load_nodes(store: &SharedStore) -> anyhow::Result<Vec<Node>> {
    let mut nodes = Vec::new();
    for o in store.list(Kind::Node).await? {
        nodes.push(
            serde_json::from_value(o.value).with_context(|| format!("stored node {}", o.key))?,
        );
    }
    Ok(nodes)
}

/// Applies the manifests at `path`. Returns the report to print.
///
/// # Errors
/// Invalid resources (every refusal, by resource, field and reason), or the store's.
pub async fn apply_path(store: &SharedStore, path: &Path) -> anyhow::Result<String> {
    let manifests = read_manifests(path)?;
    apply_manifests(store, manifests).await
}

/// Applies parsed manifests. Returns the report to print.
///
/// # Errors
/// Invalid resources, or the store's.
pub async fn apply_manifests(
    store: &SharedStore,
    manifests: Vec<Manifest>,
) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut subnets_in = Vec::new();
    let mut pools_in = Vec::new();
    // Nodes, namespaces and workloads go in the same guarded batch, so that
    // the generation moves and running agents pick them up.
    let mut object_changes = Vec::new();
    let mut object_lines = Vec::new();
    for m in manifests {
        match m {
            Manifest::Subnet(s) => subnets_in.push(s),
            Manifest::IPPool(p) => pools_in.push(p),
            Manifest::Node(n) => {
                let key = n.metadata.name.clone();
                anyhow::ensure!(!key.is_empty(), "Node without metadata.name");
                object_changes.push(Change::Put {
                    kind: Kind::Node,
                    key: key.clone(),
                    value: serde_json::to_value(&n)?,
                });
                object_lines.push(format!("node/{key} configured"));
            }
            Manifest::Namespace(n) => {
                let key = n.metadata.name.clone();
                anyhow::ensure!(!key.is_empty(), "Namespace without metadata.name");
                object_changes.push(Change::Put {
                    kind: Kind::Namespace,
                    key: key.clone(),
                    value: serde_json::to_value(&n)?,
                });
                object_lines.push(format!("namespace/{key} configured"));
            }
            Manifest::Workload(mut w) => {
                anyhow::ensure!(
                    !w.metadata.name.is_empty(),
                    "{} without metadata.name",
                    w.kind
                );
                let ns = w
                    .metadata
                    .namespace
                    .get_or_insert_with(|| "default".into())
                    .clone();
                let key = workload_key(&ns, &w.kind, &w.metadata.name);
                object_changes.push(Change::Put {
                    kind: Kind::Workload,
                    key,
                    value: serde_json::to_value(&w)?,
                });
                object_lines.push(format!("{}/{} configured", w.kind.to_lowercase(), w.key()));
            }
            Manifest::Other { kind, name, .. } => {
                writeln!(
                    out,
                    "{}/{name} skipped: atoll does not use this kind",
                    kind.to_lowercase()
                )?;
            }
        }
    }
    if subnets_in.is_empty() && pools_in.is_empty() && object_changes.is_empty() {
        return Ok(out);
    }

    for _attempt in 0..5 {
        let generation = store.generation().await?;
        let (stored_subnets, stored_pools) = load_resources(store).await?;
        let before = Catalog::build(stored_subnets.clone(), stored_pools.clone()).ok();

        let mut subnets: BTreeMap<String, Subnet> = stored_subnets
            .into_iter()
            .map(|s| (s.metadata.name.clone(), s))
            .collect();
        let mut pools: BTreeMap<String, IPPool> = stored_pools
            .into_iter()
            .map(|p| (p.metadata.name.clone(), p))
            .collect();
        let mut changes = object_changes.clone();
        let mut lines = object_lines.clone();
        lay_over(&subnets_in, &mut subnets, &mut lines, &mut changes)?;
        lay_over(&pools_in, &mut pools, &mut lines, &mut changes)?;

        let after = Catalog::build(
            subnets.into_values().collect(),
            pools.into_values().collect(),
        )
        .map_err(|e| anyhow::anyhow!("refused, nothing written: {e}"))?;
        if !changes.is_empty() {
            match store.apply(&changes, generation).await {
                Ok(_) => {}
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        for l in lines {
            writeln!(out, "{l}")?;
        }
        if let Some(before) = before {
            out.push_str(&drift_report(store, &before, &after).await?);
        }
        return Ok(out);
    }
    anyhow::bail!("another apply kept changing the resources; nothing written, try again")
}

/// What `apply` needs of a subnet or a pool.
trait Resource: Clone + serde::Serialize {
    const KIND: Kind;
    /// `subnet` or `ippool`, for the report.
    const LABEL: &'static str;
    fn name(&self) -> &str;
    /// Forgets the status: `apply` writes what the operator asks for.
    fn clear_status(&mut self);
    /// Returns true if and only if applying `self` over `old` changes nothing.
    fn same_as(&self, old: &Self) -> bool;
}

/// Subnets and pools read the same way: both have `metadata`, `spec` and `status`.
macro_rules! resource {
    ($type:ty, $kind:expr, $label:literal) => {
        impl Resource for $type {
            const KIND: Kind = $kind;
            const LABEL: &'static str = $label;
            fn name(&self) -> &str {
                &self.metadata.name
            }
            fn clear_status(&mut self) {
                self.status = None;
            }
            fn same_as(&self, old: &Self) -> bool {
                old.spec == self.spec && old.metadata.labels == self.metadata.labels
            }
        }
    };
}

resource!(Subnet, Kind::Subnet, "subnet");
resource!(IPPool, Kind::IPPool, "ippool");

/// Lays the incoming resources over the stored ones by name, recording for
/// each the report line and, unless unchanged, the write.
fn lay_over<R: Resource>(
    incoming: &[R],
    stored: &mut BTreeMap<String, R>,
    lines: &mut Vec<String>,
    changes: &mut Vec<Change>,
) -> anyhow::Result<()> {
    for r in incoming {
        let mut r = r.clone();
        r.clear_status();
        let name = r.name().to_string();
        let verb = match stored.get(&name) {
            Some(old) if r.same_as(old) => "unchanged",
            Some(_) => "configured",
            None => "created",
        };
        lines.push(format!("{}/{name} {verb}", R::LABEL));
        if verb != "unchanged" {
            changes.push(Change::Put {
                kind: R::KIND,
                key: name.clone(),
                value: serde_json::to_value(&r)?,
            });
        }
        stored.insert(name, r);
    }
    Ok(())
}

async fn drift_report(
    store: &SharedStore,
    before: &Catalog,
    after: &Catalog,
) -> anyhow::Result<String> {
    let nodes = load_nodes(store).await?;
    let claims = store.list_claims(None).await?;
    let holders: Vec<String> = claims.iter().map(|c| c.attachment.to_string()).collect();
    let held: Vec<HeldRef> = claims
        .iter()
        .zip(&holders)
        .map(|(c, h)| HeldRef {
            ip: c.ip,
            holder: h,
            node: &c.node,
        })
        .collect();
    let report = drift(before, after, &nodes, &held);
    let mut out = String::new();
    for m in &report.moved {
        writeln!(
            out,
            "node/{} now served by [{}] (was [{}])",
            m.node,
            m.after.join(", "),
            m.before.join(", ")
        )?;
    }
    for d in &report.drifted {
        writeln!(
            out,
            "drift: {} on node/{} holds {} in subnet {}; the node now belongs to [{}]: restart it to move it",
            d.holder,
            d.node,
            d.ip,
            d.subnet.as_deref().unwrap_or("(none)"),
            d.node_subnets.join(", ")
        )?;
    }
    Ok(out)
}
