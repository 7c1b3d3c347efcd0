//! x86_64 kernels using AVX2, FMA and F16C.
//!
//! Every kernel reproduces the scalar reference in `crate::formats` /
//! `crate::ops::scalar` bit for bit: the same integer sums (exact), the same
//! float lanes, the same multiplies and adds in the same order (FMA exactly
//! where the reference uses `mul_add`, separate multiply and add elsewhere).
//! Keep it that way: the dispatch tests compare with `==`.
//!
//! Dot kernels take `C` activation columns at once (`C` = 1..=4) and unpack
//! each weight block once for all of them; each column's arithmetic is the
//! same whatever `C` is, which is what makes `gemm` bit-identical to
//! `vec_dot`.
//!
//! All functions here are `unsafe`: callers must have checked that the CPU
//! supports avx2, fma and f16c (the dispatcher in `crate::simd` does), and
//! the pointer-taking kernels additionally need their operands in bounds
//! (the public wrappers check slice lengths first).

/// `Some(module::gemm::<F>)` for the 32-element format `t` (`F` its
/// `gemm_tiles` code), `None` for the others.
macro_rules! per_format {
    ($t:expr, $m:ident) => {
        match $t {
            GgmlType::Q4_0 => Some($m::gemm::<{ gemm_tiles::Q4_0 }>),
            GgmlType::Q4_1 => Some($m::gemm::<{ gemm_tiles::Q4_1 }>),
            GgmlType::Q5_0 => Some($m::gemm::<{ gemm_tiles::Q5_0 }>),
            GgmlType::Q5_1 => Some($m::gemm::<{ gemm_tiles::Q5_1 }>),
            GgmlType::Q8_0 => Some($m::gemm::<{ gemm_tiles::Q8_0 }>),
            GgmlType::Q8_1 => Some($m::gemm::<{ gemm_tiles::Q8_1 }>),
            _ => None,
        }
    };
}

mod blocks;
mod few_columns;
mod float;
mod gemm_tiles;
mod gemv;
mod kquants;
pub(crate) mod ops;
mod quantize;

use crate::{row_bytes, vec_dot_type, GgmlType, Rows};
use std::arch::x86_64::*;
use std::ops::Range;

/// A dot kernel over `nb` blocks of one weight row and `C` activation rows;
/// the last argument is the pre-widened activation scale table per column
/// (used by the `pre` variants of the 32-element formats, ignored otherwise).
type DotFn<const C: usize> =
    unsafe fn(usize, *const u8, &[*const u8; C], &[*const f32; C]) -> [f32; C];

/// A GEMV kernel (`gemv::gemv`): `false` if it does not take the shape.
type GemvFn = unsafe fn(usize, *const u8, usize, Range<usize>, *const u8, *mut f32) -> bool;

/// A tiled prefill GEMM (`gemm_tiles::gemm`): whole groups of four columns.
type TiledFn = unsafe fn(usize, &[u8], Range<usize>, &[u8], usize, *mut f32, usize);

/// One format's kernels, instantiated for 1..=4 columns; `pre` holds the
/// variants that read activation scales from a table `gemm` fills.
pub(crate) struct Kernel {
    qk: usize,
    d1: DotFn<1>,
    d2: DotFn<2>,
    d3: DotFn<3>,
    d4: DotFn<4>,
    pre: Option<(DotFn<1>, DotFn<2>, DotFn<3>, DotFn<4>)>,
}

macro_rules! kernel {
    ($qk:expr, $m:ident::$f:ident) => {
        Kernel {
            qk: $qk,
            d1: $m::$f::<1>,
            d2: $m::$f::<2>,
            d3: $m::$f::<3>,
            d4: $m::$f::<4>,
            pre: None,
        }
    };
    ($m:ident::$f:ident, pre) => {
        Kernel {
            qk: 32,
            d1: $m::$f::<1, false>,
            d2: $m::$f::<2, false>,
            d3: $m::$f::<3, false>,
            d4: $m::$f::<4, false>,
            pre: Some((
                $m::$f::<1, true>,
                $m::$f::<2, true>,
                $m::$f::<3, true>,
                $m::$f::<4, true>,
            )),
        }
    };
}

