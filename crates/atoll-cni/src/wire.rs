//! The protocol between the plugin and the node agent, over a unix socket.
//!
//! One exchange per connection: the plugin connects, writes one
//! [`AgentRequest`] as a single line of JSON terminated by `\n`, and reads one
//! [`AgentResponse`] line back; then both sides close. A message is at most
//! [`MAX_MESSAGE_BYTES`] long, newline included.
//!
//! An answer is externally tagged: `{"ok": {...}}` or
//! `{"error": {"code": 101, "msg": "...", "details": "..."}}`. The agent picks
//! the code from [`crate::codes`]; the plugin passes code, msg and details to
//! the runtime unchanged, so the agent writes them for an operator.
//!
//! What the agent does per command, and what it answers on success:
//!
//! - `add`: allocate for the key (container_id, ifname), idempotently. `ok`
//!   carries the addresses, each in CIDR form with its subnet's prefix
//!   length, and the subnets' routes and DNS.
//! - `del`: release what the key holds; a key that holds nothing is success.
//!   `ok` is empty.
//! - `check`: compare what the key holds with `expected_ips` (the addresses
//!   of the `prevResult`) and answer [`crate::codes::ADDRESS_MISMATCH`] when
//!   they differ. The agent's verdict decides. `ok` may be empty; when it lists
//!   the addresses held, the plugin compares them with the `prevResult` as
//!   well, so an agent that only looks up and never compares is still caught.
//! - `gc`: release every allocation of this node made for `network` whose key
//!   is not in `valid_attachments`. `ok` is empty. (Scoping by network matters:
//!   a node may attach pods to several atoll networks, and the list names only
//!   this one's attachments.)
//! - `status`: report whether ADDs can be served. `ok` is empty.
//!
//! `pools` carries only the `ipam.pools` of the network config. Pools or the
//! application named in `CNI_ARGS` (`ATOLL_POOLS`, `ATOLL_APP`) stay in `args`
//! with the Kubernetes keys, so that the agent applies the binding order of
//! the design (pod, workload, namespace, config, defaults) in one place. The
//! plugin has checked their syntax already; [`parse_pool_list`] is the shared
//! parser.
//!
//! This module is blocking and uses only `std`: the plugin calls
//! [`Client::call`]. The agent is asynchronous and uses the message types
//! with [`AgentRequest::from_line`] and [`AgentResponse::to_line`] on its own
//! sockets; [`read_request`] and [`write_response`] serve a blocking stream.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Where the agent listens unless the network config's `ipam.socket` says
/// otherwise.
pub const DEFAULT_SOCKET: &str = "/run/atoll/agent.sock";

/// How long the plugin waits for the agent's answer, unless
/// `ATOLL_TIMEOUT_MS` says otherwise. Generous: an ADD may wait on the store
/// and on the Kubernetes API, and runtimes have their own, longer, deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest message either side accepts, newline included.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// What the plugin asks the agent to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Allocate addresses for an attachment.
    Add,
    /// Release an attachment's addresses.
    Del,
    /// Report the addresses an attachment holds.
    Check,
    /// Release the node's allocations for the network whose key is not listed.
    Gc,
    /// Report readiness to serve ADDs.
    Status,
}

/// An attachment the runtime still uses, listed in a GC request.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WireAttachment {
    /// The container ID.
    pub container_id: String,
    /// The interface name.
    pub ifname: String,
}

/// One request, the first and only line the plugin sends on a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRequest {
    /// The verb.
    pub command: Command,
    /// `CNI_CONTAINERID`; empty for GC and STATUS.
    #[serde(default)]
    pub container_id: String,
    /// `CNI_IFNAME`; empty for GC and STATUS.
    #[serde(default)]
    pub ifname: String,
    /// `CNI_NETNS`, when the runtime gave one.
    #[serde(default)]
    pub netns: Option<String>,
    /// The network config's `name`.
    #[serde(default)]
    pub network: String,
    /// The network config's `ipam.pools`, in order of preference.
    #[serde(default)]
    pub pools: Vec<String>,
    /// Every `CNI_ARGS` pair (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`,
    /// `K8S_POD_UID`, `ATOLL_APP`, `ATOLL_POOLS`, `IgnoreUnknown`, ...).
    #[serde(default)]
    pub args: BTreeMap<String, String>,
    /// GC: the attachments to keep.
    #[serde(default)]
    pub valid_attachments: Vec<WireAttachment>,
    /// CHECK: the addresses of the `prevResult`, in CIDR form.
    #[serde(default)]
    pub expected_ips: Vec<String>,
}

