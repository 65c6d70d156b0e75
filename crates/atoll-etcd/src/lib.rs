//! The etcd v3 backend of atoll's store (SPEC section 6), chosen with
//! `--store etcd:<endpoint>[,<endpoint>...]`.
//!
//! # Key layout
//!
//! Every key starts with the prefix (default `/atoll/`, see
//! [`EtcdOptions::prefix`]):
//!
//! - `<prefix>objects/<kind>/<key>`: an object's JSON document; `<kind>` is
//!   [`Kind::as_str`], `<key>` as given (workload keys contain `/`).
//! - `<prefix>generation`: the resource generation, a decimal number;
//!   absent means 0.
//! - `<prefix>applied-by`: the ID of the last apply.
//! - `<prefix>claims/<subnet>/<ip>`: a [`Claim`] as JSON, with one more
//!   field, `claim_id`, naming the call that wrote it.
//! - `<prefix>holders/<container_id>/<ifname>/<subnet>/<ip>`: the same
//!   record, indexed by holder.
//! - `<prefix>nodes/<node>/<subnet>/<ip>`: the same record, indexed by node.
//!
//! Subnet, node, container ID and interface are escaped (`%` to `%25`, `/`
//! to `%2F`) so that no two names share a key. Revisions are etcd
//! `mod_revision`s.
//!
//! # How the guarantees are kept
//!
//! - **Claims are atomic.** A claim is one transaction: if the claim key's
//!   `create_revision` is 0 (the key does not exist), put the claim and both
//!   index entries; otherwise read the claim key. etcd serialises
//!   transactions through raft, so of any number of concurrent claims of one
//!   address exactly one finds the key absent. The index entries are written
//!   and deleted in the same transactions as the claim, so
//!   [`Store::claims_of`] and [`Store::list_claims`] for a node are prefix
//!   reads that always agree with the claims.
//! - **Claims are durable** once etcd acknowledged them: committed on a
//!   majority of members.
//! - **Release checks the holder.** The claim is read, and deleted with its
//!   index entries in a transaction that compares its `mod_revision` with the
//!   one read, so a claim released and re-claimed by another holder in
//!   between is left alone.
//! - **Apply is all or nothing**, one transaction comparing the generation
//!   key with the expected value and writing every change, the next
//!   generation and `applied-by`.
//! - **Retries are recognisable.** An attempt whose answer was lost may have
//!   been applied, and the failover between endpoints then sends it again. A
//!   claim record carries a `claim_id` unique to the call, and `applied-by`
//!   the ID of the apply, so a retry that finds its own write reports
//!   success instead of "taken" or "conflict".
//! - **Unavailability is bounded.** Each operation tries the endpoints in
//!   turn for at most [`EtcdOptions::request_timeout`], then fails with
//!   [`StoreError::Unavailable`] naming the endpoints. With no quorum etcd
//!   commits nothing, so nothing is half-written; work resumes when quorum
//!   returns, without reopening the store.
//!
//! The generation is served from a cache fed by a watch on the generation key.
//!
//! # Caveats
//!
//! - etcd cannot say whether a request that got no answer was applied. An
//!   operation that failed with [`StoreError::Unavailable`] after such an
//!   attempt (a timeout during a leader election, say) may still be
//!   committed afterwards. A claim committed so is held by the caller's
//!   attachment: [`Store::claims_of`] shows it and [`Store::release`] frees
//!   it. A claim made while the cluster has no leader is refused at once and
//!   never committed.
//! - The cached generation can lag another process's apply by the watch's
//!   delay (milliseconds); an apply based on it fails with
//!   [`StoreError::Conflict`] rather than overwrite.

#![warn(missing_docs)]

