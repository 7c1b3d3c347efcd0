//! AVX2 dot kernels for F32, F16 and BF16 rows (and the f16 KV-cache dot).
//!
//! 32 float lanes as four 8-lane accumulators; element `e` of each full
//! 32-element chunk goes to lane `e % 32` as a multiply then an add; the
//! ragged tail is added to the same lanes in scalar code and the lanes are
//! folded by the reference's `Lanes32::sum`.

use crate::formats::Lanes32;
use std::arch::x86_64::*;

/// Eight elements of a row, widened to f32.
trait Elem {
    const SIZE: usize;
    unsafe fn load8(p: *const u8) -> __m256;
    unsafe fn get(p: *const u8, i: usize) -> f32;
}

struct F32;
struct F16;
struct BF16;

impl Elem for F32 {
    const SIZE: usize = 4;
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> __m256 {
        _mm256_loadu_ps(p as *const f32)
    }
    #[inline(always)]
    unsafe fn get(p: *const u8, i: usize) -> f32 {
        (p as *const f32).add(i).read_unaligned()
    }
}

impl Elem for F16 {
    const SIZE: usize = 2;
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
    #[inline(always)]
    unsafe fn get(p: *const u8, i: usize) -> f32 {
        half::f16::from_bits((p as *const u16).add(i).read_unaligned()).to_f32()
    }
}

impl Elem for BF16 {
    const SIZE: usize = 2;
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> __m256 {
        let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(h))
    }
    #[inline(always)]
    unsafe fn get(p: *const u8, i: usize) -> f32 {
        f32::from_bits(((p as *const u16).add(i).read_unaligned() as u32) << 16)
    }
}

/// `n` elements of weight type `W` against `C` rows of activation type `X`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot<W: Elem, X: Elem, const C: usize>(
    n: usize,
    w: *const u8,
    x: &[*const u8; C],
) -> [f32; C] {
    let mut acc = [[_mm256_setzero_ps(); 4]; C];
    let full = n / 32 * 32;
    let mut i = 0;
    while i < full {
        for j in 0..4 {
            let wv = W::load8(w.add((i + 8 * j) * W::SIZE));
            for c in 0..C {
                let xv = X::load8(x[c].add((i + 8 * j) * X::SIZE));
                acc[c][j] = _mm256_add_ps(acc[c][j], _mm256_mul_ps(wv, xv));
            }
        }
        i += 32;
    }
    let mut out = [0f32; C];
    for c in 0..C {
        let mut lanes = Lanes32::new();
        for j in 0..4 {
            _mm256_storeu_ps(lanes.l.as_mut_ptr().add(8 * j), acc[c][j]);
        }
        for e in full..n {
            lanes.l[e % 32] += W::get(w, e) * X::get(x[c], e);
        }
        out[c] = lanes.sum();
    }
    out
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_f32<const C: usize>(
    n: usize,
    w: *const u8,
    x: &[*const u8; C],
    _xs: &[*const f32; C],
) -> [f32; C] {
    dot::<F32, F32, C>(n, w, x)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_f16<const C: usize>(
    n: usize,
    w: *const u8,
    x: &[*const u8; C],
    _xs: &[*const f32; C],
) -> [f32; C] {
    dot::<F16, F16, C>(n, w, x)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_bf16<const C: usize>(
    n: usize,
    w: *const u8,
    x: &[*const u8; C],
    _xs: &[*const f32; C],
) -> [f32; C] {
    dot::<BF16, BF16, C>(n, w, x)
}

/// f32 query row against an f16 key row (the attention score).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_f32_f16(n: usize, a: *const f32, b: *const half::f16) -> f32 {
    dot::<F32, F16, 1>(n, a as *const u8, &[b as *const u8])[0]
}
