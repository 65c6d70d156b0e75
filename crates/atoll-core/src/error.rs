//! Errors of pool choice and allocation.
//!
//! Each names what an operator needs to act on the message alone: the
//! application, the node and its labels, and every pool tried with the
//! reason it was skipped.

use crate::choice::{describe_skipped, Skipped};
use crate::range::Family;
use crate::resource::StringMap;

/// Writes labels as `k=v,k=v`, or `no labels`.
pub fn describe_labels(labels: &StringMap) -> String {
    if labels.is_empty() {
        return "no labels".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Why no address could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// The node has not been registered with its labels.
    #[error("node {node:?} is unknown: start its agent or apply its v1/Node so that its labels are known")]
    UnknownNode {
        /// Node name.
        node: String,
    },
    /// A binding names a pool that does not exist.
    #[error("application {app}: pool {pool:?} (bound by {source_}) does not exist")]
    UnknownPool {
        /// Application, `namespace/name`.
        app: String,
        /// The pool name or UID as written.
        pool: String,
        /// Where the binding came from.
        source_: String,
    },
    /// Nothing binds the application to a pool and no pool is a default.
    #[error("application {app} on node {node}: no pool is bound (annotation ipam.atoll.dev/ippools, CNI config `pools`) and no pool is marked default")]
    NoPools {
        /// Application.
        app: String,
        /// Node name.
        node: String,
    },
    /// No bound pool serves the node for the family.
    #[error("application {app} on node {node} ({labels}): no bound {family} pool serves this node; pools tried: {}", describe_skipped(tried))]
    NoPoolMatches {
        /// Application.
        app: String,
        /// Node name.
        node: String,
        /// Node labels, `k=v,...`.
        labels: String,
        /// Family asked for.
        family: Family,
        /// Each bound pool and why it was skipped.
        tried: Vec<Skipped>,
    },
    /// Every serving pool, and the subnets they may borrow from, is full.
    #[error(
        "application {app} on node {node} ({labels}): no free {family} address; pools tried: {}",
        describe_skipped(tried)
    )]
    Exhausted {
        /// Application.
        app: String,
        /// Node name.
        node: String,
        /// Node labels, `k=v,...`.
        labels: String,
        /// Family asked for.
        family: Family,
        /// Each bound pool and why it was skipped.
        tried: Vec<Skipped>,
    },
}
