//! The allocator: which address a pod gets.
//!
//! An [`Engine`] holds a checked [`Catalog`], the nodes with their labels,
//! and, per pool, the free addresses as a [`FreeSet`] with a next-fit
//! cursor; per subnet, the free addresses that lie in no pool, from which
//! full pools borrow. It decides; it does not persist. The caller claims the
//! decided address in its store and tells the engine what happened:
//!
//! - claim won: nothing to do, the engine already counts the address held;
//! - claim lost (another writer holds it): nothing to do either, ask again
//!   and the engine moves on to the next free address;
//! - claim failed for another reason: [`Engine::release`] gives it back.
//!
//! Addresses held in the store are fed in with [`Engine::hold`] when the
//! engine is (re)built, so the engine never offers an address the store
//! already holds, whatever pool edits happened meanwhile.
//!
//! # Guarantees
//! - An address is offered at most once until it is released.
//! - An offered address lies in a pool that serves the node, or was borrowed
//!   into such a pool from its subnet; it is never a network, broadcast,
//!   gateway or excluded address.
//! - Memory and time depend on the number of ranges and held addresses,
//!   never on the size of a pool.

use std::collections::BTreeSet;

use rustc_hash::FxHashMap as HashMap;
use std::net::IpAddr;

use crate::catalog::{Catalog, PoolId, SubnetId};
use crate::choice::{Choice, SkipReason, Skipped};
use crate::error::{describe_labels, AllocError};
use crate::freeset::FreeSet;
use crate::range::{ip_to_u128, u128_to_ip, Family};
use crate::resource::{Node, StringMap};
use crate::selector::NodeRef;

/// One allocation request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Application, `namespace/name`, for messages.
    pub app: &'a str,
    /// Node the pod runs on; registered with [`Engine::upsert_node`].
    pub node: &'a str,
    /// Bound pools in order of preference.
    pub pools: &'a [PoolId],
    /// Family asked for.
    pub family: Family,
}

/// An address chosen for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    /// The address.
    pub ip: IpAddr,
    /// The pool it was allocated from.
    pub pool: PoolId,
    /// The pool's subnet.
    pub subnet: SubnetId,
    /// True when the address was borrowed from the subnet.
    pub borrowed: bool,
}

/// What [`Engine::hold`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Now held, in this pool (None: in a subnet but in no pool).
    Held {
        /// The pool that holds it, if any.
        pool: Option<PoolId>,
        /// True when it lies outside the pool's own addresses.
        borrowed: bool,
    },
    /// It was already held.
    AlreadyHeld,
    /// It is in no subnet, or reserved: nothing to mark.
    Outside,
}

/// Counters of a pool or subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Allocatable addresses (for a pool, its own plus those borrowed).
    pub total: u128,
    /// Held addresses.
    pub allocated: u128,
    /// Free addresses.
    pub free: u128,
    /// Held addresses borrowed from the subnet.
    pub borrowed: u128,
}

#[derive(Debug, Clone)]
struct PoolState {
    free: FreeSet,
    cursor: u128,
    /// Addresses borrowed into this pool from its subnet, free or held.
    borrowed: BTreeSet<u128>,
}

#[derive(Debug, Clone)]
struct SubnetState {
    /// Allocatable addresses of the subnet that lie in no pool and are not held.
    outside: FreeSet,
    cursor: u128,
}

#[derive(Debug, Clone)]
struct NodeEntry {
    name: String,
    uid: Option<String>,
    labels: StringMap,
    /// Bit i set when pool i serves the node.
    serves: Vec<u64>,
    /// `serves` split by the pools' family: [IPv4, IPv6].
    serves_family: [Vec<u64>; 2],
}

impl NodeEntry {
    fn served_by(&self, pool: PoolId) -> bool {
        self.serves
            .get(pool / 64)
            .is_some_and(|w| w & (1u64 << (pool % 64)) != 0)
    }
}

