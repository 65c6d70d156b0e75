//! Executes the built `atoll-ipam` binary the way a main plugin does: CNI
//! variables in the environment, the network config on stdin, the answer on
//! stdout. A small agent double in this file serves the socket with
//! `atoll_cni::wire`; the real agent is tested in its own crate, and with
//! real namespaces end to end.

use std::ffi::OsStr;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use atoll_cni::wire::{
    read_request, write_response, AgentOk, AgentRequest, AgentResponse, Command as Verb,
    WireAttachment, WireDns, WireIp, WireRoute,
};
use serde_json::{json, Value};

const PLUGIN: &str = env!("CARGO_BIN_EXE_atoll-ipam");

/// How long the agent double waits for the plugin to connect before it gives
/// up (a failing test, never a hang).
const PATIENCE: Duration = Duration::from_secs(20);

/// A socket served by a thread that answers each connection with the next
/// scripted answer and records the requests.
struct FakeAgent {
    dir: tempfile::TempDir,
    thread: JoinHandle<Vec<AgentRequest>>,
}

impl FakeAgent {
    fn start(answers: Vec<AgentResponse>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("agent.sock")).unwrap();
        listener.set_nonblocking(true).unwrap();
        let thread = thread::spawn(move || {
            let mut seen = Vec::new();
            for answer in answers {
                let Some(mut stream) = accept_within(&listener, PATIENCE) else {
                    break;
                };
                stream.set_nonblocking(false).unwrap();
                seen.push(read_request(&mut stream).unwrap());
                write_response(&mut stream, &answer).unwrap();
            }
            seen
        });
        Self { dir, thread }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }

    /// The requests received, once every scripted answer was given (or the
    /// plugin stopped connecting).
    fn requests(self) -> Vec<AgentRequest> {
        self.thread.join().unwrap()
    }
}

fn accept_within(
    listener: &UnixListener,
    patience: Duration,
) -> Option<std::os::unix::net::UnixStream> {
    let deadline = Instant::now() + patience;
    loop {
        match listener.accept() {
            Ok((stream, _)) => return Some(stream),
            Err(err) if err.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return None,
        }
    }
}

struct Run {
    code: i32,
    stdout: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {:?}", self.stdout))
    }
}

fn exec(env: &[(&str, &OsStr)], stdin: Option<&str>) -> Run {
    let mut child = Command::new(PLUGIN)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(stdin) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
    }
}

/// Runs the plugin for `verb` with a full, valid attachment, overridden by
/// `extra` (an empty value removes the variable).
fn plugin(verb: &str, extra: &[(&str, &str)], stdin: &str) -> Run {
    let mut env: Vec<(&str, &str)> = vec![
        ("CNI_COMMAND", verb),
        ("CNI_CONTAINERID", "4f1c0ffee"),
        ("CNI_NETNS", "/run/netns/pod-1"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/usr/lib/cni"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_UID=u-1",
        ),
    ];
    for (key, value) in extra {
        env.retain(|(k, _)| k != key);
        if !value.is_empty() {
            env.push((key, value));
        }
    }
    let env: Vec<(&str, &OsStr)> = env.iter().map(|(k, v)| (*k, OsStr::new(*v))).collect();
    exec(&env, Some(stdin))
}

fn config(version: &str, socket: &Path) -> String {
    json!({
        "cniVersion": version, "name": "office", "type": "bridge", "bridge": "br0",
        "ipam": {"type": "atoll-ipam", "socket": socket, "pools": ["rack-a-web", "rack-b-web"]}
    })
    .to_string()
}

fn config_with(version: &str, socket: &Path, key: &str, value: Value) -> String {
    let mut conf: Value = serde_json::from_str(&config(version, socket)).unwrap();
    conf[key] = value;
    conf.to_string()
}

fn allocation() -> AgentOk {
    AgentOk {
        ips: vec![WireIp {
            address: "10.10.1.7/16".into(),
            gateway: Some("10.10.0.1".into()),
            pool: "rack-a-web".into(),
            subnet: "rack-a".into(),
        }],
        routes: vec![WireRoute {
            dst: "0.0.0.0/0".into(),
            gw: Some("10.10.0.1".into()),
        }],
        dns: WireDns {
            nameservers: vec!["10.10.0.53".into()],
            ..WireDns::default()
        },
    }
}