impl AgentRequest {
    /// A request for `command` with every other field empty.
    pub fn new(command: Command) -> Self {
        Self {
            command,
            container_id: String::new(),
            ifname: String::new(),
            netns: None,
            network: String::new(),
            pools: Vec::new(),
            args: BTreeMap::new(),
            valid_attachments: Vec::new(),
            expected_ips: Vec::new(),
        }
    }

    /// Decodes a request line (with or without its trailing newline).
    ///
    /// # Errors
    ///
    /// [`WireError::TooLong`] past [`MAX_MESSAGE_BYTES`], [`WireError::Decode`]
    /// when the line is not a request.
    pub fn from_line(line: &[u8]) -> Result<Self, WireError> {
        decode_line(line)
    }

    /// Encodes the request as one JSON line ending in `\n`.
    ///
    /// # Errors
    ///
    /// [`WireError::Decode`] if serialization fails, which these types do
    /// not do in practice.
    pub fn to_line(&self) -> Result<Vec<u8>, WireError> {
        encode_line(self)
    }
}

/// An address the agent allocated or found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireIp {
    /// The address in CIDR form with the prefix length of its subnet, e.g.
    /// `10.1.0.5/24`.
    pub address: String,
    /// The subnet's gateway, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// The IPPool the address came from.
    #[serde(default)]
    pub pool: String,
    /// The Subnet the pool belongs to.
    #[serde(default)]
    pub subnet: String,
}

/// A route of the subnet, passed into the CNI result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRoute {
    /// Destination in CIDR form.
    pub dst: String,
    /// Next hop; `None` lets the main plugin use the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// DNS settings of the subnet, passed into the CNI result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireDns {
    /// Name servers, in order of priority.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// The local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains, in order of priority.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl WireDns {
    /// Whether no DNS setting is present.
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.as_deref().is_none_or(str::is_empty)
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// A successful answer. Only ADD and CHECK fill it; the other commands
/// answer it empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentOk {
    /// Addresses, at most one per IP family.
    #[serde(default)]
    pub ips: Vec<WireIp>,
    /// Routes of the subnets the addresses belong to.
    #[serde(default)]
    pub routes: Vec<WireRoute>,
    /// DNS settings of those subnets.
    #[serde(default)]
    pub dns: WireDns,
}

/// A failed answer, reported to the runtime as the CNI error object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentError {
    /// A code of [`crate::codes`].
    pub code: u32,
    /// A short message naming what failed.
    pub msg: String,
    /// What was tried, and what to do about it.
    #[serde(default)]
    pub details: String,
}

/// The agent's answer, the only line it writes on a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentResponse {
    /// `{"ok": {...}}`
    Ok(AgentOk),
    /// `{"error": {...}}`
    #[serde(rename = "error")]
    Err(AgentError),
}

impl AgentResponse {
    /// A success that carries nothing (DEL, GC, STATUS).
    pub fn empty() -> Self {
        Self::Ok(AgentOk::default())
    }

    /// A failure.
    pub fn error(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::Err(AgentError {
            code,
            msg: msg.into(),
            details: details.into(),
        })
    }

    /// Decodes an answer line (with or without its trailing newline).
    ///
    /// # Errors
    ///
    /// [`WireError::TooLong`] past [`MAX_MESSAGE_BYTES`], [`WireError::Decode`]
    /// when the line is not an answer.
    pub fn from_line(line: &[u8]) -> Result<Self, WireError> {
        decode_line(line)
    }

