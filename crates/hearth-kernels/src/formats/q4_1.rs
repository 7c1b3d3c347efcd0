//! Q4_1: 32 elements in 20 bytes: `d: f16`, `m: f16`, then 16 nibble bytes
//! laid out as in Q4_0; value = `nibble * d + m`. Dotted against Q8_1, whose
//! `s` field lets the minimum be applied once per block: `m * s`.

use super::{put_f16, QK32};

pub const QK: usize = QK32;
pub const BYTES: usize = 20;

/// Unsigned quant values (0..=15) of one block, in element order.
#[inline(always)]
pub(crate) fn unpack(b: &[u8]) -> [i32; 32] {
    let mut w = [0i32; 32];
    for j in 0..16 {
        w[j] = (b[4 + j] & 0x0F) as i32;
        w[j + 16] = (b[4 + j] >> 4) as i32;
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
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(b, 0, d);
        put_f16(b, 2, min);
        let q = |v: f32| (((v - min) * id + 0.5) as i8).min(15) as u8;
        for j in 0..16 {
            b[4 + j] = q(x[j]) | (q(x[j + 16]) << 4);
        }
    }
}

/// Lanes as for every 32-element format, plus the `m * s` terms (see `Lanes8`).
pub fn vec_dot(n: usize, w: &[u8], x: &[u8]) -> f32 {
    super::vec_dot32(n, w, x, BYTES, super::Scale32::Affine, unpack)
}
