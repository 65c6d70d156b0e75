//! Helpers of the tests that run many hosts on a real etcd cluster.
//!
//! Nothing here is a double: [`etcd::EtcdCluster`] runs three
//! `/usr/bin/etcd` processes, [`fleet::Fleet`] runs one `atoll agent`
//! process per node against them (`crate::common::Agent`), and every plugin
//! call executes the real `atoll-ipam` binary with the CNI variables in its
//! environment and the network config on stdin (`crate::common::Cni`).
//! The state is read back with the operator's tools: `atoll get allocations
//! -o json`, `atoll check`, `etcdctl`.
//!
//! Every process a helper starts is killed by a `Drop`, so that a failed
//! assertion (a panic) still stops the agents and the members and removes
//! their files.

// The test binary uses a part of this module; the rest would warn as dead
// code.
#![allow(dead_code)]

pub mod etcd;
pub mod fleet;

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Holds every other test of this binary off while one runs.
///
/// Each test runs three etcd members, twenty agents and dozens of plugin
/// processes. Two such tests at once on a small machine starve etcd's
/// heartbeats into elections nobody asked for, and a test about a fault
/// would then see faults it did not make.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    // A test that failed while holding the lock leaves nothing behind
    // (its Drops ran), so the next one may go on.
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}
