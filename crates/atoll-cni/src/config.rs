//! The network config on stdin: version negotiation, decoding, validation.
//!
//! The order of the checks decides which error a bad config gets: first the
//! bytes must be a JSON object (else [`codes::DECODE_FAILURE`]); then its
//! `cniVersion` must be a version this plugin speaks and that defines the verb
//! (else [`codes::INCOMPATIBLE_VERSION`]), checked before the rest is decoded
//! so that a config of a future spec gets "incompatible version" rather than a
//! decoding error; then the whole config is decoded with the `rscni-types`
//! types (wrong JSON types: [`codes::DECODE_FAILURE`]) and validated (bad
//! name, missing or foreign `ipam`: [`codes::INVALID_NETWORK_CONFIG`];
//! unknown `ipam` keys: [`codes::UNSUPPORTED_FIELD`]).
//!
//! The `ipam` section atoll reads:
//!
//! ```json
//! {"type": "atoll-ipam", "socket": "/run/atoll/agent.sock", "pools": ["rack-a-web"]}
//! ```

use std::path::PathBuf;

use rscni_types::types::{CNIResult, Cmd, GcAttachment, NetConf};
use rscni_types::version::SpecVersion;
use serde_json::Value;

use crate::codes;
use crate::error::{CniError, NAME_RULE};
use crate::wire::DEFAULT_SOCKET;

/// The name this plugin is installed under, and the `ipam.type` it accepts.
pub const PLUGIN_TYPE: &str = "atoll-ipam";

/// The spec versions this plugin speaks, oldest first.
pub const SUPPORTED_VERSIONS: [SpecVersion; 5] = [
    SpecVersion::new(0, 3, 0),
    SpecVersion::new(0, 3, 1),
    SpecVersion::new(0, 4, 0),
    SpecVersion::new(1, 0, 0),
    SpecVersion::new(1, 1, 0),
];

/// The newest version in [`SUPPORTED_VERSIONS`].
pub const LATEST_VERSION: SpecVersion = SpecVersion::new(1, 1, 0);

/// The `ipam` keys atoll reads; any other is refused.
const IPAM_KEYS: [&str; 3] = ["type", "socket", "pools"];

/// A decoded and validated network config.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// The negotiated spec version; decides the shape of the ADD result.
    pub version: SpecVersion,
    /// The network name.
    pub name: String,
    /// The `ipam` section.
    pub ipam: IpamConfig,
    /// The previous result; present for CHECK (checked), optional otherwise.
    pub prev_result: Option<CNIResult>,
    /// `cni.dev/valid-attachments`; present for GC (checked).
    pub valid_attachments: Option<Vec<GcAttachment>>,
}

/// atoll's `ipam` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamConfig {
    /// The agent socket; [`DEFAULT_SOCKET`] when not given.
    pub socket: PathBuf,
    /// Pools to use when no annotation binds the pod, in order.
    pub pools: Vec<String>,
}

/// The config's `cniVersion` as written, for labelling an error object, or
/// `None` when stdin is not a JSON object with a string `cniVersion`.
pub fn declared_version(stdin: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "cniVersion")]
        cni_version: Option<Value>,
    }
    let probe: Probe = serde_json::from_slice(stdin).ok()?;
    match probe.cni_version? {
        Value::String(version) if !version.is_empty() => Some(version),
        _ => None,
    }
}

