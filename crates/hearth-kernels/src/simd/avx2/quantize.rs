//! AVX2 quantisers for the activation formats (Q8_0, Q8_1, Q8_K) and f16
//! rows, byte-identical to the reference.

use super::hsum_i32;
use crate::formats::{put_f16, q8_0, q8_1, q8_k};
use std::arch::x86_64::*;

/// Largest |x| over a multiple of 8 floats (exact; order irrelevant).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn amax(x: &[f32]) -> f32 {
    let sign = _mm256_set1_ps(-0.0);
    let mut m = _mm256_setzero_ps();
    for c in x.chunks_exact(8) {
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(c.as_ptr())));
    }
    let a = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
    let b = _mm_max_ps(a, _mm_movehl_ps(a, a));
    let c = _mm_max_ss(b, _mm_movehdup_ps(b));
    _mm_cvtss_f32(c)
}

/// Round half to even, then to i32 (the reference's `round_ties_even`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn round_even(v: __m256) -> __m256i {
    _mm256_cvttps_epi32(_mm256_round_ps::<
        { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
    >(v))
}

/// Packs four vectors of eight i32 (each in -128..=127) to 32 bytes in order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack32(q: [__m256i; 4], dst: *mut u8) {
    let a = _mm256_packs_epi32(q[0], q[1]);
    let b = _mm256_packs_epi32(q[2], q[3]);
    let bytes = _mm256_packs_epi16(a, b);
    let ordered = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(dst as *mut __m256i, ordered);
}

/// One block of 32: writes the quants at `dst`, returns `(d, sum of quants)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_block(x: &[f32], dst: *mut u8) -> (f32, i32) {
    let am = amax(x);
    let d = am / 127.0;
    let id = if am != 0.0 { 127.0 / am } else { 0.0 };
    let idv = _mm256_set1_ps(id);
    let mut q = [_mm256_setzero_si256(); 4];
    for (k, v) in q.iter_mut().enumerate() {
        *v = round_even(_mm256_mul_ps(_mm256_loadu_ps(x.as_ptr().add(8 * k)), idv));
    }
    pack32(q, dst);
    let s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
    (d, hsum_i32(s))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q8_0(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src
        .chunks_exact(q8_0::QK)
        .zip(dst.chunks_exact_mut(q8_0::BYTES))
    {
        let (d, _) = q8_block(x, b.as_mut_ptr().add(2));
        put_f16(b, 0, d);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q8_1(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src
        .chunks_exact(q8_1::QK)
        .zip(dst.chunks_exact_mut(q8_1::BYTES))
    {
        let (d, sum) = q8_block(x, b.as_mut_ptr().add(4));
        put_f16(b, 0, d);
        put_f16(b, 2, sum as f32 * d);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn q8_k(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src
        .chunks_exact(q8_k::QK)
        .zip(dst.chunks_exact_mut(q8_k::BYTES))
    {
        let am = amax(x);
        if am == 0.0 {
            b.fill(0);
            continue;
        }
        // The reference keeps the first element of largest magnitude.
        let amv = _mm256_set1_ps(am);
        let sign = _mm256_set1_ps(-0.0);
        let mut max = 0f32;
        for (k, c) in x.chunks_exact(8).enumerate() {
            let a = _mm256_andnot_ps(sign, _mm256_loadu_ps(c.as_ptr()));
            let hit = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(a, amv));
            if hit != 0 {
                max = x[8 * k + hit.trailing_zeros() as usize];
                break;
            }
        }
        let iscale = -127.0 / max;
        let isv = _mm256_set1_ps(iscale);
        let cap = _mm256_set1_epi32(127);
        let qs = b.as_mut_ptr().add(q8_k::QS);
        for g in 0..8 {
            let mut q = [_mm256_setzero_si256(); 4];
            for (k, v) in q.iter_mut().enumerate() {
                let xv = _mm256_loadu_ps(x.as_ptr().add(32 * g + 8 * k));
                *v = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(xv, isv)), cap);
            }
            pack32(q, qs.add(32 * g));
        }
        q8_k::write_bsums(b);
        b[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f16(src: &[f32], dst: &mut [u8]) {
    let n = src.len();
    let full = n / 8 * 8;
    for i in (0..full).step_by(8) {
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(src.as_ptr().add(i)));
        _mm_storeu_si128(dst.as_mut_ptr().add(2 * i) as *mut __m128i, h);
    }
    for i in full..n {
        dst[2 * i..2 * i + 2].copy_from_slice(&half::f16::from_f32(src[i]).to_bits().to_le_bytes());
    }
}
