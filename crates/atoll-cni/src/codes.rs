//! Numeric error codes of the CNI error object.
//!
//! Codes below 100 are the specification's well-known codes; atoll uses them
//! with their spec meaning only. Codes 100 and up are atoll's own and are
//! shared with the node agent, which answers them over the wire (see
//! [`crate::wire::AgentError`]); the plugin passes an agent's code through
//! unchanged.
//!
//! An unreachable agent is not a code of its own: it is
//! [`TRY_AGAIN_LATER`] for ADD, DEL, CHECK and GC (the runtime retries), and
//! [`PLUGIN_NOT_AVAILABLE`] for STATUS (the runtime holds back ADDs).

/// The network config's `cniVersion` is not one this plugin speaks, or the
/// verb does not exist at that version (CHECK before 0.4.0, GC and STATUS
/// before 1.1.0).
pub const INCOMPATIBLE_VERSION: u32 = 1;
/// The network config has a field this plugin does not support (an unknown
/// key in the `ipam` section).
pub const UNSUPPORTED_FIELD: u32 = 2;
/// The container is unknown or does not exist; the runtime need not clean up.
pub const UNKNOWN_CONTAINER: u32 = 3;
/// A `CNI_*` environment variable is missing or malformed, or `CNI_ARGS`
/// carries a malformed pair.
pub const INVALID_ENV: u32 = 4;
/// Reading stdin or talking to the runtime failed.
pub const IO_FAILURE: u32 = 5;
/// The network config is not JSON, or a field has the wrong JSON type, or
/// `cniVersion` is not a version string.
pub const DECODE_FAILURE: u32 = 6;
/// The network config decodes but fails validation (bad network name, no
/// `ipam` section, an `ipam.type` of another plugin, a relative socket path, a
/// missing `prevResult` for CHECK or `cni.dev/valid-attachments` for GC).
pub const INVALID_NETWORK_CONFIG: u32 = 7;
/// A transient condition: the agent cannot be reached or did not answer in
/// time. The runtime should retry.
pub const TRY_AGAIN_LATER: u32 = 11;
/// STATUS: the plugin cannot serve ADDs now (the agent is unreachable or not
/// ready).
pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
/// STATUS: not available, and existing containers may have limited
/// connectivity. Only the agent answers this one.
pub const PLUGIN_NOT_AVAILABLE_LIMITED_CONNECTIVITY: u32 = 51;

/// atoll: no pool bound to the application serves the pod's node.
pub const NO_POOL_MATCHES: u32 = 100;
/// atoll: every serving pool, and the subnets they may borrow from, is full.
pub const EXHAUSTED: u32 = 101;
/// atoll: a binding names a pool that does not exist, or the binding itself is
/// malformed (bad annotation, unknown `ATOLL_APP`).
pub const UNKNOWN_POOL: u32 = 102;
/// atoll: the agent does not know the node (no labels registered for it).
pub const UNKNOWN_NODE: u32 = 103;
/// atoll, CHECK: the attachment does not hold the addresses its `prevResult`
/// lists.
pub const ADDRESS_MISMATCH: u32 = 104;
/// atoll: an internal error of the agent or the plugin (a bug, a store
/// failure, an answer that breaks the wire protocol).
pub const INTERNAL: u32 = 105;

/// The short, fixed description of a code, for logs and documentation.
///
/// Returns `"unknown error code"` for a code neither the spec nor atoll
/// defines.
pub fn describe(code: u32) -> &'static str {
    match code {
        INCOMPATIBLE_VERSION => "incompatible CNI version",
        UNSUPPORTED_FIELD => "unsupported field in network configuration",
        UNKNOWN_CONTAINER => "container unknown or does not exist",
        INVALID_ENV => "invalid necessary environment variables",
        IO_FAILURE => "I/O failure",
        DECODE_FAILURE => "failed to decode content",
        INVALID_NETWORK_CONFIG => "invalid network config",
        TRY_AGAIN_LATER => "try again later",
        PLUGIN_NOT_AVAILABLE => "plugin not available",
        PLUGIN_NOT_AVAILABLE_LIMITED_CONNECTIVITY => "plugin not available, limited connectivity",
        NO_POOL_MATCHES => "no pool matches the node",
        EXHAUSTED => "pools and subnet exhausted",
        UNKNOWN_POOL => "unknown pool or bad binding",
        UNKNOWN_NODE => "node unknown to the agent",
        ADDRESS_MISMATCH => "attachment does not hold the expected addresses",
        INTERNAL => "internal error",
        _ => "unknown error code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_code_has_its_own_description() {
        let codes = [
            INCOMPATIBLE_VERSION,
            UNSUPPORTED_FIELD,
            UNKNOWN_CONTAINER,
            INVALID_ENV,
            IO_FAILURE,
            DECODE_FAILURE,
            INVALID_NETWORK_CONFIG,
            TRY_AGAIN_LATER,
            PLUGIN_NOT_AVAILABLE,
            PLUGIN_NOT_AVAILABLE_LIMITED_CONNECTIVITY,
            NO_POOL_MATCHES,
            EXHAUSTED,
            UNKNOWN_POOL,
            UNKNOWN_NODE,
            ADDRESS_MISMATCH,
            INTERNAL,
        ];
        let mut seen = std::collections::BTreeSet::new();
        for code in codes {
            let text = describe(code);
            assert_ne!(text, "unknown error code", "code {code}");
            assert!(seen.insert(text), "code {code} shares its description");
        }
        assert_eq!(describe(999), "unknown error code");
    }
}
