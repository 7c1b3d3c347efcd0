//! AVX2 element-wise ops, bit-identical to `crate::ops::scalar` (same exp
//! polynomial, same lane structure for the reductions, separate multiplies
//! and adds).

use crate::formats::fold8;
use crate::ops::scalar::{
    self as sc, EXP_C, EXP_HI, EXP_LO, LN2_HI, LN2_LO, VEXP_LN2_HI, VEXP_LN2_LO, VEXP_LOG2E, VEXP_P,
};
use crate::ops::{KvRun, KvTile, ATTN_TILE};
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

/// [`sc::vexpf`] on eight lanes: the same operations lane by lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn vexp8(x: __m256) -> __m256 {
    let shift = _mm256_set1_ps(f32::from_bits(0x4b40_0000));
    let z = _mm256_fmadd_ps(x, _mm256_set1_ps(VEXP_LOG2E), shift);
    let n = _mm256_sub_ps(z, shift);
    let b = _mm256_fnmadd_ps(
        n,
        _mm256_set1_ps(VEXP_LN2_LO),
        _mm256_fnmadd_ps(n, _mm256_set1_ps(VEXP_LN2_HI), x),
    );
    let e = _mm256_slli_epi32::<23>(_mm256_castps_si256(z));
    let k = _mm256_castsi256_ps(_mm256_add_epi32(
        e,
        _mm256_castps_si256(_mm256_set1_ps(1.0)),
    ));
    let abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
    let big = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(126.0));
    let u = _mm256_mul_ps(b, b);
    let p = |i: usize| _mm256_set1_ps(VEXP_P[i]);
    let j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(
            _mm256_fmadd_ps(p(0), b, p(1)),
            u,
            _mm256_fmadd_ps(p(2), b, p(3)),
        ),
        u,
        _mm256_mul_ps(p(4), b),
    );
    let normal = _mm256_fmadd_ps(j, k, k);
    if _mm256_movemask_ps(big) == 0 {
        return normal;
    }
    let g = _mm256_and_si256(
        _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(n, _mm256_setzero_ps())),
        _mm256_set1_epi32(0x8200_0000u32 as i32),
    );
    let s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f00_0000)));
    let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
    let huge = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(192.0));
    let scaled = _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1);
    let v = _mm256_blendv_ps(normal, scaled, big);
    _mm256_blendv_ps(v, _mm256_mul_ps(s1, s1), huge)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn silu8(x: __m256) -> __m256 {
    let e = vexp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
    _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e))
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

/// `1 / sqrt(mean(x^2) + eps)` as `scalar::rms_scale`: the f64 sum runs in
/// element order (one dependent add per element, ~2 µs for a 576-wide
/// row), so only the squares are formed eight at a time.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rms_scale(x: &[f32], eps: f32) -> f32 {
    let full = x.len() / 8 * 8;
    let mut sum = 0f64;
    let mut sq = [0f32; 8];
    for i in (0..full).step_by(8) {
        let v = _mm256_loadu_ps(x.as_ptr().add(i));
        _mm256_storeu_ps(sq.as_mut_ptr(), _mm256_mul_ps(v, v));
        for &q in &sq {
            sum += q as f64;
        }
    }
    for &v in &x[full..] {
        sum += (v * v) as f64;
    }
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

/// [`sc::gelu_tanh_mul_inplace`] with the F16 rounding of eight inputs in
/// one instruction (F16C rounds to nearest even, as the reference does);
/// the lookups stay scalar.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gelu_tanh_mul_inplace(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "gelu_mul: length mismatch");
    let table = sc::gelu_table();
    let full = gate.len() / 8 * 8;
    let mut bits = [0u16; 8];
    for i in (0..full).step_by(8) {
        let x = _mm256_loadu_ps(gate.as_ptr().add(i));
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
        _mm_storeu_si128(bits.as_mut_ptr() as *mut __m128i, h);
        for (l, &b) in bits.iter().enumerate() {
            let (g, u) = (gate[i + l], up[i + l]);
            gate[i + l] = if g <= -10.0 {
                0.0
            } else if g >= 10.0 {
                g * u
            } else {
                table[b as usize].to_f32() * u
            };
        }
    }
    sc::gelu_tanh_mul_inplace(&mut gate[full..], &up[full..]);
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
pub(crate) unsafe fn f32_to_f16_row(src: &[f32], dst: &mut [f16]) {
    assert!(
        dst.len() >= src.len(),
        "f32_to_f16_row: dst shorter than src"
    );
    // `f16` is a plain 2-byte value, so the row is `2 * len` initialised bytes.
    let bytes = std::slice::from_raw_parts_mut(dst.as_mut_ptr() as *mut u8, src.len() * 2);
    super::quantize::f16(src, bytes);
}

