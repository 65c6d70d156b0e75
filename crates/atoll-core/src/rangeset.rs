//! Sets of addresses kept as sorted, disjoint, merged ranges.
//!
//! A [`RangeSet`] describes static sets: the addresses of a pool, what a
//! subnet excludes. Its size is the number of ranges, never the number of
//! addresses, so a `/8` costs what a single address costs.
//!
//! ```
//! use atoll_core::rangeset::RangeSet;
//! let pool = RangeSet::parse(&["10.0.0.0/24"]).unwrap();
//! let excluded = RangeSet::parse(&["10.0.0.0", "10.0.0.255"]).unwrap();
//! let usable = pool.difference(&excluded);
//! assert_eq!(usable.len(), 254);
//! assert_eq!(usable.to_strings(), vec!["10.0.0.1-10.0.0.254"]);
//! ```

use std::net::IpAddr;

use crate::range::{ip_to_u128, Family, IpRange, RangeError};

/// A set of addresses of either family as sorted, disjoint, non-adjacent ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// Sorted by (family, start); no two overlap or touch.
    ranges: Vec<IpRange>,
}

impl RangeSet {
    /// The empty set.
    pub fn new() -> RangeSet {
        RangeSet::default()
    }

    /// The union of the given ranges.
    pub fn from_ranges(ranges: impl IntoIterator<Item = IpRange>) -> RangeSet {
        let mut v: Vec<IpRange> = ranges.into_iter().collect();
        v.sort_by_key(|r| (r.family(), r.start()));
        let mut out: Vec<IpRange> = Vec::with_capacity(v.len());
        for r in v {
            if let Some(last) = out.last_mut() {
                if last.family() == r.family() && r.start() <= last.end().saturating_add(1) {
                    if r.end() > last.end() {
                        *last = IpRange::new(last.family(), last.start(), r.end());
                    }
                    continue;
                }
            }
            out.push(r);
        }
        RangeSet { ranges: out }
    }

