//! Element-wise ops on f32 rows (norms, activations, softmax, rotary
//! embedding, the f16 KV-cache helpers): the scalar reference lives in
//! [`scalar`]; the dispatching public functions are re-exported from the
//! crate root.
//!
//! As with the dot products, the SIMD versions reproduce the scalar ones bit
//! for bit, and where llama.cpp's AVX2 build has the same op, the scalar one
//! reproduces llama.cpp's arithmetic (see the crate's numerics notes).
//!
//! Choices, relative to ggml:
//! - `rms_norm`: squares are formed in f32 and summed in f64 in element
//!   order (as ggml does); `mean = (sum / n) as f32`,
//!   `scale = 1 / sqrt(mean + eps)`, `out = (x * scale) * w`. Same bits.
//! - `silu`: `x / (1 + e^-x)` with ggml's vector exp ([`scalar::vexpf`]),
//!   as its AVX2 SwiGLU computes it. Same bits.
//! - `rope`: angles as ggml computes them, `theta_i = pos * s^i` with
//!   `s = freq_base^(-2/n_rot)` accumulated by repeated f32 multiplication;
//!   `cos`/`sin` from libm; the rotation with the fused multiply-adds its
//!   compiler emits. Same bits.
//! - attention: [`scalar::attn_online_f16`], ggml's flash attention with an
//!   F16 cache: F16 query, running softmax with libm's `exp`, F16 value
//!   accumulator. Same bits.
//! - tiled attention: [`scalar::attn_tile_row`], the arithmetic llama.cpp
//!   switches to for 64 or more query rows at once: F32 query and
//!   accumulator, keys in tiles of [`ATTN_TILE`], ggml's vector exp for the
//!   weights. Same bits.
//! - `softmax` (BERT's attention): `exp(x - max)` with this crate's own
//!   polynomial ([`scalar::expf`]) summed in eight f32 lanes, then
//!   multiplied by `1 / sum`. A row that is all `-inf` comes out all zero
//!   (not NaN).
//! - `gelu_tanh` (Gemma's GeGLU): llama.cpp's F16 table, `0.5 x (1 +
//!   tanh u)`, `u = sqrt(2/pi) x (1 + 0.044715 x^2)`, evaluated in f32 at
//!   every F16 value and rounded to F16; `x` is rounded to F16 to look it up
//!   (outside [-10, 10]: 0 or `x`). Same bits.

use half::f16;

/// A run of consecutive keys and their values: `n` F16 rows each, row `i`
/// of the keys at `keys[i * k_stride..]`, of the values at
/// `values[i * v_stride..]`.
#[derive(Clone, Copy)]
pub struct KvRun<'a> {
    pub keys: &'a [f16],
    pub k_stride: usize,
    pub values: &'a [f16],
    pub v_stride: usize,
    pub n: usize,
}

/// Keys in one tile of the tiled attention ([`scalar::attn_tile_row`]):
/// ggml's `GGML_FA_TILE_KV`. Tiles start at key positions that are
/// multiples of it, so a row's arithmetic never depends on which other
/// rows run beside it.
pub const ATTN_TILE: usize = 64;

/// Up to [`ATTN_TILE`] consecutive keys and their values, widened to F32
/// (exactly: the cache holds F16) for the tiled attention.
#[derive(Clone, Copy)]
pub struct KvTile<'a> {
    /// Keys transposed: element `d` of key `j` at `keys_t[d * ATTN_TILE + j]`,
    /// so one element of every key in the tile is contiguous.
    pub keys_t: &'a [f32],
    /// Element `d` of value `j` at `values[j * hdv + d]`.
    pub values: &'a [f32],
}