/// [`sc::dot_f16_f16`] for a multiple of 32 elements, with `y` already
/// widened to f32 (exact): four accumulators of eight lanes, folded in the
/// reference's order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16_32(n: usize, x: *const f16, y: *const f32) -> f32 {
    let ld = |p: *const f16| _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
    let mut a = [_mm256_setzero_ps(); 4];
    for i in (0..n).step_by(32) {
        for (j, acc) in a.iter_mut().enumerate() {
            let o = i + 8 * j;
            *acc = _mm256_fmadd_ps(ld(x.add(o)), _mm256_loadu_ps(y.add(o)), *acc);
        }
    }
    let t = _mm256_add_ps(_mm256_add_ps(a[0], a[2]), _mm256_add_ps(a[1], a[3]));
    let h = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps::<1>(t));
    let h = _mm_hadd_ps(h, h);
    _mm_cvtss_f32(_mm_hadd_ps(h, h))
}

/// The longest query head [`attn_online_f16`] widens on the stack.
const ONLINE_MAX_HDK: usize = 512;

/// Keys per pass of [`attn_online_f16`].
const ONLINE_KEYS: usize = 64;

/// [`sc::attn_online_f16`]: the same operations in the same order per key,
/// arranged in three passes over up to [`ONLINE_KEYS`] keys at a time so
/// that no pass waits on another's latency: all the scores (independent
/// dot products); then, in key order, the running maximum, each key's
/// rescale and weight (libm's `exp`) and the running sum; then the value
/// sums, with the accumulator held in registers 64 elements at a time
/// (as F32 values that are exactly F16: rounding after every operation,
/// as the reference stores and reloads it). Heads whose sizes are not
/// multiples of 32 (keys) and 64 (values) take the scalar reference.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn attn_online_f16(
    q: &[f16],
    run: KvRun,
    scale: f32,
    state: &mut (f32, f32),
    acc: &mut [f16],
) {
    let (hdk, hdv) = (q.len(), acc.len());
    let KvRun {
        keys,
        k_stride,
        values,
        v_stride,
        n,
    } = run;
    if !hdk.is_multiple_of(32) || !hdv.is_multiple_of(64) || hdk > ONLINE_MAX_HDK {
        return sc::attn_online_f16(q, run, scale, state, acc);
    }
    if n == 0 {
        return;
    }
    assert!(
        (n - 1) * k_stride + hdk <= keys.len() && (n - 1) * v_stride + hdv <= values.len(),
        "attn_online_f16: rows too short"
    );
    let mut qf = std::mem::MaybeUninit::<[f32; ONLINE_MAX_HDK]>::uninit();
    let qf = qf.as_mut_ptr() as *mut f32;
    for c in (0..hdk).step_by(8) {
        let v = _mm256_cvtph_ps(_mm_loadu_si128(q.as_ptr().add(c) as *const __m128i));
        _mm256_storeu_ps(qf.add(c), v);
    }
    let (mut m, mut sum) = *state;
    let mut scores = [0f32; ONLINE_KEYS];
    // Per key: the rescale of the accumulator (1 when the maximum holds)
    // and the key's weight.
    let mut ms = [0f32; ONLINE_KEYS];
    let mut vs = [0f32; ONLINE_KEYS];
    let mut k0 = 0;
    while k0 < n {
        let nk = (n - k0).min(ONLINE_KEYS);
        for (i, sc) in scores.iter_mut().enumerate().take(nk) {
            *sc = dot_f16_32(hdk, keys.as_ptr().add((k0 + i) * k_stride), qf) * scale;
        }
        for i in 0..nk {
            let s = scores[i];
            if s > m {
                ms[i] = (m - s).exp();
                vs[i] = 1.0;
                m = s;
            } else {
                ms[i] = 1.0;
                vs[i] = (s - m).exp();
            }
            sum = sum.mul_add(ms[i], vs[i]);
        }
        let ap = acc.as_mut_ptr() as *mut __m128i;
        for c0 in (0..hdv / 8).step_by(8) {
            let vp = values.as_ptr().add(k0 * v_stride + 8 * c0);
            value_strip(ap.add(c0), vp, v_stride, &ms[..nk], &vs[..nk]);
        }
        k0 += nk;
    }
    *state = (m, sum);
}

