//! Options of the etcd store, and the parsing of `etcd:` store addresses.
//!
//! An address is `etcd:` followed by a comma-separated list of endpoints,
//! each `http://host:port` or `https://host:port`. An endpoint given as
//! bare `host:port` gets `https://` when a CA file is configured and
//! `http://` otherwise. Everything here is checked before any connection is
//! made, so that a typo is reported as [`StoreError::BadAddress`] rather than
//! as an unreachable cluster.

use std::path::{Path, PathBuf};
use std::time::Duration;

use atoll_store::StoreError;

/// The key prefix used when none is given.
pub const DEFAULT_PREFIX: &str = "/atoll/";

/// How to reach and authenticate to the etcd cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// Every key of the store starts with this. A `/` is appended when it
    /// does not end with one. Default [`DEFAULT_PREFIX`].
    pub prefix: String,
    /// PEM file of the CA that signed the servers' certificates. Required for
    /// `https://` endpoints.
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate, for clusters started with
    /// `--client-cert-auth`. Needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key. Needs `cert_file`.
    pub key_file: Option<PathBuf>,
    /// User name, for clusters with authentication enabled. Needs `password`.
    pub username: Option<String>,
    /// Password of `username`.
    pub password: Option<String>,
    /// How long to wait for a TCP (and TLS) connection to one endpoint.
    pub dial_timeout: Duration,
    /// The longest one store operation may take, over all the endpoints it
    /// tries. When it passes the operation fails with
    /// [`StoreError::Unavailable`].
    pub request_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            prefix: DEFAULT_PREFIX.to_string(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            username: None,
            password: None,
            dial_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(2),
        }
    }
}

/// The checked form of an address and its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checked {
    /// Endpoint URLs, with their scheme.
    pub endpoints: Vec<String>,
    /// The prefix, ending with `/`.
    pub prefix: String,
}

/// Checks an `etcd:` address against its options.
///
/// # Errors
/// [`StoreError::BadAddress`] naming what is wrong: another scheme, no or an
/// empty endpoint, a scheme other than http and https, TLS options with
/// `http://` endpoints, `https://` without a CA file, half a client
/// certificate or half a credential, a zero timeout.
pub(crate) fn check(address: &str, opts: &EtcdOptions) -> Result<Checked, StoreError> {
    let bad = |reason: String| StoreError::BadAddress {
        given: address.to_string(),
        reason,
    };

    let list = address
        .strip_prefix("etcd:")
        .ok_or_else(|| bad("expected etcd:<endpoint>[,<endpoint>...]".into()))?;
    if list.trim().is_empty() {
        return Err(bad("no endpoint given".into()));
    }

    let tls = opts.ca_file.is_some() || opts.cert_file.is_some();
    let mut endpoints = Vec::new();
    for (n, raw) in list.split(',').enumerate() {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(bad(format!("endpoint {} is empty", n + 1)));
        }
        let url = if raw.contains("://") {
            raw.to_string()
        } else if tls {
            format!("https://{raw}")
        } else {
            format!("http://{raw}")
        };
        let https = url.starts_with("https://");
        if !https && !url.starts_with("http://") {
            return Err(bad(format!(
                "endpoint {raw:?}: the scheme must be http or https"
            )));
        }
        if tonic::transport::Endpoint::from_shared(url.clone()).is_err() {
            return Err(bad(format!("endpoint {raw:?} is not a valid URL")));
        }
        if https && opts.ca_file.is_none() {
            return Err(bad(format!(
                "endpoint {raw:?} is https but no CA file is given"
            )));
        }
        if !https && tls {
            return Err(bad(format!(
                "endpoint {raw:?} is http but TLS files are given"
            )));
        }
        if endpoints.contains(&url) {
            return Err(bad(format!("endpoint {raw:?} is given twice")));
        }
        endpoints.push(url);
    }

    if opts.cert_file.is_some() != opts.key_file.is_some() {
        return Err(bad(
            "a client certificate needs both cert_file and key_file".into(),
        ));
    }
    if opts.key_file.is_some() && opts.ca_file.is_none() {
        return Err(bad("a client certificate needs ca_file too".into()));
    }
    if opts.username.is_some() != opts.password.is_some() {
        return Err(bad("authentication needs both username and password".into()));
    }
    if opts.username.as_deref() == Some("") {
        return Err(bad("the username is empty".into()));
    }
    if opts.dial_timeout.is_zero() || opts.request_timeout.is_zero() {
        return Err(bad("timeouts must be longer than zero".into()));
    }
    if opts.prefix.is_empty() {
        return Err(bad("the key prefix is empty".into()));
    }

    let mut prefix = opts.prefix.clone();
    if !prefix.ends_with('/') {
        prefix.push('/');
    }
    Ok(Checked { endpoints, prefix })
}

