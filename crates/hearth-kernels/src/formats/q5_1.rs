//! Q5_1: 32 elements in 24 bytes: `d: f16`, `m: f16`, `qh: u32`, then 16
//! nibble bytes (as Q5_0); value = `(nibble | bit << 4) * d + m`. Dotted
//! against Q8_1 like Q4_1.

use super::{put_f16, QK32};

pub const QK: usize = QK32;
pub const BYTES: usize = 24;

/// Unsigned quant values (0..=31) of one block, in element order.
#[inline(always)]
pub(crate) fn unpack(b: &[u8]) -> [i32; 32] {
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let mut w = [0i32; 32];
    for j in 0..16 {
        w[j] = ((b[8 + j] & 0x0F) as u32 | ((qh >> j) & 1) << 4) as i32;
        w[j + 16] = ((b[8 + j] >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4) as i32;
    }
    w
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    super::dequantize32(src, dst, BYTES, super::Scale32::Affine, unpack);
}

/// ggml's reference quantiser: min/max affine over the block.
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BYTES)) {
        let (min, max) = super::min_max(x);
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(b, 0, d);
        put_f16(b, 2, min);
        let q = |v: f32| (((v - min) * id + 0.5) as u8).min(31) as u32;
        let mut qh = 0u32;
        for j in 0..16 {
            let (lo, hi) = (q(x[j]), q(x[j + 16]));
            b[8 + j] = ((lo & 0x0F) | (hi & 0x0F) << 4) as u8;
            qh |= (lo >> 4) << j | (hi >> 4) << (j + 16);
        }
        b[4..8].copy_from_slice(&qh.to_le_bytes());
    }
}

pub fn vec_dot(n: usize, w: &[u8], x: &[u8]) -> f32 {
    super::vec_dot32(n, w, x, BYTES, super::Scale32::Affine, unpack)
}
