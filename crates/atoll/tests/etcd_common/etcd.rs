//! A real three-member etcd cluster on 127.0.0.1.
//!
//! The members are an [`testing::EtcdCluster`] of `atoll_etcd::testing`
//! (Debian's `/usr/bin/etcd`, data on tmpfs when `/dev/shm` exists) on the
//! first free block of ports from 24000 on ([`Ports::FreeFrom`]), so that
//! several test processes (and several clusters of one process) do not
//! meet. Everything the tests learn about the cluster (health, the leader,
//! what a member holds) they learn from `/usr/bin/etcdctl`, the operator's
//! tool, not from the client library under test.
//!
//! Dropping an [`EtcdCluster`] kills every member and removes the data, also
//! when a test panics; a panicking test prints the end of each member's log
//! first.

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use atoll_etcd::testing::{self, Ports, ETCD};
use serde_json::Value;

use crate::common::wait_until;

pub use atoll_etcd::testing::MEMBERS;

/// The etcd command line client.
pub const ETCDCTL: &str = "/usr/bin/etcdctl";

/// The first port of the range the clusters take their ports from.
const FIRST_PORT: u16 = 24_000;

/// How long a member may take to serve a linearizable read after it starts.
pub const MEMBER_START: Duration = Duration::from_secs(30);

/// A running three-member cluster, asked with `etcdctl`. Starting, killing,
/// stopping and the logs are [`testing::EtcdCluster`]'s.
pub struct EtcdCluster {
    cluster: testing::EtcdCluster,
}

impl Deref for EtcdCluster {
    type Target = testing::EtcdCluster;

    fn deref(&self) -> &testing::EtcdCluster {
        &self.cluster
    }
}

impl DerefMut for EtcdCluster {
    fn deref_mut(&mut self) -> &mut testing::EtcdCluster {
        &mut self.cluster
    }
}

impl EtcdCluster {
    /// Starts three members and waits until each serves a linearizable
    /// read. Tries the next block of ports when a member cannot bind its
    /// ports (another process took them between the check and the start).
    pub fn start() -> EtcdCluster {
        assert!(
            Path::new(ETCD).is_file() && Path::new(ETCDCTL).is_file(),
            "{ETCD} and {ETCDCTL} are needed: apt-get install etcd-server etcd-client"
        );
        let mut failures = Vec::new();
        for _ in 0..5 {
            let mut cluster = EtcdCluster {
                cluster: testing::EtcdCluster::launch(Ports::FreeFrom(FIRST_PORT), false),
            };
            let base = cluster.base();
            match (0..MEMBERS).try_for_each(|n| cluster.try_wait_healthy(n, MEMBER_START)) {
                Ok(()) => return cluster,
                Err(why) => {
                    let logs: Vec<String> = (0..MEMBERS).map(|n| cluster.log_tail(n)).collect();
                    if logs.iter().any(|l| l.contains("address already in use")) {
                        failures.push(format!("ports {base}..: {why}"));
                        continue;
                    }
                    panic!(
                        "etcd on ports {base}.. did not start: {why}\n{}",
                        logs.join("\n")
                    );
                }
            }
        }
        panic!("no free ports for etcd: {failures:?}");
    }

    /// `etcd:<every endpoint>`, the `--store` of the agents and the CLI.
    pub fn store(&self) -> String {
        self.address()
    }

    /// Waits until member `n` serves a linearizable read (which needs a
    /// quorum). Fails when the member exits or the time passes.
    fn try_wait_healthy(&mut self, n: usize, within: Duration) -> Result<(), String> {
        let endpoint = self.endpoint(n);
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited(n) {
                return Err(format!("member {n} exited: {status}"));
            }
            let Err(last) = etcdctl(&endpoint, &["endpoint", "health"]) else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                return Err(format!("member {n} not healthy within {within:?}: {last}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until member `n` is healthy; panics with its log if it is not
    /// within [`MEMBER_START`].
    pub fn wait_healthy(&mut self, n: usize) {
        if let Err(why) = self.try_wait_healthy(n, MEMBER_START) {
            panic!("{why}\n{}", self.log_tail(n));
        }
    }

    /// Starts member `n` again on its data directory and waits until it is
    /// healthy (which needs a quorum to be back).
    pub fn restart(&mut self, n: usize) {
        self.spawn(n);
        self.wait_healthy(n);
    }

    /// What member `n` says of itself: (its ID, the leader's ID, 0 when it
    /// knows of none), or `None` when it does not answer.
    pub fn status(&self, n: usize) -> Option<(u64, u64)> {
        let out = etcdctl(&self.endpoint(n), &["endpoint", "status", "-w", "json"]).ok()?;
        let parsed: Value = serde_json::from_str(&out).ok()?;
        let status = &parsed[0]["Status"];
        let me = status["header"]["member_id"].as_u64()?;
        Some((me, status["leader"].as_u64().unwrap_or(0)))
    }

    /// The member that is the leader, asking the running members until one
    /// of them says it leads, or `None` after `within`.
    pub fn leader(&self, within: Duration) -> Option<usize> {
        let mut found = None;
        wait_until(within, || {
            found = (0..MEMBERS)
                .filter(|n| self.is_running(*n))
                .find(|n| matches!(self.status(*n), Some((me, leader)) if me == leader));
            found.is_some()
        });
        found
    }

    /// Waits until member `n` reports that it knows no leader.
    pub fn wait_leaderless(&self, n: usize, within: Duration) -> bool {
        wait_until(within, || matches!(self.status(n), Some((_, 0))))
    }

    /// How many keys under `prefix` member `n` holds in its own copy of the
    /// data (a serializable read: the member answers alone, without asking
    /// the leader), or `None` when it does not answer.
    pub fn local_count(&self, n: usize, prefix: &str) -> Option<u64> {
        let out = etcdctl(
            &self.endpoint(n),
            &[
                "get",
                prefix,
                "--prefix",
                "--keys-only",
                "--consistency=s",
                "--limit=1",
                "-w",
                "json",
            ],
        )
        .ok()?;
        let parsed: Value = serde_json::from_str(&out).ok()?;
        // The JSON form leaves out fields that are zero.
        Some(parsed["count"].as_u64().unwrap_or(0))
    }
}

/// Runs etcdctl (API v3) against one endpoint with short timeouts; its
/// stdout, or its stderr as the error.
pub fn etcdctl(endpoint: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(ETCDCTL)
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            endpoint,
            "--dial-timeout=1s",
            "--command-timeout=2s",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {ETCDCTL}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}
