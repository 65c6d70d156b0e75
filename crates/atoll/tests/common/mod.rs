//! Shared helpers of the end-to-end tests: the real binaries, real agents on
//! one SQLite file, and plugin invocations the way a runtime makes them.
//!
//! Nothing here is a double. An [`Agent`] is an `atoll agent` process; a
//! [`Cni`] call executes a plugin binary with the CNI variables in its
//! environment and the network config on stdin; [`claims`] reads the store
//! file the agents write.
//!
//! Every resource a helper creates is released by a `Drop`, so that a failed
//! assertion (a panic) still stops the agents and removes the files.

// Each test binary compiles this module and uses a part of it.
#![allow(dead_code)]

use std::fs;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use atoll_store::Claim;
use serde_json::Value;

/// How long an agent may take to answer on its socket after it starts.
pub const AGENT_START: Duration = Duration::from_secs(30);

/// The CNI plugins of the host (Debian's containernetworking-plugins).
pub const HOST_CNI_DIR: &str = "/usr/lib/cni";

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

/// Returns true if and only if the process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Why a test that needs namespaces and the host's bridge plugin cannot run
/// here, or `None` when it can.
pub fn netns_unavailable() -> Option<&'static str> {
    if !is_root() || !Path::new(HOST_CNI_DIR).join("bridge").is_file() {
        return Some("skipped: needs root and /usr/lib/cni/bridge");
    }
    None
}

/// Runs a command to completion and returns its stdout; panics with its
/// stderr when it fails.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `ready` until it returns true or `within` passes.
pub fn wait_until(within: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Parses `a.b.c.d/len`.
pub fn parse_cidr(cidr: &str) -> (Ipv4Addr, u8) {
    let (ip, len) = cidr
        .split_once('/')
        .unwrap_or_else(|| panic!("{cidr:?} is not in CIDR form"));
    let ip = ip
        .parse()
        .unwrap_or_else(|e| panic!("{cidr:?}: bad address: {e}"));
    let len = len
        .parse()
        .unwrap_or_else(|e| panic!("{cidr:?}: bad prefix length: {e}"));
    (ip, len)
}

/// Returns true if and only if `ip` lies in `net`/`len`.
pub fn contains(net: Ipv4Addr, len: u8, ip: Ipv4Addr) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(net) & mask == u32::from(ip) & mask
}

/// Picks the second octet of a `10.x.0.0/16` that no address or route of the
/// host touches, so that the test's addresses exist only on its bridges.
pub fn free_ten_slash_16(candidates: &[u8]) -> u8 {
    let mut seen = Vec::new();
    for args in [
        ["-j", "-4", "addr", "show"].as_slice(),
        ["-j", "-4", "route", "show", "table", "all"].as_slice(),
    ] {
        let out: Value = serde_json::from_str(&run_ok("ip", args)).unwrap_or(Value::Null);
        collect_v4(&out, &mut seen);
    }
    for &octet in candidates {
        let net = Ipv4Addr::new(10, octet, 0, 0);
        // A host prefix overlaps 10.x/16 if either contains the other's start.
        let taken = seen
            .iter()
            .any(|&(ip, len)| contains(net, 16, ip) || contains(ip, len, net));
        if !taken {
            return octet;
        }
    }
    panic!("every candidate range 10.{candidates:?}.0.0/16 is in use on this host: {seen:?}");
}

/// Collects every IPv4 prefix (`local`/`prefixlen` of addresses, `dst` of
/// routes) in the JSON of `ip -j`.
fn collect_v4(value: &Value, out: &mut Vec<(Ipv4Addr, u8)>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| collect_v4(v, out)),
        Value::Object(map) => {
            if let (Some(ip), Some(len)) = (
                map.get("local").and_then(Value::as_str),
                map.get("prefixlen").and_then(Value::as_u64),
            ) {
                if let Ok(ip) = ip.parse() {
                    out.push((ip, len as u8));
                }
            }
            if let Some(dst) = map.get("dst").and_then(Value::as_str) {
                let (ip, len) = dst.split_once('/').unwrap_or((dst, "32"));
                if let (Ok(ip), Ok(len)) = (ip.parse(), len.parse()) {
                    out.push((ip, len));
                }
            }
            map.values().for_each(|v| collect_v4(v, out));
        }
        _ => {}
    }
}

/// A temporary state directory: the SQLite file, the agent sockets and logs.
pub struct StateDir {
    /// The directory; removed on drop.
    pub dir: tempfile::TempDir,
}

impl StateDir {
    /// A fresh directory named after the test.
    pub fn new(tag: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("atoll-e2e-{tag}-"))
            .tempdir()
            .expect("creating a temporary directory");
        Self { dir }
    }

    /// The path of a file in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `embedded:<dir>/atoll.db`.
    pub fn store(&self) -> String {
        format!("embedded:{}", self.path("atoll.db").display())
    }
}

