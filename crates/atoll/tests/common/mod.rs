//! Shared helpers of the end-to-end tests: the real binaries, real agents,
//! and plugin invocations the way a runtime makes them.
//!
//! Nothing here is a double. An [`Agent`] is an `atoll agent` process; a
//! [`Cni`] call executes a plugin binary with the CNI variables in its
//! environment and the network config on stdin; [`claims`] reads the SQLite
//! file the agents write. The tests on etcd (`e2e_etcd`) use the agents and
//! the plugin calls of this module through their own `etcd_common`.
//!
//! Every resource a helper creates is released by a `Drop`, so that a failed
//! assertion (a panic) still stops the agents and removes the files.

// Each test binary (e2e_netns, e2e_concurrency, e2e_etcd) compiles this
// module and uses a different part of it; the rest would warn as dead code.
#![allow(dead_code)]

pub mod agent;
pub mod cni;

pub use agent::{binaries, Agent, Binaries};
pub use cni::Cni;

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use atoll_store::Claim;
use serde_json::Value;

/// The CNI plugins of the host (Debian's containernetworking-plugins).
pub const HOST_CNI_DIR: &str = "/usr/lib/cni";

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