    /// Encodes the answer as one JSON line ending in `\n`.
    ///
    /// # Errors
    ///
    /// [`WireError::Decode`] if serialization fails, which these types do
    /// not do in practice.
    pub fn to_line(&self) -> Result<Vec<u8>, WireError> {
        encode_line(self)
    }
}

/// Splits a comma-separated pool list (`ATOLL_POOLS`, the binding
/// annotation), trimming blanks around each name.
///
/// # Errors
///
/// A sentence naming the first empty entry (1-based), or saying the list is
/// empty.
pub fn parse_pool_list(raw: &str) -> Result<Vec<String>, String> {
    if raw.trim().is_empty() {
        return Err("the pool list is empty".to_owned());
    }
    raw.split(',')
        .enumerate()
        .map(|(i, name)| match name.trim() {
            "" => Err(format!("entry {} of the pool list is empty", i + 1)),
            name => Ok(name.to_owned()),
        })
        .collect()
}

/// A message that could not be read, decoded or encoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Reading or writing the stream failed.
    #[error("wire i/o failed: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection before sending a line.
    #[error("connection closed before a message arrived")]
    Empty,
    /// The line exceeds [`MAX_MESSAGE_BYTES`].
    #[error("message longer than {MAX_MESSAGE_BYTES} bytes")]
    TooLong,
    /// The line is not JSON of the expected shape.
    #[error("message is not a valid atoll wire message: {0}")]
    Decode(#[from] serde_json::Error),
}

fn decode_line<T: for<'de> Deserialize<'de>>(line: &[u8]) -> Result<T, WireError> {
    if line.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLong);
    }
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    Ok(serde_json::from_slice(line)?)
}

fn encode_line<T: Serialize>(message: &T) -> Result<Vec<u8>, WireError> {
    let mut line = serde_json::to_vec(message)?;
    line.push(b'\n');
    if line.len() > MAX_MESSAGE_BYTES {
        return Err(WireError::TooLong);
    }
    Ok(line)
}

/// Reads one request line from a blocking stream (for a blocking agent or a
/// test double).
///
/// # Errors
///
/// [`WireError`] when the stream fails, closes early, or carries no valid
/// request.
pub fn read_request(stream: &mut impl Read) -> Result<AgentRequest, WireError> {
    let line = read_line(stream, None)?;
    AgentRequest::from_line(&line)
}

/// Writes one answer line to a blocking stream.
///
/// # Errors
///
/// [`WireError::Io`] when writing fails.
pub fn write_response(stream: &mut impl Write, response: &AgentResponse) -> Result<(), WireError> {
    stream.write_all(&response.to_line()?)?;
    stream.flush()?;
    Ok(())
}

/// Reads up to and including the first `\n`, or to end of stream, at most
/// [`MAX_MESSAGE_BYTES`]. With a deadline, gives up with
/// [`io::ErrorKind::TimedOut`] once it passes (the caller must have set a
/// read timeout on the stream for the deadline to be checked in time).
fn read_line(
    stream: &mut impl Read,
    deadline: Option<&dyn Fn() -> bool>,
) -> Result<Vec<u8>, WireError> {
    let mut line = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if deadline.is_some_and(|passed| passed()) {
            return Err(io::Error::from(io::ErrorKind::TimedOut).into());
        }
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err.into()),
        };
        if n == 0 {
            break;
        }
        let end = chunk[..n]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(n, |i| i + 1);
        line.extend_from_slice(&chunk[..end]);
        if line.len() > MAX_MESSAGE_BYTES {
            return Err(WireError::TooLong);
        }
        if end < n || line.ends_with(b"\n") {
            break;
        }
    }
    if line.is_empty() {
        return Err(WireError::Empty);
    }
    Ok(line)
}

