//! The agent's allocation service: one node, one store, one engine.
//!
//! Each request runs in three steps, and the engine lock is held only for
//! the first and the last, never across a store round trip, so requests for
//! different containers run in parallel:
//!
//! 1. **choose** under the lock: the engine picks the next free address and
//!    counts it held;
//! 2. **claim** in the store, create-if-absent, without the lock;
//! 3. **settle** under the lock: won, done; taken by another writer, the
//!    engine keeps it held and the loop picks the next one; failed, the
//!    engine gets it back.
//!
//! ADD is all or nothing: a dual-stack ADD whose second family fails
//! releases the first. DEL is best effort: it goes on past errors and
//! reports them together.
//!
//! The engine is a cache of the store. It is rebuilt when the resource
//! generation moves (subnets or pools applied), and its claims are reloaded
//! when a pool looks exhausted, since other agents and the CLI release
//! addresses the cache does not see.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use atoll_core::binding::{
    owner_chain, parse_pool_list, resolve_binding, BindingInputs, BindingSource,
};
use atoll_core::error::describe_labels;
use atoll_core::resource::{Dns, IPPool, Namespace, Node, Route, StringMap, Subnet, Workload};
use atoll_core::{AllocError, Catalog, Engine, Family, Request};
use atoll_store::{
    workload_key, Attachment, Claim, ClaimEvent, ClaimOutcome, Kind, SharedStore, StoreError,
};
use tokio::sync::broadcast;
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

/// How many lost races one ADD tolerates before it asks the runtime to retry.
const MAX_LOST_RACES: usize = 256;

/// What an ADD asks for.
#[derive(Debug, Clone)]
pub struct AddRequest {
    /// The attachment.
    pub attachment: Attachment,
    /// The CNI network name.
    pub network: String,
    /// The `pools` of the CNI network config.
    pub cni_pools: Vec<String>,
    /// `CNI_ARGS`, parsed.
    pub args: BTreeMap<String, String>,
}

/// One address of a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpResult {
    /// The address.
    pub address: IpAddr,
    /// Prefix length of its subnet.
    pub prefix_len: u8,
    /// The subnet's gateway.
    pub gateway: Option<IpAddr>,
    /// The pool.
    pub pool: String,
    /// The subnet.
    pub subnet: String,
}

/// What an ADD returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AddResult {
    /// One address per family.
    pub ips: Vec<IpResult>,
    /// Routes of the subnets.
    pub routes: Vec<Route>,
    /// DNS of the first subnet that has some.
    pub dns: Option<Dns>,
}

/// Failures of the service, each with a CNI code.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Pool choice or allocation failed.
    #[error(transparent)]
    Alloc(#[from] AllocError),
    /// The binding could not be read or names an unknown application.
    #[error("{0}")]
    Binding(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Too many lost races in a row.
    #[error(
        "container {attachment}: lost {races} races for addresses to other writers; try again"
    )]
    Contended {
        /// The attachment.
        attachment: String,
        /// How many races were lost.
        races: usize,
    },
    /// CHECK found other addresses than expected.
    #[error("container {attachment} holds {held:?}, expected {expected:?}")]
    Mismatch {
        /// The attachment.
        attachment: String,
        /// What it holds.
        held: Vec<String>,
        /// What the runtime expected.
        expected: Vec<String>,
    },
    /// Stored resources do not validate (they were written around `apply`).
    #[error("stored subnets and pools are invalid: {0}")]
    InvalidResources(String),
    /// Several failures of a best-effort operation.
    #[error("{}", .0.join("; "))]
    Several(Vec<String>),
}

impl AgentError {
    /// The CNI error code.
    pub fn code(&self) -> u32 {
        use atoll_cni::codes::*;
        match self {
            AgentError::Alloc(AllocError::NoPoolMatches { .. })
            | AgentError::Alloc(AllocError::NoPools { .. }) => NO_POOL_MATCHES,
            AgentError::Alloc(AllocError::Exhausted { .. }) => EXHAUSTED,
            AgentError::Alloc(AllocError::UnknownPool { .. }) | AgentError::Binding(_) => {
                UNKNOWN_POOL
            }
            AgentError::Alloc(AllocError::UnknownNode { .. }) => UNKNOWN_NODE,
            AgentError::Store(StoreError::Unavailable { .. }) | AgentError::Contended { .. } => {
                TRY_AGAIN_LATER
            }
            AgentError::Mismatch { .. } => ADDRESS_MISMATCH,
            AgentError::Store(_) | AgentError::InvalidResources(_) | AgentError::Several(_) => {
                INTERNAL
            }
        }
    }
}