#[test]
fn version_answers_without_env_or_agent() {
    let env = [("CNI_COMMAND", OsStr::new("VERSION"))];
    let all = json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]);

    let run = exec(&env, Some(r#"{"cniVersion":"0.4.0"}"#));
    assert_eq!(run.code, 0);
    assert_eq!(
        run.json(),
        json!({"cniVersion": "0.4.0", "supportedVersions": all})
    );

    let run = exec(&env, None);
    assert_eq!(run.code, 0);
    assert_eq!(
        run.json(),
        json!({"cniVersion": "1.1.0", "supportedVersions": all})
    );
}

#[test]
fn add_writes_the_result_of_each_version_and_forwards_the_attachment() {
    let agent = FakeAgent::start(vec![AgentResponse::Ok(allocation()); 2]);

    let legacy = plugin("ADD", &[], &config("0.4.0", &agent.socket()));
    assert_eq!(legacy.code, 0, "{}", legacy.stdout);
    assert_eq!(
        legacy.json(),
        json!({
            "cniVersion": "0.4.0",
            "ips": [{"version": "4", "address": "10.10.1.7/16", "gateway": "10.10.0.1"}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.10.0.1"}],
            "dns": {"nameservers": ["10.10.0.53"]}
        })
    );

    let current = plugin(
        "ADD",
        &[("CNI_ARGS", "ATOLL_APP=shop/web;ATOLL_POOLS=a,b")],
        &config("1.1.0", &agent.socket()),
    );
    assert_eq!(current.code, 0, "{}", current.stdout);
    assert_eq!(
        current.json(),
        json!({
            "cniVersion": "1.1.0",
            "ips": [{"address": "10.10.1.7/16", "gateway": "10.10.0.1"}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.10.0.1"}],
            "dns": {"nameservers": ["10.10.0.53"]}
        })
    );

    let requests = agent.requests();
    assert_eq!(requests.len(), 2);
    let first = &requests[0];
    assert_eq!(first.command, Verb::Add);
    assert_eq!(first.container_id, "4f1c0ffee");
    assert_eq!(first.ifname, "eth0");
    assert_eq!(first.netns.as_deref(), Some("/run/netns/pod-1"));
    assert_eq!(first.network, "office");
    assert_eq!(first.pools, ["rack-a-web", "rack-b-web"]);
    let args: Vec<String> = first.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
    assert_eq!(
        args,
        [
            "IgnoreUnknown=1",
            "K8S_POD_NAME=web-0",
            "K8S_POD_NAMESPACE=shop",
            "K8S_POD_UID=u-1"
        ]
    );
    assert_eq!(
        requests[1].args.get("ATOLL_APP").map(String::as_str),
        Some("shop/web")
    );
    assert_eq!(
        requests[1].args.get("ATOLL_POOLS").map(String::as_str),
        Some("a,b")
    );
}

#[test]
fn agent_errors_reach_the_runtime_unchanged() {
    let details = "pools tried: rack-a-web (full), rack-b-web (affinity did not match)";
    let agent = FakeAgent::start(vec![AgentResponse::error(
        101,
        "no free IPv4 address",
        details,
    )]);
    let run = plugin("ADD", &[], &config("1.0.0", &agent.socket()));
    assert_eq!(run.code, 1);
    assert_eq!(
        run.json(),
        json!({
            "cniVersion": "1.0.0", "code": 101, "msg": "no free IPv4 address", "details": details
        })
    );
    assert_eq!(agent.requests().len(), 1);
}

#[test]
fn del_succeeds_silently_and_tolerates_a_missing_netns() {
    let agent = FakeAgent::start(vec![AgentResponse::empty(); 2]);
    let with_netns = plugin("DEL", &[], &config("0.3.0", &agent.socket()));
    let without = plugin(
        "DEL",
        &[("CNI_NETNS", "")],
        &config("1.0.0", &agent.socket()),
    );
    for run in [&with_netns, &without] {
        assert_eq!((run.code, run.stdout.as_str()), (0, ""));
    }
    let requests = agent.requests();
    assert_eq!(
        requests.iter().map(|r| r.command).collect::<Vec<_>>(),
        [Verb::Del, Verb::Del]
    );
    assert_eq!(requests[0].netns.as_deref(), Some("/run/netns/pod-1"));
    assert_eq!(requests[1].netns, None);
}

#[test]
fn check_follows_the_agent_verdict_and_compares_listed_addresses() {
    let mismatch = AgentResponse::error(
        104,
        "attachment 4f1c0ffee/eth0 holds 10.10.1.8, expected 10.10.1.7",
        "",
    );
    let agent = FakeAgent::start(vec![
        AgentResponse::Ok(allocation()),
        AgentResponse::Ok(allocation()),
        AgentResponse::empty(),
        mismatch.clone(),
    ]);
    let prev = |address: &str| {
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": "/run/netns/pod-1"}],
            "ips": [{"address": address, "gateway": "10.10.0.1", "interface": 0}]
        })
    };

    let same = plugin(
        "CHECK",
        &[],
        &config_with("1.0.0", &agent.socket(), "prevResult", prev("10.10.1.7/16")),
    );
    assert_eq!((same.code, same.stdout.as_str()), (0, ""));

    let moved = plugin(
        "CHECK",
        &[],
        &config_with("1.0.0", &agent.socket(), "prevResult", prev("10.10.1.9/16")),
    );
    assert_eq!(moved.code, 1);
    assert_eq!(
        moved.json(),
        json!({"cniVersion": "1.0.0", "code": 104,
            "msg":
                "attachment 4f1c0ffee/eth0 holds 10.10.1.7/16, but prevResult lists 10.10.1.9/16",
            "details": "the allocation changed since ADD; delete and re-create the container"})
    );

    // An agent that compared and found the same answers an empty ok.
    let conf = config_with("1.0.0", &agent.socket(), "prevResult", prev("10.10.1.7/16"));
    let verified = plugin("CHECK", &[], &conf);
    assert_eq!((verified.code, verified.stdout.as_str()), (0, ""));

    // Its refusal reaches the runtime unchanged.
    let refused = plugin("CHECK", &[], &conf);
    assert_eq!(
        refused.json(),
        json!({"cniVersion": "1.0.0", "code": 104,
            "msg": "attachment 4f1c0ffee/eth0 holds 10.10.1.8, expected 10.10.1.7", "details": ""})
    );

    let requests = agent.requests();
    assert_eq!(requests.len(), 4);
    assert!(requests.iter().all(|r| r.command == Verb::Check));
    assert_eq!(requests[0].expected_ips, ["10.10.1.7/16"]);
    assert_eq!(requests[1].expected_ips, ["10.10.1.9/16"]);
}

#[test]
fn gc_forwards_the_valid_attachments() {
    let agent = FakeAgent::start(vec![AgentResponse::empty()]);
    let attachments = json!([
        {"containerID": "4f1c0ffee", "ifname": "eth0"},
        {"containerID": "5a2b", "ifname": "net1"}
    ]);
    let conf = config_with(
        "1.1.0",
        &agent.socket(),
        "cni.dev/valid-attachments",
        attachments,
    );
    let run = plugin(
        "GC",
        &[
            ("CNI_CONTAINERID", ""),
            ("CNI_IFNAME", ""),
            ("CNI_NETNS", ""),
        ],
        &conf,
    );
    assert_eq!((run.code, run.stdout.as_str()), (0, ""));

    let requests = agent.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].command, Verb::Gc);
    assert_eq!(requests[0].network, "office");
    assert_eq!(
        requests[0].valid_attachments,
        [
            WireAttachment {
                container_id: "4f1c0ffee".into(),
                ifname: "eth0".into()
            },
            WireAttachment {
                container_id: "5a2b".into(),
                ifname: "net1".into()
            },
        ]
    );
}

