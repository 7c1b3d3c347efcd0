//! GEMV (one activation column: decode) for Q4_0, Q5_0, Q8_0 and Q4_1
//! weights.
//!
//! # What each output element computes
//! Exactly what `blocks::dot_*` (and the reference `Lanes8`) compute: per
//! block `i` in order, lane `k` gets `fma(d_w * d_x, p_k, lane)`
//! where `p_k` is the exact integer sum over elements `4k..4k+4`, and the
//! result is `hsum8(lanes)`. Only how the exact integer sums are
//! obtained changes, so the results are the same bits as `vec_dot`'s.
//!
//! # Why it looks like this
//! - One row at a time, in order: the weights are one sequential stream.
//!   Interleaving two or four rows (sharing each activation load) measured
//!   2-2.5x *slower* on Zen 3 (the extra streams stall on memory). Software
//!   prefetch about 4 KiB ahead ([`super::prefetch_row`]) did nothing on
//!   Zen 3 but raised one thread's stream from memory by 40-50 % on Xeon.
//! - Q4_0 / Q5_0 take their quants *unsigned* (`q = w + o`, `o` = 8 or 16)
//!   as the `maddubs` operand against the signed activations:
//!   `sum(q * x) - o * sum(x)` is the exact `sum(w * x)` (pairs stay within
//!   `2 * 31 * 128`). The correction `o * sum(x)` per lane depends only on
//!   the activation, so it is computed once per call and costs one `psubd`
//!   per (row, block) instead of the `sub` and two `psignb` of the plain
//!   kernels.
//! - The nibbles come from one 128-bit broadcast load and a per-lane
//!   variable shift (no `vinserti128`); `d_w` is widened straight from
//!   memory; `d_x` is widened once per call.
//!
//! Activation rows longer than `MAX_NB` blocks use the plain kernels.

use super::blocks::fifth_bits;
use super::{f16x2_at, hsum8, load256, prefetch_row, PREFETCH_BYTES};
use std::arch::x86_64::*;
use std::mem::MaybeUninit;
use std::ops::Range;

pub(crate) const Q4_0: u8 = 0;
pub(crate) const Q5_0: u8 = 2;
pub(crate) const Q8_0: u8 = 4;

/// Longest activation row (in blocks) the per-call tables hold.
pub(crate) const MAX_NB: usize = 512;

/// Q8_0 activation block: `d: f16` then 32 signed quants.
const XB: usize = 34;
const XQ: usize = 2;

/// `(weight block bytes, unsigned offset o as a left shift (o = 1 << s))`.
const fn layout(f: u8) -> (usize, i32) {
    match f {
        Q4_0 => (18, 3),
        Q5_0 => (22, 4),
        _ => (34, 0),
    }
}

/// Q4 nibbles of the 16 bytes at `p`, low nibbles first: elements 0..32 in
/// order (one broadcast load, the upper half shifted right by four).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    let v = _mm256_broadcastsi128_si256(_mm_loadu_si128(p as *const __m128i));
    // Within each 64-bit lane, bits shifted in from the next byte land in
    // the high nibble, which the mask drops.
    let v = _mm256_srlv_epi64(v, _mm256_setr_epi64x(0, 0, 4, 4));
    _mm256_and_si256(v, _mm256_set1_epi8(0x0F))
}

/// The f16 at `p` widened exactly into lane 0 (lanes 1..4: the next six
/// bytes, widened, unused). Eight bytes at `p` must be readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_lo(p: *const u8) -> __m128 {
    let r: __m128;
    // SAFETY: the caller guarantees eight readable bytes at `p`; the asm only
    // loads them (no stores, no stack, flags untouched). Written as asm so
    // that the load stays a memory operand of the conversion (see
    // `f16x2_at` for what LLVM otherwise does with narrow loads).
    unsafe {
        std::arch::asm!(
            "vcvtph2ps {0}, qword ptr [{1}]",
            out(xmm_reg) r,
            in(reg) p,
            options(pure, readonly, nostack, preserves_flags)
        );
    }
    r
}

/// `y[r - rows.start] = vec_dot(row r of w, x)` for `nb`-block rows of
/// format `F` (stride `wb` bytes) and one Q8_0 activation row `x`.
/// `false` (nothing written) if `nb > MAX_NB`.
///
/// # Safety
/// avx2, fma and f16c must be available; `w` must hold `rows.end` rows,
/// `x` one row of `nb` blocks, `y` `rows.len()` floats.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemv<const F: u8>(
    nb: usize,
    w: *const u8,
    wb: usize,
    rows: Range<usize>,
    x: *const u8,
    y: *mut f32,
) -> bool {
    if nb > MAX_NB {
        return false;
    }
    let (_, shift) = layout(F);
    let mut dx = [MaybeUninit::<f32>::uninit(); MAX_NB];
    let mut corr = [MaybeUninit::<__m256i>::uninit(); MAX_NB];
    let ones8 = _mm256_set1_epi8(1);
    let ones16 = _mm256_set1_epi16(1);
    for i in 0..nb {
        let xp = x.add(i * XB);
        dx[i].write(_mm_cvtss_f32(f16_lo(xp)));
        if shift > 0 {
            // `o * (sum of x over elements 4k..4k+4)` in lane k (exact).
            let s = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, load256(xp.add(XQ))), ones16);
            corr[i].write(_mm256_sll_epi32(s, _mm_cvtsi32_si128(shift)));
        }
    }
    let dx = dx.as_ptr() as *const f32;
    let corr = corr.as_ptr() as *const __m256i;
    each_row(w, wb, rows, y, |p| row_dot::<F>(nb, p, x, dx, corr));
    true
}

