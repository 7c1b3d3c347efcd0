//! ggml's block formats: one module per format, each owning its byte layout,
//! the scalar reference dequantiser, quantiser and dot product against the
//! format's activation type.
//!
//! Everything here is the *specification* of this crate's arithmetic. The
//! SIMD kernels in `crate::simd` must reproduce it bit for bit, so the
//! reference dot products are written in the lane structure the SIMD code
//! uses (see `Lanes8` and `Lanes32`): for the 32-element formats a block
//! contributes eight integer partial sums, each scaled and added into its own
//! float lane, and the lanes are folded in a fixed tree at the end. For the
//! 256-element K-quants each super-block's integer sums are exact, so only
//! the float updates have to agree: Q4_K and Q6_K follow llama.cpp's AVX2
//! kernels (two chains, per super-block or per 64 elements, for Q4_K; eight
//! lanes for Q6_K), the others one update per super-block.
//!
//! Layouts are ggml's, read straight from GGUF files: little-endian, packed,
//! no padding, `f16` scales stored as IEEE half bits.

pub mod float;
pub mod q2_k;
pub mod q3_k;
pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_1;
pub mod q5_k;
pub mod q6_k;
pub mod q8_0;
pub mod q8_1;
pub mod q8_k;

use half::f16;

/// Elements per block of the 32-element formats.
pub const QK32: usize = 32;
/// Elements per K-quant super-block.
pub const QK_K: usize = 256;

/// The f16 stored little-endian at `b[off..off + 2]`, widened (exactly) to f32.
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], off: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[off], b[off + 1]])).to_f32()
}

