//! `atoll get` and `atoll describe`: what is stored, with counters.
//!
//! Both read everything once into a [`View`]: the stored subnets, pools and
//! nodes, an [`Engine`] built from them, and every claim fed into it with
//! [`Engine::hold`], so the counters are those an agent would compute. A
//! stored resource that does not validate (written around `atoll apply`) is
//! set aside with its reason instead of hiding everything else: it shows up
//! with a `Valid=False` condition and no counters.
//!
//! Tables are shaped like kubectl's: upper-case headers, columns aligned by
//! spaces, no borders. `-o yaml` writes one document per resource (they can
//! be applied again; `status` is ignored on apply), `-o json` a JSON array.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use anyhow::Context;
use atoll_core::catalog::{CheckedPool, CheckedSubnet};
use atoll_core::error::describe_labels;
use atoll_core::resource::{Condition, IPPool, Node, NodeAffinity, Status, Subnet};
use atoll_core::selector::NodeRef;
use atoll_core::{Catalog, Engine, Usage};
use atoll_store::{Claim, SharedStore};
use serde::Serialize;

use crate::apply::{load_nodes, load_resources};
use crate::cli::{GetWhat, ObjectKind, Output};

/// The kind names [`Catalog::build`] uses in its refusals.
pub(crate) const SUBNET: &str = "Subnet";
/// See [`SUBNET`].
pub(crate) const POOL: &str = "IPPool";

/// Everything stored, checked, with an engine that holds every claim.
pub(crate) struct View {
    /// Where it was read from, for messages.
    pub store: String,
    /// Every stored subnet, valid or not, sorted by name.
    pub subnets: Vec<Subnet>,
    /// Every stored pool, valid or not, sorted by name.
    pub pools: Vec<IPPool>,
    /// Every stored node, sorted by name.
    pub nodes: Vec<Node>,
    /// Every claim, sorted by subnet then address.
    pub claims: Vec<Claim>,
    /// The stored resources that validate.
    pub catalog: Catalog,
    /// Refused resources, by (kind, name), with the reason.
    pub invalid: BTreeMap<(&'static str, String), String>,
    /// The engine, with every node registered and every claim held.
    pub engine: Engine,
}

impl View {
    /// Reads the store.
    ///
    /// # Errors
    /// The store's, or a stored document that does not decode.
    pub async fn load(store: &SharedStore) -> anyhow::Result<View> {
        let (mut subnets, mut pools) = load_resources(store).await?;
        let mut nodes = load_nodes(store).await?;
        let mut claims = store.list_claims(None).await.context("listing claims")?;
        subnets.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        pools.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        claims.sort_by(|a, b| (&a.subnet, a.ip).cmp(&(&b.subnet, b.ip)));

        let (catalog, invalid) = build_lenient(&subnets, &pools);
        let mut engine = Engine::new(catalog.clone());
        for n in &nodes {
            engine.upsert_node(n);
        }
        for c in &claims {
            engine.hold(c.ip, Some(&c.pool));
        }
        Ok(View {
            store: store.describe(),
            subnets,
            pools,
            nodes,
            claims,
            catalog,
            invalid,
            engine,
        })
    }

    /// The checked subnet of a name, if it is valid.
    pub fn checked_subnet(&self, name: &str) -> Option<(usize, &CheckedSubnet)> {
        let id = self.catalog.subnet_id(name)?;
        Some((id, &self.catalog.subnets()[id]))
    }

    /// The checked pool of a name, if it is valid.
    pub fn checked_pool(&self, name: &str) -> Option<(usize, &CheckedPool)> {
        let id = self.catalog.pool_id(name)?;
        Some((id, &self.catalog.pools()[id]))
    }

    /// Why a resource was refused, if it was.
    pub fn refusal(&self, kind: &'static str, name: &str) -> Option<&str> {
        self.invalid
            .get(&(kind, name.to_string()))
            .map(String::as_str)
    }

