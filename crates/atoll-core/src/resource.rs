//! The resources atoll reads: its own `Subnet` and `IPPool` (SPEC section 3)
//! and, of Kubernetes' kinds, what pool choice needs of `Node`, `Namespace`
//! and workloads.
//!
//! The types (de)serialise from and to the same YAML and JSON that
//! `kubectl apply` takes. Spec fields are kept as written (strings for
//! ranges) so that [`crate::validate`] can name the exact field that is
//! wrong; the checked, canonical form lives in [`crate::catalog`].

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The API group and version of atoll's kinds.
pub const API_VERSION: &str = "ipam.atoll.dev/v1alpha1";
/// The annotation that binds an application to pools.
pub const POOLS_ANNOTATION: &str = "ipam.atoll.dev/ippools";

/// A labels or annotations map.
pub type StringMap = BTreeMap<String, String>;

/// The part of Kubernetes' `ObjectMeta` atoll uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Name, unique per kind (and namespace for namespaced kinds).
    #[serde(default)]
    pub name: String,
    /// Namespace of namespaced kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Unique ID given by the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Opaque version of the stored object, for guarded updates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: StringMap,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: StringMap,
    /// Owners, for following a pod to its workload.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
}

/// A reference from an object to the object that owns it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference {
    /// API version of the owner.
    #[serde(default)]
    pub api_version: String,
    /// Kind of the owner.
    pub kind: String,
    /// Name of the owner, in the same namespace.
    pub name: String,
    /// UID of the owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Whether this owner is the managing controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<bool>,
}

/// A subnet: one L3 network that pools are cut from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subnet {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// Always `Subnet`.
    pub kind: String,
    /// Name and labels.
    pub metadata: ObjectMeta,
    /// What the operator asks for.
    pub spec: SubnetSpec,
    /// What atoll observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

/// The spec of a [`Subnet`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubnetSpec {
    /// The network, IPv4 or IPv6, in CIDR form.
    pub cidr: String,
    /// The gateway; never allocated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Addresses never allocated, as addresses, CIDRs or ranges.
    #[serde(default, rename = "excludeIPs", skip_serializing_if = "Vec::is_empty")]
    pub exclude_ips: Vec<String>,
    /// Routes handed to pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// DNS settings handed to pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
}

/// A route handed to pods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Destination network.
    pub dst: String,
    /// Next hop; the pod's default gateway when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// DNS settings, as in a CNI result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// A pool: addresses of one subnet, bound to nodes by affinity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IPPool {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// Always `IPPool`.
    pub kind: String,
    /// Name and labels.
    pub metadata: ObjectMeta,
    /// What the operator asks for.
    pub spec: IPPoolSpec,
    /// What atoll observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

/// The spec of an [`IPPool`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPPoolSpec {
    /// Name of the subnet the pool is cut from.
    pub subnet: String,
    /// The pool's addresses: addresses, CIDRs or ranges.
    #[serde(default)]
    pub ips: Vec<String>,
    /// Addresses of the pool never allocated.
    #[serde(default, rename = "excludeIPs", skip_serializing_if = "Vec::is_empty")]
    pub exclude_ips: Vec<String>,
    /// Which nodes the pool serves; every node when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_affinity: Option<NodeAffinity>,
    /// Borrowing of free subnet addresses when the pool is full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_extend: Option<AutoExtend>,
    /// Used when a pod names no pool.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    /// A disabled pool hands out nothing; its holders keep their addresses.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
}

/// Node affinity of a pool: names or UIDs, ORed with selector terms.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeAffinity {
    /// Node names or UIDs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_names: Vec<String>,
    /// Terms, ORed; the requirements in one term are ANDed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selector_terms: Vec<SelectorTerm>,
}

/// One term of a node selector, with Kubernetes label-selector semantics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SelectorTerm {
    /// Labels that must be present with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: StringMap,
    /// Requirements on labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
}

/// One requirement: `key operator values`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    /// Label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// Values for `In` and `NotIn`; empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// Borrowing settings of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoExtend {
    /// Whether the pool borrows when full.
    #[serde(default)]
    pub enabled: bool,
    /// How many addresses one borrowing takes.
    #[serde(default = "default_step")]
    pub step: u32,
}

fn default_step() -> u32 {
    1
}

/// Counters and conditions of a subnet or pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Allocatable addresses (saturating at 2^64-1).
    #[serde(default)]
    pub total: u64,
    /// Held addresses.
    #[serde(default)]
    pub allocated: u64,
    /// Free addresses.
    #[serde(default)]
    pub free: u64,
    /// Held addresses borrowed from the subnet.
    #[serde(default)]
    pub borrowed: u64,
    /// Valid / Invalid, with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A condition, as Kubernetes' API conventions shape it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Valid`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True` or `False`.
    pub status: String,
    /// One CamelCase word.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// For people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// A node: its name, UID and labels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// Name, UID and labels.
    pub metadata: ObjectMeta,
}

impl Node {
    /// A node with a name and labels.
    pub fn new(name: &str, labels: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: name.to_string(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..ObjectMeta::default()
            },
        }
    }
}

/// A namespace: its name and annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Namespace {
    /// Name, labels and annotations.
    pub metadata: ObjectMeta,
}

/// A workload (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob,
/// Pod): what binding resolution needs of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    /// API version as written.
    pub api_version: String,
    /// Kind as written.
    pub kind: String,
    /// Name, namespace, labels, annotations, owners.
    pub metadata: ObjectMeta,
    /// Annotations of the pod template, which pods inherit.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub template_annotations: StringMap,
}

impl Workload {
    /// `namespace/name`, the key of a workload.
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.metadata.namespace.as_deref().unwrap_or("default"),
            self.metadata.name
        )
    }
}
