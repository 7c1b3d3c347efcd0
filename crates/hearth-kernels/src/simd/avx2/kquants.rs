//! AVX2 dot kernels for the K-quants (Q2_K..Q6_K weights, Q8_K activations).
//!
//! Each super-block's integer sum is computed exactly in i32 lanes
//! (`maddubs` of unsigned weight quants with the activation bytes, then
//! `madd` with the sub-block scales), reduced to one i32, and handed with the
//! block's scales to the same float update the reference uses. Formats whose
//! quants are signed (Q3_K, Q6_K) are taken unsigned (`u = q + offset`) and
//! the offset is removed with the activation `bsums`, exactly as the
//! reference does.
//!
//! With four columns (`gemm`), the per-super-block epilogue (horizontal
//! integer sums, `bsums` dot, float update) runs for the four columns at
//! once, lane `c` = column `c`, with the same operations per lane as the
//! scalar `accumulate`; it was about a third of the instructions.

use super::{f16_at_end, f16x2_at, f32_at, hsum8, hsum_i32, load128, load256};
use crate::formats::{q2_k, q3_k, q4_k, q8_k};
use std::arch::x86_64::*;

const XQ: usize = q8_k::QS;
const XBS: usize = q8_k::BSUMS;
const XB: usize = q8_k::BYTES;

/// `[s[2t]; 8] ++ [s[2t + 1]; 8]` widened to i16, from 16 signed byte
/// scales: the scales of two 16-element sub-blocks lined up with the
/// `maddubs` output of 32-element chunk `t`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pair_scales(s: __m128i, t: usize) -> __m256i {
    let lo = (2 * t as u64) * 0x0101_0101_0101_0101;
    let hi = (2 * t as u64 + 1) * 0x0101_0101_0101_0101;
    _mm256_cvtepi8_epi16(_mm_shuffle_epi8(s, _mm_set_epi64x(hi as i64, lo as i64)))
}

/// The activation `bsums` of block `xp` as 16 i16.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bsums(xp: *const u8) -> __m256i {
    load256(xp.add(XBS))
}

/// `sum_j bsums[j] * s[j]` for 16 per-run weights `s` (as i16).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bsum_dot(xp: *const u8, s: __m256i) -> i32 {
    hsum_i32(_mm256_madd_epi16(bsums(xp), s))
}

/// Lane `c` = the (wrapping) sum of the eight lanes of `v[c]`: four
/// `hsum_i32` at once (integer, so the order does not matter).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum4_i32(v: [__m256i; 4]) -> __m128i {
    let a = _mm256_hadd_epi32(v[0], v[1]);
    let b = _mm256_hadd_epi32(v[2], v[3]);
    let c = _mm256_hadd_epi32(a, b);
    _mm_add_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256::<1>(c))
}

/// The activation scales `d_x` (f32 at the start of each block) of four columns.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn xd4(xs: &[*const u8; 4]) -> __m128 {
    _mm_setr_ps(f32_at(xs[0]), f32_at(xs[1]), f32_at(xs[2]), f32_at(xs[3]))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q2_k<const C: usize>(
    nb: usize,
    w: *const u8,
    x: &[*const u8; C],
    _xs: &[*const f32; C],
) -> [f32; C] {
    let mut sumf = [0f32; C];
    let m3 = _mm256_set1_epi8(3);
    for i in 0..nb {
        let p = w.add(i * q2_k::BYTES);
        let raw = load128(p);
        let scales = _mm_and_si128(raw, _mm_set1_epi8(0x0F));
        let mins =
            _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(raw), _mm_set1_epi8(0x0F)));
        let mut acc = [_mm256_setzero_si256(); C];
        for h in 0..2 {
            let qs = load256(p.add(q2_k::QS + 32 * h));
            for s in 0..4 {
                let t = 4 * h + s;
                let u = _mm256_and_si256(_mm256_srl_epi16(qs, _mm_cvtsi32_si128(2 * s as i32)), m3);
                let scv = pair_scales(scales, t);
                for c in 0..C {
                    let xv = load256(x[c].add(i * XB + XQ + 32 * t));
                    let prod = _mm256_madd_epi16(_mm256_maddubs_epi16(u, xv), scv);
                    acc[c] = _mm256_add_epi32(acc[c], prod);
                }
            }
        }
        let dm = f16x2_at(p.add(q2_k::D));
        let (d, dmin) = (_mm_cvtss_f32(dm), _mm_cvtss_f32(_mm_movehdup_ps(dm)));
        for c in 0..C {
            let xp = x[c].add(i * XB);
            let summs = bsum_dot(xp, mins);
            sumf[c] = q2_k::accumulate(sumf[c], d, dmin, f32_at(xp), hsum_i32(acc[c]), summs);
        }
    }
    sumf
}