/// Why the plugin got no usable answer from the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing accepts connections at the socket path.
    #[error("cannot connect to the atoll agent at {}: {source}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// Why the connection failed.
        source: io::Error,
    },
    /// The agent accepted the connection but the exchange failed.
    #[error("talking to the atoll agent at {} failed: {source}", path.display())]
    Exchange {
        /// The socket path.
        path: PathBuf,
        /// What failed.
        source: WireError,
    },
    /// The agent did not answer within the timeout.
    #[error(
        "the atoll agent at {} did not answer within {} ms",
        path.display(),
        timeout.as_millis()
    )]
    Timeout {
        /// The socket path.
        path: PathBuf,
        /// The timeout that passed.
        timeout: Duration,
    },
    /// The agent answered something that is not an answer.
    #[error(
        "the atoll agent at {} sent an answer that breaks the wire protocol: {source}",
        path.display()
    )]
    Malformed {
        /// The socket path.
        path: PathBuf,
        /// Why the answer was refused.
        source: WireError,
    },
}

impl ClientError {
    /// Whether the agent itself is at fault (a protocol breach), as opposed
    /// to being unreachable, slow or gone: the former is a bug, the latter
    /// clears up by retrying.
    pub fn is_protocol_breach(&self) -> bool {
        matches!(self, Self::Malformed { .. })
    }
}

