//! Binding resolution: which pools an application asks for.
//!
//! SPEC section 3 sets the precedence, first hit wins: the pod's own
//! annotations, the owning workloads' annotations (nearest owner first),
//! the namespace's annotations, the CNI network config's `pools`, the pools
//! marked `default: true`. The caller finds those inputs (in a store, in the
//! CNI request); this module only decides, and names where the list came
//! from so that messages can say it.
//!
//! ```
//! use atoll_core::binding::{resolve_binding, BindingInputs, BindingSource};
//! let ns = [("ipam.atoll.dev/ippools".to_string(), "a, b".to_string())].into_iter().collect();
//! let b = resolve_binding(&BindingInputs {
//!     namespace: Some(("shop", &ns)),
//!     ..Default::default()
//! }).unwrap();
//! assert_eq!(b.pools, vec!["a", "b"]);
//! assert_eq!(b.source, BindingSource::Namespace("shop".into()));
//! ```

use std::fmt;

use crate::resource::{StringMap, Workload, POOLS_ANNOTATION};

/// Where a binding came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingSource {
    /// The pod's annotations (or a workload's pod template).
    Pod,
    /// A workload's annotations, as `Kind/namespace/name`.
    Workload(String),
    /// The namespace's annotations.
    Namespace(String),
    /// The CNI network config's `pools`.
    CniConfig,
    /// The pools marked `default: true`.
    Default,
}

impl fmt::Display for BindingSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindingSource::Pod => write!(f, "pod annotation {POOLS_ANNOTATION}"),
            BindingSource::Workload(w) => write!(f, "{w} annotation {POOLS_ANNOTATION}"),
            BindingSource::Namespace(n) => write!(f, "Namespace/{n} annotation {POOLS_ANNOTATION}"),
            BindingSource::CniConfig => f.write_str("CNI network config `pools`"),
            BindingSource::Default => f.write_str("pools marked default"),
        }
    }
}

/// The pools of an application, in order of preference, and their source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Pool names or UIDs.
    pub pools: Vec<String>,
    /// Where they came from.
    pub source: BindingSource,
}

/// What the caller found, each optional.
#[derive(Debug, Clone, Copy, Default)]
pub struct BindingInputs<'a> {
    /// The pod's annotations.
    pub pod_annotations: Option<&'a StringMap>,
    /// Owning workloads, nearest first: (`Kind/namespace/name`, annotations).
    pub owners: &'a [(String, StringMap)],
    /// The namespace: (name, annotations).
    pub namespace: Option<(&'a str, &'a StringMap)>,
    /// The `pools` of the CNI network config.
    pub cni_pools: &'a [String],
    /// Pools marked default.
    pub default_pools: &'a [String],
}

/// A binding annotation that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_}: {value:?} is not a comma-separated list of pool names")]
pub struct BindingError {
    /// Where the annotation was.
    pub source_: BindingSource,
    /// The value as written.
    pub value: String,
}

/// Splits `a,b , c` into names. Duplicates keep their first place. None
/// for an empty list or an empty entry (`a,,b`).
pub fn parse_pool_list(value: &str) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for part in value.split(',') {
        let name = part.trim();
        if name.is_empty() {
            return None;
        }
        if !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
    }
    Some(out)
}

/// Picks the binding by SPEC precedence. An empty result (no source, no
/// default) is a binding with no pools and [`BindingSource::Default`].
///
/// # Errors
/// A malformed annotation at the first source that has one; later sources
/// are not consulted, since the operator meant that one.
pub fn resolve_binding(inputs: &BindingInputs<'_>) -> Result<Binding, BindingError> {
    let from =
        |annotations: &StringMap, source: BindingSource| -> Option<Result<Binding, BindingError>> {
            let value = annotations.get(POOLS_ANNOTATION)?;
            Some(match parse_pool_list(value) {
                Some(pools) => Ok(Binding { pools, source }),
                None => Err(BindingError {
                    source_: source,
                    value: value.clone(),
                }),
            })
        };

    if let Some(found) = inputs
        .pod_annotations
        .and_then(|a| from(a, BindingSource::Pod))
    {
        return found;
    }
    for (owner, annotations) in inputs.owners {
        if let Some(found) = from(annotations, BindingSource::Workload(owner.clone())) {
            return found;
        }
    }
    if let Some(found) = inputs
        .namespace
        .and_then(|(name, a)| from(a, BindingSource::Namespace(name.to_string())))
    {
        return found;
    }
    if !inputs.cni_pools.is_empty() {
        return Ok(Binding {
            pools: inputs.cni_pools.to_vec(),
            source: BindingSource::CniConfig,
        });
    }
    Ok(Binding {
        pools: inputs.default_pools.to_vec(),
        source: BindingSource::Default,
    })
}