    fn subnet_usage(&self, name: &str) -> Option<Usage> {
        self.checked_subnet(name)
            .map(|(id, _)| self.engine.subnet_usage(id))
    }

    fn pool_usage(&self, name: &str) -> Option<Usage> {
        self.checked_pool(name)
            .map(|(id, _)| self.engine.pool_usage(id))
    }

    /// The valid, enabled pools whose affinity matches a node, in catalog order.
    fn serving(&self, node: &Node) -> Vec<&CheckedPool> {
        let r = node_ref(node);
        self.catalog
            .pools()
            .iter()
            .filter(|p| !p.disabled && p.affinity.matches(&r))
            .collect()
    }

    /// Names of the subnets of some pools, deduplicated, in order.
    fn subnets_of(&self, pools: &[&CheckedPool]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in pools {
            let s = &self.catalog.subnets()[p.subnet].name;
            if !out.contains(s) {
                out.push(s.clone());
            }
        }
        out
    }
}

/// Builds a catalog of the valid resources: refused ones are set aside, and
/// the rest is checked again, until what is left validates.
fn build_lenient(
    subnets: &[Subnet],
    pools: &[IPPool],
) -> (Catalog, BTreeMap<(&'static str, String), String>) {
    let mut invalid: BTreeMap<(&'static str, String), String> = BTreeMap::new();
    loop {
        let keep_s: Vec<Subnet> = subnets
            .iter()
            .filter(|s| !invalid.contains_key(&(SUBNET, s.metadata.name.clone())))
            .cloned()
            .collect();
        let keep_p: Vec<IPPool> = pools
            .iter()
            .filter(|p| !invalid.contains_key(&(POOL, p.metadata.name.clone())))
            .cloned()
            .collect();
        let errors = match Catalog::build(keep_s, keep_p) {
            Ok(catalog) => return (catalog, invalid),
            Err(e) => e,
        };
        let before = invalid.len();
        for e in errors.0 {
            invalid
                .entry((e.kind, e.name.clone()))
                .or_insert_with(|| format!("{}: {}", e.field, e.reason));
        }
        if invalid.len() == before {
            // Every refusal names something already set aside: give up on
            // the whole set rather than loop.
            for s in subnets {
                invalid
                    .entry((SUBNET, s.metadata.name.clone()))
                    .or_insert_with(|| "could not be validated".into());
            }
            for p in pools {
                invalid
                    .entry((POOL, p.metadata.name.clone()))
                    .or_insert_with(|| "could not be validated".into());
            }
            return (Catalog::default(), invalid);
        }
    }
}

fn node_ref(node: &Node) -> NodeRef<'_> {
    NodeRef {
        name: &node.metadata.name,
        uid: node.metadata.uid.as_deref(),
        labels: &node.metadata.labels,
    }
}

/// `atoll get`.
///
/// # Errors
/// The store's.
pub async fn get(store: &SharedStore, what: GetWhat, output: Output) -> anyhow::Result<String> {
    let view = View::load(store).await?;
    match (what, output) {
        (GetWhat::Subnets, Output::Table) => Ok(subnets_table(&view)),
        (GetWhat::Pools, Output::Table) => Ok(pools_table(&view)),
        (GetWhat::Nodes, Output::Table) => Ok(nodes_table(&view)),
        (GetWhat::Allocations, Output::Table) => Ok(allocations_table(&view)),
        (GetWhat::Subnets, _) => {
            let items: Vec<Subnet> = view
                .subnets
                .iter()
                .map(|s| subnet_with_status(&view, s))
                .collect();
            documents(&items, output)
        }
        (GetWhat::Pools, _) => {
            let items: Vec<IPPool> = view
                .pools
                .iter()
                .map(|p| pool_with_status(&view, p))
                .collect();
            documents(&items, output)
        }
        (GetWhat::Nodes, _) => {
            let items: Vec<NodeDoc> = view.nodes.iter().map(|n| node_doc(&view, n)).collect();
            documents(&items, output)
        }
        (GetWhat::Allocations, Output::Json) => {
            Ok(serde_json::to_string_pretty(&view.claims)? + "\n")
        }
        (GetWhat::Allocations, _) => Ok(serde_norway::to_string(&view.claims)?),
    }
}

/// One YAML document per item, or a JSON array.
fn documents<T: Serialize>(items: &[T], output: Output) -> anyhow::Result<String> {
    if output == Output::Json {
        return Ok(serde_json::to_string_pretty(items)? + "\n");
    }
    let mut out = String::new();
    for item in items {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(item)?);
    }
    Ok(out)
}

fn status_of(usage: Option<Usage>, refusal: Option<&str>) -> Status {
    let usage = usage.unwrap_or_default();
    let clamp = |v: u128| u64::try_from(v).unwrap_or(u64::MAX);
    let condition = match refusal {
        None => Condition {
            type_: "Valid".into(),
            status: "True".into(),
            reason: "Accepted".into(),
            message: String::new(),
        },
        Some(why) => Condition {
            type_: "Valid".into(),
            status: "False".into(),
            reason: "Invalid".into(),
            message: why.to_string(),
        },
    };
    Status {
        total: clamp(usage.total),
        allocated: clamp(usage.allocated),
        free: clamp(usage.free),
        borrowed: clamp(usage.borrowed),
        conditions: vec![condition],
    }
}

fn subnet_with_status(view: &View, s: &Subnet) -> Subnet {
    let name = &s.metadata.name;
    let mut s = s.clone();
    s.status = Some(status_of(
        view.subnet_usage(name),
        view.refusal(SUBNET, name),
    ));
    s
}

fn pool_with_status(view: &View, p: &IPPool) -> IPPool {
    let name = &p.metadata.name;
    let mut p = p.clone();
    p.status = Some(status_of(view.pool_usage(name), view.refusal(POOL, name)));
    p
}

/// A `v1/Node` as `get -o yaml|json` writes it: what atoll stores, and the
/// pools and subnets serving it under `status`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeDoc {
    api_version: &'static str,
    kind: &'static str,
    metadata: atoll_core::resource::ObjectMeta,
    status: NodeStatus,
}

