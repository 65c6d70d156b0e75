//! Validation, and the checked form of subnets and pools.
//!
//! [`Catalog::build`] is the one gate every `Subnet` and `IPPool` passes
//! before it takes effect. It canonicalises (ranges parsed and merged,
//! reserved addresses computed, selectors compiled) and refuses, naming the
//! resource, the field and the reason: a malformed range, a pool outside its
//! subnet, an unknown subnet, overlapping pools or subnets, mixed address
//! families, a gateway outside its subnet, a malformed selector. The
//! allocator only ever sees a valid catalog.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use crate::range::{Family, IpRange};
use crate::rangeset::RangeSet;
use crate::resource::{Dns, IPPool, Route, Subnet};
use crate::selector::Affinity;

/// Index of a subnet in a [`Catalog`].
pub type SubnetId = usize;
/// Index of a pool in a [`Catalog`].
pub type PoolId = usize;

/// One refusal: which resource, which field, why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}/{name}: {field}: {reason}")]
pub struct Invalid {
    /// `Subnet` or `IPPool`.
    pub kind: &'static str,
    /// Resource name.
    pub name: String,
    /// Field path, such as `spec.ips[1]`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

/// Every refusal found in one set of resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<Invalid>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        write!(f, "{}", parts.join("; "))
    }
}

impl std::error::Error for ValidationErrors {}

/// A checked subnet.
#[derive(Debug, Clone)]
pub struct CheckedSubnet {
    /// Name.
    pub name: String,
    /// UID, when the store gave one.
    pub uid: Option<String>,
    /// Family of the network.
    pub family: Family,
    /// The network.
    pub cidr: IpRange,
    /// Prefix length of the network.
    pub prefix_len: u8,
    /// Gateway.
    pub gateway: Option<IpAddr>,
    /// Never allocated: network, IPv4 broadcast, gateway, `excludeIPs`.
    pub reserved: RangeSet,
    /// `cidr` minus `reserved`.
    pub allocatable: RangeSet,
    /// Routes for the CNI result.
    pub routes: Vec<Route>,
    /// DNS for the CNI result.
    pub dns: Option<Dns>,
    /// The resource as given.
    pub resource: Subnet,
}

/// A checked pool.
#[derive(Debug, Clone)]
pub struct CheckedPool {
    /// Name.
    pub name: String,
    /// UID, when the store gave one.
    pub uid: Option<String>,
    /// The subnet the pool is cut from.
    pub subnet: SubnetId,
    /// Family of every address of the pool.
    pub family: Family,
    /// `spec.ips`, merged.
    pub ips: RangeSet,
    /// `ips` minus the pool's and the subnet's excluded and reserved addresses.
    pub allocatable: RangeSet,
    /// Which nodes the pool serves.
    pub affinity: Affinity,
    /// How many addresses one borrowing takes; None when borrowing is off.
    pub borrow_step: Option<u32>,
    /// Used when a pod names no pool.
    pub default: bool,
    /// Hands out nothing when true.
    pub disabled: bool,
    /// The resource as given.
    pub resource: IPPool,
}

/// Subnets and pools, checked and indexed.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    subnets: Vec<CheckedSubnet>,
    pools: Vec<CheckedPool>,
    pool_index: HashMap<String, PoolId>,
    subnet_index: HashMap<String, SubnetId>,
}

