//! A real three-member etcd cluster on 127.0.0.1.
//!
//! Each member is `/usr/bin/etcd` (Debian's etcd-server) with its own data
//! directory under one temporary directory (on tmpfs when `/dev/shm`
//! exists) and two ports: member `n` serves clients on `base + 2n` and its
//! peers on `base + 2n + 1`. The base is chosen per cluster, starting from
//! `24000 + (pid % 500) * 10` and moving on past ports that are taken, so
//! that several test processes (and several clusters of one process) do not
//! meet. Everything the tests learn about the cluster (health, the leader,
//! what a member holds) they learn from `/usr/bin/etcdctl`, the operator's
//! tool, not from the client library under test.
//!
//! Dropping an [`EtcdCluster`] kills every member and removes the data, also
//! when a test panics; a panicking test prints the end of each member's log
//! first.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::wait_until;

/// The etcd server.
pub const ETCD: &str = "/usr/bin/etcd";

/// The etcd command line client.
pub const ETCDCTL: &str = "/usr/bin/etcdctl";

/// Members of every cluster.
pub const MEMBERS: usize = 3;

/// The first port of the range the clusters take their ports from.
const FIRST_PORT: u32 = 24_000;

/// Ports per cluster (six used, the rest left as a gap).
const BLOCK: u32 = 10;

/// Blocks in the range: ports 24000 to 33999.
const BLOCKS: u32 = 1_000;

/// How long a member may take to serve a linearizable read after it starts.
pub const MEMBER_START: Duration = Duration::from_secs(30);

/// Clusters this process started; the next one takes the next block.
static STARTED: AtomicU32 = AtomicU32::new(0);

/// A running three-member cluster.
pub struct EtcdCluster {
    dir: tempfile::TempDir,
    base: u16,
    members: Vec<Option<Child>>,
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
            let base = free_base();
            let mut cluster = EtcdCluster {
                dir: temp_dir("atoll-e2e-etcd-"),
                base,
                members: (0..MEMBERS).map(|_| None).collect(),
            };
            for n in 0..MEMBERS {
                cluster.spawn(n);
            }
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

    /// The client URL of member `n`.
    pub fn endpoint(&self, n: usize) -> String {
        format!("http://127.0.0.1:{}", self.base + 2 * n as u16)
    }

    fn peer_url(&self, n: usize) -> String {
        format!("http://127.0.0.1:{}", self.base + 2 * n as u16 + 1)
    }

    /// `etcd:<every endpoint>`, the `--store` of the agents and the CLI.
    pub fn store(&self) -> String {
        let all: Vec<String> = (0..MEMBERS).map(|n| self.endpoint(n)).collect();
        format!("etcd:{}", all.join(","))
    }

    /// Returns true if and only if member `n` has been started and not
    /// killed or stopped since.
    pub fn is_running(&self, n: usize) -> bool {
        self.members[n].is_some()
    }

    fn log_path(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("m{n}.log"))
    }

    fn spawn(&mut self, n: usize) {
        assert!(self.members[n].is_none(), "member {n} runs already");
        let initial: Vec<String> = (0..MEMBERS)
            .map(|m| format!("m{m}={}", self.peer_url(m)))
            .collect();
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path(n))
            .expect("opening the member's log");
        // On a restart the data directory exists and etcd ignores the
        // initial-cluster flags: the member rejoins with what it stored.
        let child = Command::new(ETCD)
            .arg(format!("--name=m{n}"))
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join(format!("m{n}")).display()
            ))
            .arg(format!("--listen-client-urls={}", self.endpoint(n)))
            .arg(format!("--advertise-client-urls={}", self.endpoint(n)))
            .arg(format!("--listen-peer-urls={}", self.peer_url(n)))
            .arg(format!(
                "--initial-advertise-peer-urls={}",
                self.peer_url(n)
            ))
            .arg(format!("--initial-cluster={}", initial.join(",")))
            .arg(format!("--initial-cluster-token=atoll-e2e-{}", self.base))
            .arg("--initial-cluster-state=new")
            .arg("--logger=zap")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {ETCD}: {e}"));
        self.members[n] = Some(child);
    }

    /// Waits until member `n` serves a linearizable read (which needs a
    /// quorum). Fails when the member exits or the time passes.
    fn try_wait_healthy(&mut self, n: usize, within: Duration) -> Result<(), String> {
        let endpoint = self.endpoint(n);
        let deadline = Instant::now() + within;
        loop {
            if let Some(child) = self.members[n].as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.members[n] = None;
                    return Err(format!("member {n} exited: {status}"));
                }
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

    /// Kills member `n` with SIGKILL, as a crash or a power loss would, and
    /// waits for it to exit.
    pub fn kill(&mut self, n: usize) {
        let mut child = self.members[n]
            .take()
            .unwrap_or_else(|| panic!("member {n} is not running"));
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops member `n` the way an operator does (SIGTERM: it leaves
    /// cleanly) and waits for it to exit; SIGKILL after ten seconds.
    pub fn stop(&mut self, n: usize) {
        let mut child = self.members[n]
            .take()
            .unwrap_or_else(|| panic!("member {n} is not running"));
        // SAFETY: kill(2) on the pid of a child this helper has not reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let exited = wait_until(Duration::from_secs(10), || {
            matches!(child.try_wait(), Ok(Some(_)))
        });
        if !exited {
            let _ = child.kill();
        }
        let _ = child.wait();
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

    /// The last lines of member `n`'s log.
    pub fn log_tail(&self, n: usize) -> String {
        let Ok(mut file) = File::open(self.log_path(n)) else {
            return String::new();
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(4000)));
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        text
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for n in 0..MEMBERS {
                eprintln!(
                    "--- end of the log of etcd member {n} ---\n{}",
                    self.log_tail(n)
                );
            }
        }
        for mut child in self.members.iter_mut().filter_map(Option::take) {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The TempDir removes the data directories after this.
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

/// A temporary directory, on tmpfs when there is one (etcd syncs its log
/// on every commit; the tests are about atoll, not about the disk).
pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix);
    if shm.is_dir() {
        builder.tempdir_in(shm)
    } else {
        builder.tempdir()
    }
    .expect("creating a temporary directory")
}

/// The first port of the next block whose six ports all are free.
fn free_base() -> u16 {
    let start = std::process::id() % 500;
    for _ in 0..BLOCKS {
        let k = STARTED.fetch_add(1, Ordering::Relaxed);
        let base = FIRST_PORT + ((start + k) % BLOCKS) * BLOCK;
        let free = (base..base + 2 * MEMBERS as u32)
            .all(|port| TcpListener::bind(("127.0.0.1", port as u16)).is_ok());
        if free {
            return base as u16;
        }
    }
    panic!(
        "every block of ports in {FIRST_PORT}..{} is taken",
        FIRST_PORT + BLOCKS * BLOCK
    )
}