/// Decodes and validates the network config for `cmd`.
///
/// `program` is the name the plugin was executed under: besides
/// [`PLUGIN_TYPE`], `ipam.type` may name that (a renamed install).
///
/// # Errors
///
/// See the module doc for which code each fault gets.
pub fn parse(stdin: &[u8], cmd: Cmd, program: Option<&str>) -> Result<NetworkConfig, CniError> {
    if stdin.iter().all(u8::is_ascii_whitespace) {
        return Err(CniError::decode(
            "no network config on stdin",
            "the runtime passes the network config as JSON on stdin",
        ));
    }
    let raw: Value = serde_json::from_slice(stdin).map_err(|err| {
        CniError::decode("network config on stdin is not valid JSON", err.to_string())
    })?;
    let Value::Object(object) = &raw else {
        return Err(CniError::decode(
            "network config on stdin is not a JSON object",
            "",
        ));
    };

    let version = negotiate(object.get("cniVersion"), cmd)?;

    let conf: NetConf = serde_json::from_slice(stdin)
        .map_err(|err| CniError::decode("failed to decode the network config", err.to_string()))?;
    check_name(&conf)?;
    let ipam = parse_ipam(object.get("ipam"), program)?;

    match cmd {
        Cmd::Check if conf.prev_result.is_none() => {
            return Err(CniError::config(
                "CHECK needs prevResult in the network config",
                "the runtime passes the result of the ADD as prevResult",
            ));
        }
        Cmd::Gc if conf.valid_attachments.is_none() => {
            return Err(CniError::config(
                "GC needs cni.dev/valid-attachments in the network config",
                "without it every allocation of the network would look stale; \
                 an empty list is accepted",
            ));
        }
        _ => {}
    }

    Ok(NetworkConfig {
        version,
        name: conf.name,
        ipam,
        prev_result: conf.prev_result,
        valid_attachments: conf.valid_attachments,
    })
}

/// Parses `cniVersion` and checks it is supported and defines `cmd`.
fn negotiate(declared: Option<&Value>, cmd: Cmd) -> Result<SpecVersion, CniError> {
    let supported = supported_list();
    let text = match declared {
        None | Some(Value::Null) => "",
        Some(Value::String(text)) => text.as_str(),
        Some(other) => {
            return Err(CniError::decode(
                format!("cniVersion {other} is not a string"),
                format!("atoll-ipam supports {supported}"),
            ));
        }
    };
    if text.is_empty() {
        // An undeclared version means 0.1.0, whose results this plugin cannot
        // write.
        return Err(CniError::new(
            codes::INCOMPATIBLE_VERSION,
            "network config has no cniVersion",
            format!("atoll-ipam supports {supported}"),
        ));
    }
    let version: SpecVersion = text.parse().map_err(|_| {
        CniError::decode(
            format!("cniVersion {text:?} is not a version"),
            format!("atoll-ipam supports {supported}"),
        )
    })?;
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(CniError::new(
            codes::INCOMPATIBLE_VERSION,
            format!("cniVersion {text:?} is not supported"),
            format!("atoll-ipam supports {supported}"),
        ));
    }
    if version.allows(cmd).is_err() {
        let verb: &str = cmd.into();
        let floor = if cmd == Cmd::Check { "0.4.0" } else { "1.1.0" };
        return Err(CniError::new(
            codes::INCOMPATIBLE_VERSION,
            format!("{verb} does not exist in cniVersion {text:?}"),
            format!("{verb} needs cniVersion {floor} or later"),
        ));
    }
    Ok(version)
}

fn supported_list() -> String {
    SUPPORTED_VERSIONS.map(|v| v.to_string()).join(", ")
}

fn check_name(conf: &NetConf) -> Result<(), CniError> {
    if conf.validate_name().is_ok() {
        return Ok(());
    }
    if conf.name.is_empty() {
        return Err(CniError::config("network config has no name", ""));
    }
    Err(CniError::config(
        format!("invalid network name {:?}", conf.name),
        NAME_RULE,
    ))
}

