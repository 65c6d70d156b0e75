//! The free addresses of one pool (or of a subnet outside its pools).
//!
//! The address space is cut into blocks of 4,096 addresses. A block where
//! nothing is held is not stored at all: its free addresses are the pool's
//! allocatable ranges, which the set keeps as they are. Only a block where
//! something is held, or where an address outside the ranges was added (a
//! borrowed one), is stored, as a 512-byte bitmap. Memory therefore grows
//! with the held addresses, never with the size of the pool: a `/8` or a
//! `/64` with three holders stores one or a few blocks, like a `/24`.
//!
//! Next-fit lives here too: [`FreeSet::next_from`] finds the first free
//! address at or after a cursor and wraps around to the lowest one. Inside a
//! stored block that is a scan of at most 64 words; across blocks, an index
//! of the stored blocks that still have a free address skips full ones.

use std::collections::{BTreeMap, BTreeSet};

use crate::rangeset::RangeSet;

const BLOCK_SHIFT: u32 = 12;
const BLOCK_SIZE: u128 = 1 << BLOCK_SHIFT;
const WORDS: usize = (BLOCK_SIZE / 64) as usize;

/// A stored block: bit i set when address `block_start + i` is free.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Block {
    bits: Box<[u64; WORDS]>,
    free: u32,
    /// How many addresses of the ranges the block holds: when `free` is
    /// back to it, the block may equal its ranges and need not be stored.
    base_free: u32,
}

impl Block {
    fn get(&self, offset: usize) -> bool {
        self.bits[offset / 64] & (1u64 << (offset % 64)) != 0
    }

    /// The first free offset at or after `from`, within the block.
    fn first_from(&self, from: usize) -> Option<usize> {
        if self.free == 0 || from >= BLOCK_SIZE as usize {
            return None;
        }
        let mut w = from / 64;
        let mut word = self.bits[w] & (u64::MAX << (from % 64));
        loop {
            if word != 0 {
                return Some(w * 64 + word.trailing_zeros() as usize);
            }
            w += 1;
            if w == WORDS {
                return None;
            }
            word = self.bits[w];
        }
    }
}

/// Free addresses of one family. See the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FreeSet {
    /// The addresses free where no block is stored: (start, end), sorted, disjoint.
    base: Vec<(u128, u128)>,
    /// Stored blocks by block number (address >> 12).
    blocks: BTreeMap<u128, Block>,
    /// Stored blocks with at least one free address.
    open: BTreeSet<u128>,
    /// Number of free addresses, saturating.
    count: u128,
}

fn block_of(v: u128) -> u128 {
    v >> BLOCK_SHIFT
}

fn block_start(b: u128) -> u128 {
    b << BLOCK_SHIFT
}

fn block_end(b: u128) -> u128 {
    block_start(b) | (BLOCK_SIZE - 1)
}

impl FreeSet {
    /// The empty set.
    pub fn new() -> FreeSet {
        FreeSet::default()
    }

    /// Every address of `set` free. The caller passes one family.
    pub fn from_rangeset(set: &RangeSet) -> FreeSet {
        let base: Vec<(u128, u128)> = set.ranges().iter().map(|r| (r.start(), r.end())).collect();
        let count = set.len();
        FreeSet {
            base,
            blocks: BTreeMap::new(),
            open: BTreeSet::new(),
            count,
        }
    }

    /// The number of free addresses.
    pub fn len(&self) -> u128 {
        self.count
    }

    /// Returns true if and only if no address is free.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Number of stored blocks: the memory the set costs beyond its ranges.
    pub fn blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Returns true if and only if `v` is in the ranges.
    fn in_base(&self, v: u128) -> bool {
        let i = self.base.partition_point(|&(_, e)| e < v);
        self.base.get(i).is_some_and(|&(s, _)| s <= v)
    }