/// Writes `v` rounded to nearest-even f16 (what ggml's FP32_TO_FP16 does).
#[inline(always)]
pub(crate) fn put_f16(b: &mut [u8], off: usize, v: f32) {
    b[off..off + 2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
}

#[inline(always)]
pub(crate) fn f32_at(b: &[u8], off: usize) -> f32 {
    f32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Folds eight lanes as the AVX2 code does: high half onto low half, then
/// pairs two apart, then the last pair. Any SIMD port must fold in this order.
#[inline(always)]
pub(crate) fn fold8(l: &[f32; 8]) -> f32 {
    let a = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
    let b0 = a[0] + a[2];
    let b1 = a[1] + a[3];
    b0 + b1
}

/// Float accumulators for the 32-element block formats: one bank of eight
/// lanes, in block order, as llama.cpp's AVX2 dot products keep them (so
/// that our logits can equal the reference's bit for bit; see the crate's
/// numerics notes).
///
/// Lane `k` receives, per block,
/// `d * (sum of w[e] * x[e] for e in 4k..4k+4)` as one fused multiply-add
/// (one rounding), which is exactly what `maddubs -> madd -> cvt -> fmadd`
/// produces lane by lane in AVX2. (Without hardware FMA, `mul_add` is libm's
/// correctly rounded `fmaf`: slower, same bits.)
/// Formats with a minimum (Q4_1, Q5_1) also accumulate `m_w * s_x` into one
/// scalar, again fused (the compiled reference contracts that line into an
/// FMA). The result is `fold8(lanes) + min`.
#[derive(Clone, Copy, Default)]
pub(crate) struct Lanes8 {
    l: [f32; 8],
    m: f32,
}

impl Lanes8 {
    /// Adds one block; `min` is the block's `(m_w, s_x)` for formats with one.
    #[inline(always)]
    pub fn add_block(&mut self, d: f32, w: &[i32; 32], x: &[u8], min: Option<(f32, f32)>) {
        for k in 0..8 {
            let mut p = 0i32;
            for e in 4 * k..4 * k + 4 {
                p += w[e] * (x[e] as i8) as i32;
            }
            self.l[k] = d.mul_add(p as f32, self.l[k]);
        }
        if let Some((m, s)) = min {
            self.m = m.mul_add(s, self.m);
        }
    }

    /// The lanes folded (formats without a minimum).
    #[inline(always)]
    pub fn sum(&self) -> f32 {
        fold8(&self.l)
    }

    /// The lanes folded plus the minimum terms (Q4_1, Q5_1).
    #[inline(always)]
    pub fn sum_with_min(&self) -> f32 {
        self.sum() + self.m
    }
}

/// Thirty-two float accumulators for the float formats: element `e` of each
/// 32-element chunk (and of the ragged tail) goes to lane `e % 32` as a
/// multiply then an add. Folded as four 8-lane vectors `(v0+v1)+(v2+v3)`,
/// then [`fold8`].
pub(crate) struct Lanes32 {
    pub l: [f32; 32],
}

impl Lanes32 {
    pub fn new() -> Self {
        Lanes32 { l: [0.0; 32] }
    }

    #[inline(always)]
    pub fn sum(&self) -> f32 {
        let mut v = [0f32; 8];
        for (k, o) in v.iter_mut().enumerate() {
            let a = self.l[k] + self.l[8 + k];
            let b = self.l[16 + k] + self.l[24 + k];
            *o = a + b;
        }
        fold8(&v)
    }
}

/// Round-to-nearest-even to int, as ggml's `nearest_int` does for the
/// magnitudes it is used on (|x| < 2^22).
#[inline(always)]
pub(crate) fn nearest_int(x: f32) -> i32 {
    x.round_ties_even() as i32
}

/// Weight bytes of `n` elements in blocks of `qk` elements and `bytes` bytes.
#[inline(always)]
pub(crate) fn blocks(n: usize, qk: usize) -> usize {
    assert!(
        n.is_multiple_of(qk),
        "row length {n} is not a multiple of the block size {qk}"
    );
    n / qk
}

/// How a 32-element block's scale applies: `d·q` (Q4_0, Q5_0, against Q8_0
/// activations) or `d·q + m` (Q4_1, Q5_1, against Q8_1).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scale32 {
    Symmetric,
    Affine,
}

/// Dequantise a 32-element format whose blocks are `bytes` long, start with
/// the f16 scale (then the f16 minimum, if affine), and whose quants
/// `unpack` rebuilds.
pub(crate) fn dequantize32(
    src: &[u8],
    dst: &mut [f32],
    bytes: usize,
    scale: Scale32,
    unpack: fn(&[u8]) -> [i32; 32],
) {
    for (b, out) in src.chunks_exact(bytes).zip(dst.chunks_exact_mut(QK32)) {
        let d = f16_at(b, 0);
        match scale {
            Scale32::Symmetric => {
                for (o, q) in out.iter_mut().zip(unpack(b)) {
                    *o = q as f32 * d;
                }
            }
            Scale32::Affine => {
                let m = f16_at(b, 2);
                for (o, q) in out.iter_mut().zip(unpack(b)) {
                    *o = q as f32 * d + m;
                }
            }
        }
    }
}

/// The reference dot product of a 32-element weight format with its
/// activation format (Q8_0 for symmetric formats, Q8_1 for affine ones),
/// in the lane order of [`Lanes8`].
pub(crate) fn vec_dot32(
    n: usize,
    w: &[u8],
    x: &[u8],
    bytes: usize,
    scale: Scale32,
    unpack: fn(&[u8]) -> [i32; 32],
) -> f32 {
    let mut acc = Lanes8::default();
    let (xbytes, xq) = match scale {
        Scale32::Symmetric => (q8_0::BYTES, 2),
        Scale32::Affine => (q8_1::BYTES, 4),
    };
    for i in 0..blocks(n, QK32) {
        let wb = &w[i * bytes..(i + 1) * bytes];
        let xb = &x[i * xbytes..(i + 1) * xbytes];
        let d = f16_at(wb, 0) * f16_at(xb, 0);
        let min = (scale == Scale32::Affine).then(|| (f16_at(wb, 2), f16_at(xb, 2)));
        acc.add_block(d, &unpack(wb), &xb[xq..], min);
    }
    match scale {
        Scale32::Symmetric => acc.sum(),
        Scale32::Affine => acc.sum_with_min(),
    }
}

/// The signed value of largest magnitude in a block (the first one on ties),
/// which ggml's symmetric quantisers map to the most negative quant.
pub(crate) fn signed_absmax(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// A block's minimum and maximum, as ggml's affine quantisers scan them.
pub(crate) fn min_max(x: &[f32]) -> (f32, f32) {
    let min = x.iter().fold(f32::MAX, |a, &v| if v < a { v } else { a });
    let max = x.iter().fold(-f32::MAX, |a, &v| if v > a { v } else { a });
    (min, max)
}
