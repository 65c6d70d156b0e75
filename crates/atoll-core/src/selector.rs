//! Node affinity: which nodes a pool serves.
//!
//! A pool's [`NodeAffinity`] is checked once, at load, into an [`Affinity`]
//! that matches nodes without further parsing. Semantics are Kubernetes':
//! a node matches when its name or UID is listed, or when any selector term
//! matches; a term matches when every `matchLabels` pair and every
//! `matchExpressions` requirement holds. `NotIn` holds for a node without
//! the key, as in Kubernetes label selectors. No affinity matches every node.
//!
//! ```
//! use atoll_core::resource::{NodeAffinity, Requirement, SelectorTerm};
//! use atoll_core::selector::{Affinity, NodeRef};
//! let spec = NodeAffinity {
//!     node_selector_terms: vec![SelectorTerm {
//!         match_expressions: vec![Requirement {
//!             key: "zone".into(),
//!             operator: "In".into(),
//!             values: vec!["zone1".into(), "zone2".into()],
//!         }],
//!         ..Default::default()
//!     }],
//!     ..Default::default()
//! };
//! let affinity = Affinity::compile(Some(&spec)).unwrap();
//! let labels = [("zone".to_string(), "zone2".to_string())].into_iter().collect();
//! assert!(affinity.matches(&NodeRef { name: "node-4", uid: None, labels: &labels }));
//! ```

use std::collections::BTreeSet;

use crate::resource::{NodeAffinity, StringMap};

/// What affinity matching needs of a node.
#[derive(Debug, Clone, Copy)]
pub struct NodeRef<'a> {
    /// Node name.
    pub name: &'a str,
    /// Node UID, when known.
    pub uid: Option<&'a str>,
    /// Node labels.
    pub labels: &'a StringMap,
}

/// A checked requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The label is one of the values.
    In(BTreeSet<String>),
    /// The label is absent or none of the values.
    NotIn(BTreeSet<String>),
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// A checked selector term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    requirements: Vec<(String, Op)>,
}

impl Term {
    /// Returns true if and only if every requirement holds for the labels.
    pub fn matches(&self, labels: &StringMap) -> bool {
        self.requirements.iter().all(|(key, op)| {
            let value = labels.get(key);
            match op {
                Op::In(values) => value.is_some_and(|v| values.contains(v)),
                Op::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
                Op::Exists => value.is_some(),
                Op::DoesNotExist => value.is_none(),
            }
        })
    }
}

/// A checked node affinity.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Affinity {
    /// None: every node.
    names: Option<BTreeSet<String>>,
    terms: Vec<Term>,
}