#[test]
fn status_reports_the_agent_state() {
    let agent = FakeAgent::start(vec![
        AgentResponse::empty(),
        AgentResponse::error(
            51,
            "store unreachable",
            "existing pods keep their addresses",
        ),
    ]);
    let ready = plugin("STATUS", &[], &config("1.1.0", &agent.socket()));
    assert_eq!((ready.code, ready.stdout.as_str()), (0, ""));
    let limited = plugin("STATUS", &[], &config("1.1.0", &agent.socket()));
    assert_eq!(limited.json()["code"], 51);
    assert_eq!(
        agent
            .requests()
            .iter()
            .map(|r| r.command)
            .collect::<Vec<_>>(),
        [Verb::Status; 2]
    );
}

#[test]
fn an_unreachable_agent_is_retryable_and_not_available_for_status() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let expected_msg = format!(
        "cannot connect to the atoll agent at {}: ",
        socket.display()
    );

    for verb in ["ADD", "DEL", "CHECK", "GC", "STATUS"] {
        let conf = config_with("1.1.0", &socket, "prevResult", json!({"ips": []}));
        let conf = serde_json::from_str::<Value>(&conf).map(|mut c| {
            c["cni.dev/valid-attachments"] = json!([]);
            c.to_string()
        });
        let run = plugin(verb, &[], &conf.unwrap());
        assert_eq!(run.code, 1, "{verb}");
        let err = run.json();
        let code = if verb == "STATUS" { 50 } else { 11 };
        assert_eq!(err["code"], code, "{verb}: {err}");
        assert_eq!(err["cniVersion"], "1.1.0");
        let msg = err["msg"].as_str().unwrap();
        assert!(msg.starts_with(&expected_msg), "{verb}: {msg}");
    }
}

