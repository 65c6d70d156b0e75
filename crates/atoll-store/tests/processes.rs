//! Several OS processes on one store file: they claim overlapping addresses
//! at once and no address is won twice; a process killed with SIGKILL while
//! claiming loses none of the claims it had reported won.
//!
//! The processes are this test binary run again with [`CHILD_ENV`] set,
//! running only the ignored test [`child`].

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll_store::embedded::EmbeddedStore;
use atoll_store::{Attachment, Claim, ClaimOutcome, SharedStore};
use tokio::task::JoinSet;

/// Set in a child: `<mode> <path> <name> <count> <offset>`.
const CHILD_ENV: &str = "ATOLL_STORE_TEST_CHILD";
const SUBNET: &str = "rack-a";
const NODE: &str = "node-1";
/// How long a test waits for its children before it gives up.
const DEADLINE: Duration = Duration::from_secs(120);

fn address(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0xC612_0000 + n))
}

fn holder(name: &str) -> Attachment {
    Attachment {
        container_id: name.into(),
        ifname: "eth0".into(),
    }
}

/// The child process: opens the store (maybe creating it), says READY,
/// waits for a line on stdin, then claims `count` addresses starting at
/// `offset` with 16 claims in flight, and prints `WON <ip>` or `TAKEN <ip>
/// <holder>` once each answer is in. Mode `race` claims addresses
/// `0..count` (wrapping); mode `crash` claims fresh addresses until killed.
#[test]
#[ignore = "a child process of the other tests here, which start it"]
fn child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        eprintln!("{CHILD_ENV} is not set: nothing to do outside the multi-process tests");
        return;
    };
    let fields: Vec<&str> = spec.split(' ').collect();
    let [mode, path, name, count, offset] = fields[..] else {
        panic!("bad {CHILD_ENV}: {spec:?}")
    };
    let count: u32 = count.parse().expect("count");
    let offset: u32 = offset.parse().expect("offset");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(claim_in_child(mode, Path::new(path), name, count, offset));
}

async fn claim_in_child(mode: &str, path: &Path, name: &str, count: u32, offset: u32) {
    let store: SharedStore = Arc::new(EmbeddedStore::open(path).expect("open the store"));
    say("READY");
    let mut go = String::new();
    std::io::stdin()
        .read_line(&mut go)
        .expect("read the start signal");

    let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..16 {
        let (store, next, name, mode) = (
            store.clone(),
            next.clone(),
            name.to_string(),
            mode.to_string(),
        );
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return;
                }
                let n = if mode == "race" {
                    (i + offset) % count
                } else {
                    i + offset
                };
                let claim = Claim {
                    subnet: SUBNET.into(),
                    ip: address(n),
                    pool: "pool".into(),
                    attachment: holder(&name),
                    node: NODE.into(),
                    app: String::new(),
                    network: "net".into(),
                    borrowed: false,
                    created: 0,
                };
                match store.claim(&claim).await.expect("claim") {
                    ClaimOutcome::Won => say(&format!("WON {}", claim.ip)),
                    ClaimOutcome::Taken { holder } => {
                        say(&format!("TAKEN {} {}", claim.ip, holder.container_id));
                    }
                }
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.expect("claiming task");
    }
    say("DONE");
}

/// One line, in one write, flushed: a line read by the parent is complete.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    out.write_all(format!("{line}\n").as_bytes())
        .expect("stdout");
    out.flush().expect("stdout");
}

/// A child process and the lines it has printed so far.
struct Worker {
    name: String,
    process: Child,
    stdin: Option<ChildStdin>,
}

/// Lines of all children, tagged with the child's index; `None` at EOF.
type Lines = mpsc::Receiver<(usize, Option<String>)>;

fn spawn_children(specs: &[(String, String)]) -> (Vec<Worker>, Lines) {
    let (send, lines) = mpsc::channel();
    let mut workers = Vec::new();
    for (index, (name, spec)) in specs.iter().enumerate() {
        let mut process = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env(CHILD_ENV, spec)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn a child");
        let stdin = process.stdin.take();
        let stdout = process.stdout.take().expect("child stdout");
        let send = send.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    // A line cut short by a kill has no newline: not reported.
                    Ok(n) if n > 0 && line.ends_with('\n') => {
                        let _ = send.send((index, Some(line.trim_end().to_string())));
                    }
                    _ => {
                        let _ = send.send((index, None));
                        return;
                    }
                }
            }
        });
        workers.push(Worker {
            name: name.clone(),
            process,
            stdin,
        });
    }
    (workers, lines)
}

/// The next line of any child, or a panic at the deadline (children killed).
fn next_line(lines: &Lines, workers: &mut [Worker], started: Instant) -> (usize, Option<String>) {
    let left = DEADLINE.saturating_sub(started.elapsed());
    match lines.recv_timeout(left) {
        Ok(line) => line,
        Err(e) => {
            for worker in workers.iter_mut() {
                let _ = worker.process.kill();
                let _ = worker.process.wait();
            }
            panic!("children did not finish within {DEADLINE:?}: {e}");
        }
    }
}