#[derive(Debug, Serialize)]
struct NodeStatus {
    pools: Vec<String>,
    subnets: Vec<String>,
}

fn node_doc(view: &View, n: &Node) -> NodeDoc {
    let serving = view.serving(n);
    NodeDoc {
        api_version: "v1",
        kind: "Node",
        metadata: n.metadata.clone(),
        status: NodeStatus {
            pools: serving.iter().map(|p| p.name.clone()).collect(),
            subnets: view.subnets_of(&serving),
        },
    }
}

/// Aligns rows under upper-case headers, kubectl style.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("   ");
            }
            line.push_str(cell);
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn none_if_empty(items: &[String]) -> String {
    if items.is_empty() {
        "<none>".into()
    } else {
        items.join(",")
    }
}

fn counters(usage: Option<Usage>) -> [String; 4] {
    match usage {
        Some(u) => [u.total, u.allocated, u.free, u.borrowed].map(|v| v.to_string()),
        None => ["-", "-", "-", "-"].map(String::from),
    }
}

fn subnets_table(view: &View) -> String {
    if view.subnets.is_empty() {
        return format!("No subnets found in {}.\n", view.store);
    }
    let rows: Vec<Vec<String>> = view
        .subnets
        .iter()
        .map(|s| {
            let name = &s.metadata.name;
            let pools: Vec<String> = view
                .pools
                .iter()
                .filter(|p| &p.spec.subnet == name)
                .map(|p| p.metadata.name.clone())
                .collect();
            let [total, used, free, borrowed] = counters(view.subnet_usage(name));
            vec![
                name.clone(),
                s.spec.cidr.clone(),
                s.spec.gateway.map_or("<none>".into(), |g| g.to_string()),
                total,
                used,
                free,
                borrowed,
                none_if_empty(&pools),
            ]
        })
        .collect();
    table(
        &[
            "NAME", "CIDR", "GATEWAY", "TOTAL", "USED", "FREE", "BORROWED", "POOLS",
        ],
        &rows,
    )
}