/// Q3_K's sixteen 6-bit scales minus 32 as signed bytes (`q3_k::scales`,
/// vectorised). Reads exactly the 12 scale bytes at `s`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q3_scales(s: *const u8) -> __m128i {
    let m4 = _mm_set1_epi8(0x0F);
    let a = _mm_loadl_epi64(s as *const __m128i);
    let lo = _mm_unpacklo_epi64(
        _mm_and_si128(a, m4),
        _mm_and_si128(_mm_srli_epi16::<4>(a), m4),
    );
    let h = (s.add(8) as *const u32).read_unaligned();
    // group g of four scales takes bits 2g..2g+2 of bytes 8..12
    let hi = _mm_srlv_epi32(_mm_set1_epi32(h as i32), _mm_setr_epi32(0, 2, 4, 6));
    let hi = _mm_slli_epi16::<4>(_mm_and_si128(hi, _mm_set1_epi8(3)));
    _mm_sub_epi8(_mm_or_si128(lo, hi), _mm_set1_epi8(32))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q3_k<const C: usize>(
    nb: usize,
    w: *const u8,
    x: &[*const u8; C],
    _xs: &[*const f32; C],
) -> [f32; C] {
    let mut sumf = [0f32; C];
    let m3 = _mm256_set1_epi8(3);
    let m1 = _mm256_set1_epi8(1);
    for i in 0..nb {
        let p = w.add(i * q3_k::BYTES);
        let scales = q3_scales(p.add(q3_k::SCALES));
        let sc16 = _mm256_cvtepi8_epi16(scales);
        let hm = load256(p);
        let mut acc = [_mm256_setzero_si256(); C];
        for h in 0..2 {
            let qs = load256(p.add(q3_k::QS + 32 * h));
            for s in 0..4 {
                let t = 4 * h + s;
                let lo =
                    _mm256_and_si256(_mm256_srl_epi16(qs, _mm_cvtsi32_si128(2 * s as i32)), m3);
                let hb = _mm256_and_si256(_mm256_srl_epi16(hm, _mm_cvtsi32_si128(t as i32)), m1);
                let u = _mm256_or_si256(lo, _mm256_slli_epi16::<2>(hb));
                let scv = pair_scales(scales, t);
                for c in 0..C {
                    let xv = load256(x[c].add(i * XB + XQ + 32 * t));
                    let prod = _mm256_madd_epi16(_mm256_maddubs_epi16(u, xv), scv);
                    acc[c] = _mm256_add_epi32(acc[c], prod);
                }
            }
        }
        let d = f16_at_end(p.add(q3_k::D));
        for c in 0..C {
            let xp = x[c].add(i * XB);
            let off = bsum_dot(xp, sc16);
            sumf[c] = q3_k::accumulate(sumf[c], d, f32_at(xp), hsum_i32(acc[c]) - 4 * off);
        }
    }
    sumf
}

/// Q4_K / Q5_K's 12 packed scale bytes at `s` unpacked (`q4_k::scales_mins`,
/// with integer ops on three words as llama.cpp does): the eight 6-bit
/// scales in bytes 0..8, the eight mins in bytes 8..16.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q45_scales_mins(s: *const u8) -> __m128i {
    const M1: u32 = 0x3f3f_3f3f;
    const M2: u32 = 0x0f0f_0f0f;
    const M3: u32 = 0x0303_0303;
    let u = |k: usize| (s.add(4 * k) as *const u32).read_unaligned();
    let (u0, u1, u2) = (u(0), u(1), u(2));
    // scales 0..4: low six bits of bytes 0..4; 4..8: low nibbles of bytes
    // 8..12 with bits 6..8 of bytes 0..4 on top. Mins likewise from bytes
    // 4..8 and the high nibbles.
    let sc_lo = u0 & M1;
    let sc_hi = (u2 & M2) | ((u0 >> 6) & M3) << 4;
    let m_lo = u1 & M1;
    let m_hi = ((u2 >> 4) & M2) | ((u1 >> 6) & M3) << 4;
    _mm_setr_epi32(sc_lo as i32, sc_hi as i32, m_lo as i32, m_hi as i32)
}