/// The allocation engine. See the module documentation.
#[derive(Debug, Clone)]
pub struct Engine {
    catalog: Catalog,
    pools: Vec<PoolState>,
    subnets: Vec<SubnetState>,
    /// (family, start, end, pool) of every pool's `ips`, sorted.
    ips_index: Vec<(Family, u128, u128, PoolId)>,
    borrowed_owner: HashMap<(Family, u128), PoolId>,
    nodes: HashMap<String, NodeEntry>,
    /// Where cursors of new pools start; see [`Engine::with_seed`].
    seed: u64,
    /// Bit i set when pool i is enabled and has a free address: with a
    /// node's `serves`, pool choice is one AND per bound pool.
    usable: Vec<u64>,
}

/// How far ahead of a cursor another writer's claim means it allocates
/// where this engine does.
const NEAR_CURSOR: u128 = 64;

/// The address `seed` places into a set (modulo its size); 0 for an empty set.
fn nth_address(set: &crate::rangeset::RangeSet, seed: u128) -> u128 {
    let total = set.len();
    if total == 0 {
        return 0;
    }
    let mut k = seed % total;
    for r in set.ranges() {
        if k < r.len() {
            return r.start() + k;
        }
        k -= r.len();
    }
    set.ranges()[0].start()
}

fn family_index(family: Family) -> usize {
    match family {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

fn bit(id: PoolId) -> (usize, u64) {
    (id / 64, 1u64 << (id % 64))
}

impl Engine {
    /// An engine with every allocatable address free, each pool's cursor at
    /// its first address.
    pub fn new(catalog: Catalog) -> Engine {
        Engine::with_seed(catalog, 0)
    }

    /// An engine whose next-fit cursors start `seed` addresses into each
    /// pool (modulo its size). Agents of several nodes that share a pool
    /// pass different seeds (a hash of the node name), so that they do not
    /// all chase the same next address and lose races for it in the store.
    pub fn with_seed(catalog: Catalog, seed: u64) -> Engine {
        let pools = catalog
            .pools()
            .iter()
            .map(|p| PoolState {
                free: FreeSet::from_rangeset(&p.allocatable),
                cursor: nth_address(&p.allocatable, seed as u128),
                borrowed: BTreeSet::new(),
            })
            .collect();
        let subnets = catalog
            .subnets()
            .iter()
            .enumerate()
            .map(|(sid, s)| {
                let in_pools = catalog
                    .pools()
                    .iter()
                    .filter(|p| p.subnet == sid)
                    .fold(crate::rangeset::RangeSet::new(), |acc, p| acc.union(&p.ips));
                let outside = s.allocatable.difference(&in_pools);
                SubnetState {
                    cursor: nth_address(&outside, seed as u128),
                    outside: FreeSet::from_rangeset(&outside),
                }
            })
            .collect();
        let mut ips_index: Vec<_> = catalog
            .pools()
            .iter()
            .enumerate()
            .flat_map(|(id, p)| {
                p.ips
                    .ranges()
                    .iter()
                    .map(move |r| (r.family(), r.start(), r.end(), id))
            })
            .collect();
        ips_index.sort();
        let words = catalog.pools().len().div_ceil(64);
        let mut engine = Engine {
            catalog,
            pools,
            subnets,
            ips_index,
            borrowed_owner: HashMap::default(),
            nodes: HashMap::default(),
            usable: vec![0; words],
            seed,
        };
        for id in 0..engine.pools.len() {
            engine.refresh_usable(id);
        }
        engine
    }

    /// Recomputes whether a pool may be chosen without borrowing.
    fn refresh_usable(&mut self, id: PoolId) {
        let (w, b) = bit(id);
        if !self.catalog.pools()[id].disabled && !self.pools[id].free.is_empty() {
            self.usable[w] |= b;
        } else {
            self.usable[w] &= !b;
        }
    }

    /// A new engine for an edited catalog that keeps the nodes and, for pools
    /// of the same name, the next-fit cursors. Held addresses must be fed in
    /// again with [`Engine::hold`].
    pub fn rebuild(&self, catalog: Catalog) -> Engine {
        let mut next = Engine::with_seed(catalog, self.seed);
        for (id, p) in next.catalog.pools().iter().enumerate() {
            if let Some(old) = self.catalog.pool_id(&p.name) {
                next.pools[id].cursor = self.pools[old].cursor;
            }
        }
        for (name, sid) in next
            .catalog
            .subnets()
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
        {
            if let Some(old) = self.catalog.subnet_id(&name) {
                next.subnets[sid].cursor = self.subnets[old].cursor;
            }
        }
        for n in self.nodes.values() {
            next.upsert_node_parts(&n.name, n.uid.clone(), n.labels.clone());
        }
        next
    }

    /// The catalog the engine serves.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Registers a node or updates its labels.
    pub fn upsert_node(&mut self, node: &Node) {
        self.upsert_node_parts(
            &node.metadata.name,
            node.metadata.uid.clone(),
            node.metadata.labels.clone(),
        );
    }

    fn upsert_node_parts(&mut self, name: &str, uid: Option<String>, labels: StringMap) {
        let words = self.catalog.pools().len().div_ceil(64);
        let mut serves = vec![0u64; words];
        let mut serves_family = [vec![0u64; words], vec![0u64; words]];
        let node = NodeRef {
            name,
            uid: uid.as_deref(),
            labels: &labels,
        };
        for (id, p) in self.catalog.pools().iter().enumerate() {
            if p.affinity.matches(&node) {
                serves[id / 64] |= 1u64 << (id % 64);
                serves_family[family_index(p.family)][id / 64] |= 1u64 << (id % 64);
            }
        }
        self.nodes.insert(
            name.to_string(),
            NodeEntry {
                name: name.to_string(),
                uid,
                labels,
                serves,
                serves_family,
            },
        );
    }

    /// The labels of a registered node.
    pub fn node_labels(&self, name: &str) -> Option<&StringMap> {
        self.nodes.get(name).map(|n| &n.labels)
    }

    /// Names of the registered nodes a pool serves, sorted.
    pub fn nodes_served_by(&self, pool: PoolId) -> Vec<String> {
        let mut v: Vec<String> = self
            .nodes
            .values()
            .filter(|n| n.served_by(pool))
            .map(|n| n.name.clone())
            .collect();
        v.sort();
        v
    }

    /// Pool ids for pool names or UIDs, in order.
    ///
    /// # Errors
    /// [`AllocError::UnknownPool`] for the first name that names no pool.
    pub fn resolve(
        &self,
        app: &str,
        source: &str,
        names: &[String],
    ) -> Result<Vec<PoolId>, AllocError> {
        names
            .iter()
            .map(|n| {
                self.catalog
                    .pool_id(n)
                    .ok_or_else(|| AllocError::UnknownPool {
                        app: app.to_string(),
                        pool: n.clone(),
                        source_: source.to_string(),
                    })
            })
            .collect()
    }

    fn node(&self, name: &str) -> Result<&NodeEntry, AllocError> {
        self.nodes.get(name).ok_or_else(|| AllocError::UnknownNode {
            node: name.to_string(),
        })
    }

    fn serves(&self, node: &NodeEntry, pool: PoolId, family: Family) -> bool {
        let p = &self.catalog.pools()[pool];
        !p.disabled && p.family == family && node.served_by(pool)
    }

    /// The families offered to a node by its bound pools, IPv4 first.
    ///
    /// # Errors
    /// [`AllocError::UnknownNode`].
    pub fn families(&self, node: &str, pools: &[PoolId]) -> Result<Vec<Family>, AllocError> {
        let n = self.node(node)?;
        let mut out = Vec::new();
        for fam in [Family::V4, Family::V6] {
            if pools.iter().any(|&p| self.serves(n, p, fam)) {
                out.push(fam);
            }
        }
        Ok(out)
    }

    /// Pool choice: the bound pools that can serve the node now, in order,
    /// and every other bound pool with the reason it cannot.
    ///
    /// # Errors
    /// [`AllocError::UnknownNode`].
    pub fn choose(
        &self,
        node: &str,
        pools: &[PoolId],
        family: Family,
    ) -> Result<Choice, AllocError> {
        let n = self.node(node)?;
        let mut choice = Choice::default();
        for &id in pools {
            let p = &self.catalog.pools()[id];
            let reason = if p.disabled {
                Some(SkipReason::Disabled)
            } else if p.family != family {
                Some(SkipReason::OtherFamily(p.family))
            } else if !n.served_by(id) {
                Some(SkipReason::AffinityMismatch)
            } else if !self.pools[id].free.is_empty() {
                None
            } else if p.borrow_step.is_none() {
                Some(SkipReason::PoolFull)
            } else if self.subnets[p.subnet].outside.is_empty() {
                Some(SkipReason::SubnetFull)
            } else {
                None
            };
            match reason {
                None => choice.candidates.push(id),
                Some(reason) => choice.skipped.push(Skipped {
                    pool: p.name.clone(),
                    reason,
                }),
            }
        }
        Ok(choice)
    }

    /// The first bound pool that serves the node, holds the family and has a
    /// free address without borrowing: pool choice's fast path, one AND per
    /// bound pool.
    ///
    /// # Errors
    /// [`AllocError::UnknownNode`].
    pub fn first_candidate(
        &self,
        node: &str,
        pools: &[PoolId],
        family: Family,
    ) -> Result<Option<PoolId>, AllocError> {
        Ok(Engine::first_usable(
            self.node(node)?,
            &self.usable,
            pools,
            family,
        ))
    }

    fn first_usable(
        node: &NodeEntry,
        usable: &[u64],
        pools: &[PoolId],
        family: Family,
    ) -> Option<PoolId> {
        let serves = &node.serves_family[family_index(family)];
        // Most bound pools miss on affinity: test that first, one load each.
        pools.iter().copied().find(|&id| {
            let (w, b) = bit(id);
            serves.get(w).is_some_and(|s| s & b != 0) && usable[w] & b != 0
        })
    }

    /// Allocates an address: the next free one after the cursor of the
    /// first serving pool that has one; when every serving pool is full, one
    /// borrowed from the subnet of the first serving pool that may borrow.
    ///
    /// # Errors
    /// [`AllocError::UnknownNode`]; [`AllocError::NoPoolMatches`] when no
    /// bound pool serves the node; [`AllocError::Exhausted`] when all that
    /// do, and their subnets, are full. Each names every pool tried.
    pub fn allocate(&mut self, req: &Request<'_>) -> Result<Allocation, AllocError> {
        let node = self.node(req.node)?;

        let first = Engine::first_usable(node, &self.usable, req.pools, req.family);

        // Every serving pool is full: the first that may borrow and whose
        // subnet has something to lend.
        let mut lender = None;
        if first.is_none() {
            lender = req.pools.iter().copied().find(|&id| {
                let p = &self.catalog.pools()[id];
                self.serves(node, id, req.family)
                    && p.borrow_step.is_some()
                    && !self.subnets[p.subnet].outside.is_empty()
            });
        }

        if let Some(id) = first {
            return Ok(self.take(id));
        }
        if let Some(id) = lender {
            self.borrow(id);
            return Ok(self.take(id));
        }
        Err(self.explain(req))
    }

    fn explain(&self, req: &Request<'_>) -> AllocError {
        let choice = match self.choose(req.node, req.pools, req.family) {
            Ok(c) => c,
            Err(e) => return e,
        };
        let labels = describe_labels(&self.nodes[req.node].labels);
        let any_serves = choice
            .skipped
            .iter()
            .any(|s| matches!(s.reason, SkipReason::PoolFull | SkipReason::SubnetFull));
        if req.pools.is_empty() {
            return AllocError::NoPools {
                app: req.app.to_string(),
                node: req.node.to_string(),
            };
        }
        if any_serves {
            AllocError::Exhausted {
                app: req.app.to_string(),
                node: req.node.to_string(),
                labels,
                family: req.family,
                tried: choice.skipped,
            }
        } else {
            AllocError::NoPoolMatches {
                app: req.app.to_string(),
                node: req.node.to_string(),
                labels,
                family: req.family,
                tried: choice.skipped,
            }
        }
    }

    /// Marks held an address another writer (another node's agent) just
    /// claimed, as a claim feed reports it. When it lies just ahead of this
    /// engine's cursor in the same pool, the other writer allocates where
    /// this one does, and following it would mean racing it for every next
    /// address: the cursor jumps away instead.
    pub fn hold_claimed_elsewhere(&mut self, ip: IpAddr, pool: &str) -> Hold {
        let held = self.hold(ip, Some(pool));
        if let Hold::Held { pool: Some(id), .. } = held {
            let v = ip_to_u128(ip);
            let cursor = self.pools[id].cursor;
            if v >= cursor && v - cursor <= NEAR_CURSOR {
                self.jump(id);
            }
        }
        held
    }

    /// Moves a pool's cursor far ahead (0.618 of the pool, wrapping). The
    /// agent calls it when it lost the race for an address: another agent
    /// is allocating from the same place, and following it address by
    /// address would lose every race again.
    pub fn jump(&mut self, id: PoolId) {
        let set = &self.catalog.pools()[id].allocatable;
        let total = set.len();
        if total < 2 {
            return;
        }
        let cursor = self.pools[id].cursor;
        let mut offset = 0u128;
        for r in set.ranges() {
            if cursor > r.end() {
                offset += r.len();
            } else {
                offset += cursor.saturating_sub(r.start());
                break;
            }
        }
        let stride = total
            .checked_mul(618)
            .map_or((total / 1000).saturating_mul(618), |x| x / 1000)
            .max(1);
        let target = (offset % total + stride) % total;
        self.pools[id].cursor = nth_address(set, target);
    }

    /// Takes the next free address of a pool that has one.
    fn take(&mut self, id: PoolId) -> Allocation {
        let p = &self.catalog.pools()[id];
        let state = &mut self.pools[id];
        let v = state
            .free
            .take_from(state.cursor)
            .expect("pool has a free address");
        state.cursor = if v >= p.family.max() { 0 } else { v + 1 };
        let allocation = Allocation {
            ip: u128_to_ip(p.family, v),
            pool: id,
            subnet: p.subnet,
            borrowed: state.borrowed.contains(&v),
        };
        if state.free.is_empty() {
            self.refresh_usable(id);
        }
        allocation
    }

    /// Moves up to `step` free addresses of the pool's subnet into the pool.
    /// Returns how many moved.
    fn borrow(&mut self, id: PoolId) -> u32 {
        let p = &self.catalog.pools()[id];
        let step = p.borrow_step.unwrap_or(0);
        let (family, sid) = (p.family, p.subnet);
        let mut moved = 0;
        while moved < step {
            let s = &mut self.subnets[sid];
            let Some(v) = s.outside.take_from(s.cursor) else {
                break;
            };
            s.cursor = if v >= family.max() { 0 } else { v + 1 };
            let pool = &mut self.pools[id];
            pool.free.insert(v);
            pool.borrowed.insert(v);
            self.borrowed_owner.insert((family, v), id);
            moved += 1;
        }
        self.refresh_usable(id);
        moved
    }

    fn pool_by_ips(&self, family: Family, v: u128) -> Option<PoolId> {
        let i = self
            .ips_index
            .partition_point(|&(f, _, end, _)| (f, end) < (family, v));
        self.ips_index
            .get(i)
            .filter(|&&(f, start, _, _)| f == family && start <= v)
            .map(|&(_, _, _, id)| id)
    }

    /// Marks an address held: one the store already holds, fed in at
    /// (re)build. `pool` is the pool the holder's record names, so that an
    /// address borrowed from a subnet is counted in the pool that borrowed it.
    pub fn hold(&mut self, ip: IpAddr, pool: Option<&str>) -> Hold {
        let (family, v) = (Family::of(ip), ip_to_u128(ip));
        let in_pool = self
            .pool_by_ips(family, v)
            .map(|id| (id, false))
            .or_else(|| self.borrowed_owner.get(&(family, v)).map(|&id| (id, true)));
        if let Some((id, borrowed)) = in_pool {
            if self.pools[id].free.remove(v) {
                self.refresh_usable(id);
                return Hold::Held {
                    pool: Some(id),
                    borrowed,
                };
            }
            return if borrowed || self.catalog.pools()[id].allocatable.contains(family, v) {
                Hold::AlreadyHeld
            } else {
                Hold::Outside
            };
        }

        let Some(sid) = self.catalog.subnet_of(ip) else {
            return Hold::Outside;
        };
        if !self.subnets[sid].outside.remove(v) {
            return if self.catalog.subnets()[sid].allocatable.contains(family, v) {
                Hold::AlreadyHeld
            } else {
                Hold::Outside
            };
        }
        let owner = pool
            .and_then(|name| self.catalog.pool_id(name))
            .filter(|&id| self.catalog.pools()[id].subnet == sid);
        if let Some(id) = owner {
            self.pools[id].borrowed.insert(v);
            self.borrowed_owner.insert((family, v), id);
        }
        Hold::Held {
            pool: owner,
            borrowed: true,
        }
    }

    /// Releases a held address. Returns true if and only if it was held and
    /// is now free. An address borrowed into a pool stays in that pool.
    pub fn release(&mut self, ip: IpAddr) -> bool {
        let (family, v) = (Family::of(ip), ip_to_u128(ip));
        let in_pool = match self.pool_by_ips(family, v) {
            Some(id) if self.catalog.pools()[id].allocatable.contains(family, v) => Some(id),
            Some(_) => return false,
            None => self.borrowed_owner.get(&(family, v)).copied(),
        };
        if let Some(id) = in_pool {
            let freed = self.pools[id].free.insert(v);
            if freed && self.pools[id].free.len() == 1 {
                self.refresh_usable(id);
            }
            return freed;
        }

        let Some(sid) = self.catalog.subnet_of(ip) else {
            return false;
        };
        self.catalog.subnets()[sid].allocatable.contains(family, v)
            && self.subnets[sid].outside.insert(v)
    }

    /// Returns true if and only if the engine would offer this address.
    pub fn is_free(&self, ip: IpAddr) -> bool {
        let (family, v) = (Family::of(ip), ip_to_u128(ip));
        if let Some(id) = self
            .pool_by_ips(family, v)
            .or_else(|| self.borrowed_owner.get(&(family, v)).copied())
        {
            return self.pools[id].free.contains(v);
        }
        self.catalog
            .subnet_of(ip)
            .is_some_and(|sid| self.subnets[sid].outside.contains(v))
    }

    /// Counters of a pool.
    pub fn pool_usage(&self, id: PoolId) -> Usage {
        let p = &self.catalog.pools()[id];
        let s = &self.pools[id];
        let total = p.allocatable.len().saturating_add(s.borrowed.len() as u128);
        let free = s.free.len();
        Usage {
            total,
            allocated: total.saturating_sub(free),
            free,
            borrowed: s.borrowed.iter().filter(|&&v| !s.free.contains(v)).count() as u128,
        }
    }

    /// Counters of a subnet: every allocatable address, held ones in or out of pools.
    pub fn subnet_usage(&self, sid: SubnetId) -> Usage {
        let s = &self.catalog.subnets()[sid];
        let total = s.allocatable.len();
        let mut free = self.subnets[sid].outside.len();
        let mut borrowed = 0;
        for (id, p) in self.catalog.pools().iter().enumerate() {
            if p.subnet == sid {
                let u = self.pool_usage(id);
                free = free.saturating_add(u.free);
                borrowed += u.borrowed;
            }
        }
        Usage {
            total,
            allocated: total.saturating_sub(free),
            free,
            borrowed,
        }
    }

    /// Addresses of the subnet that lie in no pool and are free: what full
    /// pools may borrow.
    pub fn lendable(&self, sid: SubnetId) -> u128 {
        self.subnets[sid].outside.len()
    }

    /// Memory cost of a pool's free set beyond its ranges, in stored
    /// 4,096-address blocks of 512 bytes (for benchmarks and metrics).
    pub fn pool_blocks(&self, id: PoolId) -> usize {
        self.pools[id].free.blocks()
    }
}
