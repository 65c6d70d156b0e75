//! The error every verb returns, and its rendering as the CNI error object.
//!
//! The plugin reports a failure by printing
//! `{"cniVersion": ..., "code": ..., "msg": ..., "details": ...}` on stdout
//! and exiting non-zero. `msg` is one short sentence naming what failed and
//! the value at fault; `details` says what was expected or what to do about
//! it, and may be empty.
//!
//! The error object is written by this module rather than by `rscni-types`:
//! that crate's error result takes a parsed version, but the spec asks the
//! object to echo the config's `cniVersion` as written, which must also work
//! when that string is not a version at all.

use serde::Serialize;

use crate::codes;

/// A failure reported to the runtime as the CNI error object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg} (code {code}{})", details_suffix(details))]
pub struct CniError {
    /// The numeric code; see [`crate::codes`].
    pub code: u32,
    /// A short message naming what failed.
    pub msg: String,
    /// What was expected, or what to do; may be empty.
    pub details: String,
}

impl CniError {
    /// Builds an error from its three parts.
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// An invalid or missing environment variable ([`codes::INVALID_ENV`]).
    pub fn env(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(codes::INVALID_ENV, msg, details)
    }

    /// A network config that does not decode ([`codes::DECODE_FAILURE`]).
    pub fn decode(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(codes::DECODE_FAILURE, msg, details)
    }

    /// A network config that fails validation
    /// ([`codes::INVALID_NETWORK_CONFIG`]).
    pub fn config(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(codes::INVALID_NETWORK_CONFIG, msg, details)
    }

    /// An internal error of the agent or the plugin ([`codes::INTERNAL`]).
    pub fn internal(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(codes::INTERNAL, msg, details)
    }

    /// Renders the CNI error object, reported under `cni_version` (the
    /// config's `cniVersion` as written).
    pub fn to_json(&self, cni_version: &str) -> Vec<u8> {
        let object = ErrorObject {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        };

        // Serializing strings and an integer cannot fail; the fallback only
        // keeps this function free of a panic path.
        serde_json::to_vec(&object).unwrap_or_else(|_| {
            format!(
                r#"{{"code":{},"msg":"error object could not be encoded"}}"#,
                self.code
            )
            .into_bytes()
        })
    }
}

/// The hint given when the agent answers outside the wire protocol.
pub(crate) const PROTOCOL_SKEW: &str =
    "agent and plugin disagree on the wire protocol; run the same atoll release on both";

/// The rule the spec sets for network names and container IDs.
pub(crate) const NAME_RULE: &str = "a letter or digit first, then letters, digits, '_', '.' or '-'";

fn details_suffix(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!("; {details}")
    }
}

/// The wire form of the CNI error object.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorObject<'a> {
    cni_version: &'a str,
    code: u32,
    msg: &'a str,
    details: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_object_carries_all_four_fields() {
        let err = CniError::new(7, "bad \"name\"", "");
        let value: serde_json::Value = serde_json::from_slice(&err.to_json("0.4.0")).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "cniVersion": "0.4.0", "code": 7, "msg": "bad \"name\"", "details": ""
            })
        );
    }

    #[test]
    fn display_appends_details_only_when_present() {
        assert_eq!(CniError::new(4, "m", "").to_string(), "m (code 4)");
        assert_eq!(CniError::new(4, "m", "d").to_string(), "m (code 4; d)");
    }
}
