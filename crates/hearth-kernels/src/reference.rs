//! Scalar reference implementations of the whole public API.
//!
//! These define the crate's arithmetic: the SIMD kernels reproduce them bit
//! for bit (the tests check `==`), and `HEARTH_KERNELS=scalar` runs them in
//! production for debugging. They are plain, allocation-free loops.

use crate::formats::{
    float, q2_k, q3_k, q4_0, q4_1, q4_k, q5_0, q5_1, q5_k, q6_k, q8_0, q8_1, q8_k,
};
use crate::{row_bytes, vec_dot_type, GgmlType};
use std::ops::Range;

pub use crate::ops::scalar::{
    add_inplace, attn_online_f16, attn_online_finish, attn_tile_finish, attn_tile_row, axpy_f16,
    dot_f16_f16, dot_f32_f16, dot_f32_ggml, dot_f32_tiny, expf, f32_to_f16_row,
    gelu_tanh_mul_inplace, mul_inplace, rms_norm, rms_norm_inplace, rope_apply, rope_cache,
    rope_inplace, scale_inplace, silu_mul_inplace, softmax_inplace, vexpf,
};

/// Quantise one row of f32 into `dst_type`.
pub fn quantize_row(dst_type: GgmlType, src: &[f32], dst: &mut [u8]) {
    let rb = row_bytes(dst_type, src.len());
    assert_eq!(
        dst.len(),
        rb,
        "quantize_row: dst has {} bytes, {} needs {rb}",
        dst.len(),
        dst_type
    );
    match dst_type {
        GgmlType::F32 => float::quantize_f32(src, dst),
        GgmlType::F16 => float::quantize_f16(src, dst),
        GgmlType::BF16 => float::quantize_bf16(src, dst),
        GgmlType::Q4_0 => q4_0::quantize(src, dst),
        GgmlType::Q4_1 => q4_1::quantize(src, dst),
        GgmlType::Q5_0 => q5_0::quantize(src, dst),
        GgmlType::Q5_1 => q5_1::quantize(src, dst),
        GgmlType::Q8_0 => q8_0::quantize(src, dst),
        GgmlType::Q8_1 => q8_1::quantize(src, dst),
        GgmlType::Q2_K => q2_k::quantize(src, dst),
        GgmlType::Q3_K => q3_k::quantize(src, dst),
        GgmlType::Q4_K => q4_k::quantize(src, dst),
        GgmlType::Q5_K => q5_k::quantize(src, dst),
        GgmlType::Q6_K => q6_k::quantize(src, dst),
        GgmlType::Q8_K => q8_k::quantize(src, dst),
    }
}

/// Dequantise one row of type `t` (`dst.len()` elements) to f32.
pub fn dequantize_row(t: GgmlType, src: &[u8], dst: &mut [f32]) {
    let rb = row_bytes(t, dst.len());
    assert!(
        src.len() >= rb,
        "dequantize_row: src has {} bytes, {} needs {rb}",
        src.len(),
        t
    );
    let src = &src[..rb];
    match t {
        GgmlType::F32 => float::dequantize_f32(src, dst),
        GgmlType::F16 => float::dequantize_f16(src, dst),
        GgmlType::BF16 => float::dequantize_bf16(src, dst),
        GgmlType::Q4_0 => q4_0::dequantize(src, dst),
        GgmlType::Q4_1 => q4_1::dequantize(src, dst),
        GgmlType::Q5_0 => q5_0::dequantize(src, dst),
        GgmlType::Q5_1 => q5_1::dequantize(src, dst),
        GgmlType::Q8_0 => q8_0::dequantize(src, dst),
        GgmlType::Q8_1 => q8_1::dequantize(src, dst),
        GgmlType::Q2_K => q2_k::dequantize(src, dst),
        GgmlType::Q3_K => q3_k::dequantize(src, dst),
        GgmlType::Q4_K => q4_k::dequantize(src, dst),
        GgmlType::Q5_K => q5_k::dequantize(src, dst),
        GgmlType::Q6_K => q6_k::dequantize(src, dst),
        GgmlType::Q8_K => q8_k::dequantize(src, dst),
    }
}

/// Checks the operand sizes of a dot product and returns the two row sizes.
pub(crate) fn check_dot(t: GgmlType, n: usize, w: &[u8], x: &[u8]) -> (usize, usize) {
    let wb = row_bytes(t, n);
    let xb = row_bytes(vec_dot_type(t), n);
    assert!(
        w.len() >= wb,
        "vec_dot: weight row has {} bytes, {t} x {n} needs {wb}",
        w.len()
    );
    assert!(
        x.len() >= xb,
        "vec_dot: activation row has {} bytes, needs {xb}",
        x.len()
    );
    (wb, xb)
}

