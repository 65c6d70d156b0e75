//! Reading manifests: multi-document YAML (or JSON) holding atoll's kinds
//! beside `v1/Node`, `v1/Namespace` and workloads.
//!
//! Each document becomes one [`Manifest`]. Kinds atoll has no use for come
//! back as [`Manifest::Other`] so that the caller can say it skipped them.

use serde::Deserialize;
use serde_json::Value;

use crate::resource::{
    IPPool, Namespace, Node, ObjectMeta, StringMap, Subnet, Workload, API_VERSION,
};

/// Kinds followed as workloads, with the path to their pod template.
const WORKLOAD_KINDS: &[(&str, &[&str])] = &[
    ("Deployment", &["spec", "template"]),
    ("StatefulSet", &["spec", "template"]),
    ("DaemonSet", &["spec", "template"]),
    ("ReplicaSet", &["spec", "template"]),
    ("Job", &["spec", "template"]),
    ("CronJob", &["spec", "jobTemplate", "spec", "template"]),
    ("Pod", &[]),
];

/// One document of a manifest.
#[derive(Debug, Clone, PartialEq)]
pub enum Manifest {
    /// An atoll `Subnet`.
    Subnet(Subnet),
    /// An atoll `IPPool`.
    IPPool(IPPool),
    /// A `v1/Node`.
    Node(Node),
    /// A `v1/Namespace`.
    Namespace(Namespace),
    /// A workload or pod.
    Workload(Workload),
    /// A kind atoll does not use.
    Other {
        /// `apiVersion` as written.
        api_version: String,
        /// `kind` as written.
        kind: String,
        /// `metadata.name` as written.
        name: String,
    },
}

impl Manifest {
    /// `Kind/name` for messages.
    pub fn describe(&self) -> String {
        match self {
            Manifest::Subnet(s) => format!("Subnet/{}", s.metadata.name),
            Manifest::IPPool(p) => format!("IPPool/{}", p.metadata.name),
            Manifest::Node(n) => format!("Node/{}", n.metadata.name),
            Manifest::Namespace(n) => format!("Namespace/{}", n.metadata.name),
            Manifest::Workload(w) => format!("{}/{}", w.kind, w.key()),
            Manifest::Other { kind, name, .. } => format!("{kind}/{name}"),
        }
    }
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The text is not YAML.
    #[error("document {index}: not valid YAML: {source}")]
    Yaml {
        /// 1-based index of the document.
        index: usize,
        /// What the parser said.
        #[source]
        source: serde_norway::Error,
    },
    /// A document lacks `apiVersion` or `kind`.
    #[error("document {index}: missing {field}")]
    Missing {
        /// 1-based index of the document.
        index: usize,
        /// The missing field.
        field: &'static str,
    },
    /// A known kind whose fields do not have the expected shape.
    #[error("document {index} ({kind}/{name}): {source}")]
    Shape {
        /// 1-based index of the document.
        index: usize,
        /// Kind of the document.
        kind: String,
        /// Name of the document.
        name: String,
        /// What did not fit.
        #[source]
        source: serde_json::Error,
    },
    /// An atoll kind under another API version.
    #[error(
        "document {index} ({kind}/{name}): apiVersion {found:?} is not served; use {API_VERSION:?}"
    )]
    Version {
        /// 1-based index of the document.
        index: usize,
        /// Kind of the document.
        kind: String,
        /// Name of the document.
        name: String,
        /// The version given.
        found: String,
    },
}

/// Parses every document of a YAML or JSON text. Empty documents are skipped.
///
/// # Errors
/// The first document that is not YAML, lacks `apiVersion`/`kind`, or whose
/// fields do not fit its kind, with its 1-based index.
pub fn parse_manifests(text: &str) -> Result<Vec<Manifest>, ManifestError> {
    let mut out = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let index = i + 1;
        let value =
            Value::deserialize(doc).map_err(|source| ManifestError::Yaml { index, source })?;
        if value.is_null() {
            continue;
        }
        if value.get("kind").and_then(Value::as_str) == Some("List") {
            let items = value
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for item in items {
                out.push(parse_document(index, item)?);
            }
            continue;
        }
        out.push(parse_document(index, value)?);
    }
    Ok(out)
}

fn parse_document(index: usize, value: Value) -> Result<Manifest, ManifestError> {
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or(ManifestError::Missing {
            index,
            field: "apiVersion",
        })?
        .to_string();
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .ok_or(ManifestError::Missing {
            index,
            field: "kind",
        })?
        .to_string();
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let shape = |source| ManifestError::Shape {
        index,
        kind: kind.clone(),
        name: name.clone(),
        source,
    };

    let group = api_version.split('/').next().unwrap_or_default();
    match (group, kind.as_str()) {
        ("ipam.atoll.dev", "Subnet" | "IPPool") if api_version != API_VERSION => {
            Err(ManifestError::Version {
                index,
                kind: kind.clone(),
                name: name.clone(),
                found: api_version.clone(),
            })
        }
        ("ipam.atoll.dev", "Subnet") => Ok(Manifest::Subnet(
            serde_json::from_value(value).map_err(shape)?,
        )),
        ("ipam.atoll.dev", "IPPool") => Ok(Manifest::IPPool(
            serde_json::from_value(value).map_err(shape)?,
        )),
        ("v1", "Node") => Ok(Manifest::Node(Node {
            metadata: metadata_of(&value).map_err(shape)?,
        })),
        ("v1", "Namespace") => Ok(Manifest::Namespace(Namespace {
            metadata: metadata_of(&value).map_err(shape)?,
        })),
        (_, k) if WORKLOAD_KINDS.iter().any(|(w, _)| *w == k) => {
            let metadata = metadata_of(&value).map_err(shape)?;
            let template_path = WORKLOAD_KINDS
                .iter()
                .find(|(w, _)| *w == k)
                .map(|(_, p)| *p)
                .unwrap_or(&[]);
            let template_annotations = if template_path.is_empty() {
                StringMap::new()
            } else {
                let mut v = &value;
                for part in template_path
                    .iter()
                    .chain(["metadata", "annotations"].iter())
                {
                    v = v.get(part).unwrap_or(&Value::Null);
                }
                if v.is_null() {
                    StringMap::new()
                } else {
                    serde_json::from_value(v.clone()).map_err(shape)?
                }
            };
            Ok(Manifest::Workload(Workload {
                api_version,
                kind,
                metadata,
                template_annotations,
            }))
        }
        _ => Ok(Manifest::Other {
            api_version,
            kind,
            name,
        }),
    }
}