#[test]
fn a_silent_agent_times_out_as_try_again_later() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let agent = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        // Read until the plugin hangs up; never answer.
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
        sink
    });

    let run = plugin(
        "ADD",
        &[("ATOLL_TIMEOUT_MS", "300")],
        &config("1.0.0", &socket),
    );
    let err = run.json();
    assert_eq!(err["code"], 11);
    assert_eq!(
        err["msg"],
        format!(
            "the atoll agent at {} did not answer within 300 ms",
            socket.display()
        )
    );
    let sent = agent.join().unwrap();
    assert_eq!(AgentRequest::from_line(&sent).unwrap().command, Verb::Add);
}

/// One malformed invocation and the error it must get.
struct Case {
    name: &'static str,
    verb: &'static str,
    extra: Vec<(&'static str, &'static str)>,
    stdin: String,
    code: u32,
    msg: &'static str,
}

#[test]
#[rustfmt::skip] // one case per line reads as a table
fn malformed_input_is_refused_before_the_agent_is_asked() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    listener.set_nonblocking(true).unwrap();
    let good = config("1.0.0", &socket);

    let case = |name, verb, extra: &[(&'static str, &'static str)], stdin: &str, code, msg| Case {
        name,
        verb,
        extra: extra.to_vec(),
        stdin: stdin.to_owned(),
        code,
        msg,
    };
    let foreign = good.replace("\"atoll-ipam\"", "\"host-local\"");
    let cases = [
        case("garbage stdin", "ADD", &[], "not json", 6,
            "network config on stdin is not valid JSON"),
        case("empty stdin", "DEL", &[], "", 6, "no network config on stdin"),
        case("unknown version", "ADD", &[], &config("0.9.9", &socket), 1,
            "cniVersion \"0.9.9\" is not supported"),
        case("check too old", "CHECK", &[], &config("0.3.1", &socket), 1,
            "CHECK does not exist in cniVersion \"0.3.1\""),
        case("missing ifname", "ADD", &[("CNI_IFNAME", "")], &good, 4,
            "required env variables [CNI_IFNAME] missing"),
        case("missing container", "DEL", &[("CNI_CONTAINERID", "")], &good, 4,
            "required env variables [CNI_CONTAINERID] missing"),
        case("bad container id", "ADD", &[("CNI_CONTAINERID", "a;b")], &good, 4,
            "invalid CNI_CONTAINERID \"a;b\""),
        case("long ifname", "ADD", &[("CNI_IFNAME", "eth0123456789abc")], &good, 4,
            "invalid CNI_IFNAME \"eth0123456789abc\""),
        case("ifname with space", "CHECK", &[("CNI_IFNAME", "eth 0")], &good, 4,
            "invalid CNI_IFNAME \"eth 0\""),
        case("unknown verb", "UPDATE", &[], &good, 4, "unknown CNI_COMMAND \"UPDATE\""),
        case("foreign ipam", "ADD", &[], &foreign, 7,
            "ipam.type is \"host-local\", not \"atoll-ipam\""),
        case("gc without list", "GC", &[], &config("1.1.0", &socket), 7,
            "GC needs cni.dev/valid-attachments in the network config"),
    ];
    for case in cases {
        let run = plugin(case.verb, &case.extra, &case.stdin);
        assert_eq!(run.code, 1, "{}", case.name);
        let err = run.json();
        assert_eq!(err["code"], case.code, "{}: {err}", case.name);
        assert_eq!(err["msg"], case.msg, "{}", case.name);
    }

    // A value that is not UTF-8 cannot be built with &str: set it raw.
    let env = [
        ("CNI_COMMAND", OsStr::new("ADD")),
        ("CNI_CONTAINERID", OsStr::new("c1")),
        ("CNI_NETNS", OsStr::from_bytes(b"/run/netns/\xff")),
        ("CNI_IFNAME", OsStr::new("eth0")),
    ];
    let run = exec(&env, Some(&good));
    assert_eq!(run.json()["msg"], "CNI_NETNS is not valid UTF-8");

    let err = listener
        .accept()
        .expect_err("no malformed input may reach the agent");
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
}