pub mod scalar {
    use super::{KvTile, ATTN_TILE};
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
    /// [`vexpf`]'s constants: log2(e), ln 2 in two parts, and the
    /// polynomial's coefficients from the highest degree down.
    pub(crate) const VEXP_LOG2E: f32 = f32::from_bits(0x3fb8_aa3b);
    pub(crate) const VEXP_LN2_HI: f32 = f32::from_bits(0x3f31_7200);
    pub(crate) const VEXP_LN2_LO: f32 = f32::from_bits(0x35bf_be8e);
    pub(crate) const VEXP_P: [f32; 5] = [
        f32::from_bits(0x3c07_2010),
        f32::from_bits(0x3d2b_9f17),
        f32::from_bits(0x3e2a_af33),
        f32::from_bits(0x3eff_fedb),
        f32::from_bits(0x3f7f_fff6),
    ];
    pub(crate) const GELU_A: f32 = 0.044_715;
    /// ggml's `SQRT_2_OVER_PI`, rounded to f32.
    #[allow(clippy::excessive_precision)]
    const GELU_SQRT_2_OVER_PI: f32 = 0.797_884_560_802_865_355_879_892_119_868_76;

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

    /// e^x as llama.cpp's AVX2 build computes it for SiLU: `x = n ln2 + b`
    /// with `n` rounded by the 1.5·2^23 trick, a degree-5 polynomial in `b`
    /// evaluated with fused multiply-adds in a fixed shape, and the scale
    /// `2^n` built in the exponent bits, with a slower scaling only when
    /// |n| > 126. Each step is one IEEE operation, so a SIMD version gives
    /// the same bits lane by lane.
    #[inline(always)]
    pub fn vexpf(x: f32) -> f32 {
        let shift = f32::from_bits(0x4b40_0000); // 1.5 * 2^23
        let z = x.mul_add(VEXP_LOG2E, shift);
        let n = z - shift;
        let b = (-n).mul_add(VEXP_LN2_LO, (-n).mul_add(VEXP_LN2_HI, x));
        let e = z.to_bits() << 23;
        let k = f32::from_bits(e.wrapping_add(1f32.to_bits()));
        let u = b * b;
        let j = VEXP_P[0]
            .mul_add(b, VEXP_P[1])
            .mul_add(u, VEXP_P[2].mul_add(b, VEXP_P[3]))
            .mul_add(u, VEXP_P[4] * b);
        if n.abs() <= 126.0 {
            return j.mul_add(k, k);
        }
        let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
        let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000));
        let s2 = f32::from_bits(e.wrapping_sub(g));
        if n.abs() > 192.0 {
            s1 * s1
        } else {
            s2.mul_add(j, s2) * s1
        }
    }

    /// `x / (1 + e^-x)` with [`vexpf`], as llama.cpp's SwiGLU computes it.
    #[inline(always)]
    pub(crate) fn silu(x: f32) -> f32 {
        x / (1.0 + vexpf(0.0 - x))
    }

    /// `0.5 x (1 + tanh(sqrt(2/pi) x (1 + 0.044715 x^2)))` in f32 as
    /// llama.cpp's compiled table builder evaluates it: the inner bracket
    /// fused (`(0.044715 x) * x + 1`), libm's `tanhf`.
    fn gelu_f32(x: f32) -> f32 {
        let inner = (GELU_SQRT_2_OVER_PI * x) * (GELU_A * x).mul_add(x, 1.0);
        (0.5 * x) * (1.0 + inner.tanh())
    }

    /// GELU of every F16 value, rounded to F16, by bit pattern: llama.cpp's
    /// CPU GeGLU looks its GELU up here (built once, 128 KiB).
    pub(crate) fn gelu_table() -> &'static [f16] {
        static TABLE: std::sync::OnceLock<Vec<f16>> = std::sync::OnceLock::new();
        TABLE.get_or_init(|| {
            (0..=u16::MAX)
                .map(|b| f16::from_f32(gelu_f32(f16::from_bits(b).to_f32())))
                .collect()
        })
    }

    /// `1 / sqrt(mean(x^2) + eps)`: squares rounded to f32, summed in f64
    /// in element order (llama.cpp's order, so the scale is its bits too).
    #[inline(always)]
    pub(crate) fn rms_scale(x: &[f32], eps: f32) -> f32 {
        let mut sum = 0f64;
        for &v in x {
            sum += (v * v) as f64;
        }
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
        // llama.cpp's GeGLU: 0 at or below -10, `x * u` at or above 10,
        // else the table at `x` rounded to F16, times `u`.
        let table = gelu_table();
        for (g, &u) in gate.iter_mut().zip(up) {
            *g = if *g <= -10.0 {
                0.0
            } else if *g >= 10.0 {
                *g * u
            } else {
                table[f16::from_f32(*g).to_bits() as usize].to_f32() * u
            };
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
            (x[a], x[b]) = rotate(x0, x1, c, s);
        }
    }

    /// One pair's rotation with the fused multiply-adds llama.cpp's
    /// compiled RoPE uses (its compiler contracts the expression): checked
    /// against its tensors for the normal pairs (SmolLM2); the NEOX pairs
    /// follow the same form in its compiled scalar loop.
    #[inline(always)]
    pub(crate) fn rotate(x0: f32, x1: f32, c: f32, s: f32) -> (f32, f32) {
        (x0.mul_add(c, -(x1 * s)), x0.mul_add(s, x1 * c))
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
            (x[a], x[b]) = rotate(x0, x1, c, s);
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

    /// An F16 dot product in llama.cpp's order (its AVX2 `ggml_vec_dot_f16`):
    /// element `e` of each 32-element chunk goes, by fused multiply-add, to
    /// lane `e % 8` of accumulator `(e / 8) % 4`; the accumulators fold as
    /// `(a0 + a2) + (a1 + a3)`, the lanes as `(l0+l4) + (l1+l5)` and
    /// `(l2+l6) + (l3+l7)`, then those two; a ragged tail is added in f64.
    pub fn dot_f16_f16(x: &[f16], y: &[f16]) -> f32 {
        assert_eq!(x.len(), y.len(), "dot_f16_f16: length mismatch");
        let n = x.len();
        let np = n & !31;
        let mut a = [[0f32; 8]; 4];
        for i in (0..np).step_by(32) {
            for (j, acc) in a.iter_mut().enumerate() {
                for (l, v) in acc.iter_mut().enumerate() {
                    let e = i + 8 * j + l;
                    *v = x[e].to_f32().mul_add(y[e].to_f32(), *v);
                }
            }
        }
        let mut t = [0f32; 8];
        for l in 0..8 {
            t[l] = (a[0][l] + a[2][l]) + (a[1][l] + a[3][l]);
        }
        let h = [t[0] + t[4], t[1] + t[5], t[2] + t[6], t[3] + t[7]];
        let mut sum = ((h[0] + h[1]) + (h[2] + h[3])) as f64;
        for e in np..n {
            sum += (x[e].to_f32() * y[e].to_f32()) as f64;
        }
        sum as f32
    }

    /// One query head's attention with a running (online) softmax, as
    /// llama.cpp's CPU flash attention computes it with an F16 cache: keys
    /// are taken one at a time in order; a new maximum rescales the F16
    /// accumulator; each value row is added into it with one fused
    /// multiply-add per element, rounded back to F16. `exp` is libm's.
    /// `state` is `(max, sum)`, starting at `(-inf, 0)` with `acc` zeroed;
    /// calling this on consecutive runs of keys equals one call on all.
    pub fn attn_online_f16(
        q: &[f16],
        run: super::KvRun,
        scale: f32,
        state: &mut (f32, f32),
        acc: &mut [f16],
    ) {
        let (hdk, hdv) = (q.len(), acc.len());
        for i in 0..run.n {
            let s = dot_f16_f16(&run.keys[i * run.k_stride..][..hdk], q) * scale;
            let (m, sum) = *state;
            let (ms, vs) = if s > m {
                let ms = (m - s).exp();
                for a in acc.iter_mut() {
                    *a = f16::from_f32(a.to_f32() * ms);
                }
                state.0 = s;
                (ms, 1.0)
            } else {
                (1.0, (s - m).exp())
            };
            let v = &run.values[i * run.v_stride..][..hdv];
            for (a, &x) in acc.iter_mut().zip(v) {
                *a = f16::from_f32(x.to_f32().mul_add(vs, a.to_f32()));
            }
            state.1 = sum.mul_add(ms, vs);
        }
    }

    /// The attention output of an [`attn_online_f16`] run: `acc / sum`
    /// (as a multiply by `1 / sum`; a run that saw no key gives zeros).
    pub fn attn_online_finish(state: (f32, f32), acc: &[f16], out: &mut [f32]) {
        let inv = if state.1 == 0.0 { 0.0 } else { 1.0 / state.1 };
        for (o, a) in out.iter_mut().zip(acc) {
            *o = a.to_f32() * inv;
        }
    }

    /// An F32 dot product in the order of ggml's `ggml_vec_dot_f32` as
    /// llama.cpp's AVX2 build compiles it (its matmul for a batch of one
    /// row, as LoRA's products take when decoding): four banks of eight
    /// lanes, element `i` of each 32 fused into bank `i / 8 % 4`, lane
    /// `i % 8`; banks added (0 + 2) + (1 + 3); lanes folded by two
    /// horizontal adds after the halves; then the elements past the last 32:
    /// groups of eight, then one of four, as rounded products added one by
    /// one, and the last one to three fused.
    pub fn dot_f32_ggml(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len(), "dot of rows of different lengths");
        let n = a.len();
        let np = n & !31;
        let mut banks = [[0f32; 8]; 4];
        for i in 0..np {
            let lane = &mut banks[i / 8 % 4][i % 8];
            *lane = a[i].mul_add(b[i], *lane);
        }
        let mut c = [0f32; 8];
        for (l, c) in c.iter_mut().enumerate() {
            *c = (banks[0][l] + banks[2][l]) + (banks[1][l] + banks[3][l]);
        }
        let u = [c[0] + c[4], c[1] + c[5], c[2] + c[6], c[3] + c[7]];
        dot_f32_ggml_tail(a, b, np, (u[0] + u[1]) + (u[2] + u[3]))
    }

    /// Of the last `rest` elements of [`dot_f32_ggml`] (fewer than 32, past
    /// its banks), how many are added as rounded products: groups of eight,
    /// then one of four; the rest are fused.
    pub fn dot_f32_ggml_tail_products(rest: usize) -> usize {
        (rest & !7) + if rest % 8 >= 4 { 4 } else { 0 }
    }

    /// [`dot_f32_ggml`]'s elements from `np` on, added to `sum` (the banks'
    /// total).
    pub fn dot_f32_ggml_tail(a: &[f32], b: &[f32], np: usize, mut sum: f32) -> f32 {
        let n = a.len();
        let products = dot_f32_ggml_tail_products(n - np);
        for i in np..np + products {
            sum += a[i] * b[i];
        }
        for i in np + products..n {
            sum = a[i].mul_add(b[i], sum);
        }
        sum
    }

    /// An F32 dot product in the order of llamafile's `tinyBLAS` for AVX2
    /// (llama.cpp's F32 matmul for batches of two rows or more): eight
    /// lanes, each a fused chain over its elements from zero, folded as
    /// [`fold8`]. `a.len()` is a multiple of eight, as tinyBLAS requires.
    pub fn dot_f32_tiny(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len(), "dot of rows of different lengths");
        assert!(a.len().is_multiple_of(8), "tinyBLAS takes multiples of 8");
        let mut lanes = [0f32; 8];
        for (ca, cb) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
            for l in 0..8 {
                lanes[l] = ca[l].mul_add(cb[l], lanes[l]);
            }
        }
        fold8(&lanes)
    }

    /// The attention output of [`attn_online_f16`] runs over consecutive
    /// ranges of keys, each started afresh, merged as llama.cpp merges its
    /// threads' partials when it splits a decoding row's keys: in order,
    /// skipping ranges that saw no key, each moving the maximum (libm's
    /// `exp` for both rescales), the accumulator `fma(acc, old, part * new)`
    /// element by element and the sum likewise; then a multiply by
    /// `1 / sum`. Range `i` has state `states[i]` and accumulator
    /// `accs[i * out.len()..][..out.len()]`.
    pub fn attn_online_merge(states: &[(f32, f32)], accs: &[f16], out: &mut [f32]) {
        assert_eq!(
            accs.len(),
            states.len() * out.len(),
            "one accumulator per range"
        );
        out.fill(0.0);
        let (mut max, mut sum) = (f32::NEG_INFINITY, 0f32);
        for (&(m, s), acc) in states.iter().zip(accs.chunks_exact(out.len().max(1))) {
            if s == 0.0 {
                continue;
            }
            let new = max.max(m);
            let (old_scale, new_scale) = ((max - new).exp(), (m - new).exp());
            for (o, a) in out.iter_mut().zip(acc) {
                *o = o.mul_add(old_scale, a.to_f32() * new_scale);
            }
            sum = sum.mul_add(old_scale, s * new_scale);
            max = new;
        }
        if sum != 0.0 {
            let inv = 1.0 / sum;
            for o in out.iter_mut() {
                *o *= inv;
            }
        }
    }

    /// One query row's attention over one key tile, as llama.cpp's tiled CPU
    /// flash attention (`flash_attn_ext_tiled`, taken for batches of 64 or
    /// more query rows) computes it: an F32 query; each score a fused
    /// multiply-add chain over the key's elements from 0, then scaled; keys
    /// outside `valid` (masked, or past the tile's end) are `-inf`; the
    /// running maximum moves once per tile (rescaling the F32 accumulator
    /// and the sum by libm's `exp`); the tile's weights come from ggml's
    /// vector exp and are summed eight at a time as its AVX2 softmax folds
    /// them, each eight added to an f64 total; each value row is added into
    /// the accumulator with one fused multiply-add per element, keys in
    /// order. A row with no valid key in the tile is left as it was.
    ///
    /// `state` is `(max, sum)`, starting at `(-inf, 0)` with `acc` zeroed;
    /// [`attn_tile_finish`] gives the output.
    pub fn attn_tile_row(
        q: &[f32],
        tile: KvTile,
        valid: std::ops::Range<usize>,
        scale: f32,
        state: &mut (f32, f32),
        acc: &mut [f32],
    ) {
        check_tile(q, &tile, &valid, acc.len());
        if valid.is_empty() {
            return;
        }
        let (hdk, hdv) = (q.len(), acc.len());
        let mut s = [f32::NEG_INFINITY; ATTN_TILE];
        for j in valid.clone() {
            let mut a = 0f32;
            for d in 0..hdk {
                a = tile.keys_t[d * ATTN_TILE + j].mul_add(q[d], a);
            }
            s[j] = a * scale;
        }
        let tile_max = s.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let (m_old, mut sum) = *state;
        let m_new = m_old.max(tile_max);
        if m_new > m_old {
            let ms = (m_old - m_new).exp();
            for a in acc.iter_mut() {
                *a *= ms;
            }
            sum *= ms;
        }
        let mut total = 0f64;
        for g in s.chunks_exact_mut(8) {
            for x in g.iter_mut() {
                *x = vexpf(*x - m_new);
            }
            let h = [g[0] + g[4], g[1] + g[5], g[2] + g[6], g[3] + g[7]];
            total += ((h[0] + h[2]) + (h[1] + h[3])) as f64;
        }
        *state = (m_new, (sum as f64 + total) as f32);
        for j in valid {
            let v = &tile.values[j * hdv..][..hdv];
            for (a, &x) in acc.iter_mut().zip(v) {
                *a = x.mul_add(s[j], *a);
            }
        }
    }

    /// Panics unless `tile` holds every key and value `valid` names, for a
    /// query of `q.len()` and values of `hdv` elements.
    pub(crate) fn check_tile(q: &[f32], tile: &KvTile, valid: &std::ops::Range<usize>, hdv: usize) {
        assert!(
            valid.end <= ATTN_TILE
                && tile.keys_t.len() >= q.len() * ATTN_TILE
                && tile.values.len() >= valid.end * hdv,
            "attn_tile_row: tile shorter than its valid keys"
        );
    }

    /// The output of [`attn_tile_row`] calls: `acc * (1 / sum)` (zeros for a
    /// row that saw no key).
    pub fn attn_tile_finish(state: (f32, f32), acc: &[f32], out: &mut [f32]) {
        let inv = if state.1 == 0.0 { 0.0 } else { 1.0 / state.1 };
        for (o, &a) in out.iter_mut().zip(acc) {
            *o = a * inv;
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
