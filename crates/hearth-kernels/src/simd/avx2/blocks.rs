//! AVX2 dot kernels for the 32-element formats (Q4_0, Q4_1, Q5_0, Q5_1,
//! Q8_0, Q8_1 weights).
//!
//! Per block: the weight quants are unpacked to 32 bytes in element order;
//! `maddubs` + `madd` against the activation bytes leave lane `k` holding
//! the integer sum over elements `4k..4k+4` (the reference's `Lanes8`);
//! lanes are converted, multiplied by `d_w * d_x` and added (fused) to the column's
//! accumulator. Signed weights use the `sign` trick (|w| times x with w's
//! sign), which gives the same products.
//!
//! With `PRE`, the activation scales come from a table of `(d_x, s_x)` f32
//! pairs that `gemm` widens once per column group (the widening is exact, so
//! the results are the same bits; it saves four instructions per block and
//! column in the prefill loop).

use super::{f16x2_at, hsum8, load128, load256};

/// Widens the `(d, s)` f16 pair at the start of each of `nb` activation
/// blocks (stride `xb` bytes) into `out[2i], out[2i + 1]`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn widen_scales(nb: usize, x: *const u8, xb: usize, out: *mut f32) {
    for i in 0..nb {
        _mm_store_sd(
            out.add(2 * i) as *mut f64,
            _mm_castps_pd(f16x2_at(x.add(i * xb))),
        );
    }
}
use std::arch::x86_64::*;

/// Q4 nibbles of a 16-byte run, low nibbles first: elements 0..32 in order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn nibbles(p: *const u8) -> __m256i {
    let v = load128(p);
    let m = _mm_set1_epi8(0x0F);
    let lo = _mm_and_si128(v, m);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(v), m);
    _mm256_set_m128i(hi, lo)
}

/// 0x10 in byte `j` where bit `j` of the little-endian u32 at `p` is set.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn fifth_bits(p: *const u8) -> __m256i {
    let qh = (p as *const u32).read_unaligned();
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(qh as i32),
        _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, //
            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
        ),
    );
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// Generates a `C`-column kernel. `$decode` maps the block pointer to the 32
/// weight quants as bytes (signed if `$signed`); `$xq` is the offset of the
/// activation quants; `$min` adds `m_w * s_x` per block (Q4_1/Q5_1).
macro_rules! block_kernel {
    ($name:ident, $wb:expr, $xb:expr, $xq:expr, signed: $signed:expr, min: $min:expr, |$p:ident| $decode:expr) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(crate) unsafe fn $name<const C: usize, const PRE: bool>(
            nb: usize,
            w: *const u8,
            x: &[*const u8; C],
            xsc: &[*const f32; C],
        ) -> [f32; C] {
            let ones = _mm256_set1_epi16(1);
            // One accumulator per column, blocks in order, as in the
            // reference's `Lanes8`.
            let mut acc = [_mm256_setzero_ps(); C];
            // Lane 1 accumulates `m_w * s_x` (fused) in block order (the
            // reference's scalar minimum term); other lanes are never read.
            let mut summ = [_mm_setzero_ps(); C];
            for i in 0..nb {
                let $p = w.add(i * $wb);
                let wq: __m256i = $decode;
                let aw = if $signed {
                    _mm256_sign_epi8(wq, wq)
                } else {
                    wq
                };
                // [d_w, m_w] (lane 1 is quant bits for formats without a min: unused)
                let wd = f16x2_at($p);
                for c in 0..C {
                    let xp = x[c].add(i * $xb);
                    let xv = load256(xp.add($xq));
                    let xs = if $signed {
                        _mm256_sign_epi8(xv, wq)
                    } else {
                        xv
                    };
                    let p32 = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, xs), ones);
                    // [d_x, s_x]: from `gemm`'s pre-widened table, or widened here
                    let xd = if PRE {
                        _mm_castpd_ps(_mm_load_sd(xsc[c].add(2 * i) as *const f64))
                    } else {
                        f16x2_at(xp)
                    };
                    let d = _mm256_broadcastss_ps(_mm_mul_ps(wd, xd));
                    acc[c] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p32), acc[c]);
                    if $min {
                        summ[c] = _mm_fmadd_ps(wd, xd, summ[c]);
                    }
                }
            }
            let mut out = [0f32; C];
            for c in 0..C {
                let lanes = hsum8(acc[c]);
                out[c] = if $min {
                    lanes + _mm_cvtss_f32(_mm_movehdup_ps(summ[c]))
                } else {
                    lanes
                };
            }
            out
        }
    };
}

block_kernel!(dot_q4_0, 18, 34, 2, signed: true, min: false, |p| {
    _mm256_sub_epi8(nibbles(p.add(2)), _mm256_set1_epi8(8))
});
block_kernel!(dot_q4_1, 20, 36, 4, signed: false, min: true, |p| nibbles(p.add(4)));
block_kernel!(dot_q5_0, 22, 34, 2, signed: true, min: false, |p| {
    let q = _mm256_or_si256(nibbles(p.add(6)), fifth_bits(p.add(2)));
    _mm256_sub_epi8(q, _mm256_set1_epi8(16))
});
block_kernel!(dot_q5_1, 24, 36, 4, signed: false, min: true, |p| {
    _mm256_or_si256(nibbles(p.add(8)), fifth_bits(p.add(4)))
});
block_kernel!(dot_q8_0, 34, 34, 2, signed: true, min: false, |p| load256(p.add(2)));
block_kernel!(dot_q8_1, 36, 36, 4, signed: true, min: false, |p| load256(p.add(4)));