static Q4_0: Kernel = kernel!(blocks::dot_q4_0, pre);
static Q4_1: Kernel = kernel!(blocks::dot_q4_1, pre);
static Q5_0: Kernel = kernel!(blocks::dot_q5_0, pre);
static Q5_1: Kernel = kernel!(blocks::dot_q5_1, pre);
static Q8_0: Kernel = kernel!(blocks::dot_q8_0, pre);
static Q8_1: Kernel = kernel!(blocks::dot_q8_1, pre);
static Q2_K: Kernel = kernel!(256, kquants::dot_q2_k);
static Q3_K: Kernel = kernel!(256, kquants::dot_q3_k);
static Q4_K: Kernel = kernel!(256, kquants::dot_q4_k);
static Q4_K_QUAD: Kernel = kernel!(256, kquants::dot_q4_k_quad);
static Q6_K_WIDE: Kernel = kernel!(256, kquants::dot_q6_k_wide);
static Q5_K: Kernel = kernel!(256, kquants::dot_q5_k);
static Q6_K: Kernel = kernel!(256, kquants::dot_q6_k);
static F32: Kernel = kernel!(1, float::dot_f32);
static F16: Kernel = kernel!(1, float::dot_f16);
static BF16: Kernel = kernel!(1, float::dot_bf16);

fn kernel_for(t: GgmlType, form: Rows) -> Option<&'static Kernel> {
    Some(match t {
        GgmlType::Q4_K if form.quad => &Q4_K_QUAD,
        GgmlType::Q6_K if form.wide => &Q6_K_WIDE,
        GgmlType::Q4_0 => &Q4_0,
        GgmlType::Q4_1 => &Q4_1,
        GgmlType::Q5_0 => &Q5_0,
        GgmlType::Q5_1 => &Q5_1,
        GgmlType::Q8_0 => &Q8_0,
        GgmlType::Q8_1 => &Q8_1,
        GgmlType::Q2_K => &Q2_K,
        GgmlType::Q3_K => &Q3_K,
        GgmlType::Q4_K => &Q4_K,
        GgmlType::Q5_K => &Q5_K,
        GgmlType::Q6_K => &Q6_K,
        GgmlType::F32 => &F32,
        GgmlType::F16 => &F16,
        GgmlType::BF16 => &BF16,
        GgmlType::Q8_K => return None,
    })
}

/// Quantises with a SIMD kernel if there is one for `t`; `false` means the
/// caller should use the reference. `dst` must be exactly the row's size.
pub(crate) unsafe fn quantize_row(t: GgmlType, src: &[f32], dst: &mut [u8]) -> bool {
    match t {
        GgmlType::Q8_0 => quantize::q8_0(src, dst),
        GgmlType::Q8_1 => quantize::q8_1(src, dst),
        GgmlType::Q8_K => quantize::q8_k(src, dst),
        GgmlType::F16 => quantize::f16(src, dst),
        _ => return false,
    }
    true
}

/// `None` if there is no SIMD kernel for `t`. Operand sizes must have been
/// checked by the caller (`reference::check_dot`).
pub(crate) unsafe fn vec_dot(t: GgmlType, n: usize, w: &[u8], x: &[u8]) -> Option<f32> {
    vec_dot_rows(t, n, w, x, Rows::SINGLE)
}

/// [`vec_dot`] in the float order of `form`.
pub(crate) unsafe fn vec_dot_rows(
    t: GgmlType,
    n: usize,
    w: &[u8],
    x: &[u8],
    form: Rows,
) -> Option<f32> {
    let k = kernel_for(t, form)?;
    debug_assert!(w.len() >= row_bytes(t, n) && x.len() >= row_bytes(vec_dot_type(t), n));
    Some((k.d1)(n / k.qk, w.as_ptr(), &[x.as_ptr()], &[std::ptr::null()])[0])
}

