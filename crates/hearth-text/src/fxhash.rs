//! A small, fast, non-cryptographic hasher for the vocabulary lookup tables.
//!
//! This module owns: the hasher behind the text→id and merge-rank maps. The
//! keys are the model's own token strings, not attacker-chosen at run time,
//! so SipHash's flooding resistance buys nothing and costs time on the hot
//! path (one lookup per merge candidate).

use std::hash::{BuildHasherDefault, Hasher};

#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // A multiply only carries entropy upwards, while the table indexes
        // by the low bits: fold the high half down so tokens sharing their
        // first bytes do not pile into one bucket.
        let mut h = self.hash;
        h ^= h >> 33;
        h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        h ^= h >> 33;
        h
    }
}

pub(crate) type FxBuild = BuildHasherDefault<FxHasher>;
pub(crate) type FxHashMap<K, V> = std::collections::HashMap<K, V, FxBuild>;

/// Byte strings stored back to back, addressed by index.
#[derive(Clone, Debug, Default)]
pub(crate) struct Arena {
    data: Vec<u8>,
    offs: Vec<usize>,
}

impl Arena {
    pub(crate) fn with_capacity(items: usize, bytes: usize) -> Arena {
        let mut offs = Vec::with_capacity(items + 1);
        offs.push(0);
        Arena {
            data: Vec::with_capacity(bytes),
            offs,
        }
    }

    pub(crate) fn push(&mut self, item: &[u8]) {
        self.data.extend_from_slice(item);
        self.offs.push(self.data.len());
    }

    pub(crate) fn len(&self) -> usize {
        self.offs.len().saturating_sub(1)
    }

    #[inline]
    pub(crate) fn get(&self, i: usize) -> Option<&[u8]> {
        let (&a, &b) = (self.offs.get(i)?, self.offs.get(i + 1)?);
        Some(&self.data[a..b])
    }
}

/// Text → index over an [`Arena`]: an open-addressing table of indices that
/// compares candidates against the arena, so building it allocates nothing
/// per entry (the Gemma vocabulary has 262 144).
#[derive(Clone, Debug, Default)]
pub(crate) struct TextIndex {
    slots: Vec<u32>,
    mask: usize,
}

const EMPTY: u32 = u32::MAX;

fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(b);
    h.finish()
}

impl TextIndex {
    /// Indexes every entry of `arena`; the first of equal texts wins and the
    /// index of each later duplicate is returned in `duplicates`.
    pub(crate) fn build(arena: &Arena) -> (TextIndex, Vec<(u32, u32)>) {
        let cap = (arena.len() * 2).next_power_of_two().max(16);
        let mut idx = TextIndex {
            slots: vec![EMPTY; cap],
            mask: cap - 1,
        };
        let mut dups = Vec::new();
        for i in 0..arena.len() {
            let key = arena.get(i).unwrap_or_default();
            let mut s = hash_bytes(key) as usize & idx.mask;
            loop {
                let cur = idx.slots[s];
                if cur == EMPTY {
                    idx.slots[s] = i as u32;
                    break;
                }
                if arena.get(cur as usize) == Some(key) {
                    dups.push((cur, i as u32));
                    break;
                }
                s = (s + 1) & idx.mask;
            }
        }
        (idx, dups)
    }

    #[inline]
    pub(crate) fn get(&self, arena: &Arena, key: &[u8]) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mut s = hash_bytes(key) as usize & self.mask;
        loop {
            let cur = self.slots[s];
            if cur == EMPTY {
                return None;
            }
            if arena.get(cur as usize) == Some(key) {
                return Some(cur);
            }
            s = (s + 1) & self.mask;
        }
    }
}
