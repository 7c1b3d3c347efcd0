//! Q6_K: 256 elements in 210 bytes: `ql: [u8; 128]` (low four bits),
//! `qh: [u8; 64]` (high two bits), `scales: [i8; 16]`, `d: f16`.
//! value = `d * sc[e / 16] * (q - 32)` with `q` in 0..=63.
//!
//! Quant order: two halves of 128 elements; in half `h`, for `l` in 0..32,
//! with `L = ql[64h..]` and `H = qh[32h..]`: element `128h + l` is
//! `L[l] & 15 | (H[l] & 3) << 4`, `+32` is `L[l + 32] & 15 | (H[l] >> 2 & 3) << 4`,
//! `+64` is `L[l] >> 4 | (H[l] >> 4 & 3) << 4`, `+96` is `L[l + 32] >> 4 | (H[l] >> 6) << 4`.

use super::{blocks, f16_at, f32_at, nearest_int, put_f16, q8_k, QK_K};

pub const QK: usize = QK_K;
pub const BYTES: usize = 210;
pub(crate) const QH: usize = 128;
pub(crate) const SCALES: usize = 192;
pub(crate) const D: usize = 208;

/// Unsigned quants (0..=63) in element order; the signed value is this minus 32.
pub(crate) fn unpack(b: &[u8]) -> [u8; 256] {
    let mut q = [0u8; 256];
    for h in 0..2 {
        let (ql, qh) = (&b[64 * h..64 * h + 64], &b[QH + 32 * h..QH + 32 * h + 32]);
        let o = &mut q[128 * h..128 * h + 128];
        for l in 0..32 {
            o[l] = (ql[l] & 0x0F) | ((qh[l] & 3) << 4);
            o[l + 32] = (ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4);
            o[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
            o[l + 96] = (ql[l + 32] >> 4) | ((qh[l] >> 6) << 4);
        }
    }
    q
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, out) in src.chunks_exact(BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_at(b, D);
        let q = unpack(b);
        for (e, o) in out.iter_mut().enumerate() {
            let sc = b[SCALES + e / 16] as i8;
            *o = d * sc as f32 * (q[e] as i32 - 32) as f32;
        }
    }
}

/// Round-to-nearest: per 16-element sub-block the signed value of largest
/// magnitude maps to -32; sub-block scales are rounded to i8 against the
/// largest.
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BYTES)) {
        let mut sub = [0f32; 16];
        for (j, g) in x.chunks_exact(16).enumerate() {
            sub[j] = q8_k::signed_max(g).0 / -32.0;
        }
        let amax = sub.iter().fold(0f32, |a, &v| a.max(v.abs()));
        put_f16(b, D, amax / 127.0);
        let d = f16_at(b, D);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut ls = [0i32; 16];
        for j in 0..16 {
            ls[j] = nearest_int(sub[j] * id).clamp(-128, 127);
            b[SCALES + j] = ls[j] as i8 as u8;
        }
        let mut q = [0u8; 256];
        for (e, o) in q.iter_mut().enumerate() {
            let dl = d * ls[e / 16] as f32;
            let v = if dl == 0.0 {
                0
            } else {
                nearest_int(x[e] / dl).clamp(-32, 31)
            };
            *o = (v + 32) as u8;
        }
        for h in 0..2 {
            for l in 0..32 {
                let e = 128 * h + l;
                let (a, bb, c, dd) = (q[e], q[e + 32], q[e + 64], q[e + 96]);
                b[64 * h + l] = (a & 0x0F) | ((c & 0x0F) << 4);
                b[64 * h + 32 + l] = (bb & 0x0F) | ((dd & 0x0F) << 4);
                b[QH + 32 * h + l] =
                    (a >> 4) | ((bb >> 4) << 2) | ((c >> 4) << 4) | ((dd >> 4) << 6);
            }
        }
    }
}

/// The integer sum is taken as `sum(sc * sum(q * x)) - 32 * sum(sc * bsum)`,
/// exact and what the SIMD kernels compute.
pub fn vec_dot(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for i in 0..blocks(n, QK) {
        let wb = &w[i * BYTES..(i + 1) * BYTES];
        let xb = &x[i * q8_k::BYTES..(i + 1) * q8_k::BYTES];
        let q = unpack(wb);
        let (mut isum, mut off) = (0i32, 0i32);
        for j in 0..16 {
            let sc = (wb[SCALES + j] as i8) as i32;
            let s: i32 = (16 * j..16 * j + 16)
                .map(|e| q[e] as i32 * q8_k::q(xb, e))
                .sum();
            isum += sc * s;
            off += sc * q8_k::bsum(xb, j);
        }
        sumf = super::q3_k::accumulate(sumf, f16_at(wb, D), f32_at(xb, 0), isum - 32 * off);
    }
    sumf
}
