//! The process environment of an invocation, and the `CNI_*` variables each
//! verb needs.
//!
//! Which variables a verb requires follows the spec: ADD and CHECK need
//! `CNI_CONTAINERID`, `CNI_NETNS` and `CNI_IFNAME`; DEL needs the container
//! ID and interface name and tolerates a missing `CNI_NETNS` (the namespace
//! may be gone already); VERSION, GC and STATUS need only `CNI_COMMAND`. An
//! empty variable counts as missing.
//!
//! `CNI_PATH` is read but never required: atoll-ipam executes no other
//! plugin, so refusing to run without it would only turn a harmless omission
//! into a failed pod.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;

use rscni_types::types::{Cmd, ContainerId, InterfaceName};

use crate::error::{CniError, NAME_RULE};
use crate::wire::parse_pool_list;

/// `CNI_COMMAND`: the verb.
pub const CNI_COMMAND: &str = "CNI_COMMAND";
/// `CNI_CONTAINERID`: the container ID, half of the attachment key.
pub const CNI_CONTAINERID: &str = "CNI_CONTAINERID";
/// `CNI_NETNS`: path of the container's network namespace.
pub const CNI_NETNS: &str = "CNI_NETNS";
/// `CNI_IFNAME`: the interface name inside the container, the other half of
/// the attachment key.
pub const CNI_IFNAME: &str = "CNI_IFNAME";
/// `CNI_ARGS`: extra `KEY=VALUE` pairs separated by `;`.
pub const CNI_ARGS: &str = "CNI_ARGS";
/// `CNI_PATH`: where the runtime looks for plugins.
pub const CNI_PATH: &str = "CNI_PATH";
/// `ATOLL_TIMEOUT_MS`: overrides how long the plugin waits for the agent.
pub const ATOLL_TIMEOUT_MS: &str = "ATOLL_TIMEOUT_MS";

/// The `CNI_ARGS` key naming the application outside Kubernetes,
/// `<namespace>/<name>`.
pub const ARG_ATOLL_APP: &str = "ATOLL_APP";
/// The `CNI_ARGS` key naming pools outside Kubernetes, `a,b`.
pub const ARG_ATOLL_POOLS: &str = "ATOLL_POOLS";

/// A snapshot of the environment the plugin was started with.
///
/// Built from the real process with [`Environ::from_process`], or by hand in
/// tests. Values that are not UTF-8 are remembered as such and reported when
/// the plugin reads them, never dropped silently.
#[derive(Debug, Clone, Default)]
pub struct Environ {
    vars: BTreeMap<String, String>,
    not_utf8: BTreeSet<String>,
    program: Option<String>,
}

impl Environ {
    /// An empty environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the current process's environment and the base name of
    /// `argv[0]`.
    pub fn from_process() -> Self {
        let mut env = Self::new();
        for (key, value) in std::env::vars_os() {
            env.insert_os(key, value);
        }
        env.program = std::env::args_os()
            .next()
            .map(std::path::PathBuf::from)
            .and_then(|path| {
                path.file_name()
                    .map(|name| name.to_string_lossy().into_owned())
            });
        env
    }

    fn insert_os(&mut self, key: OsString, value: OsString) {
        // A key that is not UTF-8 cannot be one of ours.
        let Ok(key) = key.into_string() else {
            return;
        };
        match value.into_string() {
            Ok(value) => {
                self.not_utf8.remove(&key);
                self.vars.insert(key, value);
            }
            Err(_) => {
                self.vars.remove(&key);
                self.not_utf8.insert(key);
            }
        }
    }

