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

/// [`vec_dot_rows`] for a single activation row.
pub fn vec_dot(n: usize, w: &[u8], x: &[u8]) -> f32 {
    vec_dot_rows(n, w, x, false)
}

/// llama.cpp's AVX2 orders. For a row of a batch of eight or more (`wide`,
/// see [`crate::Rows`]) its tiled K-quant matmul: per super-block the exact
/// integer sum times `d_w`, rounded, then a fused multiply-add by `d_x`
/// into one float. Otherwise [`vec_dot_lanes`].
pub fn vec_dot_rows(n: usize, w: &[u8], x: &[u8], wide: bool) -> f32 {
    if !wide {
        return vec_dot_lanes(n, w, x);
    }
    let mut acc = 0f32;
    for i in 0..blocks(n, QK) {
        let wb = &w[i * BYTES..(i + 1) * BYTES];
        let xb = &x[i * q8_k::BYTES..(i + 1) * q8_k::BYTES];
        let isum: i32 = int_lanes(wb, xb).iter().sum();
        acc = (f16_at(wb, D) * isum as f32).mul_add(f32_at(xb, 0), acc);
    }
    acc
}

/// llama.cpp's AVX2 order (`ggml_vec_dot_q6_K_q8_K`): each super-block's
/// exact integer sum is kept in eight lanes, lane `m` holding
/// `sc * q * x` over elements `4m..4m + 4` of every 32-element run, less
/// `32 * (sc * bsum)` of runs `2m` and `2m + 1` of 16; the lanes become
/// floats and take `d_x * d_w` by fused multiply-adds into eight float
/// lanes, folded at the end ([`super::fold8`]).
fn vec_dot_lanes(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let mut acc = [0f32; 8];
    for i in 0..blocks(n, QK) {
        let wb = &w[i * BYTES..(i + 1) * BYTES];
        let xb = &x[i * q8_k::BYTES..(i + 1) * q8_k::BYTES];
        let lanes = int_lanes(wb, xb);
        let d = f32_at(xb, 0) * f16_at(wb, D);
        for (a, &l) in acc.iter_mut().zip(&lanes) {
            *a = (l as f32).mul_add(d, *a);
        }
    }
    super::fold8(&acc)
}

/// One super-block's eight integer lanes (see [`vec_dot_lanes`]).
pub(crate) fn int_lanes(wb: &[u8], xb: &[u8]) -> [i32; 8] {
    let q = unpack(wb);
    let sc = |j: usize| (wb[SCALES + j] as i8) as i32;
    let mut lanes = [0i32; 8];
    for e in 0..QK {
        lanes[(e % 32) / 4] += sc(e / 16) * q[e] as i32 * q8_k::q(xb, e);
    }
    for (m, l) in lanes.iter_mut().enumerate() {
        *l -= 32 * (sc(2 * m) * q8_k::bsum(xb, 2 * m) + sc(2 * m + 1) * q8_k::bsum(xb, 2 * m + 1));
    }
    lanes
}