    /// The first address of the ranges at or after `v`.
    fn base_from(&self, v: u128) -> Option<u128> {
        let i = self.base.partition_point(|&(_, e)| e < v);
        self.base.get(i).map(|&(s, _)| s.max(v))
    }

    /// The bitmap of the ranges inside block `b`.
    fn base_block(&self, b: u128) -> Block {
        let (lo, hi) = (block_start(b), block_end(b));
        let mut bits = Box::new([0u64; WORDS]);
        let mut free = 0u32;
        let mut i = self.base.partition_point(|&(_, e)| e < lo);
        while let Some(&(s, e)) = self.base.get(i) {
            if s > hi {
                break;
            }
            let (from, to) = ((s.max(lo) - lo) as usize, (e.min(hi) - lo) as usize);
            for off in from..=to {
                bits[off / 64] |= 1u64 << (off % 64);
            }
            free += (to - from + 1) as u32;
            i += 1;
        }
        Block {
            bits,
            free,
            base_free: free,
        }
    }

    /// Forgets block `b` if it holds exactly the ranges again.
    fn settle(&mut self, b: u128) {
        let Some(block) = self.blocks.get(&b) else {
            return;
        };
        if block.free == block.base_free && *block == self.base_block(b) {
            self.blocks.remove(&b);
            self.open.remove(&b);
        }
    }

    /// Stores block `b` if it is not stored yet.
    fn materialise(&mut self, b: u128) -> &mut Block {
        if !self.blocks.contains_key(&b) {
            let block = self.base_block(b);
            if block.free > 0 {
                self.open.insert(b);
            }
            self.blocks.insert(b, block);
        }
        self.blocks.get_mut(&b).expect("just stored")
    }

    /// Returns true if and only if `v` is free.
    pub fn contains(&self, v: u128) -> bool {
        match self.blocks.get(&block_of(v)) {
            Some(block) => block.get((v - block_start(block_of(v))) as usize),
            None => self.in_base(v),
        }
    }

    /// The first free address at or after `cursor`, else the lowest free one.
    pub fn next_from(&self, cursor: u128) -> Option<u128> {
        self.first_at_or_after(cursor).or_else(|| {
            if cursor == 0 {
                None
            } else {
                self.first_at_or_after(0)
            }
        })
    }

    /// The lowest free address at or after `from` without wrapping.
    pub fn first_at_or_after(&self, from: u128) -> Option<u128> {
        if self.count == 0 {
            return None;
        }
        let b = block_of(from);

        // The block of `from` itself.
        match self.blocks.get(&b) {
            Some(block) => {
                if let Some(off) = block.first_from((from - block_start(b)) as usize) {
                    return Some(block_start(b) + off as u128);
                }
            }
            None => {
                if let Some(v) = self.base_from(from).filter(|&v| v <= block_end(b)) {
                    return Some(v);
                }
            }
        }
        if b == block_of(u128::MAX) {
            return None;
        }

        // Later blocks: the first stored block with a free address, or the
        // first address of the ranges in a block that is not stored,
        // whichever comes first.
        let stored = self.open.range(b + 1..).next().map(|&ob| {
            let block = &self.blocks[&ob];
            block_start(ob) + block.first_from(0).expect("open block has a free address") as u128
        });
        let mut x = block_start(b + 1);
        while let Some(v) = self.base_from(x) {
            if stored.is_some_and(|s| s < v) {
                break;
            }
            let vb = block_of(v);
            if !self.blocks.contains_key(&vb) {
                return Some(v);
            }
            if vb == block_of(u128::MAX) {
                break;
            }
            x = block_start(vb + 1);
        }
        stored
    }

    /// Takes the first free address at or after `cursor` (wrapping to the lowest).
    pub fn take_from(&mut self, cursor: u128) -> Option<u128> {
        let v = self.next_from(cursor)?;
        self.remove(v);
        Some(v)
    }

