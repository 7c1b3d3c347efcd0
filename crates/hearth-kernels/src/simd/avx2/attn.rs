//! AVX2 attention scores for all the query heads that share one KV head
//! (grouped-query attention), used where the CPU lacks AVX-512 (`attn512`
//! takes the same job there).
//!
//! Per head, one `dot_f32_f16` per key (the plain path) converts every key
//! row from f16 once per head and folds each (head, key) score with its own
//! horizontal sum; at SmolLM2's 64-element heads those sums and conversions
//! cost more than the products. Here each key row is converted once for up
//! to [`MAX_G`] heads, and eight keys' lanes are folded together with
//! whole-register shuffles.
//!
//! The arithmetic is the scalar reference's, lane for lane: `dot_f32_f16`'s
//! 32 lanes as four eight-lane registers (multiply, then add, from zero),
//! summed `(l[k] + l[8+k]) + (l[16+k] + l[24+k])`, then folded in
//! `fold8`'s order, then multiplied by the scale.

use super::{fold8_eight, hsum8};
use half::f16;
use std::arch::x86_64::*;

/// Heads per pass: four accumulators per head, and with three heads the
/// twelve of them, one converted key register and one product still fit
/// AVX2's sixteen registers.
pub(crate) const MAX_G: usize = 3;

/// `out[h * out_stride + i] = dot(q_h, key_i) * scale` for `G` heads of
/// `hd` floats (`hd % 32 == 0`) stored one after another at `q`, and `nk`
/// key rows `stride` elements apart.
///
/// # Safety
/// avx2, fma and f16c must be available; `q` must hold `G * hd` floats,
/// `rows` `(nk - 1) * stride + hd` halves (if `nk > 0`), `out`
/// `(G - 1) * out_stride + nk` floats.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
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
    let scale_v = _mm256_set1_ps(scale);
    let mut i = 0;
    while i + 8 <= nk {
        // Each head's eight keys, as `(l[k] + l[8+k]) + (l[16+k] + l[24+k])`.
        let mut z = [[_mm256_setzero_ps(); 8]; G];
        for key in 0..8 {
            let s = summed_lanes::<G>(q, hd, rows.add((i + key) * stride));
            for h in 0..G {
                z[h][key] = s[h];
            }
        }
        for (h, z) in z.iter().enumerate() {
            let v = _mm256_mul_ps(fold8_eight(z), scale_v);
            _mm256_storeu_ps(out.add(h * out_stride + i), v);
        }
        i += 8;
    }
    for i in i..nk {
        let s = summed_lanes::<G>(q, hd, rows.add(i * stride));
        for (h, &v) in s.iter().enumerate() {
            *out.add(h * out_stride + i) = hsum8(v) * scale;
        }
    }
}

/// `dot_f32_f16`'s 32 lanes of each of the `G` heads against the key row at
/// `key`, reduced to eight as `(l[k] + l[8+k]) + (l[16+k] + l[24+k])`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn summed_lanes<const G: usize>(q: *const f32, hd: usize, key: *const f16) -> [__m256; G] {
    let key = key as *const __m128i;
    let mut acc = [[_mm256_setzero_ps(); 4]; G];
    for ch in 0..hd / 32 {
        for j in 0..4 {
            let k = _mm256_cvtph_ps(_mm_loadu_si128(key.add(4 * ch + j)));
            for (h, a) in acc.iter_mut().enumerate() {
                let qv = _mm256_loadu_ps(q.add(h * hd + 32 * ch + 8 * j));
                a[j] = _mm256_add_ps(a[j], _mm256_mul_ps(qv, k));
            }
        }
    }
    acc.map(|a| _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])))
}
