//! The allocation engine of atoll: everything that decides which address a
//! pod gets, and nothing that touches a file, a socket or a clock.
//!
//! - [`range`], [`rangeset`], [`freeset`]: addresses as integers, ranges, and
//!   the free-interval map that keeps cost independent of pool size.
//! - [`resource`], [`manifest`]: the `Subnet` and `IPPool` kinds and the
//!   Kubernetes kinds pool choice reads, from multi-document YAML.
//! - [`selector`]: node affinity with Kubernetes label-selector semantics.
//! - [`catalog`]: validation and the checked form of subnets and pools.
//! - [`binding`]: which pools an application asks for, by SPEC precedence.
//! - [`choice`], [`engine`]: pool choice, next-fit allocation, borrowing.
//! - [`drift`]: what moving nodes between subnets leaves behind.

#![warn(missing_docs)]

pub mod binding;
pub mod catalog;
pub mod choice;
pub mod drift;
pub mod engine;
pub mod error;
pub mod freeset;
pub mod manifest;
pub mod range;
pub mod rangeset;
pub mod resource;
pub mod selector;

pub use catalog::{Catalog, Invalid, PoolId, SubnetId, ValidationErrors};
pub use engine::{Allocation, Engine, Hold, Request, Usage};
pub use error::AllocError;
pub use range::Family;
