//! Moving nodes between subnets (SPEC section 2, point 5).
//!
//! Moving a node is an edit of pools' node affinity. Given the catalog
//! before and after an edit, [`drift`] lists the nodes whose serving pools
//! changed and the held addresses that now sit in a subnet their node no
//! longer belongs to, so that an operator can roll those pods.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::catalog::Catalog;
use crate::resource::Node;
use crate::selector::NodeRef;

/// A node whose serving pools changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMove {
    /// Node name.
    pub node: String,
    /// Pools that served it before, sorted.
    pub before: Vec<String>,
    /// Pools that serve it after, sorted.
    pub after: Vec<String>,
}

/// A held address outside every subnet its node belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drifted {
    /// The address.
    pub ip: IpAddr,
    /// Who holds it (container and interface).
    pub holder: String,
    /// The node of the holder.
    pub node: String,
    /// The subnet of the address, if any.
    pub subnet: Option<String>,
    /// The subnets the node belongs to now, sorted.
    pub node_subnets: Vec<String>,
}

/// A held address, as drift needs it.
#[derive(Debug, Clone, Copy)]
pub struct HeldRef<'a> {
    /// The address.
    pub ip: IpAddr,
    /// The holder, for the report.
    pub holder: &'a str,
    /// The node of the holder.
    pub node: &'a str,
}

/// What an edit changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DriftReport {
    /// Nodes whose pools changed, by name.
    pub moved: Vec<NodeMove>,
    /// Held addresses that drifted, in input order.
    pub drifted: Vec<Drifted>,
}

fn serving(cat: &Catalog, node: &Node) -> (Vec<String>, BTreeSet<String>) {
    let r = NodeRef {
        name: &node.metadata.name,
        uid: node.metadata.uid.as_deref(),
        labels: &node.metadata.labels,
    };
    let mut pools = Vec::new();
    let mut subnets = BTreeSet::new();
    for p in cat.pools() {
        if !p.disabled && p.affinity.matches(&r) {
            pools.push(p.name.clone());
            subnets.insert(cat.subnets()[p.subnet].name.clone());
        }
    }
    pools.sort();
    (pools, subnets)
}

/// Compares two catalogs for the given nodes and held addresses.
pub fn drift(
    before: &Catalog,
    after: &Catalog,
    nodes: &[Node],
    held: &[HeldRef<'_>],
) -> DriftReport {
    let mut report = DriftReport::default();
    let mut subnets_after = std::collections::HashMap::new();
    for n in nodes {
        let (b, _) = serving(before, n);
        let (a, subnets) = serving(after, n);
        if a != b {
            report.moved.push(NodeMove {
                node: n.metadata.name.clone(),
                before: b,
                after: a,
            });
        }
        subnets_after.insert(n.metadata.name.as_str(), subnets);
    }
    report.moved.sort_by(|x, y| x.node.cmp(&y.node));

    for h in held {
        let Some(node_subnets) = subnets_after.get(h.node) else {
            continue;
        };
        let subnet = after
            .subnet_of(h.ip)
            .map(|s| after.subnets()[s].name.clone());
        if subnet.as_ref().is_some_and(|s| node_subnets.contains(s)) {
            continue;
        }
        report.drifted.push(Drifted {
            ip: h.ip,
            holder: h.holder.to_string(),
            node: h.node.to_string(),
            subnet,
            node_subnets: node_subnets.iter().cloned().collect(),
        });
    }
    report
}
