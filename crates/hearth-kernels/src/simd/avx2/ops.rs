//! AVX2 element-wise ops, bit-identical to `crate::ops::scalar` (same exp
//! polynomial, same lane structure for the reductions, separate multiplies
//! and adds).

use crate::formats::fold8;
use crate::ops::scalar::{self as sc, EXP_C, EXP_HI, EXP_LO, GELU_A, GELU_K, LN2_HI, LN2_LO};
use half::f16;
use std::arch::x86_64::*;

/// Rotation is a few dozen pairs per head with strided access; the scalar
/// code is already cheap next to the matmuls, so AVX2 reuses it.
pub(crate) unsafe fn rope_apply(x: &mut [f32], cos_sin: &[f32], neox: bool) {
    sc::rope_apply(x, cos_sin, neox)
}

/// Eight lanes of `scalar::expf`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exp8(x: __m256) -> __m256 {
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(LN2_HI)));
    let r = _mm256_sub_ps(r, _mm256_mul_ps(n, _mm256_set1_ps(LN2_LO)));
    let mut p = _mm256_set1_ps(EXP_C[4]);
    for c in [EXP_C[3], EXP_C[2], EXP_C[1], EXP_C[0], 1.0, 1.0] {
        p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(c));
    }
    let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(126),
    ));
    let v = _mm256_mul_ps(
        _mm256_mul_ps(p, _mm256_castsi256_ps(bits)),
        _mm256_set1_ps(2.0),
    );
    let v = _mm256_blendv_ps(
        v,
        _mm256_setzero_ps(),
        _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(EXP_LO)),
    );
    _mm256_blendv_ps(
        v,
        _mm256_set1_ps(f32::INFINITY),
        _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(EXP_HI)),
    )
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn silu8(x: __m256) -> __m256 {
    let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
    _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gelu8(x: __m256) -> __m256 {
    let inner = _mm256_add_ps(
        _mm256_mul_ps(_mm256_set1_ps(GELU_A), _mm256_mul_ps(x, x)),
        _mm256_set1_ps(1.0),
    );
    let z = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(GELU_K), x), inner);
    _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), exp8(z)))
}

/// Applies `f` to `y` (and `x`) in chunks of eight, `tail` to the rest.
macro_rules! map2 {
    ($y:expr, $x:expr, |$a:ident, $b:ident| $v:expr, |$s:ident, $t:ident| $tail:expr) => {{
        let (y, x) = ($y, $x);
        assert_eq!(y.len(), x.len(), "length mismatch");
        let full = y.len() / 8 * 8;
        for i in (0..full).step_by(8) {
            let $a = _mm256_loadu_ps(y.as_ptr().add(i));
            let $b = _mm256_loadu_ps(x.as_ptr().add(i));
            _mm256_storeu_ps(y.as_mut_ptr().add(i), $v);
        }
        for i in full..y.len() {
            let ($s, $t) = (y[i], x[i]);
            y[i] = $tail;
        }
    }};
}

