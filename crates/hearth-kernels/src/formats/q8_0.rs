//! Q8_0: 32 elements in 34 bytes: `d: f16`, then 32 signed bytes `q`;
//! value = `q * d`. Also the activation format for Q4_0, Q5_0 and Q8_0
//! weights, so its quantiser follows the arithmetic llama.cpp actually runs
//! on x86 (its AVX2 `quantize_row_q8_0`, which is what produced the logits we
//! compare against): `d = amax / 127`, `q = round_ties_even(x * (127 / amax))`.
//! (ggml's portable `_ref` version differs only in using `1 / d` and rounding
//! halves away from zero, which changes a quant in rare ties.)

use super::{blocks, f16_at, put_f16, Lanes8, QK32};

pub const QK: usize = QK32;
pub const BYTES: usize = 34;

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, out) in src.chunks_exact(BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        for (o, &q) in out.iter_mut().zip(&b[2..BYTES]) {
            *o = (q as i8) as f32 * d;
        }
    }
}

/// `(d, 127/amax)` for one block as llama.cpp's x86 path computes them
/// (the multiplier is 0 for an all-zero block).
#[inline(always)]
pub(crate) fn scale_of(x: &[f32]) -> (f32, f32) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    (d, id)
}

pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BYTES)) {
        let (d, id) = scale_of(x);
        put_f16(b, 0, d);
        for (o, &v) in b[2..].iter_mut().zip(x) {
            *o = (v * id).round_ties_even() as i8 as u8;
        }
    }
}

/// Signed quant values of one block.
#[inline(always)]
pub(crate) fn unpack(b: &[u8]) -> [i32; 32] {
    let mut w = [0i32; 32];
    for (o, &q) in w.iter_mut().zip(&b[2..BYTES]) {
        *o = (q as i8) as i32;
    }
    w
}

pub fn vec_dot(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let mut acc = Lanes8::default();
    for i in 0..blocks(n, QK) {
        let wb = &w[i * BYTES..(i + 1) * BYTES];
        let xb = &x[i * BYTES..(i + 1) * BYTES];
        let d = f16_at(wb, 0) * f16_at(xb, 0);
        acc.add_block(d, &unpack(wb), &xb[2..], None);
    }
    acc.sum()
}
