//! Q8_K: 256 elements in 292 bytes: `d: f32`, 256 signed bytes `q`, then
//! `bsums: [i16; 16]` (sum of each run of 16 quants). The activation format
//! for all K-quant weights; the `bsums` let the K-quant dot products apply
//! per-sub-block minimums and offsets without touching the activations again.
//!
//! The quantiser follows ggml's reference exactly: `max` is the *signed*
//! value of largest magnitude (first one wins), `iscale = -127 / max`,
//! `q = min(127, nearest_even(iscale * x))`, `d = 1 / iscale`.

use super::{blocks, f32_at, nearest_int, QK_K};

pub const QK: usize = QK_K;
pub const BYTES: usize = 292;
pub(crate) const QS: usize = 4;
pub(crate) const BSUMS: usize = 260;

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, out) in src.chunks_exact(BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = f32_at(b, 0);
        for (o, &q) in out.iter_mut().zip(&b[QS..QS + QK]) {
            *o = d * (q as i8) as f32;
        }
    }
}

/// The signed value of largest magnitude (the first such), and its magnitude.
#[inline(always)]
pub(crate) fn signed_max(x: &[f32]) -> (f32, f32) {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BYTES)) {
        let (max, amax) = signed_max(x);
        if amax == 0.0 {
            b.fill(0);
            continue;
        }
        let iscale = -127.0 / max;
        for (o, &v) in b[QS..QS + QK].iter_mut().zip(x) {
            *o = nearest_int(iscale * v).min(127) as i8 as u8;
        }
        write_bsums(b);
        b[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}

/// Fills the `bsums` of a block whose quants are already written.
#[inline(always)]
pub(crate) fn write_bsums(b: &mut [u8]) {
    for g in 0..16 {
        let s: i32 = b[QS + 16 * g..QS + 16 * g + 16]
            .iter()
            .map(|&q| (q as i8) as i32)
            .sum();
        b[BSUMS + 2 * g..BSUMS + 2 * g + 2].copy_from_slice(&(s as i16).to_le_bytes());
    }
}

/// The activation quant `e` of a block.
#[inline(always)]
pub(crate) fn q(b: &[u8], e: usize) -> i32 {
    (b[QS + e] as i8) as i32
}

/// The sum of the activation quants in run `g` of 16.
#[inline(always)]
pub(crate) fn bsum(b: &[u8], g: usize) -> i32 {
    i16::from_le_bytes([b[BSUMS + 2 * g], b[BSUMS + 2 * g + 1]]) as i32
}

/// Q8_K weights against Q8_K activations (not a pairing llama.cpp uses).
pub fn vec_dot(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for i in 0..blocks(n, QK) {
        let wb = &w[i * BYTES..(i + 1) * BYTES];
        let xb = &x[i * BYTES..(i + 1) * BYTES];
        let isum: i32 = (0..QK).map(|e| q(wb, e) * q(xb, e)).sum();
        sumf += (f32_at(wb, 0) * f32_at(xb, 0)) * isum as f32;
    }
    sumf
}
