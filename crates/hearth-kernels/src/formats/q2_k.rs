//! Q2_K: 256 elements in 84 bytes: `scales: [u8; 16]` (low nibble = scale,
//! high nibble = min, one byte per 16-element sub-block), `qs: [u8; 64]`,
//! `d: f16`, `dmin: f16`. value = `d * sc * q - dmin * m` with `q` in 0..=3.
//!
//! Quant order: the 64 `qs` bytes are two halves of 32; element
//! `128h + 32s + l` is bits `2s..2s+2` of `qs[32h + l]`.

use super::q4_k::quant_affine;
use super::{blocks, f16_at, f32_at, put_f16, q8_k, QK_K};

pub const QK: usize = QK_K;
pub const BYTES: usize = 84;
pub(crate) const QS: usize = 16;
pub(crate) const D: usize = 80;

/// Unsigned 2-bit quants packed four to a byte in the K-quant order shared by
/// Q2_K and Q3_K (element `128h + 32s + l` in bits `2s` of byte `32h + l`).
pub(crate) fn unpack2(qs: &[u8]) -> [u8; 256] {
    let mut q = [0u8; 256];
    for h in 0..2 {
        for s in 0..4 {
            for l in 0..32 {
                q[128 * h + 32 * s + l] = (qs[32 * h + l] >> (2 * s)) & 3;
            }
        }
    }
    q
}

/// Inverse of [`unpack2`].
pub(crate) fn pack2(q: &[u8; 256], qs: &mut [u8]) {
    for h in 0..2 {
        for l in 0..32 {
            let e = 128 * h + l;
            qs[32 * h + l] = q[e] | (q[e + 32] << 2) | (q[e + 64] << 4) | (q[e + 96] << 6);
        }
    }
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, out) in src.chunks_exact(BYTES).zip(dst.chunks_exact_mut(QK)) {
        let (d, dmin) = (f16_at(b, D), f16_at(b, D + 2));
        let q = unpack2(&b[QS..QS + 64]);
        for (e, o) in out.iter_mut().enumerate() {
            let sc = b[e / 16];
            let dl = d * (sc & 0x0F) as f32;
            let ml = dmin * (sc >> 4) as f32;
            *o = dl * q[e] as f32 - ml;
        }
    }
}

/// Round-to-nearest: min/max affine per 16-element sub-block, 4-bit scales
/// and mins against the super-block maxima.
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BYTES)) {
        let (d, dmin, ls, lm) = super::q4_k::fit_affine(x, 16, 3.0, 15.0);
        put_f16(b, D, d);
        put_f16(b, D + 2, dmin);
        for j in 0..16 {
            b[j] = ls[j] | (lm[j] << 4);
        }
        let (d, dmin) = (f16_at(b, D), f16_at(b, D + 2));
        let mut q = [0u8; 256];
        for (e, o) in q.iter_mut().enumerate() {
            let j = e / 16;
            *o = quant_affine(x[e], d * ls[j] as f32, dmin * lm[j] as f32, 3);
        }
        pack2(&q, &mut b[QS..QS + 64]);
    }
}

/// `sumf + ((wd * xd) * isum - (wdmin * xd) * summs)`, shared with SIMD.
#[inline(always)]
pub(crate) fn accumulate(sumf: f32, wd: f32, wdmin: f32, xd: f32, isum: i32, summs: i32) -> f32 {
    super::q4_k::accumulate(sumf, wd, wdmin, xd, isum, summs)
}

pub fn vec_dot(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for i in 0..blocks(n, QK) {
        let wb = &w[i * BYTES..(i + 1) * BYTES];
        let xb = &x[i * q8_k::BYTES..(i + 1) * q8_k::BYTES];
        let q = unpack2(&wb[QS..QS + 64]);
        let (mut isum, mut summs) = (0i32, 0i32);
        for j in 0..16 {
            let s: i32 = (16 * j..16 * j + 16)
                .map(|e| q[e] as i32 * q8_k::q(xb, e))
                .sum();
            isum += (wb[j] & 0x0F) as i32 * s;
            summs += (wb[j] >> 4) as i32 * q8_k::bsum(xb, j);
        }
        sumf = accumulate(
            sumf,
            f16_at(wb, D),
            f16_at(wb, D + 2),
            f32_at(xb, 0),
            isum,
            summs,
        );
    }
    sumf
}