fn wait_until_ready(lines: &Lines, workers: &mut [Worker], started: Instant) {
    let mut ready = BTreeSet::new();
    while ready.len() < workers.len() {
        match next_line(lines, workers, started) {
            (index, Some(line)) if line == "READY" => {
                ready.insert(index);
            }
            (index, None) => panic!("child {} ended before it was ready", workers[index].name),
            _ => {}
        }
    }
    for worker in workers.iter_mut() {
        let mut stdin = worker.stdin.take().expect("stdin");
        stdin.write_all(b"go\n").expect("start a child");
    }
}

/// Four processes open a new file at once and claim the same 2000 addresses
/// in different orders: every address is won exactly once, every `Taken`
/// names the winner, and the file agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_claiming_the_same_addresses_never_win_one_twice() {
    const ADDRESSES: u32 = 2000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new/atoll.db");
    let specs: Vec<(String, String)> = (0..4u32)
        .map(|i| {
            let name = format!("proc{i}");
            let spec = format!(
                "race {} {name} {ADDRESSES} {}",
                path.display(),
                i * ADDRESSES / 4
            );
            (name, spec)
        })
        .collect();

    let started = Instant::now();
    let (mut workers, lines) = spawn_children(&specs);
    wait_until_ready(&lines, &mut workers, started);

    let mut winners: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
    let mut taken: Vec<(String, IpAddr, String)> = Vec::new();
    let mut open = workers.len();
    while open > 0 {
        let (index, line) = next_line(&lines, &mut workers, started);
        let Some(line) = line else {
            open -= 1;
            continue;
        };
        let name = workers[index].name.clone();
        let words: Vec<&str> = line.split(' ').collect();
        match words[..] {
            ["WON", ip] => winners.entry(ip.parse().unwrap()).or_default().push(name),
            ["TAKEN", ip, by] => taken.push((name, ip.parse().unwrap(), by.to_string())),
            _ => {}
        }
    }
    for worker in &mut workers {
        let status = worker.process.wait().unwrap();
        assert!(status.success(), "child {} failed: {status}", worker.name);
    }

    assert_eq!(winners.len(), ADDRESSES as usize, "addresses won by nobody");
    for (ip, names) in &winners {
        assert_eq!(names.len(), 1, "{ip} won by {names:?}");
    }
    assert_eq!(taken.len(), 3 * ADDRESSES as usize);
    for (name, ip, by) in &taken {
        assert_eq!(&winners[ip][0], by, "{name} was told {by} holds {ip}");
    }

    let store = EmbeddedStore::open(&path).unwrap();
    let stored = atoll_store::Store::list_claims(&store, Some(NODE))
        .await
        .unwrap();
    let stored: BTreeMap<IpAddr, String> = stored
        .into_iter()
        .map(|c| (c.ip, c.attachment.container_id))
        .collect();
    let reported: BTreeMap<IpAddr, String> = winners
        .into_iter()
        .map(|(ip, mut names)| (ip, names.remove(0)))
        .collect();
    assert_eq!(stored, reported);
}

/// A process claims fresh addresses and reports each win; it is killed with
/// SIGKILL in the middle. Every claim it reported is in the file afterwards,
/// held by it, and the file takes new claims.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_reported_won_survive_sigkill() {
    const REPORTED_BEFORE_KILL: usize = 500;
    const AT_MOST: u32 = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("atoll.db");
    let specs = vec![(
        "victim".to_string(),
        format!("crash {} victim {AT_MOST} 0", path.display()),
    )];

    let started = Instant::now();
    let (mut workers, lines) = spawn_children(&specs);
    wait_until_ready(&lines, &mut workers, started);

    let mut reported = BTreeSet::new();
    let mut killed = false;
    loop {
        let (_, line) = next_line(&lines, &mut workers, started);
        let Some(line) = line else { break };
        if let Some(ip) = line.strip_prefix("WON ") {
            reported.insert(ip.parse::<IpAddr>().unwrap());
        }
        assert_ne!(line, "DONE", "the child finished before it was killed");
        if !killed && reported.len() >= REPORTED_BEFORE_KILL {
            workers[0].process.kill().unwrap();
            killed = true;
        }
    }
    let status = workers[0].process.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the child was not killed: {status}"
    );

    let store: SharedStore = Arc::new(EmbeddedStore::open(&path).unwrap());
    let stored: BTreeMap<IpAddr, Claim> = store
        .list_claims(Some(NODE))
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.ip, c))
        .collect();
    let lost: Vec<_> = reported
        .iter()
        .filter(|ip| !stored.contains_key(ip))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} reported claims lost: {lost:?}",
        lost.len(),
        reported.len()
    );
    assert!(stored.values().all(|c| c.attachment == holder("victim")));

    let first = *reported.iter().next().unwrap();
    let again = Claim {
        attachment: holder("after"),
        ..stored[&first].clone()
    };
    assert_eq!(
        store.claim(&again).await.unwrap(),
        ClaimOutcome::Taken {
            holder: holder("victim")
        }
    );
    let fresh = Claim {
        ip: address(AT_MOST + 1),
        ..again
    };
    assert_eq!(store.claim(&fresh).await.unwrap(), ClaimOutcome::Won);
}
