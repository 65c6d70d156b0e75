//! The plugin's verbs: read the environment and the config, ask the agent,
//! write the answer.
//!
//! Every check that needs no agent runs first, so bad input never reaches the
//! agent: the command, then the variables the verb needs, then the network
//! config. Only then is the agent called, once.
//!
//! Nothing here panics on input; [`run`] still catches a panic (a bug) and
//! reports it as a CNI error with [`codes::INTERNAL`], so the runtime always
//! gets an error object on stdout rather than a bare crash.

use std::any::Any;
use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use rscni_types::ipnet::IpNet;
use rscni_types::types::Cmd;

use crate::codes;
use crate::config::{self, NetworkConfig, LATEST_VERSION};
use crate::env::{self, Attachment, Environ, ATOLL_TIMEOUT_MS};
use crate::error::{CniError, PROTOCOL_SKEW};
use crate::result;
use crate::wire::{
    AgentError, AgentOk, AgentRequest, AgentResponse, Client, ClientError, Command, WireAttachment,
    DEFAULT_TIMEOUT,
};

/// What the plugin process prints on stdout and exits with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Bytes for stdout: a result, the VERSION answer, an error object, or
    /// nothing (DEL, CHECK, GC and STATUS succeed silently).
    pub stdout: Vec<u8>,
    /// 0 on success, 1 on error.
    pub exit_code: i32,
}

impl Outcome {
    /// The outcome reporting `err`, labelled with `cni_version`.
    pub fn failure(err: &CniError, cni_version: &str) -> Self {
        Self {
            stdout: err.to_json(cni_version),
            exit_code: 1,
        }
    }
}

/// Runs one plugin invocation: `env` is the process environment, `stdin`
/// everything read from standard input.
///
/// # Guarantees
///
/// Returns for every input, panics included; an error is reported as the
/// CNI error object, labelled with the config's `cniVersion` as written (or
/// the newest supported version when there is none).
pub fn run(env: &Environ, stdin: &[u8]) -> Outcome {
    match guarded(|| dispatch(env, stdin)) {
        Ok(stdout) => Outcome {
            stdout,
            exit_code: 0,
        },
        Err(err) => {
            let label = catch_unwind(|| config::declared_version(stdin))
                .ok()
                .flatten()
                .unwrap_or_else(|| LATEST_VERSION.to_string());
            Outcome::failure(&err, &label)
        }
    }
}

/// Runs `verb`, turning a panic into an [`codes::INTERNAL`] error.
fn guarded(verb: impl FnOnce() -> Result<Vec<u8>, CniError>) -> Result<Vec<u8>, CniError> {
    catch_unwind(AssertUnwindSafe(verb)).unwrap_or_else(|payload| {
        Err(CniError::internal(
            "atoll-ipam panicked; this is a bug",
            panic_text(payload.as_ref()),
        ))
    })
}

fn panic_text(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic without a message".to_owned())
}

fn dispatch(env: &Environ, stdin: &[u8]) -> Result<Vec<u8>, CniError> {
    let cmd = env::read_command(env)?;
    if cmd == Cmd::Version {
        let requested = config::declared_version(stdin);
        return Ok(result::version_output(requested.as_deref()));
    }

    let attachment = env::read_attachment(env, cmd)?;
    let timeout = read_timeout(env)?;
    let conf = config::parse(stdin, cmd, env.program())?;
    let client = Client::new(&conf.ipam.socket).with_timeout(timeout);

    match (cmd, attachment) {
        (Cmd::Add, Some(att)) => add(&client, &conf, att),
        (Cmd::Del, Some(att)) => del(&client, &conf, att),
        (Cmd::Check, Some(att)) => check(&client, &conf, att),
        (Cmd::Gc, _) => gc(&client, &conf),
        (Cmd::Status, _) => status(&client, &conf),
        // read_attachment returns an attachment for exactly ADD, DEL and
        // CHECK, and VERSION returned above.
        (cmd, _) => Err(CniError::internal(
            format!("no handler for {}", <&str>::from(cmd)),
            "",
        )),
    }
}

fn read_timeout(env: &Environ) -> Result<Duration, CniError> {
    let Some(raw) = env.var(ATOLL_TIMEOUT_MS)? else {
        return Ok(DEFAULT_TIMEOUT);
    };
    match raw.parse::<u64>() {
        Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err(CniError::env(
            format!("invalid {ATOLL_TIMEOUT_MS} {raw:?}"),
            "expected a whole number of milliseconds greater than 0",
        )),
    }
}

fn request(command: Command, conf: &NetworkConfig, att: Option<Attachment>) -> AgentRequest {
    let mut req = AgentRequest::new(command);
    req.network = conf.name.clone();
    req.pools = conf.ipam.pools.clone();
    if let Some(att) = att {
        req.container_id = att.container_id;
        req.ifname = att.ifname;
        req.netns = att.netns;
        req.args = att.args;
    }
    req
}

