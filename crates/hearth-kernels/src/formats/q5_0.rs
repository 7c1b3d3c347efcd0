//! Q5_0: 32 elements in 22 bytes: `d: f16`, `qh: u32` (bit `j` is the fifth
//! bit of element `j`), then 16 nibble bytes laid out as in Q4_0;
//! value = `((nibble | bit << 4) - 16) * d`. Dotted against Q8_0.

use super::{put_f16, QK32};

pub const QK: usize = QK32;
pub const BYTES: usize = 22;

/// Signed quant values (-16..=15) of one block, in element order.
#[inline(always)]
pub(crate) fn unpack(b: &[u8]) -> [i32; 32] {
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let mut w = [0i32; 32];
    for j in 0..16 {
        let lo = (b[6 + j] & 0x0F) as u32 | ((qh >> j) & 1) << 4;
        let hi = (b[6 + j] >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
        w[j] = lo as i32 - 16;
        w[j + 16] = hi as i32 - 16;
    }
    w
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    super::dequantize32(src, dst, BYTES, super::Scale32::Symmetric, unpack);
}

/// ggml's reference quantiser: the signed value of largest magnitude maps to -16.
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BYTES)) {
        let max = super::signed_absmax(x);
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(b, 0, d);
        let q = |v: f32| ((v * id + 16.5) as i8).min(31) as u32;
        let mut qh = 0u32;
        for j in 0..16 {
            let (lo, hi) = (q(x[j]), q(x[j + 16]));
            b[6 + j] = ((lo & 0x0F) | (hi & 0x0F) << 4) as u8;
            qh |= (lo >> 4) << j | (hi >> 4) << (j + 16);
        }
        b[2..6].copy_from_slice(&qh.to_le_bytes());
    }
}

pub fn vec_dot(n: usize, w: &[u8], x: &[u8]) -> f32 {
    super::vec_dot32(n, w, x, BYTES, super::Scale32::Symmetric, unpack)
}
