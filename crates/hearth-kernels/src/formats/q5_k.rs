//! Q5_K: 256 elements in 176 bytes: `d: f16`, `dmin: f16`, 12 scale/min
//! bytes packed as in Q4_K, `qh: [u8; 32]`, then 128 nibble bytes laid out
//! as in Q4_K. The fifth bit of element `64c + l` (low nibble of chunk `c`)
//! is bit `2c` of `qh[l]`; of element `64c + 32 + l`, bit `2c + 1`.
//! value = `d * sc[j] * q - dmin * m[j]` with `q` in 0..=31.

use super::q4_k::scales_mins;
use super::{f16_at, QK_K};

pub const QK: usize = QK_K;
pub const BYTES: usize = 176;
pub(crate) const QH: usize = 16;
pub(crate) const QS: usize = 48;

/// Unsigned quants (0..=31) in element order.
pub(crate) fn unpack(b: &[u8]) -> [u8; 256] {
    let mut q = [0u8; 256];
    for c in 0..4 {
        for l in 0..32 {
            let v = b[QS + 32 * c + l];
            let h = b[QH + l];
            q[64 * c + l] = (v & 0x0F) | (((h >> (2 * c)) & 1) << 4);
            q[64 * c + 32 + l] = (v >> 4) | (((h >> (2 * c + 1)) & 1) << 4);
        }
    }
    q
}

pub fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, out) in src.chunks_exact(BYTES).zip(dst.chunks_exact_mut(QK)) {
        let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
        let (sc, m) = scales_mins(&b[4..16]);
        let q = unpack(b);
        for (e, o) in out.iter_mut().enumerate() {
            let j = e / 32;
            *o = (d * sc[j] as f32) * q[e] as f32 - dmin * m[j] as f32;
        }
    }
}

/// Round-to-nearest as for Q4_K (see `q4_k::fit_affine`).
pub fn quantize(src: &[f32], dst: &mut [u8]) {
    for (x, b) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BYTES)) {
        let q = super::q4_k::affine_super_block(x, b, 31);
        b[QH..QH + 32].fill(0);
        for c in 0..4 {
            for l in 0..32 {
                let (lo, hi) = (q[64 * c + l], q[64 * c + 32 + l]);
                b[QS + 32 * c + l] = (lo & 0x0F) | ((hi & 0x0F) << 4);
                b[QH + l] |= ((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1));
            }
        }
    }
}

pub fn vec_dot(n: usize, w: &[u8], x: &[u8]) -> f32 {
    super::q4_k::affine_vec_dot(n, w, x, BYTES, unpack)
}