fn add(client: &Client, conf: &NetworkConfig, att: Attachment) -> Result<Vec<u8>, CniError> {
    let req = request(Command::Add, conf, Some(att));
    let ok = call(client, &req)?;
    result::add_result(conf.version, &ok)
}

fn del(client: &Client, conf: &NetworkConfig, att: Attachment) -> Result<Vec<u8>, CniError> {
    // The agent answers ok when the key holds nothing: DEL may repeat.
    call(client, &request(Command::Del, conf, Some(att)))?;
    Ok(Vec::new())
}

fn check(client: &Client, conf: &NetworkConfig, att: Attachment) -> Result<Vec<u8>, CniError> {
    let key = format!("{}/{}", att.container_id, att.ifname);
    let expected: BTreeSet<IpNet> = conf
        .prev_result
        .iter()
        .flat_map(|prev| prev.ips.iter().map(|ip| ip.address))
        .collect();
    let mut req = request(Command::Check, conf, Some(att));
    req.expected_ips = expected.iter().map(ToString::to_string).collect();

    // The agent compares and refuses a mismatch itself. An ok that lists the
    // addresses held is checked here too; an empty one is the agent's "same".
    let ok = call(client, &req)?;
    if ok.ips.is_empty() {
        return Ok(Vec::new());
    }
    let held = ok
        .ips
        .iter()
        .map(|ip| {
            ip.address.parse::<IpNet>().map_err(|_| {
                CniError::internal(
                    format!(
                        "the atoll agent answered CHECK with address {:?}, not in CIDR form",
                        ip.address
                    ),
                    PROTOCOL_SKEW,
                )
            })
        })
        .collect::<Result<BTreeSet<_>, _>>()?;

    if held != expected {
        return Err(CniError::new(
            codes::ADDRESS_MISMATCH,
            format!(
                "attachment {key} holds {}, but prevResult lists {}",
                list(&held),
                list(&expected)
            ),
            "the allocation changed since ADD; delete and re-create the container",
        ));
    }
    Ok(Vec::new())
}

