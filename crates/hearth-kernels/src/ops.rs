//! Element-wise ops on f32 rows (norms, activations, softmax, rotary
//! embedding, the f16 KV-cache helpers): the scalar reference lives in
//! [`scalar`]; the dispatching public functions are re-exported from the
//! crate root.
//!
//! As with the dot products, the SIMD versions reproduce the scalar ones bit
//! for bit, so the reductions here are written in the SIMD lane structure and
//! `exp` is this crate's own polynomial ([`scalar::expf`]), not libm's.
//!
//! Choices, relative to ggml:
//! - `rms_norm`: squares are formed in f32 and summed in f64 (as ggml does),
//!   in eight f64 lanes; `mean = (sum / n) as f32`, `scale = 1 / sqrt(mean + eps)`,
//!   `out = (x * scale) * w`.
//! - `softmax`: `exp(x - max)` summed in eight f32 lanes, then multiplied by
//!   `1 / sum`. A row that is all `-inf` comes out all zero (not NaN).
//! - `gelu_tanh`: computed in f32 as `x / (1 + exp(-2u))`, which equals
//!   `0.5 x (1 + tanh u)`, `u = sqrt(2/pi) (x + 0.044715 x^3)`. llama.cpp's
//!   CPU GeGLU looks up an f16 table instead; ours is the more accurate one.
//! - `rope`: angles as ggml computes them, `theta_i = pos * s^i` with
//!   `s = freq_base^(-2/n_rot)` accumulated by repeated f32 multiplication;
//!   `cos`/`sin` from libm.

pub mod scalar {
    use crate::formats::{fold8, Lanes32};
    use half::f16;

    const LOG2E: f32 = std::f32::consts::LOG2_E;
    /// ln 2 split so that `n * LN2_HI` is exact for |n| < 2^15.
    pub(crate) const LN2_HI: f32 = 0.693_359_4;
    pub(crate) const LN2_LO: f32 = -2.121_944_4e-4;
    /// Below this, `expf` returns 0 (the true value is < 3e-38).
    pub(crate) const EXP_LO: f32 = -86.5;
    /// Above this, `expf` returns +inf.
    pub(crate) const EXP_HI: f32 = 88.722_83;
    /// Taylor coefficients 1/k! for k = 2..=6.
    pub(crate) const EXP_C: [f32; 5] = [0.5, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0, 1.0 / 720.0];
    pub(crate) const GELU_A: f32 = 0.044_715;
    /// `-2 * sqrt(2 / pi)`.
    pub(crate) const GELU_K: f32 = -1.595_769_2;

    /// e^x to within a few ulp over the normal range, written with separate
    /// multiplies and adds so a SIMD version can reproduce every rounding:
    /// `x = n ln2 + r` (Cody-Waite), a degree-6 polynomial for e^r, then
    /// scaling by `2^(n-1) * 2` (so n = 128 needs no special case).
    #[inline(always)]
    pub fn expf(x: f32) -> f32 {
        if x < EXP_LO {
            return 0.0;
        }
        if x > EXP_HI {
            return f32::INFINITY;
        }
        let n = (x * LOG2E).round_ties_even();
        let r = x - n * LN2_HI;
        let r = r - n * LN2_LO;
        let mut p = EXP_C[4];
        p = p * r + EXP_C[3];
        p = p * r + EXP_C[2];
        p = p * r + EXP_C[1];
        p = p * r + EXP_C[0];
        p = p * r + 1.0;
        p = p * r + 1.0;
        let s = f32::from_bits(((n as i32 + 126) as u32) << 23);
        (p * s) * 2.0
    }

    #[inline(always)]
    pub(crate) fn silu(x: f32) -> f32 {
        x / (1.0 + expf(-x))
    }

    #[inline(always)]
    pub(crate) fn gelu_tanh(x: f32) -> f32 {
        let inner = GELU_A * (x * x) + 1.0;
        let z = (GELU_K * x) * inner;
        x / (1.0 + expf(z))
    }

    /// `1 / sqrt(mean(x^2) + eps)` with the f64 eight-lane sum.
    #[inline(always)]
    pub(crate) fn rms_scale(x: &[f32], eps: f32) -> f32 {
        let mut l = [0f64; 8];
        for (i, &v) in x.iter().enumerate() {
            l[i % 8] += (v * v) as f64;
        }
        let a = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
        let sum = (a[0] + a[2]) + (a[1] + a[3]);
        let mean = (sum / x.len() as f64) as f32;
        1.0 / (mean + eps).sqrt()
    }

    pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
        assert!(
            w.len() == x.len() && out.len() == x.len(),
            "rms_norm: length mismatch"
        );
        let scale = rms_scale(x, eps);
        for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
            *o = (v * scale) * g;
        }
    }

    pub fn rms_norm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
        assert_eq!(w.len(), x.len(), "rms_norm: length mismatch");
        let scale = rms_scale(x, eps);
        for (v, &g) in x.iter_mut().zip(w) {
            *v = (*v * scale) * g;
        }
    }

    pub fn softmax_inplace(x: &mut [f32]) {
        let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        if max == f32::NEG_INFINITY {
            x.fill(0.0);
            return;
        }
        let mut l = [0f32; 8];
        for (i, v) in x.iter_mut().enumerate() {
            *v = expf(*v - max);
            l[i % 8] += *v;
        }
        let inv = 1.0 / fold8(&l);
        for v in x.iter_mut() {
            *v *= inv;
        }
    }

    pub fn silu_mul_inplace(gate: &mut [f32], up: &[f32]) {
        assert_eq!(gate.len(), up.len(), "silu_mul: length mismatch");
        for (g, &u) in gate.iter_mut().zip(up) {
            *g = silu(*g) * u;
        }
    }

    pub fn gelu_tanh_mul_inplace(gate: &mut [f32], up: &[f32]) {
        assert_eq!(gate.len(), up.len(), "gelu_mul: length mismatch");
        for (g, &u) in gate.iter_mut().zip(up) {
            *g = gelu_tanh(*g) * u;
        }
    }

    /// Fills `out_cos_sin[2i], [2i+1]` with `cos, sin` of `theta_i` for
    /// `i in 0..n_rot/2` (ggml's angle arithmetic; see the module docs).
    pub fn rope_cache(pos: usize, n_rot: usize, freq_base: f32, out_cos_sin: &mut [f32]) {
        assert!(
            n_rot.is_multiple_of(2) && out_cos_sin.len() >= n_rot,
            "rope_cache: bad n_rot/out"
        );
        let theta_scale = freq_base.powf(-2.0 / n_rot as f32);
        let mut theta = pos as f32;
        for cs in out_cos_sin[..n_rot].chunks_exact_mut(2) {
            cs[0] = theta.cos();
            cs[1] = theta.sin();
            theta *= theta_scale;
        }
    }

    /// Rotates the first `cos_sin.len()` dims of `x` by a [`rope_cache`] table.
    pub fn rope_apply(x: &mut [f32], cos_sin: &[f32], neox: bool) {
        let n_rot = cos_sin.len();
        assert!(
            n_rot.is_multiple_of(2) && n_rot <= x.len(),
            "rope_apply: bad n_rot"
        );
        let half = n_rot / 2;
        for i in 0..half {
            let (c, s) = (cos_sin[2 * i], cos_sin[2 * i + 1]);
            let (a, b) = if neox {
                (i, i + half)
            } else {
                (2 * i, 2 * i + 1)
            };
            let (x0, x1) = (x[a], x[b]);
            x[a] = x0 * c - x1 * s;
            x[b] = x0 * s + x1 * c;
        }
    }

    /// Rotary embedding of one head vector; same numbers as
    /// `rope_cache` + `rope_apply`, without a table.
    pub fn rope_inplace(x: &mut [f32], pos: usize, n_rot: usize, freq_base: f32, neox: bool) {
        assert!(
            n_rot.is_multiple_of(2) && n_rot <= x.len(),
            "rope: bad n_rot"
        );
        let theta_scale = freq_base.powf(-2.0 / n_rot as f32);
        let mut theta = pos as f32;
        let half = n_rot / 2;
        for i in 0..half {
            let (c, s) = (theta.cos(), theta.sin());
            theta *= theta_scale;
            let (a, b) = if neox {
                (i, i + half)
            } else {
                (2 * i, 2 * i + 1)
            };
            let (x0, x1) = (x[a], x[b]);
            x[a] = x0 * c - x1 * s;
            x[b] = x0 * s + x1 * c;
        }
    }

    pub fn add_inplace(y: &mut [f32], x: &[f32]) {
        assert_eq!(y.len(), x.len(), "add: length mismatch");
        for (a, &b) in y.iter_mut().zip(x) {
            *a += b;
        }
    }

    pub fn mul_inplace(y: &mut [f32], x: &[f32]) {
        assert_eq!(y.len(), x.len(), "mul: length mismatch");
        for (a, &b) in y.iter_mut().zip(x) {
            *a *= b;
        }
    }

    pub fn scale_inplace(y: &mut [f32], s: f32) {
        for a in y.iter_mut() {
            *a *= s;
        }
    }

    /// 32-lane dot product, as for the F16 weight format.
    pub fn dot_f32_f16(a: &[f32], b: &[f16]) -> f32 {
        assert_eq!(a.len(), b.len(), "dot_f32_f16: length mismatch");
        let mut acc = Lanes32::new();
        for (i, (&u, &v)) in a.iter().zip(b).enumerate() {
            acc.l[i % 32] += u * v.to_f32();
        }
        acc.sum()
    }

    /// `y += a * x`, one multiply and one add per element.
    pub fn axpy_f16(y: &mut [f32], a: f32, x: &[f16]) {
        assert_eq!(y.len(), x.len(), "axpy_f16: length mismatch");
        for (o, &v) in y.iter_mut().zip(x) {
            *o += a * v.to_f32();
        }
    }

    /// Attention scores: `out[i] = dot_f32_f16(q, rows[i·stride ..][..q.len()]) · scale`
    /// for the `out.len()` key rows laid out `stride` elements apart.
    pub fn attn_scores_f16(q: &[f32], rows: &[f16], stride: usize, scale: f32, out: &mut [f32]) {
        for (i, o) in out.iter_mut().enumerate() {
            *o = dot_f32_f16(q, &rows[i * stride..][..q.len()]) * scale;
        }
    }

    /// Attention output: `y += w[i] · rows[i·stride ..][..y.len()]` for each
    /// value row in order, exactly as repeated [`axpy_f16`] calls would.
    pub fn attn_values_f16(y: &mut [f32], w: &[f32], rows: &[f16], stride: usize) {
        for (i, &a) in w.iter().enumerate() {
            let n = y.len();
            axpy_f16(y, a, &rows[i * stride..][..n]);
        }
    }

    /// [`attn_scores_f16`] for `heads` query heads stored one after another
    /// in `q` (all against the same key rows), into `out` as `heads` rows
    /// of `out.len() / heads` scores.
    pub fn attn_scores_f16_heads(
        q: &[f32],
        heads: usize,
        rows: &[f16],
        stride: usize,
        scale: f32,
        out: &mut [f32],
    ) {
        assert!(
            heads > 0 && q.len().is_multiple_of(heads) && out.len().is_multiple_of(heads),
            "attn_scores_f16_heads: lengths are not whole heads"
        );
        let (hd, nk) = (q.len() / heads, out.len() / heads);
        for h in 0..heads {
            let o = &mut out[h * nk..(h + 1) * nk];
            attn_scores_f16(&q[h * hd..(h + 1) * hd], rows, stride, scale, o);
        }
    }

    /// [`attn_values_f16`] for `heads` output heads stored one after another
    /// in `y`, head `h` weighted by row `h` of `w` (`w.len() / heads` keys).
    pub fn attn_values_f16_heads(
        y: &mut [f32],
        heads: usize,
        w: &[f32],
        rows: &[f16],
        stride: usize,
    ) {
        assert!(
            heads > 0 && y.len().is_multiple_of(heads) && w.len().is_multiple_of(heads),
            "attn_values_f16_heads: lengths are not whole heads"
        );
        let (hd, nk) = (y.len() / heads, w.len() / heads);
        for h in 0..heads {
            let wh = &w[h * nk..(h + 1) * nk];
            attn_values_f16(&mut y[h * hd..(h + 1) * hd], wh, rows, stride);
        }
    }

    /// Converts `src` into the first `src.len()` elements of `dst`,
    /// rounding to nearest even as F16C does.
    pub fn f32_to_f16_row(src: &[f32], dst: &mut [f16]) {
        assert!(
            dst.len() >= src.len(),
            "f32_to_f16_row: dst shorter than src"
        );
        for (o, &v) in dst.iter_mut().zip(src) {
            *o = f16::from_f32(v);
        }
    }
}
