//! Q4_K: 256 elements in 144 bytes: `d: f16`, `dmin: f16`, 12 bytes packing
//! eight 6-bit scales and eight 6-bit mins, then 128 nibble bytes. Sub-block
//! `j` (32 elements) has value = `d * sc[j] * q - dmin * m[j]`. The nibbles
//! come in four 32-byte chunks; chunk `c` holds sub-block `2c` in its low
//! nibbles and `2c + 1` in its high nibbles.
//!
//! Scale packing (ggml's `get_scale_min_k4`): for `j < 4`, `sc = s[j] & 63`,
//! `m = s[j + 4] & 63`; for `j >= 4`, the low four bits come from `s[j + 4]`
//! (scale low nibble, min high nibble) and the top two bits from the top
//! bits of `s[j - 4]` (scale) and `s[j]` (min).

use super::{blocks, f16_at, f32_at, nearest_int, put_f16, q8_k, QK_K};

pub const QK: usize = QK_K;
pub const BYTES: usize = 144;
pub(crate) const QS: usize = 16;

/// The eight 6-bit scales and mins.
#[inline(always)]
pub(crate) fn scales_mins(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut m) = ([0u8; 8], [0u8; 8]);
    for j in 0..4 {
        sc[j] = s[j] & 63;
        m[j] = s[j + 4] & 63;
    }
    for j in 4..8 {
        sc[j] = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
        m[j] = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
    (sc, m)
}

/// Inverse of [`scales_mins`].
pub(crate) fn pack_scales_mins(sc: &[u8; 8], m: &[u8; 8], s: &mut [u8]) {
    s[..12].fill(0);
    for j in 0..8 {
        if j < 4 {
            s[j] = sc[j];
            s[j + 4] = m[j];
        } else {
            s[j + 4] = (sc[j] & 0x0F) | ((m[j] & 0x0F) << 4);
            s[j - 4] |= (sc[j] >> 4) << 6;
            s[j] |= (m[j] >> 4) << 6;
        }
    }
}

/// Unsigned quants (0..=15) in element order.
pub(crate) fn unpack(b: &[u8]) -> [u8; 256] {
    let mut q = [0u8; 256];
    for c in 0..4 {
        for l in 0..32 {
            let v = b[QS + 32 * c + l];
            q[64 * c + l] = v & 0x0F;
            q[64 * c + 32 + l] = v >> 4;
        }
    }
    q
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, out) in src.chunks_exact(BYTES).zip(dst.chunks_exact_mut(QK)) {
        let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
        let (sc, m) = scales_mins(&b[4..16]);
        let q = unpack(b);
        for (e, o) in out.iter_mut().enumerate() {
            let j = e / 32;
            *o = (d * sc[j] as f32) * q[e] as f32 - dmin * m[j] as f32;
        }
    }
}

/// Min/max affine fit per sub-block, then round-to-nearest of the sub-block
/// scales and mins against the super-block maxima (not llama.cpp's
/// error-minimising search; good enough for tests and simple conversions).
pub(crate) fn fit_affine(
    x: &[f32],
    group: usize,
    nmax: f32,
    smax: f32,
) -> (f32, f32, Vec<u8>, Vec<u8>) {
    let ng = x.len() / group;
    let mut scales = vec![0f32; ng];
    let mut mins = vec![0f32; ng];
    for (j, g) in x.chunks_exact(group).enumerate() {
        let lo = g.iter().fold(0f32, |a, &v| a.min(v));
        let hi = g.iter().fold(f32::MIN, |a, &v| a.max(v));
        scales[j] = (hi - lo) / nmax;
        mins[j] = -lo;
    }
    let max_scale = scales.iter().fold(0f32, |a, &v| a.max(v));
    let max_min = mins.iter().fold(0f32, |a, &v| a.max(v));
    let inv_s = if max_scale > 0.0 {
        smax / max_scale
    } else {
        0.0
    };
    let inv_m = if max_min > 0.0 { smax / max_min } else { 0.0 };
    let ls = scales
        .iter()
        .map(|&s| nearest_int(inv_s * s).clamp(0, smax as i32) as u8)
        .collect();
    let lm = mins
        .iter()
        .map(|&m| nearest_int(inv_m * m).clamp(0, smax as i32) as u8)
        .collect();
    (max_scale / smax, max_min / smax, ls, lm)
}

/// Quantises `x` against an already-fixed scale and min, clamping to `0..=nmax`.
#[inline(always)]
pub(crate) fn quant_affine(x: f32, d: f32, dm: f32, nmax: i32) -> u8 {
    if d == 0.0 {
        0
    } else {
        nearest_int((x + dm) / d).clamp(0, nmax) as u8
    }
}

