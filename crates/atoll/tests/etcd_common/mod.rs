//! Helpers of the tests that run many hosts on a real etcd cluster.
//!
//! Nothing here is a double: [`etcd::EtcdCluster`] runs three
//! `/usr/bin/etcd` processes, [`fleet::Fleet`] runs one `atoll agent`
//! process per node against them, and every plugin call executes the real
//! `atoll-ipam` binary with the CNI variables in its environment and the
//! network config on stdin. The state is read back with the operator's
//! tools: `atoll get allocations -o json`, `atoll check`, `etcdctl`.
//!
//! Every process a helper starts is killed by a `Drop`, so that a failed
//! assertion (a panic) still stops the agents and the members and removes
//! their files.

// Each test binary compiles this module and may use a part of it.
#![allow(dead_code)]

pub mod etcd;
pub mod fleet;

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Polls `ready` every 20 ms until it returns true (then true) or `within`
/// passes (then false).
pub fn wait_until(within: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

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