mod claims;
mod cluster;
mod generation;
mod keys;
mod options;
#[cfg(feature = "testing")]
pub mod testing;

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use atoll_store::{
    Attachment, Change, Claim, ClaimEvent, ClaimOutcome, Kind, Object, Store, StoreError,
};
use etcd_client::{
    Compare, CompareOp, GetOptions, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use tokio::task::JoinHandle;
use tracing::{debug, info};

pub use options::{EtcdOptions, DEFAULT_PREFIX};

use cluster::{is_compacted, Cluster};
use generation::GenerationCache;
use keys::{prefix_end, Layout};

/// How many keys one page of a listing reads.
const PAGE: i64 = 500;

/// How often a listing restarts when its snapshot revision was compacted
/// while it was reading.
const LIST_RESTARTS: usize = 3;

/// How often a release re-reads a claim that changed under it.
const RELEASE_TRIES: usize = 8;

/// The etcd store. Cheap to share behind an `Arc`; dropping it stops its
/// watches.
pub struct EtcdStore {
    cluster: Arc<Cluster>,
    layout: Layout,
    generation: Arc<GenerationCache>,
    watcher: JoinHandle<()>,
    /// The claims feed, started by the first [`Store::claim_events`] call
    /// (an agent), not by one-shot CLI commands.
    claims_feed: std::sync::OnceLock<(tokio::sync::broadcast::Sender<ClaimEvent>, JoinHandle<()>)>,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("store", &self.cluster.describe())
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        self.watcher.abort();
        if let Some((_, task)) = self.claims_feed.get() {
            task.abort();
        }
    }
}

/// How many claim events a slow agent may fall behind before it re-lists.
const CLAIM_EVENTS: usize = 4096;

/// Opens `etcd:<endpoint>[,<endpoint>...]`.
///
/// Connects lazily: an unreachable cluster is not an error here, but every
/// operation fails with [`StoreError::Unavailable`] until it is reachable.
/// Must be called within a Tokio runtime; it starts the generation watch.
///
/// # Errors
/// [`StoreError::BadAddress`] when the address or the options are wrong or
/// a TLS file cannot be read; [`StoreError::Backend`] outside a Tokio
/// runtime.
pub async fn open(address: &str, opts: EtcdOptions) -> Result<EtcdStore, StoreError> {
    let checked = options::check(address, &opts)?;
    let cluster = Arc::new(Cluster::new(address, &checked.endpoints, &opts)?);
    let layout = Layout::new(&checked.prefix);

    let runtime = tokio::runtime::Handle::try_current().map_err(|e| StoreError::Backend {
        store: cluster.describe().to_string(),
        reason: format!("needs a Tokio runtime: {e}"),
    })?;
    let generation = Arc::new(GenerationCache::default());
    let watcher = runtime.spawn(generation::follow(
        cluster.clone(),
        layout.generation(),
        generation.clone(),
    ));

    info!(store = %cluster.describe(), prefix = %checked.prefix, "opened etcd store");
    Ok(EtcdStore {
        cluster,
        layout,
        generation,
        watcher,
        claims_feed: std::sync::OnceLock::new(),
        runtime,
    })
}

impl EtcdStore {
    /// True while [`Store::generation`] is served from the watch on the
    /// generation key; false while it falls back to reading the key (the
    /// watch is being set up again). For health reports.
    pub fn watching_generation(&self) -> bool {
        self.generation.current().is_some()
    }