/// Applies a manifest with `atoll apply -f`, failing the test if it does not
/// apply.
pub fn apply(bins: &Binaries, store: &str, dir: &Path, manifest: &str) {
    let file = dir.join("manifest.yaml");
    fs::write(&file, manifest).expect("writing the manifest");
    let out = Command::new(&bins.atoll)
        .args(["apply", "--store", store, "-f"])
        .arg(&file)
        .output()
        .expect("running atoll apply");
    assert!(
        out.status.success(),
        "atoll apply failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
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
    child: Option<Child>,
}

impl Agent {
    /// Starts the agent of `node` with `labels` (`k=v,...`) and waits until
    /// its socket accepts connections.
    pub fn start(bins: &Binaries, state: &StateDir, node: &str, labels: &str) -> Self {
        let mut agent = Agent {
            node: node.to_string(),
            socket: state.path(&format!("{node}.sock")),
            labels: labels.to_string(),
            store: state.store(),
            program: bins.atoll.clone(),
            log: state.path(&format!("{node}.log")),
            child: None,
        };
        agent.spawn();
        agent
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "agent {} runs already", self.node);
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
        self.child = Some(child);

        let socket = self.socket.clone();
        let child = self.child.as_mut().expect("just set");
        let mut exited = None;
        let up = wait_until(AGENT_START, || {
            if let Ok(Some(status)) = child.try_wait() {
                exited = Some(status);
                return true;
            }
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
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

    /// The process ID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the agent with SIGKILL, as a crash would: no cleanup, the socket
    /// file stays behind.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the agent again, on the same socket and store.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
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

/// A plugin invocation: what a runtime puts in the environment and on stdin.
#[derive(Debug, Clone)]
pub struct Cni<'a> {
    /// `CNI_COMMAND`.
    pub command: &'a str,
    /// `CNI_CONTAINERID`.
    pub container_id: &'a str,
    /// `CNI_NETNS`.
    pub netns: &'a str,
    /// `CNI_IFNAME`.
    pub ifname: &'a str,
    /// `CNI_ARGS`.
    pub args: &'a str,
    /// `CNI_PATH`.
    pub path: &'a Path,
}

impl<'a> Cni<'a> {
    /// An invocation with `IgnoreUnknown=1` in `CNI_ARGS`, as kubelet sends.
    pub fn new(command: &'a str, container_id: &'a str, netns: &'a str, path: &'a Path) -> Self {
        Self {
            command,
            container_id,
            netns,
            ifname: "eth0",
            args: "IgnoreUnknown=1",
            path,
        }
    }

    /// Executes `plugin` with `config` on stdin.
    pub fn exec(&self, plugin: &Path, config: &Value) -> Outcome {
        let mut child = Command::new(plugin)
            .env_clear()
            .env("CNI_COMMAND", self.command)
            .env("CNI_CONTAINERID", self.container_id)
            .env("CNI_NETNS", self.netns)
            .env("CNI_IFNAME", self.ifname)
            .env("CNI_ARGS", self.args)
            .env("CNI_PATH", self.path)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot execute {}: {e}", plugin.display()));
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(config.to_string().as_bytes())
            .expect("writing the network config");
        let out = child.wait_with_output().expect("waiting for the plugin");
        Outcome {
            what: format!(
                "{} {} via {}",
                self.command,
                self.container_id,
                plugin.display()
            ),
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// What a plugin answered.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The invocation, for messages.
    pub what: String,
    /// Exit status 0.
    pub success: bool,
    /// Stdout: a result, an error object, or nothing.
    pub stdout: String,
    /// Stderr.
    pub stderr: String,
}

impl Outcome {
    /// The result of a successful call (`null` when stdout is empty); panics
    /// with the error object otherwise.
    pub fn ok(&self) -> Value {
        assert!(
            self.success,
            "{} failed: {}{}",
            self.what, self.stdout, self.stderr
        );
        if self.stdout.trim().is_empty() {
            return Value::Null;
        }
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{}: stdout is not JSON ({e}): {}", self.what, self.stdout))
    }

    /// The CNI error code of a failed call; panics if the call succeeded or
    /// printed no error object.
    pub fn error_code(&self) -> u64 {
        assert!(
            !self.success,
            "{} succeeded, expected an error: {}",
            self.what, self.stdout
        );
        let err: Value = serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "{}: no CNI error object on stdout ({e}): {}{}",
                self.what, self.stdout, self.stderr
            )
        });
        err["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: error object without a code: {err}", self.what))
    }

    /// The first address of an ADD result, as (address, prefix length).
    pub fn first_ip(&self) -> (Ipv4Addr, u8) {
        let result = self.ok();
        let cidr = result["ips"][0]["address"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: result without ips[0].address: {result}", self.what));
        parse_cidr(cidr)
    }
}

/// Every claim in the store the agents write.
pub fn claims(store: &str) -> Vec<Claim> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("starting a runtime");
    runtime.block_on(async {
        let store = atoll_store::open_embedded(store)
            .await
            .unwrap_or_else(|e| panic!("opening {store}: {e}"));
        store
            .list_claims(None)
            .await
            .unwrap_or_else(|e| panic!("listing the claims of {store:?}: {e}"))
    })
}

/// A Subnet and an IPPool per zone, the pool bound to the zone's nodes by the
/// label `zone`. `zones` is (zone, subnet CIDR, gateway, pool range).
pub fn zone_manifest(prefix: &str, zones: &[(&str, &str, &str, &str)]) -> String {
    let mut out = String::new();
    for (zone, cidr, gateway, range) in zones {
        out.push_str(&format!(
            "apiVersion: ipam.atoll.dev/v1alpha1\n\
             kind: Subnet\n\
             metadata: {{name: {prefix}-{zone}}}\n\
             spec:\n  \
               cidr: {cidr}\n  \
               gateway: {gateway}\n  \
               routes: [{{dst: 0.0.0.0/0, gw: {gateway}}}]\n\
             ---\n\
             apiVersion: ipam.atoll.dev/v1alpha1\n\
             kind: IPPool\n\
             metadata: {{name: {prefix}-{zone}}}\n\
             spec:\n  \
               subnet: {prefix}-{zone}\n  \
               ips: [{range}]\n  \
               nodeAffinity:\n    \
                 nodeSelectorTerms:\n      \
                   - matchLabels: {{zone: {zone}}}\n\
             ---\n"
        ));
    }
    out
}