fn pools_table(view: &View) -> String {
    if view.pools.is_empty() {
        return format!("No pools found in {}.\n", view.store);
    }
    let rows: Vec<Vec<String>> = view
        .pools
        .iter()
        .map(|p| {
            let name = &p.metadata.name;
            let [total, used, free, borrowed] = counters(view.pool_usage(name));
            vec![
                name.clone(),
                p.spec.subnet.clone(),
                none_if_empty(&p.spec.ips),
                total,
                used,
                free,
                borrowed,
                p.spec.default.to_string(),
                affinity_short(p.spec.node_affinity.as_ref()),
            ]
        })
        .collect();
    table(
        &[
            "NAME", "SUBNET", "IPS", "TOTAL", "USED", "FREE", "BORROWED", "DEFAULT", "AFFINITY",
        ],
        &rows,
    )
}

fn nodes_table(view: &View) -> String {
    if view.nodes.is_empty() {
        return format!("No nodes found in {}.\n", view.store);
    }
    let rows: Vec<Vec<String>> = view
        .nodes
        .iter()
        .map(|n| {
            let serving = view.serving(n);
            let pools: Vec<String> = serving.iter().map(|p| p.name.clone()).collect();
            let labels = if n.metadata.labels.is_empty() {
                "<none>".into()
            } else {
                describe_labels(&n.metadata.labels)
            };
            vec![
                n.metadata.name.clone(),
                labels,
                none_if_empty(&pools),
                none_if_empty(&view.subnets_of(&serving)),
            ]
        })
        .collect();
    table(&["NAME", "LABELS", "POOLS", "SUBNETS"], &rows)
}

fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s.to_string()
    }
}

fn allocations_table(view: &View) -> String {
    if view.claims.is_empty() {
        return format!("No allocations found in {}.\n", view.store);
    }
    let rows: Vec<Vec<String>> = view
        .claims
        .iter()
        .map(|c| {
            vec![
                c.ip.to_string(),
                c.subnet.clone(),
                c.pool.clone(),
                c.node.clone(),
                c.attachment.container_id.clone(),
                c.attachment.ifname.clone(),
                or_none(&c.app),
                c.borrowed.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "ADDRESS",
            "SUBNET",
            "POOL",
            "NODE",
            "CONTAINER",
            "IFNAME",
            "APP",
            "BORROWED",
        ],
        &rows,
    )
}

/// A node affinity in one short line: `nodes: a,b`, `zone in (z1,z2)`,
/// `zone=z1, rack`, terms joined by ` or `; `<all>` when every node matches.
pub(crate) fn affinity_short(affinity: Option<&NodeAffinity>) -> String {
    let Some(a) = affinity else {
        return "<all>".into();
    };
    let mut parts = Vec::new();
    if !a.node_names.is_empty() {
        parts.push(format!("nodes: {}", a.node_names.join(",")));
    }
    for term in &a.node_selector_terms {
        let mut reqs: Vec<String> = term
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for e in &term.match_expressions {
            let values = e.values.join(",");
            reqs.push(match e.operator.as_str() {
                "In" => format!("{} in ({values})", e.key),
                "NotIn" => format!("{} notin ({values})", e.key),
                "Exists" => e.key.clone(),
                "DoesNotExist" => format!("!{}", e.key),
                other => format!("{} {other} ({values})", e.key),
            });
        }
        parts.push(reqs.join(", "));
    }
    if parts.is_empty() {
        "<all>".into()
    } else {
        parts.join(" or ")
    }
}

/// `Key:   value` lines with the values aligned, kubectl describe style.
fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0) + 2;
    let mut out = String::new();
    for (k, v) in pairs {
        let key = format!("{k}:");
        out.push_str(format!("{key:<width$}{v}").trim_end());
        out.push('\n');
    }
    out
}