/// `y[k] = dot(row)` for the rows in order, each prefetched ahead.
#[inline(always)]
unsafe fn each_row(
    w: *const u8,
    wb: usize,
    rows: Range<usize>,
    y: *mut f32,
    dot: impl Fn(*const u8) -> f32,
) {
    for (k, r) in rows.clone().enumerate() {
        prefetch_row(w, wb, r, rows.end, PREFETCH_BYTES);
        *y.add(k) = dot(w.add(r * wb));
    }
}

/// The dot product of the weight row at `p` with the activation row.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn row_dot<const F: u8>(
    nb: usize,
    rp: *const u8,
    x: *const u8,
    dx: *const f32,
    corr: *const __m256i,
) -> f32 {
    let (wbytes, _) = layout(F);
    let ones = _mm256_set1_epi16(1);
    // One accumulator, blocks in order, as in the reference's `Lanes8`.
    let mut acc = _mm256_setzero_ps();
    for i in 0..nb {
        {
            let xv = load256(x.add(i * XB + XQ));
            let p = rp.add(i * wbytes);
            let s = match F {
                Q8_0 => {
                    let q = load256(p.add(2));
                    let a = _mm256_sign_epi8(q, q);
                    let b = _mm256_sign_epi8(xv, q);
                    _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), ones)
                }
                _ => {
                    let q = if F == Q5_0 {
                        _mm256_or_si256(nibbles(p.add(6)), fifth_bits(p.add(2)))
                    } else {
                        nibbles(p.add(2))
                    };
                    let s = _mm256_madd_epi16(_mm256_maddubs_epi16(q, xv), ones);
                    _mm256_sub_epi32(s, *corr.add(i))
                }
            };
            // d_w * d_x, one rounding, as the reference.
            let d = _mm256_broadcastss_ps(_mm_mul_ss(f16_lo(p), _mm_load_ss(dx.add(i))));
            acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), acc);
        }
    }
    hsum8(acc)
}

/// Q8_1 activation block (Q4_1's partner): `d: f16`, `s: f16`, then 32
/// signed quants.
const XB1: usize = 36;
const XQ1: usize = 4;
/// Q4_1 weight block: `d: f16`, `m: f16`, then 16 bytes of nibbles.
const WB1: usize = 20;

/// [`gemv`] for Q4_1 weights against one Q8_1 activation row. Per block,
/// `d_w * d_x` scales the block's exact integer sums into the lanes and
/// `m_w * s_x` is fused into the minimum sum; the result is `hsum8(lanes) + min`,
/// exactly `blocks::dot_q4_1`'s arithmetic. What changes is only how the
/// nibbles are unpacked (one broadcast load) and that `[d_x, s_x]` are
/// widened once per call.
///
/// # Safety
/// As [`gemv`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemv_q4_1(
    nb: usize,
    w: *const u8,
    wb: usize,
    rows: Range<usize>,
    x: *const u8,
    y: *mut f32,
) -> bool {
    if nb > MAX_NB {
        return false;
    }
    let mut ds = [MaybeUninit::<f64>::uninit(); MAX_NB];
    for (i, slot) in ds.iter_mut().enumerate().take(nb) {
        // [d_x, s_x] as the low 64 bits.
        let v = f16x2_at(x.add(i * XB1));
        slot.write(_mm_cvtsd_f64(_mm_castps_pd(v)));
    }
    let ds = ds.as_ptr() as *const f64;
    each_row(w, wb, rows, y, |p| row_dot_q4_1(nb, p, x, ds));
    true
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn row_dot_q4_1(nb: usize, rp: *const u8, x: *const u8, ds: *const f64) -> f32 {
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    // Lane 1 accumulates `m_w * s_x` (fused) in block order.
    let mut summ = _mm_setzero_ps();
    for i in 0..nb {
        let p = rp.add(i * WB1);
        let xv = load256(x.add(i * XB1 + XQ1));
        // Unsigned nibbles against signed activations: exact sums.
        let s = _mm256_madd_epi16(_mm256_maddubs_epi16(nibbles(p.add(4)), xv), ones);
        let wd = f16x2_at(p);
        let xd = _mm_castpd_ps(_mm_load_sd(ds.add(i)));
        let prod = _mm_mul_ps(wd, xd);
        acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(prod), _mm256_cvtepi32_ps(s), acc);
        summ = _mm_fmadd_ps(wd, xd, summ);
    }
    hsum8(acc) + _mm_cvtss_f32(_mm_movehdup_ps(summ))
}
