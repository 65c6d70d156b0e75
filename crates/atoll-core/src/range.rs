//! Addresses as integers, and inclusive address ranges.
//!
//! Every address the engine handles is a `u128` tagged with its [`Family`]:
//! IPv4 addresses use the low 32 bits. Working on integers keeps range
//! arithmetic exact and cheap for a `/8` as for a `/64`.
//!
//! The three spellings of an address range that resources accept are parsed
//! here: a CIDR (`10.0.0.0/24`), an inclusive range (`10.0.0.10-10.0.0.20`)
//! and a single address (`10.0.0.7`).
//!
//! ```
//! use atoll_core::range::{Family, IpRange};
//! let r: IpRange = "10.0.0.10-10.0.0.20".parse().unwrap();
//! assert_eq!(r.family(), Family::V4);
//! assert_eq!(r.len(), 11);
//! assert!(r.contains_ip("10.0.0.15".parse().unwrap()));
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The largest address of the family, as an integer.
    pub fn max(self) -> u128 {
        match self {
            Family::V4 => u32::MAX as u128,
            Family::V6 => u128::MAX,
        }
    }

    /// The number of bits of an address of this family.
    pub fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// The integer value of an address.
pub fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address of an integer value in a family.
///
/// For IPv4 only the low 32 bits are used; callers keep values in range.
pub fn u128_to_ip(family: Family, value: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(value as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

/// Why a range, CIDR or address could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// The text is neither a CIDR, nor `a-b`, nor an address.
    #[error("{text:?} is not an address, a CIDR or a range a-b")]
    Malformed {
        /// The text as given.
        text: String,
    },
    /// A CIDR has bits set after its prefix.
    #[error("{text:?} has host bits set; the network is {network}")]
    HostBits {
        /// The text as given.
        text: String,
        /// The CIDR with host bits cleared.
        network: String,
    },
    /// `a-b` where the two ends are of different families.
    #[error("{text:?} mixes IPv4 and IPv6")]
    MixedFamilies {
        /// The text as given.
        text: String,
    },
    /// `a-b` where a > b.
    #[error("{text:?} starts after it ends")]
    Reversed {
        /// The text as given.
        text: String,
    },
}

/// An inclusive range of addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpRange {
    family: Family,
    start: u128,
    end: u128,
}

impl IpRange {
    /// A range from integer bounds. `start <= end` and both fit the family.
    pub fn new(family: Family, start: u128, end: u128) -> IpRange {
        debug_assert!(start <= end && end <= family.max());
        IpRange { family, start, end }
    }

    /// The range holding one address.
    pub fn single(ip: IpAddr) -> IpRange {
        let v = ip_to_u128(ip);
        IpRange::new(Family::of(ip), v, v)
    }

    /// Every address of a network, network and broadcast included.
    pub fn from_net(net: IpNet) -> IpRange {
        let family = Family::of(net.addr());
        IpRange::new(
            family,
            ip_to_u128(net.network()),
            ip_to_u128(net.broadcast()),
        )
    }

    /// The family of the range.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The first address, as an integer.
    pub fn start(&self) -> u128 {
        self.start
    }

    /// The last address, as an integer.
    pub fn end(&self) -> u128 {
        self.end
    }

    /// The first address.
    pub fn first_ip(&self) -> IpAddr {
        u128_to_ip(self.family, self.start)
    }

    /// The last address.
    pub fn last_ip(&self) -> IpAddr {
        u128_to_ip(self.family, self.end)
    }

    /// The number of addresses, saturating at `u128::MAX` for the whole IPv6 space.
    pub fn len(&self) -> u128 {
        (self.end - self.start).saturating_add(1)
    }

    /// Always false: a range holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Returns true if and only if the address is of this family and inside.
    pub fn contains_ip(&self, ip: IpAddr) -> bool {
        Family::of(ip) == self.family && self.contains(ip_to_u128(ip))
    }

    /// Returns true if and only if the integer address is inside.
    pub fn contains(&self, v: u128) -> bool {
        self.start <= v && v <= self.end
    }

    /// Returns true if and only if every address of `other` is inside.
    pub fn covers(&self, other: &IpRange) -> bool {
        self.family == other.family && self.start <= other.start && other.end <= self.end
    }