/// `false` if there is no SIMD kernel for `t`. Operand sizes must have been
/// checked by the caller (`reference::check_gemm`); column `c` of the
/// result goes to `y[c * ldy..][..rows.len()]`; `form` picks the K-quants'
/// float order ([`Rows`]).
///
/// The 32-element formats take three to eight columns (concurrent decodes)
/// through `few_columns` (each weight block decoded once in registers for
/// all of them), and past that whole groups of four columns through
/// `gemm_tiles` (rows unpacked once per tile, see there); the remaining
/// columns, decode (`ncols < 3`) and the other formats walk rows in tiles
/// small enough to stay in L1/L2 while each group of up to four activation
/// columns sweeps over them (K-quants do their per-super-block float update
/// for four columns in one vector). Every (row, column) result comes from
/// the same per-column arithmetic as `vec_dot`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm(
    t: GgmlType,
    n: usize,
    w: &[u8],
    rows: Range<usize>,
    x: &[u8],
    ncols: usize,
    y: *mut f32,
    ldy: usize,
    form: Rows,
) -> bool {
    let Some(k) = kernel_for(t, form) else {
        return false;
    };
    let wb = row_bytes(t, n);
    let xb = row_bytes(vec_dot_type(t), n);
    let nb = n / k.qk;
    debug_assert!(w.len() >= rows.end * wb && x.len() >= ncols * xb);
    // Decode: the multi-row GEMV kernels.
    if ncols == 1 {
        let f: Option<GemvFn> = match t {
            GgmlType::Q4_0 => Some(gemv::gemv::<{ gemv::Q4_0 }>),
            GgmlType::Q5_0 => Some(gemv::gemv::<{ gemv::Q5_0 }>),
            GgmlType::Q8_0 => Some(gemv::gemv::<{ gemv::Q8_0 }>),
            GgmlType::Q4_1 => Some(gemv::gemv_q4_1),
            _ => None,
        };
        // SAFETY: our caller guarantees avx2/fma/f16c and checked the
        // operand sizes (`reference::check_gemm`): `w` holds `rows.end`
        // rows of `wb` bytes, `x` one activation row, `y` `rows.len()` floats.
        if f.is_some_and(|f| f(nb, w.as_ptr(), wb, rows.clone(), x.as_ptr(), y)) {
            return true;
        }
    }
    // Prefill: the tiled kernels take whole groups of four columns; the
    // rest (and decode, ncols < MIN_TILED) go through the per-row kernels.
    const MIN_TILED: usize = 4;
    // Batched decode: each weight block decoded once for every column.
    if (few_columns::MIN_COLS..=few_columns::MAX_COLS).contains(&ncols) {
        let few: Option<TiledFn> = per_format!(t, few_columns);
        if let Some(f) = few {
            // SAFETY: our caller guarantees avx2/fma/f16c and checked the
            // operand sizes (`reference::check_gemm`); this kernel takes
            // every column.
            f(nb, w, rows, x, ncols, y, ldy);
            return true;
        }
    }
    let mut c_start = 0;
    if ncols >= MIN_TILED {
        let tiled: Option<TiledFn> = per_format!(t, gemm_tiles);
        if let Some(f) = tiled {
            // SAFETY: our caller guarantees avx2/fma/f16c and checked the
            // operand sizes (`reference::check_gemm`), which is what the
            // tiled kernel requires.
            f(nb, w, rows.clone(), x, ncols, y, ldy);
            c_start = ncols - ncols % 4;
        }
    }
    let tile = (24 * 1024 / wb.max(1)).clamp(1, 64);
    // Pre-widened activation scales for the current column group (16 KiB of
    // stack; rows longer than MAX_PRE blocks use the plain kernels).
    const MAX_PRE: usize = 512;
    let mut table = [[0f32; 2 * MAX_PRE]; 4];
    let pre = k.pre.filter(|_| nb <= MAX_PRE);
    let (wp, xp, yp) = (w.as_ptr(), x.as_ptr(), y);
    let mut r0 = rows.start;
    while r0 < rows.end {
        let r1 = (r0 + tile).min(rows.end);
        let mut c0 = c_start;
        while c0 < ncols {
            let cn = (ncols - c0).min(4);
            let col = |c: usize| xp.add((c0 + c) * xb);
            if pre.is_some() {
                for (c, t) in table.iter_mut().enumerate().take(cn) {
                    blocks::widen_scales(nb, col(c), xb / nb.max(1), t.as_mut_ptr());
                }
            }
            let s = |c: usize| table[c].as_ptr();
            for r in r0..r1 {
                if cn == 1 {
                    prefetch_row(wp, wb, r, rows.end, PREFETCH_BYTES);
                }
                let row = wp.add(r * wb);
                let out = yp.add(c0 * ldy + (r - rows.start));
                match (cn, pre) {
                    (4, Some(p)) => store(
                        out,
                        ldy,
                        (p.3)(
                            nb,
                            row,
                            &[col(0), col(1), col(2), col(3)],
                            &[s(0), s(1), s(2), s(3)],
                        ),
                    ),
                    (3, Some(p)) => store(
                        out,
                        ldy,
                        (p.2)(nb, row, &[col(0), col(1), col(2)], &[s(0), s(1), s(2)]),
                    ),
                    (2, Some(p)) => {
                        store(out, ldy, (p.1)(nb, row, &[col(0), col(1)], &[s(0), s(1)]))
                    }
                    (_, Some(p)) => store(out, ldy, (p.0)(nb, row, &[col(0)], &[s(0)])),
                    (4, None) => store(
                        out,
                        ldy,
                        (k.d4)(nb, row, &[col(0), col(1), col(2), col(3)], &[s(0); 4]),
                    ),
                    (3, None) => store(
                        out,
                        ldy,
                        (k.d3)(nb, row, &[col(0), col(1), col(2)], &[s(0); 3]),
                    ),
                    (2, None) => store(out, ldy, (k.d2)(nb, row, &[col(0), col(1)], &[s(0); 2])),
                    (_, None) => store(out, ldy, (k.d1)(nb, row, &[col(0)], &[s(0)])),
                }
            }
            c0 += cn;
        }
        r0 = r1;
    }
    true
}