    /// Returns the environment with `key` set to `value`.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        self.not_utf8.remove(&key);
        self.vars.insert(key, value.into());
        self
    }

    /// Returns the environment with `key` set to a value that is not UTF-8.
    pub fn with_non_utf8(mut self, key: impl Into<String>) -> Self {
        let key = key.into();
        self.vars.remove(&key);
        self.not_utf8.insert(key);
        self
    }

    /// Returns the environment with the program name (base name of
    /// `argv[0]`) set.
    pub fn with_program(mut self, name: impl Into<String>) -> Self {
        self.program = Some(name.into());
        self
    }

    /// The base name the plugin was executed under, when known.
    pub fn program(&self) -> Option<&str> {
        self.program.as_deref()
    }

    /// Reads a variable; an empty value counts as unset.
    ///
    /// # Errors
    ///
    /// [`crate::codes::INVALID_ENV`] when the value is not UTF-8.
    pub fn var(&self, key: &str) -> Result<Option<&str>, CniError> {
        if self.not_utf8.contains(key) {
            return Err(CniError::env(
                format!("{key} is not valid UTF-8"),
                "atoll-ipam reads CNI variables as UTF-8 text",
            ));
        }
        Ok(self
            .vars
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty()))
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Environ {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        iter.into_iter()
            .fold(Self::new(), |env, (k, v)| env.with(k, v))
    }
}

/// Reads `CNI_COMMAND`.
///
/// # Errors
///
/// [`crate::codes::INVALID_ENV`] when it is missing or not a verb of the spec.
pub fn read_command(env: &Environ) -> Result<Cmd, CniError> {
    let Some(raw) = env.var(CNI_COMMAND)? else {
        return Err(CniError::env(
            "required env variables [CNI_COMMAND] missing",
            "set CNI_COMMAND to ADD, DEL, CHECK, GC, STATUS or VERSION",
        ));
    };
    raw.parse::<Cmd>().map_err(|_| {
        CniError::env(
            format!("unknown CNI_COMMAND {raw:?}"),
            "expected ADD, DEL, CHECK, GC, STATUS or VERSION",
        )
    })
}

/// The attachment-related variables of an ADD, DEL or CHECK, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_NETNS`; `None` only for DEL.
    pub netns: Option<String>,
    /// `CNI_ARGS`, parsed.
    pub args: BTreeMap<String, String>,
}

/// Reads and validates the variables `cmd` needs. Returns `None` for the
/// verbs that concern no attachment (VERSION, GC, STATUS).
///
/// # Errors
///
/// [`crate::codes::INVALID_ENV`]: a required variable is missing (all missing
/// ones are named at once), the container ID or interface name breaks the
/// spec's rules, or `CNI_ARGS` is malformed.
pub fn read_attachment(env: &Environ, cmd: Cmd) -> Result<Option<Attachment>, CniError> {
    let netns_required = match cmd {
        Cmd::Add | Cmd::Check => true,
        Cmd::Del => false,
        Cmd::Version | Cmd::Gc | Cmd::Status => return Ok(None),
    };

    let container_id = env.var(CNI_CONTAINERID)?;
    let netns = env.var(CNI_NETNS)?;
    let ifname = env.var(CNI_IFNAME)?;
    let mut missing = Vec::new();
    if container_id.is_none() {
        missing.push(CNI_CONTAINERID);
    }
    if netns_required && netns.is_none() {
        missing.push(CNI_NETNS);
    }
    if ifname.is_none() {
        missing.push(CNI_IFNAME);
    }
    let (Some(container_id), Some(ifname), true) = (container_id, ifname, missing.is_empty())
    else {
        let verb: &str = cmd.into();
        let needed = if netns_required {
            "CNI_CONTAINERID, CNI_NETNS and CNI_IFNAME"
        } else {
            "CNI_CONTAINERID and CNI_IFNAME"
        };
        return Err(CniError::env(
            format!("required env variables [{}] missing", missing.join(",")),
            format!("{verb} needs {needed}"),
        ));
    };

    validate_container_id(container_id)?;
    validate_ifname(ifname)?;
    let args = match env.var(CNI_ARGS)? {
        Some(raw) => parse_cni_args(raw)?,
        None => BTreeMap::new(),
    };

    Ok(Some(Attachment {
        container_id: container_id.to_owned(),
        ifname: ifname.to_owned(),
        netns: netns.map(str::to_owned),
        args,
    }))
}

/// Checks the spec's container ID rule: a letter or digit, then letters,
/// digits, `_`, `.` or `-`.
///
/// # Errors
///
/// [`crate::codes::INVALID_ENV`] naming the ID.
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    id.parse::<ContainerId>()
        .map(drop)
        .map_err(|_| CniError::env(format!("invalid CNI_CONTAINERID {id:?}"), NAME_RULE))
}