/// Indents every line of a block.
fn indent(block: &str) -> String {
    block.lines().map(|l| format!("  {l}\n")).collect()
}

fn usage_line(usage: Option<Usage>) -> String {
    match usage {
        Some(u) => format!(
            "total {}, used {}, free {}, borrowed {}",
            u.total, u.allocated, u.free, u.borrowed
        ),
        None => "- (not valid)".into(),
    }
}

fn validity(refusal: Option<&str>) -> String {
    match refusal {
        None => "True".into(),
        Some(why) => format!("False: {why}"),
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "<none>".into()
    } else {
        items.join(", ")
    }
}

/// `atoll describe`.
///
/// # Errors
/// The store's, or an unknown name.
pub async fn describe(store: &SharedStore, kind: ObjectKind, name: &str) -> anyhow::Result<String> {
    let view = View::load(store).await?;
    let out = match kind {
        ObjectKind::Pool => describe_pool(&view, name),
        ObjectKind::Subnet => describe_subnet(&view, name),
        ObjectKind::Node => describe_node(&view, name),
    };
    out?.ok_or_else(|| anyhow::anyhow!("{} {name:?} not found in {}", kind_name(kind), view.store))
}

/// The lower-case name of a kind, for messages.
pub(crate) fn kind_name(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Pool => "pool",
        ObjectKind::Subnet => "subnet",
        ObjectKind::Node => "node",
    }
}

fn holders_table(claims: &[&Claim], with_pool: bool) -> String {
    let rows: Vec<Vec<String>> = claims
        .iter()
        .map(|c| {
            let mut row = vec![c.ip.to_string()];
            if with_pool {
                row.extend([c.subnet.clone(), c.pool.clone()]);
            }
            row.extend([
                c.node.clone(),
                c.attachment.container_id.clone(),
                c.attachment.ifname.clone(),
                or_none(&c.app),
                c.borrowed.to_string(),
            ]);
            row
        })
        .collect();
    let mut headers = vec!["ADDRESS"];
    if with_pool {
        headers.extend(["SUBNET", "POOL"]);
    }
    headers.extend(["NODE", "CONTAINER", "IFNAME", "APP", "BORROWED"]);
    indent(&table(&headers, &rows))
}

