//! AVX-512 attention kernels for all the query heads that share one KV
//! head (grouped-query attention), used where the CPU has AVX-512 F.
//!
//! Each key or value row is converted from f16 once and used by every head
//! of the group, instead of once per head; and 16-lane registers halve the
//! multiplies and adds. The arithmetic is the scalar reference's, lane for
//! lane: scores keep `dot_f32_f16`'s 32 lanes as two 16-lane registers
//! (lanes 0..16 and 16..32, multiply then add, folded in `Lanes32`'s
//! order), values do `y + w·x` (multiply, then add) per element in row order.

use super::avx512::{bank_pairs, fold8_eight};
use super::hsum8;
use half::f16;
use std::arch::x86_64::*;

/// Heads handled per pass (accumulators: two registers per head for
/// scores, four per head for values).
pub(crate) const MAX_G: usize = 4;

/// `out[h * out_stride + i] = dot(q_h, key_i) * scale` for `G` heads of
/// `hd` floats (`hd % 32 == 0`) stored one after another at `q`, and `nk`
/// key rows `stride` elements apart.
///
/// # Safety
/// avx512f (and avx2/fma/f16c) must be available; `q` must hold `G * hd`
/// floats, `rows` `(nk - 1) * stride + hd` halves (if `nk > 0`), `out`
/// `(G - 1) * out_stride + nk` floats.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
pub(crate) unsafe fn scores<const G: usize>(
    q: *const f32,
    hd: usize,
    rows: *const f16,
    stride: usize,
    scale: f32,
    nk: usize,
    out: *mut f32,
    out_stride: usize,
) {
    debug_assert!(hd.is_multiple_of(32));
    // Eight keys at a time are folded together, with whole-register
    // shuffles: one horizontal sum per (key, head) cost more than the
    // products themselves at SmolLM2's 64-element heads.
    let mut i = 0;
    while i + 8 <= nk {
        let mut z = [[_mm512_setzero_ps(); 4]; G];
        for p in 0..4 {
            let a = lanes::<G>(q, hd, rows.add((i + 2 * p) * stride));
            let b = lanes::<G>(q, hd, rows.add((i + 2 * p + 1) * stride));
            for h in 0..G {
                // (l[k] + l[8+k]) + (l[16+k] + l[24+k]) for both keys.
                z[h][p] = _mm512_add_ps(bank_pairs(a[h][0], b[h][0]), bank_pairs(a[h][1], b[h][1]));
            }
        }
        for (h, z) in z.iter().enumerate() {
            let v = _mm256_mul_ps(fold8_eight(z), _mm256_set1_ps(scale));
            _mm256_storeu_ps(out.add(h * out_stride + i), v);
        }
        i += 8;
    }
    for i in i..nk {
        let acc = lanes::<G>(q, hd, rows.add(i * stride));
        for (h, a) in acc.iter().enumerate() {
            // (l[k] + l[8+k]) + (l[16+k] + l[24+k]), then fold8.
            let v = _mm256_add_ps(halves_sum(a[0]), halves_sum(a[1]));
            *out.add(h * out_stride + i) = hsum8(v) * scale;
        }
    }
}

/// `dot_f32_f16`'s 32 lanes (two registers) of each of the `G` heads
/// against the key row at `key`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn lanes<const G: usize>(q: *const f32, hd: usize, key: *const f16) -> [[__m512; 2]; G] {
    let key = key as *const __m256i;
    let mut acc = [[_mm512_setzero_ps(); 2]; G];
    for ch in 0..hd / 32 {
        let k0 = _mm512_cvtph_ps(_mm256_loadu_si256(key.add(2 * ch)));
        let k1 = _mm512_cvtph_ps(_mm256_loadu_si256(key.add(2 * ch + 1)));
        for (h, a) in acc.iter_mut().enumerate() {
            let qh = q.add(h * hd + 32 * ch);
            a[0] = _mm512_add_ps(a[0], _mm512_mul_ps(_mm512_loadu_ps(qh), k0));
            a[1] = _mm512_add_ps(a[1], _mm512_mul_ps(_mm512_loadu_ps(qh.add(16)), k1));
        }
    }
    acc
}

/// Low eight lanes plus high eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
unsafe fn halves_sum(v: __m512) -> __m256 {
    let lo = _mm512_castps512_ps256(v);
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
    _mm256_add_ps(lo, hi)
}

/// `y_h += sum_i w[h * w_stride + i] · value_i` (multiply, then add, rows
/// in order) for `G` heads of `hd` floats (`hd % 64 == 0`) stored one after
/// another at `y`, and `nk` value rows `stride` elements apart.
///
/// # Safety
/// avx512f (and avx2/fma/f16c) must be available; `y` must hold `G * hd`
/// floats, `w` `(G - 1) * w_stride + nk`, `rows` `(nk - 1) * stride + hd`
/// halves (if `nk > 0`).
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
pub(crate) unsafe fn values<const G: usize>(
    y: *mut f32,
    hd: usize,
    w: *const f32,
    w_stride: usize,
    nk: usize,
    rows: *const f16,
    stride: usize,
) {
    debug_assert!(hd.is_multiple_of(64));
    for base in (0..hd).step_by(64) {
        let mut acc = [[_mm512_setzero_ps(); 4]; G];
        for (h, a) in acc.iter_mut().enumerate() {
            for (j, v) in a.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(y.add(h * hd + base + 16 * j));
            }
        }
        for i in 0..nk {
            let row = rows.add(i * stride + base) as *const __m256i;
            let x: [__m512; 4] =
                std::array::from_fn(|j| _mm512_cvtph_ps(_mm256_loadu_si256(row.add(j))));
            for (h, a) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*w.add(h * w_stride + i));
                for (v, &xj) in a.iter_mut().zip(&x) {
                    *v = _mm512_add_ps(*v, _mm512_mul_ps(av, xj));
                }
            }
        }
        for (h, a) in acc.iter().enumerate() {
            for (j, v) in a.iter().enumerate() {
                _mm512_storeu_ps(y.add(h * hd + base + 16 * j), *v);
            }
        }
    }
}
