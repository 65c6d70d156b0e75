//! The free addresses of one pool, as an ordered map of free intervals.
//!
//! A pool is born with one interval per range; each allocation splits or
//! shrinks one interval and each release adds or merges one. The map
//! therefore holds at most (held addresses + ranges) entries, whatever the
//! size of the pool, and every operation is a logarithmic map lookup: a
//! `/64` with three holders costs what a `/24` with three holders costs.
//!
//! Next-fit lives here too: [`FreeSet::next_from`] finds the first free
//! address at or after a cursor and wraps around to the lowest one.

use std::collections::BTreeMap;

use crate::rangeset::RangeSet;

/// Free addresses of one family, as disjoint, non-adjacent intervals.
///
/// Intervals are keyed by their last address, so that taking the first
/// address of an interval, the common next-fit step, rewrites one value in
/// place with a single lookup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FreeSet {
    /// end -> start, inclusive.
    intervals: BTreeMap<u128, u128>,
    /// Number of free addresses, saturating.
    count: u128,
}

impl FreeSet {
    /// The empty set.
    pub fn new() -> FreeSet {
        FreeSet::default()
    }

    /// Every address of `set` free. The caller passes one family.
    pub fn from_rangeset(set: &RangeSet) -> FreeSet {
        let mut f = FreeSet::new();
        for r in set.ranges() {
            f.intervals.insert(r.end(), r.start());
            f.count = f.count.saturating_add(r.len());
        }
        f
    }

    /// The number of free addresses.
    pub fn len(&self) -> u128 {
        self.count
    }

    /// Returns true if and only if no address is free.
    pub fn is_empty(&self) -> bool {
        self.intervals.is_empty()
    }

    /// Number of intervals: the memory the set costs.
    pub fn intervals(&self) -> usize {
        self.intervals.len()
    }

    /// The first interval that ends at or after `v`, as (start, end).
    fn at_or_after(&self, v: u128) -> Option<(u128, u128)> {
        self.intervals.range(v..).next().map(|(&e, &s)| (s, e))
    }

    /// Returns true if and only if `v` is free.
    pub fn contains(&self, v: u128) -> bool {
        self.at_or_after(v).is_some_and(|(s, _)| s <= v)
    }

    /// The first free address at or after `cursor`, else the lowest free one.
    pub fn next_from(&self, cursor: u128) -> Option<u128> {
        match self.at_or_after(cursor) {
            Some((s, _)) => Some(s.max(cursor)),
            None => self.intervals.values().next().copied(),
        }
    }

    /// The lowest free address at or after `from` without wrapping.
    pub fn first_at_or_after(&self, from: u128) -> Option<u128> {
        self.at_or_after(from).map(|(s, _)| s.max(from))
    }

    /// Takes the first free address at or after `cursor` (wrapping to the
    /// lowest), in one lookup when it starts an interval.
    pub fn take_from(&mut self, cursor: u128) -> Option<u128> {
        // The common step: the interval at or after the cursor starts at or
        // after it and is longer than one address; shrink it in place.
        if let Some((&end, start)) = self.intervals.range_mut(cursor..).next() {
            if *start >= cursor && *start < end {
                let v = *start;
                *start += 1;
                self.count -= 1;
                return Some(v);
            }
        }
        let v = self.next_from(cursor)?;
        self.remove(v);
        Some(v)
    }

    /// Takes `v` out of the set. Returns false if it was not free.
    pub fn remove(&mut self, v: u128) -> bool {
        let Some((&end, start)) = self.intervals.range_mut(v..).next() else {
            return false;
        };
        let s = *start;
        if s > v {
            return false;
        }
        match (s == v, end == v) {
            (true, true) => {
                self.intervals.remove(&end);
            }
            (true, false) => *start = v + 1,
            (false, true) => {
                self.intervals.remove(&end);
                self.intervals.insert(v - 1, s);
            }
            (false, false) => {
                *start = v + 1;
                self.intervals.insert(v - 1, s);
            }
        }
        self.count -= 1;
        true
    }

    /// Puts `v` back. Returns false if it was already free.
    pub fn insert(&mut self, v: u128) -> bool {
        // The interval after v, if it starts right after v, absorbs v.
        let mut absorbed = false;
        if let Some((_, start)) = self.intervals.range_mut(v..).next() {
            if *start <= v {
                return false;
            }
            if v.checked_add(1) == Some(*start) {
                *start = v;
                absorbed = true;
            }
        }
        // The interval before v, if it ends right before v, joins.
        let before = v
            .checked_sub(1)
            .and_then(|p| self.intervals.get(&p).map(|&s| (p, s)));
        match (before, absorbed) {
            (Some((p, s)), true) => {
                self.intervals.remove(&p);
                if let Some((_, start)) = self.intervals.range_mut(v..).next() {
                    *start = s;
                }
            }
            (Some((p, s)), false) => {
                self.intervals.remove(&p);
                self.intervals.insert(v, s);
            }
            (None, true) => {}
            (None, false) => {
                self.intervals.insert(v, v);
            }
        }
        self.count = self.count.saturating_add(1);
        true
    }

    /// Iterates over the free intervals in order, as (start, end).
    pub fn iter(&self) -> impl Iterator<Item = (u128, u128)> + '_ {
        self.intervals.iter().map(|(&e, &s)| (s, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn next_fit_wraps() {
        let mut f = FreeSet::from_rangeset(&RangeSet::parse(&["10.0.0.1-10.0.0.3"]).unwrap());
        let base = 0x0a00_0000u128;
        assert_eq!(f.next_from(base + 2), Some(base + 2));
        assert!(f.remove(base + 2));
        assert_eq!(f.next_from(base + 2), Some(base + 3));
        assert_eq!(f.next_from(base + 4), Some(base + 1), "wraps to the lowest");
        assert!(!f.remove(base + 2), "already taken");
        assert!(f.insert(base + 2));
        assert!(!f.insert(base + 2), "already free");
        assert_eq!(f.intervals(), 1, "merged back");
        assert_eq!(f.len(), 3);
    }

    proptest! {
        /// The interval map agrees with a plain set of addresses.
        #[test]
        fn agrees_with_a_plain_set(ops in proptest::collection::vec((0u8..3, 0u128..64), 0..200)) {
            let mut f = FreeSet::from_rangeset(&RangeSet::parse(&["0.0.0.0/26"]).unwrap());
            let mut model: BTreeSet<u128> = (0..64).collect();
            for (op, v) in ops {
                match op {
                    0 => prop_assert_eq!(f.remove(v), model.remove(&v)),
                    1 => prop_assert_eq!(f.insert(v), model.insert(v)),
                    _ => {
                        let want = model.range(v..).next().or_else(|| model.iter().next()).copied();
                        prop_assert_eq!(f.take_from(v), want);
                        if let Some(w) = want {
                            model.remove(&w);
                        }
                    }
                }
                prop_assert_eq!(f.len(), model.len() as u128);
                let want = model.range(v..).next().or_else(|| model.iter().next()).copied();
                prop_assert_eq!(f.next_from(v), want);
            }
            let mut prev_end: Option<u128> = None;
            for (s, e) in f.iter() {
                prop_assert!(s <= e);
                if let Some(p) = prev_end { prop_assert!(s > p + 1, "not merged"); }
                prev_end = Some(e);
            }
        }
    }
}