    /// Reads every key under `prefix`, in key order, as one snapshot: the
    /// first page fixes the revision, the others read at it.
    async fn range_all(&self, what: &str, prefix: &str) -> Result<Vec<KeyValue>, StoreError> {
        let end = prefix_end(prefix.as_bytes());
        let mut restarts = 0;
        'listing: loop {
            let mut out = Vec::new();
            let mut from = prefix.as_bytes().to_vec();
            let mut revision = 0;
            loop {
                let options = GetOptions::new()
                    .with_range(end.clone())
                    .with_limit(PAGE)
                    .with_revision(revision);
                let page = self
                    .cluster
                    .run(what, |mut client| {
                        let (from, options) = (from.clone(), options.clone());
                        async move {
                            match client.get(from, Some(options)).await {
                                // Reported as a value, so that it is not retried
                                // against the other endpoints.
                                Err(e) if is_compacted(&e) => Ok(None),
                                other => other.map(Some),
                            }
                        }
                    })
                    .await?;
                let Some(mut page) = page else {
                    restarts += 1;
                    if restarts > LIST_RESTARTS {
                        return Err(
                            self.backend(format!("{what}: the snapshot keeps being compacted"))
                        );
                    }
                    debug!(
                        operation = what,
                        "listing snapshot compacted; starting again"
                    );
                    continue 'listing;
                };
                if revision == 0 {
                    revision = page.header().map(|h| h.revision()).unwrap_or_default();
                }
                let more = page.more();
                let kvs = page.take_kvs();
                if let Some(last) = kvs.last() {
                    from = last.key().to_vec();
                    from.push(0);
                }
                out.extend(kvs);
                if !more {
                    return Ok(out);
                }
            }
        }
    }

    /// Reads one key.
    async fn get_key(&self, what: &str, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let mut response = self
            .cluster
            .run(
                what,
                |mut client| async move { client.get(key, None).await },
            )
            .await?;
        Ok(response.take_kvs().into_iter().next())
    }

    async fn txn(&self, what: &str, txn: Txn) -> Result<etcd_client::TxnResponse, StoreError> {
        self.cluster
            .run(what, |mut client| {
                let txn = txn.clone();
                async move { client.txn(txn).await }
            })
            .await
    }

    fn backend(&self, reason: String) -> StoreError {
        StoreError::Backend {
            store: self.cluster.describe().to_string(),
            reason,
        }
    }

    /// The key and text of a stored record, for decoding.
    fn text<'a>(&self, kv: &'a KeyValue) -> (String, Result<&'a str, String>) {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let text = std::str::from_utf8(kv.value()).map_err(|e| format!("not UTF-8: {e}"));
        (key, text)
    }

    fn decode_object(&self, kind: Kind, kv: &KeyValue) -> Result<Object, StoreError> {
        let (key, text) = self.text(kv);
        let corrupt = |reason: String| StoreError::Corrupt {
            key: key.clone(),
            reason,
        };
        let value = serde_json::from_str(text.map_err(corrupt)?)
            .map_err(|e| corrupt(format!("not JSON: {e}")))?;
        let name = key
            .strip_prefix(&self.layout.objects(kind))
            .unwrap_or(&key)
            .to_string();
        Ok(Object {
            kind,
            key: name,
            value,
            revision: revision(kv),
        })
    }

    fn decode_claim(&self, kv: &KeyValue) -> Result<(Claim, Option<String>), StoreError> {
        let (key, text) = self.text(kv);
        let corrupt = |reason: String| StoreError::Corrupt {
            key: key.clone(),
            reason,
        };
        let text = text.map_err(corrupt)?;
        let claim: Claim =
            serde_json::from_str(text).map_err(|e| corrupt(format!("not a claim: {e}")))?;
        let id = serde_json::from_str::<ClaimId>(text)
            .ok()
            .and_then(|c| c.claim_id);
        Ok((claim, id))
    }

    fn decode_claims(&self, kvs: &[KeyValue]) -> Result<Vec<Claim>, StoreError> {
        let mut claims = kvs
            .iter()
            .map(|kv| self.decode_claim(kv).map(|(claim, _)| claim))
            .collect::<Result<Vec<_>, _>>()?;
        claims.sort_by(|a, b| (&a.subnet, a.ip).cmp(&(&b.subnet, b.ip)));
        Ok(claims)
    }
}

/// The ID a claim record carries besides the [`Claim`] fields.
#[derive(serde::Deserialize)]
struct ClaimId {
    claim_id: Option<String>,
}

/// An ID unique to one call: process ID, a per-process random number and a
/// counter.
fn unique_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        hasher.finish()
    });
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}-{seed:016x}-{count:x}", std::process::id())
}