    /// Returns true if and only if the two ranges share an address.
    pub fn overlaps(&self, other: &IpRange) -> bool {
        self.family == other.family && self.start <= other.end && other.start <= self.end
    }
}

impl FromStr for IpRange {
    type Err = RangeError;

    fn from_str(text: &str) -> Result<IpRange, RangeError> {
        let s = text.trim();
        let malformed = || RangeError::Malformed {
            text: text.to_string(),
        };

        if s.contains('/') {
            let net: IpNet = s.parse().map_err(|_| malformed())?;
            if net.addr() != net.network() {
                return Err(RangeError::HostBits {
                    text: text.to_string(),
                    network: net.trunc().to_string(),
                });
            }
            return Ok(IpRange::from_net(net));
        }

        if let Some((a, b)) = s.split_once('-') {
            let a: IpAddr = a.trim().parse().map_err(|_| malformed())?;
            let b: IpAddr = b.trim().parse().map_err(|_| malformed())?;
            if Family::of(a) != Family::of(b) {
                return Err(RangeError::MixedFamilies {
                    text: text.to_string(),
                });
            }
            let (start, end) = (ip_to_u128(a), ip_to_u128(b));
            if start > end {
                return Err(RangeError::Reversed {
                    text: text.to_string(),
                });
            }
            return Ok(IpRange::new(Family::of(a), start, end));
        }

        let ip: IpAddr = s.parse().map_err(|_| malformed())?;
        Ok(IpRange::single(ip))
    }
}

impl fmt::Display for IpRange {
    /// Writes the shortest spelling: an address, a CIDR when the range is
    /// exactly one, or `a-b`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            return write!(f, "{}", self.first_ip());
        }
        let size = self.end.wrapping_sub(self.start).wrapping_add(1);
        if size.is_power_of_two() && self.start & (size - 1) == 0 {
            let prefix = self.family.bits() - size.trailing_zeros() as u8;
            return write!(f, "{}/{}", self.first_ip(), prefix);
        }
        if self.start == 0 && self.end == self.family.max() {
            return write!(f, "{}/0", self.first_ip());
        }
        write!(f, "{}-{}", self.first_ip(), self.last_ip())
    }
}

impl Serialize for IpRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<IpRange, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_spellings() {
        let cases: &[(&str, &str, u128)] = &[
            ("10.0.0.0/24", "10.0.0.0/24", 256),
            ("10.0.0.10-10.0.0.20", "10.0.0.10-10.0.0.20", 11),
            ("10.0.0.7", "10.0.0.7", 1),
            (" 10.0.0.8 - 10.0.0.15 ", "10.0.0.8/29", 8),
            ("fd00::/64", "fd00::/64", 1 << 64),
            ("fd00::1-fd00::3", "fd00::1-fd00::3", 3),
            ("0.0.0.0/0", "0.0.0.0/0", 1 << 32),
            ("::/0", "::/0", u128::MAX),
        ];
        for (text, shown, len) in cases {
            let r: IpRange = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(r.to_string(), *shown, "{text}");
            assert_eq!(r.len(), *len, "{text}");
        }
    }

    #[test]
    fn refuses_bad_spellings_with_the_reason() {
        let cases: &[(&str, &str)] = &[
            (
                "10.0.0.1/24",
                "has host bits set; the network is 10.0.0.0/24",
            ),
            ("10.0.0.9-10.0.0.1", "starts after it ends"),
            ("10.0.0.1-fd00::1", "mixes IPv4 and IPv6"),
            ("10.0.0.256", "is not an address"),
            ("10.0.0.0/33", "is not an address"),
            ("", "is not an address"),
            ("zone1", "is not an address"),
        ];
        for (text, want) in cases {
            let err = text.parse::<IpRange>().unwrap_err().to_string();
            assert!(err.contains(want), "{text}: got {err:?}, want {want:?}");
        }
    }

    #[test]
    fn overlap_and_cover_respect_family() {
        let a: IpRange = "10.0.0.0/24".parse().unwrap();
        let b: IpRange = "10.0.0.200-10.0.1.5".parse().unwrap();
        let c: IpRange = "::a00:0/120".parse().unwrap();
        assert!(a.overlaps(&b));
        assert!(!a.covers(&b));
        assert!(!a.overlaps(&c), "same integers, different family");
    }
}
