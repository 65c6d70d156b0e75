//! Execs a CNI plugin the way a runtime does, many times, and prints the
//! latencies as JSON: the timing core of `scripts/bench-cni`, in Rust so that
//! the driver costs less than the plugins it measures.
//!
//! `cni_exec PLUGIN CONFIG_JSON TAG CYCLES PARALLEL cycle|add`
//! - `cycle`: ADD then DEL of one container per cycle;
//! - `add`: ADD only (addresses stay held).
//!
//! Prints `{"adds": [ns...], "dels": [ns...], "wall_s": f}`.
//!
//! `cni_exec --plan FILE PARALLEL`: runs the calls listed in FILE, a JSON
//! array of `{"plugin", "command", "container", "args", "config"}`, and prints
//! `{"calls": [{"ok", "ns", "stdout"}...], "wall_s": f}` in the same order.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// One exec; returns (exit success, nanoseconds, stdout).
fn exec(
    plugin: &str,
    config: &[u8],
    command: &str,
    container: &str,
    args: &str,
) -> (bool, u128, String) {
    let dir = std::path::Path::new(plugin)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let started = Instant::now();
    let mut child = Command::new(plugin)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", format!("/run/netns/{container}"))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", args)
        .env("CNI_PATH", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("exec {plugin}: {e}"));
    // A program that does not read its stdin (the /bin/true floor) closes
    // the pipe early; that is not an error of the measurement.
    let _ = child.stdin.take().expect("stdin").write_all(config);
    let out = child.wait_with_output().expect("wait");
    let took = started.elapsed().as_nanos();
    (
        out.status.success(),
        took,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// One exec that must succeed; returns nanoseconds.
fn call(plugin: &str, config: &[u8], command: &str, container: &str) -> u128 {
    let (ok, took, stdout) = exec(plugin, config, command, container, "IgnoreUnknown=1");
    if !ok {
        panic!("{plugin} {command} {container}: {stdout}");
    }
    took
}

/// `--plan FILE PARALLEL`.
fn run_plan(file: &str, parallel: usize) {
    let text = std::fs::read_to_string(file).expect("read plan");
    let plan: Vec<serde_json::Value> = serde_json::from_str(&text).expect("plan is a JSON array");
    let field = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
    let next = AtomicUsize::new(0);
    let results = Mutex::new(vec![serde_json::Value::Null; plan.len()]);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..parallel.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(c) = plan.get(i) else { break };
                let (ok, ns, stdout) = exec(
                    &field(c, "plugin"),
                    field(c, "config").as_bytes(),
                    &field(c, "command"),
                    &field(c, "container"),
                    &field(c, "args"),
                );
                results.lock().expect("results")[i] =
                    serde_json::json!({"ok": ok, "ns": ns, "stdout": stdout});
            });
        }
    });
    let wall = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"calls": results.into_inner().expect("results"), "wall_s": wall})
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 4 && args[1] == "--plan" {
        run_plan(&args[2], args[3].parse().expect("PARALLEL"));
        return;
    }
    if args.len() != 7 {
        eprintln!("usage: cni_exec PLUGIN CONFIG_JSON TAG CYCLES PARALLEL cycle|add");
        std::process::exit(2);
    }
    let (plugin, config, tag) = (&args[1], args[2].as_bytes(), &args[3]);
    let cycles: usize = args[4].parse().expect("CYCLES");
    let parallel: usize = args[5].parse().expect("PARALLEL");
    let with_del = match args[6].as_str() {
        "cycle" => true,
        "add" => false,
        other => panic!("mode {other:?}: cycle or add"),
    };

    let next = AtomicUsize::new(0);
    let adds = Mutex::new(Vec::with_capacity(cycles));
    let dels = Mutex::new(Vec::with_capacity(cycles));
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..parallel.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= cycles {
                    break;
                }
                let container = format!("{tag}-{i}");
                let a = call(plugin, config, "ADD", &container);
                adds.lock().expect("adds").push(a);
                if with_del {
                    let d = call(plugin, config, "DEL", &container);
                    dels.lock().expect("dels").push(d);
                }
            });
        }
    });
    let wall = started.elapsed().as_secs_f64();
    let out = serde_json::json!({
        "adds": adds.into_inner().expect("adds"),
        "dels": dels.into_inner().expect("dels"),
        "wall_s": wall,
    });
    println!("{out}");
}
