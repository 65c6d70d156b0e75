//! The key layout of the etcd store (described in the crate documentation).
//!
//! Names that become one segment of a key (subnet, node, container ID,
//! interface) are escaped so that a `/` inside them cannot make two
//! different names share a key or a prefix: `%` becomes `%25` and `/`
//! becomes `%2F`. Object keys are the last segment and are kept as they are
//! (workload keys contain `/` on purpose).

use std::net::IpAddr;

use atoll_store::{Attachment, Kind};

/// Builds the keys of one store, all under its prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    prefix: String,
}

impl Layout {
    /// A layout under `prefix`, which ends with `/`.
    pub fn new(prefix: &str) -> Layout {
        Layout {
            prefix: prefix.to_string(),
        }
    }

    /// `<prefix>objects/<kind>/`: every object of a kind.
    pub fn objects(&self, kind: Kind) -> String {
        format!("{}objects/{}/", self.prefix, kind.as_str())
    }

    /// `<prefix>objects/<kind>/<key>`: one object.
    pub fn object(&self, kind: Kind, key: &str) -> String {
        format!("{}{key}", self.objects(kind))
    }

    /// `<prefix>generation`: the resource generation, a decimal number.
    pub fn generation(&self) -> String {
        format!("{}generation", self.prefix)
    }

    /// `<prefix>applied-by`: the ID of the last apply, to recognise our own
    /// apply when a retry finds it already done.
    pub fn applied_by(&self) -> String {
        format!("{}applied-by", self.prefix)
    }

    /// `<prefix>claims/`: every claim.
    pub fn claims(&self) -> String {
        format!("{}claims/", self.prefix)
    }

    /// `<prefix>claims/<subnet>/<ip>`: the claim of one address.
    pub fn claim(&self, subnet: &str, ip: IpAddr) -> String {
        format!("{}{}/{ip}", self.claims(), escape(subnet))
    }

    /// `<prefix>holders/<container_id>/<ifname>/`: the claims of one
    /// attachment.
    pub fn holder(&self, holder: &Attachment) -> String {
        format!(
            "{}holders/{}/{}/",
            self.prefix,
            escape(&holder.container_id),
            escape(&holder.ifname)
        )
    }

    /// `<prefix>holders/<container_id>/<ifname>/<subnet>/<ip>`: index entry of
    /// one claim by its holder.
    pub fn holder_claim(&self, holder: &Attachment, subnet: &str, ip: IpAddr) -> String {
        format!("{}{}/{ip}", self.holder(holder), escape(subnet))
    }

    /// `<prefix>nodes/<node>/`: the claims of one node.
    pub fn node(&self, node: &str) -> String {
        format!("{}nodes/{}/", self.prefix, escape(node))
    }

    /// `<prefix>nodes/<node>/<subnet>/<ip>`: index entry of one claim by its
    /// node.
    pub fn node_claim(&self, node: &str, subnet: &str, ip: IpAddr) -> String {
        format!("{}{}/{ip}", self.node(node), escape(subnet))
    }
}

/// Escapes one key segment: `%` to `%25`, `/` to `%2F`.
fn escape(segment: &str) -> String {
    segment.replace('%', "%25").replace('/', "%2F")
}

/// The end of the key range of every key starting with `prefix`.
///
/// The prefixes of this crate are never empty, so the all-`0xff` case is the
/// only one that needs the "to the end of the keyspace" answer (`\0`).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att(container_id: &str, ifname: &str) -> Attachment {
        Attachment {
            container_id: container_id.into(),
            ifname: ifname.into(),
        }
    }

    #[test]
    fn keys_follow_the_documented_layout() {
        let l = Layout::new("/atoll/");
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let v6: IpAddr = "fd00::7".parse().unwrap();
        let cases = [
            (
                "object",
                l.object(Kind::Workload, "ns/Deployment/web"),
                "/atoll/objects/workloads/ns/Deployment/web",
            ),
            (
                "objects",
                l.objects(Kind::IPPool),
                "/atoll/objects/ippools/",
            ),
            ("generation", l.generation(), "/atoll/generation"),
            (
                "claim",
                l.claim("rack-a", ip),
                "/atoll/claims/rack-a/10.0.0.7",
            ),
            (
                "claim v6",
                l.claim("rack-a", v6),
                "/atoll/claims/rack-a/fd00::7",
            ),
            (
                "holder",
                l.holder_claim(&att("c1", "eth0"), "rack-a", ip),
                "/atoll/holders/c1/eth0/rack-a/10.0.0.7",
            ),
            (
                "node",
                l.node_claim("node-1", "rack-a", ip),
                "/atoll/nodes/node-1/rack-a/10.0.0.7",
            ),
        ];
        for (name, got, want) in cases {
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn slashes_in_names_cannot_collide() {
        let l = Layout::new("/p/");
        // Without escaping both would be /p/holders/a/b/c/.
        assert_ne!(l.holder(&att("a/b", "c")), l.holder(&att("a", "b/c")));
        assert_eq!(l.holder(&att("a/b", "c")), "/p/holders/a%2Fb/c/");
        assert_eq!(l.node("50%/x"), "/p/nodes/50%25%2Fx/");
        // One holder's prefix is not a prefix of another's.
        assert!(!l
            .holder(&att("abc", "eth0"))
            .starts_with(&l.holder(&att("ab", "c"))));
    }

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end(b"/atoll/"), b"/atoll0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
