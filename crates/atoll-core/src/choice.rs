//! Pool choice: of the pools an application is bound to, which may serve a
//! node, in which order, and why the others may not.

use std::fmt;

use crate::catalog::PoolId;
use crate::range::Family;

/// Why a bound pool was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The pool's node affinity does not match the node.
    AffinityMismatch,
    /// The pool holds addresses of the other family.
    OtherFamily(Family),
    /// The pool is disabled.
    Disabled,
    /// Every address of the pool is held and the pool does not borrow.
    PoolFull,
    /// Every address of the pool is held and its subnet has nothing to lend.
    SubnetFull,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::AffinityMismatch => f.write_str("affinity did not match"),
            SkipReason::OtherFamily(fam) => write!(f, "holds {fam} addresses"),
            SkipReason::Disabled => f.write_str("disabled"),
            SkipReason::PoolFull => f.write_str("full (borrowing disabled)"),
            SkipReason::SubnetFull => {
                f.write_str("full, and its subnet has no free address to lend")
            }
        }
    }
}

/// A pool not used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Pool name.
    pub pool: String,
    /// Why.
    pub reason: SkipReason,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pool, self.reason)
    }
}

/// The outcome of pool choice for one node and family.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Choice {
    /// Pools that serve the node and have (or can borrow) a free address, in binding order.
    pub candidates: Vec<PoolId>,
    /// Every other bound pool, in binding order, with the reason.
    pub skipped: Vec<Skipped>,
}

/// Writes `a: reason; b: reason` for messages.
pub fn describe_skipped(skipped: &[Skipped]) -> String {
    if skipped.is_empty() {
        return "none".into();
    }
    skipped
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