fn parse_ipam(section: Option<&Value>, program: Option<&str>) -> Result<IpamConfig, CniError> {
    let section = match section {
        None | Some(Value::Null) => {
            return Err(CniError::config(
                "network config has no ipam section",
                format!(
                    r#"the main plugin's config names it: "ipam": {{"type": "{PLUGIN_TYPE}"}}"#
                ),
            ));
        }
        Some(Value::Object(section)) => section,
        Some(_) => return Err(CniError::decode("ipam is not a JSON object", "")),
    };

    let ipam_type = match section.get("type") {
        Some(Value::String(t)) => t.as_str(),
        None => return Err(CniError::config("ipam section has no type", "")),
        Some(_) => return Err(CniError::decode("ipam.type is not a string", "")),
    };
    if ipam_type != PLUGIN_TYPE && Some(ipam_type) != program {
        return Err(CniError::config(
            format!("ipam.type is {ipam_type:?}, not {PLUGIN_TYPE:?}"),
            "the runtime ran atoll-ipam for a config that names another IPAM plugin",
        ));
    }

    let unknown: Vec<&str> = section
        .keys()
        .map(String::as_str)
        .filter(|key| !IPAM_KEYS.contains(key))
        .collect();
    if !unknown.is_empty() {
        return Err(CniError::new(
            codes::UNSUPPORTED_FIELD,
            format!("unsupported ipam field(s): {}", unknown.join(", ")),
            "atoll-ipam reads only ipam.type, ipam.socket and ipam.pools; subnets, gateways, \
             routes and DNS come from the atoll Subnet and IPPool resources",
        ));
    }

    let socket = match section.get("socket") {
        None | Some(Value::Null) => PathBuf::from(DEFAULT_SOCKET),
        Some(Value::String(path)) if path.starts_with('/') => PathBuf::from(path),
        Some(Value::String(path)) => {
            return Err(CniError::config(
                format!("ipam.socket {path:?} is not an absolute path"),
                format!("the agent listens on {DEFAULT_SOCKET} unless configured otherwise"),
            ));
        }
        Some(_) => return Err(CniError::decode("ipam.socket is not a string", "")),
    };

    let pools = match section.get("pools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let mut pools = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let Value::String(name) = item else {
                    return Err(CniError::decode(
                        format!("ipam.pools[{i}] is not a string"),
                        "",
                    ));
                };
                if name.is_empty() || name.contains(',') || name.chars().any(char::is_whitespace) {
                    return Err(CniError::config(
                        format!("ipam.pools[{i}] {name:?} is not a pool name"),
                        "pool names are non-empty and contain no ',' or blanks",
                    ));
                }
                pools.push(name.clone());
            }
            pools
        }
        Some(_) => return Err(CniError::decode("ipam.pools is not a list of strings", "")),
    };

    Ok(IpamConfig { socket, pools })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::*;

    const SUPPORTED: &str = "atoll-ipam supports 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0";

    #[test]
    #[rustfmt::skip] // a table: one case per entry, expected messages written out whole
    fn bad_configs_get_the_right_code_and_message() {
        let cases: Vec<(&str, Cmd, &str, u32, &str, &str)> = vec![
            ("empty stdin", Cmd::Add, "", DECODE_FAILURE, "no network config on stdin",
                "the runtime passes the network config as JSON on stdin"),
            ("truncated json", Cmd::Add, r#"{"cniVersion": "1.0.0""#, DECODE_FAILURE,
                "network config on stdin is not valid JSON", "EOF while parsing an object at line 1 column 22"),
            ("array", Cmd::Add, "[]", DECODE_FAILURE, "network config on stdin is not a JSON object", ""),
            ("no version", Cmd::Add, r#"{"name":"n","type":"bridge"}"#, INCOMPATIBLE_VERSION,
                "network config has no cniVersion", SUPPORTED),
            ("unknown version", Cmd::Add, r#"{"cniVersion":"2.0.0","name":"n","type":"bridge"}"#,
                INCOMPATIBLE_VERSION, "cniVersion \"2.0.0\" is not supported", SUPPORTED),
            ("old version", Cmd::Del, r#"{"cniVersion":"0.2.0","name":"n","type":"bridge"}"#,
                INCOMPATIBLE_VERSION, "cniVersion \"0.2.0\" is not supported", SUPPORTED),
            ("version garbage", Cmd::Add, r#"{"cniVersion":"one","name":"n","type":"bridge"}"#,
                DECODE_FAILURE, "cniVersion \"one\" is not a version", SUPPORTED),
            ("version number", Cmd::Add, r#"{"cniVersion":1.0,"name":"n","type":"bridge"}"#,
                DECODE_FAILURE, "cniVersion 1.0 is not a string", SUPPORTED),
            ("check at 0.3.1", Cmd::Check, r#"{"cniVersion":"0.3.1","name":"n","type":"bridge"}"#,
                INCOMPATIBLE_VERSION, "CHECK does not exist in cniVersion \"0.3.1\"",
                "CHECK needs cniVersion 0.4.0 or later"),
            ("gc at 1.0.0", Cmd::Gc, r#"{"cniVersion":"1.0.0","name":"n","type":"bridge"}"#,
                INCOMPATIBLE_VERSION, "GC does not exist in cniVersion \"1.0.0\"",
                "GC needs cniVersion 1.1.0 or later"),
            ("status at 0.4.0", Cmd::Status, r#"{"cniVersion":"0.4.0","name":"n","type":"bridge"}"#,
                INCOMPATIBLE_VERSION, "STATUS does not exist in cniVersion \"0.4.0\"",
                "STATUS needs cniVersion 1.1.0 or later"),
            ("name of wrong type", Cmd::Add, r#"{"cniVersion":"1.0.0","name":5,"type":"bridge"}"#,
                DECODE_FAILURE, "failed to decode the network config",
                "invalid type: integer `5`, expected a string at line 1 column 30"),
            ("no name", Cmd::Add, r#"{"cniVersion":"1.0.0","type":"bridge","ipam":{"type":"atoll-ipam"}}"#,
                INVALID_NETWORK_CONFIG, "network config has no name", ""),
            ("bad name", Cmd::Add, r#"{"cniVersion":"1.0.0","name":"-x","type":"bridge"}"#,
                INVALID_NETWORK_CONFIG, "invalid network name \"-x\"",
                NAME_RULE),
            ("no ipam", Cmd::Add, r#"{"cniVersion":"1.0.0","name":"n","type":"bridge"}"#,
                INVALID_NETWORK_CONFIG, "network config has no ipam section",
                r#"the main plugin's config names it: "ipam": {"type": "atoll-ipam"}"#),
            ("foreign ipam", Cmd::Add,
                r#"{"cniVersion":"1.0.0","name":"n","type":"bridge","ipam":{"type":"host-local"}}"#,
                INVALID_NETWORK_CONFIG, "ipam.type is \"host-local\", not \"atoll-ipam\"",
                "the runtime ran atoll-ipam for a config that names another IPAM plugin"),
            ("unknown ipam keys", Cmd::Add,
                r#"{"cniVersion":"1.0.0","name":"n","type":"bridge","ipam":{"type":"atoll-ipam","subnet":"10.0.0.0/8","routes":[]}}"#,
                UNSUPPORTED_FIELD, "unsupported ipam field(s): routes, subnet",
                "atoll-ipam reads only ipam.type, ipam.socket and ipam.pools; subnets, gateways, routes and DNS come from the atoll Subnet and IPPool resources"),
            ("relative socket", Cmd::Add,
                r#"{"cniVersion":"1.0.0","name":"n","type":"bridge","ipam":{"type":"atoll-ipam","socket":"agent.sock"}}"#,
                INVALID_NETWORK_CONFIG, "ipam.socket \"agent.sock\" is not an absolute path",
                "the agent listens on /run/atoll/agent.sock unless configured otherwise"),
            ("pools not a list", Cmd::Add,
                r#"{"cniVersion":"1.0.0","name":"n","type":"bridge","ipam":{"type":"atoll-ipam","pools":"a,b"}}"#,
                DECODE_FAILURE, "ipam.pools is not a list of strings", ""),
            ("pool with comma", Cmd::Add,
                r#"{"cniVersion":"1.0.0","name":"n","type":"bridge","ipam":{"type":"atoll-ipam","pools":["a","b,c"]}}"#,
                INVALID_NETWORK_CONFIG, "ipam.pools[1] \"b,c\" is not a pool name",
                "pool names are non-empty and contain no ',' or blanks"),
            ("check without prevResult", Cmd::Check,
                r#"{"cniVersion":"1.0.0","name":"n","type":"bridge","ipam":{"type":"atoll-ipam"}}"#,
                INVALID_NETWORK_CONFIG, "CHECK needs prevResult in the network config",
                "the runtime passes the result of the ADD as prevResult"),
            ("gc without attachments", Cmd::Gc,
                r#"{"cniVersion":"1.1.0","name":"n","type":"bridge","ipam":{"type":"atoll-ipam"}}"#,
                INVALID_NETWORK_CONFIG, "GC needs cni.dev/valid-attachments in the network config",
                "without it every allocation of the network would look stale; an empty list is accepted"),
            ("prevResult with a bad address", Cmd::Check,
                r#"{"cniVersion":"1.0.0","name":"n","type":"bridge","ipam":{"type":"atoll-ipam"},"prevResult":{"ips":[{"address":"10.0.0.5"}]}}"#,
                DECODE_FAILURE, "failed to decode the network config",
                "invalid IP address syntax at line 1 column 120"),
        ];
        for (name, cmd, stdin, code, msg, details) in cases {
            let err = parse(stdin.as_bytes(), cmd, None).expect_err(name);
            assert_eq!(err.code, code, "{name}: {err}");
            assert_eq!(err.msg, msg, "{name}");
            assert_eq!(err.details, details, "{name}");
        }
    }

    #[test]
    fn a_full_config_is_read() {
        let stdin = br#"{
            "cniVersion": "0.4.0", "name": "office", "type": "bridge", "bridge": "br0",
            "ipam": {"type": "atoll-ipam", "socket": "/tmp/a.sock",
                     "pools": ["rack-a-web", "rack-b-web"]},
            "prevResult": {"cniVersion": "0.4.0",
                           "ips": [{"version": "4", "address": "10.1.0.5/24", "interface": 2}]}
        }"#;
        let conf = parse(stdin, Cmd::Check, None).unwrap();
        assert_eq!(conf.version, SpecVersion::new(0, 4, 0));
        assert_eq!(conf.name, "office");
        assert_eq!(
            conf.ipam,
            IpamConfig {
                socket: "/tmp/a.sock".into(),
                pools: vec!["rack-a-web".into(), "rack-b-web".into()]
            }
        );
        let prev = conf.prev_result.unwrap();
        assert_eq!(prev.ips[0].address.to_string(), "10.1.0.5/24");
    }

    #[test]
    fn socket_defaults_and_renamed_installs_are_accepted() {
        let stdin =
            br#"{"cniVersion":"1.1.0","name":"n","type":"macvlan","ipam":{"type":"my-ipam"},
            "cni.dev/valid-attachments": []}"#;
        assert!(parse(stdin, Cmd::Gc, None).is_err());
        let conf = parse(stdin, Cmd::Gc, Some("my-ipam")).unwrap();
        assert_eq!(conf.ipam.socket, PathBuf::from(DEFAULT_SOCKET));
        assert!(conf.ipam.pools.is_empty());
        assert_eq!(conf.valid_attachments.unwrap().len(), 0);
    }

    #[test]
    fn every_supported_version_is_accepted_for_add() {
        for version in SUPPORTED_VERSIONS {
            let stdin = format!(
                r#"{{"cniVersion":"{version}","name":"n","type":"bridge","ipam":{{"type":"atoll-ipam"}}}}"#
            );
            assert_eq!(
                parse(stdin.as_bytes(), Cmd::Add, None).unwrap().version,
                version
            );
        }
    }

    #[test]
    fn declared_version_is_read_as_written() {
        assert_eq!(
            declared_version(br#"{"cniVersion":"banana"}"#).as_deref(),
            Some("banana")
        );
        assert_eq!(declared_version(br#"{"cniVersion":""}"#), None);
        assert_eq!(declared_version(br#"{"cniVersion":1}"#), None);
        assert_eq!(declared_version(b"garbage"), None);
    }
}