fn describe_pool(view: &View, name: &str) -> anyhow::Result<Option<String>> {
    let Some(p) = view.pools.iter().find(|p| p.metadata.name == name) else {
        return Ok(None);
    };
    let checked = view.checked_pool(name);
    let subnet = match view.checked_subnet(&p.spec.subnet) {
        Some((_, s)) => format!("{} ({})", s.name, s.cidr),
        None => format!("{} (not found or not valid)", p.spec.subnet),
    };
    let borrowing = match &p.spec.auto_extend {
        Some(a) if a.enabled => format!("enabled, step {}", a.step),
        _ => "disabled".into(),
    };
    let allocatable = checked.map_or_else(
        || "-".into(),
        |(_, c)| list_or_none(&c.allocatable.to_strings()),
    );
    let mut out = fields(&[
        ("Name", name.to_string()),
        ("Subnet", subnet),
        ("IPs", list_or_none(&p.spec.ips)),
        ("Exclude IPs", list_or_none(&p.spec.exclude_ips)),
        ("Allocatable", allocatable),
        ("Affinity", affinity_short(p.spec.node_affinity.as_ref())),
        ("Auto-extend", borrowing),
        ("Default", p.spec.default.to_string()),
        ("Disabled", p.spec.disabled.to_string()),
        ("Valid", validity(view.refusal(POOL, name))),
        ("Counters", usage_line(view.pool_usage(name))),
    ]);

    // Which stored nodes the pool serves, and why not the others.
    let matched = checked
        .map(|(id, _)| view.engine.nodes_served_by(id))
        .unwrap_or_default();
    let mut serves = Vec::new();
    let mut not_served = Vec::new();
    for n in &view.nodes {
        let node = &n.metadata.name;
        let labels = describe_labels(&n.metadata.labels);
        let affinity_ok = matched.contains(node);
        if checked.is_none() {
            not_served.push(format!("{node}: the pool is not valid"));
        } else if p.spec.disabled {
            let m = if affinity_ok {
                "affinity matches"
            } else {
                "affinity does not match either"
            };
            not_served.push(format!("{node}: the pool is disabled ({m})"));
        } else if affinity_ok {
            serves.push(format!("{node} ({labels})"));
        } else {
            not_served.push(format!("{node}: affinity did not match ({labels})"));
        }
    }
    writeln!(out, "Serves nodes ({}):", serves.len())?;
    for s in &serves {
        writeln!(out, "  {s}")?;
    }
    writeln!(out, "Does not serve ({}):", not_served.len())?;
    for s in &not_served {
        writeln!(out, "  {s}")?;
    }

    let holders: Vec<&Claim> = view.claims.iter().filter(|c| c.pool == name).collect();
    writeln!(out, "Holders ({}):", holders.len())?;
    if !holders.is_empty() {
        out.push_str(&holders_table(&holders, false));
    }
    Ok(Some(out))
}

fn describe_subnet(view: &View, name: &str) -> anyhow::Result<Option<String>> {
    let Some(s) = view.subnets.iter().find(|s| s.metadata.name == name) else {
        return Ok(None);
    };
    let checked = view.checked_subnet(name);
    let reserved = checked.map_or_else(
        || "-".into(),
        |(_, c)| list_or_none(&c.reserved.to_strings()),
    );
    let routes: Vec<String> = s
        .spec
        .routes
        .iter()
        .map(|r| match r.gw {
            Some(gw) => format!("{} via {gw}", r.dst),
            None => format!("{} via the gateway", r.dst),
        })
        .collect();
    let dns = s.spec.dns.as_ref().map_or_else(
        || "<none>".into(),
        |d| {
            let mut parts = vec![format!("nameservers {}", list_or_none(&d.nameservers))];
            if let Some(domain) = &d.domain {
                parts.push(format!("domain {domain}"));
            }
            if !d.search.is_empty() {
                parts.push(format!("search {}", d.search.join(",")));
            }
            parts.join("; ")
        },
    );
    let lendable = checked.map_or_else(
        || "-".into(),
        |(id, _)| {
            format!(
                "{} (free, in no pool: what full pools may borrow)",
                view.engine.lendable(id)
            )
        },
    );
    let holders = view.claims.iter().filter(|c| c.subnet == name).count();
    let mut out = fields(&[
        ("Name", name.to_string()),
        ("CIDR", s.spec.cidr.clone()),
        (
            "Gateway",
            s.spec.gateway.map_or("<none>".into(), |g| g.to_string()),
        ),
        ("Reserved", reserved),
        ("Routes", list_or_none(&routes)),
        ("DNS", dns),
        ("Valid", validity(view.refusal(SUBNET, name))),
        ("Counters", usage_line(view.subnet_usage(name))),
        ("Lendable", lendable),
        ("Holders", holders.to_string()),
    ]);

    let pools: Vec<&IPPool> = view
        .pools
        .iter()
        .filter(|p| p.spec.subnet == name)
        .collect();
    writeln!(out, "Pools ({}):", pools.len())?;
    if !pools.is_empty() {
        let rows: Vec<Vec<String>> = pools
            .iter()
            .map(|p| {
                let pname = &p.metadata.name;
                let [total, used, free, borrowed] = counters(view.pool_usage(pname));
                vec![
                    pname.clone(),
                    none_if_empty(&p.spec.ips),
                    total,
                    used,
                    free,
                    borrowed,
                    affinity_short(p.spec.node_affinity.as_ref()),
                ]
            })
            .collect();
        out.push_str(&indent(&table(
            &[
                "NAME", "IPS", "TOTAL", "USED", "FREE", "BORROWED", "AFFINITY",
            ],
            &rows,
        )));
    }
    Ok(Some(out))
}