struct State {
    engine: Engine,
    generation: Option<u64>,
    /// Workloads by key `namespace/Kind/name`, refreshed with the generation.
    workloads: HashMap<String, Workload>,
    /// Namespaces by name, refreshed with the generation.
    namespaces: HashMap<String, Namespace>,
    /// This node's claims by attachment: the runtime sends a container's
    /// requests to its own node's agent, so this map is complete for new
    /// attachments and a new ADD needs no look-up round trip.
    held: HashMap<Attachment, Vec<Claim>>,
    /// Attachments whose claim failed with the store unavailable: the claim
    /// may still have been written (etcd can commit a request whose answer
    /// was lost), so their next ADD asks the store before claiming.
    uncertain: HashSet<Attachment>,
}

/// The allocation service of one node.
pub struct Service {
    store: SharedStore,
    node: String,
    state: Mutex<State>,
    /// One lock per attachment with a request in flight, so that two
    /// requests for one attachment never interleave.
    inflight: std::sync::Mutex<HashMap<Attachment, Arc<Mutex<()>>>>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("node", &self.node)
            .field("store", &self.store.describe())
            .finish()
    }
}

/// A seed for this node's next-fit cursors: agents of nodes that share a
/// pool start at different places in it instead of racing for one address.
fn cursor_seed(node: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    // DefaultHasher::new() has fixed keys: the same node gets the same seed
    // across restarts.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    node.hash(&mut h);
    h.finish()
}

fn decode<T: serde::de::DeserializeOwned>(
    kind: Kind,
    key: &str,
    value: serde_json::Value,
) -> Result<T, StoreError> {
    serde_json::from_value(value).map_err(|e| StoreError::Corrupt {
        key: format!("{kind}/{key}"),
        reason: e.to_string(),
    })
}

impl Service {
    /// A service for `node`. Registers the node: with `labels` when given
    /// (they replace what is stored), else with the labels already stored.
    ///
    /// # Errors
    /// The store's.
    pub async fn start(
        store: SharedStore,
        node: &str,
        labels: Option<StringMap>,
    ) -> Result<Service, AgentError> {
        let stored = store.get(Kind::Node, node).await?;
        let mut n: Node = match stored {
            Some(o) => decode(Kind::Node, node, o.value)?,
            None => Node::new(node, &[]),
        };
        n.metadata.name = node.to_string();
        if let Some(labels) = labels {
            n.metadata.labels = labels;
        }
        let value = serde_json::to_value(&n).expect("a node serialises");
        store.put(Kind::Node, node, &value).await?;
        info!(node, labels = %describe_labels(&n.metadata.labels), store = %store.describe(), "node registered");

        let service = Service {
            store,
            node: node.to_string(),
            state: Mutex::new(State {
                engine: Engine::with_seed(Catalog::default(), cursor_seed(node)),
                generation: None,
                workloads: HashMap::new(),
                namespaces: HashMap::new(),
                held: HashMap::new(),
                uncertain: HashSet::new(),
            }),
            inflight: std::sync::Mutex::new(HashMap::new()),
        };
        service.refresh(true).await?;
        Ok(service)
    }