/// `pshufb` indices putting i16 word `j` (of each 128-bit half) in every word.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn word_splat(j: usize) -> __m256i {
    _mm256_set1_epi16((0x0101 * (2 * j) + 0x0100) as i16)
}

/// The (wrapping) sums of the eight lanes of `a` and of `b`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum2_i32(a: __m256i, b: __m256i) -> (i32, i32) {
    let h = _mm256_hadd_epi32(a, b); // [a01 a23 b01 b23 | a45 a67 b45 b67]
    let v = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
    let v = _mm_hadd_epi32(v, v); // [a, b, a, b]
    (_mm_cvtsi128_si32(v), _mm_extract_epi32::<1>(v))
}

/// One Q4_K or Q5_K super-block at `p` against `C` activation columns (the
/// blocks at `x[c]`): per column, the i32 lanes of `scale * q * x` for each
/// 64-element pair of sub-blocks, and the minimums' lanes (lane `j` =
/// `m[j] * (bsums[2j] + bsums[2j + 1])`). Integers, exact.
///
/// Always inlined into its callers (which enable AVX2): called, its
/// sixteen result registers went through memory (a fifth of Gemma 3's
/// prefill was this and its caller).
#[inline(always)]
unsafe fn q45_block<const C: usize, const FIVE: bool>(
    p: *const u8,
    x: &[*const u8; C],
) -> ([[__m256i; 4]; C], [__m256i; C]) {
    let qs_off = if FIVE {
        crate::formats::q5_k::QS
    } else {
        q4_k::QS
    };
    let m4 = _mm256_set1_epi8(0x0F);
    let m1 = _mm256_set1_epi8(1);
    let scm = q45_scales_mins(p.add(4));
    let m8 = _mm_cvtepu8_epi16(_mm_unpackhi_epi64(scm, scm));
    let mins = _mm256_set_m128i(_mm_unpackhi_epi16(m8, m8), _mm_unpacklo_epi16(m8, m8));
    // The eight scales as i16 in both halves, for `scale_pair`.
    let sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(scm));
    let qh = if FIVE {
        load256(p.add(crate::formats::q5_k::QH))
    } else {
        _mm256_setzero_si256()
    };
    let mut pairs = [[_mm256_setzero_si256(); 4]; C];
    for k in 0..4 {
        let q = load256(p.add(qs_off + 32 * k));
        let mut lo = _mm256_and_si256(q, m4);
        let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
        if FIVE {
            let bl = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * k as i32)), m1);
            let bh = _mm256_and_si256(
                _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * k as i32 + 1)),
                m1,
            );
            lo = _mm256_or_si256(lo, _mm256_slli_epi16::<4>(bl));
            hi = _mm256_or_si256(hi, _mm256_slli_epi16::<4>(bh));
        }
        let s_lo = _mm256_shuffle_epi8(sc16, word_splat(2 * k));
        let s_hi = _mm256_shuffle_epi8(sc16, word_splat(2 * k + 1));
        for c in 0..C {
            let xp = x[c].add(XQ + 64 * k);
            let a = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, load256(xp)), s_lo);
            let b = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, load256(xp.add(32))), s_hi);
            pairs[c][k] = _mm256_add_epi32(a, b);
        }
    }
    let min_lanes = std::array::from_fn(|c| _mm256_madd_epi16(bsums(x[c]), mins));
    (pairs, min_lanes)
}

