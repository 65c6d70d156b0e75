//! The store contract of atoll (SPEC section 6) and the embedded backend.
//!
//! One [`Store`] trait, three backends: `embedded:<path>` (SQLite, in
//! [`embedded`]), `etcd:<endpoints>` (crate `atoll-etcd`) and `kubernetes`.
//! Every backend runs the checks of [`conformance`] in its tests.
//!
//! The data model is small on purpose:
//!
//! - **Objects**: subnets, pools, nodes, namespaces and workloads, each a JSON
//!   document under ([`Kind`], key) with a revision. Subnets and pools are
//!   written only through [`Store::apply`], a batch guarded by the resource
//!   generation, so that two operators applying at once cannot together
//!   produce a set that was never validated.
//! - **Claims**: one record per held address, keyed by (subnet, address).
//!   [`Store::claim`] creates it if absent, atomically, and says whether it
//!   was won; "taken" is an answer, not an error. Keying by subnet, not by
//!   pool, means an address borrowed into two pools at once is still won by
//!   one holder only.
//!
//! # Guarantees every backend gives
//! - `claim` is atomic: of any number of concurrent claims of one
//!   (subnet, address), across processes and hosts, exactly one wins.
//! - A claim that returned `Won` is durable: it survives a crash of any
//!   process, and of the host for the embedded backend (synced to disk).
//! - `release` deletes a record only if it is held by the given attachment.
//! - `apply` writes all of its changes or none.

#![warn(missing_docs)]

pub mod conformance;
pub mod embedded;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// The kinds of stored objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    /// `ipam.atoll.dev/v1alpha1` Subnet; key: name.
    Subnet,
    /// `ipam.atoll.dev/v1alpha1` IPPool; key: name.
    IPPool,
    /// `v1` Node; key: name.
    Node,
    /// `v1` Namespace; key: name.
    Namespace,
    /// A workload; key: `namespace/Kind/name`.
    Workload,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 5] = [
        Kind::Subnet,
        Kind::IPPool,
        Kind::Node,
        Kind::Namespace,
        Kind::Workload,
    ];

    /// Lower-case plural, used in keys and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Subnet => "subnets",
            Kind::IPPool => "ippools",
            Kind::Node => "nodes",
            Kind::Namespace => "namespaces",
            Kind::Workload => "workloads",
        }
    }

    /// Returns true for the kinds guarded by the resource generation.
    pub fn is_resource(self) -> bool {
        matches!(self, Kind::Subnet | Kind::IPPool)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The key of a workload object.
pub fn workload_key(namespace: &str, kind: &str, name: &str) -> String {
    format!("{namespace}/{kind}/{name}")
}

/// A stored object.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// Kind.
    pub kind: Kind,
    /// Key within the kind.
    pub key: String,
    /// The document, as the resource's JSON.
    pub value: serde_json::Value,
    /// Revision of the stored document; changes on every write.
    pub revision: u64,
}

/// One change of an [`Store::apply`] batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Create or replace.
    Put {
        /// Kind.
        kind: Kind,
        /// Key.
        key: String,
        /// Document.
        value: serde_json::Value,
    },
    /// Delete if present.
    Delete {
        /// Kind.
        kind: Kind,
        /// Key.
        key: String,
    },
}

/// The attachment a claim is held by: CNI's (container ID, interface).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Attachment {
    /// Container ID.
    pub container_id: String,
    /// Interface name in the container.
    pub ifname: String,
}

impl fmt::Display for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.container_id, self.ifname)
    }
}

/// One held address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The subnet of the address (part of the key).
    pub subnet: String,
    /// The address (part of the key).
    pub ip: IpAddr,
    /// The pool it was allocated from.
    pub pool: String,
    /// The holder.
    pub attachment: Attachment,
    /// The node of the holder.
    pub node: String,
    /// The application, `namespace/name`, when known.
    #[serde(default)]
    pub app: String,
    /// The CNI network the attachment belongs to: GC of one network leaves
    /// the claims of another alone. Empty for claims made outside CNI.
    #[serde(default)]
    pub network: String,
    /// True when borrowed from the subnet, outside the pool's own addresses.
    #[serde(default)]
    pub borrowed: bool,
    /// Seconds since the Unix epoch when claimed (set by the store).
    #[serde(default)]
    pub created: u64,
}

/// Result of [`Store::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The record was created: the address is ours.
    Won,
    /// The record exists already, so nothing was written. `holder` may be
    /// the caller's own attachment if it claimed the address before.
    Taken {
        /// The holder found.
        holder: Attachment,
    },
}

/// A change to the claims, as a store that can watch them reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimEvent {
    /// A claim was written.
    Held(Claim),
    /// A claim was deleted.
    Released(Claim),
    /// Events may have been missed (a watch was lost and made again): re-list.
    Resync,
}