fn revision(kv: &KeyValue) -> u64 {
    u64::try_from(kv.mod_revision()).unwrap_or_default()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Keeps the last change of each (kind, key), in order: etcd refuses a
/// transaction that writes one key twice, and the last change is the one a
/// sequential application would leave.
fn last_change_per_key(changes: &[Change]) -> Vec<&Change> {
    let key_of = |c: &Change| match c {
        Change::Put { kind, key, .. } | Change::Delete { kind, key } => (*kind, key.clone()),
    };
    let mut last = HashMap::new();
    for (index, change) in changes.iter().enumerate() {
        last.insert(key_of(change), index);
    }
    changes
        .iter()
        .enumerate()
        .filter(|(i, c)| last[&key_of(c)] == *i)
        .map(|(_, c)| c)
        .collect()
}

#[async_trait]
impl Store for EtcdStore {
    fn describe(&self) -> String {
        self.cluster.describe().to_string()
    }

    /// # Guarantees
    /// One snapshot of the kind, read at one revision across pages.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], [`StoreError::Corrupt`].
    async fn list(&self, kind: Kind) -> Result<Vec<Object>, StoreError> {
        let kvs = self
            .range_all("list objects", &self.layout.objects(kind))
            .await?;
        kvs.iter().map(|kv| self.decode_object(kind, kv)).collect()
    }

    /// # Errors
    /// [`StoreError::Unavailable`], [`StoreError::Corrupt`].
    async fn get(&self, kind: Kind, key: &str) -> Result<Option<Object>, StoreError> {
        let kv = self
            .get_key("get object", &self.layout.object(kind, key))
            .await?;
        kv.map(|kv| self.decode_object(kind, &kv)).transpose()
    }

    /// # Errors
    /// [`StoreError::Unavailable`]; [`StoreError::Backend`] for a subnet or
    /// pool, which only [`Store::apply`] writes.
    async fn put(
        &self,
        kind: Kind,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<u64, StoreError> {
        if kind.is_resource() {
            return Err(self.backend(format!(
                "put {kind}/{key}: subnets and pools are written through apply"
            )));
        }
        let key = self.layout.object(kind, key);
        let body = value.to_string();
        let response = self
            .cluster
            .run("put object", |mut client| {
                let (key, body) = (key.clone(), body.clone());
                async move { client.put(key, body, None::<PutOptions>).await }
            })
            .await?;
        let revision = response.header().map(|h| h.revision()).unwrap_or_default();
        Ok(u64::try_from(revision).unwrap_or_default())
    }

    /// # Guarantees
    /// Served from memory while the watch on the generation key is up; a
    /// linearizable read otherwise. Never older than this store's own last
    /// [`Store::apply`].
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], [`StoreError::Corrupt`].
    async fn generation(&self) -> Result<u64, StoreError> {
        if let Some(value) = self.generation.current() {
            return Ok(value);
        }
        let key = self.layout.generation();
        match self.get_key("read generation", &key).await? {
            Some(kv) => generation::parse(&key, kv.value()),
            None => Ok(0),
        }
    }

    /// # Guarantees
    /// One transaction: every change, the next generation and `applied-by`
    /// are written if and only if the generation is still `expected`. A retry
    /// (after a lost answer) that finds its own apply done returns its
    /// generation.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] if another apply came first;
    /// [`StoreError::Unavailable`]; [`StoreError::Backend`] when etcd refuses
    /// the transaction (more operations than its `--max-txn-ops`, default
    /// 128, or larger than `--max-request-bytes`).
    async fn apply(&self, changes: &[Change], expected: u64) -> Result<u64, StoreError> {
        let generation_key = self.layout.generation();
        let applied_by_key = self.layout.applied_by();
        let id = unique_id();
        let next = expected + 1;

        // TODO: a batch of more than 126 distinct keys exceeds etcd's default
        // --max-txn-ops and is refused as a whole; splitting it would lose
        // atomicity, so large manifests need the cluster's limit raised.
        let mut ops: Vec<TxnOp> = last_change_per_key(changes)
            .into_iter()
            .map(|change| match change {
                Change::Put { kind, key, value } => {
                    TxnOp::put(self.layout.object(*kind, key), value.to_string(), None)
                }
                Change::Delete { kind, key } => TxnOp::delete(self.layout.object(*kind, key), None),
            })
            .collect();
        ops.push(TxnOp::put(generation_key.clone(), next.to_string(), None));
        ops.push(TxnOp::put(applied_by_key.clone(), id.clone(), None));

        let guard = if expected == 0 {
            Compare::version(generation_key.clone(), CompareOp::Equal, 0)
        } else {
            Compare::value(
                generation_key.clone(),
                CompareOp::Equal,
                expected.to_string(),
            )
        };
        let txn = Txn::new().when([guard]).and_then(ops).or_else([
            TxnOp::get(generation_key.clone(), None),
            TxnOp::get(applied_by_key, None),
        ]);
        let response = self.txn("apply", txn).await?;
        let revision = response.header().map(|h| h.revision()).unwrap_or_default();

        if response.succeeded() {
            self.generation.observe(next, revision);
            info!(
                store = %self.cluster.describe(),
                generation = next,
                changes = changes.len(),
                "applied"
            );
            return Ok(next);
        }

        let mut found = 0;
        let mut applied_by = None;
        for (index, op) in response.op_responses().into_iter().enumerate() {
            if let TxnOpResponse::Get(get) = op {
                if let Some(kv) = get.kvs().first() {
                    if index == 0 {
                        found = generation::parse(&generation_key, kv.value())?;
                    } else {
                        applied_by = Some(kv.value().to_vec());
                    }
                }
            }
        }
        if found == next && applied_by.as_deref() == Some(id.as_bytes()) {
            debug!(
                generation = next,
                "apply found done by its own earlier attempt"
            );
            self.generation.observe(next, revision);
            return Ok(next);
        }
        Err(StoreError::Conflict {
            what: "resources".into(),
            expected,
            found,
        })
    }

    /// # Guarantees
    /// One transaction creates the claim and its index entries if the claim
    /// key does not exist; of concurrent claims of one address exactly one
    /// wins. A retry (after a lost answer) that finds the record this call
    /// wrote returns [`ClaimOutcome::Won`]. A claim that returned
    /// [`StoreError::Unavailable`] after such a lost answer may still have
    /// been written; the holder's next claim or release sees it.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`]; with no quorum nothing is written.
    async fn claim(&self, claim: &Claim) -> Result<ClaimOutcome, StoreError> {
        let id = unique_id();
        let mut record = serde_json::to_value(Claim {
            created: now_secs(),
            ..claim.clone()
        })
        .map_err(|e| self.backend(format!("cannot encode claim: {e}")))?;
        if let Some(fields) = record.as_object_mut() {
            fields.insert("claim_id".into(), serde_json::Value::String(id.clone()));
        }
        let body = record.to_string();

        let claim_key = self.layout.claim(&claim.subnet, claim.ip);
        let txn = Txn::new()
            .when([Compare::create_revision(
                claim_key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then([
                TxnOp::put(claim_key.clone(), body.clone(), None),
                TxnOp::put(
                    self.layout
                        .holder_claim(&claim.attachment, &claim.subnet, claim.ip),
                    body.clone(),
                    None,
                ),
                TxnOp::put(
                    self.layout.node_claim(&claim.node, &claim.subnet, claim.ip),
                    body,
                    None,
                ),
            ])
            .or_else([TxnOp::get(claim_key.clone(), None)]);
        let response = self.txn("claim", txn).await?;
        if response.succeeded() {
            debug!(subnet = %claim.subnet, ip = %claim.ip, holder = %claim.attachment, "claim won");
            return Ok(ClaimOutcome::Won);
        }

        let held = response.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(mut get) => get.take_kvs().into_iter().next(),
            _ => None,
        });
        let Some(held) = held else {
            return Err(self.backend(format!("claim {claim_key}: exists but could not be read")));
        };
        let (holder, holder_id) = self.decode_claim(&held)?;
        if holder_id.as_deref() == Some(id.as_str()) {
            debug!(
                subnet = %claim.subnet,
                ip = %claim.ip,
                "claim found won by its own earlier attempt"
            );
            return Ok(ClaimOutcome::Won);
        }
        debug!(subnet = %claim.subnet, ip = %claim.ip, holder = %holder.attachment, "claim taken");
        Ok(ClaimOutcome::Taken {
            holder: holder.attachment,
        })
    }

    /// # Guarantees
    /// Deletes the claim and its index entries in one transaction, only if
    /// the claim is unchanged since it was read and held by `holder`. A retry
    /// (after a lost answer) that finds the claim gone returns false.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], [`StoreError::Corrupt`].
    async fn release(
        &self,
        subnet: &str,
        ip: IpAddr,
        holder: &Attachment,
    ) -> Result<bool, StoreError> {
        let claim_key = self.layout.claim(subnet, ip);
        for _ in 0..RELEASE_TRIES {
            let Some(kv) = self.get_key("read claim", &claim_key).await? else {
                return Ok(false);
            };
            let (held, _) = self.decode_claim(&kv)?;
            if held.attachment != *holder {
                return Ok(false);
            }

            let txn = Txn::new()
                .when([Compare::mod_revision(
                    claim_key.clone(),
                    CompareOp::Equal,
                    kv.mod_revision(),
                )])
                .and_then([
                    TxnOp::delete(claim_key.clone(), None),
                    TxnOp::delete(self.layout.holder_claim(&held.attachment, subnet, ip), None),
                    TxnOp::delete(self.layout.node_claim(&held.node, subnet, ip), None),
                ]);
            if self.txn("release", txn).await?.succeeded() {
                debug!(subnet, ip = %ip, holder = %holder, "released");
                return Ok(true);
            }
            debug!(subnet, ip = %ip, "claim changed while releasing; reading again");
        }
        Err(self.backend(format!("release {claim_key}: the claim kept changing")))
    }

    /// # Guarantees
    /// One prefix read of the holder index, which changes only together with
    /// the claims.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], [`StoreError::Corrupt`].
    async fn claims_of(&self, holder: &Attachment) -> Result<Vec<Claim>, StoreError> {
        let kvs = self
            .range_all("claims of holder", &self.layout.holder(holder))
            .await?;
        let mut claims = self.decode_claims(&kvs)?;
        claims.retain(|c| c.attachment == *holder);
        Ok(claims)
    }

    /// # Guarantees
    /// One snapshot, sorted by subnet and address.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`], [`StoreError::Corrupt`].
    fn claim_events(&self) -> Option<tokio::sync::broadcast::Receiver<ClaimEvent>> {
        let (sender, _) = self.claims_feed.get_or_init(|| {
            let (sender, _) = tokio::sync::broadcast::channel(CLAIM_EVENTS);
            let task = self.runtime.spawn(claims::follow(
                self.cluster.clone(),
                self.layout.claims(),
                sender.clone(),
            ));
            (sender, task)
        });
        Some(sender.subscribe())
    }

    async fn list_claims(&self, node: Option<&str>) -> Result<Vec<Claim>, StoreError> {
        let prefix = match node {
            Some(node) => self.layout.node(node),
            None => self.layout.claims(),
        };
        let kvs = self.range_all("list claims", &prefix).await?;
        self.decode_claims(&kvs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(kind: Kind, key: &str, n: i64) -> Change {
        Change::Put {
            kind,
            key: key.into(),
            value: serde_json::json!(n),
        }
    }

    #[test]
    fn keeps_the_last_change_of_each_key() {
        let changes = [
            put(Kind::Subnet, "a", 1),
            put(Kind::IPPool, "a", 2),
            Change::Delete {
                kind: Kind::Subnet,
                key: "a".into(),
            },
            put(Kind::Subnet, "b", 3),
            put(Kind::Subnet, "b", 4),
        ];
        let kept: Vec<Change> = last_change_per_key(&changes).into_iter().cloned().collect();
        assert_eq!(
            kept,
            vec![
                put(Kind::IPPool, "a", 2),
                Change::Delete {
                    kind: Kind::Subnet,
                    key: "a".into()
                },
                put(Kind::Subnet, "b", 4),
            ]
        );
    }

    #[test]
    fn ids_are_unique() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| unique_id()).collect();
        assert_eq!(ids.len(), 1000);
    }
}