/// Q5_K: one exact integer sum and one float update (`q4_k::accumulate`)
/// per super-block.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q5_k<const C: usize>(
    nb: usize,
    w: *const u8,
    x: &[*const u8; C],
    _xs: &[*const f32; C],
) -> [f32; C] {
    let bytes = crate::formats::q5_k::BYTES;
    let mut sumf = [0f32; C];
    // With four columns, their `sumf` as the lanes of one vector.
    let mut sum4 = _mm_setzero_ps();
    for i in 0..nb {
        let p = w.add(i * bytes);
        let xs: [*const u8; C] = std::array::from_fn(|c| x[c].add(i * XB));
        let (pairs, min_lanes) = q45_block::<C, true>(p, &xs);
        let acc: [__m256i; C] = std::array::from_fn(|c| {
            let [a, b, e, f] = pairs[c];
            _mm256_add_epi32(_mm256_add_epi32(a, b), _mm256_add_epi32(e, f))
        });
        let dm = f16x2_at(p);
        let (d, dmin) = (_mm_cvtss_f32(dm), _mm_cvtss_f32(_mm_movehdup_ps(dm)));
        if C == 4 {
            // `q4_k::accumulate` for the four columns at once, lane c =
            // column c: the same multiplies, subtraction and add per lane.
            let xs4: [*const u8; 4] = std::array::from_fn(|c| xs[c]);
            let isum = hsum4_i32(std::array::from_fn(|c| acc[c]));
            let summs = hsum4_i32(std::array::from_fn(|c| min_lanes[c]));
            let xd = xd4(&xs4);
            let dd = _mm_mul_ps(_mm_set1_ps(d), xd);
            let dd_min = _mm_mul_ps(_mm_set1_ps(dmin), xd);
            let t = _mm_sub_ps(
                _mm_mul_ps(dd, _mm_cvtepi32_ps(isum)),
                _mm_mul_ps(dd_min, _mm_cvtepi32_ps(summs)),
            );
            sum4 = _mm_add_ps(sum4, t);
        } else {
            for c in 0..C {
                let (isum, summs) = hsum2_i32(acc[c], min_lanes[c]);
                sumf[c] = q4_k::accumulate(sumf[c], d, dmin, f32_at(xs[c]), isum, summs);
            }
        }
    }
    if C == 4 {
        _mm_storeu_ps(sumf.as_mut_ptr(), sum4);
    }
    sumf
}

/// [`q4_k::vec_dot_rows`]: two float chains per column, one fused
/// multiply-add each per super-block (`QUAD` false) or per 64-element pair
/// of sub-blocks (`QUAD` true), of the exact integer sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q4_k_form<const C: usize, const QUAD: bool>(
    nb: usize,
    w: *const u8,
    x: &[*const u8; C],
) -> [f32; C] {
    let mut acc = [0f32; C];
    let mut acc_min = [0f32; C];
    for i in 0..nb {
        let p = w.add(i * q4_k::BYTES);
        let xs: [*const u8; C] = std::array::from_fn(|c| x[c].add(i * XB));
        let (pairs, min_lanes) = q45_block::<C, false>(p, &xs);
        let dm = f16x2_at(p);
        let (dw, dmin_w) = (_mm_cvtss_f32(dm), _mm_cvtss_f32(_mm_movehdup_ps(dm)));
        for c in 0..C {
            let xd = f32_at(xs[c]);
            let (d, dmin) = (dw * xd, dmin_w * xd);
            if QUAD {
                // The four pairs' sums side by side (lane k = pair k), and
                // the minimum lanes added two by two into the same order.
                let ip = _mm_cvtepi32_ps(hsum4_i32(pairs[c]));
                let h = _mm256_hadd_epi32(min_lanes[c], min_lanes[c]);
                let mp =
                    _mm_unpacklo_epi64(_mm256_castsi256_si128(h), _mm256_extracti128_si256::<1>(h));
                let (mut ipf, mut mpf) = ([0f32; 4], [0f32; 4]);
                _mm_storeu_ps(ipf.as_mut_ptr(), ip);
                _mm_storeu_ps(mpf.as_mut_ptr(), _mm_cvtepi32_ps(mp));
                for k in 0..4 {
                    acc[c] = ipf[k].mul_add(d, acc[c]);
                    acc_min[c] = mpf[k].mul_add(dmin, acc_min[c]);
                }
            } else {
                let [a, b, e, f] = pairs[c];
                let all = _mm256_add_epi32(_mm256_add_epi32(a, b), _mm256_add_epi32(e, f));
                let (isum, msum) = hsum2_i32(all, min_lanes[c]);
                acc[c] = (isum as f32).mul_add(d, acc[c]);
                acc_min[c] = (msum as f32).mul_add(dmin, acc_min[c]);
            }
        }
    }
    std::array::from_fn(|c| acc[c] - acc_min[c])
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q4_k<const C: usize>(
    nb: usize,
    w: *const u8,
    x: &[*const u8; C],
    _xs: &[*const f32; C],
) -> [f32; C] {
    dot_q4_k_form::<C, false>(nb, w, x)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q4_k_quad<const C: usize>(
    nb: usize,
    w: *const u8,
    x: &[*const u8; C],
    _xs: &[*const f32; C],
) -> [f32; C] {
    dot_q4_k_form::<C, true>(nb, w, x)
}

/// Half `h` of the Q6_K super-block at `p`: its 128 unsigned quants
/// (0..=63) in element order, 32 per register (`q6_k::unpack`, vectorised).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q6_k_half(p: *const u8, h: usize) -> [__m256i; 4] {
    use crate::formats::q6_k;
    let m4 = _mm256_set1_epi8(0x0F);
    let m30 = _mm256_set1_epi8(0x30);
    let ql0 = load256(p.add(64 * h));
    let ql1 = load256(p.add(64 * h + 32));
    let qh = load256(p.add(q6_k::QH + 32 * h));
    [
        _mm256_or_si256(
            _mm256_and_si256(ql0, m4),
            _mm256_and_si256(_mm256_slli_epi16::<4>(qh), m30),
        ),
        _mm256_or_si256(
            _mm256_and_si256(ql1, m4),
            _mm256_and_si256(_mm256_slli_epi16::<2>(qh), m30),
        ),
        _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
            _mm256_and_si256(qh, m30),
        ),
        _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
            _mm256_and_si256(_mm256_srli_epi16::<2>(qh), m30),
        ),
    ]
}

