//! `atoll delete`, `release`, `check` and `gc`. (Being written.)

use std::fmt;

use atoll_store::SharedStore;

use crate::cli::ObjectKind;

/// What `atoll check` found.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// One line per problem.
    pub problems: Vec<String>,
    /// Claims audited.
    pub claims: usize,
}

impl CheckReport {
    /// Returns true if and only if nothing was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.problems {
            writeln!(f, "{p}")?;
        }
        writeln!(f, "{} claims checked, {} problem(s)", self.claims, self.problems.len())
    }
}

/// `atoll delete`.
///
/// # Errors
/// The store's.
pub async fn delete(_store: &SharedStore, _kind: ObjectKind, _name: &str) -> anyhow::Result<String> {
    anyhow::bail!("delete is not written yet")
}

/// `atoll release`.
///
/// # Errors
/// The store's.
pub async fn release(_store: &SharedStore, _target: &str, _ifname: &str) -> anyhow::Result<String> {
    anyhow::bail!("release is not written yet")
}

/// `atoll check`.
///
/// # Errors
/// The store's.
pub async fn check(_store: &SharedStore) -> anyhow::Result<CheckReport> {
    anyhow::bail!("check is not written yet")
}

/// `atoll gc`.
///
/// # Errors
/// The store's.
pub async fn gc(_store: &SharedStore, _node: &str, _keep: &[String]) -> anyhow::Result<String> {
    anyhow::bail!("gc is not written yet")
}