fn list(addresses: &BTreeSet<IpNet>) -> String {
    if addresses.is_empty() {
        return "no address".to_owned();
    }
    addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn gc(client: &Client, conf: &NetworkConfig) -> Result<Vec<u8>, CniError> {
    let mut req = request(Command::Gc, conf, None);
    req.valid_attachments = conf
        .valid_attachments
        .iter()
        .flatten()
        .map(|a| WireAttachment {
            container_id: a.container_id.clone(),
            ifname: a.ifname.clone(),
        })
        .collect();
    call(client, &req)?;
    Ok(Vec::new())
}

fn status(client: &Client, conf: &NetworkConfig) -> Result<Vec<u8>, CniError> {
    call(client, &request(Command::Status, conf, None))?;
    Ok(Vec::new())
}

/// Calls the agent once and turns every failure into the CNI error for the
/// command.
fn call(client: &Client, req: &AgentRequest) -> Result<AgentOk, CniError> {
    match client.call(req) {
        Ok(AgentResponse::Ok(ok)) => Ok(ok),
        Ok(AgentResponse::Err(err)) => Err(agent_error(err)),
        Err(err) => Err(unreachable(&err, req.command)),
    }
}

fn agent_error(err: AgentError) -> CniError {
    if err.code == 0 {
        return CniError::internal(
            format!("the atoll agent answered an error with code 0: {}", err.msg),
            err.details,
        );
    }
    CniError::new(err.code, err.msg, err.details)
}

fn unreachable(err: &ClientError, command: Command) -> CniError {
    if err.is_protocol_breach() {
        return CniError::internal(err.to_string(), PROTOCOL_SKEW);
    }
    match command {
        Command::Status => CniError::new(
            codes::PLUGIN_NOT_AVAILABLE,
            err.to_string(),
            "atoll-ipam serves no ADD until the node agent answers",
        ),
        _ => CniError::new(
            codes::TRY_AGAIN_LATER,
            err.to_string(),
            "is the atoll agent running on this node, and does ipam.socket name its socket?",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::*;
    use crate::env::{CNI_ARGS, CNI_COMMAND, CNI_CONTAINERID, CNI_IFNAME, CNI_NETNS};
    use crate::wire::{read_request, write_response, WireIp};
    use serde_json::{json, Value};
    use std::os::unix::net::UnixListener;
    use std::path::Path;
    use std::thread;

    fn conf_json(version: &str, socket: &Path) -> String {
        format!(
            r#"{{"cniVersion":"{version}","name":"office","type":"bridge",
                "ipam":{{"type":"atoll-ipam","socket":"{}","pools":["rack-a-web"]}}}}"#,
            socket.display()
        )
    }

    fn add_env() -> Environ {
        Environ::new()
            .with(CNI_COMMAND, "ADD")
            .with(CNI_CONTAINERID, "c1")
            .with(CNI_NETNS, "/run/netns/c1")
            .with(CNI_IFNAME, "eth0")
    }

    fn error_of(out: &Outcome) -> Value {
        assert_eq!(out.exit_code, 1);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    #[test]
    #[rustfmt::skip] // a table: one case per entry, expected messages written out whole
    fn bad_invocations_give_the_error_object_and_no_agent_call() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        listener.set_nonblocking(true).unwrap();
        let good = conf_json("1.0.0", &socket);

        let cases: Vec<(&str, Environ, String, Value)> = vec![
            (
                "no command",
                Environ::new(),
                good.clone(),
                json!({"cniVersion": "1.0.0", "code": 4,
                "msg": "required env variables [CNI_COMMAND] missing",
                "details": "set CNI_COMMAND to ADD, DEL, CHECK, GC, STATUS or VERSION"}),
            ),
            (
                "unknown command",
                add_env().with(CNI_COMMAND, "REMOVE"),
                good.clone(),
                json!({"cniVersion": "1.0.0", "code": 4, "msg": "unknown CNI_COMMAND \"REMOVE\"",
                    "details": "expected ADD, DEL, CHECK, GC, STATUS or VERSION"}),
            ),
            (
                "missing netns",
                add_env().with(CNI_NETNS, ""),
                good.clone(),
                json!({"cniVersion": "1.0.0", "code": 4, "msg": "required env variables [CNI_NETNS] missing",
                    "details": "ADD needs CNI_CONTAINERID, CNI_NETNS and CNI_IFNAME"}),
            ),
            (
                "bad args",
                add_env().with(CNI_ARGS, "K8S_POD_NAME"),
                good.clone(),
                json!({"cniVersion": "1.0.0", "code": 4, "msg": "invalid CNI_ARGS pair \"K8S_POD_NAME\"",
                    "details": "CNI_ARGS is a list of KEY=VALUE pairs separated by ';'"}),
            ),
            (
                "bad timeout",
                add_env().with(ATOLL_TIMEOUT_MS, "soon"),
                good.clone(),
                json!({"cniVersion": "1.0.0", "code": 4, "msg": "invalid ATOLL_TIMEOUT_MS \"soon\"",
                    "details": "expected a whole number of milliseconds greater than 0"}),
            ),
            (
                "malformed stdin",
                add_env(),
                "{\"cniVersion\":".to_owned(),
                json!({"cniVersion": "1.1.0", "code": 6, "msg": "network config on stdin is not valid JSON",
                    "details": "EOF while parsing a value at line 1 column 14"}),
            ),
            (
                "unknown version keeps its label",
                add_env(),
                conf_json("7.0.0", &socket),
                json!({"cniVersion": "7.0.0", "code": 1, "msg": "cniVersion \"7.0.0\" is not supported",
                    "details": "atoll-ipam supports 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"}),
            ),
        ];
        for (name, env, stdin, expected) in cases {
            let out = run(&env, stdin.as_bytes());
            assert_eq!(error_of(&out), expected, "{name}");
        }

        let err = listener.accept().expect_err("no case may reach the agent");
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    }

    #[test]
    fn add_asks_the_agent_and_writes_the_result() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let agent = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let req = read_request(&mut s).unwrap();
            let ok = AgentOk {
                ips: vec![WireIp {
                    address: "10.10.1.7/16".into(),
                    gateway: Some("10.10.0.1".into()),
                    pool: "rack-a-web".into(),
                    subnet: "rack-a".into(),
                }],
                ..AgentOk::default()
            };
            write_response(&mut s, &AgentResponse::Ok(ok)).unwrap();
            req
        });

        let env = add_env().with(CNI_ARGS, "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop");
        let out = run(&env, conf_json("0.3.1", &socket).as_bytes());
        assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stdout));
        let value: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            value,
            json!({"cniVersion": "0.3.1",
                "ips": [{"version": "4", "address": "10.10.1.7/16", "gateway": "10.10.0.1"}],
                "dns": {}})
        );

        let req = agent.join().unwrap();
        assert_eq!(req.command, Command::Add);
        assert_eq!(
            (req.container_id.as_str(), req.ifname.as_str()),
            ("c1", "eth0")
        );
        assert_eq!(req.netns.as_deref(), Some("/run/netns/c1"));
        assert_eq!(req.network, "office");
        assert_eq!(req.pools, ["rack-a-web"]);
        assert_eq!(
            req.args.get("K8S_POD_NAMESPACE").map(String::as_str),
            Some("shop")
        );
    }

    #[test]
    fn unreachable_agent_is_try_again_later_naming_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("absent.sock");
        let out = run(&add_env(), conf_json("1.0.0", &socket).as_bytes());
        let value = error_of(&out);
        assert_eq!(value["code"], TRY_AGAIN_LATER);
        let msg = value["msg"].as_str().unwrap();
        assert!(
            msg.starts_with(&format!(
                "cannot connect to the atoll agent at {}: ",
                socket.display()
            )),
            "{msg}"
        );
    }

    #[test]
    fn a_panic_becomes_an_internal_error() {
        let err = guarded(|| panic!("boom")).unwrap_err();
        assert_eq!(
            err,
            CniError::internal("atoll-ipam panicked; this is a bug", "boom")
        );
        let err = guarded(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(err.details, "panic without a message");
    }
}
