//! Q3_K: 256 elements in 110 bytes: `hmask: [u8; 32]`, `qs: [u8; 64]`
//! (2-bit quants in Q2_K's order), `scales: [u8; 12]` (sixteen 6-bit
//! scales, stored +32), `d: f16`. value = `d * (sc - 32) * (q - 4 * !hbit)`,
//! where the high bit of element `128h + 32s + l` is bit `4h + s` of
//! `hmask[l]`.
//!
//! Scale packing: for sub-block `j`, the low four bits are the low nibble of
//! `scales[j]` (j < 8) or the high nibble of `scales[j - 8]`; the top two
//! bits are bits `2 * (j / 4)` of `scales[8 + j % 4]`.

use super::q2_k::{pack2, unpack2};
use super::{blocks, f16_at, f32_at, nearest_int, put_f16, q8_k, QK_K};

pub const QK: usize = QK_K;
pub const BYTES: usize = 110;
pub(crate) const QS: usize = 32;
pub(crate) const SCALES: usize = 96;
pub(crate) const D: usize = 108;

/// The sixteen signed scales (-32..=31).
#[inline(always)]
pub(crate) fn scales(s: &[u8]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (j, o) in out.iter_mut().enumerate() {
        let lo = if j < 8 { s[j] & 0x0F } else { s[j - 8] >> 4 };
        let hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        *o = (lo | (hi << 4)) as i8 - 32;
    }
    out
}

/// Unsigned quants `q2 | hbit << 2` (0..=7) in element order; the signed
/// value is this minus 4.
pub(crate) fn unpack(b: &[u8]) -> [u8; 256] {
    let mut q = unpack2(&b[QS..QS + 64]);
    for (e, v) in q.iter_mut().enumerate() {
        let (h, s, l) = (e / 128, (e / 32) % 4, e % 32);
        *v |= ((b[l] >> (4 * h + s)) & 1) << 2;
    }
    q
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, out) in src.chunks_exact(BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_at(b, D);
        let sc = scales(&b[SCALES..SCALES + 12]);
        let q = unpack(b);
        for (e, o) in out.iter_mut().enumerate() {
            let dl = d * sc[e / 16] as f32;
            *o = dl * (q[e] as i32 - 4) as f32;
        }
    }
}

/// Round-to-nearest: per 16-element sub-block the signed value of largest
/// magnitude maps to -4; the sub-block scales are rounded to 6 bits against
/// the largest one.
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BYTES)) {
        let mut sub = [0f32; 16];
        for (j, g) in x.chunks_exact(16).enumerate() {
            sub[j] = q8_k::signed_max(g).0 / -4.0;
        }
        let amax = sub.iter().fold(0f32, |a, &v| a.max(v.abs()));
        let d = amax / 31.0;
        put_f16(b, D, d);
        let d = f16_at(b, D);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut ls = [0i32; 16];
        for j in 0..16 {
            ls[j] = nearest_int(sub[j] * id).clamp(-32, 31);
        }
        let s = &mut b[SCALES..SCALES + 12];
        s.fill(0);
        for (j, &l) in ls.iter().enumerate() {
            let u = (l + 32) as u8;
            if j < 8 {
                s[j] |= u & 0x0F;
            } else {
                s[j - 8] |= (u & 0x0F) << 4;
            }
            s[8 + j % 4] |= (u >> 4) << (2 * (j / 4));
        }
        let mut q = [0u8; 256];
        for (e, o) in q.iter_mut().enumerate() {
            let dl = d * ls[e / 16] as f32;
            let v = if dl == 0.0 {
                0
            } else {
                nearest_int(x[e] / dl).clamp(-4, 3)
            };
            *o = (v + 4) as u8;
        }
        b[..32].fill(0);
        for (e, v) in q.iter_mut().enumerate() {
            let (h, s, l) = (e / 128, (e / 32) % 4, e % 32);
            b[l] |= (*v >> 2) << (4 * h + s);
            *v &= 3;
        }
        pack2(&q, &mut b[QS..QS + 64]);
    }
}

/// `sumf + (wd * xd) * isum`, shared with SIMD.
#[inline(always)]
pub(crate) fn accumulate(sumf: f32, wd: f32, xd: f32, isum: i32) -> f32 {
    sumf + (wd * xd) * isum as f32
}

/// The integer sum is taken as `sum(sc * sum(u * x)) - 4 * sum(sc * bsum)`
/// (u = value + 4), which is exact and is what the SIMD kernels compute.
pub fn vec_dot(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for i in 0..blocks(n, QK) {
        let wb = &w[i * BYTES..(i + 1) * BYTES];
        let xb = &x[i * q8_k::BYTES..(i + 1) * q8_k::BYTES];
        let sc = scales(&wb[SCALES..SCALES + 12]);
        let q = unpack(wb);
        let (mut isum, mut off) = (0i32, 0i32);
        for j in 0..16 {
            let s: i32 = (16 * j..16 * j + 16)
                .map(|e| q[e] as i32 * q8_k::q(xb, e))
                .sum();
            isum += sc[j] as i32 * s;
            off += sc[j] as i32 * q8_k::bsum(xb, j);
        }
        sumf = accumulate(sumf, f16_at(wb, D), f32_at(xb, 0), isum - 4 * off);
    }
    sumf
}