fn metadata_of(value: &Value) -> Result<ObjectMeta, serde_json::Error> {
    serde_json::from_value(value.get("metadata").cloned().unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIXED: &str = r#"
apiVersion: v1
kind: Node
metadata:
  name: node-1
  uid: 6a1f0c2e-0000-4000-8000-000000000001
  labels: {zone: zone1}
---
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  annotations: {ipam.atoll.dev/ippools: "ns-pool"}
---
apiVersion: ipam.atoll.dev/v1alpha1
kind: Subnet
metadata:
  name: rack-a
spec:
  cidr: 10.10.0.0/16
  gateway: 10.10.0.1
  excludeIPs: [10.10.0.2-10.10.0.9]
  routes: [{dst: 0.0.0.0/0, gw: 10.10.0.1}]
  dns: {nameservers: [10.10.0.53]}
---
apiVersion: ipam.atoll.dev/v1alpha1
kind: IPPool
metadata:
  name: rack-a-web
spec:
  subnet: rack-a
  ips: [10.10.1.0/24, 10.10.2.10-10.10.2.50, 10.10.3.7]
  excludeIPs: []
  nodeAffinity:
    nodeNames: [node-1]
    nodeSelectorTerms:
      - matchLabels: {zone: zone1}
      - matchExpressions: [{key: zone, operator: In, values: [zone2]}]
  autoExtend: {enabled: true, step: 1}
  default: false
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web}
spec:
  replicas: 3
  template:
    metadata:
      annotations: {ipam.atoll.dev/ippools: "rack-a-web,rack-b-web"}
    spec:
      containers: [{name: web, image: nginx}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
"#;

    #[test]
    fn reads_every_kind_of_a_mixed_manifest() {
        let docs = parse_manifests(MIXED).unwrap();
        let names: Vec<String> = docs.iter().map(Manifest::describe).collect();
        assert_eq!(
            names,
            vec![
                "Node/node-1",
                "Namespace/shop",
                "Subnet/rack-a",
                "IPPool/rack-a-web",
                "Deployment/shop/web",
                "Service/web"
            ]
        );
        let Manifest::IPPool(pool) = &docs[3] else {
            panic!()
        };
        assert_eq!(pool.spec.ips.len(), 3);
        assert_eq!(
            pool.spec
                .node_affinity
                .as_ref()
                .unwrap()
                .node_selector_terms
                .len(),
            2
        );
        assert_eq!(pool.spec.auto_extend.as_ref().unwrap().step, 1);
        let Manifest::Workload(w) = &docs[4] else {
            panic!()
        };
        assert_eq!(
            w.template_annotations["ipam.atoll.dev/ippools"],
            "rack-a-web,rack-b-web"
        );
        let Manifest::Node(n) = &docs[0] else {
            panic!()
        };
        assert_eq!(n.metadata.labels["zone"], "zone1");
    }

    #[test]
    fn round_trips_through_yaml_and_json() {
        for doc in parse_manifests(MIXED).unwrap() {
            match doc {
                Manifest::Subnet(s) => {
                    let y = serde_norway::to_string(&s).unwrap();
                    assert_eq!(
                        parse_manifests(&y).unwrap(),
                        vec![Manifest::Subnet(s.clone())]
                    );
                    let j = serde_json::to_string(&s).unwrap();
                    assert_eq!(parse_manifests(&j).unwrap(), vec![Manifest::Subnet(s)]);
                }
                Manifest::IPPool(p) => {
                    let y = serde_norway::to_string(&p).unwrap();
                    assert_eq!(
                        parse_manifests(&y).unwrap(),
                        vec![Manifest::IPPool(p.clone())]
                    );
                    let j = serde_json::to_string(&p).unwrap();
                    assert_eq!(parse_manifests(&j).unwrap(), vec![Manifest::IPPool(p)]);
                }
                _ => {}
            }
        }
    }

    #[test]
    fn refuses_broken_documents_with_their_index() {
        let cases: &[(&str, &str)] = &[
            ("kind: Node\nmetadata: {name: a}", "document 1: missing apiVersion"),
            ("apiVersion: v1\nmetadata: {name: a}", "document 1: missing kind"),
            (
                "apiVersion: v1\nkind: Node\nmetadata: {name: a}\n---\napiVersion: ipam.atoll.dev/v1alpha1\nkind: IPPool\nmetadata: {name: p}\nspec: {subnet: s, nodeAfinity: {}}",
                "document 2 (IPPool/p): unknown field `nodeAfinity`",
            ),
            (
                "apiVersion: ipam.atoll.dev/v1\nkind: Subnet\nmetadata: {name: s}\nspec: {cidr: 10.0.0.0/24}",
                "apiVersion \"ipam.atoll.dev/v1\" is not served",
            ),
            ("a: [", "document 1: not valid YAML"),
        ];
        for (text, want) in cases {
            let err = parse_manifests(text).unwrap_err().to_string();
            assert!(err.contains(want), "got {err:?}, want {want:?}");
        }
    }
}
