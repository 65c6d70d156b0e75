//! The success outputs: the ADD result in the layout of the requested spec
//! version, and the VERSION answer.
//!
//! The result types are those of `rscni-types`, which fits here: it has one
//! in-memory result and writes it in the 0.3.0-0.4.0 layout
//! (`rscni_types::legacy`: every `ips[]` carries `"version": "4"|"6"`, `dns` is
//! always present) or in the 1.x layout (no `version`, `dns` left out when
//! empty), keyed by the negotiated version.
//!
//! An IPAM plugin's result has no `interfaces`, so its `ips[]` carry no
//! `interface` index: the spec leaves filling in the index to the main plugin,
//! which knows the interfaces it created.

use std::net::IpAddr;

use rscni_types::ipnet::IpNet;
use rscni_types::legacy;
use rscni_types::types::{CNIResult, CNIResultWithVersion, Dns, IpConfig, Route};
use rscni_types::version::{PluginInfo, SpecVersion};

use crate::config::{LATEST_VERSION, SUPPORTED_VERSIONS};
use crate::error::{CniError, PROTOCOL_SKEW};
use crate::wire::{AgentOk, WireIp, WireRoute};

/// Writes the ADD result for `version` from the agent's answer.
///
/// # Errors
///
/// [`crate::codes::INTERNAL`] when the answer holds no address, or an
/// address, gateway or route that does not parse: the agent broke the wire
/// contract.
pub fn add_result(version: SpecVersion, ok: &AgentOk) -> Result<Vec<u8>, CniError> {
    if ok.ips.is_empty() {
        return Err(CniError::internal(
            "the atoll agent answered ADD without an address",
            "an ADD that succeeds allocates at least one address",
        ));
    }
    let result = CNIResult {
        interfaces: Vec::new(),
        ips: ok.ips.iter().map(ip_config).collect::<Result<_, _>>()?,
        routes: ok.routes.iter().map(route).collect::<Result<_, _>>()?,
        dns: Some(Dns {
            nameservers: ok.dns.nameservers.clone(),
            domain: ok.dns.domain.clone().filter(|d| !d.is_empty()),
            search: Some(ok.dns.search.clone()).filter(|s| !s.is_empty()),
            options: Some(ok.dns.options.clone()).filter(|o| !o.is_empty()),
        }),
    };

    let encoded = if version.is_legacy() {
        serde_json::to_vec(&legacy::CNIResult::new(version, result))
    } else {
        serde_json::to_vec(&CNIResultWithVersion::new(version, result))
    };
    encoded.map_err(|err| CniError::internal("encoding the ADD result failed", err.to_string()))
}

fn ip_config(ip: &WireIp) -> Result<IpConfig, CniError> {
    let address: IpNet = ip.address.parse().map_err(|_| {
        breach(format!(
            "address {:?} of pool {:?} is not in CIDR form",
            ip.address, ip.pool
        ))
    })?;
    let gateway = match &ip.gateway {
        None => None,
        Some(gw) => {
            let gw: IpAddr = gw.parse().map_err(|_| {
                breach(format!(
                    "gateway {gw:?} of pool {:?} is not an address",
                    ip.pool
                ))
            })?;
            if gw.is_ipv4() != address.addr().is_ipv4() {
                return Err(breach(format!(
                    "gateway {gw} and address {address} of pool {:?} differ in IP family",
                    ip.pool
                )));
            }
            Some(gw)
        }
    };
    Ok(IpConfig {
        interface: None,
        address,
        gateway,
    })
}

fn route(route: &WireRoute) -> Result<Route, CniError> {
    let dst: IpNet = route.dst.parse().map_err(|_| {
        breach(format!(
            "route destination {:?} is not in CIDR form",
            route.dst
        ))
    })?;
    let gw = match &route.gw {
        None => None,
        Some(gw) => Some(
            gw.parse::<IpAddr>()
                .map_err(|_| breach(format!("route gateway {gw:?} is not an address")))?,
        ),
    };
    Ok(Route {
        dst,
        gw,
        mtu: None,
        advmss: None,
        priority: None,
        table: None,
        scope: None,
    })
}

fn breach(what: String) -> CniError {
    CniError::internal(
        format!("the atoll agent answered a malformed ADD result: {what}"),
        PROTOCOL_SKEW,
    )
}