fn describe_node(view: &View, name: &str) -> anyhow::Result<Option<String>> {
    let node = view.nodes.iter().find(|n| n.metadata.name == name);
    let held: Vec<&Claim> = view.claims.iter().filter(|c| c.node == name).collect();
    let Some(node) = node else {
        if held.is_empty() {
            return Ok(None);
        }
        // Claims name a node that was never registered or was deleted.
        let mut out = fields(&[
            ("Name", name.to_string()),
            (
                "Labels",
                "<unknown: no v1/Node stored; start its agent or apply it>".into(),
            ),
        ]);
        writeln!(out, "Holds ({}):", held.len())?;
        out.push_str(&holders_table(&held, true));
        return Ok(Some(out));
    };

    let serving = view.serving(node);
    let labels = describe_labels(&node.metadata.labels);
    let mut out = fields(&[
        ("Name", name.to_string()),
        (
            "UID",
            node.metadata.uid.clone().unwrap_or_else(|| "<none>".into()),
        ),
        ("Labels", labels),
        ("Subnets", list_or_none(&view.subnets_of(&serving))),
    ]);

    writeln!(out, "Served by ({}, in order):", serving.len())?;
    if serving.is_empty() {
        writeln!(
            out,
            "  no pool serves this node: it can get no address (reasons below)"
        )?;
    }
    for p in &serving {
        let subnet = &view.catalog.subnets()[p.subnet].name;
        let u = view
            .catalog
            .pool_id(&p.name)
            .map(|id| view.engine.pool_usage(id))
            .unwrap_or_default();
        writeln!(
            out,
            "  {}  subnet {subnet}, {} free of {}",
            p.name, u.free, u.total
        )?;
    }

    let r = node_ref(node);
    let mut why_not = Vec::new();
    for p in &view.pools {
        let pname = &p.metadata.name;
        let affinity = affinity_short(p.spec.node_affinity.as_ref());
        match view.checked_pool(pname) {
            None => why_not.push(format!(
                "{pname}: not valid: {}",
                view.refusal(POOL, pname).unwrap_or("unknown reason")
            )),
            Some((_, c)) if c.disabled => why_not.push(format!("{pname}: disabled")),
            Some((_, c)) if !c.affinity.matches(&r) => {
                why_not.push(format!("{pname}: affinity did not match ({affinity})"))
            }
            Some(_) => {}
        }
    }
    writeln!(out, "Not served by ({}):", why_not.len())?;
    for w in &why_not {
        writeln!(out, "  {w}")?;
    }

    writeln!(out, "Holds ({}):", held.len())?;
    if !held.is_empty() {
        out.push_str(&holders_table(&held, true));
    }
    Ok(Some(out))
}

/// Writes an address with its holder for messages: `10.0.0.5 (subnet a,
/// pool p) held by ctr/eth0 on node n1`.
pub(crate) fn describe_claim(c: &Claim) -> String {
    let borrowed = if c.borrowed { ", borrowed" } else { "" };
    format!(
        "{} (subnet {}, pool {}{borrowed}) held by {} on node {}",
        c.ip, c.subnet, c.pool, c.attachment, c.node
    )
}

/// Returns true if and only if the text is an address (not a container ID).
pub(crate) fn parse_ip(text: &str) -> Option<IpAddr> {
    text.trim().parse().ok()
}