    /// Parses each text as an address, a CIDR or `a-b` and takes the union.
    ///
    /// # Errors
    /// The first text that does not parse, with the reason.
    pub fn parse<S: AsRef<str>>(texts: &[S]) -> Result<RangeSet, RangeError> {
        let ranges = texts
            .iter()
            .map(|t| t.as_ref().parse::<IpRange>())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RangeSet::from_ranges(ranges))
    }

    /// The ranges, sorted.
    pub fn ranges(&self) -> &[IpRange] {
        &self.ranges
    }

    /// Returns true if and only if the set holds no address.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The number of addresses, saturating.
    pub fn len(&self) -> u128 {
        self.ranges
            .iter()
            .fold(0u128, |n, r| n.saturating_add(r.len()))
    }

    /// The families present.
    pub fn families(&self) -> Vec<Family> {
        let mut f: Vec<Family> = self.ranges.iter().map(|r| r.family()).collect();
        f.dedup();
        f
    }

    /// Returns true if and only if the integer address of the family is in the set.
    pub fn contains(&self, family: Family, v: u128) -> bool {
        let idx = self
            .ranges
            .partition_point(|r| (r.family(), r.end()) < (family, v));
        self.ranges
            .get(idx)
            .is_some_and(|r| r.family() == family && r.contains(v))
    }

    /// Returns true if and only if the address is in the set.
    pub fn contains_ip(&self, ip: IpAddr) -> bool {
        self.contains(Family::of(ip), ip_to_u128(ip))
    }

    /// Returns true if and only if every address of `range` is in the set.
    pub fn covers(&self, range: &IpRange) -> bool {
        self.ranges.iter().any(|r| r.covers(range))
    }

    /// The ranges of the set that share an address with `range`.
    pub fn overlapping<'a>(&'a self, range: &'a IpRange) -> impl Iterator<Item = &'a IpRange> {
        self.ranges.iter().filter(move |r| r.overlaps(range))
    }

    /// Returns true if and only if the two sets share an address.
    pub fn intersects(&self, other: &RangeSet) -> bool {
        !self.intersection(other).is_empty()
    }

    /// The addresses in either set.
    pub fn union(&self, other: &RangeSet) -> RangeSet {
        RangeSet::from_ranges(self.ranges.iter().chain(other.ranges.iter()).copied())
    }

    /// The addresses in both sets.
    pub fn intersection(&self, other: &RangeSet) -> RangeSet {
        let mut out = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < self.ranges.len() && j < other.ranges.len() {
            let (a, b) = (self.ranges[i], other.ranges[j]);
            if a.overlaps(&b) {
                out.push(IpRange::new(
                    a.family(),
                    a.start().max(b.start()),
                    a.end().min(b.end()),
                ));
            }
            if (a.family(), a.end()) < (b.family(), b.end()) {
                i += 1;
            } else {
                j += 1;
            }
        }
        RangeSet { ranges: out }
    }

    /// The addresses of `self` that are not in `other`.
    pub fn difference(&self, other: &RangeSet) -> RangeSet {
        let mut out = Vec::new();
        let mut j = 0;
        for a in &self.ranges {
            let (family, mut start, end) = (a.family(), a.start(), a.end());
            while j < other.ranges.len()
                && (other.ranges[j].family(), other.ranges[j].end()) < (family, start)
            {
                j += 1;
            }
            let mut k = j;
            let mut done = false;
            while k < other.ranges.len() {
                let b = other.ranges[k];
                if b.family() != family || b.start() > end {
                    break;
                }
                if b.start() > start {
                    out.push(IpRange::new(family, start, b.start() - 1));
                }
                if b.end() >= end {
                    done = true;
                    break;
                }
                start = b.end() + 1;
                k += 1;
            }
            if !done {
                out.push(IpRange::new(family, start, end));
            }
        }
        RangeSet { ranges: out }
    }

    /// Each range in its shortest spelling.
    pub fn to_strings(&self) -> Vec<String> {
        self.ranges.iter().map(|r| r.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(texts: &[&str]) -> RangeSet {
        RangeSet::parse(texts).unwrap()
    }

    #[test]
    fn merges_overlapping_and_adjacent_ranges() {
        let s = set(&[
            "10.0.0.5",
            "10.0.0.0-10.0.0.4",
            "10.0.0.3-10.0.0.9",
            "10.0.1.0/24",
        ]);
        assert_eq!(s.to_strings(), vec!["10.0.0.0-10.0.0.9", "10.0.1.0/24"]);
        assert_eq!(s.len(), 266);
    }

    #[test]
    fn difference_cuts_holes_and_edges() {
        let cases: &[(&[&str], &[&str], &[&str])] = &[
            (
                &["10.0.0.0/24"],
                &["10.0.0.0", "10.0.0.255"],
                &["10.0.0.1-10.0.0.254"],
            ),
            (&["10.0.0.0/30"], &["10.0.0.0/24"], &[]),
            (
                &["10.0.0.0/30"],
                &["10.0.0.1"],
                &["10.0.0.0", "10.0.0.2/31"],
            ),
            (
                &["10.0.0.0/30", "fd00::/127"],
                &["fd00::"],
                &["10.0.0.0/30", "fd00::1"],
            ),
            (
                &["10.0.0.0-10.0.0.9"],
                &["10.0.0.2", "10.0.0.4-10.0.0.5", "10.0.0.9"],
                &["10.0.0.0/31", "10.0.0.3", "10.0.0.6-10.0.0.8"],
            ),
        ];
        for (a, b, want) in cases {
            assert_eq!(
                set(a).difference(&set(b)).to_strings(),
                *want,
                "{a:?} - {b:?}"
            );
        }
    }

    #[test]
    fn contains_and_intersects() {
        let s = set(&["10.0.0.0/24", "10.0.2.0/24", "fd00::/120"]);
        assert!(s.contains_ip("10.0.2.9".parse().unwrap()));
        assert!(!s.contains_ip("10.0.1.9".parse().unwrap()));
        assert!(s.contains_ip("fd00::9".parse().unwrap()));
        assert!(!s.contains_ip("::a00:9".parse().unwrap()));
        assert!(s.intersects(&set(&["10.0.1.250-10.0.2.0"])));
        assert!(!s.intersects(&set(&["10.0.1.0/24"])));
    }
}