/// `1 / sqrt(mean(x^2) + eps)` with `scalar::rms_scale`'s f64 lanes.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rms_scale(x: &[f32], eps: f32) -> f32 {
    let full = x.len() / 8 * 8;
    let (mut lo, mut hi) = (_mm256_setzero_pd(), _mm256_setzero_pd());
    for i in (0..full).step_by(8) {
        let v = _mm256_loadu_ps(x.as_ptr().add(i));
        let sq = _mm256_mul_ps(v, v);
        lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(sq)));
        hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(sq)));
    }
    let mut l = [0f64; 8];
    _mm256_storeu_pd(l.as_mut_ptr(), lo);
    _mm256_storeu_pd(l.as_mut_ptr().add(4), hi);
    for (i, &v) in x.iter().enumerate().skip(full) {
        l[i % 8] += (v * v) as f64;
    }
    let a = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
    let sum = (a[0] + a[2]) + (a[1] + a[3]);
    let mean = (sum / x.len() as f64) as f32;
    1.0 / (mean + eps).sqrt()
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    assert!(
        w.len() == x.len() && out.len() == x.len(),
        "rms_norm: length mismatch"
    );
    let s = rms_scale(x, eps);
    let sv = _mm256_set1_ps(s);
    let full = x.len() / 8 * 8;
    for i in (0..full).step_by(8) {
        let v = _mm256_mul_ps(_mm256_loadu_ps(x.as_ptr().add(i)), sv);
        _mm256_storeu_ps(
            out.as_mut_ptr().add(i),
            _mm256_mul_ps(v, _mm256_loadu_ps(w.as_ptr().add(i))),
        );
    }
    for i in full..x.len() {
        out[i] = (x[i] * s) * w[i];
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn rms_norm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    let s = rms_scale(x, eps);
    let sv = _mm256_set1_ps(s);
    map2!(
        x,
        w,
        |a, b| _mm256_mul_ps(_mm256_mul_ps(a, sv), b),
        |a, b| (a * s) * b
    );
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn softmax_inplace(x: &mut [f32]) {
    let full = x.len() / 8 * 8;
    let mut mv = _mm256_set1_ps(f32::NEG_INFINITY);
    for i in (0..full).step_by(8) {
        mv = _mm256_max_ps(mv, _mm256_loadu_ps(x.as_ptr().add(i)));
    }
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), mv);
    let max = lanes
        .iter()
        .chain(&x[full..])
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    if max == f32::NEG_INFINITY {
        x.fill(0.0);
        return;
    }
    let maxv = _mm256_set1_ps(max);
    let mut acc = _mm256_setzero_ps();
    for i in (0..full).step_by(8) {
        let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x.as_ptr().add(i)), maxv));
        _mm256_storeu_ps(x.as_mut_ptr().add(i), e);
        acc = _mm256_add_ps(acc, e);
    }
    _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
    for i in full..x.len() {
        x[i] = sc::expf(x[i] - max);
        lanes[i % 8] += x[i];
    }
    let inv = 1.0 / fold8(&lanes);
    scale_inplace(x, inv);
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn silu_mul_inplace(gate: &mut [f32], up: &[f32]) {
    map2!(
        gate,
        up,
        |g, u| _mm256_mul_ps(silu8(g), u),
        |g, u| sc::silu(g) * u
    );
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gelu_tanh_mul_inplace(gate: &mut [f32], up: &[f32]) {
    map2!(
        gate,
        up,
        |g, u| _mm256_mul_ps(gelu8(g), u),
        |g, u| sc::gelu_tanh(g) * u
    );
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn add_inplace(y: &mut [f32], x: &[f32]) {
    map2!(y, x, |a, b| _mm256_add_ps(a, b), |a, b| a + b);
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn mul_inplace(y: &mut [f32], x: &[f32]) {
    map2!(y, x, |a, b| _mm256_mul_ps(a, b), |a, b| a * b);
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn scale_inplace(y: &mut [f32], s: f32) {
    let sv = _mm256_set1_ps(s);
    let full = y.len() / 8 * 8;
    for i in (0..full).step_by(8) {
        let v = _mm256_loadu_ps(y.as_ptr().add(i));
        _mm256_storeu_ps(y.as_mut_ptr().add(i), _mm256_mul_ps(v, sv));
    }
    for v in &mut y[full..] {
        *v *= s;
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_f32_f16(a: &[f32], b: &[f16]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_f32_f16: length mismatch");
    super::float::dot_f32_f16(a.len(), a.as_ptr(), b.as_ptr())
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn axpy_f16(y: &mut [f32], a: f32, x: &[f16]) {
    assert_eq!(y.len(), x.len(), "axpy_f16: length mismatch");
    let av = _mm256_set1_ps(a);
    let full = y.len() / 8 * 8;
    for i in (0..full).step_by(8) {
        let xv = _mm256_cvtph_ps(_mm_loadu_si128(x.as_ptr().add(i) as *const __m128i));
        let yv = _mm256_loadu_ps(y.as_ptr().add(i));
        _mm256_storeu_ps(
            y.as_mut_ptr().add(i),
            _mm256_add_ps(yv, _mm256_mul_ps(av, xv)),
        );
    }
    for i in full..y.len() {
        y[i] += a * x[i].to_f32();
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn attn_scores_f16(
    q: &[f32],
    rows: &[f16],
    stride: usize,
    scale: f32,
    out: &mut [f32],
) {
    let n = q.len();
    if let Some(last) = out.len().checked_sub(1) {
        assert!(
            last * stride + n <= rows.len(),
            "attn_scores_f16: rows too short"
        );
    }
    for (i, o) in out.iter_mut().enumerate() {
        // Same kernel as `dot_f32_f16`, minus a dispatch per key.
        *o = super::float::dot_f32_f16(n, q.as_ptr(), rows.as_ptr().add(i * stride)) * scale;
    }
}

/// Keeps a 64-float stretch of `y` in eight registers across all value rows,
/// instead of loading and storing it once per row; each element still gets
/// `y + a·x` (multiply, then add) once per row in row order, as `axpy_f16`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn attn_values_f16(y: &mut [f32], w: &[f32], rows: &[f16], stride: usize) {
    let n = y.len();
    if let Some(last) = w.len().checked_sub(1) {
        assert!(
            last * stride + n <= rows.len(),
            "attn_values_f16: rows too short"
        );
    }
    let full = n / 64 * 64;
    for base in (0..full).step_by(64) {
        let mut acc = [_mm256_setzero_ps(); 8];
        for (j, a) in acc.iter_mut().enumerate() {
            *a = _mm256_loadu_ps(y.as_ptr().add(base + 8 * j));
        }
        for (i, &wi) in w.iter().enumerate() {
            let av = _mm256_set1_ps(wi);
            let row = rows.as_ptr().add(i * stride + base);
            for (j, a) in acc.iter_mut().enumerate() {
                let xv = _mm256_cvtph_ps(_mm_loadu_si128(row.add(8 * j) as *const __m128i));
                *a = _mm256_add_ps(*a, _mm256_mul_ps(av, xv));
            }
        }
        for (j, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(y.as_mut_ptr().add(base + 8 * j), *a);
        }
    }
    if full < n {
        for (i, &wi) in w.iter().enumerate() {
            axpy_f16(&mut y[full..], wi, &rows[i * stride + full..][..n - full]);
        }
    }
}

/// Checks the shapes of a grouped scores or values call; returns
/// (floats per head, keys).
fn group_shape(what: &str, heads: usize, per_head: usize, keys: usize) -> (usize, usize) {
    assert!(heads > 0, "{what}: no heads");
    assert!(
        per_head.is_multiple_of(heads) && keys.is_multiple_of(heads),
        "{what}: lengths are not whole heads"
    );
    (per_head / heads, keys / heads)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn attn_scores_f16_heads(
    q: &[f32],
    heads: usize,
    rows: &[f16],
    stride: usize,
    scale: f32,
    out: &mut [f32],
) {
    scores_heads(q, heads, rows, stride, scale, out, true)
}

/// [`attn_scores_f16_heads`]; `wide: false` keeps to the AVX2 kernel where
/// the AVX-512 one could run (tests use it so both stay covered).
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn scores_heads(
    q: &[f32],
    heads: usize,
    rows: &[f16],
    stride: usize,
    scale: f32,
    out: &mut [f32],
    wide: bool,
) {
    let (hd, nk) = group_shape("attn_scores_f16_heads", heads, q.len(), out.len());
    if hd % 32 != 0 {
        for (qh, oh) in q
            .chunks_exact(hd.max(1))
            .zip(out.chunks_exact_mut(nk.max(1)))
        {
            attn_scores_f16(qh, rows, stride, scale, oh);
        }
        return;
    }
    if nk == 0 {
        return;
    }
    assert!(
        (nk - 1) * stride + hd <= rows.len(),
        "attn_scores_f16_heads: rows too short"
    );
    let wide = wide && super::avx512::available();
    let mut h = 0;
    while h < heads {
        let left = heads - h;
        let g = if wide {
            left.min(super::attn512::MAX_G)
        } else if left == 4 {
            // Two passes of two rather than three and one.
            2
        } else {
            left.min(super::attn::MAX_G)
        };
        let (qp, op) = (q.as_ptr().add(h * hd), out.as_mut_ptr().add(h * nk));
        // SAFETY: heads `h..h + g` of `q` and `out` are in bounds and the
        // rows were checked just above; `available()` checked the AVX-512
        // features for the wide kernels (our caller guarantees avx2/fma/f16c).
        let r = rows.as_ptr();
        match (wide, g) {
            (true, 4) => super::attn512::scores::<4>(qp, hd, r, stride, scale, nk, op, nk),
            (true, 3) => super::attn512::scores::<3>(qp, hd, r, stride, scale, nk, op, nk),
            (true, 2) => super::attn512::scores::<2>(qp, hd, r, stride, scale, nk, op, nk),
            (true, _) => super::attn512::scores::<1>(qp, hd, r, stride, scale, nk, op, nk),
            (false, 3) => super::attn::scores::<3>(qp, hd, r, stride, scale, nk, op, nk),
            (false, 2) => super::attn::scores::<2>(qp, hd, r, stride, scale, nk, op, nk),
            (false, _) => super::attn::scores::<1>(qp, hd, r, stride, scale, nk, op, nk),
        }
        h += g;
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn attn_values_f16_heads(
    y: &mut [f32],
    heads: usize,
    w: &[f32],
    rows: &[f16],
    stride: usize,
) {
    let (hd, nk) = group_shape("attn_values_f16_heads", heads, y.len(), w.len());
    if hd % 64 != 0 || !super::avx512::available() {
        for (yh, wh) in y.chunks_exact_mut(hd.max(1)).zip(w.chunks_exact(nk.max(1))) {
            attn_values_f16(yh, wh, rows, stride);
        }
        return;
    }
    if nk == 0 {
        return;
    }
    assert!(
        (nk - 1) * stride + hd <= rows.len(),
        "attn_values_f16_heads: rows too short"
    );
    let mut h = 0;
    while h < heads {
        let g = (heads - h).min(super::attn512::MAX_G);
        let (yp, wp) = (y.as_mut_ptr().add(h * hd), w.as_ptr().add(h * nk));
        let r = rows.as_ptr();
        // SAFETY: as in `attn_scores_f16_heads`.
        match g {
            4 => super::attn512::values::<4>(yp, hd, wp, nk, nk, r, stride),
            3 => super::attn512::values::<3>(yp, hd, wp, nk, nk, r, stride),
            2 => super::attn512::values::<2>(yp, hd, wp, nk, nk, r, stride),
            _ => super::attn512::values::<1>(yp, hd, wp, nk, nk, r, stride),
        }
        h += g;
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn f32_to_f16_row(src: &[f32], dst: &mut [f16]) {
    assert!(
        dst.len() >= src.len(),
        "f32_to_f16_row: dst shorter than src"
    );
    // `f16` is a plain 2-byte value, so the row is `2 * len` initialised bytes.
    let bytes = std::slice::from_raw_parts_mut(dst.as_mut_ptr() as *mut u8, src.len() * 2);
    super::quantize::f16(src, bytes);
}