/// Dot product of one weight row (type `t`, `n` elements; the first
/// `row_bytes(t, n)` bytes of `w`) with one activation row in
/// `vec_dot_type(t)`.
pub fn vec_dot(t: GgmlType, n: usize, w: &[u8], x: &[u8]) -> f32 {
    let (wb, xb) = check_dot(t, n, w, x);
    let (w, x) = (&w[..wb], &x[..xb]);
    match t {
        GgmlType::F32 => float::vec_dot_f32(n, w, x),
        GgmlType::F16 => float::vec_dot_f16(n, w, x),
        GgmlType::BF16 => float::vec_dot_bf16(n, w, x),
        GgmlType::Q4_0 => q4_0::vec_dot(n, w, x),
        GgmlType::Q4_1 => q4_1::vec_dot(n, w, x),
        GgmlType::Q5_0 => q5_0::vec_dot(n, w, x),
        GgmlType::Q5_1 => q5_1::vec_dot(n, w, x),
        GgmlType::Q8_0 => q8_0::vec_dot(n, w, x),
        GgmlType::Q8_1 => q8_1::vec_dot(n, w, x),
        GgmlType::Q2_K => q2_k::vec_dot(n, w, x),
        GgmlType::Q3_K => q3_k::vec_dot(n, w, x),
        GgmlType::Q4_K => q4_k::vec_dot(n, w, x),
        GgmlType::Q5_K => q5_k::vec_dot(n, w, x),
        GgmlType::Q6_K => q6_k::vec_dot(n, w, x),
        GgmlType::Q8_K => q8_k::vec_dot(n, w, x),
    }
}

/// [`vec_dot`] in the float order of `form` (see [`crate::Rows`]).
pub fn vec_dot_rows(t: GgmlType, n: usize, w: &[u8], x: &[u8], form: crate::Rows) -> f32 {
    let (wb, xb) = check_dot(t, n, w, x);
    let (w, x) = (&w[..wb], &x[..xb]);
    match t {
        GgmlType::Q4_K => q4_k::vec_dot_rows(n, w, x, form.quad),
        GgmlType::Q6_K => q6_k::vec_dot_rows(n, w, x, form.wide),
        _ => vec_dot(t, n, w, x),
    }
}

/// Checks gemm operand sizes (the output's too, for a contiguous `y`);
/// returns (weight row bytes, activation row bytes).
pub(crate) fn check_gemm(
    t: GgmlType,
    n: usize,
    w: &[u8],
    rows: &Range<usize>,
    x: &[u8],
    ncols: usize,
    y: &[f32],
) -> (usize, usize) {
    let sizes = check_inputs(t, n, w, rows, x, ncols);
    assert!(
        y.len() >= ncols * rows.len(),
        "gemm: output has {} floats, needs {}",
        y.len(),
        ncols * rows.len()
    );
    sizes
}

/// Checks the weight and activation sizes of a gemm; returns (weight row
/// bytes, activation row bytes).
pub(crate) fn check_inputs(
    t: GgmlType,
    n: usize,
    w: &[u8],
    rows: &Range<usize>,
    x: &[u8],
    ncols: usize,
) -> (usize, usize) {
    let wb = row_bytes(t, n);
    let xb = row_bytes(vec_dot_type(t), n);
    assert!(
        rows.start <= rows.end,
        "gemm: empty-reversed row range {rows:?}"
    );
    assert!(
        w.len() >= rows.end * wb,
        "gemm: weights have {} bytes, rows up to {} need {}",
        w.len(),
        rows.end,
        rows.end * wb
    );
    assert!(
        x.len() >= ncols * xb,
        "gemm: activations have {} bytes, {ncols} columns need {}",
        x.len(),
        ncols * xb
    );
    (wb, xb)
}

/// `y[c * rows.len() + (r - rows.start)] = vec_dot(t, n, row r of w, column c of x)`.
pub fn gemm(
    t: GgmlType,
    n: usize,
    w: &[u8],
    rows: Range<usize>,
    x: &[u8],
    ncols: usize,
    y: &mut [f32],
) {
    check_gemm(t, n, w, &rows, x, ncols, y);
    let nr = rows.len();
    // SAFETY: `y` holds `ncols * nr` floats (checked), every index written.
    unsafe {
        gemm_into(
            t,
            n,
            w,
            rows,
            x,
            ncols,
            y.as_mut_ptr(),
            nr,
            crate::Rows::SINGLE,
        )
    }
}

/// [`gemm`] with column `c` written to `y[c * ldy..][..rows.len()]`. The
/// caller has checked the inputs ([`check_inputs`]).
///
/// # Safety
/// `y` must be valid for writes at `c * ldy + i` for every `c < ncols` and
/// `i < rows.len()`, and nothing else may access those floats meanwhile.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_into(
    t: GgmlType,
    n: usize,
    w: &[u8],
    rows: Range<usize>,
    x: &[u8],
    ncols: usize,
    y: *mut f32,
    ldy: usize,
    form: crate::Rows,
) {
    let (wb, xb) = (row_bytes(t, n), row_bytes(vec_dot_type(t), n));
    for c in 0..ncols {
        let xc = &x[c * xb..(c + 1) * xb];
        for (i, r) in rows.clone().enumerate() {
            let v = vec_dot_rows(t, n, &w[r * wb..(r + 1) * wb], xc, form);
            // SAFETY: `c < ncols`, `i < rows.len()`: writable (caller).
            unsafe { *y.add(c * ldy + i) = v };
        }
    }
}