/// Writes one row's results for `C` consecutive columns (stride `ldy`).
#[inline(always)]
unsafe fn store<const C: usize>(out: *mut f32, ldy: usize, v: [f32; C]) {
    for (c, &r) in v.iter().enumerate() {
        *out.add(c * ldy) = r;
    }
}

/// Folds eight lanes in `formats::fold8`'s order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn hsum8(v: __m256) -> f32 {
    let a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let b = _mm_add_ps(a, _mm_movehl_ps(a, a));
    let c = _mm_add_ss(b, _mm_movehdup_ps(b));
    _mm_cvtss_f32(c)
}

/// `fold8` of each of eight registers, result `k` in lane `k`: the same
/// additions in the same pairs as [`hsum8`] on each, four registers per
/// shuffle (attention's eight keys, batched decode's eight columns).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn fold8_eight(z: &[__m256; 8]) -> __m256 {
    // Lanes `l[k] + l[k + 4]` of two keys side by side: [a(z0) | a(z1)].
    let halves = |a: __m256, b: __m256| {
        _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(a, b),
            _mm256_permute2f128_ps::<0x31>(a, b),
        )
    };
    let (t01, t23) = (halves(z[0], z[1]), halves(z[2], z[3]));
    let (t45, t67) = (halves(z[4], z[5]), halves(z[6], z[7]));
    // `a[0] + a[2]`, `a[1] + a[3]` per key: low half keys 0, 2 (4, 6), high
    // half keys 1, 3 (5, 7).
    let pairs = |a: __m256, b: __m256| {
        _mm256_add_ps(
            _mm256_shuffle_ps::<0x44>(a, b),
            _mm256_shuffle_ps::<0xEE>(a, b),
        )
    };
    let (s0, s1) = (pairs(t01, t23), pairs(t45, t67));
    // `b0 + b1`: lanes hold keys 0, 2, 4, 6, 1, 3, 5, 7.
    let r = _mm256_add_ps(
        _mm256_shuffle_ps::<0x88>(s0, s1),
        _mm256_shuffle_ps::<0xDD>(s0, s1),
    );
    _mm256_permutevar8x32_ps(r, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// Sum of eight i32 lanes (exact; order irrelevant).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn hsum_i32(v: __m256i) -> i32 {
    let a = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let b = _mm_add_epi32(a, _mm_unpackhi_epi64(a, a));
    let c = _mm_add_epi32(b, _mm_shuffle_epi32::<0b01>(b));
    _mm_cvtsi128_si32(c)
}