/// A blocking client of the agent socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    /// A client of the agent at `socket`, with [`DEFAULT_TIMEOUT`].
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same client with another timeout for the whole exchange after
    /// connecting.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request and waits for its answer.
    ///
    /// # Errors
    ///
    /// [`ClientError`]: the socket cannot be connected, the exchange fails or
    /// times out, or the answer is not a valid [`AgentResponse`].
    pub fn call(&self, request: &AgentRequest) -> Result<AgentResponse, ClientError> {
        // TODO: std has no connect timeout for unix sockets; connect() blocks
        // while the agent's listen backlog is full. The timeout below starts
        // once connected.
        let mut stream =
            UnixStream::connect(&self.socket).map_err(|source| ClientError::Connect {
                path: self.socket.clone(),
                source,
            })?;
        let deadline = Instant::now() + self.timeout;
        let exchange = |source: WireError| self.classify(source);

        // Only a request past MAX_MESSAGE_BYTES fails to encode (CNI_ARGS
        // would have to be huge); that is no fault of the agent's.
        let line = request.to_line().map_err(|source| ClientError::Exchange {
            path: self.socket.clone(),
            source,
        })?;
        stream
            .set_write_timeout(Some(self.timeout))
            .and_then(|()| stream.write_all(&line))
            .map_err(|err| exchange(err.into()))?;

        // Each read waits at most for what is left of the deadline, so an
        // agent that trickles bytes cannot stretch the timeout.
        let passed = || {
            let left = deadline.saturating_duration_since(Instant::now());
            left.is_zero() || stream.set_read_timeout(Some(left)).is_err()
        };
        let mut reader = &stream;
        let answer = read_line(&mut reader, Some(&passed)).map_err(exchange)?;

        AgentResponse::from_line(&answer).map_err(|source| ClientError::Malformed {
            path: self.socket.clone(),
            source,
        })
    }

    fn classify(&self, source: WireError) -> ClientError {
        let path = self.socket.clone();
        match source {
            WireError::Io(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                ClientError::Timeout {
                    path,
                    timeout: self.timeout,
                }
            }
            WireError::TooLong | WireError::Decode(_) => ClientError::Malformed { path, source },
            source => ClientError::Exchange { path, source },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::thread;

    #[test]
    fn messages_have_the_documented_shape() {
        let mut req = AgentRequest::new(Command::Gc);
        req.network = "office".into();
        req.valid_attachments.push(WireAttachment {
            container_id: "c1".into(),
            ifname: "eth0".into(),
        });
        let value: serde_json::Value = serde_json::from_slice(&req.to_line().unwrap()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "command": "gc", "container_id": "", "ifname": "", "netns": null,
                "network": "office", "pools": [], "args": {},
                "valid_attachments": [{"container_id": "c1", "ifname": "eth0"}],
                "expected_ips": []
            })
        );

        let ok = AgentResponse::Ok(AgentOk {
            ips: vec![WireIp {
                address: "10.1.0.5/24".into(),
                gateway: Some("10.1.0.1".into()),
                pool: "web".into(),
                subnet: "rack-a".into(),
            }],
            routes: vec![WireRoute {
                dst: "0.0.0.0/0".into(),
                gw: None,
            }],
            dns: WireDns::default(),
        });
        let line = ok.to_line().unwrap();
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&line).unwrap(),
            serde_json::json!({"ok": {
                "ips": [{
                    "address": "10.1.0.5/24", "gateway": "10.1.0.1",
                    "pool": "web", "subnet": "rack-a"
                }],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dns": {}
            }})
        );
        assert_eq!(AgentResponse::from_line(&line).unwrap(), ok);

        let err = AgentResponse::error(101, "full", "pools tried: web (full)");
        assert_eq!(
            String::from_utf8(err.to_line().unwrap()).unwrap(),
            "{\"error\":{\"code\":101,\"msg\":\"full\",\"details\":\"pools tried: web (full)\"}}\n"
        );
    }

    #[test]
    fn a_request_with_only_a_command_decodes() {
        let req = AgentRequest::from_line(b"{\"command\":\"status\"}\n").unwrap();
        assert_eq!(req, AgentRequest::new(Command::Status));
    }

    #[test]
    fn bad_lines_are_refused() {
        assert!(matches!(
            AgentResponse::from_line(b"{\"maybe\":{}}"),
            Err(WireError::Decode(_))
        ));
        assert!(matches!(
            AgentRequest::from_line(b"{\"command\":\"eat\"}"),
            Err(WireError::Decode(_))
        ));
        let long = vec![b' '; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(
            AgentRequest::from_line(&long),
            Err(WireError::TooLong)
        ));
        assert!(matches!(read_request(&mut &b""[..]), Err(WireError::Empty)));
    }

    #[test]
    fn read_line_stops_at_the_first_newline() {
        let mut input = &b"{\"command\":\"del\"}\nrest"[..];
        let req = read_request(&mut input).unwrap();
        assert_eq!(req.command, Command::Del);
    }

    #[test]
    fn pool_lists_are_split_and_trimmed() {
        assert_eq!(parse_pool_list("a, b ,c").unwrap(), ["a", "b", "c"]);
        assert_eq!(parse_pool_list(" ").unwrap_err(), "the pool list is empty");
        assert_eq!(
            parse_pool_list("a,").unwrap_err(),
            "entry 2 of the pool list is empty"
        );
    }

    #[test]
    fn client_round_trip_and_failures() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = thread::spawn(move || {
            // 1: a proper answer; 2: garbage; 3: silence until the client gives up.
            let (mut s, _) = listener.accept().unwrap();
            let req = read_request(&mut s).unwrap();
            write_response(&mut s, &AgentResponse::error(103, req.network, "")).unwrap();
            let (mut s, _) = listener.accept().unwrap();
            read_request(&mut s).unwrap();
            s.write_all(b"not json\n").unwrap();
            let (mut s, _) = listener.accept().unwrap();
            read_request(&mut s).unwrap();
            // Hold the connection open until the client closes it.
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
        });

        let client = Client::new(&path).with_timeout(Duration::from_millis(200));
        let mut req = AgentRequest::new(Command::Status);
        req.network = "office".into();
        assert_eq!(
            client.call(&req).unwrap(),
            AgentResponse::error(103, "office", "")
        );

        let err = client.call(&req).unwrap_err();
        assert!(err.is_protocol_breach(), "{err}");

        let err = client.call(&req).unwrap_err();
        assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
        assert!(
            err.to_string().ends_with("did not answer within 200 ms"),
            "{err}"
        );
        server.join().unwrap();

        let gone = Client::new(dir.path().join("nothing.sock"));
        let err = gone.call(&req).unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }));
        assert!(err.to_string().contains("nothing.sock"), "{err}");
    }
}