/// Why a selector was refused: the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SelectorError {
    /// Path of the field under `spec.nodeAffinity`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl Affinity {
    /// The affinity that matches every node.
    pub fn any() -> Affinity {
        Affinity::default()
    }

    /// Checks an affinity as written.
    ///
    /// # Errors
    /// The first malformed field: a bad label key or value, an unknown
    /// operator, values given to `Exists`/`DoesNotExist` or missing from
    /// `In`/`NotIn`, an empty term, an empty node name.
    pub fn compile(spec: Option<&NodeAffinity>) -> Result<Affinity, SelectorError> {
        let Some(spec) = spec else {
            return Ok(Affinity::any());
        };
        if spec.node_names.is_empty() && spec.node_selector_terms.is_empty() {
            return Ok(Affinity::any());
        }

        let err = |field: String, reason: String| SelectorError { field, reason };
        for (i, n) in spec.node_names.iter().enumerate() {
            if n.trim().is_empty() {
                return Err(err(format!("nodeNames[{i}]"), "empty node name".into()));
            }
        }

        let mut terms = Vec::with_capacity(spec.node_selector_terms.len());
        for (t, term) in spec.node_selector_terms.iter().enumerate() {
            let at = format!("nodeSelectorTerms[{t}]");
            if term.match_labels.is_empty() && term.match_expressions.is_empty() {
                return Err(err(
                    at,
                    "empty term would select every node; omit nodeAffinity to serve every node"
                        .into(),
                ));
            }
            let mut requirements = Vec::new();
            for (k, v) in &term.match_labels {
                check_key(k).map_err(|r| err(format!("{at}.matchLabels[{k}]"), r))?;
                check_value(v).map_err(|r| err(format!("{at}.matchLabels[{k}]"), r))?;
                requirements.push((k.clone(), Op::In(BTreeSet::from([v.clone()]))));
            }
            for (e, req) in term.match_expressions.iter().enumerate() {
                let at = format!("{at}.matchExpressions[{e}]");
                check_key(&req.key).map_err(|r| err(format!("{at}.key"), r))?;
                for (j, v) in req.values.iter().enumerate() {
                    check_value(v).map_err(|r| err(format!("{at}.values[{j}]"), r))?;
                }
                let values: BTreeSet<String> = req.values.iter().cloned().collect();
                let op = match req.operator.as_str() {
                    "In" | "NotIn" if values.is_empty() => {
                        return Err(err(
                            format!("{at}.values"),
                            format!("operator {} needs at least one value", req.operator),
                        ))
                    }
                    "Exists" | "DoesNotExist" if !values.is_empty() => {
                        return Err(err(
                            format!("{at}.values"),
                            format!("operator {} takes no values", req.operator),
                        ))
                    }
                    "In" => Op::In(values),
                    "NotIn" => Op::NotIn(values),
                    "Exists" => Op::Exists,
                    "DoesNotExist" => Op::DoesNotExist,
                    other => {
                        return Err(err(
                            format!("{at}.operator"),
                            format!(
                                "unknown operator {other:?}; use In, NotIn, Exists or DoesNotExist"
                            ),
                        ))
                    }
                };
                requirements.push((req.key.clone(), op));
            }
            terms.push(Term { requirements });
        }

        Ok(Affinity {
            names: Some(spec.node_names.iter().cloned().collect()),
            terms,
        })
    }

    /// Returns true if and only if the affinity serves every node.
    pub fn is_any(&self) -> bool {
        self.names.is_none()
    }

    /// Returns true if and only if the node is served.
    pub fn matches(&self, node: &NodeRef<'_>) -> bool {
        let Some(names) = &self.names else {
            return true;
        };
        if names.contains(node.name) || node.uid.is_some_and(|u| names.contains(u)) {
            return true;
        }
        self.terms.iter().any(|t| t.matches(node.labels))
    }
}

/// Kubernetes' rule for a label name (the part after an optional prefix).
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!("{name:?} must be 1 to 63 characters"));
    }
    let ok_inner = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
    let first = name.chars().next().unwrap_or(' ');
    let last = name.chars().last().unwrap_or(' ');
    if !first.is_ascii_alphanumeric()
        || !last.is_ascii_alphanumeric()
        || !name.chars().all(ok_inner)
    {
        return Err(format!(
            "{name:?} must start and end with a letter or digit and hold only letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let dns_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if p.is_empty() || p.len() > 253 || !p.split('.').all(dns_label) {
            return Err(format!("label key prefix {p:?} must be a DNS subdomain"));
        }
    }
    check_name(name).map_err(|r| format!("label key {r}"))
}

fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    check_name(value).map_err(|r| format!("label value {r}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{Requirement, SelectorTerm};

    fn labels(pairs: &[(&str, &str)]) -> StringMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> Requirement {
        Requirement {
            key: key.into(),
            operator: op.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    fn terms(terms: Vec<SelectorTerm>) -> NodeAffinity {
        NodeAffinity {
            node_names: vec![],
            node_selector_terms: terms,
        }
    }

    #[test]
    fn matches_like_kubernetes() {
        let zone1 = labels(&[("zone", "zone1"), ("disk", "ssd")]);
        let zone3 = labels(&[("zone", "zone3")]);
        let bare = labels(&[]);
        let term = |e: Vec<Requirement>| SelectorTerm {
            match_labels: StringMap::new(),
            match_expressions: e,
        };
        let cases: Vec<(&str, NodeAffinity, &StringMap, bool)> = vec![
            (
                "In hit",
                terms(vec![term(vec![expr("zone", "In", &["zone1", "zone2"])])]),
                &zone1,
                true,
            ),
            (
                "In miss",
                terms(vec![term(vec![expr("zone", "In", &["zone2"])])]),
                &zone1,
                false,
            ),
            (
                "In absent",
                terms(vec![term(vec![expr("zone", "In", &["zone2"])])]),
                &bare,
                false,
            ),
            (
                "NotIn hit",
                terms(vec![term(vec![expr("zone", "NotIn", &["zone1"])])]),
                &zone3,
                true,
            ),
            (
                "NotIn miss",
                terms(vec![term(vec![expr("zone", "NotIn", &["zone1"])])]),
                &zone1,
                false,
            ),
            (
                "NotIn absent key",
                terms(vec![term(vec![expr("zone", "NotIn", &["zone1"])])]),
                &bare,
                true,
            ),
            (
                "Exists",
                terms(vec![term(vec![expr("disk", "Exists", &[])])]),
                &zone1,
                true,
            ),
            (
                "Exists absent",
                terms(vec![term(vec![expr("disk", "Exists", &[])])]),
                &zone3,
                false,
            ),
            (
                "DoesNotExist",
                terms(vec![term(vec![expr("disk", "DoesNotExist", &[])])]),
                &zone3,
                true,
            ),
            (
                "AND within a term",
                terms(vec![term(vec![
                    expr("zone", "In", &["zone1"]),
                    expr("disk", "DoesNotExist", &[]),
                ])]),
                &zone1,
                false,
            ),
            (
                "OR across terms",
                terms(vec![
                    term(vec![expr("zone", "In", &["zone3"])]),
                    term(vec![expr("disk", "Exists", &[])]),
                ]),
                &zone1,
                true,
            ),
            (
                "matchLabels and expressions ANDed",
                terms(vec![SelectorTerm {
                    match_labels: labels(&[("zone", "zone1")]),
                    match_expressions: vec![expr("disk", "In", &["hdd"])],
                }]),
                &zone1,
                false,
            ),
        ];
        for (name, spec, node_labels, want) in cases {
            let a = Affinity::compile(Some(&spec)).unwrap_or_else(|e| panic!("{name}: {e}"));
            let node = NodeRef {
                name: "n",
                uid: None,
                labels: node_labels,
            };
            assert_eq!(a.matches(&node), want, "{name}");
        }
    }

    #[test]
    fn names_and_uids_or_with_terms() {
        let spec = NodeAffinity {
            node_names: vec!["node-1".into(), "uid-7".into()],
            node_selector_terms: vec![SelectorTerm {
                match_labels: labels(&[("zone", "zone2")]),
                match_expressions: vec![],
            }],
        };
        let a = Affinity::compile(Some(&spec)).unwrap();
        let none = labels(&[]);
        let z2 = labels(&[("zone", "zone2")]);
        let n = |name, uid, l| NodeRef {
            name,
            uid,
            labels: l,
        };
        assert!(a.matches(&n("node-1", None, &none)));
        assert!(a.matches(&n("node-9", Some("uid-7"), &none)));
        assert!(a.matches(&n("node-9", None, &z2)));
        assert!(!a.matches(&n("node-9", Some("uid-8"), &none)));
        assert!(Affinity::compile(None)
            .unwrap()
            .matches(&n("x", None, &none)));
    }

    #[test]
    fn refuses_malformed_selectors() {
        let one = |e: Requirement| {
            terms(vec![SelectorTerm {
                match_labels: StringMap::new(),
                match_expressions: vec![e],
            }])
        };
        let cases: Vec<(NodeAffinity, &str)> = vec![
            (one(expr("zone", "Like", &["a"])), "nodeSelectorTerms[0].matchExpressions[0].operator: unknown operator \"Like\""),
            (one(expr("zone", "In", &[])), "nodeSelectorTerms[0].matchExpressions[0].values: operator In needs at least one value"),
            (one(expr("zone", "Exists", &["a"])), "operator Exists takes no values"),
            (one(expr("-zone", "Exists", &[])), "matchExpressions[0].key: label key \"-zone\" must start and end"),
            (one(expr("Bad_Prefix/zone", "Exists", &[])), "label key prefix \"Bad_Prefix\" must be a DNS subdomain"),
            (one(expr("zone", "In", &["a b"])), "values[0]: label value \"a b\""),
            (terms(vec![SelectorTerm::default()]), "nodeSelectorTerms[0]: empty term would select every node"),
            (
                NodeAffinity {
                    node_names: vec![" ".into()],
                    node_selector_terms: vec![],
                },
                "nodeNames[0]: empty node name",
            ),
        ];
        for (spec, want) in cases {
            let got = Affinity::compile(Some(&spec)).unwrap_err().to_string();
            assert!(got.contains(want), "got {got:?}, want {want:?}");
        }
    }
}