/// Follows ownerReferences from a workload up to its top owner (ReplicaSet
/// to Deployment, Job to CronJob, ...), nearest first, the workload itself
/// excluded. `lookup(namespace, kind, name)` finds an owner; the walk stops
/// at an owner it cannot find, and after 8 steps against reference loops.
pub fn owner_chain(
    start: &Workload,
    lookup: impl Fn(&str, &str, &str) -> Option<Workload>,
) -> Vec<Workload> {
    let mut chain: Vec<Workload> = Vec::new();
    let mut current = start.clone();
    for _ in 0..8 {
        let refs = &current.metadata.owner_references;
        let Some(owner) = refs
            .iter()
            .find(|r| r.controller == Some(true))
            .or_else(|| refs.first())
        else {
            break;
        };
        let ns = current
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let Some(next) = lookup(&ns, &owner.kind, &owner.name) else {
            break;
        };
        chain.push(next.clone());
        current = next;
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(v: &str) -> StringMap {
        [(POOLS_ANNOTATION.to_string(), v.to_string())]
            .into_iter()
            .collect()
    }

    #[test]
    fn precedence_first_hit_wins() {
        let pod = ann("p1");
        let owners = vec![("Deployment/shop/web".to_string(), ann("w1,w2"))];
        let ns = ann("n1");
        let cni = vec!["c1".to_string()];
        let defaults = vec!["d1".to_string()];
        let empty = StringMap::new();
        let full = BindingInputs {
            pod_annotations: Some(&pod),
            owners: &owners,
            namespace: Some(("shop", &ns)),
            cni_pools: &cni,
            default_pools: &defaults,
        };
        let cases: Vec<(&str, BindingInputs, &[&str], BindingSource)> = vec![
            ("pod", full, &["p1"], BindingSource::Pod),
            (
                "workload",
                BindingInputs {
                    pod_annotations: Some(&empty),
                    ..full
                },
                &["w1", "w2"],
                BindingSource::Workload("Deployment/shop/web".into()),
            ),
            (
                "namespace",
                BindingInputs {
                    pod_annotations: None,
                    owners: &[],
                    ..full
                },
                &["n1"],
                BindingSource::Namespace("shop".into()),
            ),
            (
                "cni",
                BindingInputs {
                    pod_annotations: None,
                    owners: &[],
                    namespace: None,
                    ..full
                },
                &["c1"],
                BindingSource::CniConfig,
            ),
            (
                "default",
                BindingInputs {
                    default_pools: &defaults,
                    ..BindingInputs::default()
                },
                &["d1"],
                BindingSource::Default,
            ),
        ];
        for (name, inputs, want, source) in cases {
            let b = resolve_binding(&inputs).unwrap();
            assert_eq!(b.pools, want, "{name}");
            assert_eq!(b.source, source, "{name}");
        }
    }

    #[test]
    fn malformed_annotation_is_refused_where_it_is() {
        let pod = ann("a,,b");
        let err = resolve_binding(&BindingInputs {
            pod_annotations: Some(&pod),
            ..BindingInputs::default()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "pod annotation ipam.atoll.dev/ippools: \"a,,b\" is not a comma-separated list of pool names"
        );
        assert_eq!(
            parse_pool_list(" a , b,a"),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(parse_pool_list(""), None);
    }

    #[test]
    fn follows_owners_to_the_top() {
        use crate::resource::{ObjectMeta, OwnerReference};
        let wl = |kind: &str, name: &str, owner: Option<(&str, &str)>| Workload {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            metadata: ObjectMeta {
                name: name.into(),
                namespace: Some("shop".into()),
                owner_references: owner
                    .map(|(k, n)| OwnerReference {
                        kind: k.into(),
                        name: n.into(),
                        controller: Some(true),
                        ..Default::default()
                    })
                    .into_iter()
                    .collect(),
                ..Default::default()
            },
            template_annotations: StringMap::new(),
        };
        let pod = wl("Pod", "web-abc-1", Some(("ReplicaSet", "web-abc")));
        let all = [
            wl("ReplicaSet", "web-abc", Some(("Deployment", "web"))),
            wl("Deployment", "web", None),
        ];
        let chain = owner_chain(&pod, |ns, kind, name| {
            all.iter()
                .find(|w| w.kind == kind && w.metadata.name == name && ns == "shop")
                .cloned()
        });
        let names: Vec<_> = chain.iter().map(|w| w.kind.as_str()).collect();
        assert_eq!(names, vec!["ReplicaSet", "Deployment"]);
    }
}