/// [`q6_k::vec_dot`](crate::formats::q6_k::vec_dot): the super-block's
/// eight integer lanes are the `madd` lanes themselves (lane `m` covers
/// bytes `4m..4m + 4` of every 32-byte run, as llama.cpp's kernel has
/// them), each column's float lanes are kept across super-blocks and
/// folded once at the end.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q6_k<const C: usize>(
    nb: usize,
    w: *const u8,
    x: &[*const u8; C],
    _xs: &[*const f32; C],
) -> [f32; C] {
    dot_q6_k_form::<C, false>(nb, w, x)
}

/// [`q6_k::vec_dot_rows`](crate::formats::q6_k::vec_dot_rows) for rows of
/// a batch of eight or more: one float per column, `fma(d_w * isum, d_x, acc)`
/// per super-block.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_q6_k_wide<const C: usize>(
    nb: usize,
    w: *const u8,
    x: &[*const u8; C],
    _xs: &[*const f32; C],
) -> [f32; C] {
    dot_q6_k_form::<C, true>(nb, w, x)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_q6_k_form<const C: usize, const WIDE: bool>(
    nb: usize,
    w: *const u8,
    x: &[*const u8; C],
) -> [f32; C] {
    use crate::formats::q6_k;
    let mut accf = [_mm256_setzero_ps(); C];
    let mut acc1 = [0f32; C];
    for i in 0..nb {
        let p = w.add(i * q6_k::BYTES);
        let scp = p.add(q6_k::SCALES);
        let scales = load128(scp);
        let sc16 = _mm256_cvtepi8_epi16(scales);
        // Scales 0..8 / 8..16 as i16 in both halves, for `word_splat`.
        let sc_half = [
            _mm256_permute4x64_epi64::<0x44>(sc16),
            _mm256_permute4x64_epi64::<0xEE>(sc16),
        ];
        let mut acc = [_mm256_setzero_si256(); C];
        for h in 0..2 {
            let u = q6_k_half(p, h);
            for (s, &uq) in u.iter().enumerate() {
                let t = 4 * h + s;
                // `pair_scales(scales, t)` from the widened scales.
                let scv = _mm256_shuffle_epi8(
                    sc_half[h],
                    _mm256_blend_epi32::<0xF0>(word_splat(2 * s), word_splat(2 * s + 1)),
                );
                for c in 0..C {
                    let xv = load256(x[c].add(i * XB + XQ + 32 * t));
                    let prod = _mm256_madd_epi16(_mm256_maddubs_epi16(uq, xv), scv);
                    acc[c] = _mm256_add_epi32(acc[c], prod);
                }
            }
        }
        let dw = f16_at_end(p.add(q6_k::D));
        for c in 0..C {
            let xp = x[c].add(i * XB);
            let off = _mm256_madd_epi16(bsums(xp), sc16);
            let lanes = _mm256_sub_epi32(acc[c], _mm256_slli_epi32::<5>(off));
            if WIDE {
                acc1[c] = (dw * hsum_i32(lanes) as f32).mul_add(f32_at(xp), acc1[c]);
            } else {
                let d = _mm256_set1_ps(f32_at(xp) * dw);
                accf[c] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(lanes), accf[c]);
            }
        }
    }
    if WIDE {
        acc1
    } else {
        std::array::from_fn(|c| hsum8(accf[c]))
    }
}