/// Writes the VERSION answer.
///
/// `requested` is the `cniVersion` on stdin, if any. The answer echoes it
/// when it is a supported version, as the spec asks; otherwise (nothing on
/// stdin, or a version this plugin does not speak) it names the newest
/// supported version, which is what the runtime can use.
pub fn version_output(requested: Option<&str>) -> Vec<u8> {
    let version = requested
        .and_then(|text| text.parse::<SpecVersion>().ok())
        .filter(|v| SUPPORTED_VERSIONS.contains(v))
        .unwrap_or(LATEST_VERSION);
    let info = PluginInfo::new(version, SUPPORTED_VERSIONS.to_vec());

    // Three strings and a list of strings always serialize.
    serde_json::to_vec(&info).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::INTERNAL;
    use crate::wire::WireDns;
    use serde_json::{json, Value};

    fn answer() -> AgentOk {
        AgentOk {
            ips: vec![
                WireIp {
                    address: "10.10.1.7/16".into(),
                    gateway: Some("10.10.0.1".into()),
                    pool: "rack-a-web".into(),
                    subnet: "rack-a".into(),
                },
                WireIp {
                    address: "fd00:10::7/64".into(),
                    gateway: None,
                    pool: "rack-a-web6".into(),
                    subnet: "rack-a6".into(),
                },
            ],
            routes: vec![
                WireRoute {
                    dst: "0.0.0.0/0".into(),
                    gw: Some("10.10.0.1".into()),
                },
                WireRoute {
                    dst: "192.168.0.0/16".into(),
                    gw: None,
                },
            ],
            dns: WireDns {
                nameservers: vec!["10.10.0.53".into()],
                domain: Some("rack-a.example".into()),
                search: vec!["example".into()],
                options: vec![],
            },
        }
    }

    fn render(version: &str, ok: &AgentOk) -> Value {
        let bytes = add_result(version.parse().unwrap(), ok).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// The 0.3.0-0.4.0 layout, written out by hand from the spec of those
    /// versions: `version` on each IP, no interface index from an IPAM
    /// plugin.
    fn legacy_golden(version: &str) -> Value {
        json!({
            "cniVersion": version,
            "ips": [
                {"version": "4", "address": "10.10.1.7/16", "gateway": "10.10.0.1"},
                {"version": "6", "address": "fd00:10::7/64"}
            ],
            "routes": [
                {"dst": "0.0.0.0/0", "gw": "10.10.0.1"},
                {"dst": "192.168.0.0/16"}
            ],
            "dns": {
                "nameservers": ["10.10.0.53"], "domain": "rack-a.example", "search": ["example"]
            }
        })
    }

    /// The 1.x layout, by hand from the 1.0.0 and 1.1.0 spec: no `version`.
    fn current_golden(version: &str) -> Value {
        json!({
            "cniVersion": version,
            "ips": [
                {"address": "10.10.1.7/16", "gateway": "10.10.0.1"},
                {"address": "fd00:10::7/64"}
            ],
            "routes": [
                {"dst": "0.0.0.0/0", "gw": "10.10.0.1"},
                {"dst": "192.168.0.0/16"}
            ],
            "dns": {
                "nameservers": ["10.10.0.53"], "domain": "rack-a.example", "search": ["example"]
            }
        })
    }

    #[test]
    fn add_result_matches_the_layout_of_each_version() {
        for version in ["0.3.0", "0.3.1", "0.4.0"] {
            assert_eq!(
                render(version, &answer()),
                legacy_golden(version),
                "{version}"
            );
        }
        for version in ["1.0.0", "1.1.0"] {
            assert_eq!(
                render(version, &answer()),
                current_golden(version),
                "{version}"
            );
        }
    }

    #[test]
    fn field_presence_per_version() {
        let ok = AgentOk {
            ips: vec![WireIp {
                address: "10.1.0.5/24".into(),
                gateway: None,
                pool: "p".into(),
                subnet: "s".into(),
            }],
            ..AgentOk::default()
        };
        for version in SUPPORTED_VERSIONS {
            let out = render(&version.to_string(), &ok);
            let ip = &out["ips"][0];
            assert_eq!(
                ip["address"], "10.1.0.5/24",
                "{version}: the subnet's prefix is kept"
            );
            assert!(
                ip.get("interface").is_none(),
                "{version}: an IPAM result has no interface index"
            );
            assert!(ip.get("gateway").is_none(), "{version}");
            assert!(out.get("interfaces").is_none(), "{version}");
            assert!(out.get("routes").is_none(), "{version}: no routes, no key");
            if version.is_legacy() {
                assert_eq!(ip["version"], "4", "{version}");
                assert_eq!(out["dns"], json!({}), "{version}: 0.x always writes dns");
            } else {
                assert!(ip.get("version").is_none(), "{version}");
                assert!(
                    out.get("dns").is_none(),
                    "{version}: 1.x drops an empty dns"
                );
            }
        }
    }

    #[test]
    #[rustfmt::skip] // a table: one case per entry, expected messages written out whole
    fn malformed_agent_answers_are_internal_errors() {
        type Spoil = fn(&mut AgentOk);
        let cases: Vec<(&str, Spoil, &str)> = vec![
            ("no address", |ok| ok.ips.clear(), "the atoll agent answered ADD without an address"),
            ("bare address", |ok| ok.ips[0].address = "10.10.1.7".into(),
                "the atoll agent answered a malformed ADD result: address \"10.10.1.7\" of pool \"rack-a-web\" is not in CIDR form"),
            ("bad gateway", |ok| ok.ips[0].gateway = Some("gw".into()),
                "the atoll agent answered a malformed ADD result: gateway \"gw\" of pool \"rack-a-web\" is not an address"),
            ("gateway of other family", |ok| ok.ips[1].gateway = Some("10.0.0.1".into()),
                "the atoll agent answered a malformed ADD result: gateway 10.0.0.1 and address fd00:10::7/64 of pool \"rack-a-web6\" differ in IP family"),
            ("bad route", |ok| ok.routes[0].dst = "default".into(),
                "the atoll agent answered a malformed ADD result: route destination \"default\" is not in CIDR form"),
            ("bad route gateway", |ok| ok.routes[0].gw = Some("x".into()),
                "the atoll agent answered a malformed ADD result: route gateway \"x\" is not an address"),
        ];
        for (name, spoil, msg) in cases {
            let mut ok = answer();
            spoil(&mut ok);
            let err = add_result(SpecVersion::new(1, 0, 0), &ok).expect_err(name);
            assert_eq!((err.code, err.msg.as_str()), (INTERNAL, msg), "{name}");
        }
    }

    #[test]
    fn version_answer_lists_every_supported_version() {
        let all = json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]);
        let cases = [
            (Some("0.4.0"), "0.4.0"),
            (Some("1.0.0"), "1.0.0"),
            (Some("9.9.9"), "1.1.0"),
            (Some("x"), "1.1.0"),
            (None, "1.1.0"),
        ];
        for (requested, answered) in cases {
            let out: Value = serde_json::from_slice(&version_output(requested)).unwrap();
            assert_eq!(
                out,
                json!({"cniVersion": answered, "supportedVersions": all}),
                "{requested:?}"
            );
        }
    }
}
