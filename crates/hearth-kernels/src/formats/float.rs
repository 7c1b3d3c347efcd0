//! The plain float formats: F32 (4 bytes), F16 (IEEE half) and BF16 (top
//! half of an f32), all little-endian, one element per "block". Their dot
//! products pair a row with an activation row of the same type, as
//! llama.cpp does, and accumulate in 32 float lanes (see `Lanes32`).

use super::Lanes32;
use half::f16;

/// ggml's f32 -> bf16: round to nearest even, NaNs kept NaN (forced quiet).
#[inline(always)]
pub fn f32_to_bf16(v: f32) -> u16 {
    let u = v.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16
}

#[inline(always)]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

#[inline(always)]
fn at2(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[2 * i], b[2 * i + 1]])
}

#[inline(always)]
fn at4(b: &[u8], i: usize) -> f32 {
    f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}

pub fn quantize_f32(src: &[f32], dst: &mut [u8]) {
    for (v, o) in src.iter().zip(dst.chunks_exact_mut(4)) {
        o.copy_from_slice(&v.to_le_bytes());
    }
}

pub fn dequantize_f32(src: &[u8], dst: &mut [f32]) {
    for (i, o) in dst.iter_mut().enumerate() {
        *o = at4(src, i);
    }
}

pub fn quantize_f16(src: &[f32], dst: &mut [u8]) {
    for (v, o) in src.iter().zip(dst.chunks_exact_mut(2)) {
        o.copy_from_slice(&f16::from_f32(*v).to_bits().to_le_bytes());
    }
}

pub fn dequantize_f16(src: &[u8], dst: &mut [f32]) {
    for (i, o) in dst.iter_mut().enumerate() {
        *o = f16::from_bits(at2(src, i)).to_f32();
    }
}

pub fn quantize_bf16(src: &[f32], dst: &mut [u8]) {
    for (v, o) in src.iter().zip(dst.chunks_exact_mut(2)) {
        o.copy_from_slice(&f32_to_bf16(*v).to_le_bytes());
    }
}

pub fn dequantize_bf16(src: &[u8], dst: &mut [f32]) {
    for (i, o) in dst.iter_mut().enumerate() {
        *o = bf16_to_f32(at2(src, i));
    }
}

/// The 32-lane dot product over two element accessors.
#[inline(always)]
pub(crate) fn lanes_dot(n: usize, a: impl Fn(usize) -> f32, b: impl Fn(usize) -> f32) -> f32 {
    let mut acc = Lanes32::new();
    for i in 0..n {
        acc.l[i % 32] += a(i) * b(i);
    }
    acc.sum()
}

pub fn vec_dot_f32(n: usize, w: &[u8], x: &[u8]) -> f32 {
    lanes_dot(n, |i| at4(w, i), |i| at4(x, i))
}

pub fn vec_dot_f16(n: usize, w: &[u8], x: &[u8]) -> f32 {
    lanes_dot(
        n,
        |i| f16::from_bits(at2(w, i)).to_f32(),
        |i| f16::from_bits(at2(x, i)).to_f32(),
    )
}

pub fn vec_dot_bf16(n: usize, w: &[u8], x: &[u8]) -> f32 {
    lanes_dot(n, |i| bf16_to_f32(at2(w, i)), |i| bf16_to_f32(at2(x, i)))
}