    /// Takes `v` out of the set. Returns false if it was not free.
    pub fn remove(&mut self, v: u128) -> bool {
        let b = block_of(v);
        let off = (v - block_start(b)) as usize;
        if !self.blocks.contains_key(&b) && !self.in_base(v) {
            return false;
        }
        let block = self.materialise(b);
        if !block.get(off) {
            return false;
        }
        block.bits[off / 64] &= !(1u64 << (off % 64));
        block.free -= 1;
        if block.free == 0 {
            self.open.remove(&b);
        }
        self.count -= 1;
        self.settle(b);
        true
    }

    /// Puts `v` back. Returns false if it was already free.
    pub fn insert(&mut self, v: u128) -> bool {
        let b = block_of(v);
        let off = (v - block_start(b)) as usize;
        if !self.blocks.contains_key(&b) && self.in_base(v) {
            return false;
        }
        let block = self.materialise(b);
        if block.get(off) {
            return false;
        }
        block.bits[off / 64] |= 1u64 << (off % 64);
        block.free += 1;
        if block.free == 1 {
            self.open.insert(b);
        }
        self.count = self.count.saturating_add(1);
        self.settle(b);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::range::{Family, IpRange};
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
        assert_eq!(f.blocks(), 0, "back to its ranges, nothing stored");
        assert_eq!(f.len(), 3);
    }

    #[test]
    fn works_at_the_top_of_the_ipv6_space() {
        let top = RangeSet::from_ranges([IpRange::new(Family::V6, u128::MAX - 9000, u128::MAX)]);
        let mut f = FreeSet::from_rangeset(&top);
        assert_eq!(f.take_from(u128::MAX), Some(u128::MAX));
        assert_eq!(f.take_from(u128::MAX), Some(u128::MAX - 9000), "wraps");
        assert!(f.remove(u128::MAX - 1));
        assert_eq!(f.first_at_or_after(u128::MAX - 1), None);
        assert_eq!(f.len(), 9001 - 3);
        assert!(f.insert(u128::MAX));
        assert_eq!(f.next_from(u128::MAX - 2), Some(u128::MAX - 2));
    }

    #[test]
    fn a_huge_range_with_few_holders_stores_few_blocks() {
        let f64 = RangeSet::from_ranges([IpRange::new(Family::V6, 1 << 64, (2 << 64) - 1)]);
        let mut f = FreeSet::from_rangeset(&f64);
        for _ in 0..3 {
            f.take_from(0).unwrap();
        }
        assert_eq!(f.blocks(), 1);
        assert_eq!(f.len(), (1u128 << 64) - 3);
    }

    fn ranges() -> impl Strategy<Value = Vec<(u128, u128)>> {
        proptest::collection::vec((0u128..20_000, 0u128..6_000), 1..4)
            .prop_map(|v| v.into_iter().map(|(s, l)| (s, s + l)).collect())
    }

    proptest! {
        /// The set agrees with a plain set of addresses, across blocks, with
        /// addresses added outside its ranges.
        #[test]
        fn agrees_with_a_plain_set(
            base in ranges(),
            ops in proptest::collection::vec((0u8..3, 0u128..28_000), 0..300),
        ) {
            let set = RangeSet::from_ranges(base.iter().map(|&(s, e)| IpRange::new(Family::V4, s, e)));
            let mut f = FreeSet::from_rangeset(&set);
            let initial: BTreeSet<u128> = set.ranges().iter().flat_map(|r| r.start()..=r.end()).collect();
            let mut model = initial.clone();
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
                prop_assert_eq!(f.contains(v), model.contains(&v));
                let want = model.range(v..).next().or_else(|| model.iter().next()).copied();
                prop_assert_eq!(f.next_from(v), want);
                let after = model.range(v + 1..).next().copied();
                prop_assert_eq!(f.first_at_or_after(v + 1), after);
            }
            if model == initial {
                prop_assert_eq!(f.blocks(), 0, "a set back to its ranges stores nothing");
            }
        }
    }
}
