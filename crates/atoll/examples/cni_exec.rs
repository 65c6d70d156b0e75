//! Execs a CNI plugin the way a runtime does, many times, and prints the
//! latencies as JSON: the timing core of `scripts/bench-cni`, in Rust so that
//! the driver costs less than the plugins it measures.
//!
//! `cni_exec PLUGIN CONFIG_JSON TAG CYCLES PARALLEL cycle|add`
//! - `cycle`: ADD then DEL of one container per cycle;
//! - `add`: ADD only (addresses stay held).
//!
//! Prints `{"adds": [ns...], "dels": [ns...], "wall_s": f}`.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

fn call(plugin: &str, config: &[u8], command: &str, container: &str) -> u128 {
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
        .env("CNI_ARGS", "IgnoreUnknown=1")
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
    if !out.status.success() {
        panic!(
            "{plugin} {command} {container}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    took
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
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
