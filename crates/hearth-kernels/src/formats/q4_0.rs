//! Q4_0: 32 elements in 18 bytes: `d: f16`, then 16 bytes where byte `j`
//! holds element `j` in its low nibble and element `j + 16` in its high
//! nibble; value = `(nibble - 8) * d`. Dotted against Q8_0 activations.

use super::{put_f16, QK32};

pub const QK: usize = QK32;
pub const BYTES: usize = 18;

/// Signed quant values (-8..=7) of one block, in element order.
#[inline(always)]
pub(crate) fn unpack(b: &[u8]) -> [i32; 32] {
    let mut w = [0i32; 32];
    for j in 0..16 {
        w[j] = (b[2 + j] & 0x0F) as i32 - 8;
        w[j + 16] = (b[2 + j] >> 4) as i32 - 8;
    }
    w
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    super::dequantize32(src, dst, BYTES, super::Scale32::Symmetric, unpack);
}

/// ggml's reference quantiser: the signed value of largest magnitude maps to -8.
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BYTES)) {
        let max = super::signed_absmax(x);
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(b, 0, d);
        // Truncating `+ 8.5` is ggml's rounding here; keep it for identical files.
        let q = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
        for j in 0..16 {
            b[2 + j] = q(x[j]) | (q(x[j + 16]) << 4);
        }
    }
}

pub fn vec_dot(n: usize, w: &[u8], x: &[u8]) -> f32 {
    super::vec_dot32(n, w, x, BYTES, super::Scale32::Symmetric, unpack)
}