/// Reads a PEM file named by an option.
///
/// # Errors
/// [`StoreError::BadAddress`] naming the option and the file.
pub(crate) fn read_pem(address: &str, option: &str, path: &Path) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|e| StoreError::BadAddress {
        given: address.to_string(),
        reason: format!("cannot read {option} {}: {e}", path.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls() -> EtcdOptions {
        EtcdOptions {
            ca_file: Some("/ca.pem".into()),
            ..EtcdOptions::default()
        }
    }

    #[test]
    fn accepts_good_addresses() {
        let cases: &[(&str, &str, EtcdOptions, &[&str])] = &[
            (
                "one",
                "etcd:http://127.0.0.1:2379",
                EtcdOptions::default(),
                &["http://127.0.0.1:2379"],
            ),
            (
                "three with spaces",
                "etcd:http://a:1, http://b:2 ,http://c:3",
                EtcdOptions::default(),
                &["http://a:1", "http://b:2", "http://c:3"],
            ),
            (
                "bare host gets http",
                "etcd:127.0.0.1:2379",
                EtcdOptions::default(),
                &["http://127.0.0.1:2379"],
            ),
            (
                "bare host gets https with a CA",
                "etcd:h:2379",
                tls(),
                &["https://h:2379"],
            ),
            (
                "https with a CA",
                "etcd:https://h:2379",
                tls(),
                &["https://h:2379"],
            ),
        ];
        for (name, address, opts, want) in cases {
            let got = check(address, opts).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got.endpoints, *want, "{name}");
            assert_eq!(got.prefix, "/atoll/", "{name}");
        }
    }

    #[test]
    fn refuses_bad_addresses() {
        let user = EtcdOptions {
            username: Some("u".into()),
            ..EtcdOptions::default()
        };
        let half_cert = EtcdOptions {
            cert_file: Some("/c.pem".into()),
            ..tls()
        };
        let zero = EtcdOptions {
            request_timeout: Duration::ZERO,
            ..EtcdOptions::default()
        };
        let no_prefix = EtcdOptions {
            prefix: String::new(),
            ..EtcdOptions::default()
        };
        let cases: &[(&str, &str, EtcdOptions, &str)] = &[
            (
                "other scheme",
                "embedded:/x",
                EtcdOptions::default(),
                "expected etcd:",
            ),
            (
                "nothing",
                "etcd:",
                EtcdOptions::default(),
                "no endpoint given",
            ),
            (
                "empty one",
                "etcd:http://a:1,,http://b:2",
                EtcdOptions::default(),
                "endpoint 2 is empty",
            ),
            (
                "grpc scheme",
                "etcd:grpc://a:1",
                EtcdOptions::default(),
                "scheme must be http or https",
            ),
            (
                "not a url",
                "etcd:http://a b:1",
                EtcdOptions::default(),
                "not a valid URL",
            ),
            (
                "https without CA",
                "etcd:https://a:1",
                EtcdOptions::default(),
                "no CA file",
            ),
            (
                "http with TLS",
                "etcd:http://a:1",
                tls(),
                "is http but TLS files",
            ),
            (
                "twice",
                "etcd:http://a:1,http://a:1",
                EtcdOptions::default(),
                "given twice",
            ),
            (
                "user without password",
                "etcd:http://a:1",
                user,
                "both username and password",
            ),
            (
                "half a certificate",
                "etcd:https://a:1",
                half_cert,
                "both cert_file and key_file",
            ),
            ("zero timeout", "etcd:http://a:1", zero, "longer than zero"),
            (
                "empty prefix",
                "etcd:http://a:1",
                no_prefix,
                "prefix is empty",
            ),
        ];
        for (name, address, opts, want) in cases {
            let err = check(address, opts).expect_err(name).to_string();
            assert!(
                err.contains(want),
                "{name}: {err:?} should contain {want:?}"
            );
        }
    }

    #[test]
    fn appends_a_slash_to_the_prefix() {
        let opts = EtcdOptions {
            prefix: "/team-a".into(),
            ..EtcdOptions::default()
        };
        assert_eq!(check("etcd:http://a:1", &opts).unwrap().prefix, "/team-a/");
    }
}