/// The two f16 at `p` and `p + 2` (unaligned), widened exactly, in lanes 0
/// and 1. How the bits get into the vector register matters: LLVM likes to
/// narrow the load to 16 bits and merge it into some live register
/// (`vpinsrw`), which chained each block of a dot product to the previous
/// one's accumulator (3x slower). A 32-bit load it cannot see through, then a
/// full-register `vmovd`, avoids that.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f16x2_at(p: *const u8) -> __m128 {
    let bits: u32;
    // SAFETY: the caller guarantees four readable bytes at `p`; the asm only
    // loads them (no stores, no stack, flags untouched).
    unsafe {
        std::arch::asm!(
            "mov {0:e}, dword ptr [{1}]",
            out(reg) bits,
            in(reg) p,
            options(pure, readonly, nostack, preserves_flags)
        );
    }
    _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32))
}

/// The f16 at `p`; the two bytes *before* `p` must be readable (for scales
/// stored last in their block).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f16_at_end(p: *const u8) -> f32 {
    _mm_cvtss_f32(_mm_movehdup_ps(f16x2_at(p.sub(2))))
}

/// The f32 at `p` (unaligned).
#[inline(always)]
pub(crate) unsafe fn f32_at(p: *const u8) -> f32 {
    (p as *const f32).read_unaligned()
}

/// Prefetches, into L1, the weight row that lies about `ahead_bytes`
/// ahead of row `r` (rows of `wb` bytes from `w`, up to `end`). Decode
/// streams every weight once from memory; on the Xeon hosts measured, one
/// thread's hardware prefetch alone reached 5.3-6.4 GB/s on Gemma 3's
/// 178 MB output matrix and this 8-9.9 GB/s (on Zen 3 it made no
/// difference either way).
///
/// How far ahead depends on how long a row takes: [`PREFETCH_BYTES`] for
/// one column, which streams as fast as memory allows, and
/// [`FEW_COLUMNS_PREFETCH_BYTES`] for batched decode, which spends about
/// three times as long on each row.
#[inline(always)]
pub(crate) unsafe fn prefetch_row(
    w: *const u8,
    wb: usize,
    r: usize,
    end: usize,
    ahead_bytes: usize,
) {
    let ahead = ahead_bytes.div_ceil(wb.max(1));
    if r + ahead < end {
        // SAFETY: row `r + ahead` is below `end`, so inside the matrix at `w`.
        crate::prefetch(std::slice::from_raw_parts(w.add((r + ahead) * wb), wb));
    }
}

/// How far ahead one-column decode prefetches (see [`prefetch_row`]).
pub(crate) const PREFETCH_BYTES: usize = 4096;

/// How far ahead batched decode prefetches (see [`prefetch_row`]). Four
/// KiB ahead, the lines arrived too early for a kernel this slow per byte:
/// SmolLM2's eight streams (2 threads) went from 583-602 to 627-648 t/s
/// at 1 KiB. One column is slower at 1 KiB (193-204 -> 187 t/s), so it
/// keeps its own distance.
pub(crate) const FEW_COLUMNS_PREFETCH_BYTES: usize = 1024;

#[inline(always)]
pub(crate) unsafe fn load256(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

#[inline(always)]
pub(crate) unsafe fn load128(p: *const u8) -> __m128i {
    _mm_loadu_si128(p as *const __m128i)
}