/// Kubernetes' rule for names of cluster-scoped objects (DNS-1123 subdomain).
pub fn check_object_name(name: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() {
        return Err("name is required".into());
    }
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "{name:?} is not a valid name: use at most 253 lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

impl Catalog {
    /// Checks a whole set of subnets and pools.
    ///
    /// # Errors
    /// Every refusal found, each naming the resource, field and reason.
    pub fn build(subnets: Vec<Subnet>, pools: Vec<IPPool>) -> Result<Catalog, ValidationErrors> {
        let mut errors = Vec::new();
        let mut cat = Catalog::default();

        for s in subnets {
            match check_subnet(s) {
                Ok(s) => {
                    let clash = cat
                        .subnets
                        .iter()
                        .find(|o| o.cidr.overlaps(&s.cidr) || o.name == s.name);
                    if let Some(o) = clash {
                        let (field, reason) = if o.name == s.name {
                            ("metadata.name", "defined twice".to_string())
                        } else {
                            (
                                "spec.cidr",
                                format!("{} overlaps Subnet/{} ({})", s.cidr, o.name, o.cidr),
                            )
                        };
                        errors.push(invalid("Subnet", &s.name, field, reason));
                        continue;
                    }
                    cat.subnet_index.insert(s.name.clone(), cat.subnets.len());
                    if let Some(uid) = &s.uid {
                        cat.subnet_index
                            .entry(uid.clone())
                            .or_insert(cat.subnets.len());
                    }
                    cat.subnets.push(s);
                }
                Err(e) => errors.push(e),
            }
        }

        for p in pools {
            match check_pool(p, &cat) {
                Ok(p) => {
                    if cat.pools.iter().any(|o| o.name == p.name) {
                        errors.push(invalid(
                            "IPPool",
                            &p.name,
                            "metadata.name",
                            "defined twice".into(),
                        ));
                        continue;
                    }
                    if let Some(o) = cat.pools.iter().find(|o| o.ips.intersects(&p.ips)) {
                        let shared = o.ips.intersection(&p.ips).to_strings().join(", ");
                        errors.push(invalid(
                            "IPPool",
                            &p.name,
                            "spec.ips",
                            format!("overlaps IPPool/{} at {shared}", o.name),
                        ));
                        continue;
                    }
                    cat.pool_index.insert(p.name.clone(), cat.pools.len());
                    if let Some(uid) = &p.uid {
                        cat.pool_index.entry(uid.clone()).or_insert(cat.pools.len());
                    }
                    cat.pools.push(p);
                }
                Err(e) => errors.push(e),
            }
        }

        if errors.is_empty() {
            Ok(cat)
        } else {
            Err(ValidationErrors(errors))
        }
    }

    /// The subnets, by [`SubnetId`].
    pub fn subnets(&self) -> &[CheckedSubnet] {
        &self.subnets
    }

    /// The pools, by [`PoolId`].
    pub fn pools(&self) -> &[CheckedPool] {
        &self.pools
    }

    /// A pool by name or UID.
    pub fn pool_id(&self, name_or_uid: &str) -> Option<PoolId> {
        self.pool_index.get(name_or_uid).copied()
    }

    /// A subnet by name or UID.
    pub fn subnet_id(&self, name_or_uid: &str) -> Option<SubnetId> {
        self.subnet_index.get(name_or_uid).copied()
    }

    /// The subnet holding an address.
    pub fn subnet_of(&self, ip: IpAddr) -> Option<SubnetId> {
        self.subnets.iter().position(|s| s.cidr.contains_ip(ip))
    }

    /// The pool whose `ips` hold an address.
    pub fn pool_of(&self, ip: IpAddr) -> Option<PoolId> {
        self.pools.iter().position(|p| p.ips.contains_ip(ip))
    }

    /// Pools marked `default: true`, by name.
    pub fn default_pools(&self) -> Vec<String> {
        self.pools
            .iter()
            .filter(|p| p.default)
            .map(|p| p.name.clone())
            .collect()
    }
}

fn invalid(kind: &'static str, name: &str, field: &str, reason: String) -> Invalid {
    Invalid {
        kind,
        name: name.to_string(),
        field: field.to_string(),
        reason,
    }
}

fn check_subnet(s: Subnet) -> Result<CheckedSubnet, Invalid> {
    let name = s.metadata.name.clone();
    let bad = |field: &str, reason: String| invalid("Subnet", &name, field, reason);
    check_object_name(&name).map_err(|r| bad("metadata.name", r))?;

    let net: ipnet::IpNet = s
        .spec
        .cidr
        .trim()
        .parse()
        .map_err(|_| bad("spec.cidr", format!("{:?} is not a CIDR", s.spec.cidr)))?;
    if net.addr() != net.network() {
        return Err(bad(
            "spec.cidr",
            format!(
                "{:?} has host bits set; the network is {}",
                s.spec.cidr,
                net.trunc()
            ),
        ));
    }
    let cidr = IpRange::from_net(net);
    let family = cidr.family();

    let mut reserved = Vec::new();
    if let Some(gw) = s.spec.gateway {
        if !cidr.contains_ip(gw) {
            return Err(bad("spec.gateway", format!("{gw} is outside {cidr}")));
        }
        reserved.push(IpRange::single(gw));
    }
    let host_bits = family.bits() - net.prefix_len();
    if host_bits >= 2 {
        reserved.push(IpRange::new(family, cidr.start(), cidr.start()));
        if family == Family::V4 {
            reserved.push(IpRange::new(family, cidr.end(), cidr.end()));
        }
    }
    for (i, text) in s.spec.exclude_ips.iter().enumerate() {
        let field = format!("spec.excludeIPs[{i}]");
        let r: IpRange = text
            .parse()
            .map_err(|e: crate::range::RangeError| bad(&field, e.to_string()))?;
        if !cidr.covers(&r) {
            return Err(bad(&field, format!("{r} is outside {cidr}")));
        }
        reserved.push(r);
    }
    for (i, route) in s.spec.routes.iter().enumerate() {
        let dst_ok = route
            .dst
            .parse::<ipnet::IpNet>()
            .is_ok_and(|d| Family::of(d.addr()) == family);
        if !dst_ok {
            return Err(bad(
                &format!("spec.routes[{i}].dst"),
                format!("{:?} is not an {family} CIDR", route.dst),
            ));
        }
        if let Some(gw) = route.gw {
            if Family::of(gw) != family {
                return Err(bad(
                    &format!("spec.routes[{i}].gw"),
                    format!("{gw} is not {family}"),
                ));
            }
        }
    }
    if let Some(dns) = &s.spec.dns {
        for (i, ns) in dns.nameservers.iter().enumerate() {
            if ns.parse::<IpAddr>().is_err() {
                return Err(bad(
                    &format!("spec.dns.nameservers[{i}]"),
                    format!("{ns:?} is not an address"),
                ));
            }
        }
    }

    let reserved = RangeSet::from_ranges(reserved);
    let allocatable = RangeSet::from_ranges([cidr]).difference(&reserved);
    Ok(CheckedSubnet {
        uid: s.metadata.uid.clone(),
        family,
        cidr,
        prefix_len: net.prefix_len(),
        gateway: s.spec.gateway,
        reserved,
        allocatable,
        routes: s.spec.routes.clone(),
        dns: s.spec.dns.clone(),
        name,
        resource: s,
    })
}

fn check_pool(p: IPPool, cat: &Catalog) -> Result<CheckedPool, Invalid> {
    let name = p.metadata.name.clone();
    let bad = |field: &str, reason: String| invalid("IPPool", &name, field, reason);
    check_object_name(&name).map_err(|r| bad("metadata.name", r))?;

    let subnet_id = cat
        .subnet_id(&p.spec.subnet)
        .ok_or_else(|| bad("spec.subnet", format!("unknown subnet {:?}", p.spec.subnet)))?;
    let subnet = &cat.subnets[subnet_id];

    if p.spec.ips.is_empty() {
        return Err(bad(
            "spec.ips",
            "at least one address, CIDR or range is required".into(),
        ));
    }
    let mut ranges = Vec::new();
    for (i, text) in p.spec.ips.iter().enumerate() {
        let field = format!("spec.ips[{i}]");
        let r: IpRange = text
            .parse()
            .map_err(|e: crate::range::RangeError| bad(&field, e.to_string()))?;
        if r.family() != subnet.family {
            return Err(bad(
                &field,
                format!(
                    "{r} is {} but Subnet/{} is {}; a pool holds one family",
                    r.family(),
                    subnet.name,
                    subnet.family
                ),
            ));
        }
        if !subnet.cidr.covers(&r) {
            return Err(bad(
                &field,
                format!("{r} is outside Subnet/{} ({})", subnet.name, subnet.cidr),
            ));
        }
        ranges.push(r);
    }
    let ips = RangeSet::from_ranges(ranges);

    let mut excluded = Vec::new();
    for (i, text) in p.spec.exclude_ips.iter().enumerate() {
        let field = format!("spec.excludeIPs[{i}]");
        let r: IpRange = text
            .parse()
            .map_err(|e: crate::range::RangeError| bad(&field, e.to_string()))?;
        excluded.push(r);
    }
    let allocatable = ips
        .difference(&RangeSet::from_ranges(excluded))
        .difference(&subnet.reserved);

    let affinity = crate::selector::Affinity::compile(p.spec.node_affinity.as_ref())
        .map_err(|e| bad(&format!("spec.nodeAffinity.{}", e.field), e.reason))?;

    let borrow_step = match &p.spec.auto_extend {
        Some(a) if a.enabled && a.step == 0 => {
            return Err(bad("spec.autoExtend.step", "must be at least 1".into()));
        }
        Some(a) if a.enabled => Some(a.step),
        _ => None,
    };

    Ok(CheckedPool {
        uid: p.metadata.uid.clone(),
        subnet: subnet_id,
        family: subnet.family,
        ips,
        allocatable,
        affinity,
        borrow_step,
        default: p.spec.default,
        disabled: p.spec.disabled,
        name,
        resource: p,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{parse_manifests, Manifest};

    /// Builds a catalog from YAML.
    pub(crate) fn catalog(yaml: &str) -> Result<Catalog, ValidationErrors> {
        let (mut subnets, mut pools) = (vec![], vec![]);
        for m in parse_manifests(yaml).unwrap() {
            match m {
                Manifest::Subnet(s) => subnets.push(s),
                Manifest::IPPool(p) => pools.push(p),
                _ => {}
            }
        }
        Catalog::build(subnets, pools)
    }

    fn subnet(name: &str, spec: &str) -> String {
        format!("---\napiVersion: ipam.atoll.dev/v1alpha1\nkind: Subnet\nmetadata: {{name: {name}}}\nspec: {spec}\n")
    }

    fn pool(name: &str, spec: &str) -> String {
        format!("---\napiVersion: ipam.atoll.dev/v1alpha1\nkind: IPPool\nmetadata: {{name: {name}}}\nspec: {spec}\n")
    }

    #[test]
    fn reserves_network_broadcast_gateway_and_excludes() {
        let yaml = subnet(
            "a",
            "{cidr: 10.0.0.0/24, gateway: 10.0.0.1, excludeIPs: [10.0.0.2-10.0.0.9]}",
        ) + &pool(
            "p",
            "{subnet: a, ips: [10.0.0.0/24], excludeIPs: [10.0.0.100]}",
        ) + &subnet("b", "{cidr: 'fd00::/120', gateway: 'fd00::1'}");
        let cat = catalog(&yaml).unwrap();
        let p = &cat.pools()[0];
        assert_eq!(
            p.allocatable.to_strings(),
            vec!["10.0.0.10-10.0.0.99", "10.0.0.101-10.0.0.254"]
        );
        assert_eq!(
            cat.subnets()[1].allocatable.to_strings(),
            vec!["fd00::2-fd00::ff"]
        );
    }

    #[test]
    fn refuses_invalid_resources_naming_field_and_reason() {
        let a = subnet("a", "{cidr: 10.0.0.0/24, gateway: 10.0.0.1}");
        let cases: Vec<(String, &str)> = vec![
            (a.clone() + &pool("p", "{subnet: a, ips: [10.0.1.0/24]}"), "IPPool/p: spec.ips[0]: 10.0.1.0/24 is outside Subnet/a (10.0.0.0/24)"),
            (a.clone() + &pool("p", "{subnet: nope, ips: [10.0.0.0/24]}"), "IPPool/p: spec.subnet: unknown subnet \"nope\""),
            (
                a.clone() + &pool("p", "{subnet: a, ips: [10.0.0.0/25]}") + &pool("q", "{subnet: a, ips: [10.0.0.100-10.0.0.200]}"),
                "IPPool/q: spec.ips: overlaps IPPool/p at 10.0.0.100-10.0.0.127",
            ),
            (a.clone() + &subnet("b", "{cidr: 10.0.0.128/25}"), "Subnet/b: spec.cidr: 10.0.0.128/25 overlaps Subnet/a (10.0.0.0/24)"),
            (a.clone() + &pool("p", "{subnet: a, ips: [10.0.0.0/25, 'fd00::1']}"), "IPPool/p: spec.ips[1]: fd00::1 is IPv6 but Subnet/a is IPv4"),
            (a.clone() + &pool("p", "{subnet: a, ips: [10.0.0.9-10.0.0.1]}"), "IPPool/p: spec.ips[0]: \"10.0.0.9-10.0.0.1\" starts after it ends"),
            (
                a.clone() + &pool("p", "{subnet: a, ips: [10.0.0.0/25], nodeAffinity: {nodeSelectorTerms: [{matchExpressions: [{key: zone, operator: Near}]}]}}"),
                "IPPool/p: spec.nodeAffinity.nodeSelectorTerms[0].matchExpressions[0].operator: unknown operator \"Near\"",
            ),
            (subnet("g", "{cidr: 10.0.0.0/24, gateway: 10.0.1.1}"), "Subnet/g: spec.gateway: 10.0.1.1 is outside 10.0.0.0/24"),
            (subnet("h", "{cidr: 10.0.0.1/24}"), "Subnet/h: spec.cidr: \"10.0.0.1/24\" has host bits set; the network is 10.0.0.0/24"),
            (subnet("Bad_Name", "{cidr: 10.0.0.0/24}"), "Subnet/Bad_Name: metadata.name: \"Bad_Name\" is not a valid name"),
            (a.clone() + &pool("p", "{subnet: a, ips: []}"), "IPPool/p: spec.ips: at least one"),
            (a.clone() + &pool("p", "{subnet: a, ips: [10.0.0.0/25], autoExtend: {enabled: true, step: 0}}"), "IPPool/p: spec.autoExtend.step: must be at least 1"),
            (subnet("e", "{cidr: 10.0.0.0/24, excludeIPs: [10.0.3.0/30]}"), "Subnet/e: spec.excludeIPs[0]: 10.0.3.0/30 is outside 10.0.0.0/24"),
        ];
        for (yaml, want) in cases {
            let got = catalog(&yaml).unwrap_err().to_string();
            assert!(got.contains(want), "got {got:?}\nwant {want:?}");
        }
    }
}
