//! Q8_1: 32 elements in 36 bytes: `d: f16`, `s: f16` (= `d * sum(q)`, used
//! by the Q4_1/Q5_1 dot products to apply the weight block's minimum), then
//! 32 signed bytes; value = `q * d`. The activation format for Q4_1 and Q5_1
//! weights; its quantiser is Q8_0's (llama.cpp's x86 arithmetic), and
//! `s = f16(sum(q) as f32 * d)`.

use super::{blocks, f16_at, put_f16, q8_0, Lanes8, QK32};

pub const QK: usize = QK32;
pub const BYTES: usize = 36;

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, out) in src.chunks_exact(BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        for (o, &q) in out.iter_mut().zip(&b[4..BYTES]) {
            *o = (q as i8) as f32 * d;
        }
    }
}

pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BYTES)) {
        let (d, id) = q8_0::scale_of(x);
        let mut sum = 0i32;
        for (o, &v) in b[4..].iter_mut().zip(x) {
            let q = (v * id).round_ties_even() as i8;
            sum += q as i32;
            *o = q as u8;
        }
        put_f16(b, 0, d);
        put_f16(b, 2, sum as f32 * d);
    }
}

/// Q8_1 weights against Q8_1 activations (not a pairing llama.cpp uses; here
/// so that every type has a dot product). The `s` fields are not needed.
pub fn vec_dot(n: usize, w: &[u8], x: &[u8]) -> f32 {
    let mut acc = Lanes8::default();
    for i in 0..blocks(n, QK) {
        let wb = &w[i * BYTES..(i + 1) * BYTES];
        let xb = &x[i * BYTES..(i + 1) * BYTES];
        let d = f16_at(wb, 0) * f16_at(xb, 0);
        let mut q = [0i32; 32];
        for (o, &v) in q.iter_mut().zip(&wb[4..]) {
            *o = (v as i8) as i32;
        }
        acc.add_block(d, &q, &xb[4..], None);
    }
    acc.sum()
}