    /// Follows the store's claim feed, when it has one (etcd), so that the
    /// engine learns what other agents claim and release: fewer lost races,
    /// and released addresses seen without re-listing. Returns the task, or
    /// None for a store without a feed.
    pub fn follow_claims(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let mut events = self.store.claim_events()?;
        let service = Arc::clone(self);
        Some(tokio::spawn(async move {
            loop {
                let event = events.recv().await;
                match event {
                    Ok(ClaimEvent::Held(c)) if c.node != service.node => {
                        let mut state = service.state.lock().await;
                        state.engine.hold_claimed_elsewhere(c.ip, &c.pool);
                    }
                    // This agent's own claims are in its engine already.
                    Ok(ClaimEvent::Held(_)) => {}
                    Ok(ClaimEvent::Released(c)) => {
                        let mut state = service.state.lock().await;
                        if let Some(claims) = state.held.get_mut(&c.attachment) {
                            claims.retain(|x| x.ip != c.ip);
                            if claims.is_empty() {
                                state.held.remove(&c.attachment);
                            }
                        }
                        state.engine.release(c.ip);
                    }
                    Ok(ClaimEvent::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        debug!(node = %service.node, "claim feed asks for a re-list");
                        if let Err(e) = service.refresh(true).await {
                            warn!(node = %service.node, error = %e, "re-list after the claim feed failed");
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        }))
    }

    /// The node this service allocates for.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The store.
    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// Rebuilds the engine if the resources changed, or always when `force`.
    async fn refresh(&self, force: bool) -> Result<(), AgentError> {
        let generation = self.store.generation().await?;
        {
            let state = self.state.lock().await;
            if !force && state.generation == Some(generation) {
                return Ok(());
            }
        }

        // Read everything without the lock, then swap.
        let mut subnets = Vec::new();
        for o in self.store.list(Kind::Subnet).await? {
            subnets.push(decode::<Subnet>(Kind::Subnet, &o.key, o.value)?);
        }
        let mut pools = Vec::new();
        for o in self.store.list(Kind::IPPool).await? {
            pools.push(decode::<IPPool>(Kind::IPPool, &o.key, o.value)?);
        }
        let catalog = Catalog::build(subnets, pools)
            .map_err(|e| AgentError::InvalidResources(e.to_string()))?;
        let mut nodes = Vec::new();
        for o in self.store.list(Kind::Node).await? {
            nodes.push(decode::<Node>(Kind::Node, &o.key, o.value)?);
        }
        let mut workloads = HashMap::new();
        for o in self.store.list(Kind::Workload).await? {
            workloads.insert(
                o.key.clone(),
                decode::<Workload>(Kind::Workload, &o.key, o.value)?,
            );
        }
        let mut namespaces = HashMap::new();
        for o in self.store.list(Kind::Namespace).await? {
            namespaces.insert(
                o.key.clone(),
                decode::<Namespace>(Kind::Namespace, &o.key, o.value)?,
            );
        }
        let claims = self.store.list_claims(None).await?;
        let mut held: HashMap<Attachment, Vec<Claim>> = HashMap::new();
        for c in claims.iter().filter(|c| c.node == self.node) {
            held.entry(c.attachment.clone())
                .or_default()
                .push(c.clone());
        }

        let mut state = self.state.lock().await;
        let mut engine = state.engine.rebuild(catalog);
        for n in &nodes {
            engine.upsert_node(n);
        }
        for c in &claims {
            engine.hold(c.ip, Some(&c.pool));
        }
        debug!(
            generation,
            subnets = engine.catalog().subnets().len(),
            pools = engine.catalog().pools().len(),
            claims = claims.len(),
            "engine rebuilt"
        );
        state.engine = engine;
        state.generation = Some(generation);
        state.workloads = workloads;
        state.namespaces = namespaces;
        state.held = held;
        Ok(())
    }

    /// Finds the pools of the application behind a request, and the
    /// application's name, from the cached workloads and namespaces.
    async fn binding(
        &self,
        req: &AddRequest,
    ) -> Result<(String, Vec<String>, BindingSource), AgentError> {
        let args = &req.args;
        let state = self.state.lock().await;
        let pod_ns = args.get("K8S_POD_NAMESPACE").cloned();
        let pod_name = args.get("K8S_POD_NAME").cloned();

        // The workload: a pod known to the store, or ATOLL_APP=<namespace>/<name>.
        let (app, workload) = if let Some(app) = args.get("ATOLL_APP") {
            let (ns, name) = app
                .split_once('/')
                .filter(|(ns, n)| !ns.is_empty() && !n.is_empty())
                .ok_or_else(|| {
                    AgentError::Binding(format!("ATOLL_APP={app:?}: expected <namespace>/<name>"))
                })?;
            // Prefer controllers over pods of the same name.
            let found = [
                "Deployment",
                "StatefulSet",
                "DaemonSet",
                "CronJob",
                "Job",
                "ReplicaSet",
                "Pod",
            ]
            .iter()
            .find_map(|kind| state.workloads.get(&workload_key(ns, kind, name)));
            let Some(found) = found else {
                return Err(AgentError::Binding(format!(
                    "ATOLL_APP={app}: no workload {name} in namespace {ns}; apply it with `atoll apply`"
                )));
            };
            (app.clone(), Some(found))
        } else if let (Some(ns), Some(name)) = (&pod_ns, &pod_name) {
            let pod = state.workloads.get(&workload_key(ns, "Pod", name));
            (format!("{ns}/{name}"), pod)
        } else {
            (
                format!("{}/{}", req.network, req.attachment.container_id),
                None,
            )
        };

        // Explicit pools in CNI_ARGS come first: the runtime's caller chose them.
        if let Some(list) = args.get("ATOLL_POOLS") {
            let pools = parse_pool_list(list).ok_or_else(|| {
                AgentError::Binding(format!(
                    "ATOLL_POOLS={list:?} is not a comma-separated list of pool names"
                ))
            })?;
            return Ok((app, pools, BindingSource::Pod));
        }

        // Owners, nearest first.
        let mut owners: Vec<(String, StringMap)> = Vec::new();
        let mut pod_annotations = None;
        let namespace_name = workload
            .and_then(|w| w.metadata.namespace.clone())
            .or(pod_ns.clone());
        if let Some(w) = workload {
            // A pod's own annotations, or a workload's pod template.
            let mut annotations = w.template_annotations.clone();
            if w.kind == "Pod" {
                annotations.extend(w.metadata.annotations.clone());
            } else {
                owners.push((
                    format!("{}/{}", w.kind, w.key()),
                    w.metadata.annotations.clone(),
                ));
            }
            pod_annotations = Some(annotations);
            for o in owner_chain(w, |ns, kind, name| {
                state.workloads.get(&workload_key(ns, kind, name)).cloned()
            }) {
                owners.push((
                    format!("{}/{}", o.kind, o.key()),
                    o.metadata.annotations.clone(),
                ));
            }
        }
        let namespace = namespace_name
            .as_ref()
            .and_then(|ns| state.namespaces.get(ns));
        let defaults = state.engine.catalog().default_pools();
        let binding = resolve_binding(&BindingInputs {
            pod_annotations: pod_annotations.as_ref(),
            owners: &owners,
            namespace: namespace.map(|n| (n.metadata.name.as_str(), &n.metadata.annotations)),
            cni_pools: &req.cni_pools,
            default_pools: &defaults,
        })
        .map_err(|e| AgentError::Binding(e.to_string()))?;
        Ok((app, binding.pools, binding.source))
    }

    /// The lock of one attachment; requests for one attachment run one at a time.
    fn attachment_lock(&self, attachment: &Attachment) -> Arc<Mutex<()>> {
        let mut map = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        // Forget locks nobody holds, so the map stays as small as the work in flight.
        map.retain(|_, l| Arc::strong_count(l) > 1);
        map.entry(attachment.clone()).or_default().clone()
    }

    fn result_of(&self, engine: &Engine, claims: &[Claim]) -> AddResult {
        let mut out = AddResult::default();
        let mut seen = HashSet::new();
        for c in claims {
            let Some(sid) = engine.catalog().subnet_id(&c.subnet) else {
                out.ips.push(IpResult {
                    address: c.ip,
                    prefix_len: if c.ip.is_ipv4() { 32 } else { 128 },
                    gateway: None,
                    pool: c.pool.clone(),
                    subnet: c.subnet.clone(),
                });
                continue;
            };
            let s = &engine.catalog().subnets()[sid];
            out.ips.push(IpResult {
                address: c.ip,
                prefix_len: s.prefix_len,
                gateway: s.gateway,
                pool: c.pool.clone(),
                subnet: s.name.clone(),
            });
            if seen.insert(sid) {
                out.routes.extend(s.routes.iter().cloned());
                if out.dns.is_none() {
                    out.dns = s.dns.clone();
                }
            }
        }
        out.ips.sort_by_key(|i| i.address.is_ipv6());
        out
    }

    /// ADD: one address per family offered by the application's pools that
    /// serve this node. Idempotent: the same attachment gets the same addresses.
    ///
    /// # Errors
    /// See [`AgentError`]; nothing stays claimed on error.
    pub async fn add(&self, req: &AddRequest) -> Result<AddResult, AgentError> {
        let lock = self.attachment_lock(&req.attachment);
        let _serial = lock.lock().await;
        self.refresh(false).await?;

        // A repeated ADD, or one after a claim whose answer was lost: ask
        // the store, which the CLI or a late commit may have changed, and
        // answer what the attachment holds.
        // TODO: a dual-stack attachment found holding one family only (a
        // failed undo, then a retry) is answered with that family alone.
        let must_ask = {
            let state = self.state.lock().await;
            state.held.contains_key(&req.attachment) || state.uncertain.contains(&req.attachment)
        };
        if must_ask {
            let existing = self.store.claims_of(&req.attachment).await?;
            let mut state = self.state.lock().await;
            state.uncertain.remove(&req.attachment);
            if !existing.is_empty() {
                debug!(container = %req.attachment, "ADD repeated: same addresses");
                for c in &existing {
                    state.engine.hold(c.ip, Some(&c.pool));
                }
                state.held.insert(req.attachment.clone(), existing.clone());
                return Ok(self.result_of(&state.engine, &existing));
            }
            state.held.remove(&req.attachment);
        }

        let (app, names, source) = self.binding(req).await?;
        let (pools, families) = {
            let state = self.state.lock().await;
            let pools = state.engine.resolve(&app, &source.to_string(), &names)?;
            let mut families = state.engine.families(&self.node, &pools)?;
            if families.is_empty() {
                families.push(Family::V4);
            }
            (pools, families)
        };

        let mut claimed: Vec<Claim> = Vec::new();
        for family in families {
            match self.claim_one(req, &app, &pools, family).await {
                Ok(c) => claimed.push(c),
                Err(e) => {
                    self.undo(&claimed).await;
                    return Err(e);
                }
            }
        }

        let mut state = self.state.lock().await;
        state.held.insert(req.attachment.clone(), claimed.clone());
        for c in &claimed {
            info!(
                container = %req.attachment.container_id,
                ifname = %req.attachment.ifname,
                node = %self.node,
                app = %app,
                pool = %c.pool,
                subnet = %c.subnet,
                ip = %c.ip,
                borrowed = c.borrowed,
                "allocated"
            );
        }
        Ok(self.result_of(&state.engine, &claimed))
    }

    async fn claim_one(
        &self,
        req: &AddRequest,
        app: &str,
        pools: &[usize],
        family: Family,
    ) -> Result<Claim, AgentError> {
        let mut reloaded = false;
        for races in 0..=MAX_LOST_RACES {
            let chosen = {
                let mut state = self.state.lock().await;
                let r = state.engine.allocate(&Request {
                    app,
                    node: &self.node,
                    pools,
                    family,
                });
                r.map(|a| {
                    let cat = state.engine.catalog();
                    (
                        a,
                        cat.pools()[a.pool].name.clone(),
                        cat.subnets()[a.subnet].name.clone(),
                    )
                })
            };
            let (a, pool, subnet) = match chosen {
                Ok(x) => x,
                Err(AllocError::Exhausted { .. }) if !reloaded => {
                    // Others may have released what this cache still counts held.
                    reloaded = true;
                    self.refresh(true).await?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };

            let claim = Claim {
                subnet,
                ip: a.ip,
                pool,
                attachment: req.attachment.clone(),
                node: self.node.clone(),
                app: app.to_string(),
                network: req.network.clone(),
                borrowed: a.borrowed,
                created: 0,
            };
            match self.store.claim(&claim).await {
                Ok(ClaimOutcome::Won) => return Ok(claim),
                Ok(ClaimOutcome::Taken { holder }) if holder == req.attachment => {
                    // An earlier claim of ours whose answer was lost did land.
                    debug!(ip = %a.ip, "found this attachment's own earlier claim");
                    return Ok(claim);
                }
                Ok(ClaimOutcome::Taken { holder }) => {
                    debug!(ip = %a.ip, holder = %holder, races, "address taken by another writer; moving on");
                    // Another agent allocates here: leave its path.
                    self.state.lock().await.engine.jump(a.pool);
                }
                Err(e) => {
                    let mut state = self.state.lock().await;
                    state.engine.release(a.ip);
                    if matches!(e, StoreError::Unavailable { .. }) {
                        state.uncertain.insert(req.attachment.clone());
                    }
                    return Err(e.into());
                }
            }
        }
        Err(AgentError::Contended {
            attachment: req.attachment.to_string(),
            races: MAX_LOST_RACES,
        })
    }

    async fn undo(&self, claimed: &[Claim]) {
        for c in claimed {
            match self.store.release(&c.subnet, c.ip, &c.attachment).await {
                Ok(_) => {
                    self.state.lock().await.engine.release(c.ip);
                }
                Err(e) => {
                    warn!(ip = %c.ip, container = %c.attachment, error = %e, "undo of a partial ADD failed; `atoll gc` will reclaim it")
                }
            }
        }
    }

    /// DEL: releases what the attachment holds. Succeeds when it holds nothing.
    ///
    /// # Errors
    /// Every release that failed, together.
    pub async fn del(&self, attachment: &Attachment) -> Result<(), AgentError> {
        let lock = self.attachment_lock(attachment);
        let _serial = lock.lock().await;
        let cached = self.state.lock().await.held.remove(attachment);
        let claims = match cached {
            Some(c) => c,
            None => self.store.claims_of(attachment).await?,
        };
        let mut errors = Vec::new();
        for c in &claims {
            match self.store.release(&c.subnet, c.ip, attachment).await {
                Ok(released) => {
                    self.state.lock().await.engine.release(c.ip);
                    if released {
                        info!(container = %attachment.container_id, ifname = %attachment.ifname, node = %self.node, pool = %c.pool, ip = %c.ip, "released");
                    }
                }
                Err(e) => errors.push(format!("release {} of {attachment}: {e}", c.ip)),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            // Keep what could not be released in view, so a retried DEL tries again.
            self.state
                .lock()
                .await
                .held
                .insert(attachment.clone(), claims);
            Err(AgentError::Several(errors))
        }
    }

    /// CHECK: the attachment holds exactly the expected addresses.
    ///
    /// # Errors
    /// [`AgentError::Mismatch`].
    pub async fn check(
        &self,
        attachment: &Attachment,
        expected: &[IpAddr],
    ) -> Result<(), AgentError> {
        let held: BTreeSet<IpAddr> = self
            .store
            .claims_of(attachment)
            .await?
            .into_iter()
            .map(|c| c.ip)
            .collect();
        let want: BTreeSet<IpAddr> = expected.iter().copied().collect();
        if held.is_empty() || held != want {
            return Err(AgentError::Mismatch {
                attachment: attachment.to_string(),
                held: held.iter().map(ToString::to_string).collect(),
                expected: want.iter().map(ToString::to_string).collect(),
            });
        }
        Ok(())
    }

    /// GC: releases every claim of this node and network whose attachment
    /// is not valid.
    /// Returns the released claims.
    ///
    /// # Errors
    /// Every release that failed, together.
    pub async fn gc(&self, network: &str, valid: &[Attachment]) -> Result<Vec<Claim>, AgentError> {
        let valid: HashSet<&Attachment> = valid.iter().collect();
        let mut released = Vec::new();
        let mut errors = Vec::new();
        for c in self.store.list_claims(Some(&self.node)).await? {
            // Another network's attachments are not in this list.
            if c.network != network || valid.contains(&c.attachment) {
                continue;
            }
            match self.store.release(&c.subnet, c.ip, &c.attachment).await {
                Ok(true) => {
                    let mut state = self.state.lock().await;
                    state.engine.release(c.ip);
                    state.held.remove(&c.attachment);
                    drop(state);
                    info!(container = %c.attachment.container_id, ifname = %c.attachment.ifname, node = %self.node, pool = %c.pool, ip = %c.ip, "released by gc");
                    released.push(c);
                }
                Ok(false) => {}
                Err(e) => errors.push(format!("release {} of {}: {e}", c.ip, c.attachment)),
            }
        }
        if errors.is_empty() {
            Ok(released)
        } else {
            Err(AgentError::Several(errors))
        }
    }

    /// STATUS: the store answers and the engine is current.
    ///
    /// # Errors
    /// The store's.
    pub async fn status(&self) -> Result<(), AgentError> {
        self.refresh(false).await
    }
}
