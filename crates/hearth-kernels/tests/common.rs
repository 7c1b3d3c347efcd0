//! Helpers shared by the integration tests.
#![allow(dead_code)]

use hearth_kernels::{row_bytes, GgmlType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub const WEIGHT_TYPES: [GgmlType; 15] = GgmlType::ALL;

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Gaussian-ish values (sum of uniforms) with a few outliers, like real activations.
pub fn randn(r: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let v: f32 = (0..4).map(|_| r.gen_range(-1.0f32..1.0)).sum::<f32>() * 0.5 * scale;
            if r.gen_ratio(1, 64) {
                v * 8.0
            } else {
                v
            }
        })
        .collect()
}

pub fn quantized(t: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut b = vec![0u8; row_bytes(t, x.len())];
    hearth_kernels::reference::quantize_row(t, x, &mut b);
    b
}

pub fn dequantized(t: GgmlType, b: &[u8], n: usize) -> Vec<f32> {
    let mut v = vec![0f32; n];
    hearth_kernels::reference::dequantize_row(t, b, &mut v);
    v
}

pub fn f16_bits(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_bits().to_le_bytes()
}

pub fn f16_at(b: &[u8], off: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[off], b[off + 1]])).to_f32()
}
