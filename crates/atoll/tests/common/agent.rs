//! The binaries under test and one `atoll agent` process per node.
//!
//! An [`Agent`] is killed and started through `&self`, so that a test can
//! crash one from another thread while plugin calls to the same agents are
//! in flight. Dropping it kills the process; a panicking test prints the
//! end of its log first.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::{wait_until, StateDir};

/// How long an agent may take to answer on its socket after it starts.
pub const AGENT_START: Duration = Duration::from_secs(30);

/// The two binaries under test.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `atoll`: agent and CLI.
    pub atoll: PathBuf,
    /// `atoll-ipam`: the plugin.
    pub ipam: PathBuf,
}

/// Finds `atoll` (built by cargo for this test) and `atoll-ipam` beside it.
///
/// `atoll-ipam` belongs to another package, so cargo does not build it for
/// the tests of this one; it must come from `cargo build --bins`.
pub fn binaries() -> Binaries {
    let atoll = PathBuf::from(env!("CARGO_BIN_EXE_atoll"));
    let ipam = atoll.with_file_name("atoll-ipam");
    assert!(
        ipam.is_file(),
        "{} not found beside {}: run `cargo build --bins` first (atoll-ipam is another \
         package, so `cargo test -p atoll` does not build it)",
        ipam.display(),
        atoll.display()
    );
    Binaries { atoll, ipam }
}

/// One `atoll agent` process standing for one node.
pub struct Agent {
    /// The node name.
    pub node: String,
    /// The socket the plugin talks to.
    pub socket: PathBuf,
    labels: String,
    store: String,
    program: PathBuf,
    log: PathBuf,
    child: Mutex<Option<Child>>,
}

impl Agent {
    /// The agent of `node` with `labels` (`k=v,...`) on `store`, its socket
    /// and log in `dir`; not started yet (see [`Agent::spawn`]).
    pub fn new(bins: &Binaries, dir: &Path, store: &str, node: &str, labels: &str) -> Self {
        Agent {
            node: node.to_string(),
            socket: dir.join(format!("{node}.sock")),
            labels: labels.to_string(),
            store: store.to_string(),
            program: bins.atoll.clone(),
            log: dir.join(format!("{node}.log")),
            child: Mutex::new(None),
        }
    }

    /// Starts the agent of `node` with `labels` (`k=v,...`) on the store of
    /// `state` and waits until its socket accepts connections.
    pub fn start(bins: &Binaries, state: &StateDir, node: &str, labels: &str) -> Self {
        let agent = Agent::new(bins, state.dir.path(), &state.store(), node, labels);
        agent.spawn();
        agent.wait_serving();
        agent
    }

    fn slot(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the process; does not wait for it to serve.
    pub fn spawn(&self) {
        let mut slot = self.slot();
        assert!(slot.is_none(), "agent {} runs already", self.node);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening the agent log");
        let child = Command::new(&self.program)
            .args([
                "agent",
                "--node-name",
                &self.node,
                "--node-labels",
                &self.labels,
            ])
            .args(["--store", &self.store, "--socket"])
            .arg(&self.socket)
            .env("ATOLL_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting atoll agent");
        *slot = Some(child);
    }

    /// Waits until the socket accepts connections; panics with the log if
    /// the agent exits or does not serve within [`AGENT_START`].
    pub fn wait_serving(&self) {
        let mut exited = None;
        let up = wait_until(AGENT_START, || {
            if let Some(child) = self.slot().as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    exited = Some(status);
                    return true;
                }
            }
            std::os::unix::net::UnixStream::connect(&self.socket).is_ok()
        });
        if let Some(status) = exited {
            panic!(
                "agent {} exited ({status}) before serving: {}",
                self.node,
                self.log_text()
            );
        }
        assert!(
            up,
            "agent {} did not serve {} within {AGENT_START:?}: {}",
            self.node,
            self.socket.display(),
            self.log_text()
        );
    }

    /// Kills the agent with SIGKILL, as a crash would: no cleanup, the socket
    /// file stays behind.
    pub fn kill9(&self) {
        if let Some(mut child) = self.slot().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the agent again on the same socket and store, and waits until
    /// it serves.
    pub fn restart(&self) {
        self.kill9();
        self.spawn();
        self.wait_serving();
    }

    /// The process ID, while the agent runs and has not exited.
    pub fn running_pid(&self) -> Option<u32> {
        let mut slot = self.slot();
        let child = slot.as_mut()?;
        matches!(child.try_wait(), Ok(None)).then(|| child.id())
    }

    /// What the agent wrote to stderr.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            if !tail.is_empty() {
                eprintln!("--- last lines of the log of agent {} ---", self.node);
                tail.iter().rev().for_each(|l| eprintln!("{l}"));
            }
        }
        self.kill9();
    }
}