/// Failures of a store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or has no quorum; worth retrying later.
    #[error("store {store} unavailable: {reason}")]
    Unavailable {
        /// The store, with its endpoints or path.
        store: String,
        /// What failed.
        reason: String,
    },
    /// A guarded write lost against a concurrent writer.
    #[error(
        "conflict on {what}: expected generation {expected}, found {found}; re-read and retry"
    )]
    Conflict {
        /// What was guarded.
        what: String,
        /// The generation the writer read.
        expected: u64,
        /// The generation found.
        found: u64,
    },
    /// A stored record cannot be decoded.
    #[error("corrupt record {key}: {reason}")]
    Corrupt {
        /// The record's key.
        key: String,
        /// Why it cannot be read.
        reason: String,
    },
    /// The `--store` argument cannot be understood.
    #[error("bad store address {given:?}: {reason}")]
    BadAddress {
        /// As given.
        given: String,
        /// Why.
        reason: String,
    },
    /// Any other failure of the backend.
    #[error("store {store}: {reason}")]
    Backend {
        /// The store.
        store: String,
        /// What failed.
        reason: String,
    },
}

/// The store contract. See the crate documentation for its guarantees.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// A short description for messages: `embedded:/path` or `etcd:a,b,c`.
    fn describe(&self) -> String;

    /// Every object of a kind, sorted by key.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], [`StoreError::Corrupt`].
    async fn list(&self, kind: Kind) -> Result<Vec<Object>, StoreError>;

    /// One object.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn get(&self, kind: Kind, key: &str) -> Result<Option<Object>, StoreError>;

    /// Creates or replaces a node, namespace or workload (not a subnet or
    /// pool: those go through [`Store::apply`]). Returns the new revision.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn put(
        &self,
        kind: Kind,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<u64, StoreError>;

    /// The resource generation: a counter bumped by every [`Store::apply`].
    /// Cheap; agents call it to learn whether subnets or pools changed.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn generation(&self) -> Result<u64, StoreError>;

    /// Writes a batch of changes, all or nothing, if the resource generation
    /// is still `expected`. Returns the new generation.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] if another apply came first.
    async fn apply(&self, changes: &[Change], expected: u64) -> Result<u64, StoreError>;

    /// Claims an address: creates the record for (subnet, ip) if absent.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`]. The claim may still have been written
    /// when the answer, not the request, was lost (etcd can commit a request
    /// after the client gave up on it); the record is then held by the
    /// caller's attachment, so the caller asks [`Store::claims_of`] before it
    /// claims again for that attachment.
    async fn claim(&self, claim: &Claim) -> Result<ClaimOutcome, StoreError>;

    /// Deletes the record for (subnet, ip) if and only if `holder` holds it.
    /// Returns true if a record was deleted.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn release(
        &self,
        subnet: &str,
        ip: IpAddr,
        holder: &Attachment,
    ) -> Result<bool, StoreError>;

    /// The claims held by one attachment (one per family at most).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    async fn claims_of(&self, holder: &Attachment) -> Result<Vec<Claim>, StoreError>;

    /// Every claim, or those of one node.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], [`StoreError::Corrupt`].
    async fn list_claims(&self, node: Option<&str>) -> Result<Vec<Claim>, StoreError>;

    /// A feed of claim changes by every writer, for caches, if the backend
    /// can watch (etcd). None when it cannot (the embedded store, where a
    /// lost race costs a local transaction only). A feed may lag or drop
    /// events; it then sends [`ClaimEvent::Resync`], or the receiver reports
    /// that it lagged: either way the cache re-lists.
    fn claim_events(&self) -> Option<tokio::sync::broadcast::Receiver<ClaimEvent>> {
        None
    }
}

/// A shared store.
pub type SharedStore = Arc<dyn Store>;

/// The default path of the embedded store.
pub const DEFAULT_EMBEDDED_PATH: &str = "/var/lib/atoll/atoll.db";

/// Opens `embedded:<path>`. Other schemes are opened by the crates that
/// implement them; `atoll` dispatches on the prefix.
///
/// # Errors
/// [`StoreError::BadAddress`] for another scheme, or the open error.
pub async fn open_embedded(address: &str) -> Result<SharedStore, StoreError> {
    let path = address
        .strip_prefix("embedded:")
        .ok_or_else(|| StoreError::BadAddress {
            given: address.to_string(),
            reason: "expected embedded:<path>".into(),
        })?;
    let path = if path.is_empty() {
        DEFAULT_EMBEDDED_PATH
    } else {
        path
    };
    Ok(Arc::new(embedded::EmbeddedStore::open(path)?))
}