/// Fits the eight sub-block scales and minimums of one affine K-quant
/// super-block (Q4_K: `nmax` 15, Q5_K: 31), writes `d`, `dmin` and the packed
/// 6-bit scales to `b[0..16]`, and returns the quants computed from the
/// stored (f16-rounded) values.
pub(crate) fn affine_super_block(x: &[f32], b: &mut [u8], nmax: u8) -> [u8; 256] {
    let (d, dmin, ls, lm) = fit_affine(x, 32, nmax as f32, 63.0);
    put_f16(b, 0, d);
    put_f16(b, 2, dmin);
    let sc: [u8; 8] = ls.try_into().expect("eight sub-block scales");
    let m: [u8; 8] = lm.try_into().expect("eight sub-block minimums");
    pack_scales_mins(&sc, &m, &mut b[4..16]);
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let mut q = [0u8; 256];
    for (e, o) in q.iter_mut().enumerate() {
        let j = e / 32;
        *o = quant_affine(x[e], d * sc[j] as f32, dmin * m[j] as f32, nmax as i32);
    }
    q
}

pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BYTES)) {
        let q = affine_super_block(x, b, 15);
        for c in 0..4 {
            for l in 0..32 {
                b[QS + 32 * c + l] = q[64 * c + l] | (q[64 * c + 32 + l] << 4);
            }
        }
    }
}

/// The float update shared by the reference and every SIMD kernel:
/// `sumf + ((wd * xd) * isum - (wdmin * xd) * summs)`.
#[inline(always)]
pub(crate) fn accumulate(sumf: f32, wd: f32, wdmin: f32, xd: f32, isum: i32, summs: i32) -> f32 {
    let d = wd * xd;
    let dmin = wdmin * xd;
    sumf + (d * isum as f32 - dmin * summs as f32)
}

/// Sum over the 16 activation runs of `bsum * min of the sub-block`.
#[inline(always)]
pub(crate) fn min_sum(xb: &[u8], m: &[u8; 8]) -> i32 {
    (0..16).map(|g| q8_k::bsum(xb, g) * m[g / 2] as i32).sum()
}

/// [`vec_dot_rows`] for a single activation row.
pub fn vec_dot(n: usize, w: &[u8], x: &[u8]) -> f32 {
    vec_dot_rows(n, w, x, false)
}

/// llama.cpp's AVX2 arithmetic for Q4_K, whose matrices it repacks into
/// interleaved tiles and multiplies with one of two kernels
/// (`ggml_gemv_q4_K_8x8_q8_K`, `ggml_gemm_q4_K_8x8_q8_K`): the scaled
/// quant sums and the minimum terms are two separate float chains, each a
/// fused multiply-add of an exact integer sum by `d_w * d_x` (by
/// `dmin_w * d_x`), and the result is their difference. A single
/// activation row takes one step per super-block; rows taken four at a
/// time (`quad`, see [`crate::Rows`]) take one per 64 elements (two
/// sub-blocks).
pub fn vec_dot_rows(n: usize, w: &[u8], x: &[u8], quad: bool) -> f32 {
    let (mut acc, mut acc_min) = (0f32, 0f32);
    for i in 0..blocks(n, QK) {
        let wb = &w[i * BYTES..(i + 1) * BYTES];
        let xb = &x[i * q8_k::BYTES..(i + 1) * q8_k::BYTES];
        let (sc, m) = scales_mins(&wb[4..16]);
        let q = unpack(wb);
        let xd = f32_at(xb, 0);
        let (d, dmin) = (f16_at(wb, 0) * xd, f16_at(wb, 2) * xd);
        let (mut isum, mut msum) = (0i32, 0i32);
        for pair in 0..4 {
            let (mut ip, mut mp) = (0i32, 0i32);
            for j in [2 * pair, 2 * pair + 1] {
                let s: i32 = (32 * j..32 * j + 32)
                    .map(|e| q[e] as i32 * q8_k::q(xb, e))
                    .sum();
                ip += sc[j] as i32 * s;
                mp += m[j] as i32 * (q8_k::bsum(xb, 2 * j) + q8_k::bsum(xb, 2 * j + 1));
            }
            if quad {
                acc = (ip as f32).mul_add(d, acc);
                acc_min = (mp as f32).mul_add(dmin, acc_min);
            } else {
                (isum, msum) = (isum + ip, msum + mp);
            }
        }
        if !quad {
            acc = (isum as f32).mul_add(d, acc);
            acc_min = (msum as f32).mul_add(dmin, acc_min);
        }
    }
    acc - acc_min
}

/// The reference dot product of Q5_K (one exact integer sum and one float
/// update per super-block), parameterised by block size and by how
/// `unpack` rebuilds the quants.
pub(crate) fn affine_vec_dot(
    n: usize,
    w: &[u8],
    x: &[u8],
    bytes: usize,
    unpack: fn(&[u8]) -> [u8; 256],
) -> f32 {
    let mut sumf = 0f32;
    for i in 0..blocks(n, QK) {
        let wb = &w[i * bytes..(i + 1) * bytes];
        let xb = &x[i * q8_k::BYTES..(i + 1) * q8_k::BYTES];
        let (sc, m) = scales_mins(&wb[4..16]);
        let q = unpack(wb);
        let mut isum = 0i32;
        for j in 0..8 {
            let s: i32 = (32 * j..32 * j + 32)
                .map(|e| q[e] as i32 * q8_k::q(xb, e))
                .sum();
            isum += sc[j] as i32 * s;
        }
        let summs = min_sum(xb, &m);
        sumf = accumulate(
            sumf,
            f16_at(wb, 0),
            f16_at(wb, 2),
            super::f32_at(xb, 0),
            isum,
            summs,
        );
    }
    sumf
}