/// 64 elements of the value accumulator (`acc`, F16) over one pass's
/// keys: per key, the rescale when the maximum moved, then `v * w + acc`,
/// each rounded to F16 as the reference rounds its stored accumulator.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn value_strip(acc: *mut __m128i, v: *const f16, v_stride: usize, ms: &[f32], vs: &[f32]) {
    let round = |x: __m256| _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x));
    let mut a: [__m256; 8] = std::array::from_fn(|c| _mm256_cvtph_ps(_mm_loadu_si128(acc.add(c))));
    for (i, (&msi, &vsi)) in ms.iter().zip(vs).enumerate() {
        let vp = v.add(i * v_stride) as *const __m128i;
        if msi != 1.0 {
            let f = _mm256_set1_ps(msi);
            for r in a.iter_mut() {
                *r = round(_mm256_mul_ps(*r, f));
            }
        }
        let w = _mm256_set1_ps(vsi);
        for (c, r) in a.iter_mut().enumerate() {
            let x = _mm256_cvtph_ps(_mm_loadu_si128(vp.add(c)));
            *r = round(_mm256_fmadd_ps(x, w, *r));
        }
    }
    for (c, r) in a.iter().enumerate() {
        _mm_storeu_si128(acc.add(c), _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(*r));
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn attn_online_finish(state: (f32, f32), acc: &[f16], out: &mut [f32]) {
    sc::attn_online_finish(state, acc, out)
}

/// [`sc::attn_tile_row`] on eight keys or eight value elements per
/// register: the scores of all the tile's keys at once (eight accumulators,
/// each key's chain over its elements in order), the weights through
/// [`vexp8`] and the reference's fold of each eight, then the value sums
/// with up to 64 accumulator elements in registers, keys in order. Value
/// heads that are not a multiple of 8 take the scalar reference.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn attn_tile_row(
    q: &[f32],
    tile: KvTile,
    valid: std::ops::Range<usize>,
    scale: f32,
    state: &mut (f32, f32),
    acc: &mut [f32],
) {
    let hdv = acc.len();
    if !hdv.is_multiple_of(8) {
        return sc::attn_tile_row(q, tile, valid, scale, state, acc);
    }
    sc::check_tile(q, &tile, &valid, hdv);
    if valid.is_empty() {
        return;
    }
    const NV: usize = ATTN_TILE / 8;
    let mut s = [_mm256_setzero_ps(); NV];
    let kp = tile.keys_t.as_ptr();
    for (d, &qd) in q.iter().enumerate() {
        let qv = _mm256_set1_ps(qd);
        for (c, r) in s.iter_mut().enumerate() {
            *r = _mm256_fmadd_ps(_mm256_loadu_ps(kp.add(d * ATTN_TILE + 8 * c)), qv, *r);
        }
    }
    // Scale, then -inf outside `valid` (selected, not added, so whatever
    // the unused key slots hold cannot leak in).
    let (lo, hi) = (
        _mm256_set1_epi32(valid.start as i32),
        _mm256_set1_epi32(valid.end as i32),
    );
    let ninf = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut mx = ninf;
    for (c, r) in s.iter_mut().enumerate() {
        let idx = _mm256_add_epi32(
            _mm256_set1_epi32(8 * c as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        );
        let inside = _mm256_andnot_si256(_mm256_cmpgt_epi32(lo, idx), _mm256_cmpgt_epi32(hi, idx));
        *r = _mm256_blendv_ps(
            ninf,
            _mm256_mul_ps(*r, _mm256_set1_ps(scale)),
            _mm256_castsi256_ps(inside),
        );
        mx = _mm256_max_ps(mx, *r);
    }
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), mx);
    let tile_max = lanes.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let (m_old, mut sum) = *state;
    let m_new = m_old.max(tile_max);
    if m_new > m_old {
        let ms = (m_old - m_new).exp();
        let f = _mm256_set1_ps(ms);
        for c in (0..hdv).step_by(8) {
            let p = acc.as_mut_ptr().add(c);
            _mm256_storeu_ps(p, _mm256_mul_ps(_mm256_loadu_ps(p), f));
        }
        sum *= ms;
    }
    let mv = _mm256_set1_ps(m_new);
    let mut w = [0f32; ATTN_TILE];
    let mut total = 0f64;
    for (c, r) in s.iter().enumerate() {
        let v = vexp8(_mm256_sub_ps(*r, mv));
        _mm256_storeu_ps(w.as_mut_ptr().add(8 * c), v);
        let h = _mm_add_ps(_mm256_extractf128_ps::<1>(v), _mm256_castps256_ps128(v));
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        let h = _mm_add_ss(h, _mm_movehdup_ps(h));
        total += _mm_cvtss_f32(h) as f64;
    }
    *state = (m_new, (sum as f64 + total) as f32);
    let vp = tile.values.as_ptr();
    let ap = acc.as_mut_ptr();
    let mut c0 = 0;
    while c0 + 64 <= hdv {
        let mut a: [__m256; 8] = std::array::from_fn(|c| _mm256_loadu_ps(ap.add(c0 + 8 * c)));
        for j in valid.clone() {
            let wj = _mm256_set1_ps(w[j]);
            let row = vp.add(j * hdv + c0);
            for (c, r) in a.iter_mut().enumerate() {
                *r = _mm256_fmadd_ps(_mm256_loadu_ps(row.add(8 * c)), wj, *r);
            }
        }
        for (c, r) in a.iter().enumerate() {
            _mm256_storeu_ps(ap.add(c0 + 8 * c), *r);
        }
        c0 += 64;
    }
    while c0 < hdv {
        let mut a = _mm256_loadu_ps(ap.add(c0));
        for j in valid.clone() {
            a = _mm256_fmadd_ps(
                _mm256_loadu_ps(vp.add(j * hdv + c0)),
                _mm256_set1_ps(w[j]),
                a,
            );
        }
        _mm256_storeu_ps(ap.add(c0), a);
        c0 += 8;
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn attn_tile_finish(state: (f32, f32), acc: &[f32], out: &mut [f32]) {
    sc::attn_tile_finish(state, acc, out)
}

/// [`sc::dot_f32_ggml`] with its four banks in registers.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_f32_ggml(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot of rows of different lengths");
    let n = a.len();
    let np = n & !31;
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut s = [_mm256_setzero_ps(); 4];
    for i in (0..np).step_by(32) {
        for (j, s) in s.iter_mut().enumerate() {
            // SAFETY: i + 8j + 8 <= np <= n for both slices.
            *s = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 8 * j)),
                _mm256_loadu_ps(pb.add(i + 8 * j)),
                *s,
            );
        }
    }
    let c = _mm256_add_ps(_mm256_add_ps(s[0], s[2]), _mm256_add_ps(s[1], s[3]));
    let mut l = [0f32; 8];
    _mm256_storeu_ps(l.as_mut_ptr(), c);
    let u = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
    let head = (u[0] + u[1]) + (u[2] + u[3]);
    sc::dot_f32_ggml_tail(a, b, np, head)
}

/// [`sc::dot_f32_tiny`] with its eight lanes in one register.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn dot_f32_tiny(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot of rows of different lengths");
    assert!(a.len().is_multiple_of(8), "tinyBLAS takes multiples of 8");
    let mut acc = _mm256_setzero_ps();
    for i in (0..a.len()).step_by(8) {
        // SAFETY: i + 8 <= len for both slices.
        acc = _mm256_fmadd_ps(
            _mm256_loadu_ps(a.as_ptr().add(i)),
            _mm256_loadu_ps(b.as_ptr().add(i)),
            acc,
        );
    }
    super::hsum8(acc)
}
