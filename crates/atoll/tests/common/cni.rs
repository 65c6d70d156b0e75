//! A plugin call the way a runtime makes it: the plugin binary executed
//! with the CNI variables in its environment and the network config on
//! stdin, and what it answered.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::parse_cidr;

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
