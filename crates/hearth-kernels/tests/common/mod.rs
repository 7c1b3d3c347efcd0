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

/// A weight row of arbitrary bit patterns (every quant value, every scale
/// code) with the float scale fields set to sane random values, so SIMD
/// kernels are exercised on inputs a quantiser would never produce.
pub fn random_weights(r: &mut StdRng, t: GgmlType, n: usize) -> Vec<u8> {
    match t {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => return quantized(t, &randn(r, n, 1.0)),
        _ => {}
    }
    let mut b: Vec<u8> = (0..row_bytes(t, n)).map(|_| r.gen()).collect();
    let halves: &[usize] = match t {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q8_1 => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q6_K => &[208],
        _ => &[],
    };
    for blk in b.chunks_exact_mut(t.type_size()) {
        for &o in halves {
            blk[o..o + 2].copy_from_slice(&f16_bits(r.gen_range(-0.05f32..0.05)));
        }
        if t == GgmlType::Q8_K {
            blk[0..4].copy_from_slice(&r.gen_range(-0.05f32..0.05).to_le_bytes());
        }
    }
    b
}

/// Activations in `vec_dot_type(t)` with some exact +-127 quants (the extremes).
pub fn activations(r: &mut StdRng, t: GgmlType, n: usize) -> Vec<u8> {
    let mut x = randn(r, n, 2.0);
    for v in x.iter_mut().step_by(29) {
        *v = if r.gen() { 40.0 } else { -40.0 };
    }
    quantized(hearth_kernels::vec_dot_type(t), &x)
}

/// Row lengths to test for a type: several block counts, odd ones included.
pub fn lengths(t: GgmlType) -> Vec<usize> {
    match t.block_size() {
        1 => vec![1, 7, 31, 32, 33, 64, 100, 255, 256, 257, 1000, 4096],
        32 => (1..=9)
            .map(|k| 32 * k)
            .chain([32 * 15, 32 * 16, 32 * 17, 4096])
            .collect(),
        _ => (1..=5).map(|k| 256 * k).chain([4096]).collect(),
    }
}