/// Checks the kernel's interface name rules: at most 15 bytes, not `.` or
/// `..`, no `/`, `:` or whitespace.
///
/// # Errors
///
/// [`crate::codes::INVALID_ENV`] naming the interface and the rule broken.
pub fn validate_ifname(ifname: &str) -> Result<(), CniError> {
    ifname
        .parse::<InterfaceName>()
        .map(drop)
        .map_err(|err| CniError::env(format!("invalid CNI_IFNAME {ifname:?}"), err.details()))
}

/// Parses `CNI_ARGS` (`KEY=VALUE;KEY=VALUE`) and checks the atoll keys in it.
///
/// Every pair is kept, `IgnoreUnknown` included, and forwarded to the agent.
/// Empty segments (a trailing `;`) are skipped; a value may itself contain
/// `=`; a repeated key keeps its last value.
///
/// # Errors
///
/// [`crate::codes::INVALID_ENV`] for a segment without `=` or with an empty
/// key, an `ATOLL_APP` that is not `<namespace>/<name>`, or an `ATOLL_POOLS`
/// with an empty entry.
pub fn parse_cni_args(raw: &str) -> Result<BTreeMap<String, String>, CniError> {
    let mut args = BTreeMap::new();
    for pair in raw.split(';').filter(|segment| !segment.is_empty()) {
        match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => {
                args.insert(key.to_owned(), value.to_owned());
            }
            _ => {
                return Err(CniError::env(
                    format!("invalid CNI_ARGS pair {pair:?}"),
                    "CNI_ARGS is a list of KEY=VALUE pairs separated by ';'",
                ));
            }
        }
    }

    if let Some(app) = args.get(ARG_ATOLL_APP) {
        let valid = app
            .split_once('/')
            .is_some_and(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'));
        if !valid {
            return Err(CniError::env(
                format!("invalid ATOLL_APP {app:?} in CNI_ARGS"),
                "expected <namespace>/<name>",
            ));
        }
    }
    if let Some(pools) = args.get(ARG_ATOLL_POOLS) {
        parse_pool_list(pools).map_err(|why| {
            CniError::env(format!("invalid ATOLL_POOLS {pools:?} in CNI_ARGS"), why)
        })?;
    }

    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::INVALID_ENV;

    fn full() -> Environ {
        Environ::new()
            .with(CNI_CONTAINERID, "abc123")
            .with(CNI_NETNS, "/run/netns/x")
            .with(CNI_IFNAME, "eth0")
    }

    #[test]
    fn bad_attachments_are_refused_with_the_variable_named() {
        let long = "a".repeat(16);
        let cases: Vec<(&str, Cmd, Environ, &str, &str)> = vec![
            (
                "add without netns",
                Cmd::Add,
                full().with(CNI_NETNS, ""),
                "required env variables [CNI_NETNS] missing",
                "ADD needs CNI_CONTAINERID, CNI_NETNS and CNI_IFNAME",
            ),
            (
                "check without anything",
                Cmd::Check,
                Environ::new(),
                "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME] missing",
                "CHECK needs CNI_CONTAINERID, CNI_NETNS and CNI_IFNAME",
            ),
            (
                "del without ifname",
                Cmd::Del,
                Environ::new().with(CNI_CONTAINERID, "c1"),
                "required env variables [CNI_IFNAME] missing",
                "DEL needs CNI_CONTAINERID and CNI_IFNAME",
            ),
            (
                "container id with a space",
                Cmd::Add,
                full().with(CNI_CONTAINERID, "abc 123"),
                "invalid CNI_CONTAINERID \"abc 123\"",
                NAME_RULE,
            ),
            (
                "container id starting with a dash",
                Cmd::Del,
                full().with(CNI_CONTAINERID, "-abc"),
                "invalid CNI_CONTAINERID \"-abc\"",
                NAME_RULE,
            ),
            (
                "ifname too long",
                Cmd::Add,
                full().with(CNI_IFNAME, long.clone()),
                "invalid CNI_IFNAME \"aaaaaaaaaaaaaaaa\"",
                "interface name is too long: interface name should be less than 16 characters: aaaaaaaaaaaaaaaa",
            ),
            (
                "ifname dot dot",
                Cmd::Add,
                full().with(CNI_IFNAME, ".."),
                "invalid CNI_IFNAME \"..\"",
                "interface name is . or ..",
            ),
            (
                "ifname with slash",
                Cmd::Del,
                full().with(CNI_IFNAME, "eth/0"),
                "invalid CNI_IFNAME \"eth/0\"",
                "interface name contains / or : or whitespace characters: eth/0",
            ),
            (
                "ifname with tab",
                Cmd::Check,
                full().with(CNI_IFNAME, "eth\t0"),
                "invalid CNI_IFNAME \"eth\\t0\"",
                "interface name contains / or : or whitespace characters: eth\t0",
            ),
            (
                "netns not utf-8",
                Cmd::Add,
                full().with_non_utf8(CNI_NETNS),
                "CNI_NETNS is not valid UTF-8",
                "atoll-ipam reads CNI variables as UTF-8 text",
            ),
            (
                "args pair without equals",
                Cmd::Add,
                full().with(CNI_ARGS, "IgnoreUnknown=1;oops"),
                "invalid CNI_ARGS pair \"oops\"",
                "CNI_ARGS is a list of KEY=VALUE pairs separated by ';'",
            ),
            (
                "args pair with empty key",
                Cmd::Add,
                full().with(CNI_ARGS, "=v"),
                "invalid CNI_ARGS pair \"=v\"",
                "CNI_ARGS is a list of KEY=VALUE pairs separated by ';'",
            ),
            (
                "atoll app without namespace",
                Cmd::Add,
                full().with(CNI_ARGS, "ATOLL_APP=web"),
                "invalid ATOLL_APP \"web\" in CNI_ARGS",
                "expected <namespace>/<name>",
            ),
            (
                "atoll pools with an empty entry",
                Cmd::Add,
                full().with(CNI_ARGS, "ATOLL_POOLS=a,,b"),
                "invalid ATOLL_POOLS \"a,,b\" in CNI_ARGS",
                "entry 2 of the pool list is empty",
            ),
        ];
        for (name, cmd, env, msg, details) in cases {
            let err = read_attachment(&env, cmd).expect_err(name);
            assert_eq!(err.code, INVALID_ENV, "{name}");
            assert_eq!(err.msg, msg, "{name}");
            assert_eq!(err.details, details, "{name}");
        }
    }

    #[test]
    fn del_tolerates_missing_netns_and_keeps_every_arg() {
        let env = full().with(CNI_NETNS, "").with(
            CNI_ARGS,
            "IgnoreUnknown=1;K8S_POD_NAME=web-0;X=a=b;;ATOLL_APP=ns/web;",
        );
        let att = read_attachment(&env, Cmd::Del).unwrap().unwrap();
        assert_eq!(att.netns, None);
        assert_eq!(att.container_id, "abc123");
        let keys: Vec<_> = att.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            keys,
            [
                "ATOLL_APP=ns/web",
                "IgnoreUnknown=1",
                "K8S_POD_NAME=web-0",
                "X=a=b"
            ]
        );
    }

    #[test]
    fn ifname_of_fifteen_bytes_is_accepted() {
        let env = full().with(CNI_IFNAME, "a".repeat(15));
        assert!(read_attachment(&env, Cmd::Add).is_ok());
    }

    #[test]
    fn verbs_without_attachment_need_nothing() {
        for cmd in [Cmd::Version, Cmd::Gc, Cmd::Status] {
            assert_eq!(read_attachment(&Environ::new(), cmd), Ok(None));
        }
    }

    #[test]
    fn command_is_required_and_must_be_a_verb() {
        let err = read_command(&Environ::new()).unwrap_err();
        assert_eq!(
            (err.code, err.msg.as_str()),
            (INVALID_ENV, "required env variables [CNI_COMMAND] missing")
        );
        let err = read_command(&Environ::new().with(CNI_COMMAND, "add")).unwrap_err();
        assert_eq!(
            (err.code, err.msg.as_str()),
            (INVALID_ENV, "unknown CNI_COMMAND \"add\"")
        );
        assert_eq!(
            read_command(&Environ::new().with(CNI_COMMAND, "GC")),
            Ok(Cmd::Gc)
        );
    }
}
